//! Facts about the local tree that a job needs before it decides its runs: what is at a
//! path, what lies below a directory, what the filter excludes. Gathered here, by the
//! process side, just before the plan asks for them; the plan itself reads nothing.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::plan::Local;
use crate::config::Filter;
use crate::queue::Batch;

/// What is at each of the batch's paths, in the batch's order (see [`Local`]).
/// What is at each of the batch's paths; in two-way mode the version of each file is
/// recorded in `versions` (what this host had there, see `super::two_way`).
pub(super) fn entries(
    root: &Path,
    batch: &Batch,
    versions: Option<&super::two_way::Versions>,
) -> Vec<Local> {
    let mut ancestors_checked: HashMap<Vec<u8>, bool> = HashMap::new();
    batch
        .entries
        .iter()
        .map(|(path, _)| {
            if below_a_non_directory(root, path, &mut ancestors_checked) {
                return Local::BelowNonDirectory;
            }
            match std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(path))) {
                Ok(meta) => {
                    if let Some(versions) = versions {
                        versions.record_local(path, &meta);
                    }
                    if meta.is_dir() {
                        Local::Directory
                    } else if meta.is_file() {
                        Local::File { size: meta.len() }
                    } else {
                        Local::Other
                    }
                }
                Err(_) => Local::Missing,
            }
        })
        .collect()
}

/// Whether an ancestor of `path` (below the root) exists and is not a directory (a file,
/// a symlink — also one to a directory — or another type). `checked` caches the answer
/// per ancestor for one batch.
pub(super) fn below_a_non_directory(
    root: &Path,
    path: &[u8],
    checked: &mut HashMap<Vec<u8>, bool>,
) -> bool {
    crate::relpath::ancestors(path).any(|ancestor| match checked.get(ancestor) {
        Some(&known) => known,
        None => {
            let meta = std::fs::symlink_metadata(crate::relpath::absolute(root, ancestor));
            let known = meta.is_ok_and(|m| !m.is_dir());
            checked.insert(ancestor.to_vec(), known);
            known
        }
    })
}

/// Every path below directory `dir` (relative to `root`), not the ones the filter excludes
/// or what lies below them, sorted.
pub(super) fn local_subtree(root: &Path, dir: &[u8], filter: &Filter) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut stack: Vec<Vec<u8>> = vec![dir.to_vec()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(std::ffi::OsStr::from_bytes(&rel_dir)))
        else {
            continue;
        };
        for entry in entries.flatten() {
            let rel = crate::relpath::join(&rel_dir, entry.file_name().as_bytes());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if filter.excludes(&rel, is_dir) {
                continue;
            }
            if is_dir {
                stack.push(rel.clone());
            }
            found.push(rel);
        }
    }
    found.sort_unstable();
    found
}

/// The top-most local paths under `root` that the filter excludes (their subtrees are not
/// walked).
pub(super) fn excluded_paths(root: &Path, filter: &Filter) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = if rel_dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel_dir))
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let rel = crate::relpath::join(&rel_dir, name.as_bytes());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if filter.excludes(&rel, is_dir) {
                found.push(rel);
            } else if is_dir {
                stack.push(rel);
            }
        }
    }
    found
}

/// The directories directly under `root` (not symlinks to directories), sorted.
pub(super) fn top_level_dirs(root: &Path) -> Vec<Vec<u8>> {
    let mut dirs: Vec<Vec<u8>> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Of `paths` (relative to `root`), the ones that are gone now (nothing there, or a
/// non-directory where an ancestor should be), top-most only, sorted. An entry that cannot
/// be looked at for another reason (permissions) is not gone.
pub(super) fn gone(root: &Path, paths: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    crate::relpath::top_most(
        paths
            .into_iter()
            .filter(|path| !path.is_empty())
            .filter(|path| {
                std::fs::symlink_metadata(crate::relpath::absolute(root, path)).is_err_and(|err| {
                    err.kind() == std::io::ErrorKind::NotFound
                        || err.raw_os_error() == Some(nix::libc::ENOTDIR)
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_files_and_symlinks() {
        let root = std::env::temp_dir().join(format!("sersync-below-{}", std::process::id()));
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("f"), b"").unwrap();
        std::fs::write(root.join("d/file"), b"").unwrap();
        std::os::unix::fs::symlink("d", root.join("s")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        let table: &[(&str, bool)] = &[
            ("top", false),
            ("d/x", false),
            ("d/sub/x", false),
            ("missing/x", false),
            ("f/x", true),
            ("d/file/x/y", true),
            ("s/x", true),
            ("s/sub/x", true),
            ("dangling/x", true),
        ];
        let mut checked = HashMap::new();
        for (path, below) in table {
            assert_eq!(
                below_a_non_directory(&root, path.as_bytes(), &mut checked),
                *below,
                "{path}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Gone: nothing there, or a file where a directory was; the top-most only.
    #[test]
    fn gone_paths_are_the_top_most_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("kept/sub")).unwrap();
        std::fs::write(root.join("kept/file"), "x").unwrap();
        std::fs::write(root.join("was-a-dir"), "now a file").unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        let paths: Vec<Vec<u8>> = [
            "kept",
            "kept/sub",
            "kept/file",
            "kept/gone",
            "gone-dir",
            "gone-dir/x",
            "gone-dir/y/z",
            "was-a-dir/child",
            "a-b",
            "a/b",
            "a",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
        let gone: Vec<String> = super::gone(root, paths)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(
            gone,
            ["a-b", "a/b", "gone-dir", "kept/gone", "was-a-dir/child"]
        );
    }
}
