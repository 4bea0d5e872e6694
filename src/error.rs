//! The crate's error type: why a command failed, with the stages' own errors kept whole up to
//! the binary, which prints them and picks the exit code ([`Error::exit_code`]).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{ConfigError, ValueError};
use crate::engine::rule::RuleError;
use crate::fleet::FleetError;
use crate::parse::FormatError;
use crate::proxy::ProxyError;
use crate::sink::SinkError;
use crate::source::discover::PatternError;
use crate::source::paths::PathsError;
use crate::state_file::StateFileError;
use crate::state_lock::LockError;

/// Why a command failed, split by exit code. The library's own errors are kept as they are
/// (their sources included) up to here, where `main` prints them and picks the exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[proxy]` and its ranges (exit code 2).
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A path or glob watch cannot follow (exit code 2).
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Log paths replay cannot read (exit code 1).
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// A file of the state folder that cannot be read or written (exit code 1).
    #[error(transparent)]
    State(#[from] StateFileError),
    /// A sink that cannot start (exit code 1).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The fleet cannot start (exit code 1).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A command-line flag's rate or duration (exit code 2): `--for: "3x" is not a duration…`.
    #[error("{flag}: {source}")]
    Flag {
        flag: &'static str,
        source: ValueError,
    },
    /// `input.format` of the config at `origin` (exit code 2).
    #[error("{origin}: input.format: {why}")]
    Format { origin: String, why: FormatUnusable },
    /// The rules of the config at `origin` (exit code 2).
    #[error("{origin}: rule: {source}")]
    Rules { origin: String, source: RuleError },
    /// No log file named on the command line or in the config (exit code 2).
    #[error("no log files: give PATH|GLOB arguments or [input] paths in the config")]
    NoLogFiles,
    /// The state folder's lock (exit code 1): another process holds it, or it cannot be taken.
    #[error("{}", StateLocked(dir, source))]
    StateLock { dir: PathBuf, source: LockError },
    /// The state saved at the end of a run (exit code 1).
    #[error("saving state: {0}")]
    SavingState(#[source] StateFileError),
    /// A file or folder that cannot be read or written (exit code 1): the path and why.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    /// Our output cannot be written (exit code 1; a closed pipe is [`Error::BrokenPipe`]).
    #[error("writing {what}: {source}")]
    Writing {
        what: &'static str,
        source: io::Error,
    },
    /// A facility of the system the loop runs on (`epoll`, `inotify`, `signalfd`) refused
    /// (exit code 1).
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        source: io::Error,
    },
    /// An address the config names that cannot be listened on (exit code 1): `key` is the
    /// setting (`[metrics] listen`).
    #[error("{key} = \"{addr}\": {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// A thread the OS refused to start (exit code 1): `what` names them ("shard threads").
    #[error("cannot start the {what}: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
    /// Other bad arguments or config: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Other failures while running: exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// The reader of our output went away (`| head`): not an error.
    #[error("broken pipe")]
    BrokenPipe,
}

/// The message of [`Error::StateLock`]: who holds the folder, and why that is refused.
struct StateLocked<'a>(&'a PathBuf, &'a LockError);

impl std::fmt::Display for StateLocked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            LockError::Held { holder, .. } => write!(
                f,
                "[state] dir = \"{}\" is in use by {holder}: two processes acting on one state \
                 folder would overwrite each other's state and sinks",
                self.0.display()
            ),
            e => write!(f, "[state] dir: locking {e}"),
        }
    }
}

/// Why a log format cannot be used: it does not parse, or it lacks what counting needs (without
/// a client or a time every line would fall into one key at one instant).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatUnusable {
    #[error(transparent)]
    Spec(#[from] FormatError),
    #[error("the format logs no client address (%h, %a or $remote_addr)")]
    NoClient,
    #[error("the format logs no time (%t, $time_local, $msec...)")]
    NoTime,
}

impl Error {
    /// A failed write of our output (`what`: "events", "to stdout"): a closed pipe is the reader
    /// having seen enough, anything else a runtime error.
    pub fn writing(what: &'static str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::BrokenPipe => Error::BrokenPipe,
            _ => Error::Writing { what, source: e },
        }
    }

    /// A system facility (`what`: "epoll") that refused.
    pub fn system(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::System { what, source }
    }

    /// A failed read or write of the file or folder at `path`.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::File {
            path: path.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Proxy(_) | Error::Pattern(_) => 2,
            Error::Format { .. } | Error::Rules { .. } | Error::NoLogFiles => 2,
            Error::Flag { .. } | Error::Usage(_) => 2,
            Error::Paths(_) | Error::State(_) | Error::Sink(_) | Error::Fleet(_) => 1,
            Error::Thread { .. } | Error::StateLock { .. } | Error::SavingState(_) => 1,
            Error::File { .. } | Error::Writing { .. } | Error::System { .. } => 1,
            Error::Listen { .. } => 1,
            Error::Runtime(_) => 1,
            Error::BrokenPipe => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed failures print what their strings used to, with the exit codes they had.
    #[test]
    fn typed_failures_keep_their_text_and_exit_code() {
        let gone = || io::Error::new(io::ErrorKind::NotFound, "gone");
        let cases = [
            (
                Error::file("/var/log/x.log")(gone()),
                "/var/log/x.log: gone",
                1,
            ),
            (Error::writing("events", gone()), "writing events: gone", 1),
            (Error::system("epoll")(gone()), "epoll: gone", 1),
            (
                Error::Listen {
                    key: "[metrics] listen",
                    addr: ([127, 0, 0, 1], 9100).into(),
                    source: gone(),
                },
                "[metrics] listen = \"127.0.0.1:9100\": gone",
                1,
            ),
            (
                Error::writing("events", io::ErrorKind::BrokenPipe.into()),
                "broken pipe",
                0,
            ),
            (
                Error::Thread {
                    what: "shard threads",
                    source: gone(),
                },
                "cannot start the shard threads: gone",
                1,
            ),
            (
                Error::StateLock {
                    dir: "/s".into(),
                    source: LockError::Io {
                        path: "/s/lock".into(),
                        source: gone(),
                    },
                },
                "[state] dir: locking /s/lock: gone",
                1,
            ),
            (
                Error::NoLogFiles,
                "no log files: give PATH|GLOB arguments or [input] paths in the config",
                2,
            ),
            (
                Error::Flag {
                    flag: "--for",
                    source: crate::config::parse_duration("3x").unwrap_err(),
                },
                "--for: \"3x\" is not a duration (expected e.g. \"90s\", \"10m\", \"1h\", \"1d\")",
                2,
            ),
            (
                Error::Format {
                    origin: "f.toml".into(),
                    why: FormatUnusable::NoTime,
                },
                "f.toml: input.format: the format logs no time (%t, $time_local, $msec...)",
                2,
            ),
        ];
        for (e, text, code) in cases {
            assert_eq!((e.to_string(), e.exit_code()), (text.to_string(), code));
        }
    }
}
