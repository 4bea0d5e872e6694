#!/usr/bin/env bash
# Checks the package under a real systemd: boots a Debian 12 (bookworm) with systemd-nspawn,
# installs floodwatch's .deb in it, enables the shipped config's nginx sink as an admin would, on
# a Plesk-like layout (nginx logging to /var/www/vhosts/<domain>/logs/ and
# /var/www/vhosts/system/<domain>/logs/), starts floodwatch.service with all its hardening, and
# requires that:
#   - the unit runs with its sandbox (ProtectSystem=strict, NoNewPrivileges) in force;
#   - a flood from 127.0.0.2 is refused by nginx (HTTP 403) within a few seconds, while a steady
#     client from 127.0.0.3 (2 requests a second) is always served;
#   - `floodwatch status` shows the nginx sink ok (not FAILING, no failure) once the ban is
#     enforced, `floodwatch bans` and the events log show the ban;
#   - `systemctl reload floodwatch` reloads the config, the unit stays active and the ban in force;
#   - `systemctl stop floodwatch` ends it cleanly (inactive, not failed) within its
#     TimeoutStopSec, after which `floodwatch status` exits non-zero.
# The Debian root is built once with debootstrap and cached in /var/cache/floodwatch-test/, keyed
# by what it holds; every run boots it with a fresh writable layer over it (--volatile=overlay),
# so no run sees what an earlier one left. Run by .ci/run as root on Debian (it installs
# debootstrap and systemd-container when missing). Where it cannot run (not root, no apt-get, a
# container that cannot start systemd-nspawn) it says so and exits 0, except under CI (CI set),
# where it fails instead: there it must run.
#
#   packaging/test-systemd.sh [DEB]   DEB: default the .deb of `packaging/build.sh --host`
#   FLOODWATCH_TEST_UNIT=FILE         test this unit file instead of the package's
set -euo pipefail
deb=${1:+$(realpath "$1")}
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=systemd,dbus,nginx,curl
# Bump when the preparation of the cached root below changes.
RECIPE=1
CACHE=/var/cache/floodwatch-test

say() { echo "test-systemd.sh: $*" >&2; }
skip() {
    if [ -n "${CI:-}" ]; then
        say "FAILED: cannot run here ($*), and under CI this test must run"
        exit 1
    fi
    say "skipped: $*"
    exit 0
}
started=$SECONDS
elapsed() { echo "$((SECONDS - started))s"; }

[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, debootstrap)"
[ "$(uname -s)" = Linux ] || skip "needs Linux"
if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null ||
    ! command -v nsenter >/dev/null; then
    command -v apt-get >/dev/null || skip "needs debootstrap and systemd-nspawn (no apt-get here)"
    say "installing debootstrap and systemd-container"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq debootstrap systemd-container util-linux >/dev/null
fi

if [ -z "$deb" ]; then
    bash packaging/build.sh --host
    deb=$(ls target/dist-host/floodwatch-host-debug_*_amd64.deb)
fi
[ -f "$deb" ] || { say "FAILED: no package $deb"; exit 1; }
unit=${FLOODWATCH_TEST_UNIT:-}

# ---- the cached Debian root -------------------------------------------------------------------
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$RECIPE" | sha256sum | cut -c1-12)
root=$CACHE/$SUITE-$key
mkdir -p "$CACHE"
# One build at a time; a run that waited finds the root ready.
exec 9>"$CACHE/.lock"
flock 9
if [ ! -e "$root/.complete" ]; then
    say "building the Debian $SUITE root in $root (debootstrap, once; about two minutes)"
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root.tmp" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || {
        tail -20 "$CACHE/debootstrap.log" >&2
        say "FAILED: debootstrap (log: $CACHE/debootstrap.log)"
        exit 1
    }
    # A quicker, quieter boot: no timers of a long-lived machine, no login prompt.
    for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer console-getty.service getty@tty1.service; do
        ln -sf /dev/null "$root.tmp/etc/systemd/system/$u"
    done
    echo floodwatch-test >"$root.tmp/etc/hostname"
    rm -f "$root.tmp"/var/cache/apt/archives/*.deb
    touch "$root.tmp/.complete"
    rm -rf "$root"
    mv "$root.tmp" "$root"
    # Roots of earlier package lists or recipes are not used any more.
    for old in "$CACHE/$SUITE"-*; do
        [ "$old" = "$root" ] || rm -rf "$old"
    done
    say "root ready after $(elapsed)"
fi
flock -u 9

# ---- boot -------------------------------------------------------------------------------------
work=$(mktemp -d /tmp/floodwatch-systemd.XXXXXX)
nspawn_pid=
init_pid=
passed=false

inside() {
    nsenter -t "$init_pid" -m -u -i -n -p -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
# The same in the background, its nsenter's pid added to $background (for stop_background).
background=()
inside_bg() {
    nsenter -t "$init_pid" -m -u -i -n -p -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@" &
    background+=($!)
    last_bg=$!
}
# nsenter runs the command as its child, inside the container's PID namespace: end both.
stop_background() {
    local p c
    for p in "$@"; do
        for c in $(cat "/proc/$p/task/"*/children 2>/dev/null); do
            kill "$c" 2>/dev/null || true
        done
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    return 0
}

cleanup() {
    local rc=$?
    set +e
    stop_background "${background[@]}"
    if ! $passed && [ -n "$init_pid" ] && [ -d "/proc/$init_pid" ]; then
        say "journal of floodwatch and nginx inside the container:"
        inside journalctl --no-pager -o short-precise -u floodwatch -u nginx >&2
        say "deny file: $(inside cat /etc/nginx/conf.d/floodwatch-deny.conf 2>&1)"
        for f in flood steady; do
            [ -s "$work/$f" ] && say "$f: answers: $(sort "$work/$f" | uniq -c | tr -s ' \n' ' ')"
        done
        say "access log (last lines):"
        inside tail -5 /var/www/vhosts/shop.example/logs/access_log >&2
    fi
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM: systemd-nspawn asks the container's systemd to power off.
        kill -TERM "$nspawn_pid"
        for _ in $(seq 100); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$nspawn_pid" 2>/dev/null; then
            say "the container did not power off within 10s: killed"
            [ -n "$init_pid" ] && kill -KILL "$init_pid"
            kill -KILL "$nspawn_pid"
        fi
        wait "$nspawn_pid" 2>/dev/null
    fi
    if ! $passed && [ -s "$work/console.log" ]; then
        say "the container's console (last lines):"
        tail -30 "$work/console.log" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
trap 'say "FAILED: unexpected error at line $LINENO: $BASH_COMMAND"' ERR
fail() {
    say "FAILED: $*"
    exit 1
}

# --keep-unit: stay in this process's cgroup instead of asking the host's systemd for a scope
# (the host may have none: CI's container does not). --volatile=overlay: the cached root stays
# untouched, every write goes to a tmpfs thrown away at the end.
say "booting the container ($root)"
boot_start=$SECONDS
systemd-nspawn --boot --quiet --register=no --keep-unit --private-network \
    --volatile=overlay --console=read-only --directory="$root" \
    </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!

# The container's init is the child of systemd-nspawn in a new PID namespace, once it has
# become systemd (before that it is still setting up the container's mounts).
for _ in $(seq 100); do
    for c in $(cat "/proc/$nspawn_pid/task/"*/children 2>/dev/null); do
        if [ "$(readlink "/proc/$c/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] &&
            [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then
            init_pid=$c
        fi
    done
    [ -n "$init_pid" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$init_pid" ]; then
    cat "$work/console.log" >&2
    if ! kill -0 "$nspawn_pid" 2>/dev/null; then
        nspawn_pid=
        skip "systemd-nspawn could not start a container here (its output is above)"
    fi
    fail "the container's init did not appear within 10s"
fi

state=
for _ in $(seq 60); do
    state=$(inside timeout 60 systemctl is-system-running --wait 2>/dev/null) || true
    case $state in running | degraded) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || fail "the container stopped while booting"
    sleep 0.5
done
case $state in
running) ;;
degraded) say "the container's systemd is degraded: $(inside systemctl --failed --plain \
    --no-legend | tr '\n' ' ')" ;;
*) fail "the container's systemd did not finish booting (state: ${state:-none})" ;;
esac
say "booted: systemd $state after $((SECONDS - boot_start))s"

# ---- install as an admin would ----------------------------------------------------------------
inside sh -c 'cat >/root/floodwatch.deb' <"$deb"
inside dpkg -i /root/floodwatch.deb >/dev/null || fail "dpkg -i $deb"
if [ -n "$unit" ]; then
    say "testing the unit $unit instead of the package's"
    inside sh -c 'cat >/etc/systemd/system/floodwatch.service' <"$unit"
    inside systemctl daemon-reload
fi

# A Plesk-like vhost: its access log where the shipped config looks for it, nginx's own proxy logs
# in /var/www/vhosts/system/<domain>/logs/ as Plesk's nginx writes them.
inside bash -euo pipefail -s <<'EOF' || fail "setting up nginx"
mkdir -p /var/www/vhosts/shop.example/httpdocs /var/www/vhosts/shop.example/logs \
    /var/www/vhosts/system/shop.example/logs
echo shop >/var/www/vhosts/shop.example/httpdocs/index.html
rm -f /etc/nginx/sites-enabled/default
cat >/etc/nginx/sites-enabled/shop.example.conf <<'NGINX'
server {
    listen 127.0.0.1:80 default_server;
    server_name shop.example;
    root /var/www/vhosts/shop.example/httpdocs;
    access_log /var/www/vhosts/shop.example/logs/access_log combined;
    access_log /var/www/vhosts/system/shop.example/logs/proxy_access_log combined;
    error_log /var/www/vhosts/system/shop.example/logs/proxy_error_log;
}
NGINX
nginx -t -q
# A restart, not a reload: nginx cannot trade its *:80 for 127.0.0.1:80 on a reload.
systemctl restart nginx
curl -fsS http://127.0.0.1/ | grep -qx shop
EOF

# The shipped config, edited as an admin would: the nginx sink uncommented; for the test only
# ::1 allowed (so that 127.0.0.2 can be banned), and one reload per second rather than 30 (the
# sink's start may have just reloaded nginx, which would hold the first ban back that long).
conf=/etc/floodwatch/floodwatch.toml
inside grep -qx '# type = "nginx"' $conf || fail "$conf has no commented nginx sink to enable"
inside grep -qx 'cidrs = \["127.0.0.0/8", "::1/128"\]' $conf ||
    fail "$conf: its [allow] cidrs line is not the one this test expects"
inside sed -i -e '/Uncomment to enforce bans/,/^$/{/Uncomment to enforce bans/!s/^# //}' \
    -e 's|^min_reload_interval = "30s"|min_reload_interval = "1s"|' \
    -e 's|^cidrs = \["127.0.0.0/8", "::1/128"\]|cidrs = ["::1/128"]|' $conf
inside grep -qx 'type = "nginx"' $conf || fail "the nginx sink could not be enabled in $conf"
inside grep -q '^min_reload_interval = "1s"' $conf || fail "min_reload_interval not set in $conf"
inside floodwatch check-config --config $conf >"$work/check-config.txt" 2>&1 || {
    cat "$work/check-config.txt" >&2
    fail "check-config refuses the edited shipped config"
}
say "installed $(basename "$deb"); nginx sink enabled, allowlist ::1 only"

# ---- start, flood ------------------------------------------------------------------------------
say "unit: $(inside systemctl show -p FragmentPath --value floodwatch)"
inside systemctl start floodwatch || fail "systemctl start floodwatch"
inside systemctl is-active -q floodwatch || fail "floodwatch is not active after its start"
say "floodwatch.service started (Type=notify: it said READY)"
# What is tested is the unit with its sandbox: it must be in force.
inside systemctl show -p ProtectSystem -p NoNewPrivileges -p ReadWritePaths \
    -p CapabilityBoundingSet floodwatch >"$work/sandbox"
sed 's/^/    /' "$work/sandbox" >&2
grep -qx 'ProtectSystem=strict' "$work/sandbox" && grep -qx 'NoNewPrivileges=yes' "$work/sandbox" ||
    fail "the unit runs without ProtectSystem=strict and NoNewPrivileges=yes: nothing to test"

# The steady client: 2 requests a second for 15 seconds, from before the flood to after the ban.
# One line per answer (stdbuf: as it comes), 000 for a refused connection.
inside_bg stdbuf -oL curl --silent --interface 127.0.0.3 --rate 2/s --output /dev/null \
    --write-out '%{http_code}\n' 'http://127.0.0.1/?steady=[1-30]' >"$work/steady"
steady_pid=$last_bg
sleep 1
# The flood: 200 requests a second for at most 10 seconds, ten times the rule's 20r/s; its
# burst of 100 is spent after about half a second.
ms() { echo $(($(date +%s%N) / 1000000)); }
flood_start=$(ms)
inside_bg stdbuf -oL curl --silent --interface 127.0.0.2 --rate 200/s --output /dev/null \
    --write-out '%{http_code}\n' 'http://127.0.0.1/?flood=[1-2000]' >"$work/flood"
flood_pid=$last_bg
refused_after=
for _ in $(seq 100); do
    if grep -qx 403 "$work/flood"; then
        refused_after=$(($(ms) - flood_start))
        break
    fi
    sleep 0.1
done
stop_background "$flood_pid"
served=$(grep -cx 200 "$work/flood" || true)
[ -n "$refused_after" ] ||
    fail "the flood from 127.0.0.2 was never refused in 10s ($served requests served)"
n=$(grep -nx 403 "$work/flood" | head -1 | cut -d: -f1)
say "ok: the flood was refused (403) after $n requests, ${refused_after} ms after it began"
[ "$refused_after" -le 5000 ] ||
    fail "the flood was refused only after ${refused_after} ms (at most 5 s allowed)"
inside grep -qx 'deny 127.0.0.2;' /etc/nginx/conf.d/floodwatch-deny.conf ||
    fail "the deny file does not name 127.0.0.2"

wait "$steady_pid" || fail "the steady client's curl failed"
steady_ok=$(grep -cx 200 "$work/steady" || true)
steady_all=$(wc -l <"$work/steady")
[ "$steady_all" -ge 25 ] && [ "$steady_ok" = "$steady_all" ] ||
    fail "the steady client got $steady_ok answers 200 of $steady_all: $(sort "$work/steady" |
        uniq -c | tr '\n' ' ')"
say "ok: the steady client from 127.0.0.3 was served all its $steady_all requests"

# ---- what floodwatch says ----------------------------------------------------------------------
inside floodwatch status >"$work/status" 2>&1 || {
    cat "$work/status" >&2
    fail "floodwatch status failed"
}
grep -Eq '^ +deny +ok( |$)' "$work/status" || {
    cat "$work/status" >&2
    fail "floodwatch status does not show the sink deny ok after an enforced ban"
}
if grep -Eq '^ +deny +(FAILING|last failed)' "$work/status"; then
    cat "$work/status" >&2
    fail "floodwatch status shows a failure of the sink deny"
fi
inside floodwatch bans >"$work/bans" 2>&1 || fail "floodwatch bans failed: $(cat "$work/bans")"
grep -q '127\.0\.0\.2' "$work/bans" || fail "floodwatch bans does not list 127.0.0.2"
if inside journalctl -u floodwatch --no-pager | grep -Eq 'test failed|Read-only file system'; then
    fail "the journal shows a failed nginx -t"
fi
inside grep -q '127\.0\.0\.2' /var/log/floodwatch/events.jsonl ||
    fail "the events sink's /var/log/floodwatch/events.jsonl does not record the ban"
say "ok: floodwatch status shows the nginx sink ok; bans lists 127.0.0.2; events.jsonl has it"

# ---- reload, stop ------------------------------------------------------------------------------
reloads() { inside journalctl -u floodwatch --no-pager | grep -Eic 'config reloaded' || true; }
before=$(reloads)
inside systemctl reload floodwatch || fail "systemctl reload floodwatch"
for _ in $(seq 50); do
    [ "$(reloads)" -gt "$before" ] && break
    sleep 0.1
done
[ "$(reloads)" -gt "$before" ] || fail "no 'config reloaded' in the log 5s after systemctl reload"
inside systemctl is-active -q floodwatch || fail "floodwatch is not active after its reload"
code() { inside curl --silent --interface "$1" --output /dev/null --write-out '%{http_code}' \
    http://127.0.0.1/; }
[ "$(code 127.0.0.2)" = 403 ] || fail "after the reload nginx serves the banned 127.0.0.2 again"
[ "$(code 127.0.0.3)" = 200 ] || fail "after the reload nginx refuses 127.0.0.3"
say "ok: systemctl reload floodwatch: config reloaded, still active, the ban still enforced"

timeout_us=$(inside systemctl show -p TimeoutStopUSec --value floodwatch)
stop_start=$SECONDS
inside systemctl stop floodwatch || fail "systemctl stop floodwatch"
took=$((SECONDS - stop_start))
result=$(inside systemctl show -p Result --value floodwatch)
active=$(inside systemctl is-active floodwatch || true)
[ "$active" = inactive ] || fail "after systemctl stop floodwatch is $active, not inactive"
[ "$result" = success ] || fail "floodwatch stopped with result $result"
# A stop that took the whole TimeoutStopSec ended with a SIGKILL, which is no clean stop.
[ "$took" -lt "${timeout_us%s}" ] 2>/dev/null ||
    fail "systemctl stop took ${took}s (TimeoutStopSec=$timeout_us)"
if inside floodwatch status >"$work/status" 2>&1; then
    cat "$work/status" >&2
    fail "floodwatch status exits 0 while the watch is stopped"
fi
say "ok: systemctl stop floodwatch: inactive, result success, in ${took}s; status then exits" \
    "non-zero: $(head -1 "$work/status")"

passed=true
say "ok: the package enforces bans through nginx under systemd, in $(elapsed)"
