//! How common upstream servers and applications read a request path, each as a small pure
//! function from the raw path (as the client sent it, query included) to the path it serves, or
//! `None` when it refuses the request (400, 403, 404 for a malformed path). Together with
//! [`Names`], how it compares names, this says whether a path reaches a page.
//!
//! nginx is a port of `ngx_http_parse_complex_uri` (checked against Debian's nginx 1.22, see
//! `tests/nginx_model.rs`); the others follow their documented normalisation.

use crate::{hex_value, percent_decode};

/// How an upstream compares a served path with a page path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Byte for byte (Linux file systems, most routers).
    Exact,
    /// Ignoring ASCII case (Express's router by default, macOS file systems).
    AnyCase,
    /// Ignoring ASCII case and trailing dots and spaces of each name (Windows file systems).
    Windows,
}

/// One upstream's reading.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// Who reads paths this way.
    pub name: &'static str,
    /// How it compares names.
    pub names: Names,
    /// Raw path (query included) → the path served, or `None` when refused.
    pub read: fn(&[u8]) -> Option<Vec<u8>>,
}

/// Every modelled upstream.
pub const ALL: &[Upstream] = &[
    Upstream {
        name: "nginx",
        names: Names::Exact,
        read: |p| nginx(p, true),
    },
    Upstream {
        name: "nginx, merge_slashes off",
        names: Names::Exact,
        read: |p| nginx(p, false),
    },
    Upstream {
        name: "Apache httpd",
        names: Names::Exact,
        read: |p| apache(p, false),
    },
    Upstream {
        name: "Apache httpd, AllowEncodedSlashes On",
        names: Names::Exact,
        read: |p| apache(p, true),
    },
    Upstream {
        name: "Express router",
        names: Names::AnyCase,
        read: |p| Some(before_query(p).to_vec()),
    },
    Upstream {
        name: "Express static (send)",
        names: Names::Exact,
        read: express_static,
    },
    Upstream {
        name: "Node, WHATWG URL then decodeURIComponent",
        names: Names::AnyCase,
        read: |p| decode_uri_component(&crate::browser::path_of(p)),
    },
    Upstream {
        name: "Tomcat",
        names: Names::Exact,
        read: |p| tomcat(p, false),
    },
    Upstream {
        name: "Tomcat, ALLOW_BACKSLASH",
        names: Names::Exact,
        read: |p| tomcat(p, true),
    },
    Upstream {
        name: "Java, decode then drop ;parameters",
        names: Names::Exact,
        read: |p| {
            let decoded = percent_decode(before_query(p));
            remove_dots(&merge_slashes(&strip_params(&decoded)), AboveRoot::Stay)
        },
    },
    Upstream {
        name: "IIS",
        names: Names::Windows,
        read: iis,
    },
    Upstream {
        name: "IIS, allowDoubleEscaping, ASP.NET decoding again",
        names: Names::Windows,
        read: iis_double,
    },
    Upstream {
        name: "Go net/http",
        names: Names::Exact,
        read: go,
    },
    Upstream {
        name: "PHP, urldecode",
        names: Names::Exact,
        read: |p| Some(php_urldecode(before_query(p))),
    },
    Upstream {
        name: "PHP, rawurldecode then parse_url",
        names: Names::Exact,
        read: |p| Some(before_query(&percent_decode(p)).to_vec()),
    },
    Upstream {
        name: "an application decoding twice",
        names: Names::AnyCase,
        read: |p| {
            let twice = percent_decode(&percent_decode(before_query(p)));
            remove_dots(&merge_slashes(&twice), AboveRoot::Stay)
        },
    },
];

/// Whether `served` is `page_path` or below it, compared as `names` says. Empty segments are
/// skipped: a file system reads `a//b` as `a/b`.
pub fn serves_under(served: &[u8], page_path: &str, names: Names) -> bool {
    let mut served = served.split(|&b| b == b'/').filter(|s| !s.is_empty());
    page_path
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .all(|page| served.next().is_some_and(|s| same_name(s, page, names)))
}

fn same_name(served: &[u8], page: &[u8], names: Names) -> bool {
    match names {
        Names::Exact => served == page,
        Names::AnyCase => served.eq_ignore_ascii_case(page),
        Names::Windows => windows_name(served).eq_ignore_ascii_case(windows_name(page)),
    }
}

/// A name as Windows stores it: without trailing dots and spaces.
fn windows_name(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|&b| b != b'.' && b != b' ')
        .map_or(0, |i| i + 1);
    &name[..end]
}

/// The path without the query or fragment.
pub fn before_query(p: &[u8]) -> &[u8] {
    let end = p
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(p.len());
    &p[..end]
}

/// Percent-decoding that refuses an invalid `%` sequence.
fn decode_strict(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let high = hex_value(*s.get(i + 1)?)?;
            let low = hex_value(*s.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// JavaScript's `decodeURIComponent`: refuses an invalid `%` sequence and bytes that are not
/// UTF-8.
fn decode_uri_component(s: &[u8]) -> Option<Vec<u8>> {
    let decoded = decode_strict(s)?;
    std::str::from_utf8(&decoded).ok()?;
    Some(decoded)
}

/// PHP's `urldecode`: `+` is a space, an invalid `%` stays.
fn php_urldecode(s: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = s
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus)
}

fn merge_slashes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

fn backslashes_to_slashes(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect()
}

/// Drops `;` and what follows it up to the next `/` from each segment.
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

/// What `..` at the root does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AboveRoot {
    /// Stays at the root.
    Stay,
    /// Refuses the request.
    Refuse,
}

/// Resolves `.` and `..` segments of an absolute path.
fn remove_dots(path: &[u8], above: AboveRoot) -> Option<Vec<u8>> {
    let body = path.strip_prefix(b"/").unwrap_or(path);
    let segments: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
    let mut out: Vec<&[u8]> = Vec::new();
    for (i, &segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match segment {
            b"." => {}
            b".." => {
                if out.pop().is_none() && above == AboveRoot::Refuse {
                    return None;
                }
            }
            _ => {
                out.push(segment);
                continue;
            }
        }
        if last {
            out.push(b"");
        }
    }
    let mut joined = vec![b'/'];
    joined.extend_from_slice(&out.join(&b'/'));
    Some(joined)
}

/// nginx's `$uri`: `ngx_http_parse_complex_uri` on Linux, one pass that decodes `%XX` and
/// resolves `.`/`..` and `//` (with `merge_slashes`) as it goes. A decoded `%`, `#` or `?` is
/// kept as a literal character; any other decoded byte is read as if it had been sent raw.
/// Refused (400): control characters and spaces in the request line, an invalid `%` sequence,
/// `%00`, and `..` above the root.
pub fn nginx(raw: &[u8], merge: bool) -> Option<Vec<u8>> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Usual,
        Slash,
        Dot,
        DotDot,
        Quoted,
        QuotedSecond,
    }
    if raw.first() != Some(&b'/') || raw.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return None;
    }
    // The request line's parser leaves the character after the URI behind it.
    let at = |i: usize| raw.get(i).copied().unwrap_or(b'\n');
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let (mut state, mut quoted_state) = (State::Usual, State::Usual);
    let mut decoded = 0u8;
    let mut ch = at(0);
    let mut p = 1;
    // `p` is the index of the next character; nginx loops while `p <= uri_end`.
    while p <= raw.len() {
        match state {
            State::Usual => {
                if usual(ch) {
                    out.push(ch);
                    ch = at(p);
                    p += 1;
                    continue;
                }
                match ch {
                    b'/' => {
                        state = State::Slash;
                        out.push(ch);
                    }
                    b'%' => {
                        quoted_state = state;
                        state = State::Quoted;
                    }
                    b'?' | b'#' => return Some(out),
                    _ => out.push(ch),
                }
                ch = at(p);
                p += 1;
            }
            State::Slash => {
                if usual(ch) {
                    state = State::Usual;
                    out.push(ch);
                    ch = at(p);
                    p += 1;
                    continue;
                }
                match ch {
                    b'/' => {
                        if !merge {
                            out.push(ch);
                        }
                    }
                    b'.' => {
                        state = State::Dot;
                        out.push(ch);
                    }
                    b'%' => {
                        quoted_state = state;
                        state = State::Quoted;
                    }
                    b'?' | b'#' => return Some(out),
                    _ => {
                        state = State::Usual;
                        out.push(ch);
                    }
                }
                ch = at(p);
                p += 1;
            }
            State::Dot => {
                if usual(ch) {
                    state = State::Usual;
                    out.push(ch);
                    ch = at(p);
                    p += 1;
                    continue;
                }
                match ch {
                    b'/' => {
                        state = State::Slash;
                        out.pop();
                    }
                    b'.' => {
                        state = State::DotDot;
                        out.push(ch);
                    }
                    b'%' => {
                        quoted_state = state;
                        state = State::Quoted;
                    }
                    b'?' | b'#' => {
                        out.pop();
                        return Some(out);
                    }
                    _ => {
                        state = State::Usual;
                        out.push(ch);
                    }
                }
                ch = at(p);
                p += 1;
            }
            State::DotDot => {
                if usual(ch) {
                    state = State::Usual;
                    out.push(ch);
                    ch = at(p);
                    p += 1;
                    continue;
                }
                match ch {
                    b'/' | b'?' | b'#' => {
                        up_one(&mut out)?;
                        if ch != b'/' {
                            return Some(out);
                        }
                        state = State::Slash;
                    }
                    b'%' => {
                        quoted_state = state;
                        state = State::Quoted;
                    }
                    _ => {
                        state = State::Usual;
                        out.push(ch);
                    }
                }
                ch = at(p);
                p += 1;
            }
            State::Quoted => {
                decoded = hex_value(ch)?;
                state = State::QuotedSecond;
                ch = at(p);
                p += 1;
            }
            State::QuotedSecond => {
                let low = hex_value(ch)?;
                ch = decoded << 4 | low;
                if ch == 0 {
                    return None;
                }
                // A decoded `%` or `#` (second digit a digit) or `?` (second digit a letter) is
                // kept as it is; anything else is read again as if sent raw.
                let literal = if low < 10 {
                    ch == b'%' || ch == b'#'
                } else {
                    ch == b'?'
                };
                if literal {
                    state = State::Usual;
                    out.push(ch);
                    ch = at(p);
                    p += 1;
                } else {
                    state = quoted_state;
                }
            }
        }
    }
    match state {
        State::Quoted | State::QuotedSecond => return None,
        State::Dot => {
            out.pop();
        }
        State::DotDot => up_one(&mut out)?,
        _ => {}
    }
    Some(out)
}

/// nginx's characters that need no attention in a path (Linux build).
fn usual(ch: u8) -> bool {
    match ch {
        0x00..=0x20 | 0x7f => false,
        b'#' | b'%' | b'+' | b'.' | b'/' | b'?' => false,
        _ => true,
    }
}

/// nginx's `..`: `out` ends with `/..`; back to just after the slash before it.
fn up_one(out: &mut Vec<u8>) -> Option<()> {
    let mut u = out.len().checked_sub(4)?;
    loop {
        if out[u] == b'/' {
            out.truncate(u + 1);
            return Some(());
        }
        u = u.checked_sub(1)?;
    }
}

/// Apache httpd 2.4 (Linux): `ap_normalize_path` decodes unreserved characters, merges slashes
/// (`MergeSlashes On`) and resolves dot-segments (400 above the root, or for an invalid `%`);
/// then `ap_unescape_url` decodes the rest, with 404 for `%2f` unless `AllowEncodedSlashes On`,
/// and 400 for `%00`.
fn apache(raw: &[u8], encoded_slashes: bool) -> Option<Vec<u8>> {
    let path = before_query(raw);
    let mut unreserved = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b == b'%' {
            let value = hex_value(*path.get(i + 1)?)? << 4 | hex_value(*path.get(i + 2)?)?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                unreserved.push(value);
            } else {
                unreserved.extend_from_slice(&path[i..i + 3]);
            }
            i += 3;
        } else {
            unreserved.push(b);
            i += 1;
        }
    }
    let normal = remove_dots(&merge_slashes(&unreserved), AboveRoot::Refuse)?;
    let mut out = Vec::with_capacity(normal.len());
    let mut i = 0;
    while let Some(&b) = normal.get(i) {
        if b == b'%' {
            let value = hex_value(*normal.get(i + 1)?)? << 4 | hex_value(*normal.get(i + 2)?)?;
            if value == 0 || (value == b'/' && !encoded_slashes) {
                return None;
            }
            out.push(value);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Express's static files (`serve-static`, `send`): `decodeURIComponent` (400 if it fails),
/// 400 for a NUL, `path.normalize` (merges slashes, resolves dots), 403 above the root.
fn express_static(raw: &[u8]) -> Option<Vec<u8>> {
    let decoded = decode_uri_component(before_query(raw))?;
    if decoded.contains(&0) {
        return None;
    }
    remove_dots(&merge_slashes(&decoded), AboveRoot::Refuse)
}

/// Tomcat: `;parameters` dropped from the raw path, then decoded (400 for an invalid `%`, an
/// encoded `/` or a NUL), `\` refused (or taken as `/` with `ALLOW_BACKSLASH`), slashes merged,
/// dot-segments resolved (400 above the root).
fn tomcat(raw: &[u8], allow_backslash: bool) -> Option<Vec<u8>> {
    let stripped = strip_params(before_query(raw));
    let mut decoded = Vec::with_capacity(stripped.len());
    let mut i = 0;
    while let Some(&b) = stripped.get(i) {
        if b == b'%' {
            let value = hex_value(*stripped.get(i + 1)?)? << 4 | hex_value(*stripped.get(i + 2)?)?;
            if value == b'/' {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.contains(&0) {
        return None;
    }
    if decoded.contains(&b'\\') {
        if !allow_backslash {
            return None;
        }
        decoded = backslashes_to_slashes(&decoded);
    }
    remove_dots(&merge_slashes(&decoded), AboveRoot::Refuse)
}

/// IIS and http.sys: `%XX` and `%uXXXX` decoded (400 for an invalid sequence), `\` as `/`,
/// slashes merged, dot-segments resolved (never above the root); request filtering's
/// `allowDoubleEscaping="false"` refuses a path that would still change on a second decoding
/// and a `+`.
fn iis(raw: &[u8]) -> Option<Vec<u8>> {
    let path = iis_read(before_query(raw))?;
    if path.contains(&b'+') || percent_decode(&path) != path {
        return None;
    }
    Some(path)
}

/// IIS with double escaping allowed, and an ASP.NET application that decodes the path again.
fn iis_double(raw: &[u8]) -> Option<Vec<u8>> {
    iis_read(&iis_read(before_query(raw))?)
}

fn iis_read(path: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        if matches!(path.get(i + 1), Some(b'u' | b'U')) {
            let digits = path.get(i + 2..i + 6)?;
            let mut unit = 0u32;
            for &d in digits {
                unit = unit << 4 | u32::from(hex_value(d)?);
            }
            let c = char::from_u32(unit)?;
            decoded.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            i += 6;
        } else {
            decoded.push(hex_value(*path.get(i + 1)?)? << 4 | hex_value(*path.get(i + 2)?)?);
            i += 3;
        }
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    remove_dots(
        &merge_slashes(&backslashes_to_slashes(&decoded)),
        AboveRoot::Stay,
    )
}

/// Go's net/http serving files: the path decoded by `url.ParseRequestURI` (400 for an invalid
/// `%`), then `path.Clean` (slashes merged, dots resolved, `..` at the root stays there).
fn go(raw: &[u8]) -> Option<Vec<u8>> {
    let decoded = decode_strict(before_query(raw))?;
    remove_dots(&merge_slashes(&decoded), AboveRoot::Stay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx_uri(raw: &str) -> Option<String> {
        nginx(raw.as_bytes(), true).map(|u| String::from_utf8_lossy(&u).into_owned())
    }

    #[test]
    fn nginx_reads_paths_like_nginx() {
        for (raw, uri) in [
            ("/a/b", Some("/a/b")),
            ("//a///b", Some("/a/b")),
            ("/a/./b/../c", Some("/a/c")),
            ("/a/..", Some("/")),
            ("/a/.", Some("/a/")),
            ("/..", None),
            ("/../a", None),
            ("/%2e%2e/a", None),
            ("/x/..%2fa", Some("/a")),
            ("/x/%2e%2e%2fa", Some("/a")),
            ("/a%2fb", Some("/a/b")),
            ("/a%252fb", Some("/a%2fb")),
            ("/a%3fb?c", Some("/a?b")),
            ("/a%23b", Some("/a#b")),
            ("/a%00", None),
            ("/a%zz", None),
            ("/a%2", None),
            ("/a b", None),
            ("/a?x/../..", Some("/a")),
            ("/a#x", Some("/a")),
            ("/a/...", Some("/a/...")),
            ("/a/..x/", Some("/a/..x/")),
            ("/a\\..\\b", Some("/a\\..\\b")),
        ] {
            assert_eq!(nginx_uri(raw).as_deref(), uri, "{raw}");
        }
    }

    #[test]
    fn other_readings() {
        let read = |name: &str, raw: &str| {
            let upstream = ALL.iter().find(|u| u.name == name).expect("upstream");
            (upstream.read)(raw.as_bytes()).map(|u| String::from_utf8_lossy(&u).into_owned())
        };
        assert_eq!(
            read("Tomcat", "/x/..;/course/a").as_deref(),
            Some("/course/a")
        );
        assert_eq!(read("Tomcat", "/course%2fa"), None);
        assert_eq!(
            read("Apache httpd", "/x/%2e%2e/course").as_deref(),
            Some("/course")
        );
        assert_eq!(read("Apache httpd", "/course%2fa"), None);
        assert_eq!(
            read("IIS", "/x\\..\\Course.\\a").as_deref(),
            Some("/Course./a")
        );
        assert_eq!(read("IIS", "/%u0063ourse").as_deref(), Some("/course"));
        assert_eq!(read("IIS", "/%2563ourse"), None);
        assert_eq!(
            read(
                "IIS, allowDoubleEscaping, ASP.NET decoding again",
                "/%2563ourse"
            )
            .as_deref(),
            Some("/course")
        );
        assert_eq!(
            read("Go net/http", "/a/../../course").as_deref(),
            Some("/course")
        );
        assert_eq!(
            read("PHP, urldecode", "/course+/x").as_deref(),
            Some("/course /x")
        );
        assert!(serves_under(b"/Course./a", "/course/", Names::Windows));
        assert!(!serves_under(b"/Course/a", "/course/", Names::Exact));
        assert!(serves_under(b"//course//a", "/course/", Names::Exact));
        assert!(!serves_under(b"/courseware", "/course/", Names::AnyCase));
    }
}
