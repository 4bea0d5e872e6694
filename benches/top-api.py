#!/usr/bin/env python3
"""How fast watch answers `top` with many tracked keys (not a test): writes KEYS lines from as
many addresses (stamped now, a rule of 1r/m keeps each tracked for a minute), starts
`floodwatch watch` with the dashboard on, waits until the shards track them all, then asks
`/api/top` and the control socket's `top` ROUNDS times each and prints the answer times.

    python3 benches/top-api.py target/release/floodwatch [KEYS] [ROUNDS]

The first `/api/top` after a pause waits for a fresh sample of every shard (one pass over its
keys); the next ones, asked every second as `top` does, are answered from the sample the loop
keeps refreshing in the background: both are printed.
"""
import json, os, socket, subprocess, sys, tempfile, time

binary = sys.argv[1]
keys = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20

root = tempfile.mkdtemp(prefix="fw-top-")
os.makedirs(f"{root}/logs")
stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
with open(f"{root}/logs/a.access_log", "w") as f:
    for n in range(keys):
        f.write(f'10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255} - - [{stamp}] "GET / HTTP/1.1" 200 5 "-" "x"\n')
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
conf = f"{root}/c.toml"
with open(conf, "w") as f:
    f.write(f'[input]\npaths = ["{root}/logs/*.access_log"]\nstart_at = "beginning"\n'
            '[[rule]]\nname = "slow"\nrate = "1r/m"\nburst = 10\nban = "1h"\n'
            f'[state]\ndir = "{root}/state"\n[metrics]\nlisten = "127.0.0.1:{port}"\ndashboard = true\n')
watch = subprocess.Popen([binary, "watch", "--config", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def get(path):
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    t = time.perf_counter()
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while chunk := c.recv(1 << 16):
        data += chunk
    ms = (time.perf_counter() - t) * 1000
    c.close()
    return ms, data.split(b"\r\n\r\n", 1)[1]


def control():
    c = socket.socket(socket.AF_UNIX)
    c.connect(f"{root}/state/control.sock")
    t = time.perf_counter()
    c.sendall(b'{"command":"top"}\n')
    data = b""
    while chunk := c.recv(1 << 16):
        data += chunk
    return (time.perf_counter() - t) * 1000, json.loads(data)


try:
    deadline = time.time() + 120
    tracked = 0
    while time.time() < deadline:
        time.sleep(1)
        try:
            _, body = get("/api/top")
            tracked = json.loads(body)["keys_tracked"]
        except OSError:
            continue
        if tracked >= keys:
            break
    print(f"{tracked} keys tracked")
    for name, ask in (("/api/top", lambda: get("/api/top")[0]), ("control top", lambda: control()[0])):
        cold, warm = [], []
        for _ in range(5):
            # Nobody looked for longer than the interest lasts (10 s) and the sample's
            # staleness (3 s): the answer waits for a new one.
            time.sleep(14)
            cold.append(ask())
        for _ in range(rounds):
            time.sleep(1)  # as `top` polls: a sample refreshed in the background
            warm.append(ask())
        for label, xs in (("after a pause", cold), ("every second", warm)):
            xs.sort()
            print(f"{name} {label}: ms p50 {xs[len(xs) // 2]:.1f} max {xs[-1]:.1f} ({len(xs)} asks)")
finally:
    watch.terminate()
    watch.wait()
