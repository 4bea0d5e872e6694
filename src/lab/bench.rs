//! `floodwatch bench`: how fast and how right floodwatch is on the `mixed` scenario.
//!
//! - Replay throughput: the scenario written to a scratch directory and replayed by the real
//!   replay pipeline with the scenario's config; precision and recall of its bans against the
//!   truth.
//! - Live detection latency through watch's real path, in process: `watch` itself (inotify, the
//!   tailer, the marks, the detector, the output) follows a file that a writer thread appends
//!   the scenario's lines to, restamped to the wall clock and paced by their log times at
//!   `speed` × real time; each event watch writes is stamped as it arrives. For each ban, two
//!   delays are recorded in hdrhistograms: from the write of the line that overflowed (the ban
//!   waits until the log's clock has passed that line's second, or the wall clock has moved a
//!   second on, so this includes up to one log second / speed), and from the write of the line
//!   that moved the log clock past it. The live config bans for 1 s without escalation, so each
//!   attacker is banned again every log second: many samples from a short run. (The `watch`
//!   process under heavier load, many files, is measured by `benches/watch-load.py`.)

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::generate;
use super::scenario::{self, Frame};
use crate::addr::{Addr, Cidr};
use crate::config::{Config, Overrides, StartAt};
use crate::engine::rule::CompiledRules;
use crate::error::Error;
use crate::hit::NO_VHOST;
use crate::parse::Format;
use crate::replay;
use crate::source::ingest::Ingest;
use crate::vhost::Vhosts;
use crate::watch;

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
    fn new() -> Result<Scratch, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("floodwatch-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(Error::file(&p))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime(e: impl std::fmt::Display) -> Error {
    Error::Runtime(e.to_string())
}

/// Runs both parts.
pub fn run(o: Options) -> Result<BenchReport, Error> {
    let scratch = Scratch::new()?;
    let replay_dir = scratch.0.join("replay");
    let g = generate::generate("mixed", o.seconds, o.seed, &replay_dir)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let plan = replay::plan_replay(
        Some(&g.config_path),
        &Overrides::default(),
        &[],
        None,
        None,
        false,
    )?;
    let mut events: Vec<u8> = Vec::new();
    let r = replay::replay(plan, &mut events, false)?;
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

/// One line as it was written.
struct Handed {
    addr: Addr,
    time_ms: i64,
    rules: u32,
    at: Instant,
}

/// One ban event as watch wrote it.
struct Banned {
    key: Cidr,
    rule: usize,
    time_ms: i64,
    first_seen_ms: i64,
    requests: u64,
    at: Instant,
}

fn live(dir: &Path, o: Options) -> Result<Live, Error> {
    let seconds = o.live_seconds.max(scenario::MIN_SECONDS);
    let g = generate::generate("mixed", seconds, o.seed, dir)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut config = Config::load(&g.config_path).map_err(runtime)?;
    for r in &mut config.rules {
        r.ban_ms = 1000;
        r.max_ban_ms = 1000;
        r.ban_factor = 1.0;
    }
    // Generated traffic acts on nothing: no sink, no state, no fleet, whatever the config said.
    config.sinks.clear();
    config.fleet = None;
    config.state.dir = None;
    config.state.socket = None;
    config.metrics.listen = None;
    config.input.start_at = StartAt::Beginning;
    let format = Arc::new(Format::from_spec(&config.input.format).map_err(runtime)?);
    let rules = Arc::new(CompiledRules::new(&config.rules).map_err(runtime)?);
    let rule_names: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
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
    let mut plan = watch::plan_config(config, None, &[path.display().to_string()])?;
    let stop = Arc::new(AtomicBool::new(false));
    plan.stop = Some(stop.clone());

    // Restamped so that the last line is stamped when it is written and none is stamped ahead
    // of the clock (watch does not follow a log ahead of the clock): at `--speed 1` each line
    // is stamped as it is written, a live log; faster, the log starts in the past and catches
    // up with the clock at its end, so its lines are late and decided at once at their own
    // times, and what is measured is watch's own path.
    let speed = o.speed.max(0.001);
    let first_s = tr.reqs.first().map_or(0, |r| r.t_ms).div_euclid(1000);
    let last_s = tr.reqs.last().map_or(0, |r| r.t_ms).div_euclid(1000);
    let span_s = ((last_s - first_s) as f64 / speed.max(1.0)).ceil() as i64;
    let shift_s = crate::clock::wall_ms() / 1000 + 1 + span_s - last_s;
    let mut ingest = Ingest::new(format, rules, Vhosts::new());
    let mut events = Stamped::default();
    let (watched, handed) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch::run(plan, &mut events));
        let handed = write_paced(&path, &tr.reqs, shift_s, speed, &mut ingest);
        // Bans follow a line within about a second (the wall clock moves the marks on).
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Release);
        let watched = watcher
            .join()
            .unwrap_or_else(|_| Err(runtime("the watch thread panicked")));
        (watched, handed)
    });
    watched?;
    let handed = handed.map_err(runtime)?;

    let bans: Vec<Banned> = events
        .lines
        .iter()
        .filter_map(|(at, l)| Banned::of(l, *at, &rule_names))
        .collect();
    let mut line_h = histogram()?;
    let mut clock_h = histogram()?;
    let mut unattributed = 0;
    for b in &bans {
        match attribute(&handed, b) {
            Some((line, clock)) => {
                let _ = line_h.record(micros(b.at.saturating_duration_since(handed[line].at)));
                if let Some(c) = clock {
                    let _ = clock_h.record(micros(b.at.saturating_duration_since(handed[c].at)));
                }
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

/// What watch writes, one line at a time, each stamped as it arrives.
#[derive(Default)]
struct Stamped {
    partial: Vec<u8>,
    lines: Vec<(Instant, Vec<u8>)>,
}

impl Write for Stamped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = Instant::now();
        self.partial.extend_from_slice(buf);
        while let Some(nl) = memchr::memchr(b'\n', &self.partial) {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            self.lines.push((at, line));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Banned {
    /// A ban event of watch's output, with the rule's index; `None` for other lines.
    fn of(line: &[u8], at: Instant, rule_names: &[String]) -> Option<Banned> {
        let e: Value = serde_json::from_slice(line).ok()?;
        if e["type"] != "ban" {
            return None;
        }
        let ms = |field: &str| {
            let t = humantime::parse_rfc3339(e[field].as_str()?).ok()?;
            let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
            i64::try_from(d.as_millis()).ok()
        };
        let rule = e["rule"].as_str()?;
        Some(Banned {
            key: e["key"].as_str()?.parse().ok()?,
            rule: rule_names.iter().position(|n| n == rule)?,
            time_ms: ms("time")?,
            first_seen_ms: ms("first_seen")?,
            requests: e["requests"].as_u64()?,
            at,
        })
    }
}

fn histogram() -> Result<hdrhistogram::Histogram<u64>, Error> {
    hdrhistogram::Histogram::<u64>::new(3).map_err(runtime)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The index of the line that overflowed (the `requests`-th line of the ban's key and rule since
/// its first sighting), and of the first line after it with a later log time when that one was
/// written before the ban (the one that let the decider commit it; a late line is decided
/// without one). `None` when the count does not lead to a line of the ban's time.
fn attribute(handed: &[Handed], b: &Banned) -> Option<(usize, Option<usize>)> {
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
    let clock = (clock < handed.len() && handed[clock].at <= b.at).then_some(clock);
    Some((line, clock))
}

/// Appends `reqs` to `path` one line per write, each restamped `shift_s` seconds later and
/// written when its log time comes at `speed` × real time. Returns each line as ingest reads it,
/// with the time it was written.
fn write_paced(
    path: &Path,
    reqs: &[scenario::Req],
    shift_s: i64,
    speed: f64,
    ingest: &mut Ingest,
) -> std::io::Result<Vec<Handed>> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    let started = Instant::now();
    let t0 = reqs.first().map_or(0, |r| r.t_ms);
    let mut handed = Vec::with_capacity(reqs.len());
    let mut buf = Vec::with_capacity(512);
    for r in reqs {
        let due = Duration::from_secs_f64((r.t_ms - t0) as f64 / 1000.0 / speed);
        let now = started.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        let secs = r.t_ms.div_euclid(1000);
        let line = r.line.replacen(
            &scenario::httpdate(secs),
            &scenario::httpdate(secs + shift_s),
            1,
        );
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        let hit = ingest.line(&buf, NO_VHOST);
        buf.push(b'\n');
        let at = Instant::now();
        f.write_all(&buf)?;
        if let Some(hit) = hit {
            handed.push(Handed {
                addr: hit.addr,
                time_ms: hit.time_ms,
                rules: hit.rules,
                at,
            });
        }
    }
    Ok(handed)
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
        "live (watch in process, log time at {}x): {} lines, {} ban events ({} unattributed)",
        r.options.speed, r.live_lines, r.live_bans, r.live_unattributed
    );
    let lat = |name: &str, l: &Latency| {
        format!(
            "  {name:<42} p50 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs  ({} bans)",
            l.p50, l.p99, l.p999, l.max, l.samples
        )
    };
    let _ = writeln!(
        s,
        "{}",
        lat("write of the overflowing line -> ban", &r.line_to_ban)
    );
    // Only bans that waited for a later line (not late lines, decided at once) have this one.
    if r.clock_to_ban.samples > 0 {
        let name = "write of the line moving the clock -> ban";
        let _ = writeln!(s, "{}", lat(name, &r.clock_to_ban));
    }
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
    fn lines_are_written_restamped_and_handed_with_their_new_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        File::create(&path).unwrap();
        let t0 = scenario::START_SECS * 1000;
        let reqs: Vec<scenario::Req> = (0..300)
            .map(|i| scenario::Req {
                t_ms: t0 + i * 10,
                vhost: 0,
                line: format!(
                    "192.0.2.{} - - [{}] \"GET / HTTP/1.1\" 200 1 \"-\" \"x\"",
                    i % 200,
                    scenario::httpdate((t0 + i * 10) / 1000)
                ),
            })
            .collect();
        let config = Config::default();
        let format = Arc::new(Format::from_spec(&config.input.format).unwrap());
        let rules = Arc::new(CompiledRules::new(&config.rules).unwrap());
        let mut ingest = Ingest::new(format, rules, Vhosts::new());
        let handed = write_paced(&path, &reqs, 3600, 1000.0, &mut ingest).unwrap();
        assert_eq!(handed.len(), 300);
        assert_eq!(handed[0].time_ms, t0 + 3_600_000);
        assert_eq!(handed[299].time_ms, t0 + 3_600_000 + 2_000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 300);
        assert!(text.contains(&scenario::httpdate(scenario::START_SECS + 3600)));
        assert!(handed.windows(2).all(|w| w[0].at <= w[1].at));
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
        // A ban's clock line is written after its overflowing line: per ban, the clock delay
        // is the shorter one, so no clock delay passes the longest line delay.
        assert!(l.clock_to_ban.samples <= l.line_to_ban.samples);
        assert!(l.line_to_ban.max >= l.clock_to_ban.max);
    }
}
