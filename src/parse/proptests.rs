//! Property tests: the fast `combined` parser against a naive reference parser, and no panic on
//! any bytes for every format.
//!
//! The reference below walks the line byte by byte with plain loops and no shared helpers, for
//! the plain shape of a combined line (three words before the time, a 26-byte time). Generated
//! lines carry hostile bytes (quotes, backslashes, brackets, NUL, bytes over 0x7f) in every
//! field; mutated lines break them further. Wherever the reference understands the line, the
//! fast parser must give exactly the same record or the same refusal.

use proptest::prelude::*;

use super::{Format, Malformed, Record, TimeCache};

/// What the reference extracts (the `Record` fields that `combined` fills).
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    client: Vec<u8>,
    ident: Vec<u8>,
    user: Vec<u8>,
    time_ms: i64,
    request: Vec<u8>,
    method: Vec<u8>,
    target: Vec<u8>,
    protocol: Vec<u8>,
    status: u16,
    bytes: Option<u64>,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
}

impl Fields {
    fn of(r: &Record<'_>) -> Fields {
        Fields {
            client: r.client.to_vec(),
            ident: r.ident.to_vec(),
            user: r.user.to_vec(),
            time_ms: r.time_ms,
            request: r.request.to_vec(),
            method: r.method.to_vec(),
            target: r.target.to_vec(),
            protocol: r.protocol.to_vec(),
            status: r.status,
            bytes: r.bytes,
            referer: r.referer.to_vec(),
            user_agent: r.user_agent.to_vec(),
        }
    }
}

/// The reference's verdict.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Parsed(Box<Fields>),
    Refused,
    /// A shape the reference does not model (handled by the fast parser's lenient paths).
    Unmodelled,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since 1970-01-01, counted a year and a month at a time.
fn days(y: i64, m: usize, d: i64) -> i64 {
    let mut n = 0;
    if y >= 1970 {
        for yy in 1970..y {
            n += if is_leap(yy) { 366 } else { 365 };
        }
    } else {
        for yy in y..1970 {
            n -= if is_leap(yy) { 366 } else { 365 };
        }
    }
    let dim = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    for mm in dim.iter().take(m - 1) {
        n += mm;
    }
    n + d - 1
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |v, c| v * 10 + (c - b'0') as i64))
}

/// `dd/Mon/yyyy:HH:MM:SS +zzzz` → UTC ms, the slow way.
fn ref_time(t: &[u8]) -> Option<i64> {
    if t.len() != 26 || t[2] != b'/' || t[6] != b'/' || t[11] != b':' || t[14] != b':' {
        return None;
    }
    if t[17] != b':' || t[20] != b' ' || !(t[21] == b'+' || t[21] == b'-') {
        return None;
    }
    let d = digits(&t[0..2])?;
    let name = String::from_utf8_lossy(&t[3..6]).to_ascii_lowercase();
    let m = MONTHS.iter().position(|x| *x == name)? + 1;
    let y = digits(&t[7..11])?;
    let (h, mi, s) = (
        digits(&t[12..14])?,
        digits(&t[15..17])?,
        digits(&t[18..20])?,
    );
    let (oh, om) = (digits(&t[22..24])?, digits(&t[24..26])?);
    let dim = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d < 1 || d > dim[m - 1] || h > 23 || mi > 59 || s > 59 || oh > 23 || om > 59 {
        return None;
    }
    let off = (oh * 3600 + om * 60) * if t[21] == b'-' { -1 } else { 1 };
    Some((days(y, m, d) * 86400 + h * 3600 + mi * 60 + s - off) * 1000)
}

/// A quoted field starting after its opening quote at `i`: the content end, or `None`.
/// Backslash escapes the next byte; a quote closes when `closes(rest after it)` holds.
fn ref_quoted(b: &[u8], i: usize, closes: &dyn Fn(&[u8]) -> bool) -> Option<usize> {
    let mut j = i;
    let mut escaped = false;
    while j < b.len() {
        let c = b[j];
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' && closes(&b[j + 1..]) {
            return Some(j);
        }
        j += 1;
    }
    None
}

fn ref_split(req: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    if req.is_empty() || req == b"-" {
        return (vec![], vec![], vec![]);
    }
    let Some(sp) = req.iter().position(|&c| c == b' ') else {
        return (vec![], req.to_vec(), vec![]);
    };
    let method = &req[..sp];
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-';
    if method.is_empty() || method.len() > 32 || !method.iter().all(word) {
        return (vec![], req.to_vec(), vec![]);
    }
    let mut k = sp;
    while k < req.len() && req[k] == b' ' {
        k += 1;
    }
    let rest = &req[k..];
    if let Some(last) = rest.iter().rposition(|&c| c == b' ') {
        let proto = &rest[last + 1..];
        if proto.len() >= 5 && proto[..5].eq_ignore_ascii_case(b"HTTP/") {
            let mut target = &rest[..last];
            while target.last() == Some(&b' ') {
                target = &target[..target.len() - 1];
            }
            return (method.to_vec(), target.to_vec(), proto.to_vec());
        }
    }
    (method.to_vec(), rest.to_vec(), vec![])
}

/// Reads a word up to a space or the end.
fn word_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < b.len() && b[j] != b' ' {
        j += 1;
    }
    j
}

fn skip(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    i
}

/// Referer / agent slot at `i` (pointing at the separating space or the end).
fn ref_optional(b: &[u8], i: usize) -> Result<(Vec<u8>, usize), ()> {
    let p = skip(b, i);
    if p >= b.len() {
        return Ok((vec![], b.len()));
    }
    if b[p] == b'"' {
        let end_ok = |a: &[u8]| a.is_empty() || a[0] == b' ';
        let close = ref_quoted(b, p + 1, &end_ok).ok_or(())?;
        return Ok((b[p + 1..close].to_vec(), close + 1));
    }
    let e = word_end(b, p);
    Ok((b[p..e].to_vec(), e))
}

fn reference(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line.iter().all(u8::is_ascii_whitespace) || line.len() > super::MAX_LINE {
        return Verdict::Unmodelled;
    }
    // The time's bracket: after a space, before a digit.
    let Some(lb) = (1..line.len().saturating_sub(1))
        .find(|&k| line[k] == b'[' && line[k - 1] == b' ' && line[k + 1].is_ascii_digit())
    else {
        return Verdict::Refused;
    };
    let words: Vec<&[u8]> = line[..lb]
        .split(|&c| c == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() != 3 || line[lb + 1..].get(26) != Some(&b']') {
        return Verdict::Unmodelled;
    }
    let Some(time_ms) = ref_time(&line[lb + 1..lb + 27]) else {
        return Verdict::Refused;
    };
    let b = line;
    if b.get(lb + 28) != Some(&b' ') {
        return Verdict::Refused;
    }
    let i = skip(b, lb + 28);
    if b.get(i) != Some(&b'"') {
        return Verdict::Refused;
    }
    let req_close = |a: &[u8]| {
        a.len() >= 2 && a[0] == b' ' && (a[1].is_ascii_digit() || a[1] == b'-' || a[1] == b' ')
    };
    let Some(close) = ref_quoted(b, i + 1, &req_close) else {
        return Verdict::Refused;
    };
    let request = b[i + 1..close].to_vec();
    let (method, target, protocol) = ref_split(&request);
    let p = skip(b, close + 1);
    let e = word_end(b, p);
    let st = &b[p..e];
    let status = if st == b"-" {
        0
    } else if st.len() == 3 && st.iter().all(u8::is_ascii_digit) {
        digits(st).unwrap_or(0) as u16
    } else {
        return Verdict::Refused;
    };
    let p = skip(b, e);
    if p == e {
        return Verdict::Refused;
    }
    let e = word_end(b, p);
    let sz = &b[p..e];
    let bytes = if sz == b"-" {
        None
    } else if !sz.is_empty() && sz.len() <= 19 && sz.iter().all(u8::is_ascii_digit) {
        Some(sz.iter().fold(0u64, |v, c| v * 10 + (c - b'0') as u64))
    } else {
        return Verdict::Refused;
    };
    let Ok((referer, next)) = ref_optional(b, e) else {
        return Verdict::Refused;
    };
    let Ok((user_agent, _)) = ref_optional(b, next) else {
        return Verdict::Refused;
    };
    Verdict::Parsed(Box::new(Fields {
        client: words[0].to_vec(),
        ident: words[1].to_vec(),
        user: words[2].to_vec(),
        time_ms,
        request,
        method,
        target,
        protocol,
        status,
        bytes,
        referer,
        user_agent,
    }))
}

// ---- Generators ----

/// Bytes that stress a log parser, mixed with ordinary ones.
fn hostile_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(b"abcXYZ019/?=&.-_%".to_vec()),
        1 => prop::sample::select(b"\"\\ []\t\x00\x7f\x80\xc3\xff:,".to_vec()),
    ]
}

/// A word without spaces (client, ident, user, status, size variants).
fn word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"-".to_vec()),
        3 => (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}").into_bytes()),
        1 => Just(b"2001:db8::1".to_vec()),
        2 => prop::collection::vec(hostile_byte(), 1..12)
            .prop_map(|v| v.into_iter().filter(|&c| c != b' ').collect::<Vec<u8>>())
            .prop_filter("non-empty", |v| !v.is_empty()),
    ]
}

/// Quoted-field content, escaped as Apache escapes it (mostly), or raw hostile bytes.
fn quoted_content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (
            prop::sample::select(vec!["GET", "POST", "HEAD", "OPTIONS", "CONNECT", "get"]),
            prop::collection::vec(hostile_byte(), 0..40),
            prop::sample::select(vec![" HTTP/1.1", " HTTP/1.0", " HTTP/2.0", "", " http/1.1", " FOO/1"]),
        )
            .prop_map(|(m, path, proto)| {
                let mut v = m.as_bytes().to_vec();
                v.push(b' ');
                v.push(b'/');
                v.extend(escape(&path));
                v.extend_from_slice(proto.as_bytes());
                v
            }),
        1 => Just(b"-".to_vec()),
        1 => Just(Vec::new()),
        2 => prop::collection::vec(hostile_byte(), 0..60).prop_map(|v| escape(&v)),
        1 => prop::collection::vec(hostile_byte(), 0..60),
    ]
}

/// Apache's escaping of `"` and `\`.
fn escape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &c in v {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out
}

fn time_text() -> impl Strategy<Value = Vec<u8>> {
    (
        1u32..=31,
        prop::sample::select(vec![
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            "oct", "Mai",
        ]),
        1960u32..2100,
        (0u32..=24, 0u32..=60, 0u32..=60),
        prop::sample::select(vec!['+', '-']),
        (0u32..=14, prop::sample::select(vec![0u32, 30, 45, 60])),
    )
        .prop_map(|(d, mon, y, (h, mi, s), sign, (oh, om))| {
            format!("{d:02}/{mon}/{y}:{h:02}:{mi:02}:{s:02} {sign}{oh:02}{om:02}").into_bytes()
        })
}

fn separator() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![12 => Just(&b" "[..]), 1 => Just(&b"  "[..])]
}

/// A generated line in the combined family.
fn line() -> impl Strategy<Value = Vec<u8>> {
    (
        (word(), word(), word()),
        time_text(),
        quoted_content(),
        prop_oneof![
            4 => Just(b"200".to_vec()),
            1 => Just(b"-".to_vec()),
            1 => (100u32..1000).prop_map(|s| s.to_string().into_bytes()),
            1 => word(),
        ],
        prop_oneof![
            4 => (0u64..10_000_000).prop_map(|s| s.to_string().into_bytes()),
            1 => Just(b"-".to_vec()),
            1 => word(),
        ],
        prop::option::of((quoted_content(), prop::option::of(quoted_content()))),
        prop::sample::select(vec![
            &b""[..],
            b" \"-\"",
            b" 0.123",
            b" \"1.2.3.4, 5.6.7.8\"",
            b"\r",
        ]),
        (separator(), separator(), separator()),
        any::<bool>(),
    )
        .prop_map(
            |((c, i, u), t, req, st, sz, tail, extra, (s1, s2, s3), bare)| {
                let mut v = Vec::new();
                v.extend(c);
                v.push(b' ');
                v.extend(i);
                v.push(b' ');
                v.extend(u);
                v.extend_from_slice(b" [");
                v.extend(t);
                v.extend_from_slice(b"] \"");
                v.extend(req);
                v.push(b'"');
                v.extend_from_slice(s1);
                v.extend(st);
                v.extend_from_slice(s2);
                v.extend(sz);
                if let Some((referer, agent)) = tail {
                    v.extend_from_slice(s3);
                    if bare && referer.is_empty() {
                        v.push(b'-');
                    } else {
                        v.push(b'"');
                        v.extend(referer);
                        v.push(b'"');
                    }
                    if let Some(agent) = agent {
                        v.extend_from_slice(b" \"");
                        v.extend(agent);
                        v.push(b'"');
                    }
                }
                v.extend_from_slice(extra);
                v
            },
        )
}

/// A line with a few bytes replaced, inserted or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        line(),
        prop::collection::vec((any::<prop::sample::Index>(), hostile_byte(), 0u8..3), 1..4),
    )
        .prop_map(|(mut v, edits)| {
            for (at, byte, kind) in edits {
                if v.is_empty() {
                    break;
                }
                let k = at.index(v.len());
                match kind {
                    0 => v[k] = byte,
                    1 => v.insert(k, byte),
                    _ => v.truncate(k),
                }
            }
            v
        })
}

fn check_against_reference(line: &[u8]) -> Result<(), TestCaseError> {
    let f = Format::from_spec("combined").map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = f.parse(line, &mut TimeCache::new());
    match reference(line) {
        Verdict::Parsed(want) => {
            let got = got.map(|r| Fields::of(&r));
            prop_assert_eq!(got, Ok(*want), "line {:?}", String::from_utf8_lossy(line));
        }
        Verdict::Refused => {
            prop_assert!(
                got.is_err(),
                "fast parser accepted {:?}: {:?}",
                String::from_utf8_lossy(line),
                got
            );
        }
        Verdict::Unmodelled => {}
    }
    Ok(())
}

/// Every built-in format plus custom nginx and Apache ones, for the no-panic property.
fn all_formats() -> Vec<Format> {
    [
        "combined",
        "common",
        "vhost_combined",
        r#"nginx:'$host $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time $msec "$http_x_forwarded_for"'"#,
        r#"nginx:$remote_addr [$time_iso8601] $request_method ${request_uri}?$status:$bytes_sent"#,
        r#"apache:%v:%p %a %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" %D %{msec}t"#,
        r#"apache:%{%Y-%m-%dT%H:%M:%S}t.%{usec_frac}t%{%z}t %h \"%m %U%q %H\" %s %O"#,
    ]
    .into_iter()
    .map(|s| Format::from_spec(s).expect("format"))
    .collect()
}

/// The request left whole ([`Format::split_request`] `false`): the same verdict and the same
/// fields as the full parse, but for the request line's parts, which are empty unless the format
/// logs them in fields of their own (then as the full parse has them); always empty for the
/// built-in formats (the first three of `all_formats`).
fn check_unsplit(formats: &[Format], line: &[u8]) -> Result<(), TestCaseError> {
    let mut times = TimeCache::new();
    for (i, f) in formats.iter().enumerate() {
        let lean = f.clone().split_request(false);
        match (f.parse(line, &mut times), lean.parse(line, &mut times)) {
            (Ok(full), Ok(got)) => {
                for (part, whole) in [
                    (got.method, full.method),
                    (got.target, full.target),
                    (got.protocol, full.protocol),
                ] {
                    prop_assert!(part.is_empty() || part == whole);
                    prop_assert!(i >= 3 || part.is_empty(), "format {}: {:?}", i, got);
                }
                let expect = Record {
                    method: got.method,
                    target: got.target,
                    protocol: got.protocol,
                    ..full
                };
                prop_assert_eq!(got, expect);
            }
            (full, got) => prop_assert_eq!(full.map(|_| ()), got.map(|_| ())),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::proptest_config(2000))]

    #[test]
    fn unsplit_requests_parse_as_split_ones_but_the_parts(l in mutated(), g in line()) {
        let formats = all_formats();
        check_unsplit(&formats, &l)?;
        check_unsplit(&formats, &g)?;
    }

    #[test]
    fn generated_lines_match_reference(l in line()) {
        check_against_reference(&l)?;
    }

    #[test]
    fn mutated_lines_match_reference(l in mutated()) {
        check_against_reference(&l)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        l in mutated(),
    ) {
        let mut times = TimeCache::new();
        for f in all_formats() {
            let _ = f.parse(&bytes, &mut times);
            let r = f.parse(&l, &mut times);
            if let Ok(r) = r {
                // Every slice borrows the line.
                for s in [r.client, r.request, r.target, r.user_agent, r.vhost, r.real_client] {
                    prop_assert!(s.is_empty() || l.windows(s.len()).any(|w| w == s));
                }
            } else {
                prop_assert!(matches!(
                    r,
                    Err(Malformed::Empty | Malformed::TooLong | Malformed::Shape
                        | Malformed::Time | Malformed::Status | Malformed::Number)
                ));
            }
        }
    }

    #[test]
    fn arbitrary_specs_never_panic(spec in "(nginx:|apache:)?[ -~]{0,40}", bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(mut f) = Format::from_spec(&spec) {
            let _ = f.set_client_ip_field("http_x_forwarded_for");
            let _ = f.parse(&bytes, &mut TimeCache::new());
        }
    }
}

#[test]
fn reference_agrees_on_a_plain_line() {
    let line = br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 5 "-" "curl""#;
    match reference(line) {
        Verdict::Parsed(f) => {
            assert_eq!(f.time_ms, 971211336000);
            assert_eq!(f.target, b"/a");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reference(b"1.2.3.4 - - [31/Feb/2000:13:55:36 -0700] \"GET /\" 200 5"),
        Verdict::Refused
    );
}

/// The properties above only bite if the generators reach both verdicts often.
#[test]
fn generators_reach_every_verdict() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts = [0usize; 3];
    for strategy in [line().boxed(), mutated().boxed()] {
        for _ in 0..1000 {
            let l = strategy.new_tree(&mut runner).expect("tree").current();
            counts[match reference(&l) {
                Verdict::Parsed(_) => 0,
                Verdict::Refused => 1,
                Verdict::Unmodelled => 2,
            }] += 1;
        }
    }
    eprintln!("parsed / refused / unmodelled: {counts:?}");
    assert!(counts[0] > 400 && counts[1] > 200, "{counts:?}");
}
