//! The detector: the shard threads that own the keys' `limit_req` buckets, the decider that
//! merges their offenses by log time, and the ban table that bans, escalates, allowlists and
//! expires. It is the one pipeline every front-end drives — replay, watch and bench —
//! so that what decides a ban, and at what time a late line counts (see `engine::shard`), lives
//! in one place whatever feeds it.
//!
//! Producers feed it through [`Router`]s ([`Detector::router`], or the raw senders for replay's
//! merge, which builds one router per producer thread); whoever runs the decider drives it:
//! replay and bench until the shards finish ([`Detector::decide_all`], on a thread of their
//! own), watch message by message from its event loop ([`Detector::decide_ready`], woken by
//! [`Detector::wake_on_output`]). Events go to a callback: the caller's output.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::addr::Cidr;
use crate::config::Config;
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::decider::{DecideStats, Decider};
use crate::decide::Event;
use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::engine::{RuleSpec, ShardMsg, ShardOut, ShardStats};
use crate::error::Error;
use crate::proxy::Proxies;
use crate::vhost::Vhosts;

/// Shard output the decider has not taken yet, before producers wait: bounded, so that a
/// decider that falls behind slows the shards rather than filling memory.
const OUTPUT_QUEUE: usize = 16 * 1024;

/// What a detector is made of.
pub struct DetectorSpec<'a> {
    pub rules: Arc<CompiledRules>,
    /// The rules as configured (lengths, escalation, names for events), in `rules`' order.
    pub specs: &'a [RuleSpec],
    /// Ranges never banned: the configured allowlist and the trusted proxies.
    pub allow: Vec<Cidr>,
    /// Names vhost ids in events; shared with the parsers.
    pub vhosts: Vhosts,
    pub shards: usize,
    /// Producers that will each finish their router (replay: one per reading thread).
    pub producers: usize,
    /// How far behind its low mark a producer may still send hits (replay's `[input]
    /// lateness`; watch folds it into its marks and passes 0).
    pub lateness_ms: i64,
    /// `[engine] max_keys`.
    pub max_keys: u64,
    /// Decide offenses at the shards' watermark at once (watch; see [`Decider::eager`]).
    pub eager: bool,
}

impl<'a> DetectorSpec<'a> {
    /// What `config` asks for: its rules, its allowlist with the trusted proxies, one shard per
    /// CPU unless `[engine] shards` says otherwise, its key cap, `[input] lateness`, and one
    /// producer (replay sets its own count; watch folds the lateness into its marks).
    pub fn from_config(
        config: &'a Config,
        rules: Arc<CompiledRules>,
        proxies: &Proxies,
        vhosts: Vhosts,
    ) -> DetectorSpec<'a> {
        DetectorSpec {
            rules,
            specs: &config.rules,
            allow: never_banned(config, proxies),
            vhosts,
            shards: config.engine.shard_count(),
            producers: 1,
            lateness_ms: i64::try_from(config.input.lateness_ms).unwrap_or(i64::MAX),
            max_keys: config.engine.max_keys,
            eager: false,
        }
    }
}

/// The ranges never banned: the configured allowlist, and the trusted proxies, whatever they
/// send (a proxy's own address stands for everyone behind it).
pub fn never_banned(config: &Config, proxies: &Proxies) -> Vec<Cidr> {
    [&config.allow[..], proxies.ranges()].concat()
}

pub struct Detector {
    /// Until a producer takes them.
    senders: Vec<Sender<ShardMsg>>,
    shard_threads: Vec<JoinHandle<()>>,
    output: Receiver<ShardOut>,
    decider: Decider,
    table: BanTable,
    route_prefixes: (u8, u8),
}

impl Detector {
    /// Starts the shard threads. Fails when the OS refuses a thread.
    pub fn start(spec: DetectorSpec) -> Result<Detector, Error> {
        Detector::spawn(spec).map_err(|source| Error::Thread {
            what: "shard threads",
            source,
        })
    }

    fn spawn(spec: DetectorSpec) -> io::Result<Detector> {
        let shards = spec.shards.max(1);
        let cfg = ShardConfig {
            shards,
            producers: spec.producers.max(1),
            lateness_ms: spec.lateness_ms.max(0),
            max_keys: usize::try_from(spec.max_keys).unwrap_or(usize::MAX),
        };
        let (tx, output) = crossbeam_channel::bounded(OUTPUT_QUEUE);
        let (senders, shard_threads) = spawn_shards(&cfg, spec.rules.clone(), tx)?;
        let decider = match spec.eager {
            true => Decider::new(shards).eager(),
            false => Decider::new(shards),
        };
        Ok(Detector {
            senders,
            shard_threads,
            output,
            decider,
            table: BanTable::new(spec.specs, Allowlist::new(spec.allow), spec.vhosts),
            route_prefixes: spec.rules.route_prefixes(),
        })
    }

    /// The shards' senders, for producers that build their own routers; the detector keeps
    /// none, so the shards end once every producer is done or gone.
    pub fn take_senders(&mut self) -> Vec<Sender<ShardMsg>> {
        std::mem::take(&mut self.senders)
    }

    /// A router for a single producer (id 0): it takes the shards' senders.
    pub fn router(&mut self) -> Router {
        Router::new(self.take_senders(), 0, self.route_prefixes)
    }

    /// Has `waker` woken whenever shard output arrives, for a caller that waits in mio (watch):
    /// a relay thread forwards the output and wakes it. Without the thread (the OS refused it)
    /// the output is still read, at the caller's next timeout.
    pub fn wake_on_output(&mut self, waker: Arc<mio::Waker>) {
        let (tx, relayed) = crossbeam_channel::unbounded();
        let rx = self.output.clone();
        let spawned = std::thread::Builder::new()
            .name("watch-relay".into())
            .spawn(move || {
                for msg in rx {
                    if tx.send(msg).is_err() {
                        break;
                    }
                    let _ = waker.wake();
                }
            });
        match spawned {
            Ok(_) => self.output = relayed,
            Err(e) => log::error!("cannot start the relay thread: {e}"),
        }
    }

    /// Decides what the shards have reported so far, without waiting.
    pub fn decide_ready(&mut self, emit: &mut dyn FnMut(&Event)) {
        while let Ok(msg) = self.output.try_recv() {
            self.decider.handle(msg, &mut self.table, emit);
        }
    }

    /// Decides until every shard has finished (their producers are done), then joins them.
    pub fn decide_all(&mut self, emit: &mut dyn FnMut(&Event)) -> DecideStats {
        let stats = self.decider.run(&self.output, &mut self.table, emit);
        for h in self.shard_threads.drain(..) {
            let _ = h.join();
        }
        stats
    }

    /// At a stop, after the producers finished: decides what the shards hand over within
    /// `wait`, then everything still buffered; joins the shards that have finished.
    pub fn finish_within(&mut self, wait: Duration, emit: &mut dyn FnMut(&Event)) {
        let deadline = Instant::now() + wait;
        while !self.decider.is_done() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(msg) => self.decider.handle(msg, &mut self.table, emit),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.decider.finish(&mut self.table, emit);
        if self.decider.is_done() {
            for h in self.shard_threads.drain(..) {
                let _ = h.join();
            }
        }
    }

    /// Ends the bans that are over at `now_ms` (watch: the wall clock).
    pub fn expire(&mut self, now_ms: i64, emit: &mut dyn FnMut(&Event)) {
        for u in self.table.expire(now_ms) {
            emit(&Event::Unban(u));
        }
    }

    pub fn table(&self) -> &BanTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut BanTable {
        &mut self.table
    }

    /// The shards' latest counters, summed, while they run.
    pub fn live_stats(&self) -> ShardStats {
        self.decider.live_stats()
    }

    /// The shards' final counters, summed, once they have all finished.
    pub fn shard_stats(&self) -> ShardStats {
        self.decider.shard_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::engine::rule::tests::spec;
    use crate::hit::Hit;

    fn detector(producers: usize) -> Detector {
        let specs = [RuleSpec {
            ban_ms: 60_000,
            ..spec("r", 1000, 1)
        }];
        Detector::start(DetectorSpec {
            rules: Arc::new(CompiledRules::new(&specs).unwrap()),
            specs: &specs,
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            vhosts: Vhosts::new(),
            shards: 2,
            producers,
            lateness_ms: 0,
            max_keys: 1000,
            eager: false,
        })
        .unwrap()
    }

    fn hit(addr: &str, time_ms: i64) -> Hit {
        Hit {
            addr: Addr::parse(addr.as_bytes()).unwrap(),
            time_ms,
            vhost: 0,
            rules: 1,
            flags: 0,
        }
    }

    fn keys(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Ban(b) => format!("ban {}", b.key.net),
                Event::Unban(u) => format!("unban {}", u.key.net),
            })
            .collect()
    }

    #[test]
    fn a_router_feeds_it_and_the_decider_bans_all_but_the_allowlist() {
        let mut d = detector(1);
        let mut r = d.router();
        for a in ["192.0.2.1", "127.0.0.1"] {
            for t in [0, 1, 2] {
                r.push(hit(a, t));
            }
        }
        r.finish();
        let mut events = vec![];
        let stats = d.decide_all(&mut |e| events.push(e.clone()));
        assert_eq!(keys(&events), ["ban 192.0.2.1"]);
        assert_eq!(
            (stats.bans, stats.allowlisted, stats.shards.hits),
            (1, 1, 6)
        );
        let mut later = vec![];
        d.expire(60_002, &mut |e| later.push(e.clone()));
        assert_eq!(keys(&later), ["unban 192.0.2.1"]);
    }

    #[test]
    fn message_by_message_then_a_stop_decides_what_is_left() {
        let mut d = detector(1);
        let mut r = d.router();
        for t in [0, 1, 2] {
            r.push(hit("192.0.2.9", t));
        }
        r.flush(0);
        let mut events = vec![];
        d.decide_ready(&mut |e| events.push(e.clone()));
        r.finish();
        d.finish_within(Duration::from_secs(5), &mut |e| events.push(e.clone()));
        assert_eq!(keys(&events), ["ban 192.0.2.9"]);
        assert_eq!(d.shard_stats().hits, 3);
        assert!(d.table().is_banned(
            &crate::engine::Key {
                net: "192.0.2.9".parse().unwrap(),
                vhost: crate::hit::NO_VHOST
            },
            0
        ));
    }
}
