//! `floodwatch analyze`: what the logs look like per key (peak rates, top talkers with their
//! vhost, user agent and paths, the spread of peak rates), what other thresholds would have
//! done (a grid of rates × bursts per rule, and per vhost), and which threshold the traffic
//! supports (`--suggest`).
//!
//! One pass reads the archive ([`scan`]); the grid steps each key's requests through the engine's
//! own bucket ([`grid`]), so each cell is exactly what `replay --rate R --burst B` would ban with
//! the same config (the tests compare the two).

use std::path::Path;

use serde_json::{json, Value};

use super::grid::{self, Grid};
use super::peaks::{self, Distribution, KeyPeaks};
use super::scan::{self, FileScan, KeyHits, Scan, ScanSpec, Series, Window};
use super::suggest::{self, Suggestion};
use crate::config::{parse_rate, Overrides};
use crate::decide::allowlist::Allowlist;
use crate::decide::Ban;
use crate::engine::{Rate, RuleSpec};
use crate::error::Error;
use crate::hit::VhostId;
use crate::pipeline::detector::never_banned;
use crate::replay::{self, ReplayPlan};
use crate::source::stats::IngestStats;
use crate::vhost::Vhosts;

/// What to analyse and which thresholds to try.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<std::path::PathBuf>,
    pub format: Option<String>,
    /// Rates to try (`"10r/s"`); empty = each rule's ladder (see [`grid::rate_ladder`]).
    pub rates: Vec<String>,
    /// Bursts to try; empty = each rule's ladder.
    pub bursts: Vec<u32>,
    /// The rule whose talkers are listed, and the only one varied when named; `None` = the
    /// first for the talkers, every rule for the grids.
    pub rule: Option<String>,
    pub top: usize,
    /// A grid per vhost too.
    pub by_vhost: bool,
    pub suggest: bool,
    pub window: Window,
    pub paths: Vec<String>,
}

/// One cell as reported: the keys as events spell them.
#[derive(Clone, Debug, PartialEq)]
pub struct CellOut {
    pub rate: String,
    pub burst: u32,
    /// Sorted.
    pub keys: Vec<String>,
    pub requests: u64,
    pub share: f64,
    /// Banned keys whose user agent names a well-known crawler: (key, crawler).
    pub crawlers: Vec<(String, &'static str)>,
}

/// One grid as reported.
#[derive(Clone, Debug)]
pub struct GridOut {
    pub rule: String,
    pub vhost: Option<String>,
    pub rates: Vec<String>,
    pub bursts: Vec<u32>,
    /// The configured rate and burst of the rule.
    pub configured: (String, u32),
    pub cells: Vec<CellOut>,
    pub requests: u64,
    pub keys: usize,
    pub suggestion: Option<SuggestionOut>,
}

impl GridOut {
    pub fn cell(&self, rate: usize, burst: usize) -> &CellOut {
        &self.cells[rate * self.bursts.len() + burst]
    }
}

/// A suggestion as reported.
#[derive(Clone, Debug)]
pub enum SuggestionOut {
    Cell {
        rate: String,
        burst: u32,
        keys: Vec<String>,
        evidence: suggest::Evidence,
        toml: String,
    },
    None {
        reason: String,
    },
}

/// One top talker.
#[derive(Clone, Debug)]
pub struct Talker {
    pub peaks: KeyPeaks,
    pub vhost: Option<String>,
    pub agents: Vec<(String, u64)>,
    pub paths: Vec<(String, u64)>,
    pub crawler: Option<&'static str>,
    /// First ban under the analysed rule at its configured threshold (log time).
    pub banned_ms: Option<i64>,
}

/// Everything `analyze` reports.
#[derive(Clone)]
pub struct Analysis {
    pub rule: String,
    pub ingest: IngestStats,
    pub files: Vec<FileScan>,
    pub window: Window,
    pub keys: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    pub top: Vec<Talker>,
    pub distributions: Vec<Distribution>,
    /// The analysed rule's grid over all its traffic first, then the others.
    pub grids: Vec<GridOut>,
    /// The bans of the configured rules (what replay decides), in time order.
    pub bans: Vec<Ban>,
    pub series: Series,
    pub vhosts: Vhosts,
    /// Lines later than the config's lateness in their file (see [`Scan::late`]).
    pub late: u64,
}

fn plan(o: &Options) -> Result<ReplayPlan, Error> {
    let overrides = Overrides {
        format: o.format.clone(),
        ..Overrides::default()
    };
    // A report acts on nothing: sinks are not even read.
    replay::plan_replay(o.config.as_deref(), &overrides, &o.paths, None, None, false)
}

fn rule_index(plan: &ReplayPlan, name: Option<&str>) -> Result<usize, Error> {
    match name {
        None => Ok(0),
        Some(n) => plan
            .config
            .rules
            .iter()
            .position(|r| r.name == n)
            .ok_or_else(|| Error::Usage(format!("--rule: no rule named {n:?} in the config"))),
    }
}

/// Parses `--since`/`--until`: an RFC 3339 time (`2026-11-20T10:05:00Z`; without a zone, UTC).
pub fn parse_time(flag: &str, text: &str) -> Result<i64, Error> {
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
        Error::Usage(format!(
            "{flag}: {text:?} is not a time (RFC 3339, such as 2026-11-20T10:05:00Z)"
        ))
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::Usage(format!("{flag}: {text:?} is before 1970")))?
        .as_millis();
    i64::try_from(ms).map_err(|_| Error::Usage(format!("{flag}: {text:?} is out of range")))
}

fn parse_rates(texts: &[String]) -> Result<Vec<Rate>, Error> {
    texts
        .iter()
        .map(|t| {
            parse_rate(t).map_err(|source| Error::Flag {
                flag: "--rates",
                source,
            })
        })
        .collect()
}

/// Reads the archive and checks that something can be reported.
fn read(base: &ReplayPlan, window: Window) -> Result<Scan, Error> {
    if let (Some(s), Some(u)) = (window.since_ms, window.until_ms) {
        if s >= u {
            return Err(Error::Usage("--since must be before --until".into()));
        }
    }
    let spec = ScanSpec {
        format: &base.format,
        rules: &base.rules,
        specs: &base.config.rules,
        client_ip: base.proxies.client_ip(),
        files: &base.files,
        window,
        lateness_ms: i64::try_from(base.config.input.lateness_ms).unwrap_or(i64::MAX),
    };
    let scan = scan::scan(&spec).map_err(|e| Error::File {
        path: e.path,
        source: e.source,
    })?;
    let names = || {
        let v: Vec<String> = base
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        v.join(", ")
    };
    if scan.stats.lines == 0 {
        return Err(Error::Runtime(format!(
            "nothing to report: the archive is empty (no line in {})",
            names()
        )));
    }
    let requests: u64 = scan.files.iter().map(|f| f.requests).sum();
    let outside: u64 = scan.files.iter().map(|f| f.outside).sum();
    if requests == 0 && outside > 0 {
        return Err(Error::Runtime(format!(
            "nothing to report: none of the {outside} requests in {} lies in the window {}",
            names(),
            window_text(&window)
        )));
    }
    if requests == 0 {
        return Err(Error::Runtime(format!(
            "nothing to report: none of the {} lines of {} is a request of the log format with a client address",
            scan.stats.lines,
            names()
        )));
    }
    Ok(scan)
}

/// `since .. until` for messages.
pub fn window_text(w: &Window) -> String {
    let end = |t: Option<i64>| t.map_or("…".to_string(), time);
    format!("{} .. {}", end(w.since_ms), end(w.until_ms))
}

/// Runs the analysis.
pub fn analyze(o: &Options) -> Result<Analysis, Error> {
    let base = plan(o)?;
    let r = rule_index(&base, o.rule.as_deref())?;
    let user_rates = parse_rates(&o.rates)?;
    let scan = read(&base, o.window)?;
    let specs = &base.config.rules;
    let allow = Allowlist::new(never_banned(&base.config, &base.proxies));
    let bans = grid::timeline(&scan.rules, specs, allow.clone(), scan.vhosts.clone());

    let keys = &scan.rules[r];
    let all_peaks: Vec<KeyPeaks> = keys
        .iter()
        .map(|k| KeyPeaks::of_sorted(k.key.net, k.hits.iter().map(|h| h.0)))
        .collect();
    let distributions = peaks::distributions(&all_peaks);
    let top = talkers(keys, &all_peaks, o.top, &scan.vhosts, &bans, &specs[r].name);

    let varied: Vec<usize> = match &o.rule {
        Some(_) => vec![r],
        None => std::iter::once(r)
            .chain((0..specs.len()).filter(|&i| i != r))
            .collect(),
    };
    let mut grids = Vec::new();
    for &i in &varied {
        let spec = &specs[i];
        let rates = if user_rates.is_empty() {
            parse_rates(&grid::rate_ladder(&spec.rate))?
        } else {
            user_rates.clone()
        };
        let bursts = if o.bursts.is_empty() {
            grid::burst_ladder(spec.burst)
        } else {
            o.bursts.clone()
        };
        let mut scopes: Vec<Option<VhostId>> = vec![None];
        if o.by_vhost {
            scopes.extend(busiest_vhosts(&scan.rules[i]));
        }
        for vhost in scopes {
            let g = grid::evaluate(&scan.rules[i], i, spec, vhost, &rates, &bursts, &allow);
            if vhost.is_some() && g.requests == 0 {
                continue;
            }
            let whole = (vhost.is_none() && i == r).then_some(&all_peaks[..]);
            grids.push(grid_out(&g, &scan, spec, &allow, o.suggest, whole));
        }
    }
    let keys_n = keys.len();
    Ok(Analysis {
        rule: specs[r].name.clone(),
        ingest: scan.stats,
        files: scan.files,
        window: o.window,
        keys: keys_n,
        first_ms: scan.first_ms,
        last_ms: scan.last_ms,
        top,
        distributions,
        grids,
        bans,
        series: scan.series,
        vhosts: scan.vhosts,
        late: scan.late,
    })
}

/// The vhosts with the most requests of a rule's keys (at most [`BY_VHOST`]).
fn busiest_vhosts(keys: &[KeyHits]) -> Vec<Option<VhostId>> {
    let mut counts: ahash::AHashMap<VhostId, u64> = ahash::AHashMap::new();
    for k in keys {
        for h in &k.hits {
            *counts.entry(h.1).or_default() += 1;
        }
    }
    let mut v: Vec<(VhostId, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(BY_VHOST).map(|e| Some(e.0)).collect()
}

/// Per-vhost grids of one rule, busiest first.
pub const BY_VHOST: usize = 20;

fn vhost_name(vhosts: &Vhosts, v: VhostId) -> Option<String> {
    vhosts.name(v).map(|n| n.to_string())
}

/// `whole`: the keys' peaks over all their requests when already computed (the analysed rule).
fn grid_out(
    g: &Grid,
    scan: &Scan,
    spec: &RuleSpec,
    allow: &Allowlist,
    want: bool,
    whole: Option<&[KeyPeaks]>,
) -> GridOut {
    let keys = &scan.rules[g.rule];
    let key_names = |idx: &[usize]| {
        let mut v: Vec<String> = idx.iter().map(|&i| keys[i].key.net.to_string()).collect();
        v.sort();
        v.dedup();
        v
    };
    let cells = g
        .cells
        .iter()
        .map(|c| CellOut {
            rate: c.rate.text.clone(),
            burst: c.burst,
            keys: key_names(&c.banned),
            requests: c.requests,
            share: g.share(c),
            crawlers: c
                .banned
                .iter()
                .filter_map(|&i| keys[i].crawler.map(|n| (keys[i].key.net.to_string(), n)))
                .collect(),
        })
        .collect();
    let vhost = g.vhost.and_then(|v| vhost_name(&scan.vhosts, v));
    let suggestion = want.then(|| {
        let peaks: Vec<Option<KeyPeaks>> = match whole {
            Some(all) => all.iter().cloned().map(Some).collect(),
            None => keys
                .iter()
                .map(|k| {
                    if g.vhost.is_none() {
                        return Some(KeyPeaks::of_sorted(k.key.net, k.hits.iter().map(|h| h.0)));
                    }
                    let times: Vec<i64> = k
                        .hits
                        .iter()
                        .filter(|h| g.vhost.is_none_or(|v| h.1 == v))
                        .map(|h| h.0)
                        .collect();
                    (!times.is_empty()).then(|| KeyPeaks::of_sorted(k.key.net, times.into_iter()))
                })
                .collect(),
        };
        match suggest::suggest(g, keys, &peaks, spec, allow) {
            Suggestion::Cell {
                rate,
                burst,
                evidence,
            } => {
                let text = g.rates[rate].text.clone();
                let b = g.bursts[burst];
                SuggestionOut::Cell {
                    toml: suggest::rule_block(spec, &text, b, vhost.as_deref()),
                    keys: key_names(&g.cell(rate, burst).banned),
                    rate: text,
                    burst: b,
                    evidence,
                }
            }
            Suggestion::None { reason } => SuggestionOut::None { reason },
        }
    });
    GridOut {
        rule: spec.name.clone(),
        vhost,
        rates: g.rates.iter().map(|r| r.text.clone()).collect(),
        bursts: g.bursts.clone(),
        configured: (spec.rate.text.clone(), spec.burst),
        cells,
        requests: g.requests,
        keys: g.keys,
        suggestion,
    }
}

/// How many user agents and paths are listed per talker.
pub const TALKER_ITEMS: usize = 3;

fn talkers(
    keys: &[KeyHits],
    peaks: &[KeyPeaks],
    n: usize,
    vhosts: &Vhosts,
    bans: &[Ban],
    rule: &str,
) -> Vec<Talker> {
    keys.iter()
        .zip(peaks)
        .take(n)
        .map(|(k, p)| Talker {
            peaks: p.clone(),
            vhost: vhost_name(vhosts, k.main_vhost()),
            agents: k.agents.top(TALKER_ITEMS),
            paths: k.paths.top(TALKER_ITEMS),
            crawler: k.crawler,
            banned_ms: bans
                .iter()
                .find(|b| b.key == k.key && &*b.rule == rule)
                .map(|b| b.time_ms),
        })
        .collect()
}

pub fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn cell_json(c: &CellOut, rule: &str) -> Value {
    json!({
        "rate": c.rate,
        "burst": c.burst,
        "rule": rule,
        "bans": c.keys.len(),
        "keys": c.keys,
        "requests": c.requests,
        "share": round3(c.share),
        "crawlers": c.crawlers.iter().map(|(k, n)| json!({"key": k, "crawler": n})).collect::<Vec<_>>(),
    })
}

fn suggestion_json(s: &SuggestionOut) -> Value {
    match s {
        SuggestionOut::Cell {
            rate,
            burst,
            keys,
            evidence,
            toml,
        } => json!({
            "rate": rate,
            "burst": burst,
            "keys": keys,
            "evidence": {
                "windows_seconds": peaks::WINDOWS,
                "banned_min_peak_rps": evidence.banned_min.map(round3),
                "others_p999_peak_rps": evidence.others_p999.map(round3),
                "others_max_peak_rps": evidence.others_max.map(round3),
                "others": evidence.others,
            },
            "toml": toml,
        }),
        SuggestionOut::None { reason } => json!({ "none": reason }),
    }
}

/// The `--json` report.
pub fn to_json(a: &Analysis) -> Value {
    let what_if: Vec<Value> = a
        .grids
        .first()
        .map(|g| g.cells.iter().map(|c| cell_json(c, &g.rule)).collect())
        .unwrap_or_default();
    json!({
        "rule": a.rule,
        "lines": a.ingest.lines,
        "hits": a.ingest.hits,
        "malformed": a.ingest.malformed.total(),
        "keys": a.keys,
        "first": time(a.first_ms),
        "last": time(a.last_ms),
        "since": a.window.since_ms.map(time),
        "until": a.window.until_ms.map(time),
        "late_lines": a.late,
        "files": a.files.iter().map(|f| json!({
            "path": f.path.display().to_string(),
            "lines": f.lines,
            "malformed": f.malformed,
            "unusable": f.unusable,
            "outside_window": f.outside,
            "requests": f.requests,
        })).collect::<Vec<_>>(),
        "top": a.top.iter().map(|t| json!({
            "key": t.peaks.key.to_string(),
            "requests": t.peaks.requests,
            "peak_rps": t.peaks.peak_rps(0),
            "peak_rps_10s": t.peaks.peak_rps(1),
            "peak_rps_60s": t.peaks.peak_rps(2),
            "first": time(t.peaks.first_ms),
            "last": time(t.peaks.last_ms),
            "vhost": t.vhost,
            "user_agents": t.agents.iter().map(|(s, n)| json!({"user_agent": s, "requests": n})).collect::<Vec<_>>(),
            "paths": t.paths.iter().map(|(s, n)| json!({"path": s, "requests": n})).collect::<Vec<_>>(),
            "crawler": t.crawler,
            "banned": t.banned_ms.map(time),
        })).collect::<Vec<_>>(),
        "peak_rps_distribution": a.distributions.iter().map(|d| json!({
            "window_seconds": d.window_s,
            "percentiles": d.percentiles.iter()
                .map(|(q, v)| (format!("p{}", q * 100.0), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "max": d.max,
        })).collect::<Vec<_>>(),
        "what_if": what_if,
        "grids": a.grids.iter().map(|g| {
            let mut v = json!({
                "rule": g.rule,
                "vhost": g.vhost,
                "rates": g.rates,
                "bursts": g.bursts,
                "configured": {"rate": g.configured.0, "burst": g.configured.1},
                "requests": g.requests,
                "keys": g.keys,
                "cells": g.cells.iter().map(|c| cell_json(c, &g.rule)).collect::<Vec<_>>(),
            });
            if let (Some(s), Some(m)) = (&g.suggestion, v.as_object_mut()) {
                m.insert("suggestion".into(), suggestion_json(s));
            }
            v
        }).collect::<Vec<_>>(),
        "suggest_rule": suggest::rule_text(),
        "bans": a.bans.iter().map(|b| json!({
            "time": time(b.time_ms),
            "key": b.key.net.to_string(),
            "rule": &*b.rule,
            "until": time(b.until_ms),
            "offense": b.offense,
        })).collect::<Vec<_>>(),
    })
}

/// Log text made safe for a terminal: control characters escaped.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The readable report.
pub fn to_text(a: &Analysis) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} lines, {} counted by rule {}, {} keys, {} .. {}",
        a.ingest.lines,
        a.ingest.hits,
        a.rule,
        a.keys,
        time(a.first_ms),
        time(a.last_ms)
    );
    if a.window.is_bounded() {
        let outside: u64 = a.files.iter().map(|f| f.outside).sum();
        let _ = writeln!(
            s,
            "window {} ({outside} requests outside it left out)",
            window_text(&a.window)
        );
    }
    for f in &a.files {
        if f.bad_share() >= 0.01 {
            let _ = writeln!(
                s,
                "note: {}: {:.1} % of {} lines malformed or unusable",
                printable(&f.path.display().to_string()),
                f.bad_share() * 100.0,
                f.lines
            );
        }
    }
    if a.late > 0 {
        let _ = writeln!(
            s,
            "note: {} lines come later than [input] lateness allows; replay counts them late, so the grid may differ from it for their keys",
            a.late
        );
    }
    let _ = writeln!(
        s,
        "
Top talkers (peak rates in requests/s over 1 s, 10 s, 60 s windows)"
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>10} {:>8} {:>8} {:>8}  {:<20} banned",
        "key", "requests", "1s", "10s", "60s", "vhost"
    );
    for t in &a.top {
        let k = &t.peaks;
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>8.1} {:>8.1} {:>8.1}  {:<20} {}{}",
            k.key.to_string(),
            k.requests,
            k.peak_rps(0),
            k.peak_rps(1),
            k.peak_rps(2),
            printable(t.vhost.as_deref().unwrap_or("-")),
            t.banned_ms.map_or("no".to_string(), time),
            t.crawler
                .map_or(String::new(), |c| format!("  [crawler: {c}]"))
        );
        if let Some((ua, _)) = t.agents.first() {
            let _ = writeln!(s, "      agent: {}", printable(ua));
        }
        let paths: Vec<String> = t
            .paths
            .iter()
            .map(|(p, n)| format!("{} ({n})", printable(p)))
            .collect();
        if !paths.is_empty() {
            let _ = writeln!(s, "      paths: {}", paths.join(", "));
        }
    }
    let _ = writeln!(
        s,
        "
Per-key peak rate distribution (requests/s)"
    );
    let _ = write!(s, "  {:<8}", "window");
    for q in peaks::QUANTILES {
        let _ = write!(s, " {:>8}", format!("p{}", q * 100.0));
    }
    let _ = writeln!(s, " {:>8}", "max");
    for d in &a.distributions {
        let _ = write!(s, "  {:<8}", format!("{} s", d.window_s));
        for (_, v) in &d.percentiles {
            let _ = write!(s, " {v:>8.1}");
        }
        let _ = writeln!(s, " {:>8.1}", d.max);
    }
    for g in &a.grids {
        grid_text(&mut s, g);
    }
    if a.grids.iter().any(|g| g.suggestion.is_some()) {
        let _ = writeln!(
            s,
            "
Suggestions (rule used: {}):",
            suggest::rule_text()
        );
        for g in &a.grids {
            suggestion_text(&mut s, g);
        }
    }
    s
}

fn scope(g: &GridOut) -> String {
    match &g.vhost {
        Some(v) => format!("rule {} on vhost {}", g.rule, printable(v)),
        None => format!("rule {}", g.rule),
    }
}

fn grid_text(s: &mut String, g: &GridOut) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "
What-if: keys {} would ban ({} requests from {} keys; configured {} burst {}, marked *)",
        scope(g),
        g.requests,
        g.keys,
        g.configured.0,
        g.configured.1
    );
    let _ = write!(s, "  {:<10}", "rate/burst");
    for b in &g.bursts {
        let _ = write!(s, " {:>12}", b);
    }
    let _ = writeln!(s);
    for (ri, r) in g.rates.iter().enumerate() {
        let _ = write!(s, "  {:<10}", r);
        for bi in 0..g.bursts.len() {
            let c = g.cell(ri, bi);
            let mark = if (c.rate.as_str(), c.burst) == (g.configured.0.as_str(), g.configured.1) {
                "*"
            } else if !c.crawlers.is_empty() {
                "!"
            } else {
                " "
            };
            let _ = write!(s, " {:>5} {:>5.1}%{mark}", c.keys.len(), c.share * 100.0);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "  (each cell: keys banned, their share of the requests; ! = bans a crawler)"
    );
    const SHOWN: usize = 8;
    let mut last: Option<&[String]> = None;
    for c in &g.cells {
        // A run of cells banning the same keys is listed once, at its first cell.
        if c.keys.is_empty() || last == Some(&c.keys[..]) {
            continue;
        }
        last = Some(&c.keys);
        let mut list = c
            .keys
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if c.keys.len() > SHOWN {
            let _ = write!(list, " (+{} more)", c.keys.len() - SHOWN);
        }
        let _ = writeln!(s, "  {:<10} {:>6}  {}", c.rate, c.burst, list);
        for (k, n) in &c.crawlers {
            let _ = writeln!(s, "  {:<17}  crawler: {k} says it is {n}", "");
        }
    }
}

fn suggestion_text(s: &mut String, g: &GridOut) {
    use std::fmt::Write as _;
    match &g.suggestion {
        None => {}
        Some(SuggestionOut::None { reason }) => {
            let _ = writeln!(
                s,
                "
{}: no suggestion: {reason}.",
                scope(g)
            );
        }
        Some(SuggestionOut::Cell {
            rate,
            burst,
            keys,
            evidence: e,
            toml,
        }) => {
            let _ = writeln!(
                s,
                "
{}: {rate} burst {burst} bans {} key(s): {}",
                scope(g),
                keys.len(),
                keys.join(" ")
            );
            let w = |v: [f64; 3]| format!("{:.1} / {:.1} / {:.1}", v[0], v[1], v[2]);
            let _ = writeln!(s, "  # peaks over 1 s / 10 s / 60 s, requests/s:");
            let _ = writeln!(s, "  #   lowest banned key    {}", w(e.banned_min));
            let _ = writeln!(
                s,
                "  #   other keys p99.9     {}   ({} keys)",
                w(e.others_p999),
                e.others
            );
            let _ = writeln!(s, "  #   other keys max       {}", w(e.others_max));
            for line in toml.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
}

/// The glob of the logs of a tree written by `generate`.
pub fn glob_of(dir: &Path) -> String {
    dir.join("vhosts/*/logs/access_log").display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::generate::generate;

    fn options(dir: &Path, rates: &[&str]) -> Options {
        Options {
            rates: rates.iter().map(|r| r.to_string()).collect(),
            bursts: vec![100],
            top: 5,
            paths: vec![glob_of(dir)],
            ..Options::default()
        }
    }

    #[test]
    fn finds_the_flooder_on_top_and_in_the_what_if() {
        let dir = tempfile::tempdir().unwrap();
        generate("get-flood", 30, 4, dir.path()).unwrap();
        let a = analyze(&options(dir.path(), &["20r/s", "100r/s"])).unwrap();
        assert_eq!(a.top[0].peaks.key.to_string(), "198.51.100.23");
        assert!(a.top[0].peaks.peak_rps(0) >= 60.0);
        assert_eq!(a.grids[0].cells[0].keys, ["198.51.100.23"]);
        assert!(a.grids[0].cells[1].keys.is_empty());
        let j = to_json(&a);
        assert_eq!(j["top"][0]["key"], "198.51.100.23");
        assert_eq!(j["what_if"][0]["rate"], "20r/s");
        assert_eq!(j["what_if"][0]["burst"], 100);
        let t = to_text(&a);
        assert!(t.contains("198.51.100.23"), "{t}");
    }

    #[test]
    fn unknown_rule_and_bad_rate_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        generate("background", 20, 4, dir.path()).unwrap();
        let mut o = options(dir.path(), &["fast"]);
        let Err(e) = analyze(&o) else {
            panic!("accepted a bad rate")
        };
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(
            e.to_string().starts_with("--rates: \"fast\" is not a rate"),
            "{e}"
        );
        o.rates.clear();
        o.rule = Some("nope".into());
        assert!(matches!(analyze(&o), Err(Error::Usage(_))));
    }
}
