//! Process handling: what the plan asks for, carried out. Runs take a process slot (`-n`),
//! the credentials of the job's identity between fork and exec, the password through a
//! pipe, a skeleton directory for deletion runs; their stderr is kept (bounded), their
//! stdout too (whole when the plan reads it, else its end: what rsync reports sending, summed
//! per job), and their PIDs tracked so that shutdown ends exactly them and a stalled one
//! can be told.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::plan::{self, At, Capture, Run, RunSpec};
use super::two_way::Announced;
use super::{JobContext, RunResult, Runner, Secret, argv, facts, identity, warm};
use crate::queue::{Batch, LaneId};

const STDERR_KEEP: usize = 16 * 1024;
/// What is kept of the stdout of a run whose output the plan does not read: its end,
/// where rsync's closing summary is (the bytes it sent, [`argv::sent_bytes`]), whatever a
/// user's `-v` printed before it.
const STDOUT_TAIL: usize = 4 * 1024;

/// A running rsync: which lane it works for, and how much I/O it had done when last
/// looked at (from `/proc/PID/io`), to tell a stalled run from a slow one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Child {
    pub(super) lane: LaneId,
    pub(super) io: u64,
    pub(super) io_changed: Instant,
}

/// A running rsync in the runner's table, until it ended, or until a panic unwinds past
/// it (a bug): then it is killed, so that no rsync of a job that was reported as failed
/// (and is retried) goes on writing to the remote beside the retry.
struct Tracked<'a> {
    runner: &'a Runner,
    pid: u32,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(pid) = i32::try_from(self.pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.runner.lock().remove(&self.pid);
    }
}

/// A counting semaphore over rsync processes: `-n` bounds every rsync the daemon runs,
/// including the concurrent runs of one job (rename seeds, split deletions, split full
/// syncs), not only the jobs.
#[derive(Debug)]
pub(super) struct Slots {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Slots {
    pub(super) fn new(slots: usize) -> Slots {
        Slots {
            free: Mutex::new(slots),
            returned: Condvar::new(),
        }
    }

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

impl Runner {
    /// A fresh directory under the runner's scratch space holding only `dirs` (empty
    /// ancestors of the paths a deletion run removes); removed on drop.
    ///
    /// Whatever rsync finds in it is sent, so nothing in it may come from elsewhere: it is
    /// made like `mkdtemp` (a new name, never an existing entry or a symlink), mode 0700
    /// and owned by the user the runs take, and its directories are made below it by
    /// descriptor (`mkdirat`, `openat` with `O_NOFOLLOW`), never by a path resolved again.
    pub(super) fn skeleton(&self, dirs: &[Vec<u8>], ctx: &JobContext) -> std::io::Result<Skeleton> {
        match &ctx.identity {
            // Made as that user, so that it is theirs without CAP_CHOWN.
            Some(identity) => identity.creating_as(|| self.make_skeleton(dirs, None, true))?,
            None => self.make_skeleton(dirs, None, false),
        }
    }

    /// Like [`Runner::skeleton`], holding one file `name` with `contents` (mode 0644: the
    /// peer's watcher reads it whoever its daemon writes as) and no directories.
    fn holding(&self, name: &str, contents: &[u8], ctx: &JobContext) -> std::io::Result<Skeleton> {
        let file = Some((name, contents));
        match &ctx.identity {
            Some(identity) => identity.creating_as(|| self.make_skeleton(&[], file, true))?,
            None => self.make_skeleton(&[], file, false),
        }
    }

    fn make_skeleton(
        &self,
        dirs: &[Vec<u8>],
        file: Option<(&str, &[u8])>,
        for_user: bool,
    ) -> std::io::Result<Skeleton> {
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
        if let Some((name, contents)) = file {
            let fd = nix::fcntl::openat(
                skeleton.dir.as_fd(),
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )?;
            let mut written = std::fs::File::from(fd);
            std::io::Write::write_all(&mut written, contents)?;
            // The umask may have taken bits the reader needs.
            written.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        }
        Ok(skeleton)
    }

    /// Runs `(argv, stdin, capture_stdout)` at once in `cwd`; their results in the same
    /// order.
    fn run_concurrently(
        &self,
        lane: LaneId,
        runs: Vec<(Vec<OsString>, Vec<u8>, Capture)>,
        cwd: Cwd<'_>,
        ctx: &JobContext,
    ) -> Vec<Run> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = runs
                .into_iter()
                .map(|(argv, stdin, capture)| {
                    scope.spawn(move || {
                        // Contained like the job thread: a failed run, retried with the job.
                        crate::panics::contain(|| self.run(lane, &argv, cwd, stdin, ctx, capture))
                            .unwrap_or_else(|message| {
                                let message =
                                    format!("an rsync supervisor thread panicked: {message}");
                                Run {
                                    stderr: format!("{message}\n"),
                                    ..Run::ended(RunResult::SpawnFailed {
                                        kind: std::io::ErrorKind::Other,
                                        message,
                                    })
                                }
                            })
                    })
                })
                .collect();
            handles
                .into_iter()
                // Cannot fail: the thread's work is contained.
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Run::ended(RunResult::Exited(-1)))
                })
                .collect()
        })
    }

    /// Runs rsync once, when one of the `-n` process slots is free, with the credentials
    /// of `ctx`'s identity (see [`identity`]).
    pub(super) fn run(
        &self,
        lane: LaneId,
        argv: &[OsString],
        cwd: Cwd<'_>,
        stdin: Vec<u8>,
        ctx: &JobContext,
        capture_stdout: Capture,
    ) -> Run {
        let _slot = self.slots.take();
        if ctx.debug && !stdin.is_empty() {
            // What a run was given (paths, rules) decides what it did: the first KiB, NULs
            // shown as `|`.
            let shown: Vec<u8> = stdin
                .iter()
                .take(1024)
                .map(|&b| if b == 0 { b'|' } else { b })
                .collect();
            tracing::debug!(bytes = stdin.len(), "run's stdin: {}", shown.escape_ascii());
        }
        match self.spawn(argv, cwd, ctx, !stdin.is_empty()) {
            Ok(child) => self.finish(lane, child, argv, stdin, ctx, capture_stdout, None),
            Err(failed) => failed,
        }
    }

    /// Starts rsync with the credentials of `ctx`'s identity (see [`identity`]), in
    /// `cwd`, with a pipe for stdin when `piped` (else `/dev/null`); the run that could not
    /// start as the error. Takes no process slot: the caller holds one, or the process is
    /// a lane's warm rsync (`super::warm`), which takes one when it is handed a batch.
    pub(super) fn spawn(
        &self,
        argv: &[OsString],
        cwd: Cwd<'_>,
        ctx: &JobContext,
        piped: bool,
    ) -> Result<std::process::Child, Run> {
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
                    return Err(Run {
                        stderr: format!("{message}\n"),
                        ..Run::ended(RunResult::SpawnFailed {
                            kind: err.kind(),
                            message,
                        })
                    });
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
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            // Always read: a run that moves data reports the bytes it sent there.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(identity) = &ctx.identity {
            command.env_clear().envs(identity.environment());
        }
        // Listings print modification times in the local zone, and two-way mode compares
        // them with this host's clock (`super::two_way::parse_listing`).
        command.env("TZ", "UTC");
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
                    return Err(Run::ended(RunResult::SpawnFailed {
                        kind: std::io::ErrorKind::InvalidInput,
                        message: format!("{}: {err}", path.display()),
                    }));
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
                if let Some(credentials) = &credentials {
                    identity::take_in_child(credentials)?;
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
        match command.spawn() {
            Ok(child) => Ok(child),
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
                Err(Run {
                    stderr: format!("{message}\n"),
                    ..Run::ended(RunResult::SpawnFailed { kind, message })
                })
            }
        }
    }

    /// Carries a started rsync to its end: tracked by PID (for shutdown and the stall
    /// watch), `stdin` written and closed, stdout and stderr kept, its exit. With a
    /// `deadline`, it is killed once it has done no I/O (`/proc/PID/io`) for that long: a
    /// warm run's stand-in for `--timeout` (see [`argv::warm`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
        &self,
        lane: LaneId,
        mut child: std::process::Child,
        argv: &[OsString],
        stdin: Vec<u8>,
        ctx: &JobContext,
        capture_stdout: Capture,
        deadline: Option<std::time::Duration>,
    ) -> Run {
        let pid = child.id();
        self.lock().insert(
            pid,
            Child {
                lane,
                io: 0,
                io_changed: Instant::now(),
            },
        );
        let _tracked = Tracked { runner: self, pid };
        // stdin is written on its own thread: rsync may fill stderr before it has read
        // the whole list, and neither side may wait for the other.
        let writer = child.stdin.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&stdin);
            })
        });
        // All of it when the plan reads it (listings, dry runs), else its end (bounded),
        // and a full sync's progress as it comes.
        let progress = ctx
            .progress
            .clone()
            .filter(|_| argv.iter().any(|a| a == argv::REPORT_PROGRESS));
        let stdout_reader = child.stdout.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let kept_prefix = match capture_stdout {
                    Capture::All => {
                        let mut out = Vec::new();
                        let _ = pipe.read_to_end(&mut out);
                        return out;
                    }
                    Capture::Tail => None,
                    Capture::LinesStarting(prefix) => Some(prefix),
                };
                let mut tail = Tail::new(STDOUT_TAIL);
                let mut kept = kept_prefix.map(KeptLines::new);
                let mut progress = progress.map(|job| {
                    let slot = job.slot();
                    (job, slot, super::progress::Parser::default())
                });
                tail.read_all_with(&mut pipe, |chunk| {
                    if let Some((job, slot, parser)) = progress.as_mut() {
                        if let Some(latest) = parser.feed(chunk) {
                            job.update(*slot, latest);
                        }
                    }
                    if let Some(kept) = kept.as_mut() {
                        kept.feed(chunk);
                    }
                });
                let mut out = kept.map(KeptLines::finish).unwrap_or_default();
                out.extend(tail.finish().0);
                out
            })
        });
        let (ended, watched) = std::sync::mpsc::channel::<()>();
        let watchdog = deadline
            .map(|deadline| std::thread::spawn(move || silence_watchdog(pid, deadline, &watched)));
        let mut stderr = Tail::new(STDERR_KEEP);
        if let Some(mut pipe) = child.stderr.take() {
            stderr.read_all(&mut pipe);
        }
        let status = child.wait();
        drop(ended);
        let killed = watchdog.is_some_and(|watchdog| watchdog.join().unwrap_or(false));
        if killed {
            stderr.push(
                format!(
                    "sersyncd: the warm rsync did no I/O for {} s: ended (its --timeout)\n",
                    deadline.unwrap_or_default().as_secs()
                )
                .as_bytes(),
            );
        }
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let stdout = stdout_reader
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let (stderr, truncated) = stderr.finish();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        Run {
            result: result_of(status),
            stderr,
            truncated,
            stdout,
        }
    }
}

/// Kills `pid` (SIGKILL) once `/proc/PID/io` has not moved for `deadline`; returns whether
/// it did. Stops when `ended` is dropped (the run was waited for: the PID is not looked at
/// again).
fn silence_watchdog(
    pid: u32,
    deadline: std::time::Duration,
    ended: &std::sync::mpsc::Receiver<()>,
) -> bool {
    let mut last = io_bytes(pid);
    let mut since = Instant::now();
    loop {
        match ended.recv_timeout(std::time::Duration::from_millis(500)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return false,
        }
        let now = io_bytes(pid);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= deadline {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return true;
        }
    }
}

/// What a child's wait status says about its run.
fn result_of(status: std::io::Result<std::process::ExitStatus>) -> RunResult {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => RunResult::Exited(code),
            (None, Some(signal)) => RunResult::Signaled(signal),
            (None, None) => RunResult::Exited(-1),
        },
        Err(err) => RunResult::SpawnFailed {
            kind: err.kind(),
            message: format!("waiting for rsync failed: {err}"),
        },
    }
}

/// The last `keep` bytes a run wrote to a pipe (between cuts the buffer grows to twice
/// that), and whether any were lost: stderr's tail then cannot name every failed path.
#[derive(Debug)]
struct Tail {
    keep: usize,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Tail {
    fn new(keep: usize) -> Tail {
        Tail {
            keep,
            bytes: Vec::new(),
            truncated: false,
        }
    }

    /// Reads `pipe` to its end (or its first error).
    fn read_all(&mut self, pipe: &mut impl Read) {
        self.read_all_with(pipe, |_| {});
    }

    /// [`Tail::read_all`], showing each chunk to `seen` as it comes.
    fn read_all_with(&mut self, pipe: &mut impl Read, mut seen: impl FnMut(&[u8])) {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    seen(&chunk[..n]);
                    self.push(&chunk[..n]);
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.keep {
            self.cut();
        }
    }

    fn cut(&mut self) {
        self.bytes.drain(..self.bytes.len() - self.keep);
        self.truncated = true;
    }

    /// The kept bytes and whether their head was cut.
    fn finish(mut self) -> (Vec<u8>, bool) {
        if self.bytes.len() > self.keep {
            self.cut();
        }
        (self.bytes, self.truncated)
    }
}

/// The bytes a run reported sending: rsync's closing summary on stdout, or on stderr
/// where a user's `--stderr=all` (or `--msgs2stderr`) sends every message; 0 when it
/// printed none (it failed before the end, or `-q`).
/// The lines of a stream (ended by `\n` or `\r`) that start with a prefix, each ended by
/// `\n` ([`Capture::LinesStarting`]). The line being read is held up to its end: a line
/// longer than a path can be (64 KiB) is not one of them.
struct KeptLines {
    prefix: &'static [u8],
    kept: Vec<u8>,
    line: Vec<u8>,
    /// The line being read is too long to be kept: dropped up to its end.
    skipping: bool,
}

impl KeptLines {
    const LINE_MAX: usize = 64 << 10;

    fn new(prefix: &'static [u8]) -> KeptLines {
        KeptLines {
            prefix,
            kept: Vec::new(),
            line: Vec::new(),
            skipping: false,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n' || b == b'\r');
            let (part, rest) = match end {
                Some(at) => (&chunk[..at], Some(&chunk[at + 1..])),
                None => (chunk, None),
            };
            if !self.skipping {
                // Only a line that may still start with the prefix is worth holding.
                self.line.extend_from_slice(part);
                let seen = self.line.len().min(self.prefix.len());
                if self.line[..seen] != self.prefix[..seen] || self.line.len() > Self::LINE_MAX {
                    self.skipping = true;
                    self.line.clear();
                }
            }
            let Some(rest) = rest else { return };
            if !self.skipping && self.line.starts_with(self.prefix) {
                self.kept.extend_from_slice(&self.line);
                self.kept.push(b'\n');
            }
            self.line.clear();
            self.skipping = false;
            chunk = rest;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.feed(b"\n");
        self.kept
    }
}

fn reported_sent(run: &Run) -> u64 {
    argv::sent_bytes(&run.stdout)
        .or_else(|| argv::sent_bytes(run.stderr.as_bytes()))
        .unwrap_or(0)
}

/// The process side of one job: what its `Plan` asks for, carried out.
pub(super) struct JobEdge<'a> {
    pub(super) runner: &'a Runner,
    pub(super) lane: LaneId,
    pub(super) ctx: &'a JobContext,
    /// What the job's runs so far reported sending, all of them (the plan combines their
    /// results and may drop a run's, never what it sent).
    pub(super) bytes_sent: &'a mut u64,
    /// The warm pool's generation when the job started ([`super::warm::Spec::generation`]).
    pub(super) generation: u64,
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

    /// Adds what `run` reported sending to the job's sum (and with `<debug>`, logs it
    /// beside the run's end: field `rsync_bytes_sent`).
    fn count(&mut self, run: &Run) {
        let sent = reported_sent(run);
        if self.ctx.debug {
            tracing::debug!(rsync_bytes_sent = sent, result = ?run.result, "run ended");
        }
        *self.bytes_sent = self.bytes_sent.saturating_add(sent);
    }

    /// Carries out one run ([`plan::Edge::run`]).
    fn run_one(&mut self, spec: RunSpec) -> Run {
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
            At::Holding { name, contents } => match runner.holding(&name, &contents, ctx) {
                Ok(skeleton) => runner.run(lane, &argv, skeleton.cwd(), stdin, ctx, capture_stdout),
                Err(err) => Run::ended(RunResult::SpawnFailed {
                    kind: err.kind(),
                    message: format!("cannot prepare {name}: {err}"),
                }),
            },
        }
    }

    /// Carries out runs at once ([`plan::Edge::run_concurrently`]).
    fn run_together(&mut self, specs: Vec<RunSpec>) -> Vec<Run> {
        let Some(first) = specs.first() else {
            return Vec::new();
        };
        // One working directory (one skeleton) for all of them.
        debug_assert!(specs.iter().all(|spec| spec.at == first.at));
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
            At::Holding { .. } => {
                unreachable!("a notice is one run, never run beside others")
            }
        };
        let runs = specs
            .into_iter()
            .map(|spec| (spec.argv, spec.stdin, spec.capture_stdout))
            .collect();
        self.runner.run_concurrently(self.lane, runs, cwd, self.ctx)
    }
}

impl JobEdge<'_> {
    /// A run refused by the module's `max connections` while warm rsyncs held connections
    /// there: they are ended, the destination runs cold from now on, and the run gets one
    /// more try once the daemon's side of them has gone.
    fn refused_by_warm(&mut self, run: &Run) -> bool {
        plan::refused_at_start(run)
            && self.runner.warm.refuse(&self.ctx.transport.destination())
            && {
                std::thread::sleep(std::time::Duration::from_millis(300));
                true
            }
    }

    /// The send run of a small batch handed to the lane's warm rsync; `None` when the lane
    /// has none that matches (the batch then runs cold).
    fn hand_off(&mut self, spec: &warm::Spec, paths: &[&[u8]]) -> Option<Run> {
        let runner = self.runner;
        let slot = runner.slots.take();
        let Some(child) = runner.warm.take(self.lane, spec) else {
            drop(slot);
            return None;
        };
        if self.ctx.debug {
            tracing::debug!(pid = child.id(), "run: handed to the warm rsync");
        }
        if spec.over_master() {
            // Over an ssh connection master a session is cheap and no `max connections`
            // counts it: the next batch's warm rsync starts beside this run, so that it is
            // ready when a stream's next change comes (its handshake takes longer than
            // this run's own end), but a moment after the hand-off, once this run's
            // transfer is under way: its start (rsync, ssh, the receiver's shell) would
            // compete with it for the CPU. Without a master it starts after this run.
            runner.warm.offer_at(
                runner,
                self.lane,
                spec.clone(),
                std::time::Instant::now() + warm::EARLY_START_DELAY,
            );
        }
        let deadline =
            std::time::Duration::from_secs(u64::from(argv::io_timeout(&self.ctx.transport)));
        let run = runner.finish(
            self.lane,
            child,
            &spec.argv,
            argv::nul_list(paths.iter().copied()),
            self.ctx,
            Capture::Tail,
            Some(deadline),
        );
        drop(slot);
        if warm::rerun_cold(&run.result) {
            tracing::debug!(
                result = ?run.result,
                "the warm rsync had lost its connection ({}): the batch runs cold",
                run.stderr.trim()
            );
            if plan::refused_at_start(&run) {
                self.runner.warm.refuse(&self.ctx.transport.destination());
            }
            return None;
        }
        Some(run)
    }
}

impl plan::Edge for JobEdge<'_> {
    fn gone_since_known(&mut self) -> Vec<Vec<u8>> {
        let Some(versions) = self.ctx.versions.as_deref() else {
            return Vec::new();
        };
        // What the peer deleted here is not among them: the peer lacks it since its
        // notice announced the removal (`Versions::paths`), read before its run's events
        // or left behind for the start (`prepare_incoming`), and removed only once that
        // is saved.
        facts::gone(&self.ctx.root, versions.paths())
    }

    fn announce_here(&mut self, entries: &[(Vec<u8>, super::two_way::Announced)]) {
        // Written aside and renamed into place: the watcher reads a notice when one is
        // renamed into the incoming directory.
        let incoming = self.ctx.root.join(super::two_way::INCOMING);
        let name = super::two_way::notice_name();
        let aside = incoming.join(format!(".{name}"));
        let written = std::fs::write(&aside, super::two_way::encode_notice(entries))
            .and_then(|()| std::fs::rename(&aside, incoming.join(&name)));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&aside);
            tracing::debug!("two-way: cannot announce a pull to this host's watcher: {err}");
        }
    }

    fn record_peer_lacks(&mut self, paths: &[&[u8]]) {
        let Some(versions) = self.ctx.versions.as_deref() else {
            return;
        };
        for path in paths {
            // Made here again meanwhile: that one is had here, and judged as such.
            if std::fs::symlink_metadata(crate::relpath::absolute(&self.ctx.root, path)).is_err() {
                versions.record_peer_lacks(path);
            }
        }
    }

    fn record_sent(
        &mut self,
        sent: &[(Vec<u8>, super::two_way::Version)],
        since: std::time::SystemTime,
    ) {
        if let Some(versions) = self.ctx.versions.as_deref() {
            for (path, version) in sent {
                versions.record_since(path, *version, since);
            }
        }
    }

    fn record_delivered(&mut self, paths: &[&[u8]], started: std::time::Instant) {
        if let Some(versions) = self.ctx.versions.as_deref() {
            for path in paths {
                versions.delivered(path, started);
            }
        }
    }

    fn record_tree_versions(&mut self) -> Vec<Vec<u8>> {
        let Some(versions) = self.ctx.versions.as_deref() else {
            return Vec::new();
        };
        let own = self.ctx.transport.own_directories();
        let mut new_here = Vec::new();
        for path in facts::local_subtree(&self.ctx.root, b"", &self.ctx.filter) {
            if own
                .iter()
                .any(|dir| crate::relpath::is_at_or_below(&path, dir.as_bytes()))
            {
                continue;
            }
            let had = versions.had(&path);
            let recorded = versions.record_from_disk(&self.ctx.root, &path);
            if recorded.is_some() {
                versions.here_again(&path);
            }
            if !had && recorded == Some(super::two_way::Version::DIRECTORY) {
                new_here.push(path);
            }
        }
        new_here.sort_unstable();
        new_here
    }

    fn run(&mut self, spec: RunSpec) -> Run {
        let mut run = self.run_one(spec.clone());
        if self.refused_by_warm(&run) {
            run = self.run_one(spec.clone());
        }
        if plan::refused_at_start(&run) {
            if self.runner.lane_runs(self.lane) > 0 {
                // Turned away while another run of this lane (its large-file run) held
                // the module's connection: one run at a time for it from now on (the
                // daemon then keeps a lane's batches and its large run apart, and batches
                // keep their large files). This run fails once and is retried.
                self.runner.go_serial(self.ctx);
            } else if self.runner.is_serial(self.ctx) {
                // One run at a time already: the daemon's side of the one before (the
                // lane's large run, just ended) is still going away. One more try.
                std::thread::sleep(std::time::Duration::from_millis(300));
                run = self.run_one(spec);
            }
        }
        self.count(&run);
        run
    }

    fn send(&mut self, spec: RunSpec, paths: &[&[u8]]) -> Run {
        let Some(warm) = warm::Spec::of(self.ctx, self.generation).filter(|_| spec.at == At::Root)
        else {
            return self.run(spec);
        };
        let handed = if warm::fits(paths) {
            self.hand_off(&warm, paths)
        } else {
            None
        };
        let run = match handed {
            Some(run) => {
                self.count(&run);
                run
            }
            None => self.run(spec),
        };
        // The next batch's: started right after this one (never beside its own send).
        self.runner.warm.offer(self.runner, self.lane, warm);
        run
    }

    fn run_concurrently(&mut self, specs: Vec<RunSpec>) -> Vec<Run> {
        let mut runs = self.run_together(specs.clone());
        // Turned away because this lane's own idle warm rsync held the module's only
        // connection (`max connections = 1`, a deletion run after a send): as for a single
        // run (`refused_by_warm`), the warm rsyncs go, and the refused runs go once more.
        // Without this a deletion failed for as long as a warm rsync was kept idle there.
        if runs.iter().any(plan::refused_at_start)
            && self.runner.warm.refuse(&self.ctx.transport.destination())
        {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let refused: Vec<usize> = (0..runs.len())
                .filter(|&at| plan::refused_at_start(&runs[at]))
                .collect();
            let again = self.run_together(refused.iter().map(|&at| specs[at].clone()).collect());
            for (at, run) in refused.into_iter().zip(again) {
                runs[at] = run;
            }
        }
        for run in &runs {
            self.count(run);
        }
        runs
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
        facts::entries(&self.ctx.root, batch, self.ctx.versions.as_deref())
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

    fn are_directories(&mut self, paths: &[&[u8]]) -> Vec<bool> {
        paths
            .iter()
            .map(|path| {
                std::fs::symlink_metadata(crate::relpath::absolute(&self.ctx.root, path))
                    .is_ok_and(|meta| meta.is_dir())
            })
            .collect()
    }

    fn versions(&mut self, paths: &[&[u8]]) -> Vec<Option<super::two_way::Version>> {
        paths
            .iter()
            .map(|path| {
                let meta =
                    std::fs::symlink_metadata(crate::relpath::absolute(&self.ctx.root, path))
                        .ok()?;
                (!meta.is_dir()).then(|| super::two_way::Version::of(&meta))
            })
            .collect()
    }

    fn in_place(&mut self, paths: &[&[u8]]) -> Vec<Option<Announced>> {
        paths
            .iter()
            .map(|path| {
                let abs = crate::relpath::absolute(&self.ctx.root, path);
                let meta = std::fs::symlink_metadata(&abs).ok()?;
                Announced::of(&abs, &meta)
            })
            .collect()
    }
}

/// Bytes read plus bytes written by process `pid` so far (`rchar + wchar` of
/// `/proc/PID/io`: every read(2) and write(2), sockets and pipes included).
pub(super) fn io_bytes(pid: u32) -> Option<u64> {
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
pub(super) struct Skeleton {
    path: PathBuf,
    dir: std::os::fd::OwnedFd,
}

impl Skeleton {
    pub(super) fn cwd(&self) -> Cwd<'_> {
        Cwd::Scratch(self.dir.as_fd())
    }
}

/// Where an rsync run starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cwd<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;

    /// A fresh directory of this test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sersync-process-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn context(root: &Path) -> JobContext {
        crate::sync::fixtures::context(root)
    }

    #[test]
    fn stderr_keeps_its_tail() {
        // (sizes of the chunks written, bytes kept, head cut)
        let rows: &[(&[usize], usize, bool)] = &[
            (&[], 0, false),
            (&[10, 20], 30, false),
            (&[STDERR_KEEP], STDERR_KEEP, false),
            (&[STDERR_KEEP, 1], STDERR_KEEP, true),
            (&[8192; 5], STDERR_KEEP, true),
            (&[3 * STDERR_KEEP], STDERR_KEEP, true),
        ];
        for (chunks, kept, cut) in rows {
            let mut tail = Tail::new(STDERR_KEEP);
            let mut written = Vec::new();
            for (i, size) in chunks.iter().enumerate() {
                let chunk: Vec<u8> = (0..*size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
                tail.push(&chunk);
                written.extend(chunk);
            }
            let (text, truncated) = tail.finish();
            assert_eq!((text.len(), truncated), (*kept, *cut), "{chunks:?}");
            assert!(
                written.ends_with(&text),
                "{chunks:?}: the last bytes are kept"
            );
        }
    }

    #[test]
    fn wait_statuses() {
        let rows = [
            (Ok(0), RunResult::Exited(0)),
            (Ok(23 << 8), RunResult::Exited(23)),
            (Ok(9), RunResult::Signaled(9)),
            (
                Err(std::io::ErrorKind::Interrupted),
                RunResult::SpawnFailed {
                    kind: std::io::ErrorKind::Interrupted,
                    message: "waiting for rsync failed: interrupted".into(),
                },
            ),
        ];
        for (status, result) in rows {
            let status = status
                .map(std::process::ExitStatus::from_raw)
                .map_err(|kind| std::io::Error::new(kind, "interrupted"));
            assert_eq!(result_of(status), result);
        }
    }

    #[test]
    fn a_skeleton_holds_only_its_directories_and_goes_away() {
        let dir = scratch("skeleton");
        let runner = Runner::new(PathBuf::from("/bin/false"), dir.clone(), 2);
        let dirs: Vec<Vec<u8>> = vec![b"a".to_vec(), b"a/b".to_vec(), b"c//d".to_vec()];
        let skeleton = runner.make_skeleton(&dirs, None, false).unwrap();
        let top = skeleton.path.clone();
        assert_eq!(top.parent(), Some(dir.as_path()));
        let mut found: Vec<String> = Vec::new();
        let mut stack = vec![top.clone()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(entry.path()).unwrap();
                assert!(meta.is_dir());
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    0o700,
                    "{:?}",
                    entry.path()
                );
                found.push(
                    entry
                        .path()
                        .strip_prefix(&top)
                        .unwrap()
                        .display()
                        .to_string(),
                );
                stack.push(entry.path());
            }
        }
        found.sort();
        assert_eq!(found, ["a", "a/b", "c", "c/d"]);
        drop(skeleton);
        assert!(!top.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_reports_its_exit_its_stderr_and_its_stdout() {
        let dir = scratch("run");
        let ctx = context(&dir);
        let sh = Runner::new(PathBuf::from("/bin/sh"), dir.clone(), 1);
        let arg = |text: &str| OsString::from(text);
        let pwd = format!("{}\n", dir.display());
        // (shell script, stdin, result, stderr, stdout)
        type Row<'a> = (&'a str, &'a [u8], RunResult, &'a str, &'a [u8]);
        let rows: [Row<'_>; 3] = [
            (
                "pwd; echo failed >&2; exit 23",
                b"",
                RunResult::Exited(23),
                "failed\n",
                pwd.as_bytes(),
            ),
            (
                "cat",
                b"listed\0paths\0",
                RunResult::Exited(0),
                "",
                b"listed\0paths\0",
            ),
            ("kill -9 $$", b"", RunResult::Signaled(9), "", b""),
        ];
        for (script, stdin, result, stderr, stdout) in rows {
            let argv = [arg("-c"), arg(script)];
            let run = sh.run(
                7,
                &argv,
                Cwd::Tree(&dir),
                stdin.to_vec(),
                &ctx,
                Capture::All,
            );
            assert_eq!(run.result, result, "{script}");
            assert_eq!(run.stderr, stderr, "{script}");
            assert_eq!(run.stdout, stdout, "{script}");
            assert_eq!(sh.running(), 0);
        }
        // A directory that went away is a failure to retry, not a missing rsync.
        let run = sh.run(
            7,
            &[arg("-c"), arg("true")],
            Cwd::Tree(&dir.join("gone")),
            Vec::new(),
            &ctx,
            Capture::Tail,
        );
        assert!(
            matches!(&run.result, RunResult::SpawnFailed { kind: std::io::ErrorKind::Other, message } if message.contains("gone")),
            "{:?}",
            run.result
        );
        let missing = Runner::new(dir.join("no-rsync"), dir.clone(), 1);
        let run = missing.run(7, &[], Cwd::Tree(&dir), Vec::new(), &ctx, Capture::Tail);
        assert!(
            matches!(
                run.result,
                RunResult::SpawnFailed {
                    kind: std::io::ErrorKind::NotFound,
                    ..
                }
            ),
            "{:?}",
            run.result
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kept_lines_are_those_with_the_prefix_however_the_stream_is_cut() {
        let long = format!("cd+++++++++ {}\n", "x".repeat(KeptLines::LINE_MAX));
        let rows: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"cd+++++++++ a/\n", b"cd+++++++++ a/\n"),
            // Progress records (`\r`) between itemized lines, and a last line unended.
            (
                b"\r   1,234  10%  1.00MB/s  0:00:01 (xfr#1, to-chk=3/5)\ncd+++++++++ a/\n\
                  >f+++++++++ a/f\n.d..t...... b/\r  2  50%\ncd+++++++++ b/c d/",
                b"cd+++++++++ a/\ncd+++++++++ b/c d/\n",
            ),
            // Not at the start of a line.
            (b"x cd+++++++++ a/\ncd+++\n", b""),
            (long.as_bytes(), b""),
        ];
        for (stream, kept) in rows {
            // Whole, and in chunks of every size up to 7 bytes.
            for size in [usize::MAX, 1, 2, 3, 7] {
                let mut lines = KeptLines::new(b"cd+++++++++ ");
                for chunk in stream.chunks(size.min(stream.len().max(1))) {
                    lines.feed(chunk);
                }
                assert_eq!(
                    lines.finish().escape_ascii().to_string(),
                    kept.escape_ascii().to_string(),
                    "{} in chunks of {size}",
                    stream.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn a_job_counts_what_each_of_its_runs_reported_sending() {
        use plan::Edge;
        let dir = scratch("sent");
        let ctx = context(&dir);
        let sh = Runner::new(PathBuf::from("/bin/sh"), dir.clone(), 2);
        let spec = |script: &str, capture_stdout: Capture| RunSpec {
            argv: vec![OsString::from("-c"), OsString::from(script)],
            stdin: Vec::new(),
            at: At::Root,
            capture_stdout,
        };
        // A long `-v` listing first: only the end of stdout is kept, the summary with it.
        let listing = "i=0; while [ $i -lt 3000 ]; do echo \"dir/file-$i\"; i=$((i+1)); done";
        let summary = |sent: &str| {
            format!(
                "printf '\\nsent {sent} bytes  received 35 bytes  9.00 bytes/sec\\ntotal size is 1  speedup is 0.01\\n'"
            )
        };
        let mut bytes_sent = 0;
        let mut edge = JobEdge {
            runner: &sh,
            lane: 7,
            ctx: &ctx,
            bytes_sent: &mut bytes_sent,
            generation: 0,
        };
        let run = edge.run(spec(
            &format!("{listing}; {}", summary("100,118")),
            Capture::Tail,
        ));
        assert!(run.stdout.len() <= STDOUT_TAIL, "{}", run.stdout.len());
        assert!(run.stdout.ends_with(b"speedup is 0.01\n"));
        // Concurrent runs, one failing after its summary (exit 23 still prints it), one
        // with its messages on stderr (`--stderr=all`), one printing none (`-q`).
        let runs = edge.run_concurrently(vec![
            spec(&format!("{}; exit 23", summary("2000")), Capture::Tail),
            spec(&format!("{} >&2", summary("30")), Capture::Tail),
            spec("exit 0", Capture::Tail),
        ]);
        assert_eq!(runs.len(), 3);
        // A listing the plan reads whole, and a run that could not start.
        let listing_run = edge.run(spec(&format!("{listing}; {}", summary("4")), Capture::All));
        assert!(listing_run.stdout.len() > STDOUT_TAIL);
        // Lines of one kind kept whole, before the end (the summary, counted).
        let kept = edge.run(spec(
            &format!("{listing}; echo 'cd+++ made/'; {listing}; {}", summary("5")),
            Capture::LinesStarting(b"cd+++ "),
        ));
        assert!(kept.stdout.starts_with(b"cd+++ made/\n"));
        assert!(
            kept.stdout.len() <= STDOUT_TAIL + 12,
            "{}",
            kept.stdout.len()
        );
        let missing = Runner::new(dir.join("no-rsync"), dir.clone(), 1);
        let mut none = 0;
        JobEdge {
            runner: &missing,
            lane: 7,
            ctx: &ctx,
            bytes_sent: &mut none,
            generation: 0,
        }
        .run(spec("", Capture::Tail));
        assert_eq!(none, 0);
        assert_eq!(bytes_sent, 100_118 + 2000 + 30 + 4 + 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slots_bound_the_runs() {
        let slots = std::sync::Arc::new(Slots::new(1));
        let held = slots.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = std::sync::Arc::clone(&slots);
        let thread = std::thread::spawn(move || {
            let _slot = waiting.take();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        thread.join().unwrap();
    }
}
