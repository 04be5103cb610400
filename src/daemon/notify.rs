//! sd_notify: readiness, status lines, reload and stop notices, watchdog pings.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is not set, so the daemon runs the same
//! without systemd.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    last_status: Option<(Instant, String)>,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

const STATUS_INTERVAL: Duration = Duration::from_secs(1);

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = if enabled {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        Notifier {
            enabled,
            last_status: None,
            watchdog,
            last_ping: None,
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(err) = sd_notify::notify(states) {
                tracing::debug!("sd_notify failed: {err}");
            }
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// Whether a status line may be sent now (at most once a second); also pings the
    /// watchdog, since this is called from the loop that does the work.
    pub fn status_due(&mut self) -> bool {
        let now = Instant::now();
        if let Some(interval) = self.watchdog {
            if self
                .last_ping
                .is_none_or(|at| now.duration_since(at) >= interval / 3)
            {
                self.send(&[NotifyState::Watchdog]);
                self.last_ping = Some(now);
            }
        }
        self.enabled
            && self
                .last_status
                .as_ref()
                .is_none_or(|(at, _)| now.duration_since(*at) >= STATUS_INTERVAL)
    }

    /// When the next watchdog ping is due (the loop must wake up by then).
    pub fn next_ping(&self) -> Option<Instant> {
        let interval = self.watchdog?;
        Some(
            self.last_ping
                .map_or_else(Instant::now, |at| at + interval / 3),
        )
    }

    /// `READY=1` together with the first status line, so `systemctl status` shows it at
    /// once.
    pub fn ready_with_status(&mut self, line: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(line)]);
        self.last_status = Some((Instant::now(), line.to_owned()));
    }

    /// Sends `STATUS=line` if it changed.
    pub fn status(&mut self, line: &str) {
        if self
            .last_status
            .as_ref()
            .is_some_and(|(_, last)| last == line)
        {
            return;
        }
        self.send(&[NotifyState::Status(line)]);
        self.last_status = Some((Instant::now(), line.to_owned()));
    }
}
