//! sd_notify as systemd sees it: each test binds its own NOTIFY_SOCKET (a unix datagram
//! socket at a path, as systemd uses), runs `sersyncd` against a real rsync daemon and
//! checks the datagrams, in order and with their arrival times.
//!
//! - READY=1 only once every directory is watched (after the "watching N directories"
//!   log line; a file created in a deep, pre-existing directory right after READY=1 is
//!   replicated).
//! - STATUS= lines with the watch count and the queue depth, at most about one a second.
//! - WATCHDOG=1 with WATCHDOG_USEC=500000, never further apart than that.
//! - SIGHUP: RELOADING=1 then READY=1, with a valid config (the new one is used) and an
//!   invalid one (the old one keeps working).
//! - SIGTERM: STOPPING=1, exit 0, undelivered changes persisted in the state directory.
//!
//! The harness's `Sersyncd` hides the process and the datagram order, so these tests run
//! the daemon through [`Notified`] below.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::harness::{
    CONVERGE, Env, POLL, SersyncdBuilder, sersyncd_binary, tail, temp_dir, write,
};

/// How long the daemon may take to send READY=1 (also after SIGHUP).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One datagram received on the NOTIFY_SOCKET.
#[derive(Debug, Clone)]
struct Datagram {
    at: Instant,
    text: String,
}

impl Datagram {
    /// True when one line of the datagram is exactly `assignment` (e.g. `READY=1`).
    fn has(&self, assignment: &str) -> bool {
        self.text.lines().any(|line| line == assignment)
    }

    /// The value of `NAME=` in this datagram, if any.
    fn value(&self, name: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    }
}

/// `sersyncd` with a NOTIFY_SOCKET of its own, not waited for: the test decides what to
/// wait for. SIGKILL (by its PID) on drop if still running; the log is printed when the
/// test fails.
struct Notified {
    dir: TempDir,
    config: PathBuf,
    child: Option<Child>,
    status: Option<ExitStatus>,
    datagrams: Arc<Mutex<Vec<Datagram>>>,
    stop_reader: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Notified {
    /// Writes `builder`'s config and starts the daemon with `env` added.
    fn start(builder: &SersyncdBuilder, env: &[(&str, &str)]) -> Notified {
        let dir = temp_dir("notify");
        let config = dir.path().join("confxml.xml");
        std::fs::write(&config, builder.xml()).expect("write confxml.xml");
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set socket timeout");
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let stop_reader = Arc::new(AtomicBool::new(false));
        let reader = {
            let datagrams = Arc::clone(&datagrams);
            let stop = Arc::clone(&stop_reader);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let datagram = Datagram {
                            at: Instant::now(),
                            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        };
                        datagrams.lock().unwrap().push(datagram);
                    }
                }
            })
        };
        let log = std::fs::File::create(dir.path().join("sersyncd.log")).expect("create log");
        let mut command = Command::new(sersyncd_binary());
        command
            .arg("-o")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--log", "stderr"])
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("STATE_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn sersyncd");
        Notified {
            dir,
            config,
            child: Some(child),
            status: None,
            datagrams,
            stop_reader,
            reader: Some(reader),
        }
    }

    fn datagrams(&self) -> Vec<Datagram> {
        self.datagrams.lock().unwrap().clone()
    }

    /// How many datagrams arrived so far (a mark for [`Notified::wait_for`]).
    fn mark(&self) -> usize {
        self.datagrams.lock().unwrap().len()
    }

    /// Waits for the first datagram from index `from` on with the line `assignment`;
    /// returns its index. Panics on timeout or if the daemon exits.
    fn wait_for(&mut self, assignment: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .datagrams()
                .iter()
                .skip(from)
                .position(|d| d.has(assignment))
            {
                return from + i;
            }
            if let Some(status) = self.try_exit() {
                panic!("sersyncd exited with {status} before {assignment}");
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {assignment} within {timeout:?}; datagrams so far: {:?}",
                    self.texts()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn texts(&self) -> Vec<String> {
        self.datagrams().into_iter().map(|d| d.text).collect()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.status = Some(status);
        Some(status)
    }

    fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("the daemon is running");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal sersyncd");
    }

    /// Waits (bounded) for the daemon to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sersyncd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read(self.dir.path().join("sersyncd.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = None;
            while Instant::now() < deadline {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if status.is_none() {
                let _ = child.kill();
                status = child.wait().ok();
            }
            self.status = status;
        }
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- sersyncd log (last 200 lines; {:?}) ----\n{}\n---- datagrams ----\n{:?}\n---- end ----",
                self.status,
                tail(&self.log(), 200),
                self.texts()
            );
        }
    }
}

/// Waits (bounded) until `path` is a file with `contents`.
fn wait_file(path: &Path, contents: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|c| c == contents) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not arrive with the expected contents within {timeout:?}",
            path.display()
        );
        std::thread::sleep(POLL);
    }
}

/// The `N` of the last "watching N directories" log line.
fn watching_count(log: &str) -> Option<usize> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("watching ")?;
        let (count, rest) = rest.split_once(' ')?;
        rest.starts_with("directories")
            .then(|| count.parse().ok())
            .flatten()
    })
}

#[test]
fn ready_comes_once_every_directory_is_watched_and_status_lines_follow() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // A pre-existing deep tree: READY=1 must not come before its directories are watched.
    for dir in ["a/b/c/d", "e/f", "g"] {
        std::fs::create_dir_all(env.src().join(dir)).unwrap();
    }
    let mut daemon = Notified::start(&env.builder(), &[]);
    let ready = daemon.wait_for("READY=1", 0, READY_TIMEOUT);
    // Right away: a file in the deepest directory. Without -r nothing else is sent, so it
    // arrives only if the watch on a/b/c/d existed when READY=1 was sent.
    write(env.src(), "a/b/c/d/right-after-ready.txt", "ready\n");
    let log_at_ready = daemon.log();
    let watching = watching_count(&log_at_ready);
    assert!(
        watching.is_some_and(|n| n >= 8),
        "when READY=1 arrived the log had no \"watching N directories\" line with N >= 8 \
         (the root and 7 directories); log:\n{log_at_ready}"
    );
    wait_file(
        &env.replica().join("a/b/c/d/right-after-ready.txt"),
        "ready\n",
        CONVERGE,
    );
    assert_eq!(
        daemon
            .datagrams()
            .iter()
            .filter(|d| d.has("READY=1"))
            .count(),
        1,
        "READY=1 more than once without a reload: {:?}",
        daemon.texts()
    );

    // STATUS= lines: the summary names the watches and the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let found = daemon.datagrams().iter().skip(ready).find_map(|d| {
            d.value("STATUS")
                .filter(|s| s.contains("watches") && s.contains("queued"))
                .map(str::to_owned)
        });
        if let Some(status) = found {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no STATUS= line with \"watches\" and \"queued\" after READY=1: {:?}",
            daemon.texts()
        );
        std::thread::sleep(POLL);
    };
    println!("STATUS={status}");

    // At most about one STATUS= a second, however busy: 3 s of changes.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        write(env.src(), &format!("g/busy-{n}.txt"), &format!("{n}\n"));
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses = daemon
        .datagrams()
        .iter()
        .filter(|d| d.at >= start && d.value("STATUS").is_some())
        .count();
    println!("{statuses} STATUS= datagrams during 3 s and {n} changes");
    assert!(
        statuses <= 5,
        "{statuses} STATUS= datagrams in 3 s: more than about one a second"
    );
    // No watchdog pings unless WATCHDOG_USEC asks for them.
    assert!(
        !daemon.datagrams().iter().any(|d| d.has("WATCHDOG=1")),
        "WATCHDOG=1 without WATCHDOG_USEC"
    );
}

#[test]
fn watchdog_pings_come_more_often_than_watchdog_usec() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // WATCHDOG_PID is left unset: the child's PID is unknown before the spawn, and
    // sd-notify (like sd_watchdog_enabled(3)) only checks it when it is set.
    let mut daemon = Notified::start(&env.builder(), &[("WATCHDOG_USEC", "500000")]);
    daemon.wait_for("READY=1", 0, READY_TIMEOUT);
    // An idle daemon: the loop has nothing to do but must still ping.
    std::thread::sleep(Duration::from_secs(3));
    let pings: Vec<Instant> = daemon
        .datagrams()
        .iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .map(|d| d.at)
        .collect();
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    println!("{} WATCHDOG=1 pings, longest gap {longest:?}", pings.len());
    assert!(
        pings.len() >= 6,
        "{} WATCHDOG=1 pings with WATCHDOG_USEC=500000 (expected at least 6 in ~3 s)",
        pings.len()
    );
    // systemd kills the service when no ping arrives within WATCHDOG_USEC.
    assert!(
        longest < Duration::from_millis(500),
        "WATCHDOG=1 pings {longest:?} apart: systemd would kill the service (WatchdogSec=500ms); \
         gaps: {gaps:?}"
    );
}

/// Sends SIGHUP and waits for RELOADING=1 and then READY=1 after it.
fn reload(daemon: &mut Notified) {
    let mark = daemon.mark();
    daemon.signal(Signal::SIGHUP);
    let reloading = daemon.wait_for("RELOADING=1", mark, READY_TIMEOUT);
    daemon.wait_for("READY=1", reloading + 1, READY_TIMEOUT);
}

#[test]
fn sighup_with_a_valid_config_reloads_and_uses_it() {
    let Some(env) = Env::new(&["web", "more"]) else {
        return;
    };
    let second_root = temp_dir("notify-second-root");
    let web = env.rsyncd.remote("web");
    let more = env.rsyncd.remote("more");
    let mut daemon = Notified::start(
        &SersyncdBuilder::new()
            .root(env.src(), std::slice::from_ref(&web))
            .rsyncd(&env.rsyncd),
        &[],
    );
    daemon.wait_for("READY=1", 0, READY_TIMEOUT);
    write(env.src(), "before.txt", "before\n");
    wait_file(&env.replica().join("before.txt"), "before\n", CONVERGE);

    // The new config adds a second root, replicated to the second module.
    let new = SersyncdBuilder::new()
        .root(env.src(), std::slice::from_ref(&web))
        .root(second_root.path(), &[more])
        .rsyncd(&env.rsyncd);
    std::fs::write(&daemon.config, new.xml()).unwrap();
    reload(&mut daemon);
    write(second_root.path(), "new-root.txt", "new root\n");
    write(env.src(), "after.txt", "after\n");
    wait_file(
        &env.rsyncd.replica("more").join("new-root.txt"),
        "new root\n",
        CONVERGE,
    );
    wait_file(&env.replica().join("after.txt"), "after\n", CONVERGE);
    assert!(daemon.try_exit().is_none(), "sersyncd exited after SIGHUP");

    // Then the first root goes: the second one is root 0 now, and the old watchers must
    // not be told to rebuild roots by their old numbers (one panicked on a root index that
    // no longer exists).
    let fewer = SersyncdBuilder::new()
        .root(second_root.path(), &[env.rsyncd.remote("more")])
        .rsyncd(&env.rsyncd);
    std::fs::write(&daemon.config, fewer.xml()).unwrap();
    reload(&mut daemon);
    write(second_root.path(), "after-shrink.txt", "one root\n");
    wait_file(
        &env.rsyncd.replica("more").join("after-shrink.txt"),
        "one root\n",
        CONVERGE,
    );
    assert!(daemon.try_exit().is_none(), "sersyncd exited after SIGHUP");
    let log = daemon.log();
    assert!(
        !log.contains("panicked"),
        "a thread panicked during the reload:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn sighup_with_an_invalid_config_keeps_the_old_one_running() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = Notified::start(&env.builder(), &[]);
    daemon.wait_for("READY=1", 0, READY_TIMEOUT);
    std::fs::write(
        &daemon.config,
        "<?xml version=\"1.0\"?>\n<head version=\"2.5\">\n<sersync>\n",
    )
    .unwrap();
    reload(&mut daemon);
    let log = daemon.log();
    assert!(
        log.contains("invalid") && log.contains("keeping"),
        "the log does not say the new config was rejected and the old one kept:\n{}",
        tail(&log, 30)
    );
    write(env.src(), "still-syncing.txt", "old config\n");
    wait_file(
        &env.replica().join("still-syncing.txt"),
        "old config\n",
        CONVERGE,
    );
    assert!(daemon.try_exit().is_none(), "sersyncd exited after SIGHUP");
}

#[test]
fn sigterm_sends_stopping_exits_zero_and_persists_pending_changes() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = Notified::start(&env.builder(), &[]);
    daemon.wait_for("READY=1", 0, READY_TIMEOUT);
    // The remote goes away, then a change: it cannot be delivered.
    env.rsyncd.stop();
    write(env.src(), "undelivered.txt", "pending\n");
    // Until the daemon has tried (and failed) or at least queued it.
    let deadline = Instant::now() + CONVERGE;
    while !daemon.log().contains("undelivered.txt") && !daemon.log().contains("failed") {
        assert!(
            Instant::now() < deadline,
            "the change was never picked up:\n{}",
            tail(&daemon.log(), 30)
        );
        std::thread::sleep(POLL);
    }
    let mark = daemon.mark();
    let sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    daemon.wait_for("STOPPING=1", mark, STOP_TIMEOUT);
    let status = daemon.wait_exit(STOP_TIMEOUT);
    println!("exited {:?} after SIGTERM: {status}", sent.elapsed());
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let pending = daemon.state_dir().join("pending");
    let saved = std::fs::read(&pending)
        .unwrap_or_else(|e| panic!("{} after SIGTERM: {e}", pending.display()));
    assert!(
        saved
            .windows(b"undelivered.txt".len())
            .any(|w| w == b"undelivered.txt"),
        "{} does not hold the undelivered change:\n{}",
        pending.display(),
        String::from_utf8_lossy(&saved)
    );
}
