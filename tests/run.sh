#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian/Ubuntu, as root or via sudo),
# then lints and runs every test tier. README.md and .ci/run call exactly this.
#   1. cargo fmt --check, cargo clippy -D warnings
#   2. cargo test: unit tables + tests/it (real sersyncd, rsync daemons, dbus-daemon,
#      Prometheus and promtool)
#      + tests/sim (the randomized simulation's CI seeds and its regressions; root)
#   3. tests/packaging/run.sh: build the .deb/.rpm, install, check, purge   (root)
#   4. tests/system/run.sh: the .deb in a real systemd (systemd-nspawn)      (root)
# SERSYNC_TEST_TIERS=cargo limits the run to tiers 1-2 (for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
need=()
for tool in rsync dbus-daemon inotifywait bindfs chattr unshare prometheus promtool; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q rsync dbus inotify-tools bindfs fuse3 e2fsprogs util-linux
    # The tests start their own Prometheus on 127.0.0.1: the package's service must not
    # start on every interface during the install (see .ci/run).
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    installed=0
    $SUDO apt-get install -y -q --no-install-recommends prometheus || installed=$?
    [ -z "$policy" ] || $SUDO rm -f "$policy"
    [ "$installed" = 0 ] || exit "$installed"
fi
echo "== tier 1: fmt + clippy"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
echo "== tier 2: cargo test"
cargo test --lib --bins --test it
# The simulation's CI seeds and its regressions, with the per-seed summary shown.
cargo test --test sim -- --nocapture
if [ "${SERSYNC_TEST_TIERS:-all}" = cargo ]; then
    echo "tiers 3-4 (packaging, systemd) not run: SERSYNC_TEST_TIERS=cargo"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    if [ "${CI:-}" = true ]; then echo "FAIL: tiers 3-4 need root" >&2; exit 1; fi
    echo "tiers 3-4 (packaging, systemd) need root: run again as root for the whole suite"
    exit 0
fi
echo "== tier 3: packaging"
tests/packaging/run.sh
echo "== tier 4: systemd end to end"
tests/system/run.sh
echo "whole suite passed in $(( $(date +%s) - started )) s"
