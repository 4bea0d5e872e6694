//! Read positions of tailed files, saved under the state directory so that `watch` resumes after
//! a restart where it stopped, reading the lines written while it was down.
//!
//! A position names the file by its path, its (device, inode) and a [`Fingerprint`] of its first
//! bytes: the inode alone is not enough, because file systems reuse the inode number of a deleted
//! file for the next one created. [`crate::source::tail::Tailer::open`] decides what to do with a
//! checkpoint; this module only stores them.
//!
//! The set is loaded and saved through [`crate::state_file`] (versioned, replaced atomically): a
//! missing file is the first start and gives an empty set; a corrupt one is an error, not an
//! empty set, which would re-read (`start_at = "beginning"`) or skip (`"end"`) whatever was
//! written while stopped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state_file::{self, StateFileError};

/// The file name of the checkpoint set inside the state directory.
pub const FILE_NAME: &str = "checkpoints.json";

/// Bump when the stored shape changes incompatibly; an unknown version is refused.
const VERSION: u32 = 1;

/// How many head bytes a fingerprint covers at most.
pub const FINGERPRINT_MAX: usize = 256;

/// A hash of a file's first `len` bytes (`len` ≤ [`FINGERPRINT_MAX`]; fewer while the file is
/// shorter). 64-bit FNV-1a, written out here: it is persisted, so it must never change with a
/// library version or a random seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u16,
    pub hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fingerprint {
    /// The fingerprint of `head` (at most [`FINGERPRINT_MAX`] bytes of it are used).
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_MAX)];
        let hash = head.iter().fold(FNV_OFFSET, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        });
        Fingerprint {
            len: head.len() as u16,
            hash,
        }
    }

    /// Whether a file whose first bytes are `head` can be the file this was taken of: `head`
    /// must be at least `len` bytes long and its first `len` bytes hash the same.
    pub fn matches(&self, head: &[u8]) -> bool {
        let len = usize::from(self.len);
        head.len() >= len && Fingerprint::of(&head[..len]) == *self
    }
}

/// Where reading of one path stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(with = "path_bytes")]
    pub path: PathBuf,
    /// The identity of the file that was being read. `dev = inode = 0` (no real file has inode
    /// 0) records that the path had no file: it will be read from its start when it appears.
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: Fingerprint,
    /// Just after the last whole line handed out (or dropped as oversized).
    pub offset: u64,
    /// The file the path named before, if it was still being read (a rename rotation's grace
    /// period, see `tail`): after a restart its rest is read if it is still in the same folder.
    /// Absent from files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<Rotated>,
}

/// Where reading of a rotated file stopped; it is found again by its identity, under whatever
/// name it now has in the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: Fingerprint,
    pub offset: u64,
}

/// The saved positions, one per path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    by_path: BTreeMap<PathBuf, Checkpoint>,
}

/// What the file holds beside its version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    files: Vec<Checkpoint>,
}

impl Checkpoints {
    pub fn new() -> Checkpoints {
        Checkpoints::default()
    }

    /// Loads `dir/checkpoints.json`; a missing file (or directory) gives an empty set.
    pub fn load(dir: &Path) -> Result<Checkpoints, StateFileError> {
        let Some(stored) = state_file::load::<Stored>(dir, FILE_NAME, VERSION)? else {
            return Ok(Checkpoints::new());
        };
        let by_path = stored
            .files
            .into_iter()
            .map(|c| (c.path.clone(), c))
            .collect();
        Ok(Checkpoints { by_path })
    }

    /// Replaces `dir/checkpoints.json` atomically; `dir` must exist.
    pub fn save(&self, dir: &Path) -> Result<(), StateFileError> {
        let stored = Stored {
            files: self.by_path.values().cloned().collect(),
        };
        state_file::save(dir, FILE_NAME, VERSION, &stored)
    }

    pub fn get(&self, path: &Path) -> Option<&Checkpoint> {
        self.by_path.get(path)
    }

    /// Adds or replaces the position of `cp.path`.
    pub fn insert(&mut self, cp: Checkpoint) {
        self.by_path.insert(cp.path.clone(), cp);
    }

    pub fn remove(&mut self, path: &Path) -> Option<Checkpoint> {
        self.by_path.remove(path)
    }

    /// Keeps only the positions for which `keep` is true (e.g. paths still watched).
    pub fn retain(&mut self, mut keep: impl FnMut(&Checkpoint) -> bool) {
        self.by_path.retain(|_, c| keep(c));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Checkpoint> {
        self.by_path.values()
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// Paths are stored as a JSON string when they are UTF-8 and as an array of bytes otherwise: a
/// Unix path is any bytes, and one odd vhost name must not make the whole set unsavable.
mod path_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(t) => s.serialize_str(t),
            None => path.as_os_str().as_bytes().serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => PathBuf::from(t),
            Repr::Bytes(b) => PathBuf::from(OsString::from_vec(b)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn cp(path: &[u8], offset: u64) -> Checkpoint {
        Checkpoint {
            path: PathBuf::from(OsString::from_vec(path.to_vec())),
            dev: 2049,
            inode: 1234,
            fingerprint: Fingerprint::of(b"1.2.3.4 - - [x]\n"),
            offset,
            rotated: None,
        }
    }

    #[test]
    fn a_set_survives_save_and_load_even_with_a_non_utf8_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = Checkpoints::new();
        set.insert(cp(b"/var/www/vhosts/a/logs/access_log", 10));
        set.insert(cp(b"/var/www/vhosts/\xff\xfe/logs/access_log", 20));
        let mut rotating = cp(b"/var/www/vhosts/b/logs/access_log", 30);
        rotating.rotated = Some(Rotated {
            dev: 2049,
            inode: 99,
            fingerprint: Fingerprint::of(b"old"),
            offset: 7,
        });
        set.insert(rotating);
        set.save(dir.path()).unwrap();
        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.len(), 3);
        // Saving again replaces the file and leaves no temporary file behind.
        set.remove(Path::new("/var/www/vhosts/a/logs/access_log"));
        set.save(dir.path()).unwrap();
        assert_eq!(Checkpoints::load(dir.path()).unwrap(), set);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn a_file_saved_before_rotated_positions_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = br#"{"version":1,"files":[{"path":"/l/access_log","dev":1,"inode":2,"fingerprint":{"len":0,"hash":14695981039346656037},"offset":3}]}"#;
        fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let set = Checkpoints::load(dir.path()).unwrap();
        let cp = set.get(Path::new("/l/access_log")).unwrap();
        assert_eq!((cp.offset, cp.rotated), (3, None));
    }

    #[test]
    fn a_missing_file_is_an_empty_set_and_a_corrupt_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Checkpoints::load(dir.path()).unwrap().is_empty());
        // A field beside `files` that this floodwatch does not know is refused.
        fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version":1,"files":[],"more":[]}"#,
        )
        .unwrap();
        let err = Checkpoints::load(dir.path()).unwrap_err();
        assert!(matches!(err, StateFileError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn the_fingerprint_is_fnv1a_of_at_most_256_bytes() {
        // Published FNV-1a 64 test vectors: the persisted value must never change.
        assert_eq!(Fingerprint::of(b"").hash, 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fingerprint::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fingerprint::of(b"foobar").hash, 0x8594_4171_f739_67e8);
        let long = vec![b'x'; 1000];
        let fp = Fingerprint::of(&long);
        assert_eq!(fp.len, 256);
        assert_eq!(fp, Fingerprint::of(&long[..256]));
        assert!(fp.matches(&long));
        assert!(!fp.matches(&long[..255]));
        let mut other = long.clone();
        other[100] = b'y';
        assert!(!fp.matches(&other));
        assert!(Fingerprint::of(b"").matches(b"anything"));
    }
}
