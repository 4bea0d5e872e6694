//! systemd's readiness protocol, for a unit with `Type=notify`: `READY=1` once the first scan
//! and the first read of every file are done (so `systemctl start` returns when watch really
//! watches, and units ordered after it start then), `RELOADING=1` … `READY=1` around a SIGHUP,
//! `STOPPING=1` at a stop, and `WATCHDOG=1` at half the unit's `WatchdogSec=` from the loop
//! itself, so a loop that hangs is restarted. Outside systemd (no `NOTIFY_SOCKET`) all of it
//! is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub(super) struct Systemd {
    /// Half the watchdog interval, when systemd asked for pings.
    ping_every: Option<Duration>,
    next_ping: Instant,
}

impl Systemd {
    pub(super) fn new() -> Systemd {
        let mut usec = 0;
        let ping_every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec) / 2)
            .filter(|d| !d.is_zero());
        Systemd {
            ping_every,
            next_ping: Instant::now(),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        // Without systemd this does nothing; a failure to tell it is logged, never fatal.
        if let Err(e) = sd_notify::notify(false, states) {
            log::debug!("telling systemd: {e}");
        }
    }

    pub(super) fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub(super) fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub(super) fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// Pings the watchdog when due (called once per turn of the loop).
    pub(super) fn tick(&mut self, now: Instant) {
        if let Some(every) = self.ping_every {
            if now >= self.next_ping {
                self.send(&[NotifyState::Watchdog]);
                self.next_ping = now + every;
            }
        }
    }

    /// When [`Systemd::tick`] next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.ping_every.map(|_| self.next_ping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// Everything in one test: it sets process-wide environment variables.
    #[test]
    fn tells_systemd_through_its_socket_and_pings_the_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "2000000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        let mut s = Systemd::new();
        let recv = || {
            let mut buf = [0u8; 256];
            let n = sock.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        s.ready("watching 3 files");
        assert_eq!(recv(), "READY=1\nSTATUS=watching 3 files\n");
        let t = Instant::now();
        s.tick(t);
        assert_eq!(recv(), "WATCHDOG=1\n");
        assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(1)));
        s.tick(t + Duration::from_millis(500));
        s.reloading();
        assert_eq!(recv(), "RELOADING=1\n", "no ping before it is due");
        s.stopping();
        assert_eq!(recv(), "STOPPING=1\n");
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        let quiet = Systemd::new();
        assert_eq!(quiet.next_deadline(), None);
        quiet.ready("nobody listens");
    }
}
