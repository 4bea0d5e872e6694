//! `floodwatch bench`: how fast and how right floodwatch is on the `mixed` scenario.
//!
//! - Replay throughput: the scenario written to a scratch directory and replayed by the real
//!   replay pipeline with the scenario's config; precision and recall of its bans against the
//!   truth.
//! - Live detection latency of the pipeline alone, in process (the whole `watch` process under
//!   load, inotify and files included, is measured by `benches/watch-load.py`): a writer thread
//!   appends the scenario's lines to a file, paced by their log times at `speed` × real time;
//!   this thread tails the file and hands each line to ingest → router → shards → decider, as a
//!   live source would, flushing after every line. For each ban event, two delays are recorded
//!   in hdrhistograms: from the hand-over of the line that overflowed (the ban waits until the
//!   log's clock has passed that line's second, so this includes up to one log second / speed),
//!   and from the hand-over of the line that moved the log clock past it (the pipeline alone).
//!   The live config bans for 1 s without escalation, so each attacker is banned again every log
//!   second: many samples from a short run.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::generate;
use super::scenario::{self, Frame};
use crate::addr::{Addr, Cidr};
use crate::app::{self, AppError};
use crate::config::{Config, Overrides};
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::{decider, Event};
use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::hit::NO_VHOST;
use crate::parse::Format;
use crate::source::ingest::Ingest;
use crate::vhost::Vhosts;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Log seconds of the replayed scenario.
    pub seconds: u32,
    /// Log seconds of the live run.
    pub live_seconds: u32,
    /// Log time runs this many times faster than wall time in the live run.
    pub speed: f64,
    pub seed: u64,
}

/// Precision and recall of a set of bans against a truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    pub expected: usize,
    pub banned: usize,
    pub correct: usize,
    pub precision: f64,
    pub recall: f64,
}

impl Accuracy {
    pub fn of(truth: &[String], banned: &[String]) -> Accuracy {
        let correct = banned.iter().filter(|k| truth.contains(k)).count();
        let ratio = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
        Accuracy {
            expected: truth.len(),
            banned: banned.len(),
            correct,
            precision: ratio(correct, banned.len()),
            recall: ratio(correct, truth.len()),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Latency {
    pub samples: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub lines: u64,
    pub bytes: u64,
    pub replay_seconds: f64,
    pub shards: usize,
    pub producers: usize,
    pub replay_accuracy: Accuracy,
    pub live_lines: u64,
    pub live_bans: u64,
    /// Ban events whose overflowing line could not be identified (not in the histograms).
    pub live_unattributed: u64,
    pub line_to_ban: Latency,
    pub clock_to_ban: Latency,
    pub live_accuracy: Accuracy,
    pub options: Options,
}

/// A scratch directory removed when dropped (tempfile is only a dev-dependency).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, AppError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("floodwatch-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)
            .map_err(|e| AppError::Runtime(format!("{}: {e}", p.display())))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime(e: impl std::fmt::Display) -> AppError {
    AppError::Runtime(e.to_string())
}

/// Runs both parts.
pub fn run(o: Options) -> Result<BenchReport, AppError> {
    let scratch = Scratch::new()?;
    let replay_dir = scratch.0.join("replay");
    let g = generate::generate("mixed", o.seconds, o.seed, &replay_dir)
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let plan = app::plan_replay(Some(&g.config_path), &Overrides::default(), &[], None, None)?;
    let mut events: Vec<u8> = Vec::new();
    let r = app::replay(plan, &mut events, false)?;
    let banned = ban_keys(&events);
    let live = live(&scratch.0.join("live"), o)?;
    Ok(BenchReport {
        lines: r.ingest.lines,
        bytes: r.ingest.bytes,
        replay_seconds: r.elapsed.as_secs_f64(),
        shards: r.shards,
        producers: r.producers,
        replay_accuracy: Accuracy::of(&g.truth.banned, &banned),
        live_lines: live.lines,
        live_bans: live.bans,
        live_unattributed: live.unattributed,
        line_to_ban: live.line_to_ban,
        clock_to_ban: live.clock_to_ban,
        live_accuracy: live.accuracy,
        options: o,
    })
}

fn ban_keys(events: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = events
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|e| e["type"] == "ban")
        .filter_map(|e| e["key"].as_str().map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

struct Live {
    lines: u64,
    bans: u64,
    unattributed: u64,
    line_to_ban: Latency,
    clock_to_ban: Latency,
    accuracy: Accuracy,
}

/// One line as it was handed to ingest.
struct Handed {
    addr: Addr,
    time_ms: i64,
    rules: u32,
    at: Instant,
}

/// One ban event as the decider emitted it.
struct Banned {
    key: Cidr,
    rule: usize,
    time_ms: i64,
    first_seen_ms: i64,
    requests: u64,
    at: Instant,
}

fn live(dir: &Path, o: Options) -> Result<Live, AppError> {
    let seconds = o.live_seconds.max(scenario::MIN_SECONDS);
    let g = generate::generate("mixed", seconds, o.seed, dir)
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let mut config = Config::load(&g.config_path).map_err(runtime)?;
    for r in &mut config.rules {
        r.ban_ms = 1000;
        r.max_ban_ms = 1000;
        r.ban_factor = 1.0;
    }
    let format = Arc::new(Format::from_spec(&config.input.format).map_err(runtime)?);
    let rules = Arc::new(CompiledRules::new(&config.rules).map_err(runtime)?);
    let mut tr = scenario::build(
        "mixed",
        Frame {
            seconds,
            seed: o.seed,
        },
    )
    .ok_or_else(|| runtime("mixed scenario missing"))?;
    // One live file with every vhost's lines, in log-time order, as one busy log would be.
    tr.reqs.sort_by_key(|r| r.t_ms);
    let path = dir.join("live_access_log");
    File::create(&path).map_err(runtime)?;

    let vhosts = Vhosts::new();
    let shards = config.engine.shard_count();
    let (out_tx, out_rx) = crossbeam_channel::bounded(16 * 1024);
    let shard_cfg = ShardConfig {
        shards,
        producers: 1,
        // A live source reads lines in order: nothing to wait for.
        lateness_ms: 0,
        max_keys: usize::try_from(config.engine.max_keys).unwrap_or(usize::MAX),
    };
    let (senders, shard_handles) = spawn_shards(&shard_cfg, rules.clone(), out_tx)
        .map_err(|e| AppError::Runtime(format!("cannot start the shard threads: {e}")))?;
    let mut table = BanTable::new(
        &config.rules,
        Allowlist::new(config.allow.clone()),
        vhosts.clone(),
    );
    let rule_names: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
    let bans: Mutex<Vec<Banned>> = Mutex::new(Vec::new());
    let writer_done = AtomicBool::new(false);
    let mut handed: Vec<Handed> = Vec::with_capacity(tr.reqs.len());
    let speed = o.speed.max(0.001);

    std::thread::scope(|s| -> Result<(), AppError> {
        s.spawn(|| {
            decider::run(out_rx, shards, &mut table, &mut |ev| {
                if let Event::Ban(b) = ev {
                    let at = Instant::now();
                    let rule = rule_names.iter().position(|n| **n == *b.rule).unwrap_or(0);
                    bans.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Banned {
                            key: b.key.net,
                            rule,
                            time_ms: b.time_ms,
                            first_seen_ms: b.first_seen_ms,
                            requests: b.requests,
                            at,
                        });
                }
            })
        });
        let writer = s.spawn(|| write_paced(&path, &tr.reqs, speed, &writer_done));
        let mut ingest = Ingest::new(format.clone(), rules.clone(), vhosts.clone());
        let mut router = Router::new(senders, 0, rules.route_prefixes());
        let tailed = tail(&path, &writer_done, |line| {
            let at = Instant::now();
            if let Some(hit) = ingest.line(line, NO_VHOST) {
                router.push(hit);
                router.flush(hit.time_ms);
                handed.push(Handed {
                    addr: hit.addr,
                    time_ms: hit.time_ms,
                    rules: hit.rules,
                    at,
                });
            }
        });
        router.finish();
        for h in shard_handles {
            let _ = h.join();
        }
        writer
            .join()
            .map_err(|_| runtime("writer thread panicked"))?
            .map_err(runtime)?;
        tailed.map_err(runtime)
    })?;

    let bans = bans.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut line_h = histogram()?;
    let mut clock_h = histogram()?;
    let mut unattributed = 0;
    for b in &bans {
        match attribute(&handed, b) {
            Some((line, clock)) => {
                let _ = line_h.record(micros(b.at.saturating_duration_since(handed[line].at)));
                let _ = clock_h.record(micros(b.at.saturating_duration_since(handed[clock].at)));
            }
            None => unattributed += 1,
        }
    }
    let mut keys: Vec<String> = bans.iter().map(|b| b.key.to_string()).collect();
    keys.sort();
    keys.dedup();
    Ok(Live {
        lines: handed.len() as u64,
        bans: bans.len() as u64,
        unattributed,
        line_to_ban: Latency::of(&line_h),
        clock_to_ban: Latency::of(&clock_h),
        accuracy: Accuracy::of(&g.truth.banned, &keys),
    })
}

fn histogram() -> Result<hdrhistogram::Histogram<u64>, AppError> {
    hdrhistogram::Histogram::<u64>::new(3).map_err(runtime)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The index of the line that overflowed (the `requests`-th line of the ban's key and rule since
/// its first sighting), and of the first line after it with a later log time (the one that let
/// the decider commit the ban). `None` when the count does not lead to a line of the ban's time.
fn attribute(handed: &[Handed], b: &Banned) -> Option<(usize, usize)> {
    let bit = 1u32 << b.rule;
    let start = handed.partition_point(|h| h.time_ms < b.first_seen_ms);
    let mut n = 0;
    let mut line = None;
    for (i, h) in handed.iter().enumerate().skip(start) {
        if h.rules & bit != 0 && b.key.contains(h.addr) {
            n += 1;
            if n == b.requests {
                line = Some(i);
                break;
            }
        }
    }
    let line = line.filter(|&i| handed[i].time_ms == b.time_ms && handed[i].at <= b.at)?;
    let clock = line + handed[line..].partition_point(|h| h.time_ms <= b.time_ms);
    (clock < handed.len() && handed[clock].at <= b.at).then_some((line, clock))
}

/// Appends `reqs` to `path` one line per write, each when its log time comes at `speed` × real
/// time.
fn write_paced(
    path: &Path,
    reqs: &[scenario::Req],
    speed: f64,
    done: &AtomicBool,
) -> std::io::Result<()> {
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        let started = Instant::now();
        let t0 = reqs.first().map_or(0, |r| r.t_ms);
        let mut buf = Vec::with_capacity(512);
        for r in reqs {
            let due = Duration::from_secs_f64((r.t_ms - t0) as f64 / 1000.0 / speed);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
            buf.clear();
            buf.extend_from_slice(r.line.as_bytes());
            buf.push(b'\n');
            f.write_all(&buf)?;
        }
        Ok(())
    })();
    done.store(true, Ordering::Release);
    result
}

/// Follows `path` as it grows until the writer is done and everything is read, calling `line`
/// for each complete line (without its newline).
fn tail(path: &Path, done: &AtomicBool, mut line: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut filled = 0;
    loop {
        let finished = done.load(Ordering::Acquire);
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            if finished {
                return Ok(());
            }
            // A live source would wait on inotify; polling every 50 µs is as quick here.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        filled += n;
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..filled]) {
            line(&buf[start..start + nl]);
            start += nl + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// The readable report.
pub fn to_text(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = r.replay_seconds.max(1e-9);
    let _ = writeln!(
        s,
        "replay: {} lines, {:.1} MB of the mixed scenario ({} s of log, seed {}) in {:.3} s: \
         {:.2}M lines/s, {:.0} MB/s ({} producers, {} shards)",
        r.lines,
        r.bytes as f64 / 1e6,
        r.options.seconds,
        r.options.seed,
        secs,
        r.lines as f64 / secs / 1e6,
        r.bytes as f64 / secs / 1e6,
        r.producers,
        r.shards
    );
    let acc = |a: &Accuracy| {
        format!(
            "precision {:.3}, recall {:.3} ({} of {} bans correct, {} expected)",
            a.precision, a.recall, a.correct, a.banned, a.expected
        )
    };
    let _ = writeln!(s, "  {}", acc(&r.replay_accuracy));
    let _ = writeln!(
        s,
        "live (in process, log time at {}x): {} lines, {} ban events ({} unattributed)",
        r.options.speed, r.live_lines, r.live_bans, r.live_unattributed
    );
    let lat = |name: &str, l: &Latency| {
        format!(
            "  {name:<34} p50 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs",
            l.p50, l.p99, l.p999, l.max
        )
    };
    let _ = writeln!(s, "{}", lat("overflowing line -> ban", &r.line_to_ban));
    let _ = writeln!(
        s,
        "{}",
        lat("line moving the log clock -> ban", &r.clock_to_ban)
    );
    let _ = writeln!(s, "  {}", acc(&r.live_accuracy));
    s
}

/// The `--json` report.
pub fn to_json(r: &BenchReport) -> Value {
    let secs = r.replay_seconds.max(1e-9);
    let acc = |a: &Accuracy| {
        json!({"precision": a.precision, "recall": a.recall, "correct": a.correct,
               "banned": a.banned, "expected": a.expected})
    };
    let lat = |l: &Latency| {
        json!({"samples": l.samples, "p50_us": l.p50, "p99_us": l.p99, "p999_us": l.p999,
               "max_us": l.max})
    };
    json!({
        "replay": {
            "scenario": "mixed", "seconds_of_log": r.options.seconds, "seed": r.options.seed,
            "lines": r.lines, "bytes": r.bytes, "seconds": r.replay_seconds,
            "lines_per_second": r.lines as f64 / secs, "mb_per_second": r.bytes as f64 / secs / 1e6,
            "producers": r.producers, "shards": r.shards,
            "accuracy": acc(&r.replay_accuracy),
        },
        "live": {
            "speed": r.options.speed, "seconds_of_log": r.options.live_seconds,
            "lines": r.live_lines, "bans": r.live_bans, "unattributed": r.live_unattributed,
            "line_to_ban": lat(&r.line_to_ban), "clock_to_ban": lat(&r.clock_to_ban),
            "accuracy": acc(&r.live_accuracy),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_right_wrong_and_missed() {
        let truth = vec!["a".to_string(), "b".to_string()];
        let a = Accuracy::of(&truth, &["a".to_string(), "c".to_string()]);
        assert_eq!((a.correct, a.precision, a.recall), (1, 0.5, 0.5));
        let none = Accuracy::of(&[], &[]);
        assert_eq!((none.precision, none.recall), (1.0, 1.0));
    }

    #[test]
    fn tail_hands_over_every_line_of_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        File::create(&path).unwrap();
        let reqs: Vec<scenario::Req> = (0..300)
            .map(|i| scenario::Req {
                t_ms: i,
                vhost: 0,
                line: format!("line {i}"),
            })
            .collect();
        let done = AtomicBool::new(false);
        let mut got = Vec::new();
        std::thread::scope(|s| {
            let w = s.spawn(|| write_paced(&path, &reqs, 100.0, &done));
            tail(&path, &done, |l| {
                got.push(String::from_utf8_lossy(l).to_string())
            })
            .unwrap();
            w.join().unwrap().unwrap();
        });
        let want: Vec<String> = reqs.iter().map(|r| r.line.clone()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn live_run_bans_the_truth_and_attributes_every_ban() {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            seconds: 20,
            live_seconds: 20,
            speed: 50.0,
            seed: 1,
        };
        let l = live(dir.path(), o).unwrap();
        assert_eq!(l.accuracy.precision, 1.0);
        assert_eq!(l.accuracy.recall, 1.0);
        assert!(l.bans >= 4, "{}", l.bans);
        assert_eq!(l.unattributed, 0);
        assert_eq!(l.line_to_ban.samples, l.bans);
        assert!(l.line_to_ban.p50 >= l.clock_to_ban.p50);
    }
}
