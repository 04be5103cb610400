//! The `socket` plugin: send each changed absolute path to a TCP listener.
//!
//! Two wire formats, chosen by `<deshost framing>`:
//!
//! - `raw` (default, sersync 2.5 compatible): for each change a new connection, the path
//!   bytes with no terminator, then close; the listener reads until EOF. Nothing is read
//!   back. sersync tried to connect 5 times, 20 ms apart, with 100 ms connect timeouts; we
//!   try 5 times with 50 ms doubling pauses and a 2 s connect timeout, then count the
//!   event as failed: a listener that is down loses those events, as it did with 2.5.
//! - `newline` / `nul`: one persistent connection; each path followed by `\n` or a NUL
//!   byte. When the connection breaks it is reopened with exponential backoff (100 ms up
//!   to 5 s), and an event waits for that for up to 30 s after it was submitted, so a
//!   listener restart loses nothing. Before each write the connection is checked for EOF
//!   from the peer, so a listener that went away is noticed before a path is written into
//!   a dead socket. Delivery is still at-most-once in the worst case (a path written just
//!   before the peer dies); a path cut short by a broken connection is sent again whole on
//!   the next one, so receivers should ignore an unterminated last record at EOF.
//!   `newline` cannot carry a name that contains a newline (such events count as failed);
//!   `nul` can carry every path.
//!
//! Only changes at or below the plugin's own `<localpath watch>` are sent.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::connect;
use super::{Control, Job, Outcome, Plugin, PluginEvent, within};
use crate::config::{SocketFraming, SocketPlugin};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Raw mode: connection attempts per event.
const RAW_ATTEMPTS: u32 = 5;
const RAW_FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Framed mode: how long an event waits for the listener to come back.
const FRAMED_RETRY_WINDOW: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct Socket {
    watch: PathBuf,
    host: String,
    port: u16,
    framing: SocketFraming,
    /// The persistent connection of the framed modes.
    link: Mutex<Link>,
}

/// A persistent connection and its reconnect schedule.
#[derive(Debug)]
struct Link {
    stream: Option<TcpStream>,
    backoff: Duration,
    /// No connection attempt before this.
    next_attempt: Instant,
    /// Whether "disconnected" was already logged for the current outage.
    down_logged: bool,
}

/// The bytes on the wire for one path.
pub(super) fn frame(abs: &[u8], framing: SocketFraming) -> Result<Vec<u8>, String> {
    let mut bytes = abs.to_vec();
    match framing {
        SocketFraming::Raw => {}
        SocketFraming::Newline => {
            if abs.contains(&b'\n') {
                return Err(
                    "the path contains a newline, which framing=\"newline\" cannot carry \
                     (use framing=\"nul\")"
                        .to_owned(),
                );
            }
            bytes.push(b'\n');
        }
        SocketFraming::Nul => bytes.push(0),
    }
    Ok(bytes)
}

impl Socket {
    pub(super) fn new(config: &SocketPlugin) -> Socket {
        Socket {
            watch: config.watch.clone(),
            host: config.host.clone(),
            port: config.port,
            framing: config.framing,
            link: Mutex::new(Link {
                stream: None,
                backoff: BACKOFF_START,
                next_attempt: Instant::now(),
                down_logged: false,
            }),
        }
    }

    fn target(&self) -> String {
        format!("{}:{}", crate::http_url::bracketed(&self.host), self.port)
    }

    fn open(&self) -> Result<TcpStream, String> {
        let stream = connect(&self.host, self.port, Instant::now() + CONNECT_TIMEOUT)?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| format!("socket setup: {e}"))?;
        Ok(stream)
    }

    /// sersync 2.5's protocol: a connection per path.
    fn deliver_raw(&self, bytes: &[u8], control: &Control) -> Outcome {
        let mut pause = RAW_FIRST_PAUSE;
        let mut last = String::new();
        for attempt in 1..=RAW_ATTEMPTS {
            match self.open() {
                Ok(mut stream) => {
                    return match stream.write_all(bytes) {
                        Ok(()) => {
                            let _ = stream.shutdown(Shutdown::Write);
                            Outcome::Delivered
                        }
                        Err(err) => Outcome::Failed(format!("sending to {}: {err}", self.target())),
                    };
                }
                Err(err) => last = err,
            }
            if attempt < RAW_ATTEMPTS && !control.sleep(pause) {
                break;
            }
            pause *= 2;
        }
        Outcome::Failed(format!(
            "cannot connect to {} ({RAW_ATTEMPTS} attempts): {last}",
            self.target()
        ))
    }

    /// One persistent connection, reopened with backoff until `deadline`.
    fn deliver_framed(&self, bytes: &[u8], deadline: Instant, control: &Control) -> Outcome {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = String::from("not connected");
        loop {
            if control.aborted() {
                return Outcome::Failed(format!("not sent ({last}); stopping"));
            }
            if link.stream.as_mut().is_some_and(|s| !peer_open(s)) {
                link.stream = None;
                last = "the listener closed the connection".to_owned();
                self.went_down(&mut link, &last);
            }
            if link.stream.is_none() {
                let now = Instant::now();
                if link.next_attempt > deadline {
                    return Outcome::Failed(format!(
                        "{} unreachable ({last}); gave up after {}s",
                        self.target(),
                        FRAMED_RETRY_WINDOW.as_secs()
                    ));
                }
                if link.next_attempt > now && !control.sleep(link.next_attempt - now) {
                    continue;
                }
                match self.open() {
                    Ok(stream) => {
                        tracing::info!(plugin = "socket", "connected to {}", self.target());
                        link.stream = Some(stream);
                        link.backoff = BACKOFF_START;
                        link.down_logged = false;
                    }
                    Err(err) => {
                        last = err;
                        self.went_down(&mut link, &last);
                        continue;
                    }
                }
            }
            let Some(stream) = link.stream.as_mut() else {
                continue;
            };
            match stream.write_all(bytes) {
                Ok(()) => return Outcome::Delivered,
                Err(err) => {
                    last = format!("sending to {}: {err}", self.target());
                    link.stream = None;
                    self.went_down(&mut link, &last);
                }
            }
        }
    }

    /// Schedules the next connection attempt and logs the outage once.
    fn went_down(&self, link: &mut Link, why: &str) {
        link.next_attempt = Instant::now() + link.backoff;
        link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
        if !link.down_logged {
            link.down_logged = true;
            tracing::warn!(
                plugin = "socket",
                "{} unavailable ({why}): reconnecting with backoff",
                self.target()
            );
        }
    }
}

/// False when the peer has closed the connection (EOF) or it has failed. Anything the
/// peer sent is read and discarded so its data cannot fill our receive buffer.
fn peer_open(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let open = loop {
        match stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => break true,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    open && stream.set_nonblocking(false).is_ok()
}

impl Plugin for Socket {
    fn accept(&self, _event: &PluginEvent, abs: &[u8]) -> Result<(), String> {
        within(abs, &self.watch).map(|_| ())
    }

    fn deliver(&self, job: &Job, control: &Control) -> Outcome {
        let bytes = match frame(&job.abs, self.framing) {
            Ok(bytes) => bytes,
            Err(err) => return Outcome::Failed(err),
        };
        match self.framing {
            SocketFraming::Raw => self.deliver_raw(&bytes, control),
            SocketFraming::Newline | SocketFraming::Nul => {
                self.deliver_framed(&bytes, job.submitted + FRAMED_RETRY_WINDOW, control)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        type Case<'a> = (&'a [u8], SocketFraming, Result<&'a [u8], &'a str>);
        let cases: &[Case<'_>] = &[
            (b"/w/a b", SocketFraming::Raw, Ok(b"/w/a b")),
            (b"/w/a\nb", SocketFraming::Raw, Ok(b"/w/a\nb")),
            (b"/w/a b", SocketFraming::Newline, Ok(b"/w/a b\n")),
            (
                b"/w/a\nb",
                SocketFraming::Newline,
                Err("contains a newline"),
            ),
            (b"/w/a\nb\xff", SocketFraming::Nul, Ok(b"/w/a\nb\xff\0")),
        ];
        for (abs, framing, expected) in cases {
            match (frame(abs, *framing), expected) {
                (Ok(bytes), Ok(want)) => assert_eq!(&bytes, want),
                (Err(err), Err(want)) => assert!(err.contains(want), "{err}"),
                (got, want) => panic!("{abs:?} {framing:?}: {got:?}, expected {want:?}"),
            }
        }
    }
}
