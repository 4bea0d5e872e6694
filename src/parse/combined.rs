//! The hand-written parser for the hot formats: `common`, `combined` and `vhost_combined`.
//!
//! Most lines take the fast path — `client ident user [time] "request" status size "referer"
//! "agent"` with single spaces — in a handful of memchr calls and one cached time compare. Lines
//! that do not start that way go through [`prefix`], which knows the variants real logs carry
//! before the time: a vhost in front (`www.example.com:443 1.2.3.4 - -`), a missing ident
//! (`1.2.3.4 - [`), double spaces, a user name with a space, and X-Forwarded-For lists in the
//! client position (kept whole as `client`; see [`super::addr_list`]). After the size, anything
//! may follow (nginx's `combined` plus extra fields), or nothing (a `common` line).

use memchr::memchr;

use super::scan::{
    at_field_end, bytes, find_close_quote, skip_spaces, split_request, status, strip_port,
    token_end,
};
use super::time::{parse_httpdate, parse_zoneless_httpdate, TimeCache, HTTPDATE_LEN};
use super::{Malformed, Record};

/// Whether the referer and user agent are read after the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    Common,
    Combined,
}

/// What precedes the time.
#[derive(Default)]
struct Prefix<'a> {
    client: &'a [u8],
    ident: &'a [u8],
    user: &'a [u8],
    vhost: &'a [u8],
}

/// Parses a `combined` (or `common`) line; `line` is non-empty and within `MAX_LINE`.
#[inline]
pub fn parse<'a>(
    line: &'a [u8],
    times: &mut TimeCache,
    tail: Tail,
    split: bool,
) -> Result<Record<'a>, Malformed> {
    let mut pre = Prefix::default();
    let lb = match fast_prefix(line, &mut pre) {
        Some(lb) => lb,
        None => prefix(line, &mut pre)?,
    };
    let (secs, after_time) = time(line, lb, times)?;

    // The request, quoted; a quote closes it only before ` <status>`.
    let mut pos = skip_spaces(line, after_time);
    if pos == after_time || line.get(pos) != Some(&b'"') {
        return Err(Malformed::Shape);
    }
    let close = find_close_quote(line, pos + 1, |a| {
        a.first() == Some(&b' ') && matches!(a.get(1), Some(b'0'..=b'9' | b'-' | b' '))
    })
    .ok_or(Malformed::Shape)?;
    let request = &line[pos + 1..close];
    let (method, target, protocol): (&[u8], &[u8], &[u8]) = match split {
        true => split_request(request),
        false => (b"", b"", b""),
    };

    pos = skip_spaces(line, close + 1);
    let (status, end) = status_at(line, pos)?;
    pos = skip_spaces(line, end);
    if pos == end {
        // Status then end of line: the size is missing.
        return Err(Malformed::Shape);
    }
    let (bytes, end) = bytes_at(line, pos)?;
    let (referer, user_agent): (&[u8], &[u8]) = match tail {
        Tail::Common => (b"", b""),
        Tail::Combined => {
            let (referer, next) = optional_field(line, end)?;
            (referer, optional_field(line, next)?.0)
        }
    };
    // One struct literal at the end: the record is written straight into the caller's slot.
    Ok(Record {
        client: pre.client,
        ident: pre.ident,
        user: pre.user,
        time_ms: secs * 1000,
        request,
        method,
        target,
        protocol,
        status,
        bytes,
        referer,
        user_agent,
        vhost: pre.vhost,
        real_client: b"",
    })
}

/// The status at `pos`: (status, index after it). Three digits then a space is the fast case.
#[inline]
fn status_at(line: &[u8], pos: usize) -> Result<(u16, usize), Malformed> {
    if let Some(&[a, b, c]) = line.get(pos..pos + 3) {
        let (a, b, c) = (
            a.wrapping_sub(b'0'),
            b.wrapping_sub(b'0'),
            c.wrapping_sub(b'0'),
        );
        if a < 10 && b < 10 && c < 10 && matches!(line.get(pos + 3), None | Some(b' ')) {
            return Ok((a as u16 * 100 + b as u16 * 10 + c as u16, pos + 3));
        }
    }
    let end = token_end(line, pos);
    Ok((status(&line[pos..end])?, end))
}

/// The size at `pos`: (size, index after it).
#[inline(always)]
fn bytes_at(line: &[u8], pos: usize) -> Result<(Option<u64>, usize), Malformed> {
    let mut v: u64 = 0;
    let mut i = pos;
    while i < line.len() && i - pos < 19 {
        let d = line[i].wrapping_sub(b'0');
        if d >= 10 {
            break;
        }
        v = v * 10 + d as u64;
        i += 1;
    }
    if i > pos && matches!(line.get(i), None | Some(b' ')) {
        return Ok((Some(v), i));
    }
    let end = token_end(line, pos);
    Ok((bytes(&line[pos..end])?, end))
}

/// `vhost:port` then a `combined` line (Apache's `vhost_combined`).
pub fn parse_vhost<'a>(
    line: &'a [u8],
    times: &mut TimeCache,
    split: bool,
) -> Result<Record<'a>, Malformed> {
    let sp = memchr(b' ', line).ok_or(Malformed::Shape)?;
    if sp == 0 {
        return Err(Malformed::Shape);
    }
    let rest = skip_spaces(line, sp);
    let mut rec = parse(&line[rest..], times, Tail::Combined, split)?;
    rec.vhost = strip_port(&line[..sp]);
    Ok(rec)
}

/// A referer / user-agent slot after `from` (which points at the separating space or the end):
/// a quoted string, a bare word (`-`), or nothing at the end of the line.
#[inline(always)]
fn optional_field(line: &[u8], from: usize) -> Result<(&[u8], usize), Malformed> {
    let pos = skip_spaces(line, from);
    if pos >= line.len() {
        return Ok((b"", line.len()));
    }
    if line[pos] == b'"' {
        // `"-"` is the most common value of both slots: no search for it.
        if line.get(pos + 1..pos + 3) == Some(b"-\"") && at_field_end(&line[pos + 3..]) {
            return Ok((&line[pos + 1..pos + 2], pos + 3));
        }
        let close = find_close_quote(line, pos + 1, at_field_end).ok_or(Malformed::Shape)?;
        Ok((&line[pos + 1..close], close + 1))
    } else {
        let end = token_end(line, pos);
        Ok((&line[pos..end], end))
    }
}

/// `client ident user [`, single spaces, no empty token: the shape of almost every line.
/// Returns the index of `[`.
#[inline]
fn fast_prefix<'a>(line: &'a [u8], rec: &mut Prefix<'a>) -> Option<usize> {
    let a = first_space(line)?;
    if a > 0 && line[a + 1..].starts_with(b"- - [") {
        rec.client = &line[..a];
        rec.ident = &line[a + 1..a + 2];
        rec.user = &line[a + 3..a + 4];
        return Some(a + 5);
    }
    let b = a + 1 + memchr(b' ', &line[a + 1..])?;
    let c = b + 1 + memchr(b' ', &line[b + 1..])?;
    if line.get(c + 1) != Some(&b'[') || a == 0 || b == a + 1 || c == b + 1 {
        return None;
    }
    rec.client = &line[..a];
    rec.ident = &line[a + 1..b];
    rec.user = &line[b + 1..c];
    Some(c + 1)
}

/// Index of the first space, looked for a word at a time: addresses are short, and a memchr
/// call costs more than the search.
#[inline]
fn first_space(b: &[u8]) -> Option<usize> {
    const SPACES: u64 = 0x2020_2020_2020_2020;
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        // A byte equal to ' ' becomes zero; the lowest flagged byte is the first zero.
        let x = u64::from_le_bytes(word) ^ SPACES;
        let zero = x.wrapping_sub(LOW) & !x & HIGH;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
        if i >= 64 {
            return memchr(b' ', &b[i..]).map(|k| i + k);
        }
    }
    b[i..].iter().position(|&c| c == b' ').map(|k| i + k)
}

/// Most words before the time that [`prefix`] looks at.
const MAX_WORDS: usize = 24;

/// The general form of what precedes the time. Returns the index of `[`.
#[cold]
fn prefix<'a>(line: &'a [u8], rec: &mut Prefix<'a>) -> Result<usize, Malformed> {
    let lb = find_time_bracket(line).ok_or(Malformed::Shape)?;
    // Word spans before the bracket; runs of spaces separate words.
    let mut words = [(0usize, 0usize); MAX_WORDS];
    let mut n = 0;
    let mut i = 0;
    while i < lb {
        i = skip_spaces(line, i);
        if i >= lb {
            break;
        }
        let end = token_end(line, i).min(lb);
        if n == MAX_WORDS {
            return Err(Malformed::Shape);
        }
        words[n] = (i, end);
        n += 1;
        i = end;
    }
    let word = |k: usize| &line[words[k].0..words[k].1];
    let span = |from: usize, to: usize| &line[words[from].0..words[to].1];
    match n {
        0 => return Err(Malformed::Shape),
        1 => rec.client = word(0),
        2 => {
            // The ident is missing (`1.2.3.4 - [`).
            rec.client = word(0);
            rec.user = word(1);
        }
        _ => {
            rec.user = word(n - 1);
            rec.ident = word(n - 2);
            let last = n - 3;
            if last == 0 {
                rec.client = word(0);
            } else {
                // A first word that does not start or continue an address list is a vhost.
                let mut first = 0;
                if !word(0).starts_with(b"\"") && !word(0).ends_with(b",") {
                    rec.vhost = strip_port(word(0));
                    first = 1;
                }
                rec.client = span(first, last);
                if word(first).starts_with(b"\"") {
                    // A quoted forwarded-for list, then the connecting address.
                    if let Some(k) = (first..=last).find(|&k| word(k).ends_with(b"\"")) {
                        if k < last {
                            rec.client = span(k + 1, last);
                        }
                    }
                }
                if rec.client == b"-" && n == 4 {
                    // Not a vhost but a user name with a space: `1.2.3.4 - john doe [`.
                    rec.vhost = b"";
                    rec.client = word(0);
                    rec.ident = word(1);
                    rec.user = span(2, 3);
                }
            }
        }
    }
    Ok(lb)
}

/// The `[` that opens the time: after a space and before a digit.
fn find_time_bracket(line: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = memchr(b'[', &line[from..]) {
        let p = from + k;
        if p > 0 && line[p - 1] == b' ' && line.get(p + 1).is_some_and(u8::is_ascii_digit) {
            return Some(p);
        }
        from = p + 1;
    }
    None
}

/// The bracketed time at `lb`: (UTC seconds, index after `]`).
#[inline]
fn time(line: &[u8], lb: usize, times: &mut TimeCache) -> Result<(i64, usize), Malformed> {
    let t = lb + 1;
    // Every accepted time starts with its day: `[[01/Jan/...` is not a time.
    if !line.get(t).is_some_and(u8::is_ascii_digit) {
        return Err(Malformed::Time);
    }
    if line.get(t + HTTPDATE_LEN) == Some(&b']') {
        let secs = times
            .httpdate(&line[t..t + HTTPDATE_LEN])
            .ok_or(Malformed::Time)?;
        return Ok((secs, t + HTTPDATE_LEN + 1));
    }
    let rb = t + memchr(b']', &line[t..]).ok_or(Malformed::Shape)?;
    let text = &line[t..rb];
    let secs = parse_httpdate(text)
        .or_else(|| parse_zoneless_httpdate(text))
        .ok_or(Malformed::Time)?;
    Ok((secs, rb + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Record<'_>, Malformed> {
        parse(line.as_bytes(), &mut TimeCache::new(), Tail::Combined, true)
    }

    /// Found by the reference-model property test: a doubled bracket was taken for a time.
    #[test]
    fn a_doubled_time_bracket_is_refused() {
        let line = r#"0.100.10.10 10.100.10.10 - [[01/Jan/1960:00:00:00 +0000] "GET /a HTTP/1.1" 200 - "-" "-""#;
        assert!(p(line).is_err());
    }

    #[test]
    fn plain_combined_line() {
        let r = p(r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla/4.08""#).unwrap();
        assert_eq!(r.client, b"127.0.0.1");
        assert_eq!(r.ident, b"-");
        assert_eq!(r.user, b"frank");
        assert_eq!(r.time_ms, 971211336000);
        assert_eq!(r.method, b"GET");
        assert_eq!(r.target, b"/a.gif");
        assert_eq!(r.protocol, b"HTTP/1.0");
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes, Some(2326));
        assert_eq!(r.referer, b"http://x/");
        assert_eq!(r.user_agent, b"Mozilla/4.08");
        assert_eq!(r.vhost, b"");
    }

    #[test]
    fn first_space_in_every_position() {
        for len in 0..80 {
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = b' ';
                if at + 1 < len {
                    v[at + 1] = b' ';
                }
                assert_eq!(first_space(&v), Some(at), "{len} {at}");
            }
            assert_eq!(first_space(&vec![b'\xa0'; len]), None);
        }
    }

    #[test]
    fn prefix_variants() {
        let r = p(r#"www.example.com:443 1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!(
            (r.vhost, r.client),
            (&b"www.example.com"[..], &b"1.2.3.4"[..])
        );
        let r = p(r#"1.2.3.4 - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!(
            (r.client, r.ident, r.user),
            (&b"1.2.3.4"[..], &b""[..], &b"-"[..])
        );
        let r = p(r#"1.2.3.4 -  -  [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!((r.client, r.user), (&b"1.2.3.4"[..], &b"-"[..]));
        let r =
            p(r#"1.2.3.4 - john doe [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!(
            (r.client, r.user, r.vhost),
            (&b"1.2.3.4"[..], &b"john doe"[..], &b""[..])
        );
        let r = p(r#"10.0.0.2, 10.0.0.1, 127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!(r.client, b"10.0.0.2, 10.0.0.1, 127.0.0.1");
        let r = p(r#"example.com:80 "10.5.102.222, 175.16.199.1" 10.2.1.185 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#).unwrap();
        assert_eq!(
            (r.vhost, r.client),
            (&b"example.com"[..], &b"10.2.1.185"[..])
        );
    }

    #[test]
    fn tails() {
        let r =
            p(r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 - -"#).unwrap();
        assert_eq!((r.referer, r.user_agent), (&b"-"[..], &b"-"[..]));
        let r = p(r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 - "" "a \"b\" c" "-" 0.1"#).unwrap();
        assert_eq!(
            (r.bytes, r.referer, r.user_agent),
            (None, &b""[..], &br#"a \"b\" c"#[..])
        );
        assert_eq!(
            p(r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "Mozil"#),
            Err(Malformed::Shape)
        );
        assert_eq!(
            p(r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200"#),
            Err(Malformed::Shape)
        );
        assert_eq!(
            p(r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2000 1"#),
            Err(Malformed::Status)
        );
    }

    #[test]
    fn error_log_lines_are_malformed() {
        assert!(p("[Mon Aug 31 16:27:04 2015] [error] [client 10.17.42.3] Premature end").is_err());
        assert!(p("2021/04/01 13:02:31 [error] 31#31: *1 open() failed, client: 1.2.3.4").is_err());
        assert_eq!(p("- - - [1234] - - - - - "), Err(Malformed::Time));
    }
}
