//! Wiring: builds the pipeline of each command from a validated config and runs it.
//!
//! replay: producer (this thread: files → chunks → hits) → router → shard threads → decider
//! thread → JSON lines on the output. The producer, shards and decider only share channels.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Overrides};
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::decider::{self, DecideStats};
use crate::decide::event::write_json_line;
use crate::engine::rule::CompiledRules;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::parse::Format;
use crate::proxy::{self, Proxies};
use crate::sink::{self, SinkSpec, Sinks};
use crate::source::ingest::IngestStats;
use crate::source::merge::{replay_files, MergeStats, Pipeline, READ_AHEAD};
use crate::source::paths::{self, LogFile};
use crate::vhost::Vhosts;

/// Why a command failed, split by exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad arguments or config: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Failure while running: exit code 1.
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
            AppError::Usage(_) => 2,
            AppError::Runtime(_) => 1,
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

/// Loads the config, applies the command-line overrides and resolves the paths.
pub fn plan_replay(
    config_path: Option<&std::path::Path>,
    overrides: &Overrides,
    paths: &[String],
    shards: Option<usize>,
    producers: Option<usize>,
) -> Result<ReplayPlan, AppError> {
    let mut config = match config_path {
        Some(p) => Config::load(p).map_err(|e| AppError::Usage(e.to_string()))?,
        None => Config::default(),
    };
    config
        .apply(overrides)
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let Compiled {
        format,
        proxies,
        rules,
        sinks,
        args,
    } = compile(&config, paths)?;
    let files = paths::expand(&args).map_err(|e| AppError::Runtime(e.to_string()))?;
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
    let mut sinks = match sinks.is_empty() {
        true => None,
        false => Some(Sinks::start(&sinks).map_err(|e| AppError::Runtime(e.to_string()))?),
    };
    let rules = Arc::new(rules);
    let vhosts = Vhosts::new();
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();

    let (out_tx, out_rx) = crossbeam_channel::bounded(16 * 1024);
    let shard_cfg = ShardConfig {
        shards,
        producers,
        lateness_ms: config.input.lateness_ms as i64,
        max_keys: usize::try_from(config.engine.max_keys).unwrap_or(usize::MAX),
    };
    let (senders, shard_handles) = spawn_shards(&shard_cfg, rules.clone(), out_tx)
        .map_err(|e| AppError::Runtime(format!("cannot start the shard threads: {e}")))?;
    // A trusted proxy is never banned, whatever it sends.
    let allow = [&config.allow[..], proxies.ranges()].concat();
    let mut table = BanTable::new(&config.rules, Allowlist::new(allow), vhosts.clone());
    let disk_bytes = Arc::new(AtomicU64::new(0));
    let done = AtomicBool::new(false);

    let (merged, decided, write_error) = std::thread::scope(|s| {
        let decider = s.spawn(|| {
            let mut line = Vec::with_capacity(512);
            let mut write_error: Option<io::Error> = None;
            let stats = decider::run(out_rx, shards, &mut table, &mut |ev| {
                if let Some(sinks) = sinks.as_mut() {
                    sinks.emit(ev);
                    return;
                }
                if write_error.is_some() {
                    return;
                }
                line.clear();
                write_json_line(ev, &mut line);
                if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                    write_error = Some(e);
                }
            });
            (stats, write_error)
        });
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
        for h in shard_handles {
            let _ = h.join();
        }
        let (decided, write_error) = match decider.join() {
            Ok(r) => r,
            Err(_) => (
                DecideStats::default(),
                Some(io::Error::other("decider thread panicked")),
            ),
        };
        done.store(true, Ordering::Relaxed);
        (merged, decided, write_error)
    });
    // Every sink delivers or reports what it was given before replay ends.
    let failed = finish_sinks(sinks);
    if let Some(e) = write_error {
        return Err(AppError::writing("events", e));
    }
    let (merge, ingest) = merged.map_err(|e| AppError::Runtime(e.to_string()))?;
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

/// Waits for the sinks and reports on stderr what each did; `Some` names the sinks that failed
/// to deliver some events (dropped bans are reported but are not a failure: see `sink::runner`).
fn finish_sinks(sinks: Option<Sinks>) -> Option<String> {
    let reports = sinks?.finish();
    let mut failed = Vec::new();
    for r in &reports {
        log::info!("{r}");
        if r.failed > 0 {
            failed.push(format!("{}: {} events not delivered", r.name, r.failed));
        }
    }
    (!failed.is_empty()).then(|| failed.join("; "))
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
/// the proxy ranges load and the format logs the proxy's client field.
pub fn check_config(config: &Config) -> Result<(), AppError> {
    let mut format = compile_format(config)?;
    proxy::setup(config, &mut format).map_err(|e| AppError::Usage(e.to_string()))?;
    compile_rules(config)?;
    sink::parse_sinks(config).map_err(|e| AppError::Usage(e.to_string()))?;
    Ok(())
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
    let mut format = compile_format(config)?;
    let proxies = proxy::setup(config, &mut format).map_err(|e| AppError::Usage(e.to_string()))?;
    let rules = compile_rules(config)?;
    let sinks = sink::parse_sinks(config).map_err(|e| AppError::Usage(e.to_string()))?;
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
    let proxies = Proxies::from_config(config).map_err(|e| AppError::Usage(e.to_string()))?;
    Ok(proxies.describe())
}
