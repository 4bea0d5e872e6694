//! `floodwatch report`: one self-contained HTML page of an archive, from the same analysis as
//! `analyze` (its figures are `analyze --json`'s): requests per second per vhost with the bans
//! marked, the top keys, the ban timeline, the what-if grids as tables and heat maps, and
//! the suggestions.
//!
//! The page is XHTML-compatible HTML (well-formed XML, parsed as such by the tests), with inline
//! SVG and CSS only: no script, nothing fetched. Every text from a log is escaped. Its size is
//! bounded whatever the archive: lists are capped (talkers, bans, files, keys per cell), texts cut,
//! charts thinned to a fixed number of points. It is written to a temporary file renamed over
//! the target, so a failed run never leaves a partial page.

use std::fmt::Write as _;
use std::path::Path;

use super::analyze::{self, time, Analysis, GridOut, SuggestionOut};
use super::svg::{self, cut, esc, Line};
use crate::error::Error;
use crate::hit::VhostId;

/// Vhosts drawn on their own in the requests chart; the rest are summed.
pub const VHOSTS_DRAWN: usize = 10;
/// Points per chart line at most.
pub const POINTS: i64 = 600;
/// Bans listed in the table (all are on the timeline, which is bounded by its pixels).
pub const BANS_LISTED: usize = 200;
/// Bans drawn at most on the timeline and as marks on the requests chart.
pub const BANS_DRAWN: usize = 2000;
/// Files listed in the header (those with the most unusable lines first).
pub const FILES_LISTED: usize = 50;
/// Keys named per grid cell.
pub const KEYS_PER_CELL: usize = 10;
/// Characters kept of a user agent, path or vhost.
pub const TEXT: usize = 160;
/// A file's share of malformed or unusable lines shown from this.
pub const BAD_SHARE: f64 = 0.01;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 6px;\
font-size:13px;vertical-align:top}th{background:#f0f0f0}td.n{text-align:right}\
.small{font-size:12px;color:#555}.warn{color:#a00}pre{background:#f6f6f6;padding:.6em}\
td.conf{outline:3px solid #000}h2{margin-top:1.6em}";

/// Requests per second of each drawn vhost (and "other"), thinned to at most [`POINTS`] bins.
fn request_lines(a: &Analysis) -> Vec<Line> {
    let mut per_vhost: ahash::AHashMap<VhostId, u64> = ahash::AHashMap::new();
    for ((v, _), n) in &a.series.counts {
        *per_vhost.entry(*v).or_default() += n;
    }
    let mut order: Vec<(VhostId, u64)> = per_vhost.into_iter().collect();
    order.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let drawn: Vec<VhostId> = order.iter().take(VHOSTS_DRAWN).map(|e| e.0).collect();
    let span_s = ((a.last_ms - a.first_ms) / 1000).max(1);
    let bin_s = a.series.bin_s.max((span_s + POINTS - 1) / POINTS).max(1);
    let first_bin = a.first_ms.div_euclid(1000).div_euclid(bin_s);
    let last_bin = a.last_ms.div_euclid(1000).div_euclid(bin_s);
    let n_bins = (last_bin - first_bin + 1).max(1) as usize;
    let mut grid = vec![vec![0u64; n_bins]; drawn.len() + 1];
    for ((v, bin), n) in &a.series.counts {
        let sec = bin * a.series.bin_s;
        let b = (sec.div_euclid(bin_s) - first_bin).clamp(0, n_bins as i64 - 1) as usize;
        let row = drawn.iter().position(|d| d == v).unwrap_or(drawn.len());
        grid[row][b] += n;
    }
    let name = |v: VhostId| {
        a.vhosts
            .name(v)
            .map_or("(no vhost)".to_string(), |n| cut(&n, 60))
    };
    let mut out: Vec<Line> = Vec::new();
    for (row, counts) in grid.into_iter().enumerate() {
        let label = match drawn.get(row) {
            Some(&v) => name(v),
            None if order.len() > drawn.len() => {
                format!("other {} vhosts", order.len() - drawn.len())
            }
            None => continue,
        };
        out.push(Line {
            name: label,
            points: counts
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let t = (first_bin + i as i64) * bin_s * 1000;
                    (t, n as f64 / bin_s as f64)
                })
                .collect(),
        });
    }
    out
}

fn header(h: &mut String, a: &Analysis) {
    let files = a.files.len();
    let _ = write!(
        h,
        "<table id=\"summary\"><tr><th>lines</th><td class=\"n\" data-figure=\"lines\">{}</td></tr>\
         <tr><th>files</th><td class=\"n\" data-figure=\"files\">{files}</td></tr>\
         <tr><th>requests counted by rule {}</th><td class=\"n\" data-figure=\"hits\">{}</td></tr>\
         <tr><th>malformed lines</th><td class=\"n\" data-figure=\"malformed\">{}</td></tr>\
         <tr><th>keys</th><td class=\"n\" data-figure=\"keys\">{}</td></tr>\
         <tr><th>time span</th><td>{} .. {}</td></tr>",
        a.ingest.lines,
        esc(&a.rule),
        a.ingest.hits,
        a.ingest.malformed.total(),
        a.keys,
        time(a.first_ms),
        time(a.last_ms)
    );
    if a.window.is_bounded() {
        let _ = write!(
            h,
            "<tr><th>window</th><td>{}</td></tr>",
            esc(&analyze::window_text(&a.window))
        );
    }
    h.push_str("</table>");
    let mut bad: Vec<_> = a
        .files
        .iter()
        .filter(|f| f.bad_share() >= BAD_SHARE)
        .collect();
    bad.sort_by(|x, y| y.bad_share().total_cmp(&x.bad_share()));
    if !bad.is_empty() {
        h.push_str(
            "<p class=\"warn\">Files with many lines that could not be used (malformed, or no \
             client address):</p><table><tr><th>file</th><th>lines</th><th>unusable</th></tr>",
        );
        for f in bad.iter().take(FILES_LISTED) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1} %</td></tr>",
                esc(&cut(&f.path.display().to_string(), TEXT)),
                f.lines,
                f.bad_share() * 100.0
            );
        }
        if bad.len() > FILES_LISTED {
            let _ = write!(
                h,
                "<tr><td colspan=\"3\">and {} more</td></tr>",
                bad.len() - FILES_LISTED
            );
        }
        h.push_str("</table>");
    }
    if a.late > 0 {
        let _ = write!(
            h,
            "<p class=\"warn\">{} lines come later than [input] lateness allows; replay counts \
             them late, so the grid may differ from it for their keys.</p>",
            a.late
        );
    }
}

fn talkers(h: &mut String, a: &Analysis) {
    let _ = write!(
        h,
        "<h2>Top keys of rule {}</h2><table id=\"talkers\"><tr><th>key</th><th>requests</th>\
         <th>peak 1 s</th><th>peak 10 s</th><th>peak 60 s</th><th>vhost</th><th>user agent</th>\
         <th>top paths</th><th>banned</th></tr>",
        esc(&a.rule)
    );
    for t in &a.top {
        let k = &t.peaks;
        let paths: Vec<String> = t
            .paths
            .iter()
            .map(|(p, n)| format!("{} ({n})", esc(&cut(p, TEXT))))
            .collect();
        let agent = t
            .agents
            .first()
            .map_or(String::new(), |(u, _)| esc(&cut(u, TEXT)));
        let crawler = t.crawler.map_or(String::new(), |c| {
            format!(" <b class=\"warn\">[crawler: {}]</b>", esc(c))
        });
        let _ = write!(
            h,
            "<tr class=\"talker\"><td data-figure=\"key\">{}</td><td class=\"n\" data-figure=\"requests\">{}</td>\
             <td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td>{}</td>\
             <td class=\"small\">{agent}{crawler}</td><td class=\"small\">{}</td><td>{}</td></tr>",
            esc(&k.key.to_string()),
            k.requests,
            k.peak_rps(0),
            k.peak_rps(1),
            k.peak_rps(2),
            esc(&cut(t.vhost.as_deref().unwrap_or("-"), 60)),
            paths.join("<br/>"),
            t.banned_ms.map_or("no".to_string(), time)
        );
    }
    h.push_str("</table>");
}

fn bans(h: &mut String, a: &Analysis, rules: &[String]) {
    let _ = write!(
        h,
        "<h2>Ban timeline</h2><p>What <code>replay --config</code> decides with the configured \
         rules: <span data-figure=\"bans\">{}</span> bans.</p>",
        a.bans.len()
    );
    let dots: Vec<(usize, i64)> = a
        .bans
        .iter()
        .take(BANS_DRAWN)
        .map(|b| {
            (
                rules.iter().position(|r| **r == *b.rule).unwrap_or(0),
                b.time_ms,
            )
        })
        .collect();
    h.push_str(&svg::timeline(
        rules,
        &dots,
        a.first_ms,
        a.last_ms.max(a.first_ms + 1000),
    ));
    if a.bans.is_empty() {
        return;
    }
    h.push_str("<table id=\"bans\"><tr><th>time</th><th>key</th><th>rule</th><th>vhost</th><th>until</th><th>offense</th></tr>");
    for b in a.bans.iter().take(BANS_LISTED) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            time(b.time_ms),
            esc(&b.key.net.to_string()),
            esc(&b.rule),
            esc(&cut(b.vhost.as_deref().unwrap_or("-"), 60)),
            time(b.until_ms),
            b.offense
        );
    }
    if a.bans.len() > BANS_LISTED {
        let _ = write!(
            h,
            "<tr><td colspan=\"6\">and {} more</td></tr>",
            a.bans.len() - BANS_LISTED
        );
    }
    h.push_str("</table>");
}

fn grid(h: &mut String, g: &GridOut, n: usize) {
    let scope = match &g.vhost {
        Some(v) => format!("rule {} on vhost {}", esc(&g.rule), esc(&cut(v, 60))),
        None => format!("rule {}", esc(&g.rule)),
    };
    let _ = write!(
        h,
        "<h2>What-if: {scope}</h2><p>Keys banned per rate and burst (configured: {} burst {}, \
         outlined), coloured by their share of the {} requests.</p>",
        esc(&g.configured.0),
        g.configured.1,
        g.requests
    );
    let conf = g.rates.iter().enumerate().find_map(|(r, rate)| {
        let b = g.bursts.iter().position(|&b| b == g.configured.1)?;
        (rate == &g.configured.0).then_some((r, b))
    });
    let cells: Vec<Vec<(usize, f64)>> = (0..g.rates.len())
        .map(|r| {
            (0..g.bursts.len())
                .map(|b| (g.cell(r, b).keys.len(), g.cell(r, b).share))
                .collect()
        })
        .collect();
    h.push_str(&svg::heat(&g.rates, &g.bursts, &cells, conf));
    let _ = write!(
        h,
        "<table class=\"grid\" id=\"grid-{n}\"><tr><th>rate \\ burst</th>"
    );
    for b in &g.bursts {
        let _ = write!(h, "<th>{b}</th>");
    }
    h.push_str("</tr>");
    for (r, rate) in g.rates.iter().enumerate() {
        let _ = write!(h, "<tr><th>{}</th>", esc(rate));
        for (b, burst) in g.bursts.iter().enumerate() {
            let c = g.cell(r, b);
            let class = if conf == Some((r, b)) {
                " class=\"conf\""
            } else {
                ""
            };
            let mut keys: Vec<String> = c.keys.iter().take(KEYS_PER_CELL).map(|k| esc(k)).collect();
            if c.keys.len() > KEYS_PER_CELL {
                keys.push(format!("+{} more", c.keys.len() - KEYS_PER_CELL));
            }
            let crawlers = if c.crawlers.is_empty() {
                String::new()
            } else {
                format!(" <b class=\"warn\">{} crawler(s)</b>", c.crawlers.len())
            };
            let _ = write!(
                h,
                "<td{class} data-rate=\"{}\" data-burst=\"{burst}\"><b data-figure=\"bans\">{}</b> \
                 ({:.1} %){crawlers}<br/><span class=\"small\">{}</span></td>",
                esc(rate),
                c.keys.len(),
                c.share * 100.0,
                keys.join(" ")
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    match &g.suggestion {
        None => {}
        Some(SuggestionOut::None { reason }) => {
            let _ = write!(h, "<p><b>Suggestion:</b> none: {}.</p>", esc(reason));
        }
        Some(SuggestionOut::Cell {
            rate,
            burst,
            keys,
            evidence: e,
            toml,
        }) => {
            let w = |v: [f64; 3]| format!("{:.1} / {:.1} / {:.1}", v[0], v[1], v[2]);
            let _ =
                write!(
                h,
                "<p><b>Suggestion:</b> {} burst {burst}, banning {} key(s): {}. Peaks over 1 s / \
                 10 s / 60 s (requests/s): lowest banned key {}, other keys' p99.9 {}, their \
                 max {}.</p><pre>{}</pre>",
                esc(rate),
                keys.len(),
                keys.iter().take(KEYS_PER_CELL).map(|k| esc(k)).collect::<Vec<_>>().join(" "),
                w(e.banned_min),
                w(e.others_p999),
                w(e.others_max),
                esc(toml)
            );
        }
    }
}

/// The page.
pub fn html(a: &Analysis) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head>\
         <meta charset=\"utf-8\"/><title>floodwatch report: {} .. {}</title><style>{STYLE}</style>\
         </head><body><h1>floodwatch report</h1>",
        time(a.first_ms),
        time(a.last_ms)
    );
    header(&mut h, a);
    let mut rules: Vec<String> = Vec::new();
    for g in &a.grids {
        if !rules.contains(&g.rule) {
            rules.push(g.rule.clone());
        }
    }
    let marks: Vec<i64> = a.bans.iter().take(BANS_DRAWN).map(|b| b.time_ms).collect();
    let lines = request_lines(a);
    h.push_str(
        "<h2>Requests per second per vhost</h2><p>The busiest vhosts, the rest summed; red ticks \
         on the time axis mark the configured rules' bans.</p>",
    );
    h.push_str(&svg::lines(
        &lines,
        a.first_ms,
        a.last_ms.max(a.first_ms + 1000),
        &marks,
        "requests/s",
    ));
    h.push_str("<p class=\"small\">");
    for (i, l) in lines.iter().enumerate() {
        let _ = write!(
            h,
            "<span style=\"color:{}\">■</span> {} ",
            svg::PALETTE[i.min(svg::PALETTE.len() - 1)],
            esc(&l.name)
        );
    }
    h.push_str("</p>");
    talkers(&mut h, a);
    bans(&mut h, a, &rules);
    for (n, g) in a.grids.iter().enumerate() {
        grid(&mut h, g, n);
    }
    let _ = writeln!(
        h,
        "<p class=\"small\">Suggestions: {}. With the one-second timestamps of most access logs, \
         all requests of one second arrive at once, so the burst is in effect a cap per second: \
         more than burst + 1 requests logged in one second overflow whatever the rate.</p>\
         </body></html>",
        esc(&super::suggest::rule_text())
    );
    h
}

/// Writes the page to `out` through a temporary file renamed over it.
pub fn write(a: &Analysis, out: &Path) -> Result<usize, Error> {
    let page = html(a);
    crate::atomic_file::replace(out, page.as_bytes()).map_err(Error::file(out))?;
    Ok(page.len())
}
