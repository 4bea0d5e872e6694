//! A thin, safe wrapper over Linux inotify: the one descriptor that tells the watch loop both that
//! a log grew and that a vhost folder or log file appeared, so nothing is polled while logs idle.
//!
//! Only folders are watched (the parents that a glob's wildcards walk through, and the folders
//! holding the logs): a folder watch reports writes to the files inside it (`IN_MODIFY`) as well
//! as creations and renames, costs one watch per folder rather than per file, and survives log
//! rotation, which replaces the files but not the folder. The descriptor is non-blocking and is
//! registered with mio through `SourceFd`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A file in the folder was written to.
pub const MODIFY: u32 = libc::IN_MODIFY;
/// A name appeared in the folder (created, or moved in).
pub const APPEARED: u32 = libc::IN_CREATE | libc::IN_MOVED_TO;
/// The watched folder itself went away (deleted, moved, or its file system unmounted).
pub const GONE: u32 =
    libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT;
/// The kernel's queue overflowed: events were lost, everything must be looked at again.
pub const OVERFLOW: u32 = libc::IN_Q_OVERFLOW;

/// What every folder is watched for.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Bytes read per `read`: room for hundreds of events (an event is 16 bytes and its name).
const READ_BUF: usize = 64 * 1024;

/// One event: the watch it came from, what happened, and the name inside the folder (empty
/// for events about the folder itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: Vec<u8>,
}

impl Event {
    pub fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }
}

/// An inotify instance.
pub struct Inotify {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: no pointers; a negative result is an error.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify {
            fd,
            buf: vec![0; READ_BUF],
        })
    }

    /// Watches the folder `dir`; returns its watch descriptor (the same one again for a folder
    /// already watched, whatever path reached it).
    pub fn watch_dir(&mut self, dir: &Path) -> io::Result<i32> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Reads every event queued now (none when there are none: the descriptor does not block).
    pub fn read_events(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        loop {
            // SAFETY: reads at most `buf.len()` bytes into our own buffer.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Ok(());
            }
            parse_events(&self.buf[..n as usize], out);
        }
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Splits what one `read` returned into events: each is a `struct inotify_event` (wd, mask,
/// cookie, len) followed by `len` bytes of NUL-padded name. The kernel only returns whole events.
fn parse_events(mut data: &[u8], out: &mut Vec<Event>) {
    const HEAD: usize = 16;
    while data.len() >= HEAD {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&data[i..i + 4]);
            u32::from_ne_bytes(w)
        };
        let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
        let end = (HEAD + len).min(data.len());
        let name = &data[HEAD..end];
        let name = &name[..memchr::memchr(0, name).unwrap_or(name.len())];
        out.push(Event {
            wd,
            mask,
            name: name.to_vec(),
        });
        data = &data[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, name: &[u8], len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&len.to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(len as usize, 0);
        v.extend_from_slice(&n);
        v
    }

    #[test]
    fn events_are_split_and_names_lose_their_padding() {
        let mut data = raw(1, MODIFY, b"access_log", 16);
        data.extend(raw(2, libc::IN_DELETE_SELF, b"", 0));
        let mut out = Vec::new();
        parse_events(&data, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name(), "access_log");
        assert_eq!((out[0].wd, out[0].mask), (1, MODIFY));
        assert!(out[1].name.is_empty());
        assert_eq!(out[1].mask & GONE, libc::IN_DELETE_SELF);
    }

    #[test]
    fn a_folder_watch_reports_writes_and_creations_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.watch_dir(dir.path()).unwrap();
        let mut out = Vec::new();
        ino.read_events(&mut out).unwrap();
        assert!(out.is_empty(), "nothing happened yet: {out:?}");
        std::fs::write(dir.path().join("access_log"), b"x\n").unwrap();
        ino.read_events(&mut out).unwrap();
        assert!(out
            .iter()
            .any(|e| e.wd == wd && e.mask & APPEARED != 0 && e.name() == "access_log"));
        assert!(out.iter().any(|e| e.mask & MODIFY != 0));
    }

    #[test]
    fn watching_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        assert!(ino.watch_dir(&dir.path().join("nope")).is_err());
    }
}
