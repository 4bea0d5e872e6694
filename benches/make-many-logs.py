#!/usr/bin/env python3
"""Writes a Plesk-like tree of many small vhost logs for the replay memory benchmark:
FILES logs DIR/vhosts/site-NNNN.example/logs/access_log with LINES lines in all (at least the
flooders' 60,000), every one of them spanning the same hour of log time (the case where a replay
must hold back hits until every file has caught up), 20,000 clients browsing plus a few flooders.

    python3 benches/make-many-logs.py DIR FILES LINES [SEED]
    python3 benches/make-many-logs.py /tmp/many2000 2000 2000000    # 2,000 files x 1,000 lines
    python3 benches/make-many-logs.py /tmp/many200 200 2000000      # 200 files x 10,000 lines

Deterministic: the same arguments (SEED defaults to 7) write the same bytes. The flooders
(10.66.0.1 .. 10.66.0.5) each send 200 r/s for 60 s at staggered times to the first five sites;
everything else stays far below 20r/s burst 100.
"""
import os
import random
import sys

out_dir = sys.argv[1]
files = int(sys.argv[2])
lines = int(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
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
FLOOD_RATE, FLOOD_SECONDS = 200, 60


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


rnd = random.Random(seed)
clients = ["%d.%d.%d.%d" % (rnd.randint(11, 223), rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254))
           for _ in range(20000)]
flooders = min(5, files)
browsing = max(0, lines - flooders * FLOOD_RATE * FLOOD_SECONDS)
written = 0
for v in range(files):
    # Each file draws from its own generator, so one file's content does not depend on the others'.
    frnd = random.Random("%d/%d" % (seed, v))
    n = browsing * (v + 1) // files - browsing * v // files
    # Sorted random seconds over the whole hour: every file spans the same period.
    times = sorted(frnd.randrange(SECONDS) for _ in range(n))
    flood = range(START + 600 * (v + 1), START + 600 * (v + 1) + FLOOD_SECONDS) if v < flooders else range(0)
    path = os.path.join(out_dir, "vhosts", "site-%04d.example" % v, "logs", "access_log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = []
    i = 0
    for s in range(SECONDS):
        t = START + s
        ts = None
        while i < n and times[i] == s:
            ts = ts or stamp(t)
            out.append('%s - - [%s] "GET %s HTTP/1.1" 200 %d "https://site-%04d.example/" "%s"\n' % (
                frnd.choice(clients), ts, frnd.choice(PATHS), frnd.randint(200, 90000), v, frnd.choice(AGENTS)))
            i += 1
        if t in flood:
            ts = ts or stamp(t)
            for _ in range(FLOOD_RATE):
                out.append('10.66.0.%d - - [%s] "GET /?s=%d HTTP/1.1" 200 5120 "-" "%s"\n' % (
                    v + 1, ts, frnd.randint(0, 10**9), AGENTS[0]))
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("".join(out))
    written += len(out)
print("%s: %d files, %d lines" % (out_dir, files, written), file=sys.stderr)
