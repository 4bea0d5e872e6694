//! `check-config` beyond the config's own syntax: what `watch` would refuse at start, or what
//! would make every ban of a sink fail, found before the service starts (`ExecStartPre=`).
//!
//! **Errors** (exit code 2): a state folder that cannot be written, an exec program or an nginx
//! test/reload program that is not there, an nginx include file or a jsonl events file whose
//! folder cannot be written, a Cloudflare token file that is missing or readable by others, or
//! that Cloudflare refuses (invalid, or without the permission on the access rules), a
//! control socket path too long for a Unix socket or in a folder that cannot be written.
//! **Warnings** (what may be fine):
//! a glob that matches no file yet, a metrics address already in use (perhaps by the running
//! watch), a `[fleet]` Redis that cannot be reached now (watch starts all the same and
//! publishes once it can), a Cloudflare API that cannot be reached now (likewise), each log of
//! the paths whose last lines could not be used (judged as watch judges a file; the sample line
//! and likely cause; every matched file is sampled, within bounds: 64 KiB each at most), and an
//! nginx file that nginx's config may not be ready for (a geo map not created yet, a file in the
//! other style).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::error::Error;
use crate::parse::{Format, TimeCache};
use crate::pipeline::compile::{compile_format, compile_rules};
use crate::proxy::{self, Proxies};
use crate::sink;
use crate::sink::{SinkKind, SinkSpec};
use crate::source::discover::Patterns;
use crate::source::stats::IngestStats;
use crate::source::unusable::{self, Samples};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing found, with the config key it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

/// How much of each log's end is sampled: at most this much of one file...
const SAMPLE_BYTES: u64 = 64 * 1024;
/// ...at least this much (when there are many files)...
const SAMPLE_MIN_BYTES: u64 = 8 * 1024;
/// ...within this much of all files together (10,000 files: 8 KiB each, 80 MiB)...
const SAMPLE_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// ...and this long: files not sampled by then (the oldest) are said to be left unchecked.
const SAMPLE_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Files named one by one; more are counted.
const SAMPLE_NAMED: usize = 20;

/// Everything found for `config`, whose sinks are `sinks` and format `format` (compiled as
/// watch compiles them).
pub fn check(config: &Config, sinks: &[SinkSpec], format: &Format) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut error = |key: &str, message: String| {
        found.push(Finding {
            severity: Severity::Error,
            key: key.to_string(),
            message,
        })
    };
    if let Some(dir) = &config.state.dir {
        if let Err(m) = writable(dir, true) {
            error("state.dir", m);
        }
    }
    if let Some(socket) = config.state.socket_path() {
        let (key, folder) = match &config.state.socket {
            Some(s) => ("state.socket", s.parent()),
            // The state folder's own check covers it.
            None => ("state.dir", None),
        };
        let max = crate::control::server::MAX_PATH;
        if socket.as_os_str().len() > max {
            let m = format!(
                "the control socket {} is longer than a Unix socket path may be ({max} bytes): \
                 set [state] socket to a shorter one",
                socket.display()
            );
            error(key, m);
        } else if let Some(Err(m)) = folder.map(|f| writable(f, true)) {
            error(key, m);
        }
    }
    for (i, s) in sinks.iter().enumerate() {
        let key = |k: &str| format!("sink[{i}].{k}");
        match &s.kind {
            SinkKind::Exec(c) => {
                let programs = std::iter::once(("ban", c.ban.program()))
                    .chain(c.unban.as_ref().map(|u| ("unban", u.program())));
                for (k, program) in programs {
                    if let Err(m) = runnable(program) {
                        error(&key(k), m);
                    }
                }
            }
            SinkKind::Nginx(c) => {
                let folder = c.path.parent().unwrap_or(Path::new("."));
                if let Err(m) = writable(folder, false) {
                    error(&key("path"), m);
                }
                for (k, argv) in [
                    ("test_command", &c.test_command),
                    ("reload_command", &c.reload_command),
                ] {
                    if let Some(Err(m)) = argv.first().map(|p| runnable(p)) {
                        error(&key(k), m);
                    }
                }
            }
            SinkKind::Cloudflare(c) => {
                if let Err(e) = crate::sink::cloudflare::check_token(&c.token) {
                    error(&key("api_token_file"), e.to_string());
                }
            }
            SinkKind::Jsonl(c) => {
                let folder = c
                    .path
                    .as_deref()
                    .map(|p| p.parent().unwrap_or(Path::new(".")));
                if let Some(Err(m)) = folder.map(|f| writable(f, false)) {
                    error(&key("path"), m);
                }
            }
            SinkKind::Webhook(_) => {}
        }
    }
    let mut warning = |key: &str, message: String| {
        found.push(Finding {
            severity: Severity::Warning,
            key: key.to_string(),
            message,
        })
    };
    for (i, s) in sinks.iter().enumerate() {
        if let SinkKind::Nginx(c) = &s.kind {
            if let Some(m) = c.file_warning() {
                warning(
                    &format!("sink[{i}].path"),
                    format!("{}: {m}", c.path.display()),
                );
            }
        }
    }
    if let Some(fleet) = &config.fleet {
        if let Err(e) = crate::fleet::probe(fleet) {
            warning("fleet.url", e.to_string());
        }
    }
    if let Some(addr) = config.metrics.listen {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            warning(
                "metrics.listen",
                format!("{addr}: {e} (by a watch already running?)"),
            );
        }
    }
    if let Ok(patterns) = Patterns::new(&config.input.paths) {
        for arg in patterns.unmatched() {
            warning(
                "input.paths",
                format!("{arg}: no file there yet (followed once one appears)"),
            );
        }
        let files: Vec<PathBuf> = patterns.files().into_iter().map(|f| f.path).collect();
        for (key, message) in sample_all(files, format, SAMPLE_TIME) {
            warning(key, message);
        }
    }
    for (i, s) in sinks.iter().enumerate() {
        if let SinkKind::Cloudflare(c) = &s.kind {
            if let Some(p) = crate::sink::cloudflare::verify(c) {
                let severity = [Severity::Warning, Severity::Error][usize::from(p.fatal)];
                let key = format!("sink[{i}].{}", p.key);
                found.push(Finding {
                    severity,
                    key,
                    message: p.message,
                });
            }
        }
    }
    found
}

/// The unusable-lines warnings of every file in `files` (the end of each, newest first; see
/// [`SAMPLE_BYTES`] and the bounds after it), and what was left unsampled.
fn sample_all(
    files: Vec<PathBuf>,
    format: &Format,
    time: std::time::Duration,
) -> Vec<(&'static str, String)> {
    let mut by_age: Vec<_> = (files.into_iter())
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    by_age.sort_by(|a, b| b.cmp(a));
    let n = by_age.len() as u64;
    let each = (SAMPLE_TOTAL_BYTES / n.max(1)).clamp(SAMPLE_MIN_BYTES, SAMPLE_BYTES);
    let until = std::time::Instant::now() + time;
    let (mut out, mut more, mut sampled) = (Vec::new(), 0usize, 0usize);
    for (_, path) in &by_age {
        if std::time::Instant::now() >= until {
            break;
        }
        sampled += 1;
        let Some(w) = sample(path, format, each) else {
            continue;
        };
        match out.len() < SAMPLE_NAMED {
            true => out.push(("input.format", format!("{}: {w}", path.display()))),
            false => more += 1,
        }
    }
    if more > 0 {
        let m = format!(
            "{more} more files whose last lines could mostly not be used (only the first \
             {SAMPLE_NAMED} are named)"
        );
        out.push(("input.format", m));
    }
    if sampled < by_age.len() {
        let m = format!(
            "only the newest {sampled} of {} log files were sampled (within {} s); the others \
             were not checked",
            by_age.len(),
            time.as_secs()
        );
        out.push(("input.paths", m));
    }
    out
}

/// Whether a file can be made in `dir` (created first when `create`): what watch will do there.
fn writable(dir: &Path, create: bool) -> Result<(), String> {
    if create {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let probe = dir.join(format!(".floodwatch-check-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| format!("{}: cannot write there: {e}", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Whether `program` names an executable file (by path, or found on `PATH` as exec finds it).
fn runnable(program: &str) -> Result<(), String> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return match executable(Path::new(program)) {
            true => Ok(()),
            false => Err(format!("{program}: not an executable file")),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        true => Ok(()),
        false => Err(format!("{program}: not found on PATH")),
    }
}

/// The unusable-lines warning for the last `bytes` of `path`, if they call for one.
fn sample(path: &Path, format: &Format, bytes: u64) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(bytes);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.take(bytes).read_to_end(&mut tail).ok()?;
    // The first line is cut unless the sample starts the file.
    let skip = match start {
        0 => 0,
        _ => memchr::memchr(b'\n', &tail).map_or(tail.len(), |i| i + 1),
    };
    let (mut stats, mut samples) = (IngestStats::default(), Samples::default());
    let mut times = TimeCache::default();
    for line in tail[skip..]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        stats.lines += 1;
        match format.parse(line, &mut times) {
            Err(kind) => {
                stats.malformed.count(kind);
                samples.malformed(kind, line);
            }
            Ok(rec) if crate::addr::Addr::parse(rec.client).is_none() => {
                stats.no_client += 1;
                samples.no_client(line, rec.client);
            }
            Ok(_) => {}
        }
    }
    unusable::warning(&stats, &samples)
}

/// Checks what a config implies beyond its own syntax: the format compiles, the rules compile,
/// the proxy ranges load and the format logs the proxy's client field; then what watch would
/// meet at start or at its first ban ([`check`]), returned as findings.
pub fn check_config(config: &Config) -> Result<Vec<Finding>, Error> {
    let mut format = compile_format(config)?;
    proxy::setup(config, &mut format)?;
    compile_rules(config)?;
    let mut sinks = sink::parse_sinks(config)?;
    sink::mark_fleet_sinks(config, &mut sinks)?;
    Ok(check(config, &sinks, &format))
}

/// The trusted proxy ranges a config expands to, for `check-config` (empty without proxies).
pub fn describe_proxies(config: &Config) -> Result<String, Error> {
    let proxies = Proxies::from_config(config)?;
    Ok(proxies.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_or_by_their_path() {
        assert!(runnable("sh").is_ok());
        assert!(runnable("/bin/sh").is_ok());
        assert!(runnable("floodwatch-no-such-program")
            .unwrap_err()
            .contains("not found on PATH"));
        assert!(runnable("/nonexistent/nft").is_err());
    }

    #[test]
    fn every_file_is_sampled_and_each_unusable_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let good =
            "192.0.2.1 - - [07/Dec/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"a\"\n";
        let mut files = Vec::new();
        for i in 0..30 {
            let p = dir.path().join(format!("v{i}.log"));
            let text = match i {
                7 => "{\"remote_addr\":\"192.0.2.1\"}\n".repeat(40),
                _ => good.repeat(40),
            };
            fs::write(&p, text).unwrap();
            files.push(p);
        }
        let format = Format::from_spec("combined").unwrap();
        let found = sample_all(files.clone(), &format, std::time::Duration::from_secs(60));
        assert_eq!(found.len(), 1, "{found:?}");
        let (key, m) = &found[0];
        assert_eq!(*key, "input.format");
        assert!(
            m.starts_with(&format!("{}: 100 %", files[7].display())),
            "{m}"
        );
        assert!(m.contains("looks like a JSON log"), "{m}");
        // Out of time: said, not silently skipped.
        let found = sample_all(files, &format, std::time::Duration::ZERO);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.starts_with("only the newest 0 of 30 log files"),
            "{found:?}"
        );
    }

    #[test]
    fn folders_are_writable_or_said_not_to_be() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(&dir.path().join("state"), true).is_ok());
        assert!(writable(&dir.path().join("missing"), false).is_err());
    }
}
