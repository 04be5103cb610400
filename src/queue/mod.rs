//! Coalescing of filesystem changes into rsync batches, per (root, remote) lane.
//!
//! This is the heart of "nothing is lost, nothing is sent twice": every change to a path
//! lands in the pending map of each lane of its root, where it merges with what is already
//! pending for that path (the last meaningful action wins; a removed directory absorbs its
//! pending children). A lane has at most one job in flight, so changes that arrive while a
//! batch is being sent form the next batch: one rsync when idle (low latency), large
//! batches under load (high throughput), and per-path order is preserved per remote.
//!
//! Architecture invariant: this module does no I/O and reads no clock; time is passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::RootId;

pub use crate::relpath::RelPath;

/// A lane: one (watch root, remote) pair. Ids are given by the daemon and never reused,
/// so a job's outcome finds its lane (or learns that a reload removed it) even after the
/// lanes were rebuilt.
pub type LaneId = u64;

/// What must happen to one path on the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Make the remote entry match the local one as it is when the batch runs: send it if
    /// it exists, delete it if it does not (rsync decides by existence, so a path that was
    /// created and deleted again before the batch ran costs nothing).
    Sync,
    /// The path was deleted or moved away; `dir` says whether it was a directory (deleted
    /// recursively on the remote).
    Remove { dir: bool },
    /// A directory was removed and something new now exists at the path: the remote copy
    /// is purged first (so none of the old children survive), then the path is sent.
    Replace,
    /// Anything below this directory may have changed: the remote copy is made equal to
    /// it recursively (with deletions), or deleted if the path is gone. Never reported by
    /// the watcher: a lane above its cap of pending paths folds them into these (see
    /// [`Queue::set_max_pending`]).
    Tree,
    /// Two-way mode: found in a directory that was just created, which may be the peer's:
    /// sent only if the remote lacks it, so that an echo of the peer's own file never
    /// replaces a newer version there (see `crate::sync::two_way`).
    Created,
    /// Two-way mode: the peer's rsync put this here. Nothing to send, and a write pending
    /// for the path is void: the file there now is the peer's (a pending removal stays).
    /// Never pending.
    Arrived,
}

impl Action {
    /// The action that stands for `older` followed by `newer` on the same path.
    pub fn then(older: Action, newer: Action) -> Action {
        use Action::*;
        match (older, newer) {
            (Remove { dir: true }, Sync) | (Replace, Sync) => Replace,
            (Tree, Sync) => Tree,
            (Replace | Tree, Remove { .. }) => Remove { dir: true },
            (Remove { dir: a }, Remove { dir: b }) => Remove { dir: a || b },
            (_, newer) => newer,
        }
    }
}

/// One unit of work for the sync module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Send these paths (sorted, parents before children).
    Batch(Batch),
    /// Push the whole root with deletions (initial sync, rescan after overflow, crontab),
    /// then the changes that were pending when it started (`then`, sorted): a full sync
    /// does not cover what its filters exclude (`<crontabfilter>`), nor a rewrite that
    /// rsync's quick check cannot see (same size, same second).
    FullSync {
        lane: LaneId,
        reason: FullSyncReason,
        then: Vec<(RelPath, Action)>,
    },
}

impl Job {
    pub fn lane(&self) -> LaneId {
        match self {
            Job::Batch(batch) => batch.lane,
            Job::FullSync { lane, .. } => *lane,
        }
    }
}

/// Why a full sync of a root was asked for; kept for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FullSyncReason {
    /// `-r` at start-up.
    Initial,
    /// The kernel dropped events (IN_Q_OVERFLOW) or a subtree could not be watched.
    Rescan,
    /// `<crontab>` or an operator's request.
    Scheduled,
    /// A previous run ended uncleanly; changes may have been lost before they were saved.
    Recovery,
    /// The operator's `full-sync --force`: runs even where the replica guard holds full
    /// syncs back (see [`crate::guard`]).
    Forced,
}

/// When a change was observed: the order of observations (`seq`, which the daemon's
/// checkpoints compare) and the time (for lag). The daemon moves the clock forward with
/// [`Queue::observe`] before it handles each input, so everything recorded while handling
/// one input shares one stamp, and whatever comes later has a greater `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    pub at: Instant,
}

/// The older of two stamps (`None` is "nothing", not "oldest").
pub fn older(a: Option<Seen>, b: Option<Seen>) -> Option<Seen> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

impl FullSyncReason {
    /// Whether the full sync delivers changes that were not seen one by one (before the
    /// watches were in place, lost in an overflow, or in a run that ended uncleanly):
    /// until it has run, the remote may lack something observed. Scheduled and forced
    /// full syncs only confirm.
    pub fn stands_for_unseen_changes(self) -> bool {
        matches!(
            self,
            FullSyncReason::Initial | FullSyncReason::Rescan | FullSyncReason::Recovery
        )
    }
}

/// A batch of paths for one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub lane: LaneId,
    /// Every path with its action, sorted by path.
    pub entries: Vec<(RelPath, Action)>,
    /// Directory renames `(from, to)` whose both ends are in this batch: the remote copy
    /// at `from` may serve as the basis for `to` before `from` is removed.
    pub renames: Vec<(RelPath, RelPath)>,
    /// The lane's large-file run ([`Queue::take_large_job`]): large files a batch handed
    /// over, sent next to the lane's batches instead of holding them back.
    pub large: bool,
}

#[derive(Debug)]
struct Lane {
    id: LaneId,
    root: RootId,
    pending: BTreeMap<RelPath, Action>,
    /// No later than the oldest change in `pending` (a lane that sent only part of its
    /// pending paths keeps the stamp: older than the truth is safe, younger is not).
    pending_since: Option<Seen>,
    full_sync: Option<FullSyncReason>,
    /// When the full sync owed was asked for, if it stands for changes that were not
    /// seen one by one (start-up, a rescan, recovery); scheduled and forced full syncs
    /// deliver nothing that was observed.
    full_sync_since: Option<Seen>,
    busy: bool,
    /// The oldest change the job in flight delivers.
    in_flight_since: Option<Seen>,
    not_before: Option<Instant>,
    paused: bool,
    /// Paths that failed on their own (rsync exit 23) and are retried later without
    /// holding back the rest of the lane.
    deferred: Vec<Deferred>,
    /// Directory renames seen since the last batch (hints; bounded).
    renames: Vec<(RelPath, RelPath)>,
    /// The paths sent within the last [`HOT_INTERVAL`]: a file that keeps changing is sent
    /// again only once its interval is over (see [`Queue::take_job`]).
    recently_sent: RecentlySent,
    /// Whether the job in flight is a full sync (which sends large files itself).
    full_sync_in_flight: bool,
    /// Large files handed over by batches, and the run that sends them.
    large: Large,
}

/// Large files of a lane ([`Queue::hand_large`]): they go out in a run of their own, at
/// most one at a time, next to the lane's batches, so that a multi-gigabyte upload does
/// not hold back the small files written after it.
///
/// A path is never in two runs at once: while a large file waits or is in flight, the
/// lane's batches leave pending every change that touches it (the path itself, anything
/// below it, and a removal, replacement or dirty directory above it), and a full sync
/// waits for the large run.
#[derive(Debug, Default)]
struct Large {
    /// The paths of the large run in flight, sorted (empty when none runs).
    in_flight: Vec<RelPath>,
    busy: bool,
    /// The oldest change the large run in flight delivers.
    in_flight_since: Option<Seen>,
    /// Handed over, waiting for the next large run.
    waiting: BTreeMap<RelPath, Action>,
    waiting_since: Option<Seen>,
    /// A failed large run backs off until then (the lane's batches do not).
    not_before: Option<Instant>,
}

impl Large {
    fn is_idle_and_empty(&self) -> bool {
        !self.busy && self.waiting.is_empty()
    }

    /// Whether a change of `path` (`action`) would touch a large file waiting or in
    /// flight, and so must not go out in a batch now.
    fn touches(&self, path: &[u8], action: Action) -> bool {
        if self.is_idle_and_empty() {
            return false;
        }
        let held = |p: &[u8]| {
            self.waiting.contains_key(p)
                || self
                    .in_flight
                    .binary_search_by(|f| f.as_slice().cmp(p))
                    .is_ok()
        };
        // The path itself or something above it is a large file (a file that became a
        // directory since: its new children wait too).
        if held(path) || crate::relpath::ancestors(path).any(held) {
            return true;
        }
        // A removal, replacement or dirty directory above a large file.
        if matches!(
            action,
            Action::Remove { .. } | Action::Replace | Action::Tree
        ) {
            if path.is_empty() {
                return true;
            }
            let range = crate::relpath::below_range(path);
            let in_flight_below = {
                let from = self
                    .in_flight
                    .partition_point(|f| f.as_slice() < range.start.as_slice());
                self.in_flight
                    .get(from)
                    .is_some_and(|f| f.as_slice() < range.end.as_slice())
            };
            return in_flight_below || self.waiting.range(range).next().is_some();
        }
        false
    }
}

/// Paths that failed on their own, retried at `due`.
#[derive(Debug)]
struct Deferred {
    due: Instant,
    entries: Vec<(RelPath, Action)>,
    since: Option<Seen>,
}

/// A path sent this recently is not sent again for a change of its contents before the
/// interval is over: a file rewritten a hundred times a second costs a run every half
/// second, not a run per change, and still goes out in its last state. The first change
/// of a quiet path goes out at once.
pub const HOT_INTERVAL: Duration = Duration::from_millis(500);

/// The longest hold: a path sent again as soon as its hold ended (it kept changing through
/// it) is held twice as long the next time, up to this. A file rewritten for minutes costs
/// a run a second; its replica lags it by a second at most, and gets its last state.
pub const HOT_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Paths by the time they were last sent, each held for its interval ([`HOT_INTERVAL`],
/// growing to [`HOT_INTERVAL_MAX`] while the path keeps changing).
#[derive(Debug, Default)]
struct RecentlySent {
    /// When each held path cools down (a path sent twice is here twice; the later entry
    /// counts).
    order: std::collections::BTreeSet<(Instant, RelPath)>,
    /// Held paths: when each cools down, and for how long it was held.
    last: HashMap<RelPath, (Instant, Duration)>,
    /// Paths that cooled down lately: when, and the hold they had. One sent again within
    /// that hold after cooling kept changing all along.
    cooled: HashMap<RelPath, (Instant, Duration)>,
    /// The same, in the order they cooled (to forget them in time).
    cooled_order: VecDeque<(Instant, RelPath)>,
    /// Nothing pending can go out before this (every pending change is to a hot file),
    /// unless a change to another path comes in.
    nothing_before: Option<Instant>,
}

impl RecentlySent {
    fn forget_before(&mut self, now: Instant) {
        while let Some((until, _)) = self.order.first() {
            if *until > now {
                break;
            }
            let Some((until, path)) = self.order.pop_first() else {
                break;
            };
            if let Some(&(cools, hold)) = self.last.get(&path) {
                if cools == until {
                    self.last.remove(&path);
                    self.cooled.insert(path.clone(), (until, hold));
                    self.cooled_order.push_back((until, path));
                }
            }
        }
        while let Some((at, _)) = self.cooled_order.front() {
            if now.saturating_duration_since(*at) <= HOT_INTERVAL_MAX {
                break;
            }
            let Some((at, path)) = self.cooled_order.pop_front() else {
                break;
            };
            if self
                .cooled
                .get(&path)
                .is_some_and(|(cooled, _)| *cooled == at)
            {
                self.cooled.remove(&path);
            }
        }
    }

    fn note(&mut self, path: &[u8], now: Instant) {
        // Sent again right after its hold ended: still changing, held longer.
        let kept_changing = self
            .cooled
            .remove(path)
            .filter(|(cooled, hold)| now.saturating_duration_since(*cooled) <= *hold)
            .map(|(_, hold)| hold);
        let hold = kept_changing.map_or(HOT_INTERVAL, |hold| (hold * 2).min(HOT_INTERVAL_MAX));
        let until = now + hold;
        self.order.insert((until, path.to_vec()));
        self.last.insert(path.to_vec(), (until, hold));
    }

    fn is_hot(&self, path: &[u8]) -> bool {
        self.last.contains_key(path)
    }

    /// When the earliest hot path cools down.
    fn next_cool(&self) -> Option<Instant> {
        self.order.first().map(|(until, _)| *until)
    }
}

/// All lanes' pending work.
#[derive(Debug)]
pub struct Queue {
    /// Sorted by id.
    lanes: Vec<Lane>,
    max_batch: usize,
    /// Above this many pending paths a lane folds them into dirty directories.
    max_pending: usize,
    /// Folds since the last [`Queue::take_folds`], for the daemon to log.
    folds: Vec<Fold>,
    paused: bool,
    /// The stamp of what is recorded now ([`Queue::observe`]).
    clock: Seen,
}

/// A lane folded its pending paths into dirty directories ([`Queue::set_max_pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fold {
    pub lane: LaneId,
    /// Pending paths before and after.
    pub before: usize,
    pub after: usize,
}

const MAX_RENAME_HINTS: usize = 64;

/// The default upper bound of paths in one batch (one rsync run).
pub const DEFAULT_MAX_BATCH: usize = 20_000;

pub use crate::config::DEFAULT_MAX_PENDING;

impl Queue {
    /// Lanes `(id, root)`.
    pub fn new(lanes: &[(LaneId, RootId)], max_batch: usize, now: Instant) -> Queue {
        let mut queue = Queue {
            lanes: Vec::new(),
            max_batch: max_batch.max(1),
            max_pending: DEFAULT_MAX_PENDING,
            folds: Vec::new(),
            paused: false,
            clock: Seen { seq: 0, at: now },
        };
        queue.reconfigure(lanes);
        queue
    }

    /// Makes the lanes `(id, root)`: a lane whose id is kept keeps everything it holds
    /// (pending paths, a requested full sync, deferred retries, backoff, a job in flight)
    /// and takes its new root index; new ids start empty; other lanes are dropped, with
    /// their pending work. Returns the ids dropped.
    pub fn reconfigure(&mut self, lanes: &[(LaneId, RootId)]) -> Vec<LaneId> {
        let mut old = std::mem::take(&mut self.lanes);
        for &(id, root) in lanes {
            let lane = match old.iter().position(|lane| lane.id == id) {
                Some(at) => {
                    let mut lane = old.swap_remove(at);
                    lane.root = root;
                    lane
                }
                None => Lane {
                    id,
                    root,
                    pending: BTreeMap::new(),
                    pending_since: None,
                    full_sync: None,
                    full_sync_since: None,
                    busy: false,
                    in_flight_since: None,
                    not_before: None,
                    paused: self.paused,
                    deferred: Vec::new(),
                    renames: Vec::new(),
                    recently_sent: RecentlySent::default(),
                    full_sync_in_flight: false,
                    large: Large::default(),
                },
            };
            self.lanes.push(lane);
        }
        self.lanes.sort_by_key(|lane| lane.id);
        self.lanes.dedup_by_key(|lane| lane.id);
        old.into_iter().map(|lane| lane.id).collect()
    }

    fn lane(&self, id: LaneId) -> Option<&Lane> {
        self.lanes
            .binary_search_by_key(&id, |lane| lane.id)
            .ok()
            .map(|at| &self.lanes[at])
    }

    fn lane_mut(&mut self, id: LaneId) -> Option<&mut Lane> {
        self.lanes
            .binary_search_by_key(&id, |lane| lane.id)
            .ok()
            .map(|at| &mut self.lanes[at])
    }

    /// Moves the observation clock to `now`: what is recorded from here on was seen
    /// after everything recorded before.
    pub fn observe(&mut self, now: Instant) -> Seen {
        self.clock = Seen {
            seq: self.clock.seq + 1,
            at: now.max(self.clock.at),
        };
        self.clock
    }

    /// The stamp of what is recorded now.
    pub fn clock(&self) -> Seen {
        self.clock
    }

    /// The oldest change `lane` has not delivered: pending, in flight, deferred, or a full
    /// sync that stands for unseen changes. `None`: the remote has everything observed
    /// (as far as this queue knows; the daemon adds full syncs it holds back itself).
    pub fn lane_oldest(&self, lane: LaneId) -> Option<Seen> {
        let lane = self.lane(lane)?;
        let large = older(lane.large.in_flight_since, lane.large.waiting_since);
        lane.deferred.iter().map(|d| d.since).fold(
            older(
                older(older(lane.pending_since, lane.full_sync_since), large),
                lane.in_flight_since,
            ),
            older,
        )
    }

    /// Caps the pending paths of each lane (at least 2). While a remote is down for hours
    /// its lane would otherwise grow with every change; above the cap, the lane's pending
    /// paths are folded into their ancestor directories at the deepest level that leaves
    /// at most half the cap, each marked [`Action::Tree`] (synced recursively with
    /// deletions), and changes below such a directory are absorbed by it. Recovery then
    /// sends only the dirty subtrees. Folded into the root itself, that is a full sync.
    pub fn set_max_pending(&mut self, max_pending: usize) {
        self.max_pending = max_pending.max(2);
        let cap = self.max_pending;
        for lane in &mut self.lanes {
            self.folds.extend(lane.bound(cap));
        }
    }

    /// The dirty directories pending on `lane` (see [`Queue::set_max_pending`]).
    pub fn lane_trees(&self, lane: LaneId) -> Vec<RelPath> {
        self.lane(lane).map_or_else(Vec::new, |lane| {
            lane.pending
                .iter()
                .filter(|(_, action)| **action == Action::Tree)
                .map(|(path, _)| path.clone())
                .collect()
        })
    }

    /// The folds since the last call.
    pub fn take_folds(&mut self) -> Vec<Fold> {
        std::mem::take(&mut self.folds)
    }

    /// Records a change of `path` under `root` in every lane of that root.
    pub fn push(&mut self, root: RootId, path: &[u8], action: Action) {
        let cap = self.max_pending;
        let seen = self.clock;
        for lane in self.lanes.iter_mut().filter(|lane| lane.root == root) {
            lane.merge(path, action, seen);
            self.folds.extend(lane.bound(cap));
        }
    }

    /// Records a change in one lane only (restored from the state directory, or a failure
    /// replayed from the journal).
    pub fn push_lane(&mut self, lane_id: LaneId, path: &[u8], action: Action) {
        let cap = self.max_pending;
        let Ok(at) = self.lanes.binary_search_by_key(&lane_id, |lane| lane.id) else {
            return;
        };
        let lane = &mut self.lanes[at];
        lane.merge(path, action, self.clock);
        self.folds.extend(lane.bound(cap));
    }

    /// Remembers that directory `from` was renamed to `to` under `root` (see
    /// [`Batch::renames`]).
    pub fn note_rename(&mut self, root: RootId, from: &[u8], to: &[u8]) {
        for lane in self.lanes.iter_mut().filter(|lane| lane.root == root) {
            if lane.renames.len() >= MAX_RENAME_HINTS {
                lane.renames.remove(0);
            }
            lane.renames.push((from.to_vec(), to.to_vec()));
        }
    }

    /// Asks for a full sync of every lane of `root`. The paths pending when it starts
    /// ride along and are sent right after it (see [`Job::FullSync`]).
    pub fn request_full_sync(&mut self, root: RootId, reason: FullSyncReason) {
        self.request_full_sync_since(root, reason, None);
    }

    /// [`Queue::request_full_sync`] for changes missed since `since` (an overflow seen
    /// before the rescan could be asked for). `None`: since now.
    pub fn request_full_sync_since(
        &mut self,
        root: RootId,
        reason: FullSyncReason,
        since: Option<Seen>,
    ) {
        let since = since.or(Some(self.clock));
        for lane in self.lanes.iter_mut().filter(|lane| lane.root == root) {
            lane.request_full_sync(reason, since);
        }
    }

    /// Asks for a full sync of one lane (a new remote, or one owed from the last run).
    pub fn request_full_sync_lane(&mut self, lane: LaneId, reason: FullSyncReason) {
        self.request_full_sync_lane_since(lane, reason, None);
    }

    /// [`Queue::request_full_sync_lane`] for a full sync owed since `since` (one the
    /// replica guard held back, asked for again). `None`: since now.
    pub fn request_full_sync_lane_since(
        &mut self,
        lane: LaneId,
        reason: FullSyncReason,
        since: Option<Seen>,
    ) {
        let since = since.or(Some(self.clock));
        if let Some(lane) = self.lane_mut(lane) {
            lane.request_full_sync(reason, since);
        }
    }

    /// The full sync `lane` owes stands also for unseen changes since `since`: one the
    /// replica guard held back outside the queue, which an operator's forced full sync
    /// replaces (a forced one alone stands for nothing unseen).
    pub fn owe_unseen_since(&mut self, lane: LaneId, since: Seen) {
        if let Some(lane) = self.lane_mut(lane) {
            if lane.full_sync.is_some() {
                lane.full_sync_since = older(lane.full_sync_since, Some(since));
            }
        }
    }

    /// The full sync a lane still owes (requested, or failed and waiting for its retry).
    pub fn full_sync_owed(&self, lane: LaneId) -> Option<FullSyncReason> {
        self.lane(lane).and_then(|lane| lane.full_sync)
    }

    /// Holds back (or releases) new jobs for every lane; changes keep coalescing.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        for lane in &mut self.lanes {
            lane.paused = paused;
        }
    }

    /// The next job of `lane`, if it is idle, not paused, not backing off and has work.
    /// The lane is busy until [`Queue::finish`] is called for it.
    pub fn take_job(&mut self, lane_id: LaneId, now: Instant) -> Option<Job> {
        let max_batch = self.max_batch;
        let lane = self.lane_mut(lane_id)?;
        if lane.busy || lane.paused || lane.not_before.is_some_and(|at| now < at) {
            return None;
        }
        // A full sync sends large files too: it waits for the large run in flight, and
        // takes along those waiting for the next one.
        if let Some(reason) = lane.full_sync.take_if(|_| !lane.large.busy) {
            let waiting = std::mem::take(&mut lane.large.waiting);
            let waiting_since = lane.large.waiting_since.take();
            for (path, action) in waiting {
                lane.requeue(path, action, waiting_since);
            }
            lane.large.not_before = None;
            lane.busy = true;
            lane.full_sync_in_flight = true;
            lane.in_flight_since = older(lane.full_sync_since.take(), lane.pending_since.take());
            lane.renames.clear();
            return Some(Job::FullSync {
                lane: lane_id,
                reason,
                then: std::mem::take(&mut lane.pending).into_iter().collect(),
            });
        }
        // A retry that is due runs as a batch of its own: merged into the pending paths,
        // a path that keeps failing would take every change batched with it down too.
        if let Some(Deferred { entries, since, .. }) = lane.take_due_retry(now) {
            lane.busy = true;
            lane.in_flight_since = since;
            return Some(Job::Batch(Batch {
                lane: lane_id,
                entries,
                renames: Vec::new(),
                large: false,
            }));
        }
        if lane.pending.is_empty() || lane.recently_sent.nothing_before.is_some_and(|at| now < at) {
            return None;
        }
        lane.recently_sent.forget_before(now);
        lane.recently_sent.nothing_before = None;
        // New contents of files sent within the interval wait for its end, unless a run
        // goes anyway (for another path, a removal, a replacement, a dirty directory):
        // then they ride along, at no extra run.
        let recently_sent = &lane.recently_sent;
        if !recently_sent.last.is_empty()
            && lane
                .pending
                .iter()
                .all(|(path, action)| *action == Action::Sync && recently_sent.is_hot(path))
        {
            lane.recently_sent.nothing_before = lane.recently_sent.next_cool();
            return None;
        }
        let entries: Vec<(RelPath, Action)> = if !lane.large.is_idle_and_empty() {
            // Changes that touch a large file waiting or in flight stay pending (with the
            // lane's stamp: older than the truth is safe).
            let large = &lane.large;
            let mut taken = Vec::new();
            for (path, action) in &lane.pending {
                if taken.len() == max_batch {
                    break;
                }
                if !large.touches(path, *action) {
                    taken.push((path.clone(), *action));
                }
            }
            if taken.is_empty() {
                return None;
            }
            for (path, _) in &taken {
                lane.pending.remove(path);
            }
            lane.in_flight_since = lane.pending_since;
            if lane.pending.is_empty() {
                lane.pending_since = None;
            }
            taken
        } else if lane.pending.len() <= max_batch {
            lane.in_flight_since = lane.pending_since;
            lane.pending_since = None;
            std::mem::take(&mut lane.pending).into_iter().collect()
        } else {
            lane.in_flight_since = lane.pending_since;
            let mut taken = Vec::with_capacity(max_batch);
            while taken.len() < max_batch {
                match lane.pending.pop_first() {
                    Some(entry) => taken.push(entry),
                    None => break,
                }
            }
            taken
        };
        for (path, action) in &entries {
            if *action == Action::Sync {
                lane.recently_sent.note(path, now);
            }
        }
        lane.busy = true;
        let hints = std::mem::take(&mut lane.renames);
        let renames = hints
            .into_iter()
            .filter(|(from, to)| {
                let action_of = |path: &RelPath| {
                    entries
                        .binary_search_by(|(p, _)| p.cmp(path))
                        .ok()
                        .map(|i| entries[i].1)
                };
                action_of(from) == Some(Action::Remove { dir: true })
                    && matches!(action_of(to), Some(Action::Sync))
            })
            .collect();
        Some(Job::Batch(Batch {
            lane: lane_id,
            entries,
            renames,
            large: false,
        }))
    }

    /// Hands large files of a batch of `lane` over to its large-file run (the batch did
    /// not send them): they wait for the next one, and until it has sent them no batch
    /// touches them. `since`: the stamp [`Queue::finish`] returned for their batch.
    pub fn hand_large(
        &mut self,
        lane: LaneId,
        entries: Vec<(RelPath, Action)>,
        since: Option<Seen>,
    ) {
        let Some(lane) = self.lane_mut(lane) else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        lane.large.waiting_since = older(lane.large.waiting_since, since);
        for (path, action) in entries {
            match lane.large.waiting.get_mut(&path) {
                Some(earlier) => *earlier = Action::then(*earlier, action),
                None => {
                    lane.large.waiting.insert(path, action);
                }
            }
        }
    }

    /// The large-file run of `lane`, if none is in flight, large files wait, the lane is
    /// not paused, runs and owes no full sync, and the large run is not backing off. Runs next to
    /// the lane's batches; [`Queue::finish_large`] ends it.
    pub fn take_large_job(&mut self, lane_id: LaneId, now: Instant) -> Option<Job> {
        let lane = self.lane_mut(lane_id)?;
        let large = &mut lane.large;
        if large.busy
            || large.waiting.is_empty()
            || lane.paused
            || lane.full_sync_in_flight
            // An owed full sync goes first: it waits for the large run in flight, and
            // large runs that kept coming would starve it.
            || lane.full_sync.is_some()
            || large.not_before.is_some_and(|at| now < at)
        {
            return None;
        }
        let entries: Vec<(RelPath, Action)> =
            std::mem::take(&mut large.waiting).into_iter().collect();
        large.in_flight = entries.iter().map(|(path, _)| path.clone()).collect();
        large.in_flight_since = large.waiting_since.take();
        large.busy = true;
        Some(Job::Batch(Batch {
            lane: lane_id,
            entries,
            renames: Vec::new(),
            large: true,
        }))
    }

    /// Ends the large-file run of `lane` ([`Queue::finish`] for it): what must be tried
    /// again waits for the next large run, which backs off until `at` (the lane's batches
    /// go on). Returns the stamp of the oldest change it carried.
    pub fn finish_large(
        &mut self,
        lane_id: LaneId,
        retry: Option<(Retry, Instant)>,
    ) -> Option<Seen> {
        let lane = self.lane_mut(lane_id)?;
        lane.large.busy = false;
        lane.large.in_flight.clear();
        let since = lane.large.in_flight_since.take();
        match retry {
            None => lane.large.not_before = None,
            Some((retry, at)) => {
                lane.large.not_before = Some(at);
                let entries = match retry {
                    Retry::Paths(entries) => entries,
                    // Not asked of a batch; should it be, the full sync covers them.
                    Retry::FullSync { reason, then } => {
                        lane.want_full_sync(reason, since);
                        then
                    }
                };
                lane.large.waiting_since = older(lane.large.waiting_since, since);
                // Older than anything handed over since.
                for (path, older_action) in entries {
                    match lane.large.waiting.get_mut(&path) {
                        Some(newer) => *newer = Action::then(older_action, *newer),
                        None => {
                            lane.large.waiting.insert(path, older_action);
                        }
                    }
                }
            }
        }
        since
    }

    /// Whether `lane`'s large-file run is in flight.
    pub fn lane_large_busy(&self, lane: LaneId) -> bool {
        self.lane(lane).is_some_and(|lane| lane.large.busy)
    }

    /// When `lane`'s waiting large files may go out, if they wait for a backoff.
    pub fn lane_large_not_before(&self, lane: LaneId) -> Option<Instant> {
        self.lane(lane).and_then(|lane| {
            (!lane.large.waiting.is_empty() && !lane.large.busy)
                .then_some(lane.large.not_before)
                .flatten()
        })
    }

    /// Ends the job in flight on `lane`. `retry` is what must be tried again (the whole
    /// job, or for a partial transfer only the paths that failed) and when.
    /// A lane removed by a reload meanwhile is not there any more: nothing happens.
    /// Returns the stamp of the oldest change the job carried (for [`Queue::defer`], and
    /// for how long a delivered change waited).
    pub fn finish(&mut self, lane_id: LaneId, retry: Option<(Retry, Instant)>) -> Option<Seen> {
        let cap = self.max_pending;
        let Ok(at) = self.lanes.binary_search_by_key(&lane_id, |lane| lane.id) else {
            return None;
        };
        let lane = &mut self.lanes[at];
        lane.busy = false;
        lane.full_sync_in_flight = false;
        let since = lane.in_flight_since.take();
        match retry {
            None => lane.not_before = None,
            Some((retry, at)) => {
                lane.not_before = Some(at);
                match retry {
                    Retry::FullSync { reason, then } => {
                        lane.want_full_sync(reason, since);
                        // A full sync not owed for unseen changes still carries `then`.
                        lane.full_sync_since = older(lane.full_sync_since, since);
                        for (path, older) in then {
                            lane.requeue(path, older, since);
                        }
                    }
                    Retry::Paths(entries) => {
                        for (path, older) in entries {
                            lane.requeue(path, older, since);
                        }
                    }
                }
                self.folds.extend(lane.bound(cap));
            }
        }
        since
    }

    /// Retries `entries` of `lane` at `at`, without making the lane back off: used when a
    /// batch succeeded except for some paths (rsync exit 23). `since` is the stamp
    /// [`Queue::finish`] returned for their job.
    pub fn defer(
        &mut self,
        lane: LaneId,
        entries: Vec<(RelPath, Action)>,
        at: Instant,
        since: Option<Seen>,
    ) {
        if let Some(lane) = self.lane_mut(lane) {
            if !entries.is_empty() {
                lane.deferred.push(Deferred {
                    due: at,
                    entries,
                    since,
                });
            }
        }
    }

    /// The earliest time a deferred retry of `lane` is due.
    pub fn lane_next_deferred(&self, lane: LaneId) -> Option<Instant> {
        self.lane(lane)
            .and_then(|lane| lane.deferred.iter().map(|d| d.due).min())
    }

    /// Number of paths waiting in deferred retries over all lanes.
    pub fn deferred_count(&self) -> usize {
        self.lanes
            .iter()
            .flat_map(|lane| lane.deferred.iter())
            .map(|d| d.entries.len())
            .sum()
    }

    /// Makes every deferred retry and every backing-off lane due now (operator's
    /// "retry failed"); returns how many paths that concerns.
    pub fn expedite(&mut self) -> usize {
        let mut count = 0;
        for lane in &mut self.lanes {
            if lane.not_before.take().is_some() {
                count += lane.pending.len();
            }
            if lane.large.not_before.take().is_some() {
                count += lane.large.waiting.len();
            }
            let deferred = std::mem::take(&mut lane.deferred);
            // Newest first: each is put back as older than what is pending already.
            for d in deferred.into_iter().rev() {
                count += d.entries.len();
                for (path, action) in d.entries {
                    lane.requeue(path, action, d.since);
                }
            }
        }
        count
    }

    /// Pending paths of one lane (for status).
    pub fn lane_depth(&self, lane: LaneId) -> usize {
        self.lane(lane)
            .map_or(0, |lane| lane.pending.len() + lane.large.waiting.len())
    }

    /// Whether the lane has a job in flight.
    pub fn lane_busy(&self, lane: LaneId) -> bool {
        self.lane(lane).is_some_and(|lane| lane.busy)
    }

    /// When a backing-off lane may run again.
    pub fn lane_not_before(&self, lane: LaneId) -> Option<Instant> {
        self.lane(lane).and_then(|lane| lane.not_before)
    }

    /// When the changes of a lane that all wait for hot files to cool may go out.
    pub fn lane_cools_at(&self, lane: LaneId) -> Option<Instant> {
        self.lane(lane)
            .and_then(|lane| lane.recently_sent.nothing_before)
    }

    /// Whether a lane has anything to do (pending paths or a full sync).
    pub fn lane_has_work(&self, lane: LaneId) -> bool {
        self.lane(lane).is_some_and(|lane| {
            lane.full_sync.is_some()
                || !lane.pending.is_empty()
                || !lane.deferred.is_empty()
                || !lane.large.waiting.is_empty()
        })
    }

    /// Total pending paths over all lanes.
    pub fn depth(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.pending.len() + lane.large.waiting.len())
            .sum()
    }

    /// Everything a lane has not delivered yet, in path order: pending paths and the
    /// deferred retries merged in (for persistence at shutdown).
    pub fn undelivered(&self, lane: LaneId) -> Vec<(RelPath, Action)> {
        let Some(lane) = self.lane(lane) else {
            return Vec::new();
        };
        let mut merged = Lane {
            id: lane.id,
            root: lane.root,
            pending: lane.pending.clone(),
            pending_since: None,
            full_sync: None,
            full_sync_since: None,
            busy: false,
            in_flight_since: None,
            not_before: None,
            paused: false,
            deferred: Vec::new(),
            renames: Vec::new(),
            recently_sent: RecentlySent::default(),
            full_sync_in_flight: false,
            large: Large::default(),
        };
        // Newest first: each is put back as older than what is there already. Large files
        // were handed over before anything now pending.
        for (path, action) in &lane.large.waiting {
            merged.requeue(path.clone(), *action, None);
        }
        for d in lane.deferred.iter().rev() {
            for (path, action) in &d.entries {
                merged.requeue(path.clone(), *action, None);
            }
        }
        merged.pending.into_iter().collect()
    }
}

/// What a failed job leaves to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// The full sync again, and the changes that rode along with it.
    FullSync {
        reason: FullSyncReason,
        then: Vec<(RelPath, Action)>,
    },
    Paths(Vec<(RelPath, Action)>),
}

impl Lane {
    /// Owes a full sync for `reason`. An operator's forced one replaces any other (and
    /// does not wait for the retry of one the guard held back).
    /// An outside request: [`Lane::want_full_sync`], and an operator's forced one does not
    /// wait for the lane's backoff.
    fn request_full_sync(&mut self, reason: FullSyncReason, since: Option<Seen>) {
        self.want_full_sync(reason, since);
        if reason == FullSyncReason::Forced {
            self.not_before = None;
        }
    }

    /// `since`: when it was asked for, which counts only for reasons that stand for
    /// changes not seen one by one.
    fn want_full_sync(&mut self, reason: FullSyncReason, since: Option<Seen>) {
        if reason == FullSyncReason::Forced {
            self.full_sync = Some(reason);
        } else {
            self.full_sync.get_or_insert(reason);
        }
        if reason.stands_for_unseen_changes() {
            self.full_sync_since = older(self.full_sync_since, since);
        }
    }

    fn merge(&mut self, path: &[u8], action: Action, seen: Seen) {
        if self.below_a_tree(path) {
            return;
        }
        if action == Action::Arrived {
            // The peer's file replaces what this host wrote there: that write is void. A
            // pending removal is not: what it deleted may still be on the peer (a
            // directory replaced here, its old files there), and a deletion run spares
            // the peer's new versions anyway.
            if matches!(self.pending.get(path), Some(Action::Sync | Action::Created)) {
                self.pending.remove(path);
            }
            return;
        }
        self.pending_since = older(self.pending_since, Some(seen));
        if action != Action::Sync || !self.recently_sent.is_hot(path) {
            // Something that need not wait: the lane may have a job again.
            self.recently_sent.nothing_before = None;
        }
        if let Action::Remove { dir: true } = action {
            // Deleting the directory on the remote covers whatever was pending below it.
            let below: Vec<RelPath> = self
                .pending
                .range(crate::relpath::below_range(path))
                .map(|(child, _)| child.clone())
                .collect();
            for child in below {
                self.pending.remove(&child);
            }
        }
        match self.pending.get_mut(path) {
            Some(existing) => *existing = Action::then(*existing, action),
            None => {
                self.pending.insert(path.to_vec(), action);
            }
        }
    }

    /// The earliest deferred retry that is due, as a batch: a newer pending action for one
    /// of its paths travels with it (after the older one), so each path still goes out in
    /// the order its changes happened.
    fn take_due_retry(&mut self, now: Instant) -> Option<Deferred> {
        let (at, _) = self
            .deferred
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.due <= now
                    && !d
                        .entries
                        .iter()
                        .any(|(path, action)| self.large.touches(path, *action))
            })
            .min_by_key(|(_, d)| d.due)?;
        let group = self.deferred.remove(at);
        let mut since = group.since;
        let mut entries: BTreeMap<RelPath, Action> = BTreeMap::new();
        for (path, older) in group.entries {
            let action = match entries.remove(&path) {
                Some(earlier) => Action::then(earlier, older),
                None => older,
            };
            entries.insert(path, action);
        }
        for (path, action) in &mut entries {
            if let Some(newer) = self.pending.remove(path) {
                *action = Action::then(*action, newer);
                since = older(since, self.pending_since);
            }
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        Some(Deferred {
            due: group.due,
            entries: entries.into_iter().collect(),
            since,
        })
    }

    /// Whether an ancestor of `path` is pending as [`Action::Tree`], which covers it.
    fn below_a_tree(&self, path: &[u8]) -> bool {
        if self.pending.get(&b""[..]) == Some(&Action::Tree) && !path.is_empty() {
            return true;
        }
        crate::relpath::ancestors(path)
            .any(|ancestor| self.pending.get(ancestor) == Some(&Action::Tree))
    }

    /// Folds the pending paths into dirty directories when there are more than `cap`.
    fn bound(&mut self, cap: usize) -> Option<Fold> {
        if self.pending.len() <= cap {
            return None;
        }
        let before = self.pending.len();
        fold_into_trees(&mut self.pending, cap / 2);
        Some(Fold {
            lane: self.id,
            before,
            after: self.pending.len(),
        })
    }

    /// Puts back an action from a failed batch: it happened before anything now pending.
    /// The path did not get through, so it is not held back as just sent.
    fn requeue(&mut self, path: RelPath, older_action: Action, since: Option<Seen>) {
        self.pending_since = older(self.pending_since, since);
        if self.recently_sent.last.remove(&path).is_some() {
            self.recently_sent.nothing_before = None;
        }
        match self.pending.get_mut(&path) {
            Some(newer) => *newer = Action::then(older_action, *newer),
            None => {
                self.pending.insert(path, older_action);
            }
        }
    }
}

/// How deep `path` is: the root 0, `a` 1, `a/b` 2.
fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|&&b| b == b'/').count()
    }
}

/// `path` cut to its first `level` components (itself if it is not deeper).
fn cut(path: &[u8], level: usize) -> &[u8] {
    if level == 0 {
        return &path[..0];
    }
    let mut seen = 0;
    for (at, &b) in path.iter().enumerate() {
        if b == b'/' {
            seen += 1;
            if seen == level {
                return &path[..at];
            }
        }
    }
    path
}

/// Replaces every pending path deeper than some level by its ancestor at that level,
/// marked [`Action::Tree`]; the level is the deepest that leaves at most `target` entries
/// (the root itself, as one `Tree`, when no level does).
fn fold_into_trees(pending: &mut BTreeMap<RelPath, Action>, target: usize) {
    let deepest = pending.keys().map(|p| depth(p)).max().unwrap_or(0);
    let mut level = deepest.saturating_sub(1);
    while level > 0 {
        let kept: std::collections::HashSet<&[u8]> =
            pending.keys().map(|p| cut(p, level)).collect();
        if kept.len() <= target {
            break;
        }
        level -= 1;
    }
    let old = std::mem::take(pending);
    for (path, action) in old {
        if depth(&path) > level {
            pending.insert(cut(&path, level).to_vec(), Action::Tree);
        } else {
            match pending.get_mut(&path) {
                Some(folded) => *folded = Action::then(action, *folded),
                None => {
                    pending.insert(path, action);
                }
            }
        }
    }
}

/// One-letter action codes for table tests (here and in `sync::plan`): `S` sync, `F`
/// remove a file, `D` remove a directory, `R` replace, `T` dirty directory, `C` created
/// (two-way), `A` arrived from the peer (two-way).
#[cfg(test)]
pub(crate) mod codes {
    use super::Action;

    pub(crate) fn action_of(code: &str) -> Action {
        match code {
            "S" => Action::Sync,
            "F" => Action::Remove { dir: false },
            "D" => Action::Remove { dir: true },
            "R" => Action::Replace,
            "T" => Action::Tree,
            "C" => Action::Created,
            "A" => Action::Arrived,
            other => panic!("bad action code {other}"),
        }
    }

    pub(crate) fn code_of(action: Action) -> &'static str {
        match action {
            Action::Sync => "S",
            Action::Remove { dir: false } => "F",
            Action::Remove { dir: true } => "D",
            Action::Replace => "R",
            Action::Tree => "T",
            Action::Created => "C",
            Action::Arrived => "A",
        }
    }
}

#[cfg(test)]
mod tests;
