//! Secret key material: one master secret, from the config or generated into `data_dir`, and
//! the keys derived from it for cookies and for hashing codes, tokens and session ids.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::Secret;
use crate::store::SecretHash;

/// Keys derived from the master secret.
pub struct Keys {
    cookie: cookie::Key,
    hash: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

const SECRET_FILE: &str = "secret.key";

impl Keys {
    /// Uses the configured secret, or reads `data_dir/secret.key`, creating it (0600, 64 random
    /// bytes) on first start. Several gateways serving the same sites must share the secret.
    pub fn load(configured: Option<&Secret>, data_dir: &Path) -> Result<Keys, String> {
        let master = match configured {
            Some(secret) => secret.0.as_bytes().to_vec(),
            None => load_or_create(data_dir)?,
        };
        Ok(Keys::from_master(&master))
    }

    /// Derives the keys; `master` must be at least 32 bytes of entropy.
    pub fn from_master(master: &[u8]) -> Keys {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes keys of any length");
        mac.update(b"pagegate/hash-key/v1");
        Keys {
            cookie: cookie::Key::derive_from(&derive(master, b"pagegate/cookie-key/v1")),
            hash: mac.finalize().into_bytes().into(),
        }
    }

    /// The key the cookie jar signs with.
    pub fn cookie_key(&self) -> &cookie::Key {
        &self.cookie
    }

    /// A keyed hash of a secret, so a copy of the database does not reveal codes, tokens or
    /// session ids. `purpose` separates the kinds so one can never stand in for another.
    pub fn hash(&self, purpose: &str, parts: &[&[u8]]) -> SecretHash {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash)
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256 of `label` under `master`, as 32 bytes of new key material.
fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn load_or_create(data_dir: &Path) -> Result<Vec<u8>, String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let bytes = decode_hex(text).filter(|b| b.len() >= 32).ok_or_else(|| {
                format!(
                    "{} is damaged: expected at least 64 hex characters",
                    path.display()
                )
            })?;
            return Ok(bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut secret = vec![0u8; 64];
    rand::rng().fill_bytes(&mut secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    file.write_all(hex.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new secret key");
    Ok(secret)
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

    #[test]
    fn the_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = Keys::load(None, dir.path()).expect("create");
        let b = Keys::load(None, dir.path()).expect("reload");
        assert_eq!(a.hash("x", &[b"1"]), b.hash("x", &[b"1"]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn hashes_separate_purposes_and_parts() {
        let k = Keys::from_master(&[7; 32]);
        assert_ne!(k.hash("code", &[b"a"]), k.hash("token", &[b"a"]));
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
    fn a_damaged_secret_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SECRET_FILE), "not hex").expect("write");
        assert!(Keys::load(None, dir.path()).is_err());
    }
}
