//! `analyze --suggest`: the tightest cell of a grid that bans only keys standing clearly apart
//! from the rest of the traffic, or a plain "cannot separate" when no cell does.
//!
//! The rule, in the order it is checked for each cell (rates from the lowest, then bursts from
//! the lowest; the first cell passing every check is the suggestion):
//! 1. the cell bans at least one key, and no key whose user agent names a well-known crawler;
//! 2. **apart**: on both the 1 s and the 10 s window, every banned key's peak rate is at least
//!    [`GAP`] times the 99.9th percentile of the other keys' peaks. The 1 s window is what keeps a
//!    steady heavy client (a partner's API sync at a rate browsers reach in their busiest second)
//!    from counting as apart: its volume stands out, its busiest second does not. The 60 s window
//!    is shown, not judged: an attack shorter than a minute dilutes in it;
//! 3. **headroom**: the same rule at half the rate and half the burst bans no other key, so the
//!    traffic it keeps is at least twice below the threshold (exact, through the same buckets).
//!
//! Heuristics, stated as such: a suggestion is evidence to read, printed beside it, not a verdict.

use std::fmt::Write as _;

use super::grid::{self, Grid};
use super::peaks::{KeyPeaks, WINDOWS};
use super::scan::KeyHits;
use crate::config::fmt_ms;
use crate::decide::allowlist::Allowlist;
use crate::engine::RuleSpec;

/// How many times the other keys' p99.9 peak a banned key's peak must reach, on each judged
/// window.
pub const GAP: f64 = 2.0;
/// The windows judged (indices into [`WINDOWS`]): 1 s and 10 s.
pub const JUDGED: [usize; 2] = [0, 1];
/// The quantile of the other keys' peaks compared with.
pub const QUANTILE: f64 = 0.999;

/// The evidence beside a suggestion (rates in requests per second, per window of [`WINDOWS`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// The lowest peak among the banned keys.
    pub banned_min: [f64; 3],
    /// The other keys' p99.9 and highest peak.
    pub others_p999: [f64; 3],
    pub others_max: [f64; 3],
    pub others: usize,
}

/// The outcome for one grid.
#[derive(Clone, Debug, PartialEq)]
pub enum Suggestion {
    /// Cell (rate index, burst index) of the grid, with its evidence.
    Cell {
        rate: usize,
        burst: usize,
        evidence: Evidence,
    },
    /// No cell passes; why, in words.
    None { reason: String },
}

/// The rule used, in one sentence (printed with every suggestion).
pub fn rule_text() -> String {
    format!(
        "the tightest cell whose banned keys all peak at least {GAP}x the other keys' p{} over both \
         1 s and 10 s, that bans no crawler, and that bans no other key at \
         half its rate and burst",
        QUANTILE * 100.0
    )
}

/// Nearest-rank quantile of `v` (sorted in place); 0 when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Chooses the cell of `grid` (see the module documentation). `peaks[i]` are the figures of
/// `keys[i]` within the grid's scope (`None` when the key has no request there).
pub fn suggest(
    grid: &Grid,
    keys: &[KeyHits],
    peaks: &[Option<KeyPeaks>],
    spec: &RuleSpec,
    allow: &Allowlist,
) -> Suggestion {
    let mut rates: Vec<usize> = (0..grid.rates.len()).collect();
    rates.sort_by_key(|&r| grid.rates[r].milli_per_sec);
    let mut bursts: Vec<usize> = (0..grid.bursts.len()).collect();
    bursts.sort_by_key(|&b| grid.bursts[b]);
    let mut any_banned = false;
    let mut closest: Option<String> = None;
    for &r in &rates {
        for &b in &bursts {
            let cell = grid.cell(r, b);
            if cell.banned.is_empty() {
                continue;
            }
            any_banned = true;
            if let Some(&i) = cell.banned.iter().find(|&&i| keys[i].crawler.is_some()) {
                closest.get_or_insert(format!(
                    "{} burst {} would ban {}, whose user agent names {}",
                    cell.rate.text,
                    cell.burst,
                    keys[i].key.net,
                    keys[i].crawler.unwrap_or("a crawler")
                ));
                continue;
            }
            let evidence = evidence(&cell.banned, peaks);
            if let Some(w) = JUDGED.into_iter().find(|&w| {
                evidence.banned_min[w] < GAP * evidence.others_p999[w]
                    || evidence.banned_min[w] == 0.0
            }) {
                if closest.is_none() || cell.banned.len() == 1 {
                    closest = Some(format!(
                        "{} burst {} bans {} key(s), the least of them peaking at {:.1} r/s over \
                         {} s against {:.1} r/s for the others' p{}: not apart",
                        cell.rate.text,
                        cell.burst,
                        cell.banned.len(),
                        evidence.banned_min[w],
                        WINDOWS[w],
                        evidence.others_p999[w],
                        QUANTILE * 100.0
                    ));
                }
                continue;
            }
            let half = grid::limits(spec, cell.rate.milli_per_sec / 2, cell.burst / 2);
            if grid::banned_at(keys, &half, grid.vhost, allow) != cell.banned {
                continue;
            }
            return Suggestion::Cell {
                rate: r,
                burst: b,
                evidence,
            };
        }
    }
    let reason = match (any_banned, closest) {
        (false, _) => "no cell of the grid bans any key".to_string(),
        (true, Some(c)) => format!("no key stands apart from the rest of the traffic ({c})"),
        (true, None) => {
            "every cell that bans only keys standing apart also bans other keys at half its \
             rate and burst (no headroom)"
                .to_string()
        }
    };
    Suggestion::None { reason }
}

fn evidence(banned: &[usize], peaks: &[Option<KeyPeaks>]) -> Evidence {
    let mut banned_min = [f64::INFINITY; 3];
    for &i in banned {
        if let Some(Some(p)) = peaks.get(i) {
            for (w, m) in banned_min.iter_mut().enumerate() {
                *m = m.min(p.peak_rps(w));
            }
        }
    }
    let others: Vec<&KeyPeaks> = peaks
        .iter()
        .enumerate()
        .filter(|(i, _)| banned.binary_search(i).is_err())
        .filter_map(|(_, p)| p.as_ref())
        .collect();
    let mut p999 = [0.0; 3];
    let mut max = [0.0f64; 3];
    for w in 0..3 {
        let mut v: Vec<f64> = others.iter().map(|p| p.peak_rps(w)).collect();
        p999[w] = quantile(&mut v, QUANTILE);
        max[w] = v.last().copied().unwrap_or(0.0);
    }
    Evidence {
        banned_min: banned_min.map(|m| if m.is_finite() { m } else { 0.0 }),
        others_p999: p999,
        others_max: max,
        others: others.len(),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The `[[rule]]` table of `spec` with another rate and burst (and, for a per-vhost suggestion,
/// restricted to that vhost under a name of its own): ready to paste into the config.
pub fn rule_block(spec: &RuleSpec, rate: &str, burst: u32, vhost: Option<&str>) -> String {
    let mut s = String::from("[[rule]]\n");
    let name = match vhost {
        // Rule names allow letters, digits, '-', '_' and '.', up to 64 of them.
        Some(v) => format!("{}-{v}", spec.name)
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '-',
            })
            .take(64)
            .collect(),
        None => spec.name.clone(),
    };
    let _ = writeln!(s, "name = {}", toml_str(&name));
    let _ = writeln!(s, "rate = {}", toml_str(rate));
    let _ = writeln!(s, "burst = {burst}");
    let _ = writeln!(s, "ban = {}", toml_str(&fmt_ms(spec.ban_ms)));
    let _ = writeln!(s, "ban_factor = {}", spec.ban_factor);
    let _ = writeln!(s, "max_ban = {}", toml_str(&fmt_ms(spec.max_ban_ms)));
    let _ = writeln!(
        s,
        "recidive_window = {}",
        toml_str(&fmt_ms(spec.recidive_window_ms))
    );
    let lists: [(&str, &[String]); 4] = [
        ("methods", &spec.methods),
        ("path_prefix", &spec.path_prefix),
        ("path_suffix", &spec.path_suffix),
        ("path_contains", &spec.path_contains),
    ];
    for (k, v) in lists {
        if !v.is_empty() {
            let _ = writeln!(s, "{k} = {}", toml_list(v));
        }
    }
    if !spec.statuses.is_empty() {
        let items: Vec<String> = spec
            .statuses
            .iter()
            .map(|m| match m {
                crate::engine::StatusMatch::Code(c) => c.to_string(),
                crate::engine::StatusMatch::Class(c) => toml_str(&format!("{c}xx")),
            })
            .collect();
        let _ = writeln!(s, "statuses = [{}]", items.join(", "));
    }
    if !spec.exclude_extensions.is_empty() {
        let _ = writeln!(
            s,
            "exclude_extensions = {}",
            toml_list(&spec.exclude_extensions)
        );
    }
    match vhost {
        Some(v) => {
            let _ = writeln!(s, "vhosts = {}", toml_list(&[v.to_string()]));
        }
        None if !spec.vhosts.is_empty() => {
            let _ = writeln!(s, "vhosts = {}", toml_list(&spec.vhosts));
        }
        None => {}
    }
    let _ = writeln!(s, "ipv4_prefix = {}", spec.ipv4_prefix);
    let _ = writeln!(s, "ipv6_prefix = {}", spec.ipv6_prefix);
    if spec.key_by_vhost {
        let _ = writeln!(s, "key = \"client+vhost\"");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.999), 999.0);
        assert_eq!(quantile(&mut [3.0, 1.0], 0.999), 3.0);
        assert_eq!(quantile(&mut [], 0.999), 0.0);
    }

    #[test]
    fn the_rule_block_is_a_valid_config() {
        let spec = crate::config::default_rule();
        let block = rule_block(&spec, "35r/s", 70, Some("shop \"x\""));
        let c = crate::config::Config::parse(&block, "t").unwrap();
        assert_eq!(c.rules[0].name, "default-shop--x-");
        assert_eq!(c.rules[0].rate.text, "35r/s");
        assert_eq!(c.rules[0].burst, 70);
        assert_eq!(c.rules[0].vhosts, ["shop \"x\""]);
        assert_eq!(c.rules[0].ban_ms, spec.ban_ms);
    }
}
