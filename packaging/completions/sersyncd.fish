complete -c sersyncd -s o -l config -d 'Config file (sersync 2.5 confxml.xml schema)' -r -F
complete -c sersyncd -s n -l workers -d 'Maximum number of rsync processes running at once (0 means the default)' -r
complete -c sersyncd -s m -l module -d 'Run only this plugin on the watched trees\' events, without rsync' -r
complete -c sersyncd -l state-dir -d 'Directory for the failure journal, pending changes and the failure script [default: $STATE_DIRECTORY, else /var/lib/sersync/INSTANCE]' -r -F
complete -c sersyncd -l instance -d 'Instance name used in logs, status and D-Bus [default: the config file\'s stem]' -r
complete -c sersyncd -l log -d 'Where to log' -r -f -a "auto\t'journald when started by systemd with the journal on stderr, otherwise stderr'
journald\t'The systemd journal, with structured fields'
stderr\t'Plain text on stderr'"
complete -c sersyncd -l bus -d 'Which D-Bus bus to offer the control interface on' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncd -l bus-address -d 'Connect to this D-Bus address instead (e.g. a private bus in tests)' -r
complete -c sersyncd -l metrics-listen -d 'Answer Prometheus scrapes (GET /metrics) on this IP:PORT, e.g. 127.0.0.1:9150 (instead of the config\'s <metrics listen>)' -r
complete -c sersyncd -l watch-backend -d 'How to watch the roots: inotify (one watch per directory), fanotify (one mark per filesystem; needs CAP_SYS_ADMIN, exits 78 where refused) or auto (fanotify where it works, else inotify) [default: the config\'s <watch backend>, else inotify]' -r -f -a "auto\t''
inotify\t''
fanotify\t''"
complete -c sersyncd -s r -l full-sync-first -d 'Push every watched tree to every remote once the watches are in place'
complete -c sersyncd -s d -l daemon -d 'Detach from the terminal like a classic daemon (not needed under systemd)'
complete -c sersyncd -l check -d 'Validate the config (and with -m, the plugin named) and exit: 0 when valid, 78 with diagnostics otherwise, 64 when -m names no configured plugin'
complete -c sersyncd -s v -l verbose -d 'Log each event and each rsync command line (like `<debug start="true">`)'
complete -c sersyncd -l no-dbus -d 'Do not offer the D-Bus control interface at all'
complete -c sersyncd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncd -s V -l version -d 'Print version'
