//! Rules compiled into matchers: which rules a request counts towards, as one bit per rule.
//!
//! [`CompiledRules::request_mask`] runs once per log line on the parsing threads, so everything
//! is prepared here once: byte strings, `memmem` finders, a mask of the rules that match every
//! request, and whether any rule needs the path's extension at all. The vhost part of a rule is
//! separate ([`CompiledRules::vhost_mask`]) because callers cache it per interned vhost.

use memchr::memmem;

use crate::engine::bucket::MAX_BURST;
use crate::engine::{RuleSpec, StatusMatch};
use crate::hit::{RuleMask, MAX_RULES};
use crate::parse::Record;

/// Why a set of rules cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("{count} rules configured, at most {MAX_RULES} are supported")]
    TooMany { count: usize },
    #[error("rule {rule:?}: vhost glob {glob:?}: {why}")]
    BadGlob {
        rule: String,
        glob: String,
        why: &'static str,
    },
    #[error("rule {rule:?}: burst {burst} is larger than the supported {MAX_BURST}")]
    BurstTooLarge { rule: String, burst: u32 },
}

/// A string of at most 7 bytes as one integer (its bytes and its length), so that matching a
/// method or an extension is an integer compare instead of a `memcmp` call (a sixth of
/// `request_mask`'s time before); `None` when longer. Every common method and static-asset
/// extension fits. `lower` folds ASCII case.
#[inline]
fn pack(bytes: &[u8], lower: bool) -> Option<u64> {
    if bytes.len() > 7 {
        return None;
    }
    let mut v = (bytes.len() as u64) << 56;
    for (i, &c) in bytes.iter().enumerate() {
        let c = if lower { c.to_ascii_lowercase() } else { c };
        v |= u64::from(c) << (8 * i);
    }
    Some(v)
}

/// Strings to match exactly (methods) or case-insensitively (extensions, stored lower-case):
/// packed when short, as bytes when longer than 7 (a long one never equals a packed one).
#[derive(Default)]
struct Words {
    short: Vec<u64>,
    long: Vec<Box<[u8]>>,
}

impl Words {
    fn new<'a>(words: impl Iterator<Item = &'a [u8]>, lower: bool) -> Words {
        let mut w = Words::default();
        for word in words {
            match pack(word, lower) {
                Some(p) => w.short.push(p),
                None if lower => w.long.push(word.to_ascii_lowercase().into()),
                None => w.long.push(word.into()),
            }
        }
        w
    }

    fn is_empty(&self) -> bool {
        self.short.is_empty() && self.long.is_empty()
    }

    /// Whether `word` (packed as `packed`, see [`pack`]) is one of these.
    #[inline]
    fn has(&self, word: &[u8], packed: Option<u64>, lower: bool) -> bool {
        match packed {
            Some(p) => self.short.contains(&p),
            None if lower => self.long.iter().any(|x| word.eq_ignore_ascii_case(x)),
            None => self.long.iter().any(|x| **x == *word),
        }
    }
}

/// The request-side matchers of one rule (everything but the vhost).
struct Matcher {
    bit: RuleMask,
    methods: Words,
    statuses: Vec<StatusMatch>,
    prefixes: Vec<Box<[u8]>>,
    suffixes: Vec<Box<[u8]>>,
    contains: Vec<memmem::Finder<'static>>,
    /// Lower-case, without the dot.
    exclude: Words,
}

impl Matcher {
    fn new(bit: RuleMask, spec: &RuleSpec) -> Matcher {
        let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().into()).collect();
        let exts: Vec<String> = spec
            .exclude_extensions
            .iter()
            .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        Matcher {
            bit,
            methods: Words::new(spec.methods.iter().map(|s| s.as_bytes()), false),
            statuses: spec.statuses.clone(),
            prefixes: bytes(&spec.path_prefix),
            suffixes: bytes(&spec.path_suffix),
            contains: spec
                .path_contains
                .iter()
                .map(|s| memmem::Finder::new(s.as_bytes()).into_owned())
                .collect(),
            exclude: Words::new(exts.iter().map(|s| s.as_bytes()), true),
        }
    }

    fn matches_everything(&self) -> bool {
        self.methods.is_empty()
            && self.statuses.is_empty()
            && self.prefixes.is_empty()
            && self.suffixes.is_empty()
            && self.contains.is_empty()
            && self.exclude.is_empty()
    }

    #[inline]
    fn matches(&self, rec: &Record<'_>, req: &Derived<'_>) -> bool {
        let target = rec.target;
        (self.methods.is_empty() || self.methods.has(rec.method, req.method, false))
            && (self.statuses.is_empty() || self.statuses.iter().any(|s| status_is(*s, rec.status)))
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| target.starts_with(p)))
            && (self.suffixes.is_empty() || self.suffixes.iter().any(|s| target.ends_with(s)))
            && (self.contains.is_empty() || self.contains.iter().any(|f| f.find(target).is_some()))
            && !req
                .ext
                .is_some_and(|e| self.exclude.has(e, req.ext_packed, true))
    }
}

/// What `request_mask` derives from a record once, for all matchers.
struct Derived<'a> {
    method: Option<u64>,
    ext: Option<&'a [u8]>,
    ext_packed: Option<u64>,
}

#[inline]
fn status_is(m: StatusMatch, status: u16) -> bool {
    match m {
        StatusMatch::Code(c) => status == c,
        // Status 0 (logged as `-`) is in no class.
        StatusMatch::Class(k) => status != 0 && status / 100 == u16::from(k),
    }
}

/// The extension of a request target's path (query stripped): the bytes after the last `.` of
/// the last path segment; `None` when there is none.
#[inline]
fn extension(target: &[u8]) -> Option<&[u8]> {
    let path = match memchr::memchr(b'?', target) {
        Some(q) => &target[..q],
        None => target,
    };
    let dot = memchr::memrchr(b'.', path)?;
    let ext = &path[dot + 1..];
    (!ext.is_empty() && !ext.contains(&b'/')).then_some(ext)
}

/// A vhost glob: `*` any run of bytes, `?` one byte, everything else literal, case-insensitive.
struct Glob(Box<[u8]>);

impl Glob {
    fn new(text: &str) -> Result<Glob, &'static str> {
        if text.is_empty() {
            return Err("empty glob");
        }
        let ok = |c: u8| c.is_ascii_alphanumeric() || b".-_:*?".contains(&c);
        if !text.bytes().all(ok) {
            return Err("only letters, digits, '.', '-', '_', ':' and the wildcards '*' and '?' are allowed");
        }
        Ok(Glob(text.to_ascii_lowercase().into_bytes().into()))
    }

    /// Iterative matching that backtracks only to the last `*`: linear in practice, and at
    /// worst `pattern × name`, both short.
    fn matches(&self, name: &[u8]) -> bool {
        let pat = &self.0;
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n].to_ascii_lowercase()) {
                p += 1;
                n += 1;
            } else if p < pat.len() && pat[p] == b'*' {
                star = Some((p, n));
                p += 1;
            } else if let Some((sp, sn)) = star {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        pat[p..].iter().all(|&c| c == b'*')
    }
}

/// The configured rules, ready for matching. Index `i` is rule `i` of the config and bit `i` of
/// every [`RuleMask`]; its id (what offenses carry) is `i` too unless [`CompiledRules::with_ids`]
/// renumbered it.
pub struct CompiledRules {
    specs: Vec<RuleSpec>,
    ids: Vec<u16>,
    /// Only the rules that constrain the request at all.
    matchers: Vec<Matcher>,
    /// Rules that count every request (before the vhost).
    always: RuleMask,
    /// Whether any matcher looks at the extension / the method (each is derived once per line).
    needs_ext: bool,
    needs_method: bool,
    globs: Vec<Vec<Glob>>,
}

impl std::fmt::Debug for CompiledRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("CompiledRules")
            .field("names", &names)
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl CompiledRules {
    pub fn new(specs: &[RuleSpec]) -> Result<CompiledRules, RuleError> {
        if specs.len() > MAX_RULES {
            return Err(RuleError::TooMany { count: specs.len() });
        }
        let mut matchers = Vec::new();
        let mut always = 0;
        let mut globs = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if spec.burst > MAX_BURST {
                return Err(RuleError::BurstTooLarge {
                    rule: spec.name.clone(),
                    burst: spec.burst,
                });
            }
            let m = Matcher::new(1 << i, spec);
            if m.matches_everything() {
                always |= m.bit;
            } else {
                matchers.push(m);
            }
            let g = spec
                .vhosts
                .iter()
                .map(|text| {
                    Glob::new(text).map_err(|why| RuleError::BadGlob {
                        rule: spec.name.clone(),
                        glob: text.clone(),
                        why,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            globs.push(g);
        }
        let needs_ext = matchers.iter().any(|m| !m.exclude.is_empty());
        let needs_method = matchers.iter().any(|m| !m.methods.is_empty());
        Ok(CompiledRules {
            specs: specs.to_vec(),
            ids: (0..specs.len() as u16).collect(),
            matchers,
            always,
            needs_ext,
            needs_method,
            globs,
        })
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether any rule looks at the request line's parts (method, path, extension): when none
    /// does, the parser may leave the request unsplit (see [`Format::split_request`]).
    ///
    /// [`Format::split_request`]: crate::parse::Format::split_request
    pub fn reads_request_line(&self) -> bool {
        self.matchers.iter().any(|m| {
            !(m.methods.is_empty()
                && m.prefixes.is_empty()
                && m.suffixes.is_empty()
                && m.contains.is_empty()
                && m.exclude.is_empty())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn spec(&self, i: usize) -> &RuleSpec {
        &self.specs[i]
    }

    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// The same rules with the ids a reload assigned ([`RuleIds`](super::rule_ids::RuleIds)),
    /// one per rule; a list of another length leaves the ids as they are.
    pub fn with_ids(mut self, ids: Vec<u16>) -> CompiledRules {
        debug_assert_eq!(ids.len(), self.specs.len());
        if ids.len() == self.specs.len() {
            self.ids = ids;
        }
        self
    }

    /// The id of rule `i`, as offenses carry it.
    pub fn id(&self, i: usize) -> u16 {
        self.ids[i]
    }

    /// The rules whose request matchers (method, status, path, extension) accept `rec`.
    /// Combine with [`CompiledRules::vhost_mask`] of the request's vhost.
    #[inline]
    pub fn request_mask(&self, rec: &Record<'_>) -> RuleMask {
        let ext = if self.needs_ext {
            extension(rec.target)
        } else {
            None
        };
        let req = Derived {
            method: if self.needs_method {
                pack(rec.method, false)
            } else {
                None
            },
            ext,
            ext_packed: ext.and_then(|e| pack(e, true)),
        };
        let mut mask = self.always;
        for m in &self.matchers {
            if m.matches(rec, &req) {
                mask |= m.bit;
            }
        }
        mask
    }

    /// The rules that apply on `vhost`: rules without vhost globs always, the others when a glob
    /// matches. An unknown vhost (empty or `-`) matches no glob.
    pub fn vhost_mask(&self, vhost: &[u8]) -> RuleMask {
        let known = !vhost.is_empty() && vhost != b"-";
        let mut mask = 0;
        for (i, globs) in self.globs.iter().enumerate() {
            if globs.is_empty() || (known && globs.iter().any(|g| g.matches(vhost))) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The coarsest IPv4 and IPv6 prefixes over all rules. Routing hits by the address masked to
    /// these keeps every rule's key (a finer or equal prefix) within one shard.
    pub fn route_prefixes(&self) -> (u8, u8) {
        let v4 = self.specs.iter().map(|s| s.ipv4_prefix.min(32)).min();
        let v6 = self.specs.iter().map(|s| s.ipv6_prefix.min(128)).min();
        (v4.unwrap_or(32), v6.unwrap_or(128))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::Rate;

    /// A rule that counts every request, for tests across the engine.
    pub(crate) fn spec(name: &str, milli_per_sec: u64, burst: u32) -> RuleSpec {
        RuleSpec {
            name: name.to_string(),
            rate: Rate {
                milli_per_sec,
                text: format!("{}r/s", milli_per_sec as f64 / 1000.0),
            },
            burst,
            ban_ms: 600_000,
            max_ban_ms: 86_400_000,
            recidive_window_ms: 86_400_000,
            ..crate::config::default_rule()
        }
    }

    fn rec<'a>(method: &'a str, target: &'a str, status: u16) -> Record<'a> {
        Record {
            method: method.as_bytes(),
            target: target.as_bytes(),
            status,
            ..Record::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_rules_on_the_method_or_the_path_read_the_request_line() {
        let compiled = |s: RuleSpec| CompiledRules::new(&[spec("all", 1000, 5), s]).unwrap();
        let all = CompiledRules::new(&[spec("all", 1000, 5)]).unwrap();
        assert!(!all.reads_request_line());
        let by_status = RuleSpec {
            statuses: vec![StatusMatch::Class(4)],
            ..spec("s", 1000, 5)
        };
        assert!(!compiled(by_status).reads_request_line());
        for s in [
            RuleSpec {
                methods: strings(&["POST"]),
                ..spec("m", 1000, 5)
            },
            RuleSpec {
                path_prefix: strings(&["/wp-"]),
                ..spec("p", 1000, 5)
            },
            RuleSpec {
                path_suffix: strings(&[".php"]),
                ..spec("p", 1000, 5)
            },
            RuleSpec {
                path_contains: strings(&["login"]),
                ..spec("p", 1000, 5)
            },
            RuleSpec {
                exclude_extensions: strings(&["png"]),
                ..spec("e", 1000, 5)
            },
        ] {
            assert!(compiled(s).reads_request_line());
        }
    }

    #[test]
    fn extension_strips_query_and_needs_last_segment() {
        assert_eq!(extension(b"/a/b.CSS?v=1.2"), Some(&b"CSS"[..]));
        assert_eq!(extension(b"/a.b/c"), None);
        assert_eq!(extension(b"/a/b."), None);
        assert_eq!(extension(b"/x?y=a.png"), None);
        assert_eq!(extension(b"/favicon.ico"), Some(&b"ico"[..]));
        assert_eq!(extension(b""), None);
    }

    #[test]
    fn each_matcher_constrains_its_own_field() {
        let all = spec("all", 20_000, 10);
        let get = RuleSpec {
            methods: strings(&["GET", "HEAD"]),
            exclude_extensions: strings(&["css", ".PNG"]),
            ..spec("get", 20_000, 10)
        };
        let login = RuleSpec {
            methods: strings(&["POST"]),
            path_prefix: strings(&["/wp-login.php", "/user/login"]),
            ..spec("login", 1000, 5)
        };
        let errors = RuleSpec {
            statuses: vec![StatusMatch::Class(4), StatusMatch::Code(503)],
            ..spec("errors", 5000, 10)
        };
        let probe = RuleSpec {
            path_contains: strings(&["/.env", "phpmyadmin"]),
            path_suffix: strings(&[".php", ".asp"]),
            ..spec("probe", 1000, 0)
        };
        let rules = CompiledRules::new(&[all, get, login, errors, probe]).unwrap();
        let mask = |r: Record<'_>| rules.request_mask(&r);
        assert_eq!(mask(rec("GET", "/index.html", 200)), 0b00011);
        assert_eq!(mask(rec("GET", "/style.CSS?v=3", 200)), 0b00001);
        assert_eq!(mask(rec("HEAD", "/logo.png", 304)), 0b00001);
        assert_eq!(mask(rec("get", "/", 200)), 0b00001, "methods are exact");
        assert_eq!(mask(rec("POST", "/wp-login.php", 200)), 0b00101);
        assert_eq!(mask(rec("POST", "/user/login?next=/", 403)), 0b01101);
        assert_eq!(mask(rec("PUT", "/x", 404)), 0b01001);
        assert_eq!(mask(rec("PUT", "/x", 503)), 0b01001);
        assert_eq!(
            mask(rec("PUT", "/x", 0)),
            0b00001,
            "`-` status is in no class"
        );
        assert_eq!(mask(rec("GET", "/phpmyadmin/index.php", 404)), 0b11011);
        assert_eq!(mask(rec("GET", "/phpmyadmin/index.php?a", 404)), 0b01011);
        assert_eq!(mask(rec("GET", "/x/.env", 404)), 0b01011, "suffix unmet");
    }

    #[test]
    fn long_and_odd_methods_and_extensions() {
        let r = RuleSpec {
            methods: strings(&["VERSION-CONTROL", "BASELINE-CONTROL", "GET"]),
            exclude_extensions: strings(&["averyveryverylongext", "webmanifest"]),
            ..spec("m", 1000, 1)
        };
        let rules = CompiledRules::new(&[r]).unwrap();
        let mask = |m: &str, t: &str| rules.request_mask(&rec(m, t, 200));
        assert_eq!(mask("BASELINE-CONTROL", "/"), 1);
        assert_eq!(
            mask("baseline-control", "/"),
            0,
            "methods stay exact when long"
        );
        assert_eq!(mask("BASELINE-CONTROLS", "/"), 0);
        assert_eq!(mask("VERSION-CONTROL", "/"), 1);
        assert_eq!(mask("GET\0", "/"), 0, "a NUL is not padding");
        assert_eq!(mask("GE", "/"), 0);
        assert_eq!(mask("GET", "/a.AveryVeryVeryLongExt"), 0);
        assert_eq!(mask("GET", "/site.WebManifest?x"), 0);
        assert_eq!(mask("GET", "/site.webmanifes"), 1);
        assert_eq!(pack(b"01234567", false), None);
        assert!(pack(b"0123456", false).is_some());
        assert_ne!(pack(b"ab", false), pack(b"ab\0", false));
    }

    #[test]
    fn vhost_globs() {
        let any = spec("any", 1000, 1);
        let ex = RuleSpec {
            vhosts: strings(&["*.Example.com", "example.com"]),
            ..spec("ex", 1000, 1)
        };
        let q = RuleSpec {
            vhosts: strings(&["shop?.test", "*a*b*c"]),
            ..spec("q", 1000, 1)
        };
        let rules = CompiledRules::new(&[any, ex, q]).unwrap();
        assert_eq!(rules.vhost_mask(b"www.example.com"), 0b011);
        assert_eq!(rules.vhost_mask(b"EXAMPLE.COM"), 0b011);
        assert_eq!(rules.vhost_mask(b"badexample.com"), 0b001);
        assert_eq!(rules.vhost_mask(b"shop1.test"), 0b101);
        assert_eq!(rules.vhost_mask(b"shop12.test"), 0b001);
        assert_eq!(rules.vhost_mask(b"xaxxbyycz"), 0b001);
        assert_eq!(rules.vhost_mask(b"xaxxbyyc"), 0b101);
        assert_eq!(rules.vhost_mask(b""), 0b001);
        assert_eq!(rules.vhost_mask(b"-"), 0b001);
    }

    #[test]
    fn glob_matching_backtracks() {
        let g = |p: &str, n: &str| Glob::new(p).unwrap().matches(n.as_bytes());
        assert!(g("*", ""));
        assert!(g("*", "anything"));
        assert!(g("a*a*a", "aaaaa"));
        assert!(!g("a*a*a", "aa"));
        assert!(g("*.com", "x.y.com"));
        assert!(!g("*.com", "x.com.au"));
        assert!(g("??", "ab"));
        assert!(!g("??", "abc"));
        assert!(g("a**b", "ab"));
    }

    #[test]
    fn bad_rule_sets_are_refused() {
        let many: Vec<_> = (0..33).map(|i| spec(&format!("r{i}"), 1000, 1)).collect();
        assert_eq!(
            CompiledRules::new(&many).err(),
            Some(RuleError::TooMany { count: 33 })
        );
        assert!(CompiledRules::new(&many[..32]).is_ok());
        for bad in ["", "exa mple.com", "[ab].com", "a/b"] {
            let r = RuleSpec {
                vhosts: vec![bad.to_string()],
                ..spec("v", 1000, 1)
            };
            let err = CompiledRules::new(&[r]).err().unwrap();
            assert!(matches!(err, RuleError::BadGlob { .. }), "{bad:?}");
            assert!(err.to_string().contains("rule \"v\""));
        }
        let big = spec("big", 1000, MAX_BURST + 1);
        assert!(matches!(
            CompiledRules::new(&[big]),
            Err(RuleError::BurstTooLarge { .. })
        ));
    }

    #[test]
    fn route_prefixes_are_the_coarsest() {
        let a = RuleSpec {
            ipv4_prefix: 24,
            ipv6_prefix: 128,
            ..spec("a", 1000, 1)
        };
        let b = RuleSpec {
            ipv4_prefix: 40,
            ipv6_prefix: 48,
            ..spec("b", 1000, 1)
        };
        let rules = CompiledRules::new(&[a, b]).unwrap();
        assert_eq!(rules.route_prefixes(), (24, 48));
        assert_eq!(rules.len(), 2);
        assert_eq!(rules.spec(1).name, "b");
        assert_eq!(CompiledRules::new(&[]).unwrap().route_prefixes(), (32, 128));
    }
}
