//! `floodwatch watch`: the long-running detector. Follows every log a set of globs names, as
//! they grow, rotate and appear, and decides bans within about a second of the lines' writing.
//!
//! One thread (the watch loop, [`run`]) waits in mio on an inotify descriptor, a signalfd and a
//! waker; it reads the logs that changed ([`Tailer`](crate::source::tail::Tailer)), parses them
//! into hits ([`Ingest`](crate::source::ingest::Ingest)) for the shard threads as replay's single
//! producer would, drives the [`Decider`](crate::decide::decider::Decider) and the ban table
//! with what the shards report, emits events, and saves read offsets and bans about once a
//! second. See `run.rs` for the choices about time (low marks, wall-clock expiry).

pub mod cmd;
mod commands;

mod endpoint;
mod files;
pub mod http;
pub mod inotify;
mod live;
pub mod marks;
pub mod metrics;
mod notify;
pub mod procstat;
mod reload;
mod run;
pub mod signals;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::rule::CompiledRules;
use crate::error::Error;
use crate::parse::Format;
use crate::pipeline::compile::{compile, Compiled};
use crate::proxy::Proxies;
use crate::sink::SinkSpec;

use crate::source::discover::Patterns;
pub use run::{run, WatchReport};

/// Everything `watch` needs, validated.
pub struct WatchPlan {
    pub config: Config,
    pub format: Format,
    pub rules: CompiledRules,
    /// Trusted proxies: never banned; the real client of their requests (see `proxy`).
    pub proxies: Proxies,
    pub patterns: Patterns,
    /// Checked `[[sink]]` tables; none = events go to stdout as JSON lines.
    pub sinks: Vec<SinkSpec>,
    pub shards: usize,
    /// `[state] dir`; `None` = nothing persists across restarts.
    pub state_dir: Option<PathBuf>,
    /// Where the config came from and the command line's paths, for SIGHUP.
    pub config_path: Option<PathBuf>,
    pub cli_paths: Vec<String>,
    /// For a caller that runs watch in process (bench): once set, watch stops as at SIGTERM,
    /// within about 50 ms (the loop then wakes at least that often).
    pub stop: Option<Arc<AtomicBool>>,
}

/// Loads the config and checks the `PATH|GLOB` arguments (default: `[input] paths`). Matching
/// nothing yet is fine: files are picked up as they appear.
pub fn plan(config_path: Option<&Path>, paths: &[String]) -> Result<WatchPlan, Error> {
    let config = match config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    plan_config(config, config_path, paths)
}

/// [`plan`] for a config already loaded (`config_path`: where a SIGHUP reads it again).
pub fn plan_config(
    config: Config,
    config_path: Option<&Path>,
    paths: &[String],
) -> Result<WatchPlan, Error> {
    let Compiled {
        format,
        proxies,
        rules,
        sinks,
        args,
    } = compile(&config, paths)?;
    let patterns = Patterns::new(&args)?;
    Ok(WatchPlan {
        config_path: config_path.map(Path::to_path_buf),
        cli_paths: paths.to_vec(),
        shards: config.engine.shard_count(),
        state_dir: config.state.dir.clone(),
        config,
        format,
        rules,
        proxies,
        patterns,
        sinks,
        stop: None,
    })
}
