//! The `exec` sink: runs a command for each ban and unban (nftables, ipset, iptables...), as
//! an argv template run without a shell.
//!
//! Placeholders in the template's arguments are `{key}` (address or CIDR), `{ip}` (the address
//! or the network's address), `{prefix_len}`, `{family}` (`4` or `6`), `{rule}`, `{vhost}`,
//! `{ban_seconds}` and `{until}` (RFC 3339). Values come only from parsed, canonical addresses,
//! numbers, times and the config; the one value that comes from log text, the vhost (a `%v` or
//! `$host` is whatever the client sent as Host), is substituted only when it is a plain host
//! name, and as `-` otherwise. The program itself (the first element) takes no placeholder.
//! A command that exits non-zero, or runs past `timeout`, is retried with backoff (see the
//! worker) and the sink is failing until one succeeds: a firewall rule that is missing must not
//! pass for one in force. A command may therefore run more than once for one event (as after a
//! crash): make it idempotent (`nft add element`, `ipset add -exist`, `iptables -C ... ||
//! iptables -I ...`). A program that is not there is retried every `retry_max_delay`.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Deserialize;

use super::{check_argv, log, At, Sink, SinkError};
use crate::config::ConfigError;
use crate::decide::{Ban, Event};
use crate::engine::Key;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    /// Command run for each ban, e.g. ["nft", "add", "element", ...].
    ban: Vec<String>,
    /// Command run for each unban; none = bans expire on their own (an nftables set element's
    /// timeout, say).
    unban: Option<Vec<String>>,
    /// How long a command may run before it is killed and reported.
    timeout: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    pub ban: Template,
    pub unban: Option<Template>,
    pub timeout: Duration,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ExecConfig {
    pub fn check(raw: RawExec, at: &At) -> Result<ExecConfig, ConfigError> {
        let template = |key: &str, argv: &[String]| {
            check_argv(at, key, argv)?;
            Template::compile(argv).map_err(|e| at.error(key, e.to_string()))
        };
        Ok(ExecConfig {
            ban: template("ban", &raw.ban)?,
            unban: raw
                .unban
                .as_deref()
                .map(|a| template("unban", a))
                .transpose()?,
            timeout: match raw.timeout {
                Some(t) => at.duration("timeout", &t)?,
                None => DEFAULT_TIMEOUT,
            },
        })
    }
}

/// A placeholder's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Key,
    Ip,
    PrefixLen,
    Family,
    Rule,
    Vhost,
    BanSeconds,
    Until,
}

const VARS: &[(&str, Var)] = &[
    ("key", Var::Key),
    ("ip", Var::Ip),
    ("prefix_len", Var::PrefixLen),
    ("family", Var::Family),
    ("rule", Var::Rule),
    ("vhost", Var::Vhost),
    ("ban_seconds", Var::BanSeconds),
    ("until", Var::Until),
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// An argv with placeholders, split once at config time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    program: String,
    args: Vec<Vec<Piece>>,
}

impl Template {
    /// The program run (the argv's first word).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// `{name}` with a known name is a placeholder; any other brace is literal (nft's `{ }`).
    /// An unknown `{name}` is refused rather than passed on, since it is surely a typo.
    pub fn compile(argv: &[String]) -> Result<Template, TemplateError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(TemplateError::Empty);
        };
        if split(program)?.iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(TemplateError::PlaceholderProgram);
        }
        Ok(Template {
            program: program.clone(),
            args: args.iter().map(|a| split(a)).collect::<Result<_, _>>()?,
        })
    }

    fn render(&self, v: &Values) -> (String, Vec<String>) {
        let args = self
            .args
            .iter()
            .map(|pieces| {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Var(var) => s.push_str(v.get(*var)),
                    }
                }
                s
            })
            .collect();
        (self.program.clone(), args)
    }
}

/// Why an argv is not a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("empty command")]
    Empty,
    #[error("the program (first element) cannot contain a placeholder")]
    PlaceholderProgram,
    /// `{name}` with a name no placeholder has, in `arg`.
    #[error(
        "unknown placeholder {{{name}}} in {arg:?} (known: {known})",
        known = VARS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    )]
    UnknownPlaceholder { name: String, arg: String },
}

fn split(arg: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            let Some(&(_, var)) = VARS.iter().find(|(n, _)| *n == name) else {
                return Err(TemplateError::UnknownPlaceholder {
                    name: name.to_string(),
                    arg: arg.to_string(),
                });
            };
            text.push_str(&rest[..open]);
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Var(var));
            rest = &after[name_len + 1..];
        } else {
            text.push_str(&rest[..=open]);
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The values of one event, each already safe to pass as an argument.
struct Values {
    key: String,
    ip: String,
    prefix_len: String,
    family: &'static str,
    rule: Arc<str>,
    vhost: String,
    ban_seconds: String,
    until: String,
}

impl Values {
    fn new(key: &Key, rule: &Arc<str>, ban: Option<&Ban>) -> Values {
        let net = key.net;
        Values {
            key: net.to_string(),
            ip: net.addr.to_string(),
            prefix_len: net.prefix.to_string(),
            family: if net.addr.is_v4() { "4" } else { "6" },
            rule: rule.clone(),
            vhost: ban
                .and_then(|b| b.vhost.as_deref())
                .and_then(safe_hostname)
                .unwrap_or("-")
                .to_string(),
            ban_seconds: ban.map_or(0, |b| b.ban_ms / 1000).to_string(),
            until: ban.map_or_else(String::new, |b| rfc3339(b.until_ms)),
        }
    }

    fn get(&self, var: Var) -> &str {
        match var {
            Var::Key => &self.key,
            Var::Ip => &self.ip,
            Var::PrefixLen => &self.prefix_len,
            Var::Family => self.family,
            Var::Rule => &self.rule,
            Var::Vhost => &self.vhost,
            Var::BanSeconds => &self.ban_seconds,
            Var::Until => &self.until,
        }
    }
}

fn rfc3339(ms: i64) -> String {
    // Clamped into the printable range, as in events.
    let ms = ms.clamp(0, 253_402_300_799_999) as u64;
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `name` if it is a plain DNS host name (letters, digits, `-`, `_` in dot-separated labels
/// that neither start nor end with `-`): nothing a shell, a command's option parser or a
/// firewall's syntax could read as more than a name.
pub fn safe_hostname(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(name)
}

pub struct Exec {
    name: String,
    dry_run: bool,
    config: ExecConfig,
    /// Active bans, so that an unban's command can name the ban's vhost and end.
    active: HashMap<(Key, Arc<str>), Ban>,
    /// A dry run: the commands it would have run.
    would_run: std::cell::Cell<u64>,
}

impl Exec {
    pub fn new(c: &ExecConfig, name: String, dry_run: bool) -> Exec {
        Exec {
            name,
            dry_run,
            config: c.clone(),
            active: HashMap::new(),
            would_run: std::cell::Cell::new(0),
        }
    }

    fn run(&self, template: &Template, v: &Values) -> Result<(), SinkError> {
        let (program, args) = template.render(v);
        if self.dry_run {
            self.would_run.set(self.would_run.get() + 1);
            log(
                &self.name,
                format_args!(
                    "dry run: would run {:?}",
                    Some(&program).into_iter().chain(&args).collect::<Vec<_>>()
                ),
            );
            return Ok(());
        }
        run_command(&program, &args, self.config.timeout)
    }
}

impl Sink for Exec {
    fn summary(&self) -> Option<String> {
        self.dry_run.then(|| match self.would_run.get() {
            0 => "dry run: no change, no command to run".to_string(),
            n => format!("dry run: would have run {n} commands"),
        })
    }

    fn deliver(&mut self, event: &Event) -> Result<(), SinkError> {
        match event {
            Event::Ban(b) => {
                let v = Values::new(&b.key, &b.rule, Some(b));
                self.active.insert((b.key, b.rule.clone()), b.clone());
                self.run(&self.config.ban, &v)
            }
            Event::Unban(u) => {
                let ban = self.active.remove(&(u.key, u.rule.clone()));
                let Some(t) = &self.config.unban else {
                    return Ok(());
                };
                let v = Values::new(&u.key, &u.rule, ban.as_ref());
                self.run(t, &v)
            }
        }
    }
}

/// Runs `program` with `args` (no shell, no stdin), killing it after `timeout`; its stderr is
/// kept for the error report. A program that cannot be run (not installed, not executable)
/// waits for the admin; one that exits non-zero or runs too long is worth retrying.
pub fn run_command(program: &str, args: &[String], timeout: Duration) -> Result<(), SinkError> {
    let shown = || {
        let mut s = program.to_string();
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let message = format!("cannot run {program}: {e}");
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    SinkError::setup(message)
                }
                _ => SinkError::io(message),
            }
        })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SinkError::unavailable(format!(
                    "{} killed after {}s",
                    shown(),
                    timeout.as_secs_f64()
                )));
            }
            Err(e) => return Err(SinkError::io(format!("waiting for {program}: {e}"))),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.by_ref().take(2048).read_to_string(&mut err);
    }
    let err = err.trim();
    Err(SinkError::unavailable(match err.is_empty() {
        true => format!("{} failed ({status})", shown()),
        false => format!("{} failed ({status}): {err}", shown()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hit::NO_VHOST;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn ban(key: &str, vhost: Option<&str>) -> Ban {
        Ban {
            time_ms: 0,
            key: Key {
                net: key.parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("get-flood"),
            vhost: vhost.map(Arc::from),
            rate: Arc::from("20r/s"),
            burst: 100,
            requests: 1,
            first_seen_ms: 0,
            ban_ms: 600_000,
            until_ms: 1_764_065_405_000,
            offense: 1,
            via_proxy: false,
            origin: Default::default(),
        }
    }

    fn render(t: &[&str], b: &Ban) -> Vec<String> {
        let t = Template::compile(&argv(t)).unwrap();
        let (p, mut a) = t.render(&Values::new(&b.key, &b.rule, Some(b)));
        a.insert(0, p);
        a
    }

    #[test]
    fn placeholders_are_filled_and_nft_braces_kept() {
        let b = ban("2001:db8:1:2::/64", Some("shop.example.org"));
        assert_eq!(
            render(
                &[
                    "nft",
                    "add",
                    "element",
                    "inet",
                    "fw",
                    "ban{family}",
                    "{",
                    "{key}",
                    "timeout",
                    "{ban_seconds}s",
                    "}",
                    "{ip}/{prefix_len}",
                    "{rule}@{vhost}",
                    "{until}",
                    "{x",
                    "}{",
                ],
                &b
            ),
            [
                "nft",
                "add",
                "element",
                "inet",
                "fw",
                "ban6",
                "{",
                "2001:db8:1:2::/64",
                "timeout",
                "600s",
                "}",
                "2001:db8:1:2::/64",
                "get-flood@shop.example.org",
                "2025-11-25T10:10:05Z",
                "{x",
                "}{",
            ]
        );
        let b = ban("203.0.113.7", None);
        assert_eq!(
            render(
                &["x", "{key}", "{ip}/{prefix_len}", "{vhost}", "{family}"],
                &b
            ),
            ["x", "203.0.113.7", "203.0.113.7/32", "-", "4"]
        );
    }

    #[test]
    fn unknown_placeholders_and_program_placeholders_are_refused() {
        assert!(Template::compile(&argv(&["x", "{adress}"]))
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder {adress}"));
        assert!(Template::compile(&argv(&["{ip}", "x"])).is_err());
        assert!(Template::compile(&[]).is_err());
    }

    #[test]
    fn only_plain_host_names_pass_as_vhost() {
        for ok in [
            "example.com",
            "a",
            "xn--bcher-kva.example",
            "my_site.local",
            "EXAMPLE.com",
        ] {
            assert_eq!(safe_hostname(ok), Some(ok));
        }
        for bad in [
            "",
            "-rf",
            "a..b",
            ".a",
            "a.",
            "ex ample.com",
            "$(id)",
            "`id`",
            "a;b",
            "a\nb",
            "a'b",
            "a\"b",
            "a/b",
            "a:80",
            "é.com",
            "a-.com",
            "*.example.com",
            "{x}",
        ] {
            assert_eq!(safe_hostname(bad), None, "{bad:?}");
        }
        let b = ban("10.0.0.1", Some("$(touch /tmp/pwned)"));
        assert_eq!(render(&["x", "{vhost}"], &b), ["x", "-"]);
    }

    #[test]
    fn commands_run_without_a_shell_and_failures_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let c = ExecConfig {
            ban: Template::compile(&argv(&[
                "sh",
                "-c",
                "printf '%s\\n' \"$@\" >> \"$0\"",
                out.to_str().unwrap(),
                "ban",
                "{key}",
                "{vhost}",
            ]))
            .unwrap(),
            unban: Some(Template::compile(&argv(&["false"])).unwrap()),
            timeout: Duration::from_secs(10),
        };
        let mut s = Exec::new(&c, "t".into(), false);
        s.deliver(&Event::Ban(ban("10.0.0.1", Some("a;b"))))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ban\n10.0.0.1\n-\n");
        let b = ban("10.0.0.1", None);
        let e = s
            .deliver(&Event::Unban(crate::decide::Unban {
                time_ms: 0,
                key: b.key,
                rule: b.rule,
                reason: Default::default(),
            }))
            .unwrap_err();
        assert!(e.is_retryable() && !e.needs_admin(), "retried: {e}");
        assert_eq!(e.message, "false failed (exit status: 1)");

        let slow = ExecConfig {
            ban: Template::compile(&argv(&["sleep", "5"])).unwrap(),
            unban: None,
            timeout: Duration::from_millis(50),
        };
        let e = Exec::new(&slow, "t".into(), false)
            .deliver(&Event::Ban(ban("10.0.0.1", None)))
            .unwrap_err();
        assert!(e.message.contains("killed") && e.is_retryable(), "{e}");
        let missing =
            run_command("/nonexistent/floodwatch-test", &[], Duration::from_secs(1)).unwrap_err();
        assert!(missing.needs_admin(), "{missing}");
    }

    #[test]
    fn dry_run_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made");
        let c = ExecConfig {
            ban: Template::compile(&argv(&["touch", made.to_str().unwrap()])).unwrap(),
            unban: None,
            timeout: Duration::from_secs(10),
        };
        Exec::new(&c, "t".into(), true)
            .deliver(&Event::Ban(ban("10.0.0.1", None)))
            .unwrap();
        assert!(!made.exists());
        Exec::new(&c, "t".into(), false)
            .deliver(&Event::Ban(ban("10.0.0.1", None)))
            .unwrap();
        assert!(made.exists());
    }
}
