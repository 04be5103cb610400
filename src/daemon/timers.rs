//! Every deadline of the daemon in one place, with the clock passed in.
//!
//! [`Timers`] owns what is due later: the `<crontab>` full sync, the failure journal's
//! replay, the pruning of the remotes' soft-delete directories, the periodic full sync of
//! roots the watch limit left partly unwatched, the spaced-out rescans after inotify
//! overflows, and the full syncs the replica guard held back. [`Timers::due`] says what is
//! due at a given instant and re-arms it; [`Timers::next`] says when the loop must wake up.
//! No I/O and no clock of its own: `timers::tests` drive it by tables of instants.

use std::time::{Duration, Instant};

use crate::config::RootId;
use crate::queue::{FullSyncReason, LaneId, Seen};

/// How often roots with unwatched directories (watch limit) get a full sync.
pub(super) const DEGRADED_RESYNC: Duration = Duration::from_secs(600);
/// Rescans after inotify overflows: the first at once, repeated ones spaced out from 10 s
/// doubling to 5 min, so an overflow storm cannot turn into back-to-back full syncs.
const OVERFLOW_BACKOFF_START: Duration = Duration::from_secs(10);
const OVERFLOW_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often the remotes' expired soft-delete directories are pruned (and once at start).
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// The configured periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Schedule {
    /// `<crontab>`, unless disabled or left to the systemd timer.
    pub crontab: Option<Duration>,
    /// `<failLog timeToExecute>`.
    pub replay: Duration,
}

/// Something due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due {
    /// Rescan these roots after repeated overflows (their deferred rescan).
    OverflowRescan(Vec<RootId>),
    PruneTrash,
    /// Try a full sync the replica guard held back again.
    GuardedFullSync(LaneId, FullSyncReason, Option<Seen>),
    /// Retry the unwatched directories and resync these roots (watch limit).
    DegradedResync(Vec<RootId>),
    /// The `<crontab>` full sync of every root.
    Crontab,
    /// Replay the failure journal.
    Replay,
}

/// What an overflow leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Overflowed {
    /// Rescan these roots now.
    RescanNow(Vec<RootId>),
    /// Too soon after the last rescan: the root's rescan is due in `wait` (`first`: the
    /// root was not waiting yet).
    Deferred { first: bool, wait: Duration },
}

#[derive(Debug)]
pub(super) struct Timers {
    schedule: Schedule,
    crontab: Option<Instant>,
    replay: Instant,
    /// `None` until pruning is enabled (then due at once).
    prune: Option<Instant>,
    /// Roots not fully watched (watch limit) or whose watcher lagged at a stop.
    degraded: Vec<RootId>,
    degraded_resync: Option<Instant>,
    /// Roots whose inotify queue overflowed and that wait for their rescan.
    overflow_due: Vec<RootId>,
    /// No overflow rescan before this; a deferred one is due then.
    overflow_quiet_until: Option<Instant>,
    overflow_backoff: Duration,
    /// Full syncs the replica guard held back: (lane, reason, when to try again). They wait
    /// here, not in the queue, so that the lane's other changes keep flowing.
    /// `Seen`: the oldest change the held run was to deliver.
    guarded: Vec<(LaneId, FullSyncReason, Instant, Option<Seen>)>,
}

impl Timers {
    pub(super) fn new(now: Instant, schedule: Schedule) -> Timers {
        let mut timers = Timers {
            schedule,
            crontab: None,
            replay: now,
            prune: None,
            degraded: Vec::new(),
            degraded_resync: None,
            overflow_due: Vec::new(),
            overflow_quiet_until: None,
            overflow_backoff: OVERFLOW_BACKOFF_START,
            guarded: Vec::new(),
        };
        timers.reschedule(now, schedule);
        timers
    }

    /// (Re)arms the configured timers from `now` (start and reload).
    pub(super) fn reschedule(&mut self, now: Instant, schedule: Schedule) {
        self.schedule = schedule;
        self.crontab = schedule.crontab.map(|every| now + every);
        self.replay = now + schedule.replay;
    }

    /// When the next timer is due (the replay is always armed).
    pub(super) fn next(&self) -> Instant {
        let overflow = (!self.overflow_due.is_empty())
            .then_some(self.overflow_quiet_until)
            .flatten();
        [
            self.crontab,
            self.degraded_resync,
            self.prune,
            overflow,
            Some(self.replay),
        ]
        .into_iter()
        .flatten()
        .chain(self.guarded.iter().map(|(_, _, at, _)| *at))
        .min()
        .unwrap_or(self.replay)
    }

    /// What is due at `now`, in the order the loop should do it, each re-armed.
    /// `prune` says whether soft-delete pruning is on (and the daemon ready for it).
    pub(super) fn due(&mut self, now: Instant, prune: bool) -> Vec<Due> {
        let mut due = Vec::new();
        if !self.overflow_due.is_empty() && self.overflow_quiet_until.is_none_or(|at| at <= now) {
            due.push(Due::OverflowRescan(self.rescan_overflowed(now)));
        }
        if !prune {
            // Turned off (a reload dropped `<softDelete>`): no deadline is left to wake for.
            self.prune = None;
        } else if self.prune.is_none_or(|at| at <= now) {
            due.push(Due::PruneTrash);
            self.prune = Some(now + PRUNE_EVERY);
        }
        let (held, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.guarded)
            .into_iter()
            .partition(|(_, _, at, _)| *at <= now);
        self.guarded = later;
        due.extend(
            held.into_iter()
                .map(|(lane, reason, _, since)| Due::GuardedFullSync(lane, reason, since)),
        );
        if self.degraded_resync.is_some_and(|at| at <= now) {
            due.push(Due::DegradedResync(std::mem::take(&mut self.degraded)));
            // Re-armed by the next report of the watch limit, if it is still too low.
            self.degraded_resync = None;
        }
        if self.crontab.is_some_and(|at| at <= now) {
            due.push(Due::Crontab);
            self.crontab = self.schedule.crontab.map(|every| now + every);
        }
        if self.replay <= now {
            due.push(Due::Replay);
            self.replay = now + self.schedule.replay;
        }
        due
    }

    /// The inotify queue of `root` overflowed at `now`.
    pub(super) fn overflowed(&mut self, root: RootId, now: Instant) -> Overflowed {
        let first = !self.overflow_due.contains(&root);
        if first {
            self.overflow_due.push(root);
        }
        match self.overflow_quiet_until {
            // Another overflow soon after a rescan: one more rescan, later.
            Some(until) if now < until => Overflowed::Deferred {
                first,
                wait: until - now,
            },
            quiet_until => {
                // Quiet for long: the spacing starts over.
                if quiet_until.is_some_and(|until| now - until > OVERFLOW_BACKOFF_MAX) {
                    self.overflow_backoff = OVERFLOW_BACKOFF_START;
                }
                Overflowed::RescanNow(self.rescan_overflowed(now))
            }
        }
    }

    fn rescan_overflowed(&mut self, now: Instant) -> Vec<RootId> {
        self.overflow_quiet_until = Some(now + self.overflow_backoff);
        self.overflow_backoff = (self.overflow_backoff * 2).min(OVERFLOW_BACKOFF_MAX);
        std::mem::take(&mut self.overflow_due)
    }

    /// Roots waiting for a rescan after an overflow.
    pub(super) fn overflow_due(&self) -> &[RootId] {
        &self.overflow_due
    }

    /// `root` hit the watch limit at `now`: it is resynced every [`DEGRADED_RESYNC`] until
    /// a report says otherwise.
    pub(super) fn watch_limit_hit(&mut self, root: RootId, now: Instant) {
        self.mark_degraded(root);
        self.degraded_resync.get_or_insert(now + DEGRADED_RESYNC);
    }

    /// `root` may have missed changes (its watcher did not report its last ones at a
    /// stop): it owes a full sync, saved with the pending changes.
    pub(super) fn mark_degraded(&mut self, root: RootId) {
        if !self.degraded.contains(&root) {
            self.degraded.push(root);
        }
    }

    pub(super) fn degraded(&self) -> &[RootId] {
        &self.degraded
    }

    /// Forgets the degraded roots (a reload that rewatches, or retries, them).
    pub(super) fn clear_degraded(&mut self) {
        self.degraded.clear();
        self.degraded_resync = None;
    }

    /// A full sync of `lane` the replica guard held back, tried again `at` (a lane waits
    /// for one at a time).
    pub(super) fn hold_full_sync(
        &mut self,
        lane: LaneId,
        reason: FullSyncReason,
        at: Instant,
        since: Option<Seen>,
    ) {
        if !self.guarded.iter().any(|(id, ..)| *id == lane) {
            self.guarded.push((lane, reason, at, since));
        }
    }

    /// The oldest unseen change a held full sync of `lane` stands for (see
    /// [`FullSyncReason::stands_for_unseen_changes`]).
    pub(super) fn held_since(&self, lane: LaneId) -> Option<Seen> {
        self.guarded
            .iter()
            .find(|(id, reason, ..)| *id == lane && reason.stands_for_unseen_changes())
            .and_then(|(.., since)| *since)
    }

    pub(super) fn holds_full_sync(&self, lane: LaneId) -> bool {
        self.guarded.iter().any(|(id, ..)| *id == lane)
    }

    /// Keeps the held full syncs of the lanes `keep` accepts.
    pub(super) fn retain_held_full_syncs(&mut self, mut keep: impl FnMut(LaneId) -> bool) {
        self.guarded.retain(|(id, ..)| keep(*id));
    }
}

#[cfg(test)]
mod tests;
