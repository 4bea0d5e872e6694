//! `[fleet]` end to end: several `watch` processes on separate log trees sharing bans through a
//! real Redis (Debian's `redis-server`, started here on a free loopback port with a scratch
//! folder and no persistence, never the system's service). Each node enforces the others' bans
//! in an nginx deny file (`test_command` and `reload_command` are `true`: the file is what is
//! checked).

mod util;
use util::eventually;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of the test's own.
struct TestRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Serving TLS only, checking its clients' certificates against the PKI's CA.
    tls: Option<Pki>,
    /// A node of a Redis Cluster (`--cluster-enabled yes`), until joined by [`TestCluster`].
    cluster: bool,
}

/// A private PKI in PEM files: a CA, the server's certificate for 127.0.0.1 and a client's,
/// both signed by it, and a second CA that signed neither.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, issuer) = ca("floodwatch test CA");
        let (other_cert, _) = ca("another CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(names).unwrap();
            (params.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into()]);
        let (client, client_key) = leaf(vec!["floodwatch-node".into()]);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            other_ca: write("other-ca.pem", other_cert.pem()),
        }
    }
}

fn redis_server() -> String {
    for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "redis-server".into()
}

impl TestRedis {
    fn start(dir: &Path) -> TestRedis {
        TestRedis::start_with(dir, None)
    }

    /// Started on a port found free a moment before: another program may take it in between,
    /// and then redis-server exits at once and is started again on another port.
    fn start_with(dir: &Path, tls: Option<Pki>) -> TestRedis {
        TestRedis::start_kind(dir, tls, false)
    }

    /// A node for a Redis Cluster, not joined yet (see [`TestCluster`]).
    fn start_cluster_node(dir: &Path) -> TestRedis {
        TestRedis::start_kind(dir, None, true)
    }

    fn start_kind(dir: &Path, tls: Option<Pki>, cluster: bool) -> TestRedis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = TestRedis {
            port: 0,
            dir,
            child: None,
            cluster,
            tls,
        };
        for _ in 0..5 {
            r.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if r.try_resume() {
                return r;
            }
        }
        panic!("redis-server did not start on any of five ports");
    }

    /// A Redis that speaks TLS only and requires a client certificate of `pki`'s CA.
    fn start_tls(dir: &Path, pki: Pki) -> TestRedis {
        TestRedis::start_with(dir, Some(pki))
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The `[fleet]` lines after `url` that a node needs to reach this Redis.
    fn fleet_tls(&self) -> String {
        match &self.tls {
            Some(pki) => format!(
                "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
                pki.ca, pki.client_cert, pki.client_key
            ),
            None => String::new(),
        }
    }

    /// A client of the test's own, with the node's TLS files.
    fn client(&self) -> redis::Client {
        match &self.tls {
            Some(pki) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: std::fs::read(&pki.client_cert).unwrap(),
                        client_key: std::fs::read(&pki.client_key).unwrap(),
                    }),
                    root_cert: Some(std::fs::read(&pki.ca).unwrap()),
                },
            )
            .unwrap(),
            None => redis::Client::open(self.url()).unwrap(),
        }
    }

    /// Starts it again, on the same port: empty, as a restarted Redis without persistence.
    fn resume(&mut self) {
        assert!(
            self.try_resume(),
            "redis-server exited at start: port {} taken meanwhile?",
            self.port
        );
    }

    /// Starts it on its port; false when it exited before answering (the port is taken). Only
    /// an answer from this very process counts (its pid, from `INFO server`), never one from
    /// another server on the port.
    fn try_resume(&mut self) -> bool {
        let mut cmd = Command::new(redis_server());
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(pki) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&pki.server_cert)
                .arg("--tls-key-file")
                .arg(&pki.server_key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", "yes"]),
        };
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; .ci/run installs it)");
        let pid = format!("process_id:{}\r\n", child.id());
        self.child = Some(child);
        let client = self.client();
        let mut exited = false;
        eventually("redis-server answers", || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                exited = true;
                return true;
            }
            client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c))
                .is_ok_and(|info| info.contains(&pid))
        });
        if exited {
            self.child = None;
        }
        !exited
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server of the fleet: its log, config, deny file, and its watch while it runs.
struct Node {
    config: PathBuf,
    access_log: PathBuf,
    deny: PathBuf,
    events: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Environment for its watch (libfaketime's, for a server whose clock is off).
    env: Vec<(&'static str, String)>,
}

impl Node {
    fn new(root: &Path, name: &str, redis: &TestRedis) -> Node {
        Node::configured(root, name, redis, &redis.fleet_tls())
    }

    /// A node whose `[fleet]` has `tls` for its TLS lines.
    fn configured(root: &Path, name: &str, redis: &TestRedis, tls: &str) -> Node {
        let rule = "name = \"flood\"\nrate = \"1r/s\"\nburst = 5\nban = \"10m\"\n";
        let fleet = format!("stream = \"test:events\"\n{tls}");
        Node::with_rule(root, name, &redis.url(), rule, &fleet)
    }

    /// A node whose rule has the lines `rule`, on the Redis at `url`, with the `[fleet]` lines
    /// `fleet` after its url and node.
    fn with_rule(root: &Path, name: &str, url: &str, rule: &str, fleet: &str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let n = Node {
            config: dir.join("floodwatch.toml"),
            access_log: dir.join("access_log"),
            deny: dir.join("deny.conf"),
            events: dir.join("events.jsonl"),
            log: dir.join("watch.log"),
            child: None,
            env: Vec::new(),
        };
        std::fs::write(&n.access_log, "").unwrap();
        let text = format!(
            "[input]\npaths = [{:?}]\n\n\
             [[rule]]\n{rule}\n\
             [state]\ndir = {:?}\n\n\
             [fleet]\nurl = {:?}\nnode = {name:?}\n{}\n\
             [[sink]]\nname = \"deny\"\ntype = \"nginx\"\npath = {:?}\n\
             test_command = [\"true\"]\nreload_command = [\"true\"]\nmin_reload_interval = \"0s\"\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {:?}\n",
            n.access_log.display().to_string(),
            dir.join("state").display().to_string(),
            url,
            fleet,
            n.deny.display().to_string(),
            n.events.display().to_string(),
        );
        std::fs::write(&n.config, text).unwrap();
        n
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = util::command()
            .envs(self.env.iter().cloned())
            .args(["watch", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually("watch answers status", || {
            self.admin(&["status"]).status.success()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a plain kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(status.success(), "{}", self.log_text());
        }
    }

    /// SIGHUP: its watch reads the config again.
    fn reload(&self) {
        let child = self.child.as_ref().expect("the node runs");
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    }

    fn admin(&self, args: &[&str]) -> std::process::Output {
        util::command()
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.admin(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Twenty requests in one second from `client`: a flood under rule `flood`.
    fn flood(&self, client: &str) {
        util::append_flood(&self.access_log, client);
    }

    /// How many times the deny file denies `key`.
    fn denies(&self, key: &str) -> usize {
        let text = std::fs::read_to_string(&self.deny).unwrap_or_default();
        text.lines()
            .filter(|l| *l == format!("deny {key};"))
            .count()
    }

    fn events_text(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Nodes "a" and "b" on one Redis, both watching.
fn started_pair(root: &Path, redis: &TestRedis) -> (Node, Node) {
    let (mut a, mut b) = (Node::new(root, "a", redis), Node::new(root, "b", redis));
    a.start();
    b.start();
    (a, b)
}

/// A flood on node a is denied on node b, shown there with its origin, and kept from b's
/// own jsonl sink (not in `apply_to`); a node started later and a node restarted get it too;
/// `floodwatch unban` on a lifts it on every node.
#[test]
fn a_ban_reaches_every_node_and_an_unban_on_one_lifts_it_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(dir.path());
    let (mut a, mut b, mut c) = (
        Node::new(dir.path(), "a", &redis),
        Node::new(dir.path(), "b", &redis),
        Node::new(dir.path(), "c", &redis),
    );
    a.start();
    b.start();

    a.flood("198.51.100.7");
    eventually("a denies its own ban", || a.denies("198.51.100.7") == 1);
    eventually("b denies a's ban", || b.denies("198.51.100.7") == 1);
    let bans = String::from_utf8_lossy(&b.admin(&["bans"]).stdout).into_owned();
    let row = bans.lines().find(|l| l.contains("198.51.100.7")).unwrap();
    assert!(row.contains("fleet") && row.ends_with(" a"), "{bans}");
    assert!(bans.contains("1 from the fleet"), "{bans}");
    assert!(
        !b.events_text().contains("198.51.100.7"),
        "jsonl is not in apply_to"
    );
    let status = b.status();
    assert_eq!(status["fleet"]["applied"], 1, "{status}");
    // b's publisher connects on its own thread, maybe after its subscriber brought the ban.
    eventually("b's publisher connected", || {
        b.status()["fleet"]["connected"] == true
    });

    // Late: c starts after the ban and gets it from the fleet's active bans.
    c.start();
    eventually("c denies a's earlier ban", || c.denies("198.51.100.7") == 1);
    // Restarted: b resumes after what it had applied.
    b.stop();
    a.flood("198.51.100.8");
    eventually("a denies its second ban", || a.denies("198.51.100.8") == 1);
    b.start();
    eventually("b gets the ban made while it was down", || {
        b.denies("198.51.100.8") == 1
    });
    assert_eq!(b.denies("198.51.100.7"), 1, "restored, not doubled");

    // An admin's unban on a lifts the key everywhere, and is not published back.
    let out = a.admin(&["unban", "198.51.100.7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [&a, &b, &c] {
        eventually("lifted on every node", || n.denies("198.51.100.7") == 0);
    }
    assert_eq!(b.denies("198.51.100.8"), 1);
    // An unban on a node that only holds the fleet's copy lifts the ban at its origin too.
    let out = c.admin(&["unban", "198.51.100.8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [&a, &b, &c] {
        eventually("lifted from c", || n.denies("198.51.100.8") == 0);
    }
    for n in [&mut a, &mut b, &mut c] {
        n.stop();
    }
    assert!(c.log_text().contains("origin=a"), "{}", c.log_text());
}

/// Redis stopped in the middle of a run: detection and local bans go on, publications wait
/// in the queue and go out when Redis is back (a fresh, empty one), the other node denies each
/// key once, and a node started after that gets every active ban.
#[test]
fn redis_going_away_delays_nothing_local_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = TestRedis::start(dir.path());
    let (mut a, mut b) = started_pair(dir.path(), &redis);
    a.flood("203.0.113.1");
    eventually("b denies the first ban", || b.denies("203.0.113.1") == 1);

    redis.stop();
    a.flood("203.0.113.2");
    b.flood("203.0.113.3");
    eventually("a bans locally while Redis is away", || {
        a.denies("203.0.113.2") == 1
    });
    eventually("b bans locally while Redis is away", || {
        b.denies("203.0.113.3") == 1
    });
    eventually("a's publication waits in its queue", || {
        let s = a.status();
        s["fleet"]["queued"] == 1 && s["fleet"]["connected"] == false
    });
    let status = String::from_utf8_lossy(&a.admin(&["status"]).stdout).into_owned();
    assert!(status.contains("REDIS UNREACHABLE since 20"), "{status}");
    let json = a.status();
    assert!(json["fleet"]["last_error"].as_str().is_some(), "{json}");
    assert_eq!(
        b.denies("203.0.113.1"),
        1,
        "a remote ban holds while Redis is away"
    );

    redis.resume();
    eventually("b gets a's queued ban", || b.denies("203.0.113.2") == 1);
    eventually("a gets b's queued ban", || a.denies("203.0.113.3") == 1);
    eventually("a's queue is empty", || a.status()["fleet"]["queued"] == 0);
    eventually("a's outage is over in status", || {
        let f = &a.status()["fleet"];
        f["connected"] == true && f.get("last_error").is_none()
    });
    assert!(a.status()["fleet"]["reconnects"].as_u64() >= Some(1));
    // The Redis that came back is empty: the bans from before the outage are in its table
    // again all the same (each node writes its own in again when it reconnects), so a node
    // starting now gets them.
    let mut c = Node::new(dir.path(), "c", &redis);
    c.start();
    for k in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        eventually("the late node gets every active ban", || c.denies(k) == 1);
    }
    c.stop();
    a.stop();
    b.stop();
    for (n, keys) in [
        (&a, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]),
        (&b, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]),
    ] {
        for k in keys {
            assert_eq!(n.denies(k), 1, "{k} once in {}", n.deny.display());
        }
    }
    assert_eq!(
        a.log_text().matches("unreachable").count(),
        2,
        "said once per thread per outage:\n{}",
        a.log_text()
    );
}

/// Both nodes ban the same key at once: each enforces it once, and each keeps its own ban.
#[test]
fn the_same_key_banned_by_two_nodes_at_once_is_denied_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(dir.path());
    let (mut a, mut b) = started_pair(dir.path(), &redis);
    a.flood("192.0.2.44");
    b.flood("192.0.2.44");
    for n in [&a, &b] {
        eventually("own ban", || n.denies("192.0.2.44") == 1);
    }
    eventually("each heard the other", || {
        let (sa, sb) = (a.status(), b.status());
        let heard = |s: &serde_json::Value| {
            s["fleet"]["applied"].as_u64().unwrap_or(0)
                + s["fleet"]["duplicates"].as_u64().unwrap_or(0)
        };
        heard(&sa) >= 1 && heard(&sb) >= 1
    });
    for n in [&a, &b] {
        assert_eq!(n.denies("192.0.2.44"), 1);
    }
    a.stop();
    b.stop();
}

/// An unban published while a node was away, then lost with a Redis restarted empty, still
/// reaches that node: a while after it connects it reads the fleet's table of active bans again
/// (rebuilt by every node whose publisher is back) and ends the other nodes' bans it lacks.
#[test]
fn an_unban_lost_with_redis_still_reaches_a_node_that_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = TestRedis::start(dir.path());
    let (mut a, mut b) = started_pair(dir.path(), &redis);
    a.flood("203.0.113.9");
    eventually("b denies a's ban", || b.denies("203.0.113.9") == 1);
    b.stop();
    let out = a.admin(&["unban", "203.0.113.9"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("a published the unban", || {
        a.status()["fleet"]["queued"] == 0
    });
    // Redis restarted without persistence: the unban's stream entry is gone.
    redis.stop();
    redis.resume();
    b.start();
    assert_eq!(b.denies("203.0.113.9"), 1, "b restored the ban it had");
    let until = Instant::now() + Duration::from_secs(40);
    while b.denies("203.0.113.9") != 0 {
        assert!(
            Instant::now() < until,
            "never lifted on b:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = b.log_text();
    assert!(log.contains("no longer in the fleet's table"), "{log}");
    assert!(
        log.contains("unban 203.0.113.9 rule=fleet reason=withdrawn"),
        "{log}"
    );
    a.stop();
    b.stop();
}

/// `rediss://` to a Redis with a private CA that checks its clients' certificates
/// (`tls-auth-clients yes`): bans go round as over plain Redis. A node that trusts another CA,
/// or has no client certificate, never gets in: it says so in its log, applies nothing, and
/// bans on its own as before; given the right CA file (same path), it gets in without a
/// restart.
#[test]
fn a_fleet_over_tls_with_a_private_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start_tls(dir.path(), Pki::new(dir.path()));
    let pki = redis.tls.as_ref().unwrap();
    let wrong_ca = format!(
        "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.other_ca, pki.client_cert, pki.client_key
    );
    let no_client_cert = format!("tls_ca = {:?}\n", pki.ca);
    let (mut a, mut b) = started_pair(dir.path(), &redis);
    let mut c = Node::configured(dir.path(), "c", &redis, &wrong_ca);
    let mut d = Node::configured(dir.path(), "d", &redis, &no_client_cert);
    c.start();
    d.start();

    a.flood("198.51.100.9");
    eventually("b denies a's ban, over TLS", || {
        b.denies("198.51.100.9") == 1
    });
    // b's publisher connects on its own thread, maybe after its subscriber brought the ban.
    eventually("b's publisher connected, over TLS", || {
        b.status()["fleet"]["connected"] == true
    });
    assert!(b.log_text().contains("connected to rediss://127.0.0.1"));
    for n in [&c, &d] {
        eventually("the refused node says Redis is unreachable", || {
            n.log_text().contains("Redis at rediss://127.0.0.1")
                && n.log_text().contains("unreachable")
        });
    }
    for n in [&c, &d] {
        // UnknownIssuer for c; the server's CertificateRequired alert for d.
        let log = n.log_text();
        assert!(
            log.to_lowercase().contains("certificate"),
            "the cause is named: {log}"
        );
    }
    let status = c.status();
    assert_eq!(status["fleet"]["connected"], false);
    let error = status["fleet"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{status}");
    assert!(status["fleet"]["unreachable_since"].is_string(), "{status}");
    // a's ban reached b long ago; never the nodes kept out.
    for n in [&c, &d] {
        assert_eq!(n.denies("198.51.100.9"), 0);
        assert_eq!(n.status()["fleet"]["applied"], 0);
    }
    // Their own detection and local bans go on, queued for the fleet.
    c.flood("198.51.100.10");
    eventually("c bans on its own", || c.denies("198.51.100.10") == 1);
    assert_eq!(b.denies("198.51.100.10"), 0);

    // The right CA written over c's file: read at the next connection, no restart needed;
    // c then gets a's ban and sends its own.
    std::fs::copy(&pki.ca, &pki.other_ca).unwrap();
    eventually("c gets in and applies a's ban", || {
        c.denies("198.51.100.9") == 1
    });
    eventually("c's queued ban reaches b", || {
        b.denies("198.51.100.10") == 1
    });
    assert!(c.log_text().contains("connected again"), "{}", c.log_text());
    assert_eq!(
        d.denies("198.51.100.9"),
        0,
        "d still has no client certificate"
    );

    for n in [&mut a, &mut b, &mut c, &mut d] {
        n.stop();
    }
}

/// The rule of the fleet-counting tests: 30 r/s across the fleet. The logs stamp whole seconds,
/// so a second's requests count together: burst 35 lets 27 of them through and not 45.
const SPREAD_RULE: &str =
    "name = \"spread\"\nrate = \"30r/s\"\nburst = 35\nban = \"10m\"\nscope = \"fleet\"\n";

/// Three nodes counting rule `spread` with the whole fleet through the Redis at `url`, started
/// and counting with the fleet.
fn counting_trio(root: &Path, url: &str) -> [Node; 3] {
    counting_trio_on(root, url, "stream = \"test:events\"\n")
}

/// [`counting_trio`] with the `[fleet]` lines `fleet` (its stream).
fn counting_trio_on(root: &Path, url: &str, fleet: &str) -> [Node; 3] {
    counting_trio_skewed(root, url, fleet, [0, 0, 0])
}

/// [`counting_trio_on`] with each node's clock `skews[i]` seconds off (libfaketime).
fn counting_trio_skewed(root: &Path, url: &str, fleet: &str, skews: [i64; 3]) -> [Node; 3] {
    let mut nodes = ["a", "b", "c"].map(|n| Node::with_rule(root, n, url, SPREAD_RULE, fleet));
    for (n, skew) in nodes.iter_mut().zip(skews) {
        if skew != 0 {
            n.env = vec![
                ("LD_PRELOAD", FAKETIME_LIB.to_string()),
                ("FAKETIME", format!("{skew:+}s")),
            ];
        }
    }
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        eventually("counting with the fleet", || {
            n.status()["fleet"]["counting"]["mode"] == "fleet"
        });
    }
    nodes
}

/// Writes requests stamped now: each flow `(client, rate per second, start, end)` (seconds
/// from now) round-robin over `logs`, as a load balancer spreads a client. Returns when the
/// last flow ends; `crossed` gets the moment a second of `watch_client` first held
/// `threshold` requests.
fn spread(
    logs: Vec<(PathBuf, i64)>,
    flows: Vec<(&'static str, u32, f64, f64)>,
    watch_client: &'static str,
    threshold: u32,
    crossed: std::sync::mpsc::Sender<Instant>,
) {
    use std::io::Write;
    let start = Instant::now();
    let mut files: Vec<std::fs::File> = logs
        .iter()
        .map(|(p, _)| std::fs::OpenOptions::new().append(true).open(p).unwrap())
        .collect();
    let mut next: Vec<(f64, usize)> = flows.iter().map(|f| (f.2, 0)).collect();
    let end = flows.iter().map(|f| f.3).fold(0.0, f64::max);
    let (mut second, mut in_second, mut told) = (0i64, 0u32, false);
    loop {
        let now = start.elapsed().as_secs_f64();
        if now >= end {
            return;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (i, (client, rate, _, stop)) in flows.iter().enumerate() {
            while next[i].0 <= now && next[i].0 < *stop {
                let to = next[i].1 % logs.len();
                let line = format!(
                    "{client} - - [{}] \"GET / HTTP/1.1\" 200 5 \"-\" \"spread\"\n",
                    floodwatch::lab::scenario::httpdate(secs + logs[to].1)
                );
                let f = &mut files[to];
                f.write_all(line.as_bytes()).unwrap();
                next[i].0 += 1.0 / f64::from(*rate);
                next[i].1 += 1;
                if *client == watch_client {
                    if secs != second {
                        (second, in_second) = (secs, 0);
                    }
                    in_second += 1;
                    if in_second >= threshold && !told {
                        told = true;
                        let _ = crossed.send(Instant::now());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs [`spread`] on a thread; the handle and the receiver of the crossing.
fn spread_in_background(
    nodes: &[Node],
    flows: Vec<(&'static str, u32, f64, f64)>,
    watch_client: &'static str,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<Instant>,
) {
    spread_skewed(nodes, &[0, 0, 0], flows, watch_client)
}

/// [`spread_in_background`] with each node's log stamped `skews[i]` seconds off the clock.
fn spread_skewed(
    nodes: &[Node],
    skews: &[i64],
    flows: Vec<(&'static str, u32, f64, f64)>,
    watch_client: &'static str,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<Instant>,
) {
    let logs: Vec<(PathBuf, i64)> = nodes
        .iter()
        .zip(skews)
        .map(|(n, s)| (n.access_log.clone(), *s))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    // A replay of the merged logs bans at the 37th request of one second (the first is free).
    let h = std::thread::spawn(move || spread(logs, flows, watch_client, 37, tx));
    (h, rx)
}

/// Waits until every node denies `key`; how long after `since` each did.
fn denied_everywhere(nodes: &[Node], key: &str, since: Instant) -> Vec<Duration> {
    let mut at: Vec<Option<Duration>> = vec![None; nodes.len()];
    let until = Instant::now() + Duration::from_secs(20);
    while at.iter().any(Option::is_none) {
        assert!(
            Instant::now() < until,
            "{key} not denied on every node: {at:?}"
        );
        for (i, n) in nodes.iter().enumerate() {
            if at[i].is_none() && n.denies(key) == 1 {
                at[i] = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    at.into_iter().flatten().collect()
}

/// A flood of 45 r/s spread evenly over three servers (15 r/s each, a third of the rule's
/// 30 r/s) is banned on all three within 2 s of the merged traffic crossing the limit; a client
/// at 9 r/s on each (27 r/s in all) is never banned.
#[test]
fn a_flood_spread_over_three_servers_is_banned_on_all_three_and_27_rs_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(dir.path());
    let mut nodes = counting_trio(dir.path(), &redis.url());
    // The flood starts on a second's boundary, so that its first second is a whole one.
    let frac = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    let to_boundary = f64::from(1000 - frac) / 1000.0;
    let flows = vec![
        ("198.51.100.27", 27, 0.0, 7.0),
        ("203.0.113.45", 45, 2.0 + to_boundary, 5.0 + to_boundary),
    ];
    let (writer, crossed) = spread_in_background(&nodes, flows, "203.0.113.45");
    let crossed = crossed.recv_timeout(Duration::from_secs(10)).unwrap();
    let after = denied_everywhere(&nodes, "203.0.113.45", crossed);
    for (n, d) in nodes.iter().zip(&after) {
        assert!(
            *d <= Duration::from_secs(2),
            "denied {d:?} after crossing the limit:\n{}",
            n.log_text()
        );
    }
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    for n in &nodes {
        assert_eq!(n.denies("198.51.100.27"), 0, "{}", n.log_text());
        assert_eq!(n.denies("203.0.113.45"), 1);
        let c = &n.status()["fleet"]["counting"];
        assert!(c["commands"].as_u64() > Some(0), "{c}");
    }
    let logs: String = nodes.iter().map(Node::log_text).collect();
    assert!(logs.contains("across the fleet"), "{logs}");
    for n in &mut nodes {
        n.stop();
    }
}

/// A reload that changes a fleet-counted rule counts with the new limits from then on: a client
/// at 27 r/s spread over three servers (9 r/s each), never banned under 30r/s burst 35, is banned
/// on all three once the rule is 20r/s burst 20 — which only the fleet's count can see.
#[test]
fn a_reload_that_changes_a_fleet_rule_counts_with_the_new_limits() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(dir.path());
    let mut nodes = counting_trio(dir.path(), &redis.url());
    for n in &nodes {
        let text = std::fs::read_to_string(&n.config).unwrap();
        let tighter = text.replace(
            "rate = \"30r/s\"\nburst = 35",
            "rate = \"20r/s\"\nburst = 20",
        );
        assert_ne!(tighter, text);
        std::fs::write(&n.config, tighter).unwrap();
        n.reload();
    }
    for n in &nodes {
        eventually("counting again for the reloaded rule", || {
            n.log_text()
                .contains("counting started again for the reloaded rules (spread)")
        });
        eventually("counting with the fleet", || {
            n.status()["fleet"]["counting"]["mode"] == "fleet"
        });
    }
    let flows = vec![("198.51.100.27", 27, 0.0, 6.0)];
    let since = Instant::now();
    let (writer, _) = spread_in_background(&nodes, flows, "198.51.100.27");
    denied_everywhere(&nodes, "198.51.100.27", since);
    writer.join().unwrap();
    let logs: String = nodes.iter().map(Node::log_text).collect();
    assert!(logs.contains("across the fleet"), "{logs}");
    assert!(!logs.contains("fleet counting stops"), "{logs}");
    for n in &mut nodes {
        n.stop();
    }
}

/// Redis killed in the middle of a run: fleet rules count locally (said in the log and
/// `status`), a spread flood goes unbanned (each server sees a third of it) while a flood on one
/// server is banned there as before; with Redis back, counting resumes and the next spread
/// flood is banned everywhere.
#[test]
fn fleet_counting_falls_back_to_local_while_redis_is_away_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = TestRedis::start(dir.path());
    let mut nodes = counting_trio(dir.path(), &redis.url());
    redis.stop();
    for n in &nodes {
        eventually("counting locally", || {
            n.status()["fleet"]["counting"]["mode"] == "local"
        });
    }
    let text = String::from_utf8_lossy(&nodes[0].admin(&["status"]).stdout).into_owned();
    assert!(
        text.contains("LOCAL COUNTING ONLY, Redis unreachable"),
        "{text}"
    );
    let (writer, _) = spread_in_background(&nodes, vec![("192.0.2.45", 45, 0.0, 3.0)], "");
    // One server alone sees a flood of its own: 60 requests in a second.
    for _ in 0..3 {
        util::append_flood(&nodes[0].access_log, "192.0.2.60");
    }
    writer.join().unwrap();
    eventually("a local flood is banned locally", || {
        nodes[0].denies("192.0.2.60") == 1
    });
    std::thread::sleep(Duration::from_millis(600));
    for n in &nodes {
        assert_eq!(n.denies("192.0.2.45"), 0, "counted locally: a third each");
    }

    redis.resume();
    for n in &nodes {
        eventually("counting with the fleet again", || {
            n.status()["fleet"]["counting"]["mode"] == "fleet"
        });
    }
    let (writer, crossed) =
        spread_in_background(&nodes, vec![("192.0.2.46", 45, 0.0, 3.0)], "192.0.2.46");
    let crossed = crossed.recv_timeout(Duration::from_secs(10)).unwrap();
    denied_everywhere(&nodes, "192.0.2.46", crossed);
    writer.join().unwrap();
    for n in &nodes {
        let c = &n.status()["fleet"]["counting"];
        assert_eq!(c["fallbacks"], 1, "{c}");
        let log = n.log_text();
        assert!(
            log.contains("fleet rules count this server's requests only"),
            "{log}"
        );
        assert!(log.contains("count with the fleet again"), "{log}");
    }
    for n in &mut nodes {
        n.stop();
    }
}

/// A Redis Cluster of three masters on loopback, each its own redis-server, joined with
/// `redis-cli --cluster create` (no replicas).
struct TestCluster {
    nodes: Vec<TestRedis>,
}

impl TestCluster {
    fn start(dir: &Path) -> TestCluster {
        let nodes: Vec<TestRedis> = (0..3)
            .map(|i| TestRedis::start_cluster_node(&dir.join(format!("node{i}"))))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for n in &nodes {
            let client = n.client();
            eventually("the cluster is up on every node", || {
                let info = client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
                info.is_ok_and(|i| i.contains("cluster_state:ok"))
            });
        }
        TestCluster { nodes }
    }

    /// The node that serves `key`'s slot.
    fn owner_of(&self, key: &str) -> &TestRedis {
        let slot = floodwatch::fleet::counting::slot::slot(key.as_bytes());
        let mut c = self.nodes[0].client().get_connection().unwrap();
        let ranges: Vec<(u16, u16, (String, u16))> = {
            let v: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
            let redis::Value::Array(ranges) = v else {
                panic!("CLUSTER SLOTS: {v:?}")
            };
            ranges
                .into_iter()
                .map(|r| {
                    let redis::Value::Array(p) = r else { panic!() };
                    let int = |v: &redis::Value| match v {
                        redis::Value::Int(n) => *n as u16,
                        _ => panic!("{v:?}"),
                    };
                    let redis::Value::Array(m) = &p[2] else {
                        panic!()
                    };
                    (int(&p[0]), int(&p[1]), (String::new(), int(&m[1])))
                })
                .collect()
        };
        let port = ranges
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|r| r.2 .1)
            .unwrap();
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// Keys held by each node.
    fn sizes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                let mut c = n.client().get_connection().unwrap();
                redis::cmd("DBSIZE").query(&mut c).unwrap()
            })
            .collect()
    }
}

/// The fleet's counting of three servers exchanging through `stores` (one each): 300 clients
/// at 5 r/s and one at 45 r/s, each spread evenly, window by window from `first`, under 30 r/s
/// burst 10; the keys banned.
fn count_through(
    stores: &mut [floodwatch::fleet::counting::redis_store::RedisStore],
    first: i64,
) -> std::collections::BTreeSet<String> {
    use floodwatch::fleet::counting::counter::{CountRule, Counter, Settings};
    let spec = floodwatch::engine::RuleSpec {
        name: "spread".into(),
        rate: floodwatch::engine::Rate {
            milli_per_sec: 30_000,
            text: "30r/s".into(),
        },
        burst: 10,
        ..floodwatch::config::default_rule()
    };
    let mut counters: Vec<Counter> = (0..stores.len())
        .map(|_| {
            let settings = Settings {
                interval_ms: 200,
                lookback: 10,
                groups: 16,
                prefix: "{fw}:events".into(),
            };
            let mut c = Counter::new(vec![CountRule::new(0, 0, &spec, 200)], settings);
            c.restart_at(first);
            c
        })
        .collect();
    let hit = |v4: u32, w: i64| floodwatch::hit::Hit {
        addr: floodwatch::addr::Addr::from_v4(v4),
        time_ms: w * 200,
        vhost: floodwatch::hit::NO_VHOST,
        rules: 1,
        flags: 0,
    };
    let flood = u32::from(std::net::Ipv4Addr::new(203, 0, 113, 45));
    let mut banned = std::collections::BTreeSet::new();
    for w in first..first + 30 {
        for (s, (counter, store)) in counters.iter_mut().zip(stores.iter_mut()).enumerate() {
            for k in 0..300u32 {
                if (w as usize + k as usize) % 3 == s {
                    counter.hit(&hit(0x0a00_0000 + k, w), w, w, &|_| None);
                }
            }
            for _ in 0..3 {
                counter.hit(&hit(flood, w), w, w, &|_| None);
            }
            for o in counter.exchange(w + 1, store).unwrap() {
                banned.insert(o.key.net.to_string());
            }
        }
    }
    banned
}

fn counting_store(url: &str) -> floodwatch::fleet::counting::redis_store::RedisStore {
    let cfg = floodwatch::config::Fleet {
        url: url.into(),
        node: "t".into(),
        stream: "{fw}:events".into(),
        apply_to: None,
        tls: Default::default(),
        count_interval_ms: 200,
        counted_rules: vec!["spread".into()],
    };
    floodwatch::fleet::counting::redis_store::RedisStore::new(&cfg).unwrap()
}

/// The same exchanges against one redis-server and against a Redis Cluster of three masters
/// (each server connected to a different node): the flood alone is banned, and on the cluster
/// the counts spread over every node.
#[test]
fn fleet_counting_works_against_one_redis_and_a_three_master_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let single = TestRedis::start(&dir.path().join("single"));
    let mut stores: Vec<_> = (0..3).map(|_| counting_store(&single.url())).collect();
    let want = std::collections::BTreeSet::from(["203.0.113.45".to_string()]);
    assert_eq!(count_through(&mut stores, 1_000_000), want);
    assert!(!stores[0].is_cluster());

    let cluster = TestCluster::start(&dir.path().join("cluster"));
    let mut stores: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| counting_store(&n.url()))
        .collect();
    assert_eq!(count_through(&mut stores, 1_000_000), want);
    assert!(stores.iter().all(|s| s.is_cluster()));
    let sizes = cluster.sizes();
    assert!(
        sizes.iter().all(|&n| n > 0),
        "counts on every node: {sizes:?}"
    );
    // One pipeline per node and exchange, not one per command.
    let t = stores[0].traffic;
    assert!(
        t.pipelines <= 3 * 30 && t.commands > t.pipelines * 10,
        "{t:?}"
    );
}

/// Three watch processes on a Redis Cluster: the bans' stream and table under one hash tag,
/// on the node `url` names; the counts spread over the three. A flood spread over the three
/// servers is banned on all three.
#[test]
fn a_spread_flood_is_banned_everywhere_through_a_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path());
    let url = cluster.owner_of("{fw}:events").url();
    let mut nodes = counting_trio_on(dir.path(), &url, "stream = \"{fw}:events\"\n");
    for n in &nodes {
        assert_eq!(n.status()["fleet"]["counting"]["cluster"], true);
    }
    let (writer, crossed) =
        spread_in_background(&nodes, vec![("203.0.113.46", 45, 0.0, 3.0)], "203.0.113.46");
    let crossed = crossed.recv_timeout(Duration::from_secs(10)).unwrap();
    denied_everywhere(&nodes, "203.0.113.46", crossed);
    writer.join().unwrap();
    for n in &mut nodes {
        n.stop();
    }
}

/// libfaketime (Debian's faketime), for servers whose clocks are off.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Three servers whose clocks differ by up to 2 s each way from Redis's (and so 4 s between
/// the first and the last), each stamping its log with its own clock: 27 r/s spread over them
/// is never banned, 45 r/s is banned on all three (windows follow Redis's clock, each server
/// correcting its own offset).
#[test]
fn clocks_2s_apart_ban_no_one_at_27_rs_and_every_server_at_45_rs() {
    if util::skip_unless_ci(
        (!Path::new(FAKETIME_LIB).exists()).then_some("libfaketime (Debian's faketime)"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(dir.path());
    let skews = [2, 0, -2];
    let mut nodes = counting_trio_skewed(
        dir.path(),
        &redis.url(),
        "stream = \"test:events\"\n",
        skews,
    );
    for (n, skew) in nodes.iter().zip(skews) {
        // Each measured its clock against Redis's (within a loaded machine's round trip).
        let offset = n.status()["fleet"]["counting"]["clock_offset_ms"]
            .as_i64()
            .unwrap();
        assert!(
            (offset + skew * 1000).abs() < 300,
            "offset {offset} for a clock {skew} s off"
        );
    }
    let flows = vec![("198.51.100.27", 27, 0.0, 6.0)];
    let (writer, _) = spread_skewed(&nodes, &skews, flows, "");
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    for n in &nodes {
        assert_eq!(n.denies("198.51.100.27"), 0, "{}", n.log_text());
        assert_eq!(n.status()["fleet"]["counting"]["mode"], "fleet");
    }
    let flows = vec![("203.0.113.45", 45, 0.0, 4.0)];
    let (writer, crossed) = spread_skewed(&nodes, &skews, flows, "203.0.113.45");
    let crossed = crossed.recv_timeout(Duration::from_secs(10)).unwrap();
    denied_everywhere(&nodes, "203.0.113.45", crossed);
    writer.join().unwrap();
    for n in &mut nodes {
        n.stop();
    }
}
