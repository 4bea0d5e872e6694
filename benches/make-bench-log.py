#!/usr/bin/env python3
"""Writes the replay benchmark's input: one combined log of N lines (default 2,000,000, about
400 MB), one hour of log time, 20,000 clients browsing plus a few flooders.

    python3 benches/make-bench-log.py /tmp/bench/access_log [LINES]

Deterministic (fixed seed). The flooders (10.66.0.1 .. 10.66.0.5) each send 200 r/s for
60 s at staggered times; everything else stays far below 20r/s burst 100.
"""
import random
import sys

out_path = sys.argv[1]
lines = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
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
flood_total = 5 * 200 * 60
per_second = (lines - flood_total) / SECONDS
written = 0
with open(out_path, "w", encoding="ascii", newline="\n") as f:
    for s in range(SECONDS):
        t = START + s
        ts = stamp(t)
        n = int(per_second * (s + 1)) - int(per_second * s)
        chunk = []
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
