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
pub fn sole_pair<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(n, _)| n.trim_end() == name)
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
pub fn strip_own(headers: &mut HeaderMap) {
    let has_ours = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(MARKER.len())
            .any(|w| w.eq_ignore_ascii_case(MARKER.as_bytes()))
    });
    if !has_ours {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !name.contains(MARKER)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
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
}
