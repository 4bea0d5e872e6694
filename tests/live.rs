//! Seeing a running watch live, through the binary: `floodwatch top --once` and `--json` show
//! a flooder's key; `top` against no watch says so; the dashboard's JSON API answers (and
//! refuses malformed requests with 400); the page itself in a real headless chromium shows the
//! flooder without a JavaScript error; the shipped Grafana dashboard and alert rules name only
//! metrics a running watch exports, and promtool accepts the rules and the metrics.

mod util;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{append_flood, eventually, floodwatch, stderr, ReservedPort};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A folder with a config (state, one rule, the metrics endpoint with the dashboard), a log
/// file, and a watch running on them.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Site {
    fn new() -> Site {
        Site::with("")
    }

    /// A site whose config ends with `extra` (sinks).
    fn with(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs").join("shop.example.access_log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "").unwrap();
        let config = dir.path().join("fw.toml");
        // Held until now; a port taken meanwhile fails the start, not the test's meaning.
        let port = ReservedPort::new().port();
        let text = format!(
            "[input]\npaths = [{:?}]\n\n\
             [[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"10m\"\n\n\
             [state]\ndir = {:?}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\ndashboard = true\n{extra}",
            dir.path().join("logs/*.access_log").display().to_string(),
            dir.path().join("state").display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        Site {
            dir,
            config,
            log,
            port,
        }
    }

    fn start(&self) -> RunningWatch {
        let child = util::command()
            .args(["watch", "-c"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("watch.log")).unwrap())
            .spawn()
            .unwrap();
        let w = RunningWatch { child };
        eventually("watch answers status", || {
            self.admin(&["status"]).status.success()
        });
        w
    }

    fn admin(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["-c", self.config.to_str().unwrap()]);
        floodwatch(&all)
    }

    /// Floods from `client` (a ban) and writes a few quiet lines from `quiet`.
    fn flood(&self, client: &str, quiet: &str) {
        append_flood(&self.log, client);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let line = format!(
            "{quiet} - - [{}] \"GET /missing HTTP/1.1\" 404 5 \"-\" \"quiet\"\n",
            floodwatch::lab::scenario::httpdate(now)
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(line.repeat(2).as_bytes()).unwrap();
    }

    /// One HTTP GET of `target` on the metrics listener: (status line, body).
    fn get(&self, target: &str) -> (String, String) {
        http_get(self.port, target)
    }
}

fn http_get(port: u16, target: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A running watch, stopped with SIGTERM on drop.
struct RunningWatch {
    child: std::process::Child,
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key_of<'a>(top: &'a Value, key: &str) -> Option<&'a Value> {
    top["keys"].as_array()?.iter().find(|k| k["key"] == key)
}

/// The flooder shows in `top --json` (banned, its bucket full) and in `top --once`, beside a
/// quiet client; the vhost's rate and 4xx share are there.
#[test]
fn top_shows_the_flooders_key() {
    let site = Site::new();
    let _watch = site.start();
    site.flood("203.0.113.7", "198.51.100.20");
    let mut last = Value::Null;
    eventually("top --json shows the flooder banned", || {
        let out = site.admin(&["top", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        last = serde_json::from_str(&stdout(&out)).unwrap();
        key_of(&last, "203.0.113.7").is_some_and(|k| k["state"] == "banned")
    });
    let k = key_of(&last, "203.0.113.7").unwrap();
    assert_eq!(k["rule"], "flood");
    // Full at the flood, draining at 1r/s since.
    assert!(k["fill"].as_f64().unwrap() > 50.0, "{k}");
    assert!(k["requests"].as_u64().unwrap() >= 6, "{k}");
    assert!(k["until"].is_string(), "{k}");
    let quiet = key_of(&last, "198.51.100.20").expect("the quiet client too");
    assert_eq!(quiet["state"], "counting", "{quiet}");
    assert!(last["bans"]["active"].as_u64().unwrap() >= 1, "{last}");
    let vhosts = last["vhosts"].as_array().unwrap();
    assert!(
        vhosts.iter().any(|v| v["vhost"] == "shop.example"),
        "{last}"
    );

    let out = site.admin(&["top", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(text.contains("banned"), "{text}");
    assert!(text.contains("KEY"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let out = site.admin(&["top", "--once", "--vhost", "other.example"]);
    assert!(!stdout(&out).contains("203.0.113.7"), "{}", stdout(&out));

    // Its vhost: the one it hits most while someone looks (its rule does not key on vhosts).
    eventually("the quiet client's vhost is known", || {
        site.flood("203.0.113.7", "198.51.100.20");
        let out = site.admin(&["top", "--json"]);
        let top: Value = serde_json::from_str(&stdout(&out)).unwrap();
        key_of(&top, "198.51.100.20").is_some_and(|k| k["vhost"] == "shop.example")
    });

    // Banned by hand (under `manual`, not the rule that counts it): shown banned too.
    let out = site.admin(&["ban", "198.51.100.20", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.admin(&["top", "--json"]);
    let top: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let quiet = key_of(&top, "198.51.100.20").expect("still sampled");
    assert_eq!(quiet["state"], "banned", "{quiet}");
}

/// No watch: said plainly, exit code 1. Stdout not a terminal: `top` without --once says so.
#[test]
fn top_against_no_watch_says_so_and_exits_1() {
    let site = Site::new();
    let out = site.admin(&["top", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no watch is running"),
        "{}",
        stderr(&out)
    );
    let out = site.admin(&["top"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let _watch = site.start();
    let out = site.admin(&["top"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a terminal"), "{}", stderr(&out));
}

/// The dashboard's API: `/api/top` has the flooder, `/api/history` its points; requests it
/// does not take get 400, and the watch goes on answering.
#[test]
fn the_api_answers_and_refuses_malformed_requests() {
    let site = Site::new();
    let _watch = site.start();
    site.flood("203.0.113.8", "198.51.100.21");
    eventually("/api/top shows the flooder", || {
        let (status, body) = site.get("/api/top?limit=10");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let top: Value = serde_json::from_str(&body).unwrap();
        key_of(&top, "203.0.113.8").is_some()
    });
    let (status, body) = site.get("/api/history");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["step_seconds"], 10);
    assert!(h["points"].is_array());
    for bad in [
        "/api/top?limit=0",
        "/api/top?limit=abc",
        "/api/top?limit=5000",
        "/api/top?x=1",
        "/api/history?since=1",
    ] {
        let (status, _) = site.get(bad);
        assert!(status.starts_with("HTTP/1.1 400"), "{bad}: {status}");
    }
    let (status, body) = site.get("/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<script src=\"/dashboard.js\""), "{body}");
    let (status, _) = site.get("/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "still answering");
}

/// The path of Debian's chromium, when installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// The page in a real headless chromium against a running watch with a flood: it renders,
/// shows the flooder's key within seconds, and the browser logs no JavaScript error.
#[test]
fn the_dashboard_shows_the_flooder_in_a_real_browser() {
    let browser = chromium();
    if util::skip_unless_ci(
        browser
            .is_none()
            .then_some("chromium (Debian's `chromium`)"),
    ) {
        return;
    }
    let browser = browser.unwrap();
    let site = Site::new();
    let _watch = site.start();
    site.flood("203.0.113.9", "198.51.100.22");
    let profile = site.dir.path().join("chromium-profile");
    let url = format!("http://127.0.0.1:{}/", site.port);
    let mut seen = String::new();
    eventually("the page shows the flooder", || {
        let out = std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=4000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let dom = stdout(&out);
        let log = stderr(&out);
        // Console messages and uncaught exceptions, as chromium logs them (`INFO:CONSOLE:1]
        // "Uncaught Error: ..."`): the page writes none of its own, so any is a failure.
        for line in log.lines() {
            assert!(
                !(line.contains(":CONSOLE") || line.contains("Uncaught")),
                "the browser logged from the page's JavaScript: {line}"
            );
        }
        assert!(
            !dom.contains("data-error="),
            "the page caught an error: {dom}"
        );
        seen = dom;
        seen.contains("203.0.113.9") && seen.contains("data-state=\"ok\"")
    });
    assert!(seen.contains("<svg"), "the charts are drawn: {seen}");
    assert!(seen.contains("shop.example"), "{seen}");
}

/// The shipped monitoring files, from the repository.
fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/monitoring")
        .join(file)
}

fn promtool() -> Option<&'static str> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// The alert rules are valid rules for Prometheus, and name the alerts the README promises.
#[test]
fn the_alert_rules_pass_promtool() {
    let tool = promtool();
    if util::skip_unless_ci(tool.is_none().then_some("promtool (Debian's `prometheus`)")) {
        return;
    }
    let rules = monitoring("floodwatch-alerts.yml");
    let out = std::process::Command::new(tool.unwrap())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in [
        "FloodwatchDown",
        "FloodwatchNotScraped",
        "FloodwatchSinkFailing",
        "FloodwatchReadLag",
        "FloodwatchBanStorm",
        "FloodwatchUnusableLines",
    ] {
        assert!(text.contains(&format!("alert: {alert}\n")), "{alert}");
    }
}

/// Every metric the Grafana dashboard and the alert rules name is one a running watch (with a
/// sink, after a ban) exports on /metrics, and promtool finds nothing wrong in that output.
#[test]
fn the_dashboard_and_rules_name_only_metrics_watch_exports() {
    let tool = promtool();
    if util::skip_unless_ci(tool.is_none().then_some("promtool (Debian's `prometheus`)")) {
        return;
    }
    let events = tempfile::tempdir().unwrap();
    let sink = format!(
        "\n[[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
        events.path().join("bans.jsonl").display().to_string()
    );
    let site = Site::with(&sink);
    let _watch = site.start();
    site.flood("203.0.113.10", "198.51.100.23");
    let mut metrics = String::new();
    eventually("the ban is counted on /metrics", || {
        let (status, body) = site.get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        metrics = body;
        metrics.contains("floodwatch_bans_total{rule=\"flood\"} 1")
    });
    let exported: std::collections::BTreeSet<&str> = (metrics.lines())
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for file in ["floodwatch-grafana.json", "floodwatch-alerts.yml"] {
        let text = std::fs::read_to_string(monitoring(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(['f', 'p']) {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let before = rest[..at].chars().last();
            let starts = before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if starts && (word.starts_with("floodwatch_") || word.starts_with("process_")) {
                named.insert((file, word.clone()));
            }
            rest = &rest[at + word.len().max(1)..];
        }
    }
    assert!(named.len() > 20, "{named:?}");
    for (file, name) in &named {
        assert!(
            exported.contains(name.as_str()),
            "{file} names {name}, which watch does not export: {exported:?}"
        );
    }
    let mut check = std::process::Command::new(tool.unwrap())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
