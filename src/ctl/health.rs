//! `sersyncctl health`: the daemon's status judged against thresholds, as a Nagios plugin.
//!
//! Why a module of its own: monitoring systems (Nagios, Icinga, check_mk, Consul) run a
//! check command and read its exit status and first line; they need a verdict, not a
//! status to interpret. [`judge`] is that verdict, a pure function of one `GetStatus`
//! answer and the thresholds, tested by tables; [`line`] and [`json`] word it.
//!
//! The rules (documented in README.md, "Health check"):
//!
//! | what | WARNING | CRITICAL |
//! |---|---|---|
//! | a remote's lag (seconds) | above `--warn-lag` (60) | above `--crit-lag` (300) |
//! | changes failing after retries | above `--warn-failed` (0) | above `--crit-failed` (off) |
//! | a remote's state | `backoff`, `guarded`, stalled | `failing` |
//! | the daemon | paused | a watcher blocked (its root's changes are not seen) |
//!
//! `backoff` (retrying after a failure) is a warning because it ends by itself when the
//! remote comes back; how long it lasts shows in the lag and the failed count. `failing`
//! (a configuration error, on either side, that retrying does not fix) and a blocked
//! watcher stop replication until someone acts. A guarded remote still receives
//! everything but deletions. UNKNOWN (3) is for what cannot be judged: the daemon is not
//! reachable, or the command line is wrong.

use std::fmt::Write as _;

use serde_json::{Value as Json, json};

use super::render::plural;
use crate::control::wire::StatusInfo;
use crate::exit;
use crate::metrics::state_word;

/// A Nagios plugin status, in order of severity (UNKNOWN is reported as the worst, as
/// Nagios treats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Level {
    /// The exit status of the check.
    pub fn code(self) -> i32 {
        match self {
            Level::Ok => exit::HEALTH_OK,
            Level::Warning => exit::HEALTH_WARNING,
            Level::Critical => exit::HEALTH_CRITICAL,
            Level::Unknown => exit::HEALTH_UNKNOWN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// When a value is a warning or critical: above the threshold (the Nagios plugin
/// guidelines' plain `N`, "outside 0..N"). `None`: never.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub warn_lag: Option<f64>,
    pub crit_lag: Option<f64>,
    pub warn_failed: Option<u64>,
    pub crit_failed: Option<u64>,
}

/// A minute of lag warns, five minutes are critical; any failed change warns.
pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    warn_lag: Some(60.0),
    crit_lag: Some(300.0),
    warn_failed: Some(0),
    crit_failed: None,
};

impl Default for Thresholds {
    fn default() -> Self {
        DEFAULT_THRESHOLDS
    }
}

/// One reason for a verdict worse than OK.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

/// One performance data item: `'label'=value[uom];warn;crit;min;max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Perf {
    pub label: String,
    pub value: f64,
    /// `s` for seconds, empty for a count.
    pub uom: &'static str,
    pub warn: Option<f64>,
    pub crit: Option<f64>,
    pub min: Option<f64>,
}

/// What [`judge`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub level: Level,
    /// Worst first.
    pub findings: Vec<Finding>,
    /// What an OK check says: the remotes, failures, queue and the largest lag.
    pub summary: String,
    pub perfdata: Vec<Perf>,
}

/// Seconds with at most millisecond precision, as people and perfdata read them: `0`,
/// `20.5`, `300`.
fn seconds(usec: u64) -> f64 {
    (usec / 1000) as f64 / 1000.0
}

/// Judges `status` against `thresholds`.
pub fn judge(status: &StatusInfo, thresholds: &Thresholds) -> Verdict {
    let mut findings = Vec::new();
    let mut finding = |level: Level, text: String| findings.push(Finding { level, text });
    if status.paused {
        finding(
            Level::Warning,
            "paused (changes are collected, nothing is sent)".to_owned(),
        );
    }
    for (root, secs) in status.blocked_watchers.iter().flatten() {
        finding(
            Level::Critical,
            format!(
                "watcher of {} blocked for {secs} s (its changes are not seen)",
                String::from_utf8_lossy(root)
            ),
        );
    }
    let failed = status.failed;
    if let Some(crit) = thresholds.crit_failed.filter(|crit| failed > *crit) {
        finding(
            Level::Critical,
            format!(
                "{} (critical above {crit})",
                plural(failed, "failed change", "failed changes")
            ),
        );
    } else if let Some(warn) = thresholds.warn_failed.filter(|warn| failed > *warn) {
        finding(
            Level::Warning,
            format!(
                "{} (warning above {warn})",
                plural(failed, "failed change", "failed changes")
            ),
        );
    }
    let mut perfdata = vec![
        Perf {
            label: "failed".to_owned(),
            value: failed as f64,
            uom: "",
            warn: thresholds.warn_failed.map(|w| w as f64),
            crit: thresholds.crit_failed.map(|c| c as f64),
            min: Some(0.0),
        },
        Perf {
            label: "queued".to_owned(),
            value: status.queue_depth as f64,
            uom: "",
            warn: None,
            crit: None,
            min: Some(0.0),
        },
    ];
    let mut max_lag: Option<f64> = None;
    for remote in &status.remotes {
        let name = &remote.name;
        let state = state_word(&remote.state);
        match state {
            "failing" => finding(Level::Critical, format!("{name} failing")),
            "backoff" | "guarded" => finding(Level::Warning, format!("{name} {state}")),
            _ => {}
        }
        if remote.state.contains("(stalled") {
            finding(
                Level::Warning,
                format!("{name} stalled (rsync moves no data)"),
            );
        }
        if let Some(usec) = remote.lag_usec {
            let lag = seconds(usec);
            max_lag = Some(max_lag.map_or(lag, |max| max.max(lag)));
            if let Some(crit) = thresholds.crit_lag.filter(|crit| lag > *crit) {
                finding(
                    Level::Critical,
                    format!("{name} lag {lag} s (critical above {crit} s)"),
                );
            } else if let Some(warn) = thresholds.warn_lag.filter(|warn| lag > *warn) {
                finding(
                    Level::Warning,
                    format!("{name} lag {lag} s (warning above {warn} s)"),
                );
            }
            perfdata.push(Perf {
                label: format!("lag {name}"),
                value: lag,
                uom: "s",
                warn: thresholds.warn_lag,
                crit: thresholds.crit_lag,
                min: Some(0.0),
            });
        }
        perfdata.push(Perf {
            label: format!("pending {name}"),
            value: remote.pending as f64,
            uom: "",
            warn: None,
            crit: None,
            min: Some(0.0),
        });
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    let level = findings.first().map_or(Level::Ok, |f| f.level);
    let ok = status
        .remotes
        .iter()
        .filter(|r| r.state.trim() == "ok")
        .count();
    let mut summary = format!(
        "{} of {} ok, {}, {} queued",
        ok,
        plural(status.remotes.len() as u64, "remote", "remotes"),
        plural(failed, "failed change", "failed changes"),
        status.queue_depth
    );
    if let Some(lag) = max_lag {
        let _ = write!(summary, ", max lag {lag} s");
    }
    Verdict {
        level,
        findings,
        summary,
        perfdata,
    }
}

/// A perfdata label as the plugin guidelines allow it: quoted, without `'` and `=` (and
/// without `|`, which starts the perfdata of a second line).
fn perf_label(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if matches!(c, '\'' | '=' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("'{clean}'")
}

fn perf_number(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The perfdata of a verdict, space-separated.
pub fn perfdata_text(perfdata: &[Perf]) -> String {
    perfdata
        .iter()
        .map(|p| {
            format!(
                "{}={}{};{};{};{}",
                perf_label(&p.label),
                p.value,
                p.uom,
                perf_number(p.warn),
                perf_number(p.crit),
                perf_number(p.min),
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plugin's one line: `SERSYNC OK - web: … | perfdata`. Findings, worst first,
/// replace the summary when there are any.
pub fn line(instance: &str, verdict: &Verdict) -> String {
    let what = if verdict.findings.is_empty() {
        verdict.summary.clone()
    } else {
        verdict
            .findings
            .iter()
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    // A `|` would start the perfdata early; a newline would end the line.
    let what = what.replace('|', "/").replace('\n', " ");
    format!(
        "SERSYNC {} - {instance}: {what} | {}",
        verdict.level.as_str(),
        perfdata_text(&verdict.perfdata)
    )
}

/// The line of a check that could not judge: `SERSYNC UNKNOWN - why`.
pub fn unknown_line(why: &str) -> String {
    format!(
        "SERSYNC UNKNOWN - {}",
        why.replace('|', "/").replace('\n', " ")
    )
}

fn thresholds_json(t: &Thresholds) -> Json {
    json!({
        "warn_lag_seconds": t.warn_lag,
        "crit_lag_seconds": t.crit_lag,
        "warn_failed": t.warn_failed,
        "crit_failed": t.crit_failed,
    })
}

/// `sersyncctl health --json`.
pub fn json(instance: &str, verdict: &Verdict, thresholds: &Thresholds) -> Json {
    json!({
        "status": verdict.level.as_str(),
        "code": verdict.level.code(),
        "instance": instance,
        "summary": verdict.summary,
        "findings": verdict.findings.iter().map(|f| json!({
            "status": f.level.as_str(),
            "message": f.text,
        })).collect::<Vec<_>>(),
        "thresholds": thresholds_json(thresholds),
        "perfdata": verdict.perfdata.iter().map(|p| json!({
            "label": p.label,
            "value": p.value,
            "unit": p.uom,
            "warn": p.warn,
            "crit": p.crit,
            "min": p.min,
        })).collect::<Vec<_>>(),
    })
}

/// `sersyncctl health --json` when the check could not judge.
pub fn unknown_json(instance: Option<&str>, why: &str, thresholds: &Thresholds) -> Json {
    json!({
        "status": Level::Unknown.as_str(),
        "code": Level::Unknown.code(),
        "instance": instance,
        "summary": why,
        "findings": [{"status": Level::Unknown.as_str(), "message": why}],
        "thresholds": thresholds_json(thresholds),
        "perfdata": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::RemoteInfo;

    fn remote(name: &str, state: &str, lag_usec: u64) -> RemoteInfo {
        RemoteInfo {
            name: name.into(),
            state: state.into(),
            pending: 2,
            lag_usec: Some(lag_usec),
            ..RemoteInfo::default()
        }
    }

    fn healthy() -> StatusInfo {
        StatusInfo {
            instance: "web".into(),
            remotes: vec![
                remote("/srv -> a::m", "ok", 0),
                remote("/srv -> b::m", "ok", 1_500),
            ],
            queue_depth: 4,
            ..StatusInfo::default()
        }
    }

    #[test]
    fn the_verdict_is_the_worst_finding() {
        let t = DEFAULT_THRESHOLDS;
        let with = |change: &dyn Fn(&mut StatusInfo)| {
            let mut status = healthy();
            change(&mut status);
            status
        };
        let lag = |usec| move |s: &mut StatusInfo| s.remotes[1].lag_usec = Some(usec);
        // (status, thresholds, level, the findings' texts)
        let table: Vec<(StatusInfo, Thresholds, Level, Vec<&str>)> = vec![
            (healthy(), t, Level::Ok, vec![]),
            // Lag: above the threshold, not at it.
            (with(&lag(60_000_000)), t, Level::Ok, vec![]),
            (
                with(&lag(60_001_000)),
                t,
                Level::Warning,
                vec!["/srv -> b::m lag 60.001 s (warning above 60 s)"],
            ),
            (
                with(&lag(300_000_000)),
                t,
                Level::Warning,
                vec!["/srv -> b::m lag 300 s (warning above 60 s)"],
            ),
            (
                with(&lag(300_500_000)),
                t,
                Level::Critical,
                vec!["/srv -> b::m lag 300.5 s (critical above 300 s)"],
            ),
            (
                with(&lag(2_000_000)),
                Thresholds {
                    warn_lag: Some(0.5),
                    crit_lag: Some(1.5),
                    ..t
                },
                Level::Critical,
                vec!["/srv -> b::m lag 2 s (critical above 1.5 s)"],
            ),
            (
                with(&lag(2_000_000)),
                Thresholds {
                    warn_lag: None,
                    crit_lag: None,
                    ..t
                },
                Level::Ok,
                vec![],
            ),
            // A daemon that does not report lag is not judged by it.
            (
                with(&|s| s.remotes[1].lag_usec = None),
                Thresholds {
                    crit_lag: Some(0.0),
                    ..t
                },
                Level::Ok,
                vec![],
            ),
            // Failed changes.
            (
                with(&|s| s.failed = 1),
                t,
                Level::Warning,
                vec!["1 failed change (warning above 0)"],
            ),
            (
                with(&|s| s.failed = 3),
                Thresholds {
                    crit_failed: Some(2),
                    ..t
                },
                Level::Critical,
                vec!["3 failed changes (critical above 2)"],
            ),
            (
                with(&|s| s.failed = 2),
                Thresholds {
                    warn_failed: Some(5),
                    crit_failed: Some(10),
                    ..t
                },
                Level::Ok,
                vec![],
            ),
            // States.
            (
                with(&|s| s.remotes[0].state = "backoff".into()),
                t,
                Level::Warning,
                vec!["/srv -> a::m backoff"],
            ),
            (
                with(&|s| s.remotes[0].state = "guarded (full sync running)".into()),
                t,
                Level::Warning,
                vec!["/srv -> a::m guarded"],
            ),
            (
                with(&|s| {
                    s.remotes[0].state = "ok (stalled: rsync moved no data; running 31 s)".into()
                }),
                t,
                Level::Warning,
                vec!["/srv -> a::m stalled (rsync moves no data)"],
            ),
            (
                with(&|s| s.remotes[1].state = "failing".into()),
                t,
                Level::Critical,
                vec!["/srv -> b::m failing"],
            ),
            (
                with(&|s| s.paused = true),
                t,
                Level::Warning,
                vec!["paused (changes are collected, nothing is sent)"],
            ),
            (
                with(&|s| s.blocked_watchers = Some(vec![(b"/mnt/nfs".to_vec(), 42)])),
                t,
                Level::Critical,
                vec!["watcher of /mnt/nfs blocked for 42 s (its changes are not seen)"],
            ),
            // Several: the worst first, every one said.
            (
                with(&|s| {
                    s.paused = true;
                    s.failed = 7;
                    s.remotes[0].state = "failing".into();
                }),
                Thresholds {
                    crit_failed: Some(5),
                    ..t
                },
                Level::Critical,
                vec![
                    "7 failed changes (critical above 5)",
                    "/srv -> a::m failing",
                    "paused (changes are collected, nothing is sent)",
                ],
            ),
        ];
        for (status, thresholds, level, texts) in table {
            let verdict = judge(&status, &thresholds);
            let found: Vec<&str> = verdict.findings.iter().map(|f| f.text.as_str()).collect();
            assert_eq!((verdict.level, found), (level, texts), "{status:?}");
        }
    }

    #[test]
    fn the_line_is_a_nagios_plugin_line() {
        let verdict = judge(&healthy(), &DEFAULT_THRESHOLDS);
        assert_eq!(
            line("web", &verdict),
            "SERSYNC OK - web: 2 of 2 remotes ok, 0 failed changes, 4 queued, max lag 0.001 s \
             | 'failed'=0;0;;0 'queued'=4;;;0 'lag /srv -> a::m'=0s;60;300;0 \
             'pending /srv -> a::m'=2;;;0 'lag /srv -> b::m'=0.001s;60;300;0 \
             'pending /srv -> b::m'=2;;;0"
        );
        let mut status = healthy();
        status.failed = 2;
        status.remotes.truncate(1);
        status.remotes[0].name = "/a'b=c|d -> h::m".into();
        status.remotes[0].state = "backoff".into();
        let thresholds = Thresholds {
            crit_failed: Some(1),
            ..DEFAULT_THRESHOLDS
        };
        let verdict = judge(&status, &thresholds);
        assert_eq!(
            line("web", &verdict),
            "SERSYNC CRITICAL - web: 2 failed changes (critical above 1); /a'b=c/d -> h::m \
             backoff | 'failed'=2;0;1;0 'queued'=4;;;0 'lag /a_b_c_d -> h::m'=0s;60;300;0 \
             'pending /a_b_c_d -> h::m'=2;;;0"
        );
        assert_eq!(
            unknown_line("instance \"web\" is not running | x\ny"),
            "SERSYNC UNKNOWN - instance \"web\" is not running / x y"
        );
    }

    #[test]
    fn json_carries_the_verdict_and_its_reasons() {
        let mut status = healthy();
        status.failed = 1;
        let verdict = judge(&status, &DEFAULT_THRESHOLDS);
        let json = json("web", &verdict, &DEFAULT_THRESHOLDS);
        assert_eq!(json["status"], "WARNING");
        assert_eq!(json["code"], 1);
        assert_eq!(json["instance"], "web");
        assert_eq!(
            json["findings"],
            json!([{"status": "WARNING", "message": "1 failed change (warning above 0)"}])
        );
        assert_eq!(
            json["thresholds"],
            json!({"warn_lag_seconds": 60.0, "crit_lag_seconds": 300.0, "warn_failed": 0,
                   "crit_failed": null})
        );
        assert_eq!(
            json["perfdata"][0],
            json!({"label": "failed", "value": 1.0, "unit": "", "warn": 0.0, "crit": null,
                   "min": 0.0})
        );
        assert_eq!(json["perfdata"][2]["unit"], "s");
        let unknown = unknown_json(None, "no daemon", &DEFAULT_THRESHOLDS);
        assert_eq!(unknown["status"], "UNKNOWN");
        assert_eq!(unknown["code"], 3);
        assert!(unknown["instance"].is_null());
        assert_eq!(unknown["perfdata"], json!([]));
    }
}
