//! An ssh connection master per ssh remote (OpenSSH `ControlMaster`), started and owned
//! by sersyncd: every rsync to that remote (warm or cold: sends, deletions, full syncs,
//! retries) opens its session over the master's connection instead of a connection of its
//! own, so it pays no TCP connect, key exchange or authentication (400-700 ms on our test
//! machines; a session over the master takes a few tens of ms).
//!
//! What holds (see ARCHITECTURE.md, `src/sync/`):
//! - One master per [`argv::SshTarget`] (the ssh command's words, the login, the host) and
//!   local user: it runs `ssh … -o ControlMaster=yes -o ControlPath=SOCK -N [-l USER]
//!   HOST` with the credentials and environment the rsyncs to it run with, so it
//!   authenticates as they would. rsync gets `-e "… -o ControlPath=SOCK -o
//!   ControlMaster=no"` ([`argv::rsh_over_master`]).
//! - The socket is ours: in a directory made for it (`sersyncd-ssh.XXXXXX`, 0711, under
//!   `$RUNTIME_DIRECTORY` or the temporary directory; a subdirectory 0700 per local user),
//!   named by a number, its path short enough for a unix socket with ssh's temporary
//!   suffix and made only of `[A-Za-z0-9/._-]` (rsync splits `-e` on spaces and quotes,
//!   ssh expands `%` and `~`). No file name ever goes into it.
//! - rsync never depends on the master: ssh with a missing socket connects on its own,
//!   with a stale one (a master that died) it says so and connects on its own, and a
//!   session the server refuses over the master (`MaxSessions`) is opened on a connection
//!   of its own too. A master that cannot start or dies is started again with backoff
//!   (1 s doubling to 5 min), logged once until it is up again.
//! - Masters start and are watched on one long-lived thread (their `PR_SET_PDEATHSIG` is
//!   tied to it, so a killed sersyncd takes them along). Pause and a reload that drops a
//!   target end masters by PID once no running rsync names their socket (a master's end
//!   would cut the sessions of the runs over it); shutdown ends and reaps them all, after
//!   the last runs, and removes the directory.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::argv::{self, SshTarget};
use super::identity::Identity;
use super::warm::{reap, signal};
use super::{JobContext, Runner};

/// How often the master thread looks at its masters.
const TICK: Duration = Duration::from_millis(200);
/// The longest wait before a master that keeps failing is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A master that was up at least this long and then ended is a new incident (logged, and
/// started again after a second); one that ends sooner counts as a failure to start.
const STABLE: Duration = Duration::from_secs(60);
/// ssh binds the socket under the path plus `.` and 16 random characters first; a
/// `sun_path` holds 108 bytes with its NUL, less on other systems: we stay under 100.
const MAX_SOCKET_PATH: usize = 100 - 17;

/// How long after its `failures`-th failure in a row a master is tried again: 1 s,
/// doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// Whether `path` may be a control socket (or its directory): only `[A-Za-z0-9/._-]`, so
/// rsync's split of `-e` keeps it one word and ssh expands nothing in it.
pub fn plain_path(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

/// Where the socket directory goes: the first of `$RUNTIME_DIRECTORY` (systemd's, the
/// first of a `:`-separated list) and the temporary directory that is absolute, plain
/// ([`plain_path`]) and short enough.
fn bases(runtime: Option<OsString>, temp: PathBuf) -> Vec<PathBuf> {
    let runtime = runtime.and_then(|dirs| {
        dirs.as_bytes()
            .split(|b| *b == b':')
            .next()
            .map(|first| PathBuf::from(std::ffi::OsStr::from_bytes(first)))
    });
    runtime
        .into_iter()
        .chain([temp, PathBuf::from("/tmp")])
        .filter(|dir| dir.is_absolute() && plain_path(dir) && dir.as_os_str().len() <= 40)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The local user the rsyncs run as (`None`: as the daemon).
    who: Option<(u32, u32)>,
    target: SshTarget,
}

struct Master {
    path: PathBuf,
    argv: Vec<OsString>,
    identity: Option<Identity>,
    label: String,
    child: Option<Running>,
    failures: u32,
    next_try: Instant,
    /// A failure was logged; the next ones are not until it is up again.
    complained: bool,
    /// A reload dropped its target: ended (and forgotten) once no rsync runs.
    retired: bool,
}

struct Running {
    child: Child,
    /// When its socket appeared.
    up: Option<Instant>,
    /// The tail of what it wrote to stderr.
    said: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// The socket directory, made at the first master (`Err`: none can be made, masters
    /// are off; logged once).
    dir: Option<Result<PathBuf, ()>>,
    masters: HashMap<Key, Master>,
    /// Socket paths by key, kept for the daemon's life: a key's rsyncs always name the
    /// same socket (a warm rsync's argv must match its batch's).
    paths: HashMap<Key, PathBuf>,
    paused: bool,
    closed: bool,
    /// Ended masters not yet reaped.
    dying: Vec<(Child, Instant, PathBuf)>,
}

/// The ssh connection masters of a [`Runner`].
#[derive(Default)]
pub(super) struct Masters {
    state: Mutex<State>,
    thread: OnceLock<Mutex<Sender<()>>>,
}

impl std::fmt::Debug for Masters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("master::Masters")
    }
}

impl Masters {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job starts: when its runs go over ssh to a target that gets a master, they are
    /// given its socket (`ctx.transport.control_path`), and the master is started if it
    /// is not running (and not waiting out a backoff). Call after the job's identity is
    /// resolved.
    pub(super) fn attach(&self, runner: &Runner, ctx: &mut JobContext) {
        ctx.transport.control_path = None;
        let Some(target) = SshTarget::of(&ctx.transport) else {
            return;
        };
        let key = Key {
            who: ctx.identity.as_ref().map(|who| (who.uid, who.gid)),
            target,
        };
        let wake = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            let Some(path) = state.path_for(&key, ctx.identity.as_ref()) else {
                return;
            };
            ctx.transport.control_path = Some(path.clone());
            let master = state.masters.entry(key.clone()).or_insert_with(|| Master {
                argv: key.target.master_argv(&path),
                path,
                identity: ctx.identity.clone(),
                label: key.target.label(),
                child: None,
                failures: 0,
                next_try: Instant::now(),
                complained: false,
                retired: false,
            });
            if master.retired {
                // A job that started before the reload that dropped this target: on a
                // connection of its own (it must not keep the master alive).
                ctx.transport.control_path = None;
                return;
            }
            master.child.is_none() && !state.paused
        };
        if wake {
            self.wake(runner);
        }
    }

    fn wake(&self, runner: &Runner) {
        let thread = self.thread.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let runner = runner.clone();
            let started = std::thread::Builder::new()
                .name("ssh-master".into())
                .spawn(move || tend(&runner, &rx));
            if let Err(err) = started {
                tracing::warn!(
                    "cannot start the thread of ssh connection masters: {err}; rsync connects \
                     on its own"
                );
            }
            Mutex::new(tx)
        });
        let _ = thread.lock().unwrap_or_else(|p| p.into_inner()).send(());
    }

    /// Pause: each master is ended once no running rsync goes over it, and none starts
    /// until resumed.
    pub(super) fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// A reload: masters whose target none of `transports` has any more (or that turn
    /// masters off) are ended once no running rsync goes over them; the others stay.
    pub(super) fn keep(&self, transports: &[&argv::Transport]) {
        let targets: Vec<SshTarget> = transports
            .iter()
            .filter_map(|transport| SshTarget::of(transport))
            .collect();
        for (key, master) in &mut self.lock().masters {
            master.retired = !targets.contains(&key.target);
        }
    }

    /// Shutdown (after the last runs): every master is ended (SIGTERM, SIGKILL after 2 s)
    /// and reaped, none starts again, and the socket directory is removed.
    pub(super) fn close(&self) {
        let (dying, dir) = {
            let mut state = self.lock();
            state.closed = true;
            let keys: Vec<Key> = state.masters.keys().cloned().collect();
            for key in keys {
                if let Some(master) = state.masters.remove(&key) {
                    if let Some(running) = master.child {
                        state
                            .dying
                            .push((running.child, Instant::now(), master.path));
                    }
                }
            }
            for (child, _, _) in &state.dying {
                terminate(child);
            }
            let dir = match state.dir.take() {
                Some(Ok(dir)) => Some(dir),
                _ => None,
            };
            (std::mem::take(&mut state.dying), dir)
        };
        for (mut child, at, path) in dying {
            reap(&mut child, at, true);
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = dir {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::debug!("cannot remove {}: {err}", dir.display());
            }
        }
    }
}

impl State {
    /// The socket path for `key` (made with the directory on first use); `None` when no
    /// directory can be made.
    fn path_for(&mut self, key: &Key, identity: Option<&Identity>) -> Option<PathBuf> {
        if let Some(path) = self.paths.get(key) {
            return Some(path.clone());
        }
        let dir = match self.dir.get_or_insert_with(make_dir) {
            Ok(dir) => dir.clone(),
            Err(()) => return None,
        };
        let dir = match identity {
            None => dir,
            Some(who) => match user_dir(&dir, who) {
                Ok(dir) => dir,
                Err(err) => {
                    tracing::warn!(
                        "cannot make the ssh socket directory for user {}: {err}; its rsyncs \
                         connect on their own",
                        who.name
                    );
                    return None;
                }
            },
        };
        let path = dir.join(self.paths.len().to_string());
        if path.as_os_str().len() > MAX_SOCKET_PATH || !plain_path(&path) {
            return None;
        }
        self.paths.insert(key.clone(), path.clone());
        Some(path)
    }
}

/// Makes the socket directory: `sersyncd-ssh.XXXXXX` (like `mkdtemp`: a new name, never
/// an existing entry), 0711 (users' subdirectories below it are theirs alone).
fn make_dir() -> Result<PathBuf, ()> {
    use std::os::unix::fs::PermissionsExt;
    let mut last = String::from("no directory to put it in");
    for base in bases(std::env::var_os("RUNTIME_DIRECTORY"), std::env::temp_dir()) {
        match nix::unistd::mkdtemp(&base.join("sersyncd-ssh.XXXXXX")) {
            Ok(dir) => {
                if let Err(err) =
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                {
                    last = format!("{}: {err}", dir.display());
                    let _ = std::fs::remove_dir(&dir);
                    continue;
                }
                return Ok(dir);
            }
            Err(err) => last = format!("{}: {err}", base.display()),
        }
    }
    tracing::warn!(
        "cannot make a directory for ssh connection masters ({last}): rsync connects on \
         its own for every run"
    );
    Err(())
}

/// `dir/u<UID>`, 0700, owned by the user: where that user's masters put their sockets.
fn user_dir(dir: &Path, who: &Identity) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let path = dir.join(format!("u{}", who.uid));
    match std::fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => {
            std::os::unix::fs::chown(&path, Some(who.uid), Some(who.gid))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    Ok(path)
}

fn terminate(child: &Child) {
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
}

/// Reads what `child` wrote to stderr so far (without blocking) into `said`, keeping the
/// last 4 KiB: a master with `-v` in its words must never block on a full pipe.
fn drain(child: &mut Child, said: &mut Vec<u8>) {
    let Some(pipe) = child.stderr.as_mut() else {
        return;
    };
    let mut chunk = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut chunk) {
        if n == 0 {
            break;
        }
        said.extend_from_slice(&chunk[..n]);
        if said.len() > 4096 {
            said.drain(..said.len() - 4096);
        }
    }
}

/// The last non-empty line of what a master said.
fn last_line(said: &[u8]) -> String {
    String::from_utf8_lossy(said)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

/// Whether the master with the socket `path` is up (the socket is there: ssh makes it once
/// connected, and a master that ended has it removed).
pub(super) fn is_up(path: &Path) -> bool {
    is_socket(path)
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

/// The master thread: starts the masters jobs asked for (and those that ended, after
/// their backoff), sees them come up, end, and ends them when paused or retired.
fn tend(runner: &Runner, wakes: &Receiver<()>) {
    let masters = &runner.masters;
    loop {
        match wakes.recv_timeout(TICK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut state = masters.lock();
        if state.closed {
            return;
        }
        let now = Instant::now();
        let paused = state.paused;
        // The command lines of the rsyncs running now (idle warm ones aside), read only
        // when a master may have to end: one that none of them names cuts no run.
        let ending = paused || state.masters.values().any(|master| master.retired);
        let running = if ending {
            runner.running_argv()
        } else {
            Vec::new()
        };
        let mut stopped = Vec::new();
        let mut forgotten = Vec::new();
        for (key, master) in &mut state.masters {
            look(master, now);
            if (paused || master.retired) && !names(&running, &master.path) {
                if let Some(running) = master.child.take() {
                    tracing::debug!(
                        remote = %master.label,
                        pid = running.child.id(),
                        "ending the ssh connection master ({})",
                        if paused { "paused" } else { "no longer configured" }
                    );
                    terminate(&running.child);
                    stopped.push((running.child, now, master.path.clone()));
                }
                if master.retired {
                    forgotten.push(key.clone());
                }
                continue;
            }
            if master.child.is_none() && !paused && !master.retired && now >= master.next_try {
                start(master, now);
            }
        }
        for key in forgotten {
            state.masters.remove(&key);
        }
        state.dying.extend(stopped);
        state.dying.retain_mut(|(child, since, path)| {
            let gone = reap(child, *since, false);
            if gone {
                let _ = std::fs::remove_file(&*path);
            }
            !gone
        });
    }
}

/// Whether one of the command lines `running` names the socket `path` (its run goes over
/// that master): `ControlPath=PATH ` in its `-e` ([`argv::rsh_over_master`]).
fn names(running: &[Vec<u8>], path: &Path) -> bool {
    let mut needle = b"ControlPath=".to_vec();
    needle.extend_from_slice(path.as_os_str().as_bytes());
    needle.push(b' ');
    running
        .iter()
        .any(|argv| argv.windows(needle.len()).any(|window| window == needle))
}

/// Sees whether `master`'s process came up (its socket appeared) or ended.
fn look(master: &mut Master, now: Instant) {
    let Some(running) = master.child.as_mut() else {
        return;
    };
    drain(&mut running.child, &mut running.said);
    let status = match running.child.try_wait() {
        Ok(None) => {
            if running.up.is_none() && is_socket(&master.path) {
                running.up = Some(now);
                if master.complained {
                    tracing::info!(remote = %master.label, "the ssh connection master is up again");
                } else {
                    tracing::debug!(
                        remote = %master.label,
                        pid = running.child.id(),
                        "the ssh connection master is up"
                    );
                }
                master.failures = 0;
                master.complained = false;
            }
            return;
        }
        Ok(Some(status)) => status.to_string(),
        Err(err) => err.to_string(),
    };
    let Some(running) = master.child.take() else {
        return;
    };
    // ssh removes its socket when it ends cleanly; after a kill -9 it is left behind, and
    // ssh clients would say "Connection refused" before connecting on their own.
    let _ = std::fs::remove_file(&master.path);
    let said = last_line(&running.said);
    if running
        .up
        .is_some_and(|up| now.duration_since(up) >= STABLE)
    {
        // A new incident: logged, and tried again after a second.
        master.complained = false;
        tracing::warn!(
            remote = %master.label,
            "the ssh connection master ended ({status}: {said}): rsync connects on its own \
             until it is back"
        );
        master.failures = 1;
        master.next_try = now + backoff(1);
        return;
    }
    master.failures += 1;
    let wait = backoff(master.failures);
    master.next_try = now + wait;
    if master.complained {
        tracing::debug!(
            remote = %master.label,
            "the ssh connection master failed again ({status}: {said}); next try in {} s",
            wait.as_secs()
        );
    } else {
        master.complained = true;
        tracing::warn!(
            remote = %master.label,
            "cannot keep an ssh connection master open ({status}: {said}): rsync connects on \
             its own meanwhile; tried again in {} s, doubling up to {} s (not logged again \
             until it is up)",
            wait.as_secs(),
            MAX_BACKOFF.as_secs()
        );
    }
}

/// Starts `master`'s ssh (on the master thread, which outlives it: the parent-death
/// signal), with the credentials and environment its rsyncs get.
fn start(master: &mut Master, now: Instant) {
    let Some((program, args)) = master.argv.split_first() else {
        return;
    };
    // A stale socket (a master killed before) would make this one refuse to start.
    let _ = std::fs::remove_file(&master.path);
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(identity) = &master.identity {
        command.env_clear().envs(identity.environment());
    }
    let credentials = master
        .identity
        .as_ref()
        .map(|who| (who.groups.clone(), who.gid, who.uid));
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid,
    // setuid, prctl, getppid, _exit) on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if let Some(credentials) = &credentials {
                super::identity::take_in_child(credentials)?;
            }
            // After the credentials: changing them clears the parent-death signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => {
            if let Some(pipe) = child.stderr.as_ref() {
                use std::os::fd::AsRawFd;
                let fd = pipe.as_raw_fd();
                // SAFETY: fcntl on a descriptor we own, changing only its status flags.
                unsafe {
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
            }
            tracing::debug!(
                remote = %master.label,
                pid = child.id(),
                "starting the ssh connection master: {}",
                argv::display(program, args)
            );
            master.child = Some(Running {
                child,
                up: None,
                said: Vec::new(),
            });
        }
        Err(err) => {
            master.failures += 1;
            let wait = backoff(master.failures);
            master.next_try = now + wait;
            if !master.complained {
                master.complained = true;
                tracing::warn!(
                    remote = %master.label,
                    "cannot start an ssh connection master ({}: {err}): rsync connects on its \
                     own; tried again in {} s (not logged again until it is up)",
                    program.to_string_lossy(),
                    wait.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_master_is_tried_again_later_and_later() {
        let s = Duration::from_secs;
        // (failures in a row, next try after)
        let rows = [
            (0, s(1)),
            (1, s(1)),
            (2, s(2)),
            (4, s(8)),
            (9, s(256)),
            (10, s(300)),
            (u32::MAX, s(300)),
        ];
        for (failures, after) in rows {
            assert_eq!(backoff(failures), after, "{failures}");
        }
    }

    #[test]
    fn where_the_sockets_go() {
        let temp = PathBuf::from("/tmp");
        // ($RUNTIME_DIRECTORY, temporary directory, the bases in order)
        let rows: [(Option<&str>, &str, &[&str]); 6] = [
            (None, "/tmp", &["/tmp", "/tmp"]),
            (
                Some("/run/sersync"),
                "/tmp",
                &["/run/sersync", "/tmp", "/tmp"],
            ),
            (
                Some("/run/sersync:/run/other"),
                "/var/tmp",
                &["/run/sersync", "/var/tmp", "/tmp"],
            ),
            (Some("/run/a dir"), "/tmp", &["/tmp", "/tmp"]),
            (Some("relative"), "/tmp/%h", &["/tmp"]),
            (
                Some("/run/a-very-long-directory-name-that-is-too-long-for-it"),
                "/tmp",
                &["/tmp", "/tmp"],
            ),
        ];
        for (runtime, temp_dir, expected) in rows {
            let got = bases(runtime.map(OsString::from), PathBuf::from(temp_dir));
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(got, expected, "{runtime:?} {temp_dir}");
        }
        assert!(plain_path(&temp.join("sersyncd-ssh.AbC_12-x/u1000/3")));
        for bad in [
            "/tmp/a b",
            "/tmp/'x",
            "/tmp/\"x",
            "/tmp/%h",
            "/tmp/~x",
            "/tmp/a\\b",
        ] {
            assert!(!plain_path(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn which_runs_go_over_a_master() {
        let running: Vec<Vec<u8>> = vec![
            b"rsync\0-e\0ssh -p 2 -o ControlPath=/tmp/s.x/10 -o ControlMaster=no\0./a\0".to_vec(),
            b"rsync\0-e\0ssh\0./b\0".to_vec(),
        ];
        // (socket, named by a running rsync)
        let rows = [
            ("/tmp/s.x/10", true),
            ("/tmp/s.x/1", false),
            ("/tmp/s.x/0", false),
        ];
        for (socket, named) in rows {
            assert_eq!(names(&running, Path::new(socket)), named, "{socket}");
        }
        assert!(!names(&[], Path::new("/tmp/s.x/10")));
    }

    #[test]
    fn what_a_master_said() {
        // (stderr, its last line)
        let rows: [(&[u8], &str); 3] = [
            (b"", "no message"),
            (
                b"Warning: x\nroot@h: Permission denied (publickey).\n\n",
                "root@h: Permission denied (publickey).",
            ),
            (
                b"ssh: connect to host h port 22: Connection refused\r\n",
                "ssh: connect to host h port 22: Connection refused",
            ),
        ];
        for (said, line) in rows {
            assert_eq!(last_line(said), line);
        }
    }
}
