//! The sersync-compatible failure record, `rsync_fail_log.sh`.
//!
//! sersync 2.5 appended each failed command string to this file, `chmod 777`ed it and had
//! root run it with `/bin/sh` every `timeToExecute` minutes (reference §1.7): a local root
//! exploit by design, and unquoted paths made it run backticks and `$( )` from file names.
//! sersyncd keeps the file because operators look for it, but only as a record:
//!
//! - sersyncd never executes it; failed changes are retried from the daemon's own journal;
//! - it is rewritten whole from the current failures by [`write_atomically`] (a temporary
//!   file, mode 0600, fsync, rename, fsync of the directory), so it is never half-written
//!   and never readable or writable by other users;
//! - every word in it, including the program, the options, the root and each path, goes
//!   through [`crate::shell::quote`]. Nothing else here produces shell syntax: the only
//!   literal shell text is the fixed `cd`, `&&`, `printf '%s\0'`, `|` and `</dev/null`.
//!
//! Each entry keeps sersync's `#errno` comment line, followed by a single command that
//! re-sends exactly the paths of the failed run the way sersyncd sent them, NUL-separated
//! on stdin:
//!
//! ```text
//! #errno 23 rsync://127.0.0.1/web/ 2025-11-21T19:54:07Z
//! cd /srv/www && printf '%s\0' 'a b.txt' 'it'\''s' | /usr/bin/rsync -artuz --files-from=- --from0 ./ rsync://127.0.0.1/web/
//! ```

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::shell::{QuoteError, quote, quote_os};

/// One failed rsync run, as recorded in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    /// rsync's exit code (for a run killed by signal N, 128 + N as the shell reports it).
    pub exit_code: i32,
    /// The remote as the operator knows it (e.g. `rsync://127.0.0.1/web/`); written on a
    /// comment line, with control characters and whitespace replaced by `?`.
    pub remote: String,
    /// When the run failed; written as RFC 3339 UTC.
    pub time: SystemTime,
    /// The working directory of the run (the watch root). A relative root is written as
    /// `./root` so that `CDPATH` cannot redirect it.
    pub root: PathBuf,
    /// The whole command: the program (`argv[0]`, e.g. `/usr/bin/rsync`) and its arguments.
    pub argv: Vec<OsString>,
    /// The records rsync read NUL-terminated on stdin (the paths of `--files-from=-
    /// --from0`, or the rules of `--filter='. -' --from0`). Empty: stdin is `/dev/null`.
    pub stdin_paths: Vec<Vec<u8>>,
}

const HEADER: &str = "\
#!/bin/sh
# rsync_fail_log.sh: the rsync runs that are failing, written by sersyncd.
#
# This file is a record for humans, not a queue. sersyncd keeps every failed change in
# its own journal (in its state directory) and retries it by itself, with backoff; it
# never runs this file. The file is rewritten as a whole (atomically, mode 0600) when the
# set of failures changes.
#
# Each entry is a comment \"#errno CODE REMOTE TIME\" (rsync's exit code, the remote, the
# time of the failure in UTC), then one command that re-sends exactly the paths of the
# failed run, NUL-separated on rsync's stdin as sersyncd sent them. Every word is quoted
# for POSIX sh, so the file is safe to read and to run by hand, as the user sersyncd runs
# as:
#     sh rsync_fail_log.sh        # every entry, in order
# or paste a single command line into a shell. Running it does not tell sersyncd
# anything: it keeps retrying on its own until a run succeeds.
";

/// The whole script for `entries`, header included.
pub fn render(entries: &[ScriptEntry]) -> Vec<u8> {
    let mut out = HEADER.as_bytes().to_vec();
    for entry in entries {
        out.push(b'\n');
        out.extend_from_slice(
            format!(
                "#errno {} {} {}\n",
                entry.exit_code,
                comment_field(&entry.remote),
                rfc3339_utc(entry.time)
            )
            .as_bytes(),
        );
        match command(entry) {
            Ok(line) => {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
            Err(error) => {
                out.extend_from_slice(format!("# (command not written: {error})\n").as_bytes());
            }
        }
    }
    out
}

/// `cd ROOT && [printf '%s\0' PATHS… |] ARGV… [</dev/null]`.
fn command(entry: &ScriptEntry) -> Result<Vec<u8>, QuoteError> {
    let mut line = b"cd ".to_vec();
    line.extend_from_slice(&quote_os(root_word(&entry.root).as_os_str())?);
    line.extend_from_slice(b" && ");
    if !entry.stdin_paths.is_empty() {
        line.extend_from_slice(b"printf '%s\\0'");
        for path in &entry.stdin_paths {
            line.push(b' ');
            line.extend_from_slice(&quote(path)?);
        }
        line.extend_from_slice(b" | ");
    }
    if entry.argv.is_empty() {
        line.extend_from_slice(b"rsync");
    }
    line.extend_from_slice(&crate::shell::join(&entry.argv)?);
    if entry.stdin_paths.is_empty() {
        line.extend_from_slice(b" </dev/null");
    }
    Ok(line)
}

/// An absolute root as is; a relative one as `./root`, which `cd` never looks up in
/// `CDPATH` and which cannot start with `-`.
fn root_word(root: &Path) -> PathBuf {
    if root.is_absolute() {
        root.to_path_buf()
    } else if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        Path::new(".").join(root)
    }
}

/// A single whitespace-free token for a comment line: no byte of it can end the comment.
fn comment_field(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC) for any time, before the epoch included.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let seconds: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Round towards the past: 0.5 s before the epoch is 23:59:59.
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let partial = i64::from(before.subsec_nanos() > 0);
            whole.saturating_add(partial).saturating_neg()
        }
    };
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction; the fallbacks are unreachable.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

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
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::process::Command;
    use std::time::Duration;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sersync-script-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn at(seconds: i64) -> SystemTime {
        if seconds >= 0 {
            UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
        }
    }

    #[test]
    fn rfc3339_table() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (86_399, "1970-01-01T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (-86_400, "1969-12-31T00:00:00Z"),
            (-2_208_988_800, "1900-01-01T00:00:00Z"),
            (-62_135_596_800, "0001-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_utc(at(seconds)), text, "{seconds}");
        }
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_millis(1500)),
            "1970-01-01T00:00:01Z"
        );
    }

    /// Every day from 1900 to 2100 follows the previous one in the calendar.
    #[test]
    fn civil_from_days_is_a_calendar() {
        let mut previous = civil_from_days(-25_567); // 1900-01-01
        assert_eq!(previous, (1900, 1, 1));
        for days in -25_566..=47_482 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let leap = (py % 4 == 0 && py % 100 != 0) || py % 400 == 0;
            let month_len = match pm {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if pd < month_len {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            previous = (y, m, d);
        }
        assert_eq!(previous, (2100, 1, 1));
    }

    fn hostile_paths() -> Vec<Vec<u8>> {
        [
            &b"a\"b"[..],
            b"a`touch PWNED`b",
            b"$(touch PWNED)",
            b"x;y",
            b"-rf",
            b"*",
            b"[ab]",
            b"?",
            b"new\nline",
            b"bad\xffutf8",
            b"with space",
            b"it's",
            b"~",
            b"#hash",
            b"dir/sub/file.txt",
            b"",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect()
    }

    #[test]
    fn header_and_entry_format() {
        let entry = ScriptEntry {
            exit_code: 10,
            remote: "rsync://127.0.0.1/web/\nrm -rf /".to_owned(),
            time: at(1_700_000_000),
            root: PathBuf::from("/srv/www"),
            argv: [
                "/usr/bin/rsync",
                "-artuz",
                "--files-from=-",
                "--from0",
                "./",
                "rsync://127.0.0.1/web/",
            ]
            .map(OsString::from)
            .to_vec(),
            stdin_paths: vec![b"a b".to_vec(), b"it's".to_vec()],
        };
        let text = String::from_utf8(render(std::slice::from_ref(&entry))).unwrap();
        assert!(text.starts_with("#!/bin/sh\n# rsync_fail_log.sh"));
        assert!(text.contains("never runs this file"));
        assert!(text.ends_with(concat!(
            "\n#errno 10 rsync://127.0.0.1/web/?rm?-rf?/ 2023-11-14T22:13:20Z\n",
            "cd /srv/www && printf '%s\\0' 'a b' 'it'\\''s' | /usr/bin/rsync -artuz --files-from=- --from0 ./ rsync://127.0.0.1/web/\n",
        )), "{text}");
        // Every line of the header is a comment.
        for line in HEADER.lines() {
            assert!(line.starts_with('#'), "{line}");
        }

        let no_stdin = ScriptEntry {
            root: PathBuf::from("-rel dir"),
            stdin_paths: Vec::new(),
            remote: String::new(),
            ..entry
        };
        let text = String::from_utf8(render(&[no_stdin])).unwrap();
        assert!(
            text.contains("#errno 10 - 2023-11-14T22:13:20Z\n"),
            "{text}"
        );
        assert!(
            text.contains("cd './-rel dir' && /usr/bin/rsync -artuz"),
            "{text}"
        );
        assert!(text.ends_with(" </dev/null\n"), "{text}");
    }

    #[test]
    fn an_argument_with_nul_is_not_written() {
        let entry = ScriptEntry {
            exit_code: 23,
            remote: "r".to_owned(),
            time: at(0),
            root: PathBuf::from("/srv"),
            argv: vec![OsString::from("rsync")],
            stdin_paths: vec![b"a\0b".to_vec()],
        };
        let text = String::from_utf8(render(&[entry])).unwrap();
        assert!(text.ends_with("#errno 23 r 1970-01-01T00:00:00Z\n# (command not written: cannot quote a word containing a NUL byte (at offset 1) for the shell)\n"), "{text}");
    }

    /// The rendered script, run by a real shell with a recorder in place of rsync, hands
    /// over exactly the recorded paths and arguments, and executes nothing from them.
    #[test]
    fn hostile_paths_arrive_byte_exact_and_run_nothing() {
        let dir = scratch_dir("run");
        let root = dir.join("root dir `touch PWNED` $(touch PWNED)");
        fs::create_dir_all(&root).unwrap();
        let paths = hostile_paths();
        let hostile_args: Vec<OsString> = hostile_paths()
            .into_iter()
            .map(OsString::from_vec)
            .collect();
        // "rsync" records its stdin in `stdin.out` and its arguments, NUL-terminated, in
        // `args.out`, both in its working directory.
        let recorder = |tag: &str| {
            let mut argv = vec![
                OsString::from("/bin/sh"),
                OsString::from("-c"),
                OsString::from(format!(
                    "cat > {tag}.stdin.out; printf '%s\\0' \"$@\" > {tag}.args.out"
                )),
                OsString::from("recorder"),
            ];
            argv.extend(hostile_args.iter().cloned());
            argv
        };
        let entries = vec![
            ScriptEntry {
                exit_code: 23,
                remote: "rsync://127.0.0.1/web/".to_owned(),
                time: at(1_700_000_000),
                root: root.clone(),
                argv: recorder("first"),
                stdin_paths: paths.clone(),
            },
            ScriptEntry {
                exit_code: 10,
                remote: "backup@host:dir/".to_owned(),
                time: at(1_700_000_001),
                root: root.clone(),
                argv: recorder("second"),
                stdin_paths: Vec::new(),
            },
        ];
        let script = dir.join("rsync_fail_log.sh");
        write_atomically(&script, &render(&entries)).unwrap();

        let shells: Vec<Vec<&str>> = [
            vec!["/bin/sh"],
            vec!["/bin/dash"],
            vec!["/bin/bash", "--posix"],
        ]
        .into_iter()
        .filter(|shell| Path::new(shell[0]).exists())
        .collect();
        for shell in shells {
            let output = Command::new(shell[0])
                .args(&shell[1..])
                .arg(&script)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{shell:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let mut expected_stdin = Vec::new();
            for path in &paths {
                expected_stdin.extend_from_slice(path);
                expected_stdin.push(0);
            }
            let mut expected_args = Vec::new();
            for arg in &hostile_args {
                expected_args.extend_from_slice(arg.as_bytes());
                expected_args.push(0);
            }
            assert_eq!(
                fs::read(root.join("first.stdin.out")).unwrap(),
                expected_stdin
            );
            assert_eq!(
                fs::read(root.join("first.args.out")).unwrap(),
                expected_args
            );
            assert_eq!(fs::read(root.join("second.stdin.out")).unwrap(), b"");
            assert_eq!(
                fs::read(root.join("second.args.out")).unwrap(),
                expected_args
            );
            for place in [&dir, &root] {
                assert!(!place.join("PWNED").exists(), "{shell:?} ran a quoted word");
            }
            for out in [
                "first.stdin.out",
                "first.args.out",
                "second.stdin.out",
                "second.args.out",
            ] {
                fs::remove_file(root.join(out)).unwrap();
            }
        }
        let _ = fs::remove_dir_all(&dir);
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
