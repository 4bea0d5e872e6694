//! The keys an admin names to `ban` and `unban`, checked by watch (the control socket is an
//! API: whatever the client, the rails hold). A key must mean exactly what it says: a range
//! with host bits set (`192.0.2.7/24`, `10.0.0.0/4`) is refused with the network it would have
//! meant, where parsing it as is would silently ban or lift another range. A ban wider than
//! /16 (IPv4) or /48 (IPv6) must be forced: `128.0.0.0/1` is half of IPv4.

use crate::addr::{Addr, Cidr, CidrError};

/// The widest IPv4 and IPv6 prefixes a manual ban takes without `force`.
pub const WIDEST_V4: u8 = 16;
pub const WIDEST_V6: u8 = 48;

/// Why a key named for `ban` or `unban` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not an address or range at all.
    #[error(transparent)]
    NotAKey(#[from] CidrError),
    /// An address with host bits set for its prefix: `written` as parsed, `meant` the network.
    #[error(
        "{written}/{p} has host bits set (the address is not the start of a /{p} network): \
         did you mean {meant}? (or {written} for the one address)",
        p = meant.prefix
    )]
    HostBits { written: String, meant: Cidr },
    /// A range wider than [`WIDEST_V4`] / [`WIDEST_V6`] without `force`.
    #[error(
        "{net} is wider than /{widest} ({size}, for {family}): ban it with --force if that is \
         meant",
        size = Addresses(*net),
        family = if net.addr.is_v4() { "IPv4" } else { "IPv6" }
    )]
    TooWide { net: Cidr, widest: u8 },
}

/// How many addresses a range holds, as the refusal says it.
struct Addresses(Cidr);

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = if self.0.addr.is_v4() { 32 } else { 128 } - u32::from(self.0.prefix);
        match bits {
            0..=63 => write!(f, "{} addresses", 1u64 << bits),
            _ => write!(f, "2^{bits} addresses"),
        }
    }
}

/// `key` as a range, refused when it has host bits set.
pub fn exact(key: &str) -> Result<Cidr, KeyError> {
    let net: Cidr = key.parse()?;
    let written = key.split_once('/').map_or(key, |(ip, _)| ip).trim();
    let addr = written.parse::<std::net::IpAddr>().map(Addr::from).ok();
    if addr.is_some_and(|a| a != net.addr) {
        // Shown from what parsed, not as sent: a client may send anything around it.
        return Err(KeyError::HostBits {
            written: written.to_string(),
            meant: net,
        });
    }
    Ok(net)
}

/// Refuses a ban of a range wider than [`WIDEST_V4`] / [`WIDEST_V6`] unless `force`.
pub fn not_too_wide(net: &Cidr, force: bool) -> Result<(), KeyError> {
    let widest = if net.addr.is_v4() {
        WIDEST_V4
    } else {
        WIDEST_V6
    };
    if force || net.prefix >= widest {
        return Ok(());
    }
    Err(KeyError::TooWide { net: *net, widest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_refused_with_the_network_meant() {
        let e = exact("10.0.0.0/4").unwrap_err().to_string();
        assert!(e.contains("did you mean 0.0.0.0/4?"), "{e}");
        let e = exact("192.0.2.7/24").unwrap_err().to_string();
        assert!(
            e.starts_with("192.0.2.7/24 has host bits set") && e.contains("192.0.2.0/24?"),
            "{e}"
        );
        let e = exact("2001:db8::1/64").unwrap_err().to_string();
        assert!(e.contains("did you mean 2001:db8::/64?"), "{e}");
        assert_eq!(exact("192.0.2.0/24").unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(exact("192.0.2.7").unwrap().to_string(), "192.0.2.7");
        assert_eq!(exact("2001:db8::/48").unwrap().to_string(), "2001:db8::/48");
        assert!(exact("nope")
            .unwrap_err()
            .to_string()
            .contains("not an IP address"));
        let e = exact("\n10.0.0.1/8").unwrap_err().to_string();
        assert!(e.starts_with("10.0.0.1/8 has host bits set"), "{e}");
    }

    #[test]
    fn wide_ranges_need_force() {
        let net = |s: &str| s.parse::<Cidr>().unwrap();
        let e = not_too_wide(&net("128.0.0.0/1"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("wider than /16 (2147483648 addresses"), "{e}");
        assert!(not_too_wide(&net("128.0.0.0/1"), true).is_ok());
        assert!(not_too_wide(&net("10.1.0.0/16"), false).is_ok());
        assert!(not_too_wide(&net("10.0.0.0/15"), false).is_err());
        assert!(not_too_wide(&net("2001:db8::/48"), false).is_ok());
        let e = not_too_wide(&net("2001:db8::/32"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/48 (2^96 addresses, for IPv6)"), "{e}");
        assert!(not_too_wide(&net("::/0"), false).is_err());
    }
}
