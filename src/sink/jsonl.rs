//! The `jsonl` sink: each event as one JSON line (the schema in docs/guide.md, Events),
//! appended to a file or written to stdout (`path = "-"`), flushed as it happens.
//!
//! Rotation: before each write the file at `path` is compared (device and inode) with the one
//! held open, and reopened when logrotate has moved it away, so no SIGHUP is needed; a
//! `copytruncate` rotation works too, since the file is opened for appending.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{log, At, Sink, SinkError};
use crate::config::ConfigError;
use crate::decide::event::write_json_line;
use crate::decide::Event;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonl {
    /// The file events are appended to, or "-" for stdout.
    path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonlConfig {
    /// `None` = stdout.
    pub path: Option<PathBuf>,
}

impl JsonlConfig {
    pub fn check(raw: RawJsonl, at: &At) -> Result<JsonlConfig, ConfigError> {
        match raw.path.as_str() {
            "" => Err(at.error("path", "empty (use \"-\" for stdout)")),
            "-" => Ok(JsonlConfig { path: None }),
            p => Ok(JsonlConfig {
                path: Some(PathBuf::from(p)),
            }),
        }
    }
}

pub struct Jsonl {
    name: String,
    dry_run: bool,
    path: Option<PathBuf>,
    /// The open file and its (device, inode).
    file: Option<(File, (u64, u64))>,
    line: Vec<u8>,
}

impl Jsonl {
    pub fn new(c: &JsonlConfig, name: String, dry_run: bool) -> Result<Jsonl, SinkError> {
        let mut sink = Jsonl {
            name,
            dry_run,
            path: c.path.clone(),
            file: None,
            line: Vec::with_capacity(512),
        };
        if !dry_run && sink.path.is_some() {
            // Open now, so a path that cannot be written is an error before replay starts.
            sink.reopen()?;
        }
        Ok(sink)
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::io(format!("cannot open {}: {e}", path.display())))?;
        let m = f
            .metadata()
            .map_err(|e| SinkError::io(format!("{}: {e}", path.display())))?;
        self.file = Some((f, (m.dev(), m.ino())));
        Ok(())
    }

    /// The open file, reopened if the path now names another file (or none).
    fn current(&mut self) -> Result<&mut File, SinkError> {
        let moved = match (&self.path, &self.file) {
            (Some(p), Some((_, id))) => match std::fs::metadata(p) {
                Ok(m) => (m.dev(), m.ino()) != *id,
                Err(_) => true,
            },
            _ => true,
        };
        if moved {
            self.reopen()?;
        }
        match &mut self.file {
            Some((f, _)) => Ok(f),
            None => Err(SinkError::io("no file open")),
        }
    }
}

impl Sink for Jsonl {
    fn deliver(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line.clear();
        write_json_line(event, &mut self.line);
        if self.dry_run {
            let text = String::from_utf8_lossy(&self.line);
            log(
                &self.name,
                format_args!("dry run: would write {}", text.trim_end()),
            );
            return Ok(());
        }
        if self.path.is_none() {
            let mut out = std::io::stdout().lock();
            return out
                .write_all(&self.line)
                .and_then(|()| out.flush())
                .map_err(|e| match e.kind() {
                    // The reader is gone (`| head`): it will not come back.
                    std::io::ErrorKind::BrokenPipe => SinkError::refused("stdout closed"),
                    _ => SinkError::io(format!("writing to stdout: {e}")),
                });
        }
        let line = std::mem::take(&mut self.line);
        let written = self
            .current()
            .and_then(|f| f.write_all(&line).map_err(|e| SinkError::io(e.to_string())));
        self.line = line;
        if written.is_err() {
            // Next attempt opens the file afresh (it may have been a full disk or a lost mount).
            self.file = None;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::decide::{Ban, Unban};
    use crate::engine::Key;
    use crate::hit::NO_VHOST;

    fn key(s: &str) -> Key {
        Key {
            net: s.parse().unwrap(),
            vhost: NO_VHOST,
        }
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Ban(Ban {
                time_ms: 1_000,
                key: key("2001:db8::/64"),
                rule: Arc::from("default"),
                vhost: Some(Arc::from("example.com\n\"x")),
                rate: Arc::from("20r/s"),
                burst: 100,
                requests: 200,
                first_seen_ms: 0,
                ban_ms: 600_000,
                until_ms: 601_000,
                offense: 1,
                via_proxy: false,
                origin: Default::default(),
            }),
            Event::Unban(Unban {
                time_ms: 601_000,
                key: key("2001:db8::/64"),
                rule: Arc::from("default"),
                reason: Default::default(),
            }),
        ]
    }

    #[test]
    fn appends_one_line_per_event_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let c = JsonlConfig {
            path: Some(path.clone()),
        };
        let mut s = Jsonl::new(&c, "t".into(), false).unwrap();
        let ev = events();
        s.deliver(&ev[0]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "old");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["key"], "2001:db8::/64");
        assert_eq!(v["vhost"], "example.com\n\"x");

        // logrotate moves the file away: the next event goes to a new file at `path`.
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        s.deliver(&ev[1]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("{\"type\":\"unban\""), "{text}");
    }

    #[test]
    fn dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let c = JsonlConfig {
            path: Some(path.clone()),
        };
        let mut s = Jsonl::new(&c, "t".into(), true).unwrap();
        s.deliver(&events()[0]).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_path_fails_at_start() {
        let c = JsonlConfig {
            path: Some(PathBuf::from("/nonexistent-dir/x/events.jsonl")),
        };
        assert!(Jsonl::new(&c, "t".into(), false).is_err());
    }
}
