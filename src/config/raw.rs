//! The config file as written: serde structs with every key documented and unknown keys
//! refused, and their checking into the validated types of [`super`].
//!
//! Values that need checking are read as `Spanned`, so that an error points at the value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Cx};
use super::values::{at_least, fmt_ms, parse_duration, parse_rate, parse_status, HOUR, SECOND};
use super::{
    default_rule, Config, Engine, Fleet, FleetTls, Input, Proxy, SinkTable, SinkType, StartAt,
    Trusted, KNOWN_PROXIES,
};
use crate::addr::Cidr;
use crate::decide::ban_table::{FLEET_RULE_NAME, MANUAL_RULE_NAME};
use crate::engine::RuleSpec;
use crate::hit::MAX_RULES;

/// Longest lateness: lines are held this long before their time is decided.
const MAX_LATENESS_MS: u64 = HOUR;
/// `[fleet] count_interval`'s bounds: a pipeline more often than every 50 ms costs Redis more
/// than it buys; counts exchanged less often than every 5 s come too late to stop a flood.
const MIN_COUNT_INTERVAL_MS: u64 = 50;
const MAX_COUNT_INTERVAL_MS: u64 = 5 * SECOND;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    /// Bans shared with other servers through Redis; absent = this server alone.
    fleet: Option<Spanned<RawFleet>>,
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
    /// `local` (default): this server's requests; `fleet`: the requests of every server of
    /// the `[fleet]`.
    scope: Option<Spanned<String>>,
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
    /// The control socket of a running watch; default `control.sock` in `dir`.
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `address:port` of the metrics endpoint, e.g. `127.0.0.1:9877`.
    listen: Option<Spanned<String>>,
    /// The live page at `/` and its JSON API (`/api/top`, `/api/history`).
    dashboard: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    url: Option<Spanned<String>>,
    /// This server's name in the fleet (default: the host name).
    node: Option<Spanned<String>>,
    /// The Redis stream of the fleet's events (default `floodwatch:events`).
    stream: Option<Spanned<String>>,
    /// Local sinks that enforce other servers' bans, by type or name (default: every nginx
    /// and exec sink).
    apply_to: Option<Vec<Spanned<String>>>,
    /// PEM file of the CA(s) the Redis server's certificate must chain to, instead of the
    /// system's roots (`rediss://` only).
    tls_ca: Option<Spanned<PathBuf>>,
    /// PEM files of a client certificate and its key, for a Redis that checks its clients'
    /// (`tls-auth-clients yes`).
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    /// How often the counts of `scope = "fleet"` rules are exchanged (default `200ms`).
    count_interval: Option<Spanned<String>>,
}

impl RawFleet {
    fn check(self, cx: &Cx, whole: &Spanned<()>) -> Result<Fleet, ConfigError> {
        let Some(url) = self.url else {
            return Err(cx.invalid(
                whole,
                "fleet.url",
                "missing: e.g. url = \"redis://127.0.0.1:6379/0\"".into(),
            ));
        };
        check_redis_url(url.get_ref()).map_err(|m| cx.invalid(&url, "fleet.url", m))?;
        let node = match self.node {
            Some(n) => {
                check_fleet_name(n.get_ref()).map_err(|m| cx.invalid(&n, "fleet.node", m))?;
                n.into_inner()
            }
            None => super::fleet::host_name().ok_or_else(|| {
                cx.invalid(
                    whole,
                    "fleet.node",
                    "missing, and the host name is not a usable node name (letters, digits, \
                     '-', '_', '.'): set node = \"web-01\""
                        .into(),
                )
            })?,
        };
        let stream = match self.stream {
            Some(s) => {
                let ok = |c: char| c.is_ascii_graphic();
                let name = s.get_ref();
                if name.is_empty() || name.len() > 200 || !name.chars().all(ok) {
                    return Err(cx.invalid(
                        &s,
                        "fleet.stream",
                        format!("{name:?}: use 1 to 200 visible characters, no spaces"),
                    ));
                }
                s.into_inner()
            }
            None => super::fleet::DEFAULT_STREAM.to_string(),
        };
        let apply_to = match self.apply_to {
            Some(list) => {
                let mut names = Vec::with_capacity(list.len());
                for (i, n) in list.into_iter().enumerate() {
                    if n.get_ref().trim().is_empty() {
                        return Err(cx.invalid(&n, format!("fleet.apply_to[{i}]"), "empty".into()));
                    }
                    names.push(n.into_inner());
                }
                Some(names)
            }
            None => None,
        };
        let tls = check_fleet_tls(cx, &url, [&self.tls_ca, &self.tls_cert, &self.tls_key])?;
        let count_interval_ms = match &self.count_interval {
            Some(d) => {
                let ms = duration(cx, d, "fleet.count_interval")?;
                if !(MIN_COUNT_INTERVAL_MS..=MAX_COUNT_INTERVAL_MS).contains(&ms) {
                    return Err(cx.invalid(
                        d,
                        "fleet.count_interval",
                        format!(
                            "{} is not between {} and {}",
                            fmt_ms(ms),
                            fmt_ms(MIN_COUNT_INTERVAL_MS),
                            fmt_ms(MAX_COUNT_INTERVAL_MS)
                        ),
                    ));
                }
                ms
            }
            None => super::fleet::DEFAULT_COUNT_INTERVAL_MS,
        };
        Ok(Fleet {
            url: url.into_inner(),
            node,
            stream,
            apply_to,
            tls,
            count_interval_ms,
            counted_rules: Vec::new(),
        })
    }
}

/// The TLS files: only with `rediss://`, certificate and key together, each readable and
/// holding what its key says, and the whole accepted by the Redis client.
fn check_fleet_tls(
    cx: &Cx,
    url: &Spanned<String>,
    [ca, cert, key]: [&Option<Spanned<PathBuf>>; 3],
) -> Result<FleetTls, ConfigError> {
    let path = |p: &Option<Spanned<PathBuf>>| p.as_ref().map(|p| p.get_ref().clone());
    let tls = FleetTls {
        ca: path(ca),
        cert: path(cert),
        key: path(key),
    };
    let named = [
        ("fleet.tls_ca", ca),
        ("fleet.tls_cert", cert),
        ("fleet.tls_key", key),
    ];
    let given = named.iter().filter_map(|(k, p)| Some((*k, (*p).as_ref()?)));
    for (key, path) in given.clone() {
        if !url.get_ref().starts_with("rediss://") {
            return Err(cx.invalid(
                path,
                key,
                "TLS files need a rediss:// URL (fleet.url is plain redis://)".into(),
            ));
        }
    }
    super::fleet::client(url.get_ref(), &tls).map_err(|(key, m)| {
        // Point at the setting at fault where it is written, else at a TLS file, else the URL.
        let at = given
            .clone()
            .find(|(k, _)| *k == key)
            .or(given.clone().next());
        match at {
            Some((_, path)) => cx.invalid(path, key, m),
            None => cx.invalid(url, key, m),
        }
    })?;
    Ok(tls)
}

/// A Redis URL the client accepts, of a scheme floodwatch supports.
fn check_redis_url(url: &str) -> Result<(), String> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://") || !matches!(scheme, "redis" | "rediss") {
        return Err(
            "expected redis://host:port/db or rediss://host:port/db (TLS), e.g. \
             \"redis://127.0.0.1:6379/0\""
                .into(),
        );
    }
    redis::Client::open(url).map(drop).map_err(|e| {
        format!(
            "not a usable Redis URL: {}",
            e.detail().unwrap_or("invalid")
        )
    })
}

/// A node name: what other nodes show in ORIGIN and events, so letters, digits, '-', '_', '.'.
fn check_fleet_name(name: &str) -> Result<(), String> {
    if super::fleet::is_node_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

impl RawConfig {
    pub(super) fn check(self, cx: &Cx) -> Result<Config, ConfigError> {
        let mut c = Config {
            origin: cx.origin.to_string(),
            ..Config::default()
        };
        c.input = self.input.check(cx)?;
        let scopes: Vec<_> = self
            .rule
            .iter()
            .map(|r| r.get_ref().scope.clone())
            .collect();
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
        if let Some(socket) = self.state.socket {
            c.state.socket = Some(non_empty(cx, &socket, "state.socket")?.into());
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
        if let Some(dashboard) = self.metrics.dashboard {
            if *dashboard.get_ref() && c.metrics.listen.is_none() {
                return Err(cx.invalid(
                    &dashboard,
                    "metrics.dashboard",
                    "the page is served on the metrics endpoint: set metrics.listen too".into(),
                ));
            }
            c.metrics.dashboard = *dashboard.get_ref();
        }
        if let Some(fleet) = self.fleet {
            let span = fleet.span();
            let whole = Spanned::new(span, ());
            c.fleet = Some(fleet.into_inner().check(cx, &whole)?);
        }
        check_scopes(cx, &scopes, &mut c)?;
        for (i, sink) in self.sink.into_iter().enumerate() {
            let key = format!("sink[{i}].type");
            let kind = match sink.get_ref().get("type") {
                Some(toml::Value::String(t)) => match SinkType::parse(t.trim()) {
                    Some(kind) => kind,
                    None => {
                        let known: Vec<&str> = SinkType::ALL.iter().map(|t| t.name()).collect();
                        let message =
                            format!("unknown sink type {t:?} (known: {})", known.join(", "));
                        return Err(cx.invalid(&sink, key, message));
                    }
                },
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
            };
            c.sinks.push(SinkTable {
                kind,
                table: sink.into_inner(),
            });
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

/// One `[[rule]]`: the default rule with the table's keys applied.
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
            if name == MANUAL_RULE_NAME {
                return Err(cx.invalid(
                    n,
                    key("name"),
                    format!("{name:?} is reserved for the bans an admin makes (`floodwatch ban`)"),
                ));
            }
            if name == FLEET_RULE_NAME {
                return Err(cx.invalid(
                    n,
                    key("name"),
                    format!("{name:?} is reserved for the bans other servers of the fleet make"),
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
    check_limits(cx, i, raw, &mut r)?;
    check_matchers(cx, i, raw, &mut r)?;
    check_key(cx, i, raw, &mut r)?;
    Ok(r)
}

/// Rate, burst and ban lengths.
fn check_limits(cx: &Cx, i: usize, raw: &RawRule, r: &mut RuleSpec) -> Result<(), ConfigError> {
    let key = |k: &str| format!("rule[{i}].{k}");
    if let Some(rate) = &raw.rate {
        r.rate =
            parse_rate(rate.get_ref()).map_err(|e| cx.invalid(rate, key("rate"), e.to_string()))?;
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
        at_least(r.ban_ms, SECOND, "a ban")
            .map_err(|e| cx.invalid(b, key("ban"), e.to_string()))?;
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
    Ok(())
}

/// Which requests the rule counts.
fn check_matchers(cx: &Cx, i: usize, raw: &RawRule, r: &mut RuleSpec) -> Result<(), ConfigError> {
    let key = |k: &str| format!("rule[{i}].{k}");
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
    Ok(())
}

/// `[[rule]] scope`: the rules counted fleet-wide, which need a `[fleet]` to count with.
fn check_scopes(
    cx: &Cx,
    scopes: &[Option<Spanned<String>>],
    c: &mut Config,
) -> Result<(), ConfigError> {
    for (i, scope) in scopes.iter().enumerate() {
        let Some(scope) = scope else {
            continue;
        };
        let key = format!("rule[{i}].scope");
        match scope.get_ref().as_str() {
            "local" => {}
            "fleet" => match &mut c.fleet {
                Some(f) => f.counted_rules.push(c.rules[i].name.clone()),
                None => {
                    return Err(cx.invalid(
                        scope,
                        key,
                        "\"fleet\" counts with the other servers through Redis: it needs a \
                         [fleet] section (url = \"redis://...\")"
                            .into(),
                    ))
                }
            },
            other => {
                return Err(cx.invalid(
                    scope,
                    key,
                    format!("{other:?}: expected \"local\" or \"fleet\""),
                ))
            }
        }
    }
    Ok(())
}

/// What the rule counts requests by.
fn check_key(cx: &Cx, i: usize, raw: &RawRule, r: &mut RuleSpec) -> Result<(), ConfigError> {
    let key = |k: &str| format!("rule[{i}].{k}");
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
    Ok(())
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

fn duration(cx: &Cx, s: &Spanned<String>, key: &str) -> Result<u64, ConfigError> {
    parse_duration(s.get_ref()).map_err(|e| cx.invalid(s, key, e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::super::ConfigErrorKind;
    use super::*;
    use crate::engine::StatusMatch;

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

    #[test]
    fn rate_errors_point_at_the_rule() {
        assert_eq!(
            err("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\nrate = \"20r/x\"\n"),
            "floodwatch.toml:5:8: rule[1].rate: \"20r/x\" is not a rate (expected e.g. \"20r/s\" or \"600r/m\")"
        );
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
        assert!(
            err("[[rule]]\nname = \"manual\"\n").contains("rule[0].name: \"manual\" is reserved")
        );
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
                "[metrics]\ndashboard = true\n",
                "metrics.dashboard: the page is served on the metrics endpoint: set metrics.listen too",
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
            (
                "[[sink]]\ntype = \"carrier-pigeon\"\n",
                "sink[0].type: unknown sink type \"carrier-pigeon\" (known: jsonl, nginx, \
                 cloudflare, exec, webhook)",
            ),
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
}
