//! SIGTERM, SIGINT and SIGHUP as readable events on a descriptor (Linux `signalfd`), so that the
//! watch loop handles them between two steps of its own, with no handler running at an arbitrary
//! moment and no new dependency (this is what a self-pipe or signal-hook would give, in one call).
//!
//! The signals must be blocked in every thread for `signalfd` to receive them: [`Signals::new`]
//! blocks them in the calling thread, so it must run before any other thread is started (threads
//! inherit the mask). Child processes (the exec sink) get a clear mask from `std::process`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A signal the loop acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in this thread and opens a descriptor that reports them.
    pub fn new() -> io::Result<Signals> {
        // SAFETY: the set is initialised by sigemptyset before use; the calls only read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The next pending signal, `None` when there is none.
    pub fn read_signal(&mut self) -> io::Result<Option<Signal>> {
        loop {
            // SAFETY: an all-zero siginfo is a valid value; read fills at most its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into `info`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n as usize != size {
                return Ok(None);
            }
            return Ok(Some(match info.ssi_signo as i32 {
                libc::SIGHUP => Signal::Reload,
                _ => Signal::Stop,
            }));
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
            let mut sig = Signals::new().unwrap();
            assert_eq!(sig.read_signal().unwrap(), None);
            // SAFETY: signals this thread only; SIGHUP is blocked here, so it stays pending.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            assert_eq!(sig.read_signal().unwrap(), Some(Signal::Reload));
            assert_eq!(sig.read_signal().unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
