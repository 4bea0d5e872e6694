//! End-to-end tests of `floodwatch watch`: the real binary following real files in a temporary
//! folder laid out like Plesk's `/var/www/vhosts/<vhost>/logs/`, stopped with real signals.
//!
//! Waits are deadlines against hangs (generous, so a loaded machine does not fail them), not
//! measurements: how fast watch reacts is reported by the benchmark figures in docs/benchmarks.md.

mod util;

use util::lines;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floodwatch::lab::scenario::httpdate;
use serde_json::Value;

/// Against hangs only.
const DEADLINE: Duration = Duration::from_secs(15);

struct Watch {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every stderr line seen so far.
    log: Vec<String>,
}

impl Watch {
    /// Starts `watch` and waits until it has looked at the files.
    fn start(config: &Path, glob: &str) -> Watch {
        Watch::start_args(&["--config", config.to_str().unwrap(), glob])
    }

    fn start_args(args: &[&str]) -> Watch {
        let mut child = util::command()
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start floodwatch");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let mut w = Watch {
            child,
            out,
            err,
            log: Vec::new(),
        };
        w.wait_log("watching");
        w
    }

    fn wait_log(&mut self, what: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what:?} on stderr; got {:?}", self.log),
            }
        }
    }

    /// The next event on stdout.
    fn event(&mut self) -> Value {
        let l = self
            .out
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no event; stderr: {:?}", self.log));
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    }

    /// SIGTERM; returns the exit status, the remaining events and the last stderr line.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<Value>, String, Duration) {
        let sent = Instant::now();
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(sent.elapsed() < DEADLINE, "watch did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = sent.elapsed();
        let events = self
            .out
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        self.log.extend(self.err.iter());
        let last = self.log.last().cloned().unwrap_or_default();
        (status, events, last, took)
    }
}

impl Watch {
    /// SIGKILL, as a crash or the OOM killer would end it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A failed test must not leave watch running.
impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Plesk-like tree: `root/vhosts/<vhost>/logs/`, a config with one strict rule and a state
/// folder, and the glob for both logs of every vhost.
struct Site {
    root: tempfile::TempDir,
}

impl Site {
    fn new(vhosts: &[&str]) -> Site {
        Site::with_ban(vhosts, "1h")
    }

    fn with_ban(vhosts: &[&str], ban: &str) -> Site {
        Site::with_rule(vhosts, "1r/s", 5, ban)
    }

    /// With the one rule `flood` at `rate`, `burst` and `ban`.
    fn with_rule(vhosts: &[&str], rate: &str, burst: u32, ban: &str) -> Site {
        let root = tempfile::tempdir().unwrap();
        let site = Site { root };
        for v in vhosts {
            fs::create_dir_all(site.logs(v)).unwrap();
            fs::write(site.logs(v).join("access_log"), old_lines(3)).unwrap();
        }
        let config = format!(
            "[state]\ndir = \"{}\"\n\n[[rule]]\nname = \"flood\"\nrate = \"{rate}\"\nburst = {burst}\nban = \"{ban}\"\n",
            site.root.path().join("state").display()
        );
        fs::write(site.config(), config).unwrap();
        site
    }

    fn logs(&self, vhost: &str) -> PathBuf {
        self.root.path().join("vhosts").join(vhost).join("logs")
    }

    fn config(&self) -> PathBuf {
        self.root.path().join("floodwatch.toml")
    }

    fn glob(&self) -> String {
        format!("{}/vhosts/*/logs/access*_log", self.root.path().display())
    }

    fn start(&self) -> Watch {
        Watch::start(&self.config(), &self.glob())
    }
}

/// A combined-format line from `ip` stamped now.
fn line(ip: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{ip} - - [{}] \"GET /index.php HTTP/1.1\" 200 512 \"-\" \"test\"\n",
        httpdate(secs)
    )
}

/// Quiet lines from an hour ago (what a log holds before watch starts).
fn old_lines(n: usize) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    (0..n)
        .map(|i| {
            format!(
                "192.0.2.{i} - - [{}] \"GET / HTTP/1.1\" 200 1 \"-\" \"old\"\n",
                httpdate(secs + i as i64)
            )
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn flood(ip: &str, n: usize) -> String {
    (0..n).map(|_| line(ip)).collect()
}

/// The `lines` count in the report watch writes on stderr when it stops.
fn lines_read(report: &str) -> u64 {
    let after = report
        .split("files: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{report}"));
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_flood_appended_after_start_is_banned() {
    let site = Site::new(&["a.example", "quiet.example"]);
    let mut w = site.start();
    append(
        &site.logs("a.example").join("access_log"),
        &flood("203.0.113.7", 20),
    );
    let ev = w.event();
    assert_eq!(ev["type"], "ban");
    assert_eq!(ev["key"], "203.0.113.7");
    assert_eq!(ev["vhost"], "a.example");
    // Seen in the log (the journal) too, as fail2ban logs its bans.
    w.wait_log(r#"ban 203.0.113.7 rule=flood vhost="a.example" requests="#);
    let (status, rest, report, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "one ban only: {rest:?}");
    // `start_at = "end"`: the lines present at the first start are not read.
    assert_eq!(lines_read(&report), 20, "{report}");
}

#[test]
fn a_vhost_folder_and_log_created_after_start_are_picked_up() {
    let site = Site::new(&["a.example"]);
    let mut w = site.start();
    // The folder first, then (after watch had a chance to see it) the log in it.
    fs::create_dir_all(site.logs("new.example")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let log = site.logs("new.example").join("access_ssl_log");
    append(&log, &flood("198.51.100.9", 20));
    let ev = w.event();
    assert_eq!(ev["type"], "ban");
    assert_eq!(ev["key"], "198.51.100.9");
    assert_eq!(ev["vhost"], "new.example", "the folder names the vhost");
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 20, "a new file is read from its start");
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_resumes_without_repeating_the_ban() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    assert_eq!(w.event()["key"], "203.0.113.7");
    let (status, rest, report, took) = w.stop();
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(lines_read(&report), 20);
    eprintln!("stopped {} ms after SIGTERM", took.as_millis());

    // Written while stopped: more of the banned key, and a new flooder.
    append(&log, &flood("203.0.113.7", 10));
    append(&log, &flood("198.51.100.1", 20));
    let mut w = site.start();
    assert!(w.log[0].starts_with("floodwatch: config: "), "{:?}", w.log);
    assert!(w.log[1].contains("1 bans restored"), "{:?}", w.log);
    let ev = w.event();
    assert_eq!(ev["type"], "ban");
    assert_eq!(
        ev["key"], "198.51.100.1",
        "the restored ban is not emitted again"
    );
    let (status, rest, report, _) = w.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        lines_read(&report),
        30,
        "resumed at the saved offset: {report}"
    );
}

#[test]
fn rotation_while_running_loses_no_line() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let mut w = site.start();
    // Four requests before the rotation and four after: only together are they a flood
    // (burst 5), so the ban shows that both halves were counted.
    append(&log, &flood("203.0.113.50", 4));
    append(&log, &flood("192.0.2.200", 1));
    wait_read(&site, &log);
    fs::rename(&log, log.with_extension("1")).unwrap();
    // The server still writes to the old file a moment, then to the new one.
    append(&log.with_extension("1"), &flood("203.0.113.50", 2));
    append(&log, &flood("203.0.113.50", 2));
    let ev = w.event();
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("ban"), Some("203.0.113.50"))
    );
    // The seventh request overflows, or the eighth when a second passed between the halves
    // (1r/s): either needs both halves.
    assert!([7, 8].contains(&ev["requests"].as_u64().unwrap()), "{ev}");
    append(&log, &flood("192.0.2.201", 3));
    // Read at the latest by the last round watch makes when it stops.
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 4 + 1 + 2 + 2 + 3, "{report}");
}

#[test]
fn a_restart_while_a_log_is_renamed_and_not_created_again_yet_loses_no_line() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let rotated = log.with_extension("1");
    let w = site.start();
    append(&log, &flood("192.0.2.201", 2));
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 2, "{report}");
    // While stopped: renamed, the server goes on writing to its old file a moment.
    fs::rename(&log, &rotated).unwrap();
    append(&rotated, &flood("192.0.2.202", 3));
    // Started before the server opens its new log: the renamed file is read on, then the new.
    let w = site.start();
    append(&log, &flood("192.0.2.203", 4));
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 3 + 4, "{report}");
    // Its checkpoint, new file and all, resumes with nothing read twice.
    append(&log, &flood("192.0.2.204", 1));
    let (_, _, report, _) = site.start().stop();
    assert_eq!(lines_read(&report), 1, "{report}");
}

#[test]
fn a_literal_path_missing_at_start_is_read_once_it_appears() {
    let site = Site::new(&[]);
    let path = site.root.path().join("access.log");
    let mut w = Watch::start(&site.config(), path.to_str().unwrap());
    // Said, and not counted as watched.
    let said = format!(
        "{}: no file there yet; followed once one appears",
        path.display()
    );
    assert!(w.log.iter().any(|l| l.contains(&said)), "{:?}", w.log);
    assert!(
        w.log.iter().any(|l| l.contains("watching 0 files")),
        "{:?}",
        w.log
    );
    append(&path, &flood("203.0.113.77", 20));
    let ev = w.event();
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("ban"), Some("203.0.113.77"))
    );
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 20, "{report}");
}

#[test]
fn the_first_vhost_is_picked_up_when_the_vhosts_folder_did_not_exist_at_start() {
    let site = Site::new(&[]);
    assert!(!site.root.path().join("vhosts").exists());
    let mut w = site.start();
    fs::create_dir_all(site.logs("first.example")).unwrap();
    append(
        &site.logs("first.example").join("access_log"),
        &flood("198.51.100.33", 20),
    );
    let ev = w.event();
    assert_eq!(ev["key"], "198.51.100.33");
    assert_eq!(ev["vhost"], "first.example");
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 20, "{report}");
}

#[test]
fn a_ban_ends_on_the_wall_clock_while_the_logs_are_idle_and_while_stopped() {
    let site = Site::with_ban(&["a.example"], "2s");
    let log = site.logs("a.example").join("access_log");
    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    assert_eq!(w.event()["type"], "ban");
    // No line comes after the flood: only the wall clock can end the ban.
    let ev = w.event();
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("unban"), Some("203.0.113.7"))
    );

    // Banned again (a second offense lasts longer: 4 s, counted from its log time, which has
    // one-second resolution), stopped while banned...
    std::thread::sleep(Duration::from_millis(1100));
    append(&log, &flood("203.0.113.7", 20));
    let ban = w.event();
    assert_eq!(
        (ban["type"].as_str(), ban["offense"].as_u64()),
        (Some("ban"), Some(2))
    );
    let (status, rest, _, _) = w.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "stopped before the ban ended: {rest:?}");
    // ...and restarted after it ended: the end is announced at start.
    std::thread::sleep(Duration::from_millis(4500));
    let mut w = site.start();
    let ev = w.event();
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("unban"), Some("203.0.113.7"))
    );
    assert_eq!(ev["time"], ban["until"], "ended when the ban said it would");
    let (status, _, _, _) = w.stop();
    assert!(status.success());
}

#[test]
fn copytruncate_while_running_reads_the_truncated_file_from_its_start() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let mut w = site.start();
    append(&log, &flood("192.0.2.10", 3));
    // Read before the truncation, however slow the machine: else the 20 lines after it would
    // be all there is to read, and the count below would not tell a truncation noticed.
    wait_read(&site, &log);
    // logrotate's copytruncate: copy, then truncate in place; the server goes on writing.
    fs::copy(&log, log.with_extension("1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &flood("203.0.113.99", 20));
    let ev = w.event();
    assert_eq!(ev["key"], "203.0.113.99");
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    assert_eq!(lines_read(&report), 23, "{report}");
}

#[test]
fn sighup_applies_new_input_paths_and_keeps_running_on_a_broken_config() {
    let site = Site::new(&["a.example"]);
    let base = fs::read_to_string(site.config()).unwrap();
    let with_paths = |glob: &str| format!("[input]\npaths = [\"{glob}\"]\n\n{base}");
    let elsewhere = site.root.path().join("elsewhere/*/access_log");
    fs::write(site.config(), with_paths(elsewhere.to_str().unwrap())).unwrap();
    let mut w = Watch::start_args(&["--config", site.config().to_str().unwrap()]);
    let hup = |w: &Watch| unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };

    fs::write(site.config(), "[input\nbroken").unwrap();
    hup(&w);
    w.wait_log("keeping the running config");
    fs::write(site.config(), with_paths(&site.glob())).unwrap();
    hup(&w);
    w.wait_log("SIGHUP: watching 1 files");
    append(
        &site.logs("a.example").join("access_log"),
        &flood("203.0.113.8", 20),
    );
    let ev = w.event();
    assert_eq!(
        (ev["key"].as_str(), ev["vhost"].as_str()),
        (Some("203.0.113.8"), Some("a.example"))
    );
    let (status, _, report, _) = w.stop();
    assert!(status.success());
    // The log was there before the reload named it: `start_at = "end"` applies.
    assert_eq!(lines_read(&report), 20, "{report}");
}

#[test]
fn files_a_reload_no_longer_names_are_no_longer_followed() {
    let site = Site::new(&["a.example", "b.example"]);
    let base = fs::read_to_string(site.config()).unwrap();
    let only = |vhost: &str| {
        let glob = site.logs(vhost).join("access_log");
        format!(
            "[input]\npaths = [{:?}]\n\n{base}",
            glob.display().to_string()
        )
    };
    fs::write(site.config(), only("a.example")).unwrap();
    let mut w = Watch::start_args(&["--config", site.config().to_str().unwrap()]);
    fs::write(site.config(), only("b.example")).unwrap();
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    w.wait_log("SIGHUP: watching 1 files");
    append(
        &site.logs("a.example").join("access_log"),
        &flood("203.0.113.1", 20),
    );
    append(
        &site.logs("b.example").join("access_log"),
        &flood("203.0.113.2", 20),
    );
    assert_eq!(w.event()["key"], "203.0.113.2");
    let (status, rest, report, _) = w.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "a.example is not followed: {rest:?}");
    assert!(report.contains("watched 1 files: 20 lines"), "{report}");
}

/// Waits until the saved read offsets show `path` read to its end.
fn wait_read(site: &Site, path: &Path) {
    let size = fs::metadata(path).unwrap().len();
    let cps = site.root.path().join("state/checkpoints.json");
    let offset = format!("\"offset\":{size}");
    wait_text(&cps, &offset, |text| {
        let compact: String = text.split_whitespace().collect();
        compact.contains(&offset)
    });
}

#[test]
fn sighup_reloads_rules_and_allowlist_keeping_buckets_and_bans() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    append(&site.config(), "\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let base = fs::read_to_string(site.config()).unwrap();
    let mut w = site.start();
    let metrics = metrics_addr(&w);
    let hup = |w: &Watch| unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };

    // Five requests fill the bucket of rule "flood" (1r/s, burst 5) without overflowing it.
    append(&log, &flood("203.0.113.8", 5));
    wait_read(&site, &log);
    // A config that loads but does not compile (a format without a client) changes nothing.
    fs::write(
        site.config(),
        format!("[input]\nformat = \"nginx:'$request'\"\n\n{base}"),
    )
    .unwrap();
    hup(&w);
    w.wait_log("keeping the running config");
    // The same rule, slower (1r/m: hardly any decay from here on) and with a longer ban, and a
    // second rule. The bucket is kept (excess 4000, or 3000 if the five straddled a second),
    // so the second or third request after the reload overflows it; a new bucket would take
    // six.
    let second = "\n[[rule]]\nname = \"second\"\nrate = \"100r/s\"\nburst = 100\n";
    let slower = base
        .replace("\"1r/s\"", "\"1r/m\"")
        .replace("\"1h\"", "\"2h\"");
    fs::write(site.config(), slower + second).unwrap();
    hup(&w);
    w.wait_log("SIGHUP: config reloaded (rules)");
    append(&log, &flood("203.0.113.8", 3));
    let ban = w.event();
    assert_eq!(
        (
            ban["type"].as_str(),
            ban["key"].as_str(),
            ban["rule"].as_str()
        ),
        (Some("ban"), Some("203.0.113.8"), Some("flood"))
    );
    assert_eq!(ban["ban_seconds"], 7200, "{ban}");
    assert!([7, 8].contains(&ban["requests"].as_u64().unwrap()), "{ban}");

    // Allowlisting the banned address ends its ban at once.
    let allow = "[allow]\ncidrs = [\"203.0.113.0/24\"]\n\n";
    fs::write(site.config(), format!("{allow}{base}")).unwrap();
    hup(&w);
    let unban = w.event();
    assert_eq!(
        (unban["type"].as_str(), unban["key"].as_str()),
        (Some("unban"), Some("203.0.113.8"))
    );
    w.wait_log("SIGHUP: config reloaded (rules, allowlist)");
    append(&log, &flood("203.0.113.8", 20));
    let (_, text) = http_get(&metrics, "/metrics");
    let reloads = "floodwatch_config_reloads_total";
    assert_eq!(
        sample(&text, &format!("{reloads}{{result=\"applied\"}}")),
        2
    );
    assert_eq!(
        sample(&text, &format!("{reloads}{{result=\"refused\"}}")),
        1
    );
    assert_eq!(sample(&text, "floodwatch_config_last_reload_successful"), 1);
    let (status, rest, _, _) = w.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "allowlisted: {rest:?}");
}

/// The metrics endpoint's address, as watch logs it at start.
fn metrics_addr(w: &Watch) -> String {
    w.log
        .iter()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address on stderr: {:?}", w.log))
        .to_string()
}

/// Behind Cloudflare, in watch as in replay: every request arrives from an edge, the real client
/// is in `$http_cf_connecting_ip`; the flooder is banned through the proxy, never the edge.
#[test]
fn behind_cloudflare_the_real_client_is_banned_not_the_edge() {
    let site = Site::new(&["cdn.example"]);
    let format = r#"nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_cf_connecting_ip""#;
    let config = format!(
        "[input]\nformat = '{format}'\n\n[proxy]\ntrusted = [\"cloudflare\"]\n\
         client_ip_field = \"http_cf_connecting_ip\"\n\n\
         [[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"1h\"\n"
    );
    fs::write(site.config(), config).unwrap();
    let mut w = site.start();
    // Two edges (Cloudflare's published ranges) carry a flooder and a quiet visitor.
    let edge_line =
        |edge: &str, client: &str| line(edge).replace('\n', &format!(" \"{client}\"\n"));
    let mut text = String::new();
    for i in 0..20 {
        let edge = if i % 2 == 0 {
            "172.70.1.1"
        } else {
            "162.158.2.2"
        };
        text.push_str(&edge_line(edge, "198.51.100.77"));
    }
    text.push_str(&edge_line("172.70.1.1", "203.0.113.5"));
    append(&site.logs("cdn.example").join("access_log"), &text);
    let ev = w.event();
    assert_eq!(ev["type"], "ban");
    assert_eq!(ev["key"], "198.51.100.77");
    assert_eq!(ev["via_proxy"], true);
    let (status, rest, _, _) = w.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "only the real flooder: {rest:?}");
}

/// Waits until `path` holds `what` (a sink writes it on its own thread).
fn wait_file(path: &Path, what: &str) -> String {
    wait_text(path, what, |text| text.contains(what))
}

/// Waits until the text of the file at `path` satisfies `ready`; `what` names it on failure.
fn wait_text(path: &Path, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        // Lossy: the bans' journal is binary, its keys text.
        let text = fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "no {what:?} in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_a_restart_the_nginx_file_keeps_the_restored_bans() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let deny = site.root.path().join("deny.conf");
    let events = site.root.path().join("events.jsonl");
    let sinks = format!(
        "\n[[sink]]\ntype = \"nginx\"\npath = \"{}\"\nreload_command = [\"true\"]\ntest_command = [\"true\"]\nmin_reload_interval = \"0s\"\n\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n",
        deny.display(),
        events.display()
    );
    append(&site.config(), &sinks);

    let w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    wait_file(&deny, "deny 203.0.113.7;");
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");

    let w = site.start();
    // The nginx sink's start line (its style) may come first.
    assert!(
        w.log.iter().any(|l| l.contains("1 bans restored")),
        "{:?}",
        w.log
    );
    append(&log, &flood("198.51.100.1", 20));
    let text = wait_file(&deny, "deny 198.51.100.1;");
    assert!(
        text.contains("deny 203.0.113.7;"),
        "restored ban dropped: {text}"
    );
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
    let text = fs::read_to_string(&deny).unwrap();
    assert!(
        text.contains("deny 203.0.113.7;") && text.contains("deny 198.51.100.1;"),
        "{text}"
    );
    // The restored ban is not announced again to sinks that report events.
    let bans: Vec<String> = fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "ban")
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bans, ["203.0.113.7", "198.51.100.1"]);
}

/// A webhook receiver on `listener`: the body of every POST, answered 200.
fn webhook_server(listener: std::net::TcpListener) -> Receiver<Value> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn events_a_webhook_could_not_take_are_delivered_after_a_restart() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    // A port nothing listens on during the first run.
    let reserved = util::ReservedPort::new();
    let port = reserved.port();
    append(&site.config(), &webhook_sink(port));

    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    w.wait_log("will retry");
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(
        state_has(&site, "pending.json"),
        "the undelivered ban is kept in the state folder"
    );

    let got = webhook_server(reserved.listen());
    let w = site.start();
    let ev = got
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("the kept ban never arrived; stderr: {:?}", w.log));
    assert_eq!(ev["type"], "ban");
    assert_eq!(ev["key"], "203.0.113.7");
    // New events follow the kept ones.
    append(&log, &flood("198.51.100.1", 20));
    let ev = got.recv_timeout(DEADLINE).unwrap();
    assert_eq!(ev["key"], "198.51.100.1");
    let (status, _, report, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(!state_has(&site, "pending.json"), "nothing left: {report}");
}

/// Kept events follow their sink's table, not its number: with two webhooks, removing the first
/// must not send its events to the second's URL; a sink that moved in the list still gets its own.
#[test]
fn kept_events_go_to_the_sink_they_were_for_not_to_its_number() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let base = fs::read_to_string(site.config()).unwrap();
    let (reserved_a, reserved_b) = (util::ReservedPort::new(), util::ReservedPort::new());
    let (a, b) = (reserved_a.port(), reserved_b.port());
    let hook = webhook_sink;
    let run_with_a_down = |ip: &str| {
        fs::write(site.config(), base.clone() + &hook(a)).unwrap();
        let mut w = site.start();
        append(&log, &flood(ip, 20));
        w.wait_log("will retry");
        assert!(w.stop().0.success());
        assert!(state_has(&site, "pending.json"));
    };

    run_with_a_down("203.0.113.7");
    // A is gone; B is now `sink[0] webhook`, the name A's events were kept under.
    let got_b = webhook_server(reserved_b.listen());
    fs::write(site.config(), base.clone() + &hook(b)).unwrap();
    let w = site.start();
    let dropped = "1 events for sink[0] webhook, no longer configured as it was: dropped";
    assert!(w.log.iter().any(|l| l.contains(dropped)), "{:?}", w.log);
    assert!(w.stop().0.success());
    assert!(got_b.try_recv().is_err(), "B never gets A's events");

    run_with_a_down("203.0.113.8");
    // A comes back second in the list (`sink[1] webhook`) and still gets its event.
    let got_a = webhook_server(reserved_a.listen());
    fs::write(site.config(), base.clone() + &hook(b) + &hook(a)).unwrap();
    let w = site.start();
    let ev = got_a.recv_timeout(DEADLINE).unwrap();
    assert_eq!(ev["key"], "203.0.113.8");
    assert!(w.stop().0.success());
    assert!(got_b.try_recv().is_err(), "nor does B get it now");
    assert!(!state_has(&site, "pending.json"));
}

/// A webhook that accepts the connection and never answers must not hold a stop up: watch
/// ends without waiting for the webhook's timeout and keeps the ban for the next start.
#[test]
fn a_hanging_webhook_does_not_hold_up_a_stop() {
    const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
    const { assert!(DEADLINE.as_secs() * 4 <= HOOK_TIMEOUT.as_secs()) };
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Keeps every connection open, reads nothing, answers nothing.
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
    });
    append(
        &site.config(),
        &format!("\n[[sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\ntimeout = \"{}s\"\n", HOOK_TIMEOUT.as_secs()),
    );
    let w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    wait_file(&site.root.path().join("state/bans.journal"), "203.0.113.7");
    // A stop that waited for the webhook's answer would take its whole timeout: `stop` gives
    // up long before (its deadline is against hangs, far from what a stop normally takes).
    let (status, _, _, took) = w.stop();
    assert!(status.success(), "{status}");
    eprintln!("stopped {} ms after SIGTERM", took.as_millis());
    assert!(
        fs::read_to_string(site.root.path().join("state/pending.json"))
            .unwrap()
            .contains("203.0.113.7"),
        "the ban in hand is kept"
    );
    drop(held);
}

/// A `[[sink]]` table for a webhook on loopback `port`, retrying at least once a second.
fn webhook_sink(port: u16) -> String {
    format!(
        "\n[[sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nretry_max_delay = \"1s\"\n"
    )
}

fn state_has(site: &Site, name: &str) -> bool {
    site.root.path().join("state").join(name).exists()
}

/// The keys of the bans in a jsonl sink's file, in order.
fn jsonl_bans(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "ban")
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect()
}

fn sighup(w: &Watch) {
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
}

#[test]
fn sighup_adds_sinks_keeps_the_unchanged_one_and_hands_new_ones_the_active_bans() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let base = fs::read_to_string(site.config()).unwrap();
    let a = site.root.path().join("a.jsonl");
    let b = site.root.path().join("b.jsonl");
    let deny = site.root.path().join("deny.conf");
    let sink_a = format!("\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n", a.display());
    fs::write(site.config(), format!("{base}{sink_a}")).unwrap();
    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    wait_file(&a, "203.0.113.7");

    let added = format!(
        "\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n\n[[sink]]\ntype = \"nginx\"\npath = \"{}\"\nreload_command = [\"true\"]\ntest_command = [\"true\"]\nmin_reload_interval = \"0s\"\n",
        b.display(),
        deny.display()
    );
    fs::write(site.config(), format!("{base}{sink_a}{added}")).unwrap();
    sighup(&w);
    w.wait_log("sink[2] nginx: started");
    assert!(
        !w.log.iter().any(|l| l.contains("sink[0]")),
        "the unchanged sink is not started again: {:?}",
        w.log
    );
    // The nginx sink took the active ban over.
    wait_file(&deny, "deny 203.0.113.7;");
    append(&log, &flood("198.51.100.1", 20));
    wait_file(&a, "198.51.100.1");
    wait_file(&b, "198.51.100.1");
    wait_file(&deny, "deny 198.51.100.1;");
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert_eq!(
        jsonl_bans(&a),
        ["203.0.113.7", "198.51.100.1"],
        "each ban once"
    );
    assert_eq!(
        jsonl_bans(&b),
        ["198.51.100.1"],
        "bans already announced are not announced again"
    );
}

#[test]
fn sighup_switches_between_stdout_and_sinks() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let base = fs::read_to_string(site.config()).unwrap();
    let a = site.root.path().join("a.jsonl");
    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    assert_eq!(w.event()["key"], "203.0.113.7");

    let sink = format!("\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n", a.display());
    fs::write(site.config(), format!("{base}{sink}")).unwrap();
    sighup(&w);
    w.wait_log("sink[0] jsonl: started");
    append(&log, &flood("198.51.100.1", 20));
    wait_file(&a, "198.51.100.1");

    fs::write(site.config(), &base).unwrap();
    sighup(&w);
    w.wait_log("events go to stdout");
    append(&log, &flood("198.51.100.2", 20));
    assert_eq!(w.event()["key"], "198.51.100.2");
    let (status, rest, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(jsonl_bans(&a), ["198.51.100.1"]);
}

#[test]
fn a_sighup_with_a_sink_that_cannot_start_keeps_the_running_sinks() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let base = fs::read_to_string(site.config()).unwrap();
    let a = site.root.path().join("a.jsonl");
    let sink_a = format!("\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n", a.display());
    fs::write(site.config(), format!("{base}{sink_a}")).unwrap();
    let mut w = site.start();
    // A token file that does not exist: the Cloudflare sink cannot be built.
    let broken = format!(
        "\n[[sink]]\ntype = \"cloudflare\"\nzone_id = \"z\"\napi_token_file = \"{}\"\n",
        site.root.path().join("missing-token").display()
    );
    fs::write(site.config(), format!("{base}{broken}")).unwrap();
    sighup(&w);
    w.wait_log("keeping the running config");
    append(&log, &flood("203.0.113.7", 20));
    wait_file(&a, "203.0.113.7");
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn undelivered_events_survive_a_crash_and_are_delivered_once() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let pending = site.root.path().join("state").join("pending.json");
    // A port nothing listens on during the first run.
    let reserved = util::ReservedPort::new();
    let port = reserved.port();
    append(&site.config(), &webhook_sink(port));

    let mut w = site.start();
    append(&log, &flood("203.0.113.7", 20));
    w.wait_log("will retry");
    // Saved within about a second, while the webhook is still retrying (pending.json first,
    // then the bans: a crash between the two would only decide the ban again)...
    wait_file(&pending, "203.0.113.7");
    wait_file(&site.root.path().join("state/bans.journal"), "203.0.113.7");
    // ...so a crash loses nothing.
    w.kill();

    let got = webhook_server(reserved.listen());
    let w = site.start();
    assert!(
        w.log.iter().any(|l| l.contains("1 bans restored")),
        "{:?}",
        w.log
    );
    let ev = got
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("the kept ban never arrived; stderr: {:?}", w.log));
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("ban"), Some("203.0.113.7"))
    );
    // Delivered: the file is emptied within about a second, so a second crash does not
    // deliver it again.
    let until = Instant::now() + DEADLINE;
    while pending.exists() {
        assert!(
            Instant::now() < until,
            "pending.json kept: {:?}",
            fs::read_to_string(&pending)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.kill();

    let w = site.start();
    append(&log, &flood("198.51.100.1", 20));
    let ev = got.recv_timeout(DEADLINE).unwrap();
    assert_eq!(
        ev["key"], "198.51.100.1",
        "the first ban is not delivered twice"
    );
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
    let w = site.start();
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(got.try_recv().is_err(), "nothing delivered again");
}

/// The keys `floodwatch bans --json` lists for the watch of `site`.
fn listed_bans(site: &Site) -> Vec<String> {
    let out = util::command()
        .args(["bans", "--json", "--config"])
        .arg(site.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<String> = (list.iter())
        .map(|b| b["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_watch_killed_with_sigkill_keeps_its_bans_after_a_restart() {
    let site = Site::new(&["a.example"]);
    let log = site.logs("a.example").join("access_log");
    let journal = site.root.path().join("state/bans.journal");
    let mut w = site.start();
    let keys = ["198.51.100.1", "2001:db8:1::/64", "203.0.113.7"];
    append(&log, &flood("203.0.113.7", 20));
    append(&log, &flood("198.51.100.1", 20));
    append(&log, &flood("2001:db8:1::5", 20));
    for _ in keys {
        assert_eq!(w.event()["type"], "ban");
    }
    // The journal holds what the last save appended (about a second after the bans)...
    for key in keys {
        wait_file(&journal, key);
    }
    // ...and SIGKILL, between saves, loses none of it.
    w.kill();
    let w = site.start();
    assert!(
        w.log.iter().any(|l| l.contains("3 bans restored")),
        "{:?}",
        w.log
    );
    assert_eq!(listed_bans(&site), keys);
    // Killed again at once (no save since the start): the journal still holds them all.
    w.kill();
    let w = site.start();
    assert_eq!(listed_bans(&site), keys);
    let (status, rest, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(
        rest.is_empty(),
        "restored bans are not announced again: {rest:?}"
    );
}

#[test]
fn the_bans_of_a_state_folder_written_before_the_journal_survive_the_upgrade() {
    let site = Site::new(&["a.example"]);
    let state = site.root.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/state-before-journal/bans.json");
    fs::copy(old, state.join("bans.json")).unwrap();
    let keys = ["198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7"];
    let w = site.start();
    assert!(
        w.log.iter().any(|l| l.contains("3 bans restored")),
        "{:?}",
        w.log
    );
    assert_eq!(listed_bans(&site), keys);
    assert!(!state.join("bans.json").exists(), "moved to the journal");
    let (status, rest, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
    let w = site.start();
    assert_eq!(listed_bans(&site), keys);
    let (status, _, _, _) = w.stop();
    assert!(status.success(), "{status}");

    // A journal damaged in its middle: a loud error naming it, and no watch.
    let mut bytes = fs::read(state.join("bans.journal")).unwrap();
    let at = "floodwatch bans journal 1\n".len() + 10;
    bytes[at] ^= 0x55;
    fs::write(state.join("bans.journal"), bytes).unwrap();
    let out = util::command()
        .args(["watch", "--config"])
        .arg(site.config())
        .arg(site.glob())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bans.journal") && err.contains("corrupt state file"),
        "{err}"
    );
}

/// `GET path` with a plain socket: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut c, &mut got).unwrap();
    let (head, body) = got
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(head.contains("\r\nConnection: close"), "{head}");
    let status = head.lines().next().unwrap().to_string();
    (status, body.to_string())
}

/// The value of the sample `name` (with its labels) in Prometheus text.
fn sample(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_metrics_endpoint_counts_the_flood_and_lists_the_ban_while_a_slow_client_waits() {
    let site = Site::new(&["a.example"]);
    append(&site.config(), "\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut w = site.start();
    let addr = metrics_addr(&w);

    // Half a request, never finished: the loop must not wait for the rest.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    append(
        &site.logs("a.example").join("access_log"),
        &flood("203.0.113.7", 20),
    );
    let ev = w.event();
    assert_eq!(
        (ev["type"].as_str(), ev["key"].as_str()),
        (Some("ban"), Some("203.0.113.7"))
    );

    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&text, "floodwatch_lines_read_total"), 20, "{text}");
    assert_eq!(
        sample(&text, "floodwatch_lines_late_total"),
        0,
        "live lines are not late"
    );
    assert_eq!(sample(&text, "floodwatch_bans_total{rule=\"flood\"}"), 1);
    assert_eq!(sample(&text, "floodwatch_active_bans{rule=\"flood\"}"), 1);
    assert!(sample(&text, "floodwatch_requests_over_rate_total") >= 1);
    let version = format!(
        "floodwatch_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), 1);
    assert!(sample(&text, "process_resident_memory_bytes") > 1 << 20);
    assert!(sample(&text, "process_open_fds") >= 3);
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    assert!(sample(&text, "floodwatch_offenses_total{rule=\"flood\"}") >= 1);
    assert_eq!(sample(&text, "floodwatch_ban_latency_seconds_count"), 1);
    assert_eq!(
        sample(&text, "floodwatch_ban_latency_seconds_bucket{le=\"+Inf\"}"),
        1
    );
    assert_eq!(sample(&text, "floodwatch_keys_tracked"), 1);
    assert_eq!(sample(&text, "floodwatch_files_watched"), 1);
    assert_eq!(sample(&text, "floodwatch_read_lag_bytes"), 0, "all read");
    assert_eq!(sample(&text, "floodwatch_read_lag_all_files_bytes"), 0);
    assert_eq!(
        sample(&text, "floodwatch_lines_malformed_total{kind=\"shape\"}"),
        0
    );

    let (status, body) = http_get(&addr, "/bans");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let bans: Value = serde_json::from_str(&body).unwrap();
    let bans = bans.as_array().unwrap();
    assert_eq!(bans.len(), 1, "{body}");
    assert_eq!(bans[0]["key"], "203.0.113.7");
    assert_eq!(bans[0]["rule"], "flood");
    assert_eq!(bans[0]["until"], ev["until"]);

    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );

    let (status, _) = http_get(&addr, "/nothing");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    drop(slow);

    let (status, rest, _, _) = w.stop();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_metrics_address_in_use_stops_watch_with_a_message_naming_it() {
    let site = Site::new(&["a.example"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    append(
        &site.config(),
        &format!("\n[metrics]\nlisten = \"{addr}\"\n"),
    );
    let out = util::command()
        .args([
            "watch",
            "--config",
            site.config().to_str().unwrap(),
            &site.glob(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("[metrics] listen = \"{addr}\"")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A combined-format line from `ip` stamped `secs` (Unix time).
fn line_at(ip: &str, secs: i64) -> String {
    format!(
        "{ip} - - [{}] \"GET /page HTTP/1.1\" 200 512 \"-\" \"test\"\n",
        httpdate(secs)
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The ban events of `events` as `key@time#offense`, sorted.
fn bans_of(events: &[Value]) -> Vec<String> {
    let mut bans: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "ban")
        .map(|e| format!("{}@{}#{}", e["key"], e["time"], e["offense"]))
        .collect();
    bans.sort();
    bans
}

/// What `replay` with the same config bans on the final files.
fn replay_bans(site: &Site) -> Vec<String> {
    let out = util::command()
        .args(["replay", "--config", site.config().to_str().unwrap()])
        .arg(site.glob())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    bans_of(&events)
}

/// nginx with `access_log ... buffer=64k flush=3s` (Apache: `BufferedLogs On`) writes one vhost's
/// lines in chunks every few seconds, beside a live one. Its 8 r/s client is under the rule and
/// must not be banned (it was: its lines, late, all counted at one instant); the 14 r/s client
/// of the live vhost is banned, as replay of the final files bans it.
#[test]
fn a_client_under_the_rate_on_a_buffered_vhost_is_not_banned() {
    let site = Site::with_rule(&["live.example", "buffered.example"], "10r/s", 15, "10m");
    let live = site.logs("live.example").join("access_log");
    let buffered = site.logs("buffered.example").join("access_log");
    let mut w = site.start();
    let start = now_secs();
    let mut held = String::new();
    for s in 0..7 {
        // Each second: the live log gets its lines as they happen; the buffered one's pile up
        // and are written every third second.
        while now_secs() < start + s {
            std::thread::sleep(Duration::from_millis(20));
        }
        let t = start + s;
        append(
            &live,
            &(0..14)
                .map(|_| line_at("198.51.100.14", t))
                .collect::<String>(),
        );
        held.extend((0..8).map(|_| line_at("198.51.100.8", t)));
        if s % 3 == 2 {
            // Flushed a moment after the live log's lines of the same second were read.
            std::thread::sleep(Duration::from_millis(300));
            append(&buffered, &std::mem::take(&mut held));
        }
    }
    append(&buffered, &held);
    let first = w.event();
    assert_eq!(first["key"], "198.51.100.14", "{first}");
    std::thread::sleep(Duration::from_millis(1500));
    let (status, rest, report, _) = w.stop();
    assert!(status.success(), "{status}");
    let mut all = vec![first];
    all.extend(rest);
    assert_eq!(bans_of(&all), replay_bans(&site), "{report}");
    assert!(
        all.iter().all(|e| e["key"] != "198.51.100.8"),
        "the client under the rate was banned: {all:?}"
    );
}

/// Recorded traffic appended to a live log (as one does to try a setup): its lines are an hour
/// old, all late, and still count at their own times. Watch bans what replay bans on the
/// final files: the flooder, not the steady visitors (it banned them: every chunk counted at one
/// instant).
#[test]
fn older_lines_appended_to_a_live_log_are_decided_as_replay_decides() {
    let site = Site::with_rule(&["live.example", "recorded.example"], "5r/s", 20, "1m");
    let live = site.logs("live.example").join("access_log");
    let recorded = site.logs("recorded.example").join("access_log");
    let mut w = site.start();
    let t0 = now_secs() - 3600;
    // 60 s of recorded traffic: 20 visitors at 3 r/s each, a flooder at 40 r/s for 10 s.
    let mut lines = Vec::new();
    for s in 0..60 {
        for v in 0..20 {
            lines.extend((0..3).map(|_| line_at(&format!("192.0.2.{}", 10 + v), t0 + s)));
        }
        if (20..30).contains(&s) {
            lines.extend((0..40).map(|_| line_at("203.0.113.40", t0 + s)));
        }
    }
    for (i, chunk) in lines.chunks(300).enumerate() {
        append(&recorded, &chunk.concat());
        append(
            &live,
            &line_at(&format!("198.51.100.{}", i % 200), now_secs()),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = w.event();
    assert_eq!(first["key"], "203.0.113.40", "{first}");
    // Said loudly: a file being written an hour behind the others.
    w.wait_log("older than the newest of the others");
    std::thread::sleep(Duration::from_millis(1500));
    let (status, rest, report, _) = w.stop();
    assert!(status.success(), "{status}");
    let mut all = vec![first];
    all.extend(rest);
    let bans = bans_of(&all);
    assert_eq!(bans, replay_bans(&site), "{report}");
    assert_eq!(bans.len(), 1, "{bans:?}");
}

/// A watched log in a format floodwatch cannot read is said loudly, once, with a sample.
#[test]
fn a_log_in_another_format_is_reported_once() {
    let site = Site::new(&["a.example"]);
    let mut w = site.start();
    let lines: String = (0..40)
        .map(|i| format!("{{\"remote_addr\":\"192.0.2.{i}\",\"status\":200}}\n"))
        .collect();
    append(&site.logs("a.example").join("access_log"), &lines);
    let warning = w.wait_log("could not be used");
    assert!(warning.contains("looks like a JSON log"), "{warning}");
    let (status, _, _, _) = w.stop();
    assert!(status.success());
}

/// Under systemd (`Type=notify`): READY=1 once watching, RELOADING=1 and READY=1 around a
/// SIGHUP, watchdog pings at half `WatchdogSec=`, STOPPING=1 at SIGTERM — on the socket systemd
/// names in `NOTIFY_SOCKET`.
#[test]
fn tells_systemd_when_it_is_ready_reloading_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let log = dir.path().join("access_log");
    fs::write(&log, "").unwrap();
    // WATCHDOG_PID names watch itself, as systemd sets it: the shell's pid, kept by `exec`.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" watch \"$1\""])
        .arg(env!("CARGO_BIN_EXE_floodwatch"))
        .arg(&log)
        .env("FLOODWATCH_CONFIG", "")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1\nSTATUS=watching 1 files in 1 folders\n");
    let pings = (0..3).map(|_| recv()).collect::<Vec<_>>();
    assert_eq!(pings, ["WATCHDOG=1\n"; 3], "every 200 ms while idle");
    // The next `n` messages other than watchdog pings, however many pings come between them
    // (a loaded machine may delay the reload past several).
    let next_but_pings = |n: usize| {
        let until = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while seen.len() < n {
            assert!(Instant::now() < until, "only {seen:?} besides pings");
            let m = recv();
            if m != "WATCHDOG=1\n" {
                seen.push(m);
            }
        }
        seen
    };
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(
        next_but_pings(2),
        [
            "RELOADING=1\n",
            "READY=1\nSTATUS=watching 1 files in 1 folders\n"
        ]
    );
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(next_but_pings(1), ["STOPPING=1\n"]);
    assert!(child.wait().unwrap().success());
}
