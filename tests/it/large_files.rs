//! Large files (`<queue largeFiles>`) go out in a run of their own per remote: small files
//! written during a large upload arrive before it ends, and whatever happens to the large
//! file meanwhile (rewritten, its directory removed, renamed) the replica ends equal.
//!
//! The uploads are made slow with `--bwlimit` (KiB/s) in `<commonParams>`: at 1 MiB/s a
//! 6 MiB file of random bytes takes about 6 s, while a small file takes milliseconds.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{CONVERGE, Env, wait_converged, write};

/// 6 MiB of bytes that do not compress (`-z` is on), different for each `seed`.
fn random_bytes(seed: u64) -> Vec<u8> {
    random_bytes_of(seed, 6 << 20)
}

fn random_bytes_of(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn start(env: &Env) -> crate::harness::Sersyncd {
    start_at(env, 1024)
}

/// With uploads limited to `kib_per_s`.
fn start_at(env: &Env, kib_per_s: u32) -> crate::harness::Sersyncd {
    env.start(|b| {
        b.common_params(&format!("-artuz --bwlimit={kib_per_s}"))
            .raw_sersync_xml(r#"<queue largeFiles="1M"/>"#)
    })
}

/// Waits until `path` holds `contents`; the time it took, or `None` after `within`.
fn arrival(path: &Path, contents: &[u8], within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if fs::read(path).is_ok_and(|got| got == contents) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Long enough for a few 6 MiB uploads at 1 MiB/s, and the runs after them.
const SLOW_CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn small_files_written_during_a_large_upload_arrive_before_it_ends() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = start(&env);
    let big = random_bytes(1);
    fs::write(env.src().join("big.iso"), &big).unwrap();
    // The large upload has started when the small files are written.
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..5 {
        let name = format!("small-{n}.txt");
        write(env.src(), &name, &format!("small {n}\n"));
        let took = arrival(
            &env.replica().join(&name),
            format!("small {n}\n").as_bytes(),
            Duration::from_secs(3),
        );
        assert!(
            took.is_some(),
            "{name} did not arrive within 3 s while big.iso uploads:\n{}",
            _daemon.log()
        );
        let big_there = fs::read(env.replica().join("big.iso")).is_ok_and(|got| got == big);
        assert!(
            !big_there,
            "big.iso (6 MiB at 1 MiB/s) was complete before {name} arrived: the small file \
             waited for it"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_converged(env.src(), env.replica(), SLOW_CONVERGE);
}

#[test]
fn a_large_file_rewritten_moved_or_removed_during_its_upload_ends_equal() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = start(&env);
    fs::create_dir(env.src().join("d")).unwrap();
    fs::create_dir(env.src().join("e")).unwrap();
    fs::write(env.src().join("d/big"), random_bytes(2)).unwrap();
    fs::write(env.src().join("e/big"), random_bytes(3)).unwrap();
    fs::write(env.src().join("moved"), random_bytes(4)).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // During the uploads: a new version of one, the directory of another removed and a
    // small file made at the same path, the third renamed into a new directory.
    fs::write(env.src().join("e/big"), random_bytes(5)).unwrap();
    fs::remove_dir_all(env.src().join("d")).unwrap();
    fs::create_dir(env.src().join("d")).unwrap();
    write(env.src(), "d/big", "small now\n");
    fs::create_dir(env.src().join("n")).unwrap();
    fs::rename(env.src().join("moved"), env.src().join("n/moved")).unwrap();
    write(env.src(), "after.txt", "after\n");
    assert!(
        arrival(
            &env.replica().join("after.txt"),
            b"after\n",
            Duration::from_secs(3)
        )
        .is_some(),
        "a small file waited for the large uploads"
    );
    wait_converged(env.src(), env.replica(), SLOW_CONVERGE);
}

#[test]
fn a_stop_that_ends_a_large_upload_leaves_it_owed_to_the_next_start() {
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    // 3 MiB at 256 KiB/s: 12 s, longer than the stop waits for rsync (10 s).
    let big = random_bytes_of(6, 3 << 20);
    let mut daemon = start_at(&env, 256);
    fs::write(env.src().join("big"), &big).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        !fs::read(env.replica().join("big")).is_ok_and(|got| got == big),
        "big was complete before the stop ended its upload: the test proves nothing"
    );
    // Restarted without -r: only what the stop saved can bring it.
    daemon.restart();
    wait_converged(env.src(), env.replica(), SLOW_CONVERGE.max(CONVERGE));
}
