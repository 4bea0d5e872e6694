//! The `cloudflare` sink: blocks at Cloudflare's edge with IP Access Rules (API v4), at zone
//! (`zone_id`) or account (`account_id`) scope.
//!
//! A ban creates one rule (`ip` for an IPv4 address, `ip6` for an IPv6 one, `ip_range` for a
//! prefix: Cloudflare takes IPv4 /16 and /24, IPv6 /32, /48 and /64) whose notes start with the
//! configured `notes` prefix and carry the ban's end; the rule id from the answer is kept, so the
//! unban is one DELETE. On start, the rules carrying our prefix are read back: those whose ban has
//! ended are deleted, the others adopted (a later unban deletes them). Creating a rule for an
//! address that already has one is answered with a duplicate error; the existing rule is then
//! looked up and adopted if it is ours, or left alone if not.
//!
//! Requests stay within the API's 1,200 per 5 minutes with a client-side budget (waiting when it
//! is spent), 429 and Retry-After are honoured through the runner's retry (401 and 403, a token
//! refused, on its slow schedule, the token read again before the next call), and at most
//! `max_rules` rules are kept: the oldest is deleted to make room. The token comes from an
//! environment variable or a file that others cannot read, and is never logged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{log, warn, At, Sink, SinkError};
use crate::addr::Cidr;
use crate::config::ConfigError;
use crate::decide::{Ban, Event};

const DEFAULT_API: &str = "https://api.cloudflare.com/client/v4";
const MODES: &[&str] = &["block", "challenge", "js_challenge", "managed_challenge"];
/// The API's limit: 1,200 requests per 5 minutes per user.
const BUDGET_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_BUDGET: usize = 1200;
/// Cloudflare's error code for a rule that already exists for the same target.
const DUPLICATE: i64 = 10009;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudflare {
    /// Zone scope: rules apply to this zone.
    zone_id: Option<String>,
    /// Account scope: rules apply to every zone of the account.
    account_id: Option<String>,
    /// Name of the environment variable holding the API token.
    api_token_env: Option<String>,
    /// File holding the API token (refused when others can read it).
    api_token_file: Option<String>,
    /// block | challenge | js_challenge | managed_challenge; default block.
    mode: Option<String>,
    /// Notes prefix marking the rules floodwatch owns; default "floodwatch".
    notes: Option<String>,
    /// API base URL; default `https://api.cloudflare.com/client/v4` (tests point it elsewhere).
    api_base: Option<String>,
    /// Most rules kept at once; the oldest is removed to make room. Default 1000.
    max_rules: Option<u32>,
    /// Requests per 5 minutes; default 1200 (the API's limit).
    requests_per_5min: Option<u32>,
    /// How long one request may take; default "15s".
    timeout: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Env(String),
    File(std::path::PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudflareConfig {
    /// `zones/<id>` or `accounts/<id>`.
    pub scope: String,
    pub token: Token,
    pub mode: String,
    pub notes: String,
    pub api_base: String,
    pub max_rules: usize,
    pub budget: usize,
    pub timeout: Duration,
}

fn plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl CloudflareConfig {
    pub fn check(raw: RawCloudflare, at: &At) -> Result<CloudflareConfig, ConfigError> {
        let scope = match (&raw.zone_id, &raw.account_id) {
            (Some(z), None) if plain_id(z) => format!("zones/{z}"),
            (None, Some(a)) if plain_id(a) => format!("accounts/{a}"),
            (Some(_), None) => return Err(at.error("zone_id", "expected a hex id")),
            (None, Some(_)) => return Err(at.error("account_id", "expected a hex id")),
            _ => {
                return Err(at.error(
                    "zone_id",
                    "give exactly one of zone_id (zone scope) and account_id (account scope)",
                ))
            }
        };
        let token = match (raw.api_token_env, raw.api_token_file) {
            (Some(e), None) if !e.trim().is_empty() => Token::Env(e),
            (None, Some(f)) if !f.trim().is_empty() => Token::File(f.into()),
            _ => {
                return Err(at.error(
                    "api_token_env",
                    "give exactly one of api_token_env (a variable name) and api_token_file",
                ))
            }
        };
        let mode = raw.mode.unwrap_or_else(|| "block".into());
        if !MODES.contains(&mode.as_str()) {
            return Err(at.error(
                "mode",
                format!("{mode:?} is not one of {}", MODES.join(", ")),
            ));
        }
        let notes = raw.notes.unwrap_or_else(|| "floodwatch".into());
        // Sent in a query string and matched as a prefix: keep it to plain characters.
        let plain = notes
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if notes.is_empty() || notes.len() > 64 || !plain {
            return Err(at.error(
                "notes",
                "expected 1 to 64 letters, digits or - _ . : (it marks our rules)",
            ));
        }
        let api_base = raw
            .api_base
            .unwrap_or_else(|| DEFAULT_API.into())
            .trim_end_matches('/')
            .to_string();
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            return Err(at.error("api_base", "expected an http:// or https:// URL"));
        }
        // Checked with the config, not at the first ban: a service started without the
        // variable (a missing `Environment=`) would otherwise run with a sink that can never
        // block anything.
        if let Token::Env(name) = &token {
            if std::env::var_os(name).is_none() {
                return Err(at.error(
                    "api_token_env",
                    format!("the environment variable {name} is not set"),
                ));
            }
        }
        Ok(CloudflareConfig {
            scope,
            token,
            mode,
            notes,
            api_base,
            max_rules: raw.max_rules.unwrap_or(1000).max(1) as usize,
            budget: raw
                .requests_per_5min
                .unwrap_or(DEFAULT_BUDGET as u32)
                .max(1) as usize,
            timeout: match raw.timeout {
                Some(t) => at.duration("timeout", &t)?,
                None => Duration::from_secs(15),
            },
        })
    }
}

/// Whether the token can be read as the sink will read it (for `check-config`).
pub fn check_token(t: &Token) -> Result<(), SinkError> {
    read_token(t).map(|_| ())
}

/// Reads the token; a file others can read is refused (the token can block or unblock a site).
fn read_token(t: &Token) -> Result<String, SinkError> {
    let token = match t {
        Token::Env(name) => std::env::var(name)
            .map_err(|_| SinkError::setup(format!("environment variable {name} is not set")))?,
        Token::File(path) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| SinkError::setup(format!("{}: {e}", path.display())))?;
            if meta.permissions().mode() & 0o004 != 0 {
                return Err(SinkError::setup(format!(
                    "{} is readable by others: chmod o-r it (it holds the API token)",
                    path.display()
                )));
            }
            // A token is one short line.
            crate::small_file::read_to_string(path, 64 << 10)
                .map_err(|e| SinkError::setup(format!("{}: {e}", path.display())))?
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() || token.bytes().any(|b| b.is_ascii_control()) {
        return Err(SinkError::setup("the API token is empty or not one line"));
    }
    Ok(token)
}

/// What `check-config` found when it asked the API about a sink's token.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// A definite refusal (HTTP 401/403, an unknown zone): an error. Otherwise the API could
    /// not be asked (network, 5xx): a warning, since watch starts all the same and retries.
    pub fatal: bool,
    /// The sink's key it is about (`api_token_env`, `api_token_file`, `zone_id`, `account_id`).
    pub key: &'static str,
    pub message: String,
}

/// How long `check-config` waits for each answer (it may run as `ExecStartPre=`).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the API whether the sink's token works for what the sink does: a read of the scope's
/// IP Access Rules (one rule), and when that is refused, Cloudflare's token check
/// (`GET /user/tokens/verify`) to tell an invalid token from one lacking the permission. `None`
/// when the read succeeds, or when the token cannot be read (reported on its own).
pub fn verify(c: &CloudflareConfig) -> Option<Problem> {
    let mut c = c.clone();
    c.timeout = c.timeout.min(VERIFY_TIMEOUT);
    let mut cf = Cloudflare::new(&c, "check".into(), false).ok()?;
    let token_key = match c.token {
        Token::Env(_) => "api_token_env",
        Token::File(_) => "api_token_file",
    };
    let (scope_key, what) = match c.scope.starts_with("zones/") {
        true => ("zone_id", "Zone > Firewall Services > Edit, on this zone"),
        false => (
            "account_id",
            "Account > Account Firewall Access Rules > Edit, on this account",
        ),
    };
    let url = format!("{}?per_page=1", cf.rules_path());
    let read = match cf.call("GET", &url, None) {
        Ok(_) => return None,
        Err(e) => e,
    };
    if read.is_retryable() && !read.needs_admin() {
        return Some(Problem {
            fatal: false,
            key: token_key,
            message: format!(
                "could not ask Cloudflare whether the token works ({read}): watch starts all \
                 the same and retries"
            ),
        });
    }
    let url = format!("{}/user/tokens/verify", c.api_base);
    let problem = |fatal, key, message| {
        Some(Problem {
            fatal,
            key,
            message,
        })
    };
    match cf.call("GET", &url, None) {
        Ok(v) if v["result"]["status"] == "active" => problem(
            true,
            scope_key,
            format!(
                "the token is valid but may not read {}'s IP Access Rules ({read}): give it \
                 the permission {what}",
                c.scope
            ),
        ),
        Ok(v) => problem(
            true,
            token_key,
            format!(
                "the token is {} ({read})",
                v["result"]["status"].as_str().unwrap_or("not active")
            ),
        ),
        Err(e) if e.needs_admin() || !e.is_retryable() => problem(
            true,
            token_key,
            format!("Cloudflare refuses the token: invalid, expired or revoked ({e})"),
        ),
        Err(_) => problem(true, scope_key, format!("refused: {read}")),
    }
}

/// A sliding window of request times: at most `max` per `BUDGET_WINDOW`.
pub struct Budget {
    max: usize,
    sent: VecDeque<Instant>,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            max,
            sent: VecDeque::new(),
        }
    }

    /// How long to wait at `now` before the next request may go.
    pub fn wait_at(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= BUDGET_WINDOW)
        {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some(first) if self.sent.len() >= self.max => {
                (*first + BUDGET_WINDOW).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn record(&mut self, at: Instant) {
        self.sent.push_back(at);
    }
}

/// A rule we know of at Cloudflare.
struct Known {
    /// `None`: a rule for this target exists but is not ours; it is never deleted.
    id: Option<String>,
    /// Bans (one per floodwatch rule) holding it.
    /// Rules: a retried or repeated ban (a restored ban also kept as undelivered) counts once.
    holders: HashSet<Arc<str>>,
    seq: u64,
}

pub struct Cloudflare {
    name: String,
    dry_run: bool,
    config: CloudflareConfig,
    token: String,
    agent: ureq::Agent,
    budget: Budget,
    known: HashMap<Cidr, Known>,
    /// Our rules by age, for `max_rules`.
    age: BTreeMap<u64, Cidr>,
    next_seq: u64,
    /// The API refused the token: read it again before the next call (the admin may have
    /// replaced the file).
    token_refused: bool,
    /// A dry run: the rules it would have created and deleted.
    would: (u64, u64),
}

impl Cloudflare {
    pub fn new(c: &CloudflareConfig, name: String, dry_run: bool) -> Result<Cloudflare, SinkError> {
        let token = if dry_run {
            String::new()
        } else {
            read_token(&c.token)?
        };
        Ok(Cloudflare {
            name,
            dry_run,
            config: c.clone(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(c.timeout)
                .redirects(0)
                .build(),
            budget: Budget::new(c.budget),
            known: HashMap::new(),
            age: BTreeMap::new(),
            next_seq: 0,
            token_refused: false,
            would: (0, 0),
        })
    }

    fn rules_path(&self) -> String {
        format!(
            "{}/{}/firewall/access_rules/rules",
            self.config.api_base, self.config.scope
        )
    }

    /// One API call, within the budget; `Ok` only for a `success: true` answer.
    fn call(&mut self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, SinkError> {
        if self.token_refused {
            self.token = read_token(&self.config.token)?;
            self.token_refused = false;
        }
        let wait = self.budget.wait_at(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        self.budget.record(Instant::now());
        let req = self
            .agent
            .request(method, url)
            .set("Authorization", &format!("Bearer {}", self.token));
        let sent = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let (code, resp) = match sent {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(ureq::Error::Transport(t)) => {
                return Err(SinkError::io(format!("{method} {url}: {t}")))
            }
        };
        let retry_after = resp
            .header("Retry-After")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        let mut text = String::new();
        let _ = resp.into_reader().take(1 << 20).read_to_string(&mut text);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&code) && v["success"] == true {
            return Ok(v);
        }
        let errors = match v["errors"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|e| format!("{} {}", e["code"], e["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; "),
            _ => text.chars().take(200).collect(),
        };
        let message = format!("{method} {url}: HTTP {code}: {errors}");
        let mut e = if code == 429 || code == 408 || code >= 500 {
            SinkError::unavailable(message)
        } else if code == 401 || code == 403 {
            // The token is wrong or lacks a permission: every call fails the same way until the
            // admin fixes it (the token file is read again before the next call).
            self.token_refused = true;
            SinkError::setup(message)
        } else {
            SinkError::refused(message)
        };
        e.retry_after = retry_after;
        if has_code(&v, DUPLICATE) {
            e.message.insert_str(0, "duplicate: ");
        }
        Err(e)
    }

    fn target(net: &Cidr) -> Result<(&'static str, String), SinkError> {
        let ok = match (net.addr.is_v4(), net.prefix) {
            (true, 32) => return Ok(("ip", net.addr.to_string())),
            (false, 128) => return Ok(("ip6", net.addr.to_string())),
            (true, p) => p == 16 || p == 24,
            (false, p) => p == 32 || p == 48 || p == 64,
        };
        if ok {
            Ok(("ip_range", net.to_string()))
        } else {
            Err(SinkError::refused(format!(
                "Cloudflare takes IPv4 ranges of /16 or /24 and IPv6 ranges of /32, /48 or /64, not {net}"
            )))
        }
    }

    fn delete(&mut self, id: &str) -> Result<(), SinkError> {
        let url = format!("{}/{id}", self.rules_path());
        match self.call("DELETE", &url, None) {
            Ok(_) => Ok(()),
            // Already gone (deleted by hand, or our earlier try got through): fine.
            Err(e) if e.message.contains("HTTP 404") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Our rules at Cloudflare (id, target value, notes), all pages.
    fn list_ours(&mut self) -> Result<Vec<(String, String, String)>, SinkError> {
        let mut out = Vec::new();
        // At most 100,000 rules (Cloudflare allows 50,000 per zone): a bad answer cannot loop us.
        for page in 1..=1000u64 {
            let url = format!(
                "{}?notes={}&per_page=100&page={page}",
                self.rules_path(),
                self.config.notes
            );
            let v = self.call("GET", &url, None)?;
            for r in v["result"].as_array().into_iter().flatten() {
                let notes = r["notes"].as_str().unwrap_or("");
                // The API matches notes anywhere, case-insensitively: keep only our prefix.
                if !notes.starts_with(&format!("{} ", self.config.notes)) {
                    continue;
                }
                if let (Some(id), Some(value)) =
                    (r["id"].as_str(), r["configuration"]["value"].as_str())
                {
                    out.push((id.to_string(), value.to_string(), notes.to_string()));
                }
            }
            let pages = v["result_info"]["total_pages"].as_u64().unwrap_or(1);
            if page >= pages {
                break;
            }
        }
        Ok(out)
    }

    /// `rule`: the ban's rule; `None` for a rule adopted at start (no ban of ours holds it yet).
    fn remember(&mut self, net: Cidr, id: Option<String>, rule: Option<&str>) {
        let holders = rule.map(Arc::from).into_iter().collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        if id.is_some() {
            self.age.insert(seq, net);
        }
        self.known.insert(net, Known { id, holders, seq });
    }

    fn forget(&mut self, net: &Cidr) -> Option<Known> {
        let k = self.known.remove(net)?;
        self.age.remove(&k.seq);
        Some(k)
    }

    fn ban(&mut self, net: Cidr, rule: &str, until_ms: i64) -> Result<(), SinkError> {
        if let Some(k) = self.known.get_mut(&net) {
            k.holders.insert(Arc::from(rule));
            return Ok(());
        }
        let (target, value) = Cloudflare::target(&net)?;
        let notes = format!(
            "{} {net} rule={rule} until={}",
            self.config.notes,
            until_text(until_ms)
        );
        if self.dry_run {
            self.would.0 += 1;
            log(
                &self.name,
                format_args!(
                    "dry run: would create a {} rule for {value} ({notes})",
                    self.config.mode
                ),
            );
            self.remember(net, None, Some(rule));
            return Ok(());
        }
        // Room first: the oldest of our rules goes.
        if self.age.len() >= self.config.max_rules {
            if let Some((_, oldest)) = self.age.iter().next().map(|(s, n)| (*s, *n)) {
                if let Some(id) = self.known.get(&oldest).and_then(|k| k.id.clone()) {
                    self.delete(&id)?;
                }
                self.forget(&oldest);
                log(
                    &self.name,
                    format_args!("max_rules reached: removed the rule for {oldest}"),
                );
            }
        }
        let body = json!({
            "mode": self.config.mode,
            "configuration": { "target": target, "value": value },
            "notes": notes,
        });
        let url = self.rules_path();
        match self.call("POST", &url, Some(&body)) {
            Ok(v) => {
                let id = v["result"]["id"].as_str().map(String::from);
                if id.is_none() {
                    return Err(SinkError::refused(format!(
                        "POST {url}: no rule id in the answer"
                    )));
                }
                self.remember(net, id, Some(rule));
                Ok(())
            }
            Err(e) if e.message.starts_with("duplicate: ") => {
                let existing = self.find(&value)?;
                self.remember(net, existing, Some(rule));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The id of the rule for `value` if it is ours; `None` if it belongs to someone else.
    fn find(&mut self, value: &str) -> Result<Option<String>, SinkError> {
        let url = format!(
            "{}?configuration.value={value}&per_page=5",
            self.rules_path()
        );
        let v = self.call("GET", &url, None)?;
        let prefix = format!("{} ", self.config.notes);
        Ok(v["result"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["notes"].as_str().is_some_and(|n| n.starts_with(&prefix)))
            .and_then(|r| r["id"].as_str().map(String::from)))
    }

    fn unban(&mut self, net: Cidr, rule: &str) -> Result<(), SinkError> {
        let Some(k) = self.known.get_mut(&net) else {
            return Ok(());
        };
        k.holders.remove(rule);
        if !k.holders.is_empty() {
            return Ok(());
        }
        if self.dry_run {
            self.would.1 += 1;
            log(
                &self.name,
                format_args!("dry run: would delete the rule for {net}"),
            );
        } else if let Some(id) = k.id.clone() {
            self.delete(&id)?;
        }
        self.forget(&net);
        Ok(())
    }
}

fn has_code(v: &Value, code: i64) -> bool {
    v["errors"]
        .as_array()
        .is_some_and(|l| l.iter().any(|e| e["code"].as_i64() == Some(code)))
}

fn until_text(ms: i64) -> String {
    let ms = ms.clamp(0, 253_402_300_799_999) as u64;
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
}

impl Sink for Cloudflare {
    /// Reconciles: our rules whose ban has ended are deleted, the others adopted.
    fn begin(&mut self) -> Result<(), SinkError> {
        if self.dry_run {
            return Ok(());
        }
        let now = SystemTime::now();
        for (id, value, notes) in self.list_ours()? {
            let until = notes
                .split_whitespace()
                .find_map(|w| w.strip_prefix("until="))
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            let net: Option<Cidr> = value.parse().ok();
            match (until, net) {
                (Some(u), Some(net)) if u > now && !self.known.contains_key(&net) => {
                    self.remember(net, Some(id), None);
                }
                _ => self.delete(&id)?,
            }
        }
        if !self.known.is_empty() {
            log(
                &self.name,
                format_args!("adopted {} existing rules", self.known.len()),
            );
        }
        Ok(())
    }

    /// Matches the bans active at start with the rules `begin` adopted (so their unbans delete
    /// them by id); a ban whose rule is missing (deleted by hand, or never created) gets one.
    /// Ended bans are left out: their unbans follow and find nothing to delete.
    fn restore(&mut self, active: &[Ban]) -> Result<(), SinkError> {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for b in active {
            if b.until_ms <= now_ms {
                continue;
            }
            match self.ban(b.key.net, &b.rule, b.until_ms) {
                Ok(()) => {}
                // One target Cloudflare refuses must not keep the others out.
                Err(e) if !e.is_retryable() => warn(&self.name, format_args!("{e}")),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn deliver(&mut self, event: &Event) -> Result<(), SinkError> {
        match event {
            Event::Ban(b) => self.ban(b.key.net, &b.rule, b.until_ms),
            Event::Unban(u) => self.unban(u.key.net, &u.rule),
        }
    }

    fn summary(&self) -> Option<String> {
        self.dry_run.then(|| match self.would {
            (0, 0) => "dry run: no change at Cloudflare".to_string(),
            (c, d) => format!("dry run: would have created {c} rules and deleted {d}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::decide::{Ban, Unban};
    use crate::engine::Key;
    use crate::hit::NO_VHOST;

    const TOKEN: &str = "tok-123";
    const LIMITED: &str = "tok-limited";

    /// What the fake API does with the next request instead of answering it properly.
    enum Inject {
        /// A raw HTTP response.
        Raw(&'static str),
        /// No answer for this long (longer than the client's timeout).
        Hang(Duration),
    }

    #[derive(Default)]
    struct Api {
        /// (id, value, notes)
        rules: Vec<(String, String, String)>,
        next_id: u32,
        /// "METHOD path" of every request.
        seen: Vec<String>,
        inject: VecDeque<Inject>,
    }

    fn reply(status: &str, body: &Value) -> String {
        let b = body.to_string();
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
    }

    fn err_body(code: i64, msg: &str) -> Value {
        json!({"success": false, "errors": [{"code": code, "message": msg}], "messages": [], "result": null})
    }

    fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
        let (_, q) = path.split_once('?')?;
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// Answers as the documented API does, for the rules of zone `Z1`.
    fn handle(api: &mut Api, method: &str, path: &str, auth: &str, body: &str) -> String {
        let base = "/client/v4/zones/Z1/firewall/access_rules/rules";
        let ok = |result: Value| json!({"success": true, "errors": [], "messages": [], "result": result});
        // A valid token without the permission on the zone's access rules.
        let limited = auth == format!("Bearer {LIMITED}");
        if path == "/client/v4/user/tokens/verify" && (limited || auth == format!("Bearer {TOKEN}"))
        {
            return reply("200 OK", &ok(json!({"id": "t1", "status": "active"})));
        }
        if path == "/client/v4/user/tokens/verify" {
            return reply("401 Unauthorized", &err_body(1000, "Invalid API Token"));
        }
        if auth != format!("Bearer {TOKEN}") {
            return reply("403 Forbidden", &err_body(10000, "Authentication error"));
        }
        match method {
            "POST" if path == base => {
                let v: Value = serde_json::from_str(body).unwrap();
                let value = v["configuration"]["value"].as_str().unwrap().to_string();
                if api.rules.iter().any(|r| r.1 == value) {
                    return reply(
                        "400 Bad Request",
                        &err_body(DUPLICATE, "firewallaccessrules.api.duplicate_of_existing"),
                    );
                }
                api.next_id += 1;
                let id = format!("r{}", api.next_id);
                let notes = v["notes"].as_str().unwrap().to_string();
                api.rules.push((id.clone(), value, notes));
                reply(
                    "200 OK",
                    &ok(
                        json!({"id": id, "mode": v["mode"], "configuration": v["configuration"], "notes": v["notes"]}),
                    ),
                )
            }
            "GET" if path.starts_with(&format!("{base}?")) => {
                let matching: Vec<&(String, String, String)> = api
                    .rules
                    .iter()
                    .filter(|r| match query(path, "notes") {
                        Some(n) => r.2.to_lowercase().contains(&n.to_lowercase()),
                        None => true,
                    })
                    .filter(|r| query(path, "configuration.value").is_none_or(|v| r.1 == v))
                    .collect();
                // Pages of two, so that paging is exercised.
                let per_page = 2;
                let page: usize = query(path, "page").map_or(1, |p| p.parse().unwrap());
                let total_pages = matching.len().div_ceil(per_page).max(1);
                let result: Vec<Value> = matching
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|r| json!({"id": r.0, "configuration": {"target": "ip", "value": r.1}, "notes": r.2}))
                    .collect();
                let mut v = ok(Value::Array(result));
                v["result_info"] = json!({"page": page, "per_page": per_page, "count": 2, "total_count": matching.len(), "total_pages": total_pages});
                reply("200 OK", &v)
            }
            "DELETE" if path.starts_with(&format!("{base}/")) => {
                let id = &path[base.len() + 1..];
                match api.rules.iter().position(|r| r.0 == id) {
                    Some(i) => {
                        api.rules.remove(i);
                        reply("200 OK", &ok(json!({"id": id})))
                    }
                    None => reply("404 Not Found", &err_body(10001, "not found")),
                }
            }
            _ => reply("404 Not Found", &err_body(7003, "no route")),
        }
    }

    /// Starts the fake API on `listener`.
    fn serve(listener: TcpListener, api: Arc<Mutex<Api>>) {
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let api = api.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut request_line = String::new();
                        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let (mut len, mut auth) = (0, String::new());
                        loop {
                            let mut line = String::new();
                            r.read_line(&mut line).unwrap();
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                            if lower.starts_with("authorization:") {
                                auth = line["authorization:".len()..].trim().to_string();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let mut parts = request_line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let out = {
                            let mut a = api.lock().unwrap();
                            a.seen.push(format!("{method} {path}"));
                            match a.inject.pop_front() {
                                Some(Inject::Raw(raw)) => raw.to_string(),
                                Some(Inject::Hang(d)) => {
                                    drop(a);
                                    std::thread::sleep(d);
                                    return;
                                }
                                None => handle(
                                    &mut a,
                                    &method,
                                    &path,
                                    &auth,
                                    &String::from_utf8_lossy(&body),
                                ),
                            }
                        };
                        if (&conn).write_all(out.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    fn start_api() -> (String, Arc<Mutex<Api>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/client/v4", l.local_addr().unwrap());
        let api = Arc::new(Mutex::new(Api::default()));
        serve(l, api.clone());
        (base, api)
    }

    struct Setup {
        _dir: tempfile::TempDir,
        config: CloudflareConfig,
    }

    fn config(api_base: &str, max_rules: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Setup {
            _dir: dir,
            config: CloudflareConfig {
                scope: "zones/Z1".into(),
                token: Token::File(token),
                mode: "block".into(),
                notes: "floodwatch".into(),
                api_base: api_base.into(),
                max_rules,
                budget: DEFAULT_BUDGET,
                timeout: Duration::from_millis(500),
            },
        }
    }

    fn key(s: &str) -> Key {
        Key {
            net: s.parse().unwrap(),
            vhost: NO_VHOST,
        }
    }

    fn ban(k: &str, rule: &str, until_ms: i64) -> Event {
        Event::Ban(Ban {
            time_ms: 0,
            key: key(k),
            rule: Arc::from(rule),
            vhost: None,
            rate: Arc::from("1r/s"),
            burst: 1,
            requests: 1,
            first_seen_ms: 0,
            ban_ms: 1000,
            until_ms,
            offense: 1,
            via_proxy: true,
            origin: Default::default(),
        })
    }

    fn unban(k: &str, rule: &str) -> Event {
        Event::Unban(Unban {
            time_ms: 0,
            key: key(k),
            rule: Arc::from(rule),
            reason: Default::default(),
        })
    }

    fn values(api: &Arc<Mutex<Api>>) -> Vec<String> {
        let mut v: Vec<String> = api
            .lock()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.1.clone())
            .collect();
        v.sort();
        v
    }

    const FUTURE: i64 = 4_000_000_000_000;

    #[test]
    fn bans_create_rules_with_the_right_target_and_unbans_delete_them_by_id() {
        let (base, api) = start_api();
        let s = config(&base, 100);
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        cf.begin().unwrap();
        cf.deliver(&ban("203.0.113.7", "a", FUTURE)).unwrap();
        cf.deliver(&ban("2001:db8:1:2::/64", "a", FUTURE)).unwrap();
        cf.deliver(&ban("2001:db8::5", "a", FUTURE)).unwrap();
        // Banned again under a second rule: no second Cloudflare rule.
        cf.deliver(&ban("203.0.113.7", "b", FUTURE)).unwrap();
        assert_eq!(
            values(&api),
            ["2001:db8:1:2::/64", "2001:db8::5", "203.0.113.7"]
        );
        {
            let a = api.lock().unwrap();
            let notes = &a.rules[0].2;
            assert!(
                notes.starts_with("floodwatch 203.0.113.7 rule=a until=2096-"),
                "{notes}"
            );
        }
        cf.deliver(&unban("203.0.113.7", "a")).unwrap();
        assert_eq!(values(&api).len(), 3, "still banned under rule b");
        cf.deliver(&unban("203.0.113.7", "b")).unwrap();
        cf.deliver(&unban("2001:db8:1:2::/64", "a")).unwrap();
        assert_eq!(values(&api), ["2001:db8::5"]);
        let seen = api.lock().unwrap().seen.clone();
        assert!(
            seen.contains(&"DELETE /client/v4/zones/Z1/firewall/access_rules/rules/r1".to_string()),
            "{seen:?}"
        );
        assert_eq!(seen.iter().filter(|s| s.starts_with("POST")).count(), 3);

        let e = cf.deliver(&ban("10.1.2.0/25", "a", FUTURE)).unwrap_err();
        assert!(!e.is_retryable() && e.message.contains("/16 or /24"), "{e}");
    }

    #[test]
    fn start_deletes_our_ended_rules_adopts_live_ones_and_leaves_others_alone() {
        let (base, api) = start_api();
        {
            let mut a = api.lock().unwrap();
            for (id, value, notes) in [
                (
                    "x1",
                    "10.0.0.1",
                    "floodwatch 10.0.0.1 rule=a until=2020-01-01T00:00:00Z",
                ),
                (
                    "x2",
                    "10.0.0.2",
                    "floodwatch 10.0.0.2 rule=a until=2096-01-01T00:00:00Z",
                ),
                ("x3", "10.0.0.3", "added by hand, mentions floodwatch"),
                (
                    "x4",
                    "10.0.0.4",
                    "floodwatch 10.0.0.4 rule=a until=2021-01-01T00:00:00Z",
                ),
                (
                    "x5",
                    "10.0.0.5",
                    "floodwatch 10.0.0.5 rule=a until=2022-01-01T00:00:00Z",
                ),
            ] {
                a.rules.push((id.into(), value.into(), notes.into()));
            }
        }
        let s = config(&base, 100);
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        cf.begin().unwrap();
        assert_eq!(values(&api), ["10.0.0.2", "10.0.0.3"]);
        // The adopted rule is removed by the unban after a ban of the same key.
        cf.deliver(&ban("10.0.0.2", "a", FUTURE)).unwrap();
        cf.deliver(&unban("10.0.0.2", "a")).unwrap();
        // A key whose rule someone else made: not ours, never deleted.
        cf.deliver(&ban("10.0.0.3", "a", FUTURE)).unwrap();
        cf.deliver(&unban("10.0.0.3", "a")).unwrap();
        assert_eq!(values(&api), ["10.0.0.3"]);
        let seen = api.lock().unwrap().seen.clone();
        assert!(seen.iter().any(|s| s.contains("page=2")), "paged: {seen:?}");
    }

    fn ban_of(ev: Event) -> Ban {
        match ev {
            Event::Ban(b) => b,
            Event::Unban(_) => unreachable!(),
        }
    }

    #[test]
    fn restored_bans_take_over_their_rules_so_unbans_delete_them() {
        let (base, api) = start_api();
        api.lock().unwrap().rules.push((
            "x2".into(),
            "10.0.0.2".into(),
            "floodwatch 10.0.0.2 rule=a until=2096-01-01T00:00:00Z".into(),
        ));
        let s = config(&base, 100);
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        cf.begin().unwrap();
        let active = [
            ban_of(ban("10.0.0.2", "a", FUTURE)),
            // Its rule was deleted by hand while we were stopped: made again.
            ban_of(ban("10.0.0.9", "a", FUTURE)),
            // Ended while stopped: its unban follows, nothing is created.
            ban_of(ban("10.0.0.8", "a", 1000)),
        ];
        cf.restore(&active).unwrap();
        // A retried restore counts nothing twice.
        cf.restore(&active).unwrap();
        assert_eq!(values(&api), ["10.0.0.2", "10.0.0.9"]);
        // Also kept as undelivered by the last run: given again, it still counts once.
        cf.deliver(&ban("10.0.0.2", "a", FUTURE)).unwrap();
        cf.deliver(&unban("10.0.0.8", "a")).unwrap();
        cf.deliver(&unban("10.0.0.2", "a")).unwrap();
        assert_eq!(
            values(&api),
            ["10.0.0.9"],
            "the adopted rule is deleted by id"
        );
        cf.deliver(&unban("10.0.0.9", "a")).unwrap();
        assert!(values(&api).is_empty());
        let seen = api.lock().unwrap().seen.clone();
        assert_eq!(seen.iter().filter(|s| s.starts_with("POST")).count(), 1);
        assert!(seen
            .iter()
            .any(|s| s.ends_with("/rules/x2") && s.starts_with("DELETE")));
    }

    #[test]
    fn max_rules_drops_the_oldest() {
        let (base, api) = start_api();
        let s = config(&base, 2);
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        cf.begin().unwrap();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            cf.deliver(&ban(ip, "a", FUTURE)).unwrap();
        }
        assert_eq!(values(&api), ["10.0.0.2", "10.0.0.3"]);
        cf.deliver(&unban("10.0.0.1", "a")).unwrap();
        assert_eq!(values(&api), ["10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn api_errors_are_sorted_into_retry_and_refuse() {
        let (base, api) = start_api();
        let s = config(&base, 100);
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        api.lock().unwrap().inject.extend([
            Inject::Raw("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 86\r\n\r\n{\"success\":false,\"errors\":[{\"code\":10000,\"message\":\"rate limited\"}],\"messages\":[]}\n"),
            Inject::Raw("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\nbad gate\n"),
            Inject::Hang(Duration::from_secs(2)),
        ]);
        let e = cf.deliver(&ban("10.0.0.1", "a", FUTURE)).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert!(e.message.contains("HTTP 429: 10000 rate limited"), "{e}");
        let e = cf.deliver(&ban("10.0.0.1", "a", FUTURE)).unwrap_err();
        assert!(e.is_retryable() && e.message.contains("502"), "{e}");
        let e = cf.deliver(&ban("10.0.0.1", "a", FUTURE)).unwrap_err();
        assert!(e.is_retryable(), "a timeout is retried: {e}");
        cf.deliver(&ban("10.0.0.1", "a", FUTURE)).unwrap();
        assert_eq!(values(&api), ["10.0.0.1"]);

        // A wrong token: refused, and the token is not in the message.
        let mut bad = s.config.clone();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "wrong-token").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        bad.token = Token::File(f.clone());
        let mut cf = Cloudflare::new(&bad, "t".into(), false).unwrap();
        let e = cf.begin().unwrap_err();
        assert!(e.needs_admin(), "retried on the slow schedule: {e}");
        assert!(e.message.contains("403: 10000 Authentication error"), "{e}");
        assert!(!e.message.contains("wrong-token"));
        // The admin puts the right token in the file: the next try reads it again.
        std::fs::write(&f, TOKEN).unwrap();
        cf.begin().unwrap();
        cf.deliver(&ban("10.0.0.2", "a", FUTURE)).unwrap();
        assert_eq!(values(&api), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn a_duplicate_adopts_our_rule() {
        let (base, api) = start_api();
        api.lock().unwrap().rules.push((
            "old".into(),
            "10.0.0.9".into(),
            "floodwatch 10.0.0.9 rule=a until=2096-01-01T00:00:00Z".into(),
        ));
        let s = config(&base, 100);
        // No begin(): as if the rule had been made by a request whose answer was lost.
        let mut cf = Cloudflare::new(&s.config, "t".into(), false).unwrap();
        cf.deliver(&ban("10.0.0.9", "a", FUTURE)).unwrap();
        cf.deliver(&unban("10.0.0.9", "a")).unwrap();
        assert!(values(&api).is_empty());
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "t").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token(&Token::File(f)).unwrap_err();
        assert!(e.message.contains("readable by others"), "{e}");
        let e = read_token(&Token::Env("FLOODWATCH_TEST_SURELY_UNSET".into())).unwrap_err();
        assert!(e.message.contains("not set"), "{e}");
    }

    #[test]
    fn budget_allows_max_requests_per_window() {
        let t0 = Instant::now();
        let mut b = Budget::new(3);
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(b.wait_at(at), Duration::ZERO);
            b.record(at);
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(b.wait_at(at), Duration::from_secs(290));
        assert_eq!(b.wait_at(t0 + BUDGET_WINDOW), Duration::ZERO);
        b.record(t0 + BUDGET_WINDOW);
        assert_eq!(
            b.wait_at(t0 + BUDGET_WINDOW),
            Duration::from_secs(1),
            "the second request leaves the window at 301 s"
        );
    }

    #[test]
    fn check_config_asks_the_api_whether_the_token_works() {
        let (base, _api) = start_api();
        let s = config(&base, 100);
        assert_eq!(verify(&s.config), None);
        let Token::File(f) = &s.config.token else {
            unreachable!()
        };
        std::fs::write(f, "wrong").unwrap();
        let p = verify(&s.config).unwrap();
        assert!(p.fatal && p.key == "api_token_file", "{p:?}");
        assert!(p.message.contains("Cloudflare refuses the token"), "{p:?}");
        assert!(p.message.contains("Invalid API Token"), "{p:?}");
        assert!(!p.message.contains("wrong"), "no token in it: {p:?}");
        std::fs::write(f, LIMITED).unwrap();
        let p = verify(&s.config).unwrap();
        assert!(p.fatal && p.key == "zone_id", "{p:?}");
        assert!(
            p.message.contains("Zone > Firewall Services > Edit"),
            "{p:?}"
        );
        // Nothing answers: a warning (watch must still start), not an error.
        // Bound, not listening: connections are refused, and no other program takes the port.
        let closed =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        closed
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = closed.local_addr().unwrap().as_socket().unwrap().port();
        std::fs::write(f, TOKEN).unwrap();
        let mut c = s.config.clone();
        c.api_base = format!("http://127.0.0.1:{port}/client/v4");
        let p = verify(&c).unwrap();
        assert!(!p.fatal, "{p:?}");
        assert!(p.message.contains("watch starts all the same"), "{p:?}");
    }
}
