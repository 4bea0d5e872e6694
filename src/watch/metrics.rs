//! What watch's metrics endpoint shows: the counters, rendered as Prometheus text (format
//! 0.0.4) for `/metrics` and the active bans as JSON for `/bans`.
//!
//! Nothing here is shared between threads: the watch loop keeps its counters where they are
//! (the parser's [`IngestStats`], the ban table, the shards' latest ticks, the sinks' atomics)
//! and hands them over as a [`View`] when a page is asked for. The one thing kept only for the
//! endpoint is the write-to-ban latency ([`Recorder`]), recorded as each ban is emitted.

use std::fmt::Display;
use std::io::Write;

use hdrhistogram::Histogram;

use super::files::ReadLag;
use super::procstat::ProcStat;
use crate::decide::ban_table::BanTable;
use crate::decide::event::write_ban_json;
use crate::decide::Event;
use crate::engine::ShardStats;
use crate::sink::{SinkCounters, SinkMetrics};
use crate::source::stats::IngestStats;

/// The latency histogram's buckets (upper bounds, milliseconds): Prometheus' defaults, and 1
/// and 2 ms below them (a `$msec` log's flood is banned within a few milliseconds).
const BUCKETS_MS: [u64; 13] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];
/// Latencies are kept up to an hour; longer ones (bans decided from a backlog read at start)
/// count as an hour in the histogram, and exactly in its sum.
const MAX_LATENCY_MS: u64 = 3_600_000;

/// The wall-clock time from a ban's offending request (its log time) to the ban's emission.
pub struct Recorder {
    /// Milliseconds, 3 significant digits: the bucket bounds up to 2 s are exact, those above
    /// within 0.1 %.
    latency: Histogram<u64>,
    /// Exact sum (the histogram's own is approximate), milliseconds.
    sum_ms: u64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3)
            .unwrap_or_else(|_| unreachable!("constant, valid bounds"));
        Recorder { latency, sum_ms: 0 }
    }

    /// Records the latency of a ban as it is emitted at `now_ms` (wall clock); unbans are not
    /// timed.
    pub fn on_event(&mut self, ev: &Event, now_ms: i64) {
        if let Event::Ban(b) = ev {
            self.record_ms(now_ms.saturating_sub(b.time_ms));
        }
    }

    /// A log time ahead of the clock (tolerated up to a second) counts as no delay.
    pub fn record_ms(&mut self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        self.latency.saturating_record(ms);
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    pub fn count(&self) -> u64 {
        self.latency.len()
    }
}

/// SIGHUPs and what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reloads {
    pub applied: u64,
    /// Configs that did not load, compile or start (the running one was kept).
    pub refused: u64,
    /// Whether the last one was refused.
    pub last_refused: bool,
}

impl Reloads {
    pub fn count(&mut self, applied: bool) {
        match applied {
            true => self.applied += 1,
            false => self.refused += 1,
        }
        self.last_refused = !applied;
    }
}

/// The loop's counters, lent for one rendering.
pub struct View<'a> {
    pub ingest: &'a IngestStats,
    /// Summed over shards, as of their latest ticks.
    pub shards: ShardStats,
    pub table: &'a BanTable,
    pub sinks: Vec<SinkMetrics>,
    pub files: usize,
    pub reloads: Reloads,
    pub lag: ReadLag,
    /// `[fleet]`'s counters (none without it).
    pub fleet: Option<crate::fleet::FleetStats>,
}

/// Appends the Prometheus text of `v`, `latency` and the process figures `p` to `out`, family
/// by family in a fixed order (a scrape diffs cleanly against the last one).
pub fn render_metrics(v: &View, latency: &Recorder, p: &ProcStat, out: &mut Vec<u8>) {
    let mut t = Text { out };
    t.family(
        "build_info",
        "gauge",
        "The running floodwatch's version, as a label.",
    );
    t.value("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    lines(&mut t, v);
    files(&mut t, v);
    decisions(&mut t, v);
    sinks(&mut t, &v.sinks);
    if let Some(f) = &v.fleet {
        fleet(&mut t, f);
    }
    ban_latency(&mut t, latency);
    process(&mut t, p);
}

/// A metric without labels: name, type, help, value.
type Single<'a> = (&'a str, &'a str, &'a str, u64);

/// What was read, and what became of the lines.
fn lines(t: &mut Text, v: &View) {
    let i = v.ingest;
    t.singles(&[
        ("lines_read_total", "counter", "Log lines read.", i.lines),
        ("bytes_read_total", "counter", "Log bytes read.", i.bytes),
    ]);
    t.family(
        "lines_malformed_total",
        "counter",
        "Lines that are not access-log lines of the configured format, by why.",
    );
    let m = &i.malformed;
    let kinds = [
        ("empty", m.empty),
        ("too_long", m.too_long),
        ("shape", m.shape),
        ("time", m.time),
        ("status", m.status),
        ("number", m.number),
        ("other", m.other),
    ];
    for (kind, n) in kinds {
        t.value("lines_malformed_total", &[("kind", kind)], n);
    }
    t.singles(&[
        (
            "lines_future_total",
            "counter",
            "Lines stamped more than a day ahead of the clock (not counted by any rule).",
            i.future,
        ),
        (
            "lines_late_total",
            "counter",
            "Requests older than what the rate engine had already processed when they arrived (each still counted at its own time).",
            v.shards.late,
        ),
        (
            "lines_stale_total",
            "counter",
            "Requests too old to count: about 24 days older than the newest the rate engine has seen (skipped).",
            v.shards.stale,
        ),
        (
            "hits_total",
            "counter",
            "Requests handed to the rate engine (lines some rule counts).",
            i.hits,
        ),
    ]);
}

/// The followed files: how far behind their reading is, how many, and the config's reloads.
fn files(t: &mut Text, v: &View) {
    t.singles(&[
        (
            "read_lag_bytes",
            "gauge",
            "Bytes written to the followed files and not read yet: the most behind one.",
            v.lag.worst_bytes,
        ),
        (
            "read_lag_all_files_bytes",
            "gauge",
            "Bytes written to the followed files and not read yet, all files.",
            v.lag.total_bytes,
        ),
    ]);
    t.family(
        "read_lag_seconds",
        "gauge",
        "Age of the newest line read of the file most behind, among files with unread bytes.",
    );
    t.line(format_args!(
        "floodwatch_read_lag_seconds {}",
        Seconds(v.lag.worst_ms)
    ));
    t.singles(&[(
        "files_watched",
        "gauge",
        "Log files followed.",
        v.files as u64,
    )]);
    t.family(
        "config_reloads_total",
        "counter",
        "SIGHUPs: configs applied, and configs refused (the running one kept).",
    );
    let r = &v.reloads;
    t.value("config_reloads_total", &[("result", "applied")], r.applied);
    t.value("config_reloads_total", &[("result", "refused")], r.refused);
    t.singles(&[(
        "config_last_reload_successful",
        "gauge",
        "0 when the last SIGHUP's config was refused, else 1.",
        u64::from(!r.last_refused),
    )]);
}

/// The rate engine's keys, and the offenses, bans and unbans decided, by rule.
fn decisions(t: &mut Text, v: &View) {
    t.singles(&[
        (
            "keys_tracked",
            "gauge",
            "(key, rule) entries the rate engine holds, summed over shards at their latest tick.",
            v.shards.keys_at_end,
        ),
        (
            "keys_evicted_total",
            "counter",
            "Idle, recovered (key, rule) entries dropped.",
            v.shards.evicted,
        ),
        (
            "keys_refused_total",
            "counter",
            "New (key, rule) entries refused because [engine] max_keys was reached.",
            v.shards.cap_refused,
        ),
        (
            "requests_over_rate_total",
            "counter",
            "Requests over a rule's rate and burst (nginx would have rejected them), all rules.",
            v.shards.overflows,
        ),
    ]);
    let rules: Vec<&str> = v.table.rule_names().collect();
    t.family(
        "offenses_total",
        "counter",
        "Offenses reported to the ban table: a key's first request over a rule's rate and burst, and the first again once a ban's length has passed (allowlisted and already banned keys included).",
    );
    for (rule, &n) in rules.iter().zip(v.table.offenses_by_rule()) {
        t.value("offenses_total", &[("rule", rule)], n);
    }
    t.family(
        "bans_total",
        "counter",
        "Bans decided since start (bans restored from the state folder not included).",
    );
    for (rule, &n) in rules.iter().zip(v.table.bans_by_rule()) {
        t.value("bans_total", &[("rule", rule)], n);
    }
    let st = v.table.stats();
    t.singles(&[(
        "unbans_total",
        "counter",
        "Bans ended since start.",
        st.unbans,
    )]);
    t.family("active_bans", "gauge", "Bans in force.");
    for (rule, n) in rules.iter().zip(v.table.active_by_rule()) {
        t.value("active_bans", &[("rule", rule)], n);
    }
}

/// Each sink's deliveries and health, one family per counter.
fn sinks(t: &mut Text, sinks: &[SinkMetrics]) {
    type Count = fn(&SinkCounters) -> u64;
    let per_sink: [(&str, &str, Count); 5] = [
        ("sink_delivered_total", "Events delivered by a sink.", |c| {
            c.delivered
        }),
        (
            "sink_failed_total",
            "Events a sink gave up on (refused, or still failing after give_up_after).",
            |c| c.failed,
        ),
        (
            "sink_dropped_total",
            "Bans dropped because a sink's queue was full, and the unbans that went with them.",
            |c| c.dropped,
        ),
        (
            "sink_skipped_proxied_total",
            "Bans of clients behind a trusted proxy that a sink does not take.",
            |c| c.skipped_proxied,
        ),
        (
            "sink_retries_total",
            "Deliveries that failed and were tried again.",
            |c| c.retries,
        ),
    ];
    for (name, help, count) in per_sink {
        t.family(name, "counter", help);
        for s in sinks {
            t.value(name, &[("sink", &s.name)], count(&s.counters));
        }
    }
    t.family(
        "sink_up",
        "gauge",
        "1 while a sink's last steps all succeeded (nginx: write, test and reload; exec: every command exited 0; Cloudflare, webhook: the API accepted it), 0 from a failure until the next success.",
    );
    for s in sinks {
        t.value("sink_up", &[("sink", &s.name)], u64::from(s.up));
    }
}

/// How long bans took from the offending request's log time to their emission.
fn ban_latency(t: &mut Text, latency: &Recorder) {
    let h = &latency.latency;
    let name = "ban_latency_seconds";
    t.family(
        name,
        "histogram",
        "Wall-clock time from the log time of a ban's offending request to the ban's emission: from the write of the line to the ban for $msec logs, plus up to a second of rounding for logs with one-second times.",
    );
    for le in BUCKETS_MS {
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(0, le)
        };
        t.value_with("ban_latency_seconds_bucket", &[("le", &Seconds(le))], n);
    }
    t.value_with("ban_latency_seconds_bucket", &[("le", &"+Inf")], h.len());
    t.line(format_args!(
        "floodwatch_ban_latency_seconds_sum {}",
        Seconds(latency.sum_ms)
    ));
    t.value("ban_latency_seconds_count", &[], h.len());
}

/// `[fleet]`: what was shared with the other servers and what came from them.
fn fleet(t: &mut Text, f: &crate::fleet::FleetStats) {
    let counters: [(&str, &str, u64); 6] = [
        (
            "fleet_published_total",
            "This server's bans and unbans published to the fleet.",
            f.counts.published,
        ),
        (
            "fleet_dropped_total",
            "Messages not published because the fleet's queue was full (Redis away too long).",
            f.counts.dropped,
        ),
        (
            "fleet_reconnects_total",
            "Connections to Redis made again after a loss.",
            f.counts.reconnects,
        ),
        (
            "fleet_applied_total",
            "Other servers' bans and unbans applied here.",
            f.counts.applied,
        ),
        (
            "fleet_duplicates_total",
            "Other servers' messages with nothing to do here: already enforced, or already over.",
            f.counts.duplicates,
        ),
        (
            "fleet_refused_total",
            "Fleet messages refused: allowlisted keys, and entries that are not valid messages.",
            f.counts.refused,
        ),
    ];
    for (name, help, n) in counters {
        t.family(name, "counter", help);
        t.value(name, &[], n);
    }
    t.family(
        "fleet_queued",
        "gauge",
        "Messages waiting to be published (Redis away or slow).",
    );
    t.value("fleet_queued", &[], f.counts.queued);
    t.family(
        "fleet_connected",
        "gauge",
        "1 when both fleet threads are connected to Redis.",
    );
    t.value("fleet_connected", &[], u64::from(f.connected));
    t.family(
        "fleet_lag_seconds",
        "gauge",
        "From publication on another server to application here, of the last message applied.",
    );
    t.line(format_args!(
        "floodwatch_fleet_lag_seconds {}",
        Seconds(f.lag_last_ms)
    ));
    if let Some(c) = &f.counting {
        fleet_counting(t, c);
    }
}

/// Fleet-wide counting (`scope = "fleet"` rules).
fn fleet_counting(t: &mut Text, c: &crate::fleet::counting::CountingStats) {
    t.family(
        "fleet_counting_up",
        "gauge",
        "1 while fleet rules count with the whole fleet, 0 while Redis is away and they count this server's requests only.",
    );
    t.value("fleet_counting_up", &[], u64::from(c.mode == "fleet"));
    let counters: [(&str, &str, u64); 7] = [
        (
            "fleet_counting_exchanges_total",
            "Exchanges of counts with Redis.",
            c.exchanges,
        ),
        (
            "fleet_counting_offenses_total",
            "Offenses found in the fleet's counts.",
            c.offenses,
        ),
        (
            "fleet_counting_fallbacks_total",
            "Times fleet rules fell back to local counting (Redis unreachable).",
            c.fallbacks,
        ),
        (
            "fleet_counting_requests_total",
            "Requests counted towards fleet rules.",
            c.counted,
        ),
        (
            "fleet_counting_commands_total",
            "Redis commands sent by fleet counting.",
            c.commands,
        ),
        (
            "fleet_counting_sent_bytes_total",
            "Bytes sent to Redis by fleet counting.",
            c.bytes_out,
        ),
        (
            "fleet_counting_received_bytes_total",
            "Bytes of Redis's replies to fleet counting.",
            c.bytes_in,
        ),
    ];
    for (name, help, n) in counters {
        t.family(name, "counter", help);
        t.value(name, &[], n);
    }
}

/// The process figures, under Prometheus' standard names (no `floodwatch_` prefix).
fn process(t: &mut Text, p: &ProcStat) {
    let mut one = |name: &str, kind: &str, help: &str, value: &dyn Display| {
        t.line(format_args!("# HELP {name} {help}"));
        t.line(format_args!("# TYPE {name} {kind}"));
        t.line(format_args!("{name} {value}"));
    };
    if let Some(s) = p.cpu_seconds {
        one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, seconds.",
            &s,
        );
    }
    if let Some(b) = p.resident_bytes {
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory, bytes.",
            &b,
        );
    }
    if let Some(n) = p.open_fds {
        one("process_open_fds", "gauge", "Open file descriptors.", &n);
    }
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, seconds.",
        &p.start_time,
    );
}

/// Appends the active bans, soonest end first, as a JSON array of the ban events that started
/// them (see docs/guide.md, Events: `time` is when the ban began, `until` when it ends).
pub fn render_bans(table: &BanTable, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, b) in table.active().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        write_ban_json(&b, out);
    }
    if table.active_len() > 0 {
        out.push(b'\n');
    }
    out.extend_from_slice(b"]\n");
}

/// Milliseconds as seconds, exactly (`2500` → `2.5`).
struct Seconds(u64);

impl Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, ms) = (self.0 / 1000, self.0 % 1000);
        if ms == 0 {
            return write!(f, "{s}");
        }
        let frac = format!("{ms:03}");
        write!(f, "{s}.{}", frac.trim_end_matches('0'))
    }
}

/// Prometheus text lines, every name prefixed with `floodwatch_`.
struct Text<'a> {
    out: &'a mut Vec<u8>,
}

impl Text<'_> {
    fn line(&mut self, args: std::fmt::Arguments) {
        // Writing into a Vec cannot fail.
        let _ = self.out.write_fmt(args);
        self.out.push(b'\n');
    }

    /// Metrics without labels, each with its HELP and TYPE lines.
    fn singles(&mut self, table: &[Single]) {
        for &(name, kind, help, v) in table {
            self.family(name, kind, help);
            self.value(name, &[], v);
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.line(format_args!("# HELP floodwatch_{name} {help}"));
        self.line(format_args!("# TYPE floodwatch_{name} {kind}"));
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        let labels: Vec<(&str, &dyn Display)> = labels
            .iter()
            .map(|(k, v)| (*k, v as &dyn Display))
            .collect();
        self.value_with(name, &labels, v);
    }

    fn value_with(&mut self, name: &str, labels: &[(&str, &dyn Display)], v: u64) {
        let _ = write!(self.out, "floodwatch_{name}");
        for (i, (k, val)) in labels.iter().enumerate() {
            let sep = if i == 0 { '{' } else { ',' };
            let _ = write!(self.out, "{sep}{k}=\"");
            escape_label(&val.to_string(), self.out);
            self.out.push(b'"');
        }
        if !labels.is_empty() {
            self.out.push(b'}');
        }
        self.line(format_args!(" {v}"));
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::allowlist::Allowlist;
    use crate::decide::ban_table::tests::{offense, rule};
    use crate::vhost::Vhosts;

    fn text(v: &View, latency: &Recorder) -> String {
        let process = ProcStat {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(10 << 20),
            open_fds: None,
            start_time: 1_800_000_000.25,
        };
        let mut out = Vec::new();
        render_metrics(v, latency, &process, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_a_small_state_exactly() {
        let rules = [
            rule("flood", 600, 2.0, 3600, 3600),
            rule("scan", 60, 2.0, 3600, 3600),
        ];
        let mut table = BanTable::new(&rules, Allowlist::default(), Vhosts::new());
        table.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        table.offense(&offense("192.0.2.1", 0, 1));
        table.offense(&offense("192.0.2.2", 1, 0)).unwrap();
        table.expire(60_000);
        let mut ingest = IngestStats {
            lines: 1000,
            bytes: 98_765,
            hits: 990,
            future: 1,
            ..IngestStats::default()
        };
        ingest.malformed.shape = 7;
        ingest.malformed.too_long = 2;
        let shards = ShardStats {
            late: 3,
            keys_at_end: 42,
            evicted: 5,
            cap_refused: 6,
            ..ShardStats::default()
        };
        let mut latency = Recorder::new();
        for ms in [3, 12, 12, 700, 4000, 7_200_000] {
            latency.record_ms(ms);
        }
        latency.record_ms(-20);
        let sinks = vec![
            SinkMetrics {
                name: "deny".to_string(),
                counters: SinkCounters {
                    delivered: 4,
                    failed: 1,
                    dropped: 2,
                    skipped_proxied: 0,
                    retries: 9,
                },
                up: false,
            },
            SinkMetrics {
                name: "cf".to_string(),
                up: true,
                ..SinkMetrics::default()
            },
        ];
        let v = View {
            ingest: &ingest,
            shards,
            table: &table,
            sinks,
            files: 12,
            reloads: Reloads {
                applied: 2,
                refused: 1,
                last_refused: true,
            },
            lag: ReadLag {
                total_bytes: 300,
                worst_bytes: 200,
                worst_ms: 1500,
            },
            fleet: None,
        };
        let want = "\
# HELP floodwatch_build_info The running floodwatch's version, as a label.
# TYPE floodwatch_build_info gauge
floodwatch_build_info{version=\"@VERSION@\"} 1
# HELP floodwatch_lines_read_total Log lines read.
# TYPE floodwatch_lines_read_total counter
floodwatch_lines_read_total 1000
# HELP floodwatch_bytes_read_total Log bytes read.
# TYPE floodwatch_bytes_read_total counter
floodwatch_bytes_read_total 98765
# HELP floodwatch_lines_malformed_total Lines that are not access-log lines of the configured format, by why.
# TYPE floodwatch_lines_malformed_total counter
floodwatch_lines_malformed_total{kind=\"empty\"} 0
floodwatch_lines_malformed_total{kind=\"too_long\"} 2
floodwatch_lines_malformed_total{kind=\"shape\"} 7
floodwatch_lines_malformed_total{kind=\"time\"} 0
floodwatch_lines_malformed_total{kind=\"status\"} 0
floodwatch_lines_malformed_total{kind=\"number\"} 0
floodwatch_lines_malformed_total{kind=\"other\"} 0
# HELP floodwatch_lines_future_total Lines stamped more than a day ahead of the clock (not counted by any rule).
# TYPE floodwatch_lines_future_total counter
floodwatch_lines_future_total 1
# HELP floodwatch_lines_late_total Requests older than what the rate engine had already processed when they arrived (each still counted at its own time).
# TYPE floodwatch_lines_late_total counter
floodwatch_lines_late_total 3
# HELP floodwatch_lines_stale_total Requests too old to count: about 24 days older than the newest the rate engine has seen (skipped).
# TYPE floodwatch_lines_stale_total counter
floodwatch_lines_stale_total 0
# HELP floodwatch_hits_total Requests handed to the rate engine (lines some rule counts).
# TYPE floodwatch_hits_total counter
floodwatch_hits_total 990
# HELP floodwatch_read_lag_bytes Bytes written to the followed files and not read yet: the most behind one.
# TYPE floodwatch_read_lag_bytes gauge
floodwatch_read_lag_bytes 200
# HELP floodwatch_read_lag_all_files_bytes Bytes written to the followed files and not read yet, all files.
# TYPE floodwatch_read_lag_all_files_bytes gauge
floodwatch_read_lag_all_files_bytes 300
# HELP floodwatch_read_lag_seconds Age of the newest line read of the file most behind, among files with unread bytes.
# TYPE floodwatch_read_lag_seconds gauge
floodwatch_read_lag_seconds 1.5
# HELP floodwatch_files_watched Log files followed.
# TYPE floodwatch_files_watched gauge
floodwatch_files_watched 12
# HELP floodwatch_config_reloads_total SIGHUPs: configs applied, and configs refused (the running one kept).
# TYPE floodwatch_config_reloads_total counter
floodwatch_config_reloads_total{result=\"applied\"} 2
floodwatch_config_reloads_total{result=\"refused\"} 1
# HELP floodwatch_config_last_reload_successful 0 when the last SIGHUP's config was refused, else 1.
# TYPE floodwatch_config_last_reload_successful gauge
floodwatch_config_last_reload_successful 0
# HELP floodwatch_keys_tracked (key, rule) entries the rate engine holds, summed over shards at their latest tick.
# TYPE floodwatch_keys_tracked gauge
floodwatch_keys_tracked 42
# HELP floodwatch_keys_evicted_total Idle, recovered (key, rule) entries dropped.
# TYPE floodwatch_keys_evicted_total counter
floodwatch_keys_evicted_total 5
# HELP floodwatch_keys_refused_total New (key, rule) entries refused because [engine] max_keys was reached.
# TYPE floodwatch_keys_refused_total counter
floodwatch_keys_refused_total 6
# HELP floodwatch_requests_over_rate_total Requests over a rule's rate and burst (nginx would have rejected them), all rules.
# TYPE floodwatch_requests_over_rate_total counter
floodwatch_requests_over_rate_total 0
# HELP floodwatch_offenses_total Offenses reported to the ban table: a key's first request over a rule's rate and burst, and the first again once a ban's length has passed (allowlisted and already banned keys included).
# TYPE floodwatch_offenses_total counter
floodwatch_offenses_total{rule=\"flood\"} 2
floodwatch_offenses_total{rule=\"scan\"} 1
# HELP floodwatch_bans_total Bans decided since start (bans restored from the state folder not included).
# TYPE floodwatch_bans_total counter
floodwatch_bans_total{rule=\"flood\"} 1
floodwatch_bans_total{rule=\"scan\"} 1
# HELP floodwatch_unbans_total Bans ended since start.
# TYPE floodwatch_unbans_total counter
floodwatch_unbans_total 1
# HELP floodwatch_active_bans Bans in force.
# TYPE floodwatch_active_bans gauge
floodwatch_active_bans{rule=\"flood\"} 1
floodwatch_active_bans{rule=\"scan\"} 0
# HELP floodwatch_sink_delivered_total Events delivered by a sink.
# TYPE floodwatch_sink_delivered_total counter
floodwatch_sink_delivered_total{sink=\"deny\"} 4
floodwatch_sink_delivered_total{sink=\"cf\"} 0
# HELP floodwatch_sink_failed_total Events a sink gave up on (refused, or still failing after give_up_after).
# TYPE floodwatch_sink_failed_total counter
floodwatch_sink_failed_total{sink=\"deny\"} 1
floodwatch_sink_failed_total{sink=\"cf\"} 0
# HELP floodwatch_sink_dropped_total Bans dropped because a sink's queue was full, and the unbans that went with them.
# TYPE floodwatch_sink_dropped_total counter
floodwatch_sink_dropped_total{sink=\"deny\"} 2
floodwatch_sink_dropped_total{sink=\"cf\"} 0
# HELP floodwatch_sink_skipped_proxied_total Bans of clients behind a trusted proxy that a sink does not take.
# TYPE floodwatch_sink_skipped_proxied_total counter
floodwatch_sink_skipped_proxied_total{sink=\"deny\"} 0
floodwatch_sink_skipped_proxied_total{sink=\"cf\"} 0
# HELP floodwatch_sink_retries_total Deliveries that failed and were tried again.
# TYPE floodwatch_sink_retries_total counter
floodwatch_sink_retries_total{sink=\"deny\"} 9
floodwatch_sink_retries_total{sink=\"cf\"} 0
# HELP floodwatch_sink_up 1 while a sink's last steps all succeeded (nginx: write, test and reload; exec: every command exited 0; Cloudflare, webhook: the API accepted it), 0 from a failure until the next success.
# TYPE floodwatch_sink_up gauge
floodwatch_sink_up{sink=\"deny\"} 0
floodwatch_sink_up{sink=\"cf\"} 1
# HELP floodwatch_ban_latency_seconds Wall-clock time from the log time of a ban's offending request to the ban's emission: from the write of the line to the ban for $msec logs, plus up to a second of rounding for logs with one-second times.
# TYPE floodwatch_ban_latency_seconds histogram
floodwatch_ban_latency_seconds_bucket{le=\"0.001\"} 1
floodwatch_ban_latency_seconds_bucket{le=\"0.002\"} 1
floodwatch_ban_latency_seconds_bucket{le=\"0.005\"} 2
floodwatch_ban_latency_seconds_bucket{le=\"0.01\"} 2
floodwatch_ban_latency_seconds_bucket{le=\"0.025\"} 4
floodwatch_ban_latency_seconds_bucket{le=\"0.05\"} 4
floodwatch_ban_latency_seconds_bucket{le=\"0.1\"} 4
floodwatch_ban_latency_seconds_bucket{le=\"0.25\"} 4
floodwatch_ban_latency_seconds_bucket{le=\"0.5\"} 4
floodwatch_ban_latency_seconds_bucket{le=\"1\"} 5
floodwatch_ban_latency_seconds_bucket{le=\"2.5\"} 5
floodwatch_ban_latency_seconds_bucket{le=\"5\"} 6
floodwatch_ban_latency_seconds_bucket{le=\"10\"} 6
floodwatch_ban_latency_seconds_bucket{le=\"+Inf\"} 7
floodwatch_ban_latency_seconds_sum 7204.727
floodwatch_ban_latency_seconds_count 7
# HELP process_cpu_seconds_total User and system CPU time spent, seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
# HELP process_resident_memory_bytes Resident memory, bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 10485760
# HELP process_start_time_seconds Start time of the process since the Unix epoch, seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1800000000.25
"
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
        assert_eq!(text(&v, &latency), want);
    }

    #[test]
    fn label_values_are_escaped() {
        let rules = [rule("a\"b\\c\nd", 600, 2.0, 3600, 3600)];
        let table = BanTable::new(&rules, Allowlist::default(), Vhosts::new());
        let v = View {
            ingest: &IngestStats::default(),
            shards: ShardStats::default(),
            table: &table,
            sinks: vec![SinkMetrics {
                name: "x\ny".into(),
                ..SinkMetrics::default()
            }],
            files: 0,
            reloads: Reloads::default(),
            lag: ReadLag::default(),
            fleet: None,
        };
        let t = text(&v, &Recorder::new());
        assert!(
            t.contains("floodwatch_offenses_total{rule=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("floodwatch_sink_retries_total{sink=\"x\\ny\"} 0\n"));
        // Every line is a comment or a sample: no raw newline escaped into a label.
        for line in t.lines() {
            assert!(
                line.starts_with("# ")
                    || line.starts_with("floodwatch_")
                    || line.starts_with("process_"),
                "{line}"
            );
        }
    }

    #[test]
    fn the_fleet_is_shown_when_configured() {
        let table = BanTable::new(&[], Allowlist::default(), Vhosts::new());
        let fleet = crate::fleet::FleetStats {
            node: "web-01".into(),
            connected: true,
            counts: crate::fleet::FleetCounts {
                published: 7,
                queued: 2,
                applied: 5,
                reconnects: 1,
                ..Default::default()
            },
            lag_last_ms: 1250,
            ..Default::default()
        };
        let ingest = IngestStats::default();
        let v = |fleet| View {
            ingest: &ingest,
            shards: ShardStats::default(),
            table: &table,
            sinks: vec![],
            files: 0,
            reloads: Reloads::default(),
            lag: ReadLag::default(),
            fleet,
        };
        let t = text(&v(Some(fleet)), &Recorder::new());
        for want in [
            "floodwatch_fleet_published_total 7\n",
            "floodwatch_fleet_applied_total 5\n",
            "floodwatch_fleet_reconnects_total 1\n",
            "floodwatch_fleet_dropped_total 0\n",
            "floodwatch_fleet_queued 2\n",
            "floodwatch_fleet_connected 1\n",
            "# TYPE floodwatch_fleet_lag_seconds gauge\nfloodwatch_fleet_lag_seconds 1.25\n",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(!t.contains("fleet_counting"), "only with a fleet rule: {t}");
        assert!(!text(&v(None), &Recorder::new()).contains("fleet"));
    }

    #[test]
    fn fleet_counting_is_shown_with_a_fleet_rule() {
        let table = BanTable::new(&[], Allowlist::default(), Vhosts::new());
        let ingest = IngestStats::default();
        let counting = |mode: &str| crate::fleet::FleetStats {
            counting: Some(crate::fleet::counting::CountingStats {
                rules: vec!["spread".into()],
                mode: mode.into(),
                exchanges: 40,
                fallbacks: 1,
                commands: 9000,
                bytes_out: 70_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = |mode: &str| {
            let view = View {
                ingest: &ingest,
                shards: ShardStats::default(),
                table: &table,
                sinks: vec![],
                files: 0,
                reloads: Reloads::default(),
                lag: ReadLag::default(),
                fleet: Some(counting(mode)),
            };
            text(&view, &Recorder::new())
        };
        let t = v("fleet");
        for want in [
            "floodwatch_fleet_counting_up 1\n",
            "floodwatch_fleet_counting_exchanges_total 40\n",
            "floodwatch_fleet_counting_fallbacks_total 1\n",
            "floodwatch_fleet_counting_commands_total 9000\n",
            "floodwatch_fleet_counting_sent_bytes_total 70000\n",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(v("local").contains("floodwatch_fleet_counting_up 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let mut r = Recorder::new();
        for ms in (0..20_000).step_by(7) {
            r.record_ms(ms);
        }
        let v = View {
            ingest: &IngestStats::default(),
            shards: ShardStats::default(),
            table: &BanTable::new(&[], Allowlist::default(), Vhosts::new()),
            sinks: vec![],
            files: 0,
            reloads: Reloads::default(),
            lag: ReadLag::default(),
            fleet: None,
        };
        let t = text(&v, &r);
        let counts: Vec<u64> = t
            .lines()
            .filter(|l| l.starts_with("floodwatch_ban_latency_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS_MS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(*counts.last().unwrap(), r.count());
        // Below 2 s the bounds are exact: values 0, 7, 14... ≤ 1000 ms.
        assert_eq!(counts[9], 1000 / 7 + 1);
        assert!(t.contains(&format!(
            "floodwatch_ban_latency_seconds_count {}\n",
            r.count()
        )));
    }

    #[test]
    fn seconds_are_written_exactly() {
        let s = |ms| Seconds(ms).to_string();
        assert_eq!(
            [s(5), s(10), s(250), s(1000), s(2500), s(0), s(7_204_727)],
            ["0.005", "0.01", "0.25", "1", "2.5", "0", "7204.727"]
        );
    }

    #[test]
    fn bans_are_a_json_array_of_their_events() {
        let rules = [rule("flood", 600, 2.0, 3600, 3600)];
        let mut table = BanTable::new(&rules, Allowlist::default(), Vhosts::new());
        let mut out = Vec::new();
        render_bans(&table, &mut out);
        assert_eq!(out, b"[]\n");
        table.offense(&offense("192.0.2.1", 0, 10)).unwrap();
        table.offense(&offense("2001:db8::/64", 0, 0)).unwrap();
        out.clear();
        render_bans(&table, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["2001:db8::/64", "192.0.2.1"], "soonest end first");
        assert_eq!(v[1]["type"], "ban");
        assert_eq!(v[1]["time"], "1970-01-01T00:00:10Z");
        assert_eq!(v[1]["until"], "1970-01-01T00:10:10Z");
        assert_eq!(v[1]["ban_seconds"], 600);
    }

    #[test]
    fn bans_are_timed_from_their_log_time() {
        let mut r = Recorder::new();
        let mut table = BanTable::new(
            &[rule("flood", 600, 2.0, 3600, 3600)],
            Allowlist::default(),
            Vhosts::new(),
        );
        let ban = table.offense(&offense("192.0.2.1", 0, 10)).unwrap();
        r.on_event(&Event::Ban(ban), 10_040);
        let unban = table.expire(i64::MAX).remove(0);
        r.on_event(&Event::Unban(unban), 900_000);
        assert_eq!((r.count(), r.sum_ms), (1, 40));
    }
}
