//! The simulated installation: a source tree, two remotes (rsync daemons on 127.0.0.1 and
//! 127.0.0.2, each replica on its own small tmpfs so it can fill up), and one sersyncd run
//! in a user namespace of its own (so its inotify watch limit can be lowered without
//! touching the rest of the machine). Faults are injected and healed here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::harness::bus::{Bus, Policy};
use crate::harness::{RsyncDaemon, Sersyncd, SersyncdBuilder, temp_dir};
use crate::ops::{self, Fault, Op};
use crate::snapshot;

/// How long a quiescent point may take to converge. The slowest legitimate path: a remote
/// whose lane backed off to 16-32 s, or a deferred overflow rescan (10-20 s), plus a
/// recovery full sync; a configuration error on the remote (a read-only module) is
/// retried every 60 s. `SERSYNC_SIM_TIMEOUT` (seconds) sets it, e.g. shorter to shrink.
fn converge_timeout() -> Duration {
    std::env::var("SERSYNC_SIM_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(120), Duration::from_secs)
}

const MODULE: &str = "web";
/// As rsyncd is run in production: chrooted into the module, which keeps absolute
/// symlink targets as they are (without a chroot the daemon strips their leading `/`).
const MODULE_OPTIONS: &str = "    use chroot = yes\n";
const QUEUED_EVENTS: &str = "/proc/sys/fs/inotify/max_queued_events";

#[derive(Debug, Default)]
struct Active {
    down: Vec<bool>,
    read_only: Vec<bool>,
    disk_full: Vec<bool>,
    refusals: Vec<bool>,
    watch_limited: bool,
    small_queue: bool,
    queued_events_restore: Option<String>,
}

/// A failure at a quiescent point.
#[derive(Debug)]
pub struct Divergence {
    pub round: usize,
    pub what: String,
}

pub struct World {
    /// Holds src/, attic/ and the remotes' mount points; removed last.
    _base: TempDir,
    /// The daemon's system bus (`DBUS_SYSTEM_BUS_ADDRESS`), for a checkpoint at every
    /// quiescent point. It outlives the daemon (`Drop` ends the daemon first).
    bus: Option<Bus>,
    src: PathBuf,
    attic: PathBuf,
    /// One tmpfs per remote, holding its replica (and the ballast of a full disk).
    mounts: Vec<PathBuf>,
    remotes: Vec<RsyncDaemon>,
    daemon: Option<Sersyncd>,
    configured: u8,
    pub privileged: bool,
    active: Active,
    pub log: Vec<String>,
    round: usize,
    /// How many faults of each kind took effect.
    pub faults_applied: std::collections::BTreeMap<&'static str, usize>,
    /// The daemon was stopped by a fault and not started again: `Some(true)` after a clean
    /// stop, `Some(false)` after kill -9. A quiescent point starts it (a shortened
    /// operation list may lack the `Start`).
    stopped: Option<bool>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("src", &self.src).finish()
    }
}

fn run(program: &str, args: &[&OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl World {
    pub fn new() -> World {
        let privileged = nix::unistd::geteuid().is_root();
        let base = temp_dir("sim");
        let src = base.path().join("src");
        let attic = base.path().join("attic");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&attic).unwrap();
        let mut mounts = Vec::new();
        for i in 0..2 {
            let dir = base.path().join(format!("remote{i}"));
            std::fs::create_dir(&dir).unwrap();
            if privileged {
                run(
                    "mount",
                    &[
                        OsStr::new("-t"),
                        OsStr::new("tmpfs"),
                        OsStr::new("-o"),
                        OsStr::new("size=48m,mode=0755"),
                        OsStr::new("sersync-sim"),
                        dir.as_os_str(),
                    ],
                )
                .expect("mount a tmpfs for a replica");
            }
            mounts.push(dir);
        }
        let (mut a, mut b) = RsyncDaemon::pair_in(&[MODULE], [Some(&mounts[0]), Some(&mounts[1])]);
        let anchor = src.join(crate::ops::ANCHOR);
        std::fs::write(&anchor, b"never touched by an operation\n").unwrap();
        for replica in [a.replica(MODULE), b.replica(MODULE)] {
            run(
                "cp",
                &[OsStr::new("-a"), anchor.as_os_str(), replica.as_os_str()],
            )
            .expect("copy the anchor to a replica");
        }
        if privileged {
            a.set_module_options(MODULE_OPTIONS);
            b.set_module_options(MODULE_OPTIONS);
        }
        let mut world = World {
            _base: base,
            bus: Bus::start(Policy::Permissive),
            src,
            attic,
            mounts,
            remotes: vec![a, b],
            daemon: None,
            configured: 0b11,
            privileged,
            active: Active {
                down: vec![false; 2],
                read_only: vec![false; 2],
                disk_full: vec![false; 2],
                refusals: vec![false; 2],
                ..Active::default()
            },
            log: Vec::new(),
            round: 0,
            faults_applied: std::collections::BTreeMap::new(),
            stopped: None,
        };
        world.daemon = Some(world.builder(0b11).start());
        world
    }

    pub fn src(&self) -> &Path {
        &self.src
    }

    /// The config: stock sersync 2.5 settings except `attrib` (so chmod and touch are
    /// replicated live) and the built-in temp-file ignores (so every name is in scope).
    /// `<timeout start="false">` as shipped.
    fn builder(&self, mask: u8) -> SersyncdBuilder {
        let remotes: Vec<_> = self
            .remotes
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, r)| r.remote(MODULE))
            .collect();
        let mut builder = SersyncdBuilder::new()
            .root(&self.src, &remotes)
            .rsyncd(&self.remotes[0])
            .attrib(true)
            .ignore_temp_files(false)
            .timeout(None)
            // The share limit holds mass deletions by design (a sim tree is small, so most
            // rounds would trip it); tests/sim/guard.rs covers it. The mount and emptiness
            // guards stay on here.
            .raw_sersync_xml(r#"<deleteGuard share="0"/>"#)
            // The smallest cap the config allows, which a sim tree reaches in its bigger
            // rounds and outages (64 it never did): folding into dirty directories runs
            // under every fault, while small rounds keep the ordinary path. Files of 32 KiB
            // or more (about one in six written) go through the large-file run, so that it
            // races the batches under every operation and fault.
            .raw_sersync_xml(r#"<queue maxPending="16" largeFiles="32K"/>"#);
        // The bus by the environment, which every restart keeps (restarts replace the
        // arguments).
        let mut launcher: Vec<String> = Vec::new();
        if let Some(bus) = &self.bus {
            launcher.extend([
                "env".into(),
                format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address()),
            ]);
        }
        if self.privileged {
            launcher.extend(
                ["unshare", "--user", "--map-user=0", "--map-group=0", "--"].map(String::from),
            );
        }
        if !launcher.is_empty() {
            let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
            builder = builder.launcher(&launcher);
        }
        builder
    }

    fn daemon(&mut self) -> &mut Sersyncd {
        self.daemon.as_mut().expect("the world has a daemon")
    }

    pub fn record(&mut self, line: String) {
        self.log.push(line);
    }

    /// Applies one op; returns a divergence at a quiescent point that did not converge.
    pub fn apply(&mut self, op: &Op) -> Result<(), Divergence> {
        let line = ops::show(op);
        match op {
            Op::Quiesce => {
                self.record(format!("[round {}] {line}", self.round));
                let result = self.quiesce();
                self.round += 1;
                return result;
            }
            Op::Fault(fault) => {
                let result = self.fault(fault);
                let note = match result {
                    Ok(()) => {
                        *self.faults_applied.entry(fault_kind(fault)).or_default() += 1;
                        String::new()
                    }
                    Err(err) => format!("  (not applied: {err})"),
                };
                self.record(format!("[round {}] {line}{note}", self.round));
            }
            change => {
                let result = ops::apply_change(&self.src, &self.attic, change);
                let note = match result {
                    Ok(()) => String::new(),
                    Err(err) => format!("  (failed: {err})"),
                };
                self.record(format!("[round {}] {line}{note}", self.round));
            }
        }
        Ok(())
    }

    fn module_options(&self) -> &'static str {
        if self.privileged { MODULE_OPTIONS } else { "" }
    }

    fn replica(&self, remote: usize) -> &Path {
        self.remotes[remote].replica(MODULE)
    }

    fn fault(&mut self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::RemoteDown { remote } => {
                if !self.active.down[*remote] {
                    self.remotes[*remote].stop();
                    self.active.down[*remote] = true;
                }
            }
            Fault::RemoteUp { remote } => {
                if self.active.down[*remote] {
                    self.remotes[*remote].start();
                    self.active.down[*remote] = false;
                }
            }
            Fault::ReadOnlyModule { remote } => {
                let options = format!("{}    read only = yes\n", self.module_options());
                self.remotes[*remote].set_module_options(&options);
                self.active.read_only[*remote] = true;
            }
            Fault::Immutable { remote, path } => {
                let target = self.replica(*remote).join(OsStr::from_bytes(path));
                if std::fs::symlink_metadata(&target).map_or(true, |m| m.file_type().is_symlink()) {
                    return Err("no such replica path".into());
                }
                run("chattr", &[OsStr::new("+i"), target.as_os_str()])?;
                self.active.refusals[*remote] = true;
            }
            Fault::ReadOnlyMount { remote, path } => {
                let target = self.replica(*remote).join(OsStr::from_bytes(path));
                if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err("no such replica directory".into());
                }
                run(
                    "mount",
                    &[OsStr::new("--bind"), target.as_os_str(), target.as_os_str()],
                )?;
                self.active.refusals[*remote] = true;
                run(
                    "mount",
                    &[
                        OsStr::new("-o"),
                        OsStr::new("remount,bind,ro"),
                        target.as_os_str(),
                    ],
                )?;
            }
            Fault::DiskFull { remote } => {
                self.fill(*remote)?;
                self.active.disk_full[*remote] = true;
            }
            Fault::Repair { remote } => self.repair(*remote),
            Fault::Kill9 => {
                if self.daemon().is_running() {
                    self.daemon().kill9();
                    self.after_stop();
                    self.stopped = Some(false);
                }
            }
            Fault::Sigterm => {
                if self.daemon().is_running() {
                    let status = self.daemon().terminate();
                    self.after_stop();
                    self.stopped = Some(true);
                    if !status.success() {
                        return Err(format!("sersyncd exited with {status} after SIGTERM"));
                    }
                }
            }
            Fault::Start { full_sync_first } => {
                if !self.daemon().is_running() {
                    let args: &[&str] = if *full_sync_first { &["-r"] } else { &[] };
                    self.daemon().restart_with(args);
                }
                self.stopped = None;
            }
            Fault::SigtermDuringRecovery { after_ms } => {
                if self.daemon().is_running() {
                    self.daemon().kill9();
                }
                self.after_stop();
                self.daemon().restart_with(&[]);
                std::thread::sleep(Duration::from_millis(*after_ms));
                self.daemon().terminate();
                self.daemon().restart_with(&[]);
            }
            Fault::Reload => {
                if self.daemon().is_running() {
                    self.daemon().signal(Signal::SIGHUP);
                }
            }
            Fault::SetRemotes { mask } => {
                let xml = self.builder(*mask).xml();
                self.daemon().write_config(&xml);
                self.configured = *mask;
                if self.daemon().is_running() {
                    self.daemon().signal(Signal::SIGHUP);
                }
            }
            Fault::SmallQueue { events } => {
                if !self.privileged {
                    return Err("needs root".into());
                }
                let original = std::fs::read_to_string(QUEUED_EVENTS).map_err(|e| e.to_string())?;
                if self.daemon().is_running() {
                    self.daemon().terminate();
                }
                self.after_stop();
                std::fs::write(QUEUED_EVENTS, events.to_string()).map_err(|e| e.to_string())?;
                self.active.queued_events_restore = Some(original.trim().to_owned());
                self.daemon().restart_with(&[]);
                self.restore_queued_events();
                self.active.small_queue = true;
            }
            Fault::WatchLimit { headroom } => {
                if !self.privileged || !self.daemon().is_running() {
                    return Err("needs root and a running daemon".into());
                }
                let pid = self.daemon().pid().as_raw();
                let limit = inotify_watches(pid) + *headroom as usize;
                set_user_watch_limit(pid, limit)?;
                self.active.watch_limited = true;
            }
            Fault::WatchLimitLifted => self.lift_watch_limit(),
        }
        Ok(())
    }

    /// A restarted daemon has a new inotify instance and a new user namespace.
    fn after_stop(&mut self) {
        self.active.small_queue = false;
        self.active.watch_limited = false;
    }

    fn restore_queued_events(&mut self) {
        if let Some(value) = self.active.queued_events_restore.take() {
            std::fs::write(QUEUED_EVENTS, value).expect("restore max_queued_events");
        }
    }

    fn lift_watch_limit(&mut self) {
        if self.active.watch_limited && self.daemon().is_running() {
            let pid = self.daemon().pid().as_raw();
            let _ = set_user_watch_limit(pid, i32::MAX as usize);
            // The operator's move after raising the limit: a reload.
            self.daemon().signal(Signal::SIGHUP);
        }
        self.active.watch_limited = false;
    }

    fn fill(&self, remote: usize) -> Result<(), String> {
        if !self.privileged {
            return Err("needs root (tmpfs)".into());
        }
        use std::io::Write;
        let path = self.mounts[remote].join("ballast");
        let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let chunk = vec![0xa5u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let small = vec![0u8; 4096];
        while file.write_all(&small).is_ok() {}
        Ok(())
    }

    /// Lifts every refusal of `remote` and frees its disk.
    fn repair(&mut self, remote: usize) {
        if self.active.read_only[remote] {
            let options = self.module_options();
            self.remotes[remote].set_module_options(options);
            self.active.read_only[remote] = false;
        }
        if self.active.refusals[remote] {
            // Mount points under the replica, deepest first (the replica may have
            // renamed their ancestors).
            for point in mounts_under(&self.mounts[remote]) {
                let _ = run("umount", &[OsStr::new("-l"), point.as_os_str()]);
            }
            let _ = run(
                "chattr",
                &[
                    OsStr::new("-R"),
                    OsStr::new("-f"),
                    OsStr::new("-i"),
                    self.mounts[remote].as_os_str(),
                ],
            );
            self.active.refusals[remote] = false;
        }
        if self.active.disk_full[remote] {
            let _ = std::fs::remove_file(self.mounts[remote].join("ballast"));
            self.active.disk_full[remote] = false;
        }
    }

    /// Heals every fault, then waits until every configured replica equals the source
    /// twice in a row.
    fn quiesce(&mut self) -> Result<(), Divergence> {
        // A read-only module is a configuration problem: sersyncd retries it every 60 s
        // (README, failures), and the operator who fixed it asks for the retry at once.
        let configuration_fixed = self.active.read_only.iter().any(|&on| on);
        for remote in 0..self.remotes.len() {
            self.repair(remote);
            if self.active.down[remote] {
                self.remotes[remote].start();
                self.active.down[remote] = false;
            }
        }
        self.lift_watch_limit();
        if let Some(clean) = self.stopped.take() {
            // Changes made while it was stopped cleanly need -r (README, known limits).
            let args: &[&str] = if clean { &["-r"] } else { &[] };
            if !self.daemon().is_running() {
                self.daemon().restart_with(args);
            }
        }
        if !self.daemon().is_running() {
            return Err(Divergence {
                round: self.round,
                what: "sersyncd is not running at a quiescent point (it exited by itself)".into(),
            });
        }
        if configuration_fixed {
            // Runs still on their way when the module was fixed fail after it: the retry
            // is asked for once the replicas had 2 s to catch up and did not.
            let asked = Instant::now();
            while !self.differences().is_empty() && asked.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !self.differences().is_empty() {
                self.retry_failed()?;
            }
        }
        let started = Instant::now();
        self.check_checkpoint()?;
        let result = self.wait_converged();
        let took = started.elapsed();
        self.record(format!(
            "[round {}]    converged check took {:.1} s",
            self.round,
            took.as_secs_f64()
        ));
        result?;
        if self.active.small_queue {
            self.daemon().terminate();
            self.after_stop();
            self.daemon().restart_with(&[]);
        }
        Ok(())
    }

    /// `sersyncctl retry-failed`, as the operator runs it after fixing a remote's
    /// configuration.
    fn retry_failed(&mut self) -> Result<(), Divergence> {
        let Some(bus) = &self.bus else {
            return Ok(());
        };
        let out = Command::new(env!("CARGO_BIN_EXE_sersyncctl"))
            .args(["--bus-address", bus.address(), "retry-failed"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sersyncctl");
        self.record(format!(
            "[round {}]    retry-failed (a configuration problem was fixed): exit {:?}",
            self.round,
            out.status.code()
        ));
        if out.status.success() {
            return Ok(());
        }
        Err(Divergence {
            round: self.round,
            what: format!(
                "sersyncctl retry-failed failed (exit {:?}): {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    /// `sersyncctl checkpoint --wait`: it must be reached within the convergence timeout,
    /// and then every configured replica must equal the source at once (nothing is written
    /// meanwhile): "reached" is a promise deploy scripts act on.
    fn check_checkpoint(&mut self) -> Result<(), Divergence> {
        let Some(bus) = &self.bus else {
            return Ok(());
        };
        let timeout = converge_timeout().as_secs().to_string();
        let asked = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sersyncctl"))
            .args([
                "--bus-address",
                bus.address(),
                "checkpoint",
                "--wait",
                "--timeout",
            ])
            .arg(&timeout)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sersyncctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.record(format!(
            "[round {}]    checkpoint: exit {:?} after {:.1} s",
            self.round,
            out.status.code(),
            asked.elapsed().as_secs_f64()
        ));
        if out.status.code() != Some(0) {
            return Err(Divergence {
                round: self.round,
                what: format!(
                    "checkpoint not reached after healing (exit {:?}): {}",
                    out.status.code(),
                    text.trim()
                ),
            });
        }
        let diffs = self.differences();
        if diffs.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = diffs.iter().take(30).cloned().collect();
        Err(Divergence {
            round: self.round,
            what: format!(
                "checkpoint reached but the replicas differ from the source ({} differences):\n  {}",
                diffs.len(),
                shown.join("\n  ")
            ),
        })
    }

    /// How every configured replica differs from the source now.
    fn differences(&self) -> Vec<String> {
        let source = snapshot::take(&self.src);
        let mut diffs = Vec::new();
        for remote in 0..self.remotes.len() {
            if self.configured & (1 << remote) == 0 {
                continue;
            }
            let replica = snapshot::take(self.replica(remote));
            for line in snapshot::differences(&source, &replica) {
                diffs.push(format!("remote {remote}: {line}"));
            }
        }
        diffs
    }

    fn wait_converged(&mut self) -> Result<(), Divergence> {
        let timeout = converge_timeout();
        let deadline = Instant::now() + timeout;
        let mut equal_since: Option<Instant> = None;
        loop {
            let diffs = self.differences();
            if diffs.is_empty() {
                // Equal twice, 300 ms apart: a late rsync would show.
                match equal_since {
                    Some(at) if at.elapsed() >= Duration::from_millis(300) => return Ok(()),
                    Some(_) => {}
                    None => equal_since = Some(Instant::now()),
                }
            } else {
                equal_since = None;
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = diffs.iter().take(30).cloned().collect();
                return Err(Divergence {
                    round: self.round,
                    what: format!(
                        "replicas differ from the source {:?} after healing ({} differences):\n  {}",
                        timeout,
                        diffs.len(),
                        shown.join("\n  ")
                    ),
                });
            }
            if !self.daemon().is_running() {
                return Err(Divergence {
                    round: self.round,
                    what: "sersyncd exited while converging".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log, for a failure report.
    pub fn daemon_log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    /// Every remote back in the config (reload), for the final check of a run.
    pub fn all_remotes(&mut self) -> Option<Op> {
        (self.configured != 0b11).then_some(Op::Fault(Fault::SetRemotes { mask: 0b11 }))
    }
}

impl World {
    /// How often the daemon folded a lane's pending paths into dirty directories (its
    /// `<queue maxPending>`), to show that the runs exercised it.
    pub fn folds(&self) -> usize {
        self.daemon
            .as_ref()
            .map_or(0, |daemon| daemon.log().matches("folded into").count())
    }
}

impl World {
    /// How often a batch handed large files to the large-file run (`<queue largeFiles>`),
    /// to show that the runs exercised it (the current daemon's log only).
    pub fn large_handoffs(&self) -> usize {
        self.daemon.as_ref().map_or(0, |daemon| {
            daemon.log().matches("go out in a run of their own").count()
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.restore_queued_events();
        // The daemon first (it may be writing to the replicas), then the refusals, then
        // the rsync daemons, then the tmpfs mounts.
        self.daemon = None;
        for remote in 0..self.remotes.len() {
            self.active.refusals[remote] = true;
            self.repair(remote);
        }
        self.remotes.clear();
        if self.privileged {
            for mount in &self.mounts {
                let _ = run("umount", &[OsStr::new("-l"), mount.as_os_str()]);
            }
        }
    }
}

/// A fault's kind, for the summary of a run.
fn fault_kind(fault: &Fault) -> &'static str {
    match fault {
        Fault::RemoteDown { .. } => "remote down",
        Fault::RemoteUp { .. } => "remote up",
        Fault::ReadOnlyModule { .. } => "read-only module",
        Fault::Immutable { .. } => "immutable path",
        Fault::ReadOnlyMount { .. } => "read-only mount",
        Fault::DiskFull { .. } => "disk full",
        Fault::Repair { .. } => "repair",
        Fault::Kill9 => "kill -9",
        Fault::Sigterm => "SIGTERM",
        Fault::Start { .. } => "start",
        Fault::SigtermDuringRecovery { .. } => "SIGTERM during recovery",
        Fault::Reload => "reload",
        Fault::SetRemotes { .. } => "reload with other remotes",
        Fault::SmallQueue { .. } => "inotify overflow (tiny queue)",
        Fault::WatchLimit { .. } => "watch limit",
        Fault::WatchLimitLifted => "watch limit lifted",
    }
}

/// Mount points strictly below `top`, deepest first, from /proc/self/mountinfo.
fn mounts_under(top: &Path) -> Vec<PathBuf> {
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let top = top.as_os_str().as_bytes();
    let mut found: Vec<PathBuf> = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        let Some(point) = line.split(|&b| b == b' ').nth(4) else {
            continue;
        };
        let point = unescape_mountinfo(point);
        if point.len() > top.len() && point.starts_with(top) && point[top.len()] == b'/' {
            found.push(PathBuf::from(OsStr::from_bytes(&point)));
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// How many inotify watches process `pid` holds (from /proc/PID/fdinfo).
fn inotify_watches(pid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| {
            text.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// Sets `user.max_inotify_watches` in the user namespace of `pid`.
fn set_user_watch_limit(pid: i32, limit: usize) -> Result<(), String> {
    let out = Command::new("nsenter")
        .arg("--user")
        .arg(format!("--target={pid}"))
        .arg("sh")
        .arg("-c")
        .arg(format!("echo {limit} > /proc/sys/user/max_inotify_watches"))
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nsenter: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
