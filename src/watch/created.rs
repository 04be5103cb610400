//! What a created file needs, shared by both backends: whether a new non-directory is
//! synced at once, and which path the anonymous name of an `O_TMPFILE` descriptor stands
//! for.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::RootId;
use crate::relpath::RelPath;

/// How many recently created files are remembered by inode (for `O_TMPFILE` links).
const RECENT_CREATES: usize = 4096;

/// What an event's name says about `O_TMPFILE` (see [`RecentCreates::tmpfile_link`]).
#[derive(Debug)]
pub(super) enum Tmpfile {
    /// A name like any other.
    No,
    /// The descriptor of a file linked in as this path.
    LinkedAs(RootId, RelPath),
    /// The descriptor of a file with no name (never linked, or linked too long ago).
    Anonymous,
}

/// Inode → path of regular files created lately and not synced on creation. A file made
/// with `open(dir, O_TMPFILE)` + `linkat` is written through a descriptor whose name is
/// `#<inode>`: its close-write event never names the file.
#[derive(Debug, Default)]
pub(super) struct RecentCreates {
    by_inode: HashMap<u64, (RootId, RelPath)>,
}

impl RecentCreates {
    /// Whether a created non-directory at `abs` (`rel` under `root`) needs a sync now,
    /// without waiting for a close-write that will never come: symlinks, fifos, device
    /// nodes, and a name given to an inode that existed before (a hard link, a linked
    /// `O_TMPFILE`). Its link count tells only while the other name lasts; its ctime after
    /// its mtime tells either way (a link changes the ctime, a file being written moves
    /// both together). Other regular files are remembered by inode for
    /// [`RecentCreates::tmpfile_link`].
    pub fn needs_sync(&mut self, abs: &Path, root: RootId, rel: &[u8]) -> bool {
        match std::fs::symlink_metadata(abs) {
            Ok(meta) if !meta.is_file() || meta.nlink() > 1 => true,
            Ok(meta) if (meta.ctime(), meta.ctime_nsec()) > (meta.mtime(), meta.mtime_nsec()) => {
                true
            }
            Ok(meta) => {
                if self.by_inode.len() >= RECENT_CREATES {
                    self.by_inode.clear();
                }
                self.by_inode.insert(meta.ino(), (root, rel.to_vec()));
                false
            }
            Err(_) => false,
        }
    }

    /// An event named `#<inode>` (at `abs`) that names no file is the anonymous name of an
    /// `O_TMPFILE` descriptor: the file it became (if it was linked in lately) is the path
    /// that changed; one never linked has no path.
    pub fn tmpfile_link(&self, abs: &Path, name: &[u8]) -> Tmpfile {
        let Some(digits) = name.strip_prefix(b"#") else {
            return Tmpfile::No;
        };
        let Some(ino) = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            return Tmpfile::No;
        };
        if std::fs::symlink_metadata(abs).is_ok() {
            return Tmpfile::No; // a real file with that name
        }
        match self.by_inode.get(&ino) {
            Some((root, path)) => Tmpfile::LinkedAs(*root, path.clone()),
            None => Tmpfile::Anonymous,
        }
    }
}
