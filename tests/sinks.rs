//! End-to-end tests of the sinks: the real binary replaying real files into each configured
//! `[[sink]]`.

mod util;
use util::{demo_glob, events, eventually, floodwatch, json_lines, stderr};

use std::path::{Path, PathBuf};
use std::process::Command;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("floodwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn jsonl_sinks_write_what_stdout_gets_without_sinks() {
    let plain = floodwatch(&["replay", "--ban", "10s", &demo_glob()]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let expected = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(json_lines(&expected).len() >= 3, "{expected}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"jsonl\"\npath = {:?}\n\n[[sink]]\ntype = \"jsonl\"\npath = \"-\"\n",
            file.display().to_string()
        ),
    );
    let out = floodwatch(&[
        "replay",
        "--sinks",
        "--ban",
        "10s",
        "--config",
        config.to_str().unwrap(),
        &demo_glob(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let n = json_lines(&expected).len();
    assert!(
        stderr(&out).contains(&format!("sink[0] jsonl: {n} delivered, 0 failed")),
        "{}",
        stderr(&out)
    );
    // With sinks, each ban is also a line of the log (without, stdout shows it).
    assert!(
        stderr(&out).contains(r#"ban 198.51.100.23 rule=default vhost="example.com" requests="#),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&plain).contains("ban 198.51.100.23"));
}

#[test]
fn log_level_filters_diagnostics_but_never_events_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\n");
    let run = |level: &str| {
        floodwatch(&[
            "--log-level",
            level,
            "replay",
            "--sinks",
            "--config",
            config.to_str().unwrap(),
            &demo_glob(),
        ])
    };
    let info = run("info");
    let warn = run("warn");
    assert!(info.status.success() && warn.status.success());
    assert_eq!(
        info.stdout, warn.stdout,
        "events do not depend on the level"
    );
    assert!(!events(&info).is_empty());
    assert!(stderr(&info).contains("floodwatch: sink[0] jsonl: "));
    assert!(!stderr(&warn).contains("sink[0]"), "{}", stderr(&warn));

    let missing = floodwatch(&["--log-level", "error", "replay", "/nonexistent/access_log"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).starts_with("floodwatch: error: "),
        "{}",
        stderr(&missing)
    );
    let bogus = floodwatch(&["--log-level", "loud", "replay", &demo_glob()]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(stderr(&bogus).contains("--log-level"), "{}", stderr(&bogus));
}

#[test]
fn sink_config_errors_name_the_key_and_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nbogus = true\n",
    );
    let glob = demo_glob();
    for args in [vec!["replay", "--sinks", &glob], vec!["check-config"]] {
        let cmd = args[0];
        let mut args = args.clone();
        args.extend(["--config", config.to_str().unwrap()]);
        let out = floodwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}: sink[0].bogus: unknown field",
                config.display()
            )),
            "{err}"
        );
    }
    // A token variable that is not set stops watch before it runs a sink that cannot block.
    let config = write_config(
        dir.path(),
        "[[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc123\"\n\
         api_token_env = \"FLOODWATCH_TEST_NO_TOKEN\"\n",
    );
    let config = config.to_str().unwrap();
    for args in [
        vec!["check-config", "--config", config],
        vec!["watch", "--config", config, &glob],
    ] {
        let out = floodwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "sink[0].api_token_env: the environment variable FLOODWATCH_TEST_NO_TOKEN is not set"
            ),
            "{}",
            stderr(&out)
        );
    }
}

/// Lines in an nginx format whose every text field, the Host header included, is under the
/// client's control.
const HOSTILE_FORMAT: &str = r#"nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$host""#;

/// A log in which flooders send shell and firewall syntax in every field, and the expected
/// vhost each one's ban may carry to a command ("-" when the Host is not a plain name).
fn hostile_log(dir: &Path) -> (String, Vec<(&'static str, String)>) {
    let pwned = |n: u32| dir.join(format!("pwned{n}")).display().to_string();
    let payloads = [
        format!("$(touch {})", pwned(1)),
        format!("`touch {}`", pwned(2)),
        format!("x; touch {}", pwned(3)),
        format!("' ; touch {} ; '", pwned(4)),
        format!("\\x22 ; touch {} \\x0A", pwned(5)),
        format!("-rf {{ 0.0.0.0/0 }}; touch {}", pwned(6)),
        "ok.example.com".to_string(),
    ];
    let clients = [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "203.0.113.4",
        "2001:db8:66::1",
        "203.0.113.6",
        "203.0.113.7",
    ];
    let mut log = String::new();
    let mut expected = Vec::new();
    for (i, (client, p)) in clients.iter().zip(&payloads).enumerate() {
        for n in 0..20 {
            log.push_str(&format!(
                "{client} - {p} [25/Nov/2026:10:00:{:02} +0000] \"GET /{p}?{n} HTTP/1.1\" 200 5 \"{p}\" \"{p}\" \"{p}\"\n",
                i * 2
            ));
        }
        // A raw newline in the middle of a field, as a broken or hostile writer might leave.
        log.push_str(&format!(
            "{client} - - [25/Nov/2026:10:00:{:02} +0000] \"GET /$(touch {})\n; rm -rf / HTTP/1.1\" 200 5 \"-\" \"-\" \"-\"\n",
            i * 2,
            pwned(7)
        ));
        let vhost = if p == "ok.example.com" {
            p.clone()
        } else {
            "-".into()
        };
        expected.push((*client, vhost));
    }
    // Much later, so that every ban expires within the replay.
    log.push_str("192.0.2.1 - - [25/Nov/2026:10:05:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"-\" \"x.example\"\n");
    (log, expected)
}

#[test]
fn hostile_log_content_never_reaches_a_command_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, expected) = hostile_log(dir.path());
    let log_path = dir.path().join("access.log");
    std::fs::write(&log_path, &log).unwrap();
    let argv_file = dir.path().join("argv.txt");
    let events_file = dir.path().join("events.jsonl");
    let deny_file = dir.path().join("deny.conf");
    // The command prints each argument it gets between `<` and `>`, one per line.
    let record = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"printf '<%s>\\\\n' \\\"$@\\\" >> \\\"$0\\\"; echo >> \\\"$0\\\"\", {:?}, \"{what}\", \"{{key}}\", \"{{ip}}\", \"{{prefix_len}}\", \"{{family}}\", \"{{rule}}\", \"{{vhost}}\", \"{{ban_seconds}}\", \"{{until}}\"]",
            argv_file.display().to_string()
        )
    };
    let config = write_config(
        dir.path(),
        &format!(
            "[allow]\ncidrs = []\n\n[[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"1m\"\n\n\
             [[sink]]\ntype = \"exec\"\nban = {}\nunban = {}\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"true\"]\nmin_reload_interval = \"0s\"\n",
            record("ban"),
            record("unban"),
            events_file.display().to_string(),
            deny_file.display().to_string(),
        ),
    );
    let out = floodwatch(&[
        "replay",
        "--sinks",
        "--config",
        config.to_str().unwrap(),
        "--format",
        HOSTILE_FORMAT,
        log_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{}", std::fs::read_to_string(&argv_file).unwrap());
        eprintln!("{}", std::fs::read_to_string(&events_file).unwrap());
    }

    for n in 1..=7 {
        assert!(!dir.path().join(format!("pwned{n}")).exists(), "pwned{n}");
    }
    let argv = std::fs::read_to_string(&argv_file).unwrap();
    let mut calls: Vec<&str> = argv.split("\n\n").filter(|c| !c.is_empty()).collect();
    calls.sort();
    let mut want = Vec::new();
    for (client, vhost) in &expected {
        let key: floodwatch::addr::Cidr = client.parse().unwrap();
        // IPv6 clients are keyed by their /64.
        let key = if key.addr.is_v4() {
            key
        } else {
            floodwatch::addr::Cidr::new(key.addr, 64)
        };
        let family = if key.addr.is_v4() { 4 } else { 6 };
        for what in ["ban", "unban"] {
            want.push(format!(
                "<{what}>\n<{key}>\n<{}>\n<{}>\n<{family}>\n<flood>\n<{vhost}>\n<60>\n<",
                key.addr, key.prefix
            ));
        }
    }
    assert_eq!(calls.len(), want.len(), "{argv}");
    for w in &want {
        assert!(
            calls.iter().any(|c| c.starts_with(w.as_str())),
            "no call starting {w:?} in:\n{argv}"
        );
    }
    // Every argument is one of the values above or an RFC 3339 time, nothing else.
    for line in argv.lines().filter(|l| !l.is_empty()) {
        let v = line
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix('>'))
            .unwrap_or_else(|| panic!("argument split over lines: {line:?}"));
        let plain = v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-/".contains(&b));
        assert!(plain, "unexpected argument {v:?}");
    }

    // The JSON lines file has one well-formed object per event; the hostile vhost text is
    // inside JSON strings, escaped, never a line of its own.
    let events = json_lines(&std::fs::read_to_string(&events_file).unwrap());
    assert_eq!(events.len(), 2 * expected.len());
    assert!(events
        .iter()
        .any(|e| e["vhost"].as_str().is_some_and(|v| v.contains("$(touch"))));
    // Every ban expired: the nginx file is empty again.
    assert!(!std::fs::read_to_string(&deny_file)
        .unwrap()
        .contains("deny"));

    // The same log ending before the bans expire: the nginx file holds exactly one deny line
    // per flooder, each a canonical address or prefix.
    let cut = log.trim_end().rfind('\n').unwrap();
    std::fs::write(&log_path, &log[..=cut]).unwrap();
    let out = floodwatch(&[
        "replay",
        "--sinks",
        "--config",
        config.to_str().unwrap(),
        "--format",
        HOSTILE_FORMAT,
        log_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deny = std::fs::read_to_string(&deny_file).unwrap();
    let mut denied = Vec::new();
    for line in deny.lines().filter(|l| !l.starts_with("# ")) {
        let net = line
            .strip_prefix("deny ")
            .and_then(|l| l.strip_suffix(';'))
            .unwrap_or_else(|| panic!("unexpected line {line:?} in\n{deny}"));
        let parsed: floodwatch::addr::Cidr = net.parse().unwrap();
        assert_eq!(parsed.to_string(), net);
        denied.push(net.to_string());
    }
    assert_eq!(denied.len(), expected.len(), "{deny}");
    for n in 1..=7 {
        assert!(!dir.path().join(format!("pwned{n}")).exists(), "pwned{n}");
    }
}

/// How the test's nginx.conf applies the sink's file (`bans.conf`), as docs/guide.md says to.
#[derive(Clone, Copy)]
enum Wiring {
    /// `style = "deny"`, the file included in `server {}`.
    Deny,
    /// `style = "geo"`, the map in `http {}`, `if ($floodwatch_banned) { return 403; }` in
    /// `server {}`.
    GeoIf,
    /// `style = "geo"`, the map in `http {}` and the http-wide `limit_req` on it: no server
    /// block names the bans.
    GeoLimitReq,
}

impl Wiring {
    fn style(self) -> &'static str {
        match self {
            Wiring::Deny => "deny",
            Wiring::GeoIf | Wiring::GeoLimitReq => "geo",
        }
    }

    /// The file before floodwatch writes it: what the admin creates before wiring it in.
    fn empty_file(self) -> &'static str {
        match self {
            Wiring::Deny => "",
            Wiring::GeoIf | Wiring::GeoLimitReq => "geo $floodwatch_banned { default 0; }\n",
        }
    }

    /// What goes in `http {}` and in `server {}`.
    fn directives(self, bans: &str) -> (String, String) {
        match self {
            Wiring::Deny => (String::new(), format!("include {bans};")),
            Wiring::GeoIf => (
                format!("include {bans};"),
                "if ($floodwatch_banned) { return 403; }".into(),
            ),
            Wiring::GeoLimitReq => (
                format!(
                    "include {bans};\n  \
                     map $floodwatch_banned $floodwatch_limit {{ default \"\"; 1 banned; }}\n  \
                     limit_req_zone $floodwatch_limit zone=floodwatch:64k rate=1r/m;\n  \
                     limit_req zone=floodwatch;\n  limit_req_status 403;\n  \
                     limit_req_log_level info;"
                ),
                String::new(),
            ),
        }
    }
}

/// A real nginx on loopback with its own prefix, config, pid file and logs in a temp dir;
/// stopped on drop.
struct TestNginx {
    bin: PathBuf,
    prefix: PathBuf,
    port: u16,
    child: std::process::Child,
}

fn nginx_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    let has_curl = Command::new("curl").arg("--version").output().is_ok();
    match found {
        Some(p) if has_curl => p,
        _ => panic!(
            "this test needs nginx and curl: run `bash .ci/run` (it installs them with apt-get), \
             or `apt-get install -y nginx curl`"
        ),
    }
}

impl TestNginx {
    fn start(prefix: &Path, wiring: Wiring) -> TestNginx {
        use std::os::unix::fs::PermissionsExt;
        let bin = nginx_bin();
        // Workers run as an unprivileged user when started as root: they must reach the files.
        std::fs::set_permissions(prefix, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(prefix.join("html")).unwrap();
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        // Tells this nginx from any other server that took its port (see `answers_as_itself`).
        let token = format!("ok {}\n", prefix.display());
        std::fs::write(prefix.join("html/index.html"), &token).unwrap();
        let bans = prefix.join("bans.conf");
        std::fs::write(&bans, wiring.empty_file()).unwrap();
        let (http, server) = wiring.directives(&bans.display().to_string());
        let p = prefix.display();
        // nginx binds a port found free a moment before, which another program may take in
        // between: then nginx exits at once, and it is tried again on another port.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen6 = match ipv6_loopback() {
                true => format!("listen [::1]:{port};\n    "),
                false => String::new(),
            };
            std::fs::write(
                prefix.join("nginx.conf"),
                format!(
                    "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n\
                     proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  {http}\n\
                     server {{\n    listen 127.0.0.1:{port};\n    {listen6}{server}\n\
                     root {p}/html;\n  }}\n}}\n"
                ),
            )
            .unwrap();
            let child = TestNginx::spawn(&bin, prefix);
            let mut n = TestNginx {
                bin: bin.clone(),
                prefix: prefix.to_path_buf(),
                port,
                child,
            };
            if n.answers_as_itself(&token) {
                n.wait_for_status("127.0.0.1", 200);
                return n;
            }
        }
        let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        panic!("nginx did not start on any of five ports; its error log:\n{log}");
    }

    /// Waits until this nginx serves its own page (`token`): false if it exited first (its port
    /// taken), so that another server answering on the port is never taken for it.
    fn answers_as_itself(&mut self, token: &str) -> bool {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let out = Command::new("curl")
                .args(["-s", "--max-time", "5"])
                .arg(format!("http://127.0.0.1:{}/", self.port))
                .output()
                .expect("run curl");
            if out.stdout == token.as_bytes() {
                return true;
            }
            let log = std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
            assert!(
                std::time::Instant::now() < until,
                "nginx never served its page on port {}; its error log:\n{log}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn spawn(bin: &Path, prefix: &Path) -> std::process::Child {
        let mut args = TestNginx::base_args(prefix);
        args.extend(["-g".into(), "daemon off;".into()]);
        Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx")
    }

    /// Starts nginx again after [`TestNginx::stop`], with the config and files as they are.
    fn restart(&mut self) {
        self.child = TestNginx::spawn(&self.bin, &self.prefix);
        self.wait_for_status("127.0.0.1", 200);
    }

    /// The nginx argv with `extra` appended, run through `sh` so that it fails while `marker`
    /// exists, with the marker's content as its stderr, as TOML.
    fn failing_while_toml(&self, marker: &Path, extra: &[&str]) -> String {
        let mut argv: Vec<String> = [
            "sh",
            "-c",
            "if [ -e \"$0\" ]; then cat \"$0\" >&2; exit 1; fi; exec \"$@\"",
        ]
        .map(String::from)
        .to_vec();
        argv.push(marker.display().to_string());
        argv.push(self.bin.display().to_string());
        argv.extend(TestNginx::base_args(&self.prefix));
        argv.extend(extra.iter().map(|s| s.to_string()));
        format!("{argv:?}")
    }

    fn base_args(prefix: &Path) -> Vec<String> {
        let p = prefix.display();
        vec![
            "-p".into(),
            format!("{p}/"),
            "-c".into(),
            format!("{p}/nginx.conf"),
            "-e".into(),
            format!("{p}/error.log"),
        ]
    }

    /// The nginx argv with `extra` appended, as TOML.
    fn command_toml(&self, extra: &[&str]) -> String {
        let mut argv = vec![self.bin.display().to_string()];
        argv.extend(TestNginx::base_args(&self.prefix));
        argv.extend(extra.iter().map(|s| s.to_string()));
        format!("{argv:?}")
    }

    fn status_from(&self, source: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(["--interface", source])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    }

    /// The status of a request from `::1` to the server's IPv6 listener.
    fn status_v6(&self) -> u16 {
        let out = Command::new("curl")
            .args(["-g", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "5"])
            .arg(format!("http://[::1]:{}/", self.port))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    }

    /// Polls until a request from `::1` gets `want` (see [`TestNginx::wait_for_status`]).
    fn wait_for_status_v6(&self, want: u16) {
        let mut got = 0;
        for _ in 0..100 {
            got = self.status_v6();
            if got == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
        panic!("from ::1: got HTTP {got}, want {want}; nginx error log:\n{log}");
    }

    /// Polls until a request from `source` gets `want`: a reload takes effect when nginx's new
    /// workers have started, a moment after `nginx -s reload` returns.
    fn wait_for_status(&self, source: &str, want: u16) {
        let mut got = 0;
        for _ in 0..100 {
            got = self.status_from(source);
            if got == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
        panic!("from {source}: got HTTP {got}, want {want}; nginx error log:\n{log}");
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestNginx {
    /// Stops nginx (see [`TestNginx::restart`]).
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM is nginx's fast shutdown: the master stops its workers and waits for them.
        // Killing the master outright would orphan the workers, which hold the test's stdout
        // open and would keep whoever reads it (CI) waiting forever.
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replays `log` (written to `dir/access.log`) with `config`; must succeed. Returns stderr.
fn replay_log(dir: &Path, config: &Path, log: &str) -> String {
    let path = dir.join("access.log");
    std::fs::write(&path, log).unwrap();
    let out = floodwatch(&[
        "replay",
        "--sinks",
        "--config",
        config.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

/// Whether this machine has IPv6 on loopback (`::1`), for the tests that need an IPv6 client.
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn flood_lines(client: &str, second: u32) -> String {
    (0..20)
        .map(|n| {
            format!(
                "{client} - - [25/Nov/2026:10:00:{second:02} +0000] \"GET /?{n} HTTP/1.1\" 200 5 \"-\" \"flood\"\n"
            )
        })
        .collect()
}

#[test]
fn nginx_denies_a_banned_client_after_the_reload_and_lets_it_back_after_expiry() {
    nginx_refuses_a_banned_client_until_expiry(Wiring::Deny, "deny 127.0.0.2;\n");
}

#[test]
fn nginx_geo_map_checked_in_the_server_refuses_a_banned_client_until_expiry() {
    nginx_refuses_a_banned_client_until_expiry(Wiring::GeoIf, "    127.0.0.2 1;\n");
}

#[test]
fn nginx_geo_map_checked_by_an_http_wide_limit_req_refuses_a_banned_client_until_expiry() {
    nginx_refuses_a_banned_client_until_expiry(Wiring::GeoLimitReq, "    127.0.0.2 1;\n");
}

/// A banned client gets 403 once nginx has reloaded, another 200, and the banned one 200 again
/// after its ban has expired; `entry` is the banned client's line in the file.
fn nginx_refuses_a_banned_client_until_expiry(wiring: Wiring, entry: &str) {
    let dir = tempfile::tempdir().unwrap();
    let nginx = TestNginx::start(dir.path(), wiring);
    assert_eq!(nginx.status_from("127.0.0.2"), 200, "not banned yet");
    let bans = dir.path().join("bans.conf");
    let events = dir.path().join("events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[allow]\ncidrs = []\n\n[[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"30s\"\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {:?}\nstyle = {:?}\ntest_command = {}\n\
             reload_command = {}\nmin_reload_interval = \"200ms\"\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            bans.display().to_string(),
            wiring.style(),
            nginx.command_toml(&["-t", "-q"]),
            nginx.command_toml(&["-s", "reload"]),
            events.display().to_string(),
        ),
    );
    let replay = |log: &str| {
        let said = replay_log(dir.path(), &config, log);
        let want = format!("sink[0] nginx: style {}: include", wiring.style());
        assert!(said.contains(&want), "{said}");
    };

    // 127.0.0.2 floods; the log ends while it is banned.
    let mut log = flood_lines("127.0.0.2", 0);
    log.push_str(
        "127.0.0.1 - - [25/Nov/2026:10:00:01 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"ok\"\n",
    );
    replay(&log);
    let text = std::fs::read_to_string(&bans).unwrap();
    assert!(text.contains(entry), "{text}");
    nginx.wait_for_status("127.0.0.2", 403);
    assert_eq!(nginx.status_from("127.0.0.1"), 200);

    // The same flood, then the log goes on past the ban's end: the ban expires and the file is
    // regenerated without it.
    log.push_str(
        "127.0.0.1 - - [25/Nov/2026:10:01:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"ok\"\n",
    );
    replay(&log);
    let text = std::fs::read_to_string(&bans).unwrap();
    assert!(!text.contains("127.0.0.2"), "{text}");
    let ev = json_lines(&std::fs::read_to_string(&events).unwrap());
    assert!(ev
        .iter()
        .any(|e| e["type"] == "unban" && e["key"] == "127.0.0.2"));
    nginx.wait_for_status("127.0.0.2", 200);
    assert_eq!(nginx.status_from("127.0.0.1"), 200);
}

/// Both styles, as a real `nginx -t` and reload take them: IPv4 and IPv6 addresses and prefixes,
/// and a key banned under two rules written once (nginx warns of a duplicate geo network).
#[test]
fn nginx_takes_both_styles_with_ipv4_ipv6_addresses_and_prefixes() {
    for (wiring, entries) in [
        (
            Wiring::Deny,
            [
                "deny 198.51.100.0/24;",
                "deny 198.51.100.7;",
                "deny 2001:db8:1:2::/64;",
                "deny 2001:db8:1:2::7;",
            ],
        ),
        (
            Wiring::GeoIf,
            [
                "    198.51.100.0/24 1;",
                "    198.51.100.7 1;",
                "    2001:db8:1:2::/64 1;",
                "    2001:db8:1:2::7 1;",
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let nginx = TestNginx::start(dir.path(), wiring);
        let bans = dir.path().join("bans.conf");
        let rule = |name: &str, v4: u8, v6: u8| {
            format!(
                "[[rule]]\nname = {name:?}\nrate = \"1r/s\"\nburst = 5\nban = \"30s\"\n\
                 ipv4_prefix = {v4}\nipv6_prefix = {v6}\n\n"
            )
        };
        let config = write_config(
            dir.path(),
            &format!(
                "[allow]\ncidrs = []\n\n{}{}{}\
                 [[sink]]\ntype = \"nginx\"\npath = {:?}\nstyle = {:?}\ntest_command = {}\n\
                 reload_command = {}\nmin_reload_interval = \"0s\"\n",
                rule("address", 32, 128),
                rule("same-address", 32, 128),
                rule("network", 24, 64),
                bans.display().to_string(),
                wiring.style(),
                nginx.command_toml(&["-t", "-q"]),
                nginx.command_toml(&["-s", "reload"]),
            ),
        );
        let log_path = dir.path().join("access.log");
        let mut log = flood_lines("198.51.100.7", 0);
        log.push_str(&flood_lines("2001:db8:1:2::7", 0));
        std::fs::write(&log_path, log).unwrap();
        let out = floodwatch(&[
            "replay",
            "--sinks",
            "--config",
            config.to_str().unwrap(),
            log_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&bans).unwrap();
        let written: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("deny ") || l.ends_with(" 1;"))
            .collect();
        assert_eq!(written, entries, "{text}");
        let check = Command::new(&nginx.bin)
            .args(TestNginx::base_args(&nginx.prefix))
            .arg("-t")
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", stderr(&check));
        assert!(!stderr(&check).contains("[warn]"), "{}", stderr(&check));
        nginx.wait_for_status("127.0.0.1", 200);
    }
}

/// An IPv6 client banned by its /64 is refused in every wiring, while an IPv4 client is
/// served; both come back after the ban's end.
#[test]
fn nginx_refuses_a_banned_ipv6_client_by_its_prefix_in_every_wiring() {
    if util::skip_unless_ci((!ipv6_loopback()).then_some("IPv6 loopback (::1) to be a client from"))
    {
        return;
    }
    for (wiring, entry) in [
        (Wiring::Deny, "deny ::/64;\n"),
        (Wiring::GeoIf, "    ::/64 1;\n"),
        (Wiring::GeoLimitReq, "    ::/64 1;\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let nginx = TestNginx::start(dir.path(), wiring);
        assert_eq!(nginx.status_v6(), 200, "not banned yet");
        let bans = dir.path().join("bans.conf");
        let config = write_config(
            dir.path(),
            &format!(
                "[allow]\ncidrs = []\n\n[[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\n\
                 ban = \"30s\"\n\n[[sink]]\ntype = \"nginx\"\npath = {:?}\nstyle = {:?}\n\
                 test_command = {}\nreload_command = {}\nmin_reload_interval = \"0s\"\n",
                bans.display().to_string(),
                wiring.style(),
                nginx.command_toml(&["-t", "-q"]),
                nginx.command_toml(&["-s", "reload"]),
            ),
        );
        let replay = |log: &str| replay_log(dir.path(), &config, log);
        let mut log = flood_lines("::1", 0);
        replay(&log);
        let text = std::fs::read_to_string(&bans).unwrap();
        assert!(text.contains(entry), "{text}");
        nginx.wait_for_status_v6(403);
        assert_eq!(nginx.status_from("127.0.0.1"), 200);

        log.push_str(
            "127.0.0.1 - - [25/Nov/2026:10:01:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"ok\"\n",
        );
        replay(&log);
        assert!(!std::fs::read_to_string(&bans).unwrap().contains("::/64"));
        nginx.wait_for_status_v6(200);
    }
}

/// A minimal HTTP/1.1 server (keep-alive) answering 200 to every request and collecting the
/// request bodies, in order of arrival.
fn serve_http(listener: std::net::TcpListener) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let got = got.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut len = 0;
                    let mut first = true;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            assert!(line.starts_with("POST /events "), "{line}");
                            first = false;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    got.lock().unwrap().push(String::from_utf8(body).unwrap());
                    (&conn)
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    bodies
}

#[test]
fn webhook_delivers_everything_once_a_server_that_was_down_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = util::ReservedPort::new();
    let port = reserved.port();
    let events = dir.path().join("events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/events\"\n\
             retry_max_delay = \"200ms\"\n[sink.headers]\nAuthorization = \"Bearer t0ken\"\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            events.display().to_string()
        ),
    );
    let log = dir.path().join("replay.log");
    let mut child = util::command()
        .args(["replay", "--sinks", "--ban", "10s", "--config"])
        .arg(&config)
        .arg(demo_glob())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Down until the replay has tried and failed (and the jsonl sink has written its events).
    eventually("the replay's events and a failed delivery", || {
        std::fs::read_to_string(&events).map_or(0, |t| t.lines().count()) >= 3
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("sink[0] webhook: delivering failed, will retry")
    });
    let bodies = serve_http(reserved.listen());
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{err}");

    let written = std::fs::read_to_string(&events).unwrap();
    let want: Vec<&str> = written.lines().collect();
    assert_eq!(*bodies.lock().unwrap(), want);
    assert!(
        err.contains("sink[0] webhook: delivering failed, will retry"),
        "{err}"
    );
    let report = err
        .lines()
        .find(|l| l.starts_with("floodwatch: sink[0] webhook: ") && l.contains("delivered"))
        .unwrap();
    assert!(
        report.contains(&format!("{} delivered, 0 failed, 0 dropped", want.len())),
        "{report}"
    );
    assert!(!err.contains("t0ken"), "a header value was logged: {err}");
}

/// The port of the metrics endpoint of a watch started with `[metrics] listen` on port 0, as
/// its log says.
fn metrics_port(watch: &RunningWatch) -> u16 {
    let mut port = None;
    eventually("the metrics address in the log", || {
        port = watch
            .log()
            .split("metrics on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok());
        port.is_some()
    });
    port.unwrap_or_default()
}

/// `status --json`'s entry for the sink `name`.
fn sink_status(config: &Path, name: &str) -> serde_json::Value {
    let out = admin(config, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let sinks = v["sinks"].as_array().cloned().unwrap_or_default();
    sinks
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_default()
}

/// The lines a running watch has read, from `status --json`.
fn status_lines(config: &Path) -> u64 {
    let out = admin(config, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["lines"]
        .as_u64()
        .unwrap_or_else(|| panic!("no lines in status: {v}"))
}

fn failing(config: &Path, name: &str) -> bool {
    !sink_status(config, name)["failing_since"].is_null()
}

/// The `floodwatch_sink_up` sample of `sink` on the metrics endpoint at `port`.
fn sink_up(port: u16, sink: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .ok()?;
    let want = format!("floodwatch_sink_up{{sink=\"{sink}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&want).map(String::from))
}

/// The common part of a watch config with one flood rule on `access_log`.
fn watch_config_head(dir: &Path, access_log: &Path) -> String {
    format!(
        "[input]\npaths = [{:?}]\n\n[allow]\ncidrs = []\n\n\
         [[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"10m\"\n\n\
         [state]\ndir = {:?}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n",
        access_log.display().to_string(),
        dir.join("state").display().to_string(),
    )
}

/// A real nginx whose reload, then whose `nginx -t`, fail for a while: the ban written but not
/// in force shows as FAILING (status, its JSON, the metrics gauge) until nginx takes the file,
/// with the error's first line only; a refused test leaves the previous file in place; both
/// are retried until they succeed, and the recovery and the reload are logged.
#[test]
fn nginx_reload_and_test_failures_show_as_failing_until_nginx_takes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = TestNginx::start(dir.path(), Wiring::Deny);
    let (deny, access_log) = (dir.path().join("bans.conf"), dir.path().join("access_log"));
    let (no_reload, no_test) = (dir.path().join("no-reload"), dir.path().join("no-test"));
    // Two lines of stderr, as nginx's are.
    let refusal = "nginx: [emerg] refused\nnginx: configuration file test failed\n";
    std::fs::write(&access_log, "").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[sink]]\nname = \"deny\"\ntype = \"nginx\"\npath = {:?}\ntest_command = {}\n\
             reload_command = {}\nmin_reload_interval = \"0s\"\nretry_max_delay = \"1s\"\n",
            watch_config_head(dir.path(), &access_log),
            deny.display().to_string(),
            nginx.failing_while_toml(&no_test, &["-t", "-q"]),
            nginx.failing_while_toml(&no_reload, &["-s", "reload"]),
        ),
    );
    let cfg = config.as_path();
    let watch = RunningWatch::start(cfg, dir.path().join("watch.log"));
    let metrics = metrics_port(&watch);
    assert_eq!(sink_up(metrics, "deny").as_deref(), Some("1"));

    // The reload fails: the file is written, the ban is not in force, and nobody says ok.
    std::fs::write(&no_reload, refusal).unwrap();
    util::append_flood(&access_log, "127.0.0.2");
    eventually("deny failing", || failing(cfg, "deny"));
    assert!(std::fs::read_to_string(&deny)
        .unwrap()
        .contains("deny 127.0.0.2;"));
    assert_eq!(nginx.status_from("127.0.0.2"), 200, "not reloaded");
    let s = sink_status(cfg, "deny");
    let error = s["last_error"].as_str().unwrap();
    assert!(error.contains("reload failed: "), "{s}");
    assert!(
        error.contains("nginx: [emerg] refused (more in the log)"),
        "{s}"
    );
    assert!(
        !error.contains('\n') && !error.contains("configuration file"),
        "{s}"
    );
    let text = stdout_text(&admin(cfg, &["status"]));
    assert!(text.contains("  deny  FAILING since "), "{text}");
    assert!(!text.contains("configuration file test failed"), "{text}");
    assert_eq!(sink_up(metrics, "deny").as_deref(), Some("0"));
    // Still failing a few retries later: no retry passes for a success.
    eventually("retried", || {
        sink_status(cfg, "deny")["retries"].as_u64() >= Some(3)
    });
    assert!(failing(cfg, "deny"));

    // nginx takes reloads again: the retry brings the ban into force, and the sink is ok.
    std::fs::remove_file(&no_reload).unwrap();
    nginx.wait_for_status("127.0.0.2", 403);
    eventually("deny ok", || !failing(cfg, "deny"));
    assert_eq!(sink_up(metrics, "deny").as_deref(), Some("1"));
    let text = stdout_text(&admin(cfg, &["status"]));
    assert!(text.contains("  deny  ok  "), "{text}");

    // nginx -t refuses: the previous file stays, the new ban waits, FAILING meanwhile.
    std::fs::write(&no_test, refusal).unwrap();
    let before = std::fs::read_to_string(&deny).unwrap();
    util::append_flood(&access_log, "127.0.0.3");
    eventually("test refused", || {
        sink_status(cfg, "deny")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("test failed, not reloaded, previous file restored"))
    });
    assert!(failing(cfg, "deny"));
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), before);
    assert_eq!(nginx.status_from("127.0.0.3"), 200);
    std::fs::remove_file(&no_test).unwrap();
    nginx.wait_for_status("127.0.0.3", 403);
    eventually("deny ok again", || !failing(cfg, "deny"));
    assert_eq!(nginx.status_from("127.0.0.1"), 200);

    let log = watch.log();
    watch.stop();
    assert!(
        log.contains("deny: recovered: flushing succeeded after "),
        "{log}"
    );
    assert!(
        log.contains("configuration file test failed"),
        "the whole error in the log: {log}"
    );
    let reloads = log.matches("deny: nginx reloaded: ").count();
    assert_eq!(reloads, 2, "one line per reload: {log}");
}

/// nginx stopped while a ban comes: FAILING until it is back, then the ban is in force and the
/// sink ok again.
#[test]
fn nginx_stopped_then_started_again_enforces_the_ban_and_fails_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut nginx = TestNginx::start(dir.path(), Wiring::Deny);
    let (deny, access_log) = (dir.path().join("bans.conf"), dir.path().join("access_log"));
    std::fs::write(&access_log, "").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[sink]]\nname = \"deny\"\ntype = \"nginx\"\npath = {:?}\ntest_command = {}\n\
             reload_command = {}\nmin_reload_interval = \"0s\"\nretry_max_delay = \"1s\"\n",
            watch_config_head(dir.path(), &access_log),
            deny.display().to_string(),
            nginx.command_toml(&["-t", "-q"]),
            nginx.command_toml(&["-s", "reload"]),
        ),
    );
    let cfg = config.as_path();
    let watch = RunningWatch::start(cfg, dir.path().join("watch.log"));
    nginx.stop();
    util::append_flood(&access_log, "127.0.0.2");
    eventually("deny failing", || failing(cfg, "deny"));
    let text = stdout_text(&admin(cfg, &["status"]));
    assert!(text.contains("  deny  FAILING since "), "{text}");
    assert!(text.contains("reload failed: "), "{text}");
    // Retried while nginx is down (retry_max_delay 1s), and failing still after the retry.
    let retries = sink_status(cfg, "deny")["retries"].as_u64().unwrap_or(0);
    eventually("a retry while nginx is down", || {
        sink_status(cfg, "deny")["retries"].as_u64().unwrap_or(0) > retries
    });
    assert!(failing(cfg, "deny"), "still failing while nginx is down");

    nginx.restart();
    nginx.wait_for_status("127.0.0.2", 403);
    eventually("deny ok", || !failing(cfg, "deny"));
    assert_eq!(nginx.status_from("127.0.0.1"), 200);
    let log = watch.log();
    watch.stop();
    assert!(log.contains("deny: recovered: "), "{log}");
}

/// An exec ban command that exits non-zero and a Cloudflare token the API refuses: each sink
/// FAILING and retried (no ban counted as done) until the command works and the right token
/// is in the file, then the firewall call and the rule are made and both are ok.
/// `check-config` names the refused token first.
#[test]
fn exec_and_cloudflare_failures_are_retried_and_shown_until_they_succeed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cf_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cf_port = cf_listener.local_addr().unwrap().port();
    let cf = serve_cloudflare(cf_listener);
    let (access_log, calls) = (dir.path().join("access_log"), dir.path().join("calls.txt"));
    let (broken, token) = (dir.path().join("fw-broken"), dir.path().join("cf-token"));
    std::fs::write(&access_log, "").unwrap();
    std::fs::write(&token, "a-wrong-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ban = format!(
        "[\"sh\", \"-c\", \"if [ -e \\\"$0\\\" ]; then echo 'nft: no such set' >&2; exit 1; fi; \
         echo \\\"ban $1\\\" >> \\\"$2\\\"\", {:?}, \"{{key}}\", {:?}]",
        broken.display().to_string(),
        calls.display().to_string()
    );
    let head = watch_config_head(dir.path(), &access_log);
    let cf_sink = |port: u16| {
        format!(
            "[[sink]]\nname = \"cf\"\ntype = \"cloudflare\"\nzone_id = \"{CF_ZONE}\"\n\
             api_token_file = {:?}\napi_base = \"http://127.0.0.1:{port}/client/v4\"\n\
             retry_max_delay = \"1s\"\n\n",
            token.display().to_string()
        )
    };
    let config = write_config(
        dir.path(),
        &format!(
            "{head}{}[[sink]]\nname = \"fw\"\ntype = \"exec\"\nban = {ban}\nretry_max_delay = \"1s\"\n",
            cf_sink(cf_port)
        ),
    );
    let cfg = config.as_path();

    let out = admin(cfg, &["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sink[0].api_token_file: "), "{err}");
    assert!(err.contains("Cloudflare refuses the token"), "{err}");
    assert!(!err.contains("a-wrong-token"), "{err}");
    // Cloudflare out of reach (ExecStartPre= on a server whose network is not up yet): a
    // warning, watch may start.
    let unreachable = dir.path().join("unreachable.toml");
    let nobody_there = util::ReservedPort::new();
    std::fs::write(
        &unreachable,
        format!("{head}{}", cf_sink(nobody_there.port())),
    )
    .unwrap();
    let out = admin(&unreachable, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: "), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("watch starts all the same"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&broken, "").unwrap();
    let watch = RunningWatch::start(cfg, dir.path().join("watch.log"));
    util::append_flood(&access_log, "127.0.0.2");
    eventually("both failing", || failing(cfg, "fw") && failing(cfg, "cf"));
    let text = stdout_text(&admin(cfg, &["status"]));
    assert!(text.contains("  cf  FAILING since "), "{text}");
    assert!(text.contains("  fw  FAILING since "), "{text}");
    assert!(
        text.contains("HTTP 403: 10000 Authentication error"),
        "{text}"
    );
    assert!(text.contains("nft: no such set"), "{text}");
    eventually("retried", || {
        sink_status(cfg, "fw")["retries"].as_u64() >= Some(2)
            && sink_status(cfg, "cf")["retries"].as_u64() >= Some(2)
    });
    assert!(failing(cfg, "fw") && failing(cfg, "cf"));
    assert_eq!(sink_status(cfg, "fw")["delivered"], 0);
    assert!(!calls.exists());
    assert!(cf.lock().unwrap().ops.is_empty());

    // Fixed by the admin: the pending ban goes through, both are ok.
    std::fs::remove_file(&broken).unwrap();
    std::fs::write(&token, format!("{CF_TOKEN}\n")).unwrap();
    eventually("fw ok", || !failing(cfg, "fw"));
    eventually("cf ok", || !failing(cfg, "cf"));
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "ban 127.0.0.2\n");
    assert_eq!(cf.lock().unwrap().ops, ["POST 127.0.0.2"]);
    for name in ["cf", "fw"] {
        eventually("delivered", || sink_status(cfg, name)["delivered"] == 1);
        assert_eq!(sink_status(cfg, name)["failed"], 0);
    }
    let out = admin(cfg, &["check-config"]);
    assert!(!stderr(&out).contains("sink[0]"), "{}", stderr(&out));
    let log = watch.log();
    watch.stop();
    assert!(log.contains("fw: recovered: delivering succeeded"), "{log}");
    assert!(log.contains("cf: recovered: starting succeeded"), "{log}");
    assert!(!log.contains(CF_TOKEN) && !log.contains("a-wrong-token"));
}

/// A replay ends with its last nginx write and reload done, without waiting out
/// `min_reload_interval` (90 s here: waiting it out fails the test rather than hanging it).
#[test]
fn a_replay_ends_with_its_last_nginx_reload_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (deny, reloads) = (dir.path().join("deny.conf"), dir.path().join("reloads"));
    let config = write_config(
        dir.path(),
        &format!(
            "[allow]\ncidrs = []\n\n[[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"1d\"\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"sh\", \"-c\", \"echo r >> \\\"$0\\\"; sleep 1\", {:?}]\n\
             min_reload_interval = \"90s\"\n",
            deny.display().to_string(),
            reloads.display().to_string(),
        ),
    );
    // A first ban, a long stretch of quiet lines over 40 s of log time (its write and reload
    // usually happen meanwhile), a second ban held back by the interval until the end.
    let mut log = flood_lines("127.0.0.2", 0);
    for n in 0..40_000u32 {
        log.push_str(&format!(
            "10.{}.{}.{} - - [25/Nov/2026:10:00:{:02} +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"ok\"\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255,
            1 + n / 1000
        ));
    }
    log.push_str(&flood_lines("127.0.0.3", 41));
    let started = std::time::Instant::now();
    let said = replay_log(dir.path(), &config, &log);
    let took = started.elapsed();
    let text = std::fs::read_to_string(&deny).unwrap();
    assert!(
        text.contains("deny 127.0.0.2;\ndeny 127.0.0.3;\n"),
        "{text}"
    );
    // Two reloads when the first ban reached the sink before the second (the second then held
    // back by the interval and done at the end); one when a busy machine let the decider send
    // both before the sink's first flush. Either way the last write is in force at the end
    // (the held-back path alone: worker's and nginx's unit tests).
    let reloaded = std::fs::read_to_string(&reloads).unwrap();
    assert!(
        reloaded == "r\nr\n" || reloaded == "r\n",
        "a reload after the last write: {reloaded:?} {said}"
    );
    assert!(!said.contains("held back"), "{said}");
    assert!(
        took < std::time::Duration::from_secs(60),
        "waited for min_reload_interval: {took:?}"
    );
    assert!(!said.contains("FAILING"), "{said}");
}

/// `replay --dry-run` says what each sink would do, "no change" included; watch does not
/// rewrite nor reload an nginx file that already says what it would write.
#[test]
fn a_dry_run_says_no_change_and_watch_does_not_reload_an_unchanged_file() {
    let dir = tempfile::tempdir().unwrap();
    let (deny, reloads) = (dir.path().join("deny.conf"), dir.path().join("reloads"));
    let access_log = dir.path().join("access_log");
    let sink = format!(
        "[[sink]]\nname = \"deny\"\ntype = \"nginx\"\npath = {:?}\ntest_command = [\"true\"]\n\
         reload_command = [\"sh\", \"-c\", \"echo r >> \\\"$0\\\"\", {:?}]\n\n\
         [[sink]]\nname = \"fw\"\ntype = \"exec\"\nban = [\"true\", \"{{key}}\"]\n",
        deny.display().to_string(),
        reloads.display().to_string(),
    );
    let config = write_config(
        dir.path(),
        &format!(
            "[allow]\ncidrs = []\n\n[[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"1d\"\n\n{sink}"
        ),
    );
    let log = dir.path().join("flood.log");
    std::fs::write(&log, flood_lines("127.0.0.2", 0)).unwrap();
    let dry = |want: &str| {
        let out = floodwatch(&[
            "replay",
            "--dry-run",
            "--config",
            config.to_str().unwrap(),
            log.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{want:?} missing:\n{err}");
        assert!(
            err.contains("fw: ") && err.contains("dry run: would have run 1 commands"),
            "{err}"
        );
        assert!(!reloads.exists(), "a dry run reloaded");
        err
    };
    dry(&format!(
        "dry run: would have written {} 1 times (ending with 1 bans) and reloaded nginx 1 times",
        deny.display()
    ));
    assert!(!deny.exists(), "a dry run wrote the file");
    std::fs::write(&deny, "# made by hand\ndeny 127.0.0.2;\n").unwrap();
    dry(&format!(
        "dry run: no change: {} already holds the 1 bans, nothing to write or reload",
        deny.display()
    ));

    // Watch, started and stopped with the file as the admin created it (empty): not rewritten,
    // nginx not reloaded.
    std::fs::write(&deny, "").unwrap();
    std::fs::write(&access_log, "").unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}{sink}", watch_config_head(dir.path(), &access_log)),
    );
    for n in 0..2 {
        let watch = RunningWatch::start(&config, dir.path().join(format!("watch{n}.log")));
        watch.stop();
    }
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), "");
    assert!(!reloads.exists(), "reloaded for nothing");
}

/// A fake of Cloudflare's IP Access Rules API (v4, zone scope) speaking its documented request
/// and response shapes: list (with `notes` filter and pages), create, delete. It keeps the
/// rules and a log of `POST <value>` / `DELETE <value>`, and refuses a wrong token with 403.
#[derive(Default)]
struct FakeCloudflare {
    /// (id, value, notes)
    rules: Vec<(String, String, String)>,
    ops: Vec<String>,
    next_id: u64,
}

const CF_ZONE: &str = "0123456789abcdef0123456789abcdef";
const CF_TOKEN: &str = "cf-test-token";

fn cf_envelope(result: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "success": true, "errors": [], "messages": [], "result": result })
}

fn cf_rule(id: &str, value: &str, notes: &str) -> serde_json::Value {
    let target = match (value.contains('/'), value.contains(':')) {
        (true, _) => "ip_range",
        (false, true) => "ip6",
        (false, false) => "ip",
    };
    serde_json::json!({
        "id": id, "mode": "block", "notes": notes, "allowed_modes": ["block", "challenge"],
        "configuration": { "target": target, "value": value },
        "scope": { "id": CF_ZONE, "type": "zone" },
        "created_on": "2026-11-25T10:00:00Z", "modified_on": "2026-11-25T10:00:00Z",
    })
}

fn cf_handle(
    api: &mut FakeCloudflare,
    method: &str,
    target: &str,
    auth: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let base = format!("/client/v4/zones/{CF_ZONE}/firewall/access_rules/rules");
    if auth != format!("Bearer {CF_TOKEN}") && target == "/client/v4/user/tokens/verify" {
        let e = serde_json::json!({ "success": false, "errors": [{ "code": 1000, "message": "Invalid API Token" }], "messages": [], "result": null });
        return (401, e);
    }
    if auth != format!("Bearer {CF_TOKEN}") {
        let e = serde_json::json!({ "success": false, "errors": [{ "code": 10000, "message": "Authentication error" }], "messages": [], "result": null });
        return (403, e);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/client/v4/user/tokens/verify" {
        return (
            200,
            cf_envelope(serde_json::json!({ "id": "t1", "status": "active" })),
        );
    }
    let q = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(String::from))
    };
    match method {
        "GET" if path == base => {
            let notes = q("notes").unwrap_or_default().to_ascii_lowercase();
            let per_page: usize = q("per_page").map_or(20, |v| v.parse().unwrap());
            let page: usize = q("page").map_or(1, |v| v.parse().unwrap());
            let all: Vec<_> = api
                .rules
                .iter()
                .filter(|r| r.2.to_ascii_lowercase().contains(&notes))
                .collect();
            let total_pages = all.len().div_ceil(per_page).max(1);
            let result: Vec<_> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|r| cf_rule(&r.0, &r.1, &r.2))
                .collect();
            let mut v = cf_envelope(serde_json::Value::Array(result.clone()));
            v["result_info"] = serde_json::json!({ "page": page, "per_page": per_page, "count": result.len(), "total_count": all.len(), "total_pages": total_pages });
            (200, v)
        }
        "POST" if path == base => {
            let b: serde_json::Value = serde_json::from_str(body).unwrap();
            let value = b["configuration"]["value"].as_str().unwrap().to_string();
            let notes = b["notes"].as_str().unwrap().to_string();
            assert!(
                ["block", "challenge", "js_challenge", "managed_challenge"]
                    .contains(&b["mode"].as_str().unwrap()),
                "{b}"
            );
            if api.rules.iter().any(|r| r.1 == value) {
                let e = serde_json::json!({ "success": false, "errors": [{ "code": 10009, "message": "firewallaccessrules.api.duplicate_of_existing" }], "messages": [], "result": null });
                return (400, e);
            }
            api.next_id += 1;
            let id = format!("{:032x}", api.next_id);
            api.ops.push(format!("POST {value}"));
            api.rules.push((id.clone(), value.clone(), notes.clone()));
            (200, cf_envelope(cf_rule(&id, &value, &notes)))
        }
        "DELETE" => {
            let id = path.strip_prefix(&format!("{base}/")).unwrap_or("");
            match api.rules.iter().position(|r| r.0 == id) {
                Some(i) => {
                    let r = api.rules.remove(i);
                    api.ops.push(format!("DELETE {}", r.1));
                    (200, cf_envelope(serde_json::json!({ "id": id })))
                }
                None => (
                    404,
                    serde_json::json!({ "success": false, "errors": [{ "code": 10001, "message": "not found" }], "messages": [], "result": null }),
                ),
            }
        }
        _ => (
            404,
            serde_json::json!({ "success": false, "errors": [{ "code": 7003, "message": "No route for the URI" }], "messages": [], "result": null }),
        ),
    }
}

/// Serves [`FakeCloudflare`] (HTTP/1.1, keep-alive).
fn serve_cloudflare(
    listener: std::net::TcpListener,
) -> std::sync::Arc<std::sync::Mutex<FakeCloudflare>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let api = std::sync::Arc::new(std::sync::Mutex::new(FakeCloudflare::default()));
    let shared = api.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let api = shared.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut request = String::new();
                    if r.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request.split_whitespace();
                    let (method, target) = (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let (mut len, mut auth) = (0, String::new());
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => len = value.trim().parse().unwrap(),
                            "authorization" => auth = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let body = String::from_utf8(body).unwrap();
                    let (status, v) =
                        cf_handle(&mut api.lock().unwrap(), &method, &target, &auth, &body);
                    let text = v.to_string();
                    let head = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", text.len());
                    if (&conn)
                        .write_all(head.as_bytes())
                        .and_then(|()| (&conn).write_all(text.as_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    api
}

/// An exec sink's command (TOML) that appends `<what> <key>` to `calls`.
fn exec_appending(calls: &Path, what: &str) -> String {
    format!(
        "[\"sh\", \"-c\", \"echo \\\"$1 $2\\\" >> \\\"$0\\\"\", {:?}, \"{what}\", \"{{key}}\"]",
        calls.display().to_string()
    )
}

#[test]
fn one_replay_drives_every_sink_and_they_agree() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = serve_http(listener);
    let cf_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cf_port = cf_listener.local_addr().unwrap().port();
    let cf = serve_cloudflare(cf_listener);
    let events = dir.path().join("events.jsonl");
    let deny = dir.path().join("deny.conf");
    let calls = dir.path().join("calls.txt");
    let exec = |what: &str| exec_appending(&calls, what);
    let config = write_config(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"jsonl\"\npath = {:?}\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"true\"]\nmin_reload_interval = \"0s\"\n\n\
             [[sink]]\ntype = \"exec\"\nban = {}\nunban = {}\n\n\
             [[sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/events\"\n\n\
             [[sink]]\ntype = \"cloudflare\"\nzone_id = \"{CF_ZONE}\"\n\
             api_token_env = \"FLOODWATCH_TEST_CF_TOKEN\"\n\
             api_base = \"http://127.0.0.1:{cf_port}/client/v4\"\n",
            events.display().to_string(),
            deny.display().to_string(),
            exec("ban"),
            exec("unban"),
        ),
    );
    // A short ban: flooders are banned, unbanned on log time and banned again.
    let out = util::command()
        .args(["replay", "--sinks", "--ban", "10s", "--config"])
        .arg(&config)
        .arg(demo_glob())
        .env("FLOODWATCH_TEST_CF_TOKEN", CF_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let lines = std::fs::read_to_string(&events).unwrap();
    let ev = json_lines(&lines);
    assert!(ev.iter().any(|e| e["type"] == "unban"), "{lines}");
    // exec saw every ban and unban, in order.
    let want_calls: String = ev
        .iter()
        .map(|e| {
            format!(
                "{} {}\n",
                e["type"].as_str().unwrap(),
                e["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), want_calls);
    // The webhook got every event.
    assert_eq!(*bodies.lock().unwrap(), lines.lines().collect::<Vec<_>>());
    // The nginx file denies exactly the keys still banned at the end (its batching of writes
    // and its deny lines are tested on their own above).
    let mut active = std::collections::BTreeSet::new();
    for e in &ev {
        let key = e["key"].as_str().unwrap().to_string();
        if e["type"] == "ban" {
            active.insert(key);
        } else {
            active.remove(&key);
        }
    }
    // In the demo every ban has ended by the last line: expiry must have removed each deny.
    assert!(active.is_empty(), "{active:?}");
    let denied: std::collections::BTreeSet<String> = std::fs::read_to_string(&deny)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("deny ")?.strip_suffix(';').map(String::from))
        .collect();
    assert_eq!(denied, active);
    // Cloudflare: one rule per banned range (a range banned under two rules at once has one
    // rule, deleted when the last of its bans ends), created at each ban and deleted at its
    // expiry, in the order of the events; none left at the end.
    let mut held: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut want_ops = Vec::new();
    for e in &ev {
        let key = e["key"].as_str().unwrap().to_string();
        let rule = e["rule"].as_str().unwrap().to_string();
        let rules = held.entry(key.clone()).or_default();
        if e["type"] == "ban" {
            if rules.is_empty() {
                want_ops.push(format!("POST {key}"));
            }
            rules.insert(rule);
        } else if rules.remove(&rule) && rules.is_empty() {
            want_ops.push(format!("DELETE {key}"));
        }
    }
    let api = cf.lock().unwrap();
    assert!(want_ops.len() >= 4, "{want_ops:?}");
    assert_eq!(api.ops, want_ops);
    assert!(
        api.rules.is_empty(),
        "expiry deletes every rule: {:?}",
        api.rules
    );
    assert!(!stderr(&out).contains(CF_TOKEN), "the token was logged");
    for sink in [
        "sink[0] jsonl",
        "sink[1] nginx",
        "sink[2] exec",
        "sink[3] webhook",
        "sink[4] cloudflare",
    ] {
        let want = format!("{sink}: {} delivered, 0 failed", ev.len());
        assert!(stderr(&out).contains(&want), "{want}: {}", stderr(&out));
    }
}

/// The production config can be replayed without acting on anything: `--dry-run` has every
/// sink say what it would do, `--no-sinks` puts the events on stdout instead.
#[test]
fn replay_dry_run_and_no_sinks_leave_the_sinks_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            file.display().to_string()
        ),
    );
    let config = config.to_str().unwrap();
    let glob = demo_glob();
    let dry = floodwatch(&["replay", "--dry-run", "--config", config, &glob]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(!file.exists(), "a dry run wrote the sink's file");
    assert!(dry.stdout.is_empty());
    assert!(
        stderr(&dry).contains("dry run: would write {\"type\":\"ban\""),
        "{}",
        stderr(&dry)
    );

    let none = floodwatch(&["replay", "--no-sinks", "--config", config, &glob]);
    assert!(none.status.success(), "{}", stderr(&none));
    assert!(!file.exists());
    assert_eq!(events(&none).len(), 2, "the demo's two bans on stdout");

    let both = floodwatch(&["replay", "--dry-run", "--no-sinks", &glob]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

/// `check-config` as a preflight: what would stop watch at start or fail every ban of a sink
/// is an error (exit 2) naming the key; what may be fine is a warning.
#[test]
fn check_config_finds_what_watch_would_meet() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a-file"), "").unwrap();
    let token = d.join("cf-token");
    std::fs::write(&token, "secret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let logs = d.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let json_lines: String = (0..30)
        .map(|i| format!("{{\"ip\":\"192.0.2.{i}\"}}\n"))
        .collect();
    std::fs::write(logs.join("access_log"), json_lines).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(
        d,
        &format!(
            "[input]\npaths = [{:?}, {:?}]\n\n[state]\ndir = {:?}\nsocket = {:?}\n\n\
             [metrics]\nlisten = \"{}\"\n\n\
             [[sink]]\ntype = \"exec\"\nban = [\"floodwatch-no-such-nft\", \"{{ip}}\"]\n\n\
             [[sink]]\ntype = \"nginx\"\npath = {:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"true\"]\n\n\
             [[sink]]\ntype = \"cloudflare\"\nzone_id = \"abc123\"\napi_token_file = {:?}\n\n\
             [[sink]]\ntype = \"nginx\"\nstyle = \"geo\"\npath = {:?}\ntest_command = [\"true\"]\n\
             reload_command = [\"true\"]\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            logs.join("access_log").display().to_string(),
            d.join("vhosts/*/logs/access_log").display().to_string(),
            d.join("a-file/state").display().to_string(),
            d.join("s".repeat(100))
                .join("control.sock")
                .display()
                .to_string(),
            busy.local_addr().unwrap(),
            d.join("missing-folder/deny.conf").display().to_string(),
            token.display().to_string(),
            d.join("floodwatch-geo.conf").display().to_string(),
            d.join("no-log-folder/events.jsonl").display().to_string(),
        ),
    );
    let out = floodwatch(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "error: ",
        "state.dir: ",
        "state.socket: the control socket ",
        "is longer than a Unix socket path may be (107 bytes)",
        "sink[0].ban: floodwatch-no-such-nft: not found on PATH",
        "sink[1].path: ",
        "sink[2].api_token_file: ",
        "readable by others",
        "warning: ",
        "metrics.listen: ",
        "vhosts/*/logs/access_log: no file there yet",
        "input.format: ",
        "looks like a JSON log",
        "sink[3].path: ",
        "floodwatch-geo.conf: does not exist yet: nginx refuses a config naming $floodwatch_banned",
        "sink[4].path: ",
        "6 problem(s) that would stop watch or fail every ban of a sink",
    ] {
        assert!(err.contains(want), "{want:?} missing:\n{err}");
    }

    let out = floodwatch(&[
        "check-config",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let keys: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "state.dir",
            "state.socket",
            "sink[0].ban",
            "sink[1].path",
            "sink[2].api_token_file",
            "sink[4].path"
        ]
    );
    drop(busy);
}

/// `floodwatch` run as a command against the running watch of `config`.
fn admin(config: &Path, args: &[&str]) -> std::process::Output {
    util::command()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn stdout_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A watch running with `config`, its stderr kept in a file; stopped with SIGTERM on drop.
struct RunningWatch {
    child: std::process::Child,
    log: PathBuf,
}

impl RunningWatch {
    fn start(config: &Path, log: PathBuf) -> RunningWatch {
        let child = util::command()
            .args(["watch", "--config"])
            .arg(config)
            .env("FLOODWATCH_TEST_CF_TOKEN", CF_TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = RunningWatch { child, log };
        eventually("watch answers status", || {
            admin(config, &["status"]).status.success()
        });
        w
    }

    fn stop(mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The admin's toolbox against a running watch with real sinks: a real nginx, the local
/// Cloudflare API, an exec command and the events file. `unban` lifts a detected ban
/// everywhere at once and the same flood does not ban again; `ban` reaches every sink; `bans`
/// and `status` show them; a manual ban survives a restart; only root and watch's user may ask.
#[test]
fn admin_commands_reach_every_sink_of_a_running_watch() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = TestNginx::start(dir.path(), Wiring::Deny);
    let cf_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cf_port = cf_listener.local_addr().unwrap().port();
    let cf = serve_cloudflare(cf_listener);
    let (deny, events, calls) = (
        dir.path().join("bans.conf"),
        dir.path().join("events.jsonl"),
        dir.path().join("calls.txt"),
    );
    let access_log = dir.path().join("access_log");
    std::fs::write(&access_log, "").unwrap();
    let exec = |what: &str| exec_appending(&calls, what);
    let config = write_config(
        dir.path(),
        &format!(
            "[input]\npaths = [{:?}]\n\n[allow]\ncidrs = []\n\n\
             [[rule]]\nname = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"10m\"\n\n\
             [state]\ndir = {:?}\n\n\
             [[sink]]\nname = \"deny\"\ntype = \"nginx\"\npath = {:?}\ntest_command = {}\n\
             reload_command = {}\nmin_reload_interval = \"0s\"\n\n\
             [[sink]]\nname = \"cf\"\ntype = \"cloudflare\"\nzone_id = \"{CF_ZONE}\"\n\
             api_token_env = \"FLOODWATCH_TEST_CF_TOKEN\"\n\
             api_base = \"http://127.0.0.1:{cf_port}/client/v4\"\n\n\
             [[sink]]\nname = \"fw\"\ntype = \"exec\"\nban = {}\nunban = {}\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            access_log.display().to_string(),
            dir.path().join("state").display().to_string(),
            deny.display().to_string(),
            nginx.command_toml(&["-t", "-q"]),
            nginx.command_toml(&["-s", "reload"]),
            exec("ban"),
            exec("unban"),
            events.display().to_string(),
        ),
    );
    let cfg = config.as_path();
    let watch = RunningWatch::start(cfg, dir.path().join("watch.log"));
    let flood = |client: &str| util::append_flood(&access_log, client);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let cf_ops = || cf.lock().unwrap().ops.clone();

    // A detected ban reaches every sink.
    flood("127.0.0.2");
    eventually("127.0.0.2 banned", || {
        stdout_text(&admin(cfg, &["bans"])).contains("127.0.0.2")
    });
    nginx.wait_for_status("127.0.0.2", 403);
    eventually("the Cloudflare rule", || cf_ops() == ["POST 127.0.0.2"]);

    // Lifted: everywhere at once, and the flood that caused it does not ban it again.
    let out = admin(cfg, &["unban", "127.0.0.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout_text(&out);
    assert!(
        text.starts_with("lifted 127.0.0.2 (rule flood, would have ended "),
        "{text}"
    );
    assert!(text.contains("forgiven"), "{text}");
    nginx.wait_for_status("127.0.0.2", 200);
    assert!(!read(&deny).contains("127.0.0.2"), "{}", read(&deny));
    eventually("the rule deleted", || {
        cf_ops() == ["POST 127.0.0.2", "DELETE 127.0.0.2"]
    });
    eventually("exec unban", || {
        read(&calls) == "ban 127.0.0.2\nunban 127.0.0.2\n"
    });
    eventually("the unban event", || {
        json_lines(&read(&events))
            .iter()
            .any(|e| e["type"] == "unban" && e["key"] == "127.0.0.2" && e["reason"] == "manual")
    });
    let lines = status_lines(cfg);
    flood("127.0.0.2");
    // Read (twenty lines) before the check, however slow the machine, and a moment more for
    // a ban, were one decided, to reach the table.
    eventually("the second flood read", || status_lines(cfg) >= lines + 20);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let listed = stdout_text(&admin(cfg, &["bans"]));
    assert_eq!(listed, "no active bans\n", "banned again at once");
    assert_eq!(nginx.status_from("127.0.0.2"), 200);
    let again = admin(cfg, &["unban", "127.0.0.2"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("127.0.0.2 is not banned"),
        "{}",
        stderr(&again)
    );

    // A manual ban reaches every sink too.
    let out = admin(cfg, &["ban", "127.0.0.3", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout_text(&out).starts_with("banned 127.0.0.3 under rule manual for 1h 0m"));
    nginx.wait_for_status("127.0.0.3", 403);
    assert_eq!(nginx.status_from("127.0.0.1"), 200);
    eventually("the manual Cloudflare rule", || {
        cf_ops().last().map(String::as_str) == Some("POST 127.0.0.3")
    });
    eventually("exec ban", || read(&calls).ends_with("ban 127.0.0.3\n"));
    let refused = admin(cfg, &["ban", "127.0.0.3", "--for", "1h"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("127.0.0.3 is already banned under rule manual"));
    let bad = admin(cfg, &["ban", "127.0.0.4", "--for", "1h", "--rule", "nope"]);
    assert!(
        stderr(&bad).contains("no rule is named \"nope\""),
        "{}",
        stderr(&bad)
    );

    // What bans and status show.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&stdout_text(&admin(cfg, &["bans", "--json"]))).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0]["key"], &listed[0]["reason"]),
        (&"127.0.0.3".into(), &"manual".into())
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout_text(&admin(cfg, &["status", "--json"]))).unwrap();
    assert_eq!(status["files"], 1);
    assert_eq!(status["lines"], 40);
    assert_eq!(status["bans"]["active"], 1);
    assert_eq!(status["bans"]["since_start"], 2);
    let by_rule: Vec<_> = status["bans"]["by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r["rule"], r["active"], r["since_start"]))
        .collect();
    assert_eq!(by_rule, ["\"flood\" 0 1", "\"manual\" 1 1"]);
    let sinks: Vec<_> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {} {}", s["name"], s["failed"], s["failing_since"]))
        .collect();
    assert_eq!(
        sinks,
        [
            "\"deny\" 0 null",
            "\"cf\" 0 null",
            "\"fw\" 0 null",
            "\"sink[3] jsonl\" 0 null"
        ]
    );
    let text = stdout_text(&admin(cfg, &["status"]));
    assert!(
        text.contains("bans:      1 active, 2 since start\n"),
        "{text}"
    );

    // Only root and watch's own user may ask (the tests run as root in CI, and fail there when
    // not: this part would be skipped unseen).
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !util::skip_unless_ci((!root).then_some("root to ask as another user")) {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let as_nobody = || {
            util::command()
                .args(["status", "--config"])
                .arg(cfg)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        };
        let socket = dir.path().join("state/control.sock");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let out = as_nobody();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
        // Even with the socket opened to everyone, watch checks who is asking.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("permission denied for uid 65534"),
            "{}",
            stderr(&out)
        );
    }

    // A manual ban survives a restart; with no watch running, the commands say so.
    watch.stop();
    let out = admin(cfg, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no watch is running"),
        "{}",
        stderr(&out)
    );
    let watch = RunningWatch::start(cfg, dir.path().join("watch2.log"));
    let listed = stdout_text(&admin(cfg, &["bans"]));
    assert!(
        listed.contains("127.0.0.3") && listed.contains("manual"),
        "{listed}"
    );
    assert!(admin(cfg, &["unban", "127.0.0.3"]).status.success());
    nginx.wait_for_status("127.0.0.3", 200);
    eventually("the manual rule deleted", || {
        cf_ops().last().map(String::as_str) == Some("DELETE 127.0.0.3")
    });
    let log = watch.log();
    watch.stop();
    assert!(
        log.contains("unban 127.0.0.3 rule=manual reason=manual"),
        "{log}"
    );
    assert!(!log.contains(CF_TOKEN));
}
