//! Filesystem calls that must not hang the caller.
//!
//! A watched root may live on a filesystem that stops answering (a hung NFS server, a
//! stopped FUSE daemon): every `stat` of it blocks, possibly for ever. The event loop and
//! config loading look at the roots only through [`within`], which gives up after a
//! bound and leaves the blocked call on a thread of its own (it finishes, or stays
//! blocked, without holding anything of the caller's).

use std::time::Duration;

/// How long the loop waits for a filesystem answer about a root.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Runs `call` on its own thread and returns its result, or `None` if it did not finish
/// within `limit` (or the thread could not be started).
pub fn within<T: Send + 'static>(
    limit: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("fs-probe".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_time_or_gives_up() {
        assert_eq!(within(Duration::from_secs(5), || 7), Some(7));
        let started = std::time::Instant::now();
        let slow = within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(2));
            1
        });
        assert_eq!(slow, None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
