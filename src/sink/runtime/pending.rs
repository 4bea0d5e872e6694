//! Events a sink could not deliver before `watch` stopped (its endpoint was down), kept in the
//! state folder as `pending.json` so that the next start delivers them.
//!
//! Events are stored self-describing (keys as text, vhosts by name: vhost ids are only valid
//! within one run) under the sink they were for: its name (`sink[i] type`) and its `[[sink]]`
//! table. At the next start they go to the sink with the same table, wherever it now is in the
//! list; when no sink has that table any more (it was changed or removed), they are dropped and
//! reported, rather than given to whichever sink now has its number (two webhooks: removing the
//! first must not send its events to the second's URL). `watch` reads
//! the file once at start and replaces it about once a second while something changed (with
//! what the sinks hold at that moment, see `Sinks::pending`) and at stop, so a crash loses none
//! of them but may deliver again those delivered since the last save: delivery is at least
//! once, and every sink's delivery is safe to repeat. The file is loaded and saved through
//! [`crate::state_file`], and removed when nothing is pending.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::decide::ban_table::SavedBan;
use crate::decide::{Event, Unban, UnbanReason};
use crate::engine::Key;
use crate::hit::NO_VHOST;
use crate::state_file::{self, StateFileError};
use crate::vhost::Vhosts;

pub const FILE_NAME: &str = "pending.json";
const VERSION: u32 = 1;

/// What the file holds beside its version.
#[derive(Serialize, Deserialize)]
struct Stored {
    sinks: Vec<SinkPending>,
}

#[derive(Serialize, Deserialize)]
struct SinkPending {
    name: String,
    /// The sink's `[[sink]]` table; absent in files of earlier versions (then: by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<toml::Table>,
    events: Vec<SavedEvent>,
}

/// What a sink had not delivered when the file was written.
#[derive(Debug)]
pub struct Kept {
    pub name: String,
    pub table: Option<toml::Table>,
    pub events: Vec<Event>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedEvent {
    Ban(SavedBan),
    Unban(SavedUnban),
}

#[derive(Serialize, Deserialize)]
struct SavedUnban {
    time_ms: i64,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_vhost: Option<String>,
    rule: String,
    /// The event's `reason` (none: the ban expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn vhost_text(vhosts: &Vhosts, id: u32) -> Option<String> {
    match id {
        NO_VHOST => None,
        id => vhosts.name(id).map(|n| n.to_string()),
    }
}

fn key_of(vhosts: &Vhosts, key: &str, key_vhost: Option<&str>) -> Option<Key> {
    let net: Cidr = key.parse().ok()?;
    let vhost = key_vhost.map_or(NO_VHOST, |v| vhosts.intern(v.as_bytes()));
    Some(Key { net, vhost })
}

fn save_event(vhosts: &Vhosts, ev: &Event) -> SavedEvent {
    match ev {
        Event::Ban(b) => SavedEvent::Ban(SavedBan::of(b, vhosts)),
        Event::Unban(u) => SavedEvent::Unban(SavedUnban {
            time_ms: u.time_ms,
            key: u.key.net.to_string(),
            key_vhost: vhost_text(vhosts, u.key.vhost),
            rule: u.rule.to_string(),
            reason: u.reason.name().map(str::to_string),
        }),
    }
}

/// `None` for an entry whose key does not parse (the file is outside input).
fn load_event(vhosts: &Vhosts, ev: SavedEvent) -> Option<Event> {
    Some(match ev {
        SavedEvent::Ban(b) => {
            let key = key_of(vhosts, &b.key, b.key_vhost.as_deref())?;
            Event::Ban(b.to_ban(key, Arc::from(b.rule.as_str())))
        }
        SavedEvent::Unban(u) => Event::Unban(Unban {
            time_ms: u.time_ms,
            key: key_of(vhosts, &u.key, u.key_vhost.as_deref())?,
            rule: Arc::from(u.rule.as_str()),
            reason: UnbanReason::from_name(u.reason.as_deref()),
        }),
    })
}

/// The pending events of `dir`, by sink; none when there is no file.
pub fn load(dir: &Path, vhosts: &Vhosts) -> Result<Vec<Kept>, StateFileError> {
    let Some(stored) = state_file::load::<Stored>(dir, FILE_NAME, VERSION)? else {
        return Ok(Vec::new());
    };
    Ok(stored
        .sinks
        .into_iter()
        .map(|s| {
            let events = s
                .events
                .into_iter()
                .filter_map(|e| load_event(vhosts, e))
                .collect();
            Kept {
                name: s.name,
                table: s.table,
                events,
            }
        })
        .collect())
}

/// Replaces `dir/pending.json` atomically (removes it when nothing is pending). `tables` gives
/// each sink's `[[sink]]` table by name ([`Sinks::tables`](crate::sink::Sinks::tables)).
pub fn save(
    dir: &Path,
    vhosts: &Vhosts,
    pending: &[(String, Vec<Event>)],
    tables: &[(String, toml::Table)],
) -> Result<(), StateFileError> {
    if pending.iter().all(|(_, evs)| evs.is_empty()) {
        return state_file::remove(dir, FILE_NAME);
    }
    let stored = Stored {
        sinks: pending
            .iter()
            .map(|(name, evs)| SinkPending {
                name: name.clone(),
                table: tables
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone()),
                events: evs.iter().map(|e| save_event(vhosts, e)).collect(),
            })
            .collect(),
    };
    state_file::save(dir, FILE_NAME, VERSION, &stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Ban, Origin};

    #[test]
    fn pending_events_survive_a_save_and_load_with_their_vhost_keys() {
        let dir = tempfile::tempdir().unwrap();
        let vhosts = Vhosts::new();
        let v = vhosts.intern(b"a.example");
        let ban = Ban {
            time_ms: 5,
            key: Key {
                net: "2001:db8::/64".parse().unwrap(),
                vhost: v,
            },
            rule: Arc::from("flood"),
            vhost: Some(Arc::from("a.example")),
            rate: Arc::from("1r/s"),
            burst: 5,
            requests: 20,
            first_seen_ms: 1,
            ban_ms: 1000,
            until_ms: 1005,
            offense: 2,
            via_proxy: true,
            origin: Origin::Manual,
        };
        let unban = Unban {
            time_ms: 9,
            key: Key {
                net: "192.0.2.1".parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("flood"),
            reason: UnbanReason::Manual,
        };
        let pending = vec![(
            "sink[0] webhook".to_string(),
            vec![Event::Ban(ban), Event::Unban(unban)],
        )];
        let table: toml::Table =
            toml::from_str("type = \"webhook\"\nurl = \"http://h/x\"").unwrap();
        let tables = [("sink[0] webhook".to_string(), table.clone())];
        save(dir.path(), &vhosts, &pending, &tables).unwrap();
        // Another run interns vhosts in another order.
        let other = Vhosts::new();
        other.intern(b"b.example");
        let back = load(dir.path(), &other).unwrap();
        let Event::Ban(b) = &back[0].events[0] else {
            panic!("{back:?}")
        };
        assert_eq!(other.name(b.key.vhost).as_deref(), Some("a.example"));
        assert_eq!(b.origin, Origin::Manual);
        assert_eq!(back[0].events[1], pending[0].1[1]);
        assert_eq!(back[0].name, "sink[0] webhook");
        assert_eq!(back[0].table.as_ref(), Some(&table));

        save(dir.path(), &vhosts, &[], &[]).unwrap();
        assert!(load(dir.path(), &vhosts).unwrap().is_empty(), "removed");
    }

    #[test]
    fn a_file_of_an_earlier_run_loads_and_none_is_nothing_pending() {
        let dir = tempfile::tempdir().unwrap();
        let vhosts = Vhosts::new();
        assert!(load(dir.path(), &vhosts).unwrap().is_empty());
        // As written before sinks were matched by their table (no `table`).
        let text = concat!(
            r#"{"version":1,"sinks":[{"name":"sink[0] webhook","events":["#,
            r#"{"unban":{"time_ms":9,"key":"192.0.2.1","key_vhost":"a.example","rule":"flood"}},"#,
            r#"{"unban":{"time_ms":9,"key":"not an address","rule":"flood"}}]}]}"#
        );
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let back = load(dir.path(), &vhosts).unwrap();
        assert_eq!(
            (back[0].name.as_str(), back[0].table.as_ref()),
            ("sink[0] webhook", None)
        );
        let Event::Unban(u) = &back[0].events[0] else {
            panic!("{back:?}")
        };
        assert_eq!(vhosts.name(u.key.vhost).as_deref(), Some("a.example"));
        assert_eq!(
            back[0].events.len(),
            1,
            "an entry whose key does not parse is skipped"
        );
    }
}
