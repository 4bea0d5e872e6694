//! One thread's connection to Redis, kept up: connects when there is none, and while Redis is
//! away waits between attempts (doubling from 100 ms to 2 s, so a restarted Redis is found
//! again within about two seconds). An outage is said once when it starts and once when it
//! ends, never per attempt or per event.
//!
//! The TLS files are read again at each connection, so a renewed client certificate or CA
//! (same paths) is used from the next reconnect on, without a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError};

const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command that takes longer is a Redis gone (a blocking read adds its own block time).
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a link is down, for `floodwatch status`: since when (wall clock) and the last error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTrouble {
    pub since_ms: i64,
    pub error: String,
}

pub struct Link {
    /// The URL (with any password) and the TLS files, read at each connection.
    cfg: crate::config::Fleet,
    /// For the log: which thread, and the URL without its password.
    what: &'static str,
    url: String,
    conn: Option<Connection>,
    wait: Duration,
    down_since: Option<Instant>,
    connected_once: bool,
    /// Whether this link is up now (for `status` and metrics).
    up: Arc<AtomicBool>,
    /// While it is down: since when and why (for `status`).
    trouble: Arc<Mutex<Option<LinkTrouble>>>,
    reconnects: Arc<AtomicU64>,
    /// Connections made, the first included.
    pub connects: Arc<AtomicU64>,
}

impl Link {
    pub fn new(
        cfg: &crate::config::Fleet,
        what: &'static str,
        up: Arc<AtomicBool>,
        trouble: Arc<Mutex<Option<LinkTrouble>>>,
        reconnects: Arc<AtomicU64>,
    ) -> Result<Link, super::FleetError> {
        // Refused here, before any thread starts, rather than at each connection.
        crate::config::fleet::client(&cfg.url, &cfg.tls)
            .map_err(|(key, why)| super::FleetError::Client { key, why })?;
        Ok(Link {
            cfg: cfg.clone(),
            what,
            url: cfg.redacted_url(),
            conn: None,
            wait: FIRST_WAIT,
            down_since: None,
            connected_once: false,
            up,
            trouble,
            reconnects,
            connects: Arc::default(),
        })
    }

    /// The connection, made if there is none; `None` while Redis cannot be reached (after
    /// waiting the backoff, or until `stop` is set).
    pub fn get(&mut self, read_timeout: Duration, stop: &AtomicBool) -> Option<&mut Connection> {
        if self.conn.is_none() {
            match self.connect(read_timeout) {
                Ok(c) => {
                    if let Some(since) = self.down_since.take() {
                        log::warn!(
                            "fleet: {}: connected again to {} after {:.1} s",
                            self.what,
                            self.url,
                            since.elapsed().as_secs_f64()
                        );
                    } else if !self.connected_once {
                        log::info!("fleet: {}: connected to {}", self.what, self.url);
                    }
                    if self.connected_once {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.connected_once = true;
                    self.connects.fetch_add(1, Ordering::Relaxed);
                    self.wait = FIRST_WAIT;
                    self.up.store(true, Ordering::Relaxed);
                    if let Ok(mut t) = self.trouble.lock() {
                        *t = None;
                    }
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.down(&e);
                    self.pause(stop);
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    fn connect(&self, read_timeout: Duration) -> Result<Connection, String> {
        let client: Client = crate::config::fleet::client(&self.cfg.url, &self.cfg.tls)
            .map_err(|(key, m)| format!("{key}: {m}"))?;
        let setup = || -> Result<Connection, RedisError> {
            let c = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            c.set_read_timeout(Some(read_timeout))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(c)
        };
        setup().map_err(|e| e.to_string())
    }

    /// A command failed: the connection is dropped and made again at the next [`Link::get`].
    pub fn failed(&mut self, e: &RedisError) {
        self.conn = None;
        self.down(e);
    }

    fn down(&mut self, e: &dyn std::fmt::Display) {
        self.up.store(false, Ordering::Relaxed);
        if let Ok(mut t) = self.trouble.lock() {
            let since_ms = t
                .as_ref()
                .map_or_else(crate::clock::wall_ms, |t| t.since_ms);
            *t = Some(LinkTrouble {
                since_ms,
                error: e.to_string(),
            });
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            log::warn!(
                "fleet: {}: Redis at {} unreachable ({e}); detection and local bans go on, \
                 trying again every {} s at most",
                self.what,
                self.url,
                MAX_WAIT.as_secs()
            );
        }
    }

    /// Waits the backoff (in small steps, so that a stop is seen), then doubles it.
    fn pause(&mut self, stop: &AtomicBool) {
        let until = Instant::now() + self.wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait = (self.wait * 2).min(MAX_WAIT);
    }
}
