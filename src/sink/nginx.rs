//! The `nginx` sink: an include file of `deny <address or CIDR>;` lines, regenerated whole from
//! the active bans and reloaded carefully.
//!
//! A reload per ban is dangerous on a busy server (each one starts a new set of workers), so
//! events only change the set in memory; the file is written on a flush (when the queue runs
//! empty) and only when its content changes, at most once per `min_reload_interval`, counted in
//! wall time, also in replay: the interval protects the running nginx, which lives in wall time.
//! A change held back by the interval is written when it has passed, and at the latest when the
//! replay ends. Each write goes to a temporary file renamed over the old one (nginx never reads a
//! half-written file), then `test_command` (`nginx -t`) checks it; when that fails the previous
//! file is put back, the error is reported and nginx is not reloaded.
//!
//! With `reload_command = []` the file is kept current and nginx is never reloaded: the admin
//! reloads when under attack (the "panic button"); then writes wait for no interval.
//!
//! A key banned under two rules stays denied until both bans end. Bans keyed on client + vhost
//! deny the client everywhere the file is included: a deny line cannot name a vhost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::exec::run_command;
use super::{check_argv, log, At, Sink, SinkError};
use crate::addr::Cidr;
use crate::config::ConfigError;
use crate::decide::{Ban, Event};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    /// The include file, e.g. "/etc/nginx/conf.d/floodwatch-deny.conf".
    path: String,
    /// Run after writing a changed file; default ["nginx", "-s", "reload"]; [] never reloads.
    reload_command: Option<Vec<String>>,
    /// Must pass before the reload; default ["nginx", "-t"].
    test_command: Option<Vec<String>>,
    /// At most one reload per this much wall time; default "30s".
    min_reload_interval: Option<String>,
    /// How long each command may run; default "30s".
    timeout: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NginxConfig {
    pub path: PathBuf,
    pub reload_command: Vec<String>,
    pub test_command: Vec<String>,
    pub min_reload_interval: Duration,
    pub timeout: Duration,
}

impl NginxConfig {
    pub fn check(raw: RawNginx, at: &At) -> Result<NginxConfig, ConfigError> {
        if raw.path.trim().is_empty() {
            return Err(at.error("path", "empty"));
        }
        let argv = |key: &str, v: Option<Vec<String>>, default: &[&str]| {
            let v = v.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
            check_argv(at, key, &v).map(|()| v)
        };
        // An empty reload command is a choice: keep the file current, never reload.
        let reload_command = match raw.reload_command {
            Some(v) if v.is_empty() => v,
            v => argv("reload_command", v, &["nginx", "-s", "reload"])?,
        };
        Ok(NginxConfig {
            path: PathBuf::from(raw.path),
            reload_command,
            test_command: argv("test_command", raw.test_command, &["nginx", "-t"])?,
            min_reload_interval: match raw.min_reload_interval {
                Some(t) => at.duration("min_reload_interval", &t)?,
                None => Duration::from_secs(30),
            },
            timeout: match raw.timeout {
                Some(t) => at.duration("timeout", &t)?,
                None => Duration::from_secs(30),
            },
        })
    }
}

pub struct Nginx {
    name: String,
    dry_run: bool,
    config: NginxConfig,
    /// Denied ranges, with the rules whose bans hold each (a set: a ban given twice, restored
    /// and also kept as undelivered, counts once).
    active: BTreeMap<Cidr, BTreeSet<Arc<str>>>,
    /// What the file holds (as read at start, or as last written).
    on_disk: Option<Vec<u8>>,
    last_reload: Option<Instant>,
}

impl Nginx {
    pub fn new(c: &NginxConfig, name: String, dry_run: bool) -> Nginx {
        Nginx {
            name,
            dry_run,
            config: c.clone(),
            active: BTreeMap::new(),
            on_disk: None,
            last_reload: None,
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out =
            b"# Written by floodwatch: the active bans. Changes here are overwritten.\n".to_vec();
        for net in self.active.keys() {
            // Addresses print canonically (std's Display), CIDRs as address/prefix: nothing
            // from a log line reaches this file.
            let _ = writeln!(out, "deny {net};");
        }
        out
    }

    fn command(&self, argv: &[String]) -> Result<(), SinkError> {
        match argv.split_first() {
            Some((program, args)) => run_command(program, args, self.config.timeout),
            None => Ok(()),
        }
    }

    /// Writes `content`, tests it, reloads; on a failed test the old file is put back.
    fn install(&mut self, content: Vec<u8>) -> Result<(), SinkError> {
        let path = &self.config.path;
        let previous = self.on_disk.clone();
        write_atomically(path, &content)?;
        if let Err(e) = self.command(&self.config.test_command) {
            let restored = match &previous {
                Some(old) => write_atomically(path, old),
                None => fs::remove_file(path)
                    .map_err(|e| SinkError::io(format!("removing {}: {e}", path.display()))),
            };
            let note = match restored {
                Ok(()) => "previous file restored".to_string(),
                Err(r) => format!("could not restore the previous file: {r}"),
            };
            // Not retried: the same content would fail the same way. The next change tries again.
            self.on_disk = previous;
            return Err(SinkError::refused(format!(
                "test failed, not reloaded, {note}: {}",
                e.message
            )));
        }
        self.on_disk = Some(content);
        if self.config.reload_command.is_empty() {
            return Ok(());
        }
        self.last_reload = Some(Instant::now());
        // nginx -t passed: a failing reload (nginx restarting, say) is worth retrying.
        self.command(&self.config.reload_command)
            .map_err(|e| SinkError::unavailable(format!("reload failed: {}", e.message)))
    }
}

/// Writes a temporary file next to `path` and renames it over `path`.
fn write_atomically(path: &Path, content: &[u8]) -> Result<(), SinkError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".floodwatch-tmp");
    let tmp = path.with_file_name(tmp_name);
    let io =
        |what: &str, e: std::io::Error| SinkError::io(format!("{what} {}: {e}", tmp.display()));
    let mut f = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(content).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    fs::rename(&tmp, path).map_err(|e| {
        SinkError::io(format!(
            "renaming {} to {}: {e}",
            tmp.display(),
            path.display()
        ))
    })
}

impl Sink for Nginx {
    fn begin(&mut self) -> Result<(), SinkError> {
        if self.config.reload_command.is_empty() {
            log(
                &self.name,
                format_args!(
                    "reload_command = []: {} is kept current, nginx is never reloaded by \
                     floodwatch (reload it to apply the bans)",
                    self.config.path.display()
                ),
            );
        }
        self.on_disk = match fs::read(&self.config.path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SinkError::io(format!(
                    "reading {}: {e}",
                    self.config.path.display()
                )))
            }
        };
        Ok(())
    }

    /// Rebuilds the set from the bans active at start, so the next write keeps them.
    fn restore(&mut self, active: &[Ban]) -> Result<(), SinkError> {
        self.active.clear();
        for b in active {
            self.active
                .entry(b.key.net)
                .or_default()
                .insert(b.rule.clone());
        }
        Ok(())
    }

    fn deliver(&mut self, event: &Event) -> Result<(), SinkError> {
        match event {
            Event::Ban(b) => {
                self.active
                    .entry(b.key.net)
                    .or_default()
                    .insert(b.rule.clone());
            }
            Event::Unban(u) => {
                if let Some(rules) = self.active.get_mut(&u.key.net) {
                    rules.remove(&u.rule);
                    if rules.is_empty() {
                        self.active.remove(&u.key.net);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Option<Duration>, SinkError> {
        let content = self.render();
        if self.on_disk.as_deref() == Some(content.as_slice()) {
            return Ok(None);
        }
        if let Some(last) = self.last_reload {
            let since = last.elapsed();
            if since < self.config.min_reload_interval {
                return Ok(Some(self.config.min_reload_interval - since));
            }
        }
        if self.dry_run {
            log(
                &self.name,
                format_args!(
                    "dry run: would write {} deny lines to {}, run {:?}, then {:?}",
                    self.active.len(),
                    self.config.path.display(),
                    self.config.test_command,
                    self.config.reload_command
                ),
            );
            self.on_disk = Some(content);
            if !self.config.reload_command.is_empty() {
                self.last_reload = Some(Instant::now());
            }
            return Ok(None);
        }
        self.install(content).map(|()| None)
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

    fn ban(k: &str, rule: &str) -> Event {
        Event::Ban(Ban {
            time_ms: 0,
            key: key(k),
            rule: Arc::from(rule),
            vhost: None,
            rate: Arc::from("1r/s"),
            burst: 1,
            requests: 1,
            first_seen_ms: 0,
            ban_ms: 1000,
            until_ms: 1000,
            offense: 1,
            via_proxy: false,
            origin: Default::default(),
        })
    }

    fn unban(k: &str, rule: &str) -> Event {
        Event::Unban(Unban {
            time_ms: 0,
            key: key(k),
            rule: Arc::from(rule),
            reason: Default::default(),
        })
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    struct T {
        _dir: tempfile::TempDir,
        path: PathBuf,
        reloads: PathBuf,
        sink: Nginx,
    }

    /// A sink whose test command fails when the file contains `bad`, and whose reload command
    /// counts reloads in a file.
    fn setup(interval: Duration) -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.conf");
        let reloads = dir.path().join("reloads");
        let c = NginxConfig {
            path: path.clone(),
            reload_command: sh(&format!("echo r >> {}", reloads.display())),
            test_command: sh(&format!("! grep -q 10.9.9.9 {}", path.display())),
            min_reload_interval: interval,
            timeout: Duration::from_secs(10),
        };
        let mut sink = Nginx::new(&c, "t".into(), false);
        sink.begin().unwrap();
        T {
            _dir: dir,
            path,
            reloads,
            sink,
        }
    }

    fn reloads(t: &T) -> usize {
        std::fs::read_to_string(&t.reloads).map_or(0, |s| s.lines().count())
    }

    fn denies(t: &T) -> Vec<String> {
        std::fs::read_to_string(&t.path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    #[test]
    fn restored_bans_are_kept_in_the_file_and_ended_by_their_unbans() {
        let mut t = setup(Duration::ZERO);
        let active: Vec<Ban> = [ban("203.0.113.7", "a"), ban("203.0.113.7", "b")]
            .into_iter()
            .filter_map(|e| match e {
                Event::Ban(b) => Some(b),
                Event::Unban(_) => None,
            })
            .collect();
        // Twice, as a retry would: the set is rebuilt, not added to.
        t.sink.restore(&active).unwrap();
        t.sink.restore(&active).unwrap();
        t.sink.deliver(&ban("198.51.100.1", "a")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(denies(&t), ["deny 198.51.100.1;", "deny 203.0.113.7;"]);
        // Also kept as undelivered by the last run: given again, it still counts once.
        t.sink.deliver(&ban("203.0.113.7", "a")).unwrap();
        t.sink.deliver(&unban("203.0.113.7", "a")).unwrap();
        t.sink.deliver(&unban("203.0.113.7", "b")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(denies(&t), ["deny 198.51.100.1;"]);
    }

    #[test]
    fn writes_the_active_set_and_reloads_only_on_change() {
        let mut t = setup(Duration::ZERO);
        t.sink.deliver(&ban("203.0.113.7", "a")).unwrap();
        t.sink.deliver(&ban("2001:db8:1:2::/64", "a")).unwrap();
        t.sink.deliver(&ban("203.0.113.7", "b")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(denies(&t), ["deny 203.0.113.7;", "deny 2001:db8:1:2::/64;"]);
        assert_eq!(reloads(&t), 1);
        // Same content: no reload.
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(reloads(&t), 1);
        // Still banned under rule b.
        t.sink.deliver(&unban("203.0.113.7", "a")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(reloads(&t), 1);
        t.sink.deliver(&unban("203.0.113.7", "b")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(denies(&t), ["deny 2001:db8:1:2::/64;"]);
        assert_eq!(reloads(&t), 2);
        assert!(!t.path.with_file_name("deny.conf.floodwatch-tmp").exists());
    }

    #[test]
    fn without_a_reload_command_the_file_is_kept_current_and_never_reloaded() {
        let mut t = setup(Duration::from_secs(3600));
        t.sink.config.reload_command = vec![];
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        t.sink.deliver(&ban("10.0.0.2", "a")).unwrap();
        // No reload to protect nginx from: no interval either.
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(denies(&t), ["deny 10.0.0.1;", "deny 10.0.0.2;"]);
        assert_eq!(reloads(&t), 0);
        // The test still guards the file.
        t.sink.deliver(&ban("10.9.9.9", "a")).unwrap();
        assert!(t.sink.flush().is_err());
        assert_eq!(denies(&t), ["deny 10.0.0.1;", "deny 10.0.0.2;"]);
    }

    #[test]
    fn changes_wait_for_the_minimum_interval() {
        let mut t = setup(Duration::from_secs(3600));
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        t.sink.deliver(&ban("10.0.0.2", "a")).unwrap();
        let wait = t.sink.flush().unwrap().unwrap();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        assert_eq!(denies(&t), ["deny 10.0.0.1;"]);
        assert_eq!(reloads(&t), 1);
    }

    #[test]
    fn a_failed_test_restores_the_previous_file_and_skips_the_reload() {
        let mut t = setup(Duration::ZERO);
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        t.sink.flush().unwrap();
        let before = std::fs::read(&t.path).unwrap();
        t.sink.deliver(&ban("10.9.9.9", "a")).unwrap();
        let e = t.sink.flush().unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message.contains("previous file restored"), "{e}");
        assert_eq!(std::fs::read(&t.path).unwrap(), before);
        assert_eq!(reloads(&t), 1);
        // Once the bad entry is gone, the next change goes through.
        t.sink.deliver(&unban("10.9.9.9", "a")).unwrap();
        t.sink.deliver(&ban("10.0.0.3", "a")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(denies(&t), ["deny 10.0.0.1;", "deny 10.0.0.3;"]);
        assert_eq!(reloads(&t), 2);
    }

    #[test]
    fn a_first_file_that_fails_the_test_is_removed() {
        let mut t = setup(Duration::ZERO);
        t.sink.deliver(&ban("10.9.9.9", "a")).unwrap();
        assert!(t.sink.flush().is_err());
        assert!(!t.path.exists());
    }

    #[test]
    fn dry_run_touches_nothing() {
        let mut t = setup(Duration::ZERO);
        t.sink.dry_run = true;
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert!(!t.path.exists());
        assert_eq!(reloads(&t), 0);
    }
}
