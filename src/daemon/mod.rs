//! Start-up, the event loop, signals, readiness and shutdown.
//!
//! One thread owns all mutable state and runs one loop over a closed enum of inputs
//! ([`Input`]): changes from the watcher, outcomes of rsync jobs, signals. Everything else
//! (the inotify reader, each rsync job, the signal listener) runs on its own thread and
//! only sends inputs, so no lock guards the queue and the order of decisions is the order
//! of the loop.
//!
//! Start-up order: config (errors printed before logging starts, exit 78) → logging →
//! state directory → watches → READY=1 → initial full sync if asked, so a change made
//! while the initial sync runs is queued, not lost.

mod checkpoints;
pub mod cli;
mod deletions;
mod deliveries;
mod logging;
mod notify;
mod requests;
mod settle;
pub mod state;
mod timers;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use std::os::unix::ffi::OsStrExt;

use crate::atomic_file;
use crate::config::{self, Config, RootId, WatchBackend};
use crate::control::{
    self, Command, Counters, Event, FailureRecord, Histogram, RemoteStatus, RunCounts, Status,
};
use std::sync::{Arc, RwLock};

use crate::exit;
use crate::failure::{self, Backoff, Journal, LaneKey};
use crate::metrics::http::MetricsServer;
use crate::plugin::{ChangeKind, PluginEvent, PluginHost};
use crate::queue::{Action, DEFAULT_MAX_BATCH, FullSyncReason, Job, LaneId, Queue};
use crate::sync::argv::Transport;
use crate::sync::{JobContext, Outcome, RunResult, Runner};
use crate::watch::{self, Heartbeat, WatchControl, WatchEvent, WatchSpec};
use checkpoints::{Checkpoints, Progress};
pub use cli::Cli;
use deletions::{DeletionWindows, Next};
use deliveries::Deliveries;
use requests::FullSyncRequests;
use settle::Health;
use timers::{Due, Overflowed, Timers};

/// Everything the loop reacts to.
#[derive(Debug)]
enum Input {
    /// An event from the watchers of generation `.0` (a reload that changes what is
    /// watched starts a new generation; events of older ones are dropped, since their root
    /// numbers may now mean other roots).
    Watch(u64, WatchEvent),
    WatcherFailed(u64, RootId, String),
    JobDone(Outcome),
    Signal(i32),
    Control(Command),
}

/// One root's watcher thread, as the loop sees it.
#[derive(Debug)]
struct RootWatcher {
    control: Sender<WatchControl>,
    heartbeat: Arc<Heartbeat>,
    /// Its first watches are in place (`Ready` came).
    ready: bool,
    watches: usize,
    /// Blocked for [`WATCHER_STUCK`] (a hung filesystem), reported once.
    stuck: bool,
}

/// One (root, remote) pair: the unit that progresses independently.
#[derive(Debug, Clone)]
struct Lane {
    /// Stable across reloads (see [`LaneId`]).
    id: LaneId,
    root: RootId,
    label: String,
    context: JobContext,
    /// What the ends of its jobs made of it ([`settle`]).
    health: Health,
    /// The same for its large-file runs, which back off on their own: a large file that
    /// cannot land is not retried every second because the small files around it can.
    large_health: Health,
    /// Full syncs started so far; the one running (if any) has this number.
    full_syncs_started: u64,
    full_sync_running: bool,
    /// When the job in flight started, if any.
    job_started: Option<Instant>,
    /// The job in flight has moved no data for [`STALL_WARNING`] (reported once per job).
    stalled: bool,
    /// Runs since start by result, and the bytes rsync reported sending (for status and
    /// metrics; carried over reloads).
    runs: RunCounts,
    bytes_sent: u64,
    /// Where the full sync in flight reports how far it is, and what was last announced
    /// of it (`FullSyncProgress`, at most once a second).
    progress: Option<Arc<crate::sync::progress::JobProgress>>,
    progress_announced: Option<crate::sync::progress::Summary>,
}

impl Lane {
    /// Whether this lane is the one `key` names (its identity, which a reload, the journal
    /// and the state directory go by).
    fn is(&self, key: &LaneKey) -> bool {
        // Field by field: `key()` would clone all three for every comparison.
        self.context.root == key.root
            && self.context.transport.remote.ip == key.remote_ip
            && self.context.transport.remote.name == key.remote_name
    }

    fn key(&self) -> LaneKey {
        LaneKey {
            root: self.context.root.clone(),
            remote_ip: self.context.transport.remote.ip.clone(),
            remote_name: self.context.transport.remote.name.clone(),
        }
    }
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A job whose rsyncs have moved no data for this long is reported as stalled (in the
/// log once, and in the status until it ends); rsync's own `--timeout` ends it.
const STALL_WARNING: Duration = Duration::from_secs(30);

/// Which of a lane's two jobs ended: its batch (or full sync), or its large-file run
/// ([`Queue::take_large_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobSlot {
    Batches,
    Large,
}
/// A watcher that has not made progress for this long is blocked in a filesystem call (a
/// hung mount): reported in the log and the status. Only its own root waits.
const WATCHER_STUCK: Duration = Duration::from_secs(30);
/// READY=1 waits for every root's watches at most this long; a root still being set up
/// (a huge tree, or a hung filesystem) is named in the log and catches up by itself.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `sersyncd` with parsed arguments; returns the process exit status.
pub fn main(cli: Cli) -> i32 {
    // Descriptors inherited from whoever started us (a shell, a supervisor) must not
    // reach the rsync children, which may run as another user. (Linux 5.11; on older
    // kernels the call fails and nothing changes.)
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    if cli.check {
        // One implementation for `sersyncd --check` and `sersyncctl check`.
        return config::check::report(&cli.config, cli.module.as_deref());
    }
    let Some(config) = config::load_and_report(&cli.config) else {
        return exit::CONFIG;
    };
    let mut config = config;
    let plugins = match PluginHost::from_config(&config, cli.module.as_deref()) {
        Ok(plugins) => plugins,
        Err(err) => {
            eprintln!("{}: {err}", cli.config.display());
            return if cli.module.is_some() {
                exit::USAGE
            } else {
                exit::CONFIG
            };
        }
    };
    if cli.module.is_some() {
        // `-m NAME`: only the plugin, no rsync. Like sersync 2.5, a plugin with its own
        // <localpath watch> watches that path instead of the <sersync> roots.
        if let Some(watch) = plugins.as_ref().and_then(|p| p.watch()) {
            let line = config.roots.first().map_or(0, |r| r.line);
            config.roots = vec![config::WatchRoot {
                path: watch.to_path_buf(),
                remotes: Vec::new(),
                line,
                run_as: config::RunAs::default(),
            }];
        }
        for root in &mut config.roots {
            root.remotes.clear();
        }
    }
    if cli.daemon {
        // Before any thread exists: fork() only keeps the calling thread. stdio stays
        // open so `nohup sersyncd -d ... > log` keeps working as with sersync2.
        if let Err(err) = nix::unistd::daemon(true, true) {
            eprintln!("sersyncd: cannot detach: {err}");
            return exit::SOFTWARE;
        }
    }
    let instance = cli.instance_name();
    logging::init(cli.log, cli.verbose || config.debug, &instance);
    crate::panics::install();
    let state_dir = cli.state_dir();
    let lock = match prepare_state_dir(&state_dir) {
        Ok(lock) => lock,
        Err(err) => {
            tracing::error!(path = %state_dir.display(), "cannot use the state directory: {err}");
            return exit::CANTCREAT;
        }
    };
    // Before anything is watched, so a listen address that cannot be used stops the start
    // as a bad config does (systemd does not restart it), with the address and where it
    // was given.
    let metrics = match metrics_address(&cli, &config) {
        None => None,
        Some((address, given)) => match MetricsServer::bind(address) {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::error!("cannot listen for metrics on {address} ({given}): {err}");
                return exit::CONFIG;
            }
        },
    };
    let mut daemon = match Daemon::new(cli, config, instance, state_dir) {
        Ok(daemon) => daemon,
        Err(err) => {
            tracing::error!("{err}");
            return exit::SOFTWARE;
        }
    };
    if let Some(plugins) = &plugins {
        plugins.start();
    }
    daemon.plugins = plugins;
    daemon.state_lock = Some(lock);
    if let Some(listener) = metrics {
        daemon.serve_metrics(listener);
    }
    if let Err(err) = daemon.restore_state() {
        tracing::error!(path = %daemon.state.path().display(), "cannot use the state directory: {err}");
        return exit::CANTCREAT;
    }
    daemon.log_run_users();
    daemon.run()
}

/// Where metrics are served: `--metrics-listen`, else `<metrics listen>`; with where that
/// was said, for messages.
fn metrics_address(cli: &Cli, config: &Config) -> Option<(SocketAddr, String)> {
    if let Some(address) = cli.metrics_listen {
        return Some((address, "--metrics-listen".to_owned()));
    }
    config.metrics.map(|metrics| {
        let at = format!(
            "<metrics listen> at {}:{}",
            config.file.display(),
            metrics.line
        );
        (metrics.address, at)
    })
}

/// Creates the state directory, locks it for this process (a second daemon on the same
/// directory would discard this one's saved changes), and clears the scratch space.
fn prepare_state_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    // What is read back from here decides what reaches the replicas.
    crate::trusted::create_checked(dir)?;
    crate::trusted::check_directory(dir)?;
    let lock = state::StateDir::new(dir.to_path_buf()).lock(Duration::from_secs(5))?;
    let empty = dir.join("empty");
    match std::fs::remove_dir_all(&empty) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    std::fs::DirBuilder::new().mode(0o700).create(&empty)?;
    Ok(lock)
}

/// What a root's saved two-way versions file holds: the bytes of its last whole write,
/// and of the records appended since (0 and 0: write it whole next).
#[derive(Debug, Default)]
struct VersionsFileSizes {
    whole: u64,
    appended: u64,
}

/// Two-way mode: a directory the peer's full sync pushed again here moments after this
/// host's user removed it (see `Daemon::undo_returned_directories`).
#[derive(Debug)]
struct ReturnedDir {
    root: RootId,
    path: crate::relpath::RelPath,
    /// The user's removal it returned after.
    removed_at: std::time::SystemTime,
    arrived: Instant,
    /// When the peer said that its push made it (`WatchEvent::ResentOutcome`), and that
    /// moment on the wall clock, to compare with the directory's ctime. Until then it may
    /// be one this host's user made as the push began.
    made_by_push: Option<(Instant, std::time::SystemTime)>,
}

struct Daemon {
    /// Two-way mode: each root's saved versions file (see `save_versions`).
    versions_sizes: std::collections::HashMap<PathBuf, VersionsFileSizes>,
    /// Two-way mode: paths `undo_stale_arrival` moved aside lately (their removal is
    /// not the user's).
    undone: Vec<(RootId, crate::relpath::RelPath, Instant)>,
    /// Two-way mode: directories the peer's full sync pushed again moments after this
    /// host's user removed them (see `undo_returned_directories`).
    returned_dirs: Vec<ReturnedDir>,
    /// Two-way mode: the directories `undo_returned_directories` removed lately.
    dirs_undone: Vec<(RootId, crate::relpath::RelPath, Instant)>,
    /// Two-way mode: files this host's users changed in the last seconds (see
    /// `keep_own_write_over_an_older_arrival`: only such a version can cross the peer's).
    written_here: std::collections::HashMap<(RootId, crate::relpath::RelPath), Instant>,
    /// Two-way mode: the paths whose version `keep_own_write_over_an_older_arrival` put
    /// back in the last minute (once a minute at most).
    put_back: std::collections::HashMap<(RootId, crate::relpath::RelPath), Instant>,
    cli: Cli,
    config: Config,
    instance: String,
    lanes: Vec<Lane>,
    queue: Queue,
    runner: Runner,
    tx: Sender<Input>,
    rx: Receiver<Input>,
    /// One per root, in root order.
    watchers: Vec<RootWatcher>,
    watcher_generation: u64,
    /// `--watch-backend fanotify` (or `<watch backend="fanotify">`) was refused at start:
    /// exit 78, not 70.
    watch_refused: bool,
    watchers_started: Instant,
    in_flight: usize,
    next_lane: usize,
    watches: usize,
    stopping: bool,
    notifier: notify::Notifier,
    state: state::StateDir,
    recover_after_ready: bool,
    /// Lanes whose full sync the previous run still owed: requested once their root is
    /// watched (a full sync that reads the tree before the watches exist misses what
    /// changes in between).
    owed_after_ready: Vec<LaneId>,
    /// Jobs still running for lanes a reload removed, by the remote they write to: a lane
    /// added back for the same root and remote waits for them (two rsyncs into one
    /// destination at once would apply changes out of order).
    retired_in_flight: Vec<(LaneId, LaneKey)>,
    /// The filesystem each root was on when first watched (kept in the state directory).
    recorded_fs: Vec<(PathBuf, crate::guard::FsIdentity)>,
    /// Live deletions per root over the last minute (`<deleteGuard>`).
    deletion_windows: DeletionWindows,
    /// Roots whose deletions are held (too many at once), with the reason, until the
    /// operator releases them with a forced full sync.
    deletions_held: Vec<(PathBuf, String)>,
    /// Everything due later: crontab, replay, pruning, resyncs, held full syncs.
    timers: Timers,
    /// The watches of every root are in place (the first `Ready` came).
    ready: bool,
    exit_code: i32,
    journal: Journal,
    journal_dirty: bool,
    counters: Counters,
    /// How long delivered changes waited, from when their batch's oldest was seen.
    delivery_latency: Histogram,
    /// How long successful full syncs took.
    full_sync_duration: Histogram,
    paused: bool,
    status: Arc<RwLock<Status>>,
    last_snapshot: Option<Instant>,
    events: Option<Sender<Event>>,
    control: Option<control::ControlHandle>,
    /// The listener answering `GET /metrics`, when one is configured.
    metrics: Option<MetricsServer>,
    full_sync_requests: FullSyncRequests,
    next_lane_id: LaneId,
    /// The `flock` on the state directory, held for the daemon's life.
    state_lock: Option<std::fs::File>,
    /// When lanes were last checked for stalled rsyncs.
    last_stall_check: Option<Instant>,
    last_journal_save: Option<Instant>,
    plugins: Option<PluginHost>,
    /// Per (root, path): the lanes a change was delivered to so far, for the after-sync
    /// plugin (which runs once a change reached every remote of its root).
    deliveries: Deliveries,
    /// What operators wait on (`sersyncctl checkpoint`).
    checkpoints: Checkpoints,
    /// When `FullSyncProgress` was last considered.
    last_progress: Option<Instant>,
    /// Roots that may have missed changes, with when that was first seen: an inotify
    /// overflow whose rescan is still to be asked for (deferred by the overflow backoff),
    /// or the watch limit leaving directories unwatched (until a reload watches them).
    /// Their lanes owe whatever was missed from then; the rescan asked for them is owed
    /// from then too.
    unseen_since: Vec<(RootId, crate::queue::Seen)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("instance", &self.instance)
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

/// Where the soft-delete directory of `tree` keeps `path` for `day`
/// (`DIR/YYYY-MM-DD/<path>`, as rsync's `--backup-dir` of the peer's runs puts it).
fn trash_path(
    tree: &Path,
    soft: &crate::config::SoftDelete,
    day: std::time::SystemTime,
    path: &[u8],
) -> PathBuf {
    let mut kept = soft.dir.as_bytes().to_vec();
    kept.push(b'/');
    kept.extend(crate::sync::argv::utc_date(day).as_bytes());
    crate::relpath::absolute(tree, &crate::relpath::join(&kept, path))
}

/// Places something at `kept` (when `kept_itself`) or else at the first free `kept.N`
/// (N from 1 to 99) by `place`, which must fail with `AlreadyExists` where something is:
/// what is in the soft-delete directory is never replaced.
fn at_a_free_name(
    kept: &Path,
    kept_itself: bool,
    mut place: impl FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let first = if kept_itself { 0 } else { 1 };
    for n in first..100 {
        let target = if n == 0 {
            kept.to_path_buf()
        } else {
            let mut name = kept.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        match place(&target) {
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            done => return done,
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// The lane of `root` pushing to `ip`'s module `name`.
fn lane_position(lanes: &[Lane], key: &LaneKey) -> Option<usize> {
    lanes.iter().position(|lane| lane.is(key))
}

/// The lanes of `config`. A lane that `old` has too (same root path and remote) keeps its
/// id; new ones get ids from `next_id`.
fn build_lanes(config: &Config, old: &[Lane], next_id: &mut LaneId) -> Vec<Lane> {
    let mut lanes = Vec::new();
    // Two-way mode: one record of versions per root, kept across reloads.
    let mut versions: std::collections::HashMap<PathBuf, Arc<crate::sync::two_way::Versions>> =
        std::collections::HashMap::new();
    for (root_id, root) in config.roots.iter().enumerate() {
        for remote in &root.remotes {
            let key = LaneKey {
                root: root.path.clone(),
                remote_ip: remote.ip.clone(),
                remote_name: remote.name.clone(),
            };
            if lane_position(&lanes, &key).is_some() {
                // One remote listed twice under a root is one lane (two would run two
                // rsyncs into one module at once, out of order).
                continue;
            }
            let transport = Transport {
                options: config.rsync.clone(),
                remote: remote.clone(),
                password_piped: false,
                // Set by each job when it starts.
                today: String::new(),
                control_path: None,
            };
            let id = match lane_position(old, &key) {
                Some(at) => old[at].id,
                None => {
                    *next_id += 1;
                    *next_id
                }
            };
            lanes.push(Lane {
                id,
                root: root_id,
                label: format!(
                    "{} -> {}",
                    root.path.display(),
                    remote.label(config.rsync.ssh)
                ),
                context: JobContext {
                    root: root.path.clone(),
                    transport,
                    propagate_deletes: config.events.delete,
                    filter: config.filter.clone(),
                    crontab_excludes: if config.crontab.filter_enabled {
                        config.crontab.excludes.clone()
                    } else {
                        Vec::new()
                    },
                    debug: config.debug,
                    recorded_fs: None,
                    delete_guard: config.delete_guard.clone(),
                    deletions_held: None,
                    guard_released: false,
                    run_as: root.run_as.clone(),
                    identity: None,
                    password: None,
                    progress: None,
                    changes_since: std::time::UNIX_EPOCH,
                    large_files: config.large_files,
                    versions: config.rsync.two_way.then(|| {
                        Arc::clone(versions.entry(root.path.clone()).or_insert_with(|| {
                            old.iter()
                                .find(|lane| lane.context.root == root.path)
                                .and_then(|lane| lane.context.versions.clone())
                                .unwrap_or_default()
                        }))
                    }),
                },
                health: Health::new(Backoff::default()),
                large_health: Health::new(Backoff::default()),
                full_syncs_started: 0,
                full_sync_running: false,
                job_started: None,
                stalled: false,
                runs: RunCounts::default(),
                bytes_sent: 0,
                progress: None,
                progress_announced: None,
            });
        }
    }
    lanes
}

/// The periods of the in-process timers. They work without systemd; the timer units
/// only add to them, except that under systemd the generator turns `<crontab>` into
/// sersync-fullsync@NAME.timer and the unit says so: running both would double every full
/// sync.
fn schedule_of(config: &Config) -> timers::Schedule {
    let timer_in_charge = std::env::var_os(crate::generator::CRONTAB_ENV)
        .is_some_and(|v| v == crate::generator::CRONTAB_BY_SYSTEMD);
    timers::Schedule {
        crontab: (config.crontab.enabled && !timer_in_charge).then(|| config.crontab.interval()),
        replay: config.fail_log.interval(),
    }
}

fn queue_layout(lanes: &[Lane]) -> Vec<(LaneId, RootId)> {
    lanes.iter().map(|lane| (lane.id, lane.root)).collect()
}

/// The watch spec of `config`, with the backend `sersyncd --watch-backend` asks for (it
/// wins over `<watch backend>`; inotify when neither says).
fn watch_spec(config: &Config, backend: Option<WatchBackend>) -> WatchSpec {
    WatchSpec {
        // Two-way mode tells the peer's files by inotify's pairing of renames (see
        // `sync::two_way`); the fanotify watcher does not pair them that way.
        backend: if config.rsync.two_way {
            WatchBackend::Inotify
        } else {
            backend.or(config.watch_backend).unwrap_or_default()
        },
        roots: config.roots.iter().map(|r| r.path.clone()).collect(),
        filter: config.filter.clone(),
        ignore_temp_files: config.ignore_temp_files,
        events: config.events,
        always_stat: config.xfs,
        unwatched_top: config
            .rsync
            .soft_delete
            .as_ref()
            .filter(|_| config.rsync.two_way)
            .map(|soft| soft.dir.as_bytes().to_vec()),
        incoming: config
            .rsync
            .two_way
            .then(|| crate::sync::two_way::INCOMING.as_bytes().to_vec()),
    }
}

impl Daemon {
    fn new(cli: Cli, config: Config, instance: String, state_dir: PathBuf) -> Result<Self, String> {
        if config.rsync.two_way {
            tracing::warn!(
                "two-way mode is experimental: races remain in which a replaced or deleted \
                 version ends in .sersync-trash instead of the tree (README, \"Two-way mode\")"
            );
        }
        if config.rsync.two_way
            && cli
                .watch_backend
                .is_some_and(|backend| backend != WatchBackend::Inotify)
        {
            tracing::warn!(
                "--watch-backend is inotify in two-way mode: it tells the peer's files by \
                 inotify's pairing of renames"
            );
        }
        let timers = Timers::new(Instant::now(), schedule_of(&config));
        let mut next_lane_id = 0;
        let lanes = build_lanes(&config, &[], &mut next_lane_id);
        let (tx, rx) = mpsc::channel();
        let runner = Runner::new(
            PathBuf::from("rsync"),
            state_dir.join("empty"),
            cli.worker_limit(),
        );
        Ok(Daemon {
            versions_sizes: std::collections::HashMap::new(),
            undone: Vec::new(),
            returned_dirs: Vec::new(),
            dirs_undone: Vec::new(),
            written_here: std::collections::HashMap::new(),
            put_back: std::collections::HashMap::new(),
            queue: {
                let mut queue =
                    Queue::new(&queue_layout(&lanes), DEFAULT_MAX_BATCH, Instant::now());
                queue.set_max_pending(config.max_pending);
                queue
            },
            lanes,
            cli,
            config,
            instance,
            runner,
            tx,
            rx,
            watchers: Vec::new(),
            watcher_generation: 0,
            watch_refused: false,
            watchers_started: Instant::now(),
            in_flight: 0,
            next_lane: 0,
            watches: 0,
            stopping: false,
            notifier: notify::Notifier::from_env(),
            state: state::StateDir::new(state_dir),
            recover_after_ready: false,
            owed_after_ready: Vec::new(),
            retired_in_flight: Vec::new(),
            recorded_fs: Vec::new(),
            deletion_windows: DeletionWindows::default(),
            deletions_held: Vec::new(),
            timers,
            ready: false,
            exit_code: exit::OK,
            journal: Journal::default(),
            journal_dirty: false,
            counters: Counters::default(),
            delivery_latency: Histogram::new(&control::DELIVERY_BUCKETS),
            full_sync_duration: Histogram::new(&control::FULL_SYNC_BUCKETS),
            paused: false,
            status: Arc::new(RwLock::new(Status {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                instance: String::new(),
                config_path: PathBuf::new(),
                paused: false,
                queue_depth: 0,
                in_flight: 0,
                failed: 0,
                watches: 0,
                remotes: Vec::new(),
                counters: Counters::default(),
                blocked_watchers: Vec::new(),
                delivery_latency: Histogram::new(&control::DELIVERY_BUCKETS),
                full_sync_duration: Histogram::new(&control::FULL_SYNC_BUCKETS),
            })),
            last_snapshot: None,
            events: None,
            control: None,
            metrics: None,
            full_sync_requests: FullSyncRequests::new(),
            next_lane_id,
            state_lock: None,
            last_stall_check: None,
            last_journal_save: None,
            plugins: None,
            deliveries: Deliveries::default(),
            checkpoints: Checkpoints::default(),
            last_progress: None,
            unseen_since: Vec::new(),
        })
    }

    /// Loads what the previous run left: pending changes, and whether it stopped cleanly.
    fn restore_state(&mut self) -> std::io::Result<()> {
        let unclean = self.state.mark_running()?;
        if unclean {
            tracing::warn!(
                "the previous run did not stop cleanly; every root gets a full sync once watched"
            );
            self.recover_after_ready = true;
        }
        let saved = match self.state.load_pending() {
            Ok(saved) => saved,
            Err(err) => {
                tracing::error!(
                    "cannot read saved pending changes ({err}); doing a full sync instead"
                );
                self.recover_after_ready = true;
                Vec::new()
            }
        };
        let mut restored = 0usize;
        let mut orphaned = 0usize;
        let mut owed = 0usize;
        for change in saved {
            match lane_position(&self.lanes, &change.lane) {
                Some(at) => {
                    let lane = self.lanes[at].id;
                    match change.owed {
                        state::Owed::Change(_)
                            if !crate::trusted::is_plain_relative(&change.path) =>
                        {
                            tracing::error!(
                                root = %change.lane.root.display(),
                                path = %crate::trusted::printable(&change.path),
                                "a saved change names a path outside its root; ignored, and the \
                                 root gets a full sync instead"
                            );
                            self.owe_full_sync_once_watched(lane);
                        }
                        state::Owed::Change(action) => {
                            self.queue.push_lane(lane, &change.path, action);
                            restored += 1;
                        }
                        state::Owed::FullSync => {
                            if self.owe_full_sync_once_watched(lane) {
                                owed += 1;
                            }
                        }
                    }
                }
                None => orphaned += 1,
            }
        }
        if owed > 0 {
            tracing::info!(
                lanes = owed,
                "the previous run stopped before finishing a full sync; running it once watched"
            );
        }
        if restored > 0 {
            tracing::info!(restored, "restored changes saved by the previous run");
        }
        if orphaned > 0 {
            tracing::warn!(
                orphaned,
                "saved changes for roots or remotes no longer in the config were dropped"
            );
        }
        self.load_journal();
        match self.state.load_roots() {
            Ok(recorded) => self.recorded_fs = recorded,
            Err(err) => tracing::error!(
                "cannot read which filesystems the roots were on ({err}); recording them anew"
            ),
        }
        match self.state.load_held() {
            Ok(held) => {
                for (root, reason) in &held {
                    tracing::error!(root = %root.display(), "deletions still held from the previous run: {reason}");
                }
                self.deletions_held = held;
            }
            Err(err) => {
                // Fail closed: a hold the previous run had must not end because its record
                // cannot be read.
                let reason = format!(
                    "cannot read which roots had their deletions held ({err}); every root's \
                     deletions are held until released with `sersyncctl full-sync --force`"
                );
                tracing::error!("{reason}");
                for lane in &self.lanes {
                    if !self
                        .deletions_held
                        .iter()
                        .any(|(root, _)| *root == lane.context.root)
                    {
                        self.deletions_held
                            .push((lane.context.root.clone(), reason.clone()));
                    }
                }
            }
        }
        self.apply_guards();
        self.state.discard_pending()
    }

    /// Hands each lane what the replica guard knows of its root: the recorded filesystem,
    /// and whether its deletions are held.
    fn apply_guards(&mut self) {
        for lane in &mut self.lanes {
            lane.context.recorded_fs = self
                .recorded_fs
                .iter()
                .find(|(root, _)| *root == lane.context.root)
                .map(|(_, fs)| fs.clone());
            lane.context.deletions_held = self
                .deletions_held
                .iter()
                .find(|(root, _)| *root == lane.context.root)
                .map(|(_, reason)| reason.clone());
        }
    }

    fn save_held(&self) {
        if let Err(err) = self.state.save_held(&self.deletions_held) {
            tracing::error!("cannot save which roots have their deletions held: {err}");
        }
    }

    /// Counts `count` live deletions in `root` and holds the root's deletions when those
    /// of the last minute would remove more than `<deleteGuard share>` of its entries.
    /// The tree is counted only then, and no further than the answer needs.
    fn count_deletions(&mut self, root: RootId, count: usize) {
        let guard = self.config.delete_guard.clone();
        let path = self.root_path(root).to_path_buf();
        if !crate::guard::limits_deletions(&guard)
            || self.deletions_held.iter().any(|(held, _)| *held == path)
        {
            return;
        }
        let mut next = self
            .deletion_windows
            .record(&path, Instant::now(), count, &guard);
        if let Next::CountRemaining { deleted, needed } = next {
            // A walk of the root: bounded, as the root may sit on a hung filesystem.
            let counted = path.clone();
            let Some(remaining) = crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
                crate::guard::count_entries(&counted, needed)
            }) else {
                return;
            };
            next = DeletionWindows::judge(deleted, remaining, &guard);
        }
        if let Next::Hold(why) = next {
            let reason = format!("{why}: held until released with `sersyncctl full-sync --force`");
            tracing::error!(root = %path.display(), "{reason}");
            self.hold_root_deletions(path, reason);
        }
    }

    /// Says which lanes went over `<queue maxPending>` and were folded into dirty
    /// directories (see [`Queue::set_max_pending`]).
    fn log_folds(&mut self) {
        for fold in self.queue.take_folds() {
            let Some(lane) = self.lanes.iter().find(|lane| lane.id == fold.lane) else {
                continue;
            };
            // The failure journal folds the same way: what failed below a dirty directory
            // is that directory's failure now (it would otherwise keep every path).
            let key = lane.key();
            for tree in self.queue.lane_trees(fold.lane) {
                let message = self
                    .journal
                    .first_below(&key, &tree)
                    .map(|(code, message)| (code, message.to_owned()));
                if let Some((code, message)) = message {
                    self.journal.clear_below(&key, &tree);
                    self.journal.record(
                        &key,
                        [tree.as_slice()],
                        code,
                        &message,
                        std::time::SystemTime::now(),
                    );
                    self.journal_dirty = true;
                }
            }
            tracing::warn!(
                sersync_remote = %lane.label,
                before = fold.before,
                after = fold.after,
                "more than {} changes pending: {} folded into {} entries (dirty directories \
                 are synced recursively when the remote takes them)",
                self.config.max_pending,
                fold.before,
                fold.after
            );
        }
    }

    /// Holds every deletion of the root of lane `at` (a full sync found it would delete
    /// too much), until the operator releases it.
    fn hold_deletions(&mut self, at: usize, reason: &str) {
        let path = self.lanes[at].context.root.clone();
        self.hold_root_deletions(path, reason.to_owned());
    }

    fn hold_root_deletions(&mut self, path: PathBuf, reason: String) {
        if self.deletions_held.iter().any(|(held, _)| *held == path) {
            return;
        }
        self.deletions_held.push((path, reason));
        self.save_held();
        self.apply_guards();
    }

    /// Records the filesystem `root` is on now, if none is recorded yet (or `anew`, after
    /// the operator forced a full sync). An empty root is recorded only when forced: it
    /// may be a mount point with nothing mounted, and what is mounted there later is the
    /// real one.
    fn record_fs(&mut self, root: RootId, anew: bool) {
        let path = self.root_path(root).to_path_buf();
        if !anew && self.recorded_fs.iter().any(|(r, _)| *r == path) {
            return;
        }
        let probe_path = path.clone();
        let found = crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
            if !anew && crate::guard::is_empty(&probe_path)? {
                return Ok(None);
            }
            crate::guard::identity_of(&probe_path).map(Some)
        });
        let identity = match found {
            Some(Ok(Some(identity))) => identity,
            Some(Ok(None)) => return,
            Some(Err(err)) => {
                tracing::warn!(root = %path.display(), "cannot tell which filesystem holds the root: {err}");
                return;
            }
            None => return,
        };
        tracing::info!(root = %path.display(), filesystem = %identity, "root's filesystem recorded for the replica guard");
        self.recorded_fs.retain(|(r, _)| *r != path);
        self.recorded_fs.push((path, identity));
        if let Err(err) = self.state.save_roots(&self.recorded_fs) {
            tracing::error!("cannot save which filesystems the roots are on: {err}");
        }
        self.apply_guards();
    }

    /// Saves what could not be delivered (changes and owed full syncs) and marks the stop
    /// as clean.
    fn save_state(&self) {
        let mut saved = Vec::new();
        // A stop this daemon chose because part of it broke (an inotify reader failed): no
        // one watched the roots since, nor will until systemd restarts it, so every lane
        // owes a full sync, as after an unclean stop.
        let stopping_on_failure = self.exit_code != exit::OK;
        if stopping_on_failure {
            tracing::warn!("stopping on a failure: the next start does a full sync of every root");
        }
        for lane in &self.lanes {
            let record = |path: Vec<u8>, owed: state::Owed| state::SavedChange {
                lane: lane.key(),
                path,
                owed,
            };
            // A full sync still owed: requested or failed (an interrupted one comes back
            // as failed), a rescan deferred after overflows, a root not fully watched, or
            // the recovery that the start after an unclean stop asked for.
            let owes_full_sync = stopping_on_failure
                || self.queue.full_sync_owed(lane.id).is_some()
                || self.timers.overflow_due().contains(&lane.root)
                || self.timers.degraded().contains(&lane.root)
                || self.owed_after_ready.contains(&lane.id)
                || self.timers.holds_full_sync(lane.id)
                || (self.recover_after_ready
                    && !self.watchers.get(lane.root).is_some_and(|w| w.ready));
            if owes_full_sync {
                saved.push(record(Vec::new(), state::Owed::FullSync));
            }
            for (path, action) in self.queue.undelivered(lane.id) {
                saved.push(record(path, state::Owed::Change(action)));
            }
        }
        let count = saved.len();
        match self.state.save_pending(&saved) {
            Ok(()) => {
                if count > 0 {
                    tracing::info!(
                        saved = count,
                        "saved undelivered changes for the next start"
                    );
                }
                if let Err(err) = self.state.clear_running() {
                    tracing::error!("cannot remove the running marker: {err}");
                }
            }
            Err(err) => tracing::error!(
                "cannot save {count} undelivered changes ({err}); the next start does a full sync"
            ),
        }
    }

    /// Starts one watcher per root (stopping the ones running): a new generation.
    fn start_watchers(&mut self) -> Result<(), String> {
        self.stop_watchers();
        // A drain round for checkpoints asks the new watchers instead (below).
        let redrain = self.checkpoints.watchers_replaced();
        self.watcher_generation += 1;
        self.watchers_started = Instant::now();
        let generation = self.watcher_generation;
        let spec = watch_spec(&self.config, self.cli.watch_backend);
        for root in 0..spec.roots.len() {
            self.prepare_two_way_root(root);
        }
        for root in 0..spec.roots.len() {
            let (control_tx, control_rx) = mpsc::channel();
            let tx = self.tx.clone();
            let heartbeat = Arc::new(Heartbeat::new());
            let watcher = watch::open(spec.clone(), root, Arc::clone(&heartbeat), move |event| {
                let mut stall = None;
                if let WatchEvent::Changes(changes) = &event {
                    for change in changes {
                        crate::panics::inject("inotify", &change.path);
                        stall = stall.or_else(|| crate::panics::stall_after(&change.path));
                    }
                }
                let _ = tx.send(Input::Watch(generation, event));
                if let Some(stall) = stall {
                    std::thread::sleep(stall);
                }
            })
            .map_err(|err| {
                if matches!(err, watch::OpenError::FanotifyRefused(_)) {
                    self.watch_refused = true;
                }
                err.to_string()
            })?;
            let failed = self.tx.clone();
            std::thread::Builder::new()
                .name(format!("{}-{root}", watcher.backend()))
                .spawn(move || {
                    // A panic would otherwise end the thread silently and the root
                    // would stop being replicated with nothing said.
                    let failure = match crate::panics::contain(|| watcher.run(control_rx)) {
                        Ok(Ok(())) => return,
                        Ok(Err(err)) => err.to_string(),
                        Err(panic) => format!("it panicked: {panic}"),
                    };
                    let _ = failed.send(Input::WatcherFailed(generation, root, failure));
                })
                .map_err(|err| format!("cannot start an inotify thread: {err}"))?;
            self.watchers.push(RootWatcher {
                control: control_tx,
                heartbeat,
                ready: false,
                watches: 0,
                stuck: false,
            });
        }
        if redrain {
            self.start_drain_round();
        }
        Ok(())
    }

    /// At a clean stop: has every watcher report what the kernel queued before the stop
    /// (changes made right before SIGTERM would be lost with the inotify instances), so
    /// they are saved with the rest. A watcher that does not answer in time (blocked on a
    /// hung filesystem) leaves its root owing a full sync.
    fn drain_watchers(&mut self) {
        const DRAIN_WITHIN: Duration = Duration::from_secs(3);
        self.tell_watchers(|| WatchControl::Drain);
        let mut waiting: Vec<RootId> = (0..self.watchers.len()).collect();
        let deadline = Instant::now() + DRAIN_WITHIN;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Input::Watch(generation, event)) if generation == self.watcher_generation => {
                    match event {
                        WatchEvent::Drained { root } => waiting.retain(|&r| r != root),
                        other => self.on_watch(other),
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for root in waiting {
            tracing::warn!(
                root = %self.root_path(root).display(),
                "the watcher of this root did not report its last changes in time; the next \
                 start rescans the root"
            );
            self.timers.mark_degraded(root);
        }
    }

    fn stop_watchers(&mut self) {
        for watcher in self.watchers.drain(..) {
            let _ = watcher.control.send(WatchControl::Stop);
        }
    }

    fn tell_watchers(&self, make: impl Fn() -> WatchControl) {
        for watcher in &self.watchers {
            let _ = watcher.control.send(make());
        }
    }

    fn start_signal_listener(&self) -> Result<(), String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(Input::Signal(signal)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|err| format!("cannot start the signal thread: {err}"))?;
        Ok(())
    }

    fn run(mut self) -> i32 {
        self.load_versions();
        if let Err(err) = self
            .start_signal_listener()
            .and_then(|()| self.start_watchers())
        {
            tracing::error!("{err}");
            // `--watch-backend fanotify` where it is refused: a configuration error, and
            // nothing was watched or owed, so the next start is not an unclean one.
            if self.watch_refused {
                if let Err(err) = self.state.clear_running() {
                    tracing::error!("cannot remove the running marker: {err}");
                }
                return exit::CONFIG;
            }
            return exit::SOFTWARE;
        }
        tracing::info!(
            instance = %self.instance,
            roots = self.config.roots.len(),
            lanes = self.lanes.len(),
            "sersyncd {} starting: watching {}",
            env!("CARGO_PKG_VERSION"),
            self.config
                .roots
                .iter()
                .map(|r| r.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The full syncs asked for once the roots are watched stand for changes made before
        // this start: owed from now (lag, checkpoints), not from then.
        if self.cli.full_sync_first || self.recover_after_ready {
            for root in 0..self.config.roots.len() {
                self.note_unseen(root);
            }
        }
        let mut shutdown_deadline: Option<Instant> = None;
        self.timers
            .reschedule(Instant::now(), schedule_of(&self.config));
        loop {
            self.run_timers();
            self.dispatch();
            self.advance_checkpoints();
            self.refresh_status();
            self.save_versions(false);
            self.undo_returned_directories();
            if self.stopping && self.in_flight == 0 {
                break;
            }
            if let Some(deadline) = shutdown_deadline {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        in_flight = self.in_flight,
                        "rsync still running after {:?}: terminating it",
                        SHUTDOWN_GRACE
                    );
                    self.runner.terminate_all();
                    shutdown_deadline = Some(Instant::now() + Duration::from_secs(5));
                }
            }
            let timeout = self.next_wakeup();
            match self.rx.recv_timeout(timeout) {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.stopping && shutdown_deadline.is_none() {
                shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                // Idle warm rsyncs have read no path: ended now, by PID.
                self.runner.close_warm();
            }
        }
        self.runner.close_warm();
        // After the last runs (a master's end would cut their sessions).
        self.runner.close_masters();
        self.drain_watchers();
        self.stop_watchers();
        self.save_journal();
        self.save_versions(true);
        self.save_state();
        if let Some(plugins) = self.plugins.take() {
            plugins.shutdown(Duration::from_secs(5));
        }
        tracing::info!("sersyncd stopped");
        self.exit_code
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut wake = Duration::from_secs(1);
        for lane in self.lanes.iter().map(|lane| lane.id) {
            if self.queue.lane_has_work(lane) && !self.queue.lane_busy(lane) {
                if let Some(at) = self.queue.lane_not_before(lane) {
                    wake = wake.min(at.saturating_duration_since(now));
                }
                if let Some(at) = self.queue.lane_next_deferred(lane) {
                    wake = wake.min(at.saturating_duration_since(now));
                }
                if let Some(at) = self.queue.lane_cools_at(lane) {
                    wake = wake.min(at.saturating_duration_since(now));
                }
            }
            if let Some(at) = self.queue.lane_large_not_before(lane) {
                wake = wake.min(at.saturating_duration_since(now));
            }
        }
        wake = wake.min(self.timers.next().saturating_duration_since(now));
        if !self.ready {
            wake =
                wake.min((self.watchers_started + READY_DEADLINE).saturating_duration_since(now));
        }
        if let Some(at) = self.notifier.next_ping() {
            wake = wake.min(at.saturating_duration_since(now));
        }
        wake.max(Duration::from_millis(1))
    }

    /// Whether pruning the remotes' soft-delete directories is on (once ready).
    fn prunes(&self) -> bool {
        self.ready && self.config.rsync.soft_delete.is_some()
    }

    fn on_overflow(&mut self, root: RootId) {
        self.note_unseen(root);
        match self.timers.overflowed(root, Instant::now()) {
            Overflowed::RescanNow(roots) => self.rescan_overflowed(roots),
            Overflowed::Deferred { first: true, wait } => tracing::warn!(
                root = %self.root_path(root).display(),
                in_s = wait.as_secs(),
                "inotify overflowed again: next rescan deferred"
            ),
            Overflowed::Deferred { first: false, .. } => {}
        }
    }

    /// `root` may have missed changes from now on (unless it already may have).
    fn note_unseen(&mut self, root: RootId) {
        if !self.unseen_since.iter().any(|(r, _)| *r == root) {
            self.unseen_since.push((root, self.queue.clock()));
        }
    }

    /// When `root` may first have missed a change, if it may have.
    fn unseen_of(&self, root: RootId) -> Option<crate::queue::Seen> {
        self.unseen_since
            .iter()
            .find(|(r, _)| *r == root)
            .map(|(_, seen)| *seen)
    }

    /// [`Daemon::unseen_of`], forgetting it (its full sync is being asked for with that
    /// stamp).
    fn take_unseen(&mut self, root: RootId) -> Option<crate::queue::Seen> {
        let since = self.unseen_of(root);
        self.unseen_since.retain(|(r, _)| *r != root);
        since
    }

    /// Asks for a rescan of `root`, owed from when it may first have missed a change.
    /// `resolved`: nothing more is missed after it (else the root stays owing).
    fn rescan_unseen(&mut self, root: RootId, resolved: bool) {
        let since = if resolved {
            self.take_unseen(root)
        } else {
            self.unseen_of(root)
        };
        self.queue
            .request_full_sync_since(root, FullSyncReason::Rescan, since);
    }

    /// The oldest change observed and not yet delivered to `lane`: what the queue holds,
    /// a full sync the replica guard holds back, and what its root may have missed.
    fn lane_oldest(&self, lane: &Lane) -> Option<crate::queue::Seen> {
        [self.timers.held_since(lane.id), self.unseen_of(lane.root)]
            .into_iter()
            .fold(self.queue.lane_oldest(lane.id), crate::queue::older)
    }

    /// Asks for the rescans of roots that overflowed, owed from the first overflow.
    fn rescan_overflowed(&mut self, roots: Vec<RootId>) {
        for root in roots {
            // A root the watch limit still leaves partly unwatched keeps owing.
            let resolved = !self.timers.degraded().contains(&root);
            self.rescan_unseen(root, resolved);
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        if !self.ready && now.duration_since(self.watchers_started) >= READY_DEADLINE {
            let waiting: Vec<String> = self
                .watchers
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.ready)
                .map(|(root, _)| self.root_path(root).display().to_string())
                .collect();
            tracing::warn!(
                "still setting up the watches of {} after {} s (a huge tree, or a hung \
                 filesystem?): ready without them; they catch up by themselves",
                waiting.join(", "),
                READY_DEADLINE.as_secs()
            );
            self.announce_ready();
        }
        for due in self.timers.due(now, self.prunes()) {
            match due {
                Due::OverflowRescan(roots) => {
                    tracing::info!("rescanning after repeated inotify overflows");
                    self.rescan_overflowed(roots);
                }
                Due::PruneTrash => {
                    for lane in &self.lanes {
                        self.runner.prune_trash(lane.id, lane.context.clone());
                    }
                }
                Due::GuardedFullSync(lane, reason, since) => {
                    self.queue.request_full_sync_lane_since(lane, reason, since);
                }
                Due::DegradedResync(roots) => {
                    self.tell_watchers(|| WatchControl::RetryUnwatched);
                    for root in roots {
                        self.rescan_unseen(root, false);
                    }
                }
                Due::Crontab => {
                    tracing::info!("crontab: periodic full sync of every root");
                    for root in 0..self.config.roots.len() {
                        self.queue
                            .request_full_sync(root, FullSyncReason::Scheduled);
                    }
                }
                Due::Replay => {
                    let count = self.replay_failures();
                    if count > 0 {
                        tracing::info!(paths = count, "replaying failed changes now");
                    }
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        // Whatever this input records was seen after everything before it (checkpoints
        // and lag go by it).
        self.queue.observe(Instant::now());
        match input {
            Input::Watch(generation, event) => {
                if generation == self.watcher_generation {
                    self.on_watch(event);
                }
            }
            Input::JobDone(outcome) => self.on_job_done(outcome),
            Input::WatcherFailed(generation, root, err) => {
                if generation == self.watcher_generation {
                    tracing::error!(
                        root = %self.root_path(root).display(),
                        "an inotify reader stopped: {err}; stopping so systemd can restart"
                    );
                    self.stopping = true;
                    self.exit_code = exit::SOFTWARE;
                }
            }
            Input::Signal(signal) => self.on_signal(signal),
            Input::Control(command) => self.on_command(command),
        }
        self.log_folds();
    }

    /// Offers the D-Bus interface; without a bus the daemon keeps working, uncontrolled.
    fn start_control(&mut self) {
        if self.cli.no_dbus {
            return;
        }
        self.publish_status(true);
        let (events_tx, events_rx) = mpsc::channel();
        let mut options =
            control::ServeOptions::new(self.instance.clone(), self.cli.config.clone());
        options.bus = self.cli.bus;
        options.bus_address = self.cli.bus_address.clone();
        let tx = self.tx.clone();
        let commands: Box<dyn Fn(Command) + Send + Sync> = Box::new(move |command| {
            let _ = tx.send(Input::Control(command));
        });
        match control::serve(options, Arc::clone(&self.status), commands, events_rx) {
            Ok(handle) => {
                tracing::info!(bus_name = %handle.bus_name(), "D-Bus control interface ready");
                self.control = Some(handle);
                self.events = Some(events_tx);
            }
            Err(err) => tracing::warn!(
                "D-Bus control interface not available ({err}); replication runs without it"
            ),
        }
    }

    /// Answers scrapes on `listener` from the published snapshot, on a thread of its own.
    fn serve_metrics(&mut self, listener: TcpListener) {
        let started = MetricsServer::start(
            listener,
            Arc::clone(&self.status),
            self.instance.clone(),
            self.cli.config.clone(),
        );
        match started {
            Ok(server) => {
                let address = server.address();
                tracing::info!(%address, "metrics: answering scrapes at http://{address}/metrics");
                self.metrics = Some(server);
            }
            Err(err) => tracing::error!("metrics: cannot start the listener: {err}"),
        }
    }

    /// After a reload: listens where `<metrics listen>` now says (unless
    /// `--metrics-listen` decides). A new address is bound before the old one is let go;
    /// when it cannot be had, the old listener stays (or, when it holds the port the new
    /// address needs, is let go and taken back if the new one still fails).
    fn rebind_metrics(&mut self) {
        if self.cli.metrics_listen.is_some() {
            return;
        }
        let wanted = metrics_address(&self.cli, &self.config);
        let current = self.metrics.as_ref().map(MetricsServer::address);
        if wanted.as_ref().map(|(address, _)| *address) == current {
            return;
        }
        let Some((address, given)) = wanted else {
            self.metrics = None;
            tracing::info!("metrics: <metrics listen> removed, the listener is closed");
            return;
        };
        let listener = match MetricsServer::bind(address) {
            Ok(listener) => Ok(listener),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && current.is_some() => {
                // Perhaps ours: the old listener holds the port (e.g. 127.0.0.1:9150 to
                // 0.0.0.0:9150).
                self.metrics = None;
                MetricsServer::bind(address)
            }
            Err(err) => Err(err),
        };
        match listener {
            Ok(listener) => {
                self.metrics = None;
                self.serve_metrics(listener);
            }
            Err(err) => {
                tracing::error!("metrics: cannot listen on {address} ({given}): {err}");
                match (&self.metrics, current) {
                    (Some(server), _) => tracing::warn!(
                        "metrics: still answering at http://{}/metrics",
                        server.address()
                    ),
                    (None, Some(old)) => match MetricsServer::bind(old) {
                        Ok(listener) => self.serve_metrics(listener),
                        Err(err) => tracing::error!(
                            "metrics: cannot listen on {old} again either ({err}): no metrics \
                             until a reload with a usable address"
                        ),
                    },
                    (None, None) => {}
                }
            }
        }
    }

    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            // The snapshot is refreshed before the reply, so a status read right after
            // the call already shows the new state.
            Command::Pause(reply) => {
                self.set_paused(true);
                self.publish_status(true);
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.set_paused(false);
                self.publish_status(true);
                let _ = reply.send(());
            }
            Command::RetryFailed(reply) => {
                let queued = self.replay_failures().max(self.journal.len());
                tracing::info!(
                    paths = queued,
                    "retrying failed changes now (operator request)"
                );
                let _ = reply.send(u32::try_from(queued).unwrap_or(u32::MAX));
            }
            Command::FullSync { root, force, reply } => {
                let _ = reply.send(self.request_full_sync_job(root, force));
            }
            Command::ListFailures(reply) => {
                let ssh = self.config.rsync.ssh;
                let records = self
                    .journal
                    .iter()
                    .map(|(key, path, info)| FailureRecord {
                        remote: crate::config::Remote {
                            ip: key.remote_ip.clone(),
                            name: key.remote_name.clone(),
                        }
                        .label(ssh),
                        root: key.root.clone(),
                        path: path.to_vec(),
                        rsync_exit: info.exit_code,
                        message: info.message.clone(),
                        since: info.since,
                    })
                    .collect();
                let _ = reply.send(records);
            }
            Command::Reload(reply) => {
                let _ = reply.send(self.reload());
            }
            Command::Checkpoint { root, reply } => {
                let _ = reply.send(self.ask_checkpoint(root));
            }
            Command::CheckpointStatus { id, reply } => {
                let _ = reply.send(self.checkpoint_state(id));
            }
        }
        self.publish_status(true);
    }

    fn set_paused(&mut self, paused: bool) {
        if self.paused != paused {
            tracing::info!(
                "{} (operator request)",
                if paused {
                    "paused: changes are collected and coalesced, nothing is sent"
                } else {
                    "resumed"
                }
            );
        }
        self.paused = paused;
        self.queue.set_paused(paused);
        self.runner.pause_warm(paused);
        self.runner.pause_masters(paused);
    }

    fn request_full_sync_job(&mut self, root: Option<PathBuf>, force: bool) -> Result<u64, String> {
        let roots = self.roots_named(root.as_deref())?;
        let reason = if force {
            FullSyncReason::Forced
        } else {
            FullSyncReason::Scheduled
        };
        for &id in &roots {
            self.queue.request_full_sync(id, reason);
        }
        if force {
            for &root in &roots {
                let path = self.root_path(root).to_path_buf();
                if self.deletions_held.iter().any(|(held, _)| *held == path) {
                    tracing::warn!(root = %path.display(), "held deletions released by the operator");
                }
                self.deletions_held.retain(|(held, _)| *held != path);
                self.deletion_windows.forget(&path);
            }
            self.save_held();
            self.apply_guards();
            // The forced run replaces the held ones, and owes what they stood for.
            for lane in self.lanes.iter().filter(|lane| roots.contains(&lane.root)) {
                if let Some(since) = self.timers.held_since(lane.id) {
                    self.queue.owe_unseen_since(lane.id, since);
                }
            }
            let lanes = &self.lanes;
            self.timers.retain_held_full_syncs(|id| {
                !lanes
                    .iter()
                    .any(|lane| lane.id == id && roots.contains(&lane.root))
            });
        }
        // The full sync that counts is the next one to start on each lane.
        let waiting: Vec<(LaneId, u64)> = self
            .lanes
            .iter()
            .filter(|lane| roots.contains(&lane.root))
            .map(|lane| (lane.id, lane.full_syncs_started + 1))
            .collect();
        let lanes = waiting.len();
        let id = self.full_sync_requests.open(root, waiting);
        tracing::info!(job = id, lanes, "full sync requested");
        self.finish_full_sync_jobs();
        Ok(id)
    }

    /// Fixes a checkpoint over the remotes of `root` (all: `None`) and answers its id.
    fn ask_checkpoint(&mut self, root: Option<PathBuf>) -> Result<u64, String> {
        let roots = self.roots_named(root.as_deref())?;
        let lanes = self
            .lanes
            .iter()
            .filter(|lane| roots.contains(&lane.root))
            .map(|lane| lane.id)
            .collect();
        let (id, start) = self.checkpoints.ask(lanes);
        if start {
            self.start_drain_round();
        }
        Ok(id)
    }

    /// Asks every watcher to report what the kernel has queued, for the checkpoints.
    fn start_drain_round(&mut self) {
        loop {
            self.tell_watchers(|| WatchControl::Drain);
            let roots = (0..self.watchers.len()).collect();
            if !self
                .checkpoints
                .round_started(roots, self.queue.clock().seq)
            {
                break;
            }
        }
    }

    /// Tells who waits that their checkpoints are reached.
    fn advance_checkpoints(&mut self) {
        if !self.checkpoints.any_open() {
            return;
        }
        let owed: Vec<(LaneId, Option<u64>)> = self
            .lanes
            .iter()
            .map(|lane| (lane.id, self.lane_oldest(lane).map(|seen| seen.seq)))
            .collect();
        let reached = self.checkpoints.advance(
            |id| {
                owed.iter()
                    .find(|(lane, _)| *lane == id)
                    .map(|(_, seq)| *seq)
            },
            Instant::now(),
        );
        for id in reached {
            tracing::debug!(checkpoint = id, "checkpoint reached");
            self.emit(Event::CheckpointReached { id });
        }
    }

    /// Where checkpoint `id` stands, in operators' words.
    fn checkpoint_state(&self, id: u64) -> Option<control::CheckpointState> {
        Some(match self.checkpoints.progress(id)? {
            Progress::Reached => control::CheckpointState::Reached,
            Progress::Behind(lanes) => control::CheckpointState::Behind(
                self.lanes
                    .iter()
                    .filter(|lane| lanes.contains(&lane.id))
                    .map(|lane| lane.label.clone())
                    .collect(),
            ),
            Progress::Draining(roots) => control::CheckpointState::Draining(
                roots
                    .into_iter()
                    .map(|root| self.root_path(root).to_path_buf())
                    .collect(),
            ),
        })
    }

    /// The roots `root` names: all of them for `None`, else the one whose path it is
    /// (by name, or else by where it resolves).
    fn roots_named(&self, root: Option<&Path>) -> Result<Vec<RootId>, String> {
        match root {
            None => Ok((0..self.config.roots.len()).collect()),
            Some(path) => {
                // By name first; resolving paths touches the roots' filesystems, and one of
                // them may hang: bounded, so the loop never waits on it.
                let canonical = |p: &Path| {
                    let p = p.to_path_buf();
                    crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
                        std::fs::canonicalize(p).ok()
                    })
                    .flatten()
                };
                let found = self
                    .config
                    .roots
                    .iter()
                    .position(|r| r.path == *path)
                    .or_else(|| {
                        let wanted = canonical(path).unwrap_or_else(|| path.to_path_buf());
                        self.config
                            .roots
                            .iter()
                            .position(|r| canonical(&r.path).is_some_and(|c| c == wanted))
                    });
                match found {
                    Some(id) => Ok(vec![id]),
                    None => Err(format!(
                        "{} is not a watch root of this instance",
                        path.display()
                    )),
                }
            }
        }
    }

    /// Notes that full sync number `number` of `lane` ended and reports the requests that
    /// are complete.
    fn full_sync_done(&mut self, lane: LaneId, number: u64, success: bool) {
        self.full_sync_requests.lane_done(lane, number, success);
        self.finish_full_sync_jobs();
    }

    fn finish_full_sync_jobs(&mut self) {
        for finished in self.full_sync_requests.take_finished() {
            tracing::info!(
                job = finished.id,
                success = finished.success,
                "requested full sync finished"
            );
            self.emit(Event::FullSyncFinished {
                job_id: finished.id,
                root: finished.root,
                success: finished.success,
            });
        }
    }

    /// Refreshes the snapshot the D-Bus adapter reads (at most once a second unless
    /// `now`).
    fn publish_status(&mut self, now: bool) {
        let at = Instant::now();
        if !now
            && self
                .last_snapshot
                .is_some_and(|last| at.duration_since(last) < Duration::from_secs(1))
        {
            return;
        }
        self.last_snapshot = Some(at);
        let snapshot = self.snapshot();
        match self.status.write() {
            Ok(mut status) => *status = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    fn on_signal(&mut self, signal: i32) {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal {
            SIGTERM | SIGINT if !self.stopping => {
                tracing::info!(
                    in_flight = self.in_flight,
                    "stopping: finishing the rsync runs in flight"
                );
                self.notifier.stopping();
                self.stopping = true;
            }
            SIGHUP => {
                let _ = self.reload();
            }
            _ => {}
        }
    }

    fn reload(&mut self) -> Result<(), String> {
        self.notifier.reloading();
        tracing::info!(config = %self.cli.config.display(), "reloading the configuration");
        let result = match config::load(&self.cli.config) {
            Err(diagnostics) => {
                let mut text = String::new();
                for diagnostic in &diagnostics {
                    tracing::error!("{diagnostic}");
                    text.push_str(&diagnostic.to_string());
                    text.push('\n');
                }
                tracing::error!("the new configuration is invalid; keeping the running one");
                Err(text)
            }
            Ok((config, warnings)) => {
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                self.apply_config(config);
                Ok(())
            }
        };
        self.notifier.ready();
        result
    }

    /// Swaps in a new config whole. Lanes that exist in both (same root path and remote)
    /// keep their id and everything queued for them, jobs in flight included; new lanes
    /// get a full sync; removed lanes drop their work (their outcomes, when they come,
    /// find no lane). Directories the watch limit left out are tried again: the usual
    /// reason to reload is a raised limit.
    fn apply_config(&mut self, config: Config) {
        // Warm rsyncs were started with the old options (and lanes may go): ended by PID.
        self.runner.cool_warm();
        let mut next_id = self.next_lane_id;
        let mut new_lanes = build_lanes(&config, &self.lanes, &mut next_id);
        self.next_lane_id = next_id;
        // ssh connection masters stay for the remotes that stay (the same ssh command,
        // login and host); the others end once no run over them is left.
        self.runner.keep_masters(
            &new_lanes
                .iter()
                .map(|lane| &lane.context.transport)
                .collect::<Vec<_>>(),
        );
        for lane in &mut new_lanes {
            if let Some(old) = self.lanes.iter().find(|old| old.id == lane.id) {
                // Health and progress carry over; the context is the new config's.
                lane.health = old.health.clone();
                lane.large_health = old.large_health.clone();
                lane.full_syncs_started = old.full_syncs_started;
                lane.full_sync_running = old.full_sync_running;
                lane.job_started = old.job_started;
                lane.stalled = old.stalled;
                lane.runs = old.runs;
                lane.bytes_sent = old.bytes_sent;
                lane.progress = old.progress.clone();
                lane.progress_announced = old.progress_announced;
            }
        }
        let added: Vec<LaneId> = new_lanes
            .iter()
            .filter(|lane| !self.lanes.iter().any(|old| old.id == lane.id))
            .map(|lane| lane.id)
            .collect();
        let large_busy: Vec<LaneId> = self
            .lanes
            .iter()
            .map(|lane| lane.id)
            .filter(|&lane| self.queue.lane_large_busy(lane))
            .collect();
        let removed = self.queue.reconfigure(&queue_layout(&new_lanes));
        self.queue.set_max_pending(config.max_pending);
        for old in &self.lanes {
            if !new_lanes.iter().any(|lane| lane.id == old.id) {
                if old.job_started.is_some() {
                    self.retired_in_flight.push((old.id, old.key()));
                }
                if large_busy.contains(&old.id) {
                    self.retired_in_flight.push((old.id, old.key()));
                }
            }
        }
        for &lane in &added {
            self.queue
                .request_full_sync_lane(lane, FullSyncReason::Rescan);
        }
        if !removed.is_empty() {
            tracing::info!(
                removed = removed.len(),
                "remotes no longer in the config: their queued changes were dropped"
            );
            self.full_sync_requests.forget_lanes(&removed);
        }
        self.lanes = new_lanes;
        if !removed.is_empty() {
            // Changes that every remaining remote of their root has: the plugin hears now.
            let lanes = &self.lanes;
            let complete = self.deliveries.forget_lanes(&removed, |root| {
                lanes
                    .iter()
                    .filter(|lane| lane.context.root == root)
                    .map(|lane| lane.id)
                    .collect()
            });
            for (root, path, action) in complete {
                let (_, remotes) = self.lanes_of_root(&root);
                self.submit_plugin(&root, &path, action, remotes);
            }
        }
        self.apply_guards();
        let lanes = &self.lanes;
        self.owed_after_ready
            .retain(|&id| lanes.iter().any(|lane| lane.id == id));
        self.timers
            .retain_held_full_syncs(|id| lanes.iter().any(|lane| lane.id == id));
        self.finish_full_sync_jobs();
        let spec = watch_spec(&config, self.cli.watch_backend);
        let rewatch = !spec.watches_like(&watch_spec(&self.config, self.cli.watch_backend));
        // Roots that may have missed changes keep owing under their new numbers (new
        // watchers ask for their rescans with these stamps once ready, see `Ready`).
        let old_roots = &self.config.roots;
        self.unseen_since = std::mem::take(&mut self.unseen_since)
            .into_iter()
            .filter_map(|(root, seen)| {
                let path = &old_roots.get(root)?.path;
                let now = config.roots.iter().position(|r| r.path == *path)?;
                Some((now, seen))
            })
            .collect();
        if !rewatch && !self.timers.degraded().is_empty() {
            // The watchers report what they find below the directories they can watch
            // now; a full sync covers what was deleted there meanwhile.
            self.tell_watchers(|| WatchControl::RetryUnwatched);
            for root in 0..config.roots.len() {
                // Watched now, or a new WatchLimit says otherwise (and owes again).
                self.rescan_unseen(root, true);
            }
        }
        if rewatch || !self.timers.degraded().is_empty() {
            self.timers.clear_degraded();
        }
        if !rewatch {
            // With other roots or filters the watchers are replaced below; an old one told
            // to reconfigure would rebuild its root (or index a root that is gone).
            self.tell_watchers(|| WatchControl::Reconfigure(spec.clone()));
        }
        self.config = config;
        self.rebind_metrics();
        if rewatch {
            // Other roots, or other filters: new watchers, and each root is rescanned once
            // its watches are in place (see `Ready`).
            if let Err(err) = self.start_watchers() {
                self.stopping = true;
                if self.watch_refused {
                    // The reloaded config asks for fanotify where it is refused: a config
                    // error (exit 78, which the unit does not restart).
                    tracing::error!("{err}; stopping");
                    self.exit_code = exit::CONFIG;
                } else {
                    tracing::error!("{err}; stopping so systemd can restart");
                    self.exit_code = exit::SOFTWARE;
                }
            }
        }
        self.timers
            .reschedule(Instant::now(), schedule_of(&self.config));
        tracing::info!(
            lanes = self.lanes.len(),
            added = added.len(),
            "configuration reloaded"
        );
        self.log_run_users();
    }

    /// Says whose credentials each root's rsync runs take (resolved again at every job),
    /// and what cannot run. Bounded: a root on a filesystem that stopped answering must not
    /// hold up the loop.
    fn log_run_users(&self) {
        for root in &self.config.roots {
            let path = root.path.display();
            let (run_as, probed) = (root.run_as.clone(), root.path.clone());
            let resolved = crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
                crate::sync::identity::Identity::resolve(&run_as, &probed)
            });
            let Some(resolved) = resolved else {
                tracing::warn!(root = %path, "cannot tell who rsync runs as: the root does not answer");
                continue;
            };
            match resolved {
                Ok(None) => tracing::info!(root = %path, "rsync runs as root for this root"),
                Ok(Some(who)) if self.config.rsync.ssh => tracing::warn!(
                    root = %path,
                    user = %who.name,
                    "rsync runs as {} for this root: over ssh, that user's keys and known_hosts \
                     are used",
                    who.name
                ),
                Ok(Some(who)) => {
                    tracing::info!(root = %path, user = %who.name, "rsync runs as {}", who.name)
                }
                Err(err) => tracing::warn!(root = %path, "{err}"),
            }
        }
    }

    fn on_watch(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Changes(changes) => {
                let mut removals: Vec<(RootId, usize)> = Vec::new();
                for change in changes {
                    crate::panics::inject("loop", &change.path);
                    if matches!(change.action, Action::Remove { .. }) {
                        match removals.iter_mut().find(|(root, _)| *root == change.root) {
                            Some((_, count)) => *count += 1,
                            None => removals.push((change.root, 1)),
                        }
                    }
                    if self.config.debug || self.cli.verbose {
                        tracing::debug!(
                            sersync_path = %String::from_utf8_lossy(&change.path),
                            action = ?change.action,
                            "change"
                        );
                    }
                    self.counters.events += 1;
                    // `-m NAME`: the plugin alone, no rsync.
                    if self.cli.module.is_some() {
                        let root = self.root_path(change.root).to_path_buf();
                        self.submit_plugin(&root, &change.path, change.action, Vec::new());
                        continue;
                    }
                    let mut action = change.action;
                    // Found in a directory the peer's run brought back (it made the file
                    // before the directory was watched): an arrival too.
                    let arrived = action == Action::Arrived
                        || (action == Action::Created
                            && self.in_returned_directory(change.root, &change.path));
                    // Renamed here from another path of the tree: this host's user's (the
                    // peer's runs never rename one path of the tree to another), never a
                    // stale copy coming back (seed 28: a symlink renamed away and back).
                    if matches!(action, Action::Arrived | Action::Sync | Action::Created)
                        && !change.moved_within
                        && self.undo_stale_arrival(change.root, &change.path, arrived)
                    {
                        action = Action::Remove { dir: false };
                    } else if action == Action::Arrived
                        && self.keep_own_write_over_an_older_arrival(change.root, &change.path)
                    {
                        // This host's version is back in place: its own change now,
                        // reported by the watcher as the rename back and sent from there.
                        continue;
                    } else if action == Action::Arrived {
                        self.written_here
                            .remove(&(change.root, change.path.clone()));
                        self.keep_returned_directories_of(change.root, &change.path, true);
                        if change.resent {
                            self.note_returned_directory(change.root, &change.path);
                        }
                        self.record_arrival(change.root, &change.path);
                    } else if matches!(action, Action::Sync | Action::Created)
                        && self.config.rsync.two_way
                    {
                        self.note_written_here(change.root, &change.path);
                        // Made or changed here by the user: here again, and a directory
                        // is a new one (not for what is found in a new directory, which
                        // the peer's run may have made).
                        if action == Action::Sync {
                            self.note_made_here(change.root, &change.path);
                        }
                        self.keep_returned_directories_of(change.root, &change.path, false);
                    } else if let Action::Remove { dir } = action {
                        // A file unlinked here is this host's: the peer's runs rename.
                        let own = change.unlinked && !dir;
                        if self.undone_here(change.root, &change.path) {
                            // Moved aside by `undo_stale_arrival`: its deletion is queued
                            // already, dated by the user's removal.
                        } else if !own
                            && self.removed_by_peer(change.root, &change.path, dir, change.read_at)
                        {
                            action = Action::Arrived;
                            self.keep_returned_directories_of(change.root, &change.path, true);
                            self.record_arrival(change.root, &change.path);
                        } else {
                            self.record_removal(change.root, &change.path, own);
                            self.keep_returned_directories_of(change.root, &change.path, false);
                        }
                    }
                    self.queue.push(change.root, &change.path, action);
                }
                for (root, count) in removals {
                    self.count_deletions(root, count);
                }
            }
            WatchEvent::Ready { root, watches } => {
                let Some(watcher) = self.watchers.get_mut(root) else {
                    return;
                };
                watcher.ready = true;
                watcher.watches = watches;
                self.watches = self.watchers.iter().map(|w| w.watches).sum();
                self.record_fs(root, false);
                self.prepare_two_way_root(root);
                let lanes = &self.lanes;
                let (owed_here, owed_elsewhere): (Vec<LaneId>, Vec<LaneId>) = self
                    .owed_after_ready
                    .iter()
                    .partition(|&&id| lanes.iter().any(|lane| lane.id == id && lane.root == root));
                self.owed_after_ready = owed_elsewhere;
                for lane in owed_here {
                    self.queue
                        .request_full_sync_lane(lane, FullSyncReason::Recovery);
                }
                if self.watcher_generation > 1 {
                    // A watcher started by a reload: the root is rescanned now that its
                    // watches are in place.
                    tracing::info!(
                        root = %self.root_path(root).display(),
                        watches,
                        "watching the root anew; rescanning it"
                    );
                    let since = self.take_unseen(root);
                    self.queue
                        .request_full_sync_since(root, FullSyncReason::Rescan, since);
                } else if self.cli.full_sync_first || self.recover_after_ready {
                    // Owed since the start (see `run`), not since now.
                    let since = self.take_unseen(root);
                    let reason = if self.recover_after_ready {
                        FullSyncReason::Recovery
                    } else {
                        FullSyncReason::Initial
                    };
                    self.queue.request_full_sync_since(root, reason, since);
                }
                if !self.ready && self.watchers.iter().all(|w| w.ready) {
                    self.announce_ready();
                }
            }
            WatchEvent::WatchCount { root, count } => {
                if let Some(watcher) = self.watchers.get_mut(root) {
                    watcher.watches = count;
                }
                self.watches = self.watchers.iter().map(|w| w.watches).sum();
            }
            WatchEvent::DirRenamed { root, from, to } => self.queue.note_rename(root, &from, &to),
            WatchEvent::ResentOutcome { root, paths } => {
                for (path, made) in paths {
                    self.note_resent_outcome(root, &path, made);
                }
            }
            WatchEvent::PeerRemoves {
                root,
                paths,
                notice,
            } => {
                if let Some((_, versions, _)) = self.two_way_parts(root) {
                    for path in &paths {
                        versions.record_peer_lacks(path);
                    }
                }
                // Saved before the notice goes: a kill -9 in between finds it at the
                // start (`prepare_two_way_root`).
                self.save_versions(false);
                let _ = std::fs::remove_file(&notice);
            }
            WatchEvent::Overflow { root } | WatchEvent::Rescan { root } => self.on_overflow(root),
            WatchEvent::Drained { root } => {
                if self.checkpoints.drained(root, self.queue.clock().seq) {
                    self.start_drain_round();
                }
            }
            WatchEvent::RootLost { root, reason } => {
                tracing::error!(
                    root = %self.root_path(root).display(),
                    "cannot watch root: {reason}; retrying every few seconds"
                );
            }
            WatchEvent::RootRestored { root, watches } => {
                if let Some(watcher) = self.watchers.get_mut(root) {
                    watcher.watches = watches;
                }
                self.watches = self.watchers.iter().map(|w| w.watches).sum();
                tracing::info!(
                    root = %self.root_path(root).display(),
                    "watching root again; rescanning it"
                );
                self.record_fs(root, false);
                self.prepare_two_way_root(root);
                self.queue.request_full_sync(root, FullSyncReason::Rescan);
            }
            WatchEvent::WatchLimit { root, path } => {
                tracing::warn!(
                    sersync_path = %path.display(),
                    "not watched (inotify watch limit): the root gets a full sync now and every \
                     {} minutes until the limit is raised",
                    timers::DEGRADED_RESYNC.as_secs() / 60
                );
                self.note_unseen(root);
                self.rescan_unseen(root, false);
                self.timers.watch_limit_hit(root, Instant::now());
            }
        }
    }

    /// READY=1: the watches are in place (or the deadline passed); the D-Bus interface
    /// starts now.
    fn announce_ready(&mut self) {
        self.ready = true;
        let watches = self.watches;
        // How fast the tree was read and watched: what a big tree's start-up costs.
        let took = self.watchers_started.elapsed();
        let per_second = (watches as f64 / took.as_secs_f64().max(0.001)).round();
        tracing::info!(
            watches,
            ready_ms = took.as_millis(),
            "watching {watches} directories (ready in {:.1} s, {per_second} directories/s)",
            took.as_secs_f64()
        );
        self.check_watch_headroom();
        if self.control.is_none() {
            self.start_control();
        }
        let line = self.snapshot().line();
        self.notifier.ready_with_status(&line);
    }

    /// Reports watchers blocked in a filesystem call, and ones that came back.
    fn check_watchers(&mut self) {
        let mut news = Vec::new();
        for (root, watcher) in self.watchers.iter_mut().enumerate() {
            let silent = watcher.heartbeat.silent_for();
            if !watcher.stuck && silent >= WATCHER_STUCK {
                watcher.stuck = true;
                news.push((root, Some(silent)));
            } else if watcher.stuck && silent < WATCHER_STUCK {
                watcher.stuck = false;
                news.push((root, None));
            }
        }
        for (root, silent) in news {
            match silent {
                Some(silent) => tracing::error!(
                    root = %self.root_path(root).display(),
                    "the watcher of this root has been blocked for {} s in a filesystem call \
                     (a hung mount?); its changes wait, the other roots go on",
                    silent.as_secs()
                ),
                None => tracing::info!(
                    root = %self.root_path(root).display(),
                    "the watcher of this root is unblocked"
                ),
            }
        }
    }

    /// A root's path, for messages.
    fn root_path(&self, root: RootId) -> &Path {
        self.config
            .roots
            .get(root)
            .map_or(Path::new("?"), |r| r.path.as_path())
    }

    fn check_watch_headroom(&self) {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        if let Some(limit) = read("max_user_watches") {
            if self.watches * 10 > limit * 9 {
                tracing::warn!(
                    watches = self.watches,
                    limit,
                    "close to the inotify watch limit: raise fs.inotify.max_user_watches \
                     (e.g. in /etc/sysctl.d/)"
                );
            }
        }
    }

    fn dispatch(&mut self) {
        if self.stopping || self.lanes.is_empty() {
            return;
        }
        let now = Instant::now();
        let limit = self.cli.worker_limit();
        let count = self.lanes.len();
        // Large-file runs first, so that batches that keep coming do not starve them; but
        // they leave one of the `-n` slots to the batches, which they must not hold back.
        let mut large_in_flight = self
            .lanes
            .iter()
            .filter(|lane| self.queue.lane_large_busy(lane.id))
            .count();
        for at in 0..count {
            if self.in_flight >= limit || (limit > 1 && large_in_flight + 1 >= limit) {
                break;
            }
            let lane_id = self.lanes[at].id;
            // A remote that takes one connection at a time gets a lane's batch or its
            // large run, not both.
            if self.queue.lane_busy(lane_id) && self.runner.is_serial(&self.lanes[at].context) {
                continue;
            }
            if self
                .retired_in_flight
                .iter()
                .any(|(_, key)| *key == self.lanes[at].key())
            {
                continue;
            }
            let Some(job) = self.queue.take_large_job(lane_id, now) else {
                continue;
            };
            if let Job::Batch(batch) = &job {
                tracing::debug!(
                    sersync_remote = %self.lanes[at].label,
                    "sending large files: {}",
                    crate::sync::describe_batch(&batch.entries)
                );
            }
            let context = self.lanes[at].context.clone();
            let tx = self.tx.clone();
            self.in_flight += 1;
            large_in_flight += 1;
            self.runner.start(job, context, move |outcome| {
                let _ = tx.send(Input::JobDone(outcome));
            });
        }
        for step in 0..count {
            if self.in_flight >= limit {
                break;
            }
            let at = (self.next_lane + step) % count;
            let lane_id = self.lanes[at].id;
            if !self.retired_in_flight.is_empty() {
                let key = self.lanes[at].key();
                if self.retired_in_flight.iter().any(|(_, k)| *k == key) {
                    continue;
                }
            }
            if self.queue.lane_large_busy(lane_id) && self.runner.is_serial(&self.lanes[at].context)
            {
                continue;
            }
            let Some(job) = self.queue.take_job(lane_id, now) else {
                continue;
            };
            let lane = &mut self.lanes[at];
            match &job {
                Job::Batch(batch) => tracing::debug!(
                    sersync_remote = %lane.label,
                    "sending {}",
                    crate::sync::describe_batch(&batch.entries)
                ),
                Job::FullSync { reason, then, .. } => {
                    tracing::info!(
                        sersync_remote = %lane.label,
                        ?reason,
                        pending = then.len(),
                        "full sync started"
                    )
                }
            }
            lane.full_sync_running = matches!(job, Job::FullSync { .. });
            let mut context = lane.context.clone();
            if lane.full_sync_running {
                lane.full_syncs_started += 1;
                let progress = Arc::new(crate::sync::progress::JobProgress::default());
                context.progress = Some(Arc::clone(&progress));
                lane.progress = Some(progress);
                lane.progress_announced = None;
            }
            // Wall-clock time of the job's oldest change (two-way deletions compare it with
            // the peer's modification times).
            let oldest = self.queue.lane_oldest(lane_id).map_or(now, |seen| seen.at);
            context.changes_since = std::time::SystemTime::now()
                .checked_sub(now.saturating_duration_since(oldest))
                .unwrap_or(std::time::UNIX_EPOCH);
            lane.job_started = Some(now);
            lane.stalled = false;
            let tx = self.tx.clone();
            self.in_flight += 1;
            self.runner.start(job, context, move |outcome| {
                let _ = tx.send(Input::JobDone(outcome));
            });
        }
        self.next_lane = (self.next_lane + 1) % count.max(1);
    }

    /// Reports lanes whose rsyncs moved no data for [`STALL_WARNING`] (checked every few
    /// seconds): a remote that accepted the connection and stopped reading.
    fn check_stalls(&mut self) {
        let now = Instant::now();
        if self
            .last_stall_check
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(2))
        {
            return;
        }
        self.last_stall_check = Some(now);
        self.check_watchers();
        let silence = self.runner.silence();
        let mut changed = Vec::new();
        for lane in &mut self.lanes {
            let silent = silence.get(&lane.id).copied().unwrap_or_default();
            if lane.job_started.is_some() && !lane.stalled && silent >= STALL_WARNING {
                lane.stalled = true;
                tracing::warn!(
                    sersync_remote = %lane.label,
                    silent_s = silent.as_secs(),
                    "rsync has moved no data for {} s: the remote may be stalled (the run ends \
                     at rsync's --timeout and is retried)",
                    silent.as_secs()
                );
                changed.push(lane.label.clone());
            }
        }
        for remote in changed {
            self.emit(Event::StateChanged {
                remote,
                state: "stalled".to_owned(),
            });
        }
    }

    fn on_job_done(&mut self, mut outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let lane_id = outcome.job.lane();
        // One entry per job a removed lane still ran (its batch and its large-file run).
        if let Some(retired) = self
            .retired_in_flight
            .iter()
            .position(|(id, _)| *id == lane_id)
        {
            self.retired_in_flight.remove(retired);
        }
        let Some(at) = self.lanes.iter().position(|lane| lane.id == lane_id) else {
            // A reload removed the lane while its job ran.
            tracing::debug!("outcome of a job for a remote no longer configured: ignored");
            return;
        };
        let pulled_over_removals = std::mem::take(&mut outcome.pulled_over_removals);
        if !pulled_over_removals.is_empty() {
            // Before the next job of the lane can send them back.
            let root = self.lanes[at].root;
            self.take_back_pulled_over_removals(root, &pulled_over_removals);
        }
        let large_run = matches!(&outcome.job, Job::Batch(batch) if batch.large);
        // The large files the batch left to the large-file run are not its to deliver.
        let handed = std::mem::take(&mut outcome.large);
        if let (false, Job::Batch(batch)) = (handed.is_empty(), &mut outcome.job) {
            batch
                .entries
                .retain(|(path, _)| handed.binary_search_by(|(h, _)| h.cmp(path)).is_err());
        }
        let bytes_sent = self.count_run(at, &outcome);
        if large_run {
            let settlement = self.settle_outcome(at, outcome, JobSlot::Large);
            self.carry_out(at, settlement, None, bytes_sent, JobSlot::Large);
            return;
        }
        if outcome.result.is_done() && matches!(outcome.job, Job::FullSync { .. }) {
            self.full_sync_duration.observe(outcome.elapsed);
        }
        let lane = &mut self.lanes[at];
        let full_sync_number = lane.full_sync_running.then_some(lane.full_syncs_started);
        lane.full_sync_running = false;
        lane.progress = None;
        lane.progress_announced = None;
        lane.job_started = None;
        lane.stalled = false;
        let settlement = self.settle_outcome(at, outcome, JobSlot::Batches);
        let since = self.carry_out(
            at,
            settlement,
            full_sync_number,
            bytes_sent,
            JobSlot::Batches,
        );
        if !handed.is_empty() {
            tracing::info!(
                sersync_remote = %self.lanes[at].label,
                files = handed.len(),
                "{} large file(s) go out in a run of their own",
                handed.len()
            );
            self.queue.hand_large(lane_id, handed, since);
        }
    }

    /// Counts a job of lane `at` by how it ended, and what it sent (sent is sent, however
    /// the job ended; settle consumes the outcome). Returns the bytes sent.
    fn count_run(&mut self, at: usize, outcome: &Outcome) -> u64 {
        let lane = &mut self.lanes[at];
        match outcome.result {
            ref done if done.is_done() => lane.runs.ok += 1,
            RunResult::Exited(23) => lane.runs.partial += 1,
            _ => lane.runs.failed += 1,
        }
        lane.bytes_sent = lane.bytes_sent.saturating_add(outcome.bytes_sent);
        self.counters.bytes = self.counters.bytes.saturating_add(outcome.bytes_sent);
        outcome.bytes_sent
    }

    /// What the end of a job of lane `at` means ([`settle::settle`]).
    fn settle_outcome(
        &mut self,
        at: usize,
        outcome: Outcome,
        slot: JobSlot,
    ) -> (settle::Settlement, settle::Clock) {
        let lane = &mut self.lanes[at];
        let root = lane.context.root.clone();
        let label = lane.label.clone();
        let root_names = move || {
            let configured = root.as_os_str().as_bytes().to_vec();
            // Bounded: the root may sit on a filesystem that stopped answering.
            let resolved = crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
                std::fs::canonicalize(root)
            })
            .and_then(Result::ok)
            .map_or_else(|| configured.clone(), |p| p.as_os_str().as_bytes().to_vec());
            vec![configured, resolved]
        };
        let clock = settle::Clock {
            now: Instant::now(),
            wall: std::time::SystemTime::now(),
        };
        let health = match slot {
            JobSlot::Batches => &mut lane.health,
            JobSlot::Large => &mut lane.large_health,
        };
        let settlement = settle::settle(health, &label, outcome, root_names, clock);
        (settlement, clock)
    }

    /// Does what [`settle::settle`] decided at the end of a job of lane `at` (in `slot`),
    /// which reported sending `bytes_sent` (for its log line). Returns the stamp of the
    /// oldest change the job carried.
    fn carry_out(
        &mut self,
        at: usize,
        (settlement, clock): (settle::Settlement, settle::Clock),
        full_sync_number: Option<u64>,
        bytes_sent: u64,
        slot: JobSlot,
    ) -> Option<crate::queue::Seen> {
        let settle::Settlement {
            succeeded,
            error,
            retry,
            defer,
            journal,
            events,
            delivered,
            whole_root,
            hold_deletions,
            guarded_full_sync,
            record_filesystem,
            report,
        } = settlement;
        let lane_id = self.lanes[at].id;
        let key = self.lanes[at].key();
        if let Some(reason) = hold_deletions {
            self.hold_deletions(at, &reason);
        }
        if record_filesystem {
            let root = self.lanes[at].root;
            self.record_fs(root, true);
        }
        self.log_settlement(at, &report, bytes_sent);
        if error {
            self.counters.errors += 1;
        }
        if succeeded {
            self.counters.batches += 1;
        }
        self.counters.files += delivered.len() as u64;
        if self.plugins.is_some() {
            self.delivered(lane_id, &delivered, whole_root);
        }
        for event in events {
            self.emit(event);
        }
        let mut cleared = 0;
        for op in journal {
            match op {
                settle::JournalOp::Record {
                    paths,
                    code,
                    message,
                } => {
                    self.journal.record(
                        &key,
                        paths.iter().map(Vec::as_slice),
                        code,
                        &message,
                        clock.wall,
                    );
                    self.journal_dirty = true;
                }
                settle::JournalOp::Clear(paths) => {
                    cleared += self.journal.clear(&key, paths.iter().map(Vec::as_slice));
                }
                settle::JournalOp::ClearBelow(dir) => {
                    cleared += self.journal.clear_below(&key, &dir);
                }
                settle::JournalOp::ClearLane => cleared += self.journal.clear_lane(&key),
            }
        }
        if cleared > 0 {
            self.journal_dirty = true;
            if succeeded {
                tracing::info!(sersync_remote = %self.lanes[at].label, cleared, "previously failed changes delivered");
            }
        }
        if let Some(number) = full_sync_number {
            self.full_sync_done(lane_id, number, succeeded);
        }
        let since = match slot {
            JobSlot::Batches => self.queue.finish(lane_id, retry),
            JobSlot::Large => self.queue.finish_large(lane_id, retry),
        };
        if let (true, Some(since)) = (succeeded, since) {
            // From when its oldest change was seen to now: what a reader of the replica
            // waited.
            self.delivery_latency
                .observe(clock.now.saturating_duration_since(since.at));
        }
        for (entries, when) in defer {
            self.queue.defer(lane_id, entries, when, since);
        }
        if let Some((reason, when)) = guarded_full_sync {
            self.timers.hold_full_sync(lane_id, reason, when, since);
        }
        since
    }

    /// The log line of a settled job, with the bytes its runs reported sending (field
    /// `bytes_sent`, `BYTES_SENT` in the journal: what the counters add up).
    fn log_settlement(&self, at: usize, report: &settle::Report, bytes_sent: u64) {
        let lane = &self.lanes[at];
        let remote = &lane.label;
        match report {
            settle::Report::Synced {
                what,
                batch_size,
                elapsed,
                reachable_again,
            } => {
                if *reachable_again {
                    tracing::info!(sersync_remote = %remote, "remote is reachable again");
                }
                tracing::info!(
                    sersync_remote = %remote,
                    bytes_sent,
                    elapsed_ms = elapsed.as_millis() as u64,
                    sersync_batch_size = batch_size,
                    "synced {what}"
                );
            }
            settle::Report::Failed {
                what,
                detail,
                code,
                batch_size,
                retry_in,
                fatal: true,
            } => tracing::error!(
                sersync_remote = %remote,
                bytes_sent,
                retry_in_s = retry_in.as_secs(),
                rsync_exit = code,
                sersync_batch_size = batch_size,
                "{what} failed: {detail} (configuration problem on this side or the remote's; retrying slowly)"
            ),
            settle::Report::Failed {
                what,
                detail,
                code,
                batch_size,
                retry_in,
                fatal: false,
            } => tracing::warn!(
                sersync_remote = %remote,
                bytes_sent,
                retry_in_s = retry_in.as_secs(),
                rsync_exit = code,
                sersync_batch_size = batch_size,
                "{what} failed: {detail}"
            ),
            settle::Report::Partial {
                what,
                detail,
                code,
                failed,
                split: true,
            } => tracing::warn!(
                sersync_remote = %remote,
                bytes_sent,
                failed,
                rsync_exit = code,
                "{what}: some paths failed ({detail}) and rsync's messages do not say \
                 which; tried again in halves in {}s while the lane goes on",
                settle::UNEXPLAINED_RETRY.as_secs()
            ),
            settle::Report::Partial {
                what,
                detail,
                code,
                failed,
                split: false,
            } => tracing::warn!(
                sersync_remote = %remote,
                bytes_sent,
                failed,
                rsync_exit = code,
                "{what}: {failed} path(s) failed ({detail}); retrying them in {}s",
                settle::PARTIAL_RETRY.as_secs()
            ),
            settle::Report::Guarded {
                what,
                reason,
                newly: true,
            } => tracing::error!(
                sersync_remote = %remote,
                bytes_sent,
                root = %lane.context.root.display(),
                "{what} held back: {reason}; nothing is deleted on the remote until the root \
                 is as it was (retrying every {} s), or `sersyncctl full-sync --force`",
                settle::GUARD_RETRY.as_secs()
            ),
            settle::Report::Guarded {
                what,
                reason,
                newly: false,
            } => {
                tracing::debug!(sersync_remote = %remote, bytes_sent, "{what} still held back: {reason}")
            }
        }
    }

    /// Counts what a lane delivered towards the after-sync plugin: a change is handed to it
    /// once every remote of its root has it. `whole_root`: a full sync, which delivered
    /// every change of the root that waited for this lane too.
    fn delivered(&mut self, lane_id: LaneId, entries: &[(Vec<u8>, Action)], whole_root: bool) {
        let Some(root) = self
            .lanes
            .iter()
            .find(|lane| lane.id == lane_id)
            .map(|lane| lane.context.root.clone())
        else {
            return;
        };
        let (lanes_of_root, remotes) = self.lanes_of_root(&root);
        for (path, action) in entries {
            if self
                .deliveries
                .delivered(&root, lane_id, path, *action, &lanes_of_root)
            {
                self.submit_plugin(&root, path, *action, remotes.clone());
            }
        }
        // After the entries, which may complete some of the same changes themselves.
        if whole_root {
            for (path, action) in self.deliveries.covered(&root, lane_id, &lanes_of_root) {
                self.submit_plugin(&root, &path, action, remotes.clone());
            }
        }
    }

    /// The lanes of the root at `root`, and their remotes as the plugins name them.
    fn lanes_of_root(&self, root: &Path) -> (Vec<LaneId>, Vec<String>) {
        let ssh = self.config.rsync.ssh;
        self.lanes
            .iter()
            .filter(|lane| lane.context.root == root)
            .map(|lane| (lane.id, lane.context.transport.remote.label(ssh)))
            .unzip()
    }

    /// Two-way mode: makes the root's incoming directory if it is missing (at start, and
    /// when a root appears or comes back), bounded like every look at a root.
    fn prepare_two_way_root(&mut self, root: RootId) {
        if !self.config.rsync.two_way {
            return;
        }
        let path = self.root_path(root).to_path_buf();
        let made = crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
            crate::sync::two_way::prepare_incoming(&path)
        });
        match made {
            Some(Ok(left)) => {
                self.record_left_notices(root, &left.announced);
                // Saved before the notices go: a kill -9 in between finds them again.
                self.save_versions(false);
                for file in &left.files {
                    let _ = std::fs::remove_file(file);
                }
            }
            Some(Err(err)) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::error!(
                    root = %self.root_path(root).display(),
                    "two-way: cannot make {}: {err} (the peer's pushes fail until it exists)",
                    crate::sync::two_way::INCOMING
                );
            }
            _ => {}
        }
    }

    /// Two-way mode: the directories that notices left while this host was not watching
    /// announced, and that are here, are the peer's runs': versions this host has had.
    /// Unrecorded, its next full sync would take them for its user's new ones, and a
    /// removal the peer's user made meanwhile would not be undone (seed 30). Those they
    /// announced removed, the peer lacks (see `WatchEvent::PeerRemoves`).
    fn record_left_notices(
        &self,
        root: RootId,
        announced: &[(Vec<u8>, crate::sync::two_way::Announced)],
    ) {
        use crate::sync::two_way::Announced;
        let Some((tree, versions, _)) = self.two_way_parts(root) else {
            return;
        };
        for (path, made) in announced {
            if *made == Announced::Removed {
                versions.record_peer_lacks(path);
            } else if matches!(
                made,
                Announced::Directory { .. } | Announced::ResentDirectory { .. }
            ) && std::fs::symlink_metadata(crate::relpath::absolute(tree, path))
                .is_ok_and(|meta| meta.is_dir())
            {
                versions.record(path, crate::sync::two_way::Version::DIRECTORY);
            }
        }
    }

    /// Two-way mode: whether `path` just left the tree because the peer deleted it: its run
    /// moved it into the soft-delete directory (`DIR/YYYY-MM-DD/<path>`, with a ctime of
    /// the last seconds: a rename sets it), and for a file, what lies there is the version
    /// this host had at the path (a local deletion right after the peer replaced the file
    /// finds the older, replaced version there instead). Sent back, the peer's deletion
    /// would return to it as one of this host's (see `sync::two_way`).
    fn removed_by_peer(
        &self,
        root: RootId,
        path: &[u8],
        is_dir: bool,
        read_at: std::time::SystemTime,
    ) -> bool {
        use std::os::unix::fs::MetadataExt;
        // The peer's run moves the path there with the rename whose event this is: the
        // entry there changed when the event was read, within the watcher's latency. One
        // that changed seconds before is another's (seed 32: a second arrival of the same
        // version, 3.7 s before this host's user moved the file into a directory not yet
        // watched, made that move look like the peer's, and it never reached the peer).
        const BEFORE_READ: Duration = Duration::from_secs(2);
        const AFTER_READ: Duration = Duration::from_secs(1);
        // A directory is never moved there (rsync's --backup keeps no directory, only the
        // files in it, and makes the directory there when it moves the first one): a
        // recent one there says only that the peer's run moved something below it, maybe
        // just before this host's user removed the directory. The peer's runs announce
        // the directories they remove (`sync::two_way::Announced`).
        if is_dir {
            return false;
        }
        let Some((tree, versions, soft)) = self.two_way_parts(root) else {
            return false;
        };
        [read_at, read_at - Duration::from_secs(86_400)]
            .iter()
            .any(|day| {
                let Ok(meta) = std::fs::symlink_metadata(trash_path(tree, soft, *day, path)) else {
                    return false;
                };
                let changed = std::time::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(meta.ctime()).unwrap_or(0),
                        u32::try_from(meta.ctime_nsec()).unwrap_or(0),
                    );
                // Moved there after this host last saw the path removed itself: a removal of
                // ours (undoing a stale arrival, say) is never the peer's.
                let recent = changed + BEFORE_READ >= read_at
                    && changed <= read_at + AFTER_READ
                    && versions
                        .removed_at(path)
                        .is_none_or(|removed| removed < changed);
                // A file: the version this host had there. Knowing none (since a restart),
                // a recent arrival in the trash is taken for the peer's: sent back as this
                // host's deletion, the peer's run moving the old copy aside for a new one
                // would delete the new one there, judged by time.
                let history = versions.history(path);
                let same = !meta.is_dir()
                    && (history.is_empty()
                        || history
                            .last()
                            .is_some_and(|known| known.is_local_copy(&meta)));
                recent && same
            })
    }

    /// Two-way mode: whether what just arrived at `path` is a version this host had and
    /// then saw deleted here moments ago, brought back (by the peer's full sync after a
    /// restart, or by an older run) racing that deletion: it is moved into the local
    /// soft-delete directory, and the deletion goes on to the peer, whose copy is that old
    /// version. Without this, the arrival would void the deletion, and the deleted file
    /// would live on both sides. Anything else stays: a version this host never had, one
    /// modified since, or any version once this host has made the path again itself.
    ///
    /// A symlink (or special file) comes back in place, not through the incoming
    /// directory: the peer's full sync pushes it unannounced, so it is judged when it
    /// appears (`arrived` false) by the same rule; a version this host never had, as a
    /// symlink its user makes anew, is never stale.
    fn undo_stale_arrival(&mut self, root: RootId, path: &[u8], arrived: bool) -> bool {
        /// How long after a deletion an old version coming back counts as racing it: a
        /// restore of that version on the peer within this time is undone too (it stays
        /// in the soft-delete directories).
        const RACING: Duration = Duration::from_secs(60);
        let Some((tree, versions, soft)) = self.two_way_parts(root) else {
            return false;
        };
        let Some((removed_at, unlinked)) = versions.removal(path) else {
            return false;
        };
        let now = std::time::SystemTime::now();
        if now.duration_since(removed_at).unwrap_or_default() > RACING {
            return false;
        }
        let abs = crate::relpath::absolute(tree, path);
        let Ok(meta) = std::fs::symlink_metadata(&abs) else {
            return false;
        };
        if meta.is_dir() || (!arrived && meta.is_file()) {
            return false;
        }
        // Judged like the deletion run judges the peer's copy (`two_way::spared`): a
        // version this host had before it saw the deletion, or, for a path or a version
        // older than its history (since a restart), one of an earlier second than the
        // deletion (the deletion run spares the deletion's second). By time only after a
        // file was unlinked here: a removal that was a rename away may have been the
        // peer's run moving the old copy aside for the new version that arrives now.
        let history = versions.history(path);
        if history.iter().any(|known| known.since > removed_at) {
            // This host had the path again after the deletion (its user made it anew,
            // or it arrived and stayed): the deletion is over.
            return false;
        }
        let seconds = |at: std::time::SystemTime| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        };
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let mut had = history
            .iter()
            .filter(|known| known.is_local_copy(&meta))
            .peekable();
        let stale = if had.peek().is_some() {
            // A copy of a version from before the deletion was modified before it.
            modified < removed_at && had.any(|known| known.since <= removed_at)
        } else {
            unlinked
                && (history.is_empty() || modified < versions.complete_since())
                && seconds(modified) < seconds(removed_at)
        };
        if !stale {
            return false;
        }
        // Into the soft-delete directory, never over what is there: nothing is lost.
        let kept = trash_path(tree, soft, now, path);
        let moved = kept
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                at_a_free_name(&kept, true, |target| {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &abs,
                        nix::fcntl::AT_FDCWD,
                        target,
                        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                    )
                    .map_err(std::io::Error::from)
                })
            });
        if let Err(err) = moved {
            tracing::debug!(
                sersync_path = %String::from_utf8_lossy(path),
                "two-way: cannot move a returned old version aside: {err}"
            );
            return false;
        }
        tracing::info!(
            sersync_path = %String::from_utf8_lossy(path),
            "two-way: the peer sent back a version deleted here moments ago; moved into the \
             soft-delete directory again, and the deletion goes on"
        );
        self.undone.push((root, path.to_vec(), Instant::now()));
        true
    }

    /// Two-way mode: whether the file that just arrived at `path` replaced the version this
    /// host's user wrote moments ago with an older one, and this host's version went back
    /// in place. Older means:
    /// - written in the same second, fewer nanoseconds: both hosts wrote the file within a
    ///   second and sent at once. rsync's `--update` compares whole seconds, so each run
    ///   replaced the other side's copy, and each side would end with the other's version;
    /// - a version this host had before: a run that listed the path before the user wrote
    ///   it or renamed a file over it (the peer's full sync, this host's own pull).
    ///
    /// The version the run replaced is the one it moved into the soft-delete directory
    /// moments ago, and the one this host last had at the path. It is put back (the arrival
    /// stays in the soft-delete directory, by a hard link: nothing is lost), and the
    /// watcher reports that as this host's change, which is sent. On the peer the same
    /// check finds its own version older and keeps this one: both end with the newer.
    fn keep_own_write_over_an_older_arrival(&mut self, root: RootId, path: &[u8]) -> bool {
        use std::os::unix::fs::MetadataExt;
        const JUST_NOW: Duration = Duration::from_secs(5);
        /// A path's version is put back at most once a minute: the put-back is this
        /// host's change (sent, and counted as written here), and two hosts that each
        /// judge the other's version older would otherwise put theirs back for ever (seed
        /// 6 of the two-way rounds: 64 times on each side in 60 s). The second time, the
        /// arrival stays, and the two sides end alike.
        const ONCE_IN: Duration = Duration::from_secs(60);
        self.put_back.retain(|_, at| at.elapsed() < ONCE_IN);
        if self.put_back.contains_key(&(root, path.to_vec())) {
            return false;
        }
        // Only a version this host's user wrote moments ago can have crossed: one that
        // came from the peer and was replaced by a file the peer renamed over it is the
        // peer's to replace, whatever the nanoseconds.
        if self
            .written_here
            .get(&(root, path.to_vec()))
            .is_none_or(|at| at.elapsed() >= JUST_NOW)
        {
            return false;
        }
        let Some((tree, versions, soft)) = self.two_way_parts(root) else {
            return false;
        };
        let now = std::time::SystemTime::now();
        let abs = crate::relpath::absolute(tree, path);
        let kept = trash_path(tree, soft, now, path);
        let (Ok(arrived), Ok(ours)) = (
            std::fs::symlink_metadata(&abs),
            std::fs::symlink_metadata(&kept),
        ) else {
            return false;
        };
        // A symlink renamed over a file is replaced the same way (rsync moves it aside).
        let movable = |meta: &std::fs::Metadata| meta.is_file() || meta.is_symlink();
        if !movable(&arrived) || !movable(&ours) {
            return false;
        }
        let moved_at = std::time::UNIX_EPOCH
            + Duration::new(
                u64::try_from(ours.ctime()).unwrap_or(0),
                u32::try_from(ours.ctime_nsec()).unwrap_or(0),
            );
        let ours_version = crate::sync::two_way::Version::of(&ours);
        let arrived_version = crate::sync::two_way::Version::of(&arrived);
        let history = versions.history(path);
        // Written in the same second, later: the runs crossed.
        let crossed = ours.mtime() == arrived.mtime() && ours.mtime_nsec() > arrived.mtime_nsec();
        // A version this host had before, replacing its newer one: a run (the peer's
        // full sync, or this host's pull) that listed the path before this host's user
        // renamed a file over it or wrote it.
        let stale = arrived_version != ours_version
            && history.iter().any(|known| known.version == arrived_version);
        if !(moved_at + JUST_NOW >= now
            && history.last().map(|known| known.version) == Some(ours_version)
            && (crossed || stale))
        {
            return false;
        }
        // The arrival into the soft-delete directory beside it (`kept` is ours).
        let linked =
            at_a_free_name(&kept, false, |target| std::fs::hard_link(&abs, target)).is_ok();
        // Still the arrival there (a hard link keeps it, not what replaced it since).
        let unchanged = std::fs::symlink_metadata(&abs)
            .is_ok_and(|now| now.ino() == arrived.ino() && now.dev() == arrived.dev());
        if !linked || !unchanged {
            return false;
        }
        if let Err(err) = std::fs::rename(&kept, &abs) {
            tracing::debug!(
                sersync_path = %String::from_utf8_lossy(path),
                "two-way: cannot put this host's newer version back: {err}"
            );
            return false;
        }
        self.put_back.insert((root, path.to_vec()), Instant::now());
        tracing::info!(
            sersync_path = %String::from_utf8_lossy(path),
            crossed,
            "two-way: an arrival replaced the version this host's user had just written, and it is not the peer's newer edit (of the same second and older, or a version this host had before); put ours back (the arrival is in the soft-delete directory)"
        );
        true
    }

    /// Two-way mode: this host's user changed `path` now (its version is one this host
    /// had from now on, also before the batch that sends it records it).
    fn note_written_here(&mut self, root: RootId, path: &[u8]) {
        const KEPT: usize = 10_000;
        self.record_version_here(root, path);
        if self.written_here.len() >= KEPT {
            self.written_here
                .retain(|_, at| at.elapsed() < Duration::from_secs(5));
        }
        self.written_here
            .insert((root, path.to_vec()), Instant::now());
    }

    /// Two-way mode: notes a directory that the peer's full sync just pushed again (as its
    /// notice announced: [`crate::watch::Change::resent`]) where this host's user removed
    /// one in the last minute and has not had one since: the full sync listed the peer's
    /// tree before the removal reached it. A directory the peer's user makes is never
    /// taken back (every directory reads alike: it cannot be told from the old one).
    /// Files that come back in it are judged by `undo_stale_arrival`; the directory by
    /// `undo_returned_directories`.
    fn note_returned_directory(&mut self, root: RootId, path: &[u8]) {
        const RACING: Duration = Duration::from_secs(60);
        let Some((tree, versions, _)) = self.two_way_parts(root) else {
            return;
        };
        let Some((removed_at, _)) = versions.removal(path) else {
            return;
        };
        let recent = std::time::SystemTime::now()
            .duration_since(removed_at)
            .is_ok_and(|since| since <= RACING);
        if !recent
            || versions
                .history(path)
                .iter()
                .any(|known| known.since > removed_at)
            || self
                .returned_dirs
                .iter()
                .any(|dir| dir.root == root && dir.path == path && dir.removed_at == removed_at)
        {
            return;
        }
        let is_dir = std::fs::symlink_metadata(crate::relpath::absolute(tree, path))
            .is_ok_and(|meta| meta.is_dir());
        if is_dir {
            self.returned_dirs.push(ReturnedDir {
                root,
                path: path.to_vec(),
                removed_at,
                arrived: Instant::now(),
                made_by_push: None,
            });
        }
    }

    /// Two-way mode: what the peer's full sync says of a directory it announced as pushed
    /// again: made here by its push (`made`), it is the old one brought back, and
    /// `undo_returned_directories` takes it back; found here, it is this host's user's,
    /// made in the moment between the announcement and the push, and taken for the
    /// peer's (seed 1: removed again as brought back). Kept, it is sent like the user's
    /// change it is: the peer may have removed its own meanwhile.
    fn note_resent_outcome(&mut self, root: RootId, path: &[u8], made: bool) {
        let Some(index) = self
            .returned_dirs
            .iter()
            .position(|dir| dir.root == root && dir.path == path && dir.made_by_push.is_none())
        else {
            return;
        };
        if made {
            self.returned_dirs[index].made_by_push =
                Some((Instant::now(), std::time::SystemTime::now()));
        } else {
            let dir = self.returned_dirs.swap_remove(index);
            self.keep_as_own_directory(dir, "its push found it here");
        }
    }

    /// Two-way mode: a directory taken for one the peer's full sync brought back
    /// (`note_returned_directory`) that its push did not make: this host's user's, sent.
    fn keep_as_own_directory(&mut self, dir: ReturnedDir, why: &str) {
        let Some((tree, _, _)) = self.two_way_parts(dir.root) else {
            return;
        };
        if !std::fs::symlink_metadata(crate::relpath::absolute(tree, &dir.path))
            .is_ok_and(|meta| meta.is_dir())
        {
            return;
        }
        tracing::info!(
            sersync_path = %String::from_utf8_lossy(&dir.path),
            "two-way: a directory taken for one the peer's full sync brought back is this \
             host's user's ({why}); kept, and sent"
        );
        self.note_written_here(dir.root, &dir.path);
        self.queue.push(dir.root, &dir.path, Action::Sync);
    }

    /// Two-way mode: `path` changed (`by_peer`: by the peer's run): a directory the peer's
    /// full sync brought back (`note_returned_directory`) at or above it stays, if this
    /// host's user made the change, or the peer's run made it after the push that
    /// brought the directory back had said its outcome (`note_resent_outcome`: what the
    /// peer's runs do before that is the push's own, however long it runs: the peer runs
    /// one job at a time). The undo waits for the directory to be empty to remove it;
    /// emptied by a later change, it is not what came back any more (seed 28: a user, on
    /// either host, moved the last entry out of one four seconds after it came back, and
    /// the undo removed it).
    fn keep_returned_directories_of(&mut self, root: RootId, path: &[u8], by_peer: bool) {
        if self.returned_dirs.is_empty() {
            return;
        }
        let (kept, still): (Vec<ReturnedDir>, Vec<ReturnedDir>) =
            std::mem::take(&mut self.returned_dirs)
                .into_iter()
                .partition(|dir| {
                    let at_or_above = dir.root == root
                        && (dir.path == path
                            || crate::relpath::ancestors(path)
                                .any(|ancestor| ancestor == dir.path));
                    at_or_above && !(by_peer && dir.made_by_push.is_none())
                });
        self.returned_dirs = still;
        // Kept by this host's user's change in it, it is theirs: sent, as the removal
        // queued before it may have reached the peer already (seed 11: a file written and
        // removed in a directory the peer's full sync brought back kept it here, and the
        // peer, where the removal went on, never had it again).
        if !by_peer {
            for dir in kept {
                self.keep_as_own_directory(dir, "its user changed something in it");
            }
        }
    }

    /// Whether `path` is below a directory the peer's full sync brought back moments ago
    /// (`note_returned_directory`).
    fn in_returned_directory(&self, root: RootId, path: &[u8]) -> bool {
        self.returned_dirs.iter().any(|dir| {
            dir.root == root
                && crate::relpath::ancestors(path).any(|ancestor| ancestor == dir.path.as_slice())
        })
    }

    /// Two-way mode: removes again, once they are empty, the directories the peer's full
    /// sync brought back moments after this host's user removed them
    /// (`note_returned_directory`); their removal then goes to the peer like the user's.
    /// Kept, the directory would live on both sides, which the user removed. Only an
    /// empty directory is removed (`rmdir`): one that holds anything the peer made, or
    /// that this host has had again since, stays (the union, as for any contested path).
    /// Only what the peer's push says it made is taken back (`note_resent_outcome`), a
    /// second after it said so (the files that came back in it are moved aside by then),
    /// and again until 10 s after; a path is removed so at most once a minute (what the
    /// peer keeps of it, it sends again: no ping-pong).
    fn undo_returned_directories(&mut self) {
        const SETTLE: Duration = Duration::from_secs(1);
        const GIVE_UP: Duration = Duration::from_secs(10);
        const ONCE_IN: Duration = Duration::from_secs(60);
        /// A full sync's push of a large tree runs for minutes; one that says nothing for
        /// longer (stopped, or its notice failed) made nothing here as far as this host
        /// knows: the directory is kept (resurrection, the safe failure).
        const OUTCOME_WAIT: Duration = Duration::from_secs(300);
        if self.returned_dirs.is_empty() {
            return;
        }
        self.dirs_undone.retain(|(_, _, at)| at.elapsed() < ONCE_IN);
        let mut returned = std::mem::take(&mut self.returned_dirs);
        // Deepest first: a directory is empty only once what it holds is gone.
        returned.sort_by(|a, b| (b.root, &b.path).cmp(&(a.root, &a.path)));
        let mut returned = std::collections::VecDeque::from(returned);
        while let Some(dir) = returned.pop_front() {
            let Some((made_by_push, made_by_push_at)) = dir.made_by_push else {
                if dir.arrived.elapsed() < OUTCOME_WAIT {
                    self.returned_dirs.push(dir);
                } else {
                    self.keep_as_own_directory(dir, "its push never said it made it");
                }
                continue;
            };
            if made_by_push.elapsed() < SETTLE {
                self.returned_dirs.push(dir);
                continue;
            }
            let Some((tree, versions, _)) = self.two_way_parts(dir.root) else {
                continue;
            };
            let had_again = versions
                .history(&dir.path)
                .iter()
                .any(|known| known.since > dir.removed_at);
            let undone_lately = self
                .dirs_undone
                .iter()
                .any(|(root, path, _)| *root == dir.root && *path == dir.path);
            // Emptied by a change after the push that brought it back (its entries' own
            // moves aside come with that push, before its outcome): not what came back
            // any more, and the event of that change may not have been read yet (seed 5:
            // the peer's deletion of the last entry, five seconds later, beat its event
            // here).
            let changed_later = std::fs::symlink_metadata(crate::relpath::absolute(
                tree, &dir.path,
            ))
            .is_ok_and(|meta| {
                use std::os::unix::fs::MetadataExt;
                let changed = std::time::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(meta.ctime()).unwrap_or(0),
                        u32::try_from(meta.ctime_nsec()).unwrap_or(0),
                    );
                changed > made_by_push_at
            });
            if had_again || undone_lately || changed_later {
                continue;
            }
            match std::fs::remove_dir(crate::relpath::absolute(tree, &dir.path)) {
                Ok(()) => {
                    tracing::info!(
                        sersync_path = %String::from_utf8_lossy(&dir.path),
                        "two-way: the peer brought back a directory removed here moments \
                         ago; removed again, and the removal goes on"
                    );
                    // Its parent's ctime is this removal's, not a later change there.
                    if let Some(parent) = crate::relpath::ancestors(&dir.path).last() {
                        let now = std::time::SystemTime::now();
                        for other in returned.iter_mut().chain(self.returned_dirs.iter_mut()) {
                            if let (true, Some((_, at))) = (
                                other.root == dir.root && other.path == parent,
                                other.made_by_push.as_mut(),
                            ) {
                                *at = now;
                            }
                        }
                    }
                    self.dirs_undone.push((dir.root, dir.path, Instant::now()));
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    if made_by_push.elapsed() < GIVE_UP {
                        self.returned_dirs.push(dir);
                    } else {
                        tracing::debug!(
                            sersync_path = %String::from_utf8_lossy(&dir.path),
                            "two-way: a directory the peer brought back stays: {err}"
                        );
                    }
                }
            }
        }
    }

    /// Two-way mode: takes back what this host's own full-sync pull made where its user
    /// removed a directory while the pull ran (`Outcome::pulled_over_removals`): the
    /// pull's dry run saw the directory here, so the watcher took what the pull made for
    /// the user's, and the next batch would send it back, undoing the removal on both
    /// sides. Below each one, the files that are versions this host had before the
    /// removal go into the soft-delete directory (`undo_stale_arrival`, which moved most
    /// of them already as they arrived); then the directories left empty are removed,
    /// deepest first, and their removal goes on to the peer, dated by the user's. What
    /// else is there (a newer version the peer's user made) stays, with the directories
    /// that hold it: the union, as for any contested path.
    fn take_back_pulled_over_removals(&mut self, root: RootId, tops: &[Vec<u8>]) {
        let Some((tree, _, _)) = self.two_way_parts(root) else {
            return;
        };
        let tree = tree.to_path_buf();
        for top in tops {
            let mut dirs = vec![top.clone()];
            let mut files = Vec::new();
            let mut next = 0;
            while let Some(dir) = dirs.get(next).cloned() {
                next += 1;
                let Ok(entries) = std::fs::read_dir(crate::relpath::absolute(&tree, &dir)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = crate::relpath::join(&dir, entry.file_name().as_bytes());
                    if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                        dirs.push(path);
                    } else {
                        files.push(path);
                    }
                }
            }
            for file in files {
                self.undo_stale_arrival(root, &file, true);
            }
            // Breadth-first order reversed: every directory before its parent.
            let mut removed = 0;
            for dir in dirs.into_iter().rev() {
                if std::fs::remove_dir(crate::relpath::absolute(&tree, &dir)).is_ok() {
                    // Its removal is the user's, from before: not dated anew.
                    self.undone.push((root, dir, Instant::now()));
                    removed += 1;
                }
            }
            tracing::info!(
                sersync_path = %String::from_utf8_lossy(top),
                directories_removed = removed,
                "two-way: this host's full sync pulled back a directory its user removed \
                 while the pull ran; removed again where nothing newer came in it, and the \
                 removal goes on"
            );
        }
    }

    /// Whether `path`'s removal is `undo_stale_arrival` moving it aside (forgotten once
    /// seen, or after a minute).
    fn undone_here(&mut self, root: RootId, path: &[u8]) -> bool {
        self.undone
            .retain(|(_, _, at)| at.elapsed() < Duration::from_secs(60));
        match self
            .undone
            .iter()
            .position(|(r, p, _)| *r == root && p.as_slice() == path)
        {
            Some(at) => {
                self.undone.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Two-way mode: the version at `path` now (one the peer just put there, or one this
    /// host's user just wrote) is one this host had.
    fn record_version_here(&self, root: RootId, path: &[u8]) {
        if let Some((tree, versions, _)) = self.two_way_parts(root) {
            versions.record_from_disk(tree, path);
        }
    }

    /// Two-way mode: this host's user made or changed `path`; a directory is a new one
    /// for the peer's sake a while (`Versions::made_here`): every directory reads alike.
    /// (Not `Versions::here_again`: a full sync's pull that makes a directory over a
    /// removal is seen the same way, and is taken back by that removal.)
    fn note_made_here(&self, root: RootId, path: &[u8]) {
        if let Some((tree, versions, _)) = self.two_way_parts(root) {
            if std::fs::symlink_metadata(crate::relpath::absolute(tree, path))
                .is_ok_and(|meta| meta.is_dir())
            {
                versions.made_here(path);
            }
        }
    }

    /// Two-way mode: what the peer's run did at `path` arrived; if that was a removal
    /// (the path is gone), it is recorded as the peer's, so that no full sync carries it
    /// back to the peer as this host's deletion (see `Versions::paths`).
    fn record_arrival(&self, root: RootId, path: &[u8]) {
        let Some((tree, versions, _)) = self.two_way_parts(root) else {
            return;
        };
        match std::fs::symlink_metadata(crate::relpath::absolute(tree, path)) {
            Ok(meta) => {
                versions.record_local(path, &meta);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                versions.record_peer_lacks(path);
            }
            Err(_) => {}
        }
    }

    /// Two-way mode: this host saw `path` removed now (its deletion spares only the
    /// versions it had before).
    fn record_removal(&self, root: RootId, path: &[u8], unlinked: bool) {
        if let Some((_, versions, _)) = self.two_way_parts(root) {
            versions.record_removal(path, unlinked);
        }
    }

    /// Two-way mode: the root's tree, its record of versions and its soft-delete
    /// directory (shared by its lanes); `None` outside that mode.
    fn two_way_parts(
        &self,
        root: RootId,
    ) -> Option<(
        &Path,
        &crate::sync::two_way::Versions,
        &crate::config::SoftDelete,
    )> {
        let lane = self.lanes.iter().find(|lane| lane.root == root)?;
        Some((
            &lane.context.root,
            lane.context.versions.as_deref()?,
            lane.context.transport.options.soft_delete.as_ref()?,
        ))
    }

    fn submit_plugin(&self, root: &Path, path: &[u8], action: Action, remotes: Vec<String>) {
        let Some(plugins) = &self.plugins else {
            return;
        };
        let (kind, is_dir) = match action {
            Action::Remove { dir } => (ChangeKind::Deleted, dir),
            Action::Sync | Action::Replace | Action::Tree | Action::Created | Action::Arrived => {
                // The root itself is followed (it may be a symlink the operator configured);
                // what is below it is not.
                let meta = if path.is_empty() {
                    std::fs::metadata(root)
                } else {
                    std::fs::symlink_metadata(crate::relpath::absolute(root, path))
                };
                match meta {
                    Ok(meta) => (ChangeKind::Updated, meta.is_dir()),
                    Err(_) => (ChangeKind::Deleted, false),
                }
            }
        };
        plugins.submit(PluginEvent {
            root: root.to_path_buf(),
            path: path.to_vec(),
            is_dir,
            kind,
            remotes,
        });
    }

    /// Writes the failure journal and the failure script if they changed.
    /// Two-way mode: the file in the state directory that keeps the versions of `root`
    /// across restarts (named by a hash of the root's path: roots may come and go).
    fn versions_file(&self, root: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in root.as_os_str().as_bytes() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.state
            .path()
            .join(format!("two-way-versions-{hash:016x}"))
    }

    /// Two-way mode: takes up the versions each root had when the last run stopped or last
    /// saved them (after a kill -9, the last seconds' are lost: those paths go by time).
    fn load_versions(&mut self) {
        if !self.config.rsync.two_way {
            return;
        }
        let roots: Vec<PathBuf> = self.config.roots.iter().map(|r| r.path.clone()).collect();
        for root in roots {
            let file = self.versions_file(&root);
            let loaded = match std::fs::read(&file) {
                Ok(bytes) => crate::sync::two_way::Versions::decode(&bytes),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    tracing::warn!(file = %file.display(), "two-way: cannot read the saved versions: {err}");
                    continue;
                }
            };
            let Some(loaded) = loaded else {
                tracing::warn!(file = %file.display(), "two-way: the saved versions are damaged; starting without them");
                continue;
            };
            if let Ok(meta) = std::fs::metadata(&file) {
                self.versions_sizes.insert(
                    root.clone(),
                    VersionsFileSizes {
                        whole: meta.len(),
                        appended: 0,
                    },
                );
            }
            let loaded = Arc::new(loaded);
            for lane in &mut self.lanes {
                if lane.context.root == root && lane.context.versions.is_some() {
                    lane.context.versions = Some(Arc::clone(&loaded));
                }
            }
        }
    }

    /// Two-way mode: appends what each root's versions recorded since the last call to its
    /// saved file, so that a kill -9 forgets nothing recorded before it (the page cache
    /// outlives the process); rewrites the file whole when the appended records outgrow
    /// the last whole write (and 1 MiB), when the record started over, and at a stop.
    fn save_versions(&mut self, stopping: bool) {
        if !self.config.rsync.two_way {
            return;
        }
        let mut roots: Vec<(PathBuf, Arc<crate::sync::two_way::Versions>)> = Vec::new();
        for lane in &self.lanes {
            if let Some(versions) = &lane.context.versions {
                if !roots.iter().any(|(root, _)| *root == lane.context.root) {
                    roots.push((lane.context.root.clone(), Arc::clone(versions)));
                }
            }
        }
        for (root, versions) in roots {
            let journal = versions.take_journal();
            let start_over = versions.take_start_over();
            if journal.is_empty() && !start_over && !stopping {
                // Most loop turns: nothing recorded since the last one.
                continue;
            }
            let file = self.versions_file(&root);
            let sizes = self.versions_sizes.entry(root).or_default();
            let rewrite = start_over
                || (sizes.whole == 0 && !journal.is_empty())
                || (stopping && (sizes.appended > 0 || !journal.is_empty()))
                || sizes.appended > sizes.whole.max(1 << 20);
            if rewrite {
                let whole = versions.encode();
                match crate::atomic_file::write_atomically(&file, &whole) {
                    Ok(()) => {
                        *sizes = VersionsFileSizes {
                            whole: whole.len() as u64,
                            appended: 0,
                        }
                    }
                    Err(err) => {
                        sizes.whole = 0;
                        tracing::warn!(file = %file.display(), "two-way: cannot save the versions: {err}");
                    }
                }
            } else if !journal.is_empty() {
                use std::io::Write;
                let appended = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&file)
                    .and_then(|mut out| out.write_all(&journal));
                match appended {
                    Ok(()) => sizes.appended += journal.len() as u64,
                    Err(err) => {
                        // A part may have been written: the next save rewrites the file.
                        sizes.whole = 0;
                        versions.restore_journal(journal);
                        tracing::warn!(file = %file.display(), "two-way: cannot save the versions: {err}");
                    }
                }
            }
        }
    }

    fn save_journal(&mut self) {
        if !self.journal_dirty {
            return;
        }
        self.journal_dirty = false;
        let journal_path = self.state.path().join("failures");
        if let Err(err) = atomic_file::write_atomically(&journal_path, &self.journal.to_bytes()) {
            tracing::error!(path = %journal_path.display(), "cannot save the failure journal: {err}");
        }
        let script_path = self.fail_script_path();
        let lanes = &self.lanes;
        let ssh = self.config.rsync.ssh;
        let today = crate::sync::argv::utc_date(std::time::SystemTime::now());
        let entries = self.journal.script_entries(1000, |key| {
            lane_position(lanes, key).map(|id| &lanes[id]).map(|lane| {
                let mut argv = vec![std::ffi::OsString::from("rsync")];
                let mut transport = lane.context.transport.clone();
                transport.today = today.clone();
                // In two-way mode the script only re-sends: a person running it cannot
                // tell a deletion from the peer's newer version (see `sync::two_way`).
                let (replay, input) =
                    crate::sync::argv::replay(&transport, lane.context.full_syncs_delete());
                argv.extend(replay);
                failure::Replay {
                    remote: lane.context.transport.remote.label(ssh),
                    argv,
                    stdin: Box::new(move |paths| input.stdin(paths)),
                }
            })
        });
        // A parent another user could swap for a symlink would take root's write
        // elsewhere (and the script would be theirs to change before someone runs it).
        let parent = script_path.parent().unwrap_or(Path::new("/"));
        let checked = crate::trusted::create_checked(parent)
            .and_then(|()| crate::trusted::check_parent_directory(parent));
        if let Err(err) = checked {
            tracing::error!(path = %script_path.display(), "not writing the failure script: {err}");
            return;
        }
        if let Err(err) = atomic_file::write_atomically(&script_path, &failure::render(&entries)) {
            tracing::error!(path = %script_path.display(), "cannot write the failure script: {err}");
        }
    }

    /// `<failLog path>`: a relative path resolves against the state directory.
    fn fail_script_path(&self) -> PathBuf {
        let configured = &self.config.fail_log.path;
        if configured.is_absolute() {
            configured.clone()
        } else {
            self.state.path().join(configured)
        }
    }

    /// Sends every failed change again now: the journal back into the lanes, and every
    /// waiting lane expedited. Returns how many paths that concerns.
    fn replay_failures(&mut self) -> usize {
        self.requeue_journal();
        self.queue.expedite()
    }

    /// Puts every journal entry back into its lane (merging with what is pending), so a
    /// replay covers failures whose batch is no longer queued.
    /// Returns how many entries went back into a lane.
    fn requeue_journal(&mut self) -> usize {
        let entries: Vec<(LaneId, Vec<u8>)> = self
            .journal
            .iter()
            .filter_map(|(key, path, _)| {
                lane_position(&self.lanes, key).map(|at| (self.lanes[at].id, path.to_vec()))
            })
            .collect();
        let requeued = entries.len();
        for (lane, path) in entries {
            self.queue.push_lane(lane, &path, Action::Sync);
        }
        requeued
    }

    /// Runs `lane`'s full sync once its root is watched (whatever the previous run owed);
    /// returns whether it was not owed already.
    fn owe_full_sync_once_watched(&mut self, lane: LaneId) -> bool {
        if self.owed_after_ready.contains(&lane) {
            return false;
        }
        self.owed_after_ready.push(lane);
        true
    }

    fn load_journal(&mut self) {
        let path = self.state.path().join("failures");
        match failure::Journal::load(&path) {
            Ok(mut journal) => {
                let outside: Vec<(failure::LaneKey, Vec<u8>)> = journal
                    .iter()
                    .filter(|(_, path, _)| !crate::trusted::is_plain_relative(path))
                    .map(|(key, path, _)| (key.clone(), path.to_vec()))
                    .collect();
                for (key, bad) in &outside {
                    tracing::error!(
                        root = %key.root.display(),
                        path = %crate::trusted::printable(bad),
                        "the failure journal names a path outside its root; ignored, and the \
                         root gets a full sync instead"
                    );
                    journal.clear(key, [bad.as_slice()]);
                    if let Some(at) = lane_position(&self.lanes, key) {
                        let lane = self.lanes[at].id;
                        self.owe_full_sync_once_watched(lane);
                    }
                }
                self.journal = journal;
                let requeued = self.requeue_journal();
                if requeued > 0 {
                    tracing::info!(requeued, "failed changes from the previous run are retried");
                }
            }
            Err(err) => {
                // What failed before is unknown: a full sync of every root covers it.
                tracing::error!(
                    "cannot read the failure journal ({err}); starting with an empty one and a \
                     full sync of every root once watched"
                );
                self.recover_after_ready = true;
            }
        }
    }

    /// `FullSyncProgress` for each full sync whose figures moved (the loop calls this at
    /// most once a second).
    fn announce_progress(&mut self) {
        let mut events = Vec::new();
        for lane in &mut self.lanes {
            let Some(summary) = lane.progress.as_ref().and_then(|p| p.summary()) else {
                continue;
            };
            if lane.progress_announced == Some(summary) {
                continue;
            }
            lane.progress_announced = Some(summary);
            events.push(Event::FullSyncProgress {
                remote: lane.label.clone(),
                progress: summary,
            });
        }
        for event in events {
            self.emit(event);
        }
    }

    fn refresh_status(&mut self) {
        self.check_stalls();
        // When STATUS= is due (about once a second) the snapshot is published fresh and the
        // line read from it: one snapshot serves both.
        let line_due = self.notifier.status_due();
        self.publish_status(line_due);
        if self.journal_dirty
            && self
                .last_journal_save
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.last_journal_save = Some(Instant::now());
            self.save_journal();
        }
        if self
            .last_progress
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.last_progress = Some(Instant::now());
            self.announce_progress();
        }
        if line_due {
            let line = match self.status.read() {
                Ok(status) => status.line(),
                Err(poisoned) => poisoned.into_inner().line(),
            };
            self.notifier.status(&line);
        }
    }

    /// The state operators see, built from the loop's own: published to the D-Bus adapter
    /// (`GetStatus`, the properties, `sersyncctl status`) and summed up in `STATUS=`.
    fn snapshot(&self) -> Status {
        let ssh = self.config.rsync.ssh;
        let remotes = self
            .lanes
            .iter()
            .map(|lane| RemoteStatus {
                name: lane.label.clone(),
                remote: lane.context.transport.remote.label(ssh),
                state: lane_state_text(lane),
                last_ok: lane.health.last_ok,
                last_error: lane.health.last_error.as_ref().map(|e| e.full.clone()),
                last_error_summary: lane.health.last_error.as_ref().map(|e| e.summary.clone()),
                pending: self.queue.lane_depth(lane.id) as u64,
                owed_since: self.lane_oldest(lane).map(|seen| seen.at),
                bytes_sent: lane.bytes_sent,
                runs: lane.runs,
                full_sync: full_sync_progress(lane),
                root: lane.context.root.clone(),
            })
            .collect();
        let blocked_watchers = self
            .watchers
            .iter()
            .enumerate()
            .filter(|(_, watcher)| watcher.stuck)
            .map(|(root, watcher)| {
                let silent = watcher.heartbeat.silent_for().as_secs();
                (self.root_path(root).to_path_buf(), silent)
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            instance: self.instance.clone(),
            config_path: self.cli.config.clone(),
            paused: self.paused,
            queue_depth: (self.queue.depth() + self.queue.deferred_count()) as u64,
            in_flight: self.in_flight as u64,
            failed: self.journal.len() as u64,
            watches: self.watches as u64,
            remotes,
            counters: self.counters,
            blocked_watchers,
            delivery_latency: self.delivery_latency.clone(),
            full_sync_duration: self.full_sync_duration.clone(),
        }
    }
}

/// A lane's state for status: its health, and what it is doing if that matters.
fn lane_state_text(lane: &Lane) -> String {
    let mut text = lane.health.state.as_str().to_owned();
    if lane.stalled {
        let secs = lane.job_started.map_or(0, |at| at.elapsed().as_secs());
        text.push_str(&format!(
            " (stalled: rsync moved no data; running {secs} s)"
        ));
    } else if lane.full_sync_running {
        match full_sync_progress(lane) {
            Some(progress) => {
                text.push_str(&format!(" (full sync running, {}%)", progress.percent()));
            }
            None => text.push_str(" (full sync running)"),
        }
    }
    text
}

/// How far the full sync of `lane` is, once its rsync has said.
fn full_sync_progress(lane: &Lane) -> Option<control::FullSyncProgress> {
    lane.progress.as_ref()?.summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(remotes: &str) -> Config {
        let text = format!(
            r#"<head version="2.5"><sersync><localpath watch="/tmp">{remotes}</localpath>
            </sersync></head>"#
        );
        match crate::config::parse(Path::new("test.xml"), text.as_bytes()) {
            Ok((config, _)) => config,
            Err(errors) => panic!("{errors:?}"),
        }
    }

    /// Remote names with their lane ids.
    type Named = Vec<(String, LaneId)>;
    /// One row: remotes, remotes after a reload, the lanes of each.
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, LaneId)],
        &'a [(&'a str, LaneId)],
    );

    /// Lanes built from `remotes`, then from `then` with the first lanes as the old ones.
    fn lanes(remotes: &str, then: &str) -> (Named, Named) {
        let mut next_id = 0;
        let first = build_lanes(&config(remotes), &[], &mut next_id);
        let second = build_lanes(&config(then), &first, &mut next_id);
        let named = |lanes: &[Lane]| {
            lanes
                .iter()
                .map(|lane| (lane.context.transport.remote.name.clone(), lane.id))
                .collect::<Vec<_>>()
        };
        (named(&first), named(&second))
    }

    #[test]
    fn lane_ids_are_stable_and_unique() {
        let a = r#"<remote ip="127.0.0.1" name="a"/>"#;
        let b = r#"<remote ip="127.0.0.1" name="b"/>"#;
        let table: &[Row] = &[
            // A remote listed twice is one lane, from the first load on.
            (&format!("{a}{a}"), a, &[("a", 1)], &[("a", 1)]),
            (
                &format!("{a}{b}{a}"),
                &format!("{b}{a}{b}"),
                &[("a", 1), ("b", 2)],
                &[("b", 2), ("a", 1)],
            ),
            // A lane that stays keeps its id; a new one gets a fresh id, never a reused one.
            (a, b, &[("a", 1)], &[("b", 2)]),
            (&format!("{a}{b}"), a, &[("a", 1), ("b", 2)], &[("a", 1)]),
        ];
        for (remotes, then, want_first, want_second) in table {
            let (first, second) = lanes(remotes, then);
            let owned = |want: &[(&str, LaneId)]| {
                want.iter()
                    .map(|(name, id)| ((*name).to_owned(), *id))
                    .collect::<Vec<_>>()
            };
            assert_eq!(first, owned(want_first), "{remotes}");
            assert_eq!(second, owned(want_second), "{remotes} then {then}");
        }
    }
}
