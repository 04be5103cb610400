#!/usr/bin/env python3
"""Start-up of the watch backends on big trees (issue 20), and lsyncd's, side by side.

For each tree size (directories, one file in every 10th) and each tool, measures in the
same run:

- sersyncd `--watch-backend inotify` and `fanotify` (no -r, a remote nobody listens on:
  nothing is sent), each with a NOTIFY_SOCKET of its own: READY is exec -> READY=1
  (inotify crawls and watches every directory first; fanotify marks the filesystem);
- lsyncd 2.2 (`default.rsync`, as the shared harness's launcher, with `insist` and an
  rsync stand-in that only sleeps, so that nothing is sent and lsyncd stays up): READY is
  exec -> the "recursive startup rsync" line in its log. lsyncd adds every inotify watch
  in its initialize step, before its main loop starts that rsync (checked with `-log all`:
  every "addwatch" line comes before it), so that line is when its watches are up;
- RSS: the process's VmRSS at READY and its peak (VmHWM) 0.5 s later, MiB;
- watches: the inotify watches the process holds at READY, counted in /proc/PID/fdinfo;
- slab: the growth of the kernel's Slab (/proc/meminfo) from before the start to READY,
  MiB, and per watch (bytes). Noisy on a shared machine: anything else the kernel caches
  meanwhile counts too.

Warm cache (the default): the tree is read once (find) before each start, as the issue's
target says, so the inodes and dentries are in memory already and the slab growth is the
watches' own (the inotify mark and its connector). `--cache cold` (ext4 only) unmounts and
mounts the file system before each start instead: its inodes and dentries leave the cache
(nothing else's does), so the crawl reads them back in and the slab growth includes the
inode and dentry that each watch then pins (the image's blocks stay in the host's page
cache: "cold" means cold inode and dentry caches, not a cold disk).

Usage (root, for fanotify and the mounts):
    bench/watch-startup.py [--bin target/release/sersyncd] [--dirs 100000,1000000]
        [--tools inotify,fanotify,lsyncd] [--fs tmpfs|ext4] [--cache warm|cold|both]
        [--dir /dev/shm/sersync-watch-bench] [--image /var/tmp/sersync-watch-bench.img]

fs.inotify.max_user_watches is raised to fit the biggest tree while it runs and written
back at the end. With `--fs tmpfs` the tree is made under --dir (tmpfs by default:
fanotify works there since Linux 5.17 as tmpfs reports file handles); with `--fs ext4` an
image file (--image, sparse) is made, formatted with 1 KiB blocks and enough inodes, and
loop-mounted on a temporary directory. Everything is removed at the end (tree, mount,
loop device, image).
"""

import argparse
import glob
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


def inotify_watches(pid):
    """inotify watches held by pid: the "inotify wd:" lines of its fdinfo."""
    n = 0
    for fd in glob.glob(f"/proc/{pid}/fdinfo/*"):
        try:
            with open(fd) as f:
                for line in f:
                    if line.startswith("inotify wd:"):
                        n += 1
        except OSError:
            pass
    return n


WATCH_CACHES = ["inotify_inode_mark", "fsnotify_mark_connector"]


def slab_objects(caches):
    """{cache: (objects in use, bytes per object in its slabs)} from /sys/kernel/slab."""
    out = {}
    for cache in caches:
        base = f"/sys/kernel/slab/{cache}"
        try:
            with open(f"{base}/objects") as f:
                objects = int(f.read().split()[0])
            with open(f"{base}/slab_size") as f:
                size = int(f.read())
        except OSError:
            continue
        out[cache] = (objects, size)
    return out


def objects_growth(before, after):
    """Bytes of the objects allocated between two slab_objects() readings, per cache."""
    return {c: max(0, after[c][0] - before[c][0]) * after[c][1] for c in after if c in before}


class Fs:
    """Where the trees live: a tmpfs directory, or an ext4 image loop-mounted for the run."""

    def __init__(self, kind, directory, image, biggest):
        self.kind = kind
        self.image = image
        self.mounted = None
        # The caches of what a watch pins: the file system's inode and the dentry.
        self.caches = WATCH_CACHES + ["dentry", "shmem_inode_cache" if kind == "tmpfs"
                                      else "ext4_inode_cache"]
        if kind == "tmpfs":
            self.dir = directory
            os.makedirs(self.dir, exist_ok=True)
            return
        # 1 KiB blocks: a directory takes one block. Inodes: every directory and every
        # 10th file, with room to spare.
        inodes = int(biggest * 1.2) + 100000
        size = biggest * 1024 * 2 + inodes * 256 + (512 << 20)
        if os.path.exists(image):
            raise SystemExit(f"{image} exists: remove it or pass another --image")
        with open(image, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-N", str(inodes), "-I", "256",
                        image], check=True)
        self.dir = tempfile.mkdtemp(prefix="sersync-watch-bench-ext4-")
        self.mount()
        print(f"ext4 image {image} ({size >> 20} MiB sparse, {inodes} inodes) on {self.dir} "
              f"({self.device()})", file=sys.stderr)

    def mount(self):
        subprocess.run(["mount", "-o", "loop", self.image, self.dir], check=True)
        self.mounted = self.dir

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", self.mounted], check=True)
            self.mounted = None

    def device(self):
        out = subprocess.run(["findmnt", "-n", "-o", "SOURCE", self.dir],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def cold(self):
        """Evicts this file system's inodes and dentries (and only those) from the cache."""
        subprocess.run(["sync"], check=True)
        self.umount()
        self.mount()

    def close(self):
        if self.kind == "tmpfs":
            if os.path.isdir(self.dir) and not os.listdir(self.dir):
                os.rmdir(self.dir)
            return
        try:
            self.umount()  # mount -o loop: the loop device is detached with it (autoclear)
        finally:
            os.rmdir(self.dir)
            os.unlink(self.image)


def prepare(tree, fs, cold):
    if cold:
        fs.cold()
    else:
        # Warm: the tree's inodes and dentries in cache, as after any recent walk.
        subprocess.run(["find", tree, "-type", "d"], stdout=subprocess.DEVNULL, check=True)
    time.sleep(1)


def run_lsyncd(tree, work, fs, cold):
    """lsyncd's start-up: exec -> its "recursive startup rsync" log line."""
    sleeper = os.path.join(work, "rsync-sleeps")
    with open(sleeper, "w") as f:
        f.write("#!/bin/sh\n# Stands in for rsync: lsyncd stays up, nothing is sent.\nexec sleep 3600\n")
    os.chmod(sleeper, 0o755)
    logfile = os.path.join(work, "lsyncd.log")
    if os.path.exists(logfile):
        os.unlink(logfile)
    conf = os.path.join(work, "lsyncd.conf.lua")
    with open(conf, "w") as f:
        # As /work/shared/bench/launchers/lsyncd.sh (default.rsync, delay 1, 2 processes),
        # plus insist (keep running when the start-up rsync fails) and the stand-in rsync.
        f.write(f"""settings {{
    logfile = "{logfile}",
    insist = true,
    maxProcesses = 2,
}}
sync {{
    default.rsync,
    source = "{tree}/",
    target = "rsync://127.0.0.1:9/nobody/",
    delay = 1,
    maxProcesses = 2,
    rsync = {{ binary = "{sleeper}", archive = true, compress = true }},
}}
""")
    prepare(tree, fs, cold)
    slab_before = meminfo("Slab")
    objects_before = slab_objects(fs.caches)
    out = open(os.path.join(work, "lsyncd.out"), "w")
    start = time.monotonic()
    proc = subprocess.Popen(["lsyncd", "-nodaemon", conf], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out, start_new_session=True)
    ready = None
    try:
        while time.monotonic() - start < 1800:
            try:
                with open(logfile) as f:
                    if "recursive startup rsync" in f.read():
                        ready = time.monotonic() - start
                        break
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        if ready is None:
            raise SystemExit(f"lsyncd: no start-up rsync (see {logfile}, {out.name})")
        rss = status(proc.pid, "VmRSS")
        slab = meminfo("Slab") - slab_before
        objects = objects_growth(objects_before, slab_objects(fs.caches))
        time.sleep(0.5)
        hwm = status(proc.pid, "VmHWM")
        watches = inotify_watches(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # lsyncd and its sleeping stand-in
        except ProcessLookupError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    return ready, rss, hwm, slab, objects, watches, "lsyncd"


def run(binary, tree, backend, work, fs=None, cold=False):
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
    prepare(tree, fs, cold)
    slab_before = meminfo("Slab")
    objects_before = slab_objects(fs.caches)
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
        objects = objects_growth(objects_before, slab_objects(fs.caches))
        time.sleep(0.5)
        hwm = status(proc.pid, "VmHWM")
        watches = inotify_watches(proc.pid)
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
    return ready, rss, hwm, slab, objects, watches, used


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/sersyncd")
    p.add_argument("--dirs", default="100000")
    p.add_argument("--tools", default="inotify,fanotify,lsyncd")
    p.add_argument("--fs", choices=["tmpfs", "ext4"], default="tmpfs")
    p.add_argument("--cache", choices=["warm", "cold", "both"], default="warm",
                   help="cold (ext4 only): unmount and mount before each start (cold inode and "
                        "dentry caches); both: each tool warm, then cold")
    p.add_argument("--dir", default="/dev/shm/sersync-watch-bench")
    p.add_argument("--image", default="/var/tmp/sersync-watch-bench.img")
    args = p.parse_args()
    if args.cache != "warm" and args.fs != "ext4":
        raise SystemExit("--cache cold needs --fs ext4")
    caches = ["warm", "cold"] if args.cache == "both" else [args.cache]
    binary = os.path.abspath(args.bin)
    tools = args.tools.split(",")
    if "lsyncd" in tools and shutil.which("lsyncd") is None:
        print("lsyncd is not installed: its rows are left out (apt-get install lsyncd)",
              file=sys.stderr)
        tools.remove("lsyncd")
    sizes = [int(d) for d in args.dirs.split(",")]
    work = tempfile.mkdtemp(prefix="sersync-watch-bench-")
    rows = []
    # Room for every directory's watch while the benchmark runs; written back at the end.
    limit = "/proc/sys/fs/inotify/max_user_watches"
    with open(limit) as f:
        old_limit = f.read().strip()
    wanted = max(int(old_limit), max(sizes) + 100000)
    fs = None
    with open(limit, "w") as f:
        f.write(f"{wanted}\n")
    try:
        fs = Fs(args.fs, args.dir, args.image, max(sizes))
        for dirs in sizes:
            tree = os.path.join(fs.dir, f"tree-{dirs}")
            shutil.rmtree(tree, ignore_errors=True)
            t = time.monotonic()
            make_tree(tree, dirs)
            print(f"tree of {dirs} directories made in {time.monotonic() - t:.1f} s", file=sys.stderr)
            for cache in caches:
                for tool in tools:
                    load = os.getloadavg()[0]
                    cold = cache == "cold"
                    if tool == "lsyncd":
                        result = run_lsyncd(tree, work, fs, cold)
                    else:
                        result = run(binary, tree, tool, work, fs, cold)
                    rows.append((dirs, tool, cache, load) + result)
                    print(f"  {tool}, {cache}: READY {result[0]:.2f} s (load before {load:.2f})",
                          file=sys.stderr)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        with open(limit, "w") as f:
            f.write(f"{old_limit}\n")
        shutil.rmtree(work, ignore_errors=True)
        if fs is not None:
            fs.close()
    mib = 1024 * 1024
    print(f"{args.fs}, {binary}; load = 1-minute load average before each start")
    print("slab growth: /proc/meminfo Slab, READY - before the start; B/watch: that / the "
          "watches. mark+conn: the inotify_inode_mark and fsnotify_mark_connector objects "
          "allocated (in use, /sys/kernel/slab/*/objects x slab_size) per watch; "
          "inode+dentry: the same for the file system's inode cache and dentry")
    print("| directories | tool | cache | READY s | RSS at READY MiB | peak RSS MiB | inotify watches "
          "| slab growth MiB | slab B/watch | mark+conn B/watch | inode+dentry B/watch | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dirs, tool, cache, load, ready, rss, hwm, slab, objects, watches, used in rows:
        name = tool if used == tool else f"{tool} ({used})"
        marks = sum(v for c, v in objects.items() if c in WATCH_CACHES)
        pinned = sum(v for c, v in objects.items() if c not in WATCH_CACHES)

        def per(x):
            return f"{x / watches:.0f}" if watches else "–"
        print(f"| {dirs:,} | {name} | {cache} | {ready:.2f} | {rss / mib:.1f} | {hwm / mib:.1f} "
              f"| {watches:,} | {slab / mib:.1f} | {per(slab)} | {per(marks)} | {per(pinned)} "
              f"| {load:.2f} |")


if __name__ == "__main__":
    main()
