//! Metrics and health end to end: a real `sersyncd` pushing to a real rsync daemon, its
//! `--metrics-listen` scraped by a real Prometheus server (the Debian package's
//! `/usr/bin/prometheus`, on 127.0.0.1 with its own config and storage in a temporary
//! directory) and read through its HTTP API; the exposition checked by the real
//! `promtool check metrics`; `sersyncctl metrics` and `sersyncctl health` over a private
//! dbus-daemon.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tempfile::TempDir;

use crate::control::{ctl, on_bus};
use crate::harness::bus::{Bus, Policy};
use crate::harness::{
    CONVERGE, Env, Remote, SersyncdBuilder, require_tool, sersyncd_binary, tail, temp_dir,
    terminate, write,
};

/// How long Prometheus may take to start, discover its target and scrape it (its
/// discovery hands static targets to the scrapers after about 5 s).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// What one HTTP exchange returned.
#[derive(Debug)]
struct Http {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` (a whole HTTP/1.x request head) to `address` and reads the answer to
/// the end (the server closes the connection).
fn http(address: SocketAddr, request: &str) -> Http {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("read the answer of {address}: {e}"));
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Http {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path` as HTTP/1.0 (so the answer is never chunked).
fn get(address: SocketAddr, path: &str, accept: Option<&str>) -> Http {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    http(
        address,
        &format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n{accept}\r\n"),
    )
}

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("wait for promtool"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("promtool did not finish within 60 s");
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), said)
}

/// Asserts that promtool finds nothing to say about `text` (parse errors and lint
/// problems both make it print and exit non-zero).
#[track_caller]
fn assert_promtool_silent(what: &str, text: &str) {
    let (code, said) = promtool_check(text);
    assert_eq!(
        (code, said.trim()),
        (0, ""),
        "promtool check metrics on {what}:\n{said}\n---- text ----\n{text}"
    );
}

/// A Prometheus server on 127.0.0.1 scraping one target every second; stopped (SIGTERM to
/// the PID we started, then SIGKILL) on drop.
struct Prometheus {
    dir: TempDir,
    address: SocketAddr,
    child: Option<Child>,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = temp_dir("prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sersync\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("create log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Prometheus {
            dir,
            address,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(address).is_ok() && get(address, "/-/ready", None).status == 200 {
                return prometheus;
            }
            if let Some(status) = prometheus
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                prometheus.child = None;
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `data.result` of an instant query.
    fn query(&self, promql: &str) -> Vec<Json> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let answer = get(
            self.address,
            &format!("/api/v1/query?query={encoded}"),
            None,
        );
        assert_eq!(answer.status, 200, "{promql}: {answer:?}");
        let json: Json = serde_json::from_str(&answer.body).expect("JSON from the query API");
        assert_eq!(json["status"], "success", "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{promql}: no result array in {json}"))
    }

    /// Queries `promql` until `ok` holds for its result (bounded).
    fn wait_for(&self, promql: &str, ok: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let result = self.query(promql);
            if ok(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never answered {promql} as expected; last: {result:?}\n\
                 targets: {}\n---- prometheus log ----\n{}",
                get(self.address, "/api/v1/targets", None).body,
                tail(&self.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "---- prometheus log (last 40 lines) ----\n{}\n---- end ----",
                tail(&self.log(), 40)
            );
        }
    }
}

/// The value of a query result's sample, as a number.
fn sample_value(series: &Json) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {series}"))
}

#[test]
fn e2e_prometheus_scrapes_each_remotes_lag_and_promtool_finds_nothing_to_say() {
    if !require_tool("prometheus") || !require_tool("promtool") {
        return;
    }
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web", "backup"]) else {
        return;
    };
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _daemon = env.start(|b| {
        on_bus(b, &bus, "web")
            .arg("--metrics-listen")
            .arg(&metrics.to_string())
    });
    write(env.src(), "a.txt", "a\n");
    write(env.src(), "dir/b.txt", "b\n");
    env.converged();
    crate::harness::wait_converged(
        env.src(),
        env.rsyncd.replica("backup"),
        crate::harness::CONVERGE,
    );

    // What a scraper that does not ask for OpenMetrics gets, and what sersyncctl prints:
    // the Prometheus text format, which promtool reads and lints.
    let scraped = get(metrics, "/metrics", None);
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(
        scraped
            .head
            .contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        scraped.head
    );
    assert_promtool_silent("the scraped text", &scraped.body);
    let printed = ctl(&bus, &["metrics"]).expect(0).stdout;
    assert_promtool_silent("sersyncctl metrics", &printed);
    // One rendering: the same families and series (values may have moved in between).
    let shape = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| {
                line.rsplit_once(' ')
                    .map_or(line, |(series, _)| series)
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(shape(&printed), shape(&scraped.body));
    let src = env.src().display().to_string();
    for module in ["web", "backup"] {
        let series = format!(
            "sersync_remote_lag_seconds{{sersync_instance=\"web\",root=\"{src}\",remote=\"127.0.0.1::{module}\"}} 0.0"
        );
        assert!(
            printed.lines().any(|l| l == series),
            "missing {series}:\n{printed}"
        );
    }
    let openmetrics = get(metrics, "/metrics", Some("application/openmetrics-text"));
    assert!(
        openmetrics
            .head
            .contains("\r\nContent-Type: application/openmetrics-text; version=1.0.0"),
        "{}",
        openmetrics.head
    );
    assert!(
        openmetrics.body.ends_with("# EOF\n"),
        "{}",
        openmetrics.body
    );

    // A real Prometheus (which asks for OpenMetrics first) scrapes it every second.
    let prometheus = Prometheus::start(metrics);
    let lags = prometheus.wait_for("sersync_remote_lag_seconds", |r| r.len() == 2);
    let mut remotes: Vec<(String, String)> = lags
        .iter()
        .map(|series| {
            let labels = &series["metric"];
            assert_eq!(labels["job"], "sersync", "{series}");
            assert_eq!(labels["sersync_instance"], "web", "{series}");
            assert_eq!(sample_value(series), 0.0, "{series}");
            (
                labels["root"].as_str().unwrap_or_default().to_owned(),
                labels["remote"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    remotes.sort();
    assert_eq!(
        remotes,
        vec![
            (src.clone(), "127.0.0.1::backup".to_owned()),
            (src.clone(), "127.0.0.1::web".to_owned()),
        ]
    );
    let up = prometheus.wait_for("up{job=\"sersync\"}", |r| r.len() == 1);
    assert_eq!(sample_value(&up[0]), 1.0, "{up:?}");
    // Both files reached both remotes: at least one good run each, counted as delivered.
    let runs = prometheus.wait_for("sersync_remote_runs_total{result=\"ok\"}", |r| {
        r.len() == 2 && r.iter().all(|s| sample_value(s) >= 1.0)
    });
    assert_eq!(runs.len(), 2);
    let delivered = prometheus.wait_for("sersync_delivery_latency_seconds_count", |r| {
        r.len() == 1 && sample_value(&r[0]) >= 2.0
    });
    assert_eq!(delivered.len(), 1);
    let states = prometheus.wait_for("sersync_remote_state == 1", |r| r.len() == 2);
    assert!(
        states.iter().all(|s| s["metric"]["state"] == "ok"),
        "{states:?}"
    );
}

#[test]
fn e2e_the_listener_answers_metrics_only_and_follows_a_reload_to_another_address() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let first: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let builder = env
        .builder()
        .arg("--no-dbus")
        .raw_sersync_xml(&format!("        <metrics listen=\"{first}\"/>\n"));
    let daemon = builder.clone().start();
    write(env.src(), "a.txt", "a\n");
    env.converged();

    let scraped = get(first, "/metrics?format=ignored", None);
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(
        scraped.body.contains("sersync_remote_pending_paths{"),
        "{}",
        scraped.body
    );
    // (request, status)
    let table = [
        ("GET / HTTP/1.1\r\n\r\n", 404),
        ("GET /metricsx HTTP/1.1\r\n\r\n", 404),
        ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        ("BREW /metrics HTCPCP/1.0\r\n\r\n", 400),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", 200),
    ];
    for (request, status) in table {
        let answer = http(first, request);
        assert_eq!(answer.status, status, "{request:?}: {answer:?}");
        if request.starts_with("HEAD") {
            assert_eq!(answer.body, "", "{answer:?}");
            assert!(answer.head.contains("\r\nContent-Length: "), "{answer:?}");
        }
    }
    let oversized = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "x".repeat(9000)
    );
    assert_eq!(http(first, &oversized).status, 431);
    // A client that sends half a request and then nothing is dropped, and meanwhile the
    // listener answers others.
    let mut slow = TcpStream::connect(first).expect("connect");
    slow.write_all(b"GET /met").expect("send half a request");
    let started = Instant::now();
    assert_eq!(get(first, "/metrics", None).status, 200);
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a silent client was held for {:?}",
        started.elapsed()
    );

    // A reload with another address moves the listener there.
    let second: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let moved = builder.xml().replace(
        &format!("listen=\"{first}\""),
        &format!("listen=\"{second}\""),
    );
    assert!(moved.contains(&second.to_string()), "{moved}");
    daemon.write_config(&moved);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + CONVERGE;
    while TcpStream::connect(second).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {second} after the reload:\n{}",
            tail(&daemon.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(second, "/metrics", None).status, 200);
    assert!(
        TcpStream::connect(first).is_err(),
        "{first} still answers after the reload"
    );
    assert!(
        daemon
            .log()
            .contains(&format!("answering scrapes at http://{second}/metrics")),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_start_with_78() {
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let address = held.local_addr().unwrap();
    let dir = temp_dir("metrics-bind");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let remote = Remote {
        ip: "127.0.0.1".into(),
        name: "web".into(),
    };
    let conf = dir.path().join("confxml.xml");
    // (the config, extra arguments, where the message says the address was given)
    let plain = SersyncdBuilder::new().root(&src, std::slice::from_ref(&remote));
    let flag = address.to_string();
    let table = [
        (
            plain.clone(),
            vec!["--metrics-listen", flag.as_str()],
            "(--metrics-listen)".to_owned(),
        ),
        (
            plain.raw_sersync_xml(&format!("<metrics listen=\"{address}\"/>\n")),
            vec![],
            format!("(<metrics listen> at {}:", conf.display()),
        ),
    ];
    for (builder, args, given) in table {
        std::fs::write(&conf, builder.xml()).unwrap();
        let mut command = Command::new(sersyncd_binary());
        command
            .arg("-o")
            .arg(&conf)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--no-dbus", "--log", "stderr"])
            .args(args);
        let ended = crate::control::run(command);
        assert_eq!(ended.code, 78, "{ended:?}");
        let message = format!("cannot listen for metrics on {address} {given}");
        assert!(ended.stderr.contains(&message), "{message}: {ended:?}");
        assert!(ended.stderr.contains("Address already in use"), "{ended:?}");
    }
    drop(held);
}

#[test]
fn e2e_health_is_ok_then_warning_and_critical_while_the_remote_is_down() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = env.start(|b| on_bus(b, &bus, "web"));
    write(env.src(), "first.txt", "1\n");
    env.converged();

    let ok = ctl(&bus, &["health"]).expect(0);
    let remote = format!("{} -> 127.0.0.1::web", env.src().display());
    assert!(
        ok.stdout
            .starts_with("SERSYNC OK - web: 1 of 1 remote ok, 0 failed changes, 0 queued"),
        "{ok:?}"
    );
    assert!(
        ok.stdout.contains(&format!(
            " | 'failed'=0;0;;0 'queued'=0;;;0 'lag {remote}'=0s;60;300;0"
        )),
        "{ok:?}"
    );
    assert_eq!(ok.stdout.lines().count(), 1, "{ok:?}");
    let json = ctl(&bus, &["health", "--json"]).expect(0).json();
    assert_eq!(json["status"], "OK", "{json}");
    assert_eq!(json["findings"], serde_json::json!([]), "{json}");

    // The remote goes away while changes come: they fail, and once they are in the
    // failure journal the check says so.
    env.rsyncd.stop();
    write(
        env.src(),
        "while-down.txt",
        "written while the remote is down\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let critical = loop {
        let check = ctl(&bus, &["health", "--crit-failed", "0"]);
        if check.code == 2 {
            break check;
        }
        assert!(
            check.code == 0 || check.code == 1,
            "health exited {}: {check:?}",
            check.code
        );
        assert!(
            Instant::now() < deadline,
            "health never became CRITICAL: {check:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        critical.stdout.starts_with("SERSYNC CRITICAL - web: "),
        "{critical:?}"
    );
    assert!(
        critical.stdout.contains("(critical above 0)"),
        "{critical:?}"
    );
    assert!(critical.stdout.contains(" | 'failed'="), "{critical:?}");
    // Without --crit-failed the same is a warning (failed changes, a remote in backoff).
    let warning = ctl(&bus, &["health"]);
    assert_eq!(warning.code, 1, "{warning:?}");
    assert!(
        warning.stdout.starts_with("SERSYNC WARNING - web: "),
        "{warning:?}"
    );
    let json = ctl(&bus, &["health", "--json", "--crit-failed", "0"])
        .expect(2)
        .json();
    assert_eq!(json["status"], "CRITICAL", "{json}");
    assert!(
        json["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["status"] == "CRITICAL")),
        "{json}"
    );

    // Back: the failures are retried and delivered, and the check is OK again.
    env.rsyncd.start();
    ctl(&bus, &["retry-failed"]).expect(0);
    env.converged();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let check = ctl(&bus, &["health", "--crit-failed", "0"]);
        if check.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never became OK again: {check:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn health_is_unknown_without_a_daemon_or_with_bad_arguments() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    // A bus without any sersyncd, a named instance that is not there, no bus at all.
    let none = ctl(&bus, &["health"]).expect(3);
    assert!(
        none.stdout
            .starts_with("SERSYNC UNKNOWN - no sersyncd instance is running on the bus at "),
        "{none:?}"
    );
    let absent = ctl(&bus, &["-i", "web", "health"]).expect(3);
    assert!(
        absent.stdout.starts_with("SERSYNC UNKNOWN - web: "),
        "{absent:?}"
    );
    let json = ctl(&bus, &["-i", "web", "health", "--json"])
        .expect(3)
        .json();
    assert_eq!(json["status"], "UNKNOWN", "{json}");
    assert_eq!(json["instance"], "web", "{json}");
    let mut command = Command::new(crate::harness::bus::SERSYNCCTL);
    command.args([
        "--bus-address",
        "unix:path=/nonexistent/sersync-it-bus",
        "health",
    ]);
    let no_bus = crate::control::run(command).expect(3);
    assert!(
        no_bus
            .stdout
            .starts_with("SERSYNC UNKNOWN - cannot connect to the bus at "),
        "{no_bus:?}"
    );
    // Bad arguments: UNKNOWN for health, the usual 64 for other commands.
    for args in [
        &["health", "--warn-lag", "soon"][..],
        &["health", "--crit-failed", "-1"],
        &["health", "--bogus"],
    ] {
        let bad = ctl(&bus, args).expect(3);
        assert_eq!(
            bad.stdout, "SERSYNC UNKNOWN - bad arguments (see sersyncctl health --help)\n",
            "{args:?}: {bad:?}"
        );
    }
    ctl(&bus, &["status", "--bogus"]).expect(64);
}
