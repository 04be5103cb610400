//! What another local user controls cannot steer what sersyncd sends or where it writes:
//! rsync runs with the tree owner's credentials, and the state directory is root's alone.
//!
//! These tests need root (CI runs as root): they create users and hand them parts of the
//! tree.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::users::TestUser;
use crate::harness::{CONVERGE, Env, sersyncd_binary, temp_dir, wait_converged_ignoring};

const BAIT: &[u8] = b"TOP-SECRET-BAIT root-only key material\n";

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {path:?}: {e}"));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// Swaps the two names atomically (`renameat2(RENAME_EXCHANGE)`): a directory and a
/// symlink trade places with no moment where either name is missing.
fn exchange(a: &Path, b: &Path) {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths; no memory is kept.
    let done = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(done, 0, "renameat2: {}", std::io::Error::last_os_error());
}

/// Every regular file below `root` whose contents hold the bait.
fn baited(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && std::fs::read(entry.path())
                    .is_ok_and(|bytes| bytes.windows(BAIT.len()).any(|window| window == BAIT))
            {
                found.push(entry.path());
            }
        }
    }
    found
}

/// The tree belongs to one user; another owns `uploads/` in it and, while their changes
/// are replicated, keeps swapping their directories for symlinks to private places of
/// root's (a directory only root may enter, and a file only root may read) and back. The
/// swaps are done here, as root, but they are exactly what the owner of `uploads/` may do
/// there. rsync runs as the tree's owner, so the kernel refuses the private files; no
/// byte of them may ever reach the replica, and once the swapping stops the replica
/// equals the source.
#[test]
fn swapping_directories_for_symlinks_never_publishes_what_the_tree_owner_cannot_read() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let (Some(owner), Some(intruder)) = (TestUser::create(&[]), TestUser::create(&[])) else {
        return;
    };
    // Root's private places, outside the tree.
    let private = temp_dir("private");
    let closed_dir = private.path().join("closed");
    let closed_file_dir = private.path().join("open");
    for dir in [&closed_dir, &closed_file_dir] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("key.pem"), BAIT).unwrap();
    }
    chmod(&closed_dir, 0o700);
    chmod(&closed_dir.join("key.pem"), 0o644);
    chmod(&closed_file_dir, 0o755);
    chmod(&closed_file_dir.join("key.pem"), 0o600);
    chmod(private.path(), 0o755);

    let src = env.src();
    chmod(src, 0o755);
    chown(src, owner.ids());
    std::fs::write(src.join("index.html"), "owner's page\n").unwrap();
    chown(&src.join("index.html"), owner.ids());
    let uploads = src.join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    chown(&uploads, intruder.ids());
    const PAIRS: usize = 6;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let dir = uploads.join(format!("d{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("key.pem"), format!("intruder's own {i}\n")).unwrap();
        chown(&dir, intruder.ids());
        chown(&dir.join("key.pem"), intruder.ids());
        let link = uploads.join(format!("l{i}"));
        let target = if i % 2 == 0 {
            &closed_dir
        } else {
            &closed_file_dir
        };
        std::os::unix::fs::symlink(target, &link).unwrap();
        chown(&link, intruder.ids());
        pairs.push((dir, link));
    }

    // The rsync daemon (use chroot = no) rewrites symlinks that point out of the module;
    // what they point at is not what this test is about.
    let links = |path: &[u8]| path.starts_with(b"uploads/l");
    let daemon = env.start(|b| b.arg("-r"));
    wait_converged_ignoring(src, env.replica(), CONVERGE, &links);
    assert!(baited(env.replica()).is_empty());

    // Watch the replica the whole time: a leaked copy could be replaced later.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let replica = env.replica().to_path_buf();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) && seen.is_empty() {
                seen = baited(&replica);
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut round = 0u64;
    while Instant::now() < deadline {
        for (i, (dir, link)) in pairs.iter().enumerate() {
            // A change below the directory, then the directory becomes the symlink (and
            // back, at changing moments): the change's path now leads into root's place.
            let file = dir.join("key.pem");
            std::fs::write(&file, format!("intruder's own {i} round {round}\n")).unwrap();
            exchange(dir, link);
            std::thread::sleep(Duration::from_millis((round + i as u64) % 7));
            exchange(dir, link);
        }
        round += 1;
    }
    // The swaps end with every directory in place; a last quiet change each.
    for (dir, _) in &pairs {
        std::fs::write(dir.join("key.pem"), "settled\n").unwrap();
    }
    wait_converged_ignoring(src, env.replica(), CONVERGE * 2, &links);
    stop.store(true, Ordering::Relaxed);
    let leaked = watcher.join().unwrap();
    assert!(
        leaked.is_empty(),
        "root-only content reached the replica at {leaked:?} ({round} rounds)"
    );
    assert!(baited(env.replica()).is_empty());
    // The runs were the owner's: rsync's files on the remote side are not the point, the
    // log says who ran them.
    drop(daemon);
}

/// Starts sersyncd on `state_dir` with a valid config and waits for it to exit (it must,
/// quickly): returns its exit code and what it wrote.
fn start_on_state_dir(env: &Env, state_dir: &Path) -> (Option<i32>, String) {
    let dir = temp_dir("conf");
    let conf = dir.path().join("confxml.xml");
    std::fs::write(&conf, env.builder().xml()).unwrap();
    let mut child = Command::new(sersyncd_binary())
        .arg("-o")
        .arg(&conf)
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sersyncd");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return (status.code(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sersyncd accepted the state directory {state_dir:?} and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A state directory another user owns, or below a directory others may write, is
/// refused at start-up with exit 73 and a message naming the path, its owner and mode.
#[test]
fn a_state_directory_another_user_could_change_is_refused_with_exit_73() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let Some(user) = TestUser::create(&[]) else {
        return;
    };
    let scratch = temp_dir("statedirs");
    chmod(scratch.path(), 0o755);

    let theirs = scratch.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    chown(&theirs, user.ids());
    let (code, text) = start_on_state_dir(&env, &theirs);
    assert_eq!(code, Some(73), "{text}");
    assert!(
        text.contains(&format!(
            "{} (owner uid {} ({})",
            theirs.display(),
            user.ids().0,
            user.name
        )) && text.contains("mode 0700")
            && text.contains("owned by another user"),
        "{text}"
    );

    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let below = shared.join("state");
    let (code, text) = start_on_state_dir(&env, &below);
    assert_eq!(code, Some(73), "{text}");
    assert!(
        text.contains(&format!("{} (owner uid 0", shared.display()))
            && text.contains("mode 0777")
            && text.contains("writable by every user"),
        "{text}"
    );

    // A symlink on the way that another user owns could be pointed elsewhere later.
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(scratch.path(), &link).unwrap();
    chown(&link, user.ids());
    let (code, text) = start_on_state_dir(&env, &link.join("state"));
    assert_eq!(code, Some(73), "{text}");
    assert!(
        text.contains("is a symlink owned by another user"),
        "{text}"
    );
}

/// A saved change whose path leads out of its root (`../`) is not followed: the start
/// says so in the log, owes the root a full sync instead, and nothing from outside the
/// tree reaches the replica.
#[test]
fn a_saved_change_that_leads_out_of_its_root_is_refused_with_a_log_line() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let outside = temp_dir("outside");
    std::fs::write(outside.path().join("escaped.txt"), BAIT).unwrap();
    let mut daemon = env.start(|b| b);
    std::fs::write(env.src().join("kept.txt"), "in the tree\n").unwrap();
    env.converged();
    assert_eq!(daemon.terminate().code(), Some(0));

    let remote = env.rsyncd.remote("web");
    let escape = format!(
        "../{}/escaped.txt",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    let mut pending = b"sersync-pending 1\n".to_vec();
    for field in [
        env.src().as_os_str().as_bytes(),
        remote.ip.as_bytes(),
        remote.name.as_bytes(),
        b"S",
        escape.as_bytes(),
    ] {
        pending.extend_from_slice(field);
        pending.push(0);
    }
    let file = daemon.state_dir().join("pending");
    std::fs::write(&file, &pending).unwrap();
    chmod(&file, 0o600);
    // Changed while the daemon was down: only the owed full sync sends it.
    std::fs::write(env.src().join("later.txt"), "sent by the full sync\n").unwrap();
    daemon.restart();
    env.converged();
    let log = daemon.log();
    assert!(
        log.contains("a saved change names a path outside its root")
            && log.contains(&format!("path={escape}")),
        "{log}"
    );
    assert!(baited(env.replica()).is_empty());
    assert!(baited(env.rsyncd.dir()).is_empty());
}

/// Symlinks planted where the daemon builds its scratch directories (its `empty`
/// directory before a start, the names its skeletons used to have after it) lead
/// nowhere: deletions still delete, and the replica never gets the planted content.
#[test]
fn symlinks_planted_at_scratch_paths_are_not_followed() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let planted = temp_dir("planted");
    for name in ["victim.txt", "other.txt"] {
        std::fs::write(planted.path().join(name), BAIT).unwrap();
    }
    let mut daemon = env.start(|b| b);
    for name in ["victim.txt", "other.txt"] {
        std::fs::write(env.src().join(name), "the source's own\n").unwrap();
    }
    env.converged();
    assert_eq!(daemon.terminate().code(), Some(0));
    let empty = daemon.state_dir().join("empty");
    std::fs::remove_dir_all(&empty).unwrap();
    std::os::unix::fs::symlink(planted.path(), &empty).unwrap();
    daemon.restart();
    assert!(
        std::fs::symlink_metadata(&empty).unwrap().is_dir(),
        "the planted symlink at {empty:?} is still there"
    );
    assert_eq!(std::fs::read_dir(planted.path()).unwrap().count(), 2);
    // The names skeletons had before they were made like mkdtemp: PID and a counter.
    let pid = daemon.pid();
    for n in 0..64 {
        std::os::unix::fs::symlink(planted.path(), empty.join(format!("skeleton-{pid}-{n}")))
            .unwrap();
    }
    std::fs::remove_file(env.src().join("victim.txt")).unwrap();
    env.converged();
    std::fs::remove_file(env.src().join("other.txt")).unwrap();
    env.converged();
    assert!(baited(env.replica()).is_empty());
    assert_eq!(std::fs::read_dir(planted.path()).unwrap().count(), 2);
}

/// A `<failLog path>` whose directory leads through a symlink another user owns (in a
/// place everyone may write) is not written: root's write would go wherever that user
/// points it, and the script would be theirs to change before someone runs it.
#[test]
fn the_failure_script_is_not_written_through_a_symlink_another_user_owns() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let Some(user) = TestUser::create(&[]) else {
        return;
    };
    let shared = temp_dir("shared");
    chmod(shared.path(), 0o1777);
    let elsewhere = temp_dir("elsewhere");
    let link = shared.path().join("sersync");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    chown(&link, user.ids());
    let script = link.join("fail.sh");
    let daemon = env.start(|b| b.fail_log(&script.display().to_string(), 60));
    std::fs::write(env.src().join("before.txt"), "delivered\n").unwrap();
    env.converged();
    env.rsyncd.stop();
    std::fs::write(
        env.src().join("during.txt"),
        "fails while the remote is down\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("not writing the failure script") {
        assert!(
            Instant::now() < deadline,
            "no refusal in the log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log();
    assert!(
        log.contains(&format!("{} (owner uid {}", link.display(), user.ids().0))
            && log.contains("is a symlink owned by another user"),
        "{log}"
    );
    assert!(!elsewhere.path().join("fail.sh").exists());
    env.rsyncd.start();
    env.converged();
}

/// A tree that belongs to a user, changed by that user: creations, a private file (0600),
/// renames of files and directories, a symlink, deletions of files and of a whole
/// directory. rsync runs as the owner (the deletion runs from a scratch directory it can
/// only enter by descriptor), and the replica follows exactly.
#[test]
fn a_users_tree_changed_by_that_user_replicates_with_deletions_and_renames() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let Some(owner) = TestUser::create(&[]) else {
        return;
    };
    let src = env.src();
    chmod(src, 0o755);
    chown(src, owner.ids());
    // As under the unit: UMask=0077 (what the daemon makes for the owner's runs must still
    // be theirs to enter) and no CAP_CHOWN (it must be made as theirs, not chowned).
    if !crate::harness::require_tool("setpriv") {
        return;
    }
    let daemon = env.start(|b| {
        b.launcher(&[
            "setpriv",
            "--bounding-set=-chown",
            "--",
            "sh",
            "-c",
            "umask 077; exec \"$@\"",
            "sh",
        ])
    });
    let as_owner = |script: &str| {
        let status = owner
            .command("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(src)
            .status()
            .expect("run a shell as the owner");
        assert!(status.success(), "{script}: {status}");
    };
    as_owner(
        "mkdir -p site/img old && echo home > site/index.html && echo key > site/private.key \
         && chmod 600 site/private.key && echo png > site/img/a.png && echo gone > old/x.txt \
         && echo moved > before.txt && ln -s site/index.html link",
    );
    wait_converged_ignoring(src, env.replica(), CONVERGE, &|_| false);
    as_owner(
        "mv before.txt after.txt && mv site/img site/images && rm -r old \
         && rm site/index.html && echo v2 > site/new.html",
    );
    wait_converged_ignoring(src, env.replica(), CONVERGE, &|_| false);
    // Deletions deep down: the skeleton's directories are made for the owner too.
    as_owner("mkdir -p deep/er/est && echo d > deep/er/est/f && echo e > deep/er/g");
    wait_converged_ignoring(src, env.replica(), CONVERGE, &|_| false);
    as_owner("rm deep/er/est/f deep/er/g");
    wait_converged_ignoring(src, env.replica(), CONVERGE, &|_| false);
    let log = daemon.log();
    assert!(!log.contains(" failed"), "a run failed:\n{log}");
}

/// The owner of a tree renames its root away and puts a symlink to a private directory of
/// root's in its place: runs for the root stop (no rsync as root, or as anyone, in what
/// the symlink points to), nothing of root's reaches the replica, and nothing on the
/// replica is deleted; once the root is back, it converges.
#[test]
fn a_root_swapped_for_a_symlink_runs_nothing() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let Some(owner) = TestUser::create(&[]) else {
        return;
    };
    let private = temp_dir("private");
    let secret = private.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    chmod(&secret, 0o700);
    std::fs::write(secret.join("key.pem"), BAIT).unwrap();
    chmod(&secret.join("key.pem"), 0o600);
    chmod(private.path(), 0o755);
    let src = env.src().to_path_buf();
    chmod(&src, 0o755);
    chown(&src, owner.ids());
    std::fs::write(src.join("index.html"), "owner's page\n").unwrap();
    chown(&src.join("index.html"), owner.ids());
    // A file the module refuses: its retry (15 s later) is a job that runs after the
    // swap below.
    env.rsyncd.set_last_module_option("exclude", "refused-*");
    let daemon = env.start(|b| b.arg("-r"));
    env.converged();
    std::fs::write(src.join("refused-1.txt"), "retried\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("retrying them in") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // All of it what the owner may do in /tmp (sticky, but the root is theirs).
    let moved = src.with_extension("moved");
    let script = format!(
        "echo mine > {src}/key.pem && echo changed > {src}/index.html && mv {src} {moved} \
         && ln -s {secret} {src}",
        src = src.display(),
        moved = moved.display(),
        secret = secret.display()
    );
    let status = owner
        .command("/bin/sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "{script}: {status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon
        .log()
        .contains("is not a directory (a symlink put in its place?)")
    {
        assert!(
            Instant::now() < deadline,
            "no run was refused:\n{}",
            daemon.log()
        );
        assert!(baited(env.replica()).is_empty(), "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(baited(env.replica()).is_empty(), "{}", daemon.log());
    assert!(
        env.replica().join("index.html").exists(),
        "the replica lost index.html"
    );
    std::fs::remove_file(&src).unwrap();
    std::fs::rename(&moved, &src).unwrap();
    std::fs::write(src.join("after.txt"), "the root is back\n").unwrap();
    let refused = |path: &[u8]| path == b"refused-1.txt";
    wait_converged_ignoring(&src, env.replica(), Duration::from_secs(60), &refused);
}
