//! The fleet: bans shared between servers through Redis (`[fleet]`). A ban decided on one
//! server is enforced on every server of the fleet within about a second, and no server's
//! detection ever waits on the network.
//!
//! Each `watch` runs two threads of its own beside the loop:
//! - the **publisher** (`fleet-publish`, module `publisher`) sends this server's own bans and its
//!   admins' unbans, taken from a bounded queue (module `outbox`) that the loop fills without
//!   waiting, to a Redis stream and to the fleet's table of active bans;
//! - the **follower** (`fleet-follow`, module `follower`) reads the stream from the last entry
//!   this server applied and hands the other servers' messages to the loop through a channel
//!   and the loop's waker.
//!
//! The loop applies them ([`Fleet::apply_ready`]): a remote ban becomes a ban of the pseudo-rule
//! `fleet` in the ban table (one per key, whatever node banned it), refused for a key the
//! allowlist covers, its end clipped to [`MAX_REMOTE_BAN_MS`] from now; it goes only to the
//! sinks `apply_to` names (nginx and exec by default, never Cloudflare unless named), ends at
//! its own `until` whether Redis is there or not, survives restarts with the other bans, and is
//! never published again. A remote unban (an admin's) lifts the key here as `floodwatch unban`
//! would. Redis away is normal: messages wait in the outbox (saved with the last entry id in
//! `fleet.json`, module `state`) and go out when it is back; the follower catches up from its
//! last entry.

pub mod counting;
mod follower;
pub mod link;
pub mod message;
mod outbox;
mod publisher;
pub mod state;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;

use crate::config;
use crate::decide::ban_table::{BanTable, RemoteBan, RemoteOutcome};
use crate::decide::Event;
use crate::state_file::StateFileError;

use message::{Kind, Message};
use outbox::Outbox;

/// The longest a remote ban may last from when it arrives (its `until` is clipped to this): a
/// node's clock or a stranger's entry must not ban an address for years.
pub const MAX_REMOTE_BAN_MS: i64 = 30 * 86_400_000;
/// Messages the outbox holds while Redis is away before new ones are dropped (and counted).
const OUTBOX_CAPACITY: usize = 100_000;
/// About how many entries the stream keeps (`XADD MAXLEN ~`): hours of a busy fleet's bans,
/// so that a node cut off that long resumes where it was.
const STREAM_MAX_LEN: usize = 1_000_000;
/// How long a stop gives the publisher to send what is queued (the rest is saved).
const STOP_WAIT: Duration = Duration::from_millis(300);

/// Connects to the fleet's Redis and asks it `PING` (for `check-config`): why it cannot be
/// reached or does not answer, with the URL's password hidden.
pub fn probe(cfg: &config::Fleet) -> Result<(), ProbeError> {
    let fail = |source| ProbeError {
        url: cfg.redacted_url(),
        source,
    };
    let client = redis::Client::open(cfg.url.as_str()).map_err(fail)?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(fail)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(fail)?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(fail)?;
    Ok(())
}

/// Why [`probe`] found the fleet's Redis unreachable; `url` with its password hidden.
#[derive(Debug, thiserror::Error)]
#[error("{url}: cannot reach Redis: {source}")]
pub struct ProbeError {
    pub url: String,
    pub source: redis::RedisError,
}

/// Why the fleet cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The Redis client cannot be built from `[fleet]` (its TLS files): the key and why.
    #[error("{key}: {why}")]
    Client { key: &'static str, why: String },
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
}

/// Where things are in Redis.
pub struct Names {
    pub node: Arc<str>,
    pub stream: String,
    /// The hash of active bans: `<stream>:bans`.
    pub bans: String,
    pub max_len: usize,
}

/// What the threads and the loop share: counters and the stop flag.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub published: AtomicU64,
    pub malformed: AtomicU64,
    pub reconnects: Arc<AtomicU64>,
    pub publisher_up: Arc<AtomicBool>,
    pub follower_up: Arc<AtomicBool>,
    pub publisher_trouble: Arc<Mutex<Option<link::LinkTrouble>>>,
    pub follower_trouble: Arc<Mutex<Option<link::LinkTrouble>>>,
}

/// What the follower hands the loop.
pub enum Inbound {
    /// A stream entry of another node.
    Entry { id: String, msg: Message },
    /// A stream entry with nothing to apply (this node's own, or not a valid message).
    Seen { id: String },
    /// An entry of the active-ban table, read at (re)connection.
    Active(Message),
    /// The whole active-ban table, read again a while after a (re)connection (see
    /// `follower`): other nodes' bans held here that it lacks are ended.
    Table(Vec<Message>),
}

/// The handle [`crate::pipeline::output::Output`] publishes through: queues this server's own events,
/// never waits.
#[derive(Clone)]
pub struct Publish {
    node: Arc<str>,
    outbox: Arc<Outbox>,
}

impl Publish {
    /// Queues what of `ev` the fleet hears (see [`Message::of_local`]).
    pub fn event(&self, ev: &Event) {
        if let Some(m) = Message::of_local(ev, &self.node) {
            self.outbox.push(m);
        }
    }
}

/// The fleet's counts since start, as metrics and `status` (whose JSON has them in this
/// order) both show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FleetCounts {
    pub published: u64,
    /// Waiting in the outbox.
    pub queued: u64,
    /// Dropped because the outbox was full.
    pub dropped: u64,
    pub reconnects: u64,
    /// Other nodes' bans and unbans that changed something here.
    pub applied: u64,
    /// Nothing to do here: already enforced (the same ban again, a ban here lasting as long),
    /// already over, or an unban of a key not banned here.
    pub duplicates: u64,
    /// Refused: allowlisted keys, entries that are not valid messages.
    pub refused: u64,
}

/// The fleet's counters, for metrics and `status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetStats {
    pub node: String,
    /// Both threads have a connection now.
    pub connected: bool,
    pub counts: FleetCounts,
    /// From a message's publication to its application here, milliseconds: the last one, and
    /// the 50th and 99th percentiles since start.
    pub lag_last_ms: u64,
    pub lag_p50_ms: u64,
    pub lag_p99_ms: u64,
    pub lag_count: u64,
    /// While a thread has no connection: since when, and the last error (the longer-running
    /// outage of the two threads).
    pub trouble: Option<link::LinkTrouble>,
    /// Fleet-wide counting, when a rule has `scope = "fleet"`.
    pub counting: Option<counting::CountingStats>,
}

/// The oldest of the threads' troubles.
fn trouble_of(links: &[&Mutex<Option<link::LinkTrouble>>]) -> Option<link::LinkTrouble> {
    let now = links.iter().filter_map(|m| m.lock().ok()?.clone());
    now.min_by_key(|t| t.since_ms)
}

/// The watch loop's part of the fleet.
pub struct Fleet {
    node: Arc<str>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    inbound: Receiver<Inbound>,
    publisher: Option<JoinHandle<()>>,
    /// The publisher's connections so far, and their count at the last refresh.
    publisher_connects: Arc<AtomicU64>,
    refreshed_at: u64,
    last_id: Option<String>,
    /// (last id, outbox stamp) when `fleet.json` was last written.
    saved: Option<(Option<String>, u64)>,
    applied: u64,
    duplicates: u64,
    refused: u64,
    lag: Histogram<u64>,
    lag_last_ms: u64,
    /// Fleet-wide counting, with the rules it was started for (config order).
    counting: Option<(counting::Counting, Vec<crate::engine::RuleSpec>)>,
    /// What counting was first started with, to start it again after a reload changes the rules.
    counting_base: Option<CountingBase>,
}

/// The `[fleet]` in force (a reload applies its counted rules, not its connection) and what the
/// counting thread needs of the loop.
struct CountingBase {
    cfg: config::Fleet,
    vhosts: crate::vhost::Vhosts,
    waker: Arc<mio::Waker>,
}

impl Fleet {
    /// Starts the publisher and the follower for `cfg`, from what the last run saved; the
    /// follower wakes the loop through `waker`. Fails only when a thread cannot start.
    pub fn start(
        cfg: &config::Fleet,
        saved: state::Saved,
        waker: Arc<mio::Waker>,
    ) -> Result<Fleet, FleetError> {
        let node: Arc<str> = Arc::from(cfg.node.as_str());
        let names = Arc::new(Names {
            node: node.clone(),
            stream: cfg.stream.clone(),
            bans: format!("{}:bans", cfg.stream),
            max_len: STREAM_MAX_LEN,
        });
        let shared = Arc::new(Shared::default());
        let outbox = Arc::new(Outbox::new(OUTBOX_CAPACITY, saved.unpublished));
        if outbox.len() > 0 {
            log::info!(
                "fleet: {} messages of the last run to publish",
                outbox.len()
            );
        }
        let link = |what, up: &Arc<AtomicBool>, trouble: &Arc<Mutex<_>>| {
            link::Link::new(
                cfg,
                what,
                up.clone(),
                trouble.clone(),
                shared.reconnects.clone(),
            )
        };
        let publisher_link = link("publisher", &shared.publisher_up, &shared.publisher_trouble)?;
        let publisher_connects = publisher_link.connects.clone();
        let publisher = publisher::Publisher {
            link: publisher_link,
            outbox: outbox.clone(),
            names: names.clone(),
            shared: shared.clone(),
        };
        let (tx, inbound) = crossbeam_channel::unbounded();
        let follower = follower::Follower {
            link: link("follower", &shared.follower_up, &shared.follower_trouble)?,
            names,
            shared: shared.clone(),
            cursor: saved.last_id.clone(),
            tx,
            waker,
            reported_malformed: false,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| FleetError::Thread {
                    name: name.to_string(),
                    source,
                })
        };
        let publisher = spawn("fleet-publish", Box::new(move || publisher.run()))?;
        // Not joined at stop: it may be blocked in a read for up to a second, and holds
        // nothing to save (the loop keeps the last id it applied).
        spawn("fleet-follow", Box::new(move || follower.run()))?;
        log::info!(
            "fleet: node {node}, stream {} on {}",
            cfg.stream,
            cfg.redacted_url()
        );
        Ok(Fleet {
            node,
            outbox,
            shared,
            inbound,
            publisher: Some(publisher),
            publisher_connects,
            refreshed_at: 0,
            last_id: saved.last_id,
            saved: None,
            applied: 0,
            duplicates: 0,
            refused: 0,
            lag: Histogram::new_with_bounds(1, 3_600_000, 3)
                .unwrap_or_else(|_| unreachable!("constant, valid bounds")),
            lag_last_ms: 0,
            counting: None,
            counting_base: None,
        })
    }

    /// Starts counting the rules `cfg` counts fleet-wide (of `specs`, in config order, whose
    /// offenses carry `ids`); returns the rule bits whose hits to hand over ([`Fleet::count`]),
    /// 0 when no rule is counted fleet-wide.
    pub fn start_counting(
        &mut self,
        cfg: &config::Fleet,
        specs: &[crate::engine::RuleSpec],
        ids: &[u16],
        vhosts: crate::vhost::Vhosts,
        waker: Arc<mio::Waker>,
    ) -> Result<crate::hit::RuleMask, FleetError> {
        let base = CountingBase {
            cfg: cfg.clone(),
            vhosts,
            waker,
        };
        let started =
            counting::Counting::start(cfg, specs, ids, base.vhosts.clone(), base.waker.clone());
        self.counting_base = Some(base);
        let Some(c) = started? else {
            return Ok(0);
        };
        let mask = c.mask();
        self.counting = Some((c, specs.to_vec()));
        Ok(mask)
    }

    /// After a reload: the rule bits to hand over. Counting goes on as it was while the rules
    /// are those it counts; otherwise it starts again for the reloaded rules (the connection
    /// stays the `[fleet]` in force: a change there waits for a restart), counting from the
    /// current window as a server that joins late does. Every server must count a rule alike:
    /// until all of them have reloaded, the fleet's totals mix the old limits' servers with the
    /// new ones', each judging with its own.
    pub fn rules_reloaded(
        &mut self,
        reloaded: Option<&config::Fleet>,
        specs: &[crate::engine::RuleSpec],
        ids: &[u16],
    ) -> crate::hit::RuleMask {
        let Some(base) = &self.counting_base else {
            return 0;
        };
        let counted = reloaded.map_or_else(Vec::new, |f| f.counted_rules.clone());
        if let Some((c, started)) = &self.counting {
            if started.as_slice() == specs && base.cfg.counted_rules == counted {
                return c.mask();
            }
            c.stop();
            self.counting = None;
        }
        let mut cfg = base.cfg.clone();
        let was_counting = !cfg.counted_rules.is_empty();
        cfg.counted_rules = counted;
        if cfg.counted_rules.is_empty() {
            if was_counting {
                log::info!("fleet: no rule is counted with the fleet any more");
            }
            if let Some(b) = &mut self.counting_base {
                b.cfg = cfg;
            }
            return 0;
        }
        let restarted =
            counting::Counting::start(&cfg, specs, ids, base.vhosts.clone(), base.waker.clone());
        let mask = match restarted {
            Ok(Some(c)) => {
                log::info!(
                    "fleet: counting started again for the reloaded rules ({}), from the current window",
                    cfg.counted_rules.join(", ")
                );
                let mask = c.mask();
                self.counting = Some((c, specs.to_vec()));
                mask
            }
            Ok(None) => 0, // no counted rule among `specs`: nothing to hand over
            Err(e) => {
                log::error!(
                    "fleet: counting cannot start again for the reloaded rules ({e}): the fleet \
                     rules count locally until a restart"
                );
                0
            }
        };
        if let Some(b) = &mut self.counting_base {
            b.cfg = cfg;
        }
        mask
    }

    /// Hands hits of fleet-counted rules to the counting thread.
    pub fn count(&mut self, hits: Vec<crate::hit::Hit>) {
        if let Some((c, _)) = &mut self.counting {
            c.count(hits);
        }
    }

    /// Decides the offenses fleet counting found, as this server's own (they are published).
    pub fn counted_ready(&mut self, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
        let Some((c, _)) = &self.counting else {
            return;
        };
        for o in c.offenses() {
            if let Some(ban) = table.offense(&o) {
                log::info!(
                    "fleet: {} over rule {} with {} requests across the fleet",
                    ban.key.net,
                    ban.rule,
                    o.requests
                );
                emit(&Event::Ban(ban));
            }
        }
    }

    /// The handle the output publishes through.
    pub fn publish_handle(&self) -> Publish {
        Publish {
            node: self.node.clone(),
            outbox: self.outbox.clone(),
        }
    }

    /// Applies what the follower handed over, without waiting; events for the sinks go to
    /// `emit` (which must not publish them again).
    pub fn apply_ready(&mut self, table: &mut BanTable, now_ms: i64, emit: &mut dyn FnMut(&Event)) {
        self.refresh_if_connected(table, now_ms);
        while let Ok(inbound) = self.inbound.try_recv() {
            match inbound {
                Inbound::Entry { id, msg } => {
                    self.last_id = Some(id);
                    self.record_lag(&msg, now_ms);
                    self.apply(msg, table, now_ms, emit);
                }
                Inbound::Seen { id } => self.last_id = Some(id),
                Inbound::Active(msg) => self.apply(msg, table, now_ms, emit),
                Inbound::Table(msgs) => self.reconcile(msgs, table, now_ms, emit),
            }
        }
    }

    /// Takes the fleet's table of active bans as read a while after a (re)connection: applies
    /// it like the table read at connection, then ends the other nodes' bans held here that it
    /// no longer has. Their unbans were published while this server could not read them and
    /// lost with them (a Redis restarted empty); the table is rebuilt by every node whose
    /// publisher is back, so what it lacks is lifted or belongs to a node that is away: ending
    /// it errs towards not banning.
    fn reconcile(
        &mut self,
        msgs: Vec<Message>,
        table: &mut BanTable,
        now_ms: i64,
        emit: &mut dyn FnMut(&Event),
    ) {
        let held: std::collections::HashSet<crate::addr::Cidr> = msgs
            .iter()
            .filter(|m| m.until_ms > now_ms)
            .map(|m| m.key)
            .collect();
        for m in msgs {
            self.apply(m, table, now_ms, emit);
        }
        let gone: Vec<(crate::addr::Cidr, String)> = table
            .active()
            .filter(|b| !held.contains(&b.key.net))
            .filter_map(|b| Some((b.key.net, b.origin.node()?.to_string())))
            .collect();
        for (net, node) in gone {
            if let Some(u) = table.end_remote(&net, now_ms) {
                log::info!(
                    "fleet: the ban of {net} from {node} is no longer in the fleet's table (lifted                      while this server could not hear it): ended here"
                );
                self.applied += 1;
                emit(&Event::Unban(u));
            }
        }
    }

    /// After each connection of the publisher, writes this server's own active bans into the
    /// fleet's table of active bans again: a Redis that restarted empty (no persistence) would
    /// otherwise not know them, and a node starting later would miss them.
    fn refresh_if_connected(&mut self, table: &BanTable, now_ms: i64) {
        let connects = self.publisher_connects.load(Ordering::Relaxed);
        if connects == self.refreshed_at {
            return;
        }
        self.refreshed_at = connects;
        let own = table
            .active()
            .filter(|b| b.origin.node().is_none() && b.until_ms > now_ms);
        for b in own {
            self.outbox.push(Message {
                kind: Kind::Refresh,
                node: self.node.clone(),
                key: b.key.net,
                rule: b.rule.clone(),
                time_ms: b.time_ms,
                until_ms: b.until_ms,
                sent_ms: 0,
            });
        }
    }

    fn record_lag(&mut self, m: &Message, now_ms: i64) {
        if m.sent_ms > 0 {
            let ms = u64::try_from(now_ms.saturating_sub(m.sent_ms)).unwrap_or(0);
            self.lag.saturating_record(ms);
            self.lag_last_ms = ms;
        }
    }

    fn apply(
        &mut self,
        m: Message,
        table: &mut BanTable,
        now_ms: i64,
        emit: &mut dyn FnMut(&Event),
    ) {
        match m.kind {
            // A refresh is never in the stream; one found there is taken as the ban it is.
            Kind::Ban | Kind::Refresh => {
                if m.until_ms <= now_ms {
                    self.duplicates += 1;
                    return;
                }
                let ban = RemoteBan {
                    net: m.key,
                    node: m.node.clone(),
                    time_ms: m.time_ms.min(now_ms),
                    until_ms: m.until_ms.min(now_ms.saturating_add(MAX_REMOTE_BAN_MS)),
                };
                match table.ban_remote(ban) {
                    RemoteOutcome::Banned(b) => {
                        self.applied += 1;
                        emit(&Event::Ban(b));
                    }
                    RemoteOutcome::Extended => self.applied += 1,
                    RemoteOutcome::Covered => self.duplicates += 1,
                    RemoteOutcome::Allowlisted => {
                        self.refused += 1;
                        log::info!(
                            "fleet: ban of {} from {} not taken: allowlisted here",
                            m.key,
                            m.node
                        );
                    }
                }
            }
            Kind::Unban => {
                let lifted = table.lift(&m.key, now_ms);
                if lifted.lifted.is_empty() {
                    self.duplicates += 1;
                }
                for (_, u) in &lifted.lifted {
                    self.applied += 1;
                    emit(&Event::Unban(u.clone()));
                }
                for b in &lifted.wider {
                    log::info!(
                        "fleet: {} lifted {} from {}, which a wider ban here ({}) still holds",
                        m.node,
                        m.key,
                        m.node,
                        b.key.net
                    );
                }
            }
        }
    }

    pub fn stats(&self) -> FleetStats {
        let s = &self.shared;
        FleetStats {
            node: self.node.to_string(),
            connected: s.publisher_up.load(Ordering::Relaxed)
                && s.follower_up.load(Ordering::Relaxed),
            counts: FleetCounts {
                published: s.published.load(Ordering::Relaxed),
                queued: self.outbox.len() as u64,
                dropped: self.outbox.dropped(),
                reconnects: s.reconnects.load(Ordering::Relaxed),
                applied: self.applied,
                duplicates: self.duplicates,
                refused: self.refused + s.malformed.load(Ordering::Relaxed),
            },
            lag_last_ms: self.lag_last_ms,
            lag_p50_ms: self.lag.value_at_quantile(0.5),
            lag_p99_ms: self.lag.value_at_quantile(0.99),
            lag_count: self.lag.len(),
            trouble: trouble_of(&[&s.publisher_trouble, &s.follower_trouble]),
            counting: self.counting.as_ref().map(|(c, _)| c.stats()),
        }
    }

    /// Writes `dir/fleet.json` when the last id or the outbox changed since the last save.
    pub fn save(&mut self, dir: &Path) -> Result<(), StateFileError> {
        let (unpublished, stamp) = self.outbox.contents();
        let now = (self.last_id.clone(), stamp);
        if self.saved.as_ref() == Some(&now) {
            return Ok(());
        }
        let saved = state::Saved {
            last_id: self.last_id.clone(),
            unpublished,
        };
        state::save(dir, &saved)?;
        self.saved = Some(now);
        Ok(())
    }

    /// Stops the threads: the publisher gets a moment to send what is queued; what it could
    /// not send stays in the outbox, for [`Fleet::save`].
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some((c, _)) = &self.counting {
            c.stop();
        }
        self.outbox.close();
        let deadline = Instant::now() + STOP_WAIT;
        if let Some(h) = self.publisher.take() {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let left = self.outbox.len();
        if left > 0 {
            log::warn!("fleet: {left} messages not published yet: kept for the next start");
        }
    }
}
