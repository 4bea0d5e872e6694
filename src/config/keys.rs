//! Every key of the config file, described once: its section, type, default, an example and what
//! it does. `floodwatch.toml(5)` is written from this table (see `docgen`), and the tests below
//! hold it to the parser in both directions: every key here parses with its example, and every
//! key the parser accepts (its serde structs and the sinks' tables refuse unknown keys, naming
//! the ones they know) is here.

/// One table of the file (`[input]`), or one kind of `[[sink]]`.
pub struct Section {
    /// The TOML table: `input`, `rule`, `sink`...
    pub table: &'static str,
    /// `[[rule]]`, `[[sink]]`: an array of tables.
    pub array: bool,
    /// For `[[sink]]`: the `type` these keys belong to; `None` for the keys every sink takes.
    pub sink_type: Option<&'static str>,
    pub about: &'static str,
    /// The smallest table of this kind that checks, `key = value` lines: what each key's example
    /// is tested in, and what the man page shows under the section's title.
    pub base: &'static [(&'static str, &'static str)],
    pub keys: &'static [Key],
}

/// One key.
pub struct Key {
    pub name: &'static str,
    /// What the value is: `string`, `duration`, `list of strings`...
    pub kind: &'static str,
    /// The value when the key is absent, in words (`` `20r/s` ``, `none`...).
    pub default: &'static str,
    /// A value as TOML, which the parser accepts in this section.
    pub example: &'static str,
    pub about: &'static str,
    /// A key of `base` that this one replaces (they exclude each other).
    pub instead_of: Option<&'static str>,
    /// Other keys this one takes effect with, `key = value` (nginx's `variable` needs
    /// `style = "geo"`).
    pub with: &'static [(&'static str, &'static str)],
    /// The example names files that must exist and hold what the key says (PEM certificates):
    /// the tests check that the key is known, not that the example parses.
    pub needs_files: bool,
}

const fn key(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    example: &'static str,
    about: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        example,
        about,
        instead_of: None,
        with: &[],
        needs_files: false,
    }
}

const fn instead(k: Key, of: &'static str) -> Key {
    Key {
        instead_of: Some(of),
        ..k
    }
}

const fn with(k: Key, others: &'static [(&'static str, &'static str)]) -> Key {
    Key { with: others, ..k }
}

const fn with_files(k: Key) -> Key {
    Key {
        needs_files: true,
        ..k
    }
}

const DURATION: &str = "duration";

/// The sections, in the file's usual order.
pub const SECTIONS: &[Section] = &[
    Section {
        table: "input",
        array: false,
        sink_type: None,
        about: "Which logs to read and how they are written.",
        base: &[],
        keys: &[
            key("paths", "list of strings", "none: the command line names the logs",
                r#"["/var/www/vhosts/*/logs/access_log", "/var/www/vhosts/*/logs/access_ssl_log"]"#,
                "Log files or globs; `watch` evaluates the globs again while running, so new vhosts are followed as their logs appear. `PATH|GLOB` arguments replace them."),
            key("format", "string", "`combined`", r#""vhost_combined""#,
                "`combined`, `common`, `vhost_combined`, `nginx:'<log_format>'` or `apache:'<LogFormat>'` (the server's own format string). It must log a client address and a time."),
            key("lateness", DURATION, "`5s`", r#""10s""#,
                "How far out of time order one file's own lines may arrive and still be counted in order (Apache's %t is the request's start). At most 1h."),
            key("start_at", "string", "`end`", r#""beginning""#,
                "Where `watch` starts reading a file it has no saved offset for: `end` or `beginning`."),
        ],
    },
    Section {
        table: "rule",
        array: true,
        sink_type: None,
        about: "A rate rule, counted per key as nginx's limit_req counts. With no [[rule]], one rule `default` (20r/s, burst 100, ban 10m); a [[rule]] starts from those values. At most 32 rules; `manual` and `fleet` are reserved names.",
        base: &[],
        keys: &[
            key("name", "string", "`default` (required with several rules)", r#""get-flood""#,
                "Unique name, shown in events, `status` and metrics."),
            key("rate", "rate", "`20r/s`", r#""600r/m""#,
                "Sustained rate in nginx units: `20r/s`, `600r/m`, fractions such as `0.5r/s`."),
            key("burst", "integer", "`100`", "50",
                "Requests tolerated above the rate before a request overflows and the key is banned."),
            key("ban", DURATION, "`10m`", r#""1h""#, "First ban length."),
            key("ban_factor", "number", "`2`", "3",
                "Each repeat offense within `recidive_window` multiplies the ban by this."),
            key("max_ban", DURATION, "`1w`, or `ban` when longer", r#""1d""#, "Longest ban."),
            key("recidive_window", DURATION, "`1d`", r#""12h""#,
                "How long a past ban counts towards escalation."),
            key("methods", "list of strings", "any method", r#"["GET", "POST"]"#,
                "Count only these methods (any case)."),
            key("statuses", "list of codes and classes", "any status", r#"[404, "5xx"]"#,
                "Count only these statuses: codes (`404`) or classes (`\"4xx\"`)."),
            key("path_prefix", "string or list of strings", "any path", r#""/wp-login.php""#,
                "Count only request targets starting with this (with a list, any entry)."),
            key("path_suffix", "string or list of strings", "any path", r#"[".php", ".asp"]"#,
                "Count only request targets ending with this."),
            key("path_contains", "string or list of strings", "any path", r#""/xmlrpc""#,
                "Count only request targets containing this."),
            key("exclude_extensions", "list of strings", "none", r#"["css", "js", "png", "woff2"]"#,
                "Do not count paths with these extensions (`css` or `.css`)."),
            key("vhosts", "list of strings", "every vhost", r#"["*.example.com"]"#,
                "Count only these vhosts (globs)."),
            key("ipv4_prefix", "integer", "`32` (the address)", "24",
                "IPv4 clients are counted and banned by this prefix (a /24 catches a flood spread over one network)."),
            key("ipv6_prefix", "integer", "`64`", "56",
                "IPv6 clients are counted and banned by this prefix."),
            key("key", "string", "`client`", r#""client+vhost""#,
                "`client`, or `client+vhost` to count each vhost separately."),
            key("scope", "string", "`local`", r#""local""#,
                "`local`: the requests this server sees; `fleet` (needs `[fleet]`): the requests of every server of the fleet, counted together through Redis every `count_interval`, so that a flood a load balancer spreads over the servers is banned as if one server saw it all. Every server must have the rule, under the same name and limits."),
        ],
    },
    Section {
        table: "allow",
        array: false,
        sink_type: None,
        about: "Addresses never banned.",
        base: &[],
        keys: &[key("cidrs", "list of strings", "loopback: `[\"127.0.0.0/8\", \"::1/128\"]`",
            r#"["127.0.0.0/8", "::1/128", "203.0.113.0/24"]"#,
            "Addresses and CIDR ranges never banned: a key whose range overlaps one of these is not banned. A list here replaces the default.")],
    },
    Section {
        table: "engine",
        array: false,
        sink_type: None,
        about: "Threads and memory bounds.",
        base: &[],
        keys: &[
            key("shards", "integer", "`0`: one per CPU", "4", "Shard threads (0 to 1024)."),
            key("max_keys", "integer", "`5000000`", "1000000",
                "Most (key, rule) entries tracked at once; reaching it is counted and logged."),
        ],
    },
    Section {
        table: "proxy",
        array: false,
        sink_type: None,
        about: "Requests arriving through a CDN or reverse proxy.",
        base: &[("trusted", r#"["cloudflare"]"#), ("client_ip_field", r#""http_cf_connecting_ip""#)],
        keys: &[
            key("trusted", "list of strings", "none", r#"["cloudflare", "10.0.0.0/8"]"#,
                "Trusted proxies: provider names (`cloudflare`) or CIDR ranges; never banned."),
            key("client_ip_field", "string", "none", r#""http_x_forwarded_for""#,
                "The log field holding the real client behind a trusted proxy (nginx variable name, with or without `$`). Needs `trusted`."),
            key("ranges_file", "path", "the built-in list", r#""/etc/floodwatch/cloudflare.txt""#,
                "A file of provider ranges (one per line) replacing the built-in list."),
        ],
    },
    Section {
        table: "state",
        array: false,
        sink_type: None,
        about: "What `watch` keeps across restarts, and where the admin commands reach it.",
        base: &[],
        keys: &[
            key("dir", "path", "none: nothing persists", r#""/var/lib/floodwatch""#,
                "Read offsets, active bans, undelivered events and the lock that makes the folder one watch's (`watch.lock`)."),
            key("socket", "path", "`control.sock` in `dir`", r#""/run/floodwatch/control.sock""#,
                "The control socket `floodwatch bans`, `ban`, `unban` and `status` talk to."),
        ],
    },
    Section {
        table: "metrics",
        array: false,
        sink_type: None,
        about: "The HTTP endpoint of a running watch: /metrics (Prometheus), /bans, /healthz.",
        base: &[],
        keys: &[key("listen", "address:port", "none: off", r#""127.0.0.1:9877""#,
            "Where the endpoint listens."),
            with(key("dashboard", "bool", "false", "true",
                "Also serve a live page at / and its JSON at /api/top and /api/history: the busiest keys and vhosts, 15 minutes of charts. Read-only; it shows clients' addresses, so keep the endpoint on localhost or behind authentication."),
                &[("listen", r#""127.0.0.1:9877""#)])],
    },
    Section {
        table: "fleet",
        array: false,
        sink_type: None,
        about: "Bans shared with the other servers of a fleet through a Redis stream; absent = this server alone.",
        base: &[("url", r#""redis://127.0.0.1:6379/0""#)],
        keys: &[
            key("url", "string", "required", r#""rediss://redis.internal:6380/0""#,
                "`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS."),
            key("node", "string", "the host name", r#""web-01""#,
                "This server's name in the fleet: letters, digits, `-`, `_`, `.`."),
            key("stream", "string", "`floodwatch:events`", r#""floodwatch:shop""#,
                "The Redis stream of the fleet's events."),
            key("apply_to", "list of strings", "every nginx and exec sink", r#"["nginx", "fw"]"#,
                "Local sinks that enforce other servers' bans, by type or name."),
            with_files(key("tls_ca", "path", "the system's roots", r#""/etc/floodwatch/redis-ca.pem""#,
                "PEM file of the CA(s) the Redis server's certificate must chain to (`rediss://` only).")),
            with_files(key("tls_cert", "path", "none", r#""/etc/floodwatch/node.pem""#,
                "PEM client certificate, for a Redis with `tls-auth-clients yes`; with `tls_key`.")),
            with_files(key("tls_key", "path", "none", r#""/etc/floodwatch/node.key""#,
                "PEM key of `tls_cert`.")),
            key("count_interval", DURATION, "`200ms`", r#""500ms""#,
                "How often the counts of `scope = \"fleet\"` rules are exchanged through Redis (50ms to 5s): the fleet's decisions are those of a replay of every server's logs merged, within about this long."),
        ],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: None,
        about: "Where events go: each [[sink]] gets every ban and unban; with none, events go to standard output as JSON lines. These keys apply to every type.",
        base: &[("type", r#""jsonl""#), ("path", r#""-""#)],
        keys: &[
            key("type", "string", "required", r#""nginx""#,
                "`jsonl`, `nginx`, `cloudflare`, `exec` or `webhook` (their keys below)."),
            key("name", "string", "`sink[<i>] <type>`", r#""deny""#,
                "What logs, `status` and metrics call the sink: letters, digits, `-`, `_`, `.`, at most 64."),
            key("dry_run", "boolean", "`false`", "true",
                "Log what would be done (on stderr) instead of doing it."),
            key("proxied", "boolean", "`true` for jsonl, webhook and cloudflare, `false` for nginx and exec", "false",
                "Take bans of clients seen through a trusted proxy (a client behind a CDN reaches the server from the CDN's addresses)."),
            key("queue_size", "integer", "`10000`", "50000", "Events waiting for the sink (1 to 10000000)."),
            key("retry_max_delay", DURATION, "`30s`", r#""1m""#,
                "A failed delivery is retried after 0.5s, 1s, 2s... up to this."),
            key("give_up_after", DURATION, "`1h`", r#""6h""#,
                "How long a sink may fail before each further event gets a single try."),
        ],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: Some("jsonl"),
        about: "Appends each event as one JSON line.",
        base: &[("type", r#""jsonl""#), ("path", r#""-""#)],
        keys: &[key("path", "path", "required", r#""/var/log/floodwatch/events.jsonl""#,
            "The file events are appended to, or `-` for standard output.")],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: Some("nginx"),
        about: "Keeps an nginx include file of the active bans, tests nginx's config and reloads it.",
        base: &[("type", r#""nginx""#), ("path", r#""/etc/nginx/conf.d/floodwatch-deny.conf""#)],
        keys: &[
            key("path", "path", "required", r#""/etc/nginx/conf.d/floodwatch-deny.conf""#,
                "The include file."),
            key("style", "string", "`deny`", r#""geo""#,
                "`deny` (deny lines, for http {} or server {}) or `geo` (a geo block setting a variable)."),
            with(key("variable", "string", "`floodwatch_banned`", r#""banned""#,
                "Style geo: the variable, without the `$`."), &[("style", r#""geo""#)]),
            key("reload_command", "list of strings", r#"`["nginx", "-s", "reload"]`"#, r#"["systemctl", "reload", "nginx"]"#,
                "Run after writing a changed file; `[]` never reloads."),
            key("test_command", "list of strings", r#"`["nginx", "-t"]`"#, r#"["nginx", "-t", "-q"]"#,
                "Must pass before the reload."),
            key("min_reload_interval", DURATION, "`30s`", r#""10s""#,
                "At most one reload per this much time."),
            key("timeout", DURATION, "`30s`", r#""1m""#, "How long each command may run."),
        ],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: Some("cloudflare"),
        about: "Blocks at Cloudflare with IP Access Rules (API v4).",
        base: &[("type", r#""cloudflare""#), ("zone_id", r#""023e105f4ecef8ad9ca31a8372d0c353""#), ("api_token_env", r#""CLOUDFLARE_API_TOKEN""#)],
        keys: &[
            key("zone_id", "string", "one of zone_id and account_id is required", r#""023e105f4ecef8ad9ca31a8372d0c353""#,
                "Rules apply to this zone."),
            instead(key("account_id", "string", "none", r#""01a7362d577a6c3019a474fd6f485823""#,
                "Rules apply to every zone of the account."), "zone_id"),
            key("api_token_env", "string", "one of api_token_env and api_token_file is required", r#""CLOUDFLARE_API_TOKEN""#,
                "The environment variable holding the API token."),
            instead(key("api_token_file", "path", "none", r#""/etc/floodwatch/cf-token""#,
                "A file holding the API token, which others may not read."), "api_token_env"),
            key("mode", "string", "`block`", r#""managed_challenge""#,
                "`block`, `challenge`, `js_challenge` or `managed_challenge`."),
            key("notes", "string", "`floodwatch`", r#""floodwatch-web01""#,
                "The notes prefix marking the rules floodwatch owns."),
            key("api_base", "string", "`https://api.cloudflare.com/client/v4`", r#""https://api.cloudflare.com/client/v4""#,
                "The API's base URL."),
            key("max_rules", "integer", "`1000`", "5000",
                "Most rules kept at once; the oldest of ours is removed to make room."),
            key("requests_per_5min", "integer", "`1200`", "600",
                "Client-side request budget (the API's limit)."),
            key("timeout", DURATION, "`15s`", r#""30s""#, "How long one request may take."),
        ],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: Some("exec"),
        about: "Runs a command per ban and per unban, without a shell. Placeholders: {key}, {ip}, {prefix_len}, {family}, {rule}, {vhost}, {ban_seconds}, {until}.",
        base: &[("type", r#""exec""#), ("ban", r#"["ipset", "add", "floodwatch{family}", "{key}", "timeout", "{ban_seconds}", "-exist"]"#)],
        keys: &[
            key("ban", "list of strings", "required", r#"["ipset", "add", "floodwatch{family}", "{key}", "timeout", "{ban_seconds}", "-exist"]"#,
                "The command run for each ban."),
            key("unban", "list of strings", "none: bans expire on their own", r#"["ipset", "del", "floodwatch{family}", "{key}", "-exist"]"#,
                "The command run for each unban."),
            key("timeout", DURATION, "`30s`", r#""10s""#,
                "How long a command may run before it is killed and reported."),
        ],
    },
    Section {
        table: "sink",
        array: true,
        sink_type: Some("webhook"),
        about: "POSTs each event's JSON object, in order.",
        base: &[("type", r#""webhook""#), ("url", r#""https://hooks.example.com/floodwatch""#)],
        keys: &[
            key("url", "string", "required", r#""https://hooks.example.com/floodwatch""#,
                "Where events are POSTed (http:// or https://)."),
            key("headers", "table of strings", "none", r#"{ Authorization = "Bearer secret" }"#,
                "Extra request headers; their values are never logged."),
            key("timeout", DURATION, "`10s`", r#""30s""#, "How long one request may take."),
        ],
    },
];

/// The header of a section as the file writes it: `[input]`, `[[rule]]`.
pub fn header(s: &Section) -> String {
    match s.array {
        true => format!("[[{}]]", s.table),
        false => format!("[{}]", s.table),
    }
}

/// A minimal document of section `s` with `k` set to its example: the section's base, `k`
/// replacing the base key it stands instead of (or its own).
pub fn example_document(s: &Section, k: &Key) -> String {
    let mut text = format!("{}\n", header(s));
    for (name, value) in s.base {
        if *name != k.name && Some(*name) != k.instead_of {
            text.push_str(&format!("{name} = {value}\n"));
        }
    }
    for (name, value) in k.with {
        text.push_str(&format!("{name} = {value}\n"));
    }
    text.push_str(&format!("{} = {}\n", k.name, k.example));
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::error::ConfigErrorKind;
    use crate::config::Config;

    /// Parses a document as `check-config` does: the file, then its sinks. The Cloudflare
    /// example's token variable is read as PATH, which is set (setting a variable would race
    /// with the other tests' threads).
    fn parse_sinks(text: &str) -> Result<Vec<crate::sink::SinkSpec>, crate::config::ConfigError> {
        let text = text.replace("\"CLOUDFLARE_API_TOKEN\"", "\"PATH\"");
        let config = Config::parse(&text, "keys.toml")?;
        crate::sink::parse_sinks(&config)
    }

    fn parse(text: &str) -> Result<(), crate::config::ConfigError> {
        parse_sinks(text).map(drop)
    }

    /// The keys serde names in its refusal of an unknown one (`expected one of `a`, `b``).
    fn accepted(text: &str) -> BTreeSet<String> {
        let e = parse(text).expect_err(text);
        let msg = e.to_string();
        let (_, list) = msg
            .split_once(", expected ")
            .unwrap_or_else(|| panic!("{msg}"));
        // `a`, `b` or `c`: the names are every other piece between backticks.
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    fn documented(s: &Section) -> BTreeSet<String> {
        s.keys.iter().map(|k| k.name.to_string()).collect()
    }

    #[test]
    fn every_documented_key_parses_with_its_example() {
        for s in SECTIONS {
            for k in s.keys {
                let text = example_document(s, k);
                match parse(&text) {
                    Ok(()) => assert!(!k.needs_files, "{text}: needs_files but parses"),
                    // Known, and refused only for what its files hold (they do not exist here).
                    Err(e) if k.needs_files => {
                        assert_ne!(e.kind, ConfigErrorKind::UnknownKey, "{text}: {e}");
                        assert!(e.to_string().contains(k.name), "{text}: {e}");
                    }
                    Err(e) => panic!("{text}: {e}"),
                }
            }
        }
    }

    #[test]
    fn every_key_the_parser_accepts_is_documented() {
        let tables: BTreeSet<String> = SECTIONS.iter().map(|s| s.table.to_string()).collect();
        assert_eq!(accepted("[no_such_section]\n"), tables);
        for s in SECTIONS {
            let mut text = format!("{}\n", header(s));
            for (name, value) in s.base {
                text.push_str(&format!("{name} = {value}\n"));
            }
            text.push_str("no_such_key = 1\n");
            let mut parser = accepted(&text);
            if s.table == "sink" {
                // The common keys are taken out before a sink's own struct reads the rest.
                let common: BTreeSet<String> = crate::sink::COMMON_KEYS
                    .iter()
                    .map(|k| k.to_string())
                    .collect();
                match s.sink_type {
                    None => parser = common,
                    Some(_) => parser.retain(|k| !common.contains(k)),
                }
            }
            assert_eq!(parser, documented(s), "{}", header(s));
        }
        let types: BTreeSet<&str> = SECTIONS.iter().filter_map(|s| s.sink_type).collect();
        let all: BTreeSet<&str> = crate::config::SinkType::ALL
            .iter()
            .map(|t| t.name())
            .collect();
        assert_eq!(types, all, "a section per sink type");
    }

    /// The documented defaults of the keys whose default is a plain value are the parser's.
    #[test]
    fn the_documented_defaults_are_the_parsers() {
        use crate::config::values::fmt_ms;
        let c = Config::default();
        let r = &c.rules[0];
        // As written: the parser's own spelling of its default ranges, which it holds parsed.
        let allow: Vec<String> = crate::config::DEFAULT_ALLOW
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let parsed: Vec<crate::addr::Cidr> = crate::config::DEFAULT_ALLOW
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.allow, parsed);
        let actual = [
            ("input", "format", c.input.format.clone()),
            ("input", "lateness", fmt_ms(c.input.lateness_ms)),
            ("input", "start_at", "end".to_string()),
            ("rule", "name", r.name.clone()),
            ("rule", "rate", r.rate.text.clone()),
            ("rule", "burst", r.burst.to_string()),
            ("rule", "ban", fmt_ms(r.ban_ms)),
            ("rule", "ban_factor", r.ban_factor.to_string()),
            ("rule", "max_ban", fmt_ms(r.max_ban_ms)),
            ("rule", "recidive_window", fmt_ms(r.recidive_window_ms)),
            ("rule", "ipv4_prefix", r.ipv4_prefix.to_string()),
            ("rule", "ipv6_prefix", r.ipv6_prefix.to_string()),
            ("allow", "cidrs", format!("[{}]", allow.join(", "))),
            ("engine", "shards", c.engine.shards.to_string()),
            ("engine", "max_keys", c.engine.max_keys.to_string()),
        ];
        assert_eq!(c.input.start_at, crate::config::StartAt::End);
        for (table, name, value) in actual {
            let k = SECTIONS
                .iter()
                .filter(|s| s.table == table)
                .flat_map(|s| s.keys)
                .find(|k| k.name == name)
                .unwrap_or_else(|| panic!("{table}.{name}"));
            assert!(
                k.default.starts_with(&format!("`{value}`"))
                    || k.default.contains(&format!(": `{value}`")),
                "{table}.{name}: documented {:?}, the parser's {value}",
                k.default
            );
        }
    }

    /// The same for the sinks: each type's minimal table, its defaults read back.
    #[test]
    fn the_documented_sink_defaults_are_the_parsers() {
        use crate::config::values::fmt_ms;
        use crate::sink::SinkKind;
        let d = |t: std::time::Duration| fmt_ms(t.as_millis() as u64);
        let argv = |v: &[String]| {
            let quoted: Vec<String> = v.iter().map(|a| format!("\"{a}\"")).collect();
            format!("[{}]", quoted.join(", "))
        };
        for sec in SECTIONS.iter().filter(|s| s.sink_type.is_some()) {
            let mut text = format!("{}\n", header(sec));
            for (name, value) in sec.base {
                text.push_str(&format!("{name} = {value}\n"));
            }
            let spec = parse_sinks(&text).unwrap().remove(0);
            let c = &spec.common;
            let mut actual = vec![
                ("", "dry_run", c.dry_run.to_string()),
                ("", "queue_size", c.queue_size.to_string()),
                ("", "retry_max_delay", d(c.retry_max_delay)),
                ("", "give_up_after", d(c.give_up_after)),
            ];
            let own = sec.sink_type.unwrap_or_default();
            match &spec.kind {
                SinkKind::Nginx(n) => actual.extend([
                    (own, "reload_command", argv(&n.reload_command)),
                    (own, "test_command", argv(&n.test_command)),
                    (own, "min_reload_interval", d(n.min_reload_interval)),
                    (own, "timeout", d(n.timeout)),
                ]),
                SinkKind::Cloudflare(cf) => actual.extend([
                    (own, "mode", cf.mode.clone()),
                    (own, "notes", cf.notes.clone()),
                    (own, "api_base", cf.api_base.clone()),
                    (own, "max_rules", cf.max_rules.to_string()),
                    (own, "requests_per_5min", cf.budget.to_string()),
                    (own, "timeout", d(cf.timeout)),
                ]),
                SinkKind::Exec(e) => actual.push((own, "timeout", d(e.timeout))),
                SinkKind::Webhook(w) => actual.push((own, "timeout", d(w.timeout))),
                SinkKind::Jsonl(_) => {}
            }
            for (t, name, value) in actual {
                let k = SECTIONS
                    .iter()
                    .filter(|s| s.table == "sink" && s.sink_type == (!t.is_empty()).then_some(t))
                    .flat_map(|s| s.keys)
                    .find(|k| k.name == name)
                    .unwrap_or_else(|| panic!("sink {t} {name}"));
                assert!(
                    k.default.starts_with(&format!("`{value}`")),
                    "{own}: {name}: documented {:?}, the parser's {value}",
                    k.default
                );
            }
        }
    }

    #[test]
    fn every_key_has_a_type_a_default_and_a_description() {
        for s in SECTIONS {
            assert!(!s.about.is_empty());
            for k in s.keys {
                for (what, v) in [("kind", k.kind), ("default", k.default), ("about", k.about)] {
                    assert!(!v.trim().is_empty(), "{}.{}: no {what}", s.table, k.name);
                }
            }
        }
    }
}
