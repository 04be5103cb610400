#!/bin/sh
# End-to-end test of the systemd integration under a real systemd (PID 1 of a
# systemd-nspawn container; Debian 12, systemd 252):
#
#   systemd/e2e-nspawn.sh            # as root; builds the binaries (cargo build --bins)
#   NO_BUILD=1 BIN_DIR=... systemd/e2e-nspawn.sh
#
# What it checks, in a throw-away container (--volatile=overlay, --private-network):
#   - sersync-generator at daemon-reload: the <crontab> drop-ins, SERSYNC_CRONTAB=systemd
#   - systemctl enable --now sersync@web: active once READY=1, status text, a change
#     replicated to an rsync daemon inside the container, under the unit's full sandbox
#   - the full-sync timer is pulled in with the configured period and stops with the
#     instance (BindsTo=)
#   - systemctl start sersync-fullsync@web: sersyncctl over D-Bus, --wait, a full sync
#   - systemctl reload with a valid and an invalid config: still active
#   - journalctl -o json: the structured fields of the instance
#   - systemctl stop: exit status 0, the timer goes too
#   - the online exposure score (systemd-analyze security)
#   - <crontab start="false"> + daemon-reload: no drop-in, no timer, no SERSYNC_CRONTAB
#   - sersync@NAME without /etc/sersync/NAME.xml fails to start (AssertPathExists=)
#
# Needs root, debootstrap and systemd-container (apt-get install debootstrap
# systemd-container). The container root is built once with debootstrap (~2 min) into
# $NSPAWN_ROOT (default /var/tmp/sersync-nspawn/root) and reused; a run then takes
# ~6 s (boot included) on a 2-core machine.
# The units are installed as shipped, with /usr/bin/sersyncd etc. copied into the
# container's /usr/bin.
# The single-quoted scripts run inside the container: they expand there, on purpose.
# shellcheck disable=SC2016
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
NSPAWN_ROOT=${NSPAWN_ROOT:-/var/tmp/sersync-nspawn/root}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}
START=$(date +%s)

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn missing: apt-get install systemd-container"

if [ "${NO_BUILD:-}" != 1 ]; then
    log "cargo build --bins"
    (cd "$REPO" && cargo build --bins --quiet)
fi
for bin in sersyncd sersyncctl sersync-generator; do
    [ -x "$BIN_DIR/$bin" ] || fail "$BIN_DIR/$bin not built"
done

if [ ! -x "$NSPAWN_ROOT/usr/lib/systemd/systemd" ]; then
    command -v debootstrap >/dev/null || fail "debootstrap missing: apt-get install debootstrap"
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    log "debootstrap bookworm into $NSPAWN_ROOT from $mirror (once)"
    mkdir -p "$(dirname "$NSPAWN_ROOT")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,rsync,iproute2,procps \
        bookworm "$NSPAWN_ROOT" "$mirror" >"$(dirname "$NSPAWN_ROOT")/debootstrap.log" 2>&1 ||
        fail "debootstrap failed, see $(dirname "$NSPAWN_ROOT")/debootstrap.log"
fi

# Everything the container gets, bind-mounted read-only at /mnt/stage.
STAGE=$(mktemp -d /var/tmp/sersync-e2e-stage.XXXXXX)
NSP=
LEADER=
ns() { nsenter -t "$LEADER" -a "$@"; }
cleanup() {
    if [ -n "$NSP" ] && kill -0 "$NSP" 2>/dev/null; then
        { [ -n "$LEADER" ] && ns systemctl poweroff >/dev/null 2>&1; } ||
            kill "$NSP" 2>/dev/null || true
        i=0
        while kill -0 "$NSP" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$NSP" 2>/dev/null || true
    fi
    rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$STAGE/bin" "$STAGE/units" "$STAGE/dbus"
cp "$BIN_DIR/sersyncd" "$BIN_DIR/sersyncctl" "$BIN_DIR/sersync-generator" "$STAGE/bin/"
cp "$REPO"/systemd/*.service "$REPO"/systemd/*.timer "$STAGE/units/"
cp "$REPO"/systemd/sysctl.d/*.conf "$STAGE/units/"
if [ -f "$REPO/dbus/org.sersync.Sersync1.conf" ]; then
    cp "$REPO/dbus/org.sersync.Sersync1.conf" "$STAGE/dbus/"
fi
cat >"$STAGE/web.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
    <host hostip="localhost" port="8008"></host>
    <debug start="false"/>
    <fileSystem xfs="false"/>
    <filter start="false"></filter>
    <inotify>
        <delete start="true"/>
        <createFolder start="true"/>
        <createFile start="false"/>
        <closeWrite start="true"/>
        <moveFrom start="true"/>
        <moveTo start="true"/>
        <attrib start="false"/>
        <modify start="false"/>
    </inotify>
    <sersync>
        <localpath watch="/srv/src">
            <remote ip="127.0.0.1" name="web"/>
        </localpath>
        <rsync>
            <commonParams params="-artuz"/>
            <auth start="true" users="syncer" passwordfile="/etc/sersync/web.pass"/>
            <userDefinedPort start="true" port="8873"/>
            <timeout start="true" time="30"/>
            <ssh start="false"/>
        </rsync>
        <failLog path="rsync_fail_log.sh" timeToExecute="60"/>
        <crontab start="true" schedule="7"></crontab>
        <plugin start="false" name="command"/>
    </sersync>
</head>
EOF
cat >"$STAGE/rsyncd.conf" <<'EOF'
pid file = /run/e2e-rsyncd.pid
use chroot = no
[web]
    path = /srv/replica
    read only = no
    uid = root
    gid = root
    auth users = syncer
    secrets file = /etc/e2e-rsyncd.secrets
EOF

log "booting the container (volatile overlay of $NSPAWN_ROOT)"
BOOT_LOG=$STAGE/boot.log
systemd-nspawn -D "$NSPAWN_ROOT" -b --register=no --keep-unit --console=passive \
    --volatile=overlay --private-network --bind-ro="$STAGE:/mnt/stage" \
    >"$BOOT_LOG" 2>&1 &
NSP=$!
# The container's PID 1 is nspawn's child once that has exec'd systemd; entering it
# earlier would enter the host's namespaces.
LEADER=
i=0
while [ $i -lt 200 ]; do
    LEADER=$(pgrep -P "$NSP" | head -1 || true)
    if [ -n "$LEADER" ] && [ "$(cat "/proc/$LEADER/comm" 2>/dev/null)" = systemd ]; then
        break
    fi
    LEADER=
    kill -0 "$NSP" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
[ -n "$LEADER" ] || fail "the container did not start: $(tail -5 "$BOOT_LOG")"
# Until PID 1 answers at all (its socket comes a moment after the exec), then until
# the boot is done.
state=
i=0
while [ $i -lt 600 ]; do
    state=$(timeout 60 nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
    i=$((i + 1))
done
case "$state" in
    running|degraded) log "container booted: $state" ;;
    *) fail "container state '$state': $(tail -20 "$BOOT_LOG")" ;;
esac

in_ct() { ns sh -c "$1"; }

# Install as the package would.
in_ct '
set -e
install -m 0755 /mnt/stage/bin/sersyncd /mnt/stage/bin/sersyncctl /usr/bin/
install -d /usr/lib/systemd/system-generators
install -m 0755 /mnt/stage/bin/sersync-generator /usr/lib/systemd/system-generators/
for f in /mnt/stage/units/*.service /mnt/stage/units/*.timer; do
    install -m 0644 "$f" /usr/lib/systemd/system/
done
install -d /usr/lib/sysctl.d
install -m 0644 /mnt/stage/units/*.conf /usr/lib/sysctl.d/
if [ -f /mnt/stage/dbus/org.sersync.Sersync1.conf ]; then
    install -m 0644 /mnt/stage/dbus/org.sersync.Sersync1.conf /usr/share/dbus-1/system.d/
    systemctl reload dbus.service
fi
install -d -m 0755 /etc/sersync /srv/src /srv/replica
install -m 0644 /mnt/stage/web.xml /etc/sersync/web.xml
umask 077
echo s3cret > /etc/sersync/web.pass
echo syncer:s3cret > /etc/e2e-rsyncd.secrets
cp /mnt/stage/rsyncd.conf /etc/e2e-rsyncd.conf
systemd-run --quiet --unit=e2e-rsyncd rsync --daemon --no-detach --config=/etc/e2e-rsyncd.conf \
    --address=127.0.0.1 --port=8873
systemctl daemon-reload
'

check() { # check DESCRIPTION COMMAND...
    desc=$1; shift
    if "$@"; then log "ok: $desc"; else fail "$desc"; fi
}
wait_for() { # wait_for SECONDS SHELL-CONDITION (inside the container)
    n=$(($1 * 10)); shift
    while [ $n -gt 0 ]; do
        in_ct "$1" >/dev/null 2>&1 && return 0
        sleep 0.1; n=$((n - 1))
    done
    return 1
}
show() { ns systemctl show -P "$2" "$1"; }

check "generator wrote the timer drop-in (7min)" \
    in_ct 'grep -qx "OnUnitActiveSec=7min" /run/systemd/generator/sersync-fullsync@web.timer.d/50-crontab.conf'
check "generator made sersync@web want its timer" \
    in_ct 'systemctl show -P Wants sersync@web.service | grep -q "sersync-fullsync@web.timer"'

t0=$(date +%s%N)
in_ct 'systemctl enable --now sersync@web.service' 2>/dev/null
t1=$(date +%s%N)
log "systemctl enable --now sersync@web returned after $(((t1 - t0) / 1000000)) ms"
check "sersync@web is active" test "$(show sersync@web.service ActiveState)" = active
log "status: $(show sersync@web.service StatusText)"
check "SERSYNC_CRONTAB=systemd in its environment" \
    in_ct 'systemctl show -P Environment sersync@web.service | grep -q SERSYNC_CRONTAB=systemd'
check "the full-sync timer runs with the instance" \
    test "$(show sersync-fullsync@web.timer ActiveState)" = active
log "timer: $(in_ct 'systemctl list-timers --no-pager sersync-fullsync@web.timer' | sed -n 2p)"
monotonic=$(show sersync-fullsync@web.timer TimersMonotonic)
log "timer triggers: $(echo "$monotonic" | tr '\n' ' ')"
check "the configured 7 minutes replace the template's 600" \
    sh -c 'echo "$1" | grep -q "OnActiveUSec=7min" && echo "$1" | grep -q "OnUnitActiveUSec=7min" && ! echo "$1" | grep -q 10h' - "$monotonic"

in_ct 'echo hello > /srv/src/hello.txt; mkdir -p /srv/src/d/e; echo deep > /srv/src/d/e/f.txt'
check "a change is replicated under the sandbox" \
    wait_for 15 'test "$(cat /srv/replica/hello.txt)" = hello && test -f /srv/replica/d/e/f.txt'

# A full sync over D-Bus brings back what was removed on the replica behind our back.
in_ct 'rm /srv/replica/hello.txt'
if in_ct 'timeout 60 systemctl start sersync-fullsync@web.service'; then
    check "sersync-fullsync@web restored the replica" test -n "$(in_ct 'cat /srv/replica/hello.txt')"
    check "sersync-fullsync@web succeeded" \
        test "$(show sersync-fullsync@web.service Result)" = success
else
    in_ct 'journalctl --no-pager -n 20 -u sersync-fullsync@web.service' >&2 || true
    fail "systemctl start sersync-fullsync@web.service"
fi

in_ct 'systemctl reload sersync@web.service'
check "active after a reload with a valid config" \
    wait_for 10 'test "$(systemctl show -P ActiveState sersync@web.service)" = active'
in_ct 'cp /etc/sersync/web.xml /etc/sersync/web.xml.good; echo "<head>" > /etc/sersync/web.xml'
in_ct 'systemctl reload sersync@web.service'
check "active after a reload with an invalid config" \
    wait_for 10 'test "$(systemctl show -P ActiveState sersync@web.service)" = active'
in_ct 'echo still > /srv/src/after-bad-reload.txt'
check "the old config keeps replicating" \
    wait_for 15 'test -f /srv/replica/after-bad-reload.txt'
in_ct 'mv /etc/sersync/web.xml.good /etc/sersync/web.xml'

fields=$(in_ct 'journalctl --no-pager -o json SERSYNC_INSTANCE=web' |
    tr ',' '\n' | sed -n 's/^{*"\([A-Z_]*\)":.*/\1/p' | sort -u | tr '\n' ' ')
log "journal fields of SERSYNC_INSTANCE=web: $fields"
for field in MESSAGE PRIORITY SYSLOG_IDENTIFIER SERSYNC_INSTANCE SERSYNC_REMOTE; do
    case " $fields " in
        *" $field "*) ;;
        *) fail "no journal field $field" ;;
    esac
done
log "ok: journal fields"

log "exposure (online): $(in_ct 'systemd-analyze security sersync@web.service 2>/dev/null' | sed -n 's/.*Overall exposure level for [^:]*: //p')"

in_ct 'systemctl stop sersync@web.service'
check "stopped with status 0" test "$(show sersync@web.service ExecMainStatus)" = 0
check "stopped cleanly (Result=success)" test "$(show sersync@web.service Result)" = success
check "the timer stopped with the instance" \
    test "$(show sersync-fullsync@web.timer ActiveState)" = inactive

# <crontab start="false">: after daemon-reload the instance no longer wants the timer.
in_ct 'sed -i "s/<crontab start=\"true\"/<crontab start=\"false\"/" /etc/sersync/web.xml && systemctl daemon-reload'
check "no drop-in without <crontab>" \
    in_ct 'test ! -e /run/systemd/generator/sersync-fullsync@web.timer.d/50-crontab.conf'
in_ct 'systemctl start sersync@web.service'
check "active again" test "$(show sersync@web.service ActiveState)" = active
check "no timer without <crontab>" test "$(show sersync-fullsync@web.timer ActiveState)" = inactive
check "no SERSYNC_CRONTAB without <crontab>" \
    in_ct '! systemctl show -P Environment sersync@web.service | grep -q SERSYNC_CRONTAB'
# Enabled by hand, the timer comes with the instance at the template's 600 minutes.
in_ct 'systemctl enable sersync-fullsync@web.timer 2>/dev/null'
check "enable links the timer to the instance" \
    in_ct 'test -L /etc/systemd/system/sersync@web.service.wants/sersync-fullsync@web.timer'
in_ct 'systemctl restart sersync@web.service'
check "an enabled timer runs with the instance" \
    test "$(show sersync-fullsync@web.timer ActiveState)" = active
check "at the default 600 minutes" \
    in_ct 'systemctl show -P TimersMonotonic sersync-fullsync@web.timer | grep -q "OnUnitActiveUSec=10h"'
in_ct 'systemctl stop sersync@web.service'

check "an instance without a config fails to start (AssertPathExists)" \
    in_ct '! systemctl start sersync@nope.service 2>/dev/null'

log "PASS in $(($(date +%s) - START)) s"
