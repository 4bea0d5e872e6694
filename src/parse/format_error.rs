//! Why a log format spec (`combined`, `nginx:'<log_format>'`, `apache:'<LogFormat>'`) does not
//! compile: its own module, so that the spec compiler and the format that uses it both name it
//! without depending on each other.

/// Why a format spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("unknown log format {0:?} (expected combined, common, vhost_combined, nginx:'<log_format>' or apache:'<LogFormat>')")]
    UnknownFormat(String),
    #[error("log format has no fields: {0:?}")]
    NoFields(String),
    #[error("unterminated directive or variable in log format: {0:?}")]
    Unterminated(String),
    #[error("unknown Apache LogFormat directive {0:?}")]
    UnknownDirective(String),
    #[error("unsupported conversion %{1} in time format {0:?}")]
    BadTimeFormat(String, char),
    #[error("the log format does not log the client IP field {0:?}")]
    NoSuchField(String),
}
