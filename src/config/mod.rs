//! The TOML config, checked once at the edge into a [`Config`] that the rest of the program
//! sees: `raw` mirrors the file (every key documented, unknown keys refused) and checks it,
//! `values` parses rates and durations, `error` says where a problem is.
//!
//! Choices made here (documented for users in docs/guide.md, Configuration, and in
//! floodwatch.toml(5)):
//! - A `[[rule]]` starts from the built-in `default` rule and changes what it names: omitted
//!   keys keep `rate = "20r/s"`, `burst = 100`, `ban = "10m"` and so on. In particular `burst`
//!   does not default to nginx's 0, which would ban every browser that loads a page's assets
//!   in parallel.
//! - `max_ban` defaults to one week, or to `ban` when that is longer.
//! - `[allow] cidrs` replaces the default list (loopback); keep loopback in it.
//! - Key prefixes are at least /8 (IPv4) and /16 (IPv6): a shorter one lumps whole networks
//!   into one key, which one ban would then cut off.

mod error;
pub mod fleet;
pub mod keys;
mod raw;
mod values;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::addr::Cidr;
use crate::engine::{Rate, RuleSpec, StatusMatch};

pub use error::{ConfigError, ConfigErrorKind};
pub use values::{fmt_ms, parse_duration, parse_rate, ValueError};

use error::Cx;
use values::{at_least, DAY, MINUTE, SECOND};

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
    /// `[fleet]`: bans shared with other servers through Redis (see [`crate::fleet`]).
    pub fleet: Option<Fleet>,
    /// `[[sink]]` tables: the type checked here, the rest by the sink (`sink::parse_sinks`).
    pub sinks: Vec<SinkTable>,
}

/// One `[[sink]]` table: its type, checked with the config, and the table as written (`type`
/// included), whose other keys the sink of that type checks. The table as written is also
/// what identifies the sink across a reload and in the state folder.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkTable {
    pub kind: SinkType,
    pub table: toml::Table,
}

/// The kinds of sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkType {
    Jsonl,
    Nginx,
    Cloudflare,
    Exec,
    Webhook,
}

impl SinkType {
    pub const ALL: [SinkType; 5] = [
        SinkType::Jsonl,
        SinkType::Nginx,
        SinkType::Cloudflare,
        SinkType::Exec,
        SinkType::Webhook,
    ];

    /// As written in `type = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            SinkType::Jsonl => "jsonl",
            SinkType::Nginx => "nginx",
            SinkType::Cloudflare => "cloudflare",
            SinkType::Exec => "exec",
            SinkType::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<SinkType> {
        SinkType::ALL.into_iter().find(|t| t.name() == name)
    }
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
    /// `[state] socket`: where a running watch takes commands (`floodwatch bans`, `unban`...).
    pub socket: Option<PathBuf>,
}

impl State {
    /// The control socket's path: `[state] socket`, else `control.sock` in `[state] dir`;
    /// none without either (such a watch takes no commands).
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.socket
            .clone()
            .or_else(|| self.dir.as_ref().map(|d| d.join("control.sock")))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Address of the metrics endpoint; `None` = off.
    pub listen: Option<SocketAddr>,
    /// Serve the live page at `/` and its JSON (`/api/top`, `/api/history`).
    pub dashboard: bool,
}

/// `[fleet]`, checked: the URL parses, the names are safe to show and to log.
#[derive(Clone, PartialEq, Eq)]
pub struct Fleet {
    /// May hold a password: never printed whole (see [`Fleet::redacted_url`]).
    pub url: String,
    /// This server's name in the fleet: letters, digits, '-', '_', '.'.
    pub node: String,
    pub stream: String,
    /// Sinks, by type or name, that enforce other servers' bans; `None` = every nginx and exec
    /// sink.
    pub apply_to: Option<Vec<String>>,
    pub tls: FleetTls,
    /// `count_interval`: how often the counts of fleet-scoped rules are exchanged.
    pub count_interval_ms: u64,
    /// The names of the rules with `scope = "fleet"`, in config order.
    pub counted_rules: Vec<String>,
}

/// `[fleet]`'s TLS files (PEM), read when a connection is set up; all `None`: the system's
/// roots, no client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetTls {
    /// CA(s) the server's certificate must chain to, instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and its key (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Fleet {
    /// The URL with any password replaced by `***`, for logs and `check-config`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &self.redacted_url())
            .field("node", &self.node)
            .field("stream", &self.stream)
            .field("apply_to", &self.apply_to)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
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
            fleet: None,
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

/// The largest config file read: far more than any real config (rules, sinks, allowlists).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text =
            crate::small_file::read_to_string(path, MAX_CONFIG_BYTES).map_err(|e| ConfigError {
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
        let raw: raw::RawConfig =
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
            rule.rate = parse_rate(rate)
                .map_err(|e| err(ConfigErrorKind::Invalid, "--rate", e.to_string()))?;
        }
        if let Some(burst) = o.burst {
            rule.burst = burst;
        }
        if let Some(ban) = &o.ban {
            let ms = parse_duration(ban)
                .and_then(|ms| at_least(ms, SECOND, "a ban"))
                .map_err(|e| err(ConfigErrorKind::Invalid, "--ban", e.to_string()))?;
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
        match self.state.socket_path() {
            Some(p) => writeln!(
                s,
                "control: {} (floodwatch bans, ban, unban, status)",
                p.display()
            )?,
            None => writeln!(s, "control: none (no [state] dir or socket)")?,
        }
        match &self.metrics.listen {
            Some(a) => writeln!(s, "metrics: http://{a}/metrics")?,
            None => writeln!(s, "metrics: off")?,
        }
        match &self.fleet {
            Some(f) => {
                let apply = match &f.apply_to {
                    Some(names) => names.join(", "),
                    None => "every nginx and exec sink".into(),
                };
                writeln!(
                    s,
                    "fleet: {} stream {} as node {} (other nodes' bans go to: {apply})",
                    f.redacted_url(),
                    f.stream,
                    f.node
                )?;
                if f.url.starts_with("rediss://") {
                    let roots = match &f.tls.ca {
                        Some(p) => format!("CA {}", p.display()),
                        None => "the system's roots".into(),
                    };
                    let client = match &f.tls.cert {
                        Some(p) => format!("client certificate {}", p.display()),
                        None => "no client certificate".into(),
                    };
                    writeln!(s, "fleet TLS: server checked against {roots}; {client}")?;
                }
                if !f.counted_rules.is_empty() {
                    writeln!(
                        s,
                        "fleet counting: {} counted with every server, every {} ms",
                        f.counted_rules.join(", "),
                        f.count_interval_ms
                    )?;
                }
            }
            None => writeln!(s, "fleet: none (bans stay on this server)")?,
        }
        if self.sinks.is_empty() {
            writeln!(s, "sinks: none (events go to stdout as JSON lines)")?;
        } else {
            let types: Vec<&str> = self.sinks.iter().map(|t| t.kind.name()).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "floodwatch.toml")
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
    fn fleet_is_checked_with_errors_naming_the_key() {
        let c = parse(
            "[fleet]\nurl = \"redis://fw:s3cret@10.0.0.5:6380/2\"\nnode = \"web-01\"\n\
             apply_to = [\"nginx\", \"fw\"]\n",
        )
        .unwrap();
        let f = c.fleet.clone().unwrap();
        assert_eq!(
            (f.node.as_str(), f.stream.as_str()),
            ("web-01", "floodwatch:events")
        );
        assert_eq!(
            f.apply_to,
            Some(vec!["nginx".to_string(), "fw".to_string()])
        );
        assert_eq!(f.redacted_url(), "redis://fw:***@10.0.0.5:6380/2");
        assert!(!format!("{f:?}").contains("s3cret"));
        assert!(c.describe().contains(
            "fleet: redis://fw:***@10.0.0.5:6380/2 stream floodwatch:events as node web-01"
        ));
        assert_eq!(redact_url("rediss://:pw@h/0"), "rediss://:***@h/0");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        let tls = parse("[fleet]\nurl = \"rediss://redis.example:6379/0\"\nnode = \"a\"\n");
        assert!(tls.is_ok(), "{tls:?}");

        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err("[fleet]\nurl = \"http://127.0.0.1:6379\"\nnode = \"a\"\n");
        assert!(
            e.starts_with("floodwatch.toml:2:7: fleet.url: expected redis:"),
            "{e}"
        );
        let e = err("[fleet]\nurl = \"redis://127.0.0.1:notaport\"\nnode = \"a\"\n");
        assert!(
            e.contains("fleet.url") && e.contains("not a usable Redis URL"),
            "{e}"
        );
        let e = err("[fleet]\nnode = \"a\"\n");
        assert!(e.contains("fleet.url") && e.contains("missing"), "{e}");
        let e = err("[fleet]\nurl = \"redis://h/0\"\nnode = \"web 01;\"\n");
        assert!(e.starts_with("floodwatch.toml:3:8: fleet.node:"), "{e}");
        let e = err("[fleet]\nurl = \"redis://h/0\"\nnode = \"a\"\nstream = \"a b\"\n");
        assert!(e.contains("fleet.stream"), "{e}");
        let e = err("[fleet]\nurl = \"redis://h/0\"\nnode = \"a\"\nchannel = \"x\"\n");
        assert!(e.contains("channel"), "{e}");
        let e = err("[[rule]]\nname = \"fleet\"\n");
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn fleet_scope_is_checked_with_errors_naming_the_key() {
        let c = parse(
            "[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\nscope = \"fleet\"\n\n\
             [fleet]\nurl = \"redis://h/0\"\nnode = \"n\"\ncount_interval = \"500ms\"\n",
        )
        .unwrap();
        let f = c.fleet.clone().unwrap();
        assert_eq!(
            (f.counted_rules, f.count_interval_ms),
            (vec!["b".to_string()], 500)
        );
        assert!(c
            .describe()
            .contains("fleet counting: b counted with every server, every 500 ms"));
        let f = parse("[fleet]\nurl = \"redis://h/0\"\nnode = \"n\"\n")
            .unwrap()
            .fleet;
        assert_eq!(f.map(|f| f.count_interval_ms), Some(200));

        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err("[[rule]]\nscope = \"fleet\"\n");
        assert!(
            e.starts_with("floodwatch.toml:2:9: rule[0].scope:") && e.contains("[fleet]"),
            "{e}"
        );
        let e = err("[[rule]]\nscope = \"global\"\n");
        assert!(
            e.contains("rule[0].scope") && e.contains("\"local\" or \"fleet\""),
            "{e}"
        );
        let e = err("[fleet]\nurl = \"redis://h/0\"\nnode = \"n\"\ncount_interval = \"10ms\"\n");
        assert!(
            e.contains("fleet.count_interval") && e.contains("between 50ms and 5s"),
            "{e}"
        );
        let e = err("[fleet]\nurl = \"redis://h/0\"\nnode = \"n\"\ncount_interval = \"soon\"\n");
        assert!(e.contains("fleet.count_interval"), "{e}");
    }

    /// `[fleet]` TLS files: each checked at load, errors naming the key and the file.
    #[test]
    fn fleet_tls_files_are_checked_with_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["test-ca".into()]).unwrap();
        let (cert, key, junk) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let fleet =
            |url: &str, extra: &str| format!("[fleet]\nurl = \"{url}\"\nnode = \"a\"\n{extra}");
        let files = format!(
            "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        );
        let c = parse(&fleet("rediss://127.0.0.1:6380/0", &files)).unwrap();
        let f = c.fleet.clone().unwrap();
        assert_eq!(f.tls.ca.as_deref(), Some(cert.as_path()));
        assert_eq!(f.tls.key.as_deref(), Some(key.as_path()));
        let text = c.describe();
        assert!(
            text.contains(&format!(
                "fleet TLS: server checked against CA {}; client certificate {}",
                cert.display(),
                cert.display()
            )),
            "{text}"
        );
        let system = parse(&fleet("rediss://h/0", "")).unwrap().describe();
        assert!(system.contains("against the system's roots; no client certificate"));

        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err(&fleet("redis://h/0", &format!("tls_ca = {:?}\n", cert)));
        assert!(
            e.contains("fleet.tls_ca: TLS files need a rediss:// URL"),
            "{e}"
        );
        let e = err(&fleet("rediss://h/0", &format!("tls_cert = {:?}\n", cert)));
        assert!(e.contains("fleet.tls_key: missing"), "{e}");
        let e = err(&fleet("rediss://h/0", &format!("tls_key = {:?}\n", key)));
        assert!(e.contains("fleet.tls_cert: missing"), "{e}");
        let e = err(&fleet("rediss://h/0", "tls_ca = \"/nonexistent/ca.pem\"\n"));
        assert!(
            e.contains("fleet.tls_ca: /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        let e = err(&fleet("rediss://h/0", "tls_ca = \"/dev/zero\"\n"));
        assert!(
            e.contains("fleet.tls_ca: /dev/zero: cannot read: larger than 4 MiB"),
            "{e}"
        );
        let e = err(&fleet("rediss://h/0", &format!("tls_ca = {:?}\n", junk)));
        assert!(
            e.contains("fleet.tls_ca") && e.contains("no PEM certificate in it"),
            "{e}"
        );
        // A certificate where the key belongs: named as the key's fault, and no key material
        // (there is none here, but the message only ever names the file) in the message.
        let e = err(&fleet(
            "rediss://h/0",
            &format!("tls_cert = {:?}\ntls_key = {:?}\n", cert, cert),
        ));
        assert!(
            e.contains("fleet.tls_key") && e.contains("no PEM private key in it"),
            "{e}"
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(&fleet("rediss://h/0", &format!("tls_ca = {:?}\n", broken)));
        assert!(e.contains("fleet.tls_ca"), "{e}");
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
        assert_eq!(c.sinks[0].kind, SinkType::Nginx);
        assert_eq!(
            c.sinks[0].table["reload_command"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(c.sinks[1].kind, SinkType::Cloudflare);
        assert_eq!(c.sinks[1].table["zone_id"].as_str(), Some("..."));
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
            "control: /var/lib/floodwatch/control.sock (floodwatch bans, ban, unban, status)\n",
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
}
