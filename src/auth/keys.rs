//! Secret key material: a master secret, from the config or generated into `data_dir`, and the
//! keys derived from it for cookies and for hashing codes, tokens and session ids.
//!
//! Secrets can be rotated without signing everyone out. Besides the current secret, [`Keys`]
//! holds the previous ones that are still accepted: a cookie signed, or a code, link token or
//! session id hashed, under a previous secret still counts until that secret's grace period ends.
//! Anything new is signed and hashed with the current secret only.
//!
//! - A configured secret (`auth.secret`) is rotated by the admin: the old value moves to
//!   `auth.previous_secrets`, accepted for as long as it stays listed there.
//! - A generated secret is rotated by `pagegate rotate-key` ([`rotate`]): a new one becomes
//!   current and the old one is kept in `data_dir/secret.key` with the time it was retired; it is
//!   accepted until `auth.key_grace` after that, then deleted from the file ([`prune`]). Because
//!   the grace is counted from the retirement time with the grace in force, shortening
//!   `auth.key_grace` and reloading drops a compromised key at once.
//!
//! `secret.key` is either the original format (the hex of one secret) or, once rotated, JSON:
//! `{"current": HEX, "previous": [{"secret": HEX, "retired_at": UNIX_SECONDS}]}`. It is
//! replaced atomically (temporary file, fsync, rename) and is `0600`. Secrets are never logged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::cookies;
use crate::config::AuthConfig;
use crate::store::{SecretHash, Timestamp, now};

/// What a signed cookie is for. Each purpose has a signing key of its own: the cookie crate's
/// signature covers a cookie's value but not its name, so under one shared key a value minted
/// for one cookie (a CSRF token, an admin page's message) would verify as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookiePurpose {
    /// A visitor's session.
    Session,
    /// A visitor's anti-forgery token.
    Csrf,
    /// An admin's session.
    AdminSession,
    /// The admin page's anti-forgery token.
    AdminCsrf,
    /// A message the admin page leaves for the page a change redirects to.
    AdminFlash,
}

impl CookiePurpose {
    const ALL: [CookiePurpose; 5] = [
        CookiePurpose::Session,
        CookiePurpose::Csrf,
        CookiePurpose::AdminSession,
        CookiePurpose::AdminCsrf,
        CookiePurpose::AdminFlash,
    ];

    /// The derivation label of the purpose's key. Visitors' sessions keep the label of the
    /// single cookie key earlier versions used, so an upgrade signs no visitor out.
    fn label(self) -> &'static [u8] {
        match self {
            CookiePurpose::Session => b"pagegate/cookie-key/v1",
            CookiePurpose::Csrf => b"pagegate/cookie-key/csrf/v1",
            CookiePurpose::AdminSession => b"pagegate/cookie-key/admin-session/v1",
            CookiePurpose::AdminCsrf => b"pagegate/cookie-key/admin-csrf/v1",
            CookiePurpose::AdminFlash => b"pagegate/cookie-key/admin-flash/v1",
        }
    }
}

/// The keys derived from one master secret.
pub struct KeySet {
    /// One per [`CookiePurpose`], in the order of [`CookiePurpose::ALL`].
    cookies: [cookie::Key; CookiePurpose::ALL.len()],
    /// HMAC-SHA256 already keyed with the hash key: keying absorbs two SHA-256 blocks, which
    /// every request with a session cookie would otherwise pay again for the session id's hash.
    hash: Hmac<Sha256>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySet([redacted])")
    }
}

impl KeySet {
    /// Derives the keys; `master` must be at least 32 bytes of entropy.
    pub fn from_master(master: &[u8]) -> KeySet {
        KeySet {
            cookies: CookiePurpose::ALL
                .map(|purpose| cookie::Key::derive_from(&derive(master, purpose.label()))),
            hash: hmac(&derive(master, b"pagegate/hash-key/v1")),
        }
    }

    /// The key cookies of `purpose` are signed and verified with.
    pub fn cookie_key(&self, purpose: CookiePurpose) -> &cookie::Key {
        &self.cookies[purpose as usize]
    }

    /// A keyed hash of a secret, so a copy of the database does not reveal codes, tokens or
    /// session ids. `purpose` separates the kinds so one can never stand in for another.
    pub fn hash(&self, purpose: &str, parts: &[&[u8]]) -> SecretHash {
        let mut mac = self.hash.clone();
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The current keys and the previous ones still accepted.
pub struct Keys {
    current: KeySet,
    /// Newest first. `until`: the first second it is no longer accepted; `None` for a configured
    /// previous secret, accepted while it is listed.
    previous: Vec<(KeySet, Option<Timestamp>)>,
    /// Tells this set of keys from every other one in the process (each load, reload and
    /// rotation makes a new set), so what one set verified is never taken as verified by another.
    id: u64,
}

/// Gives every [`Keys`] its [`Keys::id`].
static NEXT_KEYS_ID: AtomicU64 = AtomicU64::new(1);

fn next_keys_id() -> u64 {
    NEXT_KEYS_ID.fetch_add(1, Ordering::Relaxed)
}

/// Session cookies this thread has verified under the current key of one [`Keys`], as sent
/// (`name=value`), with the keyed hash of their session id. A signed-in visitor sends the same
/// cookie with every request, and checking it costs two HMAC-SHA256 (its signature and the
/// session id's hash), the largest part of a signed-in request's own work. Only a cookie whose
/// signature was checked gets in, so an entry proves nothing a forger could not already show;
/// a cookie signed with a previous key is checked every time, since that key's acceptance ends
/// with time. Whether the session is still valid is the store's answer, asked on every request.
struct VerifiedSessions {
    keys: u64,
    entries: HashMap<Box<str>, SecretHash, BuildHasherDefault<CookieTextHasher>>,
}

/// Hashes the cookie texts [`VerifiedSessions`] is keyed by, eight bytes a step: the default
/// SipHash cost several times more on the hundred-odd bytes of a session cookie, looked up on
/// every signed-in request. Flooding resistance is not needed here: only cookies whose signature
/// checked out are ever stored, and their text carries a MAC that no one without the key can
/// choose, so no one can make stored entries collide; a lookup of any other text costs one probe
/// like any miss.
#[derive(Default)]
struct CookieTextHasher(u64);

impl CookieTextHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for CookieTextHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            self.add(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        let mut le = [0u8; 8];
        le[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(le) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits, which pick the bucket, the weakest.
        self.0.rotate_left(26)
    }
}

/// Most cookies kept per thread before the cache starts over (about 200 KiB).
const VERIFIED_SESSIONS_LIMIT: usize = 2048;

thread_local! {
    static VERIFIED_SESSIONS: RefCell<VerifiedSessions> = RefCell::new(VerifiedSessions {
        keys: 0,
        entries: HashMap::default(),
    });
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

/// Why keys could not be loaded or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret comes from the configuration, which pagegate does not write.
    #[error(
        "auth.secret is set in the configuration, so pagegate cannot replace it: set a new \
         auth.secret, list the old one in auth.previous_secrets, and run `pagegate reload`"
    )]
    Configured,
    /// `secret.key` cannot be read, written or understood.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Until when (Unix seconds) the secret just retired is accepted.
    pub previous_until: Timestamp,
    /// Previous secrets kept, the one just retired included; 0 when there was no secret yet to
    /// retire and one was created.
    pub previous_kept: usize,
}

const SECRET_FILE: &str = "secret.key";

/// Serialises the read-modify-write of `secret.key` within this process (rotation and pruning);
/// other processes are kept out by the database lock, which whoever rotates holds.
static FILE_LOCK: Mutex<()> = Mutex::new(());

impl Keys {
    /// The keys of a configuration: the configured secret and `previous_secrets`, or the
    /// generated ones in `data_dir/secret.key`, created (`0600`, 64 random bytes) on first start.
    /// Several gateways serving the same sites must share the secret.
    pub fn load(auth: &AuthConfig, data_dir: &Path) -> Result<Keys, KeyError> {
        if let Some(secret) = &auth.secret {
            return Ok(Keys {
                current: KeySet::from_master(secret.0.as_bytes()),
                previous: auth
                    .previous_secrets
                    .iter()
                    .map(|s| (KeySet::from_master(s.0.as_bytes()), None))
                    .collect(),
                id: next_keys_id(),
            });
        }
        let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let file = match KeyFile::read(data_dir)? {
            Some(file) => file,
            None => {
                let file = KeyFile {
                    current: random_secret(),
                    previous: Vec::new(),
                };
                file.write(data_dir)?;
                tracing::info!(path = %data_dir.join(SECRET_FILE).display(), "generated a new secret key");
                file
            }
        };
        Ok(file.keys(auth.key_grace, now()))
    }

    /// Keys from one master secret and no previous ones.
    pub fn from_master(master: &[u8]) -> Keys {
        Keys {
            current: KeySet::from_master(master),
            previous: Vec::new(),
            id: next_keys_id(),
        }
    }

    /// The keys everything new is signed and hashed with.
    pub fn current(&self) -> &KeySet {
        &self.current
    }

    /// The key new cookies of `purpose` are signed with.
    pub fn cookie_key(&self, purpose: CookiePurpose) -> &cookie::Key {
        self.current.cookie_key(purpose)
    }

    /// A keyed hash under the current key, for storing something new.
    pub fn hash(&self, purpose: &str, parts: &[&[u8]]) -> SecretHash {
        self.current.hash(purpose, parts)
    }

    /// The keys accepted now: the current one first, then the previous ones still in grace.
    pub fn accepted(&self) -> Vec<&KeySet> {
        self.accepted_at(now())
    }

    fn accepted_at(&self, at: Timestamp) -> Vec<&KeySet> {
        std::iter::once(&self.current)
            .chain(
                self.previous
                    .iter()
                    .filter(|(_, until)| until.is_none_or(|u| at < u))
                    .map(|(keys, _)| keys),
            )
            .collect()
    }

    /// The hashes under which something stored earlier may be found, current key first.
    pub fn hashes(&self, purpose: &str, parts: &[&[u8]]) -> Vec<SecretHash> {
        self.accepted()
            .into_iter()
            .map(|k| k.hash(purpose, parts))
            .collect()
    }

    /// The verified value of the signed cookie `name`, signed for `purpose`, and the keys that
    /// signed it. A session id read this way is looked up under the same keys' hash: one sign-in
    /// made both.
    pub fn read_cookie(
        &self,
        headers: &HeaderMap,
        name: &str,
        purpose: CookiePurpose,
    ) -> Option<(String, &KeySet)> {
        let accepted = self.accepted();
        let cookie_keys: Vec<&cookie::Key> =
            accepted.iter().map(|k| k.cookie_key(purpose)).collect();
        let (value, index) = cookies::read_signed_any(headers, name, &cookie_keys)?;
        Some((value, accepted.get(index).copied()?))
    }

    /// The keyed hash of the session id in the signed session cookie `name`, under the keys that
    /// signed it (the session was stored under that hash at sign-in), if the cookie is genuine.
    /// Answered from [`VerifiedSessions`] when this thread has checked the same cookie before.
    pub fn session_hash(&self, headers: &HeaderMap, name: &str) -> Option<SecretHash> {
        let pair = cookies::sole_pair(headers, name);
        if let Some(pair) = pair {
            let known = VERIFIED_SESSIONS.with(|cache| {
                let cache = cache.borrow();
                (cache.keys == self.id)
                    .then(|| cache.entries.get(pair).copied())
                    .flatten()
            });
            if known.is_some() {
                return known;
            }
        }
        let (session_id, signed_by) = self.read_cookie(headers, name, CookiePurpose::Session)?;
        let hash = signed_by.hash("session", &[session_id.as_bytes()]);
        if let Some(pair) = pair
            && std::ptr::eq(signed_by, &self.current)
        {
            VERIFIED_SESSIONS.with(|cache| {
                let mut cache = cache.borrow_mut();
                if cache.keys != self.id || cache.entries.len() >= VERIFIED_SESSIONS_LIMIT {
                    cache.entries.clear();
                    cache.keys = self.id;
                }
                cache.entries.insert(pair.into(), hash);
            });
        }
        Some(hash)
    }
}

/// Retires the generated secret in `data_dir`: a new one becomes current, the old one is kept
/// for `grace`, and previous ones whose grace has ended are dropped. Creates the file if there is
/// none yet (then nothing is retired).
pub fn rotate(data_dir: &Path, grace: Duration, at: Timestamp) -> Result<Rotation, KeyError> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut file) = KeyFile::read(data_dir)? else {
        KeyFile {
            current: random_secret(),
            previous: Vec::new(),
        }
        .write(data_dir)?;
        return Ok(Rotation {
            previous_until: at,
            previous_kept: 0,
        });
    };
    file.previous.retain(|p| at < until(p.retired_at, grace));
    let retired = std::mem::replace(&mut file.current, random_secret());
    file.previous.insert(
        0,
        Retired {
            secret: retired,
            retired_at: at,
        },
    );
    file.write(data_dir)?;
    Ok(Rotation {
        previous_until: until(at, grace),
        previous_kept: file.previous.len(),
    })
}

/// Deletes from `secret.key` the previous secrets whose grace has ended; returns how many.
pub fn prune(data_dir: &Path, grace: Duration, at: Timestamp) -> Result<usize, KeyError> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut file) = KeyFile::read(data_dir)? else {
        return Ok(0);
    };
    let before = file.previous.len();
    file.previous.retain(|p| at < until(p.retired_at, grace));
    let dropped = before - file.previous.len();
    if dropped > 0 {
        file.write(data_dir)?;
    }
    Ok(dropped)
}

fn until(retired_at: Timestamp, grace: Duration) -> Timestamp {
    retired_at.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX))
}

/// `secret.key` in memory.
struct KeyFile {
    current: Vec<u8>,
    previous: Vec<Retired>,
}

struct Retired {
    secret: Vec<u8>,
    retired_at: Timestamp,
}

/// `secret.key` after a rotation, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    current: String,
    #[serde(default)]
    previous: Vec<RetiredJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredJson {
    secret: String,
    retired_at: Timestamp,
}

impl KeyFile {
    /// The file in `data_dir`, or `None` when there is none yet.
    fn read(data_dir: &Path) -> Result<Option<KeyFile>, KeyError> {
        let path = data_dir.join(SECRET_FILE);
        let damaged = |what: &str| KeyError::File {
            path: path.clone(),
            problem: format!("is damaged: {what}"),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(KeyError::File {
                    path: path.clone(),
                    problem: format!("cannot read: {e}"),
                });
            }
        };
        let secret = |hex: &str| {
            decode_hex(hex.trim())
                .filter(|b| b.len() >= 32)
                .ok_or_else(|| damaged("expected secrets of at least 64 hex characters"))
        };
        let text = text.trim();
        if !text.starts_with('{') {
            return Ok(Some(KeyFile {
                current: secret(text)?,
                previous: Vec::new(),
            }));
        }
        let json: KeyFileJson = serde_json::from_str(text)
            .map_err(|e| damaged(&format!("not the expected JSON ({e})")))?;
        Ok(Some(KeyFile {
            current: secret(&json.current)?,
            previous: json
                .previous
                .iter()
                .map(|p| {
                    Ok(Retired {
                        secret: secret(&p.secret)?,
                        retired_at: p.retired_at,
                    })
                })
                .collect::<Result<_, KeyError>>()?,
        }))
    }

    /// Replaces the file atomically: a crash leaves either the old or the new one, never a mix
    /// or a truncated secret that would sign everyone out.
    fn write(&self, data_dir: &Path) -> Result<(), KeyError> {
        let path = data_dir.join(SECRET_FILE);
        let failed = |what: &str, e: std::io::Error| KeyError::File {
            path: path.clone(),
            problem: format!("cannot {what}: {e}"),
        };
        let text = if self.previous.is_empty() {
            encode_hex(&self.current)
        } else {
            let json = KeyFileJson {
                current: encode_hex(&self.current),
                previous: self
                    .previous
                    .iter()
                    .map(|p| RetiredJson {
                        secret: encode_hex(&p.secret),
                        retired_at: p.retired_at,
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&json)
                .map_err(|e| failed("encode", std::io::Error::other(e)))?
        };
        std::fs::create_dir_all(data_dir).map_err(|e| failed("create its folder", e))?;
        let temp = data_dir.join(format!("{SECRET_FILE}.tmp"));
        // A leftover from a crash may have other permissions: start from nothing.
        let _ = std::fs::remove_file(&temp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp).map_err(|e| failed("create", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| failed("write", e))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| failed("replace", e))?;
        // The rename itself is durable once the folder is synced.
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn keys(&self, grace: Duration, at: Timestamp) -> Keys {
        Keys {
            current: KeySet::from_master(&self.current),
            previous: self
                .previous
                .iter()
                .filter_map(|p| {
                    let until = until(p.retired_at, grace);
                    (at < until).then(|| (KeySet::from_master(&p.secret), Some(until)))
                })
                .collect(),
            id: next_keys_id(),
        }
    }
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 64];
    rand::rng().fill_bytes(&mut secret);
    secret
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this branch cannot be taken.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// HMAC-SHA256 of `label` under `master`, as 32 bytes of new key material.
fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = hmac(master);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn generated(grace: Duration) -> AuthConfig {
        let mut auth = crate::config::parse_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n[[site]]\nhosts = [\"a\"]\nupstream = \"http://a\"\n",
            Path::new("t.toml"),
            Path::new("."),
        )
        .expect("valid")
        .auth;
        auth.key_grace = grace;
        auth
    }

    fn configured(secret: &str, previous: &[&str]) -> AuthConfig {
        let mut auth = generated(DAY);
        auth.secret = Some(Secret(secret.into()));
        auth.previous_secrets = previous.iter().map(|s| Secret((*s).into())).collect();
        auth
    }

    /// Asserts that `secret.key` in `data_dir` is readable and writable by its owner only.
    fn assert_owner_only(data_dir: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data_dir.join(SECRET_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        #[cfg(not(unix))]
        let _ = data_dir;
    }

    fn same(a: &KeySet, b: &KeySet) -> bool {
        a.hash("x", &[b"1"]) == b.hash("x", &[b"1"])
    }

    #[test]
    fn the_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = Keys::load(&generated(DAY), dir.path()).expect("create");
        let b = Keys::load(&generated(DAY), dir.path()).expect("reload");
        assert_eq!(a.hash("x", &[b"1"]), b.hash("x", &[b"1"]));
        assert_owner_only(dir.path());
    }

    #[test]
    fn hashes_separate_purposes_parts_and_secrets() {
        let k = Keys::from_master(&[7; 32]);
        assert_ne!(k.hash("code", &[b"a"]), k.hash("token", &[b"a"]));
        // The pre-keyed state gives exactly the HMAC under the derived hash key, so hashes
        // stored by earlier versions are still found.
        let mut mac = hmac(&derive(&[7; 32], b"pagegate/hash-key/v1"));
        mac.update(b"code");
        mac.update(&1u64.to_be_bytes());
        mac.update(b"a");
        let expected: SecretHash = mac.finalize().into_bytes().into();
        assert_eq!(
            KeySet::from_master(&[7; 32]).hash("code", &[b"a"]),
            expected
        );
        assert_ne!(
            k.hash("code", &[b"ab", b"c"]),
            k.hash("code", &[b"a", b"bc"])
        );
        assert_ne!(
            k.hash("code", &[b"a"]),
            Keys::from_master(&[8; 32]).hash("code", &[b"a"])
        );
    }

    #[test]
    fn derivation_is_pinned() {
        // Sessions, codes and links stored by earlier versions must still be found: the
        // derivation may never change silently.
        let k = KeySet::from_master(&[7; 32]);
        let mut mac = hmac(&[7; 32]);
        mac.update(b"pagegate/hash-key/v1");
        let hash_key: [u8; 32] = mac.finalize().into_bytes().into();
        let mut mac = hmac(&hash_key);
        mac.update(b"session");
        mac.update(&1u64.to_be_bytes());
        mac.update(b"s");
        let expected: SecretHash = mac.finalize().into_bytes().into();
        assert_eq!(k.hash("session", &[b"s"]), expected);
    }

    #[test]
    fn a_damaged_secret_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SECRET_FILE), "not hex").expect("write");
        assert!(Keys::load(&generated(DAY), dir.path()).is_err());
        std::fs::write(dir.path().join(SECRET_FILE), "{\"current\": 1}").expect("write");
        let err = Keys::load(&generated(DAY), dir.path()).expect_err("bad JSON");
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    #[test]
    fn rotation_makes_a_new_current_key_and_keeps_the_old_one_for_the_grace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before = Keys::load(&generated(DAY), dir.path()).expect("create");
        let rotation = rotate(dir.path(), DAY, 1_000).expect("rotate");
        assert_eq!(rotation.previous_until, 1_000 + 86_400);
        assert_eq!(rotation.previous_kept, 1);

        let file = KeyFile::read(dir.path()).expect("read").expect("file");
        let after = file.keys(DAY, 1_000);
        assert!(
            !same(after.current(), before.current()),
            "a new current key"
        );
        let accepted = after.accepted_at(1_000);
        assert_eq!(accepted.len(), 2);
        assert!(same(accepted[0], after.current()), "current first");
        assert!(same(accepted[1], before.current()), "then the previous");
        assert_eq!(after.accepted_at(1_000 + 86_399).len(), 2);
        assert_eq!(after.accepted_at(1_000 + 86_400).len(), 1, "grace over");
        // Loaded after the grace, the old key is not there at all.
        assert!(file.keys(DAY, 1_000 + 86_400).previous.is_empty());
        assert_owner_only(dir.path());
        assert!(!dir.path().join("secret.key.tmp").exists());
    }

    #[test]
    fn the_grace_in_force_decides_so_shortening_it_drops_a_key_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        Keys::load(&generated(DAY), dir.path()).expect("create");
        rotate(dir.path(), 7 * DAY, 1_000).expect("rotate");
        let file = KeyFile::read(dir.path()).expect("read").expect("file");
        assert_eq!(file.keys(7 * DAY, 2_000).accepted_at(2_000).len(), 2);
        assert_eq!(
            file.keys(Duration::from_secs(60), 2_000)
                .accepted_at(2_000)
                .len(),
            1
        );
    }

    #[test]
    fn expired_keys_are_pruned_from_the_file_and_by_the_next_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        Keys::load(&generated(DAY), dir.path()).expect("create");
        rotate(dir.path(), DAY, 1_000).expect("first");
        assert_eq!(
            rotate(dir.path(), DAY, 2_000)
                .expect("second")
                .previous_kept,
            2
        );
        assert_eq!(prune(dir.path(), DAY, 2_000).expect("nothing yet"), 0);
        assert_eq!(prune(dir.path(), DAY, 1_000 + 86_400).expect("prune"), 1);
        let file = KeyFile::read(dir.path()).expect("read").expect("file");
        assert_eq!(file.previous.len(), 1);
        assert_eq!(file.previous[0].retired_at, 2_000);
        assert_eq!(
            rotate(dir.path(), DAY, 2_000 + 86_400)
                .expect("third")
                .previous_kept,
            1,
            "the second key's grace is over too"
        );
    }

    #[test]
    fn rotating_where_there_is_no_secret_yet_only_creates_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            rotate(dir.path(), DAY, 1_000)
                .expect("rotate")
                .previous_kept,
            0
        );
        let file = KeyFile::read(dir.path()).expect("read").expect("file");
        assert!(file.previous.is_empty());
    }

    #[test]
    fn an_old_single_secret_file_keeps_working() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SECRET_FILE), "ab".repeat(64)).expect("write");
        let keys = Keys::load(&generated(DAY), dir.path()).expect("load");
        assert!(same(keys.current(), &KeySet::from_master(&[0xab; 64])));
        rotate(dir.path(), DAY, 1_000).expect("rotate");
        let file = KeyFile::read(dir.path()).expect("read").expect("file");
        assert_eq!(file.previous[0].secret, vec![0xab; 64]);
    }

    #[test]
    fn configured_previous_secrets_are_accepted_after_the_current_one() {
        let current = "c".repeat(32);
        let old = "o".repeat(32);
        let keys =
            Keys::load(&configured(&current, &[&old]), Path::new("/nonexistent")).expect("load");
        let accepted = keys.accepted();
        assert_eq!(accepted.len(), 2);
        assert!(same(accepted[0], &KeySet::from_master(current.as_bytes())));
        assert!(same(accepted[1], &KeySet::from_master(old.as_bytes())));
        let hashes = keys.hashes("code", &[b"1"]);
        assert_eq!(
            hashes[0],
            keys.hash("code", &[b"1"]),
            "new things use the current key"
        );
        assert_eq!(
            hashes[1],
            KeySet::from_master(old.as_bytes()).hash("code", &[b"1"])
        );
    }

    #[test]
    fn a_session_cookie_checked_once_answers_alike_and_a_forged_one_never_does() {
        let old = KeySet::from_master(&[1; 32]);
        let keys = Keys {
            current: KeySet::from_master(&[2; 32]),
            previous: vec![(KeySet::from_master(&[1; 32]), None)],
            id: next_keys_id(),
        };
        let cookie_of = |key: &cookie::Key, value: &str| {
            cookies::set_signed("c", value, false, cookie::SameSite::Lax, None, key)
                .expect("cookie")
                .to_str()
                .expect("ascii")
                .split(';')
                .next()
                .expect("pair")
                .to_owned()
        };
        let request = |pairs: &[&str]| {
            let mut headers = HeaderMap::new();
            let value = http::HeaderValue::from_str(&pairs.join("; ")).expect("header");
            headers.insert(http::header::COOKIE, value);
            headers
        };
        let genuine = cookie_of(keys.cookie_key(CookiePurpose::Session), "id");
        let expected = keys.current().hash("session", &[b"id"]);
        // The first answer is checked in full, the second comes from this thread's cache: both
        // are the session id's hash under the current key.
        for _ in 0..2 {
            assert_eq!(
                keys.session_hash(&request(&[&genuine, "other=1"]), "c"),
                Some(expected)
            );
        }
        // A cookie signed with the previous key is answered under that key's hash.
        let by_old = cookie_of(old.cookie_key(CookiePurpose::Session), "id");
        assert_eq!(
            keys.session_hash(&request(&[&by_old]), "c"),
            Some(old.hash("session", &[b"id"]))
        );
        // A changed value, another purpose's key, or a stranger's key never passes, cached
        // neighbours or not.
        let forged = genuine.replacen("id", "ie", 1);
        assert_ne!(forged, genuine);
        assert_eq!(keys.session_hash(&request(&[&forged]), "c"), None);
        let csrf = cookie_of(keys.cookie_key(CookiePurpose::Csrf), "id");
        assert_eq!(keys.session_hash(&request(&[&csrf]), "c"), None);
        let stranger = cookie_of(
            KeySet::from_master(&[3; 32]).cookie_key(CookiePurpose::Session),
            "id",
        );
        assert_eq!(keys.session_hash(&request(&[&stranger]), "c"), None);
        // Other keys (a reload or rotation makes new ones) do not take this thread's cache as
        // theirs: the same cookie is checked again, and fails under keys that never signed it.
        let others = Keys::from_master(&[3; 32]);
        assert_eq!(others.session_hash(&request(&[&genuine]), "c"), None);
        // Two cookies of the same name: checked in full every time, the genuine one found.
        assert_eq!(
            keys.session_hash(&request(&[&forged, &genuine]), "c"),
            Some(expected)
        );
    }

    #[test]
    fn a_cookie_is_read_with_the_key_that_signed_it() {
        let session = CookiePurpose::Session;
        let old = KeySet::from_master(&[1; 32]);
        let keys = Keys {
            current: KeySet::from_master(&[2; 32]),
            previous: vec![(KeySet::from_master(&[1; 32]), None)],
            id: next_keys_id(),
        };
        let set = |key: &cookie::Key| {
            cookies::request_with(
                &cookies::set_signed("c", "id", false, cookie::SameSite::Lax, None, key)
                    .expect("cookie"),
            )
        };
        let (value, by) = keys
            .read_cookie(&set(old.cookie_key(session)), "c", session)
            .expect("old cookie");
        assert_eq!(value, "id");
        assert!(same(by, &old));
        let (_, by) = keys
            .read_cookie(&set(keys.cookie_key(session)), "c", session)
            .expect("new cookie");
        assert!(same(by, keys.current()));
        let stranger = KeySet::from_master(&[3; 32]);
        assert!(
            keys.read_cookie(&set(stranger.cookie_key(session)), "c", session)
                .is_none()
        );
        let expired = Keys {
            current: KeySet::from_master(&[2; 32]),
            previous: vec![(KeySet::from_master(&[1; 32]), Some(now() - 1))],
            id: next_keys_id(),
        };
        assert!(
            expired
                .read_cookie(&set(old.cookie_key(session)), "c", session)
                .is_none()
        );
    }

    #[test]
    fn a_cookie_signed_for_one_purpose_verifies_for_no_other() {
        let keys = Keys::from_master(&[5; 32]);
        for minted in CookiePurpose::ALL {
            let headers = cookies::request_with(
                &cookies::set_signed(
                    "c",
                    "value",
                    true,
                    cookie::SameSite::Strict,
                    None,
                    keys.cookie_key(minted),
                )
                .expect("cookie"),
            );
            for read_as in CookiePurpose::ALL {
                let read = keys.read_cookie(&headers, "c", read_as).map(|(v, _)| v);
                if read_as == minted {
                    assert_eq!(read.as_deref(), Some("value"));
                } else {
                    assert_eq!(read, None, "{minted:?} read as {read_as:?}");
                }
            }
        }
    }

    #[test]
    fn the_session_cookie_key_is_the_one_earlier_versions_signed_with() {
        // Upgrading must not sign visitors out: their cookies were signed with the key derived
        // under this label.
        let legacy = cookie::Key::derive_from(&derive(&[9; 32], b"pagegate/cookie-key/v1"));
        let keys = KeySet::from_master(&[9; 32]);
        assert_eq!(
            keys.cookie_key(CookiePurpose::Session).master(),
            legacy.master()
        );
    }
}
