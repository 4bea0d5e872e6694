//! The TOML config: raw serde structs that mirror the file (every key documented, unknown keys
//! refused), checked once into a [`Config`] that the rest of the program sees.
//!
//! Every error names the file, the key path (`rule[1].rate`, tables of an array counted from 0)
//! and, when it points into the file, the line and column. serde errors carry a byte span but
//! no key path, so the path is recovered from the text around the span ([`key_path_at`]);
//! values checked here are read as `Spanned` so their errors point at them too.
//!
//! Choices made here (documented for users in the README's config reference):
//! - A `[[rule]]` starts from the built-in `default` rule and changes what it names: omitted
//!   keys keep `rate = "20r/s"`, `burst = 100`, `ban = "10m"` and so on. In particular `burst`
//!   does not default to nginx's 0, which would ban every browser that loads a page's assets
//!   in parallel.
//! - `max_ban` defaults to one week, or to `ban` when that is longer.
//! - `[allow] cidrs` replaces the default list (loopback); keep loopback in it.
//! - Key prefixes are at least /8 (IPv4) and /16 (IPv6): a shorter one lumps whole networks
//!   into one key, which one ban would then cut off.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::addr::Cidr;
use crate::engine::{Rate, RuleSpec, StatusMatch};
use crate::hit::MAX_RULES;

/// Where a config without a file comes from, in error messages and `describe`.
pub const BUILT_IN: &str = "built-in defaults";
/// Where command-line overrides come from, in error messages.
pub const COMMAND_LINE: &str = "command line";
/// Proxy providers whose ranges floodwatch knows by name.
pub const KNOWN_PROXIES: &[&str] = &["cloudflare"];
/// `[allow] cidrs` when not given.
pub const DEFAULT_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];

const DEFAULT_RULE: &str = "default";
const DEFAULT_RATE: &str = "20r/s";
const DEFAULT_BURST: u32 = 100;
const DEFAULT_BAN_MS: u64 = 10 * MINUTE;
const DEFAULT_FACTOR: f64 = 2.0;
const DEFAULT_MAX_BAN_MS: u64 = 7 * DAY;
const DEFAULT_WINDOW_MS: u64 = DAY;
const DEFAULT_LATENESS_MS: u64 = 5 * SECOND;
const DEFAULT_FORMAT: &str = "combined";
const DEFAULT_MAX_KEYS: u64 = 5_000_000;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
/// Longest duration accepted anywhere: beyond it a value is a typo, not a policy.
const MAX_DURATION_MS: u64 = 3653 * DAY;
/// Longest lateness: lines are held this long before their time is decided.
const MAX_LATENESS_MS: u64 = HOUR;

// ---------------------------------------------------------------------------------------------
// The validated config.

/// The checked config: every value parsed, in range and consistent.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from, or [`BUILT_IN`].
    pub origin: String,
    pub input: Input,
    /// In config order; a rule's index is its bit in [`crate::hit::RuleMask`].
    pub rules: Vec<RuleSpec>,
    /// Whether `rules` came from `[[rule]]` tables (then `--rate/--burst/--ban` are refused).
    pub rules_configured: bool,
    /// Ranges never banned.
    pub allow: Vec<Cidr>,
    pub engine: Engine,
    pub proxy: Proxy,
    pub state: State,
    pub metrics: Metrics,
    /// `[[sink]]` tables as written, each with a string `type`; sinks check the rest.
    pub sinks: Vec<toml::Table>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Files or globs; empty when the command line gives them.
    pub paths: Vec<String>,
    /// The format spec as given (`combined`, `nginx:'…'`...), compiled by `parse::Format`.
    pub format: String,
    /// How late (in log time) a line may arrive and still be taken in order.
    pub lateness_ms: u64,
    pub start_at: StartAt,
}

/// Where `watch` starts reading a file it has no checkpoint for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    End,
    Beginning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engine {
    /// Shard threads; 0 = one per CPU (see [`Engine::shard_count`]).
    pub shards: usize,
    /// Hard cap on tracked (key, rule) entries over all shards.
    pub max_keys: u64,
}

impl Engine {
    /// The number of shard threads to run.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxy {
    /// Proxies whose connections carry the real client in `client_ip_field`.
    pub trusted: Vec<Trusted>,
    /// Log field holding the real client (leading `$` removed), e.g. `http_cf_connecting_ip`.
    pub client_ip_field: Option<String>,
    /// A file of provider ranges that replaces the built-in list.
    pub ranges_file: Option<PathBuf>,
}

/// One `[proxy] trusted` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trusted {
    /// A provider from [`KNOWN_PROXIES`] (lower-case).
    Named(String),
    Range(Cidr),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Checkpoints and active bans; `None` = nothing persists.
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Address of the metrics endpoint; `None` = off.
    pub listen: Option<SocketAddr>,
}

/// Command-line flags that override the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--format`
    pub format: Option<String>,
    /// `--rate`, `--burst`, `--ban`: set the `default` rule (refused when the config has rules).
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub ban: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            origin: BUILT_IN.to_string(),
            input: Input {
                paths: Vec::new(),
                format: DEFAULT_FORMAT.to_string(),
                lateness_ms: DEFAULT_LATENESS_MS,
                start_at: StartAt::End,
            },
            rules: vec![default_rule()],
            rules_configured: false,
            allow: DEFAULT_ALLOW
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            engine: Engine {
                shards: 0,
                max_keys: DEFAULT_MAX_KEYS,
            },
            proxy: Proxy::default(),
            state: State::default(),
            metrics: Metrics::default(),
            sinks: Vec::new(),
        }
    }
}

/// The rule used when the config has none, and the starting point of every `[[rule]]`.
pub fn default_rule() -> RuleSpec {
    RuleSpec {
        name: DEFAULT_RULE.to_string(),
        rate: Rate {
            milli_per_sec: 20_000,
            text: DEFAULT_RATE.to_string(),
        },
        burst: DEFAULT_BURST,
        ban_ms: DEFAULT_BAN_MS,
        ban_factor: DEFAULT_FACTOR,
        max_ban_ms: DEFAULT_MAX_BAN_MS,
        recidive_window_ms: DEFAULT_WINDOW_MS,
        methods: Vec::new(),
        statuses: Vec::new(),
        path_prefix: Vec::new(),
        path_suffix: Vec::new(),
        path_contains: Vec::new(),
        exclude_extensions: Vec::new(),
        vhosts: Vec::new(),
        ipv4_prefix: 32,
        ipv6_prefix: 64,
        key_by_vhost: false,
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            kind: ConfigErrorKind::Read,
            origin: origin.clone(),
            position: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Checks config text; `origin` names it in errors (usually the file name).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cx = Cx { origin, text };
        // Syntax first, so that a syntax error is reported as one and not as a schema error.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(cx.toml_error(&e, ConfigErrorKind::Syntax));
        }
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| cx.toml_error(&e, ConfigErrorKind::WrongType))?;
        raw.check(&cx)
    }

    /// Applies command-line flags. `--rate/--burst/--ban` set the `default` rule and are refused
    /// when the config defines its own rules (which one would they change?).
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let err = |kind, key: &str, message: String| ConfigError {
            kind,
            origin: COMMAND_LINE.to_string(),
            position: None,
            key: key.to_string(),
            message,
        };
        if let Some(format) = &o.format {
            if format.trim().is_empty() {
                return Err(err(
                    ConfigErrorKind::Invalid,
                    "--format",
                    "empty format".into(),
                ));
            }
            self.input.format = format.clone();
        }
        let flags = [
            ("--rate", "rate", o.rate.is_some()),
            ("--burst", "burst", o.burst.is_some()),
            ("--ban", "ban", o.ban.is_some()),
        ];
        if self.rules_configured {
            if let Some((flag, key, _)) = flags.iter().find(|f| f.2) {
                return Err(err(
                    ConfigErrorKind::Conflict,
                    flag,
                    format!(
                        "{} defines its own [[rule]] tables; set `{key}` in them instead",
                        self.origin
                    ),
                ));
            }
        }
        let Some(rule) = self.rules.first_mut() else {
            return Ok(());
        };
        if let Some(rate) = &o.rate {
            rule.rate = parse_rate(rate).map_err(|m| err(ConfigErrorKind::Invalid, "--rate", m))?;
        }
        if let Some(burst) = o.burst {
            rule.burst = burst;
        }
        if let Some(ban) = &o.ban {
            let ms = parse_duration(ban)
                .and_then(|ms| at_least(ms, SECOND, "a ban"))
                .map_err(|m| err(ConfigErrorKind::Invalid, "--ban", m))?;
            rule.ban_ms = ms;
            rule.max_ban_ms = rule.max_ban_ms.max(ms);
        }
        Ok(())
    }

    /// A readable summary of everything understood, for `check-config`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.describe_into(&mut s);
        s
    }

    fn describe_into(&self, s: &mut String) -> fmt::Result {
        writeln!(s, "config: {}", self.origin)?;
        writeln!(s, "input:")?;
        if self.input.paths.is_empty() {
            writeln!(s, "  paths: none (given on the command line)")?;
        } else {
            for p in &self.input.paths {
                writeln!(s, "  path: {p}")?;
            }
        }
        writeln!(s, "  format: {}", self.input.format)?;
        writeln!(
            s,
            "  lateness: {} (older lines are counted as late)",
            fmt_ms(self.input.lateness_ms)
        )?;
        let start = match self.input.start_at {
            StartAt::End => "end",
            StartAt::Beginning => "beginning",
        };
        writeln!(s, "  watch starts new files at their {start}")?;
        let origin = if self.rules_configured {
            "from [[rule]]"
        } else {
            "built in"
        };
        writeln!(s, "rules ({}, {origin}):", self.rules.len())?;
        for r in &self.rules {
            describe_rule(s, r)?;
        }
        let allow: Vec<String> = self.allow.iter().map(|c| c.to_string()).collect();
        writeln!(s, "never banned: {}", or_none(&allow.join(", ")))?;
        let shards = if self.engine.shards == 0 {
            format!("one per CPU ({})", self.engine.shard_count())
        } else {
            self.engine.shards.to_string()
        };
        writeln!(
            s,
            "engine: {shards} shards, at most {} keys tracked",
            self.engine.max_keys
        )?;
        if self.proxy.trusted.is_empty() {
            writeln!(s, "proxy: none (the connecting address is the client)")?;
        } else {
            let trusted: Vec<String> = self
                .proxy
                .trusted
                .iter()
                .map(|t| match t {
                    Trusted::Named(n) => n.clone(),
                    Trusted::Range(c) => c.to_string(),
                })
                .collect();
            writeln!(s, "proxy: trusted {} (never banned)", trusted.join(", "))?;
            match &self.proxy.client_ip_field {
                Some(f) => writeln!(s, "  real client from field {f}")?,
                None => writeln!(s, "  no client_ip_field: the proxy's address is the client")?,
            }
            if let Some(f) = &self.proxy.ranges_file {
                writeln!(s, "  provider ranges from {}", f.display())?;
            }
        }
        match &self.state.dir {
            Some(d) => writeln!(s, "state: {}", d.display())?,
            None => writeln!(s, "state: none (bans and read offsets are not persisted)")?,
        }
        match &self.metrics.listen {
            Some(a) => writeln!(s, "metrics: http://{a}/metrics")?,
            None => writeln!(s, "metrics: off")?,
        }
        if self.sinks.is_empty() {
            writeln!(s, "sinks: none (events go to stdout as JSON lines)")?;
        } else {
            let types: Vec<&str> = self
                .sinks
                .iter()
                .filter_map(|t| t.get("type").and_then(|v| v.as_str()))
                .collect();
            writeln!(s, "sinks: {}", types.join(", "))?;
        }
        Ok(())
    }
}

fn describe_rule(s: &mut String, r: &RuleSpec) -> fmt::Result {
    writeln!(
        s,
        "  {}: {} with burst {}; ban {}, x{} for each repeat within {}, at most {}",
        r.name,
        r.rate.text,
        r.burst,
        fmt_ms(r.ban_ms),
        r.ban_factor,
        fmt_ms(r.recidive_window_ms),
        fmt_ms(r.max_ban_ms)
    )?;
    let key = if r.key_by_vhost {
        "client + vhost"
    } else {
        "client"
    };
    writeln!(
        s,
        "    key: {key} (IPv4 /{}, IPv6 /{})",
        r.ipv4_prefix, r.ipv6_prefix
    )?;
    let statuses: Vec<String> = r
        .statuses
        .iter()
        .map(|m| match m {
            StatusMatch::Code(c) => c.to_string(),
            StatusMatch::Class(c) => format!("{c}xx"),
        })
        .collect();
    let matchers = [
        ("methods", r.methods.join(", ")),
        ("statuses", statuses.join(", ")),
        ("path starts with", r.path_prefix.join(" | ")),
        ("path ends with", r.path_suffix.join(" | ")),
        ("path contains", r.path_contains.join(" | ")),
        ("vhosts", r.vhosts.join(", ")),
    ];
    let mut any = false;
    for (what, list) in matchers {
        if !list.is_empty() {
            writeln!(s, "    {what}: {list}")?;
            any = true;
        }
    }
    if !any {
        writeln!(s, "    counts every request")?;
    }
    if !r.exclude_extensions.is_empty() {
        writeln!(s, "    except: .{}", r.exclude_extensions.join(", ."))?;
    }
    Ok(())
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A config that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    /// The file (or [`BUILT_IN`], [`COMMAND_LINE`]).
    pub origin: String,
    /// 1-based line and column in the file, when known.
    pub position: Option<(usize, usize)>,
    /// Key path (`rule[1].rate`) or flag (`--rate`); empty when about the whole file.
    pub key: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file cannot be read.
    Read,
    /// Not TOML.
    Syntax,
    /// A key the config does not have.
    UnknownKey,
    /// A value of the wrong TOML type (a string where a number belongs...).
    WrongType,
    /// A value of the right type that does not make sense.
    Invalid,
    /// A command-line flag that contradicts the file.
    Conflict,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text being checked, to turn spans into positions.
struct Cx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Cx<'_> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: String,
    ) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            origin: self.origin.to_string(),
            position: span.map(|s| line_col(self.text, s.start)),
            key: key.into(),
            message: msg,
        }
    }

    fn invalid<T>(&self, at: &Spanned<T>, key: impl Into<String>, msg: String) -> ConfigError {
        self.error(Some(at.span()), key, msg)
    }

    fn toml_error(&self, e: &toml::de::Error, kind: ConfigErrorKind) -> ConfigError {
        // toml's messages may span lines ("invalid table header\nexpected `.`, `]`").
        let mut message = e.message().trim().replace('\n', ": ");
        let mut kind = kind;
        if let Some(rest) = message.strip_prefix("unknown field") {
            kind = ConfigErrorKind::UnknownKey;
            message = format!("unknown key{rest}");
        }
        let key = match (&e.span(), kind) {
            (Some(span), ConfigErrorKind::UnknownKey | ConfigErrorKind::WrongType) => {
                key_path_at(self.text, span.clone(), kind == ConfigErrorKind::UnknownKey)
            }
            _ => String::new(),
        };
        ConfigError {
            kind,
            origin: self.origin.to_string(),
            position: e.span().map(|s| line_col(self.text, s.start)),
            key,
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The key path of the value (or, with `span_is_key`, the key) at `span`: the table headers
/// before it (counting `[[array]]` tables) and the `key =` it belongs to. A heuristic over the
/// text — it does not follow multi-line strings — which is enough to name a key in an error.
fn key_path_at(text: &str, span: Range<usize>, span_is_key: bool) -> String {
    let mut pos = span.start.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let error_line = &text[line_start..line_end];

    let mut table = String::new();
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut enter = |name: String, is_array: bool| {
        if is_array {
            let count = arrays.entry(name.clone()).or_insert(0);
            *count += 1;
            format!("{name}[{}]", *count - 1)
        } else {
            name
        }
    };
    // The last `key =` since the last header: the key a multi-line value belongs to.
    let mut last_key = None;
    for line in text[..line_start].lines() {
        if let Some((name, is_array)) = table_header(line) {
            table = enter(name, is_array);
            last_key = None;
        } else if let Some(k) = line_key(line) {
            last_key = Some(k);
        }
    }
    if let Some((name, is_array)) = table_header(error_line) {
        // The error is the header itself: an unknown table.
        return enter(name, is_array);
    }
    let outer = line_key(error_line).or(last_key);
    let inner = if span_is_key {
        text.get(span).map(|k| unquote(k.trim()))
    } else {
        key_before(&error_line[..pos - line_start])
    };
    let mut parts: Vec<String> = Vec::new();
    if !table.is_empty() {
        parts.push(table);
    }
    match (outer, inner) {
        // `i = { x = "s" }`: a key inside an inline table.
        (Some(o), Some(i)) if o != i => parts.extend([o, i]),
        (Some(k), _) | (None, Some(k)) => parts.push(k),
        (None, None) => {}
    }
    parts.join(".")
}

/// `[name]` → `(name, false)`, `[[name]]` → `(name, true)`; `None` for other lines (an array
/// continuation such as `[1, 2],` is not a header: a header is only a key path and a comment).
fn table_header(line: &str) -> Option<(String, bool)> {
    let t = line.trim_start();
    let (inner, rest, is_array) = if let Some(r) = t.strip_prefix("[[") {
        let end = r.find("]]")?;
        (&r[..end], &r[end + 2..], true)
    } else {
        let r = t.strip_prefix('[')?;
        let end = r.find(']')?;
        (&r[..end], &r[end + 1..], false)
    };
    let rest = rest.trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return None;
    }
    let name: String = inner
        .split('.')
        .map(|p| unquote(p.trim()))
        .collect::<Vec<_>>()
        .join(".");
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    (!name.is_empty() && name.chars().all(plain)).then_some((name, is_array))
}

/// The key of a `key = value` line.
fn line_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    (!k.is_empty() && !k.starts_with('[') && k.chars().all(plain)).then(|| unquote(k))
}

/// The key just before `… key = ` at the end of `before` (within an inline table).
fn key_before(before: &str) -> Option<String> {
    let t = before.trim_end().strip_suffix('=')?.trim_end();
    let start = t
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-\"'".contains(c)))
        .map_or(0, |i| i + 1);
    let k = &t[start..];
    (!k.is_empty()).then(|| unquote(k))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_string()
}

// ---------------------------------------------------------------------------------------------
// Raw structs: the file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Which logs to read and how they are written.
    #[serde(default)]
    input: RawInput,
    /// Rate rules (`[[rule]]`); none = the built-in `default` rule.
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    /// Addresses never banned.
    #[serde(default)]
    allow: RawAllow,
    /// Shard threads and memory bounds.
    #[serde(default)]
    engine: RawEngine,
    /// Requests arriving through a CDN or reverse proxy.
    #[serde(default)]
    proxy: RawProxy,
    /// Persistence across restarts.
    #[serde(default)]
    state: RawState,
    /// The metrics endpoint.
    #[serde(default)]
    metrics: RawMetrics,
    /// Where events go (`[[sink]]`, checked by each sink); none = stdout.
    #[serde(default)]
    sink: Vec<Spanned<toml::Table>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInput {
    /// Log files or globs, e.g. `/var/www/vhosts/*/logs/access_log`; the command line's replace them.
    paths: Option<Vec<Spanned<String>>>,
    /// `combined` (default), `common`, `vhost_combined`, `nginx:'<log_format>'`, `apache:'<LogFormat>'`.
    format: Option<Spanned<String>>,
    /// How far out of time order a line may arrive and still count in order (default `5s`).
    lateness: Option<Spanned<String>>,
    /// Where `watch` starts in a file it has no checkpoint for: `end` (default) or `beginning`.
    start_at: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Unique name, in events; required when there are several rules (one rule: `default`).
    name: Option<Spanned<String>>,
    /// Sustained rate in nginx units: `20r/s`, `600r/m`, `0.5r/s` (default `20r/s`).
    rate: Option<Spanned<String>>,
    /// Requests allowed above the rate before a request overflows (default 100).
    burst: Option<Spanned<i64>>,
    /// First ban length: `90s`, `10m`, `1h`, `1d` (default `10m`).
    ban: Option<Spanned<String>>,
    /// Each repeat offense within `recidive_window` multiplies the ban by this (default 2).
    ban_factor: Option<Spanned<f64>>,
    /// Longest ban (default `1w`, or `ban` when longer).
    max_ban: Option<Spanned<String>>,
    /// How long a past ban counts towards escalation (default `1d`).
    recidive_window: Option<Spanned<String>>,
    /// Count only these methods (any case); default any.
    methods: Option<Vec<Spanned<String>>>,
    /// Count only these statuses: codes (`404`) or classes (`"4xx"`); default any.
    statuses: Option<Vec<Spanned<toml::Value>>>,
    /// Count only request targets starting with this (a string or a list: any matches).
    path_prefix: Option<Spanned<toml::Value>>,
    /// Count only request targets ending with this (a string or a list).
    path_suffix: Option<Spanned<toml::Value>>,
    /// Count only request targets containing this (a string or a list).
    path_contains: Option<Spanned<toml::Value>>,
    /// Do not count paths with these extensions (`css`, `.js`...).
    exclude_extensions: Option<Vec<Spanned<String>>>,
    /// Count only these vhosts (globs such as `*.example.com`); default all.
    vhosts: Option<Vec<Spanned<String>>>,
    /// IPv4 clients are keyed by this prefix (default 32: the address).
    ipv4_prefix: Option<Spanned<i64>>,
    /// IPv6 clients are keyed by this prefix (default 64).
    ipv6_prefix: Option<Spanned<i64>>,
    /// `client` (default) or `client+vhost`.
    key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    /// Addresses and CIDR ranges never banned (default loopback); replaces the default.
    cidrs: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    /// Shard threads; 0 (default) = one per CPU.
    shards: Option<Spanned<i64>>,
    /// Most (key, rule) entries tracked at once (default 5000000).
    max_keys: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    /// Trusted proxies: provider names (`cloudflare`) or CIDR ranges; never banned.
    trusted: Option<Vec<Spanned<String>>>,
    /// Log field with the real client behind a trusted proxy (`http_cf_connecting_ip`).
    client_ip_field: Option<Spanned<String>>,
    /// A file of provider ranges replacing the built-in list.
    ranges_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// Directory for checkpoints and active bans.
    dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `address:port` of the metrics endpoint, e.g. `127.0.0.1:9877`.
    listen: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Checking: raw → validated.

impl RawConfig {
    fn check(self, cx: &Cx) -> Result<Config, ConfigError> {
        let mut c = Config {
            origin: cx.origin.to_string(),
            ..Config::default()
        };
        c.input = self.input.check(cx)?;
        if !self.rule.is_empty() {
            c.rules = check_rules(cx, self.rule)?;
            c.rules_configured = true;
        }
        if let Some(cidrs) = self.allow.cidrs {
            c.allow = cidrs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.get_ref()
                        .parse::<Cidr>()
                        .map_err(|e| cx.invalid(s, format!("allow.cidrs[{i}]"), e.to_string()))
                })
                .collect::<Result<_, _>>()?;
        }
        c.engine = self.engine.check(cx)?;
        c.proxy = self.proxy.check(cx)?;
        if let Some(dir) = self.state.dir {
            c.state.dir = Some(non_empty(cx, &dir, "state.dir")?.into());
        }
        if let Some(listen) = self.metrics.listen {
            let addr = listen.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                cx.invalid(
                    &listen,
                    "metrics.listen",
                    format!(
                        "{:?} is not an address:port (expected e.g. \"127.0.0.1:9877\")",
                        listen.get_ref()
                    ),
                )
            })?;
            c.metrics.listen = Some(addr);
        }
        for (i, sink) in self.sink.into_iter().enumerate() {
            let key = format!("sink[{i}].type");
            match sink.get_ref().get("type") {
                Some(toml::Value::String(t)) if !t.trim().is_empty() => {}
                Some(_) => {
                    return Err(cx.invalid(
                        &sink,
                        key,
                        "expected a sink name such as \"nginx\"".into(),
                    ))
                }
                None => {
                    return Err(cx.invalid(
                        &sink,
                        key,
                        "missing: every [[sink]] needs a type, e.g. type = \"nginx\"".into(),
                    ))
                }
            }
            c.sinks.push(sink.into_inner());
        }
        Ok(c)
    }
}

impl RawInput {
    fn check(self, cx: &Cx) -> Result<Input, ConfigError> {
        let mut input = Config::default().input;
        if let Some(paths) = self.paths {
            for (i, p) in paths.iter().enumerate() {
                input
                    .paths
                    .push(non_empty(cx, p, &format!("input.paths[{i}]"))?);
            }
        }
        if let Some(f) = self.format {
            input.format = non_empty(cx, &f, "input.format")?;
        }
        if let Some(l) = self.lateness {
            let ms = duration(cx, &l, "input.lateness")?;
            if ms > MAX_LATENESS_MS {
                return Err(cx.invalid(
                    &l,
                    "input.lateness",
                    format!(
                        "at most {} (lines are held this long)",
                        fmt_ms(MAX_LATENESS_MS)
                    ),
                ));
            }
            input.lateness_ms = ms;
        }
        if let Some(s) = self.start_at {
            input.start_at = match s.get_ref().as_str() {
                "end" => StartAt::End,
                "beginning" => StartAt::Beginning,
                other => {
                    return Err(cx.invalid(
                        &s,
                        "input.start_at",
                        format!("{other:?}: expected \"end\" or \"beginning\""),
                    ))
                }
            };
        }
        Ok(input)
    }
}

fn check_rules(cx: &Cx, raw: Vec<Spanned<RawRule>>) -> Result<Vec<RuleSpec>, ConfigError> {
    if raw.len() > MAX_RULES {
        return Err(cx.invalid(
            &raw[MAX_RULES],
            format!("rule[{MAX_RULES}]"),
            format!(
                "at most {MAX_RULES} rules (each request carries one bit per rule); found {}",
                raw.len()
            ),
        ));
    }
    let several = raw.len() > 1;
    let mut rules: Vec<RuleSpec> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, spanned) in raw.iter().enumerate() {
        let rule = check_rule(cx, i, spanned, several)?;
        if let Some(first) = names.insert(rule.name.clone(), i) {
            let at = spanned
                .get_ref()
                .name
                .as_ref()
                .map_or(spanned.span(), |n| n.span());
            return Err(cx.error(
                Some(at),
                format!("rule[{i}].name"),
                format!("{:?} is already the name of rule[{first}]", rule.name),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn check_rule(
    cx: &Cx,
    i: usize,
    spanned: &Spanned<RawRule>,
    several: bool,
) -> Result<RuleSpec, ConfigError> {
    let raw = spanned.get_ref();
    let key = |k: &str| format!("rule[{i}].{k}");
    let mut r = default_rule();
    match &raw.name {
        Some(n) => {
            let name = n.get_ref();
            let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
                return Err(cx.invalid(
                    n,
                    key("name"),
                    format!("{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
            r.name = name.clone();
        }
        None if several => {
            return Err(cx.invalid(
                spanned,
                key("name"),
                "missing: every rule needs a name when there are several".into(),
            ))
        }
        None => {}
    }
    if let Some(rate) = &raw.rate {
        r.rate = parse_rate(rate.get_ref()).map_err(|m| cx.invalid(rate, key("rate"), m))?;
    }
    if let Some(b) = &raw.burst {
        r.burst = u32::try_from(*b.get_ref()).map_err(|_| {
            cx.invalid(
                b,
                key("burst"),
                format!("{} is not a number of requests (0 or more)", b.get_ref()),
            )
        })?;
    }
    if let Some(b) = &raw.ban {
        r.ban_ms = duration(cx, b, &key("ban"))?;
        at_least(r.ban_ms, SECOND, "a ban").map_err(|m| cx.invalid(b, key("ban"), m))?;
    }
    r.max_ban_ms = r.max_ban_ms.max(r.ban_ms);
    if let Some(f) = &raw.ban_factor {
        let v = *f.get_ref();
        if !(1.0..=1000.0).contains(&v) {
            return Err(cx.invalid(
                f,
                key("ban_factor"),
                format!("{v} is not between 1 and 1000"),
            ));
        }
        r.ban_factor = v;
    }
    if let Some(m) = &raw.max_ban {
        r.max_ban_ms = duration(cx, m, &key("max_ban"))?;
        if r.max_ban_ms < r.ban_ms {
            return Err(cx.invalid(
                m,
                key("max_ban"),
                format!(
                    "{} is shorter than ban ({})",
                    fmt_ms(r.max_ban_ms),
                    fmt_ms(r.ban_ms)
                ),
            ));
        }
    }
    if let Some(w) = &raw.recidive_window {
        r.recidive_window_ms = duration(cx, w, &key("recidive_window"))?;
    }
    if let Some(methods) = &raw.methods {
        for (j, m) in methods.iter().enumerate() {
            let t = m.get_ref();
            let ok = |c: char| c.is_ascii_alphanumeric() || "-_".contains(c);
            if t.is_empty() || !t.chars().all(ok) {
                return Err(cx.invalid(
                    m,
                    format!("{}[{j}]", key("methods")),
                    format!("{t:?} is not an HTTP method"),
                ));
            }
            r.methods.push(t.to_ascii_uppercase());
        }
    }
    if let Some(statuses) = &raw.statuses {
        for (j, s) in statuses.iter().enumerate() {
            let m = parse_status(s.get_ref()).ok_or_else(|| {
                cx.invalid(
                    s,
                    format!("{}[{j}]", key("statuses")),
                    format!(
                        "{} is not a status (expected e.g. 404 or \"4xx\")",
                        s.get_ref()
                    ),
                )
            })?;
            r.statuses.push(m);
        }
    }
    if let Some(v) = &raw.path_prefix {
        r.path_prefix = string_or_list(cx, v, &key("path_prefix"))?;
    }
    if let Some(v) = &raw.path_suffix {
        r.path_suffix = string_or_list(cx, v, &key("path_suffix"))?;
    }
    if let Some(v) = &raw.path_contains {
        r.path_contains = string_or_list(cx, v, &key("path_contains"))?;
    }
    if let Some(exts) = &raw.exclude_extensions {
        for (j, e) in exts.iter().enumerate() {
            let t = e.get_ref().trim_start_matches('.').to_ascii_lowercase();
            if t.is_empty() || t.contains(['/', '?', ' ']) {
                return Err(cx.invalid(
                    e,
                    format!("{}[{j}]", key("exclude_extensions")),
                    format!(
                        "{:?} is not a file extension (expected e.g. \"css\")",
                        e.get_ref()
                    ),
                ));
            }
            r.exclude_extensions.push(t);
        }
    }
    if let Some(vhosts) = &raw.vhosts {
        for (j, v) in vhosts.iter().enumerate() {
            let t = non_empty(cx, v, &format!("{}[{j}]", key("vhosts")))?;
            r.vhosts.push(t.to_ascii_lowercase());
        }
    }
    if let Some(p) = &raw.ipv4_prefix {
        r.ipv4_prefix = prefix(cx, p, &key("ipv4_prefix"), 8, 32)?;
    }
    if let Some(p) = &raw.ipv6_prefix {
        r.ipv6_prefix = prefix(cx, p, &key("ipv6_prefix"), 16, 128)?;
    }
    if let Some(k) = &raw.key {
        r.key_by_vhost = match k.get_ref().as_str() {
            "client" => false,
            "client+vhost" => true,
            other => {
                return Err(cx.invalid(
                    k,
                    key("key"),
                    format!("{other:?}: expected \"client\" or \"client+vhost\""),
                ))
            }
        };
    }
    Ok(r)
}

impl RawEngine {
    fn check(self, cx: &Cx) -> Result<Engine, ConfigError> {
        let mut e = Config::default().engine;
        if let Some(s) = &self.shards {
            e.shards = usize::try_from(*s.get_ref())
                .ok()
                .filter(|&n| n <= 1024)
                .ok_or_else(|| {
                    cx.invalid(
                        s,
                        "engine.shards",
                        format!("{} is not between 0 (one per CPU) and 1024", s.get_ref()),
                    )
                })?;
        }
        if let Some(m) = &self.max_keys {
            e.max_keys = u64::try_from(*m.get_ref())
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    cx.invalid(
                        m,
                        "engine.max_keys",
                        format!("{} is not a positive number", m.get_ref()),
                    )
                })?;
        }
        Ok(e)
    }
}

impl RawProxy {
    fn check(self, cx: &Cx) -> Result<Proxy, ConfigError> {
        let mut p = Proxy::default();
        for (i, t) in self.trusted.iter().flatten().enumerate() {
            let text = t.get_ref().trim();
            let lower = text.to_ascii_lowercase();
            let entry = if KNOWN_PROXIES.contains(&lower.as_str()) {
                Trusted::Named(lower)
            } else if let Ok(c) = text.parse::<Cidr>() {
                Trusted::Range(c)
            } else {
                return Err(cx.invalid(
                    t,
                    format!("proxy.trusted[{i}]"),
                    format!(
                        "{text:?} is neither a known provider ({}) nor an IP address or CIDR range",
                        KNOWN_PROXIES.join(", ")
                    ),
                ));
            };
            p.trusted.push(entry);
        }
        if let Some(f) = &self.client_ip_field {
            let name = non_empty(cx, f, "proxy.client_ip_field")?;
            if p.trusted.is_empty() {
                return Err(cx.invalid(
                    f,
                    "proxy.client_ip_field",
                    "needs [proxy] trusted: without trusted proxies any client could name its own address".into(),
                ));
            }
            p.client_ip_field = Some(name.trim_start_matches('$').to_string());
        }
        if let Some(f) = &self.ranges_file {
            p.ranges_file = Some(non_empty(cx, f, "proxy.ranges_file")?.into());
        }
        Ok(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers.

/// `20r/s`, `600r/m`, `0.5r/s` (nginx's units; up to 9 decimals) → milli-requests per second,
/// rounded down as nginx does.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("{text:?} is not a rate (expected e.g. \"20r/s\" or \"600r/m\")");
    let (num, per_minute) = match (text.strip_suffix("r/s"), text.strip_suffix("r/m")) {
        (Some(n), _) => (n, false),
        (_, Some(n)) => (n, true),
        _ => return Err(bad()),
    };
    let nanos = decimal_nanos(num).ok_or_else(bad)?;
    // requests × 1e9 → milli-requests per second.
    let milli = if per_minute {
        nanos / 60_000_000
    } else {
        nanos / 1_000_000
    };
    if milli == 0 {
        return Err(format!(
            "{text:?} is too slow (the least is 0.001r/s or 0.06r/m)"
        ));
    }
    if milli > 1_000_000_000 {
        return Err(format!("{text:?} is too fast (the most is 1000000r/s)"));
    }
    Ok(Rate {
        milli_per_sec: milli as u64,
        text: text.to_string(),
    })
}

/// A plain decimal (`12`, `0.5`) times 10^9, exactly.
fn decimal_nanos(s: &str) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 12 || !digits(int) || frac.len() > 9 || !digits(frac) {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some(int * 1_000_000_000 + frac_val * 10u128.pow(9 - frac.len() as u32))
}

/// A duration such as `90s`, `10m`, `1h`, `1d`, `1w`, `1h 30m` → milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("{text:?} is not a duration (expected e.g. \"90s\", \"10m\", \"1h\", \"1d\")")
    })?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "{text:?} is too long (at most {})",
            fmt_ms(MAX_DURATION_MS)
        ));
    }
    Ok(ms)
}

fn at_least(ms: u64, min: u64, what: &str) -> Result<u64, String> {
    if ms < min {
        return Err(format!("{what} lasts at least {}", fmt_ms(min)));
    }
    Ok(ms)
}

fn duration(cx: &Cx, s: &Spanned<String>, key: &str) -> Result<u64, ConfigError> {
    parse_duration(s.get_ref()).map_err(|m| cx.invalid(s, key, m))
}

fn non_empty(cx: &Cx, s: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    if s.get_ref().trim().is_empty() {
        return Err(cx.invalid(s, key, "must not be empty".into()));
    }
    Ok(s.get_ref().clone())
}

fn prefix(cx: &Cx, p: &Spanned<i64>, key: &str, min: u8, max: u8) -> Result<u8, ConfigError> {
    let v = *p.get_ref();
    if v < i64::from(min) || v > i64::from(max) {
        return Err(cx.invalid(
            p,
            key,
            format!("{v} is not between {min} and {max} (a shorter prefix lumps whole networks into one key)"),
        ));
    }
    Ok(v as u8)
}

/// `404` / `"404"` → a code, `"4xx"` → a class.
fn parse_status(v: &toml::Value) -> Option<StatusMatch> {
    match v {
        toml::Value::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(StatusMatch::Code),
        toml::Value::String(s) => {
            let b = s.trim().as_bytes();
            match b {
                [c @ b'1'..=b'5', x, y]
                    if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
                {
                    Some(StatusMatch::Class(c - b'0'))
                }
                [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => std::str::from_utf8(b)
                    .ok()?
                    .parse()
                    .ok()
                    .map(StatusMatch::Code),
                _ => None,
            }
        }
        _ => None,
    }
}

fn string_or_list(
    cx: &Cx,
    v: &Spanned<toml::Value>,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    let bad = || {
        cx.invalid(
            v,
            key,
            "expected a non-empty string or a list of them".into(),
        )
    };
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|i| match i {
            toml::Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

/// Milliseconds in the largest unit that divides them: `10m`, `1d`, `1w`, `90s`, `1500ms`.
pub fn fmt_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (WEEK, "w"),
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
    ];
    if ms == 0 {
        return "0s".into();
    }
    for (unit, name) in UNITS {
        if ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "floodwatch.toml")
    }

    /// The error's Display, for a config that must be refused.
    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(
            c,
            Config {
                origin: "floodwatch.toml".into(),
                ..Config::default()
            }
        );
        assert_eq!(c.input.format, "combined");
        assert!(c.input.paths.is_empty());
        assert_eq!(c.input.lateness_ms, 5000);
        assert_eq!(c.input.start_at, StartAt::End);
        assert_eq!(c.allow, vec![cidr("127.0.0.0/8"), cidr("::1/128")]);
        assert_eq!(
            c.engine,
            Engine {
                shards: 0,
                max_keys: 5_000_000
            }
        );
        assert!(c.engine.shard_count() >= 1);
        assert_eq!(c.proxy, Proxy::default());
        assert_eq!(c.state.dir, None);
        assert_eq!(c.metrics.listen, None);
        assert!(c.sinks.is_empty());
        assert!(!c.rules_configured);
        let r = &c.rules[..];
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "default");
        assert_eq!(r[0].rate.milli_per_sec, 20_000);
        assert_eq!(r[0].rate.text, "20r/s");
        assert_eq!(r[0].burst, 100);
        assert_eq!(r[0].ban_ms, 600_000);
        assert_eq!(r[0].ban_factor, 2.0);
        assert_eq!(r[0].max_ban_ms, 7 * 86_400_000);
        assert_eq!(r[0].recidive_window_ms, 86_400_000);
        assert_eq!((r[0].ipv4_prefix, r[0].ipv6_prefix), (32, 64));
        assert!(!r[0].key_by_vhost);
        assert!(r[0].methods.is_empty() && r[0].statuses.is_empty() && r[0].vhosts.is_empty());
    }

    #[test]
    fn a_bare_rule_is_the_default_rule() {
        let c = parse("[[rule]]\n").unwrap();
        assert!(c.rules_configured);
        assert_eq!(c.rules, vec![default_rule()]);
        // ...and the built-in constants say what their text says.
        let r = default_rule();
        assert_eq!(parse_rate(DEFAULT_RATE).unwrap(), r.rate);
        assert_eq!(parse_duration("10m").unwrap(), r.ban_ms);
        assert_eq!(parse_duration("1w").unwrap(), r.max_ban_ms);
        assert_eq!(parse_duration("1d").unwrap(), r.recidive_window_ms);
    }

    const FULL: &str = r#"
# Every key there is.
[input]
paths  = ["/var/www/vhosts/*/logs/access_log", "/var/www/vhosts/*/logs/access_ssl_log"]
format = "nginx:'$remote_addr [$time_local] \"$request\" $status'"
lateness = "10s"
start_at = "beginning"

[[rule]]
name  = "get-flood"
rate  = "600r/m"
burst = 50
ban   = "1h"
ban_factor = 1.5
max_ban = "2d"
recidive_window = "12h"
methods = ["get", "POST"]
statuses = [404, "5xx", "403"]
path_prefix = "/wp-"
path_suffix = [".php", "/xmlrpc"]
path_contains = ["../"]
exclude_extensions = ["css", ".JS", "woff2"]
vhosts = ["*.Example.com", "shop.example.org"]
ipv4_prefix = 24
ipv6_prefix = 48
key = "client+vhost"

[[rule]]
name = "slow"
rate = "0.5r/s"

[allow]
cidrs = ["10.0.0.0/8", "2001:db8::53"]

[engine]
shards = 3
max_keys = 1000

[proxy]
trusted = ["Cloudflare", "192.0.2.0/24"]
client_ip_field = "$http_cf_connecting_ip"
ranges_file = "/etc/floodwatch/cloudflare.txt"

[state]
dir = "/var/lib/floodwatch"

[metrics]
listen = "127.0.0.1:9877"

[[sink]]
type = "nginx"
path = "/etc/nginx/conf.d/floodwatch-deny.conf"
reload_command = ["nginx", "-s", "reload"]

[[sink]]
type = "cloudflare"
zone_id = "..."
"#;

    #[test]
    fn every_key_is_understood() {
        let c = parse(FULL).unwrap();
        assert_eq!(
            c.input,
            Input {
                paths: vec![
                    "/var/www/vhosts/*/logs/access_log".into(),
                    "/var/www/vhosts/*/logs/access_ssl_log".into()
                ],
                format: "nginx:'$remote_addr [$time_local] \"$request\" $status'".into(),
                lateness_ms: 10_000,
                start_at: StartAt::Beginning,
            }
        );
        assert!(c.rules_configured);
        let r = &c.rules[0];
        let want = RuleSpec {
            name: "get-flood".into(),
            rate: Rate {
                milli_per_sec: 10_000,
                text: "600r/m".into(),
            },
            burst: 50,
            ban_ms: 3_600_000,
            ban_factor: 1.5,
            max_ban_ms: 2 * 86_400_000,
            recidive_window_ms: 12 * 3_600_000,
            methods: vec!["GET".into(), "POST".into()],
            statuses: vec![
                StatusMatch::Code(404),
                StatusMatch::Class(5),
                StatusMatch::Code(403),
            ],
            path_prefix: vec!["/wp-".into()],
            path_suffix: vec![".php".into(), "/xmlrpc".into()],
            path_contains: vec!["../".into()],
            exclude_extensions: vec!["css".into(), "js".into(), "woff2".into()],
            vhosts: vec!["*.example.com".into(), "shop.example.org".into()],
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            key_by_vhost: true,
        };
        assert_eq!(*r, want);
        let slow = &c.rules[1];
        assert_eq!(slow.name, "slow");
        assert_eq!(slow.rate.milli_per_sec, 500);
        assert_eq!(slow.burst, 100);
        assert_eq!(c.allow, vec![cidr("10.0.0.0/8"), cidr("2001:db8::53")]);
        assert_eq!(
            c.engine,
            Engine {
                shards: 3,
                max_keys: 1000
            }
        );
        assert_eq!(c.engine.shard_count(), 3);
        assert_eq!(
            c.proxy,
            Proxy {
                trusted: vec![
                    Trusted::Named("cloudflare".into()),
                    Trusted::Range(cidr("192.0.2.0/24"))
                ],
                client_ip_field: Some("http_cf_connecting_ip".into()),
                ranges_file: Some("/etc/floodwatch/cloudflare.txt".into()),
            }
        );
        assert_eq!(c.state.dir, Some(PathBuf::from("/var/lib/floodwatch")));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9877".parse().unwrap()));
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(c.sinks[0]["type"].as_str(), Some("nginx"));
        assert_eq!(
            c.sinks[0]["reload_command"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(c.sinks[1]["zone_id"].as_str(), Some("..."));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("[input]\nformat = \"combined\"\nfromat = 1\n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
        assert_eq!(e.position, Some((3, 1)));
        assert_eq!(e.key, "input.fromat");
        assert!(
            e.to_string().starts_with(
                "floodwatch.toml:3:1: input.fromat: unknown key `fromat`, expected one of `paths`"
            ),
            "{e}"
        );
        let text = "[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\n  rat = \"1r/s\"\n";
        assert!(
            err(text).starts_with("floodwatch.toml:6:3: rule[1].rat: unknown key `rat`"),
            "{}",
            err(text)
        );
        assert!(
            err("[inptu]\nx = 1\n").starts_with("floodwatch.toml:1:2: inptu: unknown key `inptu`")
        );
        assert!(err("verbose = true\n").starts_with("floodwatch.toml:1:1: verbose: unknown key"));
        assert!(err("input = { paths = [], fmt = \"x\" }\n")
            .starts_with("floodwatch.toml:1:23: input.fmt: unknown key `fmt`"));
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let e = parse("[[rule]]\nburst = \"100\"\n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::WrongType);
        assert_eq!(
            e.to_string(),
            "floodwatch.toml:2:9: rule[0].burst: invalid type: string \"100\", expected i64"
        );
        assert_eq!(
            err("input = { lateness = 5 }\n"),
            "floodwatch.toml:1:22: input.lateness: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err("[input]\npaths = [\n  \"a\",\n  3,\n]\n"),
            "floodwatch.toml:4:3: input.paths: invalid type: integer `3`, expected a string"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = parse("[input]\nformat = \n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert_eq!(e.position.map(|p| p.0), Some(2));
        assert!(e.to_string().starts_with("floodwatch.toml:2:"), "{e}");
        assert!(!e.to_string().contains('\n'));
        let e = parse("[input\n").unwrap_err();
        assert_eq!(
            (e.kind, e.position.map(|p| p.0)),
            (ConfigErrorKind::Syntax, Some(1))
        );
    }

    #[test]
    fn bad_rates() {
        assert_eq!(
            err("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\nrate = \"20r/x\"\n"),
            "floodwatch.toml:5:8: rule[1].rate: \"20r/x\" is not a rate (expected e.g. \"20r/s\" or \"600r/m\")"
        );
        let ok = [
            ("20r/s", 20_000),
            ("600r/m", 10_000),
            ("30r/m", 500),
            ("1r/m", 16),
            ("0.5r/s", 500),
            ("0.001r/s", 1),
            ("1.25r/s", 1250),
            ("0.06r/m", 1),
            ("1000000r/s", 1_000_000_000),
        ];
        for (text, milli) in ok {
            assert_eq!(
                parse_rate(text).map(|r| r.milli_per_sec),
                Ok(milli),
                "{text}"
            );
        }
        for text in [
            "20 r/s",
            "-1r/s",
            "1.r/s",
            ".5r/s",
            "1e3r/s",
            "r/s",
            "20r/h",
            "20",
            "",
            "1.0000000001r/s",
        ] {
            assert!(
                parse_rate(text).unwrap_err().contains("is not a rate"),
                "{text}"
            );
        }
        for text in ["0r/s", "0.0009r/s", "0.05r/m"] {
            assert!(parse_rate(text).unwrap_err().contains("too slow"), "{text}");
        }
        assert!(parse_rate("1000001r/s").unwrap_err().contains("too fast"));
    }

    #[test]
    fn bad_durations() {
        assert_eq!(
            err("[[rule]]\nban = \"10 minutes please\"\n"),
            "floodwatch.toml:2:7: rule[0].ban: \"10 minutes please\" is not a duration (expected e.g. \"90s\", \"10m\", \"1h\", \"1d\")"
        );
        assert_eq!(
            err("[[rule]]\nban = \"500ms\"\n"),
            "floodwatch.toml:2:7: rule[0].ban: a ban lasts at least 1s"
        );
        assert_eq!(
            err("[[rule]]\nban = \"1h\"\nmax_ban = \"5m\"\n"),
            "floodwatch.toml:3:11: rule[0].max_ban: 5m is shorter than ban (1h)"
        );
        assert!(err("[input]\nlateness = \"2h\"\n").contains("input.lateness: at most 1h"));
        assert!(err("[[rule]]\nrecidive_window = \"100y\"\n")
            .contains("rule[0].recidive_window: \"100y\" is too long"));
        // A ban longer than the default max_ban raises max_ban rather than failing.
        let c = parse("[[rule]]\nban = \"30d\"\n").unwrap();
        assert_eq!(c.rules[0].max_ban_ms, 30 * 86_400_000);
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("1h 30m"), Ok(5_400_000));
    }

    #[test]
    fn bad_cidrs() {
        assert_eq!(
            err("[allow]\ncidrs = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n"),
            "floodwatch.toml:2:24: allow.cidrs[1]: not an IP address or CIDR range: \"10.0.0.0/33\""
        );
        assert_eq!(
            err("[proxy]\ntrusted = [\"cloudfare\"]\n"),
            "floodwatch.toml:2:12: proxy.trusted[0]: \"cloudfare\" is neither a known provider (cloudflare) nor an IP address or CIDR range"
        );
        assert!(parse("[allow]\ncidrs = []\n").unwrap().allow.is_empty());
    }

    #[test]
    fn rule_names_must_be_unique_and_present() {
        assert_eq!(
            err("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\n[[rule]]\nname = \"a\"\n"),
            "floodwatch.toml:6:8: rule[2].name: \"a\" is already the name of rule[0]"
        );
        assert!(err("[[rule]]\nname = \"a\"\n[[rule]]\nrate = \"1r/s\"\n")
            .contains("rule[1].name: missing: every rule needs a name when there are several"));
        assert!(err("[[rule]]\nname = \"a b\"\n").contains("rule[0].name: \"a b\": use 1 to 64"));
        // One unnamed rule is `default`.
        assert_eq!(
            parse("[[rule]]\nrate = \"5r/s\"\n").unwrap().rules[0].name,
            "default"
        );
    }

    #[test]
    fn at_most_32_rules() {
        let text: String = (0..33)
            .map(|i| format!("[[rule]]\nname = \"r{i}\"\n"))
            .collect();
        assert_eq!(
            err(&text),
            "floodwatch.toml:65:1: rule[32]: at most 32 rules (each request carries one bit per rule); found 33"
        );
        let text: String = (0..32)
            .map(|i| format!("[[rule]]\nname = \"r{i}\"\n"))
            .collect();
        assert_eq!(parse(&text).unwrap().rules.len(), 32);
    }

    #[test]
    fn other_invalid_values() {
        let cases = [
            (
                "[[rule]]\nstatuses = [404, \"4x\"]\n",
                "rule[0].statuses[1]: \"4x\" is not a status",
            ),
            (
                "[[rule]]\nstatuses = [700]\n",
                "rule[0].statuses[0]: 700 is not a status",
            ),
            (
                "[[rule]]\nipv4_prefix = 4\n",
                "rule[0].ipv4_prefix: 4 is not between 8 and 32",
            ),
            (
                "[[rule]]\nipv6_prefix = 129\n",
                "rule[0].ipv6_prefix: 129 is not between 16 and 128",
            ),
            (
                "[[rule]]\nkey = \"vhost\"\n",
                "rule[0].key: \"vhost\": expected \"client\" or \"client+vhost\"",
            ),
            (
                "[[rule]]\nburst = -1\n",
                "rule[0].burst: -1 is not a number of requests",
            ),
            (
                "[[rule]]\nban_factor = 0.5\n",
                "rule[0].ban_factor: 0.5 is not between 1 and 1000",
            ),
            (
                "[[rule]]\nmethods = [\"GET /\"]\n",
                "rule[0].methods[0]: \"GET /\" is not an HTTP method",
            ),
            (
                "[[rule]]\npath_prefix = 3\n",
                "rule[0].path_prefix: expected a non-empty string or a list of them",
            ),
            (
                "[[rule]]\npath_suffix = [\"\"]\n",
                "rule[0].path_suffix: expected a non-empty string",
            ),
            (
                "[[rule]]\nexclude_extensions = [\"a/b\"]\n",
                "rule[0].exclude_extensions[0]: \"a/b\" is not a file extension",
            ),
            (
                "[[rule]]\nvhosts = [\" \"]\n",
                "rule[0].vhosts[0]: must not be empty",
            ),
            (
                "[input]\nstart_at = \"middle\"\n",
                "input.start_at: \"middle\": expected \"end\" or \"beginning\"",
            ),
            (
                "[input]\nformat = \"\"\n",
                "input.format: must not be empty",
            ),
            (
                "[engine]\nshards = -2\n",
                "engine.shards: -2 is not between 0 (one per CPU) and 1024",
            ),
            (
                "[engine]\nmax_keys = 0\n",
                "engine.max_keys: 0 is not a positive number",
            ),
            (
                "[metrics]\nlisten = \"localhost\"\n",
                "metrics.listen: \"localhost\" is not an address:port",
            ),
            (
                "[proxy]\nclient_ip_field = \"http_x_real_ip\"\n",
                "proxy.client_ip_field: needs [proxy] trusted",
            ),
            (
                "[[sink]]\npath = \"/tmp/x\"\n",
                "sink[0].type: missing: every [[sink]] needs a type",
            ),
            ("[[sink]]\ntype = 3\n", "sink[0].type: expected a sink name"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.kind, ConfigErrorKind::Invalid, "{text}");
            let shown = e.to_string();
            // Errors point at the value; a sink's point at its `[[sink]]` header.
            let line = if text.starts_with("[[sink]]") { 1 } else { 2 };
            assert_eq!(e.position.map(|p| p.0), Some(line), "{shown}");
            assert!(
                shown.contains(want),
                "{text:?}\n  got:  {shown}\n  want: {want}"
            );
        }
        // Ban factor 1 (no escalation) and integer factors are fine.
        assert_eq!(
            parse("[[rule]]\nban_factor = 1\n").unwrap().rules[0].ban_factor,
            1.0
        );
        assert_eq!(
            parse("[[rule]]\nstatuses = [\"404\", \"2XX\"]\n")
                .unwrap()
                .rules[0]
                .statuses,
            vec![StatusMatch::Code(404), StatusMatch::Class(2)]
        );
    }

    #[test]
    fn overrides_set_the_default_rule() {
        let mut c = Config::default();
        c.apply(&Overrides {
            format: Some("common".into()),
            rate: Some("5r/s".into()),
            burst: Some(7),
            ban: Some("30d".into()),
        })
        .unwrap();
        assert_eq!(c.input.format, "common");
        let r = &c.rules[0];
        assert_eq!(
            (r.rate.milli_per_sec, r.burst, r.ban_ms),
            (5000, 7, 30 * 86_400_000)
        );
        assert_eq!(r.max_ban_ms, 30 * 86_400_000);
        c.apply(&Overrides::default()).unwrap();
        assert_eq!(c.rules[0].burst, 7);

        let e = c
            .apply(&Overrides {
                rate: Some("fast".into()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "command line: --rate: \"fast\" is not a rate (expected e.g. \"20r/s\" or \"600r/m\")"
        );
        let e = c
            .apply(&Overrides {
                ban: Some("1".into()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("command line: --ban: \"1\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn overrides_conflict_with_configured_rules() {
        let mut c = parse("[[rule]]\nrate = \"1r/s\"\n").unwrap();
        // --format is fine.
        c.apply(&Overrides {
            format: Some("common".into()),
            ..Overrides::default()
        })
        .unwrap();
        let e = c
            .apply(&Overrides {
                burst: Some(3),
                ..Overrides::default()
            })
            .unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Conflict);
        assert_eq!(
            e.to_string(),
            "command line: --burst: floodwatch.toml defines its own [[rule]] tables; set `burst` in them instead"
        );
        assert_eq!(c.rules[0].burst, 100);
    }

    #[test]
    fn describe_says_what_was_understood() {
        let d = parse(FULL).unwrap().describe();
        for want in [
            "config: floodwatch.toml\n",
            "  path: /var/www/vhosts/*/logs/access_ssl_log\n",
            "  lateness: 10s",
            "rules (2, from [[rule]]):\n",
            "  get-flood: 600r/m with burst 50; ban 1h, x1.5 for each repeat within 12h, at most 2d\n",
            "    key: client + vhost (IPv4 /24, IPv6 /48)\n",
            "    methods: GET, POST\n",
            "    statuses: 404, 5xx, 403\n",
            "    path ends with: .php | /xmlrpc\n",
            "    except: .css, .js, .woff2\n",
            "  slow: 0.5r/s with burst 100; ban 10m, x2 for each repeat within 1d, at most 1w\n",
            "    counts every request\n",
            "never banned: 10.0.0.0/8, 2001:db8::53\n",
            "engine: 3 shards, at most 1000 keys tracked\n",
            "proxy: trusted cloudflare, 192.0.2.0/24 (never banned)\n",
            "  real client from field http_cf_connecting_ip\n",
            "state: /var/lib/floodwatch\n",
            "metrics: http://127.0.0.1:9877/metrics\n",
            "sinks: nginx, cloudflare\n",
        ] {
            assert!(d.contains(want), "missing {want:?} in:\n{d}");
        }
        let d = Config::default().describe();
        assert!(d.contains("config: built-in defaults\n"), "{d}");
        assert!(
            d.contains("rules (1, built in):\n  default: 20r/s with burst 100; ban 10m"),
            "{d}"
        );
        assert!(
            d.contains("sinks: none (events go to stdout as JSON lines)"),
            "{d}"
        );
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.toml");
        std::fs::write(&path, "[engine]\nshards = 2\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.engine.shards, 2);
        assert_eq!(c.origin, path.display().to_string());
        std::fs::write(&path, "[engine]\nshards = \"two\"\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2:10: engine.shards:", path.display())),
            "{e}"
        );
        let e = Config::load(&dir.path().join("missing.toml")).unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Read);
        assert!(e.to_string().contains("missing.toml: cannot read:"), "{e}");
    }

    #[test]
    fn durations_print_in_their_largest_unit() {
        let cases = [
            (0, "0s"),
            (90_000, "90s"),
            (600_000, "10m"),
            (86_400_000, "1d"),
            (604_800_000, "1w"),
            (1500, "1500ms"),
            (5_400_000, "90m"),
        ];
        for (ms, text) in cases {
            assert_eq!(fmt_ms(ms), text);
        }
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("a\nbé = x", 6), (2, 4));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
