#!/usr/bin/env bash
# Acceptance test of the DEB and RPM packages (issue 7). Run as root on Debian 12:
#
#     tests/packaging/run.sh
#
# Builds both packages with packaging/build.sh (installing rpm, lintian, cargo-deb and
# cargo-generate-rpm if missing), then:
#   DEB: dpkg -i; every file in place with its mode and owner, nothing unexpected;
#        conffile; group; stripped binaries; dependencies; the installed binaries run
#        (sersyncd --version, sersyncctl check -o the sample, the generator);
#        systemd-analyze verify of the installed units (instantiated) with an empty
#        stderr; dbus-daemon accepts the installed policy; reinstall (upgrade path);
#        dpkg -r keeps /etc/sersync and /var/lib/sersync; dpkg --purge leaves nothing;
#        lintian reports no error (its warnings are listed).
#   RPM: rpm -qlp file list and modes, rpm -qcp / file flags (config noreplace, doc),
#        rpm -qp --scripts, dependencies; rpm --root install into a scratch root (an
#        overlay of / so the scriptlets really run, chrooted, without touching this
#        system), then rpm -e there.
# Prints PASS/FAIL per check and "N passed, N failed"; exits 1 if anything failed.
# Cleans up: purges the package if it is still installed, removes the group "sersync"
# if this script created it, unmounts and deletes its temporary directories.
set -uo pipefail
# grep that reads all its input: `grep -q` exits at the first match, and under
# pipefail the writer's SIGPIPE would then fail the pipeline at random.
has() { grep "$@" >/dev/null; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
T=$(mktemp -d /tmp/sersync-pkgtest.XXXXXX)
DBUS_PID=
OVERLAY=
GROUP_EXISTED=no
getent group sersync >/dev/null && GROUP_EXISTED=yes
FAKE_LINK=/etc/systemd/system/multi-user.target.wants/sersync@pkgtest.service
FAKE_LINK_DIR_CREATED=no

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: PASS when the command succeeds; its output on failure.
check() {
    local what=$1
    shift
    if "$@" >"$T/check.out" 2>&1; then
        pass "$what"
    else
        fail "$what"
        sed 's/^/      /' "$T/check.out" | head -n 30
    fi
}
note() { echo "      $*"; }

cleanup() {
    [ -z "$DBUS_PID" ] || kill "$DBUS_PID" 2>/dev/null
    # postinst applied the package's sysctl.d file to this machine: put the values back.
    if [ -s "$T/sysctl.saved" ]; then
        while read -r key value; do
            sysctl -q -w "$key=$value" 2>/dev/null
        done <"$T/sysctl.saved"
    fi
    if [ -n "$OVERLAY" ]; then
        umount "$OVERLAY/merged" 2>/dev/null
        umount "$OVERLAY/upper" 2>/dev/null
    fi
    if dpkg-query -W -f='${Status}' sersync 2>/dev/null | has -v 'not-installed'; then
        dpkg --purge sersync >/dev/null 2>&1
    fi
    rm -f "$FAKE_LINK"
    if [ "$FAKE_LINK_DIR_CREATED" = yes ]; then rmdir "${FAKE_LINK%/*}" 2>/dev/null; fi
    if [ "$GROUP_EXISTED" = no ] && getent group sersync >/dev/null; then
        groupdel sersync 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
    echo "tests/packaging/run.sh: must run as root (dpkg -i, rpm --root, mount)" >&2
    exit 1
fi

# --- tools ------------------------------------------------------------------------------
need=()
command -v rpm >/dev/null || need+=(rpm)
command -v lintian >/dev/null || need+=(lintian)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v rsync >/dev/null || need+=(rsync)
command -v dbus-daemon >/dev/null || need+=(dbus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v readelf >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >"$T/apt.log" 2>&1 ||
        { cat "$T/apt.log"; echo "FAIL: apt-get install ${need[*]}"; exit 1; }
fi
# The package depends on rsync and dbus: dpkg -i needs them installed.
dpkg-query -W -f='${Status}' dbus 2>/dev/null | has 'ok installed' ||
    apt-get install -y -q --no-install-recommends dbus >/dev/null 2>&1

# A previous interrupted run may have left the package installed.
if dpkg-query -W -f='${Status}' sersync 2>/dev/null | has 'ok installed'; then
    echo "purging a sersync package left installed"
    dpkg --purge sersync >/dev/null
fi

# --- build ------------------------------------------------------------------------------
start=$(date +%s)
if packaging/build.sh >"$T/build.out" 2>"$T/build.err"; then
    DEB=$(tail -n 2 "$T/build.out" | head -n 1)
    RPM=$(tail -n 1 "$T/build.out")
    pass "packaging/build.sh builds both packages ($(($(date +%s) - start)) s)"
    note "${DEB#"$ROOT"/}"
    note "${RPM#"$ROOT"/}"
else
    fail "packaging/build.sh"
    tail -n 40 "$T/build.err" "$T/build.out"
    echo "$passed passed, $((failed)) failed"
    exit 1
fi
[ -f "$DEB" ] || { fail "the .deb exists ($DEB)"; exit 1; }
[ -f "$RPM" ] || { fail "the .rpm exists ($RPM)"; exit 1; }

# --- what the packages must hold, derived from the repository ---------------------------
# expected.txt: "MODE PATH" for every file; the same list for both packages, except the
# Debian-only copyright, changelog and lintian overrides.
expect() { printf '%s %s\n' "$1" "$2" >>"$T/expected.txt"; }
: >"$T/expected.txt"
expect 0755 /usr/bin/sersyncd
expect 0755 /usr/bin/sersyncctl
GENERATOR=
if [ -f src/bin/sersync-generator.rs ] || [ -d src/bin/sersync-generator ]; then
    GENERATOR=/usr/lib/systemd/system-generators/sersync-generator
    expect 0755 "$GENERATOR"
fi
UNITS=()
for f in systemd/*.service systemd/*.timer systemd/*.socket systemd/*.path; do
    [ -f "$f" ] || continue
    expect 0644 "/usr/lib/systemd/system/${f##*/}"
    UNITS+=("${f##*/}")
done
SYSCTL=()
for f in systemd/sysctl.d/*.conf systemd/*.sysctl; do
    [ -f "$f" ] || continue
    name=${f##*/}
    name=${name%.sysctl}
    case "$name" in *.conf) ;; *) name=$name.conf ;; esac
    expect 0644 "/usr/lib/sysctl.d/$name"
    SYSCTL+=("$name")
done
POLICIES=()
for f in dbus/*.conf; do
    [ -f "$f" ] || continue
    expect 0644 "/usr/share/dbus-1/system.d/${f##*/}"
    POLICIES+=("${f##*/}")
done
for f in dbus/*.xml; do
    [ -f "$f" ] && expect 0644 "/usr/share/dbus-1/interfaces/${f##*/}"
done
MANPAGES=()
for f in packaging/man/*.[1-8]; do
    [ -f "$f" ] || continue
    name=${f##*/}
    expect 0644 "/usr/share/man/man${name##*.}/$name.gz"
    MANPAGES+=("/usr/share/man/man${name##*.}/$name.gz")
done
for f in packaging/completions/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    case "$name" in
        *.bash) expect 0644 "/usr/share/bash-completion/completions/${name%.bash}" ;;
        _*) expect 0644 "/usr/share/zsh/vendor-completions/$name" ;;
        *.fish) expect 0644 "/usr/share/fish/vendor_completions.d/$name" ;;
    esac
done
expect 0644 /etc/sersync/confxml.xml.example
expect 0644 /usr/share/doc/sersync/README.md
expect 0644 /usr/share/doc/sersync/ARCHITECTURE.md
# Opt-in drop-ins (systemd/sersync@.service.d/NAME.conf.example): shipped as examples to
# copy, never as active drop-ins under /usr/lib/systemd/system/sersync@.service.d/.
DROPIN_EXAMPLES=()
for f in systemd/sersync@.service.d/*.conf.example; do
    [ -f "$f" ] || continue
    name=${f##*/}
    expect 0644 "/usr/share/doc/sersync/examples/${name%.example}"
    DROPIN_EXAMPLES+=("$f")
done
sort -k2 -o "$T/expected.txt" "$T/expected.txt"
cp "$T/expected.txt" "$T/expected-rpm.txt"
expect 0644 /usr/share/doc/sersync/copyright
expect 0644 /usr/share/doc/sersync/changelog.Debian.gz
expect 0644 /usr/share/lintian/overrides/sersync
sort -k2 -o "$T/expected.txt" "$T/expected.txt"
echo "      the packages must hold $(wc -l <"$T/expected.txt") files (.deb), $(wc -l <"$T/expected-rpm.txt") (.rpm):" \
    "${#UNITS[@]} units, ${#SYSCTL[@]} sysctl.d, ${#POLICIES[@]} D-Bus policies, ${#MANPAGES[@]} man pages," \
    "${#DROPIN_EXAMPLES[@]} example drop-ins, generator: ${GENERATOR:-none}"

# ============================== DEB =====================================================
echo "--- deb: $(dpkg-deb -f "$DEB" Package Version Architecture | tr '\n' ' ')"

# Contents of the archive (files only), as MODE PATH.
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $1, $6 }' | sort -k2 >"$T/deb-files.txt"
deb_list_matches() {
    diff <(awk '{print $2}' "$T/expected.txt") <(awk '{print $2}' "$T/deb-files.txt")
}
check "deb: holds exactly the expected files (diff: < missing, > unexpected)" deb_list_matches

deps_ok() {
    local depends recommends
    depends=$(dpkg-deb -f "$DEB" Depends)
    recommends=$(dpkg-deb -f "$DEB" Recommends)
    echo "Depends: $depends"
    echo "Recommends: $recommends"
    [[ ", $depends," == *", rsync,"* || ", $depends," == *", rsync "* ]] &&
        [[ ", $depends," == *", dbus,"* || ", $depends," == *", dbus "* ]] &&
        [[ "$depends" == *libc6* ]] &&
        [[ "$recommends" == *openssh-client* ]]
}
check "deb: Depends rsync, dbus (and libc6 from the binaries); Recommends openssh-client" deps_ok

conffiles_ok() {
    dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | tee /dev/stderr |
        has -x /etc/sersync/confxml.xml.example
}
check "deb: /etc/sersync/confxml.xml.example is a conffile" conffiles_ok

scripts_ok() {
    local s
    mkdir -p "$T/ctrl"
    dpkg-deb -e "$DEB" "$T/ctrl"
    for s in postinst prerm postrm; do
        [ -x "$T/ctrl/$s" ] || { echo "no $s"; return 1; }
        sh -n "$T/ctrl/$s" || return 1
        ! grep -n '@SYSCTL_FILES@' "$T/ctrl/$s" || return 1
    done
    for s in "${SYSCTL[@]}"; do has "for name in.*$s" "$T/ctrl/postinst" || return 1; done
}
check "deb: postinst/prerm/postrm present, executable, sh -n clean, sysctl names filled in" scripts_ok

# Remember the kernel values the sysctl.d file(s) will change (restored by cleanup).
for f in systemd/sysctl.d/*.conf systemd/*.sysctl; do
    [ -f "$f" ] || continue
    sed -n 's/^[[:space:]]*-\{0,1\}\([a-z0-9_.]*\)[[:space:]]*=.*/\1/p' "$f"
done | sort -u | while read -r key; do
    value=$(sysctl -n "$key" 2>/dev/null) && printf '%s %s\n' "$key" "$value"
done >"$T/sysctl.saved"

if dpkg -i "$DEB" >"$T/dpkg-i.out" 2>&1; then
    pass "deb: dpkg -i"
else
    fail "deb: dpkg -i"
    sed 's/^/      /' "$T/dpkg-i.out"
fi
[ -s "$T/dpkg-i.out" ] && grep -v '^\(Selecting\|(Reading\|Preparing\|Unpacking\|Setting up\|Processing\)' "$T/dpkg-i.out" | sed 's/^/      dpkg: /'

installed_ok() {
    local mode path actual bad=0
    while read -r mode path; do
        if [ ! -f "$path" ]; then
            echo "missing: $path"; bad=1; continue
        fi
        actual=$(stat -c '%a %U:%G' "$path")
        if [ "$actual" != "${mode#0} root:root" ]; then
            echo "$path: $actual, expected ${mode#0} root:root"; bad=1
        fi
    done <"$T/expected.txt"
    return $bad
}
check "deb: every file installed with its mode (0755 binaries, 0644 the rest), root:root" installed_ok
check "deb: the system group sersync exists" getent group sersync
check "deb: /var/lib/sersync exists" test -d /var/lib/sersync

stripped_ok() {
    local bin
    for bin in /usr/bin/sersyncd /usr/bin/sersyncctl $GENERATOR; do
        if readelf -S --wide "$bin" | grep -E '\.(symtab|debug_[a-z]+) '; then
            echo "$bin is not stripped"; return 1
        fi
    done
}
check "deb: binaries are stripped (no .symtab, no .debug_*)" stripped_ok

manpages_ok() {
    local page
    for page in "${MANPAGES[@]}"; do
        gzip -t "$page" || return 1
        # -n: no time stamp or name in the header (reproducible builds).
        [ "$(gzip -lv "$page" | awk 'NR == 2 { print $1 }')" = defla ] || return 1
    done
    [ ${#MANPAGES[@]} -gt 0 ]
}
check "deb: man pages are gzipped (${#MANPAGES[@]})" manpages_ok

check "deb: /usr/bin/sersyncd --version" /usr/bin/sersyncd --version
version_matches() {
    local want
    want=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
    /usr/bin/sersyncd --version | tee /dev/stderr | has -F "$want" &&
        /usr/bin/sersyncctl --version | tee /dev/stderr | has -F "$want"
}
check "deb: the installed binaries report the Cargo.toml version" version_matches

sample_ok() {
    local rc
    /usr/bin/sersyncctl check -o /etc/sersync/confxml.xml.example >"$T/sample.out" 2>"$T/sample.err"
    rc=$?
    cat "$T/sample.out" "$T/sample.err"
    [ $rc = 0 ] && ! has ': error:' "$T/sample.err"
}
if sample_ok >"$T/check.out" 2>&1; then
    pass "deb: sersyncctl check -o /etc/sersync/confxml.xml.example (exit 0$( [ -s "$T/sample.err" ] && echo ", $(grep -c 'warning' "$T/sample.err") warnings"))"
    sed 's/^/      /' "$T/sample.err"
else
    fail "deb: sersyncctl check -o /etc/sersync/confxml.xml.example"
    sed 's/^/      /' "$T/check.out"
fi
check "deb: sersyncd --check -o the sample" /usr/bin/sersyncd --check -o /etc/sersync/confxml.xml.example

# systemd-analyze verify needs real file names: templates are copied under an instance
# name (sersync@web.service), as systemd would load them for "sersync@web".
verify_units() {
    local unit inst files=()
    mkdir -p "$T/units"
    for unit in "${UNITS[@]}"; do
        inst=${unit/@./@web.}
        cp "/usr/lib/systemd/system/$unit" "$T/units/$inst"
        files+=("$T/units/$inst")
    done
    echo "verifying: ${files[*]##*/}"
    systemd-analyze verify --man=no "${files[@]}" 2>"$T/verify.err"
    local rc=$?
    cat "$T/verify.err"
    [ $rc = 0 ] && [ ! -s "$T/verify.err" ]
}
check "deb: systemd-analyze verify on the installed units (${#UNITS[@]}, instantiated as @web): exit 0, empty stderr" verify_units

# The example drop-ins: the repository's bytes, not active, and each verifies with the
# installed unit once the operator copies it to sersync@NAME.service.d/ (as README says).
exposure() { # exposure UNIT-FILE: the overall exposure level systemd-analyze security prints
    systemd-analyze security --offline=yes --no-pager "$1" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | grep .
}
dropin_examples_ok() {
    local f name with without inst=$T/dropin-units
    [ ! -e /usr/lib/systemd/system/sersync@.service.d ] ||
        { echo "an active drop-in directory was installed"; return 1; }
    for f in "${DROPIN_EXAMPLES[@]}"; do
        name=${f##*/}
        name=${name%.example}
        cmp "$f" "/usr/share/doc/sersync/examples/$name" || return 1
        rm -rf "$inst" && mkdir -p "$inst/sersync@web.service.d"
        cp /usr/lib/systemd/system/sersync@.service "$inst/sersync@web.service"
        without=$(exposure "$inst/sersync@web.service") || return 1
        cp "/usr/share/doc/sersync/examples/$name" "$inst/sersync@web.service.d/$name"
        systemd-analyze verify --man=no "$inst/sersync@web.service" 2>"$T/verify.err"
        local rc=$?
        cat "$T/verify.err"
        [ $rc = 0 ] && [ ! -s "$T/verify.err" ] || return 1
        # Loaded: the exposure changes with it (the fanotify drop-in adds CAP_SYS_ADMIN).
        with=$(exposure "$inst/sersync@web.service") || return 1
        echo "systemd-analyze security --offline=yes: $without, with $name $with"
        [ "$with" != "$without" ] || { echo "drop-in $name not loaded"; return 1; }
    done
    [ ${#DROPIN_EXAMPLES[@]} -gt 0 ]
}
check "deb: example drop-ins in /usr/share/doc/sersync/examples (${#DROPIN_EXAMPLES[@]}): as in the repository, not active, each verifies when copied to sersync@web.service.d/" dropin_examples_ok

if [ -n "$GENERATOR" ]; then
    generator_ok() {
        mkdir -p "$T/gen/conf" "$T/gen/normal" "$T/gen/early" "$T/gen/late"
        sed 's/<crontab start="false" schedule="600">/<crontab start="true" schedule="30">/' \
            /etc/sersync/confxml.xml.example >"$T/gen/conf/web.xml"
        has '<crontab start="true"' "$T/gen/conf/web.xml" || return 1
        SERSYNC_CONFIG_DIR=$T/gen/conf "$GENERATOR" "$T/gen/normal" "$T/gen/early" "$T/gen/late" || return 1
        (cd "$T/gen/normal" && find . | sort)
        [ -n "$(find "$T/gen/normal" -name '*sersync-fullsync@web*')" ]
    }
    check "deb: the installed generator writes the full-sync timer set-up for a config with <crontab start=\"true\">" generator_ok
fi

# The D-Bus policy: a bus whose configuration includes exactly the installed policy files.
dbus_policy_ok() {
    local policy includes=""
    for policy in "${POLICIES[@]}"; do
        includes="$includes  <include>/usr/share/dbus-1/system.d/$policy</include>
"
    done
    # The default policy of Debian's system.conf, a socket of ours, and only our policy.
    cat >"$T/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=$T/bus.socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
$includes</busconfig>
EOF
    dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile --print-address=1 \
        >"$T/bus.addr" 2>"$T/bus.err" &
    DBUS_PID=$!
    local _
    for _ in $(seq 50); do
        [ -s "$T/bus.addr" ] && break
        kill -0 "$DBUS_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$T/bus.addr" "$T/bus.err"
    [ -s "$T/bus.addr" ] || return 1
    # Unknown group or user names, bad attributes... are reported on stderr. (Raising
    # RLIMIT_NOFILE, which dbus-daemon tries as root, may be refused in a container.)
    ! grep -v 'Failed to set fd limit' "$T/bus.err" | has . || return 1
    # The bus answers.
    dbus-send --bus="$(head -n 1 "$T/bus.addr")" --print-reply --dest=org.freedesktop.DBus \
        / org.freedesktop.DBus.GetId >/dev/null || return 1
    kill "$DBUS_PID" && wait "$DBUS_PID" 2>/dev/null
    DBUS_PID=
}
check "deb: dbus-daemon --config-file with the installed policy (${POLICIES[*]}): starts, no warning, answers" dbus_policy_ok

reinstall_ok() {
    dpkg -i "$DEB" && getent group sersync && dpkg-query -W -f='${Status}\n' sersync | has 'ok installed'
}
check "deb: dpkg -i again (the upgrade path of the scripts)" reinstall_ok

# What an operator leaves behind: a config, state, an enabled instance.
cp /etc/sersync/confxml.xml.example /etc/sersync/pkgtest.xml
mkdir -p /var/lib/sersync/pkgtest && echo state >/var/lib/sersync/pkgtest/failures
[ -d "${FAKE_LINK%/*}" ] || { mkdir -p "${FAKE_LINK%/*}"; FAKE_LINK_DIR_CREATED=yes; }
ln -sf /usr/lib/systemd/system/sersync@.service "$FAKE_LINK"
dpkg-query -L sersync >"$T/deb-installed.txt"

remove_keeps() {
    dpkg -r sersync || return 1
    [ ! -e /usr/bin/sersyncd ] || { echo "/usr/bin/sersyncd still there"; return 1; }
    [ -f /etc/sersync/pkgtest.xml ] || { echo "/etc/sersync/pkgtest.xml gone"; return 1; }
    [ -f /etc/sersync/confxml.xml.example ] || { echo "conffile gone on remove"; return 1; }
    [ -f /var/lib/sersync/pkgtest/failures ] || { echo "/var/lib/sersync gone"; return 1; }
    dpkg-query -W -f='${Status}\n' sersync | has 'config-files'
}
check "deb: dpkg -r removes the files, keeps /etc/sersync and /var/lib/sersync" remove_keeps

purge_clean() {
    local path left=0
    dpkg --purge sersync || return 1
    while read -r path; do
        # Directories shared with other packages (/usr/bin, /etc...) stay; no file may.
        if [ -e "$path" ] && [ ! -d "$path" ]; then echo "left: $path"; left=1; fi
    done <"$T/deb-installed.txt"
    for path in /etc/sersync /var/lib/sersync /usr/share/doc/sersync "$FAKE_LINK"; do
        if [ -e "$path" ] || [ -L "$path" ]; then echo "left: $path"; left=1; fi
    done
    if dpkg-query -W -f='${Status}\n' sersync 2>/dev/null | has -v 'not-installed'; then
        echo "dpkg still knows sersync: $(dpkg-query -W -f='${Status}' sersync)"; left=1
    fi
    return $left
}
check "deb: dpkg --purge leaves nothing (files, /etc/sersync, /var/lib/sersync, enablement links)" purge_clean
if getent group sersync >/dev/null; then
    note "the group sersync is kept after purge (Debian does not delete system groups); the test deletes it"
fi

# lintian: no errors; warnings listed.
lintian --tag-display-limit 0 "$DEB" >"$T/lintian.raw" 2>&1
lintian_rc=$?
grep -v '^running with root privileges' "$T/lintian.raw" >"$T/lintian.out"
# The overridden tags (O:) are listed too; packaging/deb/lintian-overrides says why each
# is there. (A second run: with --show-overrides, lintian 2.116 exits 2 for an
# overridden error.)
lintian --tag-display-limit 0 --show-overrides "$DEB" 2>/dev/null | grep '^O: ' >>"$T/lintian.out"
if has '^E: ' "$T/lintian.out" || [ $lintian_rc != 0 ]; then
    fail "deb: lintian reports errors (exit $lintian_rc)"
else
    pass "deb: lintian reports no error ($(grep -c '^W: ' "$T/lintian.out") warnings, $(grep -c '^I: ' "$T/lintian.out") info, $(grep -c '^O: ' "$T/lintian.out") overridden)"
fi
sed 's/^/      lintian: /' "$T/lintian.out"

# ============================== RPM =====================================================
echo "--- rpm: $(rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}' "$RPM" 2>/dev/null)"

rpm -qp --qf '[%{FILEMODES:octal} %{FILENAMES} %{FILEFLAGS:fflags}\n]' "$RPM" 2>/dev/null >"$T/rpm-raw.txt"
rpm_list_ok() {
    rpm -qlp "$RPM" >"$T/rpm-l.txt" || return 1
    diff <(awk '{print $2}' "$T/expected-rpm.txt") <(grep -v '^/\(etc/sersync\|var/lib/sersync\|usr/share/doc/sersync\)$' "$T/rpm-l.txt" | sort) || return 1
}
check "rpm: rpm -qlp lists exactly the expected files (diff: < missing, > unexpected)" rpm_list_ok

rpm_modes_ok() {
    local mode path want bad=0
    # FILEMODES:octal is e.g. 100755 for a regular file.
    while read -r mode path _; do
        want=$(awk -v p="$path" '$2 == p { print $1 }' "$T/expected-rpm.txt")
        [ -n "$want" ] || continue
        if [ "${mode: -4}" != "$want" ] && [ "0${mode: -3}" != "$want" ]; then
            echo "$path: $mode, expected $want"; bad=1
        fi
    done <"$T/rpm-raw.txt"
    return $bad
}
check "rpm: file modes (0755 binaries, 0644 the rest)" rpm_modes_ok

rpm_config_ok() {
    rpm -qcp "$RPM" | tee /dev/stderr | has -x /etc/sersync/confxml.xml.example || return 1
    # c = %config, n = noreplace.
    awk '$2 == "/etc/sersync/confxml.xml.example" { print $3 }' "$T/rpm-raw.txt" | tee /dev/stderr |
        has 'c' || return 1
    awk '$2 == "/etc/sersync/confxml.xml.example" { print $3 }' "$T/rpm-raw.txt" | has 'n'
}
check "rpm: rpm -qcp: /etc/sersync/confxml.xml.example is %config(noreplace)" rpm_config_ok

rpm_docs_ok() {
    local f name
    rpm -qdp "$RPM" | tee /dev/stderr | has -x /usr/share/doc/sersync/README.md &&
        rpm -qdp "$RPM" | has -x /usr/share/doc/sersync/ARCHITECTURE.md || return 1
    for f in "${DROPIN_EXAMPLES[@]}"; do
        name=${f##*/}
        rpm -qdp "$RPM" | has -x "/usr/share/doc/sersync/examples/${name%.example}" || return 1
    done
}
check "rpm: README.md, ARCHITECTURE.md and the example drop-ins are %doc" rpm_docs_ok

rpm_scripts_ok() {
    rpm -qp --scripts "$RPM" >"$T/rpm-scripts.txt" || return 1
    local want
    for want in 'preinstall scriptlet' 'postinstall scriptlet' 'preuninstall scriptlet' \
        'postuninstall scriptlet' 'groupadd -r sersync' 'daemon-reload' 'ReloadConfig' \
        "systemctl stop 'sersync@\*.service'" 'try-restart' 'rm -rf /var/lib/sersync'; do
        has "$want" "$T/rpm-scripts.txt" || { echo "no '$want' in the scriptlets"; return 1; }
    done
    for want in "${SYSCTL[@]}"; do
        has "for name in.*$want" "$T/rpm-scripts.txt" || { echo "sysctl $want not applied"; return 1; }
    done
    ! grep -n '@SYSCTL_FILES@' "$T/rpm-scripts.txt"
}
check "rpm: rpm -qp --scripts: %pre group, %post reloads, %preun stop, %postun restart/cleanup" rpm_scripts_ok

rpm_deps_ok() {
    rpm -qp --requires "$RPM" >"$T/rpm-req.txt" 2>/dev/null
    rpm -qp --recommends "$RPM" >"$T/rpm-rec.txt" 2>/dev/null
    echo "Requires: $(tr '\n' ' ' <"$T/rpm-req.txt")"
    echo "Recommends: $(tr '\n' ' ' <"$T/rpm-rec.txt")"
    has '^rsync' "$T/rpm-req.txt" && has '^dbus' "$T/rpm-req.txt" &&
        has '^openssh-clients' "$T/rpm-rec.txt"
}
check "rpm: Requires rsync, dbus; Recommends openssh-clients" rpm_deps_ok

# Scratch root: an overlay of / (writes go to a tmpfs), so the scriptlets run chrooted
# with a real /bin/sh, groupadd and rpm, and this system is not touched. --nodeps: the
# rpm database of the scratch root knows no packages (Debian's libraries are not rpms).
OVERLAY=$T/overlay
mkdir -p "$OVERLAY/upper" "$OVERLAY/merged"
if mount -t tmpfs tmpfs "$OVERLAY/upper" && mkdir -p "$OVERLAY/upper/u" "$OVERLAY/upper/w" &&
    mount -t overlay overlay -o "lowerdir=/,upperdir=$OVERLAY/upper/u,workdir=$OVERLAY/upper/w" \
        "$OVERLAY/merged" 2>"$T/mount.err"; then
    R=$OVERLAY/merged
    cp "$RPM" "$R/tmp/sersync.rpm"
    # No system of ours in the scratch root: no running systemd, no bus.
    rm -rf "$R/run/systemd/system" "$R/run/dbus/system_bus_socket"
    getent group sersync >/dev/null && chroot "$R" groupdel sersync
    rpm_root_install() {
        rpm --root "$R" --nodeps -i "$R/tmp/sersync.rpm" || return 1
        local mode path bad=0
        while read -r mode path; do
            [ -f "$R$path" ] || { echo "missing: $path"; bad=1; continue; }
            [ "$(stat -c '%a %U:%G' "$R$path")" = "${mode#0} root:root" ] ||
                { echo "$path: $(stat -c '%a %U:%G' "$R$path")"; bad=1; }
        done <"$T/expected-rpm.txt"
        chroot "$R" getent group sersync || { echo "%pre did not create the group"; bad=1; }
        chroot "$R" /usr/bin/sersyncctl check -o /etc/sersync/confxml.xml.example >/dev/null 2>&1 ||
            { echo "sersyncctl check fails in the scratch root"; bad=1; }
        return $bad
    }
    check "rpm: rpm --root SCRATCH --nodeps -i (scriptlets run): files, modes, group" rpm_root_install
    rpm_root_erase() {
        echo changed >>"$R/etc/sersync/confxml.xml.example"
        mkdir -p "$R/var/lib/sersync/web" && echo state >"$R/var/lib/sersync/web/failures"
        rpm --root "$R" --nodeps -e sersync || return 1
        local mode path bad=0
        while read -r mode path; do
            [ ! -e "$R$path" ] || { echo "left: $path"; bad=1; }
        done <"$T/expected-rpm.txt"
        [ -f "$R/etc/sersync/confxml.xml.example.rpmsave" ] ||
            { echo "no .rpmsave of the modified sample"; bad=1; }
        # No config left in /etc/sersync: %postun removes the state.
        [ ! -e "$R/var/lib/sersync" ] || { echo "/var/lib/sersync left"; bad=1; }
        return $bad
    }
    check "rpm: rpm --root SCRATCH -e: files gone, modified sample kept as .rpmsave, state removed (no config left)" rpm_root_erase
    rpm_root_keep_state() {
        rpm --root "$R" --nodeps -i "$R/tmp/sersync.rpm" || return 1
        cp "$R/etc/sersync/confxml.xml.example" "$R/etc/sersync/web.xml"
        mkdir -p "$R/var/lib/sersync/web" && echo state >"$R/var/lib/sersync/web/failures"
        rpm --root "$R" --nodeps -e sersync || return 1
        [ -f "$R/var/lib/sersync/web/failures" ] && [ -f "$R/etc/sersync/web.xml" ]
    }
    check "rpm: rpm -e keeps /var/lib/sersync while a config remains in /etc/sersync" rpm_root_keep_state
    umount "$R" && umount "$OVERLAY/upper" && OVERLAY=
else
    note "cannot mount an overlay here ($(cat "$T/mount.err")): scratch-root install with --noscripts"
    R=$T/rpmroot
    mkdir -p "$R"
    rpm_root_noscripts() {
        rpm --root "$R" --nodeps --noscripts -i "$RPM" || return 1
        local mode path
        while read -r mode path; do
            [ -f "$R$path" ] || { echo "missing: $path"; return 1; }
        done <"$T/expected-rpm.txt"
        rpm --root "$R" --nodeps --noscripts -e sersync
    }
    check "rpm: rpm --root SCRATCH --nodeps --noscripts -i / -e" rpm_root_noscripts
fi

echo "packaging: $(($(date +%s) - start)) s in all"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
