//! `floodwatch analyze`: what the logs look like per key (peak rates, top talkers, the spread of
//! peak rates) and what other thresholds would have done.
//!
//! The what-if answers come from the replay pipeline itself, run once per rate with the rule's
//! rate and burst replaced: the same parser, shards, buckets and ban table as `replay`, so the
//! answer is by construction what `replay --rate R --burst B` would ban.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::{json, Value};

use super::peaks::{self, Distribution, KeyPeaks, PeakCounter};
use crate::addr::Cidr;
use crate::config::{parse_rate, Overrides};
use crate::engine::rule::CompiledRules;
use crate::error::Error;
use crate::hit::NO_VHOST;
use crate::replay::{self, ReplayPlan};
use crate::source::ingest::Ingest;
use crate::source::reader::{Chunks, CHUNK};
use crate::source::stats::IngestStats;

/// What to analyse and which thresholds to try.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<std::path::PathBuf>,
    pub format: Option<String>,
    /// Rates to try (`"10r/s"`); empty = the rule's own rate.
    pub rates: Vec<String>,
    /// Burst for every tried rate; `None` = the rule's own.
    pub burst: Option<u32>,
    /// The rule whose peaks are measured and whose thresholds are varied; `None` = the first.
    pub rule: Option<String>,
    pub top: usize,
    pub paths: Vec<String>,
}

/// One what-if row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhatIf {
    pub rate: String,
    pub burst: u32,
    /// Keys the rule would ban, sorted as the events spell them.
    pub keys: Vec<String>,
}

/// Everything `analyze` reports.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub rule: String,
    pub ingest: IngestStats,
    pub keys: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    pub top: Vec<KeyPeaks>,
    pub distributions: Vec<Distribution>,
    pub what_if: Vec<WhatIf>,
}

fn plan(o: &Options) -> Result<ReplayPlan, Error> {
    let overrides = Overrides {
        format: o.format.clone(),
        ..Overrides::default()
    };
    // A report acts on nothing: without sinks its replays put their events where the what-if
    // reads them, whatever sinks the config (often production's) names.
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

/// Runs the analysis.
pub fn analyze(o: &Options) -> Result<Analysis, Error> {
    let base = plan(o)?;
    let r = rule_index(&base, o.rule.as_deref())?;
    let spec = base.config.rules[r].clone();
    let (counter, ingest) = count_peaks(&base, r)?;
    let keys = counter.len();
    let all = counter.finish();
    let first_ms = all.iter().map(|k| k.first_ms).min().unwrap_or(0);
    let last_ms = all.iter().map(|k| k.last_ms).max().unwrap_or(0);
    let distributions = peaks::distributions(&all);
    let rates = if o.rates.is_empty() {
        vec![spec.rate.text.clone()]
    } else {
        o.rates.clone()
    };
    let burst = o.burst.unwrap_or(spec.burst);
    let mut what_if = Vec::with_capacity(rates.len());
    for rate in rates {
        what_if.push(what_if_one(&base, r, &rate, burst)?);
    }
    Ok(Analysis {
        rule: spec.name,
        ingest,
        keys,
        first_ms,
        last_ms,
        top: all.into_iter().take(o.top).collect(),
        distributions,
        what_if,
    })
}

/// Reads every file once (one thread: this is a report, not the hot path) and counts the hits of
/// rule `r` per key, keyed as the rule keys them.
fn count_peaks(plan: &ReplayPlan, r: usize) -> Result<(PeakCounter, IngestStats), Error> {
    let spec = &plan.config.rules[r];
    let bit = 1u32 << r;
    let vhosts = crate::vhost::Vhosts::new();
    let mut ingest = Ingest::new(
        Arc::new(plan.format.clone()),
        Arc::new(compile_rules(&plan.config.rules)?),
        vhosts.clone(),
    );
    let mut counter = PeakCounter::default();
    let read_bytes = Arc::new(AtomicU64::new(0));
    for f in &plan.files {
        let vhost = f
            .vhost
            .as_deref()
            .map_or(NO_VHOST, |v| vhosts.intern(v.as_bytes()));
        let runtime = |e: std::io::Error| Error::file(&f.path)(e);
        let mut chunks = Chunks::open(&f.path, CHUNK, read_bytes.clone()).map_err(runtime)?;
        while let Some(chunk) = chunks.next_chunk().map_err(runtime)? {
            ingest.stats.bytes += chunk.len() as u64;
            for line in chunk.split(|&b| b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                if let Some(hit) = ingest.line(line, vhost) {
                    if hit.rules & bit != 0 {
                        let prefix = if hit.addr.is_v4() {
                            spec.ipv4_prefix
                        } else {
                            spec.ipv6_prefix
                        };
                        counter.hit(Cidr::new(hit.addr, prefix), hit.time_ms);
                    }
                }
            }
        }
    }
    Ok((counter, ingest.stats))
}

fn compile_rules(specs: &[crate::engine::RuleSpec]) -> Result<CompiledRules, Error> {
    CompiledRules::new(specs).map_err(|e| Error::Usage(format!("rule: {e}")))
}

/// Replays the base plan's files with rule `r` at `rate`/`burst` and collects the keys it bans:
/// the same files, config and (no) sinks as the base, only that rule's threshold changed.
fn what_if_one(base: &ReplayPlan, r: usize, rate: &str, burst: u32) -> Result<WhatIf, Error> {
    let parsed = parse_rate(rate).map_err(|source| Error::Flag {
        flag: "--rates",
        source,
    })?;
    let mut config = base.config.clone();
    let rule = &mut config.rules[r];
    rule.rate = parsed;
    rule.burst = burst;
    let name = rule.name.clone();
    let p = ReplayPlan {
        rules: compile_rules(&config.rules)?,
        config,
        format: base.format.clone(),
        files: base.files.clone(),
        proxies: base.proxies.clone(),
        shards: base.shards,
        producers: base.producers,
        sinks: Vec::new(),
    };
    let mut events: Vec<u8> = Vec::new();
    replay::replay(p, &mut events, false)?;
    let mut keys: Vec<String> = events
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|e| e["type"] == "ban" && e["rule"] == name.as_str())
        .filter_map(|e| e["key"].as_str().map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    Ok(WhatIf {
        rate: rate.to_string(),
        burst,
        keys,
    })
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `--json` report.
pub fn to_json(a: &Analysis) -> Value {
    json!({
        "rule": a.rule,
        "lines": a.ingest.lines,
        "hits": a.ingest.hits,
        "malformed": a.ingest.malformed.total(),
        "keys": a.keys,
        "first": time(a.first_ms),
        "last": time(a.last_ms),
        "top": a.top.iter().map(|k| json!({
            "key": k.key.to_string(),
            "requests": k.requests,
            "peak_rps": k.peak_rps(0),
            "peak_rps_10s": k.peak_rps(1),
            "peak_rps_60s": k.peak_rps(2),
            "first": time(k.first_ms),
            "last": time(k.last_ms),
        })).collect::<Vec<_>>(),
        "peak_rps_distribution": a.distributions.iter().map(|d| json!({
            "window_seconds": d.window_s,
            "percentiles": d.percentiles.iter()
                .map(|(q, v)| (format!("p{}", q * 100.0), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "max": d.max,
        })).collect::<Vec<_>>(),
        "what_if": a.what_if.iter().map(|w| json!({
            "rate": w.rate,
            "burst": w.burst,
            "rule": a.rule,
            "keys": w.keys,
        })).collect::<Vec<_>>(),
    })
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
    let _ = writeln!(
        s,
        "\nTop talkers (peak rates in requests/s over 1 s, 10 s, 60 s windows)"
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>10} {:>8} {:>8} {:>8}",
        "key", "requests", "1s", "10s", "60s"
    );
    for k in &a.top {
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>8.1} {:>8.1} {:>8.1}",
            k.key.to_string(),
            k.requests,
            k.peak_rps(0),
            k.peak_rps(1),
            k.peak_rps(2)
        );
    }
    let _ = writeln!(s, "\nPer-key peak rate distribution (requests/s)");
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
    let _ = writeln!(s, "\nWhat-if: keys rule {} would ban", a.rule);
    let _ = writeln!(s, "  {:<10} {:>6} {:>6}  keys", "rate", "burst", "bans");
    for w in &a.what_if {
        const SHOWN: usize = 8;
        let mut list = w
            .keys
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if w.keys.len() > SHOWN {
            let _ = write!(list, " (+{} more)", w.keys.len() - SHOWN);
        }
        let _ = writeln!(
            s,
            "  {:<10} {:>6} {:>6}  {}",
            w.rate,
            w.burst,
            w.keys.len(),
            list
        );
    }
    s
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
            burst: Some(100),
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
        assert_eq!(a.top[0].key.to_string(), "198.51.100.23");
        assert!(a.top[0].peak_rps(0) >= 60.0);
        assert_eq!(a.what_if[0].keys, ["198.51.100.23"]);
        assert!(a.what_if[1].keys.is_empty());
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
        let e = analyze(&o).unwrap_err();
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
