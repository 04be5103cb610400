//! The shapes that cross the bus: the [`Status`] snapshot, a remote's state and a failure
//! record, each as a D-Bus dictionary (`a{sv}`).
//!
//! Dictionaries rather than structs because a struct's signature is part of the interface:
//! adding a field to `(sstt)` would be an incompatible change needing `Sersync2`, while a
//! new key in an `a{sv}` is ignored by older clients. Keys are PascalCase like property
//! names. Times are microseconds since the Unix epoch (`t`, as systemd does); an absent
//! key means "never" or "none". Paths are byte arrays (`ay`): file names need not be
//! UTF-8, and D-Bus strings must be.
//!
//! What may name files depends on who asks ([`Audience`]): a remote's `LastError` is
//! rsync's own words for root and group `sersync`, and a path-free summary for everyone
//! else (and in the properties, whose changes are broadcast).

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zbus::zvariant::{DeserializeDict, OwnedValue, SerializeDict, Type, Value};

#[cfg(test)]
use super::RunCounts;
use super::{CheckpointState, Counters, FailureRecord, Histogram, RemoteStatus, Status};

/// One (root, remote) lane as shown to operators.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct RemoteInfo {
    /// e.g. `/srv/www -> 10.0.0.2::www`.
    pub name: String,
    /// `ok`, `backoff` or `failing`.
    pub state: String,
    /// When a batch last reached this remote; absent: never since start.
    pub last_ok_usec: Option<u64>,
    /// The last error; absent when the last attempt succeeded. For
    /// [`Audience::Privileged`]: in full (rsync's words, which may name files); for
    /// [`Audience::Everyone`]: the path-free summary.
    pub last_error: Option<String>,
    /// Distinct paths waiting for this remote.
    pub pending: u64,
    /// Microseconds the oldest change not yet delivered to this remote has waited; 0 when
    /// it holds everything observed. (This and the keys below are absent from daemons
    /// older than issue 18's changes, December 2026.)
    pub lag_usec: Option<u64>,
    /// Bytes rsync reported sending to this remote since the daemon started.
    pub bytes_sent: Option<u64>,
    /// Runs since start that ended well (exit 0 or 24).
    pub runs_ok: Option<u64>,
    /// Runs that ended in exit 23 (some paths failed, the rest went through).
    pub runs_partial: Option<u64>,
    /// Runs that failed otherwise (replica-guard refusals included).
    pub runs_failed: Option<u64>,
    /// While a full sync to this remote runs and its rsync has said how far it is: bytes
    /// done, of the total it expects so far (which grows while rsync is still listing),
    /// files checked of those listed, bytes per second, and rsync's estimate of the time
    /// left. Absent otherwise.
    pub full_sync_bytes_done: Option<u64>,
    pub full_sync_bytes_total: Option<u64>,
    pub full_sync_files_done: Option<u64>,
    pub full_sync_files_total: Option<u64>,
    pub full_sync_rate: Option<u64>,
    pub full_sync_eta_usec: Option<u64>,
    /// The watch root alone, raw bytes (`name` says it for people, with the remote).
    pub root: Option<Vec<u8>>,
    /// The remote alone, e.g. `10.0.0.2::www`.
    pub remote: Option<String>,
}

/// Monotonic counters since the daemon started.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct CountersInfo {
    pub events: u64,
    pub batches: u64,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// A histogram of durations (`control::Histogram`): per upper bound, how many
/// observations were at most that long; the last bucket (+Inf) is `Count`.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct HistogramInfo {
    /// Upper bounds in microseconds, ascending.
    pub bounds_usec: Vec<u64>,
    /// Per bound, the observations of at most that long (cumulative, as Prometheus).
    pub cumulative: Vec<u64>,
    /// The sum of every observation, in microseconds.
    pub sum_usec: u64,
    pub count: u64,
}

/// Everything `GetStatus` answers: one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct StatusInfo {
    pub version: String,
    pub instance: String,
    pub config_path: String,
    pub paused: bool,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub failed: u64,
    pub watches: u64,
    pub remotes: Vec<RemoteInfo>,
    pub counters: CountersInfo,
    /// Roots whose watcher is blocked in a filesystem call (a hung mount): the root (raw
    /// bytes) and for how many seconds. (This and the keys below are absent from daemons
    /// older than issue 18's changes, December 2026.)
    pub blocked_watchers: Option<Vec<(Vec<u8>, u64)>>,
    /// How long delivered changes waited until the run that delivered them ended.
    pub delivery_latency: Option<HistogramInfo>,
    /// How long the full syncs that succeeded took.
    pub full_sync_duration: Option<HistogramInfo>,
}

/// How far a full sync is (the `FullSyncProgress` signal).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct ProgressInfo {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes per second.
    pub rate: u64,
    pub eta_usec: u64,
}

impl ProgressInfo {
    /// Percent of the bytes done, 0 to 100.
    pub fn percent(&self) -> u64 {
        crate::sync::progress::percent(self.bytes_done, self.bytes_total)
    }
}

impl From<&super::FullSyncProgress> for ProgressInfo {
    fn from(p: &super::FullSyncProgress) -> Self {
        ProgressInfo {
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            files_done: p.files_done,
            files_total: p.files_total,
            rate: p.rate,
            eta_usec: duration_usec(p.eta),
        }
    }
}

/// Where a checkpoint stands (`CheckpointStatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct CheckpointInfo {
    /// `draining`, `behind` or `reached`.
    pub state: String,
    /// The remotes that lack a change observed before the checkpoint.
    pub behind: Vec<String>,
    /// The roots whose watcher has not reported what the kernel had queued.
    pub draining: Vec<Vec<u8>>,
}

impl From<&CheckpointState> for CheckpointInfo {
    fn from(state: &CheckpointState) -> Self {
        match state {
            CheckpointState::Reached => CheckpointInfo {
                state: "reached".into(),
                ..CheckpointInfo::default()
            },
            CheckpointState::Behind(remotes) => CheckpointInfo {
                state: "behind".into(),
                behind: remotes.clone(),
                draining: Vec::new(),
            },
            CheckpointState::Draining(roots) => CheckpointInfo {
                state: "draining".into(),
                behind: Vec::new(),
                draining: roots
                    .iter()
                    .map(|root| root.as_os_str().as_bytes().to_vec())
                    .collect(),
            },
        }
    }
}

/// One change that is still failing after retries (`ListFailures`).
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub struct FailureInfo {
    pub remote: String,
    /// The watch root, raw bytes.
    pub root: Vec<u8>,
    /// Relative to the root, raw bytes.
    pub path: Vec<u8>,
    pub rsync_exit: i32,
    pub message: String,
    pub since_usec: u64,
}

/// Microseconds since the Unix epoch; times before it (a badly set clock) become 0.
pub fn usec(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`usec`].
pub fn system_time(usec: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(usec)
}

/// Who an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Any local user, and every broadcast: nothing that names a file.
    Everyone,
    /// Root, the daemon's own user and group `sersync`: everything.
    Privileged,
}

impl RemoteInfo {
    /// A remote's state as `audience` may see it.
    pub fn new(remote: &RemoteStatus, audience: Audience) -> Self {
        let last_error = match audience {
            Audience::Privileged => remote.last_error.clone(),
            // A summary is set with every error; should one be missing, say only that
            // there was an error rather than fall back to the full text.
            Audience::Everyone => remote.last_error.as_ref().map(|_| {
                remote
                    .last_error_summary
                    .clone()
                    .unwrap_or_else(|| "failed".to_owned())
            }),
        };
        RemoteInfo {
            name: remote.name.clone(),
            state: remote.state.clone(),
            last_ok_usec: remote.last_ok.map(usec),
            last_error,
            pending: remote.pending,
            lag_usec: Some(duration_usec(remote.lag(std::time::Instant::now()))),
            bytes_sent: Some(remote.bytes_sent),
            runs_ok: Some(remote.runs.ok),
            runs_partial: Some(remote.runs.partial),
            runs_failed: Some(remote.runs.failed),
            full_sync_bytes_done: remote.full_sync.map(|p| p.bytes_done),
            full_sync_bytes_total: remote.full_sync.map(|p| p.bytes_total),
            full_sync_files_done: remote.full_sync.map(|p| p.files_done),
            full_sync_files_total: remote.full_sync.map(|p| p.files_total),
            full_sync_rate: remote.full_sync.map(|p| p.rate),
            full_sync_eta_usec: remote.full_sync.map(|p| duration_usec(p.eta)),
            root: Some(remote.root.as_os_str().as_bytes().to_vec()),
            remote: Some(remote.remote.clone()),
        }
    }
}

/// Microseconds, saturating.
pub(crate) fn duration_usec(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl From<&Histogram> for HistogramInfo {
    fn from(h: &Histogram) -> Self {
        HistogramInfo {
            bounds_usec: h.bounds().iter().copied().map(duration_usec).collect(),
            cumulative: h.cumulative().to_vec(),
            sum_usec: duration_usec(h.sum()),
            count: h.count(),
        }
    }
}

impl From<&Counters> for CountersInfo {
    fn from(c: &Counters) -> Self {
        CountersInfo {
            events: c.events,
            batches: c.batches,
            files: c.files,
            bytes: c.bytes,
            errors: c.errors,
        }
    }
}

impl StatusInfo {
    /// The snapshot as sent on the bus to `audience`. `instance` and `config_path` are the
    /// adapter's own (they name the object being served and never change), so a snapshot
    /// the daemon has not filled in yet still identifies itself correctly.
    pub fn new(
        status: &Status,
        instance: &str,
        config_path: &std::path::Path,
        audience: Audience,
    ) -> Self {
        StatusInfo {
            version: version_of(status),
            instance: instance.to_owned(),
            config_path: config_path.display().to_string(),
            paused: status.paused,
            queue_depth: status.queue_depth,
            in_flight: status.in_flight,
            failed: status.failed,
            watches: status.watches,
            remotes: status
                .remotes
                .iter()
                .map(|r| RemoteInfo::new(r, audience))
                .collect(),
            counters: CountersInfo::from(&status.counters),
            blocked_watchers: Some(
                status
                    .blocked_watchers
                    .iter()
                    .map(|(root, secs)| (root.as_os_str().as_bytes().to_vec(), *secs))
                    .collect(),
            ),
            delivery_latency: Some(HistogramInfo::from(&status.delivery_latency)),
            full_sync_duration: Some(HistogramInfo::from(&status.full_sync_duration)),
        }
    }
}

/// The daemon's version: the snapshot's, or this build's before the first snapshot.
pub(crate) fn version_of(status: &Status) -> String {
    if status.version.is_empty() {
        env!("CARGO_PKG_VERSION").to_owned()
    } else {
        status.version.clone()
    }
}

impl From<&FailureRecord> for FailureInfo {
    fn from(f: &FailureRecord) -> Self {
        FailureInfo {
            remote: f.remote.clone(),
            root: f.root.as_os_str().as_bytes().to_vec(),
            path: f.path.clone(),
            rsync_exit: f.rsync_exit,
            message: f.message.clone(),
            since_usec: usec(f.since),
        }
    }
}

impl From<&FailureInfo> for FailureRecord {
    fn from(f: &FailureInfo) -> Self {
        FailureRecord {
            remote: f.remote.clone(),
            root: PathBuf::from(std::ffi::OsString::from_vec(f.root.clone())),
            path: f.path.clone(),
            rsync_exit: f.rsync_exit,
            message: f.message.clone(),
            since: system_time(f.since_usec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{Endian, serialized::Context, to_bytes};

    fn sample_status() -> Status {
        Status {
            version: "1.2.3".into(),
            instance: "ignored".into(),
            config_path: PathBuf::from("/ignored.xml"),
            paused: true,
            queue_depth: 7,
            in_flight: 2,
            failed: 1,
            watches: 1234,
            remotes: vec![
                RemoteStatus {
                    name: "/srv/www -> 10.0.0.2::www".into(),
                    remote: "10.0.0.2::www".into(),
                    state: "ok".into(),
                    last_ok: Some(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
                    last_error: None,
                    last_error_summary: None,
                    pending: 3,
                    owed_since: None,
                    bytes_sent: 12_345,
                    runs: RunCounts {
                        ok: 5,
                        partial: 0,
                        failed: 0,
                    },
                    root: PathBuf::from("/srv/www"),
                    full_sync: None,
                },
                RemoteStatus {
                    name: "/srv/www -> 10.0.0.3::www".into(),
                    remote: "10.0.0.3::www".into(),
                    state: "failing".into(),
                    last_ok: None,
                    last_error: Some(
                        "rsync exit 23: partial transfer due to error: rsync: [sender] \
                         send_files failed to open \"/srv/www/secret.txt\": Permission \
                         denied (13)"
                            .into(),
                    ),
                    last_error_summary: Some("rsync exit 23: partial transfer due to error".into()),
                    pending: 4,
                    owed_since: std::time::Instant::now()
                        .checked_sub(Duration::from_millis(20_500)),
                    bytes_sent: 0,
                    runs: RunCounts {
                        ok: 0,
                        partial: 1,
                        failed: 3,
                    },
                    root: PathBuf::from("/srv/www"),
                    full_sync: None,
                },
            ],
            counters: Counters {
                events: 10,
                batches: 4,
                files: 9,
                bytes: 1 << 40,
                errors: 2,
            },
            blocked_watchers: vec![(
                PathBuf::from(std::ffi::OsString::from_vec(b"/mnt/\xff".to_vec())),
                31,
            )],
            delivery_latency: {
                let mut h = Histogram::new(&[Duration::from_millis(100), Duration::from_secs(1)]);
                h.observe(Duration::from_millis(40));
                h.observe(Duration::from_secs(3));
                h
            },
            full_sync_duration: Histogram::new(&super::super::FULL_SYNC_BUCKETS),
        }
    }

    #[test]
    fn status_round_trips_through_the_wire_format() {
        let info = StatusInfo::new(
            &sample_status(),
            "web",
            std::path::Path::new("/etc/sersync/web.xml"),
            Audience::Privileged,
        );
        assert_eq!(info.instance, "web");
        assert_eq!(info.config_path, "/etc/sersync/web.xml");
        assert_eq!(info.remotes[0].last_ok_usec, Some(1_700_000_000_123_456));
        // The age at the time of asking, not at the snapshot's.
        assert!(
            info.remotes[1]
                .lag_usec
                .is_some_and(|lag| (20_500_000..21_500_000).contains(&lag)),
            "{:?}",
            info.remotes[1].lag_usec
        );
        assert_eq!(info.remotes[0].lag_usec, Some(0));
        assert_eq!(info.remotes[1].runs_failed, Some(3));
        assert_eq!(info.remotes[1].root.as_deref(), Some(&b"/srv/www"[..]));
        assert_eq!(info.remotes[1].remote.as_deref(), Some("10.0.0.3::www"));
        assert_eq!(
            info.blocked_watchers,
            Some(vec![(b"/mnt/\xff".to_vec(), 31)])
        );
        assert_eq!(
            info.delivery_latency,
            Some(HistogramInfo {
                bounds_usec: vec![100_000, 1_000_000],
                cumulative: vec![1, 1],
                sum_usec: 3_040_000,
                count: 2,
            })
        );
        let ctxt = Context::new_dbus(Endian::Little, 0);
        let bytes = to_bytes(ctxt, &info).unwrap();
        let (back, _): (StatusInfo, _) = bytes.deserialize().unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn everyone_sees_the_summary_of_an_error_and_privileged_callers_the_whole_error() {
        let status = sample_status();
        let path = std::path::Path::new("/etc/sersync/web.xml");
        let everyone = StatusInfo::new(&status, "web", path, Audience::Everyone);
        let privileged = StatusInfo::new(&status, "web", path, Audience::Privileged);
        assert_eq!(
            everyone.remotes[1].last_error.as_deref(),
            Some("rsync exit 23: partial transfer due to error")
        );
        assert!(
            privileged.remotes[1]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("/srv/www/secret.txt")),
            "{privileged:?}"
        );
        // No error, nothing to show either way; otherwise the same snapshot.
        assert_eq!(everyone.remotes[0], privileged.remotes[0]);
        assert_eq!(everyone.remotes[0].last_error, None);
        assert_eq!(everyone.counters, privileged.counters);
        // An error without a summary is not shown in full to everyone.
        let mut bare = status.remotes[1].clone();
        bare.last_error_summary = None;
        assert_eq!(
            RemoteInfo::new(&bare, Audience::Everyone)
                .last_error
                .as_deref(),
            Some("failed")
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_optional_keys_may_be_absent() {
        // A newer daemon may send keys this client does not know; fields added later to
        // these dictionaries must be `Option`s so that older daemons stay readable.
        use std::collections::HashMap;
        let mut dict: HashMap<&str, Value<'_>> = HashMap::new();
        dict.insert("Name", Value::from("x"));
        dict.insert("State", Value::from("ok"));
        dict.insert("Pending", Value::from(3u64));
        dict.insert("SomethingNew", Value::from(42u32));
        let ctxt = Context::new_dbus(Endian::Little, 0);
        let bytes = to_bytes(ctxt, &dict).unwrap();
        let (remote, _): (RemoteInfo, _) = bytes.deserialize().unwrap();
        assert_eq!(remote.name, "x");
        assert_eq!(remote.last_ok_usec, None);
        assert_eq!(remote.last_error, None);
        assert_eq!(remote.pending, 3);
        assert_eq!(remote.lag_usec, None);
    }

    #[test]
    fn failure_paths_keep_their_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let record = FailureRecord {
            remote: "r".into(),
            root: PathBuf::from(std::ffi::OsString::from_vec(b"/srv/\xff".to_vec())),
            path: b"a\nb\xfe".to_vec(),
            rsync_exit: 23,
            message: "partial transfer".into(),
            since: UNIX_EPOCH + Duration::from_secs(5),
        };
        let info = FailureInfo::from(&record);
        assert_eq!(info.root, b"/srv/\xff");
        assert_eq!(info.since_usec, 5_000_000);
        assert_eq!(FailureRecord::from(&info), record);
    }

    #[test]
    fn times_before_the_epoch_are_zero() {
        assert_eq!(usec(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(system_time(usec(UNIX_EPOCH)), UNIX_EPOCH);
    }
}
