//! Which files `watch` follows, and which folders it asks inotify about, from the `PATH|GLOB`
//! arguments; evaluated at start and again whenever a watched folder gains an entry.
//!
//! For `/var/www/vhosts/*/logs/access_log` the folders are `/var/www/vhosts` (a new vhost folder
//! appears there), every `/var/www/vhosts/*` (its `logs` folder appears there) and every
//! `/var/www/vhosts/*/logs` (the log appears and grows there). A literal path's folder is its
//! parent. Every file gets the vhost its glob's first wildcard matched, so `access_log` and
//! `access_ssl_log` of one vhost folder count as one vhost.

use std::path::{Path, PathBuf};

use crate::source::paths::{vhost_from_glob, vhost_from_path, LogFile};

/// A `PATH|GLOB` argument that is not a valid pattern.
#[derive(Debug, thiserror::Error)]
#[error("{arg}: invalid glob pattern: {message}")]
pub struct PatternError {
    pub arg: String,
    pub message: String,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

const OPTS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The checked arguments.
#[derive(Clone, Debug)]
pub struct Patterns {
    args: Vec<String>,
}

impl Patterns {
    /// Checks every glob once, so that later evaluations cannot fail on a pattern.
    pub fn new(args: &[String]) -> Result<Patterns, PatternError> {
        for a in args.iter().filter(|a| is_glob(a)) {
            glob::Pattern::new(a).map_err(|e| PatternError {
                arg: a.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Patterns {
            args: args.to_vec(),
        })
    }

    /// Whether an argument names `path` (as a literal path or by its glob), whether or not a
    /// file is there now.
    pub fn names(&self, path: &Path) -> bool {
        self.args.iter().any(|arg| match is_glob(arg) {
            true => glob::Pattern::new(arg).is_ok_and(|p| p.matches_path_with(path, OPTS)),
            false => Path::new(arg).components().eq(path.components()),
        })
    }

    /// The arguments that name no file now: a glob that matches none, a literal path with
    /// nothing there (both are followed once a file appears; watch says so rather than look
    /// like a quiet log).
    pub fn unmatched(&self) -> Vec<&str> {
        self.args
            .iter()
            .filter(|arg| match is_glob(arg) {
                true => !glob_all(arg).iter().any(|p| p.is_file()),
                false => !Path::new(arg).is_file(),
            })
            .map(String::as_str)
            .collect()
    }

    /// `path` as [`Patterns::files`] would give it if a file were there, if an argument names
    /// it.
    pub fn file(&self, path: &Path) -> Option<LogFile> {
        let arg = self.args.iter().find(|arg| match is_glob(arg) {
            true => glob::Pattern::new(arg).is_ok_and(|p| p.matches_path_with(path, OPTS)),
            false => Path::new(arg).components().eq(path.components()),
        })?;
        let vhost = match is_glob(arg) {
            true => vhost_from_glob(arg, path).or_else(|| vhost_from_path(path)),
            false => vhost_from_path(path),
        };
        Some(LogFile {
            path: path.to_path_buf(),
            vhost,
        })
    }

    /// The folders to watch: those that exist now, for every argument.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for arg in &self.args {
            if !is_glob(arg) {
                if let Some(parent) = parent_of(Path::new(arg)) {
                    out.push(existing(parent));
                }
                continue;
            }
            let comps: Vec<&str> = arg.split('/').collect();
            let Some(first) = comps.iter().position(|c| is_glob(c)) else {
                continue;
            };
            // Every prefix from the last literal folder to the files' folder.
            for k in first.max(1)..comps.len() {
                let prefix = comps[..k].join("/");
                let prefix = match prefix.as_str() {
                    "" if arg.starts_with('/') => "/".to_string(),
                    "" => ".".to_string(),
                    _ => prefix,
                };
                if is_glob(&prefix) {
                    out.extend(glob_all(&prefix).into_iter().filter(|p| p.is_dir()));
                } else {
                    // Not there yet (no `/var/www/vhosts` before the first domain): watch the
                    // nearest folder that is, to see it created.
                    out.push(existing(PathBuf::from(prefix)));
                }
            }
            if first == 0 {
                out.push(PathBuf::from(if arg.starts_with('/') { "/" } else { "." }));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The files the arguments name now: regular files matching a glob, and literal paths
    /// whether they exist or not (a missing one is read once it appears).
    pub fn files(&self) -> Vec<LogFile> {
        let mut out = Vec::new();
        for arg in &self.args {
            if !is_glob(arg) {
                let path = PathBuf::from(arg);
                let vhost = vhost_from_path(&path);
                out.push(LogFile { path, vhost });
                continue;
            }
            for path in glob_all(arg) {
                if path.is_file() {
                    let vhost = vhost_from_glob(arg, &path).or_else(|| vhost_from_path(&path));
                    out.push(LogFile { path, vhost });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        out
    }
}

/// Paths matching a pattern checked in [`Patterns::new`]; unreadable entries are skipped (a
/// vhost folder we may not list is not a reason to stop watching the others).
fn glob_all(pattern: &str) -> Vec<PathBuf> {
    match glob::glob_with(pattern, OPTS) {
        Ok(paths) => paths.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// `dir` if it is a folder, else its nearest ancestor that is.
fn existing(mut dir: PathBuf) -> PathBuf {
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => return PathBuf::from(if dir.is_absolute() { "/" } else { "." }),
        }
    }
    dir
}

fn parent_of(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_path_buf()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plesk() -> (tempfile::TempDir, String) {
        let root = tempfile::tempdir().unwrap();
        for v in ["a.example", "b.example"] {
            let logs = root.path().join("vhosts").join(v).join("logs");
            std::fs::create_dir_all(&logs).unwrap();
            std::fs::write(logs.join("access_log"), b"").unwrap();
            std::fs::write(logs.join("access_ssl_log"), b"").unwrap();
            std::fs::write(logs.join("error_log"), b"").unwrap();
        }
        let pat = format!("{}/vhosts/*/logs/access*_log", root.path().display());
        (root, pat)
    }

    #[test]
    fn arguments_naming_no_file_are_listed() {
        let (root, pat) = plesk();
        let nothing = format!("{}/vhosts/*/logs/proxy_access_log", root.path().display());
        let missing = format!("{}/missing.log", root.path().display());
        let present = format!("{}/vhosts/a.example/logs/access_log", root.path().display());
        let p = Patterns::new(&[pat, nothing.clone(), missing.clone(), present]).unwrap();
        assert_eq!(p.unmatched(), [nothing.as_str(), missing.as_str()]);
    }

    #[test]
    fn both_logs_of_a_vhost_folder_get_its_name() {
        let (_root, pat) = plesk();
        let files = Patterns::new(&[pat]).unwrap().files();
        let names: Vec<_> = files.iter().map(|f| f.vhost.as_deref().unwrap()).collect();
        assert_eq!(names, ["a.example", "a.example", "b.example", "b.example"]);
        assert!(files.iter().all(|f| !f.path.ends_with("error_log")));
    }

    #[test]
    fn every_folder_a_wildcard_walks_through_is_watched() {
        let (root, pat) = plesk();
        let dirs = Patterns::new(&[pat]).unwrap().dirs();
        let r = root.path();
        let want = [
            r.join("vhosts"),
            r.join("vhosts/a.example"),
            r.join("vhosts/a.example/logs"),
            r.join("vhosts/b.example"),
            r.join("vhosts/b.example/logs"),
        ];
        assert_eq!(dirs, want);
    }

    #[test]
    fn a_literal_path_is_followed_before_it_exists() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("access.log").display().to_string();
        let p = Patterns::new(std::slice::from_ref(&path)).unwrap();
        assert_eq!(p.files().len(), 1);
        assert_eq!(p.dirs(), [root.path().to_path_buf()]);
    }

    #[test]
    fn a_missing_first_folder_is_awaited_in_its_nearest_ancestor() {
        let root = tempfile::tempdir().unwrap();
        let pat = format!("{}/www/vhosts/*/logs/access_log", root.path().display());
        let p = Patterns::new(&[pat]).unwrap();
        assert_eq!(p.dirs(), [root.path().to_path_buf()]);
        std::fs::create_dir_all(root.path().join("www/vhosts/a/logs")).unwrap();
        assert_eq!(
            p.dirs(),
            [
                root.path().join("www/vhosts"),
                root.path().join("www/vhosts/a"),
                root.path().join("www/vhosts/a/logs"),
            ]
        );
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_text() {
        let e = Patterns::new(&["/var/log/[x".to_string()]).unwrap_err();
        assert!(e.to_string().starts_with("/var/log/[x"), "{e}");
    }
}
