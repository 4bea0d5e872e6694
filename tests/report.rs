//! `floodwatch report` through the binary: a well-formed page whose figures are `analyze
//! --json`'s, hostile log text escaped, bounded size, a real headless Chromium rendering it, and
//! clear failures that never leave a partial page.

mod util;
use util::{floodwatch, ok, skip_unless_ci};

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;
use serde_json::Value;

fn generate(dir: &Path, scenario: &str, seconds: u32, seed: u64) {
    ok(&floodwatch(&[
        "generate",
        "--scenario",
        scenario,
        "--seconds",
        &seconds.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        dir.to_str().unwrap(),
    ]));
}

/// What the tests read back from a page: the `data-figure` texts in document order, and per
/// grid table (`id`), the ban count of each (rate, burst) cell.
#[derive(Default, Debug)]
struct Page {
    figures: Vec<(String, String)>,
    cells: BTreeMap<(String, String, String), String>,
}

/// Parses the page as XML (strict: every element closed, names matched, entities known) and
/// collects its figures. Panics on any error: the page must be well-formed.
fn parse(html: &str) -> Page {
    let mut r = quick_xml::Reader::from_str(html);
    r.config_mut().check_end_names = true;
    let mut page = Page::default();
    let mut stack: Vec<String> = Vec::new();
    let (mut grid, mut cell): (String, Option<(String, String)>) = (String::new(), None);
    let mut figure: Option<String> = None;
    loop {
        match r
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed at {}: {e}", r.buffer_position()))
        {
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attr = |k: &str| {
                    e.try_get_attribute(k)
                        .unwrap()
                        .map(|a| a.unescape_value().unwrap().into_owned())
                };
                if name == "table" {
                    grid = attr("id").unwrap_or_default();
                }
                if let (Some(rate), Some(burst)) = (attr("data-rate"), attr("data-burst")) {
                    cell = Some((rate, burst));
                }
                figure = attr("data-figure");
                stack.push(name);
            }
            Event::End(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()));
                if name == "td" {
                    cell = None;
                }
                figure = None;
            }
            Event::Text(t) => {
                if let Some(f) = figure.take() {
                    let text = t.unescape().unwrap().into_owned();
                    if let (Some((rate, burst)), "bans") = (&cell, f.as_str()) {
                        page.cells
                            .insert((grid.clone(), rate.clone(), burst.clone()), text.clone());
                    }
                    page.figures.push((f, text));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    page
}

fn figure<'a>(p: &'a Page, name: &str) -> Vec<&'a str> {
    p.figures
        .iter()
        .filter(|(f, _)| f == name)
        .map(|(_, t)| t.as_str())
        .collect()
}

#[test]
fn report_is_well_formed_and_its_figures_are_analyzes() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "mixed", 60, 3);
    let cfg = dir.path().join("floodwatch.toml");
    let cfg = cfg.to_str().unwrap();
    let out = dir.path().join("report.html");
    ok(&floodwatch(&[
        "report",
        "--config",
        cfg,
        "--out",
        out.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );
    let page = parse(&html);
    let json: Value = serde_json::from_slice(
        &ok(&floodwatch(&[
            "analyze",
            "--json",
            "--suggest",
            "--top",
            "25",
            "--config",
            cfg,
        ]))
        .stdout,
    )
    .unwrap();
    for f in ["lines", "hits", "malformed", "keys"] {
        assert_eq!(figure(&page, f), [json[f].to_string()], "{f}");
    }
    let keys: Vec<String> = json["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(figure(&page, "key"), keys);
    let requests: Vec<String> = json["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["requests"].to_string())
        .collect();
    assert_eq!(figure(&page, "requests"), requests);
    // Every grid cell: the number of keys banned.
    let grids = json["grids"].as_array().unwrap();
    assert_eq!(grids.len(), 3);
    let mut n = 0;
    for (i, g) in grids.iter().enumerate() {
        for c in g["cells"].as_array().unwrap() {
            let at = (
                format!("grid-{i}"),
                c["rate"].as_str().unwrap().to_string(),
                c["burst"].to_string(),
            );
            assert_eq!(
                page.cells.get(&at).map(String::as_str),
                Some(c["bans"].to_string().as_str()),
                "{at:?}"
            );
            n += 1;
        }
    }
    assert_eq!(page.cells.len(), n);
    // The ban timeline, and the suggestions' [[rule]] blocks.
    let bans = json["bans"].as_array().unwrap().len();
    assert!(bans >= 4);
    assert!(figure(&page, "bans").contains(&bans.to_string().as_str()));
    for g in grids {
        if let Some(t) = g["suggestion"]["toml"].as_str() {
            assert!(html.contains(&t.replace('"', "&quot;")), "{t}");
        }
    }
}

/// A log whose user agents, paths and vhosts try markup, quotes and bytes that are not UTF-8.
fn hostile_log(path: &Path) {
    let mut log: Vec<u8> = Vec::new();
    let agents: [&[u8]; 4] = [
        b"<script>alert(1)</script>",
        b"\"><img src=x onerror=alert(1)>",
        b"bad \xff\xfe utf-8 \x1b[31m",
        b"x' onmouseover='alert(1)",
    ];
    for (i, agent) in agents.iter().enumerate() {
        for s in 0..30 {
            for _ in 0..50 {
                log.extend_from_slice(
                    format!(
                        "<b>evil{i}.example\"q\" 192.0.2.{} - - [20/Nov/2026:10:00:{s:02} +0000] \"GET /<script>?a=\\\"&b=</textarea> HTTP/1.1\" 200 5 \"-\" \"",
                        i + 1
                    )
                    .as_bytes(),
                );
                log.extend_from_slice(agent);
                log.extend_from_slice(b"\"\n");
            }
        }
    }
    std::fs::write(path, log).unwrap();
}

#[test]
fn report_escapes_hostile_log_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    hostile_log(&log);
    let cfg = dir.path().join("c.toml");
    // A vhost field that is free text: the first token of the line (nginx's $host).
    std::fs::write(
        &cfg,
        "[input]\nformat = '''nginx:$host $remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"'''\n",
    )
    .unwrap();
    let out = dir.path().join("r.html");
    let run = floodwatch(&[
        "report",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    ok(&run);
    let html = std::fs::read_to_string(&out).unwrap();
    parse(&html);
    for raw in ["<script", "<img", "</textarea", "onmouseover='", "\u{1b}"] {
        assert!(!html.contains(raw), "{raw} unescaped");
    }
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the agent is shown, escaped"
    );
    assert!(
        html.contains("bad \u{FFFD}\u{FFFD} utf-8"),
        "invalid UTF-8 replaced"
    );
    // The analysis saw the floods: four keys banned at the default threshold.
    let json: Value = serde_json::from_slice(
        &ok(&floodwatch(&[
            "analyze",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
            log.to_str().unwrap(),
        ]))
        .stdout,
    )
    .unwrap();
    assert_eq!(json["bans"].as_array().unwrap().len(), 4);
}

/// Many keys, vhosts and bans: the page stays under 2 MB (lists capped, charts thinned).
#[test]
fn report_stays_small_whatever_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = String::new();
    for k in 0..20_000u32 {
        let (a, b) = (k / 250, k % 250 + 1);
        for _ in 0..8 {
            text.push_str(&format!(
                "vhost-{}.example.org 10.{a}.{b}.1 - - [20/Nov/2026:1{}:{:02}:{:02} +0000] \"GET /item/{k} HTTP/1.1\" 200 5 \"-\" \"agent {k}\"\n",
                k % 700,
                k % 10 / 5,
                k / 60 % 60,
                k % 60
            ));
        }
    }
    std::fs::write(&log, text).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[input]\nformat = \"vhost_combined\"\n\n[[rule]]\nname = \"tight\"\nrate = \"1r/s\"\nburst = 5\n",
    )
    .unwrap();
    let out = dir.path().join("r.html");
    ok(&floodwatch(&[
        "report",
        "--by-vhost",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        log.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&out).unwrap();
    parse(&html);
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    assert!(
        html.contains("20000</span> bans"),
        "every key banned, the count shown"
    );
}

#[test]
fn chromium_renders_the_report() {
    let chromium = Path::new("/usr/bin/chromium");
    if skip_unless_ci((!chromium.exists()).then_some("/usr/bin/chromium")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "get-flood", 40, 2);
    let cfg = dir.path().join("floodwatch.toml");
    let out = dir.path().join("report.html");
    ok(&floodwatch(&[
        "report",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let shot = dir.path().join("shot.png");
    let run = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", out.display()),
        ])
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let first = &pixels[..px];
    let differ = pixels.chunks(px).filter(|p| p != &first).count();
    assert!(
        differ > 1000,
        "the screenshot is blank: {differ} pixels differ"
    );
}

#[test]
fn nothing_to_report_fails_clearly_and_leaves_no_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    std::fs::write(&out, "old").unwrap();
    let out_s = out.to_str().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let run = floodwatch(&["report", "--out", out_s, empty.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        util::stderr(&run).contains("the archive is empty"),
        "{}",
        util::stderr(&run)
    );

    generate(dir.path(), "get-flood", 20, 1);
    let glob = dir
        .path()
        .join("vhosts/*/logs/access_log")
        .display()
        .to_string();
    let run = floodwatch(&[
        "report",
        "--since",
        "2030-01-01T00:00:00Z",
        "--out",
        out_s,
        &glob,
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        util::stderr(&run).contains("lies in the window"),
        "{}",
        util::stderr(&run)
    );

    // An unreadable file (a directory where a log should be) is named.
    let bad = dir.path().join("not-a-file.log");
    std::fs::create_dir(&bad).unwrap();
    let run = floodwatch(&["report", "--out", out_s, bad.to_str().unwrap()]);
    assert_ne!(run.status.code(), Some(0));
    assert!(
        util::stderr(&run).contains("not-a-file.log"),
        "{}",
        util::stderr(&run)
    );

    // Every failure left the old file alone and no temporary file behind.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // And a good run replaces it.
    ok(&floodwatch(&["report", "--out", out_s, &glob]));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("<!DOCTYPE html>"));
}
