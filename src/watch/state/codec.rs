//! One slot of the ban table ([`SavedSlot`]) as the bytes of a journal record, and back.
//!
//! Integers are LEB128 varints (times as zigzag: a time before 1970 is odd but not corrupt),
//! texts a varint length and UTF-8. Keys and vhosts are stored as text, as in events, so that a
//! record does not depend on this process's interning. About 70 bytes for a detected ban with
//! its past ban, against 230 in the JSON that came before.

use crate::decide::ban_table::{SavedBan, SavedPast, SavedSlot};

const HAS_BAN: u8 = 1;
const HAS_KEY_VHOST: u8 = 2;
const HAS_VHOST: u8 = 4;
const HAS_ORIGIN: u8 = 8;
const VIA_PROXY: u8 = 16;
const MANUAL: u8 = 32;
const KNOWN: u8 = HAS_BAN | HAS_KEY_VHOST | HAS_VHOST | HAS_ORIGIN | VIA_PROXY | MANUAL;

/// Appends the record of `s` to `out`.
pub fn encode(s: &SavedSlot, out: &mut Vec<u8>) {
    let mut flags = 0;
    if s.key_vhost.is_some() {
        flags |= HAS_KEY_VHOST;
    }
    if let Some(b) = &s.ban {
        flags |= HAS_BAN;
        flags |= if b.vhost.is_some() { HAS_VHOST } else { 0 };
        flags |= if b.origin.is_some() { HAS_ORIGIN } else { 0 };
        flags |= if b.via_proxy { VIA_PROXY } else { 0 };
        flags |= if b.manual { MANUAL } else { 0 };
    }
    out.push(flags);
    text(&s.key, out);
    if let Some(v) = &s.key_vhost {
        text(v, out);
    }
    text(&s.rule, out);
    if let Some(b) = &s.ban {
        time(b.time_ms, out);
        time(b.first_seen_ms, out);
        time(b.until_ms, out);
        varint(b.ban_ms, out);
        varint(b.requests, out);
        varint(u64::from(b.burst), out);
        varint(u64::from(b.offense), out);
        text(&b.rate, out);
        if let Some(v) = &b.vhost {
            text(v, out);
        }
        if let Some(o) = &b.origin {
            text(o, out);
        }
    }
    varint(s.past.len() as u64, out);
    for p in &s.past {
        time(p.time_ms, out);
        time(p.until_ms, out);
        out.push(u8::from(p.lifted));
    }
}

/// The slot a record holds; `Err` says what is wrong with it.
pub fn decode(mut bytes: &[u8]) -> Result<SavedSlot, String> {
    let r = &mut bytes;
    let flags = byte(r)?;
    if flags & !KNOWN != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let key = string(r)?;
    let key_vhost = (flags & HAS_KEY_VHOST != 0)
        .then(|| string(r))
        .transpose()?;
    let rule = string(r)?;
    let ban = if flags & HAS_BAN != 0 {
        let time_ms = read_time(r)?;
        let first_seen_ms = read_time(r)?;
        let until_ms = read_time(r)?;
        let ban_ms = read_varint(r)?;
        let requests = read_varint(r)?;
        let burst = narrow(read_varint(r)?, "burst")?;
        let offense = narrow(read_varint(r)?, "offense")?;
        let rate = string(r)?;
        let vhost = (flags & HAS_VHOST != 0).then(|| string(r)).transpose()?;
        let origin = (flags & HAS_ORIGIN != 0).then(|| string(r)).transpose()?;
        Some(SavedBan {
            key: key.clone(),
            key_vhost: key_vhost.clone(),
            rule: rule.clone(),
            vhost,
            rate,
            burst,
            requests,
            first_seen_ms,
            time_ms,
            ban_ms,
            until_ms,
            offense,
            via_proxy: flags & VIA_PROXY != 0,
            manual: flags & MANUAL != 0,
            origin,
        })
    } else {
        None
    };
    let n = read_varint(r)?;
    // Each past ban takes at least 3 bytes: a count beyond that is not to be allocated.
    if n > r.len() as u64 / 3 {
        return Err(format!("{n} past bans in {} bytes", r.len()));
    }
    let mut past = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let time_ms = read_time(r)?;
        let until_ms = read_time(r)?;
        let lifted = match byte(r)? {
            0 => false,
            1 => true,
            b => return Err(format!("lifted is {b}")),
        };
        past.push(SavedPast {
            time_ms,
            until_ms,
            lifted,
        });
    }
    if !r.is_empty() {
        return Err(format!("{} bytes after the record", r.len()));
    }
    Ok(SavedSlot {
        key,
        key_vhost,
        rule,
        ban,
        past,
    })
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn time(t: i64, out: &mut Vec<u8>) {
    varint(((t << 1) ^ (t >> 63)) as u64, out);
}

fn text(s: &str, out: &mut Vec<u8>) {
    varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn byte(r: &mut &[u8]) -> Result<u8, String> {
    let (&b, rest) = r.split_first().ok_or("cut short")?;
    *r = rest;
    Ok(b)
}

fn read_varint(r: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = byte(r)?;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err("a number too large".into());
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a number too long".into())
}

fn read_time(r: &mut &[u8]) -> Result<i64, String> {
    let z = read_varint(r)?;
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

fn narrow(v: u64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} out of range"))
}

fn string(r: &mut &[u8]) -> Result<String, String> {
    let n = read_varint(r)?;
    if n > r.len() as u64 {
        return Err(format!("a text of {n} bytes in {}", r.len()));
    }
    let (s, rest) = r.split_at(n as usize);
    *r = rest;
    String::from_utf8(s.to_vec()).map_err(|_| "a text that is not UTF-8".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn slot() -> SavedSlot {
        SavedSlot {
            key: "203.0.113.7".into(),
            key_vhost: None,
            rule: "default".into(),
            ban: Some(SavedBan {
                key: "203.0.113.7".into(),
                key_vhost: None,
                rule: "default".into(),
                vhost: Some("example.com".into()),
                rate: "20r/s".into(),
                burst: 100,
                requests: 412,
                first_seen_ms: 1_764_064_801_000,
                time_ms: 1_764_064_805_000,
                ban_ms: 600_000,
                until_ms: 1_764_065_405_000,
                offense: 1,
                via_proxy: false,
                manual: false,
                origin: None,
            }),
            past: vec![SavedPast {
                time_ms: 1_764_064_805_000,
                until_ms: 1_764_065_405_000,
                lifted: false,
            }],
        }
    }

    #[test]
    fn a_detected_ban_takes_about_seventy_bytes_and_comes_back() {
        let mut out = Vec::new();
        encode(&slot(), &mut out);
        assert!(out.len() <= 80, "{} bytes", out.len());
        assert_eq!(decode(&out).unwrap(), slot());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(&slot(), &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("after the record"));
        let mut flags = out.clone();
        flags[0] = 0x80;
        assert!(decode(&flags).unwrap_err().contains("flags"));
        assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    fn text() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    prop_compose! {
        fn any_slot()(
            key in text(), key_vhost in proptest::option::of(text()), rule in text(),
            ban in proptest::option::of((
                (any::<i64>(), any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>()),
                (any::<u32>(), any::<u32>(), text(), proptest::option::of(text())),
                (proptest::option::of(text()), any::<bool>(), any::<bool>()),
            )),
            past in proptest::collection::vec((any::<i64>(), any::<i64>(), any::<bool>()), 0..4),
        ) -> SavedSlot {
            let ban = ban.map(|((time_ms, first_seen_ms, until_ms, ban_ms, requests),
                                (burst, offense, rate, vhost), (origin, via_proxy, manual))| SavedBan {
                key: key.clone(), key_vhost: key_vhost.clone(), rule: rule.clone(),
                vhost, rate, burst, requests, first_seen_ms, time_ms, ban_ms, until_ms,
                offense, via_proxy, manual, origin,
            });
            let past = past.into_iter()
                .map(|(time_ms, until_ms, lifted)| SavedPast { time_ms, until_ms, lifted })
                .collect();
            SavedSlot { key, key_vhost, rule, ban, past }
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn every_slot_round_trips(s in any_slot()) {
            let mut out = Vec::new();
            encode(&s, &mut out);
            prop_assert_eq!(decode(&out).unwrap(), s);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
