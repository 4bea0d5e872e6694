//! SIGHUP: the config file is read and compiled again, exactly as at start (format, proxies and
//! their `ranges_file`, rules, sinks, paths), and only a config that compiles in full is taken;
//! one that does not is reported and the running one kept. [`Live::apply`] then applies it to
//! the running loop: rules keep their buckets and bans by name, the allowlist may end bans,
//! sinks are restarted only where they changed, new globs are watched at once.
//!
//! Not applied until a restart: `[state] dir`, `[engine]` (shard count, key cap),
//! `[metrics] listen` and `[fleet]`, which size or place what is already running; a change to
//! them is reported.

use std::path::Path;
use std::sync::Arc;

use super::files::Files;
use crate::clock::wall_ms;
use crate::config::{Config, ConfigError};
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::Event;
use crate::engine::rule_ids::RuleIds;
use crate::error::Error;
use crate::pipeline::compile::{compile, Compiled};
use crate::pipeline::detector::never_banned;
use crate::pipeline::output::Output;
use crate::sink::SinkError;
use crate::source::discover::{PatternError, Patterns};

/// A config that loaded and compiled.
pub(crate) struct Reloaded {
    pub config: Config,
    pub compiled: Compiled,
    /// New patterns when the paths changed (and the command line gave none).
    pub patterns: Option<Patterns>,
}

/// What `status` says of the config: when the one in force was read, and the last SIGHUP's
/// config when it was refused (until one is taken).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigState {
    pub loaded_ms: i64,
    pub refused: Option<(i64, String)>,
}

impl ConfigState {
    pub(crate) fn new(loaded_ms: i64) -> ConfigState {
        ConfigState {
            loaded_ms,
            refused: None,
        }
    }

    /// Records what became of a SIGHUP at `now_ms`.
    pub(crate) fn reloaded(&mut self, outcome: &Result<bool, ReloadError>, now_ms: i64) {
        match outcome {
            Ok(_) => *self = ConfigState::new(now_ms),
            Err(e) => self.refused = Some((now_ms, e.to_string())),
        }
    }
}

/// Why a SIGHUP's config was refused (the running one is kept).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ReloadError {
    #[error("no config file to reload (watch runs on the built-in defaults)")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config read, but does not compile (format, proxies, rules, sinks, paths).
    #[error(transparent)]
    Compile(#[from] Error),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("too many rule names since start; restart to apply this config")]
    TooManyRules,
    /// A changed sink that cannot be built.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Logs why a SIGHUP's config was refused, and returns it.
fn refused(why: impl Into<ReloadError>) -> ReloadError {
    let why = why.into();
    log::error!("SIGHUP: {why}; keeping the running config");
    why
}

/// Reads the config again. `running` is the config in force, to report what changed. `Err`
/// says why it was refused (and was logged).
pub(crate) fn load(
    path: Option<&Path>,
    cli_paths: &[String],
    running: &Config,
) -> Result<Reloaded, ReloadError> {
    let Some(path) = path else {
        let why = ReloadError::NoConfigFile;
        log::warn!("SIGHUP: {why}");
        return Err(why);
    };
    let config = Config::load(path).map_err(refused)?;
    let compiled = compile(&config, cli_paths).map_err(refused)?;
    let later = changes(running, &config, false);
    if !later.is_empty() {
        log::warn!(
            "SIGHUP: changes to {} take effect at the next restart",
            later.join(", ")
        );
    }
    let patterns = match (
        config.input.paths == running.input.paths,
        cli_paths.is_empty(),
    ) {
        (true, _) => None,
        (false, false) => {
            log::warn!("SIGHUP: [input] paths changed, but the command line's paths win");
            None
        }
        (false, true) => Some(Patterns::new(&compiled.args).map_err(refused)?),
    };
    Ok(Reloaded {
        config,
        compiled,
        patterns,
    })
}

/// The parts of a config a change is reported by: name, whether a reload applies it, and
/// whether it differs between `a` and `b`.
fn parts(a: &Config, b: &Config) -> [(&'static str, bool, bool); 10] {
    [
        ("rules", true, a.rules != b.rules),
        ("allowlist", true, a.allow != b.allow),
        ("proxy", true, a.proxy != b.proxy),
        ("format", true, a.input.format != b.input.format),
        ("sinks", true, a.sinks != b.sinks),
        ("paths", true, a.input.paths != b.input.paths),
        ("[state]", false, a.state != b.state),
        ("[engine]", false, a.engine != b.engine),
        ("[metrics]", false, a.metrics != b.metrics),
        ("[fleet]", false, a.fleet != b.fleet),
    ]
}

/// The parts that differ between `old` and `new` among those a reload applies (`applied`) or
/// leaves for the next restart.
pub(crate) fn changes(old: &Config, new: &Config, applied: bool) -> Vec<&'static str> {
    let parts = parts(old, new).into_iter();
    let changed = parts.filter(|&(_, a, c)| a == applied && c);
    changed.map(|(name, ..)| name).collect()
}

/// What a SIGHUP may change while the loop runs.
pub(crate) struct Live<'a, 'o> {
    pub(crate) config: &'a mut Config,
    pub(crate) rule_ids: &'a mut RuleIds,
    pub(crate) files: &'a mut Files,
    pub(crate) table: &'a mut BanTable,
    pub(crate) output: &'a mut Output<'o>,
}

impl Live<'_, '_> {
    /// Applies a config that [`load`] returned; returns whether the globs changed, `Err` (why)
    /// when it was refused (nothing changed). Rules keep their ids, buckets and bans by name; hits
    /// already read meet the new rules in their shard, so no line is counted twice or missed.
    pub(crate) fn apply(&mut self, r: Reloaded) -> Result<bool, ReloadError> {
        let Reloaded {
            config: new,
            compiled,
            patterns,
        } = r;
        let mut ids = self.rule_ids.clone();
        let Some(rule_ids) = ids.assign(&new.rules) else {
            return Err(refused(ReloadError::TooManyRules));
        };
        // Sinks first: the one step that can fail (a sink that cannot be built), and then
        // nothing has changed.
        if new.sinks != self.config.sinks {
            let active: Vec<_> = self.table.active().collect();
            if let Err(e) = self.output.reconfigure(&compiled.sinks, &active) {
                return Err(refused(e));
            }
        }
        let rules = Arc::new(compiled.rules.with_ids(rule_ids.clone()));
        let format = Arc::new(compiled.format);
        if self
            .files
            .set_rules(rules, format, compiled.proxies.client_ip())
        {
            log::warn!(
                "SIGHUP: a rule keys on a shorter prefix than any before, so addresses move \
                 between shards: every rate bucket starts empty (bans are kept)"
            );
        }
        self.table.set_rules(&new.rules, &rule_ids);
        let allow = never_banned(&new, &compiled.proxies);
        for u in self.table.set_allowlist(Allowlist::new(allow), wall_ms()) {
            self.output.emit(&Event::Unban(u));
        }
        let globs = patterns.is_some();
        if let Some(p) = patterns {
            self.files.set_patterns(p);
        }
        self.files
            .set_lateness(i64::try_from(new.input.lateness_ms).unwrap_or(i64::MAX));
        let changed = changes(self.config, &new, true);
        log::info!(
            "SIGHUP: config reloaded ({})",
            match changed.is_empty() {
                true => "no change".to_string(),
                false => changed.join(", "),
            }
        );
        *self.rule_ids = ids;
        *self.config = new;
        Ok(globs)
    }
}
