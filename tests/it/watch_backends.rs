//! The watch backends beyond the matrix of the end-to-end tests: fanotify refused (no
//! CAP_SYS_ADMIN, a filesystem without file handles) falls back to inotify under `auto`
//! and is a configuration error when asked for by name; `<watch backend>` and the flag that
//! wins over it; filesystems mounted inside a root; a root deleted and made again.
//!
//! Everything here runs as root (mounts, capabilities); under `CI=true` a missing tool or
//! privilege fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Sersyncd, SersyncdBuilder, require_tool, tail, temp_dir, write};

/// True when the test can run: root, and the tools on PATH. Otherwise panics under
/// `CI=true`, or prints a SKIP line and returns false.
fn can_run(tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true: the watch backend tests need root");
        eprintln!("SKIP: not root");
        return false;
    }
    tools.iter().all(|tool| require_tool(tool))
}

/// Drops CAP_SYS_ADMIN (and every inheritable capability) for the daemon it starts.
const WITHOUT_CAP_SYS_ADMIN: [&str; 3] =
    ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin"];

/// A filesystem mounted by the test, unmounted (by its path, which only it mounted) on
/// drop, also when the test fails.
struct Mounted(PathBuf);

impl Mounted {
    fn new(fstype: &str, point: &Path) -> Mounted {
        std::fs::create_dir_all(point).unwrap();
        let status = Command::new("mount")
            .args(["-t", fstype, fstype])
            .arg(point)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t {fstype} {}: {status}",
            point.display()
        );
        Mounted(point.to_owned())
    }
}

impl Mounted {
    /// `mount --bind source point`.
    fn bind(source: &Path, point: &Path) -> Mounted {
        std::fs::create_dir_all(point).unwrap();
        let status = Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(point)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount --bind {}: {status}",
            point.display()
        );
        Mounted(point.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        match Command::new("umount").arg(&self.0).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("cannot unmount {}: {other:?}", self.0.display()),
        }
    }
}

fn wait_for_log(daemon: &Sersyncd, words: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !daemon.log().contains(words) {
        assert!(
            Instant::now() < deadline,
            "the log never said {words:?}:\n{}",
            tail(&daemon.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates, a rename of a directory, a deletion: all reach the replica.
fn changes_replicate(env: &Env, under: &str) {
    write(env.src(), &format!("{under}a/b/c/f"), "deep\n");
    write(env.src(), &format!("{under}plain"), "plain\n");
    env.converged();
    std::fs::rename(
        env.src().join(format!("{under}a")),
        env.src().join(format!("{under}renamed")),
    )
    .unwrap();
    std::fs::remove_file(env.src().join(format!("{under}plain"))).unwrap();
    write(env.src(), &format!("{under}renamed/b/late"), "late\n");
    env.converged();
    assert_eq!(
        std::fs::read(env.replica().join(format!("{under}renamed/b/c/f"))).unwrap(),
        b"deep\n"
    );
    assert!(!env.replica().join(format!("{under}plain")).exists());
}

#[test]
fn auto_without_cap_sys_admin_falls_back_to_inotify_logged_once() {
    if !can_run(&["setpriv"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b.watch_backend("auto").launcher(&WITHOUT_CAP_SYS_ADMIN));
    changes_replicate(&env, "");
    let log = daemon.log();
    assert_eq!(
        log.matches("fanotify cannot watch this root").count(),
        1,
        "one line says why and that inotify watches instead:\n{}",
        tail(&log, 30)
    );
    assert!(
        log.contains("watching it with inotify"),
        "{}",
        tail(&log, 30)
    );
    assert!(!log.contains(" with fanotify ("), "{}", tail(&log, 30));
}

#[test]
fn auto_with_cap_sys_admin_watches_with_fanotify() {
    if !can_run(&[]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b.watch_backend("auto"));
    assert!(
        daemon.log().contains(" with fanotify (1 filesystem mark)"),
        "{}",
        tail(&daemon.log(), 30)
    );
    changes_replicate(&env, "");
}

/// Runs sersyncd on `builder`'s config with `args` until it exits (bounded); returns its
/// exit code and output.
fn run_to_exit(
    builder: &SersyncdBuilder,
    dir: &Path,
    launcher: &[&str],
    args: &[&str],
) -> (Option<i32>, String) {
    let conf = dir.join("confxml.xml");
    std::fs::write(&conf, builder.xml()).unwrap();
    let (program, launcher_args) = launcher.split_first().expect("a launcher");
    let mut child = Command::new(program)
        .args(launcher_args)
        .arg(crate::harness::sersyncd_binary())
        .arg("-o")
        .arg(&conf)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--no-dbus")
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sersyncd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = crate::harness::terminate(child, Duration::from_secs(5));
            panic!("sersyncd did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn fanotify_asked_for_by_name_and_refused_exits_78() {
    if !can_run(&["setpriv"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let builder = env.builder();
    // One state directory: a refused start leaves no running marker behind, so the next
    // start is not taken for one after a crash.
    let dir = temp_dir("refused");
    for (how, args, xml) in [
        ("flag", &["--watch-backend", "fanotify"][..], ""),
        ("element", &[][..], "<watch backend=\"fanotify\"/>"),
    ] {
        let builder = builder.clone().raw_sersync_xml(xml);
        let (code, output) = run_to_exit(&builder, dir.path(), &WITHOUT_CAP_SYS_ADMIN, args);
        assert_eq!(code, Some(78), "{how}: {output}");
        assert!(!output.contains("did not stop cleanly"), "{how}: {output}");
        assert!(
            output.contains("the fanotify watch backend is refused here")
                && output.contains("CAP_SYS_ADMIN"),
            "{how}: {output}"
        );
    }
}

#[test]
fn the_element_chooses_the_backend_and_the_flag_wins() {
    if !can_run(&[]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let element = "        <watch backend=\"fanotify\"/>\n";
    let daemon = env.start(|b| b.raw_sersync_xml(element));
    assert!(
        daemon.log().contains(" with fanotify ("),
        "{}",
        tail(&daemon.log(), 30)
    );
    changes_replicate(&env, "e/");
    drop(daemon);
    let daemon = env.start(|b| b.raw_sersync_xml(element).watch_backend("inotify"));
    assert!(
        !daemon.log().contains("fanotify"),
        "{}",
        tail(&daemon.log(), 30)
    );
    changes_replicate(&env, "f/");
}

/// A tmpfs mounted inside the root before the start gets a mark of its own; one mounted
/// while the daemon runs is noticed, marked and rescanned. Changes in both replicate.
#[test]
fn filesystems_mounted_inside_the_root_are_watched_too() {
    if !can_run(&["mount", "umount"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let before = Mounted::new("tmpfs", &env.src().join("before"));
    let daemon = env.start(|b| b.watch_backend("fanotify"));
    assert!(
        daemon.log().contains(" with fanotify (2 filesystem marks)"),
        "{}",
        tail(&daemon.log(), 30)
    );
    changes_replicate(&env, "before/");
    let during = Mounted::new("tmpfs", &env.src().join("during"));
    write(
        env.src(),
        "during/early",
        "written before the daemon noticed the mount\n",
    );
    wait_for_log(
        &daemon,
        "a filesystem was mounted or unmounted below the root",
        Duration::from_secs(15),
    );
    changes_replicate(&env, "during/");
    assert_eq!(
        std::fs::read(env.replica().join("during/early")).unwrap(),
        b"written before the daemon noticed the mount\n"
    );
    drop(daemon);
    drop(during);
    drop(before);
}

/// A directory of the same filesystem bind-mounted inside the root: its events name
/// directories whose path through the root's mount lies elsewhere; they are resolved
/// through the bind mount too, so changes there replicate.
#[test]
fn a_bind_mount_of_the_same_filesystem_inside_the_root_is_watched() {
    if !can_run(&["mount", "umount"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let elsewhere = temp_dir("bind-source");
    let bound = Mounted::bind(elsewhere.path(), &env.src().join("bound"));
    let daemon = env.start(|b| b.watch_backend("fanotify"));
    assert!(
        daemon.log().contains(" with fanotify (1 filesystem mark)"),
        "{}",
        tail(&daemon.log(), 30)
    );
    changes_replicate(&env, "bound/");
    drop(daemon);
    drop(bound);
}

/// ramfs has no file handles: fanotify cannot mark it. Under `auto` the root is watched
/// with inotify (which sees the mount); asked for by name, fanotify says at start that
/// changes there are not replicated live. Never silently missed.
#[test]
fn a_mount_inside_the_root_that_refuses_fanotify_is_never_silently_missed() {
    if !can_run(&["mount", "umount"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let ram = Mounted::new("ramfs", &env.src().join("ram"));
    let daemon = env.start(|b| b.watch_backend("auto"));
    let log = daemon.log();
    assert_eq!(
        log.matches("fanotify cannot mark the filesystem mounted at")
            .count(),
        1,
        "{}",
        tail(&log, 30)
    );
    assert!(
        log.contains("watching this root with inotify"),
        "{}",
        tail(&log, 30)
    );
    changes_replicate(&env, "ram/");
    drop(daemon);
    let daemon = env.start(|b| b.watch_backend("fanotify"));
    let log = daemon.log();
    assert!(
        log.contains("changes there are not replicated live") && log.contains("/ram"),
        "{}",
        tail(&log, 30)
    );
    drop(daemon);
    drop(ram);
}

/// The root deleted and made again: lost, restored, rescanned, and watched again.
#[test]
fn a_root_deleted_and_made_again_is_watched_again_with_fanotify() {
    if !can_run(&[]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let root = env.src().join("root");
    std::fs::create_dir(&root).unwrap();
    let remote = env.rsyncd.remote("web");
    let daemon = SersyncdBuilder::new()
        .root(&root, &[remote])
        .rsyncd(&env.rsyncd)
        .watch_backend("fanotify")
        .start();
    write(&root, "first", "1\n");
    crate::harness::wait_converged(&root, env.replica(), crate::harness::CONVERGE);
    std::fs::remove_dir_all(&root).unwrap();
    wait_for_log(
        &daemon,
        "watch root was deleted or moved away",
        Duration::from_secs(15),
    );
    std::fs::create_dir(&root).unwrap();
    write(&root, "second", "2\n");
    wait_for_log(&daemon, "watching root again", Duration::from_secs(20));
    write(&root, "third/deep", "3\n");
    crate::harness::wait_converged(&root, env.replica(), crate::harness::CONVERGE);
}

/// A reload whose config asks for fanotify where it is refused stops the daemon with 78
/// (a config error, not restarted), saying why.
#[test]
fn a_reload_to_a_refused_fanotify_backend_exits_78() {
    if !can_run(&["setpriv"]) {
        return;
    }
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b.config_watch_backend().launcher(&WITHOUT_CAP_SYS_ADMIN));
    write(env.src(), "before", "watched with inotify\n");
    env.converged();
    let xml = env
        .builder()
        .raw_sersync_xml("        <watch backend=\"fanotify\"/>\n")
        .xml();
    daemon.write_config(&xml);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(78), "{}", tail(&daemon.log(), 30));
    assert!(
        daemon
            .log()
            .contains("the fanotify watch backend is refused here"),
        "{}",
        tail(&daemon.log(), 30)
    );
}
