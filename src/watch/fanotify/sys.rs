//! The fanotify backend's system calls: the only unsafe code of `watch::fanotify`.
//!
//! `nix` has no wrapper for FID-mode fanotify, `open_by_handle_at` or `name_to_handle_at`,
//! so these call `libc` directly. Each function takes and returns owned, safe types
//! (`OwnedFd`, byte vectors, paths); no pointer outlives the call it is passed to.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::record::Handle;

/// `MAX_HANDLE_SZ` of `<linux/exportfs.h>`: no filesystem encodes a longer handle.
const MAX_HANDLE_SZ: usize = 128;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `fanotify_init(flags, O_RDONLY | O_CLOEXEC | O_LARGEFILE)`.
pub fn init(flags: libc::c_uint) -> io::Result<OwnedFd> {
    let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
    // SAFETY: fanotify_init takes two integers and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fanotify_mark(group, flags, mask, AT_FDCWD, path)`.
pub fn mark(group: BorrowedFd<'_>, flags: libc::c_uint, mask: u64, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is NUL-terminated and lives across the call; the kernel only reads it.
    // The group descriptor is borrowed, so it is open for the whole call.
    let rc = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            flags,
            mask,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct file_handle` with room for the largest handle, aligned like the C struct.
#[repr(C)]
struct FileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// `open_by_handle_at(mount, handle, O_PATH | O_CLOEXEC)`: the object a handle names,
/// found through the filesystem of `mount` (needs `CAP_DAC_READ_SEARCH`).
pub fn open_by_handle(mount: BorrowedFd<'_>, handle: &Handle) -> io::Result<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut fh = FileHandle {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    fh.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `fh` has the layout of `struct file_handle` followed by `handle_bytes` bytes
    // of handle (checked above to fit); it lives across the call and the kernel only reads
    // it. `mount` is borrowed, so it is open for the whole call.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut fh).cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name_to_handle_at(AT_FDCWD, path, …, 0)` (not following a final symlink) and the
/// filesystem id of `path`: the handle fanotify reports for it.
pub fn handle_of(path: &Path) -> io::Result<Handle> {
    let c = c_path(path)?;
    let mut fh = FileHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `c` is NUL-terminated; `fh` has room for MAX_HANDLE_SZ bytes, which its
    // `handle_bytes` says; `mount_id` is a valid int. All live across the call.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&raw mut fh).cast::<libc::file_handle>(),
            &raw mut mount_id,
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (fh.handle_bytes as usize).min(MAX_HANDLE_SZ);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    Ok(Handle {
        fsid: fsid(file.as_fd())?,
        handle_type: fh.handle_type,
        bytes: fh.f_handle[..len].to_vec(),
    })
}

/// The filesystem id (`statfs.f_fsid`) of the filesystem `fd` is on, as the bytes
/// fanotify reports in its records.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<[u8; 8]> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` has room for a `struct statfs`, which the kernel fills on success.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so the struct is initialized.
    let st = unsafe { st.assume_init() };
    // SAFETY: `fsid_t` is two C ints (8 bytes, no padding, any bit pattern valid); its
    // fields are private in `libc`, so its bytes are read as a whole.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(st.f_fsid) })
}
