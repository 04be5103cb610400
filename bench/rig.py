"""What bench/hot-file.py and bench/large-file.py share: one rsync daemon on 127.0.0.1 with
auth (like ../shared/bench/bench.py's), a tool started through the shared harness's
launcher, a probe file that says the tool is up, and the teardown of both by process
group. Standard library only."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LAUNCHERS = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "launchers"


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
    """rsync sessions the daemon logged."""
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


class Rig:
    """`with Rig(tool, work) as rig:` an rsync daemon and `tool` syncing `rig.src` to
    `rig.replica`, up once a probe file arrived; `rig.skip` says why not (then nothing
    else is meaningful). `rig.log` is the daemon's log, `rig.tool` the launcher process."""

    def __init__(self, tool, work):
        self.name, self.work = tool, work
        self.src, self.replica, self.state = work / "src", work / "replica", work / "state"
        self.log = work / "rsyncd.log"
        self.skip = None

    def __enter__(self):
        work = self.work
        for d in (self.src, self.replica, self.state):
            d.mkdir(parents=True)
        port = free_port()
        secrets = work / "secrets"
        secrets.write_text("bench:benchpass\n")
        secrets.chmod(0o600)
        password = work / "password"
        password.write_text("benchpass\n")
        password.chmod(0o600)
        conf = work / "rsyncd.conf"
        conf.write_text(
            f"pid file = {work}/rsyncd.pid\nlog file = {self.log}\nuse chroot = no\n"
            f"[bench]\npath = {self.replica}\nread only = false\nuid = root\ngid = root\n"
            f"auth users = bench\nsecrets file = {secrets}\n"
        )
        self.daemon = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
             "--address=127.0.0.1"],
            start_new_session=True,
        )
        time.sleep(0.5)
        env = dict(os.environ, SRC=str(self.src), HOST="127.0.0.1", PORT=str(port),
                   MODULE="bench", USER="bench", PASSWORD_FILE=str(password),
                   STATE_DIR=str(self.state))
        self.tool_log = open(work / "tool.log", "wb")
        self.tool = subprocess.Popen([str(LAUNCHERS / f"{self.name}.sh")], env=env,
                                     stdout=self.tool_log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        (self.src / "probe").write_text("ready\n")
        deadline = time.time() + 60
        while not (self.replica / "probe").exists():
            if self.tool.poll() is not None:
                self.skip = f"{self.name}: SKIP (exit {self.tool.returncode}; see {work}/tool.log)"
                break
            if time.time() > deadline:
                self.skip = f"{self.name}: FAIL (never synced the probe)"
                break
            time.sleep(0.05)
        return self

    def __exit__(self, *_):
        for proc in (self.tool, self.daemon):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.tool_log.close()
        return False
