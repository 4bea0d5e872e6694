//! End-to-end tests of replay behind Cloudflare: the real binary on `testdata/proxy/` logs, in
//! which every visitor arrives through Cloudflare edges and the real client is in a logged
//! field (`testdata/proxy/make.py` says what each log holds and what must be banned).

mod util;
use util::{floodwatch, stderr};

use std::path::Path;

use floodwatch::addr::{Addr, Cidr};
use floodwatch::proxy::ranges;
use serde_json::Value;

fn testdata(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/proxy")
        .join(rel)
        .display()
        .to_string()
}

/// Replays `log` with `args`, asserting success; the events and the `--summary` object.
fn replay(args: &[&str], log: &str) -> (Vec<Value>, Value) {
    let mut all = vec!["replay", "--summary"];
    all.extend_from_slice(args);
    let log = testdata(log);
    all.push(&log);
    let out = floodwatch(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut ev: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = ev.pop().unwrap();
    assert_eq!(summary["type"], "summary");
    (ev, summary)
}

/// Banned keys with their `via_proxy` flag, sorted.
fn bans(ev: &[Value]) -> Vec<(String, bool)> {
    let mut v: Vec<_> = ev
        .iter()
        .filter(|e| e["type"] == "ban")
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["via_proxy"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

fn cloudflare() -> Vec<Cidr> {
    let p = ranges::provider("cloudflare").unwrap();
    ranges::parse(p.text, p.name).unwrap()
}

fn is_cloudflare(key: &str) -> bool {
    let key: Cidr = key.parse().unwrap();
    cloudflare()
        .iter()
        .any(|r| r.contains(key.addr) || key.contains(r.addr))
}

const CF_FORMAT: &str = r#"nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_cf_connecting_ip""#;

fn real_flooders() -> Vec<(String, bool)> {
    vec![
        ("192.0.2.66".into(), false),
        ("198.51.100.23".into(), true),
        ("2001:db8:bad:1::/64".into(), true),
    ]
}

#[test]
fn cf_connecting_ip_bans_exactly_the_real_flooders_and_no_cloudflare_address() {
    let (ev, summary) = replay(
        &["--config", &testdata("cloudflare.toml")],
        "cloudflare/access_log",
    );
    let banned = bans(&ev);
    // 192.0.2.66 came straight to the origin with a forged CF-Connecting-IP: keyed on itself,
    // and none of the addresses it named (1.1.1.1, visitors, Googlebot) is banned.
    assert_eq!(banned, real_flooders());
    assert!(banned.iter().all(|(k, _)| !is_cloudflare(k)));
    let flood = ev.iter().find(|e| e["key"] == "198.51.100.23").unwrap();
    // 60 r/s through three edges is one key: the 142nd request overflows, as without a CDN.
    assert_eq!(flood["requests"], 142);
    assert_eq!(flood["time"], "2026-11-25T10:01:02Z");
    // Lines through Cloudflare with a real client in the field, and the 480 lines of the flood
    // whose field is garbage: counted, keyed on the edge, which is never banned.
    assert_eq!(summary["via_proxy"], 1602);
    assert_eq!(summary["proxy_fallback"], 480);
    assert_eq!(summary["allowlisted"], 1);
    assert_eq!(summary["lines"], 3462);
}

#[test]
fn forwarded_for_list_gives_the_rightmost_untrusted_address() {
    // Behind a local balancer (10.0.0.2) behind Cloudflare; the flooder forges a random first
    // X-Forwarded-For entry on every request, which must not split it into many keys.
    let (ev, summary) = replay(&["--config", &testdata("xff.toml")], "xff/access_log");
    let banned = bans(&ev);
    assert_eq!(banned, real_flooders());
    assert!(banned
        .iter()
        .all(|(k, _)| !is_cloudflare(k) && k != "10.0.0.2"));
    assert_eq!(summary["via_proxy"], 1602);
    assert_eq!(summary["proxy_fallback"], 480);
}

#[test]
fn without_the_proxy_table_cloudflare_itself_gets_banned() {
    let (ev, summary) = replay(&["--format", CF_FORMAT], "cloudflare/access_log");
    let banned = bans(&ev);
    assert!(
        banned.iter().any(|(k, _)| is_cloudflare(k)),
        "the edge carrying the garbage flood overflows: {banned:?}"
    );
    assert!(!banned.iter().any(|(k, _)| k == "198.51.100.23"));
    assert_eq!(summary["via_proxy"], 0);
    assert_eq!(summary["proxy_fallback"], 0);
}

#[test]
fn trusted_without_a_field_protects_cloudflare_but_sees_no_client() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fw.toml");
    std::fs::write(&cfg, "[proxy]\ntrusted = [\"cloudflare\"]\n").unwrap();
    let (ev, summary) = replay(
        &["--config", cfg.to_str().unwrap(), "--format", CF_FORMAT],
        "cloudflare/access_log",
    );
    assert_eq!(bans(&ev), [("192.0.2.66".to_string(), false)]);
    assert_eq!(summary["allowlisted"], 1);
    assert_eq!(summary["via_proxy"], 0);
}

#[test]
fn ranges_file_replaces_the_builtin_list() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("cf.txt");
    // An older list without 172.64.0.0/13: the garbage flood's edge (172.70.242.58) is then
    // an ordinary client, and banned.
    std::fs::write(
        &list,
        "# fetched earlier\n162.158.0.0/15\n104.16.0.0/13\n141.101.64.0/18\n2400:cb00::/32\n2a06:98c0::/29\n",
    )
    .unwrap();
    let cfg = dir.path().join("fw.toml");
    let text = std::fs::read_to_string(testdata("cloudflare.toml")).unwrap()
        + &format!("ranges_file = {:?}\n", list.display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let (ev, _) = replay(
        &["--config", cfg.to_str().unwrap()],
        "cloudflare/access_log",
    );
    let keys: Vec<String> = bans(&ev).into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"172.70.242.58".to_string()), "{keys:?}");
    assert!(keys.contains(&"198.51.100.23".to_string()), "{keys:?}");

    // A bad line is an error naming the file and the line (exit code 2).
    std::fs::write(&list, "162.158.0.0/15\n172.64.0.0/33\n").unwrap();
    let out = floodwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "proxy.ranges_file: {}:2: not an IP address or CIDR range: \"172.64.0.0/33\"",
            list.display()
        )),
        "{err}"
    );
}

#[test]
fn a_field_the_format_does_not_log_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fw.toml");
    std::fs::write(
        &cfg,
        "[proxy]\ntrusted = [\"cloudflare\"]\nclient_ip_field = \"http_cf_connecting_ip\"\n",
    )
    .unwrap();
    for cmd in ["check-config", "replay"] {
        let mut args = vec![cmd, "--config", cfg.to_str().unwrap()];
        let log = testdata("cloudflare/access_log");
        if cmd == "replay" {
            args.push(&log);
        }
        let out = floodwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.contains("fw.toml: proxy.client_ip_field: the log format does not log the client IP field \"http_cf_connecting_ip\""),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn check_config_shows_the_proxy_settings() {
    let out = floodwatch(&["check-config", "--config", &testdata("xff.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "proxy: trusted cloudflare, 10.0.0.0/8 (never banned)\n",
        "  real client from field http_x_forwarded_for\n",
        "trusted proxy ranges (23 in all):\n",
        "  cloudflare: 22 ranges (built in:",
        "  10.0.0.0/8\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The built-in list is the one shipped beside the design notes, and covers the edges the
    // test logs use.
    for edge in [
        "162.158.86.21",
        "172.70.242.58",
        "2400:cb00:459:1024::a29e:5615",
    ] {
        let a = Addr::parse(edge.as_bytes()).unwrap();
        assert!(cloudflare().iter().any(|r| r.contains(a)), "{edge}");
    }
}

// ---- No allocation per line ----

#[global_allocator]
static COUNTING: util::CountingAlloc = util::CountingAlloc;

#[test]
fn resolving_real_clients_does_not_allocate() {
    use floodwatch::config::{default_rule, Config};
    use floodwatch::engine::rule::CompiledRules;
    use floodwatch::hit::NO_VHOST;
    use floodwatch::parse::Format;
    use floodwatch::source::ingest::Ingest;
    use floodwatch::vhost::Vhosts;
    use std::sync::Arc;

    for name in ["cloudflare", "xff"] {
        let config = Config::load(Path::new(&testdata(&format!("{name}.toml")))).unwrap();
        let mut format = Format::from_spec(&config.input.format).unwrap();
        let proxies = floodwatch::proxy::setup(&config, &mut format).unwrap();
        let rules = CompiledRules::new(&[default_rule()]).unwrap();
        let mut ingest = Ingest::new(Arc::new(format), Arc::new(rules), Vhosts::new())
            .with_client_ip(proxies.client_ip());
        let log = std::fs::read(testdata(&format!("{name}/access_log"))).unwrap();
        let lines: Vec<&[u8]> = log
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        // The first pass warms the time cache.
        for l in &lines {
            ingest.line(l, NO_VHOST);
        }
        let before = util::allocations();
        let mut hits = 0;
        for l in &lines {
            hits += usize::from(ingest.line(l, NO_VHOST).is_some());
        }
        let allocs = util::allocations() - before;
        assert_eq!(
            allocs,
            0,
            "{name}: {allocs} allocations for {} lines",
            lines.len()
        );
        assert_eq!(hits, 3462, "{name}");
        assert_eq!(ingest.stats.via_proxy, 2 * 1602, "{name}");
        assert_eq!(ingest.stats.proxy_fallback, 2 * 480, "{name}");
    }
}

/// A client behind the CDN cannot be blocked by the server: the nginx sink (which defaults to
/// `proxied = false`) gets only the direct flooder, while a jsonl sink gets every ban.
#[test]
fn bans_seen_through_the_proxy_go_only_to_sinks_that_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.conf");
    let jsonl = dir.path().join("events.jsonl");
    let base = std::fs::read_to_string(testdata("cloudflare.toml")).unwrap();
    let cfg = dir.path().join("fw.toml");
    std::fs::write(
        &cfg,
        format!(
            "{base}\n[[sink]]\ntype = \"nginx\"\npath = {deny:?}\nreload_command = [\"true\"]\n\
             test_command = [\"true\"]\nmin_reload_interval = \"1s\"\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {jsonl:?}\n"
        ),
    )
    .unwrap();
    let log = testdata("cloudflare/access_log");
    let out = floodwatch(&["replay", "--sinks", "--config", cfg.to_str().unwrap(), &log]);
    assert!(out.status.success(), "{}", stderr(&out));
    let denied = std::fs::read_to_string(&deny).unwrap();
    assert_eq!(
        denied
            .lines()
            .filter(|l| l.starts_with("deny "))
            .collect::<Vec<_>>(),
        ["deny 192.0.2.66;"]
    );
    let events: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bans(&events), real_flooders());
}
