//! Table tests: (job, facts, results of its runs) → the runs the plan asks for, in order,
//! and what the job amounts to.
//!
//! A batch is written as `"path:ACT=LOCAL ..."` (sorted by path, the root as the empty
//! path): ACT one of `S F D R T` (sync, remove file, remove directory, replace, dirty
//! directory), LOCAL what is at the path when the job runs: `f` a file (or symlink), `L` a
//! file of 1 GiB (at or above `<queue largeFiles>`, 1 MiB here), `d` a directory, `-`
//! nothing, `x` below a file or symlink.
//!
//! A run is rendered as `where: argv < stdin` (`>` at the end: its stdout is read; `&`
//! in front: one of runs started at once), `where` being `root`, `in DIR` or
//! `skeleton[DIRS]`. The transport options every run carries are left out (and those that
//! make a run report the bytes it sent: which runs carry them is `argv`'s table), the
//! destination is `DEST/`, and three option groups are abbreviated: `SEND` (a batch's
//! listed send run), `DELETE` (a deletion run from a skeleton, rules on stdin) and
//! `TREES` (dirty directories synced recursively).

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::config::{DeleteGuard, ExcludeRegex};
use crate::queue::FullSyncReason::{self, *};
use crate::queue::codes::action_of;

const DESTINATION: &str = "rsync://127.0.0.1/web/";

/// What a run ends with, in the order the plan starts them (then exit 0).
#[derive(Debug, Clone, Copy)]
enum R {
    Exit(i32),
    /// Exit 23 with a line on stderr.
    Partial(&'static str),
    Signal(i32),
    NoSpawn,
    /// Exit 5: the module's `max connections`.
    MaxConnections,
    /// Exit 0 with this on stdout.
    Prints(&'static str),
    /// Exit 23 with this on stdout.
    PrintsPartial(&'static str),
}

impl R {
    fn run(self) -> Run {
        let with = |result, stderr: &str, stdout: &str| Run {
            result,
            stderr: stderr.to_owned(),
            truncated: false,
            stdout: stdout.as_bytes().to_vec(),
        };
        match self {
            R::Exit(code) => with(RunResult::Exited(code), "", ""),
            R::Partial(line) => with(RunResult::Exited(23), line, ""),
            R::Signal(signal) => with(RunResult::Signaled(signal), "", ""),
            R::NoSpawn => with(
                RunResult::SpawnFailed {
                    kind: std::io::ErrorKind::NotFound,
                    message: "cannot run rsync".into(),
                },
                "",
                "",
            ),
            R::MaxConnections => with(
                RunResult::Exited(5),
                "@ERROR: max connections (1) reached -- try again later\n",
                "",
            ),
            R::Prints(out) => with(RunResult::Exited(0), "", out),
            R::PrintsPartial(out) => with(RunResult::Exited(23), "", out),
        }
    }
}

/// One row: a job, what the plan finds, how its runs end, and what it must do.
struct Case {
    name: &'static str,
    /// A batch, or with `full` the changes pending when the full sync started.
    batch: &'static str,
    full: Option<FullSyncReason>,
    renames: &'static [(&'static str, &'static str)],
    /// What lies below a directory (for a replaced one).
    subtrees: &'static [(&'static str, &'static [&'static str])],
    propagate: bool,
    /// A `<filter>` exclude expression (the filter is on with it).
    filter: Option<&'static str>,
    /// `<deleteGuard>` limits a full sync's deletions (share 50%, at least 100).
    limits: bool,
    /// Why the daemon holds the root's deletions.
    held: Option<&'static str>,
    /// Why the root's filesystem is not trusted to delete.
    guard: Option<&'static str>,
    root_empty: bool,
    excluded: &'static [&'static str],
    top: &'static [&'static str],
    ways: usize,
    cores: usize,
    budget: usize,
    results: &'static [R],
    runs: &'static [&'static str],
    /// `exit N`, `signal N`, `spawn failed`, or `guarded [held paths]: reason` (a
    /// trailing `…` matches any rest of the reason).
    outcome: &'static str,
    /// The large files handed to the lane's large-file run, `"path:ACT ..."`.
    large: &'static str,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: "",
            batch: "",
            full: None,
            renames: &[],
            subtrees: &[],
            propagate: true,
            filter: None,
            limits: false,
            held: None,
            guard: None,
            root_empty: false,
            excluded: &[],
            top: &[],
            ways: 1,
            cores: 2,
            budget: 1 << 20,
            large: "",
            results: &[],
            runs: &[],
            outcome: "exit 0",
        }
    }
}

fn context(case: &Case) -> JobContext {
    JobContext {
        propagate_deletes: case.propagate,
        filter: Filter {
            enabled: case.filter.is_some(),
            excludes: case
                .filter
                .iter()
                .map(|expression| ExcludeRegex {
                    expression: (*expression).to_owned(),
                    regex: regex::bytes::Regex::new(&format!("^(?:{expression})$")).unwrap(),
                    line: 1,
                })
                .collect(),
        },
        delete_guard: DeleteGuard {
            share: if case.limits { 50 } else { 0 },
            ..DeleteGuard::default()
        },
        deletions_held: case.held.map(str::to_owned),
        large_files: Some(1 << 20),
        // Never read: the plan reads nothing.
        ..crate::sync::fixtures::context(std::path::Path::new("/nonexistent/root"))
    }
}

fn local_of(code: &str) -> Local {
    match code {
        "f" => Local::Other,
        "L" => Local::File { size: 1 << 30 },
        "d" => Local::Directory,
        "-" => Local::Missing,
        "x" => Local::BelowNonDirectory,
        other => panic!("bad local code {other}"),
    }
}

/// The entries of `script` with what is at each of them.
fn parse(script: &str) -> Vec<(RelPath, Action, Local)> {
    script
        .split_whitespace()
        .map(|word| {
            let (path, rest) = word.split_once(':').expect("path:ACT=LOCAL");
            let (action, local) = rest.split_once('=').expect("path:ACT=LOCAL");
            (path.as_bytes().to_vec(), action_of(action), local_of(local))
        })
        .collect()
}

fn job(case: &Case) -> Job {
    let entries: Vec<(RelPath, Action)> = parse(case.batch)
        .into_iter()
        .map(|(path, action, _)| (path, action))
        .collect();
    match case.full {
        Some(reason) => Job::FullSync {
            lane: 7,
            reason,
            then: entries,
        },
        None => Job::Batch(Batch {
            lane: 7,
            entries,
            renames: case
                .renames
                .iter()
                .map(|(from, to)| (from.as_bytes().to_vec(), to.as_bytes().to_vec()))
                .collect(),
            large: false,
        }),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A relative path as shown in expectations: the root is `.`.
fn shown(path: &[u8]) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        lossy(path)
    }
}

fn render(spec: &RunSpec) -> String {
    const COMMON: &[&str] = &[
        "-a",
        "--sockopts=TCP_NODELAY",
        "--timeout=120",
        "--contimeout=30",
        // What makes rsync report the bytes it sent (which runs carry it: the argv tables).
        "--info=stats1",
        "--no-human-readable",
        // What makes a full sync's runs say how far they are (the argv tables).
        "--info=progress2",
        "--modify-window=-1",
    ];
    const SHORT: &[(&str, &str)] = &[
        (
            "--ignore-times --no-recursive --dirs --relative --force --ignore-missing-args",
            "SEND",
        ),
        (
            "--recursive --delete --force --existing --from0 --filter=. - ./",
            "DELETE",
        ),
        ("--recursive --relative --ignore-missing-args", "TREES"),
    ];
    let at = match &spec.at {
        At::Root => "root".to_owned(),
        At::Below(dir) => format!("in {}", lossy(dir)),
        At::Skeleton(dirs) => format!(
            "skeleton[{}]",
            dirs.iter().map(|d| lossy(d)).collect::<Vec<_>>().join(",")
        ),
        At::Holding { contents, .. } => format!("holding a notice of {}", lossy(contents)),
    };
    let mut text = spec
        .argv
        .iter()
        .map(|arg| lossy(arg.as_bytes()))
        .filter(|arg| !COMMON.contains(&arg.as_str()))
        .map(|arg| arg.replace(DESTINATION, "DEST/"))
        .collect::<Vec<_>>()
        .join(" ");
    for (long, short) in SHORT {
        text = text.replace(long, short);
    }
    if !spec.stdin.is_empty() {
        let listed: Vec<String> = spec
            .stdin
            .split(|&b| b == 0)
            .filter(|item| !item.is_empty())
            .map(lossy)
            .collect();
        text = format!("{text} < {}", listed.join(" "));
    }
    if spec.capture_stdout != Capture::Tail {
        text.push_str(" >");
    }
    format!("{at}: {text}")
}

fn outcome(run: &Run) -> String {
    match &run.result {
        RunResult::Exited(code) => format!("exit {code}"),
        RunResult::Signaled(signal) => format!("signal {signal}"),
        RunResult::SpawnFailed { .. } => "spawn failed".to_owned(),
        RunResult::Guarded {
            reason,
            held,
            latch,
        } => format!(
            "guarded{} [{}]: {reason}",
            if *latch { " (latched)" } else { "" },
            held.iter().map(|p| shown(p)).collect::<Vec<_>>().join(" ")
        ),
    }
}

/// The process side as a table: facts from the case, results from its script, and a log
/// of every run asked for.
struct Fake<'c> {
    case: &'c Case,
    results: VecDeque<R>,
    serial: bool,
    log: Vec<String>,
}

impl<'c> Fake<'c> {
    /// An edge for `case` whose runs end as `results` say (then with exit 0).
    fn new(case: &'c Case, results: impl IntoIterator<Item = R>) -> Fake<'c> {
        Fake {
            case,
            results: results.into_iter().collect(),
            serial: false,
            log: Vec::new(),
        }
    }

    /// A plan that carries out jobs through this edge.
    fn plan(&mut self) -> Plan<'_, Fake<'c>> {
        let args_budget = self.case.budget;
        Plan {
            edge: self,
            args_budget,
            large: Vec::new(),
            pulled_over_removals: Vec::new(),
            announced: Vec::new(),
        }
    }

    fn next(&mut self) -> Run {
        self.results.pop_front().unwrap_or(R::Exit(0)).run()
    }
}

impl Edge for Fake<'_> {
    fn run(&mut self, spec: RunSpec) -> Run {
        self.log.push(render(&spec));
        self.next()
    }

    fn run_concurrently(&mut self, specs: Vec<RunSpec>) -> Vec<Run> {
        let alone = specs.len() == 1;
        specs
            .iter()
            .map(|spec| {
                let prefix = if alone { "" } else { "& " };
                self.log.push(format!("{prefix}{}", render(spec)));
                self.next()
            })
            .collect()
    }

    fn ways(&self) -> usize {
        if self.serial { 1 } else { self.case.ways }
    }

    fn go_serial(&mut self) {
        self.serial = true;
        self.log.push("one run at a time from now on".to_owned());
    }

    fn cores(&self) -> usize {
        self.case.cores
    }

    fn entries(&mut self, batch: &Batch) -> Vec<Local> {
        let facts = parse(self.case.batch);
        batch
            .entries
            .iter()
            .map(|(path, _)| {
                facts
                    .iter()
                    .find(|(p, _, _)| p == path)
                    .map_or(Local::Missing, |(_, _, local)| *local)
            })
            .collect()
    }

    fn subtrees(&mut self, dirs: &[&[u8]]) -> Vec<Vec<u8>> {
        dirs.iter()
            .flat_map(|dir| {
                self.case
                    .subtrees
                    .iter()
                    .filter(|(d, _)| d.as_bytes() == *dir)
                    .flat_map(|(_, paths)| paths.iter().map(|p| p.as_bytes().to_vec()))
            })
            .collect()
    }

    fn guard_refusal(&mut self) -> Option<String> {
        self.case.guard.map(str::to_owned)
    }

    fn root_is_empty(&mut self) -> std::io::Result<bool> {
        Ok(self.case.root_empty)
    }

    fn excluded_paths(&mut self) -> Vec<Vec<u8>> {
        self.case
            .excluded
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    }

    fn top_level_dirs(&mut self) -> Vec<Vec<u8>> {
        self.case
            .top
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    }

    fn are_directories(&mut self, paths: &[&[u8]]) -> Vec<bool> {
        // One-way cases never ask; two-way ones are tested end to end (tests/it/two_way.rs).
        vec![false; paths.len()]
    }

    fn in_place(&mut self, paths: &[&[u8]]) -> Vec<Option<super::Announced>> {
        // Two-way only, like `are_directories`.
        vec![None; paths.len()]
    }

    fn versions(&mut self, paths: &[&[u8]]) -> Vec<Option<crate::sync::two_way::Version>> {
        vec![None; paths.len()]
    }
}

fn check(cases: &[Case]) {
    for case in cases {
        let mut fake = Fake::new(case, case.results.iter().copied());
        let mut plan = fake.plan();
        let run = plan.job(&job(case), &context(case));
        let large: Vec<String> = plan
            .large
            .iter()
            .map(|(path, action)| {
                format!(
                    "{}:{}",
                    String::from_utf8_lossy(path),
                    crate::queue::codes::code_of(*action)
                )
            })
            .collect();
        assert_eq!(large.join(" "), case.large, "{}: large files", case.name);
        assert_eq!(fake.log, case.runs, "{}: runs", case.name);
        let got = outcome(&run);
        let matches = match case.outcome.strip_suffix('…') {
            Some(prefix) => got.starts_with(prefix),
            None => got == case.outcome,
        };
        assert!(
            matches,
            "{}: outcome {got:?}, expected {:?}",
            case.name, case.outcome
        );
        assert!(fake.results.is_empty(), "{}: results left over", case.name);
    }
}

#[test]
fn large_files_leave_the_batch_for_their_own_run() {
    check(&[
        Case {
            name: "a new version of a large file is handed over; the rest is sent",
            batch: "a:S=f big:S=L d:S=d d/huge:S=L",
            runs: &["root: SEND ./a ./d DEST/"],
            large: "big:S d/huge:S",
            ways: 2,
            ..Case::default()
        },
        Case {
            name: "a batch of large files only runs nothing",
            batch: "big:S=L",
            runs: &[],
            large: "big:S",
            ways: 2,
            ..Case::default()
        },
        Case {
            name: "removals go first whatever the batch hands over",
            batch: "big:S=L gone:F=-",
            runs: &["skeleton[]: DELETE DEST/ < + /gone + /gone/*** - *"],
            large: "big:S",
            ways: 2,
            ..Case::default()
        },
        Case {
            name: "a directory replaced by a large file is purged and sent in the batch",
            batch: "d:R=L",
            runs: &[
                "skeleton[]: DELETE DEST/ < + /d + /d/*** - *",
                "root: SEND ./d DEST/",
            ],
            ways: 2,
            ..Case::default()
        },
        Case {
            name: "the changes a full sync carries are sent by it, large or not",
            batch: "big:S=L",
            full: Some(Scheduled),
            runs: &[
                "root: --recursive --delete --force ./ DEST/",
                "root: SEND ./big DEST/",
            ],
            ways: 2,
            ..Case::default()
        },
        Case {
            name: "one connection at a time (max connections, -n 1): sent with the rest",
            batch: "a:S=f big:S=L",
            runs: &["root: SEND ./a ./big DEST/"],
            ..Case::default()
        },
        Case {
            name: "below a directory the batch renames: copied by the rename seed",
            batch: "new:S=d new/big:S=L old:D=-",
            renames: &[("old", "new")],
            ways: 2,
            runs: &[
                "root: SEND ./new DEST/",
                "in new: --copy-dest=../old --no-recursive --dirs --relative . ./big DEST/new/",
                "skeleton[]: DELETE DEST/ < + /old + /old/*** - *",
            ],
            ..Case::default()
        },
    ]);
}

#[test]
fn batches() {
    check(&[
        Case {
            name: "plain send",
            batch: "a:S=f b/c:S=f",
            runs: &["root: SEND ./a ./b/c DEST/"],
            ..Case::default()
        },
        Case {
            name: "a long list goes on stdin",
            batch: "a:S=f b/c:S=f",
            budget: 8,
            runs: &["root: SEND --files-from=- --from0 ./ DEST/ < ./a ./b/c"],
            ..Case::default()
        },
        Case {
            name: "removals: one deletion run first, then the send",
            batch: "a:S=f d:D=- gone:F=- p/q:F=-",
            runs: &[
                "skeleton[p]: DELETE DEST/ < + /p/ + /d + /d/*** + /gone + /gone/*** + /p/q + /p/q/*** - *",
                "root: SEND ./a DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a synced path that is gone is deleted too",
            batch: "a:S=-",
            runs: &["skeleton[]: DELETE DEST/ < + /a + /a/*** - *"],
            ..Case::default()
        },
        Case {
            name: "removals are not propagated",
            batch: "a:S=f gone:F=-",
            propagate: false,
            runs: &["root: SEND ./a DEST/"],
            ..Case::default()
        },
        Case {
            name: "a replaced directory is purged, then sent whole",
            batch: "p/d:R=d",
            subtrees: &[("p/d", &["p/d/x", "p/d/y"])],
            runs: &[
                "skeleton[p]: DELETE DEST/ < + /p/ + /p/d + /p/d/*** - *",
                "root: SEND ./p/d ./p/d/x ./p/d/y DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a removed directory that is a directory again",
            batch: "d:D=d d/x:S=f",
            subtrees: &[("d", &["d/x", "d/y"])],
            runs: &[
                "skeleton[]: DELETE DEST/ < + /d + /d/*** - *",
                "root: SEND ./d ./d/x ./d/y DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a directory replaced by a file",
            batch: "d:R=f",
            runs: &[
                "skeleton[]: DELETE DEST/ < + /d + /d/*** - *",
                "root: SEND ./d DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "paths below a file or symlink are left to that ancestor's change",
            batch: "a:S=f f:S=f f/x:S=x s/y:F=x",
            runs: &["root: SEND ./a ./f DEST/"],
            ..Case::default()
        },
        Case {
            name: "a dirty directory is synced recursively after the sends",
            batch: "a:S=f t:T=d",
            runs: &[
                "root: SEND ./a DEST/",
                "root: TREES --delete --force --files-from=- --from0 ./ DEST/ < ./t",
            ],
            ..Case::default()
        },
        Case {
            name: "a dirty directory without deletions",
            batch: "t:T=d",
            propagate: false,
            runs: &["root: TREES --files-from=- --from0 ./ DEST/ < ./t"],
            ..Case::default()
        },
        Case {
            name: "a dirty directory that is gone is purged",
            batch: "t:T=-",
            runs: &["skeleton[]: DELETE DEST/ < + /t + /t/*** - *"],
            ..Case::default()
        },
        Case {
            name: "the root as a dirty directory is a full sync",
            batch: ":T=d",
            runs: &["root: --recursive --delete --force ./ DEST/"],
            ..Case::default()
        },
        Case {
            name: "a dirty directory under a filter is a full sync with its dry run",
            batch: "t:T=d",
            filter: Some(r"(.*)\.tmp"),
            excluded: &["x.tmp"],
            results: &[R::Prints("*deleting   old.tmp\n*deleting   gone\n")],
            runs: &[
                "root: --recursive --delete --force --from0 --filter=. - --dry-run --itemize-changes --stats ./ DEST/ < - /x.tmp >",
                "root: --recursive --delete --force --from0 --filter=. - ./ DEST/ < - /x.tmp P /old.tmp",
            ],
            ..Case::default()
        },
    ]);
}

#[test]
fn renames() {
    check(&[
        Case {
            name: "a seeded directory is not sent again",
            batch: "new:S=d new/f:S=f old:D=-",
            renames: &[("old", "new")],
            runs: &[
                "root: SEND ./new DEST/",
                "in new: --copy-dest=../old --no-recursive --dirs --relative . ./f DEST/new/",
                "skeleton[]: DELETE DEST/ < + /old + /old/*** - *",
            ],
            ..Case::default()
        },
        Case {
            name: "a nested target reaches its old copy from its depth",
            batch: "a/new:S=d old:D=-",
            renames: &[("old", "a/new")],
            runs: &[
                "root: SEND ./a/new DEST/",
                "in a/new: --copy-dest=../../old --no-recursive --dirs --relative . DEST/a/new/",
                "skeleton[]: DELETE DEST/ < + /old + /old/*** - *",
            ],
            ..Case::default()
        },
        Case {
            name: "a failed seed leaves the subtree to the send run",
            batch: "new:S=d new/f:S=f old:D=-",
            renames: &[("old", "new")],
            results: &[R::Exit(0), R::Partial("rsync: failed\n")],
            runs: &[
                "root: SEND ./new DEST/",
                "in new: --copy-dest=../old --no-recursive --dirs --relative . ./f DEST/new/",
                "skeleton[]: DELETE DEST/ < + /old + /old/*** - *",
                "root: SEND ./new ./new/f DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "no seeds when the new directories cannot be made",
            batch: "new:S=d new/f:S=f old:D=-",
            renames: &[("old", "new")],
            results: &[R::Exit(10)],
            runs: &[
                "root: SEND ./new DEST/",
                "skeleton[]: DELETE DEST/ < + /old + /old/*** - *",
                "root: SEND ./new ./new/f DEST/",
            ],
            ..Case::default()
        },
    ]);
}

#[test]
fn held_deletions() {
    check(&[
        Case {
            name: "the guard holds deletions; sends and a dirty directory's additions go",
            batch: "a:S=f gone:F=- t:T=d",
            guard: Some("not mounted"),
            runs: &[
                "root: SEND ./a DEST/",
                "root: TREES --files-from=- --from0 ./ DEST/ < ./t",
            ],
            outcome: "guarded [gone t]: not mounted",
            ..Case::default()
        },
        Case {
            name: "the daemon holds the root's deletions",
            batch: "gone:F=-",
            held: Some("too many deletions"),
            runs: &[],
            outcome: "guarded [gone]: too many deletions",
            ..Case::default()
        },
        Case {
            name: "a held batch whose send fails is that failure",
            batch: "a:S=f gone:F=-",
            guard: Some("not mounted"),
            results: &[R::Exit(10)],
            runs: &["root: SEND ./a DEST/"],
            outcome: "exit 10",
            ..Case::default()
        },
        Case {
            name: "nothing to delete: the guard is not asked",
            batch: "a:S=f",
            guard: Some("not mounted"),
            runs: &["root: SEND ./a DEST/"],
            ..Case::default()
        },
    ]);
}

#[test]
fn results_of_several_runs() {
    const DELETE_THEN_SEND: &[&str] = &[
        "skeleton[]: DELETE DEST/ < + /gone + /gone/*** - *",
        "root: SEND ./a DEST/",
    ];
    check(&[
        Case {
            name: "a refused deletion does not hold back the sends: 23 + 0 = 23",
            batch: "a:S=f gone:F=-",
            results: &[R::Partial("rsync: refused\n")],
            runs: DELETE_THEN_SEND,
            outcome: "exit 23",
            ..Case::default()
        },
        Case {
            name: "0 + 24 = 24",
            batch: "a:S=f gone:F=-",
            results: &[R::Exit(0), R::Exit(24)],
            runs: DELETE_THEN_SEND,
            outcome: "exit 24",
            ..Case::default()
        },
        Case {
            name: "23 + a failure = the failure",
            batch: "a:S=f gone:F=-",
            results: &[R::Partial("rsync: refused\n"), R::Exit(12)],
            runs: DELETE_THEN_SEND,
            outcome: "exit 12",
            ..Case::default()
        },
        Case {
            name: "any other deletion failure ends the batch",
            batch: "a:S=f gone:F=-",
            results: &[R::Exit(10)],
            runs: &DELETE_THEN_SEND[..1],
            outcome: "exit 10",
            ..Case::default()
        },
        Case {
            name: "a deletion run that cannot start ends the batch",
            batch: "a:S=f gone:F=-",
            results: &[R::NoSpawn],
            runs: &DELETE_THEN_SEND[..1],
            outcome: "spawn failed",
            ..Case::default()
        },
        Case {
            name: "a killed deletion run ends the batch",
            batch: "a:S=f gone:F=-",
            results: &[R::Signal(9)],
            runs: &DELETE_THEN_SEND[..1],
            outcome: "signal 9",
            ..Case::default()
        },
        Case {
            name: "a failed send keeps the dirty directories back",
            batch: "a:S=f t:T=d",
            results: &[R::Exit(30)],
            runs: &["root: SEND ./a DEST/"],
            outcome: "exit 30",
            ..Case::default()
        },
        Case {
            name: "a partly failed send still syncs the dirty directories: 23 + 0 = 23",
            batch: "a:S=f t:T=d",
            results: &[R::Partial("rsync: refused\n")],
            runs: &[
                "root: SEND ./a DEST/",
                "root: TREES --delete --force --files-from=- --from0 ./ DEST/ < ./t",
            ],
            outcome: "exit 23",
            ..Case::default()
        },
        Case {
            name: "a held full sync for the root holds it and what failed to send",
            batch: ":T=d a:S=f",
            limits: true,
            results: &[
                R::Partial("rsync: refused\n"),
                R::Prints(
                    "Number of files: 10\nNumber of created files: 0\nNumber of deleted files: 500\n",
                ),
            ],
            runs: &[
                "root: SEND ./a DEST/",
                "root: --recursive --delete --force --dry-run --itemize-changes --stats ./ DEST/ >",
            ],
            outcome: "guarded (latched) [. a]: a full sync would delete 500 of the remote's 510 entries…",
            ..Case::default()
        },
    ]);
}

#[test]
fn full_syncs() {
    let full = Some(Initial);
    check(&[
        Case {
            name: "one run",
            full,
            runs: &["root: --recursive --delete --force ./ DEST/"],
            ..Case::default()
        },
        Case {
            name: "without deletions",
            full,
            propagate: false,
            runs: &["root: --recursive ./ DEST/"],
            ..Case::default()
        },
        Case {
            name: "split over top-level directories",
            full,
            top: &["a", "b", "c"],
            ways: 2,
            runs: &[
                "& root: --no-recursive --dirs --delete --force ./ DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./a ./c DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./b DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "no more runs than cores",
            full,
            top: &["a", "b", "c"],
            ways: 2,
            cores: 1,
            runs: &["root: --recursive --delete --force ./ DEST/"],
            ..Case::default()
        },
        Case {
            name: "a module at max connections gets one run, from now on",
            full,
            top: &["a", "b"],
            ways: 2,
            results: &[R::Exit(0), R::MaxConnections, R::Exit(0)],
            runs: &[
                "& root: --no-recursive --dirs --delete --force ./ DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./a DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./b DEST/",
                "one run at a time from now on",
                "root: --recursive --delete --force ./ DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a filter: excluded paths excluded, remote-only ones protected",
            full,
            filter: Some(r"(.*)\.tmp"),
            excluded: &["x.tmp", "d/y.tmp"],
            results: &[R::Prints(
                "*deleting   d/old.tmp\n*deleting   gone\n*deleting   e.tmp/\n",
            )],
            runs: &[
                "root: --recursive --delete --force --from0 --filter=. - --dry-run --itemize-changes --stats ./ DEST/ < - /x.tmp - /d/y.tmp >",
                "root: --recursive --delete --force --from0 --filter=. - ./ DEST/ < - /x.tmp - /d/y.tmp P /d/old.tmp P /e.tmp",
            ],
            ..Case::default()
        },
        Case {
            name: "a filter without deletions needs no dry run",
            full,
            propagate: false,
            filter: Some(r"(.*)\.tmp"),
            excluded: &["x.tmp"],
            runs: &["root: --recursive --from0 --filter=. - ./ DEST/ < - /x.tmp"],
            ..Case::default()
        },
        Case {
            name: "a filter with nothing excluded locally keeps the dry run's stdin empty",
            full,
            filter: Some(r"(.*)\.tmp"),
            top: &["a", "b"],
            ways: 2,
            runs: &[
                "root: --recursive --delete --force --from0 --filter=. - --dry-run --itemize-changes --stats ./ DEST/ >",
                "& root: --no-recursive --dirs --delete --force ./ DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./a DEST/",
                "& root: --recursive --ignore-missing-args --delete --force ./b DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a dry run that could not list everything protects nothing: no full sync",
            full,
            filter: Some(r"(.*)\.tmp"),
            results: &[R::PrintsPartial("*deleting   gone\n")],
            runs: &[
                "root: --recursive --delete --force --from0 --filter=. - --dry-run --itemize-changes --stats ./ DEST/ >",
            ],
            outcome: "exit 23",
            ..Case::default()
        },
        Case {
            name: "the count of deletions is read from the dry run",
            full,
            limits: true,
            results: &[R::Prints(
                "Number of files: 1000\nNumber of created files: 0\nNumber of deleted files: 3\n",
            )],
            runs: &[
                "root: --recursive --delete --force --dry-run --itemize-changes --stats ./ DEST/ >",
                "root: --recursive --delete --force ./ DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "an unreadable entry does not stop the count",
            full,
            limits: true,
            results: &[R::PrintsPartial(
                "Number of files: 1000\nNumber of created files: 0\nNumber of deleted files: 3\n",
            )],
            runs: &[
                "root: --recursive --delete --force --dry-run --itemize-changes --stats ./ DEST/ >",
                "root: --recursive --delete --force ./ DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "too many deletions latch the hold",
            full,
            limits: true,
            results: &[R::Prints(
                "Number of files: 10\nNumber of created files: 0\nNumber of deleted files: 500\n",
            )],
            runs: &[
                "root: --recursive --delete --force --dry-run --itemize-changes --stats ./ DEST/ >",
            ],
            outcome: "guarded (latched) []: a full sync would delete 500 of the remote's 510 entries…",
            ..Case::default()
        },
        Case {
            name: "no counts in the dry run: held",
            full,
            limits: true,
            runs: &[
                "root: --recursive --delete --force --dry-run --itemize-changes --stats ./ DEST/ >",
            ],
            outcome: "guarded (latched) []: cannot tell what a full sync would delete…",
            ..Case::default()
        },
        Case {
            name: "the guard refuses: nothing runs",
            full,
            guard: Some("not mounted"),
            outcome: "guarded []: not mounted",
            ..Case::default()
        },
        Case {
            name: "an empty root against a remote that is not",
            full,
            root_empty: true,
            results: &[R::Prints(
                "drwxr-xr-x 4,096 2026/01/01 00:00:00 .\n-rw-r--r-- 1 2026/01/01 00:00:00 f\n",
            )],
            runs: &["root: --list-only DEST/ >"],
            outcome: "guarded []: the root is empty while the remote is not…",
            ..Case::default()
        },
        Case {
            name: "an empty root against an empty remote",
            full,
            root_empty: true,
            results: &[R::Prints("drwxr-xr-x 4,096 2026/01/01 00:00:00 .\n")],
            runs: &[
                "root: --list-only DEST/ >",
                "root: --recursive --delete --force ./ DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "an empty root and an unreachable remote",
            full,
            root_empty: true,
            results: &[R::Exit(10)],
            runs: &["root: --list-only DEST/ >"],
            outcome: "exit 10",
            ..Case::default()
        },
        Case {
            name: "forced: past the guard, and its pending deletions with it",
            full: Some(Forced),
            guard: Some("not mounted"),
            limits: true,
            batch: "gone:F=-",
            runs: &[
                "root: --recursive --delete --force ./ DEST/",
                "skeleton[]: DELETE DEST/ < + /gone + /gone/*** - *",
            ],
            ..Case::default()
        },
        Case {
            name: "pending changes after a full sync that covered them are sent",
            full,
            batch: "d:R=d",
            subtrees: &[("d", &["d/x"])],
            runs: &[
                "root: --recursive --delete --force ./ DEST/",
                "root: SEND ./d DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "pending changes after a filtered full sync keep their purge",
            full,
            propagate: true,
            filter: Some(r"(.*)\.tmp"),
            batch: "d:R=d",
            subtrees: &[("d", &["d/x"])],
            results: &[R::Prints("")],
            runs: &[
                "root: --recursive --delete --force --from0 --filter=. - --dry-run --itemize-changes --stats ./ DEST/ >",
                "root: --recursive --delete --force ./ DEST/",
                "skeleton[]: DELETE DEST/ < + /d + /d/*** - *",
                "root: SEND ./d ./d/x DEST/",
            ],
            ..Case::default()
        },
        Case {
            name: "a failed full sync sends no pending changes",
            full,
            batch: "a:S=f",
            results: &[R::Exit(12)],
            runs: &["root: --recursive --delete --force ./ DEST/"],
            outcome: "exit 12",
            ..Case::default()
        },
    ]);
}

#[test]
fn a_big_deletion_is_split_and_joined_again_at_max_connections() {
    let batch: String = (0..1000).map(|i| format!("g/{i:04}:F=- ")).collect();
    let batch: &'static str = Box::leak(batch.into_boxed_str());
    for (results, runs) in [
        (&[][..], vec!["& skeleton[g]", "& skeleton[g]"]),
        (
            &[R::MaxConnections, R::Exit(0), R::Exit(0)][..],
            vec![
                "& skeleton[g]",
                "& skeleton[g]",
                "one run at a time from now on",
                "skeleton[g]",
            ],
        ),
    ] {
        let case = Case {
            name: "big deletion",
            batch,
            ways: 4,
            results,
            ..Case::default()
        };
        let mut fake = Fake::new(&case, case.results.iter().copied());
        let run = fake.plan().job(&job(&case), &context(&case));
        assert_eq!(outcome(&run), "exit 0");
        let heads: Vec<&str> = fake
            .log
            .iter()
            .map(|line| line.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(heads, runs);
        // The split runs delete disjoint halves; the single run all of them.
        let rules = |line: &str| line.matches("/***").count();
        let counts: Vec<usize> = fake.log.iter().map(|line| rules(line)).collect();
        match counts.as_slice() {
            [a, b] | [a, b, 0, _] => assert_eq!((*a, *b), (500, 500)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            counts.last().copied(),
            Some(if results.is_empty() { 500 } else { 1000 })
        );
    }
}

#[test]
fn classify_table() {
    // (batch, seeded, [delete, send, whole, trees])
    type Row = (&'static str, &'static [&'static str], [&'static str; 4]);
    let rows: &[Row] = &[
        ("a:S=f", &[], ["", "a", "", ""]),
        ("a:S=-", &[], ["a", "", "", ""]),
        ("a:F=f", &[], ["", "a", "", ""]),
        ("d:D=d", &[], ["d", "d", "d", ""]),
        ("d:D=f", &[], ["", "d", "", ""]),
        ("d:R=d", &[], ["d", "d", "d", ""]),
        ("d:R=f", &[], ["d", "d", "", ""]),
        ("d:R=-", &[], ["d", "", "", ""]),
        ("t:T=d", &[], ["", "", "", "t"]),
        ("t:T=f", &[], ["t", "t", "", ""]),
        ("t:T=-", &[], ["t", "", "", ""]),
        (":R=d", &[], [".", ".", "", ""]),
        ("f/x:S=x", &[], ["", "", "", ""]),
        ("n:S=d n/f:S=f", &["n"], ["", "", "", ""]),
        ("n:S=d n/f:R=d", &["n"], ["n/f", "n/f", "n/f", ""]),
        ("n:S=d nx:S=f", &["n"], ["", "nx", "", ""]),
    ];
    for (script, seeded, expected) in rows {
        let facts = parse(script);
        let batch = Batch {
            lane: 0,
            entries: facts.iter().map(|(p, a, _)| (p.clone(), *a)).collect(),
            renames: Vec::new(),
            large: false,
        };
        let locals: Vec<Local> = facts.iter().map(|(_, _, l)| *l).collect();
        let seeded: Vec<Vec<u8>> = seeded.iter().map(|s| s.as_bytes().to_vec()).collect();
        let lists = classify(&batch, &locals, &seeded);
        let words = |paths: &[&[u8]]| paths.iter().map(|p| shown(p)).collect::<Vec<_>>().join(" ");
        assert_eq!(
            [
                words(&lists.delete),
                words(&lists.send),
                words(&lists.whole),
                words(&lists.trees)
            ],
            expected.map(str::to_owned),
            "{script}"
        );
    }
}

#[test]
fn several_runs_amount_to_the_worst() {
    let run = |result: RunResult, stderr: &str| Run {
        stderr: stderr.to_owned(),
        truncated: stderr.contains("cut"),
        ..Run::ended(result)
    };
    let spawn = || RunResult::SpawnFailed {
        kind: std::io::ErrorKind::NotFound,
        message: "no rsync".into(),
    };
    // (results with their stderr, the result they amount to, its stderr, truncated)
    let rows: Vec<(Vec<Run>, RunResult, &str, bool)> = vec![
        (vec![], RunResult::Exited(0), "", false),
        (
            vec![run(RunResult::Exited(0), "a\n")],
            RunResult::Exited(0),
            "a\n",
            false,
        ),
        (
            vec![
                run(RunResult::Exited(0), "a\n"),
                run(RunResult::Exited(23), "b\n"),
            ],
            RunResult::Exited(23),
            "b\n",
            false,
        ),
        (
            vec![
                run(RunResult::Exited(24), "v\n"),
                run(RunResult::Exited(23), "b cut\n"),
            ],
            RunResult::Exited(23),
            "v\nb cut\n",
            true,
        ),
        (
            vec![
                run(RunResult::Exited(23), "b\n"),
                run(RunResult::Exited(24), "v\n"),
            ],
            RunResult::Exited(23),
            "b\nv\n",
            false,
        ),
        (
            vec![
                run(RunResult::Exited(23), "b\n"),
                run(RunResult::Signaled(9), ""),
                run(RunResult::Exited(12), "c\n"),
            ],
            RunResult::Signaled(9),
            "b\nc\n",
            false,
        ),
        (
            vec![run(RunResult::Exited(0), ""), run(spawn(), "no rsync\n")],
            spawn(),
            "no rsync\n",
            false,
        ),
        (
            vec![
                run(RunResult::Exited(24), "v\n"),
                run(RunResult::Exited(0), "a\n"),
            ],
            RunResult::Exited(24),
            "v\n",
            false,
        ),
    ];
    for (runs, result, stderr, truncated) in rows {
        let what = format!("{:?}", runs.iter().map(|r| &r.result).collect::<Vec<_>>());
        let worst = Run::worst(runs);
        assert_eq!(worst.result, result, "{what}");
        assert_eq!(worst.stderr, stderr, "{what}");
        assert_eq!(worst.truncated, truncated, "{what}");
    }
}

/// A full sync's pull hands back to the daemon the directories it made where this host's
/// user removed one (or an ancestor) after the pull's exclusions were read: top-most only,
/// and not what was removed before (excluded from the pull) nor what is not a directory.
#[test]
fn a_pull_reports_the_directories_it_made_over_removals_since_its_exclusions() {
    let versions = std::sync::Arc::new(super::super::two_way::Versions::default());
    versions.record_removal(b"before", false);
    std::thread::sleep(std::time::Duration::from_millis(2));
    let since = std::time::SystemTime::now();
    for path in [&b"z"[..], b"y/sub", b"link", b"f"] {
        versions.record_removal(path, false);
    }
    let ctx = JobContext {
        versions: Some(versions),
        ..crate::sync::fixtures::context(std::path::Path::new("/nonexistent/root"))
    };
    let stdout = b"cd+++++++++ rwxr-xr-x before/\n\
        cd+++++++++ rwxr-xr-x z/\n\
        cd+++++++++ rwxr-xr-x z/sub/\n\
        >f+++++++++ rw-r--r-- z/sub/g\n\
        cd+++++++++ rwxr-xr-x y/sub/deeper/\n\
        cd+++++++++ rwxr-xr-x other/\n\
        cL+++++++++ rwxrwxrwx link -> t\n\
        >f+++++++++ rw-r--r-- f\n\
        sent 10 bytes  received 20 bytes  60.00 bytes/sec\n";
    assert_eq!(
        made_over_removals(stdout, since, &ctx),
        [b"y/sub/deeper".to_vec(), b"z".to_vec()]
    );
}

/// Two-way mode: a send whose run made a directory on the peer that is gone here when it
/// ends (the peer's deletion of it crossed the send: seed 3 of the two-way rounds) is
/// followed by a deletion of that directory there, judged like every deletion: the
/// peer's copies are listed first, and it is announced removed. A directory the send
/// made that is still here is left alone.
#[test]
fn a_directory_a_send_made_on_the_peer_and_gone_here_since_is_deleted_there() {
    let versions = std::sync::Arc::new(super::super::two_way::Versions::default());
    versions.record(b"d", super::super::two_way::Version::DIRECTORY);
    let mut ctx = crate::sync::fixtures::context(std::path::Path::new("/nonexistent/root"));
    ctx.transport.options.two_way = true;
    ctx.versions = Some(versions);
    let case = Case {
        batch: "d/f:S=f",
        ..Case::default()
    };
    let results = [
        // The send's listing of the peer's copies: it lacks d/.
        R::Prints(""),
        // The send made d/ and delivered d/f; d/ is gone here by now (the fake has no
        // directories).
        R::Prints(
            "cd+++++++++ 4096 2026/12/08-01:48:00 d/\n<f+++++++++ 5 2026/12/08-01:48:00 d/f\n",
        ),
        // The deletion's listing: the peer has d/ (empty, the file vanished here).
        R::Prints("drwxr-xr-x          4,096 2026/12/08 01:48:00 d\n"),
    ];
    let mut fake = Fake::new(&case, results);
    let run = fake.plan().job(&job(&case), &ctx);
    assert!(run.result.is_done(), "{:?}", run.result);
    let log = fake.log.join("\n");
    let send = fake
        .log
        .iter()
        .position(|run| run.contains("--out-format=%i %l %M %n"))
        .unwrap_or_else(|| panic!("no send:\n{log}"));
    let after: Vec<&String> = fake.log[send + 1..].iter().collect();
    assert!(
        after
            .iter()
            .any(|run| run.contains("--list-only") && run.contains("+ /d")),
        "no listing of d/ after the send:\n{log}"
    );
    assert!(
        after
            .iter()
            .any(|run| run.starts_with("skeleton[") && run.contains("R /d")),
        "no deletion of d/ after the send:\n{log}"
    );
}
