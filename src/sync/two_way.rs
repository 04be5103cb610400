//! Two-way mode (`<twoWay start="true"/>`): two hosts, each running sersyncd that pushes
//! to the other's rsync daemon, converge without echo loops, without blind deletions and
//! without silently dropping the losing side of a conflict.
//!
//! Why each rule holds (the argv are in [`super::argv`], the order of runs in
//! `super::plan`, the recognition of arrivals in `crate::watch`):
//!
//! - **No echo.** What B's rsync daemon receives from A, B's watcher sees. Sent back, a
//!   copy is stale the moment A writes again: rsync's `--update` keeps a receiver's file
//!   only when it is newer by whole seconds, so the echo of a first version would replace
//!   a second one written within the same second. Every two-way run therefore writes
//!   through [`INCOMING`] (`--temp-dir`): rsync creates each file there and renames it
//!   into place, and the watcher pairs that rename by its cookie (`Action::Arrived`):
//!   nothing is sent back, and a change still pending for the path is void. The soft-delete
//!   move of the file it replaced, just before, is dropped with it. Only runs that name
//!   the directory write through it, so a local `rsync` into the tree is not mistaken for
//!   the peer. Files found in a directory the watcher had not watched yet cannot be told
//!   apart: they are sent only where the peer lacks them (`Action::Created`,
//!   `--ignore-existing`).
//! - **Newest wins.** Every send passes `--update`: a file that is newer on the receiver
//!   is not replaced. Sends compare contents (`--checksum`): an unchanged file moves no
//!   data.
//! - **Nothing lost.** `<softDelete>` is required: whatever a run replaces or deletes on a
//!   receiver (the older side of a conflict included) is moved to its dated directory
//!   there. The directory is not watched, sent or pulled.
//! - **A deletion never removes a version this host did not have.** Before a deletion
//!   run, the targets on the peer are listed ([`super::argv::deletion_listing`]); an entry that is
//!   neither the version this host last had ([`Versions`]) nor older than the deletion
//!   ([`newer_than`]) is protected from the run and pulled back here, so both sides keep
//!   it. A modification in the moments between the listing and the deletion run loses to
//!   the deletion and is kept in the peer's soft-delete directory.
//! - **Full syncs reconcile, never delete.** A full sync (or a dirty directory) is pushed
//!   with `--update` and no `--delete`, then pulled the same way: afterwards each side has
//!   the union, the newer version of each file. A deletion this host did not see (made
//!   while sersyncd was down, or lost in an overflow) comes back from the peer:
//!   resurrection is the safe failure.
//!
//! What is refused in `commonParams` is in [`refused_option`]; `<filter>` is refused by
//! the config (what is pulled cannot be filtered by sersyncd's regexes).

/// The directory at the top of each root where rsync writes what it receives
/// (`--temp-dir`) before renaming it into place: the watcher tells the peer's files by it.
pub const INCOMING: &str = ".sersync-incoming";

/// Makes the root's [`INCOMING`] directory if it is missing, owned like the root and with
/// its mode, so that whoever the peer's rsync runs as here can write in it.
pub fn prepare_incoming(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = root.join(INCOMING);
    let meta = std::fs::metadata(root)?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(err) => return Err(err),
    }
    std::os::unix::fs::chown(&dir, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    )
}

/// Why `word` (one of `commonParams`' words) cannot be used in two-way mode, or `None`.
pub fn refused_option(word: &str) -> Option<&'static str> {
    const DELETES: &str = "it deletes on the peer what this host lacks, which in two-way mode is what the peer \
         created (sersyncd sends deletions itself, and never deletes in full syncs)";
    const FORCES: &str = "it makes every echo a transfer that rewrites the peer's file, which \
         the peer then sends back: a loop";
    const SKIPS: &str = "it keeps an older file on the receiver when the sender's is newer: newest wins \
         needs rsync's comparison of times and contents";
    const BACKUP: &str = "sersyncd sets the backup options itself, from <softDelete>";
    const IN_PLACE: &str = "sersyncd tells the files the peer sent by the directory rsync \
         writes them in before renaming them into place (--temp-dir); written elsewhere, \
         each would be sent back";
    if word.starts_with("--del") || word == "--remove-source-files" {
        return Some(DELETES);
    }
    match word {
        "--ignore-times" => return Some(FORCES),
        "--size-only" | "--ignore-existing" | "--existing" | "--ignore-non-existing" => {
            return Some(SKIPS);
        }
        "--backup" => return Some(BACKUP),
        "--inplace" | "--append" | "--append-verify" | "--delay-updates" => {
            return Some(IN_PLACE);
        }
        _ => {}
    }
    if word.starts_with("--backup-dir") || word.starts_with("--suffix") {
        return Some(BACKUP);
    }
    if word.starts_with("--temp-dir") || word.starts_with("--partial-dir") {
        return Some(IN_PLACE);
    }
    // A cluster of short options, up to the first letter that takes an argument.
    if let Some(letters) = word.strip_prefix('-').filter(|w| !w.starts_with('-')) {
        for letter in letters.chars() {
            match letter {
                'I' => return Some(FORCES),
                'b' => return Some(BACKUP),
                'T' => return Some(IN_PLACE),
                'e' | 'B' | 'f' | 'M' | '@' => break,
                _ => {}
            }
        }
    }
    None
}

/// A version of a file, as far as an rsync listing can tell versions apart: its
/// modification time in whole seconds and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub mtime: i64,
    pub size: u64,
}

/// The version of each file this host last had at a path: what it sent (stated when the
/// job looked at the path) and what arrived from the peer. A deletion removes the peer's
/// copy when it is that version, whatever its time; only versions it does not know are
/// judged by time ([`newer_than`]). Bounded: forgetting costs a resurrection at worst.
#[derive(Debug, Default)]
pub struct Versions {
    known: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Version>>,
}

/// How many paths [`Versions`] remembers per root (about 100 B each) before it starts
/// over.
const VERSIONS_KEPT: usize = 200_000;

impl Versions {
    pub fn record(&self, path: &[u8], version: Version) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= VERSIONS_KEPT && !known.contains_key(path) {
            known.clear();
        }
        known.insert(path.to_vec(), version);
    }

    /// Records the version at `path` below `root` now, if it is a file (or a symlink).
    pub fn record_from_disk(&self, root: &std::path::Path, path: &[u8]) {
        // A path that is gone already has nothing to record.
        if let Ok(meta) = std::fs::symlink_metadata(crate::relpath::absolute(root, path)) {
            if !meta.is_dir() {
                self.record(path, Version::of(&meta));
            }
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<Version> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(path).copied()
    }
}

impl Version {
    pub fn of(meta: &std::fs::Metadata) -> Version {
        use std::os::unix::fs::MetadataExt;
        Version {
            mtime: meta.mtime(),
            size: meta.size(),
        }
    }
}

/// One non-directory entry of an `rsync --list-only` listing: its path (relative to the
/// listed module's top, unescaped), its modification time in whole seconds since the
/// epoch and its size. A symlink line (`name -> target`) is ambiguous when the name holds ` -> `: it
/// yields one entry per way of reading it (protecting a name that does not exist costs
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: Vec<u8>,
    pub mtime: i64,
    pub size: u64,
}

/// The non-directory entries of a `--list-only` listing printed with `TZ=UTC` (rsync
/// prints times in the local zone; sersyncd runs rsync with `TZ=UTC`). Lines that do not
/// parse are skipped.
pub fn parse_listing(stdout: &[u8]) -> Vec<Listed> {
    let mut entries = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        let Some(&kind) = line.first() else { continue };
        if kind == b'd' {
            continue;
        }
        // PERMS SIZE YYYY/MM/DD HH:MM:SS NAME, the size right-aligned in a padded field.
        let mut fields = line.splitn(2, |&b| b == b' ');
        let (Some(_perms), Some(rest)) = (fields.next(), fields.next()) else {
            continue;
        };
        let rest = trim_start(rest);
        let Some(space) = rest.iter().position(|&b| b == b' ') else {
            continue;
        };
        let digits: Vec<u8> = rest[..space]
            .iter()
            .copied()
            .filter(|&b| b != b',' && b != b'.')
            .collect();
        let Some(size) = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        let rest = &rest[space + 1..];
        if rest.len() < 20 || rest[19] != b' ' {
            continue;
        }
        let Some(mtime) = utc_seconds(&rest[..19]) else {
            continue;
        };
        let name = &rest[20..];
        if kind == b'l' {
            let mut any = false;
            for at in (0..name.len()).filter(|&i| name[i..].starts_with(b" -> ")) {
                entries.push(Listed {
                    path: super::argv::unescape(&name[..at]),
                    mtime,
                    size,
                });
                any = true;
            }
            if any {
                continue;
            }
        }
        entries.push(Listed {
            path: super::argv::unescape(name),
            mtime,
            size,
        });
    }
    entries
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

/// Seconds since the epoch of `YYYY/MM/DD HH:MM:SS` (UTC).
fn utc_seconds(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let (date, time) = text.split_once(' ')?;
    let days = super::argv::days_from_date(&date.replace('/', "-"))?;
    let mut parts = time.split(':').map(|part| part.parse::<i64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..61).contains(&s) {
        return None;
    }
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// The listed entries a deletion must not remove: versions this host did not have
/// (`known` says which it had), modified in the second the deletion was first observed
/// here (`deleted_at`, seconds since the epoch) or later. Listings show whole seconds, so
/// an unknown version of the same second is kept (and comes back here): resurrecting a
/// file is the safe failure, deleting a newer version is not. Sorted, without duplicates.
pub fn newer_than(
    listed: &[Listed],
    deleted_at: i64,
    known: impl Fn(&[u8]) -> Option<Version>,
) -> Vec<Vec<u8>> {
    let mut newer: Vec<Vec<u8>> = listed
        .iter()
        .filter(|entry| entry.mtime >= deleted_at && !entry.path.is_empty())
        .filter(|entry| {
            known(&entry.path)
                != Some(Version {
                    mtime: entry.mtime,
                    size: entry.size,
                })
        })
        .map(|entry| entry.path.clone())
        .collect();
    newer.sort_unstable();
    newer.dedup();
    newer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_options_table() {
        let rows: &[(&str, bool)] = &[
            ("-artuz", false),
            ("-a", false),
            ("--checksum", false),
            ("--delete", true),
            ("--delete-after", true),
            ("--del", true),
            ("--delete-excluded", true),
            ("--remove-source-files", true),
            ("--ignore-times", true),
            ("-aI", true),
            ("-I", true),
            ("--size-only", true),
            ("--ignore-existing", true),
            ("--existing", true),
            ("-ab", true),
            ("--backup", true),
            ("--backup-dir=x", true),
            ("--suffix=~", true),
            ("--inplace", true),
            ("--append-verify", true),
            ("--temp-dir=/tmp", true),
            ("-T/tmp", true),
            ("--partial-dir=.p", true),
            ("--delay-updates", true),
            ("--partial", false),
            // `-e` takes the rest of the cluster as its argument.
            ("-essh -I", false),
            ("-eIb", false),
            ("--exclude=-I", false),
        ];
        for (word, refused) in rows {
            assert_eq!(refused_option(word).is_some(), *refused, "{word}");
        }
    }

    #[test]
    fn listings_table() {
        let listing = b"drwxr-xr-x          4,096 2026/12/07 03:10:11 .\n\
drwxr-xr-x          4,096 2026/12/07 03:10:11 a\n\
-rw-r--r--              6 2026/12/07 03:10:12 a/f\n\
-rw-r--r--      1,234,567 1970/01/01 00:00:01 a/with space\n\
-rw-r--r--              6 2026/12/07 03:10:12 a/new\\#012line\n\
lrwxrwxrwx              3 2026/12/07 03:10:13 a/link -> x\n\
lrwxrwxrwx              3 2026/12/07 03:10:13 a/b -> c -> d\n\
garbage\n\
-rw-r--r--              6 2026/13/07 03:10:12 a/bad-month\n";
        let base = 1_796_613_011; // 2026-12-07T03:10:11Z
        let got = parse_listing(listing);
        let want = vec![
            Listed {
                path: b"a/f".to_vec(),
                mtime: base + 1,
                size: 6,
            },
            Listed {
                path: b"a/with space".to_vec(),
                mtime: 1,
                size: 1_234_567,
            },
            Listed {
                path: b"a/new\nline".to_vec(),
                mtime: base + 1,
                size: 6,
            },
            Listed {
                path: b"a/link".to_vec(),
                mtime: base + 2,
                size: 3,
            },
            Listed {
                path: b"a/b".to_vec(),
                mtime: base + 2,
                size: 3,
            },
            Listed {
                path: b"a/b -> c".to_vec(),
                mtime: base + 2,
                size: 3,
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_deletion_spares_what_this_host_never_had_of_its_second_or_later() {
        let listed = |path: &[u8], mtime, size| Listed {
            path: path.to_vec(),
            mtime,
            size,
        };
        let had = |mtime, size| Some(Version { mtime, size });
        // (remote mtime, remote size, deletion seen at, the version this host had, kept)
        let rows = [
            (99, 6, 100, None, false),
            (100, 6, 100, None, true),
            (101, 6, 100, None, true),
            // The very version this host had: deleted, however recent.
            (100, 6, 100, had(100, 6), false),
            (101, 6, 100, had(101, 6), false),
            // Another version (another time or size) of the same second or later: kept.
            (101, 6, 100, had(100, 6), true),
            (100, 7, 100, had(100, 6), true),
            // Older than the deletion: deleted whatever it is.
            (99, 7, 100, had(98, 6), false),
        ];
        for (mtime, size, deleted_at, known, kept) in rows {
            let got = newer_than(&[listed(b"x", mtime, size)], deleted_at, |_| known);
            assert_eq!(
                !got.is_empty(),
                kept,
                "{mtime}/{size} vs {deleted_at}, had {known:?}"
            );
        }
        let got = newer_than(
            &[
                listed(b"b", 200, 1),
                listed(b"a", 200, 1),
                listed(b"b", 200, 1),
                listed(b"", 300, 1),
            ],
            100,
            |_| None,
        );
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
