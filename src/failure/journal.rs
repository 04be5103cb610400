//! The failure journal: every change that is still failing after retries, per remote.
//!
//! It is the structured source of truth behind `rsync_fail_log.sh` (a rendering of it for
//! humans), `ListFailures` and `retry-failed`. An entry is added when a change fails again
//! after its first retry (or at once when the failure is fatal), and leaves when a batch
//! that carries it succeeds. It is saved crash-safely in the state directory so it
//! survives restarts.
//!
//! Pure data plus (de)serialisation; the daemon decides when to record and save.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which remote of which root a failure belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneKey {
    pub root: PathBuf,
    pub remote_ip: String,
    pub remote_name: String,
}

/// What a replay of some paths reads on stdin (NUL-terminated records).
pub type ReplayStdin = Box<dyn Fn(&[&[u8]]) -> Vec<Vec<u8>>>;

/// How a lane's failed paths are re-sent by hand (see [`Journal::script_entries`]).
pub struct Replay {
    /// The remote as the operator knows it.
    pub remote: String,
    /// The whole command, program first.
    pub argv: Vec<OsString>,
    /// What the command reads NUL-terminated on stdin to re-send these paths.
    pub stdin: ReplayStdin,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("remote", &self.remote)
            .field("argv", &self.argv)
            .finish_non_exhaustive()
    }
}

/// What is known about one failing path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureInfo {
    /// rsync's exit code (or -1 for a signal / spawn failure).
    pub exit_code: i32,
    pub message: String,
    /// First failure of this path.
    pub since: SystemTime,
    /// Latest failure.
    pub last: SystemTime,
}

/// All failing paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    entries: BTreeMap<(LaneKey, Vec<u8>), FailureInfo>,
}

const MAGIC: &[u8] = b"sersync-failures 1\n";

impl Journal {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records (or refreshes) failures of `paths` on `lane`.
    pub fn record<'a>(
        &mut self,
        lane: &LaneKey,
        paths: impl IntoIterator<Item = &'a [u8]>,
        exit_code: i32,
        message: &str,
        now: SystemTime,
    ) {
        for path in paths {
            self.entries
                .entry((lane.clone(), path.to_vec()))
                .and_modify(|info| {
                    info.exit_code = exit_code;
                    info.message = message.to_owned();
                    info.last = now;
                })
                .or_insert_with(|| FailureInfo {
                    exit_code,
                    message: message.to_owned(),
                    since: now,
                    last: now,
                });
        }
    }

    /// Forgets `paths` of `lane` (they were delivered); returns how many left.
    pub fn clear<'a>(
        &mut self,
        lane: &LaneKey,
        paths: impl IntoIterator<Item = &'a [u8]>,
    ) -> usize {
        if self.entries.is_empty() {
            return 0;
        }
        let mut removed = 0;
        for path in paths {
            if self
                .entries
                .remove(&(lane.clone(), path.to_vec()))
                .is_some()
            {
                removed += 1;
            }
        }
        removed
    }

    /// The exit code and message of one entry of `lane` below directory `dir`, if any.
    pub fn first_below(&self, lane: &LaneKey, dir: &[u8]) -> Option<(i32, &str)> {
        let mut below = if dir.is_empty() {
            Box::new(self.entries.iter().filter(|((key, _), _)| key == lane))
                as Box<dyn Iterator<Item = _>>
        } else {
            let range = crate::relpath::below_range(dir);
            Box::new(
                self.entries
                    .range((lane.clone(), range.start)..(lane.clone(), range.end)),
            )
        };
        below
            .next()
            .map(|(_, info)| (info.exit_code, info.message.as_str()))
    }

    /// Forgets the entries of `lane` below directory `dir` (it was removed or replaced on
    /// the remote, which settles them).
    pub fn clear_below(&mut self, lane: &LaneKey, dir: &[u8]) -> usize {
        if dir.is_empty() {
            return self.clear_lane(lane);
        }
        let range = crate::relpath::below_range(dir);
        let below: Vec<(LaneKey, Vec<u8>)> = self
            .entries
            .range((lane.clone(), range.start)..(lane.clone(), range.end))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &below {
            self.entries.remove(key);
        }
        below.len()
    }

    /// Forgets every entry of a lane (a full sync of it succeeded).
    pub fn clear_lane(&mut self, lane: &LaneKey) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(key, _), _| key != lane);
        before - self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LaneKey, &[u8], &FailureInfo)> {
        self.entries
            .iter()
            .map(|((lane, path), info)| (lane, path.as_slice(), info))
    }

    /// Serialises to the on-disk format (NUL-separated fields, binary-safe).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for ((lane, path), info) in &self.entries {
            let since = secs(info.since).to_string();
            let last = secs(info.last).to_string();
            let code = info.exit_code.to_string();
            for field in [
                lane.root.as_os_str().as_bytes(),
                lane.remote_ip.as_bytes(),
                lane.remote_name.as_bytes(),
                path.as_slice(),
                code.as_bytes(),
                since.as_bytes(),
                last.as_bytes(),
                info.message.as_bytes(),
            ] {
                out.extend_from_slice(field);
                out.push(0);
            }
        }
        out
    }

    /// Parses [`Journal::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Journal> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| invalid("not a sersync failure journal"))?;
        let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
        let fields = &fields[..fields.len().saturating_sub(1)];
        if fields.len() % 8 != 0 {
            return Err(invalid("truncated failure journal"));
        }
        let mut journal = Journal::default();
        for record in fields.chunks(8) {
            let number = |field: &[u8]| -> io::Result<i64> {
                std::str::from_utf8(field)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| invalid("bad number in failure journal"))
            };
            let lane = LaneKey {
                root: PathBuf::from(OsStr::from_bytes(record[0])),
                remote_ip: String::from_utf8_lossy(record[1]).into_owned(),
                remote_name: String::from_utf8_lossy(record[2]).into_owned(),
            };
            let info = FailureInfo {
                exit_code: i32::try_from(number(record[4])?).unwrap_or(-1),
                since: time(number(record[5])?),
                last: time(number(record[6])?),
                message: String::from_utf8_lossy(record[7]).into_owned(),
            };
            journal.entries.insert((lane, record[3].to_vec()), info);
        }
        Ok(journal)
    }

    /// Loads the journal file; a missing file is an empty journal.
    pub fn load(path: &Path) -> io::Result<Journal> {
        match crate::trusted::read_state_file(path)? {
            Some(bytes) => Journal::from_bytes(&bytes)
                .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display()))),
            None => Ok(Journal::default()),
        }
    }

    /// The failure script's entries: per lane, commands of at most `chunk` paths each.
    /// `replay` says how a lane's paths are re-sent; `None` skips the lane (no longer
    /// configured).
    pub fn script_entries(
        &self,
        chunk: usize,
        mut replay: impl FnMut(&LaneKey) -> Option<Replay>,
    ) -> Vec<super::ScriptEntry> {
        let mut by_lane: BTreeMap<&LaneKey, Vec<(&[u8], &FailureInfo)>> = BTreeMap::new();
        for ((lane, path), info) in &self.entries {
            if path.is_empty() {
                // A held full sync (the root itself): no command re-sends "a path" for it.
                continue;
            }
            by_lane.entry(lane).or_default().push((path, info));
        }
        let mut out = Vec::new();
        for (lane, paths) in by_lane {
            let Some(replay) = replay(lane) else {
                continue;
            };
            for group in paths.chunks(chunk.max(1)) {
                let newest = group
                    .iter()
                    .max_by_key(|(_, info)| info.last)
                    .map(|(_, info)| (*info).clone());
                let Some(newest) = newest else { continue };
                let paths: Vec<&[u8]> = group.iter().map(|(path, _)| *path).collect();
                out.push(super::ScriptEntry {
                    exit_code: newest.exit_code,
                    remote: replay.remote.clone(),
                    time: newest.last,
                    root: lane.root.clone(),
                    argv: replay.argv.clone(),
                    stdin_paths: (replay.stdin)(&paths),
                });
            }
        }
        out
    }
}

fn secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(name: &str) -> LaneKey {
        LaneKey {
            root: PathBuf::from("/srv/www"),
            remote_ip: "127.0.0.1".into(),
            remote_name: name.into(),
        }
    }

    #[test]
    fn record_clear_and_round_trip() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t1 = t0 + Duration::from_secs(60);
        let mut journal = Journal::default();
        journal.record(
            &lane("web"),
            [&b"a\nb"[..], b"bad\xff"],
            10,
            "connection refused",
            t0,
        );
        journal.record(&lane("img"), [&b"x"[..]], 5, "auth failed", t0);
        journal.record(&lane("web"), [&b"a\nb"[..]], 12, "stream error", t1);
        assert_eq!(journal.len(), 3);
        let (_, _, info) = journal.iter().find(|(_, p, _)| *p == b"a\nb").unwrap();
        assert_eq!((info.exit_code, info.since, info.last), (12, t0, t1));
        let copy = Journal::from_bytes(&journal.to_bytes()).unwrap();
        assert_eq!(copy, journal);
        assert_eq!(journal.clear(&lane("web"), [&b"a\nb"[..], b"never"]), 1);
        assert_eq!(journal.clear_lane(&lane("img")), 1);
        journal.record(
            &lane("web"),
            [&b"d/x"[..], b"d/y/z", b"dx", b"d-x", b"d"],
            10,
            "down",
            t0,
        );
        journal.record(&lane("img"), [&b"d/q"[..]], 10, "down", t0);
        assert_eq!(journal.clear_below(&lane("web"), b"d"), 2);
        assert_eq!(
            journal.len(),
            5,
            "bad\\xff, dx, d-x, d and the other lane's d/q remain"
        );
        assert_eq!(
            journal
                .first_below(&lane("web"), b"d")
                .map(|(code, _)| code),
            None
        );
        assert_eq!(
            journal.first_below(&lane("img"), b"d"),
            Some((10, "down")),
            "d/q of the other lane"
        );
        assert!(journal.first_below(&lane("img"), b"").is_some());
        assert_eq!(journal.clear_below(&lane("img"), b""), 1);
        assert!(Journal::from_bytes(b"garbage").is_err());
    }

    #[test]
    fn script_entries_group_per_lane_in_chunks() {
        let now = SystemTime::now();
        let mut journal = Journal::default();
        let paths: Vec<Vec<u8>> = (0..5).map(|i| format!("f{i}").into_bytes()).collect();
        journal.record(
            &lane("web"),
            paths.iter().map(|p| p.as_slice()),
            10,
            "down",
            now,
        );
        // The caller words the replay; the journal groups and dates.
        let replay = |key: &LaneKey| {
            (key.remote_name != "gone").then(|| Replay {
                remote: format!("127.0.0.1::{}", key.remote_name),
                argv: vec!["rsync".into()],
                stdin: Box::new(|paths: &[&[u8]]| paths.iter().map(|p| p.to_vec()).collect()),
            })
        };
        let entries = journal.script_entries(2, replay);
        assert_eq!(entries.len(), 3);
        let groups: Vec<Vec<Vec<u8>>> = entries.iter().map(|e| e.stdin_paths.clone()).collect();
        assert_eq!(
            groups,
            vec![
                vec![b"f0".to_vec(), b"f1".to_vec()],
                vec![b"f2".to_vec(), b"f3".to_vec()],
                vec![b"f4".to_vec()],
            ]
        );
        assert!(
            entries
                .iter()
                .all(|e| e.remote == "127.0.0.1::web" && e.exit_code == 10)
        );
        // A held full sync (the root itself) is no path to re-send; a lane the caller does
        // not know (no longer configured) is left out.
        journal.record(&lane("web"), [&b""[..]], -1, "held", now);
        journal.record(&lane("gone"), [&b"x"[..]], 10, "down", now);
        assert_eq!(journal.script_entries(10, replay).len(), 1);
    }
}
