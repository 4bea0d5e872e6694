#!/usr/bin/env python3
"""Load benchmark of `floodwatch watch` (not a test): writes RATE lines/s of background traffic
spread over FILES logs, and every 200 ms a flood from a new address to one of them; prints how
far behind the writes the ban events came (write of the flood's last line to the event on
stdout), and watch's CPU time.

    python3 benches/watch-load.py target/release/floodwatch [RATE] [FILES] [SECONDS]
        [--rotate SECONDS [--rotate-mode both|rename|copytruncate] [--rotate-files N]]
        [--restart SECONDS] [--state] [--top SECONDS]

The format logs `$msec`, so that the engine sees millisecond times: with one-second `%t` stamps a
ban waits for the next second (see docs/design.md, "Time").

`--top S` polls watch as `floodwatch top` does, one `top` request every S seconds on the
control socket, while the load runs (and prints how long the answers took); `--state` gives
watch the `[state] dir` (and control socket) that `--top` needs without polling, the baseline of
a paired comparison.

Soak options (without them the run and its two output lines are as they always were):

- `--rotate S`: every S seconds, N files (default 4) are rotated while writing goes on, the kinds
  alternating from one rotation to the next (`--rotate-mode` picks one kind only):
  *rename* as logrotate does it (`access_log.1` → `access_log.2`, `access_log` →
  `access_log.1`; the writer goes on writing to
  its old handle for `--late` seconds, like a server not reopened yet, then opens a new
  `access_log`), and *copytruncate* (copy to `access_log.1`, then truncate in place while the
  writer appends with O_APPEND: the lines of one write land between the copy and the
  truncation, as a busy server's would).
- `--restart S`: every S seconds, watch is stopped with SIGTERM and started again with the same
  `[state] dir`, while the writers go on.

At the end watch is stopped with SIGTERM and the lines it read (the `watched N files: L lines`
report at each stop, summed over the restarts) are compared with the lines written; every flood
must be banned exactly once (with `[state] dir`, a restart does not announce restored bans
again). Copytruncate loses lines for any tailer of a path, and they are reported apart, as a bound (watch
reports totals only, so which lines it read is not known):
- lines written between the copy and the truncation are in neither file: lost unless watch read
  them in between;
- lines written after watch's last read of the file and before the copy are only in the copy,
  which is not followed: at most those written in the last `--window` seconds before the copy,
  or since watch's stop if it is being restarted.
With copytruncate, `written - read` must lie between 0 and the sum of the two.
Rename rotation and restarts must lose and repeat nothing: `read - written` must be 0 without
copytruncate. (A repeat and a loss would cancel in that sum: floods are the per-line check, each
banned exactly once, and the model test `tests/tail_model.rs` checks lines one by one.)
"""
import argparse, os, random, re, shutil, signal, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("binary")
ap.add_argument("rate", nargs="?", type=int, default=200_000)
ap.add_argument("files", nargs="?", type=int, default=100)
ap.add_argument("seconds", nargs="?", type=float, default=20)
ap.add_argument("--rotate", type=float, metavar="SECONDS", help="rotate some files every SECONDS")
ap.add_argument("--rotate-mode", choices=["both", "rename", "copytruncate"], default="both")
ap.add_argument("--rotate-files", type=int, default=4, metavar="N", help="files per rotation")
ap.add_argument("--late", type=float, default=0.3, metavar="SECONDS",
                help="how long the writer keeps its old handle after a rename rotation")
ap.add_argument("--window", type=float, default=0.05, metavar="SECONDS",
                help="copytruncate bound: how far before a copy watch may not have read yet")
ap.add_argument("--restart", type=float, metavar="SECONDS", help="restart watch every SECONDS")
ap.add_argument("--top", type=float, metavar="SECONDS",
                help="poll `floodwatch top --json` every SECONDS while the load runs")
ap.add_argument("--state", action="store_true", help="give watch a [state] dir (and control socket)")
ap.add_argument("--pool", type=int, default=1 << 24, metavar="N",
                help="background addresses drawn from N (default 2^24: nearly every line a new key)")
args = ap.parse_args()
binary, rate, nfiles, seconds = args.binary, args.rate, args.files, args.seconds
soak = bool(args.rotate or args.restart)

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
    if args.restart or args.top or args.state:
        f.write(f'[state]\ndir = "{root}/state"\n')

tick_s = os.sysconf("SC_CLK_TCK")
REPORT = re.compile(r"watched (\d+) files: (\d+) lines")


STAMP = "import sys, time\nfor line in sys.stdin:\n    sys.stdout.write(f'{time.time()} {line}')\n"


class Watch:
    """One `floodwatch watch` process after another: ban events and stop reports of all."""

    def __init__(self):
        self.bans = {}  # key -> [times of its ban events]
        self.read = 0
        self.cpu = 0.0
        self.runs = 0
        self.down = []  # (SIGTERM sent, next process said "watching")
        self.errors = []
        self.is_down = False

    def start(self, wait=True):
        self.proc = subprocess.Popen(
            [binary, "watch", "--config", conf, os.path.join(root, "vhosts/*/logs/access_log")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Events are timed as they arrive by a process of their own: a thread of this one
        # would wait for the writer loop to let go of Python's GIL (up to a writer tick).
        self.stamper = subprocess.Popen(
            [sys.executable, "-u", "-c", STAMP], stdin=self.proc.stdout,
            stdout=subprocess.PIPE, text=True)
        self.proc.stdout.close()
        self.runs += 1
        self.stderr = []
        first = self.proc.stderr.readline()  # "watching N files"
        self.stderr.append(first)
        out = threading.Thread(target=self.events, args=(self.stamper,), daemon=True)
        err = threading.Thread(target=self.log, args=(self.proc, self.stderr), daemon=True)
        out.start()
        err.start()
        self.threads = (out, err)

    def events(self, stamper):
        for stamped in stamper.stdout:
            t, line = stamped.split(" ", 1)
            t = float(t)
            if '"type":"ban"' in line:
                key = line.split('"key":"')[1].split('"')[0]
                self.bans.setdefault(key, []).append(t)

    def log(self, proc, lines):
        for line in proc.stderr:
            lines.append(line)

    def stop(self):
        with open(f"/proc/{self.proc.pid}/stat") as s:
            st = s.read().split(")")[1].split()
        self.cpu += (int(st[11]) + int(st[12])) / tick_s
        self.proc.terminate()
        code = self.proc.wait()
        self.stamper.wait()
        for t in self.threads:
            t.join()
        reports = [m for m in map(REPORT.search, self.stderr) if m]
        if code != 0 or len(reports) != 1:
            self.errors.append(f"run {self.runs}: exit {code}, stderr: {''.join(self.stderr)}")
        self.read += sum(int(m.group(2)) for m in reports)
        for line in self.stderr:
            if "warning" in line or "error" in line:
                self.errors.append(line.strip())

    def restart(self):
        t = time.time()
        for i in range(nfiles):
            down_lines[i] = 0
        self.is_down = True
        self.stop()
        self.start()
        self.is_down = False
        self.down.append((t, time.time()))


watch = Watch()
watch.start()
files = [open(p, "a", buffering=1 << 20) for p in paths]
written = {}
tick = 0.01
per_tick = max(1, int(rate * tick))
start = time.time()
next_flood = start + 0.5
n_flood = 0
lines = 0

# Rotation state: per file, the writer's old handle after a rename and when it lets it go.
old = {}
rotations = {"rename": 0, "copytruncate": 0}
ct_window_lost = 0  # written between a copy and its truncation: in neither file
ct_bound = 0  # lines written to a file in the last `--window` s before its copy
recent = [[] for _ in range(nfiles)]  # per file: (time, lines) of its recent writes
down_lines = [0] * nfiles  # per file: lines written since the current restart began
n_rotation = 0
next_rotate = start + args.rotate if args.rotate else float("inf")
next_set = random.sample(range(nfiles), min(args.rotate_files, nfiles)) if args.rotate else []
done = threading.Event()


def restarter():
    while not done.wait(args.restart):
        watch.restart()


restarts = threading.Thread(target=restarter, daemon=True)
if args.restart:
    restarts.start()

top_ms, top_failed = [], 0


def poller():
    """`floodwatch top` as an admin leaves it open: the request it sends, a frame every --top
    seconds, each on a connection of its own as the client makes them."""
    global top_failed
    import socket
    while not done.wait(args.top):
        t = time.time()
        try:
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(30)
            c.connect(f"{root}/state/control.sock")
            c.sendall(b'{"command":"top","limit":50}\n')
            answer = b""
            while chunk := c.recv(1 << 16):
                answer += chunk
            c.close()
            ok = b'"ok":true' in answer
        except OSError:
            ok = False
        if ok:
            top_ms.append((time.time() - t) * 1000)
        else:
            top_failed += 1


polls = threading.Thread(target=poller, daemon=True)
if args.top:
    polls.start()


def background(n):
    """The n-th address of the background pool, in 10.0.0.0/8."""
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def put(i, text, n):
    files[i].write(text)
    files[i].flush()
    if args.rotate:
        recent[i].append((time.time(), n))
    if watch.is_down:
        down_lines[i] += n


def rotate(i, kind, pending):
    """Rotates file i; `pending` is this tick's lines for it (written in the copytruncate race)."""
    global ct_window_lost, ct_bound
    p = paths[i]
    # As logrotate shifts older copies (`rotate 2`): a rotated file is never written again in
    # place (copying over a kept `access_log.1` would rewrite a file watch may still be reading).
    if os.path.exists(p + ".1"):
        os.rename(p + ".1", p + ".2")
    if kind == "rename":
        os.rename(p, p + ".1")
        old[i] = time.time() + args.late  # `files[i]` is now the old handle
        return False
    # copytruncate: what was written in the last `--window` seconds may not be read yet.
    now = time.time()
    ct_bound += sum(n for t, n in recent[i] if now - t <= args.window)
    if watch.is_down:  # and everything written since watch's last read at its stop
        ct_bound += down_lines[i]
    shutil.copyfile(p, p + ".1")
    if pending:
        files[i].write(pending[0])
        files[i].flush()
        ct_window_lost += pending[1]
    os.truncate(p, 0)
    return bool(pending)


while time.time() - start < seconds:
    t0 = time.time()
    ms = f"{t0:.3f}"
    # A server reopens its log some time after a rename rotation.
    for i, until in list(old.items()):
        if t0 >= until:
            files[i].close()
            files[i] = open(paths[i], "a", buffering=1 << 20)
            del old[i]
    # Background: addresses from a large pool, each far below the rule's rate.
    batch = [f"{ms} {background(random.randrange(args.pool))} \"GET / HTTP/1.1\" 200\n"
             for _ in range(per_tick)]
    k = len(batch) // nfiles or 1
    rotating = {}
    if t0 >= next_rotate:
        kind = args.rotate_mode
        if kind == "both":
            kind = ("rename", "copytruncate")[n_rotation % 2]
        n_rotation += 1
        rotating = {i: kind for i in next_set if i not in old}
        free = [i for i in range(nfiles) if i not in next_set]
        next_set = random.sample(free, min(args.rotate_files, len(free)))
        next_rotate += args.rotate
    for i, f in enumerate(files):
        chunk = batch[i * k:(i + 1) * k]
        if i in rotating:
            kind = rotating[i]
            rotations[kind] += 1
            if rotate(i, kind, ("".join(chunk), len(chunk)) if chunk else None):
                lines += len(chunk)
                continue
        if chunk:
            put(i, "".join(chunk), len(chunk))
            lines += len(chunk) if soak else 0
    lines += 0 if soak else per_tick
    if args.rotate:
        for r in recent:
            while r and t0 - r[0][0] > args.window:
                r.pop(0)
    if t0 >= next_flood:
        n_flood += 1
        ip = f"203.0.{n_flood // 250}.{n_flood % 250 + 1}"
        # Not into a file about to be copied and truncated: its flood could be in the copy only.
        i = random.choice([j for j in range(nfiles) if j not in next_set])
        put(i, "".join(f"{time.time():.3f} {ip} \"GET /login HTTP/1.1\" 200\n" for _ in range(12)), 12)
        written[ip] = time.time()
        lines += 12 if soak else 0
        next_flood += 0.2
    left = tick - (time.time() - t0)
    if left > 0:
        time.sleep(left)
elapsed = time.time() - start
done.set()
if args.restart:
    restarts.join()
if args.top:
    polls.join()
for f in files:
    f.flush()
time.sleep(1.5)
cpu_before = watch.cpu
watch.stop()
cpu = watch.cpu
seen = {k: v[0] for k, v in watch.bans.items()}
lat = sorted((seen[ip] - t) * 1000 for ip, t in written.items() if ip in seen)
missed = len(written) - len(lat)
def pct(p, lat=lat):
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"{lines} lines in {elapsed:.1f} s ({lines / elapsed:.0f}/s) over {nfiles} files; "
      f"watch CPU {cpu:.1f} s ({100 * cpu / elapsed:.0f} % of a core)")
print(f"{len(written)} floods, {missed} not banned; write-to-ban ms: p50 {pct(0.5):.1f} "
      f"p90 {pct(0.9):.1f} p99 {pct(0.99):.1f} max {pct(1.0):.1f}")
if args.top:
    top_ms.sort()
    print(f"top: {len(top_ms)} frames, {top_failed} failed; answer ms: p50 {pct(0.5, top_ms):.1f} "
          f"max {pct(1.0, top_ms):.1f}")
if not soak:
    sys.exit(0)

# The soak's account.
twice = sorted(k for k, v in watch.bans.items() if len(v) > 1)
stray = sorted(k for k in watch.bans if k not in written)
def down(t):  # just before a SIGTERM, or while starting and reading the backlog of the stop
    return any(a - 0.5 <= t <= b + 1.0 for a, b in watch.down)
up_lat = sorted((seen[ip] - t) * 1000 for ip, t in written.items() if ip in seen and not down(t))
print(f"soak: {watch.runs} watch runs ({len(watch.down)} restarts, down "
      f"{sum(b - a for a, b in watch.down) * 1000:.0f} ms in all); rotations: "
      f"{rotations['rename']} rename, {rotations['copytruncate']} copytruncate")
print(f"lines: written {lines}, read {watch.read}, read - written {watch.read - lines}")
if rotations["copytruncate"]:
    print(f"copytruncate: {lines - watch.read} lines lost; at most {ct_window_lost} written between "
          f"a copy and its truncation (in neither file) + {ct_bound} written in the last "
          f"{args.window * 1000:.0f} ms before a copy (only in the copy)")
print(f"bans: {sum(map(len, watch.bans.values()))} events for {len(watch.bans)} keys; "
      f"{missed} floods not banned, {len(twice)} banned twice, {len(stray)} keys not a flood")
if watch.down:
    print(f"floods written away from restarts (not from 0.5 s before to 1 s after one; "
          f"{len(up_lat)}): write-to-ban ms p50 "
          f"{pct(0.5, up_lat):.1f} p99 {pct(0.99, up_lat):.1f} max {pct(1.0, up_lat):.1f}")
for e in watch.errors[:10]:
    print(f"watch said: {e}")
if rotations["copytruncate"]:
    ok = 0 <= lines - watch.read <= ct_window_lost + ct_bound
else:
    ok = watch.read == lines
ok = ok and missed == 0 and not twice and not stray
print("soak:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
