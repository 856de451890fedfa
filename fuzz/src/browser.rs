//! The parts of the WHATWG URL Standard's basic URL parser that decide where a relative URL
//! leads once resolved against an `https` page: leading and trailing C0 controls and spaces are
//! stripped, tabs and newlines removed anywhere, `\` read as `/`, a scheme recognised before a
//! `:`, `//` (or `\\`, `/\`, `\/`) starting an authority, and `.`/`..` segments (also written
//! `%2e`) resolved.

/// Where a URL leads when resolved against `https://site.example/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A path on the same site (not normalised beyond dot-segments).
    Path(Vec<u8>),
    /// It names a host: another site, whatever the host turns out to be.
    Authority,
    /// It has a scheme of its own (`javascript:`, `http:`, `file:`, …).
    OtherScheme,
}

/// Resolves `input` as a browser does against a page of `https://site.example`.
pub fn resolve(input: &[u8]) -> Resolved {
    let is_c0_or_space = |b: &u8| *b <= 0x20;
    let start = input
        .iter()
        .position(|b| !is_c0_or_space(b))
        .unwrap_or(input.len());
    let end = input
        .iter()
        .rposition(|b| !is_c0_or_space(b))
        .map_or(start, |i| i + 1);
    let cleaned: Vec<u8> = input[start..end.max(start)]
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .collect();
    let mut rest: &[u8] = &cleaned;
    if let Some(colon) = scheme_end(rest) {
        let scheme = rest[..colon].to_ascii_lowercase();
        if scheme != b"https" {
            return Resolved::OtherScheme;
        }
        rest = &rest[colon + 1..];
        // Special relative or authority state: only `//` exactly goes to the authority here;
        // anything else continues as a relative URL (where `\` counts as `/`).
        if rest.starts_with(b"//") {
            return Resolved::Authority;
        }
    }
    let slash = |b: Option<&u8>| matches!(b, Some(b'/' | b'\\'));
    if slash(rest.first()) && slash(rest.get(1)) {
        return Resolved::Authority;
    }
    if !slash(rest.first()) {
        // Relative to the base path: the page's directory. Only the path matters below.
        let mut relative = b"/base/".to_vec();
        relative.extend_from_slice(rest);
        return Resolved::Path(resolve_path(&relative));
    }
    Resolved::Path(resolve_path(rest))
}

/// The path a request target names when read with the WHATWG parser against an `http` base, as
/// `new URL(req.url, base).pathname` does in Node: an authority after `//` is skipped, `\` is
/// `/`, dot-segments (also `%2e`) are resolved; nothing is decoded.
pub fn path_of(raw: &[u8]) -> Vec<u8> {
    let cleaned: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .collect();
    let trimmed = {
        let start = cleaned
            .iter()
            .position(|&b| b > 0x20)
            .unwrap_or(cleaned.len());
        let end = cleaned
            .iter()
            .rposition(|&b| b > 0x20)
            .map_or(start, |i| i + 1);
        &cleaned[start..end.max(start)]
    };
    let slash = |b: Option<&u8>| matches!(b, Some(b'/' | b'\\'));
    let mut rest = trimmed;
    if slash(rest.first()) && slash(rest.get(1)) {
        // Special authority ignore slashes: every further `/` or `\`, then the host.
        while slash(rest.first()) {
            rest = &rest[1..];
        }
        let host_end = rest
            .iter()
            .position(|b| matches!(b, b'/' | b'\\' | b'?' | b'#'))
            .unwrap_or(rest.len());
        rest = &rest[host_end..];
        if !slash(rest.first()) {
            let mut rooted = b"/".to_vec();
            rooted.extend_from_slice(crate::upstreams::before_query(rest));
            return resolve_path(&rooted);
        }
    }
    resolve_path(rest)
}

/// The scheme's length if `s` starts with one followed by `:`.
fn scheme_end(s: &[u8]) -> Option<usize> {
    if !s.first()?.is_ascii_alphabetic() {
        return None;
    }
    let end = s
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    (s[end] == b':').then_some(end)
}

/// Path state: segments split on `/` and `\`, up to the query or fragment; `.` and `..` (also
/// `%2e` forms, any case) resolved, never above the root.
fn resolve_path(path: &[u8]) -> Vec<u8> {
    let path = crate::upstreams::before_query(path);
    let body = match path.first() {
        Some(b'/' | b'\\') => &path[1..],
        _ => path,
    };
    let segments: Vec<&[u8]> = body.split(|&b| b == b'/' || b == b'\\').collect();
    let mut out: Vec<&[u8]> = Vec::new();
    for (i, &segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let lower = segment.to_ascii_lowercase();
        let dots: &[u8] = &lower;
        match dots {
            b"." | b"%2e" => {}
            b".." | b".%2e" | b"%2e." | b"%2e%2e" => {
                out.pop();
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
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_urls_lead() {
        let path = |p: &str| Resolved::Path(p.as_bytes().to_vec());
        for (input, want) in [
            ("/course/", path("/course/")),
            ("/a/../b", path("/b")),
            ("/a/%2E%2e/b?x", path("/b")),
            ("//evil.example/", Resolved::Authority),
            ("/\\evil.example", Resolved::Authority),
            ("\\/evil.example", Resolved::Authority),
            (" \t//evil.example", Resolved::Authority),
            ("/\t/evil.example", Resolved::Authority),
            ("https://evil.example", Resolved::Authority),
            ("https:/\\evil.example", Resolved::Authority),
            ("https:/course", path("/course")),
            ("HTTPS:course", path("/base/course")),
            ("javascript:alert(1)", Resolved::OtherScheme),
            ("http://x", Resolved::OtherScheme),
            ("a:b", Resolved::OtherScheme),
            ("course/x", path("/base/course/x")),
            ("?x", path("/base/")),
        ] {
            assert_eq!(resolve(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn node_request_paths() {
        for (raw, want) in [
            ("/course/x", "/course/x"),
            ("//evil/course/x", "/course/x"),
            ("/\\evil\\course", "/course"),
            ("///course", "/"),
            ("//evil", "/"),
            ("/x/%2e%2E/course", "/course"),
            ("/course?x/../..", "/course"),
        ] {
            assert_eq!(path_of(raw.as_bytes()), raw_bytes(want), "{raw:?}");
        }
    }

    fn raw_bytes(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
}
