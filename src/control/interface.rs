//! The `org.sersync.Sersync1` interface: the object the daemon exports, its errors, and
//! (generated from the very same definition) the blocking proxy `sersyncctl` uses.
//!
//! The object is a thin adapter. Methods check the caller, send a [`Command`] into the
//! daemon loop with a fresh reply channel, and wait for the answer without blocking the bus
//! connection's executor. Properties and `GetStatus` read the [`Status`] snapshot the loop
//! publishes. Nothing here owns replication state.
//!
//! # Properties versus `GetStatus`
//!
//! Every property is readable at any time and always current (it reads the snapshot).
//! `PropertiesChanged` is emitted by the publisher in `control::serve` at most once a
//! second, as one signal carrying every property that changed since the last one, so a busy
//! daemon whose counters move constantly costs a watcher one small signal per second and no
//! more. Scripts that want one consistent view (the queue depth and the counters of the
//! same instant) call `GetStatus`, which answers the whole snapshot as one `a{sv}`.
//!
//! # Who may do what
//!
//! "Privileged" below means root, the user the daemon runs as, and the members of the
//! group [`ADMIN_GROUP`].
//!
//! - The status is open to everyone: the properties, `GetStatus`, `Introspect`, and the
//!   signals `StateChanged`, `FullSyncFinished` and `PropertiesChanged`. None of them names
//!   a file: a remote's `LastError` there is a path-free summary (`rsync exit 23: partial
//!   transfer due to error`), never rsync's own words, which quote paths. (Roots, remote
//!   names and the config path are configuration, not file names, and stay public.)
//! - File names are privileged: `ListFailures`, the paths and rsync messages of failures
//!   (`WatchFailures`), and `GetStatus`'s `LastError` in full, which privileged callers
//!   get instead of the summary. A file's name in a directory only its owner may read
//!   must not reach other users through the daemon, which runs as root.
//! - `SyncFailed` is broadcast to everyone with an empty path and the summary as its
//!   message; a caller of `WatchFailures` also gets each one in full, as a signal
//!   addressed to its own unique name alone (which the bus delivers to nobody else),
//!   until it leaves the bus.
//! - Changing (`Pause`, `Resume`, `RetryFailed`, `FullSync`, `ForceFullSync`, `Reload`) is
//!   privileged.
//!
//! The system-bus policy in `dbus/org.sersync.Sersync1.conf` says the same for methods
//! (everyone else may call only `GetStatus`, the properties, introspection and ping), and
//! the handlers check again because the policy does not apply on a session bus or a bus
//! with a laxer policy.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, DBusError, interface};

use super::wire::{Audience, CheckpointInfo, FailureInfo, ProgressInfo, RemoteInfo, StatusInfo};
use super::{Command, Status, Watcher};

/// Members of this group may change the daemon's state and see the names of files that
/// failed, as may root.
pub const ADMIN_GROUP: &str = "sersync";

/// The error domain `org.sersync.Sersync1.Error.*`. Every message says what to do next.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.sersync.Sersync1.Error")]
pub enum Error {
    /// A transport or protocol failure (the error keeps its own D-Bus name).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may read the status but neither change anything nor see file names.
    AccessDenied(String),
    /// `FullSync` named a directory that is not a watched root.
    UnknownRoot(String),
    /// The daemon did not answer in time (it is alive but stuck or overloaded).
    Timeout(String),
    /// `Reload`: the new config was refused; the message holds its diagnostics and the old
    /// config stays in force.
    Rejected(String),
    /// The daemon is shutting down and no longer takes requests.
    Unavailable(String),
    /// `CheckpointStatus` named a checkpoint the daemon does not know (never given, or
    /// reached more than ten minutes ago).
    UnknownCheckpoint(String),
}

/// The object at [`super::names::OBJECT_PATH`].
pub struct Sersync1 {
    status: Arc<RwLock<Status>>,
    commands: Arc<dyn Fn(Command) + Send + Sync>,
    /// To the publisher, which owns the listeners of full `SyncFailed` signals.
    watchers: Sender<Watcher>,
    instance: String,
    config_path: PathBuf,
    reply_timeout: Duration,
}

impl std::fmt::Debug for Sersync1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sersync1")
            .field("instance", &self.instance)
            .field("config_path", &self.config_path)
            .field("reply_timeout", &self.reply_timeout)
            .finish_non_exhaustive()
    }
}

impl Sersync1 {
    pub(crate) fn new(
        status: Arc<RwLock<Status>>,
        commands: Arc<dyn Fn(Command) + Send + Sync>,
        watchers: Sender<Watcher>,
        instance: String,
        config_path: PathBuf,
        reply_timeout: Duration,
    ) -> Self {
        Sersync1 {
            status,
            commands,
            watchers,
            instance,
            config_path,
            reply_timeout,
        }
    }

    /// Reads the current snapshot (a poisoned lock still holds the last good one).
    fn with_status<T>(&self, read: impl FnOnce(&Status) -> T) -> T {
        match self.status.read() {
            Ok(status) => read(&status),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Sends a command built around a fresh reply channel into the loop and waits (without
    /// blocking the connection's executor) for the answer.
    async fn request<T: Send + 'static>(
        &self,
        what: &str,
        make: impl FnOnce(Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = mpsc::channel();
        (self.commands)(make(reply));
        let timeout = self.reply_timeout;
        match blocking::unblock(move || answer.recv_timeout(timeout)).await {
            Ok(value) => Ok(value),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout(format!(
                "the daemon did not answer {what} within {} s; it may be overloaded or stuck \
                 (see its log)",
                timeout.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Unavailable(format!(
                "the daemon dropped the {what} request: it is shutting down"
            ))),
        }
    }

    /// Refuses callers who are neither root, nor the daemon's own user, nor in
    /// [`ADMIN_GROUP`]. `what` starts the message: "`what` needs root or …".
    async fn authorize(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        what: &str,
    ) -> Result<(), Error> {
        let caller = Caller::of(connection, header).await?;
        if caller.privileged() {
            return Ok(());
        }
        Err(Error::AccessDenied(format!(
            "{what} needs root or membership in group {ADMIN_GROUP}; {} is neither (the \
             status, without file names, is open to everyone)",
            caller.describe()
        )))
    }

    /// What the caller may see: everything when privileged, else what names no file
    /// (also when the bus cannot say who is calling).
    async fn audience(&self, connection: &Connection, header: &Header<'_>) -> Audience {
        match Caller::of(connection, header).await {
            Ok(caller) if caller.privileged() => Audience::Privileged,
            _ => Audience::Everyone,
        }
    }
}

/// Who sent a method call, as the bus (or the peer socket) vouches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub uid: u32,
    /// Every group of the caller's process, when the bus reports them (dbus-daemon does,
    /// from `SO_PEERGROUPS`); otherwise looked up from the user database.
    pub groups: Option<Vec<u32>>,
}

impl Caller {
    async fn of(connection: &Connection, header: &Header<'_>) -> Result<Caller, Error> {
        let (uid, groups) = match header.sender() {
            Some(sender) => {
                let bus = zbus::fdo::DBusProxy::new(connection).await?;
                let credentials = bus
                    .get_connection_credentials(sender.clone().into())
                    .await
                    .map_err(|e| Error::ZBus(e.into()))?;
                (
                    credentials.unix_user_id(),
                    credentials.unix_group_ids().cloned(),
                )
            }
            // A peer-to-peer connection: the kernel's view of the socket's other end.
            None => {
                let credentials = connection
                    .peer_creds()
                    .await
                    .map_err(|e| Error::ZBus(zbus::Error::InputOutput(Arc::new(e))))?;
                (
                    credentials.unix_user_id(),
                    credentials.unix_group_ids().cloned(),
                )
            }
        };
        let uid = uid.ok_or_else(|| {
            Error::AccessDenied("the bus did not say which user is calling".into())
        })?;
        Ok(Caller { uid, groups })
    }
    /// Root, the daemon's own user, or a member of [`ADMIN_GROUP`]: may change the daemon
    /// and see file names.
    pub fn privileged(&self) -> bool {
        if self.uid == 0 || self.uid == Uid::effective().as_raw() {
            return true;
        }
        let Ok(Some(group)) = Group::from_name(ADMIN_GROUP) else {
            return false;
        };
        self.is_member(group.gid)
    }

    fn is_member(&self, gid: Gid) -> bool {
        if let Some(groups) = &self.groups {
            return groups.contains(&gid.as_raw());
        }
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(self.uid)) else {
            return false;
        };
        if user.gid == gid {
            return true;
        }
        let Ok(name) = std::ffi::CString::new(user.name.as_bytes()) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&gid))
    }

    fn describe(&self) -> String {
        match User::from_uid(Uid::from_raw(self.uid)) {
            Ok(Some(user)) => format!("user {} (uid {})", user.name, self.uid),
            _ => format!("uid {}", self.uid),
        }
    }
}

#[interface(
    name = "org.sersync.Sersync1",
    proxy(
        default_path = "/org/sersync/Sersync1",
        gen_async = false,
        blocking_name = "Sersync1Proxy"
    )
)]
impl Sersync1 {
    /// Stops handing changes to rsync. Events are still collected and coalesced while
    /// paused; nothing is lost, and Resume delivers them.
    async fn pause(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        self.authorize(connection, &header, "Pause").await?;
        self.request("Pause", Command::Pause).await
    }

    /// Delivers what was collected while paused, and carries on.
    async fn resume(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        self.authorize(connection, &header, "Resume").await?;
        self.request("Resume", Command::Resume).await
    }

    /// Queues every failed change again now, without waiting for its backoff; answers how
    /// many paths were queued.
    #[zbus(out_args("queued"))]
    async fn retry_failed(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u32, Error> {
        self.authorize(connection, &header, "RetryFailed").await?;
        self.request("RetryFailed", Command::RetryFailed).await
    }

    /// Pushes a whole watched root (an empty root: every root) to its remotes. Answers a job
    /// id; the FullSyncFinished signal with that id reports the end.
    #[zbus(out_args("job_id"))]
    async fn full_sync(
        &self,
        root: Vec<u8>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u64, Error> {
        use std::os::unix::ffi::OsStringExt;
        self.authorize(connection, &header, "FullSync").await?;
        let root = (!root.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(root)));
        self.request("FullSync", |reply| Command::FullSync {
            root,
            force: false,
            reply,
        })
        .await?
        .map_err(Error::UnknownRoot)
    }

    /// Like FullSync, past the replica guard: for a root that is meant to be empty now, or
    /// that moved to another filesystem (recorded anew once the full sync succeeded).
    #[zbus(out_args("job_id"))]
    async fn force_full_sync(
        &self,
        root: Vec<u8>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u64, Error> {
        use std::os::unix::ffi::OsStringExt;
        self.authorize(connection, &header, "ForceFullSync").await?;
        let root = (!root.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(root)));
        self.request("ForceFullSync", |reply| Command::FullSync {
            root,
            force: true,
            reply,
        })
        .await?
        .map_err(Error::UnknownRoot)
    }

    /// Every change that is still failing after retries, one dictionary each: Remote s,
    /// Root ay, Path ay (relative to Root), RsyncExit i, Message s, SinceUsec t
    /// (microseconds since the Unix epoch). They name files: for root and group sersync
    /// only (AccessDenied for others; the Failed property counts them for everyone).
    #[zbus(out_args("failures"))]
    async fn list_failures(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<FailureInfo>, Error> {
        self.authorize(connection, &header, "listing failures (ListFailures)")
            .await?;
        let records = self.request("ListFailures", Command::ListFailures).await?;
        Ok(records.iter().map(FailureInfo::from).collect())
    }

    /// For root and group sersync: from now on, until the caller leaves the bus, every
    /// SyncFailed is also sent to the caller alone, in full (the path and rsync's message).
    /// The broadcast copy everyone receives has an empty path and a path-free message; a
    /// caller can tell the two apart by the destination field (only its own copy has one).
    async fn watch_failures(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        self.authorize(
            connection,
            &header,
            "watching failures with their paths (WatchFailures)",
        )
        .await?;
        let Some(name) = header.sender() else {
            return Err(Error::Unavailable(
                "WatchFailures needs a message bus: the caller has no unique name to send \
                 failures to"
                    .into(),
            ));
        };
        let name = name.to_owned();
        // Subscribe to the caller's leaving before looking whether it is still there, so
        // that it cannot leave unnoticed in between.
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg(0, name.as_str())?
            .build();
        let gone = zbus::MessageStream::for_match_rule(rule, connection, Some(4)).await?;
        let bus = zbus::fdo::DBusProxy::new(connection).await?;
        if !bus
            .name_has_owner(name.clone().into())
            .await
            .map_err(|e| Error::ZBus(e.into()))?
        {
            return Ok(());
        }
        self.watchers
            .send(Watcher {
                name: name.into(),
                gone,
            })
            .map_err(|_| Error::Unavailable("the daemon is shutting down".into()))
    }

    /// Fixes a checkpoint over the remotes of a watched root (an empty root: every root)
    /// and answers its id. It is reached once every change the daemon had observed when
    /// it was called (the kernel's queued events included) is on those remotes; the
    /// CheckpointReached signal says so, and CheckpointStatus tells where it stands. Open
    /// to everyone: it names no file and changes nothing.
    #[zbus(out_args("checkpoint_id"))]
    async fn checkpoint(&self, root: Vec<u8>) -> Result<u64, Error> {
        use std::os::unix::ffi::OsStringExt;
        let root = (!root.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(root)));
        self.request("Checkpoint", |reply| Command::Checkpoint { root, reply })
            .await?
            .map_err(Error::UnknownRoot)
    }

    /// Where a checkpoint stands, as a dictionary: State s (draining: the watchers are
    /// still reporting what the kernel had queued; behind: some remotes lack a change
    /// observed before it; reached), Behind as (those remotes, as root -> remote),
    /// Draining aay (the roots whose watcher has not reported yet; empty while the
    /// report has not started). UnknownCheckpoint for ids the daemon does not know.
    #[zbus(out_args("checkpoint"))]
    async fn checkpoint_status(&self, id: u64) -> Result<CheckpointInfo, Error> {
        match self
            .request("CheckpointStatus", |reply| Command::CheckpointStatus {
                id,
                reply,
            })
            .await?
        {
            Some(state) => Ok(CheckpointInfo::from(&state)),
            None => Err(Error::UnknownCheckpoint(format!(
                "checkpoint {id} is unknown: never given, or reached more than ten minutes ago"
            ))),
        }
    }

    /// Re-reads the config file. When the new config is refused, the error Rejected carries
    /// the diagnostics and the running config stays.
    async fn reload(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        self.authorize(connection, &header, "Reload").await?;
        self.request("Reload", Command::Reload)
            .await?
            .map_err(Error::Rejected)
    }

    /// The whole status snapshot at one instant: the properties as one dictionary with
    /// the same names and types (Version, Instance, ConfigPath, Paused, QueueDepth,
    /// InFlight, Failed, Watches, Remotes, Counters), and BlockedWatchers a(ayt) (roots
    /// whose watcher is stuck in a filesystem call, and for how many seconds),
    /// DeliveryLatency and FullSyncDuration a{sv} (histograms: BoundsUsec at, Cumulative
    /// at, SumUsec t, Count t). For root and group sersync, a remote's LastError is
    /// rsync's own words (which may name files) instead of the path-free summary
    /// everyone else gets.
    #[zbus(out_args("status"))]
    async fn get_status(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<StatusInfo, Error> {
        let audience = self.audience(connection, &header).await;
        Ok(self.with_status(|status| {
            StatusInfo::new(status, &self.instance, &self.config_path, audience)
        }))
    }

    /// A change could not be delivered to a remote (after the retries rsync's exit allows).
    /// Broadcast to everyone with an empty path and a path-free message (the diagnosis,
    /// e.g. "rsync exit 23: partial transfer due to error"); callers of WatchFailures
    /// (root and group sersync) also get it addressed to them alone with the batch's first
    /// path and rsync's message.
    #[zbus(signal)]
    pub async fn sync_failed(
        emitter: &SignalEmitter<'_>,
        remote: String,
        path: Vec<u8>,
        rsync_exit: i32,
        message: String,
    ) -> zbus::Result<()>;

    /// A full sync started by FullSync (or by the daemon itself) ended.
    #[zbus(signal)]
    pub async fn full_sync_finished(
        emitter: &SignalEmitter<'_>,
        job_id: u64,
        root: Vec<u8>,
        success: bool,
    ) -> zbus::Result<()>;

    /// How far the full sync running to `remote` is (rsync's own figures, summed over its
    /// runs), at most once a second per remote while it runs: BytesDone t, BytesTotal t
    /// (grows while rsync is still listing), FilesDone t, FilesTotal t, Rate t (bytes per
    /// second), EtaUsec t (rsync's estimate of the time left).
    #[zbus(signal)]
    pub async fn full_sync_progress(
        emitter: &SignalEmitter<'_>,
        remote: String,
        progress: ProgressInfo,
    ) -> zbus::Result<()>;

    /// Every change observed before checkpoint `checkpoint_id` is on the remotes it
    /// covers.
    #[zbus(signal)]
    pub async fn checkpoint_reached(
        emitter: &SignalEmitter<'_>,
        checkpoint_id: u64,
    ) -> zbus::Result<()>;

    /// A remote changed state: ok, backoff or failing.
    #[zbus(signal)]
    pub async fn state_changed(
        emitter: &SignalEmitter<'_>,
        remote: String,
        state: String,
    ) -> zbus::Result<()>;

    /// The sersync version of the daemon.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        self.with_status(super::wire::version_of)
    }

    /// The instance name (sersync@NAME).
    #[zbus(property(emits_changed_signal = "const"))]
    fn instance(&self) -> String {
        self.instance.clone()
    }

    /// The config file the daemon was started with.
    #[zbus(property(emits_changed_signal = "const"))]
    fn config_path(&self) -> String {
        self.config_path.display().to_string()
    }

    /// True between Pause and Resume.
    #[zbus(property)]
    fn paused(&self) -> bool {
        self.with_status(|s| s.paused)
    }

    /// Distinct paths waiting to be delivered, summed over remotes.
    #[zbus(property)]
    fn queue_depth(&self) -> u64 {
        self.with_status(|s| s.queue_depth)
    }

    /// rsync batches running now.
    #[zbus(property)]
    fn in_flight(&self) -> u64 {
        self.with_status(|s| s.in_flight)
    }

    /// Changes still failing after retries (see ListFailures).
    #[zbus(property)]
    fn failed(&self) -> u64 {
        self.with_status(|s| s.failed)
    }

    /// Directories under inotify watch.
    #[zbus(property)]
    fn watches(&self) -> u64 {
        self.with_status(|s| s.watches)
    }

    /// One dictionary per (root, remote): Name s, State s (ok, backoff or failing),
    /// LastOkUsec t (absent: never), LastError s (absent: the last attempt succeeded; a
    /// path-free summary here, rsync's own words in GetStatus for root and group
    /// sersync), Pending t (paths waiting for this remote), LagUsec t (how long the
    /// oldest change not yet delivered to this remote has waited; 0: caught up),
    /// BytesSent t (what rsync reported sending since start), RunsOk t, RunsPartial t
    /// (exit 23), RunsFailed t, Root ay and Remote s (the two halves of Name). Keys may be
    /// added; clients ignore the ones they do not know.
    #[zbus(property)]
    fn remotes(&self) -> Vec<RemoteInfo> {
        self.with_status(|s| {
            s.remotes
                .iter()
                .map(|r| RemoteInfo::new(r, Audience::Everyone))
                .collect()
        })
    }

    /// Counters since start, all t: Events, Batches, Files, Bytes, Errors.
    #[zbus(property)]
    fn counters(&self) -> super::wire::CountersInfo {
        self.with_status(|s| (&s.counters).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_own_user_are_privileged() {
        assert!(
            Caller {
                uid: 0,
                groups: Some(vec![])
            }
            .privileged()
        );
        assert!(
            Caller {
                uid: Uid::effective().as_raw(),
                groups: None
            }
            .privileged()
        );
    }

    #[test]
    fn group_membership_comes_from_the_reported_groups_first() {
        let Ok(Some(group)) = Group::from_name(ADMIN_GROUP) else {
            // Without the group nobody but root and the daemon's user may change anything.
            assert!(
                !Caller {
                    uid: 4_000_000,
                    groups: Some(vec![0, 1, 2])
                }
                .privileged()
            );
            return;
        };
        let outsider = Caller {
            uid: 4_000_000,
            groups: Some(vec![]),
        };
        let member = Caller {
            uid: 4_000_000,
            groups: Some(vec![group.gid.as_raw()]),
        };
        assert_eq!(
            outsider.privileged(),
            Uid::effective().as_raw() == 4_000_000
        );
        assert!(member.privileged());
    }
}
