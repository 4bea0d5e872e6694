//! The one versioned load and save of the JSON files `watch` keeps under `[state] dir`: the read
//! offsets (`checkpoints.json`, [`crate::source::checkpoint`]), the active bans of earlier
//! versions (`bans.json`, [`crate::watch::state`]; now a journal) and the sinks' undelivered
//! events (`pending.json`,
//! [`crate::sink::runtime::pending`]). Those modules say what is stored; this one how.
//!
//! A file is one JSON object, `{"version": N, ...}`: the format's version beside the fields of
//! the stored value (a struct, which must not have a `version` field of its own). Loading checks
//! the version before the rest, so that a file of another format is refused as such, not as
//! corrupt. A missing file (or folder) is the first start. A file that exists but cannot be read
//! is an error naming it, never an empty state: silently forgetting offsets would re-read or
//! skip what was written while `watch` was stopped, forgetting bans would announce them again,
//! forgetting pending events would lose them; the operator decides (move the file aside to
//! start afresh). Saving replaces the file atomically ([`crate::atomic_file`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An error loading, saving or removing a state file; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt state file (move it aside to start afresh): {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A binary state file (the bans' journal) damaged at `offset`.
    #[error("{path}: corrupt state file (move it aside to start afresh): at byte {offset}, {why}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("{path}: state file version {found}, this floodwatch reads version {expected}")]
    Version {
        path: PathBuf,
        found: u64,
        expected: u32,
    },
}

/// Loads `dir/name`, written by [`save`] with `version`; `None` when there is no such file.
pub fn load<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    version: u32,
) -> Result<Option<T>, StateFileError> {
    let path = dir.join(name);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path, source }),
    };
    let corrupt = |source| StateFileError::Corrupt {
        path: path.clone(),
        source,
    };
    let mut fields: Map<String, Value> = serde_json::from_slice(&text).map_err(corrupt)?;
    let found = match fields.remove("version") {
        Some(v) => u64::deserialize(v).map_err(corrupt)?,
        None => return Err(corrupt(serde_json::Error::missing_field("version"))),
    };
    if found != u64::from(version) {
        return Err(StateFileError::Version {
            path,
            found,
            expected: version,
        });
    }
    T::deserialize(Value::Object(fields))
        .map(Some)
        .map_err(corrupt)
}

/// Replaces `dir/name` atomically with `value` stored as `version`; `dir` must exist.
pub fn save<T: Serialize>(
    dir: &Path,
    name: &str,
    version: u32,
    value: &T,
) -> Result<(), StateFileError> {
    #[derive(Serialize)]
    struct Stored<'a, T> {
        version: u32,
        #[serde(flatten)]
        value: &'a T,
    }
    let path = dir.join(name);
    let io_err = |source| StateFileError::Io {
        path: path.clone(),
        source,
    };
    let text =
        serde_json::to_vec(&Stored { version, value }).map_err(|e| io_err(io::Error::other(e)))?;
    crate::atomic_file::replace(&path, &text).map_err(io_err)
}

/// Removes `dir/name`; there being none is not an error.
pub fn remove(dir: &Path, name: &str) -> Result<(), StateFileError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StateFileError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "thing.json";

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Thing {
        items: Vec<u64>,
        label: String,
    }

    fn thing() -> Thing {
        Thing {
            // Above i64::MAX: fingerprints use the whole u64 range.
            items: vec![1, u64::MAX],
            label: "a".into(),
        }
    }

    fn write(dir: &Path, text: &str) {
        fs::write(dir.join(NAME), text).unwrap();
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn a_value_survives_save_and_load_stored_beside_its_version() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), NAME, 3, &thing()).unwrap();
        let text = fs::read_to_string(dir.path().join(NAME)).unwrap();
        assert_eq!(
            text,
            r#"{"version":3,"items":[1,18446744073709551615],"label":"a"}"#
        );
        assert_eq!(load(dir.path(), NAME, 3).unwrap(), Some(thing()));
        // Saving again replaces the file and leaves no temporary file behind.
        let other = Thing {
            items: vec![],
            label: "b".into(),
        };
        save(dir.path(), NAME, 3, &other).unwrap();
        assert_eq!(load(dir.path(), NAME, 3).unwrap(), Some(other));
        assert_eq!(names(dir.path()), [NAME]);
    }

    #[test]
    fn a_missing_file_or_folder_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load::<Thing>(dir.path(), NAME, 1).unwrap(), None);
        let missing = dir.path().join("missing");
        assert_eq!(load::<Thing>(&missing, NAME, 1).unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "{\"version\":1,\"items\":[",  // cut short
            "[1, 2]",                      // not an object
            r#"{"items":[],"label":"a"}"#, // no version
            r#"{"version":"1","items":[],"label":"a"}"#,
            r#"{"version":1,"items":[],"label":7}"#, // the value's shape
            r#"{"version":1,"items":[],"label":"a","extra":0}"#, // the value refuses unknowns
        ] {
            write(dir.path(), text);
            let err = load::<Thing>(dir.path(), NAME, 1).unwrap_err();
            assert!(
                matches!(err, StateFileError::Corrupt { .. }),
                "{text}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(NAME) && msg.contains("move it aside"), "{msg}");
        }
    }

    #[test]
    fn an_unknown_version_is_refused_before_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), r#"{"version":2,"other":"shape"}"#);
        let err = load::<Thing>(dir.path(), NAME, 1).unwrap_err();
        assert!(
            matches!(
                err,
                StateFileError::Version {
                    found: 2,
                    expected: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(NAME), "{err}");
    }

    #[test]
    fn saving_into_a_missing_folder_fails_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = save(&dir.path().join("missing"), NAME, 1, &thing()).unwrap_err();
        assert!(matches!(err, StateFileError::Io { .. }), "{err}");
        assert!(err.to_string().contains(NAME), "{err}");
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove(dir.path(), NAME).unwrap();
        save(dir.path(), NAME, 1, &thing()).unwrap();
        remove(dir.path(), NAME).unwrap();
        assert!(names(dir.path()).is_empty());
    }
}
