//! floodwatch: finds HTTP request floods in web-server access logs and decides bans.
//!
//! # The flow
//!
//! ```text
//! source ──lines──▶ parse ──Record──▶ hit ──Hit──▶ engine ──Offense──▶ decide ──Event──▶ sink
//! ```
//!
//! Every front-end drives the same [`pipeline`]: a validated [`config`] compiled into a plan,
//! one [`Detector`](pipeline::detector::Detector) (shards, decider, ban table) and one
//! [`Output`](pipeline::output::Output) its events go to (sinks, or JSON lines on stdout).
//!
//! # Folders, from the front-ends down
//!
//! - Front-ends, one folder each, each with the `cmd` the binary calls:
//!   [`replay`] (finished logs, merged by log time), [`watch`] (live logs: inotify, signals,
//!   metrics, state), [`check`] (`check-config` and `test`: checking without acting),
//!   [`control`] (`bans`, `ban`, `unban`, `status`: the client, and the socket watch serves),
//!   [`lab`] (`generate`, `analyze`, `report`, `bench`); [`docgen`] writes the man pages and completions.
//! - [`pipeline`]: the compile step, the detector and the output every front-end shares;
//!   [`error`]: the crate's error type, the stages' errors kept whole up to the binary.
//! - Stages: [`source`] (paths, globs, reading, tailing, lines into hits), [`parse`] (a line's
//!   bytes into a borrowed `Record`, no allocation), [`proxy`] (the real client behind trusted
//!   proxies), [`engine`] (rules, shards, `limit_req` buckets), [`decide`] (the decider and the
//!   ban table), [`sink`] (one file per sink, the machinery they run on in `sink::runtime`),
//!   [`fleet`] (bans shared between servers through Redis).
//! - [`config`] and [`cli`] check input at the edge; the rest never sees raw input.
//! - Leaf utilities: [`addr`], [`hit`], [`vhost`], [`clock`] (the wall clock, which never moves
//!   a line's time), [`conns`], [`state_file`], [`state_lock`], [`atomic_file`],
//!   [`small_file`], [`logging`], [`sys`].
//!
//! Every module imports only its own layer and those below it, with no import loop between
//! files: `tests/layers.rs` holds the order and fails on a break.
//!
//! # Time
//!
//! Buckets run on log time, in replay and in watch, so that watch bans what replay bans on the
//! final files whatever the delivery schedule; the wall clock only ends bans and bounds waits.
//! The rules (watermark, late lines, settled time): see docs/design.md (Time).
//!
//! # Threads
//!
//! - Replay: producer threads (`producer-N`, one per CPU) read and parse; shard threads
//!   (`shard-N`) own their keys, no locks; a decider thread drives the detector's decider and
//!   the output.
//! - Watch: one loop thread owns the files (tailers, parser, the router: the shards' only
//!   producer), the decider, the ban table, the output, the metrics endpoint and the control
//!   socket, waiting in mio; shard threads as in replay; the detector's relay thread
//!   (`watch-relay`) wakes the loop with shard output.
//! - Bench: replay as above; its live part runs watch itself, in process.
//! - Sinks: one thread each (`sink-N`), fed through bounded queues by whoever decides.
//! - Fleet (watch with `[fleet]`): a publisher thread (`fleet-publish`) sending what the loop
//!   queues, and a follower thread (`fleet-follow`) reading the stream and waking the loop, which
//!   applies what it read; neither ever makes the loop wait. With a `scope = "fleet"` rule, a
//!   counting thread (`fleet-count`) takes the hits of fleet rules the loop hands over and
//!   exchanges the counts with Redis once per window, handing offenses back the same way.

// System calls go through rustix and nix; the `unsafe` left is the parser's SIMD quote scan and
// replay's mapped reading (`source::mapped`), each allowed where it stands with its safety proof.
#![deny(unsafe_code)]

pub mod addr;
pub mod atomic_file;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conns;
pub mod control;
pub mod decide;
pub mod docgen;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod hit;
pub mod lab;
pub mod logging;
pub mod parse;
pub mod pipeline;
pub mod proxy;
pub mod replay;
pub mod sink;
pub mod small_file;
pub mod source;
pub mod state_file;
pub mod state_lock;
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
