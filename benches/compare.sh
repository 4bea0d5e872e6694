#!/usr/bin/env bash
# One-run comparison on the same generated log: `wc -l` (the floor: reading the bytes),
# floodwatch replay, fail2ban-regex with a Plesk-style http-flood filter, and CrowdSec's
# time-machine mode on the log's first lines when it is installed and CROWDSEC=1 (see
# docs/benchmarks.md, "Comparison").
#
#   benches/compare.sh [LINES] [WORKDIR]      # defaults: 1000000, a fresh temp directory
#
# Builds floodwatch in release mode if needed, installs Debian's fail2ban if missing (needs
# root), and prints a Markdown table on stdout (progress on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${1:-1000000}
WORK=${2:-$(mktemp -d /tmp/floodwatch-compare.XXXXXX)}
mkdir -p "$WORK"
LOG="$WORK/access_log"
FW=target/release/floodwatch

say() { echo "compare: $*" >&2; }

[ -x "$FW" ] || { say "building floodwatch (release)"; cargo build --release >&2; }
if ! command -v fail2ban-regex >/dev/null; then
    say "installing fail2ban (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y fail2ban >&2
fi
if [ ! -s "$LOG" ]; then
    say "writing $LINES lines to $LOG"
    python3 benches/make-bench-log.py "$LOG" "$LINES"
fi
BYTES=$(stat -c %s "$LOG")
LINES=$(wc -l < "$LOG")

# The filter of a typical Plesk http-flood jail: every GET or POST line is a "failure"; the
# jail's findtime/maxretry then turn counts into bans (fail2ban-regex only matches).
cat > "$WORK/plesk-http-flood.conf" <<'CONF'
[Definition]
failregex = ^<HOST> -.*"(GET|POST).*
ignoreregex =
CONF

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
ROWS=()
row() { # name seconds result
    ROWS+=("$(awk -v n="$1" -v s="$2" -v l="$LINES" -v b="$BYTES" -v r="$3" \
        'function th(x,  s, o) { s = sprintf("%.0f", x); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } return s o }
         BEGIN { printf "| %s | %.2f | %s | %.1f | %s |", n, s, th(l / s), b / s / 1e6, r }')")
}

# The sub-second runs are repeated and the best time kept: on a shared machine one run can
# catch someone else's compile.
best() { # command...: runs it three times, prints the shortest wall time
    local b="" t0 t1 s
    for _ in 1 2 3; do
        t0=$(now); "$@"; t1=$(now)
        s=$(elapsed "$t0" "$t1")
        b=$(awk -v a="$s" -v b="${b:-$s}" 'BEGIN { print (a < b) ? a : b }')
    done
    echo "$b"
}
count_lines() { wc -l "$LOG" >/dev/null; }
replay() { "$FW" replay --no-progress "$LOG" > "$WORK/floodwatch-events.jsonl" 2> "$WORK/floodwatch-summary.txt"; }

say "wc -l"
row "\`wc -l\` (floor, best of 3)" "$(best count_lines)" "counts lines"

say "floodwatch replay"
T=$(best replay)
BANS=$(grep -c '"type":"ban"' "$WORK/floodwatch-events.jsonl" || true)
row "floodwatch replay (20r/s burst 100, best of 3)" "$T" "$BANS bans"

say "fail2ban-regex"
t0=$(now)
fail2ban-regex "$LOG" "$WORK/plesk-http-flood.conf" > "$WORK/fail2ban-regex.txt" 2>&1
t1=$(now)
MATCHED=$(grep -oE '^Lines: [0-9]+ lines, [0-9]+ ignored, [0-9]+ matched' "$WORK/fail2ban-regex.txt" \
    | awk '{print $6}')
F2B_VERSION=$(fail2ban-regex --version 2>/dev/null | head -1)
row "fail2ban-regex ($F2B_VERSION, Plesk http-flood filter)" "$(elapsed "$t0" "$t1")" \
    "${MATCHED:-?} lines matched (no bans: counting is the jail's job)"

if [ "${CROWDSEC:-0}" = 1 ] && command -v crowdsec >/dev/null; then
    # CrowdSec's time-machine mode replays a file through its parsers and scenarios. It reads a
    # few hundred lines per second here, so it gets the log's first CROWDSEC_LINES lines. It runs
    # on a private copy of the config and database, with its local API on port 18089; it keeps
    # that API up after the file, so the time taken is until its buckets are done, and the
    # process is then stopped.
    CS="$WORK/crowdsec"
    CS_LINES=${CROWDSEC_LINES:-20000}
    mkdir -p "$CS"
    head -n "$CS_LINES" "$LOG" > "$CS/access_log"
    CS_BYTES=$(stat -c %s "$CS/access_log")
    cp /var/lib/crowdsec/data/crowdsec.db "$CS/db.sqlite"
    sed -e "s|db_path: .*|db_path: $CS/db.sqlite|" -e 's|listen_uri: .*|listen_uri: 127.0.0.1:18089|' \
        -e "s|/etc/crowdsec/local_api_credentials.yaml|$CS/lapi.yaml|" \
        -e 's|log_media: file|log_media: stdout|' /etc/crowdsec/config.yaml > "$CS/config.yaml"
    sed 's|:8080|:18089|' /etc/crowdsec/local_api_credentials.yaml > "$CS/lapi.yaml"
    say "crowdsec time-machine on the first $CS_LINES lines"
    t0=$(now)
    crowdsec -c "$CS/config.yaml" -dsn "file://$CS/access_log" -type nginx -no-capi -info \
        > "$CS/run.log" 2>&1 &
    pid=$!
    deadline=$(( $(date +%s) + ${CROWDSEC_TIMEOUT:-900} ))
    while kill -0 "$pid" 2>/dev/null && ! grep -q "Bucket routine exiting" "$CS/run.log" \
        && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.2
    done
    t1=$(now)
    ALERTS=$(cscli -c "$CS/config.yaml" alerts list -o json 2>/dev/null \
        | python3 -c 'import json, sys; print(len(json.load(sys.stdin) or []))' 2>/dev/null || echo "?")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    CS_VERSION=$(crowdsec -version 2>&1 | grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' | head -1)
    LINES_ALL=$LINES BYTES_ALL=$BYTES
    LINES=$CS_LINES BYTES=$CS_BYTES
    row "crowdsec $CS_VERSION -dsn (time-machine), first $CS_LINES lines" "$(elapsed "$t0" "$t1")" \
        "$ALERTS alerts"
    LINES=$LINES_ALL BYTES=$BYTES_ALL
fi

echo "$LINES lines, $((BYTES / 1000000)) MB ($(nproc) CPUs, $(date -u +%Y-%m-%d)):"
echo
echo "| tool | seconds | lines/s | MB/s | result |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
say "outputs kept in $WORK"
