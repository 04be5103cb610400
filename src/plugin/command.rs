//! The `command` plugin: run a program for each change, with the absolute path as one
//! argument.
//!
//! sersync 2.5 ran `system(prefix + " " + ABSPATH + " " + suffix)`: the path went through
//! `/bin/sh` unquoted, so a file named `` a`reboot` `` ran `reboot`, and a space split the
//! path into two arguments. Here the command is an argument vector
//! `prefix_words… ABSPATH suffix_words…`: `prefix` and `suffix` are split into words like
//! a POSIX shell splits them (quotes and backslashes honoured, nothing expanded; see
//! [`crate::config::split_words`]), and the path is exactly one argument holding the raw
//! bytes of the name, whatever they are. No shell is involved unless the prefix names one
//! (the stock `prefix="/bin/sh"` runs the changed file as a script, as in 2.5, and even
//! then the path is `$0` of that shell, never parsed by it). The path is absolute, so it
//! always starts with `/` and can never be taken for an option.
//!
//! Each run is bounded: stdin is `/dev/null`, the last 4 KiB of stderr (and 1 KiB of
//! stdout) are kept for the log, and after the timeout (`<param timeout>`, default 60 s)
//! the command's process group gets SIGTERM and, 2 s later, SIGKILL. The command runs in
//! its own process group (whose id is the command's PID) so that what it started is
//! stopped with it, and so that a Ctrl-C meant for `sersyncd` does not hit it.
//!
//! The command also gets the change in its environment, for scripts that want more than
//! the path: `SERSYNC_ROOT`, `SERSYNC_PATH` (relative), `SERSYNC_EVENT` (`updated` or
//! `deleted`), `SERSYNC_IS_DIR` (`1` or `0`) and `SERSYNC_REMOTES` (labels, one a line).

use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use regex::bytes::Regex;

use super::{Control, Job, Outcome, Plugin, PluginEvent};
use crate::config::CommandPlugin;

/// How much of the command's stderr is kept for the log.
const STDERR_TAIL: usize = 4096;
/// How much of its stdout is kept (logged at debug level).
const STDOUT_TAIL: usize = 1024;
/// Between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Command {
    prefix: Vec<OsString>,
    suffix: Vec<OsString>,
    ignore_error: bool,
    /// `Some` when `<filter start="true">`: the absolute path must match one.
    includes: Option<Vec<Regex>>,
    timeout: Duration,
}

impl Command {
    pub(super) fn new(config: &CommandPlugin) -> Result<Command, String> {
        if config.prefix_words.is_empty() {
            return Err(
                "<plugin name=\"command\"><param prefix> is empty: it must name the program to run"
                    .to_owned(),
            );
        }
        // An enabled filter without includes runs nothing (as sersync 2.5); the host warns.
        let includes = config.filter_enabled.then(|| {
            config
                .includes
                .iter()
                .map(|inc| inc.regex.clone())
                .collect()
        });
        Ok(Command {
            prefix: config.prefix_words.iter().map(OsString::from).collect(),
            suffix: config.suffix_words.iter().map(OsString::from).collect(),
            ignore_error: config.ignore_error,
            includes,
            timeout: Duration::from_secs(u64::from(config.timeout_secs.max(1))),
        })
    }

    /// The full argument vector (program first) for the change at `abs`.
    pub(super) fn argv(&self, abs: &[u8]) -> Vec<OsString> {
        let mut argv = self.prefix.clone();
        argv.push(OsStr::from_bytes(abs).to_owned());
        argv.extend(self.suffix.iter().cloned());
        argv
    }

    fn failure(&self, message: String) -> Outcome {
        if self.ignore_error {
            Outcome::IgnoredFailure(message)
        } else {
            Outcome::Failed(message)
        }
    }
}

impl Plugin for Command {
    fn accept(&self, _event: &PluginEvent, abs: &[u8]) -> Result<(), String> {
        match &self.includes {
            Some(includes) if !includes.iter().any(|re| re.is_match(abs)) => {
                Err("not matched by any <include expression>".to_owned())
            }
            _ => Ok(()),
        }
    }

    fn deliver(&self, job: &Job, control: &Control) -> Outcome {
        let argv = self.argv(&job.abs);
        let event = &job.event;
        let remotes = event.remotes.join("\n");
        let mut command = std::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env("SERSYNC_ROOT", &event.root)
            .env("SERSYNC_PATH", OsStr::from_bytes(&event.path))
            .env("SERSYNC_EVENT", event.kind.as_str())
            .env("SERSYNC_IS_DIR", if event.is_dir { "1" } else { "0" })
            .env("SERSYNC_REMOTES", remotes)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        tracing::debug!(plugin = "command", argv = ?argv, "running");
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                return self.failure(format!("cannot run {}: {err}", argv[0].to_string_lossy()));
            }
        };
        let run = supervise(child, self.timeout, control);
        let stderr = tail_text(&run.stderr);
        match run.end {
            End::Exited(status) if status.success() => {
                if !run.stdout.is_empty() {
                    tracing::debug!(plugin = "command", stdout = %tail_text(&run.stdout), "command output");
                }
                Outcome::Delivered
            }
            end => {
                let what = match end {
                    End::Exited(status) => describe_status(status),
                    End::TimedOut(status) => format!(
                        "timed out after {}s and was killed ({})",
                        self.timeout.as_secs(),
                        describe_status(status)
                    ),
                    End::Aborted(status) => {
                        format!("stopped by shutdown ({})", describe_status(status))
                    }
                };
                let message = if stderr.is_empty() {
                    what
                } else {
                    format!("{what}; stderr: {stderr}")
                };
                self.failure(message)
            }
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("killed by {name}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => status.to_string(),
    }
}

/// The last few lines of captured output as one log-safe line (control bytes escaped).
fn tail_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    last.iter()
        .map(|line| line.trim_end().escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How a supervised command ended.
#[derive(Debug)]
enum End {
    Exited(ExitStatus),
    TimedOut(ExitStatus),
    Aborted(ExitStatus),
}

#[derive(Debug)]
struct Run {
    end: End,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Keeps only the last `cap` bytes written.
fn keep_tail(buffer: &mut Vec<u8>, data: &[u8], cap: usize) {
    buffer.extend_from_slice(data);
    if buffer.len() > cap {
        buffer.drain(..buffer.len() - cap);
    }
}

/// Waits for `child` while collecting the tails of its output, killing it (its process
/// group) at the timeout or when the host aborts. One thread, no helpers: the pipes are
/// non-blocking and polled, so a grandchild that keeps them open cannot hang us.
fn supervise(mut child: Child, timeout: Duration, control: &Control) -> Run {
    let deadline = Instant::now() + timeout;
    let mut pipes = [
        child.stdout.take().map(Pipe::from_stdout),
        child.stderr.take().map(Pipe::from_stderr),
    ];
    let mut output = [Vec::new(), Vec::new()];
    let caps = [STDOUT_TAIL, STDERR_TAIL];
    let kill_reason = loop {
        // A child that exited may still have output in the pipes: read it, then stop.
        let status = child.try_wait().ok().flatten();
        let step = if pipes.iter().any(Option::is_some) {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(10)
        };
        let wait = if status.is_some() {
            Duration::ZERO
        } else {
            step.min(deadline.saturating_duration_since(Instant::now()))
        };
        poll_pipes(&mut pipes, &mut output, &caps, wait);
        if let Some(status) = status {
            return Run {
                end: End::Exited(status),
                stdout: std::mem::take(&mut output[0]),
                stderr: std::mem::take(&mut output[1]),
            };
        }
        if Instant::now() >= deadline {
            break Reason::Timeout;
        }
        if control.aborted() {
            break Reason::Abort;
        }
    };
    let status = kill_group(&mut child);
    poll_pipes(&mut pipes, &mut output, &caps, Duration::ZERO);
    let end = match kill_reason {
        Reason::Timeout => End::TimedOut(status),
        Reason::Abort => End::Aborted(status),
    };
    Run {
        end,
        stdout: std::mem::take(&mut output[0]),
        stderr: std::mem::take(&mut output[1]),
    }
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    Timeout,
    Abort,
}

/// SIGTERM to the child's process group, SIGKILL after [`KILL_GRACE`]; returns the
/// child's status. The group id is the child's PID, which cannot have been reused: the
/// child is not reaped until `try_wait`/`wait` here returns its status.
fn kill_group(child: &mut Child) -> ExitStatus {
    let Ok(raw) = i32::try_from(child.id()) else {
        let _ = child.kill();
        return child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
    };
    let group = Pid::from_raw(raw);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // The leader is gone; make sure the rest of its group is too.
            let _ = killpg(group, Signal::SIGKILL);
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    child
        .wait()
        .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))
}

/// A non-blocking read end of the child's stdout or stderr.
#[derive(Debug)]
struct Pipe {
    reader: Box<dyn ReadFd>,
}

trait ReadFd: Read + AsFd + Send + std::fmt::Debug {}
impl<T: Read + AsFd + Send + std::fmt::Debug> ReadFd for T {}

impl Pipe {
    fn new(reader: Box<dyn ReadFd>) -> Pipe {
        // If this fails the pipe stays blocking; poll() still says when data is there, and
        // each read is then one that poll() reported ready.
        if let Ok(flags) = fcntl(reader.as_fd(), FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
            let _ = fcntl(reader.as_fd(), FcntlArg::F_SETFL(flags));
        }
        Pipe { reader }
    }
    fn from_stdout(out: std::process::ChildStdout) -> Pipe {
        Pipe::new(Box::new(out))
    }
    fn from_stderr(err: std::process::ChildStderr) -> Pipe {
        Pipe::new(Box::new(err))
    }
}

/// Waits up to `wait` for output and reads what is there; a pipe at EOF is closed.
fn poll_pipes(
    pipes: &mut [Option<Pipe>; 2],
    output: &mut [Vec<u8>; 2],
    caps: &[usize; 2],
    wait: Duration,
) {
    let ready: Vec<bool> = {
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut which = Vec::new();
        for (index, pipe) in pipes.iter().enumerate() {
            if let Some(pipe) = pipe {
                fds.push(PollFd::new(pipe.reader.as_fd(), PollFlags::POLLIN));
                which.push(index);
            }
        }
        if fds.is_empty() {
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            return;
        }
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut ready = vec![false; 2];
        if poll(&mut fds, PollTimeout::from(millis)).is_ok() {
            for (fd, index) in fds.iter().zip(which) {
                ready[index] = fd.revents().is_some_and(|r| !r.is_empty());
            }
        }
        ready
    };
    let mut chunk = [0u8; 4096];
    for index in 0..2 {
        if !ready[index] {
            continue;
        }
        let Some(pipe) = pipes[index].as_mut() else {
            continue;
        };
        loop {
            match pipe.reader.read(&mut chunk) {
                Ok(0) => {
                    pipes[index] = None;
                    break;
                }
                Ok(n) => keep_tail(&mut output[index], &chunk[..n], caps[index]),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    pipes[index] = None;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExcludeRegex, split_words};
    use std::sync::Arc;

    fn config(prefix: &str, suffix: &str) -> CommandPlugin {
        CommandPlugin {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            prefix_words: split_words(prefix).unwrap(),
            suffix_words: split_words(suffix).unwrap(),
            ignore_error: false,
            filter_enabled: false,
            includes: Vec::new(),
            timeout_secs: 60,
        }
    }

    #[test]
    fn argv_is_prefix_words_then_the_path_as_one_argument_then_suffix_words() {
        /// prefix, suffix, absolute path, expected argv.
        type Case<'a> = (&'a str, &'a str, &'a [u8], &'a [&'a [u8]]);
        let cases: &[Case<'_>] = &[
            ("/bin/sh", "", b"/w/a.sh", &[b"/bin/sh", b"/w/a.sh"]),
            (
                "/usr/bin/hook --flag 'two words'",
                "-- \"x y\" z\\ z",
                b"/w/a b",
                &[
                    b"/usr/bin/hook",
                    b"--flag",
                    b"two words",
                    b"/w/a b",
                    b"--",
                    b"x y",
                    b"z z",
                ],
            ),
            // Nothing in the path is interpreted: quotes, `$()`, backticks, newlines, bytes
            // that are not UTF-8, a component that starts with `-`.
            (
                "/bin/echo",
                "$HOME `id`",
                b"/w/-rf $(touch PWNED) `id` 'q\" \n\xff",
                &[
                    b"/bin/echo",
                    b"/w/-rf $(touch PWNED) `id` 'q\" \n\xff",
                    b"$HOME",
                    b"`id`",
                ],
            ),
        ];
        for (prefix, suffix, abs, expected) in cases {
            let command = Command::new(&config(prefix, suffix)).unwrap();
            let argv = command.argv(abs);
            let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
            assert_eq!(&argv, expected, "prefix {prefix:?} suffix {suffix:?}");
        }
    }

    #[test]
    fn an_empty_prefix_is_refused() {
        let err = Command::new(&config("", "")).unwrap_err();
        assert!(err.contains("prefix> is empty"), "{err}");
    }

    #[test]
    fn the_include_filter_matches_the_whole_absolute_path() {
        let mut cfg = config("/bin/true", "");
        cfg.filter_enabled = true;
        cfg.includes = vec![ExcludeRegex {
            expression: r"(.*)\.php".into(),
            regex: Regex::new(r"^(?:(.*)\.php)$").unwrap(),
            line: 1,
        }];
        let command = Command::new(&cfg).unwrap();
        let event = PluginEvent {
            root: "/w".into(),
            path: Vec::new(),
            is_dir: false,
            kind: super::super::ChangeKind::Updated,
            remotes: Vec::new(),
        };
        assert!(command.accept(&event, b"/w/a.php").is_ok());
        assert!(command.accept(&event, b"/w/a.php.txt").is_err());
        cfg.filter_enabled = false;
        let command = Command::new(&cfg).unwrap();
        assert!(command.accept(&event, b"/w/a.txt").is_ok());
    }

    fn control() -> Control {
        Control {
            shared: Arc::new(super::super::Shared::default()),
        }
    }

    #[test]
    fn supervise_keeps_output_tails_and_kills_at_the_timeout() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "echo out; echo err1 >&2; echo err2 >&2; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let run = supervise(child, Duration::from_secs(20), &control());
        assert!(matches!(run.end, End::Exited(s) if s.code() == Some(3)));
        assert_eq!(run.stdout, b"out\n");
        assert_eq!(tail_text(&run.stderr), "err1 | err2");

        let started = Instant::now();
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let run = supervise(child, Duration::from_millis(300), &control());
        assert!(matches!(run.end, End::TimedOut(_)), "{:?}", run.end);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn tails_are_bounded() {
        let mut buffer = Vec::new();
        keep_tail(&mut buffer, b"abcdef", 4);
        keep_tail(&mut buffer, b"gh", 4);
        assert_eq!(buffer, b"efgh");
        assert_eq!(tail_text(b"a\n\nb\x1b[31m\n"), "a | b\\u{1b}[31m");
    }
}
