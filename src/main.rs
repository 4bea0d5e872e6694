//! The `floodwatch` binary: parses arguments, runs the command, maps errors to exit codes
//! (0 ok, 1 runtime error, 2 usage or config error). A closed stdout (`| head`) is success.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use floodwatch::app;
use floodwatch::cli::{Cli, Command};
use floodwatch::config::{Config, Overrides};
use floodwatch::error::Error;
use floodwatch::preflight::Severity;
use floodwatch::summary;

fn main() -> ExitCode {
    let cli = Cli::parse();
    floodwatch::logging::init(cli.log_level.into());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Replay(a) => {
            let config = chosen_config(a.config.as_deref());
            let overrides = Overrides {
                format: a.format,
                rate: a.rate,
                burst: a.burst,
                ban: a.ban,
            };
            // Only watch acts unless asked: the configured sinks are those of production.
            let use_sinks = a.sinks || a.dry_run;
            let plan = app::plan_replay(
                config.as_deref(),
                &overrides,
                &a.paths,
                a.shards,
                a.producers,
                use_sinks,
            )?;
            let plan = match a.dry_run {
                true => plan.dry_run(),
                false => plan,
            };
            let _lock = match a.sinks {
                true => plan.claim_sinks()?,
                false => None,
            };
            if a.sinks && plan.sinks.is_empty() {
                log::warn!("--sinks: the config has no [[sink]]; the events go to stdout");
            }
            let progress = !a.no_progress && std::io::stderr().is_terminal();
            // Stdout, not its lock: the decider thread writes the events.
            let mut stdout = std::io::stdout();
            let report = app::replay(plan, &mut stdout, progress)?;
            eprint!("{}", summary::text(&report));
            if a.summary {
                writeln!(stdout, "{}", summary::json(&report))
                    .and_then(|()| stdout.flush())
                    .map_err(write_error)?;
            }
            Ok(())
        }
        Command::Generate(a) => floodwatch::lab::cmd::generate(&a),
        Command::Analyze(mut a) => {
            a.config = chosen_config(a.config.as_deref());
            floodwatch::lab::cmd::analyze(a)
        }
        Command::Bench(a) => floodwatch::lab::cmd::bench(&a),
        Command::Watch(a) => {
            // Absolute: `status` shows it, and a SIGHUP reads it, wherever they run from.
            let file =
                chosen_config(a.config.as_deref()).map(|p| std::path::absolute(&p).unwrap_or(p));
            let plan = floodwatch::watch::plan(file.as_deref(), &a.paths)?;
            let report = floodwatch::watch::run(plan, &mut std::io::stdout())?;
            log::info!("{report}");
            Ok(())
        }
        Command::Bans(a) => floodwatch::control::cmd::bans(&a, &mut std::io::stdout()),
        Command::Ban(a) => floodwatch::control::cmd::ban(&a, &mut std::io::stdout()),
        Command::Unban(a) => floodwatch::control::cmd::unban(&a, &mut std::io::stdout()),
        Command::Status(a) => floodwatch::control::cmd::status(&a, &mut std::io::stdout()),
        Command::Completions(a) => {
            let mut stdout = std::io::stdout().lock();
            floodwatch::docgen::completions(a.shell, &mut stdout);
            stdout.flush().map_err(write_error)
        }
        Command::Man(a) => match &a.dir {
            Some(dir) => {
                let written = floodwatch::docgen::man_pages(dir)
                    .map_err(|e| Error::Runtime(format!("{}: {e}", dir.display())))?;
                log::info!("{} man pages in {}", written.len(), dir.display());
                Ok(())
            }
            None => floodwatch::docgen::man(&mut std::io::stdout().lock()).map_err(write_error),
        },
        Command::Test(a) => {
            let mut config = match chosen_config(a.config.as_deref()).as_deref() {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            config.apply(&Overrides {
                format: a.format,
                ..Overrides::default()
            })?;
            let mut stdout = std::io::stdout().lock();
            let tested = floodwatch::linetest::run(&config, &a.source, &mut stdout)?;
            let names: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
            eprint!("{}", floodwatch::linetest::summary(&tested, &names));
            Ok(())
        }
        Command::CheckConfig(a) => {
            let file = chosen_config(a.config.as_deref());
            let config = match file.as_deref() {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let findings = floodwatch::preflight::check_config(&config)?;
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let mut stdout = std::io::stdout().lock();
            if a.json {
                let json = serde_json::json!({"ok": errors == 0, "findings": findings});
                writeln!(stdout, "{json}").map_err(write_error)?;
            } else {
                let text = config.describe() + &floodwatch::preflight::describe_proxies(&config)?;
                stdout.write_all(text.as_bytes()).map_err(write_error)?;
                for f in &findings {
                    match f.severity {
                        Severity::Error => {
                            log::error!("{}: {}: {}", config.origin, f.key, f.message)
                        }
                        Severity::Warning => {
                            log::warn!("{}: {}: {}", config.origin, f.key, f.message)
                        }
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
    }
}

/// The config a command uses (`--config`, else the default file where it exists, else the
/// built-in defaults), said on stderr so that a run is never read with the wrong rules in mind.
fn chosen_config(given: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let file = floodwatch::cli::config_file(given);
    log::info!("{}", floodwatch::cli::config_said(file.as_deref()));
    file
}

fn write_error(e: std::io::Error) -> Error {
    Error::writing("to stdout", e)
}
