//! `--log journald`: the native journal protocol, as journald would receive it.
//!
//! tracing-journald always sends to `/run/systemd/journal/socket`. Where no journald runs
//! (CI containers), the test binds a datagram socket there itself (creating the missing
//! directories, and removing everything it created afterwards) and parses the datagrams
//! (`NAME=value\n`, or `NAME\n` + 64-bit little-endian length + value + `\n`). Where a
//! journald runs, the daemon logs to it and the entries are read back with `journalctl -o
//! json SERSYNC_INSTANCE=...`.
//!
//! Asserted: every entry has MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=sersyncd and
//! SERSYNC_INSTANCE; a delivered batch is one entry at info (PRIORITY=6) with
//! SERSYNC_REMOTE and SERSYNC_BATCH_SIZE; each path is an entry at debug (PRIORITY=7)
//! with SERSYNC_PATH; a failed rsync run is a warning (PRIORITY=4) with RSYNC_EXIT and
//! SERSYNC_REMOTE; a burst of changes does not give one info entry per file.
//!
//! Needs root (for /run/systemd/journal); without it the test prints SKIP, or fails under
//! `CI=true`. Tests using the socket path are serialized by a mutex in this process and
//! by a flock(2) on /run between processes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::harness::{CONVERGE, Env, POLL, require_tool, write};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Serializes the tests of this process that use [`JOURNAL_SOCKET`].
static JOURNAL_LOCK: Mutex<()> = Mutex::new(());

/// One journal entry: its fields in the order received (a name may repeat).
#[derive(Debug, Clone, Default)]
struct Entry(Vec<(String, Vec<u8>)>);

impl Entry {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    fn priority(&self) -> Option<u8> {
        self.get("PRIORITY")?.parse().ok()
    }

    fn message(&self) -> String {
        self.get("MESSAGE").unwrap_or_default()
    }
}

/// Parses one datagram of the native journal protocol; `None` when malformed.
fn parse_entry(mut data: &[u8]) -> Option<Entry> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let newline = data.iter().position(|&b| b == b'\n')?;
        let line = &data[..newline];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            ));
            data = &data[newline + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[newline + 1..];
            let length = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            let length = usize::try_from(length).ok()?;
            let value = rest.get(8..8 + length)?;
            if rest.get(8 + length) != Some(&b'\n') {
                return None;
            }
            fields.push((name, value.to_vec()));
            data = &rest[8 + length + 1..];
        }
    }
    Some(Entry(fields))
}

#[test]
fn native_protocol_parser() {
    let mut data = b"PRIORITY=6\nMESSAGE\n".to_vec();
    data.extend_from_slice(&5u64.to_le_bytes());
    data.extend_from_slice(b"a\nb=c\nX=\n");
    let entry = parse_entry(&data).expect("well-formed");
    assert_eq!(entry.get("PRIORITY").as_deref(), Some("6"));
    assert_eq!(entry.get("MESSAGE").as_deref(), Some("a\nb=c"));
    assert_eq!(entry.get("X").as_deref(), Some(""));
    assert!(parse_entry(b"MESSAGE\n\x05\x00").is_none());
}

/// Where the daemon's journal entries are read from.
enum Sink {
    /// Our own socket at [`JOURNAL_SOCKET`].
    Bound(BoundSocket),
    /// A running journald; entries come back through journalctl.
    Journald,
}

/// The socket we bound at [`JOURNAL_SOCKET`], its reader thread, and what we created.
struct BoundSocket {
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    empty: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// Created by us, removed on drop in reverse order: directories, then the socket.
    created: Vec<PathBuf>,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        for path in self.created.iter().rev() {
            let result = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(err) = result {
                eprintln!(
                    "cannot remove {} (created by this test): {err}",
                    path.display()
                );
            }
        }
    }
}

/// Holds the locks; the sink drops first.
struct JournalTest {
    sink: Sink,
    _flock: Flock<File>,
    _guard: MutexGuard<'static, ()>,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(reason: &str) -> Option<JournalTest> {
    if ci() {
        panic!("{reason} (CI=true: not skipping)");
    }
    eprintln!("SKIP journald: {reason}");
    None
}

/// Takes the locks and sets up the sink; `None` after a SKIP line.
fn journal_test() -> Option<JournalTest> {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root to bind /run/systemd/journal/socket");
    }
    let guard = JOURNAL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let run = File::open("/run").expect("open /run");
    let flock = Flock::lock(run, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, errno)| panic!("flock /run: {errno}"));
    let socket_path = Path::new(JOURNAL_SOCKET);
    if socket_path.exists() || socket_path.symlink_metadata().is_ok() {
        // Someone listens (journald) or a stale socket is left over.
        let probe = UnixDatagram::unbound().expect("unbound datagram socket");
        return match probe.send_to(&[], socket_path) {
            Ok(_) if require_tool("journalctl") => Some(JournalTest {
                sink: Sink::Journald,
                _flock: flock,
                _guard: guard,
            }),
            Ok(_) => None,
            Err(err) => skip(&format!(
                "{JOURNAL_SOCKET} exists but nobody reads it ({err}): a stale socket? \
                 remove it if no journald runs"
            )),
        };
    }
    let mut created = Vec::new();
    for dir in ["/run/systemd", "/run/systemd/journal"] {
        match std::fs::create_dir(dir) {
            Ok(()) => created.push(PathBuf::from(dir)),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
            Err(err) => panic!("mkdir {dir}: {err}"),
        }
    }
    let socket =
        UnixDatagram::bind(socket_path).unwrap_or_else(|e| panic!("bind {JOURNAL_SOCKET}: {e}"));
    created.push(socket_path.to_owned());
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set socket timeout");
    let datagrams = Arc::new(Mutex::new(Vec::new()));
    let empty = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let datagrams = Arc::clone(&datagrams);
        let empty = Arc::clone(&empty);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    // tracing-journald's connection probe, or an entry too large for a
                    // datagram, passed as a memfd (SCM_RIGHTS), which recv() drops: ours
                    // are small, so none is expected; they are counted.
                    Ok(0) => *empty.lock().unwrap() += 1,
                    Ok(n) => datagrams.lock().unwrap().push(buf[..n].to_vec()),
                    Err(_) => {}
                }
            }
        })
    };
    Some(JournalTest {
        sink: Sink::Bound(BoundSocket {
            datagrams,
            empty,
            stop,
            reader: Some(reader),
            created,
        }),
        _flock: flock,
        _guard: guard,
    })
}

impl Sink {
    /// Every entry so far whose SERSYNC_INSTANCE is `instance`.
    fn entries(&self, instance: &str) -> Vec<Entry> {
        let all = match self {
            Sink::Bound(bound) => bound
                .datagrams
                .lock()
                .unwrap()
                .iter()
                .map(|d| {
                    parse_entry(d).unwrap_or_else(|| {
                        panic!(
                            "malformed native-protocol datagram: {:?}",
                            String::from_utf8_lossy(d)
                        )
                    })
                })
                .collect::<Vec<_>>(),
            Sink::Journald => journalctl(instance),
        };
        all.into_iter()
            .filter(|e| e.get("SERSYNC_INSTANCE").as_deref() == Some(instance))
            .collect()
    }
}

/// The entries of a running journald with `SERSYNC_INSTANCE=instance`.
fn journalctl(instance: &str) -> Vec<Entry> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "--output=json", "--all"])
        .arg(format!("SERSYNC_INSTANCE={instance}"))
        .output()
        .expect("run journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(line).ok())
        .map(|object| {
            Entry(
                object
                    .into_iter()
                    .filter(|(name, _)| !name.starts_with("__"))
                    .map(|(name, value)| {
                        let bytes = match value {
                            serde_json::Value::String(s) => s.into_bytes(),
                            // Binary values come as arrays of bytes.
                            serde_json::Value::Array(items) => items
                                .iter()
                                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                                .collect(),
                            other => other.to_string().into_bytes(),
                        };
                        (name, bytes)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Polls until `found` holds for the entries of `instance`; returns them.
fn wait_entries(
    sink: &Sink,
    instance: &str,
    what: &str,
    found: impl Fn(&[Entry]) -> bool,
) -> Vec<Entry> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let entries = sink.entries(instance);
        if found(&entries) {
            return entries;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        "[{}] {}",
                        e.get("PRIORITY").unwrap_or_default(),
                        e.message()
                    )
                })
                .collect();
            panic!("no journal entry {what} within {CONVERGE:?}; entries:\n{shown:#?}");
        }
        std::thread::sleep(POLL);
    }
}

fn describe(entry: &Entry) -> String {
    entry
        .0
        .iter()
        .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn journald_entries_carry_structured_fields() {
    let Some(test) = journal_test() else {
        return;
    };
    let Some(mut env) = Env::new(&["web"]) else {
        return;
    };
    let instance = format!("it-journald-{}", std::process::id());
    // <debug start="true"> (the builder's default): per-path entries at debug.
    let daemon = env.start(|b| {
        b.arg("--log")
            .arg("journald")
            .arg("--instance")
            .arg(&instance)
    });
    let sink = &test.sink;

    write(env.src(), "hello.txt", "hello\n");
    env.converged();
    let entries = wait_entries(sink, &instance, "for the delivered batch", |entries| {
        entries
            .iter()
            .any(|e| e.message().starts_with("synced") && e.get("SERSYNC_BATCH_SIZE").is_some())
    });

    let mut names = BTreeSet::new();
    for entry in &entries {
        names.extend(entry.names().map(str::to_owned));
        for field in [
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "SERSYNC_INSTANCE",
        ] {
            assert!(
                entry.get(field).is_some(),
                "entry without {field}: {}",
                describe(entry)
            );
        }
        assert_eq!(entry.get("SYSLOG_IDENTIFIER").as_deref(), Some("sersyncd"));
    }

    // Per path, at debug: SERSYNC_PATH names the changed file.
    let change = entries
        .iter()
        .find(|e| e.get("SERSYNC_PATH").as_deref() == Some("hello.txt"))
        .unwrap_or_else(|| panic!("no entry with SERSYNC_PATH=hello.txt among {entries:#?}"));
    println!("per-path entry: {}", describe(change));
    // Per batch, at info: the remote and the batch size.
    let synced = entries
        .iter()
        .find(|e| e.message().starts_with("synced") && e.get("SERSYNC_BATCH_SIZE").is_some())
        .expect("a synced entry");
    println!("batch entry: {}", describe(synced));
    assert!(
        synced
            .get("SERSYNC_REMOTE")
            .is_some_and(|r| r.contains("web")),
        "batch entry without SERSYNC_REMOTE naming the module: {}",
        describe(synced)
    );
    assert_eq!(synced.get("SERSYNC_BATCH_SIZE").as_deref(), Some("1"));

    // A burst: one info entry per batch, not per file.
    let before = sink.entries(&instance).len();
    for i in 0..60 {
        write(env.src(), &format!("burst/f{i:02}.txt"), &format!("{i}\n"));
    }
    env.converged();
    wait_entries(sink, &instance, "for the burst", |entries| {
        entries.iter().skip(before).any(|e| {
            e.message().starts_with("synced") && e.message().contains("f59")
                || e.get("SERSYNC_PATH").as_deref() == Some("burst/f59.txt")
        })
    });
    // Let the last batch's entry arrive.
    std::thread::sleep(Duration::from_millis(500));
    let burst_entries: Vec<Entry> = sink.entries(&instance).into_iter().skip(before).collect();
    let batches = burst_entries
        .iter()
        .filter(|e| e.message().starts_with("synced"))
        .count();
    // Whatever the mapping of levels to priorities: nothing of the burst is logged at
    // the batch entry's priority or above more than once per batch (plus a little).
    let batch_priority = synced.priority().expect("batch entry PRIORITY");
    let loud = burst_entries
        .iter()
        .filter(|e| e.priority().is_some_and(|p| p <= batch_priority))
        .count();
    println!(
        "burst of 60 files: {} entries, {batches} synced entries, {loud} at PRIORITY<={batch_priority}",
        burst_entries.len()
    );
    assert!(
        loud <= 20,
        "{loud} entries at PRIORITY<={batch_priority} (the batch level) for 60 changed files: \
         one per file is a log flood"
    );

    // A failing remote: a warning with the rsync exit status.
    env.rsyncd.stop();
    write(env.src(), "while-down.txt", "down\n");
    let entries = wait_entries(sink, &instance, "with RSYNC_EXIT", |entries| {
        entries.iter().any(|e| e.get("RSYNC_EXIT").is_some())
    });
    let failed = entries
        .iter()
        .find(|e| e.get("RSYNC_EXIT").is_some())
        .expect("an entry with RSYNC_EXIT");
    println!("failure entry: {}", describe(failed));
    drop(daemon);

    let all = sink.entries(&instance);
    for entry in &all {
        names.extend(entry.names().map(str::to_owned));
    }
    println!("journal field names seen: {names:?}");
    if let Sink::Bound(bound) = sink {
        println!(
            "{} empty datagrams (connection probes or memfd entries, not read)",
            bound.empty.lock().unwrap()
        );
    }

    // Priorities: info is journald's 6 (informational), debug 7, warn 4, error 3.
    // tracing-journald's default maps info to 5 (notice) and debug to 6, which makes every
    // delivered batch "significant" in `journalctl -p notice`.
    let mut wrong = Vec::new();
    if synced.priority() != Some(6) {
        wrong.push(format!(
            "batch (info) PRIORITY={:?}, want 6",
            synced.priority()
        ));
    }
    if change.priority() != Some(7) {
        wrong.push(format!(
            "per-path (debug) PRIORITY={:?}, want 7",
            change.priority()
        ));
    }
    if failed.priority() != Some(4) && failed.priority() != Some(3) {
        wrong.push(format!(
            "rsync failure PRIORITY={:?}, want 4 or 3",
            failed.priority()
        ));
    }
    assert!(
        failed.get("SERSYNC_REMOTE").is_some(),
        "failure entry without SERSYNC_REMOTE: {}",
        describe(failed)
    );
    assert!(wrong.is_empty(), "priorities: {wrong:?}");
}
