//! Header rules at the proxy boundary: hop-by-hop removal (RFC 9110 §7.6.1), upgrade detection,
//! and the forwarding headers the upstream sees.
//!
//! A client must not be able to choose what the upstream believes about it: forwarding headers
//! from an untrusted peer are replaced, never appended to.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that describe one connection and never cross a proxy, in the order of the bits
/// [`hop_by_hop_present`] reports them by.
static HOP_BY_HOP: [&HeaderName; 6] = [
    &header::CONNECTION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &PROXY_CONNECTION,
    &KEEP_ALIVE,
];

/// Which of [`HOP_BY_HOP`] the message carries, one bit each, from one pass over the names: most
/// messages carry none, and most responses only `Connection`, so only those are then looked up.
fn hop_by_hop_present(headers: &HeaderMap) -> u8 {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    present
}

/// Headers a `Connection` token may not remove, because the request's target and framing
/// depend on them.
const PROTECTED_FROM_CONNECTION: [&str; 2] = ["host", "content-length"];

/// Removes hop-by-hop headers, including every header named in `Connection`, except those in
/// `PROTECTED_FROM_CONNECTION`. Returns whether the client asked for `TE: trailers`, which
/// gRPC-style upstreams need to see again.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let present = hop_by_hop_present(headers);
    if present == 0 {
        return false;
    }
    // Bit 0 is `Connection`, the first of `HOP_BY_HOP`: the only hop-by-hop header most
    // upstream responses carry.
    if present == 1 << 0 && remove_plain_connection(headers) {
        return false;
    }
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("trailers")));
    // Most responses do carry `Connection: keep-alive`; its values are shared, not copied, and a
    // single line needs no list.
    let mut listed = headers.get_all(header::CONNECTION).iter();
    let first = listed.next().cloned();
    let more: Vec<HeaderValue> = listed.cloned().collect();
    for value in first.iter().chain(&more) {
        for token in tokens(value) {
            let names_fixed_one = HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(token));
            let protected = PROTECTED_FROM_CONNECTION
                .iter()
                .any(|p| p.eq_ignore_ascii_case(token));
            if !names_fixed_one && !protected {
                // By name as written: no header name is built (and allocated) for the lookup.
                headers.remove(token);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    wants_trailers
}

/// Removes a `Connection` header that is one line naming no other header (`keep-alive` or
/// `close`, what nearly every upstream response carries) in one lookup; `false`, touching
/// nothing, for anything else.
fn remove_plain_connection(headers: &mut HeaderMap) -> bool {
    let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) else {
        return false;
    };
    let mut values = entry.iter();
    let plain = match (values.next(), values.next()) {
        (Some(only), None) => {
            let token = only.as_bytes().trim_ascii();
            token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
        }
        _ => false,
    };
    if plain {
        entry.remove();
    }
    plain
}

/// Prefix of the headers pagegate uses to tell the upstream who is signed in.
const IDENTITY_PREFIX: &str = "x-pagegate-";

/// Headers some frameworks (IIS URL Rewrite, Symfony, Laravel behind some proxies) use to
/// replace the request path. pagegate decides protection on the path it sees, so a client must
/// not be able to hand the upstream a different one.
const PATH_OVERRIDES: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// Headers pagegate sets itself for every request ([`set_forwarding`]); a client's copy in the
/// hyphenated spelling is replaced there, and one in any other spelling must go.
const SET_BY_GATEWAY: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Forwarding headers pagegate does not set, which frameworks and allow-lists behind it still
/// believe (Rails and Symfony build URLs from the port, prefix and scheme ones; Spring, CDN-aware
/// apps and IP allow-lists take the client address from the rest). Only a trusted front proxy
/// may send them.
const CLAIMED_BY_FRONT_PROXIES: [&str; 19] = [
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-server",
    "x-forwarded",
    "forwarded-for",
    "x-url-scheme",
    "front-end-https",
    "x-original-forwarded-for",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-envoy-external-address",
];

/// Whether header name `name` (lower case, as `HeaderName`s are) is `canonical` in some
/// spelling: `_` for `-` anywhere (CGI, PHP, WSGI and many frameworks read `X_Forwarded_Port` as
/// `X-Forwarded-Port`). Returns `Some(true)` when it is the canonical spelling itself.
fn spelled_as(name: &[u8], canonical: &str) -> Option<bool> {
    let canonical = canonical.as_bytes();
    if name.len() != canonical.len() {
        return None;
    }
    let mut exact = true;
    for (n, c) in name.iter().zip(canonical) {
        if n != c {
            if *n == b'_' && *c == b'-' {
                exact = false;
            } else {
                return None;
            }
        }
    }
    Some(exact)
}

/// Whether a client's header must not reach the upstream: anything posing as a signed-in
/// visitor (`x-pagegate-*` and the configured identity names `also`), a path override, and,
/// unless the peer is a trusted front proxy, any forwarding claim. Every check also catches the
/// `_` spellings; pagegate's own forwarding headers in their exact spelling are left to
/// [`set_forwarding`], which replaces or extends them.
fn is_client_claim(name: &HeaderName, also: &[HeaderName], peer_trusted: bool) -> bool {
    let name = name.as_str().as_bytes();
    let prefix = IDENTITY_PREFIX.len();
    if name.len() >= prefix && spelled_as(&name[..prefix], IDENTITY_PREFIX).is_some() {
        return true;
    }
    // Every other name checked below starts with one of these letters; most of a request's
    // headers (host, accept-*, user-agent, cookie, sec-*) are passed over here.
    let first = name.first();
    let may_be_configured = also.iter().any(|a| a.as_str().as_bytes().first() == first);
    if !may_be_configured && !matches!(first, Some(b'x' | b'f' | b't' | b'c')) {
        return false;
    }
    if also.iter().any(|a| spelled_as(name, a.as_str()).is_some())
        || PATH_OVERRIDES.iter().any(|c| spelled_as(name, c).is_some())
    {
        return true;
    }
    if SET_BY_GATEWAY
        .iter()
        .any(|c| spelled_as(name, c) == Some(false))
    {
        return true;
    }
    // A front proxy writes these with hyphens: an underscore spelling came from its client.
    CLAIMED_BY_FRONT_PROXIES
        .iter()
        .any(|c| spelled_as(name, c).is_some_and(|exact| !peer_trusted || !exact))
}

/// Removes from a client's request every header a client could use to make the upstream believe
/// something pagegate did not check (see [`is_client_claim`]). Runs on every proxied request, so
/// a request carrying none (nearly all) costs one look at each name and no allocation.
pub fn remove_client_claims(headers: &mut HeaderMap, also: &[HeaderName], peer_trusted: bool) {
    if !headers
        .keys()
        .any(|n| is_client_claim(n, also, peer_trusted))
    {
        return;
    }
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_client_claim(n, also, peer_trusted))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Headers by which CDNs and caching proxies take caching orders meant for them alone, over
/// `Cache-Control` (Fastly, Akamai, Cloudflare, nginx's `proxy_cache`).
const SHARED_CACHE_ORDERS: [&str; 5] = [
    "surrogate-control",
    "cdn-cache-control",
    "cloudflare-cdn-cache-control",
    "edge-control",
    "x-accel-expires",
];

/// Makes an answer to a signed-in visitor unusable for shared caches, whatever the upstream
/// said: a CDN or caching proxy in front of the gateway that stored it would hand a paid file to
/// the next visitor without pagegate ever seeing that request.
///
/// `Cache-Control` keeps the upstream's directives for the visitor's own browser (`max-age`,
/// `no-cache`, `immutable`, …) but loses `public`, `s-maxage` and a field-qualified `private`
/// (which leaves the rest of the answer storable), and gains a bare `private`, or becomes
/// `no-store` when `no_store`. `Expires` goes (a cache that ignores `Cache-Control` would obey
/// it), and so do the CDN-only caching headers. `Vary: Cookie` is added for caches that key on
/// it rather than honour `private`.
pub fn keep_from_shared_caches(headers: &mut HeaderMap, no_store: bool) {
    // One look at the names the answer carries; removing each listed name in turn would parse
    // and hash all six on every protected answer, which seldom carries any of them.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| *n == header::EXPIRES || SHARED_CACHE_ORDERS.contains(&n.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    // The two answers nearly every protected response gets (the upstream's own directives are
    // all for shared caches, or it sent none) are static values: no list, no text, no copy.
    let directives = if no_store {
        Some(HeaderValue::from_static("no-store"))
    } else {
        let mut kept = vec![];
        for value in headers.get_all(header::CACHE_CONTROL) {
            for directive in tokens(value) {
                let name = directive.split('=').next().unwrap_or("").trim();
                let for_shared_caches = ["public", "s-maxage", "private"]
                    .iter()
                    .any(|d| name.eq_ignore_ascii_case(d));
                if !for_shared_caches && !kept.contains(&directive) {
                    kept.push(directive);
                }
            }
        }
        if kept.is_empty() {
            Some(HeaderValue::from_static("private"))
        } else {
            HeaderValue::from_str(&format!("private, {}", kept.join(", "))).ok()
        }
    };
    match directives {
        Some(value) => headers.insert(header::CACHE_CONTROL, value),
        None => headers.remove(header::CACHE_CONTROL),
    };
    let varies_by_cookie = headers
        .get_all(header::VARY)
        .iter()
        .any(|v| tokens(v).any(|t| t == "*" || t.eq_ignore_ascii_case("cookie")));
    if !varies_by_cookie {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade: x`),
/// or `None`. `h2c` is never honoured: the gateway speaks HTTP/2 to clients itself, and an h2c
/// upgrade passed through would let a client talk to the upstream unchecked.
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
    if !asks {
        return None;
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let names_h2c = tokens(value).any(|t| {
        t.split('/')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("h2c"))
    });
    (!names_h2c && !value.is_empty()).then(|| value.clone())
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What the upstream should be told about the original request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The TCP peer of this connection.
    pub peer: SocketAddr,
    /// Whether the peer is a configured front proxy whose headers are believed.
    pub peer_trusted: bool,
    /// `http` or `https`, as the client reached pagegate.
    pub proto: &'static str,
    /// The Host the client asked for, as sent.
    pub host: &'a HeaderValue,
    /// Configured identity header names to remove from the client's request.
    pub strip: &'a [HeaderName],
    /// Identity headers to add for a signed-in visitor (empty otherwise).
    pub identity: &'a [(HeaderName, HeaderValue)],
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Sets `X-Forwarded-For/-Proto/-Host`, `X-Real-IP` and `Forwarded`. From a trusted front proxy
/// the chain is extended and its proto/host kept; from anyone else every such header is replaced.
///
/// This runs on every proxied request, so values are shared rather than re-validated: the
/// client's own Host value is reused as it came, and a client's address and `Forwarded` element
/// are formatted once per run of its requests ([`RecentPeers`]).
pub fn set_forwarding(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    let ip = fwd.peer.ip().to_canonical();
    if !fwd.peer_trusted {
        let (address, forwarded) = RecentPeers::values(ip, fwd.proto, fwd.host);
        match address {
            Some(ip) => {
                headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
                headers.insert(X_REAL_IP.clone(), ip);
            }
            None => {
                headers.remove(&X_FORWARDED_FOR);
                headers.remove(&X_REAL_IP);
            }
        }
        match forwarded {
            Some(v) => headers.insert(header::FORWARDED, v),
            None => headers.remove(header::FORWARDED),
        };
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(fwd.proto),
        );
        headers.insert(X_FORWARDED_HOST.clone(), fwd.host.clone());
        return;
    }
    let ip_text = ip_text(ip);
    let host = fwd.host.to_str().unwrap_or("");
    let forwarded_element = forwarded_element(ip, &ip_text, fwd.proto, host);
    append_list(headers, &X_FORWARDED_FOR, &ip_text);
    append_list(headers, &header::FORWARDED, &forwarded_element);
    set_if_absent(headers, &X_FORWARDED_PROTO, fwd.proto);
    set_if_absent(headers, &X_FORWARDED_HOST, host);
    set_if_absent(headers, &X_REAL_IP, &ip_text);
}

/// The forwarding values of the clients a thread served last, so that a client's run of
/// requests (a page and its assets on one keep-alive connection) formats its address and
/// `Forwarded` element once. Formatting them per request cost four allocations, about a third of
/// everything pagegate's own code allocated per proxied request. The values are shared: a hit
/// costs a reference count, not a copy.
///
/// Direct-mapped by address, per thread: no locking, a fixed few KiB per worker, and a client
/// whose slot another took simply formats again.
struct RecentPeers;

const RECENT_PEER_SLOTS: usize = 64;

struct PeerValues {
    ip: IpAddr,
    proto: &'static str,
    host: HeaderValue,
    address: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

thread_local! {
    static RECENT_PEERS: std::cell::RefCell<Vec<Option<PeerValues>>> =
        std::cell::RefCell::new((0..RECENT_PEER_SLOTS).map(|_| None).collect());
}

impl RecentPeers {
    /// `X-Forwarded-For`/`X-Real-IP` and `Forwarded` for a client; `None` where a value cannot
    /// be a header (a Host with bytes no header may carry).
    fn values(
        ip: IpAddr,
        proto: &'static str,
        host: &HeaderValue,
    ) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let compute = || {
            let ip_text = ip_text(ip);
            let host_text = host.to_str().unwrap_or("");
            let forwarded = forwarded_element(ip, &ip_text, proto, host_text);
            (
                HeaderValue::from_str(&ip_text).ok(),
                HeaderValue::from_str(&forwarded).ok(),
            )
        };
        RECENT_PEERS
            .try_with(|recent| {
                let Ok(mut recent) = recent.try_borrow_mut() else {
                    return compute();
                };
                let slot = &mut recent[Self::slot(ip)];
                if let Some(v) = slot.as_ref().filter(|v| {
                    v.ip == ip && v.proto == proto && v.host.as_bytes() == host.as_bytes()
                }) {
                    return (v.address.clone(), v.forwarded.clone());
                }
                let (address, forwarded) = compute();
                *slot = Some(PeerValues {
                    ip,
                    proto,
                    // A copy: the request's own value points into the connection's read buffer,
                    // which a cached share would keep alive.
                    host: HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone()),
                    address: address.clone(),
                    forwarded: forwarded.clone(),
                });
                (address, forwarded)
            })
            .unwrap_or_else(|_| compute())
    }

    fn slot(ip: IpAddr) -> usize {
        let bits: u64 = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let n = u128::from(v6);
                (n as u64) ^ ((n >> 64) as u64)
            }
        };
        // Fibonacci hashing: neighbouring addresses land far apart.
        (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % RECENT_PEER_SLOTS
    }
}

/// The address as text; IPv4 without the formatting machinery, which showed in profiles.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// One RFC 7239 element: `for=…;host=…;proto=…`, quoting where the grammar needs it.
fn forwarded_element(ip: IpAddr, ip_text: &str, proto: &str, host: &str) -> String {
    let mut element = String::with_capacity(32 + ip_text.len() + host.len());
    element.push_str("for=");
    if ip.is_ipv6() {
        element.push_str("\"[");
        element.push_str(ip_text);
        element.push_str("]\"");
    } else {
        element.push_str(ip_text);
    }
    element.push_str(";host=");
    let host_is_token = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'*+^`|".contains(&b));
    if host_is_token {
        element.push_str(host);
    } else {
        element.push('"');
        for c in host.chars() {
            if c == '\\' || c == '"' {
                element.push('\\');
            }
            element.push(c);
        }
        element.push('"');
    }
    element.push_str(";proto=");
    element.push_str(proto);
    element
}

fn replace(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if !headers.contains_key(name) {
        replace(headers, name, value);
    }
}

/// Appends to a comma-separated list header, folding several field lines into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    let existing: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = if existing.is_empty() {
        value.to_string()
    } else {
        format!("{}, {value}", existing.join(", "))
    };
    replace(headers, name, &joined);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn a_plain_connection_line_goes_and_a_listing_one_still_removes_what_it_names() {
        for value in ["keep-alive", " Keep-Alive ", "close"] {
            let mut h = map(&[("connection", value), ("content-length", "3")]);
            assert!(!remove_hop_by_hop(&mut h));
            assert_eq!(
                h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
                ["content-length"]
            );
        }
        let mut h = map(&[("connection", "keep-alive, x-secret"), ("x-secret", "1")]);
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "left: {h:?}");
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "left: {h:?}");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, host, content-length"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("connection", "X-Second-Line"),
            ("x-second-line", "2"),
            ("te", "gzip, trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "close"),
            ("host", "a.example"),
            ("content-length", "3"),
            ("accept", "*/*"),
        ]);
        assert!(remove_hop_by_hop(&mut h));
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-length", "host"]);
    }

    #[test]
    fn upgrade_detection_refuses_h2c() {
        let ws = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            requested_upgrade(&ws).as_ref().map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        for h in [
            map(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            map(&[
                ("connection", "upgrade, HTTP2-Settings"),
                ("upgrade", "websocket, H2C"),
            ]),
            map(&[("upgrade", "websocket")]),
            map(&[("connection", "upgrade")]),
        ] {
            assert_eq!(requested_upgrade(&h), None, "{h:?}");
        }
    }

    #[test]
    fn identity_headers_are_removed_in_every_spelling() {
        let mut h = map(&[
            ("x-pagegate-email", "mallory@example.com"),
            ("X_Pagegate_Name", "Mallory"),
            ("x_pagegate-page", "course"),
            ("x-pagegatex", "kept: not the prefix"),
            ("x_remote_user", "mallory"),
            ("x-remote-userx", "kept"),
            ("accept", "*/*"),
        ]);
        remove_client_claims(&mut h, &[HeaderName::from_static("x-remote-user")], true);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-pagegatex", "x-remote-userx"]);
    }

    #[test]
    fn forwarding_claims_are_believed_from_trusted_proxies_only() {
        let claims = [
            ("x-forwarded-prefix", "/admin"),
            ("X_Forwarded_Port", "443"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("front-end-https", "on"),
            ("true-client-ip", "10.0.0.1"),
            ("x-client-ip", "10.0.0.1"),
            ("cf-connecting-ip", "10.0.0.1"),
            ("x_cluster_client_ip", "10.0.0.1"),
            ("fastly-client-ip", "10.0.0.1"),
        ];
        let mut untrusted = map(&claims);
        untrusted.append("accept", HeaderValue::from_static("*/*"));
        remove_client_claims(&mut untrusted, &[], false);
        assert_eq!(untrusted.keys().collect::<Vec<_>>(), ["accept"]);

        // A front proxy sets the hyphenated ones; an underscore spelling came from its client.
        let mut trusted = map(&claims);
        remove_client_claims(&mut trusted, &[], true);
        assert!(trusted.contains_key("x-forwarded-prefix"));
        assert!(trusted.contains_key("cf-connecting-ip"));
        assert!(!trusted.contains_key("x_forwarded_port"));
        assert!(!trusted.contains_key("x_cluster_client_ip"));
    }

    #[test]
    fn path_overrides_and_odd_spellings_of_our_own_headers_always_go() {
        for trusted in [false, true] {
            let mut h = map(&[
                ("x-original-url", "/course/"),
                ("X_Rewrite_Url", "/course/"),
                ("x-original-uri", "/course/"),
                ("x_forwarded_for", "6.6.6.6"),
                ("X_Real_IP", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.5"),
                ("x-real-ip", "203.0.113.5"),
            ]);
            remove_client_claims(&mut h, &[], trusted);
            let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            // The exact spellings are left to set_forwarding, which replaces or extends them.
            assert_eq!(left, ["x-forwarded-for", "x-real-ip"], "trusted: {trusted}");
        }
    }

    #[test]
    fn answers_to_signed_in_visitors_are_kept_from_shared_caches() {
        let mut h = map(&[
            ("cache-control", "public, max-age=86400"),
            ("cache-control", "s-maxage=600, immutable"),
            ("expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
            ("surrogate-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=3600"),
            ("x-accel-expires", "3600"),
            ("vary", "Accept-Encoding"),
            ("etag", "\"v1\""),
        ]);
        keep_from_shared_caches(&mut h, false);
        assert_eq!(h["cache-control"], "private, max-age=86400, immutable");
        assert_eq!(
            h.get_all("vary").iter().collect::<Vec<_>>(),
            ["Accept-Encoding", "Cookie"]
        );
        for gone in [
            "expires",
            "surrogate-control",
            "cdn-cache-control",
            "x-accel-expires",
        ] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert!(h.contains_key("etag"));

        // A field-qualified private leaves the body storable: it becomes a bare one.
        let mut h = map(&[("cache-control", "private=\"set-cookie\", max-age=60")]);
        keep_from_shared_caches(&mut h, false);
        assert_eq!(h["cache-control"], "private, max-age=60");

        let mut h = map(&[("vary", "cookie")]);
        keep_from_shared_caches(&mut h, false);
        assert_eq!(h["cache-control"], "private");
        assert_eq!(h.get_all("vary").iter().count(), 1);

        let mut h = map(&[("cache-control", "public, max-age=60")]);
        keep_from_shared_caches(&mut h, true);
        assert_eq!(h["cache-control"], "no-store");
    }

    static A_EXAMPLE: HeaderValue = HeaderValue::from_static("a.example");

    fn fwd(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: "192.0.2.9:5000".parse().expect("addr"),
            peer_trusted: trusted,
            proto: "https",
            host: &A_EXAMPLE,
            strip: &[],
            identity: &[],
        }
    }

    #[test]
    fn untrusted_peer_forwarding_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        set_forwarding(&mut h, &fwd(false));
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["192.0.2.9"]
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["forwarded"], "for=192.0.2.9;host=a.example;proto=https");
        assert_eq!(h["x-real-ip"], "192.0.2.9");
    }

    #[test]
    fn remembered_client_values_follow_the_host_and_proto_asked_for() {
        let other = HeaderValue::from_static("b.example");
        let mut seen = Vec::new();
        for (host, proto, peer) in [
            (&A_EXAMPLE, "https", "192.0.2.9:1"),
            (&other, "https", "192.0.2.9:2"),
            (&A_EXAMPLE, "http", "192.0.2.9:3"),
            (&A_EXAMPLE, "https", "192.0.2.10:4"),
            (&A_EXAMPLE, "https", "192.0.2.9:5"),
        ] {
            let mut h = HeaderMap::new();
            let fwd = Forwarding {
                peer: peer.parse().expect("addr"),
                host,
                proto,
                ..fwd(false)
            };
            set_forwarding(&mut h, &fwd);
            seen.push((h["x-real-ip"].clone(), h["forwarded"].clone()));
        }
        assert_eq!(
            seen,
            [
                ("192.0.2.9", "for=192.0.2.9;host=a.example;proto=https"),
                ("192.0.2.9", "for=192.0.2.9;host=b.example;proto=https"),
                ("192.0.2.9", "for=192.0.2.9;host=a.example;proto=http"),
                ("192.0.2.10", "for=192.0.2.10;host=a.example;proto=https"),
                ("192.0.2.9", "for=192.0.2.9;host=a.example;proto=https"),
            ]
            .map(|(ip, f)| (HeaderValue::from_static(ip), HeaderValue::from_static(f)))
        );
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=203.0.113.5"),
        ]);
        set_forwarding(&mut h, &fwd(true));
        assert_eq!(h["x-forwarded-for"], "203.0.113.5, 192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.5, for=192.0.2.9;host=a.example;proto=https"
        );
    }

    #[test]
    fn forwarded_quotes_ipv6_and_ports() {
        let ip = "::1".parse().expect("ip");
        let e = forwarded_element(ip, &ip_text(ip), "http", "[::1]:8080");
        assert_eq!(e, "for=\"[::1]\";host=\"[::1]:8080\";proto=http");
        for octets in [[0, 9, 10, 99], [100, 199, 200, 255], [127, 0, 0, 1]] {
            let ip = IpAddr::from(octets);
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let ip = "10.0.200.7".parse().expect("ip");
        let e = forwarded_element(ip, &ip_text(ip), "https", "a\"b");
        assert_eq!(e, "for=10.0.200.7;host=\"a\\\"b\";proto=https");
    }
}
