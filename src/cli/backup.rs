//! `pagegate backup`: a consistent copy of the database, whether or not the gateway runs.

use std::path::Path;

use anyhow::Context;

use super::control::{answer_error, control_call};

/// Writes a backup: directly from the database when the gateway is stopped, or by the running
/// gateway (which holds the database) through its control socket.
pub async fn run(config: &crate::config::Config, file: &Path, force: bool) -> anyhow::Result<()> {
    use crate::server::control::BackupRequest;
    use crate::store::redb::{DB_FILE, RedbStore};
    use crate::store::{BackupError, Store, StoreCounts, StoreError};

    super::not_for_postgres(config, "back up")?;
    // The running gateway resolves the path from its own working directory, not ours.
    let dest = std::path::absolute(file)
        .with_context(|| format!("cannot resolve the path {}", file.display()))?;
    let db = config.data_dir.join(DB_FILE);
    match db.try_exists() {
        Ok(true) => {}
        Ok(false) => anyhow::bail!(
            "there is no database at {}: nothing to back up (check data_dir in the configuration)",
            db.display()
        ),
        // Most often a permission problem: the data directory belongs to the gateway's account.
        Err(e) => anyhow::bail!(
            "cannot reach the database at {}: {e} (run this as the account that runs the gateway)",
            db.display()
        ),
    }
    let exists = || {
        anyhow::anyhow!(
            "{} already exists; pass --force to replace it",
            dest.display()
        )
    };
    let counts: StoreCounts = match RedbStore::open(&config.data_dir) {
        Ok(store) => match store.backup_to(&dest, force) {
            Ok(counts) => counts,
            Err(BackupError::Exists(_)) => return Err(exists()),
            Err(e) => return Err(anyhow::Error::new(e).context("backup failed")),
        },
        Err(StoreError::Locked(_)) => {
            let request = BackupRequest {
                path: dest.clone(),
                force,
            };
            let (status, body) = control_call(
                config,
                http::Method::POST,
                "/v1/backup",
                Some(serde_json::to_vec(&request)?),
            )
            .await?;
            match status {
                http::StatusCode::OK => serde_json::from_slice(&body)
                    .context("the gateway's answer to the backup is not understood")?,
                http::StatusCode::CONFLICT => return Err(exists()),
                _ => anyhow::bail!("{}", answer_error(&body)),
            }
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot open the database")),
    };
    println!("backup written to {}", dest.display());
    println!("{counts}");
    Ok(())
}
