//! `[[site]]` and its `[[site.page]]` blocks: hosts, upstream, certificate, public URL and
//! protected pages, and the rules across sites (hosts, names and page ids each unique).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use toml::Spanned;

use super::{Ctx, Result};
use crate::config::file::{FilePage, FileSite};
use crate::config::{
    AuthConfig, HostPattern, Language, PageCache, PageConfig, SiteConfig, TlsFiles, UpstreamConfig,
};

/// Default `site.upstream_keepalive`: what nginx deployments commonly set with `keepalive`. A
/// burst's extra connections close as their answers end instead of staying pooled, each holding
/// about 27 KiB here and a worker or a socket on the upstream; a busy upstream that sees steady
/// concurrency above it per worker wants it raised.
const DEFAULT_UPSTREAM_KEEPALIVE: usize = 64;
/// Upper bound of `site.upstream_keepalive`, against a typo keeping a million sockets.
const MAX_UPSTREAM_KEEPALIVE: usize = 65_536;

impl Ctx<'_> {
    pub(super) fn site(
        &self,
        i: usize,
        site: &Spanned<FileSite>,
        tls_listen: bool,
        auth: &AuthConfig,
    ) -> Result<SiteConfig> {
        let key = |k: &str| format!("site[{i}].{k}");
        let s = site.get_ref();
        let Some(hosts_raw) = &s.hosts else {
            return Err(self.invalid(
                &key("hosts"),
                Some(site.span()),
                "expected a list of host names",
            ));
        };
        if hosts_raw.get_ref().is_empty() {
            return Err(self.invalid(
                &key("hosts"),
                Some(hosts_raw.span()),
                "expected at least one host name",
            ));
        }
        let mut hosts = Vec::new();
        for (j, h) in hosts_raw.get_ref().iter().enumerate() {
            let pattern = parse_host_pattern(h.get_ref()).ok_or_else(|| {
                self.invalid(
                    &key(&format!("hosts[{j}]")),
                    Some(h.span()),
                    format!(
                        "expected a host name without port (\"example.com\"), \"*.example.com\", \
                         an IP address, or \"*\", got {:?}",
                        h.get_ref()
                    ),
                )
            })?;
            hosts.push(pattern);
        }
        let upstream = self.upstream(i, s)?;
        let tls = match &s.tls {
            Some(t) => {
                if !tls_listen {
                    return Err(self.invalid(
                        &key("tls"),
                        Some(t.span()),
                        "the site has a certificate but `server.tls_listen` is not set",
                    ));
                }
                let files = TlsFiles {
                    cert: self.existing_file(&key("tls.cert"), &t.get_ref().cert)?,
                    key: self.existing_file(&key("tls.key"), &t.get_ref().key)?,
                };
                if let Err(problem) = files.load() {
                    return Err(self.invalid(&key("tls"), Some(t.span()), problem));
                }
                Some(files)
            }
            None => None,
        };
        let redirect_http = match &s.redirect_http {
            Some(r) if *r.get_ref() && tls.is_none() => {
                return Err(self.invalid(
                    &key("redirect_http"),
                    Some(r.span()),
                    "redirecting to HTTPS needs the site to have `tls`",
                ));
            }
            Some(r) => *r.get_ref(),
            None => tls.is_some(),
        };
        let public_url = match &s.public_url {
            Some(u) => Some(self.public_url(&key("public_url"), u)?),
            None => None,
        };
        let mut pages = Vec::with_capacity(s.page.len());
        for (j, page) in s.page.iter().enumerate() {
            pages.push(self.page(&format!("site[{i}].page[{j}]"), page, auth)?);
        }
        if !pages.is_empty() && public_url.is_none() {
            return Err(self.invalid(
                &key("public_url"),
                Some(site.span()),
                "required when the site has pages: sign-in links in mail are built from it, \
                 never from the request's Host (e.g. public_url = \"https://course.example.com\")",
            ));
        }
        let name = match &s.name {
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().trim().to_string(),
            _ => hosts_raw.get_ref()[0].get_ref().trim().to_ascii_lowercase(),
        };
        Ok(SiteConfig {
            title: s.title.clone().unwrap_or_else(|| name.clone()),
            name,
            hosts,
            upstream,
            tls,
            public_url,
            redirect_http,
            language: match &s.language {
                None => Language::En,
                Some(l) => Language::from_code(l.get_ref().trim()).ok_or_else(|| {
                    self.invalid(
                        &key("language"),
                        Some(l.span()),
                        format!("expected \"en\" or \"ru\", got {:?}", l.get_ref()),
                    )
                })?,
            },
            pages,
        })
    }

    fn upstream(&self, i: usize, s: &FileSite) -> Result<UpstreamConfig> {
        let key = format!("site[{i}].upstream");
        let Some(raw) = &s.upstream else {
            return Err(self.invalid(
                &key,
                None,
                "expected the upstream URL, e.g. \"http://127.0.0.1:8000\"",
            ));
        };
        let bad = |why: &str| {
            self.invalid(
                &key,
                Some(raw.span()),
                format!(
                    "expected \"http://host:port\" or \"https://host:port\" ({why}), got {:?}",
                    raw.get_ref()
                ),
            )
        };
        let uri: http::Uri = raw.get_ref().trim().parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("the host is empty or has user info"));
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(bad(
                "a path or query is not supported; requests keep their own path",
            ));
        }
        let ca_file = match &s.upstream_ca {
            Some(ca) => {
                if scheme != http::uri::Scheme::HTTPS {
                    return Err(self.invalid(
                        &format!("site[{i}].upstream_ca"),
                        Some(ca.span()),
                        "only meaningful with an https:// upstream",
                    ));
                }
                Some(self.existing_file(&format!("site[{i}].upstream_ca"), ca)?)
            }
            None => None,
        };
        Ok(UpstreamConfig {
            scheme,
            authority,
            ca_file,
            http2: s.upstream_http2,
            preserve_host: s.preserve_host.unwrap_or(true),
            connect_timeout: self.duration(
                &format!("site[{i}].connect_timeout"),
                s.connect_timeout.as_ref(),
                Duration::from_secs(5),
            )?,
            response_timeout: self.duration(
                &format!("site[{i}].response_timeout"),
                s.response_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            keepalive: match &s.upstream_keepalive {
                None => DEFAULT_UPSTREAM_KEEPALIVE,
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| *n <= MAX_UPSTREAM_KEEPALIVE)
                    .ok_or_else(|| {
                        self.invalid(
                            &format!("site[{i}].upstream_keepalive"),
                            Some(n.span()),
                            format!("expected a whole number from 0 to {MAX_UPSTREAM_KEEPALIVE}"),
                        )
                    })?,
            },
        })
    }

    fn public_url(&self, key: &str, raw: &Spanned<String>) -> Result<String> {
        let text = raw.get_ref().trim().trim_end_matches('/');
        let ok = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority()
                        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
                    && (u.path().is_empty() || u.path() == "/")
                    && u.query().is_none()
            })
            .is_some();
        if !ok {
            return Err(self.invalid(
                key,
                Some(raw.span()),
                format!(
                    "expected a base URL such as \"https://course.example.com\", got {:?}",
                    raw.get_ref()
                ),
            ));
        }
        Ok(text.to_string())
    }

    fn page(&self, key: &str, page: &Spanned<FilePage>, auth: &AuthConfig) -> Result<PageConfig> {
        let p = page.get_ref();
        let Some(id) = &p.id else {
            return Err(self.invalid(
                &format!("{key}.id"),
                Some(page.span()),
                "expected a page id",
            ));
        };
        let id_text = id.get_ref().trim();
        let id_ok = !id_text.is_empty()
            && id_text.len() <= 64
            && id_text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(self.invalid(
                &format!("{key}.id"),
                Some(id.span()),
                format!("expected 1-64 characters of a-z, 0-9, '-' or '_', got {id_text:?}"),
            ));
        }
        let Some(paths_raw) = &p.paths else {
            return Err(self.invalid(
                &format!("{key}.paths"),
                Some(page.span()),
                "expected a list of paths",
            ));
        };
        if paths_raw.get_ref().is_empty() {
            return Err(self.invalid(
                &format!("{key}.paths"),
                Some(paths_raw.span()),
                "expected at least one path",
            ));
        }
        let mut paths = Vec::new();
        for (j, raw) in paths_raw.get_ref().iter().enumerate() {
            let path = raw.get_ref().trim();
            if !is_clean_path(path) {
                return Err(self.invalid(
                    &format!("{key}.paths[{j}]"),
                    Some(raw.span()),
                    format!(
                        "expected a plain absolute path such as \"/course/\" (no '..', '.', '//', \
                         '%', '\\', '?', '#' or control characters), got {path:?}"
                    ),
                ));
            }
            paths.push(path.to_string());
        }
        Ok(PageConfig {
            id: id_text.to_string(),
            title: p.title.clone().unwrap_or_else(|| id_text.to_string()),
            paths,
            session_lifetime: self.duration(
                &format!("{key}.session_lifetime"),
                p.session_lifetime.as_ref(),
                auth.session_lifetime,
            )?,
            cache: match &p.cache {
                None => PageCache::Private,
                Some(c) => match c.get_ref().trim() {
                    "private" => PageCache::Private,
                    "no-store" => PageCache::NoStore,
                    other => {
                        return Err(self.invalid(
                            &format!("{key}.cache"),
                            Some(c.span()),
                            format!("expected \"private\" or \"no-store\", got {other:?}"),
                        ));
                    }
                },
            },
        })
    }

    pub(super) fn check_unique_hosts(
        &self,
        raw: &[Spanned<FileSite>],
        sites: &[SiteConfig],
    ) -> Result<()> {
        let mut seen: HashMap<&HostPattern, usize> = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            for (j, host) in site.hosts.iter().enumerate() {
                if let Some(first) = seen.insert(host, i) {
                    let span = raw[i]
                        .get_ref()
                        .hosts
                        .as_ref()
                        .map(|h| h.get_ref()[j].span());
                    return Err(self.invalid(
                        &format!("site[{i}].hosts[{j}]"),
                        span,
                        format!("host {} is already claimed by site[{first}]; each host belongs to one site", host),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn check_unique_names(
        &self,
        raw: &[Spanned<FileSite>],
        sites: &[SiteConfig],
    ) -> Result<()> {
        let mut seen = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            if let Some(first) = seen.insert(site.name.as_str(), i) {
                let span = raw[i]
                    .get_ref()
                    .name
                    .as_ref()
                    .map(|n| n.span())
                    .or(Some(raw[i].span()));
                return Err(self.invalid(
                    &format!("site[{i}].name"),
                    span,
                    format!("site name {:?} is already used by site[{first}]; names identify sites in logs and the API", site.name),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_unique_pages(
        &self,
        raw: &[Spanned<FileSite>],
        sites: &[SiteConfig],
    ) -> Result<()> {
        let mut seen = HashSet::new();
        for (i, site) in sites.iter().enumerate() {
            for (j, page) in site.pages.iter().enumerate() {
                if !seen.insert(page.id.as_str()) {
                    let span = raw[i].get_ref().page[j]
                        .get_ref()
                        .id
                        .as_ref()
                        .map(|s| s.span());
                    return Err(self.invalid(
                        &format!("site[{i}].page[{j}].id"),
                        span,
                        format!(
                            "page id {:?} is used twice; page ids are unique across the gateway",
                            page.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h:?}"),
            HostPattern::Suffix(s) => write!(f, "\"*{s}\""),
            HostPattern::Any => f.write_str("\"*\""),
        }
    }
}

/// A host pattern as written in `hosts`, or `None` when it is not one.
fn parse_host_pattern(raw: &str) -> Option<HostPattern> {
    let lower = raw.trim().to_ascii_lowercase();
    if lower.starts_with("*.") && lower.len() <= 2 {
        return None;
    }
    let h = lower.strip_suffix('.').unwrap_or(&lower).to_string();
    if h == "*" {
        return Some(HostPattern::Any);
    }
    if let Some(rest) = h.strip_prefix("*.") {
        return is_dns_name(rest).then(|| HostPattern::Suffix(format!(".{rest}")));
    }
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| HostPattern::Exact(h.clone()));
    }
    if let Ok(v6) = h.parse::<std::net::Ipv6Addr>() {
        return Some(HostPattern::Exact(format!("[{v6}]")));
    }
    is_dns_name(&h).then_some(HostPattern::Exact(h))
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A page path an admin writes: absolute, already decoded and free of anything a normaliser
/// would change, so that matching it against normalised request paths is exact.
fn is_clean_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b.is_ascii_control() || b"%\\?#".contains(&b) || b == b' ')
        && !p.contains("//")
        && p.split('/').all(|seg| seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::test_support::{MINIMAL, invalid_key, parse};

    #[test]
    fn upstream_keepalive_is_a_bounded_count() {
        let with = |n: &str| format!("{MINIMAL}upstream_keepalive = {n}\n");
        let c = parse(&with("0")).expect("0 turns keep-alive off");
        assert_eq!(c.sites[0].upstream.keepalive, 0);
        for bad in ["-1", "1000000"] {
            let err = parse(&with(bad)).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("`site[0].upstream_keepalive`"), "{msg}");
            assert!(msg.contains("from 0 to 65536"), "{msg}");
        }
    }

    #[test]
    fn duplicate_host_across_sites_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[site]]\nhosts = [\"LOCALHOST.\"]\nupstream = \"http://127.0.0.1:9000\"\n"
        );
        let err = parse(&text).expect_err("dup");
        assert_eq!(err.key(), Some("site[1].hosts[0]"));
        assert!(
            err.to_string().contains("already claimed by site[0]"),
            "{err}"
        );
    }

    #[test]
    fn upstream_rules() {
        for bad in [
            "ftp://a",
            "127.0.0.1:8000",
            "http://a/app",
            "http://a/?x=1",
            "http://user@a",
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:8000", bad);
            assert_eq!(invalid_key(&text), "site[0].upstream", "{bad}");
        }
        let text = MINIMAL.replace("upstream = \"http://127.0.0.1:8000\"", "");
        assert_eq!(invalid_key(&text), "site[0].upstream");
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_pattern("Example.COM."),
            Some(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            parse_host_pattern("*.example.com"),
            Some(HostPattern::Suffix(".example.com".into()))
        );
        assert_eq!(parse_host_pattern("*"), Some(HostPattern::Any));
        assert_eq!(
            parse_host_pattern("::1"),
            Some(HostPattern::Exact("[::1]".into()))
        );
        assert_eq!(
            parse_host_pattern("[::1]"),
            Some(HostPattern::Exact("[::1]".into()))
        );
        for bad in [
            "example.com:80",
            "a b",
            "",
            "*.",
            "-a.com",
            "a..b",
            "http://a",
        ] {
            assert_eq!(parse_host_pattern(bad), None, "{bad}");
        }
    }

    #[test]
    fn missing_certificate_file_names_the_key() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8080\"",
            "tls_listen = \"127.0.0.1:8443\"",
        ) + "tls = { cert = \"missing.pem\", key = \"missing.key\" }\n";
        let err = parse(&text).expect_err("missing cert");
        assert_eq!(err.key(), Some("site[0].tls.cert"));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn page_rules() {
        let page = |id: &str, path: &str| {
            format!(
                "{MINIMAL}public_url = \"https://a.example\"\n\n[[site.page]]\nid = {id:?}\npaths = [{path:?}]\n"
            )
        };
        assert!(parse(&page("course", "/course/")).is_ok());
        assert_eq!(
            invalid_key(&page("Course!", "/course/")),
            "site[0].page[0].id"
        );
        for bad in ["course", "/a/../b", "/a//b", "/a%2fb", "/a\\b", "/a?x"] {
            assert_eq!(
                invalid_key(&page("course", bad)),
                "site[0].page[0].paths[0]",
                "{bad}"
            );
        }
        let twice = format!(
            "{}\n[[site.page]]\nid = \"course\"\npaths = [\"/b/\"]\n",
            page("course", "/a/")
        );
        assert_eq!(invalid_key(&twice), "site[0].page[1].id");
    }
}
