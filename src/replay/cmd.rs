//! `floodwatch replay` as the binary runs it: arguments in, events on stdout, the summary on
//! stderr.

use std::io::{IsTerminal, Write};

use super::summary;
use crate::cli::{chosen_config, ReplayArgs};
use crate::config::Overrides;
use crate::error::Error;

/// `floodwatch replay`.
pub fn replay(a: &ReplayArgs) -> Result<(), Error> {
    let config = chosen_config(a.config.as_deref());
    let overrides = Overrides {
        format: a.format.clone(),
        rate: a.rate.clone(),
        burst: a.burst,
        ban: a.ban.clone(),
    };
    // Only watch acts unless asked: the configured sinks are those of production.
    let use_sinks = a.sinks || a.dry_run;
    let plan = super::plan_replay(
        config.as_deref(),
        &overrides,
        &a.paths,
        a.shards,
        a.producers,
        use_sinks,
    )?;
    let plan = match a.dry_run {
        true => plan.dry_run(),
        false => plan,
    };
    let _lock = match a.sinks {
        true => plan.claim_sinks()?,
        false => None,
    };
    if a.sinks && plan.sinks.is_empty() {
        log::warn!("--sinks: the config has no [[sink]]; the events go to stdout");
    }
    let progress = !a.no_progress && std::io::stderr().is_terminal();
    // Stdout, not its lock: the decider thread writes the events.
    let mut stdout = std::io::stdout();
    let report = super::replay(plan, &mut stdout, progress)?;
    eprint!("{}", summary::text(&report));
    if a.summary {
        writeln!(stdout, "{}", summary::json(&report))
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::writing("to stdout", e))?;
    }
    Ok(())
}
