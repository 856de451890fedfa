//! Which site a request belongs to (by host), and which protected page (by path, in [`path`]).
//!
//! Host matching is exact first, then the longest `*.suffix`, then a `*` site. A request never
//! falls through to "some other" site: no match is an error the gateway answers itself.

pub mod path;

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::{Config, HostPattern};

/// Index of a site in `Config::sites`.
pub type SiteId = usize;

/// Host → site lookup, built once per configuration.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, SiteId>,
    /// Sorted longest first so the most specific wildcard wins.
    suffixes: Vec<(String, SiteId)>,
    any: Option<SiteId>,
}

impl Router {
    /// Builds the lookup from validated sites (hosts are already unique and lower-cased).
    pub fn new(config: &Config) -> Router {
        let mut router = Router::default();
        for (id, site) in config.sites.iter().enumerate() {
            for host in &site.hosts {
                match host {
                    HostPattern::Exact(h) => {
                        router.exact.insert(h.clone(), id);
                    }
                    HostPattern::Suffix(s) => router.suffixes.push((s.clone(), id)),
                    HostPattern::Any => router.any = Some(id),
                }
            }
        }
        router
            .suffixes
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        router
    }

    /// The site for a normalised host name (see [`normalize_host`]).
    pub fn site_for_host(&self, host: &str) -> Option<SiteId> {
        if let Some(&id) = self.exact.get(host) {
            return Some(id);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, id)| id)
            .or(self.any)
    }
}

/// Turns a Host header or URI authority into the name sites are matched on: the port dropped,
/// lower case, no trailing dot. `None` for anything that is not a plausible host, so junk can be
/// refused before it reaches routing or logs.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let rest = &raw[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        let inner = &raw[1..end];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    // One pass over the name: it runs on every request.
    let mut kinds = 0u8;
    for b in host.bytes() {
        kinds |= HOST_BYTE[usize::from(b)];
    }
    if kinds & INVALID != 0 {
        None
    } else if kinds & UPPER != 0 {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

const INVALID: u8 = 1;
const UPPER: u8 = 2;

/// What each byte of a host name is: letters, digits and `-._[]:` may appear (upper-case letters
/// are lowered); anything else makes the name invalid.
static HOST_BYTE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_uppercase() {
            table[b] = UPPER;
        } else if c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        {
            table[b] = 0;
        }
        b += 1;
    }
    table
};

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(hosts: &[&[&str]]) -> Router {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:1\"\n");
        for (i, site) in hosts.iter().enumerate() {
            text.push_str(&format!(
                "[[site]]\nhosts = {site:?}\nupstream = \"http://127.0.0.1:{}\"\n",
                i + 2
            ));
        }
        let config =
            crate::config::parse_str(&text, Path::new("t.toml"), Path::new(".")).expect("valid");
        Router::new(&config)
    }

    #[test]
    fn exact_then_longest_suffix_then_any() {
        let r = router(&[
            &["a.example.com"],
            &["*.example.com"],
            &["*.b.example.com"],
            &["*"],
        ]);
        assert_eq!(r.site_for_host("a.example.com"), Some(0));
        assert_eq!(r.site_for_host("x.example.com"), Some(1));
        assert_eq!(r.site_for_host("x.b.example.com"), Some(2));
        assert_eq!(r.site_for_host("example.com"), Some(3));
        assert_eq!(r.site_for_host("other.org"), Some(3));
    }

    #[test]
    fn unknown_host_has_no_site_without_a_catch_all() {
        let r = router(&[&["a.example.com"], &["*.example.com"]]);
        assert_eq!(r.site_for_host("example.com"), None);
        assert_eq!(r.site_for_host("evil.com"), None);
        assert_eq!(r.site_for_host("a.example.com.evil.com"), None);
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(
            normalize_host("Example.COM:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in [
            "",
            "a b",
            "a:b",
            "a:99999999",
            "[::1",
            "[zz]:1",
            "a/b",
            "a@b",
            "[::1]x",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad}");
        }
    }
}
