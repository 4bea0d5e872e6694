//! Helpers shared by the integration tests: running the real binary, reading its JSON lines,
//! and counting allocations (for the "no allocation per line" tests).
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// How long [`eventually`] waits: against hangs only, far beyond what any awaited condition
/// takes on a loaded machine.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls `check` until it holds, failing the test (naming `what`) after [`EVENTUALLY`]: tests
/// wait for the condition they need, never for a fixed time.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + EVENTUALLY;
    while !check() {
        assert!(std::time::Instant::now() < until, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `floodwatch` binary built for these tests, as a command to complete. Without `--config`
/// it uses the built-in defaults, never the config of a package installed on this machine.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_floodwatch"));
    c.env("FLOODWATCH_CONFIG", "");
    c
}

/// Runs the `floodwatch` binary built for these tests.
pub fn floodwatch(args: &[&str]) -> Output {
    command().args(args).output().expect("run floodwatch")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `out`, after asserting that the command succeeded (its stderr in the failure message).
pub fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(out)
    );
    out
}

/// A path under the repository's `testdata/`, as a string for the command line.
pub fn testdata(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
        .display()
        .to_string()
}

/// The demo logs of the README's first command.
pub fn demo_glob() -> String {
    testdata("replay/vhosts/*/logs/access_log*")
}

/// Every line of `text` as a JSON value; a line that is not JSON fails the test.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The events a command wrote to stdout.
pub fn events(out: &Output) -> Vec<Value> {
    json_lines(&String::from_utf8_lossy(&out.stdout))
}

/// Counts allocations made by the current thread (tests run on several threads at once).
/// A test file installs it with `#[global_allocator]` and reads [`allocations`].
pub struct CountingAlloc;

thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Allocations made by this thread so far.
pub fn allocations() -> usize {
    ALLOCS.with(|n| n.get())
}

unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Appends twenty combined-format requests from `client`, stamped now, to the log at `path`: a
/// flood for a rule of a few requests per second.
pub fn append_flood(path: &Path, client: &str) {
    use std::io::Write;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let line = format!(
        "{client} - - [{}] \"GET / HTTP/1.1\" 200 5 \"-\" \"flood\"\n",
        floodwatch::lab::scenario::httpdate(now)
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(line.repeat(20).as_bytes()).unwrap();
}

/// A loopback port held for a server that a test starts later: bound but not listening, so a
/// connection to it is refused until [`ReservedPort::listen`], and no other program can take it
/// meanwhile (a port found free, released and bound again later races with every other program
/// on the machine).
pub struct ReservedPort(socket2::Socket);

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&any.into()).expect("bind a loopback port");
        ReservedPort(socket)
    }

    pub fn port(&self) -> u16 {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound IPv4 address")
            .port()
    }

    /// The server's socket, taking connections from now on.
    pub fn listen(self) -> std::net::TcpListener {
        self.0.listen(128).expect("listen on the reserved port");
        self.0.into()
    }
}

/// Whether the tests run in CI (`CI` set and not empty, as `.ci/run` run as root and CI
/// services set it; the packaging scripts read it the same way): there, a test whose
/// requirement is missing fails instead of skipping, so a skip cannot pass unseen.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips (returns true, saying why on stderr) when `missing` names what this machine lacks for
/// the test; in CI ([`in_ci`]) a missing requirement fails the test instead.
pub fn skip_unless_ci(missing: Option<&str>) -> bool {
    let Some(missing) = missing else { return false };
    assert!(
        !in_ci(),
        "CI must run this test, but this machine has no {missing} (see .ci/run)"
    );
    eprintln!("SKIPPED: this machine has no {missing}");
    true
}

/// The lines a child writes to `r` (its stdout or stderr), as they come, read on a thread of
/// their own so that a test can wait for one with a deadline.
pub fn lines(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}
