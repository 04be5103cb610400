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
//!   `--ignore-existing`). What the peer deletes here is moved to the soft-delete
//!   directory: a removal whose path the trash has just received, holding (for a file)
//!   the version this host had, is the peer's too (`Daemon::removed_by_peer`).
//! - **Newest wins.** Every send passes `--update`: a file that is newer on the receiver
//!   is not replaced. Sends compare contents (`--checksum`): an unchanged file moves no
//!   data.
//! - **Nothing lost.** `<softDelete>` is required: whatever a run replaces or deletes on a
//!   receiver (the older side of a conflict included) is moved to its dated directory
//!   there. The directory is not watched, sent or pulled.
//! - **A deletion never removes a version this host did not have.** Before a deletion
//!   run, the targets on the peer are listed ([`super::argv::deletion_listing`]); an entry that is
//!   neither the version this host last had ([`Versions`]) nor older than the deletion
//!   ([`spared`]) is protected from the run and pulled back here, so both sides keep
//!   it. A modification in the moments between the listing and the deletion run loses to
//!   the deletion and is kept in the peer's soft-delete directory.
//! - **Full syncs reconcile, never mirror.** A full sync (or a dirty directory) is pushed
//!   with `--update` and no `--delete`, then pulled the same way: afterwards each side has
//!   the union, the newer version of each file. Before it, a full sync deletes on the peer
//!   what this host had and no longer has and the peer may still have (removed while
//!   sersyncd was down, or cut short by a kill -9: [`Versions::paths`], which leaves out
//!   what the peer lacks too, [`Versions::record_peer_lacks`]), by the strict rule of
//!   [`spared_unless_had`]. Its push announces what it makes in place
//!   ([`Announced::ResentDirectory`]), so that the peer can take back a directory its
//!   user removed meanwhile. A deletion this host knows nothing of comes back from the
//!   peer: resurrection is the safe failure.
//!
//! What is refused in `commonParams` is in [`refused_option`]; `<filter>` is refused by
//! the config (what is pulled cannot be filtered by sersyncd's regexes).

/// The directory at the top of each root where rsync writes what it receives
/// (`--temp-dir`) before renaming it into place: the watcher tells the peer's files by it.
pub const INCOMING: &str = ".sersync-incoming";

/// The notices left in the root's [`INCOMING`] directory while this host was not
/// watching ([`prepare_incoming`]): what they announced, oldest notice first, and their
/// files, for the caller to remove once it has recorded what they say (a kill -9 before
/// that finds them again).
#[derive(Debug, Default)]
pub struct LeftNotices {
    pub announced: Vec<(Vec<u8>, Announced)>,
    pub files: Vec<std::path::PathBuf>,
}

/// Makes the root's [`INCOMING`] directory if it is missing, owned like the root and with
/// its mode, so that whoever the peer's rsync runs as here can write in it. Returns what
/// the notices left there while this host was not watching announced (see
/// [`LeftNotices`]): what their runs did is found by the full sync that follows, and they
/// would announce it for ever; but a directory such a run made is the peer's, which this
/// host has had (see `Plan::announce_push`), and one it removed the peer lacks.
pub fn prepare_incoming(root: &std::path::Path) -> std::io::Result<LeftNotices> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = root.join(INCOMING);
    let meta = std::fs::metadata(root)?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut files: Vec<(Option<(u128, u64)>, std::path::PathBuf)> = Vec::new();
            for entry in std::fs::read_dir(&dir)?.flatten() {
                use std::os::unix::ffi::OsStrExt;
                let name = entry.file_name();
                if let Some(rest) = name.as_bytes().strip_prefix(NOTICE_PREFIX.as_bytes()) {
                    files.push((notice_order(rest), entry.path()));
                }
            }
            // In the order they were written (a later notice of a path overrides an
            // earlier one); `read_dir` has none.
            files.sort();
            let mut left = LeftNotices::default();
            for (_, file) in files {
                if let Ok(bytes) = std::fs::read(&file) {
                    left.announced.extend(decode_notice(&bytes));
                }
                left.files.push(file);
            }
            return Ok(left);
        }
        Err(err) => return Err(err),
    }
    std::os::unix::fs::chown(&dir, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    )?;
    Ok(LeftNotices::default())
}

/// When a notice was written, from its name after [`NOTICE_PREFIX`] (`PID.NANOS.N`, see
/// [`notice_name`]): its wall-clock nanoseconds, then its number.
fn notice_order(rest: &[u8]) -> Option<(u128, u64)> {
    let text = std::str::from_utf8(rest).ok()?;
    let mut fields = text.split('.').skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
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

/// The names of the notices a host's runs leave in the peer's [`INCOMING`] directory.
pub const NOTICE_PREFIX: &str = "sersync-notice.";

/// What a run is about to make or remove in place on the peer, told to the peer's
/// watcher beforehand by a notice (see [`encode_notice`]): rsync writes regular files
/// through [`INCOMING`], where the watcher tells them by their rename, but it makes
/// directories, symlinks and special files where they belong, and removes an empty
/// directory without leaving anything in the soft-delete directory. Without the notice
/// the peer cannot tell these from its own user's changes, and sends them back (an echo
/// that recreates what was deleted meanwhile, or deletes what was made anew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced {
    /// A directory with this mode (permission bits) is there.
    Directory { mode: u32 },
    /// A directory the peer's full sync pushes again: its state from before, which may
    /// be older than a removal here (see `Daemon::note_returned_directory`). Met like a
    /// directory.
    ResentDirectory { mode: u32 },
    /// A symlink to this target is there.
    Symlink { target: Vec<u8> },
    /// Another type (a FIFO, a device, a socket) is there.
    Special,
    /// The directory that was there is gone.
    Removed,
    /// After a full sync's push, of a directory it announced as pushed again
    /// ([`Announced::ResentDirectory`]): the push made it (`true`), or found one there or
    /// left it out (`false`). Only a directory the push made can be the peer's old one
    /// brought back: one this host's user made in the moment between the announcement
    /// and the push looks just alike (seed 1 of the two-way rounds), and the push tells
    /// them apart by what it itemized. Told after the push, never met by a change.
    ResentOutcome { made: bool },
    /// After the run a notice was for: what it made or removed is done, so an
    /// announcement of this path not met by now never will be (the run's events were
    /// queued before this notice's). Left for up to 30 s, it would pass this host's user's
    /// next change of the path for the peer's (seed 9 of the two-way rounds: a directory
    /// the user renamed away and made again, taken for the directory a full sync of the
    /// peer's had announced and found there). Told after the run, never met by a change.
    Ended,
}

impl Announced {
    /// What is at a path now, as a notice would tell it (`None` for a regular file, which
    /// arrives through [`INCOMING`]).
    pub fn of(path: &std::path::Path, meta: &std::fs::Metadata) -> Option<Announced> {
        use std::os::unix::fs::PermissionsExt;
        let kind = meta.file_type();
        if kind.is_dir() {
            Some(Announced::Directory {
                mode: meta.permissions().mode() & 0o7777,
            })
        } else if kind.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            let target = std::fs::read_link(path).ok()?;
            Some(Announced::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            })
        } else if kind.is_file() {
            None
        } else {
            Some(Announced::Special)
        }
    }

    /// Whether `now` (what is at the path here, `None` when nothing is) is what was
    /// announced: then the change seen here is the peer's, which has it already. A
    /// directory meets a directory's announcement whatever its mode: rsync makes it with
    /// another mode and sets the peer's when it has filled it, and the first event comes
    /// before that (taken for this host's user's, the directory was sent back: a test of
    /// a full sync's push after a restart). The peer has a directory there either way.
    pub fn is_met_by(&self, now: Option<&Announced>) -> bool {
        match (self, now) {
            (Announced::Removed, None) => true,
            (Announced::Removed, Some(_))
            | (_, None)
            | (Announced::ResentOutcome { .. } | Announced::Ended, _) => false,
            (
                Announced::Directory { .. } | Announced::ResentDirectory { .. },
                Some(Announced::Directory { .. }),
            ) => true,
            (announced, Some(now)) => announced == now,
        }
    }
    /// Whether a change seen here, with `now` at its path, is the one announced: as
    /// [`Announced::is_met_by`], and only a directory's removal (`removes_directory`)
    /// meets a removal's announcement (a file's removal is never the peer's by
    /// announcement: its runs move files into the soft-delete directory), while a
    /// directory's removal never meets the announcement of a directory. The peer's run
    /// makes a directory where a file or symlink was, never where a directory was: a
    /// directory removed here while a directory stands at the path again was renamed
    /// away or removed by this host's user, who made the new one (seed 9 of the two-way
    /// rounds: both were taken for the peer's, and the old directory's contents stayed on
    /// the peer for good).
    pub fn is_met_by_change(&self, now: Option<&Announced>, removes_directory: bool) -> bool {
        match self {
            Announced::Removed => removes_directory && self.is_met_by(now),
            Announced::Directory { .. } | Announced::ResentDirectory { .. } => {
                !removes_directory && self.is_met_by(now)
            }
            _ => self.is_met_by(now),
        }
    }
}

/// A new notice's name: unique among this host's notices (the peer may not have read the
/// last ones yet, and a notice renamed over another would lose it).
pub fn notice_name() -> String {
    static NOTICES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{NOTICE_PREFIX}{}.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
        NOTICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A notice's bytes: one record per entry, each `KIND PATH` and NUL, where KIND is `d`
/// and the octal mode and a space (a directory; `D` for one a full sync pushes again), `l`
/// (a symlink: its target follows as a record of its own), `s` (a special file), `r`
/// (removed), `m` and `n` (a directory pushed again was made, or not, by the push), or `e`
/// (the run is over: [`Announced::Ended`]).
/// Paths are relative to the root, raw bytes (NUL cannot be in a path).
pub fn encode_notice(entries: &[(Vec<u8>, Announced)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, announced) in entries {
        match announced {
            Announced::Directory { mode } => out.extend(format!("d{mode:o} ").as_bytes()),
            Announced::ResentDirectory { mode } => out.extend(format!("D{mode:o} ").as_bytes()),
            Announced::Symlink { .. } => out.push(b'l'),
            Announced::Special => out.push(b's'),
            Announced::Removed => out.push(b'r'),
            Announced::ResentOutcome { made } => out.push(if *made { b'm' } else { b'n' }),
            Announced::Ended => out.push(b'e'),
        }
        out.extend_from_slice(path);
        out.push(0);
        if let Announced::Symlink { target } = announced {
            out.extend_from_slice(target);
            out.push(0);
        }
    }
    out
}

/// The entries of a notice ([`encode_notice`]); records that do not parse end it (the
/// peer's notice is trusted like the rest of what it writes here, but read defensively).
pub fn decode_notice(bytes: &[u8]) -> Vec<(Vec<u8>, Announced)> {
    let mut entries = Vec::new();
    let mut records = bytes.split(|&b| b == 0);
    while let Some(record) = records.next() {
        let Some((&kind, rest)) = record.split_first() else {
            break;
        };
        let (path, announced) = match kind {
            b'd' | b'D' => {
                let Some(space) = rest.iter().position(|&b| b == b' ') else {
                    break;
                };
                let Some(mode) = std::str::from_utf8(&rest[..space])
                    .ok()
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                else {
                    break;
                };
                let announced = if kind == b'D' {
                    Announced::ResentDirectory { mode }
                } else {
                    Announced::Directory { mode }
                };
                (&rest[space + 1..], announced)
            }
            b'l' => {
                let Some(target) = records.next().filter(|t| !t.is_empty()) else {
                    break;
                };
                (
                    rest,
                    Announced::Symlink {
                        target: target.to_vec(),
                    },
                )
            }
            b's' => (rest, Announced::Special),
            b'r' => (rest, Announced::Removed),
            b'm' | b'n' => (rest, Announced::ResentOutcome { made: kind == b'm' }),
            b'e' => (rest, Announced::Ended),
            _ => break,
        };
        if path.is_empty() || path.starts_with(b"/") {
            break;
        }
        entries.push((path.to_vec(), announced));
    }
    entries
}

/// A version of a file, as far as an rsync listing can tell versions apart: its
/// modification time in whole seconds and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub mtime: i64,
    pub size: u64,
}

/// The versions of each file this host had at a path, with when each became known here:
/// what it sent (stated when the job looked at the path) and what arrived from the peer.
/// A deletion removes the peer's copy only when it is one of them, known before the
/// deletion was seen ([`spared`]). Bounded: forgetting costs a resurrection at worst.
#[derive(Debug)]
pub struct Versions {
    known: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<Known>>>,
    /// Since when `known` holds every version this host had (its start, or when the
    /// bound made it start over): an older version it does not know may still have been
    /// one of its own ([`spared`] judges those by time).
    complete_since: std::sync::Mutex<std::time::SystemTime>,
    /// When this host last saw each path removed (by itself, not by the peer's run): a
    /// deletion is judged against its own moment, not the oldest change of its job, which
    /// may be older than a version that arrived just before the removal. And whether that
    /// removal was certainly this host's own: a file unlinked, not renamed away (the
    /// peer's runs rename what they remove into the soft-delete directory).
    removed: std::sync::Mutex<std::collections::HashMap<Vec<u8>, (std::time::SystemTime, bool)>>,
    /// When the peer last lacked each path as this host does: its run removed it here, or
    /// this host's deletion of it reached the peer. Gone here, but not a deletion still
    /// to carry to the peer ([`Versions::paths`]): the peer's user may make the path
    /// again, with a version this host had (a restore; a directory: every directory reads
    /// alike), and a full sync would delete it.
    peer_lacks: std::sync::Mutex<std::collections::HashMap<Vec<u8>, std::time::SystemTime>>,
    /// The records made since [`Versions::take_journal`] last took them, encoded as in
    /// [`Versions::encode`]: appended to the saved file after every batch, so that a
    /// kill -9 forgets nothing that was recorded before it.
    journal: std::sync::Mutex<Vec<u8>>,
    /// The bound made `known` or `removed` start over: appending is not enough, the saved
    /// file must be rewritten whole.
    start_over: std::sync::atomic::AtomicBool,
    /// Directories made here anew, and when ([`Versions::made_here`]): for a minute not
    /// had, though recorded (every directory reads alike, so the history cannot tell a
    /// new one from one the peer removed). Not saved.
    anew: std::sync::Mutex<std::collections::HashMap<Vec<u8>, std::time::Instant>>,
}

/// How long a directory made again after the peer lacked it is not had (see
/// `Versions::anew`): the peer takes back a directory pushed again only within a minute
/// of its own removal (`Daemon::note_returned_directory`).
const ANEW: std::time::Duration = std::time::Duration::from_secs(60);

/// A version, and when this host first had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub version: Version,
    pub since: std::time::SystemTime,
    /// The nanoseconds of its modification time, when it was recorded from a file here
    /// (not from a listing, which has whole seconds, nor from the saved file, which
    /// keeps none): two local copies of one second and size are told apart by them
    /// (`Known::is_local_copy`).
    pub nanos: Option<u32>,
}

impl Known {
    /// Whether the local file `meta` is a copy of this version: same second and size, and
    /// the same nanoseconds where they are known (rsync's `--times` keeps a file's; they
    /// are never known for a symlink, `Versions::record_local`). Seed 2 of
    /// the two-way rounds: a file the peer's user wrote in the same second as this host's
    /// user wrote another at a path, of the same size, arrived there after this host
    /// removed its own, and was taken for that one coming back.
    pub fn is_local_copy(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.version == Version::of(meta)
            && self
                .nanos
                .is_none_or(|nanos| i64::from(nanos) == meta.mtime_nsec())
    }
}

/// How many paths [`Versions`] remembers per root (about 150 B each) before it starts
/// over, and how many versions per path.
const VERSIONS_KEPT: usize = 200_000;
const VERSIONS_PER_PATH: usize = 4;
/// How long after its removal here a path (not had again since) is forgotten.
const SETTLED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for Versions {
    fn default() -> Versions {
        Versions {
            known: std::sync::Mutex::default(),
            complete_since: std::sync::Mutex::new(std::time::SystemTime::now()),
            removed: std::sync::Mutex::default(),
            peer_lacks: std::sync::Mutex::default(),
            journal: std::sync::Mutex::default(),
            start_over: std::sync::atomic::AtomicBool::new(false),
            anew: std::sync::Mutex::default(),
        }
    }
}

/// The first record of [`Versions::encode`]'s bytes (version 1 files ended with an end
/// mark and had nothing appended; they are read as well).
const VERSIONS_MAGIC: &[u8] = b"sersync-two-way-versions 2";
const VERSIONS_MAGIC_1: &[u8] = b"sersync-two-way-versions 1";

fn encode_time(at: std::time::SystemTime, out: &mut Vec<u8>) {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    out.extend(format!("{}.{:09}", since.as_secs(), since.subsec_nanos()).as_bytes());
    out.push(0);
}

fn decode_time(field: &[u8]) -> Option<std::time::SystemTime> {
    let text = std::str::from_utf8(field).ok()?;
    let (secs, nanos) = text.split_once('.')?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
}

fn decode_number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn encode_known(path: &[u8], known: &Known, out: &mut Vec<u8>) {
    out.push(b'K');
    out.extend_from_slice(path);
    out.push(0);
    out.extend(known.version.mtime.to_string().as_bytes());
    out.push(0);
    out.extend(known.version.size.to_string().as_bytes());
    out.push(0);
    encode_time(known.since, out);
}

fn encode_removal(path: &[u8], at: std::time::SystemTime, unlinked: bool, out: &mut Vec<u8>) {
    out.push(b'R');
    out.extend_from_slice(path);
    out.push(0);
    encode_time(at, out);
    out.push(if unlinked { b'1' } else { b'0' });
    out.push(0);
}

fn encode_peer_lacks(path: &[u8], at: std::time::SystemTime, out: &mut Vec<u8>) {
    out.push(b'P');
    out.extend_from_slice(path);
    out.push(0);
    encode_time(at, out);
}

/// A record that ends the removal of `path` ([`Versions::here_again`]). Only appended,
/// never in a file written whole (which leaves the removal out): a sersyncd from before
/// it stops reading the appended records there, and starts with what came before.
fn encode_here_again(path: &[u8], out: &mut Vec<u8>) {
    out.push(b'H');
    out.extend_from_slice(path);
    out.push(0);
}

/// Adds `known` to a path's history unless that version is there already (a version
/// sent again is still known since it first was); true if it was added.
/// Whether the peer lacked `path` or an ancestor at or after the last version of
/// `history` became known here (see `Versions::peer_lacks`).
fn lacked_since(
    path: &[u8],
    history: &[Known],
    lacks: &std::collections::HashMap<Vec<u8>, std::time::SystemTime>,
) -> bool {
    let last = history.iter().map(|k| k.since).max();
    std::iter::once(path)
        .chain(crate::relpath::ancestors(path))
        .filter_map(|p| lacks.get(p))
        .any(|at| last.is_none_or(|last| *at >= last))
}

fn add_known(history: &mut Vec<Known>, known: Known) -> bool {
    // The same version, unless both know nanoseconds and they differ (two versions of
    // one second and size); a version known by its second alone learns them. Had again
    // (a file renamed back over the path), it is the current one: the last, since when
    // it was first had (seed 5 of the two-way rounds: left where it was, an older
    // version renamed back over a newer one was taken for stale, and the newer one was
    // pulled back over it).
    // From the last: a version known by its second alone is the current one if it can be.
    if let Some(at) = history.iter().rposition(|k| {
        k.version == known.version
            && (k.nanos.is_none() || known.nanos.is_none() || k.nanos == known.nanos)
    }) {
        let mut same = history.remove(at);
        same.nanos = same.nanos.or(known.nanos);
        history.push(same);
        return at + 1 != history.len();
    }
    if history.len() >= VERSIONS_PER_PATH {
        history.remove(0);
    }
    history.push(known);
    true
}

impl Versions {
    /// The records made since the last call, as bytes to append to the saved file.
    pub fn take_journal(&self) -> Vec<u8> {
        std::mem::take(&mut *self.journal.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets the paths removed here before `cutoff` and not had again since, with their
    /// removals: each full sync deletes on the peer what this host had and no longer has
    /// ([`Versions::paths`]), which must stay the recent ones. Their removal long over,
    /// a copy of theirs coming back is no longer stale ([`Versions::removal`]'s users
    /// look back 60 s at most).
    fn forget_settled(&self, cutoff: std::time::SystemTime) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        let removal = |path: &[u8]| {
            std::iter::once(path)
                .chain(crate::relpath::ancestors(path))
                .filter_map(|p| removed.get(p).map(|(at, _)| *at))
                .max()
        };
        known.retain(|path, history| {
            let Some(at) = removal(path) else {
                return true;
            };
            at >= cutoff || history.iter().any(|known| known.since > at)
        });
        let mut still_needed: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for path in known.keys() {
            still_needed.insert(path);
            still_needed.extend(crate::relpath::ancestors(path));
        }
        let keep: std::collections::HashSet<Vec<u8>> = removed
            .iter()
            .filter(|(path, (at, _))| *at >= cutoff || still_needed.contains(path.as_slice()))
            .map(|(path, _)| path.clone())
            .collect();
        drop(still_needed);
        removed.retain(|path, _| keep.contains(path));
        drop(removed);
        let mut lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        lacks.retain(|path, at| {
            if *at >= cutoff {
                return true;
            }
            // Settled: what this host knew of the path before goes with it.
            if known
                .get(path)
                .is_some_and(|history| history.iter().all(|k| k.since <= *at))
            {
                known.remove(path);
            }
            false
        });
    }

    /// Puts back records [`Versions::take_journal`] took that could not be saved.
    pub fn restore_journal(&self, mut records: Vec<u8>) {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        records.append(&mut journal);
        *journal = records;
    }

    /// Whether the saved file must be rewritten whole (see `start_over`); asks once.
    pub fn take_start_over(&self) -> bool {
        self.start_over
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// What this record holds, as bytes that [`Versions::decode`] reads back: saved in
    /// the state directory, so that a restart (a kill -9 included) does not forget which
    /// versions this host had. NUL-separated records; paths are raw bytes. Records from
    /// [`Versions::take_journal`] may be appended.
    pub fn encode(&self) -> Vec<u8> {
        self.forget_settled(std::time::SystemTime::now() - SETTLED_AFTER);
        let mut out = VERSIONS_MAGIC.to_vec();
        out.push(0);
        encode_time(self.complete_since(), &mut out);
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for (path, history) in known.iter() {
            for known in history {
                encode_known(path, known, &mut out);
            }
        }
        drop(known);
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        for (path, (at, unlinked)) in removed.iter() {
            encode_removal(path, *at, *unlinked, &mut out);
        }
        drop(removed);
        let lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        for (path, at) in lacks.iter() {
            encode_peer_lacks(path, *at, &mut out);
        }
        out
    }

    /// A record from [`Versions::encode`]'s bytes (and records appended to them), or
    /// `None` if they are not such. A file cut short (a full disk, a crash while
    /// appending) gives the records before the cut: the paths of the lost ones go by time
    /// ([`spared`]), resurrection at worst.
    pub fn decode(bytes: &[u8]) -> Option<Versions> {
        // Every record ends with a NUL: what follows the last one is a cut field, which
        // could still parse (a time missing its last digits).
        let whole = bytes.iter().rposition(|&b| b == 0).map_or(0, |at| at + 1);
        let mut fields = bytes[..whole].split(|&b| b == 0);
        let magic = fields.next()?;
        if magic != VERSIONS_MAGIC && magic != VERSIONS_MAGIC_1 {
            return None;
        }
        let versions = Versions::default();
        *versions
            .complete_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = decode_time(fields.next()?)?;
        {
            let mut known = versions.known.lock().unwrap_or_else(|e| e.into_inner());
            let mut removed = versions.removed.lock().unwrap_or_else(|e| e.into_inner());
            let mut lacks = versions
                .peer_lacks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut next = || -> Option<()> {
                let (&kind, path) = fields.next()?.split_first()?;
                match kind {
                    b'K' => {
                        let mtime = decode_number(fields.next()?)?;
                        let size = decode_number(fields.next()?)?;
                        let since = decode_time(fields.next()?)?;
                        lacks.remove(path);
                        add_known(
                            known.entry(path.to_vec()).or_default(),
                            Known {
                                version: Version { mtime, size },
                                since,
                                nanos: None,
                            },
                        );
                    }
                    b'R' => {
                        let at = decode_time(fields.next()?)?;
                        let unlinked = match fields.next()? {
                            b"1" => true,
                            b"0" => false,
                            _ => return None,
                        };
                        removed.insert(path.to_vec(), (at, unlinked));
                    }
                    b'H' => {
                        removed.remove(path);
                    }
                    b'P' => {
                        lacks.insert(path.to_vec(), decode_time(fields.next()?)?);
                    }
                    _ => return None,
                }
                Some(())
            };
            while next().is_some() {}
        }
        Some(versions)
    }

    pub fn record(&self, path: &[u8], version: Version) {
        self.record_since(path, version, std::time::SystemTime::now());
    }

    /// Records the version of the local entry `meta` at `path`, with its nanoseconds
    /// (see [`Known::nanos`]), and returns it.
    pub fn record_local(&self, path: &[u8], meta: &std::fs::Metadata) -> Version {
        use std::os::unix::fs::MetadataExt;
        let version = Version::of(meta);
        self.record_known(
            path,
            Known {
                version,
                since: std::time::SystemTime::now(),
                // Only a file's: rsync leaves a directory's, and a symlink it makes in
                // the same second keeps its own (it sets a symlink's time only when the
                // second differs), so a symlink copied there and back would never be
                // this version again (seeds 24 and 27 of the two-way rounds: a symlink
                // renamed away came back with the peer's full sync, was not taken for
                // the old one, and was sent again).
                nanos: meta
                    .is_file()
                    .then(|| u32::try_from(meta.mtime_nsec()).unwrap_or(0)),
            },
        );
        version
    }

    /// Records `version` at `path` as had since `since` (a moment at or before this host
    /// certainly had it: the start of the run that sent it).
    pub fn record_since(&self, path: &[u8], version: Version, since: std::time::SystemTime) {
        self.record_known(
            path,
            Known {
                version,
                since,
                nanos: None,
            },
        );
    }

    fn record_known(&self, path: &[u8], entry: Known) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= VERSIONS_KEPT && !known.contains_key(path) {
            self.forget_all_known(&mut known, std::time::SystemTime::now());
        }
        // Here again: what the peer's run removed before is over.
        let peer_lacked = self
            .peer_lacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
            .is_some();
        if add_known(known.entry(path.to_vec()).or_default(), entry) || peer_lacked {
            let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            encode_known(path, &entry, &mut journal);
        }
    }

    /// Starts over at `at` (the bound was reached): every version is forgotten, and the
    /// saved file is rewritten whole.
    fn forget_all_known(
        &self,
        known: &mut std::collections::HashMap<Vec<u8>, Vec<Known>>,
        at: std::time::SystemTime,
    ) {
        known.clear();
        *self
            .complete_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = at;
        self.start_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records the version at `path` below `root` now, and returns it (`None`: the path
    /// is gone already, and nothing is recorded).
    pub fn record_from_disk(&self, root: &std::path::Path, path: &[u8]) -> Option<Version> {
        let meta = std::fs::symlink_metadata(crate::relpath::absolute(root, path)).ok()?;
        Some(self.record_local(path, &meta))
    }

    /// Since when every version this host had is known (see [`spared`]).
    pub fn complete_since(&self) -> std::time::SystemTime {
        *self
            .complete_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every path this host has a version of, but those the peer lacks as well since (it
    /// or an ancestor: see `peer_lacks`): what is gone of these is a deletion of this
    /// host's that has not reached the peer.
    pub fn paths(&self) -> Vec<Vec<u8>> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        known
            .iter()
            .filter(|(path, history)| !lacked_since(path, history, &lacks))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// `path` is here again, as a full sync found it before its push: what this host saw
    /// removed there before is over (seed 14 of the two-way rounds: a directory removed,
    /// then made again while sersyncd was stopped, was left out of the full sync's pull
    /// as removed a moment ago, and the two sides differed; every version of a directory
    /// is the same, so the history alone cannot tell). Not for changes seen live: a full
    /// sync's pull that makes a directory over a removal looks like one, and is taken back
    /// by that removal. Journaled: forgotten by a kill -9 after the full sync, the removal
    /// came back with the saved file, and the next full sync's pull left the directory
    /// out again (seed 12 of the two-way rounds).
    pub fn here_again(&self, path: &[u8]) {
        // Journaled under the same lock as removals are (`record_removal_at`): the saved
        // order is the order they happened in.
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if removed.remove(path).is_some() {
            let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            encode_here_again(path, &mut journal);
        }
    }

    /// A directory at `path` was made here anew (this host's user made or changed it; not
    /// one the peer's run made, which is the peer's, whatever came before): for a minute
    /// it is not had ([`Versions::had`]). Seed 5 of the two-way rounds: a full sync asked for just
    /// after this host's user made a directory pushed it as one this host had, and the
    /// peer, whose user had removed one there moments before, removed the new one.
    pub fn made_here(&self, path: &[u8]) {
        let mut anew = self.anew.lock().unwrap_or_else(|e| e.into_inner());
        anew.retain(|_, at| at.elapsed() < ANEW);
        anew.insert(path.to_vec(), std::time::Instant::now());
    }

    /// A send delivered `path` to the peer: a directory made here anew is had from now
    /// on, as any the peer has from this host. Left new for its minute, a full sync would
    /// push it as new after the peer's user removed it, and the peer would keep it: a
    /// removal undone (seed 20 of the two-way rounds, the peer's full sync 10 s after
    /// its user made the directory).
    /// Only a mark from before the send started (`started`): a directory the user made
    /// again while it ran is a new one still.
    pub fn delivered(&self, path: &[u8], started: std::time::Instant) {
        let mut anew = self.anew.lock().unwrap_or_else(|e| e.into_inner());
        if anew.get(path).is_some_and(|at| *at <= started) {
            anew.remove(path);
        }
    }

    /// Whether this host has had a version of `path` and the peer has not lacked it (or
    /// an ancestor) since (see `peer_lacks`): what is at `path` here now, if a directory,
    /// may be that one; otherwise it was made here since, or is one this host never had.
    /// (What the peer's runs made here while sersyncd was stopped is had once their
    /// notices are read at the start, `prepare_incoming`.) A directory made here anew in
    /// the last minute is not ([`Versions::made_here`]).
    pub fn had(&self, path: &[u8]) -> bool {
        if self
            .anew
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .is_some_and(|at| at.elapsed() < ANEW)
        {
            return false;
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(path)
            .is_some_and(|history| !history.is_empty() && !lacked_since(path, history, &lacks))
    }

    /// The peer lacks `path` now, as this host does: its run removed it here, or this
    /// host's deletion of it reached it (see `peer_lacks`).
    pub fn record_peer_lacks(&self, path: &[u8]) {
        let at = std::time::SystemTime::now();
        // `known` first, as everywhere.
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        if lacks.len() >= VERSIONS_KEPT && !lacks.contains_key(path) {
            // Forgetting one costs a deletion of what the peer's user made again at
            // worst: start over along with what they were about.
            lacks.clear();
            self.forget_all_known(&mut known, at);
        }
        lacks.insert(path.to_vec(), at);
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        encode_peer_lacks(path, at, &mut journal);
    }

    pub fn history(&self, path: &[u8]) -> Vec<Known> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(path).cloned().unwrap_or_default()
    }

    /// This host saw `path` removed now; `unlinked`: certainly by itself (see
    /// [`Versions::removal`]).
    pub fn record_removal(&self, path: &[u8], unlinked: bool) {
        self.record_removal_at(path, std::time::SystemTime::now(), unlinked);
    }

    fn record_removal_at(&self, path: &[u8], at: std::time::SystemTime, unlinked: bool) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if removed.len() >= VERSIONS_KEPT && !removed.contains_key(path) {
            removed.clear();
            self.start_over
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        removed.insert(path.to_vec(), (at, unlinked));
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        encode_removal(path, at, unlinked, &mut journal);
    }

    /// The paths this host saw removed at `since` or later whose removal has not reached
    /// the peer since (see `peer_lacks`: what the peer has there now, its user made
    /// after that), top-most only (a tree removed whole is one path), sorted.
    pub fn removed_since(&self, since: std::time::SystemTime) -> Vec<Vec<u8>> {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        let lacks = self.peer_lacks.lock().unwrap_or_else(|e| e.into_inner());
        crate::relpath::top_most(
            removed
                .iter()
                .filter(|(path, (at, _))| {
                    *at >= since && lacks.get(path.as_slice()).is_none_or(|lacked| lacked < at)
                })
                .map(|(path, _)| path.clone())
                .collect(),
        )
    }

    /// When this host last saw `path` or one of its ancestors removed (the latest), if it
    /// remembers: a deletion of `path` run now removes only versions it had before then.
    pub fn removed_at(&self, path: &[u8]) -> Option<std::time::SystemTime> {
        self.removal(path).map(|(at, _)| at)
    }

    /// [`Versions::removed_at`], and whether any of those removals was a file unlinked
    /// here: certainly this host's own user's, where a rename away may have been the
    /// peer's run moving a version into the soft-delete directory.
    pub fn removal(&self, path: &[u8]) -> Option<(std::time::SystemTime, bool)> {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        std::iter::once(path)
            .chain(crate::relpath::ancestors(path))
            .filter_map(|p| removed.get(p).copied())
            .reduce(|(a, a_unlinked), (b, b_unlinked)| (a.max(b), a_unlinked || b_unlinked))
    }
}

impl Version {
    /// What stands for every version of a directory: one that this host had may be
    /// deleted, whatever its entries did to its time.
    pub const DIRECTORY: Version = Version {
        mtime: i64::MIN,
        size: u64::MAX,
    };

    pub fn of(meta: &std::fs::Metadata) -> Version {
        use std::os::unix::fs::MetadataExt;
        if meta.is_dir() {
            return Version::DIRECTORY;
        }
        Version {
            mtime: meta.mtime(),
            size: meta.size(),
        }
    }
}

/// Whether this host's copy of a file found in a new directory (offered, not sent: see
/// `Plan::offer`) loses to the peer's copy `there`: older, or in the same second and
/// smaller. Both hosts judge a pair of copies alike, so exactly one of them pulls
/// (equal copies, or equal times and sizes, stay as they are: same-second ties, README).
pub fn offered_copy_loses(here: Version, there: Version) -> bool {
    there != Version::DIRECTORY
        && (there.mtime > here.mtime || (there.mtime == here.mtime && there.size > here.size))
}

/// The paths whose copy on the peer is a version this host had but no longer has (a file
/// renamed over it, or restored from a backup, with an older time): sent over it whatever
/// its time (`--update` alone would keep the stale copy there for ever, as newer).
/// `current` is this host's version of a path now (the last one recorded).
pub fn stale(listed: &[Listed], history: impl Fn(&[u8]) -> Vec<Known>) -> Vec<Vec<u8>> {
    let mut stale: Vec<Vec<u8>> = listed
        .iter()
        .filter(|entry| entry.size != Version::DIRECTORY.size)
        .filter(|entry| {
            let there = Version {
                mtime: entry.mtime,
                size: entry.size,
            };
            let history = history(&entry.path);
            let current = history.last().map(|known| known.version);
            current != Some(there) && history.iter().any(|known| known.version == there)
        })
        .map(|entry| entry.path.clone())
        .collect();
    stale.sort_unstable();
    stale.dedup();
    stale
}

/// How [`parse_made`]'s lines of a directory made start (`cd` and nine `+`, a space).
pub const MADE_DIRECTORY: &[u8] = b"cd+++++++++ ";

/// What a dry run of a pull ([`super::argv::dry_run_itemized`]) says it would make in place
/// here: new directories (with their permission bits), symlinks and special files. Lines
/// that are not such an item (statistics, files, changes to existing entries) are skipped.
pub fn parse_made(stdout: &[u8]) -> Vec<(Vec<u8>, Announced)> {
    let mut made = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        // `cd+++++++++ rwxr-xr-x name/`: an entry created (`c`, all `+`).
        if line.len() < 23 || line[11] != b' ' || line[21] != b' ' {
            continue;
        }
        let (code, perms, name) = (&line[..11], &line[12..21], &line[22..]);
        if code[0] != b'c' || !code[2..].iter().all(|&b| b == b'+') {
            continue;
        }
        let Some(mode) = mode_of(perms) else {
            continue;
        };
        let entry = match code[1] {
            b'd' => {
                let name = name.strip_suffix(b"/").unwrap_or(name);
                if name == b"." || name.is_empty() {
                    continue;
                }
                (super::argv::unescape(name), Announced::Directory { mode })
            }
            b'L' => {
                // `name -> target`: a name holding ` -> ` is read at its first one (an
                // announcement that is never met expires).
                let Some(at) = (0..name.len()).find(|&i| name[i..].starts_with(b" -> ")) else {
                    continue;
                };
                (
                    super::argv::unescape(&name[..at]),
                    Announced::Symlink {
                        target: super::argv::unescape(&name[at + 4..]),
                    },
                )
            }
            b'D' | b'S' => (super::argv::unescape(name), Announced::Special),
            _ => continue,
        };
        made.push(entry);
    }
    made
}

/// The directories a send made on the peer, from its `%i %l %M %n` lines
/// ([`super::argv::reporting_sent`]; [`MADE_DIRECTORY`]).
pub fn parse_made_by_send(stdout: &[u8]) -> Vec<Vec<u8>> {
    stdout
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(MADE_DIRECTORY))
        .filter_map(|rest| rest.splitn(3, |&b| b == b' ').nth(2))
        .map(|name| name.strip_suffix(b"/").unwrap_or(name))
        .filter(|name| !name.is_empty() && *name != b".")
        .map(super::argv::unescape)
        .collect()
}

/// The files a send printed as delivered ([`super::argv::reporting_sent`]): sent (`<f`)
/// or with attributes set (`.f`), each with the version the peer has now. Other lines
/// (directories, symlinks, rsync's summary) are skipped.
pub fn parse_sent(stdout: &[u8]) -> Vec<(Vec<u8>, Version)> {
    let mut sent = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        // `<f+++++++++ 52 2026/12/07-19:40:12 name`
        if line.len() < 11 || !matches!(line[0], b'<' | b'.') || line[1] != b'f' {
            continue;
        }
        let mut fields = line[11..].splitn(4, |&b| b == b' ');
        let (Some(b""), Some(size), Some(when), Some(name)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let when: Vec<u8> = when
            .iter()
            .map(|&b| if b == b'-' { b' ' } else { b })
            .collect();
        let (Some(size), Some(mtime)) = (decode_number::<u64>(size), utc_seconds(&when)) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        sent.push((super::argv::unescape(name), Version { mtime, size }));
    }
    sent
}

/// Permission bits from `ls`-style `rwxr-sr-t` (rsync's `%B`).
fn mode_of(perms: &[u8]) -> Option<u32> {
    let mut mode = 0;
    for (i, &c) in perms.iter().enumerate() {
        let bit = 1 << (8 - i);
        let special = match i {
            2 => 0o4000,
            5 => 0o2000,
            8 => 0o1000,
            _ => 0,
        };
        mode |= match c {
            b'-' => 0,
            b'r' if i % 3 == 0 => bit,
            b'w' if i % 3 == 1 => bit,
            b'x' if i % 3 == 2 => bit,
            b's' | b't' if i % 3 == 2 && special != 0 => bit | special,
            b'S' | b'T' if i % 3 == 2 && special != 0 => special,
            _ => return None,
        };
    }
    (perms.len() == 9).then_some(mode)
}

/// One entry of an `rsync --list-only` listing: its path (relative to the listed
/// module's top, unescaped), its modification time in whole seconds since the epoch, and
/// its size ([`Version::DIRECTORY`]'s for a directory, whose time and size say nothing of
/// its version). A symlink line (`name -> target`) is ambiguous when the name holds
/// ` -> `: it yields one entry per way of reading it (protecting a name that does not
/// exist costs nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: Vec<u8>,
    pub mtime: i64,
    pub size: u64,
}

impl Listed {
    /// `listed` by path; of a path read twice (a symlink whose name holds ` -> `), the
    /// first reading.
    pub fn by_path(listed: &[Listed]) -> std::collections::HashMap<&[u8], &Listed> {
        let mut by_path = std::collections::HashMap::new();
        for entry in listed {
            by_path.entry(entry.path.as_slice()).or_insert(entry);
        }
        by_path
    }

    /// The version listed: a directory reads as any directory (`Version::DIRECTORY`).
    pub fn version(&self) -> Version {
        if self.size == Version::DIRECTORY.size {
            Version::DIRECTORY
        } else {
            Version {
                mtime: self.mtime,
                size: self.size,
            }
        }
    }
}

/// The non-directory entries of a `--list-only` listing printed with `TZ=UTC` (rsync
/// prints times in the local zone; sersyncd runs rsync with `TZ=UTC`). Lines that do not
/// parse are skipped.
pub fn parse_listing(stdout: &[u8]) -> Vec<Listed> {
    let mut entries = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        let Some(&kind) = line.first() else { continue };
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
        if kind == b'd' {
            if name != b"." {
                entries.push(Listed {
                    path: super::argv::unescape(name),
                    mtime,
                    size: Version::DIRECTORY.size,
                });
            }
            continue;
        }
        if kind == b'l' {
            // The whole line is a reading too: a listing without `-l` (the deletion
            // listing's) prints no target.
            for at in (0..name.len()).filter(|&i| name[i..].starts_with(b" -> ")) {
                entries.push(Listed {
                    path: super::argv::unescape(&name[..at]),
                    mtime,
                    size,
                });
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

/// The listed entries a deletion seen here must not remove, sorted and without
/// duplicates; `deleted_at` says when this host saw each path's deletion. An entry is
/// removed only if it is a version this host had before that moment (`history` of its
/// path): any other version — modified on the peer, or one
/// that reached this host only after the deletion (the peer's own deletion seen here and
/// sent back, then the peer's new files) — is not this host's to delete. For a path this
/// host knows nothing of, or a version older than `complete_since` (before a restart,
/// this host may have had it), the time decides: a version of the deletion's second or
/// later is kept (listings show whole seconds: resurrecting is the safe failure,
/// deleting a newer version is not).
pub fn spared(
    listed: &[Listed],
    deleted_at: impl Fn(&[u8]) -> std::time::SystemTime,
    history: impl Fn(&[u8]) -> Vec<Known>,
    complete_since: std::time::SystemTime,
) -> Vec<Vec<u8>> {
    let seconds = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
    };
    let complete_second = seconds(complete_since);
    let mut spared: Vec<Vec<u8>> = listed
        .iter()
        .filter(|entry| !entry.path.is_empty())
        .filter(|entry| {
            let deleted_at = deleted_at(&entry.path);
            let deleted_second = seconds(deleted_at);
            let there = entry.version();
            let history = history(&entry.path);
            let mut had = history
                .iter()
                .filter(|known| known.version == there)
                .peekable();
            if had.peek().is_none() && (history.is_empty() || entry.mtime < complete_second) {
                entry.mtime >= deleted_second
            } else {
                !had.any(|known| known.since <= deleted_at)
            }
        })
        .map(|entry| entry.path.clone())
        .collect();
    spared.sort_unstable();
    spared.dedup();
    spared
}

/// The listed entries that a deletion of what is gone here since this host had it (found
/// by a full sync, not seen: removed while sersyncd was stopped, or before a kill -9) must
/// not remove: every file, symlink or special file that is not a version this host had,
/// and every directory at a path where this host never had one (the peer's user made it
/// below a directory this host removed: `mkdir -p` of a path that was there once). No
/// time rule: what the peer's user made meanwhile is never this host's to delete. A
/// directory this host had is not spared by itself (all versions of one look alike): it
/// goes when nothing spared is left in it.
pub fn spared_unless_had(listed: &[Listed], history: impl Fn(&[u8]) -> Vec<Known>) -> Vec<Vec<u8>> {
    let mut spared: Vec<Vec<u8>> = listed
        .iter()
        .filter(|entry| !entry.path.is_empty())
        .filter(|entry| {
            let there = entry.version();
            !history(&entry.path)
                .iter()
                .any(|known| known.version == there)
        })
        .map(|entry| entry.path.clone())
        .collect();
    spared.sort_unstable();
    spared.dedup();
    spared
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
    fn versions_survive_their_encoding() {
        // Recent removals (older ones are forgotten when written whole).
        let base = std::time::SystemTime::now();
        let at = |secs, nanos| base + std::time::Duration::new(secs, nanos);
        let versions = Versions::default();
        versions.record(b"a/new\nline", Version { mtime: 5, size: 6 });
        versions.record(b"a/new\nline", Version::DIRECTORY);
        versions.record(b"-dash q'uote", Version { mtime: -1, size: 0 });
        versions.record_removal_at(b"gone", at(7, 123), true);
        versions.record_removal_at(b"dir", at(8, 0), false);
        let back = Versions::decode(&versions.encode()).expect("decodes");
        for path in [&b"a/new\nline"[..], b"-dash q'uote", b"absent"] {
            assert_eq!(back.history(path), versions.history(path));
        }
        assert_eq!(back.removal(b"gone"), Some((at(7, 123), true)));
        assert_eq!(back.removal(b"dir/x"), Some((at(8, 0), false)));
        assert_eq!(back.complete_since(), versions.complete_since());
        assert!(Versions::decode(b"something else\0").is_none());
    }

    /// Paths removed before the cutoff and not had again are forgotten with their
    /// removals; the rest stays (a removal still covering a kept path below it included).
    #[test]
    fn what_is_gone_here_removes_only_files_this_host_had() {
        let had = Version {
            mtime: 100,
            size: 5,
        };
        let history = |path: &[u8]| {
            let version = if path == b"had-dir" {
                Version::DIRECTORY
            } else {
                had
            };
            if path.starts_with(b"had") {
                vec![Known {
                    version,
                    since: std::time::UNIX_EPOCH,
                    nanos: None,
                }]
            } else {
                Vec::new()
            }
        };
        let entry = |path: &str, mtime, size| Listed {
            path: path.as_bytes().to_vec(),
            mtime,
            size,
        };
        let listed = [
            entry("had", 100, 5),
            entry("had-changed", 100, 6),
            entry("had-older", 50, 5),
            entry("unknown-old", 1, 1),
            entry("had-dir", 0, Version::DIRECTORY.size),
            // A file this host had at a path that is a directory there now.
            entry("had-file-now-dir", 0, Version::DIRECTORY.size),
            // Made by the peer's user below a directory this host removed.
            entry("new-dir", 0, Version::DIRECTORY.size),
        ];
        assert_eq!(
            spared_unless_had(&listed, history),
            [
                b"had-changed".to_vec(),
                b"had-file-now-dir".to_vec(),
                b"had-older".to_vec(),
                b"new-dir".to_vec(),
                b"unknown-old".to_vec()
            ]
        );
    }

    #[test]
    fn what_a_pull_would_make_in_place_is_read_from_its_dry_run() {
        let stdout = b"cd+++++++++ rwxr-xr-x new/\n\
            cd+++++++++ rwxr-sr-t new/sticky/\n\
            cL+++++++++ rwxrwxrwx new/link -> ../target\n\
            cS+++++++++ rw-r--r-- new/fifo\n\
            >f+++++++++ rw-r--r-- new/file\n\
            .d..t...... rwxr-xr-x old/\n\
            cd+++++++++ rwxr-xr-x ./\n\
            cd+++++++++ rwxr-xr-x odd\\#012name/\n\
            Number of files: 7\n";
        assert_eq!(
            parse_made(stdout),
            vec![
                (b"new".to_vec(), Announced::Directory { mode: 0o755 }),
                (
                    b"new/sticky".to_vec(),
                    Announced::Directory { mode: 0o3755 }
                ),
                (
                    b"new/link".to_vec(),
                    Announced::Symlink {
                        target: b"../target".to_vec()
                    }
                ),
                (b"new/fifo".to_vec(), Announced::Special),
                (b"odd\nname".to_vec(), Announced::Directory { mode: 0o755 }),
            ]
        );
        assert_eq!(mode_of(b"rwSr-xr-T"), Some(0o5654));
        assert_eq!(mode_of(b"rwxr-xr-"), None);
    }

    #[test]
    fn removals_since_a_moment_are_the_top_most_ones() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let versions = Versions::default();
        for (path, secs) in [
            (&b"tree"[..], 20),
            (b"tree/a", 20),
            (b"tree/a/b", 20),
            (b"tree-b", 20),
            (b"old", 5),
            (b"old-dir/new", 30),
        ] {
            versions.record_removal_at(path, at(secs), true);
        }
        assert_eq!(
            versions.removed_since(at(10)),
            [
                b"old-dir/new".to_vec(),
                b"tree".to_vec(),
                b"tree-b".to_vec()
            ]
        );
        // Its deletion reached the peer: what the peer has there now is new.
        versions.record_peer_lacks(b"tree-b");
        assert_eq!(
            versions.removed_since(at(10)),
            [b"old-dir/new".to_vec(), b"tree".to_vec()]
        );
    }

    #[test]
    fn settled_removals_are_forgotten_and_the_rest_is_kept() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let versions = Versions::default();
        let version = Version { mtime: 1, size: 1 };
        let known_at = |path: &[u8], secs| {
            versions.known.lock().unwrap().insert(
                path.to_vec(),
                vec![Known {
                    version,
                    since: at(secs),
                    nanos: None,
                }],
            );
        };
        // (path, had since, removed at)
        let rows: &[(&[u8], u64, Option<u64>)] = &[
            (b"old-gone", 10, Some(20)),
            (b"recent-gone", 10, Some(200)),
            (b"back-again", 30, Some(20)),
            (b"present", 10, None),
            (b"dir/old-child", 10, None),
        ];
        for (path, since, removed) in rows {
            known_at(path, *since);
            if let Some(removed) = removed {
                versions.record_removal_at(path, at(*removed), true);
            }
        }
        versions.record_removal_at(b"dir", at(20), false);
        versions.record_removal_at(b"never-known", at(20), true);
        versions.forget_settled(at(100));
        let mut paths = versions.paths();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                b"back-again".to_vec(),
                b"present".to_vec(),
                b"recent-gone".to_vec()
            ]
        );
        assert_eq!(versions.removed_at(b"recent-gone"), Some(at(200)));
        assert_eq!(
            versions.removed_at(b"back-again"),
            Some(at(20)),
            "still had after it"
        );
        assert_eq!(versions.removed_at(b"old-gone"), None);
        assert_eq!(versions.removed_at(b"dir/old-child"), None);
        assert_eq!(versions.removed_at(b"never-known"), None);
    }

    /// The saved file is a snapshot with the journal's records appended after each batch:
    /// read back, it holds everything; cut anywhere, it holds the records before the cut.
    #[test]
    fn versions_journal_appends_and_a_cut_keeps_what_came_before() {
        let at = |secs, nanos| std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let versions = Versions::default();
        versions.record(b"kept", Version { mtime: 1, size: 1 });
        let mut file = versions.encode();
        let _ = versions.take_journal();
        let snapshot = file.len();
        versions.record(b"kept", Version { mtime: 2, size: 2 });
        versions.record(b"kept", Version { mtime: 2, size: 2 });
        versions.record_removal_at(b"gone", at(9, 5), true);
        let appended = versions.take_journal();
        assert!(versions.take_journal().is_empty(), "taken once");
        file.extend_from_slice(&appended);
        let back = Versions::decode(&file).expect("decodes");
        assert_eq!(back.history(b"kept"), versions.history(b"kept"));
        assert_eq!(
            back.history(b"kept").len(),
            2,
            "a version recorded twice counts once"
        );
        assert_eq!(back.removal(b"gone"), Some((at(9, 5), true)));
        for cut in snapshot..file.len() {
            let back = Versions::decode(&file[..cut]).expect("a cut file decodes");
            assert!(!back.history(b"kept").is_empty(), "cut at {cut}");
            assert!(back.history(b"kept").len() <= 2, "cut at {cut}");
        }
        let back = Versions::decode(&file[..file.len() - 3]).expect("decodes");
        assert_eq!(back.removal(b"gone"), None, "a cut record is dropped");
        assert!(!versions.take_start_over());
    }

    #[test]
    fn what_the_peer_removed_here_is_not_this_hosts_deletion_until_had_again() {
        let versions = Versions::default();
        let file = Version { mtime: 5, size: 5 };
        for path in [&b"d"[..], b"d/x", b"f", b"other"] {
            versions.record(path, file);
        }
        let saved = versions.encode();
        let _ = versions.take_journal();
        versions.record_peer_lacks(b"d");
        versions.record_peer_lacks(b"f");
        let mut paths = versions.paths();
        paths.sort();
        assert_eq!(
            paths,
            [b"other".to_vec()],
            "d, d/x (below d) and f are the peer's"
        );
        // Made again (arrived, or written here): had again.
        std::thread::sleep(std::time::Duration::from_millis(2));
        versions.record(b"f", file);
        versions.record(b"d/x", Version { mtime: 6, size: 6 });
        let mut paths = versions.paths();
        paths.sort();
        assert_eq!(paths, [b"d/x".to_vec(), b"f".to_vec(), b"other".to_vec()]);
        // Journaled: the same after a restart, and in a file written whole.
        let mut file_with_journal = saved;
        file_with_journal.extend(versions.take_journal());
        for bytes in [file_with_journal, versions.encode()] {
            let back = Versions::decode(&bytes).expect("decodes");
            let mut paths = back.paths();
            paths.sort();
            assert_eq!(paths, [b"d/x".to_vec(), b"f".to_vec(), b"other".to_vec()]);
        }
    }

    /// A directory here is one this host had only if it had one there and the peer has
    /// not lacked it (or an ancestor) since (seed 20: a directory made while sersyncd was
    /// stopped, where the peer's user had removed one moments before, was taken for the
    /// old one and removed again by the peer).
    #[test]
    fn a_path_is_had_until_the_peer_lacks_it_or_an_ancestor() {
        let versions = Versions::default();
        assert!(!versions.had(b"d"), "never had");
        versions.record(b"d", Version::DIRECTORY);
        versions.record(b"e/sub", Version::DIRECTORY);
        assert!(versions.had(b"d") && versions.had(b"e/sub"));
        versions.record_peer_lacks(b"d");
        versions.record_peer_lacks(b"e");
        assert!(!versions.had(b"d"), "the peer removed it here");
        assert!(!versions.had(b"e/sub"), "the peer removed an ancestor here");
        std::thread::sleep(std::time::Duration::from_millis(2));
        versions.record(b"d", Version::DIRECTORY);
        assert!(versions.had(b"d"), "had again");
        // One this host's user makes is a new one for a minute.
        versions.made_here(b"d");
        assert!(!versions.had(b"d"), "made here anew");
        // Until a send delivers it (seed 20).
        let before = std::time::Instant::now() - std::time::Duration::from_secs(1);
        versions.delivered(b"e", std::time::Instant::now());
        assert!(!versions.had(b"d"), "another path delivered");
        versions.delivered(b"d", before);
        assert!(!versions.had(b"d"), "made again while the send ran");
        versions.delivered(b"d", std::time::Instant::now());
        assert!(versions.had(b"d"), "delivered: the peer has it from here");
    }

    #[test]
    fn of_two_offered_copies_exactly_one_loses() {
        let v = |mtime, size| Version { mtime, size };
        // (here, there, here loses)
        let table = [
            (v(10, 5), v(11, 5), true),
            (v(11, 5), v(10, 5), false),
            (v(10, 5), v(10, 6), true),
            (v(10, 6), v(10, 5), false),
            (v(10, 5), v(10, 5), false),
            (v(10, 5), Version::DIRECTORY, false),
        ];
        for (here, there, loses) in table {
            assert_eq!(
                offered_copy_loses(here, there),
                loses,
                "{here:?} vs {there:?}"
            );
            if here != there && there != Version::DIRECTORY {
                assert_ne!(
                    offered_copy_loses(there, here),
                    loses,
                    "the peer judges {there:?} vs {here:?} the other way"
                );
            }
        }
    }

    /// The directories a send made are read from the same lines (seed 3).
    #[test]
    fn the_directories_a_send_made_are_read_from_its_output() {
        let stdout = b"cd+++++++++ 4096 2026/12/07-19:40:12 s/d2/\n\
            cd+++++++++ 4096 2026/12/07-19:40:12 with space\\#012/\n\
            .d..t...... 4096 2026/12/07-19:40:12 there/\n\
            <f+++++++++ 52 2026/12/07-19:40:12 s/d2/f\n\
            cd+++++++++ 4096 2026/12/07-19:40:12 ./\n\
            cd+++++++++ 4096\n";
        assert_eq!(
            parse_made_by_send(stdout),
            [b"s/d2".to_vec(), b"with space\n".to_vec()]
        );
    }

    /// What a send delivered is read from its `%i %l %M %n` lines (seed 6: a file renamed
    /// over the path between the plan's look and the send was delivered, but the version
    /// recorded was the one looked at, and the peer's copy of the delivered one was later
    /// spared by a deletion as a version this host never had).
    #[test]
    fn what_a_send_delivered_is_read_from_its_output() {
        let stdout = b"<f+++++++++ 52 2026/12/07-19:40:12 b/f3\n\
            .f..t...... 7 2026/12/07-00:00:01 with space/f\n\
            <f.st...... 9 1970/01/01-00:00:00 odd\\#012name\n\
            cd+++++++++ 4096 2026/12/07-19:40:12 b/\n\
            cL+++++++++ 1 2026/12/07-19:40:12 link -> t\n\
            >f+++++++++ 5 2026/12/07-19:40:12 received\n\
            <f+++++++++ x 2026/12/07-19:40:12 bad-size\n\
            sent 100 bytes  received 20 bytes  240.00 bytes/sec\n";
        assert_eq!(
            parse_sent(stdout),
            [
                (
                    b"b/f3".to_vec(),
                    Version {
                        mtime: 1_796_672_412,
                        size: 52
                    }
                ),
                (
                    b"with space/f".to_vec(),
                    Version {
                        mtime: 1_796_601_601,
                        size: 7
                    }
                ),
                (b"odd\nname".to_vec(), Version { mtime: 0, size: 9 }),
            ]
        );
    }

    /// Versions of one second and size recorded from local files are told apart by their
    /// nanoseconds; one known by its second alone matches either.
    #[test]
    fn local_copies_are_told_apart_by_their_nanoseconds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"same size").unwrap();
        let second = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_680_000);
        let at = |nanos| {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(second + std::time::Duration::from_nanos(nanos))
                .unwrap();
            std::fs::symlink_metadata(&file).unwrap()
        };
        let version = Version {
            mtime: 1_796_680_000,
            size: 9,
        };
        let known = |nanos| Known {
            version,
            since: second,
            nanos,
        };
        let rows: &[(Option<u32>, u64, bool)] = &[
            (Some(5), 5, true),
            (Some(5), 6, false),
            (None, 6, true),
            (Some(0), 0, true),
        ];
        for (nanos, on_disk, copy) in rows {
            assert_eq!(
                known(*nanos).is_local_copy(&at(*on_disk)),
                *copy,
                "{nanos:?} {on_disk}"
            );
        }
        let mut history = vec![known(Some(1))];
        assert!(add_known(&mut history, known(Some(2))));
        assert!(!add_known(&mut history, known(None)));
        assert_eq!(history.len(), 2);
        let mut history = vec![known(None)];
        assert!(!add_known(&mut history, known(Some(3))));
        assert_eq!(history, vec![known(Some(3))]);
    }

    /// A symlink's version is its second and size alone: rsync does not carry its
    /// nanoseconds (seeds 24 and 27 of the two-way rounds).
    #[test]
    fn a_symlinks_version_keeps_no_nanoseconds() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("t0", &link).unwrap();
        let versions = Versions::default();
        let meta = std::fs::symlink_metadata(&link).unwrap();
        let version = versions.record_local(b"l", &meta);
        let history = versions.history(b"l");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].version, version);
        assert_eq!(history[0].nanos, None);
        assert!(history[0].is_local_copy(&meta));
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        versions.record_local(b"f", &std::fs::symlink_metadata(&file).unwrap());
        assert!(
            versions.history(b"f")[0].nanos.is_some(),
            "a file's are kept"
        );
    }

    /// A path here again is no longer removed; a record alone (an arrival) does not say so.
    #[test]
    fn a_path_here_again_is_no_longer_removed() {
        let now = std::time::SystemTime::now();
        let minute = std::time::Duration::from_secs(60);
        let versions = Versions::default();
        versions.record(b"d", Version::DIRECTORY);
        versions.record_removal(b"d", false);
        versions.record(b"d", Version::DIRECTORY);
        assert_eq!(versions.removed_since(now - minute), vec![b"d".to_vec()]);
        let mut saved = versions.encode();
        versions.take_journal();
        versions.here_again(b"d");
        assert!(versions.removed_since(now - minute).is_empty());
        assert!(versions.removal(b"d").is_none());
        // Journaled: a restart does not bring the removal back.
        saved.extend(versions.take_journal());
        let restarted = Versions::decode(&saved).unwrap();
        assert!(restarted.removal(b"d").is_none());
        assert!(restarted.had(b"d"));
        // Nothing to end, nothing journaled.
        versions.here_again(b"d");
        assert!(versions.take_journal().is_empty());
    }

    /// A version had again is the current one (the last), since when it was first had;
    /// moved, it is recorded again (the saved file replays the order).
    #[test]
    fn a_version_had_again_is_the_last() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let known = |mtime, since| Known {
            version: Version { mtime, size: 1 },
            since: at(since),
            nanos: None,
        };
        let mut history = vec![known(1, 10), known(2, 20)];
        assert!(add_known(&mut history, known(1, 30)));
        assert_eq!(history, vec![known(2, 20), known(1, 10)]);
        assert!(!add_known(&mut history, known(1, 40)));
        assert_eq!(history, vec![known(2, 20), known(1, 10)]);
    }

    /// Notices left while this host was not watching are read in the order they were
    /// written (by the time in their names, whatever the PID), and left in place for the
    /// daemon to remove once it has saved what they say.
    #[test]
    fn left_notices_are_read_oldest_first_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let incoming = root.path().join(INCOMING);
        std::fs::create_dir(&incoming).unwrap();
        let later = incoming.join(format!("{NOTICE_PREFIX}9.200.0"));
        let earlier = incoming.join(format!("{NOTICE_PREFIX}10.100.7"));
        std::fs::write(
            &later,
            encode_notice(&[(b"x".to_vec(), Announced::Removed)]),
        )
        .unwrap();
        std::fs::write(
            &earlier,
            encode_notice(&[(b"x".to_vec(), Announced::Directory { mode: 0o755 })]),
        )
        .unwrap();
        std::fs::write(incoming.join("not-a-notice"), b"rx\0").unwrap();
        let left = prepare_incoming(root.path()).unwrap();
        assert_eq!(
            left.announced,
            [
                (b"x".to_vec(), Announced::Directory { mode: 0o755 }),
                (b"x".to_vec(), Announced::Removed)
            ]
        );
        assert_eq!(left.files, [earlier.clone(), later.clone()]);
        assert!(earlier.exists() && later.exists());
        assert_eq!(notice_order(b"1.2.3"), Some((2, 3)));
        assert_eq!(notice_order(b"garbage"), None);
    }

    #[test]
    fn notices_round_trip_and_stop_at_garbage() {
        let entries = vec![
            (b"a".to_vec(), Announced::Directory { mode: 0o2755 }),
            (
                b"again".to_vec(),
                Announced::ResentDirectory { mode: 0o750 },
            ),
            (
                b"a/l ink\n".to_vec(),
                Announced::Symlink {
                    target: b"../x y".to_vec(),
                },
            ),
            (b"a/fifo".to_vec(), Announced::Special),
            (b"-dash/ q'uote".to_vec(), Announced::Removed),
            (b"again".to_vec(), Announced::ResentOutcome { made: true }),
            (b"d\nx".to_vec(), Announced::ResentOutcome { made: false }),
            (b"over".to_vec(), Announced::Ended),
        ];
        let bytes = encode_notice(&entries);
        assert_eq!(decode_notice(&bytes), entries);
        let rows: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"ra\0x\0rb\0", 1),
            (b"d75 a\0dzz a\0", 1),
            (b"la\0\0", 0),
            (b"r/etc\0", 0),
            (b"d755a\0", 0),
        ];
        for (bytes, count) in rows {
            assert_eq!(decode_notice(bytes).len(), *count, "{bytes:?}");
        }
    }

    #[test]
    fn announcements_are_met_only_by_the_same_entry() {
        let dir = Announced::Directory { mode: 0o755 };
        let link = Announced::Symlink {
            target: b"t".to_vec(),
        };
        let rows: &[(&Announced, Option<&Announced>, bool)] = &[
            (&dir, Some(&dir), true),
            // Before rsync set the mode.
            (&dir, Some(&Announced::Directory { mode: 0o700 }), true),
            (&dir, Some(&Announced::Special), false),
            (
                &Announced::ResentDirectory { mode: 0o755 },
                Some(&Announced::Directory { mode: 0o700 }),
                true,
            ),
            (&dir, None, false),
            (&link, Some(&link), true),
            (
                &link,
                Some(&Announced::Symlink {
                    target: b"u".to_vec(),
                }),
                false,
            ),
            (&Announced::Removed, None, true),
            (&Announced::Removed, Some(&dir), false),
            (&Announced::Special, Some(&Announced::Special), true),
            // An outcome comes after the push: no change is the peer's by it.
            (&Announced::ResentOutcome { made: true }, Some(&dir), false),
            (&Announced::ResentOutcome { made: false }, None, false),
            (&Announced::Ended, Some(&dir), false),
            (&Announced::Ended, None, false),
        ];
        for (announced, now, met) in rows {
            assert_eq!(announced.is_met_by(*now), *met, "{announced:?} by {now:?}");
        }
    }

    #[test]
    fn a_directory_removed_here_meets_only_the_announcement_of_a_removal_or_replacement() {
        let dir = Announced::Directory { mode: 0o755 };
        let resent = Announced::ResentDirectory { mode: 0o755 };
        let link = Announced::Symlink {
            target: b"t".to_vec(),
        };
        // (announced, what is at the path now, the change removes a directory, met)
        let rows: &[(&Announced, Option<&Announced>, bool, bool)] = &[
            (&Announced::Removed, None, true, true),
            // A file's removal is never the peer's by announcement.
            (&Announced::Removed, None, false, false),
            // A directory made again at once (seed 9): this host's user's.
            (&dir, Some(&dir), true, false),
            (&resent, Some(&dir), true, false),
            (&dir, Some(&dir), false, true),
            (&resent, Some(&dir), false, true),
            // The peer's run replaced a directory here by a symlink.
            (&link, Some(&link), true, true),
            (&Announced::Ended, None, true, false),
        ];
        for (announced, now, removes_directory, met) in rows {
            assert_eq!(
                announced.is_met_by_change(*now, *removes_directory),
                *met,
                "{announced:?} by {now:?}, removes a directory: {removes_directory}"
            );
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
                path: b"a".to_vec(),
                mtime: base,
                size: u64::MAX,
            },
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
            // Without -l no target is printed: the whole line may be the name.
            Listed {
                path: b"a/link -> x".to_vec(),
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
            Listed {
                path: b"a/b -> c -> d".to_vec(),
                mtime: base + 2,
                size: 3,
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_deletion_removes_only_versions_this_host_had_before_it() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |secs: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + 500);
        let listed = |mtime, size| Listed {
            path: b"x".to_vec(),
            mtime,
            size,
        };
        let known = |mtime, size, since| Known {
            version: Version { mtime, size },
            since: at(since),
            nanos: None,
        };
        let dir = |since| Known {
            version: Version::DIRECTORY,
            since: at(since),
            nanos: None,
        };
        // (peer's mtime, size; what this host had and since when; kept)
        let rows: Vec<((i64, u64), Vec<Known>, bool)> = vec![
            // Nothing known: older than the deletion's second goes, the rest is kept.
            ((99, 6), vec![], false),
            ((100, 6), vec![], true),
            ((101, 6), vec![], true),
            // The version this host had: deleted, however recent its time.
            ((100, 6), vec![known(100, 6, 90)], false),
            ((150, 6), vec![known(150, 6, 99)], false),
            // An older version it had also counts.
            ((50, 6), vec![known(50, 6, 60), known(80, 7, 70)], false),
            // A version it never had: kept, old or new (a modification on the peer).
            ((50, 7), vec![known(50, 6, 60)], true),
            ((101, 6), vec![known(100, 6, 60)], true),
            // Known only after the deletion was seen: not this deletion's.
            ((90, 6), vec![known(90, 6, 101)], true),
            // A directory: one this host had goes, whatever its time; one it had only
            // since, or never (and of the deletion's second or later), stays.
            ((150, u64::MAX), vec![dir(90)], false),
            ((150, u64::MAX), vec![dir(101)], true),
            ((150, u64::MAX), vec![], true),
            ((99, u64::MAX), vec![], false),
        ];
        for ((mtime, size), history, kept) in rows {
            let got = spared(
                &[listed(mtime, size)],
                |_| at(100),
                |_| history.clone(),
                UNIX_EPOCH,
            );
            assert_eq!(!got.is_empty(), kept, "{mtime}/{size} with {history:?}");
        }
        // After a restart at 70, what this host had before is not known: a version it
        // does not know from before then is judged by time, a later one is the peer's.
        let restarted = vec![known(80, 6, 85)];
        let rows: &[((i64, u64), bool)] = &[
            ((50, 7), false),
            ((69, 7), false),
            ((70, 7), true),
            ((101, 7), true),
            ((80, 6), false),
        ];
        for ((mtime, size), kept) in rows {
            let got = spared(
                &[listed(*mtime, *size)],
                |_| at(100),
                |_| restarted.clone(),
                at(70),
            );
            assert_eq!(!got.is_empty(), *kept, "{mtime}/{size} after a restart");
        }
        let many = |path: &[u8]| Listed {
            path: path.to_vec(),
            mtime: 200,
            size: 1,
        };
        let got = spared(
            &[many(b"b"), many(b"a"), many(b"b"), many(b"")],
            |_| at(100),
            |_| Vec::new(),
            UNIX_EPOCH,
        );
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_deletion_is_dated_by_the_latest_removal_of_its_path_or_an_ancestor() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let versions = Versions::default();
        versions.record_removal_at(b"d", at(10), false);
        versions.record_removal_at(b"d/e/f", at(20), true);
        versions.record_removal_at(b"d", at(15), false);
        versions.record_removal_at(b"x", at(30), false);
        // (path, when its deletion was seen, whether a file was unlinked on the way)
        type Row<'a> = (&'a [u8], Option<(u64, bool)>);
        let rows: &[Row] = &[
            (b"d", Some((15, false))),
            (b"d/e", Some((15, false))),
            (b"d/e/f", Some((20, true))),
            (b"d/e/f/g", Some((20, true))),
            (b"dd", None),
            (b"x/y", Some((30, false))),
            (b"y", None),
        ];
        for (path, expected) in rows {
            assert_eq!(
                versions.removal(path),
                expected.map(|(secs, unlinked)| (at(secs), unlinked)),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        // A version that arrived after the batch's oldest change but before the removal
        // is this host's to delete.
        let listed = Listed {
            path: b"z/.dot".to_vec(),
            mtime: 5,
            size: 5,
        };
        let arrived = Known {
            version: Version { mtime: 5, size: 5 },
            since: at(12),
            nanos: None,
        };
        let oldest_change = at(11);
        let removal = versions_with_removal(b"z/.dot", at(13));
        let deleted_at = |path: &[u8]| {
            removal
                .removed_at(path)
                .map_or(oldest_change, |t| t.max(oldest_change))
        };
        let epoch = std::time::UNIX_EPOCH;
        assert!(
            spared(
                std::slice::from_ref(&listed),
                deleted_at,
                |_| vec![arrived],
                epoch
            )
            .is_empty()
        );
        assert_eq!(
            spared(&[listed], |_| oldest_change, |_| vec![arrived], epoch).len(),
            1,
            "dated by the batch's oldest change, the arrival looked newer than the deletion"
        );
    }

    fn versions_with_removal(path: &[u8], at: std::time::SystemTime) -> Versions {
        let versions = Versions::default();
        versions.record_removal_at(path, at, false);
        versions
    }

    #[test]
    fn a_copy_that_is_a_version_this_host_had_is_stale() {
        let at = std::time::UNIX_EPOCH;
        let listed = |mtime, size| Listed {
            path: b"x".to_vec(),
            mtime,
            size,
        };
        let known = |mtime, size| Known {
            version: Version { mtime, size },
            since: at,
            nanos: None,
        };
        // (peer's copy, this host's history with its current version last, stale)
        let rows: Vec<((i64, u64), Vec<Known>, bool)> = vec![
            // The current version there already: nothing to replace.
            ((10, 1), vec![known(10, 1)], false),
            // An older version this host had, the current one older by time (a file
            // renamed over it): stale.
            ((10, 1), vec![known(10, 1), known(5, 2)], true),
            // A version this host never had (the peer's own edit): not stale.
            ((12, 3), vec![known(10, 1), known(5, 2)], false),
            ((12, 3), vec![], false),
            // A directory never is.
            ((10, u64::MAX), vec![known(10, 1), known(5, 2)], false),
        ];
        for ((mtime, size), history, want) in rows {
            let got = stale(&[listed(mtime, size)], |_| history.clone());
            assert_eq!(!got.is_empty(), want, "{mtime}/{size} with {history:?}");
        }
    }

    #[test]
    fn versions_keep_when_each_was_first_known() {
        let versions = Versions::default();
        let v = |mtime| Version { mtime, size: 1 };
        versions.record(b"p", v(1));
        let first = versions.history(b"p")[0].since;
        std::thread::sleep(std::time::Duration::from_millis(5));
        versions.record(b"p", v(1));
        assert_eq!(versions.history(b"p")[0].since, first);
        for mtime in 2..=6 {
            versions.record(b"p", v(mtime));
        }
        let kept: Vec<i64> = versions
            .history(b"p")
            .iter()
            .map(|k| k.version.mtime)
            .collect();
        assert_eq!(kept, vec![3, 4, 5, 6]);
    }
}
