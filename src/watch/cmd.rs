//! `floodwatch watch` as the binary runs it.

use crate::cli::{chosen_config, WatchArgs};
use crate::error::Error;

/// `floodwatch watch`: runs until stopped, then logs what it did.
pub fn watch(a: &WatchArgs) -> Result<(), Error> {
    // Absolute: `status` shows it, and a SIGHUP reads it, wherever they run from.
    let file = chosen_config(a.config.as_deref()).map(|p| std::path::absolute(&p).unwrap_or(p));
    let plan = super::plan(file.as_deref(), &a.paths)?;
    let report = super::run(plan, &mut std::io::stdout())?;
    log::info!("{report}");
    Ok(())
}
