//! Forward-auth: an edge proxy that pagegate does not replace (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`) asks, for each request it holds, whether it may pass.
//!
//! The question is a `GET` to one of two endpoints under the prefix, describing the request the
//! edge holds (the *original*) in headers:
//!
//! - `{prefix}/auth/request`, for nginx `auth_request`: the original in `X-Original-URI` (or an
//!   absolute `X-Original-URL`), `X-Original-Method`, `X-Forwarded-Host` and `-Proto`. nginx
//!   cannot pass a redirect on, so a visitor who must sign in gets `401` with the address of the
//!   email form in `X-Pagegate-Login`, which the shipped snippet turns into the redirect.
//! - `{prefix}/auth/forward`, for Traefik `forwardAuth` and Caddy `forward_auth`: the original in
//!   `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri`; the `302` to the email form goes to the
//!   browser as it is.
//!
//! Allowed requests get `204` with the identity headers of a signed-in visitor. The decision is
//! the full proxy's: the site by the original host, the pages by the same path matcher, the same
//! sessions. This module reads the original ([`read_original`]) and shapes the answers; the
//! gateway wires them to the router, the path matcher and [`Auth::signed_in`](super::Auth).
//!
//! The original is only believed from a peer in `trusted_proxies` (the gateway refuses anyone
//! else), and even from there it must be unambiguous: every header once, no control characters,
//! no fragment, an absolute URL only when it names the forwarded host, and none of the other
//! edge's headers or `_` spellings, which only a client can have added (both edges pass the
//! client's own headers to the auth service).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::routing::normalize_host;

/// The header of a `401` from `/auth/request` that carries where to sign in; the nginx snippet
/// turns it into the browser's redirect.
pub const LOGIN_HEADER: &str = "x-pagegate-login";

/// Which edge convention a question follows, by the endpoint it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// nginx `auth_request` at `{prefix}/auth/request`: nginx cannot pass a redirect from the
    /// auth service to the browser, only allow (2xx) or deny (401, 403).
    AuthRequest,
    /// Traefik `forwardAuth` and Caddy `forward_auth` at `{prefix}/auth/forward`: a non-2xx
    /// answer goes to the browser as it is.
    ForwardAuth,
}

impl Edge {
    /// The edge whose endpoint `sub_path` (the path after the prefix, exactly as sent) is.
    pub fn for_endpoint(sub_path: &str) -> Option<Edge> {
        match sub_path {
            "/auth/request" => Some(Edge::AuthRequest),
            "/auth/forward" => Some(Edge::ForwardAuth),
            _ => None,
        }
    }

    /// The headers this edge describes the original with (lower case).
    fn own_headers(self) -> &'static [&'static str] {
        match self {
            Edge::AuthRequest => &[
                "x-original-uri",
                "x-original-url",
                "x-original-method",
                "x-forwarded-host",
                "x-forwarded-proto",
            ],
            Edge::ForwardAuth => &[
                "x-forwarded-uri",
                "x-forwarded-method",
                "x-forwarded-host",
                "x-forwarded-proto",
            ],
        }
    }
}

/// Every header some edge describes an original with. A question carrying one its edge does not
/// send, or any of them spelt with `_`, carries a client's claim.
const ORIGINAL_HEADERS: [&str; 7] = [
    "x-original-uri",
    "x-original-url",
    "x-original-method",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The request the edge holds, as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Its method; shapes only the denial (a page navigation is sent to the email form).
    pub method: Method,
    /// Its host, normalised ([`normalize_host`]): chooses the site.
    pub host: String,
    /// Its host with the port the visitor wrote, if any: where the visitor is sent back to.
    pub authority: String,
    /// Its target in origin form (path and query), still percent-encoded, exactly as the edge
    /// forwards it.
    pub target: String,
    /// Whether the visitor reached the edge over HTTPS (names the session cookie).
    pub secure: bool,
}

/// Why a question's original cannot be believed; answered `400`, never allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    /// A header the original needs is absent: never read as `/` or as the question's own path.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A header is given twice, or both `X-Original-URI` and `X-Original-URL` are.
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    /// A header's value is not what the edge sends (control characters, spaces, non-ASCII,
    /// a fragment, a relative target, a host that is no host name, a scheme other than http(s)).
    #[error("{0} is not valid")]
    Invalid(&'static str),
    /// An absolute original names another host or scheme than `X-Forwarded-Host`/`-Proto`.
    #[error("the original URL disagrees with X-Forwarded-Host or X-Forwarded-Proto")]
    Disagrees,
    /// A header only a client can have added: the other edge's, or a `_` spelling.
    #[error("unexpected header {0}")]
    Foreign(String),
}

impl Original {
    /// The absolute address of `path` (starting with `/`) on the visitor's site, as the visitor
    /// reached it. Traefik resolves a relative `Location` from the auth service against the
    /// service's own address, so the sign-in redirect is always absolute.
    pub fn url_of(&self, path: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }
}

impl OriginalError {
    /// A fixed sentence for the `400` page; the header named, never its value.
    pub fn public_message(&self) -> &'static str {
        match self {
            OriginalError::Missing(_) => {
                "The forward-auth question does not describe the original request."
            }
            OriginalError::Repeated(_) => {
                "The forward-auth question describes the original request more than once."
            }
            OriginalError::Invalid(_) => {
                "The forward-auth question's original request is not valid."
            }
            OriginalError::Disagrees => {
                "The forward-auth question's original URL disagrees with its forwarded host."
            }
            OriginalError::Foreign(_) => {
                "The forward-auth question carries headers its edge never sends."
            }
        }
    }
}

/// Reads the original from the question's headers, as `edge` sends it. Strict: anything an
/// edge would not send is refused rather than interpreted.
pub fn read_original(headers: &HeaderMap, edge: Edge) -> Result<Original, OriginalError> {
    reject_foreign(headers, edge)?;
    let forwarded_host = one(headers, "x-forwarded-host", "X-Forwarded-Host")?;
    let forwarded_proto = one(headers, "x-forwarded-proto", "X-Forwarded-Proto")?;
    let (method, target) = match edge {
        Edge::AuthRequest => {
            let uri = one(headers, "x-original-uri", "X-Original-URI")?;
            let url = one(headers, "x-original-url", "X-Original-URL")?;
            let target = match (uri, url) {
                (Some(_), Some(_)) => {
                    return Err(OriginalError::Repeated("X-Original-URI and X-Original-URL"));
                }
                (Some(t), None) => (t, "X-Original-URI"),
                (None, Some(t)) => (t, "X-Original-URL"),
                (None, None) => return Err(OriginalError::Missing("X-Original-URI")),
            };
            let method = one(headers, "x-original-method", "X-Original-Method")?
                .ok_or(OriginalError::Missing("X-Original-Method"))?;
            ((method, "X-Original-Method"), target)
        }
        Edge::ForwardAuth => {
            let target = one(headers, "x-forwarded-uri", "X-Forwarded-Uri")?
                .ok_or(OriginalError::Missing("X-Forwarded-Uri"))?;
            let method = one(headers, "x-forwarded-method", "X-Forwarded-Method")?
                .ok_or(OriginalError::Missing("X-Forwarded-Method"))?;
            ((method, "X-Forwarded-Method"), (target, "X-Forwarded-Uri"))
        }
    };
    let method = Method::from_bytes(method.0.as_bytes())
        .ok()
        .filter(|m| m.as_str().len() <= 32)
        .ok_or(OriginalError::Invalid(method.1))?;
    let (absolute, path) = split_target(target.0).ok_or(OriginalError::Invalid(target.1))?;
    let proto = forwarded_proto
        .map(|p| scheme_is_https(p).ok_or(OriginalError::Invalid("X-Forwarded-Proto")))
        .transpose()?;
    let host = forwarded_host
        .map(|h| {
            normalize_host(h)
                .map(|n| (n.into_owned(), port_of(h).map(str::to_owned)))
                .ok_or(OriginalError::Invalid("X-Forwarded-Host"))
        })
        .transpose()?;
    let (secure, (host, port)) = match (absolute, proto, host) {
        (Some(url), proto, host) => {
            if proto.is_some_and(|p| p != url.secure)
                || host
                    .as_ref()
                    .is_some_and(|(name, port)| *name != url.host || *port != url.port)
            {
                return Err(OriginalError::Disagrees);
            }
            (url.secure, (url.host, url.port))
        }
        (None, Some(secure), Some(host)) => (secure, host),
        (None, None, _) => return Err(OriginalError::Missing("X-Forwarded-Proto")),
        (None, _, None) => return Err(OriginalError::Missing("X-Forwarded-Host")),
    };
    let authority = match port {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    Ok(Original {
        method,
        host,
        authority,
        target: path.to_owned(),
        secure,
    })
}

/// Refuses the other edge's headers and `_` spellings of any original header.
fn reject_foreign(headers: &HeaderMap, edge: Edge) -> Result<(), OriginalError> {
    let own = edge.own_headers();
    for name in headers.keys() {
        let name = name.as_str();
        if !(name.starts_with("x-") || name.starts_with("x_")) {
            continue;
        }
        let foreign = ORIGINAL_HEADERS.iter().any(|h| {
            let spelt = name.len() == h.len()
                && name
                    .bytes()
                    .zip(h.bytes())
                    .all(|(n, c)| n == c || (n == b'_' && c == b'-'));
            spelt && (name != *h || !own.contains(h))
        });
        if foreign {
            return Err(OriginalError::Foreign(name.to_owned()));
        }
    }
    Ok(())
}

/// The header `name`'s one value as text, if present. Two values (two lines, or one line with a
/// comma-joined list an edge appended to) and anything but visible ASCII are refused.
fn one<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    display: &'static str,
) -> Result<Option<&'a str>, OriginalError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OriginalError::Repeated(display));
    }
    visible_ascii(value)
        .map(Some)
        .ok_or(OriginalError::Invalid(display))
}

/// The value as text when it is non-empty visible ASCII (no space, tab or control character,
/// nothing above 0x7e: no request line or host name carries them).
fn visible_ascii(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// `http` → false, `https` → true, in any case; anything else (a list, another scheme) `None`.
fn scheme_is_https(proto: &str) -> Option<bool> {
    if proto.eq_ignore_ascii_case("https") {
        Some(true)
    } else if proto.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

/// The scheme and authority of an absolute original.
#[derive(Debug, PartialEq, Eq)]
struct Absolute {
    secure: bool,
    host: String,
    port: Option<String>,
}

/// Splits an original target (visible ASCII) into its absolute part, if any, and its
/// origin-form path and query. `None` for what no request line holds: a fragment (`#`; the edge
/// forwards it and the site may read past it, where the path matcher would stop), a relative
/// path, `*`, another scheme or an opaque form (`http:%2f%2fhost/...`), user information, or an
/// authority that is no host name.
fn split_target(target: &str) -> Option<(Option<Absolute>, &str)> {
    if target.contains('#') {
        return None;
    }
    if target.starts_with('/') {
        return Some((None, target));
    }
    let (scheme, rest) = target.split_once("://")?;
    let secure = scheme_is_https(scheme)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let host = normalize_host(authority)?.into_owned();
    // `http://a.example` is the root; `http://a.example?x`, a query without a path, is sent by
    // no edge and refused rather than rebuilt.
    let path = match path {
        "" => "/",
        p if p.starts_with('/') => p,
        _ => return None,
    };
    let port = port_of(authority).map(str::to_owned);
    Some((Some(Absolute { secure, host, port }), path))
}

/// The port of a host or authority, if written.
fn port_of(host: &str) -> Option<&str> {
    let after_bracket = host.rfind(']').map_or(host, |i| &host[i..]);
    after_bracket.rsplit_once(':').map(|(_, p)| p)
}

/// `204` for a request that may pass, with the identity headers of the signed-in visitor (none
/// for an unprotected path). Traefik (`authResponseHeaders`), Caddy (`copy_headers`) and the
/// nginx snippet (`auth_request_set`) put exactly these on the request to the site.
pub fn allowed(identity: &[(HeaderName, HeaderValue)]) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    for (name, value) in identity {
        h.insert(name.clone(), value.clone());
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer for a request that needs a session it does not have. A browser navigation is sent
/// to the email form at `login` (on the protected host itself, where the snippets route the
/// prefix to pagegate): Traefik and Caddy pass a `302` on as it is; nginx can only deny, so
/// `/auth/request` answers `401` carrying the address in [`LOGIN_HEADER`] for its snippet to
/// redirect to. Anything else gets the `401` JSON `json` of the full proxy.
pub fn sign_in(edge: Edge, navigation: bool, login: &str, json: Response<Body>) -> Response<Body> {
    if !navigation {
        return json;
    }
    let Ok(location) = HeaderValue::from_str(login) else {
        return json;
    };
    let (status, name) = match edge {
        Edge::AuthRequest => (
            StatusCode::UNAUTHORIZED,
            HeaderName::from_static(LOGIN_HEADER),
        ),
        Edge::ForwardAuth => (StatusCode::FOUND, header::LOCATION),
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(name, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v.as_bytes()).expect("value"),
            );
        }
        h
    }

    /// What Traefik and Caddy send for `GET http://school.test/course/x?y`.
    const TRAEFIK: [(&str, &str); 5] = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "school.test"),
        ("x-forwarded-uri", "/course/x?y"),
        ("x-forwarded-for", "198.51.100.7"),
    ];

    /// What the nginx snippet sends for the same request.
    const NGINX: [(&str, &str); 4] = [
        ("x-original-method", "GET"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "school.test"),
        ("x-original-uri", "/course/x?y"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        changes: &[(&'static str, &'static str)],
    ) -> HeaderMap {
        let mut pairs: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)))
            .collect();
        pairs.extend(changes.iter().copied().filter(|(_, v)| !v.is_empty()));
        headers(&pairs)
    }

    fn expected(target: &str) -> Original {
        Original {
            method: Method::GET,
            host: "school.test".into(),
            authority: "school.test".into(),
            target: target.into(),
            secure: false,
        }
    }

    #[test]
    fn each_edge_reads_its_own_headers() {
        assert_eq!(
            read_original(&headers(&TRAEFIK), Edge::ForwardAuth),
            Ok(expected("/course/x?y"))
        );
        assert_eq!(
            read_original(&headers(&NGINX), Edge::AuthRequest),
            Ok(expected("/course/x?y"))
        );
        let https = with(
            &TRAEFIK,
            &[
                ("x-forwarded-proto", "HTTPS"),
                ("x-forwarded-host", "School.Test:8443"),
                ("x-forwarded-method", "POST"),
            ],
        );
        let original = read_original(&https, Edge::ForwardAuth).expect("valid");
        assert!(original.secure);
        assert_eq!(original.host, "school.test");
        assert_eq!(original.url_of("/x"), "https://school.test:8443/x");
        assert_eq!(original.method, Method::POST);
    }

    #[test]
    fn a_missing_original_is_refused_never_read_as_the_root() {
        for name in [
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            let h = with(&TRAEFIK, &[(name, "")]);
            assert!(
                matches!(
                    read_original(&h, Edge::ForwardAuth),
                    Err(OriginalError::Missing(_))
                ),
                "{name}"
            );
        }
        for name in [
            "x-original-uri",
            "x-original-method",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            let h = with(&NGINX, &[(name, "")]);
            assert!(
                matches!(
                    read_original(&h, Edge::AuthRequest),
                    Err(OriginalError::Missing(_))
                ),
                "{name}"
            );
        }
        // nginx's question carries Traefik's headers as a client sent them: not its original.
        assert!(read_original(&headers(&TRAEFIK), Edge::AuthRequest).is_err());
        assert!(read_original(&headers(&NGINX), Edge::ForwardAuth).is_err());
    }

    #[test]
    fn two_values_of_one_header_are_refused() {
        for (name, value) in [
            ("x-forwarded-uri", "/public/"),
            ("x-forwarded-host", "other.test"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-method", "GET"),
        ] {
            let mut h = headers(&TRAEFIK);
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            assert!(
                matches!(
                    read_original(&h, Edge::ForwardAuth),
                    Err(OriginalError::Repeated(_))
                ),
                "{name}"
            );
        }
        // A list in one line, as an edge that appends to a client's header writes it.
        for (name, value) in [
            ("x-forwarded-host", "school.test, other.test"),
            ("x-forwarded-host", "school.test,other.test"),
            ("x-forwarded-proto", "https,http"),
        ] {
            let h = with(&TRAEFIK, &[(name, value)]);
            assert!(read_original(&h, Edge::ForwardAuth).is_err(), "{value}");
        }
        let both = with(&NGINX, &[("x-original-url", "http://school.test/public/")]);
        assert_eq!(
            read_original(&both, Edge::AuthRequest),
            Err(OriginalError::Repeated("X-Original-URI and X-Original-URL"))
        );
    }

    #[test]
    fn control_characters_spaces_and_non_ascii_are_refused() {
        for value in [
            &b"/course/\x00"[..],
            b"/course/\tx",
            b"/course/ x",
            b"/course/\x7f",
            b"/course/\xc3\xa9",
            b"/public/\x1b[2J",
        ] {
            let mut h = with(&TRAEFIK, &[("x-forwarded-uri", "")]);
            let Ok(v) = HeaderValue::from_bytes(value) else {
                continue; // the http crate refuses it already
            };
            h.insert("x-forwarded-uri", v);
            assert_eq!(
                read_original(&h, Edge::ForwardAuth),
                Err(OriginalError::Invalid("X-Forwarded-Uri")),
                "{value:?}"
            );
        }
        let h = with(&TRAEFIK, &[("x-forwarded-method", "G ET")]);
        assert!(read_original(&h, Edge::ForwardAuth).is_err());
        let h = with(&TRAEFIK, &[("x-forwarded-method", "GET\\")]);
        assert!(read_original(&h, Edge::ForwardAuth).is_err());
        let h = with(&TRAEFIK, &[("x-forwarded-host", "school.test/x")]);
        assert!(read_original(&h, Edge::ForwardAuth).is_err());
        let h = with(&TRAEFIK, &[("x-forwarded-proto", "ftp")]);
        assert!(read_original(&h, Edge::ForwardAuth).is_err());
    }

    #[test]
    fn what_no_request_line_holds_is_refused() {
        // Authelia CVE-2021-32637: a malformed original was allowed. Every one of these is
        // refused, never read as something else.
        for target in [
            "",
            "*",
            "course/x",
            "/public/#/../course/x",
            "/course/x#",
            "http:%2f%2fschool.test/course/x",
            "http:/course/x",
            "//",
            "ftp://school.test/course/x",
            "http://user@school.test/course/x",
            "http://school.test:x/course/x",
            "http://bad host/course/x",
            "http://school.test?x",
        ] {
            let h = with(&TRAEFIK, &[("x-forwarded-uri", target)]);
            let answer = read_original(&h, Edge::ForwardAuth);
            if target == "//" {
                // A path of empty segments: the path matcher reads it like the full proxy.
                assert_eq!(answer.map(|o| o.target), Ok("//".to_owned()));
                continue;
            }
            assert!(answer.is_err(), "{target:?} → {answer:?}");
        }
    }

    #[test]
    fn an_absolute_original_must_name_the_forwarded_host() {
        let h = with(
            &NGINX,
            &[
                ("x-original-uri", ""),
                ("x-original-url", "http://school.test/course/x?y"),
            ],
        );
        assert_eq!(
            read_original(&h, Edge::AuthRequest),
            Ok(expected("/course/x?y"))
        );
        // Without X-Forwarded-Host and -Proto the URL says both.
        let h = headers(&[
            ("x-original-method", "GET"),
            ("x-original-url", "https://School.test/course/x"),
        ]);
        let original = read_original(&h, Edge::AuthRequest).expect("valid");
        assert_eq!(
            (
                original.host.as_str(),
                original.secure,
                original.target.as_str()
            ),
            ("school.test", true, "/course/x")
        );
        let root = headers(&[
            ("x-original-method", "GET"),
            ("x-original-url", "http://school.test"),
        ]);
        assert_eq!(
            read_original(&root, Edge::AuthRequest).map(|o| o.target),
            Ok("/".into())
        );
        for (url, why) in [
            ("http://other.test/course/x", "another host"),
            ("http://school.test:8080/course/x", "another port"),
            ("https://school.test/course/x", "another scheme"),
            ("http://school.test.other.test/course/x", "a longer host"),
        ] {
            let h = with(&NGINX, &[("x-original-uri", ""), ("x-original-url", url)]);
            assert_eq!(
                read_original(&h, Edge::AuthRequest),
                Err(OriginalError::Disagrees),
                "{why}"
            );
        }
        let h = with(
            &TRAEFIK,
            &[("x-forwarded-uri", "http://other.test/public/")],
        );
        assert_eq!(
            read_original(&h, Edge::ForwardAuth),
            Err(OriginalError::Disagrees)
        );
    }

    #[test]
    fn the_other_edges_headers_and_underscore_spellings_are_refused() {
        // oauth2-proxy CVE-2026-40575 believed a client's X-Forwarded-Uri; Traefik passed
        // `X_Forwarded_*` aliases that backends merged with the real ones. Both edges pass the
        // client's headers on to the auth service, so any of these came from the client.
        for (edge, base, extra) in [
            (Edge::AuthRequest, &NGINX[..], "x-forwarded-uri"),
            (Edge::AuthRequest, &NGINX[..], "x-forwarded-method"),
            (Edge::AuthRequest, &NGINX[..], "x_original_uri"),
            (Edge::AuthRequest, &NGINX[..], "x_forwarded_host"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x-original-url"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x-original-uri"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x-original-method"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x_forwarded_uri"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x_forwarded_proto"),
            (Edge::ForwardAuth, &TRAEFIK[..], "x-forwarded_host"),
        ] {
            let mut h = headers(base);
            h.insert(
                HeaderName::from_bytes(extra.as_bytes()).expect("name"),
                HeaderValue::from_static("/public/"),
            );
            assert_eq!(
                read_original(&h, edge),
                Err(OriginalError::Foreign(extra.to_owned())),
                "{edge:?} {extra}"
            );
        }
        // Other headers a client sends pass: they are not read.
        let h = with(
            &TRAEFIK,
            &[("x_forwarded_for", "1.2.3.4"), ("x-original-thing", "/")],
        );
        assert!(read_original(&h, Edge::ForwardAuth).is_ok());
    }

    #[test]
    fn encoded_and_dotted_originals_are_kept_for_the_path_matcher() {
        // Traefik's advisories: encoded separators and dot-segments reached the auth service
        // and were matched as written. They are passed on as written, for the same matcher as
        // the full proxy, which reads them every way a site might.
        for target in [
            "/course%2flesson",
            "/./course/x",
            "/x/..%2fcourse/",
            "/%2e%2e/course/",
            "/course;x=1/",
        ] {
            let h = with(&TRAEFIK, &[("x-forwarded-uri", target)]);
            assert_eq!(
                read_original(&h, Edge::ForwardAuth).map(|o| o.target),
                Ok(target.to_owned())
            );
        }
    }

    #[test]
    fn endpoints_are_named_exactly() {
        assert_eq!(Edge::for_endpoint("/auth/request"), Some(Edge::AuthRequest));
        assert_eq!(Edge::for_endpoint("/auth/forward"), Some(Edge::ForwardAuth));
        for other in [
            "/auth",
            "/auth/",
            "/auth/forward/",
            "/auth%2fforward",
            "/AUTH/forward",
        ] {
            assert_eq!(Edge::for_endpoint(other), None, "{other}");
        }
    }

    #[test]
    fn answers() {
        let json = || {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        };
        let r = sign_in(
            Edge::AuthRequest,
            true,
            "/_pagegate/login?next=%2Fcourse%2F",
            json(),
        );
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers().get(LOGIN_HEADER).map(|v| v.as_bytes()),
            Some(&b"/_pagegate/login?next=%2Fcourse%2F"[..])
        );
        let r = sign_in(Edge::ForwardAuth, true, "/_pagegate/login?next=%2F", json());
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers().get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        let r = sign_in(Edge::ForwardAuth, false, "/_pagegate/login", json());
        assert_eq!(r.status(), 401);
        assert!(r.headers().get(header::LOCATION).is_none());
        let r = allowed(&[(
            HeaderName::from_static("x-pagegate-email"),
            HeaderValue::from_static("ann@example.com"),
        )]);
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers().get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
    }
}
