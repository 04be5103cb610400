//! What root may trust on disk: directories and files that no other local user can
//! replace, redirect or write.
//!
//! sersyncd runs as root. Anything it reads back from its state directory (pending changes,
//! the failure journal, held deletions) decides what it sends to the replicas, and
//! anything it creates there (the deletion runs' skeletons) is read by rsync. If another
//! user could write the directory, or any directory above it, or swap a symlink on the
//! way, they could steer what the daemon sends. So, like sshd's `StrictModes`:
//! - every directory from `/` to the state directory is owned by root (or the daemon's
//!   own user) and writable by no one else, except a sticky directory such as `/tmp`
//!   above it (others cannot rename or remove what they do not own in it), and every
//!   symlink on the way is owned by root (or us);
//! - state files are opened without following a symlink, and must be regular files owned
//!   by root (or us) that no one else may write.
//!
//! Everything here is a check on metadata; nothing creates or changes files.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// A path that another user could have planted or may change, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub path: PathBuf,
    pub uid: u32,
    pub mode: u32,
    pub why: &'static str,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid))
            .ok()
            .flatten()
            .map(|user| format!("{} ({})", self.uid, user.name))
            .unwrap_or_else(|| self.uid.to_string());
        write!(
            f,
            "{} (owner uid {owner}, mode {:04o}) {}",
            self.path.display(),
            self.mode & 0o7777,
            self.why
        )
    }
}

impl std::error::Error for Untrusted {}

impl From<Untrusted> for io::Error {
    fn from(untrusted: Untrusted) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, untrusted.to_string())
    }
}

/// Whether `uid` is root or the user this process runs as.
fn is_ours(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks that `dir` and every directory above it are safe to keep root's state in (see
/// the module documentation). `dir` itself may not be writable by others even when
/// sticky. Both the path as written and the path its symlinks resolve to are checked.
pub fn check_directory(dir: &Path) -> Result<(), CheckError> {
    check_path(dir, Last::Private)
}

/// Checks a directory root writes one file into by a fresh name and a rename (the
/// failure script): the same as [`check_directory`], except that the directory itself
/// may be a sticky one such as `/tmp`, where no one else can remove or replace what root
/// creates.
pub fn check_parent_directory(dir: &Path) -> Result<(), CheckError> {
    check_path(dir, Last::StickyAllowed)
}

/// Creates `dir` (mode 0700) and any missing parents, once the nearest existing one has
/// passed [`check_parent_directory`]: nothing is created through a directory or symlink
/// another user controls. The caller checks `dir` itself afterwards.
pub fn create_checked(dir: &Path) -> Result<(), CheckError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut existing = dir;
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if existing != dir {
        check_parent_directory(existing)?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            CheckError::Io(io::Error::new(
                err.kind(),
                format!("{}: {err}", dir.display()),
            ))
        })
}

/// What the last directory of a checked path may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Private,
    StickyAllowed,
}

fn check_path(dir: &Path, last: Last) -> Result<(), CheckError> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(CheckError::Io)?.join(dir)
    };
    check_chain(&absolute, last)?;
    let resolved = absolute.canonicalize().map_err(CheckError::Io)?;
    if resolved != absolute {
        check_chain(&resolved, last)?;
    }
    Ok(())
}

/// Why a directory cannot be used.
#[derive(Debug)]
pub enum CheckError {
    Untrusted(Untrusted),
    Io(io::Error),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Untrusted(untrusted) => untrusted.fmt(f),
            CheckError::Io(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for CheckError {}

impl From<CheckError> for io::Error {
    fn from(err: CheckError) -> io::Error {
        match err {
            CheckError::Untrusted(untrusted) => untrusted.into(),
            CheckError::Io(err) => err,
        }
    }
}

/// Walks `path` from `/`, checking each prefix with `lstat`: directories by owner and
/// mode, symlinks by owner (what they point to is checked through the resolved path).
fn check_chain(path: &Path, last_may_be: Last) -> Result<(), CheckError> {
    let mut prefix = PathBuf::new();
    let components: Vec<Component<'_>> = path.components().collect();
    for (index, component) in components.iter().enumerate() {
        match component {
            Component::RootDir => prefix.push("/"),
            Component::Normal(name) => prefix.push(name),
            // `.` and `..` of a path as written: the resolved path is checked as well.
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                prefix.push(component.as_os_str());
                continue;
            }
        }
        let last = index + 1 == components.len();
        let meta = std::fs::symlink_metadata(&prefix).map_err(|err| {
            CheckError::Io(io::Error::new(
                err.kind(),
                format!("{}: {err}", prefix.display()),
            ))
        })?;
        let untrusted = |why| {
            CheckError::Untrusted(Untrusted {
                path: prefix.clone(),
                uid: meta.uid(),
                mode: meta.mode(),
                why,
            })
        };
        if !is_ours(meta.uid()) {
            return Err(untrusted(if meta.file_type().is_symlink() {
                "is a symlink owned by another user, who could point it elsewhere"
            } else {
                "is owned by another user, who could replace what is in it"
            }));
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        if !meta.is_dir() {
            return Err(untrusted("is not a directory"));
        }
        let sticky = meta.mode() & 0o1000 != 0;
        let others_write = meta.mode() & 0o002 != 0;
        // Whatever the group: an ACL can grant a group's write to anyone.
        let group_write = meta.mode() & 0o020 != 0;
        let sticky_enough = sticky && (!last || last_may_be == Last::StickyAllowed);
        if (others_write || group_write) && !sticky_enough {
            return Err(untrusted(if others_write {
                "is writable by every user"
            } else {
                "is writable by its group"
            }));
        }
    }
    Ok(())
}

/// Reads a state file that only root (or this daemon's user) may have written: opened
/// without following a symlink, it must be a regular file owned by root or us that no one
/// else may write. `None` when it does not exist.
pub fn read_state_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: is a symlink, which a state file never is",
                    path.display()
                ),
            ));
        }
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("{}: {err}", path.display()),
            ));
        }
    };
    let meta = file.metadata()?;
    let untrusted = |why| -> io::Error {
        Untrusted {
            path: path.to_path_buf(),
            uid: meta.uid(),
            mode: meta.mode(),
            why,
        }
        .into()
    };
    if !meta.is_file() {
        return Err(untrusted("is not a regular file"));
    }
    if !is_ours(meta.uid()) {
        return Err(untrusted("is owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted("is writable by other users"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Whether `path` (as saved in a state file) names something below its root: relative,
/// no `.` or `..` component, no empty component. The empty path is the root itself.
pub fn is_plain_relative(path: &[u8]) -> bool {
    if path.is_empty() {
        return true;
    }
    path.split(|&b| b == b'/')
        .all(|component| !matches!(component, b"" | b"." | b".."))
}

/// `path` for a log line: printable, one line, whatever bytes it holds.
pub fn printable(path: &[u8]) -> String {
    let mut out = String::new();
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn plain_relative_paths() {
        for (path, plain) in [
            (&b""[..], true),
            (b"a", true),
            (b"a/b c/d", true),
            (b"/etc/passwd", false),
            (b"../x", false),
            (b"a/../../x", false),
            (b"a/..", false),
            (b"./a", false),
            (b"a//b", false),
            (b"a/", false),
            (b"..a/b..", true),
        ] {
            assert_eq!(
                is_plain_relative(path),
                plain,
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn printable_escapes_control_characters_and_invalid_utf8() {
        assert_eq!(printable(b"a\nb\t\xffc"), "a\\nb\\t\\xffc");
    }

    #[test]
    fn directories_writable_by_others_are_refused_unless_sticky_above() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_directory(&state).unwrap();

        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_directory(&state).unwrap_err().to_string();
        assert!(err.contains("is writable by every user"), "{err}");
        assert!(err.contains("mode 1777"), "{err}");

        let parent = tmp.path().join("shared");
        let below = parent.join("state");
        std::fs::create_dir_all(&below).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_directory(&below).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{} ", parent.display())), "{err}");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_directory(&below).unwrap();
        // Sticky like /tmp: fine for a file written by a fresh name, not for state.
        check_parent_directory(&parent).unwrap();
        assert!(check_directory(&parent).is_err());
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_parent_directory(&parent).is_err());
    }

    #[test]
    fn state_files_that_are_symlinks_or_writable_by_others_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pending");
        assert_eq!(read_state_file(&file).unwrap(), None);
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_state_file(&file).unwrap(), Some(b"x".to_vec()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_state_file(&file).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
        let link = tmp.path().join("failures");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = read_state_file(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }
}
