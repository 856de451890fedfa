//! Who is calling the API: the `[[api_key]]`s of the configuration, presented either as
//! `Authorization: Bearer <secret>` or as a webhook signature
//! `Pagegate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//!
//! Bearer tokens are compared through their SHA-256 digests, in constant time and against every
//! key, so neither the length nor the first differing byte of a secret shows in the timing.
//! Signatures are checked over the exact bytes received, must be at most [`TOLERANCE`] seconds
//! from now, and work once: checking one gives the [`SpentSignature`] that the grant it carries
//! spends in the store, in the grant's own transaction, and the store refuses a second use until
//! the timestamp is stale anyway. Kept in the store rather than in memory, a spent signature
//! stays spent across a restart, and for every gateway sharing the store. Secrets and
//! signatures never reach the logs.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::{ApiKeyConfig, Config, Scope};
use crate::store::{SpentSignature, Timestamp};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "pagegate-signature";
/// How far a signature's timestamp may be from now, either way, in seconds.
pub const TOLERANCE: i64 = 300;
/// Most `v1=` entries looked at in one header (several allow rotating a secret).
const MAX_SIGNATURES: usize = 8;

/// The configured keys.
pub struct KeyRing {
    keys: Vec<Key>,
}

struct Key {
    config: ApiKeyConfig,
    digest: [u8; 32],
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// The `Pagegate-Signature` header's value.
    Signature(&'a str),
}

/// The credentials in `headers`: exactly one of a Bearer token and a signature.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials<'_>, ApiError> {
    let one = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| unauthorized("the credentials are not valid header text")),
            (Some(_), Some(_)) => Err(unauthorized("send the credentials header once")),
        }
    };
    match (one("authorization")?, one(SIGNATURE_HEADER)?) {
        (Some(_), Some(_)) => Err(unauthorized(
            "send either Authorization or Pagegate-Signature, not both",
        )),
        (Some(auth), None) => {
            let token = auth
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .filter(|token| !token.is_empty())
                .ok_or_else(|| unauthorized("expected Authorization: Bearer <secret>"))?;
            Ok(Credentials::Bearer(token))
        }
        (None, Some(sig)) => Ok(Credentials::Signature(sig)),
        (None, None) => Err(unauthorized(
            "missing credentials: send Authorization: Bearer <secret> or a Pagegate-Signature header",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_owned())
}

impl KeyRing {
    /// The keys of the configuration.
    pub fn new(config: &Config) -> KeyRing {
        KeyRing {
            keys: config
                .api_keys
                .iter()
                .map(|k| Key {
                    digest: Sha256::digest(k.secret.0.as_bytes()).into(),
                    config: k.clone(),
                })
                .collect(),
        }
    }

    /// The key whose secret is `token`.
    pub fn bearer(&self, token: &str) -> Result<&ApiKeyConfig, ApiError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Every key is compared, whichever matches.
        for key in &self.keys {
            if bool::from(key.digest.as_slice().ct_eq(digest.as_slice())) {
                found = Some(&key.config);
            }
        }
        found.ok_or_else(|| unauthorized("invalid credentials"))
    }

    /// The key that signed `body` with `header`, at `now`, and the signature for the grant to
    /// spend. Nothing is spent here: a request refused before its grant is written may be sent
    /// again and gets the same answer, and the store refuses the second grant of one signature.
    pub fn signature(
        &self,
        header: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(&ApiKeyConfig, SpentSignature), ApiError> {
        let (t, t_text, macs) = parse_signature(header)?;
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            let expected = sign(&key.config.secret.0, t_text, body);
            for mac in &macs {
                if bool::from(expected.as_slice().ct_eq(mac.as_slice())) {
                    found = Some((index, expected));
                }
            }
        }
        let Some((index, mac)) = found else {
            return Err(unauthorized("invalid signature"));
        };
        if (now - t).abs() > TOLERANCE {
            return Err(unauthorized(
                "stale timestamp: the signature's t is more than 5 minutes from the server's clock",
            ));
        }
        let key = &self.keys[index];
        let spent = SpentSignature {
            hash: signature_id(&key.digest, &mac),
            until: t.saturating_add(TOLERANCE),
        };
        Ok((&key.config, spent))
    }
}

/// What identifies a spent signature in the store: SHA-256 of the key's secret digest and the
/// MAC. Keyed by the secret rather than the key's name or place in the list, which a reload may
/// change; the MAC itself (which proves nothing without the body) is not stored either.
fn signature_id(key_digest: &[u8; 32], mac: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"pagegate spent signature\0");
    hash.update(key_digest);
    hash.update(mac);
    hash.finalize().into()
}

/// The answer to a signature the store found spent.
pub fn replayed() -> ApiError {
    unauthorized("replayed signature")
}

/// `t`, its text as signed, and the `v1` MACs of a signature header. Unknown schemes are skipped.
fn parse_signature(header: &str) -> Result<(Timestamp, &str, Vec<[u8; 32]>), ApiError> {
    let malformed = || {
        unauthorized("malformed Pagegate-Signature: expected t=<unix seconds>,v1=<hex HMAC-SHA256>")
    };
    let mut t = None;
    let mut macs = Vec::new();
    for item in header.split(',') {
        let (name, value) = item.split_once('=').ok_or_else(malformed)?;
        match name.trim() {
            "t" if t.is_none() => {
                let text = value.trim();
                let seconds: Timestamp = text
                    .parse()
                    .ok()
                    .filter(|_| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(malformed)?;
                t = Some((seconds, text));
            }
            "t" => return Err(malformed()),
            "v1" if macs.len() < MAX_SIGNATURES => {
                macs.push(decode_hex(value.trim()).ok_or_else(malformed)?);
            }
            _ => {}
        }
    }
    let (t, text) = t.ok_or_else(malformed)?;
    if macs.is_empty() {
        return Err(malformed());
    }
    Ok((t, text, macs))
}

/// HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &str, t: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header value a sender puts on `body` at `t`.
pub fn signature_header(secret: &str, t: Timestamp, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", encode_hex(&sign(secret, &t, body)))
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a key without `scope` (403). The admin scope also allows grants.
pub fn require_scope(key: &ApiKeyConfig, scope: Scope) -> Result<(), ApiError> {
    let allowed = key.scopes.contains(&scope)
        || (scope == Scope::Grant && key.scopes.contains(&Scope::Admin));
    if allowed {
        return Ok(());
    }
    let name = match scope {
        Scope::Grant => "grant",
        Scope::Admin => "admin",
    };
    Err(ApiError::Forbidden(format!(
        "the API key {:?} does not have the {name} scope",
        key.name
    )))
}

/// Refuses a key limited to other sites or pages (403).
pub fn require_cover(key: &ApiKeyConfig, site: &str, page: &str) -> Result<(), ApiError> {
    if key.covers(site, page) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "the API key {:?} is not allowed for page {page:?}",
        key.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn ring(keys: &[(&str, &str)]) -> KeyRing {
        KeyRing {
            keys: keys
                .iter()
                .map(|(name, secret)| Key {
                    digest: Sha256::digest(secret.as_bytes()).into(),
                    config: ApiKeyConfig {
                        name: (*name).into(),
                        secret: Secret((*secret).into()),
                        scopes: vec![Scope::Grant],
                        sites: None,
                        pages: None,
                    },
                })
                .collect(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn bearer_picks_the_right_key() {
        let keys = ring(&[("shop", SECRET), ("other", "zyxwvutsrqponmlkjihgfedcba")]);
        assert_eq!(keys.bearer(SECRET).expect("shop").name, "shop");
        assert!(keys.bearer("0123456789abcdef").is_err());
        assert!(keys.bearer("").is_err());
        let h = headers(&[("authorization", "bearer  tok ")]);
        assert_eq!(credentials(&h).expect("bearer"), Credentials::Bearer("tok"));
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Basic abc")]),
            headers(&[("authorization", "Bearer x"), ("pagegate-signature", "t=1")]),
            headers(&[("authorization", "Bearer x"), ("authorization", "Bearer y")]),
        ] {
            assert!(
                matches!(credentials(&bad), Err(ApiError::Unauthorized(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signatures_verify_and_expire() {
        let keys = ring(&[("other", "zyxwvutsrqponmlkjihgfedcba"), ("shop", SECRET)]);
        let body = br#"{"page":"course"}"#;
        let now = 1_700_000_000;
        let header = signature_header(SECRET, now - 10, body);
        let (key, spent) = keys.signature(&header, body, now).expect("valid");
        assert_eq!(key.name, "shop");
        assert_eq!(spent.until, now - 10 + TOLERANCE, "spent while fresh");
        let tampered = keys
            .signature(&signature_header(SECRET, now, body), b"{}", now)
            .expect_err("tampered");
        assert_eq!(tampered.to_string(), "invalid signature");
        let wrong = signature_header("not-the-secret-at-all-no", now, body);
        assert!(keys.signature(&wrong, body, now).is_err());
        let stale = signature_header(SECRET, now - TOLERANCE - 1, body);
        assert!(
            keys.signature(&stale, body, now)
                .expect_err("stale")
                .to_string()
                .starts_with("stale timestamp")
        );
        let future = signature_header(SECRET, now + TOLERANCE - 1, body);
        assert!(keys.signature(&future, body, now).is_ok());
        // Several v1 entries (secret rotation) and unknown schemes are fine.
        let good = encode_hex(&sign(SECRET, &(now + 1).to_string(), body));
        let rotated = format!("t={},v0=zz,v1={},v1={good}", now + 1, "ab".repeat(32));
        assert!(keys.signature(&rotated, body, now).is_ok());
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,t=2,v1=00",
            "t=-5,v1=00",
            "garbage",
        ] {
            assert!(
                keys.signature(bad, body, now)
                    .expect_err(bad)
                    .to_string()
                    .starts_with("malformed"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_signature_is_known_again_by_its_secret_and_mac_alone() {
        let keys = ring(&[
            ("other", "another-secret-of-enough-length"),
            ("shop", SECRET),
        ]);
        let now = 1_700_000_000;
        let h = signature_header(SECRET, now, b"order");
        let (_, first) = keys.signature(&h, b"order", now).expect("valid");
        // A reloaded list, the key renamed and in another place: the same signature, spent.
        let reloaded = ring(&[("renamed", SECRET)]);
        let (_, again) = reloaded.signature(&h, b"order", now + 100).expect("valid");
        assert_eq!(again, first);
        // Another body, time or secret is another signature.
        for (secret, t, body) in [
            (SECRET, now, b"other".as_slice()),
            (SECRET, now + 1, b"order".as_slice()),
            ("another-secret-of-enough-length", now, b"order".as_slice()),
        ] {
            let h = signature_header(secret, t, body);
            let (_, other) = keys.signature(&h, body, now).expect("valid");
            assert_ne!(other.hash, first.hash, "{secret} {t}");
        }
        let mac = sign(SECRET, &now.to_string(), b"order");
        assert_ne!(first.hash, mac, "the MAC is not stored as it is");
    }

    #[test]
    fn scopes_and_limits() {
        let mut key = ring(&[("k", SECRET)]).keys.remove(0).config;
        assert!(require_scope(&key, Scope::Grant).is_ok());
        assert!(require_scope(&key, Scope::Admin).is_err());
        key.scopes = vec![Scope::Admin];
        assert!(require_scope(&key, Scope::Grant).is_ok(), "admin may grant");
        key.sites = Some(vec!["school".into()]);
        assert!(require_cover(&key, "school", "course").is_ok());
        assert!(matches!(
            require_cover(&key, "shop", "course"),
            Err(ApiError::Forbidden(_))
        ));
    }
}
