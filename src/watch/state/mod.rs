//! The active bans (and recidive history) kept under `[state] dir` next to the read offsets, so
//! that a restarted `watch` keeps its bans without announcing them again.
//!
//! They live in a journal ([`journal`]): each save appends the slots that changed since the last
//! one, so a save costs what changed, not the whole table; the file is rewritten whole when it
//! has doubled. Saved *before* the read offsets: after a crash between the two writes the bans
//! are newer than the offsets, so the lines read again only repeat offenses of keys already
//! banned, which are suppressed. A crash (kill -9 included) loses at most what changed since the
//! last save (about a second): bans decided from lines then are decided and announced again from
//! the same lines, read again; a manual ban or unban in that second is lost.
//!
//! A folder of an earlier version holds `bans.json` ([`json`]): it is read once, written to the
//! journal, then removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::decide::ban_table::{BanTable, RestoreStats};
use crate::state_file::{self, StateFileError};

mod codec;
pub mod journal;
pub mod json;

use journal::Journal;

/// The bans' file in the state folder, open for the saves to come.
pub struct BanStore {
    path: PathBuf,
    /// `None` when the next save must write the file whole: first start, migration, a torn
    /// tail, a failed append.
    journal: Option<Journal>,
}

impl BanStore {
    /// Loads the bans kept in `dir` into `table` (which then tracks its changes for
    /// [`BanStore::save`]): the journal, or the `bans.json` of an earlier version.
    pub fn open(
        dir: &Path,
        table: &mut BanTable,
    ) -> Result<(BanStore, RestoreStats), StateFileError> {
        let path = dir.join(journal::FILE_NAME);
        let old = dir.join(json::FILE_NAME);
        let mut store = BanStore {
            path: path.clone(),
            journal: None,
        };
        let stats = if json_is_newer(&old, &path) {
            let stats = table.restore(&json::load(dir)?);
            log::info!(
                "{}: {} bans moved to {}",
                old.display(),
                stats.bans,
                journal::FILE_NAME
            );
            stats
        } else {
            let mut skipped = 0;
            let replayed = journal::replay(&path, |s| {
                if !table.restore_slot(&s) {
                    skipped += 1;
                }
            })?;
            if let Some(r) = replayed {
                if r.torn > 0 {
                    log::warn!(
                        "{}: the last save was cut short by a crash: its last {} bytes are dropped (the lines behind them are read again)",
                        path.display(),
                        r.torn
                    );
                }
                // Replayed records outnumbering the slots twice over: compacted now.
                if r.torn == 0 {
                    let journal = Journal::open(&path, r.len, r.records)?;
                    if !journal.wants_compaction(live_bound(table)) {
                        store.journal = Some(journal);
                    }
                }
            }
            RestoreStats {
                bans: table.active_len() as u64,
                history: table.history_len() as u64,
                skipped,
            }
        };
        table.track_changes();
        if store.journal.is_none() {
            store.save(table)?;
        }
        // Only once the journal holds its bans.
        state_file::remove(dir, json::FILE_NAME)?;
        Ok((store, stats))
    }

    /// Saves what changed in `table` since the last save: appended, or the file rewritten whole
    /// when it has doubled (or cannot be appended to).
    pub fn save(&mut self, table: &mut BanTable) -> Result<(), StateFileError> {
        if let Some(j) = &mut self.journal {
            if !j.wants_compaction(live_bound(table)) {
                let appended = j.append(|f| table.drain_changed(f));
                if appended.is_err() {
                    self.journal = None;
                }
                return appended;
            }
        }
        self.journal = None;
        table.drain_changed(|_| {});
        self.journal = Some(Journal::create(&self.path, |f| table.each_slot(f))?);
        Ok(())
    }

    /// The journal's size on disk now (0 before it is written).
    pub fn bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::bytes)
    }
}

/// At least the slots a compaction would write (a banned slot has a past ban too), cheaply.
fn live_bound(table: &BanTable) -> u64 {
    (table.active_len() + table.history_len()) as u64
}

/// Whether `bans.json` (of an earlier version) is to be read rather than the journal: there is
/// no journal, or the JSON was written after it (an older floodwatch ran since).
fn json_is_newer(json: &Path, journal: &Path) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(json), modified(journal)) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(j), Some(k)) => j > k || k == SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::allowlist::Allowlist;
    use crate::decide::ban_table::tests::{offense, rule};
    use crate::vhost::Vhosts;

    fn table() -> BanTable {
        let rules = [rule("a", 600, 2.0, 86_400, 86_400)];
        BanTable::new(&rules, Allowlist::default(), Vhosts::new())
    }

    fn open(dir: &Path) -> (BanStore, BanTable, RestoreStats) {
        let mut t = table();
        let (store, stats) = BanStore::open(dir, &mut t).unwrap();
        (store, t, stats)
    }

    #[test]
    fn bans_survive_a_restart_through_appends_and_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut t, stats) = open(dir.path());
        assert_eq!(stats, RestoreStats::default());
        assert!(
            dir.path().join(journal::FILE_NAME).exists(),
            "written at once"
        );
        for i in 0..5_000 {
            let key = format!("10.0.{}.{}", i / 256, i % 256);
            t.offense(&offense(&key, 0, i64::from(i) / 10)).unwrap();
            if i % 500 == 499 {
                store.save(&mut t).unwrap();
            }
        }
        t.expire(550_000);
        store.save(&mut t).unwrap();
        let (_, t2, stats) = open(dir.path());
        assert_eq!(stats.bans, t.active_len() as u64);
        assert_eq!(t2.snapshot(), t.snapshot());
        // Saving with nothing changed writes nothing.
        let before = store.bytes();
        store.save(&mut t).unwrap();
        assert_eq!(store.bytes(), before);
    }

    #[test]
    fn a_journal_of_superseded_records_is_compacted_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut t, _) = open(dir.path());
        // One slot changing often: many records, one live slot.
        // A day apart: out of each other's recidive window.
        for round in 0..3_000 {
            t.offense(&offense("192.0.2.1", 0, round * 86_401)).unwrap();
            t.expire(round * 86_401_000 + 600_000);
            t.forget_before(round * 86_401_000);
            store.save(&mut t).unwrap();
        }
        // Compacted as it went: never more than twice the live records (and the minimum).
        let path = dir.path().join(journal::FILE_NAME);
        let kept = fs::metadata(&path).unwrap().len();
        assert!(kept < 200 * 100, "{kept} bytes");
        let (_, t2, _) = open(dir.path());
        assert_eq!(t2.snapshot(), t.snapshot());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut t, _) = open(dir.path());
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        store.save(&mut t).unwrap();
        let kept = t.snapshot();
        t.offense(&offense("192.0.2.2", 0, 0)).unwrap();
        store.save(&mut t).unwrap();
        let path = dir.path().join(journal::FILE_NAME);
        let len = fs::metadata(&path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let (mut store2, mut t2, stats) = open(dir.path());
        assert_eq!(stats.bans, 1);
        assert_eq!(t2.snapshot(), kept);
        // The file was rewritten without the torn tail: appending goes on from there.
        t2.offense(&offense("192.0.2.3", 0, 0)).unwrap();
        store2.save(&mut t2).unwrap();
        let (_, t3, _) = open(dir.path());
        assert_eq!(t3.snapshot(), t2.snapshot());
    }

    #[test]
    fn a_bans_json_of_an_earlier_version_is_moved_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = table();
        old.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        old.offense(&offense("2001:db8::/64", 0, 5)).unwrap();
        json::save(dir.path(), &old.snapshot()).unwrap();
        let (_, t, stats) = open(dir.path());
        assert_eq!(stats.bans, 2);
        assert_eq!(t.snapshot(), old.snapshot());
        assert!(!dir.path().join(json::FILE_NAME).exists());
        let (_, t, _) = open(dir.path());
        assert_eq!(t.snapshot(), old.snapshot());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(journal::FILE_NAME),
            b"floodwatch bans journal 1\n\x05\0\0\0garbage-and-more",
        )
        .unwrap();
        let err = BanStore::open(dir.path(), &mut table()).err().unwrap();
        assert!(err.to_string().contains("bans.journal"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(json::FILE_NAME), b"{\"version\":1,").unwrap();
        let err = BanStore::open(dir.path(), &mut table()).err().unwrap();
        assert!(err.to_string().contains("bans.json"), "{err}");
    }
}
