//! `floodwatch test`: how each line of a log parses and which rules count it — fail2ban-regex
//! for floodwatch. One line of output per line read (on stdout): its number, then either the
//! fields the rules see (client, time, vhost, method, path, status), the rules that count it and
//! the key it counts under (an IPv6 client under its /64, say), or that its client is allowlisted
//! (never banned), or why it could not be used; then a summary (on stderr) with the rules' counts
//! and, when many lines could not be used, the warning replay would give.
//!
//! Nothing is decided: no bucket, no ban, no sink. The config's format, proxies, rules and
//! allowlist are compiled exactly as replay and watch compile them.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::addr::{Addr, Cidr};
use crate::config::Config;
use crate::decide::allowlist::Allowlist;
use crate::engine::rule::CompiledRules;
use crate::error::Error;
use crate::parse::{Format, Record, TimeCache};
use crate::pipeline::compile::compile_without_sinks;
use crate::pipeline::detector::never_banned;
use crate::proxy::{Client, ClientIp};
use crate::source::paths::vhost_from_path;
use crate::source::reader::{lines, Chunks, CHUNK};
use crate::source::stats::IngestStats;
use crate::source::unusable::{self, shown, Samples};

/// What the lines of one run came to.
#[derive(Debug, Default)]
pub struct Tested {
    pub stats: IngestStats,
    /// Lines counted per rule, in config order (an allowlisted key's lines are not).
    pub by_rule: Vec<u64>,
    /// Lines that some rule matches but whose every key is allowlisted: never banned.
    pub allowlisted: u64,
    pub samples: Samples,
}

/// Tests the lines of `source` (`-`: standard input) against `config`, writing one line per
/// log line to `out`.
pub fn run(config: &Config, source: &str, out: &mut dyn Write) -> Result<Tested, Error> {
    let compiled = compile_without_sinks(config, &[source.to_string()])?;
    let client_ip = compiled.proxies.client_ip();
    let allow = Allowlist::new(never_banned(config, &compiled.proxies));
    if source == "-" && io::stdin().is_terminal() {
        // Else the command would seem to hang: it waits for lines typed or pasted.
        eprintln!("floodwatch test: reading from standard input (paste log lines; Ctrl-D ends)");
    }
    let mut chunks = match source {
        "-" => Chunks::from_reader(Box::new(io::stdin()) as Box<dyn Read + Send>, CHUNK),
        path => Chunks::open(Path::new(path), CHUNK, Arc::new(AtomicU64::new(0)))
            .map_err(Error::file(path))?,
    };
    let file_vhost = match source {
        "-" => None,
        path => vhost_from_path(Path::new(path)),
    };
    let mut t = Tester {
        format: &compiled.format,
        rules: &compiled.rules,
        client_ip: client_ip.as_deref(),
        allow: &allow,
        file_vhost: file_vhost.as_deref().unwrap_or(""),
        times: TimeCache::default(),
        tested: Tested {
            by_rule: vec![0; compiled.rules.len()],
            ..Tested::default()
        },
        text: String::with_capacity(256),
    };
    let write = |e: io::Error| Error::writing("to stdout", e);
    loop {
        let chunk = match chunks.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(Error::file(source)(e)),
        };
        for line in lines(chunk) {
            t.line(line);
            out.write_all(t.text.as_bytes()).map_err(write)?;
        }
    }
    out.flush().map_err(write)?;
    t.tested.stats.malformed.too_long += chunks.oversized();
    Ok(t.tested)
}

/// The summary for stderr: counts, the rules' counts, and the unusable-lines warning if any.
pub fn summary(t: &Tested, rules: &[String]) -> String {
    let s = &t.stats;
    let m = &s.malformed;
    let mut text = format!(
        "floodwatch test: {} lines: {} counted by some rule, {} by none, {} malformed (shape {}, \
         time {}, status {}, number {}, empty {}, too long {}), client not an address {}, \
         allowlisted {} (never banned)\n",
        s.lines,
        s.hits,
        s.unmatched,
        m.total(),
        m.shape,
        m.time,
        m.status,
        m.number + m.other,
        m.empty,
        m.too_long,
        s.no_client,
        t.allowlisted,
    );
    for (name, n) in rules.iter().zip(&t.by_rule) {
        text.push_str(&format!("  rule {name}: {n} lines\n"));
    }
    if let Some(w) = unusable::warning(s, &t.samples) {
        text.push_str(&format!("  warning: {w}\n"));
    }
    text
}

struct Tester<'a> {
    format: &'a Format,
    rules: &'a CompiledRules,
    client_ip: Option<&'a ClientIp>,
    /// `[allow] cidrs` and the trusted proxies: keys never banned.
    allow: &'a Allowlist,
    /// The vhost named by the file's path (Plesk's layout), when the format logs none.
    file_vhost: &'a str,
    times: TimeCache,
    tested: Tested,
    /// The output line of the last line tested.
    text: String,
}

impl Tester<'_> {
    fn line(&mut self, line: &[u8]) {
        use std::fmt::Write as _;
        let t = &mut self.tested;
        t.stats.lines += 1;
        self.text.clear();
        let _ = write!(self.text, "{} ", t.stats.lines);
        let rec = match self.format.parse(line, &mut self.times) {
            Ok(rec) => rec,
            Err(kind) => {
                t.stats.malformed.count(kind);
                t.samples.malformed(kind, line);
                let _ = writeln!(
                    self.text,
                    "malformed ({}): {}",
                    unusable::kind_name(kind),
                    shown(line)
                );
                return;
            }
        };
        let Some(addr) = Addr::parse(rec.client) else {
            t.stats.no_client += 1;
            t.samples.no_client(line, rec.client);
            let _ = writeln!(
                self.text,
                "client not an address: client={}",
                shown(rec.client)
            );
            return;
        };
        // The address the rules key: the real client behind a trusted proxy.
        let (client, key_addr) = match self.client_ip.map(|c| c.resolve(addr, rec.real_client)) {
            None | Some(Client::Direct) => (format!("client={addr}"), addr),
            Some(Client::Proxied(real)) => (format!("client={real} via={addr}"), real),
            Some(Client::Unusable) => (
                format!("client={addr} (a trusted proxy; its client field is unusable)"),
                addr,
            ),
        };
        let vhost = match rec.vhost.is_empty() {
            true => self.file_vhost.as_bytes(),
            false => rec.vhost,
        };
        let mask = self.rules.vhost_mask(vhost) & self.rules.request_mask(&rec);
        // Each matching rule's key, and whether it is allowlisted (its range holds an address
        // that is never banned), in config order.
        let matching: Vec<(usize, Cidr, bool)> = self
            .rules
            .specs()
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(i, spec)| {
                let prefix = match key_addr.is_v4() {
                    true => spec.ipv4_prefix,
                    false => spec.ipv6_prefix,
                };
                let key = Cidr::new(key_addr, prefix);
                (i, key, self.allow.covers(&key))
            })
            .collect();
        let counted: Vec<&(usize, Cidr, bool)> = matching.iter().filter(|m| !m.2).collect();
        let allowed: Vec<&(usize, Cidr, bool)> = matching.iter().filter(|m| m.2).collect();
        let state = match counted.is_empty() && !allowed.is_empty() {
            true => "allowlisted",
            false => "ok",
        };
        let _ = write!(self.text, "{state} {client} time={}", time(&rec));
        if !vhost.is_empty() {
            let _ = write!(self.text, " vhost={}", shown(vhost));
        }
        let _ = write!(
            self.text,
            " method={} path={} status={}",
            shown(rec.method),
            shown(rec.target),
            rec.status
        );
        let specs = self.rules.specs();
        let names = |ms: &[&(usize, Cidr, bool)]| {
            ms.iter()
                .map(|m| specs[m.0].name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        // One key when the rules agree on it (the usual case), else one per rule, in order.
        let keys = |ms: &[&(usize, Cidr, bool)]| match ms.iter().all(|m| m.1 == ms[0].1) {
            true => format!("key={}", ms[0].1),
            false => format!(
                "keys={}",
                ms.iter()
                    .map(|m| m.1.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        if matching.is_empty() {
            t.stats.unmatched += 1;
            self.text.push_str(" rules=(none)\n");
            return;
        }
        if counted.is_empty() {
            t.allowlisted += 1;
            let _ = writeln!(
                self.text,
                " rules={} {}: never banned ([allow] cidrs or a trusted proxy), not counted",
                names(&allowed),
                keys(&allowed)
            );
            return;
        }
        t.stats.hits += 1;
        for m in &counted {
            t.by_rule[m.0] += 1;
        }
        let _ = write!(self.text, " rules={} {}", names(&counted), keys(&counted));
        if !allowed.is_empty() {
            let _ = write!(
                self.text,
                " allowlisted={} {} (never banned)",
                names(&allowed),
                keys(&allowed)
            );
        }
        self.text.push('\n');
    }
}

fn time(rec: &Record) -> String {
    let ms = u64::try_from(rec.time_ms).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
