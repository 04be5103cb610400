# %preun of the sersync .rpm ($1: 0 = erase, 1 or more = upgrade).
#
# %systemd_preun on erase: "systemctl --no-reload disable --now UNIT". Our units are
# templates, so it is done for every instance: disable the ones the administrator enabled
# (found by their symlinks) and stop every running instance and timer (systemctl matches
# the patterns against the loaded units). On upgrade nothing is stopped: the old
# package's %postun restarts the running instances (%systemd_postun_with_restart).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    for link in /etc/systemd/system/*.wants/sersync@*.service \
                /etc/systemd/system/*.wants/sersync-*.timer; do
        [ -L "$link" ] || continue
        systemctl --no-reload disable "${link##*/}" >/dev/null 2>&1 || :
    done
    systemctl stop 'sersync@*.service' 'sersync-*.timer' 'sersync-*.service' \
        >/dev/null 2>&1 || :
fi
:
