#!/usr/bin/env bash
# A working local demo: an rsync daemon with auth on 127.0.0.1 as the "backup host", and
# sersyncd replicating a demo directory into it, controlled over a private D-Bus bus of its
# own (so sersyncctl status/checkpoint/metrics work as printed) and with its metrics on
# 127.0.0.1. Everything lives under $DEMO_DIR (default /tmp/sersync-demo); Ctrl-C stops
# sersyncd, the rsync daemon and the bus it started.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/sersync-demo}
PORT=${DEMO_PORT:-18873}
METRICS_PORT=${DEMO_METRICS_PORT:-19150}

missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v dbus-daemon >/dev/null || missing+=(dbus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: installing ${missing[*]}" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q "${missing[@]}"
    else sudo apt-get update -q && sudo apt-get install -y -q "${missing[@]}"; fi
fi
cargo build --release --quiet
BIN=$PWD/target/release/sersyncd
CTL=$PWD/target/release/sersyncctl

# The demo writes secrets and configs there as you (often root): a directory someone else
# made first (in /tmp anyone can) would let them read the secrets or redirect the writes.
if [ -L "$DEMO_DIR" ]; then
    echo "demo: $DEMO_DIR is a symlink; set DEMO_DIR to a directory of your own" >&2; exit 1
fi
(umask 077 && mkdir -p "$DEMO_DIR")
if [ "$(stat -c %u "$DEMO_DIR")" != "$(id -u)" ] || [ -n "$(find "$DEMO_DIR" -maxdepth 0 -perm /022)" ]; then
    echo "demo: $DEMO_DIR belongs to another user or others may write it ($(stat -c '%U %a' "$DEMO_DIR")); set DEMO_DIR to a directory of your own" >&2
    exit 1
fi
mkdir -p "$DEMO_DIR"/{src,replica,state}
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
cat > "$DEMO_DIR/rsyncd.conf" <<CONF
pid file = $DEMO_DIR/rsyncd.pid
use chroot = no
$( [ "$(id -u)" = 0 ] && printf 'uid = root\ngid = root\n' )
[demo]
    path = $DEMO_DIR/replica
    read only = no
    auth users = demo
    secrets file = $DEMO_DIR/rsyncd.secrets
CONF
printf 'demo:demo-secret\n' > "$DEMO_DIR/rsyncd.secrets"; chmod 600 "$DEMO_DIR/rsyncd.secrets"
printf 'demo-secret\n' > "$DEMO_DIR/client.pass"; chmod 600 "$DEMO_DIR/client.pass"
[ -e "$DEMO_DIR/src/hello.txt" ] || echo "hello from sersync" > "$DEMO_DIR/src/hello.txt"

rm -f "$DEMO_DIR/rsyncd.pid"
rsync --daemon --no-detach --config="$DEMO_DIR/rsyncd.conf" --address=127.0.0.1 --port="$PORT" &
RSYNCD=$!
trap 'kill "$RSYNCD" 2>/dev/null; wait "$RSYNCD" 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done

# A bus of the demo's own: no system bus policy to install, nothing shared.
BUS=unix:path=$DEMO_DIR/bus
rm -f "$DEMO_DIR/bus"
dbus-daemon --session --nofork --nopidfile --address="$BUS" &
DBUS=$!
trap 'kill "$RSYNCD" "$DBUS" 2>/dev/null; wait "$RSYNCD" "$DBUS" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$DEMO_DIR/bus" ] && break; sleep 0.1; done

cat > "$DEMO_DIR/demo.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
    <debug start="false"/>
    <inotify>
        <delete start="true"/><createFolder start="true"/><createFile start="false"/>
        <closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/>
        <attrib start="true"/><modify start="false"/>
    </inotify>
    <sersync>
        <localpath watch="$DEMO_DIR/src">
            <remote ip="127.0.0.1" name="demo"/>
        </localpath>
        <rsync>
            <commonParams params="-artuz"/>
            <auth start="true" users="demo" passwordfile="$DEMO_DIR/client.pass"/>
            <userDefinedPort start="true" port="$PORT"/>
            <timeout start="true" time="30"/>
            <ssh start="false"/>
        </rsync>
        <failLog path="rsync_fail_log.sh" timeToExecute="60"/>
        <crontab start="false" schedule="600"/>
    </sersync>
</head>
XML

cat <<MSG

  sersync demo
  ------------
  source : $DEMO_DIR/src       (edit, create, rename, delete files here)
  replica: $DEMO_DIR/replica   (an rsync daemon on 127.0.0.1:$PORT, module "demo")
  config : $DEMO_DIR/demo.xml

  Try in another terminal:  echo hi > $DEMO_DIR/src/a.txt; ls -l $DEMO_DIR/replica

  Ask the daemon (over the demo's own bus):
    $CTL --bus-address $BUS status
    $CTL --bus-address $BUS checkpoint --wait --timeout 10   # 0 once everything is on the replica
    $CTL --bus-address $BUS health                           # a Nagios-style check
    $CTL --bus-address $BUS metrics                          # or: curl -s http://127.0.0.1:$METRICS_PORT/metrics
  Stop with Ctrl-C.

MSG
"$BIN" -r -o "$DEMO_DIR/demo.xml" --state-dir "$DEMO_DIR/state" --bus-address "$BUS" \
    --instance demo --metrics-listen "127.0.0.1:$METRICS_PORT" &
DAEMON=$!
trap 'kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null; kill "$RSYNCD" "$DBUS" 2>/dev/null; wait "$RSYNCD" "$DBUS" 2>/dev/null || true' EXIT INT TERM
wait "$DAEMON"
