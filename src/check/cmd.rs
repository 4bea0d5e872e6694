//! `floodwatch check-config` and `floodwatch test` as the binary runs them.

use std::io::Write;

use super::linetest;
use super::preflight::{self, Severity};
use crate::cli::{chosen_config, CheckConfigArgs, TestArgs};
use crate::config::{Config, Overrides};
use crate::error::Error;

fn stdout_error(e: std::io::Error) -> Error {
    Error::writing("to stdout", e)
}

/// `floodwatch check-config`: the config described on stdout (or JSON), each finding logged;
/// a usage error when one of them would stop watch or fail every ban of a sink.
pub fn check_config(a: &CheckConfigArgs) -> Result<(), Error> {
    let file = chosen_config(a.config.as_deref());
    let config = match file.as_deref() {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let findings = preflight::check_config(&config)?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let json = serde_json::json!({"ok": errors == 0, "findings": findings});
        writeln!(stdout, "{json}").map_err(stdout_error)?;
    } else {
        let text = config.describe() + &preflight::describe_proxies(&config)?;
        stdout.write_all(text.as_bytes()).map_err(stdout_error)?;
        for f in &findings {
            match f.severity {
                Severity::Error => log::error!("{}: {}: {}", config.origin, f.key, f.message),
                Severity::Warning => log::warn!("{}: {}: {}", config.origin, f.key, f.message),
            }
        }
    }
    match errors {
        0 => Ok(()),
        n => Err(Error::Usage(format!(
            "{n} problem(s) that would stop watch or fail every ban of a sink"
        ))),
    }
}

/// `floodwatch test`: each line of the source with how it is read and counted.
pub fn test(a: &TestArgs) -> Result<(), Error> {
    let mut config = match chosen_config(a.config.as_deref()).as_deref() {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.apply(&Overrides {
        format: a.format.clone(),
        ..Overrides::default()
    })?;
    let mut stdout = std::io::stdout().lock();
    let tested = linetest::run(&config, &a.source, &mut stdout)?;
    let names: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
    eprint!("{}", linetest::summary(&tested, &names));
    Ok(())
}
