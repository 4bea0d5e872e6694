//! Reads a log file (plain or gzip) as large chunks of whole lines.
//!
//! The parser borrows lines straight out of the chunk buffer, so each byte of the file is copied
//! once, by `read`, into a buffer that is reused for the whole file. Compression is recognised by
//! its magic bytes, not by the file name: rotated archives are not always named `.gz`.
//!
//! A line longer than the buffer can never be a valid access-log line; it is dropped while
//! streaming (counted in [`Chunks::oversized`]) so memory stays flat whatever the input.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes read from the file per chunk: large enough to amortise syscalls and the producer's
/// per-chunk work, small enough to keep many open files cheap.
pub const CHUNK: usize = 1 << 20;

/// Counts bytes as they come off the disk (before decompression), for progress reporting.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The lines of a chunk of whole lines, without their `\n`; nothing after the last newline
/// counts as a line (a chunk's last line may lack its newline, then it is the last item).
pub fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk)
        .chain(std::iter::once(chunk.len()))
        .map_while(move |end| {
            let line = &chunk[start..end];
            start = end + 1;
            (!line.is_empty() || end != chunk.len()).then_some(line)
        })
}

/// Whole-line chunks of one file.
pub struct Chunks {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// `buf[..filled]` holds data; `buf[..consumed]` was handed out as the previous chunk.
    filled: usize,
    consumed: usize,
    eof: bool,
    oversized: u64,
}

impl Chunks {
    /// Opens a file, decompressing gzip (also multi-member, as `cat a.gz b.gz` makes) on the fly.
    /// `capacity` is the read buffer's size; `disk_bytes` counts the bytes read from disk (it may
    /// be shared by all the files of a run, for one progress figure).
    pub fn open(path: &Path, capacity: usize, disk_bytes: Arc<AtomicU64>) -> io::Result<Chunks> {
        let mut file = File::open(path)?;
        let mut magic = [0u8; 2];
        let n = read_full(&mut file, &mut magic)?;
        file.seek(SeekFrom::Start(0))?;
        let counted = Counted {
            inner: file,
            count: disk_bytes.clone(),
        };
        let reader: Box<dyn Read + Send> = if n == 2 && magic == [0x1f, 0x8b] {
            // One per open archive, and thousands may be open: a small input buffer.
            Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(64 * 1024, counted),
            ))
        } else {
            Box::new(counted)
        };
        Ok(Chunks::from_reader(reader, capacity))
    }

    /// Chunks of any reader (tests, stdin).
    pub fn from_reader(reader: Box<dyn Read + Send>, capacity: usize) -> Chunks {
        Chunks {
            reader,
            buf: vec![0; capacity.max(1)],
            filled: 0,
            consumed: 0,
            eof: false,
            oversized: 0,
        }
    }

    /// The next run of whole lines, each ending in `\n` except the file's last line when it has
    /// none. `None` at the end of the file.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        // Move the unfinished line left over from the previous chunk to the front.
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.consumed = 0;
        loop {
            while !self.eof && self.filled < self.buf.len() {
                match self.reader.read(&mut self.buf[self.filled..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.filled == 0 {
                return Ok(None);
            }
            if let Some(last) = memchr::memrchr(b'\n', &self.buf[..self.filled]) {
                self.consumed = last + 1;
                return Ok(Some(&self.buf[..self.consumed]));
            }
            if self.eof {
                self.consumed = self.filled;
                return Ok(Some(&self.buf[..self.consumed]));
            }
            // A full buffer without a newline: drop this line's bytes up to its end.
            self.oversized += 1;
            self.skip_rest_of_line()?;
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let n = match self.reader.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    self.filled = 0;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[..n]) {
                self.buf.copy_within(nl + 1..n, 0);
                self.filled = n - nl - 1;
                return Ok(());
            }
        }
    }

    /// Everything was handed out: the next [`Chunks::next_chunk`] returns `None`.
    pub fn at_end(&self) -> bool {
        self.eof && self.consumed == self.filled
    }

    /// Lines dropped because they were longer than the chunk buffer.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
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
    use std::io::Write;

    fn all_lines(mut c: Chunks) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = c.next_chunk().unwrap() {
            assert!(!chunk.is_empty());
            out.extend(chunk.split_inclusive(|&b| b == b'\n').map(|l| l.to_vec()));
        }
        assert!(c.at_end());
        out
    }

    /// Hands out data a few bytes at a time, as a decompressor or a pipe does.
    struct Dribble(Vec<u8>, usize);
    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn chunks_of(data: Vec<u8>) -> Chunks {
        Chunks::from_reader(Box::new(Dribble(data, 0)), CHUNK)
    }

    #[test]
    fn chunks_hold_whole_lines_and_the_unterminated_last_one() {
        let mut data = Vec::new();
        for i in 0..300_000 {
            writeln!(data, "line {i}").unwrap();
        }
        data.extend_from_slice(b"truncated");
        let lines = all_lines(chunks_of(data.clone()));
        assert_eq!(lines.len(), 300_001);
        assert_eq!(lines.concat(), data);
        assert_eq!(lines[123_456], b"line 123456\n");
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_dropped_and_counted() {
        let mut data = b"first\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', CHUNK * 2 + 5));
        data.extend_from_slice(b"\nafter\n");
        let mut c = chunks_of(data);
        let mut lines = Vec::new();
        while let Some(chunk) = c.next_chunk().unwrap() {
            lines.extend(chunk.split_inclusive(|&b| b == b'\n').map(|l| l.to_vec()));
        }
        assert_eq!(lines, [b"first\n".to_vec(), b"after\n".to_vec()]);
        assert_eq!(c.oversized(), 1);
    }

    #[test]
    fn gzip_is_recognised_by_its_magic_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access_log.1");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"a\nb\n").unwrap();
        let mut gz = enc.finish().unwrap();
        // A second gzip member, as concatenated rotations produce.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"c\n").unwrap();
        gz.extend(enc.finish().unwrap());
        std::fs::write(&path, &gz).unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        // Big enough for the whole file: read in one chunk, and it says so.
        let mut whole = Chunks::open(&path, CHUNK, bytes.clone()).unwrap();
        assert!(!whole.at_end());
        assert_eq!(whole.next_chunk().unwrap().unwrap(), b"a\nb\nc\n");
        assert!(whole.at_end());
        assert!(whole.next_chunk().unwrap().is_none());
        bytes.store(0, Ordering::Relaxed);
        let c = Chunks::open(&path, CHUNK, bytes.clone()).unwrap();
        assert_eq!(
            all_lines(c),
            [b"a\n".to_vec(), b"b\n".to_vec(), b"c\n".to_vec()]
        );
        assert_eq!(bytes.load(Ordering::Relaxed), gz.len() as u64);
    }

    #[test]
    fn empty_and_tiny_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(all_lines(Chunks::open(&empty, CHUNK, Arc::default()).unwrap()).is_empty());
        let one = dir.path().join("one");
        std::fs::write(&one, "x").unwrap();
        assert_eq!(
            all_lines(Chunks::open(&one, CHUNK, Arc::default()).unwrap()),
            [b"x".to_vec()]
        );
    }

    #[test]
    fn lines_of_a_chunk_leave_out_only_what_follows_the_last_newline() {
        let got: Vec<&[u8]> = lines(b"a\n\nb\n").collect();
        assert_eq!(got, [&b"a"[..], b"", b"b"]);
        let got: Vec<&[u8]> = lines(b"a\nlast").collect();
        assert_eq!(got, [&b"a"[..], b"last"]);
        assert_eq!(lines(b"").count(), 0);
    }
}
