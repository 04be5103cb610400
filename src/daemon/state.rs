//! What survives a restart: undelivered changes and the "a run is in progress" marker.
//!
//! A clean stop writes every pending change of every lane to `pending` (crash-safe: temp
//! file, fsync, rename, fsync of the directory) and removes the `running` marker. A start
//! that finds the marker knows the previous run ended uncleanly (kill -9, power loss):
//! changes may have been lost before they were saved, so every root gets a full sync.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::queue::Action;

const PENDING: &str = "pending";
const RUNNING: &str = "running";
const MAGIC: &[u8] = b"sersync-pending 1\n";

/// One saved change: which lane (by root path and remote) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedChange {
    pub root: PathBuf,
    pub remote_ip: String,
    pub remote_name: String,
    pub path: Vec<u8>,
    pub action: Action,
}

fn action_code(action: Action) -> &'static [u8] {
    match action {
        Action::Sync => b"S",
        Action::Remove { dir: false } => b"F",
        Action::Remove { dir: true } => b"D",
        Action::Replace => b"R",
    }
}

fn action_from(code: &[u8]) -> Option<Action> {
    Some(match code {
        b"S" => Action::Sync,
        b"F" => Action::Remove { dir: false },
        b"D" => Action::Remove { dir: true },
        b"R" => Action::Replace,
        _ => return None,
    })
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: PathBuf) -> StateDir {
        StateDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the `running` marker; returns whether one was already there (the previous
    /// run did not stop cleanly).
    pub fn mark_running(&self) -> io::Result<bool> {
        let marker = self.dir.join(RUNNING);
        let unclean = marker.exists();
        write_atomically(&marker, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(unclean)
    }

    /// Removes the `running` marker (clean stop, after pending changes were saved).
    pub fn clear_running(&self) -> io::Result<()> {
        match fs::remove_file(self.dir.join(RUNNING)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => sync_dir(&self.dir),
        }
    }

    /// Saves pending changes (replacing any earlier file; none means remove it).
    pub fn save_pending(&self, changes: &[SavedChange]) -> io::Result<()> {
        let path = self.dir.join(PENDING);
        if changes.is_empty() {
            return match fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => sync_dir(&self.dir),
            };
        }
        let mut out = MAGIC.to_vec();
        for change in changes {
            for field in [
                change.root.as_os_str().as_bytes(),
                change.remote_ip.as_bytes(),
                change.remote_name.as_bytes(),
                action_code(change.action),
                &change.path,
            ] {
                out.extend_from_slice(field);
                out.push(0);
            }
        }
        write_atomically(&path, &out)
    }

    /// Reads saved pending changes (an unreadable or foreign file yields an error, never
    /// a partial silent load).
    pub fn load_pending(&self) -> io::Result<Vec<SavedChange>> {
        let path = self.dir.join(PENDING);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let body = bytes.strip_prefix(MAGIC).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a sersync pending-changes file", path.display()),
            )
        })?;
        let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
        // split() yields one empty tail after the last NUL.
        let fields = &fields[..fields.len().saturating_sub(1)];
        if fields.len() % 5 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: truncated record", path.display()),
            ));
        }
        fields
            .chunks(5)
            .map(|record| {
                let action = action_from(record[3]).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: bad action code", path.display()),
                    )
                })?;
                Ok(SavedChange {
                    root: PathBuf::from(OsStr::from_bytes(record[0])),
                    remote_ip: String::from_utf8_lossy(record[1]).into_owned(),
                    remote_name: String::from_utf8_lossy(record[2]).into_owned(),
                    action,
                    path: record[4].to_vec(),
                })
            })
            .collect()
    }

    /// Removes the pending file once its contents are in memory (the `running` marker
    /// covers a crash from here on).
    pub fn discard_pending(&self) -> io::Result<()> {
        self.save_pending(&[])
    }
}

/// The one atomic writer (temp file 0600, fsync, rename, fsync of the directory), shared
/// with the failure script.
pub use crate::failure::write_atomically;

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trip_and_marker() {
        let dir = std::env::temp_dir().join(format!("sersync-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = StateDir::new(dir.clone());
        assert!(!state.mark_running().unwrap(), "fresh dir: clean");
        assert!(state.mark_running().unwrap(), "marker left: unclean");
        let changes = vec![
            SavedChange {
                root: PathBuf::from("/srv/a b"),
                remote_ip: "127.0.0.1".into(),
                remote_name: "web".into(),
                path: b"x\ny\xff".to_vec(),
                action: Action::Remove { dir: true },
            },
            SavedChange {
                root: PathBuf::from("/srv/c"),
                remote_ip: "::1".into(),
                remote_name: "img".into(),
                path: Vec::new(),
                action: Action::Replace,
            },
        ];
        state.save_pending(&changes).unwrap();
        assert_eq!(state.load_pending().unwrap(), changes);
        state.discard_pending().unwrap();
        assert!(state.load_pending().unwrap().is_empty());
        state.clear_running().unwrap();
        assert!(!dir.join(RUNNING).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
