//! The parser on bytes captured from Linux 6.18 (ext4, x86_64) with
//! `FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID` and one
//! `FAN_MARK_FILESYSTEM` mark: a table of fixtures → parsed records.

use super::*;

/// The filesystem id and the handles (ext4: inode and generation) of the directory `cap`,
/// its new subdirectory `sub` and the file `f` of the capture.
const FSID: [u8; 8] = [0x7b, 0x11, 0xa1, 0xcf, 0x4c, 0xb9, 0x4f, 0x8b];
const CAP: &str = "e4609a00e07dd4f1";
const SUB: &str = "e6609a0081295dbe";
const FILE: &str = "e5609a0062a99dde";

const ONDIR: u64 = 0x4000_0000;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn handle(bytes: &str) -> Handle {
    Handle {
        fsid: FSID,
        // FILEID_INO32_GEN: 8 bytes of inode and generation.
        handle_type: 1,
        bytes: hex(bytes),
    }
}

fn info(kind: u8, bytes: &str, name: Option<&str>) -> Info {
    Info {
        kind,
        handle: handle(bytes),
        name: name.map(|n| n.as_bytes().to_vec()),
    }
}

fn event(mask: u64, infos: Vec<Info>) -> Event {
    Event {
        mask,
        pid: 0x28d6,
        infos,
    }
}

#[test]
fn captured_events_parse_into_their_records() {
    let table: Vec<(&str, &str, Vec<Event>)> = vec![
        (
            "open(O_CREAT) + write + close: CREATE|CLOSE_WRITE merged, DFID_NAME + FID",
            "54000000030018000801000000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f16600000001001c007b11a1cf4cb94f8b0800000001000000e5609a0062a99dde",
            vec![event(
                0x108,
                vec![
                    info(INFO_DFID_NAME, CAP, Some("f")),
                    info(INFO_FID, FILE, None),
                ],
            )],
        ),
        (
            "mkdir: CREATE|ONDIR",
            "54000000030018000001004000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f17375620001001c007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe",
            vec![event(
                0x100 | ONDIR,
                vec![
                    info(INFO_DFID_NAME, CAP, Some("sub")),
                    info(INFO_FID, SUB, None),
                ],
            )],
        ),
        (
            "rename(cap/f, cap/sub/g): RENAME with OLD and NEW DFID_NAME, then MOVE_SELF (FID only)",
            "74000000030018000000001000000000ffffffffd62800000a0020007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f1660000000c0020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe6700000001001c007b11a1cf4cb94f8b0800000001000000e5609a0062a99dde34000000030018000008000000000000ffffffffd628000001001c007b11a1cf4cb94f8b0800000001000000e5609a0062a99dde",
            vec![
                event(
                    0x1000_0000,
                    vec![
                        info(INFO_OLD_DFID_NAME, CAP, Some("f")),
                        info(INFO_NEW_DFID_NAME, SUB, Some("g")),
                        info(INFO_FID, FILE, None),
                    ],
                ),
                event(0x800, vec![info(INFO_FID, FILE, None)]),
            ],
        ),
        (
            "rename(cap/sub, cap/sub2): a name padded to 4 bytes; MOVE_SELF of a directory is DFID_NAME '.'",
            "78000000030018000000005000000000ffffffffd62800000a0020007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f1737562000c0024007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f1737562320000000001001c007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe38000000030018000008004000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe2e000000",
            vec![
                event(
                    0x1000_0000 | ONDIR,
                    vec![
                        info(INFO_OLD_DFID_NAME, CAP, Some("sub")),
                        info(INFO_NEW_DFID_NAME, CAP, Some("sub2")),
                        info(INFO_FID, SUB, None),
                    ],
                ),
                event(0x800 | ONDIR, vec![info(INFO_DFID_NAME, SUB, Some("."))]),
            ],
        ),
        (
            "chmod of a directory: ATTRIB|ONDIR on the directory itself",
            "38000000030018000400004000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe2e000000",
            vec![event(
                0x4 | ONDIR,
                vec![info(INFO_DFID_NAME, SUB, Some("."))],
            )],
        ),
        (
            "unlink: ATTRIB|DELETE_SELF of the file, then DELETE in its directory",
            "34000000030018000404000000000000ffffffffd628000001001c007b11a1cf4cb94f8b0800000001000000e5609a0062a99dde54000000030018000002000000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe6700000001001c007b11a1cf4cb94f8b0800000001000000e5609a0062a99dde",
            vec![
                event(0x404, vec![info(INFO_FID, FILE, None)]),
                event(
                    0x200,
                    vec![
                        info(INFO_DFID_NAME, SUB, Some("g")),
                        info(INFO_FID, FILE, None),
                    ],
                ),
            ],
        ),
        (
            "rmdir: DELETE_SELF|ONDIR, then DELETE|ONDIR",
            "38000000030018000004004000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe2e00000058000000030018000002004000000000ffffffffd6280000020024007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f1737562320000000001001c007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe",
            vec![
                event(0x400 | ONDIR, vec![info(INFO_DFID_NAME, SUB, Some("."))]),
                event(
                    0x200 | ONDIR,
                    vec![
                        info(INFO_DFID_NAME, CAP, Some("sub2")),
                        info(INFO_FID, SUB, None),
                    ],
                ),
            ],
        ),
        (
            "queue overflow: no records, fd FAN_NOFD, pid 0",
            "18000000030018000040000000000000ffffffff00000000",
            vec![Event {
                mask: 0x4000,
                pid: 0,
                infos: vec![],
            }],
        ),
    ];
    for (what, bytes, expected) in table {
        assert_eq!(parse(&hex(bytes)), Ok(expected), "{what}");
    }
}

#[test]
fn a_record_kind_it_does_not_read_is_skipped() {
    // DELETE with a pidfd record (type 4, len 8) before the DFID_NAME record.
    let mut bytes = Vec::new();
    let records = [
        hex("0400080005000000"),
        hex("020020007b11a1cf4cb94f8b0800000001000000e4609a00e07dd4f166000000"),
    ];
    let len = 24 + records.iter().map(Vec::len).sum::<usize>();
    bytes.extend((len as u32).to_ne_bytes());
    bytes.extend([3, 0]);
    bytes.extend(24u16.to_ne_bytes());
    bytes.extend(0x200u64.to_ne_bytes());
    bytes.extend((-1i32).to_ne_bytes());
    bytes.extend(0x28d6i32.to_ne_bytes());
    for record in &records {
        bytes.extend(record);
    }
    assert_eq!(
        parse(&bytes),
        Ok(vec![event(
            0x200,
            vec![info(INFO_DFID_NAME, CAP, Some("f"))]
        )])
    );
}

#[test]
fn malformed_buffers_are_errors_not_panics() {
    let good = hex(
        "38000000030018000400004000000000ffffffffd6280000020020007b11a1cf4cb94f8b0800000001000000e6609a0081295dbe2e000000",
    );
    let mut wrong_version = good.clone();
    wrong_version[4] = 2;
    let mut record_too_long = good.clone();
    record_too_long[26] = 0x40; // record len 0x40 > what is left of the event
    let mut handle_too_long = good.clone();
    handle_too_long[36] = 0xff; // handle_bytes 255
    let mut no_nul = good.clone();
    let last = no_nul.len() - 4;
    no_nul[last..].copy_from_slice(b"abcd");
    let mut event_too_long = good.clone();
    event_too_long[0] = 0x60;
    let mut metadata_too_short = good.clone();
    metadata_too_short[6] = 8;
    let table: Vec<(&str, Vec<u8>, &str)> = vec![
        ("half a length", good[..3].to_vec(), "truncated metadata"),
        (
            "a header cut short",
            good[..10].to_vec(),
            "event length out of bounds",
        ),
        ("version 2", wrong_version, "unknown metadata version"),
        (
            "event_len past the buffer",
            event_too_long,
            "event length out of bounds",
        ),
        (
            "metadata_len < 24",
            metadata_too_short,
            "event length out of bounds",
        ),
        (
            "record len past the event",
            record_too_long,
            "record length out of bounds",
        ),
        (
            "handle_bytes past the record",
            handle_too_long,
            "file-handle record out of bounds",
        ),
        (
            "a name without its NUL",
            no_nul,
            "file-handle record out of bounds",
        ),
    ];
    for (what, bytes, expected) in table {
        match parse(&bytes) {
            Err(err) => assert_eq!(err.what, expected, "{what}"),
            Ok(events) => panic!("{what}: parsed as {events:?}"),
        }
    }
    assert_eq!(parse(&[]), Ok(vec![]));
}
