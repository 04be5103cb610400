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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHERS = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "launchers"
SECONDS = 10
RATE = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime + cutime + cstime of `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def sessions(log):
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "connect from" in line)


def same_tree(a, b):
    """Whether the two trees hold the same files with the same contents (a file that
    vanishes while it is read, such as rsync's temporary file, means not yet)."""
    def listing(root):
        out = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath, name)
                out[str(p.relative_to(root))] = p.read_bytes()
        return out

    try:
        return listing(a) == listing(b)
    except FileNotFoundError:
        return False


def run(tool, work):
    src, replica, state = work / "src", work / "replica", work / "state"
    for d in (src, replica, state):
        d.mkdir(parents=True)
    port = free_port()
    secrets = work / "secrets"
    secrets.write_text("bench:benchpass\n")
    secrets.chmod(0o600)
    password = work / "password"
    password.write_text("benchpass\n")
    password.chmod(0o600)
    log = work / "rsyncd.log"
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"pid file = {work}/rsyncd.pid\nlog file = {log}\nuse chroot = no\n"
        f"[bench]\npath = {replica}\nread only = false\nuid = root\ngid = root\n"
        f"auth users = bench\nsecrets file = {secrets}\n"
    )
    daemon = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
         "--address=127.0.0.1"],
        start_new_session=True,
    )
    time.sleep(0.5)
    env = dict(os.environ, SRC=str(src), HOST="127.0.0.1", PORT=str(port), MODULE="bench",
               USER="bench", PASSWORD_FILE=str(password), STATE_DIR=str(state))
    tool_log = open(work / "tool.log", "wb")
    launched = subprocess.Popen([str(LAUNCHERS / f"{tool}.sh")], env=env, stdout=tool_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        (src / "probe").write_text("ready\n")
        deadline = time.time() + 60
        while not (replica / "probe").exists():
            if launched.poll() is not None:
                return f"{tool}: SKIP (exit {launched.returncode}; see {work}/tool.log)"
            if time.time() > deadline:
                return f"{tool}: FAIL (never synced the probe)"
            time.sleep(0.05)
        time.sleep(2)
        runs_before, cpu_before = sessions(log), cpu_seconds(launched.pid)
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
        runs = sessions(log) - runs_before
        cpu = cpu_seconds(launched.pid) - cpu_before
        verdict = "PASS" if converged else "FAIL"
        return (f"{tool:18} {runs:5d} rsync runs  {cpu:5.2f} s CPU  "
                f"converged {settled:4.2f} s after the last write  {verdict}")
    finally:
        for proc in (launched, daemon):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        tool_log.close()


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
