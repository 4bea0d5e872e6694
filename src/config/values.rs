//! Parsers and printers for config values: nginx-style rates, durations, status matchers.

use crate::engine::{Rate, StatusMatch};

pub(crate) const SECOND: u64 = 1000;
pub(crate) const MINUTE: u64 = 60 * SECOND;
pub(crate) const HOUR: u64 = 60 * MINUTE;
pub(crate) const DAY: u64 = 24 * HOUR;
pub(crate) const WEEK: u64 = 7 * DAY;
/// Longest duration accepted anywhere: beyond it a value is a typo, not a policy.
const MAX_DURATION_MS: u64 = 3653 * DAY;

/// `20r/s`, `600r/m`, `0.5r/s` (nginx's units; up to 9 decimals) → milli-requests per second,
/// rounded down as nginx does.
pub fn parse_rate(text: &str) -> Result<Rate, ValueError> {
    let bad = || ValueError::NotARate(text.to_string());
    let (num, per_minute) = match (text.strip_suffix("r/s"), text.strip_suffix("r/m")) {
        (Some(n), _) => (n, false),
        (_, Some(n)) => (n, true),
        _ => return Err(bad()),
    };
    let nanos = decimal_nanos(num).ok_or_else(bad)?;
    // requests × 1e9 → milli-requests per second.
    let milli = if per_minute {
        nanos / 60_000_000
    } else {
        nanos / 1_000_000
    };
    if milli == 0 {
        return Err(ValueError::TooSlow(text.to_string()));
    }
    if milli > 1_000_000_000 {
        return Err(ValueError::TooFast(text.to_string()));
    }
    Ok(Rate {
        milli_per_sec: milli as u64,
        text: text.to_string(),
    })
}

/// A plain decimal (`12`, `0.5`) times 10^9, exactly.
fn decimal_nanos(s: &str) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 12 || !digits(int) || frac.len() > 9 || !digits(frac) {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some(int * 1_000_000_000 + frac_val * 10u128.pow(9 - frac.len() as u32))
}

/// A duration such as `90s`, `10m`, `1h`, `1d`, `1w`, `1h 30m` → milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, ValueError> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| ValueError::NotADuration(text.to_string()))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms > MAX_DURATION_MS {
        return Err(ValueError::TooLong(text.to_string()));
    }
    Ok(ms)
}

pub(super) fn at_least(ms: u64, min: u64, what: &'static str) -> Result<u64, ValueError> {
    if ms < min {
        return Err(ValueError::TooShort { what, min_ms: min });
    }
    Ok(ms)
}

/// Why a rate or a duration is refused; each carries the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error("{0:?} is not a rate (expected e.g. \"20r/s\" or \"600r/m\")")]
    NotARate(String),
    #[error("{0:?} is too slow (the least is 0.001r/s or 0.06r/m)")]
    TooSlow(String),
    #[error("{0:?} is too fast (the most is 1000000r/s)")]
    TooFast(String),
    #[error("{0:?} is not a duration (expected e.g. \"90s\", \"10m\", \"1h\", \"1d\")")]
    NotADuration(String),
    #[error("{0:?} is too long (at most {max})", max = fmt_ms(MAX_DURATION_MS))]
    TooLong(String),
    /// `what` ("a ban") is shorter than `min_ms`.
    #[error("{what} lasts at least {min}", min = fmt_ms(*min_ms))]
    TooShort { what: &'static str, min_ms: u64 },
}

/// `404` / `"404"` → a code, `"4xx"` → a class.
pub(super) fn parse_status(v: &toml::Value) -> Option<StatusMatch> {
    match v {
        toml::Value::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(StatusMatch::Code),
        toml::Value::String(s) => {
            let b = s.trim().as_bytes();
            match b {
                [c @ b'1'..=b'5', x, y]
                    if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
                {
                    Some(StatusMatch::Class(c - b'0'))
                }
                [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => std::str::from_utf8(b)
                    .ok()?
                    .parse()
                    .ok()
                    .map(StatusMatch::Code),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Milliseconds in the largest unit that divides them: `10m`, `1d`, `1w`, `90s`, `1500ms`.
pub fn fmt_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (WEEK, "w"),
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
    ];
    if ms == 0 {
        return "0s".into();
    }
    for (unit, name) in UNITS {
        if ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rates() {
        let ok = [
            ("20r/s", 20_000),
            ("600r/m", 10_000),
            ("30r/m", 500),
            ("1r/m", 16),
            ("0.5r/s", 500),
            ("0.001r/s", 1),
            ("1.25r/s", 1250),
            ("0.06r/m", 1),
            ("1000000r/s", 1_000_000_000),
        ];
        for (text, milli) in ok {
            assert_eq!(
                parse_rate(text).map(|r| r.milli_per_sec),
                Ok(milli),
                "{text}"
            );
        }
        for text in [
            "20 r/s",
            "-1r/s",
            "1.r/s",
            ".5r/s",
            "1e3r/s",
            "r/s",
            "20r/h",
            "20",
            "",
            "1.0000000001r/s",
        ] {
            assert!(
                parse_rate(text)
                    .unwrap_err()
                    .to_string()
                    .contains("is not a rate"),
                "{text}"
            );
        }
        for text in ["0r/s", "0.0009r/s", "0.05r/m"] {
            assert!(
                parse_rate(text)
                    .unwrap_err()
                    .to_string()
                    .contains("too slow"),
                "{text}"
            );
        }
        assert!(parse_rate("1000001r/s")
            .unwrap_err()
            .to_string()
            .contains("too fast"));
    }

    #[test]
    fn durations_print_in_their_largest_unit() {
        let cases = [
            (0, "0s"),
            (90_000, "90s"),
            (600_000, "10m"),
            (86_400_000, "1d"),
            (604_800_000, "1w"),
            (1500, "1500ms"),
            (5_400_000, "90m"),
        ];
        for (ms, text) in cases {
            assert_eq!(fmt_ms(ms), text);
        }
    }
}
