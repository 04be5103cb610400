//! The daemon's status as Prometheus metrics: one exposition, in the Prometheus text format
//! (0.0.4) or OpenMetrics, built with the Prometheus project's own client library
//! (`prometheus-client`).
//!
//! Why a module of its own: two ways out must say the same thing. `sersyncd
//! --metrics-listen` answers scrapes over HTTP ([`http`]), and `sersyncctl metrics` prints
//! the text for node_exporter's textfile collector from `GetStatus`. Both render a
//! [`StatusInfo`] (the snapshot as it crosses the bus, as everyone may see it: nothing here
//! names a file) with [`render`], so the metric names, help texts and labels exist once.
//!
//! Nothing here counts anything: the daemon's loop keeps the counters and histograms in
//! its published snapshot, and every scrape encodes that snapshot afresh (a registry per
//! scrape with one [`Collector`] over the snapshot), so the metrics are exactly what
//! `sersyncctl status` shows at the same moment.
//!
//! Names follow the Prometheus conventions: the `sersync_` prefix, base units in the name
//! (seconds, bytes), `_total` on counters. Per remote the labels are `root` and `remote`;
//! every series has `sersync_instance`, because the textfile collector merges the files of
//! every instance of a host into one scrape, where series without it would collide.

pub mod http;

use std::borrow::Cow;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::control::wire::{HistogramInfo, RemoteInfo, StatusInfo};

/// Which text exposition to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: what node_exporter's textfile collector and
    /// `promtool check metrics` read, and what a scraper gets unless it asks for
    /// OpenMetrics.
    Prometheus,
    /// OpenMetrics 1.0 text (`# UNIT` lines, `# EOF`), which Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format a scraper's `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a non-zero quality, else the Prometheus text
    /// format (which every scraper reads).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or("");
                let refused = parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The exposition of `status` in `format`.
pub fn render(status: &StatusInfo, format: Format) -> String {
    let labels = [(
        Cow::Borrowed("sersync_instance"),
        Cow::Owned(status.instance.clone()),
    )];
    let mut registry = Registry::with_prefix_and_labels("sersync", labels.into_iter());
    registry.register_collector(Box::new(Snapshot(status.clone())));
    let mut text = String::new();
    // Writing into a String cannot fail, and no metric here can make the encoder fail.
    let encoded = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
    };
    debug_assert!(encoded.is_ok(), "encoding metrics failed: {encoded:?}");
    text
}

/// The states a remote can be in, each a 0/1 series of `sersync_remote_state`.
pub const REMOTE_STATES: [&str; 4] = ["ok", "backoff", "failing", "guarded"];

/// A remote's state word (`ok`, `backoff`, `failing`, `guarded`) without what follows it
/// (` (full sync running)`, ` (stalled: …)`).
pub fn state_word(state: &str) -> &str {
    state.split_whitespace().next().unwrap_or("")
}

/// The `root` and `remote` labels of a remote: its own keys, or for a daemon that does not
/// send them (older than issue 18's changes), its name split at ` -> `.
pub fn remote_labels(remote: &RemoteInfo) -> (String, String) {
    match (&remote.root, &remote.remote) {
        (Some(root), Some(name)) => (String::from_utf8_lossy(root).into_owned(), name.clone()),
        _ => match remote.name.rsplit_once(" -> ") {
            Some((root, name)) => (root.to_owned(), name.to_owned()),
            None => (String::new(), remote.name.clone()),
        },
    }
}

/// The snapshot as a collector: encoded afresh at every scrape.
#[derive(Debug)]
struct Snapshot(StatusInfo);

/// The labels of one series (besides `sersync_instance`, which every series has).
type Labels = Vec<(&'static str, String)>;

/// One gauge family: its descriptor, then each series. A family without series is left
/// out (a descriptor with no sample says nothing).
fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, unit, help): (&str, Option<Unit>, &str),
    series: Vec<(Labels, V)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter family (the encoder adds `_total`), as [`gauges`].
fn counters<V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, unit, help): (&str, Option<Unit>, &str),
    series: Vec<(Labels, V)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram of durations in seconds, from the cumulative counts the daemon keeps.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    histogram: &HistogramInfo,
) -> fmt::Result {
    // The encoders take each bucket's own count and add them up again.
    let mut buckets = Vec::with_capacity(histogram.bounds_usec.len() + 1);
    let mut below = 0;
    for (bound, &cumulative) in histogram.bounds_usec.iter().zip(&histogram.cumulative) {
        buckets.push((seconds(*bound), cumulative.saturating_sub(below)));
        below = below.max(cumulative);
    }
    buckets.push((f64::INFINITY, histogram.count.saturating_sub(below)));
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(
        seconds(histogram.sum_usec),
        histogram.count,
        &buckets,
        None,
    )
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

/// A daemon-wide series.
fn one<V>(value: V) -> Vec<(Labels, V)> {
    vec![(Vec::new(), value)]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        let e = &mut encoder;
        e.encode_descriptor(
            "build",
            "The sersyncd version, as a label.",
            None,
            MetricType::Info,
        )?
        .encode_info(&vec![("version", s.version.clone())])?;
        gauges(
            e,
            (
                "paused",
                None,
                "1 while replication is paused (sersyncctl pause), else 0.",
            ),
            one(u64::from(s.paused)),
        )?;
        gauges(
            e,
            (
                "queued_paths",
                None,
                "Paths waiting to be sent, over every remote (deferred retries included).",
            ),
            one(s.queue_depth),
        )?;
        gauges(
            e,
            (
                "jobs_in_flight",
                None,
                "rsync jobs running now (one at most per remote).",
            ),
            one(s.in_flight),
        )?;
        gauges(
            e,
            (
                "failed_changes",
                None,
                "Changes still failing after retries (sersyncctl failures lists them).",
            ),
            one(s.failed),
        )?;
        gauges(
            e,
            (
                "watched_directories",
                None,
                "Directories watched with inotify.",
            ),
            one(s.watches),
        )?;
        if let Some(blocked) = &s.blocked_watchers {
            gauges(
                e,
                (
                    "blocked_watchers",
                    None,
                    "Roots whose watcher is stuck in a filesystem call (a hung mount): their \
                     changes are not seen.",
                ),
                one(blocked.len() as u64),
            )?;
        }
        let c = &s.counters;
        counters(
            e,
            ("events", None, "Changes reported by inotify since start."),
            one(c.events),
        )?;
        counters(
            e,
            ("batches", None, "rsync jobs that succeeded since start."),
            one(c.batches),
        )?;
        counters(
            e,
            (
                "delivered_paths",
                None,
                "Paths delivered to a remote since start.",
            ),
            one(c.files),
        )?;
        counters(
            e,
            ("errors", None, "rsync jobs that failed since start."),
            one(c.errors),
        )?;
        if let Some(latency) = &s.delivery_latency {
            histogram(
                e,
                "delivery_latency",
                "How long delivered changes waited, until the end of the rsync run that \
                 delivered them.",
                latency,
            )?;
        }
        if let Some(duration) = &s.full_sync_duration {
            histogram(
                e,
                "full_sync_duration",
                "How long the full syncs that succeeded took.",
                duration,
            )?;
        }
        self.encode_remotes(e)
    }
}

impl Snapshot {
    fn encode_remotes(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let remotes: Vec<(Labels, &RemoteInfo)> = self
            .0
            .remotes
            .iter()
            .map(|remote| {
                let (root, name) = remote_labels(remote);
                (vec![("root", root), ("remote", name)], remote)
            })
            .collect();
        let each = |value: &dyn Fn(&RemoteInfo) -> Option<u64>| -> Vec<(Labels, u64)> {
            remotes
                .iter()
                .filter_map(|(labels, remote)| Some((labels.clone(), value(remote)?)))
                .collect()
        };
        gauges(
            e,
            (
                "remote_lag",
                Some(Unit::Seconds),
                "How long the oldest change not yet delivered to the remote has waited (0: \
                 it has everything).",
            ),
            remotes
                .iter()
                .filter_map(|(labels, r)| Some((labels.clone(), seconds(r.lag_usec?))))
                .collect(),
        )?;
        gauges(
            e,
            (
                "remote_pending_paths",
                None,
                "Distinct paths waiting for the remote.",
            ),
            each(&|r| Some(r.pending)),
        )?;
        let mut runs = Vec::new();
        for (labels, remote) in &remotes {
            for (result, count) in [
                ("ok", remote.runs_ok),
                ("partial", remote.runs_partial),
                ("failed", remote.runs_failed),
            ] {
                if let Some(count) = count {
                    let mut labels = labels.clone();
                    labels.push(("result", result.to_owned()));
                    runs.push((labels, count));
                }
            }
        }
        counters(
            e,
            (
                "remote_runs",
                None,
                "rsync runs to the remote since start, by result: ok (exit 0 or 24), partial \
                 (exit 23: some paths failed), failed (anything else, replica-guard refusals \
                 included).",
            ),
            runs,
        )?;
        counters(
            e,
            (
                "remote_sent",
                Some(Unit::Bytes),
                "Bytes rsync reported sending to the remote since start.",
            ),
            each(&|r| r.bytes_sent),
        )?;
        gauges(
            e,
            (
                "remote_last_success_timestamp",
                Some(Unit::Seconds),
                "When a run last reached the remote (Unix time); absent until one did since \
                 start.",
            ),
            remotes
                .iter()
                .filter_map(|(labels, r)| Some((labels.clone(), seconds(r.last_ok_usec?))))
                .collect(),
        )?;
        let mut states = Vec::new();
        for (labels, remote) in &remotes {
            let current = state_word(&remote.state);
            for state in REMOTE_STATES {
                let mut labels = labels.clone();
                labels.push(("state", state.to_owned()));
                states.push((labels, u64::from(current == state)));
            }
        }
        gauges(
            e,
            (
                "remote_state",
                None,
                "1 for the state the remote is in, 0 for the others: ok, backoff (retrying \
                 after a failure), failing (a configuration error on either side, retried \
                 every 60 s), guarded (the replica guard holds deletions back).",
            ),
            states,
        )?;
        gauges(
            e,
            (
                "remote_full_sync_running",
                None,
                "1 while a full sync to the remote runs.",
            ),
            each(&|r| Some(u64::from(r.state.contains("(full sync running")))),
        )?;
        gauges(
            e,
            (
                "remote_stalled",
                None,
                "1 while the remote's rsync has moved no data for 30 s or more.",
            ),
            each(&|r| Some(u64::from(r.state.contains("(stalled")))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::CountersInfo;

    fn remote(root: &str, remote: &str, state: &str) -> RemoteInfo {
        RemoteInfo {
            name: format!("{root} -> {remote}"),
            state: state.into(),
            last_ok_usec: Some(1_700_000_000_250_000),
            last_error: None,
            pending: 3,
            lag_usec: Some(20_500_000),
            bytes_sent: Some(1536),
            runs_ok: Some(7),
            runs_partial: Some(1),
            runs_failed: Some(2),
            root: Some(root.as_bytes().to_vec()),
            remote: Some(remote.into()),
            ..RemoteInfo::default()
        }
    }

    fn sample() -> StatusInfo {
        StatusInfo {
            version: "0.4.0".into(),
            instance: "web".into(),
            config_path: "/etc/sersync/web.xml".into(),
            paused: true,
            queue_depth: 5,
            in_flight: 1,
            failed: 2,
            watches: 1200,
            remotes: vec![
                remote("/srv/www", "10.0.0.2::www", "ok"),
                remote("/srv/www", "10.0.0.3::www", "backoff (full sync running)"),
            ],
            counters: CountersInfo {
                events: 10,
                batches: 4,
                files: 9,
                bytes: 0,
                errors: 2,
            },
            blocked_watchers: Some(vec![(b"/mnt/nfs".to_vec(), 31)]),
            delivery_latency: Some(HistogramInfo {
                bounds_usec: vec![100_000, 1_000_000],
                cumulative: vec![1, 3],
                sum_usec: 1_250_000,
                count: 4,
            }),
            full_sync_duration: Some(HistogramInfo::default()),
        }
    }

    const WWW2: &str = r#"sersync_instance="web",root="/srv/www",remote="10.0.0.2::www""#;
    const WWW3: &str = r#"sersync_instance="web",root="/srv/www",remote="10.0.0.3::www""#;

    #[test]
    fn every_metric_has_its_series_in_both_formats() {
        let status = sample();
        let prometheus = render(&status, Format::Prometheus);
        let openmetrics = render(&status, Format::OpenMetrics);
        // (line in the Prometheus text format, the same line in OpenMetrics when it differs)
        let table: Vec<(String, Option<String>)> =
            vec![
            (
                r#"sersync_build_info{sersync_instance="web",version="0.4.0"} 1"#.into(),
                None,
            ),
            (r#"sersync_paused{sersync_instance="web"} 1"#.into(), None),
            (r#"sersync_queued_paths{sersync_instance="web"} 5"#.into(), None),
            (r#"sersync_jobs_in_flight{sersync_instance="web"} 1"#.into(), None),
            (r#"sersync_failed_changes{sersync_instance="web"} 2"#.into(), None),
            (
                r#"sersync_watched_directories{sersync_instance="web"} 1200"#.into(),
                None,
            ),
            (r#"sersync_blocked_watchers{sersync_instance="web"} 1"#.into(), None),
            (r#"sersync_events_total{sersync_instance="web"} 10"#.into(), None),
            (r#"sersync_batches_total{sersync_instance="web"} 4"#.into(), None),
            (
                r#"sersync_delivered_paths_total{sersync_instance="web"} 9"#.into(),
                None,
            ),
            (r#"sersync_errors_total{sersync_instance="web"} 2"#.into(), None),
            (format!("sersync_remote_lag_seconds{{{WWW2}}} 20.5"), None),
            (format!("sersync_remote_pending_paths{{{WWW3}}} 3"), None),
            (
                format!(r#"sersync_remote_runs_total{{{WWW2},result="ok"}} 7"#),
                None,
            ),
            (
                format!(r#"sersync_remote_runs_total{{{WWW2},result="partial"}} 1"#),
                None,
            ),
            (
                format!(r#"sersync_remote_runs_total{{{WWW2},result="failed"}} 2"#),
                None,
            ),
            (format!("sersync_remote_sent_bytes_total{{{WWW3}}} 1536"), None),
            (
                format!("sersync_remote_last_success_timestamp_seconds{{{WWW2}}} 1700000000.25"),
                None,
            ),
            (
                format!(r#"sersync_remote_state{{{WWW2},state="ok"}} 1"#),
                None,
            ),
            (
                format!(r#"sersync_remote_state{{{WWW3},state="ok"}} 0"#),
                None,
            ),
            (
                format!(r#"sersync_remote_state{{{WWW3},state="backoff"}} 1"#),
                None,
            ),
            (
                format!(r#"sersync_remote_state{{{WWW3},state="guarded"}} 0"#),
                None,
            ),
            (
                format!("sersync_remote_full_sync_running{{{WWW3}}} 1"),
                None,
            ),
            (format!("sersync_remote_stalled{{{WWW2}}} 0"), None),
            // Histograms: the buckets are cumulative, +Inf is the count.
            (
                r#"sersync_delivery_latency_seconds_bucket{sersync_instance="web",le="0.1"} 1"#
                    .into(),
                None,
            ),
            (
                r#"sersync_delivery_latency_seconds_bucket{sersync_instance="web",le="1"} 3"#
                    .into(),
                Some(
                    r#"sersync_delivery_latency_seconds_bucket{sersync_instance="web",le="1.0"} 3"#
                        .into(),
                ),
            ),
            (
                r#"sersync_delivery_latency_seconds_bucket{sersync_instance="web",le="+Inf"} 4"#
                    .into(),
                None,
            ),
            (
                r#"sersync_delivery_latency_seconds_sum{sersync_instance="web"} 1.25"#.into(),
                None,
            ),
            (
                r#"sersync_delivery_latency_seconds_count{sersync_instance="web"} 4"#.into(),
                None,
            ),
            (
                r#"sersync_full_sync_duration_seconds_bucket{sersync_instance="web",le="+Inf"} 0"#
                    .into(),
                None,
            ),
        ];
        for (line, openmetrics_line) in &table {
            assert!(
                prometheus.lines().any(|l| l == line),
                "missing {line}:\n{prometheus}"
            );
            let line = openmetrics_line.as_ref().unwrap_or(line);
            assert!(
                openmetrics.lines().any(|l| l == line),
                "missing {line}:\n{openmetrics}"
            );
        }
    }

    #[test]
    fn the_formats_differ_where_their_specifications_do() {
        let status = sample();
        let prometheus = render(&status, Format::Prometheus);
        let openmetrics = render(&status, Format::OpenMetrics);
        // (format, a line it has, a line it must not have)
        let table = [
            (
                &prometheus,
                "# TYPE sersync_remote_sent_bytes_total counter",
                "# EOF",
            ),
            (
                &prometheus,
                "# TYPE sersync_build_info gauge",
                "# UNIT sersync_remote_lag_seconds seconds",
            ),
            (
                &openmetrics,
                "# TYPE sersync_remote_sent_bytes counter",
                "# TYPE sersync_remote_sent_bytes_total counter",
            ),
            (
                &openmetrics,
                "# UNIT sersync_remote_sent_bytes bytes",
                "# TYPE sersync_build_info gauge",
            ),
            (
                &openmetrics,
                "# TYPE sersync_build info",
                "# TYPE sersync_remote_lag gauge",
            ),
        ];
        for (text, has, lacks) in table {
            assert!(text.lines().any(|l| l == has), "missing {has}:\n{text}");
            assert!(!text.lines().any(|l| l == lacks), "has {lacks}:\n{text}");
        }
        assert!(openmetrics.ends_with("\n# EOF\n"), "{openmetrics}");
        // Every family has help and a type, once.
        for text in [&prometheus, &openmetrics] {
            let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
            let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
            assert_eq!(helps, types, "{text}");
            assert_eq!(helps, 21, "{text}");
        }
    }

    #[test]
    fn what_a_daemon_does_not_say_has_no_series() {
        // An older daemon (before issue 18): no lag, bytes, runs, root or remote keys, no histograms.
        let mut old = sample();
        old.blocked_watchers = None;
        old.delivery_latency = None;
        old.full_sync_duration = None;
        old.remotes = vec![RemoteInfo {
            name: "/srv/a -> b -> 10.0.0.2::www".into(),
            state: "failing".into(),
            last_ok_usec: None,
            pending: 4,
            ..RemoteInfo::default()
        }];
        let text = render(&old, Format::Prometheus);
        for absent in [
            "sersync_remote_lag_seconds",
            "sersync_remote_sent_bytes_total",
            "sersync_remote_runs_total",
            "sersync_remote_last_success_timestamp_seconds",
            "sersync_blocked_watchers",
            "sersync_delivery_latency_seconds",
            "sersync_full_sync_duration_seconds",
        ] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        // The labels come from the name, split at the last arrow.
        let labels = r#"sersync_instance="web",root="/srv/a -> b",remote="10.0.0.2::www""#;
        for line in [
            format!("sersync_remote_pending_paths{{{labels}}} 4"),
            format!(r#"sersync_remote_state{{{labels},state="failing"}} 1"#),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // No remotes at all (a plugin-only daemon): no remote family.
        let mut bare = sample();
        bare.remotes.clear();
        let text = render(&bare, Format::OpenMetrics);
        assert!(!text.contains("sersync_remote_"), "{text}");
        assert!(text.contains("sersync_events_total"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_made_text() {
        let mut status = sample();
        status.instance = "a\"b".into();
        status.remotes = vec![remote("/srv/x", "h::m", "ok")];
        status.remotes[0].root = Some(b"/srv/q\"uote\\back\nline\xff".to_vec());
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = render(&status, format);
            let want = "sersync_remote_pending_paths{sersync_instance=\"a\\\"b\",root=\"/srv/\
                        q\\\"uote\\\\back\\nline\u{fffd}\",remote=\"h::m\"} 3";
            assert!(text.lines().any(|l| l == want), "missing {want}:\n{text}");
        }
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        let table = [
            (None, Format::Prometheus),
            (Some(""), Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (Some("text/plain;version=0.0.4"), Format::Prometheus),
            // What Prometheus 2.42 sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (
                Some("text/plain, application/openmetrics-text; q=0"),
                Format::Prometheus,
            ),
        ];
        for (accept, want) in table {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        assert!(
            Format::OpenMetrics
                .content_type()
                .starts_with("application/openmetrics-text")
        );
        assert!(
            Format::Prometheus
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }

    #[test]
    fn a_state_is_its_first_word() {
        for (state, word) in [
            ("ok", "ok"),
            ("backoff (full sync running)", "backoff"),
            (
                "guarded (stalled: rsync moved no data; running 31 s)",
                "guarded",
            ),
            ("", ""),
        ] {
            assert_eq!(state_word(state), word);
        }
    }
}
