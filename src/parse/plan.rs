//! A compiled custom format (a field plan) and its execution over one line.
//!
//! A plan is a list of literals and fields. Literals must match byte for byte. Fields either
//! delimit themselves by their grammar (times, status, size: they read what they need) or are
//! free text that ends where the next literal starts, at the closing quote when the format
//! quotes them, or at the end of the line. Bytes after the last step are ignored, so a log
//! whose format grew extra trailing fields still parses.

use memchr::memchr;

use super::scan::{self, find_close_quote, split_request};
use super::time::{
    leading_digits, parse_epoch_seconds, parse_httpdate, parse_iso8601, Precision, Strftime,
    TimeCache, TimeParts, HTTPDATE_LEN,
};
use super::{Malformed, Record};

/// Which [`Record`] slot a field fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Skip,
    Client,
    Ident,
    User,
    Request,
    Method,
    Target,
    Protocol,
    Status,
    Bytes,
    Referer,
    UserAgent,
    Vhost,
}

/// How a field's value is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Free text, delimited by its surroundings.
    Text,
    /// Three digits or `-`.
    Status,
    /// Digits or `-`.
    Bytes,
    /// `10/Oct/2000:13:55:36 -0700`, in brackets for Apache's `%t`.
    HttpDate {
        brackets: bool,
    },
    /// `2026-11-25T10:00:05+01:00`
    Iso8601,
    /// `1700000000.123`
    EpochFrac,
    /// Whole epoch seconds / milliseconds / microseconds.
    EpochS,
    EpochMs,
    EpochUs,
    /// The millisecond / microsecond part of the current second.
    FracMs,
    FracUs,
    Strftime(Strftime),
}

impl Kind {
    pub fn is_time(&self) -> bool {
        !matches!(self, Kind::Text | Kind::Status | Kind::Bytes)
    }
}

/// Where a free-text field ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the first occurrence of the next literal.
    Lit(Box<[u8]>),
    /// Quoted: at a quote (not escaped) that starts the next literal. `last` says the literal is
    /// the plan's last step, so the quote must also end the line or be followed by a space.
    Quoted {
        next: Box<[u8]>,
        last: bool,
    },
    /// Another field follows directly: at a space (or a `?` for a path followed by its query).
    Space,
    Query,
    Eol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub kind: Kind,
    pub dest: Dest,
    /// The nginx variable name (without `$`), or `http_<header>` for an Apache `%{Header}i`.
    pub name: Option<Box<str>>,
    /// When several fields fill the same slot, the highest rank keeps it.
    pub rank: u8,
    /// Conditional (`%!200r`): `-` means "not logged" rather than a malformed value.
    pub dash_ok: bool,
    /// The raw value also goes to [`Record::real_client`].
    pub real: bool,
    pub stop: Stop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Lit(Box<[u8]>),
    Field(Field),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Method / target / protocol come from their own fields, not from splitting the request.
    pub own_method: bool,
    pub own_target: bool,
    pub own_protocol: bool,
}

impl Plan {
    pub fn fields_mut(&mut self) -> impl Iterator<Item = &mut Field> {
        self.steps.iter_mut().filter_map(|s| match s {
            Step::Field(f) => Some(f),
            Step::Lit(_) => None,
        })
    }

    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.steps.iter().filter_map(|s| match s {
            Step::Field(f) => Some(f),
            Step::Lit(_) => None,
        })
    }

    /// `split`: see [`Format::split_request`](super::Format::split_request).
    pub fn parse<'a>(
        &self,
        line: &'a [u8],
        times: &mut TimeCache,
        split: bool,
    ) -> Result<Record<'a>, Malformed> {
        let mut rec = Record::default();
        let mut parts = TimeParts::default();
        let mut pos = 0;
        for step in &self.steps {
            match step {
                Step::Lit(lit) => {
                    if !starts_with(&line[pos..], lit) {
                        return Err(Malformed::Shape);
                    }
                    pos += lit.len();
                }
                Step::Field(f) => {
                    pos = field(f, line, pos, times, &mut parts, &mut rec)?;
                }
            }
        }
        rec.time_ms = parts.resolve()?.unwrap_or(0);
        if split && !rec.request.is_empty() {
            let (m, t, p) = split_request(rec.request);
            if !self.own_method {
                rec.method = m;
            }
            if !self.own_target {
                rec.target = t;
            }
            if !self.own_protocol {
                rec.protocol = p;
            }
        }
        Ok(rec)
    }
}

/// Reads one field at `pos`; returns the position after it.
#[inline]
fn field<'a>(
    f: &Field,
    line: &'a [u8],
    pos: usize,
    times: &mut TimeCache,
    parts: &mut TimeParts,
    rec: &mut Record<'a>,
) -> Result<usize, Malformed> {
    let rest = &line[pos..];
    if f.kind.is_time() {
        if rest.first() == Some(&b'-') && !rest.get(1).is_some_and(u8::is_ascii_digit) {
            return if f.dash_ok {
                Ok(pos + 1)
            } else {
                Err(Malformed::Time)
            };
        }
        return Ok(pos + time_field(&f.kind, rest, times, parts).ok_or(Malformed::Time)?);
    }
    match f.kind {
        Kind::Status => {
            let n = number_len(rest);
            let v = scan::status(&rest[..n])?;
            if f.dest == Dest::Status {
                rec.status = v;
            }
            Ok(pos + n)
        }
        Kind::Bytes => {
            let n = number_len(rest);
            let v = scan::bytes(&rest[..n])?;
            if f.dest == Dest::Bytes {
                rec.bytes = v;
            }
            Ok(pos + n)
        }
        _ => {
            let end = text_end(&f.stop, line, pos)?;
            let v = &line[pos..end];
            if f.real {
                rec.real_client = v;
            }
            store(f.dest, v, rec);
            Ok(end)
        }
    }
}

/// Length of a number token: `-`, or the digits at the start.
#[inline]
fn number_len(b: &[u8]) -> usize {
    if b.first() == Some(&b'-') {
        return 1;
    }
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

#[inline]
fn store<'a>(dest: Dest, v: &'a [u8], rec: &mut Record<'a>) {
    match dest {
        Dest::Skip | Dest::Status | Dest::Bytes => {}
        Dest::Client => rec.client = v,
        Dest::Ident => rec.ident = v,
        // Apache logs an empty user name as `""`.
        Dest::User => rec.user = if v == b"\"\"" { b"" } else { v },
        Dest::Request => rec.request = v,
        Dest::Method => rec.method = v,
        Dest::Target => rec.target = v,
        Dest::Protocol => rec.protocol = v,
        Dest::Referer => rec.referer = v,
        Dest::UserAgent => rec.user_agent = v,
        Dest::Vhost => rec.vhost = scan::strip_port(v),
    }
}

/// End (exclusive) of a free-text field starting at `pos`.
#[inline]
fn text_end(stop: &Stop, line: &[u8], pos: usize) -> Result<usize, Malformed> {
    let rest = &line[pos..];
    let found = match stop {
        Stop::Eol => Some(rest.len()),
        Stop::Space => Some(memchr(b' ', rest).unwrap_or(rest.len())),
        Stop::Query => Some(
            rest.iter()
                .position(|&b| b == b'?' || b == b' ')
                .unwrap_or(rest.len()),
        ),
        Stop::Lit(lit) => find_lit(rest, lit),
        Stop::Quoted { next, last } => {
            let tail = &next[1..];
            return find_close_quote(line, pos, |after| {
                after.starts_with(tail) && (!*last || scan::at_field_end(&after[tail.len()..]))
            })
            .ok_or(Malformed::Shape);
        }
    };
    found.map(|k| pos + k).ok_or(Malformed::Shape)
}

/// `hay.starts_with(lit)` for the short literals of a format, without a `memcmp` call.
#[inline]
fn starts_with(hay: &[u8], lit: &[u8]) -> bool {
    hay.len() >= lit.len() && hay.iter().zip(lit).all(|(a, b)| a == b)
}

/// First occurrence of a (short) literal: its first byte by memchr, then the rest compared.
#[inline]
fn find_lit(hay: &[u8], lit: &[u8]) -> Option<usize> {
    let (&first, more) = lit.split_first()?;
    let mut from = 0;
    while let Some(k) = memchr(first, &hay[from..]) {
        let at = from + k;
        if starts_with(&hay[at + 1..], more) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Parses a time field at the start of `t` into `parts`; returns the bytes consumed.
fn time_field(
    kind: &Kind,
    t: &[u8],
    times: &mut TimeCache,
    parts: &mut TimeParts,
) -> Option<usize> {
    match kind {
        Kind::HttpDate { brackets } => {
            let (open, inner) = if *brackets {
                (1, t.strip_prefix(b"[")?)
            } else {
                (0, t)
            };
            let (secs, n) = match inner.get(..HTTPDATE_LEN).and_then(|d| times.httpdate(d)) {
                Some(secs) => (secs, HTTPDATE_LEN),
                None => {
                    // The long-month form: up to the zone after the first space.
                    let sp = memchr(b' ', inner)?;
                    let n = (sp + 6).min(inner.len());
                    (parse_httpdate(&inner[..n])?, n)
                }
            };
            if *brackets && inner.get(n) != Some(&b']') {
                return None;
            }
            parts.complete(secs * 1000, Precision::Seconds);
            Some(open + n + usize::from(*brackets))
        }
        Kind::Iso8601 => {
            let (ms, frac, n) = parse_iso8601(t)?;
            parts.complete(ms, precision(frac));
            Some(n)
        }
        Kind::EpochFrac => {
            let (ms, frac, n) = parse_epoch_seconds(t)?;
            parts.complete(ms, precision(frac));
            Some(n)
        }
        Kind::EpochS | Kind::EpochMs | Kind::EpochUs => {
            let (v, n) = leading_digits(t, 19);
            if n == 0 || n == 19 {
                return None;
            }
            let v = v as i64;
            match kind {
                // Up to 18 digits of seconds do not fit in milliseconds: not a time.
                Kind::EpochS => parts.complete(v.checked_mul(1000)?, Precision::Seconds),
                Kind::EpochMs => parts.complete(v, Precision::Millis),
                _ => parts.complete(v / 1000, Precision::Millis),
            }
            Some(n)
        }
        Kind::FracMs | Kind::FracUs => {
            let (v, n) = leading_digits(t, 6);
            if n == 0 {
                return None;
            }
            parts.fraction(if *kind == Kind::FracMs { v } else { v / 1000 } as i64);
            Some(n)
        }
        Kind::Strftime(f) => f.parse(t, parts),
        Kind::Text | Kind::Status | Kind::Bytes => None,
    }
}

fn precision(frac: bool) -> Precision {
    if frac {
        Precision::Millis
    } else {
        Precision::Seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_search() {
        assert_eq!(find_lit(b"a - b - c", b" - "), Some(1));
        assert_eq!(find_lit(b"a -x - c", b" - "), Some(4));
        assert_eq!(find_lit(b"a -", b" - "), None);
        assert_eq!(find_lit(b"abc", b""), None);
        assert!(starts_with(b"abc", b"ab"));
        assert!(!starts_with(b"a", b"ab"));
    }
}
