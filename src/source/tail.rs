//! Follows one log path as it grows, is rotated, truncated, deleted or replaced, handing out
//! each complete line once, in order, in large chunks of whole lines.
//!
//! A [`Tailer`] holds the open file and the offset just after the last whole line it handed out;
//! no data. An unfinished last line is not buffered: the next poll reads it again from that
//! offset (`pread`), so a tailer costs one descriptor (two during a rotation's grace period) and
//! a few words, and thousands can share one [`TailBuf`]. What happens to the path is checked at every [`Tailer::poll`]:
//!
//! - **rename rotation / replacement**: the path names another file. The open file is read to
//!   its end first, then the new file is read from its start. The old file is still read at each
//!   poll until it has not grown for a grace period ([`Tailer::set_rotate_grace`]), because
//!   `logrotate` creates the new file before it tells the server to reopen its logs, and Apache
//!   workers finish their requests on the old one; lines written there late come after the new
//!   file's (in order within each file). When it is left, its unterminated last line, if any, is
//!   handed out as a line without `\n`.
//! - **copytruncate**: the open file is shorter than our offset, or its first bytes no longer
//!   match the [`Fingerprint`] taken of them: it was truncated (and maybe written again), so it is
//!   read from 0.
//! - **deletion**: the open descriptor keeps being read until the path names a file again.
//! - **not there yet**: the path is tried at each poll; a file that appears is read from its start.
//!
//! - **restart**: a checkpoint records the file followed and the rotated file still in its grace
//!   period, if any, by (device, inode) and fingerprint. When the path no longer names the
//!   checkpoint's file (rotated while stopped, or during the stop's grace period), that file is
//!   looked for under any name in the same folder (`access_log.1`, `access_log-20261125`): found,
//!   its rest is read before the new file, as if there had been no stop. A busy server rotated
//!   at the wrong moment loses nothing to a restart.
//!
//! Inherent limits (what no tailer of a path can do): lines written to a rotated file after its
//! grace period, or after a second rotation, are not read; lines written before a copytruncate
//! but after our last poll are in the copy, which is not followed; a truncation followed by a
//! rewrite of the same size and same first bytes before the next poll is invisible. After a
//! restart, a rotated file that left the folder (`olddir`, compressed, deleted) is not found: the
//! rest of it is lost; so is a file of which nothing was read before the stop (its fingerprint
//! is empty, and an inode alone may have been reused by a new file).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::StartAt;
use crate::parse::MAX_LINE;
use crate::source::checkpoint::{Checkpoint, Fingerprint, Rotated, FINGERPRINT_MAX};

/// Bytes read per `pread`: large enough that a busy file is read in few syscalls, and more than
/// [`MAX_LINE`] so that every line that may be valid fits.
pub const TAIL_CHUNK: usize = 1 << 20;

/// How long a rotated file is still read after it stopped growing, unless set otherwise.
pub const DEFAULT_ROTATE_GRACE: Duration = Duration::from_secs(10);

/// How long a file must have been unchanged for a poll to trust its size and modification time
/// alone (longer than any filesystem's timestamp granularity).
const QUIET_FOR: Duration = Duration::from_secs(1);

/// The read buffer, shared by all the tailers one thread polls.
pub struct TailBuf(Vec<u8>);

impl TailBuf {
    pub fn new() -> TailBuf {
        TailBuf(vec![0; TAIL_CHUNK])
    }
}

impl Default for TailBuf {
    fn default() -> TailBuf {
        TailBuf::new()
    }
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Bytes handed out.
    pub bytes: u64,
    /// Lines dropped because they grew longer than [`MAX_LINE`] before their end. (Complete
    /// lines longer than that are handed out and rejected by the parser, which counts them.)
    pub oversized: u64,
    /// Files opened: one that appeared, or the new file after a rotation.
    pub opened: u32,
    /// Switches to another file because the path names it (the old one is kept for its grace).
    pub rotated: u32,
    /// Rotated files left for good at the end of their grace period.
    pub retired: u32,
    /// Truncations seen (copytruncate): the file was read again from 0.
    pub truncated: u32,
    /// Unterminated last lines of retired files, handed out without `\n`.
    pub unterminated: u32,
}

/// How a tailer started on its path, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// At the checkpoint's offset: same file, at least that long.
    Resumed,
    /// The checkpoint names another file (rotated, replaced or truncated while stopped) that is
    /// no longer in the folder: this one is read from its start, and the unread rest of the old
    /// one is lost.
    CheckpointMismatch,
    /// The checkpoint's file was renamed (rotated while stopped, or at the stop): it is read
    /// from the checkpoint's offset to its end, then the file the path names from its start.
    Moved,
    Beginning,
    /// After the last complete line (`start_at = "end"`).
    End,
    /// No file at the path yet: it will be read from its start when it appears.
    Missing,
}

/// A (device, inode) pair: what a path names at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

struct Open {
    file: File,
    id: FileId,
    fingerprint: Fingerprint,
    /// Just after the last whole line handed out or dropped.
    offset: u64,
    /// Inside a line already longer than [`MAX_LINE`]: where the search for its end resumes.
    skip: Option<u64>,
    /// Size and modification time at the last head check, when the file had been quiet for a
    /// while then (see [`Open::check_truncation`]).
    quiet: Option<(u64, SystemTime)>,
}

/// A file the path named before, still read for a while.
struct Retiring {
    open: Open,
    /// Its size when it last grew, and since when it has not.
    size: u64,
    idle_since: Instant,
}

/// Follows one path. See the module documentation.
pub struct Tailer {
    path: PathBuf,
    open: Option<Open>,
    retiring: Option<Retiring>,
    grace: Duration,
    started: Started,
    /// For [`Tailer::poll`]; allocated on its first use.
    own_buf: Option<TailBuf>,
}

impl Tailer {
    /// Starts following `path`. With a checkpoint for it, reading resumes at its offset if the
    /// path still names the same file (device, inode and fingerprint) at least that long, or if
    /// that file is still in the folder under another name (then the path's file is read from
    /// its start after it); it starts at the beginning of whatever the path names otherwise.
    /// The checkpoint's rotated file, if it is still in the folder, is read on from its offset.
    /// Without a checkpoint, `start` says where. A missing file is not an error: it is read from
    /// its start once it appears.
    pub fn open(path: &Path, start: StartAt, resume: Option<&Checkpoint>) -> io::Result<Tailer> {
        let mut tailer = Tailer {
            path: path.to_path_buf(),
            open: None,
            retiring: None,
            grace: DEFAULT_ROTATE_GRACE,
            started: Started::Missing,
            own_buf: None,
        };
        // The file the path names is never a rotated one (its inode may be one reused).
        let at_path = path_id(path).ok().flatten();
        if let Some(r) = resume.and_then(|cp| cp.rotated.as_ref()) {
            let id = FileId {
                dev: r.dev,
                ino: r.inode,
            };
            if let Some(open) = find_moved(path, at_path, id, &r.fingerprint, r.offset) {
                let size = open.file.metadata()?.len();
                tailer.retiring = Some(Retiring {
                    open,
                    size,
                    idle_since: Instant::now(),
                });
            }
        }
        // The checkpoint's file under another name: followed as if the rotation had been seen
        // running (the first poll reads it to its end, then switches to the path's file).
        let moved = |tailer: &mut Tailer| match resume {
            Some(cp) if cp.inode != 0 => {
                let id = FileId {
                    dev: cp.dev,
                    ino: cp.inode,
                };
                let found = find_moved(path, at_path, id, &cp.fingerprint, cp.offset);
                tailer.started = Started::Moved;
                tailer.open = found;
                tailer.open.is_some()
            }
            _ => false,
        };
        let Some(mut open) = open_path(path)? else {
            if !moved(&mut tailer) {
                tailer.started = Started::Missing;
            }
            return Ok(tailer);
        };
        let size = open.file.metadata()?.len();
        let mut head = [0u8; FINGERPRINT_MAX];
        let head = read_head(&open.file, &mut head, size)?;
        tailer.started = match resume {
            Some(cp)
                if cp.dev == open.id.dev
                    && cp.inode == open.id.ino
                    && size >= cp.offset
                    && cp.fingerprint.matches(head) =>
            {
                open.resume_at(cp.offset)?;
                Started::Resumed
            }
            Some(_) if moved(&mut tailer) => return Ok(tailer),
            Some(_) => Started::CheckpointMismatch,
            None if start == StartAt::Beginning => Started::Beginning,
            None => {
                (open.offset, open.skip) = last_line_start(&open.file, size)?;
                Started::End
            }
        };
        open.fingerprint = Fingerprint::of(head);
        tailer.open = Some(open);
        Ok(tailer)
    }

    /// How long a rotated file is still read after it stopped growing (zero: it is read to its
    /// end once, when the switch to the new file is seen).
    pub fn set_rotate_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// When a rotated file will be left if it does not grow: the watch loop polls then, so that
    /// its descriptor is closed and its unterminated last line handed out. `None` if there is
    /// none (or the grace never ends).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retiring.as_ref()?.idle_since.checked_add(self.grace)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a file is open at the path (a literal path may name none yet).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    pub fn started(&self) -> Started {
        self.started
    }

    /// Where reading stands, to save and resume from: the file followed and the rotated one
    /// still read, if any. Inside a line being dropped as oversized, the offset is how far it
    /// was skipped; [`Tailer::open`] knows it is inside a line because the byte before is not
    /// `\n`, and goes on skipping.
    pub fn checkpoint(&self) -> Checkpoint {
        let rotated = self.retiring.as_ref().map(|r| Rotated {
            dev: r.open.id.dev,
            inode: r.open.id.ino,
            fingerprint: r.open.fingerprint,
            offset: r.open.skip.unwrap_or(r.open.offset),
        });
        let (dev, inode, fingerprint, offset) = match &self.open {
            Some(o) => (
                o.id.dev,
                o.id.ino,
                o.fingerprint,
                o.skip.unwrap_or(o.offset),
            ),
            None => (0, 0, Fingerprint::default(), 0),
        };
        Checkpoint {
            path: self.path.clone(),
            dev,
            inode,
            fingerprint,
            offset,
            rotated,
        }
    }

    /// [`Tailer::poll_with`] on a buffer of this tailer's own (for a few files; many should
    /// share one).
    pub fn poll(&mut self, out: &mut impl FnMut(&[u8])) -> io::Result<PollStats> {
        let mut buf = self.own_buf.take().unwrap_or_default();
        let r = self.poll_with(&mut buf, out);
        self.own_buf = Some(buf);
        r
    }

    /// Reads everything new since the last call and hands it to `out` as chunks of whole lines
    /// (each ending in `\n`, but for the last line of a rotated file that has none), following
    /// rotation, truncation, deletion and replacement of the file.
    pub fn poll_with(
        &mut self,
        buf: &mut TailBuf,
        out: &mut impl FnMut(&[u8]),
    ) -> io::Result<PollStats> {
        let mut stats = PollStats::default();
        let now = Instant::now();
        if let Some(r) = &mut self.retiring {
            let size = r.open.drain(&mut buf.0, &mut stats, out)?;
            if size != r.size {
                (r.size, r.idle_since) = (size, now);
            } else if now.duration_since(r.idle_since) >= self.grace {
                self.retire(buf, &mut stats, out)?;
            }
        }
        // Each round either ends the poll or switches to the file the path names now; a bound
        // keeps a path that is replaced faster than we read it from holding us here.
        for _ in 0..4 {
            let Some(open) = &mut self.open else {
                match open_path(&self.path)? {
                    Some(open) => {
                        self.open = Some(open);
                        stats.opened += 1;
                        continue;
                    }
                    None => break,
                }
            };
            // Look at the path before draining: whatever was written to the old file before
            // the new one appeared is then read.
            let path_now = path_id(&self.path)?;
            let size = open.drain(&mut buf.0, &mut stats, out)?;
            match path_now {
                Some(id) if id != open.id => {
                    stats.rotated += 1;
                    // A second rotation within the grace ends the first one's.
                    self.retire(buf, &mut stats, out)?;
                    if let Some(open) = self.open.take() {
                        self.retiring = Some(Retiring {
                            open,
                            size,
                            idle_since: now,
                        });
                    }
                    if self.grace.is_zero() {
                        self.retire(buf, &mut stats, out)?;
                    }
                }
                _ => break,
            }
        }
        Ok(stats)
    }

    /// Leaves the rotated file, if any, after reading it to its very end.
    fn retire(
        &mut self,
        buf: &mut TailBuf,
        stats: &mut PollStats,
        out: &mut impl FnMut(&[u8]),
    ) -> io::Result<()> {
        if let Some(mut r) = self.retiring.take() {
            r.open.drain(&mut buf.0, stats, out)?;
            r.open.finish(&mut buf.0, stats, out)?;
            stats.retired += 1;
        }
        Ok(())
    }
}

impl Open {
    /// Continues at a checkpoint's offset; when it stopped inside an oversized line (see
    /// [`Tailer::checkpoint`]), goes on skipping it.
    fn resume_at(&mut self, offset: u64) -> io::Result<()> {
        self.offset = offset;
        let mut before = [b'\n'];
        if offset > 0 {
            read_at(&self.file, &mut before, offset - 1)?;
        }
        if before[0] != b'\n' {
            self.skip = Some(offset);
        }
        Ok(())
    }

    /// Hands out every whole line from `offset` to the end of the file; returns the file's size
    /// as seen.
    fn drain(
        &mut self,
        buf: &mut [u8],
        stats: &mut PollStats,
        out: &mut impl FnMut(&[u8]),
    ) -> io::Result<u64> {
        let size = self.check_truncation(stats)?;
        // Nothing new (what is written after the `fstat` is for the next poll): an idle poll
        // costs two `stat`s and the head's `pread`.
        if self.skip.unwrap_or(self.offset) >= size {
            return Ok(size);
        }
        loop {
            let from = self.skip.unwrap_or(self.offset);
            let n = read_once(&self.file, buf, from)?;
            let data = &buf[..n];
            if let Some(at) = self.skip {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        self.offset = at + i as u64 + 1;
                        self.skip = None;
                        continue;
                    }
                    None => self.skip = Some(at + n as u64),
                }
            } else {
                let whole = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
                if whole > 0 {
                    out(&data[..whole]);
                    stats.bytes += whole as u64;
                    self.offset += whole as u64;
                }
                if n - whole > MAX_LINE {
                    // The unfinished line can no longer be valid: skip to its end.
                    stats.oversized += 1;
                    self.skip = Some(from + n as u64);
                }
            }
            // A regular file returns a short read only at its end (so one `pread` per poll).
            if n < buf.len() {
                return Ok(from + n as u64);
            }
        }
    }

    /// Detects a copytruncate (the file is shorter than what we read, or its head changed),
    /// then takes the fingerprint again: it covers more of a file shorter than
    /// [`FINGERPRINT_MAX`] as the file grows.
    fn check_truncation(&mut self, stats: &mut PollStats) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        let size = meta.len();
        let modified = meta.modified().ok();
        // Same size and modification time as at the last check, which came at least a second
        // after the file's last change: nothing was written or truncated since (either would
        // stamp a later time), so the head needs no reading. Idle rescans of thousands of
        // files spent most of their time in these reads.
        if modified.is_some_and(|m| self.quiet == Some((size, m))) {
            return Ok(size);
        }
        self.quiet = modified
            .filter(|&m| m + QUIET_FOR <= SystemTime::now())
            .map(|m| (size, m));
        let mut head = [0u8; FINGERPRINT_MAX];
        let head = read_head(&self.file, &mut head, size)?;
        let read = self.skip.unwrap_or(self.offset);
        if size < read || !self.fingerprint.matches(head) {
            stats.truncated += 1;
            self.offset = 0;
            self.skip = None;
        }
        self.fingerprint = Fingerprint::of(head);
        Ok(size)
    }

    /// Right after [`Open::drain`] of a file we leave: hands out its unterminated last line.
    fn finish(
        &mut self,
        buf: &mut [u8],
        stats: &mut PollStats,
        out: &mut impl FnMut(&[u8]),
    ) -> io::Result<()> {
        if self.skip.is_some() {
            return Ok(());
        }
        // `drain` left at most MAX_LINE bytes after `offset`.
        let n = read_at(&self.file, &mut buf[..MAX_LINE + 1], self.offset)?;
        if n > 0 && n <= MAX_LINE {
            out(&buf[..n]);
            stats.bytes += n as u64;
            stats.unterminated += 1;
            self.offset += n as u64;
        }
        Ok(())
    }
}

/// Opens the file at `path` at offset 0; `None` if there is none.
fn open_path(path: &Path) -> io::Result<Option<Open>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The identity of what we opened, not of what the path named a moment before.
    let id = FileId::of(&file.metadata()?);
    Ok(Some(Open {
        file,
        id,
        fingerprint: Fingerprint::default(),
        offset: 0,
        skip: None,
        quiet: None,
    }))
}

/// The file `id` in the folder of `path`, under any name, positioned at `offset`, if its head
/// still matches `fingerprint` and it is at least `offset` long: a checkpoint's file renamed by
/// a rotation. Not the file the path names (`at_path`, checked by the caller as the followed
/// file): that would read it twice. An empty fingerprint (nothing was read of the file) is not
/// looked for: the inode alone may be a new file's that reused it. Any error is taken as not
/// found (as before this search existed: the file's rest is lost).
fn find_moved(
    path: &Path,
    at_path: Option<FileId>,
    id: FileId,
    fingerprint: &Fingerprint,
    offset: u64,
) -> Option<Open> {
    if fingerprint.len == 0 || at_path == Some(id) {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        // Not following links: a rotated log is a regular file.
        match entry.metadata() {
            Ok(meta) if meta.is_file() && FileId::of(&meta) == id => {}
            _ => continue,
        }
        let Ok(Some(mut open)) = open_path(&entry.path()) else {
            continue;
        };
        if open.id != id {
            continue; // renamed again meanwhile
        }
        let size = open.file.metadata().ok()?.len();
        let mut head = [0u8; FINGERPRINT_MAX];
        let head = read_head(&open.file, &mut head, size).ok()?;
        if size < offset || !fingerprint.matches(head) {
            return None; // the inode of another file now
        }
        open.fingerprint = Fingerprint::of(head);
        open.resume_at(offset).ok()?;
        return Some(open);
    }
    None
}

/// What `path` names now; `None` if nothing.
fn path_id(path: &Path) -> io::Result<Option<FileId>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileId::of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first bytes of a file of `size` bytes, up to [`FINGERPRINT_MAX`].
fn read_head<'a>(
    file: &File,
    head: &'a mut [u8; FINGERPRINT_MAX],
    size: u64,
) -> io::Result<&'a [u8]> {
    let want = size.min(FINGERPRINT_MAX as u64) as usize;
    let n = read_at(file, &mut head[..want], 0)?;
    Ok(&head[..n])
}

/// Where `start_at = "end"` begins: after the last `\n`. The line being written when we start
/// is read whole; if it is already too long, it is skipped to its end.
fn last_line_start(file: &File, size: u64) -> io::Result<(u64, Option<u64>)> {
    let window = size.min(MAX_LINE as u64 + 1);
    let base = size - window;
    let mut tail = vec![0u8; window as usize];
    let n = read_at(file, &mut tail, base)?;
    Ok(match memchr::memrchr(b'\n', &tail[..n]) {
        Some(i) => (base + i as u64 + 1, None),
        None if window <= MAX_LINE as u64 => (0, None),
        None => (size, Some(size)),
    })
}

/// One `pread` (retried if interrupted).
fn read_once(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// `pread` until `buf` is full or the end of the file.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn append(path: &Path, data: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data.as_bytes()).unwrap();
    }

    fn lines(t: &mut Tailer) -> (Vec<String>, PollStats) {
        let mut got = Vec::new();
        let stats = t
            .poll(&mut |chunk: &[u8]| {
                assert!(!chunk.is_empty());
                got.extend(
                    chunk
                        .split_inclusive(|&b| b == b'\n')
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                );
            })
            .unwrap();
        (got, stats)
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access_log");
        (dir, path)
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let (_d, p) = setup();
        append(&p, "a\nb");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(t.started(), Started::Beginning);
        assert_eq!(lines(&mut t).0, ["a\n"]);
        assert_eq!(t.checkpoint().offset, 2);
        append(&p, "c");
        assert!(lines(&mut t).0.is_empty());
        append(&p, "\nd\n");
        assert_eq!(lines(&mut t).0, ["bc\n", "d\n"]);
        assert_eq!(t.checkpoint().offset, 7);
    }

    #[test]
    fn start_at_end_begins_after_the_last_complete_line() {
        let (_d, p) = setup();
        append(&p, "old\nold\nhalf");
        let mut t = Tailer::open(&p, StartAt::End, None).unwrap();
        assert_eq!(t.started(), Started::End);
        append(&p, "-written\nnew\n");
        assert_eq!(lines(&mut t).0, ["half-written\n", "new\n"]);
        // Inside a line already too long: it is skipped, also across a restart.
        append(&p, &"z".repeat(MAX_LINE * 2));
        let mut t = Tailer::open(&p, StartAt::End, None).unwrap();
        let cp = t.checkpoint();
        let mut t2 = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t2.started(), Started::Resumed);
        append(&p, "zzz\nnext\n");
        assert_eq!(lines(&mut t).0, ["next\n"]);
        assert_eq!(lines(&mut t2).0, ["next\n"]);
    }

    #[test]
    fn rename_rotation_drains_the_old_file_first() {
        let (d, p) = setup();
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        t.set_rotate_grace(Duration::ZERO);
        assert_eq!(lines(&mut t).0, ["1\n"]);
        append(&p, "2\n3");
        std::fs::rename(&p, d.path().join("access_log.1")).unwrap();
        append(&p, "4\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["2\n", "3", "4\n"]);
        assert_eq!((stats.rotated, stats.opened), (1, 1));
        assert_eq!((stats.retired, stats.unterminated), (1, 1));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_rotated_file_is_still_read_during_its_grace() {
        let (d, p) = setup();
        let old = d.path().join("access_log.1");
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        t.set_rotate_grace(Duration::from_secs(3600));
        assert_eq!(lines(&mut t).0, ["1\n"]);
        std::fs::rename(&p, &old).unwrap();
        append(&p, "new 1\n");
        // The server has not reopened its log yet.
        append(&old, "2\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["2\n", "new 1\n"]);
        assert_eq!((stats.rotated, stats.retired), (1, 0));
        assert!(t.next_deadline().is_some());
        t.set_rotate_grace(Duration::MAX);
        assert_eq!(t.next_deadline(), None);
        append(&old, "3\n4");
        append(&p, "new 2\n");
        assert_eq!(lines(&mut t).0, ["3\n", "new 2\n"]);
        // Idle past its grace: left, with its unfinished line.
        t.set_rotate_grace(Duration::ZERO);
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["4"]);
        assert_eq!((stats.retired, stats.unterminated), (1, 1));
        assert_eq!(t.next_deadline(), None);
        append(&old, "lost\n");
        assert!(lines(&mut t).0.is_empty());
    }

    #[test]
    fn copytruncate_reads_again_from_the_start() {
        let (_d, p) = setup();
        append(&p, "first line\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(lines(&mut t).0, ["first line\n"]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, "x\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["x\n"]);
        assert_eq!(stats.truncated, 1);
        // Truncated and written past our offset before the poll: the head shows it.
        std::fs::write(&p, "").unwrap();
        append(&p, "a much longer line than before\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["a much longer line than before\n"]);
        assert_eq!(stats.truncated, 1);
    }

    #[test]
    fn a_quiet_file_rewritten_to_the_same_size_is_still_seen_truncated() {
        let (_d, p) = setup();
        append(&p, "aaaa\n");
        let quiet = |p: &Path| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(5))
                .unwrap();
        };
        quiet(&p);
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(lines(&mut t).0, ["aaaa\n"]);
        // Quiet and unchanged: later polls trust size and time alone, and find nothing.
        assert!(lines(&mut t).0.is_empty());
        assert!(lines(&mut t).0.is_empty());
        // Copytruncate, then as many bytes as before: only the time (and the head) tell.
        std::fs::write(&p, "bbbb\n").unwrap();
        let (got, stats) = lines(&mut t);
        assert_eq!((got, stats.truncated), (vec!["bbbb\n".to_string()], 1));
        // The same once more, from a quiet state with an old time set back by hand.
        quiet(&p);
        assert!(lines(&mut t).0.is_empty());
        std::fs::write(&p, "cccc\n").unwrap();
        assert_eq!(lines(&mut t).0, ["cccc\n"]);
    }

    #[test]
    fn a_deleted_file_is_drained_then_its_successor_read() {
        let (_d, p) = setup();
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::End, None).unwrap();
        let mut writer = OpenOptions::new().append(true).open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        writer.write_all(b"2\n").unwrap();
        assert_eq!(lines(&mut t).0, ["2\n"]);
        writer.write_all(b"3\n").unwrap();
        assert_eq!(lines(&mut t).0, ["3\n"]);
        append(&p, "4\n");
        assert_eq!(lines(&mut t).0, ["4\n"]);
    }

    #[test]
    fn a_missing_file_is_read_from_its_start_when_it_appears() {
        let (_d, p) = setup();
        let mut t = Tailer::open(&p, StartAt::End, None).unwrap();
        assert_eq!(t.started(), Started::Missing);
        assert!(lines(&mut t).0.is_empty());
        assert_eq!(t.checkpoint().inode, 0);
        append(&p, "1\n2\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["1\n", "2\n"]);
        assert_eq!(stats.opened, 1);
    }

    #[test]
    fn a_file_replaced_between_polls_is_read_from_its_start() {
        let (d, p) = setup();
        append(&p, "old 1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(lines(&mut t).0, ["old 1\n"]);
        append(&p, "old 2\n");
        let tmp = d.path().join("new");
        append(&tmp, "new 1\n");
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(lines(&mut t).0, ["old 2\n", "new 1\n"]);
    }

    #[test]
    fn resume_needs_the_same_file_and_reads_what_was_written_while_stopped() {
        let (_d, p) = setup();
        append(&p, "1\n2\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        lines(&mut t);
        let cp = t.checkpoint();
        drop(t);
        append(&p, "3\n");
        let mut t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::Resumed);
        assert_eq!(lines(&mut t).0, ["3\n"]);
        // Same inode, another head (an inode reused by a new file): read from the start.
        let mut reused = t.checkpoint();
        reused.fingerprint = Fingerprint::of(b"9\n");
        let mut t = Tailer::open(&p, StartAt::End, Some(&reused)).unwrap();
        assert_eq!(t.started(), Started::CheckpointMismatch);
        assert_eq!(lines(&mut t).0, ["1\n", "2\n", "3\n"]);
        // Shorter than the offset: truncated while stopped.
        let mut long = t.checkpoint();
        long.offset = 100;
        let t = Tailer::open(&p, StartAt::End, Some(&long)).unwrap();
        assert_eq!(t.started(), Started::CheckpointMismatch);
    }

    #[test]
    fn a_file_rotated_while_stopped_is_read_to_its_end_before_the_new_one() {
        let (d, p) = setup();
        let old = d.path().join("access_log.1");
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(lines(&mut t).0, ["1\n"]);
        let cp = t.checkpoint();
        drop(t);
        // While stopped: written, rotated, written late to the old file, and to the new one.
        append(&p, "2\n");
        std::fs::rename(&p, &old).unwrap();
        append(&old, "3\n");
        append(&p, "new 1\n");
        let mut t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::Moved);
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["2\n", "3\n", "new 1\n"]);
        assert_eq!((stats.rotated, stats.opened), (1, 1));
        // The old file is kept for its grace, and in the next checkpoint.
        assert_eq!(t.checkpoint().rotated.map(|r| r.offset), Some(6));
    }

    #[test]
    fn a_file_renamed_at_the_stop_with_no_successor_yet_is_read_on() {
        let (d, p) = setup();
        let old = d.path().join("access_log.1");
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        lines(&mut t);
        std::fs::rename(&p, &old).unwrap();
        append(&old, "2\n");
        assert_eq!(lines(&mut t).0, ["2\n"]);
        let cp = t.checkpoint();
        drop(t);
        append(&old, "3\n");
        let mut t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::Moved);
        assert_eq!(lines(&mut t).0, ["3\n"]);
        append(&p, "new 1\n");
        assert_eq!(lines(&mut t).0, ["new 1\n"]);
    }

    #[test]
    fn a_rotated_file_in_its_grace_at_the_stop_is_read_on_after_the_restart() {
        let (d, p) = setup();
        let old = d.path().join("access_log.1");
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        t.set_rotate_grace(Duration::from_secs(3600));
        lines(&mut t);
        std::fs::rename(&p, &old).unwrap();
        append(&p, "new 1\n");
        assert_eq!(lines(&mut t).0, ["new 1\n"]);
        let cp = t.checkpoint();
        assert!(cp.rotated.is_some());
        drop(t);
        // The server has not reopened its log yet; then a second rotation renames it again.
        append(&old, "2\n");
        std::fs::rename(&old, d.path().join("access_log.2")).unwrap();
        append(&p, "new 2\n");
        let mut t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::Resumed);
        assert!(t.next_deadline().is_some());
        assert_eq!(lines(&mut t).0, ["2\n", "new 2\n"]);
        // Gone from the folder: its rest cannot be read, and the restart still resumes.
        let cp = t.checkpoint();
        std::fs::remove_file(d.path().join("access_log.2")).unwrap();
        let t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!((t.started(), t.next_deadline()), (Started::Resumed, None));
    }

    #[test]
    fn a_new_file_that_took_the_checkpoints_inode_is_not_its_rotated_file() {
        let (d, p) = setup();
        append(&p, "1\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        lines(&mut t);
        let mut cp = t.checkpoint();
        drop(t);
        // The same inode under another name with another head (an inode reused), or shorter.
        std::fs::rename(&p, d.path().join("access_log.1")).unwrap();
        append(&p, "new\n");
        cp.fingerprint = Fingerprint::of(b"9\n");
        let t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::CheckpointMismatch);
        cp.fingerprint = Fingerprint::of(b"1\n");
        cp.offset = 100;
        let t = Tailer::open(&p, StartAt::End, Some(&cp)).unwrap();
        assert_eq!(t.started(), Started::CheckpointMismatch);
    }

    #[test]
    fn a_line_growing_past_max_line_is_dropped_and_counted() {
        let (_d, p) = setup();
        append(&p, "a\n");
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        assert_eq!(lines(&mut t).0, ["a\n"]);
        let long = "x".repeat(MAX_LINE + 10);
        append(&p, &long);
        let (got, stats) = lines(&mut t);
        assert!(got.is_empty());
        assert_eq!(stats.oversized, 1);
        // A restart inside it goes on skipping it (and does not count it again).
        let cp = t.checkpoint();
        assert_eq!(cp.offset, 2 + long.len() as u64);
        let mut t = Tailer::open(&p, StartAt::Beginning, Some(&cp)).unwrap();
        append(&p, &long);
        append(&p, "still the long line\nb\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["b\n"]);
        assert_eq!(stats.oversized, 0);
        // A line longer than the whole buffer, then a normal one, in one poll.
        append(&p, &"y".repeat(TAIL_CHUNK * 2 + 3));
        append(&p, "\nc\n");
        let (got, stats) = lines(&mut t);
        assert_eq!(got, ["c\n"]);
        assert_eq!(stats.oversized, 1);
    }

    #[test]
    fn many_lines_come_in_large_chunks() {
        let (_d, p) = setup();
        let mut data = String::new();
        for i in 0..200_000 {
            data.push_str(&format!("line {i}\n"));
        }
        append(&p, &data);
        let mut t = Tailer::open(&p, StartAt::Beginning, None).unwrap();
        let mut chunks = 0;
        let mut all = Vec::new();
        t.poll(&mut |c: &[u8]| {
            chunks += 1;
            all.extend_from_slice(c);
        })
        .unwrap();
        assert_eq!(all, data.as_bytes());
        assert!(chunks <= data.len() / TAIL_CHUNK + 1, "{chunks} chunks");
    }
}
