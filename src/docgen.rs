//! Shell completions and man pages, generated from the same clap definitions as `--help`
//! (`floodwatch completions SHELL`, `floodwatch man`), so they cannot drift from the program.
//! The packages ship what these write (see `packaging/build.sh`).

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "floodwatch", out);
}

/// Writes the top-level man page, `floodwatch(1)`.
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Writes `floodwatch.1` and one `floodwatch-<command>.1` per command into `dir` (created);
/// returns the files written.
pub fn man_pages(dir: &Path) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    let mut write = |name: String, page: clap_mangen::Man| -> io::Result<()> {
        let mut buf = Vec::new();
        page.render(&mut buf)?;
        std::fs::write(dir.join(&name), buf)?;
        written.push(name);
        Ok(())
    };
    write("floodwatch.1".into(), clap_mangen::Man::new(cmd.clone()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("floodwatch-{}", sub.get_name());
        // The page's title is its file's name, as `man floodwatch-watch` looks it up.
        let page = clap_mangen::Man::new(sub.clone().name(name.clone()));
        write(format!("{name}.1"), page)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for cmd in ["replay", "watch", "unban", "check-config"] {
                assert!(text.contains(cmd), "{shell:?} lacks {cmd}");
            }
        }
    }

    #[test]
    fn man_pages_cover_every_command_with_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(dir.path()).unwrap();
        assert!(written.contains(&"floodwatch.1".to_string()));
        assert!(written.contains(&"floodwatch-watch.1".to_string()));
        assert!(!written.iter().any(|w| w.contains("help")));
        let ban = std::fs::read_to_string(dir.path().join("floodwatch-ban.1")).unwrap();
        assert!(ban.starts_with(".ie"), "roff: {}", &ban[..40]);
        assert!(
            ban.contains("floodwatch\\-ban") && ban.contains("\\-\\-for"),
            "{ban}"
        );
        let mut top = Vec::new();
        man(&mut top).unwrap();
        assert!(String::from_utf8(top).unwrap().contains("unban"));
    }
}
