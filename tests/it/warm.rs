//! Warm rsyncs (issue 17): a small batch goes to the lane's rsync started beforehand and
//! already connected, over an rsync daemon and over ssh. What must still hold: a module's
//! `max connections`, the receiver's idle `timeout`, a server side that dies, shutdown.
//! Over ssh, every rsync opens its session over sersyncd's ssh connection master: what
//! must hold when the master is killed, cannot authenticate, and at shutdown.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// What sersyncd logs (with `<debug>`, which the harness sets) when a batch goes to the
/// warm rsync.
const HANDED: &str = "handed to the warm rsync";

fn handed(daemon: &Sersyncd) -> usize {
    daemon.log().matches(HANDED).count()
}

/// The PIDs of the children of `pid` (of any of its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits (bounded) until `ready` holds.
fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// The rsync children of sersyncd: its warm rsyncs, when no job runs.
fn warm_rsyncs(daemon: &Sersyncd) -> Vec<u32> {
    let pid = daemon.pid().as_raw() as u32;
    children(pid)
        .into_iter()
        .filter(|child| comm(*child) == "rsync")
        .collect()
}

/// Waits until sersyncd has a warm rsync that no batch was handed to yet.
fn fresh_warm(daemon: &Sersyncd) {
    wait_for("a fresh warm rsync", CONVERGE, || {
        let log = daemon.log();
        let used: Vec<u32> = log
            .match_indices("handed to the warm rsync pid=")
            .filter_map(|(at, found)| {
                log[at + found.len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        // Not a cold run finishing (its paths are arguments), not one handed a batch.
        warm_rsyncs(daemon).iter().any(|pid| {
            !used.contains(pid)
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|argv| argv.split(|b| *b == 0).any(|arg| arg == b"--files-from=-"))
        })
    });
}

fn no_failure(daemon: &Sersyncd) {
    let log = daemon.log();
    assert!(
        !log.contains("rsync_exit"),
        "a run failed:\n{}",
        tail(&log, 60)
    );
}

/// A change after the first goes to the warm rsync (and arrives); the connection it used
/// was opened before the change, so the daemon's log shows one connection per batch.
#[test]
fn a_small_change_goes_to_the_warm_rsync() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b);
    write(env.src(), "first", "1\n");
    env.converged();
    fresh_warm(&daemon);
    for i in 0..5 {
        write(env.src(), &format!("next-{i}"), "2\n");
        env.converged();
        fresh_warm(&daemon);
    }
    assert!(handed(&daemon) >= 5, "{}", tail(&daemon.log(), 60));
    no_failure(&daemon);
}

/// `<warm start="false"/>`: every batch runs cold, and no rsync waits between them.
#[test]
fn warm_rsyncs_can_be_turned_off() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b.raw_rsync_xml("<warm start=\"false\"/>"));
    for i in 0..3 {
        write(env.src(), &format!("f{i}"), "x\n");
        env.converged();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(warm_rsyncs(&daemon).is_empty());
    assert_eq!(handed(&daemon), 0);
}

/// `max connections = 1`: the warm rsync holds the module's only slot, a cold run (a
/// deletion) is refused, and the remote goes cold for good (logged once); everything
/// arrives.
#[test]
fn a_module_with_max_connections_1_converges() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let lock = env.rsyncd.dir().join("rsyncd.lock");
    env.rsyncd.set_module_options(&format!(
        "    max connections = 1\n    lock file = {}\n",
        lock.display()
    ));
    let daemon = env.start(|b| b);
    write(env.src(), "a", "a\n");
    write(env.src(), "d/b", "b\n");
    env.converged();
    for round in 0..4 {
        // Let the warm rsync (if any) connect and hold the slot.
        std::thread::sleep(Duration::from_millis(700));
        write(env.src(), &format!("new-{round}"), "n\n");
        env.converged();
        std::thread::sleep(Duration::from_millis(700));
        fs::remove_file(env.src().join(if round == 0 {
            "a".to_owned()
        } else {
            format!("new-{}", round - 1)
        }))
        .unwrap();
        env.converged();
    }
    let log = daemon.log();
    assert_eq!(
        log.matches("refused the connection of a warm rsync")
            .count(),
        1,
        "{}",
        tail(&log, 80)
    );
    // Cold from then on: no rsync waits.
    std::thread::sleep(Duration::from_millis(700));
    assert!(warm_rsyncs(&daemon).is_empty());
}

/// The receiver's `timeout = 5` ends the idle warm rsync's connection; after 20 s idle a
/// change still arrives, through a warm rsync started after the remote's timeout was seen.
#[test]
fn a_receiver_timeout_of_5_s_and_20_s_idle() {
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    env.rsyncd.set_module_options("    timeout = 5\n");
    let daemon = env.start(|b| b);
    write(env.src(), "before", "1\n");
    env.converged();
    std::thread::sleep(Duration::from_secs(20));
    let before = handed(&daemon);
    let start = Instant::now();
    write(env.src(), "after", "2\n");
    env.converged();
    let took = start.elapsed();
    let log = daemon.log();
    assert!(
        log.contains("the remote closed an idle warm rsync"),
        "{}",
        tail(&log, 60)
    );
    assert_eq!(handed(&daemon), before + 1, "{}", tail(&log, 60));
    assert!(took < Duration::from_secs(5), "{took:?}");
    no_failure(&daemon);
}

/// The server side of the warm rsync's connection (the daemon's child for it) is killed:
/// the next change still arrives, and no failure is recorded.
#[test]
fn the_warm_rsyncs_server_side_killed() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = env.start(|b| b);
    write(env.src(), "first", "1\n");
    env.converged();
    fresh_warm(&daemon);
    let rsyncd = env.rsyncd.pid().expect("the rsync daemon runs");
    wait_for("the daemon's side of it", CONVERGE, || {
        !children(rsyncd).is_empty()
    });
    for child in children(rsyncd) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Right away: the warm rsync may not have noticed yet (the batch then runs cold).
    write(env.src(), "second", "2\n");
    env.converged();
    // And once more, after it noticed and was replaced.
    std::thread::sleep(Duration::from_secs(2));
    write(env.src(), "third", "3\n");
    env.converged();
    no_failure(&daemon);
}

/// SIGTERM: sersyncd ends its warm rsyncs by PID and leaves no rsync running, on either
/// side.
#[test]
fn shutdown_leaves_no_rsync() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let mut daemon = env.start(|b| b);
    write(env.src(), "first", "1\n");
    env.converged();
    fresh_warm(&daemon);
    let ours = warm_rsyncs(&daemon);
    let rsyncd = env.rsyncd.pid().expect("the rsync daemon runs");
    assert!(!children(rsyncd).is_empty());
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    for pid in ours {
        assert_ne!(comm(pid), "rsync", "warm rsync {pid} outlived sersyncd");
    }
    wait_for("the daemon's side to end", Duration::from_secs(5), || {
        children(rsyncd).is_empty()
    });
}

/// An sshd of the test's own on 127.0.0.1 (a free port), with its own host key,
/// authorized key and known_hosts; ended by PID on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    /// `None` (after a SKIP line) without the tools; under `CI=true` a missing tool fails.
    fn start() -> Option<Sshd> {
        const SSHD: &str = "/usr/sbin/sshd";
        if !Path::new(SSHD).exists() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "{SSHD} is not installed (CI=true: not skipping; apt-get install openssh-server)"
            );
            eprintln!("SKIP: {SSHD} is not installed");
            return None;
        }
        if !require_tool("ssh") || !require_tool("ssh-keygen") || !require_tool("rsync") {
            return None;
        }
        // sshd insists on its privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = temp_dir("sshd");
        let at = |name: &str| dir.path().join(name);
        for (key, kind) in [("host_key", "ed25519"), ("client_key", "ed25519")] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(at(key))
                .stdin(Stdio::null())
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen {key}: {status}");
        }
        fs::copy(at("client_key.pub"), at("authorized_keys")).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let host_key = fs::read_to_string(at("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        fs::write(
            at("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        fs::write(
            at("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
                at("host_key").display(),
                at("authorized_keys").display(),
                at("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = fs::File::create(at("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(at("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sshd.answers() {
                return Some(sshd);
            }
            if let Some(Ok(Some(_))) = sshd.child.as_mut().map(Child::try_wait) {
                break;
            }
            std::thread::sleep(POLL);
        }
        let log = fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default();
        sshd.stop();
        panic!("sshd did not answer:\n{log}");
    }

    /// The `-e` command that reaches this sshd with the test's key and known_hosts only.
    fn ssh_command(&self) -> String {
        self.ssh_command_with("client_key")
    }

    /// The `-e` command with the key in file `key` of the sshd's directory (`host_key`:
    /// a key sshd does not accept).
    fn ssh_command_with(&self, key: &str) -> String {
        let at = |name: &str| self.dir.path().join(name).display().to_string();
        format!(
            "ssh -F /dev/null -p {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
             -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
            self.port,
            at(key),
            at("known_hosts")
        )
    }

    /// What sshd logged (`LogLevel VERBOSE`).
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many ssh connections sshd accepted (authenticated).
    fn connections(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// How many sessions (commands: rsync) sshd started, over any connection.
    fn sessions(&self) -> usize {
        self.log().matches("Starting session: command").count()
    }

    fn answers(&self) -> bool {
        let command = self.ssh_command();
        let mut words = command.split_whitespace();
        let program = words.next().unwrap();
        Command::new(program)
            .args(words)
            .args(["-o", "ConnectTimeout=2", "root@127.0.0.1", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("sshd runs")
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(5));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = children(pid);
    while let Some(p) = stack.pop() {
        stack.extend(children(p));
        out.push(p);
    }
    out
}

/// A source tree pushed over ssh (`<ssh start="true"/>`, `-e` with the test's sshd) to a
/// directory of its own; the daemon's builder.
/// An sshd of the test's own, a source and a replica (`None` where sshd is missing
/// outside CI).
fn over_ssh_env() -> Option<(Sshd, tempfile::TempDir, tempfile::TempDir)> {
    let sshd = Sshd::start()?;
    Some((sshd, temp_dir("ssh-src"), temp_dir("ssh-replica")))
}

fn over_ssh(sshd: &Sshd, src: &Path, replica: &Path) -> SersyncdBuilder {
    over_ssh_with(&sshd.ssh_command(), src, replica)
}

fn over_ssh_with(command: &str, src: &Path, replica: &Path) -> SersyncdBuilder {
    SersyncdBuilder::new()
        .root(
            src,
            &[Remote {
                ip: "127.0.0.1".into(),
                name: replica.display().to_string(),
            }],
        )
        .ssh(true)
        .common_params(&format!("-artuz -e '{command}'"))
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// sersyncd's ssh connection master: its PID and control socket, if one of its children is
/// an ssh started with `ControlMaster=yes`.
fn master(daemon: &Sersyncd) -> Option<(u32, std::path::PathBuf)> {
    children(daemon.pid().as_raw() as u32)
        .into_iter()
        .filter(|pid| comm(*pid) == "ssh")
        .find_map(|pid| {
            let argv = cmdline(pid);
            if !argv.iter().any(|arg| arg == "ControlMaster=yes") {
                return None;
            }
            let socket = argv
                .iter()
                .find_map(|arg| arg.strip_prefix("ControlPath="))?;
            Some((pid, std::path::PathBuf::from(socket)))
        })
}

/// Waits until sersyncd's master is connected (its socket is there); its PID and socket.
fn master_up(daemon: &Sersyncd) -> (u32, std::path::PathBuf) {
    let mut found = None;
    wait_for("an ssh connection master", CONVERGE, || {
        found = master(daemon).filter(|(_, socket)| socket.exists());
        found.is_some()
    });
    found.expect("a master")
}

/// Over ssh: changes go to the warm rsync (its ssh session opened before them); the server
/// side killed, the next change still arrives; SIGTERM leaves no rsync or ssh of ours.
#[test]
fn over_ssh_warm_rsyncs_deliver_survive_and_go_away() {
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let mut daemon = over_ssh(&sshd, src.path(), replica.path()).start();
    write(src.path(), "first", "1\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    fresh_warm(&daemon);
    for i in 0..3 {
        write(src.path(), &format!("next-{i}"), "2\n");
        wait_converged(src.path(), replica.path(), CONVERGE);
        fresh_warm(&daemon);
    }
    assert!(handed(&daemon) >= 3, "{}", tail(&daemon.log(), 60));
    // The server side: the sshd session processes (and the rsync below them).
    wait_for("the server side", CONVERGE, || {
        !children(sshd.pid()).is_empty()
    });
    // The sshd processes of the connections (the master's, the warm rsyncs'): their
    // sessions lose their connection. Only sshd's own: a SIGKILL to a session's shell
    // while it runs its startup files (root's .bashrc) could leave their locks behind
    // (pyenv's rehash lock here) and stall every later session.
    for pid in descendants(sshd.pid())
        .into_iter()
        .filter(|pid| comm(*pid) == "sshd")
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    write(src.path(), "after-kill", "3\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    std::thread::sleep(Duration::from_secs(2));
    write(src.path(), "after-kill-2", "4\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    no_failure(&daemon);
    fresh_warm(&daemon);
    let below = || descendants(daemon.pid().as_raw() as u32);
    wait_for("the warm rsync's ssh", CONVERGE, || {
        below().iter().any(|p| comm(*p) == "ssh")
    });
    let ours = below();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    let alive = || {
        ours.iter()
            .copied()
            .filter(|pid| matches!(comm(*pid).as_str(), "rsync" | "ssh"))
            .collect::<Vec<u32>>()
    };
    // Gone at once, or within a second (an ssh reparented before its SIGTERM landed).
    let deadline = Instant::now() + Duration::from_secs(1);
    while !alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(alive(), Vec::<u32>::new(), "outlived sersyncd");
    wait_for("the server side to end", Duration::from_secs(5), || {
        children(sshd.pid()).is_empty()
    });
}

/// Over ssh with the connection master (the default): sersyncd runs one `ssh` with
/// `ControlMaster=yes` as its child, and once it is up, sends, deletions and new
/// directories (warm and cold runs) open sessions over it: sshd accepts no new connection.
/// The lane keeps two warm rsyncs; shutdown removes the master and its socket.
#[test]
fn over_ssh_every_rsync_opens_its_session_over_the_master() {
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let mut daemon = over_ssh(&sshd, src.path(), replica.path()).start();
    write(src.path(), "first", "1\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (pid, socket) = master_up(&daemon);
    // The rsyncs started before the master was up (connected on their own) are used up.
    for i in 0..2 {
        write(src.path(), &format!("warm-up-{i}"), "0\n");
        wait_converged(src.path(), replica.path(), CONVERGE);
        fresh_warm(&daemon);
    }
    let (connections, sessions) = (sshd.connections(), sshd.sessions());
    for i in 0..3 {
        write(src.path(), &format!("next-{i}"), "2\n");
        wait_converged(src.path(), replica.path(), CONVERGE);
        fresh_warm(&daemon);
    }
    fs::remove_file(src.path().join("first")).unwrap();
    write(src.path(), "dir/below/new", "3\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    fresh_warm(&daemon);
    let log = sshd.log();
    assert_eq!(
        sshd.connections(),
        connections,
        "a run connected on its own:\n{}\n{}",
        tail(&log, 30),
        tail(&daemon.log(), 60)
    );
    // At least the deletion run's session and the warm rsyncs started to replace the
    // ones handed a batch (sessions started before the count may have carried sends).
    assert!(
        sshd.sessions() >= sessions + 3,
        "{} sessions, {sessions} before:\n{}",
        sshd.sessions(),
        tail(&log, 30)
    );
    assert_eq!(
        master(&daemon).map(|(p, _)| p),
        Some(pid),
        "one master throughout"
    );
    // Over a master a lane keeps two warm rsyncs (never more).
    wait_for("two warm rsyncs", CONVERGE, || {
        warm_rsyncs(&daemon).len() == 2
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(warm_rsyncs(&daemon).len(), 2);
    no_failure(&daemon);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(comm(pid), "", "the master outlived sersyncd");
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert!(
        !socket.parent().unwrap().exists(),
        "the socket directory left behind"
    );
}

/// The master killed (-9): the next change still arrives (its run connects on its own or
/// over the new master), nothing is recorded as failed, a new master comes up, and
/// SIGTERM leaves no ssh or rsync of ours behind.
#[test]
fn over_ssh_a_killed_master_comes_back() {
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let mut daemon = over_ssh(&sshd, src.path(), replica.path()).start();
    write(src.path(), "first", "1\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (pid, socket) = master_up(&daemon);
    fresh_warm(&daemon);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    // At once: the warm rsync over it may be dead, the socket stale.
    write(src.path(), "right-after", "2\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let mut back = None;
    wait_for("a new master", CONVERGE, || {
        back = master(&daemon).filter(|(p, socket)| *p != pid && socket.exists());
        back.is_some()
    });
    let (new_pid, new_socket) = back.unwrap();
    assert_eq!(
        new_socket, socket,
        "the same socket path (warm rsyncs' argv match)"
    );
    for i in 0..2 {
        write(src.path(), &format!("later-{i}"), "3\n");
        wait_converged(src.path(), replica.path(), CONVERGE);
        fresh_warm(&daemon);
    }
    no_failure(&daemon);
    let ours = descendants(daemon.pid().as_raw() as u32);
    assert!(ours.contains(&new_pid));
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    let alive: Vec<u32> = ours
        .iter()
        .copied()
        .filter(|pid| matches!(comm(*pid).as_str(), "rsync" | "ssh"))
        .collect();
    assert_eq!(alive, Vec::<u32>::new(), "outlived sersyncd");
    assert!(!socket.exists());
}

/// A master that cannot authenticate (a key sshd does not accept): one clear warning with
/// ssh's own message, tried again with backoff (a handful of starts in 6 s, not a loop),
/// and none left at shutdown.
#[test]
fn over_ssh_a_master_that_cannot_log_in_is_retried_with_backoff() {
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let command = sshd.ssh_command_with("host_key");
    let mut daemon = over_ssh_with(&command, src.path(), replica.path()).start();
    write(src.path(), "never", "1\n");
    wait_for("the master's failure", CONVERGE, || {
        daemon
            .log()
            .contains("cannot keep an ssh connection master open")
    });
    std::thread::sleep(Duration::from_secs(6));
    let log = daemon.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cannot keep an ssh connection master open"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", tail(&log, 60));
    assert!(warned[0].contains("Permission denied"), "{}", warned[0]);
    let starts = log.matches("starting the ssh connection master").count();
    assert!(
        (2..=5).contains(&starts),
        "{starts} starts:\n{}",
        tail(&log, 60)
    );
    let ours = descendants(daemon.pid().as_raw() as u32);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        ours.iter()
            .all(|pid| !matches!(comm(*pid).as_str(), "rsync" | "ssh")),
        "outlived sersyncd"
    );
}

/// A reload that keeps the remote (the same ssh command, login and host) keeps its
/// master; one that changes the ssh command ends the old master (reaped: no zombie) and
/// the next change goes over a new one.
#[test]
fn over_ssh_a_reload_keeps_or_replaces_the_master() {
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let mut daemon = over_ssh(&sshd, src.path(), replica.path()).start();
    let reload = |daemon: &mut Sersyncd, command: &str, nth: usize| {
        daemon.write_config(&over_ssh_with(command, src.path(), replica.path()).xml());
        daemon.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for("the reload", CONVERGE, || {
            daemon.log().matches("configuration reloaded").count() >= nth
        });
    };
    write(src.path(), "first", "1\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (pid, socket) = master_up(&daemon);
    reload(&mut daemon, &sshd.ssh_command(), 1);
    write(src.path(), "second", "2\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    assert_eq!(master_up(&daemon), (pid, socket.clone()), "kept");
    let other = format!("{} -o ConnectTimeout=9", sshd.ssh_command());
    reload(&mut daemon, &other, 2);
    wait_for("the old master to be reaped", CONVERGE, || {
        comm(pid).is_empty()
    });
    write(src.path(), "third", "3\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (new_pid, new_socket) = master_up(&daemon);
    assert_ne!(new_pid, pid);
    assert_ne!(new_socket, socket);
    assert!(
        cmdline(new_pid).iter().any(|arg| arg == "ConnectTimeout=9"),
        "{:?}",
        cmdline(new_pid)
    );
    no_failure(&daemon);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(comm(new_pid).is_empty());
}

/// Pause (over D-Bus) ends the master once no run is left (reaped: no zombie) and starts
/// none while paused; resume brings one back and the changes held arrive over it.
#[test]
fn over_ssh_pause_ends_the_master_and_resume_brings_it_back() {
    use crate::control::{ctl, on_bus};
    use crate::harness::bus::{Bus, Policy};
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some((sshd, src, replica)) = over_ssh_env() else {
        return;
    };
    let mut daemon = on_bus(over_ssh(&sshd, src.path(), replica.path()), &bus, "web").start();
    write(src.path(), "first", "1\n");
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (pid, _) = master_up(&daemon);
    ctl(&bus, &["pause"]).expect(0);
    wait_for("the master to end and be reaped", CONVERGE, || {
        comm(pid).is_empty()
    });
    write(src.path(), "held", "2\n");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!replica.path().join("held").exists(), "sent while paused");
    assert_eq!(master(&daemon), None, "a master started while paused");
    ctl(&bus, &["resume"]).expect(0);
    wait_converged(src.path(), replica.path(), CONVERGE);
    let (new_pid, _) = master_up(&daemon);
    assert_ne!(new_pid, pid);
    no_failure(&daemon);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(comm(new_pid).is_empty());
}
