#!/usr/bin/env python3
"""Turns a combined log (e.g. from make-bench-log.py) into the same traffic seen behind
Cloudflare, to measure the cost of resolving real clients per line:

    python3 benches/make-cloudflare-log.py IN OUT_DIR

writes OUT_DIR/cf/access_log (connecting address = a Cloudflare edge, the original client
appended as "$http_cf_connecting_ip") and OUT_DIR/xff/access_log (connecting address = a local
balancer, "$http_x_forwarded_for" = "client, edge"), plus the matching configs cf.toml and
xff.toml. Deterministic (fixed seed); a replay of either must ban the same keys as the input
(the balancer is trusted as 10.0.0.2 alone: the input's flooders live in 10.66.0.0/24, and a
trusted 10.0.0.0/8 would rightly protect them).
"""
import os
import random
import sys

src, out = sys.argv[1], sys.argv[2]
rnd = random.Random(11)
# 200 edge addresses across the published ranges, as a site sees from a few colos.
EDGES = ["162.158.%d.%d" % (rnd.randint(0, 255), rnd.randint(1, 254)) for _ in range(80)]
EDGES += ["172.%d.%d.%d" % (rnd.randint(64, 71), rnd.randint(0, 255), rnd.randint(1, 254)) for _ in range(80)]
EDGES += ["104.%d.%d.%d" % (rnd.randint(16, 23), rnd.randint(0, 255), rnd.randint(1, 254)) for _ in range(30)]
EDGES += ["2400:cb00:%x::%x" % (rnd.randint(0, 0xFFFF), rnd.randint(1, 0xFFFF)) for _ in range(10)]
BASE = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'
CONFIGS = {
    "cf": ("http_cf_connecting_ip", '["cloudflare"]'),
    "xff": ("http_x_forwarded_for", '["cloudflare", "10.0.0.2"]'),
}

for name, (field, trusted) in CONFIGS.items():
    os.makedirs(os.path.join(out, name), exist_ok=True)
    with open(os.path.join(out, name + ".toml"), "w") as f:
        f.write("[input]\nformat = 'nginx:%s \"$%s\"'\n\n[proxy]\ntrusted = %s\nclient_ip_field = \"%s\"\n"
                % (BASE, field, trusted, field))

with open(src, encoding="latin-1") as inp, \
        open(os.path.join(out, "cf", "access_log"), "w", encoding="latin-1", newline="\n") as cf, \
        open(os.path.join(out, "xff", "access_log"), "w", encoding="latin-1", newline="\n") as xff:
    for line in inp:
        client, rest = line.rstrip("\n").split(" ", 1)
        edge = EDGES[rnd.randrange(len(EDGES))]
        cf.write('%s %s "%s"\n' % (edge, rest, client))
        xff.write('10.0.0.2 %s "%s, %s"\n' % (rest, client, edge))
