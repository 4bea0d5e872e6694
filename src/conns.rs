//! One request, one response, then close: the connection handling that watch's two local
//! servers share — the metrics endpoint (HTTP over TCP, [`http`](crate::watch::http)) and the
//! control socket (JSON lines over a Unix socket, [`server`](crate::control::server)) — driven
//! by the watch loop's own mio `Poll`.
//!
//! A connection reads until its [`Framer`] has a whole request, has the loop answer it in one
//! go, writes the answer as the socket takes it, shuts its side and waits (briefly) for the
//! client to close first: closing with unread bytes from the client would reset the connection
//! and may lose the answer's tail. Nothing here ever waits on a connection, so a slow or hostile
//! client costs the loop a few non-blocking syscalls.
//!
//! Limits, against clients that misbehave: a connection that has not sent its request within
//! [`IDLE`], or stops taking its answer for that long, is closed, and at most [`MAX_CONNS`] are
//! open (the oldest is closed to make room for a new one). Framers bound the request's size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Interest, Registry, Token};

/// Most connections open at once, per server.
pub const MAX_CONNS: usize = 64;
/// How long a connection may take to send its request, or stall while taking its answer.
pub const IDLE: Duration = Duration::from_secs(5);
/// How long the end of an answer waits for the client to close first.
const LINGER: Duration = Duration::from_secs(1);

/// A listening socket: TCP for the metrics, Unix for the control socket.
pub trait Listener: Source {
    type Stream: Read + Write + Source;
    /// What the server knows of who connected (the control socket: the peer's user id).
    type Peer: Copy;
    /// Takes one connection waiting to be accepted.
    fn take(&self) -> io::Result<(Self::Stream, Self::Peer)>;
    /// Shuts the writing side of a connection.
    fn shutdown_write(stream: &Self::Stream);
}

/// Cuts a request out of the bytes as the network delivers them.
pub trait Framer: Default {
    type Request;
    /// Adds bytes read from the client: the request once complete (what follows is ignored),
    /// `None` while more is needed. A framer gives up (a request of its own, an error) rather
    /// than growing without bound.
    fn push(&mut self, bytes: &[u8]) -> Option<Self::Request>;
}

enum State<F> {
    Reading(F),
    Writing {
        out: Vec<u8>,
        at: usize,
    },
    /// The answer is written and our side shut: waiting for the client to close.
    Draining,
}

struct Conn<S, F, P> {
    stream: S,
    peer: P,
    state: State<F>,
    deadline: Instant,
}

/// The listener and its open connections. Tokens: `base` is the listener, `base + 1 + n` the
/// n-th connection accepted (never reused, so a stale event cannot reach a newer connection).
pub struct Server<L: Listener, F: Framer> {
    listener: L,
    /// What the server is, for the log (`metrics`, `control socket`).
    what: &'static str,
    base: Token,
    /// By accept order: the first is the oldest.
    conns: BTreeMap<usize, Conn<L::Stream, F, L::Peer>>,
    next_id: usize,
    /// An accept error was logged and none has succeeded since (one line per outage).
    accept_failing: bool,
}

/// Answers a request from a peer, appending the whole answer to the buffer.
pub type Answer<'a, L, F> =
    dyn FnMut(<L as Listener>::Peer, <F as Framer>::Request, &mut Vec<u8>) + 'a;

impl<L: Listener, F: Framer> Server<L, F> {
    /// Serves `listener` (already bound, non-blocking) once registered.
    pub fn new(listener: L, what: &'static str) -> Self {
        Server {
            listener,
            what,
            base: Token(usize::MAX),
            conns: BTreeMap::new(),
            next_id: 0,
            accept_failing: false,
        }
    }

    /// Registers the listener as `base`; the tokens after it up to the next server's base are
    /// its connections'.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        registry.register(&mut self.listener, base, Interest::READABLE)?;
        self.base = base;
        Ok(())
    }

    /// Whether `token` is the listener's or a connection's (the connections' tokens run from
    /// `base`; a server registered after this one must take a base far enough above).
    pub fn owns(&self, token: Token) -> bool {
        token == self.base
            || token
                .0
                .checked_sub(self.base.0 + 1)
                .is_some_and(|id| id < self.next_id)
    }

    /// Handles a readiness event on one of the server's tokens.
    pub fn ready(&mut self, registry: &Registry, token: Token, answer: &mut Answer<L, F>) {
        if token == self.base {
            self.accept(registry);
            return;
        }
        let id = token.0 - self.base.0 - 1;
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // Closed already; a stale event.
        };
        if !step::<L, F>(conn, answer) {
            self.close(registry, id);
        }
    }

    /// Closes the connections whose time is up.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.close(registry, id);
        }
    }

    /// When [`Server::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    pub fn listener(&self) -> &L {
        &self.listener
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, peer) = match self.listener.take() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, or a connection reset before it was taken: what is
                // queued is taken at the next connection's event.
                Err(e) => {
                    if !self.accept_failing {
                        log::warn!("{}: accepting a connection: {e}", self.what);
                        self.accept_failing = true;
                    }
                    return;
                }
            };
            self.accept_failing = false;
            if self.conns.len() >= MAX_CONNS {
                if let Some(&oldest) = self.conns.keys().next() {
                    self.close(registry, oldest);
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            let token = Token(self.base.0 + 1 + id);
            // Both directions from the start (edge-triggered): reading the request, then
            // writing the answer, each resume on their own event.
            let interest = Interest::READABLE | Interest::WRITABLE;
            if registry.register(&mut stream, token, interest).is_err() {
                continue;
            }
            let conn = Conn {
                stream,
                peer,
                state: State::Reading(F::default()),
                deadline: Instant::now() + IDLE,
            };
            self.conns.insert(id, conn);
        }
    }

    fn close(&mut self, registry: &Registry, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

/// Moves a connection on as far as its socket allows; false once it is to be closed.
fn step<L: Listener, F: Framer>(
    conn: &mut Conn<L::Stream, F, L::Peer>,
    answer: &mut Answer<L, F>,
) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match &mut conn.state {
            State::Reading(framer) => match conn.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    if let Some(req) = framer.push(&chunk[..n]) {
                        let mut out = Vec::new();
                        answer(conn.peer, req, &mut out);
                        conn.state = State::Writing { out, at: 0 };
                        conn.deadline = Instant::now() + IDLE;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
            },
            State::Writing { out, at } if *at == out.len() => {
                L::shutdown_write(&conn.stream);
                conn.state = State::Draining;
                conn.deadline = Instant::now() + LINGER;
            }
            State::Writing { out, at } => match conn.stream.write(&out[*at..]) {
                Ok(0) => return false,
                Ok(n) => {
                    *at += n;
                    conn.deadline = Instant::now() + IDLE;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
            },
            State::Draining => match conn.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
            },
        }
    }
}

impl Listener for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    type Peer = ();

    fn take(&self) -> io::Result<(Self::Stream, ())> {
        self.accept().map(|(s, _)| (s, ()))
    }

    fn shutdown_write(stream: &Self::Stream) {
        let _ = stream.shutdown(Shutdown::Write);
    }
}
