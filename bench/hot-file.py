#!/usr/bin/env python3
"""Hot files: what a file rewritten in place 100 times a second, plus a log appended 100
lines a second, cost for 10 s: rsync runs (sessions the receiving daemon logged) and CPU
(the tool and its reaped rsync children), then whether the replica ends equal.

Runs every tool through the shared harness's launchers (../shared/bench/launchers), against
one rsync daemon on 127.0.0.1 with auth, like bench.py does. Run as root.

    OURS_BIN=$PWD/target/release/sersyncd python3 bench/hot-file.py [--tools ours,lsyncd]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rig import Rig, cpu_seconds, same_tree, sessions  # noqa: E402

SECONDS = 10
RATE = 100


def run(tool, work):
    with Rig(tool, work) as rig:
        if rig.skip:
            return rig.skip
        src, replica = rig.src, rig.replica
        time.sleep(2)
        runs_before, cpu_before = sessions(rig.log), cpu_seconds(rig.tool.pid)
        hot, applog = src / "hot.dat", src / "app.log"
        start = time.time()
        for tick in range(SECONDS * RATE):
            with open(hot, "wb") as f:
                f.write(os.urandom(4096))
            with open(applog, "ab") as f:
                f.write(b"line %d\n" % tick)
            time.sleep(max(0.0, start + (tick + 1) / RATE - time.time()))
        quiet = time.time()
        deadline = quiet + 30
        while not same_tree(src, replica) and time.time() < deadline:
            time.sleep(0.05)
        settled = time.time() - quiet
        converged = same_tree(src, replica)
        time.sleep(1)
        runs = sessions(rig.log) - runs_before
        cpu = cpu_seconds(rig.tool.pid) - cpu_before
        verdict = "PASS" if converged else "FAIL"
        return (f"{tool:18} {runs:5d} rsync runs  {cpu:5.2f} s CPU  "
                f"converged {settled:4.2f} s after the last write  {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default="ours,lsyncd,inotifywait-rsync")
    args = parser.parse_args()
    print(f"hot file: {RATE} rewrites/s of a 4 KiB file + {RATE} appended lines/s, {SECONDS} s")
    for tool in args.tools.split(","):
        with tempfile.TemporaryDirectory(prefix=f"hot-{tool}-", dir="/dev/shm") as work:
            print(run(tool, Path(work)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
