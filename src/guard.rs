//! Refusing to copy a disaster to the replicas.
//!
//! A run with deletions makes the remote look like the root. When the root is not what it
//! was — its filesystem is no longer mounted, so the path shows the (usually empty)
//! directory below the mount point — that run would wipe every replica. So before every
//! run that can delete on a remote (a full sync with `--delete`, the deletion run of a
//! batch) the job checks the root here:
//!
//! - **Identity**: the root must be the same directory of the same filesystem as when it
//!   was first watched: the filesystem's type and source from `/proc/self/mountinfo`, and
//!   the root's path *within* that filesystem (the mount's root joined with the rest of
//!   the path below the mount point). A raw `st_dev` is not an identity (every tmpfs
//!   mount gets a new one). Where the filesystem is mounted is not part of it either, so
//!   a sandbox that bind-mounts the root's parent (systemd's `ProtectHome=read-only`) sees
//!   the same identity as a run by hand; an unmounted root shows the directory below the
//!   mount point, on the parent filesystem, or at another path within it.
//! - **Emptiness** (full syncs only): a root with no entries at all while the remote has
//!   some is refused, which also covers a first start with nothing recorded yet.
//! - **Share and count** (`<deleteGuard>`): live deletions are counted by the daemon over
//!   a sliding minute; a full sync's are counted beforehand by a dry run of it
//!   ([`FullSyncPreview`]), against the entries the remote has.
//!
//! A refused run is held, never skipped: the daemon shows the lane as guarded, retries,
//! and runs it once the check passes (the filesystem is back), or when the operator forces
//! it (`sersyncctl full-sync --force`), which also records the root's filesystem anew.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::DeleteGuard;

/// Which directory of which filesystem a root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub fs_type: String,
    pub source: String,
    /// The root's path within its filesystem (`/` for the top of a mounted filesystem).
    pub fs_path: Vec<u8>,
}

impl std::fmt::Display for FsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} {}",
            String::from_utf8_lossy(&self.fs_path),
            self.fs_type,
            self.source
        )
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u64, u64),
    /// The directory of the filesystem that is mounted (not `/` for bind mounts).
    pub mount_root: Vec<u8>,
    pub mount_point: Vec<u8>,
    pub fs_type: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\012` for a newline, ...).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut at = 0;
    while at < field.len() {
        let digits = field.get(at + 1..at + 4);
        if field[at] == b'\\' && digits.is_some_and(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            let d = digits.unwrap_or_default();
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            at += 4;
        } else {
            out.push(field[at]);
            at += 1;
        }
    }
    out
}

/// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let separator = fields.iter().position(|f| *f == b"-")?;
            if separator < 6 || fields.len() < separator + 3 {
                return None;
            }
            let dev = std::str::from_utf8(fields[2]).ok()?;
            let (major, minor) = dev.split_once(':')?;
            Some(Mount {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                mount_root: unescape(fields[3]),
                mount_point: unescape(fields[4]),
                fs_type: String::from_utf8_lossy(&unescape(fields[separator + 1])).into(),
                source: String::from_utf8_lossy(&unescape(fields[separator + 2])).into(),
            })
        })
        .collect()
}

/// Whether the absolute `path` is the absolute `prefix` or below it (everything is below
/// `/`): the relative-path rule once the common leading slash is dropped.
fn path_within(path: &[u8], prefix: &[u8]) -> bool {
    fn relative(path: &[u8]) -> &[u8] {
        path.strip_prefix(b"/").unwrap_or(path)
    }
    crate::relpath::is_at_or_below(relative(path), relative(prefix))
}

/// The mount a (canonical) path on device `dev` lives on: among the mounts of that device,
/// the deepest whose mount point contains the path (a device mounted twice, or bind
/// mounted, has several lines).
pub fn mount_of(mounts: &[Mount], dev: (u64, u64), path: &[u8]) -> Option<FsIdentity> {
    let deepest = |same_device: bool| {
        mounts
            .iter()
            .filter(|m| (!same_device || m.dev == dev) && path_within(path, &m.mount_point))
            .max_by_key(|m| m.mount_point.len())
    };
    // btrfs reports a subvolume's own device number in `st_dev`, not the mount's: then the
    // deepest mount point that holds the path is the mount.
    let mount = deepest(true).or_else(|| deepest(false))?;
    let below = if mount.mount_point == b"/" {
        path.strip_prefix(b"/").unwrap_or(path)
    } else {
        let rest = &path[mount.mount_point.len()..];
        rest.strip_prefix(b"/").unwrap_or(rest)
    };
    let mut fs_path = mount.mount_root.clone();
    if !below.is_empty() {
        if fs_path.last() != Some(&b'/') {
            fs_path.push(b'/');
        }
        fs_path.extend_from_slice(below);
    }
    Some(FsIdentity {
        fs_type: mount.fs_type.clone(),
        source: mount.source.clone(),
        fs_path,
    })
}

/// The filesystem `root` lives on now. A root that is a symlink (`current -> releases/7`)
/// is the symlink: pointing it at another release does not make it another root.
pub fn identity_of(root: &Path) -> io::Result<FsIdentity> {
    let meta = std::fs::symlink_metadata(root)?;
    let canonical = match (root.parent(), root.file_name()) {
        (Some(parent), Some(name)) if meta.file_type().is_symlink() => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)?.join(name)
        }
        _ => std::fs::canonicalize(root)?,
    };
    let dev = (
        u64::from(libc::major(meta.dev())),
        u64::from(libc::minor(meta.dev())),
    );
    let mounts = parse_mountinfo(&std::fs::read("/proc/self/mountinfo")?);
    mount_of(&mounts, dev, canonical.as_os_str().as_bytes()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no mount of device {}:{} holds {}",
                dev.0,
                dev.1,
                canonical.display()
            ),
        )
    })
}

/// Why a run that could delete on a remote must not run now (`None`: it may): the root
/// is not on its recorded filesystem, or lacks the configured sentinel file.
pub fn refusal(
    root: &Path,
    recorded: Option<&FsIdentity>,
    sentinel: Option<&str>,
) -> Option<String> {
    if let Some(sentinel) = sentinel {
        if std::fs::symlink_metadata(root.join(sentinel)).is_err() {
            return Some(format!(
                "the sentinel file {sentinel} is missing from the root (not mounted?)"
            ));
        }
    }
    let now = match identity_of(root) {
        Ok(now) => now,
        Err(err) => {
            return Some(format!(
                "cannot tell which filesystem holds the root: {err}"
            ));
        }
    };
    match recorded {
        Some(recorded) if *recorded != now => Some(format!(
            "the root is {now} now, not {recorded} as when it was first watched (not mounted?)"
        )),
        _ => None,
    }
}

/// How many entries the tree under `root` has, counting no further than `limit` (so that
/// the cost is bounded by what the caller needs to know).
pub fn count_entries(root: &Path, limit: usize) -> usize {
    let mut count = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            count += 1;
            if count >= limit {
                return count;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    count
}

/// Whether `deleted` deletions (in the window) remove more than `share` percent of a tree
/// that still has `remaining` entries. `remaining` may be a count cut short at
/// [`remaining_needed`]: that many is enough to say no.
pub fn too_many_deletions(deleted: usize, remaining: usize, share: u32, minimum: u32) -> bool {
    share > 0
        && share < 100
        && deleted >= minimum as usize
        && remaining < remaining_needed(deleted, share)
}

/// How many entries must remain for `deleted` to be at most `share` percent of the tree.
pub fn remaining_needed(deleted: usize, share: u32) -> usize {
    let share = share.clamp(1, 99) as usize;
    (deleted * (100 - share)).div_ceil(share)
}

/// What a full sync would do to a remote, from the output of the same run with
/// `--dry-run --itemize-changes --stats` (rsync ≥ 3.1 prints the created count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullSyncPreview {
    /// Entries the remote would lose (the `*deleting` lines).
    pub deleted: usize,
    /// Entries of the remote that the full sync keeps (the root's entries, less those it
    /// would create); `None` when rsync printed no counts.
    pub kept: Option<usize>,
}

impl FullSyncPreview {
    pub fn parse(stdout: &[u8]) -> FullSyncPreview {
        let lines = || stdout.split(|&b| b == b'\n');
        let number = |label: &[u8]| {
            lines().find_map(|line| {
                let rest = line.strip_prefix(label)?;
                let digits: String = rest
                    .iter()
                    .take_while(|b| b.is_ascii_digit() || matches!(b, b',' | b'.' | b' '))
                    .filter(|b| b.is_ascii_digit())
                    .map(|&b| char::from(b))
                    .collect();
                digits.parse::<usize>().ok()
            })
        };
        // `Number of deleted files` is the receiver's own count; the `*deleting` lines
        // are there even without it (and the user's `--out-format` changes them).
        let deleted = lines()
            .filter(|line| line.starts_with(b"*deleting "))
            .count()
            .max(number(b"Number of deleted files: ").unwrap_or(0));
        let kept = match (
            number(b"Number of files: "),
            number(b"Number of created files: "),
        ) {
            (Some(files), Some(created)) => Some(files.saturating_sub(created)),
            _ => None,
        };
        FullSyncPreview { deleted, kept }
    }

    /// Why `<deleteGuard>` holds this full sync back, if it does.
    pub fn refusal(&self, guard: &DeleteGuard) -> Option<String> {
        let deleted = self.deleted;
        let Some(kept) = self.kept else {
            // Fail closed: not knowing is not a reason to delete.
            return Some(
                "cannot tell what a full sync would delete (its dry run printed no \
                 `--stats` counts: is `-q` or `--info=stats0` in commonParams?): held \
                 until released with `sersyncctl full-sync --force`"
                    .to_owned(),
            );
        };
        let why = if let Some(maximum) = guard.maximum.filter(|&m| deleted > m as usize) {
            format!(
                "a full sync would delete {deleted} entries on the remote, more than the \
                 {maximum} <deleteGuard maximum> allows"
            )
        } else {
            if !too_many_deletions(deleted, kept, guard.share, guard.minimum) {
                return None;
            }
            format!(
                "a full sync would delete {deleted} of the remote's {} entries, more than {}%",
                deleted + kept,
                guard.share
            )
        };
        Some(format!(
            "{why}: held until released with `sersyncctl full-sync --force`"
        ))
    }
}

/// Whether `<deleteGuard>` limits deletions by share or count at all.
pub fn limits_deletions(guard: &DeleteGuard) -> bool {
    (guard.share > 0 && guard.share < 100) || guard.maximum.is_some()
}

/// Whether `deleted` deletions are more than `<deleteGuard maximum>` allows, whatever
/// share of the tree they are.
pub fn over_maximum(deleted: usize, guard: &DeleteGuard) -> bool {
    guard
        .maximum
        .is_some_and(|maximum| deleted > maximum as usize)
}

/// Whether the root has no entries at all.
pub fn is_empty(root: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(root)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /proc rw,nosuid shared:12 - proc proc rw
40 22 0:41 / /srv/www rw,relatime shared:20 - tmpfs tmpfs rw,size=1024k
41 22 8:1 /var/data /srv/bind rw,relatime shared:1 - ext4 /dev/sda1 rw
42 22 0:42 / /mnt/with\\040space rw master:3 - nfs4 host:/export\\040x rw
bad line
";

    fn id(fs_path: &str, fs_type: &str, source: &str) -> FsIdentity {
        FsIdentity {
            fs_type: fs_type.into(),
            source: source.into(),
            fs_path: fs_path.into(),
        }
    }

    #[test]
    fn mountinfo_lines() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5, "{mounts:?}");
        assert_eq!(mounts[2].dev, (0, 41));
        assert_eq!(mounts[2].mount_point, b"/srv/www");
        assert_eq!(mounts[3].mount_root, b"/var/data");
        assert_eq!(mounts[4].mount_point, b"/mnt/with space");
        assert_eq!(mounts[4].source, "host:/export x");
    }

    #[test]
    fn the_mount_of_a_path() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let table: &[((u64, u64), &str, Option<FsIdentity>)] = &[
            ((0, 41), "/srv/www", Some(id("/", "tmpfs", "tmpfs"))),
            (
                (0, 41),
                "/srv/www/site",
                Some(id("/site", "tmpfs", "tmpfs")),
            ),
            // The mount point itself with nothing mounted: the parent filesystem.
            (
                (8, 1),
                "/srv/www",
                Some(id("/srv/www", "ext4", "/dev/sda1")),
            ),
            // A device mounted twice: the deepest mount that holds the path, and the path
            // within the filesystem is the same however it is reached.
            (
                (8, 1),
                "/srv/bind/x",
                Some(id("/var/data/x", "ext4", "/dev/sda1")),
            ),
            (
                (8, 1),
                "/var/data/x",
                Some(id("/var/data/x", "ext4", "/dev/sda1")),
            ),
            (
                (8, 1),
                "/srv/binder",
                Some(id("/srv/binder", "ext4", "/dev/sda1")),
            ),
            // A device no mount reports (a btrfs subvolume): the deepest mount point.
            ((9, 9), "/srv/www/x", Some(id("/x", "tmpfs", "tmpfs"))),
        ];
        for (dev, path, want) in table {
            assert_eq!(
                &mount_of(&mounts, *dev, path.as_bytes()),
                want,
                "{path} on {dev:?}"
            );
        }
    }

    #[test]
    fn deletion_shares() {
        // (deleted, remaining, share %, minimum, held)
        let table = [
            (100, 200, 50, 100, false), // a third of the tree
            (150, 150, 50, 100, false), // exactly half
            (151, 149, 50, 100, true),  // more than half
            (99, 0, 50, 100, false),    // below the minimum
            (180, 120, 50, 100, true),  // 60 %
            (30, 270, 50, 10, false),   // 10 %
            (30, 270, 5, 10, true),     // 10 % over a 5 % share
            (1000, 0, 0, 1, false),     // share 0: off
            (1000, 0, 100, 1, false),   // 100 %: everything may go
        ];
        for (deleted, remaining, share, minimum, held) in table {
            assert_eq!(
                too_many_deletions(deleted, remaining, share, minimum),
                held,
                "{deleted} deleted, {remaining} left, share {share}, minimum {minimum}"
            );
        }
        assert_eq!(remaining_needed(151, 50), 151);
        assert_eq!(remaining_needed(10, 20), 40);
    }

    #[test]
    fn full_sync_previews() {
        const DRY_RUN: &[u8] = b"*deleting   b/2\n*deleting   b/1\n*deleting   b/\n\
            *deleting   a/9\n>f+++++++++ x\n>f+++++++++ a/2\n>f+++++++++ a/3\n\n\
            Number of files: 6 (reg: 4, dir: 2)\nNumber of created files: 3 (reg: 3)\n\
            Number of deleted files: 4 (reg: 3, dir: 1)\n";
        let preview = FullSyncPreview::parse(DRY_RUN);
        assert_eq!(
            preview,
            FullSyncPreview {
                deleted: 4,
                kept: Some(3)
            }
        );
        let big = FullSyncPreview::parse(
            b"Number of files: 1,234,567 (reg: 1,000,000, dir: 234,567)\n\
              Number of created files: 0\n",
        );
        assert_eq!(big.kept, Some(1_234_567));
        assert_eq!(FullSyncPreview::parse(b"*deleting   a\n").kept, None);
        // The user's --out-format drops the `*deleting` lines, not the receiver's count.
        let reformatted = FullSyncPreview::parse(
            b"deleting b/1\nNumber of files: 10 (reg: 9, dir: 1)\n\
              Number of created files: 0\nNumber of deleted files: 5 (reg: 5)\n",
        );
        assert_eq!(
            reformatted,
            FullSyncPreview {
                deleted: 5,
                kept: Some(10)
            }
        );

        let guard = |share, minimum, maximum| DeleteGuard {
            share,
            minimum,
            maximum,
            sentinel: None,
        };
        let preview = |deleted, kept| FullSyncPreview { deleted, kept };
        // (preview, guard, words of the refusal or None when it runs)
        let table = [
            (
                preview(4, Some(3)),
                guard(50, 1, None),
                Some("4 of the remote's 7"),
            ),
            (preview(4, Some(3)), guard(50, 100, None), None), // below the minimum
            (preview(3, Some(3)), guard(50, 1, None), None),   // exactly half
            (preview(4, Some(3)), guard(0, 1, None), None),    // share off
            (preview(0, Some(0)), guard(50, 1, None), None),
            (
                preview(10, Some(1000)),
                guard(50, 1, Some(9)),
                Some("more than the 9"),
            ),
            (preview(0, None), guard(50, 1, None), Some("cannot tell")), // no counts
            (
                preview(600, Some(400)),
                guard(50, 100, None),
                Some("more than 50%"),
            ),
            (preview(100, Some(900)), guard(50, 100, None), None), // 10 %
        ];
        for (preview, guard, words) in table {
            let refusal = preview.refusal(&guard);
            match words {
                None => assert_eq!(refusal, None, "{preview:?} {guard:?}"),
                Some(words) => assert!(
                    refusal
                        .as_deref()
                        .is_some_and(|r| r.contains(words) && r.contains("--force")),
                    "{preview:?} {guard:?}: {refusal:?}"
                ),
            }
        }
    }

    #[test]
    fn a_symlinked_root_is_the_symlink() {
        let dir = std::env::temp_dir().join(format!("sersync-guard-link-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("release-1")).unwrap();
        std::fs::create_dir_all(dir.join("release-2")).unwrap();
        let current = dir.join("current");
        std::os::unix::fs::symlink("release-1", &current).unwrap();
        let before = identity_of(&current).unwrap();
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("release-2", &current).unwrap();
        assert_eq!(
            identity_of(&current).unwrap(),
            before,
            "a deploy is not another root"
        );
        assert_ne!(identity_of(&dir.join("release-1")).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(b"a\\040b\\012c\\134"), b"a b\nc\\");
        assert_eq!(unescape(b"trailing\\04"), b"trailing\\04");
        assert_eq!(unescape(b"\\999"), b"\\999");
    }

    #[test]
    fn the_live_root_filesystem_is_found_and_accepted() {
        let root = identity_of(Path::new("/")).expect("/ has a mount");
        assert_eq!(refusal(Path::new("/"), Some(&root), None), None);
        assert_eq!(refusal(Path::new("/"), Some(&root), Some("proc")), None);
        let missing = refusal(Path::new("/"), Some(&root), Some("no-such-sentinel"));
        assert!(missing.is_some_and(|m| m.contains("sentinel")));
        let other = id("/elsewhere", "tmpfs", "tmpfs");
        let refused = refusal(Path::new("/"), Some(&other), None).expect("refused");
        assert!(refused.contains("not /elsewhere of tmpfs"), "{refused}");
        assert!(refusal(Path::new("/nonexistent-root"), None, None).is_some());
    }
}
