//! The differential target: a path built from tokens that matter to path readings is read by
//! every modelled upstream (`pagegate_fuzz::upstreams`). Whenever one of them serves it from
//! under a page's path, pagegate's matcher must report that page or refuse the path (400).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pagegate::config::PageConfig;
use pagegate::routing::path::PageMatcher;
use pagegate_fuzz::upstreams::{ALL, serves_under};

/// (page index, page path) of the test site.
const PAGES: &[(usize, &str)] = &[
    (0, "/course/"),
    (0, "/downloads/course/"),
    (1, "/admin"),
    (2, "/v1./api/"),
    (3, "/caf\u{e9}/"),
];

static MATCHER: LazyLock<PageMatcher> = LazyLock::new(|| {
    let pages: Vec<PageConfig> = (0..4)
        .map(|index| PageConfig {
            id: format!("page{index}"),
            title: String::new(),
            paths: PAGES
                .iter()
                .filter(|(page, _)| *page == index)
                .map(|(_, path)| (*path).to_owned())
                .collect(),
            session_lifetime: std::time::Duration::from_secs(60),
            cache: pagegate::config::PageCache::Private,
        })
        .collect();
    PageMatcher::new(&pages)
});

fuzz_target!(|data: &[u8]| {
    let path = pagegate_fuzz::path_from_tokens(data);
    let Ok(pages) = MATCHER.pages_for(&path) else {
        return;
    };
    for upstream in ALL {
        let Some(served) = (upstream.read)(path.as_bytes()) else {
            continue;
        };
        for (page, page_path) in PAGES {
            if serves_under(&served, page_path, upstream.names) {
                assert!(
                    pages.contains(page),
                    "{path:?}: {} serves {:?}, under {page_path:?}, but the matcher found only \
                     pages {pages:?}",
                    upstream.name,
                    String::from_utf8_lossy(&served),
                );
            }
        }
    }
});
