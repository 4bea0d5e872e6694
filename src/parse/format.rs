//! [`Format`]: a log format compiled once from its spec, then used to parse every line.
//!
//! Specs are `combined`, `common`, `vhost_combined`, `nginx:<log_format>` and
//! `apache:<LogFormat>`. The three named formats (and custom strings that spell them out) use the
//! hand-written parser in `combined.rs`; any other custom string becomes a field plan.

use super::combined::{self, Tail};
use super::plan::{Dest, Plan};
use super::spec;
use super::time::TimeCache;
use super::{FormatError, Malformed, Record, MAX_LINE};

#[derive(Clone, Debug)]
enum Kind {
    Combined,
    Common,
    VhostCombined,
    Plan(Plan),
}

/// A compiled access-log format.
#[derive(Clone, Debug)]
pub struct Format {
    kind: Kind,
    /// Whether the request line is split into method, target and protocol (see
    /// [`Format::split_request`]).
    split: bool,
}

/// Custom spellings of the built-in formats, after unquoting; they get the fast parser.
const NGINX_COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
const APACHE_COMBINED: &str = r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;
const APACHE_COMMON: &str = r#"%h %l %u %t "%r" %>s %b"#;
const APACHE_VHOST_COMBINED: &str =
    r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i""#;

impl Format {
    /// Compiles a format spec.
    pub fn from_spec(spec: &str) -> Result<Format, FormatError> {
        let spec = spec.trim();
        let kind = match spec {
            "combined" => Kind::Combined,
            "common" => Kind::Common,
            "vhost_combined" => Kind::VhostCombined,
            _ => {
                if let Some(s) = spec.strip_prefix("nginx:") {
                    let plan = spec::nginx(s)?;
                    match s.trim().trim_matches('\'') {
                        NGINX_COMBINED => Kind::Combined,
                        _ => Kind::Plan(plan),
                    }
                } else if let Some(s) = spec.strip_prefix("apache:") {
                    let plan = spec::apache(s)?;
                    match s.trim().trim_matches('\'').replace("\\\"", "\"").as_str() {
                        APACHE_COMBINED => Kind::Combined,
                        APACHE_COMMON => Kind::Common,
                        APACHE_VHOST_COMBINED => Kind::VhostCombined,
                        _ => Kind::Plan(plan),
                    }
                } else {
                    return Err(FormatError::UnknownFormat(spec.to_string()));
                }
            }
        };
        Ok(Format { kind, split: true })
    }

    /// `false`: the request line is left whole, and the method, target and protocol stay empty
    /// unless the format logs them in fields of their own; for a consumer that reads none of
    /// them (rules that count every request: see
    /// [`CompiledRules::reads_request_line`](crate::engine::rule::CompiledRules::reads_request_line)).
    /// Which lines parse, and every other field, stay the same: splitting never refuses a line.
    pub fn split_request(mut self, split: bool) -> Format {
        self.split = split;
        self
    }

    /// Sends the raw value of field `name` (an nginx variable name without `$`, or
    /// `http_<header>` for an Apache `%{Header}i`) to [`Record::real_client`].
    pub fn set_client_ip_field(&mut self, name: &str) -> Result<(), FormatError> {
        let want = name.trim().trim_start_matches('$').to_ascii_lowercase();
        let Kind::Plan(plan) = &mut self.kind else {
            return Err(FormatError::NoSuchField(name.to_string()));
        };
        if !plan
            .fields()
            .any(|f| f.name.as_deref() == Some(want.as_str()))
        {
            return Err(FormatError::NoSuchField(name.to_string()));
        }
        for f in plan.fields_mut() {
            f.real = f.name.as_deref() == Some(want.as_str());
        }
        Ok(())
    }

    /// Whether the format logs the vhost (`%v`, `$server_name`, `$host`).
    pub fn has_vhost(&self) -> bool {
        match &self.kind {
            Kind::VhostCombined => true,
            Kind::Combined | Kind::Common => false,
            Kind::Plan(p) => p.fields().any(|f| f.dest == Dest::Vhost),
        }
    }

    /// Whether the format logs a time (a format without one gives `time_ms = 0`).
    pub fn has_time(&self) -> bool {
        match &self.kind {
            Kind::Plan(p) => p.fields().any(|f| f.kind.is_time()),
            _ => true,
        }
    }

    /// Whether the format logs the client (`%h`, `%a`, `$remote_addr`).
    pub fn has_client(&self) -> bool {
        match &self.kind {
            Kind::Plan(p) => p.fields().any(|f| f.dest == Dest::Client),
            _ => true,
        }
    }

    /// Parses one line (without its `\n`; a trailing `\r` is dropped). Never allocates.
    #[inline]
    pub fn parse<'a>(
        &self,
        line: &'a [u8],
        times: &mut TimeCache,
    ) -> Result<Record<'a>, Malformed> {
        let line = match line {
            [head @ .., b'\r'] => head,
            _ => line,
        };
        if line.len() > MAX_LINE {
            return Err(Malformed::TooLong);
        }
        if line.first().is_none_or(|b| b.is_ascii_whitespace())
            && line.iter().all(u8::is_ascii_whitespace)
        {
            return Err(Malformed::Empty);
        }
        match &self.kind {
            Kind::Combined => combined::parse(line, times, Tail::Combined, self.split),
            Kind::Common => combined::parse(line, times, Tail::Common, self.split),
            Kind::VhostCombined => combined::parse_vhost(line, times, self.split),
            Kind::Plan(p) => p.parse(line, times, self.split),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(f: &Format, line: &'a str) -> Result<Record<'a>, Malformed> {
        f.parse(line.as_bytes(), &mut TimeCache::new())
    }

    #[test]
    fn builtin_specs_and_spelled_out_ones() {
        for s in ["combined", "common", "vhost_combined", " combined "] {
            assert!(Format::from_spec(s).is_ok(), "{s}");
        }
        let f = Format::from_spec(&format!("nginx:'{NGINX_COMBINED}'")).unwrap();
        assert!(matches!(f.kind, Kind::Combined));
        let f = Format::from_spec(r#"apache:%h %l %u %t \"%r\" %>s %b"#).unwrap();
        assert!(matches!(f.kind, Kind::Common));
        assert!(Format::from_spec("vhost_combined").unwrap().has_vhost());
        assert!(matches!(
            Format::from_spec("json"),
            Err(FormatError::UnknownFormat(_))
        ));
    }

    #[test]
    fn line_edges() {
        let f = Format::from_spec("combined").unwrap();
        assert_eq!(parse(&f, ""), Err(Malformed::Empty));
        assert_eq!(parse(&f, " \t "), Err(Malformed::Empty));
        let long = "x".repeat(MAX_LINE + 1);
        assert_eq!(parse(&f, &long), Err(Malformed::TooLong));
        let r = parse(
            &f,
            "1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5\r",
        )
        .unwrap();
        assert_eq!(r.bytes, Some(5));
    }

    #[test]
    fn custom_nginx_format_with_real_client() {
        let mut f = Format::from_spec(
            r#"nginx:'$host $remote_addr [$time_iso8601] "$request" $status $body_bytes_sent $request_time "$http_cf_connecting_ip"'"#,
        )
        .unwrap();
        assert!(f.has_vhost());
        f.set_client_ip_field("http_cf_connecting_ip").unwrap();
        assert!(f.set_client_ip_field("http_x_forwarded_for").is_err());
        let r = parse(
            &f,
            r#"example.com:8080 10.0.0.1 [2026-11-25T10:00:05+01:00] "POST /login HTTP/2.0" 429 0 0.001 "203.0.113.7""#,
        )
        .unwrap();
        assert_eq!(r.vhost, b"example.com");
        assert_eq!(r.client, b"10.0.0.1");
        assert_eq!(r.real_client, b"203.0.113.7");
        assert_eq!(r.time_ms, 1795597205000);
        assert_eq!((r.method, r.target), (&b"POST"[..], &b"/login"[..]));
        assert_eq!(r.status, 429);
        assert!(Format::from_spec("combined")
            .unwrap()
            .set_client_ip_field("http_cf_connecting_ip")
            .is_err());
    }

    #[test]
    fn apache_header_maps_to_nginx_name() {
        let mut f =
            Format::from_spec(r#"apache:'%a %t \"%r\" %>s %b \"%{CF-Connecting-IP}i\"'"#).unwrap();
        f.set_client_ip_field("http_cf_connecting_ip").unwrap();
        let r = parse(
            &f,
            r#"10.0.0.1 [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "2001:db8::7""#,
        )
        .unwrap();
        assert_eq!(r.real_client, b"2001:db8::7");
        assert_eq!(r.time_ms, 971211336000);
    }

    #[test]
    fn finest_time_field_wins() {
        let f = Format::from_spec(r#"nginx:$remote_addr [$time_local] $msec "$request" $status"#)
            .unwrap();
        let r = parse(
            &f,
            r#"1.2.3.4 [10/Oct/2000:13:55:36 -0700] 971211336.250 "GET / HTTP/1.1" 200"#,
        )
        .unwrap();
        assert_eq!(r.time_ms, 971211336250);
    }

    /// Found by fuzzing (`parse_line`): 18 digits of `%{sec}t` overflowed when made
    /// milliseconds (a panic in a debug build, a wrapped time in release).
    #[test]
    fn epoch_seconds_too_large_for_milliseconds_are_not_a_time() {
        let f = Format::from_spec(r#"apache:%h %{sec}t \"%r\" %>s %b"#).unwrap();
        let line = r#"1.2.3.4 888888888888888888 "GET / HTTP/1.1" 200 5"#;
        assert!(parse(&f, line).is_err());
        let r = parse(&f, r#"1.2.3.4 971211336 "GET / HTTP/1.1" 200 5"#).unwrap();
        assert_eq!(r.time_ms, 971211336000);
    }
}
