//! Per-remote retry pacing.
//!
//! sersync retried a failed command once, 7 ms later, then gave up until the hourly
//! script; lsyncd re-queued after `delay` forever. sersyncd keeps one [`Backoff`] per
//! remote: consecutive retryable failures wait 1 s, 2 s, 4 s … capped at 60 s, a fatal
//! verdict (bad credentials, unknown module…) waits a flat 60 s, and the first success
//! resets it. The doubling is deterministic (no jitter): each remote has one sersyncd
//! client, so there is no herd to spread, and tests can assert exact instants.
//!
//! Time is passed in; the type does no I/O.

use std::time::{Duration, Instant};

use super::policy::ExitClass;

/// Retry pacing for one remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    fatal_delay: Duration,
    /// Consecutive failures since the last success.
    failures: u32,
    /// When the next attempt may start; `None` while healthy.
    next: Option<Instant>,
}

impl Default for Backoff {
    /// 1 s doubling to a 60 s cap; 60 s after a fatal verdict.
    fn default() -> Self {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }
}

impl Backoff {
    /// `base` for the first retryable failure, doubled for each further one up to `cap`;
    /// `fatal_delay` after any fatal one.
    pub fn new(base: Duration, cap: Duration, fatal_delay: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            fatal_delay,
            failures: 0,
            next: None,
        }
    }

    /// Records a failed run that ended at `now` with `class`; returns when the next attempt
    /// may start. `Success` and `Benign` are not failures: they reset, like [`success`],
    /// and return `now`.
    ///
    /// [`success`]: Backoff::success
    pub fn failure(&mut self, now: Instant, class: ExitClass) -> Instant {
        let delay = match class {
            ExitClass::Success | ExitClass::Benign => {
                self.success();
                return now;
            }
            ExitClass::Fatal => self.fatal_delay,
            ExitClass::Retryable => {
                // 2^failures, saturating long before it could overflow.
                let factor = 1u32 << self.failures.min(20);
                self.base.saturating_mul(factor).min(self.cap)
            }
        };
        self.failures = self.failures.saturating_add(1);
        let next = now.checked_add(delay).unwrap_or(now);
        self.next = Some(next);
        next
    }

    /// Records a successful run: the next failure starts again from the base delay.
    pub fn success(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// When the next attempt may start; `None` if the remote is healthy.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next
    }

    /// Whether an attempt may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExitClass::*;

    #[test]
    fn delay_table() {
        // (class of the failure, expected delay in seconds)
        let table: &[(ExitClass, u64)] = &[
            (Retryable, 1),
            (Retryable, 2),
            (Retryable, 4),
            (Retryable, 8),
            (Retryable, 16),
            (Retryable, 32),
            (Retryable, 60),
            (Retryable, 60),
            (Fatal, 60),
            (Retryable, 60),
        ];
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.ready(start));
        assert_eq!(backoff.next_attempt(), None);
        for (round, &(class, seconds)) in table.iter().enumerate() {
            let now = start + Duration::from_secs(1000 * round as u64);
            let next = backoff.failure(now, class);
            assert_eq!(next - now, Duration::from_secs(seconds), "round {round}");
            assert_eq!(backoff.next_attempt(), Some(next));
            assert!(!backoff.ready(now));
            assert!(backoff.ready(next));
            assert_eq!(backoff.failures(), round as u32 + 1);
        }
    }

    #[test]
    fn fatal_is_flat_and_success_resets() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            assert_eq!(backoff.failure(now, Fatal) - now, Duration::from_secs(60));
        }
        backoff.success();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.ready(now));
        assert_eq!(
            backoff.failure(now, Retryable) - now,
            Duration::from_secs(1)
        );
        // A benign or successful "failure" is a success.
        assert_eq!(backoff.failure(now, Benign), now);
        assert_eq!(backoff.next_attempt(), None);
        assert_eq!(
            backoff.failure(now, Retryable) - now,
            Duration::from_secs(1)
        );
        assert_eq!(backoff.failure(now, Success), now);
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn many_failures_never_overflow() {
        let now = Instant::now();
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::MAX,
            Duration::from_secs(5),
        );
        for _ in 0..100 {
            backoff.failure(now, Retryable);
        }
        assert_eq!(
            backoff.next_attempt().map(|next| next - now),
            Some(Duration::from_millis(10) * (1 << 20))
        );
        let mut tiny_cap = Backoff::new(
            Duration::from_secs(5),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(
            tiny_cap.failure(now, Retryable) - now,
            Duration::from_secs(5)
        );
    }
}
