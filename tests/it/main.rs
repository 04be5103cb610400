//! The integration tests of sersync: one test binary, one module per area.
//!
//! Every end-to-end test starts its own `rsync --daemon` on 127.0.0.1 (or 127.0.0.2) with
//! auth, runs a real `sersyncd` against it, changes files and waits (bounded) until the
//! replica equals the source. See `harness` for the pieces.

// Test harness: rsync daemons, sersyncd processes, tree comparison, bounded waits.
// Shared with tests/sim, which uses other parts of it.
#[allow(dead_code, unused_imports)]
#[macro_use]
mod harness;

// Black-box CLI: --help, --version, --check on the stock config and on the fixtures.
mod cli;
// One root, one remote: create, modify, append, chmod, delete, rename, bursts, -r, symlinks.
mod e2e_basic;
// <filter> excludes (live and with -r) and the built-in ignore of temporary files.
mod e2e_filter;
// File names that break shells and naive parsers replicate exactly and run nothing.
mod e2e_hostile;
// Several remotes and several roots; a dead remote does not stall a live one.
mod e2e_remotes;
// Watch backends: fanotify refused → inotify (auto) or exit 78 (by name), <watch backend>
// and the flag, filesystems mounted inside a root, a root deleted and made again.
mod watch_backends;
// Remote down, auth failure, kill -9, clean restart, inotify overflow, the failure script.
mod e2e_failures;
// Least privilege: rsync takes the tree owner's credentials (a swapped symlink publishes
// nothing private); a state directory another user could change is refused.
mod privilege;
// Panics: contained in a job thread, a stop for a dead inotify reader, an abort elsewhere;
// the replica converges in every case.
mod panics;
// D-Bus control interface and sersyncctl over private dbus-daemons: the adapter with a
// scripted loop, the bus policy, unprivileged callers, and end to end against sersyncd.
mod control;
// Lag per remote and checkpoints (`sersyncctl checkpoint --wait`) against sersyncd.
mod checkpoints;
// Large files go out in a run of their own: small files never wait for a large upload.
mod large_files;
// Warm rsyncs (issue 17): max connections, the receiver's timeout, a killed server side,
// shutdown; over an rsync daemon and over an sshd of the test's own.
mod warm;
// Two-way mode: two hosts replicating to each other converge, lose nothing, go quiet.
mod two_way;
// Full-sync progress: status, STATUS=, the FullSyncProgress signal, full-sync --wait.
mod progress;
// systemd units (verify, exposure score) and sersync-generator (configs in, drop-ins out).
mod systemd_units;
// sd_notify on a NOTIFY_SOCKET of the test's own: READY, STATUS, WATCHDOG, RELOADING, STOPPING.
mod notify;
// --log journald: native journal protocol datagrams on /run/systemd/journal/socket.
mod journald;
// Plugins: command, socket (raw and framed), refreshCDN, http; -m NAME and after-sync.
mod plugins;
// Metrics: --metrics-listen scraped by a real Prometheus, promtool on the exposition,
// sersyncctl metrics and health (Nagios plugin statuses).
mod metrics;
