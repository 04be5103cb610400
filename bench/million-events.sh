#!/usr/bin/env bash
# Memory under a 1,000,000-event burst: the queue coalesces per path, so peak RSS must stay
# flat however many events arrive. The remote is unreachable (a closed port on 127.0.0.1),
# so nothing drains while 1000 files get 500 appends each (IN_MODIFY + IN_CLOSE_WRITE per
# append = 1,000,000 events), then prints sersyncd's peak RSS (VmHWM) and how often the kernel queue overflowed.
#   OURS_BIN=target/release/sersyncd bench/million-events.sh
set -euo pipefail
BIN=${OURS_BIN:-target/release/sersyncd}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set OURS_BIN)" >&2; exit 64; }
W=$(mktemp -d /dev/shm/sersync-million.XXXXXX)
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/src" "$W/state"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$W/c.xml" <<XML
<head version="2.5">
  <inotify><modify start="true"/><closeWrite start="true"/></inotify>
  <sersync><localpath watch="$W/src"><remote ip="127.0.0.1" name="gone"/></localpath>
  <rsync><commonParams params="-a"/><userDefinedPort start="true" port="$PORT"/></rsync></sersync>
</head>
XML
"$BIN" -o "$W/c.xml" --state-dir "$W/state" --no-dbus > "$W/log" 2>&1 &
PID=$!
sleep 1
start=$(date +%s.%N)
python3 - "$W/src" <<'PY'
import os, sys
root = sys.argv[1]
names = [os.path.join(root, "d%02d" % (i % 20), "f%04d" % i) for i in range(1000)]
for d in {os.path.dirname(n) for n in names}:
    os.makedirs(d, exist_ok=True)
for rnd in range(500):
    for n in names:
        with open(n, "ab") as f:
            f.write(b"x")
PY
end=$(date +%s.%N)
sleep 2
hwm=$(awk '/VmHWM/ {print $2, $3}' /proc/$PID/status)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)
overflows=$(grep -c "overflowed" "$W/log" || true)
python3 -c "print('events: ~1,000,000 (500,000 appends to 1,000 files) in %.1f s' % ($end - $start))"
echo "sersyncd peak RSS (VmHWM): $hwm; RSS now: $rss; inotify overflows: $overflows"
