//! `sersyncd` under test: a config builder, the process, its NOTIFY_SOCKET and its log.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::rsyncd::{RsyncDaemon, USER};
use super::{POLL, tail, temp_dir};

/// The binary under test.
pub const SERSYNCD: &str = env!("CARGO_BIN_EXE_sersyncd");

/// The daemon the tests run: [`SERSYNCD`], or the binary named by `SERSYNC_TEST_SERSYNCD`
/// (to show that a regression test fails against a build of an older commit).
pub fn sersyncd_binary() -> PathBuf {
    std::env::var_os("SERSYNC_TEST_SERSYNCD").map_or_else(|| PathBuf::from(SERSYNCD), PathBuf::from)
}

/// How long the daemon may take to send READY=1.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the daemon may take to exit after SIGTERM before it is killed: more than its
/// own grace for rsync runs in flight (10 s, then SIGTERM to them and up to 5 s more).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `<remote ip name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub ip: String,
    pub name: String,
}

/// The `<inotify>` toggles, defaulting to the stock confxml.xml values.
#[derive(Debug, Clone)]
struct Events {
    delete: bool,
    create_folder: bool,
    create_file: bool,
    close_write: bool,
    move_from: bool,
    move_to: bool,
    attrib: bool,
    modify: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            delete: true,
            create_folder: true,
            create_file: false,
            close_write: true,
            move_from: true,
            move_to: true,
            attrib: false,
            modify: false,
        }
    }
}

/// Builds a sersync 2.5 confxml.xml and the daemon's command line.
#[derive(Debug, Clone, Default)]
pub struct SersyncdBuilder {
    roots: Vec<(PathBuf, Vec<Remote>)>,
    /// `<localpath user>` of every root.
    run_as: Option<String>,
    events: Events,
    excludes: Option<Vec<String>>,
    ignore_temp_files: Option<bool>,
    auth: Option<(String, PathBuf)>,
    port: Option<u16>,
    common_params: Option<String>,
    raw_head_xml: String,
    raw_sersync_xml: String,
    /// Elements added at the end of `<rsync>` (e.g. `<warm>`).
    raw_rsync_xml: String,
    /// `<ssh start="true"/>` instead of the rsync daemon transport.
    ssh: bool,
    fail_log: Option<(String, u32)>,
    timeout: Option<Option<u32>>,
    crontab_excludes: Vec<String>,
    args: Vec<OsString>,
    launcher: Vec<OsString>,
    /// `--watch-backend`: the backend of the test's `both_backends!` run, if any.
    watch_backend: Option<&'static str>,
}

impl SersyncdBuilder {
    pub fn new() -> SersyncdBuilder {
        SersyncdBuilder {
            watch_backend: super::watch_backend(),
            ..SersyncdBuilder::default()
        }
    }

    /// No `--watch-backend`, whatever the test's matrix or `SERSYNC_TEST_WATCH_BACKEND`
    /// says: the config (or the default) decides.
    pub fn config_watch_backend(mut self) -> Self {
        self.watch_backend = None;
        self
    }

    /// `--watch-backend BACKEND` on every start of this daemon.
    pub fn watch_backend(mut self, backend: &'static str) -> Self {
        self.watch_backend = Some(backend);
        self
    }

    /// A `<localpath watch>` with its remotes (several roots are allowed).
    pub fn root(mut self, watch: &Path, remotes: &[Remote]) -> Self {
        self.roots.push((watch.to_owned(), remotes.to_vec()));
        self
    }

    /// `<auth>` and `<userDefinedPort>` matching `rsyncd`.
    /// `<localpath user="NAME">` on every root: whose credentials rsync takes.
    pub fn run_as(mut self, user: &str) -> Self {
        self.run_as = Some(user.to_owned());
        self
    }

    pub fn rsyncd(mut self, rsyncd: &RsyncDaemon) -> Self {
        self.auth = Some((USER.to_owned(), rsyncd.password_file()));
        self.port = Some(rsyncd.port());
        self
    }

    /// `<inotify><attrib start>`.
    pub fn attrib(mut self, on: bool) -> Self {
        self.events.attrib = on;
        self
    }

    /// `<inotify><modify start>`.
    pub fn modify(mut self, on: bool) -> Self {
        self.events.modify = on;
        self
    }

    /// `<inotify><createFile start>`.
    pub fn create_file(mut self, on: bool) -> Self {
        self.events.create_file = on;
        self
    }

    /// Adds `<exclude expression>` and turns the `<filter>` on.
    pub fn exclude(mut self, expression: &str) -> Self {
        self.excludes
            .get_or_insert_with(Vec::new)
            .push(expression.to_owned());
        self
    }

    /// `<ignoreTempFiles start>` under `<head>` (omitted unless set).
    pub fn ignore_temp_files(mut self, on: bool) -> Self {
        self.ignore_temp_files = Some(on);
        self
    }

    /// `<commonParams params>` (default `-artuz`).
    pub fn common_params(mut self, params: &str) -> Self {
        self.common_params = Some(params.to_owned());
        self
    }

    /// Raw XML inserted under `<head>` (before `<sersync>`).
    pub fn raw_head_xml(mut self, xml: &str) -> Self {
        self.raw_head_xml.push_str(xml);
        self
    }

    /// Raw XML inserted at the end of `<sersync>`.
    /// Elements added at the end of `<rsync>`.
    pub fn raw_rsync_xml(mut self, xml: &str) -> Self {
        self.raw_rsync_xml.push_str(xml);
        self
    }

    /// `<ssh start="true"/>`: rsync over `-e ssh` (the ssh command in `common_params`).
    pub fn ssh(mut self, on: bool) -> Self {
        self.ssh = on;
        self
    }

    pub fn raw_sersync_xml(mut self, xml: &str) -> Self {
        self.raw_sersync_xml.push_str(xml);
        self
    }

    /// `<failLog path timeToExecute>` (default `rsync_fail_log.sh`, 60 minutes); a
    /// relative path resolves against the state directory.
    pub fn fail_log(mut self, path: &str, minutes: u32) -> Self {
        self.fail_log = Some((path.to_owned(), minutes));
        self
    }

    /// `<rsync><timeout>`: `None` writes the stock `start="false"`; the default (when
    /// this is not called) is `start="true" time="30"`.
    pub fn timeout(mut self, seconds: Option<u32>) -> Self {
        self.timeout = Some(seconds);
        self
    }

    /// `<crontab start="false"><crontabfilter start="true">` with these excludes (applied
    /// by full syncs that an operator or the timer asks for).
    pub fn crontab_filter(mut self, patterns: &[&str]) -> Self {
        self.crontab_excludes = patterns.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Runs the daemon through this command (e.g. `unshare --user ...`), which must
    /// exec the binary given as its last arguments, so the PID stays the daemon's.
    pub fn launcher(mut self, argv: &[&str]) -> Self {
        self.launcher = argv.iter().map(OsString::from).collect();
        self
    }

    /// An extra command-line argument (e.g. `-r`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The confxml.xml text.
    pub fn xml(&self) -> String {
        let toggle = |on: bool| if on { "true" } else { "false" };
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<head version=\"2.5\">\n");
        x.push_str("    <host hostip=\"localhost\" port=\"8008\"></host>\n");
        x.push_str("    <debug start=\"true\"/>\n");
        x.push_str("    <fileSystem xfs=\"false\"/>\n");
        if let Some(on) = self.ignore_temp_files {
            x.push_str(&format!(
                "    <ignoreTempFiles start=\"{}\"/>\n",
                toggle(on)
            ));
        }
        match &self.excludes {
            Some(excludes) => {
                x.push_str("    <filter start=\"true\">\n");
                for ex in excludes {
                    x.push_str(&format!("        <exclude expression=\"{}\"/>\n", attr(ex)));
                }
                x.push_str("    </filter>\n");
            }
            None => x.push_str("    <filter start=\"false\"></filter>\n"),
        }
        let e = &self.events;
        x.push_str("    <inotify>\n");
        for (name, on) in [
            ("delete", e.delete),
            ("createFolder", e.create_folder),
            ("createFile", e.create_file),
            ("closeWrite", e.close_write),
            ("moveFrom", e.move_from),
            ("moveTo", e.move_to),
            ("attrib", e.attrib),
            ("modify", e.modify),
        ] {
            x.push_str(&format!("        <{name} start=\"{}\"/>\n", toggle(on)));
        }
        x.push_str("    </inotify>\n");
        x.push_str(&self.raw_head_xml);
        x.push_str("    <sersync>\n");
        for (watch, remotes) in &self.roots {
            let user = self
                .run_as
                .as_ref()
                .map(|user| format!(" user=\"{}\"", attr(user)))
                .unwrap_or_default();
            x.push_str(&format!(
                "        <localpath watch=\"{}\"{user}>\n",
                attr(&watch.display().to_string())
            ));
            for remote in remotes {
                x.push_str(&format!(
                    "            <remote ip=\"{}\" name=\"{}\"/>\n",
                    attr(&remote.ip),
                    attr(&remote.name)
                ));
            }
            x.push_str("        </localpath>\n");
        }
        x.push_str("        <rsync>\n");
        x.push_str(&format!(
            "            <commonParams params=\"{}\"/>\n",
            attr(self.common_params.as_deref().unwrap_or("-artuz"))
        ));
        match &self.auth {
            Some((user, file)) => x.push_str(&format!(
                "            <auth start=\"true\" users=\"{}\" passwordfile=\"{}\"/>\n",
                attr(user),
                attr(&file.display().to_string())
            )),
            None => x.push_str(
                "            <auth start=\"false\" users=\"root\" passwordfile=\"/etc/rsync.pas\"/>\n",
            ),
        }
        match self.port {
            Some(port) => x.push_str(&format!(
                "            <userDefinedPort start=\"true\" port=\"{port}\"/>\n"
            )),
            None => x.push_str("            <userDefinedPort start=\"false\" port=\"874\"/>\n"),
        }
        match self.timeout {
            None => x.push_str("            <timeout start=\"true\" time=\"30\"/>\n"),
            Some(Some(time)) => x.push_str(&format!(
                "            <timeout start=\"true\" time=\"{time}\"/>\n"
            )),
            Some(None) => x.push_str("            <timeout start=\"false\" time=\"100\"/>\n"),
        }
        x.push_str(&format!(
            "            <ssh start=\"{}\"/>\n",
            toggle(self.ssh)
        ));
        x.push_str(&self.raw_rsync_xml);
        x.push_str("        </rsync>\n");
        let (fail_log, minutes) = self
            .fail_log
            .clone()
            .unwrap_or_else(|| ("rsync_fail_log.sh".to_owned(), 60));
        x.push_str(&format!(
            "        <failLog path=\"{}\" timeToExecute=\"{minutes}\"/>\n",
            attr(&fail_log)
        ));
        if self.crontab_excludes.is_empty() {
            x.push_str("        <crontab start=\"false\" schedule=\"600\"></crontab>\n");
        } else {
            x.push_str("        <crontab start=\"false\" schedule=\"600\">\n");
            x.push_str("            <crontabfilter start=\"true\">\n");
            for pattern in &self.crontab_excludes {
                x.push_str(&format!(
                    "                <exclude expression=\"{}\"/>\n",
                    attr(pattern)
                ));
            }
            x.push_str("            </crontabfilter>\n        </crontab>\n");
        }
        x.push_str("        <plugin start=\"false\" name=\"command\"/>\n");
        x.push_str(&self.raw_sersync_xml);
        x.push_str("    </sersync>\n</head>\n");
        x
    }

    /// Writes the config, starts the daemon and waits for READY=1.
    pub fn start(self) -> Sersyncd {
        Sersyncd::start(self)
    }
}

/// Escapes text for a double-quoted XML attribute.
fn attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A running `sersyncd`; SIGTERM (then SIGKILL) on drop, with its log printed when the
/// test is failing.
#[derive(Debug)]
pub struct Sersyncd {
    dir: TempDir,
    /// The extra command-line arguments, kept for [`Sersyncd::restart`].
    args: Vec<OsString>,
    launcher: Vec<OsString>,
    watch_backend: Option<&'static str>,
    child: Option<Child>,
    status: Option<ExitStatus>,
    notifications: Arc<Mutex<Vec<String>>>,
    stop_reader: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Sersyncd {
    fn start(builder: SersyncdBuilder) -> Sersyncd {
        let dir = temp_dir("sersyncd");
        let conf = dir.path().join("confxml.xml");
        std::fs::write(&conf, builder.xml()).expect("write confxml.xml");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).expect("mkdir cwd");
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set socket timeout");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let stop_reader = Arc::new(AtomicBool::new(false));
        // Drains the socket for the daemon's whole life so its sd_notify never blocks.
        let reader = {
            let notifications = Arc::clone(&notifications);
            let stop = Arc::clone(&stop_reader);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        notifications.lock().unwrap().push(text);
                    }
                }
            })
        };
        File::create(dir.path().join("sersyncd.log")).expect("create log");
        let mut daemon = Sersyncd {
            dir,
            args: builder.args,
            launcher: builder.launcher,
            watch_backend: builder.watch_backend,
            child: None,
            status: None,
            notifications,
            stop_reader,
            reader: Some(reader),
        };
        daemon.spawn();
        daemon
    }

    /// Runs the binary on this daemon's config and state directory (its output appended
    /// to the log) and waits for READY=1.
    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = OpenOptions::new()
            .append(true)
            .open(dir.join("sersyncd.log"))
            .expect("open log");
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(sersyncd_binary());
                command
            }
            None => Command::new(sersyncd_binary()),
        };
        let child = command
            .arg("-o")
            .arg(dir.join("confxml.xml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(
                self.watch_backend
                    .iter()
                    .flat_map(|backend| ["--watch-backend", backend]),
            )
            .args(&self.args)
            .env("NOTIFY_SOCKET", dir.join("notify.sock"))
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("STATE_DIRECTORY")
            // Logs go to the file even when the tests run under systemd.
            .env_remove("JOURNAL_STREAM")
            .current_dir(dir.join("cwd"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn sersyncd");
        self.mark(&format!("started PID {}", child.id()));
        self.child = Some(child);
        self.status = None;
        self.wait_ready();
        let to_journald = self.args.iter().any(|arg| arg == "journald");
        if self.watch_backend == Some("fanotify") && !to_journald {
            // A fanotify run that watched with inotify would prove nothing.
            let log = self.log();
            assert!(
                log.contains(" with fanotify ("),
                "sersyncd --watch-backend fanotify is not watching with fanotify:\n{}",
                tail(&log, 20)
            );
        }
    }

    /// Starts the daemon again after [`Sersyncd::terminate`] or [`Sersyncd::kill9`]: same
    /// config, same state directory, same arguments, same log (appended to), and waits for
    /// READY=1 from the new process.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() of a running sersyncd");
        self.forget_notifications();
        self.spawn();
    }

    /// Forgets every notification of the processes before: a marker datagram goes through
    /// the socket after them (the previous process is gone, so all it sent is queued
    /// already), and everything up to the marker is dropped. A READY=1 the old process
    /// sent just before it died must not pass for the new one's.
    fn forget_notifications(&self) {
        let marker = format!("HARNESS-BARRIER={:?}", Instant::now());
        let sender = UnixDatagram::unbound().expect("a datagram socket");
        sender
            .send_to(marker.as_bytes(), self.dir.path().join("notify.sock"))
            .expect("send the barrier");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            {
                let mut seen = self.notifications.lock().unwrap();
                if let Some(at) = seen.iter().position(|n| *n == marker) {
                    seen.drain(..=at);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the notification reader is stuck"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`Sersyncd::restart`] with other extra arguments (kept for later restarts).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(OsString::from).collect();
        self.restart();
    }

    /// Replaces the config file (for a reload).
    pub fn write_config(&self, xml: &str) {
        std::fs::write(self.dir.path().join("confxml.xml"), xml).expect("write confxml.xml");
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("confxml.xml")
    }

    /// Sends `signal` to the daemon (by its PID).
    pub fn signal(&self, signal: Signal) {
        let _ = kill(self.pid(), signal);
    }

    /// Whether the process is still running (false once it exited or was stopped here).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.child = None;
                self.status = Some(status);
                false
            }
            _ => false,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            assert!(
                Instant::now() < deadline,
                "sersyncd still running after {timeout:?}"
            );
            std::thread::sleep(POLL);
        }
        let status = self.status.expect("the exit status of an ended sersyncd");
        self.mark(&format!("exited by itself: {status}"));
        status
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("sersyncd is running");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
    }

    /// SIGKILL (by PID) and wait: an unclean stop, as after a crash or power loss.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("sersyncd is running");
        let _ = child.kill();
        let status = child.wait().expect("wait for a killed sersyncd");
        self.mark(&format!("SIGKILL to PID {}: {status}", child.id()));
        self.status = Some(status);
        status
    }

    /// A line of the harness's own in the daemon's log, to read failures by.
    fn mark(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut log) = OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("sersyncd.log"))
        {
            let _ = writeln!(log, "---- harness: {what} ----");
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.notified("READY=1") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.status = Some(status);
                panic!("sersyncd exited with {status} before READY=1");
            }
            if Instant::now() >= deadline {
                panic!("sersyncd sent no READY=1 within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// True when some sd_notify datagram so far had the line `assignment` (e.g. `READY=1`).
    pub fn notified(&self, assignment: &str) -> bool {
        self.notifications
            .lock()
            .unwrap()
            .iter()
            .any(|datagram| datagram.lines().any(|line| line == assignment))
    }

    /// Every sd_notify datagram so far.
    pub fn notifications(&self) -> Vec<String> {
        self.notifications.lock().unwrap().clone()
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("sersyncd.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The working directory the daemon was started in.
    pub fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// Sends SIGTERM and waits (SIGKILL after 10 s); returns how the daemon exited.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(child) = self.child.take() {
            let pid = child.id();
            let status = terminate(child, STOP_TIMEOUT);
            self.mark(&format!("SIGTERM to PID {pid}: {status}"));
            self.status = Some(status);
        }
        self.status.expect("the daemon has an exit status")
    }
}

impl Drop for Sersyncd {
    fn drop(&mut self) {
        self.terminate();
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- sersyncd log (last 200 lines; {:?}) ----\n{}\n---- end ----",
                self.status,
                tail(&self.log(), 200)
            );
        }
    }
}

/// SIGTERM to the child we started (by its PID), wait up to `grace`, then SIGKILL.
pub fn terminate(mut child: Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("pid {pid} did not exit within {grace:?} of SIGTERM: SIGKILL");
    let _ = child.kill();
    child.wait().expect("wait for a killed child")
}
