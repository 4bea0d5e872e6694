//! The client's end of the control socket: connect, send one request, read the one answer.
//!
//! Blocking, with timeouts: this runs in a short-lived command (`floodwatch bans`...), never
//! inside watch. A socket nobody listens on (no watch running, or one that stopped without
//! cleaning up) is said plainly, as is a socket the caller may not use.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Request;

/// How long connecting, sending and each read of the answer may take. Watch answers between
/// two turns of its loop; a list of a million bans takes a few hundred milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no watch is running there: nothing listens on {}", .0.display())]
    NoWatch(PathBuf),
    #[error(
        "{}: permission denied: run as root or as the user watch runs as",
        .0.display()
    )]
    Denied(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
    #[error(
        "{}: the answer is not what this floodwatch expects ({}); is the running watch the same version?",
        .0.display(),
        .1
    )]
    BadAnswer(PathBuf, String),
    /// Watch answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the watch listening on `socket` and returns its answer (an object whose `ok`
/// was true).
pub fn call(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let answer = call_raw(socket, req)?;
    serde_json::from_slice(&answer)
        .map_err(|e| ClientError::BadAnswer(socket.to_path_buf(), e.to_string()))
}

/// As [`call`], the answer's bytes, checked to say `"ok": true`: for an answer too long to
/// hold as a tree of values (200,000 bans).
pub fn call_raw(socket: &Path, req: &Request) -> Result<Vec<u8>, ClientError> {
    let io_err = |e: io::Error| ClientError::Io(socket.to_path_buf(), e);
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NoWatch(socket.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ClientError::Denied(socket.to_path_buf()),
        _ => io_err(e),
    })?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io_err)?;
    let bad = |why: String| ClientError::BadAnswer(socket.to_path_buf(), why);
    /// The part of every answer that says how it went (the rest is skipped over).
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        ok: Option<bool>,
        #[serde(borrow)]
        error: Option<std::borrow::Cow<'a, str>>,
    }
    let head: Head = serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
    match head.ok {
        Some(true) => Ok(answer),
        Some(false) => Err(ClientError::Refused(
            head.error
                .map_or_else(|| "refused, without saying why".into(), |e| e.into_owned()),
        )),
        None => Err(bad("no \"ok\"".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-shot server answering `answer` to whatever comes.
    fn serve(
        answer: &'static str,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = String::new();
            let mut byte = [0u8];
            while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                got.push(byte[0] as char);
            }
            s.write_all(answer.as_bytes()).unwrap();
            got
        });
        (dir, path, h)
    }

    #[test]
    fn asks_one_line_and_takes_the_answer() {
        let (_d, path, h) = serve(r#"{"ok":true,"bans":[]}"#);
        let v = call(&path, &Request::Bans { all: false }).unwrap();
        assert_eq!(v["bans"], serde_json::json!([]));
        assert_eq!(h.join().unwrap(), r#"{"command":"bans"}"#);
    }

    #[test]
    fn says_why_there_is_no_answer() {
        let (_d, path, _h) = serve(r#"{"ok":false,"error":"no rule is named \"x\""}"#);
        let e = call(&path, &Request::Status { files: false }).unwrap_err();
        assert_eq!(e.to_string(), "no rule is named \"x\"");

        let (_d, path, _h) = serve("garbage");
        let e = call(&path, &Request::Status { files: false }).unwrap_err();
        assert!(matches!(e, ClientError::BadAnswer(..)), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("none.sock");
        let e = call(&gone, &Request::Status { files: false }).unwrap_err();
        assert!(e.to_string().starts_with("no watch is running"), "{e}");
        // A socket file left behind by a watch that is gone.
        drop(UnixListener::bind(&gone).unwrap());
        let e = call(&gone, &Request::Status { files: false }).unwrap_err();
        assert!(matches!(e, ClientError::NoWatch(_)), "{e}");
    }
}
