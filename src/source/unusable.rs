//! Lines floodwatch could not use, said loudly: the first malformed line and the first line
//! whose client is not an address are kept as samples (once, off the hot path), and when more
//! than a few percent of the lines read were unusable, [`warning`] names the share, shows a
//! sample and the likely cause (another format, JSON lines, host names instead of addresses).
//! A log floodwatch cannot read must never look like a quiet one.
//!
//! Watch judges each file on its own ([`FileJudge`]): one vhost logging JSON among a thousand
//! that log well is a share too small to see over all of them, and it is the one unprotected.

use crate::parse::Malformed;
use crate::source::stats::{IngestStats, MalformedCounts};

/// Unusable lines above this share of the lines read (in percent) are reported.
pub const WARN_PERCENT: u64 = 5;
/// Fewer lines than this are too few to judge.
pub const MIN_LINES: u64 = 20;
/// How much of a sample line is kept.
const SAMPLE_BYTES: usize = 240;
/// How often one file's warning may be repeated, and how long a stretch of lines a file is
/// judged over (so that a file fixed since is judged on its new lines).
pub const FILE_WARN_EVERY_MS: i64 = 3_600_000;

/// The start of a line (or field) kept as a sample.
pub type Sample = Box<[u8]>;

/// The first unusable lines seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    /// The first malformed line, and why.
    pub malformed: Option<(Malformed, Sample)>,
    /// The first line whose client is not an address, and its client field.
    pub no_client: Option<(Sample, Sample)>,
}

impl Samples {
    /// Keeps `line` if it is the first malformed one.
    #[cold]
    pub fn malformed(&mut self, kind: Malformed, line: &[u8]) {
        if self.malformed.is_none() {
            self.malformed = Some((kind, cut(line)));
        }
    }

    /// Keeps `line` if it is the first whose client (`client`) is not an address.
    #[cold]
    pub fn no_client(&mut self, line: &[u8], client: &[u8]) {
        if self.no_client.is_none() {
            self.no_client = Some((cut(line), cut(client)));
        }
    }

    /// Takes what `other` has that this one lacks.
    pub fn add(&mut self, other: Samples) {
        if self.malformed.is_none() {
            self.malformed = other.malformed;
        }
        if self.no_client.is_none() {
            self.no_client = other.no_client;
        }
    }
}

/// One file's lines, judged on their own: counted since the file was followed, and over the
/// current stretch (at most [`FILE_WARN_EVERY_MS`] long, or since its last warning) for the
/// warning, which is given at most once per stretch.
#[derive(Clone, Debug, Default)]
pub struct FileJudge {
    /// Every line read from the file.
    pub total: IngestStats,
    /// The lines of the current stretch, and its first unusable ones.
    stretch: IngestStats,
    pub samples: Samples,
    stretch_start_ms: Option<i64>,
    warned_ms: Option<i64>,
    /// The last warning given, for `status --files`.
    pub last_warning: Option<String>,
}

impl FileJudge {
    /// Takes what reading the file added to a producer's counters (`before` and `after` the
    /// read), and returns the warning to give now, naming the file (`name`), if one is due.
    pub fn read(
        &mut self,
        before: &IngestStats,
        after: &IngestStats,
        name: impl FnOnce() -> String,
        now_ms: i64,
    ) -> Option<String> {
        let got = since(before, after);
        self.total.add(&got);
        self.stretch.add(&got);
        let start = *self.stretch_start_ms.get_or_insert(now_ms);
        let may_warn = self
            .warned_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= FILE_WARN_EVERY_MS);
        let warning = match may_warn {
            true => warning(&self.stretch, &self.samples).map(|w| format!("{}: {w}", name())),
            false => None,
        };
        if warning.is_some() || now_ms.saturating_sub(start) >= FILE_WARN_EVERY_MS {
            self.stretch = IngestStats::default();
            self.samples = Samples::default();
            self.stretch_start_ms = Some(now_ms);
        }
        if let Some(w) = &warning {
            self.warned_ms = Some(now_ms);
            self.last_warning = Some(w.clone());
        }
        warning
    }
}

/// What a producer's counters gained between `before` and `after`.
fn since(before: &IngestStats, after: &IngestStats) -> IngestStats {
    let m = |a: &MalformedCounts, b: &MalformedCounts| MalformedCounts {
        empty: b.empty.saturating_sub(a.empty),
        too_long: b.too_long.saturating_sub(a.too_long),
        shape: b.shape.saturating_sub(a.shape),
        time: b.time.saturating_sub(a.time),
        status: b.status.saturating_sub(a.status),
        number: b.number.saturating_sub(a.number),
        other: b.other.saturating_sub(a.other),
    };
    IngestStats {
        lines: after.lines.saturating_sub(before.lines),
        bytes: after.bytes.saturating_sub(before.bytes),
        malformed: m(&before.malformed, &after.malformed),
        no_client: after.no_client.saturating_sub(before.no_client),
        unmatched: after.unmatched.saturating_sub(before.unmatched),
        future: after.future.saturating_sub(before.future),
        hits: after.hits.saturating_sub(before.hits),
        via_proxy: after.via_proxy.saturating_sub(before.via_proxy),
        proxy_fallback: after.proxy_fallback.saturating_sub(before.proxy_fallback),
    }
}

fn cut(bytes: &[u8]) -> Sample {
    bytes[..bytes.len().min(SAMPLE_BYTES)].into()
}

/// The warning for `stats`, when more than [`WARN_PERCENT`] of at least [`MIN_LINES`] lines
/// were malformed or had no address for a client; `None` otherwise.
pub fn warning(stats: &IngestStats, samples: &Samples) -> Option<String> {
    let malformed = stats.malformed.total();
    let unusable = malformed + stats.no_client;
    if stats.lines < MIN_LINES || unusable * 100 <= stats.lines * WARN_PERCENT {
        return None;
    }
    let percent = unusable * 100 / stats.lines.max(1);
    let mut text = format!(
        "{percent} % of the lines read could not be used ({unusable} of {}: {malformed} \
         malformed, {} with a client that is not an address)",
        stats.lines, stats.no_client
    );
    // The larger kind speaks first: it is what the admin has to fix.
    let by_malformed = malformed >= stats.no_client;
    let malformed_part = samples.malformed.as_ref().map(|(kind, line)| {
        format!(
            "; first malformed line ({}): {}; {}",
            kind_name(*kind),
            shown(line),
            malformed_hint(*kind, line)
        )
    });
    let client_part = samples.no_client.as_ref().map(|(line, client)| {
        format!(
            "; first line without an address: {}; {}",
            shown(line),
            match vhost_combined_like(line) {
                true => VHOST_COMBINED_HINT.to_string(),
                false => client_hint(client),
            }
        )
    });
    let parts = match by_malformed {
        true => [malformed_part, client_part],
        false => [client_part, malformed_part],
    };
    for p in parts.into_iter().flatten() {
        text.push_str(&p);
    }
    if malformed > 0 {
        text.push_str("; malformed by kind: ");
        text.push_str(&kinds(&stats.malformed).join(", "));
    }
    Some(text)
}

/// The malformed counts that are not zero, as `30 not the format's shape`.
fn kinds(m: &MalformedCounts) -> Vec<String> {
    let all = [
        (m.shape, Malformed::Shape),
        (m.time, Malformed::Time),
        (m.status, Malformed::Status),
        (m.number, Malformed::Number),
        (m.empty, Malformed::Empty),
        (m.too_long, Malformed::TooLong),
    ];
    let mut out: Vec<String> = (all.iter())
        .filter(|(n, _)| *n > 0)
        .map(|(n, k)| format!("{n} {}", kind_name(*k)))
        .collect();
    if m.other > 0 {
        out.push(format!("{} other", m.other));
    }
    out
}

/// Whether `line` starts as Apache's vhost_combined does (`%v:%p %h ...`): a host and port,
/// then the client's address.
fn vhost_combined_like(line: &[u8]) -> bool {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let (Some(first), Some(second)) = (fields.next(), fields.next()) else {
        return false;
    };
    let host_port = match first.iter().rposition(|&b| b == b':') {
        Some(i) => {
            let (host, port) = (&first[..i], &first[i + 1..]);
            !host.is_empty()
                && !port.is_empty()
                && port.iter().all(u8::is_ascii_digit)
                && crate::addr::Addr::parse(first).is_none()
        }
        None => false,
    };
    host_port && crate::addr::Addr::parse(second).is_some()
}

const VHOST_COMBINED_HINT: &str = "no client address in the first field, but a host and port, \
     then an address: is the format vhost_combined? (set [input] format = \"vhost_combined\")";

/// What a [`Malformed`] kind means, in a few words.
pub fn kind_name(kind: Malformed) -> &'static str {
    match kind {
        Malformed::Empty => "empty",
        Malformed::TooLong => "too long",
        Malformed::Shape => "not the format's shape",
        Malformed::Time => "time field",
        Malformed::Status => "status field",
        Malformed::Number => "number field",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

fn malformed_hint(kind: Malformed, line: &[u8]) -> &'static str {
    let start = line.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match (kind, start) {
        _ if vhost_combined_like(line) => VHOST_COMBINED_HINT,
        (_, Some(b'{')) => {
            "it looks like a JSON log: floodwatch reads access-log lines; log a text format \
             (combined, or a log_format/LogFormat given as [input] format)"
        }
        (Malformed::Time, _) => {
            "the time field does not parse: check the time part of [input] format (or --format)"
        }
        (Malformed::Empty | Malformed::TooLong, _) => "lines that are empty or too long",
        _ => {
            "the lines do not match the format: set [input] format (or --format) to the \
              log_format/LogFormat that wrote them"
        }
    }
}

fn client_hint(client: &[u8]) -> String {
    let looks_like_name = client.iter().any(u8::is_ascii_alphabetic)
        && client.contains(&b'.')
        && !client.contains(&b':')
        && client
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-');
    match looks_like_name {
        true => format!(
            "the client field holds a host name ({}): Apache's HostnameLookups On logs names; \
             log the address (HostnameLookups Off, or %a)",
            shown(client)
        ),
        false => format!(
            "the client field is {}: not an address (behind a proxy, see [proxy] \
             client_ip_field)",
            shown(client)
        ),
    }
}

/// A sample as text a terminal or the journal can show: printable ASCII as is, the rest as
/// `\xNN`, in quotes.
pub fn shown(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(lines: u64, shape: u64, no_client: u64) -> IngestStats {
        let mut s = IngestStats {
            lines,
            no_client,
            ..IngestStats::default()
        };
        s.malformed.shape = shape;
        s
    }

    #[test]
    fn a_few_unusable_lines_are_not_reported() {
        let mut samples = Samples::default();
        samples.malformed(Malformed::Shape, b"garbage");
        assert_eq!(warning(&stats(1000, 50, 0), &samples), None);
        assert_eq!(warning(&stats(10, 10, 0), &samples), None, "too few lines");
    }

    #[test]
    fn json_lines_are_named_with_a_sample() {
        let mut samples = Samples::default();
        samples.malformed(Malformed::Shape, b"{\"remote_addr\":\"192.0.2.1\"}\x01");
        samples.malformed(Malformed::Time, b"second: not kept");
        let w = warning(&stats(100, 100, 0), &samples).unwrap();
        assert!(
            w.starts_with("100 % of the lines read could not be used (100 of 100"),
            "{w}"
        );
        assert!(w.contains(r#"{\"remote_addr\":\"192.0.2.1\"}\x01"#), "{w}");
        assert!(w.contains("looks like a JSON log"), "{w}");
        assert!(!w.contains("not kept"));
    }

    #[test]
    fn host_names_as_clients_point_at_hostname_lookups() {
        let mut samples = Samples::default();
        samples.no_client(b"www.example.com - - [01/Jul/1995...", b"www.example.com");
        samples.malformed(Malformed::Shape, b"x");
        let w = warning(&stats(100, 2, 90), &samples).unwrap();
        assert!(w.starts_with("92 %"), "{w}");
        let names = w.find("HostnameLookups").unwrap();
        let shape = w.find("first malformed line").unwrap();
        assert!(names < shape, "the larger kind first: {w}");
        let mut dash = Samples::default();
        dash.no_client(b"- - - [...]", b"-");
        let w = warning(&stats(100, 0, 100), &dash).unwrap();
        assert!(w.contains("client_ip_field"), "{w}");
    }

    #[test]
    fn a_vhost_combined_log_read_as_combined_is_named() {
        let mut samples = Samples::default();
        let line =
            b"shop.example:443 192.0.2.7 - - [07/Dec/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5";
        samples.malformed(Malformed::Time, line);
        let w = warning(&stats(100, 0, 0), &samples);
        assert_eq!(w, None, "counts first");
        let mut s = stats(100, 0, 0);
        s.malformed.time = 100;
        let w = warning(&s, &samples).unwrap();
        assert!(w.contains("is the format vhost_combined?"), "{w}");
        assert!(w.ends_with("malformed by kind: 100 time field"), "{w}");
        assert!(!vhost_combined_like(b"192.0.2.7 - - [07/Dec/2026]"));
        assert!(!vhost_combined_like(b"2001:db8::1 - - [07/Dec/2026]"));
    }

    #[test]
    fn each_file_is_judged_on_its_own_and_warned_about_at_most_hourly() {
        let mut j = FileJudge::default();
        let before = IngestStats::default();
        let mut after = stats(10, 10, 0);
        j.samples.malformed(Malformed::Shape, b"{\"a\":1}");
        assert_eq!(
            j.read(&before, &after, || "/l/a".into(), 0),
            None,
            "too few lines yet"
        );
        let mid = after;
        after = stats(30, 30, 0);
        let w = j.read(&mid, &after, || "/l/a".into(), 1000).unwrap();
        assert!(w.starts_with("/l/a: 100 % of the lines read"), "{w}");
        assert!(w.contains("looks like a JSON log"), "{w}");
        assert_eq!(j.total.lines, 30);
        // Still broken: not said again within the hour, said again after it.
        let (b, a) = (after, stats(60, 60, 0));
        j.samples.malformed(Malformed::Shape, b"{\"a\":2}");
        assert_eq!(j.read(&b, &a, || "/l/a".into(), 2000), None);
        let (b, a) = (a, stats(90, 90, 0));
        let again = j
            .read(&b, &a, || "/l/a".into(), 1000 + FILE_WARN_EVERY_MS)
            .unwrap();
        assert!(
            again.contains("(60 of 60"),
            "judged on the lines since: {again}"
        );
        assert_eq!(j.last_warning.as_deref(), Some(again.as_str()));
        assert_eq!(j.total.lines, 90);
        // Fixed: a good stretch says nothing.
        let mut good = a;
        good.lines += 1000;
        let later = 1000 + 3 * FILE_WARN_EVERY_MS;
        assert_eq!(j.read(&a, &good, || "/l/a".into(), later), None);
    }

    #[test]
    fn the_first_samples_of_several_producers_are_kept() {
        let mut a = Samples::default();
        a.malformed(Malformed::Shape, b"a");
        let mut b = Samples::default();
        b.malformed(Malformed::Shape, b"b");
        b.no_client(b"line", b"host.example");
        a.add(b);
        assert_eq!(a.malformed.unwrap().1.as_ref(), b"a");
        assert!(a.no_client.is_some());
    }
}
