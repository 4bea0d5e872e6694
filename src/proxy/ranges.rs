//! Range lists of trusted proxies: the providers floodwatch knows by name (their published
//! ranges are compiled into the binary) and the text format an admin refreshes them in.
//!
//! The text format is the one providers publish (Cloudflare's `ips-v4` / `ips-v6`): one CIDR
//! per line. Blank lines and `#` comments (whole-line or trailing) are allowed, so a copy can
//! say where and when it was fetched.

use crate::addr::Cidr;

/// Why a range list was refused; `origin` is the file (or list) it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    #[error("{origin}:{line}: not an IP address or CIDR range: {text:?}")]
    BadRange {
        origin: String,
        line: usize,
        text: String,
    },
    #[error("{origin}: no address ranges in it")]
    NoRanges { origin: String },
}

/// A provider whose ranges ship in the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The name used in `[proxy] trusted` (lower-case; see `config::KNOWN_PROXIES`).
    pub name: &'static str,
    /// The built-in list, in the text format of [`parse`].
    pub text: &'static str,
    /// Where the built-in list came from, for `check-config`.
    pub source: &'static str,
}

/// Every provider floodwatch knows by name.
pub const PROVIDERS: &[Provider] = &[Provider {
    name: "cloudflare",
    text: include_str!("cloudflare.txt"),
    source: "built in: www.cloudflare.com/ips-v4 and /ips-v6, autumn 2026",
}];

/// The built-in provider called `name` (compared without regard to case).
pub fn provider(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Parses a range list; `origin` names it in errors (a file path, or the built-in list).
/// A list without any range is refused: trusting nothing would silently count (and ban) the
/// proxy's own addresses.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Cidr>, RangeError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let cidr = line.parse::<Cidr>().map_err(|_| RangeError::BadRange {
            origin: origin.to_string(),
            line: i + 1,
            text: line.to_string(),
        })?;
        out.push(cidr);
    }
    if out.is_empty() {
        return Err(RangeError::NoRanges {
            origin: origin.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_cloudflare_list_parses_whole() {
        let p = provider("Cloudflare").unwrap();
        let ranges = parse(p.text, p.name).unwrap();
        let v4 = ranges.iter().filter(|c| c.addr.is_v4()).count();
        assert_eq!((v4, ranges.len() - v4), (15, 7));
        let has = |s: &str| ranges.contains(&s.parse().unwrap());
        assert!(has("173.245.48.0/20") && has("172.64.0.0/13") && has("2a06:98c0::/29"));
        // Every name the config accepts has a list.
        for name in crate::config::KNOWN_PROXIES {
            assert!(provider(name).is_some(), "{name}");
        }
        assert!(provider("akamai").is_none());
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let text = "# fetched 2026-11-25\r\n\r\n10.0.0.0/8 # office\r\n  2001:db8::/32\n#last\n";
        let r = parse(text, "f.txt").unwrap();
        assert_eq!(
            r,
            vec![
                "10.0.0.0/8".parse::<Cidr>().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ]
        );
    }

    #[test]
    fn errors_name_the_origin_and_line() {
        let e = parse("10.0.0.0/8\n\n10.0.0.0/33\n", "/etc/fw/cf.txt").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/fw/cf.txt:3: not an IP address or CIDR range: \"10.0.0.0/33\""
        );
        // Two published files glued together without a newline between them.
        let e = parse("131.0.72.0/222400:cb00::/32\n", "cf.txt").unwrap_err();
        assert!(e.to_string().starts_with("cf.txt:1: "), "{e}");
        let e = parse("# nothing yet\n\n", "cf.txt").unwrap_err();
        assert_eq!(e.to_string(), "cf.txt: no address ranges in it");
    }
}
