//! A private `dbus-daemon` for tests: the stock system bus's default-deny policy plus the
//! shipped `dbus/org.sersync.Sersync1.conf`, or a permissive one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::users::AdminGroup;
use super::{POLL, require_tool, tail, temp_dir};

/// The control client under test.
pub const SERSYNCCTL: &str = env!("CARGO_BIN_EXE_sersyncctl");

/// Which bus configuration to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The stock system bus's policy (deny by default) plus our policy file.
    SystemLike,
    /// Everyone may own, send and receive anything.
    Permissive,
}

/// A `dbus-daemon` on a unix socket in a temporary directory that every user may reach;
/// killed (by the PID we started) on drop.
#[derive(Debug)]
pub struct Bus {
    dir: TempDir,
    child: Option<Child>,
    address: String,
    /// A system-like bus keeps the group `sersync` its policy names (see
    /// [`AdminGroup`]); dropped after the daemon (fields drop in order).
    _admin_group: Option<AdminGroup>,
}

impl Bus {
    /// `None` (after a SKIP line) when dbus-daemon is not installed.
    pub fn start(policy: Policy) -> Option<Bus> {
        if !require_tool("dbus-daemon") {
            return None;
        }
        // Before the bus reads its policy, and for as long as it runs (root only: others
        // cannot create it, and their tests of the policy are skipped anyway).
        let admin_group = (policy == Policy::SystemLike && nix::unistd::geteuid().is_root())
            .then(AdminGroup::ensure);
        let dir = temp_dir("dbus");
        // Unprivileged test users must reach the socket (and the copied sersyncctl).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod 755 the bus directory");
        let socket = dir.path().join("bus");
        let rules = match policy {
            Policy::SystemLike => format!(
                r#"  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{}</include>
"#,
                policy_file().display()
            ),
            Policy::Permissive => r#"  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
"#
            .to_owned(),
        };
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={}</listen>
{rules}</busconfig>
"#,
            socket.display()
        );
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config).expect("write bus.conf");
        let log = std::fs::File::create(dir.path().join("dbus.log")).expect("create dbus.log");
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn dbus-daemon");
        let mut bus = Bus {
            address: format!("unix:path={}", socket.display()),
            dir,
            child: Some(child),
            _admin_group: admin_group,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = bus.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bus.child = None;
                panic!("dbus-daemon exited with {status}:\n{}", bus.log());
            }
            assert!(
                Instant::now() < deadline,
                "dbus-daemon did not listen within 10 s:\n{}",
                bus.log()
            );
            std::thread::sleep(POLL);
        }
        Some(bus)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client connection (as root, the test process).
    pub fn connect(&self) -> zbus::blocking::Connection {
        zbus::blocking::connection::Builder::address(self.address())
            .and_then(|b| b.method_timeout(Duration::from_secs(30)).build())
            .expect("connect to the test bus")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dbus.log")).unwrap_or_default()
    }

    /// `sersyncctl` where every user may run it (the build directory may be private): a
    /// hard link when possible, else a copy (a fresh copy for each unprivileged run).
    pub fn public_sersyncctl(&self) -> PathBuf {
        let copy = self.dir.path().join("sersyncctl");
        if !copy.exists() && std::fs::hard_link(SERSYNCCTL, &copy).is_err() {
            std::fs::copy(SERSYNCCTL, &copy).expect("copy sersyncctl");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .expect("chmod sersyncctl");
        }
        copy
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- dbus-daemon log ----\n{}\n---- end ----",
                tail(&self.log(), 40)
            );
        }
    }
}

pub fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.sersync.Sersync1.conf")
}
