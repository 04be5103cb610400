//! Plugins: what runs after a change has been delivered to every remote (sersync 2.5's
//! `<sersync><plugin start="true" name>`), or instead of syncing with `sersyncd -m NAME`.
//!
//! Four plugins, configured by the top-level `<plugin name="…">` sections:
//!
//! | name | what it does per change | module |
//! |---|---|---|
//! | `command` | runs `prefix… ABSPATH suffix…` as an argument vector, never a shell | [`command`] |
//! | `socket` | sends the absolute path to a TCP listener (raw as 2.5, or framed) | [`socket`] |
//! | `refreshCDN` | asks a CDN to purge the file's URL (ChinaCache as 2.5, or a template) | [`cdn`] |
//! | `http` | POSTs a JSON description of the change (2.5 shipped this disabled) | [`webhook`] |
//!
//! # Why a host with its own threads
//!
//! A plugin talks to things that may be slow or gone: a script that hangs, a CDN API that
//! times out, a listener that is down. None of that may delay or lose a sync, so the
//! daemon hands each event to [`PluginHost::submit`], which never blocks: it appends to a
//! bounded in-memory queue (4096 events) served by the plugin's own worker threads. When
//! the queue is full the event is **dropped**, counted in [`PluginStats::dropped`] and
//! reported by a rate-limited warning; the sync itself is unaffected. Plugin events are
//! not persisted: a restart loses what was still queued (as with sersync 2.5, whose
//! plugin calls were plain function calls in its worker threads).
//!
//! Workers never run two events for the same absolute path at once and take events in
//! order, so an "updated" and a later "deleted" of one file reach the plugin in that
//! order. Events for different paths may run concurrently (4 workers for `command`,
//! `refreshCDN` and `http`; 1 for `socket`, which keeps the order of the whole stream).
//!
//! # Paths
//!
//! Plugins receive the **absolute** path, `root + "/" + relative` (as sersync 2.5 did).
//! File names are bytes; a command gets them unchanged as one argument, a socket gets them
//! unchanged on the wire, and URLs and JSON carry them percent-encoded where needed (see
//! [`encode`]).

mod cdn;
mod command;
pub mod encode;
pub mod http;
mod socket;
mod webhook;

use std::collections::{HashSet, VecDeque};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, PluginSection};

/// How many events may wait for a plugin before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;

/// Minimum time between two "queue full" warnings.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Created, written, moved in, or its attributes changed: it exists now.
    Updated,
    /// Deleted or moved away.
    Deleted,
}

impl ChangeKind {
    /// `updated` or `deleted`, as in the JSON body and `SERSYNC_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// One change for a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    /// The watch root (absolute, no trailing slash except `/` itself).
    pub root: PathBuf,
    /// Relative to `root`, raw bytes, no leading slash.
    pub path: Vec<u8>,
    pub is_dir: bool,
    pub kind: ChangeKind,
    /// Labels of the remotes the change was delivered to (`ip::module`); empty in `-m` mode.
    pub remotes: Vec<String>,
}

impl PluginEvent {
    /// `root + "/" + path` as bytes (just `root` when `path` is empty).
    pub fn absolute_path(&self) -> Vec<u8> {
        crate::relpath::absolute(&self.root, &self.path)
            .into_os_string()
            .into_vec()
    }
}

/// Counters since the host started, for logs and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Events the plugin handled successfully.
    pub delivered: u64,
    /// Events the plugin failed on (and for `command`, `ignoreError="false"`).
    pub failed: u64,
    /// Command failures not counted as failures because of `ignoreError="true"`.
    pub ignored: u64,
    /// Events the plugin does not apply to: `<include>` filter, outside the plugin's
    /// `<localpath>`, no `<regexurl>` match.
    pub skipped: u64,
    /// Events thrown away because the queue was full, or still queued at shutdown.
    pub dropped: u64,
    /// Events waiting or running now.
    pub queued: usize,
    /// The most recent failure, for status.
    pub last_error: Option<String>,
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Failed(String),
    /// A failure the config says not to count (`ignoreError="true"`).
    IgnoredFailure(String),
}

/// One plugin implementation. `accept` runs on the caller's thread in
/// [`PluginHost::submit`] and must be cheap; `deliver` runs on a worker thread.
trait Plugin: Send + Sync + std::fmt::Debug {
    /// `Err(reason)` when the event does not concern this plugin (skipped, not queued).
    fn accept(&self, event: &PluginEvent, abs: &[u8]) -> Result<(), String>;
    /// Handles one event; must return within bounded time (every plugin has timeouts)
    /// and give up early once `control.aborted()`.
    fn deliver(&self, job: &Job, control: &Control) -> Outcome;
}

/// A queued event with what the workers need.
#[derive(Debug)]
struct Job {
    event: PluginEvent,
    abs: Vec<u8>,
    submitted: Instant,
}

/// The queue and the flags the workers wait on.
#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Job>,
    /// Absolute paths being delivered now: a second event for one waits.
    in_flight: HashSet<Vec<u8>>,
    /// No more events will come: workers exit when the queue is empty.
    closed: bool,
    /// Stop now: workers take nothing more and plugins cut waits and retries short.
    abort: bool,
    live_workers: usize,
    last_drop_warning: Option<Instant>,
}

/// State shared by the host and its workers.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<QueueState>,
    wake: Condvar,
    delivered: AtomicU64,
    failed: AtomicU64,
    ignored: AtomicU64,
    skipped: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// The queue lock; a worker that panicked while holding it cannot have left the
    /// queue inconsistent (every change under it is a single push, pop or insert).
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a plugin sees of its host while delivering: abort-aware waiting.
#[derive(Debug)]
struct Control {
    shared: Arc<Shared>,
}

impl Control {
    /// True once the host is shutting down past its grace period.
    fn aborted(&self) -> bool {
        self.shared.lock().abort
    }

    /// Sleeps `duration` unless the host aborts first; returns false when it did.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = self.shared.lock();
        loop {
            if state.abort {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self
                .shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The running plugin: a bounded queue and its worker threads.
///
/// The worker threads start on [`PluginHost::start`] or the first [`PluginHost::submit`],
/// not in [`PluginHost::from_config`]: the daemon reads its config before it detaches
/// with `-d` (fork keeps only the calling thread) and before logging is set up, and
/// threads started then would silently not exist in the daemon.
#[derive(Debug)]
pub struct PluginHost {
    name: &'static str,
    plugin: Arc<dyn Plugin>,
    shared: Arc<Shared>,
    worker_count: usize,
    started: Once,
    workers: Mutex<Vec<JoinHandle<()>>>,
    watch: Option<PathBuf>,
    /// Config warnings, logged when the workers start (logging is ready by then).
    notes: Vec<String>,
}

impl PluginHost {
    /// The after-sync plugin named by `<sersync><plugin start="true" name>`, or with
    /// `only = Some(name)` the plugin of `sersyncd -m NAME`. `Ok(None)` when no plugin is
    /// enabled; `Err` (a message for the operator) when the name is unknown or its
    /// `<plugin name>` section is missing ([`Config::plugin_to_run`]), or the section
    /// cannot work (never for a config that loaded: the config reader rejects every such
    /// section with its position, so `--check` catches it). Starts no thread and logs
    /// nothing (see [`PluginHost::start`]).
    pub fn from_config(config: &Config, only: Option<&str>) -> Result<Option<PluginHost>, String> {
        let Some(section) = config.plugin_to_run(only)? else {
            return Ok(None);
        };
        let mut notes = Vec::new();
        let (plugin, workers, watch): (Arc<dyn Plugin>, usize, Option<PathBuf>) = match section {
            PluginSection::Command(section) => {
                if section.filter_enabled && section.includes.is_empty() {
                    notes.push(
                        "<filter start=\"true\"> has no <include>: the command never runs"
                            .to_owned(),
                    );
                }
                (Arc::new(command::Command::new(section)?), 4, None)
            }
            PluginSection::Socket(section) => (
                Arc::new(socket::Socket::new(section)),
                1,
                Some(section.watch.clone()),
            ),
            PluginSection::RefreshCdn(section) => (
                Arc::new(cdn::RefreshCdn::new(section)?),
                4,
                Some(section.watch.clone()),
            ),
            PluginSection::Http(section) => (
                Arc::new(webhook::Webhook::new(section)),
                4,
                Some(section.watch.clone()),
            ),
        };
        if let Some(watch) = &watch {
            let related = config
                .roots
                .iter()
                .any(|root| watch.starts_with(&root.path) || root.path.starts_with(watch));
            if !related && only.is_none() {
                notes.push(format!(
                    "the plugin's <localpath watch=\"{}\"> is not inside any watched root: it will receive no events",
                    watch.display()
                ));
            }
        }
        let mut host = PluginHost::new(section.kind().name(), plugin, workers, watch);
        host.notes = notes;
        Ok(Some(host))
    }

    fn new(
        name: &'static str,
        plugin: Arc<dyn Plugin>,
        worker_count: usize,
        watch: Option<PathBuf>,
    ) -> PluginHost {
        PluginHost {
            name,
            plugin,
            shared: Arc::new(Shared::default()),
            worker_count,
            started: Once::new(),
            workers: Mutex::new(Vec::new()),
            watch,
            notes: Vec::new(),
        }
    }

    /// Starts the worker threads and logs the plugin's config warnings; does nothing the
    /// second time. [`PluginHost::submit`] calls it, so calling it is optional: the daemon
    /// calls it once it has detached and set up logging, so that the warnings and the
    /// "plugin started" line appear at start-up rather than with the first change.
    pub fn start(&self) {
        self.started.call_once(|| self.spawn_workers());
    }

    fn spawn_workers(&self) {
        for note in &self.notes {
            tracing::warn!(plugin = self.name, "{note}");
        }
        let mut handles = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for index in 0..self.worker_count {
            let shared = Arc::clone(&self.shared);
            let plugin = Arc::clone(&self.plugin);
            let name = self.name;
            shared.lock().live_workers += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("plugin-{name}-{index}"))
                .spawn(move || worker(name, &shared, &*plugin));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    self.shared.lock().live_workers -= 1;
                    tracing::error!(plugin = name, "cannot start a plugin thread: {err}");
                    break;
                }
            }
        }
        if handles.is_empty() {
            // Nothing would ever take events off the queue: refuse them (counted as
            // dropped) rather than hold them.
            self.shared.lock().closed = true;
            tracing::error!(plugin = self.name, "plugin disabled: no worker thread");
            return;
        }
        tracing::info!(
            plugin = self.name,
            workers = handles.len(),
            "plugin started{}",
            self.watch
                .as_ref()
                .map(|w| format!(" for changes under {}", w.display()))
                .unwrap_or_default()
        );
    }

    /// The plugin's name as sersync spells it (`command`, `socket`, `refreshCDN`, `http`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The plugin's own `<localpath watch>` (socket, refreshCDN, http): it only receives
    /// events at or below it. sersync 2.5 watched this path *instead of* the
    /// `<sersync><localpath>` when these plugins were enabled, so with `-m` the daemon
    /// should watch it. `None` for `command`, which applies to every root.
    pub fn watch(&self) -> Option<&Path> {
        self.watch.as_deref()
    }

    /// Queues `event` for the plugin. Never blocks: events the plugin does not apply to
    /// are counted as skipped, and when [`QUEUE_CAPACITY`] events are already waiting the
    /// event is dropped (counted, with a warning at most every 10 s).
    pub fn submit(&self, event: PluginEvent) {
        self.start();
        let abs = event.absolute_path();
        if let Err(reason) = self.plugin.accept(&event, &abs) {
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(plugin = self.name, path = %abs.escape_ascii(), "skipped: {reason}");
            return;
        }
        let mut state = self.shared.lock();
        if state.closed {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if state.items.len() >= QUEUE_CAPACITY {
            let dropped = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = Instant::now();
            let due = state
                .last_drop_warning
                .is_none_or(|last| now.duration_since(last) >= DROP_WARNING_INTERVAL);
            if due {
                state.last_drop_warning = Some(now);
                drop(state);
                tracing::warn!(
                    plugin = self.name,
                    dropped,
                    "plugin queue full ({QUEUE_CAPACITY} events waiting): dropping events \
                     (the sync is not affected; {dropped} dropped so far)"
                );
            }
            return;
        }
        state.items.push_back(Job {
            event,
            abs,
            submitted: Instant::now(),
        });
        drop(state);
        // All, not one: the condvar is shared with workers sleeping in a retry backoff
        // (`Control::sleep`), and waking only one of those would leave the job waiting.
        self.shared.wake.notify_all();
    }

    /// The counters so far.
    pub fn stats(&self) -> PluginStats {
        let queued = {
            let state = self.shared.lock();
            state.items.len() + state.in_flight.len()
        };
        PluginStats {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            ignored: self.shared.ignored.load(Ordering::Relaxed),
            skipped: self.shared.skipped.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            queued,
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops accepting events and lets the workers finish the queue for up to `grace`.
    /// After that, running deliveries are cut short (commands are killed, retries stop)
    /// and what is still queued is dropped and counted. Returns once the workers are done,
    /// or at most 3 s after `grace` if one is stuck in a bounded network wait (its thread
    /// is then left to finish on its own).
    pub fn shutdown(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.wake.notify_all();
        state = wait_workers(&self.shared, state, deadline);
        if state.live_workers > 0 {
            state.abort = true;
            let left = state.items.len();
            state.items.clear();
            self.shared.wake.notify_all();
            if left > 0 {
                self.shared
                    .dropped
                    .fetch_add(left as u64, Ordering::Relaxed);
                tracing::warn!(
                    plugin = self.name,
                    "{left} plugin event(s) still queued after {grace:?} of shutdown: dropped"
                );
            }
            // Commands get SIGTERM, then SIGKILL after 2 s; network waits are bounded by
            // their own timeouts, and a thread still in one is left to finish it.
            state = wait_workers(&self.shared, state, Instant::now() + Duration::from_secs(3));
        }
        let stuck = state.live_workers;
        drop(state);
        let handles = std::mem::take(self.workers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        let stats = self.stats();
        tracing::info!(
            plugin = self.name,
            delivered = stats.delivered,
            failed = stats.failed,
            ignored = stats.ignored,
            skipped = stats.skipped,
            dropped = stats.dropped,
            "plugin stopped{}",
            if stuck > 0 {
                format!(" ({stuck} worker(s) still finishing a network wait)")
            } else {
                String::new()
            }
        );
    }
}

impl Drop for PluginHost {
    /// Without [`PluginHost::shutdown`] (an early return, a panic), the workers are told
    /// to stop at once rather than linger waiting for events that will never come.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.abort = true;
        drop(state);
        self.shared.wake.notify_all();
    }
}

/// Waits until no worker is alive or `deadline` passes.
fn wait_workers<'a>(
    shared: &'a Shared,
    mut state: MutexGuard<'a, QueueState>,
    deadline: Instant,
) -> MutexGuard<'a, QueueState> {
    while state.live_workers > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = shared
            .wake
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    state
}

/// One worker: takes the oldest event whose path is not being delivered, delivers it,
/// records the outcome; exits when the queue is closed and empty, or at abort.
fn worker(name: &'static str, shared: &Arc<Shared>, plugin: &dyn Plugin) {
    let control = Control {
        shared: Arc::clone(shared),
    };
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if state.abort {
                    break None;
                }
                let free = state
                    .items
                    .iter()
                    .position(|job| !state.in_flight.contains(&job.abs));
                if let Some(job) = free.and_then(|index| state.items.remove(index)) {
                    state.in_flight.insert(job.abs.clone());
                    break Some(job);
                }
                if state.closed && state.items.is_empty() {
                    break None;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(job) = job else { break };
        let outcome = crate::panics::contain(|| plugin.deliver(&job, &control))
            .unwrap_or_else(|_| Outcome::Failed("the plugin panicked (a bug)".to_owned()));
        record(name, shared, &job, outcome);
        shared.lock().in_flight.remove(&job.abs);
        // Another worker may wait for this path, and shutdown for an empty queue.
        shared.wake.notify_all();
    }
    shared.lock().live_workers -= 1;
    shared.wake.notify_all();
}

/// Counts and logs one outcome.
fn record(name: &'static str, shared: &Shared, job: &Job, outcome: Outcome) {
    let path = job.abs.escape_ascii();
    match outcome {
        Outcome::Delivered => {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(plugin = name, path = %path, event = job.event.kind.as_str(), "plugin done");
        }
        Outcome::IgnoredFailure(message) => {
            shared.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(plugin = name, path = %path, "plugin failed (ignoreError): {message}");
        }
        Outcome::Failed(message) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = name, path = %path, "plugin failed: {message}");
            *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{path}: {message}"));
        }
    }
}

/// Sends `request` until `accept` likes the answer, retrying transport errors, 5xx, 408
/// and 429 up to `retries` more times with pauses of 0.5 s doubling to at most 10 s (cut
/// short when the host aborts). Other answers fail at once: retrying a 403 will not help.
fn send_with_retries(
    request: &http::Request,
    timeout: Duration,
    retries: u32,
    control: &Control,
    accept: impl Fn(&http::Response) -> bool,
) -> Result<http::Response, String> {
    let mut pause = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        let last = match http::send(request, timeout) {
            Ok(response) if accept(&response) => return Ok(response),
            Ok(response) => {
                let message = cdn::describe(request, &response);
                if !(response.status >= 500 || matches!(response.status, 408 | 429)) {
                    return Err(message);
                }
                message
            }
            Err(err) => format!("{}: {err}", request.describe()),
        };
        if attempt >= retries {
            return Err(if retries == 0 {
                last
            } else {
                format!("{last} (after {} attempts)", retries + 1)
            });
        }
        if !control.sleep(pause) {
            return Err(format!("{last} (not retried: stopping)"));
        }
        attempt += 1;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// The part of `abs` below the plugin's `<localpath watch>`, or why the change is not the
/// plugin's.
fn within<'a>(abs: &'a [u8], watch: &Path) -> Result<&'a [u8], String> {
    below(abs, watch).ok_or_else(|| {
        format!(
            "outside the plugin's <localpath watch=\"{}\">",
            watch.display()
        )
    })
}

/// The part of `abs` below `watch`, starting with `/` (empty when `abs` is `watch`);
/// `None` when `abs` is not at or below `watch`. This is the relative path sersync 2.5
/// built URLs from: the absolute path with the watch prefix cut off.
fn below<'a>(abs: &'a [u8], watch: &Path) -> Option<&'a [u8]> {
    let rest = crate::relpath::strip_root(abs, watch)?;
    // With the slash before it; the watch itself is "" unless written with a trailing
    // slash ("/" included), as sersync 2.5 cut it.
    Some(if rest.is_empty() && !abs.ends_with(b"/") {
        rest
    } else {
        &abs[abs.len() - rest.len() - 1..]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(root: &str, path: &[u8]) -> PluginEvent {
        PluginEvent {
            root: PathBuf::from(root),
            path: path.to_vec(),
            is_dir: false,
            kind: ChangeKind::Updated,
            remotes: Vec::new(),
        }
    }

    #[test]
    fn absolute_paths_join_root_and_relative_path_once() {
        assert_eq!(event("/srv/w", b"a/b").absolute_path(), b"/srv/w/a/b");
        assert_eq!(event("/", b"etc/x").absolute_path(), b"/etc/x");
        assert_eq!(event("/srv/w", b"").absolute_path(), b"/srv/w");
        assert_eq!(
            event("/srv/w", b"a\n\xff").absolute_path(),
            b"/srv/w/a\n\xff"
        );
    }

    #[test]
    fn below_cuts_the_watch_prefix_at_a_component_boundary() {
        let watch = Path::new("/srv/www");
        assert_eq!(below(b"/srv/www/a/b", watch), Some(&b"/a/b"[..]));
        assert_eq!(below(b"/srv/www", watch), Some(&b""[..]));
        assert_eq!(below(b"/srv/www2/a", watch), None);
        assert_eq!(below(b"/srv/ww", watch), None);
        assert_eq!(below(b"/a", Path::new("/")), Some(&b"/a"[..]));
        assert_eq!(below(b"/", Path::new("/")), Some(&b"/"[..]));
        assert_eq!(below(b"/srv/www/", watch), Some(&b"/"[..]));
    }

    /// A plugin that records what it got and blocks on one path until told to go on.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<Vec<u8>>>,
        gate: Mutex<bool>,
        opened: Condvar,
    }

    impl Plugin for Recorder {
        fn accept(&self, event: &PluginEvent, _abs: &[u8]) -> Result<(), String> {
            if event.path.starts_with(b"skip") {
                Err("test".into())
            } else {
                Ok(())
            }
        }
        fn deliver(&self, job: &Job, control: &Control) -> Outcome {
            if job.event.path == b"block" {
                let mut open = self.gate.lock().unwrap();
                while !*open && !control.aborted() {
                    open = self
                        .opened
                        .wait_timeout(open, Duration::from_millis(10))
                        .unwrap()
                        .0;
                }
            }
            self.seen.lock().unwrap().push(job.event.path.clone());
            if job.event.path.starts_with(b"fail") {
                Outcome::Failed("boom".into())
            } else {
                Outcome::Delivered
            }
        }
    }

    fn recorder_host(workers: usize) -> (PluginHost, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let plugin: Arc<dyn Plugin> = recorder.clone();
        (PluginHost::new("test", plugin, workers, None), recorder)
    }

    #[test]
    fn a_full_queue_drops_without_blocking_and_shutdown_counts_the_rest() {
        let (host, recorder) = recorder_host(1);
        host.submit(event("/r", b"block"));
        // Wait until the worker holds the blocking event, so the queue is empty again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while host.shared.lock().in_flight.is_empty() {
            assert!(Instant::now() < deadline, "worker never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        for i in 0..QUEUE_CAPACITY + 10 {
            host.submit(event("/r", format!("f{i}").as_bytes()));
        }
        host.submit(event("/r", b"skip-me"));
        assert!(started.elapsed() < Duration::from_secs(5), "submit blocked");
        let stats = host.stats();
        assert_eq!((stats.dropped, stats.skipped), (10, 1));
        assert_eq!(stats.queued, QUEUE_CAPACITY + 1);

        // The blocked delivery never finishes within the grace: abort, drop the queue.
        host.shutdown(Duration::from_millis(100));
        assert!(recorder.seen.lock().unwrap().len() <= 1);
    }

    #[test]
    fn events_for_one_path_are_serialised_and_outcomes_counted() {
        let (host, recorder) = recorder_host(4);
        for path in [&b"a"[..], b"fail1", b"a", b"b", b"a"] {
            host.submit(event("/r", path));
        }
        host.shutdown(Duration::from_secs(10));
        let seen = recorder.seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen.iter().filter(|p| p.as_slice() == b"a").count(), 3);
    }

    #[test]
    fn stats_and_last_error() {
        let (host, _recorder) = recorder_host(2);
        host.submit(event("/r", b"ok"));
        host.submit(event("/r", b"fail-x"));
        let shared = Arc::clone(&host.shared);
        host.shutdown(Duration::from_secs(10));
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(shared.failed.load(Ordering::Relaxed), 1);
        assert_eq!(
            shared.last_error.lock().unwrap().as_deref(),
            Some("/r/fail-x: boom")
        );
    }

    /// The config reader rejects, with a position, every plugin section start-up could not
    /// build: so `--check` passes nothing that start-up refuses.
    #[test]
    fn a_config_that_loads_always_builds_its_plugin() {
        let sections = [
            ("command", r#"<param prefix=""/>"#),
            ("command", r#"<param prefix="   "/>"#),
            ("command", r#"<param prefix="''"/>"#),
            ("command", r#"<param prefix="/bin/true" timeout="0"/>"#),
            ("command", r#"<param/><filter start="true"/>"#),
            ("command", ""),
            (
                "socket",
                r#"<localpath watch="/tmp"><deshost ip="" port="9"/></localpath>"#,
            ),
            (
                "socket",
                r#"<localpath watch="/tmp"><deshost ip="h" port="0"/></localpath>"#,
            ),
            (
                "socket",
                r#"<localpath watch="/tmp"><deshost ip="h" port="9"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><cdninfo domainname=" " port="80"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><cdninfo domainname="d" port="80"/><regexurl regex="true"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><cdninfo domainname="d" port="80"/><regexurl regex="true" match=""/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><cdninfo domainname="d" port="80"/><regexurl regex="true" match="(x"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><cdninfo domainname="d" port="80"/><regexurl regex="true" match="/(.*)"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><sendurl base="http://x"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><purge url="http://h{path}"/></localpath>"#,
            ),
            (
                "refreshCDN",
                r#"<localpath watch="/tmp"><purge url="https://h{path}"/></localpath>"#,
            ),
            (
                "http",
                r#"<localpath watch="/tmp"><deshost url=""/></localpath>"#,
            ),
            (
                "http",
                r#"<localpath watch="/tmp"><deshost url="h:9/x" port="8000"/></localpath>"#,
            ),
            (
                "http",
                r#"<localpath watch="/tmp"><deshost url="http://u@h/"/></localpath>"#,
            ),
            (
                "http",
                r#"<localpath watch="/tmp"><deshost url=" http://h/ "/></localpath>"#,
            ),
        ];
        let mut loaded = 0;
        for (name, inner) in sections {
            let xml = format!(
                "<head>\n<plugin name=\"{name}\">{inner}</plugin>\n<sersync><localpath watch=\"/tmp\"><remote ip=\"h\" name=\"m\"/></localpath><plugin start=\"true\" name=\"{name}\"/></sersync>\n</head>\n"
            );
            let Ok((config, _)) = crate::config::parse(Path::new("t.xml"), xml.as_bytes()) else {
                continue;
            };
            loaded += 1;
            for only in [None, Some(name)] {
                if let Err(err) = PluginHost::from_config(&config, only) {
                    panic!("{name} {inner}: loaded, but start-up fails: {err}");
                }
            }
        }
        assert!(loaded >= 6, "only {loaded} sections loaded");
    }

    #[test]
    fn from_config_without_an_enabled_plugin_is_none_and_unknown_names_are_errors() {
        let xml = b"<head><sersync><localpath watch=\"/tmp\"><remote ip=\"h\" name=\"m\"/></localpath></sersync></head>";
        let (config, _) = crate::config::parse(Path::new("t.xml"), xml).unwrap();
        assert!(PluginHost::from_config(&config, None).unwrap().is_none());
        let err = PluginHost::from_config(&config, Some("ftp")).unwrap_err();
        assert!(err.contains("unknown plugin \"ftp\""), "{err}");
        let err = PluginHost::from_config(&config, Some("SOCKET")).unwrap_err();
        assert!(
            err.contains("no usable <plugin name=\"socket\"> section"),
            "{err}"
        );
    }
}
