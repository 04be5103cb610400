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

both_backends! {
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
}

/// Watches the rsync processes of sersyncd `parent` (sampling /proc every millisecond)
/// until `stop`; returns the first moment two of them pushed to one module at once, as
/// their command lines, and every module it saw a run for (so that a sampler that sees
/// nothing cannot pass for one that saw no overlap).
fn watch_for_two_runs_per_module(
    parent: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Option<Vec<String>>, std::collections::BTreeSet<String>)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut by_module: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let dir = entry.path();
                let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                    continue;
                };
                // pid (comm) state ppid …: comm may hold spaces, so split after ')'.
                let Some((head, rest)) = stat.rsplit_once(") ") else {
                    continue;
                };
                let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
                // A zombie (an ended warm rsync not reaped yet) pushes nothing.
                let zombie = rest.starts_with('Z');
                if ppid != Some(parent) || !head.ends_with("(rsync") || zombie {
                    continue;
                }
                let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
                    continue;
                };
                let args: Vec<String> = cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let Some(dest) = args.iter().rev().find(|a| a.starts_with("rsync://")) else {
                    continue;
                };
                let module = dest.rsplit('/').nth(1).unwrap_or_default().to_owned();
                // A lane's warm rsync (the send run without `--timeout`) waits beside its
                // lane's runs, idle: it works only once a send run is handed to it, and no
                // other run of its lane works meanwhile. One per lane.
                let warm = !args.iter().any(|a| a.starts_with("--timeout="));
                let key = if warm {
                    format!("{module} (warm)")
                } else {
                    module
                };
                by_module.entry(key).or_default().push(args.join(" "));
            }
            seen.extend(
                by_module
                    .keys()
                    .map(|key| key.trim_end_matches(" (warm)").to_owned()),
            );
            if let Some((_, runs)) = by_module.into_iter().find(|(_, runs)| runs.len() > 1) {
                return (Some(runs), seen);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (None, seen)
    })
}

/// Reloads that change the lanes while 20,000-file batches are in flight: one inserts a
/// remote before the existing ones, one removes a remote. Every remaining remote
/// converges, the failure a module causes is recorded under that module alone, and no
/// lane ever has two rsyncs at once (the tree is one top-level directory, so no run is
/// split into concurrent ones by design; the rsync daemon's log cannot show this: a
/// session's last line is written after its client has already gone).
#[test]
fn reloads_that_insert_and_remove_remotes_mid_batch_keep_lanes_apart() {
    let Some(env) = Env::new(&["a", "b", "c"]) else {
        return;
    };
    // Module c refuses one name: exit 23 naming it, a failure of lane c only.
    env.rsyncd.set_last_module_option("exclude", "refused-*");
    let remotes = |names: &[&str]| -> String {
        let remotes: Vec<_> = names.iter().map(|m| env.rsyncd.remote(m)).collect();
        SersyncdBuilder::new()
            .root(env.src(), &remotes)
            .rsyncd(&env.rsyncd)
            .xml()
    };
    let mut daemon = SersyncdBuilder::new()
        .root(env.src(), &[env.rsyncd.remote("b"), env.rsyncd.remote("c")])
        .rsyncd(&env.rsyncd)
        .start();
    let reload = |daemon: &mut crate::harness::Sersyncd, xml: String, nth: usize| {
        daemon.write_config(&xml);
        daemon.signal(nix::sys::signal::Signal::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while daemon.log().matches("configuration reloaded").count() < nth {
            assert!(
                std::time::Instant::now() < deadline,
                "reload {nth} not done:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overlaps = watch_for_two_runs_per_module(daemon.pid().as_raw() as u32, stop.clone());
    let bulk = env.src().join("bulk");
    std::fs::create_dir(&bulk).unwrap();
    let write_many = |prefix: &str| {
        for i in 0..20_000 {
            std::fs::write(
                bulk.join(format!("{prefix}-{i:05}.txt")),
                format!("{prefix} {i}\n"),
            )
            .unwrap();
        }
    };
    write_many("first");
    std::fs::write(bulk.join("refused-1.txt"), "module c refuses this\n").unwrap();
    // The batches of lanes b and c are in flight (or queued): a comes in front of them.
    reload(&mut daemon, remotes(&["a", "b", "c"]), 1);
    write_many("second");
    // And b goes, mid-batch.
    reload(&mut daemon, remotes(&["a", "c"]), 2);
    std::fs::write(bulk.join("last.txt"), "after both reloads\n").unwrap();

    let refused = |path: &[u8]| path == b"bulk/refused-1.txt";
    let long = Duration::from_secs(120);
    crate::harness::wait_converged(env.src(), env.rsyncd.replica("a"), long);
    crate::harness::wait_converged_ignoring(env.src(), env.rsyncd.replica("c"), long, &refused);
    assert!(!env.rsyncd.replica("c").join("bulk/refused-1.txt").exists());

    // The refusal is lane c's: recorded under module c, under no other remote.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let journal = loop {
        let journal =
            sersync::failure::Journal::load(&daemon.state_dir().join("failures")).unwrap();
        if !journal.is_empty() || std::time::Instant::now() > deadline {
            break journal;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let recorded: Vec<(String, Vec<u8>)> = journal
        .iter()
        .map(|(key, path, _)| (key.remote_name.clone(), path.to_vec()))
        .collect();
    assert_eq!(
        recorded,
        vec![("c".to_owned(), b"bulk/refused-1.txt".to_vec())],
        "{}",
        daemon.log()
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (overlap, seen) = overlaps.join().unwrap();
    assert!(
        ["a", "b", "c"].iter().all(|m| seen.contains(*m)),
        "the sampler saw runs for {seen:?} only"
    );
    if let Some(runs) = overlap {
        panic!(
            "two rsyncs pushed to one module at once:\n{}\n---- sersyncd ----\n{}",
            runs.join("\n"),
            daemon.log()
        );
    }
}
