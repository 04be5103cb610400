//! Tables: a schedule and a series of (seconds since start, what happens) → what is due.

use std::time::{Duration, Instant};

use super::*;

const CRONTAB: Duration = Duration::from_secs(600);
const REPLAY: Duration = Duration::from_secs(60);

fn at(start: Instant, secs: u64) -> Instant {
    start + Duration::from_secs(secs)
}

fn timers(start: Instant, crontab: bool) -> Timers {
    Timers::new(
        start,
        Schedule {
            crontab: crontab.then_some(CRONTAB),
            replay: REPLAY,
        },
    )
}

#[test]
fn periodic_timers_fire_once_per_period_and_rearm_from_when_they_fired() {
    let start = Instant::now();
    // (crontab on, instants in seconds, what is due at each)
    #[allow(clippy::type_complexity)]
    let table: Vec<(bool, Vec<(u64, Vec<Due>)>)> = vec![
        (
            true,
            vec![
                (0, vec![]),
                (59, vec![]),
                (60, vec![Due::Replay]),
                (61, vec![]),
                (120, vec![Due::Replay]),
                (600, vec![Due::Crontab, Due::Replay]),
                (601, vec![]),
                (660, vec![Due::Replay]),
                (1199, vec![Due::Replay]),
                (1200, vec![Due::Crontab]),
            ],
        ),
        (
            false,
            vec![(600, vec![Due::Replay]), (1200, vec![Due::Replay])],
        ),
        // A loop that woke up late fires each timer once, not once per missed period.
        (
            true,
            vec![(5000, vec![Due::Crontab, Due::Replay]), (5001, vec![])],
        ),
    ];
    for (crontab, steps) in table {
        let mut timers = timers(start, crontab);
        for (secs, want) in steps {
            assert_eq!(
                timers.due(at(start, secs), false),
                want,
                "crontab {crontab}, at {secs} s"
            );
        }
    }
}

#[test]
fn next_is_the_earliest_armed_timer() {
    let start = Instant::now();
    let mut timers = timers(start, true);
    assert_eq!(timers.next(), at(start, 60), "the replay first");
    timers.hold_full_sync(3, FullSyncReason::Scheduled, at(start, 10), None);
    assert_eq!(timers.next(), at(start, 10), "a held full sync");
    timers.watch_limit_hit(0, at(start, 0));
    assert_eq!(timers.next(), at(start, 10));
    assert_eq!(
        timers.due(at(start, 10), false),
        vec![Due::GuardedFullSync(3, FullSyncReason::Scheduled, None)]
    );
    assert_eq!(timers.next(), at(start, 60));
    assert_eq!(timers.due(at(start, 60), false), vec![Due::Replay]);
    assert_eq!(timers.next(), at(start, 120));
    assert_eq!(
        timers.due(at(start, 600), false),
        vec![Due::DegradedResync(vec![0]), Due::Crontab, Due::Replay]
    );
}

#[test]
fn reschedule_rearms_from_the_reload() {
    let start = Instant::now();
    let mut timers = timers(start, false);
    timers.reschedule(
        at(start, 50),
        Schedule {
            crontab: Some(Duration::from_secs(100)),
            replay: Duration::from_secs(30),
        },
    );
    assert_eq!(timers.due(at(start, 60), false), vec![]);
    assert_eq!(timers.due(at(start, 80), false), vec![Due::Replay]);
    assert_eq!(
        timers.due(at(start, 150), false),
        vec![Due::Crontab, Due::Replay]
    );
}

#[test]
fn overflows_rescan_at_once_then_spaced_out_doubling_up_to_five_minutes() {
    let start = Instant::now();
    // An overflow of a root at a second → what it leads to; a check of what is due.
    enum Step {
        Overflow(u64, RootId, Overflowed),
        Check(u64, Vec<Due>),
    }
    use Step::*;
    let deferred = |first, wait| Overflowed::Deferred {
        first,
        wait: Duration::from_secs(wait),
    };
    let steps = vec![
        Overflow(0, 0, Overflowed::RescanNow(vec![0])),
        // Within the 10 s quiet time: deferred to its end, once per root.
        Overflow(3, 0, deferred(true, 7)),
        Overflow(4, 0, deferred(false, 6)),
        Overflow(5, 1, deferred(true, 5)),
        Check(9, vec![]),
        Check(10, vec![Due::OverflowRescan(vec![0, 1])]),
        // The next quiet time is 20 s, then 40 s …
        Overflow(12, 0, deferred(true, 18)),
        Check(30, vec![Due::OverflowRescan(vec![0])]),
        Overflow(31, 1, deferred(true, 39)),
        Check(70, vec![Due::OverflowRescan(vec![1])]),
        // … up to 300 s.
        Overflow(71, 0, deferred(true, 79)),
        Check(150, vec![Due::OverflowRescan(vec![0])]),
        Overflow(151, 0, deferred(true, 159)),
        Check(310, vec![Due::OverflowRescan(vec![0])]),
        Overflow(311, 0, deferred(true, 299)),
        Check(610, vec![Due::Replay, Due::OverflowRescan(vec![0])]),
        // Quiet for more than 5 min after the last quiet time: at once, and 10 s again.
        Overflow(1300, 1, Overflowed::RescanNow(vec![1])),
        Overflow(1301, 1, deferred(true, 9)),
    ];
    let mut timers = timers(start, false);
    let mut last_replay_check = 0;
    for step in steps {
        match step {
            Overflow(secs, root, want) => {
                assert_eq!(
                    timers.overflowed(root, at(start, secs)),
                    want,
                    "at {secs} s"
                );
            }
            Check(secs, want) => {
                let mut got = timers.due(at(start, secs), false);
                let mut want = want;
                // The replay fires alongside; only the overflow part is under test here
                // except where a row names it.
                if !want.contains(&Due::Replay) {
                    got.retain(|due| *due != Due::Replay);
                }
                got.sort_by_key(|due| format!("{due:?}"));
                want.sort_by_key(|due| format!("{due:?}"));
                assert_eq!(got, want, "at {secs} s");
                last_replay_check = secs;
            }
        }
    }
    assert_eq!(last_replay_check, 610);
}

#[test]
fn degraded_roots_resync_every_ten_minutes_until_cleared() {
    let start = Instant::now();
    let mut timers = timers(start, false);
    timers.watch_limit_hit(1, at(start, 5));
    timers.watch_limit_hit(1, at(start, 100));
    timers.watch_limit_hit(2, at(start, 200));
    assert_eq!(timers.degraded(), &[1, 2]);
    let due = |timers: &mut Timers, secs| {
        let mut got = timers.due(at(start, secs), false);
        got.retain(|due| *due != Due::Replay);
        got
    };
    assert_eq!(due(&mut timers, 604), vec![]);
    assert_eq!(due(&mut timers, 605), vec![Due::DegradedResync(vec![1, 2])]);
    assert!(timers.degraded().is_empty(), "re-armed by the next report");
    assert_eq!(due(&mut timers, 1300), vec![]);
    timers.watch_limit_hit(1, at(start, 1300));
    timers.clear_degraded();
    assert_eq!(due(&mut timers, 2000), vec![], "cleared by a reload");
    // A watcher that lagged at a stop marks its root without a timer (the root owes a
    // full sync, saved for the next start).
    timers.mark_degraded(0);
    assert_eq!(timers.degraded(), &[0]);
    assert_eq!(due(&mut timers, 5000), vec![]);
}

#[test]
fn held_full_syncs_wait_one_per_lane_and_go_with_their_lane() {
    let start = Instant::now();
    let mut timers = timers(start, false);
    timers.hold_full_sync(1, FullSyncReason::Scheduled, at(start, 10), None);
    timers.hold_full_sync(1, FullSyncReason::Rescan, at(start, 5), None);
    timers.hold_full_sync(2, FullSyncReason::Initial, at(start, 20), None);
    timers.hold_full_sync(3, FullSyncReason::Initial, at(start, 20), None);
    assert!(timers.holds_full_sync(1) && timers.holds_full_sync(2));
    timers.retain_held_full_syncs(|lane| lane != 3);
    assert!(!timers.holds_full_sync(3), "a reload removed lane 3");
    assert_eq!(timers.due(at(start, 9), false), vec![]);
    assert_eq!(
        timers.due(at(start, 10), false),
        vec![Due::GuardedFullSync(1, FullSyncReason::Scheduled, None)]
    );
    assert!(!timers.holds_full_sync(1));
    assert_eq!(
        timers.due(at(start, 25), false),
        vec![Due::GuardedFullSync(2, FullSyncReason::Initial, None)]
    );
}

#[test]
fn pruning_starts_when_enabled_and_repeats_every_six_hours() {
    let start = Instant::now();
    let mut timers = timers(start, false);
    let prunes =
        |timers: &mut Timers, secs, on| timers.due(at(start, secs), on).contains(&Due::PruneTrash);
    assert!(!prunes(&mut timers, 0, false), "off: never");
    assert!(prunes(&mut timers, 1, true), "at once when turned on");
    assert!(!prunes(&mut timers, 2, true));
    assert!(!prunes(&mut timers, 6 * 3600, true));
    assert!(prunes(&mut timers, 6 * 3600 + 1, true));
    // Turned off by a reload: its old deadline must not keep the loop awake (a deadline
    // in the past made the loop spin, waking every millisecond).
    assert!(!prunes(&mut timers, 6 * 3600 + 2, false));
    assert!(!prunes(&mut timers, 13 * 3600, false));
    assert!(
        timers.next() > at(start, 13 * 3600),
        "{:?}",
        timers.next() - start
    );
    assert!(prunes(&mut timers, 14 * 3600, true), "on again: at once");
}
