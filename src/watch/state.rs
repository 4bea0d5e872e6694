//! The active bans (and recidive history) saved under `[state] dir` next to the read offsets,
//! so that a restarted `watch` keeps its bans without announcing them again.
//!
//! Written atomically like the checkpoints (temporary file, fsync, rename, fsync of the folder),
//! and *before* them: after a crash between the two writes the bans are newer than the offsets,
//! so the lines read again only repeat offenses of keys already banned, which are suppressed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decide::ban_table::Snapshot;

/// The file name of the ban set inside the state directory.
pub const FILE_NAME: &str = "bans.json";

/// Bump when the stored shape changes incompatibly; an unknown version is refused.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt ban file (move it aside to start afresh): {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: ban file version {found}, this floodwatch reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    snapshot: Snapshot,
}

/// Loads `dir/bans.json`; a missing file is the first start and gives an empty snapshot.
pub fn load(dir: &Path) -> Result<Snapshot, StateError> {
    let path = dir.join(FILE_NAME);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let stored: Stored = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(source) => return Err(StateError::Corrupt { path, source }),
    };
    if stored.version != VERSION {
        return Err(StateError::Version {
            path,
            found: stored.version,
        });
    }
    Ok(stored.snapshot)
}

/// Replaces `dir/bans.json` atomically; `dir` must exist.
pub fn save(dir: &Path, snapshot: &Snapshot) -> Result<(), StateError> {
    let path = dir.join(FILE_NAME);
    let io_err = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    let stored = Stored {
        version: VERSION,
        snapshot: snapshot.clone(),
    };
    let text = serde_json::to_vec(&stored).map_err(|e| io_err(io::Error::other(e)))?;
    crate::atomic_file::replace(&path, &text).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::ban_table::SavedBan;

    fn ban() -> SavedBan {
        SavedBan {
            key: "203.0.113.7".into(),
            key_vhost: None,
            rule: "default".into(),
            vhost: Some("example.com".into()),
            rate: "20r/s".into(),
            burst: 100,
            requests: 412,
            first_seen_ms: 1,
            time_ms: 2,
            ban_ms: 600_000,
            until_ms: 600_002,
            offense: 1,
            via_proxy: false,
        }
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Snapshot::default());
        let snap = Snapshot {
            bans: vec![ban()],
            history: vec![],
        };
        save(dir.path(), &snap).unwrap();
        assert_eq!(load(dir.path()).unwrap(), snap);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("corrupt"), "{e}");
    }
}
