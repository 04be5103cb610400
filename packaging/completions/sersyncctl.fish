# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sersyncctl_global_optspecs
    string join \n i/instance= json bus= bus-address= h/help V/version
end

function __fish_sersyncctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sersyncctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sersyncctl_using_subcommand
    set -l cmd (__fish_sersyncctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -s V -l version -d 'Print version'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "status" -d 'Show the state of an instance: queue, failures, watches, remotes, counters'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "pause" -d 'Stop sending changes; they are still collected and coalesced, nothing is lost'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "resume" -d 'Send what was collected while paused, and carry on'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "retry-failed" -d 'Retry every failed change now instead of waiting for its backoff'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "full-sync" -d 'Push a whole watched tree (or every tree) to its remotes'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "checkpoint" -d 'Check that every change made so far is on every remote: 0 when it is, 75 (with the remotes still behind) when not. Deploy scripts run `checkpoint --wait --timeout 60` after writing'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "failures" -d 'List the changes that still fail after retries (they name files: root and group sersync only)'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "reload" -d 'Re-read the config file; a config with errors is refused and the old one stays'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "list" -d 'List the running instances'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "check" -d 'Validate a config file without any daemon: 0 when valid, 78 with diagnostics'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "monitor" -d 'Print the daemon\'s signals as they happen, until it stops or you interrupt (the paths of failures only for root and group sersync)'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "metrics" -d 'Print the daemon\'s metrics in the Prometheus text format, as its --metrics-listen answers them (for node_exporter\'s textfile collector)'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "health" -d 'Check the daemon like a Nagios plugin: one line `SERSYNC OK - ... | perfdata`, and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (daemon unreachable, bad arguments). Thresholds are "above": a value greater than the threshold trips it'
complete -c sersyncctl -n "__fish_sersyncctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand status" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand status" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand status" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand status" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand pause" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand pause" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand pause" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand pause" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand resume" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand resume" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand resume" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand resume" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand resume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand retry-failed" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand retry-failed" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand retry-failed" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand retry-failed" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand retry-failed" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l root -d 'Only this watched root (as written in the config)' -r -F
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l timeout -d 'With --wait: give up after this many seconds (exit 1)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l wait -d 'Wait until the full sync finished; exit 1 if it failed'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l force -d 'Past the replica guard: for a root that is meant to be empty now, or that moved to another filesystem (its deletions reach the remotes)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand full-sync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l root -d 'Only the remotes of this watched root' -r -F
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l timeout -d 'With --wait: give up after this many seconds (exit 75)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l wait -d 'Wait until it is (else answer at once)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand checkpoint" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand failures" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand failures" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand failures" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand failures" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand failures" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand reload" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand reload" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand reload" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand reload" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand list" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand list" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand list" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand list" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -s o -l config -d 'The config file (sersync 2.5 confxml.xml schema)' -r -F
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand monitor" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand monitor" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand monitor" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand monitor" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand monitor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -l openmetrics -d 'OpenMetrics text instead of the Prometheus text format'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand metrics" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l warn-lag -d 'WARNING when a remote\'s lag is above this many seconds' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l crit-lag -d 'CRITICAL when a remote\'s lag is above this many seconds' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l warn-failed -d 'WARNING when more than this many changes still fail after retries' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l crit-failed -d 'CRITICAL when more than this many changes still fail after retries [default: off]' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -s i -l instance -d 'The instance to talk to (sersync@NAME); needed only when several run' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l bus -d 'The message bus to use' -r -f -a "system\t'The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket)'
session\t'The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`), for unprivileged use'"
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l bus-address -d 'Connect to this D-Bus address instead of the system or session bus (e.g. unix:path=/run/sersync-test/bus)' -r
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -l json -d 'Print JSON instead of text (JSON Lines for monitor)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand health" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "status" -d 'Show the state of an instance: queue, failures, watches, remotes, counters'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "pause" -d 'Stop sending changes; they are still collected and coalesced, nothing is lost'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "resume" -d 'Send what was collected while paused, and carry on'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "retry-failed" -d 'Retry every failed change now instead of waiting for its backoff'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "full-sync" -d 'Push a whole watched tree (or every tree) to its remotes'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "checkpoint" -d 'Check that every change made so far is on every remote: 0 when it is, 75 (with the remotes still behind) when not. Deploy scripts run `checkpoint --wait --timeout 60` after writing'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "failures" -d 'List the changes that still fail after retries (they name files: root and group sersync only)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "reload" -d 'Re-read the config file; a config with errors is refused and the old one stays'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "list" -d 'List the running instances'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "check" -d 'Validate a config file without any daemon: 0 when valid, 78 with diagnostics'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "monitor" -d 'Print the daemon\'s signals as they happen, until it stops or you interrupt (the paths of failures only for root and group sersync)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "metrics" -d 'Print the daemon\'s metrics in the Prometheus text format, as its --metrics-listen answers them (for node_exporter\'s textfile collector)'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "health" -d 'Check the daemon like a Nagios plugin: one line `SERSYNC OK - ... | perfdata`, and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (daemon unreachable, bad arguments). Thresholds are "above": a value greater than the threshold trips it'
complete -c sersyncctl -n "__fish_sersyncctl_using_subcommand help; and not __fish_seen_subcommand_from status pause resume retry-failed full-sync checkpoint failures reload list check monitor metrics health help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
