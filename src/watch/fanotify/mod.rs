//! Watching a root with fanotify: one filesystem mark per filesystem, no watch per
//! directory, no crawl before `Ready`.
//!
//! The group reports in FID mode (`FAN_REPORT_DFID_NAME | FAN_REPORT_FID |
//! FAN_REPORT_TARGET_FID`, Linux 5.17): each event names the directory it happened in by
//! file handle, plus the entry's name; a rename is one `FAN_RENAME` event with both ends.
//! A `FAN_MARK_FILESYSTEM` mark sees the whole filesystem, so the events are filtered to
//! the root here: a directory handle is opened with `open_by_handle_at` (through a
//! descriptor of the mount it is seen in), its path read back from `/proc/self/fd` and
//! checked with `lstat` (same device and inode), and the result kept in a bounded cache
//! that a directory rename touching the root, an overflow or a remount empties.
//!
//! What the daemon relies on is kept from the inotify watcher: the same [`WatchEvent`]s,
//! the same filters ([`WatchSpec::ignores`]) and created-file rules
//! ([`RecentCreates`]), `DirRenamed` hints with the moved directory's contents reported,
//! `Drained`, `RootLost`/`RootRestored`, heartbeats. A new directory needs no crawl: what
//! is created in it has events of its own, whatever the timing. `FAN_Q_OVERFLOW` is
//! [`WatchEvent::Overflow`].
//!
//! Filesystems mounted below the root get a mark of their own (and a mount descriptor to
//! resolve their handles); one that refuses fanotify is reported at start (the caller
//! falls back to inotify in `auto`). Mounts and unmounts below the root are noticed within
//! a few seconds and answered with a rescan.
//!
//! Architecture invariant: the unsafe calls live in [`sys`] only; this module never spawns
//! processes.

// The compiler keeps the invariant: unsafe code anywhere here but in `sys` is an error.
#![deny(unsafe_code)]

mod record;
#[allow(unsafe_code)]
mod sys;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::created::{RecentCreates, Tmpfile};
use super::{Change, Heartbeat, WatchControl, WatchEvent, WatchSpec};
use crate::config::RootId;
use crate::queue::Action;
use crate::relpath::{RelPath, join, strip_root};
use record::{Event, Handle};

const ROOT_RETRY: Duration = Duration::from_secs(5);
const CHANGE_CHUNK: usize = 4096;
/// Directory handles whose paths are remembered; the cache is emptied when full.
const CACHE_LIMIT: usize = 65_536;

const INIT_FLAGS: libc::c_uint = libc::FAN_CLASS_NOTIF
    | libc::FAN_CLOEXEC
    | libc::FAN_NONBLOCK
    | libc::FAN_REPORT_DFID_NAME_TARGET;

/// Why fanotify cannot watch a root (the caller falls back to inotify, or refuses).
#[derive(Debug)]
pub struct Refused {
    pub what: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

/// Whether an error from setting fanotify up means "not here" (privileges, kernel,
/// filesystem), as opposed to a root that does not exist (yet).
fn is_refusal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::EPERM
                | libc::EACCES
                | libc::EOPNOTSUPP
                | libc::EXDEV
                | libc::ENODEV
                | libc::ENOSYS
                | libc::EINVAL
                | libc::ESTALE
                | libc::EOVERFLOW
        )
    )
}

/// A mount through which handles of one filesystem are opened.
#[derive(Debug)]
struct Mount {
    fsid: [u8; 8],
    fd: OwnedFd,
    path: PathBuf,
}

/// The fanotify group of one root and its marks.
#[derive(Debug)]
pub struct Marks {
    group: OwnedFd,
    /// The root as the kernel spells it (symlinks resolved): what resolved paths start with.
    root_real: PathBuf,
    /// (device, inode) of the root directory as marked.
    root_id: (u64, u64),
    root_handle: Handle,
    /// The root's mount first, then the mounts below it.
    mounts: Vec<Mount>,
    /// Filesystems mounted below the root that could not be marked, and why.
    pub unmarked: Vec<(PathBuf, String)>,
    /// The mount points below the root when the marks were made.
    submounts: Vec<PathBuf>,
    marked: usize,
}

/// What a setup that did not work says.
#[derive(Debug)]
pub enum SetupError {
    /// fanotify is refused here (privileges, kernel, filesystem).
    Refused(Refused),
    /// The root is missing or unreadable: try again later.
    Root(io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Refused(refused) => refused.fmt(f),
            SetupError::Root(err) => write!(f, "cannot watch the root: {err}"),
        }
    }
}

fn event_mask(spec: &WatchSpec) -> u64 {
    let toggles = spec.events;
    let mut mask = libc::FAN_CREATE
        | libc::FAN_DELETE
        | libc::FAN_RENAME
        | libc::FAN_DELETE_SELF
        | libc::FAN_MOVE_SELF
        | libc::FAN_ONDIR;
    if toggles.close_write {
        mask |= libc::FAN_CLOSE_WRITE;
    }
    if toggles.modify {
        mask |= libc::FAN_MODIFY;
    }
    if toggles.attrib {
        mask |= libc::FAN_ATTRIB;
    }
    mask
}

/// A directory descriptor for `open_by_handle_at` (which does not take `O_PATH` ones).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

impl Marks {
    /// Creates the group and marks the filesystem of root `root` and of every mount below
    /// it.
    pub fn open(spec: &WatchSpec, root: RootId) -> Result<Marks, SetupError> {
        let path = &spec.roots[root];
        let refused = |what: &str, err: io::Error| {
            SetupError::Refused(Refused {
                what: format!("{what}: {err}"),
            })
        };
        let root_real = std::fs::canonicalize(path).map_err(SetupError::Root)?;
        let meta = std::fs::metadata(&root_real).map_err(SetupError::Root)?;
        if !meta.is_dir() {
            return Err(SetupError::Root(io::Error::from_raw_os_error(
                libc::ENOTDIR,
            )));
        }
        let group = sys::init(INIT_FLAGS).map_err(|err| {
            if !is_refusal(&err) {
                return SetupError::Root(err);
            }
            refused(
                "fanotify_init with FAN_REPORT_DFID_NAME_TARGET (Linux 5.17 or later, \
                 CAP_SYS_ADMIN)",
                err,
            )
        })?;
        let mask = event_mask(spec);
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        sys::mark(group.as_fd(), flags, mask, &root_real).map_err(|err| match err {
            err if !is_refusal(&err) => SetupError::Root(err),
            err => refused(
                &format!(
                    "FAN_MARK_FILESYSTEM on {} (needs CAP_SYS_ADMIN and a filesystem that \
                     reports file handles)",
                    root_real.display()
                ),
                err,
            ),
        })?;
        let root_fd = open_dir(&root_real).map_err(SetupError::Root)?;
        let root_handle = sys::handle_of(&root_real)
            .map_err(|err| refused("name_to_handle_at on the root", err))?;
        // Resolving handles needs CAP_DAC_READ_SEARCH: find out now, not at the first event.
        sys::open_by_handle(root_fd.as_fd(), &root_handle).map_err(|err| {
            refused(
                "open_by_handle_at on the root (needs CAP_DAC_READ_SEARCH)",
                err,
            )
        })?;
        let mut marks = Marks {
            group,
            root_id: (meta.dev(), meta.ino()),
            mounts: vec![Mount {
                fsid: root_handle.fsid,
                fd: root_fd,
                path: root_real.clone(),
            }],
            root_real,
            root_handle,
            unmarked: Vec::new(),
            submounts: Vec::new(),
            marked: 1,
        };
        marks.submounts = submounts_below(&marks.root_real);
        for point in marks.submounts.clone() {
            marks.add_submount(&point, mask);
        }
        Ok(marks)
    }

    fn add_submount(&mut self, point: &Path, mask: u64) {
        let fd = match open_dir(point) {
            Ok(fd) => fd,
            Err(err) => {
                self.unmarked.push((point.to_owned(), err.to_string()));
                return;
            }
        };
        let fsid = match sys::fsid(fd.as_fd()) {
            Ok(fsid) => fsid,
            Err(err) => {
                self.unmarked.push((point.to_owned(), err.to_string()));
                return;
            }
        };
        if !self.mounts.iter().any(|m| m.fsid == fsid) {
            let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
            if let Err(err) = sys::mark(self.group.as_fd(), flags, mask, point) {
                self.unmarked.push((point.to_owned(), err.to_string()));
                return;
            }
            self.marked += 1;
        }
        // Also for another mount of a filesystem marked already (a bind mount): its
        // directories are resolved through it too.
        self.mounts.push(Mount {
            fsid,
            fd,
            path: point.to_owned(),
        });
    }

    /// How many filesystems are marked.
    pub fn marked(&self) -> usize {
        self.marked
    }
}

/// Undoes the escapes of a mountinfo field (`\040` for a space, and so on).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The mount points of `mountinfo` strictly below `root`, in mount order.
fn mount_points_below(mountinfo: &[u8], root: &Path) -> Vec<PathBuf> {
    let mut points = Vec::new();
    for line in mountinfo.split(|&b| b == b'\n') {
        let Some(field) = line.split(|&b| b == b' ').nth(4) else {
            continue;
        };
        let point = unescape_mountinfo(field);
        if strip_root(&point, root).is_some_and(|rest| !rest.is_empty()) {
            let point = PathBuf::from(std::ffi::OsStr::from_bytes(&point));
            if !points.contains(&point) {
                points.push(point);
            }
        }
    }
    points
}

fn submounts_below(root: &Path) -> Vec<PathBuf> {
    std::fs::read("/proc/self/mountinfo")
        .map(|info| mount_points_below(&info, root))
        .unwrap_or_default()
}

/// The fanotify watcher of one root: run it on its own thread with [`FanWatcher::run`].
pub struct FanWatcher<F: FnMut(WatchEvent)> {
    spec: WatchSpec,
    root: RootId,
    heartbeat: Arc<Heartbeat>,
    report: F,
    /// `None` while the root is lost.
    marks: Option<Marks>,
    retry_at: Option<Instant>,
    next_check: Instant,
    /// Directory handle → its paths under the root (none: elsewhere, or gone).
    cache: HashMap<Handle, Vec<RelPath>>,
    out: Vec<Change>,
    recent_creates: RecentCreates,
}

impl<F: FnMut(WatchEvent)> std::fmt::Debug for FanWatcher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanWatcher")
            .field("root", &self.spec.roots.get(self.root))
            .field("marks", &self.marks)
            .finish()
    }
}

impl<F: FnMut(WatchEvent)> FanWatcher<F> {
    /// A watcher with its marks in place, or (`marks` None) one that reports its root
    /// lost and tries again every few seconds.
    pub fn new(
        spec: WatchSpec,
        root: RootId,
        marks: Option<Marks>,
        heartbeat: Arc<Heartbeat>,
        report: F,
    ) -> Self {
        heartbeat.beat();
        FanWatcher {
            spec,
            root,
            heartbeat,
            report,
            marks,
            retry_at: None,
            next_check: Instant::now() + ROOT_RETRY,
            cache: HashMap::new(),
            out: Vec::new(),
            recent_creates: RecentCreates::default(),
        }
    }

    /// Reports [`WatchEvent::Ready`], then reads events until told to stop (or the
    /// control channel closes).
    pub fn run(mut self, control: Receiver<WatchControl>) -> io::Result<()> {
        if self.marks.is_none() {
            self.lose_root("cannot watch the root (missing or unreadable)".to_owned());
        }
        let watches = self.marks.as_ref().map_or(0, Marks::marked);
        (self.report)(WatchEvent::Ready {
            root: self.root,
            watches,
        });
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            self.heartbeat.beat();
            match control.try_recv() {
                Ok(WatchControl::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                Ok(WatchControl::Reconfigure(spec)) => self.reconfigure(spec),
                Ok(WatchControl::RetryUnwatched) => {}
                Ok(WatchControl::Drain) => self.drain(&mut buffer)?,
                Err(TryRecvError::Empty) => {}
            }
            self.retry_lost_root();
            self.check_mounts();
            let Some(marks) = &self.marks else {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            };
            let readable = {
                let mut fds = [PollFd::new(marks.group.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(250u16)) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(err) => return Err(io::Error::from(err)),
                }
            };
            if readable {
                self.read_available(&mut buffer)?;
            }
            self.flush();
        }
    }

    /// Reads and handles the events queued now (none: returns false at once).
    fn read_available(&mut self, buffer: &mut [u8]) -> io::Result<bool> {
        let Some(marks) = &self.marks else {
            return Ok(false);
        };
        let n = match nix::unistd::read(marks.group.as_fd(), buffer) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(false),
            Err(err) => return Err(io::Error::from(err)),
        };
        match record::parse(&buffer[..n]) {
            Ok(events) => {
                for event in events {
                    self.handle(&event);
                }
            }
            Err(err) => {
                // Never seen; treated as lost events, which a rescan covers.
                tracing::warn!("{err}: rescanning");
                self.overflowed();
            }
        }
        Ok(n > 0)
    }

    /// Reports every change the kernel has queued, then [`WatchEvent::Drained`].
    fn drain(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut more = true;
        while more && Instant::now() < deadline {
            more = self.read_available(buffer)?;
        }
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
    }

    fn emit(&mut self, path: RelPath, action: Action) {
        self.out.push(Change {
            root: self.root,
            path,
            action,
            // Two-way mode watches with inotify only.
            unlinked: false,
            resent: false,
            moved_within: false,
            read_at: std::time::SystemTime::now(),
        });
        if self.out.len() >= CHANGE_CHUNK {
            self.flush();
        }
    }

    fn overflowed(&mut self) {
        self.cache.clear();
        self.flush();
        (self.report)(WatchEvent::Overflow { root: self.root });
    }

    fn reconfigure(&mut self, spec: WatchSpec) {
        let same_marks = spec.roots.get(self.root) == self.spec.roots.get(self.root)
            && event_mask(&spec) == event_mask(&self.spec);
        let watches_like = spec.watches_like(&self.spec);
        self.spec = spec;
        if !(same_marks && watches_like) {
            self.flush();
            self.marks = None;
            self.retry_at = None;
            self.restore_root();
        }
    }

    fn abs_path(&self, rel: &[u8]) -> PathBuf {
        crate::relpath::absolute(&self.spec.roots[self.root], rel)
    }

    fn lose_root(&mut self, reason: String) {
        self.flush();
        self.marks = None;
        self.cache.clear();
        (self.report)(WatchEvent::RootLost {
            root: self.root,
            reason,
        });
        self.retry_at = Some(Instant::now() + ROOT_RETRY);
    }

    fn retry_lost_root(&mut self) {
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.restore_root();
        }
    }

    /// Marks the root again (after a reload, a remount, or once it is back) and says so
    /// if it worked.
    fn restore_root(&mut self) {
        self.retry_at = None;
        self.cache.clear();
        match Marks::open(&self.spec, self.root) {
            Ok(marks) => {
                log_unmarked(&marks);
                let watches = marks.marked();
                self.marks = Some(marks);
                (self.report)(WatchEvent::RootRestored {
                    root: self.root,
                    watches,
                });
            }
            Err(err) => {
                let reason = match &err {
                    SetupError::Refused(refused) => format!(
                        "fanotify cannot watch the filesystem at the root now ({refused}); \
                         reload with the inotify backend to watch it"
                    ),
                    SetupError::Root(err) => err.to_string(),
                };
                if self.retry_at.is_none() {
                    self.lose_root(reason);
                }
            }
        }
    }

    /// Every few seconds: is the root still the directory that was marked, and are the
    /// same filesystems mounted below it? (Mounting and unmounting raise no event.)
    fn check_mounts(&mut self) {
        let now = Instant::now();
        if now < self.next_check {
            return;
        }
        self.next_check = now + ROOT_RETRY;
        let Some(marks) = &self.marks else {
            return;
        };
        match std::fs::metadata(&self.spec.roots[self.root]) {
            Ok(meta) if (meta.dev(), meta.ino()) == marks.root_id => {}
            Ok(_) => {
                self.lose_root("another filesystem is mounted at the root now".to_owned());
                self.restore_root();
                return;
            }
            Err(_) => {
                self.lose_root("watch root was deleted or moved away".to_owned());
                return;
            }
        }
        if submounts_below(&marks.root_real) != marks.submounts {
            tracing::info!(
                root = %self.spec.roots[self.root].display(),
                "a filesystem was mounted or unmounted below the root: marking again and \
                 rescanning"
            );
            self.flush();
            match Marks::open(&self.spec, self.root) {
                Ok(marks) => {
                    log_unmarked(&marks);
                    self.marks = Some(marks);
                    self.cache.clear();
                    (self.report)(WatchEvent::Rescan { root: self.root });
                }
                Err(err) => self.lose_root(err.to_string()),
            }
        }
    }

    /// The paths under the root of the directory `handle` names (none when it is
    /// elsewhere or gone). Through each mount of its filesystem: a directory below a bind
    /// mount has a path through it too.
    fn dir_paths(&mut self, handle: &Handle) -> Vec<RelPath> {
        if let Some(paths) = self.cache.get(handle) {
            return paths.clone();
        }
        let Some(marks) = &self.marks else {
            return Vec::new();
        };
        let mut paths: Vec<RelPath> = Vec::new();
        for mount in marks.mounts.iter().filter(|m| m.fsid == handle.fsid) {
            let Ok(fd) = sys::open_by_handle(mount.fd.as_fd(), handle) else {
                continue;
            };
            let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            let Ok(path) = std::fs::read_link(&link) else {
                continue;
            };
            // The name read back is where the directory is now, unless it was removed
            // (" (deleted)") or is not reachable from this mount: the same inode must
            // answer at that path.
            let file = std::fs::File::from(fd);
            let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same || !path.starts_with(&mount.path) {
                continue;
            }
            if let Some(rel) = strip_root(path.as_os_str().as_bytes(), &marks.root_real) {
                if !self.spec.hides_contents_of(rel) && !paths.iter().any(|p| p == rel) {
                    paths.push(rel.to_vec());
                }
            }
        }
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(handle.clone(), paths.clone());
        paths
    }

    fn is_root(&self, handle: &Handle) -> bool {
        self.marks
            .as_ref()
            .is_some_and(|marks| marks.root_handle == *handle)
    }

    fn handle(&mut self, event: &Event) {
        let mask = event.mask;
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            tracing::warn!("fanotify queue overflowed: events were lost, rescanning");
            self.overflowed();
            return;
        }
        let is_dir = mask & libc::FAN_ONDIR != 0;
        if mask & libc::FAN_RENAME != 0 {
            self.renamed(event, is_dir);
            return;
        }
        let Some(info) = event.info(record::INFO_DFID_NAME) else {
            // A file without a name (deleted, or an O_TMPFILE never linked).
            return;
        };
        let Some(name) = info.name.clone() else {
            return;
        };
        if name == b"." {
            // An event on a directory itself.
            if mask & (libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0
                && self.is_root(&info.handle)
            {
                self.lose_root("watch root was deleted or moved away".to_owned());
                return;
            }
            if mask & libc::FAN_ATTRIB != 0 && self.spec.events.attrib {
                for rel in self.dir_paths(&info.handle) {
                    self.emit(rel, Action::Sync);
                }
            }
            return;
        }
        let toggles = self.spec.events;
        let changed = mask
            & (libc::FAN_CREATE | libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY | libc::FAN_ATTRIB)
            != 0;
        for dir in self.dir_paths(&info.handle) {
            let rel = join(&dir, &name);
            if self.spec.ignores(&rel, &name, is_dir) {
                continue;
            }
            let abs = self.abs_path(&rel);
            if mask & libc::FAN_DELETE != 0 {
                // A create and a delete of one name can be merged into one event: what
                // is there now decides.
                let exists = changed && std::fs::symlink_metadata(&abs).is_ok();
                if !exists {
                    if toggles.delete {
                        self.emit(rel, Action::Remove { dir: is_dir });
                    }
                    continue;
                }
            }
            if mask & libc::FAN_CREATE != 0 {
                if is_dir
                    || mask & libc::FAN_CLOSE_WRITE != 0
                    || toggles.create_file
                    || self.recent_creates.needs_sync(&abs, self.root, &rel)
                {
                    self.emit(rel, Action::Sync);
                }
                continue;
            }
            if mask & (libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY | libc::FAN_ATTRIB) != 0 {
                match self.recent_creates.tmpfile_link(&abs, &name) {
                    Tmpfile::No => self.emit(rel, Action::Sync),
                    Tmpfile::LinkedAs(_, path) => self.emit(path, Action::Sync),
                    Tmpfile::Anonymous => {}
                }
            }
        }
    }

    /// One `FAN_RENAME`: both ends at once. An end outside the root (or filtered out) is
    /// a move in or out.
    fn renamed(&mut self, event: &Event, is_dir: bool) {
        let (Some(old), Some(new)) = (
            event.info(record::INFO_OLD_DFID_NAME),
            event.info(record::INFO_NEW_DFID_NAME),
        ) else {
            return;
        };
        let (Some(old_name), Some(new_name)) = (old.name.clone(), new.name.clone()) else {
            return;
        };
        let old_dirs = self.dir_paths(&old.handle);
        let new_dirs = self.dir_paths(&new.handle);
        if is_dir && !(old_dirs.is_empty() && new_dirs.is_empty()) {
            // What is cached below the moved directory is stale now. A directory moved
            // from elsewhere to elsewhere (both ends outside the root or hidden) changes
            // nothing the cache says: it empties only for moves that touch the root, not
            // for every rename on the filesystem.
            self.cache.clear();
        }
        let old_paths: Vec<RelPath> = old_dirs
            .into_iter()
            .map(|dir| join(&dir, &old_name))
            .filter(|rel| !self.spec.ignores(rel, &old_name, is_dir))
            .collect();
        let new_paths: Vec<RelPath> = new_dirs
            .into_iter()
            .map(|dir| join(&dir, &new_name))
            .filter(|rel| !self.spec.ignores(rel, &new_name, is_dir))
            .collect();
        let toggles = self.spec.events;
        let removes_old = toggles.move_from && toggles.delete;
        if is_dir {
            if let (Some(from), Some(to)) = (old_paths.first(), new_paths.first()) {
                // The hint first, then everything in one report, so that one batch can
                // carry the move.
                self.flush();
                (self.report)(WatchEvent::DirRenamed {
                    root: self.root,
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
        if removes_old {
            for rel in old_paths {
                // Something at the old name already: the other half of a
                // RENAME_EXCHANGE, or a new entry. Its contents are what counts.
                match std::fs::symlink_metadata(self.abs_path(&rel)) {
                    Ok(meta) if meta.is_dir() => {
                        self.emit(rel.clone(), Action::Replace);
                        self.walk(&rel);
                    }
                    Ok(_) => self.emit(rel, Action::Sync),
                    Err(_) => self.emit(rel, Action::Remove { dir: is_dir }),
                }
            }
        }
        for rel in new_paths {
            if is_dir {
                self.emit(rel.clone(), Action::Sync);
                self.walk(&rel);
            } else if toggles.move_to {
                self.emit(rel, Action::Sync);
            }
        }
        self.flush();
    }

    /// Reports every entry below the directory `rel` (moved in, or moved within the root:
    /// the remote still needs its contents at the new path).
    fn walk(&mut self, rel: &[u8]) {
        let mut stack = vec![rel.to_vec()];
        while let Some(dir) = stack.pop() {
            self.heartbeat.beat();
            let Ok(entries) = std::fs::read_dir(self.abs_path(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().as_bytes().to_vec();
                let is_dir = if self.spec.always_stat {
                    std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir())
                } else {
                    entry.file_type().is_ok_and(|t| t.is_dir())
                };
                let rel = join(&dir, &name);
                if self.spec.ignores(&rel, &name, is_dir) {
                    continue;
                }
                self.emit(rel.clone(), Action::Sync);
                if is_dir {
                    stack.push(rel);
                }
            }
        }
    }
}

/// Says which filesystems below a root fanotify does not see.
pub fn log_unmarked(marks: &Marks) {
    for (point, err) in &marks.unmarked {
        tracing::error!(
            mount = %point.display(),
            "fanotify cannot mark the filesystem mounted at {} ({err}): changes there are \
             not replicated live, only by full syncs; use the inotify backend to watch it",
            point.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_below_a_root_are_read_from_mountinfo() {
        let info = b"22 1 8:1 / / rw - ext4 /dev/vda rw\n\
            30 22 0:40 / /srv/data/tmp rw - tmpfs tmpfs rw\n\
            31 22 0:41 / /srv/data/with\\040space rw - tmpfs tmpfs rw\n\
            32 22 0:42 / /srv/database rw - tmpfs tmpfs rw\n\
            33 22 0:43 / /srv/data rw - ext4 /dev/vdb rw\n\
            34 22 0:40 / /srv/data/tmp rw - tmpfs tmpfs rw\n";
        // (root, mount points strictly below it): /srv/database is not below /srv/data,
        // the root's own mount is not below it, an escaped space is a space, a mount
        // point stacked twice is listed once.
        let table: [(&str, Vec<&str>); 3] = [
            ("/srv/data", vec!["/srv/data/tmp", "/srv/data/with space"]),
            ("/srv/data/", vec!["/srv/data/tmp", "/srv/data/with space"]),
            ("/srv/data/tmp", vec![]),
        ];
        for (root, expected) in table {
            let expected: Vec<PathBuf> = expected.into_iter().map(PathBuf::from).collect();
            assert_eq!(
                mount_points_below(info, Path::new(root)),
                expected,
                "{root}"
            );
        }
    }

    #[test]
    fn mountinfo_escapes() {
        for (field, expected) in [
            (&b"/a\\040b"[..], &b"/a b"[..]),
            (b"/tab\\011x", b"/tab\tx"),
            (b"/nl\\012", b"/nl\n"),
            (b"/back\\134slash", b"/back\\slash"),
            (b"/not\\09", b"/not\\09"),
            (b"/end\\", b"/end\\"),
            (b"/plain", b"/plain"),
        ] {
            assert_eq!(unescape_mountinfo(field), expected, "{field:?}");
        }
    }
}
