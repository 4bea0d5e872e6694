//! End-to-end tests of the lab: every scenario `generate` writes is replayed with the config it
//! wrote, and replay must ban exactly the keys of its truth.

mod util;
use util::{floodwatch, ok};

use std::path::Path;

use serde_json::Value;

fn generate(dir: &Path, scenario: &str, seconds: u32, seed: u64) -> Value {
    let d = dir.display().to_string();
    ok(&floodwatch(&[
        "generate",
        "--scenario",
        scenario,
        "--seconds",
        &seconds.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        &d,
    ]));
    serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    s.sort();
    s.dedup();
    s
}

/// Keys of the ban events of a replay with the scenario's own config (paths from the config).
fn replay_bans(dir: &Path) -> Vec<String> {
    let config = dir.join("floodwatch.toml").display().to_string();
    let out = floodwatch(&["replay", "--no-progress", "--config", &config]);
    let mut keys: Vec<String> = String::from_utf8_lossy(&ok(&out).stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ban")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The truth for two seeds and two lengths (the shortest allowed and a longer one).
fn truth_holds(scenario: &str) {
    for (seconds, seed) in [(20, 1), (90, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let truth = generate(dir.path(), scenario, seconds, seed);
        let bans = replay_bans(dir.path());
        assert_eq!(
            bans,
            strings(&truth["banned"]),
            "{scenario} {seconds}s seed {seed}"
        );
        for k in strings(&truth["not_banned"]) {
            assert!(!bans.contains(&k), "{scenario}: {k} banned");
        }
    }
}

#[test]
fn list_names_every_scenario() {
    let out = floodwatch(&["generate", "--list"]);
    let names: Vec<String> = String::from_utf8_lossy(&ok(&out).stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        names,
        [
            "background",
            "get-flood",
            "distributed",
            "ipv6-rotation",
            "wp-login",
            "heavy-steady",
            "cloudflare",
            "mixed"
        ]
    );
}

#[test]
fn unknown_scenario_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = floodwatch(&["generate", "--scenario", "nope", "--out", &d]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn background_bans_nobody() {
    truth_holds("background");
}

#[test]
fn get_flood_truth() {
    truth_holds("get-flood");
}

#[test]
fn distributed_truth() {
    truth_holds("distributed");
}

#[test]
fn ipv6_rotation_truth() {
    truth_holds("ipv6-rotation");
}

#[test]
fn wp_login_truth() {
    truth_holds("wp-login");
}

#[test]
fn heavy_steady_is_not_banned() {
    truth_holds("heavy-steady");
}

#[test]
fn mixed_truth() {
    truth_holds("mixed");
}

#[test]
fn cloudflare_truth() {
    truth_holds("cloudflare");
}

/// Holds with and without the proxy support: a Cloudflare edge carries many clients and must
/// never be banned (without `[proxy]` the flood goes unseen, spread over the edges).
#[test]
fn cloudflare_edges_are_never_banned() {
    let dir = tempfile::tempdir().unwrap();
    let truth = generate(dir.path(), "cloudflare", 60, 1);
    assert_eq!(truth["needs_proxy"], true);
    let bans = replay_bans(dir.path());
    for edge in strings(&truth["not_banned"]) {
        assert!(!bans.contains(&edge), "edge {edge} banned");
    }
}

#[test]
fn distributed_is_invisible_to_a_per_address_rule() {
    // Why the scenario needs its /24 rule: with only the default rule nobody is banned.
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "distributed", 30, 5);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let out = floodwatch(&["replay", "--no-progress", &glob]);
    assert_eq!(String::from_utf8_lossy(&ok(&out).stdout), "");
}

#[test]
fn same_seed_same_bytes_through_the_binary() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate(a.path(), "mixed", 20, 9);
    generate(b.path(), "mixed", 20, 9);
    for v in ["example.com", "shop.example.org", "blog.example.net"] {
        let log = format!("vhosts/{v}/logs/access_log");
        assert_eq!(
            std::fs::read(a.path().join(&log)).unwrap(),
            std::fs::read(b.path().join(&log)).unwrap()
        );
    }
}

/// `analyze`'s what-if must be exactly what `replay --rate R --burst B` bans, for every rate.
#[test]
fn analyze_what_if_equals_replay_bans() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 40, 3);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let rates = ["5r/s", "10r/s", "20r/s", "60r/s"];
    for burst in ["20", "100"] {
        let out = floodwatch(&[
            "analyze",
            "--json",
            "--rates",
            &rates.join(","),
            "--burst",
            burst,
            &glob,
        ]);
        let report: Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
        let what_if = report["what_if"].as_array().unwrap();
        assert_eq!(what_if.len(), rates.len());
        let mut distinct = std::collections::BTreeSet::new();
        for (row, rate) in what_if.iter().zip(rates) {
            assert_eq!(row["rate"], rate);
            assert_eq!(row["burst"].to_string(), burst);
            let replay = floodwatch(&[
                "replay",
                "--no-progress",
                "--rate",
                rate,
                "--burst",
                burst,
                &glob,
            ]);
            let mut bans: Vec<String> = String::from_utf8_lossy(&ok(&replay).stdout)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|e| e["type"] == "ban")
                .map(|e| e["key"].as_str().unwrap().to_string())
                .collect();
            bans.sort();
            bans.dedup();
            assert_eq!(strings(&row["keys"]), bans, "rate {rate} burst {burst}");
            distinct.insert(bans);
        }
        // The rates were chosen so the answers differ: the comparison is not vacuous.
        assert!(distinct.len() >= 2, "burst {burst}: {distinct:?}");
    }
}

/// The sorted, distinct keys a replay banned under `rule` (any rule: `None`).
fn banned_by(out: &std::process::Output, rule: Option<&str>) -> Vec<String> {
    let mut keys: Vec<String> = String::from_utf8_lossy(&ok(out).stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ban" && rule.is_none_or(|r| e["rule"] == r))
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `analyze --json` with these arguments.
fn what_if(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["analyze", "--json"];
    all.extend(args);
    let report: Value = serde_json::from_slice(&ok(&floodwatch(&all)).stdout).unwrap();
    report["what_if"].as_array().unwrap().clone()
}

/// With `--config`, a what-if row is what `replay --config C --rate R --burst B` bans: the
/// config's allowlist, format and sinks as production has them (the sinks untouched by both, and
/// the what-if not emptied by events gone to them).
#[test]
fn analyze_with_a_config_equals_replay_with_that_config() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 40, 3);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("prod.toml");
    // The default rule (no [[rule]] tables, so --rate applies), a flooder allowlisted.
    std::fs::write(
        &config,
        format!(
            "[input]\nformat = \"combined\"\n\n[allow]\ncidrs = [\"127.0.0.1\", \"192.0.2.77\"]\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = {events:?}\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let rates = ["5r/s", "10r/s", "20r/s", "60r/s"];
    let rows = what_if(&[
        "--config",
        cfg,
        "--rates",
        &rates.join(","),
        "--burst",
        "20",
        &glob,
    ]);
    assert_eq!(rows.len(), rates.len());
    let mut distinct = std::collections::BTreeSet::new();
    for (row, rate) in rows.iter().zip(rates) {
        let replay = floodwatch(&[
            "replay",
            "--no-progress",
            "--config",
            cfg,
            "--rate",
            rate,
            "--burst",
            "20",
            &glob,
        ]);
        let bans = banned_by(&replay, None);
        assert_eq!(strings(&row["keys"]), bans, "rate {rate}");
        assert!(!bans.contains(&"192.0.2.77".to_string()), "allowlisted");
        distinct.insert(bans);
    }
    assert!(distinct.len() >= 2, "{distinct:?}");
    assert!(!events.exists(), "a sink was used");
}

/// With the scenario's own config (several rules), a what-if row of one rule is what replay
/// bans under that rule with the config's rate and burst of that rule changed: replay cannot
/// take --rate beside [[rule]] tables, so the changed config is written out.
#[test]
fn analyze_of_one_rule_equals_replay_with_that_rule_changed() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 40, 3);
    let own = dir.path().join("floodwatch.toml");
    let text = std::fs::read_to_string(&own).unwrap();
    let default_rule = "name = \"default\"\nrate = \"20r/s\"\nburst = 100\n";
    assert!(text.contains(default_rule), "{text}");
    let cfg = own.to_str().unwrap();
    // Without --rates: a ladder holding the rule's own threshold, i.e. replay with the config
    // as it is.
    let rows = what_if(&["--config", cfg]);
    let own = rows
        .iter()
        .find(|r| r["rate"] == "20r/s" && r["burst"] == 100)
        .unwrap();
    let replay = floodwatch(&["replay", "--no-progress", "--config", cfg]);
    assert_eq!(strings(&own["keys"]), banned_by(&replay, Some("default")));
    assert!(!strings(&own["keys"]).is_empty());

    let rates = ["5r/s", "20r/s", "60r/s"];
    let rows = what_if(&[
        "--config",
        cfg,
        "--rule",
        "default",
        "--rates",
        &rates.join(","),
        "--burst",
        "30",
    ]);
    let mut distinct = std::collections::BTreeSet::new();
    for (row, rate) in rows.iter().zip(rates) {
        let changed = dir
            .path()
            .join(format!("at-{}.toml", rate.replace('/', "-")));
        let rule = format!("name = \"default\"\nrate = \"{rate}\"\nburst = 30\n");
        std::fs::write(&changed, text.replace(default_rule, &rule)).unwrap();
        let replay = floodwatch(&[
            "replay",
            "--no-progress",
            "--config",
            changed.to_str().unwrap(),
        ]);
        let bans = banned_by(&replay, Some("default"));
        assert_eq!(strings(&row["keys"]), bans, "rate {rate}");
        distinct.insert(bans);
    }
    assert!(distinct.len() >= 2, "{distinct:?}");
}

#[test]
fn analyze_reports_top_talkers_and_peak_distribution() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "get-flood", 30, 1);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let out = floodwatch(&["analyze", "--json", "--top", "3", &glob]);
    let report: Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
    assert_eq!(report["top"].as_array().unwrap().len(), 3);
    assert_eq!(report["top"][0]["key"], "198.51.100.23");
    assert!(report["top"][0]["peak_rps"].as_f64().unwrap() >= 60.0);
    let d = report["peak_rps_distribution"].as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert!(d[0]["max"].as_f64().unwrap() >= 60.0);
    // Without --rates, a ladder around the rule's own threshold, which it holds.
    let own = report["what_if"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rate"] == "20r/s" && r["burst"] == 100)
        .unwrap();
    assert_eq!(own["keys"][0], "198.51.100.23");
    assert_eq!(report["top"][0]["vhost"], "example.com");
    assert_eq!(report["top"][0]["banned"].as_str().unwrap().len(), 20);
    assert!(report["top"][0]["paths"][0]["requests"].as_u64().unwrap() > 100);
    let text = floodwatch(&["analyze", &glob]);
    let text = String::from_utf8_lossy(&ok(&text).stdout).to_string();
    assert!(
        text.contains("Top talkers") && text.contains("What-if"),
        "{text}"
    );
}

#[test]
fn bench_reports_throughput_latency_and_accuracy() {
    let out = floodwatch(&[
        "bench",
        "--json",
        "--seconds",
        "20",
        "--live-seconds",
        "20",
        "--speed",
        "50",
    ]);
    let r: Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
    assert!(r["replay"]["lines"].as_u64().unwrap() > 1000);
    assert!(r["replay"]["lines_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["replay"]["accuracy"]["precision"], 1.0);
    assert_eq!(r["replay"]["accuracy"]["recall"], 1.0);
    assert_eq!(r["live"]["accuracy"]["recall"], 1.0);
    let lat = &r["live"]["line_to_ban"];
    assert_eq!(lat["samples"], r["live"]["bans"]);
    for p in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(lat[p].as_u64().unwrap() > 0, "{p}");
    }
    let bad = floodwatch(&["bench", "--speed", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// The ban events' (time, key, rule), in order, of a replay's stdout.
fn ban_events(out: &std::process::Output) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(&ok(out).stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ban")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("time"), s("key"), s("rule"))
        })
        .collect()
}

fn analyze_json(args: &[&str]) -> Value {
    let mut all = vec!["analyze", "--json"];
    all.extend(args);
    serde_json::from_slice(&ok(&floodwatch(&all)).stdout).unwrap()
}

/// Every cell of a rates × bursts grid, and the ban timeline of the configured rules, equal
/// what replay decides with that threshold (the scenario's three rules, three vhosts).
#[test]
fn analyze_grid_cells_and_timeline_equal_replay() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 60, 4);
    let own = dir.path().join("floodwatch.toml");
    let text = std::fs::read_to_string(&own).unwrap();
    let cfg = own.to_str().unwrap();
    let report = analyze_json(&[
        "--config",
        cfg,
        "--rule",
        "default",
        "--rates",
        "5r/s,20r/s,50r/s",
        "--bursts",
        "10,50,200",
    ]);
    let grid = &report["grids"][0];
    assert_eq!(grid["rule"], "default");
    let cells = grid["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    let default_rule = "name = \"default\"\nrate = \"20r/s\"\nburst = 100\n";
    let mut distinct = std::collections::BTreeSet::new();
    for c in cells {
        let (rate, burst) = (c["rate"].as_str().unwrap(), c["burst"].as_u64().unwrap());
        let changed = dir.path().join("cell.toml");
        let rule = format!("name = \"default\"\nrate = \"{rate}\"\nburst = {burst}\n");
        std::fs::write(&changed, text.replace(default_rule, &rule)).unwrap();
        let replay = floodwatch(&[
            "replay",
            "--no-progress",
            "--config",
            changed.to_str().unwrap(),
        ]);
        let bans = banned_by(&replay, Some("default"));
        assert_eq!(strings(&c["keys"]), bans, "{rate} burst {burst}");
        distinct.insert(bans);
    }
    assert!(distinct.len() >= 3, "{distinct:?}");
    // The timeline: every ban of every rule, at the same times, as replay with the config.
    let replay = floodwatch(&["replay", "--no-progress", "--config", cfg]);
    let want = ban_events(&replay);
    let got: Vec<(String, String, String)> = report["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap().to_string();
            (s("time"), s("key"), s("rule"))
        })
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want_sorted);
    assert!(want.len() >= 4);
}

/// A per-vhost grid is what replay bans with the rule restricted to that vhost; `--since` and
/// `--until` are what replay bans on the lines of that window alone.
#[test]
fn analyze_by_vhost_and_window_equal_replay() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 60, 5);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let rates = "5r/s,20r/s,50r/s";
    let report = analyze_json(&["--by-vhost", "--rates", rates, "--bursts", "20,100", &glob]);
    let grids = report["grids"].as_array().unwrap();
    let per_vhost: Vec<&Value> = grids.iter().filter(|g| g["vhost"].is_string()).collect();
    assert_eq!(per_vhost.len(), 3, "{grids:?}");
    let mut nonempty = 0;
    for g in per_vhost {
        let vhost = g["vhost"].as_str().unwrap();
        for c in g["cells"].as_array().unwrap() {
            let (rate, burst) = (c["rate"].as_str().unwrap(), c["burst"].as_u64().unwrap());
            let cfg = dir.path().join("vhost.toml");
            std::fs::write(
                &cfg,
                format!("[[rule]]\nname = \"v\"\nrate = \"{rate}\"\nburst = {burst}\nvhosts = [\"{vhost}\"]\n"),
            )
            .unwrap();
            let replay = floodwatch(&[
                "replay",
                "--no-progress",
                "--config",
                cfg.to_str().unwrap(),
                &glob,
            ]);
            let bans = banned_by(&replay, None);
            assert_eq!(strings(&c["keys"]), bans, "{vhost} {rate} burst {burst}");
            nonempty += usize::from(!bans.is_empty());
        }
    }
    assert!(nonempty >= 3);

    // The window: the lines of 10:00:20 to 10:00:40 written out on their own.
    let (since, until) = ("2026-11-20T10:00:20Z", "2026-11-20T10:00:40Z");
    let cut = dir.path().join("cut");
    let mut n = 0;
    for v in ["example.com", "shop.example.org", "blog.example.net"] {
        let log = std::fs::read_to_string(dir.path().join(format!("vhosts/{v}/logs/access_log")))
            .unwrap();
        let keep: String = log
            .lines()
            .filter(|l| {
                let hms = &l.split("/2026:").nth(1).unwrap()[..8];
                let sec: u32 =
                    hms[3..5].parse::<u32>().unwrap() * 60 + hms[6..8].parse::<u32>().unwrap();
                (20..40).contains(&sec)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        n += keep.lines().count();
        let d = cut.join(format!("vhosts/{v}/logs"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("access_log"), keep).unwrap();
    }
    let cut_glob = cut.join("vhosts/*/logs/access_log").display().to_string();
    let windowed = analyze_json(&[
        "--since", since, "--until", until, "--rates", rates, "--bursts", "20,100", &glob,
    ]);
    let whole_cut = analyze_json(&["--rates", rates, "--bursts", "20,100", &cut_glob]);
    assert_eq!(windowed["hits"], n as u64);
    assert_eq!(windowed["what_if"], whole_cut["what_if"]);
    for c in windowed["what_if"].as_array().unwrap() {
        let replay = floodwatch(&[
            "replay",
            "--no-progress",
            "--rate",
            c["rate"].as_str().unwrap(),
            "--burst",
            &c["burst"].to_string(),
            &cut_glob,
        ]);
        assert_eq!(strings(&c["keys"]), banned_by(&replay, None));
    }
}

/// Nothing to report is an error that says why, never an empty success.
#[test]
fn analyze_refuses_empty_archives_and_windows() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let out = floodwatch(&["analyze", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the archive is empty"), "{err}");

    generate(dir.path(), "get-flood", 20, 1);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let out = floodwatch(&["analyze", "--since", "2030-01-01T00:00:00Z", &glob]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lies in the window 2030-01-01T00:00:00Z"),
        "{err}"
    );
    let out = floodwatch(&["analyze", "--since", "yesterday", &glob]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since: \"yesterday\" is not a time"));
}

/// Whether `key` (an address or a prefix, as events spell it) covers the address `addr`.
fn covers(key: &str, addr: &str) -> bool {
    let (net, len) = key.split_once('/').unwrap_or((key, ""));
    let (Ok(net), Ok(addr)) = (
        net.parse::<std::net::IpAddr>(),
        addr.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    let bits = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32u32),
        std::net::IpAddr::V6(v) => (u128::from(v), 128u32),
    };
    let ((n, nw), (a, aw)) = (bits(net), bits(addr));
    if nw != aw {
        return false;
    }
    let len: u32 = len.parse().unwrap_or(nw);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (n & mask) == (a & mask)
}

/// `--suggest` on every scenario, two seeds: the suggested `[[rule]]` blocks, pasted into the
/// scenario's config in place of its rules and replayed, ban every attacker of the truth and
/// nothing else covering a must-not key (heavy-steady's partner API included); a rule with no
/// suggestion says why.
#[test]
fn analyze_suggestions_ban_the_attackers_and_spare_the_rest() {
    for scenario in [
        "background",
        "get-flood",
        "distributed",
        "ipv6-rotation",
        "wp-login",
        "heavy-steady",
        "cloudflare",
        "mixed",
    ] {
        for (seconds, seed) in [(60, 1), (120, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let truth = generate(dir.path(), scenario, seconds, seed);
            let own = dir.path().join("floodwatch.toml");
            let text = std::fs::read_to_string(&own).unwrap();
            let report = analyze_json(&["--suggest", "--config", own.to_str().unwrap()]);
            let mut blocks = String::new();
            for g in report["grids"].as_array().unwrap() {
                let s = &g["suggestion"];
                if let Some(t) = s["toml"].as_str() {
                    blocks.push('\n');
                    blocks.push_str(t);
                } else {
                    let why = s["none"].as_str().unwrap();
                    assert!(why.starts_with("no "), "{scenario}: {why}");
                }
            }
            let attackers = strings(&truth["banned"]);
            let spared = strings(&truth["not_banned"]);
            if attackers.is_empty() {
                // Nothing to separate: the tool says so for every rule.
                assert!(blocks.is_empty(), "{scenario} seed {seed}: {blocks}");
                continue;
            }
            let head = text.split("\n[[rule]]").next().unwrap();
            let proxy = text.find("\n[proxy]").map_or("", |i| &text[i..]);
            let suggested = dir.path().join("suggested.toml");
            std::fs::write(&suggested, format!("{head}\n{blocks}\n{proxy}")).unwrap();
            let replay = floodwatch(&[
                "replay",
                "--no-progress",
                "--config",
                suggested.to_str().unwrap(),
            ]);
            let bans = banned_by(&replay, None);
            for a in &attackers {
                assert!(
                    bans.contains(a),
                    "{scenario} seed {seed}: {a} not banned by\n{blocks}\nbans {bans:?}"
                );
            }
            // The truth's own attacker prefixes cover some must-not addresses (the /24 of the
            // distributed bots): those are meant; any other ban must cover none.
            for b in bans.iter().filter(|b| !attackers.contains(b)) {
                for s in &spared {
                    assert!(
                        !covers(b, s),
                        "{scenario} seed {seed}: {b} bans must-not {s}\n{blocks}"
                    );
                }
            }
        }
    }
    // The partner API stands out in volume, not in its busiest second: no rule is suggested
    // against it, and the tool says it cannot separate.
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "heavy-steady", 120, 1);
    let own = dir.path().join("floodwatch.toml");
    let out = floodwatch(&["analyze", "--suggest", "--config", own.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&ok(&out).stdout).to_string();
    assert!(
        text.contains("rule default: no suggestion: no key stands apart"),
        "{text}"
    );
    assert!(!text.contains("[[rule]]"), "{text}");
}
