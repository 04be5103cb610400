//! What the end of a job means for its lane, decided without I/O.
//!
//! [`settle`] takes a lane's [`Health`] and a job's [`Outcome`] and returns a
//! [`Settlement`]: the lane's new health (updated in place), what the queue does with the
//! job's entries (done, retried after backoff, deferred), what the failure journal records
//! or clears, the D-Bus events, which changes reached the remote (for the after-sync
//! plugins), and one [`Report`] the loop turns into a log line. The loop gathers nothing
//! for it but the clock and a way to name the root as rsync may have printed it, and
//! carries the settlement out; the rules live here, where tables test them
//! (`settle::tests`).
//!
//! The rules, in short:
//! - done (exit 0 or 24): the lane is healthy again (unless the replica guard still holds
//!   its deletions and this run deleted nothing), its failures for these paths are cleared
//!   (and below a removed, replaced or recursively synced directory);
//! - a guard refusal: the lane is guarded, the refusal is a failure, the held work is
//!   deferred by [`GUARD_RETRY`]; a batch's sends went through;
//! - exit 23 on a batch: the failed paths (or, unknown which, both halves of the batch) are
//!   deferred as batches of their own and the lane goes on;
//! - anything else: the lane backs off and the whole job is retried; from the second
//!   failure in a row (or at once when fatal) its paths are recorded in the journal.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::control::Event;
use crate::failure::{self, Backoff, ExitClass, Verdict};
use crate::queue::{Action, FullSyncReason, Job, RelPath, Retry};
use crate::sync::{Outcome, RunResult};

/// How often a run the replica guard held back is tried again.
pub(super) const GUARD_RETRY: Duration = Duration::from_secs(10);
/// When paths that failed on their own (exit 23) are tried again.
pub(super) const PARTIAL_RETRY: Duration = Duration::from_secs(15);
/// When the halves of a batch that failed without saying which paths (exit 23) are tried:
/// soon, as finding the failing path takes about two runs per halving.
pub(super) const UNEXPLAINED_RETRY: Duration = Duration::from_secs(2);
/// Unexplained partial failures in a row (no success between them) after which the lane
/// backs off instead of splitting further: enough to isolate one failing path in the
/// largest batch (two per halving), too few to split a remote-wide failure into a run per
/// path.
pub(super) const MAX_UNEXPLAINED_PARTIALS: u32 = 40;

/// The public summary of a run the replica guard held back (its reason is in the full
/// error, the log and `sersyncctl failures`).
pub(super) const GUARD_SUMMARY: &str = "replica guard: deletions on the remote are held back";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneState {
    Ok,
    Backoff,
    Failing,
    /// The replica guard holds its deletions or full sync back (see [`crate::guard`]).
    Guarded,
}

impl LaneState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            LaneState::Ok => "ok",
            LaneState::Backoff => "backoff",
            LaneState::Failing => "failing",
            LaneState::Guarded => "guarded",
        }
    }
}

/// A lane's last error, twice: in full for root and group `sersync`, and as a summary
/// without file names for everyone (see `control::interface`, "Who may do what").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LastError {
    /// The verdict's reason and rsync's last line: may name files.
    pub full: String,
    /// Built from fixed texts and numbers only.
    pub summary: String,
}

/// The part of a lane that the ends of its jobs change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Health {
    pub state: LaneState,
    pub backoff: Backoff,
    pub last_error: Option<LastError>,
    pub last_ok: Option<SystemTime>,
    /// Batches in a row that ended in exit 23 without rsync saying which paths failed:
    /// they are split in halves to find the failing path, unless so many fail that the
    /// failure is not one path's (then the lane backs off as for any failure).
    pub unexplained_partials: u32,
}

impl Health {
    pub(super) fn new(backoff: Backoff) -> Health {
        Health {
            state: LaneState::Ok,
            backoff,
            last_error: None,
            last_ok: None,
            unexplained_partials: 0,
        }
    }
}

/// A change to the failure journal, for the lane whose job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JournalOp {
    /// These paths failed (the empty path: the root's held full sync).
    Record {
        paths: Vec<RelPath>,
        code: i32,
        message: String,
    },
    /// These paths were delivered.
    Clear(Vec<RelPath>),
    /// Everything below this directory was delivered with it.
    ClearBelow(RelPath),
    /// The whole root was delivered (a full sync).
    ClearLane,
}

/// What the log says about the end of the job (the loop words it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    Synced {
        what: String,
        batch_size: usize,
        elapsed: Duration,
        /// The lane was failing, backing off or guarded before.
        reachable_again: bool,
    },
    Failed {
        what: String,
        detail: String,
        code: i32,
        batch_size: usize,
        retry_in: Duration,
        fatal: bool,
    },
    /// Exit 23 on a batch: `failed` of its paths are deferred; `split` when rsync did not
    /// say which, so that is the whole batch in two halves.
    Partial {
        what: String,
        detail: String,
        code: i32,
        failed: usize,
        split: bool,
    },
    Guarded {
        what: String,
        reason: String,
        /// The lane was not guarded before (reported loudly once).
        newly: bool,
    },
}

/// What the loop carries out at the end of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settlement {
    /// The job did its work (a requested full sync waiting on it counts it as a success).
    pub succeeded: bool,
    /// Counts as an error in the counters.
    pub error: bool,
    /// For [`crate::queue::Queue::finish`]: the whole job again at this time.
    pub retry: Option<(Retry, Instant)>,
    /// For [`crate::queue::Queue::defer`], after finishing: entries tried again as
    /// batches of their own.
    pub defer: Vec<(Vec<(RelPath, Action)>, Instant)>,
    pub journal: Vec<JournalOp>,
    pub events: Vec<Event>,
    /// Changes the remote now has (for the counters and the after-sync plugins): all of a
    /// successful job's, the paths of a partial failure that did not fail, the sends of a
    /// batch whose deletions the guard held.
    pub delivered: Vec<(RelPath, Action)>,
    /// A full sync made the remote equal to the whole root: every change of the root that
    /// waited for this remote has reached it.
    pub whole_root: bool,
    /// The replica guard's count tripped: the root's deletions stay held until released.
    pub hold_deletions: Option<String>,
    /// A full sync the replica guard held back, tried again by the timer from then.
    pub guarded_full_sync: Option<(FullSyncReason, Instant)>,
    /// A forced full sync succeeded: the operator vouched for the root as it is now, so
    /// its filesystem is recorded anew.
    pub record_filesystem: bool,
    pub report: Report,
}

impl Settlement {
    fn new(report: Report) -> Settlement {
        Settlement {
            succeeded: false,
            error: false,
            retry: None,
            defer: Vec::new(),
            journal: Vec::new(),
            events: Vec::new(),
            delivered: Vec::new(),
            whole_root: false,
            hold_deletions: None,
            guarded_full_sync: None,
            record_filesystem: false,
            report,
        }
    }
}

/// The clock at the end of the job.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

/// Settles the end of a job of the lane named `label`. `root_names` gives the root as rsync
/// may print it (as configured, and resolved): asked only to read exit 23's stderr, as it
/// may touch the filesystem.
pub(super) fn settle(
    health: &mut Health,
    label: &str,
    outcome: Outcome,
    root_names: impl FnOnce() -> Vec<Vec<u8>>,
    clock: Clock,
) -> Settlement {
    let Outcome {
        job,
        result,
        stderr,
        stderr_truncated,
        elapsed,
        // Counted by the loop, whatever the job's end means.
        bytes_sent: _,
        // Handed to the large-file run by the loop (and out of `job` already).
        large: _,
        // Taken back by the loop before the outcome is settled.
        pulled_over_removals: _,
    } = outcome;
    if let RunResult::Guarded {
        reason,
        held,
        latch,
    } = result
    {
        let mut settlement = guarded(health, label, job, &reason, held, clock.now);
        if latch {
            settlement.hold_deletions = Some(reason);
        }
        return settlement;
    }
    let verdict = failure::classify(result.status(), &stderr);
    let what = describe(&job);
    let batch_size = entries(&job).len();
    if verdict.class.is_done() {
        return done(health, label, job, what, elapsed, clock.wall);
    }
    let code = result.code();
    let message = last_line(&stderr);
    // The policy's reason often quotes rsync's line already.
    let detail = if verdict.reason.contains(&message) {
        verdict.reason.clone()
    } else {
        format!("{}: {message}", verdict.reason)
    };
    health.last_error = Some(LastError {
        full: detail.clone(),
        summary: verdict.summary.clone(),
    });
    let failure = Failure {
        what,
        detail,
        code,
        message,
        verdict: &verdict,
    };
    // Exit 23: the remote is there and took what it could. Retry what failed alone,
    // later, and let the rest of the lane go on: a file that keeps failing must not hold
    // back every change queued behind it. When stderr names every failed path (and none of
    // it was lost), that is those paths; otherwise the whole batch, which then waits aside
    // the same way instead of holding the lane in backoff.
    if verdict.partial
        && let Job::Batch(batch) = &job
    {
        let paths: Vec<RelPath> = batch.entries.iter().map(|(p, _)| p.clone()).collect();
        let identified = if stderr_truncated {
            None
        } else {
            let report = failure::stderr::parse(stderr.as_bytes());
            let names = root_names();
            let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            failure::retry_set(&paths, &report, &names)
        };
        // Unknown which paths failed, among several: split, unless so many splits failed
        // in a row that it is no single path's failure (then back off below).
        let split = identified.is_none() && paths.len() > 1;
        if !split || health.unexplained_partials < MAX_UNEXPLAINED_PARTIALS {
            if split {
                health.unexplained_partials += 1;
            }
            let failed: HashSet<RelPath> = identified.unwrap_or(paths).into_iter().collect();
            return partial(label, batch, &failed, split, failure, clock.now);
        }
    }
    failed(health, label, job, batch_size, failure, clock.now)
}

/// A failed run, as every kind of failure reports it.
struct Failure<'a> {
    what: String,
    detail: String,
    code: i32,
    /// rsync's last line.
    message: String,
    verdict: &'a Verdict,
}

fn done(
    health: &mut Health,
    label: &str,
    job: Job,
    what: String,
    elapsed: Duration,
    wall: SystemTime,
) -> Settlement {
    // A lane whose deletions are held stays `guarded` while only sends succeed: it is the
    // next run that deletes (or a full sync) that shows the hold is over.
    let deleted_something = match &job {
        Job::FullSync { .. } => true,
        Job::Batch(batch) => batch
            .entries
            .iter()
            .any(|(_, action)| !matches!(action, Action::Sync)),
    };
    let still_guarded = health.state == LaneState::Guarded && !deleted_something;
    let reachable_again = health.state != LaneState::Ok && !still_guarded;
    health.backoff.success();
    health.unexplained_partials = 0;
    if !still_guarded {
        health.state = LaneState::Ok;
        health.last_error = None;
    }
    health.last_ok = Some(wall);
    let batch_size = entries(&job).len();
    let mut settlement = Settlement::new(Report::Synced {
        what,
        batch_size,
        elapsed,
        reachable_again,
    });
    settlement.succeeded = true;
    if reachable_again {
        settlement.events.push(Event::StateChanged {
            remote: label.to_owned(),
            state: LaneState::Ok.as_str().to_owned(),
        });
    }
    let entries = match job {
        Job::Batch(batch) => {
            let paths = batch.entries.iter().map(|(p, _)| p.clone()).collect();
            settlement.journal.push(JournalOp::Clear(paths));
            batch.entries
        }
        Job::FullSync { reason, then, .. } => {
            settlement.journal.push(JournalOp::ClearLane);
            settlement.whole_root = true;
            settlement.record_filesystem = reason == FullSyncReason::Forced;
            then
        }
    };
    // A removed, replaced or recursively synced directory settles whatever failed below it.
    for (path, action) in &entries {
        if matches!(
            action,
            Action::Remove { dir: true } | Action::Replace | Action::Tree
        ) {
            settlement.journal.push(JournalOp::ClearBelow(path.clone()));
        }
    }
    settlement.delivered = entries;
    settlement
}

/// Exit 23 on a batch: `failed` (the paths rsync named, or with `split` all of them) are
/// deferred as batches of their own, in halves when `split`, and the lane goes on. The
/// journal and `SyncFailed` hear of paths known to fail, not of every halving.
fn partial(
    label: &str,
    batch: &crate::queue::Batch,
    failed: &HashSet<RelPath>,
    split: bool,
    failure: Failure<'_>,
    now: Instant,
) -> Settlement {
    let (retry, delivered): (Vec<_>, Vec<_>) = batch
        .entries
        .iter()
        .cloned()
        .partition(|(p, _)| failed.contains(p));
    let mut settlement = Settlement::new(Report::Partial {
        what: failure.what,
        detail: failure.detail,
        code: failure.code,
        failed: retry.len(),
        split,
    });
    settlement.error = true;
    if !split {
        settlement.journal.push(JournalOp::Record {
            paths: retry.iter().map(|(p, _)| p.clone()).collect(),
            code: failure.code,
            message: failure.message.clone(),
        });
        if let Some((path, _)) = retry.first() {
            settlement.events.push(Event::SyncFailed {
                remote: label.to_owned(),
                path: path.clone(),
                rsync_exit: failure.code,
                message: failure.message,
                summary: failure.verdict.summary.clone(),
            });
        }
    }
    settlement.journal.push(JournalOp::Clear(
        delivered.iter().map(|(p, _)| p.clone()).collect(),
    ));
    settlement.delivered = delivered;
    if split {
        // Two halves, retried as batches of their own: the one that succeeds is delivered,
        // the other splits again, down to the failing path.
        let mut first = retry;
        let second = first.split_off(first.len() / 2);
        settlement.defer.push((first, now + UNEXPLAINED_RETRY));
        settlement.defer.push((second, now + UNEXPLAINED_RETRY));
    } else {
        settlement.defer.push((retry, now + PARTIAL_RETRY));
    }
    settlement
}

/// Any other failure: the lane backs off and the whole job is tried again.
fn failed(
    health: &mut Health,
    label: &str,
    job: Job,
    batch_size: usize,
    failure: Failure<'_>,
    now: Instant,
) -> Settlement {
    let class = failure.verdict.class;
    let retry_at = health.backoff.failure(now, class);
    let fatal = class == ExitClass::Fatal;
    let new_state = if fatal {
        LaneState::Failing
    } else {
        LaneState::Backoff
    };
    let state_changed = health.state != new_state;
    health.state = new_state;
    let mut settlement = Settlement::new(Report::Failed {
        what: failure.what,
        detail: failure.detail,
        code: failure.code,
        batch_size,
        retry_in: retry_at.saturating_duration_since(now),
        fatal,
    });
    settlement.error = true;
    let entries = entries(&job);
    settlement.events.push(Event::SyncFailed {
        remote: label.to_owned(),
        path: entries.first().map(|(p, _)| p.clone()).unwrap_or_default(),
        rsync_exit: failure.code,
        message: failure.message.clone(),
        summary: failure.verdict.summary.clone(),
    });
    if state_changed {
        settlement.events.push(Event::StateChanged {
            remote: label.to_owned(),
            state: new_state.as_str().to_owned(),
        });
    }
    // Still failing after a retry (or a configuration error): it is a failure now.
    if (fatal || health.backoff.failures() >= 2) && !entries.is_empty() {
        settlement.journal.push(JournalOp::Record {
            paths: entries.iter().map(|(p, _)| p.clone()).collect(),
            code: failure.code,
            message: failure.message,
        });
    }
    settlement.retry = Some((
        match job {
            Job::Batch(batch) => Retry::Paths(batch.entries),
            Job::FullSync { reason, then, .. } => Retry::FullSync { reason, then },
        },
        retry_at,
    ));
    settlement
}

/// A run the replica guard held back: the lane shows as guarded, the refusal is a failure
/// (journal, `SyncFailed`), and the held work is tried again later; the sends of a batch
/// went through.
fn guarded(
    health: &mut Health,
    label: &str,
    job: Job,
    reason: &str,
    held: Vec<RelPath>,
    now: Instant,
) -> Settlement {
    let message = format!("replica guard: {reason}");
    let newly = health.state != LaneState::Guarded;
    health.state = LaneState::Guarded;
    health.last_error = Some(LastError {
        full: message.clone(),
        summary: GUARD_SUMMARY.to_owned(),
    });
    let what = match &job {
        Job::Batch(_) => format!("deletion of {} path(s)", held.len()),
        Job::FullSync { .. } => "full sync".to_owned(),
    };
    let mut settlement = Settlement::new(Report::Guarded {
        what,
        reason: reason.to_owned(),
        newly,
    });
    settlement.error = true;
    settlement.events.push(Event::SyncFailed {
        remote: label.to_owned(),
        path: held.first().cloned().unwrap_or_default(),
        rsync_exit: -1,
        message: message.clone(),
        summary: GUARD_SUMMARY.to_owned(),
    });
    if newly {
        settlement.events.push(Event::StateChanged {
            remote: label.to_owned(),
            state: LaneState::Guarded.as_str().to_owned(),
        });
    }
    let retry_at = now + GUARD_RETRY;
    match job {
        Job::FullSync {
            reason: why, then, ..
        } => {
            // The root itself (the empty path) names a held full sync.
            settlement.journal.push(JournalOp::Record {
                paths: vec![Vec::new()],
                code: -1,
                message,
            });
            // What was pending goes on as a batch (its deletions guarded on their own).
            settlement.defer.push((then, now));
            settlement.guarded_full_sync = Some((why, retry_at));
        }
        Job::Batch(batch) => {
            let held: HashSet<RelPath> = held.into_iter().collect();
            let (held, sent): (Vec<_>, Vec<_>) = batch
                .entries
                .into_iter()
                .partition(|(path, _)| held.contains(path));
            settlement.journal.push(JournalOp::Record {
                paths: held.iter().map(|(p, _)| p.clone()).collect(),
                code: -1,
                message,
            });
            settlement.journal.push(JournalOp::Clear(
                sent.iter().map(|(p, _)| p.clone()).collect(),
            ));
            settlement.delivered = sent;
            settlement.defer.push((held, retry_at));
        }
    }
    settlement
}

/// The changes a job carried (a full sync's: those that rode along).
fn entries(job: &Job) -> &[(RelPath, Action)] {
    match job {
        Job::Batch(batch) => &batch.entries,
        Job::FullSync { then, .. } => then,
    }
}

/// The job in a few words, for the log.
fn describe(job: &Job) -> String {
    match job {
        Job::Batch(batch) => crate::sync::describe_batch(&batch.entries),
        Job::FullSync { reason, then, .. } => {
            format!("full sync ({reason:?}) and {} pending paths", then.len())
        }
    }
}

/// rsync's last line that says what went wrong (not its closing `rsync error:` summary,
/// unless that is all there is).
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("rsync error:"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no message)")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests;
