//! Sinks: where ban and unban events go once decided (a JSON lines file, an nginx include file,
//! firewall commands, a webhook).
//!
//! Every sink implements [`Sink`] and runs on its own thread behind a bounded queue
//! ([`runtime::runner`]), so a slow or unreachable sink never holds up detection. This module
//! holds the trait, its error type, and the checking of the `[[sink]]` tables: the keys every
//! sink has ([`Common`]) are taken out here, the rest is read by the sink's own config struct
//! with unknown keys refused, and every error names `sink[i].key` and the file. The sinks are
//! one file each; the machinery they run on is in [`runtime`].

pub mod cloudflare;
pub mod exec;
pub mod jsonl;
pub mod nginx;
pub mod runtime;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::{parse_duration, Config, ConfigError, ConfigErrorKind, SinkTable, SinkType};
use crate::decide::{Ban, Event};

pub use runtime::counters::{
    first_line, SinkCounters, SinkHealth, SinkMetrics, SinkReport, Trouble,
};
pub use runtime::runner::Sinks;

/// Why a sink could not do what an event asked.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: SinkErrorKind,
    pub message: String,
    /// The other end said when to come back (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// A file could not be read or written, a connection failed: worth retrying.
    Io,
    /// The other end failed or was busy (HTTP 5xx, 429, a command that exited non-zero, a
    /// reload nginx did not take): worth retrying.
    Unavailable,
    /// Only the admin can fix it (`nginx -t` refuses the config, the API refuses the token, a
    /// program is not installed): retried on a slower schedule, every `retry_max_delay`.
    Setup,
    /// Refused for good (HTTP 4xx on this event, a range the API cannot take): retrying the
    /// same event would fail the same way, so it is reported instead.
    Refused,
}

impl SinkError {
    pub fn io(message: impl Into<String>) -> SinkError {
        SinkError::new(SinkErrorKind::Io, message)
    }

    pub fn unavailable(message: impl Into<String>) -> SinkError {
        SinkError::new(SinkErrorKind::Unavailable, message)
    }

    pub fn refused(message: impl Into<String>) -> SinkError {
        SinkError::new(SinkErrorKind::Refused, message)
    }

    pub fn setup(message: impl Into<String>) -> SinkError {
        SinkError::new(SinkErrorKind::Setup, message)
    }

    fn new(kind: SinkErrorKind, message: impl Into<String>) -> SinkError {
        SinkError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Whether trying the same thing again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind != SinkErrorKind::Refused
    }

    /// Whether it waits for the admin (see [`SinkErrorKind::Setup`]).
    pub fn needs_admin(&self) -> bool {
        self.kind == SinkErrorKind::Setup
    }

    /// The same error with `context` put in front of its message.
    pub fn context(mut self, context: &str) -> SinkError {
        self.message.insert_str(0, context);
        self
    }
}

/// Where events go. The runner calls `begin` once, `restore` once, `deliver` for each event in
/// order, and `flush` whenever its queue runs empty and at the end; a failed call is retried
/// with backoff when the error says it may succeed later, so each call must be safe to repeat.
pub trait Sink: Send {
    /// Prepares (reads the current state of a file, checks a connection...).
    fn begin(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Takes over the bans already active at start (restored from watch's state after a
    /// restart). They were announced before the restart, so a sink that only reports events
    /// ignores them (the default); one that keeps a set of bans (nginx, Cloudflare) adds them to
    /// it without announcing anything, so that its next write keeps them and their unbans find
    /// them. Bans that have already ended may be among them: their unbans follow.
    fn restore(&mut self, active: &[Ban]) -> Result<(), SinkError> {
        let _ = active;
        Ok(())
    }

    fn deliver(&mut self, event: &Event) -> Result<(), SinkError>;

    /// Does work that was batched or held back. `Some(d)`: there is still work, call again in
    /// `d` (an nginx reload waiting for its minimum interval). Only `Ok(None)` says that
    /// everything delivered so far is in force: a sink whose flush failed stays failing (and
    /// its flush is retried) until one returns `Ok(None)`.
    fn flush(&mut self) -> Result<Option<Duration>, SinkError> {
        Ok(None)
    }

    /// As `flush`, without waiting for any minimum interval: the end of a replay, whose last
    /// changes must be in force when it returns.
    fn flush_now(&mut self) -> Result<(), SinkError> {
        match self.flush()? {
            None => Ok(()),
            Some(_) => Err(SinkError::unavailable("work still held back")),
        }
    }

    /// What it has to say of its work at the end, for its report: a dry run says what it
    /// would have done, including that nothing would have changed.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// Logs a sink's message on stderr (the events themselves go to the sinks, never here).
pub fn log(name: &str, msg: fmt::Arguments) {
    log::info!("{name}: {msg}");
}

/// Logs a sink's failure (an attempt that failed, events dropped) as a warning.
pub fn warn(name: &str, msg: fmt::Arguments) {
    log::warn!("{name}: {msg}");
}

/// Keys every `[[sink]]` table may have, whatever its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    /// Log what would be done instead of doing it.
    pub dry_run: bool,
    /// Whether bans of clients seen through a trusted proxy (`via_proxy`) go to this sink.
    pub proxied: bool,
    /// Events the sink's queue holds before bans are dropped (see [`runtime::runner`]).
    pub queue_size: usize,
    /// Longest wait between two retries (the wait doubles from 0.5 s up to this).
    pub retry_max_delay: Duration,
    /// How long one event is retried before it is reported as failed.
    pub give_up_after: Duration,
}

const DEFAULT_QUEUE: usize = 10_000;
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
const DEFAULT_GIVE_UP: Duration = Duration::from_secs(3600);
pub(crate) const COMMON_KEYS: &[&str] = &[
    "type",
    "name",
    "dry_run",
    "proxied",
    "queue_size",
    "retry_max_delay",
    "give_up_after",
];

/// One checked `[[sink]]` table, ready to build.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// `sink[i] type`, for logs.
    pub name: String,
    pub common: Common,
    pub kind: SinkKind,
    /// The `[[sink]]` table as written: with `name`, what identifies the sink across a SIGHUP
    /// reload (an unchanged table keeps its sink running untouched; see [`Sinks::reconfigure`]).
    pub source: toml::Table,
    /// Whether it enforces other servers' bans (`[fleet] apply_to`; see [`crate::fleet`]).
    pub fleet: bool,
}

#[derive(Clone, Debug)]
pub enum SinkKind {
    Jsonl(jsonl::JsonlConfig),
    Exec(exec::ExecConfig),
    Nginx(nginx::NginxConfig),
    Webhook(webhook::WebhookConfig),
    Cloudflare(cloudflare::CloudflareConfig),
}

impl SinkSpec {
    /// Opens files, compiles templates: what can only fail at run time.
    pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        let (name, dry) = (self.name.clone(), self.common.dry_run);
        Ok(match &self.kind {
            SinkKind::Jsonl(c) => Box::new(jsonl::Jsonl::new(c, name, dry)?),
            SinkKind::Exec(c) => Box::new(exec::Exec::new(c, name, dry)),
            SinkKind::Nginx(c) => Box::new(nginx::Nginx::new(c, name, dry)),
            SinkKind::Webhook(c) => Box::new(webhook::Webhook::new(c, name, dry)),
            SinkKind::Cloudflare(c) => Box::new(cloudflare::Cloudflare::new(c, name, dry)?),
        })
    }
}

/// Marks the sinks that enforce other servers' bans: those `[fleet] apply_to` names by type or
/// by name, or without it every nginx and exec sink (the ones that block on this server; a CDN
/// rule is the fleet's to share only when asked). An entry that is neither a type nor a sink's
/// name is an error naming it.
pub fn mark_fleet_sinks(config: &Config, specs: &mut [SinkSpec]) -> Result<(), ConfigError> {
    let Some(fleet) = &config.fleet else {
        return Ok(());
    };
    let type_of = |s: &SinkSpec| match s.kind {
        SinkKind::Jsonl(_) => SinkType::Jsonl,
        SinkKind::Nginx(_) => SinkType::Nginx,
        SinkKind::Cloudflare(_) => SinkType::Cloudflare,
        SinkKind::Exec(_) => SinkType::Exec,
        SinkKind::Webhook(_) => SinkType::Webhook,
    };
    let Some(names) = &fleet.apply_to else {
        for s in specs.iter_mut() {
            s.fleet = matches!(type_of(s), SinkType::Nginx | SinkType::Exec);
        }
        return Ok(());
    };
    for (i, n) in names.iter().enumerate() {
        let n = n.trim();
        let known = SinkType::parse(n).is_some() || specs.iter().any(|s| s.name == n);
        if !known {
            return Err(ConfigError {
                kind: ConfigErrorKind::Invalid,
                origin: config.origin.clone(),
                position: None,
                key: format!("fleet.apply_to[{i}]"),
                message: format!("{n:?} is neither a sink type nor the name of a sink"),
            });
        }
    }
    for s in specs.iter_mut() {
        let kind = type_of(s).name();
        s.fleet = names.iter().any(|n| n.trim() == kind || n.trim() == s.name);
    }
    Ok(())
}

/// Checks every `[[sink]]` table of `config`; two sinks may not have one name.
pub fn parse_sinks(config: &Config) -> Result<Vec<SinkSpec>, ConfigError> {
    let specs: Vec<SinkSpec> = config
        .sinks
        .iter()
        .enumerate()
        .map(|(i, t)| parse_sink(i, t, &config.origin))
        .collect::<Result<_, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            let at = At {
                origin: &config.origin,
                index: i,
            };
            return Err(at.error("name", format!("{:?} names another sink too", s.name)));
        }
    }
    Ok(specs)
}

/// A sink's `name`: what logs, metrics (`sink="..."`) and the state folder call it, stable
/// when sinks are reordered. Default: `sink[i] type`.
fn sink_name(at: &At, sink: &SinkTable) -> Result<String, ConfigError> {
    match sink.table.get("name") {
        None => Ok(format!("sink[{}] {}", at.index, sink.kind.name())),
        Some(toml::Value::String(n))
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(n.clone())
        }
        Some(_) => Err(at.error_of(
            ConfigErrorKind::WrongType,
            "name",
            "expected 1 to 64 letters, digits or - _ .",
        )),
    }
}

/// Where a sink table's error is: the file and `sink[i].key`.
pub struct At<'a> {
    pub origin: &'a str,
    pub index: usize,
}

impl At<'_> {
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.error_of(ConfigErrorKind::Invalid, key, message)
    }

    fn error_of(
        &self,
        kind: ConfigErrorKind,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = if key.is_empty() {
            format!("sink[{}]", self.index)
        } else {
            format!("sink[{}].{key}", self.index)
        };
        ConfigError {
            kind,
            origin: self.origin.to_string(),
            position: None,
            key,
            message: message.into(),
        }
    }

    /// A duration value such as `"30s"`.
    pub fn duration(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        parse_duration(text)
            .map(Duration::from_millis)
            .map_err(|e| self.error(key, e.to_string()))
    }
}

fn parse_sink(index: usize, sink: &SinkTable, origin: &str) -> Result<SinkSpec, ConfigError> {
    let at = At { origin, index };
    let table = &sink.table;
    let mut rest = table.clone();
    for k in COMMON_KEYS {
        rest.remove(*k);
    }
    let bool_key = |key: &str, default: bool| match table.get(key) {
        None => Ok(default),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(_) => Err(at.error_of(ConfigErrorKind::WrongType, key, "expected true or false")),
    };
    let duration_key = |key: &str, default: Duration| match table.get(key) {
        None => Ok(default),
        Some(toml::Value::String(s)) => at.duration(key, s),
        Some(_) => Err(at.error_of(
            ConfigErrorKind::WrongType,
            key,
            "expected a duration such as \"30s\"",
        )),
    };
    // A client behind a CDN reaches the server from the CDN's addresses: only a sink that
    // blocks at the CDN (or just reports) can act on such a ban.
    let proxied_default = matches!(
        sink.kind,
        SinkType::Jsonl | SinkType::Webhook | SinkType::Cloudflare
    );
    let queue_size = match table.get("queue_size") {
        None => DEFAULT_QUEUE,
        Some(toml::Value::Integer(n)) if *n >= 1 && *n <= 10_000_000 => *n as usize,
        Some(_) => return Err(at.error("queue_size", "expected a number from 1 to 10000000")),
    };
    let common = Common {
        dry_run: bool_key("dry_run", false)?,
        proxied: bool_key("proxied", proxied_default)?,
        queue_size,
        retry_max_delay: duration_key("retry_max_delay", DEFAULT_RETRY_MAX)?,
        give_up_after: duration_key("give_up_after", DEFAULT_GIVE_UP)?,
    };
    if common.retry_max_delay.is_zero() {
        return Err(at.error("retry_max_delay", "must be more than 0"));
    }
    let kind = match sink.kind {
        SinkType::Jsonl => SinkKind::Jsonl(jsonl::JsonlConfig::check(read(&at, &rest)?, &at)?),
        SinkType::Exec => SinkKind::Exec(exec::ExecConfig::check(read(&at, &rest)?, &at)?),
        SinkType::Nginx => SinkKind::Nginx(nginx::NginxConfig::check(read(&at, &rest)?, &at)?),
        SinkType::Webhook => {
            SinkKind::Webhook(webhook::WebhookConfig::check(read(&at, &rest)?, &at)?)
        }
        SinkType::Cloudflare => {
            SinkKind::Cloudflare(cloudflare::CloudflareConfig::check(read(&at, &rest)?, &at)?)
        }
    };
    Ok(SinkSpec {
        name: sink_name(&at, sink)?,
        common,
        kind,
        source: table.clone(),
        fleet: false,
    })
}

/// Reads a sink's own keys into its raw config struct (`deny_unknown_fields`), straight from
/// the table: toml's value deserializer ends its message with the path of the key at fault
/// (`in `headers.x``), which the error names; an unknown or missing key is named in the
/// message itself.
fn read<T: DeserializeOwned>(at: &At, table: &toml::Table) -> Result<T, ConfigError> {
    toml::Value::Table(table.clone()).try_into().map_err(|e| {
        let text = e.to_string();
        let (message, path) = match text.trim_end().rsplit_once("\nin `") {
            Some((m, p)) => (m.to_string(), p.strip_suffix('`').map(str::to_string)),
            None => (text.trim_end().to_string(), None),
        };
        let key = path.or_else(|| quoted_name(&message)).unwrap_or_default();
        let kind = if message.starts_with("unknown field") {
            ConfigErrorKind::UnknownKey
        } else {
            ConfigErrorKind::WrongType
        };
        at.error_of(kind, &key, message)
    })
}

/// The name in backticks of a serde message such as "missing field `path`".
fn quoted_name(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_string())
}

/// An argv from config: a non-empty list of strings.
pub fn check_argv(at: &At, key: &str, argv: &[String]) -> Result<(), ConfigError> {
    match argv.first() {
        None => Err(at.error(
            key,
            "empty command (expected e.g. [\"nginx\", \"-s\", \"reload\"])",
        )),
        Some(p) if p.trim().is_empty() => Err(at.error(key, "the program name is empty")),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkSpec>, ConfigError> {
        let config = Config::parse(text, "test.toml").unwrap();
        parse_sinks(&config)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn common_keys_and_defaults() {
        let s = parse(
            "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\n\
             [[sink]]\ntype = \"jsonl\"\npath = \"x\"\ndry_run = true\nqueue_size = 5\n\
             retry_max_delay = \"2s\"\nproxied = false\n",
        )
        .unwrap();
        assert_eq!(s[0].name, "sink[0] jsonl");
        assert!(s[0].common.proxied);
        assert!(!s[0].common.dry_run);
        assert_eq!(s[0].common.queue_size, DEFAULT_QUEUE);
        assert_eq!(s[1].common.queue_size, 5);
        assert!(s[1].common.dry_run && !s[1].common.proxied);
        assert_eq!(s[1].common.retry_max_delay, Duration::from_secs(2));
        let e = parse("[[sink]]\ntype = \"exec\"\nban = [\"true\"]\n").unwrap();
        assert!(
            !e[0].common.proxied,
            "a firewall cannot block a client behind a CDN"
        );
    }

    #[test]
    fn fleet_bans_go_to_nginx_and_exec_unless_apply_to_names_others() {
        let sinks = "[[sink]]\ntype = \"nginx\"\npath = \"/tmp/deny.conf\"\n\
                     [[sink]]\ntype = \"exec\"\nban = [\"true\"]\n\
                     [[sink]]\ntype = \"jsonl\"\npath = \"-\"\nname = \"events\"\n";
        let marked = |fleet: &str| -> Result<Vec<bool>, String> {
            let text = format!("[fleet]\nurl = \"redis://h/0\"\nnode = \"a\"\n{fleet}\n{sinks}");
            let config = Config::parse(&text, "test.toml").unwrap();
            let mut specs = parse_sinks(&config).unwrap();
            mark_fleet_sinks(&config, &mut specs).map_err(|e| e.to_string())?;
            Ok(specs.iter().map(|s| s.fleet).collect())
        };
        assert_eq!(marked("").unwrap(), [true, true, false]);
        assert_eq!(
            marked("apply_to = [\"events\"]").unwrap(),
            [false, false, true]
        );
        assert_eq!(
            marked("apply_to = [\"exec\", \"jsonl\"]").unwrap(),
            [false, true, true]
        );
        assert_eq!(marked("apply_to = []").unwrap(), [false, false, false]);
        let e = marked("apply_to = [\"nginx\", \"firewall\"]").unwrap_err();
        assert_eq!(
            e,
            "test.toml: fleet.apply_to[1]: \"firewall\" is neither a sink type nor the name of a sink"
        );
        let config = Config::parse(sinks, "test.toml").unwrap();
        let mut specs = parse_sinks(&config).unwrap();
        mark_fleet_sinks(&config, &mut specs).unwrap();
        assert!(specs.iter().all(|s| !s.fleet), "no [fleet], no fleet bans");
    }

    #[test]
    fn a_sink_is_called_by_its_name_or_its_place() {
        let specs = parse(
            "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nname = \"events\"\n\
             [[sink]]\ntype = \"jsonl\"\npath = \"-\"\n",
        )
        .unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["events", "sink[1] jsonl"]);
    }

    #[test]
    fn errors_name_the_sink_key_and_file() {
        for (text, want) in [
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\ncolour = 1\n",
                "test.toml: sink[0].colour: unknown field `colour`",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = 3\n",
                "test.toml: sink[0].path: invalid type",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\n",
                "test.toml: sink[0].path: missing field",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\ndry_run = \"yes\"\n",
                "test.toml: sink[0].dry_run: expected true or false",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nretry_max_delay = \"soon\"\n",
                "test.toml: sink[0].retry_max_delay: \"soon\" is not a duration",
            ),
            (
                "[[sink]]\ntype = \"nginx\"\npath = \"x\"\nmin_reload_interval = \"often\"\n",
                "test.toml: sink[0].min_reload_interval: \"often\" is not a duration",
            ),
            (
                "[[sink]]\ntype = \"nginx\"\npath = \"x\"\nreload_command = [\" \"]\n",
                "test.toml: sink[0].reload_command: the program name is empty",
            ),
            (
                "[[sink]]\ntype = \"nginx\"\npath = \"x\"\ntest_command = []\n",
                "test.toml: sink[0].test_command: empty command",
            ),
            (
                "[[sink]]\ntype = \"nginx\"\npath = \"x\"\nstyle = \"map\"\n",
                "test.toml: sink[0].style: \"map\" is not one of deny, geo",
            ),
            (
                "[[sink]]\ntype = \"nginx\"\npath = \"x\"\nstyle = \"geo\"\nvariable = \"$x\"\n",
                "test.toml: sink[0].variable: \"$x\": '$' is not allowed",
            ),
            (
                "[[sink]]\ntype = \"webhook\"\nurl = \"ftp://x\"\n",
                "test.toml: sink[0].url: \"ftp://x\" is not an http",
            ),
            (
                "[[sink]]\ntype = \"webhook\"\nurl = \"http://x\"\nheaders = { a = 1 }\n",
                "test.toml: sink[0].headers.a: invalid type",
            ),
            (
                "[[sink]]\ntype = \"webhook\"\nurl = \"http://x\"\n[sink.headers]\nX = \"a\\nb\"\n",
                "test.toml: sink[0].headers.X: a header value cannot contain a line break",
            ),
            (
                "[[sink]]\ntype = \"cloudflare\"\napi_token_env = \"T\"\n",
                "test.toml: sink[0].zone_id: give exactly one of zone_id",
            ),
            (
                "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc\"\n",
                "test.toml: sink[0].api_token_env: give exactly one",
            ),
            (
                "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc\"\napi_token_env = \"T\"\nmode = \"nuke\"\n",
                "test.toml: sink[0].mode: \"nuke\" is not one of block, challenge",
            ),
            (
                "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc\"\napi_token_env = \"T\"\nnotes = \"a b\"\n",
                "test.toml: sink[0].notes: expected 1 to 64",
            ),
            (
                "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc\"\napi_token_env = \"FLOODWATCH_NO_SUCH_TOKEN\"\n",
                "test.toml: sink[0].api_token_env: the environment variable FLOODWATCH_NO_SUCH_TOKEN is not set",
            ),
            (
                "[[sink]]\ntype = \"exec\"\nban = []\n",
                "test.toml: sink[0].ban: empty command",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nname = \"a b\"\n",
                "test.toml: sink[0].name: expected 1 to 64",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nname = \"x\"\n\
                 [[sink]]\ntype = \"jsonl\"\npath = \"-\"\nname = \"x\"\n",
                "test.toml: sink[1].name: \"x\" names another sink too",
            ),
            (
                "[[sink]]\ntype = \"exec\"\nban = [\"x\", \"{adress}\"]\n",
                "test.toml: sink[0].ban: unknown placeholder {adress}",
            ),
            (
                "[[sink]]\ntype = \"exec\"\nban = [\"x\"]\ntimeout = 5\n",
                "test.toml: sink[0].timeout: invalid type",
            ),
            (
                "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nqueue_size = 0\n",
                "test.toml: sink[0].queue_size: expected a number",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(want), "{text}\n=> {e}");
        }
    }
}
