//! The what-if grid: for one rule (and optionally one vhost), which keys every (rate, burst) cell
//! would ban, and the ban timeline the configured rules decide.
//!
//! Exact without a replay per cell: whether a key is ever banned under a rule depends only on
//! its own requests' times, stepped through its `limit_req` bucket in time order (bans are per
//! key and rule, the first overflow always reports, and only the allowlist stops that report from
//! becoming a ban). So the scan's per-key times are stepped through [`Bucket`], the engine's own
//! step, for each cell; a key with no more requests than the burst plus one cannot overflow and
//! is skipped, and a cell steps only the keys its tighter neighbours ban (see [`evaluate`]). The timeline runs every overflow of the configured rules through the engine's
//! [`BanTable`] in the decider's order (time, key, rule), with its escalation and expiry.

use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::Ban;
use crate::engine::bucket::{Bucket, Limits, Ms, Step};
use crate::engine::{Offense, Rate, RuleSpec};
use crate::hit::VhostId;
use crate::vhost::Vhosts;

use super::scan::KeyHits;

/// One cell: the keys banned (indices into the rule's keys) and the requests they sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub rate: Rate,
    pub burst: u32,
    pub banned: Vec<usize>,
    /// Requests (in the grid's scope) of the banned keys.
    pub requests: u64,
}

/// One rule's grid, over all its traffic or one vhost's.
#[derive(Clone, Debug)]
pub struct Grid {
    pub rule: usize,
    pub vhost: Option<VhostId>,
    pub rates: Vec<Rate>,
    pub bursts: Vec<u32>,
    /// Rate-major: `cells[r * bursts.len() + b]`.
    pub cells: Vec<Cell>,
    /// Requests and keys in scope.
    pub requests: u64,
    pub keys: usize,
}

impl Grid {
    pub fn cell(&self, rate: usize, burst: usize) -> &Cell {
        &self.cells[rate * self.bursts.len() + burst]
    }

    /// Share of the scope's requests sent by the keys a cell bans.
    pub fn share(&self, c: &Cell) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            c.requests as f64 / self.requests as f64
        }
    }
}

/// The 1-2-5 values from a tenth to ten times `n`, with `n` itself.
fn ladder(n: f64, low: f64, high: f64) -> Vec<f64> {
    let mut v = vec![n];
    let mut decade = 1e-3;
    while decade <= n * high * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let x = m * decade;
            if x >= n * low - 1e-9 && x <= n * high + 1e-9 {
                v.push(x);
            }
        }
        decade *= 10.0;
    }
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    v
}

fn number(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The default rates tried for a rule: the 1-2-5 ladder from a tenth to ten times its rate, in
/// its own unit (`r/s` or `r/m`), at least one request per unit.
pub fn rate_ladder(rate: &Rate) -> Vec<String> {
    let (num, unit) = match (rate.text.strip_suffix("r/s"), rate.text.strip_suffix("r/m")) {
        (Some(n), _) => (n, "r/s"),
        (_, Some(n)) => (n, "r/m"),
        _ => return vec![rate.text.clone()],
    };
    let Ok(n) = num.parse::<f64>() else {
        return vec![rate.text.clone()];
    };
    ladder(n, 0.1, 10.0)
        .into_iter()
        .filter(|&x| x >= 1.0 || (x - n).abs() < 1e-9)
        .map(|x| {
            if (x - n).abs() < 1e-9 {
                rate.text.clone()
            } else {
                format!("{}{unit}", number(x))
            }
        })
        .collect()
}

/// The default bursts: the 1-2-5 ladder from a tenth to five times the rule's burst (0 and a
/// few small ones for a burst of 0).
pub fn burst_ladder(burst: u32) -> Vec<u32> {
    if burst == 0 {
        return vec![0, 1, 2, 5, 10];
    }
    let mut v: Vec<u32> = ladder(f64::from(burst), 0.1, 5.0)
        .into_iter()
        .map(|x| x.round() as u32)
        .filter(|&x| x >= 1 || burst == 0)
        .collect();
    v.dedup();
    v
}

/// A key's bucket with its own epoch (its first request), rebased before an offset outgrows
/// [`Ms`], as a shard does with its own.
struct Stepper {
    bucket: Option<Bucket>,
    epoch: i64,
}

impl Stepper {
    const REBASE_AT: i64 = 1 << 31;

    fn new() -> Stepper {
        Stepper {
            bucket: None,
            epoch: 0,
        }
    }

    fn step(&mut self, t: i64, lim: &Limits) -> Step {
        let Some(b) = &mut self.bucket else {
            self.epoch = t;
            self.bucket = Some(Bucket::new(0));
            return Step::Passed;
        };
        let mut off = t - self.epoch;
        if off >= Stepper::REBASE_AT {
            let delta = (off - Stepper::REBASE_AT / 2) as u64;
            b.rebase(delta, lim.rate);
            self.epoch += delta as i64;
            off = t - self.epoch;
        }
        b.step(off.max(0) as Ms, lim)
    }
}

/// Whether requests at these times (sorted) ever overflow a bucket of these limits.
pub fn overflows(times: impl Iterator<Item = i64>, lim: &Limits) -> bool {
    let mut s = Stepper::new();
    times.into_iter().any(|t| s.step(t, lim) != Step::Passed)
}

/// The limits of `spec` at another rate and burst.
pub fn limits(spec: &RuleSpec, milli_per_sec: u64, burst: u32) -> Limits {
    let mut s = spec.clone();
    s.rate.milli_per_sec = milli_per_sec;
    s.burst = burst;
    Limits::new(&s)
}

/// The keys (indices) a rule at `lim` bans, within one vhost when given.
pub fn banned_at(
    keys: &[KeyHits],
    lim: &Limits,
    vhost: Option<VhostId>,
    allow: &Allowlist,
) -> Vec<usize> {
    let all: Vec<usize> = (0..keys.len()).collect();
    banned_among(keys, &all, lim, vhost, allow)
}

/// Those of `candidates` (sorted indices) that a rule at `lim` bans, checked on as many threads
/// as there are CPUs when there are many.
fn banned_among(
    keys: &[KeyHits],
    candidates: &[usize],
    lim: &Limits,
    vhost: Option<VhostId>,
    allow: &Allowlist,
) -> Vec<usize> {
    let min_hits = (lim.burst / 1000 + 2) as usize;
    let check = |part: &[usize]| -> Vec<usize> {
        part.iter()
            .copied()
            .filter(|&i| {
                let k = &keys[i];
                if k.hits.len() < min_hits || allow.covers(&k.key.net) {
                    return false;
                }
                let times = k
                    .hits
                    .iter()
                    .filter(|h| vhost.is_none_or(|v| h.1 == v))
                    .map(|h| h.0);
                overflows(times, lim)
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || candidates.len() < 2048 {
        return check(candidates);
    }
    let per = candidates.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = candidates
            .chunks(per)
            .map(|part| s.spawn(move || check(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Requests of `keys[i]` within the scope.
pub fn requests_in(k: &KeyHits, vhost: Option<VhostId>) -> u64 {
    match vhost {
        None => k.hits.len() as u64,
        Some(v) => k.hits.iter().filter(|h| h.1 == v).count() as u64,
    }
}

/// The indices in both sorted lists.
fn intersect(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Evaluates every cell.
///
/// Bans only shrink as the rate or the burst grows: at a higher rate a bucket drains at least as
/// much, so its excess is never higher before its first overflow, and a larger burst only
/// overflows later. So the cells are evaluated from the tightest, and a cell only steps the keys
/// that both its tighter neighbours (the next lower rate, the next lower burst) ban.
pub fn evaluate(
    keys: &[KeyHits],
    rule: usize,
    spec: &RuleSpec,
    vhost: Option<VhostId>,
    rates: &[Rate],
    bursts: &[u32],
    allow: &Allowlist,
) -> Grid {
    let mut r_order: Vec<usize> = (0..rates.len()).collect();
    r_order.sort_by_key(|&r| rates[r].milli_per_sec);
    let mut b_order: Vec<usize> = (0..bursts.len()).collect();
    b_order.sort_by_key(|&b| bursts[b]);
    let all: Vec<usize> = (0..keys.len()).collect();
    let mut banned: Vec<Option<Vec<usize>>> = vec![None; rates.len() * bursts.len()];
    let at = |r: usize, b: usize| r * bursts.len() + b;
    for (ri, &r) in r_order.iter().enumerate() {
        for (bi, &b) in b_order.iter().enumerate() {
            let lower_rate = ri
                .checked_sub(1)
                .and_then(|p| banned[at(r_order[p], b)].as_deref());
            let lower_burst = bi
                .checked_sub(1)
                .and_then(|p| banned[at(r, b_order[p])].as_deref());
            let candidates = match (lower_rate, lower_burst) {
                (Some(x), Some(y)) => intersect(x, y),
                (Some(x), None) | (None, Some(x)) => x.to_vec(),
                (None, None) => all.clone(),
            };
            let lim = limits(spec, rates[r].milli_per_sec, bursts[b]);
            banned[at(r, b)] = Some(banned_among(keys, &candidates, &lim, vhost, allow));
        }
    }
    let cells = banned
        .into_iter()
        .enumerate()
        .map(|(i, found)| {
            let (r, b) = (i / bursts.len(), i % bursts.len());
            let banned = found.unwrap_or_default();
            let requests = banned.iter().map(|&k| requests_in(&keys[k], vhost)).sum();
            Cell {
                rate: rates[r].clone(),
                burst: bursts[b],
                banned,
                requests,
            }
        })
        .collect();
    let in_scope = |k: &KeyHits| vhost.is_none_or(|v| k.hits.iter().any(|h| h.1 == v));
    Grid {
        rule,
        vhost,
        rates: rates.to_vec(),
        bursts: bursts.to_vec(),
        cells,
        requests: keys.iter().map(|k| requests_in(k, vhost)).sum(),
        keys: keys.iter().filter(|k| in_scope(k)).count(),
    }
}

/// The bans the configured rules decide over the scanned hits, in time order: every overflow
/// that reports, through the ban table in the decider's order.
pub fn timeline(
    rules: &[Vec<KeyHits>],
    specs: &[RuleSpec],
    allow: Allowlist,
    vhosts: Vhosts,
) -> Vec<Ban> {
    let mut offenses: Vec<Offense> = Vec::new();
    for (r, (keys, spec)) in rules.iter().zip(specs).enumerate() {
        let lim = Limits::new(spec);
        let Ok(rule) = u16::try_from(r) else { continue };
        for k in keys {
            let mut s = Stepper::new();
            for &(t, vhost) in &k.hits {
                if s.step(t, &lim) == Step::Report {
                    let b = s.bucket.as_ref();
                    offenses.push(Offense {
                        key: k.key,
                        rule,
                        time_ms: t,
                        first_seen_ms: s.epoch + b.map_or(0, |b| i64::from(b.first_seen())),
                        requests: b.map_or(0, |b| u64::from(b.count())),
                        vhost,
                        flags: 0,
                    });
                }
            }
        }
    }
    offenses.sort_by_key(|o| (o.time_ms, o.key, o.rule));
    let mut table = BanTable::new(specs, allow, vhosts);
    let mut bans = Vec::new();
    for o in &offenses {
        let _ = table.expire(o.time_ms);
        if let Some(b) = table.offense(o) {
            bans.push(b);
        }
    }
    bans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rate;

    #[test]
    fn ladders_go_from_a_tenth_to_ten_times() {
        let r = parse_rate("20r/s").unwrap();
        assert_eq!(
            rate_ladder(&r),
            ["2r/s", "5r/s", "10r/s", "20r/s", "50r/s", "100r/s", "200r/s"]
        );
        let r = parse_rate("10r/m").unwrap();
        assert_eq!(
            rate_ladder(&r),
            ["1r/m", "2r/m", "5r/m", "10r/m", "20r/m", "50r/m", "100r/m"]
        );
        let r = parse_rate("7r/s").unwrap();
        assert_eq!(
            rate_ladder(&r),
            ["1r/s", "2r/s", "5r/s", "7r/s", "10r/s", "20r/s", "50r/s"]
        );
        assert_eq!(burst_ladder(100), [10, 20, 50, 100, 200, 500]);
        assert_eq!(burst_ladder(5), [1, 2, 5, 10, 20]);
        assert_eq!(burst_ladder(0), [0, 1, 2, 5, 10]);
        for l in [rate_ladder(&parse_rate("0.5r/s").unwrap())] {
            for t in &l {
                assert!(parse_rate(t).is_ok(), "{t}");
            }
        }
    }

    /// The pruned evaluation (tighter neighbours first) equals stepping every key in every cell.
    #[test]
    fn pruned_cells_equal_full_cells() {
        use crate::addr::{Addr, Cidr};
        use crate::engine::Key;
        use crate::hit::NO_VHOST;
        let mut rng = crate::lab::rng::Rng::new(5);
        let keys: Vec<KeyHits> = (0..300u32)
            .map(|i| {
                let rate = rng.range(1, 40);
                let mut hits: Vec<(i64, VhostId)> = (0..rng.range(1, 400))
                    .map(|_| (rng.range(0, 1000 * 400 / rate) as i64, (i % 3) as VhostId))
                    .collect();
                hits.sort_unstable();
                KeyHits {
                    key: Key {
                        net: Cidr::new(
                            Addr::parse(format!("10.0.{}.{}", i / 200, i % 200).as_bytes())
                                .unwrap(),
                            32,
                        ),
                        vhost: NO_VHOST,
                    },
                    hits,
                    agents: Default::default(),
                    paths: Default::default(),
                    crawler: None,
                }
            })
            .collect();
        let spec = crate::engine::rule::tests::spec("t", 1000, 2);
        let rates: Vec<Rate> = ["20r/s", "2r/s", "5r/s", "1r/s"]
            .iter()
            .map(|r| parse_rate(r).unwrap())
            .collect();
        let bursts = [50, 0, 5, 20];
        let allow = Allowlist::new(Vec::new());
        for vhost in [None, Some(1)] {
            let g = evaluate(&keys, 0, &spec, vhost, &rates, &bursts, &allow);
            let mut distinct = std::collections::BTreeSet::new();
            for (r, rate) in rates.iter().enumerate() {
                for (b, &burst) in bursts.iter().enumerate() {
                    let lim = limits(&spec, rate.milli_per_sec, burst);
                    let full = banned_at(&keys, &lim, vhost, &allow);
                    assert_eq!(g.cell(r, b).banned, full, "{} burst {burst}", rate.text);
                    distinct.insert(full.len());
                }
            }
            assert!(distinct.len() > 5, "{distinct:?}");
        }
    }

    #[test]
    fn a_key_overflows_only_past_its_burst() {
        // 1r/s burst 2: three requests at once pass, the fourth overflows.
        let spec = crate::engine::rule::tests::spec("t", 1000, 2);
        let lim = Limits::new(&spec);
        assert!(!overflows([0, 0, 0].into_iter(), &lim));
        assert!(overflows([0, 0, 0, 0].into_iter(), &lim));
        // Ten days apart: the offsets are rebased, nothing overflows.
        let day = 86_400_000;
        assert!(!overflows((0..40).map(|i| i * day), &lim));
    }
}
