//! Running rsync: one process per batch per remote, as an argument vector.
//!
//! A [`Job`] from the queue becomes a few rsync runs (rename seeds, a purge of what no
//! longer exists, the send run, the dirty directories; a dry run before a filtered or
//! guarded full sync). Each job runs on its own thread and reports an [`Outcome`] through
//! a callback; the daemon decides what a failure means.
//!
//! Which runs, in what order, with which argv and listed paths, and what their results
//! amount to, is decided purely, as in ntpd-rs (`ntp-proto` decides, `ntpd` acts):
//! - `argv` (pure): the argument vectors and filter rules.
//! - `plan` (pure: no file, no process, no clock): a job's runs and how their results
//!   combine (`Run::worst`); it asks its edge for every run and for each fact about
//!   the local tree when it needs it, so a table can stand in for both (`plan/tests.rs`).
//! - `facts`: those facts, read from the filesystem (what is at a path, the subtree of a
//!   replaced directory, what the filter excludes, the top-level directories).
//! - `process`: the edge: process slots (`-n`), spawning with the run's credentials
//!   (`identity`; pre_exec, the password pipe, skeleton directories), stderr's tail, the
//!   PIDs that [`Runner::terminate_all`] ends and [`Runner::silence`] watches.
//! - `warm`: the lanes' pre-connected rsyncs; `master`: the ssh connection masters that
//!   runs over ssh open their sessions over.
//! - this file: the contract with the daemon ([`Runner`], [`JobContext`], [`Outcome`],
//!   [`RunResult`]).
//!
//! Architecture invariant: only `sync` (rsync, and ssh connection masters) and the
//! command plugin spawn processes, and here only `process` (rsync) and `master` (ssh) do.
//! No shell text is ever built: options and listed paths are argv elements (paths as
//! `./path`, or NUL-separated on stdin when a list is too long for the command line).

pub mod argv;
mod facts;
pub mod identity;
mod master;
mod plan;
mod process;
pub mod progress;
pub mod two_way;
pub mod warm;

pub use plan::{after_full_sync, excluded_with_ancestors};

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Filter;
use crate::queue::{Action, Job, LaneId, RelPath};
use argv::Transport;
use plan::{Plan, Run};
use process::{Child, JobEdge, Slots, io_bytes};

/// How an rsync run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    Exited(i32),
    Signaled(i32),
    SpawnFailed {
        kind: std::io::ErrorKind,
        message: String,
    },
    /// The replica guard refused to delete on the remote ([`crate::guard`]): for a full
    /// sync nothing ran; for a batch its sends ran and the paths of its deletion run are
    /// `held`. A `latch`ed refusal is a count that nothing but the operator changes (a
    /// full sync that would delete too much): the root's deletions stay held until
    /// released; others end by themselves (the filesystem comes back).
    Guarded {
        reason: String,
        held: Vec<RelPath>,
        latch: bool,
    },
}

impl RunResult {
    /// Whether the run did its work: exit 0, or 24 (files vanished before they were sent,
    /// which the next events or sync account for).
    pub fn is_done(&self) -> bool {
        matches!(self, RunResult::Exited(0) | RunResult::Exited(24))
    }

    /// For the exit policy.
    pub fn status(&self) -> crate::failure::ExitStatusLike {
        use crate::failure::ExitStatusLike;
        match self {
            RunResult::Exited(code) => ExitStatusLike::Code(*code),
            RunResult::Signaled(signal) => ExitStatusLike::Signal(*signal),
            RunResult::SpawnFailed { kind, .. } => ExitStatusLike::SpawnFailed(*kind),
            // The daemon handles a guarded run before any exit policy applies.
            RunResult::Guarded { .. } => ExitStatusLike::SpawnFailed(std::io::ErrorKind::Other),
        }
    }

    /// The exit code recorded in the failure journal (-1 when there is none).
    pub fn code(&self) -> i32 {
        match self {
            RunResult::Exited(code) => *code,
            _ => -1,
        }
    }
}

/// The end of a job.
#[derive(Debug)]
pub struct Outcome {
    pub job: Job,
    pub result: RunResult,
    /// The last lines rsync wrote to stderr (bounded), of every run that failed.
    pub stderr: String,
    /// Whether `stderr` lost lines (its head was cut to the bound): it then cannot name
    /// every failed path.
    pub stderr_truncated: bool,
    pub elapsed: Duration,
    /// The bytes the job's rsync runs reported sending, summed over all of them (each
    /// run's own figure, [`argv::sent_bytes`]; a run that printed none counts 0).
    pub bytes_sent: u64,
    /// Large files the batch did not send: the daemon hands them to the lane's large-file
    /// run ([`crate::queue::Queue::hand_large`]). Not part of what the job delivered.
    pub large: Vec<(RelPath, Action)>,
    /// Two-way mode: the directories a full sync's pull made where this host's user
    /// removed one while it ran (top-most, sorted): the daemon takes them back
    /// ([`plan::Plan::pulled_over_removals`]).
    pub pulled_over_removals: Vec<Vec<u8>>,
}

/// Everything a job needs besides the job itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub root: PathBuf,
    pub transport: Transport,
    pub propagate_deletes: bool,
    /// The real-time `<filter>`, honoured by full syncs too.
    pub filter: Filter,
    /// `<crontabfilter>` globs, for scheduled full syncs.
    pub crontab_excludes: Vec<String>,
    pub debug: bool,
    /// The filesystem the root was on when first watched (the replica guard's identity).
    pub recorded_fs: Option<crate::guard::FsIdentity>,
    /// `<deleteGuard>`: the sentinel, and the limits a full sync's deletions are held at.
    pub delete_guard: crate::config::DeleteGuard,
    /// Why the daemon holds this root's deletions (too many in a minute), until released.
    pub deletions_held: Option<String>,
    /// The operator forced this job past the replica guard.
    pub guard_released: bool,
    /// `<localpath user>`: whose privileges the runs take.
    pub run_as: crate::config::RunAs,
    /// `run_as` resolved when the job starts (`None`: as the daemon, root).
    pub identity: Option<identity::Identity>,
    /// The daemon password for a run that cannot read the password file itself.
    pub password: Option<Secret>,
    /// Where a full sync's runs report how far they are (set by the daemon for full
    /// syncs; runs with [`argv::REPORT_PROGRESS`] feed it).
    pub progress: Option<std::sync::Arc<progress::JobProgress>>,
    /// When the oldest change of this job was first observed (set by the daemon when the
    /// job starts): in two-way mode, a deletion removes only versions this host had before
    /// it ([`two_way::spared`]).
    pub changes_since: std::time::SystemTime,
    /// Two-way mode: the versions this host had at each path, shared by the root's lanes
    /// and the daemon (which records what arrives).
    pub versions: Option<std::sync::Arc<two_way::Versions>>,
    /// `<queue largeFiles>`: a batch hands new versions of files this large to the lane's
    /// large-file run ([`Outcome::large`]) instead of sending them with the rest.
    pub large_files: Option<u64>,
}

impl JobContext {
    /// Whether full syncs and dirty directories mirror the root with `--delete`: with
    /// `<delete>` on, except in two-way mode, where they reconcile ([`two_way`]).
    pub fn full_syncs_delete(&self) -> bool {
        self.propagate_deletes && !self.transport.options.two_way
    }

    /// Two-way mode: when this host saw the deletion of `path` that a run of this job
    /// carries out: when it saw `path` or an ancestor removed, if it remembers, else (or
    /// if that is older) the job's oldest change, which is no later than it.
    pub fn deleted_at(&self, path: &[u8]) -> std::time::SystemTime {
        self.versions
            .as_ref()
            .and_then(|versions| versions.removed_at(path))
            .map_or(self.changes_since, |at| at.max(self.changes_since))
    }

    /// Two-way mode: since when [`JobContext::history`] knows every version this host
    /// had ([`two_way::Versions::complete_since`]).
    pub fn history_complete_since(&self) -> std::time::SystemTime {
        self.versions
            .as_ref()
            .map_or(std::time::UNIX_EPOCH, |versions| versions.complete_since())
    }

    /// Two-way mode: when this host last saw `path` or an ancestor removed, if it
    /// remembers ([`two_way::Versions::removed_at`]).
    pub fn removed_at(&self, path: &[u8]) -> Option<std::time::SystemTime> {
        self.versions
            .as_ref()
            .and_then(|versions| versions.removed_at(path))
    }

    /// Two-way mode: the paths this host saw removed in the last minute (by itself).
    pub fn removed_lately(&self) -> Vec<Vec<u8>> {
        self.versions.as_ref().map_or_else(Vec::new, |versions| {
            versions
                .removed_since(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        })
    }

    /// Two-way mode: the versions this host had at `path` (none outside that mode).
    pub fn history(&self, path: &[u8]) -> Vec<two_way::Known> {
        self.versions
            .as_ref()
            .map(|versions| versions.history(path))
            .unwrap_or_default()
    }
}

/// A password: kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct Secret(OsString);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl JobContext {
    /// Resolves, when the job starts, what depends on the moment: the day soft-deleted
    /// files are dated by, whose privileges this job's runs take (the root's owner may have
    /// changed since the config was read), and when that is not root and rsync talks to
    /// a daemon with a password, the password. The error is a run that could not start
    /// (retried), with the reason as its stderr.
    fn take_identity(&mut self) -> Result<(), Run> {
        // Retryable: the root, the user or the password file may be back by the next try.
        let failed = |message: String| Run {
            stderr: format!("{message}\n"),
            ..Run::ended(RunResult::SpawnFailed {
                kind: std::io::ErrorKind::Other,
                message,
            })
        };
        self.transport.today = argv::utc_date(std::time::SystemTime::now());
        self.identity = identity::Identity::resolve(&self.run_as, &self.root).map_err(failed)?;
        self.password = None;
        self.transport.password_piped = false;
        if self.identity.is_some() && !self.transport.options.ssh {
            if let Some(auth) = &self.transport.options.auth {
                let password = identity::read_password(&auth.password_file).map_err(failed)?;
                self.password = Some(Secret(password));
                self.transport.password_piped = true;
            }
        }
        Ok(())
    }
}

/// One job runs at most this many rsyncs at once: a big deletion split over disjoint
/// subtrees ([`argv::deletion_groups`]), a full sync split by top-level directory
/// ([`argv::full_sync_split`]).
pub const MAX_PARALLEL_RUNS: usize = 4;

/// Starts rsync processes and keeps track of them by PID.
#[derive(Debug, Clone)]
pub struct Runner {
    rsync: PathBuf,
    scratch_dir: PathBuf,
    children: Arc<Mutex<HashMap<u32, Child>>>,
    slots: Arc<Slots>,
    /// Bytes of listed paths passed as arguments before falling back to stdin.
    path_args_budget: usize,
    /// How many concurrent rsyncs one job may run.
    parallel_runs: usize,
    /// Destinations that refused a second connection (`max connections`): one run at a
    /// time for them from then on.
    serial_only: Arc<Mutex<HashSet<OsString>>>,
    /// The lanes' warm rsyncs (see [`warm`]).
    warm: Arc<warm::Pool>,
    /// The ssh connection masters (see [`master`]).
    masters: Arc<master::Masters>,
}

impl Runner {
    /// `scratch_dir` is a directory owned by us, where deletion runs build their
    /// skeletons.
    /// `process_limit` (`-n`) caps how many rsyncs one job may run at once (never more
    /// than [`MAX_PARALLEL_RUNS`]).
    pub fn new(rsync: PathBuf, scratch_dir: PathBuf, process_limit: usize) -> Runner {
        Runner {
            parallel_runs: process_limit.clamp(1, MAX_PARALLEL_RUNS),
            serial_only: Arc::new(Mutex::new(HashSet::new())),
            rsync,
            scratch_dir,
            children: Arc::new(Mutex::new(HashMap::new())),
            slots: Arc::new(Slots::new(process_limit.max(1))),
            path_args_budget: argv::path_args_budget(),
            warm: Arc::new(warm::Pool::default()),
            masters: Arc::new(master::Masters::default()),
        }
    }

    /// Pause (`true`) ends the idle warm rsyncs and starts none until resumed.
    pub fn pause_warm(&self, paused: bool) {
        self.warm.set_paused(paused);
    }

    /// A reload: ends every idle warm rsync, by PID; lanes get new ones after their next
    /// batch (with the new config's options).
    pub fn cool_warm(&self) {
        self.warm.cool_all();
    }

    /// Shutdown: ends every warm rsync and waits for them; none is started again.
    pub fn close_warm(&self) {
        self.warm.close();
    }

    /// Pause (`true`): each ssh connection master ends once no running rsync goes over
    /// it, and none starts until resumed.
    pub fn pause_masters(&self, paused: bool) {
        self.masters.set_paused(paused);
    }

    /// A reload: the ssh connection masters whose target no lane of the new config has
    /// end once no running rsync goes over them; the others stay.
    pub fn keep_masters(&self, transports: &[&argv::Transport]) {
        self.masters.keep(transports);
    }

    /// Shutdown, after the last runs: ends and reaps every ssh connection master, and
    /// removes their sockets' directory.
    pub fn close_masters(&self) {
        self.masters.close();
    }

    /// How many warm rsyncs are idle, connected and waiting for a batch.
    pub fn warm_idle(&self) -> usize {
        self.warm.idle()
    }

    /// Runs `job` on a new thread; `done` receives the outcome, always: a job whose
    /// thread cannot start or panics ends as a retryable failure, so its lane is never
    /// left busy forever.
    pub fn start(
        &self,
        job: Job,
        context: JobContext,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) {
        let runner = self.clone();
        // Taken now: a reload after this moment voids the warm rsync this job would offer.
        let generation = self.warm.generation();
        // Shared so that a thread that cannot start still hands the job back.
        let handed = Arc::new(Mutex::new(Some((job, done))));
        let in_thread = Arc::clone(&handed);
        let spawned = std::thread::Builder::new()
            .name("rsync-job".into())
            .spawn(move || {
                let Some((job, done)) = in_thread.lock().ok().and_then(|mut h| h.take()) else {
                    return;
                };
                let started = Instant::now();
                let mut context = context;
                // Outside the containment: what runs sent before a panic (a bug) counts too.
                let mut bytes_sent = 0;
                let mut large = Vec::new();
                let mut pulled_over_removals = Vec::new();
                let run = crate::panics::contain(|| {
                    if let Job::Batch(batch) = &job {
                        for (path, _) in &batch.entries {
                            crate::panics::inject("job", path);
                        }
                    }
                    match context.take_identity() {
                        Ok(()) => {
                            runner.masters.attach(&runner, &mut context);
                            let mut plan = Plan {
                                edge: &mut JobEdge {
                                    runner: &runner,
                                    lane: job.lane(),
                                    ctx: &context,
                                    bytes_sent: &mut bytes_sent,
                                    generation,
                                },
                                args_budget: runner.path_args_budget,
                                large: Vec::new(),
                                pulled_over_removals: Vec::new(),
                                announced: Vec::new(),
                            };
                            let run = plan.job(&job, &context);
                            large = plan.large;
                            pulled_over_removals = plan.pulled_over_removals;
                            run
                        }
                        Err(failed) => failed,
                    }
                })
                .unwrap_or_else(|message| {
                    tracing::error!("an rsync job thread panicked: {message}; the job is retried");
                    Run::ended(RunResult::SpawnFailed {
                        kind: std::io::ErrorKind::Other,
                        message: format!("the job thread panicked: {message}"),
                    })
                });
                done(Outcome {
                    job,
                    result: run.result,
                    stderr: run.stderr,
                    stderr_truncated: run.truncated,
                    elapsed: started.elapsed(),
                    bytes_sent,
                    large,
                    pulled_over_removals,
                });
            });
        if let Err(err) = spawned {
            tracing::error!("cannot start a thread for rsync: {err}");
            if let Some((job, done)) = handed.lock().ok().and_then(|mut h| h.take()) {
                done(Outcome {
                    job,
                    result: RunResult::SpawnFailed {
                        kind: err.kind(),
                        message: format!("cannot start a thread for rsync: {err}"),
                    },
                    stderr: String::new(),
                    stderr_truncated: false,
                    elapsed: Duration::ZERO,
                    bytes_sent: 0,
                    large: Vec::new(),
                    pulled_over_removals: Vec::new(),
                });
            }
        }
    }

    /// `<softDelete>`: removes the remote's dated soft-delete directories older than
    /// `keep_days`, on a thread of its own (it touches only those directories, which
    /// every other run protects, so it may overlap the lane's jobs). Logs what it did.
    pub fn prune_trash(&self, lane: LaneId, context: JobContext) {
        let runner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("rsync-prune".into())
            .spawn(move || {
                let mut context = context;
                match context.take_identity() {
                    Ok(()) => {
                        runner.masters.attach(&runner, &mut context);
                        runner.execute_prune(lane, &context)
                    }
                    Err(failed) => {
                        tracing::warn!("cannot prune soft-deleted files: {}", failed.stderr.trim())
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start a thread to prune soft-deleted files: {err}");
        }
    }

    fn execute_prune(&self, lane: LaneId, ctx: &JobContext) {
        let Some(soft) = ctx.transport.options.soft_delete.clone() else {
            return;
        };
        let remote = ctx.transport.destination();
        let scratch = match self.skeleton(&[], ctx) {
            Ok(dir) => dir,
            Err(err) => {
                tracing::warn!("cannot prepare pruning soft-deleted files: {err}");
                return;
            }
        };
        let listing = self.run(
            lane,
            &argv::list_trash(&ctx.transport, &soft),
            scratch.cwd(),
            Vec::new(),
            ctx,
            plan::Capture::All,
        );
        if !listing.result.is_done() {
            if listing.stderr.contains("No such file or directory") {
                // No soft-delete directory yet: nothing was deleted there so far.
                tracing::debug!(remote = ?remote, "no soft-deleted files to prune");
            } else {
                tracing::warn!(
                    remote = ?remote,
                    "cannot list the soft-deleted files to prune them (retried in 6 h): {}",
                    listing.stderr.trim()
                );
            }
            return;
        }
        let expired = argv::expired_trash(&listing.stdout, &ctx.transport.today, soft.keep_days);
        if expired.is_empty() {
            return;
        }
        let paths: Vec<Vec<u8>> = expired
            .iter()
            .map(|date| format!("{}/{date}", soft.dir).into_bytes())
            .collect();
        let (rules, ancestors) = argv::deletion_rules(paths.iter().map(Vec::as_slice));
        let skeleton = match self.skeleton(&ancestors, ctx) {
            Ok(skeleton) => skeleton,
            Err(err) => {
                tracing::warn!("cannot prepare pruning soft-deleted files: {err}");
                return;
            }
        };
        let run = self.run(
            lane,
            &argv::prune_trash(&ctx.transport),
            skeleton.cwd(),
            rules,
            ctx,
            plan::Capture::Tail,
        );
        if run.result.is_done() {
            tracing::info!(
                remote = ?remote,
                pruned = ?expired,
                "soft-deleted files older than {} days pruned",
                soft.keep_days
            );
        } else {
            tracing::warn!(remote = ?remote, "pruning soft-deleted files failed: {}", run.stderr.trim());
        }
    }

    /// Sends SIGTERM to every rsync still running (at shutdown).
    pub fn terminate_all(&self) {
        let pids: Vec<u32> = self.lock().keys().copied().collect();
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }

    /// How many rsync processes are alive.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// The command lines (`/proc/PID/cmdline`) of the rsync processes alive.
    fn running_argv(&self) -> Vec<Vec<u8>> {
        let pids: Vec<u32> = self.lock().keys().copied().collect();
        pids.into_iter()
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Child>> {
        self.children
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// For each lane with rsyncs running: how long the longest-silent of them has done no
    /// I/O at all (read or written a byte, per `/proc/PID/io`). Call it every few seconds.
    pub fn silence(&self) -> HashMap<LaneId, Duration> {
        let now = Instant::now();
        let mut out: HashMap<LaneId, Duration> = HashMap::new();
        for (pid, child) in self.lock().iter_mut() {
            if let Some(io) = io_bytes(*pid) {
                if io != child.io {
                    child.io = io;
                    child.io_changed = now;
                }
            }
            let silent = now.duration_since(child.io_changed);
            let entry = out.entry(child.lane).or_default();
            *entry = (*entry).max(silent);
        }
        out
    }

    /// Whether the destination of `ctx` takes one rsync at a time (its module refused
    /// concurrent connections): a lane's batch and its large-file run must not overlap.
    pub fn is_serial(&self, ctx: &JobContext) -> bool {
        self.serial_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&ctx.transport.destination())
    }

    /// How many rsyncs of `lane` are running now.
    fn lane_runs(&self, lane: LaneId) -> usize {
        self.lock()
            .values()
            .filter(|child| child.lane == lane)
            .count()
    }

    /// How many concurrent runs a job for this destination may use.
    fn ways(&self, ctx: &JobContext) -> usize {
        let serial = self
            .serial_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&ctx.transport.destination());
        if serial { 1 } else { self.parallel_runs }
    }

    /// A destination refused one of several concurrent runs (rsync exit 5, typically
    /// `max connections` on the module): from now on one run at a time for it. Waits a
    /// moment so the daemon's side of the runs that got through has exited.
    fn go_serial(&self, ctx: &JobContext) {
        let destination = ctx.transport.destination();
        let first = self
            .serial_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(destination.clone());
        if first {
            tracing::warn!(
                destination = %destination.to_string_lossy(),
                "the remote refused concurrent connections (max connections?): one rsync at a \
                 time for it from now on"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A one-line summary of a batch for logs.
pub fn describe_batch(entries: &[(Vec<u8>, Action)]) -> String {
    let removed = entries
        .iter()
        .filter(|(_, a)| matches!(a, Action::Remove { .. }))
        .count();
    format!("{} paths ({} removals)", entries.len(), removed)
}

/// What the sync tests build their jobs' contexts from.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use std::path::Path;

    /// `-a` to the daemon module `web` on 127.0.0.1, no auth, dated 2026-12-06.
    pub(crate) fn transport() -> argv::Transport {
        argv::Transport {
            options: crate::config::RsyncOptions {
                common_params: vec!["-a".into()],
                auth: None,
                port: None,
                timeout: None,
                ssh: false,
                ssh_master: true,
                soft_delete: None,
                two_way: false,
                warm: None,
            },
            remote: crate::config::Remote {
                ip: "127.0.0.1".into(),
                name: "web".into(),
            },
            password_piped: false,
            today: "2026-12-06".into(),
            control_path: None,
        }
    }

    /// A job on `root` with [`transport`], deletions propagated, no filter, no guard
    /// limits beyond the defaults, run as the root's owner.
    pub(crate) fn context(root: &Path) -> JobContext {
        JobContext {
            root: root.to_path_buf(),
            transport: transport(),
            propagate_deletes: true,
            filter: crate::config::Filter::default(),
            crontab_excludes: Vec::new(),
            debug: false,
            recorded_fs: None,
            delete_guard: crate::config::DeleteGuard::default(),
            deletions_held: None,
            guard_released: false,
            run_as: crate::config::RunAs::default(),
            identity: None,
            password: None,
            progress: None,
            changes_since: std::time::UNIX_EPOCH,
            versions: None,
            large_files: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_changes_after_a_full_sync() {
        use Action::*;
        let then = |action| vec![(b"d".to_vec(), action)];
        // (pending action, covered by a full sync with deletions, what is sent after it)
        let table = [
            (Sync, true, Sync),
            (Replace, true, Sync),
            (Remove { dir: true }, true, Sync),
            (Remove { dir: false }, true, Sync),
            (Sync, false, Sync),
            (Replace, false, Replace),
            (Remove { dir: true }, false, Remove { dir: true }),
        ];
        for (pending, covered, sent) in table {
            assert_eq!(
                after_full_sync(&then(pending), covered),
                then(sent),
                "{pending:?} covered={covered}"
            );
        }
    }
}
