//! Behind a CDN or reverse proxy: which connecting addresses are trusted proxies, and where the
//! real client of their requests is logged.
//!
//! `[proxy] trusted` lists provider names (their ranges ship in the binary, see `ranges`) and
//! CIDRs; `ranges_file` replaces the named provider's list so an admin can refresh it without
//! a new release. Built once at start ([`setup`]) into [`Proxies`]: its ranges join the
//! allowlist (a trusted proxy is never banned, whatever it sends), and when a
//! `client_ip_field` is configured, [`ClientIp`] gives the ingest hot path the real client of
//! each line (`client.rs`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::addr::Cidr;
use crate::config::{Config, Trusted};
use crate::decide::allowlist::Allowlist;
use crate::parse::{Format, FormatError};

mod client;
pub mod ranges;

pub use client::{Client, ClientIp};
pub use ranges::RangeError;

/// Why the proxy settings cannot be used; every message names the config and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("{config}: proxy.ranges_file: cannot read {path}: {message}")]
    ReadRangesFile {
        config: String,
        path: String,
        message: String,
    },
    #[error("{config}: proxy.ranges_file: {source}")]
    RangesFile { config: String, source: RangeError },
    #[error(
        "{config}: proxy.ranges_file: {path} replaces a provider's list, but proxy.trusted \
         names no provider (add one of: {known})"
    )]
    UnusedRangesFile {
        config: String,
        path: String,
        known: String,
    },
    #[error("{config}: proxy.trusted: no built-in range list for {name:?}")]
    UnknownProvider { config: String, name: String },
    #[error(
        "{config}: proxy.client_ip_field: {source}; log it in a custom [input] format, e.g. \
         nginx:'... \"${field}\"'"
    )]
    Field {
        config: String,
        field: String,
        source: FormatError,
    },
}

/// The trusted proxies of a config, resolved.
#[derive(Clone, Debug, Default)]
pub struct Proxies {
    /// Every trusted range, provider lists expanded.
    ranges: Vec<Cidr>,
    /// One line per `trusted` entry, for `check-config`.
    described: Vec<String>,
    /// The field with the real client (leading `$` removed).
    field: Option<String>,
}

/// Resolves `config`'s `[proxy]` table and points `format`'s real-client slot at its
/// `client_ip_field` (an error when the format does not log that field).
pub fn setup(config: &Config, format: &mut Format) -> Result<Proxies, ProxyError> {
    let proxies = Proxies::from_config(config)?;
    if let Some(field) = &proxies.field {
        format
            .set_client_ip_field(field)
            .map_err(|source| ProxyError::Field {
                config: config.origin.clone(),
                field: field.clone(),
                source,
            })?;
    }
    Ok(proxies)
}

impl Proxies {
    /// Expands `[proxy] trusted`, reading `ranges_file` if one is set.
    pub fn from_config(config: &Config) -> Result<Proxies, ProxyError> {
        let p = &config.proxy;
        let origin = &config.origin;
        let named = p.trusted.iter().find_map(|t| match t {
            Trusted::Named(n) => Some(n.as_str()),
            Trusted::Range(_) => None,
        });
        let from_file = match (&p.ranges_file, named) {
            (Some(path), Some(_)) => Some((path.as_path(), read_ranges(path, origin)?)),
            (Some(path), None) => {
                return Err(ProxyError::UnusedRangesFile {
                    config: origin.clone(),
                    path: path.display().to_string(),
                    known: crate::config::KNOWN_PROXIES.join(", "),
                })
            }
            (None, _) => None,
        };
        let mut out = Proxies {
            field: p.client_ip_field.clone(),
            ..Proxies::default()
        };
        for t in &p.trusted {
            match t {
                Trusted::Range(c) => {
                    out.ranges.push(*c);
                    out.described.push(c.to_string());
                }
                Trusted::Named(name) => {
                    let (list, source) = match &from_file {
                        // Only one provider is known today, so the file is its list. With
                        // several, `ranges_file` would become a table keyed by provider.
                        Some((path, list)) => (list.clone(), format!("from {}", path.display())),
                        None => builtin(name, origin)?,
                    };
                    out.described
                        .push(format!("{name}: {} ranges ({source})", list.len()));
                    out.ranges.extend(list);
                }
            }
        }
        Ok(out)
    }

    /// Every trusted range: never banned.
    pub fn ranges(&self) -> &[Cidr] {
        &self.ranges
    }

    /// The per-line resolver, or `None` when the connecting address is always the client (no
    /// proxy, or no `client_ip_field`: the web server restored the address before logging).
    pub fn client_ip(&self) -> Option<Arc<ClientIp>> {
        if self.field.is_none() || self.ranges.is_empty() {
            return None;
        }
        Some(Arc::new(ClientIp::new(Allowlist::new(self.ranges.clone()))))
    }

    /// What the trusted entries stand for, one indented line each (empty without proxies).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.described.is_empty() {
            return s;
        }
        let _ = writeln!(s, "trusted proxy ranges ({} in all):", self.ranges.len());
        for d in &self.described {
            let _ = writeln!(s, "  {d}");
        }
        s
    }
}

fn builtin(name: &str, origin: &str) -> Result<(Vec<Cidr>, String), ProxyError> {
    let unknown = || ProxyError::UnknownProvider {
        config: origin.to_string(),
        name: name.to_string(),
    };
    let p = ranges::provider(name).ok_or_else(unknown)?;
    // The built-in lists are tested to parse; an error here would be a build defect.
    let list = ranges::parse(p.text, p.name).map_err(|source| ProxyError::RangesFile {
        config: origin.to_string(),
        source,
    })?;
    Ok((list, p.source.to_string()))
}

fn read_ranges(path: &Path, origin: &str) -> Result<Vec<Cidr>, ProxyError> {
    // A provider's list is a few kilobytes; a bound keeps a wrong path from being read forever.
    let text = crate::small_file::read_to_string(path, 4 << 20).map_err(|e| {
        ProxyError::ReadRangesFile {
            config: origin.to_string(),
            path: path.display().to_string(),
            message: e.to_string(),
        }
    })?;
    ranges::parse(&text, &path.display().to_string()).map_err(|source| ProxyError::RangesFile {
        config: origin.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;

    fn config(proxy: &str) -> Config {
        Config::parse(&format!("[proxy]\n{proxy}"), "fw.toml").unwrap()
    }

    fn addr(s: &str) -> Addr {
        Addr::parse(s.as_bytes()).unwrap()
    }

    const CF_FORMAT: &str = r#"nginx:'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_cf_connecting_ip"'"#;

    #[test]
    fn no_proxy_means_no_ranges_and_no_resolver() {
        let mut f = Format::from_spec("combined").unwrap();
        let p = setup(&Config::default(), &mut f).unwrap();
        assert!(p.ranges().is_empty());
        assert!(p.client_ip().is_none());
        assert_eq!(p.describe(), "");
    }

    #[test]
    fn cloudflare_plus_cidrs() {
        let c = config(
            "trusted = [\"cloudflare\", \"10.0.0.0/8\"]\nclient_ip_field = \"http_cf_connecting_ip\"\n",
        );
        let mut f = Format::from_spec(CF_FORMAT).unwrap();
        let p = setup(&c, &mut f).unwrap();
        assert_eq!(p.ranges().len(), 23);
        let ip = p.client_ip().unwrap();
        assert!(ip.is_trusted(addr("104.16.1.1")));
        assert!(ip.is_trusted(addr("2a06:98c0::1")));
        assert!(ip.is_trusted(addr("10.9.9.9")));
        assert!(!ip.is_trusted(addr("203.0.113.1")));
        let d = p.describe();
        assert!(d.starts_with("trusted proxy ranges (23 in all):\n"), "{d}");
        assert!(
            d.contains("  cloudflare: 22 ranges (built in: www.cloudflare.com/ips-v4"),
            "{d}"
        );
        assert!(d.contains("  10.0.0.0/8\n"), "{d}");
    }

    #[test]
    fn trusted_without_field_protects_but_does_not_resolve() {
        let c = config("trusted = [\"cloudflare\"]\n");
        let p = setup(&c, &mut Format::from_spec("combined").unwrap()).unwrap();
        assert_eq!(p.ranges().len(), 22);
        assert!(p.client_ip().is_none());
    }

    #[test]
    fn field_the_format_does_not_log_is_an_error_naming_the_key() {
        let c = config("trusted = [\"cloudflare\"]\nclient_ip_field = \"$http_true_client_ip\"\n");
        let e = setup(&c, &mut Format::from_spec("combined").unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("fw.toml: proxy.client_ip_field: the log format does not log the client IP field \"http_true_client_ip\""),
            "{msg}"
        );
        assert!(setup(&c, &mut Format::from_spec(CF_FORMAT).unwrap()).is_err());
    }

    #[test]
    fn ranges_file_replaces_the_builtin_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cf.txt");
        std::fs::write(&path, "# refreshed\n198.18.0.0/15\n").unwrap();
        let text = format!(
            "trusted = [\"cloudflare\", \"192.0.2.1\"]\nranges_file = {:?}\n",
            path.display().to_string()
        );
        let p = Proxies::from_config(&config(&text)).unwrap();
        let want: Vec<Cidr> = vec![
            "198.18.0.0/15".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        ];
        assert_eq!(p.ranges(), &want[..]);
        assert!(p
            .describe()
            .contains(&format!("  cloudflare: 1 ranges (from {})", path.display())));

        std::fs::write(&path, "198.18.0.0/15\nnot-a-range # oops\n").unwrap();
        let e = Proxies::from_config(&config(&text)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "fw.toml: proxy.ranges_file: {}:2: not an IP address or CIDR range: \"not-a-range\"",
                path.display()
            )
        );
        let missing = format!(
            "trusted = [\"cloudflare\"]\nranges_file = {:?}\n",
            dir.path().join("nope.txt").display().to_string()
        );
        let e = Proxies::from_config(&config(&missing)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("fw.toml: proxy.ranges_file: cannot read "),
            "{e}"
        );
        let unused = format!(
            "trusted = [\"10.0.0.0/8\"]\nranges_file = {:?}\n",
            path.display().to_string()
        );
        let e = Proxies::from_config(&config(&unused)).unwrap_err();
        assert!(
            e.to_string()
                .contains("proxy.trusted names no provider (add one of: cloudflare)"),
            "{e}"
        );
    }
}
