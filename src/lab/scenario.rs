//! Attack-traffic scenarios for `generate`: each one is a mix of actors (browsers loading pages
//! with their assets, crawlers, flooders...) that append requests to a [`Traffic`], together with
//! the truth they imply (which keys the scenario's rules must ban, which they must not) and the
//! rules themselves.
//!
//! Every number that decides the truth is chosen with a margin against the `limit_req`
//! arithmetic (noted at each actor), so the truth does not depend on random draws.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::rng::Rng;

/// The first second of every generated log: 2026-11-20T10:00:00Z. Fixed, so the same seed gives
/// the same bytes; in the past, so ingest never refuses it as dated in the future.
pub const START_SECS: i64 = 1_795_168_800;

/// Names accepted by `generate --scenario`, in `--list` order.
pub const NAMES: &[&str] = &[
    "background",
    "get-flood",
    "distributed",
    "ipv6-rotation",
    "wp-login",
    "heavy-steady",
    "cloudflare",
    "mixed",
];

/// The shortest log for which every attack lasts long enough to overflow its rule.
pub const MIN_SECONDS: u32 = 20;

/// One request line before it is written to its vhost's file.
#[derive(Clone, Debug)]
pub struct Req {
    pub t_ms: i64,
    pub vhost: usize,
    pub line: String,
}

/// One `[[rule]]` of the scenario's config, as TOML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDef {
    pub name: &'static str,
    /// The table's body (without the `[[rule]]` header), one `key = value` per line.
    pub body: &'static str,
}

/// The `default` rule: the design's defaults written out, so the config can hold other rules too.
pub const RULE_DEFAULT: RuleDef = RuleDef {
    name: "default",
    body: "name = \"default\"\nrate = \"20r/s\"\nburst = 100\nban = \"10m\"\n",
};

/// Catches floods spread over one /24, each address far under the per-address rule.
pub const RULE_SUBNET: RuleDef = RuleDef {
    name: "subnet-24",
    body: "name = \"subnet-24\"\nrate = \"100r/s\"\nburst = 200\nban = \"10m\"\nipv4_prefix = 24\n",
};

/// A typical WordPress jail: a few login POSTs per minute at most.
pub const RULE_WP_LOGIN: RuleDef = RuleDef {
    name: "wp-login",
    body: "name = \"wp-login\"\nrate = \"10r/m\"\nburst = 5\nban = \"1h\"\nmethods = [\"POST\"]\npath_prefix = \"/wp-login.php\"\n",
};

/// The nginx log format of a site behind Cloudflare: combined plus the real client's header.
pub const CLOUDFLARE_FORMAT: &str =
    "nginx:'$remote_addr - $remote_user [$time_local] \"$request\" \
     $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" \"$http_cf_connecting_ip\"'";

/// Everything a scenario produced.
#[derive(Debug, Default)]
pub struct Traffic {
    pub vhosts: Vec<String>,
    /// Per vhost: its traffic arrives through Cloudflare (edge in the client position, the real
    /// client in a trailing `CF-Connecting-IP` field).
    pub behind_cloudflare: Vec<bool>,
    pub reqs: Vec<Req>,
    pub banned: BTreeSet<String>,
    pub not_banned: BTreeSet<String>,
    pub rules: Vec<RuleDef>,
    /// The truth holds only with the `[proxy]` section (Cloudflare trusted, real-IP field).
    pub needs_proxy: bool,
    /// `None` = `combined`.
    pub format: Option<&'static str>,
}

/// Time frame and seed of one generation.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub seconds: u32,
    pub seed: u64,
}

impl Frame {
    /// When attacks run: from a quarter of the log for half of it, at least 10 s (every attack
    /// overflows its rule within 4 s).
    fn attack(&self) -> (i64, i64) {
        let s = i64::from(self.seconds);
        let from = s / 4;
        (from, (s / 2).max(10).min(s - from))
    }
}

/// Builds a scenario's traffic; `None` for an unknown name.
pub fn build(name: &str, frame: Frame) -> Option<Traffic> {
    let mut rng = Rng::new(frame.seed);
    let mut tr = Traffic {
        rules: vec![RULE_DEFAULT],
        ..Traffic::default()
    };
    let mut g = Gen {
        tr: &mut tr,
        frame,
        rng: &mut rng,
    };
    match name {
        "background" => {
            let v = g.vhost("example.com", false);
            g.background(v);
        }
        "get-flood" => {
            let v = g.vhost("example.com", false);
            g.background(v);
            g.get_flood(v);
        }
        "distributed" => {
            let v = g.vhost("example.com", false);
            g.background(v);
            g.distributed(v);
        }
        "ipv6-rotation" => {
            let v = g.vhost("example.com", false);
            g.background(v);
            g.ipv6_rotation(v);
        }
        "wp-login" => {
            let v = g.vhost("blog.example.net", false);
            g.background(v);
            g.wp_login(v);
        }
        "heavy-steady" => {
            let v = g.vhost("shop.example.org", false);
            g.background(v);
            g.heavy_steady(v);
        }
        "cloudflare" => {
            let v = g.vhost("example.com", true);
            g.tr.needs_proxy = true;
            g.tr.format = Some(CLOUDFLARE_FORMAT);
            g.background(v);
            g.cloudflare_flood(v);
        }
        "mixed" => {
            // Cloudflare is left out: its format and `[proxy]` config would apply to every vhost.
            let a = g.vhost("example.com", false);
            let b = g.vhost("shop.example.org", false);
            let c = g.vhost("blog.example.net", false);
            for v in [a, b, c] {
                g.background(v);
            }
            g.get_flood(a);
            g.heavy_steady(b);
            g.wp_login(b);
            g.distributed(c);
            g.ipv6_rotation(c);
        }
        _ => return None,
    }
    // Within a file, lines in time order; equal times keep the order they were made in.
    tr.reqs.sort_by_key(|r| (r.vhost, r.t_ms));
    Some(tr)
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
];

const PAGES: &[&str] = &[
    "/",
    "/shop/",
    "/product/winter-boots-black-42/",
    "/product/rain-jacket-navy-m/",
    "/category/shoes/?orderby=price&paged=2",
    "/blog/2026/11/how-to-choose-boots/",
    "/about-us/",
    "/contact/",
    "/cart/",
    "/?s=boots",
];

const ASSETS: &[&str] = &[
    "/wp-content/themes/shop/style.css?ver=6.7.1",
    "/wp-includes/js/jquery/jquery.min.js?ver=3.7.1",
    "/wp-content/themes/shop/js/main.js?ver=2.4",
    "/wp-content/uploads/2026/11/boots-1024x768.jpg",
    "/wp-content/uploads/2026/11/jacket-300x300.webp",
    "/wp-content/plugins/woocommerce/assets/css/woocommerce.css?ver=9.4.2",
    "/wp-content/themes/shop/fonts/inter.woff2",
    "/wp-content/uploads/2026/10/logo.svg",
    "/favicon.ico",
];

const CRAWLERS: &[(&str, &str, f64)] = &[
    (
        "66.249.66.",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        1.0,
    ),
    (
        "157.55.39.",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        2.0,
    ),
];

/// First octets of ordinary access networks; none overlaps Cloudflare or the attackers' ranges.
const CLIENT_OCTETS: &[u8] = &[
    24, 31, 37, 62, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 89, 90, 91, 92, 93, 94, 95, 109,
    176, 178, 212, 213, 217,
];

const FLOODER: &str = "198.51.100.23";
const WP_ATTACKER: &str = "192.0.2.77";
const HEAVY_CLIENT: &str = "46.4.118.9";
const DISTRIBUTED_NET: &str = "203.0.113.";
const ROTATION_NET: &str = "2001:db8:dead:beef";
const CF_ATTACKER: &str = "198.51.100.140";

struct Gen<'a> {
    tr: &'a mut Traffic,
    frame: Frame,
    rng: &'a mut Rng,
}

/// One request's fields.
struct Line<'a> {
    client: &'a str,
    t_ms: i64,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes: u64,
    referer: &'a str,
    agent: &'a str,
}

impl Gen<'_> {
    fn vhost(&mut self, name: &str, behind_cloudflare: bool) -> usize {
        self.tr.vhosts.push(name.to_string());
        self.tr.behind_cloudflare.push(behind_cloudflare);
        self.tr.vhosts.len() - 1
    }

    fn rule(&mut self, r: RuleDef) {
        if !self.tr.rules.contains(&r) {
            self.tr.rules.push(r);
        }
    }

    fn end_ms(&self) -> i64 {
        i64::from(self.frame.seconds) * 1000
    }

    fn push(&mut self, vhost: usize, l: &Line<'_>) {
        let mut s = String::with_capacity(256);
        let cf = self.tr.behind_cloudflare[vhost];
        let edge;
        let client = if cf {
            edge = cloudflare_edge(self.rng);
            edge.as_str()
        } else {
            l.client
        };
        let t_ms = START_SECS * 1000 + l.t_ms;
        let _ = write!(
            s,
            "{client} - - [{}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"",
            httpdate(t_ms.div_euclid(1000)),
            l.method,
            l.path,
            l.status,
            l.bytes,
            l.referer,
            l.agent
        );
        if cf {
            let _ = write!(s, " \"{}\"", l.client);
        }
        self.tr.reqs.push(Req {
            t_ms,
            vhost,
            line: s,
        });
    }

    /// Page loads with their assets from a pool of ordinary clients, plus two search crawlers.
    /// At most a few requests per client per second: far from any rule's threshold.
    fn background(&mut self, vhost: usize) {
        let mut rng = self.rng.fork(vhost as u64 + 1);
        let host = self.tr.vhosts[vhost].clone();
        let n = (self.frame.seconds as usize / 2).clamp(40, 20_000);
        let clients: Vec<String> = (0..n).map(|_| ordinary_client(&mut rng)).collect();
        // Each client keeps its browser.
        let agents: Vec<&str> = (0..n).map(|_| *rng.pick(BROWSERS)).collect();
        let end = self.end_ms();
        let mut t = rng.exp(400.0);
        while (t as i64) < end {
            let c = rng.range(0, n as u64 - 1) as usize;
            self.page_load(&mut rng, vhost, &host, &clients[c], agents[c], t as i64);
            t += rng.exp(400.0);
        }
        for (i, (net, agent, mean_gap)) in CRAWLERS.iter().enumerate() {
            let ip = format!("{net}{}", 10 + vhost * 4 + i);
            // Poisson arrivals of mean 1 or 0.5 r/s: 100 in one second never happens.
            let mut t = rng.exp(mean_gap * 1000.0);
            while (t as i64) < end {
                let path = if rng.chance(0.1) {
                    "/robots.txt"
                } else {
                    *rng.pick(PAGES)
                };
                self.push(
                    vhost,
                    &Line {
                        client: &ip,
                        t_ms: t as i64,
                        method: "GET",
                        path,
                        status: 200,
                        bytes: rng.range(2_000, 60_000),
                        referer: "-",
                        agent,
                    },
                );
                t += rng.exp(mean_gap * 1000.0);
            }
            self.tr.not_banned.insert(ip);
        }
    }

    fn page_load(
        &mut self,
        rng: &mut Rng,
        vhost: usize,
        host: &str,
        client: &str,
        agent: &str,
        t: i64,
    ) {
        let page = *rng.pick(PAGES);
        let referer = if rng.chance(0.3) {
            "https://www.google.com/".to_string()
        } else {
            "-".to_string()
        };
        self.push(
            vhost,
            &Line {
                client,
                t_ms: t,
                method: "GET",
                path: page,
                status: if rng.chance(0.02) { 404 } else { 200 },
                bytes: rng.range(12_000, 80_000),
                referer: &referer,
                agent,
            },
        );
        let page_url = format!("https://{host}{page}");
        for _ in 0..rng.range(3, 12) {
            let asset = *rng.pick(ASSETS);
            let (status, bytes) = if rng.chance(0.25) {
                (304, 0)
            } else {
                (200, rng.range(800, 250_000))
            };
            self.push(
                vhost,
                &Line {
                    client,
                    t_ms: t + rng.range(30, 1500) as i64,
                    method: "GET",
                    path: asset,
                    status,
                    bytes,
                    referer: &page_url,
                    agent,
                },
            );
        }
        // Now and then a logged-in editor: one login form, one POST (never near wp-login's 5).
        if rng.chance(0.02) {
            for (dt, method, status) in [(2000, "GET", 200), (9000, "POST", 302)] {
                self.push(
                    vhost,
                    &Line {
                        client,
                        t_ms: t + dt,
                        method,
                        path: "/wp-login.php",
                        status,
                        bytes: rng.range(1_000, 5_000),
                        referer: &page_url,
                        agent,
                    },
                );
            }
        }
    }

    /// One address at 60-80 r/s against 20r/s burst 100: the excess grows by ≥ 40 per second and
    /// overflows within 3 s.
    fn get_flood(&mut self, vhost: usize) {
        let mut rng = self.rng.fork(100 + vhost as u64);
        let (from, len) = self.frame.attack();
        let agent = *rng.pick(BROWSERS);
        for s in from..from + len {
            for _ in 0..rng.range(60, 80) {
                let path = *rng.pick(&["/", "/shop/", "/?s=boots", "/cart/"]);
                self.push(
                    vhost,
                    &Line {
                        client: FLOODER,
                        t_ms: s * 1000 + rng.range(0, 999) as i64,
                        method: "GET",
                        path,
                        status: if rng.chance(0.2) { 503 } else { 200 },
                        bytes: rng.range(500, 40_000),
                        referer: "-",
                        agent,
                    },
                );
            }
        }
        self.tr.banned.insert(FLOODER.to_string());
    }

    /// 40 addresses of one /24, each 5-8 r/s (under 20r/s, so the per-address rule never fires),
    /// together 200-320 r/s against the /24 rule's 100r/s burst 200: overflows within 2 s.
    fn distributed(&mut self, vhost: usize) {
        self.rule(RULE_SUBNET);
        let mut rng = self.rng.fork(200 + vhost as u64);
        let (from, len) = self.frame.attack();
        let agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let bots: Vec<String> = (10..50).map(|i| format!("{DISTRIBUTED_NET}{i}")).collect();
        for s in from..from + len {
            for bot in &bots {
                for _ in 0..rng.range(5, 8) {
                    let q = rng.range(0, 99_999);
                    let path = format!("/?s={q}");
                    self.push(
                        vhost,
                        &Line {
                            client: bot,
                            t_ms: s * 1000 + rng.range(0, 999) as i64,
                            method: "GET",
                            path: &path,
                            status: 200,
                            bytes: rng.range(20_000, 40_000),
                            referer: "-",
                            agent,
                        },
                    );
                }
            }
        }
        self.tr.banned.insert(format!("{DISTRIBUTED_NET}0/24"));
        self.tr.not_banned.extend(bots);
    }

    /// A new address of one /64 for almost every request, 40-60 r/s together: keyed by /64
    /// (the default), the excess grows by ≥ 20 per second and overflows within 5 s, inside the
    /// attack window (≥ 10 s).
    fn ipv6_rotation(&mut self, vhost: usize) {
        let mut rng = self.rng.fork(300 + vhost as u64);
        let (from, len) = self.frame.attack();
        let agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        for s in from..from + len {
            for _ in 0..rng.range(40, 60) {
                let addr = format!(
                    "{ROTATION_NET}:{:x}:{:x}:{:x}:{:x}",
                    rng.range(0, 0xffff),
                    rng.range(0, 0xffff),
                    rng.range(0, 0xffff),
                    rng.range(1, 0xffff)
                );
                let path = format!("/product/{}/", rng.range(1, 5000));
                self.push(
                    vhost,
                    &Line {
                        client: &addr,
                        t_ms: s * 1000 + rng.range(0, 999) as i64,
                        method: "GET",
                        path: &path,
                        status: 200,
                        bytes: rng.range(20_000, 60_000),
                        referer: "-",
                        agent,
                    },
                );
            }
        }
        self.tr.banned.insert(format!("{ROTATION_NET}::/64"));
    }

    /// 1-3 login POSTs per second (under 20r/s) against the wp-login rule's 10r/m burst 5:
    /// even at 1 r/s the excess grows by 833 per second and overflows by the 8th second, inside the
    /// attack window (≥ 10 s).
    fn wp_login(&mut self, vhost: usize) {
        self.rule(RULE_WP_LOGIN);
        let mut rng = self.rng.fork(400 + vhost as u64);
        let (from, len) = self.frame.attack();
        for s in from..from + len {
            for _ in 0..rng.range(1, 3) {
                self.push(
                    vhost,
                    &Line {
                        client: WP_ATTACKER,
                        t_ms: s * 1000 + rng.range(0, 999) as i64,
                        method: "POST",
                        path: "/wp-login.php",
                        status: 200,
                        bytes: rng.range(4_000, 4_200),
                        referer: "-",
                        agent: "Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0",
                    },
                );
            }
        }
        self.tr.banned.insert(WP_ATTACKER.to_string());
    }

    /// A partner's inventory sync: 15-19 requests in every second of the log. Each second drains
    /// 20 from the excess, so it never exceeds 19 of the burst's 100.
    fn heavy_steady(&mut self, vhost: usize) {
        let mut rng = self.rng.fork(500 + vhost as u64);
        let mut page = 0u64;
        for s in 0..i64::from(self.frame.seconds) {
            for _ in 0..rng.range(15, 19) {
                page += 1;
                let path = format!("/wp-json/wc/store/v1/products?page={page}&per_page=100");
                self.push(
                    vhost,
                    &Line {
                        client: HEAVY_CLIENT,
                        t_ms: s * 1000 + rng.range(0, 999) as i64,
                        method: "GET",
                        path: &path,
                        status: 200,
                        bytes: rng.range(30_000, 90_000),
                        referer: "-",
                        agent: "inventory-sync/2.3 (+https://partner.example/bot)",
                    },
                );
            }
        }
        self.tr.not_banned.insert(HEAVY_CLIENT.to_string());
    }

    /// The GET flood's shape from a client behind Cloudflare: spread over the edges, every edge
    /// stays far under the threshold; only the real-IP field shows the flooder.
    fn cloudflare_flood(&mut self, vhost: usize) {
        let mut rng = self.rng.fork(600 + vhost as u64);
        let (from, len) = self.frame.attack();
        let agent = *rng.pick(BROWSERS);
        for s in from..from + len {
            for _ in 0..rng.range(60, 80) {
                self.push(
                    vhost,
                    &Line {
                        client: CF_ATTACKER,
                        t_ms: s * 1000 + rng.range(0, 999) as i64,
                        method: "GET",
                        path: "/",
                        status: 200,
                        bytes: rng.range(20_000, 40_000),
                        referer: "-",
                        agent,
                    },
                );
            }
        }
        self.tr.banned.insert(CF_ATTACKER.to_string());
        for e in CLOUDFLARE_EDGES {
            self.tr.not_banned.insert(format!("{}{}", e.0, e.1));
        }
    }
}

/// Edge addresses (prefix, last octet) inside Cloudflare's published ranges.
const CLOUDFLARE_EDGES: &[(&str, u8)] = &[
    ("162.158.86.", 14),
    ("162.158.87.", 201),
    ("162.159.12.", 33),
    ("172.70.34.", 8),
    ("172.70.35.", 117),
    ("172.71.94.", 60),
    ("104.23.160.", 25),
    ("104.23.161.", 190),
    ("141.101.76.", 44),
    ("108.162.216.", 72),
];

fn cloudflare_edge(rng: &mut Rng) -> String {
    let (net, last) = rng.pick(CLOUDFLARE_EDGES);
    format!("{net}{last}")
}

/// A residential-looking client: mostly IPv4, some IPv6 (each in its own /64).
fn ordinary_client(rng: &mut Rng) -> String {
    if rng.chance(0.15) {
        format!(
            "2a02:{:x}:{:x}:{:x}::{:x}",
            rng.range(0x1000, 0xffff),
            rng.range(0, 0xffff),
            rng.range(0, 0xffff),
            rng.range(1, 0xffff)
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            rng.pick(CLIENT_OCTETS),
            rng.range(0, 255),
            rng.range(0, 255),
            rng.range(1, 254)
        )
    }
}

/// `[20/Nov/2026:10:00:00 +0000]`'s inside, for a Unix time in seconds.
pub fn httpdate(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            seconds: 60,
            seed: 7,
        }
    }

    #[test]
    fn httpdate_matches_known_dates() {
        assert_eq!(httpdate(START_SECS), "20/Nov/2026:10:00:00 +0000");
        assert_eq!(httpdate(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(httpdate(951_782_400 + 3661), "29/Feb/2000:01:01:01 +0000");
    }

    #[test]
    fn every_listed_name_builds_and_unknown_does_not() {
        for name in NAMES {
            let tr = build(name, frame()).unwrap();
            assert!(!tr.reqs.is_empty(), "{name}");
            assert!(tr.rules.iter().any(|r| r.name == "default"), "{name}");
            assert!(tr.banned.is_disjoint(&tr.not_banned), "{name}");
        }
        assert!(build("nope", frame()).is_none());
    }

    #[test]
    fn lines_are_in_time_order_within_each_vhost() {
        let tr = build("mixed", frame()).unwrap();
        for w in tr.reqs.windows(2) {
            assert!((w[0].vhost, w[0].t_ms) <= (w[1].vhost, w[1].t_ms));
        }
        assert_eq!(tr.vhosts.len(), 3);
    }

    #[test]
    fn same_seed_same_lines_other_seed_other_lines() {
        let a = build("mixed", frame()).unwrap();
        let b = build("mixed", frame()).unwrap();
        let c = build("mixed", Frame { seed: 8, ..frame() }).unwrap();
        let lines = |t: &Traffic| t.reqs.iter().map(|r| r.line.clone()).collect::<Vec<_>>();
        assert_eq!(lines(&a), lines(&b));
        assert_ne!(lines(&a), lines(&c));
    }

    #[test]
    fn cloudflare_lines_carry_an_edge_and_the_real_client() {
        let tr = build("cloudflare", frame()).unwrap();
        assert!(tr.needs_proxy);
        let flood = tr
            .reqs
            .iter()
            .find(|r| r.line.ends_with(&format!("\"{CF_ATTACKER}\"")))
            .unwrap();
        assert!(CLOUDFLARE_EDGES
            .iter()
            .any(|(net, _)| flood.line.starts_with(net)));
    }

    #[test]
    fn attack_window_fits_the_log() {
        let f = Frame {
            seconds: MIN_SECONDS,
            seed: 1,
        };
        let (from, len) = f.attack();
        assert!(len >= 10 && from + len <= i64::from(MIN_SECONDS));
    }
}
