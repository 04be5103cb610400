#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian/Ubuntu, as root or via sudo),
# then lints and runs every test tier. README.md and .ci/run call exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in rsync dbus-daemon inotifywait; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q rsync dbus inotify-tools
fi
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
