//! A warm rsync per lane: started before its batch is known, connected to the remote and
//! blocked reading its file list on stdin (`--files-from=- --from0`); a small batch's send
//! run is handed to it (the NUL-separated paths written, stdin closed), and a fresh one is
//! started right after. The process start, the connect, the daemon greeting, auth and the
//! protocol negotiation (10-50 ms; over ssh the key exchange too) are then paid while the
//! lane is idle, not by the change waiting to go out.
//!
//! What holds (see ARCHITECTURE.md, `src/sync/`):
//! - A warm process has exactly the argv of the cold send run in its `--files-from` form
//!   ([`argv::warm`]: without `--timeout`, replaced by a silence deadline of ours), the
//!   job's credentials, password pipe, working directory and parent-death signal. It is
//!   handed a batch only if all of those still match the job's ([`Spec::matches`]).
//! - At most one idle warm process per lane, two while its runs go over an ssh connection
//!   master that is up ([`depth`], [`Spec::over_master`]; there the next one starts
//!   [`EARLY_START_DELAY`] after the hand-off, beside the run, instead of after it). One takes no `-n` slot while idle (it does no work); handed a batch,
//!   the run takes a slot like any run, so at most `-n` rsyncs do work at once, plus the
//!   idle ones.
//! - The keeper thread (the one long-lived thread that starts warm processes, so that
//!   their `PR_SET_PDEATHSIG` is not fired by a job thread's exit) replaces a warm process
//!   idle for [`recycle_after`], or that lost its connection (the remote's idle timeout:
//!   the interval then shrinks to 3/4 of the lifetime seen); one refused by the module's
//!   `max connections` turns the destination to cold runs for good (logged once), as does
//!   a cold run refused while a warm process held the destination ([`Pool::refuse`]).
//! - A warm process that died before or at the hand-off (exit 5, 10, 12, 35, 255 before
//!   anything is known to be sent: [`rerun_cold`]) costs nothing: the batch runs cold,
//!   and only that run's result counts.
//! - Pause, reload and shutdown end idle warm processes by PID ([`Pool::set_paused`],
//!   [`Pool::cool_all`], [`Pool::close`]); a job started before a reload offers none.
//! - Deletions, full syncs, rename seeds, dirty directories and two-way mode stay cold.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::plan::Run;
use super::process::Cwd;
use super::{JobContext, RunResult, Runner, argv};
use crate::queue::LaneId;

/// A batch goes to the warm process when it lists at most this many paths ...
pub const MAX_PATHS: usize = 256;
/// ... in at most this many bytes: rsync reads `--files-from` one byte per read(2) (about
/// 2 µs a byte), so 8 KiB costs ~16 ms, about what a cold start costs; bigger batches keep
/// the argument form.
pub const MAX_LIST_BYTES: usize = 8 * 1024;
/// A warm process that ends sooner than this after its start was refused (or failed to
/// start), not ended by an idle timeout: it is not replaced until the lane's next batch.
const YOUNG: Duration = Duration::from_secs(1);
/// Over an ssh connection master, the next warm process starts this long after a hand-off
/// (see `JobEdge::hand_off`): after the handed run's transfer has started, well before a
/// stream's next change.
pub const EARLY_START_DELAY: Duration = Duration::from_millis(20);
/// The keeper looks at the warm processes this often.
const TICK: Duration = Duration::from_millis(500);

/// Whether a send run of `paths` goes to the lane's warm process (else it runs cold, with
/// the paths as arguments or, beyond the argv budget, on stdin).
pub fn fits(paths: &[&[u8]]) -> bool {
    paths.len() <= MAX_PATHS
        && paths
            .iter()
            .map(|p| argv::dot_path(p).len() + 1)
            .sum::<usize>()
            <= MAX_LIST_BYTES
}

/// How many idle warm processes a lane keeps: two when its runs go over an ssh connection
/// master (`super::master`), else one (a second would hold a second connection to the
/// remote: an rsync daemon counts it against `max connections`, and over ssh without a
/// master it is a second login).
pub fn depth(over_master: bool) -> usize {
    if over_master { 2 } else { 1 }
}

/// How long a warm process may stay idle before it is replaced: `<warm idle>`, or 3/4 of
/// the shortest idle lifetime seen for its destination (the remote's own idle timeout
/// ended it), never under a second.
pub fn recycle_after(configured: Duration, lived: Option<Duration>) -> Duration {
    let learned = lived.map_or(configured, |lived| lived * 3 / 4);
    configured.min(learned).max(Duration::from_secs(1))
}

/// Whether a warm run's end means the process had lost (or never had) its connection, so
/// the batch is run again cold and only that run counts: exit 5 (refused at start), 10
/// (socket I/O), 12 (protocol stream: "connection unexpectedly closed", what an idle
/// timeout on the remote leaves), 35 (daemon connection timeout), 255 (ssh lost). A rerun
/// sends the same paths' current state again, so it is harmless even if part got through.
pub fn rerun_cold(result: &RunResult) -> bool {
    matches!(result, RunResult::Exited(5 | 10 | 12 | 35 | 255))
}

/// What a warm process is for: its argv and whatever else a hand-off must match.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub(super) argv: Vec<OsString>,
    pub(super) ctx: JobContext,
    pub(super) idle: Duration,
    pub(super) destination: OsString,
    /// The pool's generation when the job that offers it started ([`Pool::cool_all`]).
    pub(super) generation: u64,
}

impl Spec {
    /// The warm process for `ctx`'s send runs (`None` when warm processes are off, or in
    /// two-way mode, whose sends list the peer's copies first).
    pub(super) fn of(ctx: &JobContext, generation: u64) -> Option<Spec> {
        let warm = ctx.transport.options.warm?;
        if ctx.transport.options.two_way {
            return None;
        }
        Some(Spec {
            argv: argv::warm(&ctx.transport),
            ctx: ctx.clone(),
            idle: Duration::from_secs(u64::from(warm.idle_secs)),
            destination: ctx.transport.destination(),
            generation,
        })
    }

    /// How many idle warm processes its lane keeps: over an ssh connection master two
    /// (sessions are cheap there, and one started at a hand-off is still in its handshake
    /// when a stream's next change comes 50 ms later), else one ([`depth`]).
    pub(super) fn depth(&self) -> usize {
        depth(self.over_master())
    }

    /// Whether its runs go over an ssh connection master that is up now (its socket is
    /// there: a master that cannot log in or is down leaves none, and its lanes' warm
    /// rsyncs, each then a login of its own, stay one per lane, started after the run).
    pub(super) fn over_master(&self) -> bool {
        self.ctx
            .transport
            .control_path
            .as_deref()
            .is_some_and(super::master::is_up)
    }

    /// Whether a process started for `self` may run `other`'s batch: same argv, same
    /// working directory, same credentials and password.
    fn matches(&self, other: &Spec) -> bool {
        self.argv == other.argv
            && self.ctx.root == other.ctx.root
            && self.ctx.identity == other.ctx.identity
            && self.ctx.password.is_some() == other.ctx.password.is_some()
    }
}

struct Idle {
    spec: Spec,
    child: Child,
    born: Instant,
}

#[derive(Default)]
struct State {
    /// Per lane, oldest first (at most [`depth`]).
    idle: HashMap<LaneId, Vec<Idle>>,
    paused: bool,
    closed: bool,
    generation: u64,
    /// Destinations that refused a warm process's connection (`max connections`): cold
    /// runs only, for good.
    cold: HashSet<OsString>,
    /// The shortest idle lifetime seen per destination (its idle timeout).
    lived: HashMap<OsString, Duration>,
    /// Ended processes not yet reaped (by the keeper).
    dying: Vec<(Child, Instant)>,
}

enum Order {
    /// Start the lane's warm processes, not before the instant.
    Start(LaneId, Box<Spec>, Instant),
}

/// The lanes' warm processes.
#[derive(Default)]
pub(super) struct Pool {
    state: Mutex<State>,
    keeper: OnceLock<Mutex<Sender<Order>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("warm::Pool")
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Asks for a warm process for `lane` (started by the keeper, unless the lane has
    /// one, the pool is paused or closed, the destination is cold, or a reload came since
    /// the job started).
    pub(super) fn offer(&self, runner: &Runner, lane: LaneId, spec: Spec) {
        self.offer_at(runner, lane, spec, Instant::now());
    }

    /// [`Pool::offer`], started no sooner than `at`.
    pub(super) fn offer_at(&self, runner: &Runner, lane: LaneId, spec: Spec, at: Instant) {
        {
            let state = self.lock();
            if !state.wants(lane, &spec) {
                return;
            }
        }
        let keeper = self.keeper.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let runner = runner.clone();
            let started = std::thread::Builder::new()
                .name("rsync-warm".into())
                .spawn(move || keep(&runner, &rx));
            if let Err(err) = started {
                tracing::warn!("cannot start the thread of warm rsyncs: {err}; all runs cold");
            }
            Mutex::new(tx)
        });
        let _ = keeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Order::Start(lane, Box::new(spec), at));
    }

    /// The lane's warm process for a batch of `spec`, if it has a live one that matches
    /// (one that does not is ended).
    pub(super) fn take(&self, lane: LaneId, spec: &Spec) -> Option<Child> {
        let mut state = self.lock();
        loop {
            // The oldest: the most likely to be connected already.
            let list = state.idle.get_mut(&lane)?;
            let mut idle = list.remove(0);
            if list.is_empty() {
                state.idle.remove(&lane);
            }
            if !idle.spec.matches(spec) {
                tracing::debug!("the warm rsync was started for other options: ended");
                end(&mut state, idle.child);
                continue;
            }
            if let Some(gone) = lost(&mut idle.child, &tcp_tables()) {
                state.settle_lost(idle, gone);
                continue;
            }
            if !in_directory(idle.child.id(), &spec.ctx.root) {
                // Its working directory is the root it started in: a root deleted and made
                // again, or mounted over, is another directory, where the listed paths do
                // not exist (and `--ignore-missing-args` would skip them all, with success).
                tracing::debug!("the warm rsync's directory is no longer the root: ended");
                end(&mut state, idle.child);
                continue;
            }
            return Some(idle.child);
        }
    }

    /// A run to `destination` was refused by the module's `max connections`: if warm
    /// processes held connections there, they are ended, the destination runs cold from now
    /// on (logged once), and the run is worth one more try (`true`).
    pub(super) fn refuse(&self, destination: &OsString) -> bool {
        let mut state = self.lock();
        let held: Vec<LaneId> = state
            .idle
            .iter()
            .filter(|(_, list)| {
                list.iter()
                    .any(|idle| &idle.spec.destination == destination)
            })
            .map(|(lane, _)| *lane)
            .collect();
        if held.is_empty() {
            return false;
        }
        state.go_cold(destination);
        for lane in held {
            for idle in state.idle.remove(&lane).unwrap_or_default() {
                end(&mut state, idle.child);
            }
        }
        true
    }

    /// Pause: idle warm processes are ended and none is started until resumed.
    pub(super) fn set_paused(&self, paused: bool) {
        let mut state = self.lock();
        state.paused = paused;
        if paused {
            state.end_all();
        }
    }

    /// A reload: every idle warm process is ended (a lane that stays gets a new one after
    /// its next batch), and jobs started before it offer none.
    pub(super) fn cool_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.end_all();
    }

    /// Shutdown: every warm process is ended and reaped (SIGTERM, SIGKILL after 2 s);
    /// none is started again.
    pub(super) fn close(&self) {
        let dying = {
            let mut state = self.lock();
            state.closed = true;
            state.end_all();
            std::mem::take(&mut state.dying)
        };
        for (mut child, at) in dying {
            reap(&mut child, at, true);
        }
    }

    /// How many warm processes are idle.
    pub(super) fn idle(&self) -> usize {
        self.lock().idle.values().map(Vec::len).sum()
    }
}

impl State {
    /// Whether a warm process for `lane` to `spec` should be started now: the pool is open
    /// and not paused, no reload came since `spec` was made, the destination takes warm
    /// processes, and the lane has fewer idle than its [`depth`].
    fn wants(&self, lane: LaneId, spec: &Spec) -> bool {
        !self.closed
            && !self.paused
            && self.generation == spec.generation
            && !self.cold.contains(&spec.destination)
            && self.idle.get(&lane).map_or(0, Vec::len) < spec.depth()
    }

    fn end_all(&mut self) {
        let all: Vec<Idle> = self.idle.drain().flat_map(|(_, list)| list).collect();
        for idle in all {
            end(self, idle.child);
        }
    }

    fn go_cold(&mut self, destination: &OsString) {
        if self.cold.insert(destination.clone()) {
            tracing::warn!(
                destination = %destination.to_string_lossy(),
                "the remote refused the connection of a warm rsync (max connections?): \
                 cold runs only for it from now on"
            );
        }
    }

    /// A warm process found dead (or its connection closed): what its end says.
    /// Returns whether it should be replaced now (the remote's idle timeout ended it).
    fn settle_lost(&mut self, idle: Idle, stderr: String) -> bool {
        let age = idle.born.elapsed();
        let destination = idle.spec.destination.clone();
        end(self, idle.child);
        if crate::failure::policy::at_connection_limit(&stderr) {
            self.go_cold(&destination);
            return false;
        }
        if age < YOUNG {
            tracing::debug!(
                destination = %destination.to_string_lossy(),
                "a warm rsync ended at its start: {}", stderr.trim()
            );
            return false;
        }
        let shortest = self.lived.get(&destination).copied();
        if shortest.is_none_or(|shortest| age < shortest) {
            self.lived.insert(destination.clone(), age);
            tracing::info!(
                destination = %destination.to_string_lossy(),
                "the remote closed an idle warm rsync after {:.1} s: warm rsyncs for it are \
                 replaced every {:.1} s",
                age.as_secs_f64(),
                recycle_after(idle.spec.idle, Some(age)).as_secs_f64()
            );
        }
        true
    }
}

/// Ends an idle warm process (SIGTERM), and its own children (ssh) by PID: it has read
/// no path, so nothing was sent. The keeper reaps it.
fn end(state: &mut State, child: Child) {
    let pid = child.id();
    let below =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    signal(pid, nix::sys::signal::Signal::SIGTERM);
    for grandchild in below.split_whitespace().filter_map(|p| p.parse().ok()) {
        signal(grandchild, nix::sys::signal::Signal::SIGTERM);
    }
    state.dying.push((child, Instant::now()));
}

/// Whether the process `pid` works in the directory that is at `dir` now (same device
/// and inode; unknown counts as not).
fn in_directory(pid: u32, dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(format!("/proc/{pid}/cwd")),
        std::fs::metadata(dir),
    ) {
        (Ok(cwd), Ok(now)) => cwd.dev() == now.dev() && cwd.ino() == now.ino(),
        _ => false,
    }
}

/// Sends `signal` to process `pid` (one of ours), ignoring a process already gone.
pub(super) fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Reaps `child` if it ended; past 2 s since `since`, kills it (SIGKILL). With `wait`,
/// until it is reaped. Returns whether it was.
pub(super) fn reap(child: &mut Child, since: Instant, wait: bool) -> bool {
    loop {
        if let Ok(Some(_)) | Err(_) = child.try_wait() {
            return true;
        }
        if since.elapsed() >= Duration::from_secs(2) {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        if !wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether an idle warm process has lost its connection: it exited, its rsync daemon
/// socket is half-closed by the remote (`CLOSE_WAIT`), or its ssh child ended. `Some`
/// with what it wrote to stderr.
fn lost(child: &mut Child, tcp: &str) -> Option<String> {
    let exited = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
    if !exited && !connection_closed(child.id(), tcp) {
        return None;
    }
    // What it said, without waiting for a writer that may still hold the pipe.
    let mut said = Vec::new();
    if let Some(pipe) = child.stderr.as_mut() {
        use std::os::fd::AsRawFd;
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, changing only its status flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 || said.len() > 16 * 1024 {
                break;
            }
            said.extend_from_slice(&chunk[..n]);
        }
    }
    Some(String::from_utf8_lossy(&said).into_owned())
}

/// The kernel's TCP tables (`/proc/net/tcp` and `tcp6`), read once per look at the warm
/// processes.
fn tcp_tables() -> String {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .collect::<Vec<String>>()
        .join("")
}

/// Whether process `pid` (or its ssh child) has lost its connection (see [`lost`]), by
/// the TCP tables `tcp`.
fn connection_closed(pid: u32, tcp: &str) -> bool {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut pids = vec![pid];
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if stat_state(&stat).is_none_or(|state| state == 'Z' || state == 'X') {
            return true;
        }
        pids.push(child);
    }
    let inodes: HashSet<u64> = pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    if inodes.is_empty() {
        return false;
    }
    closed_by_peer(tcp, &inodes)
}

fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The state letter of a `/proc/PID/stat` line (after the command's closing parenthesis).
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether a `/proc/net/tcp` table shows one of `inodes` in `CLOSE_WAIT` (state `08`: the
/// remote closed its end).
fn closed_by_peer(table: &str, inodes: &HashSet<u64>) -> bool {
    // The header lines (one per table) have no number in the inode column.
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && fields[3] == "08"
            && fields[9]
                .parse::<u64>()
                .is_ok_and(|inode| inodes.contains(&inode))
    })
}

/// The keeper thread: starts the warm processes it is asked for, replaces those idle too
/// long or that lost their connection, reaps the ended ones.
fn keep(runner: &Runner, orders: &Receiver<Order>) {
    let pool = &runner.warm;
    // Starts asked for later (`Pool::offer_at`), soonest first.
    let mut deferred: Vec<(Instant, LaneId, Spec)> = Vec::new();
    loop {
        let wait = deferred.first().map_or(TICK, |(at, _, _)| {
            at.saturating_duration_since(Instant::now()).min(TICK)
        });
        match orders.recv_timeout(wait) {
            Ok(Order::Start(lane, spec, at)) if at > Instant::now() => {
                deferred.push((at, lane, *spec));
                deferred.sort_by_key(|(at, _, _)| *at);
            }
            Ok(Order::Start(lane, spec, _)) => start(runner, lane, *spec),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                pool.close();
                return;
            }
        }
        let now = Instant::now();
        while deferred.first().is_some_and(|(at, _, _)| *at <= now) {
            let (_, lane, spec) = deferred.remove(0);
            start(runner, lane, spec);
        }
        let mut replace = Vec::new();
        {
            let mut state = pool.lock();
            let tcp = if state.idle.is_empty() {
                String::new()
            } else {
                tcp_tables()
            };
            let lanes: Vec<LaneId> = state.idle.keys().copied().collect();
            for lane in lanes {
                let Some(list) = state.idle.remove(&lane) else {
                    continue;
                };
                let mut kept = Vec::new();
                for mut idle in list {
                    if let Some(said) = lost(&mut idle.child, &tcp) {
                        let spec = idle.spec.clone();
                        if state.settle_lost(idle, said) {
                            replace.push((lane, spec));
                        }
                        continue;
                    }
                    let lived = state.lived.get(&idle.spec.destination).copied();
                    if idle.born.elapsed() >= recycle_after(idle.spec.idle, lived) {
                        replace.push((lane, idle.spec.clone()));
                        end(&mut state, idle.child);
                        continue;
                    }
                    kept.push(idle);
                }
                if !kept.is_empty() {
                    state.idle.insert(lane, kept);
                }
            }
            state
                .dying
                .retain_mut(|(child, since)| !reap(child, *since, false));
        }
        for (lane, spec) in replace {
            start(runner, lane, spec);
        }
    }
}

/// Starts warm processes for `lane` until it has its [`depth`] (on the keeper thread,
/// which outlives them).
fn start(runner: &Runner, lane: LaneId, spec: Spec) {
    // The warm processes ended before (a reload, a recycle) are gone before a new one
    // starts: no more warm rsyncs per lane alive at a time than its depth, not a full
    // set idle beside dying ones.
    let dying = std::mem::take(&mut runner.warm.lock().dying);
    for (mut child, at) in dying {
        reap(&mut child, at, true);
    }
    loop {
        {
            let state = runner.warm.lock();
            if !state.wants(lane, &spec) {
                return;
            }
        }
        let child = match runner.spawn(&spec.argv, Cwd::Tree(&spec.ctx.root), &spec.ctx, true) {
            Ok(child) => child,
            Err(Run { stderr, .. }) => {
                tracing::debug!("cannot start a warm rsync: {}", stderr.trim());
                return;
            }
        };
        let mut state = runner.warm.lock();
        // Paused, closed, reloaded or filled while it started: it goes at once.
        if !state.wants(lane, &spec) {
            end(&mut state, child);
            return;
        }
        state.idle.entry(lane).or_default().push(Idle {
            spec: spec.clone(),
            child,
            born: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_batches_go_warm() {
        let long = vec![b'x'; 100];
        // (number of paths, each path, warm)
        let rows: [(usize, &[u8], bool); 6] = [
            (1, b"a", true),
            (MAX_PATHS, b"d/f", true),
            (MAX_PATHS + 1, b"d/f", false),
            (MAX_LIST_BYTES / 103, &long, true),
            (MAX_LIST_BYTES / 103 + 1, &long, false),
            (0, b"", true),
        ];
        for (count, path, warm) in rows {
            let paths = vec![path; count];
            assert_eq!(fits(&paths), warm, "{count} x {} bytes", path.len());
        }
    }

    #[test]
    fn how_many_warm_rsyncs_a_lane_keeps() {
        // (over an ssh connection master, idle warm rsyncs)
        for (over_master, kept) in [(false, 1), (true, 2)] {
            assert_eq!(depth(over_master), kept, "{over_master}");
        }
    }

    #[test]
    fn when_a_warm_rsync_is_replaced() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (<warm idle>, shortest idle lifetime seen, replaced after)
        let rows = [
            (s(30), None, s(30)),
            (s(30), Some(s(5)), ms(3750)),
            (s(30), Some(s(60)), s(30)),
            (s(30), Some(s(40)), s(30)),
            (s(30), Some(ms(200)), s(1)),
            (s(1), None, s(1)),
        ];
        for (configured, lived, after) in rows {
            assert_eq!(
                recycle_after(configured, lived),
                after,
                "{configured:?} {lived:?}"
            );
        }
    }

    #[test]
    fn which_warm_ends_rerun_cold() {
        // (result, run again cold)
        let rows = [
            (RunResult::Exited(0), false),
            (RunResult::Exited(24), false),
            (RunResult::Exited(23), false),
            (RunResult::Exited(30), false),
            (RunResult::Exited(11), false),
            (RunResult::Exited(5), true),
            (RunResult::Exited(10), true),
            (RunResult::Exited(12), true),
            (RunResult::Exited(35), true),
            (RunResult::Exited(255), true),
            (RunResult::Signaled(9), false),
        ];
        for (result, cold) in rows {
            assert_eq!(rerun_cold(&result), cold, "{result:?}");
        }
    }

    #[test]
    fn a_connection_closed_by_the_remote() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0369 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:0369 08 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n   2: 0100007F:9C41 0100007F:0369 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1\n";
        // (the process's socket inodes, closed by the remote)
        let rows: [(&[u64], bool); 4] = [
            (&[222], true),
            (&[333], false),
            (&[111, 333], false),
            (&[444], false),
        ];
        for (inodes, closed) in rows {
            let set: HashSet<u64> = inodes.iter().copied().collect();
            assert_eq!(closed_by_peer(table, &set), closed, "{inodes:?}");
        }
        // (a /proc/PID/stat line, its state)
        let stats = [
            ("42 (ssh) S 41 42", Some('S')),
            ("43 (a) b) Z 41", Some('Z')),
            ("", None),
        ];
        for (stat, state) in stats {
            assert_eq!(stat_state(stat), state, "{stat}");
        }
    }
}
