//! `bans.json`: the whole ban table as one JSON file, rewritten at every save, as floodwatch kept
//! it before the journal ([`super::journal`]). Still read, so that a state folder of an earlier
//! version keeps its bans after an upgrade ([`super::BanStore::open`] moves them to the journal).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decide::ban_table::Snapshot;
use crate::state_file::{self, StateFileError};

/// The file name of the ban set inside the state directory.
pub const FILE_NAME: &str = "bans.json";

/// Bump when the stored shape changes incompatibly; an unknown version is refused.
const VERSION: u32 = 1;

/// What the file holds beside its version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    snapshot: Snapshot,
}

/// Loads `dir/bans.json`; a missing file is the first start and gives an empty snapshot.
pub fn load(dir: &Path) -> Result<Snapshot, StateFileError> {
    let stored = state_file::load::<Stored>(dir, FILE_NAME, VERSION)?;
    Ok(stored.map(|s| s.snapshot).unwrap_or_default())
}

/// Replaces `dir/bans.json` atomically, as earlier versions did; `dir` must exist.
#[cfg(test)]
pub fn save(dir: &Path, snapshot: &Snapshot) -> Result<(), StateFileError> {
    let stored = Stored {
        snapshot: snapshot.clone(),
    };
    state_file::save(dir, FILE_NAME, VERSION, &stored)
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
            manual: false,
            origin: None,
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
    }

    #[test]
    fn the_file_keeps_its_shape() {
        // As every floodwatch so far has written it: a file of an earlier run must load.
        let text = concat!(
            r#"{"version":1,"snapshot":{"bans":[{"key":"203.0.113.7","rule":"default","#,
            r#""vhost":"example.com","rate":"20r/s","burst":100,"requests":412,"#,
            r#""first_seen_ms":1,"time_ms":2,"ban_ms":600000,"until_ms":600002,"offense":1,"#,
            r#""via_proxy":false}],"history":[]}}"#
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let snap = load(dir.path()).unwrap();
        assert_eq!(snap.bans, [ban()]);
        save(dir.path(), &snap).unwrap();
        let again = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(again, text);
    }
}
