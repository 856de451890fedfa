//! `pagegate serve`: run the gateway until SIGTERM or Ctrl-C.

use std::path::Path;

use anyhow::Context;

use super::signals::Signals;

/// Serves the file's sites; SIGHUP reloads it, SIGTERM or Ctrl-C ends the process gracefully.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let parsed = crate::config::load(config)?;
    let signals = Signals::install();
    let running = crate::server::start(parsed)
        .await
        .context("cannot start the gateway")?;
    signals
        .until_shutdown(running.shutdown_token(), running.live())
        .await;
    running.wait().await;
    Ok(())
}
