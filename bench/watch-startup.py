#!/usr/bin/env python3
"""Start-up of the watch backends on big trees (issue 20), printed side by side.

For each tree size (directories, one file in every 10th) and each backend, starts
sersyncd (no -r, a remote nobody listens on: nothing is sent) with a NOTIFY_SOCKET of its
own and measures, in the same run:

- READY: seconds from exec to READY=1 (inotify crawls and watches every directory first;
  fanotify marks the filesystem);
- RSS: the daemon's VmRSS at READY and its peak (VmHWM), MiB;
- slab: the growth of the kernel's Slab (/proc/meminfo) from before the start to READY,
  MiB: the inotify marks and the inodes and dentries they pin (noisy on a shared machine:
  anything else the kernel caches meanwhile counts too). The tree is read once (find)
  before each start, so both start with a warm cache, as the issue's target says.

Usage (root, for fanotify):
    bench/watch-startup.py [--bin target/debug/sersyncd] [--dirs 100000,1000000] [--dir /dev/shm/sersync-watch-bench]

fs.inotify.max_user_watches is raised to fit the biggest tree while it runs and written
back at the end. The tree is made under --dir (tmpfs by default: fanotify works there since Linux 5.17
as tmpfs reports file handles) and removed at the end.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def make_tree(root, dirs):
    """`dirs` directories, 100 per parent, two levels deep, a file in every 10th."""
    os.makedirs(root, exist_ok=True)
    made = 0
    top = 0
    while made < dirs:
        parent = os.path.join(root, f"t{top:05d}")
        os.mkdir(parent)
        made += 1
        for i in range(min(99, dirs - made)):
            d = os.path.join(parent, f"d{i:02d}")
            os.mkdir(d)
            made += 1
            if made % 10 == 0:
                with open(os.path.join(d, "f"), "w") as f:
                    f.write("x\n")
        top += 1


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run(binary, tree, backend, work):
    conf = os.path.join(work, "confxml.xml")
    with open(conf, "w") as f:
        f.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n<head version="2.5">\n'
            '<sersync>\n'
            f'<localpath watch="{tree}"><remote ip="127.0.0.1" name="nobody"/></localpath>\n'
            '<rsync><userDefinedPort start="true" port="9"/></rsync>\n'
            '</sersync>\n</head>\n'
        )
    sock_path = os.path.join(work, "notify.sock")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.05)
    state = os.path.join(work, f"state-{backend}")
    shutil.rmtree(state, ignore_errors=True)
    # Warm: the tree's inodes and dentries in cache, as after any recent walk.
    subprocess.run(["find", tree, "-type", "d"], stdout=subprocess.DEVNULL, check=True)
    time.sleep(1)
    slab_before = meminfo("Slab")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    env.pop("WATCHDOG_USEC", None)
    env.pop("JOURNAL_STREAM", None)
    log = open(os.path.join(work, f"{backend}.log"), "w")
    start = time.monotonic()
    proc = subprocess.Popen(
        [binary, "-o", conf, "--state-dir", state, "--no-dbus", "--log", "stderr",
         "--watch-backend", backend],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    ready = None
    try:
        while time.monotonic() - start < 600:
            try:
                data = sock.recv(65536).decode(errors="replace")
            except socket.timeout:
                if proc.poll() is not None:
                    break
                continue
            if "READY=1" in data.splitlines():
                ready = time.monotonic() - start
                break
        if ready is None:
            raise SystemExit(f"{backend}: no READY=1 (see {log.name})")
        rss = status(proc.pid, "VmRSS")
        slab = meminfo("Slab") - slab_before
        time.sleep(0.5)
        hwm = status(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()
    with open(log.name) as f:
        text = f.read()
    used = "fanotify" if " with fanotify (" in text else "inotify"
    if "inotify watch limit reached" in text:
        used += ", watch limit hit"
    return ready, rss, hwm, slab, used


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/debug/sersyncd")
    p.add_argument("--dirs", default="100000")
    p.add_argument("--dir", default="/dev/shm/sersync-watch-bench")
    args = p.parse_args()
    binary = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sersync-watch-bench-")
    rows = []
    # Room for every directory's watch while the benchmark runs; written back at the end.
    limit = "/proc/sys/fs/inotify/max_user_watches"
    with open(limit) as f:
        old_limit = f.read().strip()
    wanted = max(int(old_limit), max(int(d) for d in args.dirs.split(",")) + 100000)
    with open(limit, "w") as f:
        f.write(f"{wanted}\n")
    try:
        for dirs in [int(d) for d in args.dirs.split(",")]:
            tree = os.path.join(args.dir, f"tree-{dirs}")
            shutil.rmtree(tree, ignore_errors=True)
            t = time.monotonic()
            make_tree(tree, dirs)
            print(f"tree of {dirs} directories made in {time.monotonic() - t:.1f} s", file=sys.stderr)
            for backend in ["inotify", "fanotify"]:
                ready, rss, hwm, slab, used = run(binary, tree, backend, work)
                rows.append((dirs, backend, used, ready, rss, hwm, slab))
                print(f"  {backend}: READY {ready:.2f} s", file=sys.stderr)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        with open(limit, "w") as f:
            f.write(f"{old_limit}\n")
        shutil.rmtree(work, ignore_errors=True)
        if os.path.isdir(args.dir) and not os.listdir(args.dir):
            os.rmdir(args.dir)
    mib = 1024 * 1024
    print("| directories | backend | READY s | RSS at READY MiB | peak RSS MiB | slab growth MiB |")
    print("|---|---|---|---|---|---|")
    for dirs, backend, used, ready, rss, hwm, slab in rows:
        name = backend if used == backend else f"{backend} ({used})"
        print(f"| {dirs:,} | {name} | {ready:.2f} | {rss / mib:.1f} | {hwm / mib:.1f} | {slab / mib:.1f} |")


if __name__ == "__main__":
    main()
