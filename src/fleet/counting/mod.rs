//! Fleet-wide counting (`[[rule]] scope = "fleet"`): every server counts its own requests of a
//! fleet rule and exchanges the counts through Redis every `[fleet] count_interval`, so that a
//! flood spread by a load balancer over the servers is banned as if one server saw it all.
//!
//! - The loop's router copies the hits of fleet rules aside (one mask test per hit; none when
//!   no rule is fleet-wide), and each round hands them to the counting thread ([`Counting`]).
//! - The thread (`fleet-count`, module `worker`) counts them per key and window of Redis's
//!   clock and runs one exchange per window (module `counter`: the pipeline, the keys near
//!   their limit read back; module `window`: nginx's arithmetic on the fleet's counts; module
//!   `redis_store`: one server or a Redis Cluster, module `slot`).
//! - The offenses it finds come back to the loop, which decides them as the shards' own: the
//!   ban is this server's, published to the fleet by the existing path.
//!
//! The rule's local buckets keep counting beside it: a local overflow is also an overflow of
//! the fleet's merged requests (it holds this server's), so it bans as before, and with Redis
//! away nothing local is lost. Fleet counting only adds the bans the merged counts call for.

pub mod counter;
pub mod redis_store;
pub mod slot;
pub mod store;
pub mod window;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::engine::{Offense, RuleSpec};
use crate::fleet::link::LinkTrouble;
use crate::hit::{Hit, RuleMask};
use crate::vhost::Vhosts;

/// Batches of hits waiting for the counting thread; beyond, a batch is dropped (and counted):
/// the thread is stuck on a Redis that does not answer, and local counting has every hit.
const QUEUE_BATCHES: usize = 256;
/// Windows read back: a server may ship a window's counts up to this many windows late (a slow
/// read, a busy Redis) and still have them counted.
const LOOKBACK_MS: u64 = 2000;
/// Hash-tag groups: the keys' spread over a cluster's nodes.
const GROUPS: u32 = 16;

/// What the loop and the counting thread share.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Exchanging with Redis now.
    pub up: AtomicBool,
    pub cluster: AtomicBool,
    /// Redis's clock minus this server's, milliseconds, as last measured.
    pub offset_ms: std::sync::atomic::AtomicI64,
    pub trouble: Mutex<Option<LinkTrouble>>,
    pub exchanges: AtomicU64,
    pub offenses: AtomicU64,
    /// Outages: times fleet rules fell back to local counting.
    pub fallbacks: AtomicU64,
    pub counters: Mutex<(counter::CounterStats, redis_store::Traffic)>,
}

/// Fleet counting as `status` and metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountingStats {
    /// The rules counted fleet-wide.
    pub rules: Vec<String>,
    /// `fleet` while the counts are exchanged, `local` while Redis is away (the rules count
    /// this server's requests only).
    pub mode: String,
    pub cluster: bool,
    /// Redis's clock minus this server's, milliseconds (windows are numbered on Redis's).
    pub clock_offset_ms: i64,
    pub interval_ms: u64,
    pub exchanges: u64,
    pub offenses: u64,
    pub fallbacks: u64,
    /// Requests counted towards fleet rules (one per rule).
    pub counted: u64,
    /// Requests too old for the windows still exchanged (a backlog), and batches the thread
    /// had no room for: both left to local counting.
    pub too_old: u64,
    pub dropped_batches: u64,
    pub keys: u64,
    /// Requests of new keys beyond the counter's key cap, left to local counting.
    pub refused_keys: u64,
    pub commands: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// While Redis is away: since when (wall clock ms) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The loop's side of fleet counting.
pub struct Counting {
    mask: RuleMask,
    rules: Vec<String>,
    interval_ms: u64,
    tx: Sender<Vec<Hit>>,
    offenses: Receiver<Offense>,
    shared: Arc<Shared>,
    dropped_batches: u64,
}

impl Counting {
    /// Starts the counting thread for the rules of `specs` that `cfg` counts fleet-wide (`ids`:
    /// their ids in offenses); `None` when there is none.
    pub fn start(
        cfg: &crate::config::Fleet,
        specs: &[RuleSpec],
        ids: &[u16],
        vhosts: Vhosts,
        waker: Arc<mio::Waker>,
    ) -> Result<Option<Counting>, super::FleetError> {
        let rules: Vec<counter::CountRule> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| cfg.counted_rules.contains(&s.name))
            .map(|(i, s)| {
                let id = ids.get(i).copied().unwrap_or(i as u16);
                counter::CountRule::new(i as u8, id, s, cfg.count_interval_ms)
            })
            .collect();
        if rules.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let interval_ms = cfg.count_interval_ms.max(1);
        let settings = counter::Settings {
            interval_ms,
            lookback: i64::try_from(LOOKBACK_MS.div_ceil(interval_ms).max(2)).unwrap_or(2),
            groups: GROUPS,
            prefix: cfg.stream.clone(),
        };
        let counter = counter::Counter::new(rules, settings);
        let mask = counter.mask();
        let store = redis_store::RedisStore::new(cfg)
            .map_err(|(key, why)| super::FleetError::Client { key, why })?;
        let shared = Arc::new(Shared::default());
        let (tx, hits) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (out, offenses) = crossbeam_channel::unbounded();
        let w = worker::Worker {
            counter,
            store,
            hits,
            out,
            waker,
            shared: shared.clone(),
            interval_ms: i64::try_from(interval_ms).unwrap_or(200),
            vhosts,
            url: cfg.redacted_url(),
        };
        std::thread::Builder::new()
            .name("fleet-count".into())
            .spawn(move || w.run())
            .map_err(|source| super::FleetError::Thread {
                name: "fleet-count".into(),
                source,
            })?;
        log::info!(
            "fleet: rules counted with the whole fleet every {interval_ms} ms: {}",
            names.join(", ")
        );
        Ok(Some(Counting {
            mask,
            rules: names,
            interval_ms,
            tx,
            offenses,
            shared,
            dropped_batches: 0,
        }))
    }

    /// The rule bits counted fleet-wide: the hits the router copies aside.
    pub fn mask(&self) -> RuleMask {
        self.mask
    }

    /// Hands hits of fleet rules to the counting thread, without waiting.
    pub fn count(&mut self, hits: Vec<Hit>) {
        if hits.is_empty() {
            return;
        }
        match self.tx.try_send(hits) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_batches += 1;
            }
        }
    }

    /// The offenses the fleet's counts showed since the last call.
    pub fn offenses(&self) -> impl Iterator<Item = Offense> + '_ {
        self.offenses.try_iter()
    }

    pub fn stats(&self) -> CountingStats {
        let s = &self.shared;
        let (c, t) = s.counters.lock().map(|g| *g).unwrap_or_default();
        let trouble = s.trouble.lock().ok().and_then(|t| t.clone());
        let up = s.up.load(Ordering::Relaxed);
        CountingStats {
            rules: self.rules.clone(),
            mode: if up { "fleet" } else { "local" }.into(),
            cluster: s.cluster.load(Ordering::Relaxed),
            clock_offset_ms: s.offset_ms.load(Ordering::Relaxed),
            interval_ms: self.interval_ms,
            exchanges: s.exchanges.load(Ordering::Relaxed),
            offenses: s.offenses.load(Ordering::Relaxed),
            fallbacks: s.fallbacks.load(Ordering::Relaxed),
            counted: c.counted,
            too_old: c.too_old,
            dropped_batches: self.dropped_batches,
            keys: c.keys,
            refused_keys: c.refused,
            commands: t.commands,
            bytes_out: t.bytes_out,
            bytes_in: t.bytes_in,
            local_since_ms: trouble.as_ref().filter(|_| !up).map(|t| t.since_ms),
            last_error: trouble.filter(|_| !up).map(|t| t.error),
        }
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}
