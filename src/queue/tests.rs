//! Table tests: sequences of changes and job completions → the batches that come out.
//!
//! Script language, one step per string:
//! - `S path` sync, `F path` remove file, `D path` remove directory (pushed to root 0)
//! - `take` takes the next job of lane 0 and compares it with the next expected batch
//! - `ok` finishes lane 0's job successfully; `fail` finishes it with a retry of the whole
//!   batch that was taken last, due at once
//! - `full` asks for a full sync of root 0
//! - `cap N` caps the pending paths per lane at N
//!
//! Expected batches are written as `"path:act path:act"` with act one of `S F D R T` (R =
//! replace, T = dirty directory), `FULL` for a full sync, or `-` for "no job".

use super::*;

use super::codes::{action_of, code_of};

fn render(job: Option<Job>) -> String {
    match job {
        None => "-".to_owned(),
        Some(Job::FullSync { .. }) => "FULL".to_owned(),
        Some(Job::Batch(batch)) => batch
            .entries
            .iter()
            .map(|(path, action)| format!("{}:{}", String::from_utf8_lossy(path), code_of(*action)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Runs `script`, each `take` a [`HOT_INTERVAL`] after the one before (the hot-file hold
/// has its own table, with [`run_timed`]).
fn run(script: &[&str], max_batch: usize) -> Vec<String> {
    run_clocked(script, max_batch, HOT_INTERVAL)
}

/// Runs `script` with an explicit clock: `at MS` sets it (milliseconds from the start);
/// `cools` outputs when a lane that waits for hot files may go on.
fn run_timed(script: &[&str]) -> Vec<String> {
    run_clocked(script, DEFAULT_MAX_BATCH, Duration::ZERO)
}

/// The steps of both: `take` (after advancing the clock by `per_take`), `ok`, `fail`,
/// `partial` (done but for its paths, deferred 15 s), `full` (scheduled), `rescan` (a full sync for lost changes), `observe` (the next
/// observation stamp), `oldest` (the stamp of the lane's oldest undelivered change),
/// `cap N`, `at MS`, `cools`, or `CODE path`.
fn run_clocked(script: &[&str], max_batch: usize, per_take: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut now = start;
    let mut queue = Queue::new(&[(0, 0)], max_batch, Instant::now());
    let mut last_batch: Option<Batch> = None;
    let mut last_full: Option<(FullSyncReason, Vec<(RelPath, Action)>)> = None;
    let mut last_large: Option<Vec<(RelPath, Action)>> = None;
    let mut out = Vec::new();
    for step in script {
        match *step {
            "take" => {
                now += per_take;
                let job = queue.take_job(0, now);
                match &job {
                    Some(Job::Batch(batch)) => {
                        last_batch = Some(batch.clone());
                        last_full = None;
                    }
                    Some(Job::FullSync { reason, then, .. }) => {
                        last_full = Some((*reason, then.clone()));
                        last_batch = None;
                    }
                    None => {}
                }
                out.push(render(job));
            }
            "ok" => {
                queue.finish(0, None);
            }
            "fail" => {
                let retry = match last_full.take() {
                    Some((reason, then)) => Retry::FullSync { reason, then },
                    None => Retry::Paths(last_batch.take().map(|b| b.entries).unwrap_or_default()),
                };
                queue.finish(0, Some((retry, now)));
            }
            "partial" => {
                // Done except for every path of the batch, tried again in 15 s.
                let entries = last_batch.take().map(|b| b.entries).unwrap_or_default();
                let since = queue.finish(0, None);
                queue.defer(0, entries, now + Duration::from_secs(15), since);
            }
            "take large" => out.push(match queue.take_large_job(0, now) {
                Some(job) => format!("L {}", render(Some(job))),
                None => "L -".to_owned(),
            }),
            "large ok" => {
                queue.finish_large(0, None);
            }
            "large fail" => {
                // Every large file again, in 1 s.
                let entries = last_large.take().unwrap_or_default();
                queue.finish_large(
                    0,
                    Some((Retry::Paths(entries), now + Duration::from_secs(1))),
                );
            }
            "full" => queue.request_full_sync(0, FullSyncReason::Scheduled),
            "rescan" => queue.request_full_sync(0, FullSyncReason::Rescan),
            "observe" => {
                queue.observe(now);
            }
            "oldest" => out.push(match queue.lane_oldest(0) {
                Some(seen) => format!("oldest {}", seen.seq),
                None => "oldest -".to_owned(),
            }),
            "cools" => out.push(match queue.lane_cools_at(0) {
                Some(at) => format!("cools {}", (at - start).as_millis()),
                None => "cools -".to_owned(),
            }),
            other if other.starts_with("ok handing ") => {
                // The batch is done but for these large files, handed over.
                let handed: Vec<(RelPath, Action)> = other["ok handing ".len()..]
                    .split(',')
                    .map(|path| (path.as_bytes().to_vec(), Action::Sync))
                    .collect();
                let since = queue.finish(0, None);
                last_large = Some(handed.clone());
                queue.hand_large(0, handed, since);
            }
            other if other.starts_with("cap ") => {
                queue.set_max_pending(other[4..].parse().expect("cap N"));
            }
            other if other.starts_with("at ") => {
                now = start + Duration::from_millis(other[3..].parse().expect("at MS"));
            }
            other => {
                let (code, path) = other.split_once(' ').expect("step is `CODE path`");
                queue.push(0, path.as_bytes(), action_of(code));
            }
        }
    }
    out
}

/// How the queue knows the oldest change a lane has not delivered, whatever happened to
/// it: (name, max batch, script, outputs of each `take` and `oldest`).
const OLDEST_ROWS: &[(&str, usize, &[&str], &[&str])] = &[
    (
        "a change is owed from when it was seen until its batch is done",
        100,
        &[
            "observe", "S a", "oldest", "take", "oldest", "observe", "oldest", "ok", "oldest",
        ],
        &["oldest 1", "a:S", "oldest 1", "oldest 1", "oldest -"],
    ),
    (
        "a newer change to the same path does not make a failed batch look younger",
        100,
        &[
            "observe", "S a", "take", "observe", "S a", "S b", "fail", "oldest", "take", "ok",
            "oldest",
        ],
        &["a:S", "oldest 1", "a:S b:S", "oldest -"],
    ),
    (
        "what a partial take leaves keeps the oldest stamp (older than the truth is safe)",
        1,
        &[
            "observe", "S a", "observe", "S b", "take", "ok", "oldest", "take", "ok", "oldest",
        ],
        &["a:S", "oldest 1", "b:S", "oldest -"],
    ),
    (
        "paths deferred after a partial transfer stay owed with their batch's stamp",
        100,
        &[
            "observe", "S a", "take", "partial", "observe", "S b", "take", "ok", "oldest",
        ],
        &["a:S", "b:S", "oldest 1"],
    ),
    (
        "a rescan is owed from when it was asked for until it has run",
        100,
        &[
            "observe", "rescan", "observe", "oldest", "take", "oldest", "ok", "oldest",
        ],
        &["oldest 1", "FULL", "oldest 1", "oldest -"],
    ),
    (
        "a scheduled full sync owes nothing, but the changes riding with it are owed",
        100,
        &[
            "observe", "full", "oldest", "observe", "S a", "take", "oldest", "ok", "oldest",
        ],
        &["oldest -", "FULL", "oldest 2", "oldest -"],
    ),
    (
        "a failed rescan is owed from its first request",
        100,
        &[
            "observe", "rescan", "take", "observe", "S a", "fail", "oldest",
        ],
        &["FULL", "oldest 1"],
    ),
];

#[test]
fn the_oldest_undelivered_change_is_tracked_through_takes_failures_and_full_syncs() {
    for (name, max_batch, script, want) in OLDEST_ROWS {
        let got = run_clocked(script, *max_batch, Duration::ZERO);
        assert_eq!(got, *want, "{name}");
    }
}

/// (name, script, expected outputs of each `take`)
const ROWS: &[(&str, &[&str], &[&str])] = &[
    (
        "over the cap, the deepest level that leaves half of it",
        &[
            "cap 4", "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "take",
        ],
        &["a:T x:S"],
    ),
    (
        "under the cap nothing is folded",
        &[
            "cap 5", "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "take",
        ],
        &["a/b/1:S a/b/2:S a/b/3:S a/c/1:S x:S"],
    ),
    (
        "one level up is enough",
        &[
            "cap 6", "S a/b/1", "S a/b/2", "S a/b/3", "S a/c/1", "S x", "S a/b/4", "S a/b/5",
            "take",
        ],
        &["a/b:T a/c:T x:S"],
    ),
    (
        "changes below a dirty directory are absorbed by it",
        &[
            "cap 4", "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "S a/new", "D a/b",
            "F a/c/1", "take",
        ],
        &["a:T x:S"],
    ),
    (
        "a dirty directory's own entry joins it",
        &["cap 4", "S a", "S a/1", "S a/2", "S b", "S a/3", "take"],
        &["a:T b:S"],
    ),
    (
        "a dirty directory removed, then recreated",
        &[
            "cap 4", "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "D a", "take", "ok",
            "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "D a", "S a", "take",
        ],
        &["a:D x:S", "a:R x:S"],
    ),
    (
        "folded into the root: everything below it",
        &["cap 2", "S a", "S b", "S c", "S d/e", "take"],
        &[":T"],
    ),
    (
        "a failed dirty batch comes back as it was",
        &[
            "cap 4", "S a/b/1", "S a/b/2", "S a/c/1", "S x", "S a/b/3", "take", "fail", "S a/b/4",
            "S y", "take",
        ],
        &["a:T x:S", "a:T x:S y:S"],
    ),
    ("single sync", &["S a", "take"], &["a:S"]),
    ("nothing pending", &["take"], &["-"]),
    (
        "create+modify+close_write coalesce",
        &["S a", "S a", "S a", "take"],
        &["a:S"],
    ),
    ("update then delete file", &["S a", "F a", "take"], &["a:F"]),
    (
        "delete then recreate file",
        &["F a", "S a", "take"],
        &["a:S"],
    ),
    (
        "dir removed then recreated",
        &["D d", "S d", "take"],
        &["d:R"],
    ),
    (
        "replace then removed again",
        &["D d", "S d", "F d", "take"],
        &["d:D"],
    ),
    (
        "replace stays replace on sync",
        &["D d", "S d", "S d", "take"],
        &["d:R"],
    ),
    (
        "dir removal absorbs children",
        &["S d/a", "S d/b/c", "S e", "D d", "take"],
        &["d:D e:S"],
    ),
    (
        "removal does not absorb siblings with same prefix",
        &["S d0", "S d.x", "S d-1/a", "D d", "take"],
        &["d:D d-1/a:S d.x:S d0:S"],
    ),
    (
        "children after removal survive",
        &["D d", "S d", "S d/new", "take"],
        &["d:R d/new:S"],
    ),
    (
        "parents sort before children",
        &["S a/b/c", "S a/b", "S a", "take"],
        &["a:S a/b:S a/b/c:S"],
    ),
    ("root path", &["S ", "take"], &[":S"]),
    (
        "busy lane forms the next batch",
        &["S a", "take", "S b", "S a", "take", "ok", "take"],
        &["a:S", "-", "a:S b:S"],
    ),
    (
        "nothing after ok",
        &["S a", "take", "ok", "take"],
        &["a:S", "-"],
    ),
    (
        "failed batch is retried",
        &["S a", "S b", "take", "fail", "take"],
        &["a:S b:S", "a:S b:S"],
    ),
    (
        "failed batch merges with newer change",
        &["S a", "take", "F a", "fail", "take"],
        &["a:S", "a:F"],
    ),
    (
        "failed dir removal then recreated",
        &["D d", "take", "S d", "fail", "take"],
        &["d:D", "d:R"],
    ),
    (
        "failed sync merges under newer dir removal",
        &["S d/x", "take", "D d", "fail", "take"],
        &["d/x:S", "d:D d/x:S"],
    ),
    (
        "full sync drops pending paths",
        &["S a", "full", "take", "S b", "take", "ok", "take"],
        &["FULL", "-", "b:S"],
    ),
    (
        "full sync waits for busy lane",
        &["S a", "take", "full", "take", "ok", "take"],
        &["a:S", "-", "FULL"],
    ),
    ("remove file twice", &["F a", "F a", "take"], &["a:F"]),
    (
        "file removed then dir removed at same path",
        &["F a", "D a", "take"],
        &["a:D"],
    ),
    (
        "invalid utf-8 and newline names are plain bytes",
        &["S a\nb", "S a b", "take"],
        &["a\nb:S a b:S"],
    ),
    (
        "two-way: the peer's file voids a pending write, not a pending removal",
        &[
            "S a", "C b", "A a", "A b", "R d", "A d", "F e", "A e", "take",
        ],
        &["d:R e:F"],
    ),
    (
        "two-way: an arrival sends nothing",
        &["A a", "take"],
        &["-"],
    ),
];

/// Large files ([`Queue::hand_large`]): (name, script, outputs). `ok handing P,Q` ends the
/// batch with P and Q handed over; `take large` (`L …`), `large ok` and `large fail`
/// (retried in 1 s) drive the large-file run.
const LARGE_ROWS: &[(&str, &[&str], &[&str])] = &[
    (
        "a large file goes in a run of its own while the lane's batches go on",
        &[
            "S big",
            "S a",
            "take",
            "ok handing big",
            "S b",
            "take",
            "take large",
            "ok",
            "S c",
            "take",
            "ok",
            "large ok",
            "take",
            "take large",
        ],
        &["a:S big:S", "b:S", "L big:S", "c:S", "-", "L -"],
    ),
    (
        "a new version of a large file in flight waits for the large run",
        &[
            "S big",
            "take",
            "ok handing big",
            "take large",
            "S big",
            "S a",
            "take",
            "ok",
            "take",
            "large ok",
            "take",
        ],
        &["big:S", "L big:S", "a:S", "-", "big:S"],
    ),
    (
        "a removal above a large file waits for it; other paths and a send of the \
         directory itself do not",
        &[
            "S d/big",
            "take",
            "ok handing d/big",
            "take large",
            "D d",
            "S e",
            "take",
            "ok",
            "take",
            "large ok",
            "take",
        ],
        &["d/big:S", "L d/big:S", "e:S", "-", "d:D"],
    ),
    (
        "the attributes of a large file's directory go out at once",
        &[
            "S d/big",
            "take",
            "ok handing d/big",
            "take large",
            "S d",
            "take",
        ],
        &["d/big:S", "L d/big:S", "d:S"],
    ),
    (
        "a dirty directory or the root above a waiting large file waits too",
        &[
            "S d/big",
            "take",
            "ok handing d/big",
            "T d",
            "take",
            "take large",
            "large ok",
            "take",
        ],
        &["d/big:S", "-", "L d/big:S", "d:T"],
    ),
    (
        "what appears below a large file that became a directory waits",
        &[
            "S f",
            "take",
            "ok handing f",
            "take large",
            "S f/x",
            "take",
            "large ok",
            "take",
        ],
        &["f:S", "L f:S", "-", "f/x:S"],
    ),
    (
        "a full sync waits for the large run, then takes the waiting large files along",
        &[
            "S big",
            "take",
            "ok handing big",
            "take large",
            "S big2",
            "take",
            "ok handing big2",
            "full",
            "take",
            "large ok",
            "take",
            "take large",
            "ok",
            "take large",
        ],
        &["big:S", "L big:S", "big2:S", "-", "FULL", "L -", "L -"],
    ),
    (
        "an owed full sync starts once the large run in flight ends, before the next one",
        &[
            "S big",
            "take",
            "ok handing big",
            "take large",
            "S big2",
            "take",
            "ok handing big2",
            "full",
            "take large",
            "large ok",
            "take large",
            "take",
        ],
        &["big:S", "L big:S", "big2:S", "L -", "L -", "FULL"],
    ),
    (
        "a failed large run backs off on its own while the lane's batches go on",
        &[
            "at 0",
            "S big",
            "take",
            "ok handing big",
            "take large",
            "large fail",
            "S a",
            "take",
            "ok",
            "take large",
            "at 5000",
            "take large",
        ],
        &["big:S", "L big:S", "a:S", "L -", "L big:S"],
    ),
    (
        "a large file is owed until its run is done",
        &[
            "observe",
            "S big",
            "take",
            "ok handing big",
            "oldest",
            "take large",
            "oldest",
            "large ok",
            "oldest",
        ],
        &["big:S", "oldest 1", "L big:S", "oldest 1", "oldest -"],
    ),
];

#[test]
fn large_files_run_beside_the_batches_and_never_share_a_path_with_them() {
    for (name, script, expected) in LARGE_ROWS {
        assert_eq!(run(script, DEFAULT_MAX_BATCH), *expected, "{name}");
    }
}

#[test]
fn undelivered_includes_waiting_large_files() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(0, 0)], DEFAULT_MAX_BATCH, now);
    queue.push(0, b"big", Action::Sync);
    assert!(queue.take_job(0, now).is_some());
    let since = queue.finish(0, None);
    queue.hand_large(0, vec![(b"big".to_vec(), Action::Sync)], since);
    queue.push(0, b"a", Action::Sync);
    assert_eq!(
        queue.undelivered(0),
        vec![
            (b"a".to_vec(), Action::Sync),
            (b"big".to_vec(), Action::Sync)
        ]
    );
    assert_eq!(queue.lane_depth(0), 2);
    assert!(queue.lane_has_work(0));
}

#[test]
fn coalescing_table() {
    assert!(ROWS.len() >= 20);
    for (name, script, expected) in ROWS {
        let got = run(script, DEFAULT_MAX_BATCH);
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, expected, "row `{name}`");
    }
}

#[test]
fn batches_are_bounded() {
    let script = [
        "S a", "S b", "S c", "S d", "S e", "take", "ok", "take", "ok", "take",
    ];
    assert_eq!(run(&script, 2), vec!["a:S b:S", "c:S d:S", "e:S"]);
}

#[test]
fn lanes_progress_independently() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(0, 0), (1, 0), (2, 1)], 100, Instant::now());
    queue.push(0, b"x", Action::Sync);
    queue.push(1, b"y", Action::Sync);
    let first = queue.take_job(0, now).expect("lane 0 has work");
    assert_eq!(render(Some(first)), "x:S");
    // Lane 0 fails and backs off; lane 1 (same root, other remote) is not affected.
    queue.finish(
        0,
        Some((
            Retry::Paths(vec![(b"x".to_vec(), Action::Sync)]),
            now + std::time::Duration::from_secs(5),
        )),
    );
    assert!(queue.take_job(0, now).is_none(), "lane 0 backs off");
    assert_eq!(render(queue.take_job(1, now)), "x:S");
    assert_eq!(render(queue.take_job(2, now)), "y:S");
    let later = now + std::time::Duration::from_secs(6);
    assert_eq!(render(queue.take_job(0, later)), "x:S");
}

#[test]
fn paused_queue_keeps_coalescing() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.set_paused(true);
    queue.push(0, b"a", Action::Sync);
    queue.push(0, b"a", Action::Remove { dir: false });
    assert!(queue.take_job(0, now).is_none());
    assert_eq!(queue.depth(), 1);
    queue.set_paused(false);
    assert_eq!(render(queue.take_job(0, now)), "a:F");
}

#[test]
fn million_events_on_few_paths_stay_small() {
    let mut queue = Queue::new(&[(0, 0)], DEFAULT_MAX_BATCH, Instant::now());
    for i in 0..1_000_000u32 {
        let path = format!("dir{}/file{}", i % 10, i % 1000);
        queue.push(0, path.as_bytes(), Action::Sync);
    }
    assert_eq!(queue.depth(), 1000);
}

#[test]
fn deferred_paths_wait_without_blocking_the_lane() {
    let now = Instant::now();
    let later = now + std::time::Duration::from_secs(10);
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.push(0, b"bad", Action::Sync);
    queue.push(0, b"good", Action::Sync);
    assert_eq!(render(queue.take_job(0, now)), "bad:S good:S");
    queue.finish(0, None);
    queue.defer(0, vec![(b"bad".to_vec(), Action::Sync)], later, None);
    queue.push(0, b"next", Action::Sync);
    assert_eq!(
        render(queue.take_job(0, now)),
        "next:S",
        "the lane keeps going"
    );
    queue.finish(0, None);
    assert!(queue.take_job(0, now).is_none());
    assert_eq!(queue.lane_next_deferred(0), Some(later));
    queue.push(0, b"bad", Action::Remove { dir: false });
    assert_eq!(
        render(queue.take_job(0, later)),
        "bad:F",
        "newer removal wins over the retry"
    );
}

/// A retry that comes due runs as a batch of its own (with any newer action for its own
/// paths), so a path that keeps failing cannot take fresh changes down with it; retries
/// split apart stay apart.
#[test]
fn a_due_retry_runs_alone_and_split_retries_stay_apart() {
    let now = Instant::now();
    let later = now + std::time::Duration::from_secs(10);
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.defer(
        0,
        vec![
            (b"a1".to_vec(), Action::Sync),
            (b"a2".to_vec(), Action::Sync),
        ],
        later,
        None,
    );
    queue.defer(0, vec![(b"b1".to_vec(), Action::Sync)], later, None);
    queue.push(0, b"fresh", Action::Sync);
    queue.push(0, b"a2", Action::Remove { dir: false });
    assert_eq!(
        render(queue.take_job(0, now)),
        "a2:F fresh:S",
        "nothing due yet"
    );
    queue.finish(0, None);
    queue.push(0, b"fresh2", Action::Sync);
    queue.push(0, b"a1", Action::Remove { dir: false });
    assert_eq!(
        render(queue.take_job(0, later)),
        "a1:F a2:S",
        "the first retry alone, with the newer removal of its own path"
    );
    queue.finish(0, None);
    assert_eq!(
        render(queue.take_job(0, later)),
        "b1:S",
        "the second retry alone"
    );
    queue.finish(0, None);
    assert_eq!(render(queue.take_job(0, later)), "fresh2:S");
}

#[test]
fn expedite_makes_everything_due() {
    let now = Instant::now();
    let later = now + std::time::Duration::from_secs(60);
    let mut queue = Queue::new(&[(0, 0), (1, 0)], 100, Instant::now());
    queue.push(0, b"a", Action::Sync);
    let _ = queue.take_job(0, now);
    queue.finish(
        0,
        Some((Retry::Paths(vec![(b"a".to_vec(), Action::Sync)]), later)),
    );
    queue.defer(1, vec![(b"b".to_vec(), Action::Sync)], later, None);
    assert!(queue.take_job(0, now).is_none());
    assert_eq!(queue.expedite(), 2);
    assert_eq!(render(queue.take_job(0, now)), "a:S");
    assert_eq!(render(queue.take_job(1, now)), "a:S b:S");
}

#[test]
fn rename_hints_ride_with_the_batch_that_holds_both_ends() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.note_rename(0, b"old", b"new");
    queue.note_rename(0, b"x", b"y");
    queue.push(0, b"old", Action::Remove { dir: true });
    queue.push(0, b"new", Action::Sync);
    queue.push(0, b"new/f", Action::Sync);
    let Some(Job::Batch(batch)) = queue.take_job(0, now) else {
        panic!("expected a batch");
    };
    assert_eq!(batch.renames, vec![(b"old".to_vec(), b"new".to_vec())]);
    queue.finish(0, None);
    queue.push(0, b"z", Action::Sync);
    let Some(Job::Batch(batch)) = queue.take_job(0, now) else {
        panic!("expected a batch");
    };
    assert!(batch.renames.is_empty(), "hints do not outlive their batch");
}

fn full_entries(job: Option<Job>) -> (bool, Vec<(Vec<u8>, Action)>) {
    match job {
        Some(Job::FullSync { then, .. }) => (true, then),
        Some(Job::Batch(batch)) => (false, batch.entries),
        None => (false, Vec::new()),
    }
}

/// A full sync takes the pending paths along (they are sent after it); a failed one puts
/// both back.
#[test]
fn a_full_sync_carries_the_pending_paths_and_a_failure_keeps_both() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(7, 0)], 100, Instant::now());
    queue.push(0, b"same-second.txt", Action::Sync);
    queue.push(0, b"gone", Action::Remove { dir: true });
    queue.request_full_sync(0, FullSyncReason::Scheduled);
    let (full, then) = full_entries(queue.take_job(7, now));
    assert!(full);
    assert_eq!(
        then,
        vec![
            (b"gone".to_vec(), Action::Remove { dir: true }),
            (b"same-second.txt".to_vec(), Action::Sync),
        ]
    );
    assert_eq!(queue.depth(), 0);
    assert_eq!(queue.full_sync_owed(7), None);
    queue.push(0, b"newer", Action::Sync);
    queue.finish(
        7,
        Some((
            Retry::FullSync {
                reason: FullSyncReason::Scheduled,
                then,
            },
            now,
        )),
    );
    assert_eq!(queue.full_sync_owed(7), Some(FullSyncReason::Scheduled));
    let (full, then) = full_entries(queue.take_job(7, now));
    assert!(full);
    assert_eq!(then.len(), 3, "{then:?}");
}

/// A reload keeps what a kept lane holds (by id), drops removed lanes, and a new lane
/// starts empty (and paused when the queue is).
#[test]
fn reconfigure_keeps_lanes_by_id() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(1, 0), (2, 1)], 100, Instant::now());
    queue.push(0, b"a", Action::Sync);
    queue.push(1, b"b", Action::Sync);
    queue.request_full_sync(1, FullSyncReason::Rescan);
    let busy = queue.take_job(1, now).expect("lane 1 has work");
    assert_eq!(busy.lane(), 1);
    queue.set_paused(true);
    // Roots swap places; lane 2 goes, lane 3 comes.
    let removed = queue.reconfigure(&[(1, 1), (3, 0)]);
    assert_eq!(removed, vec![2]);
    assert!(queue.lane_busy(1), "the job in flight stays with its lane");
    queue.push(1, b"c", Action::Sync);
    assert_eq!(queue.lane_depth(1), 1, "lane 1 now belongs to root 1");
    assert_eq!(queue.lane_depth(3), 0);
    assert!(queue.take_job(3, now).is_none(), "paused");
    // The outcome of the removed lane's job, if any, finds nothing.
    queue.finish(2, None);
    queue.finish(1, None);
    queue.set_paused(false);
    assert_eq!(render(queue.take_job(1, now)), "c:S");
}

/// What a clean stop saves: pending paths and deferred retries, merged.
#[test]
fn undelivered_includes_deferred_retries() {
    let now = Instant::now();
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.push(0, b"a", Action::Sync);
    let _ = queue.take_job(0, now);
    queue.finish(0, None);
    queue.defer(
        0,
        vec![(b"a".to_vec(), Action::Remove { dir: false })],
        now + std::time::Duration::from_secs(15),
        None,
    );
    queue.push(0, b"b", Action::Sync);
    assert_eq!(
        queue.undelivered(0),
        vec![
            (b"a".to_vec(), Action::Remove { dir: false }),
            (b"b".to_vec(), Action::Sync),
        ]
    );
}

/// Two deferred retries of one path, put back for a clean stop or an operator's retry:
/// the older one first, as the changes happened.
#[test]
fn deferred_retries_of_one_path_are_put_back_in_the_order_they_happened() {
    let now = Instant::now();
    let later = now + std::time::Duration::from_secs(10);
    let removed = Action::Remove { dir: false };
    assert_ne!(
        Action::then(removed, Action::Sync),
        Action::then(Action::Sync, removed),
        "the order must matter for this test to mean anything"
    );
    let mut queue = Queue::new(&[(0, 0)], 100, Instant::now());
    queue.defer(0, vec![(b"p".to_vec(), removed)], later, None);
    queue.defer(0, vec![(b"p".to_vec(), Action::Sync)], later, None);
    assert_eq!(
        queue.undelivered(0),
        vec![(b"p".to_vec(), Action::then(removed, Action::Sync))]
    );
    assert_eq!(queue.expedite(), 2);
    let Some(Job::Batch(batch)) = queue.take_job(0, now) else {
        panic!("a batch");
    };
    assert_eq!(
        batch.entries,
        vec![(b"p".to_vec(), Action::then(removed, Action::Sync))]
    );
}

#[test]
fn a_file_that_keeps_changing_goes_out_once_per_interval_in_its_last_state() {
    // (name, script, outputs of each `take` and `cools`)
    let rows: &[(&str, &[&str], &[&str])] = &[
        (
            "a quiet file at once; again within the interval: at its end",
            &[
                "at 0", "S f", "take", "ok", "at 100", "S f", "take", "cools", "at 200", "S f",
                "take", "at 499", "take", "at 500", "take", "ok", "cools",
            ],
            &["f:S", "-", "cools 500", "-", "-", "f:S", "cools -"],
        ),
        (
            "a run that goes anyway (another path) takes it along: no extra run",
            &[
                "at 0", "S f", "take", "ok", "at 100", "S f", "S g", "take", "ok", "take",
                "at 500", "take",
            ],
            &["f:S", "f:S g:S", "-", "-"],
        ),
        (
            "a change to another path wakes a lane that only waited for hot files",
            &[
                "at 0", "S f", "take", "ok", "at 100", "S f", "take", "at 150", "S g", "take",
            ],
            &["f:S", "-", "f:S g:S"],
        ),
        (
            "removals, replacements and dirty directories never wait",
            &[
                "at 0", "S f", "S d", "take", "ok", "at 100", "F f", "R d", "take", "ok", "S f",
                "at 200", "T f", "take",
            ],
            &["d:S f:S", "d:R f:F", "f:T"],
        ),
        (
            "a full sync takes the hot file along",
            &["at 0", "S f", "take", "ok", "at 100", "S f", "full", "take"],
            &["f:S", "FULL"],
        ),
        (
            "what did not get through is tried again without waiting",
            &["at 0", "S f", "take", "fail", "at 10", "take"],
            &["f:S", "f:S"],
        ),
        (
            "the interval counts from the last send, and doubles while the file keeps changing",
            &[
                "at 0", "S f", "take", "ok", "at 400", "S f", "take", "at 500", "take", "ok",
                "at 600", "S f", "take", "at 1000", "take", "at 1499", "take", "at 1500", "take",
                "ok", "at 1600", "S f", "at 2499", "take", "at 2500", "take", "ok",
            ],
            &["f:S", "-", "f:S", "-", "-", "-", "f:S", "-", "f:S"],
        ),
        (
            "a file quiet for a whole interval is held the shortest interval again",
            &[
                "at 0", "S f", "take", "ok", "at 100", "S f", "at 500", "take", "ok", "at 2600",
                "S f", "take", "ok", "at 2700", "S f", "at 3099", "take", "at 3100", "take",
            ],
            &["f:S", "f:S", "f:S", "-", "f:S"],
        ),
    ];
    for (name, script, expected) in rows {
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(run_timed(script), expected, "row `{name}`");
    }
}

#[test]
fn a_file_rewritten_a_hundred_times_a_second_for_ten_seconds_costs_about_a_dozen_runs() {
    let start = Instant::now();
    let mut queue = Queue::new(&[(0, 0)], DEFAULT_MAX_BATCH, Instant::now());
    let mut runs = 0;
    let mut last_sent = None;
    for tick in 0..1000u64 {
        let now = start + std::time::Duration::from_millis(tick * 10);
        queue.push(0, b"hot.dat", Action::Sync);
        queue.push(0, b"app.log", Action::Sync);
        if queue.take_job(0, now).is_some() {
            runs += 1;
            last_sent = Some(tick);
            queue.finish(0, None);
        }
    }
    // Quiet now: the last state goes out once the interval is over.
    let end = start + std::time::Duration::from_millis(10_000) + HOT_INTERVAL_MAX;
    assert!(queue.take_job(0, end).is_some(), "the final state is sent");
    runs += 1;
    // At once, after 0.5 s, then every second: 0, 0.5, 1.5, ... 9.5, and the end.
    assert!(
        (11..=13).contains(&runs),
        "{runs} runs (last at tick {last_sent:?})"
    );
    assert_eq!(queue.depth(), 0);
}
