//! `<filter>` excludes, live and with `-r`, and the built-in ignore of temporary files.

use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::harness::{
    CONVERGE, Env, assert_never_appears, assert_none_appear, wait_converged_ignoring, write,
};

/// How long an excluded path is watched for after everything else arrived.
const NEVER: Duration = Duration::from_secs(1);

/// What the filter of these tests excludes: `(.*)\.tmp`, `cache`, `cache/.*`.
fn excluded(relative: &[u8]) -> bool {
    relative.ends_with(b".tmp") || relative == b"cache" || relative.starts_with(b"cache/")
}

fn under(root: &Path, relative: &[&str]) -> Vec<PathBuf> {
    relative.iter().map(|r| root.join(r)).collect()
}

fn with_filter(env: &Env, r: bool) -> crate::harness::Sersyncd {
    env.start(|b| {
        let b = b.exclude(r"(.*)\.tmp").exclude("cache").exclude("cache/.*");
        if r { b.arg("-r") } else { b }
    })
}

both_backends! {
    fn excluded_paths_never_reach_the_replica() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = with_filter(&env, false);
        for path in [
            "keep.txt",
            "x.tmp",
            "sub/y.tmp",
            "sub/keep.txt",
            "cache/a.txt",
            "cache/deep/b.txt",
            // Whole-string match from the root: these are not excluded.
            "sub/cache/c.txt",
            "notcache.txt",
            "x.tmp.txt",
        ] {
            write(env.src(), path, path);
        }
        wait_converged_ignoring(env.src(), env.replica(), CONVERGE, &excluded);
        assert!(env.replica().join("sub/cache/c.txt").is_file());
        assert!(env.replica().join("x.tmp.txt").is_file());
        // Change excluded files again, then a visible one, and wait for the visible one.
        write(env.src(), "x.tmp", "changed");
        write(env.src(), "cache/a.txt", "changed");
        write(env.src(), "keep.txt", "changed, and longer");
        wait_converged_ignoring(env.src(), env.replica(), CONVERGE, &excluded);
        assert_none_appear(
            &under(env.replica(), &["x.tmp", "sub/y.tmp", "cache"]),
            NEVER,
        );
    }
}

#[test]
fn full_sync_neither_sends_nor_deletes_excluded_paths() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    for path in [
        "keep.txt",
        "x.tmp",
        "cache/a.txt",
        "sub/keep.txt",
        "sub/z.tmp",
    ] {
        write(env.src(), path, path);
    }
    // Excluded paths that exist only on the replica must survive the full sync ...
    write(env.replica(), "remote-only.tmp", "precious\n");
    write(env.replica(), "cache/remote-only.txt", "precious too\n");
    // ... and stale ones that are not excluded must go.
    write(env.replica(), "stale.txt", "stale\n");
    write(env.replica(), "sub/stale-dir/s.txt", "stale\n");
    let _daemon = with_filter(&env, true);
    wait_converged_ignoring(env.src(), env.replica(), CONVERGE, &excluded);
    for (path, contents) in [
        ("remote-only.tmp", "precious\n"),
        ("cache/remote-only.txt", "precious too\n"),
    ] {
        let found = std::fs::read_to_string(env.replica().join(path));
        assert_eq!(
            found.as_deref().ok(),
            Some(contents),
            "{path} is excluded and only on the replica: the full sync must leave it ({found:?})"
        );
    }
    assert!(!env.replica().join("stale.txt").exists());
    assert_none_appear(
        &under(env.replica(), &["x.tmp", "sub/z.tmp", "cache/a.txt"]),
        NEVER,
    );
}

/// The built-in ignore: non-directories named `.*`, `*~` or `4913`.
fn temp_file(relative: &[u8]) -> bool {
    let name = relative.rsplit(|&b| b == b'/').next().unwrap_or(relative);
    name.starts_with(b".") || name.ends_with(b"~") || name == b"4913"
}

both_backends! {
    fn temporary_files_are_ignored_by_default() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b);
        for path in [
            ".htaccess",
            "x~",
            "4913",
            "sub/.swp",
            "sub/keep.txt",
            "keep.txt",
        ] {
            write(env.src(), path, path);
        }
        wait_converged_ignoring(env.src(), env.replica(), CONVERGE, &temp_file);
        assert_none_appear(
            &under(env.replica(), &["x~", "4913", "sub/.swp"]),
            NEVER / 2,
        );
        assert_never_appears(&env.replica().join(".htaccess"), NEVER / 2);
    }
}

both_backends! {
    fn temporary_files_are_synced_when_the_ignore_is_off() {
        let Some(env) = Env::new(&["web"]) else {
            return;
        };
        let _daemon = env.start(|b| b.ignore_temp_files(false));
        for path in [".htaccess", "x~", "4913", "sub/.hidden", "keep.txt"] {
            write(env.src(), path, path);
        }
        env.converged();
        assert!(env.replica().join(".htaccess").is_file());
    }
}
