//! What a job does, decided without touching anything: which rsync runs, in what order,
//! with which argv and listed paths, and what their results amount to.
//!
//! The plan reads no file, starts no process and reads no clock. It asks its [`Edge`]
//! (the process side, `super::process`) for each run and for the facts it needs about the
//! local tree (gathered by `super::facts` at the moment the plan needs them, as plain
//! data), and decides from what comes back: a later run can depend on an earlier one (a
//! rename seed that worked spares a send, a dry run's output protects remote-only
//! excluded paths, a module at `max connections` gets its split runs again as one). The
//! tests give it a table of facts and results instead (`plan/tests.rs`). (One clock read
//! remains below it: `argv` dates `<softDelete>`'s directory with today's date.)
//!
//! A batch: rename seeds (`--copy-dest`), then one deletion run (from a skeleton of
//! ancestors, include/exclude rules, possibly split over disjoint subtrees) for what no
//! longer exists or was replaced, then the send run for what exists, then the dirty
//! directories (`Action::Tree`) recursively, or a full sync when the root is one of them
//! or `<filter>` is on. A full sync: the replica guard's checks, a dry run first when
//! `<filter>` is on or deletions are limited, then one run or a split over top-level
//! directories, then the changes that were pending when it started.

use std::ffi::OsString;

use super::argv::{self, FullSyncRules};
use super::two_way::Announced;
use super::{JobContext, RunResult};
use crate::config::Filter;
use crate::queue::{Action, Batch, FullSyncReason, Job, RelPath};
use crate::relpath::is_at_or_below;

#[cfg(test)]
mod tests;

/// What is at a batch's path when its job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// An ancestor (below the root) is a file, a symlink or another non-directory: nothing
    /// below it exists, here or (once that ancestor's own change is sent) on the remote.
    BelowNonDirectory,
    /// Nothing (or nothing the daemon can see).
    Missing,
    Directory,
    /// A regular file of this many bytes.
    File {
        size: u64,
    },
    /// A symlink (also one to a directory), or another type.
    Other,
}

/// Where a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The watch root.
    Root,
    /// A directory of the tree, relative to the root (a renamed directory's new path, for
    /// its rename seed).
    Below(RelPath),
    /// A fresh skeleton holding only these directories (the empty ancestors of what a
    /// deletion run removes).
    Skeleton(Vec<Vec<u8>>),
    /// A fresh scratch directory holding only the file `name` with `contents` (a notice
    /// for the peer, see [`super::two_way::Announced`]).
    Holding { name: String, contents: Vec<u8> },
}

/// One rsync run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The arguments after `rsync`.
    pub argv: Vec<OsString>,
    /// Listed paths or filter rules, NUL-separated (empty: nothing on stdin).
    pub stdin: Vec<u8>,
    pub at: At,
    /// What of rsync's stdout the plan reads.
    pub capture_stdout: Capture,
}

/// What of a run's stdout its [`Run::stdout`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Its end (bounded), where rsync reports what it sent (counted by the edge, not the
    /// plan).
    Tail,
    /// All of it (listings, dry runs).
    All,
    /// Its lines (ended by `\n` or `\r`) that start with these bytes, whole, and then its
    /// end as with [`Capture::Tail`]: what a long run itemizes of one kind (a full sync's
    /// push, the directories it made), kept without holding the rest, beside its progress.
    LinesStarting(&'static [u8]),
}

impl RunSpec {
    fn at_root(argv: Vec<OsString>, stdin: Vec<u8>) -> RunSpec {
        RunSpec {
            argv,
            stdin,
            at: At::Root,
            capture_stdout: Capture::Tail,
        }
    }
}

/// How a run (or several) ended, with what it printed.
#[derive(Debug)]
pub struct Run {
    pub result: RunResult,
    pub stderr: String,
    /// Whether `stderr` lost its head to the bound.
    pub truncated: bool,
    /// What it printed, as far as [`RunSpec::capture_stdout`] asked.
    pub stdout: Vec<u8>,
}

impl Run {
    /// A run that ended as `result` with nothing on stdout or stderr.
    pub fn ended(result: RunResult) -> Run {
        Run {
            result,
            stderr: String::new(),
            truncated: false,
            stdout: Vec::new(),
        }
    }

    /// What several runs of one job amount to: the worst result (a failure, else exit
    /// 23, else exit 24, else success), with the stderr of every run that did not
    /// succeed, so that the paths each of them failed on can all be read.
    pub fn worst(runs: impl IntoIterator<Item = Run>) -> Run {
        let rank = |result: &RunResult| match result {
            RunResult::Exited(0) => 3,
            RunResult::Exited(24) => 2,
            RunResult::Exited(23) => 1,
            _ => 0,
        };
        let mut worst: Option<Run> = None;
        let mut stderr = String::new();
        let mut truncated = false;
        for run in runs {
            if !matches!(run.result, RunResult::Exited(0)) {
                stderr.push_str(&run.stderr);
                truncated |= run.truncated;
            }
            if worst
                .as_ref()
                .is_none_or(|w| rank(&run.result) < rank(&w.result))
            {
                worst = Some(run);
            }
        }
        let mut run = worst.unwrap_or_else(|| Run::ended(RunResult::Exited(0)));
        if !matches!(run.result, RunResult::Exited(0)) {
            run.stderr = stderr;
            run.truncated = truncated;
        }
        run
    }
}

/// How a two-way deletion judges the peer's copies of what it deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// A deletion seen here: versions this host had before it go, and by time what it
    /// cannot know ([`super::two_way::spared`]).
    ByDeletion,
    /// What a full sync finds gone: only files that are versions this host had
    /// ([`super::two_way::spared_unless_had`]), and directories left with nothing else.
    OnlyVersionsHad,
}

/// What the plan asks of the process side: runs, and facts about the local tree and the
/// destination, each at the moment it needs them.
pub trait Edge {
    /// Runs rsync once.
    fn run(&mut self, spec: RunSpec) -> Run;
    /// Runs these at once (they touch disjoint paths; all start where the first does);
    /// their results in the same order.
    fn run_concurrently(&mut self, specs: Vec<RunSpec>) -> Vec<Run>;
    /// Carries out a batch's send run of `paths` (`spec` is its cold form): the edge may
    /// hand them to the lane's warm rsync instead (`super::warm`), with the same result.
    fn send(&mut self, spec: RunSpec, paths: &[&[u8]]) -> Run {
        let _ = paths;
        self.run(spec)
    }
    /// How many concurrent runs a job for this destination may use now.
    fn ways(&self) -> usize;
    /// The destination refused one of several concurrent runs: one run at a time for it
    /// from now on (and a moment for its side of the others to end).
    fn go_serial(&mut self);
    /// How many cores the daemon may use.
    fn cores(&self) -> usize;
    /// What is at each of the batch's paths, in the batch's order.
    fn entries(&mut self, batch: &Batch) -> Vec<Local>;
    /// Every path below each of `dirs` that the filter does not exclude (each directory's
    /// paths sorted, the directories in the given order).
    fn subtrees(&mut self, dirs: &[&[u8]]) -> Vec<Vec<u8>>;
    /// Why the root's filesystem must not be trusted to delete on the remote
    /// ([`crate::guard::refusal`]: not the recorded one, no sentinel).
    fn guard_refusal(&mut self) -> Option<String>;
    /// Whether the root has no entries at all.
    fn root_is_empty(&mut self) -> std::io::Result<bool>;
    /// The top-most local paths the filter excludes.
    fn excluded_paths(&mut self) -> Vec<Vec<u8>>;
    /// The directories directly under the root, sorted.
    fn top_level_dirs(&mut self) -> Vec<Vec<u8>>;
    /// Which of `paths` are directories here now (not symlinks to one).
    fn are_directories(&mut self, paths: &[&[u8]]) -> Vec<bool>;
    /// Two-way mode: what rsync would make in place on the peer for each of `paths` (a
    /// directory, a symlink, a special file), as it is here now; `None` for a regular
    /// file or nothing.
    fn in_place(&mut self, paths: &[&[u8]]) -> Vec<Option<Announced>>;
    /// Two-way mode: the version of each of `paths` here now (`None` for a directory or
    /// nothing).
    fn versions(&mut self, paths: &[&[u8]]) -> Vec<Option<super::two_way::Version>>;
    /// Two-way mode: the paths this host had a version of that are gone here now (the
    /// top-most of each gone subtree, sorted; see [`super::two_way::Versions::paths`]).
    fn gone_since_known(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Two-way mode: records the version of everything in the tree now as one this host
    /// had (a full sync is about to push them all); returns the directories among them
    /// that this host had not had (see [`super::two_way::Versions::had`]).
    fn record_tree_versions(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Two-way mode: the peer lacks `paths` now (a deletion reached it, or it had none of
    /// them), as this host does: no full sync carries them to it again (see
    /// [`super::two_way::Versions::record_peer_lacks`]).
    fn record_peer_lacks(&mut self, paths: &[&[u8]]) {
        let _ = paths;
    }
    /// Two-way mode: what a send that started at `since` delivered is a version this host
    /// had at each path since then (see [`super::two_way::parse_sent`]).
    fn record_sent(
        &mut self,
        sent: &[(Vec<u8>, super::two_way::Version)],
        since: std::time::SystemTime,
    ) {
        let _ = (sent, since);
    }
    /// Two-way mode: leaves a notice of `entries` in this host's own incoming directory,
    /// for its own watcher: what a pull is about to make here in place is the peer's.
    fn announce_here(&mut self, entries: &[(Vec<u8>, Announced)]) {
        let _ = entries;
    }
    /// Two-way mode: a send run that started at `started` delivered `paths` whole (see
    /// [`super::two_way::Versions::delivered`]).
    fn record_delivered(&mut self, paths: &[&[u8]], started: std::time::Instant) {
        let _ = (paths, started);
    }
}

/// What a batch deletes, sends and syncs recursively, from what is at its paths now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lists<'b> {
    /// What no longer exists (or was replaced, or is a dirty directory that is gone).
    pub delete: Vec<&'b [u8]>,
    /// What exists, as listed for the send run.
    pub send: Vec<&'b [u8]>,
    /// Directories the batch removed or replaced that are directories again: their remote
    /// copy is purged and everything in them now is sent.
    pub whole: Vec<&'b [u8]>,
    /// Dirty directories that still are directories: synced recursively, after the rest.
    pub trees: Vec<&'b [u8]>,
    /// Two-way mode: files found in a new directory, sent only where the remote lacks
    /// them ([`Action::Created`]).
    pub offer: Vec<&'b [u8]>,
}

/// `paths`, and the ancestors of `of` that `keep` keeps, sorted and without duplicates
/// (what a run with --relative makes on the peer).
fn with_ancestors<'a>(
    paths: impl IntoIterator<Item = &'a [u8]>,
    of: &[&'a [u8]],
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<&'a [u8]> {
    let mut all: Vec<&[u8]> = paths.into_iter().collect();
    for path in of {
        all.extend(crate::relpath::ancestors(path).filter(|ancestor| keep(ancestor)));
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// Sorts a batch's paths by what is at them (`locals`, in the batch's order) into what is
/// deleted, sent, purged whole and synced recursively. `seeded`: the renamed directories
/// a rename seed delivered already (their subtree is not sent again).
pub fn classify<'b>(batch: &'b Batch, locals: &[Local], seeded: &[Vec<u8>]) -> Lists<'b> {
    let mut lists = Lists::default();
    for ((path, action), local) in batch.entries.iter().zip(locals) {
        let (exists, is_dir) = match local {
            // An ancestor is a file or a symlink now: nothing below it exists, here or
            // (once that ancestor's own change is sent, which replaces it whole) on the
            // remote. A deletion run for this path would even turn the file or symlink
            // the remote has at that ancestor into a directory (its skeleton).
            Local::BelowNonDirectory => continue,
            Local::Missing => (false, false),
            Local::Directory => (true, true),
            Local::File { .. } | Local::Other => (true, false),
        };
        if *action == Action::Tree && is_dir {
            lists.trees.push(path);
            continue;
        }
        if *action == Action::Created && exists && !is_dir {
            lists.offer.push(path);
            continue;
        }
        // A directory the batch removes or replaces, that is a directory again now: the
        // changes below it were folded into that removal, so its remote copy is purged
        // and everything in it now is sent.
        let dir_again = is_dir && matches!(action, Action::Remove { dir: true } | Action::Replace);
        // A dirty directory that is gone, or no longer a directory, is purged like a
        // replaced one.
        let deleted = !exists || matches!(action, Action::Replace | Action::Tree) || dir_again;
        if deleted {
            lists.delete.push(path);
        }
        if dir_again && !path.is_empty() {
            lists.whole.push(path);
        }
        // A rename seed delivered its subtree already, except what the deletion run
        // (which comes after the seeds, since they copy from the old path) purges.
        if exists && (deleted || !seeded.iter().any(|to| is_at_or_below(path, to))) {
            lists.send.push(path);
        }
    }
    lists
}

/// Carries out jobs through an [`Edge`].
pub struct Plan<'e, E: Edge> {
    pub edge: &'e mut E,
    /// Bytes of listed paths passed as arguments before falling back to stdin.
    pub args_budget: usize,
    /// The large files a batch did not send, for the lane's large-file run
    /// ([`JobContext::large_files`]; see [`crate::queue::Queue::hand_large`]).
    pub large: Vec<(RelPath, Action)>,
    /// Two-way mode: the directories a full sync's pull made where this host's user
    /// removed one while it ran, after the pull's exclusions were read (top-most, sorted).
    /// The pull's dry run saw them here, so nothing announced them to the watcher, which
    /// took them for its user's: kept, they would be sent back, and the user's removal
    /// undone on both sides. The daemon takes them back ([`super::Outcome`]).
    pub pulled_over_removals: Vec<Vec<u8>>,
    /// Two-way mode: the paths this job's notices announced to the peer's watcher, told
    /// at the job's end that its runs are over ([`Announced::Ended`]).
    pub announced: Vec<Vec<u8>>,
}

impl<E: Edge> Plan<'_, E> {
    /// Runs `job` for `ctx` and returns what it amounts to.
    pub fn job(&mut self, job: &Job, ctx: &JobContext) -> Run {
        let run = self.runs_of(job, ctx);
        self.end_announcements(&run, ctx);
        run
    }

    /// Two-way mode, after a job whose notices announced paths to the peer: tells the
    /// peer's watcher that the runs they were for are over, so that what it still holds
    /// unmet ends now, not 30 s later (a directory announced and found there already, a
    /// removal the peer's user made first). Only when the job ended done (or with some
    /// files not transferred, exit 23): a failed job may not have reached the peer, and a
    /// notice to an unreachable peer would wait out the connection timeout; the peer's
    /// watcher then ends them after 30 s. A notice that fails changes nothing in the
    /// job's outcome. Sent also when every announcement was met already (the sender
    /// cannot tell): one more connection per such job.
    fn end_announcements(&mut self, run: &Run, ctx: &JobContext) {
        let mut ended = std::mem::take(&mut self.announced);
        if ended.is_empty() || !(run.result.is_done() || run.result == RunResult::Exited(23)) {
            return;
        }
        ended.sort_unstable();
        ended.dedup();
        let ended: Vec<(Vec<u8>, Announced)> = ended
            .into_iter()
            .map(|path| (path, Announced::Ended))
            .collect();
        if let Some(failed) = self.announce(&ended, ctx) {
            tracing::debug!(
                result = ?failed.result,
                "two-way: cannot tell the peer that the announced runs are over (its watcher \
                 ends the announcements in 30 s)"
            );
        }
    }

    fn runs_of(&mut self, job: &Job, ctx: &JobContext) -> Run {
        match job {
            Job::Batch(batch) if !batch.large && ctx.large_files.is_some() => {
                self.batch_without_large(batch, ctx)
            }
            Job::Batch(batch) => self.batch(batch, ctx),
            Job::FullSync { lane, reason, then } => {
                if ctx.full_syncs_delete() && *reason != FullSyncReason::Forced {
                    if let Some(refused) = self.full_sync_refusal(ctx) {
                        return refused;
                    }
                }
                let run = self.full_sync(*reason, ctx);
                if !run.result.is_done() || then.is_empty() {
                    return run;
                }
                // The changes that were pending when the full sync started.
                let covered = ctx.full_syncs_delete()
                    && !ctx.filter.enabled
                    && (*reason != FullSyncReason::Scheduled || ctx.crontab_excludes.is_empty());
                let batch = Batch {
                    lane: *lane,
                    entries: after_full_sync(then, covered),
                    renames: Vec::new(),
                    large: false,
                };
                if *reason == FullSyncReason::Forced {
                    // The operator vouched for the root as it is: its pending deletions go
                    // with the forced full sync (held again, they would bring it back).
                    let released = JobContext {
                        guard_released: true,
                        ..ctx.clone()
                    };
                    return self.batch(&batch, &released);
                }
                self.batch(&batch, ctx)
            }
        }
    }

    /// A batch whose new versions of large files are handed to the lane's large-file run
    /// ([`Plan::large`]) instead of going out with the rest.
    ///
    /// Not where the remote takes one connection at a time (the module's `max
    /// connections`, or `-n 1`): a large run beside the batches would be turned away or wait
    /// for a slot anyway. Not below a directory this batch renames either: its rename seed
    /// copies the file on the remote from the old path, which the batch then deletes.
    fn batch_without_large(&mut self, batch: &Batch, ctx: &JobContext) -> Run {
        if self.edge.ways() < 2 {
            return self.batch(batch, ctx);
        }
        let locals = self.edge.entries(batch);
        let threshold = ctx.large_files.unwrap_or(u64::MAX);
        let is_large = |(entry, local): (&(RelPath, Action), &Local)| {
            entry.1 == Action::Sync
                && matches!(local, Local::File { size } if *size >= threshold)
                && !batch
                    .renames
                    .iter()
                    .any(|(_, to)| is_at_or_below(&entry.0, to))
        };
        if !batch.entries.iter().zip(&locals).any(is_large) {
            return self.batch_at(batch, locals, ctx);
        }
        let mut small = Batch {
            lane: batch.lane,
            entries: Vec::with_capacity(batch.entries.len()),
            renames: batch.renames.clone(),
            large: false,
        };
        let mut small_locals = Vec::with_capacity(locals.len());
        for (entry, local) in batch.entries.iter().zip(locals) {
            if is_large((entry, &local)) {
                self.large.push(entry.clone());
            } else {
                small.entries.push(entry.clone());
                small_locals.push(local);
            }
        }
        if small.entries.is_empty() {
            return Run::ended(RunResult::Exited(0));
        }
        self.batch_at(&small, small_locals, ctx)
    }

    fn batch(&mut self, batch: &Batch, ctx: &JobContext) -> Run {
        let locals = self.edge.entries(batch);
        self.batch_at(batch, locals, ctx)
    }

    /// Runs `batch`, whose paths are `locals` now.
    fn batch_at(&mut self, batch: &Batch, locals: Vec<Local>, ctx: &JobContext) -> Run {
        let seeded = self.seed_renames(batch, ctx);
        // What no longer exists locally (or was replaced) is deleted on the
        // remote first; what exists is sent. rsync never sees a missing argument.
        let Lists {
            delete,
            mut send,
            whole,
            trees,
            offer,
        } = classify(batch, &locals, &seeded);
        let below = if whole.is_empty() {
            Vec::new()
        } else {
            self.edge.subtrees(&whole)
        };
        if !below.is_empty() {
            send.extend(below.iter().map(Vec::as_slice));
            send.sort_unstable();
            send.dedup();
        }
        if ctx.propagate_deletes && !(delete.is_empty() && trees.is_empty()) {
            if let Some(reason) = self.deletion_refusal(ctx) {
                // Deletions wait for the root's filesystem; what exists is still sent.
                let held: Vec<RelPath> = delete.iter().chain(&trees).map(|p| p.to_vec()).collect();
                if !send.is_empty() || !offer.is_empty() {
                    let sent = self.send_and_offer(&send, &offer, ctx);
                    if !sent.result.is_done() {
                        return sent;
                    }
                }
                // What is new or changed in a held dirty directory still goes (without
                // deleting anything); the directory stays held for its deletions.
                let additions: Vec<&[u8]> = trees
                    .iter()
                    .copied()
                    .filter(|tree| !tree.is_empty())
                    .collect();
                if !additions.is_empty() {
                    let (argv, stdin) = argv::trees(&ctx.transport, false, &additions);
                    let sent = self.edge.run(RunSpec::at_root(argv, stdin));
                    if !sent.result.is_done() {
                        return sent;
                    }
                }
                return Run::ended(RunResult::Guarded {
                    reason,
                    held,
                    latch: false,
                });
            }
        }
        if ctx.propagate_deletes && !delete.is_empty() {
            let run = if ctx.transport.options.two_way {
                self.delete_unless_newer(&delete, ctx)
            } else {
                self.delete_in_groups(&delete, ctx)
            };
            if !run.result.is_done() {
                // A deletion the receiver refused (exit 23) must not hold back the
                // sends of the batch: they are independent paths. Anything else
                // (the remote is unreachable, a configuration error) fails the
                // whole batch at once.
                if run.result != RunResult::Exited(23)
                    || (send.is_empty() && offer.is_empty() && trees.is_empty())
                {
                    return run;
                }
                let sent = self.send_and_sync_trees(&send, &offer, &trees, ctx);
                return Run::worst([run, sent]);
            }
        }
        self.send_and_sync_trees(&send, &offer, &trees, ctx)
    }

    /// Deletes `delete` on the remote: runs from a skeleton of their ancestors, split over
    /// disjoint subtrees when there are many (one run when the module refuses more).
    fn delete_in_groups(&mut self, delete: &[&[u8]], ctx: &JobContext) -> Run {
        let groups = argv::deletion_groups(delete.iter().copied(), self.edge.ways());
        let mut ancestors: Vec<Vec<u8>> =
            groups.iter().flat_map(|(_, a)| a.iter().cloned()).collect();
        ancestors.sort_unstable();
        ancestors.dedup();
        let argv = argv::deletion(&ctx.transport);
        // Disjoint subtrees: the runs cannot delete each other's paths.
        let split = groups.len() > 1;
        let runs = groups
            .into_iter()
            .map(|(rules, _)| RunSpec {
                argv: argv.clone(),
                stdin: rules,
                at: At::Skeleton(ancestors.clone()),
                capture_stdout: Capture::Tail,
            })
            .collect();
        let run = Run::worst(self.edge.run_concurrently(runs));
        if !(split && refused_at_start(&run)) {
            return run;
        }
        self.edge.go_serial();
        let (rules, _) = argv::deletion_rules(delete.iter().copied());
        self.edge.run(RunSpec {
            argv,
            stdin: rules,
            at: At::Skeleton(ancestors),
            capture_stdout: Capture::Tail,
        })
    }

    /// Two-way mode: deletes `delete` on the peer, except the versions there that are newer
    /// than the deletion (see `super::two_way`): those are protected from the deletion run
    /// and pulled back here, so that both sides keep them.
    fn delete_unless_newer(&mut self, delete: &[&[u8]], ctx: &JobContext) -> Run {
        self.delete_two_way(delete, Judged::ByDeletion, ctx)
    }

    /// [`Plan::delete_unless_newer`], judging the peer's copies as `judged` says.
    fn delete_two_way(&mut self, delete: &[&[u8]], judged: Judged, ctx: &JobContext) -> Run {
        let (rules, ancestors) = argv::deletion_rules(delete.iter().copied());
        let listing = self.edge.run(RunSpec {
            capture_stdout: Capture::All,
            ..RunSpec::at_root(argv::deletion_listing(&ctx.transport), rules.clone())
        });
        if !listing.result.is_done() {
            return listing;
        }
        // The listing shows the targets' ancestors too: they are not deleted.
        let mut listed = super::two_way::parse_listing(&listing.stdout);
        listed.retain(|entry| {
            delete
                .iter()
                .any(|target| is_at_or_below(&entry.path, target))
        });
        // Only what the listing showed is deleted. A target the peer did not have is
        // what it made anew after the listing if it is there when the run comes (an
        // empty directory the peer deleted here, seen here and sent back as a deletion
        // while the peer's writer made it again: rsync's --backup keeps no empty
        // directory, so the peer's removal of one cannot be told from this host's).
        let shown: std::collections::HashSet<&[u8]> =
            listed.iter().map(|entry| entry.path.as_slice()).collect();
        let present: Vec<&[u8]> = delete
            .iter()
            .copied()
            .filter(|target| shown.contains(target))
            .collect();
        if present.is_empty() {
            self.edge.record_peer_lacks(delete);
            return listing;
        }
        let (rules, ancestors) = if present.len() == delete.len() {
            (rules, ancestors)
        } else {
            argv::deletion_rules(present.iter().copied())
        };
        let newer = match judged {
            Judged::ByDeletion => super::two_way::spared(
                &listed,
                |path| ctx.deleted_at(path),
                |path| ctx.history(path),
                ctx.history_complete_since(),
            ),
            Judged::OnlyVersionsHad => {
                super::two_way::spared_unless_had(&listed, |path| ctx.history(path))
            }
        };
        // A directory that is a directory here too is not deleted there (it would be sent
        // again; a deletion seen here and sent back while the peer made the directory anew
        // would take its empty directories otherwise), but what is in it is judged like
        // the rest: it goes into the skeleton, so the run descends into it.
        let listed_dirs: Vec<&[u8]> = listed
            .iter()
            .filter(|entry| entry.size == super::two_way::Version::DIRECTORY.size)
            .map(|entry| entry.path.as_slice())
            .collect();
        let here: Vec<Vec<u8>> = if listed_dirs.is_empty() {
            Vec::new()
        } else {
            let flags = self.edge.are_directories(&listed_dirs);
            listed_dirs
                .into_iter()
                .zip(flags)
                .filter(|(_, is_dir)| *is_dir)
                .map(|(path, _)| path.to_vec())
                .collect()
        };
        let newer: Vec<Vec<u8>> = newer
            .into_iter()
            .filter(|path| !here.contains(path))
            .collect();
        let mut skeleton = ancestors;
        skeleton.extend(here);
        skeleton.sort_unstable();
        skeleton.dedup();
        // The directories the run removes, which leave nothing in the soft-delete
        // directory when they are empty: announced, or the peer sends their removal back.
        let removed: Vec<(Vec<u8>, Announced)> = listed
            .iter()
            .filter(|entry| entry.size == super::two_way::Version::DIRECTORY.size)
            .filter(|entry| {
                !skeleton
                    .iter()
                    .chain(&newer)
                    .any(|kept| is_at_or_below(kept, &entry.path))
            })
            .map(|entry| (entry.path.clone(), Announced::Removed))
            .collect();
        if let Some(failed) = self.announce(&removed, ctx) {
            return failed;
        }
        let mut stdin = Vec::new();
        for path in &newer {
            stdin.extend(argv::protect_rule(path));
            stdin.push(0);
        }
        // Only what the listing showed goes: what the peer made below a target since
        // (a file written into a directory being deleted) is protected, and keeps its
        // directory. The receiver matches every entry against every rule: above
        // `EXACT_DELETION_MAX` listed entries the run deletes whole subtrees as listed at
        // its start (README, two-way limits).
        const EXACT_DELETION_MAX: usize = 2_000;
        if listed.len() <= EXACT_DELETION_MAX {
            for entry in &listed {
                stdin.extend(argv::risk_rule(&entry.path));
                stdin.push(0);
            }
            for target in &present {
                stdin.extend(argv::protect_subtree_rule(target));
                stdin.push(0);
            }
        }
        stdin.extend(rules);
        let deleted = self.edge.run(RunSpec {
            argv: argv::deletion(&ctx.transport),
            stdin,
            at: At::Skeleton(skeleton),
            capture_stdout: Capture::Tail,
        });
        if deleted.result.is_done() {
            // Delivered: a later full sync must not delete there again what the peer's
            // user makes at these paths (what was spared is had here again once pulled).
            self.edge.record_peer_lacks(delete);
        }
        if !(deleted.result.is_done() || deleted.result == RunResult::Exited(23)) {
            return deleted;
        }
        let deleted = match self.send_back_what_came_meanwhile(&listed, &newer, ctx) {
            Some(sent) => Run::worst([deleted, sent]),
            None => deleted,
        };
        if newer.is_empty() {
            return deleted;
        }
        tracing::info!(
            kept = newer.len(),
            "two-way: not deleted on the peer, which has newer versions; pulling them back"
        );
        let newer: Vec<&[u8]> = newer.iter().map(Vec::as_slice).collect();
        let pulled = self.pull(&newer, false, ctx);
        Run::worst([deleted, pulled])
    }

    /// Two-way mode, after a deletion run: sends again the files it deleted on the peer
    /// that are here now (`listed` but not `spared`). The peer's run that sent one here
    /// crossed the deletion (a file the peer's user renamed into a directory this host's
    /// user renamed away at the same moment, seed 1 of the randomized two-way rounds):
    /// this host kept the arrival, the peer lost its copy to the deletion (into its
    /// trash), and nothing would send it again. Sent, both sides keep it.
    fn send_back_what_came_meanwhile(
        &mut self,
        listed: &[super::two_way::Listed],
        spared: &[Vec<u8>],
        ctx: &JobContext,
    ) -> Option<Run> {
        let deleted: Vec<&[u8]> = listed
            .iter()
            .filter(|entry| entry.size != super::two_way::Version::DIRECTORY.size)
            .map(|entry| entry.path.as_slice())
            .filter(|path| {
                !spared
                    .iter()
                    .any(|kept| is_at_or_below(path, kept.as_slice()))
            })
            .collect();
        if deleted.is_empty() {
            return None;
        }
        let back = self.files_here(deleted);
        if back.is_empty() {
            return None;
        }
        tracing::info!(
            paths = back.len(),
            "two-way: files deleted on the peer are here now (sent here while the deletion ran); sending them again"
        );
        Some(self.send_newest(&back, ctx))
    }

    /// Those of `paths` that are a file, symlink or special file here now.
    fn files_here<'p>(&mut self, paths: Vec<&'p [u8]>) -> Vec<&'p [u8]> {
        let here = self.edge.versions(&paths);
        paths
            .into_iter()
            .zip(here)
            .filter(|(_, version)| version.is_some())
            .map(|(path, _)| path)
            .collect()
    }

    /// Two-way mode: pulls `paths` (recursively when `recursive`) from the peer into the
    /// root, unless the root's filesystem is not the one to write to (unmounted, say).
    fn pull(&mut self, paths: &[&[u8]], recursive: bool, ctx: &JobContext) -> Run {
        if let Some(refused) = self.pull_refusal(ctx) {
            return refused;
        }
        let (argv, stdin) = argv::pull_listed(&ctx.transport, paths, recursive);
        self.announce_own_pull(&argv, &stdin);
        self.edge.run(RunSpec::at_root(argv, stdin))
    }

    /// Two-way mode, before a pull: tells this host's own watcher what the pull will make
    /// in place (directories, symlinks, special files; files come through the incoming
    /// directory and are told apart by that), found by a dry run of the same pull. Seen as
    /// this host's own, they would be sent back: a directory the peer's user removed
    /// meanwhile would come back there. Without the dry run's answer the pull goes on
    /// unannounced.
    fn announce_own_pull(&mut self, argv: &[OsString], stdin: &[u8]) {
        let dry = self.edge.run(RunSpec {
            capture_stdout: Capture::All,
            ..RunSpec::at_root(argv::dry_run_itemized(argv), stdin.to_vec())
        });
        if !(dry.result.is_done() || dry.result == RunResult::Exited(23)) {
            return;
        }
        let made = super::two_way::parse_made(&dry.stdout);
        if !made.is_empty() {
            self.edge.announce_here(&made);
        }
    }

    /// Why nothing may be pulled into the root now, as a guarded run: the replica guard's
    /// reasons not to trust the root's filesystem (a pull into the empty mount point of an
    /// unmounted root would fill the wrong filesystem with the peer's tree).
    fn pull_refusal(&mut self, ctx: &JobContext) -> Option<Run> {
        if ctx.guard_released {
            return None;
        }
        self.edge.guard_refusal().map(|reason| {
            Run::ended(RunResult::Guarded {
                reason,
                held: Vec::new(),
                latch: false,
            })
        })
    }

    /// Sends `send`, then offers `offer` (sent only where the remote lacks them).
    fn send_and_offer(&mut self, send: &[&[u8]], offer: &[&[u8]], ctx: &JobContext) -> Run {
        let sent = if send.is_empty() {
            Run::ended(RunResult::Exited(0))
        } else if ctx.transport.options.two_way {
            self.send_newest(send, ctx)
        } else {
            let spec = self.send_run(ctx, send);
            self.edge.send(spec, send)
        };
        if offer.is_empty() || !(sent.result.is_done() || sent.result == RunResult::Exited(23)) {
            return sent;
        }
        let offered = self.offer(offer, ctx);
        Run::worst([sent, offered])
    }

    /// Two-way mode: offers `paths`, files found in directories that were new here
    /// ([`Action::Created`]), which may be echoes of the peer's own files: each is sent
    /// only where the peer lacks it, never over a copy there. Where the peer's copy wins
    /// instead (newer; in the same second, larger: a rule both hosts read alike), it is
    /// pulled: the same new directory made on both hosts at once, with a file at one path,
    /// would otherwise keep each host's own file for good. Where this host's copy wins,
    /// the peer's offer pulls it.
    fn offer(&mut self, paths: &[&[u8]], ctx: &JobContext) -> Run {
        let listed = match self.list_peer_copies(paths, ctx) {
            Ok(listed) => listed,
            Err(failed) => return failed,
        };
        let there = super::two_way::Listed::by_path(&listed);
        let mut lacking = Vec::new();
        let mut peer_wins = Vec::new();
        for (path, here) in paths.iter().copied().zip(self.edge.versions(paths)) {
            let Some(here) = here else { continue };
            match there.get(path) {
                None => lacking.push(path),
                Some(there) if super::two_way::offered_copy_loses(here, there.version()) => {
                    peer_wins.push(path);
                }
                Some(_) => {}
            }
        }
        let mut runs = vec![Run::ended(RunResult::Exited(0))];
        if !lacking.is_empty() {
            // Announced like a send's (see `send_newest`), the ancestors whether or not
            // the peer has them (an announcement that is met already costs nothing).
            let in_place = with_ancestors(lacking.iter().copied(), &lacking, |_| true);
            if let Some(failed) = self.announce_made(&in_place, ctx) {
                return failed;
            }
            let (mut argv, stdin) = argv::batch_listed(&ctx.transport, &lacking, self.args_budget);
            // Before the paths: rsync reads its options first. A copy the peer makes
            // after the listing stays too.
            argv.insert(0, OsString::from("--ignore-existing"));
            runs.push(self.run_recording_sent(RunSpec::at_root(argv, stdin)));
        }
        if !peer_wins.is_empty() {
            runs.push(self.pull(&peer_wins, false, ctx));
        }
        Run::worst(runs)
    }

    /// Two-way mode: the peer's copies of exactly `paths` (and their ancestors), or the
    /// listing run that failed.
    fn list_peer_copies(
        &mut self,
        paths: &[&[u8]],
        ctx: &JobContext,
    ) -> Result<Vec<super::two_way::Listed>, Run> {
        let listing = self.edge.run(RunSpec {
            capture_stdout: Capture::All,
            ..RunSpec::at_root(
                argv::deletion_listing(&ctx.transport),
                argv::exact_listing_rules(paths.iter().copied()),
            )
        });
        if !listing.result.is_done() {
            return Err(listing);
        }
        Ok(super::two_way::parse_listing(&listing.stdout))
    }

    /// Two-way mode: sends `paths` with `--update` (a newer file there is the peer's and
    /// stays), except those whose copy there is a version this host had: a file renamed
    /// over one, or restored, with an older time, replaces it all the same. The peer's
    /// copies are listed first to tell (see `super::two_way::stale`).
    fn send_newest(&mut self, paths: &[&[u8]], ctx: &JobContext) -> Run {
        let listed = match self.list_peer_copies(paths, ctx) {
            Ok(listed) => listed,
            Err(failed) => return failed,
        };
        let stale = super::two_way::stale(&listed, |path| ctx.history(path));
        let stale_set: std::collections::HashSet<&[u8]> = stale.iter().map(Vec::as_slice).collect();
        let there = super::two_way::Listed::by_path(&listed);
        // A copy there that is newer than this host's and not a version it had: --update
        // keeps it there, so it is pulled here, or the two sides would differ for good
        // (this host's copy is older: renamed over the path, or restored, after a restart
        // that forgot the versions that tell).
        let peer_newer: std::collections::HashSet<&[u8]> = paths
            .iter()
            .copied()
            .zip(self.edge.versions(paths))
            .filter_map(|(path, here)| {
                let here = here?;
                let there = there.get(path)?;
                let newer = there.size != super::two_way::Version::DIRECTORY.size
                    && there.mtime > here.mtime
                    && !stale_set.contains(path);
                newer.then_some(path)
            })
            .collect();
        // What rsync makes in place there: the directories, symlinks and special files
        // sent, and the ancestors the peer lacks (made by --relative); not what is pulled.
        let in_place = with_ancestors(
            paths
                .iter()
                .copied()
                .filter(|path| !peer_newer.contains(path)),
            paths,
            |ancestor| !there.contains_key(ancestor),
        );
        if let Some(failed) = self.announce_made(&in_place, ctx) {
            return failed;
        }
        let newest: Vec<&[u8]> = paths
            .iter()
            .copied()
            .filter(|path| !stale_set.contains(path) && !peer_newer.contains(path))
            .collect();
        let started = std::time::Instant::now();
        let sent = if newest.is_empty() {
            Run::ended(RunResult::Exited(0))
        } else {
            let spec = self.send_run(ctx, &newest);
            self.run_recording_sent(spec)
        };
        if sent.result == RunResult::Exited(0) {
            self.edge.record_delivered(&newest, started);
        }
        if !(sent.result.is_done() || sent.result == RunResult::Exited(23)) {
            return sent;
        }
        let undo = self.undo_directories_made_after_their_removal(&sent.stdout, ctx);
        let mut runs = vec![sent];
        runs.extend(undo);
        if !stale.is_empty() {
            let stale: Vec<&[u8]> = stale.iter().map(Vec::as_slice).collect();
            let (argv, stdin) = argv::batch_replacing(&ctx.transport, &stale, self.args_budget);
            runs.push(self.run_recording_sent(RunSpec::at_root(argv, stdin)));
        }
        if !peer_newer.is_empty() {
            let mut pulled: Vec<&[u8]> = peer_newer.into_iter().collect();
            pulled.sort_unstable();
            runs.push(self.pull(&pulled, false, ctx));
        }
        Run::worst(runs)
    }

    /// Two-way mode, after a send: deletes on the peer the directories the send made
    /// there (`send_stdout`, its itemized lines) that are gone here by now. The peer's
    /// deletion of such a directory crossed the send (seed 3 of the two-way rounds: the
    /// peer's user renamed the directory away; its deletion run removed it here while
    /// this host's send of a file in it, listed before, made it there again, and the
    /// file vanished: the peer kept an empty directory, this host none, and each took
    /// the other's change for its peer's). Gone here by this host's user, its deletion
    /// is on its way anyway. Only what this host had goes (see `delete_two_way`): what
    /// the peer's user put in it since stays, and keeps it.
    fn undo_directories_made_after_their_removal(
        &mut self,
        send_stdout: &[u8],
        ctx: &JobContext,
    ) -> Option<Run> {
        let made = super::two_way::parse_made_by_send(send_stdout);
        // Deleted only where this root's deletions go at all: not with deletions off,
        // nor while they are held or the replica guard distrusts the root (an unmounted
        // filesystem would make every directory the send made look gone).
        if made.is_empty() || !ctx.propagate_deletes || self.deletion_refusal(ctx).is_some() {
            return None;
        }
        let made: Vec<&[u8]> = made.iter().map(Vec::as_slice).collect();
        let flags = self.edge.are_directories(&made);
        let gone: Vec<Vec<u8>> = made
            .into_iter()
            .zip(flags)
            .filter(|(_, is_dir)| !is_dir)
            .map(|(path, _)| path.to_vec())
            .collect();
        if gone.is_empty() {
            return None;
        }
        let gone = crate::relpath::top_most(gone);
        tracing::info!(
            paths = gone.len(),
            "two-way: directories this send made on the peer are gone here since (the peer's \
             deletion crossed the send); deleting them there"
        );
        let gone: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        Some(self.delete_two_way(&gone, Judged::OnlyVersionsHad, ctx))
    }

    /// Two-way mode: runs `spec`, a send, and records what it delivered as versions this
    /// host had, read from what it prints ([`argv::reporting_sent`]). The versions the
    /// batch looked at are recorded already, but a file renamed over a path after the
    /// look is what rsync sends: unrecorded, the peer's copy of it would be spared by
    /// this host's deletion of the path as a version this host never had.
    ///
    /// Recorded as had since the run started: rsync read each file after that, and a
    /// removal seen while the run went on must not make it look had again after it.
    fn run_recording_sent(&mut self, spec: RunSpec) -> Run {
        let started = std::time::SystemTime::now();
        let run = self.edge.run(RunSpec {
            argv: argv::reporting_sent(&spec.argv),
            capture_stdout: Capture::All,
            ..spec
        });
        let sent = super::two_way::parse_sent(&run.stdout);
        if !sent.is_empty() {
            self.edge.record_sent(&sent, started);
        }
        run
    }

    /// Two-way mode: announces what of `paths` (sorted) rsync makes in place on the peer
    /// (see [`Announced`]); the failed run if it could not.
    fn announce_made(&mut self, paths: &[&[u8]], ctx: &JobContext) -> Option<Run> {
        let made: Vec<(Vec<u8>, Announced)> = paths
            .iter()
            .zip(self.edge.in_place(paths))
            .filter_map(|(path, made)| Some((path.to_vec(), made?)))
            .collect();
        self.announce(&made, ctx)
    }

    /// Two-way mode: leaves a notice of `entries` in the peer's incoming directory for
    /// its watcher, before the run that makes or removes them there in place (see
    /// [`Announced`]); the failed run if it could not.
    fn announce(&mut self, entries: &[(Vec<u8>, Announced)], ctx: &JobContext) -> Option<Run> {
        if entries.is_empty() || !ctx.transport.options.two_way {
            return None;
        }
        let name = super::two_way::notice_name();
        let noticed = self.edge.run(RunSpec {
            argv: argv::notice(&ctx.transport, &name),
            stdin: Vec::new(),
            at: At::Holding {
                name,
                contents: super::two_way::encode_notice(entries),
            },
            capture_stdout: Capture::Tail,
        });
        if !noticed.result.is_done() {
            return Some(noticed);
        }
        self.announced.extend(
            entries
                .iter()
                // Not what a push announced as pushed again: its outcome notice ends
                // those (`tell_resent_outcome`).
                .filter(|(_, announced)| {
                    !matches!(
                        announced,
                        Announced::ResentDirectory { .. }
                            | Announced::ResentOutcome { .. }
                            | Announced::Ended
                    )
                })
                .map(|(path, _)| path.clone()),
        );
        None
    }

    /// The send run of `paths` (listed), from the root.
    fn send_run(&self, ctx: &JobContext, paths: &[&[u8]]) -> RunSpec {
        let (argv, stdin) = argv::batch_listed(&ctx.transport, paths, self.args_budget);
        RunSpec::at_root(argv, stdin)
    }

    /// Why a run that deletes on the remote must not run now (see [`crate::guard`]).
    fn deletion_refusal(&mut self, ctx: &JobContext) -> Option<String> {
        if ctx.guard_released {
            return None;
        }
        ctx.deletions_held
            .clone()
            .or_else(|| self.edge.guard_refusal())
    }

    /// Sends `send` (as listed), then makes the remote copies of the directories `trees`
    /// equal to them, recursively. The root itself folded into one (it is then a full
    /// sync in all but name), or any under a `<filter>` (which rsync cannot apply by
    /// itself), are done by a full sync, with its guards.
    fn send_and_sync_trees(
        &mut self,
        send: &[&[u8]],
        offer: &[&[u8]],
        trees: &[&[u8]],
        ctx: &JobContext,
    ) -> Run {
        let sent = self.send_and_offer(send, offer, ctx);
        if trees.is_empty() || !(sent.result.is_done() || sent.result == RunResult::Exited(23)) {
            return sent;
        }
        let synced = if ctx.filter.enabled || trees.iter().any(|tree| tree.is_empty()) {
            let refused = if ctx.full_syncs_delete() {
                self.full_sync_refusal(ctx)
            } else {
                None
            };
            refused.unwrap_or_else(|| self.full_sync(FullSyncReason::Rescan, ctx))
        } else {
            let (argv, stdin) = argv::trees(&ctx.transport, ctx.propagate_deletes, trees);
            let pushed = self.edge.run(RunSpec::at_root(argv, stdin));
            if ctx.transport.options.two_way && pushed.result.is_done() {
                // Reconciled both ways, never mirrored: see `super::two_way`.
                let pulled = self.pull(trees, true, ctx);
                Run::worst([pushed, pulled])
            } else {
                pushed
            }
        };
        match synced.result {
            // Held, the dirty directories wait (with what failed to send, so that nothing
            // counts as delivered that was not).
            RunResult::Guarded { reason, latch, .. } => {
                let mut held: Vec<RelPath> = trees.iter().map(|p| p.to_vec()).collect();
                if !sent.result.is_done() {
                    held.extend(send.iter().map(|p| p.to_vec()));
                }
                Run::ended(RunResult::Guarded {
                    reason,
                    held,
                    latch,
                })
            }
            _ => Run::worst([sent, synced]),
        }
    }

    /// Why a full sync with `--delete` must not run now, as a guarded run (see
    /// [`crate::guard`]); a failed listing of the remote is returned as that failure.
    fn full_sync_refusal(&mut self, ctx: &JobContext) -> Option<Run> {
        let guarded = |reason: String| {
            Some(Run::ended(RunResult::Guarded {
                reason,
                held: Vec::new(),
                latch: false,
            }))
        };
        if let Some(reason) = self.deletion_refusal(ctx) {
            return guarded(reason);
        }
        match self.edge.root_is_empty() {
            Ok(false) => None,
            Err(err) => guarded(format!("cannot read the root: {err}")),
            Ok(true) => {
                // Only an empty root costs a listing of the remote's top level.
                let listing = self.edge.run(RunSpec {
                    capture_stdout: Capture::All,
                    ..RunSpec::at_root(argv::list_top(&ctx.transport), Vec::new())
                });
                if !listing.result.is_done() {
                    return Some(listing);
                }
                if argv::listing_has_entries(&listing.stdout) {
                    guarded(
                        "the root is empty while the remote is not: a full sync would delete \
                         everything there"
                            .to_owned(),
                    )
                } else {
                    None
                }
            }
        }
    }

    fn full_sync(&mut self, reason: FullSyncReason, ctx: &JobContext) -> Run {
        if ctx.transport.options.two_way {
            return self.reconcile(reason, ctx);
        }
        let mut rules = FullSyncRules {
            glob_excludes: if reason == FullSyncReason::Scheduled {
                ctx.crontab_excludes.clone()
            } else {
                Vec::new()
            },
            rules_on_stdin: ctx.filter.enabled,
        };
        let mut stdin = Vec::new();
        if ctx.filter.enabled {
            for path in self.edge.excluded_paths() {
                stdin.extend(argv::exclude_rule(&path));
                stdin.push(0);
            }
        }
        // Remote-only paths that the filter excludes must survive --delete, and the
        // replica guard must know how much the full sync would delete: both are asked of
        // rsync by a dry run of the same full sync.
        let protect_excluded = ctx.filter.enabled && ctx.propagate_deletes;
        let count_deletions = ctx.propagate_deletes
            && reason != FullSyncReason::Forced
            && !ctx.guard_released
            && crate::guard::limits_deletions(&ctx.delete_guard);
        if protect_excluded || count_deletions {
            let run = self.edge.run(RunSpec {
                capture_stdout: Capture::All,
                ..RunSpec::at_root(
                    argv::full_sync(&ctx.transport, true, &rules, true),
                    stdin.clone(),
                )
            });
            // An unreadable entry (exit 23) does not stop the count: rsync lists what it
            // would delete all the same (and deletes nothing after an I/O error). The
            // protection of excluded paths needs a complete list.
            let partial = run.result == RunResult::Exited(23);
            if !(run.result.is_done() || (partial && !protect_excluded)) {
                return run;
            }
            let mut protected = 0;
            if protect_excluded {
                for (path, is_dir) in argv::parse_deletions(&run.stdout) {
                    if excluded_with_ancestors(&ctx.filter, &path, is_dir) {
                        stdin.extend(argv::protect_rule(&path));
                        stdin.push(0);
                        protected += 1;
                    }
                }
            }
            if count_deletions {
                let mut preview = crate::guard::FullSyncPreview::parse(&run.stdout);
                // What the filter protects is not deleted, and stays on the remote.
                preview.deleted = preview.deleted.saturating_sub(protected);
                preview.kept = preview.kept.map(|kept| kept + protected);
                if let Some(reason) = preview.refusal(&ctx.delete_guard) {
                    return Run::ended(RunResult::Guarded {
                        reason,
                        held: Vec::new(),
                        latch: true,
                    });
                }
            }
        }
        rules.rules_on_stdin = !stdin.is_empty();
        self.push_whole(&rules, stdin, false, ctx)
    }

    /// Two-way mode's full sync: the root pushed with `--update` and no deletions, then
    /// the peer's pulled the same way (see `super::two_way`). Each side ends with the union
    /// of both, the newer version of each file.
    fn reconcile(&mut self, reason: FullSyncReason, ctx: &JobContext) -> Run {
        if let Some(failed) = self.delete_gone_since_known(ctx) {
            return failed;
        }
        // What the push delivers are versions this host had: a later deletion or rename
        // here must remove them there (a file changed while sersyncd was stopped reaches
        // the peer by this push alone).
        let new_here = self.edge.record_tree_versions();
        if let Some(failed) = self.replace_stale_copies(ctx) {
            return failed;
        }
        let rules = FullSyncRules {
            glob_excludes: if reason == FullSyncReason::Scheduled {
                ctx.crontab_excludes.clone()
            } else {
                Vec::new()
            },
            rules_on_stdin: false,
        };
        let resent = match self.announce_push(&rules, &new_here, ctx) {
            Ok(resent) => resent,
            Err(failed) => return failed,
        };
        let pushed = self.push_whole(&rules, Vec::new(), !resent.is_empty(), ctx);
        if let Some(failed) = self.tell_resent_outcome(&resent, &pushed.stdout, ctx) {
            return failed;
        }
        if !pushed.result.is_done() {
            return pushed;
        }
        if let Some(refused) = self.pull_refusal(ctx) {
            return refused;
        }
        // What this host's user removed in the last minute is not pulled back: the push
        // may have listed it before the removal, and the peer may not have seen it yet.
        // A newer version there is kept and pulled by the deletion run (which spares it).
        // What the user removes from now on, the pull may make again.
        let excluded_at = std::time::SystemTime::now();
        let mut stdin = Vec::new();
        for path in ctx.removed_lately() {
            stdin.extend(argv::exclude_rule(&path));
            stdin.push(0);
        }
        let rules = FullSyncRules {
            rules_on_stdin: !stdin.is_empty(),
            ..rules
        };
        let argv = argv::pull(&ctx.transport, &rules);
        self.announce_own_pull(&argv, &stdin);
        // Of what it itemizes, only the directories it made are read: the rest (a line
        // per file of a first pull of a large tree) is not held.
        let pulled = self.edge.run(RunSpec {
            capture_stdout: Capture::LinesStarting(super::two_way::MADE_DIRECTORY),
            ..RunSpec::at_root(argv::itemized(&argv), stdin)
        });
        self.pulled_over_removals = made_over_removals(&pulled.stdout, excluded_at, ctx);
        Run::worst([pushed, pulled])
    }

    /// Two-way mode, before a full sync's push: tells the peer's watcher what the push
    /// will make in place there (directories, symlinks, special files), found by a dry
    /// run of the same push. Seen as its user's, they would be sent back, and a directory
    /// the peer's user removed while this host was stopped (or in the moment before this
    /// push) would live on; announced, the peer's watcher takes them for arrivals, and the
    /// peer removes again an arrived directory it removed moments ago (see
    /// `Daemon::undo_returned_directories`). Not the directories of `new_here` (sorted):
    /// made here since the peer's removal of one at that path reached this host, or where
    /// this host never had one (what the peer's runs made while sersyncd was stopped is
    /// had: their notices say so), they are this host's user's new ones, and a removal
    /// there moments ago does not make them old. Returns the directories announced as
    /// pushed again (sorted), whose outcome the peer is told after the push
    /// (`tell_resent_outcome`). Without the dry run's answer the push goes on
    /// unannounced; a failed notice ends the full sync.
    fn announce_push(
        &mut self,
        rules: &FullSyncRules,
        new_here: &[Vec<u8>],
        ctx: &JobContext,
    ) -> Result<Vec<Vec<u8>>, Run> {
        let mut argv = argv::full_sync(&ctx.transport, ctx.propagate_deletes, rules, false);
        argv.retain(|word| word != argv::REPORT_PROGRESS);
        let dry = self.edge.run(RunSpec {
            capture_stdout: Capture::All,
            ..RunSpec::at_root(argv::dry_run_itemized(&argv), Vec::new())
        });
        if !(dry.result.is_done() || dry.result == RunResult::Exited(23)) {
            return Ok(Vec::new());
        }
        let made: Vec<(Vec<u8>, Announced)> = super::two_way::parse_made(&dry.stdout)
            .into_iter()
            .map(|(path, made)| match made {
                Announced::Directory { mode } if new_here.binary_search(&path).is_err() => {
                    (path, Announced::ResentDirectory { mode })
                }
                other => (path, other),
            })
            .collect();
        if let Some(failed) = self.announce(&made, ctx) {
            return Err(failed);
        }
        let mut resent: Vec<Vec<u8>> = made
            .into_iter()
            .filter(|(_, made)| matches!(made, Announced::ResentDirectory { .. }))
            .map(|(path, _)| path)
            .collect();
        resent.sort();
        Ok(resent)
    }

    /// Two-way mode, after a full sync's push: tells the peer which of the directories
    /// announced as pushed again (`resent`, sorted) the push made (`push_stdout`: what it
    /// itemized, see [`Capture::LinesStarting`]), and which it found there or left out.
    /// The peer takes back only what the push made: a directory its user made in the
    /// moment between the announcement and the push meets the announcement just the same
    /// (seed 1), and is the user's. The failed notice if it could not be told (the peer
    /// then keeps them all: resurrection, the safe failure).
    fn tell_resent_outcome(
        &mut self,
        resent: &[Vec<u8>],
        push_stdout: &[u8],
        ctx: &JobContext,
    ) -> Option<Run> {
        if resent.is_empty() {
            return None;
        }
        let made: std::collections::HashSet<Vec<u8>> = super::two_way::parse_made(push_stdout)
            .into_iter()
            .filter(|(_, made)| matches!(made, Announced::Directory { .. }))
            .map(|(path, _)| path)
            .collect();
        let outcome: Vec<(Vec<u8>, Announced)> = resent
            .iter()
            .map(|path| {
                let made = made.contains(path);
                (path.clone(), Announced::ResentOutcome { made })
            })
            .collect();
        self.announce(&outcome, ctx)
    }

    /// Two-way mode, before a full sync pulls the peer's tree: deletes on the peer what
    /// this host had and no longer has — removed while sersyncd was stopped, or whose
    /// deletion a kill -9 cut short — by the rules of every deletion (only versions this
    /// host had go, see `super::two_way`). Without this step the pull would bring them
    /// back. Nothing is deleted where the replica guard distrusts the root or the root is
    /// empty (an unmounted filesystem has lost nothing). Returns a failure that ends the
    /// full sync.
    fn delete_gone_since_known(&mut self, ctx: &JobContext) -> Option<Run> {
        if !ctx.propagate_deletes {
            return None;
        }
        let gone = self.edge.gone_since_known();
        if gone.is_empty() {
            return None;
        }
        if let Some(reason) = self.deletion_refusal(ctx) {
            tracing::warn!(
                paths = gone.len(),
                "two-way: not deleting on the peer what is gone here since this host had it: {reason}"
            );
            return None;
        }
        match self.edge.root_is_empty() {
            Ok(false) => {}
            _ => {
                tracing::warn!(
                    paths = gone.len(),
                    "two-way: the root is empty: not deleting on the peer what is gone here"
                );
                return None;
            }
        }
        tracing::info!(
            paths = gone.len(),
            "two-way: deleting on the peer what this host had and is gone here (where the peer has a version this host had)"
        );
        let targets: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        let run = self.delete_two_way(&targets, Judged::OnlyVersionsHad, ctx);
        if run.result.is_done() || run.result == RunResult::Exited(23) {
            None
        } else {
            Some(run)
        }
    }

    /// Two-way mode, before a full sync pushes with `--update`: replaces the peer's copies
    /// that are older versions this host had (a file renamed over one, or restored, with
    /// an older time, whose send a stop or a kill -9 cut short). `--update` would keep
    /// them, and the pull would then bring them back over this host's version.
    fn replace_stale_copies(&mut self, ctx: &JobContext) -> Option<Run> {
        let mut rules = Vec::new();
        for dir in ctx.transport.own_directories() {
            rules.extend(argv::exclude_rule(dir.as_bytes()));
            rules.push(0);
        }
        let listing = self.edge.run(RunSpec {
            capture_stdout: Capture::All,
            ..RunSpec::at_root(argv::deletion_listing(&ctx.transport), rules)
        });
        if !listing.result.is_done() {
            return Some(listing);
        }
        let listed = super::two_way::parse_listing(&listing.stdout);
        let stale = super::two_way::stale(&listed, |path| ctx.history(path));
        let paths = self.files_here(stale.iter().map(Vec::as_slice).collect());
        if paths.is_empty() {
            return None;
        }
        tracing::info!(
            paths = paths.len(),
            "two-way: the peer has older versions this host had of files it has now; replacing them"
        );
        let sent = self.send_newest(&paths, ctx);
        if sent.result.is_done() || sent.result == RunResult::Exited(23) {
            None
        } else {
            Some(sent)
        }
    }

    /// The push of a whole root: one run, or split over its top-level directories when no
    /// rules go on stdin.
    fn push_whole(
        &mut self,
        rules: &FullSyncRules,
        stdin: Vec<u8>,
        itemizing_made: bool,
        ctx: &JobContext,
    ) -> Run {
        // The directories it makes, itemized (`tell_resent_outcome`): kept whole, the rest
        // of what it prints is not.
        let spec = |argv: Vec<OsString>, stdin: Vec<u8>| {
            if itemizing_made {
                RunSpec {
                    capture_stdout: Capture::LinesStarting(super::two_way::MADE_DIRECTORY),
                    ..RunSpec::at_root(argv::itemized(&argv), stdin)
                }
            } else {
                RunSpec::at_root(argv, stdin)
            }
        };
        if !rules.rules_on_stdin {
            let top = self.edge.top_level_dirs();
            let ways = self.edge.ways().min(self.edge.cores());
            if let Some(argvs) = argv::full_sync_split(
                &ctx.transport,
                ctx.propagate_deletes,
                rules,
                &top,
                ways,
                self.args_budget,
            ) {
                let runs = argvs
                    .into_iter()
                    .map(|argv| spec(argv, Vec::new()))
                    .collect();
                let runs = self.edge.run_concurrently(runs);
                let made: Vec<u8> = runs.iter().flat_map(|run| run.stdout.clone()).collect();
                let run = Run {
                    stdout: made,
                    ..Run::worst(runs)
                };
                if !refused_at_start(&run) {
                    return run;
                }
                self.edge.go_serial();
            }
        }
        let argv = argv::full_sync(&ctx.transport, ctx.propagate_deletes, rules, false);
        self.edge.run(spec(argv, stdin))
    }

    /// Rebuilds renamed directories on the remote from their old copies; returns the
    /// `to` paths whose subtree was delivered that way (the batch skips them).
    fn seed_renames(&mut self, batch: &Batch, ctx: &JobContext) -> Vec<Vec<u8>> {
        let mut seeded = Vec::new();
        // Two-way mode: a seed run writes below the renamed directory, where the relative
        // `--temp-dir` the peer's watcher relies on does not exist.
        if batch.renames.is_empty() || ctx.transport.options.two_way {
            return seeded;
        }
        // A seed run writes into DEST/NEW/, and the receiver follows whatever is there:
        // a symlink left at NEW (the old occupant of the name) would take the whole
        // subtree elsewhere. The new directories are sent first, as directories (a
        // symlink or file in their place is replaced); only then are they seeded.
        let targets: Vec<&[u8]> = batch
            .renames
            .iter()
            .map(|(_, to)| to.as_slice())
            .filter(|to| !to.is_empty())
            .collect();
        let made = self.edge.run(self.send_run(ctx, &targets));
        if !matches!(made.result, RunResult::Exited(0)) {
            tracing::debug!(
                result = ?made.result,
                "rename shortcut not taken: {}",
                made.stderr.lines().last().unwrap_or("")
            );
            return seeded;
        }
        for (from, to) in &batch.renames {
            let list: Vec<Vec<u8>> = batch
                .entries
                .iter()
                .filter(|(p, _)| is_at_or_below(p, to))
                .map(|(p, _)| {
                    if p == to {
                        Vec::new()
                    } else {
                        p[to.len() + 1..].to_vec()
                    }
                })
                .collect();
            let paths: Vec<&[u8]> = list.iter().map(|p| p.as_slice()).collect();
            let (argv, stdin) =
                argv::rename_seed(&ctx.transport, from, to, &paths, self.args_budget);
            let run = self.edge.run(RunSpec {
                argv,
                stdin,
                at: At::Below(to.clone()),
                capture_stdout: Capture::Tail,
            });
            if matches!(run.result, RunResult::Exited(0)) {
                seeded.push(to.clone());
            } else {
                // Not fatal: the batch sends the subtree the ordinary way.
                tracing::debug!(
                    result = ?run.result,
                    "rename shortcut not taken: {}",
                    run.stderr.lines().last().unwrap_or("")
                );
            }
        }
        seeded
    }
}

/// The directories a pull's itemized output (`stdout`) says it made where this host's
/// user removed one (or an ancestor) at `since` or later: top-most, sorted.
fn made_over_removals(
    stdout: &[u8],
    since: std::time::SystemTime,
    ctx: &JobContext,
) -> Vec<Vec<u8>> {
    crate::relpath::top_most(
        super::two_way::parse_made(stdout)
            .into_iter()
            .filter(|(path, made)| {
                matches!(made, Announced::Directory { .. })
                    && ctx.removed_at(path).is_some_and(|at| at >= since)
            })
            .map(|(path, _)| path)
            .collect(),
    )
}

/// Whether a run of a concurrent set was turned away by the module's `max connections`
/// (rsync exit 5 with the daemon's `@ERROR: max connections (N) reached`), so the work is
/// worth one more try as a single run. Other start-up failures (auth, unknown module)
/// are reported as they are.
pub fn refused_at_start(run: &Run) -> bool {
    run.result == RunResult::Exited(5) && crate::failure::policy::at_connection_limit(&run.stderr)
}

/// Whether `path` or any of its ancestors is excluded by the filter.
pub fn excluded_with_ancestors(filter: &Filter, path: &[u8], is_dir: bool) -> bool {
    if filter.excludes(path, is_dir) {
        return true;
    }
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .any(|(i, _)| filter.excludes(&path[..i], true))
}

/// The changes pending when a full sync started, as they must still be sent after it.
/// A full sync that covered the whole tree with deletions (`covered`) already purged what
/// a removed or replaced directory left on the remote: purging it again would delete, and
/// send once more, a directory that was just made equal (and leave the replica without it
/// in between). What it may have missed is only a rewrite its quick check cannot see, which
/// sending the path again covers.
pub fn after_full_sync(then: &[(RelPath, Action)], covered: bool) -> Vec<(RelPath, Action)> {
    then.iter()
        .map(|(path, action)| {
            let action = match action {
                Action::Replace | Action::Remove { .. } | Action::Tree if covered => Action::Sync,
                other => *other,
            };
            (path.clone(), action)
        })
        .collect()
}
