//! The control socket's server side: a Unix listener on the watch loop (see [`crate::control`]
//! for the protocol), answering only root and the user watch runs as.
//!
//! **Who may ask.** The socket is created with mode 0600 (only its owner, watch's user, may
//! connect; root always may), and each connection's peer credentials (`SO_PEERCRED`, set by
//! the kernel at connect, not claimed by the client) are checked again: a socket placed in a
//! folder others can reach, or a mode changed by hand, still answers nobody else.
//!
//! **One watch per socket.** A socket path that another running watch answers on stops this
//! one at start: two watches on one `[state] dir` would overwrite each other's state. A socket
//! file nobody answers on (a watch that was killed) is replaced; any other file at the path is
//! left alone and stops watch. The socket is removed at stop.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Registry, Token};

use crate::conns::{Framer, Listener, Server};
use crate::control::{Request, MAX_REQUEST};

/// The longest path a Unix socket address holds (`sun_path`, less its terminating NUL).
pub const MAX_PATH: usize = 107;

/// What a connection asked, as far as it could be read.
pub type Asked = Result<Request, Unreadable>;

/// Why a request line was not read (the client is told, and the connection closed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unreadable {
    #[error("not a request this watch understands: {0}")]
    NotARequest(serde_json::Error),
    #[error("a request is at most {MAX_REQUEST} bytes")]
    TooLong,
}

/// Who connected: their user id (none when the kernel would not say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
}

impl Peer {
    /// Root, or the user watch runs as.
    pub fn allowed(self) -> bool {
        let me = rustix::process::geteuid().as_raw();
        self.uid.is_some_and(|u| u == 0 || u == me)
    }
}

/// A request line: up to its newline, at most [`MAX_REQUEST`] bytes.
#[derive(Default)]
pub struct Line {
    buf: Vec<u8>,
}

impl Framer for Line {
    type Request = Asked;

    fn push(&mut self, bytes: &[u8]) -> Option<Asked> {
        let room = MAX_REQUEST + 1 - self.buf.len();
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(end) = memchr::memchr(b'\n', &self.buf) {
            return Some(serde_json::from_slice(&self.buf[..end]).map_err(Unreadable::NotARequest));
        }
        (self.buf.len() > MAX_REQUEST).then_some(Err(Unreadable::TooLong))
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    type Peer = Peer;

    fn take(&self) -> io::Result<(UnixStream, Peer)> {
        let (stream, _) = self.accept()?;
        let uid = peer_uid(&stream);
        Ok((stream, Peer { uid }))
    }

    fn shutdown_write(stream: &UnixStream) {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The user id of the process at the other end of a Unix socket, as the kernel recorded it.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    rustix::net::sockopt::socket_peercred(stream)
        .ok()
        .map(|cred| cred.uid.as_raw())
}

/// Why the control socket cannot be made: the setting that names it, its path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key} = \"{}\": {why}", path.display())]
pub struct BindError {
    pub key: &'static str,
    pub path: PathBuf,
    pub why: String,
}

/// The listening socket and its connections.
pub struct ControlSocket {
    server: Server<UnixListener, Line>,
    path: PathBuf,
    /// The socket file's inode, so that stop removes only our own.
    inode: u64,
}

impl ControlSocket {
    /// Creates the socket at `path` (mode 0600); `key` names the setting in errors.
    pub fn bind(path: &Path, key: &'static str) -> Result<ControlSocket, BindError> {
        let say = |why: String| BindError {
            key,
            path: path.to_path_buf(),
            why,
        };
        if path.as_os_str().len() > MAX_PATH {
            return Err(say(format!(
                "a Unix socket path is at most {MAX_PATH} bytes: set [state] socket to a shorter one"
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| say(format!("creating its folder: {e}")))?;
        }
        clear_stale(path).map_err(say)?;
        let std = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| say(format!("cannot create the control socket: {e}")))?;
        let setup = std
            .set_nonblocking(true)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
            .and_then(|()| std::fs::metadata(path));
        let meta = match setup {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(say(e.to_string()));
            }
        };
        Ok(ControlSocket {
            server: Server::new(UnixListener::from_std(std), "control socket"),
            path: path.to_path_buf(),
            inode: meta.ino(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        self.server.register(registry, base)
    }

    pub fn owns(&self, token: Token) -> bool {
        self.server.owns(token)
    }

    /// Handles an event on one of the socket's tokens; `answer` answers an allowed peer's
    /// request (the refusals are answered here).
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        answer: &mut dyn FnMut(Request, &mut Vec<u8>),
    ) {
        self.server.ready(registry, token, &mut |peer, asked, out| {
            match (peer.allowed(), asked) {
                (false, _) => {
                    let who = peer.uid.map_or("an unknown user".into(), |u| format!("uid {u}"));
                    log::warn!("control socket: refused {who} (only root and watch's own user)");
                    refuse(&format!("permission denied for {who}: only root and the user watch runs as may ask"), out);
                }
                (true, Err(why)) => refuse(&why.to_string(), out),
                (true, Ok(req)) => answer(req, out),
            }
        });
    }

    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        self.server.expire(registry, now);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Only our own: a newer watch may have replaced it (after this one was thought dead).
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes an error answer.
pub fn refuse(why: &str, out: &mut Vec<u8>) {
    let v = serde_json::json!({"ok": false, "error": why});
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'\n');
}

/// Removes a socket file nobody answers on; refuses when a watch answers, or when the path is
/// something else than a socket.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.file_type().is_socket() {
        return Err(
            "something else than a socket is there; remove it or choose another path".into(),
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(
            "another watch is running with this control socket (two watches on one [state] dir \
             would overwrite each other's state)"
                .into(),
        ),
        Err(_) => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale control socket: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    use mio::{Events, Poll};

    fn ask(path: &Path, line: &[u8], sock: &mut ControlSocket, poll: &mut Poll) -> String {
        let mut c = std::os::unix::net::UnixStream::connect(path).unwrap();
        c.write_all(line).unwrap();
        c.set_nonblocking(true).unwrap();
        let mut events = Events::with_capacity(16);
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < until, "no answer");
            poll.poll(&mut events, Some(Duration::from_millis(5)))
                .unwrap();
            for ev in events.iter() {
                sock.ready(poll.registry(), ev.token(), &mut |req, out| {
                    out.extend_from_slice(format!("{req:?}").as_bytes())
                });
            }
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk) {
                Ok(0) => return String::from_utf8(got).unwrap(),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn answers_requests_and_refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let mut sock = ControlSocket::bind(&path, "[state] socket").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut poll = Poll::new().unwrap();
        sock.register(poll.registry(), Token(100)).unwrap();
        let got = ask(
            &path,
            b"{\"command\":\"unban\",\"key\":\"192.0.2.1\"}\n",
            &mut sock,
            &mut poll,
        );
        assert_eq!(got, r#"Unban { key: "192.0.2.1" }"#);
        let got = ask(&path, b"{\"command\":\"reboot\"}\n", &mut sock, &mut poll);
        assert!(
            got.starts_with(r#"{"ok":false,"error":"not a request this watch understands: unknown variant `reboot`"#),
            "{got}"
        );
        let long = vec![b'x'; MAX_REQUEST + 10];
        let got = ask(&path, &long, &mut sock, &mut poll);
        assert!(got.contains("a request is at most 4096 bytes"), "{got}");
    }

    #[test]
    fn one_watch_per_socket_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let first = ControlSocket::bind(&path, "[state] socket").unwrap();
        let e = ControlSocket::bind(&path, "[state] socket").err().unwrap();
        assert!(e.to_string().contains("another watch is running"), "{e}");
        drop(first);
        assert!(!path.exists(), "removed at stop");
        // A watch killed without removing its socket: the file stays, nobody answers.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let second = ControlSocket::bind(&path, "[state] socket").unwrap();
        drop(second);
        assert!(!path.exists(), "removed at stop");
        std::fs::write(&path, "x").unwrap();
        let e = ControlSocket::bind(&path, "[state] socket").err().unwrap();
        assert!(
            e.to_string().contains("something else than a socket"),
            "{e}"
        );
        let long = dir.path().join("x".repeat(120));
        let e = ControlSocket::bind(&long, "[state] dir").err().unwrap();
        assert!(e.to_string().contains("at most 107 bytes"), "{e}");
    }

    #[test]
    fn only_root_and_our_own_user_may_ask() {
        let me = rustix::process::geteuid().as_raw();
        assert!(Peer { uid: Some(me) }.allowed());
        assert!(Peer { uid: Some(0) }.allowed());
        assert!(!Peer { uid: None }.allowed());
        let other = if me == 4242 { 4243 } else { 4242 };
        assert!(!Peer { uid: Some(other) }.allowed());
    }
}
