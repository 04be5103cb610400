//! Running rsync: one process per batch per remote, as an argument vector.
//!
//! A [`Job`] from the queue becomes one or two rsync runs (a purge before a batch that
//! replaces directories; a dry run before a filtered full sync, to find remote-only
//! excluded paths that must be protected from `--delete`). Each job runs on its own thread
//! and reports an [`Outcome`] through a callback; the daemon decides what a failure means.
//!
//! Architecture invariant: this is the only module that spawns processes, and it never
//! builds shell text: options and listed paths are argv elements (paths as `./path`, or
//! NUL-separated on stdin when a list is too long for the command line).

pub mod argv;
mod facts;
pub mod identity;
mod plan;

use plan::{At, Plan, Run, RunSpec};
pub use plan::{after_full_sync, excluded_with_ancestors};

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::Filter;
use crate::queue::{Action, Batch, Job, LaneId, RelPath};
use argv::Transport;

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
    /// Resolves whose privileges this job's runs take, now (the root's owner may have
    /// changed since the config was read), and when that is not root and rsync talks to
    /// a daemon with a password, reads the password for it. The error is a run that could
    /// not start (retried), with the reason as its stderr.
    fn take_identity(&mut self) -> Result<(), Run> {
        // Retryable: the root, the user or the password file may be back by the next try.
        let failed = |message: String| Run {
            stderr: format!("{message}\n"),
            ..Run::ended(RunResult::SpawnFailed {
                kind: std::io::ErrorKind::Other,
                message,
            })
        };
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

const STDERR_KEEP: usize = 16 * 1024;

/// One job runs at most this many rsyncs at once: a big deletion split over disjoint
/// subtrees ([`argv::deletion_groups`]), a full sync split by top-level directory
/// ([`argv::full_sync_split`]).
pub const MAX_PARALLEL_RUNS: usize = 4;

/// A running rsync: which lane it works for, and how much I/O it had done when last
/// looked at (from `/proc/PID/io`), to tell a stalled run from a slow one.
#[derive(Debug, Clone, Copy)]
struct Child {
    lane: LaneId,
    io: u64,
    io_changed: Instant,
}

/// A counting semaphore over rsync processes: `-n` bounds every rsync the daemon runs,
/// including the concurrent runs of one job (rename seeds, split deletions, split full
/// syncs), not only the jobs.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Slots {
    /// Waits for a free slot; it is given back when the guard drops.
    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

/// One taken process slot.
struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

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
            slots: Arc::new(Slots {
                free: Mutex::new(process_limit.max(1)),
                returned: Condvar::new(),
            }),
            path_args_budget: argv::path_args_budget(),
        }
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
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match context
                    .take_identity()
                {
                    Ok(()) => Plan {
                        edge: &mut JobEdge {
                            runner: &runner,
                            lane: job.lane(),
                            ctx: &context,
                        },
                        args_budget: runner.path_args_budget,
                    }
                    .job(&job, &context),
                    Err(failed) => failed,
                }))
                .unwrap_or_else(|panic| {
                    let message = panic_message(panic.as_ref());
                    tracing::error!("an rsync job thread panicked: {message}");
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
                    Ok(()) => runner.execute_prune(lane, &context),
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
            true,
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
        let today = argv::utc_date(std::time::SystemTime::now());
        let expired = argv::expired_trash(&listing.stdout, &today, soft.keep_days);
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
            false,
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

    /// A fresh directory under the runner's scratch space holding only `dirs` (empty
    /// ancestors of the paths a deletion run removes); removed on drop.
    ///
    /// Whatever rsync finds in it is sent, so nothing in it may come from elsewhere: it is
    /// made like `mkdtemp` (a new name, never an existing entry or a symlink), mode 0700
    /// and owned by the user the runs take, and its directories are made below it by
    /// descriptor (`mkdirat`, `openat` with `O_NOFOLLOW`), never by a path resolved again.
    fn skeleton(&self, dirs: &[Vec<u8>], ctx: &JobContext) -> std::io::Result<Skeleton> {
        match &ctx.identity {
            // Made as that user, so that it is theirs without CAP_CHOWN.
            Some(identity) => identity.creating_as(|| self.make_skeleton(dirs, true))?,
            None => self.make_skeleton(dirs, false),
        }
    }

    fn make_skeleton(&self, dirs: &[Vec<u8>], for_user: bool) -> std::io::Result<Skeleton> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        // rsync opens its source by absolute path (from getcwd), so a run that takes a
        // user's credentials needs a skeleton that user can reach by path: in the temporary
        // directory (sticky, like /tmp: no one else can replace what root makes in it),
        // not below the state directory, which is root's alone.
        let parent = if for_user {
            let temp = std::env::temp_dir();
            crate::trusted::check_parent_directory(&temp)?;
            temp
        } else {
            self.scratch_dir.clone()
        };
        let template = parent.join("sersync-skeleton-XXXXXX");
        let path = nix::unistd::mkdtemp(&template)?;
        let open_dir = |at: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr| {
            nix::fcntl::openat(
                at,
                name,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            )
        };
        let top = match open_dir(
            std::fs::File::open(&parent)?.as_fd(),
            path.file_name().unwrap_or_default(),
        ) {
            Ok(top) => top,
            Err(err) => {
                let _ = std::fs::remove_dir(&path);
                return Err(err.into());
            }
        };
        let skeleton = Skeleton { path, dir: top };
        for dir in dirs {
            let mut parent: Option<std::os::fd::OwnedFd> = None;
            for name in dir.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
                let name = std::ffi::OsStr::from_bytes(name);
                let at = parent.as_ref().map_or(skeleton.dir.as_fd(), AsFd::as_fd);
                // 0700 whatever the umask: the maker (root, or the run's user) enters it.
                match nix::sys::stat::mkdirat(at, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(err) => return Err(err.into()),
                }
                parent = Some(open_dir(at, name)?);
            }
        }
        Ok(skeleton)
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

    /// Runs `(argv, stdin, capture_stdout)` at once in `cwd`; their results in the same
    /// order.
    fn run_concurrently(
        &self,
        lane: LaneId,
        runs: Vec<(Vec<OsString>, Vec<u8>, bool)>,
        cwd: Cwd<'_>,
        ctx: &JobContext,
    ) -> Vec<Run> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = runs
                .into_iter()
                .map(|(argv, stdin, capture)| {
                    scope.spawn(move || self.run(lane, &argv, cwd, stdin, ctx, capture))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| Run {
                        stderr: "an rsync supervisor thread panicked".into(),
                        ..Run::ended(RunResult::Exited(-1))
                    })
                })
                .collect()
        })
    }

    /// Runs rsync once, when one of the `-n` process slots is free, with the credentials
    /// of `ctx`'s identity (see [`identity`]).
    fn run(
        &self,
        lane: LaneId,
        argv: &[OsString],
        cwd: Cwd<'_>,
        stdin: Vec<u8>,
        ctx: &JobContext,
        capture_stdout: bool,
    ) -> Run {
        let _slot = self.slots.take();
        if ctx.debug {
            tracing::debug!(
                cwd = ?cwd,
                user = ctx.identity.as_ref().map_or("root", |who| who.name.as_str()),
                "run: {}",
                argv::display(self.rsync.as_os_str(), argv)
            );
        }
        // The password for a run as another user: through a pipe that user owns, named
        // on the command line (never in the environment, which that user can read).
        let password = match (&ctx.password, &ctx.identity) {
            (Some(secret), Some(identity)) => match password_pipe(secret, identity) {
                Ok(read_end) => Some(read_end),
                Err(err) => {
                    let message = format!("cannot hand rsync the password: {err}");
                    return Run {
                        stderr: format!("{message}\n"),
                        ..Run::ended(RunResult::SpawnFailed {
                            kind: err.kind(),
                            message,
                        })
                    };
                }
            },
            _ => None,
        };
        let mut command = Command::new(&self.rsync);
        if let Some(read_end) = &password {
            // Options first: rsync reads them before the paths.
            command.arg(format!("--password-file=/dev/fd/{}", read_end.as_raw_fd()));
        }
        command
            .args(argv)
            // Paths passed as arguments leave nothing for stdin: no pipe, no writer thread.
            .stdin(if stdin.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        if let Some(identity) = &ctx.identity {
            command.env_clear().envs(identity.environment());
        }
        let password_fd = password.as_ref().map(AsRawFd::as_raw_fd);
        // Everything the child needs is prepared here: between fork and exec nothing may
        // allocate.
        let credentials = ctx
            .identity
            .as_ref()
            .map(|who| (who.groups.clone(), who.gid, who.uid));
        let (cwd_path, cwd_fd) = match cwd {
            Cwd::Tree(path) => match std::ffi::CString::new(path.as_os_str().as_bytes()) {
                Ok(path) => (Some(path), None),
                Err(err) => {
                    return Run::ended(RunResult::SpawnFailed {
                        kind: std::io::ErrorKind::InvalidInput,
                        message: format!("{}: {err}", path.display()),
                    });
                }
            },
            Cwd::Scratch(fd) => (None, Some(fd.as_raw_fd())),
        };
        // rsync dies with sersyncd: after a kill -9 an orphan would finish its transfer
        // later, possibly over a newer version sent by the restarted daemon. The signal is
        // tied to this thread, which waits for the child.
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid,
        // setuid, prctl, getppid, chdir, fchdir) on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if let Some((groups, gid, uid)) = &credentials {
                    // Groups, then group, then user: after setuid nothing else may change.
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(*gid) != 0
                        || libc::setuid(*uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The password pipe stays open across exec (it was made close-on-exec).
                if let Some(fd) = password_fd {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // After the credentials: changing them clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before prctl: the signal will never come.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                // As the run's user: a tree directory it could not reach stays unreached.
                let entered = match (&cwd_path, cwd_fd) {
                    (Some(path), _) => libc::chdir(path.as_ptr()),
                    (None, Some(fd)) => libc::fchdir(fd),
                    (None, None) => 0,
                };
                if entered != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let who = ctx
                    .identity
                    .as_ref()
                    .map(|who| format!(" as user {}", who.name))
                    .unwrap_or_default();
                let place = match cwd {
                    Cwd::Tree(path) => format!(" in {}", path.display()),
                    Cwd::Scratch(_) => String::new(),
                };
                let message = format!("cannot run {}{who}{place}: {err}", self.rsync.display());
                // The child's chdir and exec fail with the same errno: a directory that
                // went away during the run (moved, deleted) is not a missing rsync, and
                // the next try may find it again.
                let kind = match cwd {
                    Cwd::Tree(path)
                        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) =>
                    {
                        std::io::ErrorKind::Other
                    }
                    _ => err.kind(),
                };
                return Run {
                    stderr: format!("{message}\n"),
                    ..Run::ended(RunResult::SpawnFailed { kind, message })
                };
            }
        };
        let pid = child.id();
        self.lock().insert(
            pid,
            Child {
                lane,
                io: 0,
                io_changed: Instant::now(),
            },
        );
        // stdin is written on its own thread: rsync may fill stderr before it has read
        // the whole list, and neither side may wait for the other.
        let writer = child.stdin.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&stdin);
            })
        });
        let stdout_reader = child.stdout.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = pipe.read_to_end(&mut out);
                out
            })
        });
        let mut stderr = Vec::new();
        let mut truncated = false;
        if let Some(mut pipe) = child.stderr.take() {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        stderr.extend_from_slice(&chunk[..n]);
                        if stderr.len() > 2 * STDERR_KEEP {
                            stderr.drain(..stderr.len() - STDERR_KEEP);
                            truncated = true;
                        }
                    }
                }
            }
        }
        let status = child.wait();
        self.lock().remove(&pid);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let stdout = stdout_reader
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        if stderr.len() > STDERR_KEEP {
            stderr.drain(..stderr.len() - STDERR_KEEP);
            truncated = true;
        }
        let result = match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => RunResult::Exited(code),
                (None, Some(signal)) => RunResult::Signaled(signal),
                (None, None) => RunResult::Exited(-1),
            },
            Err(err) => RunResult::SpawnFailed {
                kind: err.kind(),
                message: format!("waiting for rsync failed: {err}"),
            },
        };
        Run {
            result,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            truncated,
            stdout,
        }
    }
}

/// The process side of one job: what its [`Plan`] asks for, carried out.
struct JobEdge<'a> {
    runner: &'a Runner,
    lane: LaneId,
    ctx: &'a JobContext,
}

impl JobEdge<'_> {
    /// A skeleton for a deletion run, or the run that could not start without it.
    fn skeleton(&self, dirs: &[Vec<u8>]) -> Result<Skeleton, Run> {
        self.runner.skeleton(dirs, self.ctx).map_err(|err| {
            Run::ended(RunResult::SpawnFailed {
                kind: err.kind(),
                message: format!("cannot prepare the deletion run: {err}"),
            })
        })
    }
}

impl plan::Edge for JobEdge<'_> {
    fn run(&mut self, spec: RunSpec) -> Run {
        let RunSpec {
            argv,
            stdin,
            at,
            capture_stdout,
        } = spec;
        let (runner, lane, ctx) = (self.runner, self.lane, self.ctx);
        match at {
            At::Root => runner.run(
                lane,
                &argv,
                Cwd::Tree(&ctx.root),
                stdin,
                ctx,
                capture_stdout,
            ),
            At::Below(dir) => {
                let cwd = ctx.root.join(std::ffi::OsStr::from_bytes(&dir));
                runner.run(lane, &argv, Cwd::Tree(&cwd), stdin, ctx, capture_stdout)
            }
            At::Skeleton(dirs) => match self.skeleton(&dirs) {
                Ok(skeleton) => runner.run(lane, &argv, skeleton.cwd(), stdin, ctx, capture_stdout),
                Err(failed) => failed,
            },
        }
    }

    fn run_concurrently(&mut self, specs: Vec<RunSpec>) -> Vec<Run> {
        let Some(first) = specs.first() else {
            return Vec::new();
        };
        let below;
        let skeleton;
        let cwd = match &first.at {
            At::Root => Cwd::Tree(&self.ctx.root),
            At::Below(dir) => {
                below = self.ctx.root.join(std::ffi::OsStr::from_bytes(dir));
                Cwd::Tree(&below)
            }
            At::Skeleton(dirs) => match self.skeleton(dirs) {
                Ok(made) => {
                    skeleton = made;
                    skeleton.cwd()
                }
                Err(failed) => return vec![failed],
            },
        };
        let runs = specs
            .into_iter()
            .map(|spec| (spec.argv, spec.stdin, spec.capture_stdout))
            .collect();
        self.runner.run_concurrently(self.lane, runs, cwd, self.ctx)
    }

    fn ways(&self) -> usize {
        self.runner.ways(self.ctx)
    }

    fn go_serial(&mut self) {
        self.runner.go_serial(self.ctx);
    }

    fn cores(&self) -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }

    fn entries(&mut self, batch: &Batch) -> Vec<plan::Local> {
        facts::entries(&self.ctx.root, batch)
    }

    fn subtrees(&mut self, dirs: &[&[u8]]) -> Vec<Vec<u8>> {
        dirs.iter()
            .flat_map(|dir| facts::local_subtree(&self.ctx.root, dir, &self.ctx.filter))
            .collect()
    }

    fn guard_refusal(&mut self) -> Option<String> {
        crate::guard::refusal(
            &self.ctx.root,
            self.ctx.recorded_fs.as_ref(),
            self.ctx.delete_guard.sentinel.as_deref(),
        )
    }

    fn root_is_empty(&mut self) -> std::io::Result<bool> {
        crate::guard::is_empty(&self.ctx.root)
    }

    fn excluded_paths(&mut self) -> Vec<Vec<u8>> {
        facts::excluded_paths(&self.ctx.root, &self.ctx.filter)
    }

    fn top_level_dirs(&mut self) -> Vec<Vec<u8>> {
        facts::top_level_dirs(&self.ctx.root)
    }
}

/// Bytes read plus bytes written by process `pid` so far (`rchar + wchar` of
/// `/proc/PID/io`: every read(2) and write(2), sockets and pipes included).
fn io_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some(field("rchar:")? + field("wchar:")?)
}

/// A pipe holding `secret` and a newline, whose read end (returned, close-on-exec) belongs
/// to `identity`, so that rsync running as that user can open it as `/dev/fd/N`: a pipe
/// is its maker's, mode 0600 (and rsync refuses a password file others can read).
fn password_pipe(
    secret: &Secret,
    identity: &identity::Identity,
) -> std::io::Result<std::os::fd::OwnedFd> {
    // Made as that user: a pipe belongs to whoever made it.
    let (read_end, write_end) =
        identity.creating_as(|| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))??;
    let mut writer = std::fs::File::from(write_end);
    // Far below the pipe's buffer: the write cannot block.
    writer.write_all(secret.0.as_bytes())?;
    writer.write_all(b"\n")?;
    Ok(read_end)
}

/// A scratch directory tree that removes itself; runs start in it by descriptor.
struct Skeleton {
    path: PathBuf,
    dir: std::os::fd::OwnedFd,
}

impl Skeleton {
    fn cwd(&self) -> Cwd<'_> {
        Cwd::Scratch(self.dir.as_fd())
    }
}

/// Where an rsync run starts.
#[derive(Debug, Clone, Copy)]
enum Cwd<'a> {
    /// A directory of the tree, entered by path with the run's own credentials (the
    /// kernel checks every component against the user the run takes).
    Tree(&'a Path),
    /// A scratch directory of ours (a skeleton), entered by the descriptor it was made
    /// with, never by a path resolved again.
    Scratch(std::os::fd::BorrowedFd<'a>),
}

impl Drop for Skeleton {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
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

/// The text a panic was raised with, when it has one.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
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

    #[test]
    fn panic_messages() {
        let text: Box<dyn std::any::Any + Send> = Box::new("static text");
        assert_eq!(panic_message(text.as_ref()), "static text");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("formatted 7"));
        assert_eq!(panic_message(owned.as_ref()), "formatted 7");
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
