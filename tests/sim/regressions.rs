//! Focused regressions, next to the simulation: each way the convergence property broke
//! (the sixteen symptoms of issue #13, then what the simulation found), reproduced on
//! its own against the real daemon, real rsync daemons and real inotify.
//!
//! Each test names the commit that fixed it. Each failed against a6029f4 (the code before
//! those commits): build that commit's `sersyncd` and run these tests with
//! `SERSYNC_TEST_SERSYNCD=/path/to/that/sersyncd cargo test --test sim regressions`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::bus::{Bus, Policy, SERSYNCCTL};
use crate::harness::{
    CONVERGE, Env, RsyncDaemon, SersyncdBuilder, require_tool, sersyncd_binary, temp_dir, write,
};
use crate::snapshot;

/// How long a remote that was down, or a lane that backed off, may take to catch up.
const CATCH_UP: Duration = Duration::from_secs(45);

/// Waits until `replica` equals `source` to the nanosecond of every mtime (the
/// simulation's comparison); panics with the differences.
pub(crate) fn converged_exactly(source: &Path, replica: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let diffs = snapshot::differences(&snapshot::take(source), &snapshot::take(replica));
        if diffs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} differs from {} after {timeout:?}:\n  {}",
            replica.display(),
            source.display(),
            diffs
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `len` bytes that compress to nothing less (rsync's `-z` would make a bandwidth limit
/// meaningless on repetitive data).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    crate::ops::contents(len, seed)
}

/// Waits for `child` at most `limit`; its exit status and stderr, or `None` (after
/// killing it) when it was still running.
fn finish_within(mut child: Child, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    Some((status, stderr))
}

/// Polls `condition` (bounded); panics with `what`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let at = TimeSpec::new(secs, nsec);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &at,
        &at,
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

fn mtime(path: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (meta.mtime(), meta.mtime_nsec())
}

/// `chattr ±i`, undone (recursively) on drop even when the test fails.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        if !require_tool("chattr") {
            return None;
        }
        let status = Command::new("chattr").arg("+i").arg(path).status().ok()?;
        if !status.success() {
            // Not root, or a filesystem without the flag: the test cannot run here.
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "chattr +i {} failed under CI",
                path.display()
            );
            eprintln!("SKIP: chattr +i {} failed", path.display());
            return None;
        }
        Some(Immutable(path.to_owned()))
    }

    fn lift(&self) {
        let _ = Command::new("chattr")
            .args(["-R", "-f", "-i"])
            .arg(&self.0)
            .status();
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.lift();
    }
}

/// PIDs of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &[u8]) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// `sersyncctl --bus-address BUS args…`; returns (exit code, stdout, stderr).
pub(crate) fn ctl(bus: &Bus, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SERSYNCCTL)
        .arg("--bus-address")
        .arg(bus.address())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sersyncctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn on_bus(builder: SersyncdBuilder, bus: &Bus) -> SersyncdBuilder {
    builder
        .arg("--bus-address")
        .arg(bus.address())
        .arg("--instance")
        .arg("web")
}

// ---------------------------------------------------------------------------------------
// The symptoms of issue #13
// ---------------------------------------------------------------------------------------

/// #13.1 (fixed in b8d741b): `mv a t; mv b a; mv t b`, `mv a OUT; mv b a` and a directory
/// moved out and back: the replica equals the source, and later writes inside the moved
/// directories are replicated.
#[test]
fn swapped_and_returning_directories_stay_replicated() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src();
    let outside = temp_dir("outside");
    write(src, "a/f", "a\n");
    write(src, "b/g", "b\n");
    write(src, "c/h", "c\n");
    env.converged();
    // The atomic-deploy swap.
    std::fs::rename(src.join("a"), src.join("t")).unwrap();
    std::fs::rename(src.join("b"), src.join("a")).unwrap();
    std::fs::rename(src.join("t"), src.join("b")).unwrap();
    // Out of the tree, and another directory takes the name.
    std::fs::rename(src.join("c"), outside.path().join("c")).unwrap();
    std::fs::rename(src.join("a"), src.join("c")).unwrap();
    env.converged();
    // Out and straight back.
    std::fs::rename(src.join("b"), outside.path().join("b")).unwrap();
    std::fs::rename(outside.path().join("b"), src.join("b")).unwrap();
    env.converged();
    write(src, "b/late-1", "1\n");
    write(src, "c/late-2", "2\n");
    env.converged();
}

/// #13.2 (fixed in 6e7e0bb): a file rewritten with the same size within the second of
/// its old version, then its directory renamed, while the lane is busy (so both land in
/// one batch, with the rename): the rename is rebuilt from the remote's old copy
/// (`--copy-dest`), which must not win over the new contents.
#[test]
fn a_same_second_rewrite_then_a_directory_rename_sends_the_new_contents() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b.common_params("-artz --bwlimit=1000"));
    let src = env.src().to_owned();
    write(&src, "d/f", &"A".repeat(100));
    env.converged();
    let (secs, nsec) = mtime(&src.join("d/f"));
    // The lane is busy for a few seconds with a file that cannot be compressed.
    std::fs::write(src.join("busy.bin"), noise(3_000_000, 2)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    write(&src, "d/f", &"B".repeat(100));
    set_mtime(&src.join("d/f"), secs, (nsec + 1) % 1_000_000_000);
    std::fs::rename(src.join("d"), src.join("e")).unwrap();
    converged_exactly(&src, env.replica(), CATCH_UP);
}

/// #13.3 (fixed in 6db70c3): a receiver that refuses one deletion (an immutable
/// directory) must not hold back the new files of the same batch; once it is fixed, the
/// deletion goes through.
#[test]
fn a_refused_deletion_does_not_hold_back_the_new_files_of_its_batch() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "locked/victim", "v\n");
    write(&src, "locked/keep", "k\n");
    env.converged();
    let Some(lock) = Immutable::set(&env.replica().join("locked")) else {
        return;
    };
    env.rsyncd.stop();
    std::fs::remove_file(src.join("locked/victim")).unwrap();
    for i in 0..60 {
        write(&src, &format!("new/f{i:02}"), &format!("{i}\n"));
    }
    env.rsyncd.start();
    let replica = env.replica().to_owned();
    wait_for("the new files on the replica", CATCH_UP, || {
        (0..60).all(|i| replica.join(format!("new/f{i:02}")).exists())
    });
    assert!(
        replica.join("locked/victim").exists(),
        "refused, still there"
    );
    lock.lift();
    // The refused deletion is retried on its own (15 s) or with the lane's backoff.
    converged_exactly(&src, &replica, CATCH_UP);
}

/// #13.4 (fixed in 6db70c3): exit 23 with more stderr than is kept (hundreds of refused
/// deletions with long names) must retry what it cannot name; after the receiver is
/// fixed every path converges.
#[test]
fn an_exit_23_with_a_long_stderr_loses_nothing() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    // Every file of the tree is deleted: the replica guard would hold that by design.
    let _daemon = env.start(|b| b.raw_sersync_xml(r#"<deleteGuard share="0"/>"#));
    let src = env.src().to_owned();
    let long = "n".repeat(150);
    for i in 0..250 {
        write(&src, &format!("locked/{long}-{i:03}"), "x\n");
    }
    env.converged();
    let Some(lock) = Immutable::set(&env.replica().join("locked")) else {
        return;
    };
    env.rsyncd.stop();
    for i in 0..250 {
        std::fs::remove_file(src.join(format!("locked/{long}-{i:03}"))).unwrap();
    }
    for i in 0..199 {
        write(&src, &format!("fresh/{i:03}"), &format!("{i}\n"));
    }
    env.rsyncd.start();
    let replica = env.replica().to_owned();
    wait_for("the fresh files on the replica", CATCH_UP, || {
        (0..199).all(|i| replica.join(format!("fresh/{i:03}")).exists())
    });
    lock.lift();
    converged_exactly(&src, &replica, Duration::from_secs(75));
}

/// #13.5 (fixed in 6db70c3): kill -9 of sersyncd during a large transfer leaves no rsync
/// running, so nothing old lands on the replica after the restarted daemon delivered the
/// new version.
#[test]
fn kill_9_during_a_large_transfer_leaves_no_rsync_behind() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.common_params("-artz --bwlimit=1000"));
    let src = env.src().to_owned();
    std::fs::write(src.join("big.bin"), noise(6_000_000, 5)).unwrap();
    let password_file = env.rsyncd.password_file();
    let needle = password_file.as_os_str().as_bytes();
    wait_for("an rsync sending big.bin", CONVERGE, || {
        !processes_mentioning(needle).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill9();
    wait_for(
        "no rsync left behind by the killed daemon",
        Duration::from_secs(3),
        || processes_mentioning(needle).is_empty(),
    );
    std::fs::write(src.join("big.bin"), b"the new version\n").unwrap();
    daemon.restart();
    converged_exactly(&src, env.replica(), CATCH_UP);
    // An orphan would have finished its 6 MB within these seconds.
    std::thread::sleep(Duration::from_secs(7));
    converged_exactly(&src, env.replica(), Duration::from_millis(200));
}

/// #13.6 (fixed in 6db70c3): SIGTERM during the recovery full sync after an unclean stop
/// must not end the recovery: the next start (without -r) finishes it, so files created
/// while the daemon was down arrive.
#[test]
fn sigterm_during_the_recovery_does_not_end_the_recovery() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.common_params("-artz --bwlimit=500"));
    let src = env.src().to_owned();
    write(&src, "before", "b\n");
    env.converged();
    daemon.kill9();
    // While it is down: a big file (the recovery outlasts the 10 s stop grace) and more.
    std::fs::write(src.join("big.bin"), noise(8_000_000, 6)).unwrap();
    for i in 0..5 {
        write(&src, &format!("while-down/{i}"), "d\n");
    }
    daemon.restart();
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM: {status}");
    daemon.restart();
    converged_exactly(&src, env.replica(), Duration::from_secs(60));
}

/// #13.7 (fixed in 6db70c3): a full sync keeps the pending changes it cannot see: paths
/// its `<crontabfilter>` excludes, and a same-size rewrite within the second.
#[test]
fn a_full_sync_keeps_the_pending_changes_it_cannot_see() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| on_bus(b.crontab_filter(&["*.php"]), &bus));
    let src = env.src().to_owned();
    write(&src, "same.txt", &"A".repeat(64));
    env.converged();
    let (secs, nsec) = mtime(&src.join("same.txt"));
    env.rsyncd.stop();
    write(&src, "index.php", "<?php echo 1;\n");
    write(&src, "same.txt", &"B".repeat(64));
    set_mtime(&src.join("same.txt"), secs, (nsec + 1) % 1_000_000_000);
    // Queued behind the lane's backoff; the pending changes ride along with it.
    let (code, _, stderr) = ctl(&bus, &["full-sync"]);
    assert_eq!(code, 0, "{stderr}");
    env.rsyncd.start();
    converged_exactly(&src, env.replica(), CATCH_UP);
    drop(daemon);
}

/// #13.8a (fixed in 6db70c3): `full-sync --wait` returns only after a full sync that
/// started after the call: a file written just before the call is on the replica when it
/// returns, although another full sync was running.
#[test]
fn full_sync_wait_waits_for_a_full_sync_that_started_after_the_call() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b.common_params("-artz --bwlimit=1000"), &bus));
    let src = env.src().to_owned();
    std::fs::write(src.join("big.bin"), noise(3_000_000, 8)).unwrap();
    converged_exactly(&src, env.replica(), CATCH_UP);
    // A full sync that takes a few seconds (it sends big.bin again) is running when the
    // call comes.
    std::fs::remove_file(env.replica().join("big.bin")).unwrap();
    let (code, _, stderr) = ctl(&bus, &["full-sync"]);
    assert_eq!(code, 0, "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    write(&src, "written-before-the-call.txt", "w\n");
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--wait", "--json"]);
    assert_eq!(code, 0, "{out}{stderr}");
    assert!(
        env.replica().join("written-before-the-call.txt").exists(),
        "full-sync --wait returned before a file written before the call arrived"
    );
}

/// #13.8b (fixed in 6db70c3): a reload that rebuilds the lanes (here: another root
/// changes its remote; the roots, and so the watches, stay) while a full sync is queued
/// keeps that full sync.
#[test]
fn a_reload_keeps_a_queued_full_sync() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(mut env) = Env::new(&["web", "other", "more"]) else {
        return;
    };
    let second_root = temp_dir("second-root");
    let web = env.rsyncd.remote("web");
    let both = SersyncdBuilder::new()
        .root(env.src(), std::slice::from_ref(&web))
        .root(second_root.path(), &[env.rsyncd.remote("other")])
        .rsyncd(&env.rsyncd);
    let daemon = on_bus(both, &bus).start();
    let src = env.src().to_owned();
    let replica = env.rsyncd.replica("web").to_owned();
    write(&src, "a.txt", "a\n");
    converged_exactly(&src, &replica, CONVERGE);
    // A stray file on the replica goes only with a full sync.
    write(&replica, "stray.txt", "only on the replica\n");
    env.rsyncd.stop();
    let (code, _, stderr) = ctl(&bus, &["full-sync", "--root", &src.to_string_lossy()]);
    assert_eq!(code, 0, "{stderr}");
    let moved = SersyncdBuilder::new()
        .root(env.src(), &[web])
        .root(second_root.path(), &[env.rsyncd.remote("more")])
        .rsyncd(&env.rsyncd);
    daemon.write_config(&on_bus(moved, &bus).xml());
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    env.rsyncd.start();
    wait_for("the queued full sync to remove stray.txt", CATCH_UP, || {
        !replica.join("stray.txt").exists()
    });
    converged_exactly(&src, &replica, CATCH_UP);
}

/// #13.9 (fixed in 6db70c3): after the inotify watch limit was hit, raising it and
/// reloading watches the rest at once (not at the next 10-minute resync).
#[test]
fn raising_the_watch_limit_and_reloading_watches_the_rest_at_once() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() || !require_tool("unshare") || !require_tool("nsenter") {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs root under CI"
        );
        return;
    }
    let daemon =
        env.start(|b| b.launcher(&["unshare", "--user", "--map-user=0", "--map-group=0", "--"]));
    let pid = daemon.pid().as_raw();
    let set_limit = |limit: &str| {
        let status = Command::new("nsenter")
            .arg("--user")
            .arg(format!("--target={pid}"))
            .args(["sh", "-c"])
            .arg(format!("echo {limit} > /proc/sys/user/max_inotify_watches"))
            .status()
            .expect("nsenter");
        assert!(status.success());
    };
    // Every watch it holds now, and not one more.
    set_limit("1");
    let src = env.src().to_owned();
    std::fs::create_dir_all(src.join("deep/er/still")).unwrap();
    write(&src, "deep/er/still/first", "1\n");
    env.converged();
    set_limit("2147483647");
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    write(&src, "deep/er/still/second", "2\n");
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// #13.10 (fixed in b8d741b): files created with `O_TMPFILE` + `linkat` (written before
/// or after the link) replicate.
#[test]
fn files_linked_in_from_o_tmpfile_replicate() {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    std::fs::create_dir(src.join("dir")).unwrap();
    env.converged();
    for (name, before) in [("dir/before", true), ("dir/after", false), ("top", true)] {
        let dir = src.join(name).parent().unwrap().to_owned();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o644)
            .open(&dir)
            .expect("O_TMPFILE");
        if before {
            file.write_all(name.as_bytes()).unwrap();
        }
        nix::unistd::linkat(
            &file,
            "",
            nix::fcntl::AT_FDCWD,
            &src.join(name),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
        .expect("linkat");
        if !before {
            file.write_all(name.as_bytes()).unwrap();
        }
    }
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// #13.11 (fixed in 6e7e0bb): a rollback to older files (the previous release with its
/// older mtimes) reaches the replica, with the stock `-artuz`.
#[test]
fn a_rollback_to_older_files_reaches_the_replica() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b.common_params("-artuz"));
    let src = env.src().to_owned();
    write(&src, "app/index.html", "release 2\n");
    env.converged();
    write(&src, "app/index.html", "release 1\n");
    set_mtime(&src.join("app/index.html"), 1_600_000_000, 0);
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// #13.12 (fixed in 6db70c3): a second daemon given the same state directory is refused
/// (exit 73, naming the first one's PID), and the first one goes on.
#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b);
    let second = Command::new(sersyncd_binary())
        .arg("-o")
        .arg(daemon.config_path())
        .arg("--state-dir")
        .arg(daemon.state_dir())
        .arg("--log")
        .arg("stderr")
        .arg("--no-dbus")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a second sersyncd");
    let (status, stderr) = finish_within(second, Duration::from_secs(10))
        .expect("a second sersyncd on the same state directory kept running");
    assert_eq!(status.code(), Some(73), "{stderr}");
    assert!(
        stderr.contains(&format!("PID {}", daemon.pid())),
        "the error names the first daemon: {stderr}"
    );
    write(env.src(), "still-working.txt", "yes\n");
    env.converged();
}

/// A TCP listener that accepts connections and never says anything.
struct SilentRemote {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl SilentRemote {
    fn start() -> SilentRemote {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        SilentRemote {
            port,
            _thread: thread,
        }
    }
}

/// #13.13 (fixed in 6e7e0bb and 6db70c3): with the stock `<timeout start="false">`, a
/// remote that accepts the connection and then says nothing is reported as stalled in the
/// log and the status within about 30 s, and every rsync run carries a `--timeout`.
#[test]
fn a_stalled_remote_is_reported_and_every_run_has_a_deadline() {
    if !require_tool("rsync") {
        return;
    }
    let silent = SilentRemote::start();
    let src = temp_dir("src");
    let rsyncd = RsyncDaemon::new(&["web"]);
    let builder = SersyncdBuilder::new()
        .root(src.path(), &[rsyncd.remote("web")])
        .rsyncd(&rsyncd)
        .timeout(None);
    // Reloaded with the silent listener's port: the same remote, now stalled.
    let xml = builder.xml().replace(
        &format!("port=\"{}\"", rsyncd.port()),
        &format!("port=\"{}\"", silent.port),
    );
    let daemon = builder.start();
    daemon.write_config(&xml);
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    write(src.path(), "f.txt", "x\n");
    wait_for("the stall in the log", Duration::from_secs(45), || {
        daemon.log().contains("has moved no data")
    });
    let log = daemon.log();
    assert!(
        log.contains("--timeout=120"),
        "every run has a deadline:\n{log}"
    );
    wait_for("the stall in STATUS=", Duration::from_secs(10), || {
        daemon
            .notifications()
            .iter()
            .any(|n| n.contains("STATUS=") && n.contains("stalled"))
    });
}

/// #13.14 (fixed in 6db70c3): `-n 2` means at most two rsync processes at once, also
/// while full syncs of two remotes run split into concurrent runs.
#[test]
fn minus_n_bounds_every_rsync_process() {
    if !require_tool("rsync") {
        return;
    }
    let (first, second) = RsyncDaemon::pair(&["web"]);
    let src = temp_dir("src");
    for d in 0..12u64 {
        for f in 0..10u64 {
            let path = src.path().join(format!("d{d:02}/f{f}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, noise(20_000, d * 100 + f)).unwrap();
        }
    }
    let daemon = SersyncdBuilder::new()
        .root(src.path(), &[first.remote("web"), second.remote("web")])
        .rsyncd(&first)
        .common_params("-artz --bwlimit=4000")
        .arg("-n")
        .arg("2")
        .arg("-r")
        .start();
    let pid = daemon.pid().as_raw();
    let mut most = 0;
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let children = rsync_children(pid);
        most = most.max(children);
        let done = snapshot::differences(
            &snapshot::take(src.path()),
            &snapshot::take(first.replica("web")),
        )
        .is_empty()
            && snapshot::differences(
                &snapshot::take(src.path()),
                &snapshot::take(second.replica("web")),
            )
            .is_empty();
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the full syncs did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most >= 1, "no rsync seen at all");
    assert!(most <= 2, "-n 2, yet {most} rsync processes ran at once");
}

/// rsync processes whose parent is `pid`.
fn rsync_children(pid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let comm = stat[..close].split_once('(').map_or("", |(_, c)| c);
            let ppid = stat[close + 2..]
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok());
            comm == "rsync" && ppid == Some(pid)
        })
        .count()
}

/// A FUSE mirror of a directory (bindfs, in the foreground so its PID is ours), stopped
/// and unmounted on drop.
struct Bindfs {
    mountpoint: PathBuf,
    child: Child,
}

impl Bindfs {
    fn mount(from: &Path, at: &Path) -> Option<Bindfs> {
        if !require_tool("bindfs") || !nix::unistd::geteuid().is_root() {
            return None;
        }
        let child = Command::new("bindfs")
            .arg("-f")
            .arg(from)
            .arg(at)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run bindfs");
        let mut fs = Bindfs {
            mountpoint: at.to_owned(),
            child,
        };
        wait_for("the bindfs mount", Duration::from_secs(10), || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .is_ok_and(|m| m.contains(&*at.to_string_lossy()))
        });
        let _ = &mut fs;
        Some(fs)
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        self.signal(Signal::SIGCONT);
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// #13.15 (fixed in 0322a5d): a root on a hung filesystem (a FUSE mount whose server is
/// stopped) stalls only its own watcher: another root keeps replicating, the log names the
/// blocked one, and it catches up once its filesystem answers again.
#[test]
fn a_root_on_a_hung_filesystem_does_not_stall_the_others() {
    let Some(env) = Env::new(&["one", "two"]) else {
        return;
    };
    let under = temp_dir("under");
    let mountpoint = temp_dir("fuse");
    let Some(fuse) = Bindfs::mount(under.path(), mountpoint.path()) else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "bindfs (and root) are needed under CI"
        );
        return;
    };
    let hung = mountpoint.path().to_owned();
    let builder = SersyncdBuilder::new()
        .root(env.src(), &[env.rsyncd.remote("one")])
        .root(&hung, &[env.rsyncd.remote("two")])
        .rsyncd(&env.rsyncd);
    let daemon = builder.clone().start();
    write(env.src(), "a.txt", "a\n");
    write(&hung, "b.txt", "b\n");
    converged_exactly(env.src(), env.rsyncd.replica("one"), CONVERGE);
    converged_exactly(&hung, env.rsyncd.replica("two"), CONVERGE);
    fuse.signal(Signal::SIGSTOP);
    // A reload that changes what is watched starts new watchers: the hung root's blocks.
    daemon.write_config(&builder.exclude("never-matches-anything").xml());
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    write(env.src(), "after.txt", "still replicated\n");
    converged_exactly(env.src(), env.rsyncd.replica("one"), CONVERGE);
    wait_for(
        "the blocked watcher in the log",
        Duration::from_secs(45),
        || daemon.log().contains("blocked for"),
    );
    fuse.signal(Signal::SIGCONT);
    write(&hung, "c.txt", "c\n");
    converged_exactly(&hung, env.rsyncd.replica("two"), CATCH_UP);
}

/// #13.16 (fixed in 6e7e0bb): a FIFO or a device given as the config is refused at once
/// (it hung `--check` and start-up; `/dev/zero` grew until out of memory), and so is a
/// config over 4 MiB.
#[test]
fn a_config_that_is_not_a_small_regular_file_is_refused_at_once() {
    let dir = temp_dir("config");
    let fifo = dir.path().join("fifo.xml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = dir.path().join("huge.xml");
    std::fs::write(&huge, vec![b' '; 5 * 1024 * 1024]).unwrap();
    for (config, expected) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (huge.as_path(), "more than"),
    ] {
        let child = Command::new(sersyncd_binary())
            .arg("--check")
            .arg("-o")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sersyncd --check");
        let (status, stderr) = finish_within(child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("sersyncd --check -o {} hung", config.display()));
        assert_eq!(status.code(), Some(78), "{}: {stderr}", config.display());
        assert!(stderr.contains(expected), "{}: {stderr}", config.display());
        assert!(
            stderr.contains(&*config.to_string_lossy()),
            "names the file: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Found by the simulation
// ---------------------------------------------------------------------------------------

/// Seeds 1 and 11 (fixed in 0322a5d): renameat2(RENAME_EXCHANGE) of two directories
/// (and a directory swapped with a file) converges, and both stay watched.
#[test]
fn exchanged_directories_converge() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "release/current/index", "2\n");
    write(&src, "release/previous/index", "1\n");
    write(&src, "plain", "file\n");
    std::fs::create_dir(src.join("empty")).unwrap();
    env.converged();
    let exchange = |a: &str, b: &str| {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &src.join(a),
            nix::fcntl::AT_FDCWD,
            &src.join(b),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .expect("renameat2");
    };
    exchange("release/current", "release/previous");
    exchange("plain", "empty");
    converged_exactly(&src, env.replica(), CONVERGE);
    write(&src, "release/current/late", "l\n");
    write(&src, "release/previous/late", "l\n");
    write(&src, "plain/late", "l\n");
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// Seeds 6 and 7 (fixed in 2c343ff): what changed while the daemon was killed only in
/// the nanoseconds of an mtime (a same-size rewrite within the second, a symlink made
/// again) is repaired by the recovery full sync.
#[test]
fn nanosecond_only_changes_made_while_the_daemon_was_down_are_recovered() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "same.txt", &"A".repeat(50));
    std::os::unix::fs::symlink("target", src.join("link")).unwrap();
    env.converged();
    let (secs, nsec) = mtime(&src.join("same.txt"));
    daemon.kill9();
    write(&src, "same.txt", &"B".repeat(50));
    set_mtime(&src.join("same.txt"), secs, (nsec + 7) % 1_000_000_000);
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("target", src.join("link")).unwrap();
    daemon.restart();
    converged_exactly(&src, env.replica(), CATCH_UP);
}

/// Seed 23 (fixed in 5d4e9a0): changes made right before a SIGTERM are saved with the rest, not lost with
/// the inotify queue they were still in (the loop stopped as soon as nothing was in
/// flight, while the watcher was still reading the renamed directory).
#[test]
fn changes_made_right_before_a_clean_stop_are_delivered_after_the_restart() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b);
    let src = env.src().to_owned();
    // A directory whose rename takes the watcher a while to report (a walk of 2,000
    // subdirectories).
    for i in 0..2000 {
        std::fs::create_dir_all(src.join(format!("d0/s{i:04}"))).unwrap();
    }
    write(&src, "d0/f", "0\n");
    converged_exactly(&src, env.replica(), CATCH_UP);
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::rename(
            src.join(format!("d{}", round - 1)),
            src.join(format!("d{round}")),
        )
        .unwrap();
        write(&src, &format!("top{round}"), &format!("{round}\n"));
        let status = daemon.terminate();
        assert!(status.success(), "SIGTERM: {status}");
        daemon.restart();
    }
    converged_exactly(&src, env.replica(), CATCH_UP);
}

/// Seed 5 (fixed in fbfdb5d): a path the events say was a file can be a directory on the remote (a
/// directory→file replacement whose file was gone again when its batch ran); its deletion
/// must delete that directory too, not keep it silently ("cannot delete non-empty
/// directory" with exit 0).
#[test]
fn deleting_a_file_removes_the_directory_the_remote_has_there() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "d/x", "a file\n");
    env.converged();
    // The remote has a directory where the file was.
    let remote_x = env.replica().join("d/x");
    std::fs::remove_file(&remote_x).unwrap();
    write(env.replica(), "d/x/left/over", "stale\n");
    std::fs::remove_file(src.join("d/x")).unwrap();
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// Seed 26 (fixed in 50bb637): a directory renamed to a name that is a symlink on the remote (left there by
/// an exchange that reached the remote in part): the rename's `--copy-dest` run must not
/// write through that symlink into another directory.
#[test]
fn a_rename_onto_a_name_that_is_a_symlink_on_the_remote_stays_in_place() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "a/keep", "a\n");
    for i in 0..3 {
        write(&src, &format!("old/f{i}"), &format!("{i}\n"));
    }
    env.converged();
    std::os::unix::fs::symlink("a", env.replica().join("b")).unwrap();
    std::fs::rename(src.join("old"), src.join("b")).unwrap();
    converged_exactly(&src, env.replica(), CONVERGE);
}

/// Soak seed 1008 (fixed in af45313): a directory renamed and, in the same batch, a subdirectory of it
/// removed and made again (empty): the rename seed sent the subdirectory, then the
/// deletion run purged it (a replaced directory), and the send run skipped it as seeded.
#[test]
fn a_directory_replaced_inside_a_renamed_one_is_sent_after_its_purge() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b.common_params("-artz --bwlimit=1000"));
    let src = env.src().to_owned();
    write(&src, "old/sub/f", "1\n");
    write(&src, "old/keep", "k\n");
    env.converged();
    // One batch: the lane is busy with a file that cannot be compressed.
    std::fs::write(src.join("busy.bin"), noise(3_000_000, 9)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(src.join("old"), src.join("new")).unwrap();
    std::fs::remove_dir_all(src.join("new/sub")).unwrap();
    std::fs::create_dir(src.join("new/sub")).unwrap();
    converged_exactly(&src, env.replica(), CATCH_UP);
}

/// Seed 17 (fixed in d1ade7b): a deletion retried after its directory was moved away on
/// the remote must not create that directory again (from the deletion run's skeleton).
#[test]
fn a_retried_deletion_does_not_recreate_its_directory() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "d/x", "x\n");
    write(&src, "d/y", "y\n");
    env.converged();
    let Some(lock) = Immutable::set(&env.replica().join("d")) else {
        return;
    };
    // Refused: retried on its own 15 s later.
    std::fs::remove_file(src.join("d/x")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lock.lift();
    std::fs::rename(src.join("d"), src.join("e")).unwrap();
    converged_exactly(&src, env.replica(), CONVERGE);
    // Past the retry of d/x: nothing may bring d back.
    std::thread::sleep(Duration::from_secs(16));
    converged_exactly(&src, env.replica(), Duration::from_millis(500));
}

/// Soak seed 2046: a deletion retried after its parent directory became a file must not
/// run: its skeleton turned the file on the remote back into an empty directory.
#[test]
fn a_retried_deletion_under_a_directory_that_became_a_file_leaves_the_file() {
    retried_change_under_a_replaced_directory(|c| write(c.parent().unwrap(), "c", "now a file\n"));
}

/// Soak seed 4027: a path retried after its parent directory became a symlink (here a
/// dangling one: `link_stat` says the path is missing, not "not a directory") must not
/// run: its deletion skeleton turned the symlink on the remote back into a directory.
#[test]
fn a_retried_path_under_a_directory_that_became_a_symlink_leaves_the_symlink() {
    retried_change_under_a_replaced_directory(|c| {
        std::os::unix::fs::symlink("nowhere", c).unwrap();
    });
}

/// A deletion in `c/x` is refused by the receiver (retried on its own 15 s later); then
/// `c` is removed and `replace` puts something else at `c`. The replica must equal the
/// source, also after the retry.
fn retried_change_under_a_replaced_directory(replace: impl Fn(&Path)) {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    write(&src, "c/x/y", "y\n");
    write(&src, "c/x/z", "z\n");
    env.converged();
    let Some(lock) = Immutable::set(&env.replica().join("c/x")) else {
        return;
    };
    std::fs::remove_file(src.join("c/x/y")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lock.lift();
    std::fs::remove_dir_all(src.join("c")).unwrap();
    replace(&src.join("c"));
    converged_exactly(&src, env.replica(), CONVERGE);
    std::thread::sleep(Duration::from_secs(16));
    converged_exactly(&src, env.replica(), Duration::from_millis(500));
}

/// Seed 14 (fixed in the commit that added this test): a directory `b` moved into a
/// directory `t` that is not watched yet (its move is unpaired, so `b`'s watches are
/// dropped as gone), then `b`'s subdirectory `c` moved from there to the root. The
/// watcher paired the second move with a source it could no longer place and reported
/// nothing: `top`, and everything written in it afterwards, never reached the replica.
#[test]
fn a_directory_moved_out_of_a_directory_that_left_the_tree_is_replicated() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    let src = env.src().to_owned();
    // The watcher adds `t`'s watch a moment after `t` is made: each round races it, and
    // most rounds win.
    for round in 0..10 {
        let a = src.join(format!("a{round}"));
        std::fs::create_dir_all(a.join("b/c")).unwrap();
        env.converged();
        std::fs::create_dir(a.join("t")).unwrap();
        std::fs::rename(a.join("b"), a.join("t/x")).unwrap();
        std::fs::rename(a.join("t/x/c"), src.join(format!("top{round}"))).unwrap();
        std::fs::remove_dir_all(a.join("t")).unwrap();
        write(&src, &format!("top{round}/late"), "late\n");
        converged_exactly(&src, env.replica(), CONVERGE);
    }
}
