//! The `nginx` sink: an include file naming the banned addresses and CIDRs, regenerated whole
//! from the active bans and reloaded carefully.
//!
//! Two styles of file. `deny` (the default) writes `deny <net>;` lines, valid in `http {}` or
//! `server {}`; nginx's access module checks them one by one on every request, so a long file
//! slows every request down (at 50,000 lines nginx serves about half as many requests). `geo`
//! writes one `geo $variable { default 0; <net> 1; ... }` block, valid in `http {}` only: a radix
//! tree whose lookup cost does not grow with the bans, enforced wherever the admin refuses
//! requests whose variable is 1. `deny` stays the default because a geo block in a file included
//! in `server {}` fails `nginx -t`, and alone it refuses nothing: switching an existing setup
//! silently would stop its bans. Past [`LONG_DENY_FILE`] lines the deny style says so, once.
//!
//! A reload per ban is dangerous on a busy server (each one starts a new set of workers), so
//! events only change the set in memory; the file is written on a flush (when the queue runs
//! empty) and only when its content changes, at most once per `min_reload_interval`, counted in
//! wall time, also in replay: the interval protects the running nginx, which lives in wall time.
//! A change held back by the interval is written when it has passed, and at once when a replay
//! ends. Each write goes to a temporary file renamed over the old one (nginx never reads a
//! half-written file), then `test_command` (`nginx -t`) checks it; when that fails the previous
//! file is put back, nginx is not reloaded, and the error waits for the admin (retried on the
//! slow schedule). A reload that fails stays owed until one succeeds: a file written is not a
//! ban in force. A file that already says what would be written (comments and layout aside) is
//! left alone, so a start or stop with nothing to change reloads nothing.
//!
//! With `reload_command = []` the file is kept current and nginx is never reloaded: the admin
//! reloads when under attack (the "panic button"); then writes wait for no interval.
//!
//! A key banned under two rules is written once and stays until both bans end. Bans keyed on
//! client + vhost refuse the client everywhere the file applies: neither style can name a vhost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::exec::run_command;
use super::{check_argv, log, warn, At, Sink, SinkError};
use crate::addr::Cidr;
use crate::config::ConfigError;
use crate::decide::{Ban, Event};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    /// The include file, e.g. "/etc/nginx/conf.d/floodwatch-deny.conf".
    path: String,
    /// "deny" (the default) or "geo".
    style: Option<String>,
    /// The geo style's variable, without the `$`; default "floodwatch_banned".
    variable: Option<String>,
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
    pub style: Style,
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
        let style = Style::check(raw.style.as_deref(), raw.variable, at)?;
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
            style,
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

impl NginxConfig {
    /// What `check-config` should say about the file as it is now, for a warning: a geo file
    /// that does not exist yet (nginx refuses a config naming its variable until it does), or a
    /// file in the other style (a switch whose nginx wiring may not be done yet).
    pub fn file_warning(&self) -> Option<String> {
        let mut head = Vec::new();
        match fs::File::open(&self.path) {
            Ok(f) => {
                use std::io::Read;
                f.take(4096).read_to_end(&mut head).ok()?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match &self.style {
                    Style::Deny => None,
                    Style::Geo { variable } => Some(format!(
                        "does not exist yet: nginx refuses a config naming ${variable} until it \
                         does, and floodwatch writes it at its first ban; create it first with \
                         `geo ${variable} {{ default 0; }}`"
                    )),
                };
            }
            Err(_) => return None,
        }
        let text = String::from_utf8_lossy(&head);
        let has = |prefix: &str| text.lines().any(|l| l.trim_start().starts_with(prefix));
        match &self.style {
            Style::Geo { .. } if has("deny ") => Some(
                "holds deny lines: with style = \"geo\" it must be included in http {} only, \
                 and something must check the map's variable (docs/guide.md, nginx) before the \
                 next write replaces them"
                    .into(),
            ),
            Style::Deny if has("geo ") => Some(
                "holds a geo map: with style = \"deny\" the next write replaces it, and what \
                 names its variable in nginx's config will then fail `nginx -t`"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// What the file holds, and so where it can be included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Style {
    /// `deny <net>;` lines: in `http {}` or `server {}`; checked one by one per request.
    Deny,
    /// `geo $variable { default 0; <net> 1; }`: in `http {}` only; a lookup whose cost does not
    /// grow with the bans, enforced where the admin refuses requests whose variable is 1.
    Geo { variable: String },
}

const DEFAULT_VARIABLE: &str = "floodwatch_banned";

/// The deny style warns (once) when its file grows past this many lines: each one costs every
/// request a comparison, and at this length nginx loses roughly a tenth of its throughput (20,000
/// lines cost it over a third in the "nginx sink styles" bench of docs/benchmarks.md).
pub const LONG_DENY_FILE: usize = 5_000;

impl Style {
    fn check(style: Option<&str>, variable: Option<String>, at: &At) -> Result<Style, ConfigError> {
        match style.unwrap_or("deny") {
            "deny" => match variable {
                Some(_) => Err(at.error("variable", "only used with style = \"geo\"")),
                None => Ok(Style::Deny),
            },
            "geo" => {
                let variable = variable.unwrap_or_else(|| DEFAULT_VARIABLE.to_string());
                check_variable_name(&variable).map_err(|m| at.error("variable", m))?;
                Ok(Style::Geo { variable })
            }
            other => Err(at.error("style", format!("{other:?} is not one of deny, geo"))),
        }
    }

    /// Where the file must be included, and what else it needs, for the start's log line.
    fn wiring(&self, path: &Path) -> String {
        match self {
            Style::Deny => format!(
                "style deny: include {} in http {{}} or in each server {{}} to protect",
                path.display()
            ),
            Style::Geo { variable } => format!(
                "style geo: include {} once in http {{}}, and refuse ${variable} = 1: \
                 `if (${variable}) {{ return 444; }}` in each server {{}}, or the http-wide \
                 limit_req of docs/guide.md (nginx)",
                path.display()
            ),
        }
    }
}

/// nginx reads a variable name as letters, digits and `_`; anything else would end the name
/// early and break the file (or, unchecked, let the config write more than a name). A leading
/// digit would be read as a regex capture (`$1`).
fn check_variable_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{name:?}: starts with a digit, which nginx reads as a regex capture ($1)"
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        Some(c) => Err(format!(
            "{name:?}: {c:?} is not allowed, letters, digits and _ only (without the $), \
             e.g. \"{DEFAULT_VARIABLE}\""
        )),
        None => Ok(()),
    }
}

pub struct Nginx {
    name: String,
    dry_run: bool,
    config: NginxConfig,
    /// Denied ranges, with the rules whose bans hold each (a set: a ban given twice, restored
    /// and also kept as undelivered, counts once).
    active: BTreeMap<Cidr, BTreeSet<Arc<str>>>,
    /// What the file holds (as read at start, or as last written and tested).
    on_disk: Option<Vec<u8>>,
    /// The file on disk has changed since nginx last took it: a reload is owed (kept until a
    /// reload succeeds, so that a failed one is retried even when nothing else changes).
    reload_owed: bool,
    last_reload: Option<Instant>,
    /// The long deny file has been reported (once per run).
    warned_long: bool,
    /// A dry run: the writes it would have done, and the number of bans of the last one.
    would_write: u32,
}

impl Nginx {
    pub fn new(c: &NginxConfig, name: String, dry_run: bool) -> Nginx {
        Nginx {
            name,
            dry_run,
            config: c.clone(),
            active: BTreeMap::new(),
            on_disk: None,
            reload_owed: false,
            last_reload: None,
            warned_long: false,
            would_write: 0,
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out =
            b"# Written by floodwatch: the active bans. Changes here are overwritten.\n".to_vec();
        // Addresses print canonically (std's Display), CIDRs as address/prefix, the variable
        // name is checked: nothing from a log line reaches this file. The keys of a map: each
        // one once.
        match &self.config.style {
            Style::Deny => {
                for net in self.active.keys() {
                    let _ = writeln!(out, "deny {net};");
                }
            }
            Style::Geo { variable } => {
                let _ = writeln!(out, "geo ${variable} {{\n    default 0;");
                for net in self.active.keys() {
                    let _ = writeln!(out, "    {net} 1;");
                }
                out.extend_from_slice(b"}\n");
            }
        }
        out
    }

    /// Whether it warned now.
    fn warn_if_long(&mut self) -> bool {
        if self.config.style != Style::Deny
            || self.warned_long
            || self.active.len() < LONG_DENY_FILE
        {
            return false;
        }
        self.warned_long = true;
        warn(
            &self.name,
            format_args!(
                "{} deny lines in {}: nginx compares every request with each of them, which \
                 slows it down as the list grows; style = \"geo\" keeps the lookup cost flat \
                 (docs/guide.md, nginx)",
                self.active.len(),
                self.config.path.display()
            ),
        );
        true
    }

    fn command(&self, argv: &[String]) -> Result<(), SinkError> {
        match argv.split_first() {
            Some((program, args)) => run_command(program, args, self.config.timeout),
            None => Ok(()),
        }
    }

    /// Writes `content` and tests it; on a failed test the old file is put back. A reload is
    /// then owed.
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
            self.on_disk = previous;
            // The same content fails the same way until the admin fixes nginx's config (or
            // the sandbox it is tested in): retried on the slow schedule.
            return Err(SinkError::setup(test_failure(&note, &e.message)));
        }
        self.on_disk = Some(content);
        if !self.config.reload_command.is_empty() {
            self.reload_owed = true;
            // Kept on disk until nginx has taken the file: a restart in between must not take
            // the file for one in force.
            let marker = self.owed_marker();
            fs::write(&marker, b"")
                .map_err(|e| SinkError::io(format!("writing {}: {e}", marker.display())))?;
        }
        Ok(())
    }

    /// The file next to `path` that says nginx has not taken `path` yet.
    fn owed_marker(&self) -> PathBuf {
        let mut name = self
            .config
            .path
            .file_name()
            .unwrap_or_default()
            .to_os_string();
        name.push(".floodwatch-unloaded");
        self.config.path.with_file_name(name)
    }

    /// Runs the reload owed. The interval counts from each attempt: a reload that timed out
    /// may have started new workers all the same.
    fn reload(&mut self) -> Result<(), SinkError> {
        self.last_reload = Some(Instant::now());
        self.command(&self.config.reload_command).map_err(|e| {
            let e = e.context("reload failed: ");
            match e.needs_admin() {
                true => e,
                // nginx -t passed: a failing reload (nginx stopped or restarting) is worth
                // retrying.
                false => SinkError::unavailable(e.message),
            }
        })?;
        self.reload_owed = false;
        let marker = self.owed_marker();
        match fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => warn(
                &self.name,
                format_args!("removing {}: {e}", marker.display()),
            ),
            _ => {}
        }
        log(
            &self.name,
            format_args!(
                "nginx reloaded: {} holds {} bans",
                self.config.path.display(),
                self.active.len()
            ),
        );
        Ok(())
    }

    /// Writes what changed and reloads, unless the minimum interval since the last reload has
    /// not passed (then: how long is left) and `now` is not set.
    fn apply(&mut self, now: bool) -> Result<Option<Duration>, SinkError> {
        let content = self.render();
        let changed = !self
            .on_disk
            .as_deref()
            .is_some_and(|d| same_meaning(d, &content));
        if !changed && !self.reload_owed {
            return Ok(None);
        }
        if let (Some(last), false) = (
            self.last_reload,
            now || self.config.reload_command.is_empty(),
        ) {
            let since = last.elapsed();
            if since < self.config.min_reload_interval {
                return Ok(Some(self.config.min_reload_interval - since));
            }
        }
        self.warn_if_long();
        if self.dry_run {
            self.would_write += 1;
            log(
                &self.name,
                format_args!(
                    "dry run: would write {} bans to {}, run {:?}, then {:?}",
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
        if changed {
            self.install(content)?;
        }
        if self.reload_owed {
            self.reload()?;
        }
        Ok(None)
    }
}

/// What a refused `nginx -t` says, its telling line first: nginx prints "syntax is ok" before the
/// `[emerg]` line that says why the test failed, and `status` shows only an error's first line.
/// The whole output follows for the log. A read-only file system is almost always a sandbox
/// (systemd's `ProtectSystem=`) hiding a log nginx opens, so the message says where to look.
fn test_failure(note: &str, output: &str) -> String {
    let telling = output
        .lines()
        .find(|l| {
            ["[emerg]", "[alert]", "[crit]"]
                .iter()
                .any(|m| l.contains(m))
        })
        .map(str::trim);
    let hint = match output.contains("Read-only file system") {
        true => " (read-only under floodwatch's sandbox? nginx -t opens every log nginx names: add its folder to the unit's ReadWritePaths=)",
        false => "",
    };
    match telling {
        Some(line) => format!("test failed, not reloaded, {note}: {line}{hint}\n{output}"),
        None => format!("test failed, not reloaded, {note}: {output}{hint}"),
    }
}

/// Whether two versions of the file say the same to nginx: the same text once comments and
/// whitespace are left out (a file an admin created empty, or as `geo $v { default 0; }`, is
/// not rewritten, nor nginx reloaded, for a change of layout).
fn same_meaning(a: &[u8], b: &[u8]) -> bool {
    fn meaning(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for line in text.split(|&c| c == b'\n') {
            let line = line.split(|&c| c == b'#').next().unwrap_or_default();
            out.extend(line.iter().filter(|c| !c.is_ascii_whitespace()));
        }
        out
    }
    a == b || meaning(a) == meaning(b)
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
        log(
            &self.name,
            format_args!("{}", self.config.style.wiring(&self.config.path)),
        );
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
        let owed = !self.dry_run && !self.config.reload_command.is_empty();
        if owed && self.owed_marker().exists() {
            log(
                &self.name,
                format_args!(
                    "{} was written but nginx did not take it before the last stop: reloading",
                    self.config.path.display()
                ),
            );
            self.reload_owed = true;
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
        self.apply(false)
    }

    fn flush_now(&mut self) -> Result<(), SinkError> {
        self.apply(true).map(|_| ())
    }

    fn summary(&self) -> Option<String> {
        if !self.dry_run {
            return None;
        }
        Some(match self.would_write {
            0 => format!(
                "dry run: no change: {} already holds the {} bans, nothing to write or reload",
                self.config.path.display(),
                self.active.len()
            ),
            n => format!(
                "dry run: would have written {} {n} times (ending with {} bans) and reloaded nginx {}",
                self.config.path.display(),
                self.active.len(),
                match self.config.reload_command.is_empty() {
                    true => "never (reload_command = [])".to_string(),
                    false => format!("{n} times"),
                }
            ),
        })
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

    fn setup(interval: Duration) -> T {
        setup_styled(interval, Style::Deny)
    }

    /// A sink whose test command fails when the file contains `10.9.9.9`, and whose reload
    /// command counts reloads in a file.
    fn setup_styled(interval: Duration, style: Style) -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.conf");
        let reloads = dir.path().join("reloads");
        let c = NginxConfig {
            path: path.clone(),
            style,
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
        assert!(e.needs_admin(), "retried on the slow schedule: {e}");
        assert!(e.message.contains("previous file restored"), "{e}");
        // Tried again: still refused, the previous file still in place, nginx not reloaded.
        assert!(t.sink.flush().is_err());
        assert_eq!(std::fs::read(&t.path).unwrap(), before);
        assert_eq!(reloads(&t), 1);
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
    fn a_failed_test_shows_nginx_s_reason_first() {
        let output = "nginx -t failed (exit status: 1): nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n\
            nginx: [emerg] open() \"/var/www/vhosts/a/logs/access_log\" failed (30: Read-only file system)\n\
            nginx: configuration file /etc/nginx/nginx.conf test failed";
        let m = test_failure("previous file restored", output);
        let first = crate::sink::first_line(&m);
        assert!(
            first.starts_with(
                "test failed, not reloaded, previous file restored: nginx: [emerg] open() "
            ),
            "{first}"
        );
        assert!(first.contains("ReadWritePaths="), "{first}");
        assert!(
            m.ends_with(output),
            "the whole output stays for the log: {m}"
        );
        let plain = test_failure("previous file restored", "nginx -t failed (exit status: 1)");
        assert_eq!(
            plain,
            "test failed, not reloaded, previous file restored: nginx -t failed (exit status: 1)"
        );
    }

    #[test]
    fn a_failed_reload_is_owed_until_one_succeeds() {
        let mut t = setup(Duration::ZERO);
        let broken = t.path.with_file_name("broken");
        t.sink.config.reload_command = sh(&format!(
            "test ! -e {} && echo r >> {}",
            broken.display(),
            t.reloads.display()
        ));
        std::fs::write(&broken, "").unwrap();
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        let e = t.sink.flush().unwrap_err();
        assert!(e.is_retryable() && !e.needs_admin(), "{e}");
        assert!(e.message.starts_with("reload failed: "), "{e}");
        assert_eq!(denies(&t), ["deny 10.0.0.1;"], "written and tested");
        // Nothing changed since, but the reload is still owed: tried again, not "done".
        assert!(t.sink.flush().is_err());
        assert_eq!(reloads(&t), 0);
        std::fs::remove_file(&broken).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(reloads(&t), 1);
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(reloads(&t), 1, "owed once");
    }

    #[test]
    fn a_reload_owed_at_a_restart_is_done_by_the_next_start() {
        let mut t = setup(Duration::ZERO);
        let c = t.sink.config.clone();
        t.sink.config.reload_command = vec!["false".into()];
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert!(t.sink.flush().is_err());
        // Stopped there; the next run finds the file as it would write it, but owed.
        let mut next = Nginx::new(&c, "t".into(), false);
        next.begin().unwrap();
        next.restore(&[]).unwrap();
        next.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(next.flush().unwrap(), None);
        assert_eq!(reloads(&t), 1);
        assert!(!next.owed_marker().exists());
        // And nothing is owed at the start after that.
        let mut third = Nginx::new(&c, "t".into(), false);
        third.begin().unwrap();
        third.deliver(&ban("10.0.0.1", "a")).unwrap();
        third.flush().unwrap();
        assert_eq!(reloads(&t), 1);
    }

    #[test]
    fn a_file_that_says_the_same_is_neither_rewritten_nor_reloaded() {
        let mut t = setup(Duration::ZERO);
        // As an admin creates it before the first start: empty.
        std::fs::write(&t.path, "").unwrap();
        t.sink.begin().unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(std::fs::read(&t.path).unwrap(), b"", "not rewritten");
        assert_eq!(reloads(&t), 0);
        // An older layout of the same bans.
        std::fs::write(&t.path, "# old header\ndeny   10.0.0.1;\n\n").unwrap();
        t.sink.begin().unwrap();
        t.sink.restore(&[]).unwrap();
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert_eq!(reloads(&t), 0);
        t.sink.deliver(&ban("10.0.0.2", "a")).unwrap();
        t.sink.flush().unwrap();
        assert_eq!(reloads(&t), 1);
        assert!(same_meaning(
            b"geo $v { default 0; }",
            b"# x\ngeo $v {\n    default 0;\n}\n"
        ));
        assert!(!same_meaning(b"deny 10.0.0.1;", b"deny 10.0.0.12;"));
    }

    #[test]
    fn flush_now_does_not_wait_for_the_interval() {
        let mut t = setup(Duration::from_secs(3600));
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        t.sink.flush().unwrap();
        t.sink.deliver(&ban("10.0.0.2", "a")).unwrap();
        assert!(t.sink.flush().unwrap().is_some(), "held back");
        t.sink.flush_now().unwrap();
        assert_eq!(denies(&t), ["deny 10.0.0.1;", "deny 10.0.0.2;"]);
        assert_eq!(reloads(&t), 2);
    }

    #[test]
    fn a_first_file_that_fails_the_test_is_removed() {
        let mut t = setup(Duration::ZERO);
        t.sink.deliver(&ban("10.9.9.9", "a")).unwrap();
        assert!(t.sink.flush().is_err());
        assert!(!t.path.exists());
    }

    fn geo(variable: &str) -> Style {
        Style::Geo {
            variable: variable.into(),
        }
    }

    /// IPv4 and IPv6 keys and prefixes, one banned under two rules.
    const MIXED_KEYS: [(&str, &str); 5] = [
        ("203.0.113.7", "a"),
        ("203.0.113.7", "b"),
        ("198.51.100.0/24", "a"),
        ("2001:db8:1:2::/64", "a"),
        ("2001:db8::7", "b"),
    ];

    #[test]
    fn the_geo_style_writes_one_map_entry_per_key_v4_and_v6() {
        let mut t = setup_styled(Duration::ZERO, geo("fw_banned"));
        for (k, rule) in MIXED_KEYS {
            t.sink.deliver(&ban(k, rule)).unwrap();
        }
        t.sink.flush().unwrap();
        let text = std::fs::read_to_string(&t.path).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "geo $fw_banned {",
                "    default 0;",
                "    198.51.100.0/24 1;",
                "    203.0.113.7 1;",
                "    2001:db8::7 1;",
                "    2001:db8:1:2::/64 1;",
                "}",
            ]
        );
        assert_eq!(reloads(&t), 1);
        // Every ban ended: a map that refuses nothing (the checks on its variable stay valid).
        for (k, rule) in MIXED_KEYS {
            t.sink.deliver(&unban(k, rule)).unwrap();
        }
        t.sink.flush().unwrap();
        assert_eq!(denies(&t), ["geo $fw_banned {", "    default 0;", "}"]);
        assert_eq!(reloads(&t), 2);
    }

    #[test]
    fn the_geo_style_keeps_the_test_the_restore_and_the_interval() {
        let mut t = setup_styled(Duration::from_secs(3600), geo("floodwatch_banned"));
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        let before = std::fs::read(&t.path).unwrap();
        t.sink.deliver(&ban("10.0.0.2", "a")).unwrap();
        assert!(
            t.sink.flush().unwrap().is_some(),
            "held back by the interval"
        );
        assert_eq!(std::fs::read(&t.path).unwrap(), before);
        t.sink.config.min_reload_interval = Duration::ZERO;
        t.sink.deliver(&ban("10.9.9.9", "a")).unwrap();
        assert!(t.sink.flush().is_err());
        assert_eq!(std::fs::read(&t.path).unwrap(), before);
        assert_eq!(reloads(&t), 1);
    }

    #[test]
    fn a_long_deny_file_is_reported_once_and_a_geo_map_never() {
        let mut t = setup(Duration::ZERO);
        let mut g = setup_styled(Duration::ZERO, geo("floodwatch_banned"));
        for n in 0..LONG_DENY_FILE as u32 - 1 {
            let net = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
            t.sink.deliver(&ban(&net, "a")).unwrap();
            g.sink.deliver(&ban(&net, "a")).unwrap();
        }
        assert!(!t.sink.warn_if_long());
        t.sink.deliver(&ban("192.0.2.1", "a")).unwrap();
        g.sink.deliver(&ban("192.0.2.1", "a")).unwrap();
        assert!(t.sink.warn_if_long());
        assert!(!t.sink.warn_if_long());
        assert!(!g.sink.warn_if_long());
    }

    #[test]
    fn the_style_and_the_variable_are_checked() {
        let at = At {
            origin: "t.toml",
            index: 0,
        };
        let check = |style: Option<&str>, variable: Option<&str>| {
            Style::check(style, variable.map(String::from), &at).map_err(|e| e.to_string())
        };
        assert_eq!(check(None, None), Ok(Style::Deny));
        assert_eq!(check(Some("geo"), None), Ok(geo("floodwatch_banned")));
        assert_eq!(check(Some("geo"), Some("Ban_2")), Ok(geo("Ban_2")));
        for (style, variable, want) in [
            (Some("map"), None, "sink[0].style: \"map\" is not one of"),
            (
                None,
                Some("x"),
                "sink[0].variable: only used with style = \"geo\"",
            ),
            (Some("geo"), Some(""), "sink[0].variable: empty"),
            (
                Some("geo"),
                Some("$banned"),
                "sink[0].variable: \"$banned\": '$' is not",
            ),
            (
                Some("geo"),
                Some("a b"),
                "sink[0].variable: \"a b\": ' ' is not",
            ),
            (
                Some("geo"),
                Some("a;}"),
                "sink[0].variable: \"a;}\": ';' is not",
            ),
            (Some("geo"), Some("banné"), "is not allowed"),
            (Some("geo"), Some("1banned"), "starts with a digit"),
        ] {
            let got = check(style, variable).unwrap_err();
            assert!(got.contains(want), "{got}");
        }
    }

    #[test]
    fn check_config_is_told_of_a_missing_geo_file_and_of_a_file_in_the_other_style() {
        let t = setup(Duration::ZERO);
        let mut c = t.sink.config.clone();
        assert_eq!(
            c.file_warning(),
            None,
            "no deny file yet: written at the first ban"
        );
        c.style = geo("fw");
        let w = c.file_warning().unwrap();
        assert!(w.contains("`geo $fw { default 0; }`"), "{w}");
        std::fs::write(&t.path, "# Written by floodwatch\ndeny 10.0.0.1;\n").unwrap();
        assert!(c.file_warning().unwrap().contains("holds deny lines"));
        std::fs::write(&t.path, "geo $fw { default 0; }\n").unwrap();
        assert_eq!(c.file_warning(), None);
        c.style = Style::Deny;
        assert!(c.file_warning().unwrap().contains("holds a geo map"));
        std::fs::write(&t.path, "").unwrap();
        assert_eq!(c.file_warning(), None);
    }

    #[test]
    fn dry_run_touches_nothing() {
        let mut t = setup(Duration::ZERO);
        t.sink.dry_run = true;
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        assert!(!t.path.exists());
        assert_eq!(reloads(&t), 0);
        assert!(t.sink.summary().unwrap().contains("would have written"));

        // A file that already holds the bans: nothing would change, and it says so.
        let mut t = setup(Duration::ZERO);
        std::fs::write(&t.path, "deny 10.0.0.1;\n").unwrap();
        t.sink.dry_run = true;
        t.sink.begin().unwrap();
        t.sink.deliver(&ban("10.0.0.1", "a")).unwrap();
        assert_eq!(t.sink.flush().unwrap(), None);
        let said = t.sink.summary().unwrap();
        assert!(said.starts_with("dry run: no change: "), "{said}");
    }
}
