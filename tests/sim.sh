#!/usr/bin/env bash
# The randomized simulation by hand (tests/sim; CI runs its fixed seeds through
# `cargo test`). Release build; needs root (tmpfs mounts, user namespaces, chattr).
#   tests/sim.sh                     the CI seeds
#   tests/sim.sh 100-199             seeds 100 to 199 (or one seed: 42)
#   tests/sim.sh --soak 1800 [1000]  seeds from 1000 (default 1000) on, for 1800 s
#   tests/sim.sh --replay FILE       the operations of a failure report again
#   tests/sim.sh --shrink 100-199    on a failure, look for a shorter failing list
#   tests/sim.sh --two-way 1-20      the two-way rounds (tests/sim/two_way.rs) of those seeds
# SERSYNC_SIM_ROUNDS=N sets rounds per seed (default 8); SERSYNC_SIM_TIMEOUT=S how long a
# quiescent point may take (default 120 s; shorter makes shrinking faster).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    --soak) export SERSYNC_SIM_SOAK="${2:?seconds}" SERSYNC_SIM_SEEDS="${3:-1000}" ;;
    --replay) export SERSYNC_SIM_REPLAY="$(realpath "${2:?file}")" ;;
    --shrink) export SERSYNC_SIM_SHRINK=1 SERSYNC_SIM_SEEDS="${2:?seeds}" ;;
    --two-way)
        export SERSYNC_SIM_TWO_WAY_SEEDS="${2:?seeds}"
        exec cargo test --release --test sim two_way -- --nocapture ;;
    "") ;;
    *) export SERSYNC_SIM_SEEDS="$1" ;;
esac
exec cargo test --release --test sim replicas_equal -- --nocapture
