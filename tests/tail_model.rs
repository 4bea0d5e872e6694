//! Model-based test of `source::tail::Tailer`: random sequences of writes (whole lines, partial
//! lines, oversized lines), rename rotation (with and without a new file), writes to the rotated
//! or deleted file by a server that has not reopened its log yet, copytruncate, deletion,
//! re-creation and restarts (checkpoint saved to a state directory, drop the tailer, actions
//! while it is down, reopen from the saved checkpoint) are applied to a real file in a temporary
//! directory, polling at random points; after each poll the lines read must equal what a model
//! of the files says. It runs with no grace period for rotated files and with one that never
//! ends.
//!
//! The model keeps the bytes of every file the path ever named and which one the tailer follows
//! at which offset, and states the contract in a few lines (see [`Model::poll`] and
//! [`Model::start`]); it knows nothing of inodes, fingerprints or buffers. Every line carries a
//! unique number, so that lines read twice are also caught independently of the model.
//!
//! What the model says is lost, because no tailer of a path can read it:
//! - lines written before a copytruncate but after the last poll (they are only in the copy),
//!   and the unfinished line of a truncated file;
//! - lines written to a rotated file after its grace (with no grace: after the poll that saw the
//!   new file), or after the next rotation;
//! - what the tailer had not read of a file when it was stopped, if that file is no longer in
//!   the folder when it starts again (deleted; a file renamed by a rotation is found again and
//!   read on), or if nothing of it had been read (its fingerprint is empty: an inode alone does
//!   not identify a file); the same for a rotated file still in its grace at the stop.
//!
//! Lines longer than `MAX_LINE` are left out on both sides: the tailer drops them, or hands them
//! out complete for the parser to reject.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use floodwatch::config::StartAt;
use floodwatch::parse::MAX_LINE;
use floodwatch::source::checkpoint::{Checkpoints, FINGERPRINT_MAX};
use floodwatch::source::tail::Tailer;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    /// Writes the rest of the unfinished line, if any, then `lines` lines; the first one is
    /// oversized if `long`; the last one is cut after `cut`% of its bytes if given.
    Write {
        lines: u8,
        long: bool,
        cut: Option<u8>,
    },
    /// Renames the file away (as logrotate does), then creates an empty one at the path if
    /// `create`.
    Rotate {
        create: bool,
    },
    /// The server writes `lines` lines to the file it had open before the last rotation or
    /// deletion (finishing its unfinished line first).
    WriteOld {
        lines: u8,
    },
    /// Copies the file away and truncates it (logrotate's `copytruncate`).
    CopyTruncate,
    Delete,
    /// Creates an empty file at the path if there is none.
    Recreate,
    Poll,
    /// Takes a checkpoint and drops the tailer; polls do nothing until `Start`.
    Stop,
    /// Opens a tailer again from the checkpoint.
    Start,
}

fn action() -> impl Strategy<Value = Action> {
    let write = (
        0u8..4,
        prop::bool::weighted(0.1),
        prop::option::of(0u8..100),
    )
        .prop_map(|(lines, long, cut)| Action::Write { lines, long, cut });
    prop_oneof![
        6 => write,
        4 => Just(Action::Poll),
        1 => any::<bool>().prop_map(|create| Action::Rotate { create }),
        2 => (1u8..3).prop_map(|lines| Action::WriteOld { lines }),
        1 => Just(Action::CopyTruncate),
        1 => Just(Action::Delete),
        1 => Just(Action::Recreate),
        1 => Just(Action::Stop),
        1 => Just(Action::Start),
    ]
}

/// One file the path named at some point.
struct MFile {
    data: Vec<u8>,
    /// Bumped by each truncation.
    generation: u32,
    /// Under some name in the folder (renamed by a rotation or not); false once deleted.
    in_folder: bool,
    /// Its first bytes (up to `FINGERPRINT_MAX`) when the tailer last looked at it: what its
    /// fingerprint covers.
    head: Vec<u8>,
}

/// Where the tailer stood at a stop: the file followed (and the generation read), its offset,
/// and the rotated file still read with its offset.
type Saved = (Option<(usize, u32)>, usize, Option<(usize, usize)>);

/// What must be read: the contract of `Tailer`, without any of its mechanics.
#[derive(Default)]
struct Model {
    files: Vec<MFile>,
    /// The file the path names.
    at_path: Option<usize>,
    /// The file the tailer follows, the generation it read, and the offset after its last
    /// whole line.
    cur: Option<(usize, u32)>,
    pos: usize,
    /// A rotated file still read, and the offset after its last whole line read.
    retiring: Option<(usize, usize)>,
    /// Whether rotated files are kept (a grace period that never ends) or left at once.
    keep_rotated: bool,
    /// The tailer's position when stopped, and its rotated file's.
    saved: Option<Saved>,
    lines: Vec<Vec<u8>>,
}

impl Model {
    /// The whole lines of file `f` after `pos`, and if `all`, its unterminated rest.
    fn read(&mut self, f: usize, pos: &mut usize, all: bool) {
        self.look(Some(f));
        let rest = &self.files[f].data[*pos..];
        let whole = if all {
            rest.len()
        } else {
            rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        self.lines.extend(
            rest[..whole]
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec),
        );
        *pos += whole;
    }

    fn append(&mut self, bytes: &[u8]) {
        let f = match self.at_path {
            Some(f) => f,
            None => self.create(),
        };
        self.files[f].data.extend_from_slice(bytes);
    }

    fn create(&mut self) -> usize {
        self.files.push(MFile {
            data: Vec::new(),
            generation: 0,
            in_folder: true,
            head: Vec::new(),
        });
        self.at_path = Some(self.files.len() - 1);
        self.files.len() - 1
    }

    fn open(&mut self, start: StartAt) {
        self.cur = self.at_path.map(|f| (f, 0));
        self.look(self.at_path);
        self.pos = match (self.at_path, start) {
            (Some(f), StartAt::End) => {
                let d = &self.files[f].data;
                d.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
            }
            _ => 0,
        };
    }

    /// The new whole lines of a rotated file being kept; every whole line of the followed file
    /// after our offset (from 0 if it was truncated); then, if the path names another file, the
    /// new file from its start, and the followed file is kept for its grace, or left with its
    /// unterminated rest (as is a kept one on the next rotation). A deleted file is followed
    /// until the path names a file again.
    fn poll(&mut self) {
        if let Some((r, mut pos)) = self.retiring {
            self.read(r, &mut pos, false);
            self.retiring = Some((r, pos));
        }
        loop {
            let Some((f, seen)) = self.cur else {
                match self.at_path {
                    Some(f) => {
                        self.cur = Some((f, self.files[f].generation));
                        self.pos = 0;
                        continue;
                    }
                    None => return,
                }
            };
            let file = &self.files[f];
            if file.generation != seen {
                self.pos = 0;
                self.cur = Some((f, file.generation));
            }
            let mut pos = self.pos;
            self.read(f, &mut pos, false);
            self.pos = pos;
            match self.at_path {
                Some(now) if now != f => {
                    if let Some((r, mut rpos)) = self.retiring.take() {
                        self.read(r, &mut rpos, true);
                    }
                    if self.keep_rotated {
                        self.retiring = Some((f, pos));
                    } else {
                        self.read(f, &mut pos, true);
                    }
                    self.cur = None;
                }
                _ => return,
            }
        }
    }

    /// The tailer takes the fingerprint of file `f` (at an open).
    fn look(&mut self, f: Option<usize>) {
        if let Some(f) = f {
            let file = &mut self.files[f];
            file.head = file.data[..file.data.len().min(FINGERPRINT_MAX)].to_vec();
        }
    }

    fn stop(&mut self) {
        self.saved = Some((self.cur, self.pos, self.retiring.take()));
    }

    /// Whether file `f`, which the tailer had read to `pos`, is found again under whatever name
    /// it has in the folder: not deleted, at least that long, and starting with the bytes the
    /// tailer last saw at its start (some, or the file is not looked for). A truncated file
    /// rewritten with the same first bytes passes (no fingerprint can tell): lines have unique
    /// numbers, so that happens only below `pos`, and reading on from there repeats nothing.
    fn found(&self, f: usize, pos: usize) -> bool {
        let file = &self.files[f];
        file.in_folder
            && !file.head.is_empty()
            && file.data.len() >= pos
            && file.data.starts_with(&file.head)
    }

    /// Resumes at the saved offset if the path names the same file, not truncated since, at
    /// least that long, or if that file is still in the folder under another name (the next
    /// poll reads it to its end, then switches); otherwise reads what the path names from its
    /// start. The rotated file goes on being read if it is found too.
    fn start(&mut self) {
        let Some((cur, pos, retiring)) = self.saved.take() else {
            return;
        };
        match cur {
            Some((f, seen))
                if self.at_path == Some(f)
                    && self.files[f].generation == seen
                    && self.files[f].data.len() >= pos =>
            {
                self.cur = cur;
                self.pos = pos;
            }
            Some((f, _)) if self.found(f, pos) => {
                self.cur = Some((f, self.files[f].generation));
                self.pos = pos;
            }
            _ => {
                self.cur = self.at_path.map(|f| (f, self.files[f].generation));
                self.pos = 0;
            }
        }
        self.look(self.cur.map(|(f, _)| f));
        self.retiring = retiring.filter(|&(r, rpos)| self.found(r, rpos));
        self.look(self.retiring.map(|(r, _)| r));
    }
}

/// The real file, the tailer, and the model, driven together.
struct World {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    path: PathBuf,
    start_at: StartAt,
    grace: Duration,
    tailer: Option<Tailer>,
    /// The state directory.
    state: PathBuf,
    /// Next line number, and the unwritten rest of the line being written.
    next: u64,
    pending: Vec<u8>,
    /// The server's handle on the file before the last rotation or deletion, its model index,
    /// and the rest of the line it had not finished there.
    old: Option<(fs::File, usize, Vec<u8>)>,
    /// Handles on the deleted files, kept open so that no new file gets their inode: a reused
    /// inode with the same first bytes is beyond what any fingerprint can tell.
    graveyard: Vec<fs::File>,
    moved: u32,
    model: Model,
    got: Vec<Vec<u8>>,
}

impl World {
    fn new(start_at: StartAt, keep_rotated: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("state")).unwrap();
        World {
            dir: dir.path().to_path_buf(),
            path: dir.path().join("access_log"),
            state: dir.path().join("state"),
            _dir: dir,
            start_at,
            grace: if keep_rotated {
                Duration::MAX
            } else {
                Duration::ZERO
            },
            tailer: None,
            next: 0,
            pending: Vec::new(),
            old: None,
            graveyard: Vec::new(),
            moved: 0,
            model: Model {
                keep_rotated,
                ..Model::default()
            },
            got: Vec::new(),
        }
    }

    fn line(&mut self, long: bool) -> Vec<u8> {
        let n = self.next;
        self.next += 1;
        let (fill, len) = if long {
            (b'L', 2 * MAX_LINE)
        } else {
            (b'x', (n % 17) as usize)
        };
        let mut line = format!("{n:06}-").into_bytes();
        line.resize(line.len() + len, fill);
        line.push(b'\n');
        line
    }

    /// The server keeps its handle on the file the path names, and what it had not finished.
    fn server_moves_on(&mut self) {
        let f = self.model.at_path.unwrap();
        let handle = OpenOptions::new().append(true).open(&self.path).unwrap();
        let before = self
            .old
            .replace((handle, f, std::mem::take(&mut self.pending)));
        self.graveyard.extend(before.map(|(h, _, _)| h));
    }

    fn write_old(&mut self, lines: u8) {
        let Some((mut handle, f, rest)) = self.old.take() else {
            return;
        };
        let mut bytes = rest;
        for _ in 0..lines {
            let line = self.line(false);
            bytes.extend_from_slice(&line);
        }
        handle.write_all(&bytes).unwrap();
        self.model.files[f].data.extend_from_slice(&bytes);
        self.old = Some((handle, f, Vec::new()));
    }

    fn write(&mut self, lines: u8, long: bool, cut: Option<u8>) {
        let mut bytes = std::mem::take(&mut self.pending);
        for i in 0..lines {
            let mut line = self.line(long && i == 0);
            if let (Some(cut), true) = (cut, i + 1 == lines) {
                let k = 1 + (line.len() - 1) * usize::from(cut) / 100;
                self.pending = line.split_off(k.min(line.len() - 1));
            }
            bytes.extend_from_slice(&line);
        }
        if bytes.is_empty() {
            return;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        f.write_all(&bytes).unwrap();
        self.model.append(&bytes);
    }

    /// A name in the directory that the tailer does not follow.
    fn aside(&mut self) -> PathBuf {
        self.moved += 1;
        self.dir.join(format!("access_log.{}", self.moved))
    }

    fn apply(&mut self, a: &Action) {
        match *a {
            Action::Write { lines, long, cut } => self.write(lines, long, cut),
            Action::Rotate { create } => {
                if self.model.at_path.is_none() {
                    return;
                }
                self.server_moves_on();
                let to = self.aside();
                fs::rename(&self.path, to).unwrap();
                self.model.at_path = None;
                if create {
                    fs::File::create(&self.path).unwrap();
                    self.model.create();
                }
            }
            Action::CopyTruncate => {
                let Some(f) = self.model.at_path else {
                    return;
                };
                self.pending.clear();
                let to = self.aside();
                fs::copy(&self.path, to).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                let file = &mut self.model.files[f];
                file.data.clear();
                file.generation += 1;
            }
            Action::Delete => {
                if let Some(f) = self.model.at_path {
                    self.server_moves_on();
                    self.model.at_path = None;
                    self.model.files[f].in_folder = false;
                    fs::remove_file(&self.path).unwrap();
                }
            }
            Action::WriteOld { lines } => self.write_old(lines),
            Action::Recreate => {
                if self.model.at_path.is_none() {
                    fs::File::create(&self.path).unwrap();
                    self.model.create();
                }
            }
            Action::Poll => self.poll(),
            Action::Stop => {
                if let Some(t) = self.tailer.take() {
                    // Through the state file, as `watch` does.
                    let mut set = Checkpoints::new();
                    set.insert(t.checkpoint());
                    set.save(&self.state).unwrap();
                    self.model.stop();
                }
            }
            Action::Start => self.start(),
        }
    }

    fn start(&mut self) {
        if self.tailer.is_none() {
            let set = Checkpoints::load(&self.state).unwrap();
            let mut t = Tailer::open(&self.path, self.start_at, set.get(&self.path)).unwrap();
            t.set_rotate_grace(self.grace);
            self.tailer = Some(t);
            self.model.start();
        }
    }

    fn poll(&mut self) {
        let Some(t) = &mut self.tailer else {
            return;
        };
        let got = &mut self.got;
        t.poll(&mut |chunk: &[u8]| {
            got.extend(chunk.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec))
        })
        .unwrap();
        self.model.poll();
        let valid = |l: &&Vec<u8>| l.strip_suffix(b"\n").unwrap_or(l).len() <= MAX_LINE;
        let got: Vec<_> = self.got.iter().filter(valid).collect();
        let want: Vec<_> = self.model.lines.iter().filter(valid).collect();
        assert_eq!(
            got.iter().map(|l| show(l)).collect::<Vec<_>>(),
            want.iter().map(|l| show(l)).collect::<Vec<_>>()
        );
        // Independently of the model: no complete line is read twice. (The unfinished last
        // lines of rotated files are pieces, which may share their first bytes.)
        let mut seen = HashSet::new();
        for l in got.iter().filter(|l| l.ends_with(b"\n")) {
            assert!(seen.insert(&l[..6]), "read twice: {}", show(l));
        }
    }
}

fn show(l: &[u8]) -> String {
    String::from_utf8_lossy(&l[..l.len().min(40)]).into_owned()
}

fn run(prelude: &[Action], start_at: StartAt, keep_rotated: bool, actions: &[Action]) -> World {
    let mut w = World::new(start_at, keep_rotated);
    for a in prelude {
        w.apply(a);
    }
    let mut t = Tailer::open(&w.path, start_at, None).unwrap();
    t.set_rotate_grace(w.grace);
    w.tailer = Some(t);
    w.model.open(start_at);
    for a in actions {
        w.apply(a);
    }
    // Whatever was written must be read in the end.
    w.start();
    w.poll();
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_tailer_reads_what_the_model_says(
        prelude in prop::collection::vec(
            (0u8..4, prop::bool::weighted(0.1), prop::option::of(0u8..100))
                .prop_map(|(lines, long, cut)| Action::Write { lines, long, cut }),
            0..3,
        ),
        beginning in any::<bool>(),
        keep_rotated in any::<bool>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        let start_at = if beginning { StartAt::Beginning } else { StartAt::End };
        run(&prelude, start_at, keep_rotated, &actions);
    }
}

fn write(lines: u8) -> Action {
    Action::Write {
        lines,
        long: false,
        cut: None,
    }
}

fn partial(lines: u8) -> Action {
    Action::Write {
        lines,
        long: false,
        cut: Some(50),
    }
}

/// The model's own sanity: a run with every kind of event reads the lines a person expects.
#[test]
fn a_hand_written_history_reads_as_expected() {
    use Action::*;
    let w = run(
        &[write(2)],
        StartAt::End,
        false,
        &[
            write(1),   // 000002
            partial(1), // 000003 cut
            Poll,       // reads 2
            Rotate { create: true },
            write(1), // 000004 in the new file
            Poll,     // 3's first half (unterminated), then 4
            Stop,
            write(1), // 000005, written while stopped
            Start,
            Poll, // 5
            write(1),
            CopyTruncate, // 000006 only in the copy
            write(1),     // 000007
            Poll,
            Delete,
            Stop,
            Recreate,
            write(1), // 000008
            Start,
        ],
    );
    let got: Vec<String> = w.got.iter().map(|l| show(l)).collect();
    assert_eq!(
        got,
        [
            "000002-xx\n",
            "000003",
            "000004-xxxx\n",
            "000005-xxxxx\n",
            "000007-xxxxxxx\n",
            "000008-xxxxxxxx\n"
        ]
    );
}

/// The same with a server that writes to the old file after the rotation, and files kept.
#[test]
fn late_writes_to_a_rotated_file_are_read_while_it_is_kept() {
    use Action::*;
    let w = run(
        &[],
        StartAt::End,
        true,
        &[
            write(1),   // 000000
            partial(1), // 000001, cut
            Poll,
            Rotate { create: true },
            write(1), // 000002, in the new file
            Poll,
            WriteOld { lines: 1 }, // the rest of 000001, then 000003, in the old file
            write(1),              // 000004
            Poll,
            Delete,
            WriteOld { lines: 1 }, // 000005 in the deleted file
            Recreate,
            write(1),              // 000006
            WriteOld { lines: 1 }, // 000007
        ],
    );
    // The final poll drains the deleted file (5, 7) before it reads its successor (6): order
    // holds within each file.
    let got: Vec<String> = w.got.iter().map(|l| show(l)).collect();
    assert_eq!(
        got,
        [
            "000000-\n",
            "000002-xx\n",
            "000001-x\n",
            "000003-xxx\n",
            "000004-xxxx\n",
            "000005-xxxxx\n",
            "000007-xxxxxxx\n",
            "000006-xxxxxx\n",
        ]
    );
}

/// Restarts while a rotation is under way: the file renamed while stopped (with no successor
/// yet), and the rotated file still in its grace at the stop, are found again and read on.
#[test]
fn a_restart_in_the_middle_of_a_rotation_loses_nothing() {
    use Action::*;
    let w = run(
        &[],
        StartAt::End,
        true,
        &[
            write(1), // 000000
            Poll,
            Stop,
            write(1),                 // 000001, written while stopped
            Rotate { create: false }, // renamed while stopped, no new file yet
            WriteOld { lines: 1 },    // 000002, the server has not reopened
            Start,
            Poll, // 1, 2 from the renamed file
            Recreate,
            write(1), // 000003 in the new file
            Poll,     // the renamed file is kept for its grace
            Stop,
            WriteOld { lines: 1 }, // 000004 in it, while stopped
            Start,
            Poll,
            write(1), // 000005
        ],
    );
    let got: Vec<String> = w.got.iter().map(|l| show(l)).collect();
    assert_eq!(
        got,
        [
            "000000-\n",
            "000001-x\n",
            "000002-xx\n",
            "000003-xxx\n",
            "000004-xxxx\n",
            "000005-xxxxx\n",
        ]
    );
}
