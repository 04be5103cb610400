//! Full syncs asked for over D-Bus (`FullSync`, `sersyncctl full-sync --wait`), and when
//! each is finished.
//!
//! A request is finished when every lane it covers has completed a full sync that
//! *started after* the request: one already running when it came may have read the tree
//! before the caller's last write. Its success is whether all of those succeeded. No I/O;
//! the loop reports what [`FullSyncRequests::take_finished`] returns.

use std::path::PathBuf;

use crate::queue::LaneId;

#[derive(Debug)]
struct Request {
    id: u64,
    root: Option<PathBuf>,
    /// (lane, the sequence number of the lane's full sync that counts).
    waiting: Vec<(LaneId, u64)>,
    success: bool,
}

/// A request whose lanes are all done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finished {
    pub id: u64,
    /// The root asked for; empty: every root.
    pub root: PathBuf,
    pub success: bool,
}

#[derive(Debug)]
pub(super) struct FullSyncRequests {
    open: Vec<Request>,
    next_id: u64,
}

impl FullSyncRequests {
    pub(super) fn new() -> FullSyncRequests {
        FullSyncRequests {
            open: Vec::new(),
            next_id: 1,
        }
    }

    /// A new request for `root` (`None`: every root), waiting for each `(lane, number)`:
    /// the lane's full sync with that sequence number (the next to start). Returns its id.
    pub(super) fn open(&mut self, root: Option<PathBuf>, waiting: Vec<(LaneId, u64)>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(Request {
            id,
            root,
            waiting,
            success: true,
        });
        id
    }

    /// Full sync number `number` of `lane` ended.
    pub(super) fn lane_done(&mut self, lane: LaneId, number: u64, success: bool) {
        for request in &mut self.open {
            request.waiting.retain(|&(waiting, needed)| {
                let done = waiting == lane && needed <= number;
                if done {
                    request.success &= success;
                }
                !done
            });
        }
    }

    /// A reload removed these lanes: no request waits for them any more.
    pub(super) fn forget_lanes(&mut self, removed: &[LaneId]) {
        for request in &mut self.open {
            request.waiting.retain(|(lane, _)| !removed.contains(lane));
        }
    }

    /// The requests that have nothing left to wait for, oldest first.
    pub(super) fn take_finished(&mut self) -> Vec<Finished> {
        let (done, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|request| request.waiting.is_empty());
        self.open = open;
        done.into_iter()
            .map(|request| Finished {
                id: request.id,
                root: request.root.unwrap_or_default(),
                success: request.success,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_waits_for_the_next_full_sync_of_each_of_its_lanes() {
        enum Step {
            Open(Option<&'static str>, Vec<(LaneId, u64)>),
            Done(LaneId, u64, bool),
            Forget(Vec<LaneId>),
        }
        use Step::*;
        // (steps, the requests finished after each: (id, root, success))
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Vec<(Step, Vec<(u64, &str, bool)>)>)> = vec![
            (
                "one lane, the full sync that counts succeeds",
                vec![
                    (Open(Some("/srv/www"), vec![(1, 3)]), vec![]),
                    // The one running when the request came (number 2) does not count.
                    (Done(1, 2, true), vec![]),
                    (Done(1, 3, true), vec![(1, "/srv/www", true)]),
                ],
            ),
            (
                "two lanes, one fails: finished, unsuccessful, when both ended",
                vec![
                    (Open(None, vec![(1, 1), (2, 5)]), vec![]),
                    (Done(2, 5, false), vec![]),
                    (Done(1, 1, true), vec![(1, "", false)]),
                ],
            ),
            (
                "a later full sync counts too (a retry after a failure)",
                vec![
                    (Open(None, vec![(1, 1)]), vec![]),
                    (Done(1, 4, true), vec![(1, "", true)]),
                ],
            ),
            (
                "no lanes to wait for: finished at once",
                vec![(Open(Some("/empty"), vec![]), vec![(1, "/empty", true)])],
            ),
            (
                "a reload removed the lane waited for",
                vec![
                    (Open(None, vec![(7, 1), (8, 1)]), vec![]),
                    (Open(None, vec![(7, 2)]), vec![]),
                    (Done(8, 1, true), vec![]),
                    (Forget(vec![7]), vec![(1, "", true), (2, "", true)]),
                ],
            ),
            (
                "another lane's full sync does not count",
                vec![
                    (Open(None, vec![(1, 1)]), vec![]),
                    (Done(2, 9, true), vec![]),
                ],
            ),
        ];
        for (name, steps) in table {
            let mut requests = FullSyncRequests::new();
            for (at, (step, want)) in steps.into_iter().enumerate() {
                match step {
                    Open(root, waiting) => {
                        requests.open(root.map(PathBuf::from), waiting);
                    }
                    Done(lane, number, success) => requests.lane_done(lane, number, success),
                    Forget(lanes) => requests.forget_lanes(&lanes),
                }
                let want: Vec<Finished> = want
                    .into_iter()
                    .map(|(id, root, success)| Finished {
                        id,
                        root: PathBuf::from(root),
                        success,
                    })
                    .collect();
                assert_eq!(requests.take_finished(), want, "{name}, step {at}");
            }
        }
    }
}
