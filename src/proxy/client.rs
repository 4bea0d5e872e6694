//! The real client of one request: the connecting address, or, when that is a trusted proxy,
//! the address the proxy logged in the configured field. Runs once per log line, so it
//! allocates nothing and the common case (one address in the field) is one lookup and one parse.
//!
//! Only a trusted proxy's field is believed: anyone can send `CF-Connecting-IP` or
//! `X-Forwarded-For` straight to the origin. In an address list (`X-Forwarded-For: a, b, c`)
//! each proxy appends the address it saw, so only the right end is written by proxies we trust;
//! the client is the rightmost address that is not itself a trusted proxy. Anything left of it
//! was sent by that client and may be forged.

use memchr::memchr;

use crate::addr::Addr;
use crate::decide::allowlist::Allowlist;

/// Who sent a request, as far as the log can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The connecting address is not a trusted proxy: it is the client.
    Direct,
    /// Through a trusted proxy: the real client, from the field.
    Proxied(Addr),
    /// Through a trusted proxy, but the field is missing (`-`) or not an address: the caller
    /// falls back to the connecting address (a trusted proxy, so never banned) and counts it.
    Unusable,
}

/// Resolves clients behind a set of trusted proxy ranges.
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted: Allowlist,
}

impl ClientIp {
    pub fn new(trusted: Allowlist) -> ClientIp {
        ClientIp { trusted }
    }

    /// Whether `addr` is a trusted proxy.
    #[inline]
    pub fn is_trusted(&self, addr: Addr) -> bool {
        self.trusted.covers_addr(addr)
    }

    /// The client of a request that came from `conn` with `field` logged (raw bytes).
    #[inline]
    pub fn resolve(&self, conn: Addr, field: &[u8]) -> Client {
        if !self.is_trusted(conn) {
            return Client::Direct;
        }
        match self.client_in(field) {
            Some(a) => Client::Proxied(a),
            None => Client::Unusable,
        }
    }

    /// The rightmost untrusted address of the field; the leftmost one when all are trusted
    /// (the request started inside a trusted network). `None` when the address that counts
    /// does not parse: what lies left of it cannot be believed either.
    #[inline]
    fn client_in(&self, field: &[u8]) -> Option<Addr> {
        if memchr(b',', field).is_none() {
            // One address (CF-Connecting-IP, True-Client-IP): whatever it is, it is the client.
            return parse_one(trim(field));
        }
        let mut leftmost = None;
        for item in field.rsplit(|&b| b == b',') {
            let item = trim(item);
            if item.is_empty() {
                continue;
            }
            let a = parse_one(item)?;
            if !self.is_trusted(a) {
                return Some(a);
            }
            leftmost = Some(a);
        }
        leftmost
    }
}

/// One address as proxies write it in a list: plain, `1.2.3.4:5678`, `[2001:db8::1]` or
/// `[2001:db8::1]:443` (RFC 7239 style, sent by some load balancers).
fn parse_one(b: &[u8]) -> Option<Addr> {
    if let Some(a) = Addr::parse(b) {
        return Some(a);
    }
    let host = if let Some(rest) = b.strip_prefix(b"[") {
        let close = memchr(b']', rest)?;
        match &rest[close + 1..] {
            [] => {}
            [b':', port @ ..] if is_port(port) => {}
            _ => return None,
        }
        &rest[..close]
    } else {
        // IPv4 with a port: exactly one colon (a bare IPv6 address was tried above).
        let colon = memchr(b':', b)?;
        let port = &b[colon + 1..];
        if !is_port(port) {
            return None;
        }
        &b[..colon]
    };
    Addr::parse(host)
}

/// Without the spaces and quotes around a list entry.
fn trim(mut b: &[u8]) -> &[u8] {
    let junk = |c: &u8| c.is_ascii_whitespace() || *c == b'"';
    while let [first, rest @ ..] = b {
        if !junk(first) {
            break;
        }
        b = rest;
    }
    while let [rest @ .., last] = b {
        if !junk(last) {
            break;
        }
        b = rest;
    }
    b
}

fn is_port(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 5
        && b.iter().all(u8::is_ascii_digit)
        && b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Cidr;

    fn cloudflare_and_lan() -> ClientIp {
        let ranges: Vec<Cidr> = ["173.245.48.0/20", "2400:cb00::/32", "10.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        ClientIp::new(Allowlist::new(ranges))
    }

    fn addr(s: &str) -> Addr {
        Addr::parse(s.as_bytes()).unwrap()
    }

    const EDGE: &str = "173.245.48.7";

    #[test]
    fn only_a_trusted_proxys_field_is_believed() {
        let c = cloudflare_and_lan();
        assert_eq!(
            c.resolve(addr(EDGE), b"203.0.113.9"),
            Client::Proxied(addr("203.0.113.9"))
        );
        assert_eq!(
            c.resolve(addr("2400:cb00:1::5"), b"2001:db8::77"),
            Client::Proxied(addr("2001:db8::77"))
        );
        // A client talking to the origin directly with a forged header is itself.
        assert_eq!(c.resolve(addr("198.51.100.5"), b"1.1.1.1"), Client::Direct);
        assert_eq!(c.resolve(addr("173.245.64.1"), b"1.1.1.1"), Client::Direct);
    }

    #[test]
    fn missing_or_garbage_field_is_unusable() {
        let c = cloudflare_and_lan();
        for bad in [
            &b"-"[..],
            b"",
            b"unknown",
            b"999.1.1.1",
            b"1.2.3.4 OR 1=1",
            b"1.2.3.4:99999",
            b"[1.2.3.4",
            b"2001:db8::1:80",
        ] {
            let got = c.resolve(addr(EDGE), bad);
            // `2001:db8::1:80` is a valid IPv6 address: it cannot be told from one with a port.
            if bad == b"2001:db8::1:80" {
                assert_eq!(got, Client::Proxied(addr("2001:db8::1:80")));
            } else {
                assert_eq!(got, Client::Unusable, "{}", String::from_utf8_lossy(bad));
            }
        }
    }

    #[test]
    fn forwarded_for_lists_give_the_rightmost_untrusted_address() {
        let c = cloudflare_and_lan();
        let r = |f: &str| c.resolve(addr("10.1.1.1"), f.as_bytes());
        // The client forged the first entry; Cloudflare appended the real one, then the LAN
        // balancer appended Cloudflare's edge.
        assert_eq!(
            r("6.6.6.6, 203.0.113.9, 173.245.48.7"),
            Client::Proxied(addr("203.0.113.9"))
        );
        assert_eq!(
            r("203.0.113.9,10.0.0.2"),
            Client::Proxied(addr("203.0.113.9"))
        );
        assert_eq!(
            r("\"203.0.113.9:51234\", [2001:db8::9]:443"),
            Client::Proxied(addr("2001:db8::9"))
        );
        assert_eq!(
            r("[2001:db8::9], 10.0.0.3"),
            Client::Proxied(addr("2001:db8::9"))
        );
        // All trusted: the request started inside; the leftmost is the origin.
        assert_eq!(
            r("10.0.0.5, 173.245.48.1"),
            Client::Proxied(addr("10.0.0.5"))
        );
        // The entry that counts is garbage: nothing left of it can be believed.
        assert_eq!(r("203.0.113.9, garbage, 10.0.0.2"), Client::Unusable);
        // Garbage left of the client does not matter.
        assert_eq!(
            r("garbage, 203.0.113.9"),
            Client::Proxied(addr("203.0.113.9"))
        );
        assert_eq!(r(" , ,"), Client::Unusable);
    }

    use proptest::prelude::*;

    /// Untrusted addresses of both families, as text.
    fn arb_client() -> impl Strategy<Value = String> {
        prop_oneof![
            // 11..: 10.0.0.0/8 is trusted in these tests.
            (11u8..=99, any::<u8>(), any::<u8>(), 1u8..=254)
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            any::<u64>().prop_map(|x| format!("2001:db8:{:x}::{:x}", x >> 48, x & 0xffff)),
        ]
    }

    /// Addresses inside the trusted ranges of [`cloudflare_and_lan`].
    fn arb_trusted() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..16, any::<u8>()).prop_map(|(c, d)| format!("173.245.{}.{d}", 48 + c)),
            any::<u16>().prop_map(|x| format!("2400:cb00::{x:x}")),
            any::<u16>().prop_map(|x| format!("10.0.{}.{}", x >> 8, x & 0xff)),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        /// Whatever the client put in front, and however many trusted proxies appended their
        /// view behind it, the client is found.
        #[test]
        fn forged_prefix_and_trusted_suffix_never_change_the_client(
            forged in proptest::collection::vec(
                prop_oneof![arb_client(), arb_trusted(), "[ -~]{0,12}"], 0..4),
            client in arb_client(),
            proxies in proptest::collection::vec(arb_trusted(), 0..4),
            sep in prop_oneof![Just(", "), Just(","), Just(" , ")],
        ) {
            let c = cloudflare_and_lan();
            let mut items: Vec<String> =
                forged.into_iter().map(|f| f.replace(',', "")).collect();
            items.push(client.clone());
            items.extend(proxies);
            let field = items.join(sep);
            prop_assert_eq!(
                c.resolve(addr(EDGE), field.as_bytes()),
                Client::Proxied(addr(&client)),
                "{}", field
            );
        }

        #[test]
        fn any_bytes_resolve_without_panic(field in proptest::collection::vec(any::<u8>(), 0..80)) {
            let c = cloudflare_and_lan();
            let _ = c.resolve(addr(EDGE), &field);
        }
    }

    #[test]
    fn ports_and_brackets() {
        assert_eq!(parse_one(b"1.2.3.4:80"), Some(addr("1.2.3.4")));
        assert_eq!(parse_one(b"[::1]"), Some(addr("::1")));
        assert_eq!(parse_one(b"[::1]:8080"), Some(addr("::1")));
        assert_eq!(parse_one(b"[::1]x"), None);
        assert_eq!(parse_one(b"[1.2.3.4]"), Some(addr("1.2.3.4")));
        assert_eq!(parse_one(b"1.2.3.4:"), None);
        assert_eq!(parse_one(b"1.2.3.4:8:8"), None);
        assert_eq!(parse_one(b"host:80"), None);
    }
}
