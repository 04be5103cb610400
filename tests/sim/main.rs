//! The randomized simulation: seeded sequences of filesystem operations interleaved with
//! faults, against the real `sersyncd`, two real rsync daemons and real inotify, checking
//! at every quiescent point that a checkpoint (`sersyncctl checkpoint --wait`, over the
//! daemon's own bus) is reached and that every replica then equals the source.
//!
//! It is its own test binary (not a module of `tests/it`) because it changes global kernel
//! settings for a moment (`fs.inotify.max_queued_events`) and mounts filesystems: cargo
//! runs test binaries one after the other, so nothing else of the suite runs meanwhile.
//!
//! - `cargo test --test sim` runs the CI seeds (see [`CI_SEEDS`]).
//! - `SERSYNC_SIM_SEEDS=100-199 cargo test --release --test sim -- --nocapture` runs others;
//!   `SERSYNC_SIM_SOAK=1800` keeps drawing seeds from the start of that range for 30 min;
//!   `SERSYNC_SIM_ROUNDS=N` sets rounds per seed; `tests/sim.sh` wraps all of this.
//! - A failure prints the seed, the operation log and the daemon's log, and writes the
//!   operations to `target/tmp/sim-failures/seed-N.json`; `SERSYNC_SIM_REPLAY=FILE` runs
//!   exactly those again, and `SERSYNC_SIM_SHRINK=1` searches for a shorter failing list.

mod guard;
#[path = "../it/harness/mod.rs"]
#[allow(dead_code, unused_imports)] // shared with tests/it; each binary uses part of it
mod harness;
mod ops;
mod regressions;
mod rng;
mod snapshot;
mod two_way;
mod world;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ops::{Generator, Op};
use world::{Divergence, World};

/// The seeds CI runs, and the regressions found by the simulation (each named in
/// `regressions.rs` with the commit that fixed it).
const CI_SEEDS: std::ops::Range<u64> = 1..9;
const DEFAULT_ROUNDS: usize = 8;

/// One simulation at a time: they share kernel settings.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `A-B` (inclusive) or a single seed.
fn seeds_from_env() -> Option<std::ops::Range<u64>> {
    let text = std::env::var("SERSYNC_SIM_SEEDS").ok()?;
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse::<u64>().ok()? + 1),
        None => {
            let a: u64 = text.trim().parse().ok()?;
            (a, a + 1)
        }
    };
    Some(a..b)
}

fn failures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-failures")
}

/// Whether the simulation can run here; under `CI=true` it must.
fn can_run() -> bool {
    let tools = [
        "rsync",
        "unshare",
        "nsenter",
        "chattr",
        "mount",
        "dbus-daemon",
    ];
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !harness::require_tool(tool))
        .collect();
    if !missing.is_empty() {
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the simulation needs root (tmpfs mounts, user namespaces, chattr)");
        }
        eprintln!("SKIP simulation: needs root");
        return false;
    }
    true
}

/// A failed run: the rounds recorded so far and the report.
type Failure = (Vec<Vec<Op>>, String);

/// What one seed did: operations, faults that took effect (by kind), (queue folds,
/// large-file hand-overs), time.
type Ran = (
    usize,
    std::collections::BTreeMap<&'static str, usize>,
    (usize, usize),
    Duration,
);

/// Runs one seed for `rounds` rounds; on failure returns the recorded ops and a report.
fn run_seed(seed: u64, rounds: usize) -> Result<Ran, Failure> {
    let started = Instant::now();
    let mut world = World::new();
    let mut generator = Generator::new(seed, 2, world.privileged);
    let mut recorded: Vec<Vec<Op>> = Vec::new();
    let src = world.src().to_path_buf();
    let mut ops_count = 0;
    for _ in 0..rounds {
        let mut failure: Option<Divergence> = None;
        let ops = generator.round(&src, |op| {
            if failure.is_none() {
                if let Err(divergence) = world.apply(op) {
                    failure = Some(divergence);
                }
            }
        });
        ops_count += ops.len();
        recorded.push(ops);
        if let Some(divergence) = failure {
            return Err(report(
                &format!("seed {seed}"),
                &world,
                &recorded,
                &divergence,
            ));
        }
    }
    // Last, every remote back in the config and one more quiescent point.
    let mut last = Vec::new();
    if let Some(op) = world.all_remotes() {
        last.push(op);
    }
    last.push(Op::Quiesce);
    for op in &last {
        if let Err(divergence) = world.apply(op) {
            recorded.push(last.clone());
            return Err(report(
                &format!("seed {seed}"),
                &world,
                &recorded,
                &divergence,
            ));
        }
    }
    Ok((
        ops_count,
        world.faults_applied.clone(),
        (world.folds(), world.large_handoffs()),
        started.elapsed(),
    ))
}

/// Runs a recorded list of rounds in a fresh world.
fn run_recorded(rounds: &[Vec<Op>]) -> Result<(), String> {
    let mut world = World::new();
    for round in rounds {
        for op in round {
            if let Err(divergence) = world.apply(op) {
                return Err(report("replay", &world, rounds, &divergence).1);
            }
        }
    }
    Ok(())
}

/// What kind of failure a report is (its first words), so that shrinking keeps looking
/// for the same one.
fn failure_kind(report: &str) -> String {
    report
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(
    what: &str,
    world: &World,
    rounds: &[Vec<Op>],
    divergence: &Divergence,
) -> (Vec<Vec<Op>>, String) {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let name = what.replace(' ', "-");
    let file = dir.join(format!("{name}.json"));
    let _ = std::fs::write(&file, serde_json::to_vec(rounds).unwrap_or_default());
    let log = world.daemon_log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(150)..].join("\n");
    let text = format!(
        "SIMULATION FAILED: {what}, round {}\n{}\n\nreplay: SERSYNC_SIM_REPLAY={} cargo test --test sim -- --nocapture\n\
         operation log:\n{}\n\nsersyncd log (last 150 lines):\n{tail}\n",
        divergence.round,
        divergence.what,
        file.display(),
        world.log.join("\n"),
    );
    // The file has the daemon's whole log; stderr its tail.
    let whole = text.replace(&tail, &log);
    let _ = std::fs::write(dir.join(format!("{name}.log")), whole);
    (rounds.to_vec(), text)
}

/// Looks for a shorter list that still fails: whole rounds first, then chunks of ops.
fn shrink(mut rounds: Vec<Vec<Op>>, kind: &str) -> Vec<Vec<Op>> {
    let fails = |candidate: &[Vec<Op>]| {
        run_recorded(candidate).is_err_and(|report| failure_kind(&report) == kind)
    };
    let mut i = 0;
    while i + 1 < rounds.len() {
        let mut candidate = rounds.clone();
        candidate.remove(i);
        if fails(&candidate) {
            eprintln!("shrink: round {i} removed ({} left)", candidate.len());
            rounds = candidate;
        } else {
            i += 1;
        }
    }
    for r in 0..rounds.len() {
        let mut chunk = rounds[r].len() / 2;
        while chunk >= 1 {
            let mut start = 0;
            while start < rounds[r].len() {
                let end = (start + chunk).min(rounds[r].len());
                if rounds[r][start..end].contains(&Op::Quiesce) {
                    start = end;
                    continue;
                }
                let mut candidate = rounds.clone();
                candidate[r].drain(start..end);
                if fails(&candidate) {
                    eprintln!("shrink: round {r}: ops {start}..{end} removed");
                    rounds = candidate;
                } else {
                    start = end;
                }
            }
            chunk /= 2;
        }
    }
    rounds
}

fn run_seeds(seeds: std::ops::Range<u64>, rounds: usize, soak: Option<Duration>) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let mut passed = 0;
    let mut total_ops = 0;
    let mut total_folds = 0;
    let mut total_large = 0;
    let mut total_faults: std::collections::BTreeMap<&'static str, usize> =
        std::collections::BTreeMap::new();
    let mut seed = seeds.start;
    loop {
        let within = match soak {
            Some(limit) => started.elapsed() < limit,
            None => seed < seeds.end,
        };
        if !within {
            break;
        }
        match run_seed(seed, rounds) {
            Ok((ops, faults, (folds, large), took)) => {
                passed += 1;
                total_ops += ops;
                total_folds += folds;
                total_large += large;
                let applied: usize = faults.values().sum();
                for (kind, n) in faults {
                    *total_faults.entry(kind).or_default() += n;
                }
                eprintln!(
                    "sim seed {seed}: {rounds} rounds, {ops} ops, {applied} faults, {folds} queue \
                     folds, {large} large-file hand-overs, converged ({:.1} s)",
                    took.as_secs_f64()
                );
            }
            Err((recorded, text)) => {
                eprintln!("{text}");
                if std::env::var("SERSYNC_SIM_SHRINK").is_ok_and(|v| v == "1") {
                    let short = shrink(recorded, &failure_kind(&text));
                    let file = failures_dir().join(format!("seed-{seed}-shrunk.json"));
                    let _ = std::fs::write(&file, serde_json::to_vec(&short).unwrap_or_default());
                    let listing: Vec<String> = short.iter().flatten().map(ops::show).collect();
                    eprintln!(
                        "shrunk to {} ops ({}):\n{}",
                        listing.len(),
                        file.display(),
                        listing.join("\n")
                    );
                }
                panic!("simulation seed {seed} failed (after {passed} seeds passed); see above");
            }
        }
        seed += 1;
    }
    let faults: Vec<String> = total_faults
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    eprintln!(
        "simulation: {passed} seeds passed, {total_ops} ops, {} faults ({}), {total_folds} \
         queue folds, {total_large} large-file hand-overs, in {:.0} s",
        total_faults.values().sum::<usize>(),
        faults.join(", "),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn replicas_equal_the_source_at_every_quiescent_point() {
    if !can_run() {
        return;
    }
    if let Ok(file) = std::env::var("SERSYNC_SIM_REPLAY") {
        let rounds: Vec<Vec<Op>> =
            serde_json::from_slice(&std::fs::read(&file).expect("read the replay file"))
                .expect("parse the replay file");
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(text) = run_recorded(&rounds) {
            panic!("{text}");
        }
        return;
    }
    let rounds = env_number("SERSYNC_SIM_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as usize);
    let soak = env_number("SERSYNC_SIM_SOAK").map(Duration::from_secs);
    let seeds = seeds_from_env().unwrap_or(CI_SEEDS);
    run_seeds(seeds, rounds, soak);
}

/// The two-way seeds CI runs (see `two_way.rs`): since the rounds ask for full syncs too
/// (2026-12-07), every seed draws differently from before; 1 and 8 passed in every round
/// of seeds 1-20 since, and 3 found the crossing that `Plan::undo_directories_made_after_
/// their_removal` handles (2026-12-08). Seeds that found defects keep tests of their
/// mechanisms in `tests/it/two_way.rs` and the plan's tables; README's two-way open
/// defects list the rest. `SERSYNC_SIM_TWO_WAY_SEEDS=A-B` runs others.
const TWO_WAY_CI_SEEDS: &[u64] = &[1, 3, 8];

#[test]
fn two_way_roots_are_equal_and_keep_every_uncontested_change_after_every_round() {
    if !can_run() {
        return;
    }
    let seeds: Vec<u64> = std::env::var("SERSYNC_SIM_TWO_WAY_SEEDS")
        .ok()
        .and_then(|text| {
            let (a, b) = text.split_once('-').unwrap_or((&text, &text));
            Some((a.trim().parse().ok()?..b.trim().parse::<u64>().ok()? + 1).collect())
        })
        .unwrap_or_else(|| TWO_WAY_CI_SEEDS.to_vec());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut failed = Vec::new();
    for seed in seeds {
        match two_way::run_seed(seed) {
            Ok(took) => eprintln!(
                "two-way seed {seed}: converged ({:.1} s)",
                took.as_secs_f64()
            ),
            Err(report) => {
                eprintln!("{report}");
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "two-way seeds failed: {failed:?} (reports above)"
    );
}
