//! What "the replica equals the source" means here: the same paths, and for each the same
//! type, permission bits, symlink target, file contents, and mtime to the nanosecond for
//! files and symlinks (rsync -t keeps both). Directory mtimes are not compared: a
//! receiver changes a directory's mtime whenever it creates or removes an entry in it, and
//! rsync sets it back only for directories in the transfer (see README, "Guarantees").

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        len: u64,
        hash: u64,
    },
    Symlink {
        target: Vec<u8>,
        mtime: (i64, i64),
    },
    Other {
        mode: u32,
    },
    Unreadable(String),
}

impl Entry {
    fn describe(&self) -> String {
        match self {
            Entry::Dir { mode } => format!("dir {mode:04o}"),
            Entry::File {
                mode,
                mtime,
                len,
                hash,
            } => format!(
                "file {mode:04o} mtime {}.{:09} {len} bytes #{hash:016x}",
                mtime.0, mtime.1
            ),
            Entry::Symlink { target, mtime } => format!(
                "symlink -> \"{}\" mtime {}.{:09}",
                target.escape_ascii(),
                mtime.0,
                mtime.1
            ),
            Entry::Other { mode } => format!("special {mode:o}"),
            Entry::Unreadable(err) => format!("unreadable: {err}"),
        }
    }
}

pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// FNV-1a: enough to tell contents apart in a test.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn take(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, &[], &mut out);
    out
}

fn walk(dir: &Path, prefix: &[u8], out: &mut Snapshot) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            out.insert(
                prefix.to_vec(),
                Entry::Unreadable(format!("read_dir: {err}")),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let path = entry.path();
        let node = match std::fs::symlink_metadata(&path) {
            Err(err) => Entry::Unreadable(err.to_string()),
            Ok(meta) => {
                let mode = meta.mode() & 0o7777;
                let mtime = (meta.mtime(), meta.mtime_nsec());
                let kind = meta.file_type();
                if kind.is_symlink() {
                    match std::fs::read_link(&path) {
                        Ok(target) => Entry::Symlink {
                            target: target.as_os_str().as_bytes().to_vec(),
                            mtime,
                        },
                        Err(err) => Entry::Unreadable(err.to_string()),
                    }
                } else if kind.is_dir() {
                    walk(&path, &rel, out);
                    Entry::Dir { mode }
                } else if kind.is_file() {
                    match std::fs::read(&path) {
                        Ok(contents) => Entry::File {
                            mode,
                            mtime,
                            len: contents.len() as u64,
                            hash: hash(&contents),
                        },
                        Err(err) => Entry::Unreadable(err.to_string()),
                    }
                } else {
                    Entry::Other { mode: meta.mode() }
                }
            }
        };
        out.insert(rel, node);
    }
}

/// The differences, replica against source, one line each.
pub fn differences(source: &Snapshot, replica: &Snapshot) -> Vec<String> {
    let keys: BTreeSet<&Vec<u8>> = source.keys().chain(replica.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let name = format!("\"{}\"", key.escape_ascii());
        match (source.get(key), replica.get(key)) {
            (Some(s), Some(r)) if s == r => {}
            (Some(s), Some(r)) => out.push(format!(
                "{name}: source {}, replica {}",
                s.describe(),
                r.describe()
            )),
            (Some(s), None) => {
                out.push(format!("{name}: missing on the replica ({})", s.describe()))
            }
            (None, Some(r)) => out.push(format!("{name}: only on the replica ({})", r.describe())),
            (None, None) => {}
        }
    }
    out
}
