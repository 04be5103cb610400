# %pre of the sersync .rpm ($1: 1 = install, 2 or more = upgrade).
# cargo-generate-rpm has no spec file, so RPM's macros are written out by hand here and in
# the other scriptlets (post.sh, preun.sh, postun.sh), following what they expand to.
#
# The system group whose members may change running daemons over D-Bus (the policy in
# /usr/share/dbus-1/system.d/ names it). Fedora's convention for a group without a
# sysusers.d file: create it in %pre, never remove it (files may still carry its GID).
# groupadd comes from shadow-utils, present on every RPM-based system.
getent group sersync >/dev/null 2>&1 || groupadd -r sersync || :
