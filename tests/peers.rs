//! The parser against other projects' real logs and expectations (`testdata/peers/`, see
//! `testdata/README.md`): CrowdSec hub, Vector's VRL, apachelogs, logstash patterns, Filebeat,
//! lnav, elastic/examples and fluentd.
//!
//! Each source's expectations are read from its own files and compared field by field with what
//! `Record` exposes. Where a peer expects something floodwatch deliberately does differently, the
//! case is listed as an [`Exception`] with the reason; an exception that no longer happens fails
//! the test too, so the list stays true. Each test prints its counts (cases, fields, exceptions).

mod util;

use std::fmt::Debug;
use std::path::PathBuf;

use floodwatch::parse::time::parse_httpdate;
use floodwatch::parse::{addr_list, Format, Malformed, Record, TimeCache, MAX_LINE};
use serde_json::Value;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/peers")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn jsonl(rel: &str) -> Vec<Value> {
    lines(&read(rel))
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

/// A file's lines without their `\n` (a last line without one is kept).
fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn fmt(spec: &str) -> Format {
    Format::from_spec(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn parse<'a>(f: &Format, line: &'a [u8]) -> Result<Record<'a>, Malformed> {
    f.parse(line, &mut TimeCache::new())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- Reference time arithmetic, written plainly (no shared code with the parser) ----

fn naive_days(y: i64, mo: i64, d: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    if y >= 1970 {
        for yy in 1970..y {
            days += if leap(yy) { 366 } else { 365 };
        }
    } else {
        for yy in y..1970 {
            days -= if leap(yy) { 366 } else { 365 };
        }
    }
    let dim = [
        31,
        if leap(y) { 29 } else { 28 },
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
    days + dim[..(mo - 1) as usize].iter().sum::<i64>() + d - 1
}

/// UTC ms of a civil time `[y, mo, d, h, mi, s, ms]` at `offset_min` minutes east of UTC.
fn naive_ms(t: [i64; 7], offset_min: i64) -> i64 {
    let [y, mo, d, h, mi, s, ms] = t;
    ((naive_days(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) - offset_min * 60) * 1000 + ms
}

/// `10/Oct/2000:13:55:36 -0700` split by hand.
fn ref_httpdate(t: &str) -> i64 {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let mo = months.iter().position(|m| *m == &t[3..6]).unwrap() as i64 + 1;
    let sign = if &t[21..22] == "-" { -1 } else { 1 };
    let off = sign * (n(22..24) * 60 + n(24..26));
    naive_ms(
        [n(7..11), mo, n(0..2), n(12..14), n(15..17), n(18..20), 0],
        off,
    )
}

/// RFC 3339 (`2016-12-07T10:05:07.000Z`) via humantime.
fn rfc3339_ms(t: &str) -> i64 {
    let st = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).unwrap();
    st.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Python's repr: `datetime(2019, 5, 6, 12, 9, 43, 123456, tzinfo=timezone(timedelta(hours=-4)))`
/// and the apachelogs test shorthands `utc`, `e5` (UTC+5), `w4` (UTC−4), `mktz(-1, -30)`.
fn py_datetime_ms(repr: &str) -> i64 {
    let inner = repr.split_once("datetime(").unwrap().1;
    let (args, tz) = inner.split_once("tzinfo=").unwrap();
    let nums: Vec<i64> = args
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let tz = tz.trim();
    let ints = |s: &str| -> Vec<i64> {
        s.split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .filter(|x| !x.is_empty() && *x != "-")
            .map(|x| x.parse().unwrap())
            .collect()
    };
    let offset_min = if tz.starts_with("timezone.utc") || tz.starts_with("utc") {
        0
    } else if let Some(h) = tz.strip_prefix('e') {
        ints(h)[0] * 60
    } else if let Some(h) = tz.strip_prefix('w') {
        -ints(h)[0] * 60
    } else if let Some(args) = tz.strip_prefix("mktz(") {
        let v = ints(args);
        v[0] * 60 + v[1]
    } else if let Some(args) = tz.strip_prefix("timezone(timedelta(hours=") {
        ints(args)[0] * 60
    } else {
        panic!("unknown tzinfo {tz}")
    };
    let us = nums.get(6).copied().unwrap_or(0);
    naive_ms(
        [
            nums[0],
            nums[1],
            nums[2],
            nums[3],
            nums[4],
            nums[5],
            us / 1000,
        ],
        offset_min,
    )
}

/// Undoes Apache's log escaping (`\"`, `\\`, `\xHH`) — the reader's job, not the parser's.
fn apache_unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(&text(&b[i + 2..i + 4]), 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

// ---- Bookkeeping ----

/// A peer expectation floodwatch deliberately does not follow.
struct Exception {
    case: &'static str,
    field: &'static str,
    why: &'static str,
}

struct Checker {
    source: &'static str,
    cases: usize,
    fields: usize,
    failures: Vec<String>,
    hit: Vec<String>,
    exceptions: &'static [Exception],
}

impl Checker {
    fn new(source: &'static str, exceptions: &'static [Exception]) -> Checker {
        Checker {
            source,
            cases: 0,
            fields: 0,
            failures: Vec::new(),
            hit: Vec::new(),
            exceptions,
        }
    }

    fn mismatch(&mut self, case: &str, field: &str, msg: String) {
        if let Some(e) = self
            .exceptions
            .iter()
            .find(|e| e.case == case && e.field == field)
        {
            self.hit.push(format!("{case}/{field}: {}", e.why));
        } else {
            self.failures.push(format!("{case}: {field}: {msg}"));
        }
    }

    fn eq<T: PartialEq + Debug>(&mut self, case: &str, field: &str, got: T, want: T) {
        self.fields += 1;
        if got != want {
            self.mismatch(case, field, format!("got {got:?}, want {want:?}"));
        }
    }

    fn bytes(&mut self, case: &str, field: &str, got: &[u8], want: &str) {
        self.eq(case, field, text(got), want.to_string());
    }

    /// `got` is raw log bytes with Apache's escapes; `want` is the decoded value, bytes shown as
    /// Latin-1 characters (as apachelogs decodes them).
    fn decoded(&mut self, case: &str, field: &str, got: &[u8], want: &str) {
        let want: Vec<u8> = if want.chars().all(|c| (c as u32) < 256) {
            want.chars().map(|c| c as u8).collect()
        } else {
            want.as_bytes().to_vec()
        };
        self.eq(case, field, apache_unescape(got), want);
    }

    /// The line must parse; returns the record if it did.
    fn ok<'a>(&mut self, case: &str, r: Result<Record<'a>, Malformed>) -> Option<Record<'a>> {
        self.cases += 1;
        match r {
            Ok(rec) => Some(rec),
            Err(e) => {
                self.mismatch(case, "parses", format!("malformed: {e:?}"));
                None
            }
        }
    }

    /// The line must be malformed.
    fn malformed(&mut self, case: &str, r: Result<Record<'_>, Malformed>) {
        self.cases += 1;
        if let Ok(rec) = r {
            self.mismatch(case, "malformed", format!("parsed as {rec:?}"));
        }
    }

    fn finish(self) {
        eprintln!(
            "{}: {} cases, {} fields compared, {} exceptions",
            self.source,
            self.cases,
            self.fields,
            self.hit.len()
        );
        for h in &self.hit {
            eprintln!("  exception {h}");
        }
        for e in self.exceptions {
            assert!(
                self.hit
                    .iter()
                    .any(|h| h.starts_with(&format!("{}/{}:", e.case, e.field))),
                "{}: exception {}/{} no longer happens: remove it",
                self.source,
                e.case,
                e.field
            );
        }
        assert!(
            self.failures.is_empty(),
            "{}: {} mismatches:\n{}",
            self.source,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn s<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn num(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.parse().ok(),
        _ => None,
    }
}

// ---- CrowdSec hub ----

#[test]
fn crowdsec_hub_parser_expectations() {
    let mut c = Checker::new("crowdsec-hub", &[]);
    let combined = fmt("combined");
    let common = fmt("common");
    for (dir, log) in [
        ("nginx_http-logs", "nginx_http-logs.log"),
        ("nginx-http-malformed", "nginx_http-logs.log"),
        ("apache2-logs", "apache2-logs.log"),
        ("apache2-malformed", "apache2-logs.log"),
    ] {
        let data = read(&format!("crowdsec-hub/{dir}/{log}"));
        let raw = lines(&data);
        let expected = jsonl(&format!("crowdsec-hub/{dir}/expected_s01.jsonl"));
        assert_eq!(raw.len(), expected.len(), "{dir}");
        for e in &expected {
            let idx = e["index"].as_u64().unwrap() as usize;
            let case = format!("{dir}#{idx}");
            let line = raw[idx];
            let p = &e["parsed"];
            let m = &e["meta"];
            assert!(e["success"].as_bool().unwrap(), "{case}");
            if p.get("loglevel").is_some() {
                // CrowdSec parses these with its error-log parser; as access lines they are junk.
                c.malformed(&case, parse(&combined, line));
                c.malformed(&format!("{case}(common)"), parse(&common, line));
                continue;
            }
            let Some(r) = c.ok(&case, parse(&combined, line)) else {
                continue;
            };
            let get = |keys: &[&str]| keys.iter().find_map(|k| s(p, k));
            c.bytes(&case, "client", r.client, s(m, "source_ip").unwrap());
            c.bytes(&case, "method", r.method, s(m, "http_verb").unwrap_or(""));
            c.bytes(&case, "target", r.target, s(m, "http_path").unwrap());
            c.eq(
                &case,
                "status",
                r.status as i64,
                num(m, "http_status").unwrap(),
            );
            let size = get(&["body_bytes_sent", "bytes"]).map(|b| b.parse::<u64>().unwrap());
            c.eq(&case, "bytes", r.bytes, size);
            let t = get(&["time_local", "timestamp"]).unwrap();
            c.eq(&case, "time", r.time_ms, ref_httpdate(t));
            c.bytes(
                &case,
                "user_agent",
                r.user_agent,
                get(&["http_user_agent"]).unwrap_or(""),
            );
            c.bytes(
                &case,
                "referer",
                r.referer,
                get(&["http_referer", "referrer"]).unwrap_or(""),
            );
            c.bytes(
                &case,
                "user",
                r.user,
                get(&["remote_user", "auth"]).unwrap_or("-"),
            );
            if let Some(ident) = get(&["ident"]) {
                c.bytes(&case, "ident", r.ident, ident);
            }
            let version = get(&["http_version", "httpversion"]);
            c.bytes(
                &case,
                "protocol",
                r.protocol,
                &version.map(|v| format!("HTTP/{v}")).unwrap_or_default(),
            );
            c.bytes(&case, "vhost", r.vhost, get(&["target_fqdn"]).unwrap_or(""));
        }
    }
    assert_eq!(c.cases, 41 + 3);
    c.finish();
}

/// Every line of the hub's scenario logs is an access line that parses.
#[test]
fn crowdsec_hub_scenario_logs_parse() {
    let combined = fmt("combined");
    let mut n = 0;
    let mut errors = 0;
    for dir in std::fs::read_dir(path("crowdsec-hub")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() || dir.join("expected_s01.jsonl").exists() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "log") {
                let data = std::fs::read(&f).unwrap();
                for (i, line) in lines(&data).into_iter().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    n += 1;
                    let r = parse(&combined, line);
                    if text(line).contains("] [error] ") || text(line).contains(" [error] ") {
                        // nginx error-log lines mixed into the scenario's input.
                        errors += 1;
                        assert!(r.is_err(), "{}:{}: {}", f.display(), i + 1, text(line));
                        continue;
                    }
                    assert!(
                        r.is_ok(),
                        "{}:{}: {:?} {}",
                        f.display(),
                        i + 1,
                        r,
                        text(line)
                    );
                }
            }
        }
    }
    eprintln!("crowdsec-hub scenario logs: {n} lines, {errors} error-log lines refused");
    assert!(n > 600, "{n}");
    assert_eq!(errors, 16);
}

// ---- Vector VRL ----

static VRL_EXCEPTIONS: &[Exception] = &[
    Exception {
        case: "parse_apache_log/log_line_valid_empty",
        field: "parses",
        why: "a line of dashes has no time; floodwatch needs one to rate it (Malformed::Shape)",
    },
    Exception {
        case: "parse_apache_log/log_line_valid_empty_variant",
        field: "parses",
        why: "time logged as [-]: no time, so nothing to rate (malformed)",
    },
    Exception {
        case: "parse_common_log/log_line_valid_empty",
        field: "parses",
        why: "as parse_apache_log/log_line_valid_empty",
    },
    Exception {
        case: "parse_common_log/log_line_valid_empty_variant",
        field: "parses",
        why: "as parse_apache_log/log_line_valid_empty_variant",
    },
];

#[test]
fn vrl_parse_log_cases() {
    let mut c = Checker::new("vrl", VRL_EXCEPTIONS);
    let combined = fmt("combined");
    let common = fmt("common");
    let mut not_access = 0;
    for e in jsonl("vrl/vrl_parse_log_tests.jsonl") {
        let func = s(&e, "function").unwrap();
        let case = format!("{func}/{}", s(&e, "test").unwrap());
        let Some(value) = s(&e, "value") else {
            // A case about the timestamp_format argument alone, with no line to parse.
            not_access += 1;
            continue;
        };
        let line = value.as_bytes();
        let format_name = s(&e, "format").unwrap_or("common");
        if format_name == "error" {
            // Error-log lines: never access lines, whatever the access format.
            c.malformed(&case, parse(&combined, line));
            c.malformed(&format!("{case}(common)"), parse(&common, line));
            continue;
        }
        let f = match (format_name, s(&e, "timestamp_format")) {
            // VRL's `%+` timestamp_format: the same line spelled as an Apache LogFormat.
            (_, Some("%+")) => fmt(r#"apache:%h %l %u [%{%Y-%m-%dT%H:%M:%S%z}t] \"%r\" %>s %b"#),
            ("common", _) => fmt("common"),
            _ => fmt("combined"),
        };
        if e.get("want_err").is_some() {
            c.malformed(&case, parse(&f, line));
            continue;
        }
        let Some(r) = c.ok(&case, parse(&f, line)) else {
            continue;
        };
        let w = &e["want"];
        let ts = w["timestamp"]["timestamp"].as_str().unwrap();
        c.eq(&case, "time", r.time_ms, rfc3339_ms(ts));
        if let Some(v) = s(w, "host").or(s(w, "client")).or(s(w, "remote_addr")) {
            c.bytes(&case, "client", r.client, v);
        }
        if let Some(v) = s(w, "identity") {
            c.bytes(&case, "ident", r.ident, v);
        }
        if let Some(v) = s(w, "user").or(s(w, "remote_user")) {
            c.bytes(&case, "user", r.user, v);
        }
        if let Some(v) = s(w, "message").or(s(w, "request")) {
            c.bytes(&case, "request", r.request, v);
        }
        if let Some(v) = s(w, "method") {
            c.bytes(&case, "method", r.method, v);
        }
        if let Some(v) = s(w, "path") {
            c.bytes(&case, "target", r.target, v);
        }
        if let Some(v) = s(w, "protocol") {
            c.bytes(&case, "protocol", r.protocol, v);
        }
        if let Some(v) = num(w, "status") {
            c.eq(&case, "status", r.status as i64, v);
        }
        if let Some(v) = num(w, "size").or(num(w, "body_bytes_size")) {
            c.eq(&case, "bytes", r.bytes, Some(v as u64));
        }
        if let Some(v) = s(w, "referrer")
            .or(s(w, "referer"))
            .or(s(w, "http_referer"))
        {
            c.bytes(&case, "referer", r.referer, v);
        }
        if let Some(v) = s(w, "agent").or(s(w, "http_user_agent")) {
            c.bytes(&case, "user_agent", r.user_agent, v);
        }
    }
    assert_eq!(not_access, 1);
    c.finish();
}

// ---- apachelogs ----

/// The `%{...}t`-style time keys apachelogs reports.
const APACHELOGS_TIMES: [&str; 3] = [
    "request_time",
    "original_request_time",
    "final_request_time",
];

#[test]
fn apachelogs_custom_formats() {
    let mut c = Checker::new("apachelogs", &[]);
    for (i, e) in jsonl("apachelogs/cases.jsonl").iter().enumerate() {
        let spec = match &e["fmt"] {
            Value::String(s) => s.clone(),
            other => other["value"].as_str().unwrap().to_string(),
        };
        let case = format!("#{i} {spec}");
        let f = fmt(&format!("apache:{spec}"));
        let entry = s(e, "entry").unwrap();
        let Some(r) = c.ok(&case, parse(&f, entry.as_bytes())) else {
            continue;
        };
        let w = &e["fields"];
        let dash = |k: &str| match w.get(k) {
            Some(Value::Null) => Some("-".to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        if let Some(v) = s(w, "remote_address").or(s(w, "remote_host")) {
            c.bytes(&case, "client", r.client, v);
        }
        if let Some(v) = dash("remote_logname") {
            c.bytes(&case, "ident", r.ident, &v);
        }
        if let Some(v) = dash("remote_user") {
            c.bytes(&case, "user", r.user, &v);
        }
        if let Some(v) = dash("request_line") {
            c.bytes(&case, "request", r.request, &v);
        }
        if let Some(v) = s(w, "request_method") {
            c.bytes(&case, "method", r.method, v);
        }
        if let Some(uri) = s(w, "request_uri") {
            let query = s(w, "request_query").unwrap_or("");
            c.decoded(&case, "target", r.target, &format!("{uri}{query}"));
        }
        if let Some(v) = s(w, "request_protocol") {
            c.bytes(&case, "protocol", r.protocol, v);
        }
        let status = num(w, "final_status")
            .or(num(w, "status"))
            .or(num(w, "original_status"));
        if let Some(v) = status {
            c.eq(&case, "status", r.status as i64, v);
        }
        if let Some(v) = num(w, "bytes_sent").or(num(w, "bytes_out")) {
            c.eq(&case, "bytes", r.bytes, Some(v as u64));
        }
        if let Some(v) = s(w, "virtual_host") {
            c.bytes(&case, "vhost", r.vhost, v);
        }
        if let Some(h) = w.get("headers_in") {
            if let Some(v) = h.get("Referer") {
                c.bytes(&case, "referer", r.referer, v.as_str().unwrap_or("-"));
            }
            if let Some(v) = h.get("User-Agent") {
                c.decoded(&case, "user_agent", r.user_agent, v.as_str().unwrap_or("-"));
            }
        }
        for key in APACHELOGS_TIMES {
            match w.get(key) {
                Some(Value::Null) => c.eq(&case, "time", r.time_ms, 0),
                Some(t) => c.eq(
                    &case,
                    "time",
                    r.time_ms,
                    py_datetime_ms(t["py"].as_str().unwrap()),
                ),
                None => {}
            }
        }
    }
    assert_eq!(c.cases, 41);
    c.finish();
}

#[test]
fn apachelogs_timestamps() {
    let mut c = Checker::new("apachelogs timestamps", &[]);
    for e in jsonl("apachelogs/timestamp_cases.jsonl") {
        let ts = s(&e, "ts").unwrap();
        c.cases += 1;
        let want = py_datetime_ms(e["dt"]["py"].as_str().unwrap());
        c.eq(
            ts,
            "time",
            parse_httpdate(ts.as_bytes()).map(|s| s * 1000),
            Some(want),
        );
    }
    let bad = json("apachelogs/bad_timestamps.json");
    let combined = fmt("combined");
    for ts in bad["ts"].as_array().unwrap() {
        let ts = ts.as_str().unwrap();
        c.cases += 1;
        c.eq(ts, "refused", parse_httpdate(ts.as_bytes()), None);
        let line = format!(r#"1.2.3.4 - - [{ts}] "GET / HTTP/1.1" 200 1 "-" "-""#);
        c.eq(
            ts,
            "line",
            parse(&combined, line.as_bytes()).err(),
            Some(Malformed::Time),
        );
    }
    assert_eq!(c.cases, 64 + 7);
    c.finish();
}

#[test]
fn apachelogs_vhost_combined_log_and_decoding_case() {
    let mut c = Checker::new("apachelogs vhost_combined.log", &[]);
    let f = fmt("vhost_combined");
    let data = read("apachelogs/vhost_combined.log");
    let mut malformed = 0;
    for (i, line) in lines(&data).into_iter().enumerate() {
        let case = format!("line {}", i + 1);
        if line == b"Bad line" {
            malformed += 1;
            c.malformed(&case, parse(&f, line));
        } else if let Some(r) = c.ok(&case, parse(&f, line)) {
            c.bytes(&case, "vhost", r.vhost, "www.varonathe.org");
            c.bytes(&case, "client", r.client, "203.62.1.80");
            c.eq(&case, "status", r.status, 301);
        }
    }
    assert_eq!((c.cases, malformed), (7, 1));

    let d = json("apachelogs/decoding_case.json");
    let line = s(&d, "entry").unwrap();
    let x = &d["expect"];
    let case = "decoding_case";
    if let Some(r) = c.ok(case, parse(&fmt("combined"), line.as_bytes())) {
        c.bytes(case, "client", r.client, s(x, "remote_host").unwrap());
        c.eq(
            case,
            "status",
            r.status as i64,
            num(x, "final_status").unwrap(),
        );
        c.eq(
            case,
            "bytes",
            r.bytes,
            Some(num(x, "bytes_sent").unwrap() as u64),
        );
        c.bytes(case, "request", r.request, r"Gh0st\xad");
        c.bytes(case, "target", r.target, r"Gh0st\xad");
        c.bytes(case, "method", r.method, "");
        c.bytes(case, "referer", r.referer, "-");
        c.eq(case, "time", r.time_ms, rfc3339_ms("2017-11-18T12:30:55Z"));
    }
    c.finish();
}

// ---- logstash-patterns-core ----

static LOGSTASH_EXCEPTIONS: &[Exception] = &[Exception {
    case: "[04/Mai/2015:13:17:15 +0200]",
    field: "match",
    why: "Apache and nginx always write English (C locale) month names; a localised one is refused",
}];

#[test]
fn logstash_httpd_spec_lines_and_httpdate() {
    let mut c = Checker::new("logstash-patterns-core", LOGSTASH_EXCEPTIONS);
    let combined = fmt("combined");
    let common = fmt("common");
    for e in json("logstash-patterns-core/spec_lines.json")
        .as_array()
        .unwrap()
    {
        let line = s(e, "line").unwrap().as_bytes();
        let case = format!("{}: {}", s(e, "pattern").unwrap(), s(e, "context").unwrap());
        if s(e, "pattern") == Some("HTTPD_ERRORLOG") {
            c.malformed(&case, parse(&combined, line));
            c.malformed(&format!("{case} (common)"), parse(&common, line));
            continue;
        }
        let Some(r) = c.ok(&case, parse(&combined, line)) else {
            continue;
        };
        let w = &e["expect"]["legacy"];
        let absent: Vec<&str> = w
            .get("absent")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, got) in [
            ("clientip", r.client),
            ("verb", r.method),
            ("request", r.target),
            ("auth", r.user),
            ("ident", r.ident),
        ] {
            if let Some(v) = s(w, key) {
                c.bytes(&case, key, got, v);
            }
        }
        if let Some(v) = s(w, "httpversion") {
            c.bytes(&case, "httpversion", r.protocol, &format!("HTTP/{v}"));
        }
        // Legacy grok keeps the quotes of referrer and agent.
        for (key, got) in [("referrer", r.referer), ("agent", r.user_agent)] {
            if let Some(v) = s(w, key) {
                c.bytes(&case, key, got, v.trim_matches('"'));
            }
        }
        if let Some(v) = num(w, "response") {
            c.eq(&case, "response", r.status as i64, v);
        }
        if absent.contains(&"response") {
            c.eq(&case, "response", r.status, 0);
        }
        if let Some(v) = num(w, "bytes") {
            c.eq(&case, "bytes", r.bytes, Some(v as u64));
        }
    }
    let dates = json("logstash-patterns-core/httpdate_cases.json");
    for d in dates["HTTPDATE"].as_array().unwrap() {
        let v = s(d, "value").unwrap();
        let want_match = s(d, "expect").unwrap().starts_with("match");
        c.cases += 1;
        c.eq(
            v,
            "match",
            parse_httpdate(v.as_bytes()).is_some(),
            want_match,
        );
    }
    assert_eq!(c.cases, 3 + 2 * 8 + 3);
    c.finish();
}

// ---- Filebeat (elastic/beats) ----

static BEATS_EXCEPTIONS: &[Exception] = &[Exception {
    case: "nginx/test.log:5",
    field: "source.ip",
    why: "a quoted X-Forwarded-For list before the connecting address: floodwatch keys on the \
          connecting address (10.2.1.185) and only trusts a forwarded list behind a configured \
          proxy, where Filebeat takes the list's first public address",
}];

#[test]
fn beats_key_fields() {
    let mut c = Checker::new("elastic-beats", BEATS_EXCEPTIONS);
    let combined = fmt("combined");
    for module in ["nginx", "apache"] {
        let data = read(&format!("elastic-beats/{module}/test.log"));
        let raw = lines(&data);
        let exp = json(&format!(
            "elastic-beats/{module}/test.log-expected.keyfields.json"
        ));
        let cases = exp["cases"].as_array().unwrap();
        for e in cases {
            let n = e["line"].as_u64().unwrap() as usize;
            let case = format!("{module}/test.log:{n}");
            let Some(r) = c.ok(&case, parse(&combined, raw[n - 1])) else {
                continue;
            };
            c.eq(
                &case,
                "@timestamp",
                r.time_ms,
                rfc3339_ms(s(e, "@timestamp").unwrap()),
            );
            let listed: Vec<String> = addr_list(r.client).map(text).collect();
            if let Some(list) = e.get("remote_ip_list").and_then(Value::as_array) {
                let list: Vec<String> = list.iter().map(|v| v.as_str().unwrap().into()).collect();
                // The client is the list as logged, or its connecting (last) address.
                let ok = listed == list || (listed.len() == 1 && list.last() == listed.first());
                c.eq(&case, "remote_ip_list", ok, true);
            }
            match e.get("source.ip") {
                Some(Value::String(ip)) => {
                    c.eq(&case, "source.ip", listed.contains(ip), true);
                }
                Some(Value::Null) => {
                    let addr = s(e, "source.address").unwrap();
                    c.bytes(&case, "source.address", r.client, addr);
                    c.eq(
                        &case,
                        "source.ip",
                        floodwatch::addr::Addr::parse(r.client),
                        None,
                    );
                }
                _ => {}
            }
            match e.get("method") {
                Some(Value::String(m)) => c.eq(
                    &case,
                    "method",
                    text(r.method).to_lowercase(),
                    m.to_lowercase(),
                ),
                Some(Value::Null) => c.bytes(&case, "method", r.method, ""),
                _ if s(e, "note").is_some_and(|n| n.contains("no method")) => {
                    c.bytes(&case, "method", r.method, "")
                }
                _ => {}
            }
            match e.get("url") {
                Some(Value::String(u)) => c.bytes(&case, "url", r.target, u),
                Some(Value::Null) => c.bytes(&case, "url", r.target, ""),
                _ => {}
            }
            if let Some(v) = s(e, "http.version") {
                c.bytes(&case, "http.version", r.protocol, &format!("HTTP/{v}"));
            }
            if let Some(v) = num(e, "status") {
                c.eq(&case, "status", r.status as i64, v);
            }
            match e.get("bytes") {
                Some(Value::Null) => c.eq(&case, "bytes", r.bytes, None),
                Some(v) => c.eq(&case, "bytes", r.bytes, v.as_u64()),
                None => {}
            }
            if let Some(v) = s(e, "referrer") {
                c.bytes(&case, "referrer", r.referer, v);
            }
            if let Some(v) = s(e, "user.name") {
                c.bytes(&case, "user.name", r.user, v);
            }
            if let Some(v) = s(e, "user_agent.original") {
                c.bytes(&case, "user_agent", r.user_agent, v);
            }
        }
        // The lines without an entry (apache's 7th: a vhost prefix) must parse all the same.
        for (i, line) in raw.iter().enumerate().skip(cases.len()) {
            let case = format!("{module}/test.log:{}", i + 1);
            if let Some(r) = c.ok(&case, parse(&combined, line)) {
                c.bytes(&case, "vhost", r.vhost, "vhost1.domaine.fr");
                c.bytes(&case, "client", r.client, "123.123.123.123");
            }
        }
    }
    assert_eq!(c.cases, 14);
    c.finish();
}

#[test]
fn beats_other_logs_parse() {
    let combined = fmt("combined");
    let mut n = 0;
    for rel in [
        "nginx/access.log",
        "nginx/test-with-host.log",
        "apache/darwin-2.4.23.log",
        "apache/test-vhost.log",
    ] {
        let data = read(&format!("elastic-beats/{rel}"));
        for (i, line) in lines(&data).into_iter().enumerate() {
            n += 1;
            let r = parse(&combined, line);
            assert!(r.is_ok(), "{rel}:{}: {r:?}", i + 1);
        }
    }
    // mod_ssl's default ssl_request_log format.
    let ssl = fmt(r#"apache:%t %h %{SSL_PROTOCOL}x %{SSL_CIPHER}x \"%r\" %b"#);
    let data = read("elastic-beats/apache/ssl-request.log");
    let got: Vec<_> = lines(&data)
        .into_iter()
        .map(|l| parse(&ssl, l).map(|r| (text(r.client), r.bytes)).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            ("172.30.0.119".to_string(), Some(1375)),
            ("81.2.69.143".to_string(), None)
        ]
    );
    eprintln!("elastic-beats other logs: {} lines parse", n + got.len());
    assert_eq!(n, 13 + 10 + 6 + 1);
}

// ---- lnav ----

#[test]
fn lnav_format_samples_all_parse() {
    let data = read("lnav/format_samples.txt");
    let samples = lines(&data);
    assert_eq!(samples.len(), 9);
    let combined = fmt("combined");
    // lnav's access_log also knows an IIS-like layout (ISO time, method, path, -1/duration);
    // it is a custom format for floodwatch, quoted and unquoted path variants.
    let iso_quoted = fmt(
        r#"apache:%{%Y-%m-%dT%H:%M:%S}t %a %u %m \"%U%q\" %D %>s %b \"%{Referer}i\" \"%{User-Agent}i\""#,
    );
    let iso_bare = fmt(
        r#"apache:%{%Y-%m-%dT%H:%M:%S}t %a %u %m %U%q %D %>s %b \"%{Referer}i\" \"%{User-Agent}i\""#,
    );
    let mut c = Checker::new("lnav format_samples", &[]);
    for (i, line) in samples.iter().enumerate() {
        let case = format!("sample {}", i + 1);
        let f = match i {
            2 => &iso_quoted,
            3 => &iso_bare,
            _ => &combined,
        };
        let Some(r) = c.ok(&case, parse(f, line)) else {
            continue;
        };
        let want_client = match i {
            5 => "1.2.3.4",
            6 => "10.112.2.3",
            7 => "172.18.0.1",
            8 => "202.32.92.47",
            4 => "10.1.10.51",
            _ => "10.112.72.172",
        };
        c.bytes(&case, "client", r.client, want_client);
        c.eq(&case, "has time", r.time_ms > 0, true);
    }
    c.finish();
    // Spot checks of the odd ones.
    let r = parse(&combined, samples[5]).unwrap();
    assert_eq!(
        (r.vhost, r.user),
        (&b"www.example.com"[..], &b"theuser"[..])
    );
    let r = parse(&combined, samples[7]).unwrap();
    assert_eq!(r.time_ms, rfc3339_ms("2023-08-29T22:02:58Z"));
    assert_eq!(r.bytes, None);
    let r = parse(&combined, samples[8]).unwrap();
    assert_eq!(
        (r.protocol, r.target),
        (&b""[..], &b"/~scottp/publish.html"[..])
    );
    let r = parse(&iso_quoted, samples[2]).unwrap();
    assert_eq!(
        (r.method, r.target, r.status),
        (&b"GET"[..], &b"/client/"[..], 200)
    );
    assert_eq!(r.time_ms, rfc3339_ms("2013-02-11T06:43:36Z"));
}

#[test]
fn lnav_shop_log_every_line_parses() {
    let data = read("lnav/logfile_shop_access_log.0");
    let combined = fmt("combined");
    let mut times = TimeCache::new();
    let all = lines(&data);
    assert_eq!(all.len(), 1000);
    for (i, line) in all.iter().enumerate() {
        let r = combined.parse(line, &mut times);
        let r = r.unwrap_or_else(|e| panic!("line {}: {e:?}: {}", i + 1, text(line)));
        // Every line: a +0330 offset, the trailing "-" ignored.
        assert!(text(line).contains("+0330]"));
        let start = text(line).find('[').unwrap() + 1;
        assert_eq!(
            r.time_ms,
            ref_httpdate(&text(&line[start..start + 26])),
            "line {}",
            i + 1
        );
    }
    let first = parse(&combined, all[0]).unwrap();
    assert_eq!(first.client, b"54.36.149.41");
    assert_eq!(
        first.user_agent,
        b"Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)"
    );
    eprintln!("lnav shop log: 1000 lines parse");
}

#[test]
fn lnav_small_logs() {
    let combined = fmt("combined");
    for rel in [
        "lnav/logfile_access_log.0",
        "lnav/logfile_access_log.1",
        "lnav/logfile_bad_access_log.0",
        "lnav/logfile_regexp_access_log.0",
    ] {
        for line in lines(&read(rel)) {
            let r = parse(&combined, line);
            assert!(r.is_ok(), "{rel}: {r:?}: {}", text(line));
        }
    }
    // `192.168.202.254 [20/Jul/2009...`: neither ident nor user.
    let data = read("lnav/logfile_bad_access_log.0");
    let r = parse(&combined, lines(&data)[1]).unwrap();
    assert_eq!((r.client, r.user), (&b"192.168.202.254"[..], &b""[..]));
    // `localhost:443 178.20.184.42 1j0vhgd jsmith [...`: a vhost and a real ident.
    let data = read("lnav/logfile_regexp_access_log.0");
    let r = parse(&combined, lines(&data)[0]).unwrap();
    assert_eq!(
        (r.vhost, r.client, r.ident, r.user),
        (
            &b"localhost"[..],
            &b"178.20.184.42"[..],
            &b"1j0vhgd"[..],
            &b"jsmith"[..]
        )
    );
    // Syslog lines, some wrapping access-log text without a time: none is an access line.
    for line in lines(&read("lnav/logfile_syslog_with_access_log.0")) {
        assert!(parse(&combined, line).is_err(), "{}", text(line));
    }
}

// ---- elastic/examples ----

#[test]
fn elastic_examples_apache_logs() {
    let data = read("elastic-examples/apache_logs");
    let combined = fmt("combined");
    let mut times = TimeCache::new();
    let all = lines(&data);
    assert_eq!(all.len(), 10_000);
    let mut bad = Vec::new();
    let mut clients = std::collections::HashSet::new();
    for (i, line) in all.iter().enumerate() {
        match combined.parse(line, &mut times) {
            Ok(r) => {
                assert!(r.time_ms > 1_400_000_000_000, "line {}", i + 1);
                clients.insert(r.client);
            }
            Err(e) => bad.push((i + 1, e)),
        }
    }
    // The one line whose user agent lacks its closing quote.
    assert_eq!(bad, vec![(8899, Malformed::Shape)]);
    assert!(clients.len() > 1000, "{}", clients.len());
    eprintln!(
        "elastic-examples apache_logs: 9,999 of 10,000 parse, {} clients",
        clients.len()
    );
}

// ---- fluentd ----

#[test]
fn fluentd_apache2_cases() {
    let mut c = Checker::new("fluentd", &[]);
    let combined = fmt("combined");
    let d = json("fluentd/cases.json");
    for e in d["cases"].as_array().unwrap() {
        let case = s(e, "test").unwrap();
        let Some(r) = c.ok(case, parse(&combined, s(e, "line").unwrap().as_bytes())) else {
            continue;
        };
        let w = &e["expect"];
        let or_dash = |k: &str| s(w, k).unwrap_or("-").to_string();
        c.bytes(case, "host", r.client, s(w, "host").unwrap());
        c.bytes(case, "user", r.user, &or_dash("user"));
        c.bytes(case, "method", r.method, s(w, "method").unwrap());
        c.bytes(case, "path", r.target, s(w, "path").unwrap());
        c.eq(case, "code", r.status as i64, num(w, "code").unwrap());
        c.eq(case, "size", r.bytes, Some(num(w, "size").unwrap() as u64));
        c.bytes(case, "referer", r.referer, &or_dash("referer"));
        c.bytes(case, "agent", r.user_agent, s(w, "agent").unwrap());
        c.eq(case, "time", r.time_ms, ref_httpdate(s(e, "time").unwrap()));
    }
    assert_eq!(c.cases, 2);
    c.finish();
}

// ---- Lines that are not access-log lines ----

#[test]
fn malformed_kinds_never_parse() {
    let formats: Vec<Format> = ["combined", "common", "vhost_combined"]
        .into_iter()
        .map(fmt)
        .chain([fmt(
            r#"nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#,
        )])
        .collect();
    let good = br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "curl""#;
    let mut long = good[..good.len() - 1].to_vec();
    long.extend_from_slice(&vec![b'a'; MAX_LINE]);
    long.push(b'"');
    let cases: Vec<(&str, Vec<u8>, Option<Malformed>)> = vec![
        (
            "apache error log",
            b"[Mon Aug 31 16:27:04 2015] [error] [client 10.17.42.3] Premature end".to_vec(),
            None,
        ),
        (
            "nginx error log",
            b"2021/04/01 13:02:31 [error] 31#31: *1 open() \"/x\" failed, client: 1.2.3.4".to_vec(),
            None,
        ),
        ("garbage", b"batman".to_vec(), None),
        ("empty", b"".to_vec(), Some(Malformed::Empty)),
        ("blank", b"  \t".to_vec(), Some(Malformed::Empty)),
        (
            "raw TLS handshake",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1f".to_vec(),
            None,
        ),
        (
            "invalid UTF-8",
            b"\xff\xfe\xfd [\xc3\x28] \"\xa0\xa1\"".to_vec(),
            None,
        ),
        ("over 64 KiB", long, Some(Malformed::TooLong)),
        ("truncated last line", good[..55].to_vec(), None),
        (
            "truncated in the time",
            b"1.2.3.4 - - [10/Oct/2000:13:5".to_vec(),
            None,
        ),
    ];
    let mut checked = 0;
    for (name, line, kind) in &cases {
        for (k, f) in formats.iter().enumerate() {
            let r = parse(f, line);
            assert!(r.is_err(), "{name} (format {k}) parsed: {r:?}");
            if let Some(kind) = kind {
                assert_eq!(r.err(), Some(*kind), "{name} (format {k})");
            }
            checked += 1;
        }
    }
    // Cut inside the user agent: `common` never reads that far, `combined` refuses it.
    assert_eq!(
        parse(&formats[0], &good[..70]).err(),
        Some(Malformed::Shape)
    );
    assert!(parse(&formats[1], &good[..70]).is_ok());
    // Invalid UTF-8 inside an otherwise good line is just bytes.
    let r = parse(
        &formats[0],
        b"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET /\xff\xfe HTTP/1.1\" 200 5 \"-\" \"\xc3\x28\"",
    )
    .unwrap();
    assert_eq!(r.target, b"/\xff\xfe");
    eprintln!("malformed kinds: {checked} (line, format) pairs refused");
}

// ---- No allocation per line ----

#[global_allocator]
static COUNTING: util::CountingAlloc = util::CountingAlloc;

#[test]
fn parsing_does_not_allocate() {
    let formats = [
        fmt("combined"),
        fmt("common"),
        fmt(
            r#"nginx:'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"'"#,
        ),
        fmt(
            r#"apache:%h %l %u [%{%d/%b/%Y:%H:%M:%S %z}t] \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\""#,
        ),
    ];
    let shop = read("lnav/logfile_shop_access_log.0");
    let apache = read("elastic-examples/apache_logs");
    let all: Vec<&[u8]> = lines(&shop).into_iter().chain(lines(&apache)).collect();
    let mut times = TimeCache::new();
    let mut parsed = 0usize;
    let before = util::allocations();
    for f in &formats {
        for line in &all {
            parsed += usize::from(f.parse(line, &mut times).is_ok());
        }
    }
    let allocs = util::allocations() - before;
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations for {} lines",
        4 * all.len()
    );
    // combined and the strftime Apache format: all 11,000 but apache_logs' line 8899; common:
    // all; the nginx format with a trailing forwarded-for field: the shop log's 1,000 only.
    assert_eq!(parsed, 10_999 + 11_000 + 1000 + 10_999);
}
