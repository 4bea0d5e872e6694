//! A thin, safe wrapper over Linux inotify: the one descriptor that tells the watch loop both that
//! a log grew and that a vhost folder or log file appeared, so nothing is polled while logs idle.
//!
//! Only folders are watched (the parents that a glob's wildcards walk through, and the folders
//! holding the logs): a folder watch reports writes to the files inside it (`IN_MODIFY`) as well
//! as creations and renames, costs one watch per folder rather than per file, and survives log
//! rotation, which replaces the files but not the folder. The descriptor is non-blocking and is
//! registered with mio through `SourceFd`. The calls and the parsing of the kernel's event records
//! are rustix's.

use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::inotify::{self as sys, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// A file in the folder was written to.
pub const MODIFY: u32 = ReadFlags::MODIFY.bits();
/// A name appeared in the folder (created, or moved in).
pub const APPEARED: u32 = ReadFlags::CREATE.bits() | ReadFlags::MOVED_TO.bits();
/// The watched folder itself went away (deleted, moved, or its file system unmounted).
pub const GONE: u32 = ReadFlags::DELETE_SELF.bits()
    | ReadFlags::MOVE_SELF.bits()
    | ReadFlags::IGNORED.bits()
    | ReadFlags::UNMOUNT.bits();
/// The kernel's queue overflowed: events were lost, everything must be looked at again.
pub const OVERFLOW: u32 = ReadFlags::QUEUE_OVERFLOW.bits();

/// What every folder is watched for.
const MASK: WatchFlags = WatchFlags::MODIFY
    .union(WatchFlags::CREATE)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

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
    buf: Box<[MaybeUninit<u8>]>,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        let fd = sys::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        Ok(Inotify {
            fd,
            buf: vec![MaybeUninit::uninit(); READ_BUF].into_boxed_slice(),
        })
    }

    /// Watches the folder `dir`; returns its watch descriptor (the same one again for a folder
    /// already watched, whatever path reached it).
    pub fn watch_dir(&mut self, dir: &Path) -> io::Result<i32> {
        Ok(sys::add_watch(&self.fd, dir, MASK)?)
    }

    /// Reads every event queued now (none when there are none: the descriptor does not block).
    pub fn read_events(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        let mut events = sys::Reader::new(&self.fd, &mut self.buf);
        loop {
            match events.next() {
                Ok(e) => out.push(Event {
                    wd: e.wd(),
                    mask: e.events().bits(),
                    name: e.file_name().map_or(Vec::new(), |n| n.to_bytes().to_vec()),
                }),
                Err(Errno::WOULDBLOCK) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_removed_folder_says_it_is_gone_with_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.watch_dir(&sub).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let mut out = Vec::new();
        ino.read_events(&mut out).unwrap();
        assert!(
            out.iter()
                .any(|e| e.wd == wd && e.mask & GONE != 0 && e.name.is_empty()),
            "{out:?}"
        );
    }

    #[test]
    fn watching_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        assert!(ino.watch_dir(&dir.path().join("nope")).is_err());
    }
}
