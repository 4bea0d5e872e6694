//! `fleet.json` under `[state] dir`: the last stream entry this node applied (where a restart
//! resumes reading) and the messages not yet published (given to the publisher first at the
//! next start), through [`crate::state_file`] like the other state files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::follower::is_entry_id;
use super::message::Message;
use crate::state_file::{self, StateFileError};

pub const FILE_NAME: &str = "fleet.json";
const VERSION: u32 = 1;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_id: Option<String>,
    /// Each message as it would be published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unpublished: Vec<String>,
}

/// What a node keeps of the fleet across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub last_id: Option<String>,
    pub unpublished: Vec<Message>,
}

/// Loads `dir/fleet.json` (none: the first start). Messages or an id that do not check out are
/// dropped with a warning rather than refusing to start.
pub fn load(dir: &Path) -> Result<Saved, StateFileError> {
    let stored: Stored = state_file::load(dir, FILE_NAME, VERSION)?.unwrap_or_default();
    let last_id = stored.last_id.filter(|id| is_entry_id(id));
    let mut unpublished = Vec::with_capacity(stored.unpublished.len());
    let mut bad = 0;
    for text in &stored.unpublished {
        match Message::decode(text.as_bytes()) {
            Ok(m) => unpublished.push(m),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        log::warn!(
            "{}: {bad} unpublished fleet messages unreadable: dropped",
            FILE_NAME
        );
    }
    Ok(Saved {
        last_id,
        unpublished,
    })
}

pub fn save(dir: &Path, saved: &Saved) -> Result<(), StateFileError> {
    let stored = Stored {
        last_id: saved.last_id.clone(),
        unpublished: saved.unpublished.iter().map(|m| m.encode(0)).collect(),
    };
    state_file::save(dir, FILE_NAME, VERSION, &stored)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fleet::message::Kind;

    #[test]
    fn the_cursor_and_the_unpublished_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Saved::default());
        let saved = Saved {
            last_id: Some("1764064805000-3".into()),
            unpublished: vec![Message {
                kind: Kind::Ban,
                node: Arc::from("web-01"),
                key: "2001:db8::/64".parse().unwrap(),
                rule: Arc::from("default"),
                time_ms: 1_764_064_805_000,
                until_ms: 1_764_065_405_000,
                sent_ms: 0,
            }],
        };
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()).unwrap(), saved);
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version":1,"last_id":"x; rm","unpublished":["{}"]}"#,
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap(), Saved::default());
    }
}
