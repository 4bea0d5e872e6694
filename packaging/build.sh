#!/usr/bin/env bash
# Builds every release artefact of floodwatch into target/dist/:
#   floodwatch                  the portable binary (x86_64, glibc >= 2.17: CentOS 7, AlmaLinux 8,
#                               Ubuntu 20.04 and newer), stripped
#   floodwatch.debug            its debug info, split off (gdb finds it through the debuglink)
#   floodwatch_<v>_amd64.deb    the Debian/Ubuntu package (cargo-deb)
#   floodwatch-<v>-1.x86_64.rpm the RHEL/Alma/CloudLinux package (cargo-generate-rpm)
#   floodwatch-<v>-x86_64-linux.tar.gz  the binary, unit, sample config, man pages, completions,
#                               the Grafana dashboard and alert rules (share/)
#   man/, completions/          generated from the program's own clap definitions
# It checks that no symbol of the binary needs a glibc newer than 2.17 and that the binary runs.
# Tools it needs and does not find are installed: zig (PyPI's `ziglang`), cargo-zigbuild,
# cargo-deb, cargo-generate-rpm (crates.io), objcopy/objdump (Debian's binutils).
#
#   packaging/build.sh          everything
#   packaging/build.sh --host   only a test .deb, of the host's debug build (no zig, no
#                               optimisation: seconds after `cargo test`), in target/dist-host/ as
#                               floodwatch-host-debug_<v>_amd64.deb: target/dist/ and its release
#                               artefacts are left alone. packaging/test-deb.sh and
#                               packaging/test-systemd.sh install it.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=x86_64-unknown-linux-gnu
GLIBC=2.17
DIST=target/dist
HOST=false
if [ "${1:-}" = "--host" ]; then
    HOST=true
    # The package's variant `host` (Cargo.toml) takes its files from here.
    DIST=target/dist-host
fi

say() { echo "build.sh: $*" >&2; }
fail() { say "error: $*"; exit 1; }

need_binutils() {
    if ! command -v objcopy >/dev/null || ! command -v objdump >/dev/null; then
        say "installing binutils"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null
    fi
}

need_cargo_tool() { # <subcommand> <crate>
    if ! command -v "cargo-$1" >/dev/null; then
        say "installing $2 (cargo install, a few minutes once)"
        cargo install --locked --quiet "$2"
    fi
}

need_zig() {
    if command -v zig >/dev/null || python3 -m ziglang version >/dev/null 2>&1; then
        return
    fi
    say "installing zig from PyPI (ziglang)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    # A distribution's own Python refuses system-wide installs (PEP 668): then for this user,
    # which is where cargo-zigbuild looks (`python3 -m ziglang`).
    python3 -m pip install --quiet ziglang 2>/dev/null ||
        python3 -m pip install --quiet --user --break-system-packages ziglang
    python3 -m ziglang version >/dev/null || fail "zig could not be installed"
}

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
if $HOST; then
    # The test package must hold what the release one holds: the variant's file list is the
    # package's with target/dist/ read as target/dist-host/.
    cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
deb = json.load(sys.stdin)["packages"][0]["metadata"]["deb"]
want = [[a[0].replace("target/dist/", "target/dist-host/", 1)] + a[1:] for a in deb["assets"]]
if deb["variants"]["host"].get("assets") != want:
    sys.exit("the assets of [package.metadata.deb.variants.host] in Cargo.toml are not those "
             "of [package.metadata.deb] with target/dist-host/ for target/dist/: update them")
' || fail "Cargo.toml: the host package would differ from the release one"
fi
rm -rf "$DIST"
mkdir -p "$DIST/man" "$DIST/completions"
need_binutils

if $HOST; then
    cargo build --locked
    built=target/debug/floodwatch
else
    need_zig
    need_cargo_tool zigbuild cargo-zigbuild
    cargo zigbuild --locked --release --target "$TRIPLE.$GLIBC"
    built=target/$TRIPLE/release/floodwatch
fi

# The package's binary carries no debug info: it goes to floodwatch.debug, linked by name.
objcopy --only-keep-debug "$built" "$DIST/floodwatch.debug"
objcopy --strip-all --add-gnu-debuglink="$DIST/floodwatch.debug" "$built" "$DIST/floodwatch"
chmod 755 "$DIST/floodwatch"

# The newest glibc symbol version any dynamic symbol needs.
newest=$(objdump -T "$DIST/floodwatch" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
    sort -t. -k1,1n -k2,2n -k3,3n | tail -1)
say "binary: $(du -h "$DIST/floodwatch" | cut -f1), newest glibc symbol: GLIBC_$newest"
if ! $HOST; then
    [ "$(printf '%s\n%s\n' "$newest" "$GLIBC" | sort -t. -k1,1n -k2,2n | tail -1)" = "$GLIBC" ] ||
        fail "the portable binary needs GLIBC_$newest, more than $GLIBC"
fi
"$DIST/floodwatch" --version >/dev/null || fail "the binary does not run"

# Man pages and completions from the binary itself: they cannot drift from --help.
"$DIST/floodwatch" --log-level warn man --dir "$DIST/man"
[ -s "$DIST/man/floodwatch.toml.5" ] || fail "man --dir wrote no floodwatch.toml(5)"
"$DIST/floodwatch" completions bash >"$DIST/completions/floodwatch.bash"
"$DIST/floodwatch" completions zsh >"$DIST/completions/_floodwatch"
"$DIST/floodwatch" completions fish >"$DIST/completions/floodwatch.fish"

need_cargo_tool deb cargo-deb
if $HOST; then
    # Its binary needs the host's glibc, not 2.17: the `host` variant says so.
    # Named so that it cannot be taken for the release package.
    cargo deb --no-build --no-strip --variant host \
        --output "$DIST/floodwatch-host-debug_${version}_amd64.deb" >/dev/null
else
    cargo deb --no-build --no-strip --output "$DIST/" >/dev/null
    need_cargo_tool generate-rpm cargo-generate-rpm
    # gzip, not the default zstd: CentOS 7's rpm (4.11) cannot read a zstd payload.
    cargo generate-rpm --payload-compress gzip --output "$DIST/"
    tarball="floodwatch-$version-x86_64-linux"
    mkdir -p "$DIST/$tarball"
    cp -r "$DIST/floodwatch" "$DIST/man" "$DIST/completions" packaging/floodwatch.service \
        packaging/floodwatch.toml packaging/floodwatch.logrotate README.md docs LICENSE-MIT \
        LICENSE-APACHE "$DIST/$tarball/"
    # The Grafana dashboard and the Prometheus alert rules, as the packages install them in
    # /usr/share/floodwatch/.
    mkdir -p "$DIST/$tarball/share"
    cp packaging/monitoring/floodwatch-grafana.json packaging/monitoring/floodwatch-alerts.yml \
        "$DIST/$tarball/share/"
    tar -C "$DIST" -czf "$DIST/$tarball.tar.gz" "$tarball"
    rm -rf "${DIST:?}/$tarball"
fi
if ! $HOST; then
    # The package's binary, as installed, runs here too.
    dpkg-deb --fsys-tarfile "$DIST"/floodwatch_*_amd64.deb | tar -xO ./usr/bin/floodwatch |
        cmp - "$DIST/floodwatch" || fail "the .deb does not hold the checked binary"
fi
say "done:"
ls -l "$DIST" >&2
