//! `replay`: the configured rules run over finished log files, merged by log time.
//!
//! Producer threads (files → chunks → hits) → routers → the [`Detector`] (shard
//! threads, decided on a thread of its own) → the [`Output`] (sinks, or JSON lines on stdout).
//! The producers, shards and decider only share channels.

pub mod cmd;
pub mod merge;
pub mod summary;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Overrides};
use crate::decide::decider::DecideStats;
use crate::engine::rule::CompiledRules;
use crate::error::Error;
use crate::parse::Format;
use crate::pipeline::compile::{compile, compile_without_sinks, Compiled};
use crate::pipeline::detector::{Detector, DetectorSpec};
use crate::pipeline::output::Output;
use crate::proxy::Proxies;
use crate::sink::SinkSpec;
use crate::source::paths::{self, LogFile};
use crate::source::stats::IngestStats;
use crate::source::unusable;
use crate::state_lock::{self, Holder, LockError, StateLock};
use crate::vhost::Vhosts;
use merge::{replay_files, MergeStats, Pipeline, Read, READ_AHEAD};

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
    pub fn claim_sinks(&self) -> Result<Option<StateLock>, Error> {
        let Some(dir) = &self.config.state.dir else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let refuse = |holder: Holder| {
            Error::Runtime(format!(
                "refusing --sinks: [state] dir = \"{}\" is in use by {holder}, which acts on \
                 the same sinks; stop it first, or replay without --sinks (events on stdout) \
                 or with --dry-run",
                dir.display()
            ))
        };
        let unknown = |e: LockError| {
            Error::Runtime(format!(
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
) -> Result<ReplayPlan, Error> {
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
) -> Result<ReplayReport, Error> {
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
    let mut output = Output::start(out, &sinks, &[])?.log_events(!sinks.is_empty());
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
        // The default rule counts every request: the request line need not be split on every
        // line unless a rule reads its method or path (decided here, from the rules run).
        let format = format.split_request(rules.reads_request_line());
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
    let decided = decided.map_err(|_| Error::Runtime("the decider thread panicked".into()))?;
    // Every sink delivers or reports what it was given before replay ends.
    let failed = output.finish().map_err(|e| Error::writing("events", e))?;
    let Read {
        merge,
        ingest,
        samples,
    } = merged.map_err(|e| Error::Runtime(e.to_string()))?;
    // Lines over the length limit are counted while reading, before they reach a parser.
    let mut seen = ingest;
    seen.malformed.too_long += merge.oversized;
    if let Some(w) = unusable::warning(&seen, &samples) {
        log::warn!("{w}");
    }
    if let Some(msg) = failed {
        return Err(Error::Runtime(msg));
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
