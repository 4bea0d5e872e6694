//! Diagnostics on stderr, filtered by `--log-level`: a `log` logger that writes
//! `floodwatch: [level: ]message` lines, with sd-daemon priority prefixes (`<4>`) when stderr is
//! the systemd journal so that `journalctl -p warning` sees floodwatch's levels.
//!
//! Events never go through here (they go to stdout or the sinks); only what an operator reads.
//! Messages of other crates (the HTTP client's) are shown from `warn` up, or all with `debug`.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Installs the logger; the first call wins (tests may call it more than once).
pub fn init(level: LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let logger = Box::leak(Box::new(Stderr { level, journal }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

struct Stderr {
    level: LevelFilter,
    journal: bool,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        let ours = m.target().starts_with("floodwatch");
        m.level() <= self.level && (ours || m.level() <= Level::Warn || self.level >= Level::Debug)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format_line(r.level(), r.args(), self.journal);
        // One write per line so lines of several threads never interleave; a closed stderr
        // is nothing to report.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn format_line(level: Level, msg: &std::fmt::Arguments<'_>, journal: bool) -> String {
    // sd-daemon(3) priorities: 3 err, 4 warning, 6 info, 7 debug.
    let (priority, word) = match level {
        Level::Error => ("<3>", "error: "),
        Level::Warn => ("<4>", "warning: "),
        Level::Info => ("<6>", ""),
        Level::Debug | Level::Trace => ("<7>", "debug: "),
    };
    let priority = if journal { priority } else { "" };
    format!("{priority}floodwatch: {word}{msg}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_level_and_the_journal_priority() {
        let l = |lvl, j| format_line(lvl, &format_args!("x {}", 1), j);
        assert_eq!(l(Level::Info, false), "floodwatch: x 1\n");
        assert_eq!(l(Level::Warn, false), "floodwatch: warning: x 1\n");
        assert_eq!(l(Level::Error, true), "<3>floodwatch: error: x 1\n");
        assert_eq!(l(Level::Debug, true), "<7>floodwatch: debug: x 1\n");
    }

    #[test]
    fn other_crates_are_quiet_below_warnings_unless_debugging() {
        let m = |target, level| Metadata::builder().target(target).level(level).build();
        let info = Stderr {
            level: LevelFilter::Info,
            journal: false,
        };
        assert!(info.enabled(&m("floodwatch::watch::run", Level::Info)));
        assert!(!info.enabled(&m("floodwatch::watch::run", Level::Debug)));
        assert!(!info.enabled(&m("ureq::unit", Level::Info)));
        assert!(info.enabled(&m("ureq::unit", Level::Warn)));
        let debug = Stderr {
            level: LevelFilter::Debug,
            journal: false,
        };
        assert!(debug.enabled(&m("ureq::unit", Level::Debug)));
        assert!(!debug.enabled(&m("ureq::unit", Level::Trace)));
    }
}
