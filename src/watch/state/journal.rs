//! The bans' journal file (`bans.journal`): a header line, then records appended one save at a
//! time, each a slot's whole state (see [`crate::decide::ban_table::SavedSlot`]); read in order,
//! the last record of a slot wins. Rewritten whole (atomically) when it holds twice what a fresh
//! copy would: a compaction.
//!
//! A record is its payload's length and CRC-32 (4 bytes each, little-endian), then the payload
//! (`codec`). A save is one append: a crash in the middle of one (power loss; a kill
//! cannot split a write the kernel took) can leave its last record cut short or garbled at the
//! end of the file, and that tail is dropped with a warning: it was the newest save, made before
//! the read offsets were, so the lines behind it are read again and its bans decided again. A
//! record that fails its check with records after it is damage, not a crash: an error naming
//! the file and the byte, as for any corrupt state file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::codec;
use crate::decide::ban_table::SavedSlot;
use crate::state_file::StateFileError;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "bans.journal";
/// The header line is this, the version, and a newline.
const HEADER: &str = "floodwatch bans journal ";
/// Bump when the records change incompatibly; a journal of another version is refused.
const VERSION: u32 = 1;
/// No slot's record comes near this; a longer one is damage.
const MAX_RECORD: u64 = 1 << 24;
/// A journal is not compacted below this many records: rewriting a small file saves nothing.
/// (Tests compact small files, to go through compactions at all.)
#[cfg(not(test))]
const COMPACT_MIN: u64 = 1 << 14;
#[cfg(test)]
const COMPACT_MIN: u64 = 64;

/// What reading a journal found.
#[derive(Debug, PartialEq, Eq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// The bytes up to the end of the last good record.
    pub len: u64,
    /// Bytes after that, of a save a crash cut short (dropped).
    pub torn: u64,
}

/// Reads the journal at `path`, handing each record to `f` in order; `None` when there is none.
pub fn replay(
    path: &Path,
    mut f: impl FnMut(SavedSlot),
) -> Result<Option<Replayed>, StateFileError> {
    let io_err = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |offset: u64, why: String| StateFileError::Damaged {
        path: path.to_path_buf(),
        offset,
        why,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let size = file.metadata().map_err(io_err)?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut pos = read_header(&mut r, path)?;
    let mut records = 0;
    let mut payload = Vec::new();
    loop {
        let left = size - pos;
        if left == 0 {
            break;
        }
        let mut head = [0u8; 8];
        if left < 8 {
            return Ok(Some(torn(pos, size, records)));
        }
        r.read_exact(&mut head).map_err(io_err)?;
        let [a, b, c, d, e, f2, g, h] = head;
        let len = u64::from(u32::from_le_bytes([a, b, c, d]));
        let crc = u32::from_le_bytes([e, f2, g, h]);
        let end = pos + 8 + len;
        if end > size {
            // Cut short, or a garbled length: either way nothing whole follows.
            return Ok(Some(torn(pos, size, records)));
        }
        if len > MAX_RECORD {
            return Err(damaged(pos, format!("a record of {len} bytes")));
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload).map_err(io_err)?;
        if crc32fast::hash(&payload) != crc {
            if end == size {
                return Ok(Some(torn(pos, size, records)));
            }
            return Err(damaged(pos, "a record fails its checksum".into()));
        }
        let slot = codec::decode(&payload).map_err(|why| damaged(pos, why))?;
        f(slot);
        records += 1;
        pos = end;
    }
    Ok(Some(Replayed {
        records,
        len: pos,
        torn: 0,
    }))
}

fn torn(pos: u64, size: u64, records: u64) -> Replayed {
    Replayed {
        records,
        len: pos,
        torn: size - pos,
    }
}

/// Checks the header line; the offset after it.
fn read_header(r: &mut impl Read, path: &Path) -> Result<u64, StateFileError> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() < 64 {
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line);
                let found = text
                    .strip_prefix(HEADER)
                    .and_then(|v| v.parse::<u64>().ok());
                return match found {
                    Some(v) if v == u64::from(VERSION) => Ok(line.len() as u64 + 1),
                    Some(found) => Err(StateFileError::Version {
                        path: path.to_path_buf(),
                        found,
                        expected: VERSION,
                    }),
                    None => Err(not_a_journal(path)),
                };
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StateFileError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(not_a_journal(path))
}

fn not_a_journal(path: &Path) -> StateFileError {
    StateFileError::Damaged {
        path: path.to_path_buf(),
        offset: 0,
        why: format!("no {HEADER:?} header"),
    }
}

/// An open journal, appended to at each save.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Records in the file.
    records: u64,
    /// A record being framed (kept: its capacity serves every save).
    buf: Vec<u8>,
}

impl Journal {
    /// Writes a journal of the records `each` hands out, replacing the file at `path` whole.
    pub fn create(
        path: &Path,
        each: impl FnOnce(&mut dyn FnMut(&SavedSlot)),
    ) -> Result<Journal, StateFileError> {
        let io_err = |source| StateFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut len = 0u64;
        let mut records = 0u64;
        let mut buf = Vec::new();
        crate::atomic_file::replace_with(path, |w| {
            let header = format!("{HEADER}{VERSION}\n");
            w.write_all(header.as_bytes())?;
            len = header.len() as u64;
            let mut failed = Ok(());
            each(&mut |s| {
                if failed.is_ok() {
                    buf.clear();
                    frame(s, &mut buf);
                    len += buf.len() as u64;
                    records += 1;
                    failed = w.write_all(&buf);
                }
            });
            failed
        })
        .map_err(io_err)?;
        let file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len,
            records,
            buf,
        })
    }

    /// Opens the journal at `path` to append after its first `len` bytes, `records` records
    /// (what [`replay`] read whole); a torn tail after them is cut off.
    pub fn open(path: &Path, len: u64, records: u64) -> Result<Journal, StateFileError> {
        let io_err = |source| StateFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
        if file.metadata().map_err(io_err)?.len() != len {
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len,
            records,
            buf: Vec::new(),
        })
    }

    /// Appends the records `each` hands out, in one write, and syncs them. After an error the
    /// file's end is unknown: rewrite it whole ([`Journal::create`]) before appending again.
    pub fn append(
        &mut self,
        each: impl FnOnce(&mut dyn FnMut(&SavedSlot)),
    ) -> Result<(), StateFileError> {
        self.buf.clear();
        let (buf, mut n) = (&mut self.buf, 0);
        each(&mut |s| {
            frame(s, buf);
            n += 1;
        });
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = (self.file.write_all(&self.buf)).and_then(|()| self.file.sync_data());
        written.map_err(|source| StateFileError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.len += self.buf.len() as u64;
        self.records += n;
        // One attack's worth of records need not stay allocated between saves.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Whether the file holds more than twice the records of a fresh copy, `live` (amortised:
    /// each record written is rewritten at most about once more). A flood's new bans are all
    /// live: they grow the file without a rewrite.
    pub fn wants_compaction(&self, live: u64) -> bool {
        self.records > COMPACT_MIN.max(live.saturating_mul(2))
    }

    pub fn bytes(&self) -> u64 {
        self.len
    }
}

/// Appends `s` to `out` as a framed record.
fn frame(s: &SavedSlot, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    codec::encode(s, out);
    let payload = &out[start + 8..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::codec::tests::slot;
    use super::*;

    fn read(path: &Path) -> Result<(Vec<SavedSlot>, Replayed), StateFileError> {
        let mut got = Vec::new();
        let rep = replay(path, |s| got.push(s))?.expect("a journal");
        Ok((got, rep))
    }

    fn slots(n: usize) -> Vec<SavedSlot> {
        (0..n)
            .map(|i| {
                let mut s = slot();
                s.key = format!("192.0.2.{i}");
                if let Some(b) = &mut s.ban {
                    b.key = s.key.clone();
                }
                s
            })
            .collect()
    }

    fn create(path: &Path, all: &[SavedSlot]) -> Journal {
        Journal::create(path, |f| all.iter().for_each(f)).unwrap()
    }

    #[test]
    fn records_come_back_in_order_after_a_rewrite_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(replay(&path, |_| {}).unwrap(), None);
        let all = slots(3);
        let mut j = create(&path, &all[..2]);
        j.append(|f| f(&all[2])).unwrap();
        j.append(|_| {}).unwrap();
        let mut emptied = all[0].clone();
        emptied.ban = None;
        emptied.past.clear();
        j.append(|f| f(&emptied)).unwrap();
        let (got, rep) = read(&path).unwrap();
        assert_eq!(got, [&all[..], &[emptied]].concat());
        assert_eq!((rep.records, rep.torn), (4, 0));
        assert_eq!(rep.len, j.bytes());
        assert_eq!(rep.len, std::fs::metadata(&path).unwrap().len());
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(b"floodwatch bans journal 1\n"));

        // A reopened journal appends after what was read.
        let mut j = Journal::open(&path, rep.len, rep.records).unwrap();
        j.append(|f| f(&all[1])).unwrap();
        assert_eq!(read(&path).unwrap().0.len(), 5);
        // A compaction replaces it whole, leaving nothing else in the folder.
        create(&path, &all[1..2]);
        assert_eq!(read(&path).unwrap().0, [all[1].clone()]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_save_cut_short_at_the_end_is_dropped_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let all = slots(3);
        let j = create(&path, &all);
        let whole = std::fs::read(&path).unwrap();
        let size = whole.len() as u64;
        let last = {
            let mut one = Vec::new();
            frame(&all[2], &mut one);
            size - one.len() as u64
        };
        // Every cut inside the last record, header and payload alike.
        for cut in last + 1..size {
            std::fs::write(&path, &whole[..cut as usize]).unwrap();
            let (got, rep) = read(&path).unwrap();
            assert_eq!(got, all[..2], "cut at {cut}");
            assert_eq!(
                rep,
                Replayed {
                    records: 2,
                    len: last,
                    torn: cut - last
                }
            );
        }
        // The last record garbled in place (its length whole, its bytes not).
        let mut garbled = whole.clone();
        let n = garbled.len();
        garbled[n - 3] ^= 0x55;
        std::fs::write(&path, &garbled).unwrap();
        let (got, rep) = read(&path).unwrap();
        assert_eq!((got.len(), rep.torn), (2, size - last));
        drop(j);
    }

    #[test]
    fn damage_before_the_end_is_an_error_naming_the_file_and_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let all = slots(3);
        create(&path, &all);
        let whole = std::fs::read(&path).unwrap();
        let header = "floodwatch bans journal 1\n".len();
        let mut garbled = whole.clone();
        garbled[header + 12] ^= 0x55;
        std::fs::write(&path, &garbled).unwrap();
        let err = read(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(FILE_NAME) && msg.contains("checksum") && msg.contains("move it aside"),
            "{msg}"
        );
        assert!(msg.contains(&format!("at byte {header}")), "{msg}");

        // Not a journal, or one of another version.
        std::fs::write(&path, b"{\"version\":1}").unwrap();
        assert!(matches!(
            read(&path).unwrap_err(),
            StateFileError::Damaged { offset: 0, .. }
        ));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            read(&path).unwrap_err(),
            StateFileError::Damaged { .. }
        ));
        std::fs::write(&path, b"floodwatch bans journal 2\n").unwrap();
        assert!(matches!(
            read(&path).unwrap_err(),
            StateFileError::Version {
                found: 2,
                expected: 1,
                ..
            }
        ));
        // A record whose checksum holds but whose content does not.
        let mut bad = b"floodwatch bans journal 1\n".to_vec();
        let payload = [0x80u8];
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bad.extend_from_slice(&payload);
        std::fs::write(&path, &bad).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("flags"));
    }

    #[test]
    fn compaction_is_wanted_once_the_records_outnumber_the_live_slots_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let all = slots(200);
        let mut j = create(&path, &all);
        // The same 200 slots again and again: superseded records pile up.
        let mut appended = 200;
        while appended <= COMPACT_MIN.max(400) {
            assert!(!j.wants_compaction(200));
            j.append(|f| all.iter().for_each(f)).unwrap();
            appended += 200;
        }
        assert!(j.wants_compaction(200));
        // As many live slots as records: nothing to gain.
        assert!(!j.wants_compaction(appended));
        let reopened = Journal::open(&path, j.bytes(), appended).unwrap();
        assert!(reopened.wants_compaction(200));
    }
}
