#!/usr/bin/env bash
# Installs floodwatch's .deb on this machine as an admin would, checks what it put in place, and
# purges it: the binary runs, the shipped config passes check-config, the unit is Type=notify and
# verifies, man pages and completions are there, and a purge leaves nothing behind. Run by
# .ci/run (as root, on a Debian machine) with the test .deb of `packaging/build.sh --host`
# (target/dist-host/, built here when no .deb is given); or the .deb given as $1 (the release one
# of `packaging/build.sh`, in target/dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test-deb.sh: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
# Where a check cannot run it says so; under CI (CI set, as .ci/run sets it) it must run, so
# a missing requirement fails instead of passing unseen.
cannot() {
    [ -z "${CI:-}" ] || fail "cannot run here ($*), and under CI this check must run"
    say "skipped: $*"
}

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
    cannot "needs root and dpkg (CI runs it as root on Debian)"
    exit 0
fi
if dpkg -s floodwatch >/dev/null 2>&1; then
    fail "a floodwatch package is installed already; this test would remove it"
fi
deb=${1:-}
if [ -z "$deb" ]; then
    bash packaging/build.sh --host
    deb=$(ls target/dist-host/floodwatch-host-debug_*_amd64.deb)
fi

dpkg -i "$deb" >/dev/null
trap 'dpkg --purge floodwatch >/dev/null 2>&1 || true' EXIT

/usr/bin/floodwatch --version | grep -q '^floodwatch ' || fail "--version"
/usr/bin/floodwatch check-config --config /etc/floodwatch/floodwatch.toml >/dev/null ||
    fail "the shipped config does not pass check-config"
[ "$(stat -c %a /etc/floodwatch/floodwatch.toml)" = 640 ] || fail "config mode"
grep -qx /etc/floodwatch/floodwatch.toml /var/lib/dpkg/info/floodwatch.conffiles ||
    fail "the config is not a conffile"
[ "$(stat -c %a /var/lib/floodwatch)" = 700 ] || fail "state folder"
unit=/usr/lib/systemd/system/floodwatch.service
grep -qx 'Type=notify' "$unit" || fail "the unit is not Type=notify"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit" || fail "systemd-analyze verify"
else
    cannot "systemd-analyze not here (Debian's systemd package): unit not verified"
fi
for f in /usr/share/man/man1/floodwatch.1.gz /usr/share/man/man1/floodwatch-unban.1.gz \
    /usr/share/bash-completion/completions/floodwatch \
    /usr/share/zsh/vendor-completions/_floodwatch \
    /usr/share/fish/vendor_completions.d/floodwatch.fish \
    /usr/share/doc/floodwatch/LICENSE-MIT /usr/share/doc/floodwatch/LICENSE-APACHE \
    /usr/share/doc/floodwatch/README.md /usr/share/doc/floodwatch/docs/design.md \
    /usr/share/floodwatch/floodwatch-grafana.json /usr/share/floodwatch/floodwatch-alerts.yml \
    /etc/logrotate.d/floodwatch; do
    [ -s "$f" ] || fail "$f missing"
done
zcat /usr/share/man/man1/floodwatch-ban.1.gz | grep -qF '\-\-for' || fail "man page content"
zcat /usr/share/man/man5/floodwatch.toml.5.gz | grep -qF 'recidive_window' || fail "floodwatch.toml(5)"

dpkg --purge floodwatch >/dev/null
trap - EXIT
for p in /usr/bin/floodwatch /etc/floodwatch /var/lib/floodwatch /var/log/floodwatch "$unit"; do
    [ ! -e "$p" ] || fail "$p left after purge"
done
say "ok: $deb installs, checks, verifies and purges cleanly"
