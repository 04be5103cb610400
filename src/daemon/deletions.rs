//! Live deletions per root over a sliding window, for `<deleteGuard maximum/share>`.
//!
//! Adaptive batching slices an `rm -rf` into many small batches, so a per-batch count
//! would never trip: deletions are summed per root over [`DELETION_WINDOW`]. Over the
//! maximum, the root's deletions are held at once. Over the share's minimum, the root's
//! remaining entries must be counted (a walk: the loop does it, bounded) to tell the share,
//! and during a storm those counts are spaced geometrically (each at least 1/8 more
//! deletions than the last). No I/O and no clock of its own: `deletions::tests`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::DeleteGuard;

/// The sliding window over which live deletions are counted.
pub(super) const DELETION_WINDOW: Duration = Duration::from_secs(60);

/// What a new count of deletions calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing to do.
    Fine,
    /// Hold the root's deletions, for this reason.
    Hold(String),
    /// Count the root's remaining entries, up to `needed`, and pass them to
    /// [`DeletionWindows::judge`] with `deleted`.
    CountRemaining { deleted: usize, needed: usize },
}

#[derive(Debug, Default)]
pub(super) struct DeletionWindows {
    /// (when, how many) per root.
    windows: HashMap<PathBuf, VecDeque<(Instant, usize)>>,
    /// Per root: the deletion count at which its entries are counted again.
    next_check: HashMap<PathBuf, usize>,
}

impl DeletionWindows {
    /// `count` deletions were seen in `root` at `now`, under `guard` (which limits
    /// deletions: `guard::limits_deletions`).
    pub(super) fn record(
        &mut self,
        root: &Path,
        now: Instant,
        count: usize,
        guard: &DeleteGuard,
    ) -> Next {
        let window = self.windows.entry(root.to_path_buf()).or_default();
        window.push_back((now, count));
        while window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > DELETION_WINDOW)
        {
            window.pop_front();
        }
        let deleted: usize = window.iter().map(|(_, n)| n).sum();
        if crate::guard::over_maximum(deleted, guard) {
            return Next::Hold(format!(
                "{deleted} deletions within {} s are more than the {} <deleteGuard maximum> \
                 allows",
                DELETION_WINDOW.as_secs(),
                guard.maximum.unwrap_or_default()
            ));
        }
        if deleted < guard.minimum as usize || guard.share == 0 || guard.share >= 100 {
            self.next_check.remove(root);
            return Next::Fine;
        }
        let due = self.next_check.get(root).copied().unwrap_or(0);
        if deleted < due {
            return Next::Fine;
        }
        self.next_check
            .insert(root.to_path_buf(), deleted + (deleted / 8).max(1));
        Next::CountRemaining {
            deleted,
            needed: crate::guard::remaining_needed(deleted, guard.share),
        }
    }

    /// The verdict once the root's remaining entries were counted.
    pub(super) fn judge(deleted: usize, remaining: usize, guard: &DeleteGuard) -> Next {
        if !crate::guard::too_many_deletions(deleted, remaining, guard.share, guard.minimum) {
            return Next::Fine;
        }
        Next::Hold(format!(
            "{deleted} deletions within {} s would remove more than {}% of the root's \
             entries ({remaining} left)",
            DELETION_WINDOW.as_secs(),
            guard.share
        ))
    }

    /// Starts `root` afresh (its hold was released).
    pub(super) fn forget(&mut self, root: &Path) {
        self.windows.remove(root);
        self.next_check.remove(root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(maximum: Option<u32>, share: u32, minimum: u32) -> DeleteGuard {
        DeleteGuard {
            maximum,
            share,
            minimum,
            ..DeleteGuard::default()
        }
    }

    #[test]
    fn deletions_are_summed_over_the_window_per_root() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let root = Path::new("/srv/www");
        let other = Path::new("/srv/img");
        let limit = guard(Some(100), 0, 0);
        let mut windows = DeletionWindows::default();
        // (second, root, count) → held?
        let steps = [
            (0, root, 60, false),
            (10, other, 90, false),
            (30, root, 40, false),
            (40, root, 1, true),
            // The first 60 left the window: 40 + 1 + 1.
            (61, root, 1, false),
            (200, root, 100, false),
            (200, root, 1, true),
        ];
        for (secs, which, count, held) in steps {
            let next = windows.record(which, at(secs), count, &limit);
            assert_eq!(matches!(next, Next::Hold(_)), held, "at {secs} s: {next:?}");
        }
    }

    #[test]
    fn a_share_asks_for_counts_spaced_out_during_a_storm() {
        let now = Instant::now();
        let root = Path::new("/srv/www");
        let share = guard(None, 50, 10);
        let mut windows = DeletionWindows::default();
        // Below the minimum: nothing to count.
        assert_eq!(windows.record(root, now, 9, &share), Next::Fine);
        // At it: count up to as many as were deleted (50 %).
        assert_eq!(
            windows.record(root, now, 1, &share),
            Next::CountRemaining {
                deleted: 10,
                needed: 10
            }
        );
        // The next count only after 1/8 more (at least one).
        assert_eq!(
            windows.record(root, now, 1, &share),
            Next::CountRemaining {
                deleted: 11,
                needed: 11
            }
        );
        assert!(matches!(
            windows.record(root, now, 80, &share),
            Next::CountRemaining { deleted: 91, .. }
        ));
        // 91 + 91/8: not before 102.
        assert_eq!(windows.record(root, now, 10, &share), Next::Fine);
        assert!(matches!(
            windows.record(root, now, 1, &share),
            Next::CountRemaining { deleted: 102, .. }
        ));
        windows.forget(root);
        assert_eq!(windows.record(root, now, 5, &share), Next::Fine);
    }

    #[test]
    fn judging_a_count() {
        let share = guard(None, 50, 10);
        assert_eq!(DeletionWindows::judge(10, 10, &share), Next::Fine);
        assert!(matches!(
            DeletionWindows::judge(11, 10, &share),
            Next::Hold(reason) if reason.contains("more than 50%") && reason.contains("10 left")
        ));
        assert_eq!(
            DeletionWindows::judge(9, 0, &share),
            Next::Fine,
            "below the minimum"
        );
    }
}
