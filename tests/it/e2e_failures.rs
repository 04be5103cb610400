//! Failures and durability: a remote that goes away, bad credentials, kill -9, a clean
//! restart with a remote down, an inotify queue overflow, the failure script, and the exit
//! policy against rsync(1).
//!
//! Timing facts these tests rely on (src/failure/backoff.rs, src/daemon/mod.rs):
//! - a failing remote is retried after 1 s, 2 s, 4 s … (cap 60 s) from its first failure;
//!   a fatal verdict (e.g. `auth failed`) waits a flat 60 s;
//! - a batch enters the failure journal (`STATE_DIR/failures`) and the failure script at
//!   its second failed attempt (at once when fatal); both are saved at most once a second;
//! - the journal replay runs every `<failLog timeToExecute>` minutes (at least 1).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};

use crate::harness::{
    CONVERGE, Env, POLL, find_named, tail, temp_dir, wait_converged, wait_converged_ignoring, write,
};

/// Held by every test that changes a sysctl, so that two of them never interleave.
pub static SYSCTL: Mutex<()> = Mutex::new(());

/// The first line of the failure journal; a journal with no entries is exactly this line.
const JOURNAL_MAGIC: &[u8] = b"sersync-failures 1\n";

/// Polls `condition` every 50 ms for at most `timeout`; panics with `what` (and `context()`)
/// when it never holds. Returns how long it took.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("{what}: not true within {timeout:?}\n{}", context());
        }
        std::thread::sleep(POLL);
    }
}

/// The paths in the failure journal of `state_dir`; `None` when there is no journal file.
/// Panics on a file that is not a journal.
fn journal_paths(state_dir: &Path) -> Option<BTreeSet<Vec<u8>>> {
    let bytes = std::fs::read(state_dir.join("failures")).ok()?;
    let body = bytes.strip_prefix(JOURNAL_MAGIC).unwrap_or_else(|| {
        panic!(
            "the failure journal lacks its header: {:?}",
            bytes.escape_ascii().to_string()
        )
    });
    let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
    let fields = &fields[..fields.len().saturating_sub(1)];
    assert_eq!(
        fields.len() % 8,
        0,
        "the failure journal has a truncated record"
    );
    // root, remote ip, remote name, path, exit code, since, last, message
    Some(fields.chunks(8).map(|record| record[3].to_vec()).collect())
}

fn journal_len(state_dir: &Path) -> usize {
    journal_paths(state_dir).map_or(0, |paths| paths.len())
}

/// Lines of the failure script that are commands (neither blank nor comments).
fn script_commands(script: &[u8]) -> Vec<String> {
    script
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// The daemon's log from byte `from` on (what a restarted process wrote).
fn log_since(daemon: &crate::harness::Sersyncd, from: usize) -> String {
    let log = daemon.log();
    log.get(from..).unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. Remote down
// ---------------------------------------------------------------------------------------

#[test]
fn remote_down_500_changes_converge_without_help_and_the_journal_empties() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b);
    let src = env.src().to_owned();
    for i in 0..150 {
        write(&src, &format!("keep/f{i:03}"), &format!("keep {i}\n"));
    }
    for i in 0..100 {
        write(&src, &format!("del/f{i:03}"), &format!("del {i}\n"));
    }
    for i in 0..49 {
        write(&src, &format!("mv/f{i:03}"), &format!("mv {i}\n"));
    }
    for i in 0..20 {
        write(&src, &format!("olddir/g{i:03}"), &format!("g {i}\n"));
    }
    env.converged();

    env.rsyncd.stop();
    let outage = Instant::now();
    // Phase A (500 changes in all, with phase B): 200 creates, 150 modifies (20 of them
    // inside the directory renamed in phase B), 100 deletes.
    for i in 0..200 {
        write(
            &src,
            &format!("new/s{}/n{i:03}", i % 10),
            &format!("new {i}\n"),
        );
    }
    for i in 0..130 {
        write(
            &src,
            &format!("keep/f{i:03}"),
            &format!("modified while the remote was down {i}\n"),
        );
    }
    for i in 0..20 {
        write(
            &src,
            &format!("olddir/g{i:03}"),
            &format!("modified before the rename {i}\n"),
        );
    }
    for i in 0..100 {
        std::fs::remove_file(src.join(format!("del/f{i:03}"))).unwrap();
    }
    // The second failed attempt (1 s after the first) puts the batch into the journal and
    // the failure script; wait for that, so the journal has something to empty, including
    // the files inside the directory that is renamed next.
    let state = daemon.state_dir();
    wait_until(
        Duration::from_secs(10),
        "the failure journal records the changes made while the remote is down",
        || {
            // The journal is written first, then the script.
            journal_paths(&state)
                .is_some_and(|paths| paths.contains(&b"olddir/g000"[..]) && paths.len() >= 300)
                && std::fs::read(state.join("rsync_fail_log.sh"))
                    .is_ok_and(|s| script_commands(&s).iter().any(|l| l.contains("rsync")))
        },
        || tail(&daemon.log(), 40),
    );
    // Phase B, while the remote is still down and backing off: 49 file renames (some
    // into another directory) and one directory rename.
    for i in 0..49 {
        let to = if i % 2 == 0 {
            format!("mv/r{i:03}")
        } else {
            format!("new/s0/moved{i:03}")
        };
        std::fs::rename(src.join(format!("mv/f{i:03}")), src.join(to)).unwrap();
    }
    std::fs::rename(src.join("olddir"), src.join("newdir")).unwrap();

    // Keep the outage short (~3 s): retries come 1 s, 2 s, 4 s, 8 s … after the first
    // failure, so the next attempt after the restart is at most ~8 s away (the cap, 60 s,
    // would only be reached after ~2 minutes of outage).
    let down_for = Duration::from_secs(3);
    if let Some(rest) = down_for.checked_sub(outage.elapsed()) {
        std::thread::sleep(rest);
    }
    env.rsyncd.start();
    // No new change, no restart, no operator: the backoff brings everything over.
    let took = wait_converged(&src, env.replica(), Duration::from_secs(30));
    eprintln!("remote down: converged {took:?} after the remote came back");

    wait_until(
        Duration::from_secs(10),
        "the failure journal empties once everything is delivered",
        || journal_len(&state) == 0,
        || {
            let left: Vec<String> = journal_paths(&state)
                .unwrap_or_default()
                .iter()
                .take(10)
                .map(|p| show(p))
                .collect();
            format!(
                "{} entr(y/ies) left, first ones: {left:?}\n{}",
                journal_len(&state),
                tail(&daemon.log(), 30)
            )
        },
    );
    if let Ok(bytes) = std::fs::read(state.join("failures")) {
        assert_eq!(bytes, JOURNAL_MAGIC, "an empty journal is just its header");
    }
    wait_until(
        Duration::from_secs(5),
        "the failure script has no rsync command left",
        || {
            std::fs::read(state.join("rsync_fail_log.sh"))
                .map(|s| script_commands(&s).is_empty())
                .unwrap_or(true)
        },
        || {
            String::from_utf8_lossy(
                &std::fs::read(state.join("rsync_fail_log.sh")).unwrap_or_default(),
            )
            .into_owned()
        },
    );
    assert!(
        daemon.log().contains("remote is reachable again"),
        "no recovery line in the log"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Authentication failure
// ---------------------------------------------------------------------------------------

/// A fatal verdict waits a flat 60 s before the next attempt, and the in-process replay
/// of failed changes runs every `<failLog timeToExecute>` minutes (at least one): this
/// test sets `timeToExecute="1"`, so the replay one minute after the start delivers the
/// refused changes, and waits up to 75 s for that. Nothing else is done to the daemon:
/// restarting it or signalling it would hide exactly what is tested.
#[test]
fn auth_failure_names_the_remote_and_module_and_delivers_after_the_fix() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let started = Instant::now();
    // No warm rsync: one authenticated before the password file changes would still
    // deliver the next batch (it is replaced within `<warm idle>`), and this test is about
    // the failure.
    let daemon = env.start(|b| {
        b.fail_log("rsync_fail_log.sh", 1)
            .raw_rsync_xml("<warm start=\"false\"/>")
    });
    write(env.src(), "before.txt", "sent with the right password\n");
    env.converged();
    // The replay (at start + 1 min) must come before the fatal retry (at failure + 60 s)
    // for the log line asserted below to be the one that delivers.
    if let Some(rest) = Duration::from_secs(2).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }

    env.rsyncd.set_client_password("not-the-password");
    let mode = std::fs::metadata(env.rsyncd.password_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the password file keeps mode 0600");
    write(env.src(), "after.txt", "waits for the password fix\n");
    write(env.src(), "sub/deeper.txt", "also\n");

    let label = format!("127.0.0.1::{}", env.rsyncd.modules()[0]);
    let error_line = || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("ERROR") && l.contains(&label) && l.contains("auth failed"))
            .map(str::to_owned)
    };
    wait_until(
        Duration::from_secs(10),
        "an error line naming the remote and rsync's `auth failed`",
        || error_line().is_some(),
        || tail(&daemon.log(), 30),
    );
    let line = error_line().unwrap();
    assert!(
        line.contains("@ERROR: auth failed on module web"),
        "the error carries rsync's own line, with the module: {line}"
    );
    // Fatal: recorded at once (no second attempt first) in the journal and the script
    // (written in that order).
    let state = daemon.state_dir();
    let script_names_the_failure = || {
        std::fs::read(state.join("rsync_fail_log.sh")).is_ok_and(|script| {
            String::from_utf8_lossy(&script)
                .lines()
                .any(|l| l.starts_with("#errno 5 ") && l.contains(&label))
        })
    };
    wait_until(
        Duration::from_secs(5),
        "the journal records the refused change and the script has an `#errno 5` entry",
        || {
            journal_paths(&state).is_some_and(|p| p.contains(&b"after.txt"[..]))
                && script_names_the_failure()
        },
        || {
            format!(
                "{}\n{}",
                String::from_utf8_lossy(
                    &std::fs::read(state.join("rsync_fail_log.sh")).unwrap_or_default()
                ),
                tail(&daemon.log(), 20)
            )
        },
    );
    assert!(!env.replica().join("after.txt").exists());

    env.rsyncd.restore_client_password();
    let took = wait_converged(env.src(), env.replica(), Duration::from_secs(75));
    eprintln!("auth failure: delivered {took:?} after the password file was fixed");
    assert!(
        daemon.log().contains("replaying failed changes now"),
        "delivered without the timeToExecute replay:\n{}",
        tail(&daemon.log(), 20)
    );
    wait_until(
        Duration::from_secs(5),
        "the journal empties after delivery",
        || journal_len(&state) == 0,
        || tail(&daemon.log(), 20),
    );
}

// ---------------------------------------------------------------------------------------
// 3. kill -9 in the middle of a burst
// ---------------------------------------------------------------------------------------

#[test]
fn kill9_in_the_middle_of_a_5000_file_burst_then_a_restart_converges() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b);
    const FILES: usize = 5000;
    const DIRS: usize = 50;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let src = env.src().to_owned();
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            for i in 0..FILES {
                let dir = src.join(format!("d{:02}", i % DIRS));
                if i < DIRS {
                    std::fs::create_dir(&dir).unwrap();
                }
                std::fs::write(dir.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_until(
        Duration::from_secs(30),
        "the writer reaches half of the burst",
        || written.load(Ordering::Relaxed) >= FILES / 2,
        String::new,
    );
    let status = daemon.kill9();
    let at = written.load(Ordering::Relaxed);
    assert_eq!(status.code(), None, "killed by a signal: {status:?}");
    writer.join().expect("the writer thread");
    eprintln!("kill -9: killed after {at} of {FILES} files");
    assert!(
        daemon.state_dir().join("running").exists(),
        "the running marker stays after kill -9"
    );

    let before = daemon.log().len();
    daemon.restart();
    let took = wait_converged(env.src(), env.replica(), Duration::from_secs(60));
    eprintln!("kill -9: converged {took:?} after the restart");
    let log = log_since(&daemon, before);
    assert!(
        log.contains("did not stop cleanly"),
        "the restart does not report the unclean stop:\n{}",
        tail(&log, 30)
    );
    assert!(log.contains("full sync started"), "no recovery full sync");
    let files = walk_count(env.replica());
    assert_eq!(files, FILES + DIRS, "files and directories on the replica");
}

fn walk_count(root: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        count += 1;
        if entry.file_type().unwrap().is_dir() {
            count += walk_count(&entry.path());
        }
    }
    count
}

// ---------------------------------------------------------------------------------------
// 4. Clean restart with a remote down
// ---------------------------------------------------------------------------------------

#[test]
fn clean_restart_with_a_remote_down_keeps_and_delivers_the_pending_changes() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b);
    let src = env.src().to_owned();
    for i in 0..10 {
        write(&src, &format!("base/f{i}"), &format!("base {i}\n"));
    }
    write(&src, "dir/inside.txt", "inside\n");
    env.converged();

    env.rsyncd.stop();
    for i in 0..20 {
        write(&src, &format!("pending/p{i:02}"), &format!("pending {i}\n"));
    }
    for i in 0..5 {
        write(&src, &format!("base/f{i}"), &format!("changed {i}\n"));
    }
    for i in 5..10 {
        std::fs::remove_file(src.join(format!("base/f{i}"))).unwrap();
    }
    std::fs::rename(src.join("dir"), src.join("renamed-dir")).unwrap();
    write(&src, "last.txt", "the last change before the stop\n");
    // The daemon must have read every change before it is stopped (a change that is still
    // in the kernel's queue at a clean stop is not the subject here).
    wait_until(
        Duration::from_secs(10),
        "the daemon saw the last change",
        || daemon.log().contains("last.txt"),
        || tail(&daemon.log(), 20),
    );

    let status = daemon.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean stop: {status:?}"
    );
    let state = daemon.state_dir();
    let pending = std::fs::read(state.join("pending")).unwrap_or_else(|e| {
        panic!(
            "no pending file after a clean stop with a remote down ({e}):\n{}",
            tail(&daemon.log(), 30)
        )
    });
    assert!(pending.starts_with(b"sersync-pending 1\n"));
    for expected in [&b"pending/p00"[..], b"last.txt", b"renamed-dir", b"base/f9"] {
        assert!(
            pending.split(|&b| b == 0).any(|field| field == expected),
            "{} is not among the saved pending changes",
            show(expected)
        );
    }
    assert!(
        !state.join("running").exists(),
        "a clean stop removes the running marker"
    );

    let before = daemon.log().len();
    daemon.restart();
    let log = log_since(&daemon, before);
    assert!(
        log.contains("restored changes saved by the previous run"),
        "the restart does not restore the saved changes:\n{}",
        tail(&log, 20)
    );
    assert!(!log.contains("did not stop cleanly"));
    assert!(
        !state.join("pending").exists(),
        "the pending file is consumed at start"
    );
    env.rsyncd.start();
    let took = wait_converged(&src, env.replica(), Duration::from_secs(30));
    eprintln!("clean restart: converged {took:?} after the remote came back");
    let log = log_since(&daemon, before);
    assert!(
        !log.contains("full sync started"),
        "delivered by a full sync, not from the saved changes:\n{}",
        tail(&log, 30)
    );
}

// ---------------------------------------------------------------------------------------
// 5. queue overflow (inotify and fanotify)
// ---------------------------------------------------------------------------------------

/// Sets a sysctl for the life of the guard; the old value is written back on drop (also
/// when the test panics).
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> Result<Sysctl, String> {
        let path = PathBuf::from(path);
        let old = std::fs::read_to_string(&path)
            .map_err(|e| format!("read {}: {e}", path.display()))?
            .trim()
            .to_owned();
        std::fs::write(&path, value).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(&self.path, &self.old) {
            eprintln!(
                "cannot restore {} to {}: {err}",
                self.path.display(),
                self.old
            );
        }
    }
}

both_backends! {
    fn queue_overflow_is_detected_and_the_replica_converges_exactly() {
        // The queue of the backend under test: both copy the limit when they are created.
        let (max_queued, overflowed) = match crate::harness::watch_backend() {
            Some("fanotify") => (
                "/proc/sys/fs/fanotify/max_queued_events",
                "fanotify queue overflowed",
            ),
            _ => (
                "/proc/sys/fs/inotify/max_queued_events",
                "inotify queue overflowed",
            ),
        };
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !nix::unistd::geteuid().is_root() {
            assert!(
                !ci,
                "CI=true: the overflow test needs root to set {max_queued}"
            );
            eprintln!("SKIP overflow test: not root, cannot set {max_queued}");
            return;
        }
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _serial = SYSCTL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let daemon = {
            // The limit is copied into an inotify instance when it is created, so it only has
            // to be low while sersyncd starts; restoring it at once keeps the window in which
            // other tests' daemons could start with it short.
            let guard = Sysctl::set(max_queued, "64").unwrap_or_else(|e| panic!("{e}"));
            let daemon = env.start(|b| b);
            drop(guard);
            daemon
        };
        let restored = std::fs::read_to_string(max_queued).unwrap();
        assert_ne!(restored.trim(), "64", "{max_queued} was not restored");

        // Ten watched directories first: events in them are what fills the queue.
        for d in 0..10 {
            write(env.src(), &format!("pre{d}/seed"), "seed\n");
        }
        env.converged();

        // Stop the daemon while the burst is written: the kernel queues 64 events and drops
        // the rest, so the overflow is certain rather than a matter of speed. 2,000 files go
        // into the watched directories (4,000+ events), then 20 new directories with 50 files
        // each are created, whose own creation events are among those dropped.
        let pid = daemon.pid();
        kill(pid, Signal::SIGSTOP).unwrap();
        let burst = std::panic::catch_unwind(|| {
            for i in 0..2000 {
                write(
                    env.src(),
                    &format!("pre{}/f{i:04}", i % 10),
                    &format!("{i}\n"),
                );
            }
            for d in 0..20 {
                for i in 0..50 {
                    write(
                        env.src(),
                        &format!("new{d:02}/f{i:02}"),
                        &format!("{d} {i}\n"),
                    );
                }
            }
        });
        kill(pid, Signal::SIGCONT).unwrap();
        if let Err(panic) = burst {
            std::panic::resume_unwind(panic);
        }
        wait_until(
            Duration::from_secs(10),
            "the daemon logs the overflow",
            || daemon.log().contains(overflowed),
            || tail(&daemon.log(), 20),
        );
        let took = wait_converged(env.src(), env.replica(), Duration::from_secs(30));
        eprintln!("overflow: converged {took:?} after the burst");

        // Every directory is watched after the rescan, also those whose creation was lost in
        // the overflow: a change in each of them replicates live.
        for d in 0..10 {
            write(env.src(), &format!("pre{d}/after-the-overflow"), "live\n");
        }
        for d in 0..20 {
            write(
                env.src(),
                &format!("new{d:02}/after-the-overflow"),
                "live\n",
            );
        }
        std::fs::remove_file(env.src().join("new19/f49")).unwrap();
        wait_converged(env.src(), env.replica(), CONVERGE);
    }
}

// ---------------------------------------------------------------------------------------
// 6. The failure script
// ---------------------------------------------------------------------------------------

/// The hostile names of the core issue (see e2e_hostile.rs) that the failure script must
/// carry safely.
fn hostile_names() -> Vec<Vec<u8>> {
    [
        &b"a\"b"[..],
        b"a'b",
        b"a`touch PWNED`b",
        b"$(touch PWNED)",
        b"x;y",
        b"x;touch PWNED",
        b"-rf",
        b"*",
        b"[ab]",
        b"?",
        b"a\nb",
        b"line\ntouch PWNED",
        b"bad\xff\xfename",
        b"with space",
        b" leading and trailing ",
        b"#hash",
        b"back\\slash",
        b"~tilde",
        b"a|touch PWNED",
        b"a&&touch PWNED",
        b"$HOME",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect()
}

/// Bytes no POSIX shell treats specially anywhere in a word.
fn bare_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'_' | b'@' | b'%' | b'+' | b'=' | b':' | b',' | b'.' | b'/' | b'-'
        )
}

/// What a byte of the script is to `sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Blank,
    Comment,
    /// Inside '…' (the quotes themselves included).
    Quoted,
    /// `\'` between two quoted parts.
    Escaped,
    Bare,
}

/// Splits the script into words the way `sh` does for the subset it may use: blanks,
/// comments, single-quoted parts, `\'`, and bare words of [`bare_safe`] bytes or the fixed
/// operators `&&`, `|` and `</dev/null`. Returns each word's value and each byte's
/// [`Lex`], or what is not allowed.
fn lex_script(script: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<Lex>), String> {
    let mut kinds = vec![Lex::Blank; script.len()];
    let mut words = Vec::new();
    let mut i = 0;
    while i < script.len() {
        let b = script[i];
        if matches!(b, b' ' | b'\t' | b'\n') {
            i += 1;
            continue;
        }
        if b == b'#' {
            while i < script.len() && script[i] != b'\n' {
                kinds[i] = Lex::Comment;
                i += 1;
            }
            continue;
        }
        let start = i;
        let mut word = Vec::new();
        let mut bare = Vec::new();
        while i < script.len() && !matches!(script[i], b' ' | b'\t' | b'\n') {
            match script[i] {
                b'\'' => {
                    kinds[i] = Lex::Quoted;
                    i += 1;
                    while i < script.len() && script[i] != b'\'' {
                        kinds[i] = Lex::Quoted;
                        word.push(script[i]);
                        i += 1;
                    }
                    if i == script.len() {
                        return Err(format!("unterminated quote from byte {start}"));
                    }
                    kinds[i] = Lex::Quoted;
                    i += 1;
                }
                b'\\' if script.get(i + 1) == Some(&b'\'') => {
                    kinds[i] = Lex::Escaped;
                    kinds[i + 1] = Lex::Escaped;
                    word.push(b'\'');
                    i += 2;
                }
                other => {
                    kinds[i] = Lex::Bare;
                    bare.push(other);
                    word.push(other);
                    i += 1;
                }
            }
        }
        let operator = matches!(&script[start..i], b"&&" | b"|" | b"</dev/null");
        if !operator && !bare.iter().all(|&b| bare_safe(b)) {
            return Err(format!(
                "unquoted shell syntax in the word {} at byte {start}",
                show(&script[start..i])
            ));
        }
        words.push(word);
    }
    Ok((words, kinds))
}

/// Writes `dir/rsync`, a wrapper that saves what it reads on stdin (the NUL-separated
/// paths; one file per run in `record_dir`) and then runs the real rsync on it. Put `dir`
/// first in PATH to see what a script sends. Returns `dir`.
fn wrapper_rsync(dir: &Path, record_dir: &Path) -> PathBuf {
    let real = Command::new("sh")
        .args(["-c", "command -v rsync"])
        .output()
        .expect("sh -c command -v rsync");
    let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
    assert!(real.starts_with('/'), "rsync not found: {real:?}");
    let wrapper = dir.join("rsync");
    let mut file = std::fs::File::create(&wrapper).unwrap();
    writeln!(
        file,
        "#!/bin/sh\nrecord=\"{}/stdin.$$\"\ncat > \"$record\"\nexec '{}' \"$@\" < \"$record\"",
        record_dir.display(),
        real
    )
    .unwrap();
    drop(file);
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_owned()
}

/// The path a record of the failure script's stdin names: `./path` (a `--files-from`
/// list) or an include rule `+ /path`, `+ /path/` or `+ /path/***` (the rules of a replay
/// with deletions; a path with wildcard characters is escaped there). `None` for the
/// closing `- *`.
fn listed_path(record: &[u8]) -> Option<Vec<u8>> {
    let Some(rule) = record.strip_prefix(b"+ /") else {
        let path = record.strip_prefix(b"./").unwrap_or(record);
        return (!path.is_empty() && !record.starts_with(b"- ")).then(|| path.to_vec());
    };
    match rule.strip_suffix(b"/***") {
        // A wildcard pattern: always escaped.
        Some(below) => Some(unescape(below)),
        None => unescape_rule(rule),
    }
}

fn unescape(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut bytes = pattern.iter().peekable();
    while let Some(&b) = bytes.next() {
        match bytes.peek() {
            Some(&&next) if b == b'\\' && matches!(next, b'*' | b'?' | b'[' | b'\\') => {
                out.push(next);
                bytes.next();
            }
            _ => out.push(b),
        }
    }
    out
}

/// The paths a list of stdin records covers: each listed one, and everything below a
/// `+ /path/***` rule.
fn covers(records: &[Vec<u8>], path: &[u8]) -> bool {
    records.iter().any(|record| {
        listed_path(record).as_deref() == Some(path)
            || (record.ends_with(b"/***")
                && listed_path(record).is_some_and(|dir| {
                    path.starts_with(&dir) && path.get(dir.len()) == Some(&b'/')
                }))
    })
}

/// An exact rule's path: escaped only when the path has a wildcard character.
fn unescape_rule(rule: &[u8]) -> Option<Vec<u8>> {
    let rule = rule.strip_suffix(b"/").unwrap_or(rule);
    let unescaped = unescape(rule);
    let escaped = unescaped.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    Some(if escaped { unescaped } else { rule.to_vec() })
}

#[test]
fn failure_script_is_private_quoted_and_replays_exactly_the_failed_paths_by_hand() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.fail_log("fail.sh", 60));
    let src = env.src().to_owned();
    write(&src, "decoy.txt", "delivered before the outage\n");
    env.converged();

    env.rsyncd.stop();
    let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
    for name in hostile_names() {
        std::fs::write(src.join(os(&name)), &name).unwrap();
        expected.insert(name);
    }
    let dir = b"dir $(touch PWNED);`touch PWNED`\n\xff".to_vec();
    std::fs::create_dir(src.join(os(&dir))).unwrap();
    let mut inner = dir.clone();
    inner.extend_from_slice(b"/x;y");
    std::fs::write(src.join(os(&inner)), b"inner").unwrap();
    expected.insert(dir);
    expected.insert(inner);

    // Recorded at the second failed attempt (~1 s), saved within a second after that.
    let state = daemon.state_dir();
    let script_path = state.join("fail.sh");
    wait_until(
        Duration::from_secs(15),
        "the journal records every hostile path and the script appears in the state dir",
        || {
            journal_paths(&state).is_some_and(|paths| expected.is_subset(&paths))
                && script_path.exists()
        },
        || {
            format!(
                "journal: {:?}\n{}",
                journal_paths(&state)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| show(p))
                    .collect::<Vec<_>>(),
                tail(&daemon.log(), 30)
            )
        },
    );
    assert_eq!(
        journal_paths(&state).unwrap(),
        expected,
        "the journal holds exactly the failed paths"
    );
    assert!(
        !daemon.cwd().join("fail.sh").exists(),
        "a relative failLog path resolves against the state directory, not the cwd"
    );

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0));
    let script = std::fs::read(&script_path).unwrap();
    let shown = String::from_utf8_lossy(&script).into_owned();
    let mode = std::fs::metadata(&script_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "the failure script is private");

    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&script_path)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "sh -n rejects the script: {}\n{shown}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let (words, kinds) = lex_script(&script).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    for path in &expected {
        assert!(
            covers(&words, path),
            "{} is not a word of the script:\n{shown}",
            show(path)
        );
        if path.iter().all(|&b| bare_safe(b)) {
            continue;
        }
        // Wherever the raw name occurs, no byte of it is outside quotes.
        let mut from = 0;
        while let Some(at) = find(&script[from..], path) {
            let at = from + at;
            assert!(
                kinds[at..at + path.len()]
                    .iter()
                    .all(|k| matches!(k, Lex::Quoted | Lex::Escaped | Lex::Comment)),
                "{} appears unquoted at byte {at}:\n{shown}",
                show(path)
            );
            from = at + 1;
        }
    }
    assert!(
        script_commands(&script).iter().any(|l| l.contains("rsync")),
        "no rsync command in the script:\n{shown}"
    );

    // A stale copy on the replica, older than the source: anything that re-sent more than
    // the failed paths (a full sync, `./` recursively) would overwrite it.
    let decoy = env.replica().join("decoy.txt");
    std::fs::write(&decoy, "stale copy, must stay\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&decoy)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();

    env.rsyncd.start();
    let scratch = temp_dir("run-fail-script");
    let records = scratch.path().join("records");
    let bin = scratch.path().join("bin");
    let cwd = scratch.path().join("cwd");
    for d in [&records, &bin, &cwd] {
        std::fs::create_dir(d).unwrap();
    }
    wrapper_rsync(&bin, &records);
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("sh")
        .arg(&script_path)
        .current_dir(&cwd)
        .env("PATH", path_var)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "sh {} failed ({}):\n{}\n{}\n{shown}",
        script_path.display(),
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let mut stdin_records: Vec<Vec<u8>> = Vec::new();
    for record in std::fs::read_dir(&records).unwrap() {
        let bytes = std::fs::read(record.unwrap().path()).unwrap();
        stdin_records.extend(
            bytes
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    let sent: BTreeSet<Vec<u8>> = stdin_records
        .iter()
        .filter_map(|r| listed_path(r))
        .collect();
    assert!(
        !sent.is_empty(),
        "the script did not run rsync through PATH:\n{shown}"
    );
    let covered: BTreeSet<Vec<u8>> = expected
        .iter()
        .filter(|path| covers(&stdin_records, path))
        .cloned()
        .collect();
    assert_eq!(
        covered.iter().map(|p| show(p)).collect::<Vec<_>>(),
        expected.iter().map(|p| show(p)).collect::<Vec<_>>(),
        "the script re-sends every failed path"
    );
    assert!(
        sent.is_subset(&expected),
        "the script names paths that had not failed: {:?}",
        sent.difference(&expected)
            .map(|p| show(p))
            .collect::<Vec<_>>()
    );
    wait_converged_ignoring(&src, env.replica(), Duration::from_secs(2), &|p| {
        p == b"decoy.txt"
    });
    assert_eq!(
        std::fs::read_to_string(&decoy).unwrap(),
        "stale copy, must stay\n",
        "the script sent a path that had not failed"
    );

    let mut pwned = Vec::new();
    for root in [
        src.as_path(),
        env.replica(),
        &state,
        &daemon.cwd(),
        scratch.path(),
        env.rsyncd.dir(),
    ] {
        pwned.extend(find_named(root, "PWNED"));
    }
    for candidate in [
        std::env::current_dir().unwrap().join("PWNED"),
        PathBuf::from("/PWNED"),
        PathBuf::from("/tmp/PWNED"),
    ] {
        if std::fs::symlink_metadata(&candidate).is_ok() {
            pwned.push(candidate);
        }
    }
    assert!(pwned.is_empty(), "a file name was executed: {pwned:?}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------
// 7. The exit policy against rsync(1)
// ---------------------------------------------------------------------------------------

/// EXIT VALUES of rsync(1) 3.5.0, for when the installed man page cannot be read.
const RSYNC_1_EXIT_VALUES: &[i32] = &[
    0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25, 30, 35,
];

/// The codes listed under EXIT VALUES in the installed `man rsync`, if it can be read.
fn man_page_exit_values() -> Option<Vec<i32>> {
    let output = Command::new("man")
        .args(["-P", "cat", "rsync"])
        .env("MANWIDTH", "200")
        .env_remove("MAN_KEEP_FORMATTING")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // Overstrike bold (`X\bX`) in case the formatter kept it.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&output.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    let mut codes = Vec::new();
    // The section runs from its heading to the next heading (a line not indented).
    let section = text
        .lines()
        .skip_while(|line| line.trim_end() != "EXIT VALUES")
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(char::is_whitespace));
    for line in section {
        // "o      10 - Error in socket I/O" (the bullet is `o` or `•`).
        let line = line
            .trim()
            .trim_start_matches(['o', '\u{2022}', '*'])
            .trim();
        if let Some((number, meaning)) = line.split_once(" - ") {
            if let Ok(code) = number.parse::<i32>() {
                if !meaning.trim().is_empty() {
                    codes.push(code);
                }
            }
        }
    }
    (!codes.is_empty()).then_some(codes)
}

#[test]
fn exit_policy_covers_every_exit_value_of_rsync_1() {
    use sersync::failure::{ExitStatusLike, classify, describe};
    let codes = match man_page_exit_values() {
        Some(codes) => {
            eprintln!(
                "exit policy: {} codes from the installed man page",
                codes.len()
            );
            for code in RSYNC_1_EXIT_VALUES {
                assert!(
                    codes.contains(code),
                    "the man page parser missed exit {code}: {codes:?}"
                );
            }
            codes
        }
        None => {
            eprintln!("exit policy: man rsync not readable; using the rsync 3.5.0 list");
            RSYNC_1_EXIT_VALUES.to_vec()
        }
    };
    for code in codes {
        assert_ne!(
            describe(code),
            "unknown exit code",
            "rsync(1) documents exit {code} but the policy does not know it"
        );
        let verdict = classify(ExitStatusLike::Code(code), "");
        assert!(
            !verdict.reason.contains("unknown"),
            "exit {code}: {verdict:?}"
        );
    }
    // And an undocumented code is not silently treated as success.
    let unknown = classify(ExitStatusLike::Code(7), "");
    assert!(!unknown.class.is_done(), "{unknown:?}");
}

/// #14.5: the failure script, run by hand, delivers what failed: a nested path that no
/// longer exists is deleted on the remote and a new one is sent, on every rsync version
/// (receivers of rsync 3.2.x-3.4.x, Debian 12's among them, reject
/// `--delete-missing-args` for nested paths, which the script used before).
#[test]
fn the_failure_script_run_by_hand_deletes_and_sends_what_failed() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.fail_log("rsync_fail_log.sh", 60));
    write(env.src(), "d/e/old.txt", "old\n");
    write(env.src(), "d/e/keep.txt", "keep\n");
    env.converged();
    env.rsyncd.stop();
    std::fs::remove_file(env.src().join("d/e/old.txt")).unwrap();
    write(env.src(), "d/e/new.txt", "new\n");
    let state = daemon.state_dir();
    let script = state.join("rsync_fail_log.sh");
    wait_until(
        Duration::from_secs(30),
        "the failure script names both failed paths",
        || {
            std::fs::read(&script).is_ok_and(|text| {
                let text = String::from_utf8_lossy(&text);
                text.contains("d/e/old.txt") && text.contains("d/e/new.txt")
            })
        },
        || tail(&daemon.log(), 20),
    );
    // The daemon is stopped first: what delivers is the script alone.
    daemon.terminate();
    env.rsyncd.start();
    let out = Command::new("sh")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "the failure script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&std::fs::read(&script).unwrap_or_default())
    );
    wait_converged(env.src(), env.replica(), Duration::from_secs(5));
}

/// #14.4: while the remote is down, a lane over `<queue maxPending>` folds its pending
/// changes into dirty directories (so memory stays bounded however long the outage); the
/// fold survives a restart (the pending file), and when the remote is back the dirty
/// directories are synced recursively: new files, rewrites, deletions and a directory
/// rename all arrive, and the replica equals the source exactly.
#[test]
fn a_long_outage_folds_pending_changes_into_dirty_directories_and_recovers_exactly() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let src = env.src().to_owned();
    for i in 0..100 {
        write(&src, &format!("keep/f{i:03}"), &format!("keep {i}\n"));
    }
    for i in 0..60 {
        write(&src, &format!("del/sub/f{i:03}"), &format!("del {i}\n"));
    }
    for i in 0..20 {
        write(&src, &format!("olddir/g{i:03}"), &format!("g {i}\n"));
    }
    let mut daemon = env.start(|b| b.raw_sersync_xml(r#"<queue maxPending="100"/>"#).arg("-r"));
    env.converged();

    env.rsyncd.stop();
    for i in 0..1500 {
        write(
            &src,
            &format!("new/s{}/t{}/n{i:04}", i % 10, i % 7),
            &format!("new {i}\n"),
        );
    }
    for i in (0..100).step_by(2) {
        write(&src, &format!("keep/f{i:03}"), &format!("rewritten {i}\n"));
    }
    for i in 0..60 {
        std::fs::remove_file(src.join(format!("del/sub/f{i:03}"))).unwrap();
    }
    std::fs::rename(src.join("olddir"), src.join("newdir")).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the lane to fold its pending changes",
        || daemon.log().contains("folded into"),
        || tail(&daemon.log(), 40),
    );
    // Folded work is saved like any other at a stop, and taken up again.
    daemon.terminate();
    let pending = std::fs::read(daemon.state_dir().join("pending")).unwrap_or_default();
    assert!(
        pending.len() < 100 * 64,
        "the pending file holds {} bytes: not folded",
        pending.len()
    );
    // Without -r: the folded entries alone must bring the replica back.
    daemon.restart_with(&[]);
    env.rsyncd.start();
    env.converged();
    let log = daemon.log();
    let second_run = log
        .rsplit_once("restored changes saved by the previous run")
        .map_or("", |(_, after)| after);
    assert!(
        second_run.contains("synced") && !second_run.contains("full sync"),
        "the folded entries were not what recovered the replica:\n{second_run}"
    );
}

/// A batch that fails with exit 23 and a message sersyncd cannot read is split in halves,
/// each retried as a batch of its own, until the failing path stands alone: every other
/// file of the batch, and everything changed after it, reaches the replica, and the
/// failure is recorded for that one path. (The "remote" here is rsync behind a wrapper
/// that refuses any run listing `poison.txt`, sends nothing, and says something no rsync
/// says.)
#[test]
fn an_unexplained_partial_failure_is_narrowed_down_to_its_path() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let real = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("rsync"))
                .find(|candidate| candidate.is_file())
        })
        .expect("rsync on PATH");
    let wrapper_dir = temp_dir("wrapper");
    let wrapper = wrapper_dir.path().join("rsync");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\n\
             list=$(mktemp)\n\
             cat > \"$list\"\n\
             if grep -qa poison \"$list\" || [[ \"$*\" == *poison* ]]; then\n\
             \x20   rm -f \"$list\"\n\
             \x20   echo 'rsync: [sender] something no rsync has ever said' >&2\n\
             \x20   exit 23\n\
             fi\n\
             '{}' \"$@\" < \"$list\"\n\
             rc=$?\n\
             rm -f \"$list\"\n\
             exit $rc\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "PATH={}:{}",
        wrapper_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let daemon = env.start(|b| b.launcher(&["env", &path]));
    for i in 0..60 {
        write(
            env.src(),
            &format!("batch-{i:02}.txt"),
            "in the poisoned batch\n",
        );
    }
    write(env.src(), "poison.txt", "never accepted\n");
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..10 {
        write(env.src(), &format!("after-{i}.txt"), "changed afterwards\n");
    }
    let poison = |path: &[u8]| path == b"poison.txt";
    crate::harness::wait_converged_ignoring(
        env.src(),
        env.replica(),
        Duration::from_secs(90),
        &poison,
    );
    assert!(!env.replica().join("poison.txt").exists());
    wait_until(
        Duration::from_secs(30),
        "the journal holds poison.txt alone",
        || journal_paths(&daemon.state_dir()) == Some(BTreeSet::from([b"poison.txt".to_vec()])),
        || {
            format!(
                "{:?}\n{}",
                journal_paths(&daemon.state_dir()),
                tail(&daemon.log(), 40)
            )
        },
    );
}
