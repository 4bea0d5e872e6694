//! The command line, as clap parses it. Values here are raw; `app` validates them together with
//! the config file before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Finds HTTP request floods in access logs and bans the offenders.
#[derive(Debug, Parser)]
#[command(name = "floodwatch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay access-log files (plain or gzip) and print the ban decisions as JSON lines.
    Replay(ReplayArgs),
    /// Validate a config file and print what was understood.
    CheckConfig(CheckConfigArgs),
    /// Follow live logs (new files, rotation, restarts) and print ban decisions as they happen.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Config file (TOML). Without one, a single rule `default` counts every request.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log files or globs, evaluated again while running (quote them). Default: `[input] paths`.
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Config file (TOML). Without one, a single rule `default` counts every request.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: combined, common, vhost_combined, nginx:'<log_format>' or apache:'<LogFormat>'.
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// Rate of the default rule, in nginx limit_req units ("20r/s", "600r/m").
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// Burst of the default rule, in requests.
    #[arg(long, value_name = "B")]
    pub burst: Option<u32>,
    /// Ban length of the default rule ("10m", "1h").
    #[arg(long, value_name = "DUR")]
    pub ban: Option<String>,
    /// Also write the run's summary as a last JSON line on stdout (`"type":"summary"`).
    #[arg(long)]
    pub summary: bool,
    /// Shard threads (default: the config's `[engine] shards`, else one per CPU less one).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Producer threads reading and parsing (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub producers: Option<usize>,
    /// Never draw the progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Log files or globs (quote globs to let floodwatch expand them and name vhosts from them).
    /// Default: the config's `[input] paths`.
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file (TOML); without one, the built-in defaults are shown.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}
