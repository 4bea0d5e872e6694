//! End-to-end tests of `floodwatch replay` and `check-config`: the real binary on real files.

mod util;
use util::{demo_glob, events, floodwatch, testdata};

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn bans(events: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "ban")
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["time"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn demo_bans_exactly_the_flooders() {
    let out = floodwatch(&["replay", &demo_glob()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out);
    let keys: Vec<String> = bans(&ev).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["198.51.100.23", "2001:db8:bad:1::/64"]);

    let flood = ev.iter().find(|e| e["key"] == "198.51.100.23").unwrap();
    // 60 r/s against 20r/s burst 100: the 142nd request, in the flood's third second, overflows.
    assert_eq!(flood["time"], "2026-11-25T10:01:02Z");
    assert_eq!(flood["first_seen"], "2026-11-25T10:01:00Z");
    assert_eq!(flood["requests"], 142);
    assert_eq!(flood["until"], "2026-11-25T10:11:02Z");
    assert_eq!(flood["ban_seconds"], 600);
    assert_eq!(flood["vhost"], "example.com");
    assert_eq!(flood["rule"], "default");
    assert_eq!(flood["rate"], "20r/s");
    assert_eq!(flood["burst"], 100);
    assert_eq!(flood["offense"], 1);

    let six = ev
        .iter()
        .find(|e| e["key"] == "2001:db8:bad:1::/64")
        .unwrap();
    assert_eq!(six["vhost"], "shop.example.org");
    // The log ends before any ban expires: no unban.
    assert!(ev.iter().all(|e| e["type"] == "ban"));

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed 2 "), "{stderr}");
}

#[test]
fn summary_flag_appends_a_json_summary() {
    let out = floodwatch(&["replay", "--summary", &demo_glob()]);
    assert!(out.status.success());
    let ev = events(&out);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["lines"], 11_122);
    assert_eq!(last["malformed"], 2);
    assert_eq!(last["bans"], 2);
    assert_eq!(last["files"], 4);
}

#[test]
fn a_short_ban_expires_on_log_time_and_the_flooder_is_banned_again() {
    let out = floodwatch(&["replay", "--ban", "10s", &demo_glob()]);
    assert!(out.status.success());
    let ev = events(&out);
    let flood: Vec<&Value> = ev.iter().filter(|e| e["key"] == "198.51.100.23").collect();
    assert_eq!(flood[0]["type"], "ban");
    assert_eq!(flood[0]["ban_seconds"], 10);
    assert_eq!(flood[1]["type"], "unban");
    assert_eq!(flood[1]["time"], "2026-11-25T10:01:12Z");
    // Still flooding after the ban: banned again, for longer (escalation).
    assert_eq!(flood[2]["type"], "ban");
    assert_eq!(flood[2]["offense"], 2);
    assert!(flood[2]["ban_seconds"].as_u64().unwrap() > 10);
    // Events come out in log-time order.
    let times: Vec<&str> = ev.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
}

/// Writes the lines of `src` into `parts` files round-robin, as if one site's log had been
/// spread over several vhost logs.
fn split(src: &str, dir: &Path, parts: usize) -> Vec<PathBuf> {
    let text = std::fs::read(src).unwrap();
    let mut files: Vec<_> = (0..parts)
        .map(|i| std::fs::File::create(dir.join(format!("part{i}.log"))).unwrap())
        .collect();
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        files[i % parts].write_all(line).unwrap();
    }
    (0..parts)
        .map(|i| dir.join(format!("part{i}.log")))
        .collect()
}

#[test]
fn splitting_one_log_over_several_files_gives_the_same_bans() {
    let src = testdata("replay/vhosts/example.com/logs/access_log");
    let whole = bans(&events(&floodwatch(&["replay", "--ban", "20s", &src])));
    assert!(whole.len() >= 2, "{whole:?}");
    let dir = tempfile::tempdir().unwrap();
    for parts in [2, 3, 7] {
        let sub = dir.path().join(parts.to_string());
        std::fs::create_dir(&sub).unwrap();
        split(&src, &sub, parts);
        let glob = format!("{}/*.log", sub.display());
        let out = floodwatch(&["replay", "--ban", "20s", &glob]);
        assert!(out.status.success());
        assert_eq!(bans(&events(&out)), whole, "split into {parts}");
    }
}

/// A Plesk server's many small vhost logs, each spanning the whole period (the merge reads them
/// in step; see `replay::merge`, whose unit tests also cut files into small ranges).
#[test]
fn splitting_one_log_over_hundreds_of_files_gives_the_same_bans() {
    let src = testdata("replay/vhosts/example.com/logs/access_log");
    let whole = bans(&events(&floodwatch(&["replay", "--ban", "20s", &src])));
    assert!(whole.len() >= 2, "{whole:?}");
    let dir = tempfile::tempdir().unwrap();
    split(&src, dir.path(), 500);
    let glob = format!("{}/*.log", dir.path().display());
    let out = floodwatch(&["replay", "--ban", "20s", "--summary", &glob]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out);
    assert_eq!(ev.last().unwrap()["files"], 500);
    assert_eq!(ev.last().unwrap()["late"], 0);
    assert_eq!(bans(&ev), whole);
}

#[test]
fn gzip_and_plain_replay_the_same() {
    let src = testdata("replay/vhosts/shop.example.org/logs/access_log");
    let dir = tempfile::tempdir().unwrap();
    // The same Plesk layout, so that the vhost taken from the path is the same too.
    let logs = dir.path().join("vhosts/shop.example.org/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let gz = logs.join("access_log.2");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&std::fs::read(&src).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let plain = floodwatch(&["replay", &src]);
    let zipped = floodwatch(&["replay", gz.to_str().unwrap()]);
    assert!(!events(&plain).is_empty());
    assert_eq!(plain.stdout, zipped.stdout);
}

#[test]
fn hostile_bytes_are_counted_as_malformed_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.log");
    let mut data = Vec::new();
    data.extend_from_slice(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n");
    data.extend_from_slice(b"\xff\xfe\xfd not utf-8 at all\n");
    data.extend_from_slice(b"1.2.3.4 - - [25/Nov/2026:10:00:00 +0000] \"GET /\xc3\x28 HTTP/1.1\" 200 1 \"-\" \"\\\"quoted\\\" agent\"\n");
    data.extend(std::iter::repeat_n(b'A', 3 << 20));
    data.extend_from_slice(b"\n\n\r\n");
    data.extend_from_slice(
        b"1.2.3.4 - - [25/Nov/2026:10:00:01 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"truncated",
    );
    std::fs::write(&path, &data).unwrap();
    let out = floodwatch(&["replay", "--summary", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out);
    let summary = ev.last().unwrap();
    // TLS, not UTF-8, two empty lines and the truncated last line; the 3 MiB line is dropped
    // while reading (never buffered whole) and counted as malformed too.
    assert_eq!(summary["lines"], 6, "{summary}");
    assert_eq!(summary["malformed"], 6, "{summary}");
    assert_eq!(summary["hits"], 1, "{summary}");
}

#[test]
fn exit_codes_and_errors_name_what_is_wrong() {
    let out = floodwatch(&["replay", "/nonexistent/access_log"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/access_log"));

    let out = floodwatch(&["replay", "--rate", "20r/x", &demo_glob()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("20r/x"));

    let out = floodwatch(&["replay", "--format", "apache-ish", &demo_glob()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("input.format") && err.contains("apache-ish"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[[rule]]\nname = \"x\"\nrate = \"5r/s\"\nburts = 3\n").unwrap();
    let out = floodwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("burts"), "{err}");

    let out = floodwatch(&["replay"]);
    assert_eq!(out.status.code(), Some(2));

    let out = floodwatch(&[
        "replay",
        "--format",
        "nginx:'$remote_addr \"$request\" $status'",
        &demo_glob(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no time"), "{err}");
}

#[test]
fn check_config_prints_what_it_understood() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ok.toml");
    std::fs::write(
        &cfg,
        "[[rule]]\nname = \"wp-login\"\nrate = \"30r/m\"\nburst = 5\nban = \"1h\"\nmethods = [\"POST\"]\npath_suffix = \"/wp-login.php\"\n",
    )
    .unwrap();
    let out = floodwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wp-login") && text.contains("30r/m"),
        "{text}"
    );
}

#[test]
fn a_config_rule_only_counts_what_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("api.toml");
    // Only /api/ requests count: the flooder hits `/?s=`, so only the API client can be banned,
    // and at 15 r/s it stays under 20r/s.
    std::fs::write(
        &cfg,
        "[[rule]]\nname = \"api\"\nrate = \"10r/s\"\nburst = 20\npath_prefix = \"/api/\"\n",
    )
    .unwrap();
    let out = floodwatch(&["replay", "--config", cfg.to_str().unwrap(), &demo_glob()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = bans(&events(&out)).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["192.0.2.80"]);
}

#[test]
fn thread_counts_do_not_change_the_decisions() {
    let glob = demo_glob();
    let reference = floodwatch(&[
        "replay",
        "--ban",
        "15s",
        "--producers",
        "1",
        "--shards",
        "1",
        &glob,
    ]);
    assert!(events(&reference).len() >= 4);
    for (p, s) in [("2", "1"), ("1", "3"), ("3", "2"), ("4", "4")] {
        let out = floodwatch(&[
            "replay",
            "--ban",
            "15s",
            "--producers",
            p,
            "--shards",
            s,
            &glob,
        ]);
        assert_eq!(out.stdout, reference.stdout, "{p} producers, {s} shards");
    }
}

#[test]
fn a_line_dated_in_the_future_does_not_make_the_rest_late() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(testdata("replay/vhosts/example.com/logs/access_log")).unwrap();
    let mut data =
        b"10.9.9.9 - - [01/Jan/2099:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"x\"\n"
            .to_vec();
    data.extend_from_slice(&src);
    let path = dir.path().join("access_log");
    std::fs::write(&path, &data).unwrap();
    let clean = floodwatch(&[
        "replay",
        &testdata("replay/vhosts/example.com/logs/access_log"),
    ]);
    let out = floodwatch(&["replay", "--summary", path.to_str().unwrap()]);
    let ev = events(&out);
    let summary = ev.last().unwrap();
    assert_eq!(summary["future"], 1);
    assert_eq!(summary["late"], 0);
    assert_eq!(bans(&ev), bans(&events(&clean)));
}

#[test]
fn a_line_older_than_the_lateness_is_counted_late() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access_log");
    let mut data = Vec::new();
    // 40k lines over 40,000 s (several read chunks), then one line ten hours older than the end:
    // it cannot be taken in order any more (lines out of order within one read chunk still are).
    for i in 0..40_000u32 {
        let (h, m, s) = (i / 3600, i / 60 % 60, i % 60);
        writeln!(
            data,
            "10.0.{}.{} - - [25/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"GET /page/{i} HTTP/1.1\" 200 512 \"-\" \"agent/1.0 {}\"",
            i % 200,
            i % 250 + 1,
            "x".repeat(40)
        )
        .unwrap();
    }
    data.extend_from_slice(
        b"10.1.1.1 - - [25/Nov/2026:01:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"x\"\n",
    );
    std::fs::write(&path, &data).unwrap();
    // One producer: with several, the chunk holding the old line may be parsed before the
    // earlier chunks are, and then the line is still in time (which is only more accurate).
    let out = floodwatch(&[
        "replay",
        "--summary",
        "--producers",
        "1",
        path.to_str().unwrap(),
    ]);
    let summary = events(&out).pop().unwrap();
    assert_eq!(summary["lines"], 40_001);
    assert_eq!(summary["late"], 1, "{summary}");
}

/// A log floodwatch cannot use must not look like a quiet one: JSON lines, and host names
/// where the client's address belongs, are named on stderr with a sample and the likely cause.
#[test]
fn unusable_logs_are_reported_with_a_sample_and_the_likely_cause() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("json.log");
    let lines: String = (0..50)
        .map(|i| format!("{{\"remote_addr\":\"192.0.2.{i}\",\"status\":200}}\n"))
        .collect();
    std::fs::write(&json, lines).unwrap();
    let out = floodwatch(&["replay", json.to_str().unwrap()]);
    assert!(out.status.success());
    let err = util::stderr(&out);
    assert!(
        err.contains("100 % of the lines read could not be used (50 of 50: 50 malformed"),
        "{err}"
    );
    assert!(err.contains(r#"{\"remote_addr\":\"192.0.2.0\""#), "{err}");
    assert!(err.contains("looks like a JSON log"), "{err}");

    // As the NASA-HTTP logs of 1995: most clients logged by name.
    let names = dir.path().join("names.log");
    let lines: String = (0..50)
        .map(|i| {
            let client = match i % 10 {
                0 => format!("192.0.2.{i}"),
                _ => format!("host{i}.example.org"),
            };
            format!(
                "{client} - - [01/Jul/1995:00:00:{:02} -0400] \"GET /history/apollo/ HTTP/1.0\" 200 6245\n",
                i % 60
            )
        })
        .collect();
    std::fs::write(&names, lines).unwrap();
    let out = floodwatch(&["replay", "--format", "common", names.to_str().unwrap()]);
    assert!(out.status.success());
    let err = util::stderr(&out);
    assert!(
        err.contains("90 % of the lines read could not be used"),
        "{err}"
    );
    assert!(err.contains("\"host1.example.org\""), "{err}");
    assert!(err.contains("HostnameLookups"), "{err}");

    // The demo logs' two garbage lines in 11,122 are no reason to warn.
    let out = floodwatch(&["replay", &demo_glob()]);
    assert!(!util::stderr(&out).contains("could not be used"));
}

/// `floodwatch test`, fail2ban-regex for floodwatch: each line's fields and rules, or why it
/// could not be used, then a summary; from a file or from standard input.
#[test]
fn test_shows_each_lines_fields_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floodwatch.toml");
    std::fs::write(
        &config,
        "[[rule]]\nname = \"logins\"\npath_prefix = [\"/login\"]\n\n[[rule]]\nname = \"all\"\n",
    )
    .unwrap();
    let lines = "203.0.113.7 - - [25/Nov/2026:11:00:05 +0100] \"POST /login HTTP/1.1\" 200 5 \"-\" \"x\"\n\
                 www.example.org - - [25/Nov/2026:11:00:06 +0100] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n\
                 \x16\x03\x01 garbage\n\
                 2001:db8::7 - - [25/Nov/2026:11:00:07 +0100] \"GET /about HTTP/1.1\" 404 5 \"-\" \"x\"\n";
    let mut child = util::command()
        .args(["test", "--config", config.to_str().unwrap(), "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got,
        [
            "1 ok client=203.0.113.7 time=2026-11-25T10:00:05.000Z method=\"POST\" path=\"/login\" status=200 rules=logins,all key=203.0.113.7",
            "2 client not an address: client=\"www.example.org\"",
            "3 malformed (not the format's shape): \"\\x16\\x03\\x01 garbage\"",
            "4 ok client=2001:db8::7 time=2026-11-25T10:00:07.000Z method=\"GET\" path=\"/about\" status=404 rules=all key=2001:db8::/64",
        ]
    );
    let err = util::stderr(&out);
    assert!(
        err.contains("floodwatch test: 4 lines: 2 counted by some rule"),
        "{err}"
    );
    assert!(
        err.contains("rule logins: 1 lines") && err.contains("rule all: 2 lines"),
        "{err}"
    );
    assert!(
        !err.contains("warning"),
        "4 lines are too few to judge: {err}"
    );

    // A file, with its vhost from Plesk's layout.
    let out = floodwatch(&[
        "test",
        &testdata("replay/vhosts/example.com/logs/access_log"),
    ]);
    assert!(out.status.success());
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(first.contains("vhost=\"example.com\""), "{first}");
}

/// `test` with lines on standard input (a pipe), its stdout and stderr.
fn test_stdin(config: &std::path::Path, lines: &str) -> (String, String) {
    let mut child = util::command()
        .args(["test", "--config", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    (
        String::from_utf8(out.stdout.clone()).unwrap(),
        util::stderr(&out),
    )
}

/// Each line shows the key it counts under (per rule when the rules' prefixes differ), and a
/// client whose key is allowlisted is shown as such and not counted.
#[test]
fn test_shows_each_lines_key_and_allowlisted_clients() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floodwatch.toml");
    std::fs::write(
        &config,
        "[allow]\ncidrs = [\"127.0.0.1\", \"198.51.100.9\"]\n\n\
         [[rule]]\nname = \"addr\"\n\n[[rule]]\nname = \"net\"\nipv4_prefix = 24\n",
    )
    .unwrap();
    let line = |ip: &str| {
        format!("{ip} - - [25/Nov/2026:11:00:05 +0100] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n")
    };
    let input: String = [
        "203.0.113.7",
        "2001:db8:1:2:3::7",
        "127.0.0.1",
        "198.51.100.7",
    ]
    .iter()
    .map(|ip| line(ip))
    .collect();
    let (out, err) = test_stdin(&config, &input);
    let tail = |l: &str| l.split_once("status=200 ").unwrap().1.to_string();
    let got: Vec<String> = out.lines().map(tail).collect();
    assert_eq!(
        got,
        [
            "rules=addr,net keys=203.0.113.7,203.0.113.0/24",
            "rules=addr,net key=2001:db8:1:2::/64",
            "rules=addr,net keys=127.0.0.1,127.0.0.0/24: never banned ([allow] cidrs or a trusted proxy), not counted",
            "rules=addr key=198.51.100.7 allowlisted=net key=198.51.100.0/24 (never banned)",
        ]
    );
    assert!(out
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("3 allowlisted client=127.0.0.1 "));
    assert!(
        err.contains("3 counted by some rule") && err.contains("allowlisted 1 (never banned)"),
        "{err}"
    );
    assert!(
        err.contains("rule addr: 3 lines") && err.contains("rule net: 2 lines"),
        "{err}"
    );
    // Standard input is a pipe here: nothing said about reading it.
    assert!(!err.contains("reading from standard input"), "{err}");
}

/// On a terminal, `test` says it reads standard input instead of waiting silently.
#[test]
fn test_on_a_terminal_says_it_reads_standard_input() {
    use std::io::{BufRead, BufReader};
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty(3) fills the two descriptors; no name, terminal settings or size given.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = util::command()
        .arg("test")
        .stdin(std::process::Stdio::from(slave))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // Said before any input (after the line naming the config); a silent wait would time out
    // here (and the child is ended).
    let said = (0..2)
        .map_while(|_| rx.recv_timeout(std::time::Duration::from_secs(15)).ok())
        .find(|l| l.contains("reading from standard input"));
    if said.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    said.expect("no word on stderr while waiting for standard input");
    // A line, then Ctrl-D (end of input), as typed.
    let mut term = std::fs::File::from(master);
    term.write_all(line_for_terminal().as_bytes()).unwrap();
    term.write_all(b"\x04").unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    assert!(status.success(), "{rest:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.starts_with("1 ok client=203.0.113.7 "), "{out}");
    assert!(rest.join("\n").contains("1 lines: 1 counted"), "{rest:?}");
}

fn line_for_terminal() -> String {
    "203.0.113.7 - - [25/Nov/2026:11:00:05 +0100] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n".into()
}

/// `--shards` and `--producers` default (and 0) to one per CPU, as their help says; the help
/// once said "one per CPU less one".
#[test]
fn shards_and_producers_default_to_one_per_cpu_as_the_help_says() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let threads = |args: &[&str]| {
        let mut all = vec!["replay", "--no-progress"];
        all.extend(args);
        let glob = demo_glob();
        all.push(&glob);
        let err = util::stderr(util::ok(&floodwatch(&all)));
        let (_, tail) = err.split_once(" MB/s, ").unwrap_or_else(|| panic!("{err}"));
        let (counts, _) = tail.split_once(')').unwrap();
        let n: Vec<usize> = counts
            .split(", ")
            .map(|c| c.split(' ').next().unwrap().parse().unwrap())
            .collect();
        (n[0], n[1])
    };
    assert_eq!(threads(&[]), (cpus, cpus));
    assert_eq!(
        threads(&["--shards", "0", "--producers", "0"]),
        (cpus, cpus)
    );
    assert_eq!(threads(&["--shards", "3", "--producers", "2"]), (2, 3));
    let help = String::from_utf8(floodwatch(&["replay", "--help"]).stdout).unwrap();
    // Unwrapped: the help is wrapped to the terminal's width.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!help.contains("less one"), "{help}");
    assert!(help.contains("else one per CPU"), "{help}");
}

/// A big log is read through mappings (see `source::mapped`): one truncated under the replay
/// (logrotate's `copytruncate`) must end it with exit code 1 and a message naming the file, or
/// (truncated between two ranges) end early as a read one does, never kill it with SIGBUS.
#[test]
fn a_log_truncated_while_replayed_is_named_never_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let line = "203.0.113.7 - - [25/Nov/2026:10:00:00 +0000] \"GET /a/fairly/long/path HTTP/1.1\" 200 512 \"-\" \"agent\"\n";
    let data = line.repeat(16 << 20 >> 7);
    let mut named = 0;
    for delay_ms in [20, 60, 120, 200, 300] {
        std::fs::write(&path, &data).unwrap();
        let child = util::command()
            .args(["replay", "--no-progress"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                assert!(err.contains("access.log: the file shrank while it was being read"));
                named += 1;
            }
            other => panic!("exit {other:?}: {err}"),
        }
    }
    eprintln!("{named} of 5 runs caught the truncation mid-range");
}
