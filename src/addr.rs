//! Client addresses as one 128-bit value, prefixes (keys) and CIDR ranges.
//!
//! IPv4 addresses are held IPv4-mapped (`::ffff:a.b.c.d`) so that one integer type serves both
//! families: hashing, masking and comparing a key is a couple of integer operations. Parsing from
//! log bytes never allocates; the IPv4 path is hand-written because it runs once per log line.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

const V4_MAPPED: u128 = 0xffff_0000_0000;
const V4_MAPPED_MASK: u128 = !0xffff_ffffu128;

/// A client address (IPv4 held IPv4-mapped).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub u128);

impl Addr {
    /// Parses an IPv4 or IPv6 address from log bytes. `None` for anything else (hostnames,
    /// `unix:` sockets, garbage).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Option<Addr> {
        if let Some(v4) = parse_ipv4(bytes) {
            return Some(Addr::from_v4(v4));
        }
        if bytes.len() < 2 || bytes.len() > 45 || !bytes.contains(&b':') {
            return None;
        }
        if let Some(v6) = parse_ipv6_hex(bytes) {
            return Some(Addr(v6));
        }
        let text = std::str::from_utf8(bytes).ok()?;
        // A zone index (`fe80::1%eth0`) names an interface, not a client: drop it.
        let text = text.split('%').next().unwrap_or(text);
        let v6 = Ipv6Addr::from_str(text).ok()?;
        Some(Addr::from(IpAddr::V6(v6)))
    }

    #[inline]
    pub fn from_v4(v4: u32) -> Addr {
        Addr(V4_MAPPED | v4 as u128)
    }

    #[inline]
    pub fn is_v4(self) -> bool {
        self.0 & V4_MAPPED_MASK == V4_MAPPED
    }

    /// The address with all but its first `prefix` bits cleared, where `prefix` counts in the
    /// address's own family (0..=32 for IPv4, 0..=128 for IPv6).
    #[inline]
    pub fn masked(self, prefix: u8) -> Addr {
        if self.is_v4() {
            let p = prefix.min(32) as u32;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            Addr::from_v4((self.0 as u32) & mask)
        } else {
            let p = prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            Addr(self.0 & mask)
        }
    }

    pub fn to_ip(self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.0 as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::from_v4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Addr::from_v4(u32::from(v4)),
                None => Addr(u128::from(v6)),
            },
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Dotted-quad IPv4 without leading-zero ambiguity (`01.2.3.4` is refused, as std does).
///
/// Without a branch per digit: octets of one, two and three digits come in random order in a
/// log, and a digit-by-digit loop mispredicted about one branch per octet (8 % of replay's CPU
/// time went here). Each octet's length is taken from whether its next three bytes are digits,
/// and its value computed for every length at once; the checks are gathered into one flag.
#[inline]
fn parse_ipv4(b: &[u8]) -> Option<u32> {
    let n = b.len();
    if !(7..=15).contains(&n) {
        return None;
    }
    // Zero past the end: neither a digit nor a dot, so an octet never runs past it.
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let mut out = 0u32;
    let mut ok = true;
    for k in 0..4 {
        let digit = |b: u8| u32::from(b.wrapping_sub(b'0'));
        let (a, t, u) = (digit(at(i)), digit(at(i + 1)), digit(at(i + 2)));
        let one = a < 10;
        let two = one & (t < 10);
        let three = two & (u < 10);
        // Digits appended by arithmetic, not by a branch on the length.
        let (x, y) = (u32::from(two), u32::from(three));
        let v = (a * (1 + 9 * x) + t * x) * (1 + 9 * y) + u * y;
        ok &= one & !(two & (a == 0)) & (v <= 255);
        out = out << 8 | (v & 0xff);
        i += usize::from(one) + usize::from(two) + usize::from(three);
        if k < 3 {
            ok &= at(i) == b'.';
            i += 1;
        }
    }
    (ok && i == n).then_some(out)
}

/// The usual IPv6 forms (hex groups, at most one `::`) without std's general parser, which cost
/// as much as the rest of a line's parsing; `None` for anything else, which std's parser then
/// decides (dotted IPv4 tails, zone indexes, garbage). What this accepts, std reads the same
/// (`ipv6_hex_parses_as_std_does`); an IPv4-mapped address comes out mapped, as `Addr` holds IPv4.
#[inline]
fn parse_ipv6_hex(b: &[u8]) -> Option<u128> {
    let n = b.len();
    let mut groups = [0u16; 8];
    let mut count = 0;
    let mut gap: Option<usize> = None;
    let mut i = 0;
    if b.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < n {
        let start = i;
        let mut v = 0u32;
        while i < n && i - start < 4 {
            let c = b[i];
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            v = v << 4 | u32::from(d);
            i += 1;
        }
        if i == start || count == 8 {
            return None;
        }
        groups[count] = v as u16;
        count += 1;
        if i == n {
            break;
        }
        if b[i] != b':' {
            return None;
        }
        i += 1;
        if b.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(count);
            i += 1;
        } else if i == n {
            return None;
        }
    }
    let mut out = [0u16; 8];
    match gap {
        None if count == 8 => out = groups,
        Some(at) if count <= 7 => {
            out[..at].copy_from_slice(&groups[..at]);
            let tail = count - at;
            out[8 - tail..].copy_from_slice(&groups[at..count]);
        }
        _ => return None,
    }
    Some(out.iter().fold(0u128, |acc, &g| acc << 16 | u128::from(g)))
}

/// An address range: the unit of allowlists, trusted proxies and aggregated keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address (already masked).
    pub addr: Addr,
    /// Prefix length in the address's own family.
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: Addr, prefix: u8) -> Cidr {
        let max = if addr.is_v4() { 32 } else { 128 };
        let prefix = prefix.min(max);
        Cidr {
            addr: addr.masked(prefix),
            prefix,
        }
    }

    /// Whether the range covers exactly one address.
    pub fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_v4() { 32 } else { 128 }
    }

    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        a.is_v4() == self.addr.is_v4() && a.masked(self.prefix) == self.addr
    }

    /// Whether every address of `self` is in `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }
}

/// Error for a CIDR or address that does not parse; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR range: {0:?}")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| err())?;
        let addr = Addr::from(ip);
        let max = if addr.is_v4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr::new(addr, prefix))
    }
}

/// Keys print as a plain address when they are one, else in CIDR form (`2001:db8::/64`).
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_like_std() {
        for s in ["1.2.3.4", "255.255.255.255", "0.0.0.0", "10.0.0.1"] {
            let a = Addr::parse(s.as_bytes()).unwrap();
            assert!(a.is_v4());
            assert_eq!(a.to_string(), s);
        }
        for s in [
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.",
            ".1.2.3",
            "1..2.3",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(Addr::parse(s.as_bytes()), None, "{s}");
        }
    }

    /// Every octet width, leading zeros and out-of-range octets, each with every byte replaced
    /// by a likely wrong one, against std's parser (which refuses leading zeros, as this one).
    #[test]
    fn ipv4_parses_as_std_does() {
        let octets = [
            "0", "7", "10", "99", "100", "199", "255", "256", "00", "01", "001", "999",
        ];
        let std_of = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<Ipv4Addr>().ok())
                .map(u32::from)
        };
        let mut checked = 0;
        for a in octets {
            for b in ["0", "25", "255", "01"] {
                for c in ["1", "38", "200", "300"] {
                    for d in octets {
                        let s = format!("{a}.{b}.{c}.{d}").into_bytes();
                        assert_eq!(parse_ipv4(&s), std_of(&s), "{s:?}");
                        for i in 0..s.len() {
                            for junk in [b'.', b'/', b':', b'a', b' ', 0, 0xff, b'0'] {
                                let mut v = s.clone();
                                v[i] = junk;
                                assert_eq!(parse_ipv4(&v), std_of(&v), "{v:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// Random strings over the hex-and-colon alphabet, and every address in std's shortest form
    /// and written out in full: what the fast path accepts, std reads the same, and it misses no
    /// address std reads from those characters.
    #[test]
    fn ipv6_hex_parses_as_std_does() {
        let std_of = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| Ipv6Addr::from_str(s).ok())
                .map(u128::from)
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789abcdefABCDEF:::::0f";
        for _ in 0..200_000 {
            let len = (rnd() % 40) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize])
                .collect();
            let fast = parse_ipv6_hex(&s);
            let want = std_of(&s);
            assert!(
                fast.is_none() || fast == want,
                "{:?}",
                String::from_utf8_lossy(&s)
            );
            assert_eq!(
                fast.is_some(),
                want.is_some(),
                "{:?}",
                String::from_utf8_lossy(&s)
            );
            let a = match rnd() % 2 {
                0 => u128::from(rnd()) << 64 | u128::from(rnd()),
                _ => u128::from(rnd() % 4) << 112 | u128::from(rnd() % 65536),
            };
            let v6 = Ipv6Addr::from(a);
            let short = v6.to_string();
            if !short.contains('.') {
                assert_eq!(parse_ipv6_hex(short.as_bytes()), Some(a), "{short}");
            }
            let full: Vec<String> = v6.segments().iter().map(|g| format!("{g:X}")).collect();
            assert_eq!(parse_ipv6_hex(full.join(":").as_bytes()), Some(a));
        }
        for s in ["::", "::1", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7"] {
            assert_eq!(parse_ipv6_hex(s.as_bytes()), std_of(s.as_bytes()), "{s}");
        }
        for s in [
            ":::",
            "1::2::3",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "12345::",
            "1:",
        ] {
            assert_eq!(parse_ipv6_hex(s.as_bytes()), None, "{s}");
        }
        // Left to std: the dotted tail and the zone.
        assert_eq!(parse_ipv6_hex(b"::ffff:1.2.3.4"), None);
        assert_eq!(Addr::parse(b"::ffff:102:304"), Addr::parse(b"1.2.3.4"));
    }

    #[test]
    fn parses_ipv6_and_drops_zone() {
        let a = Addr::parse(b"2001:db8::1").unwrap();
        assert!(!a.is_v4());
        assert_eq!(a.masked(64).to_string(), "2001:db8::");
        assert_eq!(Addr::parse(b"fe80::1%eth0").unwrap().to_string(), "fe80::1");
        assert_eq!(
            Addr::parse(b"::ffff:1.2.3.4").unwrap().to_string(),
            "1.2.3.4"
        );
        assert_eq!(Addr::parse(b"example.com"), None);
        assert_eq!(Addr::parse(b"unix:"), None);
    }

    #[test]
    fn masks_each_family_in_its_own_bits() {
        let a = Addr::parse(b"203.0.113.77").unwrap();
        assert_eq!(a.masked(24).to_string(), "203.0.113.0");
        assert_eq!(a.masked(32), a);
        assert_eq!(a.masked(0).to_string(), "0.0.0.0");
        assert!(a.masked(0).is_v4());
    }

    #[test]
    fn cidr_parse_contains_display() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(Addr::parse(b"127.1.2.3").unwrap()));
        assert!(!c.contains(Addr::parse(b"128.0.0.1").unwrap()));
        // An IPv4 range never covers IPv6 addresses whose low bits happen to match.
        assert!(!c.contains(Addr::parse(b"::7f00:1").unwrap()));
        let six: Cidr = "2001:db8:1:2::/64".parse().unwrap();
        assert_eq!(six.to_string(), "2001:db8:1:2::/64");
        assert!(six.contains(Addr::parse(b"2001:db8:1:2:ffff::1").unwrap()));
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1");
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
