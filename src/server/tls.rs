//! TLS for the HTTPS listener: each site's certificate, chosen by SNI through the same host
//! routing as requests, so a name maps to one site whatever layer looks at it.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::routing::{Router, SiteId, normalize_host};

/// Picks a certificate by server name.
#[derive(Debug)]
struct SniResolver {
    router: Arc<Router>,
    by_site: HashMap<SiteId, Arc<CertifiedKey>>,
    /// For clients that send no server name (connecting by IP address): the first TLS site's.
    fallback: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) => {
                let host = normalize_host(name)?;
                let site = self.router.site_for_host(&host)?;
                self.by_site.get(&site).cloned()
            }
            None => self.fallback.clone(),
        }
    }
}

/// Loads every site's certificate and builds the server's TLS configuration (ALPN h2 and
/// http/1.1).
pub(crate) fn server_config(
    config: &Config,
    router: Arc<Router>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut by_site = HashMap::new();
    let mut fallback = None;
    for (id, site) in config.sites.iter().enumerate() {
        let Some(files) = &site.tls else { continue };
        let (certs, key) = files
            .load()
            .map_err(|e| format!("site {}: {e}", site.name))?;
        let certified = CertifiedKey::from_der(certs, key, &provider)
            .map_err(|e| format!("site {}: certificate and key do not match: {e}", site.name))?;
        let certified = Arc::new(certified);
        fallback.get_or_insert_with(|| certified.clone());
        by_site.insert(id, certified);
    }
    let resolver = SniResolver {
        router,
        by_site,
        fallback,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The site a completed handshake's server name selects, if any.
pub(crate) fn sni_site(router: &Router, server_name: Option<&str>) -> Option<SiteId> {
    let host = normalize_host(server_name?)?;
    router.site_for_host(&host)
}
