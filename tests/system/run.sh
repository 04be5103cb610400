#!/usr/bin/env bash
# End-to-end system test of the sersync .deb on a real systemd (PID 1): issue 9.
#
#     tests/system/run.sh             # DEB=path/to/sersync_*.deb to test a given package
#     tests/system/run.sh --prepare   # only build (or check) the cached Debian tree
#     EXTRA_DEBS="a.deb b.deb" tests/system/run.sh   # dpkg -i these in the container first
#
# Needs root on Debian 12 (the CI machines). It
#   - installs debootstrap and systemd-container with apt-get if they are missing;
#   - builds a minimal Debian 12 tree with systemd, dbus and rsync ONCE, cached under
#     $SERSYNC_SYSTEST_CACHE (default /var/cache/sersync-system-test/) and keyed by the
#     suite, architecture and package list (about 1-3 minutes the first time, from the
#     mirror of /etc/apt/sources.list(.d); MIRROR=URL overrides it);
#   - boots it with systemd-nspawn --volatile=overlay (the cached tree is never written:
#     every run gets a throw-away root on tmpfs), drives it with nsenter, and plays the
#     administrator's commands of issue 9 (steps 1-8 and 10) and the fanotify drop-in of
#     issue 20 (step 9: refused with exit 78 and auto's fallback without it, fanotify
#     with it, on a tmpfs mounted in the container), printing PASS/FAIL per step;
#   - runs the "backup" host inside the container: an rsync daemon with auth (modules
#     "web" and "docs", secrets file), started as the transient unit backup-rsyncd. The
#     container shares the host's network namespace (no --private-network): the daemon
#     listens on 127.0.0.1 on a free port chosen at run time. Both sides use the rsync of
#     the tree: Debian 12's main suite (3.2.7-1+deb12u6). To test another one, e.g. the
#     bookworm-security rsync the CI host has: cd /tmp && apt-get download rsync, then
#     EXTRA_DEBS=/tmp/rsync_*.deb.
# A step that fails leaves the daemon in whatever state it failed in; the next steps
# first get rid of undelivered changes ("heal": retry-failed, else a restart with an empty
# state directory, printed as "info") so that each step tests only itself.
# Exit status: 0 when every step passed, 1 otherwise (2: could not even set up).
# Everything it starts (debootstrap, systemd-nspawn and the container) is stopped by PID
# on exit; KEEP=1 keeps the work directory (logs) for inspection.
#
# Duration on a busy 2-core CI machine: ~30 s when every step passes (the steps wait for
# real timers: RestartSec=5s, the full-sync timer's 5 s, the failure backoff), longer
# when checks run into their time limits (~90 s with step 4 failing); the first run adds
# the debootstrap: ~2 minutes, 166 MB in the cache.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SUITE=bookworm
VARIANT=minbase
# What the container needs besides minbase: systemd as PID 1, the system bus, rsync (the
# package's dependency, and the backup host's daemon), ss (iproute2), pgrep (procps).
PACKAGES=systemd,systemd-sysv,dbus,rsync,iproute2,procps
CACHE_BASE=${SERSYNC_SYSTEST_CACHE:-/var/cache/sersync-system-test}
CACHE_FORMAT=1          # bump when the post-processing of the tree changes

T_START=$(date +%s%N)
NSP=''                  # PID of systemd-nspawn
LEADER=''               # PID (host view) of the container's systemd
DBS=''                  # PID of a running debootstrap
WORK=''
FAILED=0
RESULTS=()

say() { printf '%s\n' "$*"; }
die() { say "system test: $*" >&2; exit 2; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { # secs START_NS -> "12.3"
    local d=$(( ($(date +%s%N) - $1) / 100000000 ))
    printf '%d.%d' $((d / 10)) $((d % 10))
}

# --- clean-up: every process we started, by PID ------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$DBS" ] && kill -0 "$DBS" 2>/dev/null; then
        # setsid made debootstrap a process-group leader: stop it and its children.
        kill -TERM -- "-$DBS" 2>/dev/null
        wait "$DBS" 2>/dev/null
    fi
    if [ -n "$NSP" ] && kill -0 "$NSP" 2>/dev/null; then
        # SIGTERM to systemd-nspawn = an orderly poweroff of the container.
        kill -TERM "$NSP" 2>/dev/null
    
        for _ in $(seq 1 60); do
            kill -0 "$NSP" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$NSP" 2>/dev/null; then
            # Killing the container's PID 1 kills its whole PID namespace.
            [ -z "$LEADER" ] || kill -KILL "$LEADER" 2>/dev/null
            sleep 0.5
            kill -KILL "$NSP" 2>/dev/null
        fi
        wait "$NSP" 2>/dev/null
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP:-0}" = 1 ]; then
            say "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# --- host prerequisites --------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (systemd-nspawn, debootstrap)"

ensure_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
          apt-get install -y -q --no-install-recommends "${missing[@]}"; } ||
        die "apt-get install ${missing[*]} failed"
}

# The Debian mirror the host's apt uses (first source carrying the suite), so that CI
# without internet still reaches it.
find_mirror() {
    [ -n "${MIRROR:-}" ] && { say "$MIRROR"; return; }
    local m=''
    if [ -f /etc/apt/sources.list ]; then
        m=$(awk -v s="$SUITE" '$1 == "deb" {
                i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == s) { print $i; exit } }' /etc/apt/sources.list)
    fi
    if [ -z "$m" ]; then
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            m=$(awk -v s="$SUITE" '
                function flush() { if (deb && uri != "" && hit) { print uri; found = 1 }
                                   deb = 0; uri = ""; hit = 0 }
                /^[ \t]*$/ { flush(); if (found) exit; next }
                /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
                END { if (!found) flush() }' "$f" | head -n 1)
            [ -n "$m" ] && break
        done
    fi
    say "${m:-http://deb.debian.org/debian}"
}

# Builds the Debian tree once; sets TREE.
prepare_tree() {
    local arch key dir t0 mirror
    arch=$(dpkg --print-architecture)
    key=$(printf '%s\n' "$CACHE_FORMAT" "$SUITE" "$VARIANT" "$arch" "$PACKAGES" |
        sha256sum | cut -c1-12)
    dir=$CACHE_BASE/$SUITE-$arch-$key
    TREE=$dir/root
    if [ -e "$dir/complete" ]; then
        say "debootstrap tree: $TREE (cached)"
        return 0
    fi
    mkdir -p "$CACHE_BASE"
    exec 9>"$CACHE_BASE/lock"
    flock -w 1200 9 || die "timed out waiting for $CACHE_BASE/lock"
    if [ -e "$dir/complete" ]; then
        exec 9>&-
        say "debootstrap tree: $TREE (cached by a concurrent run)"
        return 0
    fi
    mirror=$(find_mirror)
    say "debootstrap tree: building $TREE from $mirror ($PACKAGES)"
    t0=$(date +%s%N)
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    setsid debootstrap --variant="$VARIANT" --include="$PACKAGES" \
        "$SUITE" "$dir.tmp/root" "$mirror" >"$dir.tmp/debootstrap.log" 2>&1 &
    DBS=$!
    if ! wait "$DBS"; then
        DBS=''
        tail -n 20 "$dir.tmp/debootstrap.log" >&2
        rm -rf "$dir.tmp"
        die "debootstrap failed (log above)"
    fi
    DBS=''
    # Smaller cache; an empty machine-id so that each boot gets its own.
    rm -f "$dir.tmp/root"/var/cache/apt/archives/*.deb
    rm -rf "$dir.tmp/root"/var/lib/apt/lists/*
    : >"$dir.tmp/root/etc/machine-id"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    touch "$dir/complete"
    exec 9>&-
    say "debootstrap tree: built in $(secs "$t0") s ($(du -sh "$dir" | cut -f1))"
}

ensure_host_tools
prepare_tree
if [ "${1:-}" = --prepare ]; then
    exit 0
fi
T_TESTS=$(date +%s%N)

# --- the package ---------------------------------------------------------------------------
if [ -z "${DEB:-}" ]; then
    # Where cargo-deb puts it: the target directory (CARGO_TARGET_DIR honoured).
    DEBS=${CARGO_TARGET_DIR:-$REPO/target}/debian
    DEB=$(ls -t "$DEBS"/sersync_*.deb 2>/dev/null | head -n 1)
    if [ -z "$DEB" ]; then
        say "no $DEBS/sersync_*.deb: building it with packaging/build.sh"
        # build.sh prints the paths of the packages it made.
        BUILT=$("$REPO/packaging/build.sh") || die "packaging/build.sh failed"
        DEB=$(printf '%s\n' "$BUILT" | grep '\.deb$' | head -n 1)
    fi
fi
[ -f "$DEB" ] || die "package not found: ${DEB:-${DEBS:-target/debian}/sersync_*.deb}"
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
say "package: $DEB ($(date -r "$DEB" '+%F %T'))"
newer=$(find "$REPO/src" "$REPO/systemd" "$REPO/dbus" "$REPO/packaging" "$REPO/Cargo.toml" \
    -newer "$DEB" -type f 2>/dev/null | head -n 3)
[ -z "$newer" ] || say "warning: sources newer than the package, e.g. ${newer//$'\n'/, }"

WORK=$(mktemp -d /var/tmp/sersync-systest.XXXXXX)
mkdir -p "$WORK/in"
cp "$DEB" "$WORK/in/"
DEB_IN=/mnt/in/$(basename "$DEB")
mkdir -p "$WORK/in/extra"
for extra in ${EXTRA_DEBS:-}; do
    [ -f "$extra" ] || die "EXTRA_DEBS: no such file: $extra"
    cp "$extra" "$WORK/in/extra/"
done

# --- driving the container -----------------------------------------------------------------
CENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb
      SYSTEMD_PAGER=cat PAGER=cat SYSTEMD_COLORS=0)
# c CMD...: run in the container (all its namespaces), 60 s at most.
c() { timeout -k 5 "${CT:-60}" nsenter -t "$LEADER" -a "${CENV[@]}" "$@"; }
# csh SCRIPT: sh -c in the container.
csh() { c sh -c "$1"; }
# wait_until SECONDS CMD...: poll every 0.25 s until CMD succeeds.
wait_until() {
    local deadline=$(( $(ms) + $1 * 1000 )); shift
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(ms)" -lt "$deadline" ] || return 1
        sleep 0.25
    done
}

STEP_OK=1
ok()   { say "    ok    $*"; }
bad()  { say "    FAIL  $*"; STEP_OK=0; }
note() { say "    info  $*"; }
indent() { sed 's/^/          | /'; }
# gq ARGS...: grep -q that reads all its input (under pipefail, grep -q exiting early
# would make the writer of a large pipe die of SIGPIPE and the pipeline "fail").
gq() { grep "$@" >/dev/null; }
# check DESCRIPTION CMD...: ok or FAIL (with what CMD printed); returns CMD's success.
# CMD runs in this shell (not in a $(...) subshell), so that an INT/TERM trap runs at once.
check() {
    local desc=$1; shift
    if "$@" >"$WORK/check.out" 2>&1; then ok "$desc"; return 0; fi
    bad "$desc"
    tail -n 15 "$WORK/check.out" | indent
    return 1
}
prop() { c systemctl show -p "$2" --value "$1"; }     # prop UNIT PROPERTY
unit_is() { [ "$(prop sersync@web.service "$1")" = "$2" ]; }
ctl() { c sersyncctl -i web "$@"; }
as_user() { local u=$1; shift; c runuser -u "$u" -- "$@"; }
# Journal helpers: a cursor, then what the unit logged after it.
jcursor() { c journalctl -n 1 -o export --no-pager | sed -n 's/^__CURSOR=//p'; }
jafter() { c journalctl --no-pager -u sersync@web.service -o cat --after-cursor="$1"; }
jhas() { jafter "$1" | gq -E -- "$2"; }
# Replica checks: path relative to the watch root (/srv/www) and the module (/srv/backup/web).
same() { csh "cmp -s '/srv/www/$1' '/srv/backup/web/$1'"; }
absent() { csh "! test -e '/srv/backup/web/$1' && ! test -L '/srv/backup/web/$1'"; }
trees_equal() { # trees_equal SRC DST: same names, types and contents
    csh "cd '$1' && find . -mindepth 1 | sort >/tmp/a && (cd '$2' && find . -mindepth 1 | sort) >/tmp/b &&
         cmp -s /tmp/a /tmp/b && diff -r '$1' '$2' >/dev/null"
}

boot_container() {
    # --system-call-filter: nspawn's own seccomp filter denies the fanotify calls to the
    # whole container (fanotify_init fails with EPERM even as root with CAP_SYS_ADMIN);
    # step 9 needs them allowed, as a container host must for fanotify inside.
    systemd-nspawn -q -D "$TREE" -b --register=no --keep-unit --console=passive \
        --volatile=overlay -M "sersync-systest-$$" \
        --system-call-filter='fanotify_init fanotify_mark open_by_handle_at' \
        --bind-ro="$WORK/in:/mnt/in" </dev/null >"$WORK/boot.log" 2>&1 &
    NSP=$!
    # The container's PID 1: a child of systemd-nspawn in another PID namespace.
    local deadline=$(( $(ms) + 20000 )) p self
    self=$(readlink /proc/self/ns/pid)
    while [ -z "$LEADER" ]; do
        kill -0 "$NSP" 2>/dev/null || { cat "$WORK/boot.log" >&2; die "systemd-nspawn exited"; }
        [ "$(ms)" -lt "$deadline" ] || die "no container PID 1 after 20 s"
        for p in $(pgrep -P "$NSP"); do
            if [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" != "$self" ] &&
               [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ]; then
                LEADER=$p
            fi
        done
        [ -n "$LEADER" ] || sleep 0.1
    done
    # systemctl works once PID 1 listens on /run/systemd/private; then wait for the boot.
    local state=''
    deadline=$(( $(ms) + 60000 ))
    while :; do
        state=$(CT=60 c systemctl is-system-running --wait 2>/dev/null)
        # "offline": PID 1 is up but has not yet marked the boot (/run/systemd/system).
        { [ -z "$state" ] || [ "$state" = offline ]; } && [ "$(ms)" -lt "$deadline" ] || break
        sleep 0.2
    done
    case "$state" in
        running) ;;
        degraded)
            say "container: degraded; failed units:"
            c systemctl --failed --no-legend --plain | indent ;;
        *) tail -n 30 "$WORK/boot.log" >&2; die "container did not boot (state: ${state:-none})" ;;
    esac
}

# --- the steps -------------------------------------------------------------------------------
PORT=''
MAINPID=''

step1_install() {
    local cur out
    cur=$(jcursor)
    if out=$(c dpkg -i "$DEB_IN" 2>&1); then
        ok "dpkg -i $(basename "$DEB")"
    else
        bad "dpkg -i failed:"; say "$out" | indent; return 1
    fi
    [ -z "$(say "$out" | grep -v -E '^(Selecting|\(Reading|Preparing|Unpacking|Setting up|Processing)')" ] ||
        { note "dpkg -i printed:"; say "$out" | grep -v -E '^(Selecting|\(Reading|Preparing|Unpacking|Setting up|Processing)' | indent; }
    check "package state: installed" \
        eval '[ "$(c dpkg-query -W -f "\${Status}" sersync)" = "install ok installed" ]'
    check "postinst created the system group sersync ($(c getent group sersync))" \
        c getent group sersync
    check "D-Bus policy installed: /usr/share/dbus-1/system.d/org.sersync.Sersync1.conf" \
        c test -f /usr/share/dbus-1/system.d/org.sersync.Sersync1.conf
    check "postinst reloaded systemd (PID 1 logged 'Reloading' during dpkg -i)" \
        eval 'c journalctl --no-pager -o cat _PID=1 --after-cursor="$cur" | gq "^Reloading"'
    check "postinst reloaded the bus configuration (dbus-daemon logged it)" \
        eval 'c journalctl --no-pager -o cat -u dbus.service --after-cursor="$cur" | gq -i "reloaded configuration"'
    check "units known to systemd: sersync@.service, sersync-fullsync@.timer" \
        eval 'c systemctl list-unit-files --no-legend "sersync*" | gq "^sersync@.service" &&
              c systemctl list-unit-files --no-legend "sersync*" | gq "^sersync-fullsync@.timer"'
    check "/var/lib/sersync exists; /etc/sersync/confxml.xml.example shipped" \
        c test -d /var/lib/sersync -a -f /etc/sersync/confxml.xml.example
    note "$(c sersyncd --version 2>&1 | head -n 1); $(c sersyncctl --version 2>&1 | head -n 1)"
}

# web.xml: one watch root (two with "docs"), auth, userDefinedPort, timeout, debug off.
# commonParams is -artz, not sersync's -artuz: with -u a replica file changed behind the
# daemon's back (newer) would never be repaired by a full sync, which step 7 checks.
write_config() { # write_config [docs] [broken] [metrics]
    local docs='' port=$PORT metrics=''
    case " $* " in *" docs "*)
        docs='        <localpath watch="/srv/docs">
            <remote ip="127.0.0.1" name="docs"/>
        </localpath>' ;;
    esac
    case " $* " in *" metrics "*) metrics="        <metrics listen=\"127.0.0.1:$MPORT\"/>" ;; esac
    case " $* " in *" broken "*) port=notaport ;; esac
    c sh -c 'cat >/etc/sersync/web.xml.new && mv /etc/sersync/web.xml.new /etc/sersync/web.xml' <<EOF
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
        <localpath watch="/srv/www">
            <remote ip="127.0.0.1" name="web"/>
        </localpath>
$docs
        <rsync>
            <commonParams params="-artz"/>
            <auth start="true" users="syncer" passwordfile="/etc/sersync/web.pass"/>
            <userDefinedPort start="true" port="$port"/>
            <timeout start="true" time="10"/>
            <ssh start="false"/>
        </rsync>
        <failLog path="rsync_fail_log.sh" timeToExecute="60"/>
        <crontab start="false" schedule="600"></crontab>
        <plugin start="false" name="command"/>
$metrics
    </sersync>
</head>
EOF
}

rsyncd_listening() { c ss -Hltn "sport = :$PORT" | gq LISTEN; }
start_rsyncd() {
    c systemd-run -q --unit=backup-rsyncd --collect -p Type=exec \
        /usr/bin/rsync --daemon --no-detach --config=/etc/backup-rsyncd.conf \
        --address=127.0.0.1 --port="$PORT" &&
        wait_until 10 rsyncd_listening
}
stop_rsyncd() { c systemctl stop backup-rsyncd.service; ! rsyncd_listening; }

step2_backup_host() {
    csh 'mkdir -p /srv/backup/web /srv/backup/docs /srv/www /srv/docs &&
         cat >/etc/backup-rsyncd.conf <<EOF
use chroot = no
uid = root
gid = root
[web]
    path = /srv/backup/web
    read only = no
    auth users = syncer
    secrets file = /etc/backup-rsyncd.secrets
[docs]
    path = /srv/backup/docs
    read only = no
    auth users = syncer
    secrets file = /etc/backup-rsyncd.secrets
EOF
         echo syncer:s3cret >/etc/backup-rsyncd.secrets && chmod 600 /etc/backup-rsyncd.secrets'
    # A free port on the (shared) loopback; retry if another process takes it first.

    for _ in 1 2 3 4 5; do
        PORT=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
        c ss -Hltn "sport = :$PORT" | gq . && continue
        if start_rsyncd; then break; fi
        c systemctl stop backup-rsyncd.service >/dev/null 2>&1
        PORT=''
    done
    check "rsync daemon (auth, modules web and docs) listening on 127.0.0.1:${PORT:-?} (unit backup-rsyncd)" \
        test -n "$PORT" || return 1
    csh 'umask 077 && echo s3cret >/etc/sersync/web.pass'
    check "a plain rsync client authenticates to it" \
        c rsync -q --list-only --password-file=/etc/sersync/web.pass \
            "rsync://syncer@127.0.0.1:$PORT/web/"
    check "a wrong password is refused" \
        eval '! c sh -c "echo wrong >/tmp/p; chmod 600 /tmp/p; rsync -q --list-only --password-file=/tmp/p rsync://syncer@127.0.0.1:$PORT/web/" 2>/dev/null'
    write_config
    local out
    if out=$(c sersyncctl check -o /etc/sersync/web.xml 2>&1); then
        ok "/etc/sersync/web.xml written; sersyncctl check: $out"
    else
        bad "sersyncctl check rejects /etc/sersync/web.xml:"; say "$out" | indent; return 1
    fi
}

step3_enable() {
    local out watching started
    csh 'echo before >/srv/www/existing.txt'
    if out=$(c systemctl enable --now sersync@web.service 2>&1); then
        ok "systemctl enable --now sersync@web (returned once the start job finished)"
    else
        bad "systemctl enable --now sersync@web failed:"; say "$out" | indent
        c systemctl status --no-pager -n 30 sersync@web.service | indent
        return 1
    fi
    check "enabled: /etc/systemd/system/multi-user.target.wants/sersync@web.service" \
        c test -L /etc/systemd/system/multi-user.target.wants/sersync@web.service
    check "systemctl status: Active: active (running)" \
        eval 'c systemctl status --no-pager -n 0 sersync@web.service | gq "Active: active (running)"'
    check "Type=notify, NotifyAccess=main" \
        eval 'unit_is Type notify && unit_is NotifyAccess main'
    MAINPID=$(prop sersync@web.service MainPID)
    # READY=1 came from the daemon once it watched everything: systemd's "Started" line
    # comes after the daemon's "watching N directories" (logged right before READY=1).
    watching=$(c journalctl --no-pager -u sersync@web.service -o cat | grep -n -m1 'watching [0-9]* directories' | cut -d: -f1)
    started=$(c journalctl --no-pager -u sersync@web.service -o cat | grep -n -m1 '^Started ' | cut -d: -f1)
    check "systemd logged 'Started' (line ${started:-?}) after the daemon's 'watching N directories' (line ${watching:-?}): active only after READY=1" \
        eval '[ -n "$watching" ] && [ -n "$started" ] && [ "$watching" -lt "$started" ]'
    local st
    st=$(prop sersync@web.service StatusText)
    check "systemctl show -p StatusText: '$st'" test -n "$st"
    if ! wait_until 3 same existing.txt; then
        note "a file that existed before the first start is not on the replica (no -r in ExecStart; sersync 2.5 behaviour)"
    fi
}

# lanes_clean: nothing failed, no remote in backoff (the daemon's STATUS line).
lanes_clean() {
    local st
    st=$(prop sersync@web.service StatusText)
    [[ "$st" == *" 0 failed;"* ]] && ! [[ "$st" =~ (failing|backoff) ]]
}
# heal: when an earlier step left changes undelivered (already reported as a FAIL there),
# get rid of them so that this step starts from a clean state and tests only itself:
# sersyncctl retry-failed; if they still fail, a restart with an empty state directory.
heal() {
    wait_until 2 lanes_clean && return 0
    note "left over from an earlier failure: '$(prop sersync@web.service StatusText)'; sersyncctl retry-failed first"
    ctl retry-failed >/dev/null 2>&1
    wait_until 15 lanes_clean && return 0
    note "still failing: restarting sersync@web with an empty /var/lib/sersync/web"
    c systemctl stop sersync@web.service
    csh 'rm -rf /var/lib/sersync/web/* /var/lib/sersync/web/.[!.]*'
    c systemctl start sersync@web.service
    wait_until 15 lanes_clean || note "still: '$(prop sersync@web.service StatusText)'"
}

step4_changes_journal_reload() {
    local cur t0 pid
    t0=$(ms)
    csh 'cd /srv/www && echo hello >hello.txt && mkdir -p "sub/deep dir" && echo nested >"sub/deep dir/n 1.txt" &&
         echo gone >gone.txt && echo old >old-name.txt && mkdir tree && echo t >tree/t.txt'
    if wait_until 15 eval 'same hello.txt && same "sub/deep dir/n 1.txt" && same gone.txt && same old-name.txt && same tree/t.txt'; then
        ok "new files, a nested directory and a name with spaces reach the replica ($(( $(ms) - t0 )) ms)"
    else
        bad "new files, a nested directory and a name with spaces reach the replica"
    fi
    csh 'cd /srv/www && echo v2 >>hello.txt && echo more >>"sub/deep dir/n 1.txt"'
    check "modifications are replicated" wait_until 15 eval 'same hello.txt && same "sub/deep dir/n 1.txt"'

    local json
    json=$(c journalctl --no-pager -u sersync@web.service -o json)
    check "journalctl -o json: SERSYNC_INSTANCE=web" gq '"SERSYNC_INSTANCE":"web"' <<<"$json"
    check "journalctl -o json: SERSYNC_REMOTE" gq '"SERSYNC_REMOTE":"' <<<"$json"
    check "journalctl -o json: SERSYNC_BATCH_SIZE" gq '"SERSYNC_BATCH_SIZE":"' <<<"$json"
    check "journalctl -o json: SYSLOG_IDENTIFIER=sersyncd with PRIORITY" \
        eval 'grep "\"SYSLOG_IDENTIFIER\":\"sersyncd\"" <<<"$json" | gq "\"PRIORITY\":\""'
    local sample
    sample=$(grep '"SERSYNC_BATCH_SIZE"' <<<"$json" | grep -v '"SERSYNC_BATCH_SIZE":"0"' | tail -n 1 |
        grep -oE '"(MESSAGE|PRIORITY|SERSYNC_[A-Z_]+|ELAPSED_MS|RSYNC_EXIT)":"[^"]*"' | tr '\n' ' ')
    note "sample entry: $sample"

    # Valid reload: a second watch root (module docs); a new root gets a full sync.
    pid=$(prop sersync@web.service MainPID)
    # /srv/docs belongs to www-data: rsync for it runs as www-data, which the unit's
    # sandbox must allow (CAP_SETUID/CAP_SETGID, the @setuid system calls).
    csh 'echo readme >/srv/docs/readme.txt && chown -R www-data:www-data /srv/docs'
    write_config docs
    cur=$(jcursor)
    check "systemctl reload sersync@web (valid config adding the root /srv/docs)" \
        c systemctl reload sersync@web.service
    check "journal: 'configuration reloaded'" wait_until 10 jhas "$cur" 'configuration reloaded'
    check "the new root, owned by www-data, is replicated by rsync as www-data (full sync, then live changes)" \
        wait_until 15 eval 'c cmp -s /srv/docs/readme.txt /srv/backup/docs/readme.txt &&
            c sh -c "echo live >/srv/docs/live.txt" && wait_until 10 c cmp -s /srv/docs/live.txt /srv/backup/docs/live.txt'
    check "same MainPID ($pid), still active" eval '[ "$(prop sersync@web.service MainPID)" = "$pid" ] && unit_is ActiveState active'

    # Invalid reload: refused, diagnostics in the journal, the running config kept.
    write_config docs broken
    cur=$(jcursor)
    check "systemctl reload sersync@web with an invalid config (port=\"notaport\") returns 0" \
        c systemctl reload sersync@web.service
    check "journal: 'the new configuration is invalid; keeping the running one'" \
        wait_until 10 jhas "$cur" 'configuration is invalid'
    local diag
    diag=$(jafter "$cur" | grep -E 'web\.xml:[0-9]+:[0-9]+' | head -n 2)
    check "journal: file:line:col diagnostic: ${diag//$'\n'/ / }" test -n "$diag"
    check "service still active (running), same MainPID" \
        eval 'unit_is SubState running && [ "$(prop sersync@web.service MainPID)" = "$pid" ]'
    csh 'echo after-bad-reload >/srv/www/after-bad-reload.txt'
    check "still replicating with the old config" wait_until 15 same after-bad-reload.txt
    write_config docs
    cur=$(jcursor)
    c systemctl reload sersync@web.service
    check "config restored and reloaded" wait_until 10 jhas "$cur" 'configuration reloaded'

    # Deletions last: a failure here must not hide the results above.
    local deleted=1
    csh 'cd /srv/www && rm gone.txt'
    check "a deleted file is deleted on the replica" wait_until 15 absent gone.txt || deleted=0
    csh 'cd /srv/www && mv old-name.txt new-name.txt'
    check "a renamed file is renamed on the replica" \
        wait_until 15 eval 'absent old-name.txt && same new-name.txt' || deleted=0
    csh 'cd /srv/www && rm -r tree'
    check "a removed non-empty directory is removed on the replica" wait_until 15 absent tree || deleted=0
    [ "$deleted" = 1 ] || note "the rsync error: $(c journalctl --no-pager -u sersync@web.service -o cat -p warning | grep -m1 -o 'rsync exit.*')"
    heal
}

step5_ctl() {
    heal
    local out rc
    if out=$(ctl status 2>&1); then
        ok "sersyncctl -i web status (root, system bus):"; say "$out" | indent
    else
        bad "sersyncctl status failed:"; say "$out" | indent
    fi
    check "sersyncctl list shows web" eval 'c sersyncctl list 2>&1 | gq -w web'
    check "sersyncctl pause" ctl pause
    check "status says paused" eval 'ctl status 2>&1 | gq -i paused'
    check "StatusText says PAUSED" wait_until 3 eval '[[ "$(prop sersync@web.service StatusText)" == *PAUSED* ]]'
    csh 'echo while-paused >/srv/www/paused.txt'
    sleep 2
    check "a change made while paused is held back (not on the replica after 2 s)" absent paused.txt
    check "sersyncctl resume" ctl resume
    check "the held-back change is delivered after resume" wait_until 10 same paused.txt

    # -N: no user group of the same name (Debian already has a group "operator").
    c id tester >/dev/null 2>&1 || c useradd -N -M -s /usr/sbin/nologin tester
    c id syncop >/dev/null 2>&1 || c useradd -N -M -s /usr/sbin/nologin -G sersync syncop
    if out=$(as_user tester sersyncctl -i web status 2>&1); then
        ok "unprivileged user 'tester': sersyncctl status works"
    else
        bad "unprivileged user: sersyncctl status failed:"; say "$out" | indent
    fi
    out=$(as_user tester sersyncctl -i web pause 2>&1); rc=$?
    check "unprivileged user 'tester': sersyncctl pause is denied with exit 77 (got $rc: ${out//$'\n'/ })" \
        test "$rc" = 77
    out=$(as_user tester sersyncctl -i web retry-failed 2>&1); rc=$?
    check "unprivileged user 'tester': sersyncctl retry-failed is denied with exit 77 (got $rc)" test "$rc" = 77
    out=$(as_user tester sersyncctl -i web failures 2>&1); rc=$?
    check "unprivileged user 'tester': sersyncctl failures (file names) is denied with exit 77 (got $rc)" \
        test "$rc" = 77
    check "the daemon is not paused after the denied call" eval '! ctl status 2>&1 | gq -i paused'
    check "member of group sersync ('syncop'): pause and resume are allowed" \
        eval 'as_user syncop sersyncctl -i web pause && as_user syncop sersyncctl -i web resume'
    check "member of group sersync ('syncop'): sersyncctl failures is allowed" \
        as_user syncop sersyncctl -i web failures

    # Metrics and health inside the unit's sandbox: a reload adds <metrics listen>; the
    # container shares the host's network namespace, so the host scrapes it as
    # Prometheus would. A monitoring agent runs the check as an ordinary user.
    MPORT=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    write_config docs metrics
    local cur
    cur=$(jcursor)
    check "systemctl reload with <metrics listen=\"127.0.0.1:$MPORT\"/>: journal 'answering scrapes'" \
        eval 'c systemctl reload sersync@web.service &&
            wait_until 10 jhas "$cur" "answering scrapes at http://127.0.0.1:$MPORT/metrics"'
    check "GET http://127.0.0.1:$MPORT/metrics from the host: 200 with each remote's lag" \
        wait_until 5 scrape_ok
    out=$(as_user tester sersyncctl -i web health 2>&1); rc=$?
    check "unprivileged user 'tester': sersyncctl health exits 0 with 'SERSYNC OK - web:' (got $rc: $out)" \
        eval '[ "$rc" = 0 ] && [[ "$out" == "SERSYNC OK - web: "* ]]'
    check "unprivileged user 'tester': sersyncctl metrics has each remote's lag" \
        eval 'as_user tester sersyncctl -i web metrics | gq "^sersync_remote_lag_seconds{.*remote=\"127.0.0.1::docs\""'
}

# scrape_ok: GET /metrics on the metrics port answers 200 with both remotes' lag.
scrape_ok() {
    local answer
    answer=$(exec 3<>"/dev/tcp/127.0.0.1/$MPORT" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 &&
        timeout 5 cat <&3) || return 1
    [[ "$answer" == "HTTP/1.1 200 OK"* ]] &&
        gq 'sersync_remote_lag_seconds{.*remote="127.0.0.1::web"' <<<"$answer" &&
        gq 'sersync_remote_lag_seconds{.*remote="127.0.0.1::docs"' <<<"$answer"
}

step6_failures() {
    heal
    local t0 out
    check "rsync daemon stopped (the backup host is down)" stop_rsyncd
    csh 'cd /srv/www && echo f1 >fail-1.txt && mkdir -p fail-dir && echo f2 >fail-dir/fail-2.txt'
    t0=$(ms)
    check "sersyncctl failures lists both changes" \
        wait_until 30 eval 'ctl failures 2>&1 | gq fail-1.txt && ctl failures 2>&1 | gq fail-2.txt'
    note "listed $(( $(ms) - t0 )) ms after the change:"
    ctl failures 2>&1 | indent
    note "status: $(ctl status 2>&1 | grep -E -- '-> 127\.0\.0\.1::web' | sed 's/^ *//')"
    check "the failed changes are not on the replica" eval 'absent fail-1.txt && absent fail-dir'
    check "rsync daemon started again" start_rsyncd
    t0=$(ms)
    check "sersyncctl retry-failed" ctl retry-failed
    check "retry-failed delivered them" \
        wait_until 15 eval 'same fail-1.txt && same fail-dir/fail-2.txt'
    note "delivered $(( $(ms) - t0 )) ms after retry-failed"
    check "sersyncctl failures is empty again" \
        wait_until 10 eval '! ctl failures 2>&1 | gq "fail-"'
    check "StatusText back to '0 failed' with the remote ok (it may lag by 1 s)" wait_until 3 lanes_clean
    note "StatusText: $(prop sersync@web.service StatusText)"
}

step7_timer() {
    heal
    local t0 cur
    # Change the replica behind the daemon's back.
    csh 'cd /srv/backup/web && echo corrupted-longer-content >hello.txt && rm -f new-name.txt &&
         echo stray >stray.txt'
    check "replica changed behind the daemon's back (modified, deleted, stray file)" \
        eval '! same hello.txt && absent new-name.txt'
    c mkdir -p /etc/systemd/system/sersync-fullsync@web.timer.d
    c sh -c 'cat >/etc/systemd/system/sersync-fullsync@web.timer.d/test.conf' <<'EOF'
[Timer]
OnActiveSec=
OnActiveSec=5s
OnUnitActiveSec=10s
AccuracySec=1s
EOF
    c systemctl daemon-reload
    cur=$(jcursor)
    check "drop-in sersync-fullsync@web.timer.d/test.conf (5 s, then every 10 s); timer started" \
        c systemctl start sersync-fullsync@web.timer
    local timers
    timers=$(c systemctl list-timers --all --no-pager)
    check "systemctl list-timers shows sersync-fullsync@web.timer" \
        eval 'say "$timers" | gq "sersync-fullsync@web.timer"'
    say "$timers" | grep -E 'NEXT|sersync' | indent
    t0=$(ms)
    check "the timer fired and the full sync repaired the replica" \
        wait_until 40 trees_equal /srv/www /srv/backup/web
    note "repaired $(( $(ms) - t0 )) ms after the timer started"
    check "sersync-fullsync@web.service ran and succeeded" \
        wait_until 10 eval '[ "$(prop sersync-fullsync@web.service Result)" = success ] &&
            [ "$(prop sersync-fullsync@web.service ExecMainStatus)" = 0 ] &&
            c journalctl --no-pager -o cat -u sersync-fullsync@web.service --after-cursor="$cur" | gq "^Finished\|^sersync-fullsync@web.service: Deactivated successfully"'
    check "the daemon logged it: 'synced full sync (Scheduled)'" jhas "$cur" 'synced full sync \(Scheduled\)'
    c journalctl --no-pager -o cat -u sersync-fullsync@web.service --after-cursor="$cur" | head -n 6 | indent
    c systemctl stop sersync-fullsync@web.timer
}

step8_kill9() {
    heal
    local t0 newpid
    MAINPID=$(prop sersync@web.service MainPID)
    check "kill -9 MainPID $MAINPID" c kill -9 "$MAINPID"
    check "systemd noticed: state auto-restart (Restart=on-failure, RestartSec=5s)" \
        wait_until 5 unit_is SubState auto-restart
    # Changes while no daemon runs.
    csh 'cd /srv/www && mkdir -p gap && echo g1 >gap/one.txt && echo g2 >gap/two.txt &&
         echo v3 >>hello.txt && rm -f paused.txt'
    t0=$(ms)
    check "restarted by systemd: active (running) with a new MainPID" \
        wait_until 20 eval 'unit_is SubState running && [ "$(prop sersync@web.service MainPID)" != "$MAINPID" ]'
    newpid=$(prop sersync@web.service MainPID)
    note "new MainPID $newpid after $(( $(ms) - t0 )) ms; NRestarts=$(prop sersync@web.service NRestarts)"
    check "the daemon detected the unclean stop" \
        eval 'c journalctl --no-pager -u sersync@web.service -o cat _PID="$newpid" | gq "did not stop cleanly"'
    check "nothing lost: changes made during the gap are on the replica" \
        wait_until 30 eval 'same gap/one.txt && same gap/two.txt && same hello.txt && absent paused.txt'
    csh 'echo after >/srv/www/after-restart.txt'
    check "live changes after the restart replicate" wait_until 15 same after-restart.txt
    check "replica equals the source tree" wait_until 15 trees_equal /srv/www /srv/backup/web
}

# fan.xml: the instance "fan" watches /srv/fan (a tmpfs mounted in the container: its
# root is an overlayfs, which refuses fanotify) and pushes to the module "fan".
write_fan_config() { # write_fan_config BACKEND
    c sh -c 'cat >/etc/sersync/fan.xml.new && mv /etc/sersync/fan.xml.new /etc/sersync/fan.xml' <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
    <sersync>
        <watch backend="$1"/>
        <localpath watch="/srv/fan">
            <remote ip="127.0.0.1" name="fan"/>
        </localpath>
        <rsync>
            <commonParams params="-artz"/>
            <auth start="true" users="syncer" passwordfile="/etc/sersync/web.pass"/>
            <userDefinedPort start="true" port="$PORT"/>
            <timeout start="true" time="10"/>
        </rsync>
    </sersync>
</head>
EOF
}
fan_prop() { c systemctl show -p "$1" --value sersync@fan.service; }
fan_log() { c journalctl --no-pager -u sersync@fan.service -o cat --after-cursor="$1"; }
fan_same() { csh "cmp -s '/srv/fan/$1' '/srv/backup/fan/$1'"; }
DROPIN_DIR=/etc/systemd/system/sersync@fan.service.d

step9_fanotify() {
    local cur out n
    csh 'mkdir -p /srv/fan /srv/backup/fan && mount -t tmpfs -o mode=0755 sersync-fan /srv/fan &&
         printf "[fan]\n    path = /srv/backup/fan\n    read only = no\n    auth users = syncer\n    secrets file = /etc/backup-rsyncd.secrets\n" >>/etc/backup-rsyncd.conf'
    check "tmpfs mounted on /srv/fan; module fan added to the backup host" \
        eval 'c findmnt -n -o FSTYPE /srv/fan | gq -x tmpfs'

    # Without the drop-in, <watch backend="fanotify">: refused (no CAP_SYS_ADMIN), exit 78,
    # not restarted (RestartPreventExitStatus=78).
    write_fan_config fanotify
    cur=$(jcursor)
    c systemctl start sersync@fan.service >/dev/null 2>&1
    check "without the drop-in, <watch backend=\"fanotify\">: start fails with exit status 78" \
        wait_until 10 eval '[ "$(fan_prop ExecMainStatus)" = 78 ] && [ "$(fan_prop ActiveState)" = failed ]'
    note "ExecMainStatus=$(fan_prop ExecMainStatus) ActiveState=$(fan_prop ActiveState) Result=$(fan_prop Result)"
    out=$(fan_log "$cur" | grep -m1 'fanotify watch backend is refused')
    check "journal: '${out:-no refusal logged}'" test -n "$out"
    sleep 6   # RestartSec=5s: a restart would have happened by now
    check "not restarted (NRestarts=$(fan_prop NRestarts))" \
        eval '[ "$(fan_prop NRestarts)" = 0 ] && [ "$(fan_prop ActiveState)" = failed ]'
    c systemctl reset-failed sersync@fan.service

    # Without the drop-in, auto: inotify, one warning saying why.
    write_fan_config auto
    cur=$(jcursor)
    check "without the drop-in, <watch backend=\"auto\">: systemctl start sersync@fan succeeds" \
        c systemctl start sersync@fan.service
    n=$(fan_log "$cur" | grep -c 'fanotify cannot watch this root')
    out=$(fan_log "$cur" | grep -m1 'fanotify cannot watch this root')
    check "journal: exactly one fallback line (got $n): '$out'" test "$n" = 1
    check "journal: 'watching N directories' (inotify), no 'with fanotify'" \
        eval 'fan_log "$cur" | gq "watching [0-9]* directories" && ! fan_log "$cur" | gq "with fanotify"'
    csh 'echo inotify >/srv/fan/auto.txt'
    check "a change replicates (inotify)" wait_until 15 fan_same auto.txt
    c systemctl stop sersync@fan.service

    # With the shipped example drop-in, copied as README says: fanotify.
    c mkdir -p "$DROPIN_DIR"
    check "the example drop-in copied to $DROPIN_DIR/fanotify.conf; daemon-reload" \
        eval 'c cp /usr/share/doc/sersync/examples/fanotify.conf "$DROPIN_DIR/fanotify.conf" && c systemctl daemon-reload'
    write_fan_config fanotify
    cur=$(jcursor)
    if ! check "with the drop-in: systemctl start sersync@fan succeeds" c systemctl start sersync@fan.service; then
        fan_log "$cur" | tail -n 10 | indent
    fi
    out=$(fan_log "$cur" | grep -m1 'with fanotify (')
    check "journal: '${out:-no fanotify line}'" test -n "$out" || fan_log "$cur" | tail -n 12 | indent
    check "journal: no fallback line" eval '! fan_log "$cur" | gq "fanotify cannot watch"'
    csh 'echo fanotify >/srv/fan/fan.txt && mkdir -p "/srv/fan/new dir/deeper" &&
         echo deep >"/srv/fan/new dir/deeper/f.txt" && echo v2 >/srv/fan/auto.txt'
    check "changes replicate with fanotify (a file, a new directory tree, a rewrite)" \
        wait_until 15 eval 'fan_same fan.txt && fan_same "new dir/deeper/f.txt" && fan_same auto.txt'
    note "StatusText: $(fan_prop StatusText)"

    # Leave nothing behind for step 10 (the administrator's files).
    c systemctl stop sersync@fan.service
    c rm -rf "$DROPIN_DIR" /etc/sersync/fan.xml
    c systemctl daemon-reload
    c umount /srv/fan
    c systemctl reset-failed sersync@fan.service >/dev/null 2>&1
    return 0
}

step10_purge() {
    local files out left
    check "systemctl disable --now sersync@web" c systemctl disable --now sersync@web.service
    check "inactive and disabled" \
        eval 'unit_is ActiveState inactive && [ "$(c systemctl is-enabled sersync@web.service)" = disabled ]'
    out=$(ctl status 2>&1); local rc=$?
    check "sersyncctl status now exits 69 (no daemon) (got $rc)" test "$rc" = 69
    files=$(c dpkg-query -L sersync)
    # The test's own drop-in is the administrator's file: remove it like an admin would.
    c rm -rf /etc/systemd/system/sersync-fullsync@web.timer.d
    if out=$(c dpkg --purge sersync 2>&1); then
        ok "dpkg --purge sersync"
    else
        bad "dpkg --purge sersync failed:"; say "$out" | indent
    fi
    check "package gone from dpkg's database" eval '! c dpkg-query -W sersync >/dev/null 2>&1 ||
        [ -z "$(c dpkg-query -W -f "\${Status}" sersync | grep -v "not-installed")" ]'
    check "no /etc/sersync, no /var/lib/sersync" c sh -c '! test -e /etc/sersync && ! test -e /var/lib/sersync'
    left=$(say "$files" | c sh -c 'while read -r f; do [ -n "$f" ] && [ ! -d "$f" ] && [ -e "$f" ] && echo "$f"; done')
    check "none of the package's $(say "$files" | wc -l) paths remain${left:+: $left}" test -z "$left"
    left=$(c find /etc /usr /var/lib /var/cache /run/systemd /run/dbus -name '*sersync*' 2>/dev/null |
        grep -v '^/var/lib/dpkg/info/sersync\.\(list\|md5sums\)$')
    check "no file named *sersync* left in /etc /usr /var/lib /var/cache /run/systemd${left:+: ${left//$'\n'/ }}" \
        test -z "$left"
    check "systemd has no sersync unit loaded" \
        eval '[ -z "$(c systemctl list-units --all --no-legend --plain "sersync*")" ]'
    note "kept by design (postrm): group '$(c getent group sersync)'"
}

# --- run ------------------------------------------------------------------------------------
run_step() { # run_step N TITLE FUNCTION [fatal]
    local n=$1 title=$2 fn=$3 fatal=${4:-} t0 rc
    t0=$(date +%s%N)
    STEP_OK=1
    say ""
    say "--- step $n: $title"
    "$fn"; rc=$?
    [ "$rc" = 0 ] || STEP_OK=0
    local line
    if [ "$STEP_OK" = 1 ]; then
        line="PASS  step $n: $title ($(secs "$t0") s)"
    else
        line="FAIL  step $n: $title ($(secs "$t0") s)"
        FAILED=$((FAILED + 1))
        if [ -n "$LEADER" ]; then
            say "    journal of sersync@web (last 25 lines):"
            c journalctl --no-pager -u sersync@web.service -n 25 | indent
        fi
    fi
    say "$line"
    RESULTS+=("$line")
    if [ "$STEP_OK" != 1 ] && [ -n "$fatal" ]; then
        say "step $n is a prerequisite of the others: stopping here"
        return 1
    fi
    return 0
}

say "booting the container ($TREE, --volatile=overlay)"
t0=$(date +%s%N)
boot_container
say "container up in $(secs "$t0") s: $(c systemctl --version | head -n 1)"
if [ -n "${EXTRA_DEBS:-}" ]; then
    c sh -c 'dpkg -i /mnt/in/extra/*.deb' >"$WORK/extra-debs.log" 2>&1 ||
        { cat "$WORK/extra-debs.log" >&2; die "EXTRA_DEBS: dpkg -i failed"; }
    say "installed EXTRA_DEBS: ${EXTRA_DEBS}"
fi
say "rsync in the container (client and backup host): $(c dpkg-query -W -f '${Version}' rsync)"

while :; do
    run_step 1 "dpkg -i: group, daemon-reload, D-Bus policy" step1_install fatal || break
    run_step 2 "backup host: rsync daemon with auth; /etc/sersync/web.xml" step2_backup_host fatal || break
    run_step 3 "systemctl enable --now sersync@web: READY=1, StatusText" step3_enable fatal || break
    run_step 4 "replication, journal fields, reload (valid and invalid)" step4_changes_journal_reload
    run_step 5 "sersyncctl status/pause/resume on the system bus; unprivileged user; metrics and health" step5_ctl
    run_step 6 "backup host down: failures, then retry-failed delivers" step6_failures
    run_step 7 "full-sync timer repairs the replica; list-timers" step7_timer
    run_step 8 "kill -9: systemd restarts it, nothing lost" step8_kill9
    run_step 9 "the fanotify drop-in: refused (78) and auto's fallback without it, fanotify with it" step9_fanotify
    break
done
run_step 10 "disable --now, dpkg --purge: nothing left" step10_purge

say ""
say "=== summary"
for line in "${RESULTS[@]}"; do say "$line"; done
[ ${#RESULTS[@]} -eq 10 ] || { say "FAIL  $(( 10 - ${#RESULTS[@]} )) step(s) not run"; FAILED=$((FAILED + 1)); }
say "time: $(secs "$T_TESTS") s for the tests (container boot included), $(secs "$T_START") s in all"
if [ "$FAILED" = 0 ]; then
    say "system test: PASS"
    exit 0
fi
say "system test: FAIL ($FAILED step(s) failed)"
exit 1
