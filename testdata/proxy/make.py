#!/usr/bin/env python3
"""Writes the behind-Cloudflare logs under testdata/proxy/ (deterministic: fixed seed).

Three minutes of one Plesk site behind Cloudflare. Every visitor arrives through Cloudflare
edge addresses; the real client is in a logged field. The same traffic is written twice:

  cloudflare/access_log   nginx, connecting address = the Cloudflare edge, real client in
                          "$http_cf_connecting_ip" (config: cloudflare.toml)
  xff/access_log          nginx's `main` format: the site sits behind a local load balancer
                          (10.0.0.2) behind Cloudflare; "$http_x_forwarded_for" is
                          "[what the client sent, ]client, edge" (config: xff.toml)

What is in it, and what a replay with the default rule (20r/s, burst 100) must decide:
  - background visitors and a crawler, through Cloudflare                   -> no ban
  - 198.51.100.23: GET flood through Cloudflare, 60 r/s for 8 s, spread
    over three edges; in the XFF log it also forges a random first entry     -> banned, via_proxy
  - 2001:db8:bad:1::/64: IPv6 rotation through Cloudflare, 40 r/s for 10 s   -> the /64 banned, via_proxy
  - a flood through edge 172.70.242.58 whose client field is garbage
    (60 r/s for 8 s = 480 lines)   -> keyed on the edge (trusted: never banned), 480 lines counted
  - 192.0.2.66: floods the origin directly (not through Cloudflare) at 60 r/s
    for 8 s with a forged CF-Connecting-IP / X-Forwarded-For                -> banned as itself
  - 192.0.2.80: a steady direct API client at 5 r/s, header "-"             -> no ban
Without the [proxy] table, the edges themselves overflow and get banned.
"""
import os
import random

rnd = random.Random(20261125)
START = 1795600800  # 2026-11-25T10:00:00Z, logged as +0100 local time
SECONDS = 180
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGES = ["/", "/index.php", "/blog/", "/blog/2026/11/winter-sale", "/contact", "/products?page=2", "/search?q=boots"]
ASSETS = ["/css/site.css", "/js/app.js", "/img/logo.png", "/img/hero.jpg", "/fonts/inter.woff2", "/favicon.ico"]
# Cloudflare edge addresses (inside the published ranges), IPv4 and IPv6.
EDGES = ["162.158.86.21", "162.158.87.140", "172.70.242.58", "172.71.94.3", "104.23.170.41",
         "141.101.98.7", "2400:cb00:459:1024::a29e:5615", "2a06:98c0:3600::103"]
GARBAGE_EDGE = "172.70.242.58"
GARBAGE = ["unknown", "-", "999.0.0.1", "\\x22><script>", "203.0.113.7 OR 1=1"]
LB = "10.0.0.2"
HOST = "example.com"


def stamp(t):
    lt = t + 3600
    days, rem = divmod(lt, 86400)
    # civil date from days since 1970-01-01
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y += m <= 2
    return "%02d/%s/%04d:%02d:%02d:%02d +0100" % (d, MONTHS[m - 1], y, rem // 3600, rem // 60 % 60, rem % 60)


# (time, seq, request text, how it arrived)
# how: ("cf", edge, client_value, forged_xff_prefix) or ("direct", addr, header_value)
events = []


def req(t, how, method, path, status, size, ref, agent):
    events.append((t, len(events), '"%s %s HTTP/1.1" %d %d "%s" "%s"' % (method, path, status, size, ref, agent), how))


def via_cf(client, edge=None, forged=None):
    return ("cf", edge or rnd.choice(EDGES), client, forged)


for v in range(60):
    client = "203.0.113.%d" % (v + 1) if v < 40 else "2001:db8:100:%x::%x" % (v, rnd.randint(1, 0xFFFF))
    edge = rnd.choice(EDGES)
    agent = rnd.choice(AGENTS)
    t = START + rnd.randint(0, SECONDS - 30)
    for _ in range(rnd.randint(1, 4)):
        page = rnd.choice(PAGES)
        req(t, via_cf(client, edge), "GET", page, 200, rnd.randint(3000, 40000), "https://%s/" % HOST, agent)
        for a in rnd.sample(ASSETS, rnd.randint(2, len(ASSETS))):
            req(t, via_cf(client, edge), "GET", a, rnd.choice([200, 200, 304]), rnd.randint(200, 90000), "https://%s%s" % (HOST, page), agent)
        t += rnd.randint(3, 40)
        if t >= START + SECONDS:
            break

for t in range(START, START + SECONDS, 2):
    req(t, via_cf("66.249.66.1"), "GET", rnd.choice(PAGES), 200, 8000, "-", BOT)

flood_edges = EDGES[:2] + EDGES[6:7]
for t in range(START + 60, START + 68):
    for i in range(60):
        forged = "%d.%d.%d.%d" % tuple(rnd.randint(1, 223) for _ in range(4))
        req(t, via_cf("198.51.100.23", rnd.choice(flood_edges), forged), "GET", "/?s=%d" % rnd.randint(0, 10**9), 200, 5120, "-", AGENTS[0])

for t in range(START + 100, START + 110):
    for i in range(40):
        ip = "2001:db8:bad:1:%x:%x:%x:%x" % tuple(rnd.randint(0, 0xFFFF) for _ in range(4))
        req(t, via_cf(ip), "GET", "/products?page=%d" % rnd.randint(1, 500), 200, 20480, "-", AGENTS[2])

for t in range(START + 20, START + 28):
    for i in range(60):
        req(t, ("cf", GARBAGE_EDGE, rnd.choice(GARBAGE), None), "GET", "/search?q=%d" % rnd.randint(0, 10**6), 200, 7000, "-", "python-requests/2.32")

for t in range(START + 120, START + 128):
    for i in range(60):
        forged = rnd.choice(["1.1.1.1", "203.0.113.%d" % rnd.randint(1, 40), "66.249.66.1"])
        req(t, ("direct", "192.0.2.66", forged), "POST", "/wp-login.php", 200, 4100, "-", "Mozilla/5.0")

for t in range(START, START + SECONDS):
    for i in range(5):
        req(t, ("direct", "192.0.2.80", "-"), "GET", "/api/stock?sku=%d" % rnd.randint(1, 9999), 200, 310, "-", "stock-sync/2.3")

events.sort()


def cf_line(t, text, how):
    # Through Cloudflare: (edge, client); direct: (address, forged header).
    conn, field = how[1], how[2]
    return '%s - - [%s] %s "%s"\n' % (conn, stamp(t), text, field)


def xff_line(t, text, how):
    if how[0] == "cf":
        _, edge, client, forged = how
        field = "%s, %s" % (client, edge)
        if forged:
            field = "%s, %s" % (forged, field)
        conn = LB
    else:
        conn, field = how[1], how[2]
    return '%s - - [%s] %s "%s"\n' % (conn, stamp(t), text, field)


here = os.path.dirname(os.path.abspath(__file__))
for name, render in [("cloudflare", cf_line), ("xff", xff_line)]:
    d = os.path.join(here, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "access_log"), "w", encoding="latin-1", newline="\n") as f:
        f.write("".join(render(t, text, how) for t, _, text, how in events))
