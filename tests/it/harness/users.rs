//! Unprivileged users for tests that run as root: made with `useradd --system`, removed
//! on drop, one account tool at a time.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::require_tool;

static USERS: AtomicUsize = AtomicUsize::new(0);

/// useradd and friends lock /etc/passwd and fail rather than wait when another runs: the
/// tests of this binary take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Runs an account tool (useradd, userdel, groupadd, groupdel) in turn with the others.
pub fn account_tool(command: &mut Command) -> std::process::ExitStatus {
    let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    command.status().expect("run an account tool")
}

/// A system user made for one test (`useradd --system`), removed on drop.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    /// `None` (after a SKIP line) when not root; under CI (`CI=true`) that is a failure.
    pub fn create(groups: &[&str]) -> Option<TestUser> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "creating test users needs root (CI=true: not skipping)"
            );
            eprintln!("SKIP: creating test users needs root");
            return None;
        }
        if !require_tool("useradd") || !require_tool("runuser") {
            return None;
        }
        let name = format!(
            "sersync-it-{}-{}",
            std::process::id(),
            USERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut command = Command::new("useradd");
        command
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("--home-dir")
            .arg("/nonexistent");
        if !groups.is_empty() {
            command.arg("--groups").arg(groups.join(","));
        }
        let status = account_tool(command.arg(&name));
        assert!(status.success(), "useradd {name} failed: {status}");
        Some(TestUser { name })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        account_tool(Command::new("userdel").arg(&self.name));
    }
}

impl TestUser {
    /// The user's uid and primary gid.
    pub fn ids(&self) -> (u32, u32) {
        let user = nix::unistd::User::from_name(&self.name)
            .expect("look up a test user")
            .expect("the test user exists");
        (user.uid.as_raw(), user.gid.as_raw())
    }

    /// Runs `program args…` as this user (`runuser -u NAME --`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command.arg("-u").arg(&self.name).arg("--").arg(program);
        command
    }
}

/// The group `sersync`, created for the tests when the machine has none, and removed
/// again when the last test holding it is done. Every system-like bus holds it for its
/// life (`Bus::start`): such a bus resolves `<policy group="sersync">` to a gid when it
/// starts, and a group removed under it frees that gid for the next `useradd`'s private
/// group, whose user the bus would then take for a member.
#[derive(Debug)]
pub struct AdminGroup(());

/// (tests holding the group, whether they created it).
static ADMIN_GROUP_HELD: Mutex<(usize, bool)> = Mutex::new((0, false));

impl AdminGroup {
    pub fn ensure() -> AdminGroup {
        let mut held = ADMIN_GROUP_HELD.lock().unwrap_or_else(|e| e.into_inner());
        let exists = nix::unistd::Group::from_name(sersync::control::interface::ADMIN_GROUP)
            .ok()
            .flatten()
            .is_some();
        if !exists {
            let status = account_tool(
                Command::new("groupadd")
                    .arg("--system")
                    .arg(sersync::control::interface::ADMIN_GROUP),
            );
            assert!(status.success(), "groupadd sersync failed: {status}");
            held.1 = true;
        }
        held.0 += 1;
        AdminGroup(())
    }
}

impl Drop for AdminGroup {
    fn drop(&mut self) {
        let mut held = ADMIN_GROUP_HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 && held.1 {
            account_tool(Command::new("groupdel").arg(sersync::control::interface::ADMIN_GROUP));
            held.1 = false;
        }
    }
}
