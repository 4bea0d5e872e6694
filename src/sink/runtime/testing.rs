//! Test fixtures shared by the runner's unit tests (`runner`, `feed`, `worker`, `reload`): a
//! probe sink that records what it gets and can be made to fail or hang, ban and unban events,
//! and one running probe behind [`Sinks`] to drive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::feed::Feed;
use crate::decide::{Ban, Event, Unban};
use crate::engine::Key;
use crate::hit::NO_VHOST;
use crate::sink::jsonl::JsonlConfig;
use crate::sink::{Common, Sink, SinkError, SinkKind, SinkSpec, Sinks};

/// A sink recording what it gets, failing while `down` is set, blocking while `stuck`.
pub(super) struct Probe {
    pub(super) got: Arc<Mutex<Vec<String>>>,
    pub(super) down: Arc<AtomicBool>,
    pub(super) stuck: Arc<AtomicBool>,
    pub(super) refuse: bool,
}

impl Sink for Probe {
    fn restore(&mut self, active: &[Ban]) -> Result<(), SinkError> {
        let keys: Vec<String> = active.iter().map(|b| b.key.net.to_string()).collect();
        let line = format!("restore {}", keys.join(","));
        self.got.lock().unwrap().push(line);
        Ok(())
    }

    fn deliver(&mut self, ev: &Event) -> Result<(), SinkError> {
        while self.stuck.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.refuse {
            return Err(SinkError::refused("no"));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable("down"));
        }
        let line = match ev {
            Event::Ban(b) => format!("ban {}", b.key.net),
            Event::Unban(u) => format!("unban {}", u.key.net),
        };
        self.got.lock().unwrap().push(line);
        Ok(())
    }
}

pub(super) fn ban(ip: &str, via_proxy: bool) -> Event {
    Event::Ban(Ban {
        time_ms: 0,
        key: Key {
            net: ip.parse().unwrap(),
            vhost: NO_VHOST,
        },
        rule: Arc::from("r"),
        vhost: None,
        rate: Arc::from("1r/s"),
        burst: 1,
        requests: 2,
        first_seen_ms: 0,
        ban_ms: 1000,
        until_ms: 1000,
        offense: 1,
        via_proxy,
        origin: Default::default(),
    })
}

pub(super) fn unban(ip: &str) -> Event {
    Event::Unban(Unban {
        time_ms: 1000,
        key: Key {
            net: ip.parse().unwrap(),
            vhost: NO_VHOST,
        },
        rule: Arc::from("r"),
        reason: Default::default(),
    })
}

/// One probe sink running behind `sinks`, and the handles that steer it.
pub(super) struct Setup {
    pub(super) sinks: Sinks,
    pub(super) got: Arc<Mutex<Vec<String>>>,
    pub(super) down: Arc<AtomicBool>,
    pub(super) stuck: Arc<AtomicBool>,
}

/// A spec for a test sink; `version` stands for its table's settings.
pub(super) fn spec(
    name: &str,
    version: i64,
    queue: usize,
    proxied: bool,
    give_up: Duration,
) -> SinkSpec {
    let mut source = toml::Table::new();
    source.insert("type".into(), toml::Value::String("probe".into()));
    source.insert("version".into(), toml::Value::Integer(version));
    SinkSpec {
        name: name.into(),
        common: Common {
            dry_run: false,
            proxied,
            queue_size: queue,
            retry_max_delay: Duration::from_millis(20),
            give_up_after: give_up,
        },
        kind: SinkKind::Jsonl(JsonlConfig { path: None }),
        source,
        fleet: false,
    }
}

pub(super) fn setup(queue: usize, proxied: bool, refuse: bool, give_up: Duration) -> Setup {
    let got = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(AtomicBool::new(false));
    let stuck = Arc::new(AtomicBool::new(false));
    let probe = Probe {
        got: got.clone(),
        down: down.clone(),
        stuck: stuck.clone(),
        refuse,
    };
    let feed = Feed::spawn(
        0,
        &spec("probe", 1, queue, proxied, give_up),
        Box::new(probe),
        &[],
    )
    .unwrap();
    Setup {
        sinks: Sinks {
            feeds: vec![feed],
            generation: 0,
        },
        got,
        down,
        stuck,
    }
}

pub(super) fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Ban(b) => format!("ban {}", b.key.net),
            Event::Unban(u) => format!("unban {}", u.key.net),
        })
        .collect()
}

/// Waits (against hangs only) until `f` holds.
pub(super) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
