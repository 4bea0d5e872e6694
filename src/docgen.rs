//! Shell completions and man pages, generated from the same clap definitions as `--help`
//! (`floodwatch completions SHELL`, `floodwatch man`), so they cannot drift from the program.
//! The packages ship what these write (see `packaging/build.sh`).

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::Error;

/// `floodwatch completions`.
pub fn completions_cmd(a: &CompletionsArgs) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    completions(a.shell, &mut stdout);
    stdout.flush().map_err(|e| Error::writing("to stdout", e))
}

/// `floodwatch man`: the pages on stdout, or written to `--dir`.
pub fn man_cmd(a: &ManArgs) -> Result<(), Error> {
    match &a.dir {
        Some(dir) => {
            let written = man_pages(dir).map_err(Error::file(dir))?;
            log::info!("{} man pages in {}", written.len(), dir.display());
            Ok(())
        }
        None => man(&mut std::io::stdout().lock()).map_err(|e| Error::writing("to stdout", e)),
    }
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "floodwatch", out);
}

/// The command tree the man pages describe: without clap's `help` command, which has no page
/// of its own (`floodwatch help COMMAND` still works; the pages are `floodwatch-COMMAND(1)`).
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes the top-level man page, `floodwatch(1)`: clap's sections, then what `--help` cannot
/// say (files, signals, exit status).
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    let page = clap_mangen::Man::new(command());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    page.render_subcommands_section(out)?;
    out.write_all(MAIN_SECTIONS.as_bytes())?;
    page.render_version_section(out)
}

/// FILES, SIGNALS, EXIT STATUS and SEE ALSO of `floodwatch(1)`, in roff.
const MAIN_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/floodwatch/floodwatch.toml\fR
The configuration, described key by key in \fBfloodwatch.toml\fR(5), used by every command
where it exists (else the built-in defaults); \fB\-\-config\fR names another. Each command that
reads it says which on standard error. \fBfloodwatch check\-config\fR validates it.
.TP
\fI/var/lib/floodwatch/\fR
The \fB[state] dir\fR of the shipped configuration, kept by \fBwatch\fR:
\fIcheckpoints.json\fR (read offsets), \fIbans.journal\fR (active bans), \fIpending.json\fR
(events a sink has not taken yet), \fIfleet.json\fR (with \fB[fleet]\fR), \fIcontrol.sock\fR
(the socket \fBbans\fR, \fBban\fR, \fBunban\fR and \fBstatus\fR talk to, unless
\fB[state] socket\fR names another) and \fIwatch.lock\fR, locked by the running \fBwatch\fR
(and by \fBreplay \-\-sinks\fR while it runs) so that no second one acts on the same
folder; a lock file left by a crash blocks nobody.
.SH ENVIRONMENT
.TP
\fBFLOODWATCH_CONFIG\fR
The configuration used without \fB\-\-config\fR, instead of
\fI/etc/floodwatch/floodwatch.toml\fR (where it exists, likewise); set and empty, none: the
built-in defaults.
.SH SIGNALS
\fBwatch\fR handles these; the other commands end on them as any program does.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop: read what the logs hold up to now, decide it, save the state, deliver or keep what the
sinks were given, then exit 0.
.TP
\fBSIGHUP\fR
Read the configuration again and apply it (format, proxies, rules, allowlist, paths, sinks);
\fB[state] dir\fR, \fB[engine]\fR, \fB[metrics] listen\fR and \fB[fleet]\fR take a restart. A
configuration that does not load in full is refused, said in the log, and the running one kept.
.SH "EXIT STATUS"
.TP
\fB0\fR
Success, also when the reader of standard output went away (\fB| head\fR).
.TP
\fB1\fR
A failure while running: a log or state file that cannot be read or written, a sink that failed
to deliver some events, a second \fBwatch\fR (or \fBreplay \-\-sinks\fR) on a state folder in
use, a running watch that cannot be reached.
.TP
\fB2\fR
Bad arguments or configuration, each error naming its key and file; \fBcheck\-config\fR also
when it finds a problem that would stop \fBwatch\fR or fail every ban of a sink.
.SH "SEE ALSO"
\fBfloodwatch.toml\fR(5), and one page per command: \fBfloodwatch\-watch\fR(1),
\fBfloodwatch\-replay\fR(1), \fBfloodwatch\-status\fR(1) and the others listed under
COMMANDS.
"#;

/// Writes `floodwatch.1`, one `floodwatch-<command>.1` per command and `floodwatch.toml.5` into
/// `dir` (created); returns the files written.
pub fn man_pages(dir: &Path) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let cmd = command();
    let mut written = Vec::new();
    let mut write = |name: String, render: &dyn Fn(&mut dyn Write) -> io::Result<()>| {
        let mut buf = Vec::new();
        render(&mut buf)?;
        std::fs::write(dir.join(&name), buf)?;
        written.push(name);
        io::Result::Ok(())
    };
    write("floodwatch.1".into(), &|out| man(out))?;
    for sub in cmd.get_subcommands() {
        let name = format!("floodwatch-{}", sub.get_name());
        // The page's title is its file's name, as `man floodwatch-watch` looks it up.
        let page = clap_mangen::Man::new(sub.clone().name(name.clone()));
        write(format!("{name}.1"), &|out| {
            page.render(out)?;
            out.write_all(SUB_SEE_ALSO.as_bytes())
        })?;
    }
    write("floodwatch.toml.5".into(), &|out| config_man(out))?;
    Ok(written)
}

const SUB_SEE_ALSO: &str = ".SH \"SEE ALSO\"\n\\fBfloodwatch\\fR(1), \\fBfloodwatch.toml\\fR(5)\n";

/// Text for roff: backslashes and hyphens escaped, `code` in bold, and no line starting with a
/// control character.
fn roff(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 16);
    let mut bold = false;
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            '`' => {
                s.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            c => s.push(c),
        }
    }
    if bold {
        s.push_str("\\fR");
    }
    if s.starts_with(['.', '\'']) {
        s.insert_str(0, "\\&");
    }
    s
}

/// Writes `floodwatch.toml(5)`: every key of every section (see [`crate::config::keys`]), its
/// type, default and an example.
pub fn config_man(out: &mut dyn Write) -> io::Result<()> {
    use crate::config::keys::{header, SECTIONS};
    let version = env!("CARGO_PKG_VERSION");
    let mut s = format!(".TH floodwatch.toml 5 \"\" \"floodwatch {version}\"\n");
    s.push_str(CONFIG_INTRO);
    let mut last_table = "";
    for sec in SECTIONS {
        let title = match sec.sink_type {
            Some(t) => format!("{} type = \"{t}\"", header(sec)),
            None => header(sec),
        };
        if sec.table != last_table || sec.sink_type.is_some() {
            s.push_str(&format!(".SS \"{}\"\n", roff(&title).replace('"', "\\(dq")));
        }
        last_table = sec.table;
        s.push_str(&format!("{}\n", roff(sec.about)));
        if !sec.base.is_empty() {
            // The smallest table of this kind that checks.
            s.push_str(".PP\nAt least:\n.PP\n.nf\n\\f(CW");
            s.push_str(&roff(&header(sec)));
            for (name, value) in sec.base {
                s.push_str(&format!("\n{} = {}", roff(name), roff(value)));
            }
            s.push_str("\\fR\n.fi\n");
        }
        for k in sec.keys {
            s.push_str(&format!(
                ".TP\n\\fB{}\\fR (\\fI{}\\fR)\n",
                roff(k.name),
                roff(k.kind)
            ));
            s.push_str(&format!("{}\n.br\n", roff(k.about)));
            s.push_str(&format!("Default: {}.\n.br\n", roff(k.default)));
            s.push_str(&format!(
                "Example: \\f(CW{} = {}\\fR\n",
                roff(k.name),
                roff(k.example)
            ));
        }
    }
    s.push_str(CONFIG_END);
    out.write_all(s.as_bytes())
}

const CONFIG_INTRO: &str = r#".SH NAME
floodwatch.toml \- the configuration of floodwatch
.SH SYNOPSIS
\fI/etc/floodwatch/floodwatch.toml\fR
.SH DESCRIPTION
A TOML file. Every key is optional unless said otherwise; without a file, or for a key left
out, the defaults below hold. An unknown key, a value of the wrong type or a bad value is an
error naming the file and the key (exit status 2): \fBfloodwatch check\-config \-\-config
FILE\fR validates a file, prints what it understood and checks what \fBwatch\fR would meet at
start. A running \fBwatch\fR reads it again on \fBSIGHUP\fR (\fBsystemctl reload
floodwatch\fR).
.PP
A \fIduration\fR is a number and a unit: \fB90s\fR, \fB10m\fR, \fB1h\fR, \fB1d\fR, \fB1w\fR.
A \fIrate\fR is written as nginx's limit_req writes it: \fB20r/s\fR, \fB600r/m\fR,
\fB0.5r/s\fR.
.SH KEYS
"#;

const CONFIG_END: &str = r#".SH FILES
.TP
\fI/etc/floodwatch/floodwatch.toml\fR
The configuration the package installs, with its nginx and other sinks commented out.
.SH "SEE ALSO"
\fBfloodwatch\fR(1), \fBfloodwatch\-check\-config\fR(1), \fBfloodwatch\-watch\fR(1)
"#;

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
        let top = String::from_utf8(top).unwrap();
        assert!(top.contains("unban"));
        for section in [
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH SIGNALS",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(top.contains(section), "{section}");
        }
    }

    /// Every page another page points at (`name(N)`, in any font) is one `man --dir` writes.
    #[test]
    fn no_page_points_at_a_page_that_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(dir.path()).unwrap();
        assert!(written.contains(&"floodwatch.toml.5".to_string()));
        let mut refs = 0;
        for page in &written {
            let raw = std::fs::read_to_string(dir.path().join(page)).unwrap();
            let text = raw
                .replace("\\fB", "")
                .replace("\\fR", "")
                .replace("\\fI", "")
                .replace("\\-", "-");
            for (i, _) in text.match_indices('(') {
                let Some(section) = text[i + 1..].strip_prefix(|c: char| c.is_ascii_digit()) else {
                    continue;
                };
                if !section.starts_with(')') {
                    continue;
                }
                let start = text[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                    .map_or(0, |p| p + 1);
                let name = &text[start..i];
                if name.is_empty() {
                    continue;
                }
                let target = format!("{name}.{}", &text[i + 1..i + 2]);
                assert!(written.contains(&target), "{page} points at {target}");
                refs += 1;
            }
        }
        assert!(refs > written.len(), "{refs} references");
    }

    #[test]
    fn the_config_page_lists_every_key_with_its_type_default_and_example() {
        let mut out = Vec::new();
        config_man(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".TH floodwatch.toml 5"));
        for sec in crate::config::keys::SECTIONS {
            for k in sec.keys {
                let entry = format!(".TP\n\\fB{}\\fR (\\fI{}\\fR)\n", roff(k.name), roff(k.kind));
                let at = text.find(&entry).unwrap_or_else(|| panic!("{}", k.name));
                let body = &text[at..];
                assert!(
                    body.contains(&format!("Default: {}", roff(k.default))),
                    "{}",
                    k.name
                );
                assert!(body.contains(&format!(
                    "Example: \\f(CW{} = {}",
                    roff(k.name),
                    roff(k.example)
                )));
            }
        }
        assert!(
            text.contains(".SS \"[[sink]] type = \\(dqnginx\\(dq\""),
            "{text}"
        );
    }

    #[test]
    fn roff_escapes_hyphens_backslashes_and_leading_dots() {
        assert_eq!(roff("`a-b` \\ c"), "\\fBa\\-b\\fR \\e c");
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(roff("`open"), "\\fBopen\\fR");
    }
}
