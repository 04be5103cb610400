//! Lag per remote and checkpoints, against a real sersyncd, rsync daemon and dbus-daemon.
//!
//! What a deploy script relies on: `sersyncctl checkpoint --wait` returns 0 only once
//! every file written before the call is on the replica, and 75 naming the remote while
//! one is behind; the lag a remote shows is the age of its oldest undelivered change.

use std::time::{Duration, Instant};

use crate::control::{ctl, on_bus, wait_status};
use crate::harness::bus::{Bus, Policy};
use crate::harness::{Env, wait_converged, write};

#[test]
fn a_checkpoint_returns_only_once_everything_written_before_it_is_on_the_replica() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // A change of a file named `sersync-test-stall` makes the watcher stall (test builds
    // only) after reporting it, as one busy crawling a large new tree would: what is
    // written meanwhile waits unread in the kernel's queue when the call comes. A
    // checkpoint that did not have the watchers report it first would be "reached"
    // with the replica short of it.
    let _daemon = env
        .start(|b| on_bus(b, &bus, "web").launcher(&["env", "SERSYNC_TEST_STALL_INOTIFY_MS=2500"]));
    write(env.src(), "first.txt", "1\n");
    env.converged();
    for round in 0..3 {
        write(env.src(), "sersync-test-stall", &format!("{round}\n"));
        let trigger = env.replica().join("sersync-test-stall");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::fs::read_to_string(&trigger).ok() != Some(format!("{round}\n")) {
            assert!(Instant::now() < deadline, "the trigger never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The watcher stalls now, the remote is idle. Creates, rewrites, a directory
        // rename and a deletion, the last write right before the call.
        for i in 0..300 {
            write(
                env.src(),
                &format!("r{round}/d{}/f{i}.txt", i % 7),
                &format!("round {round} file {i}\n"),
            );
        }
        if round > 0 {
            let before = round - 1;
            std::fs::rename(
                env.src().join(format!("r{before}/d1")),
                env.src().join(format!("r{before}/moved")),
            )
            .unwrap();
            std::fs::remove_file(env.src().join(format!("r{before}/d2/f2.txt"))).unwrap();
        }
        write(
            env.src(),
            "last.txt",
            &format!("written last in round {round}\n"),
        );
        let answer = ctl(&bus, &["checkpoint", "--wait", "--timeout", "60", "--json"])
            .expect(0)
            .json();
        assert_eq!(answer["reached"], true, "{answer}");
        // Nothing was written since the call: the replica must equal the source now,
        // without any grace period.
        wait_converged(env.src(), env.replica(), Duration::ZERO);
    }
}

#[test]
fn a_remote_that_is_down_lags_by_the_age_of_its_oldest_change_and_fails_checkpoints() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "first.txt", "1\n");
    env.converged();
    let idle = wait_status(&bus, "web", "no lag", |s| {
        s["remotes"][0]["lag_seconds"] == 0.0
    });
    assert_eq!(idle["remotes"][0]["pending"], 0, "{idle}");

    env.rsyncd.stop();
    let written = Instant::now();
    write(
        env.src(),
        "while-down.txt",
        "written while the remote is down\n",
    );

    // At once: behind, and the remote is named.
    let answer = ctl(&bus, &["checkpoint", "--json"]).expect(75).json();
    assert_eq!(answer["reached"], false, "{answer}");
    assert_eq!(answer["state"], "behind", "{answer}");
    let behind = answer["behind"].as_array().expect("a list of remotes");
    assert_eq!(behind.len(), 1, "{answer}");
    assert!(
        behind[0].as_str().is_some_and(|r| r.contains("::web")),
        "{answer}"
    );
    // Waiting gives up after the timeout, with the same answer.
    let asked = Instant::now();
    let text = ctl(&bus, &["checkpoint", "--wait", "--timeout", "2"]).expect(75);
    assert!(asked.elapsed() >= Duration::from_secs(2));
    assert!(text.stdout.contains("NOT reached"), "{}", text.stdout);
    assert!(text.stdout.contains("::web"), "{}", text.stdout);

    // Twenty seconds down: the lag is the age of the write, within a second.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(written.elapsed()));
    let low = written.elapsed().as_secs_f64();
    let status = ctl(&bus, &["status", "--json"]).expect(0).json();
    let high = written.elapsed().as_secs_f64();
    let lag = status["remotes"][0]["lag_seconds"]
        .as_f64()
        .expect("lag_seconds");
    assert!(
        lag >= low - 1.0 && lag <= high + 1.0,
        "lag {lag} s, truth between {low:.2} and {high:.2} s: {status}"
    );

    // Back: retried at once on the operator's word; the checkpoint is reached and the
    // lag is gone.
    env.rsyncd.start();
    ctl(&bus, &["retry-failed"]).expect(0);
    let answer = ctl(&bus, &["checkpoint", "--wait", "--timeout", "60", "--json"])
        .expect(0)
        .json();
    assert_eq!(answer["reached"], true, "{answer}");
    assert!(env.replica().join("while-down.txt").exists());
    wait_status(&bus, "web", "the lag back to 0", |s| {
        s["remotes"][0]["lag_seconds"] == 0.0
    });
}

#[test]
fn a_checkpoint_of_an_unknown_root_is_refused_with_its_name() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    let refused = ctl(&bus, &["checkpoint", "--root", "/not/a/root"]).expect(1);
    assert!(
        refused.stderr.contains("/not/a/root is not a watch root"),
        "{}",
        refused.stderr
    );
    let root = env.src().to_str().unwrap().to_owned();
    ctl(
        &bus,
        &["checkpoint", "--root", &root, "--wait", "--timeout", "30"],
    )
    .expect(0);
}

/// A full sync the replica guard held (here: `-r` at start-up, the sentinel missing) owes
/// the files written before the start: the lane lags and checkpoints fail. The operator
/// then forces it with `full-sync --force` while the remote is unreachable: the forced
/// run fails and waits for its retry. Nothing has reached the replica, so the lane must
/// still lag and a checkpoint must still fail.
#[test]
fn a_forced_full_sync_that_has_not_run_yet_still_owes_what_the_held_one_stood_for() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    // Written before the start: only the initial full sync carries it.
    write(
        env.src(),
        "before-start.txt",
        "only the full sync brings me\n",
    );
    let _daemon = env.start(|b| {
        on_bus(b, &bus, "web")
            .arg("-r")
            .raw_sersync_xml(r#"<deleteGuard sentinel=".mounted"/>"#)
    });
    let held = wait_status(&bus, "web", "the full sync held by the guard", |s| {
        s["remotes"][0]["state"] == "guarded"
    });
    assert!(
        held["remotes"][0]["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "a held initial full sync owes the files written before the start: {held}"
    );
    ctl(&bus, &["checkpoint", "--json"]).expect(75);
    assert!(!env.replica().join("before-start.txt").exists());

    // The operator forces it, but the remote is down: the forced run fails.
    env.rsyncd.stop();
    ctl(&bus, &["full-sync", "--force"]).expect(0);
    let failed = wait_status(&bus, "web", "the forced full sync failed", |s| {
        let state = s["remotes"][0]["state"].as_str().unwrap_or("");
        state.starts_with("backoff") || state.starts_with("failing")
    });
    assert!(!env.replica().join("before-start.txt").exists());
    assert!(
        failed["remotes"][0]["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "the replica still lacks before-start.txt, yet the lane shows no lag: {failed}"
    );
    let answer = ctl(&bus, &["checkpoint", "--json"]).json();
    assert_eq!(
        answer["reached"], false,
        "checkpoint reached while the replica lacks before-start.txt: {answer}"
    );
}

/// Reproducible builds and `cp -p`/`tar x` deploys write new contents under an old,
/// fixed modification time. A rewrite of the same size under the same mtime is a change
/// (IN_CLOSE_WRITE): once a checkpoint is reached the replica must have the new contents.
#[test]
fn a_checkpoint_reached_means_the_new_contents_even_under_a_fixed_mtime() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    // SOURCE_DATE_EPOCH-style: every build artifact has the same mtime.
    let fixed = std::time::UNIX_EPOCH + Duration::from_secs(315_532_800);
    let artifact = env.src().join("app.js");
    let deploy = |contents: &str| {
        std::fs::write(&artifact, contents).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&artifact)
            .unwrap()
            .set_modified(fixed)
            .unwrap();
    };
    deploy("version=1\n");
    ctl(&bus, &["checkpoint", "--wait", "--timeout", "30"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(env.replica().join("app.js")).unwrap(),
        "version=1\n"
    );
    // Let the path cool down (hot-file hold), then deploy version 2: same size, same mtime.
    std::thread::sleep(Duration::from_secs(1));
    deploy("version=2\n");
    ctl(&bus, &["checkpoint", "--wait", "--timeout", "30"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(env.replica().join("app.js")).unwrap(),
        "version=2\n",
        "checkpoint reached, but the replica still serves the old contents"
    );
}
