//! Lines floodwatch could not use, said loudly: the first malformed line and the first line
//! whose client is not an address are kept as samples (once, off the hot path), and when more
//! than a few percent of the lines read were unusable, [`warning`] names the share, shows a
//! sample and the likely cause (another format, JSON lines, host names instead of addresses).
//! A log floodwatch cannot read must never look like a quiet one.

use crate::parse::Malformed;
use crate::source::ingest::IngestStats;

/// Unusable lines above this share of the lines read (in percent) are reported.
pub const WARN_PERCENT: u64 = 5;
/// Fewer lines than this are too few to judge.
pub const MIN_LINES: u64 = 20;
/// How much of a sample line is kept.
const SAMPLE_BYTES: usize = 240;

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
            client_hint(client)
        )
    });
    let parts = match by_malformed {
        true => [malformed_part, client_part],
        false => [client_part, malformed_part],
    };
    for p in parts.into_iter().flatten() {
        text.push_str(&p);
    }
    Some(text)
}

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
