//! The page matcher on any path: never panics, answers sorted page indexes of the site, ignores
//! what follows `?`, ignores ASCII case, and never loses a page when the path only gains
//! another way of being read (a character percent-encoded, a slash doubled).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pagegate::config::PageConfig;
use pagegate::routing::path::{PageMatcher, PageSet, PathError};

static MATCHER: LazyLock<PageMatcher> = LazyLock::new(|| {
    let page = |id: &str, paths: &[&str]| PageConfig {
        id: id.into(),
        title: id.into(),
        paths: paths.iter().map(|p| (*p).into()).collect(),
        session_lifetime: std::time::Duration::from_secs(60),
        cache: pagegate::config::PageCache::Private,
    };
    PageMatcher::new(&[
        page("course", &["/course/", "/downloads/course/"]),
        page("admin", &["/admin"]),
        page("api", &["/v1./api/"]),
        page("cafe", &["/caf\u{e9}/"]),
        page("nested", &["/course/advanced/"]),
    ])
});

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let m = &*MATCHER;
    let verdict = m.pages_for(path);
    if let Ok(pages) = &verdict {
        assert!(pages.windows(2).all(|w| w[0] < w[1]), "{path:?}: {pages:?}");
        assert!(pages.iter().all(|&p| p < 5), "{path:?}: {pages:?}");
    }
    assert_eq!(
        m.pages_for(&format!("{path}?x=/course/")),
        verdict,
        "{path:?} with a query"
    );
    assert_eq!(
        m.pages_for(&path.to_ascii_uppercase()),
        verdict,
        "{path:?} upper case"
    );

    let Some(body) = path.strip_prefix('/') else {
        return;
    };
    let body = match body.find(['?', '#']) {
        Some(end) => &body[..end],
        None => body,
    };
    if body.contains('%') {
        return;
    }
    let Ok(pages) = verdict else { return };
    // One character of a path without escapes encoded: the old reading is one of the new ones.
    let pick = data.len() % (body.len() + 1);
    if let Some(c) = body.get(pick..).and_then(|rest| rest.chars().next()) {
        let mut encoded = format!("/{}", &body[..pick]);
        for b in c.to_string().bytes() {
            encoded.push_str(&format!("%{b:02X}"));
        }
        encoded.push_str(&body[pick + c.len_utf8()..]);
        keeps(&pages, m.pages_for(&encoded), path, &encoded);
    }
    // A slash doubled: merging slashes is one of the readings. (Not with dot-segments: `..`
    // after an empty segment climbs one level less where slashes are kept.)
    let dotted = body
        .split(['/', '\\', ';'])
        .any(|s| !s.is_empty() && s.trim_matches([' ', '.']).is_empty());
    if let Some(slash) = body
        .get(pick..)
        .and_then(|rest| rest.find('/'))
        .filter(|_| !dotted)
    {
        let at = pick + slash;
        let doubled = format!("/{}/{}", &body[..at], &body[at..]);
        keeps(&pages, m.pages_for(&doubled), path, &doubled);
    }
});

/// `after` is refused, or holds every page of `before`.
fn keeps(before: &PageSet, after: Result<PageSet, PathError>, path: &str, changed: &str) {
    if let Ok(after) = after {
        assert!(
            before.iter().all(|p| after.contains(p)),
            "{path:?} is under {before:?} but {changed:?} only under {after:?}"
        );
    }
}
