# %postun of the sersync .rpm ($1: 0 = erase, 1 or more = upgrade; on upgrade this is the
# OLD package's scriptlet, run after the new files are in place).
#
# RPM has no "purge". What rpm -e does with our paths, by RPM's conventions:
# - /etc/sersync/confxml.xml.example is %config(noreplace): removed if unmodified, kept
#   as confxml.xml.example.rpmsave if the administrator changed it.
# - /etc/sersync/NAME.xml files were written by the administrator, are not in the package
#   and are kept; so /etc/sersync stays while they (or an .rpmsave) exist.
# - /var/lib/sersync holds, per instance, the changes not yet delivered and the failure
#   journal. It is removed on erase only when no configuration is left in /etc/sersync
#   (no *.xml): then nothing could ever resume from it. While configurations remain, a
#   reinstalled package picks up where the old one stopped, so it is kept ("rm -rf
#   /var/lib/sersync" by hand finishes the job).
# - The group "sersync" is kept (see pre.sh).
# The package would normally own /etc/sersync, /usr/share/doc/sersync and /var/lib/sersync
# as %dir so that rpm removes them when empty; cargo-generate-rpm 0.21 cannot package
# directory entries, so the empty ones are removed here instead.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    # %systemd_postun_with_restart: the running instances get the new binary.
    if [ -d /run/systemd/system ]; then
        systemctl try-restart 'sersync@*.service' >/dev/null 2>&1 || :
    fi
else
    if [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null 2>&1; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus \
            / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || :
    fi
    configs=no
    for config in /etc/sersync/*.xml; do
        [ -e "$config" ] && configs=yes
    done
    if [ "$configs" = no ]; then
        rm -rf /var/lib/sersync
    fi
    rmdir /etc/sersync /usr/share/doc/sersync 2>/dev/null || :
fi
:
