//! The `webhook` sink: POSTs each event's JSON object to a URL, with optional headers.
//!
//! A connection failure, a timeout, HTTP 408, 429 or 5xx is retried (after `Retry-After` when the
//! server sends one); 401 and 403 (wrong credentials) every `retry_max_delay`, as only the admin
//! can fix them; any other 4xx means the server will not take this event, which is reported and
//! not retried. Header values may be secrets: they are never logged.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use super::{log, At, Sink, SinkError};
use crate::config::ConfigError;
use crate::decide::event::write_json_line;
use crate::decide::Event;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where events are POSTed (http:// or https://).
    url: String,
    /// Extra request headers, e.g. { Authorization = "Bearer ..." }.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// How long one request may take; default "10s".
    timeout: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Header values stay out of debug output: they may be tokens.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookConfig {
    pub fn check(raw: RawWebhook, at: &At) -> Result<WebhookConfig, ConfigError> {
        let url = raw.url.trim();
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            return Err(at.error("url", format!("{url:?} is not an http:// or https:// URL")));
        }
        for (name, value) in &raw.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(at.error("headers", format!("{name:?} is not a header name")));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(at.error(
                    &format!("headers.{name}"),
                    "a header value cannot contain a line break",
                ));
            }
        }
        Ok(WebhookConfig {
            url: url.to_string(),
            headers: raw.headers.into_iter().collect(),
            timeout: match raw.timeout {
                Some(t) => at.duration("timeout", &t)?,
                None => Duration::from_secs(10),
            },
        })
    }
}

pub struct Webhook {
    name: String,
    dry_run: bool,
    config: WebhookConfig,
    agent: ureq::Agent,
    body: Vec<u8>,
}

impl Webhook {
    pub fn new(c: &WebhookConfig, name: String, dry_run: bool) -> Webhook {
        let agent = ureq::AgentBuilder::new()
            .timeout(c.timeout)
            // A redirected POST would be resent as a GET, or not at all: report it instead.
            .redirects(0)
            .build();
        Webhook {
            name,
            dry_run,
            config: c.clone(),
            agent,
            body: Vec::with_capacity(512),
        }
    }
}

impl Sink for Webhook {
    fn deliver(&mut self, event: &Event) -> Result<(), SinkError> {
        self.body.clear();
        write_json_line(event, &mut self.body);
        self.body.pop(); // the newline
        if self.dry_run {
            log(
                &self.name,
                format_args!(
                    "dry run: would POST to {}: {}",
                    self.config.url,
                    String::from_utf8_lossy(&self.body)
                ),
            );
            return Ok(());
        }
        let mut req = self
            .agent
            .post(&self.config.url)
            .set("Content-Type", "application/json");
        for (name, value) in &self.config.headers {
            req = req.set(name, value);
        }
        match req.send_bytes(&self.body) {
            Ok(resp) if resp.status() < 300 => {
                // Read the body so that the connection can be reused.
                let _ = resp
                    .into_reader()
                    .take(64 * 1024)
                    .read_to_end(&mut Vec::new());
                Ok(())
            }
            Ok(resp) => Err(SinkError::refused(format!(
                "{} answered {} {}",
                self.config.url,
                resp.status(),
                resp.status_text()
            ))),
            Err(ureq::Error::Status(code, resp)) => Err(status_error(&self.config.url, code, resp)),
            Err(ureq::Error::Transport(t)) => {
                Err(SinkError::io(format!("{}: {t}", self.config.url)))
            }
        }
    }
}

fn status_error(url: &str, code: u16, resp: ureq::Response) -> SinkError {
    let retry_after = resp
        .header("Retry-After")
        .and_then(|v| v.trim().parse::<u64>().ok())
        // A server asking for more than an hour is not going to be waited for per event.
        .map(|s| Duration::from_secs(s.min(3600)));
    let mut text = String::new();
    let _ = resp.into_reader().take(300).read_to_string(&mut text);
    let message = format!("{url} answered {code}: {}", text.trim());
    let mut e = if code == 408 || code == 429 || code >= 500 {
        SinkError::unavailable(message)
    } else if code == 401 || code == 403 {
        // Wrong credentials: every event fails so until the admin fixes them.
        SinkError::setup(message)
    } else {
        SinkError::refused(message)
    };
    e.retry_after = retry_after;
    e
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::decide::Unban;
    use crate::engine::Key;
    use crate::hit::NO_VHOST;

    /// Serves one canned response per connection, returning the requests it read.
    fn serve(responses: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut got = Vec::new();
            for resp in responses {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                head.push_str(&String::from_utf8(body).unwrap());
                got.push(head);
                (&s).write_all(resp.as_bytes()).unwrap();
            }
            got
        });
        (url, h)
    }

    fn unban() -> Event {
        Event::Unban(Unban {
            time_ms: 0,
            key: Key {
                net: "10.0.0.1".parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: "r".into(),
            reason: Default::default(),
        })
    }

    fn sink(url: String) -> Webhook {
        let c = WebhookConfig {
            url,
            headers: vec![("X-Token".into(), "s3cret".into())],
            timeout: Duration::from_secs(5),
        };
        Webhook::new(&c, "t".into(), false)
    }

    #[test]
    fn posts_the_event_json_with_headers_and_sorts_errors() {
        let (url, server) = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
            "HTTP/1.1 400 Bad\r\nContent-Length: 6\r\nConnection: close\r\n\r\nno way",
            "HTTP/1.1 401 Who\r\nContent-Length: 3\r\nConnection: close\r\n\r\nwho",
        ]);
        let mut s = sink(url);
        s.deliver(&unban()).unwrap();
        let e = s.deliver(&unban()).unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(e.message.contains("503: busy"), "{e}");
        let e = s.deliver(&unban()).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message.contains("400: no way"), "{e}");
        let e = s.deliver(&unban()).unwrap_err();
        assert!(e.needs_admin(), "wrong credentials: retried slowly: {e}");
        let got = server.join().unwrap();
        assert!(got[0].starts_with("POST /hook HTTP/1.1\r\n"), "{}", got[0]);
        let lower = got[0].to_ascii_lowercase();
        assert!(lower.contains("x-token: s3cret\r\n"), "{}", got[0]);
        assert!(lower.contains("content-type: application/json\r\n"));
        assert!(got[0].ends_with(
            "\r\n\r\n{\"type\":\"unban\",\"time\":\"1970-01-01T00:00:00Z\",\"key\":\"10.0.0.1\",\"rule\":\"r\"}"
        ));
    }

    #[test]
    fn a_closed_port_is_retryable() {
        // Bound, not listening: connections are refused, and no other program takes the port.
        let closed =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        closed
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = closed.local_addr().unwrap().as_socket().unwrap().port();
        let e = sink(format!("http://127.0.0.1:{port}/"))
            .deliver(&unban())
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    #[test]
    fn debug_output_hides_header_values() {
        let s = sink("http://x/".into());
        let d = format!("{:?}", s.config);
        assert!(d.contains("X-Token") && !d.contains("s3cret"), "{d}");
    }
}
