//! SIGHUP, first step: the config file is read again and its `[input] paths` take effect (new
//! globs are watched at once; files no longer named are still followed until a restart). The
//! new config is handed back, so that the loop applies its `[[sink]]` tables (`Sinks::reconfigure`).
//! Other changes (rules, allowlist, format, state) are reported as needing a restart: applying
//! them while keeping bucket state and bans is still to be done. A config that fails to load is
//! reported and the running one kept.

use std::path::Path;

use super::Patterns;
use crate::config::Config;

/// What a reload asks the loop to do.
pub(crate) enum Reload {
    /// Keep everything (the error or the unapplied changes were reported).
    Keep,
    /// Evaluate these patterns from now on.
    Paths(Patterns),
}

/// Reads the config again and compares it with the running one (`running` is updated to the
/// parts that were applied). Also returns the config read, when it loaded.
pub(crate) fn reload(
    path: Option<&Path>,
    cli_paths: &[String],
    running: &mut Config,
) -> (Reload, Option<Config>) {
    let Some(path) = path else {
        eprintln!("floodwatch: SIGHUP: no config file to reload");
        return (Reload::Keep, None);
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("floodwatch: SIGHUP: {e}; keeping the running config");
            return (Reload::Keep, None);
        }
    };
    let reload = paths(&new, cli_paths, running);
    (reload, Some(new))
}

fn paths(new: &Config, cli_paths: &[String], running: &mut Config) -> Reload {
    let mut later = Vec::new();
    if new.rules != running.rules {
        later.push("rules");
    }
    if new.allow != running.allow || new.proxy != running.proxy {
        later.push("allowlist/proxy");
    }
    if new.input.format != running.input.format {
        later.push("format");
    }
    if new.state != running.state || new.engine != running.engine {
        later.push("state/engine");
    }
    if !later.is_empty() {
        eprintln!(
            "floodwatch: SIGHUP: changes to {} need a restart (not applied)",
            later.join(", ")
        );
    }
    if new.input.paths == running.input.paths {
        return Reload::Keep;
    }
    if !cli_paths.is_empty() {
        eprintln!("floodwatch: SIGHUP: [input] paths changed, but the command line's paths win");
        return Reload::Keep;
    }
    match Patterns::new(&new.input.paths) {
        Ok(p) => {
            running.input.paths = new.input.paths.clone();
            Reload::Paths(p)
        }
        Err(e) => {
            eprintln!("floodwatch: SIGHUP: {e}; keeping the running paths");
            Reload::Keep
        }
    }
}
