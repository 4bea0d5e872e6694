//! SIGTERM, SIGINT and SIGHUP as readable events on a descriptor (Linux `signalfd`, through nix),
//! so that the watch loop handles them between two steps of its own, with no handler running at
//! an arbitrary moment (this is what a self-pipe or signal-hook would give, in one call).
//!
//! The signals must be blocked in every thread for `signalfd` to receive them: [`Signals::new`]
//! blocks them in the calling thread, so it must run before any other thread is started (threads
//! inherit the mask). Blocked, they never interrupt another thread's system call (a Redis read,
//! a webhook's), as a handler would. Child processes (the exec sink) get a clear mask from
//! `std::process`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{self as sig, SigSet};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// A signal the loop acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in this thread and opens a descriptor that reports them.
    pub fn new() -> io::Result<Signals> {
        let mut set = SigSet::empty();
        for s in [sig::SIGTERM, sig::SIGINT, sig::SIGHUP] {
            set.add(s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// The next pending signal, `None` when there is none.
    pub fn read_signal(&mut self) -> io::Result<Option<Signal>> {
        loop {
            return match self.fd.read_signal() {
                Ok(None) => Ok(None),
                Ok(Some(info)) => Ok(Some(if info.ssi_signo == sig::SIGHUP as u32 {
                    Signal::Reload
                } else {
                    Signal::Stop
                })),
                Err(Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sent_to_this_thread_is_read_not_delivered() {
        // Its own thread: the mask change must not leak into the test harness's threads.
        std::thread::spawn(|| {
            let mut signals = Signals::new().unwrap();
            assert_eq!(signals.read_signal().unwrap(), None);
            // `raise` signals this thread only; SIGHUP is blocked here, so it stays pending.
            sig::raise(sig::SIGHUP).unwrap();
            assert_eq!(signals.read_signal().unwrap(), Some(Signal::Reload));
            assert_eq!(signals.read_signal().unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
