//! The metrics endpoint's HTTP/1.1 server: a non-blocking listener and its connections, driven
//! by the watch loop's own mio `Poll`.
//!
//! **Why on the loop.** Everything a page shows (the ban table, the counters) belongs to the
//! watch loop's thread; serving from that thread reads it in place, with no lock, no copy
//! handed between threads, and no thread sitting idle for a scrape every 15 s. A response is
//! rendered in one go (about a millisecond for `/metrics`; `/bans` grows with the bans) and
//! then written as the socket takes it, so a slow or hostile client costs the loop nothing
//! but a few non-blocking syscalls: it never waits on a connection.
//!
//! **Why `Connection: close`.** Prometheus scrapes once every few seconds; one TCP handshake
//! per scrape is nothing, and answering one request per connection keeps the server a small
//! state machine (read a head, write a response, close) with no pipelining or keep-alive
//! timers. Request bodies are never read.
//!
//! Limits, against clients that misbehave: a request head is at most [`MAX_HEAD`] bytes (431
//! beyond); connections are bounded in number and time as [`conns`](crate::conns) says. Only
//! `GET` and `HEAD` are answered (405 otherwise), on `/metrics`, `/bans` and `/healthz`, and
//! with `[metrics] dashboard` on `/` (the page, its `/dashboard.js` and `/dashboard.css`),
//! `/api/top` and `/api/history` (404 otherwise; a query they do not take is a 400).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Registry, Token};

use crate::conns::Server as Conns;

/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the server serves; the loop renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `/metrics`: Prometheus text format 0.0.4.
    Metrics,
    /// `/bans`: the active bans as JSON.
    Bans,
    /// `/healthz`: `ok` while the watch loop turns (it answers itself).
    Health,
    /// `/api/top?limit=N`: one frame of `top` as JSON (`[metrics] dashboard`).
    ApiTop { limit: Option<u16> },
    /// `/api/history`: the last 15 minutes as JSON (`[metrics] dashboard`).
    ApiHistory,
    /// The dashboard's page, script and style (`[metrics] dashboard`).
    Dashboard(Asset),
}

/// The dashboard's files, embedded in the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    Html,
    Script,
    Style,
}

impl Page {
    fn content_type(self) -> &'static str {
        match self {
            Page::Metrics => "text/plain; version=0.0.4; charset=utf-8",
            Page::Bans | Page::ApiTop { .. } | Page::ApiHistory => "application/json",
            Page::Health => "text/plain; charset=utf-8",
            Page::Dashboard(Asset::Html) => "text/html; charset=utf-8",
            Page::Dashboard(Asset::Script) => "text/javascript; charset=utf-8",
            Page::Dashboard(Asset::Style) => "text/css; charset=utf-8",
        }
    }

    /// Whether only `[metrics] dashboard` serves it.
    pub fn is_dashboard(self) -> bool {
        matches!(
            self,
            Page::ApiTop { .. } | Page::ApiHistory | Page::Dashboard(_)
        )
    }
}

/// What every answer of the dashboard says to the browser: nothing but this origin's own
/// script, style and JSON; no framing; no guessing of types.
const DASHBOARD_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

/// An answer other than a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

/// A parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// `HEAD`: the answer's headers without its body.
    pub head_only: bool,
    pub route: Result<Page, Status>,
}

/// A request head as it arrives, in as many pieces as the network cuts it into.
#[derive(Debug, Default)]
pub struct HeadBuf {
    buf: Vec<u8>,
}

impl HeadBuf {
    /// Adds bytes read from the client: the request once its head is complete (what follows
    /// the head is ignored), `None` while more is needed.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Request> {
        // A blank line split across two reads: look again from just before the new bytes.
        let from = self.buf.len().saturating_sub(2);
        let room = MAX_HEAD - self.buf.len();
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(end) = head_end(&self.buf, from) {
            return Some(parse_head(&self.buf[..end]));
        }
        if self.buf.len() >= MAX_HEAD {
            return Some(Request {
                head_only: false,
                route: Err(Status::HeadTooLarge),
            });
        }
        None
    }
}

/// The end of the head (just past its blank line, `\r\n` or a bare `\n`), searching from
/// `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let nl = at + i;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => at = nl + 1,
        }
    }
    None
}

/// Parses a complete head. Headers are not needed (no keep-alive, no body, no virtual
/// hosts), so only the request line is looked at.
pub fn parse_head(head: &[u8]) -> Request {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad(false);
    };
    let head_only = method == b"HEAD";
    let is_token = !method.is_empty() && method.iter().all(|&b| is_tchar(b));
    let route = if !is_token || !version.starts_with(b"HTTP/") {
        Err(Status::BadRequest)
    } else if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        Err(Status::VersionNotSupported)
    } else if method != b"GET" && !head_only {
        Err(Status::MethodNotAllowed)
    } else {
        route(target)
    };
    Request { head_only, route }
}

fn bad(head_only: bool) -> Request {
    Request {
        head_only,
        route: Err(Status::BadRequest),
    }
}

/// The page a request target names: origin form (`/metrics?x`) or absolute form
/// (`http://host:port/metrics`).
fn route(target: &[u8]) -> Result<Page, Status> {
    let path = match target.strip_prefix(b"http://") {
        Some(rest) => match memchr::memchr(b'/', rest) {
            Some(i) => &rest[i..],
            None => b"/".as_slice(),
        },
        None => target,
    };
    if path.first() != Some(&b'/') {
        return Err(Status::BadRequest);
    }
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
    let query = match path.get(end) {
        Some(b'?') => {
            let q = &path[end + 1..];
            &q[..memchr::memchr(b'#', q).unwrap_or(q.len())]
        }
        _ => b"".as_slice(),
    };
    match &path[..end] {
        b"/metrics" => Ok(Page::Metrics),
        b"/bans" => Ok(Page::Bans),
        b"/healthz" => Ok(Page::Health),
        b"/api/top" => top_query(query).map(|limit| Page::ApiTop { limit }),
        b"/api/history" if query.is_empty() => Ok(Page::ApiHistory),
        b"/api/history" => Err(Status::BadRequest),
        b"/" | b"/index.html" => Ok(Page::Dashboard(Asset::Html)),
        b"/dashboard.js" => Ok(Page::Dashboard(Asset::Script)),
        b"/dashboard.css" => Ok(Page::Dashboard(Asset::Style)),
        _ => Err(Status::NotFound),
    }
}

/// `/api/top`'s query: nothing, or `limit=N` (1 to 1000); anything else is a bad request.
fn top_query(query: &[u8]) -> Result<Option<u16>, Status> {
    if query.is_empty() {
        return Ok(None);
    }
    let digits = query.strip_prefix(b"limit=").ok_or(Status::BadRequest)?;
    let ok = !digits.is_empty() && digits.len() <= 4 && digits.iter().all(u8::is_ascii_digit);
    let n: u16 = (std::str::from_utf8(digits).ok())
        .filter(|_| ok)
        .and_then(|d| d.parse().ok())
        .ok_or(Status::BadRequest)?;
    match n {
        1..=1000 => Ok(Some(n)),
        _ => Err(Status::BadRequest),
    }
}

/// RFC 9110 token characters (a method is a token).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends a whole response (`Connection: close`) to `out`; `body` is left empty.
fn respond(req: Request, body: &mut Vec<u8>, out: &mut Vec<u8>) {
    let (status, content_type) = match req.route {
        Ok(page) => ("200 OK", page.content_type()),
        Err(s) => {
            body.clear();
            body.extend_from_slice(s.line().as_bytes());
            body.push(b'\n');
            (s.line(), "text/plain; charset=utf-8")
        }
    };
    let allow = match req.route {
        Err(Status::MethodNotAllowed) => "Allow: GET, HEAD\r\n",
        Ok(page) if page.is_dashboard() => DASHBOARD_HEADERS,
        _ => "",
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !req.head_only {
        out.extend_from_slice(body);
    }
    body.clear();
}

impl crate::conns::Framer for HeadBuf {
    type Request = Request;

    fn push(&mut self, bytes: &[u8]) -> Option<Request> {
        HeadBuf::push(self, bytes)
    }
}

/// The metrics endpoint: a TCP listener whose connections each get one response.
pub struct Server {
    conns: Conns<TcpListener, HeadBuf>,
    addr: SocketAddr,
    /// Rendering space reused from one response to the next.
    body: Vec<u8>,
    /// `[metrics] dashboard`: the page and its API are served (404 otherwise).
    dashboard: bool,
}

impl Server {
    /// Binds `addr` (port 0: any free port; see [`Server::local_addr`]). Not served until
    /// [`Server::register`]ed.
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        Ok(Server {
            conns: Conns::new(TcpListener::from_std(std), "metrics"),
            addr,
            body: Vec::new(),
            dashboard: false,
        })
    }

    /// Serves the dashboard and its API too.
    pub fn with_dashboard(mut self, on: bool) -> Server {
        self.dashboard = on;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers the listener as `base`; the tokens after it are its connections'.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        self.conns.register(registry, base)
    }

    /// Whether `token` is the listener's or a connection's.
    pub fn owns(&self, token: Token) -> bool {
        self.conns.owns(token)
    }

    /// Handles a readiness event on one of the server's tokens; `render` fills a page's body.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        render: &mut dyn FnMut(Page, &mut Vec<u8>),
    ) {
        let (body, dashboard) = (&mut self.body, self.dashboard);
        self.conns.ready(registry, token, &mut |(), mut req, out| {
            if req.route.is_ok_and(|p| p.is_dashboard() && !dashboard) {
                req.route = Err(Status::NotFound);
            }
            if let Ok(page) = req.route {
                render(page, body);
            }
            out.reserve(256 + body.len());
            respond(req, body, out);
        });
    }

    /// Closes the connections whose time is up.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        self.conns.expire(registry, now);
    }

    /// When [`Server::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.next_deadline()
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.conns.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conns::{IDLE, MAX_CONNS};
    use proptest::prelude::*;
    use std::time::Duration;

    fn get(page: Page) -> Request {
        Request {
            head_only: false,
            route: Ok(page),
        }
    }

    fn fails(status: Status) -> Request {
        Request {
            head_only: false,
            route: Err(status),
        }
    }

    #[test]
    fn routes_and_methods() {
        let p = |s: &str| parse_head(s.as_bytes());
        assert_eq!(p("GET /metrics HTTP/1.1\r\n\r\n"), get(Page::Metrics));
        assert_eq!(p("GET /bans?pretty=1 HTTP/1.0\r\n\r\n"), get(Page::Bans));
        assert_eq!(p("GET /healthz HTTP/1.1\r\n\r\n"), get(Page::Health));
        assert_eq!(
            p("GET http://127.0.0.1:9877/metrics HTTP/1.1\r\n\r\n"),
            get(Page::Metrics)
        );
        assert_eq!(
            p("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Request {
                head_only: true,
                route: Ok(Page::Metrics)
            }
        );
        assert_eq!(p("GET /nothing HTTP/1.1\r\n\r\n"), fails(Status::NotFound));
        assert_eq!(p("GET /metrics/ HTTP/1.1\r\n\r\n"), fails(Status::NotFound));
        assert_eq!(
            p("POST /metrics HTTP/1.1\r\n\r\n"),
            fails(Status::MethodNotAllowed)
        );
        assert_eq!(
            p("get /metrics HTTP/1.1\r\n\r\n"),
            fails(Status::MethodNotAllowed)
        );
        assert_eq!(
            p("GET /metrics HTTP/2.0\r\n\r\n"),
            fails(Status::VersionNotSupported)
        );
        assert_eq!(p("GET /metrics\r\n\r\n"), fails(Status::BadRequest));
        assert_eq!(
            p("GET  /metrics HTTP/1.1\r\n\r\n"),
            fails(Status::BadRequest)
        );
        assert_eq!(p("GET metrics HTTP/1.1\r\n\r\n"), fails(Status::BadRequest));
        assert_eq!(
            p("G(T /metrics HTTP/1.1\r\n\r\n"),
            fails(Status::BadRequest)
        );
        assert_eq!(p("GET /metrics FTP/1.1\r\n\r\n"), fails(Status::BadRequest));
        assert_eq!(p("\r\n\r\n"), fails(Status::BadRequest));
    }

    #[test]
    fn the_dashboard_routes_take_only_their_own_queries() {
        let p = |s: &str| parse_head(format!("GET {s} HTTP/1.1\r\n\r\n").as_bytes()).route;
        assert_eq!(p("/"), Ok(Page::Dashboard(Asset::Html)));
        assert_eq!(p("/dashboard.js"), Ok(Page::Dashboard(Asset::Script)));
        assert_eq!(p("/dashboard.css?v=1"), Ok(Page::Dashboard(Asset::Style)));
        assert_eq!(p("/api/top"), Ok(Page::ApiTop { limit: None }));
        assert_eq!(p("/api/top?limit=20"), Ok(Page::ApiTop { limit: Some(20) }));
        assert_eq!(
            p("/api/top?limit=1000#x"),
            Ok(Page::ApiTop { limit: Some(1000) })
        );
        assert_eq!(p("/api/history"), Ok(Page::ApiHistory));
        for bad in [
            "/api/top?limit=0",
            "/api/top?limit=1001",
            "/api/top?limit=-1",
            "/api/top?limit=",
            "/api/top?limit=99999999999999999999",
            "/api/top?limit=1e3",
            "/api/top?sort=rate",
            "/api/top?limit=5&limit=6",
            "/api/top?%00",
            "/api/history?from=0",
        ] {
            assert_eq!(p(bad), Err(Status::BadRequest), "{bad}");
        }
        assert_eq!(p("/api/"), Err(Status::NotFound));
        assert!(Page::ApiHistory.is_dashboard() && !Page::Metrics.is_dashboard());
    }

    #[test]
    fn a_head_split_over_many_reads_is_parsed_once_complete() {
        let text = b"GET /bans HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\nbody";
        // Every way of cutting it in two, and byte by byte.
        for cut in 0..text.len() {
            let mut h = HeadBuf::default();
            let first = h.push(&text[..cut]);
            let got = first.or_else(|| h.push(&text[cut..]));
            assert_eq!(got, Some(get(Page::Bans)), "cut at {cut}");
        }
        let mut h = HeadBuf::default();
        let end = text.len() - 4;
        for (i, b) in text.iter().enumerate() {
            let got = h.push(std::slice::from_ref(b));
            assert_eq!(got.is_some(), i + 1 == end, "byte {i}");
            if got.is_some() {
                break;
            }
        }
        // Bare newlines, as a hand-typed request may have.
        let mut h = HeadBuf::default();
        assert_eq!(h.push(b"GET /metrics HTTP/1.1\n"), None);
        assert_eq!(h.push(b"\n"), Some(get(Page::Metrics)));
    }

    #[test]
    fn an_oversized_head_is_refused() {
        let mut h = HeadBuf::default();
        assert_eq!(h.push(b"GET /metrics HTTP/1.1\r\n"), None);
        let header = format!("X-Filler: {}\r\n", "a".repeat(1000));
        let mut got = None;
        for _ in 0..9 {
            got = got.or_else(|| h.push(header.as_bytes()));
        }
        assert_eq!(got, Some(fails(Status::HeadTooLarge)));
        assert_eq!(h.buf.len(), MAX_HEAD, "nothing kept beyond the limit");
        // Exactly at the limit is fine.
        let mut text = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        text.resize(MAX_HEAD - 4, b'a');
        text.extend_from_slice(b"\r\n\r\n");
        assert_eq!(HeadBuf::default().push(&text), Some(get(Page::Metrics)));
    }

    #[test]
    fn responses_close_and_head_has_no_body() {
        let mut out = Vec::new();
        let mut body = b"# HELP x\n".to_vec();
        respond(get(Page::Metrics), &mut body, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(text.contains(
            "Content-Length: 9\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n# HELP x\n"
        ));
        assert!(body.is_empty());

        let mut out = Vec::new();
        let head = Request {
            head_only: true,
            route: Err(Status::MethodNotAllowed),
        };
        respond(head, &mut body, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\n"), "no body for HEAD: {text:?}");
    }

    /// The server on a real socket and a real `Poll`, driven by hand like the watch loop.
    mod live {
        use super::*;
        use mio::{Events, Poll};
        use std::io::{Read, Write};
        use std::net::TcpStream as Client;

        struct Rig {
            poll: Poll,
            events: Events,
            server: Server,
            renders: usize,
        }

        impl Rig {
            fn new() -> Rig {
                let poll = Poll::new().unwrap();
                let mut server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                server.register(poll.registry(), Token(16)).unwrap();
                Rig {
                    poll,
                    events: Events::with_capacity(64),
                    server,
                    renders: 0,
                }
            }

            fn connect(&self) -> Client {
                Client::connect(self.server.local_addr()).unwrap()
            }

            /// One round of the loop.
            fn turn(&mut self, wait: Duration) {
                self.poll.poll(&mut self.events, Some(wait)).unwrap();
                let renders = &mut self.renders;
                for ev in self.events.iter() {
                    assert!(self.server.owns(ev.token()));
                    self.server
                        .ready(self.poll.registry(), ev.token(), &mut |page, body| {
                            *renders += 1;
                            match page {
                                Page::Metrics => body.extend_from_slice(b"m 1\n"),
                                Page::Bans => body.resize(3 << 20, b'x'),
                                Page::Health => body.extend_from_slice(b"ok\n"),
                                _ => body.extend_from_slice(b"{}"),
                            }
                        });
                }
            }

            /// Turns the loop while `client` reads its whole response.
            fn response(&mut self, client: &mut Client) -> Vec<u8> {
                client.set_nonblocking(true).unwrap();
                let mut got = Vec::new();
                let mut chunk = vec![0u8; 1 << 16];
                let until = Instant::now() + Duration::from_secs(10);
                loop {
                    assert!(Instant::now() < until, "no complete response");
                    self.turn(Duration::from_millis(5));
                    match client.read(&mut chunk) {
                        Ok(0) => return got,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }

        #[test]
        fn serves_a_request_sent_in_pieces() {
            let mut rig = Rig::new();
            let mut c = rig.connect();
            for piece in ["GE", "T /metr", "ics HTTP/1.1\r", "\nHost: x\r\n", "\r\n"] {
                c.write_all(piece.as_bytes()).unwrap();
                rig.turn(Duration::from_millis(20));
            }
            let got = String::from_utf8(rig.response(&mut c)).unwrap();
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert!(got.ends_with("\r\n\r\nm 1\n"), "{got}");
            assert_eq!(rig.renders, 1);
            assert_eq!(rig.server.open(), 1, "waiting for the client to close");
            drop(c);
            rig.turn(Duration::from_millis(100));
            assert_eq!(rig.server.open(), 0, "closed once the client closed");
        }

        #[test]
        fn the_dashboard_is_served_only_when_asked_for() {
            for on in [false, true] {
                let mut rig = Rig::new();
                rig.server.dashboard = on;
                for target in ["/", "/api/top", "/api/history"] {
                    let mut c = rig.connect();
                    c.write_all(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes())
                        .unwrap();
                    let got = String::from_utf8(rig.response(&mut c)).unwrap();
                    let want = if on {
                        "HTTP/1.1 200 OK\r\n"
                    } else {
                        "HTTP/1.1 404 "
                    };
                    assert!(got.starts_with(want), "{target} ({on}): {got}");
                    assert_eq!(
                        got.contains("Content-Security-Policy: default-src 'none'"),
                        on
                    );
                }
                let mut c = rig.connect();
                c.write_all(b"GET /api/top?limit=x HTTP/1.1\r\n\r\n")
                    .unwrap();
                let got = String::from_utf8(rig.response(&mut c)).unwrap();
                assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
            }
        }

        #[test]
        fn a_large_body_is_written_as_the_client_takes_it() {
            let mut rig = Rig::new();
            let mut c = rig.connect();
            c.write_all(b"GET /bans HTTP/1.1\r\n\r\n").unwrap();
            let got = rig.response(&mut c);
            let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(got.len() - at, 3 << 20);
            assert!(String::from_utf8_lossy(&got[..at]).contains("Content-Length: 3145728\r\n"));
        }

        #[test]
        fn a_silent_client_is_closed_at_its_deadline_and_others_are_served() {
            let mut rig = Rig::new();
            let mut slow = rig.connect();
            slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            rig.turn(Duration::from_millis(50));
            assert_eq!(rig.server.open(), 1);
            let deadline = rig.server.next_deadline().unwrap();
            assert!(deadline > Instant::now() + IDLE - Duration::from_secs(1));

            let mut c = rig.connect();
            c.write_all(b"GET /nothing HTTP/1.1\r\n\r\n").unwrap();
            let got = String::from_utf8(rig.response(&mut c)).unwrap();
            assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");

            rig.server.expire(rig.poll.registry(), deadline);
            assert_eq!(rig.server.open(), 0);
            assert_eq!(rig.server.next_deadline(), None);
            assert_closed_without_answer(slow, "the silent client");
        }

        #[test]
        fn the_oldest_connection_makes_room_for_a_new_one() {
            let mut rig = Rig::new();
            let mut clients: Vec<Client> = Vec::new();
            for _ in 0..MAX_CONNS + 3 {
                clients.push(rig.connect());
                rig.turn(Duration::from_millis(5));
            }
            while rig.server.open() < MAX_CONNS {
                rig.turn(Duration::from_millis(5));
            }
            rig.turn(Duration::from_millis(20));
            assert_eq!(rig.server.open(), MAX_CONNS);
            let mut last = clients.pop().unwrap();
            last.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            let got = String::from_utf8(rig.response(&mut last)).unwrap();
            assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
            // Three more than the limit came: the three oldest made room, the others stay.
            let kept = clients.split_off(3);
            for (i, c) in clients.into_iter().enumerate() {
                assert_closed_without_answer(c, &format!("connection {i} (of the oldest)"));
            }
            for (i, mut c) in kept.into_iter().enumerate() {
                assert_still_open(&mut c, i + 3);
            }
        }

        /// Fails unless the server closed `client` without sending it anything: the read ends
        /// (end of stream, or a reset) well before a generous deadline, which is there only to
        /// catch a connection left open.
        fn assert_closed_without_answer(mut client: Client, who: &str) {
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut rest = Vec::new();
            match client.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("{who} was not closed (read: {e})"),
            }
            assert!(
                rest.is_empty(),
                "{who} was closed without an answer: {rest:?}"
            );
        }

        /// Fails when the server closed `client` (a read would end) instead of leaving it open.
        fn assert_still_open(client: &mut Client, nth: usize) {
            client.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            match client.read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("connection {nth} (not of the oldest) was closed: {other:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        /// Whatever bytes arrive, cut anywhere: no panic, at most one request, and never more
        /// than the head limit kept.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..12_000),
            cuts in proptest::collection::vec(any::<u16>(), 0..8),
        ) {
            let mut h = HeadBuf::default();
            let mut at = 0;
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut got = None;
            for c in cuts {
                if got.is_none() {
                    got = h.push(&bytes[at..c]);
                }
                at = c;
            }
            prop_assert!(h.buf.len() <= MAX_HEAD);
            if bytes.len() >= MAX_HEAD {
                prop_assert!(got.is_some());
            }
            let _ = parse_head(&bytes);
        }

        /// Request lines built from plausible pieces parse to the answer they must give.
        #[test]
        fn request_lines_route_as_expected(
            method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "OPTIONS"]),
            path in prop::sample::select(vec!["/metrics", "/bans", "/", "/x", "/metrics?a=b"]),
            version in prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2"]),
        ) {
            let r = parse_head(format!("{method} {path} {version}\r\n\r\n").as_bytes());
            prop_assert_eq!(r.head_only, method == "HEAD");
            let want = if version == "HTTP/2" {
                Err(Status::VersionNotSupported)
            } else if method != "GET" && method != "HEAD" {
                Err(Status::MethodNotAllowed)
            } else if path.starts_with("/metrics") {
                Ok(Page::Metrics)
            } else if path == "/bans" {
                Ok(Page::Bans)
            } else if path == "/" {
                Ok(Page::Dashboard(Asset::Html))
            } else {
                Err(Status::NotFound)
            };
            prop_assert_eq!(r.route, want);
        }
    }
}
