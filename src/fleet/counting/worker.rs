//! The counting thread (`fleet-count`): takes the hits of fleet rules the loop hands over,
//! counts them per key and window, and at each window's end (on Redis's clock) runs the
//! exchange; the offenses found go back to the loop, which decides them as its shards' own.
//!
//! With Redis away, an exchange fails: what it held is dropped (local counting, which never
//! stops, has every request), the outage is said once in the log and shown in `status` and
//! metrics, and connecting is tried again with a backoff. Once back, counting starts again from
//! the current window, as on a server that just joined.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::counter::Counter;
use super::redis_store::RedisStore;
use super::store::Store;
use super::Shared;
use crate::clock::wall_ms;
use crate::engine::Offense;
use crate::fleet::link::LinkTrouble;
use crate::hit::Hit;
use crate::vhost::Vhosts;

const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(2);
/// How often an idle counter checks that Redis is still there.
const IDLE_PING: Duration = Duration::from_secs(1);

pub struct Worker {
    pub counter: Counter,
    pub store: RedisStore,
    pub hits: Receiver<Vec<Hit>>,
    pub out: Sender<Offense>,
    pub waker: Arc<mio::Waker>,
    pub shared: Arc<Shared>,
    pub interval_ms: i64,
    pub vhosts: Vhosts,
    /// For the log.
    pub url: String,
}

impl Worker {
    pub fn run(mut self) {
        let mut down_since: Option<Instant> = None;
        let mut wait = FIRST_WAIT;
        let mut retry_at = Instant::now();
        let mut last_contact = Instant::now();
        match self.store.connect() {
            Ok(()) => self.up(),
            Err(e) => {
                self.down(&e, &mut down_since);
                retry_at = Instant::now() + wait;
            }
        }
        let now = self.window_now();
        self.counter.restart_at(now);
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if !self.take_hits_until_next_window() {
                return;
            }
            let now = self.window_now();
            if down_since.is_some() {
                self.counter.drop_pending();
                if Instant::now() < retry_at {
                    continue;
                }
                match self.store.connect() {
                    Ok(()) => {
                        if let Some(since) = down_since.take() {
                            log::warn!(
                                "fleet: counting: Redis at {} back after {:.1} s: fleet rules count \
                                 with the fleet again, from now on",
                                self.url,
                                since.elapsed().as_secs_f64()
                            );
                        }
                        wait = FIRST_WAIT;
                        self.up();
                        let now = self.window_now();
                        self.counter.restart_at(now);
                    }
                    Err(e) => {
                        self.down(&e, &mut down_since);
                        wait = (wait * 2).min(MAX_WAIT);
                        retry_at = Instant::now() + wait;
                    }
                }
                continue;
            }
            let before = self.store.traffic.commands;
            let mut result = self
                .counter
                .exchange(now, &mut self.store as &mut dyn Store);
            if result.is_ok() && self.store.traffic.commands != before {
                last_contact = Instant::now();
            } else if result.is_ok() && last_contact.elapsed() >= IDLE_PING {
                // Nothing to exchange: whether Redis is there is asked all the same, so that
                // `status` never shows fleet counting up on a Redis that is gone.
                last_contact = Instant::now();
                result = self.store.ping().map(|()| Vec::new());
            }
            self.publish_stats();
            match result {
                Ok(offenses) => {
                    self.shared.exchanges.fetch_add(1, Ordering::Relaxed);
                    if !offenses.is_empty() {
                        self.shared
                            .offenses
                            .fetch_add(offenses.len() as u64, Ordering::Relaxed);
                        for o in offenses {
                            if self.out.send(o).is_err() {
                                return;
                            }
                        }
                        let _ = self.waker.wake();
                    }
                }
                Err(e) => {
                    self.down(&e, &mut down_since);
                    wait = FIRST_WAIT;
                    retry_at = Instant::now() + wait;
                }
            }
        }
    }

    /// The current window on Redis's clock.
    fn window_now(&self) -> i64 {
        (wall_ms() + self.store.offset_ms()).div_euclid(self.interval_ms)
    }

    /// Counts the hits handed over until the current window ends; false when the loop is gone.
    fn take_hits_until_next_window(&mut self) -> bool {
        let offset = self.store.offset_ms();
        let next = ((wall_ms() + offset).div_euclid(self.interval_ms) + 1) * self.interval_ms;
        let vhosts = &self.vhosts;
        let names = |v| vhosts.name(v).map(|n| n.to_string());
        loop {
            let left = next - (wall_ms() + offset);
            if left <= 0 || self.shared.stop.load(Ordering::Relaxed) {
                return true;
            }
            let wait = Duration::from_millis(u64::try_from(left.min(50)).unwrap_or(50));
            match self.hits.recv_timeout(wait) {
                Ok(batch) => {
                    let now = (wall_ms() + offset).div_euclid(self.interval_ms);
                    for h in &batch {
                        let w = (h.time_ms.saturating_add(offset)).div_euclid(self.interval_ms);
                        self.counter.hit(h, w, now, &names);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn up(&self) {
        self.shared.up.store(true, Ordering::Relaxed);
        self.shared
            .cluster
            .store(self.store.is_cluster(), Ordering::Relaxed);
        self.shared
            .offset_ms
            .store(self.store.offset_ms(), Ordering::Relaxed);
        if let Ok(mut t) = self.shared.trouble.lock() {
            *t = None;
        }
    }

    fn down(&self, e: &str, down_since: &mut Option<Instant>) {
        self.shared.up.store(false, Ordering::Relaxed);
        if let Ok(mut t) = self.shared.trouble.lock() {
            let since_ms = t.as_ref().map_or_else(wall_ms, |t| t.since_ms);
            *t = Some(LinkTrouble {
                since_ms,
                error: e.to_string(),
            });
        }
        if down_since.is_none() {
            *down_since = Some(Instant::now());
            self.shared.fallbacks.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "fleet: counting: Redis at {} unreachable ({e}): fleet rules count this server's \
                 requests only until it is back",
                self.url
            );
        }
    }

    fn publish_stats(&self) {
        self.shared
            .offset_ms
            .store(self.store.offset_ms(), Ordering::Relaxed);
        if let Ok(mut s) = self.shared.counters.lock() {
            *s = (self.counter.stats(), self.store.traffic);
        }
    }
}
