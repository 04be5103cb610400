//! A panic is a bug; what one does is a choice (src/panics.rs), shown here by injecting one
//! (`SERSYNC_TEST_PANIC`, compiled into test builds only) at each kind of place: contained
//! in an rsync job thread (the job fails and is retried), an inotify reader that dies stops
//! the daemon for systemd to restart, a panic in the event loop aborts the process. In
//! every case the replica ends equal to the source, changes made while no one watched
//! included.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::harness::{CONVERGE, Env, SersyncdBuilder, tail, temp_dir, wait_converged, write};

const TRIGGER: &str = "sersync-test-panic";

fn log_since(log: &str, from: usize) -> &str {
    log.get(from..).unwrap_or_default()
}

#[test]
fn a_panicking_job_thread_fails_its_job_which_is_retried_while_the_daemon_goes_on() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.launcher(&["env", "SERSYNC_TEST_PANIC=job"]));
    write(env.src(), "before.txt", "before\n");
    env.converged();
    write(env.src(), TRIGGER, "the job that carries this panics\n");
    write(env.src(), "with-it.txt", "in the same batch, probably\n");
    env.converged();
    write(env.src(), "after.txt", "after\n");
    env.converged();
    assert!(daemon.is_running(), "the daemon went on");
    let log = daemon.log();
    assert!(
        log.contains("injected by SERSYNC_TEST_PANIC=job")
            && log.contains("an rsync job thread panicked"),
        "the panic is not in the log:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn a_dead_inotify_reader_stops_the_daemon_and_the_next_start_delivers_what_no_one_saw() {
    let Some(env) = Env::new(&["web", "other"]) else {
        return;
    };
    let other_src = temp_dir("src-other");
    let (web, other) = (env.rsyncd.remote("web"), env.rsyncd.remote("other"));
    let mut daemon = SersyncdBuilder::new()
        .root(env.src(), &[web])
        .root(other_src.path(), &[other])
        .rsyncd(&env.rsyncd)
        .launcher(&["env", "SERSYNC_TEST_PANIC=inotify"])
        .start();
    let other_replica = env.rsyncd.replica("other").to_owned();
    write(env.src(), "before.txt", "before\n");
    write(other_src.path(), "before.txt", "before\n");
    env.converged();
    wait_converged(other_src.path(), &other_replica, CONVERGE);
    // The first root's reader dies on the trigger's event: it, and whatever came with it,
    // is never reported.
    write(env.src(), TRIGGER, "the reader that sees this panics\n");
    write(env.src(), "unseen.txt", "after the reader died\n");
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(70), "exit status {status}");
    // Nothing watches either root until systemd restarts the daemon.
    write(
        env.src(),
        "while-down.txt",
        "while systemd waits to restart it\n",
    );
    write(
        other_src.path(),
        "while-down.txt",
        "the other root, meanwhile\n",
    );
    let before = daemon.log().len();
    daemon.restart();
    env.converged();
    wait_converged(other_src.path(), &other_replica, CONVERGE);
    let log = daemon.log();
    assert!(
        log.contains("an inotify reader stopped: it panicked")
            && log.contains("the next start does a full sync of every root"),
        "the stop is not explained:\n{}",
        tail(&log, 40)
    );
    assert!(
        log_since(&log, before).contains("full sync started"),
        "the restart did not resync:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn a_panic_in_the_event_loop_aborts_and_the_next_start_delivers_what_was_queued() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.launcher(&["env", "SERSYNC_TEST_PANIC=loop"]));
    write(env.src(), "before.txt", "before\n");
    env.converged();
    write(env.src(), TRIGGER, "the loop that handles this panics\n");
    write(env.src(), "queued.txt", "queued when the loop died\n");
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "aborted, not unwound: {status}"
    );
    assert!(
        daemon.state_dir().join("running").exists(),
        "an abort leaves the running marker"
    );
    let log = daemon.log();
    assert!(
        log.contains("a bug: panicked") && log.contains("aborting so that systemd restarts"),
        "the abort is not explained:\n{}",
        tail(&log, 30)
    );
    write(
        env.src(),
        "while-down.txt",
        "while systemd waits to restart it\n",
    );
    daemon.restart();
    env.converged();
}
