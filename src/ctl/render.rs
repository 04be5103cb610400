//! What `sersyncctl` prints: the human form and the `--json` form of every answer. Pure
//! functions of the data, so they are tested without a bus.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};
use zbus::zvariant::Value;

use crate::control::wire::{
    CheckpointInfo, FailureInfo, ProgressInfo as Progress, RemoteInfo, StatusInfo, system_time,
};

/// `2024-05-01T12:34:56Z` (UTC, whole seconds): what `date -u +%FT%TZ` prints and
/// `jq`'s `fromdateiso8601` reads; the same format as the failure script's comments.
use crate::timestamp::rfc3339_utc;

fn usec_time(usec: u64) -> String {
    rfc3339_utc(system_time(usec))
}

/// A path as a person reads it: UTF-8 shown as is, other bytes and control characters
/// escaped (`\xff`, `\n`), so one record stays on one line.
pub fn show_path(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A path for JSON: the text when it is UTF-8, else the lossy text (U+FFFD for bad bytes).
/// The exact bytes are in the `*_bytes` array next to it when they differ.
fn json_path(object: &mut serde_json::Map<String, Json>, key: &str, bytes: &[u8]) {
    object.insert(key.into(), Json::from(String::from_utf8_lossy(bytes)));
    if std::str::from_utf8(bytes).is_err() {
        object.insert(format!("{key}_bytes"), Json::from(bytes.to_vec()));
    }
}

/// `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The full sync running to a remote, if the status says one is.
fn full_sync_of(r: &RemoteInfo) -> Option<Progress> {
    Some(Progress {
        bytes_done: r.full_sync_bytes_done?,
        bytes_total: r.full_sync_bytes_total?,
        files_done: r.full_sync_files_done.unwrap_or(0),
        files_total: r.full_sync_files_total.unwrap_or(0),
        rate: r.full_sync_rate.unwrap_or(0),
        eta_usec: r.full_sync_eta_usec.unwrap_or(0),
    })
}

/// `45% (450.0 MiB of 1000.0 MiB, files 10/31, 4.0 MiB/s, 2 min 17 s left)`.
pub fn progress_text(p: &Progress) -> String {
    format!(
        "{}% ({} of {}, files {}/{}, {}/s, {} left)",
        p.percent(),
        human_bytes(p.bytes_done),
        human_bytes(p.bytes_total),
        p.files_done,
        p.files_total,
        human_bytes(p.rate),
        eta_text(p.eta_usec / 1_000_000)
    )
}

/// A progress bar of `width` cells and the same figures, for a terminal.
pub fn progress_bar(p: &Progress, width: usize) -> String {
    let filled = (p.percent() as usize * width) / 100;
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        progress_text(p)
    )
}

pub fn progress_json(p: &Progress) -> Json {
    json!({
        "percent": p.percent(),
        "bytes_done": p.bytes_done,
        "bytes_total": p.bytes_total,
        "files_done": p.files_done,
        "files_total": p.files_total,
        "bytes_per_second": p.rate,
        "eta_seconds": p.eta_usec / 1_000_000,
    })
}

fn eta_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// A duration in microseconds as people read it: `0 s`, `1.5 s`, `42 s`.
fn seconds_text(usec: u64) -> String {
    if usec == 0 {
        "0 s".to_owned()
    } else if usec < 10_000_000 {
        format!("{:.1} s", usec as f64 / 1e6)
    } else {
        format!("{} s", usec / 1_000_000)
    }
}

pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `sersyncctl status`.
pub fn status_text(s: &StatusInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sersync instance {} (sersyncd {}), config {}",
        s.instance, s.version, s.config_path
    );
    let _ = writeln!(
        out,
        "  state:    {}",
        if s.paused {
            "PAUSED (changes are collected, nothing is sent; `sersyncctl resume` delivers them)"
        } else {
            "running"
        }
    );
    let _ = writeln!(
        out,
        "  queue:    {} pending, {} in flight",
        plural(s.queue_depth, "path", "paths"),
        plural(s.in_flight, "batch", "batches")
    );
    let _ = writeln!(
        out,
        "  failed:   {}{}",
        plural(s.failed, "change", "changes"),
        if s.failed > 0 {
            " (`sersyncctl failures` lists them, `sersyncctl retry-failed` retries now)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  watches:  {}",
        plural(s.watches, "directory", "directories")
    );
    let c = &s.counters;
    let _ = writeln!(
        out,
        "  counters: {} events, {} batches, {} files, {}, {} errors",
        c.events,
        c.batches,
        c.files,
        human_bytes(c.bytes),
        c.errors
    );
    if s.remotes.is_empty() {
        let _ = writeln!(out, "  remotes:  none");
    } else {
        let _ = writeln!(out, "  remotes:");
        let width = s
            .remotes
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
        for r in &s.remotes {
            let last_ok = r.last_ok_usec.map_or_else(|| "never".to_owned(), usec_time);
            let _ = write!(
                out,
                "    {:width$}  {:8} {} pending, lag {}, last ok {last_ok}",
                r.name,
                r.state,
                r.pending,
                r.lag_usec
                    .map_or_else(|| "unknown".to_owned(), seconds_text),
            );
            if let (Some(bytes), Some(ok), Some(partial), Some(failed)) =
                (r.bytes_sent, r.runs_ok, r.runs_partial, r.runs_failed)
            {
                let _ = write!(
                    out,
                    ", {} sent in {}",
                    human_bytes(bytes),
                    plural(ok + partial + failed, "run", "runs")
                );
                if partial + failed > 0 {
                    let _ = write!(out, " ({partial} partial, {failed} failed)");
                }
            }
            if let Some(err) = &r.last_error {
                let _ = write!(out, ", last error: {err}");
            }
            out.push('\n');
            if let Some(progress) = full_sync_of(r) {
                let _ = writeln!(
                    out,
                    "    {:width$}  full sync {}",
                    "",
                    progress_text(&progress)
                );
            }
        }
    }
    out
}

/// `sersyncctl status --json`.
pub fn status_json(s: &StatusInfo) -> Json {
    let remotes: Vec<Json> = s
        .remotes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "state": r.state,
                "last_ok": r.last_ok_usec.map(usec_time),
                "last_error": r.last_error,
                "pending": r.pending,
                "lag_seconds": r.lag_usec.map(|usec| usec as f64 / 1e6),
                "bytes_sent": r.bytes_sent,
                "runs": {
                    "ok": r.runs_ok,
                    "partial": r.runs_partial,
                    "failed": r.runs_failed,
                },
                "full_sync": full_sync_of(r).map(|p| progress_json(&p)),
            })
        })
        .collect();
    json!({
        "instance": s.instance,
        "version": s.version,
        "config_path": s.config_path,
        "paused": s.paused,
        "queue_depth": s.queue_depth,
        "in_flight": s.in_flight,
        "failed": s.failed,
        "watches": s.watches,
        "remotes": remotes,
        "counters": {
            "events": s.counters.events,
            "batches": s.counters.batches,
            "files": s.counters.files,
            "bytes": s.counters.bytes,
            "errors": s.counters.errors,
        },
    })
}

/// `sersyncctl checkpoint`: one line.
pub fn checkpoint_text(id: u64, state: &CheckpointInfo, waited: Duration) -> String {
    let waited = format!("{:.1} s", waited.as_secs_f64());
    match state.state.as_str() {
        "reached" => format!("checkpoint {id} reached: every change is on every remote ({waited})"),
        "behind" => format!(
            "checkpoint {id} NOT reached after {waited}: behind: {}",
            state.behind.join(", ")
        ),
        _ => {
            let roots: Vec<String> = state
                .draining
                .iter()
                .map(|root| String::from_utf8_lossy(root).into_owned())
                .collect();
            if roots.is_empty() {
                format!(
                    "checkpoint {id} NOT reached after {waited}: the watchers have not reported yet"
                )
            } else {
                format!(
                    "checkpoint {id} NOT reached after {waited}: the watchers of {} have not \
                     reported what the kernel queued (blocked on a hung filesystem?)",
                    roots.join(", ")
                )
            }
        }
    }
}

/// `sersyncctl checkpoint --json`.
pub fn checkpoint_json(id: u64, state: &CheckpointInfo, waited: Duration) -> Json {
    let draining: Vec<String> = state
        .draining
        .iter()
        .map(|root| String::from_utf8_lossy(root).into_owned())
        .collect();
    json!({
        "checkpoint_id": id,
        "reached": state.state == "reached",
        "state": state.state,
        "behind": state.behind,
        "draining": draining,
        "waited_seconds": waited.as_secs_f64(),
    })
}

/// `sersyncctl failures`.
pub fn failures_text(failures: &[FailureInfo]) -> String {
    if failures.is_empty() {
        return "no failed changes\n".to_owned();
    }
    let mut out = String::new();
    for f in failures {
        let mut root = show_path(&f.root);
        if !root.ends_with('/') {
            root.push('/');
        }
        let _ = writeln!(
            out,
            "{} {}{}: rsync exit {}: {} (failing since {})",
            f.remote,
            root,
            show_path(&f.path),
            f.rsync_exit,
            f.message,
            usec_time(f.since_usec)
        );
    }
    out
}

/// `sersyncctl failures --json`.
pub fn failures_json(failures: &[FailureInfo]) -> Json {
    Json::Array(
        failures
            .iter()
            .map(|f| {
                let mut object = serde_json::Map::new();
                object.insert("remote".into(), Json::from(f.remote.clone()));
                json_path(&mut object, "root", &f.root);
                json_path(&mut object, "path", &f.path);
                object.insert("rsync_exit".into(), Json::from(f.rsync_exit));
                object.insert("message".into(), Json::from(f.message.clone()));
                object.insert("since".into(), Json::from(usec_time(f.since_usec)));
                Json::Object(object)
            })
            .collect(),
    )
}

/// One signal seen by `sersyncctl monitor`.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    SyncFailed {
        remote: String,
        path: Vec<u8>,
        rsync_exit: i32,
        message: String,
    },
    FullSyncFinished {
        job_id: u64,
        root: Vec<u8>,
        success: bool,
    },
    StateChanged {
        remote: String,
        state: String,
    },
    FullSyncProgress {
        remote: String,
        progress: Progress,
    },
    PropertiesChanged(Vec<(String, Json)>),
}

/// One line of `sersyncctl monitor`.
pub fn seen_text(at: SystemTime, seen: &Seen) -> String {
    let time = rfc3339_utc(at);
    match seen {
        Seen::SyncFailed {
            remote,
            path,
            rsync_exit,
            message,
        } if path.is_empty() => {
            format!("{time} sync-failed {remote}: rsync exit {rsync_exit}: {message}")
        }
        Seen::SyncFailed {
            remote,
            path,
            rsync_exit,
            message,
        } => format!(
            "{time} sync-failed {remote} {}: rsync exit {rsync_exit}: {message}",
            show_path(path)
        ),
        Seen::FullSyncFinished {
            job_id,
            root,
            success,
        } => format!(
            "{time} full-sync-finished job {job_id} {}: {}",
            if root.is_empty() {
                "(all roots)".to_owned()
            } else {
                show_path(root)
            },
            if *success { "success" } else { "FAILED" }
        ),
        Seen::StateChanged { remote, state } => {
            format!("{time} state-changed {remote}: {state}")
        }
        Seen::FullSyncProgress { remote, progress } => {
            format!(
                "{time} full-sync-progress {remote}: {}",
                progress_text(progress)
            )
        }
        Seen::PropertiesChanged(changed) => {
            let mut line = format!("{time} properties");
            for (name, value) in changed {
                let _ = write!(line, " {name}={value}");
            }
            line
        }
    }
}

/// One line of `sersyncctl monitor --json` (JSON Lines).
pub fn seen_json(at: SystemTime, seen: &Seen) -> Json {
    let mut object = serde_json::Map::new();
    object.insert("time".into(), Json::from(rfc3339_utc(at)));
    match seen {
        Seen::SyncFailed {
            remote,
            path,
            rsync_exit,
            message,
        } => {
            object.insert("signal".into(), Json::from("SyncFailed"));
            object.insert("remote".into(), Json::from(remote.clone()));
            json_path(&mut object, "path", path);
            object.insert("rsync_exit".into(), Json::from(*rsync_exit));
            object.insert("message".into(), Json::from(message.clone()));
        }
        Seen::FullSyncFinished {
            job_id,
            root,
            success,
        } => {
            object.insert("signal".into(), Json::from("FullSyncFinished"));
            object.insert("job_id".into(), Json::from(*job_id));
            json_path(&mut object, "root", root);
            object.insert("success".into(), Json::from(*success));
        }
        Seen::StateChanged { remote, state } => {
            object.insert("signal".into(), Json::from("StateChanged"));
            object.insert("remote".into(), Json::from(remote.clone()));
            object.insert("state".into(), Json::from(state.clone()));
        }
        Seen::FullSyncProgress { remote, progress } => {
            object.insert("signal".into(), Json::from("FullSyncProgress"));
            object.insert("remote".into(), Json::from(remote.clone()));
            object.insert("progress".into(), progress_json(progress));
        }
        Seen::PropertiesChanged(changed) => {
            object.insert("signal".into(), Json::from("PropertiesChanged"));
            let changed: serde_json::Map<String, Json> = changed.iter().cloned().collect();
            object.insert("changed".into(), Json::Object(changed));
        }
    }
    Json::Object(object)
}

/// A D-Bus value as JSON: numbers, booleans and strings as themselves, byte arrays as
/// (lossy) strings, arrays as arrays, dictionaries as objects.
pub fn value_json(value: &Value<'_>) -> Json {
    match value {
        Value::U8(v) => Json::from(*v),
        Value::Bool(v) => Json::from(*v),
        Value::I16(v) => Json::from(*v),
        Value::U16(v) => Json::from(*v),
        Value::I32(v) => Json::from(*v),
        Value::U32(v) => Json::from(*v),
        Value::I64(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        Value::F64(v) => Json::from(*v),
        Value::Str(v) => Json::from(v.as_str()),
        Value::Signature(v) => Json::from(v.to_string()),
        Value::ObjectPath(v) => Json::from(v.as_str()),
        Value::Value(v) => value_json(v),
        Value::Array(array) => {
            if array.element_signature() == &zbus::zvariant::Signature::U8 {
                let bytes: Vec<u8> = array
                    .iter()
                    .filter_map(|v| match v {
                        Value::U8(b) => Some(*b),
                        _ => None,
                    })
                    .collect();
                Json::from(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                Json::Array(array.iter().map(value_json).collect())
            }
        }
        Value::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| {
                    let key = match value_json(k) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, value_json(v))
                })
                .collect(),
        ),
        Value::Structure(s) => Json::Array(s.fields().iter().map(value_json).collect()),
        #[allow(unreachable_patterns)]
        other => Json::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::{CountersInfo, RemoteInfo};
    use std::time::UNIX_EPOCH;

    #[test]
    fn paths_show_on_one_line() {
        assert_eq!(show_path(b"a/b c.txt"), "a/b c.txt");
        assert_eq!(show_path("été".as_bytes()), "été");
        assert_eq!(show_path(b"a\nb\xff\\"), "a\\nb\\xff\\\\");
    }

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    fn sample() -> StatusInfo {
        StatusInfo {
            version: "0.1.0".into(),
            instance: "web".into(),
            config_path: "/etc/sersync/web.xml".into(),
            paused: true,
            queue_depth: 3,
            in_flight: 1,
            failed: 0,
            watches: 12,
            remotes: vec![RemoteInfo {
                name: "/srv/www -> 10.0.0.2::www".into(),
                state: "backoff".into(),
                last_ok_usec: Some(1_700_000_000_000_000),
                last_error: Some("rsync exit 10".into()),
                pending: 3,
                lag_usec: Some(20_500_000),
                bytes_sent: Some(1536),
                runs_ok: Some(2),
                runs_partial: Some(0),
                runs_failed: Some(1),
                root: Some(b"/srv/www".to_vec()),
                remote: Some("10.0.0.2::www".into()),
                full_sync_bytes_done: Some(450 << 20),
                full_sync_bytes_total: Some(1000 << 20),
                full_sync_files_done: Some(10),
                full_sync_files_total: Some(31),
                full_sync_rate: Some(4 << 20),
                full_sync_eta_usec: Some(137_000_000),
            }],
            counters: CountersInfo {
                events: 5,
                batches: 2,
                files: 4,
                bytes: 2048,
                errors: 1,
            },
            ..StatusInfo::default()
        }
    }

    #[test]
    fn status_json_has_the_documented_keys() {
        let json = status_json(&sample());
        for key in [
            "instance",
            "version",
            "paused",
            "queue_depth",
            "in_flight",
            "failed",
            "watches",
            "remotes",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        let remote = &json["remotes"][0];
        assert_eq!(remote["name"], "/srv/www -> 10.0.0.2::www");
        assert_eq!(remote["state"], "backoff");
        assert_eq!(remote["last_ok"], "2023-11-14T22:13:20Z");
        assert_eq!(remote["last_error"], "rsync exit 10");
        assert_eq!(remote["lag_seconds"], 20.5);
        assert_eq!(remote["bytes_sent"], 1536);
        assert_eq!(remote["runs"], json!({"ok": 2, "partial": 0, "failed": 1}));
        assert_eq!(
            remote["full_sync"],
            json!({"percent": 45, "bytes_done": 450u64 << 20, "bytes_total": 1000u64 << 20,
                   "files_done": 10, "files_total": 31, "bytes_per_second": 4 << 20,
                   "eta_seconds": 137})
        );
        let mut never = sample();
        never.remotes[0].last_ok_usec = None;
        never.remotes[0].last_error = None;
        let json = status_json(&never);
        assert!(json["remotes"][0]["last_ok"].is_null());
        assert!(json["remotes"][0]["last_error"].is_null());
    }

    #[test]
    fn status_text_says_paused_and_lists_remotes() {
        let text = status_text(&sample());
        assert!(text.contains("PAUSED"), "{text}");
        assert!(
            text.contains("3 paths pending, 1 batch in flight"),
            "{text}"
        );
        assert!(
            text.contains(
                "/srv/www -> 10.0.0.2::www  backoff  3 pending, lag 20 s, last ok \
                 2023-11-14T22:13:20Z, 1.5 KiB sent in 3 runs (0 partial, 1 failed), last \
                 error: rsync exit 10"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "full sync 45% (450.0 MiB of 1000.0 MiB, files 10/31, 4.0 MiB/s, 2 min 17 s left)"
            ),
            "{text}"
        );
        let bar = progress_bar(&full_sync_of(&sample().remotes[0]).unwrap(), 20);
        assert!(bar.starts_with("[#########-----------] 45% "), "{bar}");
    }

    #[test]
    fn failures_keep_exact_bytes_in_json() {
        let failures = vec![FailureInfo {
            remote: "10.0.0.2::www".into(),
            root: b"/srv/www".to_vec(),
            path: b"bad\xffname".to_vec(),
            rsync_exit: 23,
            message: "some files could not be transferred".into(),
            since_usec: 0,
        }];
        let json = failures_json(&failures);
        assert_eq!(json[0]["root"], "/srv/www");
        assert!(json[0].get("root_bytes").is_none());
        assert_eq!(json[0]["path"], "bad\u{fffd}name");
        assert_eq!(
            json[0]["path_bytes"],
            json!([98, 97, 100, 255, 110, 97, 109, 101])
        );
        let text = failures_text(&failures);
        assert_eq!(
            text,
            "10.0.0.2::www /srv/www/bad\\xffname: rsync exit 23: some files could not be \
             transferred (failing since 1970-01-01T00:00:00Z)\n"
        );
        assert_eq!(failures_text(&[]), "no failed changes\n");
    }

    #[test]
    fn monitor_lines() {
        let at = UNIX_EPOCH;
        let seen = Seen::FullSyncFinished {
            job_id: 7,
            root: Vec::new(),
            success: true,
        };
        assert_eq!(
            seen_text(at, &seen),
            "1970-01-01T00:00:00Z full-sync-finished job 7 (all roots): success"
        );
        assert_eq!(
            seen_json(at, &seen),
            json!({"time": "1970-01-01T00:00:00Z", "signal": "FullSyncFinished", "job_id": 7,
                   "root": "", "success": true})
        );
        let props = Seen::PropertiesChanged(vec![("Paused".into(), json!(true))]);
        assert_eq!(
            seen_text(at, &props),
            "1970-01-01T00:00:00Z properties Paused=true"
        );
    }

    #[test]
    fn values_become_json() {
        let remote = RemoteInfo {
            name: "n".into(),
            state: "ok".into(),
            last_ok_usec: None,
            last_error: None,
            pending: 2,
            ..RemoteInfo::default()
        };
        let json = value_json(&Value::from(vec![remote]));
        assert_eq!(json, json!([{"Name": "n", "State": "ok", "Pending": 2}]));
        assert_eq!(value_json(&Value::from(true)), json!(true));
        assert_eq!(value_json(&Value::from(b"ab".to_vec())), json!("ab"));
    }
}
