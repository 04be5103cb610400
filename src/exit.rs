//! Process exit statuses of `sersyncd`, `sersyncctl` and `sersync-generator`.
//!
//! Why a module of its own: the statuses are a contract with what runs the binaries
//! (systemd units, scripts, packaging), and one number must mean one thing in every binary.
//! They follow sysexits(3); each constant says who returns it and what systemd does with it.
//!
//! `sersync@.service` has `Restart=on-failure` and `RestartPreventExitStatus=78`: every
//! non-zero status of `sersyncd` is restarted after 5 s except [`CONFIG`], which a restart
//! cannot fix. `sersync-fullsync@.service` runs `sersyncctl full-sync --wait` once per timer
//! tick; any non-zero status marks that run failed (`systemctl --failed`, `OnFailure=`), and
//! the next tick runs it again.

/// Success. `sersyncd`: a clean stop (SIGTERM, SIGINT), `--check` of a valid config, or
/// `--help`/`--version`. `sersyncctl`: the command did what it says. systemd: a clean stop,
/// not restarted.
pub const OK: i32 = 0;

/// `sersyncctl` only: the daemon answered with an error (an unknown root, a refused
/// reload), or a full sync it waited for failed or timed out. Not a sysexits code: the
/// daemon is there and said no. systemd: the full-sync run is marked failed.
pub const DAEMON_ERROR: i32 = 1;

/// EX_USAGE: a bad command line. `sersyncd` (and `sersync-generator`): unknown or
/// malformed flags, or `-m NAME` naming a plugin that is unknown or has no usable section.
/// `sersyncctl`: bad flags or subcommand, a malformed `-i NAME`, or several instances
/// running without `-i`. systemd: restarted, which does not help; the unit is wrong.
pub const USAGE: i32 = 64;

/// EX_UNAVAILABLE: `sersyncctl` could not reach the daemon (no bus, no such instance, the
/// daemon went away while waiting). systemd: the full-sync run is marked failed.
pub const UNAVAILABLE: i32 = 69;

/// EX_SOFTWARE: `sersyncd` cannot go on (cannot detach with `-d`, the event loop lost a
/// thread it needs, the watches cannot be set up). systemd: restarted after 5 s; the
/// restart runs the recovery full sync.
pub const SOFTWARE: i32 = 70;

/// EX_CANTCREAT: `sersyncd` cannot use its state directory (cannot create or lock it,
/// another user could change it, a state file in it failed its checks). systemd:
/// restarted after 5 s, which helps when another daemon held the lock.
pub const CANTCREAT: i32 = 73;

/// EX_TEMPFAIL: `sersyncctl checkpoint` did not see its checkpoint reached (in time, or
/// at once without `--wait`): some remote still lacks a change; it lists which. Asking
/// again later may succeed.
pub const TEMPFAIL: i32 = 75;

/// EX_NOPERM: `sersyncctl` was refused by the bus policy or by the daemon (changing and
/// file names are for root and group `sersync`). systemd: the full-sync run is marked
/// failed.
pub const NOPERM: i32 = 77;

/// EX_CONFIG: the config file is invalid (each error printed as `file:line:col` before
/// anything starts), or the metrics listen address (`<metrics listen>`,
/// `--metrics-listen`) cannot be bound at start. `sersyncd` at start and with `--check`;
/// `sersyncctl check`.
/// systemd: **not restarted** (`RestartPreventExitStatus=78`): the operator must fix the
/// file.
pub const CONFIG: i32 = 78;

/// `sersyncctl health` only, whose statuses are those of a Nagios plugin (what Nagios,
/// Icinga, check_mk and Consul read; see `ctl::health`): everything is as it should be.
pub const HEALTH_OK: i32 = 0;

/// `sersyncctl health`: something needs a look (a threshold's warning level, a remote in
/// backoff or guarded, a paused daemon). Consul: warning.
pub const HEALTH_WARNING: i32 = 1;

/// `sersyncctl health`: replication is failing or far behind. Consul: critical.
pub const HEALTH_CRITICAL: i32 = 2;

/// `sersyncctl health`: no verdict: the daemon is not reachable, or the command line is
/// wrong (instead of 64 and 69, which a monitoring system would read as CRITICAL or
/// worse). Consul: critical.
pub const HEALTH_UNKNOWN: i32 = 3;

#[cfg(test)]
mod tests {
    #[test]
    fn the_unit_does_not_restart_a_bad_config() {
        let unit = include_str!("../systemd/sersync@.service");
        assert!(unit.contains(&format!("RestartPreventExitStatus={}", super::CONFIG)));
    }
}
