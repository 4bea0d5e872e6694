#!/usr/bin/env python3
"""Idle benchmark of `floodwatch watch` (not a test): VHOSTS Plesk-like vhost folders, each with
`access_log` and `access_ssl_log` holding one old line; reports start-up time to "watching", CPU
over SECONDS of idleness (utime + stime from /proc/PID/stat), RSS, descriptors, threads, and how
long SIGTERM takes to end the process.

    python3 benches/watch-idle.py target/release/floodwatch [VHOSTS] [SECONDS]
"""
import os, signal, subprocess, sys, tempfile, time

binary = sys.argv[1]
vhosts = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 120

root = tempfile.mkdtemp(prefix="fw-idle-")
line = '192.0.2.1 - - [25/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n'
for i in range(vhosts):
    d = os.path.join(root, "vhosts", f"site{i}.example", "logs")
    os.makedirs(d)
    for name in ("access_log", "access_ssl_log"):
        with open(os.path.join(d, name), "w") as f:
            f.write(line)
conf = os.path.join(root, "floodwatch.toml")
with open(conf, "w") as f:
    f.write(f'[state]\ndir = "{root}/state"\n')

tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

started = time.time()
proc = subprocess.Popen(
    [binary, "watch", "--config", conf, os.path.join(root, "vhosts/*/logs/access*_log")],
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
first = proc.stderr.readline().strip()
up_ms = (time.time() - started) * 1000
time.sleep(2)
a = cpu(proc.pid)
time.sleep(seconds)
b = cpu(proc.pid)
status = open(f"/proc/{proc.pid}/status").read()
rss = next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS"))
threads = next(l.split()[1] for l in status.splitlines() if l.startswith("Threads"))
fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
t = time.time()
proc.send_signal(signal.SIGTERM)
code = proc.wait()
stop_ms = (time.time() - t) * 1000
print(first)
print(f"{2 * vhosts} files: start-up {up_ms:.0f} ms; idle CPU {100 * (b - a) / seconds:.2f} % of a core "
      f"over {seconds:.0f} s; RSS {int(rss) / 1024:.1f} MB; {fds} descriptors; {threads} threads; "
      f"SIGTERM to exit {stop_ms:.0f} ms (exit {code})")
