//! The command line, as clap parses it. Values here are raw; each front-end's `cmd` validates
//! them together with the config file before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Finds HTTP request floods in access logs and bans the offenders.
#[derive(Debug, Parser)]
#[command(name = "floodwatch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Diagnostics on stderr from this level up: error, warn, info, debug.
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> log::LevelFilter {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay access-log files (plain or gzip) and print the ban decisions as JSON lines.
    Replay(ReplayArgs),
    /// Validate a config file and print what was understood.
    CheckConfig(CheckConfigArgs),
    /// Show how each line of a log parses and which rules count it (like fail2ban-regex).
    Test(TestArgs),
    /// Write a synthetic attack scenario (vhost logs, its config and its truth) into a directory.
    Generate(GenerateArgs),
    /// Per-key peak rates, top talkers, and which keys other thresholds would have banned.
    Analyze(AnalyzeArgs),
    /// Write one self-contained HTML report of an archive: charts, top keys, bans, what-if grids.
    Report(ReportArgs),
    /// Measure replay throughput, live detection latency and accuracy on generated traffic.
    Bench(BenchArgs),
    /// Follow live logs (new files, rotation, restarts) and ban as floods happen: the one command
    /// that acts through the configured sinks (without sinks, events go to stdout).
    Watch(WatchArgs),
    /// List the active bans of the running watch.
    Bans(BansArgs),
    /// Ban an address or range by hand, through every sink, for a while.
    Ban(BanArgs),
    /// Lift the bans of an address or range now, everywhere (deny file, Cloudflare, firewall).
    Unban(UnbanArgs),
    /// How the running watch is doing: files, lines/s, read lag, bans per rule, sinks.
    Status(StatusArgs),
    /// A live view of the running watch: the busiest keys and how close each is to its limit,
    /// vhosts' rates, bans and sinks, refreshed every second (b/u ban and unban, q quits).
    Top(TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print floodwatch(1), or write every man page into a folder.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write floodwatch.1, floodwatch-COMMAND.1 (one per command) and floodwatch.toml.5 (every
    /// config key) into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The config every command uses without `--config`, where it exists (else the built-in
/// defaults).
pub const DEFAULT_CONFIG: &str = "/etc/floodwatch/floodwatch.toml";

/// Names the file used instead of [`DEFAULT_CONFIG`] (a packaging with another layout; empty:
/// none, the built-in defaults, which is how the tests stay apart from an installed package).
pub const CONFIG_ENV: &str = "FLOODWATCH_CONFIG";

/// The config file a command uses: `--config`, else the default file ([`CONFIG_ENV`] where it
/// is set, else [`DEFAULT_CONFIG`]) where it exists; none means the built-in defaults.
pub fn config_file(given: Option<&std::path::Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => default_config_path().filter(|p| p.exists()),
    }
}

/// Why no default config is used: "no /etc/floodwatch/floodwatch.toml", or the variable empty.
pub fn no_default_config() -> String {
    match default_config_path() {
        Some(p) => format!("no {}", p.display()),
        None => format!("{CONFIG_ENV} is empty"),
    }
}

fn default_config_path() -> Option<PathBuf> {
    match std::env::var_os(CONFIG_ENV) {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(PathBuf::from(DEFAULT_CONFIG)),
    }
}

/// What a command says of the config it uses (see [`config_file`]).
pub fn config_said(file: Option<&std::path::Path>) -> String {
    match file {
        Some(p) => format!("config: {}", p.display()),
        None => format!("config: built-in defaults ({})", no_default_config()),
    }
}

/// The config a command uses (`--config`, else the default file where it exists, else the
/// built-in defaults), said on stderr so that a run is never read with the wrong rules in mind.
pub fn chosen_config(given: Option<&std::path::Path>) -> Option<PathBuf> {
    let file = config_file(given);
    log::info!("{}", config_said(file.as_deref()));
    file
}

/// How the admin commands find the running watch.
#[derive(Debug, Args)]
pub struct ReachArgs {
    /// The running watch's config (default: /etc/floodwatch/floodwatch.toml): its control
    /// socket is `[state] socket`, else control.sock in `[state] dir`. A config that no longer
    /// loads (a bad edit) is read for its `[state]` alone.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running watch's control socket, instead of finding it through a config.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BansArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// The bans as a JSON array (each the ban event that started it), as `/bans` serves them;
    /// with --all, an object of the bans and the pardons.
    #[arg(long)]
    pub json: bool,
    /// Also the pardoned keys: those whose detected ban `unban` lifted, which the rule does not
    /// ban again until the lifted ban's term ends (a manual ban ends the pardon).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// The address or CIDR range to ban (`203.0.113.7`, `198.51.100.0/24`, `2001:db8::/64`).
    #[arg(value_name = "KEY")]
    pub key: String,
    /// How long ("10m", "1h", "7d").
    #[arg(long = "for", value_name = "DUR")]
    pub duration: String,
    /// Ban under this configured rule (default: a rule of its own, `manual`).
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Ban a range wider than /16 (IPv4) or /48 (IPv6), which is refused without it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UnbanArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// The address or CIDR range whose bans to lift (a range lifts the bans of keys inside it).
    #[arg(value_name = "KEY")]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// Print one frame as plain text and exit (for scripts and logs).
    #[arg(long, conflicts_with = "json")]
    pub once: bool,
    /// Print one frame as one JSON object and exit.
    #[arg(long)]
    pub json: bool,
    /// Keys and vhosts asked for (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Sort the keys by `rate` (over 10 s) or `fill` (of the tightest bucket).
    #[arg(long, value_name = "BY", default_value = "rate", value_parser = ["rate", "fill"])]
    pub sort: String,
    /// Only the keys of this vhost.
    #[arg(long, value_name = "NAME")]
    pub vhost: Option<String>,
    /// How long a ban made with `b` lasts ("10m", "1h", "7d").
    #[arg(long = "ban-for", value_name = "DUR", default_value = "1h")]
    pub ban_for: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// The status as one JSON object (each followed file's health included).
    #[arg(long)]
    pub json: bool,
    /// Each followed file: lines, malformed and not-an-address counts, age of its newest line,
    /// bytes unread, and its last unusable-lines warning.
    #[arg(long)]
    pub files: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Config file (TOML): its format, proxies and rules; default: /etc/floodwatch/floodwatch.toml
    /// where it exists, else the built-in defaults (a single rule `default`).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format, instead of the config's (as for replay).
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// The log to test (plain or gzip); `-` reads standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    pub source: String,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Config file (TOML); default: /etc/floodwatch/floodwatch.toml where it exists, else the
    /// built-in defaults (a single rule `default` counts every request).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log files or globs, evaluated again while running (quote them). Default: `[input] paths`.
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Config file (TOML); default: /etc/floodwatch/floodwatch.toml where it exists, else the
    /// built-in defaults (a single rule `default` counts every request).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: combined, common, vhost_combined, nginx:'LOG_FORMAT' or apache:'LOGFORMAT' (the
    /// server's own format string).
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// Rate of the default rule, in nginx limit_req units ("20r/s", "600r/m"); refused with a
    /// config that has `[[rule]]` tables.
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// Burst of the default rule, in requests (not with `[[rule]]` tables).
    #[arg(long, value_name = "B")]
    pub burst: Option<u32>,
    /// Ban length of the default rule ("10m", "1h"; not with `[[rule]]` tables).
    #[arg(long, value_name = "DUR")]
    pub ban: Option<String>,
    /// Also write the run's summary as a last JSON line on stdout (`"type":"summary"`).
    #[arg(long)]
    pub summary: bool,
    /// Shard threads (default, or 0: the config's `[engine] shards`, else one per CPU).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Producer threads reading and parsing (default, or 0: one per CPU).
    #[arg(long, value_name = "N")]
    pub producers: Option<usize>,
    /// Never draw the progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Every configured sink in dry run: each says what it would do, nothing is blocked or sent.
    #[arg(long, conflicts_with = "sinks")]
    pub dry_run: bool,
    /// Deliver the events to the configured sinks (deny file, Cloudflare, firewall...) instead
    /// of stdout. Refused while a watch uses the config's `[state] dir`.
    #[arg(long)]
    pub sinks: bool,
    /// What replay does without --sinks; kept so that older scripts still run.
    #[arg(long, hide = true, conflicts_with_all = ["dry_run", "sinks"])]
    pub no_sinks: bool,
    /// Log files or globs (quote globs to let floodwatch expand them and name vhosts from them).
    /// Default: the config's `[input] paths`.
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file (TOML); default: /etc/floodwatch/floodwatch.toml where it exists, else the
    /// built-in defaults.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One JSON object (what was found, and whether watch could start) instead of the text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Print the scenario names, one per line, and exit.
    #[arg(long)]
    pub list: bool,
    /// Scenario to write (see --list).
    #[arg(long, value_name = "NAME", required_unless_present = "list")]
    pub scenario: Option<String>,
    /// Seconds of log time (at least 20).
    #[arg(long, value_name = "N", default_value_t = 120)]
    pub seconds: u32,
    /// Seed of the traffic: the same seed writes the same bytes.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Output directory (created): vhosts/VHOST/logs/access_log, floodwatch.toml, truth.json.
    #[arg(long, value_name = "DIR", required_unless_present = "list")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Config file (TOML); its rules key and filter the requests as in replay; default:
    /// /etc/floodwatch/floodwatch.toml where it exists, else the built-in defaults.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (as for replay).
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// Rates to try, comma-separated ("5r/s,10r/s,20r/s"); default: a 1-2-5 ladder from a tenth
    /// to ten times each rule's rate.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub rates: Vec<String>,
    /// Bursts to try, comma-separated ("20,50,100"); default: a 1-2-5 ladder from a tenth to
    /// five times each rule's burst.
    #[arg(long, alias = "burst", value_name = "LIST", value_delimiter = ',')]
    pub bursts: Vec<u32>,
    /// The rule whose top talkers are listed and the only one varied (default: the first for
    /// the talkers, every rule for the grids).
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// A grid per vhost too (the busiest twenty).
    #[arg(long)]
    pub by_vhost: bool,
    /// Suggest, per grid, the tightest threshold that bans only keys standing clearly apart
    /// from the rest of the traffic, as a ready `[[rule]]` table with its evidence.
    #[arg(long)]
    pub suggest: bool,
    /// Only requests logged at or after this time (RFC 3339: 2026-11-20T10:05:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only requests logged before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// How many top talkers to list.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// One JSON object instead of the readable tables.
    #[arg(long)]
    pub json: bool,
    /// Log files or globs (default: the config's `[input] paths`).
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Config file (TOML); its rules key and filter the requests as in replay; default:
    /// /etc/floodwatch/floodwatch.toml where it exists, else the built-in defaults.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (as for replay).
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// The HTML file to write (replaced whole, never left half-written).
    #[arg(short = 'o', long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// Rates of the what-if grids (as for analyze).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub rates: Vec<String>,
    /// Bursts of the what-if grids (as for analyze).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub bursts: Vec<u32>,
    /// The rule whose top keys are listed and the only one varied (as for analyze).
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// How many top keys to list.
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,
    /// A what-if grid per vhost too (the busiest twenty).
    #[arg(long)]
    pub by_vhost: bool,
    /// Only requests logged at or after this time (RFC 3339: 2026-11-20T10:05:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only requests logged before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Log files or globs (default: the config's `[input] paths`).
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds of log time of the replayed `mixed` scenario (at least 20).
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub seconds: u32,
    /// Seconds of log time of the live (in-process) run (less than 20 runs 20).
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub live_seconds: u32,
    /// Log time runs this many times faster than wall time in the live run.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    pub speed: f64,
    /// Seed of the generated traffic.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// One JSON object instead of the readable report.
    #[arg(long)]
    pub json: bool,
}
