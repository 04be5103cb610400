//! How far a full sync has got, from what rsync itself prints with `--info=progress2`.
//!
//! Why: a full sync of a large tree runs for minutes or hours, and operators (and
//! `sersyncctl full-sync --wait`) want to see how far it is and when it will end. rsync
//! knows: with `--info=progress2` it rewrites one line (`\r`-separated) with the bytes
//! sent so far, the percentage of the bytes it knows about, the rate, its estimate of the
//! time left, and the files checked of those listed:
//!
//! ```text
//!      12345678  45%    3.83MB/s    0:00:12 (xfr#3, to-chk=27/31)
//! ```
//!
//! (`ir-chk` instead of `to-chk` while incremental recursion is still listing: the total
//! grows.) [`Parser`] turns the bytes of stdout as they come into the latest [`RunProgress`];
//! [`JobProgress`] is what a job's runs (a full sync may be split into concurrent runs)
//! report into and what the daemon reads, at most once a second. Parsing and summing are
//! pure and tested by tables; only `sync::process` feeds it.

use std::sync::Mutex;
use std::time::Duration;

/// The last progress line of one rsync run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunProgress {
    /// Bytes of file data done (sent or matched) so far.
    pub bytes: u64,
    /// rsync's percentage of the bytes it knows about.
    pub percent: u8,
    /// Bytes per second.
    pub rate: f64,
    /// rsync's estimate of the time left (of this run).
    pub eta: Duration,
    /// Files of the list checked so far, and listed so far.
    pub files_done: u64,
    pub files_total: u64,
    /// Still listing (`ir-chk`): the totals may grow.
    pub listing: bool,
}

/// The figures of one `--info=progress2` record (without its `\r`), or `None` for text of
/// another shape (the stats summary, a warning). Text alone cannot tell a record from a
/// file name that `-v` printed and that happens to look like one (rsync escapes control
/// characters in names, not spaces): [`Parser`] takes only what follows a `\r`.
pub fn parse_record(record: &[u8]) -> Option<RunProgress> {
    let text = std::str::from_utf8(record).ok()?;
    let mut words = text.split_whitespace();
    let bytes = number(words.next()?)?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = rate(words.next()?)?;
    let eta = clock(words.next()?)?;
    let mut progress = RunProgress {
        bytes,
        percent: percent.min(100),
        rate,
        eta,
        ..RunProgress::default()
    };
    // `(xfr#3, to-chk=27/31)`: optional (absent before the first file is done).
    let rest: String = words.collect::<Vec<_>>().join(" ");
    if let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        for part in inner.split(", ") {
            let (key, value) = part.split_once(['=', '#'])?;
            match key {
                "xfr" => {}
                "to-chk" | "ir-chk" => {
                    let (left, total) = value.split_once('/')?;
                    let (left, total) = (number(left)?, number(total)?);
                    progress.files_total = total;
                    progress.files_done = total.saturating_sub(left);
                    progress.listing = key == "ir-chk";
                }
                _ => return None,
            }
        }
    } else if !rest.is_empty() {
        return None;
    }
    Some(progress)
}

/// Digits, with or without `,`/`.` thousands separators.
fn number(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(|c| *c != ',' && *c != '.').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `3.83MB/s`, `0.00kB/s`, `512.00B/s` (rsync's units are powers of 1024).
fn rate(text: &str) -> Option<f64> {
    let value = text.strip_suffix("/s")?;
    let (number, scale) = [
        ("GB", 1u64 << 30),
        ("MB", 1 << 20),
        ("kB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, *scale)))?;
    let number: f64 = number.replace(',', ".").parse().ok()?;
    Some(number * scale as f64)
}

/// `H:MM:SS` (hours may have more digits).
fn clock(text: &str) -> Option<Duration> {
    let mut parts = text.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m, s): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    Some(Duration::from_secs(h * 3600 + m * 60 + s))
}

/// Splits a run's stdout into records as it comes, keeping the latest progress. rsync
/// starts each progress record with `\r` (it rewrites the line) and every other line of
/// output after a `\n`, so only text that began right after a `\r` is read as a record: a
/// file name printed by a user's `-v` that looks like one is not.
#[derive(Debug, Default)]
pub struct Parser {
    partial: Vec<u8>,
    /// The text in `partial` began right after a `\r`.
    after_cr: bool,
}

impl Parser {
    /// Feeds the next bytes; returns the newest progress record they completed, if any.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<RunProgress> {
        let mut latest = None;
        for &byte in chunk {
            if byte == b'\r' || byte == b'\n' {
                if self.after_cr {
                    if let Some(progress) = parse_record(&self.partial) {
                        latest = Some(progress);
                    }
                }
                self.partial.clear();
                self.after_cr = byte == b'\r';
            } else if self.partial.len() < 512 {
                // A record is one short line; anything longer is not one.
                self.partial.push(byte);
            }
        }
        latest
    }
}

/// A full sync's progress over all its runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub bytes_done: u64,
    /// The bytes done plus what the runs still expect (rsync's percentage); grows while
    /// the runs are still listing.
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes per second, over the runs.
    pub rate: u64,
    /// The longest of the runs' estimates.
    pub eta: Duration,
}

impl Summary {
    /// Percent of the bytes done, 0 to 100.
    pub fn percent(&self) -> u64 {
        percent(self.bytes_done, self.bytes_total)
    }
}

/// `done` of `total` in percent, 0 to 100 (0 of nothing is 0).
pub fn percent(done: u64, total: u64) -> u64 {
    done.saturating_mul(100)
        .checked_div(total)
        .unwrap_or(0)
        .min(100)
}

/// Sums the runs of one job: each run's total is what its bytes are of its percentage.
pub fn summarize(runs: &[RunProgress]) -> Summary {
    let mut summary = Summary::default();
    let mut rate = 0.0;
    // Saturating: the figures are rsync's text, whatever it printed.
    for run in runs {
        summary.bytes_done = summary.bytes_done.saturating_add(run.bytes);
        let total = if run.percent >= 100 || run.percent == 0 {
            // Done, or nothing to go by yet (at least what is done).
            run.bytes
        } else {
            run.bytes.saturating_mul(100) / u64::from(run.percent)
        };
        summary.bytes_total = summary.bytes_total.saturating_add(total);
        summary.files_done = summary.files_done.saturating_add(run.files_done);
        summary.files_total = summary.files_total.saturating_add(run.files_total);
        rate += run.rate;
        summary.eta = summary.eta.max(run.eta);
    }
    summary.bytes_total = summary.bytes_total.max(summary.bytes_done);
    summary.rate = rate as u64;
    summary
}

/// What the runs of one job report into (each its own slot) and the daemon reads.
#[derive(Debug, Default)]
pub struct JobProgress {
    /// `None`: the run has not said anything yet (still connecting, or refused).
    runs: Mutex<Vec<Option<RunProgress>>>,
}

impl JobProgress {
    /// A slot for one more run.
    pub fn slot(&self) -> usize {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.push(None);
        runs.len() - 1
    }

    pub fn update(&self, slot: usize, progress: RunProgress) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(run) = runs.get_mut(slot) {
            *run = Some(progress);
        }
    }

    /// The job so far; `None` until a run has reported.
    pub fn summary(&self) -> Option<Summary> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let reported: Vec<RunProgress> = runs.iter().flatten().copied().collect();
        (!reported.is_empty()).then(|| summarize(&reported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bytes, percent, rate, eta, files done, files total, listing
    type Expected = (u64, u8, f64, Duration, u64, u64, bool);

    #[test]
    fn progress2_records_and_what_is_not_one() {
        let secs = Duration::from_secs;
        let rows: &[(&str, Option<Expected>)] = &[
            (
                "       32768   0%    0.00kB/s    0:00:00  ",
                Some((32_768, 0, 0.0, secs(0), 0, 0, false)),
            ),
            (
                "      3000000   3%  254.85MB/s    0:00:00 (xfr#1, to-chk=29/31)",
                Some((3_000_000, 3, 254.85 * 1_048_576.0, secs(0), 2, 31, false)),
            ),
            (
                "  1,234,567  45%    3.83MB/s    1:02:03 (xfr#12, ir-chk=1000/1500)",
                Some((
                    1_234_567,
                    45,
                    3.83 * 1_048_576.0,
                    secs(3723),
                    500,
                    1500,
                    true,
                )),
            ),
            (
                "9000 100% 512.00B/s 0:00:01 (xfr#2, to-chk=0/2)",
                Some((9000, 100, 512.0, secs(1), 2, 2, false)),
            ),
            (
                "sent 9,105 bytes  received 35 bytes  18,280.00 bytes/sec",
                None,
            ),
            ("total size is 9,000  speedup is 0.98", None),
            (
                "rsync: [sender] send_files failed to open \"x\": Permission denied (13)",
                None,
            ),
            ("12 13% 1.00MB/s 0:00:01 (something=else)", None),
            ("", None),
        ];
        for (record, want) in rows {
            let got = parse_record(record.as_bytes()).map(|p| {
                (
                    p.bytes,
                    p.percent,
                    p.rate,
                    p.eta,
                    p.files_done,
                    p.files_total,
                    p.listing,
                )
            });
            match (got, want) {
                (Some(g), Some(w)) => {
                    assert_eq!(
                        (g.0, g.1, g.3, g.4, g.5, g.6),
                        (w.0, w.1, w.3, w.4, w.5, w.6)
                    );
                    assert!((g.2 - w.2).abs() < 1.0, "{record}: rate {}", g.2);
                }
                (None, None) => {}
                (got, want) => panic!("{record:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// With a `-v` (or `--progress`) in `commonParams` rsync prints every path it sends, as
    /// is (it escapes control characters, not spaces): a directory `18446744073709551615 1%
    /// 1.00kB` holding a file `s 0:00:00` prints a line that [`parse_record`] takes for a
    /// progress record, although its doc says a file name with `-v` is not one. Two runs of
    /// a split full sync reporting such a name at once make [`summarize`] add past
    /// `u64::MAX` (`+=`): a panic in a debug build, garbage in release.
    #[test]
    fn a_file_name_printed_by_v_is_not_a_progress_record() {
        let name = b"18446744073709551615 1% 1.00kB/s 0:00:00";
        let mut parser = Parser::default();
        let spoofed = parser
            .feed(b"sending incremental file list\n18446744073709551615 1% 1.00kB/s 0:00:00\n");
        let summed = std::panic::catch_unwind(|| {
            let run = RunProgress {
                bytes: u64::MAX,
                percent: 1,
                ..RunProgress::default()
            };
            summarize(&[run, run])
        });
        assert!(summed.is_ok(), "summing two runs' figures overflowed");
        // Shaped like a record (text alone cannot tell), but printed as a line of its own.
        assert!(parse_record(name).is_some());
        assert_eq!(spoofed, None, "a path printed by -v");
        // What follows a `\r` is a record.
        let mut parser = Parser::default();
        assert!(parser.feed(b"\r").is_none());
        assert!(parser.feed(b"   100  10%  1.00kB/s    0:00:09\r").is_some());
    }

    /// [`JobProgress::summary`] is `None` until a run has reported, as its doc says: a run
    /// that has only taken its slot (rsync still connecting or listing, or turned away by
    /// `max connections`) has said nothing. `slot` pushes a zeroed record, so the status
    /// shows `(full sync running, 0%)` with `0 B of 0 B` and a `FullSyncProgress` of zeros
    /// goes out before rsync printed a thing.
    #[test]
    fn a_slot_taken_is_not_a_report() {
        let job = JobProgress::default();
        let _slot = job.slot();
        assert_eq!(job.summary(), None);
    }

    #[test]
    fn the_parser_keeps_the_newest_complete_record_across_chunks() {
        let mut parser = Parser::default();
        assert_eq!(parser.feed(b"\r      100  10%  1.00kB/s"), None);
        let done = parser.feed(b"    0:00:09\r      200  20%").unwrap();
        assert_eq!((done.bytes, done.percent), (100, 10));
        let next = parser
            .feed(b"  1.00kB/s    0:00:08\r      300  30%  1.00kB/s    0:00:07\r")
            .unwrap();
        assert_eq!((next.bytes, next.percent), (300, 30));
        assert_eq!(parser.feed(b"\nsent 300 bytes  received 10 bytes\n"), None);
    }

    #[test]
    fn runs_add_up_and_a_totals_is_what_its_bytes_are_of_its_percentage() {
        let run = |bytes, percent, files_done, files_total, secs| RunProgress {
            bytes,
            percent,
            rate: 1000.0,
            eta: Duration::from_secs(secs),
            files_done,
            files_total,
            listing: false,
        };
        let summary = summarize(&[
            run(250, 25, 1, 4, 30),
            run(900, 100, 9, 9, 0),
            run(0, 0, 0, 0, 0),
        ]);
        assert_eq!(
            summary,
            Summary {
                bytes_done: 1150,
                bytes_total: 1900,
                files_done: 10,
                files_total: 13,
                rate: 3000,
                eta: Duration::from_secs(30),
            }
        );
        assert_eq!(summarize(&[]), Summary::default());
        let job = JobProgress::default();
        assert_eq!(job.summary(), None);
        let a = job.slot();
        let b = job.slot();
        job.update(b, run(500, 50, 1, 2, 5));
        job.update(a, run(100, 100, 1, 1, 0));
        let summary = job.summary().unwrap();
        assert_eq!((summary.bytes_done, summary.bytes_total), (600, 1100));
    }
}
