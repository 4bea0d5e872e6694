#!/usr/bin/env python3
"""Writes the replay benchmark's input: one combined log of N lines (default 2,000,000, about
400 MB), one hour of log time, 20,000 clients browsing plus a few flooders.

    python3 benches/make-bench-log.py /tmp/bench/access_log [LINES] [--mixed]

Deterministic (fixed seed). The flooders (10.66.0.1 .. 10.66.0.5) each send 200 r/s for
60 s at staggered times; everything else stays far below 20r/s burst 100.

--mixed writes the other kind of log the replay benchmark measures: 20,000 clients of which
10 % IPv6 (written in their usual shortened forms), each line's client, path, status, size,
referer and agent drawn at random (shorter lines, ~200 bytes), and the flooders' lines
scattered through their seconds rather than in blocks; one flooder is IPv6.
"""
import random
import sys

args = [a for a in sys.argv[1:] if a != "--mixed"]
mixed = "--mixed" in sys.argv[1:]
out_path = args[0]
lines = int(args[1]) if len(args) > 1 else 2_000_000
rnd = random.Random(7)
START = 1795600800
SECONDS = 3600
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
]
PATHS = ["/", "/index.php", "/wp-content/themes/shop/style.css?ver=6.7.1", "/wp-includes/js/jquery/jquery.min.js?ver=3.7.1",
         "/product/winter-boots-black-42/", "/category/shoes/?orderby=price&paged=3", "/wp-json/wc/store/v1/cart",
         "/wp-content/uploads/2026/11/boots-1024x768.jpg", "/blog/2026/11/how-to-choose-boots/", "/?s=boots"]


def stamp(t):
    lt = t + 3600
    days, rem = divmod(lt, 86400)
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


clients = ["%d.%d.%d.%d" % (rnd.randint(11, 223), rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254)) for _ in range(20000)]


def v6():
    """A random address in one of a few /32s, in the shortened form servers log."""
    net = rnd.choice(["2001:db8", "2a01:4f8", "2600:1f18", "2a02:2f0e"])
    groups = [rnd.randint(0, 0xffff) for _ in range(6)]
    if rnd.random() < 0.5:  # the typical SLAAC-less host: a /64 and a small host part
        return "%s:%x:%x::%x" % (net, groups[0], groups[1], groups[5])
    return "%s:%s" % (net, ":".join("%x" % g for g in groups))


if mixed:
    clients = [v6() if i % 10 == 0 else c for i, c in enumerate(clients)]
    rnd.shuffle(clients)
    MIXED_PATHS = ["/", "/a", "/login", "/api/v1/items?id=%d", "/img/%d.png", "/robots.txt", "/search?q=%d"]
    MIXED_AGENTS = ["curl/8.5.0", "Googlebot/2.1 (+http://www.google.com/bot.html)", "-"] + AGENTS
    REFERERS = ["-", "https://shop.example/", "https://www.google.com/"]
    FLOODERS = ["10.66.0.1", "10.66.0.2", "2001:db8:66::3", "10.66.0.4", "10.66.0.5"]
flood_total = 5 * 200 * 60
per_second = (lines - flood_total) / SECONDS
written = 0
with open(out_path, "w", encoding="ascii", newline="\n") as f:
    for s in range(SECONDS):
        t = START + s
        ts = stamp(t)
        n = int(per_second * (s + 1)) - int(per_second * s)
        chunk = []
        if mixed:
            for _ in range(n):
                path = rnd.choice(MIXED_PATHS)
                if "%d" in path:
                    path = path % rnd.randint(0, 99999)
                chunk.append('%s - - [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"\n' % (
                    rnd.choice(clients), ts, rnd.choice(["GET", "GET", "GET", "POST", "HEAD"]), path,
                    rnd.choice([200, 200, 200, 304, 404, 301, 500]), rnd.randint(0, 90000),
                    rnd.choice(REFERERS), rnd.choice(MIXED_AGENTS)))
            for k in range(5):
                if START + 600 * (k + 1) <= t < START + 600 * (k + 1) + 60:
                    for _ in range(200):
                        chunk.insert(rnd.randint(0, len(chunk)), '%s - - [%s] "GET /?s=%d HTTP/1.1" 200 5120 "-" "%s"\n' % (
                            FLOODERS[k], ts, rnd.randint(0, 10**9), MIXED_AGENTS[0]))
            f.write("".join(chunk))
            written += len(chunk)
            continue
        for _ in range(n):
            chunk.append('%s - - [%s] "GET %s HTTP/1.1" 200 %d "https://shop.example/" "%s"\n' % (
                rnd.choice(clients), ts, rnd.choice(PATHS), rnd.randint(200, 90000), rnd.choice(AGENTS)))
        for k in range(5):
            if START + 600 * (k + 1) <= t < START + 600 * (k + 1) + 60:
                for _ in range(200):
                    chunk.append('10.66.0.%d - - [%s] "GET /?s=%d HTTP/1.1" 200 5120 "-" "%s"\n' % (
                        k + 1, ts, rnd.randint(0, 10**9), AGENTS[0]))
        f.write("".join(chunk))
        written += len(chunk)
print("%s: %d lines" % (out_path, written), file=sys.stderr)
