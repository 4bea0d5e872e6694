//! Wiring: builds the pipeline of each command from a validated config and runs it.
//!
//! replay: producer threads (files → chunks → hits) → routers → the [`Detector`] (shard
//! threads, decided on a thread of its own) → the [`Output`] (sinks, or JSON lines on stdout).
//! The producers, shards and decider only share channels.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, Overrides};
use crate::decide::decider::DecideStats;
use crate::detector::{Detector, DetectorSpec};
use crate::engine::rule::CompiledRules;
use crate::output::Output;
use crate::parse::Format;
use crate::preflight::{self, Finding};
use crate::proxy::{self, Proxies, ProxyError};
use crate::sink::{self, SinkSpec};
use crate::source::ingest::IngestStats;
use crate::source::merge::{replay_files, MergeStats, Pipeline, Read, READ_AHEAD};
use crate::source::paths::{self, LogFile, PathsError};
use crate::source::unusable;
use crate::state_file::StateFileError;
use crate::state_lock::{self, Holder, LockError, StateLock};
use crate::vhost::Vhosts;
use crate::watch::discover::PatternError;

/// Why a command failed, split by exit code. The library's own errors are kept as they are
/// (their sources included) up to here, where `main` prints them and picks the exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The config file (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[proxy]` and its ranges (exit code 2).
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A path or glob watch cannot follow (exit code 2).
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Log paths replay cannot read (exit code 1).
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// A file of the state folder that cannot be read or written (exit code 1).
    #[error(transparent)]
    State(#[from] StateFileError),
    /// Other bad arguments or config: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Other failures while running: exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// The reader of our output went away (`| head`): not an error.
    #[error("broken pipe")]
    BrokenPipe,
}

impl AppError {
    /// A failed write of our output (`what`: "events", "to stdout"): a closed pipe is the reader
    /// having seen enough, anything else a runtime error.
    pub fn writing(what: &str, e: io::Error) -> AppError {
        match e.kind() {
            io::ErrorKind::BrokenPipe => AppError::BrokenPipe,
            _ => AppError::Runtime(format!("writing {what}: {e}")),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) | AppError::Proxy(_) | AppError::Pattern(_) => 2,
            AppError::Usage(_) => 2,
            AppError::Paths(_) | AppError::State(_) | AppError::Runtime(_) => 1,
            AppError::BrokenPipe => 0,
        }
    }
}

/// Everything `replay` needs, validated.
pub struct ReplayPlan {
    pub config: Config,
    pub format: Format,
    pub rules: CompiledRules,
    pub files: Vec<LogFile>,
    /// Trusted proxies: never banned; the real client of their requests (see `proxy`).
    pub proxies: Proxies,
    pub shards: usize,
    /// Producer threads (reading and parsing).
    pub producers: usize,
    /// Checked `[[sink]]` tables; none = events go to `out` as JSON lines.
    pub sinks: Vec<SinkSpec>,
}

impl ReplayPlan {
    /// Every sink in dry run (`--dry-run`): a replay with the production config then blocks
    /// and sends nothing.
    pub fn dry_run(mut self) -> ReplayPlan {
        for s in &mut self.sinks {
            s.common.dry_run = true;
        }
        self
    }

    /// For `replay --sinks`: the `[state] dir`'s lock (see [`state_lock`]), held while the
    /// replay acts, so that it never acts beside a watch using the same state folder, which
    /// acts on the same sinks. Refused, naming the folder and the holder, while one runs; refused
    /// too when it cannot be checked (err towards not acting). `None`: no `[state] dir`, or one
    /// that does not exist (no watch has used it), or one this user may read but not lock for
    /// itself, with nobody holding it.
    pub fn claim_sinks(&self) -> Result<Option<StateLock>, AppError> {
        let Some(dir) = &self.config.state.dir else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let refuse = |holder: Holder| {
            AppError::Runtime(format!(
                "refusing --sinks: [state] dir = \"{}\" is in use by {holder}, which acts on \
                 the same sinks; stop it first, or replay without --sinks (events on stdout) \
                 or with --dry-run",
                dir.display()
            ))
        };
        let unknown = |e: LockError| {
            AppError::Runtime(format!(
                "refusing --sinks: cannot tell whether a watch uses [state] dir = \"{}\": {e}",
                dir.display()
            ))
        };
        match state_lock::acquire(dir, "replay --sinks") {
            Ok(lock) => Ok(Some(lock)),
            Err(LockError::Held { holder, .. }) => Err(refuse(holder)),
            Err(LockError::Io { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                match state_lock::holder(dir) {
                    Ok(None) => Ok(None),
                    Ok(Some(holder)) => Err(refuse(holder)),
                    Err(e) => Err(unknown(e)),
                }
            }
            Err(e) => Err(unknown(e)),
        }
    }
}

/// Loads the config, applies the command-line overrides and resolves the paths. `use_sinks`:
/// the `[[sink]]` tables are checked and the plan's events go to them (`replay --sinks`,
/// `--dry-run`); else they are not even read (replay, analyze, bench: a sink the command does
/// not use cannot stop it, such as a Cloudflare token variable set only in the service's
/// environment) and the events go to the caller's output.
pub fn plan_replay(
    config_path: Option<&std::path::Path>,
    overrides: &Overrides,
    paths: &[String],
    shards: Option<usize>,
    producers: Option<usize>,
    use_sinks: bool,
) -> Result<ReplayPlan, AppError> {
    let mut config = match config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.apply(overrides)?;
    let Compiled {
        format,
        proxies,
        rules,
        sinks,
        args,
    } = match use_sinks {
        true => compile(&config, paths)?,
        false => compile_without_sinks(&config, paths)?,
    };
    let files = paths::expand(&args)?;
    let shards = match shards {
        Some(n) if n > 0 => n,
        _ => config.engine.shard_count(),
    };
    Ok(ReplayPlan {
        config,
        format,
        rules,
        files,
        proxies,
        shards,
        producers: producers
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        sinks,
    })
}

/// What a replay saw and decided.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayReport {
    pub ingest: IngestStats,
    pub merge: MergeStats,
    pub decide: DecideStats,
    pub shards: usize,
    pub producers: usize,
    pub elapsed: Duration,
}

/// Runs a replay, writing events to `out` as JSON lines, flushed one by one.
pub fn replay(
    plan: ReplayPlan,
    out: &mut (dyn Write + Send),
    progress: bool,
) -> Result<ReplayReport, AppError> {
    let started = Instant::now();
    let ReplayPlan {
        config,
        format,
        rules,
        files,
        proxies,
        shards,
        producers,
        sinks,
    } = plan;
    // Started before any line is read, so that a sink that cannot start stops the replay early.
    let mut output = Output::start(out, &sinks, &[])
        .map_err(AppError::Runtime)?
        .log_events(!sinks.is_empty());
    let rules = Arc::new(rules);
    let vhosts = Vhosts::new();
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let mut detector = Detector::start(DetectorSpec {
        shards,
        producers,
        ..DetectorSpec::from_config(&config, rules.clone(), &proxies, vhosts.clone())
    })?;
    let senders = detector.take_senders();
    let disk_bytes = Arc::new(AtomicU64::new(0));
    let done = AtomicBool::new(false);

    let (merged, decided) = std::thread::scope(|s| {
        let decider = s.spawn(|| detector.decide_all(&mut |ev| output.emit(ev)));
        if progress {
            s.spawn(|| draw_progress(total_bytes, &disk_bytes, &done));
        }
        let pipeline = Pipeline {
            format: Arc::new(format),
            rules: rules.clone(),
            vhosts: &vhosts,
            senders,
            producers,
            progress: disk_bytes.clone(),
            client_ip: proxies.client_ip(),
            read_ahead: READ_AHEAD,
        };
        let merged = replay_files(&files, pipeline);
        let decided = decider.join();
        done.store(true, Ordering::Relaxed);
        (merged, decided)
    });
    let decided = decided.map_err(|_| AppError::Runtime("the decider thread panicked".into()))?;
    // Every sink delivers or reports what it was given before replay ends.
    let failed = output
        .finish()
        .map_err(|e| AppError::writing("events", e))?;
    let Read {
        merge,
        ingest,
        samples,
    } = merged.map_err(|e| AppError::Runtime(e.to_string()))?;
    // Lines over the length limit are counted while reading, before they reach a parser.
    let mut seen = ingest;
    seen.malformed.too_long += merge.oversized;
    if let Some(w) = unusable::warning(&seen, &samples) {
        log::warn!("{w}");
    }
    if let Some(msg) = failed {
        return Err(AppError::Runtime(msg));
    }
    Ok(ReplayReport {
        ingest,
        merge,
        decide: decided,
        shards,
        producers,
        elapsed: started.elapsed(),
    })
}

fn draw_progress(total: u64, read: &AtomicU64, done: &AtomicBool) {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(10),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    while !done.load(Ordering::Relaxed) {
        bar.set_position(read.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// Checks what a config implies beyond its own syntax: the format compiles, the rules compile,
/// the proxy ranges load and the format logs the proxy's client field; then what watch would
/// meet at start or at its first ban (see `preflight`), returned as findings.
pub fn check_config(config: &Config) -> Result<Vec<Finding>, AppError> {
    let mut format = compile_format(config)?;
    proxy::setup(config, &mut format)?;
    compile_rules(config)?;
    let mut sinks = sink::parse_sinks(config)?;
    sink::mark_fleet_sinks(config, &mut sinks).map_err(AppError::Usage)?;
    Ok(preflight::check(config, &sinks, &format))
}

/// What `replay` and `watch` both build from a validated config before they start.
pub(crate) struct Compiled {
    pub format: Format,
    pub proxies: Proxies,
    pub rules: CompiledRules,
    pub sinks: Vec<SinkSpec>,
    /// The `PATH|GLOB` arguments, or `[input] paths` when none were given.
    pub args: Vec<String>,
}

pub(crate) fn compile(config: &Config, paths: &[String]) -> Result<Compiled, AppError> {
    let mut compiled = compile_without_sinks(config, paths)?;
    compiled.sinks = sink::parse_sinks(config)?;
    sink::mark_fleet_sinks(config, &mut compiled.sinks).map_err(AppError::Usage)?;
    Ok(compiled)
}

/// [`compile`] for the commands that never act (`test`, `analyze`, `bench`, replay without
/// `--sinks`): `sinks` is empty, and a `[[sink]]` table that does not check is only a warning
/// (it would stop `watch`, not this command).
pub(crate) fn compile_without_sinks(
    config: &Config,
    paths: &[String],
) -> Result<Compiled, AppError> {
    if let Err(e) = sink::parse_sinks(config) {
        log::warn!("{e} (the sinks are not used here; watch would refuse this config)");
    }
    let mut format = compile_format(config)?;
    let proxies = proxy::setup(config, &mut format)?;
    let rules = compile_rules(config)?;
    let sinks = Vec::new();
    let args = if paths.is_empty() {
        config.input.paths.clone()
    } else {
        paths.to_vec()
    };
    if args.is_empty() {
        return Err(AppError::Usage(
            "no log files: give PATH|GLOB arguments or [input] paths in the config".into(),
        ));
    }
    Ok(Compiled {
        format,
        proxies,
        rules,
        sinks,
        args,
    })
}

/// The configured log format, which must log a client and a time: without them nothing can be
/// counted, and every line would silently fall into one key at one instant.
fn compile_format(config: &Config) -> Result<Format, AppError> {
    let err = |what: String| AppError::Usage(format!("{}: input.format: {what}", config.origin));
    let format = Format::from_spec(&config.input.format).map_err(|e| err(e.to_string()))?;
    if !format.has_client() {
        return Err(err(
            "the format logs no client address (%h, %a or $remote_addr)".into(),
        ));
    }
    if !format.has_time() {
        return Err(err(
            "the format logs no time (%t, $time_local, $msec...)".into()
        ));
    }
    Ok(format)
}

fn compile_rules(config: &Config) -> Result<CompiledRules, AppError> {
    CompiledRules::new(&config.rules)
        .map_err(|e| AppError::Usage(format!("{}: rule: {e}", config.origin)))
}

/// The trusted proxy ranges a config expands to, for `check-config` (empty without proxies).
pub fn describe_proxies(config: &Config) -> Result<String, AppError> {
    let proxies = Proxies::from_config(config)?;
    Ok(proxies.describe())
}
