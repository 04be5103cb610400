//! Tables: (lane health, job, how it ended) → what the lane becomes and what the loop does.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::queue::{Action, Batch, FullSyncReason, Job, Retry};
use crate::sync::{Outcome, RunResult};

const ROOT: &[u8] = b"/srv/www";
const LABEL: &str = "/srv/www -> 127.0.0.1::www";
/// rsync's closing line of an exit 23.
const CLOSING_23: &str = "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [sender=3.2.7]\n";

fn path(p: &str) -> RelPath {
    p.as_bytes().to_vec()
}

fn batch(entries: &[(&str, Action)]) -> Job {
    Job::Batch(Batch {
        lane: 1,
        entries: entries.iter().map(|(p, a)| (path(p), *a)).collect(),
        renames: Vec::new(),
        large: false,
    })
}

fn full_sync(reason: FullSyncReason, then: &[(&str, Action)]) -> Job {
    Job::FullSync {
        lane: 1,
        reason,
        then: then.iter().map(|(p, a)| (path(p), *a)).collect(),
    }
}

fn unreadable(p: &str) -> String {
    format!(
        "rsync: [sender] send_files failed to open \"{}/{p}\": Permission denied (13)\n",
        String::from_utf8_lossy(ROOT)
    )
}

fn guard(held: &[&str], latch: bool) -> RunResult {
    RunResult::Guarded {
        reason: "the root is empty".to_owned(),
        held: held.iter().map(|p| path(p)).collect(),
        latch,
    }
}

fn health(state: LaneState) -> Health {
    let mut health = Health::new(crate::failure::Backoff::default());
    health.state = state;
    health
}

struct Ended {
    health: Health,
    settlement: Settlement,
    now: Instant,
    wall: SystemTime,
}

fn end(mut health: Health, job: Job, result: RunResult, stderr: &str) -> Ended {
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let outcome = Outcome {
        job,
        result,
        stderr: stderr.to_owned(),
        stderr_truncated: false,
        elapsed: Duration::from_millis(5),
        bytes_sent: 0,
        large: Vec::new(),
        pulled_over_removals: Vec::new(),
    };
    let settlement = settle(
        &mut health,
        LABEL,
        outcome,
        || vec![ROOT.to_vec()],
        Clock { now, wall },
    );
    Ended {
        health,
        settlement,
        now,
        wall,
    }
}

fn paths(entries: &[(RelPath, Action)]) -> Vec<String> {
    entries
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn event_kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            Event::SyncFailed {
                path, rsync_exit, ..
            } => format!("SyncFailed({},{rsync_exit})", String::from_utf8_lossy(path)),
            Event::StateChanged { state, .. } => format!("StateChanged({state})"),
            Event::FullSyncFinished { .. } => "FullSyncFinished".to_owned(),
            Event::CheckpointReached { .. } => "CheckpointReached".to_owned(),
            Event::FullSyncProgress { .. } => "FullSyncProgress".to_owned(),
        })
        .collect()
}

fn journal(ops: &[JournalOp]) -> Vec<String> {
    let list = |paths: &[RelPath]| {
        paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    ops.iter()
        .map(|op| match op {
            JournalOp::Record { paths, code, .. } => format!("record[{}]={code}", list(paths)),
            JournalOp::Clear(paths) => format!("clear[{}]", list(paths)),
            JournalOp::ClearBelow(dir) => format!("below[{}]", String::from_utf8_lossy(dir)),
            JournalOp::ClearLane => "lane".to_owned(),
        })
        .collect()
}

/// The paths of the `clear[...]` rows of a journal column.
fn cleared(ops: &[&str]) -> Vec<String> {
    ops.iter()
        .filter_map(|op| op.strip_prefix("clear[").and_then(|l| l.strip_suffix(']')))
        .flat_map(|list| list.split(',').filter(|p| !p.is_empty()).map(str::to_owned))
        .collect()
}

/// The queue's side: `retry` (the whole job, "paths" or "full") and the deferred batches as
/// (their paths, seconds from now).
fn queue_side(ended: &Ended) -> (Option<String>, Vec<(Vec<String>, u64)>) {
    let retry = ended
        .settlement
        .retry
        .as_ref()
        .map(|(retry, _)| match retry {
            Retry::Paths(entries) => format!("paths[{}]", paths(entries).join(",")),
            Retry::FullSync { then, .. } => format!("full+[{}]", paths(then).join(",")),
        });
    let defer = ended
        .settlement
        .defer
        .iter()
        .map(|(entries, at)| (paths(entries), (*at - ended.now).as_secs()))
        .collect();
    (retry, defer)
}

#[test]
fn successes() {
    use Action::*;
    // (name, state before, job, result, state after, events, journal ops, delivered)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        &str,
        LaneState,
        Job,
        RunResult,
        LaneState,
        Vec<&str>,
        Vec<&str>,
        Vec<&str>,
    )> = vec![
        (
            "a healthy lane stays quiet",
            LaneState::Ok,
            batch(&[("a", Sync), ("b", Sync)]),
            RunResult::Exited(0),
            LaneState::Ok,
            vec![],
            vec!["clear[a,b]"],
            vec!["a", "b"],
        ),
        (
            "exit 24 (vanished files) is done",
            LaneState::Backoff,
            batch(&[("a", Sync)]),
            RunResult::Exited(24),
            LaneState::Ok,
            vec!["StateChanged(ok)"],
            vec!["clear[a]"],
            vec!["a"],
        ),
        (
            "removed, replaced and recursive directories settle what failed below them",
            LaneState::Failing,
            batch(&[
                ("d", Remove { dir: true }),
                ("f", Remove { dir: false }),
                ("r", Replace),
                ("t", Tree),
            ]),
            RunResult::Exited(0),
            LaneState::Ok,
            vec!["StateChanged(ok)"],
            vec!["clear[d,f,r,t]", "below[d]", "below[r]", "below[t]"],
            vec!["d", "f", "r", "t"],
        ),
        (
            "a guarded lane that only sent stays guarded",
            LaneState::Guarded,
            batch(&[("a", Sync)]),
            RunResult::Exited(0),
            LaneState::Guarded,
            vec![],
            vec!["clear[a]"],
            vec!["a"],
        ),
        (
            "a guarded lane whose deletion went through is healthy",
            LaneState::Guarded,
            batch(&[("a", Remove { dir: false })]),
            RunResult::Exited(0),
            LaneState::Ok,
            vec!["StateChanged(ok)"],
            vec!["clear[a]"],
            vec!["a"],
        ),
        (
            "a full sync clears the lane and delivers what rode along",
            LaneState::Guarded,
            full_sync(FullSyncReason::Scheduled, &[("x", Sync), ("y", Tree)]),
            RunResult::Exited(0),
            LaneState::Ok,
            vec!["StateChanged(ok)"],
            vec!["lane", "below[y]"],
            vec!["x", "y"],
        ),
    ];
    for (name, before, job, result, after, events, ops, delivered) in table {
        let mut start = health(before);
        start.backoff.failure(Instant::now(), ExitClass::Retryable);
        start.unexplained_partials = 3;
        start.last_error = Some(LastError {
            full: "x".into(),
            summary: "y".into(),
        });
        let ended = end(start, job, result, "");
        let s = &ended.settlement;
        assert!(s.succeeded && !s.error, "{name}");
        assert_eq!(ended.health.state, after, "{name}");
        assert_eq!(event_kinds(&s.events), events, "{name}");
        assert_eq!(journal(&s.journal), ops, "{name}");
        assert_eq!(paths(&s.delivered), delivered, "{name}");
        assert_eq!(queue_side(&ended), (None, vec![]), "{name}");
        assert_eq!(ended.health.backoff.failures(), 0, "{name}: backoff reset");
        assert_eq!(ended.health.unexplained_partials, 0, "{name}");
        assert_eq!(ended.health.last_ok, Some(ended.wall), "{name}");
        assert_eq!(
            s.whole_root,
            name.starts_with("a full sync"),
            "{name}: a full sync delivers the whole root"
        );
        assert_eq!(
            ended.health.last_error.is_none(),
            after == LaneState::Ok,
            "{name}: the error stays while guarded"
        );
        let reachable_again = matches!(
            s.report,
            Report::Synced {
                reachable_again: true,
                ..
            }
        );
        assert_eq!(reachable_again, !events.is_empty(), "{name}");
    }
}

#[test]
fn only_a_forced_full_sync_records_the_filesystem() {
    for (reason, result, recorded) in [
        (FullSyncReason::Forced, RunResult::Exited(0), true),
        (FullSyncReason::Forced, RunResult::Exited(24), true),
        (FullSyncReason::Forced, RunResult::Exited(10), false),
        (FullSyncReason::Forced, guard(&[], false), false),
        (FullSyncReason::Scheduled, RunResult::Exited(0), false),
        (FullSyncReason::Initial, RunResult::Exited(0), false),
    ] {
        let ended = end(
            health(LaneState::Ok),
            full_sync(reason, &[]),
            result.clone(),
            "",
        );
        assert_eq!(
            ended.settlement.record_filesystem, recorded,
            "{reason:?} {result:?}"
        );
    }
}

#[test]
fn failures_back_off_and_retry_the_whole_job() {
    use Action::*;
    // (name, prior failures, job, result, stderr, state after, events, journal, retry)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        &str,
        u32,
        Job,
        RunResult,
        &str,
        LaneState,
        Vec<&str>,
        Vec<&str>,
        &str,
    )> = vec![
        (
            "a first transient failure is not recorded yet",
            0,
            batch(&[("a", Sync), ("b", Remove { dir: false })]),
            RunResult::Exited(10),
            "rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)\n",
            LaneState::Backoff,
            vec!["SyncFailed(a,10)", "StateChanged(backoff)"],
            vec![],
            "paths[a,b]",
        ),
        (
            "the second failure in a row is recorded",
            1,
            batch(&[("a", Sync)]),
            RunResult::Exited(12),
            "",
            LaneState::Backoff,
            vec!["SyncFailed(a,12)"],
            vec!["record[a]=12"],
            "paths[a]",
        ),
        (
            "a fatal failure is recorded at once and the lane is failing",
            0,
            batch(&[("a", Sync)]),
            RunResult::Exited(5),
            "@ERROR: auth failed on module www\n",
            LaneState::Failing,
            vec!["SyncFailed(a,5)", "StateChanged(failing)"],
            vec!["record[a]=5"],
            "paths[a]",
        ),
        (
            "a killed rsync is retried",
            0,
            batch(&[("a", Sync)]),
            RunResult::Signaled(9),
            "",
            LaneState::Backoff,
            vec!["SyncFailed(a,-1)", "StateChanged(backoff)"],
            vec![],
            "paths[a]",
        ),
        (
            "rsync missing is fatal",
            0,
            batch(&[("a", Sync)]),
            RunResult::SpawnFailed {
                kind: std::io::ErrorKind::NotFound,
                message: "No such file or directory".into(),
            },
            "",
            LaneState::Failing,
            vec!["SyncFailed(a,-1)", "StateChanged(failing)"],
            vec!["record[a]=-1"],
            "paths[a]",
        ),
        (
            "a failed full sync is retried as a full sync with what rode along",
            3,
            full_sync(FullSyncReason::Initial, &[("x", Sync)]),
            RunResult::Exited(10),
            "",
            LaneState::Backoff,
            vec!["SyncFailed(x,10)"],
            vec!["record[x]=10"],
            "full+[x]",
        ),
        (
            "exit 23 on a full sync backs off like any failure (no paths to split)",
            0,
            full_sync(FullSyncReason::Scheduled, &[]),
            RunResult::Exited(23),
            CLOSING_23,
            LaneState::Backoff,
            vec!["SyncFailed(,23)", "StateChanged(backoff)"],
            vec![],
            "full+[]",
        ),
    ];
    for (name, prior, job, result, stderr, after, events, ops, retry) in table {
        let mut start = health(if prior > 0 {
            LaneState::Backoff
        } else {
            LaneState::Ok
        });
        for _ in 0..prior {
            start.backoff.failure(Instant::now(), ExitClass::Retryable);
        }
        let code = result.code();
        let ended = end(start, job, result, stderr);
        let s = &ended.settlement;
        assert!(!s.succeeded && s.error, "{name}");
        assert_eq!(ended.health.state, after, "{name}");
        assert_eq!(event_kinds(&s.events), events, "{name}");
        assert_eq!(journal(&s.journal), ops, "{name}");
        assert!(s.delivered.is_empty(), "{name}");
        let (got_retry, defer) = queue_side(&ended);
        assert_eq!(got_retry.as_deref(), Some(retry), "{name}");
        assert!(defer.is_empty(), "{name}");
        let (_, at) = s.retry.as_ref().expect("retry");
        assert!(*at > ended.now, "{name}: not before the backoff");
        assert_eq!(ended.health.backoff.failures(), prior + 1, "{name}");
        assert!(ended.health.last_error.is_some(), "{name}");
        match &s.report {
            Report::Failed {
                code: reported,
                fatal,
                ..
            } => {
                assert_eq!(*reported, code, "{name}");
                assert_eq!(*fatal, after == LaneState::Failing, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn partial_failures_defer_what_failed_and_let_the_lane_go_on() {
    use Action::*;
    let a_b_c = || batch(&[("a", Sync), ("b", Sync), ("c", Remove { dir: false })]);
    let named_b = format!("{}{CLOSING_23}", unreadable("b"));
    let garbled = format!("something rsync never said\n{CLOSING_23}");
    // (name, job, stderr, truncated, unexplained before, events, journal, deferred (paths, s),
    //  split, unexplained after)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        &str,
        Job,
        String,
        bool,
        u32,
        Vec<&str>,
        Vec<&str>,
        Vec<(Vec<&str>, u64)>,
        bool,
        u32,
    )> = vec![
        (
            "the path rsync named is retried alone and recorded; the rest is delivered",
            a_b_c(),
            named_b.clone(),
            false,
            5,
            vec!["SyncFailed(b,23)"],
            vec!["record[b]=23", "clear[a,c]"],
            vec![(vec!["b"], 15)],
            false,
            5,
        ),
        (
            "unknown which: the batch is tried again in halves, nothing recorded",
            a_b_c(),
            garbled.clone(),
            false,
            0,
            vec![],
            vec!["clear[]"],
            vec![(vec!["a"], 2), (vec!["b", "c"], 2)],
            true,
            1,
        ),
        (
            "a cut stderr cannot name every path: halves",
            a_b_c(),
            named_b.clone(),
            true,
            0,
            vec![],
            vec!["clear[]"],
            vec![(vec!["a"], 2), (vec!["b", "c"], 2)],
            true,
            1,
        ),
        (
            "a single path that fails unexplained is that path",
            batch(&[("a", Sync)]),
            garbled.clone(),
            false,
            0,
            vec!["SyncFailed(a,23)"],
            vec!["record[a]=23", "clear[]"],
            vec![(vec!["a"], 15)],
            false,
            0,
        ),
    ];
    for (name, job, stderr, truncated, before, events, ops, deferred, split, after) in table {
        let mut start = health(LaneState::Ok);
        start.unexplained_partials = before;
        let mut health = start;
        let now = Instant::now();
        let settlement = settle(
            &mut health,
            LABEL,
            Outcome {
                job,
                result: RunResult::Exited(23),
                stderr,
                stderr_truncated: truncated,
                elapsed: Duration::ZERO,
                bytes_sent: 0,
                large: Vec::new(),
                pulled_over_removals: Vec::new(),
            },
            || vec![ROOT.to_vec()],
            Clock {
                now,
                wall: SystemTime::now(),
            },
        );
        let ended = Ended {
            health,
            settlement,
            now,
            wall: SystemTime::now(),
        };
        let s = &ended.settlement;
        assert!(!s.succeeded && s.error, "{name}");
        assert_eq!(
            ended.health.state,
            LaneState::Ok,
            "{name}: the lane goes on"
        );
        assert_eq!(ended.health.backoff.failures(), 0, "{name}: no backoff");
        assert_eq!(ended.health.unexplained_partials, after, "{name}");
        assert_eq!(event_kinds(&s.events), events, "{name}");
        assert_eq!(journal(&s.journal), ops, "{name}");
        let want: Vec<(Vec<String>, u64)> = deferred
            .iter()
            .map(|(p, secs)| (p.iter().map(|s| s.to_string()).collect(), *secs))
            .collect();
        // What did not fail arrived: counted, and handed to the after-sync plugin.
        assert_eq!(paths(&s.delivered), cleared(&ops), "{name}");
        assert!(!s.whole_root, "{name}");
        assert_eq!(queue_side(&ended), (None, want), "{name}");
        assert!(
            matches!(s.report, Report::Partial { split: got, .. } if got == split),
            "{name}: {:?}",
            s.report
        );
    }
}

#[test]
fn endless_unexplained_partials_fall_back_to_backoff() {
    let mut start = health(LaneState::Ok);
    start.unexplained_partials = MAX_UNEXPLAINED_PARTIALS;
    let stderr = format!("something rsync never said\n{CLOSING_23}");
    let ended = end(
        start,
        batch(&[("a", Action::Sync), ("b", Action::Sync)]),
        RunResult::Exited(23),
        &stderr,
    );
    assert_eq!(ended.health.state, LaneState::Backoff);
    assert_eq!(queue_side(&ended), (Some("paths[a,b]".to_owned()), vec![]));
    assert_eq!(ended.health.unexplained_partials, MAX_UNEXPLAINED_PARTIALS);
}

#[test]
fn guard_refusals_hold_the_deletions_back() {
    use Action::*;
    // (name, state before, job, result, events, journal, deferred (paths, s), guarded full
    //  sync, hold)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        &str,
        LaneState,
        Job,
        RunResult,
        Vec<&str>,
        Vec<&str>,
        Vec<(Vec<&str>, u64)>,
        bool,
        bool,
    )> = vec![
        (
            "a batch's deletions are held, its sends delivered",
            LaneState::Ok,
            batch(&[
                ("a", Sync),
                ("b", Remove { dir: false }),
                ("d", Remove { dir: true }),
            ]),
            guard(&["b", "d"], false),
            vec!["SyncFailed(b,-1)", "StateChanged(guarded)"],
            vec!["record[b,d]=-1", "clear[a]"],
            vec![(vec!["b", "d"], 10)],
            false,
            false,
        ),
        (
            "held again: no new state change",
            LaneState::Guarded,
            batch(&[("b", Remove { dir: false })]),
            guard(&["b"], false),
            vec!["SyncFailed(b,-1)"],
            vec!["record[b]=-1", "clear[]"],
            vec![(vec!["b"], 10)],
            false,
            false,
        ),
        (
            "a held full sync is recorded as the root's; what rode along goes on at once",
            LaneState::Ok,
            full_sync(FullSyncReason::Scheduled, &[("x", Sync)]),
            guard(&[], true),
            vec!["SyncFailed(,-1)", "StateChanged(guarded)"],
            vec!["record[]=-1"],
            vec![(vec!["x"], 0)],
            true,
            true,
        ),
    ];
    for (name, before, job, result, events, ops, deferred, full, hold) in table {
        let ended = end(health(before), job, result, "");
        let s = &ended.settlement;
        assert!(!s.succeeded && s.error, "{name}");
        assert_eq!(ended.health.state, LaneState::Guarded, "{name}");
        assert_eq!(
            ended.health.last_error.as_ref().map(|e| e.summary.as_str()),
            Some(GUARD_SUMMARY),
            "{name}"
        );
        assert_eq!(event_kinds(&s.events), events, "{name}");
        assert_eq!(journal(&s.journal), ops, "{name}");
        let want: Vec<(Vec<String>, u64)> = deferred
            .iter()
            .map(|(p, secs)| (p.iter().map(|s| s.to_string()).collect(), *secs))
            .collect();
        assert_eq!(queue_side(&ended), (None, want), "{name}");
        assert_eq!(
            s.guarded_full_sync
                .map(|(reason, at)| (reason, (at - ended.now).as_secs())),
            full.then_some((FullSyncReason::Scheduled, GUARD_RETRY.as_secs())),
            "{name}"
        );
        assert_eq!(s.hold_deletions.is_some(), hold, "{name}");
        // A batch's sends went through; a held full sync delivered nothing.
        assert_eq!(paths(&s.delivered), cleared(&ops), "{name}");
        assert!(
            matches!(s.report, Report::Guarded { newly, .. } if newly == (before != LaneState::Guarded)),
            "{name}"
        );
    }
}

#[test]
fn the_public_summary_never_quotes_rsync() {
    let ended = end(
        health(LaneState::Ok),
        batch(&[("secret-name", Action::Sync)]),
        RunResult::Exited(23),
        &format!("{}{CLOSING_23}", unreadable("secret-name")),
    );
    let Event::SyncFailed {
        summary, message, ..
    } = &ended.settlement.events[0]
    else {
        panic!("{:?}", ended.settlement.events);
    };
    assert!(message.contains("secret-name"), "{message}");
    assert!(!summary.contains("secret-name"), "{summary}");
    let error = ended.health.last_error.expect("last error");
    assert!(!error.summary.contains("secret-name"), "{}", error.summary);
}
