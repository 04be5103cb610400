#!/usr/bin/env python3
"""Latency over ssh (issue 17): an sshd of our own on 127.0.0.1, rsync over `-e ssh`.

  floor     200 one-file pushes of 512 B, 50 ms apart, interleaved: cold (one `rsync -e
            ssh` per push, sersyncd's send options) and warm (an rsync started beforehand
            with --files-from=- --from0, its ssh session open, handed the path; a new one
            started after each push, as sersyncd's warm rsyncs).
  sersyncd  sersyncd with `<ssh start="true"/>` pushing to a directory over that sshd, warm
            rsyncs on (the default) and off (`<warm start="false"/>`): 200 files of 512 B
            written one at a time every 50 ms, each one's arrival timed on the replica
            (polled every 0.2 ms): p50/p95/p99/max ms side by side.

    python3 bench/ssh-latency.py              # both
    python3 bench/ssh-latency.py floor        # one of them
    OURS_BIN=target/release/sersyncd python3 bench/ssh-latency.py sersyncd
    COUNT=30 PACE_MS=1000 python3 bench/ssh-latency.py sersyncd   # sporadic changes
    MASTER=false python3 bench/ssh-latency.py sersyncd   # without sersyncd's ssh master

Needs /usr/sbin/sshd (openssh-server), ssh, ssh-keygen, rsync; run as root (sshd logs the
test key in as root). Only the standard library; sshd and sersyncd are stopped by PID.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SEND = ["-artz", "--info=stats1", "--no-human-readable", "--modify-window=-1",
        "--ignore-times", "--no-recursive", "--dirs", "--relative", "--force",
        "--ignore-missing-args"]
COUNT = int(os.environ.get("COUNT", "200"))
PACE = float(os.environ.get("PACE_MS", "50")) / 1000
# `<ssh master>`: unset leaves sersyncd's default (on).
MASTER = os.environ.get("MASTER")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(times):
    times = sorted(times)
    at = lambda q: times[min(len(times) - 1, int(len(times) * q))]
    return at(0.50), at(0.95), at(0.99), times[-1]


def line(name, times, lost=0):
    p50, p95, p99, top = percentiles(times)
    extra = f", {lost} lost" if lost else ""
    print(f"  {name:34} p50 {p50:6.1f} / p95 {p95:6.1f} / p99 {p99:6.1f} / "
          f"max {top:6.1f} ms{extra}")


class Sshd:
    def __init__(self, work):
        self.dir = tempfile.mkdtemp(dir=work)
        at = lambda name: os.path.join(self.dir, name)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", at(key)],
                           check=True, stdin=subprocess.DEVNULL)
        shutil.copy(at("client_key.pub"), at("authorized_keys"))
        self.port = free_port()
        with open(at("host_key.pub")) as f:
            host_key = " ".join(f.read().split()[:2])
        with open(at("known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {host_key}\n")
        with open(at("sshd_config"), "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {at('host_key')}\n"
                    f"AuthorizedKeysFile {at('authorized_keys')}\nPidFile {at('sshd.pid')}\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    "LogLevel ERROR\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", at("sshd_config")],
                                     stdin=subprocess.DEVNULL)
        self.command = (f"ssh -F /dev/null -p {self.port} -i {at('client_key')} "
                        f"-o IdentitiesOnly=yes -o BatchMode=yes "
                        f"-o UserKnownHostsFile={at('known_hosts')} "
                        f"-o StrictHostKeyChecking=yes")
        for _ in range(100):
            ok = subprocess.run(self.command.split() + ["root@127.0.0.1", "true"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
            if ok:
                return
            time.sleep(0.1)
        raise SystemExit("sshd did not answer")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


def floor(work, sshd):
    src = tempfile.mkdtemp(dir=work)
    replica = tempfile.mkdtemp(dir=work)
    dest = f"127.0.0.1:{replica}/"
    rsh = ["-e", sshd.command]

    def start_warm():
        return subprocess.Popen(["rsync", *SEND, *rsh, "--files-from=-", "--from0", "./",
                                 dest], cwd=src, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL)

    cold, warm = [], []
    spare = start_warm()
    time.sleep(1)
    for i in range(COUNT):
        for kind, times in (("cold", cold), ("warm", warm)):
            rel = f"{kind}-{i}"
            with open(os.path.join(src, rel), "wb") as f:
                f.write(os.urandom(512))
            start = time.perf_counter()
            if kind == "cold":
                subprocess.run(["rsync", *SEND, "--timeout=120", *rsh, "./" + rel, dest],
                               cwd=src, check=True, stdout=subprocess.DEVNULL)
            else:
                spare.stdin.write(b"./" + rel.encode() + b"\0")
                spare.stdin.close()
                if spare.wait() != 0:
                    raise SystemExit(f"warm push failed: exit {spare.returncode}")
                spare = start_warm()
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(PACE)
    spare.kill()
    spare.wait()
    print(f"rsync over ssh (sshd on 127.0.0.1), one 512 B file, {COUNT} pushes each:")
    line("cold, one rsync -e ssh per push", cold)
    line("warm (pre-connected)", warm)


def sersyncd_latency(work, sshd, binary, warm_on):
    top = tempfile.mkdtemp(dir=work)
    src = os.path.join(top, "src")
    replica = os.path.join(top, "replica")
    state = os.path.join(top, "state")
    for d in (src, replica, state):
        os.mkdir(d)
    warm = "" if warm_on else '<warm start="false"/>'
    master = f' master="{MASTER}"' if MASTER else ""
    params = f"-artuz -e '{sshd.command}'"
    conf = os.path.join(top, "confxml.xml")
    with open(conf, "w") as f:
        f.write(f"""<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
    <debug start="false"/>
    <filter start="false"></filter>
    <inotify>
        <delete start="true"/><createFolder start="true"/><createFile start="false"/>
        <closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/>
        <attrib start="false"/><modify start="false"/>
    </inotify>
    <sersync>
        <localpath watch="{src}"><remote ip="127.0.0.1" name="{replica}"/></localpath>
        <rsync>
            <commonParams params="{params}"/>
            <auth start="false" users="root" passwordfile="/etc/rsync.pas"/>
            <userDefinedPort start="false" port="874"/>
            <timeout start="false" time="100"/>
            <ssh start="true"{master}/>
            {warm}
        </rsync>
        <failLog path="{state}/rsync_fail_log.sh" timeToExecute="60"/>
        <crontab start="false" schedule="600"></crontab>
        <plugin start="false" name="command"/>
    </sersync>
</head>
""")
    log = open(os.path.join(top, "sersyncd.log"), "w")
    proc = subprocess.Popen([binary, "-n", "10", "-o", conf, "--state-dir", state],
                            cwd=top, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        # Ready: a probe arrives.
        probe = "probe"
        deadline = time.time() + 60
        written = 0
        while not os.path.exists(os.path.join(replica, probe)):
            if time.time() - written > 1:
                # Again each second: the first may come before the watches.
                with open(os.path.join(src, probe), "w") as f:
                    f.write("p\n")
                written = time.time()
            if time.time() > deadline or proc.poll() is not None:
                log.flush()
                with open(os.path.join(top, "sersyncd.log")) as f:
                    raise SystemExit("sersyncd did not deliver the probe:\n" + f.read()[-3000:])
            time.sleep(0.01)
        time.sleep(1)
        times, lost = [], 0
        for i in range(COUNT):
            rel = f"lat-{i}"
            data = os.urandom(512)
            start = time.perf_counter()
            with open(os.path.join(src, rel), "wb") as f:
                f.write(data)
            target = os.path.join(replica, rel)
            while not os.path.exists(target):
                if time.perf_counter() - start > 10:
                    lost += 1
                    break
                time.sleep(0.0002)
            else:
                times.append((time.perf_counter() - start) * 1000)
            time.sleep(PACE)
        return times, lost
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sersyncd(work, sshd):
    binary = os.environ.get("OURS_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "sersyncd")
    master = f' master=\"{MASTER}\"' if MASTER else ""
    print(f"sersyncd <ssh start=\"true\"{master}/> (sshd on 127.0.0.1), {COUNT} files of "
          f"512 B every {int(PACE * 1000)} ms, arrival on the replica:")
    for warm_on in (True, False):
        times, lost = sersyncd_latency(work, sshd, binary, warm_on)
        line("warm rsyncs on (default)" if warm_on else "warm rsyncs off", times, lost)


def main():
    wanted = sys.argv[1:] or ["floor", "sersyncd"]
    work = tempfile.mkdtemp(prefix="ssh-latency.", dir="/dev/shm")
    sshd = Sshd(work)
    try:
        for name in wanted:
            {"floor": floor, "sersyncd": sersyncd}[name](work, sshd)
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
