//! File names that break shells and naive parsers replicate exactly and run nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Env, find_named, wait_converged};

/// Names that would run `touch PWNED`, glob, split, or parse as options if they ever went
/// through a shell or into an argv unprotected.
fn hostile_names() -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = [
        &b"a\"b"[..],
        b"a'b",
        b"a`touch PWNED`b",
        b"$(touch PWNED)",
        b"x;y",
        b"x;touch PWNED",
        b"a|touch PWNED",
        b"a&&touch PWNED",
        b"-rf",
        b"--rsh=touch PWNED",
        b"-e touch PWNED",
        b"*",
        b"[ab]",
        b"?",
        b"a\nb",
        b"line\ntouch PWNED",
        b"tab\there",
        b"cr\rhere",
        b"back\\slash",
        b"bad\xff\xfename",
        b"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93",
        b"with space",
        b" leading and trailing ",
        b"a:b",
        b"host::module",
        b"#comment",
        b";semicolon",
        b"%s%n",
        b"<&>",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect();
    let mut long = b"L".repeat(251);
    long.extend_from_slice(b".txt");
    assert_eq!(long.len(), 255);
    names.push(long);
    names
}

fn path(root: &Path, relative: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(relative))
}

both_backends! {
    fn hostile_names_replicate_exactly_and_run_nothing() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let daemon = env.start(|b| b);
        let names = hostile_names();
        for name in &names {
            std::fs::write(path(env.src(), name), name).unwrap();
        }
        // A directory with a hostile name, with hostile files (and a subdirectory) inside,
        // written right after the mkdir.
        let dir = b"$(touch PWNED) dir;`touch PWNED`\n\xff".to_vec();
        std::fs::create_dir(path(env.src(), &dir)).unwrap();
        for name in [&b"-rf"[..], b"a\nb", b"*"] {
            let mut relative = dir.clone();
            relative.push(b'/');
            relative.extend_from_slice(name);
            std::fs::write(path(env.src(), &relative), &relative).unwrap();
        }
        let mut sub = dir.clone();
        sub.extend_from_slice(b"/[sub] $HOME");
        std::fs::create_dir(path(env.src(), &sub)).unwrap();
        sub.extend_from_slice(b"/x;y");
        std::fs::write(path(env.src(), &sub), b"deep").unwrap();
        wait_converged(env.src(), env.replica(), Duration::from_secs(20));

        // Every deletion replicates too.
        for name in &names {
            std::fs::remove_file(path(env.src(), name)).unwrap();
        }
        std::fs::remove_dir_all(path(env.src(), &dir)).unwrap();
        wait_converged(env.src(), env.replica(), Duration::from_secs(20));
        assert_eq!(std::fs::read_dir(env.replica()).unwrap().count(), 0);

        let mut pwned = Vec::new();
        for root in [
            env.src(),
            env.replica(),
            &daemon.cwd(),
            &daemon.state_dir(),
            env.rsyncd.dir(),
        ] {
            pwned.extend(find_named(root, "PWNED"));
        }
        // Places a stray shell could have run in (not recursively: the cwd is the repo).
        let cwd = std::env::current_dir().unwrap();
        for candidate in [
            cwd.join("PWNED"),
            PathBuf::from("/PWNED"),
            PathBuf::from("/tmp/PWNED"),
        ] {
            if std::fs::symlink_metadata(&candidate).is_ok() {
                pwned.push(candidate);
            }
        }
        assert!(pwned.is_empty(), "a file name was executed: {pwned:?}");
        // The debug log names every path: a newline in a name must not start a line of its
        // own ("line\ntouch PWNED" would forge one).
        let log = daemon.log();
        assert!(
            log.contains("line\\ntouch PWNED"),
            "the name is not in the log:\n{log}"
        );
        let forged: Vec<&str> = log
            .lines()
            .filter(|line| line.starts_with("touch PWNED") || line.starts_with("here"))
            .collect();
        assert!(forged.is_empty(), "file names forged log lines: {forged:?}");
    }
}

/// A full sync split into concurrent runs passes top-level directories as `./name`
/// arguments: hostile directory names replicate exactly, and hostile remote-only entries
/// at the top level and below are deleted, with nothing run.
#[test]
fn hostile_top_level_directories_in_a_split_full_sync() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let names = hostile_names();
    for name in &names {
        std::fs::create_dir(path(env.src(), name)).unwrap();
        let mut inner = name.clone();
        inner.extend_from_slice(b"/-inner $(touch PWNED)");
        std::fs::write(path(env.src(), &inner), &inner).unwrap();
        // On the replica only: the full sync's --delete must remove them.
        std::fs::create_dir_all(path(env.replica(), name)).unwrap();
        let mut stale = name.clone();
        stale.extend_from_slice(b"/stale `touch PWNED`");
        std::fs::write(path(env.replica(), &stale), b"stale").unwrap();
    }
    for name in [&b"-remote only"[..], b"*x?", b"gone\n$(touch PWNED)"] {
        let mut stale = b"zz-remote/".to_vec();
        stale.extend_from_slice(name);
        std::fs::create_dir_all(path(env.replica(), b"zz-remote")).unwrap();
        std::fs::write(path(env.replica(), &stale), b"stale").unwrap();
        std::fs::write(path(env.replica(), name), b"stale").unwrap();
    }
    let daemon = env.start(|b| b.arg("-r").arg("-n").arg("4"));
    wait_converged(env.src(), env.replica(), Duration::from_secs(30));
    let mut pwned = Vec::new();
    for root in [env.src(), env.replica(), &daemon.cwd(), &daemon.state_dir()] {
        pwned.extend(find_named(root, "PWNED"));
    }
    assert!(pwned.is_empty(), "a file name was executed: {pwned:?}");
}
