//! What survives a restart: undelivered changes, owed full syncs, the "a run is in
//! progress" marker, and the lock that keeps a second daemon out.
//!
//! A clean stop writes every undelivered change of every lane to `pending` (crash-safe:
//! temp file, fsync, rename, fsync of the directory), with a record for each lane that
//! still owes a full sync (one that was interrupted, requested, or deferred), and removes
//! the `running` marker. A start that finds the marker knows the previous run ended
//! uncleanly (kill -9, power loss): changes may have been lost before they were saved, so
//! every root gets a full sync. A start that finds an owed full sync runs it, so a SIGTERM
//! during a recovery does not end the recovery.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::failure::LaneKey;
use crate::guard::FsIdentity;
use crate::queue::Action;

const PENDING: &str = "pending";
const RUNNING: &str = "running";
const LOCK: &str = "lock";
const MAGIC: &[u8] = b"sersync-pending 1\n";
const ROOTS: &str = "roots";
const ROOTS_MAGIC: &[u8] = b"sersync-roots 2\n";
const HELD: &str = "held";
const HELD_MAGIC: &[u8] = b"sersync-held 1\n";

/// One saved record: which lane (by root path and remote) and what it owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedChange {
    pub lane: LaneKey,
    /// Empty for [`Owed::FullSync`].
    pub path: Vec<u8>,
    pub owed: Owed,
}

/// What a lane owes: one path's action, or a whole full sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    Change(Action),
    FullSync,
}

fn owed_code(owed: Owed) -> &'static [u8] {
    match owed {
        Owed::Change(Action::Sync) => b"S",
        Owed::Change(Action::Remove { dir: false }) => b"F",
        Owed::Change(Action::Remove { dir: true }) => b"D",
        Owed::Change(Action::Replace) => b"R",
        Owed::Change(Action::Tree) => b"T",
        // An arrival is never pending; were it owed, sending it only where it is missing
        // is what cannot replace a newer version.
        Owed::Change(Action::Created | Action::Arrived) => b"C",
        Owed::FullSync => b"A",
    }
}

fn owed_from(code: &[u8]) -> Option<Owed> {
    Some(match code {
        b"S" => Owed::Change(Action::Sync),
        b"F" => Owed::Change(Action::Remove { dir: false }),
        b"D" => Owed::Change(Action::Remove { dir: true }),
        b"R" => Owed::Change(Action::Replace),
        b"T" => Owed::Change(Action::Tree),
        b"C" => Owed::Change(Action::Created),
        b"A" => Owed::FullSync,
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

    /// Takes the directory's lock (`flock` on `lock`, which holds the owner's PID) for as
    /// long as the returned file stays open, waiting up to `patience` for it: a daemon
    /// that was just killed may still have children between fork and exec (they hold a
    /// copy of the descriptor until they are gone). Another live daemon holding it is an
    /// error that names its PID.
    pub fn lock(&self, patience: std::time::Duration) -> io::Result<File> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(LOCK);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let deadline = std::time::Instant::now() + patience;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is passed.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another sersyncd (PID {}); give each instance a state \
                         directory of its own (--state-dir)",
                        self.dir.display(),
                        holder.trim()
                    ),
                ));
            }
            return Err(err);
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(file)
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
            _ => crate::atomic_file::sync_dir(&self.dir),
        }
    }

    /// Saves pending changes (replacing any earlier file; none means remove it).
    pub fn save_pending(&self, changes: &[SavedChange]) -> io::Result<()> {
        self.save_records(
            PENDING,
            MAGIC,
            changes.iter().map(|change| {
                vec![
                    change.lane.root.as_os_str().as_bytes(),
                    change.lane.remote_ip.as_bytes(),
                    change.lane.remote_name.as_bytes(),
                    owed_code(change.owed),
                    &change.path,
                ]
            }),
        )
    }

    /// Reads saved pending changes (an unreadable or foreign file yields an error, never
    /// a partial silent load).
    pub fn load_pending(&self) -> io::Result<Vec<SavedChange>> {
        let records = self.load_records(PENDING, MAGIC, 5, "pending-changes")?;
        records
            .into_iter()
            .map(|record| {
                let owed = owed_from(&record[3]).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: bad action code", self.dir.join(PENDING).display()),
                    )
                })?;
                Ok(SavedChange {
                    lane: LaneKey {
                        root: PathBuf::from(OsStr::from_bytes(&record[0])),
                        remote_ip: String::from_utf8_lossy(&record[1]).into_owned(),
                        remote_name: String::from_utf8_lossy(&record[2]).into_owned(),
                    },
                    owed,
                    path: record[4].clone(),
                })
            })
            .collect()
    }

    /// Saves which filesystem each root was on when first watched (see [`crate::guard`]).
    pub fn save_roots(&self, roots: &[(PathBuf, FsIdentity)]) -> io::Result<()> {
        self.save_records(
            ROOTS,
            ROOTS_MAGIC,
            roots.iter().map(|(root, fs)| {
                vec![
                    root.as_os_str().as_bytes(),
                    fs.fs_type.as_bytes(),
                    fs.source.as_bytes(),
                    &fs.fs_path,
                ]
            }),
        )
    }

    /// The recorded filesystems of the roots (none recorded yet: empty).
    pub fn load_roots(&self) -> io::Result<Vec<(PathBuf, FsIdentity)>> {
        let records = self.load_records(ROOTS, ROOTS_MAGIC, 4, "roots")?;
        Ok(records
            .into_iter()
            .map(|record| {
                (
                    PathBuf::from(OsStr::from_bytes(&record[0])),
                    FsIdentity {
                        fs_type: String::from_utf8_lossy(&record[1]).into_owned(),
                        source: String::from_utf8_lossy(&record[2]).into_owned(),
                        fs_path: record[3].clone(),
                    },
                )
            })
            .collect())
    }

    /// Saves the roots whose deletions are held (too many at once), with the reason, so
    /// that a restart keeps holding them until the operator releases them.
    pub fn save_held(&self, held: &[(PathBuf, String)]) -> io::Result<()> {
        self.save_records(
            HELD,
            HELD_MAGIC,
            held.iter()
                .map(|(root, reason)| vec![root.as_os_str().as_bytes(), reason.as_bytes()]),
        )
    }

    /// The roots whose deletions were held when the previous run stopped.
    pub fn load_held(&self) -> io::Result<Vec<(PathBuf, String)>> {
        let records = self.load_records(HELD, HELD_MAGIC, 2, "held-deletions")?;
        Ok(records
            .into_iter()
            .map(|record| {
                (
                    PathBuf::from(OsStr::from_bytes(&record[0])),
                    String::from_utf8_lossy(&record[1]).into_owned(),
                )
            })
            .collect())
    }

    /// Writes `name` as `magic` then NUL-terminated fields, record after record (no
    /// records: the file is removed).
    fn save_records<'a>(
        &self,
        name: &str,
        magic: &[u8],
        records: impl Iterator<Item = Vec<&'a [u8]>>,
    ) -> io::Result<()> {
        let path = self.dir.join(name);
        let mut out = magic.to_vec();
        for record in records {
            for field in record {
                out.extend_from_slice(field);
                out.push(0);
            }
        }
        if out.len() == magic.len() {
            return match fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => crate::atomic_file::sync_dir(&self.dir),
            };
        }
        write_atomically(&path, &out)
    }

    /// Reads what [`StateDir::save_records`] wrote, `width` fields a record (a missing
    /// file: none; a foreign or truncated one: an error naming it as a `what` file).
    fn load_records(
        &self,
        name: &str,
        magic: &[u8],
        width: usize,
        what: &str,
    ) -> io::Result<Vec<Vec<Vec<u8>>>> {
        let path = self.dir.join(name);
        let Some(bytes) = crate::trusted::read_state_file(&path)? else {
            return Ok(Vec::new());
        };
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a sersync {what} file", path.display()),
            )
        };
        let body = bytes.strip_prefix(magic).ok_or_else(invalid)?;
        let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
        let fields = &fields[..fields.len().saturating_sub(1)];
        if fields.len() % width != 0 {
            return Err(invalid());
        }
        Ok(fields
            .chunks(width)
            .map(|record| record.iter().map(|field| field.to_vec()).collect())
            .collect())
    }

    /// Removes the pending file once its contents are in memory (the `running` marker
    /// covers a crash from here on).
    pub fn discard_pending(&self) -> io::Result<()> {
        self.save_pending(&[])
    }
}

use crate::atomic_file::write_atomically;

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
                lane: LaneKey {
                    root: PathBuf::from("/srv/a b"),
                    remote_ip: "127.0.0.1".into(),
                    remote_name: "web".into(),
                },
                path: b"x\ny\xff".to_vec(),
                owed: Owed::Change(Action::Remove { dir: true }),
            },
            SavedChange {
                lane: LaneKey {
                    root: PathBuf::from("/srv/c"),
                    remote_ip: "::1".into(),
                    remote_name: "img".into(),
                },
                path: Vec::new(),
                owed: Owed::Change(Action::Replace),
            },
            SavedChange {
                lane: LaneKey {
                    root: PathBuf::from("/srv/c"),
                    remote_ip: "::1".into(),
                    remote_name: "img".into(),
                },
                path: b"dirty/dir".to_vec(),
                owed: Owed::Change(Action::Tree),
            },
            SavedChange {
                lane: LaneKey {
                    root: PathBuf::from("/srv/c"),
                    remote_ip: "::1".into(),
                    remote_name: "img".into(),
                },
                path: Vec::new(),
                owed: Owed::FullSync,
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

    #[test]
    fn a_second_holder_of_the_lock_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("sersync-lock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = StateDir::new(dir.clone());
        let first = state.lock(std::time::Duration::ZERO).expect("first lock");
        let err = state
            .lock(std::time::Duration::from_millis(200))
            .expect_err("second lock");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(
            err.to_string()
                .contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = state
            .lock(std::time::Duration::ZERO)
            .expect("lock after the first holder closed it");
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod roots_tests {
    use super::*;

    #[test]
    fn roots_round_trip() {
        let dir = std::env::temp_dir().join(format!("sersync-roots-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = StateDir::new(dir.clone());
        assert_eq!(
            state.load_roots().unwrap(),
            Vec::new(),
            "nothing recorded yet"
        );
        let roots = vec![
            (
                PathBuf::from("/srv/www"),
                FsIdentity {
                    fs_type: "tmpfs".into(),
                    source: "tmpfs".into(),
                    fs_path: b"/".to_vec(),
                },
            ),
            (
                PathBuf::from("/srv/odd\nname"),
                FsIdentity {
                    fs_type: "ext4".into(),
                    source: "/dev/sda1".into(),
                    fs_path: b"/srv/odd\nname".to_vec(),
                },
            ),
        ];
        state.save_roots(&roots).unwrap();
        assert_eq!(state.load_roots().unwrap(), roots);
        assert_eq!(state.load_held().unwrap(), Vec::new());
        let held = vec![(PathBuf::from("/srv/www"), "300 deletions".to_owned())];
        state.save_held(&held).unwrap();
        assert_eq!(state.load_held().unwrap(), held);
        state.save_held(&[]).unwrap();
        assert!(!dir.join(HELD).exists());
        fs::write(dir.join(ROOTS), b"something else").unwrap();
        assert!(state.load_roots().is_err(), "a foreign file is an error");
        fs::remove_dir_all(&dir).unwrap();
    }
}
