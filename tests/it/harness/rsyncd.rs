//! A real `rsync --daemon` on a loopback address, with auth, one replica dir per module.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::sersyncd::Remote;
use super::{POLL, tail, temp_dir};

/// The rsync user every test daemon accepts.
pub const USER: &str = "syncer";

/// The password of [`USER`] on every test daemon (so one password file fits them all).
const PASSWORD: &str = "s3cret-sersync-it";

/// How long an rsync daemon may take to accept connections.
const STARTUP: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `rsync --daemon --no-detach` on `address:port`; killed (by PID) on drop.
#[derive(Debug)]
pub struct RsyncDaemon {
    /// Config, secrets, client password file, log; also the daemon's working directory.
    dir: TempDir,
    modules: Vec<(String, TempDir)>,
    address: String,
    port: u16,
    /// Unique per daemon, in every module's comment: proves that what answers on the port
    /// is this daemon and not another test's.
    token: String,
    /// Extra `name = value` lines written into every module section (see
    /// [`RsyncDaemon::set_module_options`]).
    module_options: String,
    child: Option<Child>,
}

impl RsyncDaemon {
    /// Starts a daemon on 127.0.0.1 and a free port, serving `modules`.
    pub fn new(modules: &[&str]) -> RsyncDaemon {
        let mut last_error = String::new();
        for _ in 0..10 {
            let port = free_port(&["127.0.0.1"]);
            match RsyncDaemon::start_on("127.0.0.1", port, modules, None) {
                Ok(daemon) => return daemon,
                Err(err) => last_error = err,
            }
        }
        panic!("cannot start an rsync daemon after 10 attempts:\n{last_error}");
    }

    /// Two daemons serving the same `modules` on the same free port, one on 127.0.0.1 and
    /// one on 127.0.0.2 (sersync has one port for every remote).
    pub fn pair(modules: &[&str]) -> (RsyncDaemon, RsyncDaemon) {
        RsyncDaemon::pair_in(modules, [None, None])
    }

    /// [`RsyncDaemon::pair`] with each daemon's replica directories created under the
    /// given parent (e.g. a small tmpfs, to fill it up), or in /tmp for `None`.
    pub fn pair_in(modules: &[&str], parents: [Option<&Path>; 2]) -> (RsyncDaemon, RsyncDaemon) {
        let mut last_error = String::new();
        for _ in 0..10 {
            let port = free_port(&["127.0.0.1", "127.0.0.2"]);
            let first = match RsyncDaemon::start_on("127.0.0.1", port, modules, parents[0]) {
                Ok(daemon) => daemon,
                Err(err) => {
                    last_error = err;
                    continue;
                }
            };
            match RsyncDaemon::start_on("127.0.0.2", port, modules, parents[1]) {
                Ok(second) => return (first, second),
                Err(err) => last_error = err,
            }
        }
        panic!("cannot start two rsync daemons on one port after 10 attempts:\n{last_error}");
    }

    fn start_on(
        address: &str,
        port: u16,
        modules: &[&str],
        module_parent: Option<&Path>,
    ) -> Result<RsyncDaemon, String> {
        let dir = temp_dir("rsyncd");
        let token = format!(
            "sersync-it-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let modules: Vec<(String, TempDir)> = modules
            .iter()
            .map(|m| {
                let dir = match module_parent {
                    Some(parent) => tempfile::Builder::new()
                        .prefix(&format!("replica-{m}-"))
                        .tempdir_in(parent)
                        .expect("create a replica directory"),
                    None => temp_dir(&format!("replica-{m}")),
                };
                (m.to_string(), dir)
            })
            .collect();
        write_private(
            &dir.path().join("rsyncd.secrets"),
            &format!("{USER}:{PASSWORD}\n"),
        );
        write_private(&dir.path().join("client.pass"), &format!("{PASSWORD}\n"));
        let mut daemon = RsyncDaemon {
            dir,
            modules,
            address: address.to_owned(),
            port,
            token,
            module_options: String::new(),
            child: None,
        };
        daemon.write_conf();
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Writes rsyncd.conf: globals, then every module with [`RsyncDaemon::module_options`].
    fn write_conf(&self) {
        let mut conf = String::new();
        conf.push_str("use chroot = no\n");
        // With `use chroot = no` rsync munges symlinks by default; we want them verbatim.
        conf.push_str("munge symlinks = no\n");
        conf.push_str("reverse lookup = no\n");
        conf.push_str(&format!(
            "log file = {}\n",
            self.dir.path().join("rsyncd.log").display()
        ));
        if nix::unistd::geteuid().is_root() {
            conf.push_str("uid = root\ngid = root\n");
        }
        for (name, replica) in &self.modules {
            conf.push_str(&format!(
                "[{name}]\n    path = {}\n    comment = {}\n    read only = no\n    \
                 auth users = {USER}\n    secrets file = {}\n{}",
                replica.path().display(),
                self.token,
                self.dir.path().join("rsyncd.secrets").display(),
                self.module_options
            ));
        }
        std::fs::write(self.dir.path().join("rsyncd.conf"), conf).expect("write rsyncd.conf");
    }

    /// Replaces the extra lines of every module (e.g. `"    read only = yes\n"`); the
    /// daemon reads its config on every connection, so they apply from the next one on.
    pub fn set_module_options(&mut self, lines: &str) {
        self.module_options = lines.to_owned();
        self.write_conf();
    }

    /// Starts the process and waits until this very daemon answers on the port.
    fn spawn(&mut self) -> Result<(), String> {
        let out = self.output_log();
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!(
                "--config={}",
                self.dir.path().join("rsyncd.conf").display()
            ))
            .arg(format!("--address={}", self.address))
            .arg(format!("--port={}", self.port))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log fd"))
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot run rsync --daemon: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "rsync --daemon on {}:{} exited with {status}:\n{}",
                    self.address,
                    self.port,
                    tail(&self.log(), 20)
                ));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "rsync --daemon on {}:{} did not answer within {STARTUP:?}:\n{}",
                    self.address,
                    self.port,
                    tail(&self.log(), 20)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// True when a module listing from `address:port` shows this daemon's token.
    fn answers(&self) -> bool {
        let Ok(output) = Command::new("rsync")
            .arg("--contimeout=2")
            .arg("--timeout=5")
            .arg(format!("rsync://{}:{}/", self.address, self.port))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            return false;
        };
        String::from_utf8_lossy(&output.stdout).contains(&self.token)
    }

    fn output_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("rsyncd.out"))
            .expect("open rsyncd.out")
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        self.kill();
        assert!(
            !self.answers(),
            "the rsync daemon still answers after stop()"
        );
    }

    /// Starts the daemon again, after [`RsyncDaemon::stop`], on the same address and port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "start() of a running rsync daemon");
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(err) => last_error = err,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("cannot restart the rsync daemon on its port:\n{last_error}");
    }

    /// Stops the daemon and the processes it forked for open connections (a client's
    /// warm rsync holds one while idle): a stopped daemon is a remote that is down.
    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            let pid = child.id();
            let before = children_of(pid);
            super::sersyncd::terminate(child, Duration::from_secs(5));
            for connection in before {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(connection as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// The module names, in the order given.
    pub fn modules(&self) -> Vec<String> {
        self.modules.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The directory behind `module`.
    pub fn replica(&self, module: &str) -> &Path {
        self.modules
            .iter()
            .find(|(name, _)| name == module)
            .map(|(_, dir)| dir.path())
            .unwrap_or_else(|| panic!("no module {module}"))
    }

    /// `<remote ip name>` for `module` of this daemon.
    pub fn remote(&self, module: &str) -> Remote {
        let _ = self.replica(module);
        Remote {
            ip: self.address.clone(),
            name: module.to_owned(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the daemon process (its connections are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client password file (mode 0600) for `<auth passwordfile>`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("client.pass")
    }

    /// Rewrites the client password file (keeping mode 0600) with `password`, e.g. a
    /// wrong one; [`RsyncDaemon::restore_client_password`] puts the right one back.
    pub fn set_client_password(&self, password: &str) {
        write_private(&self.password_file(), &format!("{password}\n"));
    }

    /// Puts the right password back into the client password file (mode 0600).
    pub fn restore_client_password(&self) {
        self.set_client_password(PASSWORD);
    }

    /// Adds `name = value` to the last module of rsyncd.conf (the daemon reads its
    /// config on every connection, so it applies from the next one on).
    pub fn set_last_module_option(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("rsyncd.conf"))
            .expect("open rsyncd.conf");
        writeln!(conf, "    {name} = {value}").expect("append to rsyncd.conf");
    }

    /// The daemon's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log file and its stdout/stderr.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["rsyncd.out", "rsyncd.log"] {
            if let Ok(bytes) = std::fs::read(self.dir.path().join(name)) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- rsync daemon {}:{} log (last 60 lines) ----\n{}\n---- end ----",
                self.address,
                self.port,
                tail(&self.log(), 60)
            );
        }
    }
}

fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {path:?}: {e}"));
}

/// A TCP port that was free on every one of `addresses` a moment ago.
fn free_port(addresses: &[&str]) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((addresses[0], 0)).expect("bind a free port");
        let port = first.local_addr().expect("local address").port();
        if addresses[1..]
            .iter()
            .all(|address| TcpListener::bind((*address, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {addresses:?}");
}

/// The PIDs of the children of `pid` (of any of its threads).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
