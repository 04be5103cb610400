#!/usr/bin/env bash
# Memory during a long outage (issue #14.4): the remote is down while 2,000,000 new files
# appear (2,000 directories x 1,000 empty files, on /dev/shm; the replica on /var/tmp, as
# a tmpfs has too few inodes for both), then it comes back. Run
# once with the default <queue maxPending="100000"/> and once with the cap out of reach
# (what the daemon did before the cap: one pending entry per path), it prints sersyncd's
# peak RSS, how often pending paths were folded into dirty directories, how long the
# replica took to catch up once the remote was back, and whether replica == source.
#   OURS_BIN=target/release/sersyncd bench/outage.sh [FILES_PER_DIR] [DIRS]
# Needs root only to raise fs.inotify.max_queued_events for the run (put back at exit):
# 4,000,000 events into the default 16,384-event kernel queue would overflow it, and an
# overflow becomes a full sync, which is not the case measured here.
set -euo pipefail
BIN=${OURS_BIN:-target/release/sersyncd}
PER_DIR=${1:-1000}
DIRS=${2:-2000}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set OURS_BIN)" >&2; exit 64; }
command -v rsync >/dev/null || { echo "rsync is not installed" >&2; exit 69; }
W=$(mktemp -d /dev/shm/sersync-outage.XXXXXX)
R=$(mktemp -d /var/tmp/sersync-outage.XXXXXX)
OLD_QUEUE=$(cat /proc/sys/fs/inotify/max_queued_events)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    if [ "$(id -u)" = 0 ]; then echo "$OLD_QUEUE" > /proc/sys/fs/inotify/max_queued_events; fi
    rm -rf "$W" "$R"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then echo 8388608 > /proc/sys/fs/inotify/max_queued_events; fi

kib() { awk -v k="$1" '/^'"$1"':/ {print $2}' "/proc/$2/status"; }

# One run: $1 label, $2 the <queue> element.
run() {
    local label=$1 queue=$2 dir="$W/$1" replica="$R/$1"
    mkdir -p "$dir/src" "$replica" "$dir/state"
    local port
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    cat > "$dir/rsyncd.conf" <<CONF
use chroot = no
[backup]
path = $replica
read only = no
uid = root
gid = root
CONF
    cat > "$dir/c.xml" <<XML
<head version="2.5">
  <inotify><delete start="true"/><createFolder start="true"/><createFile start="false"/>
    <closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/></inotify>
  <sersync><localpath watch="$dir/src"><remote ip="127.0.0.1" name="backup"/></localpath>
  <rsync><commonParams params="-a"/><userDefinedPort start="true" port="$port"/></rsync>
  $queue</sersync>
</head>
XML
    "$BIN" -o "$dir/c.xml" --state-dir "$dir/state" --no-dbus > "$dir/log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    sleep 1
    local start end
    start=$(date +%s.%N)
    python3 - "$dir/src" "$PER_DIR" "$DIRS" <<'PY'
import os, sys
root, per_dir, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    path = os.path.join(root, "d%02d" % (d % 50), "e%04d" % d)
    os.makedirs(path)
    for i in range(per_dir):
        os.close(os.open(os.path.join(path, "f%04d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
PY
    end=$(date +%s.%N)
    # Until the daemon has read every event: its RSS stops moving for 3 s.
    local last=0 now
    for _ in $(seq 600); do
        now=$(kib VmRSS "$pid")
        [ "$now" = "$last" ] && { sleep 3; [ "$(kib VmRSS "$pid")" = "$now" ] && break; }
        last=$now
        sleep 1
    done
    local hwm_outage rss_outage
    hwm_outage=$(kib VmHWM "$pid")
    rss_outage=$(kib VmRSS "$pid")
    rsync --daemon --no-detach --config="$dir/rsyncd.conf" --address=127.0.0.1 --port="$port" \
        --log-file="$dir/rsyncd.log" &
    PIDS+=("$!")
    local back wanted got=0 caught_up
    back=$(date +%s.%N)
    wanted=$(find "$dir/src" | wc -l)
    for _ in $(seq 1200); do
        got=$(find "$replica" | wc -l)
        [ "$got" -ge "$wanted" ] && break
        sleep 1
    done
    caught_up=$(date +%s.%N)
    sleep 2
    local equal=no
    if diff <(cd "$dir/src" && find . | sort) <(cd "$replica" && find . | sort) >/dev/null; then
        equal=yes
    fi
    local folds overflows
    folds=$(grep -c "folded into" "$dir/log" || true)
    overflows=$(grep -c "overflow" "$dir/log" || true)
    python3 - "$label" "$start" "$end" "$back" "$caught_up" "$wanted" "$hwm_outage" \
        "$rss_outage" "$(kib VmHWM "$pid")" "$folds" "$overflows" "$equal" <<'PY'
import sys
(label, start, end, back, caught, wanted, hwm_out, rss_out, hwm_end, folds, overflows,
 equal) = sys.argv[1:]
print("%-14s %9d entries made in %5.1f s | outage: peak RSS %7.1f MiB, RSS %7.1f MiB,"
      " folds %s, overflows %s | caught up %6.1f s after the remote came back"
      " (peak RSS %7.1f MiB) | replica == source: %s"
      % (label, int(wanted) - 1, float(end) - float(start), int(hwm_out) / 1024,
         int(rss_out) / 1024, folds, overflows, float(caught) - float(back),
         int(hwm_end) / 1024, equal))
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir/src" "$replica"
}

run capped ''
run uncapped '<queue maxPending="4294967295"/>'
