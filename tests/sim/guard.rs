//! The replica guard (issue #14): a root whose filesystem is not mounted, or that is empty
//! while its remote is not, never empties a replica, and replication resumes by itself
//! once the filesystem is back. Real bind mounts, a real rsync daemon, a real bus.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::bus::{Bus, Policy};
use crate::harness::{Env, SersyncdBuilder, temp_dir, write};
use crate::regressions::{converged_exactly, ctl, on_bus, wait_for};

const CATCH_UP: Duration = Duration::from_secs(45);

/// `mount --bind FROM TO` for the length of the test (lazily unmounted at the end).
struct BindMount {
    from: PathBuf,
    at: PathBuf,
    mounted: bool,
}

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        let mut mount = BindMount {
            from: from.to_owned(),
            at: at.to_owned(),
            mounted: false,
        };
        mount.mount();
        mount
    }

    fn mount(&mut self) {
        mount_cmd(&[
            OsStr::new("--bind"),
            self.from.as_os_str(),
            self.at.as_os_str(),
        ]);
        self.mounted = true;
    }

    /// `umount -l`: what a failed or lazily undone mount leaves, the bare directory.
    fn lazy_unmount(&mut self) {
        let status = Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status()
            .expect("run umount");
        assert!(status.success(), "umount -l {}", self.at.display());
        self.mounted = false;
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn mount_cmd(args: &[&OsStr]) {
    let status = Command::new("mount")
        .args(args)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount {args:?}");
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

fn status_json(bus: &Bus) -> String {
    let (_, out, _) = ctl(bus, &["status", "--json"]);
    out
}

#[test]
fn an_unmounted_root_never_empties_the_replica_and_replication_resumes_once_it_is_back() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let base = temp_dir("guard");
    let data = base.path().join("data");
    let root = base.path().join("www");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&root).unwrap();
    for i in 0..20 {
        write(&data, &format!("page{i}.html"), &format!("page {i}\n"));
    }
    let mut mount = BindMount::new(&data, &root);
    let builder = SersyncdBuilder::new()
        .root(&root, &[env.rsyncd.remote("web")])
        .rsyncd(&env.rsyncd)
        .arg("-r");
    let mut daemon = on_bus(builder, &bus).start();
    let replica = env.rsyncd.replica("web").to_owned();
    converged_exactly(&root, &replica, CATCH_UP);
    wait_for("the root's filesystem to be recorded", CATCH_UP, || {
        daemon.state_dir().join("roots").exists()
    });

    // Unmounted under the running daemon: the root is the bare directory now.
    mount.lazy_unmount();
    assert_eq!(entries(&root), 0);
    wait_for("the lane to show as guarded", CATCH_UP, || {
        status_json(&bus).contains("guarded")
    });
    let (code, failures, _) = ctl(&bus, &["failures"]);
    assert_eq!(code, 0);
    assert!(
        failures.contains("replica guard") && failures.contains(&*root.to_string_lossy()),
        "sersyncctl failures does not name the root and the guard:\n{failures}"
    );
    // Live changes keep flowing (nothing here is a deletion).
    write(
        &root,
        "written-while-unmounted.txt",
        "on the bare directory\n",
    );
    wait_for("a live change to be sent while guarded", CATCH_UP, || {
        replica.join("written-while-unmounted.txt").exists()
    });
    assert_eq!(
        entries(&replica),
        21,
        "the replica lost files while guarded"
    );
    // The operator's (or the timer's) full sync is held the same way, and says so.
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--wait", "--timeout", "30"]);
    assert_eq!(
        code, 1,
        "a held full sync must not report success: {out}{stderr}"
    );
    assert_eq!(
        entries(&replica),
        21,
        "sersyncctl full-sync emptied the replica"
    );

    // Mounted again, with a change made meanwhile: replication resumes by itself.
    std::fs::remove_file(root.join("written-while-unmounted.txt")).unwrap();
    write(&data, "added-meanwhile.txt", "added\n");
    mount.mount();
    wait_for(
        "the change made while unmounted to arrive",
        CATCH_UP,
        || replica.join("added-meanwhile.txt").exists(),
    );
    write(&root, "after-remount.txt", "watched again\n");
    converged_exactly(&root, &replica, CATCH_UP);
    wait_for("the guarded state to clear", CATCH_UP, || {
        !status_json(&bus).contains("guarded")
    });

    // Stopped, unmounted, started with -r (a failed mount at boot): held again.
    daemon.terminate();
    mount.lazy_unmount();
    let address = bus.address().to_owned();
    daemon.restart_with(&["--bus-address", &address, "--instance", "web", "-r"]);
    wait_for("the lane to show as guarded after -r", CATCH_UP, || {
        status_json(&bus).contains("guarded")
    });
    assert_eq!(
        entries(&replica),
        22,
        "the -r full sync emptied the replica"
    );
    let log = daemon.log();
    assert!(
        log.contains("as when it was first watched") && log.contains("held back"),
        "the log does not say why the full sync was held back"
    );

    // An intended wipe goes through when forced.
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{stderr}");
    converged_exactly(&root, &replica, CATCH_UP);
    assert_eq!(entries(&replica), 0);
}

#[test]
fn an_empty_root_with_nothing_recorded_does_not_empty_a_full_replica() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    for i in 0..5 {
        write(env.replica(), &format!("kept{i}.txt"), "kept\n");
    }
    let daemon = env.start(|b| on_bus(b.arg("-r"), &bus));
    wait_for("the lane to show as guarded", CATCH_UP, || {
        status_json(&bus).contains("guarded")
    });
    assert!(
        daemon
            .log()
            .contains("the root is empty while the remote is not"),
        "the log does not say why the full sync was held back"
    );
    assert_eq!(entries(env.replica()), 5, "the replica lost files");
    // Live changes keep flowing meanwhile. (Once the root is not empty any more, the
    // held full sync runs at its next try and makes the replica equal the root.)
    write(env.src(), "new.txt", "new\n");
    wait_for("a live change to be sent while guarded", CATCH_UP, || {
        env.replica().join("new.txt").exists()
    });
    converged_exactly(env.src(), env.replica(), CATCH_UP);
}

/// 300 files in `d0`..`d2`, a daemon started with `-r` and `<deleteGuard share="50"
/// minimum="10">` on `bus`, and the replica equal to them.
fn three_dirs_replicated_under_a_low_minimum(env: &Env, bus: &Bus) -> crate::harness::Sersyncd {
    for d in 0..3 {
        for i in 0..100 {
            write(env.src(), &format!("d{d}/f{i}.txt"), &format!("{d} {i}\n"));
        }
    }
    let daemon = env.start(|b| {
        on_bus(
            b.raw_sersync_xml(r#"<deleteGuard share="50" minimum="10"/>"#)
                .arg("-r"),
            bus,
        )
    });
    converged_exactly(env.src(), env.replica(), CATCH_UP);
    daemon
}

#[test]
fn a_mass_deletion_is_held_until_released_while_a_small_one_goes_through() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let src = env.src().to_owned();
    let replica = env.replica().to_owned();
    let mut daemon = three_dirs_replicated_under_a_low_minimum(&env, &bus);

    // 10 % of the tree: delivered.
    for i in 0..30 {
        std::fs::remove_file(src.join(format!("d0/f{i}.txt"))).unwrap();
    }
    converged_exactly(&src, &replica, CATCH_UP);
    assert!(!status_json(&bus).contains("guarded"));

    // Then two thirds of what is left, within the same minute: held once more than half
    // the tree would be gone.
    std::fs::remove_dir_all(src.join("d1")).unwrap();
    std::fs::remove_dir_all(src.join("d2")).unwrap();
    wait_for("the lane to show as guarded", CATCH_UP, || {
        status_json(&bus).contains("guarded")
    });
    std::thread::sleep(Duration::from_secs(2));
    let left = entries(&replica.join("d1")) + entries(&replica.join("d2"));
    assert!(left > 0, "every deletion went through");
    let (_, failures, _) = ctl(&bus, &["failures"]);
    assert!(
        failures.contains("deletions within"),
        "sersyncctl failures does not say why:\n{failures}"
    );
    assert!(daemon.log().contains("would remove more than 50%"));
    // New files still go.
    write(&src, "d0/new.txt", "new\n");
    wait_for(
        "a new file to be sent while deletions are held",
        CATCH_UP,
        || replica.join("d0/new.txt").exists(),
    );
    // A restart keeps holding them.
    daemon.terminate();
    let address = bus.address().to_owned();
    daemon.restart_with(&["--bus-address", &address, "--instance", "web"]);
    wait_for(
        "the lane to show as guarded after a restart",
        CATCH_UP,
        || status_json(&bus).contains("guarded"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        entries(&replica.join("d1")) + entries(&replica.join("d2")),
        left,
        "a restart released the held deletions"
    );

    // Released by the operator.
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{stderr}");
    converged_exactly(&src, &replica, CATCH_UP);
}

/// #14.2 for full syncs: deletions made while the daemon was stopped are counted by a dry
/// run of the full sync that `-r` starts with: 10 % of the tree goes through, two thirds
/// of it are held (the replica keeps them, across `sersyncctl full-sync`), until forced.
#[test]
fn a_full_sync_that_would_delete_most_of_the_replica_is_held_until_released() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let src = env.src().to_owned();
    let replica = env.replica().to_owned();
    let mut daemon = three_dirs_replicated_under_a_low_minimum(&env, &bus);
    let address = bus.address().to_owned();
    let restart_args = ["-r", "--bus-address", &address, "--instance", "web"];

    // Stopped, 10 % deleted, started with -r: delivered.
    daemon.terminate();
    for i in 0..30 {
        std::fs::remove_file(src.join(format!("d0/f{i}.txt"))).unwrap();
    }
    daemon.restart_with(&restart_args);
    converged_exactly(&src, &replica, CATCH_UP);
    assert!(!status_json(&bus).contains("guarded"));

    // Stopped, two thirds deleted, started with -r: the full sync is held.
    daemon.terminate();
    std::fs::remove_dir_all(src.join("d1")).unwrap();
    std::fs::remove_dir_all(src.join("d2")).unwrap();
    daemon.restart_with(&restart_args);
    wait_for("the lane to show as guarded", CATCH_UP, || {
        status_json(&bus).contains("guarded")
    });
    assert_eq!(
        entries(&replica.join("d1")) + entries(&replica.join("d2")),
        200,
        "the full sync deleted on the replica"
    );
    let (_, failures, _) = ctl(&bus, &["failures"]);
    assert!(
        failures.contains("a full sync would delete 202 of the remote's"),
        "sersyncctl failures does not say why:\n{failures}"
    );
    // New files still go; an ordinary full sync is held too.
    write(&src, "d0/new.txt", "new\n");
    wait_for(
        "a new file to be sent while the full sync is held",
        CATCH_UP,
        || replica.join("d0/new.txt").exists(),
    );
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--wait"]);
    assert_eq!(
        code, 1,
        "an ordinary full sync was not held:\n{out}{stderr}"
    );
    assert_eq!(
        entries(&replica.join("d1")) + entries(&replica.join("d2")),
        200,
        "sersyncctl full-sync deleted on the replica"
    );

    // Released by the operator.
    let (code, out, stderr) = ctl(&bus, &["full-sync", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{stderr}");
    converged_exactly(&src, &replica, CATCH_UP);
    assert!(daemon.log().contains("a full sync would delete"));
}

/// `<softDelete>` (#14.3): what a deletion, an overwrite or a full sync's `--delete`
/// removes from a remote is kept there in `DIR/YYYY-MM-DD`; that directory is neither
/// replicated nor deleted by full syncs; dated directories older than `keepDays` are
/// pruned, and only those.
#[test]
fn soft_deleted_files_are_recoverable_on_the_remote_and_pruned_when_expired() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let src = env.src().to_owned();
    let replica = env.replica().to_owned();
    let trash = replica.join(".sersync-trash");
    let today = sersync::sync::argv::utc_date(std::time::SystemTime::now());
    write(&trash, "2020-01-01/expired.txt", "old\n");
    write(&trash, &format!("{today}/recent.txt"), "recent\n");
    write(&replica, "remote-only.txt", "deleted by the full sync\n");
    write(&src, "a.txt", "version 1\n");
    write(&src, "d/gone.txt", "to be deleted\n");
    let ignore_trash = |path: &[u8]| path.starts_with(b".sersync-trash");
    let _daemon = env.start(|b| {
        b.arg("-r")
            .raw_sersync_xml(r#"<softDelete start="true" keepDays="30"/>"#)
    });
    crate::harness::wait_converged_ignoring(&src, &replica, CATCH_UP, &ignore_trash);
    wait_for("the expired dated directory to be pruned", CATCH_UP, || {
        !trash.join("2020-01-01").exists()
    });
    assert_eq!(
        std::fs::read_to_string(trash.join(&today).join("recent.txt")).unwrap(),
        "recent\n",
        "a dated directory within keepDays was pruned"
    );
    let kept = trash.join(&today);
    assert_eq!(
        std::fs::read_to_string(kept.join("remote-only.txt")).unwrap(),
        "deleted by the full sync\n"
    );

    // A live deletion and an overwrite.
    std::fs::remove_file(src.join("d/gone.txt")).unwrap();
    write(&src, "a.txt", "version 2, longer\n");
    crate::harness::wait_converged_ignoring(&src, &replica, CATCH_UP, &ignore_trash);
    wait_for("the deleted file to be kept", CATCH_UP, || {
        kept.join("d/gone.txt").exists()
    });
    assert_eq!(
        std::fs::read_to_string(kept.join("d/gone.txt")).unwrap(),
        "to be deleted\n"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("a.txt")).unwrap(),
        "version 1\n",
        "the overwritten version is kept"
    );
    assert!(
        !src.join(".sersync-trash").exists(),
        "the soft-delete directory came back to the source"
    );
}
