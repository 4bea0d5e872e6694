#!/usr/bin/env python3
"""Load benchmark of `floodwatch watch` (not a test): writes RATE lines/s of background traffic
spread over FILES logs, and every 200 ms a flood from a new address to one of them; prints how
far behind the writes the ban events came (write of the flood's last line to the event on
stdout), and watch's CPU time.

    python3 benches/watch-load.py target/release/floodwatch [RATE] [FILES] [SECONDS]

The format logs `$msec`, so that the engine sees millisecond times: with one-second `%t` stamps a
ban waits for the next second (see README, Watch).
"""
import os, random, subprocess, sys, tempfile, threading, time

binary = sys.argv[1]
rate = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
nfiles = int(sys.argv[3]) if len(sys.argv) > 3 else 100
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20

root = tempfile.mkdtemp(prefix="fw-load-")
paths = []
for i in range(nfiles):
    d = os.path.join(root, "vhosts", f"site{i}.example", "logs")
    os.makedirs(d)
    p = os.path.join(d, "access_log")
    open(p, "w").close()
    paths.append(p)
conf = os.path.join(root, "c.toml")
with open(conf, "w") as f:
    f.write('[input]\nformat = "nginx:\'$msec $remote_addr \\"$request\\" $status\'"\n')
    f.write('[[rule]]\nname = "flood"\nrate = "20r/s"\nburst = 10\nban = "1h"\n')

proc = subprocess.Popen(
    [binary, "watch", "--config", conf, os.path.join(root, "vhosts/*/logs/access_log")],
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
proc.stderr.readline()  # "watching N files"
seen = {}

def reader():
    for line in proc.stdout:
        t = time.time()
        if '"type":"ban"' in line:
            key = line.split('"key":"')[1].split('"')[0]
            seen[key] = t

threading.Thread(target=reader, daemon=True).start()
files = [open(p, "a", buffering=1 << 20) for p in paths]
written = {}
tick = 0.01
per_tick = max(1, int(rate * tick))
start = time.time()
next_flood = start + 0.5
n_flood = 0
lines = 0
while time.time() - start < seconds:
    t0 = time.time()
    ms = f"{t0:.3f}"
    # Background: addresses from a large pool, each far below the rule's rate.
    batch = [f"{ms} 10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)} \"GET / HTTP/1.1\" 200\n"
             for _ in range(per_tick)]
    k = len(batch) // nfiles or 1
    for i, f in enumerate(files):
        chunk = batch[i * k:(i + 1) * k]
        if chunk:
            f.write("".join(chunk))
            f.flush()
    lines += per_tick
    if t0 >= next_flood:
        n_flood += 1
        ip = f"203.0.{n_flood // 250}.{n_flood % 250 + 1}"
        f = random.choice(files)
        f.write("".join(f"{time.time():.3f} {ip} \"GET /login HTTP/1.1\" 200\n" for _ in range(12)))
        f.flush()
        written[ip] = time.time()
        next_flood += 0.2
    left = tick - (time.time() - t0)
    if left > 0:
        time.sleep(left)
elapsed = time.time() - start
time.sleep(1.5)
with open(f"/proc/{proc.pid}/stat") as s:
    st = s.read().split(")")[1].split()
cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
proc.terminate()
proc.wait()
lat = sorted((seen[ip] - t) * 1000 for ip, t in written.items() if ip in seen)
missed = len(written) - len(lat)
def pct(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"{lines} lines in {elapsed:.1f} s ({lines / elapsed:.0f}/s) over {nfiles} files; "
      f"watch CPU {cpu:.1f} s ({100 * cpu / elapsed:.0f} % of a core)")
print(f"{len(written)} floods, {missed} not banned; write-to-ban ms: p50 {pct(0.5):.1f} "
      f"p90 {pct(0.9):.1f} p99 {pct(0.99):.1f} max {pct(1.0):.1f}")
