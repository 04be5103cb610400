//! The opt-in HTTP listener that answers Prometheus scrapes: `GET /metrics` from the
//! published status snapshot (`sersyncd --metrics-listen ADDR`, `<metrics listen>`).
//!
//! Why `std::net` and threads instead of an HTTP server crate (hyper, axum on tokio): there
//! is one route, answered from a snapshot already in memory, with no body to read and no
//! keep-alive to manage. Reading a request head and writing one response with
//! `Connection: close` is a few dozen lines; a server crate would bring an async runtime
//! and dozens of crates into a daemon that has no other use for them. What is decided
//! about a request ([`parse_request`], [`respond`]) is pure and tested by tables; the
//! sockets are only around it.
//!
//! Bounded, so a slow or hostile client cannot hang or flood it: a request head is read
//! up to [`MAX_HEAD`] bytes and for at most [`READ_DEADLINE`] in all (however slowly it
//! trickles in), an answer is written within [`WRITE_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once, each on a thread of its own; a connection
//! beyond that is closed unanswered. The listener itself never blocks the daemon's loop:
//! it only reads the snapshot under its lock, for as long as a clone takes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Format, render};
use crate::control::Status;
use crate::control::wire::{Audience, StatusInfo};

/// The longest request head read (request line and headers); a longer one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 4;
/// How often the accepting thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// What a request asked for, as far as answering it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

/// Why a request head cannot be answered as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Not `METHOD TARGET HTTP/1.x`, or not text.
    Malformed,
    /// The head did not end within [`MAX_HEAD`] bytes.
    TooLarge,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: String,
    /// Send the headers only (`HEAD`), with the length of `body`.
    pub head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            head_only: false,
        }
    }

    /// The bytes on the wire: status line, headers, and (unless `head_only`) the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// Reads a request head: the request line and headers up to the blank line. `head` must
/// hold the whole head (the caller reads until `\r\n\r\n`, or `\n\n`, or [`MAX_HEAD`]).
pub fn parse_request(head: &[u8]) -> Result<Request, BadRequest> {
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
    let mut lines = text.split('\n').map(|line| line.trim_end_matches('\r'));
    let request_line = lines.next().ok_or(BadRequest::Malformed)?;
    let mut words = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(BadRequest::Malformed);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(BadRequest::Malformed);
    }
    let mut accept = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(BadRequest::Malformed)?;
        if name.trim().eq_ignore_ascii_case("accept") {
            accept = Some(value.trim().to_owned());
        }
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        accept,
    })
}

/// The answer to a request; `exposition` renders the metrics in a format (called only
/// for `GET` or `HEAD /metrics`).
pub fn respond(
    request: Result<Request, BadRequest>,
    exposition: impl FnOnce(Format) -> String,
) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(BadRequest::Malformed) => return Response::text(400, "Bad Request", "bad request\n"),
        Err(BadRequest::TooLarge) => {
            return Response::text(
                431,
                "Request Header Fields Too Large",
                "request header too large\n",
            );
        }
    };
    if request.path != "/metrics" {
        return Response::text(404, "Not Found", "not found: the metrics are at /metrics\n");
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Response::text(
                405,
                "Method Not Allowed",
                "method not allowed: GET /metrics\n",
            );
        }
    };
    let format = Format::negotiate(request.accept.as_deref());
    Response {
        status: 200,
        reason: "OK",
        content_type: format.content_type(),
        body: exposition(format),
        head_only,
    }
}

/// Reads a request head from `stream` within [`READ_DEADLINE`] in all: up to the blank
/// line, or [`MAX_HEAD`] bytes (then [`BadRequest::TooLarge`]).
fn read_head(stream: &mut TcpStream) -> io::Result<Result<Vec<u8>, BadRequest>> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let want = (MAX_HEAD + 1 - head.len()).min(buffer.len());
        let n = stream.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request head",
            ));
        }
        head.extend_from_slice(&buffer[..n]);
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
            .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|at| at + 2));
        if let Some(end) = end {
            head.truncate(end);
            return Ok(Ok(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(Err(BadRequest::TooLarge));
        }
    }
}

/// What every connection needs to answer.
#[derive(Debug, Clone)]
struct Source {
    status: Arc<RwLock<Status>>,
    instance: String,
    config_path: PathBuf,
}

impl Source {
    /// The metrics of the snapshot as it is now, as everyone may see it.
    fn exposition(&self, format: Format) -> String {
        let info = {
            let status = match self.status.read() {
                Ok(status) => status,
                Err(poisoned) => poisoned.into_inner(),
            };
            StatusInfo::new(
                &status,
                &self.instance,
                &self.config_path,
                Audience::Everyone,
            )
        };
        render(&info, format)
    }
}

fn serve_connection(mut stream: TcpStream, source: &Source) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = respond(head.and_then(|head| parse_request(&head)), |format| {
        source.exposition(format)
    });
    stream.write_all(&response.to_bytes())?;
    stream.flush()?;
    // Tell the client we are done before closing, so it reads the whole answer.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// The running listener. Dropping it stops accepting (within [`STOP_POLL`]) and closes
/// the socket; connections being answered finish on their own threads.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` (the caller reports a failure: at start it is a configuration
    /// error, at a reload the old listener stays).
    pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(address)
    }

    /// Serves `GET /metrics` on `listener` from `status` on a thread of its own.
    /// `instance` and `config_path` are the daemon's (as the D-Bus adapter's are).
    pub fn start(
        listener: TcpListener,
        status: Arc<RwLock<Status>>,
        instance: String,
        config_path: PathBuf,
    ) -> io::Result<MetricsServer> {
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let source = Source {
            status,
            instance,
            config_path: std::path::absolute(&config_path).unwrap_or(config_path),
        };
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sersync-metrics".into())
                .spawn(move || accept_loop(&listener, &source, &stop))?
        };
        Ok(MetricsServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, source: &Source, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    let timeout = PollTimeout::try_from(STOP_POLL).unwrap_or(PollTimeout::NONE);
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::error!("metrics listener: poll failed: {err}; scrapes are not answered");
                return;
            }
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("metrics listener: cannot accept a connection: {err}");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::debug!("metrics listener: {MAX_CONNECTIONS} connections busy, one closed");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (source, done) = (source.clone(), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("sersync-scrape".into())
            .spawn(move || {
                if let Err(err) = serve_connection(stream, &source) {
                    tracing::debug!("metrics listener: a scrape ended early: {err}");
                }
                done.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(err) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("metrics listener: cannot start a thread: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, accept: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            accept: accept.map(Into::into),
        }
    }

    #[test]
    fn request_heads_are_read_strictly() {
        let table: [(&[u8], Result<Request, BadRequest>); 9] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Ok(request("GET", "/metrics", None)),
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\nACCEPT: application/openmetrics-text\r\n\r\n",
                Ok(request(
                    "GET",
                    "/metrics",
                    Some("application/openmetrics-text"),
                )),
            ),
            // Bare newlines, as some tools send.
            (
                b"HEAD / HTTP/1.1\nAccept:  text/plain \n\n",
                Ok(request("HEAD", "/", Some("text/plain"))),
            ),
            (b"GET /metrics\r\n\r\n", Err(BadRequest::Malformed)),
            (b"GET metrics HTTP/1.1\r\n\r\n", Err(BadRequest::Malformed)),
            (b"get /metrics HTTP/1.1\r\n\r\n", Err(BadRequest::Malformed)),
            (b"GET /metrics HTTP/2\r\n\r\n", Err(BadRequest::Malformed)),
            (
                b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
                Err(BadRequest::Malformed),
            ),
            (b"GET /\xff HTTP/1.1\r\n\r\n", Err(BadRequest::Malformed)),
        ];
        for (head, want) in table {
            assert_eq!(
                parse_request(head),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn only_get_and_head_of_metrics_are_answered_with_metrics() {
        let render = |format: Format| format!("metrics as {format:?}\n");
        // (request, status, content type starts with, body)
        let table = [
            (
                Ok(request("GET", "/metrics", None)),
                200,
                "text/plain; version=0.0.4",
                "metrics as Prometheus\n",
            ),
            (
                Ok(request(
                    "GET",
                    "/metrics",
                    Some("application/openmetrics-text;version=1.0.0"),
                )),
                200,
                "application/openmetrics-text",
                "metrics as OpenMetrics\n",
            ),
            (
                Ok(request("GET", "/", None)),
                404,
                "text/plain",
                "not found: the metrics are at /metrics\n",
            ),
            (
                Ok(request("GET", "/metrics/", None)),
                404,
                "text/plain",
                "not found: the metrics are at /metrics\n",
            ),
            (
                Ok(request("POST", "/metrics", None)),
                405,
                "text/plain",
                "method not allowed: GET /metrics\n",
            ),
            (
                Err(BadRequest::Malformed),
                400,
                "text/plain",
                "bad request\n",
            ),
            (
                Err(BadRequest::TooLarge),
                431,
                "text/plain",
                "request header too large\n",
            ),
        ];
        for (request, status, content_type, body) in table {
            let response = respond(request.clone(), render);
            assert_eq!(response.status, status, "{request:?}");
            assert!(
                response.content_type.starts_with(content_type),
                "{request:?}: {}",
                response.content_type
            );
            assert_eq!(response.body, body, "{request:?}");
            assert!(!response.head_only);
        }
        // Nothing is rendered for what is not a scrape.
        let response = respond(Ok(request("GET", "/other", None)), |_| {
            panic!("rendered for a 404")
        });
        assert_eq!(response.status, 404);
    }

    #[test]
    fn head_sends_the_length_without_the_body() {
        let response = respond(Ok(request("HEAD", "/metrics", None)), |_| "abc\n".into());
        let bytes = String::from_utf8(response.to_bytes()).unwrap();
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\n"
        );
        let refused = respond(Ok(request("PUT", "/metrics", None)), |_| String::new());
        let bytes = String::from_utf8(refused.to_bytes()).unwrap();
        assert!(
            bytes.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{bytes}"
        );
        assert!(bytes.contains("\r\nAllow: GET, HEAD\r\n"), "{bytes}");
        assert!(
            bytes.ends_with("\r\n\r\nmethod not allowed: GET /metrics\n"),
            "{bytes}"
        );
    }
}
