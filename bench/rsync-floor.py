#!/usr/bin/env python3
"""What rsync itself costs, without any sync daemon: the floors behind bench/RESULTS.md.

Starts private rsync daemons on 127.0.0.1 (in a temp dir on /dev/shm) and measures, with
the exact options sersyncd uses:

  push    200 one-file pushes of 512 B, 50 ms apart (the latency scenario's pace), with
          TCP_NODELAY on the client only (what sersyncd can set) and on both ends (the
          receiver's rsyncd.conf `socket options = TCP_NODELAY`): p50/p95/p99/max ms.
  warm    the same pushes, in one run and against one daemon without `socket options`:
          cold (one rsync per push, sersyncd's send options and --timeout=120), warm (an
          rsync started beforehand with --files-from=- --from0, connected and blocked on
          stdin, handed the path; a new one started after each push, as sersyncd's warm
          rsyncs: without --timeout), and warm with --timeout=120; warm processes handed
          their path 20 ms after their start tell whether the stall that --timeout brings
          (Nagle + delayed ACK in the receiving daemon) comes before the file list (in the
          handshake, which a warm process has done) or after: p50/p95/p99/max side by side. The ssh transport: bench/ssh-latency.py.
  list    20,000 paths (200 dirs x 100 files of 1-8 KiB) sent once with the paths as
          arguments and once with --files-from=- on stdin: wall and client CPU seconds.
  delete  5,000 deletions (50 dirs x 100 files) as one rule run and as four concurrent
          runs over disjoint directories, against a plain `--delete` with no rules.

    python3 bench/rsync-floor.py              # push, list, delete
    python3 bench/rsync-floor.py warm         # cold vs warm pushes
    python3 bench/rsync-floor.py push         # one of them

Only the standard library; every daemon it starts is stopped by PID at the end.
"""
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BATCH = ["-artuz", "--sockopts=TCP_NODELAY", "--modify-window=-1", "--no-recursive",
         "--dirs", "--relative", "--force", "--ignore-missing-args"]
DELETE = ["--sockopts=TCP_NODELAY", "--recursive", "--delete", "--force", "--from0",
          "--filter=. -", "./"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, work, nodelay):
        self.dir = tempfile.mkdtemp(dir=work)
        self.replica = os.path.join(self.dir, "replica")
        os.mkdir(self.replica)
        self.port = free_port()
        conf = os.path.join(self.dir, "rsyncd.conf")
        with open(conf, "w") as f:
            if nodelay:
                f.write("socket options = TCP_NODELAY\n")
            f.write(f"port = {self.port}\naddress = 127.0.0.1\n"
                    f"[m]\npath = {self.replica}\nread only = false\nuse chroot = no\n"
                    "uid = root\ngid = root\n")
        self.proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}"])
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)
        self.url = f"rsync://127.0.0.1:{self.port}/m/"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def push(work):
    src = tempfile.mkdtemp(dir=work)
    for nodelay in (False, True):
        daemon = Daemon(work, nodelay)
        times = []
        for i in range(200):
            name = f"f{int(nodelay)}-{i}"
            with open(os.path.join(src, name), "wb") as f:
                f.write(os.urandom(512))
            start = time.perf_counter()
            subprocess.run(["rsync", *BATCH, "./" + name, daemon.url], cwd=src, check=True)
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
        daemon.stop()
        times.sort()
        where = "client and daemon" if nodelay else "client only     "
        print(f"push, TCP_NODELAY on {where}: p50 {times[100]:.1f} / p95 {times[190]:.1f} / "
              f"p99 {times[198]:.1f} / max {times[-1]:.1f} ms")


SEND = ["-artz", "--sockopts=TCP_NODELAY", "--contimeout=30", "--info=stats1",
        "--no-human-readable", "--modify-window=-1", "--ignore-times", "--no-recursive",
        "--dirs", "--relative", "--force", "--ignore-missing-args"]


def percentiles(times):
    times = sorted(times)
    at = lambda q: times[min(len(times) - 1, int(len(times) * q))]
    return at(0.50), at(0.95), at(0.99), times[-1]


def warm_push(work, count=200):
    """Cold vs warm one-file pushes against one daemon, interleaved per push so that both
    see the same machine load."""
    src = tempfile.mkdtemp(dir=work)
    daemon = Daemon(work, False)
    kinds = {
        "cold, --timeout=120 (today's cold run)": ("cold", ["--timeout=120"]),
        "cold, no --timeout": ("cold", []),
        "warm, no --timeout (sersyncd's warm run)": ("warm", []),
        "warm, --timeout=120": ("warm", ["--timeout=120"]),
        "warm, --timeout=120, started 20 ms before": ("late", ["--timeout=120"]),
        "warm, no --timeout, started 20 ms before": ("late", []),
    }
    times = {name: [] for name in kinds}
    spares = {}

    def start_warm(extra):
        return subprocess.Popen(["rsync", *SEND, *extra, "--files-from=-", "--from0", "./",
                                 daemon.url], cwd=src, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL)

    for name, (how, extra) in kinds.items():
        if how == "warm":
            spares[name] = start_warm(extra)
    time.sleep(0.5)
    for i in range(count):
        for n, (name, (how, extra)) in enumerate(kinds.items()):
            rel = f"w{n}-{i}"
            with open(os.path.join(src, rel), "wb") as f:
                f.write(os.urandom(512))
            if how == "late":
                spares[name] = start_warm(extra)
                time.sleep(0.02)
            start = time.perf_counter()
            if how == "cold":
                subprocess.run(["rsync", *SEND, *extra, "./" + rel, daemon.url], cwd=src,
                               check=True, stdout=subprocess.DEVNULL)
            else:
                proc = spares[name]
                proc.stdin.write(b"./" + rel.encode() + b"\0")
                proc.stdin.close()
                if proc.wait() != 0:
                    raise SystemExit(f"warm push failed: exit {proc.returncode}")
                if how == "warm":
                    spares[name] = start_warm(extra)
            times[name].append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
    for name, proc in spares.items():
        if kinds[name][0] == "warm":
            proc.kill()
            proc.wait()
    daemon.stop()
    print(f"push of one 512 B file, {count} each, daemon without socket options:")
    for name, values in times.items():
        p50, p95, p99, top = percentiles(values)
        print(f"  {name:44} p50 {p50:5.1f} / p95 {p95:5.1f} / p99 {p99:5.1f} / "
              f"max {top:5.1f} ms")


def make_burst(root):
    rng = random.Random(2)
    paths = []
    for d in range(200):
        os.makedirs(os.path.join(root, f"b{d:03d}"))
        paths.append(f"b{d:03d}")
        for f in range(100):
            rel = f"b{d:03d}/f{f:03d}"
            with open(os.path.join(root, rel), "wb") as fh:
                fh.write(os.urandom(rng.randint(1024, 8192)))
            paths.append(rel)
    return paths


def listing(work):
    src = tempfile.mkdtemp(dir=work)
    paths = make_burst(src)
    daemon = Daemon(work, False)
    for how in ("arguments", "--files-from=-"):
        shutil.rmtree(daemon.replica)
        os.mkdir(daemon.replica)
        before = children_cpu()
        start = time.perf_counter()
        if how == "arguments":
            subprocess.run(["rsync", *BATCH, *("./" + p for p in paths), daemon.url],
                           cwd=src, check=True)
        else:
            data = b"".join(b"./" + p.encode() + b"\0" for p in paths)
            subprocess.run(["rsync", *BATCH, "--files-from=-", "--from0", "./", daemon.url],
                           cwd=src, input=data, check=True)
        wall = time.perf_counter() - start
        print(f"list, 20,000 paths as {how:15}: {wall:.2f} s wall, client CPU "
              f"{children_cpu() - before:.2f} s")
    daemon.stop()


def delete(work):
    skeleton = tempfile.mkdtemp(dir=work)
    dirs = [f"del/d{d:02d}" for d in range(50)]
    for d in dirs:
        os.makedirs(os.path.join(skeleton, d))
    daemon = Daemon(work, False)

    def seed():
        shutil.rmtree(daemon.replica)
        for d in dirs:
            os.makedirs(os.path.join(daemon.replica, d))
            for f in range(100):
                with open(os.path.join(daemon.replica, d, f"f{f:02d}"), "w") as fh:
                    fh.write("x\n")

    def rules(group):
        out = [b"+ /del/"] + [f"+ /{d}/".encode() for d in group]
        out += [f"+ /{d}/f{f:02d}".encode() for d in group for f in range(100)]
        return b"\0".join(out + [b"- *"]) + b"\0"

    def left():
        return sum(len(os.listdir(os.path.join(daemon.replica, d))) for d in dirs)

    for runs in (1, 4):
        seed()
        groups = [dirs[i::runs] if runs == 1 else dirs[i * 13:(i + 1) * 13] for i in range(runs)]
        start = time.perf_counter()
        procs = [subprocess.Popen(["rsync", *DELETE, daemon.url], cwd=skeleton,
                                  stdin=subprocess.PIPE) for _ in groups]
        for proc, group in zip(procs, groups):
            proc.stdin.write(rules(group))
            proc.stdin.close()
        for proc in procs:
            proc.wait()
        wall = time.perf_counter() - start
        print(f"delete, 5,000 paths, {runs} rule run(s): {wall:.2f} s ({left()} files left)")
    seed()
    plain = tempfile.mkdtemp(dir=work)
    for d in dirs:
        os.makedirs(os.path.join(plain, d))
    start = time.perf_counter()
    subprocess.run(["rsync", "--sockopts=TCP_NODELAY", "--recursive", "--delete", "./",
                    daemon.url], cwd=plain, check=True)
    print(f"delete, 5,000 paths, plain --delete without rules: "
          f"{time.perf_counter() - start:.2f} s ({left()} files left)")
    daemon.stop()


def main():
    wanted = sys.argv[1:] or ["push", "list", "delete"]
    work = tempfile.mkdtemp(prefix="rsync-floor.", dir="/dev/shm")
    try:
        for name in wanted:
            {"push": push, "warm": warm_push, "list": listing, "delete": delete}[name](work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
