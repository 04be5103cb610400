//! Log output: plain text on stderr, or the systemd journal with structured fields.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

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
                .with_writer(|| OneLine(std::io::stderr()))
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}

/// Plain-text log output where every event is exactly one line: a newline or carriage
/// return inside an event (a file name is allowed to hold one) is written as `\n` or `\r`,
/// so that a name cannot forge a log line of its own. The journal keeps fields apart by
/// itself and needs none of this.
#[derive(Debug)]
struct OneLine<W>(W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&one_line(event))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `event` with its inner line breaks escaped; the final newline stays.
fn one_line(event: &[u8]) -> Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
    out.extend_from_slice(end);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn every_event_is_one_line() {
        for (event, written) in [
            (&b"plain\n"[..], &b"plain\n"[..]),
            (b"path=a\nERROR forged\n", b"path=a\\nERROR forged\n"),
            (b"cr\rhere\n", b"cr\\rhere\n"),
            (b"no end", b"no end"),
            (b"two\nlines", b"two\\nlines"),
        ] {
            assert_eq!(&*one_line(event), written);
        }
    }
}
