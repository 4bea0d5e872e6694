//! The manual the package ships, through the binary: `man --dir` writes floodwatch.toml(5) beside
//! the command pages, the shipped config's every key (set or commented out) is described there,
//! and the shipped config points at it.

mod util;
use util::{floodwatch, ok};

use std::path::Path;

fn shipped_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/floodwatch.toml");
    std::fs::read_to_string(path).unwrap()
}

/// `(section, key)` of every `key = value` line of the shipped config, commented out or not;
/// the section is the table name of the last header seen (`sink` for `[[sink]]`).
fn shipped_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in shipped_config().lines() {
        let l = line.trim_start_matches('#').trim();
        let name = l.trim_matches(|c| c == '[' || c == ']');
        if l.starts_with('[') && !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()) {
            section = name.to_string();
            continue;
        }
        let Some((k, _)) = l.split_once(" = ").or_else(|| l.split_once('=')) else {
            continue;
        };
        let k = k.trim();
        // Before the first table: the header's prose (a fail2ban jail quoted).
        let prose = section.is_empty();
        if !prose && !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.push((section.clone(), k.to_string()));
        }
    }
    keys
}

#[test]
fn man_dir_writes_the_config_page_describing_every_key_the_shipped_config_uses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    ok(&floodwatch(&["--log-level", "warn", "man", "--dir", &d]));
    let page = std::fs::read_to_string(dir.path().join("floodwatch.toml.5")).unwrap();
    assert!(!dir.path().join("floodwatch-help.1").exists());
    let keys = shipped_keys();
    assert!(keys.len() > 20, "{keys:?}");
    for (section, key) in keys {
        // The key's entry under its section's heading.
        let heading = page
            .find(&format!(".SS \"[{section}]"))
            .or_else(|| page.find(&format!(".SS \"[[{section}]]")))
            .unwrap_or_else(|| panic!("no section {section}"));
        let entry = format!("\\fB{}\\fR (", key.replace('-', "\\-"));
        assert!(page[heading..].contains(&entry), "[{section}] {key}");
    }
    let shipped = shipped_config();
    assert!(shipped.contains("floodwatch.toml(5)"), "the shipped config");
}

#[test]
fn the_main_page_says_files_signals_and_exit_status() {
    let out = floodwatch(&["man"]);
    let page = String::from_utf8_lossy(&ok(&out).stdout).into_owned();
    for want in [
        ".SH FILES",
        "/etc/floodwatch/floodwatch.toml",
        "watch.lock",
        ".SH SIGNALS",
        "SIGHUP",
        ".SH \"EXIT STATUS\"",
        "\\fBfloodwatch.toml\\fR(5)",
    ] {
        assert!(page.contains(want), "{want}");
    }
    assert!(
        !page.contains("floodwatch\\-help"),
        "a page that is not shipped"
    );
}
