//! One root, one remote: every basic kind of change reaches the replica.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::{Env, wait_converged, write};

both_backends! {
    fn create_file() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "hello.txt", "hello\n");
        env.converged();
        assert_eq!(
            fs::read(env.replica().join("hello.txt")).unwrap(),
            b"hello\n"
        );
    }
}

both_backends! {
    fn sigterm_exits_zero() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let mut daemon = env.start(|b| b);
        write(env.src(), "a.txt", "a\n");
        env.converged();
        let status = daemon.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "sersyncd exited with {status} on SIGTERM"
        );
    }
}

both_backends! {
    fn modify_by_overwrite() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "f.txt", "version one\n");
        env.converged();
        write(env.src(), "f.txt", "version two, longer than the first\n");
        env.converged();
        // Same size, different bytes: rsync's quick check must not skip it.
        write(env.src(), "f.txt", "VERSION TWO, LONGER THAN THE FIRST\n");
        env.converged();
    }
}

both_backends! {
    fn append() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "log.txt", "line 1\n");
        env.converged();
        for i in 2..=4 {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(env.src().join("log.txt"))
                .unwrap();
            writeln!(f, "line {i}").unwrap();
        }
        env.converged();
        assert_eq!(
            fs::read_to_string(env.replica().join("log.txt")).unwrap(),
            "line 1\nline 2\nline 3\nline 4\n"
        );
    }
}

both_backends! {
    fn chmod_with_attrib_events() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b.attrib(true));
        write(env.src(), "script.sh", "#!/bin/sh\n");
        write(env.src(), "dir/inner.txt", "x\n");
        fs::set_permissions(
            env.src().join("script.sh"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::set_permissions(env.src().join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
        env.converged();
        fs::set_permissions(
            env.src().join("script.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        fs::set_permissions(env.src().join("dir"), fs::Permissions::from_mode(0o711)).unwrap();
        env.converged();
        let mode = fs::metadata(env.replica().join("script.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750);
    }
}

both_backends! {
    fn delete_file() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "doomed.txt", "bye\n");
        write(env.src(), "kept.txt", "stay\n");
        env.converged();
        fs::remove_file(env.src().join("doomed.txt")).unwrap();
        env.converged();
        assert!(env.replica().join("kept.txt").exists());
    }
}

both_backends! {
    fn delete_non_empty_directory_tree() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        for path in [
            "tree/a.txt",
            "tree/b.txt",
            "tree/l2/c.txt",
            "tree/l2/d.txt",
            "tree/l2/l3/e.txt",
            "tree/l2/l3/f.txt",
            "tree/other/g.txt",
            "sibling.txt",
        ] {
            write(env.src(), path, path);
        }
        env.converged();
        fs::remove_dir_all(env.src().join("tree")).unwrap();
        env.converged();
        assert!(!env.replica().join("tree").exists());
    }
}

both_backends! {
    fn rename_file() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "old-name.txt", "contents\n");
        env.converged();
        fs::rename(
            env.src().join("old-name.txt"),
            env.src().join("new-name.txt"),
        )
        .unwrap();
        env.converged();
    }
}

both_backends! {
    fn rename_directory_and_keep_watching_it() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "before/one.txt", "1\n");
        write(env.src(), "before/sub/two.txt", "2\n");
        env.converged();
        fs::rename(env.src().join("before"), env.src().join("after")).unwrap();
        env.converged();
        // The watches moved with the directory: changes inside the new name still replicate.
        write(
            env.src(),
            "after/sub/two.txt",
            "2, changed after the rename\n",
        );
        write(env.src(), "after/three.txt", "3\n");
        env.converged();
    }
}

both_backends! {
    fn mkdir_p_then_write_immediately() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        for i in 0..25 {
            let dir = env.src().join(format!("d{i}/b/c"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("f"), format!("x{i}\n")).unwrap();
            fs::write(env.src().join(format!("d{i}/b/g")), format!("y{i}\n")).unwrap();
        }
        env.converged();
    }
}

both_backends! {
    fn burst_of_two_thousand_files() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        for d in 0..20 {
            let dir = env.src().join(format!("dir{d:02}"));
            fs::create_dir(&dir).unwrap();
            for f in 0..100 {
                fs::write(dir.join(format!("file{f:03}.txt")), format!("{d}/{f}\n")).unwrap();
            }
        }
        wait_converged(env.src(), env.replica(), Duration::from_secs(60));
    }
}

#[test]
fn initial_full_sync_with_r() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    for path in ["top.txt", "a/b.txt", "a/deep/c.txt", "empty-dir/"] {
        if let Some(dir) = path.strip_suffix('/') {
            fs::create_dir_all(env.src().join(dir)).unwrap();
        } else {
            write(env.src(), path, path);
        }
    }
    write(env.replica(), "stale.txt", "only on the replica\n");
    write(env.replica(), "stale-dir/x.txt", "only on the replica\n");
    // Older than the source's version (the stock params carry -u, which keeps newer
    // files on the receiver).
    write(
        env.replica(),
        "a/b.txt",
        "an outdated version on the replica\n",
    );
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(env.replica().join("a/b.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let _daemon = env.start(|b| b.arg("-r"));
    env.converged();
    assert!(!env.replica().join("stale.txt").exists());
}

both_backends! {
    fn symlink_is_replicated_as_a_symlink() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        write(env.src(), "target.txt", "target\n");
        fs::create_dir(env.src().join("dir")).unwrap();
        std::os::unix::fs::symlink("target.txt", env.src().join("link")).unwrap();
        std::os::unix::fs::symlink("does/not/exist", env.src().join("dangling")).unwrap();
        std::os::unix::fs::symlink("../target.txt", env.src().join("dir/up")).unwrap();
        env.converged();
        let link = env.replica().join("link");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap().to_str(), Some("target.txt"));
    }
}

both_backends! {
    /// A renamed directory is rebuilt on the remote from its old copy; where that copy
    /// differs from the source (changed or extra files behind the daemon's back), the
    /// result is still exactly the source.
    fn rename_directory_whose_remote_copy_differs() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        for i in 0..50 {
            write(
                env.src(),
                &format!("old/f{i}.txt"),
                &format!("source {i}\n"),
            );
        }
        write(env.src(), "old/sub/deep.txt", "deep\n");
        // The replica's copy: same names, some contents differ, one extra file.
        for i in 0..50 {
            let text = if i % 5 == 0 {
                format!("STALE REMOTE CONTENT {i}\n")
            } else {
                format!("source {i}\n")
            };
            write(env.replica(), &format!("old/f{i}.txt"), &text);
        }
        write(env.replica(), "old/remote-only.txt", "extra\n");
        // Older than the source, or `-u` (in the stock -artuz) rightly keeps the replica's.
        age(&env.replica().join("old"));
        let _daemon = env.start(|b| b.arg("-r"));
        env.converged();
        // Now make the replica's copy differ again, then rename on the source.
        write(env.replica(), "old/f1.txt", "DIFFERENT SIZE AND CONTENT\n");
        age(&env.replica().join("old/f1.txt"));
        fs::rename(env.src().join("old"), env.src().join("new")).unwrap();
        env.converged();
        assert_eq!(
            fs::read_to_string(env.replica().join("new/f1.txt")).unwrap(),
            "source 1\n"
        );
        assert!(!env.replica().join("old").exists());
    }
}

/// Sets the mtime of `path` (and of everything below it) to an hour ago.
fn age(path: &std::path::Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            age(&entry.unwrap().path());
        }
    } else {
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(old).unwrap();
    }
}

both_backends! {
    /// Lists longer than the command line holds (rsync gets them on stdin instead of as
    /// arguments): a renamed directory of 5,200 files with 220-byte names is more than 1 MiB
    /// of paths for its `--copy-dest` seed run, whatever `ARG_MAX` is.
    fn rename_directory_with_a_path_list_longer_than_the_command_line() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let long = "n".repeat(212);
        for i in 0..5200 {
            write(
                env.src(),
                &format!("old/{long}{i:05}"),
                &format!("file {i}\n"),
            );
        }
        let _daemon = env.start(|b| b.arg("-r"));
        env.converged();
        fs::rename(env.src().join("old"), env.src().join("new")).unwrap();
        env.converged();
        assert!(!env.replica().join("old").exists());
        assert_eq!(
            fs::read_to_string(env.replica().join(format!("new/{long}05199"))).unwrap(),
            "file 5199\n"
        );
        // A burst of the same size while running: batches take whichever route fits.
        for i in 0..5200 {
            write(
                env.src(),
                &format!("burst/{long}{i:05}"),
                &format!("burst {i}\n"),
            );
        }
        env.converged();
    }
}

/// A mass delete is split into concurrent runs over disjoint subtrees: each deletes
/// exactly its own paths, so remote-only files in the same directories survive.
#[test]
fn mass_delete_in_concurrent_runs_deletes_exactly_the_deleted_paths() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // Every file of the tree goes: the replica guard would hold most of it by design.
    let _daemon = env.start(|b| b.raw_sersync_xml(r#"<deleteGuard share="0"/>"#));
    for d in 0..20 {
        for f in 0..100 {
            write(
                env.src(),
                &format!("d{d:02}/f{f:03}"),
                &format!("{d}/{f}\n"),
            );
        }
    }
    write(env.src(), "d19/-x *?[ $(id)", "hostile\n");
    env.converged();
    for d in 0..20 {
        write(env.replica(), &format!("d{d:02}/remote-only"), "keep\n");
    }
    for d in 0..20 {
        for f in 0..100 {
            fs::remove_file(env.src().join(format!("d{d:02}/f{f:03}"))).unwrap();
        }
    }
    fs::remove_file(env.src().join("d19/-x *?[ $(id)")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let left = || {
        (0..20)
            .map(|d| {
                fs::read_dir(env.replica().join(format!("d{d:02}")))
                    .unwrap()
                    .count()
            })
            .sum::<usize>()
    };
    while left() > 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} entries left on the replica",
            left()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for d in 0..20 {
        assert_eq!(
            fs::read_to_string(env.replica().join(format!("d{d:02}/remote-only"))).unwrap(),
            "keep\n"
        );
    }
}

/// Full syncs and big deletions run several rsyncs at once; a module that allows one
/// connection at a time (`max connections = 1`) still gets everything, one run at a time.
#[test]
fn one_connection_per_module_still_gets_split_full_syncs_and_mass_deletes() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    for d in 0..6 {
        for f in 0..200 {
            write(
                env.src(),
                &format!("top{d}/sub/f{f:03}"),
                &format!("{d}/{f}\n"),
            );
        }
    }
    write(env.src(), "file-at-the-root", "root\n");
    write(env.replica(), "remote-only-dir/x", "stale\n");
    write(env.replica(), "top0/sub/remote-only", "stale\n");
    env.rsyncd.set_last_module_option("max connections", "1");
    env.rsyncd.set_last_module_option(
        "lock file",
        &env.rsyncd.dir().join("rsyncd.lock").display().to_string(),
    );
    // -n 4: the full sync and the deletions may be split into several runs.
    // The mass delete below removes the whole tree: not held (the guard has its own tests).
    let daemon = env.start(|b| {
        b.arg("-r")
            .arg("-n")
            .arg("4")
            .raw_sersync_xml(r#"<deleteGuard share="0"/>"#)
    });
    env.converged();
    // With two cores or more the full sync was split, refused, and redone as one run.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        daemon.log().contains("refused concurrent connections"),
        cores >= 2,
        "{cores} cores; log:\n{}",
        daemon.log()
    );
    for d in 0..6 {
        for f in 0..200 {
            fs::remove_file(env.src().join(format!("top{d}/sub/f{f:03}"))).unwrap();
        }
    }
    env.converged();
}
