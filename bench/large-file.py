#!/usr/bin/env python3
"""Large files: how long a small file written while a 1 GiB file uploads takes to reach the
replica (p50/p95/p99/max over the small files), per tool, and whether the replica ends
equal to the source.

The 1 GiB file is pseudo-random (rsync's -z cannot shrink it), written at once; then one
small file every 100 ms for 5 s, starting 0.5 s after the large file is closed. Runs every
tool through the shared harness's launchers (../shared/bench/launchers), against one rsync
daemon on 127.0.0.1 with auth, like bench.py does; work trees in /dev/shm (about 3 GiB of
memory per tool at the peak). Run as root.

    OURS_BIN=$PWD/target/release/sersyncd python3 bench/large-file.py [--tools ours,lsyncd] [--mib 1024]
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rig import Rig, same_tree  # noqa: E402

SMALL_EVERY = 0.1
SMALL_COUNT = 50


def write_random(path, mib):
    """`mib` MiB of bytes that do not compress."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(tool, work, mib):
    with Rig(tool, work) as rig:
        if rig.skip:
            return rig.skip
        src, replica = rig.src, rig.replica
        time.sleep(2)
        # Written elsewhere and moved in: the tool sees one complete large file.
        staging = work / "big.staging"
        write_random(staging, mib)
        os.rename(staging, src / "big.iso")
        big_closed = time.time()
        written = {}
        arrived = {}
        done = threading.Event()

        def poll():
            while not done.is_set():
                for name, at in list(written.items()):
                    if name not in arrived and (replica / name).exists():
                        arrived[name] = time.time() - at
                time.sleep(0.002)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        for n in range(SMALL_COUNT):
            name = f"small-{n:03d}.txt"
            tmp = work / "small.tmp"
            tmp.write_text(f"small {n}\n")
            at = time.time()
            os.rename(tmp, src / name)
            written[name] = at
            time.sleep(SMALL_EVERY)
        # The small files' wait is bounded by the large upload for the tools that batch it.
        deadline = time.time() + 600
        while len(arrived) < len(written) and time.time() < deadline:
            time.sleep(0.05)
        small_done = time.time()
        while not same_tree(src, replica) and time.time() < deadline:
            time.sleep(0.2)
        converged = same_tree(src, replica)
        big_took = time.time() - big_closed
        done.set()
        poller.join()
        if len(arrived) < len(written):
            return f"{tool:18} FAIL: {len(written) - len(arrived)} small files never arrived"
        ms = [v * 1000 for v in arrived.values()]
        verdict = "PASS" if converged else "FAIL"
        return (f"{tool:18} small files p50 {percentile(ms, 50):8.1f} / p95 {percentile(ms, 95):8.1f}"
                f" / p99 {percentile(ms, 99):8.1f} / max {max(ms):8.1f} ms   "
                f"all small in {small_done - big_closed:5.1f} s, converged {big_took:5.1f} s "
                f"after the large file  {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default="ours,lsyncd,inotifywait-rsync")
    parser.add_argument("--mib", type=int, default=1024, help="size of the large file")
    args = parser.parse_args()
    print(f"large file: {args.mib} MiB uploading; {SMALL_COUNT} small files written "
          f"{SMALL_EVERY * 1000:.0f} ms apart during it")
    for tool in args.tools.split(","):
        with tempfile.TemporaryDirectory(prefix=f"large-{tool}-", dir="/dev/shm") as work:
            print(run(tool, Path(work), args.mib), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
