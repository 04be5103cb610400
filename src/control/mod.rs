//! The D-Bus control interface: the contract between the daemon loop and the bus adapter,
//! the adapter itself ([`serve`]) and the client side `sersyncctl` uses ([`client`]).
//!
//! The daemon owns all state; the adapter only sends [`Command`]s into the loop, reads the
//! published [`Status`] snapshot and forwards [`Event`]s as signals. See [`interface`] for
//! the interface, [`names`] for bus names, and `dbus/` for the introspection XML and the
//! system-bus policy.
//!
//! Threads: zbus runs the connection on its own executor thread; method calls wait for the
//! loop's answers on the `blocking` thread pool; one publisher thread turns events into
//! signals and emits `PropertiesChanged` at most once a second.
//!
//! File names are for root and group `sersync` only (see "Who may do what" in
//! [`interface`]): what everyone receives (properties, `PropertiesChanged`, the broadcast
//! `SyncFailed`) is built from the path-free fields ([`RemoteStatus::last_error_summary`],
//! [`Event::SyncFailed`]'s `summary`); the rest goes to callers the handlers checked.

pub mod client;
pub mod interface;
pub mod names;
pub mod wire;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use zbus::blocking::Connection;
use zbus::fdo::RequestNameFlags;
use zbus::names::InterfaceName;
use zbus::zvariant::Value;

pub use interface::{Error, Sersync1, Sersync1Proxy};
pub use names::{INTERFACE, NAME_PREFIX, OBJECT_PATH};

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
        /// Past the replica guard (`full-sync --force`).
        force: bool,
        reply: Sender<Result<u64, String>>,
    },
    ListFailures(Sender<Vec<FailureRecord>>),
    /// Re-read the config; answers the diagnostics when it was rejected.
    Reload(Sender<Result<(), String>>),
    /// Fix a checkpoint over the remotes of one root (None: all): answers its id, or an
    /// error message when the root is unknown. [`Event::CheckpointReached`] says when
    /// every change observed before it reached those remotes.
    Checkpoint {
        root: Option<PathBuf>,
        reply: Sender<Result<u64, String>>,
    },
    /// Where a checkpoint stands; `None` for an id the daemon does not know (never given,
    /// or answered more than ten minutes ago).
    CheckpointStatus {
        id: u64,
        reply: Sender<Option<CheckpointState>>,
    },
}

/// Where a checkpoint stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointState {
    /// Waiting for the watchers of these roots to report what the kernel had queued when
    /// it was asked for (empty: that has not started yet).
    Draining(Vec<PathBuf>),
    /// These remotes (`root -> remote`) still lack a change observed before it.
    Behind(Vec<String>),
    /// Every change observed before it is on every remote it covers.
    Reached,
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
    /// The remote alone, e.g. `10.0.0.2::www` (for the one-line summary).
    pub remote: String,
    /// `ok`, `backoff` or `failing`.
    pub state: String,
    pub last_ok: Option<SystemTime>,
    /// The last error in full: rsync's own words, which may name files. Only for root and
    /// group `sersync`.
    pub last_error: Option<String>,
    /// The same error without file names or anything quoted from rsync (e.g. `rsync exit
    /// 23: partial transfer due to error`): what everyone may see. Set whenever
    /// `last_error` is.
    pub last_error_summary: Option<String>,
    /// Distinct paths waiting (not counting deferred retries or the batch in flight).
    pub pending: u64,
    /// When the oldest change observed and not yet delivered to this remote was seen
    /// (pending, in flight, deferred, or a full sync that stands for lost changes); `None`
    /// when the remote holds everything observed. A time rather than an age, so that a
    /// snapshot published a second ago still tells the lag of now ([`RemoteStatus::lag`]).
    pub owed_since: Option<Instant>,
    /// Bytes rsync reported sending to this remote since start (its own statistics).
    pub bytes_sent: u64,
    /// Runs to this remote since start, by how they ended.
    pub runs: RunCounts,
    /// The watch root alone, e.g. `/srv/www` (for the metrics' `root` label).
    pub root: PathBuf,
    /// How far the full sync running to this remote is, once its rsync has said.
    pub full_sync: Option<FullSyncProgress>,
}

/// How far a running full sync is: rsync's own figures (`--info=progress2`), summed over
/// its runs (computed in `sync::progress`).
pub use crate::sync::progress::Summary as FullSyncProgress;

impl RemoteStatus {
    /// How long the oldest undelivered change has waited at `now`; zero when none.
    pub fn lag(&self, now: Instant) -> Duration {
        self.owed_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

/// rsync runs by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Exit 0, or 24 (files vanished: they are gone from the source too).
    pub ok: u64,
    /// Exit 23: some paths failed, the rest went through.
    pub partial: u64,
    /// Anything else, replica-guard refusals included.
    pub failed: u64,
}

/// Monotonic counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub batches: u64,
    pub files: u64,
    /// Bytes rsync reported sending since start, to every remote (its own statistics).
    pub bytes: u64,
    pub errors: u64,
}

/// A histogram of durations as Prometheus keeps one: for each upper bound, how many
/// observations were at most that long (cumulative), plus their count and sum. Plain data
/// the daemon observes into and the snapshot carries; the exposition is `crate::metrics`'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Ascending; the implicit last bucket (+Inf) is [`Histogram::count`].
    bounds: Vec<Duration>,
    /// `cumulative[i]`: observations of at most `bounds[i]`.
    cumulative: Vec<u64>,
    sum: Duration,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (sorted and deduplicated here).
    pub fn new(bounds: &[Duration]) -> Self {
        let mut bounds = bounds.to_vec();
        bounds.sort_unstable();
        bounds.dedup();
        Histogram {
            cumulative: vec![0; bounds.len()],
            bounds,
            sum: Duration::ZERO,
            count: 0,
        }
    }

    /// Counts one observation in every bucket whose bound it does not exceed.
    pub fn observe(&mut self, value: Duration) {
        let first = self.bounds.partition_point(|bound| *bound < value);
        for count in &mut self.cumulative[first..] {
            *count += 1;
        }
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// The upper bounds, ascending (without +Inf).
    pub fn bounds(&self) -> &[Duration] {
        &self.bounds
    }

    /// Per bound, the observations of at most that long.
    pub fn cumulative(&self) -> &[u64] {
        &self.cumulative
    }

    /// The sum of every observation.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// How many observations there were (the +Inf bucket).
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The buckets of [`Status::delivery_latency`]: from a change to a quiet file on a LAN
/// (tens of milliseconds) to a remote that was down for half an hour.
pub const DELIVERY_BUCKETS: [Duration; 12] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(1800),
];

/// The buckets of [`Status::full_sync_duration`]: from a small tree (a second) to a
/// tree of millions of files (hours).
pub const FULL_SYNC_BUCKETS: [Duration; 10] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(12 * 3600),
];

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
    /// Roots whose watcher is blocked in a filesystem call (a hung mount), with how long
    /// it has been silent in seconds.
    pub blocked_watchers: Vec<(PathBuf, u64)>,
    /// How long delivered changes waited, from the change to the end of the rsync run
    /// that delivered it ([`DELIVERY_BUCKETS`]), over every remote since start.
    pub delivery_latency: Histogram,
    /// How long full syncs that succeeded took ([`FULL_SYNC_BUCKETS`]), over every remote
    /// since start.
    pub full_sync_duration: Histogram,
}

impl Status {
    /// The one-line summary for sd_notify `STATUS=` (what `systemctl status` shows).
    /// Journal-bound like the log: the remotes' states only, no error texts.
    pub fn line(&self) -> String {
        let blocked: String = self
            .blocked_watchers
            .iter()
            .map(|(root, secs)| format!("watcher of {} blocked {secs} s; ", root.display()))
            .collect();
        let now = Instant::now();
        let remotes: Vec<String> = self
            .remotes
            .iter()
            .map(|remote| match remote.lag(now).as_secs() {
                0 => format!("{} {}", remote.remote, remote.state),
                lag => format!("{} {} (lag {lag} s)", remote.remote, remote.state),
            })
            .collect();
        format!(
            "{}{blocked}{} watches, {} queued, {} in flight, {} failed; {}",
            if self.paused { "PAUSED; " } else { "" },
            self.watches,
            self.queue_depth,
            self.in_flight,
            self.failed,
            remotes.join(", ")
        )
    }
}

/// Signals the daemon emits through the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SyncFailed {
        remote: String,
        /// The failed batch's first path: only for root and group `sersync`.
        path: Vec<u8>,
        rsync_exit: i32,
        /// rsync's own words (may name files): only for root and group `sersync`.
        message: String,
        /// The diagnosis without file names or anything quoted from rsync: the message of
        /// the broadcast everyone receives.
        summary: String,
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
    CheckpointReached {
        id: u64,
    },
    /// At most once a second per remote while a full sync runs.
    FullSyncProgress {
        remote: String,
        progress: FullSyncProgress,
    },
}

/// Which message bus to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BusKind {
    /// The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket).
    #[default]
    System,
    /// The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use.
    Session,
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusKind::System => "system",
            BusKind::Session => "session",
        })
    }
}

/// The bus options of `sersyncctl` (`--bus`, `--bus-address`), for `#[command(flatten)]`;
/// `sersyncd` has the same two flags in its own parser.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct BusArgs {
    /// The message bus to use.
    #[arg(long = "bus", value_enum, value_name = "BUS", default_value_t = BusKind::System, global = true)]
    pub bus: BusKind,

    /// Connect to this D-Bus address instead of the system or session bus (e.g.
    /// unix:path=/run/sersync-test/bus).
    #[arg(long = "bus-address", value_name = "ADDRESS", global = true)]
    pub bus_address: Option<String>,
}

impl BusArgs {
    /// Opens a connection to the chosen bus.
    pub fn connect(&self) -> Result<Connection, ControlError> {
        connect(self.bus, self.bus_address.as_deref())
    }

    /// The bus as people say it: `system bus`, `session bus` or `bus at ADDRESS`.
    pub fn describe(&self) -> String {
        describe_bus(self.bus, self.bus_address.as_deref())
    }
}

fn describe_bus(bus: BusKind, address: Option<&str>) -> String {
    match address {
        Some(address) => format!("the bus at {address}"),
        None => format!("the {bus} bus"),
    }
}

/// A connection builder for `address`, or else for the bus of kind `bus`.
fn builder(
    bus: BusKind,
    address: Option<&str>,
) -> zbus::Result<zbus::blocking::connection::Builder<'static>> {
    match (address, bus) {
        (Some(address), _) => zbus::blocking::connection::Builder::address(address),
        (None, BusKind::System) => zbus::blocking::connection::Builder::system(),
        (None, BusKind::Session) => zbus::blocking::connection::Builder::session(),
    }
}

/// Opens a client connection to `address`, or else to the bus of kind `bus`. Its method
/// calls give up after [`CLIENT_TIMEOUT`], so a hung daemon cannot hang its callers.
pub fn connect(bus: BusKind, address: Option<&str>) -> Result<Connection, ControlError> {
    builder(bus, address)
        .and_then(|b| b.method_timeout(CLIENT_TIMEOUT).build())
        .map_err(|source| ControlError::Connect {
            bus: describe_bus(bus, address),
            source,
        })
}

/// How long a client waits for any answer: longer than [`REPLY_TIMEOUT`], so a daemon
/// that is merely slow answers with its own Timeout error first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// How long the daemon's own calls to the bus (asking who a caller is) may take.
const BUS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a method waits for the daemon loop to answer before failing with
/// `org.sersync.Sersync1.Error.Timeout`.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often at most `PropertiesChanged` is emitted.
pub const PROPERTIES_INTERVAL: Duration = Duration::from_secs(1);

/// What [`serve`] needs besides the channels.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bus: BusKind,
    /// Overrides `bus` (from `--bus-address`).
    pub bus_address: Option<String>,
    /// The instance name; the bus name is derived from it (see [`names`]).
    pub instance: String,
    pub config_path: PathBuf,
    /// See [`REPLY_TIMEOUT`].
    pub reply_timeout: Duration,
}

impl ServeOptions {
    /// The system bus and the default timeout.
    pub fn new(instance: impl Into<String>, config_path: impl Into<PathBuf>) -> Self {
        ServeOptions {
            bus: BusKind::System,
            bus_address: None,
            instance: instance.into(),
            config_path: config_path.into(),
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

/// Why the control interface could not be started.
#[derive(Debug)]
pub enum ControlError {
    /// The instance name cannot be a bus name.
    Name(names::NameError),
    /// No connection to the bus.
    Connect { bus: String, source: zbus::Error },
    /// Exporting the object failed.
    Serve(zbus::Error),
    /// Another process already owns this instance's name.
    NameTaken { name: String, bus: String },
    /// The bus refused the name (on the system bus: the policy lets only root own it).
    NameRefused {
        name: String,
        bus: String,
        source: zbus::Error,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Name(err) => write!(f, "{err}"),
            ControlError::Connect { bus, source } => {
                write!(f, "cannot connect to {bus}: {source}")
            }
            ControlError::Serve(source) => {
                write!(f, "cannot export the D-Bus object {OBJECT_PATH}: {source}")
            }
            ControlError::NameTaken { name, bus } => write!(
                f,
                "{name} is already owned on {bus}: another sersyncd runs with the same instance \
                 name (pick another with --instance)"
            ),
            ControlError::NameRefused { name, bus, source } => write!(
                f,
                "{bus} refused the name {name}: {source} (on the system bus only root may own \
                 it: is dbus/org.sersync.Sersync1.conf installed in /usr/share/dbus-1/system.d?)"
            ),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Name(err) => Some(err),
            ControlError::Connect { source, .. }
            | ControlError::Serve(source)
            | ControlError::NameRefused { source, .. } => Some(source),
            ControlError::NameTaken { .. } => None,
        }
    }
}

impl From<names::NameError> for ControlError {
    fn from(err: names::NameError) -> Self {
        ControlError::Name(err)
    }
}

/// The running control interface. Dropping it stops the publisher, releases the bus name
/// and closes the connection.
#[derive(Debug)]
pub struct ControlHandle {
    connection: Option<Connection>,
    name: String,
    stop: Arc<AtomicBool>,
    publisher: Option<JoinHandle<()>>,
}

impl ControlHandle {
    /// The well-known name this instance owns.
    pub fn bus_name(&self) -> &str {
        &self.name
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
        if let Some(connection) = self.connection.take() {
            // Release explicitly so a successor can take the name at once, even if a method
            // call still waiting for the loop keeps a clone of the connection alive for a
            // while (it ends by REPLY_TIMEOUT at the latest). Not `graceful_shutdown`: that
            // would wait for exactly those calls and hold up the daemon's exit.
            let _ = connection.release_name(self.name.as_str());
            drop(connection);
        }
    }
}

/// Exports the control object on the bus, requests the instance's well-known name (after
/// the object is in place, so no call is lost) and returns; the bus is served on zbus's
/// own thread and events are forwarded by a publisher thread until the handle is dropped or
/// the sending side of `events` is gone.
///
/// `commands` must not block: it hands the command to the daemon loop (e.g. by sending on
/// the loop's channel) and the loop answers on the command's reply channel.
pub fn serve(
    options: ServeOptions,
    status: Arc<RwLock<Status>>,
    commands: Box<dyn Fn(Command) + Send + Sync>,
    events: Receiver<Event>,
) -> Result<ControlHandle, ControlError> {
    let name = names::bus_name(&options.instance)?;
    let bus = describe_bus(options.bus, options.bus_address.as_deref());
    // Absolute, so that what clients see does not depend on the daemon's working directory.
    let config_path = std::path::absolute(&options.config_path).unwrap_or(options.config_path);
    let (watchers, new_watchers) = mpsc::channel();
    let object = Sersync1::new(
        Arc::clone(&status),
        Arc::from(commands),
        watchers,
        options.instance.clone(),
        config_path,
        options.reply_timeout,
    );
    // Exported through the builder, which starts the object server before the connection
    // reads any message: a call that arrives early (or right after the name is ours) is
    // never dropped.
    let connect_error = |source| ControlError::Connect {
        bus: bus.clone(),
        source,
    };
    let connection = builder(options.bus, options.bus_address.as_deref())
        .map_err(connect_error)?
        .serve_at(OBJECT_PATH, object)
        .map_err(ControlError::Serve)?
        .method_timeout(BUS_CALL_TIMEOUT)
        .build()
        .map_err(connect_error)?;
    let flags = RequestNameFlags::DoNotQueue.into();
    match connection.request_name_with_flags(name.as_str(), flags) {
        Ok(_) => {}
        Err(zbus::Error::NameTaken) => return Err(ControlError::NameTaken { name, bus }),
        Err(source) => return Err(ControlError::NameRefused { name, bus, source }),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let connection = connection.clone();
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("sersync-dbus".into())
            .spawn(move || publish(&connection, &status, &events, &new_watchers, &stop))
            .map_err(|e| ControlError::Serve(zbus::Error::InputOutput(Arc::new(e))))?
    };
    Ok(ControlHandle {
        connection: Some(connection),
        name,
        stop,
        publisher: Some(publisher),
    })
}

/// How often the publisher looks at the stop flag while idle.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A listener that asked for failures with their paths (`WatchFailures`, checked by the
/// handler): its unique name, and its subscription to `NameOwnerChanged` for that name,
/// which says when it left the bus. Unique names are never reused, so a name that left
/// can never belong to anyone else; it is forgotten all the same.
pub(crate) struct Watcher {
    pub name: zbus::names::OwnedUniqueName,
    pub gone: zbus::MessageStream,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Whether the listener left the bus (or its subscription broke, which is treated
    /// the same: better one listener too few than one too many). Never waits.
    fn left(&mut self) -> bool {
        use std::task::{Context, Poll, Waker};
        use zbus::export::futures_core::Stream;
        let mut context = Context::from_waker(Waker::noop());
        loop {
            match std::pin::Pin::new(&mut self.gone).poll_next(&mut context) {
                Poll::Pending => return false,
                Poll::Ready(None | Some(Err(_))) => return true,
                Poll::Ready(Some(Ok(message))) => {
                    // (name, old owner, new owner): an empty new owner means it left.
                    match message.body().deserialize::<(&str, &str, &str)>() {
                        Ok((_, _, "")) | Err(_) => return true,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// The listeners of unicast `SyncFailed`: takes the new ones (once each) and forgets those
/// that left.
fn refresh_watchers(watchers: &mut Vec<Watcher>, new: &Receiver<Watcher>) {
    for watcher in new.try_iter() {
        if !watchers.iter().any(|w| w.name == watcher.name) {
            tracing::debug!("D-Bus: {} watches failures in full", watcher.name);
            watchers.push(watcher);
        }
    }
    watchers.retain_mut(|w| {
        let left = w.left();
        if left {
            tracing::debug!("D-Bus: {} left the bus; it gets no more failures", w.name);
        }
        !left
    });
}

/// The publisher thread: events become signals as they come; every
/// [`PROPERTIES_INTERVAL`] the snapshot is compared with the last one published and one
/// `PropertiesChanged` carries what differs. It owns the [`Watcher`]s (so their
/// subscriptions end with it).
fn publish(
    connection: &Connection,
    status: &RwLock<Status>,
    events: &Receiver<Event>,
    new_watchers: &Receiver<Watcher>,
    stop: &AtomicBool,
) {
    let iface = match connection
        .object_server()
        .interface::<_, Sersync1>(OBJECT_PATH)
    {
        Ok(iface) => iface,
        Err(err) => {
            tracing::error!("D-Bus: the control object vanished: {err}");
            return;
        }
    };
    let emitter = iface.signal_emitter();
    let read = || match status.read() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut published = read();
    let mut watchers = Vec::new();
    let mut next_tick = Instant::now() + PROPERTIES_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(STOP_POLL);
        let event = events.recv_timeout(wait);
        refresh_watchers(&mut watchers, new_watchers);
        match event {
            Ok(event) => zbus::block_on(emit_event(emitter, &watchers, event)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            let current = read();
            let changed = changed_properties(&published, &current);
            if !changed.is_empty() {
                let changed = changed.into_iter().collect();
                let signal = zbus::fdo::Properties::properties_changed(
                    emitter,
                    InterfaceName::from_static_str_unchecked(INTERFACE),
                    changed,
                    std::borrow::Cow::Borrowed(&[]),
                );
                if let Err(err) = zbus::block_on(signal) {
                    tracing::warn!("D-Bus: cannot emit PropertiesChanged: {err}");
                }
            }
            published = current;
            next_tick = Instant::now() + PROPERTIES_INTERVAL;
        }
    }
}

/// Emits the signal of one event. `SyncFailed` is sent in full to each watcher alone (a
/// signal with a destination reaches nobody else), and broadcast without its path and
/// with the path-free summary as its message.
async fn emit_event(
    emitter: &zbus::object_server::SignalEmitter<'static>,
    watchers: &[Watcher],
    event: Event,
) {
    use std::os::unix::ffi::OsStringExt;
    let result = match event {
        Event::SyncFailed {
            remote,
            path,
            rsync_exit,
            message,
            summary,
        } => {
            for watcher in watchers {
                let to = emitter
                    .clone()
                    .set_destination(zbus::names::BusName::Unique(watcher.name.clone().into()));
                let unicast = Sersync1::sync_failed(
                    &to,
                    remote.clone(),
                    path.clone(),
                    rsync_exit,
                    message.clone(),
                );
                if let Err(err) = unicast.await {
                    tracing::warn!("D-Bus: cannot send SyncFailed to {}: {err}", watcher.name);
                }
            }
            Sersync1::sync_failed(emitter, remote, Vec::new(), rsync_exit, summary).await
        }
        Event::FullSyncFinished {
            job_id,
            root,
            success,
        } => {
            let root = root.into_os_string().into_vec();
            Sersync1::full_sync_finished(emitter, job_id, root, success).await
        }
        Event::StateChanged { remote, state } => {
            Sersync1::state_changed(emitter, remote, state).await
        }
        Event::CheckpointReached { id } => Sersync1::checkpoint_reached(emitter, id).await,
        Event::FullSyncProgress { remote, progress } => {
            Sersync1::full_sync_progress(emitter, remote, wire::ProgressInfo::from(&progress)).await
        }
    };
    if let Err(err) = result {
        tracing::warn!("D-Bus: cannot emit a signal: {err}");
    }
}

/// The properties whose values differ between two snapshots, with their new values.
fn changed_properties(old: &Status, new: &Status) -> Vec<(&'static str, Value<'static>)> {
    let mut changed = Vec::new();
    if old.paused != new.paused {
        changed.push(("Paused", Value::from(new.paused)));
    }
    for (name, before, after) in [
        ("QueueDepth", old.queue_depth, new.queue_depth),
        ("InFlight", old.in_flight, new.in_flight),
        ("Failed", old.failed, new.failed),
        ("Watches", old.watches, new.watches),
    ] {
        if before != after {
            changed.push((name, Value::from(after)));
        }
    }
    // What everyone sees: a change of a full error alone is no change to them.
    let public = |status: &Status| -> Vec<wire::RemoteInfo> {
        status
            .remotes
            .iter()
            .map(|r| wire::RemoteInfo::new(r, wire::Audience::Everyone))
            .collect()
    };
    let remotes = public(new);
    if public(old) != remotes {
        changed.push(("Remotes", Value::from(remotes)));
    }
    if old.counters != new.counters {
        changed.push((
            "Counters",
            Value::from(wire::CountersInfo::from(&new.counters)),
        ));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(remote: &str, state: &str) -> RemoteStatus {
        RemoteStatus {
            name: format!("/srv/www -> {remote}"),
            remote: remote.to_owned(),
            state: state.to_owned(),
            last_ok: None,
            last_error: Some("rsync: \"/srv/www/secret\" failed".to_owned()),
            last_error_summary: Some("rsync exit 23".to_owned()),
            pending: 0,
            owed_since: None,
            bytes_sent: 0,
            runs: RunCounts::default(),
            root: PathBuf::from("/srv/www"),
            full_sync: None,
        }
    }

    #[test]
    fn the_status_line_sums_up_the_snapshot_without_error_texts() {
        let base = Status {
            version: "1".into(),
            instance: "web".into(),
            config_path: PathBuf::from("/etc/sersync/web.xml"),
            paused: false,
            queue_depth: 5,
            in_flight: 1,
            failed: 2,
            watches: 1200,
            remotes: vec![
                remote("10.0.0.2::www", "ok"),
                remote("10.0.0.3::www", "backoff (full sync running)"),
            ],
            counters: Counters::default(),
            blocked_watchers: Vec::new(),
            delivery_latency: Histogram::new(&DELIVERY_BUCKETS),
            full_sync_duration: Histogram::new(&FULL_SYNC_BUCKETS),
        };
        let paused_and_blocked = Status {
            paused: true,
            remotes: vec![RemoteStatus {
                owed_since: Instant::now().checked_sub(Duration::from_millis(20_400)),
                ..remote("10.0.0.2::www", "failing")
            }],
            blocked_watchers: vec![(PathBuf::from("/mnt/nfs"), 31)],
            ..base.clone()
        };
        for (status, want) in [
            (
                &base,
                "1200 watches, 5 queued, 1 in flight, 2 failed; 10.0.0.2::www ok, \
                 10.0.0.3::www backoff (full sync running)",
            ),
            (
                &paused_and_blocked,
                "PAUSED; watcher of /mnt/nfs blocked 31 s; 1200 watches, 5 queued, 1 in \
                 flight, 2 failed; 10.0.0.2::www failing (lag 20 s)",
            ),
        ] {
            let line = status.line();
            assert_eq!(line, want);
            assert!(!line.contains("secret"), "{line}");
        }
    }

    #[test]
    fn a_histogram_counts_each_observation_in_every_bucket_it_fits() {
        let ms = Duration::from_millis;
        // (bounds, observations, cumulative counts, sum, count)
        type Row<'a> = (&'a [Duration], &'a [Duration], &'a [u64], Duration, u64);
        let table: [Row<'_>; 5] = [
            (&[ms(100), ms(1000)], &[], &[0, 0], ms(0), 0),
            // A value equal to a bound belongs to that bucket (`le`: less or equal).
            (&[ms(100), ms(1000)], &[ms(100)], &[1, 1], ms(100), 1),
            (&[ms(100), ms(1000)], &[ms(101)], &[0, 1], ms(101), 1),
            // Above every bound: only in +Inf, which is the count.
            (
                &[ms(100), ms(1000)],
                &[ms(5000), ms(1)],
                &[1, 1],
                ms(5001),
                2,
            ),
            // Bounds given out of order and twice are sorted and deduplicated.
            (
                &[ms(1000), ms(100), ms(1000)],
                &[ms(0), ms(500), ms(999)],
                &[1, 3],
                ms(1499),
                3,
            ),
        ];
        for (bounds, observations, cumulative, sum, count) in table {
            let mut histogram = Histogram::new(bounds);
            for value in observations {
                histogram.observe(*value);
            }
            assert_eq!(histogram.bounds(), &[ms(100), ms(1000)], "{bounds:?}");
            assert_eq!(histogram.cumulative(), cumulative, "{observations:?}");
            assert_eq!((histogram.sum(), histogram.count()), (sum, count));
        }
        let mut huge = Histogram::new(&[]);
        huge.observe(Duration::MAX);
        huge.observe(Duration::MAX);
        assert_eq!((huge.sum(), huge.count()), (Duration::MAX, 2));
    }
}
