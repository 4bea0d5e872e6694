//! The `floodwatch` binary: parses arguments, runs the command, maps errors to exit codes
//! (0 ok, 1 runtime error, 2 usage or config error). A closed stdout (`| head`) is success.

use std::process::ExitCode;

use clap::Parser;
use floodwatch::cli::{chosen_config, Cli, Command};
use floodwatch::error::Error;
use floodwatch::{check, control, docgen, lab, replay, watch};

fn main() -> ExitCode {
    let cli = Cli::parse();
    floodwatch::logging::init(cli.log_level.into());
    match run(cli.command) {
        Ok(()) | Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// One function per command, each in its front-end's `cmd` module.
fn run(command: Command) -> Result<(), Error> {
    let mut stdout = std::io::stdout();
    match command {
        Command::Replay(a) => replay::cmd::replay(&a),
        Command::Watch(a) => watch::cmd::watch(&a),
        Command::CheckConfig(a) => check::cmd::check_config(&a),
        Command::Test(a) => check::cmd::test(&a),
        Command::Generate(a) => lab::cmd::generate(&a),
        Command::Analyze(mut a) => {
            a.config = chosen_config(a.config.as_deref());
            lab::cmd::analyze(a)
        }
        Command::Report(mut a) => {
            a.config = chosen_config(a.config.as_deref());
            lab::cmd::report(a)
        }
        Command::Bench(a) => lab::cmd::bench(&a),
        Command::Bans(a) => control::cmd::bans(&a, &mut stdout),
        Command::Ban(a) => control::cmd::ban(&a, &mut stdout),
        Command::Unban(a) => control::cmd::unban(&a, &mut stdout),
        Command::Status(a) => control::cmd::status(&a, &mut stdout),
        Command::Top(a) => control::cmd::top(&a, &mut stdout),
        Command::Completions(a) => docgen::completions_cmd(&a),
        Command::Man(a) => docgen::man_cmd(&a),
    }
}
