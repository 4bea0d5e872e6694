//! Finding the running watch's control socket for `status`, `bans`, `ban` and `unban`: by
//! `--socket`, else through the config (`--config`, else the default one). The admin must reach
//! the watch even after a bad edit of that config: the watch runs on the config it last
//! loaded, so when the file no longer loads, its `[state]` (`dir`, `socket`) alone is read, as
//! leniently as it can be (from the TOML, or line by line when the TOML itself is broken), and
//! the error is said on stderr.

use std::path::{Path, PathBuf};

use crate::cli::{config_file, no_default_config, ReachArgs};
use crate::config::Config;
use crate::error::Error;

/// The control socket `a` names.
pub fn socket(a: &ReachArgs) -> Result<PathBuf, Error> {
    if let Some(s) = &a.socket {
        return Ok(s.clone());
    }
    let Some(path) = config_file(a.config.as_deref()) else {
        return Err(Error::Usage(format!(
            "{}: name the running watch's config with --config FILE, or its control socket \
             with --socket PATH",
            no_default_config()
        )));
    };
    if !path.exists() {
        return Err(Error::Usage(format!(
            "{}: no such config; name the running watch's with --config, or its control socket \
             with --socket",
            path.display()
        )));
    }
    let state = match Config::load(&path) {
        Ok(config) => (config.state.dir, config.state.socket),
        Err(e) => {
            let (dir, socket) = state_only(&path).map_err(|why| {
                Error::Usage(format!(
                    "{e}; and its [state] could not be read either ({why}): name the control \
                     socket with --socket"
                ))
            })?;
            log::warn!(
                "{e}; this config does not load, so only its [state] was read to find the \
                 running watch (which runs on the config it last loaded: `floodwatch status` \
                 says which)"
            );
            (dir, socket)
        }
    };
    match state {
        (_, Some(socket)) => Ok(socket),
        (Some(dir), None) => Ok(dir.join("control.sock")),
        (None, None) => Err(Error::Usage(format!(
            "{}: no [state] dir or socket, so a watch running with it takes no commands",
            path.display()
        ))),
    }
}

/// `[state] dir` and `socket` of the config file at `path`, read leniently.
fn state_only(path: &Path) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let text = crate::small_file::read_to_string(path, 1 << 20)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(state_of(&text))
}

/// `[state] dir` and `socket` of config text: from its TOML when that parses, else from the
/// lines of its `[state]` table that parse on their own. Empty or mistyped values are none.
fn state_of(text: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let path = |v: Option<&toml::Value>| {
        v.and_then(toml::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Ok(table) = text.parse::<toml::Table>() {
        let state = table.get("state").and_then(toml::Value::as_table);
        return (
            path(state.and_then(|s| s.get("dir"))),
            path(state.and_then(|s| s.get("socket"))),
        );
    }
    let (mut dir, mut socket) = (None, None);
    let mut in_state = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            let header = line.split('#').next().unwrap_or("").trim();
            in_state = header.trim_start_matches('[').trim_end_matches(']').trim() == "state"
                && !header.starts_with("[[");
            continue;
        }
        if !in_state {
            continue;
        }
        let Ok(kv) = line.parse::<toml::Table>() else {
            continue;
        };
        if let Some(d) = path(kv.get("dir")) {
            dir = Some(d);
        }
        if let Some(s) = path(kv.get("socket")) {
            socket = Some(s);
        }
    }
    (dir, socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_from_broken_configs() {
        let p = |s: &str| Some(PathBuf::from(s));
        // Valid TOML with a wrong key elsewhere.
        let text = "[state]\ndir = \"/var/lib/fw\"\n\n[[rule]]\nname = 1\n";
        assert_eq!(state_of(text), (p("/var/lib/fw"), None));
        // Broken TOML: the lines of [state] that parse are taken.
        let text = "[input]\npaths = [\"/x\"\n\n[state] # where\ndir = '/var/lib/fw'\n\
                    socket = \"/run/fw.sock\"\noops = \n[metrics]\ndir = \"/not/this\"\n";
        assert_eq!(state_of(text), (p("/var/lib/fw"), p("/run/fw.sock")));
        assert_eq!(state_of("[[state]]\ndir = \"/x\"\n[\n"), (None, None));
        assert_eq!(state_of("garbage ["), (None, None));
        assert_eq!(state_of("[state]\ndir = \"\"\n"), (None, None));
    }
}
