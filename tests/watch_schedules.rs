//! The time contract end to end: the same lines, written to real files under random schedules
//! and followed by the real `watch` (inotify, tailers, marks, detector), give the bans `replay`
//! gives on the final files, whenever each key's own lines are written in time order.
//!
//! Schedules: per file a delay between a line's log time and its write (0 to 60 s), a buffer
//! flushed every so often (a live log, or chunks of 1 to 10 s), a stall of every writer then the
//! backlog at once. Log times lie in the past (the lines are all late to watch's wall clock),
//! and the writes are played at 40× speed, so a case takes a few seconds.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floodwatch::config::{Config, Overrides};
use floodwatch::lab::scenario::httpdate;
use floodwatch::replay;
use proptest::prelude::*;
use serde_json::Value;

/// Log seconds of a case, and how much faster than that the writes are played.
const LOG_SECONDS: i64 = 30;
const SPEED: f64 = 40.0;

/// How one file's lines reach the disk.
#[derive(Clone, Copy, Debug)]
struct Writer {
    delay_ms: i64,
    /// 0: each line as it happens.
    flush_ms: i64,
}

fn writer() -> impl Strategy<Value = Writer> {
    (
        prop_oneof![Just(0i64), 100i64..60_000],
        prop_oneof![Just(0i64), 1_000i64..10_000],
    )
        .prop_map(|(delay_ms, flush_ms)| Writer { delay_ms, flush_ms })
}

/// One client: its file, its address, and its requests per second (several a second for a
/// flood, a few for a visitor), during `[from, to)` log seconds.
#[derive(Clone, Debug)]
struct Client {
    file: usize,
    rate: u32,
    from: i64,
    to: i64,
}

fn client() -> impl Strategy<Value = Client> {
    (
        0usize..3,
        prop_oneof![1u32..6, 10u32..25],
        0i64..LOG_SECONDS,
    )
        .prop_flat_map(|(file, rate, from)| {
            (from + 1..=LOG_SECONDS).prop_map(move |to| Client {
                file,
                rate,
                from,
                to,
            })
        })
}

/// The ban events as `key@time#offense until`, sorted.
fn bans(out: &[u8]) -> Vec<String> {
    let mut bans: Vec<String> = String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "ban")
        .map(|e| {
            format!(
                "{}@{}#{} until {}",
                e["key"], e["time"], e["offense"], e["until"]
            )
        })
        .collect();
    bans.sort();
    bans
}

/// Writes the case's lines under the schedule while `watch` follows the files; returns the
/// bans of watch and of replay on the final files.
fn run_case(
    clients: &[Client],
    writers: &[Writer; 3],
    stall: (i64, i64),
) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<_> = (0..3)
        .map(|f| {
            let d = dir.path().join(format!("vhosts/v{f}.example/logs"));
            fs::create_dir_all(&d).unwrap();
            let p = d.join("access_log");
            fs::write(&p, "").unwrap();
            p
        })
        .collect();
    let glob = format!("{}/vhosts/*/logs/access_log", dir.path().display());
    let config_path = dir.path().join("floodwatch.toml");
    fs::write(
        &config_path,
        "[input]\nstart_at = \"beginning\"\n\n[[rule]]\nname = \"flood\"\nrate = \"5r/s\"\n\
         burst = 10\nban = \"20s\"\nban_factor = 2\n",
    )
    .unwrap();

    // Every request, by log time; a client's requests spread evenly over each second.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = now - 600;
    let mut lines: Vec<(i64, usize, String)> = Vec::new();
    for (c, cl) in clients.iter().enumerate() {
        for s in cl.from..cl.to {
            for k in 0..cl.rate {
                let t_ms = (t0 + s) * 1000 + i64::from(k) * 1000 / i64::from(cl.rate);
                let line = format!(
                    "203.0.113.{} - - [{}] \"GET /p HTTP/1.1\" 200 5 \"-\" \"t\"\n",
                    c + 1,
                    httpdate(t_ms / 1000)
                );
                lines.push((t_ms, cl.file, line));
            }
        }
    }
    lines.sort_by_key(|l| l.0);
    // When each line is written (log ms from t0): delayed, buffered, held by the stall.
    let mut writes: Vec<(i64, usize, &str)> = lines
        .iter()
        .map(|(t, f, l)| {
            let w = writers[*f];
            let mut at = t - t0 * 1000 + w.delay_ms;
            if w.flush_ms > 0 {
                at = (at / w.flush_ms + 1) * w.flush_ms;
            }
            if (stall.0..stall.1).contains(&at) {
                at = stall.1;
            }
            (at, *f, l.as_str())
        })
        .collect();
    // Stable: each file keeps its order.
    writes.sort_by_key(|w| w.0);

    let config = Config::load(&config_path).unwrap();
    let mut plan =
        floodwatch::watch::plan_config(config, Some(&config_path), std::slice::from_ref(&glob))
            .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    plan.stop = Some(stop.clone());
    let mut watched: Vec<u8> = Vec::new();
    std::thread::scope(|s| {
        let w = s.spawn(|| floodwatch::watch::run(plan, &mut watched));
        // Let watch see the (empty) files first.
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let mut files: Vec<fs::File> = logs
            .iter()
            .map(|p| OpenOptions::new().append(true).open(p).unwrap())
            .collect();
        let mut i = 0;
        while i < writes.len() {
            let at = writes[i].0;
            let due = Duration::from_secs_f64(at.max(0) as f64 / 1000.0 / SPEED);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            // Everything due at this instant, one write per file.
            let mut chunks = [String::new(), String::new(), String::new()];
            while i < writes.len() && writes[i].0 == at {
                chunks[writes[i].1].push_str(writes[i].2);
                i += 1;
            }
            for (f, chunk) in chunks.iter().enumerate() {
                if !chunk.is_empty() {
                    files[f].write_all(chunk.as_bytes()).unwrap();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1200));
        stop.store(true, Ordering::Release);
        w.join().unwrap().unwrap();
    });

    let plan = replay::plan_replay(
        Some(&config_path),
        &Overrides::default(),
        &[glob],
        None,
        None,
        false,
    )
    .unwrap();
    let mut replayed: Vec<u8> = Vec::new();
    replay::replay(plan, &mut replayed, false).unwrap();
    (bans(&watched), bans(&replayed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn watch_bans_what_replay_bans_however_the_files_are_written(
        clients in prop::collection::vec(client(), 1..12),
        writers in [writer(), writer(), writer()],
        stall in (0i64..20_000, prop_oneof![Just(0i64), 1_000i64..15_000]),
    ) {
        let stall = (stall.0, stall.0 + stall.1);
        let (watched, replayed) = run_case(&clients, &writers, stall);
        prop_assert_eq!(watched, replayed);
    }
}
