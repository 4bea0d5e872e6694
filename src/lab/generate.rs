//! `floodwatch generate`: writes a scenario as a vhost tree of combined logs
//! (`DIR/vhosts/<vhost>/logs/access_log`), the config it was made for (`DIR/floodwatch.toml`)
//! and its truth (`DIR/truth.json`): the keys that config must ban, and notable ones it must not.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scenario::{self, Frame, Traffic};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("unknown scenario {0:?} (see `floodwatch generate --list`)")]
    UnknownScenario(String),
    #[error("--seconds must be at least {min} (attacks need time to overflow), got {got}")]
    TooShort { min: u32, got: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `DIR/truth.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    pub scenario: String,
    pub seconds: u32,
    pub seed: u64,
    /// The `default` rule's thresholds (other rules are in `config`).
    pub rate: String,
    pub burst: u32,
    /// Rule names of the config, in order.
    pub rules: Vec<String>,
    /// The config file the truth holds for, relative to `DIR`.
    pub config: String,
    /// The truth needs `[proxy]` (trusted Cloudflare, real-IP field) to be applied by the pipeline.
    pub needs_proxy: bool,
    /// Keys (as in ban events) that must be banned, sorted.
    pub banned: Vec<String>,
    /// Keys that must not be banned (the rest of the background must not be either).
    pub not_banned: Vec<String>,
    pub lines: u64,
    pub vhosts: Vec<String>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Generated {
    pub truth: Truth,
    pub bytes: u64,
    /// `DIR/vhosts/*/logs/access_log`, to hand to replay.
    pub glob: String,
    pub config_path: PathBuf,
}

/// Writes scenario `name` into `out` (created if missing; existing files of the same names are
/// replaced).
pub fn generate(
    name: &str,
    seconds: u32,
    seed: u64,
    out: &Path,
) -> Result<Generated, GenerateError> {
    if seconds < scenario::MIN_SECONDS {
        return Err(GenerateError::TooShort {
            min: scenario::MIN_SECONDS,
            got: seconds,
        });
    }
    let frame = Frame { seconds, seed };
    let tr = scenario::build(name, frame)
        .ok_or_else(|| GenerateError::UnknownScenario(name.to_string()))?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    let mut bytes = 0u64;
    for (i, vhost) in tr.vhosts.iter().enumerate() {
        let dir = out.join("vhosts").join(vhost).join("logs");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("access_log");
        let file = fs::File::create(&path).map_err(io_err(&path))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        for r in tr.reqs.iter().filter(|r| r.vhost == i) {
            w.write_all(r.line.as_bytes())
                .and_then(|()| w.write_all(b"\n"))
                .map_err(io_err(&path))?;
            bytes += r.line.len() as u64 + 1;
        }
        w.flush().map_err(io_err(&path))?;
    }
    let glob = out.join("vhosts/*/logs/access_log").display().to_string();
    let config_path = out.join("floodwatch.toml");
    fs::write(&config_path, config_toml(&tr, &glob)).map_err(io_err(&config_path))?;
    let truth = Truth {
        scenario: name.to_string(),
        seconds,
        seed,
        rate: "20r/s".into(),
        burst: 100,
        rules: tr.rules.iter().map(|r| r.name.to_string()).collect(),
        config: "floodwatch.toml".into(),
        needs_proxy: tr.needs_proxy,
        banned: tr.banned.iter().cloned().collect(),
        not_banned: tr.not_banned.iter().cloned().collect(),
        lines: tr.reqs.len() as u64,
        vhosts: tr.vhosts.clone(),
    };
    let truth_path = out.join("truth.json");
    let mut text = serde_json::to_string_pretty(&truth).unwrap_or_default();
    text.push('\n');
    fs::write(&truth_path, text).map_err(io_err(&truth_path))?;
    Ok(Generated {
        truth,
        bytes,
        glob,
        config_path,
    })
}

/// Reads `DIR/truth.json` back.
pub fn read_truth(dir: &Path) -> Result<Truth, GenerateError> {
    let path = dir.join("truth.json");
    let text = fs::read_to_string(&path).map_err(|source| GenerateError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| GenerateError::Io {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// The config the truth holds for: the scenario's rules, its format, the generated paths.
fn config_toml(tr: &Traffic, glob: &str) -> String {
    let mut s = String::from(
        "# Written by `floodwatch generate`: the config this scenario's truth holds for.\n",
    );
    let _ = writeln!(s, "[input]");
    let _ = writeln!(s, "paths = [{}]", toml_str(glob));
    let _ = writeln!(s, "format = {}", toml_str(tr.format.unwrap_or("combined")));
    for r in &tr.rules {
        let _ = write!(s, "\n[[rule]]\n{}", r.body);
    }
    if tr.needs_proxy {
        let _ = write!(
            s,
            "\n[proxy]\ntrusted = [\"cloudflare\"]\nclient_ip_field = \"http_cf_connecting_ip\"\n"
        );
    }
    s
}

/// A TOML basic string (serialising a bare string through `toml` needs a table around it).
fn toml_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn writes_the_tree_truth_and_a_config_that_loads() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate("mixed", 30, 3, dir.path()).unwrap();
        for v in ["example.com", "shop.example.org", "blog.example.net"] {
            assert!(dir
                .path()
                .join("vhosts")
                .join(v)
                .join("logs/access_log")
                .is_file());
        }
        let config = Config::load(&g.config_path).unwrap();
        let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["default", "wp-login", "subnet-24"]);
        assert_eq!(config.input.paths, vec![g.glob.clone()]);
        assert_eq!(read_truth(dir.path()).unwrap(), g.truth);
        assert!(g.truth.banned.contains(&"203.0.113.0/24".to_string()));
    }

    #[test]
    fn cloudflare_config_loads_with_its_format_and_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate("cloudflare", 20, 3, dir.path()).unwrap();
        let config = Config::load(&g.config_path).unwrap();
        assert_eq!(
            config.proxy.client_ip_field.as_deref(),
            Some("http_cf_connecting_ip")
        );
        crate::check::preflight::check_config(&config).unwrap();
        assert!(g.truth.needs_proxy);
    }

    #[test]
    fn same_seed_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate("get-flood", 20, 11, a.path()).unwrap();
        generate("get-flood", 20, 11, b.path()).unwrap();
        let log = "vhosts/example.com/logs/access_log";
        assert_eq!(
            fs::read(a.path().join(log)).unwrap(),
            fs::read(b.path().join(log)).unwrap()
        );
    }

    #[test]
    fn refuses_short_logs_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            generate("mixed", 5, 1, dir.path()),
            Err(GenerateError::TooShort { .. })
        ));
        assert!(matches!(
            generate("nope", 60, 1, dir.path()),
            Err(GenerateError::UnknownScenario(_))
        ));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
