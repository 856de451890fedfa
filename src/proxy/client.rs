//! The pooled upstream client of one site: keep-alive connections, TLS verified against the
//! platform's roots (plus an optional CA file), HTTP/2 by ALPN or prior knowledge.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::UpstreamConfig;

/// The client type every site uses.
pub(super) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Builds a site's client. Fails only on an unreadable CA file or when no root is available for
/// an https upstream: both are start-up errors an admin must see.
pub(super) fn build(config: &UpstreamConfig) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let tls = Arc::new(tls_client_config(config)?);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http();
    let connector = if config.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_all_versions().wrap_connector(http)
    };

    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .http2_only(config.http2)
        .http2_adaptive_window(true);
    Ok(client.build(connector))
}

fn tls_client_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if config.scheme == http::uri::Scheme::HTTPS {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A malformed platform root is skipped, as browsers do; the others still verify.
            let _ = roots.add(cert);
        }
        if let Some(ca) = &config.ca_file {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: not a PEM CA file: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: holds no PEM certificate", ca.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
            }
        }
        if roots.is_empty() {
            return Err(format!(
                "no trusted root certificates for the https upstream {}: install the platform's \
                 CA bundle (ca-certificates) or set upstream_ca",
                config.authority
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols.clear();
    Ok(tls)
}
