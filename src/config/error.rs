//! Config errors that say where: the file, the key path (`rule[1].rate`, tables of an array
//! counted from 0) and, when it points into the file, the line and column.
//!
//! serde errors from toml carry a byte span but no key path, so the path is recovered from the
//! text around the span ([`key_path_at`]); values checked after deserialising are read as
//! `Spanned`, so their errors point at them too.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::Spanned;

/// A config that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    /// The file (or [`super::BUILT_IN`], [`super::COMMAND_LINE`]).
    pub origin: String,
    /// 1-based line and column in the file, when known.
    pub position: Option<(usize, usize)>,
    /// Key path (`rule[1].rate`) or flag (`--rate`); empty when about the whole file.
    pub key: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file cannot be read.
    Read,
    /// Not TOML.
    Syntax,
    /// A key the config does not have.
    UnknownKey,
    /// A value of the wrong TOML type (a string where a number belongs...).
    WrongType,
    /// A value of the right type that does not make sense.
    Invalid,
    /// A command-line flag that contradicts the file.
    Conflict,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text being checked, to turn spans into positions.
pub(super) struct Cx<'a> {
    pub(super) origin: &'a str,
    pub(super) text: &'a str,
}

impl Cx<'_> {
    pub(super) fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: String,
    ) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            origin: self.origin.to_string(),
            position: span.map(|s| line_col(self.text, s.start)),
            key: key.into(),
            message: msg,
        }
    }

    pub(super) fn invalid<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        msg: String,
    ) -> ConfigError {
        self.error(Some(at.span()), key, msg)
    }

    pub(super) fn toml_error(&self, e: &toml::de::Error, kind: ConfigErrorKind) -> ConfigError {
        // toml's messages may span lines ("invalid table header\nexpected `.`, `]`").
        let mut message = e.message().trim().replace('\n', ": ");
        let mut kind = kind;
        if let Some(rest) = message.strip_prefix("unknown field") {
            kind = ConfigErrorKind::UnknownKey;
            message = format!("unknown key{rest}");
        }
        let key = match (&e.span(), kind) {
            (Some(span), ConfigErrorKind::UnknownKey | ConfigErrorKind::WrongType) => {
                key_path_at(self.text, span.clone(), kind == ConfigErrorKind::UnknownKey)
            }
            _ => String::new(),
        };
        ConfigError {
            kind,
            origin: self.origin.to_string(),
            position: e.span().map(|s| line_col(self.text, s.start)),
            key,
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The key path of the value (or, with `span_is_key`, the key) at `span`: the table headers
/// before it (counting `[[array]]` tables) and the `key =` it belongs to. A heuristic over the
/// text — it does not follow multi-line strings — which is enough to name a key in an error.
fn key_path_at(text: &str, span: Range<usize>, span_is_key: bool) -> String {
    let mut pos = span.start.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let error_line = &text[line_start..line_end];

    let mut table = String::new();
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut enter = |name: String, is_array: bool| {
        if is_array {
            let count = arrays.entry(name.clone()).or_insert(0);
            *count += 1;
            format!("{name}[{}]", *count - 1)
        } else {
            name
        }
    };
    // The last `key =` since the last header: the key a multi-line value belongs to.
    let mut last_key = None;
    for line in text[..line_start].lines() {
        if let Some((name, is_array)) = table_header(line) {
            table = enter(name, is_array);
            last_key = None;
        } else if let Some(k) = line_key(line) {
            last_key = Some(k);
        }
    }
    if let Some((name, is_array)) = table_header(error_line) {
        // The error is the header itself: an unknown table.
        return enter(name, is_array);
    }
    let outer = line_key(error_line).or(last_key);
    let inner = if span_is_key {
        text.get(span).map(|k| unquote(k.trim()))
    } else {
        key_before(&error_line[..pos - line_start])
    };
    let mut parts: Vec<String> = Vec::new();
    if !table.is_empty() {
        parts.push(table);
    }
    match (outer, inner) {
        // `i = { x = "s" }`: a key inside an inline table.
        (Some(o), Some(i)) if o != i => parts.extend([o, i]),
        (Some(k), _) | (None, Some(k)) => parts.push(k),
        (None, None) => {}
    }
    parts.join(".")
}

/// `[name]` → `(name, false)`, `[[name]]` → `(name, true)`; `None` for other lines (an array
/// continuation such as `[1, 2],` is not a header: a header is only a key path and a comment).
fn table_header(line: &str) -> Option<(String, bool)> {
    let t = line.trim_start();
    let (inner, rest, is_array) = if let Some(r) = t.strip_prefix("[[") {
        let end = r.find("]]")?;
        (&r[..end], &r[end + 2..], true)
    } else {
        let r = t.strip_prefix('[')?;
        let end = r.find(']')?;
        (&r[..end], &r[end + 1..], false)
    };
    let rest = rest.trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return None;
    }
    let name: String = inner
        .split('.')
        .map(|p| unquote(p.trim()))
        .collect::<Vec<_>>()
        .join(".");
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    (!name.is_empty() && name.chars().all(plain)).then_some((name, is_array))
}

/// The key of a `key = value` line.
fn line_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    (!k.is_empty() && !k.starts_with('[') && k.chars().all(plain)).then(|| unquote(k))
}

/// The key just before `… key = ` at the end of `before` (within an inline table).
fn key_before(before: &str) -> Option<String> {
    let t = before.trim_end().strip_suffix('=')?.trim_end();
    let start = t
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-\"'".contains(c)))
        .map_or(0, |i| i + 1);
    let k = &t[start..];
    (!k.is_empty()).then(|| unquote(k))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "floodwatch.toml")
    }

    /// The error's Display, for a config that must be refused.
    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("[input]\nformat = \"combined\"\nfromat = 1\n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
        assert_eq!(e.position, Some((3, 1)));
        assert_eq!(e.key, "input.fromat");
        assert!(
            e.to_string().starts_with(
                "floodwatch.toml:3:1: input.fromat: unknown key `fromat`, expected one of `paths`"
            ),
            "{e}"
        );
        let text = "[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\n  rat = \"1r/s\"\n";
        assert!(
            err(text).starts_with("floodwatch.toml:6:3: rule[1].rat: unknown key `rat`"),
            "{}",
            err(text)
        );
        assert!(
            err("[inptu]\nx = 1\n").starts_with("floodwatch.toml:1:2: inptu: unknown key `inptu`")
        );
        assert!(err("verbose = true\n").starts_with("floodwatch.toml:1:1: verbose: unknown key"));
        assert!(err("input = { paths = [], fmt = \"x\" }\n")
            .starts_with("floodwatch.toml:1:23: input.fmt: unknown key `fmt`"));
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let e = parse("[[rule]]\nburst = \"100\"\n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::WrongType);
        assert_eq!(
            e.to_string(),
            "floodwatch.toml:2:9: rule[0].burst: invalid type: string \"100\", expected i64"
        );
        assert_eq!(
            err("input = { lateness = 5 }\n"),
            "floodwatch.toml:1:22: input.lateness: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err("[input]\npaths = [\n  \"a\",\n  3,\n]\n"),
            "floodwatch.toml:4:3: input.paths: invalid type: integer `3`, expected a string"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = parse("[input]\nformat = \n").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert_eq!(e.position.map(|p| p.0), Some(2));
        assert!(e.to_string().starts_with("floodwatch.toml:2:"), "{e}");
        assert!(!e.to_string().contains('\n'));
        let e = parse("[input\n").unwrap_err();
        assert_eq!(
            (e.kind, e.position.map(|p| p.0)),
            (ConfigErrorKind::Syntax, Some(1))
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("a\nbé = x", 6), (2, 4));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
