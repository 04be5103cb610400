//! The records a fanotify group in FID mode reads out, parsed from bytes (no unsafe).
//!
//! A read returns whole events, each a `struct fanotify_event_metadata` (24 bytes:
//! `event_len: u32, vers: u8, reserved: u8, metadata_len: u16, mask: u64, fd: i32, pid:
//! i32`) followed by information records up to `event_len`. Each record starts with
//! `info_type: u8, pad: u8, len: u16`; the file-handle kinds (FID, DFID, DFID_NAME,
//! OLD_DFID_NAME, NEW_DFID_NAME) continue with `fsid: [i32; 2]`, `handle_bytes: u32`,
//! `handle_type: i32`, the handle, and for the `*_NAME` kinds a NUL-terminated name
//! (padded to `len`). Other kinds (pidfd, error) are skipped by their length.
//!
//! Everything is checked against the buffer: a malformed event ends the parse with an
//! error (the caller treats it like an overflow: events were lost, rescan).

/// `FANOTIFY_METADATA_VERSION` this parser reads.
pub const METADATA_VERSION: u8 = 3;
const METADATA_LEN: usize = 24;

pub const INFO_FID: u8 = 1;
pub const INFO_DFID_NAME: u8 = 2;
pub const INFO_DFID: u8 = 3;
pub const INFO_OLD_DFID_NAME: u8 = 10;
pub const INFO_NEW_DFID_NAME: u8 = 12;

/// A file handle as the kernel reported it: the filesystem id and the opaque handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Handle {
    /// `__kernel_fsid_t` in native byte order (as `statfs` reports `f_fsid`).
    pub fsid: [u8; 8],
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

/// One information record of the file-handle kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// `FAN_EVENT_INFO_TYPE_*`.
    pub kind: u8,
    pub handle: Handle,
    /// The entry name of the `*_NAME` kinds (`.` for an event on a directory itself).
    pub name: Option<Vec<u8>>,
}

/// One event: its mask (`FAN_*`), the pid that caused it and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub mask: u64,
    pub pid: i32,
    pub infos: Vec<Info>,
}

impl Event {
    /// The first record of `kind`.
    pub fn info(&self, kind: u8) -> Option<&Info> {
        self.infos.iter().find(|info| info.kind == kind)
    }
}

/// Why a buffer could not be parsed (the offset of the event at fault and what is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
    pub what: &'static str,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed fanotify event at byte {}: {}",
            self.offset, self.what
        )
    }
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Parses every event in `buf` (what one `read` returned).
pub fn parse(buf: &[u8]) -> Result<Vec<Event>, Malformed> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let bad = |what| Malformed { offset, what };
        let rest = &buf[offset..];
        let event_len = u32_at(rest, 0).ok_or(bad("truncated metadata"))? as usize;
        if rest.get(4) != Some(&METADATA_VERSION) {
            return Err(bad("unknown metadata version"));
        }
        let metadata_len = u16_at(rest, 6).ok_or(bad("truncated metadata"))? as usize;
        if metadata_len < METADATA_LEN || event_len < metadata_len || event_len > rest.len() {
            return Err(bad("event length out of bounds"));
        }
        let mask = u64_at(rest, 8).ok_or(bad("truncated metadata"))?;
        let pid = i32_at(rest, 20).ok_or(bad("truncated metadata"))?;
        let event = &rest[..event_len];
        let mut infos = Vec::new();
        let mut at = metadata_len;
        while at < event_len {
            let kind = event[at];
            let len = u16_at(event, at + 2).ok_or(bad("truncated record header"))? as usize;
            if len < 4 || at + len > event_len {
                return Err(bad("record length out of bounds"));
            }
            let record = &event[at..at + len];
            if matches!(
                kind,
                INFO_FID | INFO_DFID_NAME | INFO_DFID | INFO_OLD_DFID_NAME | INFO_NEW_DFID_NAME
            ) {
                infos.push(parse_fid(kind, record).ok_or(bad("file-handle record out of bounds"))?);
            }
            at += len;
        }
        events.push(Event { mask, pid, infos });
        offset += event_len;
    }
    Ok(events)
}

fn parse_fid(kind: u8, record: &[u8]) -> Option<Info> {
    let fsid: [u8; 8] = record.get(4..12)?.try_into().ok()?;
    let handle_bytes = u32_at(record, 12)? as usize;
    let handle_type = i32_at(record, 16)?;
    let end = 20usize.checked_add(handle_bytes)?;
    let bytes = record.get(20..end)?.to_vec();
    let name = if matches!(
        kind,
        INFO_DFID_NAME | INFO_OLD_DFID_NAME | INFO_NEW_DFID_NAME
    ) {
        let tail = record.get(end..)?;
        let nul = tail.iter().position(|&b| b == 0)?;
        Some(tail[..nul].to_vec())
    } else {
        None
    };
    Some(Info {
        kind,
        handle: Handle {
            fsid,
            handle_type,
            bytes,
        },
        name,
    })
}

#[cfg(all(test, target_endian = "little"))]
mod tests;
