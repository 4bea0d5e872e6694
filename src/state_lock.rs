//! The lock that makes a `[state] dir` one process's: `watch` holds it for its whole life, and
//! `replay --sinks` while it runs, so that neither starts while the other acts through the same
//! state and sinks.
//!
//! The lock is an `flock` on `watch.lock` in the state folder. The kernel releases it when its
//! holder exits, however it exits, so a file left behind by a crash never blocks anyone: only a
//! live holder does. The file says who holds it (`PID COMMAND`), for the refusal's message; its
//! content is informative only, the lock itself is the truth.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// The lock file's name in the state folder.
pub const LOCK_FILE: &str = "watch.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    // Held open: closing the file releases the lock.
    _file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{path}: held by {holder}")]
    Held { path: PathBuf, holder: Holder },
    /// The lock file cannot be opened or locked.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who holds a lock, as its file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// The command it runs (`watch`, `replay --sinks`).
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let command = self.command.as_deref().unwrap_or("a floodwatch");
        match self.pid {
            Some(pid) => write!(f, "{command} (pid {pid})"),
            None => write!(f, "{command} (pid unknown)"),
        }
    }
}

/// Takes the lock of `dir` for `command` (`watch`, `replay --sinks`), creating the lock file.
/// Never waits: a live holder is an error naming it.
pub fn acquire(dir: &Path, command: &str) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    if !try_lock(&file).map_err(io_err)? {
        return Err(LockError::Held {
            holder: read_holder(&mut file),
            path,
        });
    }
    // Ours now: say who we are (a failure only loses the name in another's message).
    let said = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{} {command}", std::process::id()))
        .and_then(|()| file.flush());
    if let Err(e) = said {
        log::warn!("{}: cannot write our pid into it: {e}", path.display());
    }
    Ok(StateLock { _file: file, path })
}

/// Whether a live process holds the lock of `dir`, without taking it for longer than the look
/// takes. A missing file or folder: nobody. Needs only read access to the file.
pub fn holder(dir: &Path) -> Result<Option<Holder>, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match try_lock(&file) {
        // Released when the file closes, at once.
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(read_holder(&mut file))),
        Err(source) => Err(LockError::Io { path, source }),
    }
}

/// An exclusive, non-blocking flock: `Ok(false)` when another open file holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    loop {
        return match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// What the holder wrote: `PID COMMAND`; anything else (a holder that has not written yet, a
/// foreign file) gives an unknown holder rather than an error.
fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(256).read_to_string(&mut text);
    let line = text.lines().next().unwrap_or_default();
    let (pid, command) = line.split_once(' ').unwrap_or((line, ""));
    let command = command.trim();
    Holder {
        pid: pid.trim().parse().ok(),
        command: (!command.is_empty()).then(|| command.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), "watch").unwrap();
        assert_eq!(held.path(), dir.path().join(LOCK_FILE));
        let err = acquire(dir.path(), "replay --sinks").unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(holder.command.as_deref(), Some("watch"));
        assert!(err.to_string().contains("watch (pid "), "{err}");
        assert_eq!(holder_of(dir.path()).as_ref(), Some(holder));
        drop(held);
        assert_eq!(holder_of(dir.path()), None);
        acquire(dir.path(), "replay --sinks").unwrap();
    }

    fn holder_of(dir: &Path) -> Option<Holder> {
        holder(dir).unwrap()
    }

    #[test]
    fn a_file_left_behind_blocks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "4242 watch\n").unwrap();
        assert_eq!(holder_of(dir.path()), None);
        let _held = acquire(dir.path(), "watch").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{} watch\n", std::process::id()));
    }

    #[test]
    fn no_folder_or_file_is_nobody_and_garbage_is_an_unknown_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder_of(&dir.path().join("missing")), None);
        std::fs::write(dir.path().join(LOCK_FILE), "garbage").unwrap();
        let mut f = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(read_holder(&mut f), Holder::default());
        assert_eq!(Holder::default().to_string(), "a floodwatch (pid unknown)");
    }
}
