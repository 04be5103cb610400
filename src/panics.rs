//! What a panic does in `sersyncd`: contained where an owner reports the work as failed,
//! fatal everywhere else.
//!
//! A panic is a bug, and the daemon's promise holds across it: no lane stuck, no change
//! silently lost.
//! - Work with an owner that can report and redo it runs under [`contain`]: an rsync job
//!   and each of its concurrent runs (the job ends as a failed run and is retried like
//!   one; an rsync the panic left running is killed), an inotify reader (the daemon stops
//!   with exit 70, every lane owing a full sync, and systemd restarts it), a plugin
//!   delivery (counted and logged as failed).
//! - A panic on any other thread (the event loop, the D-Bus threads, the signal listener,
//!   the threads that feed rsync's pipes, pruning, filesystem probes, plugin workers
//!   outside a delivery) would leave part of the daemon dead while the rest looks healthy:
//!   a lane busy for ever, a bus that no longer answers. The hook that [`install`] sets
//!   logs it and aborts the process instead: systemd restarts sersyncd
//!   (`Restart=on-failure`), and the `running` marker the abort leaves behind makes the next
//!   start do a full sync of every root, which delivers whatever was queued.
//!
//! The release profile keeps `panic = "unwind"`: containment needs unwinding.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// How many [`contain`] calls the current thread is inside.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

/// Sets the process's panic hook (see the module docs). For `sersyncd` only.
pub fn install() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed").to_owned();
        let location = info
            .location()
            .map_or_else(String::new, |at| format!(" at {at}"));
        let what = message(info.payload());
        if CONTAINED.with(Cell::get) > 0 {
            // The owner logs what the failure means for the work; the standard report
            // (with a backtrace under RUST_BACKTRACE=1) goes to stderr for the bug report.
            tracing::error!(thread, "a bug: panicked{location}: {what}");
            print(info);
            return;
        }
        tracing::error!(
            thread,
            "a bug: panicked{location}: {what}; aborting so that systemd restarts sersyncd \
             (the next start does a full sync of every root)"
        );
        print(info);
        std::process::abort();
    }));
}

/// Runs `work`, turning a panic in it into `Err` with the panic's message instead of
/// letting the hook abort the process.
pub fn contain<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    CONTAINED.with(|depth| depth.set(depth.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(work));
    CONTAINED.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|panic| message(panic.as_ref()))
}

/// The text of a panic's payload.
pub fn message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// The file name whose first change makes the place named by `SERSYNC_TEST_PANIC` panic.
pub const TEST_TRIGGER: &[u8] = b"sersync-test-panic";

/// Test builds only: panics, once per process, when `SERSYNC_TEST_PANIC` names `place`
/// (`loop`, `inotify`, `job`) and `path` is a file named [`TEST_TRIGGER`], so that tests
/// can show what a panic at each place does. Compiled out of release builds.
#[cfg(debug_assertions)]
pub fn inject(place: &str, path: &[u8]) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FIRED: AtomicBool = AtomicBool::new(false);
    let named = path.rsplit(|&b| b == b'/').next() == Some(TEST_TRIGGER);
    if named
        && std::env::var_os("SERSYNC_TEST_PANIC").is_some_and(|wanted| wanted == place)
        && !FIRED.swap(true, Ordering::SeqCst)
    {
        panic!("injected by SERSYNC_TEST_PANIC={place}");
    }
}

/// Release builds: nothing (see the test build's).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn inject(_place: &str, _path: &[u8]) {}

/// The file name that makes a watcher stall in tests ([`stall_after`]).
pub const STALL_TRIGGER: &[u8] = b"sersync-test-stall";

/// Test builds only: how long a watcher stalls after reporting a change of a file named
/// [`STALL_TRIGGER`] when `SERSYNC_TEST_STALL_INOTIFY_MS` is set, so that tests can leave
/// events unread in the kernel's queue (as a watcher busy crawling a large new tree
/// would) for as long as they need. Compiled out of release builds.
#[cfg(debug_assertions)]
pub fn stall_after(path: &[u8]) -> Option<std::time::Duration> {
    let named = path.rsplit(|&b| b == b'/').next() == Some(STALL_TRIGGER);
    let millis = std::env::var("SERSYNC_TEST_STALL_INOTIFY_MS").ok()?;
    named.then(|| std::time::Duration::from_millis(millis.parse().unwrap_or(0)))
}

/// Release builds: never.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn stall_after(_path: &[u8]) -> Option<std::time::Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_every_payload() {
        let text: Box<dyn Any + Send> = Box::new("static text");
        assert_eq!(message(text.as_ref()), "static text");
        let owned: Box<dyn Any + Send> = Box::new(format!("formatted {}", 7));
        assert_eq!(message(owned.as_ref()), "formatted 7");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(message(other.as_ref()), "(no message)");
    }

    #[test]
    fn contain_returns_the_value_or_the_message_and_unwinds_its_depth() {
        assert_eq!(contain(|| 7), Ok(7));
        let panicked: Result<(), String> = contain(|| panic!("boom {}", 1));
        assert_eq!(panicked, Err("boom 1".to_owned()));
        let nested = contain(|| contain(|| -> u8 { panic!("inner") }));
        assert_eq!(nested, Ok(Err("inner".to_owned())));
        assert_eq!(CONTAINED.with(Cell::get), 0);
    }
}
