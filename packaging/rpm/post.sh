# %post of the sersync .rpm ($1: 1 = install, 2 or more = upgrade).
#
# %systemd_post: for templates (all our units are) it only runs "preset" on first
# install, which does nothing without a DefaultInstance; an instance needs
# /etc/sersync/NAME.xml that only the administrator writes, so nothing is enabled or
# started here (never an unconfigured instance). systemd's own file triggers reload the
# units on Fedora; the explicit daemon-reload covers systems without them (and re-runs
# the generator).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi

# The parent of the per-instance state directories (systemd's StateDirectory= creates
# /var/lib/sersync/NAME itself; this is for "sersyncd -o FILE" outside systemd). Not a
# %dir of the package: see postun.sh.
install -d -m 0755 /var/lib/sersync || :

# %sysctl_apply: apply the sysctl.d file now (raises fs.inotify limits); a bare name lets
# an override of the same name in /etc/sysctl.d/ win. Fails harmlessly in containers.
# The names after "in" (the sysctl.d files of the package) are filled in by
# packaging/build.sh from what systemd/ holds.
# shellcheck disable=SC2043 # a placeholder, replaced by build.sh
for name in @SYSCTL_FILES@; do
    if [ -x /usr/lib/systemd/systemd-sysctl ]; then
        /usr/lib/systemd/systemd-sysctl "$name" >/dev/null 2>&1 || :
    elif command -v sysctl >/dev/null 2>&1; then
        sysctl -q -p "/usr/lib/sysctl.d/$name" >/dev/null 2>&1 || :
    fi
done

# The D-Bus policy: dbus-daemon notices new files itself after a while; reload now so it
# is in force at once.
if [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null 2>&1; then
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus \
        / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || :
fi
:
