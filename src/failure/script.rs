//! The sersync-compatible failure record, `rsync_fail_log.sh`.
//!
//! sersync 2.5 appended each failed command string to this file, `chmod 777`ed it and had
//! root run it with `/bin/sh` every `timeToExecute` minutes (reference §1.7): a local root
//! exploit by design, and unquoted paths made it run backticks and `$( )` from file names.
//! sersyncd keeps the file because operators look for it, but only as a record:
//!
//! - sersyncd never executes it; failed changes are retried from the daemon's own journal;
//! - it is rewritten whole from the current failures by
//!   [`crate::atomic_file::write_atomically`] (a temporary
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

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::shell::{QuoteError, quote, quote_os};
use crate::timestamp::rfc3339_utc;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic_file::write_atomically;
    use std::fs;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::process::Command;
    use std::time::{Duration, UNIX_EPOCH};

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
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
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
            time: UNIX_EPOCH,
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
                time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                root: root.clone(),
                argv: recorder("first"),
                stdin_paths: paths.clone(),
            },
            ScriptEntry {
                exit_code: 10,
                remote: "backup@host:dir/".to_owned(),
                time: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
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
}
