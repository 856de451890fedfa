//! Which protected page, if any, a request path belongs to: the security boundary.
//!
//! pagegate forwards the request path to the upstream exactly as the client sent it. Upstreams
//! read paths in different ways (decoded once or twice, `\` taken as `/`, `;params` dropped,
//! repeated slashes merged, dot-segments resolved, case ignored, a leading `//host` skipped), so
//! the path is protected when *any* of those readings falls under a page's path. What cannot be
//! read safely is refused with a [`PathError`] (answered 400). `docs/security.md` states the rules
//! and why they are enough.
//!
//! Page path semantics, by segments and ignoring ASCII case: `/course/` and `/course` both cover
//! `/course`, `/course/` and everything below, but not `/courseware`. A segment also matches with
//! trailing dots or spaces (`/course./`), as Windows file systems drop them.
//!
//! Cost: a path made only of printable ASCII without `%`, `\`, `;`, empty segments or
//! dot-segments (nearly every real request) is compared in place without allocating. Anything else
//! goes through [`PageMatcher::pages_for`]'s slow path, whose work is bounded by
//! [`MAX_CHECKED_PATH`].

use crate::config::PageConfig;

/// A path that cannot be interpreted safely; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe request path: {0}")]
pub struct PathError(pub &'static str);

impl PathError {
    /// The path does not start with `/` (e.g. `*` or empty).
    pub const NOT_ABSOLUTE: PathError = PathError("The request path must start with '/'.");
    /// A control character (NUL, CR, LF, DEL, C1 controls), raw or percent-encoded.
    pub const CONTROL: PathError = PathError("The request path contains a control character.");
    /// Percent-encoded bytes that are not UTF-8 (e.g. overlong `%c0%af`).
    pub const NOT_UTF8: PathError = PathError("The request path is not valid UTF-8.");
    /// IIS-style `%uXXXX`, which is not percent-encoding.
    pub const U_ESCAPE: PathError =
        PathError("The request path uses %u escapes, which are not standard.");
    /// Still percent-encoded after two rounds of decoding.
    pub const OVER_ENCODED: PathError =
        PathError("The request path is percent-encoded more than twice.");
    /// A `.`/`..` segment together with percent-encoding, `\` or `;`: readings would disagree on
    /// which directory it names.
    pub const MIXED_DOTS: PathError = PathError(
        "The request path combines dot-segments with percent-encoding, backslashes or parameters.",
    );
    /// A segment made of dots and spaces other than `.` and `..` (e.g. `...`).
    pub const ODD_DOTS: PathError =
        PathError("The request path has a segment made only of dots and spaces.");
    /// Longer than [`MAX_CHECKED_PATH`] and not plain.
    pub const TOO_LONG: PathError = PathError("The request path is too long.");
}

/// Indexes (into the site's `pages`) of the pages a path falls under, ascending.
pub type PageSet = Vec<usize>;

/// Longest path that goes through the slow path. Longer plain paths are still matched; longer
/// paths that need decoding or normalising are refused. nginx and Apache refuse request lines
/// over 8 KiB by default, so this refuses nothing they would have served.
pub const MAX_CHECKED_PATH: usize = 8192;

/// Matches request paths against one site's pages.
#[derive(Debug, Clone, Default)]
pub struct PageMatcher {
    prefixes: Vec<Prefix>,
    page_count: usize,
}

/// One page path, as segment keys (see [`segment_key`]), lower case, without the trailing `/`.
#[derive(Debug, Clone)]
struct Prefix {
    page: usize,
    keys: Vec<Box<[u8]>>,
}

impl PageMatcher {
    /// Prepares matching for a site's pages (paths already validated by `is_clean_path`).
    pub fn new(pages: &[PageConfig]) -> PageMatcher {
        let mut prefixes = Vec::new();
        for (page, config) in pages.iter().enumerate() {
            for path in &config.paths {
                let keys = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        segment_key(s.as_bytes())
                            .to_ascii_lowercase()
                            .into_boxed_slice()
                    })
                    .collect();
                prefixes.push(Prefix { page, keys });
            }
        }
        PageMatcher {
            prefixes,
            page_count: pages.len(),
        }
    }

    /// Whether the site has any protected page at all (the common fast path when not).
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The pages `raw_path` (the request target's path, still percent-encoded) falls under, or
    /// an error when the path cannot be read safely. Anything from a `?` or `#` on is ignored.
    pub fn pages_for(&self, raw_path: &str) -> Result<PageSet, PathError> {
        let path = raw_path.as_bytes();
        let path = match path.iter().position(|&b| b == b'?' || b == b'#') {
            Some(end) => &path[..end],
            None => path,
        };
        let Some((b'/', body)) = path.split_first() else {
            return Err(PathError::NOT_ABSOLUTE);
        };
        let mut found = PageSet::new();
        if is_plain(body) {
            self.match_segments(split_segments(body), &mut found);
            return Ok(found);
        }
        if path.len() > MAX_CHECKED_PATH {
            return Err(PathError::TOO_LONG);
        }
        self.match_slow(path, &mut found)?;
        found.sort_unstable();
        Ok(found)
    }

    /// Everything that is not plain: validate every decoding level, then match each reading.
    fn match_slow(&self, path: &[u8], found: &mut PageSet) -> Result<(), PathError> {
        check_text(path)?;
        let once = decode(path);
        let twice = match &once {
            Some(once) => {
                check_text(once)?;
                decode(once)
            }
            None => None,
        };
        if let Some(twice) = &twice {
            check_text(twice)?;
            if has_escape(twice) {
                return Err(PathError::OVER_ENCODED);
            }
        }
        let levels = [Some(path), once.as_deref(), twice.as_deref()];
        let dotted = levels.iter().flatten().any(|level| {
            level
                .split(|b| b"/\\;?#".contains(b))
                .any(is_dot_segment_like)
        });
        if dotted {
            // Dot-segments are resolved only where every reading agrees on the segments: a path
            // with nothing to decode, no `\` and no `;`. Browsers never send dot-segments.
            if once.is_some() || path.contains(&b'\\') || path.contains(&b';') {
                return Err(PathError::MIXED_DOTS);
            }
            return self.match_dotted(path, found);
        }
        // No reading has a dot-segment, so each is a plain prefix test on its segments.
        let mut readings = Vec::new();
        expand(path.to_vec(), 0, 0, &mut readings);
        for reading in &readings {
            let body = reading.get(1..).unwrap_or_default();
            self.match_segments(split_segments(body), found);
            self.match_segments(split_segments(body).filter(|s| !s.is_empty()), found);
            if found.len() == self.page_count {
                break;
            }
        }
        Ok(())
    }

    /// A path of raw `/`-separated segments with `.` or `..` among them: matched as written, and
    /// resolved per RFC 3986 (never above the root), each with and without merging `//` first,
    /// and resolved before merging.
    fn match_dotted(&self, path: &[u8], found: &mut PageSet) -> Result<(), PathError> {
        let segments: Vec<&[u8]> = split_segments(path.get(1..).unwrap_or_default()).collect();
        if segments
            .iter()
            .any(|s| is_dot_segment_like(s) && !matches!(*s, b"." | b".."))
        {
            return Err(PathError::ODD_DOTS);
        }
        self.match_dotted_segments(&segments, found);
        // A target starting with `//` is also read after its host, dots and all.
        if let Some(after_host) = after_authority(path) {
            let rest: Vec<&[u8]> =
                split_segments(after_host.get(1..).unwrap_or_default()).collect();
            self.match_dotted_segments(&rest, found);
        }
        Ok(())
    }

    fn match_dotted_segments(&self, segments: &[&[u8]], found: &mut PageSet) {
        let merged: Vec<&[u8]> = segments.iter().copied().filter(|s| !s.is_empty()).collect();
        for readings in [segments, &merged] {
            self.match_segments(readings.iter().copied(), found);
            self.match_segments(resolve_dots(readings).into_iter(), found);
        }
        // Resolved with `//` kept, then merged: a file system merges the empty segments an
        // upstream that keeps them (nginx with `merge_slashes off`) resolved `..` against.
        let resolved = resolve_dots(segments);
        self.match_segments(resolved.iter().copied().filter(|s| !s.is_empty()), found);
    }

    /// Adds every page one of whose paths is a segment prefix of `segments`.
    fn match_segments<'a, I>(&self, segments: I, found: &mut PageSet)
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        for prefix in &self.prefixes {
            if found.contains(&prefix.page) {
                continue;
            }
            let mut request = segments.clone();
            if prefix.keys.iter().all(|key| {
                request
                    .next()
                    .is_some_and(|s| segment_key(s).eq_ignore_ascii_case(key))
            }) {
                found.push(prefix.page);
            }
        }
    }
}

/// The `/`-separated segments of a path without its leading `/`; cheap to clone.
#[derive(Debug, Clone)]
struct Segments<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b'/') {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

fn split_segments(body: &[u8]) -> Segments<'_> {
    Segments { rest: Some(body) }
}

/// The path a WHATWG URL parser finds in a target starting with `//` or `/\`, which it reads as
/// the start of a host (as Node's `new URL(req.url, base)` does): what follows the host, as an
/// absolute path. `None` for any other target, and for one of nothing but slashes.
fn after_authority(path: &[u8]) -> Option<Vec<u8>> {
    let is_slash = |b: &u8| matches!(b, b'/' | b'\\');
    if !path.get(1).is_some_and(is_slash) {
        return None;
    }
    let host = path.iter().position(|b| !is_slash(b))?;
    let end = path[host..]
        .iter()
        .position(is_slash)
        .map_or(path.len(), |i| host + i);
    let mut after_host = vec![b'/'];
    after_host.extend_from_slice(path.get(end + 1..).unwrap_or_default());
    Some(after_host)
}

/// Printable ASCII without `%`, `\` or `;`, no empty segment but the last, no dot-segment: the
/// only reading of such a path is itself. One pass.
fn is_plain(body: &[u8]) -> bool {
    let mut start = 0;
    for (i, &b) in body.iter().enumerate() {
        if !b.is_ascii_graphic() || matches!(b, b'%' | b'\\' | b';') {
            return false;
        }
        if b == b'/' {
            let segment = &body[start..i];
            if segment.is_empty() || is_dot_segment_like(segment) {
                return false;
            }
            start = i + 1;
        }
    }
    !is_dot_segment_like(&body[start..])
}

/// What a segment is compared on: without trailing dots and spaces (Windows drops them).
fn segment_key(segment: &[u8]) -> &[u8] {
    let end = segment
        .iter()
        .rposition(|&b| b != b'.' && b != b' ')
        .map_or(0, |i| i + 1);
    &segment[..end]
}

/// `.`, `..`, and anything else made only of dots and spaces that some system reads as one.
fn is_dot_segment_like(segment: &[u8]) -> bool {
    matches!(segment.first(), Some(b'.' | b' '))
        && segment.contains(&b'.')
        && segment.iter().all(|&b| b == b'.' || b == b' ')
}

/// RFC 3986 `remove_dot_segments` on a segment list; `..` at the root stays at the root.
fn resolve_dots<'a>(segments: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(segments.len());
    for (i, &segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match segment {
            b"." => {}
            b".." => {
                out.pop();
            }
            _ => {
                out.push(segment);
                continue;
            }
        }
        if last {
            out.push(&b""[..]);
        }
    }
    out
}

const BACKSLASH: u8 = 1;
const PARAMS: u8 = 2;
const QUERY: u8 = 4;
const AUTHORITY: u8 = 8;

/// Every reading of `s` (at decoding `stage`, with the transformations in `used` already done):
/// decoded up to twice in all; `\` taken as `/`, `;params` dropped from each segment, and a
/// decoded `?` or `#` taken as the end of the path, each at most once, at any stage and in any
/// order; and a leading `//host` dropped, at any stage but before the others (as a WHATWG URL
/// parser would).
/// Only transformations that change something are applied, so a plain path has one reading and
/// the worst case is bounded (a few dozen readings).
fn expand(s: Vec<u8>, stage: u8, used: u8, out: &mut Vec<Vec<u8>>) {
    if stage < 2 {
        if let Some(decoded) = decode(&s) {
            expand(decoded, stage + 1, used, out);
        }
    }
    if used & BACKSLASH == 0 && s.contains(&b'\\') {
        let converted = s
            .iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect();
        expand(converted, stage, used | BACKSLASH, out);
    }
    if used & PARAMS == 0 && s.contains(&b';') {
        expand(strip_params(&s), stage, used | PARAMS, out);
    }
    if used & QUERY == 0 {
        if let Some(end) = s.iter().position(|&b| b == b'?' || b == b'#') {
            expand(s[..end].to_vec(), stage, used | QUERY, out);
        }
    }
    if used == 0 {
        if let Some(after_host) = after_authority(&s) {
            expand(after_host, stage, used | AUTHORITY, out);
        }
    }
    out.push(s);
}

/// Drops `;` and what follows it up to the next `/` (Tomcat/Jetty path parameters).
fn strip_params(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for (i, segment) in s.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let end = segment
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(segment.len());
        out.extend_from_slice(&segment[..end]);
    }
    out
}

/// The byte a valid `%XX` at `i` stands for.
fn escape_at(s: &[u8], i: usize) -> Option<u8> {
    if s.get(i) != Some(&b'%') {
        return None;
    }
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let value = hex(s.get(i + 1))? * 16 + hex(s.get(i + 2))?;
    u8::try_from(value).ok()
}

fn has_escape(s: &[u8]) -> bool {
    s.iter()
        .enumerate()
        .any(|(i, &b)| b == b'%' && escape_at(s, i).is_some())
}

/// One round of percent-decoding; an invalid `%` sequence stays as it is. `None` when nothing
/// was decoded.
fn decode(s: &[u8]) -> Option<Vec<u8>> {
    if !has_escape(s) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match escape_at(s, i) {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Every decoding level must be UTF-8 without control characters or `%uXXXX`.
fn check_text(s: &[u8]) -> Result<(), PathError> {
    let text = std::str::from_utf8(s).map_err(|_| PathError::NOT_UTF8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::CONTROL);
    }
    let u_escape = s.windows(6).any(|w| {
        w[0] == b'%' && matches!(w[1], b'u' | b'U') && w[2..].iter().all(u8::is_ascii_hexdigit)
    });
    if u_escape {
        return Err(PathError::U_ESCAPE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn page(id: &str, paths: &[&str]) -> PageConfig {
        PageConfig {
            id: id.to_string(),
            title: id.to_string(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            session_lifetime: Duration::from_secs(60),
            cache: crate::config::PageCache::Private,
        }
    }

    /// Page 0: `/course/` and `/downloads/course/`; page 1: `/admin` (no trailing slash).
    fn matcher() -> PageMatcher {
        PageMatcher::new(&[
            page("course", &["/course/", "/downloads/course/"]),
            page("admin", &["/admin"]),
        ])
    }

    fn pages(path: &str) -> Result<PageSet, PathError> {
        matcher().pages_for(path)
    }

    fn protected(path: &str) -> bool {
        !pages(path)
            .unwrap_or_else(|e| panic!("{path:?} refused: {e}"))
            .is_empty()
    }

    #[track_caller]
    fn assert_protected(paths: &[&str]) {
        for path in paths {
            assert!(protected(path), "{path:?} should be protected");
        }
    }

    #[track_caller]
    fn assert_public(paths: &[&str]) {
        for path in paths {
            assert!(!protected(path), "{path:?} should be public");
        }
    }

    #[track_caller]
    fn assert_refused(paths: &[&str], error: &PathError) {
        for path in paths {
            assert_eq!(pages(path).as_ref(), Err(error), "{path:?}");
        }
    }

    #[test]
    fn page_path_semantics() {
        assert_eq!(pages("/course/lesson1.html"), Ok(vec![0]));
        assert_eq!(pages("/downloads/course/notes.txt"), Ok(vec![0]));
        assert_eq!(pages("/admin/users"), Ok(vec![1]));
        // A page path with a trailing slash also covers the bare directory.
        assert_protected(&["/course", "/course/", "/course/a/b/c", "/downloads/course"]);
        // A page path without one covers itself and below, never a longer name.
        assert_protected(&["/admin", "/admin/"]);
        assert_public(&[
            "/",
            "/courseware",
            "/course-info.html",
            "/courses/",
            "/admins",
            "/administrator/",
            "/downloads/",
            "/downloads/courses/x",
            "/public/course/x",
            "/x/course/",
        ]);
    }

    #[test]
    fn the_root_page_covers_everything() {
        let m = PageMatcher::new(&[page("all", &["/"])]);
        for path in ["/", "/x", "/a/b/", "//x", "/%41"] {
            assert_eq!(m.pages_for(path), Ok(vec![0]), "{path}");
        }
        assert!(PageMatcher::new(&[]).is_empty());
        assert!(!m.is_empty());
    }

    #[test]
    fn several_pages_can_match_one_path() {
        let m = PageMatcher::new(&[
            page("outer", &["/a/"]),
            page("inner", &["/a/b/"]),
            page("other", &["/c/"]),
        ]);
        assert_eq!(m.pages_for("/a/b/c"), Ok(vec![0, 1]));
        assert_eq!(m.pages_for("/a/%62/c"), Ok(vec![0, 1]));
        assert_eq!(m.pages_for("/a/x"), Ok(vec![0]));
        assert_eq!(m.pages_for("/c"), Ok(vec![2]));
    }

    #[test]
    fn case_is_ignored_on_both_sides() {
        assert_protected(&["/COURSE/", "/Course/lesson1.html", "/dOwNlOaDs/CoUrSe/x"]);
        let m = PageMatcher::new(&[page("upper", &["/Videos/"])]);
        assert_eq!(m.pages_for("/videos/a"), Ok(vec![0]));
        assert_eq!(m.pages_for("/VIDEOS"), Ok(vec![0]));
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        assert_protected(&["/course/?x=1", "/course?", "/course#top"]);
        assert_public(&["/public?/course/", "/?next=/course/", "/x#/../course/"]);
    }

    #[test]
    fn percent_encoding_is_decoded_once_and_twice() {
        assert_protected(&[
            "/%63ourse/lesson1.html",
            "/%43OURSE/",
            "/c%6Furse",
            "/course%2flesson1.html",
            "/course%2Flesson1.html",
            "/downloads%2fcourse%2fnotes.txt",
            "/%2563ourse/",
            "/course%252flesson1.html",
            "/downloads%252Fcourse/x",
        ]);
        // An invalid escape stays literal and is no trick.
        assert_public(&["/course%/x", "/cour%se/", "/%zzcourse/", "/public/50%"]);
        assert_protected(&["/course/50%", "/course/%zz"]);
    }

    #[test]
    fn backslashes_count_as_slashes_too() {
        assert_protected(&[
            "/course\\lesson1.html",
            "/downloads\\course\\notes.txt",
            "/course%5clesson1.html",
            "/course%255Clesson1.html",
            "/\\course/x",
        ]);
        assert_public(&["/public\\page.html", "/x\\course"]);
    }

    #[test]
    fn path_parameters_are_stripped_and_kept() {
        assert_protected(&[
            "/course;jsessionid=1/lesson1.html",
            "/course;/",
            "/downloads;x/course;y/notes.txt",
            "/course%3b/x",
            "/;x/course/",
        ]);
        assert_public(&["/public;course/", "/courseware;x/", "/x;/course"]);
        // A page path containing ';' still matches when nothing is stripped.
        let m = PageMatcher::new(&[page("semi", &["/a;b/"])]);
        assert_eq!(m.pages_for("/a;b/x"), Ok(vec![0]));
        assert_eq!(m.pages_for("/a;b%2fx"), Ok(vec![0]));
    }

    #[test]
    fn strip_order_matters_and_both_orders_are_read() {
        // Params dropped before decoding (Tomcat): "/%64ownloads;%2fx" is "/downloads".
        assert_protected(&["/%64ownloads;%2fx/course/y"]);
        // Backslash converted before params are dropped, and after.
        assert_protected(&["/downloads;x\\course/y", "/downloads;x\\y/course/"]);
        // Raw backslash converted before decoding leaves an encoded one literal.
        assert_protected(&["/%64ownloads;a%5cx\\course/y"]);
    }

    #[test]
    fn decoded_query_or_fragment_may_end_the_path() {
        assert_protected(&[
            "/course%3fx",
            "/course%3F",
            "/course%23anything",
            "/course%253fx",
        ]);
        assert_public(&["/public%3f/course/", "/x%23/course/"]);
    }

    #[test]
    fn repeated_slashes_are_merged_and_kept() {
        assert_protected(&[
            "//course/",
            "/course//lesson1.html",
            "///downloads//course//x",
        ]);
        // Without merging, "/course//.." is "/course/"; with it, "/".
        assert_protected(&["/course//../lesson1.html", "/x/../course//../lesson1.html"]);
        // Resolved with `//` kept, then merged by the file system: nginx with
        // `merge_slashes off` serves these from /course/.
        assert_protected(&[
            "//course//../lesson1.html",
            "/a/..//course//../lesson1.html",
        ]);
        assert_public(&["//public/", "/public//course/"]);
    }

    #[test]
    fn raw_dot_segments_are_resolved_and_read_as_written() {
        assert_protected(&[
            "/./course/",
            "/public/../course/lesson1.html",
            "/x/y/../../course/",
            "/../course/",
            "/../../../course/",
            "/course/.",
            "/course/./lesson1.html",
            "/downloads/./course/notes.txt",
            "/downloads/x/../course/notes.txt",
            // As written, this is below /course/; an upstream that does not resolve dots
            // (a key-value store, a naive router) sees it there.
            "/course/../public/page.html",
        ]);
        assert_public(&[
            "/public/./page.html",
            "/public/x/../page.html",
            "/course-x/../x",
        ]);
    }

    #[test]
    fn dot_segments_mixed_with_encoding_backslash_or_params_are_refused() {
        assert_refused(
            &[
                "/course/%2e/lesson1.html",
                "/public/%2e%2e/course/x",
                "/public/.%2e/course/x",
                "/public/%2E./course/x",
                "/x/..%2fcourse/lesson1.html",
                "/x/%2e%2e%2fcourse/lesson1.html",
                "/public/%252e%252e/course/x",
                "/public/..%252fcourse/x",
                "/public\\..\\course\\x",
                "/public/..\\course/x",
                "/public/..;/course/x",
                "/public/.;x/x",
                "/course/../%70ublic",
                "/a/..%3f/x",
                "/a/%2e%20/x",
            ],
            &PathError::MIXED_DOTS,
        );
        assert_refused(&["/a/.../b", "/course/..../"], &PathError::ODD_DOTS);
    }

    #[test]
    fn control_characters_and_bad_encodings_are_refused() {
        assert_refused(
            &[
                "/course/lesson1.html%00",
                "/course%00/x",
                "/public/%0d%0aX-Injected:%201",
                "/public/%09",
                "/public/%7f",
                "/public/%c2%85",
                "/course%2500",
                "/a\u{85}b",
                "/a\u{1}b",
            ],
            &PathError::CONTROL,
        );
        assert_refused(
            &["/%c0%af", "/course%c0%ae%c0%ae/", "/%ff", "/%25c0%25af"],
            &PathError::NOT_UTF8,
        );
        assert_refused(
            &["/public/%u002e%u002e/course/", "/%U0063ourse/", "/%25u002f"],
            &PathError::U_ESCAPE,
        );
        assert_refused(
            &[
                "/course%25252f",
                "/public/%2525252e%2525252e/course/",
                "/a%252541",
            ],
            &PathError::OVER_ENCODED,
        );
        assert_refused(
            &["", "*", "course/", "%2fcourse/"],
            &PathError::NOT_ABSOLUTE,
        );
    }

    #[test]
    fn windows_trailing_dots_and_spaces_are_ignored() {
        assert_protected(&[
            "/course./lesson1.html",
            "/course%20/x",
            "/course.%20./x",
            "/admin.",
        ]);
        let m = PageMatcher::new(&[page("dotted", &["/v1./"])]);
        assert_eq!(m.pages_for("/v1/x"), Ok(vec![0]));
    }

    #[test]
    fn encoded_public_paths_stay_public() {
        assert_public(&[
            "/public/My%20Page.html",
            "/public/%E2%82%AC.html",
            "/public/caf\u{e9}.html",
            "/public;jsessionid=abc/page.html",
            "/public/a%2fb",
            "/public/100%25",
            "/search/a%3Fb",
            "/redirect/https%253A%252F%252Fexample.com%252Fa%2520b",
        ]);
        assert_protected(&["/%63ourse/caf\u{e9}.html", "/course/%E2%82%AC"]);
    }

    /// Each trick applied to one protected target: encoded, double-encoded, case, slashes,
    /// backslashes, parameters, dots. `Ok(true)` protected, `Ok(false)` public, `Err` refused.
    #[test]
    fn bypass_table() {
        let table: &[(&str, Result<bool, PathError>)] = &[
            ("/course/lesson1.html", Ok(true)),
            ("/Course/lesson1.html", Ok(true)),
            ("/COURSE%2FLESSON1.HTML", Ok(true)),
            ("/%63%6f%75%72%73%65/lesson1.html", Ok(true)),
            ("/%2563%256f%2575rse/lesson1.html", Ok(true)),
            ("//course/lesson1.html", Ok(true)),
            ("/%2fcourse/lesson1.html", Ok(true)),
            ("/%252fcourse/lesson1.html", Ok(true)),
            ("/%5ccourse/lesson1.html", Ok(true)),
            ("/\\course\\lesson1.html", Ok(true)),
            ("/course;x=1/lesson1.html", Ok(true)),
            ("/course%3bx=1/lesson1.html", Ok(true)),
            ("/course%253b/lesson1.html", Ok(true)),
            ("/course./lesson1.html", Ok(true)),
            ("/course%2e/lesson1.html", Ok(true)),
            ("/./course/lesson1.html", Ok(true)),
            ("/public/../course/lesson1.html", Ok(true)),
            ("/public/x/../../course/lesson1.html", Ok(true)),
            ("/x/..%2fcourse/lesson1.html", Err(PathError::MIXED_DOTS)),
            ("/x/%2e%2e/course/lesson1.html", Err(PathError::MIXED_DOTS)),
            (
                "/x/%252e%252e/course/lesson1.html",
                Err(PathError::MIXED_DOTS),
            ),
            ("/x/..\\course/lesson1.html", Err(PathError::MIXED_DOTS)),
            ("/x/..;/course/lesson1.html", Err(PathError::MIXED_DOTS)),
            ("/course/lesson1.html%00.txt", Err(PathError::CONTROL)),
            ("/course%c0%aflesson1.html", Err(PathError::NOT_UTF8)),
            ("/course%u002flesson1.html", Err(PathError::U_ESCAPE)),
            ("/public/page.html", Ok(false)),
            ("/public%2fpage.html", Ok(false)),
            ("/coursework/lesson1.html", Ok(false)),
        ];
        let m = matcher();
        for (path, expected) in table {
            let got = m.pages_for(path).map(|set| !set.is_empty());
            assert_eq!(&got, expected, "{path:?}");
        }
    }

    #[test]
    fn plain_paths_take_the_fast_path() {
        for path in [
            "/",
            "/course/",
            "/a/b.html",
            "/course./x",
            "/x-y_z~!$&'()*+,=:@/",
        ] {
            assert!(is_plain(&path.as_bytes()[1..]), "{path}");
        }
        for path in [
            "//",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/a%41",
            "/a\\b",
            "/a;b",
            "/caf\u{e9}",
            "/a b",
            "/...",
        ] {
            assert!(!is_plain(&path.as_bytes()[1..]), "{path}");
        }
    }

    #[test]
    fn readings_are_bounded() {
        // Every transformation applies at every stage: the worst case for `expand`.
        let mut readings = Vec::new();
        expand(
            b"//h/a\\b;c?d%255c%253b%253f%5c%3b%3f".to_vec(),
            0,
            0,
            &mut readings,
        );
        assert!(readings.len() < 200, "{}", readings.len());
        // A long path needing the slow path is refused rather than expanded.
        let long = format!("/course/{}", "%41".repeat(MAX_CHECKED_PATH));
        assert_eq!(pages(&long), Err(PathError::TOO_LONG));
        let long_plain = format!("/course/{}", "a".repeat(2 * MAX_CHECKED_PATH));
        assert_eq!(pages(&long_plain), Ok(vec![0]));
        let worst = format!(
            "//x/{}",
            "a\\b;c%255c%253b%253f%5c%3b%3f/".repeat(MAX_CHECKED_PATH / 40)
        );
        assert!(worst.len() <= MAX_CHECKED_PATH);
        let started = std::time::Instant::now();
        assert_eq!(pages(&worst), Ok(vec![]));
        // Generous: a debug build on a slow machine; release is far below.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    /// Reference upstreams, written independently of the matcher: each turns a raw path into the
    /// path it would serve. RFC 3986 section 5.2.4 on strings, `percent_encoding` for decoding.
    mod upstreams {
        pub(super) fn decode(s: &str) -> String {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        }

        pub(super) fn merge(s: &str) -> String {
            let mut out = String::new();
            for c in s.chars() {
                if !(c == '/' && out.ends_with('/')) {
                    out.push(c);
                }
            }
            out
        }

        pub(super) fn backslashes(s: &str) -> String {
            s.replace('\\', "/")
        }

        pub(super) fn strip_params(s: &str) -> String {
            s.split('/')
                .map(|seg| seg.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/")
        }

        pub(super) fn cut_query(s: &str) -> String {
            s.split(['?', '#']).next().unwrap_or("").to_string()
        }

        /// RFC 3986 5.2.4, literally.
        pub(super) fn remove_dots(input: &str) -> String {
            let mut input = input.to_string();
            let mut output = String::new();
            while !input.is_empty() {
                if let Some(rest) = input.strip_prefix("../") {
                    input = rest.to_string();
                } else if let Some(rest) = input.strip_prefix("./") {
                    input = rest.to_string();
                } else if input.starts_with("/./") {
                    input = input[2..].to_string();
                } else if input == "/." {
                    input = "/".to_string();
                } else if input.starts_with("/../") || input == "/.." {
                    input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
                    match output.rfind('/') {
                        Some(i) => output.truncate(i),
                        None => output.clear(),
                    }
                } else if input == "." || input == ".." {
                    input.clear();
                } else {
                    let start = usize::from(input.starts_with('/'));
                    let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                    output.push_str(&input[..end]);
                    input = input[end..].to_string();
                }
            }
            output
        }

        /// Whether a served path is the secret: exact case (Linux) or any case (Windows/macOS).
        pub(super) fn is_secret(served: &str, any_case: bool) -> bool {
            let served = if any_case {
                served.to_ascii_lowercase()
            } else {
                served.to_string()
            };
            ["/course", "/downloads/course"]
                .iter()
                .any(|p| served == *p || served.starts_with(&format!("{p}/")))
        }

        type Upstream = (&'static str, bool, fn(&str) -> String);

        pub(super) const ALL: &[Upstream] = &[
            ("as written", false, |p| p.to_string()),
            ("dots only", false, remove_dots),
            ("nginx", false, |p| remove_dots(&merge(&decode(p)))),
            ("decode, keep //", false, |p| remove_dots(&decode(p))),
            ("decode twice", false, |p| {
                remove_dots(&merge(&decode(&decode(p))))
            }),
            ("windows", true, |p| {
                remove_dots(&merge(&backslashes(&decode(p))))
            }),
            ("windows twice", true, |p| {
                remove_dots(&merge(&backslashes(&decode(&decode(p)))))
            }),
            ("backslash, then decode", false, |p| {
                remove_dots(&merge(&decode(&backslashes(p))))
            }),
            ("tomcat", false, |p| remove_dots(&decode(&strip_params(p)))),
            ("decode, then params", false, |p| {
                remove_dots(&strip_params(&decode(p)))
            }),
            ("decode, then re-parse", false, |p| {
                remove_dots(&merge(&cut_query(&decode(p))))
            }),
            ("route without dots", true, |p| merge(&decode(p))),
        ];
    }

    /// Exhaustively for short token sequences, then pseudo-randomly for longer ones: whenever a
    /// reference upstream would serve the secret, the matcher protects the path or refuses it.
    #[test]
    fn no_reference_upstream_reaches_a_page_the_matcher_misses() {
        const TOKENS: &[&str] = &[
            "/",
            "course",
            "downloads",
            "public",
            "x",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "%2f",
            "%5c",
            "\\",
            ";",
            ";x=1",
            "%3b",
            "%25",
            "%252e",
            "%252f",
            "%255c",
            "%3f",
            "%23",
            "%63",
            "c",
            "ourse",
            "COURSE",
            "%00",
            "//",
            "/..",
            "/./",
            "/x/..",
            "//../",
            "/../",
            // Multi-segment pages behind parameters that hide an encoded or raw separator.
            "%64ownloads",
            "/course",
            ";%2fx",
            ";a%5cx\\",
        ];
        let m = matcher();
        let mut checked = 0usize;
        let mut refused = 0usize;
        let mut check = |path: &str| {
            checked += 1;
            let verdict = m.pages_for(path);
            refused += usize::from(verdict.is_err());
            let Ok(set) = verdict else { return };
            if !set.is_empty() {
                return;
            }
            for (name, any_case, serve) in upstreams::ALL {
                let served = serve(path);
                assert!(
                    !upstreams::is_secret(&served, *any_case),
                    "{path:?}: upstream {name:?} serves {served:?} but the matcher said public"
                );
            }
        };
        let n = TOKENS.len();
        for a in TOKENS {
            for b in TOKENS {
                for c in TOKENS {
                    check(&format!("/{a}{b}{c}"));
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..30_000 {
            let len = 4 + next() % 6;
            let mut path = String::from("/");
            for _ in 0..len {
                path.push_str(TOKENS[(next() % n as u64) as usize]);
            }
            check(&path);
        }
        assert!(checked > 40_000 && refused > 1_000, "{checked} {refused}");
    }

    /// WHATWG URL parsers take a target starting with `//` or `/\` as a host and a path: Node's
    /// own documentation reads a request's path with `new URL(req.url, base)`, which serves
    /// `//evil.example/course/x` as `/course/x`.
    #[test]
    fn a_target_starting_with_two_slashes_is_also_read_as_a_host_and_a_path() {
        assert_protected(&[
            "//evil.example/course/lesson1.html",
            "///downloads//course//x",
            "/\\evil/course/x",
            "//evil/x/../course/x",
            "//evil\\course\\x",
            "//evil/%63ourse/x",
        ]);
        assert_public(&[
            "//evil.example/public/page.html",
            "//evil",
            "//course.example/",
        ]);
        assert_refused(&["//evil/x/%2e%2e/course/"], &PathError::MIXED_DOTS);
        // An application may decode before it parses: at every decoding stage.
        assert_protected(&[
            "/%2F%2Fevil/course/x",
            "/%2f%5cevil%2fcourse",
            "/%252F%252Fevil/course/x",
        ]);
    }

    /// Transformations can move a path away from a page as well as towards it; both directions
    /// must end up protected, because protection is the union of readings.
    #[test]
    fn transformations_that_leave_a_page_do_not_unprotect() {
        // `\` → `/` then `..` leaves /course/, read literally it is inside: the readings
        // disagree, so it is refused; the same for `;` stripping before `..`.
        assert_refused(
            &["/course/x\\..\\..\\public", "/course/..;/public"],
            &PathError::MIXED_DOTS,
        );
        assert_protected(&[
            // `;` stripping would turn "/course;x" back into "/course": inside either way, and
            // "/course/..;/x" is refused because the readings disagree on the directory.
            "/course;x/y",
            // Decoding "%2f" splits a segment; the raw segment is inside too.
            "/course/a%2fb",
            // Truncating at a decoded '?' keeps the prefix.
            "/course/a%3f/b",
        ]);
    }
}
