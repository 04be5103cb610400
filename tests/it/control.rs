//! The D-Bus control interface and `sersyncctl`, over private dbus-daemons.
//!
//! Two kinds of tests:
//! - **adapter** tests run `sersync::control::serve` in this process with a scripted fake
//!   daemon loop ([`Stub`]). They pin the interface, its errors, the policy and the exit
//!   codes of the real `sersyncctl` binary without rsync or timing of real syncs;
//! - **end-to-end** tests (`e2e_*`) run real `sersyncd` processes on a private bus
//!   (`--bus-address`) against real rsync daemons (the shared harness), driven by the real
//!   `sersyncctl`.
//!
//! Every test starts its own `dbus-daemon` ([`Bus`]): "system-like" is the stock system
//! bus's default-deny policy plus the shipped `dbus/org.sersync.Sersync1.conf`;
//! "permissive" lets everyone do everything, to show the daemon's own caller check. Tests
//! that need an unprivileged caller create a system user (`useradd`) and remove it again;
//! they need root (CI runs as root).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::harness::users::{AdminGroup, TestUser};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value as Json;
use sersync::control::{
    self, BusKind, Command as ControlCommand, ControlError, ControlHandle, Counters, Event,
    FailureRecord, Histogram, RemoteStatus, RunCounts, ServeOptions, Status,
};

use crate::harness::bus::{Bus, Policy, SERSYNCCTL};
use crate::harness::{
    CONVERGE, Env, POLL, Remote, SersyncdBuilder, require_tool, temp_dir, wait_converged, write,
};

const SERSYNCD: &str = env!("CARGO_BIN_EXE_sersyncd");

/// How long one `sersyncctl` run may take before the test calls it hung.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

fn introspection_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.sersync.Sersync1.xml")
}

// ---------------------------------------------------------------------------------------
// Running sersyncctl
// ---------------------------------------------------------------------------------------

/// What one `sersyncctl` run did.
#[derive(Debug)]
pub(crate) struct Ctl {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ctl {
    pub(crate) fn json(&self) -> Json {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    #[track_caller]
    pub(crate) fn expect(self, code: i32) -> Ctl {
        assert_eq!(
            self.code, code,
            "sersyncctl exited {} (expected {code})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `program args` to completion within [`CTL_TIMEOUT`].
pub(crate) fn run(mut command: Command) -> Ctl {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(CTL_TIMEOUT) {
        Ok(output) => output.expect("wait for the child"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{command:?} did not finish within {CTL_TIMEOUT:?}");
        }
    };
    Ctl {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `sersyncctl --bus-address BUS args…` as root (the test process).
pub(crate) fn ctl(bus: &Bus, args: &[&str]) -> Ctl {
    let mut command = Command::new(SERSYNCCTL);
    command.arg("--bus-address").arg(bus.address()).args(args);
    run(command)
}

/// The same, as `user` (through `runuser`).
///
/// A freshly written copy of the binary can fail to execute with ETXTBSY for a moment: a
/// child forked by another test thread while the copy was open for writing holds that
/// descriptor until it execs. That is retried, briefly.
fn ctl_as(user: &TestUser, bus: &Bus, args: &[&str]) -> Ctl {
    let program = bus.public_sersyncctl();
    let mut attempts = 0;
    loop {
        let mut command = Command::new("runuser");
        command
            .arg("-u")
            .arg(&user.name)
            .arg("--")
            .arg(&program)
            .arg("--bus-address")
            .arg(bus.address())
            .args(args);
        let result = run(command);
        attempts += 1;
        if attempts < 20 && result.stderr.contains("Text file busy") {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        return result;
    }
}

/// A running `sersyncctl monitor`, as root or (through runuser) as a test user, whose
/// lines are collected as they come. Stopped (SIGTERM to the process we started, which
/// runuser passes on) when dropped.
pub(crate) struct Monitor {
    child: Option<std::process::Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Monitor {
    pub(crate) fn start(bus: &Bus, user: Option<&TestUser>, args: &[&str]) -> Monitor {
        let mut command = match user {
            None => Command::new(SERSYNCCTL),
            Some(user) => {
                let mut command = Command::new("runuser");
                command
                    .arg("-u")
                    .arg(&user.name)
                    .arg("--")
                    .arg(bus.public_sersyncctl());
                command
            }
        };
        let mut child = command
            .arg("--bus-address")
            .arg(bus.address())
            .arg("monitor")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sersyncctl monitor");
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            let pipe = child.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Monitor {
            child: Some(child),
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next line, if one comes within `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits (bounded) for a line that satisfies `want`, and returns it.
    #[track_caller]
    pub(crate) fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left.min(Duration::from_millis(200))) {
                Some(line) if want(&line) => return line,
                Some(_) => {}
                None => assert!(
                    Instant::now() < deadline,
                    "the monitor never printed {what}; it printed:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Every line printed so far.
    pub(crate) fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::harness::terminate(child, Duration::from_secs(5));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Unprivileged users
// ---------------------------------------------------------------------------------------

/// Root is needed to create users and groups: `false` (after a SKIP line) without it;
/// under CI (`CI=true`) that is a failure.
fn can_create_users() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "creating test users needs root (CI=true: not skipping)"
    );
    eprintln!("SKIP: needs root to create users and groups");
    false
}

// ---------------------------------------------------------------------------------------
// A fake daemon loop behind the real adapter
// ---------------------------------------------------------------------------------------

/// How the stub's loop behaves.
#[derive(Debug, Clone)]
struct StubOptions {
    instance: String,
    reply_timeout: Duration,
    /// Never answer (the reply channels are kept open).
    silent: bool,
    /// Reload answers these diagnostics.
    reject_reload: Option<String>,
}

impl StubOptions {
    fn new(instance: &str) -> Self {
        StubOptions {
            instance: instance.to_owned(),
            reply_timeout: control::REPLY_TIMEOUT,
            silent: false,
            reject_reload: None,
        }
    }
}

/// `control::serve` in this process, fed by a scripted loop: roots `/srv/www` (full syncs
/// succeed) and `/srv/fails` (full syncs fail); two failures until RetryFailed.
struct Stub {
    status: Arc<RwLock<Status>>,
    events: Sender<Event>,
    /// The commands the loop received, by name.
    received: Arc<Mutex<Vec<String>>>,
    handle: Option<ControlHandle>,
}

impl Stub {
    fn start(bus: &Bus, options: StubOptions) -> Stub {
        Stub::try_start(bus, options).expect("serve the stub")
    }

    fn try_start(bus: &Bus, options: StubOptions) -> Result<Stub, ControlError> {
        let status = Arc::new(RwLock::new(sample_status(&options.instance)));
        let (events, events_rx) = mpsc::channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (commands_tx, commands_rx) = mpsc::channel::<ControlCommand>();
        let commands: Box<dyn Fn(ControlCommand) + Send + Sync> = Box::new(move |command| {
            let _ = commands_tx.send(command);
        });
        {
            let status = Arc::clone(&status);
            let received = Arc::clone(&received);
            let events = events.clone();
            let options = options.clone();
            std::thread::spawn(move || {
                stub_loop(&options, &status, &received, &events, commands_rx)
            });
        }
        let serve_options = ServeOptions {
            bus: BusKind::System,
            bus_address: Some(bus.address().to_owned()),
            reply_timeout: options.reply_timeout,
            ..ServeOptions::new(options.instance.clone(), "/etc/sersync/stub.xml")
        };
        let handle = control::serve(serve_options, Arc::clone(&status), commands, events_rx)?;
        Ok(Stub {
            status,
            events,
            received,
            handle: Some(handle),
        })
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.write().unwrap());
    }

    fn stop(&mut self) {
        self.handle.take();
    }
}

/// The stub's failing remote's last error in full: it names a file.
const LAST_ERROR: &str = "rsync exit 23: partial transfer due to error: rsync: [sender] \
                          send_files failed to open \"/srv/www/secret-dir/plan.txt\": \
                          Permission denied (13)";
/// The same error as everyone sees it.
const LAST_ERROR_SUMMARY: &str = "rsync exit 23: partial transfer due to error";

fn sample_status(instance: &str) -> Status {
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        instance: instance.to_owned(),
        config_path: PathBuf::from("/etc/sersync/stub.xml"),
        paused: false,
        queue_depth: 3,
        in_flight: 1,
        failed: 2,
        watches: 42,
        remotes: vec![
            RemoteStatus {
                name: "/srv/www -> 10.0.0.2::www".into(),
                remote: "10.0.0.2::www".into(),
                state: "ok".into(),
                last_ok: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                last_error: None,
                last_error_summary: None,
                pending: 3,
                owed_since: None,
                bytes_sent: 2048,
                runs: RunCounts {
                    ok: 4,
                    partial: 0,
                    failed: 0,
                },
                root: PathBuf::from("/srv/www"),
                full_sync: None,
            },
            RemoteStatus {
                name: "/srv/www -> 10.0.0.3::www".into(),
                remote: "10.0.0.3::www".into(),
                state: "failing".into(),
                last_ok: None,
                last_error: Some(LAST_ERROR.into()),
                last_error_summary: Some(LAST_ERROR_SUMMARY.into()),
                pending: 0,
                owed_since: Instant::now().checked_sub(Duration::from_secs(42)),
                bytes_sent: 0,
                runs: RunCounts {
                    ok: 0,
                    partial: 0,
                    failed: 2,
                },
                root: PathBuf::from("/srv/www"),
                full_sync: None,
            },
        ],
        counters: Counters {
            events: 10,
            batches: 4,
            files: 9,
            bytes: 4096,
            errors: 2,
        },
        blocked_watchers: Vec::new(),
        delivery_latency: Histogram::new(&control::DELIVERY_BUCKETS),
        full_sync_duration: Histogram::new(&control::FULL_SYNC_BUCKETS),
    }
}

fn sample_failures() -> Vec<FailureRecord> {
    vec![
        FailureRecord {
            remote: "10.0.0.3::www".into(),
            root: PathBuf::from("/srv/www"),
            path: b"a.txt".to_vec(),
            rsync_exit: 5,
            message: "@ERROR: auth failed on module www".into(),
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        },
        FailureRecord {
            remote: "10.0.0.3::www".into(),
            root: PathBuf::from("/srv/www"),
            path: b"dir/bad\xffname".to_vec(),
            rsync_exit: 5,
            message: "@ERROR: auth failed on module www".into(),
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        },
    ]
}

fn stub_loop(
    options: &StubOptions,
    status: &RwLock<Status>,
    received: &Mutex<Vec<String>>,
    events: &Sender<Event>,
    commands: mpsc::Receiver<ControlCommand>,
) {
    let mut failures = sample_failures();
    let jobs = AtomicU64::new(1);
    // Reply channels of a silent stub, kept so the adapter sees no answer (not a hang-up).
    let mut unanswered: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for command in commands {
        let name = match &command {
            ControlCommand::Pause(_) => "Pause",
            ControlCommand::Resume(_) => "Resume",
            ControlCommand::RetryFailed(_) => "RetryFailed",
            ControlCommand::FullSync { force: false, .. } => "FullSync",
            ControlCommand::FullSync { force: true, .. } => "ForceFullSync",
            ControlCommand::ListFailures(_) => "ListFailures",
            ControlCommand::Reload(_) => "Reload",
            ControlCommand::Checkpoint { .. } => "Checkpoint",
            ControlCommand::CheckpointStatus { .. } => "CheckpointStatus",
        };
        received.lock().unwrap().push(name.to_owned());
        if options.silent {
            unanswered.push(Box::new(command));
            continue;
        }
        match command {
            ControlCommand::Pause(reply) => {
                status.write().unwrap().paused = true;
                let _ = reply.send(());
            }
            ControlCommand::Resume(reply) => {
                status.write().unwrap().paused = false;
                let _ = reply.send(());
            }
            ControlCommand::RetryFailed(reply) => {
                let queued = failures.len() as u32;
                failures.clear();
                status.write().unwrap().failed = 0;
                let _ = reply.send(queued);
            }
            ControlCommand::FullSync { root, reply, .. } => {
                let success = match root.as_deref().and_then(Path::to_str) {
                    None | Some("/srv/www") => true,
                    Some("/srv/fails") => false,
                    Some(other) => {
                        let _ = reply
                            .send(Err(format!("{other} is not a watch root of this instance")));
                        continue;
                    }
                };
                let job_id = jobs.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(job_id));
                let events = events.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = events.send(Event::FullSyncFinished {
                        job_id,
                        root: root.unwrap_or_default(),
                        success,
                    });
                });
            }
            ControlCommand::ListFailures(reply) => {
                let _ = reply.send(failures.clone());
            }
            ControlCommand::Reload(reply) => {
                let _ = reply.send(match &options.reject_reload {
                    Some(diagnostics) => Err(diagnostics.clone()),
                    None => Ok(()),
                });
            }
            // The real thing is tested against the daemon (tests/it/checkpoints.rs).
            ControlCommand::Checkpoint { reply, .. } => {
                let _ = reply.send(Ok(7));
            }
            ControlCommand::CheckpointStatus { id, reply } => {
                let _ = reply.send((id == 7).then_some(control::CheckpointState::Reached));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Adapter tests
// ---------------------------------------------------------------------------------------

#[test]
fn status_and_every_method_round_trip_through_sersyncctl() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let stub = Stub::start(
        &bus,
        StubOptions {
            reject_reload: Some("/etc/sersync/stub.xml:3:5: error: unknown thing".into()),
            ..StubOptions::new("web")
        },
    );

    let text = ctl(&bus, &["status"]).expect(0).stdout;
    assert!(text.contains("sersync instance web"), "{text}");
    assert!(
        text.contains("3 paths pending, 1 batch in flight"),
        "{text}"
    );
    assert!(
        text.contains("/srv/www -> 10.0.0.3::www  failing"),
        "{text}"
    );

    let json = ctl(&bus, &["status", "--json"]).expect(0).json();
    assert_eq!(json["instance"], "web");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["config_path"], "/etc/sersync/stub.xml");
    assert_eq!(json["paused"], false);
    assert_eq!(json["queue_depth"], 3);
    assert_eq!(json["in_flight"], 1);
    assert_eq!(json["failed"], 2);
    assert_eq!(json["watches"], 42);
    assert_eq!(json["remotes"][0]["name"], "/srv/www -> 10.0.0.2::www");
    assert_eq!(json["remotes"][0]["state"], "ok");
    assert_eq!(json["remotes"][0]["last_ok"], "2023-11-14T22:13:20Z");
    assert!(json["remotes"][0]["last_error"].is_null());
    assert!(json["remotes"][1]["last_ok"].is_null());
    // Root gets rsync's own words.
    assert_eq!(json["remotes"][1]["last_error"], LAST_ERROR);
    assert_eq!(json["counters"]["bytes"], 4096);

    ctl(&bus, &["pause"]).expect(0);
    assert_eq!(
        ctl(&bus, &["status", "--json"]).expect(0).json()["paused"],
        true
    );
    assert!(ctl(&bus, &["status"]).expect(0).stdout.contains("PAUSED"));
    ctl(&bus, &["resume"]).expect(0);
    assert_eq!(
        ctl(&bus, &["status", "--json"]).expect(0).json()["paused"],
        false
    );

    let failures = ctl(&bus, &["failures", "--json"]).expect(0).json();
    assert_eq!(failures.as_array().map(Vec::len), Some(2), "{failures}");
    assert_eq!(failures[0]["path"], "a.txt");
    assert_eq!(failures[0]["rsync_exit"], 5);
    assert_eq!(failures[1]["path"], "dir/bad\u{fffd}name");
    assert_eq!(failures[1]["path_bytes"][7], 255);
    let text = ctl(&bus, &["failures"]).expect(0).stdout;
    assert!(
        text.contains("/srv/www/dir/bad\\xffname: rsync exit 5"),
        "{text}"
    );

    assert_eq!(
        ctl(&bus, &["retry-failed", "--json"]).expect(0).json()["queued"],
        2
    );
    assert_eq!(
        ctl(&bus, &["failures", "--json"]).expect(0).json(),
        serde_json::json!([])
    );
    assert!(
        ctl(&bus, &["retry-failed"])
            .expect(0)
            .stdout
            .contains("0 failed changes queued")
    );

    let job = ctl(&bus, &["full-sync", "--json"]).expect(0).json();
    assert!(job["job_id"].as_u64().is_some(), "{job}");
    ctl(&bus, &["full-sync", "--root", "/srv/www"]).expect(0);
    let unknown = ctl(&bus, &["full-sync", "--root", "/srv/nope"]).expect(1);
    assert!(
        unknown.stderr.contains("/srv/nope is not a watch root"),
        "{}",
        unknown.stderr
    );

    let rejected = ctl(&bus, &["reload"]).expect(1);
    assert!(
        rejected
            .stderr
            .contains("stub.xml:3:5: error: unknown thing"),
        "{}",
        rejected.stderr
    );

    assert_eq!(
        stub.received(),
        [
            "Pause",
            "Resume",
            "ListFailures",
            "ListFailures",
            "RetryFailed",
            "ListFailures",
            "RetryFailed",
            "FullSync",
            "FullSync",
            "FullSync",
            "Reload"
        ]
    );
}

#[test]
fn full_sync_wait_returns_with_the_jobs_result() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let _stub = Stub::start(&bus, StubOptions::new("web"));
    let done = ctl(
        &bus,
        &["full-sync", "--wait", "--json", "--root", "/srv/www"],
    )
    .expect(0);
    let json = done.json();
    assert_eq!(json["success"], true, "{json}");
    assert_eq!(json["root"], "/srv/www");
    let failed = ctl(&bus, &["full-sync", "--wait", "--root", "/srv/fails"]).expect(1);
    assert!(failed.stdout.contains("FAILED"), "{}", failed.stdout);
    let text = ctl(&bus, &["full-sync", "--wait"]).expect(0).stdout;
    assert!(text.contains("finished"), "{text}");
}

#[test]
fn full_sync_wait_gives_up_when_the_daemon_leaves() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let mut stub = Stub::start(&bus, StubOptions::new("web"));
    // The stub reports the end after 300 ms; stop it first.
    let mut command = Command::new(SERSYNCCTL);
    command
        .arg("--bus-address")
        .arg(bus.address())
        .args(["full-sync", "--wait"]);
    let waiter = std::thread::spawn(move || run(command));
    std::thread::sleep(Duration::from_millis(100));
    stub.stop();
    // The end is never reported: the daemon left (or was gone before the call).
    let result = waiter.join().unwrap().expect(69);
    assert!(
        result.stderr.contains("left the bus") || result.stderr.contains("not running"),
        "{}",
        result.stderr
    );
}

#[test]
fn monitor_prints_signals_and_throttled_property_changes_as_json_lines() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let mut stub = Stub::start(&bus, StubOptions::new("web"));
    let mut child = Command::new(SERSYNCCTL)
        .arg("--bus-address")
        .arg(bus.address())
        .args(["monitor", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sersyncctl monitor");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Let the monitor subscribe: it shows nothing until then, so send until it sees one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        stub.events
            .send(Event::StateChanged {
                remote: "/srv/www -> 10.0.0.3::www".into(),
                state: "backoff".into(),
            })
            .unwrap();
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "monitor printed nothing");
    };
    let first: Json = serde_json::from_str(&first).unwrap();
    assert_eq!(first["signal"], "StateChanged");
    assert_eq!(first["state"], "backoff");

    stub.events
        .send(Event::SyncFailed {
            remote: "/srv/www -> 10.0.0.3::www".into(),
            path: b"x/\xffy".to_vec(),
            rsync_exit: 23,
            message: "some files could not be transferred".into(),
            summary: "rsync exit 23: partial transfer due to error".into(),
        })
        .unwrap();
    stub.update(|s| {
        s.paused = true;
        s.queue_depth = 99;
    });
    let mut saw_failed = 0;
    let mut saw_properties = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(saw_failed > 0 && saw_properties) {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!("monitor missed signals (failed {saw_failed}, properties {saw_properties})")
            });
        let json: Json = serde_json::from_str(&line).unwrap();
        match json["signal"].as_str() {
            Some("SyncFailed") => {
                // Root gets the failure in full, once (not also the path-less broadcast).
                assert_eq!(json["rsync_exit"], 23);
                assert_eq!(json["path_bytes"], serde_json::json!([120, 47, 255, 121]));
                assert_eq!(json["message"], "some files could not be transferred");
                saw_failed += 1;
            }
            Some("PropertiesChanged") if json["changed"].get("Paused").is_some() => {
                assert_eq!(json["changed"]["Paused"], true);
                assert_eq!(json["changed"]["QueueDepth"], 99);
                saw_properties = true;
            }
            _ => {}
        }
    }
    // A marker after everything: whatever came of the failure came before it.
    stub.events
        .send(Event::StateChanged {
            remote: "marker".into(),
            state: "ok".into(),
        })
        .unwrap();
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the marker");
        let json: Json = serde_json::from_str(&line).unwrap();
        if json["remote"] == "marker" {
            break;
        }
        if json["signal"] == "SyncFailed" {
            saw_failed += 1;
        }
    }
    assert_eq!(saw_failed, 1, "one failure, printed {saw_failed} times");

    // The daemon leaving ends the monitor with 69.
    stub.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("monitor did not notice that the daemon left");
        }
        std::thread::sleep(POLL);
    };
    assert_eq!(status.code(), Some(69));
}

#[test]
fn properties_changed_is_emitted_at_most_once_a_second() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let stub = Stub::start(&bus, StubOptions::new("web"));
    let connection = bus.connect();
    let owner = zbus::blocking::fdo::DBusProxy::new(&connection)
        .unwrap()
        .get_name_owner(
            control::names::bus_name("web")
                .unwrap()
                .as_str()
                .try_into()
                .unwrap(),
        )
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(owner.as_str())
        .unwrap()
        .interface("org.freedesktop.DBus.Properties")
        .unwrap()
        .member("PropertiesChanged")
        .unwrap()
        .build();
    let signals = zbus::blocking::MessageIterator::for_match_rule(rule, &connection, None).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    {
        let count = Arc::clone(&count);
        std::thread::spawn(move || {
            for _ in signals.flatten() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Counters move every 10 ms for 3.5 s: ~350 changes.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(3500) {
        n += 1;
        stub.update(|s| s.counters.events = 1000 + n);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Properties are read live, not throttled.
    let proxy =
        control::client::proxy(&connection, &control::names::bus_name("web").unwrap()).unwrap();
    assert_eq!(proxy.counters().unwrap().events, 1000 + n);
    std::thread::sleep(Duration::from_millis(1200));
    let signals = count.load(Ordering::Relaxed);
    assert!(
        (2..=6).contains(&signals),
        "{signals} PropertiesChanged signals for {n} changes in 3.5 s (expected one per second)"
    );
}

/// The `<interface name="org.sersync.Sersync1">` element as written, from the start of its
/// line to its end tag.
fn interface_raw(xml: &str) -> &str {
    let start = xml
        .find("<interface name=\"org.sersync.Sersync1\">")
        .unwrap_or_else(|| panic!("no org.sersync.Sersync1 interface in:\n{xml}"));
    let start = xml[..start].rfind('\n').map_or(0, |i| i + 1);
    let end =
        start + xml[start..].find("</interface>").expect("</interface>") + "</interface>".len();
    &xml[start..end]
}

/// [`interface_raw`] with one trimmed line per line, so indentation does not matter.
fn interface_element(xml: &str) -> String {
    interface_raw(xml)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn introspect(bus: &Bus, instance: &str) -> String {
    let connection = bus.connect();
    let proxy = zbus::blocking::fdo::IntrospectableProxy::builder(&connection)
        .destination(control::names::bus_name(instance).unwrap())
        .unwrap()
        .path(control::OBJECT_PATH)
        .unwrap()
        .build()
        .unwrap();
    proxy.introspect().expect("Introspect")
}

/// Compares the live interface with `dbus/org.sersync.Sersync1.xml`;
/// `SERSYNC_UPDATE_GENERATED=1` rewrites the file from the live object.
fn assert_introspection_matches(live_xml: &str) {
    let live = interface_element(live_xml);
    let path = introspection_file();
    if std::env::var_os("SERSYNC_UPDATE_GENERATED").is_some_and(|v| v == "1") {
        // Keep the file's own header (everything before <node>), replace the interface.
        let header = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find("<node>").map(|i| old[..i].to_owned()))
            .unwrap_or_default();
        let body = format!("{header}<node>\n{}\n</node>\n", interface_raw(live_xml));
        std::fs::write(&path, body).expect("write the introspection XML");
        return;
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let committed = interface_element(&committed);
    if committed != live {
        let diff: Vec<String> = committed
            .lines()
            .zip(live.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("  committed: {a}\n  live:      {b}"))
            .collect();
        panic!(
            "{} does not match the live interface (run `SERSYNC_UPDATE_GENERATED=1 cargo test \
             introspection` and commit the result); first differences:\n{}\n(committed {} \
             lines, live {} lines)",
            path.display(),
            diff.join("\n"),
            committed.lines().count(),
            live.lines().count()
        );
    }
}

#[test]
fn introspection_xml_in_dbus_matches_the_adapter() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let _stub = Stub::start(&bus, StubOptions::new("web"));
    assert_introspection_matches(&introspect(&bus, "web"));
}

#[test]
fn list_unescapes_instance_names_and_i_picks_one_of_several() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let _web = Stub::start(&bus, StubOptions::new("web-1"));
    let _img = Stub::start(&bus, StubOptions::new("img.2"));
    assert_eq!(ctl(&bus, &["list"]).expect(0).stdout, "img.2\nweb-1\n");
    let listed = ctl(&bus, &["list", "--json"]).expect(0).json();
    assert_eq!(listed[1]["instance"], "web-1");
    assert_eq!(listed[1]["bus_name"], "org.sersync.Sersync1.i_web_2d1");
    let ambiguous = ctl(&bus, &["status"]).expect(64);
    assert!(
        ambiguous.stderr.contains("several instances") && ambiguous.stderr.contains("img.2, web-1"),
        "{}",
        ambiguous.stderr
    );
    for instance in ["web-1", "img.2"] {
        let json = ctl(&bus, &["-i", instance, "status", "--json"])
            .expect(0)
            .json();
        assert_eq!(json["instance"], instance);
        let json = ctl(&bus, &["status", "--instance", instance, "--json"])
            .expect(0)
            .json();
        assert_eq!(json["instance"], instance);
    }
}

#[test]
fn no_daemon_or_no_bus_is_69_and_usage_errors_are_64() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    assert_eq!(ctl(&bus, &["list"]).expect(0).stdout, "");
    assert_eq!(
        ctl(&bus, &["list", "--json"]).expect(0).json(),
        serde_json::json!([])
    );
    let none = ctl(&bus, &["status"]).expect(69);
    assert!(
        none.stderr.contains("no sersyncd instance is running"),
        "{}",
        none.stderr
    );
    let missing = ctl(&bus, &["-i", "web", "pause"]).expect(69);
    assert!(
        missing.stderr.contains("\"web\" is not running"),
        "{}",
        missing.stderr
    );
    let dir = temp_dir("nobus");
    let nobus = format!("unix:path={}", dir.path().join("none").display());
    let mut command = Command::new(SERSYNCCTL);
    command.args(["--bus-address", &nobus, "status"]);
    let unreachable = run(command).expect(69);
    assert!(
        unreachable.stderr.contains("cannot connect"),
        "{}",
        unreachable.stderr
    );

    for args in [
        &[][..],
        &["bogus"][..],
        &["full-sync", "--timeout", "5"][..],
        &["--bus", "nowhere", "status"][..],
        &["-i", "", "status"][..],
    ] {
        ctl(&bus, args).expect(64);
    }
    ctl(&bus, &["--help"]).expect(0);
    ctl(&bus, &["--version"]).expect(0);
}

#[test]
fn a_daemon_that_does_not_answer_times_out_with_a_named_error() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let stub = Stub::start(
        &bus,
        StubOptions {
            silent: true,
            reply_timeout: Duration::from_secs(1),
            ..StubOptions::new("web")
        },
    );
    let stuck = ctl(&bus, &["pause"]).expect(1);
    assert!(
        stuck.stderr.contains("did not answer Pause within 1 s"),
        "{}",
        stuck.stderr
    );
    // Reading the status needs no answer from the loop.
    ctl(&bus, &["status"]).expect(0);
    let connection = bus.connect();
    let proxy =
        control::client::proxy(&connection, &control::names::bus_name("web").unwrap()).unwrap();
    match proxy.retry_failed() {
        Err(control::Error::Timeout(message)) => {
            assert!(message.contains("RetryFailed"), "{message}")
        }
        other => panic!("expected org.sersync.Sersync1.Error.Timeout, got {other:?}"),
    }
    assert_eq!(stub.received(), ["Pause", "RetryFailed"]);
}

#[test]
fn an_instance_name_is_owned_by_one_daemon_only() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let first = Stub::start(&bus, StubOptions::new("web"));
    match Stub::try_start(&bus, StubOptions::new("web")) {
        Err(err @ ControlError::NameTaken { .. }) => {
            assert!(err.to_string().contains("another sersyncd runs"), "{err}");
        }
        Err(other) => panic!("expected NameTaken, got {other}"),
        Ok(_) => panic!("a second daemon took the name of a running one"),
    }
    // The first one still answers, and its name is free again once it stops.
    ctl(&bus, &["-i", "web", "status"]).expect(0);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Stub::try_start(&bus, StubOptions::new("web")) {
            Ok(_) => break,
            Err(err) => assert!(Instant::now() < deadline, "name not released: {err}"),
        }
        std::thread::sleep(POLL);
    }
}

#[test]
fn unprivileged_users_read_the_status_but_the_policy_denies_changes_and_file_names() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(user) = TestUser::create(&[]) else {
        return;
    };
    let stub = Stub::start(&bus, StubOptions::new("web"));
    let json = ctl_as(&user, &bus, &["status", "--json"]).expect(0).json();
    assert_eq!(json["instance"], "web");
    assert_eq!(json["failed"], 2);
    // The remote's state, and its error without rsync's words (which name a file).
    assert_eq!(json["remotes"][1]["state"], "failing");
    assert_eq!(json["remotes"][1]["last_error"], LAST_ERROR_SUMMARY);
    let text = ctl_as(&user, &bus, &["status"]).expect(0).stdout;
    assert!(!text.contains("secret-dir"), "{text}");
    assert_eq!(ctl_as(&user, &bus, &["list"]).expect(0).stdout, "web\n");
    for args in [
        &["pause"][..],
        &["resume"][..],
        &["retry-failed"][..],
        &["full-sync"][..],
        &["reload"][..],
        &["failures"][..],
    ] {
        let denied = ctl_as(&user, &bus, args).expect(77);
        assert!(denied.stderr.contains("access denied"), "{}", denied.stderr);
        // The bus said no, before the daemon was asked.
        assert!(
            denied
                .stderr
                .contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{}",
            denied.stderr
        );
    }
    let denied = ctl_as(&user, &bus, &["failures", "--json"]).expect(77);
    assert!(
        denied.stderr.contains(
            "listing failures (they name files) needs root or membership in group sersync"
        ),
        "{}",
        denied.stderr
    );
    assert_eq!(denied.stdout, "");
    // Nothing went through to the loop.
    assert!(stub.received().is_empty(), "{:?}", stub.received());
}

#[test]
fn the_daemon_checks_the_caller_where_the_bus_policy_does_not() {
    let Some(bus) = Bus::start(Policy::Permissive) else {
        return;
    };
    let Some(user) = TestUser::create(&[]) else {
        return;
    };
    let stub = Stub::start(&bus, StubOptions::new("web"));
    let json = ctl_as(&user, &bus, &["status", "--json"]).expect(0).json();
    assert_eq!(json["remotes"][1]["last_error"], LAST_ERROR_SUMMARY);
    let denied = ctl_as(&user, &bus, &["failures"]).expect(77);
    assert!(
        denied
            .stderr
            .contains("listing failures (ListFailures) needs root"),
        "{}",
        denied.stderr
    );
    for args in [&["pause"][..], &["retry-failed"][..], &["full-sync"][..]] {
        let denied = ctl_as(&user, &bus, args).expect(77);
        assert!(
            denied
                .stderr
                .contains("needs root or membership in group sersync"),
            "{}",
            denied.stderr
        );
    }
    assert!(stub.received().is_empty(), "{:?}", stub.received());
    // Root passes the same check.
    ctl(&bus, &["pause"]).expect(0);
    assert_eq!(stub.received(), ["Pause"]);
}

#[test]
fn members_of_group_sersync_may_change() {
    if !can_create_users() {
        return;
    }
    // The group must exist before the bus reads its policy.
    let _group = AdminGroup::ensure();
    for policy in [Policy::SystemLike, Policy::Permissive] {
        let Some(bus) = Bus::start(policy) else {
            return;
        };
        let Some(member) = TestUser::create(&[control::interface::ADMIN_GROUP]) else {
            return;
        };
        let stub = Stub::start(&bus, StubOptions::new("web"));
        // File names too: the failures, and the remote's error in rsync's own words.
        let failures = ctl_as(&member, &bus, &["failures", "--json"])
            .expect(0)
            .json();
        assert_eq!(failures[1]["path"], "dir/bad\u{fffd}name", "{policy:?}");
        let json = ctl_as(&member, &bus, &["status", "--json"])
            .expect(0)
            .json();
        assert_eq!(json["remotes"][1]["last_error"], LAST_ERROR, "{policy:?}");
        ctl_as(&member, &bus, &["pause"]).expect(0);
        ctl_as(&member, &bus, &["retry-failed"]).expect(0);
        ctl_as(&member, &bus, &["full-sync"]).expect(0);
        assert_eq!(
            stub.received(),
            ["ListFailures", "Pause", "RetryFailed", "FullSync"],
            "{policy:?}"
        );
    }
}

/// `dbus-send` as `user`: `method` of instance `web`'s object, without arguments.
fn dbus_send_as(user: &TestUser, bus: &Bus, method: &str) -> Ctl {
    let mut command = Command::new("runuser");
    command
        .arg("-u")
        .arg(&user.name)
        .arg("--")
        .arg("dbus-send")
        .arg(format!("--bus={}", bus.address()))
        .arg("--print-reply")
        .arg(format!(
            "--dest={}",
            control::names::bus_name("web").unwrap()
        ))
        .arg(control::OBJECT_PATH)
        .arg(format!("{}.{method}", control::INTERFACE));
    run(command)
}

/// Sends `StateChanged` through the stub until every monitor printed one: each is then
/// subscribed, and has its answer to `WatchFailures` (asked before it prints anything).
fn until_monitors_listen(stub: &Stub, monitors: &mut [(&str, Monitor)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = vec![false; monitors.len()];
    while !ready.iter().all(|r| *r) {
        assert!(
            Instant::now() < deadline,
            "monitors not listening: {ready:?}"
        );
        stub.events
            .send(Event::StateChanged {
                remote: "warm-up".into(),
                state: "ok".into(),
            })
            .unwrap();
        for ((_, monitor), ready) in monitors.iter_mut().zip(&mut ready) {
            while let Some(line) = monitor.next_line(Duration::from_millis(100)) {
                *ready |= line.contains("warm-up");
            }
        }
    }
}

#[test]
fn file_names_reach_root_and_group_sersync_but_no_other_user() {
    if !can_create_users() || !require_tool("dbus-send") {
        return;
    }
    // The group must exist before the bus reads its policy.
    let _group = AdminGroup::ensure();
    for policy in [Policy::SystemLike, Policy::Permissive] {
        let Some(bus) = Bus::start(policy) else {
            return;
        };
        let Some(member) = TestUser::create(&[control::interface::ADMIN_GROUP]) else {
            return;
        };
        let Some(outsider) = TestUser::create(&[]) else {
            return;
        };
        let stub = Stub::start(&bus, StubOptions::new("web"));

        // Both layers refuse the outsider: the bus policy where it applies, the daemon's
        // handlers on a bus that lets everything through.
        let refused_by = match policy {
            Policy::SystemLike => "org.freedesktop.DBus.Error.AccessDenied",
            Policy::Permissive => "org.sersync.Sersync1.Error.AccessDenied",
        };
        for method in ["ListFailures", "WatchFailures"] {
            let refused = dbus_send_as(&outsider, &bus, method);
            assert_ne!(refused.code, 0, "{policy:?} {method}: {refused:?}");
            assert!(
                refused.stderr.contains(refused_by),
                "{policy:?} {method}: {}",
                refused.stderr
            );
            dbus_send_as(&member, &bus, method).expect(0);
        }
        ctl_as(&outsider, &bus, &["failures"]).expect(77);
        assert!(
            ctl(&bus, &["failures"])
                .expect(0)
                .stdout
                .contains("/srv/www/a.txt")
        );

        let mut monitors = [
            ("root", Monitor::start(&bus, None, &["--json"])),
            ("member", Monitor::start(&bus, Some(&member), &["--json"])),
            (
                "outsider",
                Monitor::start(&bus, Some(&outsider), &["--json"]),
            ),
        ];
        until_monitors_listen(&stub, &mut monitors);
        stub.events
            .send(Event::SyncFailed {
                remote: "/srv/www -> 10.0.0.3::www".into(),
                path: b"secret-dir/plan.txt".to_vec(),
                rsync_exit: 23,
                message: "rsync: [sender] send_files failed to open \
                          \"/srv/www/secret-dir/plan.txt\": Permission denied (13)"
                    .into(),
                summary: LAST_ERROR_SUMMARY.into(),
            })
            .unwrap();
        // The remote's error changes too: PropertiesChanged, which everyone receives.
        stub.update(|s| {
            s.remotes[1].state = "backoff".into();
            s.remotes[1].last_error = Some(format!("{LAST_ERROR} again"));
            s.remotes[1].last_error_summary = Some(format!("{LAST_ERROR_SUMMARY} again"));
        });
        // After the failure: whatever came of it came before this.
        stub.events
            .send(Event::StateChanged {
                remote: "marker".into(),
                state: "ok".into(),
            })
            .unwrap();

        for (who, monitor) in &mut monitors {
            let mut failures = Vec::new();
            let (mut marker, mut remotes) = (false, false);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !(marker && remotes) {
                let line = monitor
                    .next_line(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|| {
                        panic!(
                            "{policy:?} {who}: no marker ({marker}) or remotes ({remotes}):\n{}",
                            monitor.output()
                        )
                    });
                let json: Json = serde_json::from_str(&line).unwrap();
                match json["signal"].as_str() {
                    Some("SyncFailed") => failures.push(json),
                    Some("StateChanged") => marker |= json["remote"] == "marker",
                    Some("PropertiesChanged") if json["changed"].get("Remotes").is_some() => {
                        // The properties are everyone's: the summary, for root too.
                        assert_eq!(
                            json["changed"]["Remotes"][1]["LastError"],
                            format!("{LAST_ERROR_SUMMARY} again"),
                            "{policy:?} {who}"
                        );
                        remotes = true;
                    }
                    _ => {}
                }
            }
            // Once each: a listener in full does not print the broadcast copy as well.
            assert_eq!(failures.len(), 1, "{policy:?} {who}: {failures:?}");
            let failure = &failures[0];
            assert_eq!(failure["remote"], "/srv/www -> 10.0.0.3::www");
            assert_eq!(failure["rsync_exit"], 23);
            if *who == "outsider" {
                assert_eq!(failure["path"], "", "{policy:?}");
                assert_eq!(failure["message"], LAST_ERROR_SUMMARY, "{policy:?}");
                let output = monitor.output();
                assert!(
                    !output.contains("secret-dir"),
                    "{policy:?}: the outsider saw a file name:\n{output}"
                );
                assert!(
                    monitor.stderr().contains("without their paths"),
                    "{policy:?}: {}",
                    monitor.stderr()
                );
            } else {
                assert_eq!(failure["path"], "secret-dir/plan.txt", "{policy:?} {who}");
                assert!(
                    failure["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("/srv/www/secret-dir/plan.txt")),
                    "{policy:?} {who}: {failure}"
                );
                assert_eq!(monitor.stderr(), "", "{policy:?} {who}");
            }
        }
    }
}

#[test]
fn check_prints_and_exits_exactly_like_sersyncd_check() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("read the config fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("confxml.xml"));
    files.push(fixtures.join("does-not-exist.xml"));
    let dir = temp_dir("check");
    let good = dir.path().join("good.xml");
    let remote = Remote {
        ip: "127.0.0.1".into(),
        name: "web".into(),
    };
    std::fs::write(
        &good,
        SersyncdBuilder::new().root(dir.path(), &[remote]).xml(),
    )
    .unwrap();
    files.push(good);
    let mut codes = Vec::new();
    for file in &files {
        let mut daemon = Command::new(SERSYNCD);
        daemon.arg("--check").arg("-o").arg(file);
        let daemon = run(daemon);
        let mut client = Command::new(SERSYNCCTL);
        client.arg("check").arg("-o").arg(file);
        let client = run(client);
        assert_eq!(client.code, daemon.code, "{}", file.display());
        assert_eq!(client.stdout, daemon.stdout, "{}", file.display());
        assert_eq!(client.stderr, daemon.stderr, "{}", file.display());
        codes.push(client.code);
    }
    assert!(codes.contains(&0) && codes.contains(&78), "{codes:?}");
}

/// A plugin section start-up cannot build (a command without a program) is a config
/// error with its position for `check`, not an exit 78 without a line at start-up.
#[test]
fn check_rejects_a_plugin_section_that_start_up_would_reject_with_its_line() {
    let dir = temp_dir("check");
    let conf = dir.path().join("confxml.xml");
    std::fs::write(
        &conf,
        "<head>\n<sersync>\n<localpath watch=\"/tmp\"><remote ip=\"127.0.0.1\" name=\"web\"/></localpath>\n\
         <plugin start=\"true\" name=\"command\"/>\n</sersync>\n\
         <plugin name=\"command\">\n  <param prefix=\"  \" suffix=\"\"/>\n</plugin>\n</head>\n",
    )
    .unwrap();
    let mut client = Command::new(SERSYNCCTL);
    client.arg("check").arg("-o").arg(&conf);
    let client = run(client).expect(78);
    let at = format!(
        "{}:7:18: error: attribute \"prefix\" of <param>",
        conf.display()
    );
    assert!(
        client.stderr.contains(&at),
        "{at} not in:\n{}",
        client.stderr
    );
    assert!(client.stdout.is_empty(), "{}", client.stdout);

    // Start-up rejects it the same way, before anything starts.
    let mut daemon = Command::new(SERSYNCD);
    daemon.arg("-o").arg(&conf);
    let daemon = run(daemon);
    assert_eq!(daemon.code, 78, "{}", daemon.stderr);
    assert_eq!(daemon.stderr, client.stderr);
}

// ---------------------------------------------------------------------------------------
// End to end: real sersyncd, real rsync daemons
// ---------------------------------------------------------------------------------------

/// Arguments that put a daemon on `bus` as `instance`.
pub(crate) fn on_bus(builder: SersyncdBuilder, bus: &Bus, instance: &str) -> SersyncdBuilder {
    builder
        .arg("--bus-address")
        .arg(bus.address())
        .arg("--instance")
        .arg(instance)
}

/// Polls `sersyncctl -i instance status --json` until `ok` holds (bounded).
pub(crate) fn wait_status(
    bus: &Bus,
    instance: &str,
    what: &str,
    ok: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let json = ctl(bus, &["-i", instance, "status", "--json"])
            .expect(0)
            .json();
        if ok(&json) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what}: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn e2e_pause_holds_changes_back_and_resume_delivers_them() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "before.txt", "before\n");
    env.converged();

    ctl(&bus, &["pause"]).expect(0);
    wait_status(&bus, "web", "paused", |s| s["paused"] == true);
    write(env.src(), "held-1.txt", "1\n");
    write(env.src(), "dir/held-2.txt", "2\n");
    std::fs::remove_file(env.src().join("before.txt")).unwrap();
    let status = wait_status(&bus, "web", "a growing queue", |s| {
        s["queue_depth"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(status["paused"], true);
    // Held back: the replica has none of it, even a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.replica().join("before.txt").exists());
    assert!(!env.replica().join("held-1.txt").exists());
    assert!(!env.replica().join("dir").exists());

    ctl(&bus, &["resume"]).expect(0);
    env.converged();
    wait_status(&bus, "web", "an empty queue after resume", |s| {
        s["paused"] == false && s["queue_depth"] == 0
    });
}

#[test]
fn e2e_full_sync_wait_repairs_a_replica_changed_behind_the_daemons_back() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "a.txt", "a\n");
    write(env.src(), "sub/b.txt", "b\n");
    env.converged();
    // Behind the daemon's back: lose a file, a directory, and gain a stray one.
    std::fs::remove_file(env.replica().join("a.txt")).unwrap();
    std::fs::remove_dir_all(env.replica().join("sub")).unwrap();
    write(env.replica(), "stray.txt", "not in the source\n");

    let done = ctl(&bus, &["full-sync", "--wait", "--json"])
        .expect(0)
        .json();
    assert_eq!(done["success"], true, "{done}");
    // Repaired by the time --wait returned (a short grace for nothing but clock skew).
    wait_converged(env.src(), env.replica(), Duration::from_millis(500));
}

#[test]
fn e2e_retry_failed_after_the_remote_returns_empties_the_failures() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "first.txt", "1\n");
    env.converged();

    env.rsyncd.stop();
    write(
        env.src(),
        "while-down.txt",
        "written while the remote is down\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let failures = ctl(&bus, &["failures", "--json"]).expect(0).json();
        if failures.as_array().is_some_and(|f| !f.is_empty()) {
            break failures;
        }
        assert!(
            Instant::now() < deadline,
            "no failure recorded while the remote is down"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failures
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "while-down.txt"),
        "{failures}"
    );
    wait_status(&bus, "web", "the failure count", |s| {
        s["failed"].as_u64() > Some(0)
    });

    env.rsyncd.start();
    let queued = ctl(&bus, &["retry-failed", "--json"]).expect(0).json();
    assert!(queued["queued"].as_u64().is_some(), "{queued}");
    env.converged();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let failures = ctl(&bus, &["failures", "--json"]).expect(0).json();
        if failures == serde_json::json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failures not emptied: {failures}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_status(&bus, "web", "no failures", |s| s["failed"] == 0);
}

#[test]
fn e2e_two_instances_at_once_addressed_by_i() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web", "img"]) else {
        return;
    };
    let img_src = temp_dir("src-img");
    let _web = on_bus(
        SersyncdBuilder::new()
            .root(env.src(), &[env.rsyncd.remote("web")])
            .rsyncd(&env.rsyncd),
        &bus,
        "web",
    )
    .start();
    let _img = on_bus(
        SersyncdBuilder::new()
            .root(img_src.path(), &[env.rsyncd.remote("img")])
            .rsyncd(&env.rsyncd),
        &bus,
        "img-2",
    )
    .start();
    assert_eq!(ctl(&bus, &["list"]).expect(0).stdout, "img-2\nweb\n");
    ctl(&bus, &["status"]).expect(64);

    // Pausing one holds back only that one.
    ctl(&bus, &["-i", "img-2", "pause"]).expect(0);
    wait_status(&bus, "img-2", "paused", |s| s["paused"] == true);
    assert_eq!(
        ctl(&bus, &["-i", "web", "status", "--json"])
            .expect(0)
            .json()["paused"],
        false
    );
    write(env.src(), "web.txt", "web\n");
    write(img_src.path(), "img.txt", "img\n");
    wait_converged(env.src(), env.rsyncd.replica("web"), CONVERGE);
    wait_status(&bus, "img-2", "a queued change", |s| {
        s["queue_depth"].as_u64() >= Some(1)
    });
    assert!(!env.rsyncd.replica("img").join("img.txt").exists());
    ctl(&bus, &["-i", "img-2", "resume"]).expect(0);
    wait_converged(img_src.path(), env.rsyncd.replica("img"), CONVERGE);

    let web = ctl(&bus, &["-i", "web", "status", "--json"])
        .expect(0)
        .json();
    let img = ctl(&bus, &["-i", "img-2", "status", "--json"])
        .expect(0)
        .json();
    assert_eq!(web["instance"], "web");
    assert_eq!(img["instance"], "img-2");
    assert!(
        web["remotes"][0]["name"]
            .as_str()
            .unwrap()
            .ends_with("::web"),
        "{web}"
    );
    assert!(
        img["remotes"][0]["name"]
            .as_str()
            .unwrap()
            .ends_with("::img"),
        "{img}"
    );
}

#[test]
fn e2e_an_unprivileged_user_reads_status_but_may_not_change_anything() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let Some(user) = TestUser::create(&[]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    let json = ctl_as(&user, &bus, &["status", "--json"]).expect(0).json();
    assert_eq!(json["instance"], "web");
    assert_eq!(json["paused"], false);
    // Waiting for one's files to reach the remotes names nothing and changes nothing.
    let checkpoint = ctl_as(
        &user,
        &bus,
        &["checkpoint", "--wait", "--timeout", "30", "--json"],
    )
    .expect(0)
    .json();
    assert_eq!(checkpoint["reached"], true, "{checkpoint}");
    for args in [
        &["pause"][..],
        &["retry-failed"][..],
        &["full-sync"][..],
        &["failures", "--json"][..],
    ] {
        ctl_as(&user, &bus, args).expect(77);
    }
    // Nothing changed: still running, and changes still flow.
    assert_eq!(
        ctl(&bus, &["status", "--json"]).expect(0).json()["paused"],
        false
    );
    write(env.src(), "still-flowing.txt", "yes\n");
    env.converged();
}

#[test]
fn e2e_failed_file_names_are_shown_to_root_and_group_sersync_only() {
    if !can_create_users() {
        return;
    }
    let _group = AdminGroup::ensure();
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let Some(member) = TestUser::create(&[control::interface::ADMIN_GROUP]) else {
        return;
    };
    let Some(outsider) = TestUser::create(&[]) else {
        return;
    };
    // The module refuses files named hush-file*: rsync names each one on stderr ("daemon
    // refused to receive file …", exit 23), so the failure, its message and the remote's
    // last error all carry the name.
    env.rsyncd.set_module_options("    exclude = hush-file*\n");
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "first.txt", "1\n");
    env.converged();
    let mut root_monitor = Monitor::start(&bus, None, &[]);
    let mut member_monitor = Monitor::start(&bus, Some(&member), &[]);
    let mut outsider_monitor = Monitor::start(&bus, Some(&outsider), &[]);
    for monitor in [
        &mut root_monitor,
        &mut member_monitor,
        &mut outsider_monitor,
    ] {
        // Printed once subscribed, and answered about WatchFailures.
        monitor.wait_for("its header", |l| l.contains("monitoring"));
    }

    // A directory only root may read, holding a file the remote refuses.
    let private = env.src().join("hush-dir");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    write(env.src(), "hush-dir/hush-file.txt", "not for everyone\n");

    // Root and group sersync: the failure with its path, the list, the error in full.
    for monitor in [&mut root_monitor, &mut member_monitor] {
        monitor.wait_for("the failure with its path", |l| {
            l.contains(" sync-failed ") && l.contains("hush-")
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failures = ctl(&bus, &["failures", "--json"]).expect(0).json();
        if failures
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == "hush-dir/hush-file.txt"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused file was never listed: {failures}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = ctl_as(&member, &bus, &["failures"]).expect(0).stdout;
    assert!(listed.contains("hush-dir/hush-file.txt"), "{listed}");
    for status in [
        ctl(&bus, &["status", "--json"]),
        ctl_as(&member, &bus, &["status", "--json"]),
    ] {
        let status = status.expect(0).json();
        assert!(
            status["remotes"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("hush-file")),
            "{status}"
        );
    }

    // Everyone else: that something failed, and where to, without the name.
    outsider_monitor.wait_for("the failure", |l| l.contains(" sync-failed "));
    outsider_monitor.wait_for("the remote's error", |l| {
        l.contains(" properties ") && l.contains("LastError")
    });
    let denied = ctl_as(&outsider, &bus, &["failures"]).expect(77);
    assert!(
        denied.stderr.contains("listing failures"),
        "{}",
        denied.stderr
    );
    let status = ctl_as(&outsider, &bus, &["status", "--json"])
        .expect(0)
        .json();
    assert!(status["failed"].as_u64() > Some(0), "{status}");
    let last_error = status["remotes"][0]["last_error"].as_str().unwrap_or("");
    assert!(last_error.starts_with("rsync exit 23"), "{status}");
    assert!(!last_error.contains("hush-"), "{status}");
    let seen = outsider_monitor.output();
    assert!(
        !seen.contains("hush-"),
        "the outsider saw a file name:\n{seen}"
    );
}

#[test]
fn e2e_introspection_xml_in_dbus_matches_the_daemon() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    assert_introspection_matches(&introspect(&bus, "web"));
}

/// The sum of a `name=N` field over the lines of a plain-text log.
fn sum_of_field(log: &str, name: &str) -> u64 {
    log.split_whitespace()
        .filter_map(|token| token.strip_prefix(name)?.strip_prefix('='))
        .map(|n| n.parse::<u64>().unwrap_or_else(|_| panic!("{name}={n}")))
        .sum()
}

#[test]
fn e2e_bytes_are_what_rsync_reports_sending() {
    use std::io::Read;
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // `-h` and `--stats` of the user's own: the figures stay exact digits all the same.
    let daemon = env.start(|b| on_bus(b.common_params("-artuzh --stats"), &bus, "web"));
    // Random, so `-z` cannot make rsync send less than the file.
    const SIZE: u64 = 300 * 1024;
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(SIZE)
        .read_to_end(&mut data)
        .unwrap();
    std::fs::write(env.src().join("random.bin"), &data).unwrap();
    env.converged();

    // What rsync reported, run by run (`<debug>` logs each run's figure), and job by job.
    let reported = || {
        let log = daemon.log();
        (
            sum_of_field(&log, "rsync_bytes_sent"),
            sum_of_field(&log, "bytes_sent"),
        )
    };
    let status = wait_status(&bus, "web", "the bytes rsync reported", |s| {
        let (runs, jobs) = reported();
        runs > 0 && runs == jobs && s["counters"]["bytes"].as_u64() == Some(runs)
    });
    let (runs, _) = reported();
    assert_eq!(
        status["remotes"][0]["bytes_sent"].as_u64(),
        Some(runs),
        "{status}"
    );
    assert!(
        (SIZE..SIZE + 64 * 1024).contains(&runs),
        "rsync reported {runs} bytes for a file of {SIZE}:\n{}",
        crate::harness::tail(&daemon.log(), 30)
    );
}
