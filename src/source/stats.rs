//! What happened to the lines a producer read: hits, and malformed lines by kind.

use crate::parse::Malformed;

/// What happened to the lines a producer saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub lines: u64,
    pub bytes: u64,
    /// Lines that are not access-log lines of the format, by [`Malformed`] kind.
    pub malformed: MalformedCounts,
    /// Well-formed lines whose client is not an IP address (a hostname, `unix:`...).
    pub no_client: u64,
    /// Well-formed lines that no rule counts.
    pub unmatched: u64,
    /// Lines stamped more than a day ahead of the clock (a corrupt line or clock); not counted,
    /// because one such line would make every later line look late.
    pub future: u64,
    /// Lines handed to the engine.
    pub hits: u64,
    /// Lines from a trusted proxy whose client was taken from the configured field.
    pub via_proxy: u64,
    /// Lines from a trusted proxy whose client field is missing or not an address: keyed on
    /// the proxy itself (never banned).
    pub proxy_fallback: u64,
}

impl IngestStats {
    pub fn add(&mut self, o: &IngestStats) {
        self.lines += o.lines;
        self.bytes += o.bytes;
        self.malformed.add(&o.malformed);
        self.no_client += o.no_client;
        self.unmatched += o.unmatched;
        self.future += o.future;
        self.hits += o.hits;
        self.via_proxy += o.via_proxy;
        self.proxy_fallback += o.proxy_fallback;
    }
}

/// Malformed lines by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MalformedCounts {
    pub empty: u64,
    pub too_long: u64,
    pub shape: u64,
    pub time: u64,
    pub status: u64,
    pub number: u64,
    pub other: u64,
}

impl MalformedCounts {
    #[inline]
    pub fn count(&mut self, kind: Malformed) {
        let slot = match kind {
            Malformed::Empty => &mut self.empty,
            Malformed::TooLong => &mut self.too_long,
            Malformed::Shape => &mut self.shape,
            Malformed::Time => &mut self.time,
            Malformed::Status => &mut self.status,
            Malformed::Number => &mut self.number,
            #[allow(unreachable_patterns)]
            _ => &mut self.other,
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.empty + self.too_long + self.shape + self.time + self.status + self.number + self.other
    }

    pub fn add(&mut self, o: &MalformedCounts) {
        self.empty += o.empty;
        self.too_long += o.too_long;
        self.shape += o.shape;
        self.time += o.time;
        self.status += o.status;
        self.number += o.number;
        self.other += o.other;
    }
}
