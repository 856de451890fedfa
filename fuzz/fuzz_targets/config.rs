//! The configuration loader (`pagegate check`'s `config::parse_str`) on any text: never panics,
//! and an accepted configuration builds its router and page matchers, with every page path
//! matched by its own page (or refused, never public) and every host name leading to its site.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pagegate::config::HostPattern;
use pagegate::routing::path::PageMatcher;
use pagegate::routing::{Router, normalize_host};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `*_file` keys read files: keep away from the kernel's endless ones.
    if text.contains("/proc") || text.contains("/sys") || text.contains("/dev") {
        return;
    }
    let config = match pagegate::config::parse_str(
        text,
        Path::new("fuzz.toml"),
        Path::new("/nonexistent/pagegate-fuzz"),
    ) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let router = Router::new(&config);
    for site in &config.sites {
        let matcher = PageMatcher::new(&site.pages);
        for (index, page) in site.pages.iter().enumerate() {
            for path in &page.paths {
                if let Ok(pages) = matcher.pages_for(path) {
                    assert!(
                        pages.contains(&index),
                        "page path {path:?} is not under its page {:?}",
                        page.id
                    );
                }
            }
        }
    }
    // Every host name a site lists leads to that site, as a request's Host header would.
    for (index, site) in config.sites.iter().enumerate() {
        for host in &site.hosts {
            if let HostPattern::Exact(name) = host {
                assert_eq!(
                    normalize_host(name).as_deref(),
                    Some(name.as_str()),
                    "host {name:?}"
                );
                assert_eq!(router.site_for_host(name), Some(index), "host {name:?}");
            }
        }
    }
});
