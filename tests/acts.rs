//! Only `watch` acts: `replay` (unless asked with `--sinks`), `analyze`, `test` and `bench` leave
//! the configured sinks alone, and `replay --sinks` never acts beside a running watch of the
//! same state folder. Through the binary, with a production-like config: a jsonl events log, an
//! nginx deny file holding a live ban and a reload command that leaves a trace.

mod util;
use util::{demo_glob, events, floodwatch, lines, ok, stderr};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// What the deny file holds before anything runs: a ban of the running watch.
const LIVE_DENY: &str = "# written by the running watch\ndeny 192.0.2.99;\n";

/// A production-like setup in a temporary folder.
struct Prod {
    root: tempfile::TempDir,
}

impl Prod {
    fn new() -> Prod {
        let root = tempfile::tempdir().unwrap();
        let p = Prod { root };
        fs::write(p.deny(), LIVE_DENY).unwrap();
        fs::create_dir_all(p.path("vhosts/quiet.example/logs")).unwrap();
        fs::write(p.path("vhosts/quiet.example/logs/access_log"), "").unwrap();
        let config = format!(
            "[state]\ndir = {state:?}\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {events:?}\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {deny:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"touch\", {reloaded:?}]\nmin_reload_interval = \"1s\"\n",
            state = p.state(),
            events = p.events(),
            deny = p.deny(),
            reloaded = p.reloaded(),
        );
        fs::write(p.config(), config).unwrap();
        p
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    fn config(&self) -> PathBuf {
        self.path("floodwatch.toml")
    }
    fn cfg(&self) -> String {
        self.config().display().to_string()
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
    fn events(&self) -> PathBuf {
        self.path("events.jsonl")
    }
    fn deny(&self) -> PathBuf {
        self.path("deny.conf")
    }
    fn reloaded(&self) -> PathBuf {
        self.path("reloaded")
    }
    /// The quiet vhost's log: watch follows it, nothing in it is a flood.
    fn quiet_glob(&self) -> String {
        self.path("vhosts/*/logs/access_log").display().to_string()
    }

    /// Every sink as it was before: the live ban still in the deny file, no reload, no event.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            fs::read_to_string(self.deny()).unwrap(),
            LIVE_DENY,
            "{what} rewrote the deny file"
        );
        assert!(!self.reloaded().exists(), "{what} ran the reload command");
        let logged = fs::read_to_string(self.events()).unwrap_or_default();
        assert!(logged.is_empty(), "{what} wrote events: {logged}");
    }
}

fn bans(out: &std::process::Output) -> Vec<String> {
    let mut keys: Vec<String> = events(out)
        .iter()
        .filter(|e| e["type"] == "ban")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn replay_prints_its_events_and_touches_no_sink_unless_asked() {
    let prod = Prod::new();
    let cfg = prod.cfg();
    let out = floodwatch(&["replay", "--no-progress", "--config", &cfg, &demo_glob()]);
    let printed = bans(ok(&out));
    assert!(!printed.is_empty(), "the demo logs hold floods");
    prod.assert_untouched("replay");
    // The old spelling still means what it meant.
    let old = floodwatch(&["replay", "--no-sinks", "--config", &cfg, &demo_glob()]);
    assert_eq!(bans(ok(&old)), printed);
    prod.assert_untouched("replay --no-sinks");
    // --dry-run says what each sink would do, and does nothing.
    let dry = floodwatch(&["replay", "--dry-run", "--config", &cfg, &demo_glob()]);
    assert!(ok(&dry).stdout.is_empty());
    assert!(stderr(&dry).contains("dry run"), "{}", stderr(&dry));
    prod.assert_untouched("replay --dry-run");
    for both in [["--sinks", "--dry-run"], ["--sinks", "--no-sinks"]] {
        let out = floodwatch(&["replay", both[0], both[1], "--config", &cfg, &demo_glob()]);
        assert_eq!(out.status.code(), Some(2), "{both:?}");
    }

    // Asked, with no watch running: the sinks get the events stdout got.
    let acted = floodwatch(&["replay", "--sinks", "--config", &cfg, &demo_glob()]);
    assert!(ok(&acted).stdout.is_empty());
    let logged = fs::read_to_string(prod.events()).unwrap();
    let mut keys: Vec<String> = logged
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "ban")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, printed);
    let deny = fs::read_to_string(prod.deny()).unwrap();
    assert!(deny.contains(&format!("deny {};", printed[0])), "{deny}");
}

/// A running `watch`, started on a config; killed if the test fails.
struct Watch {
    child: Child,
    err: Receiver<String>,
}

impl Watch {
    fn start(config: &str, glob: &str) -> Watch {
        let mut child = util::command()
            .args(["watch", "--config", config, glob])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = lines(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        loop {
            match err.recv_timeout(Duration::from_secs(15)) {
                Ok(l) if l.contains("watching") => break,
                Ok(l) => seen.push(l),
                Err(_) => panic!("watch did not start: {seen:?}"),
            }
        }
        Watch { child, err }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let log: Vec<String> = self.err.try_iter().collect();
        assert!(status.success(), "{log:?}");
    }

    /// As a crash or the OOM killer would end it: the lock file stays behind.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn jsonl_only(dir: &Path, state: &Path, events: &Path, socket: Option<&Path>) -> String {
    let socket = socket.map_or(String::new(), |s| format!("socket = {s:?}\n"));
    let path = dir.join(format!("fw-{}.toml", fs::read_dir(dir).unwrap().count()));
    fs::write(
        &path,
        format!(
            "[state]\ndir = {state:?}\n{socket}\n[[sink]]\ntype = \"jsonl\"\npath = {events:?}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn replay_sinks_is_refused_while_a_watch_uses_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let prod = Prod::new();
    let events = dir.path().join("events.jsonl");
    let cfg = jsonl_only(dir.path(), &prod.state(), &events, None);
    let w = Watch::start(&cfg, &prod.quiet_glob());

    let refused = floodwatch(&["replay", "--sinks", "--config", &cfg, &demo_glob()]);
    assert_eq!(refused.status.code(), Some(1));
    let why = stderr(&refused);
    assert!(why.contains(&prod.state().display().to_string()), "{why}");
    assert!(why.contains(&format!("watch (pid {})", w.pid())), "{why}");
    assert!(refused.stdout.is_empty());
    assert_eq!(fs::read_to_string(&events).unwrap_or_default(), "");
    // Without --sinks, or in dry run, replay may run beside it: it acts on nothing.
    ok(&floodwatch(&["replay", "--config", &cfg, &demo_glob()]));
    ok(&floodwatch(&[
        "replay",
        "--dry-run",
        "--config",
        &cfg,
        &demo_glob(),
    ]));

    // A second watch on the same state folder is refused by the lock, even with a control socket
    // of its own (the socket alone did not tell).
    let other_socket = dir.path().join("other.sock");
    let second = jsonl_only(dir.path(), &prod.state(), &events, Some(&other_socket));
    let out = floodwatch(&["watch", "--config", &second, &prod.quiet_glob()]);
    assert_eq!(out.status.code(), Some(1));
    let why = stderr(&out);
    assert!(
        why.contains(&format!("in use by watch (pid {})", w.pid())),
        "{why}"
    );

    // Stopped: replay --sinks may act.
    w.stop();
    ok(&floodwatch(&[
        "replay",
        "--sinks",
        "--config",
        &cfg,
        &demo_glob(),
    ]));
    assert!(fs::read_to_string(&events).unwrap().contains("\"ban\""));

    // A watch that crashed leaves its lock file, which blocks nobody.
    let w = Watch::start(&cfg, &prod.quiet_glob());
    w.kill();
    assert!(prod.state().join("watch.lock").exists());
    ok(&floodwatch(&[
        "replay",
        "--sinks",
        "--config",
        &cfg,
        &demo_glob(),
    ]));
    let w = Watch::start(&cfg, &prod.quiet_glob());
    w.stop();
}

#[test]
fn a_watch_does_not_start_while_replay_sinks_acts() {
    let dir = tempfile::tempdir().unwrap();
    let prod = Prod::new();
    fs::create_dir_all(prod.state()).unwrap();
    // A jsonl sink writing into a FIFO nobody reads: the replay waits at its sink, lock held.
    let fifo = dir.path().join("events.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cfg = jsonl_only(dir.path(), &prod.state(), &fifo, None);
    let mut replay = util::command()
        .args(["replay", "--sinks", "--config", &cfg, &demo_glob()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = prod.state().join("watch.lock");
    let mut waited = 0;
    while !fs::read_to_string(&lock).is_ok_and(|t| t.contains("replay --sinks")) {
        assert!(waited < 1500, "replay --sinks took no lock");
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    let out = floodwatch(&["watch", "--config", &cfg, &prod.quiet_glob()]);
    let _ = replay.kill();
    let _ = replay.wait();
    assert_eq!(out.status.code(), Some(1));
    let why = stderr(&out);
    assert!(
        why.contains(&format!("in use by replay --sinks (pid {})", replay.id())),
        "{why}"
    );
}

#[test]
fn analyze_test_and_check_config_leave_the_sinks_alone() {
    let prod = Prod::new();
    let cfg = prod.cfg();
    let out = floodwatch(&["analyze", "--json", "--config", &cfg, &demo_glob()]);
    let report: serde_json::Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
    prod.assert_untouched("analyze");
    // Its what-if is what replay with the same config bans, not "nobody" (the events went to the
    // sinks instead of the what-if).
    let replay = floodwatch(&["replay", "--config", &cfg, &demo_glob()]);
    // The cell of the rule's own threshold, in the grid around it.
    let own = &report["grids"][0]["configured"];
    let cell = report["what_if"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rate"] == own["rate"] && c["burst"] == own["burst"])
        .unwrap();
    let mut keys: Vec<String> = cell["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert!(!keys.is_empty());
    assert_eq!(keys, bans(ok(&replay)));

    let log = util::testdata("replay/vhosts/shop.example.org/logs/access_log");
    ok(&floodwatch(&["test", "--config", &cfg, &log]));
    prod.assert_untouched("test");
    floodwatch(&["check-config", "--config", &cfg]);
    prod.assert_untouched("check-config");
}

/// A sink a command does not use cannot stop it: replay (without --sinks), analyze and test do
/// not read the [[sink]] tables, so a Cloudflare token variable set only in the service's
/// environment is no error there; replay --sinks, --dry-run and check-config still refuse it.
#[test]
fn a_sink_the_command_does_not_use_cannot_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fw.toml");
    fs::write(
        &config,
        "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"\n\
         api_token_env = \"FLOODWATCH_TEST_TOKEN_NOT_SET\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let log = util::testdata("replay/vhosts/example.com/logs/access_log");
    let replay = floodwatch(&["replay", "--config", cfg, &demo_glob()]);
    assert!(!bans(ok(&replay)).is_empty());
    // Said, as what would stop watch.
    let said = stderr(&replay);
    assert!(
        said.contains("warning: ") && said.contains("api_token_env"),
        "{said}"
    );
    assert!(said.contains("watch would refuse this config"), "{said}");
    ok(&floodwatch(&["analyze", "--config", cfg, &demo_glob()]));
    ok(&floodwatch(&["test", "--config", cfg, &log]));
    for args in [
        vec!["replay", "--sinks", "--config", cfg, &log],
        vec!["replay", "--dry-run", "--config", cfg, &log],
        vec!["check-config", "--config", cfg],
    ] {
        let out = floodwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("api_token_env"), "{}", stderr(&out));
    }
}
