//! Byte-level pieces shared by the built-in and the compiled-plan parsers: quoted fields, status,
//! size, and splitting a request line into method, target and protocol.
//!
//! Servers escape differently (Apache writes `\"`, nginx `\x22`), and some old or broken ones do
//! not escape at all; a quote therefore closes a field only when what follows it fits the format,
//! otherwise it is taken as part of the value.

use memchr::{memchr, memrchr};

use super::Malformed;

/// Index of the quote that closes a quoted field whose content starts at `from`. A quote after
/// an odd run of backslashes is escaped (`\"`, but not `\\"`); a quote closes only when
/// `closes(bytes after it)` holds.
#[inline]
pub fn find_close_quote(line: &[u8], from: usize, closes: impl Fn(&[u8]) -> bool) -> Option<usize> {
    let mut i = from;
    while i < line.len() {
        let j = i + find_quote(&line[i..])?;
        // Backslashes are rare: look back only when the byte before the quote is one.
        let mut k = j;
        while k > from && line[k - 1] == b'\\' {
            k -= 1;
        }
        if (j - k).is_multiple_of(2) && closes(&line[j + 1..]) {
            return Some(j);
        }
        i = j + 1;
    }
    None
}

/// First `"` in `hay`.
///
/// Log fields are short (tens of bytes), so the search is a plain loop of 16-byte SSE2 compares
/// (SSE2 is part of every x86_64 CPU): memchr's dispatch, alignment and unrolling cost more than
/// they save at these distances (combined on the lnav shop log: 14.1M → 19.5M lines/s).
#[inline(always)]
#[allow(unsafe_code)]
fn find_quote(hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let n = hay.len();
        if n >= 16 {
            let mut i = 0;
            // SAFETY: SSE2 is in the x86_64 baseline, and every load reads the 16 bytes at
            // `i..i + 16` or `n - 16..n`, both inside `hay` (`i + 16 <= n`, `n >= 16`).
            unsafe {
                let quote = _mm_set1_epi8(b'"' as i8);
                while i + 16 <= n {
                    let v = _mm_loadu_si128(hay.as_ptr().add(i).cast::<__m128i>());
                    let m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u32;
                    if m != 0 {
                        return Some(i + m.trailing_zeros() as usize);
                    }
                    i += 16;
                }
                if i < n {
                    // The last, overlapping 16 bytes; bytes before `i` were already seen.
                    let v = _mm_loadu_si128(hay.as_ptr().add(n - 16).cast::<__m128i>());
                    let m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u32;
                    let m = m >> (i - (n - 16));
                    if m != 0 {
                        return Some(i + m.trailing_zeros() as usize);
                    }
                }
            }
            return None;
        }
        hay.iter().position(|&b| b == b'"')
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        memchr(b'"', hay)
    }
}

/// The field ends here: end of line or a space.
#[inline]
pub fn at_field_end(after: &[u8]) -> bool {
    matches!(after.first(), None | Some(b' '))
}

/// Index of the next space at or after `from`, or the line's end.
#[inline]
pub fn token_end(line: &[u8], from: usize) -> usize {
    match memchr(b' ', &line[from..]) {
        Some(k) => from + k,
        None => line.len(),
    }
}

/// First index at or after `from` that is not a space.
#[inline]
pub fn skip_spaces(line: &[u8], mut from: usize) -> usize {
    while line.get(from) == Some(&b' ') {
        from += 1;
    }
    from
}

/// `%>s` / `$status`: three digits, or `-` (logged when there was no response) as 0.
#[inline]
pub fn status(tok: &[u8]) -> Result<u16, Malformed> {
    match *tok {
        [b'-'] => Ok(0),
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Ok((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
        }
        _ => Err(Malformed::Status),
    }
}

/// `%b` / `$body_bytes_sent`: digits, or `-` as `None`.
#[inline]
pub fn bytes(tok: &[u8]) -> Result<Option<u64>, Malformed> {
    if tok == b"-" {
        return Ok(None);
    }
    if tok.is_empty() || tok.len() > 19 {
        return Err(Malformed::Number);
    }
    let mut v: u64 = 0;
    for &b in tok {
        if !b.is_ascii_digit() {
            return Err(Malformed::Number);
        }
        v = v * 10 + (b - b'0') as u64;
    }
    Ok(Some(v))
}

/// Whether `m` can be a request method: a non-empty word of letters, digits, `_` or `-`.
/// Anything else in first position (TLS bytes, `\x16\x03`, binary probes) means the request
/// line has no method, and the whole text is kept as the target.
#[inline]
fn is_method(m: &[u8]) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits `GET /path HTTP/1.1` into (method, target, protocol). `-` and an empty request give
/// three empty slices; a request of one word (`HELP`) or one that does not start with a method
/// is all target; a missing version (`GET /`) gives an empty protocol. Targets may contain
/// spaces (Apache logs them raw): the protocol is the last word only when it starts `HTTP/`.
#[inline]
pub fn split_request(req: &[u8]) -> (&[u8], &[u8], &[u8]) {
    if req.is_empty() || req == b"-" {
        return (b"", b"", b"");
    }
    // Methods are short: a plain loop beats a memchr call here.
    let Some(sp) = req.iter().take(33).position(|&b| b == b' ') else {
        return (b"", req, b"");
    };
    let method = &req[..sp];
    if !is_method(method) {
        return (b"", req, b"");
    }
    let rest = &req[skip_spaces(req, sp)..];
    // The usual ending, ` HTTP/1.1`, without a search.
    if let Some(tail) = rest.len().checked_sub(9).map(|k| &rest[k..]) {
        if tail[0] == b' '
            && tail[1..6] == *b"HTTP/"
            && tail[6].is_ascii_digit()
            && tail[7] == b'.'
            && tail[8].is_ascii_digit()
            && rest.len() > 9
        {
            let mut target = &rest[..rest.len() - 9];
            while let [head @ .., b' '] = target {
                target = head;
            }
            return (method, target, &rest[rest.len() - 8..]);
        }
    }
    if let Some(j) = memrchr(b' ', rest) {
        let proto = &rest[j + 1..];
        if proto.starts_with(b"HTTP/")
            || (proto.len() >= 5 && proto[..5].eq_ignore_ascii_case(b"HTTP/"))
        {
            let mut target = &rest[..j];
            while let [head @ .., b' '] = target {
                target = head;
            }
            return (method, target, proto);
        }
    }
    (method, rest, b"")
}

/// `host:port` → `host` (an IPv6 address, with several colons, is left whole).
#[inline]
pub fn strip_port(v: &[u8]) -> &[u8] {
    if let Some(c) = memrchr(b':', v) {
        let port = &v[c + 1..];
        if !port.is_empty()
            && port.iter().all(u8::is_ascii_digit)
            && memchr(b':', &v[..c]).is_none()
        {
            return &v[..c];
        }
    }
    v
}

/// The addresses in a logged address list (`X-Forwarded-For`-style: `1.2.3.4, 10.0.0.1`, also
/// space-separated or quoted), left to right, as raw slices. A single address yields itself.
pub fn addr_list(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b',' || b == b' ' || b == b'"')
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the reference-model property test: ` HTTP/ .1` is not a protocol.
    #[test]
    fn a_protocol_needs_its_version_digits() {
        let (m, t, p) = split_request(b"OPTIONS /a HTTP/ .1");
        assert_eq!((m, t, p), (&b"OPTIONS"[..], &b"/a HTTP/ .1"[..], &b""[..]));
        let (_, t, p) = split_request(b"GET /a HTTP/1.1");
        assert_eq!((t, p), (&b"/a"[..], &b"HTTP/1.1"[..]));
    }

    #[test]
    fn request_split_forms() {
        let s = |r: &str| {
            let (m, t, p) = split_request(r.as_bytes());
            (
                String::from_utf8_lossy(m).into_owned(),
                String::from_utf8_lossy(t).into_owned(),
                String::from_utf8_lossy(p).into_owned(),
            )
        };
        let own = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(s("GET / HTTP/1.1"), own("GET", "/", "HTTP/1.1"));
        assert_eq!(s("GET /"), own("GET", "/", ""));
        assert_eq!(s("GET /a b HTTP/2.0"), own("GET", "/a b", "HTTP/2.0"));
        assert_eq!(s("GET /a b"), own("GET", "/a b", ""));
        assert_eq!(s("HELP"), own("", "HELP", ""));
        assert_eq!(s("-"), own("", "", ""));
        assert_eq!(s(""), own("", "", ""));
        assert_eq!(
            s(r"\x16\x03\x01\x01 \x02"),
            own("", r"\x16\x03\x01\x01 \x02", "")
        );
        assert_eq!(s("CONNECT example.com:443 HTTP/1.1").1, "example.com:443");
        assert_eq!(s("GET  /x  HTTP/1.0"), own("GET", "/x", "HTTP/1.0"));
    }

    #[test]
    fn status_and_bytes() {
        assert_eq!(status(b"404"), Ok(404));
        assert_eq!(status(b"-"), Ok(0));
        assert_eq!(status(b"000"), Ok(0));
        for bad in [&b"40"[..], b"4040", b"abc", b"", b"+12"] {
            assert_eq!(status(bad), Err(Malformed::Status));
        }
        assert_eq!(bytes(b"0"), Ok(Some(0)));
        assert_eq!(bytes(b"-"), Ok(None));
        assert_eq!(bytes(b"12a"), Err(Malformed::Number));
        assert_eq!(bytes(b"99999999999999999999"), Err(Malformed::Number));
    }

    #[test]
    fn find_quote_every_position_and_length() {
        for len in 0..70 {
            assert_eq!(find_quote(&vec![b'a'; len]), None, "{len}");
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = b'"';
                if at + 3 < len {
                    v[at + 3] = b'"';
                }
                assert_eq!(find_quote(&v), Some(at), "{len} {at}");
            }
        }
    }

    #[test]
    fn quotes_close_only_where_the_format_continues() {
        let line = br#""a\"b" c" 200"#;
        let close = find_close_quote(line, 1, |a| a.starts_with(b" 2"));
        assert_eq!(close, Some(8));
        assert_eq!(find_close_quote(br#""abc"#, 1, at_field_end), None);
        assert_eq!(find_close_quote(br#""abc\"#, 1, at_field_end), None);
    }

    #[test]
    fn ports_and_lists() {
        assert_eq!(strip_port(b"example.com:443"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"2001:db8::1"), b"2001:db8::1");
        let v: Vec<&[u8]> = addr_list(b"10.0.0.2, 10.0.0.1 127.0.0.1").collect();
        assert_eq!(v, vec![&b"10.0.0.2"[..], b"10.0.0.1", b"127.0.0.1"]);
    }
}
