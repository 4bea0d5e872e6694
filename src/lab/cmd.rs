//! The lab's subcommands as the binary runs them: arguments in, text on stdout/stderr out.

use std::io::Write;

use super::analyze;
use super::bench;
use super::generate;
use super::report;
use super::scan;
use super::scenario;
use crate::cli::{AnalyzeArgs, BenchArgs, GenerateArgs, ReportArgs};
use crate::error::Error;

fn stdout_error(e: std::io::Error) -> Error {
    Error::writing("to stdout", e)
}

/// `floodwatch generate`.
pub fn generate(a: &GenerateArgs) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    if a.list {
        for name in scenario::NAMES {
            writeln!(out, "{name}").map_err(stdout_error)?;
        }
        return Ok(());
    }
    let (Some(name), Some(dir)) = (&a.scenario, &a.out) else {
        return Err(Error::Usage("generate needs --scenario and --out".into()));
    };
    let g = generate::generate(name, a.seconds, a.seed, dir).map_err(|e| match e {
        generate::GenerateError::Io { .. } => Error::Runtime(e.to_string()),
        _ => Error::Usage(e.to_string()),
    })?;
    let t = &g.truth;
    eprintln!(
        "floodwatch generate: {} lines ({:.1} MB) over {} s in {} vhost(s); must ban {:?}{}",
        t.lines,
        g.bytes as f64 / 1e6,
        t.seconds,
        t.vhosts.len(),
        t.banned,
        if t.needs_proxy {
            " (with the [proxy] config)"
        } else {
            ""
        }
    );
    writeln!(
        out,
        "floodwatch replay --config {} '{}'",
        g.config_path.display(),
        g.glob
    )
    .map_err(stdout_error)
}

/// `floodwatch analyze`.
pub fn analyze(a: AnalyzeArgs) -> Result<(), Error> {
    let window = scan::Window {
        since_ms: a
            .since
            .as_deref()
            .map(|t| analyze::parse_time("--since", t))
            .transpose()?,
        until_ms: a
            .until
            .as_deref()
            .map(|t| analyze::parse_time("--until", t))
            .transpose()?,
    };
    let o = analyze::Options {
        config: a.config,
        format: a.format,
        rates: a.rates,
        bursts: a.bursts,
        rule: a.rule,
        top: a.top,
        by_vhost: a.by_vhost,
        suggest: a.suggest,
        window,
        paths: a.paths,
    };
    let report = analyze::analyze(&o)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", analyze::to_json(&report))
    } else {
        out.write_all(analyze::to_text(&report).as_bytes())
    }
    .map_err(stdout_error)
}

fn window(since: Option<&str>, until: Option<&str>) -> Result<scan::Window, Error> {
    Ok(scan::Window {
        since_ms: since
            .map(|t| analyze::parse_time("--since", t))
            .transpose()?,
        until_ms: until
            .map(|t| analyze::parse_time("--until", t))
            .transpose()?,
    })
}

/// `floodwatch report`.
pub fn report(a: ReportArgs) -> Result<(), Error> {
    let o = analyze::Options {
        window: window(a.since.as_deref(), a.until.as_deref())?,
        config: a.config,
        format: a.format,
        rates: a.rates,
        bursts: a.bursts,
        rule: a.rule,
        top: a.top,
        by_vhost: a.by_vhost,
        suggest: true,
        paths: a.paths,
    };
    let analysis = analyze::analyze(&o)?;
    let bytes = report::write(&analysis, &a.out)?;
    eprintln!(
        "floodwatch report: {} ({:.0} KB): {} lines, {} bans by the configured rules",
        a.out.display(),
        bytes as f64 / 1024.0,
        analysis.ingest.lines,
        analysis.bans.len()
    );
    Ok(())
}

/// `floodwatch bench`.
pub fn bench(a: &BenchArgs) -> Result<(), Error> {
    if !(a.speed > 0.0 && a.speed.is_finite()) {
        return Err(Error::Usage("--speed must be a positive number".into()));
    }
    let report = bench::run(bench::Options {
        seconds: a.seconds,
        live_seconds: a.live_seconds,
        speed: a.speed,
        seed: a.seed,
    })?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", bench::to_json(&report))
    } else {
        out.write_all(bench::to_text(&report).as_bytes())
    }
    .map_err(stdout_error)
}
