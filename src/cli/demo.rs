//! `pagegate demo`: the sample site behind a gateway, with its own configuration and client.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::signals::Signals;

/// Runs the demo until SIGTERM or Ctrl-C; the sample site stops after the gateway.
pub async fn run(listen: SocketAddr, data_dir: &Path) -> anyhow::Result<()> {
    let site_shutdown = CancellationToken::new();
    let site = crate::demo::start_sample_site("127.0.0.1:0".parse()?, site_shutdown.clone())
        .await
        .context("cannot start the sample site")?;
    let config = crate::demo::config(listen, site, data_dir)?;
    crate::demo::seed(&config).context("cannot prepare the demo database")?;
    let signals = Signals::install();
    let running = crate::server::start(config)
        .await
        .context("cannot start the gateway")?;
    if let Some(addr) = running.http_addr {
        tracing::info!("demo ready: open http://{addr}/ (the sample site is at http://{site}/)");
        tracing::info!(
            "the course page is protected: sign in as {} and the code mail is printed below",
            crate::demo::DEMO_EMAIL
        );
    }
    signals
        .until_shutdown(running.shutdown_token(), running.live())
        .await;
    running.wait().await;
    site_shutdown.cancel();
    Ok(())
}
