//! Turns a chunk of log lines into hits for the engine: parse, client address, vhost, rule mask.
//!
//! This is the per-line hot path of every command. It runs on a producer thread that owns all of
//! its state (time cache, vhost cache, counters), so it takes no lock and allocates nothing once
//! the caches are warm.

use std::sync::Arc;

use crate::addr::Addr;
use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::hit::{Hit, RuleMask, VhostId, HIT_VIA_PROXY, NO_VHOST};
use crate::parse::{Format, TimeCache};
use crate::proxy::{Client, ClientIp};
use crate::source::key_vhosts::KeyVhosts;
use crate::source::reader::lines;
use crate::source::stats::IngestStats;
use crate::source::unusable::Samples;
use crate::source::vhost_counts::VhostCounts;
use crate::vhost::{VhostCache, Vhosts};

/// One producer thread's line-to-hit converter.
pub struct Ingest {
    format: Arc<Format>,
    rules: Arc<CompiledRules>,
    times: TimeCache,
    vhosts: VhostCache,
    shared_vhosts: Vhosts,
    /// Rule mask of each vhost id, computed on first sight (vhost globs are not matched per line).
    vhost_masks: Vec<Option<RuleMask>>,
    no_vhost_mask: RuleMask,
    /// Log times beyond this (ms) are refused; moved forward with the clock at every chunk.
    future_limit_ms: i64,
    /// Set behind trusted proxies that log the real client; `None` costs one branch per line.
    client_ip: Option<Arc<ClientIp>>,
    pub stats: IngestStats,
    /// The first unusable lines, for the warning that names them (see `unusable`).
    pub samples: Samples,
    /// Requests per vhost and status class, when asked for ([`Ingest::counting_vhosts`]).
    pub by_vhost: Option<VhostCounts>,
    /// The busiest clients' vhosts, while `top` looks at them.
    pub key_vhosts: Option<KeyVhosts>,
}

/// How far ahead of the clock a log time may be: time zones are already in the UTC conversion,
/// so this only has to absorb a badly set server clock.
const FUTURE_SLACK_MS: i64 = 24 * 3600 * 1000;

fn future_limit() -> i64 {
    crate::clock::wall_ms().saturating_add(FUTURE_SLACK_MS)
}

impl Ingest {
    pub fn new(format: Arc<Format>, rules: Arc<CompiledRules>, vhosts: Vhosts) -> Ingest {
        let no_vhost_mask = rules.vhost_mask(b"");
        Ingest {
            format,
            rules,
            times: TimeCache::default(),
            vhosts: VhostCache::new(vhosts.clone()),
            shared_vhosts: vhosts,
            vhost_masks: Vec::new(),
            no_vhost_mask,
            future_limit_ms: future_limit(),
            client_ip: None,
            stats: IngestStats::default(),
            samples: Samples::default(),
            by_vhost: None,
            key_vhosts: None,
        }
    }

    /// Counts requests per vhost and status class (watch's `top` and dashboard).
    pub fn counting_vhosts(mut self) -> Ingest {
        self.by_vhost = Some(VhostCounts::default());
        self
    }

    /// Takes the client of lines from trusted proxies from the format's real-client field.
    pub fn with_client_ip(mut self, client_ip: Option<Arc<ClientIp>>) -> Ingest {
        self.client_ip = client_ip;
        self
    }

    /// Takes a reload's format, rules and real-client setting for the lines that follow (the
    /// router must be handed the same rules first: see
    /// [`Router::set_rules`](crate::engine::router::Router::set_rules)).
    pub fn reconfigure(
        &mut self,
        format: Arc<Format>,
        rules: Arc<CompiledRules>,
        client_ip: Option<Arc<ClientIp>>,
    ) {
        self.no_vhost_mask = rules.vhost_mask(b"");
        self.vhost_masks.clear();
        self.format = format;
        self.rules = rules;
        self.client_ip = client_ip;
        self.times = TimeCache::default();
    }

    /// Parses every line of `chunk` and pushes its hit to `router`. `file_vhost` is the vhost the
    /// file's path names, used when the format does not log one. Returns the newest log time seen
    /// in the chunk (`i64::MIN` when no line had one).
    pub fn chunk(&mut self, chunk: &[u8], file_vhost: VhostId, router: &mut Router) -> i64 {
        self.stats.bytes += chunk.len() as u64;
        self.future_limit_ms = future_limit();
        let mut newest = i64::MIN;
        for line in lines(chunk) {
            if let Some(hit) = self.line(line, file_vhost) {
                newest = newest.max(hit.time_ms);
                router.push(hit);
            }
        }
        newest
    }

    /// The hit of one line (without its `\n`), or `None` when it is malformed or uncounted.
    #[inline]
    pub fn line(&mut self, line: &[u8], file_vhost: VhostId) -> Option<Hit> {
        self.stats.lines += 1;
        let rec = match self.format.parse(line, &mut self.times) {
            Ok(rec) => rec,
            Err(kind) => {
                self.stats.malformed.count(kind);
                if self.samples.malformed.is_none() {
                    self.samples.malformed(kind, line);
                }
                return None;
            }
        };
        if rec.time_ms > self.future_limit_ms {
            self.stats.future += 1;
            return None;
        }
        let Some(mut addr) = Addr::parse(rec.client) else {
            self.stats.no_client += 1;
            if self.samples.no_client.is_none() {
                self.samples.no_client(line, rec.client);
            }
            return None;
        };
        let mut flags = 0;
        if let Some(ip) = &self.client_ip {
            match ip.resolve(addr, rec.real_client) {
                Client::Direct => {}
                Client::Proxied(real) => {
                    addr = real;
                    flags = HIT_VIA_PROXY;
                    self.stats.via_proxy += 1;
                }
                Client::Unusable => self.stats.proxy_fallback += 1,
            }
        }
        let vhost = if self.format.has_vhost() {
            self.vhosts.id(rec.vhost)
        } else {
            file_vhost
        };
        if let Some(counts) = &mut self.by_vhost {
            counts.count(vhost, rec.status);
        }
        if let Some(k) = &mut self.key_vhosts {
            k.count(addr, vhost);
        }
        let rules = self.vhost_mask(vhost) & self.rules.request_mask(&rec);
        if rules == 0 {
            self.stats.unmatched += 1;
            return None;
        }
        self.stats.hits += 1;
        Some(Hit {
            addr,
            time_ms: rec.time_ms,
            vhost,
            rules,
            flags,
        })
    }

    #[inline]
    fn vhost_mask(&mut self, vhost: VhostId) -> RuleMask {
        if vhost == NO_VHOST {
            return self.no_vhost_mask;
        }
        let i = vhost as usize;
        if let Some(Some(mask)) = self.vhost_masks.get(i) {
            return *mask;
        }
        let name = self.shared_vhosts.name(vhost).unwrap_or_default();
        let mask = self.rules.vhost_mask(name.as_bytes());
        if self.vhost_masks.len() <= i {
            self.vhost_masks.resize(i + 1, None);
        }
        self.vhost_masks[i] = Some(mask);
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{default_rule, Config};
    use crate::proxy;

    const FORMAT: &str = r#"nginx:'$remote_addr [$time_local] "$request" $status $body_bytes_sent "$http_x_forwarded_for"'"#;

    fn ingest(proxy: &str) -> Ingest {
        let config =
            Config::parse(&format!("[input]\nformat = '''{FORMAT}'''\n{proxy}"), "t").unwrap();
        let mut format = Format::from_spec(&config.input.format).unwrap();
        let proxies = proxy::setup(&config, &mut format).unwrap();
        let rules = CompiledRules::new(&[default_rule()]).unwrap();
        Ingest::new(Arc::new(format), Arc::new(rules), Vhosts::new())
            .with_client_ip(proxies.client_ip())
    }

    fn hit(i: &mut Ingest, conn: &str, xff: &str) -> Hit {
        let line = format!(r#"{conn} [25/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "{xff}""#);
        i.line(line.as_bytes(), NO_VHOST).unwrap()
    }

    fn addr(s: &str) -> Addr {
        Addr::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn trusted_proxy_lines_take_the_client_from_the_field() {
        let mut i = ingest(
            "[proxy]\ntrusted = [\"cloudflare\", \"10.0.0.0/8\"]\nclient_ip_field = \"http_x_forwarded_for\"\n",
        );
        let h = hit(&mut i, "10.0.0.2", "6.6.6.6, 203.0.113.9, 162.158.1.1");
        assert_eq!((h.addr, h.flags), (addr("203.0.113.9"), HIT_VIA_PROXY));
        // Direct, with a forged header: keyed on itself.
        let h = hit(&mut i, "198.51.100.4", "1.1.1.1");
        assert_eq!((h.addr, h.flags), (addr("198.51.100.4"), 0));
        // From the proxy with garbage: keyed on the proxy, counted.
        let h = hit(&mut i, "162.158.1.1", "<script>");
        assert_eq!((h.addr, h.flags), (addr("162.158.1.1"), 0));
        let h = hit(&mut i, "162.158.1.1", "-");
        assert_eq!(h.addr, addr("162.158.1.1"));
        assert_eq!((i.stats.via_proxy, i.stats.proxy_fallback), (1, 2));
        assert_eq!(i.stats.hits, 4);
        let mut total = IngestStats::default();
        total.add(&i.stats);
        total.add(&i.stats);
        assert_eq!((total.via_proxy, total.proxy_fallback), (2, 4));
    }

    #[test]
    fn without_a_field_the_connecting_address_is_the_client() {
        for proxy in ["", "[proxy]\ntrusted = [\"cloudflare\"]\n"] {
            let mut i = ingest(proxy);
            let h = hit(&mut i, "162.158.1.1", "203.0.113.9");
            assert_eq!((h.addr, h.flags), (addr("162.158.1.1"), 0));
            assert_eq!((i.stats.via_proxy, i.stats.proxy_fallback), (0, 0));
        }
    }
}
