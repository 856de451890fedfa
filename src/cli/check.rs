//! `pagegate check`: validate a configuration file.

use std::path::Path;

/// Loads the file as `serve` would, and says how much it holds.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let parsed = crate::config::load(config)?;
    let pages: usize = parsed.sites.iter().map(|s| s.pages.len()).sum();
    println!(
        "{}: OK (sites: {}, pages: {})",
        config.display(),
        parsed.sites.len(),
        pages
    );
    Ok(())
}
