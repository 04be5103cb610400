//! Table tests: (job, facts, results of its runs) → the runs the plan asks for, in order,
//! and what the job amounts to.

use super::*;

#[test]
fn several_runs_amount_to_the_worst() {
    let run = |result: RunResult, stderr: &str| Run {
        stderr: stderr.to_owned(),
        ..Run::ended(result)
    };
    let worst = Run::worst([
        run(RunResult::Exited(0), "a\n"),
        run(RunResult::Exited(23), "b\n"),
    ]);
    assert_eq!(worst.result, RunResult::Exited(23));
    assert_eq!(worst.stderr, "b\n");
}
