//! Log output: plain text on stderr, or the systemd journal with structured fields.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use super::cli::LogTarget;

/// Installs the global subscriber. `verbose` lowers the level to debug (each event, each
/// rsync argv); `RUST_LOG` overrides both.
pub fn init(target: LogTarget, verbose: bool, instance: &str) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_syslog_identifier("sersyncd".to_owned())
                    // Field names are chosen to be journal names already (SERSYNC_REMOTE,
                    // RSYNC_EXIT, ...), so no prefix is added.
                    .with_field_prefix(None)
                    // info → 6 (informational), debug → 7: tracing-journald's defaults
                    // would log every batch as "notice".
                    .with_priority_mappings(tracing_journald::PriorityMappings {
                        info: tracing_journald::Priority::Informational,
                        debug: tracing_journald::Priority::Debug,
                        ..tracing_journald::PriorityMappings::new()
                    })
                    .with_custom_fields([("SERSYNC_INSTANCE", instance)]);
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
                return;
            }
            Err(err) => eprintln!("sersyncd: journald is not reachable ({err}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}
