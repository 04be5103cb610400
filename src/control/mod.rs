//! The D-Bus control interface (being built): the contract between the daemon loop and
//! the bus adapter. The daemon owns all state; the adapter only sends [`Command`]s into
//! the loop and reads the published [`Status`] snapshot.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::SystemTime;

/// Requests from the bus to the daemon loop. Each carries the channel its answer goes to.
#[derive(Debug)]
pub enum Command {
    Pause(Sender<()>),
    Resume(Sender<()>),
    /// Re-queue every failed change now; answers how many paths were queued.
    RetryFailed(Sender<u32>),
    /// Full sync of one root (None: all); answers the job id, or an error message when the
    /// root is unknown.
    FullSync {
        root: Option<PathBuf>,
        reply: Sender<Result<u64, String>>,
    },
    ListFailures(Sender<Vec<FailureRecord>>),
    /// Re-read the config; answers the diagnostics when it was rejected.
    Reload(Sender<Result<(), String>>),
}

/// One change that is still failing after retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub remote: String,
    pub root: PathBuf,
    /// Relative to the root, raw bytes.
    pub path: Vec<u8>,
    pub rsync_exit: i32,
    pub message: String,
    pub since: SystemTime,
}

/// State of one (root, remote) lane as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// e.g. `/srv/www -> 10.0.0.2::www`
    pub name: String,
    /// `ok`, `backoff` or `failing`.
    pub state: String,
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<String>,
    pub pending: u64,
}

/// Monotonic counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub batches: u64,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// The snapshot the daemon publishes (at most about once a second, and on changes of
/// paused/state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    pub instance: String,
    pub config_path: PathBuf,
    pub paused: bool,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub failed: u64,
    pub watches: u64,
    pub remotes: Vec<RemoteStatus>,
    pub counters: Counters,
}

/// Signals the daemon emits through the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SyncFailed {
        remote: String,
        path: Vec<u8>,
        rsync_exit: i32,
        message: String,
    },
    FullSyncFinished {
        job_id: u64,
        root: PathBuf,
        success: bool,
    },
    StateChanged {
        remote: String,
        state: String,
    },
}
