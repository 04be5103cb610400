//! Checkpoints: "has every change observed before now reached every remote?", the
//! question a deploy script asks before it switches traffic (`sersyncctl checkpoint
//! --wait`).
//!
//! A checkpoint is fixed in two steps. A file written just before the call may still sit
//! in a kernel inotify queue, so first every root's watcher is asked to report what is
//! queued (a drain round, answered by `WatchEvent::Drained`). Once all have answered, the
//! checkpoint takes the queue's observation stamp ([`crate::queue::Seen`]): every change
//! observed so far has that sequence number or a lower one. It is then reached for a lane
//! once the lane's oldest undelivered change is newer (or there is none), and reached when
//! that holds for every lane it covers. A checkpoint asked for while a round runs waits
//! for the next one: the running round may have passed a watcher before the file was
//! written.
//!
//! Pure bookkeeping: the loop sends the drains, hands in the lanes' oldest stamps and
//! the clock, and turns what this returns into replies and signals.

use std::time::{Duration, Instant};

use crate::config::RootId;
use crate::queue::LaneId;

pub(super) type CheckpointId = u64;

/// How many checkpoints are remembered (open ones and answered ones); beyond it the
/// oldest answered, then the oldest open, are forgotten.
const REMEMBERED: usize = 1024;
/// How long a reached checkpoint can still be asked about.
const KEEP_REACHED: Duration = Duration::from_secs(600);

/// Where a checkpoint stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Progress {
    /// The watchers of these roots have not yet reported what they had queued.
    Draining(Vec<RootId>),
    /// These lanes still owe a change observed before the checkpoint.
    Behind(Vec<LaneId>),
    Reached,
}

#[derive(Debug)]
struct Checkpoint {
    id: CheckpointId,
    /// The lanes still owing (all it covers until its stamp is known).
    lanes: Vec<LaneId>,
    /// The drain round it waits for.
    round: u64,
    /// The observation stamp once its round is done.
    seq: Option<u64>,
    reached: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    next_id: CheckpointId,
    list: Vec<Checkpoint>,
    /// Rounds started so far; the last one is running while `unanswered` is `Some`.
    rounds: u64,
    /// The roots whose watcher has not answered the running round.
    unanswered: Option<Vec<RootId>>,
}

impl Checkpoints {
    /// A new checkpoint over `lanes`. Returns its id, and whether a drain round must start
    /// now (then the loop asks every watcher and calls [`Checkpoints::round_started`]).
    pub(super) fn ask(&mut self, lanes: Vec<LaneId>) -> (CheckpointId, bool) {
        self.next_id += 1;
        let id = self.next_id;
        let start = self.unanswered.is_none();
        // The running round may have passed a watcher before the caller's last write.
        let round = self.rounds + 1;
        self.list.push(Checkpoint {
            id,
            lanes,
            round,
            seq: None,
            reached: None,
        });
        self.forget_beyond(REMEMBERED);
        (id, start)
    }

    /// The loop asked the watchers of `roots` to drain: round `rounds + 1` runs. With no
    /// watchers at all it is done at once, at `seq` (see [`Checkpoints::drained`]).
    pub(super) fn round_started(&mut self, roots: Vec<RootId>, seq: u64) -> bool {
        self.rounds += 1;
        if roots.is_empty() {
            return self.complete_round(seq);
        }
        self.unanswered = Some(roots);
        false
    }

    /// The watchers were replaced (a reload): the running round, if any, must ask the new
    /// ones. Returns whether one was running (the loop then starts it again).
    pub(super) fn watchers_replaced(&mut self) -> bool {
        if self.unanswered.take().is_some() {
            // The same round number again: its checkpoints still wait for it.
            self.rounds -= 1;
            true
        } else {
            false
        }
    }

    /// The watcher of `root` reported what it had queued. When that completes the running
    /// round, the checkpoints waiting for it take `seq`, the observation stamp of now,
    /// and the result says whether another round must start (for checkpoints asked
    /// during this one).
    pub(super) fn drained(&mut self, root: RootId, seq: u64) -> bool {
        let Some(unanswered) = &mut self.unanswered else {
            return false;
        };
        unanswered.retain(|&r| r != root);
        if !unanswered.is_empty() {
            return false;
        }
        self.complete_round(seq)
    }

    fn complete_round(&mut self, seq: u64) -> bool {
        self.unanswered = None;
        let done = self.rounds;
        let mut another = false;
        for checkpoint in &mut self.list {
            if checkpoint.seq.is_none() {
                if checkpoint.round <= done {
                    checkpoint.seq = Some(seq);
                } else {
                    another = true;
                }
            }
        }
        another
    }

    /// Re-evaluates the open checkpoints whose stamp is known. `oldest(lane)` is the
    /// sequence number of the lane's oldest undelivered change: `Some(None)` when it owes
    /// nothing, `None` when the lane is gone (a reload removed the remote: nothing can be
    /// delivered there any more). Returns the checkpoints reached now.
    pub(super) fn advance(
        &mut self,
        oldest: impl Fn(LaneId) -> Option<Option<u64>>,
        now: Instant,
    ) -> Vec<CheckpointId> {
        let mut reached = Vec::new();
        for checkpoint in &mut self.list {
            let (Some(seq), None) = (checkpoint.seq, checkpoint.reached) else {
                continue;
            };
            checkpoint
                .lanes
                .retain(|&lane| oldest(lane).is_some_and(|owed| owed.is_some_and(|s| s <= seq)));
            if checkpoint.lanes.is_empty() {
                checkpoint.reached = Some(now);
                reached.push(checkpoint.id);
            }
        }
        self.list.retain(|c| {
            c.reached
                .is_none_or(|at| now.saturating_duration_since(at) < KEEP_REACHED)
        });
        reached
    }

    /// Whether any checkpoint is still open (the loop re-evaluates only then).
    pub(super) fn any_open(&self) -> bool {
        self.list.iter().any(|c| c.reached.is_none())
    }

    /// Where checkpoint `id` stands; `None` if it is unknown (never given, or forgotten).
    pub(super) fn progress(&self, id: CheckpointId) -> Option<Progress> {
        let checkpoint = self.list.iter().find(|c| c.id == id)?;
        Some(match (checkpoint.seq, checkpoint.reached) {
            (_, Some(_)) => Progress::Reached,
            (Some(_), None) => Progress::Behind(checkpoint.lanes.clone()),
            (None, None) => Progress::Draining(match &self.unanswered {
                Some(roots) if checkpoint.round == self.rounds => roots.clone(),
                // Its round has not started: every watcher is still to answer.
                _ => Vec::new(),
            }),
        })
    }

    fn forget_beyond(&mut self, limit: usize) {
        while self.list.len() > limit {
            let at = self
                .list
                .iter()
                .position(|c| c.reached.is_some())
                .unwrap_or(0);
            self.list.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lanes' oldest undelivered stamps: (lane, stamp); lanes not listed are gone.
    fn oldest(owed: &[(LaneId, Option<u64>)]) -> impl Fn(LaneId) -> Option<Option<u64>> + '_ {
        move |lane| owed.iter().find(|(l, _)| *l == lane).map(|(_, s)| *s)
    }

    #[test]
    fn a_checkpoint_waits_for_the_drain_then_for_every_lane() {
        let now = Instant::now();
        let mut checkpoints = Checkpoints::default();
        let (id, start) = checkpoints.ask(vec![1, 2]);
        assert!(start);
        checkpoints.round_started(vec![0, 1], 9);
        // Nothing is reached before the watchers answered, even if the lanes are idle.
        assert!(
            checkpoints
                .advance(oldest(&[(1, None), (2, None)]), now)
                .is_empty()
        );
        assert_eq!(
            checkpoints.progress(id),
            Some(Progress::Draining(vec![0, 1]))
        );
        assert!(!checkpoints.drained(0, 10));
        assert_eq!(checkpoints.progress(id), Some(Progress::Draining(vec![1])));
        assert!(!checkpoints.drained(1, 12));
        // Lane 1 owes a change seen at 12 (before the checkpoint), lane 2 one seen after.
        let owed = [(1, Some(12)), (2, Some(13))];
        assert!(checkpoints.advance(oldest(&owed), now).is_empty());
        assert_eq!(checkpoints.progress(id), Some(Progress::Behind(vec![1])));
        let owed = [(1, Some(14)), (2, None)];
        assert_eq!(checkpoints.advance(oldest(&owed), now), vec![id]);
        assert_eq!(checkpoints.progress(id), Some(Progress::Reached));
        assert!(!checkpoints.any_open());
        // Remembered for a while, then forgotten.
        checkpoints.advance(oldest(&[]), now + KEEP_REACHED);
        assert_eq!(checkpoints.progress(id), None);
    }

    #[test]
    fn a_checkpoint_asked_during_a_round_waits_for_the_next() {
        let now = Instant::now();
        let mut checkpoints = Checkpoints::default();
        let (first, start) = checkpoints.ask(vec![1]);
        assert!(start);
        checkpoints.round_started(vec![0], 7);
        let (second, start) = checkpoints.ask(vec![1]);
        assert!(!start, "one round at a time");
        assert!(
            checkpoints.drained(0, 5),
            "the second needs a round of its own"
        );
        checkpoints.round_started(vec![0], 7);
        assert_eq!(
            checkpoints.advance(oldest(&[(1, Some(6))]), now),
            vec![first]
        );
        assert_eq!(
            checkpoints.progress(second),
            Some(Progress::Draining(vec![0]))
        );
        assert!(!checkpoints.drained(0, 8));
        assert_eq!(
            checkpoints.progress(second),
            Some(Progress::Behind(vec![1]))
        );
        assert_eq!(
            checkpoints.advance(oldest(&[(1, Some(9))]), now),
            vec![second]
        );
    }

    #[test]
    fn replaced_watchers_are_asked_again_and_removed_lanes_owe_nothing() {
        let now = Instant::now();
        let mut checkpoints = Checkpoints::default();
        let (id, _) = checkpoints.ask(vec![1, 2]);
        checkpoints.round_started(vec![0, 1], 9);
        assert!(!checkpoints.drained(0, 3));
        // A reload replaced the watchers: the answers of the old ones do not count.
        assert!(checkpoints.watchers_replaced());
        assert!(
            !checkpoints.drained(1, 4),
            "no round runs until it is started again"
        );
        checkpoints.round_started(vec![0], 7);
        assert!(!checkpoints.drained(0, 6));
        // Lane 2 was removed by the reload; lane 1 still owes a change seen at 6.
        assert!(checkpoints.advance(oldest(&[(1, Some(6))]), now).is_empty());
        assert_eq!(checkpoints.advance(oldest(&[(1, None)]), now), vec![id]);
    }

    #[test]
    fn only_so_many_checkpoints_are_remembered_answered_ones_first() {
        let now = Instant::now();
        let mut checkpoints = Checkpoints::default();
        let (reached, _) = checkpoints.ask(vec![]);
        assert!(
            !checkpoints.round_started(vec![], 1),
            "no watchers: done at once"
        );
        let (open, start) = checkpoints.ask(vec![1]);
        assert!(start);
        assert!(!checkpoints.round_started(vec![], 2));
        checkpoints.advance(oldest(&[(1, Some(0))]), now);
        assert_eq!(checkpoints.progress(reached), Some(Progress::Reached));
        checkpoints.forget_beyond(1);
        assert_eq!(checkpoints.progress(reached), None);
        assert!(checkpoints.progress(open).is_some());
    }
}
