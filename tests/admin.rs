//! The admin's commands against a running watch, through the binary: the rails on manual bans
//! (checked by watch, whatever the client), reaching the watch whatever state its config file
//! is in, the config and reloads `status` reports, each followed file's health, and the
//! pardons `unban` leaves.

mod util;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{append_flood, eventually, floodwatch, stderr};

fn run(args: &[&str]) -> Output {
    floodwatch(args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `floodwatch ARGS -c CONFIG`.
fn admin(config: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-c", config.to_str().unwrap()]);
    run(&all)
}

/// A folder with a config (state, one rule, `allow`), a log file, and a watch running on them.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
}

impl Site {
    fn new(allow: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs").join("a.access_log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "").unwrap();
        let config = dir.path().join("fw.toml");
        let site = Site { dir, config, log };
        std::fs::write(&site.config, site.config_text(allow)).unwrap();
        site
    }

    fn config_text(&self, allow: &str) -> String {
        format!(
            "[input]\npaths = [{:?}]\n\n[allow]\ncidrs = [{allow}]\n\n\
             [[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"10m\"\n\n\
             [state]\ndir = {:?}\n",
            self.dir
                .path()
                .join("logs/*.access_log")
                .display()
                .to_string(),
            self.state().display().to_string(),
        )
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket(&self) -> PathBuf {
        self.state().join("control.sock")
    }

    fn start(&self) -> RunningWatch {
        RunningWatch::start(&self.config, self.dir.path().join("watch.log"))
    }
}

/// A watch running with `config`, its stderr kept in a file; stopped with SIGTERM on drop.
struct RunningWatch {
    child: std::process::Child,
    log: PathBuf,
}

impl RunningWatch {
    fn start(config: &Path, log: PathBuf) -> RunningWatch {
        let child = util::command()
            .args(["watch", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = RunningWatch { child, log };
        eventually("watch answers status", || {
            admin(config, &["status"]).status.success()
        });
        w
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str) -> String {
        eventually(what, || self.log().contains(what));
        self.log()
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
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

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn active_keys(config: &Path) -> Vec<String> {
    let list = json(&admin(config, &["bans", "--json"]));
    let keys = list.as_array().unwrap().iter();
    keys.map(|b| b["key"].as_str().unwrap().to_string())
        .collect()
}

/// One request on the control socket, as any client may send it.
fn raw_request(socket: &Path, line: &str) -> Value {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

/// Refused with exit code 1 and `why` on stderr.
fn refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(why), "{why:?} not in: {}", stderr(out));
}

/// A key with host bits set is refused with the network it would have meant (ban and unban);
/// a range wider than /16 or /48 needs --force; an allowlisted key is refused. Watch checks,
/// so a client other than floodwatch meets the same rails. Nothing refused is banned.
#[test]
fn manual_bans_have_rails_held_by_the_watch() {
    let site = Site::new("\"192.0.2.99\"");
    let _watch = site.start();
    let cfg = site.config.as_path();

    let out = admin(cfg, &["ban", "10.0.0.0/4", "--for", "1m"]);
    refused(&out, "10.0.0.0/4 has host bits set");
    refused(&out, "did you mean 0.0.0.0/4?");
    let out = admin(cfg, &["ban", "192.0.2.7/24", "--for", "1m"]);
    refused(&out, "did you mean 192.0.2.0/24?");
    let out = admin(cfg, &["ban", "2001:db8::1/64", "--for", "1m"]);
    refused(&out, "did you mean 2001:db8::/64?");
    let out = admin(cfg, &["unban", "192.0.2.7/24"]);
    refused(&out, "did you mean 192.0.2.0/24?");

    let out = admin(cfg, &["ban", "128.0.0.0/1", "--for", "1m"]);
    refused(&out, "128.0.0.0/1 is wider than /16 (2147483648 addresses");
    refused(&out, "--force");
    let out = admin(cfg, &["ban", "2001:db8::/32", "--for", "1m"]);
    refused(&out, "wider than /48");
    let out = admin(cfg, &["ban", "192.0.2.99", "--for", "1m"]);
    refused(&out, "192.0.2.99 is allowlisted");
    let out = admin(cfg, &["ban", "192.0.2.0/24", "--for", "1m"]);
    refused(&out, "192.0.2.0/24 is allowlisted");
    // The API itself refuses, whatever the client.
    let raw = raw_request(
        &site.socket(),
        r#"{"command":"ban","key":"128.0.0.0/1","seconds":60}"#,
    );
    assert_eq!(raw["ok"], false, "{raw}");
    assert!(raw["error"].as_str().unwrap().contains("--force"), "{raw}");
    let raw = raw_request(&site.socket(), r#"{"command":"unban","key":"10.0.0.0/4"}"#);
    assert!(
        raw["error"].as_str().unwrap().contains("0.0.0.0/4"),
        "{raw}"
    );
    assert!(active_keys(cfg).is_empty(), "nothing refused was banned");

    // What the rails let through.
    for key in ["198.51.100.0/24", "203.0.0.0/16", "2001:db8::/48"] {
        let out = admin(cfg, &["ban", key, "--for", "1m"]);
        assert!(out.status.success(), "{key}: {}", stderr(&out));
    }
    // Forced: still not over the allowlist (128.0.0.0/1 holds 192.0.2.99).
    let out = admin(cfg, &["ban", "128.0.0.0/1", "--for", "1m", "--force"]);
    refused(&out, "128.0.0.0/1 is allowlisted");
    let out = admin(cfg, &["ban", "0.0.0.0/1", "--for", "1m", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut keys = active_keys(cfg);
    keys.sort();
    assert_eq!(
        keys,
        [
            "0.0.0.0/1",
            "198.51.100.0/24",
            "2001:db8::/48",
            "203.0.0.0/16"
        ]
    );
    let out = admin(cfg, &["unban", "0.0.0.0/1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A bad edit of the config does not lock the admin out: the commands read its [state] alone
/// (saying so, naming the file and the error), or take --socket. A SIGHUP of the broken config
/// is refused, and `status` says so, with the error, and which config is in force since when.
#[test]
fn the_watch_is_reached_whatever_its_config_file_has_become() {
    let site = Site::new("");
    let watch = site.start();
    let cfg = site.config.as_path();
    let status = json(&admin(cfg, &["status", "--json"]));
    assert_eq!(status["config"], cfg.display().to_string());
    let loaded = status["config_loaded"].as_str().unwrap().to_string();
    assert!(status.get("reload_refused").is_none(), "{status}");
    let text = stdout(&admin(cfg, &["status"]));
    assert!(
        text.contains(&format!("config:    {} (loaded {loaded})\n", cfg.display())),
        "{text}"
    );

    // A bad edit: broken TOML.
    let good = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, format!("{good}\n[[rule]\nname = \"x\n")).unwrap();
    let out = admin(cfg, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the file changed since: not reloaded yet"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(err.contains("only its [state] was read"), "{err}");
    let out = admin(cfg, &["ban", "198.51.100.7", "--for", "1m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(active_keys(cfg), ["198.51.100.7"]);

    // Reloading it is refused, and status says so.
    watch.signal(libc::SIGHUP);
    watch.wait_log("keeping the running config");
    let status = json(&admin(cfg, &["status", "--json"]));
    let refusal = &status["reload_refused"];
    assert!(refusal["at"].is_string(), "{status}");
    let error = refusal["error"].as_str().unwrap();
    assert!(error.contains(&cfg.display().to_string()), "{error}");
    assert_eq!(
        status["config_loaded"],
        loaded.as_str(),
        "still the first one"
    );
    let text = stdout(&admin(cfg, &["status"]));
    assert!(text.contains("RELOAD REFUSED at "), "{text}");
    assert!(
        text.contains("the config above is still in force"),
        "{text}"
    );

    // Valid TOML, wrong schema: the same.
    std::fs::write(cfg, format!("{good}\n[[rule]]\nname = 5\n")).unwrap();
    let out = admin(cfg, &["bans"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("only its [state] was read"));

    // The socket by name, with no config at all.
    let socket = site.socket();
    let out = run(&["status", "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let out = run(&[
        "unban",
        "198.51.100.7",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A config with no [state] to be found: a clear error, exit 2.
    let other = site.dir.path().join("other.toml");
    std::fs::write(&other, "[input\n").unwrap();
    let out = admin(&other, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no [state] dir or socket"),
        "{}",
        stderr(&out)
    );

    // Fixed and reloaded: the refusal is gone, the new load time shown.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(cfg, &good).unwrap();
    watch.signal(libc::SIGHUP);
    watch.wait_log("config reloaded");
    let status = json(&admin(cfg, &["status", "--json"]));
    assert!(status.get("reload_refused").is_none(), "{status}");
    assert_ne!(status["config_loaded"], loaded.as_str());
    assert_eq!(status["config_changed"], false);
}

/// `check-config` and `watch` say which config they use; without --config that is
/// /etc/floodwatch/floodwatch.toml where it exists, else the built-in defaults, as for the
/// admin commands.
#[test]
fn every_command_uses_the_same_default_config_and_says_which() {
    let site = Site::new("");
    let cfg = site.config.to_str().unwrap();
    let out = run(&["check-config", "-c", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("config: {cfg}\n")),
        "{}",
        stderr(&out)
    );

    // The default file: FLOODWATCH_CONFIG stands for /etc/floodwatch/floodwatch.toml here, so
    // that an installed package's config never changes what this test sees.
    let with_default = |default: &str, args: &[&str]| {
        util::command()
            .env("FLOODWATCH_CONFIG", default)
            .args(args)
            .output()
            .unwrap()
    };
    let log = site.log.to_str().unwrap();
    for command in [&["check-config"][..], &["test", log], &["replay", log]] {
        let out = with_default(cfg, command);
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("config: {cfg}\n")),
            "{command:?}: {}",
            stderr(&out)
        );
        let missing = site.dir.path().join("missing.toml");
        let out = with_default(missing.to_str().unwrap(), command);
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        let said = format!("config: built-in defaults (no {})\n", missing.display());
        assert!(
            stderr(&out).contains(&said),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    let out = run(&["check-config", "--json"]);
    assert!(
        stderr(&out).contains("config: built-in defaults (FLOODWATCH_CONFIG is empty)\n"),
        "{}",
        stderr(&out)
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("FLOODWATCH_CONFIG is empty: name the running watch's config with --config FILE, or its control socket with --socket PATH"),
        "{}",
        stderr(&out)
    );
    let watch = site.start();
    let out = with_default(cfg, &["status"]);
    assert!(
        out.status.success(),
        "status finds the watch through the default config: {}",
        stderr(&out)
    );
    drop(watch);
    let out = run(&["status", "-c", "/nonexistent/fw.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/fw.toml: no such config"));
    let out = run(&["status", "-c", cfg, "--socket", "/tmp/x.sock"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--config and --socket exclude each other"
    );
}

/// `unban` of a detected ban pardons the key for the rest of the ban's term; `bans --all`
/// shows the pardon and its end; a ban by hand of the pardoned key works and ends the pardon.
#[test]
fn bans_all_shows_pardons_and_a_manual_ban_of_a_pardoned_key_works() {
    let site = Site::new("");
    let _watch = site.start();
    let cfg = site.config.as_path();
    append_flood(&site.log, "127.0.0.2");
    eventually("127.0.0.2 banned", || active_keys(cfg) == ["127.0.0.2"]);
    let until = json(&admin(cfg, &["bans", "--json"]))[0]["until"].clone();
    assert!(stdout(&admin(cfg, &["bans", "--all"])).ends_with("no pardoned keys\n"));
    assert!(admin(cfg, &["unban", "127.0.0.2"]).status.success());

    let all = json(&admin(cfg, &["bans", "--all", "--json"]));
    assert_eq!(all["bans"], serde_json::json!([]), "{all}");
    let pardons = all["pardons"].as_array().unwrap();
    assert_eq!(pardons.len(), 1, "{all}");
    assert_eq!(pardons[0]["key"], "127.0.0.2");
    assert_eq!(pardons[0]["rule"], "flood");
    assert_eq!(pardons[0]["until"], until, "the lifted ban's end");
    let text = stdout(&admin(cfg, &["bans", "--all"]));
    assert!(text.starts_with("no active bans\n\nPARDONED"), "{text}");
    assert!(text.contains("127.0.0.2"), "{text}");
    assert!(text.contains("1 pardoned key: "), "{text}");
    // Without --all, as before; status counts them.
    assert_eq!(stdout(&admin(cfg, &["bans"])), "no active bans\n");
    let text = stdout(&admin(cfg, &["status"]));
    assert!(
        text.contains("\npardoned:  1 key unbanned by hand"),
        "{text}"
    );
    assert_eq!(
        json(&admin(cfg, &["status", "--json"]))["bans"]["pardoned"],
        1
    );

    // The same flood does not ban it again; a ban by hand does, and ends the pardon.
    let lines = || {
        json(&admin(cfg, &["status", "--json"]))["lines"]
            .as_u64()
            .unwrap()
    };
    let before = lines();
    append_flood(&site.log, "127.0.0.2");
    // Read (twenty lines) before the check, however slow the machine, and a moment more for
    // a ban, were one decided, to reach the table.
    eventually("the flood read", || lines() >= before + 20);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(active_keys(cfg).is_empty());
    let out = admin(cfg, &["ban", "127.0.0.2", "--for", "1h", "--rule", "flood"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(active_keys(cfg), ["127.0.0.2"]);
    let all = json(&admin(cfg, &["bans", "--all", "--json"]));
    assert_eq!(all["pardons"], serde_json::json!([]), "{all}");
    assert!(!stdout(&admin(cfg, &["status"])).contains("pardoned:"));
}

/// A good combined line from `client`, stamped now.
fn good_line(client: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{client} - - [{}] \"GET / HTTP/1.1\" 200 5 \"-\" \"ok\"\n",
        floodwatch::lab::scenario::httpdate(now)
    )
}

/// One vhost logging JSON among a thousand that log well: its share of all lines is tiny, yet
/// watch names it with the cause, `status --files` and `--json` show each file's counts, and
/// check-config names it from its sample of every file.
#[test]
fn one_broken_vhost_among_a_thousand_is_named() {
    let site = Site::new("");
    let logs = site.dir.path().join("logs");
    let n: u64 = 1000;
    for i in 0..n {
        std::fs::write(logs.join(format!("v{i:04}.access_log")), "").unwrap();
    }
    let watch = site.start();
    let cfg = site.config.as_path();
    eventually("every file followed", || {
        json(&admin(cfg, &["status", "--json"]))["files"] == n + 1
    });
    let broken = logs.join("v0421.access_log");
    for i in 0..n {
        let path = logs.join(format!("v{i:04}.access_log"));
        let text = match path == broken {
            true => "{\"remote_addr\":\"192.0.2.1\",\"status\":200}\n".repeat(30),
            false => (1..=30)
                .map(|j| good_line(&format!("10.{}.{}.{j}", i / 250, i % 250)))
                .collect(),
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
    let log = watch.wait_log("could not be used");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not be used"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    let w = warnings[0];
    assert!(
        w.contains(&format!("{}: 100 % of the lines read", broken.display())),
        "{w}"
    );
    assert!(w.contains("looks like a JSON log"), "{w}");
    assert!(
        w.contains("malformed by kind: 30 not the format's shape"),
        "{w}"
    );

    eventually("every line read", || {
        json(&admin(cfg, &["status", "--json"]))["lines"] == 30 * n
    });
    let status = json(&admin(cfg, &["status", "--json"]));
    let files = status["file_health"].as_array().unwrap();
    assert_eq!(files.len() as u64, n + 1);
    let of = |p: &Path| {
        let p = p.display().to_string();
        files
            .iter()
            .find(|f| f["path"] == p.as_str())
            .unwrap()
            .clone()
    };
    let bad = of(&broken);
    assert_eq!(
        (bad["lines"].as_u64(), bad["malformed"].as_u64()),
        (Some(30), Some(30))
    );
    assert!(bad["warning"].as_str().unwrap().contains("JSON"), "{bad}");
    let fine = of(&logs.join("v0007.access_log"));
    assert_eq!(fine["lines"], 30);
    assert_eq!(fine["malformed"], 0);
    assert_eq!(fine["not_an_address"], 0);
    assert_eq!(fine["unread_bytes"], 0);
    assert!(
        fine["newest_line_age_seconds"].as_u64().unwrap() < 60,
        "{fine}"
    );
    assert!(fine.get("warning").is_none(), "{fine}");
    let empty = of(&site.log);
    assert_eq!(empty["lines"], 0);
    assert!(empty.get("newest_line_age_seconds").is_none(), "{empty}");

    let text = stdout(&admin(cfg, &["status", "--files"]));
    assert!(text.contains("FILE"), "{text}");
    assert!(
        text.contains(&format!("UNUSABLE LINES: {}: 100 %", broken.display())),
        "{text}"
    );
    assert!(!stdout(&admin(cfg, &["status"])).contains("UNUSABLE"));

    let out = run(&["check-config", "-c", cfg.to_str().unwrap()]);
    let err = stderr(&out);
    let named: Vec<&str> = err.lines().filter(|l| l.contains("input.format")).collect();
    assert_eq!(named.len(), 1, "{err}");
    assert!(
        named[0].contains(&format!("{}: 100 %", broken.display())),
        "{err}"
    );
    assert!(named[0].contains("looks like a JSON log"), "{err}");
}
