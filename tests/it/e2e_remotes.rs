//! Several remotes and several roots; a dead remote does not stall a live one.

use std::time::Duration;

use crate::harness::{
    CONVERGE, Env, RsyncDaemon, SersyncdBuilder, require_tool, temp_dir, wait_converged, write,
};

#[test]
fn two_remotes_on_one_root_both_converge() {
    let Some(env) = Env::new(&["first", "second"]) else {
        return;
    };
    let _daemon = env.start(|b| b);
    write(env.src(), "a.txt", "a\n");
    write(env.src(), "dir/b.txt", "b\n");
    wait_converged(env.src(), env.rsyncd.replica("first"), CONVERGE);
    wait_converged(env.src(), env.rsyncd.replica("second"), CONVERGE);
    std::fs::remove_file(env.src().join("a.txt")).unwrap();
    write(env.src(), "dir/c.txt", "c\n");
    wait_converged(env.src(), env.rsyncd.replica("first"), CONVERGE);
    wait_converged(env.src(), env.rsyncd.replica("second"), CONVERGE);
}

#[test]
fn a_dead_remote_does_not_stall_a_live_one_and_catches_up() {
    if !require_tool("rsync") {
        return;
    }
    // Same port (sersync has one port for all remotes), two loopback addresses.
    let (live, mut dead) = RsyncDaemon::pair(&["web"]);
    let src = temp_dir("src");
    let _daemon = SersyncdBuilder::new()
        .root(src.path(), &[live.remote("web"), dead.remote("web")])
        .rsyncd(&live)
        .start();
    write(src.path(), "before.txt", "before\n");
    wait_converged(src.path(), live.replica("web"), CONVERGE);
    wait_converged(src.path(), dead.replica("web"), CONVERGE);

    dead.stop();
    write(
        src.path(),
        "during-1.txt",
        "written while a remote is down\n",
    );
    write(src.path(), "sub/during-2.txt", "2\n");
    std::fs::remove_file(src.path().join("before.txt")).unwrap();
    wait_converged(src.path(), live.replica("web"), CONVERGE);
    // Keep it down a little longer: more changes, the live one still follows.
    write(src.path(), "during-3.txt", "3\n");
    wait_converged(src.path(), live.replica("web"), CONVERGE);

    // Back up: the daemon retries on its own (backoff), with no new change to trigger it.
    dead.start();
    wait_converged(src.path(), dead.replica("web"), Duration::from_secs(45));
    wait_converged(src.path(), live.replica("web"), CONVERGE);
}

#[test]
fn two_localpaths_each_with_its_own_remote() {
    let Some(env) = Env::new(&["one", "two"]) else {
        return;
    };
    let second = temp_dir("src2");
    let _daemon = SersyncdBuilder::new()
        .root(env.src(), &[env.rsyncd.remote("one")])
        .root(second.path(), &[env.rsyncd.remote("two")])
        .rsyncd(&env.rsyncd)
        .start();
    write(env.src(), "in-one.txt", "1\n");
    write(env.src(), "d/deeper-one.txt", "1\n");
    write(second.path(), "in-two.txt", "2\n");
    write(second.path(), "d/deeper-two.txt", "2\n");
    wait_converged(env.src(), env.rsyncd.replica("one"), CONVERGE);
    wait_converged(second.path(), env.rsyncd.replica("two"), CONVERGE);
}
