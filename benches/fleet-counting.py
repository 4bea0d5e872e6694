#!/usr/bin/env python3
"""Benchmark of fleet-wide counting (`[[rule]] scope = "fleet"`; not a test), against a
redis-server of its own on loopback. Two parts:

    python3 benches/fleet-counting.py target/release/floodwatch load [RATE] [KEYS] [SECONDS] [ROUNDS]
    python3 benches/fleet-counting.py target/release/floodwatch latency [FLOODS]

- `load`: one server's cost. One watch reads RATE lines/s (default 200000) from KEYS clients
  (default 20000) over 20 logs for SECONDS (default 10), under a rule of 100r/s burst 200 that
  none of them comes near; run with `scope = "local"` and with `scope = "fleet"` in turn, ROUNDS
  pairs (default 3). Prints per run watch's CPU time (user+sys, from /proc) and lines read, and
  for the fleet runs the Redis commands and bytes per second it sent and received (from
  `floodwatch status --json`), and the ratio of CPU fleet/local pair by pair.
- `latency`: three servers (three watch processes, each its own logs and state) on one Redis,
  light background traffic, and FLOODS floods (default 40), one every 0.7 s, each from a new
  client at 45 r/s spread round-robin over the three servers' logs under `rate = "30r/s"`,
  `burst = 10` (each server alone sees 15 r/s). Prints, over the floods, the time from the
  request at which a replay of the merged logs overflows to the ban on each server (the event
  in its jsonl sink, which also takes the other servers' bans), p50 and p99, for the first
  server to ban and for the last.

Logs stamp `$msec`, so that the engine sees millisecond times.
"""
import json, os, signal, socket, subprocess, sys, tempfile, threading, time

binary = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "load"
rest = [float(a) for a in sys.argv[3:]]
tick_s = os.sysconf("SC_CLK_TCK")
FORMAT = '"nginx:\'$msec $remote_addr \\"$request\\" $status\'"'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis(root):
    port = free_port()
    d = os.path.join(root, "redis")
    os.makedirs(d, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as s:
        st = s.read().split(")")[1].split()
    return (int(st[11]) + int(st[12])) / tick_s


def status(conf):
    out = subprocess.run([binary, "status", "--json", "--config", conf], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def node(root, name, port, rule, logs, apply_jsonl=False):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    paths = []
    for i in range(logs):
        p = os.path.join(d, f"access_{i}.log")
        open(p, "w").close()
        paths.append(p)
    conf = os.path.join(d, "c.toml")
    events = os.path.join(d, "events.jsonl")
    with open(conf, "w") as f:
        f.write(f"[input]\nformat = {FORMAT}\npaths = {json.dumps(paths)}\n\n[[rule]]\n{rule}\n")
        f.write(f'[state]\ndir = "{d}/state"\n\n')
        f.write(f'[fleet]\nurl = "redis://127.0.0.1:{port}/0"\nnode = "{name}"\nstream = "bench"\n')
        if apply_jsonl:
            f.write('apply_to = ["jsonl"]\n')
        f.write(f'\n[[sink]]\ntype = "jsonl"\npath = "{events}"\n')
    return conf, paths, events


def start_watch(conf, log):
    proc = subprocess.Popen([binary, "watch", "--config", conf], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))
    for _ in range(200):
        if status(conf):
            return proc
        time.sleep(0.05)
    sys.exit(f"watch did not answer: {open(log).read()}")


def load():
    rate = int(rest[0]) if len(rest) > 0 else 200_000
    keys = int(rest[1]) if len(rest) > 1 else 20_000
    seconds = rest[2] if len(rest) > 2 else 10.0
    rounds = int(rest[3]) if len(rest) > 3 else 3
    nlogs = 20
    root = tempfile.mkdtemp(prefix="fw-fleetcount-")
    redis, port = start_redis(root)
    pool = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(keys)]
    results = {"local": [], "fleet": []}
    try:
        for r in range(rounds):
            for scope in ("local", "fleet"):
                rule = f'name = "api"\nrate = "100r/s"\nburst = 200\nscope = "{scope}"\n'
                conf, paths, _ = node(root, f"{scope}{r}", port, rule, nlogs)
                proc = start_watch(conf, os.path.join(root, f"{scope}{r}.log"))
                files = [open(p, "a", buffering=1 << 20) for p in paths]
                tick = 0.01
                per_tick = max(1, int(rate * tick))
                start = time.time()
                n = 0
                cpu0 = cpu_of(proc.pid)
                while time.time() - start < seconds:
                    now = time.time()
                    lines = [f'{now:.3f} {pool[(n + i) % keys]} "GET /a HTTP/1.1" 200\n' for i in range(per_tick)]
                    for i, f in enumerate(files):
                        f.write("".join(lines[i::nlogs]))
                        f.flush()
                    n += per_tick
                    target = start + (n / rate)
                    delay = target - time.time()
                    if delay > 0:
                        time.sleep(delay)
                wall = time.time() - start
                time.sleep(0.5)
                st = status(conf)
                cpu = cpu_of(proc.pid) - cpu0
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                c = st.get("fleet", {}).get("counting", {}) or {}
                row = {"lines": st.get("lines", 0), "written": n, "wall": wall, "cpu": cpu,
                       "commands": c.get("commands", 0) / wall, "out": c.get("bytes_out", 0) / wall,
                       "in": c.get("bytes_in", 0) / wall, "exchanges": c.get("exchanges", 0),
                       "mode": c.get("mode", "-")}
                results[scope].append(row)
                print(f"round {r} {scope:5}: {n / wall:,.0f} lines/s written, {row['lines']:,} read, "
                      f"cpu {cpu:.2f} s over {wall:.1f} s"
                      + (f"; {row['commands']:,.0f} commands/s, {row['out'] / 1e6:.2f} MB/s out, "
                         f"{row['in'] / 1e6:.2f} MB/s in, {row['exchanges']} exchanges, mode {row['mode']}"
                         if scope == "fleet" else ""), flush=True)
    finally:
        redis.terminate()
    ratios = sorted(f["cpu"] / l["cpu"] for l, f in zip(results["local"], results["fleet"]))
    mid = ratios[len(ratios) // 2]
    print(f"CPU fleet/local pair by pair: {', '.join(f'{x:.3f}' for x in ratios)} (median {mid:.3f})")


def latency():
    floods = int(rest[0]) if rest else 40
    root = tempfile.mkdtemp(prefix="fw-fleetlat-")
    redis, port = start_redis(root)
    rule = 'name = "spread"\nrate = "30r/s"\nburst = 10\nban = "10m"\nscope = "fleet"\n'
    nodes = [node(root, n, port, rule, 1, apply_jsonl=True) for n in ("a", "b", "c")]
    procs = [start_watch(conf, os.path.join(root, f"{i}.log")) for i, (conf, _, _) in enumerate(nodes)]
    for conf, _, _ in nodes:
        for _ in range(100):
            if status(conf).get("fleet", {}).get("counting", {}).get("mode") == "fleet":
                break
            time.sleep(0.05)
    seen = {}  # (node, key) -> time the ban event was read

    def follow(i, events):
        while not os.path.exists(events):
            time.sleep(0.01)
        with open(events) as f:
            while not done.is_set():
                line = f.readline()
                if not line:
                    time.sleep(0.002)
                    continue
                if '"type":"ban"' in line:
                    key = line.split('"key":"')[1].split('"')[0]
                    seen.setdefault((i, key), time.time())

    done = threading.Event()
    threads = [threading.Thread(target=follow, args=(i, ev), daemon=True) for i, (_, _, ev) in enumerate(nodes)]
    for t in threads:
        t.start()
    files = [open(paths[0], "a") for _, paths, _ in nodes]
    # A replay of the merged log at 45 r/s against 30r/s burst 10: excess grows by 1/3 of a
    # request per request after the first; it overflows at the request that takes it over 10.
    crossing_at = {}
    start = time.time()
    schedule = []  # (time, flood index, request index)
    for k in range(floods):
        t0 = start + 1 + 0.7 * k
        for j in range(60):
            schedule.append((t0 + j / 45, k, j))
    schedule.sort()
    bg = 0
    excess = {}
    last = {}
    for t, k, j in schedule:
        d = t - time.time()
        if d > 0:
            time.sleep(d)
        now = time.time()
        key = f"192.0.{2 + k // 250}.{k % 250 + 1}"
        files[j % 3].write(f'{now:.3f} {key} "GET / HTTP/1.1" 200\n')
        files[j % 3].flush()
        # nginx's arithmetic on the merged stream, to know when it overflows.
        e = excess.get(key, 0.0)
        if key in last:
            e = max(0.0, e - 30 * (now - last[key]) + 1)
        else:
            e = 0.0
        last[key] = now
        excess[key] = e
        if e > 10 and key not in crossing_at:
            crossing_at[key] = now
        if j % 9 == 0:
            bg += 1
            files[bg % 3].write(f'{now:.3f} 10.9.{bg >> 8 & 255}.{bg & 255} "GET / HTTP/1.1" 200\n')
            files[bg % 3].flush()
    time.sleep(3)
    done.set()
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait()
    redis.terminate()
    first, last_ = [], []
    missing = 0
    for key, c in crossing_at.items():
        ts = [seen.get((i, key)) for i in range(3)]
        if any(x is None for x in ts):
            missing += 1
            continue
        first.append(min(ts) - c)
        last_.append(max(ts) - c)

    def pct(v, q):
        v = sorted(v)
        return v[min(len(v) - 1, int(q * len(v)))] * 1000 if v else float("nan")

    print(f"{len(crossing_at)} floods crossed the limit, {missing} not banned on every server")
    print(f"crossing -> ban on the first server: p50 {pct(first, 0.5):.0f} ms, p99 {pct(first, 0.99):.0f} ms")
    print(f"crossing -> ban on every server:     p50 {pct(last_, 0.5):.0f} ms, p99 {pct(last_, 0.99):.0f} ms")


{"load": load, "latency": latency}[mode]()
