//! Rate limits that stop abuse without locking out real people: per client address and per
//! email for code requests (with a resend cooldown), per client address for code checks.
//!
//! Limits apply to listed and unlisted emails alike, so they reveal nothing about the list.
//!
//! One gateway keeps them in memory. Gateways sharing a database keep them there
//! ([`Store::take_rates`]), so a visitor spreading requests over several gateways meets the same
//! limits as on one; a limit the database cannot be asked about refuses (the caller answers 503).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::AuthConfig;
use crate::store::{Rate, Store, StoreError};

/// All limiters of the gateway.
pub struct Limits {
    ip_codes: DefaultKeyedRateLimiter<IpAddr>,
    email_codes: DefaultKeyedRateLimiter<String>,
    email_cooldown: DefaultKeyedRateLimiter<String>,
    ip_verifies: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    rates: Rates,
    /// The store that keeps the limits for every gateway, when it does.
    shared: Option<Arc<dyn Store>>,
}

/// The same limits, as the shared store takes them.
#[derive(Clone, Copy)]
struct Rates {
    ip_codes: Rate,
    email_codes: Rate,
    email_cooldown: Rate,
    ip_verifies: Rate,
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn rate_per_hour(n: u32) -> Rate {
    let n = n.max(1);
    Rate {
        interval: Duration::from_secs(3600) / n,
        burst: n,
    }
}

/// Whether a request may go ahead: `Err` holds how long to wait.
pub type Allowed = Result<(), Duration>;

impl Limits {
    /// Limiters sized from the config, kept in `store` when it shares them between gateways,
    /// else in memory (they start fresh on restart).
    pub fn new(config: &AuthConfig, store: &Arc<dyn Store>) -> Limits {
        let cooldown = Quota::with_period(config.resend_after).unwrap_or_else(|| per_hour(60));
        Limits {
            ip_codes: DefaultKeyedRateLimiter::keyed(per_hour(config.ip_codes_per_hour)),
            email_codes: DefaultKeyedRateLimiter::keyed(per_hour(config.email_codes_per_hour)),
            email_cooldown: DefaultKeyedRateLimiter::keyed(cooldown.allow_burst(NonZeroU32::MIN)),
            ip_verifies: DefaultKeyedRateLimiter::keyed(per_hour(config.ip_verifies_per_hour)),
            clock: DefaultClock::default(),
            rates: Rates {
                ip_codes: rate_per_hour(config.ip_codes_per_hour),
                email_codes: rate_per_hour(config.email_codes_per_hour),
                email_cooldown: Rate {
                    interval: if config.resend_after.is_zero() {
                        Duration::from_secs(60)
                    } else {
                        config.resend_after
                    },
                    burst: 1,
                },
                ip_verifies: rate_per_hour(config.ip_verifies_per_hour),
            },
            shared: store.shares_rate_limits().then(|| store.clone()),
        }
    }

    /// May `ip` ask for a code for `email` on `site` now?
    pub async fn code_request(
        &self,
        ip: IpAddr,
        site: &str,
        email: &str,
    ) -> Result<Allowed, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.code_request_here(ip, site, email));
        };
        let ip = address_block(ip);
        let rates = self.rates;
        take_all(
            store.clone(),
            vec![
                (format!("codes-ip\0{ip}"), rates.ip_codes),
                (format!("cooldown\0{site}\0{email}"), rates.email_cooldown),
                (format!("codes-email\0{site}\0{email}"), rates.email_codes),
            ],
        )
        .await
    }

    /// May `ip` check a code now?
    pub async fn verify_attempt(&self, ip: IpAddr) -> Result<Allowed, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.verify_attempt_here(ip));
        };
        let key = format!("verify-ip\0{}", address_block(ip));
        take_all(store.clone(), vec![(key, self.rates.ip_verifies)]).await
    }

    fn code_request_here(&self, ip: IpAddr, site: &str, email: &str) -> Allowed {
        let ip = address_block(ip);
        self.ip_codes
            .check_key(&ip)
            .map_err(|n| n.wait_time_from(self.clock.now()))?;
        let key = format!("{site}\0{email}");
        self.email_cooldown
            .check_key(&key)
            .map_err(|n| n.wait_time_from(self.clock.now()))?;
        self.email_codes
            .check_key(&key)
            .map_err(|n| n.wait_time_from(self.clock.now()))?;
        Ok(())
    }

    fn verify_attempt_here(&self, ip: IpAddr) -> Allowed {
        self.ip_verifies
            .check_key(&address_block(ip))
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose limits have fully recovered, so memory does not grow with traffic.
    /// (The shared store prunes its own.)
    pub fn forget_idle(&self) {
        self.ip_codes.retain_recent();
        self.email_codes.retain_recent();
        self.email_cooldown.retain_recent();
        self.ip_verifies.retain_recent();
    }
}

/// Takes one request from each limit in turn, in the store, off the connection workers.
async fn take_all(
    store: Arc<dyn Store>,
    limits: Vec<(String, Rate)>,
) -> Result<Allowed, StoreError> {
    tokio::task::spawn_blocking(move || {
        let asked: Vec<(&str, Rate)> = limits.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        Ok(match store.take_rates(&asked)? {
            Some(wait) => Err(wait),
            None => Ok(()),
        })
    })
    .await
    .map_err(|e| StoreError::Backend(format!("rate limit task: {e}")))?
}

/// IPv6 clients are limited per /64: one household or server gets a whole /64 and could
/// otherwise rotate addresses at will.
fn address_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AuthConfig {
        let toml = format!(
            "[server]\nlisten=\"127.0.0.1:1\"\n[[site]]\nhosts=[\"a\"]\nupstream=\"http://a\"\n[auth]\n{text}"
        );
        crate::config::parse_str(&toml, std::path::Path::new("t"), std::path::Path::new("."))
            .expect("valid")
            .auth
    }

    fn memory_limits(text: &str) -> Limits {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            crate::store::redb::RedbStore::open(&dir.path().join("t.redb")).expect("store"),
        );
        Limits::new(&config(text), &store)
    }

    #[test]
    fn resend_cooldown_then_hourly_cap_per_email() {
        let limits = memory_limits("resend_after = \"1h\"\nemail_codes_per_hour = 5");
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(limits.code_request_here(ip, "s", "a@x.org").is_ok());
        let wait = limits
            .code_request_here(ip, "s", "a@x.org")
            .expect_err("cooldown");
        assert!(wait > Duration::from_secs(3000));
        assert!(
            limits.code_request_here(ip, "s", "b@x.org").is_ok(),
            "another email is not held back"
        );
        assert!(
            limits
                .code_request_here(ip, "other-site", "a@x.org")
                .is_ok()
        );
    }

    #[test]
    fn per_address_caps_cover_a_whole_ipv6_64() {
        let limits = memory_limits("ip_verifies_per_hour = 2");
        assert!(
            limits
                .verify_attempt_here("2001:db8::1".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            limits
                .verify_attempt_here("2001:db8::2".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            limits
                .verify_attempt_here("2001:db8::3".parse().expect("ip"))
                .is_err()
        );
        assert!(
            limits
                .verify_attempt_here("2001:db8:0:1::1".parse().expect("ip"))
                .is_ok()
        );
    }
}
