//! Tree snapshots and the bounded "replica equals source" wait.
//!
//! Names are compared as raw bytes (newlines and invalid UTF-8 included) and shown with
//! escapes in messages.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::POLL;

/// What one path is, as far as replication is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        contents: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
    },
    Other {
        mode: u32,
    },
    /// Vanished or unreadable while walking (e.g. an rsync temp file being renamed).
    Error(String),
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir { mode } => format!("dir {mode:04o}"),
            Node::File { mode, contents } => format!(
                "file {mode:04o}, {} bytes {}",
                contents.len(),
                show(&contents[..contents.len().min(40)])
            ),
            Node::Symlink { target } => format!("symlink -> {}", show(target)),
            Node::Other { mode } => format!("special file (st_mode {mode:o})"),
            Node::Error(err) => format!("unreadable: {err}"),
        }
    }
}

type Snapshot = BTreeMap<Vec<u8>, Node>;

/// A name with non-printable bytes escaped (`\n`, `\xff`).
fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn snapshot(root: &Path, ignore: &dyn Fn(&[u8]) -> bool) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, &[], ignore, &mut out);
    out
}

fn walk(dir: &Path, prefix: &[u8], ignore: &dyn Fn(&[u8]) -> bool, out: &mut Snapshot) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            out.insert(prefix.to_vec(), Node::Error(format!("read_dir: {err}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                out.insert(prefix.to_vec(), Node::Error(format!("read_dir: {err}")));
                continue;
            }
        };
        let name = entry.file_name();
        let mut relative = prefix.to_vec();
        if !relative.is_empty() {
            relative.push(b'/');
        }
        relative.extend_from_slice(name.as_bytes());
        if ignore(&relative) {
            continue;
        }
        let path = entry.path();
        let node = match std::fs::symlink_metadata(&path) {
            Err(err) => Node::Error(err.to_string()),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                let kind = meta.file_type();
                if kind.is_symlink() {
                    match std::fs::read_link(&path) {
                        Ok(target) => Node::Symlink {
                            target: target.as_os_str().as_bytes().to_vec(),
                        },
                        Err(err) => Node::Error(err.to_string()),
                    }
                } else if kind.is_dir() {
                    walk(&path, &relative, ignore, out);
                    Node::Dir { mode }
                } else if kind.is_file() {
                    match std::fs::read(&path) {
                        Ok(contents) => Node::File { mode, contents },
                        Err(err) => Node::Error(err.to_string()),
                    }
                } else {
                    Node::Other {
                        mode: meta.permissions().mode(),
                    }
                }
            }
        };
        out.insert(relative, node);
    }
}

/// Human-readable differences between two snapshots (replica relative to source).
fn differences(source: &Snapshot, replica: &Snapshot) -> Vec<String> {
    let keys: BTreeSet<&Vec<u8>> = source.keys().chain(replica.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        match (source.get(key), replica.get(key)) {
            (Some(s), Some(r)) if s == r => {}
            (Some(s), Some(r)) => out.push(format!(
                "{}: source has {}, replica has {}",
                show(key),
                s.describe(),
                r.describe()
            )),
            (Some(s), None) => out.push(format!(
                "{}: missing on the replica (source has {})",
                show(key),
                s.describe()
            )),
            (None, Some(r)) => out.push(format!(
                "{}: only on the replica ({})",
                show(key),
                r.describe()
            )),
            (None, None) => unreachable!(),
        }
    }
    out
}

/// A bounded wait until a replica equals its source.
pub struct Converge<'a> {
    source: &'a Path,
    replica: &'a Path,
    timeout: Duration,
    ignore: &'a dyn Fn(&[u8]) -> bool,
}

impl<'a> Converge<'a> {
    /// `ignore` gets every relative path (no leading slash) on both sides; an ignored
    /// directory is skipped with its subtree.
    pub fn new(source: &'a Path, replica: &'a Path, timeout: Duration) -> Self {
        Converge {
            source,
            replica,
            timeout,
            ignore: &|_| false,
        }
    }

    pub fn ignoring(mut self, ignore: &'a dyn Fn(&[u8]) -> bool) -> Self {
        self.ignore = ignore;
        self
    }

    /// Polls every 50 ms; panics with the first 20 differences on timeout. Returns how long
    /// it took.
    pub fn wait(self) -> Duration {
        let start = Instant::now();
        let deadline = start + self.timeout;
        loop {
            let source = snapshot(self.source, self.ignore);
            let replica = snapshot(self.replica, self.ignore);
            let diff = differences(&source, &replica);
            if diff.is_empty() {
                return start.elapsed();
            }
            if Instant::now() >= deadline {
                let shown = diff
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ");
                panic!(
                    "replica {} did not converge to source {} within {:?}: {} difference(s) \
                     ({} paths on the source, {} on the replica), first ones:\n  {shown}",
                    self.replica.display(),
                    self.source.display(),
                    self.timeout,
                    diff.len(),
                    source.len(),
                    replica.len(),
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Waits (bounded) until `replica` has exactly the paths, types, contents, permission bits
/// and symlink targets of `source`.
pub fn wait_converged(source: &Path, replica: &Path, timeout: Duration) -> Duration {
    Converge::new(source, replica, timeout).wait()
}

/// [`wait_converged`], skipping the relative paths for which `ignore` is true.
pub fn wait_converged_ignoring(
    source: &Path,
    replica: &Path,
    timeout: Duration,
    ignore: &dyn Fn(&[u8]) -> bool,
) -> Duration {
    Converge::new(source, replica, timeout)
        .ignoring(ignore)
        .wait()
}

/// Panics if `path` exists (even as a dangling symlink) at any time during `duration`.
pub fn assert_never_appears(path: &Path, duration: Duration) {
    assert_none_appear(&[path.to_owned()], duration);
}

/// [`assert_never_appears`] for several paths watched at the same time.
pub fn assert_none_appear(paths: &[PathBuf], duration: Duration) {
    let deadline = Instant::now() + duration;
    loop {
        for path in paths {
            assert!(
                std::fs::symlink_metadata(path).is_err(),
                "{} appeared but must never exist",
                show(path.as_os_str().as_bytes())
            );
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Every path under `root` (recursively, not following symlinks) whose last component is
/// exactly `name`; `root` itself included if it matches.
pub fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if root
        .file_name()
        .is_some_and(|n| n.as_bytes() == name.as_bytes())
    {
        found.push(root.to_owned());
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            found.extend(find_named(&path, name));
        } else if entry.file_name().as_bytes() == name.as_bytes() {
            found.push(path);
        }
    }
    found
}
