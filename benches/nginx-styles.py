#!/usr/bin/env python3
"""Benchmark of the nginx sink's two file styles (not a test): how fast a real nginx serves a
small static file with N bans as `deny` lines, as a `geo` map checked by an `if` in the server,
and as a `geo` map checked by the http-wide `limit_req` of docs/guide.md; and how long nginx takes
to read the config (`nginx -t`) and to reload (SIGHUP until the new worker is up) with them.

    python3 benches/nginx-styles.py [--counts 0,1000,20000,100000] [--requests 20000]
        [--concurrency 20] [--runs 3] [--styles deny,geo-if,geo-limit-req]

Needs nginx and ab (Debian: `apt-get install -y nginx apache2-utils`). Each nginx runs on
loopback with its own prefix in a temp dir, one worker, no access log. The load client is
`ab -n REQUESTS -c CONCURRENCY` from 127.0.0.1, which is never banned: every request walks the
whole deny list (as any client not banned does) or looks the map up. The banned addresses are
distinct IPv4 addresses outside loopback (a deny list is walked per address family, so only
IPv4 entries cost an IPv4 client). For each number of bans a plain nginx (no file, no map) runs
beside one nginx per style, and the runs of ab go round them in turn: the machine's other load
drifts, and this way it moves every column alike. Each figure is the median of `--runs` runs
after a warm-up; the ratio compares it with the plain nginx's median of the same round.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
AB = shutil.which("ab")


def banned_addresses(n):
    """n distinct IPv4 addresses in 10.0.0.0/8 and above, spread over the space."""
    out = []
    for i in range(n):
        v = 0x0A000000 + i * 97
        out.append(f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}")
    return out


def bans_file(style, addresses):
    head = "# Written by floodwatch: the active bans. Changes here are overwritten.\n"
    if style == "deny":
        return head + "".join(f"deny {a};\n" for a in addresses)
    body = "".join(f"    {a} 1;\n" for a in addresses)
    return head + "geo $floodwatch_banned {\n    default 0;\n" + body + "}\n"


def wiring(style, bans):
    """(directives in http {}, directives in server {}), as docs/guide.md says to wire them."""
    if style == "plain":
        return "", ""
    if style == "deny":
        return "", f"include {bans};"
    if style == "geo-if":
        return f"include {bans};", "if ($floodwatch_banned) { return 444; }"
    return (
        f"include {bans};\n"
        '  map $floodwatch_banned $floodwatch_limit { default ""; 1 banned; }\n'
        "  limit_req_zone $floodwatch_limit zone=floodwatch:1m rate=1r/m;\n"
        "  limit_req zone=floodwatch;\n"
        "  limit_req_status 444;\n"
        "  limit_req_log_level info;",
        "",
    )


class Nginx:
    def __init__(self, prefix, port, style, n):
        self.prefix = prefix
        os.makedirs(f"{prefix}/html", exist_ok=True)
        os.makedirs(f"{prefix}/tmp", exist_ok=True)
        with open(f"{prefix}/html/index.html", "w") as f:
            f.write("ok\n")
        bans = f"{prefix}/bans.conf"
        with open(bans, "w") as f:
            f.write(bans_file("deny" if style == "deny" else "geo", banned_addresses(n)))
        http, server = wiring(style, bans)
        with open(f"{prefix}/nginx.conf", "w") as f:
            f.write(
                f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
                "events { worker_connections 1024; }\n"
                f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/tmp/body;\n"
                f"  proxy_temp_path {prefix}/tmp/proxy;\n  fastcgi_temp_path {prefix}/tmp/fcgi;\n"
                f"  {http}\n"
                f"  server {{\n    listen 127.0.0.1:{port};\n    {server}\n"
                f"    root {prefix}/html;\n  }}\n}}\n"
            )
        self.base = [NGINX, "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf", "-e",
                     f"{prefix}/error.log"]
        self.port = port

    def test_seconds(self):
        t = time.monotonic()
        subprocess.run(self.base + ["-t", "-q"], check=True)
        return time.monotonic() - t

    def start(self):
        subprocess.run(self.base, check=True)
        self.master = self.wait_for_pid()
        self.wait_for_worker(set())

    def wait_for_pid(self):
        for _ in range(600):
            try:
                with open(f"{self.prefix}/nginx.pid") as f:
                    return int(f.read())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        sys.exit("nginx did not start: " + open(f"{self.prefix}/error.log").read())

    def workers(self):
        try:
            with open(f"/proc/{self.master}/task/{self.master}/children") as f:
                return set(f.read().split())
        except FileNotFoundError:
            return set()

    def wait_for_worker(self, old):
        """Until the master has a worker not in `old` and none of `old` is left."""
        while True:
            now = self.workers()
            if now and not (now & old):
                return
            time.sleep(0.002)

    def reload_seconds(self):
        old = self.workers()
        t = time.monotonic()
        subprocess.run(self.base + ["-s", "reload"], check=True)
        self.wait_for_worker(old)
        return time.monotonic() - t

    def stop(self):
        subprocess.run(self.base + ["-s", "stop"], check=False)
        for _ in range(200):
            if not os.path.exists(f"/proc/{self.master}"):
                return
            time.sleep(0.05)


def ab(port, requests, concurrency):
    out = subprocess.run(
        [AB, "-q", "-n", str(requests), "-c", str(concurrency), f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = None
    for line in out.splitlines():
        if line.startswith("Requests per second:"):
            rps = float(line.split()[3])
        # The unbanned client must be served: a refused request would be cheaper and lie.
        if line.startswith("Non-2xx responses:") or (
            line.startswith("Failed requests:") and line.split()[2] != "0"
        ):
            sys.exit(f"ab: requests were not served:\n{out}")
    return rps


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--counts", default="0,1000,20000,100000")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--styles", default="deny,geo-if,geo-limit-req")
    a = p.parse_args()
    if AB is None:
        sys.exit("ab not found: apt-get install -y apache2-utils")
    counts = [int(c) for c in a.counts.split(",")]
    styles = a.styles.split(",")
    print(f"nginx: {subprocess.run([NGINX, '-v'], capture_output=True, text=True).stderr.strip()}"
          f"; ab -n {a.requests} -c {a.concurrency}; median of {a.runs} runs, interleaved with "
          f"the plain nginx's; {os.cpu_count()} cpus")
    print("| bans | style | req/s (median) | runs | vs plain nginx | nginx -t | reload |")
    print("|---:|---|---:|---|---:|---:|---:|")
    for n in counts:
        # The plain nginx (no file, no map) runs beside the styles, and the runs of ab go round
        # them in turn: the machine's load drifts, and this way it moves every column alike.
        cases = [("plain", 0)] + [(style, n) for style in styles]
        with tempfile.TemporaryDirectory(prefix="nginx-styles-") as d:
            os.chmod(d, 0o755)  # nginx's workers run as nobody when started as root
            servers = []
            try:
                for i, (style, count) in enumerate(cases):
                    ngx = Nginx(f"{d}/{i}", free_port(), style, count)
                    ngx.test = statistics.median(ngx.test_seconds() for _ in range(3))
                    ngx.start()
                    servers.append(ngx)
                    ab(ngx.port, min(2000, a.requests), a.concurrency)
                rates = [[] for _ in servers]
                for r in range(a.runs):
                    for i in range(len(servers)):
                        k = (i + r) % len(servers)
                        rates[k].append(ab(servers[k].port, a.requests, a.concurrency))
                reloads = [statistics.median(s.reload_seconds() for _ in range(3)) for s in servers]
            finally:
                for ngx in servers:
                    ngx.stop()
        plain = statistics.median(rates[0])
        for (style, _), ngx, rps, reload in zip(cases, servers, rates, reloads):
            label = "none: plain nginx, 0 bans" if style == "plain" else style
            runs = f"{min(rps):,.0f}–{max(rps):,.0f}"
            print(f"| {n:,} | {label} | {statistics.median(rps):,.0f} | {runs} "
                  f"| {statistics.median(rps) / plain:.0%} | {ngx.test * 1000:.0f} ms "
                  f"| {reload * 1000:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
