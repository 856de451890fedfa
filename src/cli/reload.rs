//! `pagegate reload`: make the running gateway read its file again, and report the outcome.

use std::path::Path;

use anyhow::Context;

use super::control::{answer_error, control_call_at};

/// Asks the running gateway to reload its configuration and prints what it says.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    use crate::server::reload::ReloadReport;
    // Only the data directory is needed to reach the gateway: the file may well have the very
    // mistake the gateway is about to report.
    let data_dir = crate::config::data_dir_of(config)?;
    // Only a gateway that answered has refused anything; an unreachable one is said as such.
    let (status, body) = control_call_at(&data_dir, http::Method::POST, "/v1/reload", None).await?;
    if !status.is_success() {
        anyhow::bail!(
            "configuration reload refused; the running configuration stays in force: {}",
            answer_error(&body)
        );
    }
    let report: ReloadReport =
        serde_json::from_slice(&body).context("unexpected answer from the gateway")?;
    println!(
        "reloaded {} (sites: {}, pages: {})",
        report.file.display(),
        report.sites,
        report.pages
    );
    for key in &report.restart_needed {
        println!(
            "warning: `{key}` changed, but only takes effect after a restart; the running value stays"
        );
    }
    Ok(())
}
