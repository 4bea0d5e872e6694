#!/usr/bin/env python3
"""Replay beside `wc -l` (the floor: reading the bytes), wall time AND CPU time, on both kinds of
replay input (see docs/benchmarks.md, "Replay"):

    python3 benches/replay-vs-wc.py [FLOODWATCH] [--pairs N] [--lines N] [--dir DIR]

FLOODWATCH defaults to target/release/floodwatch; DIR (default /tmp/bench) receives the two logs,
written by benches/make-bench-log.py when missing: ordered.log (its default kind) and mixed.log
(--mixed: 20k clients, 10 % IPv6, fields at random). Each log is read once first (page cache
warm, not counted), then replay and `wc -l` run in turn, N pairs (default 11): a pair's two runs
meet the same machine load, so the ratio is taken pair by pair, and medians are printed. CPU is
user + system of the finished child (wait4's rusage), wall a monotonic clock around it; a wall
time below CPU / cores was not measured on this machine's cores. The load average before and
after is printed: on a shared machine, quote it with the figures.
"""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    """(wall s, cpu s, peak RSS MiB) of one run of argv, output thrown away."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("failed (%s): %s" % (status, " ".join(argv)))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def main():
    args = sys.argv[1:]
    opts = {"--pairs": "11", "--lines": "2000000", "--dir": "/tmp/bench"}
    rest = []
    while args:
        a = args.pop(0)
        if a in opts and args:
            opts[a] = args.pop(0)
        else:
            rest.append(a)
    fw = rest[0] if rest else os.path.join(ROOT, "target/release/floodwatch")
    pairs, lines, work = int(opts["--pairs"]), int(opts["--lines"]), opts["--dir"]
    os.makedirs(work, exist_ok=True)
    logs = []
    for name, extra in [("ordered", []), ("mixed", ["--mixed"])]:
        path = os.path.join(work, "%s.log" % name)
        if not os.path.exists(path) or sum(1 for _ in open(path, "rb")) != lines:
            subprocess.run([sys.executable, os.path.join(ROOT, "benches/make-bench-log.py"), path,
                            str(lines)] + extra, check=True)
        logs.append((name, path))
    print("cores %d, load average before %s" % (os.cpu_count(), " ".join(
        "%.2f" % x for x in os.getloadavg())), file=sys.stderr)
    print("| log | MB | replay wall | `wc -l` wall | wall ratio | replay CPU | `wc -l` CPU | "
          "CPU ratio | replay peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, path in logs:
        replay = [fw, "replay", "--no-progress", path]
        wc = ["wc", "-l", path]
        run(replay), run(wc)  # Page cache warm, binaries loaded.
        r, w = [], []
        for _ in range(pairs):
            r.append(run(replay))
            w.append(run(wc))
        med = lambda xs: statistics.median(xs)
        print("| %s | %.0f | %.3f s | %.3f s | **%.2f×** | %.3f s | %.3f s | **%.2f×** | %.0f MiB |" % (
            name, os.path.getsize(path) / 1e6,
            med([x[0] for x in r]), med([x[0] for x in w]),
            med([a[0] / b[0] for a, b in zip(r, w)]),
            med([x[1] for x in r]), med([x[1] for x in w]),
            med([a[1] / max(b[1], 1e-3) for a, b in zip(r, w)]),
            med([x[2] for x in r])))
        sys.stdout.flush()
    print("load average after %s; %d pairs per log, medians (ratios pair by pair)" % (
        " ".join("%.2f" % x for x in os.getloadavg()), pairs), file=sys.stderr)


main()
