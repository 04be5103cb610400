//! Test harness: the processes under test and the bounded waits around them.
//!
//! - [`RsyncDaemon`]: a real `rsync --daemon` with auth and one replica dir per module.
//! - [`Sersyncd`] / [`SersyncdBuilder`]: writes a confxml.xml, runs `sersyncd` with a
//!   NOTIFY_SOCKET and waits for READY=1.
//! - [`Env`]: the common case of one source tree, one rsync daemon and one daemon.
//! - [`wait_converged`] and friends: poll until the replica equals the source.
//! - [`bus::Bus`]: a private `dbus-daemon` with the shipped policy.
//!
//! Everything is bounded: no wait here can block forever, and every child process is
//! killed (by the PID we started, and only that) when its owner is dropped.

pub mod bus;
mod rsyncd;
mod sersyncd;
mod tree;
pub mod users;

pub use rsyncd::{RsyncDaemon, children_of};
pub use sersyncd::{Remote, Sersyncd, SersyncdBuilder, sersyncd_binary, terminate};
pub use tree::{
    assert_never_appears, assert_none_appear, find_named, wait_converged, wait_converged_ignoring,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

std::thread_local! {
    /// The watch backend of the test running on this thread (set by `both_backends!`):
    /// every `sersyncd` it starts gets `--watch-backend` with it. `None`: the default.
    static WATCH_BACKEND: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

/// The backend `both_backends!` runs the current test with; outside it, the one
/// `SERSYNC_TEST_WATCH_BACKEND` names for every test (`auto`, `inotify` or `fanotify`: to
/// run the whole suite with one backend by hand); else none (the daemon's default).
pub fn watch_backend() -> Option<&'static str> {
    WATCH_BACKEND.get().or_else(|| {
        match std::env::var("SERSYNC_TEST_WATCH_BACKEND").ok()?.as_str() {
            "auto" => Some("auto"),
            "inotify" => Some("inotify"),
            "fanotify" => Some("fanotify"),
            other => {
                panic!("SERSYNC_TEST_WATCH_BACKEND={other}: expected auto, inotify or fanotify")
            }
        }
    })
}

/// Runs `case` with every `sersyncd` it starts watching with `backend`. A fanotify run
/// needs root (CAP_SYS_ADMIN): without it, it fails under `CI=true` and is skipped
/// otherwise. It never falls back to inotify (the harness checks the daemon's log).
pub fn with_watch_backend(backend: &'static str, case: fn()) {
    if backend == "fanotify" && !nix::unistd::geteuid().is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true: the fanotify run needs root (CAP_SYS_ADMIN)");
        eprintln!("SKIP fanotify run: not root");
        return;
    }
    WATCH_BACKEND.set(Some(backend));
    case();
}

/// An end-to-end test run once per watch backend, as `NAME::inotify` and
/// `NAME::fanotify` (the same body; see [`with_watch_backend`]).
#[allow(unused_macros)]
macro_rules! both_backends {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            use super::*;

            fn case() $body

            #[test]
            fn inotify() {
                crate::harness::with_watch_backend("inotify", case);
            }

            #[test]
            fn fanotify() {
                crate::harness::with_watch_backend("fanotify", case);
            }
        }
    };
}

/// How long a normal change may take to reach the replica.
pub const CONVERGE: Duration = Duration::from_secs(15);

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(50);

/// True when `name` is an executable on PATH. When it is not: panic under CI (`CI=true`),
/// else print a SKIP line and return false so the test can return early.
pub fn require_tool(name: &str) -> bool {
    if find_on_path(name).is_some() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if ci {
        panic!("required tool `{name}` is not on PATH (CI=true: not skipping)");
    }
    eprintln!(
        "SKIP {}: required tool `{name}` is not on PATH",
        std::thread::current().name().unwrap_or("test")
    );
    false
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A fresh temporary directory under the system temp dir (/tmp).
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sersync-it-{prefix}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// Writes `contents` to `root/relative`, creating parent directories.
pub fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {parent:?}: {e}"));
    }
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The usual set-up: one source tree watched by one `sersyncd` that pushes to the modules
/// of one `rsync --daemon`.
///
/// Fields drop in declaration order: the daemon first, then the rsync daemon, then the
/// directories.
#[derive(Debug)]
pub struct Env {
    pub rsyncd: RsyncDaemon,
    src: TempDir,
}

impl Env {
    /// An rsync daemon with `modules` and an empty source tree; `None` (after a SKIP line)
    /// when rsync is not installed.
    pub fn new(modules: &[&str]) -> Option<Env> {
        if !require_tool("rsync") {
            return None;
        }
        Some(Env {
            rsyncd: RsyncDaemon::new(modules),
            src: temp_dir("src"),
        })
    }

    /// The watched source tree.
    pub fn src(&self) -> &Path {
        self.src.path()
    }

    /// The replica of the first module.
    pub fn replica(&self) -> &Path {
        self.rsyncd.replica(&self.rsyncd.modules()[0])
    }

    /// A builder for a daemon watching [`Env::src`] and pushing to every module of
    /// [`Env::rsyncd`] with its auth and port.
    pub fn builder(&self) -> SersyncdBuilder {
        let remotes = self
            .rsyncd
            .modules()
            .iter()
            .map(|m| self.rsyncd.remote(m))
            .collect::<Vec<_>>();
        SersyncdBuilder::new()
            .root(self.src(), &remotes)
            .rsyncd(&self.rsyncd)
    }

    /// Starts the daemon with the default builder changed by `configure`.
    pub fn start(&self, configure: impl FnOnce(SersyncdBuilder) -> SersyncdBuilder) -> Sersyncd {
        configure(self.builder()).start()
    }

    /// Waits until the replica of the first module equals the source.
    pub fn converged(&self) {
        wait_converged(self.src(), self.replica(), CONVERGE);
    }
}
