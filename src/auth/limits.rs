//! Rate limits that stop abuse without locking out real people: per client address and per
//! email for code requests (with a resend cooldown), per client address for code checks.
//!
//! Limits apply to listed and unlisted emails alike, so they reveal nothing about the list.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::AuthConfig;

/// All limiters of the gateway (in memory; they start fresh on restart).
pub struct Limits {
    ip_codes: DefaultKeyedRateLimiter<IpAddr>,
    email_codes: DefaultKeyedRateLimiter<String>,
    email_cooldown: DefaultKeyedRateLimiter<String>,
    ip_verifies: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// Limiters sized from the config.
    pub fn new(config: &AuthConfig) -> Limits {
        let cooldown = Quota::with_period(config.resend_after).unwrap_or_else(|| per_hour(60));
        Limits {
            ip_codes: DefaultKeyedRateLimiter::keyed(per_hour(config.ip_codes_per_hour)),
            email_codes: DefaultKeyedRateLimiter::keyed(per_hour(config.email_codes_per_hour)),
            email_cooldown: DefaultKeyedRateLimiter::keyed(cooldown.allow_burst(NonZeroU32::MIN)),
            ip_verifies: DefaultKeyedRateLimiter::keyed(per_hour(config.ip_verifies_per_hour)),
            clock: DefaultClock::default(),
        }
    }

    /// May `ip` ask for a code for `email` on `site` now? `Err` holds how long to wait.
    pub fn code_request(&self, ip: IpAddr, site: &str, email: &str) -> Result<(), Duration> {
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

    /// May `ip` check a code now?
    pub fn verify_attempt(&self, ip: IpAddr) -> Result<(), Duration> {
        self.ip_verifies
            .check_key(&address_block(ip))
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose limits have fully recovered, so memory does not grow with traffic.
    pub fn forget_idle(&self) {
        self.ip_codes.retain_recent();
        self.email_codes.retain_recent();
        self.email_cooldown.retain_recent();
        self.ip_verifies.retain_recent();
    }
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

    #[test]
    fn resend_cooldown_then_hourly_cap_per_email() {
        let limits = Limits::new(&config("resend_after = \"1h\"\nemail_codes_per_hour = 5"));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(limits.code_request(ip, "s", "a@x.org").is_ok());
        let wait = limits
            .code_request(ip, "s", "a@x.org")
            .expect_err("cooldown");
        assert!(wait > Duration::from_secs(3000));
        assert!(
            limits.code_request(ip, "s", "b@x.org").is_ok(),
            "another email is not held back"
        );
        assert!(limits.code_request(ip, "other-site", "a@x.org").is_ok());
    }

    #[test]
    fn per_address_caps_cover_a_whole_ipv6_64() {
        let limits = Limits::new(&config("ip_verifies_per_hour = 2"));
        assert!(
            limits
                .verify_attempt("2001:db8::1".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            limits
                .verify_attempt("2001:db8::2".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            limits
                .verify_attempt("2001:db8::3".parse().expect("ip"))
                .is_err()
        );
        assert!(
            limits
                .verify_attempt("2001:db8:0:1::1".parse().expect("ip"))
                .is_ok()
        );
    }
}
