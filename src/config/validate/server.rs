//! `[server]`: the listeners, the prefix, trusted proxies and the connection settings.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::{Ctx, Result};
use crate::config::file::FileServer;
use crate::config::{DEFAULT_PREFIX, ServerConfig};

/// More connection workers than any machine pagegate runs on has cores.
const MAX_WORKERS: usize = 1024;

impl Ctx<'_> {
    pub(super) fn server(&self, server: &Spanned<FileServer>) -> Result<ServerConfig> {
        let s = server.get_ref();
        let listen = s
            .listen
            .as_ref()
            .map(|v| self.socket_addr("server.listen", v))
            .transpose()?;
        let tls_listen = s
            .tls_listen
            .as_ref()
            .map(|v| self.socket_addr("server.tls_listen", v))
            .transpose()?;
        if listen.is_none() && tls_listen.is_none() {
            return Err(self.invalid(
                "server.listen",
                Some(server.span()),
                "at least one of `listen` or `tls_listen` is required",
            ));
        }
        if listen.is_some_and(|a| a.port() != 0) && listen == tls_listen {
            return Err(self.invalid(
                "server.tls_listen",
                s.tls_listen.as_ref().map(|v| v.span()),
                "must differ from `listen`",
            ));
        }
        let prefix = match &s.prefix {
            Some(p) => self.prefix(p)?,
            None => DEFAULT_PREFIX.to_string(),
        };
        let mut trusted_proxies = Vec::with_capacity(s.trusted_proxies.len());
        for (i, raw) in s.trusted_proxies.iter().enumerate() {
            let text = raw.get_ref().trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.invalid(
                        &format!("server.trusted_proxies[{i}]"),
                        Some(raw.span()),
                        format!("expected an IP address or CIDR such as 10.0.0.0/8, got {text:?}"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        Ok(ServerConfig {
            listen,
            tls_listen,
            prefix,
            trusted_proxies,
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                s.shutdown_grace.as_ref(),
                Duration::from_secs(30),
            )?,
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                s.header_read_timeout.as_ref(),
                Duration::from_secs(30),
            )?,
            tls_handshake_timeout: self.duration(
                "server.tls_handshake_timeout",
                s.tls_handshake_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            max_connections: match &s.max_connections {
                None => 20_000,
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        self.invalid(
                            "server.max_connections",
                            Some(n.span()),
                            "expected a whole number above zero",
                        )
                    })?,
            },
            workers: match &s.workers {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| {
                        self.invalid(
                            "server.workers",
                            Some(n.span()),
                            format!("expected a whole number from 1 to {MAX_WORKERS}"),
                        )
                    })?,
            },
            pin_workers: s.pin_workers.unwrap_or(false),
            access_log: s.access_log.unwrap_or(true),
            access_log_email: s.access_log_email.unwrap_or(false),
            access_log_path: match &s.access_log_path {
                None => None,
                Some(p) if p.get_ref().trim().is_empty() => {
                    return Err(self.invalid(
                        "server.access_log_path",
                        Some(p.span()),
                        "expected the path of a file",
                    ));
                }
                Some(p) => Some(self.path(p.get_ref())),
            },
        })
    }

    pub(super) fn socket_addr(&self, key: &str, value: &Spanned<String>) -> Result<SocketAddr> {
        value.get_ref().trim().parse().map_err(|_| {
            self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected an IP address and port such as \"127.0.0.1:8080\" or \"[::]:443\", got {:?}",
                    value.get_ref()
                ),
            )
        })
    }

    fn prefix(&self, value: &Spanned<String>) -> Result<String> {
        let p = value.get_ref().trim();
        let ok = p.len() > 1
            && p.starts_with('/')
            && !p.ends_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
            && p[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !ok {
            return Err(self.invalid(
                "server.prefix",
                Some(value.span()),
                format!(
                    "expected a path such as \"/_pagegate\": starting with '/', no trailing '/', \
                     letters, digits and -._~ only, got {p:?}"
                ),
            ));
        }
        Ok(p.to_string())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::test_support::{MINIMAL, invalid_key, parse};

    #[test]
    fn bad_listen_address_names_key_and_line() {
        let err = parse(&MINIMAL.replace("127.0.0.1:8080", "localhost")).expect_err("bad addr");
        let msg = err.to_string();
        assert!(msg.starts_with("gateway.toml:3: `server.listen`"), "{msg}");
        assert!(msg.contains("IP address and port"), "{msg}");
    }

    #[test]
    fn missing_listeners_are_refused() {
        assert_eq!(
            invalid_key("[server]\n[[site]]\nhosts=[\"a\"]\nupstream=\"http://a\"\n"),
            "server.listen"
        );
        assert_eq!(
            invalid_key("[[site]]\nhosts=[\"a\"]\nupstream=\"http://a\"\n"),
            "server"
        );
    }

    #[test]
    fn workers_default_to_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parse(MINIMAL).expect("valid").server.workers, cores);
        let three = MINIMAL.replace("[server]", "[server]\nworkers = 3");
        assert_eq!(parse(&three).expect("valid").server.workers, 3);
        for bad in ["0", "-1", "1025"] {
            let text = MINIMAL.replace("[server]", &format!("[server]\nworkers = {bad}"));
            assert_eq!(invalid_key(&text), "server.workers", "{bad}");
        }
    }

    #[test]
    fn workers_are_pinned_only_when_set() {
        assert!(!parse(MINIMAL).expect("valid").server.pin_workers);
        let off = MINIMAL.replace("[server]", "[server]\npin_workers = false");
        assert!(!parse(&off).expect("valid").server.pin_workers);
        let on = MINIMAL.replace("[server]", "[server]\npin_workers = true");
        assert!(parse(&on).expect("valid").server.pin_workers);
        let bad = MINIMAL.replace("[server]", "[server]\npin_workers = \"yes\"");
        let message = parse(&bad).expect_err("a string is refused").to_string();
        assert!(message.contains("pin_workers"), "{message}");
    }

    #[test]
    fn prefix_rules() {
        for bad in ["/", "x", "/a/", "/a/../b", "/a b", "/a//b", "/%41"] {
            let text = MINIMAL.replace("[server]", &format!("[server]\nprefix = {bad:?}"));
            assert_eq!(invalid_key(&text), "server.prefix", "{bad}");
        }
    }

    #[test]
    fn access_log_defaults_and_switches() {
        let c = parse(MINIMAL).expect("valid");
        assert!(c.server.access_log, "on by default");
        assert!(!c.server.access_log_email, "no emails by default");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\naccess_log = false\naccess_log_email = true",
        );
        let c = parse(&text).expect("valid");
        assert!(!c.server.access_log && c.server.access_log_email);
        let err = parse(&MINIMAL.replace("[server]", "[server]\naccess_log = \"yes\""))
            .expect_err("not a boolean");
        assert!(err.to_string().contains("invalid type"), "{err}");
        assert_eq!(c.server.access_log_path, None, "stderr by default");
        let c = parse(&MINIMAL.replace(
            "[server]",
            "[server]\naccess_log_path = \"logs/access.log\"",
        ))
        .expect("valid");
        assert_eq!(
            c.server.access_log_path,
            Some(std::path::PathBuf::from(
                "/nonexistent-base/logs/access.log"
            )),
            "relative to the file's directory"
        );
        assert_eq!(
            invalid_key(&MINIMAL.replace("[server]", "[server]\naccess_log_path = \" \"")),
            "server.access_log_path"
        );
    }

    #[test]
    fn durations_and_trusted_proxies() {
        let text = MINIMAL.replace("[server]", "[server]\nshutdown_grace = \"soon\"");
        assert_eq!(invalid_key(&text), "server.shutdown_grace");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"nope\"]",
        );
        assert_eq!(invalid_key(&text), "server.trusted_proxies[2]");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]",
        );
        assert_eq!(parse(&text).expect("valid").server.trusted_proxies.len(), 2);
    }
}
