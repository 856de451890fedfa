//! TLS for the HTTPS listener: each site's certificate, chosen by SNI through the same host
//! routing as requests, so a name maps to one site whatever layer looks at it.
//!
//! The resolver reads the router and the certificates of the state in force at each handshake
//! (see [`super::reload`]), so a reload that swaps a certificate applies to the next handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use super::reload::Live;
use crate::config::{Config, tls_provider};
use crate::routing::{SiteId, normalize_host};

/// Every TLS site's certificate, built from one configuration.
#[derive(Debug, Default)]
pub(crate) struct Certificates {
    by_site: HashMap<SiteId, Arc<CertifiedKey>>,
    /// For clients that send no server name (connecting by IP address): the first TLS site's.
    fallback: Option<Arc<CertifiedKey>>,
}

/// Loads every site's certificate and key.
pub(crate) fn certificates(config: &Config) -> Result<Certificates, String> {
    let provider = tls_provider();
    let mut certs = Certificates::default();
    for (id, site) in config.sites.iter().enumerate() {
        let Some(files) = &site.tls else { continue };
        let (chain, key) = files
            .load()
            .map_err(|e| format!("site {}: {e}", site.name))?;
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("site {}: certificate and key do not match: {e}", site.name))?;
        let certified = Arc::new(certified);
        certs.fallback.get_or_insert_with(|| certified.clone());
        certs.by_site.insert(id, certified);
    }
    Ok(certs)
}

/// Picks a certificate by server name, from the state in force.
struct SniResolver {
    /// Weak: every worker's accept loop holds the TLS configuration, and so this, until its
    /// worker ends; the state (and the store in it) must not wait for that.
    live: std::sync::Weak<Live>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let state = self.live.upgrade()?.load();
        match hello.server_name() {
            Some(name) => {
                let host = normalize_host(name)?;
                let site = state.gateway.router().site_for_host(&host)?;
                state.certs.by_site.get(&site).cloned()
            }
            None => state.certs.fallback.clone(),
        }
    }
}

/// Sessions kept for TLS 1.2 clients that resume by session id instead of by ticket (rustls's
/// default size); everyone else resumes with a ticket, which the server does not store.
const SESSION_CACHE_ENTRIES: usize = 256;

/// The server's TLS configuration (ALPN h2 and http/1.1), with certificates from `live`.
///
/// Sessions resume with tickets, encrypted with keys the ticketer makes at start and replaces
/// every six hours (a ticket stays valid for one period after its key was replaced). A stored
/// session, rustls's default, lasts only until enough other handshakes push it out of the
/// bounded store: under load, a returning visitor paid for a full handshake again.
pub(crate) fn server_config(live: &Arc<Live>) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(tls_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            live: Arc::downgrade(live),
        }));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tls.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| format!("TLS session tickets: {e}"))?;
    tls.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(tls)
}
