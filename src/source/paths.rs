//! Turns the command line's `PATH|GLOB...` into the list of log files to read, each with the vhost
//! its path names.
//!
//! Globs are expanded here rather than by the shell so that quoted globs work and so that the part
//! of the path a wildcard matched is known: on Plesk, `/var/www/vhosts/*/logs/access_log` matches
//! one folder per domain, and that folder's name is the vhost.

use std::path::{Path, PathBuf};

/// A log file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// The vhost named by the path, when it names one.
    pub vhost: Option<String>,
}

/// Why the paths could not be resolved; names the argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathsError {
    #[error("{0}: invalid glob pattern: {1}")]
    Pattern(String, String),
    #[error("{0}: no such file")]
    Missing(String),
    #[error("{0}: no file matches this pattern")]
    NoMatch(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands every argument: literal paths must exist, globs must match at least one regular file.
/// The result is sorted and free of duplicates so that runs are repeatable.
pub fn expand(args: &[String]) -> Result<Vec<LogFile>, PathsError> {
    let mut out = Vec::new();
    for arg in args {
        if is_glob(arg) {
            let before = out.len();
            let opts = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            };
            let paths = glob::glob_with(arg, opts)
                .map_err(|e| PathsError::Pattern(arg.clone(), e.to_string()))?;
            for entry in paths {
                let path = entry.map_err(|e| {
                    let p = e.path().display().to_string();
                    PathsError::Io(p, e.into())
                })?;
                if path.is_file() {
                    let vhost = vhost_from_glob(arg, &path).or_else(|| vhost_from_path(&path));
                    out.push(LogFile { path, vhost });
                }
            }
            if out.len() == before {
                return Err(PathsError::NoMatch(arg.clone()));
            }
        } else {
            let path = PathBuf::from(arg);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(PathsError::Io(
                        arg.clone(),
                        std::io::Error::other("not a regular file"),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PathsError::Missing(arg.clone()))
                }
                Err(e) => return Err(PathsError::Io(arg.clone(), e)),
            }
            let vhost = vhost_from_path(&path);
            out.push(LogFile { path, vhost });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// The text the pattern's first wildcard matched in `path`: the whole path component, less the
/// literal text around the wildcards in that component (`domlogs/*-ssl_log` → `example.com`).
pub fn vhost_from_glob(pattern: &str, path: &Path) -> Option<String> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let idx = pat.iter().position(|c| is_glob(c))?;
    if pat[idx].contains("**") {
        return None;
    }
    let text = path.to_str()?;
    let comps: Vec<&str> = text.split('/').collect();
    if comps.len() != pat.len() {
        return None;
    }
    let pc = pat[idx];
    let matched = comps[idx];
    let first = pc.find(['*', '?', '['])?;
    let last = pc.rfind(['*', '?', ']'])?;
    let (prefix, suffix) = (&pc[..first], &pc[last + 1..]);
    let inner = matched.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The vhost of a literal path that follows a hosting panel's layout: Plesk's
/// `.../vhosts/<vhost>/logs/...`.
pub fn vhost_from_path(path: &Path) -> Option<String> {
    let comps: Vec<&str> = path.to_str()?.split('/').collect();
    comps
        .windows(3)
        .rev()
        .find(|w| w[0] == "vhosts" && w[2] == "logs" && !w[1].is_empty())
        .map(|w| w[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_names_the_vhost_its_wildcard_matched() {
        let p = Path::new("/var/www/vhosts/example.com/logs/access_ssl_log");
        assert_eq!(
            vhost_from_glob("/var/www/vhosts/*/logs/access_ssl_log", p).as_deref(),
            Some("example.com")
        );
        let p = Path::new("/usr/local/apache/domlogs/shop.example-ssl_log");
        assert_eq!(
            vhost_from_glob("/usr/local/apache/domlogs/*-ssl_log", p).as_deref(),
            Some("shop.example")
        );
        let p = Path::new("/logs/a.log");
        assert_eq!(vhost_from_glob("/logs/**/a.log", p), None);
    }

    #[test]
    fn plesk_layout_names_the_vhost_of_a_literal_path() {
        let p = Path::new("/var/www/vhosts/example.com/logs/access_log");
        assert_eq!(vhost_from_path(p).as_deref(), Some("example.com"));
        assert_eq!(
            vhost_from_path(Path::new("/var/log/nginx/access.log")),
            None
        );
    }

    #[test]
    fn expands_globs_sorted_and_reports_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        for host in ["b.example", "a.example"] {
            let logs = dir.path().join("vhosts").join(host).join("logs");
            std::fs::create_dir_all(&logs).unwrap();
            std::fs::write(logs.join("access_log"), "").unwrap();
        }
        let pattern = format!("{}/vhosts/*/logs/access_log", dir.path().display());
        let files = expand(std::slice::from_ref(&pattern)).unwrap();
        let hosts: Vec<_> = files.iter().map(|f| f.vhost.clone().unwrap()).collect();
        assert_eq!(hosts, ["a.example", "b.example"]);
        // The same file named twice is read once.
        let twice = expand(&[pattern.clone(), pattern]).unwrap();
        assert_eq!(twice.len(), 2);

        let missing = format!("{}/nope", dir.path().display());
        assert!(matches!(expand(&[missing]), Err(PathsError::Missing(_))));
        let nomatch = format!("{}/vhosts/*/logs/error_log", dir.path().display());
        assert!(matches!(expand(&[nomatch]), Err(PathsError::NoMatch(_))));
    }
}
