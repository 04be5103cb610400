//! Whose privileges an rsync run takes: least privilege for the process that reads the
//! tree.
//!
//! sersyncd runs as root so that it can watch and read any tree. rsync, as root, would
//! read whatever a path resolves to at the moment it opens it, and no check made before
//! the run can hold: rsync resolves the path again. A user who can write anywhere in the
//! tree could swap a directory for a symlink to a private one between an event and the
//! run, and the private files would be published on the replica. So rsync runs with the
//! credentials of the tree's owner (or the configured `<localpath user>`): the kernel then
//! checks every component of every path rsync opens against that user, at the moment it
//! opens it, and a swapped symlink to something the owner cannot read is refused there.
//! What the owner can read anyway is not a leak.
//!
//! A root-owned tree (the default owner) keeps rsync as root: configure `user=` for it
//! when other users can write below it.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::RunAs;

/// An unprivileged user rsync runs as: resolved in the parent, applied in the child
/// between fork and exec (where nothing may allocate or read the user database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Every group of the user (primary included), as `initgroups` would set them.
    pub groups: Vec<libc::gid_t>,
}

/// Takes `credentials` (groups, group, user) in a child between fork and exec: groups,
/// then group, then user, since after setuid nothing else may change.
///
/// # Safety
/// Only for a `pre_exec` closure: it calls only async-signal-safe functions (setgroups,
/// setgid, setuid) on data prepared before the fork.
pub(super) unsafe fn take_in_child(
    credentials: &(Vec<libc::gid_t>, libc::gid_t, libc::uid_t),
) -> std::io::Result<()> {
    let (groups, gid, uid) = credentials;
    // SAFETY: async-signal-safe calls on memory the child owns (see above).
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(*gid) != 0
            || libc::setuid(*uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Identity {
    /// Who runs rsync for `root`: `None` means as the daemon itself (root).
    ///
    /// The root is examined without following a symlink: whoever can write the directory
    /// above it could put a symlink (or another directory) in its place, and rsync must
    /// not then run as root, or as someone else, in whatever it points to. So the root
    /// must be a directory; a root-owned one keeps rsync as root only if no one else could
    /// have replaced it (every directory above it is root's and not writable by others,
    /// sticky ones aside). Anything else is an error: no run, rather than a run with the
    /// wrong credentials.
    pub fn resolve(run_as: &RunAs, root: &Path) -> Result<Option<Identity>, String> {
        let meta = std::fs::symlink_metadata(root)
            .map_err(|err| format!("the watch root {}: {err}", root.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "the watch root {} is not a directory (a symlink put in its place?); no rsync \
                 runs for it until it is one again",
                root.display()
            ));
        }
        let user = match run_as {
            RunAs::User(name) => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => user,
                Ok(None) => return Err(format!("user {name} (<localpath user>) no longer exists")),
                Err(err) => return Err(format!("cannot look up user {name}: {err}")),
            },
            RunAs::RootOwner if meta.uid() == 0 => {
                let above = root.parent().unwrap_or(Path::new("/"));
                crate::trusted::check_parent_directory(above).map_err(|err| {
                    format!(
                        "the watch root {} belongs to root, but {err}: that user could put \
                         another directory in its place and have rsync read it as root; set \
                         <localpath user=\"…\"> for this root",
                        root.display()
                    )
                })?;
                return Ok(None);
            }
            RunAs::RootOwner => {
                match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
                    Ok(Some(user)) => user,
                    // An owner without an account: its uid and the root's group.
                    _ => {
                        return Ok(Some(Identity {
                            name: meta.uid().to_string(),
                            uid: meta.uid(),
                            gid: meta.gid(),
                            groups: vec![meta.gid()],
                        }));
                    }
                }
            }
        };
        if user.uid.is_root() {
            return Ok(None);
        }
        let groups = CString::new(user.name.as_bytes())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid]);
        Ok(Some(Identity {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(nix::unistd::Gid::as_raw).collect(),
            name: user.name,
        }))
    }

    /// Runs `make` with this thread's filesystem identity (fsuid, fsgid) set to this
    /// user's, so that what it creates (a pipe, a scratch directory) belongs to them
    /// without `CAP_CHOWN`, which the unit does not grant; and what it opens is checked
    /// as for them. The thread's own identity comes back afterwards, even on a panic.
    /// Linux keeps these per thread, so the daemon's other threads are not affected.
    pub fn creating_as<T>(&self, make: impl FnOnce() -> T) -> std::io::Result<T> {
        use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
        struct Restore(Uid, Gid);
        impl Drop for Restore {
            fn drop(&mut self) {
                setfsuid(self.0);
                setfsgid(self.1);
            }
        }
        let old_gid = setfsgid(Gid::from_raw(self.gid));
        let old_uid = setfsuid(Uid::from_raw(self.uid));
        let restore = Restore(old_uid, old_gid);
        // An invalid id changes nothing and answers the current one: did the change take?
        let now_uid = setfsuid(Uid::from_raw(u32::MAX));
        let now_gid = setfsgid(Gid::from_raw(u32::MAX));
        if now_uid.as_raw() != self.uid || now_gid.as_raw() != self.gid {
            drop(restore);
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("cannot act as user {} (CAP_SETUID/CAP_SETGID?)", self.name),
            ));
        }
        let made = make();
        drop(restore);
        Ok(made)
    }

    /// The whole environment of an rsync run as this user: nothing of the daemon's own
    /// (the user can read their process's environment), and `HOME=/`, so that rsync
    /// reads no `~/.popt` of theirs (its aliases could turn a run into a dry run). ssh
    /// finds the user's keys from the user database, not from `HOME`.
    pub fn environment(&self) -> Vec<(&'static str, OsString)> {
        let mut env = vec![
            ("HOME", OsString::from("/")),
            ("USER", OsString::from(&self.name)),
            ("LOGNAME", OsString::from(&self.name)),
            (
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")),
            ),
        ];
        for name in ["LANG", "LC_ALL", "LC_CTYPE", "TZ"] {
            if let Some(value) = std::env::var_os(name) {
                env.push((name, value));
            }
        }
        env
    }
}

/// The rsync daemon password, read by sersyncd for a run that cannot read the password
/// file itself (it belongs to root and must stay private): rsync reads it from a pipe
/// instead. The same rules as rsync's own: the file must not be readable
/// by others, and its first line is the password.
pub fn read_password(file: &Path) -> Result<OsString, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(file);
    let mut opened = opened.map_err(|err| {
        format!(
            "could not open password file {}: {err} (sersyncd reads it for rsync)",
            file.display()
        )
    })?;
    let meta = opened
        .metadata()
        .map_err(|err| format!("could not open password file {}: {err}", file.display()))?;
    if meta.mode() & 0o006 != 0 {
        return Err("ERROR: password file must not be other-accessible".to_owned());
    }
    if meta.uid() != 0 && meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err("ERROR: password file must be owned by root when running as root".to_owned());
    }
    let mut bytes = Vec::new();
    opened
        .read_to_end(&mut bytes)
        .map_err(|err| format!("could not open password file {}: {err}", file.display()))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(format!(
            "ERROR: failed to read a password from {}",
            file.display()
        ));
    }
    Ok(std::ffi::OsStr::from_bytes(line).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_root_owned_tree_runs_rsync_as_root_and_a_named_user_as_that_user() {
        let tmp = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(Identity::resolve(&RunAs::RootOwner, tmp.path()), Ok(None));
        }
        let nobody = Identity::resolve(&RunAs::User("nobody".into()), tmp.path())
            .unwrap()
            .expect("nobody is not root");
        assert_eq!(nobody.name, "nobody");
        assert_ne!(nobody.uid, 0);
        assert!(nobody.groups.contains(&nobody.gid));
        assert_eq!(
            Identity::resolve(&RunAs::User("root".into()), tmp.path()),
            Ok(None)
        );
    }

    #[test]
    fn a_root_that_someone_else_could_replace_runs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = Identity::resolve(&RunAs::RootOwner, &link).unwrap_err();
        assert!(err.contains("is not a directory (a symlink"), "{err}");
        let err = Identity::resolve(&RunAs::User("nobody".into()), &link).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
        assert!(Identity::resolve(&RunAs::RootOwner, &tmp.path().join("gone")).is_err());
        if nix::unistd::geteuid().is_root() {
            // Root's directory below one that everyone may write (not sticky).
            let shared = tmp.path().join("shared");
            let root = shared.join("root");
            std::fs::create_dir_all(&root).unwrap();
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
            let err = Identity::resolve(&RunAs::RootOwner, &root).unwrap_err();
            assert!(err.contains("set <localpath user="), "{err}");
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(Identity::resolve(&RunAs::RootOwner, &root), Ok(None));
        }
    }

    #[test]
    fn the_password_is_the_first_line_of_a_private_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("rsync.pass");
        std::fs::write(&file, b"s3cret\r\nignored\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&file), Ok(OsString::from("s3cret")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(
            read_password(&file)
                .unwrap_err()
                .contains("other-accessible")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&file, b"\n").unwrap();
        assert!(
            read_password(&file)
                .unwrap_err()
                .contains("failed to read a password")
        );
        if nix::unistd::geteuid().is_root() {
            std::fs::write(&file, b"s3cret\n").unwrap();
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            assert!(
                read_password(&file)
                    .unwrap_err()
                    .contains("must be owned by root")
            );
        }
        let missing = read_password(&tmp.path().join("missing")).unwrap_err();
        assert!(
            missing.starts_with("could not open password file"),
            "{missing}"
        );
    }
}
