//! Paths relative to a watch root, as raw bytes: the one home of how they are joined,
//! nested and made absolute.
//!
//! Every module that names a changed file (watch, queue, sync, failure, guard, plugins)
//! speaks [`RelPath`]: no leading or trailing slash, components separated by single
//! slashes, the root itself as the empty path. File names are bytes, not UTF-8.
//! Comparisons work on whole components: `a/bc` is not below `a/b`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A path relative to its watch root, as raw bytes, without a leading or trailing slash.
/// The root itself is the empty path.
pub type RelPath = Vec<u8>;

/// `dir/name`, or `name` at the root.
pub fn join(dir: &[u8], name: &[u8]) -> RelPath {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    if !dir.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Whether `path` is `dir` or lies below it (every path lies below the root, `""`).
pub fn is_at_or_below(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// The paths strictly below `dir` in byte order: from `dir/` to `dir0` (exclusive), as
/// `'0'` follows `'/'`. For a range over sorted paths instead of a scan. `dir` is not the
/// root.
pub fn below_range(dir: &[u8]) -> std::ops::Range<RelPath> {
    let mut from = dir.to_vec();
    from.push(b'/');
    let mut to = dir.to_vec();
    to.push(b'/' + 1);
    from..to
}

/// The proper ancestors of `path`, nearest last, without the root: `a`, `a/b` for `a/b/c`.
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'/')
        .map(move |(at, _)| &path[..at])
}

/// Of `paths`, those with no ancestor among them (a subtree stands for what is below it),
/// sorted and without duplicates.
pub fn top_most(mut paths: Vec<RelPath>) -> Vec<RelPath> {
    let all: std::collections::HashSet<RelPath> = paths.iter().cloned().collect();
    paths.retain(|path| !ancestors(path).any(|ancestor| all.contains(ancestor)));
    paths.sort_unstable();
    paths.dedup();
    paths
}

/// `path` under `root` on this machine (the root itself for the empty path), with one
/// slash between them whatever `root` ends with.
pub fn absolute(root: &Path, path: &[u8]) -> PathBuf {
    if path.is_empty() {
        return root.to_path_buf();
    }
    let root = root.as_os_str().as_bytes();
    let mut abs = Vec::with_capacity(root.len() + 1 + path.len());
    abs.extend_from_slice(root);
    if abs.last() != Some(&b'/') {
        abs.push(b'/');
    }
    abs.extend_from_slice(path);
    PathBuf::from(OsStr::from_bytes(&abs))
}

/// The part of the absolute `abs` below `root` (`""` for the root itself), if it is there:
/// whole components only.
pub fn strip_root<'a>(abs: &'a [u8], root: &Path) -> Option<&'a [u8]> {
    let root = root.as_os_str().as_bytes();
    let root = root.strip_suffix(b"/").unwrap_or(root);
    let rest = abs.strip_prefix(root)?;
    match rest {
        [] => Some(rest),
        [b'/', tail @ ..] => Some(tail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins() {
        for (dir, name, want) in [
            (&b""[..], &b"a"[..], &b"a"[..]),
            (b"a/b", b"c", b"a/b/c"),
            (b"a", b"-x y", b"a/-x y"),
        ] {
            assert_eq!(join(dir, name), want);
        }
    }

    #[test]
    fn nesting_is_by_whole_components() {
        for (path, dir, want) in [
            (&b"a/b"[..], &b"a"[..], true),
            (b"a", b"a", true),
            (b"ab", b"a", false),
            (b"a", b"a/b", false),
            (b"a/b/c", b"a/b", true),
            (b"a/bc", b"a/b", false),
            (b"anything", b"", true),
            (b"", b"", true),
            (b"", b"a", false),
        ] {
            assert_eq!(is_at_or_below(path, dir), want, "{path:?} below {dir:?}");
        }
    }

    #[test]
    fn the_range_below_a_directory_holds_exactly_its_descendants() {
        let paths: std::collections::BTreeSet<&[u8]> = [
            &b"a"[..],
            b"a b",
            b"a-",
            b"a.",
            b"a/",
            b"a/b",
            b"a/b/c",
            b"a/\xff",
            b"a0",
            b"ab",
        ]
        .into_iter()
        .collect();
        let below = below_range(b"a");
        let inside: Vec<&[u8]> = paths
            .range::<[u8], _>((
                std::ops::Bound::Included(below.start.as_slice()),
                std::ops::Bound::Excluded(below.end.as_slice()),
            ))
            .copied()
            .collect();
        assert_eq!(inside, vec![&b"a/"[..], b"a/b", b"a/b/c", b"a/\xff"]);
        for path in &inside {
            assert!(is_at_or_below(path, b"a") || *path == b"a/");
        }
    }

    #[test]
    fn ancestors_nearest_last() {
        let got: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(got, vec![&b"a"[..], b"a/b"]);
        assert_eq!(ancestors(b"a").count(), 0);
        assert_eq!(ancestors(b"").count(), 0);
    }

    #[test]
    fn absolute_and_back() {
        for (root, path, want) in [
            ("/srv/www", &b"a/b"[..], "/srv/www/a/b"),
            ("/srv/www/", b"a", "/srv/www/a"),
            ("/", b"etc/x", "/etc/x"),
            ("/srv/www", b"", "/srv/www"),
        ] {
            let abs = absolute(Path::new(root), path);
            assert_eq!(abs, Path::new(want));
            assert_eq!(
                strip_root(abs.as_os_str().as_bytes(), Path::new(root)),
                Some(path),
                "{root} {path:?}"
            );
        }
        assert_eq!(strip_root(b"/srv/wwwx/a", Path::new("/srv/www")), None);
        assert_eq!(strip_root(b"/srv", Path::new("/srv/www")), None);
    }
}
