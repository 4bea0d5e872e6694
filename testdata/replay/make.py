#!/usr/bin/env python3
"""Writes the replay demo logs under testdata/replay/vhosts/ (deterministic: fixed seed).

Five minutes of two Plesk vhosts' traffic in combined format, nginx-style with the real client
first. What is in it, and what a replay with the default rule (20r/s, burst 100) must decide:
  - background visitors: page loads with their assets, a crawler       -> no ban
  - 198.51.100.23: single-IP GET flood on example.com, 60 r/s for 40 s -> banned
  - 2001:db8:bad:1::/64: IPv6 rotation, each address under the limit   -> the /64 banned
  - 192.0.2.80: a heavy but steady API client at 15 r/s                -> no ban
  - 127.0.0.1: local monitoring at 40 r/s                              -> allowlisted, no ban
  - a few lines that are not access-log lines (TLS bytes, an error-log line) -> malformed
"""
import gzip
import os
import random

rnd = random.Random(20261125)
START = 1795600800  # 2026-11-25T10:00:00Z, logged as +0100 local time
SECONDS = 300
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGES = ["/", "/index.php", "/blog/", "/blog/2026/11/winter-sale", "/contact", "/products?page=2", "/search?q=boots"]
ASSETS = ["/css/site.css", "/js/app.js", "/img/logo.png", "/img/hero.jpg", "/fonts/inter.woff2", "/favicon.ico"]


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


def line(ip, t, method, path, status, size, ref, agent):
    return '%s - - [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"\n' % (ip, stamp(t), method, path, status, size, ref, agent)


logs = {"example.com": [], "shop.example.org": []}


def add(host, t, text):
    logs[host].append((t, len(logs[host]), text))


for v in range(80):
    ip = "203.0.113.%d" % (v + 1) if v < 40 else "100.64.%d.%d" % (v, rnd.randint(1, 254))
    host = rnd.choice(list(logs))
    agent = rnd.choice(AGENTS)
    t = START + rnd.randint(0, SECONDS - 60)
    for _ in range(rnd.randint(1, 5)):
        page = rnd.choice(PAGES)
        add(host, t, line(ip, t, "GET", page, 200, rnd.randint(3000, 40000), "https://%s/" % host, agent))
        for a in rnd.sample(ASSETS, rnd.randint(2, len(ASSETS))):
            add(host, t, line(ip, t, "GET", a, rnd.choice([200, 200, 304]), rnd.randint(200, 90000), "https://%s%s" % (host, page), agent))
        t += rnd.randint(3, 40)
        if t >= START + SECONDS:
            break

for t in range(START, START + SECONDS, 2):
    add("example.com", t, line("66.249.66.1", t, "GET", rnd.choice(PAGES), 200, 8000, "-", BOT))

for t in range(START + 60, START + 100):
    for i in range(60):
        add("example.com", t, line("198.51.100.23", t, "GET", "/?s=%d" % rnd.randint(0, 10**9), 200, 5120, "-", AGENTS[0]))

for t in range(START + 120, START + 160):
    for i in range(40):
        ip = "2001:db8:bad:1:%x:%x:%x:%x" % tuple(rnd.randint(0, 0xFFFF) for _ in range(4))
        add("shop.example.org", t, line(ip, t, "GET", "/products?page=%d" % rnd.randint(1, 500), 200, 20480, "-", AGENTS[2]))

for t in range(START, START + SECONDS):
    for i in range(15):
        add("shop.example.org", t, line("192.0.2.80", t, "GET", "/api/stock?sku=%d" % rnd.randint(1, 9999), 200, 310, "-", "stock-sync/2.3"))
    if t < START + 30:
        for i in range(40):
            add("example.com", t, line("127.0.0.1", t, "GET", "/server-status?auto", 200, 900, "-", "monitor/1.0"))

add("example.com", START + 200, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")
add("example.com", START + 201, "[Wed Nov 25 10:23:21.123456 2026] [core:error] [pid 1234] AH00126: Invalid URI in request\n")

here = os.path.dirname(os.path.abspath(__file__))
for host, entries in logs.items():
    entries.sort()
    d = os.path.join(here, "vhosts", host, "logs")
    os.makedirs(d, exist_ok=True)
    # The first minute went to a rotated, gzipped file: replay reads both.
    old = [e for e in entries if e[0] < START + 60]
    new = [e for e in entries if e[0] >= START + 60]
    with gzip.GzipFile(os.path.join(d, "access_log.1.gz"), "wb", mtime=0) as f:
        f.write("".join(e[2] for e in old).encode("latin-1"))
    with open(os.path.join(d, "access_log"), "w", encoding="latin-1", newline="\n") as f:
        f.write("".join(e[2] for e in new))
