//! How far a full sync is, as rsync itself says (`--info=progress2`): in `status`, in the
//! `STATUS=` line, as `FullSyncProgress` signals and in `sersyncctl full-sync --wait`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::control::{Monitor, ctl, on_bus, wait_status};
use crate::harness::bus::{Bus, Policy};
use crate::harness::{Env, Sersyncd, wait_converged};

/// A daemon whose next full sync takes some 6 s: 12 MiB of incompressible data, there
/// before the start (only a full sync sends it), sent at about 2 MiB/s.
fn slow_full_sync_ahead(env: &Env, bus: &Bus) -> Sersyncd {
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    for i in 0..48 {
        let mut data = vec![0u8; 256 * 1024];
        std::io::Read::read_exact(&mut random, &mut data).unwrap();
        let mut file = std::fs::File::create(env.src().join(format!("blob-{i:02}"))).unwrap();
        file.write_all(&data).unwrap();
    }
    env.start(|b| on_bus(b, bus, "web").common_params("-artu --bwlimit=2048"))
}

#[test]
fn a_long_full_sync_shows_how_far_it_is_everywhere_operators_look() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let daemon = slow_full_sync_ahead(&env, &bus);
    let mut monitor = Monitor::start(&bus, None, &["--json"]);
    std::thread::sleep(Duration::from_millis(500));

    let waiting = std::thread::spawn({
        let address = bus.address().to_owned();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sersyncctl"))
                .args([
                    "--bus-address",
                    &address,
                    "full-sync",
                    "--wait",
                    "--timeout",
                    "120",
                ])
                .output()
                .expect("run sersyncctl full-sync --wait")
        }
    });

    // The status shows it while it runs, and it moves.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<Json> = Vec::new();
    while seen.len() < 2 || seen.first() == seen.last() {
        assert!(
            Instant::now() < deadline,
            "no moving progress in status: {seen:?}"
        );
        let status = ctl(&bus, &["status", "--json"]).expect(0).json();
        let remote = &status["remotes"][0];
        if !remote["full_sync"].is_null() {
            let state = remote["state"].as_str().unwrap_or("");
            assert!(
                state.starts_with("ok (full sync running, ") && state.ends_with("%)"),
                "{state}"
            );
            seen.push(remote["full_sync"].clone());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let first = &seen[0];
    let last = seen.last().unwrap();
    assert!(
        first["bytes_done"].as_u64() < last["bytes_done"].as_u64(),
        "{first} then {last}"
    );
    let percent = last["percent"].as_u64().unwrap();
    assert!(percent < 100, "{last}");
    assert!(
        last["bytes_total"].as_u64() >= last["bytes_done"].as_u64(),
        "{last}"
    );
    assert!(last["bytes_per_second"].as_u64() > Some(0), "{last}");

    // Signals, at most about once a second, with rsync's figures.
    let signal = monitor.wait_for("a FullSyncProgress signal", |line| {
        line.contains("\"signal\":\"FullSyncProgress\"")
    });
    let signal: Json = serde_json::from_str(&signal).unwrap();
    assert!(
        signal["progress"]["bytes_total"].as_u64() > Some(0),
        "{signal}"
    );

    let done = waiting.join().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert_eq!(done.status.code(), Some(0), "{stdout}");
    // Not a terminal: plain lines, then the end.
    assert!(
        stdout.contains(": full sync ") && stdout.contains("% ("),
        "{stdout}"
    );
    assert!(stdout.contains("finished"), "{stdout}");
    wait_converged(env.src(), env.replica(), Duration::ZERO);

    // STATUS= carried the percentage (what `systemctl status` shows).
    let lines = daemon.notifications();
    assert!(
        lines
            .iter()
            .any(|n| n.contains("STATUS=") && n.contains("full sync running, ")),
        "{lines:?}"
    );
    // Over: no progress left in the status (published within a second), and the
    // signals stopped coming.
    wait_status(&bus, "web", "no full sync in progress", |s| {
        s["remotes"][0]["full_sync"].is_null()
    });
    let count = |text: &str| text.matches("FullSyncProgress").count();
    let before = count(&monitor.output());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(&monitor.output()), before, "progress after the end");
    assert!(
        before <= 20,
        "more than about one signal a second: {before}"
    );
}

/// `sersync_remote_full_sync_running` is 1 while a full sync runs, also once rsync has said
/// how far it is. The metric reads the state text for ` (full sync running)`
/// (src/metrics/mod.rs), which becomes ` (full sync running, 45%)` with the progress
/// (src/daemon/mod.rs `lane_state_text`): the gauge drops to 0 for the whole of a long full
/// sync.
#[test]
fn the_full_sync_running_metric_stays_1_while_the_progress_shows() {
    let Some(bus) = Bus::start(Policy::SystemLike) else {
        return;
    };
    let Some(env) = Env::new(&["web"]) else {
        return;
    };
    let _daemon = slow_full_sync_ahead(&env, &bus);
    std::thread::sleep(Duration::from_millis(500));
    ctl(&bus, &["full-sync"]).expect(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no progress in the status");
        let status = ctl(&bus, &["status", "--json"]).expect(0).json();
        let state = status["remotes"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if status["remotes"][0]["full_sync"].is_null() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let metrics = ctl(&bus, &["metrics"]).expect(0).stdout;
        let status = ctl(&bus, &["status", "--json"]).expect(0).json();
        if status["remotes"][0]["full_sync"].is_null() {
            continue; // it ended in between
        }
        let line = metrics
            .lines()
            .find(|l| l.starts_with("sersync_remote_full_sync_running{"))
            .unwrap_or_else(|| panic!("no full_sync_running gauge:\n{metrics}"));
        assert!(
            line.ends_with(" 1"),
            "state {state:?}, yet the gauge says: {line}"
        );
        break;
    }
}
