#!/usr/bin/env python3
"""Cost per ban of `floodwatch watch` (not a test): a botnet-sized flood against one log, then a
restart with its bans, measured from outside the process.

    python3 benches/ban-cost.py target/release/floodwatch [ADDRS_PER_S] [SECONDS]
        [--sink none|nginx-deny|nginx-geo|cloudflare] [--no-control] [--keep]

Every second ADDRS_PER_S (default 10,000) new addresses each send 12 requests, at once, within
that second; the rule is 5r/s burst 10, banning for an hour, so each address is banned once:
ADDRS_PER_S × SECONDS (default 20) bans. watch runs with a `[state] dir` and, unless `--sink`
names one, no sink (events to stdout, read and counted here).

Printed:
- peak RSS during the attack (VmHWM), RSS at rest (after the last save), the state on disk;
- CPU (user+sys) of the attack, and per ban: the attack's CPU less that of a control run of the
  same lines under a rule that bans nothing (`--no-control` skips it), divided by the bans;
- `floodwatch bans` (the running watch's table through its control socket) wall and CPU;
- a restart (SIGTERM, start again on the same state dir): ready (spawn to the "watching" log
  line), restored bans, peak RSS after it settled;
- a restart after SIGKILL, the same figures (the state as the last save left it).
With `--sink`, the sink's own cost is in the figures: nginx styles write a file (test and reload
commands are `true`, at most one write a second), cloudflare posts to a local fake of the API that accepts everything.
"""
import argparse, http.server, json, os, re, shutil, signal, subprocess, sys, tempfile, threading
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("binary")
ap.add_argument("addrs", nargs="?", type=int, default=10_000, help="new addresses per second")
ap.add_argument("seconds", nargs="?", type=int, default=20)
ap.add_argument("--sink", choices=["none", "nginx-deny", "nginx-geo", "cloudflare"], default="none")
ap.add_argument("--no-control", action="store_true", help="skip the run that bans nothing")
ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
args = ap.parse_args()
binary = os.path.abspath(args.binary)
PER_ADDR = 12
tick_s = os.sysconf("SC_CLK_TCK")


def addr(n):
    """The n-th attacker, in 100.64.0.0/10 and up (distinct for n < 2^22 × 4)."""
    n += 1 << 22
    return f"{100 + (n >> 24)}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def second_of_lines(sec, t0):
    """The lines of attack second `sec`, in PER_ADDR chunks to write 1/PER_ADDR s apart: each
    address fires its 12 requests at once (a millisecond apart) at its own moment of the
    second."""
    base = args.addrs * sec
    per_chunk = -(-args.addrs // PER_ADDR)
    out = []
    for c in range(PER_ADDR):
        lines = []
        for i in range(c * per_chunk, min(args.addrs, (c + 1) * per_chunk)):
            a = addr(base + i)
            t = t0 + sec + i / args.addrs
            lines.extend(f"{t + r / 1000:.3f} {a} \"GET /login HTTP/1.1\" 200\n"
                         for r in range(PER_ADDR))
        out.append("".join(lines))
    return out


class FakeCloudflare(http.server.BaseHTTPRequestHandler):
    """Accepts every rule: enough of the API for the sink to deliver."""
    n = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        FakeCloudflare.n += 1
        items = json.loads(body) if body[:1] == b"[" else [json.loads(body)]
        result = [{"id": f"r{FakeCloudflare.n}-{i}"} for i in range(len(items))]
        self.reply({"success": True, "result": result if body[:1] == b"[" else result[0]})

    def do_GET(self):
        self.reply({"success": True, "result": [], "result_info": {"page": 1, "total_pages": 1}})

    def do_DELETE(self):
        self.reply({"success": True, "result": {}})

    def reply(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def config(root, rate, burst):
    state = os.path.join(root, "state")
    lines = [
        '[input]\nformat = "nginx:\'$msec $remote_addr \\"$request\\" $status\'"\n',
        f'[[rule]]\nname = "flood"\nrate = "{rate}"\nburst = {burst}\nban = "1h"\n',
        f'[state]\ndir = "{state}"\n',
    ]
    if args.sink.startswith("nginx"):
        style = args.sink.split("-")[1]
        lines.append(f'[[sink]]\ntype = "nginx"\npath = "{root}/deny.conf"\nstyle = "{style}"\n'
                     'reload_command = ["true"]\ntest_command = ["true"]\nmin_reload_interval = "1s"\n')
    elif args.sink == "cloudflare":
        os.environ["FW_BENCH_CF_TOKEN"] = "x"
        lines.append(f'[[sink]]\ntype = "cloudflare"\napi_token_env = "FW_BENCH_CF_TOKEN"\n'
                     f'zone_id = "z"\napi_base = "http://127.0.0.1:{cf_port}/client/v4"\n')
    conf = os.path.join(root, "c.toml")
    with open(conf, "w") as f:
        f.write("".join(lines))
    return conf, state


def stat(pid):
    """(CPU seconds, RSS MB, peak RSS MB) of a live process."""
    with open(f"/proc/{pid}/stat") as s:
        st = s.read().split(")")[1].split()
    cpu = (int(st[11]) + int(st[12])) / tick_s
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as s:
        for line in s:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, rss, hwm


class Watch:
    def __init__(self, conf, log):
        self.started = time.time()
        self.proc = subprocess.Popen([binary, "watch", "--config", conf, log],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.bans = 0
        self.stderr = []
        self.ready = threading.Event()
        self.ready_at = None
        threading.Thread(target=self.count, daemon=True).start()
        threading.Thread(target=self.log, daemon=True).start()

    def count(self):
        for line in self.proc.stdout:
            if line.startswith(b'{"type":"ban"'):
                self.bans += 1

    def log(self):
        for line in self.proc.stderr:
            line = line.decode(errors="replace")
            self.stderr.append(line)
            if "watching" in line and not self.ready.is_set():
                self.ready_at = time.time()
                self.ready.set()

    def restored(self):
        for line in self.stderr:
            m = re.search(r"\((\d+) bans restored\)", line)
            if m:
                return int(m.group(1))
        return None

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        if sig == signal.SIGTERM and code != 0:
            sys.exit(f"watch exited {code}: {''.join(self.stderr[-20:])}")


def settle(w, dirs, quiet=2.0, limit=120):
    """Waits until the state folder has not changed for `quiet` seconds (the saves are done)."""
    last, since = None, time.time()
    end = time.time() + limit
    while time.time() < end:
        sig = []
        for d in dirs:
            for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                p = os.path.join(d, name)
                try:
                    s = os.stat(p)
                    sig.append((name, s.st_size, s.st_mtime_ns))
                except FileNotFoundError:
                    pass
        if sig != last:
            last, since = sig, time.time()
        elif time.time() - since >= quiet:
            return
        time.sleep(0.2)


def disk(state):
    return sum(os.path.getsize(os.path.join(state, n)) for n in os.listdir(state)
               if n != "control.sock" and os.path.isfile(os.path.join(state, n)))


def attack(root, rate, burst, measure):
    """Writes the flood against a fresh watch; returns the figures."""
    os.makedirs(root, exist_ok=True)
    conf, state = config(root, rate, burst)
    log = os.path.join(root, "access_log")
    open(log, "w").close()
    w = Watch(conf, log)
    if not w.ready.wait(30):
        sys.exit("watch did not start: " + "".join(w.stderr))
    f = open(log, "a")
    peak_seen = 0.0
    t0 = int(time.time())
    start = time.time()
    for sec in range(args.seconds):
        chunks = second_of_lines(sec, t0)
        for i, chunk in enumerate(chunks):
            due = start + sec + i / PER_ADDR
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            f.write(chunk)
            f.flush()
        peak_seen = max(peak_seen, stat(w.proc.pid)[2])
    f.close()
    behind = time.time() - (start + args.seconds)
    # With a sink, events do not reach stdout: the settled state folder says the bans are in.
    expected = args.addrs * args.seconds if measure and args.sink == "none" else 0
    end = time.time() + 60
    while w.bans < expected and time.time() < end:
        time.sleep(0.1)
    cpu_attack, _, hwm_attack = stat(w.proc.pid)
    settle(w, [state, root])
    cpu_rest, rss_rest, hwm = stat(w.proc.pid)
    out = {"bans": w.bans, "cpu_attack": cpu_attack, "peak_attack": hwm_attack,
           "rss_rest": rss_rest, "peak_rest": hwm, "cpu_rest": cpu_rest, "behind": behind}
    if not measure:
        w.stop()
        return out
    out["disk"] = disk(state)
    deny = os.path.join(root, "deny.conf")
    if os.path.exists(deny):
        with open(deny) as d:
            out["sink_file"] = (sum(1 for line in d if "." in line or ":" in line), os.path.getsize(deny))
    files = {n: os.path.getsize(os.path.join(state, n)) for n in os.listdir(state)
             if os.path.isfile(os.path.join(state, n))}
    out["files"] = files
    # `floodwatch bans`, as an admin runs it.
    t = time.time()
    r0 = os.times()
    p = subprocess.run([binary, "bans", "--config", conf], capture_output=True)
    r1 = os.times()
    out["bans_wall"] = time.time() - t
    out["bans_cpu"] = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    listed = p.stdout.count(b"\n") - 2 if p.returncode == 0 else -1
    out["bans_listed"] = listed
    if p.returncode != 0:
        print("bans failed:", p.stderr.decode(errors="replace"), file=sys.stderr)
    out["cpu_bans_cmd_in_watch"] = stat(w.proc.pid)[0] - cpu_rest
    w.stop()
    for kind, sig in (("term", None), ("kill", signal.SIGKILL)):
        r = Watch(conf, log)
        if not r.ready.wait(120):
            sys.exit("restarted watch did not start: " + "".join(r.stderr))
        ready = r.ready_at - r.started
        time.sleep(3)
        cpu, rss, hwm = stat(r.proc.pid)
        out[f"restart_{kind}"] = {"ready": ready, "restored": r.restored(), "peak": hwm,
                                  "rss": rss, "cpu": cpu}
        if sig is None:
            r.stop()
        else:
            # One save after the start is done by now (the state is as at its last save).
            r.stop(sig)
    return out


if args.sink == "cloudflare":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeCloudflare)
    cf_port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

root = tempfile.mkdtemp(prefix="fw-bancost-")
try:
    bans = args.addrs * args.seconds
    print(f"{args.addrs} new addresses/s × {PER_ADDR} requests, {args.seconds} s, "
          f"rule 5r/s burst 10, sink {args.sink}: {bans} bans expected", flush=True)
    ctl = None
    if not args.no_control:
        ctl = attack(os.path.join(root, "control"), "1000r/s", 1000, False)
    r = attack(os.path.join(root, "run"), "5r/s", 10, True)
finally:
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)

mb = lambda x: f"{x:.0f} MB"
if args.sink == "none":
    print(f"bans announced        {r['bans']} (writer {r['behind']:+.2f} s behind schedule at the end)")
else:
    print(f"bans listed           {r['bans_listed']} (writer {r['behind']:+.2f} s behind schedule at the end)")
if "sink_file" in r:
    print(f"nginx file            {r['sink_file'][0]} entries, {r['sink_file'][1] / 1e6:.1f} MB")
print(f"peak RSS, attack      {mb(r['peak_attack'])}")
print(f"RSS at rest           {mb(r['rss_rest'])} (peak by then {mb(r['peak_rest'])})")
print(f"state on disk         {r['disk'] / 1e6:.1f} MB {r['files']}")
print(f"CPU, attack           {r['cpu_attack']:.2f} s (user+sys), "
      f"{r['cpu_rest']:.2f} s once settled")
if ctl:
    per = (r["cpu_rest"] - ctl["cpu_rest"]) / max(1, r["bans"], r["bans_listed"]) * 1e6
    print(f"CPU, control run      {ctl['cpu_rest']:.2f} s (same lines, no ban; "
          f"peak RSS {mb(ctl['peak_rest'])})")
    print(f"CPU per ban           {per:.1f} µs (attack - control, once settled, / bans)")
print(f"`bans` of {r['bans_listed']}      {r['bans_wall']:.2f} s wall, client CPU "
      f"{r['bans_cpu']:.2f} s, watch CPU {r['cpu_bans_cmd_in_watch']:.2f} s")
for kind in ("term", "kill"):
    x = r[f"restart_{kind}"]
    print(f"restart after SIG{kind.upper():4}  ready {x['ready']:.2f} s, {x['restored']} bans restored, "
          f"peak RSS {mb(x['peak'])}, RSS {mb(x['rss'])}, CPU {x['cpu']:.2f} s")
