//! A deliberately small HTTP/1.x client over `std::net::TcpStream`, for the refreshCDN and
//! http plugins.
//!
//! Why not a crate: the plugins send one short request per changed file to a URL the
//! operator configured, and need nothing but a bounded exchange: resolve, connect, write,
//! read the status and a little of the body, close. That is a few hundred lines; an HTTP
//! stack with its own runtime and TLS would be most of the binary.
//!
//! What it does not do, on purpose:
//! - **No TLS.** `https://` is refused when the config is read. Point the plugin at a
//!   local TLS-terminating proxy (stunnel, nginx, haproxy, `socat`) that forwards to the
//!   real endpoint.
//! - No redirects, no keep-alive (every request says `Connection: close`), no chunked
//!   request bodies (we always know the length), no proxies from the environment.
//! - Name resolution uses the system resolver (`getaddrinfo`), which has no timeout of its
//!   own; `/etc/hosts` or an IP literal avoids depending on DNS.
//!
//! Every exchange is bounded by one deadline covering connect, write and read, and the
//! amount of response kept is capped, so a misbehaving endpoint costs at most one timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http_url::{HttpUrl, bracketed};

/// The most of a response head we accept before calling the response malformed.
const HEAD_CAP: usize = 64 * 1024;
/// The most of a response body we keep (for logs); the rest is not read.
const BODY_CAP: usize = 64 * 1024;

/// The protocol version of a request, which also decides which headers are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0` with only the headers given: what sersync 2.5 sent to ChinaCache.
    Http10,
    /// `HTTP/1.1`, adding `Host`, `User-Agent`, `Connection: close` and `Content-Length`
    /// unless the caller set them.
    Http11,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Where to connect.
    pub host: String,
    pub port: u16,
    /// What to ask for (`/path?query`); sent as is.
    pub target: String,
    pub version: Version,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// An HTTP/1.1 request for `url`.
    pub fn new(method: &str, url: &HttpUrl) -> Request {
        Request {
            method: method.to_owned(),
            host: url.host.clone(),
            port: url.port,
            target: url.target.clone(),
            version: Version::Http11,
            headers: vec![("Host".to_owned(), url.host_header())],
            body: Vec::new(),
        }
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Sets a header, replacing one of the same name (names compare ignoring case).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The request line and headers, ending with the empty line.
    pub fn head(&self) -> Vec<u8> {
        let version = match self.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        };
        let mut head = format!("{} {} {version}\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.version == Version::Http11 {
            if !self.has_header("User-Agent") {
                head.push_str(concat!(
                    "User-Agent: sersync/",
                    env!("CARGO_PKG_VERSION"),
                    "\r\n"
                ));
            }
            if !self.has_header("Connection") {
                head.push_str("Connection: close\r\n");
            }
            let needs_length =
                !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
            if needs_length && !self.has_header("Content-Length") {
                head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// `METHOD http://host:port/target`, for logs.
    pub fn describe(&self) -> String {
        let host = bracketed(&self.host);
        format!("{} http://{host}:{}{}", self.method, self.port, self.target)
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Up to 64 KiB of the body.
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first line of the head or body that contains `word` (ignoring ASCII case),
    /// trimmed; used for ChinaCache's `whatsup` answer.
    pub fn line_containing(&self, word: &str) -> Option<String> {
        let word = word.to_ascii_lowercase();
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .chain(
                String::from_utf8_lossy(&self.body)
                    .lines()
                    .map(str::to_owned),
            )
            .find(|line| line.to_ascii_lowercase().contains(&word))
            .map(|line| line.trim().to_owned())
    }

    /// The start of the body as one line of text, for logs.
    pub fn body_excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.char_indices().nth(max) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    }
}

/// Sends `request` and reads the response, all within `timeout`. Any error is a transport
/// problem (name resolution, connection, timeout, malformed answer); HTTP statuses are
/// returned as responses for the caller to judge.
pub fn send(request: &Request, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(&request.host, request.port, deadline)?;
    let mut bytes = request.head();
    bytes.extend_from_slice(&request.body);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| format!("socket setup: {e}"))?;
    stream
        .write_all(&bytes)
        .map_err(|e| io_message("sending the request", &e))?;
    let response = read_response(&mut stream, request.method == "HEAD", deadline);
    let _ = stream.shutdown(Shutdown::Both);
    response
}

/// Time left before `deadline`, or the timeout error.
fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timed out".to_owned())
    } else {
        Ok(left)
    }
}

fn io_message(what: &str, err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out {what}"),
        _ => format!("{what}: {err}"),
    }
}

/// Resolves `host` and connects to its addresses in turn before `deadline`.
pub fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    let mut last = String::new();
    for addr in addrs {
        let left = remaining(deadline).map_err(|_| format!("timed out connecting to {host}"))?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(err) => last = io_message(&format!("connecting to {addr}"), &err),
        }
    }
    Err(last)
}

/// Reads one response (skipping interim 1xx ones) before `deadline`.
fn read_response(
    stream: &mut TcpStream,
    head_only: bool,
    deadline: Instant,
) -> Result<Response, String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    loop {
        // Parse every complete head in the buffer; 1xx heads are dropped.
        while let Some(end) = head_end(&buf) {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(read_body(stream, head, buf, head_only, eof, deadline));
        }
        if eof {
            return Err(if buf.is_empty() {
                "the connection was closed without a response".to_owned()
            } else {
                format!(
                    "malformed response: {}",
                    String::from_utf8_lossy(&buf[..buf.len().min(200)]).trim()
                )
            });
        }
        if buf.len() > HEAD_CAP {
            return Err("malformed response: the head is larger than 64 KiB".to_owned());
        }
        let left =
            remaining(deadline).map_err(|_| "timed out waiting for the response".to_owned())?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("socket setup: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(io_message("reading the response", &err)),
        }
    }
}

/// The end (exclusive) of the first head in `buf`: after `\r\n\r\n`, or `\n\n` from a
/// sloppy server.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A response head; the body is filled in by [`read_body`].
fn parse_head(head: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default().trim();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/"), status) else {
        return Err(format!("malformed response: {status_line:?}"));
    };
    let reason = parts.next().unwrap_or_default().trim().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    })
}

/// Reads the body after the head, as far as it is useful: up to `Content-Length`, the
/// end of the stream or [`BODY_CAP`]. A body cut short by the deadline is kept as it is:
/// the status has arrived, and it is what the plugins judge.
fn read_body(
    stream: &mut TcpStream,
    mut response: Response,
    mut body: Vec<u8>,
    head_only: bool,
    mut eof: bool,
    deadline: Instant,
) -> Response {
    if head_only || matches!(response.status, 204 | 304) {
        return response;
    }
    let length = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let want = length.unwrap_or(usize::MAX).min(BODY_CAP);
    let mut chunk = [0u8; 4096];
    while body.len() < want && !eof {
        let Ok(left) = remaining(deadline) else { break };
        if stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    body.truncate(want);
    response.body = body;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_add_only_what_the_version_calls_for() {
        let url = HttpUrl::parse("http://h:8080/p").unwrap();
        let mut request = Request::new("POST", &url);
        request.set_header("content-type", "application/json");
        request.body = b"{}".to_vec();
        let head = String::from_utf8(request.head()).unwrap();
        assert_eq!(
            head,
            format!(
                "POST /p HTTP/1.1\r\nHost: h:8080\r\ncontent-type: application/json\r\n\
                 User-Agent: sersync/{}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
        request.set_header("Host", "other");
        assert!(
            String::from_utf8(request.head())
                .unwrap()
                .contains("\r\nHost: other\r\n")
        );

        let old = Request {
            method: "HEAD".into(),
            host: "cdn".into(),
            port: 80,
            target: "/index.jsp?a".into(),
            version: Version::Http10,
            headers: vec![("Host".into(), "cdn".into())],
            body: Vec::new(),
        };
        assert_eq!(
            old.head(),
            b"HEAD /index.jsp?a HTTP/1.0\r\nHost: cdn\r\n\r\n"
        );
    }

    #[test]
    fn heads_parse_leniently() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.0 200 OK\n\nbody"), Some(17));
        assert_eq!(head_end(b"HTTP/1.0 200 OK\r\n"), None);
        let response =
            parse_head(b"HTTP/1.1 503 Slow Down\r\nRetry-After: 1\r\nwhatsup: content\r\n\r\n")
                .unwrap();
        assert_eq!(
            (response.status, response.reason.as_str()),
            (503, "Slow Down")
        );
        assert_eq!(
            response.line_containing("WHATSUP").as_deref(),
            Some("whatsup: content")
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
