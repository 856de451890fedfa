//! `pagegate restore`: put a backup in place of the database of a stopped gateway.

use std::path::Path;

use anyhow::Context;

/// Puts a backup in place of the database, which no gateway may be using.
pub async fn run(config: &crate::config::Config, file: &Path) -> anyhow::Result<()> {
    use crate::store::redb::RedbStore;

    super::not_for_postgres(config, "restore")?;
    // The database lock is the real test (restore checks it too); a live control socket also
    // means a gateway is running, one that might be about to open the database.
    let socket = crate::server::control::socket_path(&config.data_dir);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        anyhow::bail!(
            "the gateway is running (it answers on {}): stop the gateway first",
            socket.display()
        );
    }
    let data_dir = config.data_dir.clone();
    let backup = file.to_path_buf();
    // The check of the backup catches the database engine's panics on damaged files and reports
    // them as such; the default hook would first print them as if pagegate had crashed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let restored =
        tokio::task::spawn_blocking(move || RedbStore::restore(&data_dir, &backup)).await;
    std::panic::set_hook(hook);
    let restored = restored.context("the restore did not finish")??;
    println!(
        "restored {} into {}",
        file.display(),
        restored.path.display()
    );
    println!("{}", restored.counts);
    if let Some(aside) = &restored.kept_aside {
        println!("the previous database is kept as {}", aside.display());
    }
    Ok(())
}
