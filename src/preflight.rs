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
//! publishes once it can), a Cloudflare API that cannot be reached now (likewise), the newest log of the paths whose last lines could mostly not be
//! used (the sample line and likely cause, as replay would say), and an nginx file that nginx's
//! config may not be ready for (a geo map not created yet, a file in the other style).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::parse::{Format, TimeCache};
use crate::sink::{SinkKind, SinkSpec};
use crate::source::ingest::IngestStats;
use crate::source::unusable::{self, Samples};
use crate::watch::Patterns;

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

/// How much of the newest log's end is sampled.
const SAMPLE_BYTES: u64 = 64 * 1024;

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
        let max = crate::watch::control::MAX_PATH;
        if socket.as_os_str().len() > max {
            let m = format!(
                "the control socket {} is longer than a Unix socket path may be ({max} bytes):                  set [state] socket to a shorter one",
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
                if let Err(m) = crate::sink::cloudflare::check_token(&c.token) {
                    error(&key("api_token_file"), m);
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
        if let Err(m) = crate::fleet::probe(fleet) {
            warning("fleet.url", m);
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
        let newest = patterns
            .files()
            .into_iter()
            .filter_map(|f| Some((fs::metadata(&f.path).ok()?.modified().ok()?, f.path)))
            .max();
        if let Some((_, path)) = newest {
            if let Some(w) = sample(&path, format) {
                warning("input.format", format!("{}: {w}", path.display()));
            }
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

/// The unusable-lines warning for the last lines of `path`, if they call for one.
fn sample(path: &PathBuf, format: &Format) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(SAMPLE_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.take(SAMPLE_BYTES).read_to_end(&mut tail).ok()?;
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
    fn folders_are_writable_or_said_not_to_be() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(&dir.path().join("state"), true).is_ok());
        assert!(writable(&dir.path().join("missing"), false).is_err());
    }
}
