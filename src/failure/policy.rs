//! The rsync exit policy: how every way an rsync run can end is classified.
//!
//! Input is the exit status ([`ExitStatusLike`]: an exit code, a signal, or a failure to
//! start) plus the tail of rsync's stderr; output is a [`Verdict`]. The table below is the
//! whole policy; [`classify`] never panics, whatever the input.
//!
//! | rsync exit | meaning (rsync(1)) | class |
//! |---|---|---|
//! | 0 | success | Success |
//! | 24 | vanished source files | Benign: the deletion is its own event |
//! | 23 | partial transfer due to error | Retryable, `partial`: retry the failed paths |
//! | 3, 5, 6, 10–16, 19–22, 30, 35, 124, 125, 255 | file selection, protocol start, daemon log, socket / file / stream I/O, diagnostics, IPC, sibling crashed / killed, signals, waitpid, memory, timeouts, remote shell failed / killed, ssh | Retryable |
//! | 1, 2, 4 | syntax / protocol incompatibility / unsupported option | Fatal |
//! | 25 | `--max-delete` stopped deletions | Fatal: a safety limit, a human must look |
//! | 126, 127 | remote command could not be run / not found | Fatal: rsync not installed? |
//! | anything else | unknown | Fatal: loud, never a crash |
//! | killed by a signal | | Retryable |
//! | could not start | not found / not executable / E2BIG / NUL in argv | Fatal; other errors (EAGAIN, ENOMEM, EMFILE) Retryable |
//!
//! **Fatal does not mean "give up".** Unlike lsyncd, which terminated the whole daemon on
//! "critical" and unknown codes, sersyncd keeps every change: a fatal verdict means "this
//! will not fix itself": retry slowly (see [`super::backoff`]) and report it loudly (log at
//! error level, STATUS, D-Bus) so that an operator fixes the configuration.
//!
//! Daemon refusals arrive as exit 5 ("error starting client-server protocol"), the same code
//! as a daemon that is merely busy, so stderr decides: `@ERROR: auth failed on module`,
//! `@ERROR: Unknown module`, `@ERROR: access denied`, `@ERROR: chdir failed`, a bad password
//! file… are Fatal whatever the code, while `@ERROR: max connections (N) reached` stays
//! retryable. Markers are matched at the start of a line (after rsync's `rsync: [role] `
//! prefix), never inside one, so a hostile file name quoted inside a per-file error message
//! cannot turn a retryable verdict into a fatal one. The wording was taken from the strings
//! of rsync 3.5.0 and checked against a local `rsync --daemon` (see the tests).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::LazyLock;

use regex::Regex;

use serde::{Deserialize, Serialize};

/// What an rsync run's end means for the changes it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitClass {
    /// Everything was transferred.
    Success,
    /// Exit 24: some source files vanished before they could be sent. Nothing to retry: the
    /// removal produced (or will produce) its own event.
    Benign,
    /// A transient problem (network, timeout, remote busy, partial transfer): retry with
    /// exponential backoff.
    Retryable,
    /// A problem that will not fix itself (bad credentials, unknown module, bad option,
    /// rsync missing): keep the changes, retry slowly, report loudly.
    Fatal,
}

impl ExitClass {
    /// Lower-case name, for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitClass::Success => "success",
            ExitClass::Benign => "benign",
            ExitClass::Retryable => "retryable",
            ExitClass::Fatal => "fatal",
        }
    }

    /// Whether the changes of the run are done with (no retry needed).
    pub fn is_done(self) -> bool {
        matches!(self, ExitClass::Success | ExitClass::Benign)
    }
}

/// How a process ended, decoupled from `std::process::ExitStatus` so the policy can be
/// table-tested and fed from anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatusLike {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal number.
    Signal(i32),
    /// The process could not be started (`fork`/`exec` failed).
    SpawnFailed(io::ErrorKind),
}

impl From<ExitStatus> for ExitStatusLike {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatusLike::Code(code),
            (None, Some(signal)) => ExitStatusLike::Signal(signal),
            // Stopped/continued statuses are never returned by wait() without WUNTRACED;
            // report the raw status as an unknown code rather than inventing a meaning.
            (None, None) => ExitStatusLike::Code(status.into_raw()),
        }
    }
}

impl From<&io::Error> for ExitStatusLike {
    fn from(error: &io::Error) -> Self {
        ExitStatusLike::SpawnFailed(error.kind())
    }
}

/// The decision about one rsync run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: ExitClass,
    /// One line for humans, e.g. `rsync exit 10: error in socket I/O`. It may quote a
    /// line of rsync's stderr, and with it a file name.
    pub reason: String,
    /// The reason without anything quoted from rsync's output: built from fixed texts and
    /// numbers only, so it never names a file. What every local user may see (the public
    /// `LastError` and `SyncFailed` on D-Bus).
    pub summary: String,
    /// Exit 23: some paths failed and the rest were transferred. Retry exactly the failed
    /// paths when [`super::stderr::retry_set`] can name them, the whole batch otherwise.
    pub partial: bool,
    /// The class was forced to Fatal by a refusal recognised in stderr (e.g. `@ERROR: auth
    /// failed on module`), not by the exit code alone.
    pub fatal_text: bool,
}

/// One row of the exit-code table.
struct CodeRule {
    code: i32,
    class: ExitClass,
    meaning: &'static str,
    /// Appended to the reason: what to check.
    hint: Option<&'static str>,
}

const fn rule(code: i32, class: ExitClass, meaning: &'static str) -> CodeRule {
    CodeRule {
        code,
        class,
        meaning,
        hint: None,
    }
}

use ExitClass::{Benign, Fatal, Retryable, Success};

/// Every exit code rsync(1) (3.5.0) documents, the remote-shell codes of rsync's
/// `errcode.h`, and ssh's 255.
const CODES: &[CodeRule] = &[
    rule(0, Success, "success"),
    CodeRule {
        hint: Some("check the rsync parameters in the configuration"),
        ..rule(1, Fatal, "syntax or usage error")
    },
    CodeRule {
        hint: Some("the remote rsync is too old or too new for this one"),
        ..rule(2, Fatal, "protocol incompatibility")
    },
    rule(3, Retryable, "errors selecting input/output files, dirs"),
    CodeRule {
        hint: Some("an option is supported by this rsync but not by the remote one"),
        ..rule(4, Fatal, "requested action not supported")
    },
    rule(5, Retryable, "error starting client-server protocol"),
    rule(6, Retryable, "daemon unable to append to log-file"),
    rule(10, Retryable, "error in socket I/O"),
    rule(11, Retryable, "error in file I/O"),
    rule(12, Retryable, "error in rsync protocol data stream"),
    rule(13, Retryable, "errors with program diagnostics"),
    rule(14, Retryable, "error in IPC code"),
    rule(15, Retryable, "sibling process crashed"),
    rule(16, Retryable, "sibling process was killed by a signal"),
    rule(19, Retryable, "received SIGUSR1"),
    rule(20, Retryable, "received SIGINT, SIGTERM, or SIGHUP"),
    rule(21, Retryable, "some error returned by waitpid()"),
    rule(22, Retryable, "error allocating core memory buffers"),
    rule(23, Retryable, "partial transfer due to error"),
    rule(24, Benign, "partial transfer due to vanished source files"),
    CodeRule {
        hint: Some("deletions exceed --max-delete; check the source tree before raising it"),
        ..rule(25, Fatal, "the --max-delete limit stopped deletions")
    },
    rule(30, Retryable, "timeout in data send/receive"),
    rule(35, Retryable, "timeout waiting for daemon connection"),
    rule(124, Retryable, "remote shell failed"),
    rule(125, Retryable, "remote shell killed"),
    CodeRule {
        hint: Some("is rsync executable on the remote?"),
        ..rule(126, Fatal, "remote command could not be run")
    },
    CodeRule {
        hint: Some("rsync not installed on the remote, or not in its PATH?"),
        ..rule(127, Fatal, "remote command not found")
    },
    rule(
        255,
        Retryable,
        "remote shell failed (ssh: connection or authentication error)",
    ),
];

/// rsync(1)'s meaning of an exit code (`"unknown exit code"` for codes it does not define).
pub fn describe(code: i32) -> &'static str {
    CODES
        .iter()
        .find(|rule| rule.code == code)
        .map_or("unknown exit code", |rule| rule.meaning)
}

/// How a stderr line is matched.
#[derive(Clone, Copy)]
enum Match {
    /// A message written by rsync: after `rsync: ` / `rsync: [role] `, if any, it starts
    /// with this text.
    Rsync(&'static str),
    /// A whole line not written by rsync (OpenSSH, the remote login shell) matches this
    /// anchored regular expression.
    Foreign(&'static str),
}

/// A message in rsync's stderr that decides or explains the verdict.
struct Signal {
    matcher: Match,
    class: ExitClass,
    meaning: &'static str,
}

const fn fatal(matcher: Match, meaning: &'static str) -> Signal {
    Signal {
        matcher,
        class: Fatal,
        meaning,
    }
}

const fn transient(matcher: Match, meaning: &'static str) -> Signal {
    Signal {
        matcher,
        class: Retryable,
        meaning,
    }
}

/// Messages from rsync 3.5.0 (`clientserver.c`, `authenticate.c`), OpenSSH and login
/// shells. The first match in stderr order wins, except that a fatal match anywhere beats
/// a transient one.
const SIGNALS: &[Signal] = &[
    fatal(
        Match::Rsync("@ERROR: auth failed on module"),
        "the daemon rejected the user or password (auth users, secrets file, password file)",
    ),
    fatal(
        Match::Rsync("@ERROR: Unknown module"),
        "the remote daemon has no such module",
    ),
    fatal(
        Match::Rsync("@ERROR: access denied to"),
        "the daemon refuses this host (hosts allow / hosts deny)",
    ),
    fatal(
        Match::Rsync("@ERROR: chroot failed"),
        "the daemon cannot chroot into the module path",
    ),
    fatal(
        Match::Rsync("@ERROR: chdir failed"),
        "the module path does not exist or is not accessible on the remote",
    ),
    fatal(
        Match::Rsync("@ERROR: no path setting"),
        "the module has no path in rsyncd.conf",
    ),
    fatal(
        Match::Rsync("@ERROR: invalid uid"),
        "the module's uid does not exist on the remote",
    ),
    fatal(
        Match::Rsync("@ERROR: invalid gid"),
        "the module's gid does not exist on the remote",
    ),
    fatal(
        Match::Rsync("@ERROR: setuid failed"),
        "the daemon cannot switch to the module's uid",
    ),
    fatal(
        Match::Rsync("@ERROR: setgid failed"),
        "the daemon cannot switch to the module's gid",
    ),
    fatal(
        Match::Rsync("@ERROR: setgroups failed"),
        "the daemon cannot switch to the module's groups",
    ),
    fatal(
        Match::Rsync("@ERROR: failed to open lock file"),
        "the daemon's lock file is unusable (lock file / max connections)",
    ),
    fatal(
        Match::Rsync("@ERROR: daemon security issue"),
        "the daemon refused the transfer for security reasons",
    ),
    fatal(
        Match::Rsync("@ERROR: your client does not support one of our daemon-auth checksums"),
        "no common authentication digest with the daemon",
    ),
    fatal(
        Match::Rsync("ERROR: module is read only"),
        "the module is read only (read only = yes)",
    ),
    fatal(
        Match::Rsync("ERROR: module is write only"),
        "the module is write only",
    ),
    fatal(
        Match::Rsync("ERROR: password file must"),
        "the password file must not be accessible by others (chmod 600), and must be owned by root when running as root",
    ),
    fatal(
        Match::Rsync("could not open password file"),
        "the password file cannot be opened",
    ),
    fatal(
        Match::Rsync("ERROR: failed to read a password from"),
        "the password file is empty or unreadable",
    ),
    fatal(
        Match::Rsync("The server is configured to refuse"),
        "the daemon refuses one of our options (refuse options)",
    ),
    fatal(
        Match::Rsync("server sent "),
        "the address and port are not an rsync daemon",
    ),
    fatal(
        Match::Foreign(r"^Host key verification failed\.?$"),
        "ssh does not know or does not trust the remote host key",
    ),
    fatal(
        Match::Foreign(
            r"^\S+: Permission denied \((?:publickey|password|keyboard-interactive|gssapi)[a-z,-]*\)\.?$",
        ),
        "ssh authentication failed",
    ),
    fatal(
        Match::Foreign(
            r"^[A-Za-z]*sh:(?: line \d+:| ?\d+:)? (?:rsync: (?:command )?not found|command not found: rsync)$",
        ),
        "rsync is not installed on the remote (or not in PATH)",
    ),
    transient(
        Match::Rsync(CONNECTION_LIMIT),
        "the daemon is at its connection limit",
    ),
    transient(
        Match::Rsync("@ERROR: fork failed"),
        "the daemon could not fork",
    ),
    transient(
        Match::Rsync("failed to connect to"),
        "cannot connect to the daemon",
    ),
    transient(
        Match::Rsync("connection unexpectedly closed"),
        "the connection was closed",
    ),
    transient(
        Match::Foreign(r"^ssh: connect to host "),
        "ssh cannot connect",
    ),
    transient(
        Match::Foreign(r"^ssh: Could not resolve hostname "),
        "the remote host name does not resolve",
    ),
];

/// The daemon's answer when a module's `max connections` is reached.
const CONNECTION_LIMIT: &str = "@ERROR: max connections";

/// Whether rsync's stderr holds the daemon's `max connections` refusal (as a line of
/// its own, like every other message this module recognises).
pub fn at_connection_limit(stderr_tail: &str) -> bool {
    stderr_tail
        .lines()
        .filter_map(|line| rsync_message(line.trim()))
        .any(|message| message.starts_with(CONNECTION_LIMIT))
}

/// Strips `rsync: ` and `rsync: [role] ` from a line written by rsync; `None` for lines
/// that rsync did not write with one of its error prefixes.
fn rsync_message(line: &str) -> Option<&str> {
    if line.starts_with("@ERROR")
        || line.starts_with("ERROR:")
        || line.starts_with("The server is configured to refuse")
    {
        return Some(line);
    }
    let rest = line.strip_prefix("rsync")?;
    let rest = rest
        .strip_prefix(": ")
        .or_else(|| rest.strip_prefix(" error: "))
        .or_else(|| rest.strip_prefix(" warning: "))?;
    let tagged = rest.strip_prefix('[').and_then(|t| t.split_once("] "));
    match tagged {
        Some((role, message))
            if !role.is_empty() && role.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            Some(message)
        }
        _ => Some(rest),
    }
}

/// `SIGNALS[i]`'s regular expression, for the `Foreign` rows.
static FOREIGN: LazyLock<Vec<Option<Regex>>> = LazyLock::new(|| {
    SIGNALS
        .iter()
        .map(|signal| match signal.matcher {
            // The patterns are constants, checked by `foreign_patterns_compile`.
            Match::Foreign(pattern) => Regex::new(pattern).ok(),
            Match::Rsync(_) => None,
        })
        .collect()
});

/// The deciding stderr message: the first fatal one, else the first transient one.
fn find_signal(stderr_tail: &str) -> Option<(&'static Signal, &str)> {
    let mut transient_hit = None;
    for line in stderr_tail.lines() {
        let line = line.trim();
        let message = rsync_message(line);
        for (index, signal) in SIGNALS.iter().enumerate() {
            let hit = match (signal.matcher, message) {
                (Match::Rsync(prefix), Some(message)) => message.starts_with(prefix),
                (Match::Foreign(_), None) => FOREIGN
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|regex| regex.is_match(line)),
                _ => false,
            };
            if hit {
                if signal.class == Fatal {
                    return Some((signal, line));
                }
                transient_hit.get_or_insert((signal, line));
            }
        }
    }
    transient_hit
}

/// A stderr line made safe and short for a one-line reason.
fn excerpt(line: &str) -> String {
    const MAX: usize = 160;
    let mut out = String::new();
    for (count, c) in line.trim().chars().enumerate() {
        if count == MAX {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}

/// Classifies the end of an rsync run. Pure and total: every input has a verdict.
///
/// `stderr_tail` is the end of what rsync wrote to stderr (any amount, possibly empty);
/// it is only consulted for failed runs.
pub fn classify(status: ExitStatusLike, stderr_tail: &str) -> Verdict {
    match status {
        ExitStatusLike::Code(code) => classify_code(code, stderr_tail),
        ExitStatusLike::Signal(signal) => {
            let reason = format!(
                "rsync killed by signal {signal} ({}){}",
                signal_name(signal),
                if signal == libc::SIGKILL {
                    ": the OOM killer, or a timeout?"
                } else {
                    ""
                }
            );
            Verdict {
                class: Retryable,
                summary: reason.clone(),
                reason,
                partial: false,
                fatal_text: false,
            }
        }
        ExitStatusLike::SpawnFailed(kind) => {
            let (class, what) = match kind {
                io::ErrorKind::NotFound => (
                    Fatal,
                    "not found: rsync not installed, or the configured rsync path is wrong?",
                ),
                io::ErrorKind::PermissionDenied => (Fatal, "permission denied: is it executable?"),
                io::ErrorKind::ArgumentListTooLong => (Fatal, "argument list too long"),
                io::ErrorKind::InvalidInput => (Fatal, "invalid argument (a NUL byte in argv?)"),
                _ => (Retryable, "a transient system error"),
            };
            let reason = format!("could not start rsync ({kind}): {what}");
            Verdict {
                class,
                summary: reason.clone(),
                reason,
                partial: false,
                fatal_text: false,
            }
        }
    }
}

fn classify_code(code: i32, stderr_tail: &str) -> Verdict {
    let row = CODES.iter().find(|rule| rule.code == code);
    let (mut class, meaning, hint) = match row {
        Some(rule) => (rule.class, rule.meaning, rule.hint),
        None => (
            Fatal,
            "unknown exit code",
            Some("not an rsync exit code: is the configured rsync a wrapper?"),
        ),
    };
    let mut reason = format!("rsync exit {code}: {meaning}");
    let mut summary = reason.clone();
    let mut fatal_text = false;
    let signal = if code == 0 {
        None
    } else {
        find_signal(stderr_tail)
    };
    if let Some((signal, line)) = signal {
        if signal.class == Fatal && class != Fatal {
            class = Fatal;
            fatal_text = true;
        }
        reason.push_str(&format!("; {}: {}", signal.meaning, excerpt(line)));
        summary.push_str(&format!("; {}", signal.meaning));
    }
    if let Some(hint) = hint {
        reason.push_str(&format!(" ({hint})"));
        summary.push_str(&format!(" ({hint})"));
    }
    Verdict {
        class,
        reason,
        summary,
        partial: code == 23,
        fatal_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (code, class, partial, words the reason must contain)
    const TABLE: &[(i32, ExitClass, bool, &str)] = &[
        (0, Success, false, "rsync exit 0: success"),
        (1, Fatal, false, "syntax or usage error"),
        (2, Fatal, false, "protocol incompatibility"),
        (3, Retryable, false, "errors selecting input/output files"),
        (4, Fatal, false, "requested action not supported"),
        (5, Retryable, false, "error starting client-server protocol"),
        (6, Retryable, false, "daemon unable to append to log-file"),
        (10, Retryable, false, "rsync exit 10: error in socket I/O"),
        (11, Retryable, false, "error in file I/O"),
        (12, Retryable, false, "error in rsync protocol data stream"),
        (13, Retryable, false, "errors with program diagnostics"),
        (14, Retryable, false, "error in IPC code"),
        (15, Retryable, false, "sibling process crashed"),
        (
            16,
            Retryable,
            false,
            "sibling process was killed by a signal",
        ),
        (19, Retryable, false, "received SIGUSR1"),
        (20, Retryable, false, "received SIGINT, SIGTERM, or SIGHUP"),
        (21, Retryable, false, "waitpid()"),
        (22, Retryable, false, "error allocating core memory buffers"),
        (23, Retryable, true, "partial transfer due to error"),
        (24, Benign, false, "vanished source files"),
        (25, Fatal, false, "--max-delete"),
        (30, Retryable, false, "timeout in data send/receive"),
        (
            35,
            Retryable,
            false,
            "timeout waiting for daemon connection",
        ),
        (124, Retryable, false, "remote shell failed"),
        (125, Retryable, false, "remote shell killed"),
        (126, Fatal, false, "remote command could not be run"),
        (127, Fatal, false, "rsync not installed"),
        (255, Retryable, false, "ssh"),
        (123, Fatal, false, "rsync exit 123: unknown exit code"),
        (7, Fatal, false, "unknown exit code"),
        (-1, Fatal, false, "rsync exit -1: unknown exit code"),
        (i32::MAX, Fatal, false, "unknown"),
        (i32::MIN, Fatal, false, "unknown"),
    ];

    #[test]
    fn every_exit_code_has_a_verdict() {
        for &(code, class, partial, words) in TABLE {
            let verdict = classify(ExitStatusLike::Code(code), "");
            assert_eq!(verdict.class, class, "exit {code}: {verdict:?}");
            assert_eq!(verdict.partial, partial, "exit {code}");
            assert!(!verdict.fatal_text, "exit {code}");
            assert!(
                verdict.reason.contains(words),
                "exit {code}: {:?} lacks {words:?}",
                verdict.reason
            );
        }
    }

    /// The EXIT VALUES section of rsync(1) 3.5.0, as printed by `man rsync`.
    const MAN_PAGE_CODES: &[(i32, &str)] = &[
        (0, "Success"),
        (1, "Syntax or usage error"),
        (2, "Protocol incompatibility"),
        (3, "Errors selecting input/output files, dirs"),
        (4, "Requested action not supported"),
        (5, "Error starting client-server protocol"),
        (10, "Error in socket I/O"),
        (11, "Error in file I/O"),
        (12, "Error in rsync protocol data stream"),
        (13, "Errors with program diagnostics"),
        (14, "Error in IPC code"),
        (15, "Sibling process crashed"),
        (16, "Sibling process was killed by a signal"),
        (19, "Received SIGUSR1"),
        (20, "Received SIGINT, SIGTERM, or SIGHUP"),
        (21, "Some error returned by waitpid()"),
        (22, "Error allocating core memory buffers"),
        (23, "Partial transfer due to error"),
        (24, "Partial transfer due to vanished source files"),
        (25, "The --max-delete limit stopped deletions"),
        (30, "Timeout in data send/receive"),
        (35, "Timeout waiting for daemon connection"),
    ];

    #[test]
    fn describe_matches_the_man_page() {
        for &(code, text) in MAN_PAGE_CODES {
            assert!(
                describe(code).eq_ignore_ascii_case(text),
                "{code}: {:?} vs {text:?}",
                describe(code)
            );
            assert!(TABLE.iter().any(|row| row.0 == code), "{code} not in TABLE");
        }
        assert_eq!(describe(6), "daemon unable to append to log-file");
        assert_eq!(describe(127), "remote command not found");
        assert_eq!(describe(99), "unknown exit code");
    }

    #[test]
    fn signals_are_retryable() {
        for signal in [
            libc::SIGKILL,
            libc::SIGTERM,
            libc::SIGSEGV,
            libc::SIGPIPE,
            0,
            999,
        ] {
            let verdict = classify(ExitStatusLike::Signal(signal), "@ERROR: auth failed");
            assert_eq!(verdict.class, Retryable, "{signal}");
            assert!(verdict.reason.contains(&format!("signal {signal}")));
        }
        let kill = classify(ExitStatusLike::Signal(libc::SIGKILL), "");
        assert!(kill.reason.contains("SIGKILL"), "{}", kill.reason);
        assert!(kill.reason.contains("OOM"));
        let unknown = classify(ExitStatusLike::Signal(999), "");
        assert!(unknown.reason.contains("unknown signal"));
    }

    #[test]
    fn spawn_failures() {
        use io::ErrorKind::*;
        for (kind, class, words) in [
            (NotFound, Fatal, "rsync not installed"),
            (PermissionDenied, Fatal, "executable"),
            (ArgumentListTooLong, Fatal, "too long"),
            (InvalidInput, Fatal, "NUL"),
            (WouldBlock, Retryable, "transient"),
            (OutOfMemory, Retryable, "transient"),
            (Other, Retryable, "transient"),
        ] {
            let verdict = classify(ExitStatusLike::SpawnFailed(kind), "");
            assert_eq!(verdict.class, class, "{kind:?}");
            assert!(verdict.reason.starts_with("could not start rsync"));
            assert!(verdict.reason.contains(words), "{}", verdict.reason);
        }
        let error = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            ExitStatusLike::from(&error),
            ExitStatusLike::SpawnFailed(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn from_exit_status() {
        assert_eq!(
            ExitStatusLike::from(ExitStatus::from_raw(23 << 8)),
            ExitStatusLike::Code(23)
        );
        assert_eq!(
            ExitStatusLike::from(ExitStatus::from_raw(libc::SIGKILL)),
            ExitStatusLike::Signal(libc::SIGKILL)
        );
    }

    /// stderr captured from rsync 3.5.0 against a local `rsync --daemon` (and written by
    /// OpenSSH / login shells for the ssh rows), with the exit code rsync returned.
    const STDERR_TABLE: &[(i32, &str, ExitClass, bool, &str)] = &[
        (
            5,
            "@ERROR: auth failed on module auth\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "rejected the user or password",
        ),
        (
            5,
            "@ERROR: Unknown module 'nomodule'\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "no such module",
        ),
        (
            5,
            "@ERROR: chdir failed\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "module path",
        ),
        (5, "@ERROR: chroot failed\n", Fatal, true, "chroot"),
        (
            5,
            "@ERROR: access denied to denied from localhost (127.0.0.1)\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "hosts allow",
        ),
        (
            5,
            "@ERROR: failed to open lock file\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "lock file",
        ),
        (5, "@ERROR: invalid uid nobody2\n", Fatal, true, "uid"),
        (
            5,
            "rsync: server sent \"HTTP/1.1 400 Bad Request\" rather than greeting\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Fatal,
            true,
            "not an rsync daemon",
        ),
        (
            1,
            "ERROR: password file must not be other-accessible\nrsync error: syntax or usage error (code 1) at authenticate.c(261) [sender=3.5.0]\n",
            Fatal,
            false, // already fatal by its code
            "chmod 600",
        ),
        (
            1,
            "rsync: [sender] could not open password file d/missing: No such file or directory (2)\nrsync error: syntax or usage error (code 1) at authenticate.c(247) [sender=3.5.0]\n",
            Fatal,
            false,
            "password file cannot be opened",
        ),
        (
            1,
            "ERROR: module is read only\nrsync error: syntax or usage error (code 1) at main.c(1185) [Receiver=3.5.0]\nrsync: [sender] read error: Connection reset by peer (104)\n",
            Fatal,
            false,
            "read only",
        ),
        (
            5,
            "@ERROR: max connections (-1) reached -- try again later\nrsync error: error starting client-server protocol (code 5) at main.c(1954) [sender=3.5.0]\n",
            Retryable,
            false,
            "connection limit",
        ),
        (
            10,
            "rsync: [sender] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)\nrsync error: error in socket IO (code 10) at clientserver.c(165) [sender=3.5.0]\n",
            Retryable,
            false,
            "cannot connect",
        ),
        (
            255,
            "Host key verification failed.\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\nrsync error: unexplained error (code 255) at io.c(232) [sender=3.5.0]\n",
            Fatal,
            true,
            "host key",
        ),
        (
            255,
            "backup@10.0.0.2: Permission denied (publickey,password).\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
            Fatal,
            true,
            "ssh authentication failed",
        ),
        (
            255,
            "ssh: connect to host 10.0.0.2 port 22: Connection refused\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
            Retryable,
            false,
            "ssh cannot connect",
        ),
        (
            12,
            "bash: line 1: rsync: command not found\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\nrsync error: error in rsync protocol data stream (code 12) at io.c(232) [sender=3.5.0]\n",
            Fatal,
            true,
            "not installed on the remote",
        ),
        (
            127,
            "sh: 1: rsync: not found\n",
            Fatal,
            false,
            "not installed",
        ),
    ];

    #[test]
    fn stderr_decides_daemon_refusals() {
        for &(code, stderr, class, fatal_text, words) in STDERR_TABLE {
            let verdict = classify(ExitStatusLike::Code(code), stderr);
            assert_eq!(verdict.class, class, "{stderr:?}: {verdict:?}");
            assert_eq!(verdict.fatal_text, fatal_text, "{stderr:?}: {verdict:?}");
            assert!(
                verdict.reason.contains(words),
                "{:?} lacks {words:?}",
                verdict.reason
            );
            assert!(
                verdict.summary.contains(words),
                "{:?} lacks {words:?}",
                verdict.summary
            );
            assert!(!verdict.reason.contains('\n'));
        }
    }

    #[test]
    fn summaries_keep_the_diagnosis_and_quote_nothing_from_stderr() {
        let stderr = concat!(
            "rsync: [sender] send_files failed to open \"/srv/hush-dir/plan.txt\": Permission denied (13)\n",
            "@ERROR: auth failed on module hush-module\n",
            "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]\n",
        );
        let refused = classify(ExitStatusLike::Code(5), stderr);
        assert!(refused.reason.contains("hush-module"), "{}", refused.reason);
        assert!(
            refused.summary.contains("rejected the user or password"),
            "{}",
            refused.summary
        );
        for status in [
            ExitStatusLike::Code(5),
            ExitStatusLike::Code(23),
            ExitStatusLike::Code(-7),
            ExitStatusLike::Signal(libc::SIGKILL),
            ExitStatusLike::SpawnFailed(io::ErrorKind::NotFound),
        ] {
            let verdict = classify(status, stderr);
            assert!(!verdict.summary.contains("hush"), "{status:?}: {verdict:?}");
            assert!(!verdict.summary.is_empty(), "{status:?}");
        }
    }

    #[test]
    fn success_ignores_stderr() {
        let verdict = classify(ExitStatusLike::Code(0), "@ERROR: auth failed on module x\n");
        assert_eq!(verdict.class, Success);
        assert!(!verdict.fatal_text);
    }

    #[test]
    fn a_fatal_message_anywhere_beats_a_transient_one() {
        let stderr = "@ERROR: max connections (3) reached -- try again later\n@ERROR: auth failed on module m\n";
        let verdict = classify(ExitStatusLike::Code(5), stderr);
        assert_eq!(verdict.class, Fatal);
        assert!(verdict.fatal_text);
    }

    #[test]
    fn hostile_file_names_cannot_forge_a_refusal() {
        // A file name quoted inside a per-file error message, even one that spells a
        // refusal, does not start a line: rsync escapes newlines in names as \#012.
        let stderr = concat!(
            "rsync: [sender] send_files failed to open \"/srv/@ERROR: auth failed on module x\": Permission denied (13)\n",
            "rsync: [sender] send_files failed to open \"/srv/a\\#012@ERROR: Unknown module 'x'\": Permission denied (13)\n",
            "rsync: [sender] send_files failed to open \"/srv/Host key verification failed\": Permission denied (13)\n",
            "rsync: [sender] send_files failed to open \"/srv/x: Permission denied (publickey)\": Permission denied (13)\n",
            "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]\n",
        );
        let verdict = classify(ExitStatusLike::Code(23), stderr);
        assert_eq!(verdict.class, Retryable, "{verdict:?}");
        assert!(verdict.partial);
        assert!(!verdict.fatal_text);
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        let long = format!(
            "@ERROR: auth failed on module {}\u{7}\n",
            "m".repeat(10_000)
        );
        let verdict = classify(ExitStatusLike::Code(5), &long);
        assert!(
            verdict.reason.chars().count() < 500,
            "{}",
            verdict.reason.len()
        );
        assert!(!verdict.reason.chars().any(char::is_control));
    }

    #[test]
    fn foreign_patterns_compile() {
        for signal in SIGNALS {
            if let Match::Foreign(pattern) = signal.matcher {
                assert!(Regex::new(pattern).is_ok(), "{pattern}");
            }
        }
        assert_eq!(FOREIGN.len(), SIGNALS.len());
    }

    #[test]
    fn remote_shells_saying_rsync_is_missing() {
        for line in [
            "bash: rsync: command not found",
            "bash: line 1: rsync: command not found",
            "sh: 1: rsync: not found",
            "zsh:1: command not found: rsync",
            "ksh: rsync: not found",
        ] {
            let verdict = classify(ExitStatusLike::Code(12), line);
            assert_eq!(verdict.class, Fatal, "{line}");
            assert!(verdict.fatal_text, "{line}");
        }
        for line in [
            "could not make way for new regular file: sh: 1: rsync: not found",
            "could not make way for new regular file: Host key verification failed.",
            "could not make way for new regular file: a: Permission denied (publickey).",
        ] {
            let verdict = classify(ExitStatusLike::Code(23), line);
            assert_eq!(verdict.class, Retryable, "{line}");
        }
    }

    #[test]
    fn class_helpers() {
        assert!(Success.is_done() && Benign.is_done());
        assert!(!Retryable.is_done() && !Fatal.is_done());
        assert_eq!(Fatal.as_str(), "fatal");
        assert_eq!(serde_json::to_string(&Benign).unwrap(), "\"benign\"");
    }
}
