//! Replacing a file atomically and durably: the one writer of every file sersyncd keeps
//! (state files, the failure journal, the failure script).
//!
//! Why a module of its own: readers must see the old file or the new one, never a mix, and
//! a crash must leave one of them; getting that right (temporary file created exclusively,
//! fsync, rename, fsync of the directory, no symlink followed, mode 0600 whatever the umask)
//! is done once, here.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents` so that readers see the old file or the new one, never
/// a mix, and a crash leaves one of them: the parent directory is created if missing
/// (mode 0700), a temporary file in the same directory is created exclusively with mode
/// 0600, written and fsynced, renamed over `path`, and the directory is fsynced.
///
/// The new file is mode 0600 whatever the umask and whatever mode the old file had. A
/// symlink at `path` is replaced, not followed.
///
/// # Errors
///
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;

    let (temp, file) = create_temp(dir, name)?;
    let result = fill(file, contents).and_then(|()| fs::rename(&temp, path));
    if let Err(error) = result {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    sync_dir(dir)
}

/// Makes a directory's entries (a rename into it, a removal) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(&temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn fill(mut file: File, contents: &[u8]) -> io::Result<()> {
    // The umask can only have removed bits; make the mode exactly 0600.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sersync-atomic-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn write_atomically_creates_0600_and_replaces() {
        let dir = scratch_dir("atomic");
        let target = dir.join("state/sub/rsync_fail_log.sh");
        write_atomically(&target, b"first").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&target), 0o600);
        assert_eq!(mode(&dir.join("state/sub")), 0o700);

        // An existing world-writable file (as sersync left it) is replaced by a 0600 one.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
        write_atomically(&target, b"second").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(mode(&target), 0o600);

        // A symlink at the target is replaced, not followed.
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomically(&target, b"third").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(
            !fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"third");

        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.join("state/sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("rsync_fail_log.sh")]);

        // Failure: the target is a directory; the temporary file is cleaned up.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(write_atomically(&blocked, b"x").is_err());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.as_bytes().ends_with(b".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert!(write_atomically(Path::new("/"), b"x").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
