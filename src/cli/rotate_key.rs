//! `pagegate rotate-key`: replace the generated session secret, through the running gateway or
//! directly in `data_dir`.

use std::path::Path;

use anyhow::Context;

use super::control::control_at;

/// Rotates the generated session secret: through the running gateway, which applies it at once,
/// or directly in `data_dir` while no gateway runs (the database lock keeps one from starting
/// meanwhile).
pub async fn run(path: &Path) -> anyhow::Result<()> {
    use crate::server::control::RotationReport;
    use crate::store::{StoreError, redb::RedbStore};

    // A running gateway rotates with the configuration it runs: only its data directory is
    // needed to reach it.
    let data_dir = crate::config::data_dir_of(path)?;
    // A gateway on PostgreSQL holds no file here that would tell whether it runs: ask it.
    let on_postgres = crate::config::load(path)
        .is_ok_and(|c| matches!(c.store.backend, crate::config::StoreBackend::Postgres(_)));
    let opened = if on_postgres {
        Err(StoreError::Locked(data_dir.display().to_string()))
    } else {
        RedbStore::open(&data_dir)
    };
    let report = match opened {
        Err(StoreError::Locked(_)) => {
            let (_, body) =
                control_at(&data_dir, http::Method::POST, "/v1/rotate-key", None).await?;
            serde_json::from_slice::<RotationReport>(&body)
                .context("unexpected answer from the gateway")?
        }
        Err(e) => return Err(e.into()),
        Ok(_store) => {
            let config = crate::config::load(path)?;
            if config.auth.secret.is_some() {
                return Err(crate::auth::keys::KeyError::Configured.into());
            }
            let rotation = crate::auth::keys::rotate(
                &config.data_dir,
                config.auth.key_grace,
                crate::store::now(),
            )?;
            let until = rotation.previous_until;
            RotationReport {
                previous_accepted_until: jiff::Timestamp::from_second(until)
                    .map_or_else(|_| until.to_string(), |t| t.to_string()),
                previous_accepted_until_unix: until,
                previous_kept: rotation.previous_kept,
            }
        }
    };
    if report.previous_kept == 0 {
        println!("generated a session key: there was none yet to rotate");
    } else {
        println!(
            "rotated the session key: new sign-ins use the new key; sessions, codes and links \
             made with the previous one are accepted until {}",
            report.previous_accepted_until
        );
    }
    Ok(())
}
