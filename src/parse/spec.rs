//! Compiles nginx `log_format` and Apache `LogFormat` strings into a [`Plan`].
//!
//! Both syntaxes become the same list of literals and fields. Variables and directives that
//! floodwatch has no use for are kept as skipped fields, so the line's shape is still checked.
//! When one slot is logged several times (`%h` and `%a`, `%s` and `%>s`), the most telling one
//! fills it (the final status, the client address rather than a hostname).

use super::format_error::FormatError;
use super::plan::{Dest, Field, Kind, Plan, Step, Stop};
use super::time::Strftime;

/// A field before stops and rank resolution.
fn field(kind: Kind, dest: Dest, rank: u8, name: Option<String>) -> Field {
    Field {
        kind,
        dest,
        name: name.map(String::into_boxed_str),
        rank,
        dash_ok: false,
        real: false,
        stop: Stop::Eol,
    }
}

/// Strips one pair of surrounding single quotes (`nginx:'$remote_addr ...'`). A config's
/// multi-part `'...' '...'` string is joined as nginx joins it.
fn unquote(spec: &str) -> String {
    let s = spec.trim();
    if !(s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'')) {
        return s.to_string();
    }
    let inner = &s[1..s.len() - 1];
    // `' '` between parts (quote, whitespace, quote) joins them.
    let mut out = String::with_capacity(inner.len());
    let mut parts = inner.split('\'');
    let mut outside = false;
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for part in parts {
        outside = !outside;
        if outside {
            if !part.trim().is_empty() {
                // A quote inside the format itself: keep it.
                out.push('\'');
                out.push_str(part);
                outside = false;
            }
        } else {
            out.push_str(part);
        }
    }
    out
}

fn push_lit(steps: &mut Vec<Step>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Step::Lit(prev)) = steps.last_mut() {
        let mut joined = prev.to_vec();
        joined.extend_from_slice(bytes);
        *prev = joined.into_boxed_slice();
    } else {
        steps.push(Step::Lit(bytes.into()));
    }
}

/// nginx variable → field.
fn nginx_var(name: &str) -> Field {
    let lower = name.to_ascii_lowercase();
    let (kind, dest, rank) = match lower.as_str() {
        "remote_addr" => (Kind::Text, Dest::Client, 2),
        "remote_user" => (Kind::Text, Dest::User, 1),
        "time_local" => (Kind::HttpDate { brackets: false }, Dest::Skip, 0),
        "time_iso8601" => (Kind::Iso8601, Dest::Skip, 0),
        "msec" => (Kind::EpochFrac, Dest::Skip, 0),
        "request" => (Kind::Text, Dest::Request, 1),
        "request_method" => (Kind::Text, Dest::Method, 2),
        "request_uri" => (Kind::Text, Dest::Target, 3),
        "uri" | "document_uri" => (Kind::Text, Dest::Target, 1),
        "server_protocol" => (Kind::Text, Dest::Protocol, 2),
        "status" => (Kind::Status, Dest::Status, 2),
        "body_bytes_sent" => (Kind::Bytes, Dest::Bytes, 2),
        "bytes_sent" => (Kind::Bytes, Dest::Bytes, 1),
        "http_referer" => (Kind::Text, Dest::Referer, 1),
        "http_user_agent" => (Kind::Text, Dest::UserAgent, 1),
        "server_name" => (Kind::Text, Dest::Vhost, 2),
        "host" => (Kind::Text, Dest::Vhost, 1),
        _ => (Kind::Text, Dest::Skip, 0),
    };
    field(kind, dest, rank, Some(lower))
}

/// Compiles an nginx `log_format` string (the part after `nginx:`).
pub fn nginx(spec: &str) -> Result<Plan, FormatError> {
    let s = unquote(spec);
    let b = s.as_bytes();
    let mut steps = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let (name, next) = if b.get(i + 1) == Some(&b'{') {
            let close = s[i + 2..]
                .find('}')
                .ok_or_else(|| FormatError::Unterminated(s[i..].to_string()))?;
            (&s[i + 2..i + 2 + close], i + 3 + close)
        } else {
            let n = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            (&s[i + 1..i + 1 + n], i + 1 + n)
        };
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            // A lone `$` is a literal dollar, as nginx treats it.
            i += 1;
            continue;
        }
        push_lit(&mut steps, &b[lit_start..i]);
        steps.push(Step::Field(nginx_var(name)));
        i = next;
        lit_start = next;
    }
    push_lit(&mut steps, &b[lit_start..]);
    finish(steps, &s)
}

/// Apache's `\"`, `\t`, `\n` and `\\` as written in a config file.
fn unescape_apache(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Apache directive (letter, `{argument}`, modifiers) → field.
fn apache_directive(
    letter: &str,
    arg: Option<&str>,
    final_mod: Option<bool>,
    conditional: bool,
) -> Result<Field, FormatError> {
    let text = |dest, rank| Ok(field(Kind::Text, dest, rank, None));
    let mut f: Field = match letter {
        "h" => field(Kind::Text, Dest::Client, 1, Some("remote_host".into())),
        "a" => match arg {
            Some("c") => field(Kind::Text, Dest::Client, 0, None),
            _ => field(Kind::Text, Dest::Client, 2, Some("remote_addr".into())),
        },
        "l" => return text(Dest::Ident, 1),
        "u" => return text(Dest::User, 1),
        "t" => field(apache_time(arg.unwrap_or(""))?, Dest::Skip, 0, None),
        "r" => field(Kind::Text, Dest::Request, 1, None),
        "m" => field(Kind::Text, Dest::Method, 2, None),
        "U" => field(Kind::Text, Dest::Target, 1, None),
        "H" => field(Kind::Text, Dest::Protocol, 2, None),
        "s" => {
            let rank = match final_mod {
                Some(true) => 3,
                None => 2,
                Some(false) => 1,
            };
            field(Kind::Status, Dest::Status, rank, None)
        }
        "b" | "B" => field(Kind::Bytes, Dest::Bytes, 2, None),
        "O" => field(Kind::Bytes, Dest::Bytes, 1, None),
        "v" => field(Kind::Text, Dest::Vhost, 2, None),
        "V" => field(Kind::Text, Dest::Vhost, 1, None),
        "i" => {
            let header = arg.unwrap_or("");
            let name = format!("http_{}", header.to_ascii_lowercase().replace('-', "_"));
            let dest = match name.as_str() {
                "http_referer" => Dest::Referer,
                "http_user_agent" => Dest::UserAgent,
                _ => Dest::Skip,
            };
            // The header as received wins over the original / final request's copy.
            let rank = if final_mod.is_none() { 2 } else { 1 };
            field(Kind::Text, dest, rank, Some(name))
        }
        "A" | "C" | "D" | "e" | "f" | "I" | "k" | "L" | "n" | "o" | "p" | "P" | "q" | "R" | "S"
        | "T" | "X" | "M" | "x" | "c" | "^ti" | "^to" | "^FU" | "^FB" => {
            field(Kind::Text, Dest::Skip, 0, None)
        }
        other => return Err(FormatError::UnknownDirective(format!("%{other}"))),
    };
    f.dash_ok = conditional;
    Ok(f)
}

/// `%{...}t`: the keywords for epoch forms, else a strftime pattern (`begin:`/`end:` ignored).
fn apache_time(arg: &str) -> Result<Kind, FormatError> {
    let arg = arg
        .strip_prefix("begin:")
        .or_else(|| arg.strip_prefix("end:"))
        .unwrap_or(arg);
    Ok(match arg {
        "" => Kind::HttpDate { brackets: true },
        "sec" => Kind::EpochS,
        "msec" => Kind::EpochMs,
        "usec" => Kind::EpochUs,
        "msec_frac" => Kind::FracMs,
        "usec_frac" => Kind::FracUs,
        pattern => Kind::Strftime(
            Strftime::compile(pattern)
                .map_err(|e| FormatError::BadTimeFormat(pattern.to_string(), e.0))?,
        ),
    })
}

/// Compiles an Apache `LogFormat` string (the part after `apache:`).
pub fn apache(spec: &str) -> Result<Plan, FormatError> {
    let s = unescape_apache(&unquote(spec));
    let b = s.as_bytes();
    let mut steps = Vec::new();
    let mut lit: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            lit.push(b[i]);
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            lit.push(b'%');
            i += 2;
            continue;
        }
        let start = i;
        i += 1;
        let mut arg = None;
        let mut final_mod = None;
        let mut conditional = false;
        // Modifiers and the `{argument}` come in any order before the letter.
        loop {
            match b.get(i) {
                Some(b'<') => final_mod = Some(false),
                Some(b'>') => final_mod = Some(true),
                Some(b'!' | b',') => {}
                Some(b'0'..=b'9') => conditional = true,
                Some(b'{') => {
                    let close = s[i + 1..]
                        .find('}')
                        .ok_or_else(|| FormatError::Unterminated(s[start..].to_string()))?;
                    arg = Some(&s[i + 1..i + 1 + close]);
                    i += close + 1;
                }
                Some(_) => break,
                None => return Err(FormatError::Unterminated(s[start..].to_string())),
            }
            i += 1;
        }
        let letter_len = if b[i] == b'^' { 3 } else { 1 };
        let letter = s
            .get(i..i + letter_len)
            .ok_or_else(|| FormatError::Unterminated(s[start..].to_string()))?;
        i += letter_len;
        push_lit(&mut steps, &lit);
        lit.clear();
        steps.push(Step::Field(apache_directive(
            letter,
            arg,
            final_mod,
            conditional,
        )?));
        // `%U%q`: the path and its query are one target when logged side by side.
        if letter == "U" && b.get(i..i + 2) == Some(b"%q") {
            if let Some(Step::Field(f)) = steps.last_mut() {
                f.rank = 3;
            }
            i += 2;
        }
    }
    push_lit(&mut steps, &lit);
    finish(steps, &s)
}

/// A field's claim on its slot: its rank, and an unconditional field before a conditional
/// one of the same rank (`%400r` is often `-`).
fn weight(f: &Field) -> u16 {
    f.rank as u16 * 2 + u16::from(!f.dash_ok)
}

/// Resolves ranks, stops and the request split; refuses an empty format.
fn finish(mut steps: Vec<Step>, spec: &str) -> Result<Plan, FormatError> {
    if !steps.iter().any(|s| matches!(s, Step::Field(_))) {
        return Err(FormatError::NoFields(spec.to_string()));
    }
    // Keep each slot for its highest-ranked (then first) field.
    let n = steps.len();
    for k in 0..n {
        let Step::Field(f) = &steps[k] else { continue };
        let (dest, rank) = (f.dest, weight(f));
        if dest == Dest::Skip {
            continue;
        }
        let beaten = steps.iter().enumerate().any(|(j, s)| match s {
            Step::Field(g) if j != k && g.dest == dest => {
                weight(g) > rank || (weight(g) == rank && j < k)
            }
            _ => false,
        });
        if beaten {
            if let Step::Field(f) = &mut steps[k] {
                f.dest = Dest::Skip;
            }
        }
    }
    for k in 0..n {
        let quoted_before = k > 0 && matches!(&steps[k - 1], Step::Lit(l) if l.ends_with(b"\""));
        let stop = match steps.get(k + 1) {
            Some(Step::Lit(next)) if quoted_before && next.starts_with(b"\"") => Stop::Quoted {
                next: next.clone(),
                last: k + 2 == n,
            },
            Some(Step::Lit(next)) => Stop::Lit(next.clone()),
            Some(Step::Field(_)) => Stop::Space,
            None => Stop::Eol,
        };
        if let Step::Field(f) = &mut steps[k] {
            f.stop = match (stop, f.dest) {
                (Stop::Space, Dest::Target) if f.rank == 1 => Stop::Query,
                (stop, _) => stop,
            };
        }
    }
    let has = |d: Dest| {
        steps
            .iter()
            .any(|s| matches!(s, Step::Field(f) if f.dest == d))
    };
    Ok(Plan {
        own_method: has(Dest::Method),
        own_target: has(Dest::Target),
        own_protocol: has(Dest::Protocol),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(p: &Plan) -> Vec<Dest> {
        p.fields().map(|f| f.dest).collect()
    }

    #[test]
    fn unquotes_and_joins_config_strings() {
        assert_eq!(unquote("'$a - $b'"), "$a - $b");
        assert_eq!(unquote("'$a - ' '\"$b\"'"), "$a - \"$b\"");
        assert_eq!(unquote("$a"), "$a");
    }

    #[test]
    fn nginx_combined_plan() {
        let p = nginx(r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "${http_user_agent}""#).unwrap();
        use Dest::*;
        assert_eq!(
            dests(&p),
            vec![Client, User, Skip, Request, Status, Bytes, Referer, UserAgent]
        );
        assert!(matches!(p.steps.last(), Some(Step::Lit(l)) if &**l == b"\""));
        let ua = p.fields().last().unwrap();
        assert_eq!(
            ua.stop,
            Stop::Quoted {
                next: b"\""[..].into(),
                last: true
            }
        );
    }

    #[test]
    fn apache_ranks_and_modifiers() {
        let p = apache(r#"%h %a %<s %s %>s %!200,304r %{Referer}i %>{X-Real-IP}i %%"#).unwrap();
        use Dest::*;
        assert_eq!(
            dests(&p),
            vec![Skip, Client, Skip, Skip, Status, Request, Referer, Skip]
        );
        assert!(p.fields().nth(5).unwrap().dash_ok);
        assert_eq!(
            p.fields().nth(7).unwrap().name.as_deref(),
            Some("http_x_real_ip")
        );
        assert!(matches!(
            apache("%Z"),
            Err(FormatError::UnknownDirective(_))
        ));
        assert!(matches!(
            apache("%{Referer"),
            Err(FormatError::Unterminated(_))
        ));
        assert!(matches!(apache("%"), Err(FormatError::Unterminated(_))));
        assert!(matches!(apache("plain"), Err(FormatError::NoFields(_))));
        assert!(matches!(
            apache("%{%Q}t"),
            Err(FormatError::BadTimeFormat(_, 'Q'))
        ));
    }

    #[test]
    fn apache_escapes_and_path_query() {
        let p = apache(r#"\"%U%q\" %m"#).unwrap();
        assert_eq!(p.steps.len(), 4);
        let f = p.fields().next().unwrap();
        assert_eq!((f.dest, f.rank), (Dest::Target, 3));
        assert!(matches!(&p.steps[0], Step::Lit(l) if &**l == b"\""));
    }
}
