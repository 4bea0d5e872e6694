//! The manual the package ships, through the binary: `man --dir` writes floodwatch.toml(5) beside
//! the command pages, the shipped config's every key (set or commented out) is described there,
//! and the shipped config points at it. And the manual in Markdown: every relative link of
//! README.md and docs/*.md leads to a file and a heading that exist.

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

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside fenced code), with GitHub's `-1`, `-2`...
/// for repeated ones.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if fenced || level == 0 || level > 6 || !line[level..].starts_with(' ') {
            continue;
        }
        let base = github_anchor(&line[level..]);
        let n = seen.iter().filter(|s| **s == base).count();
        seen.push(base.clone());
        out.push(if n == 0 { base } else { format!("{base}-{n}") });
    }
    out
}

/// The targets of a Markdown file's `[text](target)` links, outside fenced code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_at_a_file_and_heading_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    assert!(files.len() >= 6, "README.md and the docs: {files:?}");
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = file.strip_prefix(root).unwrap().display();
            assert!(dest.exists(), "{shown}: link to {target}: no such file");
            if !anchor.is_empty() {
                let dest_text = std::fs::read_to_string(&dest).unwrap();
                assert!(
                    anchors(&dest_text).iter().any(|a| a == anchor),
                    "{shown}: link to {target}: no such heading"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} links found");
}

#[test]
fn github_anchors_drop_punctuation_and_number_repeats() {
    assert_eq!(
        github_anchor(" Many small files (a Plesk server's vhost logs)"),
        "many-small-files-a-plesk-servers-vhost-logs"
    );
    assert_eq!(github_anchor(" Watch: write to ban"), "watch-write-to-ban");
    let text = "# A\n```toml\n# not a heading\n```\n## Time\n## Time\n#not\n";
    assert_eq!(anchors(text), ["a", "time", "time-1"]);
}
