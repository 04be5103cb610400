//! Recursive inotify watching of the configured roots, turned into path-level changes.
//!
//! inotify watches directories, not trees, and its events name a watch descriptor plus an
//! entry name. This module owns the inotify fd and the tree of watched directories (each
//! node knows its parent and its name, so a renamed directory is one re-parenting and its
//! watches follow it), and turns raw events into [`Change`]s relative to a root:
//!
//! - a new directory (created or moved in) is watched FIRST and then read, and every entry
//!   found is reported, so `mkdir -p a/b/c && echo x > a/b/c/f` is never lost: whatever the
//!   read misses was created after the watch existed and has its own event;
//! - `IN_MOVED_FROM`/`IN_MOVED_TO` are paired by cookie (also across read boundaries); an
//!   unpaired `IN_MOVED_FROM` is a removal and the watches of the moved-away subtree are
//!   dropped so events from outside the tree never arrive under a stale name; a pair whose
//!   source directory was dropped meanwhile is a directory moved in (sent and watched), and
//!   one whose destination left the tree is a move out;
//! - `IN_Q_OVERFLOW` is reported as [`WatchEvent::Overflow`] (the daemon rescans);
//! - each root has a watcher (thread and inotify instance) of its own, so a root on a hung
//!   filesystem (a blocked `read_dir` or `lstat`) stalls only itself; its [`Heartbeat`]
//!   tells the daemon how long it has been stuck;
//! - a root that disappears is reported and re-tried every few seconds, never a crash;
//! - running out of watches (ENOSPC) names `fs.inotify.max_user_watches` and the daemon
//!   keeps working on what it does watch.
//!
//! Filtering happens here too (built-in temp-file names and `<filter>` regexes), so an
//! excluded directory is never watched and its contents are invisible.
//!
//! Architecture invariant: this module never spawns processes and never touches the queue;
//! it only reports [`WatchEvent`]s through the callback it was given.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::{EventToggles, Filter, RootId, WatchBackend};
use crate::queue::Action;
use crate::relpath::{RelPath, join};

mod created;
pub mod fanotify;
mod tree;
use created::{RecentCreates, Tmpfile};
use tree::{Place, WatchTree};

/// One path-level change under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub root: RootId,
    pub path: RelPath,
    pub action: Action,
    /// The entry was unlinked or removed (`IN_DELETE`), or renamed to another path of the
    /// tree: not renamed away out of it. Two-way mode tells its own user's deletions of
    /// files by it: the peer's runs rename what they remove or replace into the
    /// soft-delete directory, which is never watched, and never rename one path of the
    /// tree to another.
    pub unlinked: bool,
    /// Two-way mode: an [`Action::Arrived`] directory the peer's full sync pushed again
    /// (announced as `crate::sync::two_way::Announced::ResentDirectory`): its state from
    /// before, which may be older than a removal here.
    pub resent: bool,
    /// The entry was renamed here from another path of the tree: this host's user's, for
    /// the same reason as [`Change::unlinked`].
    pub moved_within: bool,
    /// When the watcher read the event: the moment it happened, within the watcher's
    /// latency. Two-way mode compares it with when the peer's run moved the path into the
    /// soft-delete directory (`Daemon::removed_by_peer`).
    pub read_at: std::time::SystemTime,
}

/// What the watcher reports to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Changes, in the order they happened.
    Changes(Vec<Change>),
    /// The initial watches of the root are in place (or failed and are being retried).
    Ready { root: RootId, watches: usize },
    /// The kernel dropped events: the root must be rescanned.
    Overflow { root: RootId },
    /// Everything queued before a [`WatchControl::Drain`] has been reported.
    Drained { root: RootId },
    /// Events could not be applied as they happened (directories replaced faster than
    /// they were watched): the watches are repaired; the root must be rescanned.
    Rescan { root: RootId },
    /// A root could not be watched or went away (deleted, moved, unmounted).
    RootLost { root: RootId, reason: String },
    /// A lost root is watched again; it must be rescanned.
    RootRestored { root: RootId, watches: usize },
    /// The inotify watch limit was hit; `path` and what lies below it are not watched.
    WatchLimit { root: RootId, path: PathBuf },
    /// The number of watched directories of the root changed noticeably (for status).
    WatchCount { root: RootId, count: usize },
    /// A directory was renamed inside a root: a hint that the remote's copy at `from` can
    /// serve as the basis for `to` (the changes themselves are reported as usual).
    DirRenamed {
        root: RootId,
        from: RelPath,
        to: RelPath,
    },
    /// Two-way mode: the peer's full sync has pushed, and says which of the directories
    /// it announced as pushed again (see [`Change::resent`]) it made here (`true`) and
    /// which it found here or left out (`false`). Reported after every change read
    /// before it (the push's own).
    ResentOutcome {
        root: RootId,
        paths: Vec<(RelPath, bool)>,
    },
    /// Two-way mode: the peer's next run removes these directories here, as its notice
    /// announced: the peer lacks them. Reported when the notice is read, before the
    /// run's events, so that a kill -9 between the two does not leave a removal that the
    /// next full sync takes for this host's user's (seed 50 of the two-way rounds). The
    /// notice file is left for the daemon to remove once it has saved that.
    PeerRemoves {
        root: RootId,
        paths: Vec<RelPath>,
        notice: PathBuf,
    },
}

/// What to watch and how to filter.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub roots: Vec<PathBuf>,
    pub filter: Filter,
    pub ignore_temp_files: bool,
    pub events: EventToggles,
    /// Always `lstat` entries instead of trusting `d_type` (DT_UNKNOWN filesystems are
    /// handled anyway; this is the original's `<fileSystem xfs>`).
    pub always_stat: bool,
    /// A directory at the top of every root that is neither watched nor reported: in
    /// two-way mode, the `<softDelete>` directory that the peer's runs fill here.
    pub unwatched_top: Option<Vec<u8>>,
    /// Two-way mode: the directory at the top of every root where rsync writes what it
    /// receives (`--temp-dir`) before renaming it into place. It is watched, never
    /// reported: a file renamed out of it is an [`Action::Arrived`] (see
    /// `crate::sync::two_way`), and files found in a new directory are
    /// [`Action::Created`].
    pub incoming: Option<Vec<u8>>,
    /// inotify, fanotify, or fanotify where it works (see [`open`]).
    pub backend: WatchBackend,
}

impl WatchSpec {
    /// Whether an entry is left out: the built-in temporary-file names (non-directories)
    /// and the `<filter>` excludes. Both backends ask this, so they see the same tree.
    pub fn ignores(&self, rel: &[u8], name: &[u8], is_dir: bool) -> bool {
        (self.ignore_temp_files && !is_dir && is_temp_file_name(name))
            || self.is_own_directory(rel)
            || self.filter.excludes(rel, is_dir)
    }

    /// Whether `rel` is one of sersync's own directories at the top of a root (two-way
    /// mode's soft-delete and incoming directories).
    fn is_own_directory(&self, rel: &[u8]) -> bool {
        self.unwatched_top.as_deref() == Some(rel) || self.incoming.as_deref() == Some(rel)
    }

    /// Whether nothing inside the directory `rel` is seen: it or a directory above it is
    /// excluded by `<filter>` (the inotify watcher never watches those directories; a
    /// fanotify watcher, which sees the whole filesystem, asks this).
    pub fn hides_contents_of(&self, rel: &[u8]) -> bool {
        !rel.is_empty()
            && (self.filter.excludes(rel, true)
                || self.is_own_directory(rel)
                || crate::relpath::ancestors(rel)
                    .any(|dir| self.filter.excludes(dir, true) || self.is_own_directory(dir)))
    }

    /// Whether `other` watches the same roots, in the same order, the same way (the
    /// watches of one can serve the other).
    pub fn watches_like(&self, other: &WatchSpec) -> bool {
        self.roots == other.roots
            && self.backend == other.backend
            && self.events == other.events
            && self.ignore_temp_files == other.ignore_temp_files
            && self.unwatched_top == other.unwatched_top
            && self.incoming == other.incoming
            && filter_equal(&self.filter, &other.filter)
    }
}

/// Requests from the daemon to the watcher thread.
#[derive(Debug)]
pub enum WatchControl {
    /// Replace the spec (after a reload): roots added or removed are adjusted.
    Reconfigure(WatchSpec),
    /// Try again to watch the directories the watch limit left out (and report their
    /// contents as changes).
    RetryUnwatched,
    /// Report everything queued in the kernel now, then [`WatchEvent::Drained`].
    Drain,
    Stop,
}

/// The original's built-in ignore list: editor temp files and dotfiles (not directories).
pub fn is_temp_file_name(name: &[u8]) -> bool {
    name.is_empty() || name == b"4913" || name.starts_with(b".") || name.ends_with(b"~")
}

const ROOT_RETRY: Duration = Duration::from_secs(5);
const MOVE_PAIR_WAIT_MS: u8 = 2;
/// How long a met announcement (see [`Watcher::as_announced`]) still covers the events
/// that follow on its path.
const ANNOUNCED_FOLLOW_UP: Duration = Duration::from_secs(2);

const CHANGE_CHUNK: usize = 4096;

#[derive(Debug)]
struct PendingMove {
    cookie: u32,
    parent: i32,
    name: Vec<u8>,
    is_dir: bool,
    /// The watch of the moved directory, taken when `IN_MOVED_FROM` arrived. Everything
    /// later goes by it, never by `(parent, name)`: by then another directory may hold
    /// that name (`mv a t; mv b a`), and a directory that comes back has the same watch.
    node: Option<i32>,
    /// The second half of a RENAME_EXCHANGE: its old path now holds the other directory
    /// (reported by the first half), so it is not a removal.
    exchanged: bool,
    /// Out of the incoming directory (two-way mode): rsync putting what it received in
    /// place. Never a removal.
    incoming: bool,
    /// When its `IN_MOVED_FROM` was read ([`Change::read_at`] of the removal it may be).
    read_at: std::time::SystemTime,
}

/// When a watcher last made progress, shared with the daemon: a watcher blocked in a
/// filesystem call (a hung NFS or FUSE mount) stops beating.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            epoch: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

/// The watcher of one root, of either backend: run it on its own thread.
pub enum AnyWatcher<F: FnMut(WatchEvent)> {
    // Boxed: they differ much in size, and each is made once per root.
    Inotify(Box<Watcher<F>>),
    Fanotify(Box<fanotify::FanWatcher<F>>),
}

impl<F: FnMut(WatchEvent)> std::fmt::Debug for AnyWatcher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnyWatcher::Inotify(w) => w.fmt(f),
            AnyWatcher::Fanotify(w) => w.fmt(f),
        }
    }
}

impl<F: FnMut(WatchEvent)> AnyWatcher<F> {
    /// Reports [`WatchEvent::Ready`], then reads events until told to stop.
    pub fn run(self, control: Receiver<WatchControl>) -> io::Result<()> {
        match self {
            AnyWatcher::Inotify(w) => (*w).run(control),
            AnyWatcher::Fanotify(w) => (*w).run(control),
        }
    }

    /// `inotify` or `fanotify`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyWatcher::Inotify(_) => "inotify",
            AnyWatcher::Fanotify(_) => "fanotify",
        }
    }
}

/// Why no watcher could be made for a root.
#[derive(Debug)]
pub enum OpenError {
    /// `fanotify` was asked for and is refused here (a configuration error: exit 78).
    FanotifyRefused(String),
    /// No inotify instance (`fs.inotify.max_user_instances`?).
    Inotify(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::FanotifyRefused(why) => write!(
                f,
                "the fanotify watch backend is refused here: {why}; run with CAP_SYS_ADMIN and \
                 CAP_DAC_READ_SEARCH on Linux 5.17 or later, or choose `auto` (falls back to \
                 inotify) or `inotify`"
            ),
            OpenError::Inotify(err) => write!(
                f,
                "cannot create an inotify instance: {err} (fs.inotify.max_user_instances?)"
            ),
        }
    }
}

/// Makes the watcher of root `root` with the backend `spec.backend` asks for:
///
/// - `inotify`: the inotify watcher (what it always was);
/// - `fanotify`: the fanotify watcher; a refusal (privileges, kernel, the root's
///   filesystem) is an error, a filesystem mounted below the root that refuses is logged
///   at start, a missing root is reported lost and retried as with inotify;
/// - `auto`: fanotify if it can watch the whole root, else inotify, with one log line
///   saying why.
pub fn open<F: FnMut(WatchEvent)>(
    spec: WatchSpec,
    root: RootId,
    heartbeat: std::sync::Arc<Heartbeat>,
    report: F,
) -> Result<AnyWatcher<F>, OpenError> {
    let path = spec.roots[root].clone();
    let fallback = match spec.backend {
        WatchBackend::Inotify => None,
        WatchBackend::Fanotify => match fanotify::Marks::open(&spec, root) {
            Ok(marks) => {
                fanotify::log_unmarked(&marks);
                Some(marks)
            }
            Err(fanotify::SetupError::Refused(refused)) => {
                return Err(OpenError::FanotifyRefused(refused.to_string()));
            }
            Err(fanotify::SetupError::Root(_)) => {
                return Ok(AnyWatcher::Fanotify(Box::new(fanotify::FanWatcher::new(
                    spec, root, None, heartbeat, report,
                ))));
            }
        },
        WatchBackend::Auto => match fanotify::Marks::open(&spec, root) {
            Ok(marks) if marks.unmarked.is_empty() => Some(marks),
            Ok(marks) => {
                let (point, err) = &marks.unmarked[0];
                tracing::warn!(
                    root = %path.display(),
                    "fanotify cannot mark the filesystem mounted at {} ({err}): watching \
                     this root with inotify",
                    point.display()
                );
                None
            }
            Err(err) => {
                tracing::warn!(
                    root = %path.display(),
                    "fanotify cannot watch this root ({err}): watching it with inotify"
                );
                None
            }
        },
    };
    match fallback {
        Some(marks) => {
            tracing::info!(
                root = %path.display(),
                filesystems = marks.marked(),
                "watching {} with fanotify ({} filesystem mark{})",
                path.display(),
                marks.marked(),
                if marks.marked() == 1 { "" } else { "s" }
            );
            Ok(AnyWatcher::Fanotify(Box::new(fanotify::FanWatcher::new(
                spec,
                root,
                Some(marks),
                heartbeat,
                report,
            ))))
        }
        None => Watcher::new(spec, root, heartbeat, report)
            .map(|watcher| AnyWatcher::Inotify(Box::new(watcher)))
            .map_err(OpenError::Inotify),
    }
}

/// The watcher of one root: run it on its own thread with [`Watcher::run`].
pub struct Watcher<F: FnMut(WatchEvent)> {
    inotify: Inotify,
    spec: WatchSpec,
    /// The root this watcher watches (an index into `spec.roots`).
    root: RootId,
    heartbeat: std::sync::Arc<Heartbeat>,
    tree: WatchTree,
    root_nodes: Vec<Option<i32>>,
    lost_roots: Vec<(RootId, Instant)>,
    /// (device, inode) of the root directory as watched, and when to look again: a
    /// filesystem mounted over the root, or unmounted from under it, raises no event on
    /// the directory that is watched.
    root_dir: Option<(u64, u64)>,
    next_mount_check: Instant,
    pending_moves: Vec<PendingMove>,
    out: Vec<Change>,
    report: F,
    last_reported_count: usize,
    /// Directories (parent node, name) not watched because of the watch limit.
    unwatched: Vec<(i32, Vec<u8>)>,
    /// Roots for which a WatchLimit was reported since the last retry.
    limited_roots: Vec<RootId>,
    /// Regular files created lately and not synced on creation (for `O_TMPFILE` links).
    recent_creates: RecentCreates,
    /// `(parent, name, watch)` of a directory that the last rename moved another one onto.
    /// If the next move starts from that very name, it is the second half of a
    /// RENAME_EXCHANGE (`renameat2`, atomic swaps) and moves *this* directory, not the one
    /// that now holds the name. A plain rename over a directory removes it instead: its
    /// IN_ATTRIB (link count) or IN_DELETE_SELF comes first and clears this.
    displaced: Option<(i32, Vec<u8>, i32)>,
    /// Two-way mode: what the peer's runs announced they make or remove in place here
    /// (`crate::sync::two_way::Announced`), by path, until when: a change that leaves a
    /// path as announced is the peer's, reported as [`Action::Arrived`].
    announced: std::collections::HashMap<RelPath, (crate::sync::two_way::Announced, Instant)>,
    /// When the events being handled were read ([`Change::read_at`]).
    read_at: std::time::SystemTime,
    /// The read time of the pending move being reported, in place of `read_at`.
    reporting_move_read_at: Option<std::time::SystemTime>,
}

impl<F: FnMut(WatchEvent)> std::fmt::Debug for Watcher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watches", &self.tree.len())
            .field("roots", &self.spec.roots)
            .finish()
    }
}

impl<F: FnMut(WatchEvent)> Watcher<F> {
    /// Creates the inotify instance for root `root` of `spec`. Watches are added by
    /// [`Watcher::run`].
    pub fn new(
        spec: WatchSpec,
        root: RootId,
        heartbeat: std::sync::Arc<Heartbeat>,
        report: F,
    ) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let root_count = spec.roots.len();
        heartbeat.beat();
        Ok(Watcher {
            inotify,
            spec,
            root,
            heartbeat,
            tree: WatchTree::default(),
            root_nodes: vec![None; root_count],
            lost_roots: Vec::new(),
            root_dir: None,
            next_mount_check: Instant::now() + ROOT_RETRY,
            pending_moves: Vec::new(),
            out: Vec::new(),
            report,
            last_reported_count: 0,
            unwatched: Vec::new(),
            limited_roots: Vec::new(),
            recent_creates: RecentCreates::default(),
            displaced: None,
            announced: std::collections::HashMap::new(),
            read_at: std::time::SystemTime::now(),
            reporting_move_read_at: None,
        })
    }

    fn mask(&self) -> WatchMask {
        let toggles = self.spec.events;
        let mut mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW;
        // No IN_EXCL_UNLINK: it also hides the writes to an `O_TMPFILE` file (its name is
        // `#<inode>`, never linked) that is then linked in, whose only other event is an
        // IN_CREATE. A write to a deleted but open file costs a sync of a path that does
        // not exist, which deletes nothing that still exists.
        if toggles.close_write {
            mask |= WatchMask::CLOSE_WRITE;
        }
        if toggles.modify {
            mask |= WatchMask::MODIFY;
        }
        // Always: besides chmod and touch (reported only with `<attrib>`), IN_ATTRIB on a
        // directory that a rename replaced (its link count dropped) is what tells a plain
        // rename over a directory from a RENAME_EXCHANGE (see `displaced`).
        mask |= WatchMask::ATTRIB;
        mask
    }

    /// Sets up every root, reports [`WatchEvent::Ready`], then reads events until told to
    /// stop (or the control channel closes).
    pub fn run(mut self, control: Receiver<WatchControl>) -> io::Result<()> {
        self.add_root(self.root);
        (self.report)(WatchEvent::Ready {
            root: self.root,
            watches: self.tree.len(),
        });
        self.last_reported_count = self.tree.len();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            self.heartbeat.beat();
            match control.try_recv() {
                Ok(WatchControl::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                Ok(WatchControl::Reconfigure(spec)) => self.reconfigure(spec),
                Ok(WatchControl::RetryUnwatched) => self.retry_unwatched(),
                Ok(WatchControl::Drain) => self.drain(&mut buffer)?,
                Err(TryRecvError::Empty) => {}
            }
            self.retry_lost_roots();
            self.check_root_mount();
            let timeout = if self.pending_moves.is_empty() {
                PollTimeout::from(250u16)
            } else {
                PollTimeout::from(MOVE_PAIR_WAIT_MS)
            };
            let readable = {
                let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, timeout) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(err) => return Err(io::Error::from(err)),
                }
            };
            if !readable {
                // No MOVED_TO followed: the pending moves left the tree.
                self.expire_pending_moves();
                self.flush();
                continue;
            }
            self.read_available(&mut buffer)?;
            self.flush();
        }
    }

    /// Reads and handles the events queued now (none: returns false at once).
    fn read_available(&mut self, buffer: &mut [u8]) -> io::Result<bool> {
        let events: Vec<(i32, EventMask, u32, Option<Vec<u8>>)> =
            match self.inotify.read_events(buffer) {
                Ok(events) => events
                    .map(|e| {
                        (
                            e.wd.get_watch_descriptor_id(),
                            e.mask,
                            e.cookie,
                            e.name.map(|n| n.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Vec::new(),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => Vec::new(),
                Err(err) => return Err(err),
            };
        let any = !events.is_empty();
        if any {
            self.read_at = std::time::SystemTime::now();
        }
        for (wd, mask, cookie, name) in events {
            self.handle(wd, mask, cookie, name);
        }
        Ok(any)
    }

    /// Reports every change the kernel has queued (at a clean stop, so that what happened
    /// before it is saved, not lost with the inotify instance).
    fn drain(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        // Bounded: a writer that never stops would keep this loop busy forever. What is
        // left unread at the deadline is covered by a rescan, which a stopping daemon
        // saves as a full sync owed.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut more = true;
        while more && Instant::now() < deadline {
            more = self.read_available(buffer)?;
        }
        self.flush_pending_moves();
        if more {
            (self.report)(WatchEvent::Rescan { root: self.root });
        }
        self.flush();
        (self.report)(WatchEvent::Drained { root: self.root });
        Ok(())
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            let changes = std::mem::take(&mut self.out);
            (self.report)(WatchEvent::Changes(changes));
        }
        let count = self.tree.len();
        if count.abs_diff(self.last_reported_count) >= 64
            || (count != self.last_reported_count && count < 64)
        {
            self.last_reported_count = count;
            (self.report)(WatchEvent::WatchCount {
                root: self.root,
                count,
            });
        }
    }

    fn emit(&mut self, root: RootId, path: RelPath, action: Action) {
        self.emit_change(root, path, action, false);
    }

    /// [`Watcher::emit`], saying whether the entry was unlinked ([`Change::unlinked`]).
    fn emit_change(&mut self, root: RootId, path: RelPath, action: Action, unlinked: bool) {
        self.push_change(root, path, action, unlinked, false);
    }

    /// A file renamed to `path` from another path of the tree ([`Change::moved_within`]).
    fn emit_moved_within(&mut self, root: RootId, path: RelPath) {
        self.push_change(root, path, Action::Sync, false, true);
    }

    fn push_change(
        &mut self,
        root: RootId,
        path: RelPath,
        action: Action,
        unlinked: bool,
        moved_within: bool,
    ) {
        let (action, resent) = if self.announced.is_empty() {
            (action, false)
        } else {
            self.as_announced(root, &path, action)
        };
        self.out.push(Change {
            root,
            path,
            action,
            unlinked,
            resent,
            moved_within: moved_within && action == Action::Sync,
            read_at: self.reporting_move_read_at.unwrap_or(self.read_at),
        });
        if self.out.len() >= CHANGE_CHUNK {
            let changes = std::mem::take(&mut self.out);
            (self.report)(WatchEvent::Changes(changes));
        }
    }

    /// `action`, or [`Action::Arrived`] when the peer announced what is at `path` now
    /// (made or removed by its run, see `crate::sync::two_way::Announced`): sent back, it
    /// would undo what the peer did since. Met, an announcement stays a moment for the
    /// events that follow (rsync sets a directory's times and mode after making it); a
    /// change that leaves the path otherwise is this host's and ends it. With it, whether
    /// the announcement was of a directory the peer's full sync pushed again
    /// ([`Change::resent`]).
    fn as_announced(&mut self, root: RootId, path: &[u8], action: Action) -> (Action, bool) {
        use crate::sync::two_way::Announced;
        if !matches!(
            action,
            Action::Sync | Action::Created | Action::Remove { .. }
        ) {
            return (action, false);
        }
        let now = Instant::now();
        let Some((announced, until)) = self.announced.get(path) else {
            return (action, false);
        };
        if *until <= now {
            self.announced.remove(path);
            return (action, false);
        }
        let abs = self.abs_path(root, path);
        let here = match std::fs::symlink_metadata(&abs) {
            Err(_) => None,
            Ok(meta) => match Announced::of(&abs, &meta) {
                Some(here) => Some(here),
                // A regular file is never announced (it arrives through the incoming
                // directory): the path is this host's now.
                None => {
                    self.announced.remove(path);
                    return (action, false);
                }
            },
        };
        let removes_directory = action == Action::Remove { dir: true };
        let met = announced.is_met_by_change(here.as_ref(), removes_directory);
        if !met
            && removes_directory
            && matches!(
                announced,
                Announced::Directory { .. } | Announced::ResentDirectory { .. }
            )
        {
            // This host's user removed the directory (the peer's runs never remove one to
            // make one): the announcement stays for what the peer's run makes there next.
            // Ended here, the peer's push making the old directory again just after the
            // user renamed it away would be taken for the user's, and sent back.
            return (action, false);
        }
        if met {
            // Kept a moment for the events that follow (rsync setting the times and mode
            // of what it made), not longer: what the peer has may change.
            let resent = matches!(announced, Announced::ResentDirectory { .. });
            self.follow_up_only(path, now);
            (Action::Arrived, resent)
        } else {
            // The path changed otherwise here: the announcement is stale.
            self.announced.remove(path);
            (action, false)
        }
    }

    /// Two-way mode: reads a notice the peer's run left in the incoming directory (and
    /// removes it): what its next run makes or removes in place here.
    fn read_notice(&mut self, root: RootId, dir_rel: &[u8], name: &[u8]) {
        /// Long enough for the run the notice is for, and for this watcher to read that
        /// run's events under load; short, because an announcement outliving its run
        /// could pass a change of this host's for the peer's.
        const ANNOUNCED_FOR: Duration = Duration::from_secs(30);
        /// No notice is larger (a run of 100,000 directories is about 5 MB).
        const NOTICE_MAX: u64 = 64 << 20;
        let path = self.abs_path(root, &join(dir_rel, name));
        let read = std::fs::File::open(&path).and_then(|file| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, NOTICE_MAX), &mut bytes)
                .map(|_| bytes)
        });
        let entries = read.map(|bytes| crate::sync::two_way::decode_notice(&bytes));
        // One that announces removals stays until the daemon has saved that the peer
        // lacks them (`WatchEvent::PeerRemoves`).
        let removes_any = entries.as_ref().is_ok_and(|entries| {
            entries
                .iter()
                .any(|(_, announced)| *announced == crate::sync::two_way::Announced::Removed)
        });
        if !removes_any {
            let _ = std::fs::remove_file(&path);
        }
        match entries {
            Ok(entries) => {
                let now = Instant::now();
                self.announced.retain(|_, (_, until)| *until > now);
                let until = now + ANNOUNCED_FOR;
                let mut outcome = Vec::new();
                let mut removes = Vec::new();
                for (path, announced) in entries {
                    match announced {
                        crate::sync::two_way::Announced::ResentOutcome { made } => {
                            self.follow_up_only(&path, now);
                            outcome.push((path, made));
                        }
                        crate::sync::two_way::Announced::Ended => {
                            self.follow_up_only(&path, now);
                        }
                        announced => {
                            if announced == crate::sync::two_way::Announced::Removed {
                                removes.push(path.clone());
                            }
                            self.announced.insert(path, (announced, until));
                        }
                    }
                }
                if !removes.is_empty() {
                    self.flush();
                    (self.report)(WatchEvent::PeerRemoves {
                        root,
                        paths: removes,
                        notice: path.clone(),
                    });
                }
                if !outcome.is_empty() {
                    // The push's events were read before its outcome: the daemon gets
                    // them first.
                    self.flush();
                    (self.report)(WatchEvent::ResentOutcome {
                        root,
                        paths: outcome,
                    });
                }
            }
            Err(err) => tracing::warn!(
                notice = %path.display(),
                "two-way: cannot read the peer's notice: {err} (its directories and \
                 symlinks may be sent back)"
            ),
        }
    }

    /// Keeps the announcement of `path` for the follow-up events only: it was met, or
    /// the peer's run it was for is over ([`crate::sync::two_way::Announced::Ended`], or
    /// a push's outcome), whose events were queued before its notice's, and those still
    /// held (a move waiting for its pair) are read within a moment. After that, a change
    /// of the path is this host's.
    fn follow_up_only(&mut self, path: &[u8], now: Instant) {
        if let Some((_, until)) = self.announced.get_mut(path) {
            *until = (*until).min(now + ANNOUNCED_FOLLOW_UP);
        }
    }

    fn reconfigure(&mut self, spec: WatchSpec) {
        // The daemon starts new watchers when the roots or what is watched change; a
        // watcher told otherwise rebuilds its root (and reports it restored).
        if spec.watches_like(&self.spec) {
            self.spec = spec;
            return;
        }
        for wd in self.tree.wds() {
            self.rm_watch(wd);
        }
        self.tree.clear();
        self.pending_moves.clear();
        self.lost_roots.clear();
        self.root_nodes = vec![None; spec.roots.len()];
        self.spec = spec;
        self.restore_root(self.root);
    }

    fn retry_unwatched(&mut self) {
        let unwatched = std::mem::take(&mut self.unwatched);
        if unwatched.is_empty() {
            return;
        }
        self.limited_roots.clear();
        let before = self.tree.len();
        for (parent, name) in unwatched {
            if self.tree.contains(parent) {
                self.add_subtree(parent, &name, true);
            }
        }
        self.flush();
        let added = self.tree.len() - before;
        if self.unwatched.is_empty() {
            tracing::info!(added, "every directory is watched again");
        } else {
            tracing::warn!(
                added,
                still_unwatched = self.unwatched.len(),
                "still out of inotify watches"
            );
        }
    }

    /// Watches the root anew when another directory answers at its path now (a
    /// filesystem was mounted over it or unmounted from under it): the daemon rescans it
    /// once `RootRestored` comes, and the replica guard decides whether that may delete.
    fn check_root_mount(&mut self) {
        let now = Instant::now();
        if now < self.next_mount_check {
            return;
        }
        self.next_mount_check = now + ROOT_RETRY;
        let (Some(watched), Some(_)) = (self.root_dir, self.root_nodes[self.root]) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(&self.spec.roots[self.root]) else {
            return;
        };
        if (meta.dev(), meta.ino()) != watched {
            let root = self.root;
            self.lose_root(root, "another filesystem is mounted at the root now");
            self.lost_roots.retain(|(r, _)| *r != root);
            self.restore_root(root);
        }
    }

    fn retry_lost_roots(&mut self) {
        let now = Instant::now();
        let due: Vec<RootId> = self
            .lost_roots
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(root, _)| *root)
            .collect();
        for root in due {
            self.lost_roots.retain(|(r, _)| *r != root);
            self.restore_root(root);
        }
    }

    /// Watches a root again (after a reload or once it is back) and says so if it worked.
    fn restore_root(&mut self, root: RootId) {
        self.add_root(root);
        if self.root_nodes[root].is_some() {
            (self.report)(WatchEvent::RootRestored {
                root,
                watches: self.tree.len(),
            });
        }
    }

    /// Whether a directory entry is a directory (not a symlink to one).
    fn entry_is_dir(&self, entry: &std::fs::DirEntry) -> bool {
        if self.spec.always_stat {
            std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir())
        } else {
            // DirEntry::file_type falls back to lstat when d_type is DT_UNKNOWN.
            entry.file_type().is_ok_and(|t| t.is_dir())
        }
    }

    fn add_root(&mut self, root: RootId) {
        let path = self.spec.roots[root].clone();
        match self.inotify.watches().add(&path, self.mask()) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                if root == self.root {
                    self.root_dir = std::fs::metadata(&path)
                        .ok()
                        .map(|meta| (meta.dev(), meta.ino()));
                }
                self.tree.insert_root(id, root);
                self.root_nodes[root] = Some(id);
                self.watch_incoming(id, root);
                self.walk(id, false);
            }
            Err(err) => {
                let reason = if err.raw_os_error() == Some(libc::ENOSPC) {
                    watch_limit_message()
                } else {
                    err.to_string()
                };
                (self.report)(WatchEvent::RootLost { root, reason });
                self.lost_roots.push((root, Instant::now() + ROOT_RETRY));
            }
        }
    }

    /// Stops watching one directory. The kernel answers with `IN_IGNORED`, which finds
    /// the descriptor already forgotten.
    fn rm_watch(&self, wd: i32) {
        // SAFETY: plain syscall on the inotify fd this watcher owns; no memory is passed.
        let _ = unsafe { libc::inotify_rm_watch(self.inotify.as_fd().as_raw_fd(), wd) };
    }

    fn abs_path(&self, root: RootId, rel: &[u8]) -> PathBuf {
        crate::relpath::absolute(&self.spec.roots[root], rel)
    }

    fn ignored(&self, rel: &[u8], name: &[u8], is_dir: bool) -> bool {
        self.spec.ignores(rel, name, is_dir)
    }

    /// Adds a watch for `name` in directory `parent`, then walks what it contains.
    /// With `report`, the directory and every entry found are reported as changes: the
    /// files found as `found`.
    fn add_subtree(&mut self, parent: i32, name: &[u8], report: bool) {
        self.add_subtree_finding(parent, name, report.then_some(Action::Sync));
    }

    fn add_subtree_finding(&mut self, parent: i32, name: &[u8], found: Option<Action>) {
        let (Some(root), Some(parent_rel)) =
            (self.tree.root_of(parent), self.tree.rel_path(parent))
        else {
            return;
        };
        let rel = join(&parent_rel, name);
        if found.is_some() {
            self.emit(root, rel.clone(), Action::Sync);
        }
        if let Some(id) = self.add_dir_watch(parent, name, root, &rel) {
            self.walk_finding(id, found);
        }
    }

    /// Watches the incoming directory of the root (two-way mode), if it is there.
    fn watch_incoming(&mut self, root_node: i32, root: RootId) {
        if let Some(incoming) = self.spec.incoming.clone() {
            if self.tree.child(root_node, &incoming).is_none() {
                self.add_dir_watch(root_node, &incoming, root, &incoming);
            }
        }
    }

    fn add_dir_watch(&mut self, parent: i32, name: &[u8], root: RootId, rel: &[u8]) -> Option<i32> {
        let path = self.abs_path(root, rel);
        match self.inotify.watches().add(&path, self.mask()) {
            Ok(wd) => {
                // The same inode may already be watched (moved back in before its old
                // watch was dropped): the tree moves it and keeps its children.
                let id = wd.get_watch_descriptor_id();
                if self.tree.attach(id, parent, name, root) {
                    Some(id)
                } else {
                    // Keep a watch the tree already holds (a directory inside itself).
                    if !self.tree.contains(id) {
                        self.rm_watch(id);
                    }
                    None
                }
            }
            Err(err) => {
                match err.raw_os_error() {
                    // Gone already, or replaced by a non-directory: its own events say so.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
                    Some(libc::ENOSPC) => {
                        // Once per exhaustion: `limited_roots` empties on each retry.
                        if self.limited_roots.is_empty() {
                            tracing::error!(
                                path = %path.display(),
                                "{}", watch_limit_message()
                            );
                        }
                        self.unwatched.push((parent, name.to_vec()));
                        if !self.limited_roots.contains(&root) {
                            self.limited_roots.push(root);
                            (self.report)(WatchEvent::WatchLimit { root, path });
                        }
                    }
                    _ => tracing::warn!(path = %path.display(), "cannot watch directory: {err}"),
                }
                None
            }
        }
    }

    /// Reads the directory of node `id` (already watched) and everything below it.
    fn walk(&mut self, id: i32, report: bool) {
        self.walk_finding(id, report.then_some(Action::Sync));
    }

    /// [`Watcher::walk`], reporting what it finds when `found` says how: directories as
    /// [`Action::Sync`], the rest as `found`.
    fn walk_finding(&mut self, id: i32, found: Option<Action>) {
        let mut stack = vec![id];
        while let Some(dir_id) = stack.pop() {
            let (Some(root), Some(rel_dir)) =
                (self.tree.root_of(dir_id), self.tree.rel_path(dir_id))
            else {
                continue;
            };
            let abs_dir = self.abs_path(root, &rel_dir);
            self.heartbeat.beat();
            let entries = match std::fs::read_dir(&abs_dir) {
                Ok(entries) => entries,
                Err(err) => {
                    if err.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %abs_dir.display(), "cannot read directory: {err}");
                    }
                    continue;
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name().as_bytes().to_vec();
                let is_dir = self.entry_is_dir(&entry);
                let rel = join(&rel_dir, &name);
                if self.ignored(&rel, &name, is_dir) {
                    continue;
                }
                if let Some(action) = found {
                    let action = if is_dir { Action::Sync } else { action };
                    self.emit(root, rel.clone(), action);
                }
                if is_dir {
                    if let Some(child) = self.add_dir_watch(dir_id, &name, root, &rel) {
                        stack.push(child);
                    }
                }
            }
        }
    }

    fn handle(&mut self, wd: i32, mask: EventMask, cookie: u32, name: Option<Vec<u8>>) {
        tracing::trace!(
            wd,
            ?mask,
            cookie,
            name = %String::from_utf8_lossy(name.as_deref().unwrap_or_default()),
            "inotify event"
        );
        if let Some((_, _, node)) = self.displaced {
            let named = name.as_ref().is_some_and(|n| !n.is_empty());
            let ends = if wd == node {
                mask.intersects(EventMask::ATTRIB | EventMask::DELETE_SELF | EventMask::IGNORED)
            } else {
                named && !mask.contains(EventMask::MOVED_FROM)
            };
            if ends || mask.contains(EventMask::Q_OVERFLOW) {
                self.displaced = None;
            }
        }
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed: events were lost, rescanning");
            self.expire_pending_moves();
            self.flush();
            // Directories created during the overflow were never watched, and removed
            // ones may never get their IN_IGNORED: repair the watch tree first, so the
            // rescan the daemon starts next runs with every watch in place.
            self.repair_watches();
            (self.report)(WatchEvent::Overflow { root: self.root });
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.forget(wd);
            return;
        }
        let (Some(root), Some(place)) = (self.tree.root_of(wd), self.tree.place(wd)) else {
            return;
        };
        let is_root = place == Place::Root;
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            if is_root {
                self.lose_root(root, "watch root was deleted or moved away");
            }
            return;
        }
        // An orphan's parent is gone, and so is any path for what happens in it.
        let Some(dir_rel) = self.tree.rel_path(wd) else {
            return;
        };
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            // An event on the directory itself (e.g. attrib of the root).
            if mask.contains(EventMask::ATTRIB) && self.spec.events.attrib {
                self.emit(root, dir_rel, Action::Sync);
            }
            return;
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        if self.spec.incoming.as_deref() == Some(dir_rel.as_slice()) {
            // rsync's temporary files: only their renames into the tree matter, and the
            // peer's notices (renamed into place here).
            if mask.contains(EventMask::MOVED_TO)
                && name.starts_with(crate::sync::two_way::NOTICE_PREFIX.as_bytes())
            {
                self.pending_moves.retain(|m| m.cookie != cookie);
                self.read_notice(root, &dir_rel, &name);
                return;
            }
            if mask.contains(EventMask::MOVED_FROM) {
                self.pending_moves.push(PendingMove {
                    cookie,
                    parent: wd,
                    name,
                    is_dir,
                    node: None,
                    exchanged: false,
                    incoming: true,
                    read_at: self.read_at,
                });
            }
            return;
        }
        let rel = join(&dir_rel, &name);
        if is_dir
            && place == Place::Root
            && self.spec.incoming.as_deref() == Some(rel.as_slice())
            && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
        {
            // Made after the root was watched (by the daemon, once the root appeared).
            self.add_dir_watch(wd, &name, root, &rel);
            return;
        }
        if self.ignored(&rel, &name, is_dir) {
            return;
        }
        let toggles = self.spec.events;
        if mask.contains(EventMask::MOVED_FROM) {
            // The two halves of one rename are queued together: a move still waiting
            // for its pair when another one starts left the tree, and must be reported
            // before what happens next (`mv a OUT; mv b a`).
            self.flush_pending_moves();
            let displaced = self.displaced.take();
            let (node, exchanged) = match displaced {
                Some((parent, displaced_name, node))
                    if is_dir
                        && parent == wd
                        && displaced_name == name
                        && self.tree.contains(node) =>
                {
                    (Some(node), true)
                }
                _ if is_dir => (self.tree.child(wd, &name), false),
                _ => (None, false),
            };
            self.pending_moves.push(PendingMove {
                cookie,
                parent: wd,
                name,
                is_dir,
                node,
                exchanged,
                incoming: false,
                read_at: self.read_at,
            });
            return;
        }
        if mask.contains(EventMask::MOVED_TO) {
            if let Some(index) = self.pending_moves.iter().position(|m| m.cookie == cookie) {
                let from = self.pending_moves.remove(index);
                if from.incoming {
                    self.arrived(root, wd, rel, &name);
                    return;
                }
                self.renamed(from, wd, name, is_dir);
            } else if is_dir {
                self.dir_moved_in(wd, name);
            } else {
                self.flush_pending_moves();
                if toggles.move_to {
                    self.emit(root, rel, Action::Sync);
                }
            }
            return;
        }
        // Anything else ends a rename sequence: pending moves left the tree.
        self.flush_pending_moves();
        if mask.contains(EventMask::CREATE) {
            if is_dir {
                // In two-way mode a new directory may be the peer's, and what rsync put
                // in it before the watch existed cannot be told from local files.
                let found = if self.spec.incoming.is_some() {
                    Action::Created
                } else {
                    Action::Sync
                };
                self.add_subtree_finding(wd, &name, Some(found));
            } else if self.created_needs_sync(root, &rel) || toggles.create_file {
                self.emit(root, rel, Action::Sync);
            }
        } else if mask.contains(EventMask::DELETE) {
            if toggles.delete {
                self.emit_change(root, rel, Action::Remove { dir: is_dir }, true);
            }
        } else if mask.intersects(EventMask::CLOSE_WRITE | EventMask::MODIFY)
            || (mask.contains(EventMask::ATTRIB) && toggles.attrib)
        {
            match self.tmpfile_link(root, &rel, &name) {
                Tmpfile::No => self.emit(root, rel, Action::Sync),
                Tmpfile::LinkedAs(root, path) => self.emit(root, path, Action::Sync),
                Tmpfile::Anonymous => {}
            }
        }
    }

    /// Whether a created non-directory needs a sync now (see [`RecentCreates::needs_sync`]).
    fn created_needs_sync(&mut self, root: RootId, rel: &[u8]) -> bool {
        let abs = self.abs_path(root, rel);
        self.recent_creates.needs_sync(&abs, root, rel)
    }

    /// What an event's name says about `O_TMPFILE` (see [`RecentCreates::tmpfile_link`]).
    fn tmpfile_link(&self, root: RootId, rel: &[u8], name: &[u8]) -> Tmpfile {
        self.recent_creates
            .tmpfile_link(&self.abs_path(root, rel), name)
    }

    /// A directory moved in from outside (no `IN_MOVED_FROM` paired with it). If it is one
    /// that left the tree a moment ago (its inode still has our watch: same descriptor), it
    /// is that pending move coming back, under the same name or another; otherwise it is
    /// new to the tree.
    fn dir_moved_in(&mut self, parent: i32, name: Vec<u8>) {
        if let (Some(root), Some(parent_rel)) =
            (self.tree.root_of(parent), self.tree.rel_path(parent))
        {
            let path = self.abs_path(root, &join(&parent_rel, &name));
            if let Ok(wd) = self.inotify.watches().add(&path, self.mask()) {
                let id = wd.get_watch_descriptor_id();
                if let Some(index) = self.pending_moves.iter().position(|m| m.node == Some(id)) {
                    let from = self.pending_moves.remove(index);
                    self.renamed(from, parent, name, true);
                    return;
                }
                // Otherwise add_subtree gets the same descriptor again and records it.
            }
        }
        self.flush_pending_moves();
        self.add_subtree(parent, &name, true);
    }

    fn renamed(&mut self, from: PendingMove, to_parent: i32, to_name: Vec<u8>, is_dir: bool) {
        let (Some(to_root), Some(to_dir)) =
            (self.tree.root_of(to_parent), self.tree.rel_path(to_parent))
        else {
            // Where it went is not in the tree any more: for the tree it left.
            self.left_tree(from);
            return;
        };
        let (Some(from_root), Some(from_dir)) = (
            self.tree.root_of(from.parent),
            self.tree.rel_path(from.parent),
        ) else {
            // The directory it left was dropped from the tree meanwhile (it had moved away
            // itself, its move unpaired): what arrived is new here, and must be sent and
            // watched like anything moved in from outside (seed 14: `mv a/b a/t/x;
            // mv a/t/x/c top` with `a/t` not watched yet lost `top` and all below it).
            self.flush_pending_moves();
            if is_dir {
                self.add_subtree(to_parent, &to_name, true);
            } else if self.spec.events.move_to {
                self.emit(to_root, join(&to_dir, &to_name), Action::Sync);
            }
            return;
        };
        let old_rel = join(&from_dir, &from.name);
        let new_rel = join(&to_dir, &to_name);
        let toggles = self.spec.events;
        let same_root_dir = is_dir && from_root == to_root;
        // The old path of an exchange's second half holds the other directory now.
        let removes_old = toggles.move_from && toggles.delete && !from.exchanged;
        if removes_old && !same_root_dir {
            // Renamed within the tree: this host's user's (see `Change::unlinked`).
            self.emit_change(
                from_root,
                old_rel.clone(),
                Action::Remove { dir: from.is_dir },
                true,
            );
        }
        if !is_dir {
            if toggles.move_to {
                self.emit_moved_within(to_root, new_rel);
            }
            return;
        }
        let moved = from.node.filter(|&id| self.tree.contains(id));
        // A directory already at the new name is replaced (a rename over an empty
        // directory) or swapped away (RENAME_EXCHANGE): either way the remote's copy at the
        // new name goes first, and if the next move starts from that name, it is that
        // directory's.
        let occupant = self
            .tree
            .child(to_parent, &to_name)
            .filter(|&other| Some(other) != moved);
        self.displaced = occupant.map(|other| (to_parent, to_name.clone(), other));
        let purge_new = occupant.is_some() && toggles.delete;
        match moved {
            Some(id) if from_root == to_root => {
                self.tree.move_to(id, to_parent, &to_name);
                if !self.still_at(to_root, &new_rel, id) {
                    // The directory that moved here is not the one the tree moved.
                    self.desync(to_root);
                    return;
                }
                // The watches followed; the remote still needs the contents. Everything
                // goes out in one report after the hint, so one batch can carry the move.
                self.flush();
                (self.report)(WatchEvent::DirRenamed {
                    root: to_root,
                    from: old_rel.clone(),
                    to: new_rel.clone(),
                });
                let mut changes = Vec::new();
                if removes_old {
                    changes.push(Change {
                        root: to_root,
                        path: old_rel,
                        action: Action::Remove { dir: true },
                        unlinked: false,
                        resent: false,
                        moved_within: false,
                        read_at: self.read_at,
                    });
                }
                if purge_new {
                    changes.push(Change {
                        root: to_root,
                        path: new_rel.clone(),
                        action: Action::Remove { dir: true },
                        unlinked: false,
                        resent: false,
                        moved_within: false,
                        read_at: self.read_at,
                    });
                }
                changes.push(Change {
                    root: to_root,
                    path: new_rel,
                    action: Action::Sync,
                    unlinked: false,
                    resent: false,
                    moved_within: false,
                    read_at: self.read_at,
                });
                self.walk_report_only(id, &mut changes);
                (self.report)(WatchEvent::Changes(changes));
            }
            other => {
                if same_root_dir && removes_old {
                    self.emit(from_root, old_rel, Action::Remove { dir: true });
                }
                if purge_new {
                    self.emit(to_root, new_rel, Action::Remove { dir: true });
                }
                if let Some(id) = other {
                    self.drop_subtree(id);
                }
                self.add_subtree(to_parent, &to_name, true);
            }
        }
    }

    /// Walks every root and makes the watch tree match the directories on disk: adds
    /// missing watches, forgets directories that are gone. Returns how many were added.
    fn repair_watches(&mut self) -> usize {
        let before = self.tree.len();
        let mut added = 0;
        let mut stack: Vec<i32> = self.root_nodes.iter().flatten().copied().collect();
        while let Some(dir_id) = stack.pop() {
            let (Some(root), Some(rel_dir)) =
                (self.tree.root_of(dir_id), self.tree.rel_path(dir_id))
            else {
                continue;
            };
            self.heartbeat.beat();
            let Ok(entries) = std::fs::read_dir(self.abs_path(root, &rel_dir)) else {
                continue;
            };
            let mut present: Vec<Vec<u8>> = Vec::new();
            for entry in entries.flatten() {
                let is_dir = self.entry_is_dir(&entry);
                if !is_dir {
                    continue;
                }
                let name = entry.file_name().as_bytes().to_vec();
                let rel = join(&rel_dir, &name);
                if self.ignored(&rel, &name, true) {
                    continue;
                }
                present.push(name.clone());
                // By inode, not by name: the directory now at this name may be another
                // one than the tree holds there (inotify answers with the watch of the
                // inode that is there now).
                let known = self.tree.child(dir_id, &name);
                match self.add_dir_watch(dir_id, &name, root, &rel) {
                    Some(child) if Some(child) == known => stack.push(child),
                    Some(child) => {
                        added += 1;
                        self.walk(child, false);
                    }
                    None => {}
                }
            }
            present.sort_unstable();
            for (name, id) in self.tree.children(dir_id) {
                if present.binary_search(&name).is_err() {
                    self.drop_subtree(id);
                }
            }
        }
        tracing::info!(
            added,
            watches = self.tree.len(),
            was = before,
            "watch tree repaired"
        );
        added
    }

    /// Whether the directory at `rel` now is the one watched as `expected` (the same inode
    /// has the same watch descriptor). A path that is gone or not a directory any more
    /// proves nothing: the events that moved it follow.
    fn still_at(&mut self, root: RootId, rel: &[u8], expected: i32) -> bool {
        match self
            .inotify
            .watches()
            .add(self.abs_path(root, rel), self.mask())
        {
            Ok(wd) => {
                let found = wd.get_watch_descriptor_id();
                if found != expected && !self.tree.contains(found) {
                    self.rm_watch(found);
                }
                found == expected
            }
            Err(_) => true,
        }
    }

    /// The tree no longer matches the directories on disk: they were created, moved and
    /// replaced faster than the events could be applied, so some events went to the
    /// wrong path and some directories were not watched for a moment. Repairs the tree by
    /// inode and asks for a rescan of the root, as after an overflow.
    fn desync(&mut self, root: RootId) {
        tracing::warn!(
            "directories were moved and replaced faster than they could be watched: \
             repairing the watches and rescanning the root"
        );
        self.flush_pending_moves();
        self.flush();
        self.repair_watches();
        (self.report)(WatchEvent::Rescan { root });
    }

    /// Lists every entry below a moved directory (already watched) into `out`, and
    /// watches any subdirectory the tree lacks: one whose watch could not be added when
    /// it was created, because by then its path led elsewhere (it was inside a directory
    /// that was swapped away, say), would otherwise stay unwatched for good.
    fn walk_report_only(&mut self, id: i32, out: &mut Vec<Change>) {
        let (Some(root), Some(rel)) = (self.tree.root_of(id), self.tree.rel_path(id)) else {
            return;
        };
        let mut stack = vec![(id, rel)];
        while let Some((dir_id, rel_dir)) = stack.pop() {
            self.heartbeat.beat();
            let Ok(entries) = std::fs::read_dir(self.abs_path(root, &rel_dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().as_bytes().to_vec();
                let is_dir = self.entry_is_dir(&entry);
                let rel = join(&rel_dir, &name);
                if self.ignored(&rel, &name, is_dir) {
                    continue;
                }
                out.push(Change {
                    root,
                    path: rel.clone(),
                    action: Action::Sync,
                    unlinked: false,
                    resent: false,
                    moved_within: false,
                    read_at: self.read_at,
                });
                if is_dir {
                    let child = match self.tree.child(dir_id, &name) {
                        Some(child) => Some(child),
                        None => self.add_dir_watch(dir_id, &name, root, &rel),
                    };
                    if let Some(child) = child {
                        stack.push((child, rel));
                    }
                }
            }
        }
    }

    /// rsync put what it received at `rel` (renamed out of the incoming directory). The
    /// file it replaced was moved to the soft-delete directory just before: that move,
    /// still waiting for a pair it will never get, is no removal.
    fn arrived(&mut self, root: RootId, parent: i32, rel: RelPath, name: &[u8]) {
        self.pending_moves
            .retain(|m| m.incoming || m.parent != parent || m.name != name);
        self.emit(root, rel, Action::Arrived);
    }

    /// The pending moves out of the tree left it. rsync's renames out of the incoming
    /// directory stay, for their other half (paired by cookie): several runs write at
    /// once (a full sync's runs over the top-level directories, or the runs of another
    /// peer), and another run's event may come between the two halves of one. Unpaired,
    /// the arrival would be taken for this host's user's file, and sent back (seed 11
    /// of the randomized two-way rounds: a file the peer had just renamed away came
    /// back there). They go once the events pause ([`Watcher::expire_pending_moves`]).
    fn flush_pending_moves(&mut self) {
        /// More would be a watcher that never sees the events pause.
        const INCOMING_PENDING_MAX: usize = 4096;
        let moves = std::mem::take(&mut self.pending_moves);
        let (mut incoming, moves): (Vec<PendingMove>, Vec<PendingMove>) =
            moves.into_iter().partition(|m| m.incoming);
        if incoming.len() > INCOMING_PENDING_MAX {
            incoming.drain(..incoming.len() - INCOMING_PENDING_MAX);
        }
        self.pending_moves = incoming;
        for m in moves {
            self.left_tree(m);
        }
    }

    /// Every pending move left the tree: no event followed for a moment.
    fn expire_pending_moves(&mut self) {
        self.flush_pending_moves();
        self.pending_moves.clear();
    }

    /// A move whose other half never came (or went where nothing is watched): what moved
    /// left the tree.
    fn left_tree(&mut self, m: PendingMove) {
        let Some(root) = self.tree.root_of(m.parent) else {
            return;
        };
        // The directory that left, by its watch: what holds its old name now may be
        // another directory that was moved there meanwhile.
        if let Some(id) = m.node.filter(|&id| self.tree.contains(id)) {
            self.drop_subtree(id);
        }
        let Some(dir) = self.tree.rel_path(m.parent) else {
            return;
        };
        if self.spec.events.move_from && self.spec.events.delete {
            self.reporting_move_read_at = Some(m.read_at);
            self.emit(root, join(&dir, &m.name), Action::Remove { dir: m.is_dir });
            self.reporting_move_read_at = None;
        }
    }

    /// Stops watching a subtree that left the watched tree.
    fn drop_subtree(&mut self, id: i32) {
        for wd in self.tree.remove_subtree(id) {
            self.rm_watch(wd);
        }
    }

    fn forget(&mut self, wd: i32) {
        // Children of a vanished directory become orphans: they get their own IN_IGNORED,
        // and until then their events are dropped (they have no path).
        let Some((root, place)) = self.tree.forget(wd) else {
            return;
        };
        if place == Place::Root && self.root_nodes.get(root).copied().flatten() == Some(wd) {
            self.lose_root(
                root,
                "watch root is no longer watched (deleted or unmounted)",
            );
        }
    }

    fn lose_root(&mut self, root: RootId, reason: &str) {
        if let Some(id) = self.root_nodes[root].take() {
            self.drop_subtree(id);
        }
        // Keep nodes of other roots; drop any orphan of this root.
        for id in self.tree.wds_of_root(root) {
            self.drop_subtree(id);
        }
        (self.report)(WatchEvent::RootLost {
            root,
            reason: reason.to_owned(),
        });
        if !self.lost_roots.iter().any(|(r, _)| *r == root) {
            self.lost_roots.push((root, Instant::now() + ROOT_RETRY));
        }
    }
}

fn filter_equal(a: &Filter, b: &Filter) -> bool {
    a.enabled == b.enabled
        && a.excludes.len() == b.excludes.len()
        && a.excludes
            .iter()
            .zip(&b.excludes)
            .all(|(x, y)| x.expression == y.expression)
}

/// The operator-facing explanation of ENOSPC from inotify_add_watch.
pub fn watch_limit_message() -> String {
    let current = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!(
        "inotify watch limit reached (fs.inotify.max_user_watches = {current}): directories \
         below this one are not watched; raise it, e.g. `sysctl fs.inotify.max_user_watches=1048576` \
         (persist in /etc/sysctl.d/), then reload"
    )
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn temp_file_names() {
        for (name, ignored) in [
            (&b".htaccess"[..], true),
            (b"x~", true),
            (b"4913", true),
            (b"49130", false),
            (b"a.txt", false),
            (b"", true),
            (b"~x", false),
        ] {
            assert_eq!(
                is_temp_file_name(name),
                ignored,
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
