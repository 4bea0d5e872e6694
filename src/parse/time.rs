//! Log timestamps to UTC milliseconds: `[10/Oct/2000:13:55:36 -0700]` (with a per-thread cache),
//! ISO 8601, epoch seconds with fractions, and the pieces that custom formats log separately.
//!
//! The hot form is the access-log date: a log holds each second's text many times in a row, so
//! [`TimeCache`] keeps the last text and its result and a repeated second costs one compare. Every
//! other form is parsed on each line; all of them are allocation-free and reject impossible dates
//! (31 February, hour 24, month 13) rather than normalising them.

use super::Malformed;

/// Length of `10/Oct/2000:13:55:36 -0700`.
pub const HTTPDATE_LEN: usize = 26;

/// Per-thread memo of access-log date texts and their UTC seconds.
///
/// Two levels: the last whole text (a repeated second costs one compare), and the last day with
/// its zone (a new second of the same day costs six digits; logs whose lines are out of order
/// within a day stay cheap).
#[derive(Clone, Debug, Default)]
pub struct TimeCache {
    /// The last text seen and its UTC seconds.
    key: [u8; HTTPDATE_LEN],
    secs: i64,
    /// UTC seconds of midnight of `key`'s day in `key`'s zone.
    day_secs: i64,
    valid: bool,
}

impl TimeCache {
    pub fn new() -> TimeCache {
        TimeCache::default()
    }

    /// UTC seconds of `dd/Mon/yyyy:HH:MM:SS +zzzz` (exactly [`HTTPDATE_LEN`] bytes, no brackets).
    #[inline]
    pub fn httpdate(&mut self, text: &[u8]) -> Option<i64> {
        let key: &[u8; HTTPDATE_LEN] = text.try_into().ok()?;
        if self.valid && same_date(key, &self.key) {
            return Some(self.secs);
        }
        let secs = if self.valid && same_day(key, &self.key) {
            if key[11] != b':' || key[14] != b':' || key[17] != b':' || key[20] != b' ' {
                return None;
            }
            let (h, mi, s) = (
                num2(&key[12..14])?,
                num2(&key[15..17])?,
                num2(&key[18..20])?,
            );
            if h > 23 || mi > 59 || s > 59 {
                return None;
            }
            self.day_secs + (h * 3600 + mi * 60 + s) as i64
        } else {
            self.new_day(key)?
        };
        self.key = *key;
        self.secs = secs;
        Some(secs)
    }

    #[cold]
    #[inline(never)]
    fn new_day(&mut self, key: &[u8; HTTPDATE_LEN]) -> Option<i64> {
        let secs = parse_httpdate_exact(key)?;
        let clock = num2(&key[12..14])? * 3600 + num2(&key[15..17])? * 60 + num2(&key[18..20])?;
        self.day_secs = secs - clock as i64;
        self.valid = true;
        Some(secs)
    }
}

/// Same `dd/Mon/yyyy` and zone (bytes 0..11 and 21..26).
#[inline(always)]
fn same_day(a: &[u8; HTTPDATE_LEN], b: &[u8; HTTPDATE_LEN]) -> bool {
    word(a, 0) == word(b, 0) && word(a, 3) == word(b, 3) && word(a, 18) >> 24 == word(b, 18) >> 24
}

/// Eight bytes of `x` from `at`, as one integer (little-endian: byte `at` lowest).
#[inline(always)]
fn word(x: &[u8; HTTPDATE_LEN], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&x[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `a == b` as four word compares (the array `==` becomes a library call).
#[inline(always)]
fn same_date(a: &[u8; HTTPDATE_LEN], b: &[u8; HTTPDATE_LEN]) -> bool {
    // Bytes 0..8, 8..16, 16..24 and 18..26 (overlapping) cover all 26.
    word(a, 0) == word(b, 0)
        && word(a, 8) == word(b, 8)
        && word(a, 16) == word(b, 16)
        && word(a, 18) == word(b, 18)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
#[inline]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// UTC seconds of a validated civil date and time at `offset_s` east of UTC.
pub fn civil_to_unix(
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    offset_s: i32,
) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - offset_s as i64)
}

#[inline]
fn digit(b: u8) -> Option<u32> {
    let d = b.wrapping_sub(b'0');
    (d < 10).then_some(d as u32)
}

#[inline]
fn num2(b: &[u8]) -> Option<u32> {
    Some(digit(b[0])? * 10 + digit(b[1])?)
}

#[inline]
fn num4(b: &[u8]) -> Option<u32> {
    Some(num2(&b[..2])? * 100 + num2(&b[2..4])?)
}

const MONTHS: [&[u8]; 12] = [
    b"january",
    b"february",
    b"march",
    b"april",
    b"may",
    b"june",
    b"july",
    b"august",
    b"september",
    b"october",
    b"november",
    b"december",
];

/// English month from its three-letter abbreviation, any case (`Oct` → 10). Servers write the C
/// locale's names whatever the system language, so localised names (`Mai`) are refused.
#[inline]
pub fn month_abbr(b: &[u8]) -> Option<u32> {
    if b.len() != 3 {
        return None;
    }
    let key = [b[0] | 0x20, b[1] | 0x20, b[2] | 0x20];
    MONTHS
        .iter()
        .position(|m| m[..3] == key)
        .map(|i| i as u32 + 1)
}

/// English month from its abbreviation or full name, any case.
pub fn month_name(b: &[u8]) -> Option<u32> {
    if b.len() == 3 {
        return month_abbr(b);
    }
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(b))
        .map(|i| i as u32 + 1)
}

/// `+hhmm` / `-hhmm` → seconds east of UTC.
#[inline]
fn offset_hhmm(b: &[u8]) -> Option<i32> {
    if b.len() != 5 {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h = num2(&b[1..3])?;
    let m = num2(&b[3..5])?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60) as i32)
}

fn parse_httpdate_exact(t: &[u8; HTTPDATE_LEN]) -> Option<i64> {
    if t[2] != b'/' || t[6] != b'/' || t[11] != b':' || t[14] != b':' || t[17] != b':' {
        return None;
    }
    if t[20] != b' ' {
        return None;
    }
    let d = num2(&t[0..2])?;
    let mo = month_abbr(&t[3..6])?;
    let y = num4(&t[7..11])?;
    let h = num2(&t[12..14])?;
    let mi = num2(&t[15..17])?;
    let s = num2(&t[18..20])?;
    let off = offset_hhmm(&t[21..26])?;
    civil_to_unix(y as i64, mo, d, h, mi, s, off)
}

/// UTC seconds of an access-log date, optionally in brackets, with the month abbreviated or
/// written out in English (`04/March/2015:13:17:15 +0200`). The zone is required.
pub fn parse_httpdate(text: &[u8]) -> Option<i64> {
    let t = text.strip_prefix(b"[").unwrap_or(text);
    let t = t.strip_suffix(b"]").unwrap_or(t);
    if let Ok(exact) = <&[u8; HTTPDATE_LEN]>::try_from(t) {
        return parse_httpdate_exact(exact);
    }
    // The long-month form: `dd/Month/yyyy:HH:MM:SS +zzzz`.
    let slash = t.iter().skip(3).position(|&b| b == b'/')? + 3;
    if t.len() < 3 || t[2] != b'/' || t.len() != slash + 20 {
        return None;
    }
    let mo = month_name(&t[3..slash])?;
    let rest = &t[slash..];
    if rest[0] != b'/' || rest[5] != b':' || rest[8] != b':' || rest[11] != b':' || rest[14] != b' '
    {
        return None;
    }
    civil_to_unix(
        num4(&rest[1..5])? as i64,
        mo,
        num2(&t[0..2])?,
        num2(&rest[6..8])?,
        num2(&rest[9..11])?,
        num2(&rest[12..14])?,
        offset_hhmm(&rest[15..20])?,
    )
}

/// `dd/Mon/yyyy HH:MM:SS` without a zone (Python's `http.server` log), taken as UTC.
pub fn parse_zoneless_httpdate(t: &[u8]) -> Option<i64> {
    if t.len() != 20 || t[2] != b'/' || t[6] != b'/' || t[11] != b' ' {
        return None;
    }
    if t[14] != b':' || t[17] != b':' {
        return None;
    }
    civil_to_unix(
        num4(&t[7..11])? as i64,
        month_abbr(&t[3..6])?,
        num2(&t[0..2])?,
        num2(&t[12..14])?,
        num2(&t[15..17])?,
        num2(&t[18..20])?,
        0,
    )
}

/// Leading ASCII digits of `b`, at most `max` of them: (value, count). Count 0 when none.
#[inline]
pub fn leading_digits(b: &[u8], max: usize) -> (u64, usize) {
    let mut v: u64 = 0;
    let mut n = 0;
    while n < b.len() && n < max {
        match digit(b[n]) {
            Some(d) => v = v * 10 + d as u64,
            None => break,
        }
        n += 1;
    }
    (v, n)
}

/// A fraction's digits scaled to milliseconds (`5` → 500, `123456` → 123): (ms, digits used).
fn fraction_ms(b: &[u8]) -> (i64, usize) {
    let mut ms: i64 = 0;
    let mut n = 0;
    while n < b.len() && b[n].is_ascii_digit() {
        if n < 3 {
            ms = ms * 10 + (b[n] - b'0') as i64;
        }
        n += 1;
    }
    for _ in n..3 {
        ms *= 10;
    }
    (ms, n)
}

/// nginx `$time_iso8601` (`2026-11-25T10:00:05+01:00`), also with `Z`, a `+hhmm` zone or a
/// fraction. Returns (UTC ms, whether a fraction was present, bytes consumed).
pub fn parse_iso8601(t: &[u8]) -> Option<(i64, bool, usize)> {
    if t.len() < 20 || t[4] != b'-' || t[7] != b'-' || (t[10] != b'T' && t[10] != b' ') {
        return None;
    }
    if t[13] != b':' || t[16] != b':' {
        return None;
    }
    let mut i = 19;
    let mut frac = None;
    if t.get(i) == Some(&b'.') || t.get(i) == Some(&b',') {
        let (ms, n) = fraction_ms(&t[i + 1..]);
        if n == 0 {
            return None;
        }
        frac = Some(ms);
        i += 1 + n;
    }
    let off = match t.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        b'+' | b'-' => {
            let z = t.get(i..i + 3)?;
            let sign = if z[0] == b'-' { -1 } else { 1 };
            let h = num2(&z[1..3])?;
            i += 3;
            if t.get(i) == Some(&b':') {
                i += 1;
            }
            let m = num2(t.get(i..i + 2)?)?;
            i += 2;
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60) as i32
        }
        _ => return None,
    };
    let secs = civil_to_unix(
        num4(&t[0..4])? as i64,
        num2(&t[5..7])?,
        num2(&t[8..10])?,
        num2(&t[11..13])?,
        num2(&t[14..16])?,
        num2(&t[17..19])?,
        off,
    )?;
    Some((secs * 1000 + frac.unwrap_or(0), frac.is_some(), i))
}

/// Epoch seconds with an optional fraction (nginx `$msec`: `1700000000.123`). Returns
/// (UTC ms, whether a fraction was present, bytes consumed).
pub fn parse_epoch_seconds(t: &[u8]) -> Option<(i64, bool, usize)> {
    let (secs, n) = leading_digits(t, 12);
    if n == 0 || t.get(n).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if t.get(n) == Some(&b'.') {
        let (ms, f) = fraction_ms(&t[n + 1..]);
        if f == 0 {
            return None;
        }
        return Some((secs as i64 * 1000 + ms, true, n + 1 + f));
    }
    Some((secs as i64 * 1000, false, n))
}

/// How fine a logged time is; when a format logs several, the finest one is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Seconds,
    Millis,
}

/// The time pieces of one line, gathered field by field and resolved once at the end.
///
/// Formats may spread a time over several fields (`%{%Y-%m-%dT%H:%M:%S}t.%{usec_frac}t%{%z}t`) or
/// log it several times at different precisions (`%t` and `%{msec}t`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeParts {
    /// The finest complete time seen so far, in UTC ms.
    best: Option<(i64, Precision)>,
    /// A sub-second fraction logged on its own (`%{msec_frac}t`).
    frac_ms: Option<i64>,
    /// Civil pieces from strftime fields.
    pub year: Option<i64>,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub hour: Option<u32>,
    pub minute: Option<u32>,
    pub second: Option<u32>,
    pub offset_s: Option<i32>,
    /// A strftime field gave an epoch (`%s`).
    pub epoch_s: Option<i64>,
}

impl TimeParts {
    #[inline]
    pub fn complete(&mut self, ms: i64, p: Precision) {
        match self.best {
            Some((_, q)) if q >= p => {}
            _ => self.best = Some((ms, p)),
        }
    }

    pub fn fraction(&mut self, ms: i64) {
        self.frac_ms = Some(ms);
    }

    /// The line's time in UTC ms; `Ok(None)` when the line logged no usable time (none, or
    /// civil pieces without a date and an hour and minute), `Err` when the pieces do not make a
    /// valid date.
    pub fn resolve(&self) -> Result<Option<i64>, Malformed> {
        let mut best = self.best;
        if let Some(s) = self.epoch_s {
            if best.is_none() {
                best = Some((s * 1000, Precision::Seconds));
            }
        } else if let (Some(y), Some(mo), Some(d), Some(h), Some(mi)) =
            (self.year, self.month, self.day, self.hour, self.minute)
        {
            let secs = civil_to_unix(
                y,
                mo,
                d,
                h,
                mi,
                self.second.unwrap_or(0),
                self.offset_s.unwrap_or(0),
            )
            .ok_or(Malformed::Time)?;
            if best.is_none() {
                best = Some((secs * 1000, Precision::Seconds));
            }
        } else if self.month.is_some_and(|m| !(1..=12).contains(&m))
            || self.day.is_some_and(|d| !(1..=31).contains(&d))
        {
            return Err(Malformed::Time);
        }
        Ok(best.map(|(ms, p)| match (p, self.frac_ms) {
            (Precision::Seconds, Some(f)) => ms + f,
            _ => ms,
        }))
    }
}

/// One piece of a compiled strftime pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(u8),
    Year,
    Year2,
    Month,
    MonthName,
    Day,
    Hour24,
    Hour12,
    AmPm,
    Minute,
    Second,
    Zone,
    WeekdayName,
    DayOfYear,
    Epoch,
    /// Fractional seconds (`%f`, not POSIX but common in strftime-like time formats).
    Fraction,
}

/// A strftime pattern (Apache's `%{...}t`) compiled for parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strftime {
    pieces: Vec<Piece>,
}

/// A strftime conversion the parser does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownConversion(pub char);

impl Strftime {
    pub fn compile(pattern: &str) -> Result<Strftime, UnknownConversion> {
        let mut pieces = Vec::new();
        let mut chars = pattern.bytes();
        while let Some(c) = chars.next() {
            if c != b'%' {
                pieces.push(Piece::Lit(c));
                continue;
            }
            let mut conv = chars.next().ok_or(UnknownConversion('%'))?;
            // GNU flags and the E/O modifiers change output padding only.
            while matches!(conv, b'-' | b'_' | b'0' | b'^' | b'#' | b'E' | b'O') {
                conv = chars.next().ok_or(UnknownConversion('%'))?;
            }
            match conv {
                b'Y' => pieces.push(Piece::Year),
                b'y' => pieces.push(Piece::Year2),
                b'm' => pieces.push(Piece::Month),
                b'b' | b'h' | b'B' => pieces.push(Piece::MonthName),
                b'd' | b'e' => pieces.push(Piece::Day),
                b'H' | b'k' => pieces.push(Piece::Hour24),
                b'I' | b'l' => pieces.push(Piece::Hour12),
                b'p' | b'P' => pieces.push(Piece::AmPm),
                b'M' => pieces.push(Piece::Minute),
                b'S' => pieces.push(Piece::Second),
                b'z' => pieces.push(Piece::Zone),
                b'a' | b'A' => pieces.push(Piece::WeekdayName),
                b'j' => pieces.push(Piece::DayOfYear),
                b's' => pieces.push(Piece::Epoch),
                b'f' => pieces.push(Piece::Fraction),
                b'T' => pieces.extend([
                    Piece::Hour24,
                    Piece::Lit(b':'),
                    Piece::Minute,
                    Piece::Lit(b':'),
                    Piece::Second,
                ]),
                b'R' => pieces.extend([Piece::Hour24, Piece::Lit(b':'), Piece::Minute]),
                b'F' => pieces.extend([
                    Piece::Year,
                    Piece::Lit(b'-'),
                    Piece::Month,
                    Piece::Lit(b'-'),
                    Piece::Day,
                ]),
                b'D' => pieces.extend([
                    Piece::Month,
                    Piece::Lit(b'/'),
                    Piece::Day,
                    Piece::Lit(b'/'),
                    Piece::Year2,
                ]),
                b'n' | b't' => pieces.push(Piece::Lit(b' ')),
                b'%' => pieces.push(Piece::Lit(b'%')),
                other => return Err(UnknownConversion(other as char)),
            }
        }
        Ok(Strftime { pieces })
    }

    /// Whether the pattern gives at least a date or an epoch (a time on its own is only a part).
    pub fn has_date(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Year | Piece::Year2 | Piece::Day | Piece::DayOfYear | Piece::Epoch
            )
        })
    }

    /// Parses `t` from its start into `parts`; returns the bytes consumed.
    pub fn parse(&self, t: &[u8], parts: &mut TimeParts) -> Option<usize> {
        let mut i = 0;
        let mut pm: Option<bool> = None;
        let mut hour12: Option<u32> = None;
        let mut day_of_year: Option<u32> = None;
        for piece in &self.pieces {
            let rest = &t[i..];
            match piece {
                Piece::Lit(c) => {
                    if rest.first() != Some(c) {
                        return None;
                    }
                    i += 1;
                }
                Piece::Year => {
                    let (v, n) = leading_digits(rest, 4);
                    if n != 4 {
                        return None;
                    }
                    parts.year = Some(v as i64);
                    i += n;
                }
                Piece::Year2 => {
                    let (v, n) = leading_digits(rest, 2);
                    if n != 2 {
                        return None;
                    }
                    // POSIX: 69–99 are 1969–1999, 00–68 are 2000–2068.
                    parts.year = Some(if v >= 69 { 1900 + v } else { 2000 + v } as i64);
                    i += n;
                }
                Piece::Month => parts.month = Some(self::num_field(rest, 2, &mut i)?),
                Piece::Day => {
                    // `%e` pads with a space.
                    if rest.first() == Some(&b' ') {
                        i += 1;
                        parts.day = Some(self::num_field(&t[i..], 1, &mut i)?);
                    } else {
                        parts.day = Some(self::num_field(rest, 2, &mut i)?);
                    }
                }
                Piece::Hour24 => parts.hour = Some(self::num_field(rest, 2, &mut i)?),
                Piece::Hour12 => hour12 = Some(self::num_field(rest, 2, &mut i)?),
                Piece::Minute => parts.minute = Some(self::num_field(rest, 2, &mut i)?),
                Piece::Second => parts.second = Some(self::num_field(rest, 2, &mut i)?),
                Piece::DayOfYear => day_of_year = Some(self::num_field(rest, 3, &mut i)?),
                Piece::AmPm => {
                    let w = rest.get(..2)?;
                    pm = Some(match [w[0] | 0x20, w[1] | 0x20] {
                        [b'a', b'm'] => false,
                        [b'p', b'm'] => true,
                        _ => return None,
                    });
                    i += 2;
                }
                Piece::MonthName => {
                    let n = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
                    parts.month = Some(month_name(&rest[..n])?);
                    i += n;
                }
                Piece::WeekdayName => {
                    let n = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
                    if n < 3 {
                        return None;
                    }
                    i += n;
                }
                Piece::Zone => {
                    if rest.first() == Some(&b'Z') {
                        parts.offset_s = Some(0);
                        i += 1;
                    } else {
                        parts.offset_s = Some(offset_hhmm(rest.get(..5)?)?);
                        i += 5;
                    }
                }
                Piece::Epoch => {
                    let (v, n) = leading_digits(rest, 12);
                    if n == 0 {
                        return None;
                    }
                    parts.epoch_s = Some(v as i64);
                    i += n;
                }
                Piece::Fraction => {
                    let (ms, n) = fraction_ms(rest);
                    if n == 0 {
                        return None;
                    }
                    parts.fraction(ms);
                    i += n;
                }
            }
        }
        if let Some(h) = hour12 {
            if !(1..=12).contains(&h) {
                return None;
            }
            parts.hour = Some(h % 12 + if pm == Some(true) { 12 } else { 0 });
        }
        if let Some(doy) = day_of_year {
            let y = parts.year?;
            if doy == 0 || doy > if is_leap(y) { 366 } else { 365 } {
                return None;
            }
            let mut left = doy;
            for m in 1..=12 {
                let dim = days_in_month(y, m);
                if left <= dim {
                    parts.month = Some(m);
                    parts.day = Some(left);
                    break;
                }
                left -= dim;
            }
        }
        Some(i)
    }
}

/// Exactly `width` digits (1 allows one or two) at the start of `b`; advances `i`.
fn num_field(b: &[u8], width: usize, i: &mut usize) -> Option<u32> {
    let (v, n) = leading_digits(b, width.max(2));
    if n == 0 || (width > 1 && n != width) {
        return None;
    }
    *i += n;
    Some(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hd(s: &str) -> Option<i64> {
        TimeCache::new().httpdate(s.as_bytes())
    }

    #[test]
    fn httpdate_any_offset() {
        assert_eq!(hd("10/Oct/2000:13:55:36 -0700"), Some(971211336));
        assert_eq!(hd("10/Oct/2000:20:55:36 +0000"), Some(971211336));
        assert_eq!(hd("22/Jan/2019:03:56:14 +0330"), Some(1548116774));
        assert_eq!(hd("01/Jan/1970:00:00:00 -0930"), Some(9 * 3600 + 1800));
        assert_eq!(hd("31/Dec/1969:19:00:00 -0500"), Some(0));
    }

    #[test]
    fn httpdate_rejects_impossible_dates() {
        for s in [
            "31/Feb/2020:00:00:00 +0000",
            "29/Feb/2019:00:00:00 +0000",
            "10/Oct/2000:24:00:00 +0000",
            "10/Oct/2000:23:60:00 +0000",
            "10/Oct/2000:23:00:60 +0000",
            "00/Oct/2000:23:00:00 +0000",
            "10/Mai/2000:13:55:36 +0000",
            "10/Oct/2000:13:55:36 +2400",
            "10/Oct/2000:13:55:36 *0000",
            "10-Oct-2000:13:55:36 +0000",
            "1a/Oct/2000:13:55:36 +0000",
        ] {
            assert_eq!(hd(s), None, "{s}");
        }
        assert!(hd("29/Feb/2020:00:00:00 +0000").is_some());
        assert!(hd("29/Feb/2000:00:00:00 +0000").is_some());
        assert_eq!(hd("29/Feb/1900:00:00:00 +0000"), None);
    }

    #[test]
    fn cache_returns_same_value_and_follows_changes() {
        let mut c = TimeCache::new();
        let a = c.httpdate(b"10/Oct/2000:13:55:36 -0700");
        assert_eq!(c.httpdate(b"10/Oct/2000:13:55:36 -0700"), a);
        assert_eq!(c.httpdate(b"10/Oct/2000:13:55:37 -0700"), a.map(|s| s + 1));
        assert_eq!(
            c.httpdate(b"10/Oct/2000:13:55:37 -0600"),
            a.map(|s| s + 1 - 3600)
        );
        assert_eq!(c.httpdate(b"10/Oct/2000:13:55:99 -0600"), None);
        assert_eq!(
            c.httpdate(b"10/Oct/2000:13:55:37 -0600"),
            a.map(|s| s + 1 - 3600)
        );
    }

    #[test]
    fn loose_httpdate_forms() {
        assert_eq!(
            parse_httpdate(b"[04/March/2015:13:17:15 +0200]"),
            parse_httpdate(b"04/Mar/2015:13:17:15 +0200")
        );
        assert_eq!(parse_httpdate(b"[04/Map/2015:13:17:15 +0200]"), None);
        assert_eq!(parse_httpdate(b"13/Mar/2016:01:59:59"), None);
        assert_eq!(
            parse_zoneless_httpdate(b"29/Aug/2023 22:02:58"),
            Some(1693346578)
        );
    }

    #[test]
    fn iso_and_epoch() {
        assert_eq!(
            parse_iso8601(b"2026-11-25T10:00:05+01:00"),
            Some((1795597205000, false, 25))
        );
        assert_eq!(
            parse_iso8601(b"2026-11-25T09:00:05Z rest"),
            Some((1795597205000, false, 20))
        );
        assert_eq!(
            parse_iso8601(b"2026-11-25T09:00:05.25+0000"),
            Some((1795597205250, true, 27))
        );
        assert_eq!(parse_iso8601(b"2026-02-30T09:00:05Z"), None);
        assert_eq!(
            parse_epoch_seconds(b"1700000000.123 x"),
            Some((1700000000123, true, 14))
        );
        assert_eq!(
            parse_epoch_seconds(b"1700000000"),
            Some((1700000000000, false, 10))
        );
        assert_eq!(parse_epoch_seconds(b".5"), None);
        assert_eq!(parse_epoch_seconds(b"1."), None);
    }

    #[test]
    fn strftime_pieces_compose() {
        let mut p = TimeParts::default();
        let f = Strftime::compile("%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(
            f.parse(b"2019-05-06T12:09:43.123456-0400", &mut p),
            Some(19)
        );
        let z = Strftime::compile("%z").unwrap();
        assert_eq!(z.parse(b"-0400", &mut p), Some(5));
        p.fraction(123);
        assert_eq!(p.resolve(), Ok(Some(1557158983123)));

        let mut q = TimeParts::default();
        let f = Strftime::compile("%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert_eq!(f.parse(b"10/Oct/2000:13:55:36 -0700", &mut q), Some(26));
        assert_eq!(q.resolve(), Ok(Some(971211336000)));

        let mut r = TimeParts::default();
        let f = Strftime::compile("%a %b %e %T %Y").unwrap();
        assert!(f.parse(b"Tue Oct  3 13:55:36 2000", &mut r).is_some());
        assert_eq!(r.resolve(), Ok(Some(970581336000)));

        let mut bad = TimeParts::default();
        let f = Strftime::compile("%Y-%m-%d").unwrap();
        assert!(f.parse(b"2019-13-06", &mut bad).is_some());
        assert_eq!(bad.resolve(), Err(Malformed::Time));
        let mut date_only = TimeParts::default();
        assert!(f.parse(b"2019-05-06", &mut date_only).is_some());
        assert_eq!(date_only.resolve(), Ok(None));
        let mut bad_day = TimeParts::default();
        let f = Strftime::compile("%Y-%m-%d %H:%M").unwrap();
        assert!(f.parse(b"2019-02-30 10:00", &mut bad_day).is_some());
        assert_eq!(bad_day.resolve(), Err(Malformed::Time));
        assert_eq!(Strftime::compile("%Q"), Err(UnknownConversion('Q')));
    }

    #[test]
    fn finest_time_wins() {
        let mut p = TimeParts::default();
        p.complete(1_000_000, Precision::Seconds);
        p.complete(1_000_250, Precision::Millis);
        p.complete(2_000_000, Precision::Seconds);
        assert_eq!(p.resolve(), Ok(Some(1_000_250)));
        let mut q = TimeParts::default();
        q.complete(1_000_000, Precision::Seconds);
        q.fraction(690);
        assert_eq!(q.resolve(), Ok(Some(1_000_690)));
        assert_eq!(TimeParts::default().resolve(), Ok(None));
    }
}
