//! The report's charts as plain inline SVG: requests per second per vhost with the bans marked,
//! the ban timeline, and the what-if grid's heat map. No script, nothing fetched; every text
//! that comes from a log goes through [`esc`].

use std::fmt::Write as _;

/// Text made safe inside HTML/XML, attribute values included; characters XML forbids (control
/// characters other than tab and newline) become U+FFFD, so that the page stays well-formed
/// whatever a log line held.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() || ('\u{FFFE}'..='\u{FFFF}').contains(&c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `s`, with an ellipsis when cut (bounds the page whatever the log).
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Distinct colours for series (the last one, grey, for "other").
pub const PALETTE: [&str; 11] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#393b79", "#aaaaaa",
];

const W: f64 = 900.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 30.0;

fn hhmm(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    format!(
        "{:02}:{:02}:{:02}",
        s.rem_euclid(86_400) / 3600,
        s.rem_euclid(3600) / 60,
        s.rem_euclid(60)
    )
}

/// One named series of (time ms, value) points.
pub struct Line {
    pub name: String,
    pub points: Vec<(i64, f64)>,
}

/// A line chart over `[t0, t1]` with red ticks at `marks` (ban times) along the time axis.
pub fn lines(series: &[Line], t0: i64, t1: i64, marks: &[i64], y_label: &str) -> String {
    let span = (t1 - t0).max(1) as f64;
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let x = |t: i64| LEFT + (t - t0) as f64 / span * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / ymax * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    );
    let _ = write!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>"
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let (x2, yy, tx) = (W - RIGHT, y(v), LEFT - 4.0);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#dddddd\"/><text x=\"{tx}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.0}</text>",
            yy + 4.0,
        );
    }
    for i in 0..=4 {
        let t = t0 + ((t1 - t0) as f64 * f64::from(i) / 4.0) as i64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(t),
            H - 10.0,
            hhmm(t)
        );
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"{}\" font-size=\"11\" transform=\"rotate(-90 12 {0})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        esc(y_label)
    );
    for m in marks {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#d62728\" stroke-width=\"2\"/>",
            x(*m),
            H - BOTTOM,
            H - BOTTOM + 8.0
        );
    }
    for (i, line) in series.iter().enumerate() {
        let mut pts = String::new();
        for &(t, v) in &line.points {
            let _ = write!(pts, "{:.1},{:.1} ", x(t), y(v));
        }
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            PALETTE[i.min(PALETTE.len() - 1)],
            pts.trim_end(),
            esc(&line.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The ban timeline: one row per rule, a dot per ban at its time.
pub fn timeline(rules: &[String], bans: &[(usize, i64)], t0: i64, t1: i64) -> String {
    let row = 26.0;
    let h = BOTTOM + TOP + row * rules.len().max(1) as f64;
    let left = 140.0;
    let span = (t1 - t0).max(1) as f64;
    let x = |t: i64| left + (t - t0) as f64 / span * (W - left - RIGHT);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\">"
    );
    let _ = write!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{h}\" fill=\"#ffffff\"/>"
    );
    for (i, name) in rules.iter().enumerate() {
        let yy = TOP + row * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text><line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#dddddd\"/>",
            left - 6.0,
            yy + 4.0,
            esc(&cut(name, 20)),
            W - RIGHT
        );
    }
    for &(r, t) in bans {
        let yy = TOP + row * (r as f64 + 0.5);
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{yy:.1}\" r=\"4\" fill=\"#d62728\" fill-opacity=\"0.6\"/>",
            x(t)
        );
    }
    for i in 0..=4 {
        let t = t0 + ((t1 - t0) as f64 * f64::from(i) / 4.0) as i64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(t),
            h - 10.0,
            hhmm(t)
        );
    }
    s.push_str("</svg>");
    s
}

/// A heat map of a grid: `cells[r][b]` keys banned, coloured by the share of requests they sent,
/// the configured cell outlined.
pub fn heat(
    rates: &[String],
    bursts: &[u32],
    cells: &[Vec<(usize, f64)>],
    configured: Option<(usize, usize)>,
) -> String {
    let (cw, ch, left, top) = (70.0, 24.0, 80.0, 24.0);
    let w = left + cw * bursts.len() as f64 + 10.0;
    let h = top + ch * rates.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">"
    );
    let _ = write!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>"
    );
    for (b, burst) in bursts.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"16\" font-size=\"11\" text-anchor=\"middle\">burst {burst}</text>",
            left + cw * (b as f64 + 0.5)
        );
    }
    for (r, rate) in rates.iter().enumerate() {
        let yy = top + ch * r as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            yy + 16.0,
            esc(rate)
        );
        for (b, &(n, share)) in cells.get(r).map_or(&[][..], |v| &v[..]).iter().enumerate() {
            // White (nothing banned) to deep red (everything).
            let k = share.clamp(0.0, 1.0);
            let g = (235.0 - 190.0 * k.sqrt()) as u8;
            let fill = if n == 0 {
                "#f4f4f4".to_string()
            } else {
                format!("#{:02x}{:02x}{:02x}", 250, g, g)
            };
            let xx = left + cw * b as f64;
            let outline = if configured == Some((r, b)) {
                "stroke=\"#000000\" stroke-width=\"3\""
            } else {
                "stroke=\"#ffffff\""
            };
            let _ = write!(
                s,
                "<rect x=\"{xx:.1}\" y=\"{yy:.1}\" width=\"{cw}\" height=\"{ch}\" fill=\"{fill}\" {outline}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{n}</text>",
                xx + cw / 2.0,
                yy + 16.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_forbidden_characters() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{1b}[31m"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{FFFD}[31m"
        );
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
