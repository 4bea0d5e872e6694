//! A byte range of a log file mapped into memory, read without the kernel's copy to a buffer.
//!
//! `pread` into a buffer cost replay about a quarter of its CPU time (the copy, and the cache
//! misses of a buffer the size of the range); a mapping of the same range is read straight from
//! the page cache. The range is mapped only while its lines are parsed, so the mapped pages never
//! add more than a range per producer to the resident set.
//!
//! **Truncation.** A mapped page past the end of a file that shrank after it was mapped faults
//! with SIGBUS, which would end the process with nothing said (`logrotate`'s `copytruncate` does
//! that to a log being replayed). Every live mapping is registered in a fixed table; the handler
//! installed before the first one looks the faulting address up, writes which file was truncated
//! to stderr and ends the process with exit code 1: the replay is incomplete and says so, and
//! decides nothing more. A SIGBUS outside every mapping gets the default action, as before.
//! When the table is full, or mapping fails, the caller reads the range with `pread` instead.

// mmap, and a signal handler that may only call async-signal-safe functions: the one place
// besides the parser's SIMD scan where this crate needs `unsafe`. Each block says why it holds.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use rustix::mm::{mmap, munmap, Advice, MapFlags, ProtFlags};

/// Mappings alive at once (one per producer thread is the need); beyond this, `pread`.
const SLOTS: usize = 64;

/// One live mapping: its address range and the path of its file (for the message).
struct Slot {
    busy: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    path: AtomicPtr<u8>,
    path_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // Only the array's initialiser.
const FREE: Slot = Slot {
    busy: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    path: AtomicPtr::new(std::ptr::null_mut()),
    path_len: AtomicUsize::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
static HANDLER: Once = Once::new();
static HANDLER_OK: AtomicBool = AtomicBool::new(false);

/// The lines of `[off, off + len)` of a file, mapped read-only. Unmapped on drop.
pub struct Mapped {
    ptr: *mut c_void,
    len: usize,
    /// Where the caller's `off` is in the mapping (mappings start on a page boundary).
    lead: usize,
    slot: usize,
    /// The path's bytes, which the slot points to while the mapping lives.
    _path: Box<[u8]>,
}

// The mapping is read-only and owned by this value; the slot is cleared before it goes.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps `len` bytes of `file` from `off` (clipped to the file's current length: never a page
    /// past its end). `Ok(None)` when there is nothing to map or no free slot (read it instead).
    pub fn map(file: &File, path: &Path, off: u64, len: usize) -> io::Result<Option<Mapped>> {
        HANDLER.call_once(install_handler);
        if !HANDLER_OK.load(Ordering::Acquire) {
            return Ok(None);
        }
        let size = file.metadata()?.len();
        let page = rustix::param::page_size() as u64;
        let start = off - off % page;
        let end = off.saturating_add(len as u64).min(size);
        if end <= off {
            return Ok(None);
        }
        let Ok(map_len) = usize::try_from(end - start) else {
            return Ok(None);
        };
        let Some(slot) = claim() else {
            return Ok(None);
        };
        // SAFETY: a fresh read-only private mapping of an open file, at an address the kernel
        // chooses: no Rust object is aliased. Reads of it can fault with SIGBUS if the file
        // shrinks below `end` meanwhile; the handler installed above deals with that.
        let ptr = match unsafe {
            mmap(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                file,
                start,
            )
        } {
            Ok(p) => p,
            Err(e) => {
                TABLE[slot].busy.store(false, Ordering::Release);
                return Err(e.into());
            }
        };
        // SAFETY: advice on the mapping just made; only the kernel's read-ahead changes.
        let _ = unsafe { rustix::mm::madvise(ptr, map_len, Advice::Sequential) };
        let path: Box<[u8]> = path.as_os_str().as_bytes().into();
        let s = &TABLE[slot];
        s.path.store(path.as_ptr().cast_mut(), Ordering::Relaxed);
        s.path_len.store(path.len(), Ordering::Relaxed);
        s.start.store(ptr as usize, Ordering::Relaxed);
        s.end.store(ptr as usize + map_len, Ordering::Release);
        Ok(Some(Mapped {
            ptr,
            len: map_len,
            lead: (off - start) as usize,
            slot,
            _path: path,
        }))
    }

    /// The mapped bytes from the caller's `off` on.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is mapped readable for as long as `self` lives, and nothing
        // writes to it (private, read-only); `lead < len` since `off < end`.
        let all = unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) };
        &all[self.lead..]
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        s.end.store(0, Ordering::Release);
        s.start.store(0, Ordering::Release);
        // SAFETY: the mapping made in `map`, unmapped once; no slice of it outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
        s.busy.store(false, Ordering::Release);
    }
}

fn claim() -> Option<usize> {
    TABLE.iter().position(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })
}

fn install_handler() {
    let action = SigAction::new(
        SigHandler::SigAction(on_sigbus),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads atomics, writes to stderr and exits or restores the
    // default action, all async-signal-safe.
    let ok = unsafe { sigaction(Signal::SIGBUS, &action) }.is_ok();
    HANDLER_OK.store(ok, Ordering::Release);
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: the kernel hands a SA_SIGINFO handler a valid siginfo; for SIGBUS `si_addr` is the
    // faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    let hit = TABLE.iter().find(|s| {
        let (start, end) = (
            s.start.load(Ordering::Acquire),
            s.end.load(Ordering::Acquire),
        );
        start <= addr && addr < end
    });
    let Some(slot) = hit else {
        // Not ours: the default action, as if no handler were installed. Returning re-runs the
        // faulting access, which now ends the process.
        let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: sigaction is async-signal-safe.
        let _ = unsafe { sigaction(Signal::SIGBUS, &dfl) };
        return;
    };
    let path = slot.path.load(Ordering::Relaxed);
    let len = slot.path_len.load(Ordering::Relaxed);
    // SAFETY: the slot's path belongs to the mapping being read on this thread, which cannot be
    // dropped while this thread is stopped in its access.
    let path = unsafe { std::slice::from_raw_parts(path, len) };
    for part in [
        &b"floodwatch: "[..],
        path,
        b": the file shrank while it was being read (truncated, as by logrotate's \
          copytruncate?); the replay stops, incomplete\n",
    ] {
        // SAFETY: write(2) on stderr is async-signal-safe; `part` is valid for its length.
        let _ = unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // SAFETY: _exit is async-signal-safe; nothing may be flushed from a signal handler.
    unsafe { libc::_exit(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_range_clipped_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let m = Mapped::map(&file, &path, 5000, 1000).unwrap().unwrap();
        assert_eq!(m.bytes(), &data[5000..6000]);
        let m = Mapped::map(&file, &path, 19_990, 1000).unwrap().unwrap();
        assert_eq!(m.bytes(), &data[19_990..]);
        assert!(Mapped::map(&file, &path, 20_000, 10).unwrap().is_none());
    }

    #[test]
    fn slots_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"x\n").unwrap();
        let file = File::open(&path).unwrap();
        for _ in 0..SLOTS * 2 {
            assert!(Mapped::map(&file, &path, 0, 2).unwrap().is_some());
        }
    }
}
