//! The run summary: a few readable lines on stderr, or one JSON object for scripts.

use std::fmt::Write as _;

use crate::replay::ReplayReport;

/// Thousands separators make counts readable at a glance.
fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// The human summary, several lines, each ending in a newline.
pub fn text(r: &ReplayReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let i = &r.ingest;
    let m = &i.malformed;
    let d = &r.decide;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "floodwatch replay: {} lines from {} files in {:.2} s ({:.2}M lines/s, {:.0} MB/s, \
         {} producers, {} shards)",
        n(i.lines),
        n(r.merge.files),
        secs,
        per_second(i.lines, secs) / 1e6,
        per_second(i.bytes, secs) / 1e6,
        r.producers,
        r.shards,
    );
    let _ = writeln!(
        s,
        "  malformed {} (shape {}, time {}, status {}, number {}, empty {}, too long {}), \
         client not an address {}, counted by no rule {}, late {} (counted at their own time), \
         too old to count {}, dated in the future {}",
        n(m.total() + r.merge.oversized),
        n(m.shape),
        n(m.time),
        n(m.status),
        n(m.number + m.other),
        n(m.empty),
        n(m.too_long + r.merge.oversized),
        n(i.no_client),
        n(i.unmatched),
        n(d.shards.late),
        n(d.shards.stale),
        n(i.future),
    );
    if i.via_proxy + i.proxy_fallback > 0 {
        let _ = writeln!(
            s,
            "  through trusted proxies: client from the logged field {}, field missing or not \
             an address {} (counted as the proxy, never banned)",
            n(i.via_proxy),
            n(i.proxy_fallback),
        );
    }
    let _ = writeln!(
        s,
        "  keys tracked: peak {}, at end {} (evicted {}, refused at the cap {})",
        n(d.shards.keys_peak),
        n(d.shards.keys_at_end),
        n(d.shards.evicted),
        n(d.shards.cap_refused),
    );
    let _ = writeln!(
        s,
        "  offenses {}, bans {}, unbans {}, allowlisted {}",
        n(d.offenses),
        n(d.bans),
        n(d.unbans),
        n(d.allowlisted),
    );
    s
}

/// The summary as one JSON object (`"type":"summary"`).
pub fn json(r: &ReplayReport) -> serde_json::Value {
    let i = &r.ingest;
    let d = &r.decide;
    serde_json::json!({
        "type": "summary",
        "files": r.merge.files,
        "lines": i.lines,
        "bytes": i.bytes,
        "malformed": i.malformed.total() + r.merge.oversized,
        "no_client": i.no_client,
        "unmatched": i.unmatched,
        "hits": i.hits,
        "late": d.shards.late,
        "stale": d.shards.stale,
        "future": i.future,
        "via_proxy": i.via_proxy,
        "proxy_fallback": i.proxy_fallback,
        "keys_peak": d.shards.keys_peak,
        "keys_at_end": d.shards.keys_at_end,
        "evicted": d.shards.evicted,
        "cap_refused": d.shards.cap_refused,
        "offenses": d.offenses,
        "bans": d.bans,
        "unbans": d.unbans,
        "allowlisted": d.allowlisted,
        "seconds": r.elapsed.as_secs_f64(),
        "lines_per_second": per_second(i.lines, r.elapsed.as_secs_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(n(0), "0");
        assert_eq!(n(999), "999");
        assert_eq!(n(1000), "1,000");
        assert_eq!(n(1234567), "1,234,567");
    }
}
