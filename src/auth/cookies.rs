//! pagegate's cookies: the signed session cookie and the signed CSRF cookie of each site.
//!
//! Names carry a hash of the site's name so that two sites on one gateway never share a cookie,
//! and use the `__Host-` prefix on HTTPS (the browser then refuses them without `Secure`, with a
//! `Domain`, or with a path other than `/`). Values are signed with the gateway's key: a
//! tampered, truncated or foreign cookie simply reads as absent.

use std::time::Duration;

use cookie::{Cookie, CookieJar, SameSite};
use http::HeaderMap;
use http::header::{self, HeaderValue};
use sha2::{Digest, Sha256};

/// Every pagegate cookie name contains this, which is how they are kept from the upstream.
const MARKER: &str = "pagegate-";

/// The cookie names of one site, for plain HTTP and for HTTPS.
#[derive(Debug, Clone)]
pub struct CookieNames {
    session_plain: String,
    session_secure: String,
    csrf_plain: String,
    csrf_secure: String,
}

impl CookieNames {
    /// Names for the site called `site_name`.
    pub fn for_site(site_name: &str) -> CookieNames {
        let digest = Sha256::digest(site_name.as_bytes());
        let tag: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        CookieNames {
            session_plain: format!("{MARKER}{tag}"),
            session_secure: format!("__Host-{MARKER}{tag}"),
            csrf_plain: format!("{MARKER}csrf-{tag}"),
            csrf_secure: format!("__Host-{MARKER}csrf-{tag}"),
        }
    }

    /// The session cookie's name.
    pub fn session(&self, secure: bool) -> &str {
        if secure {
            &self.session_secure
        } else {
            &self.session_plain
        }
    }

    /// The CSRF cookie's name.
    pub fn csrf(&self, secure: bool) -> &str {
        if secure {
            &self.csrf_secure
        } else {
            &self.csrf_plain
        }
    }
}

/// The text of the one `name=value` pair named `name` in the request's cookies, as sent; `None`
/// when there is none or more than one.
///
/// Read on every signed-in request: a pair is looked at only as far as its name, which must
/// start it and be followed by nothing but blanks before `=` (cookie names hold no `=`).
pub fn sole_pair<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            pair.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
    let pair = found.next()?;
    found.next().is_none().then_some(pair)
}

/// The verified value of the signed cookie `name` in the request, if any.
pub fn read_signed(headers: &HeaderMap, name: &str, key: &cookie::Key) -> Option<String> {
    read_signed_any(headers, name, &[key]).map(|(value, _)| value)
}

/// The verified value of the signed cookie `name` and the index in `keys` of the key that signed
/// it, trying the keys in order (the current key first, after a rotation the previous ones).
pub fn read_signed_any(
    headers: &HeaderMap,
    name: &str,
    keys: &[&cookie::Key],
) -> Option<(String, usize)> {
    let jar = CookieJar::new();
    let candidates: Vec<Cookie<'static>> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        // Only the named cookie is parsed (and copied): a site's own cookies, often many, ride
        // along on every request. pagegate's names are plain, so they are never encoded.
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(n, _)| n.trim_end() == name)
        })
        .filter_map(|pair| Cookie::parse_encoded(pair.to_owned()).ok())
        .filter(|c| c.name() == name)
        .collect();
    keys.iter().enumerate().find_map(|(index, key)| {
        let signed = jar.signed(key);
        candidates
            .iter()
            .find_map(|c| signed.verify(c.clone()))
            .map(|c| (c.value().to_owned(), index))
    })
}

/// A `Set-Cookie` value for a signed cookie. `max_age` `None` makes a browser-session cookie;
/// zero deletes it.
pub fn set_signed(
    name: &str,
    value: &str,
    secure: bool,
    same_site: SameSite,
    max_age: Option<Duration>,
    key: &cookie::Key,
) -> Option<HeaderValue> {
    let mut builder = Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(same_site);
    if let Some(age) = max_age {
        builder = builder.max_age(cookie::time::Duration::seconds(
            age.as_secs().min(i64::MAX as u64) as i64,
        ));
    }
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(builder.build());
    let signed = jar.get(name)?;
    HeaderValue::from_str(&signed.encoded().to_string()).ok()
}

/// A `Set-Cookie` value that deletes `name`.
pub fn clear(name: &str, secure: bool) -> Option<HeaderValue> {
    let cookie = Cookie::build((name.to_owned(), ""))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::ZERO)
        .expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
    HeaderValue::from_str(&cookie.build().encoded().to_string()).ok()
}

/// Removes every pagegate cookie from the request's `Cookie` headers so the upstream never sees a
/// session, whatever site or page it is. Other cookies pass unchanged.
///
/// Runs on every proxied request: a request without pagegate's marker is passed over in one
/// scan, and one with it is rebuilt in a single buffer, pair by pair as `memchr` finds their
/// ends, with only the kept pairs checked as text.
pub fn strip_own(headers: &mut HeaderMap) {
    if !headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| has_marker(v.as_bytes()))
    {
        return;
    }
    let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) else {
        return;
    };
    let mut kept: Vec<u8> = Vec::new();
    for value in entry.iter() {
        let mut rest = value.as_bytes();
        while !rest.is_empty() {
            let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let pair = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            // The name is what comes before the first `=`; blanks around it cannot hide the
            // marker, which has none.
            let name_end = memchr::memchr(b'=', pair).unwrap_or(pair.len());
            if has_marker(&pair[..name_end]) {
                continue;
            }
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair.as_bytes());
        }
    }
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
        Ok(v) if !v.is_empty() => {
            entry.insert(v);
        }
        _ => {
            entry.remove();
        }
    }
}

/// Whether `text` contains [`MARKER`] in any case. Looks only where a `p` or `P` is, instead of
/// comparing nine bytes at every position of a header that can be long.
fn has_marker(text: &[u8]) -> bool {
    let marker = MARKER.as_bytes();
    memchr::memchr2_iter(b'p', b'P', text).any(|at| {
        text.get(at..at + marker.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(marker))
    })
}

/// For tests: the headers of a request that sends back the cookie a `Set-Cookie` value set,
/// between two cookies of the site's own.
#[cfg(test)]
pub(crate) fn request_with(set_cookie: &HeaderValue) -> HeaderMap {
    let pair = set_cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; {pair}; lang=ru")).expect("value"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> cookie::Key {
        cookie::Key::derive_from(&[3; 32])
    }

    #[test]
    fn a_signed_cookie_reads_back_and_a_tampered_one_does_not() {
        let names = CookieNames::for_site("shop");
        let set = set_signed(
            names.session(true),
            "abc",
            true,
            SameSite::Lax,
            Some(Duration::from_secs(60)),
            &key(),
        )
        .expect("cookie");
        let text = set.to_str().expect("ascii");
        assert!(text.starts_with("__Host-pagegate-"), "{text}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=60"] {
            assert!(text.contains(attr), "{attr} missing in {text}");
        }
        let headers = request_with(&set);
        assert_eq!(
            read_signed(&headers, names.session(true), &key()).as_deref(),
            Some("abc")
        );
        assert_eq!(
            read_signed(
                &headers,
                names.session(true),
                &cookie::Key::derive_from(&[4; 32])
            ),
            None
        );
        let tampered = HeaderValue::from_str(&text.replacen("abc", "abd", 1)).expect("value");
        assert_eq!(
            read_signed(&request_with(&tampered), names.session(true), &key()),
            None
        );
        let other_site = CookieNames::for_site("blog");
        assert_ne!(other_site.session(true), names.session(true));
        assert_eq!(
            read_signed(&headers, other_site.session(true), &key()),
            None
        );
    }

    #[test]
    fn own_cookies_are_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-pagegate-0a1b2c3d=xyz; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("pagegate-csrf-0a1b2c3d=q"),
        );
        strip_own(&mut h);
        assert_eq!(
            h.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("pagegate-0a1b2c3d=xyz"),
        );
        strip_own(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());
    }

    #[test]
    fn the_sole_pair_is_found_by_its_whole_name() {
        let headers = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_static(value));
            h
        };
        let name = "pagegate-0a1b";
        assert_eq!(
            sole_pair(&headers("a=1; pagegate-0a1b =v; pagegate-0a1bc=w"), name),
            Some("pagegate-0a1b =v")
        );
        assert_eq!(sole_pair(&headers("pagegate-0a1b; b=2"), name), None);
        assert_eq!(
            sole_pair(&headers("pagegate-0a1b=v;pagegate-0a1b=w"), name),
            None
        );
        assert_eq!(sole_pair(&headers("x=pagegate-0a1b=v"), name), None);
    }

    #[test]
    fn the_marker_is_found_in_any_case_and_anywhere_in_a_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "pp=1; x-PageGate-y=2; keep=pagegate-in-a-value;  ; __Host-PAGEGATE-=3; pagegate-",
            ),
        );
        strip_own(&mut h);
        assert_eq!(
            h.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            ["pp=1; keep=pagegate-in-a-value"]
        );
        // Cut short before the marker ends: nothing of pagegate's, nothing changed.
        let mut none = HeaderMap::new();
        none.insert(header::COOKIE, HeaderValue::from_static("a=1;b=pagegat"));
        strip_own(&mut none);
        assert_eq!(
            none.get(header::COOKIE).map(|v| v.as_bytes()),
            Some(&b"a=1;b=pagegat"[..])
        );
    }
}
