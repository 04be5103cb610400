//! Plugins against real endpoints on 127.0.0.1: a script for `command`, a TCP listener for
//! `socket` (both wire formats, and a listener that goes away and comes back), and a tiny
//! recording HTTP server for `refreshCDN` and `http`.
//!
//! Most tests drive [`PluginHost`] in-process with synthetic events (the plugin side of the
//! contract with the daemon). The `daemon_*` tests run a real `sersyncd`: `-m command`
//! without rsync, and plugins after a change has been synced.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sersync::config::{self, Config};
use sersync::plugin::{ChangeKind, PluginEvent, PluginHost, PluginStats};

use crate::harness::{
    CONVERGE, Env, POLL, SersyncdBuilder, assert_never_appears, find_named, temp_dir, write,
};

/// How long shutdown may take to drain a test's events.
const DRAIN: Duration = Duration::from_secs(30);

// ---- helpers -----------------------------------------------------------------------------

/// Escapes text for a double-quoted XML attribute.
fn attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A config whose `<head>` holds `plugins` and one watch root `root`.
fn load(plugins: &str, root: &Path) -> Config {
    let xml = format!(
        "<head>\n{plugins}\n<sersync><localpath watch=\"{}\"><remote ip=\"127.0.0.1\" name=\"m\"/></localpath></sersync>\n</head>\n",
        attr(&root.display().to_string())
    );
    match config::parse(Path::new("plugins.xml"), xml.as_bytes()) {
        Ok((config, _warnings)) => config,
        Err(diagnostics) => panic!(
            "config does not load:\n{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// The host of `sersyncd -m name` for `config`.
fn start_plugin(config: &Config, name: &str) -> PluginHost {
    PluginHost::from_config(config, Some(name))
        .expect("plugin starts")
        .expect("plugin enabled")
}

fn event(root: &Path, path: &[u8], is_dir: bool, kind: ChangeKind) -> PluginEvent {
    PluginEvent {
        root: root.to_owned(),
        path: path.to_vec(),
        is_dir,
        kind,
        remotes: vec!["127.0.0.1::m".to_owned()],
    }
}

fn abs(root: &Path, relative: &[u8]) -> Vec<u8> {
    let mut bytes = root.as_os_str().as_bytes().to_vec();
    bytes.push(b'/');
    bytes.extend_from_slice(relative);
    bytes
}

/// Polls `condition` until it holds; panics with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until the host's counters satisfy `condition`.
fn wait_stats(host: &PluginHost, what: &str, condition: impl Fn(&PluginStats) -> bool) {
    wait_until(Duration::from_secs(20), what, || condition(&host.stats()));
}

/// A free TCP port on 127.0.0.1 with nothing listening on it.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Writes an executable `/bin/sh` script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// A script that records each run in its own file under `records`: `SERSYNC_EVENT`,
/// `SERSYNC_IS_DIR`, then argc and every argument, NUL-separated. Then it runs `then`.
fn recording_script(path: &Path, records: &Path, then: &str) {
    std::fs::create_dir_all(records).expect("mkdir records");
    script(
        path,
        &format!(
            "f=$(mktemp '{}/run.XXXXXX') || exit 99\n\
             printf '%s\\0' \"$SERSYNC_EVENT\" \"$SERSYNC_IS_DIR\" \"$#\" \"$@\" > \"$f\"\n\
             {then}",
            records.display()
        ),
    );
}

/// One recorded run of [`recording_script`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    event: String,
    is_dir: bool,
    args: Vec<Vec<u8>>,
}

fn runs(records: &Path) -> Vec<Run> {
    let Ok(entries) = std::fs::read_dir(records) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        let fields: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
        // A file still being written has fewer fields than it announces.
        let Some(argc) = fields
            .get(2)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if fields.len() < 3 + argc {
            continue;
        }
        runs.push(Run {
            event: String::from_utf8_lossy(fields[0]).into_owned(),
            is_dir: fields[1] == b"1",
            args: fields[3..3 + argc].iter().map(|a| a.to_vec()).collect(),
        });
    }
    runs
}

/// Names that would run `touch PWNED`, split, glob or parse as options if they went
/// through a shell or were pasted into a command line.
fn hostile_names() -> Vec<Vec<u8>> {
    [
        &b"a\"b"[..],
        b"it's",
        b"a`touch PWNED`b",
        b"$(touch PWNED)",
        b"x;touch PWNED",
        b"a|touch PWNED",
        b"a&&touch PWNED",
        b"-rf",
        b"--help",
        b"-e touch PWNED",
        b"*",
        b"a\nb",
        b"line\ntouch PWNED",
        b"tab\there",
        b"back\\slash",
        b"bad\xff\xfename",
        b"with  two spaces",
        b" leading",
        b"$HOME",
        b"%s%n",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect()
}

/// A TCP listener on 127.0.0.1 that records what each connection sent until it closed
/// (or until the listener is stopped).
struct TcpRecorder {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRecorder {
    /// Listens on `port` (0: any free port).
    fn start(port: u16) -> TcpRecorder {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the test listener");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("listener address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            std::thread::spawn(move || {
                let mut readers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let index = {
                                let mut all = connections.lock().unwrap();
                                all.push(Vec::new());
                                all.len() - 1
                            };
                            let stop = Arc::clone(&stop);
                            let connections = Arc::clone(&connections);
                            readers.push(std::thread::spawn(move || {
                                read_connection(stream, index, &connections, &stop);
                            }));
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(err) => panic!("accept: {err}"),
                    }
                }
                drop(listener);
                for reader in readers {
                    let _ = reader.join();
                }
            })
        };
        TcpRecorder {
            port,
            stop,
            connections,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.connections.lock().unwrap().clone()
    }

    /// Everything received, all connections in order.
    fn stream(&self) -> Vec<u8> {
        self.connections().concat()
    }

    /// Closes the listener and every connection, and waits until they are closed.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("listener thread");
        }
    }
}

impl Drop for TcpRecorder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_connection(
    mut stream: TcpStream,
    index: usize,
    connections: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => connections.lock().unwrap()[index].extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// One request as the test HTTP server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A tiny HTTP server on 127.0.0.1 that records requests and answers each with the next
/// queued status (200 when none is queued). HTTP/1.0 requests (the ChinaCache API) get a
/// `whatsup` line as ChinaCache sent.
struct HttpRecorder {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpRecorder {
    fn start() -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test HTTP server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, statuses, stop) = (
                Arc::clone(&requests),
                Arc::clone(&statuses),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve_one(stream, &requests, &statuses),
                        Err(err) if err.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(err) => panic!("accept: {err}"),
                    }
                }
            })
        };
        HttpRecorder {
            port,
            requests,
            statuses,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers the next requests with these statuses, in order.
    fn answer(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The http plugin's JSON body for `path` and `event` (`updated`, `deleted`), if one
    /// was posted.
    fn posted(&self, path: &str, event: &str) -> Option<serde_json::Value> {
        self.requests()
            .into_iter()
            .map(|r| r.json())
            .find(|j| j["path"] == path && j["event"] == event)
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    statuses: &Mutex<VecDeque<u16>>,
) {
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().splitn(3, ' ');
    let (method, target, version) = (
        request_line.next().unwrap_or_default().to_owned(),
        request_line.next().unwrap_or_default().to_owned(),
        request_line.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
    let http10 = version == "HTTP/1.0";
    requests.lock().unwrap().push(Recorded {
        method,
        target,
        version,
        headers,
        body,
    });
    let response = if http10 {
        format!("HTTP/1.0 {status} Answer\r\nwhatsup: content\r\n\r\n")
    } else {
        format!("HTTP/1.1 {status} Answer\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    };
    let _ = stream.write_all(response.as_bytes());
}

// ---- command -----------------------------------------------------------------------------

#[test]
fn command_plugin_gets_each_hostile_name_as_exactly_one_argument_and_runs_nothing_else() {
    let dir = temp_dir("plugin-cmd");
    let root = dir.path().join("tree");
    std::fs::create_dir(&root).unwrap();
    let records = dir.path().join("records");
    let hook = dir.path().join("hook.sh");
    recording_script(&hook, &records, "exit 0");
    let names = hostile_names();
    for name in &names {
        std::fs::write(root.join(OsStr::from_bytes(name)), b"x").expect("create a hostile file");
    }
    let config = load(
        &format!(
            r#"<plugin name="command"><param prefix="'{}' &quot;--first word&quot;" suffix="'last arg'" ignoreError="false"/></plugin>"#,
            attr(&hook.display().to_string())
        ),
        &root,
    );
    let host = start_plugin(&config, "command");
    for name in &names {
        host.submit(event(&root, name, false, ChangeKind::Updated));
    }
    host.submit(event(&root, b"gone dir", true, ChangeKind::Deleted));
    let events = names.len() as u64 + 1;
    wait_stats(&host, "every command to run", |s| {
        s.delivered + s.failed == events
    });
    let stats = host.stats();
    host.shutdown(DRAIN);
    assert_eq!((stats.delivered, stats.failed), (events, 0), "{stats:?}");

    let mut got = runs(&records);
    got.sort_by(|a, b| a.args.cmp(&b.args));
    let mut expected: Vec<Run> = names
        .iter()
        .map(|name| Run {
            event: "updated".into(),
            is_dir: false,
            args: vec![
                b"--first word".to_vec(),
                abs(&root, name),
                b"last arg".to_vec(),
            ],
        })
        .chain([Run {
            event: "deleted".into(),
            is_dir: true,
            args: vec![
                b"--first word".to_vec(),
                abs(&root, b"gone dir"),
                b"last arg".to_vec(),
            ],
        }])
        .collect();
    expected.sort_by(|a, b| a.args.cmp(&b.args));
    assert_eq!(got, expected);
    assert!(
        find_named(dir.path(), "PWNED").is_empty(),
        "a name was executed"
    );
    assert!(
        !Path::new("PWNED").exists(),
        "a name was executed in the working directory"
    );
}

#[test]
fn command_plugin_honours_the_include_filter_ignore_error_and_its_timeout() {
    let dir = temp_dir("plugin-cmd-filter");
    let root = dir.path().join("tree");
    std::fs::create_dir(&root).unwrap();
    let records = dir.path().join("records");
    let hook = dir.path().join("hook.sh");
    recording_script(
        &hook,
        &records,
        "case \"$1\" in *fail.php) echo 'it broke' >&2; exit 3;; *slow.php) exec sleep 60;; esac",
    );
    let section = |ignore_error: bool| {
        format!(
            r#"<plugin name="command"><param prefix="{}" suffix="" ignoreError="{ignore_error}" timeout="1"/>
<filter start="true"><include expression="(.*)\.php"/><include expression="(.*)/bin/[^/]*"/></filter></plugin>"#,
            attr(&hook.display().to_string())
        )
    };

    // ignoreError="false": failures and timeouts count.
    let host = start_plugin(&load(&section(false), &root), "command");
    for name in [
        "a.php",
        "sub/bin/tool",
        "a.txt",
        "a.php.txt",
        "fail.php",
        "slow.php",
    ] {
        host.submit(event(&root, name.as_bytes(), false, ChangeKind::Updated));
    }
    wait_stats(&host, "the commands to finish", |s| {
        s.delivered + s.failed >= 4
    });
    let stats = host.stats();
    host.shutdown(DRAIN);
    assert_eq!(
        (stats.delivered, stats.failed, stats.skipped, stats.ignored),
        (2, 2, 2, 0),
        "{stats:?}"
    );
    let error = stats.last_error.unwrap_or_default();
    assert!(
        error.contains("exit code 3; stderr: it broke") || error.contains("timed out after 1s"),
        "{error}"
    );
    let mut ran: Vec<Vec<u8>> = runs(&records)
        .into_iter()
        .map(|r| r.args[0].clone())
        .collect();
    ran.sort();
    let mut expected: Vec<Vec<u8>> = ["a.php", "fail.php", "slow.php", "sub/bin/tool"]
        .iter()
        .map(|n| abs(&root, n.as_bytes()))
        .collect();
    expected.sort();
    assert_eq!(ran, expected, "the include filter decides what runs");

    // ignoreError="true": the same failures are only logged.
    let host = start_plugin(&load(&section(true), &root), "command");
    host.submit(event(&root, b"fail.php", false, ChangeKind::Updated));
    host.submit(event(&root, b"slow.php", false, ChangeKind::Updated));
    host.submit(event(&root, b"ok.php", false, ChangeKind::Updated));
    wait_stats(&host, "the commands to finish", |s| {
        s.delivered + s.ignored >= 3
    });
    let stats = host.stats();
    host.shutdown(DRAIN);
    assert_eq!(
        (stats.delivered, stats.failed, stats.ignored),
        (1, 0, 2),
        "{stats:?}"
    );
    assert_eq!(stats.last_error, None);
}

// ---- socket ------------------------------------------------------------------------------

fn socket_section(root: &Path, port: u16, framing: &str) -> String {
    format!(
        r#"<plugin name="socket"><localpath watch="{}"><deshost ip="127.0.0.1" port="{port}" framing="{framing}"/></localpath></plugin>"#,
        attr(&root.display().to_string())
    )
}

#[test]
fn socket_raw_mode_sends_each_path_on_its_own_connection_and_survives_a_dead_listener() {
    let dir = temp_dir("plugin-socket-raw");
    let root = dir.path().to_owned();
    let mut listener = TcpRecorder::start(0);
    let port = listener.port;
    let host = start_plugin(&load(&socket_section(&root, port, "raw"), &root), "socket");

    let names: [&[u8]; 4] = [b"a.txt", b"new\nline", b"bad\xff", b"dir"];
    for name in names {
        host.submit(event(&root, name, name == b"dir", ChangeKind::Updated));
    }
    // Outside the plugin's <localpath watch>: not sent.
    host.submit(event(
        Path::new("/elsewhere"),
        b"x",
        false,
        ChangeKind::Updated,
    ));
    wait_until(Duration::from_secs(20), "4 connections", || {
        listener.connections().len() == 4
    });
    let expected: Vec<Vec<u8>> = names.iter().map(|n| abs(&root, n)).collect();
    assert_eq!(
        listener.connections(),
        expected,
        "raw bytes, one connection each, in order"
    );
    assert_eq!(host.stats().skipped, 1);

    // The listener goes away: the event fails after a few attempts, nothing blocks.
    listener.stop();
    host.submit(event(&root, b"while-down", false, ChangeKind::Deleted));
    wait_stats(&host, "the event to fail", |s| s.failed == 1);

    // It comes back on the same port: the next event is delivered.
    let listener = TcpRecorder::start(port);
    host.submit(event(&root, b"after", false, ChangeKind::Updated));
    wait_until(
        Duration::from_secs(20),
        "the event after the restart",
        || listener.connections() == [abs(&root, b"after")],
    );
    let stats = host.stats();
    host.shutdown(DRAIN);
    assert_eq!((stats.delivered, stats.failed), (5, 1), "{stats:?}");
}

#[test]
fn socket_framed_modes_use_one_connection_and_reconnect_after_a_listener_restart() {
    for (framing, terminator) in [("newline", b'\n'), ("nul", 0u8)] {
        let dir = temp_dir("plugin-socket-framed");
        let root = dir.path().to_owned();
        let mut listener = TcpRecorder::start(0);
        let port = listener.port;
        let host = start_plugin(
            &load(&socket_section(&root, port, framing), &root),
            "socket",
        );
        let framed = |names: &[&[u8]]| -> Vec<u8> {
            names
                .iter()
                .flat_map(|n| {
                    let mut bytes = abs(&root, n);
                    bytes.push(terminator);
                    bytes
                })
                .collect()
        };

        host.submit(event(&root, b"a", false, ChangeKind::Updated));
        host.submit(event(&root, b"b c", false, ChangeKind::Deleted));
        host.submit(event(&root, b"x\ny", false, ChangeKind::Updated));
        host.submit(event(&root, b"bad\xff", false, ChangeKind::Updated));
        let first: Vec<&[u8]> = if framing == "nul" {
            vec![b"a", b"b c", b"x\ny", b"bad\xff"]
        } else {
            // A newline in a name cannot be framed by newlines: that event fails.
            vec![b"a", b"b c", b"bad\xff"]
        };
        wait_until(Duration::from_secs(20), "the first paths", || {
            listener.stream() == framed(&first)
        });
        assert_eq!(
            listener.connections().len(),
            1,
            "{framing}: one persistent connection"
        );

        // Restart the listener; events submitted meanwhile wait for it and arrive in order.
        listener.stop();
        std::thread::sleep(Duration::from_millis(200));
        host.submit(event(&root, b"c", false, ChangeKind::Updated));
        host.submit(event(&root, b"d", true, ChangeKind::Updated));
        std::thread::sleep(Duration::from_millis(700));
        let listener = TcpRecorder::start(port);
        wait_until(
            Duration::from_secs(20),
            "the paths after the restart",
            || listener.stream() == framed(&[b"c", b"d"]),
        );
        assert_eq!(listener.connections().len(), 1);
        let stats = host.stats();
        host.shutdown(DRAIN);
        let failed = u64::from(framing == "newline");
        assert_eq!(
            (stats.delivered, stats.failed),
            (6 - failed, failed),
            "{framing}: {stats:?}"
        );
    }
}

// ---- refreshCDN --------------------------------------------------------------------------

#[test]
fn refresh_cdn_sends_sersyncs_chinacache_head_request_for_files_and_directories() {
    let dir = temp_dir("plugin-cdn");
    let root = dir.path().to_owned();
    let server = HttpRecorder::start();
    let section = format!(
        r#"<plugin name="refreshCDN"><localpath watch="{}/">
<cdninfo domainname="127.0.0.1" port="{}" username="user" passwd="secret"/>
<sendurl base="http://pic.example.com/cms"/>
<regexurl regex="false" match="unused"/>
</localpath></plugin>"#,
        attr(&root.display().to_string()),
        server.port
    );
    let host = start_plugin(&load(&section, &root), "refreshCDN");
    host.submit(event(&root, b"images/a b.jpg", false, ChangeKind::Updated));
    host.submit(event(&root, b"images/2011", true, ChangeKind::Deleted));
    wait_stats(&host, "both purges", |s| s.delivered == 2);
    host.shutdown(DRAIN);

    let mut requests = server.requests();
    requests.sort_by(|a, b| a.target.cmp(&b.target));
    let expected = |query: &str| Recorded {
        method: "HEAD".into(),
        target: format!("/index.jsp?user=user&pswd=secret&ok=ok{query}"),
        version: "HTTP/1.0".into(),
        headers: vec![("Host".into(), "127.0.0.1".into())],
        body: Vec::new(),
    };
    assert_eq!(
        requests,
        [
            expected("&dirs=http://pic.example.com/cms/images/2011/"),
            expected("&urls=http://pic.example.com/cms/images/a%20b.jpg"),
        ]
    );
}

#[test]
fn refresh_cdn_generic_purge_sends_the_templated_request_and_retries_5xx() {
    let dir = temp_dir("plugin-purge");
    let root = dir.path().to_owned();
    let server = HttpRecorder::start();

    // Varnish style: PURGE the path itself.
    let section = format!(
        r#"<plugin name="refreshCDN"><localpath watch="{}">
<purge url="http://127.0.0.1:{}{{path}}" retries="2"/>
</localpath></plugin>"#,
        attr(&root.display().to_string()),
        server.port
    );
    server.answer(&[503]);
    let host = start_plugin(&load(&section, &root), "refreshCDN");
    host.submit(event(&root, b"img/a.jpg", false, ChangeKind::Updated));
    wait_stats(&host, "the purge after a retry", |s| s.delivered == 1);
    host.submit(event(&root, b"img", true, ChangeKind::Deleted));
    wait_stats(&host, "the directory purge", |s| s.delivered == 2);
    host.shutdown(DRAIN);
    let requests = server.requests();
    let lines: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("PURGE", "/img/a.jpg"),
            ("PURGE", "/img/a.jpg"),
            ("PURGE", "/img/")
        ]
    );
    assert_eq!(
        requests[0].header("Host"),
        Some(format!("127.0.0.1:{}", server.port).as_str())
    );

    // API style: POST a JSON body with the public URL and a token.
    let section = format!(
        r#"<plugin name="refreshCDN"><localpath watch="{}">
<sendurl base="https://www.example.com/static"/>
<purge url="http://127.0.0.1:{}/purge?zone=z&amp;path={{path_q}}" method="post" body='{{"files":["{{url}}"],"event":"{{event}}"}}'>
<header name="Authorization" value="Bearer T0KEN"/><header name="Content-Type" value="application/json"/>
</purge></localpath></plugin>"#,
        attr(&root.display().to_string()),
        server.port
    );
    let host = start_plugin(&load(&section, &root), "refreshCDN");
    host.submit(event(
        &root,
        "d/é.css".as_bytes(),
        false,
        ChangeKind::Deleted,
    ));
    wait_stats(&host, "the API purge", |s| s.delivered == 1);
    host.shutdown(DRAIN);
    let request = server.requests().pop().unwrap();
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/purge?zone=z&path=%2Fd%2F%C3%A9.css")
    );
    assert_eq!(request.header("Authorization"), Some("Bearer T0KEN"));
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(
        request.json(),
        serde_json::json!({"files": ["https://www.example.com/static/d/%C3%A9.css"], "event": "deleted"})
    );
}

// ---- http --------------------------------------------------------------------------------

fn http_section(root: &Path, port: u16, retries: u32) -> String {
    format!(
        r#"<plugin name="http"><localpath watch="{}"><deshost url="http://127.0.0.1/hook?k=1" port="{port}" timeout="2" retries="{retries}"><header name="X-Token" value="t"/></deshost></localpath></plugin>"#,
        attr(&root.display().to_string())
    )
}

#[test]
fn http_plugin_posts_json_for_files_and_directories_and_retries_server_errors() {
    let dir = temp_dir("plugin-http");
    let root = dir.path().to_owned();
    let server = HttpRecorder::start();
    let host = start_plugin(&load(&http_section(&root, server.port, 2), &root), "http");

    // Two 500s, then success: three identical POSTs.
    server.answer(&[500, 500]);
    host.submit(event(&root, b"img/a.jpg", false, ChangeKind::Updated));
    wait_stats(&host, "the POST after two retries", |s| s.delivered == 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(
            (
                request.method.as_str(),
                request.target.as_str(),
                request.version.as_str()
            ),
            ("POST", "/hook?k=1", "HTTP/1.1")
        );
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert_eq!(request.header("X-Token"), Some("t"));
        assert_eq!(
            request.json(),
            serde_json::json!({"root": root.display().to_string(), "path": "img/a.jpg",
                "is_dir": false, "event": "updated", "remotes": ["127.0.0.1::m"],
                "encoding": "utf-8"})
        );
    }

    // A directory whose name is not UTF-8: percent-encoded, and said so.
    host.submit(event(&root, b"d\xff ir", true, ChangeKind::Deleted));
    wait_stats(&host, "the directory POST", |s| s.delivered == 2);
    let body = server.requests().pop().unwrap().json();
    assert_eq!(
        (
            &body["path"],
            &body["is_dir"],
            &body["event"],
            &body["encoding"]
        ),
        (
            &serde_json::json!("d%FF%20ir"),
            &serde_json::json!(true),
            &serde_json::json!("deleted"),
            &serde_json::json!("percent")
        )
    );

    // A 4xx is not retried.
    server.answer(&[400]);
    host.submit(event(&root, b"rejected", false, ChangeKind::Updated));
    wait_stats(&host, "the rejected POST", |s| s.failed == 1);
    assert_eq!(server.requests().len(), 5);
    let stats = host.stats();
    host.shutdown(DRAIN);
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("answered 400 Answer"),
        "{stats:?}"
    );
}

#[test]
fn http_plugin_with_nothing_listening_fails_after_its_retries_without_blocking() {
    let dir = temp_dir("plugin-http-down");
    let root = dir.path().to_owned();
    let host = start_plugin(&load(&http_section(&root, closed_port(), 1), &root), "http");
    let started = Instant::now();
    for i in 0..20 {
        host.submit(event(
            &root,
            format!("f{i}").as_bytes(),
            false,
            ChangeKind::Updated,
        ));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "submit must not block"
    );
    wait_stats(&host, "every POST to fail", |s| s.failed == 20);
    host.shutdown(DRAIN);
}

// ---- the daemon: -m NAME and after-sync ---------------------------------------------------

/// `builder` with `<sersync><plugin start="true" name>`: the harness writes that element
/// with start="false", so its `<sersync>` section is replaced by a copy with the plugin
/// enabled (the original is commented out). Call it last, after every other setting.
fn with_after_sync_plugin(builder: SersyncdBuilder, name: &str) -> SersyncdBuilder {
    let xml = builder.xml();
    let start = xml
        .find("<sersync>")
        .expect("<sersync> in the harness config");
    let end = xml
        .rfind("</sersync>")
        .expect("</sersync> in the harness config");
    let inner = &xml[start + "<sersync>".len()..end];
    let disabled = "<plugin start=\"false\" name=\"command\"/>";
    assert!(inner.contains(disabled) && !inner.contains("--"));
    let inner = inner.replace(
        disabled,
        &format!("<plugin start=\"true\" name=\"{name}\"/>"),
    );
    builder
        .raw_head_xml(&format!("<sersync>{inner}<!--"))
        .raw_sersync_xml("-->")
}

#[test]
fn daemon_m_command_runs_the_plugin_on_changes_without_rsync() {
    let Some(env) = Env::new(&["m1"]) else { return };
    let dir = temp_dir("plugin-m-command");
    let records = dir.path().join("records");
    let hook = dir.path().join("hook.sh");
    recording_script(&hook, &records, "exit 0");
    let section = format!(
        r#"<plugin name="command"><param prefix="{}" suffix="" ignoreError="false"/></plugin>"#,
        attr(&hook.display().to_string())
    );
    let daemon = env.start(|b| b.raw_head_xml(&section).arg("-m").arg("command"));

    write(env.src(), "a.txt", "a");
    std::fs::create_dir(env.src().join("d")).unwrap();
    write(env.src(), "d/b.txt", "b");
    let hostile = b"$(touch PWNED) `id` \n-x";
    std::fs::write(env.src().join(OsStr::from_bytes(hostile)), b"h").unwrap();
    let wanted = [
        abs(env.src(), b"a.txt"),
        abs(env.src(), b"d/b.txt"),
        abs(env.src(), hostile),
    ];
    wait_until(CONVERGE, "the command for each new file", || {
        let seen: Vec<Vec<u8>> = runs(&records).into_iter().flat_map(|r| r.args).collect();
        wanted.iter().all(|w| seen.contains(w))
    });
    for run in runs(&records) {
        assert_eq!(run.args.len(), 1, "one argument per run: {run:?}");
    }
    // -m runs the plugin only: nothing is pushed to the remote.
    assert_never_appears(&env.replica().join("a.txt"), Duration::from_secs(2));
    assert!(
        find_named(env.src(), "PWNED").is_empty() && find_named(&daemon.cwd(), "PWNED").is_empty()
    );
}

#[test]
fn daemon_after_sync_socket_plugin_gets_synced_paths_and_a_dead_listener_never_stops_syncing() {
    let Some(env) = Env::new(&["m1"]) else { return };
    let mut listener = TcpRecorder::start(0);
    let port = listener.port;
    let builder = env
        .builder()
        .raw_head_xml(&socket_section(env.src(), port, "nul"));
    let _daemon = with_after_sync_plugin(builder, "socket").start();

    let framed = |name: &[u8]| {
        let mut bytes = abs(env.src(), name);
        bytes.push(0);
        bytes
    };
    write(env.src(), "a.txt", "a");
    env.converged();
    wait_until(CONVERGE, "the synced path on the socket", || {
        listener
            .stream()
            .windows(framed(b"a.txt").len())
            .any(|w| w == framed(b"a.txt"))
    });

    // Listener down: syncing goes on; the path arrives once the listener is back.
    listener.stop();
    write(env.src(), "b.txt", "b");
    env.converged();
    let listener = TcpRecorder::start(port);
    wait_until(
        CONVERGE,
        "the path synced while the listener was down",
        || {
            listener
                .stream()
                .windows(framed(b"b.txt").len())
                .any(|w| w == framed(b"b.txt"))
        },
    );
}

#[test]
fn daemon_after_sync_http_plugin_reports_the_change_and_the_remotes_it_reached() {
    let Some(env) = Env::new(&["m1"]) else { return };
    let server = HttpRecorder::start();
    let builder = env
        .builder()
        .raw_head_xml(&http_section(env.src(), server.port, 1));
    let _daemon = with_after_sync_plugin(builder, "http").start();

    write(env.src(), "page.html", "<p>");
    env.converged();
    let find = |path: &str, kind: &str| server.posted(path, kind);
    wait_until(CONVERGE, "the POST for page.html", || {
        find("page.html", "updated").is_some()
    });
    let body = find("page.html", "updated").unwrap();
    assert_eq!(body["root"], env.src().display().to_string());
    assert_eq!(body["is_dir"], false);
    let remotes = body["remotes"].as_array().expect("remotes");
    assert!(
        remotes.len() == 1 && remotes[0].as_str().is_some_and(|r| r.ends_with("::m1")),
        "{body}"
    );

    std::fs::remove_file(env.src().join("page.html")).unwrap();
    env.converged();
    wait_until(CONVERGE, "the POST for the deletion", || {
        find("page.html", "deleted").is_some()
    });
}

#[test]
fn a_reload_that_drops_a_dead_remote_hands_the_plugin_what_the_other_remotes_have() {
    let Some(env) = Env::new(&["m1"]) else { return };
    let server = HttpRecorder::start();
    let live = env.rsyncd.remote("m1");
    // A module the rsync daemon does not have: every run to it fails.
    let dead = crate::harness::Remote {
        ip: live.ip.clone(),
        name: "nosuchmodule".to_owned(),
    };
    let config = |remotes: &[crate::harness::Remote]| {
        let builder = SersyncdBuilder::new()
            .root(env.src(), remotes)
            .rsyncd(&env.rsyncd)
            .raw_head_xml(&http_section(env.src(), server.port, 1));
        with_after_sync_plugin(builder, "http")
    };
    let daemon = config(&[live.clone(), dead]).start();
    let posted = |path: &str| server.posted(path, "updated").is_some();

    write(env.src(), "page.html", "<p>");
    env.converged();
    // Not every remote has it: the plugin waits.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!posted("page.html"), "posted before every remote had it");

    // The operator drops the dead remote: the one left has the change, so the plugin hears
    // of it now (it used to wait for ever).
    daemon.write_config(&config(&[live]).xml());
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(CONVERGE, "the POST for page.html after the reload", || {
        posted("page.html")
    });
    assert!(daemon.log().contains("configuration reloaded"));
}

#[test]
fn the_paths_of_a_partly_refused_batch_that_arrived_reach_the_plugin() {
    let Some(mut env) = Env::new(&["m1"]) else {
        return;
    };
    // The module refuses files named refused*: exit 23, naming them.
    env.rsyncd.set_module_options("    exclude = refused*\n");
    let server = HttpRecorder::start();
    let builder = env
        .builder()
        .raw_head_xml(&http_section(env.src(), server.port, 1));
    let daemon = with_after_sync_plugin(builder, "http").start();
    let posted = |path: &str| server.posted(path, "updated").is_some();
    write(env.src(), "first.txt", "1");
    wait_until(CONVERGE, "the POST for first.txt", || posted("first.txt"));

    // While the remote is away the changes gather, so that they go in one batch after.
    env.rsyncd.stop();
    write(env.src(), "a.txt", "a");
    write(env.src(), "refused.txt", "r");
    write(env.src(), "b.txt", "b");
    std::thread::sleep(Duration::from_secs(2));
    env.rsyncd.start();
    wait_until(CONVERGE, "the POSTs for the paths that arrived", || {
        posted("a.txt") && posted("b.txt")
    });
    assert!(
        !posted("refused.txt"),
        "a refused path was reported as synced"
    );
    assert!(
        daemon.log().contains("path(s) failed"),
        "no partial failure: the test proves nothing\n{}",
        daemon.log()
    );
}
