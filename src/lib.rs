//! floodwatch: finds HTTP request floods in web-server access logs and decides bans.
//!
//! # Data flow, folder by folder
//!
//! ```text
//! source ──chunks──▶ parse ──Record──▶ hit ──Hit──▶ engine ──Offense──▶ decide ──Event──▶ sink
//! ```
//!
//! - [`source`]: files and globs (`paths`), plain and gzip archives merged by log time for replay
//!   (`merge`, `reader`), files followed as they grow and rotate for watch (`tail`, `checkpoint`),
//!   and `ingest`, which turns a chunk of lines into hits for the router.
//! - [`parse`]: a line's bytes → a `Record` of borrowed fields, for every supported format; no
//!   allocation per line. [`proxy`] picks the real client behind trusted proxies, [`vhost`]
//!   interns vhost names, [`addr`] holds addresses and prefixes.
//! - [`hit`]: what the engine needs of a request (address, log time, vhost, rule bits).
//! - [`engine`]: rules compiled to matchers (`rule`), hits batched to the shard owning their key
//!   (`router`), shard threads merging producers by log time (`shard`) over one shard's
//!   `limit_req` buckets (`table`, `bucket`). Offenses out.
//! - [`decide`]: the decider merges the shards' offenses by time (`decider`); the ban table
//!   (`ban_table`) bans, escalates, allowlists and expires; events are JSON lines (`event`).
//! - [`sink`]: each output (jsonl, nginx, Cloudflare, exec, webhook) on its own thread behind a
//!   bounded queue, retried with backoff, never blocking detection.
//! - [`detector`] puts engine and decide together: the one pipeline every front-end drives;
//!   [`output`] sends its events to the sinks or stdout, and with `[fleet]` this server's own
//!   events to the [`fleet`] too.
//! - [`fleet`]: bans shared between servers through Redis: this server's bans published, the
//!   other servers' applied to the ban table (rule `fleet`) and the sinks `apply_to` names.
//! - Front-ends: [`app`] (replay, check-config; the wiring for each command), [`watch`] (the
//!   long-running detector: inotify, signals, metrics, state), [`lab`] (generate, analyze,
//!   bench), [`control`] (`bans`, `ban`, `unban`, `status`: requests to a running watch over
//!   its control socket). [`config`] and [`cli`] validate input at the edge; the rest never
//!   sees raw input.
//!   [`state_file`] loads and saves watch's state files (versioned JSON, replaced through
//!   [`atomic_file`]); [`state_lock`] makes a state folder one watch's; [`small_file`] reads the files the config names with a bound on their
//!   size.
//!   [`clock`] is the wall clock, which never moves a line's time.
//!
//! # Time
//!
//! Buckets run on log time, in replay and in watch. Shards process hits in time order below a
//! watermark (the oldest of the producers' low marks, less the allowed lateness), so one log split
//! over several files gives the same decisions as the single file. A hit older than what its
//! shard has processed is *late*: it counts at its own time against its key's state, at the
//! key's last time if older than that (nginx's rule), never at the watermark; state is forgotten
//! only up to the *settled* time, the oldest time a line may still come at (`engine::shard`,
//! `engine::table`, `watch::marks`). The ban table judges a late offense at its own time too.
//! The contract this gives: when each key's own lines arrive in time order, watch bans exactly
//! what replay bans on the final files, whatever the delivery schedule; a key whose own lines
//! arrive out of order is over-counted by at most one request per such line. The wall clock
//! ends bans in watch and bounds how long idle files are waited for; it never moves a line's
//! time.
//!
//! # Threads
//!
//! Every front-end drives one [`detector::Detector`] (shards, decider, ban table) and writes its
//! events through one [`output::Output`] (sinks, or JSON lines on stdout).
//!
//! - Replay: producer threads (`producer-N`, one per CPU) read and parse; shard threads
//!   (`shard-N`) own their keys, no locks; a decider thread drives the detector's decider and
//!   the output.
//! - Watch: one loop thread owns the files (tailers, parser, the router: the shards' only
//!   producer), the decider, the ban table, the output, the metrics endpoint and the control
//!   socket, waiting in mio;
//!   shard threads as in replay; the detector's relay thread (`watch-relay`) wakes the loop
//!   with shard output.
//! - Bench: replay as above; its live part runs watch itself, in process.
//! - Sinks: one thread each (`sink-N`), fed through bounded queues by whoever decides.
//! - Fleet (watch with `[fleet]`): a publisher thread (`fleet-publish`) sending what the loop
//!   queues, and a follower thread (`fleet-follow`) reading the stream and waking the loop, which
//!   applies what it read; neither ever makes the loop wait.

// System calls go through rustix and nix; the one `unsafe` left is the parser's SIMD quote scan,
// allowed where it stands with its safety proof.
#![deny(unsafe_code)]

pub mod addr;
pub mod app;
pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod decide;
pub mod detector;
pub mod docgen;
pub mod engine;
pub mod fleet;
pub mod hit;
pub mod lab;
pub mod linetest;
pub mod logging;
pub mod output;
pub mod parse;
pub mod preflight;
pub mod proxy;
pub mod sink;
pub mod small_file;
pub mod source;
pub mod state_file;
pub mod state_lock;
pub mod summary;
pub mod sys;
pub mod vhost;
pub mod watch;

/// The property tests' settings: `cases` per run, and failing cases kept next to the test's
/// source (`src/engine/model_tests.proptest-regressions`), as the integration tests keep theirs.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::FileFailurePersistence;
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..proptest::test_runner::Config::default()
    }
}
