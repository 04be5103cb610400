//! `sersyncctl`: the human and shell-script face of the D-Bus interface.
//!
//! Every command is one or two calls through the proxy generated from the interface
//! definition (`control::Sersync1Proxy`). Output is for people by default and JSON with
//! `--json`; exit statuses follow sysexits so scripts can tell "the daemon said no" (1) from
//! "there is no daemon" (69) and "you may not" (77).

#[cfg(test)]
mod generated;
pub mod health;
pub mod render;

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use serde_json::json;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, Message};

use crate::config;
use crate::control::client::{self, Failure};
use crate::control::interface::{FullSyncFinished, FullSyncProgress, StateChanged, SyncFailed};
use crate::control::{BusArgs, Error, INTERFACE, OBJECT_PATH, Sersync1Proxy, names};
use crate::exit;
use crate::metrics;
use render::Seen;

/// Control and inspect running sersyncd instances over D-Bus.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sersyncctl",
    version,
    about = "Control and inspect running sersyncd instances over D-Bus",
    long_about = "Control and inspect running sersyncd instances over D-Bus.\n\n\
        The status (status, list, monitor) is open to every user, without file names. File \
        names (failures; in status and monitor, the paths of failed changes and rsync's own \
        error messages) and changing (pause, resume, retry-failed, full-sync, reload) need \
        root or membership in the group sersync.\n\n\
        Exit status: 0 ok, 1 the daemon answered with an error, 64 usage error, 69 the \
        daemon is not running or the bus is unreachable, 75 (checkpoint) a remote is still \
        behind, 77 access denied, 78 (check) the config is invalid; health exits like a \
        Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
)]
pub struct Cli {
    /// The instance to talk to (sersync@NAME); needed only when several run.
    #[arg(short = 'i', long = "instance", value_name = "NAME", global = true)]
    pub instance: Option<String>,

    /// Print JSON instead of text (JSON Lines for monitor).
    #[arg(long = "json", global = true)]
    pub json: bool,

    #[command(flatten)]
    pub bus: BusArgs,

    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Show the state of an instance: queue, failures, watches, remotes, counters.
    Status,
    /// Stop sending changes; they are still collected and coalesced, nothing is lost.
    Pause,
    /// Send what was collected while paused, and carry on.
    Resume,
    /// Retry every failed change now instead of waiting for its backoff.
    RetryFailed,
    /// Push a whole watched tree (or every tree) to its remotes.
    FullSync {
        /// Only this watched root (as written in the config).
        #[arg(long = "root", value_name = "PATH")]
        root: Option<PathBuf>,
        /// Wait until the full sync finished; exit 1 if it failed.
        #[arg(long = "wait")]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 1).
        #[arg(long = "timeout", value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
        /// Past the replica guard: for a root that is meant to be empty now, or that
        /// moved to another filesystem (its deletions reach the remotes).
        #[arg(long = "force")]
        force: bool,
    },
    /// Check that every change made so far is on every remote: 0 when it is, 75 (with
    /// the remotes still behind) when not. Deploy scripts run `checkpoint --wait
    /// --timeout 60` after writing.
    Checkpoint {
        /// Only the remotes of this watched root.
        #[arg(long = "root", value_name = "PATH")]
        root: Option<PathBuf>,
        /// Wait until it is (else answer at once).
        #[arg(long = "wait")]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 75).
        #[arg(long = "timeout", value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
    },
    /// List the changes that still fail after retries (they name files: root and group
    /// sersync only).
    Failures,
    /// Re-read the config file; a config with errors is refused and the old one stays.
    Reload,
    /// List the running instances.
    List,
    /// Validate a config file without any daemon: 0 when valid, 78 with diagnostics.
    Check {
        /// The config file (sersync 2.5 confxml.xml schema).
        #[arg(
            short = 'o',
            long = "config",
            value_name = "FILE",
            default_value = "./confxml.xml"
        )]
        config: PathBuf,
    },
    /// Print the daemon's signals as they happen, until it stops or you interrupt (the
    /// paths of failures only for root and group sersync).
    Monitor,
    /// Print the daemon's metrics in the Prometheus text format, as its --metrics-listen
    /// answers them (for node_exporter's textfile collector).
    Metrics {
        /// OpenMetrics text instead of the Prometheus text format.
        #[arg(long = "openmetrics")]
        openmetrics: bool,
    },
    /// Check the daemon like a Nagios plugin: one line `SERSYNC OK - ... | perfdata`, and
    /// exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (daemon unreachable, bad arguments).
    /// Thresholds are "above": a value greater than the threshold trips it.
    #[command(
        long_about = "Check the daemon like a Nagios plugin (Nagios, Icinga, check_mk, \
        Consul): one line `SERSYNC STATUS - INSTANCE: what | perfdata`, and exit 0 OK, 1 \
        WARNING, 2 CRITICAL, 3 UNKNOWN (the daemon is unreachable, or bad arguments).\n\n\
        WARNING: a remote's lag above --warn-lag, failed changes above --warn-failed, a \
        remote in backoff, guarded or stalled, a paused daemon. CRITICAL: a remote's lag \
        above --crit-lag, failed changes above --crit-failed, a remote failing (a \
        configuration error), a watcher blocked on a hung filesystem.\n\n\
        Perfdata: failed, queued, and per remote its lag (seconds) and pending paths."
    )]
    Health(HealthArgs),
}

/// The thresholds of `sersyncctl health`.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct HealthArgs {
    /// WARNING when a remote's lag is above this many seconds.
    #[arg(long = "warn-lag", value_name = "SECONDS", default_value_t = 60.0, value_parser = non_negative)]
    pub warn_lag: f64,
    /// CRITICAL when a remote's lag is above this many seconds.
    #[arg(long = "crit-lag", value_name = "SECONDS", default_value_t = 300.0, value_parser = non_negative)]
    pub crit_lag: f64,
    /// WARNING when more than this many changes still fail after retries.
    #[arg(long = "warn-failed", value_name = "N", default_value_t = 0)]
    pub warn_failed: u64,
    /// CRITICAL when more than this many changes still fail after retries [default: off].
    #[arg(long = "crit-failed", value_name = "N")]
    pub crit_failed: Option<u64>,
}

impl HealthArgs {
    fn thresholds(&self) -> health::Thresholds {
        health::Thresholds {
            warn_lag: Some(self.warn_lag),
            crit_lag: Some(self.crit_lag),
            warn_failed: Some(self.warn_failed),
            crit_failed: self.crit_failed,
        }
    }
}

/// A number of seconds: finite and not negative.
fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "expected seconds, 0 or more (e.g. 60 or 0.5), not {text:?}"
        )),
    }
}

/// Whether a command line that clap refused was meant for `sersyncctl health`, whose usage
/// errors exit UNKNOWN (3) rather than 64. A guess from the words (clap says nothing about
/// the subcommand of a line it refused): the first word that is not an option or the
/// value of a global option.
fn meant_health(args: &[std::ffi::OsString]) -> bool {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        match word.as_ref() {
            "-i" | "--instance" | "--bus" | "--bus-address" => {
                words.next();
            }
            option if option.starts_with('-') => {}
            subcommand => return subcommand == "health",
        }
    }
    false
}

/// Parses the command line and runs it; returns the exit status (0 for --help and
/// --version, 64 for usage errors, a missing subcommand included).
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(&cli),
        Err(err) => {
            let _ = err.print();
            match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ if meant_health(&args) => {
                    println!(
                        "{}",
                        health::unknown_line("bad arguments (see sersyncctl health --help)")
                    );
                    exit::HEALTH_UNKNOWN
                }
                _ => exit::USAGE,
            }
        }
    }
}

/// A failed command: what to print and how to exit.
#[derive(Debug)]
struct Fail {
    code: i32,
    message: String,
}

impl Fail {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
        }
    }
}

type Outcome = Result<i32, Fail>;

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: &Cli) -> i32 {
    let result = match &cli.command {
        CtlCommand::Check { config } => return config::check::report(config, None),
        CtlCommand::List => list(cli),
        CtlCommand::Health(args) => return health_check(cli, args),
        _ => with_daemon(cli),
    };
    match result {
        Ok(code) => code,
        Err(fail) => {
            eprintln!("sersyncctl: {}", fail.message);
            fail.code
        }
    }
}

fn connect(cli: &Cli) -> Result<Connection, Fail> {
    cli.bus
        .connect()
        .map_err(|err| Fail::new(exit::UNAVAILABLE, err.to_string()))
}

/// Maps a bus-level error (no daemon involved yet) to a failure.
fn bus_fail(cli: &Cli, what: &str, err: &zbus::Error) -> Fail {
    let code = match client::classify(err) {
        Failure::AccessDenied => exit::NOPERM,
        Failure::Daemon | Failure::Unreachable => exit::UNAVAILABLE,
    };
    Fail::new(
        code,
        format!(
            "{what} on {}: {}",
            cli.bus.describe(),
            client::error_message(err)
        ),
    )
}

fn list(cli: &Cli) -> Outcome {
    let connection = connect(cli)?;
    let instances = client::list_instances(&connection)
        .map_err(|e| bus_fail(cli, "cannot list the bus names", &e))?;
    if cli.json {
        let list: Vec<_> = instances
            .iter()
            .map(|i| json!({"instance": i, "bus_name": names::bus_name(i).unwrap_or_default()}))
            .collect();
        print_json(&json!(list));
    } else {
        for instance in &instances {
            println!("{instance}");
        }
    }
    Ok(exit::OK)
}

/// The instance to address: `-i`, or the only one running.
fn pick_instance(cli: &Cli, connection: &Connection) -> Result<String, Fail> {
    if let Some(instance) = &cli.instance {
        names::bus_name(instance)
            .map_err(|e| Fail::new(exit::USAGE, format!("-i {instance:?}: {e}")))?;
        return Ok(instance.clone());
    }
    let instances = client::list_instances(connection)
        .map_err(|e| bus_fail(cli, "cannot list the bus names", &e))?;
    match instances.as_slice() {
        [] => Err(Fail::new(
            exit::UNAVAILABLE,
            format!("no sersyncd instance is running on {}", cli.bus.describe()),
        )),
        [only] => Ok(only.clone()),
        several => Err(Fail::new(
            exit::USAGE,
            format!(
                "several instances run on {} ({}): pick one with -i NAME",
                cli.bus.describe(),
                several.join(", ")
            ),
        )),
    }
}

/// Runs a command that talks to one daemon.
fn with_daemon(cli: &Cli) -> Outcome {
    on_daemon(cli, |daemon| daemon.run())
}

/// Connects to the daemon `cli` names and runs `act` on it.
fn on_daemon<T>(cli: &Cli, act: impl FnOnce(&Daemon) -> Result<T, Fail>) -> Result<T, Fail> {
    let connection = connect(cli)?;
    let instance = pick_instance(cli, &connection)?;
    let bus_name = names::bus_name(&instance).map_err(|e| Fail::new(exit::USAGE, e.to_string()))?;
    let proxy = client::proxy(&connection, &bus_name)
        .map_err(|e| bus_fail(cli, "cannot make a proxy", &e))?;
    let daemon = Daemon {
        cli,
        connection: &connection,
        proxy,
        instance,
        bus_name,
    };
    act(&daemon)
}

/// `sersyncctl health`: prints the verdict (or UNKNOWN and why) on stdout, where
/// monitoring systems read it, and returns its Nagios status.
fn health_check(cli: &Cli, args: &HealthArgs) -> i32 {
    let thresholds = args.thresholds();
    let status = on_daemon(cli, |daemon| {
        let status = daemon
            .proxy
            .get_status()
            .map_err(|e| daemon.fail("status", e))?;
        Ok((daemon.instance.clone(), status))
    });
    match status {
        Ok((instance, status)) => {
            let verdict = health::judge(&status, &thresholds);
            if cli.json {
                print_json(&health::json(&instance, &verdict, &thresholds));
            } else {
                println!("{}", health::line(&instance, &verdict));
            }
            verdict.level.code()
        }
        Err(fail) => {
            if cli.json {
                print_json(&health::unknown_json(
                    cli.instance.as_deref(),
                    &fail.message,
                    &thresholds,
                ));
            } else {
                println!("{}", health::unknown_line(&fail.message));
            }
            exit::HEALTH_UNKNOWN
        }
    }
}

struct Daemon<'a> {
    cli: &'a Cli,
    connection: &'a Connection,
    proxy: Sersync1Proxy<'a>,
    instance: String,
    bus_name: String,
}

impl Daemon<'_> {
    fn run(&self) -> Outcome {
        let json = self.cli.json;
        match &self.cli.command {
            CtlCommand::Status => {
                let status = self
                    .proxy
                    .get_status()
                    .map_err(|e| self.fail("status", e))?;
                if json {
                    print_json(&render::status_json(&status));
                } else {
                    print!("{}", render::status_text(&status));
                }
            }
            CtlCommand::Pause => {
                self.proxy.pause().map_err(|e| self.fail("pause", e))?;
                self.done(
                    json!({"paused": true}),
                    "paused: changes are collected, nothing is sent until `sersyncctl resume`",
                );
            }
            CtlCommand::Resume => {
                self.proxy.resume().map_err(|e| self.fail("resume", e))?;
                self.done(json!({"paused": false}), "resumed");
            }
            CtlCommand::RetryFailed => {
                let queued = self
                    .proxy
                    .retry_failed()
                    .map_err(|e| self.fail("retry-failed", e))?;
                self.done(
                    json!({"queued": queued}),
                    &format!(
                        "{queued} failed change{} queued again",
                        if queued == 1 { "" } else { "s" }
                    ),
                );
            }
            CtlCommand::FullSync {
                root,
                wait,
                timeout,
                force,
            } => {
                return self.full_sync(
                    root.as_deref(),
                    *wait,
                    timeout.map(Duration::from_secs),
                    *force,
                );
            }
            CtlCommand::Checkpoint {
                root,
                wait,
                timeout,
            } => {
                return self.checkpoint(root.as_deref(), *wait, timeout.map(Duration::from_secs));
            }
            CtlCommand::Failures => {
                let failures = self
                    .proxy
                    .list_failures()
                    .map_err(|e| self.fail("failures", e))?;
                if json {
                    print_json(&render::failures_json(&failures));
                } else {
                    print!("{}", render::failures_text(&failures));
                }
            }
            CtlCommand::Reload => {
                self.proxy.reload().map_err(|e| self.fail("reload", e))?;
                self.done(json!({"reloaded": true}), "config reloaded");
            }
            CtlCommand::Monitor => return self.monitor(),
            CtlCommand::Metrics { openmetrics } => {
                let status = self
                    .proxy
                    .get_status()
                    .map_err(|e| self.fail("metrics", e))?;
                let format = if *openmetrics {
                    metrics::Format::OpenMetrics
                } else {
                    metrics::Format::Prometheus
                };
                print!("{}", metrics::render(&status, format));
            }
            CtlCommand::List | CtlCommand::Check { .. } | CtlCommand::Health(_) => {
                unreachable!("handled in run()")
            }
        }
        Ok(exit::OK)
    }

    fn done(&self, json: serde_json::Value, text: &str) {
        if self.cli.json {
            print_json(&json);
        } else {
            println!("{}: {text}", self.instance);
        }
    }

    /// Turns an error of the interface into a failure with the right exit status.
    fn fail(&self, what: &str, err: Error) -> Fail {
        let code = match client::classify_error(&err) {
            Failure::AccessDenied => exit::NOPERM,
            Failure::Unreachable => exit::UNAVAILABLE,
            Failure::Daemon => exit::DAEMON_ERROR,
        };
        let message = match &err {
            Error::ZBus(inner) => {
                let timed_out = matches!(
                    inner,
                    zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut
                );
                if timed_out {
                    format!(
                        "{what}: the daemon did not answer within {} s; it may be hung (see its \
                         log)",
                        crate::control::CLIENT_TIMEOUT.as_secs()
                    )
                } else if code == exit::UNAVAILABLE {
                    format!(
                        "instance {:?} is not running on {} ({})",
                        self.instance,
                        self.cli.bus.describe(),
                        client::error_message(inner)
                    )
                } else if code == exit::NOPERM {
                    let action = match self.cli.command {
                        CtlCommand::Failures => "listing failures (they name files)",
                        _ => "changing sersyncd",
                    };
                    format!(
                        "{what}: access denied: {action} needs root or membership in group \
                         sersync ({})",
                        client::error_message(inner)
                    )
                } else {
                    format!("{what}: {}", client::error_message(inner))
                }
            }
            Error::AccessDenied(m) => format!("{what}: access denied: {m}"),
            Error::Unavailable(m)
            | Error::UnknownRoot(m)
            | Error::UnknownCheckpoint(m)
            | Error::Timeout(m)
            | Error::Rejected(m) => format!("{what}: {m}"),
        };
        Fail::new(code, format!("{}: {message}", self.instance))
    }

    /// The unique name of the daemon now, or a 69.
    fn owner(&self) -> Result<String, Fail> {
        let bus = zbus::blocking::fdo::DBusProxy::new(self.connection)
            .map_err(|e| bus_fail(self.cli, "cannot talk to the bus", &e))?;
        let name = zbus::names::BusName::try_from(self.bus_name.as_str())
            .map_err(|e| Fail::new(exit::USAGE, e.to_string()))?;
        bus.get_name_owner(name)
            .map(|owner| owner.to_string())
            .map_err(|e| {
                Fail::new(
                    exit::UNAVAILABLE,
                    format!(
                        "{}: instance is not running on {} ({})",
                        self.instance,
                        self.cli.bus.describe(),
                        client::error_message(&e.into())
                    ),
                )
            })
    }

    fn full_sync(
        &self,
        root: Option<&Path>,
        wait: bool,
        timeout: Option<Duration>,
        force: bool,
    ) -> Outcome {
        let root_bytes = root
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        // Subscribe before asking, so a quick full sync cannot finish unseen (every signal
        // of the daemon: FullSyncFinished, and FullSyncProgress to show).
        let watch = if wait {
            Some(self.watch_signals(None)?)
        } else {
            None
        };
        let job_id = if force {
            self.proxy.force_full_sync(root_bytes)
        } else {
            self.proxy.full_sync(root_bytes)
        }
        .map_err(|e| self.fail("full-sync", e))?;
        let Some(watch) = watch else {
            self.done(
                json!({"job_id": job_id}),
                &format!("full sync started (job {job_id}); `sersyncctl full-sync --wait` waits for the end"),
            );
            return Ok(exit::OK);
        };
        if !self.cli.json {
            println!(
                "{}: full sync started (job {job_id}), waiting",
                self.instance
            );
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut shown = ProgressShown::new(root);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                shown.end_line();
                return Err(Fail::new(
                    exit::DAEMON_ERROR,
                    format!(
                        "{}: full sync job {job_id} did not finish within {} s (it goes on)",
                        self.instance,
                        timeout.unwrap_or_default().as_secs()
                    ),
                ));
            }
            match watch.next(left.unwrap_or(Duration::from_secs(3600))) {
                Some(Watched::Signal(message)) => {
                    let Some(seen) = parse_signal(&message) else {
                        continue;
                    };
                    if let Seen::FullSyncProgress { remote, progress } = &seen {
                        if !self.cli.json {
                            shown.show(remote, progress);
                        }
                        continue;
                    }
                    if let Seen::FullSyncFinished {
                        job_id: id,
                        root,
                        success,
                    } = &seen
                        && *id == job_id
                    {
                        shown.end_line();
                        if self.cli.json {
                            print_json(&json!({
                                "job_id": job_id,
                                "root": String::from_utf8_lossy(root),
                                "success": success,
                            }));
                        } else {
                            println!(
                                "{}: full sync job {job_id} {}",
                                self.instance,
                                if *success {
                                    "finished"
                                } else {
                                    "FAILED (see the daemon's log and `sersyncctl failures`)"
                                }
                            );
                        }
                        return Ok(if *success {
                            exit::OK
                        } else {
                            exit::DAEMON_ERROR
                        });
                    }
                }
                Some(Watched::OwnerGone) | None => {
                    return Err(Fail::new(
                        exit::UNAVAILABLE,
                        format!(
                            "{}: the daemon left the bus before full sync job {job_id} finished",
                            self.instance
                        ),
                    ));
                }
                Some(Watched::Timeout) => {}
            }
        }
    }

    /// Asks for a checkpoint and polls where it stands: until it is reached with `wait`
    /// (or the timeout passes), else only until the watchers have reported what the
    /// kernel had queued (the answer is then "reached" or "behind" for sure).
    fn checkpoint(&self, root: Option<&Path>, wait: bool, timeout: Option<Duration>) -> Outcome {
        /// How long the watchers may take to report their queued events (they look every
        /// quarter second; a blocked one never does).
        const DRAIN_WITHIN: Duration = Duration::from_secs(5);
        const POLL: Duration = Duration::from_millis(100);
        let started = Instant::now();
        let root_bytes = root
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        let id = self
            .proxy
            .checkpoint(root_bytes)
            .map_err(|e| self.fail("checkpoint", e))?;
        let deadline = if wait {
            timeout.map(|t| started + t)
        } else {
            Some(started + DRAIN_WITHIN)
        };
        loop {
            let state = self
                .proxy
                .checkpoint_status(id)
                .map_err(|e| self.fail("checkpoint", e))?;
            let settled = state.state != "draining";
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if state.state == "reached" || (!wait && settled) || out_of_time {
                let waited = started.elapsed();
                let reached = state.state == "reached";
                if self.cli.json {
                    print_json(&render::checkpoint_json(id, &state, waited));
                } else {
                    println!(
                        "{}: {}",
                        self.instance,
                        render::checkpoint_text(id, &state, waited)
                    );
                }
                return Ok(if reached { exit::OK } else { exit::TEMPFAIL });
            }
            std::thread::sleep(POLL);
        }
    }

    fn monitor(&self) -> Outcome {
        let watch = self.watch_signals(None)?;
        // Failures in full come addressed to this connection alone; the broadcast copy
        // (no path, a summary for a message) is then the same failure again. Failures
        // broadcast while this call is on its way are skipped like those before the start.
        let full_failures = match self.proxy.watch_failures() {
            Ok(()) => true,
            Err(err) => {
                if client::classify_error(&err) == Failure::AccessDenied {
                    eprintln!(
                        "sersyncctl: {}: failures are shown without their paths (those need \
                         root or membership in group sersync)",
                        self.instance
                    );
                } else {
                    eprintln!(
                        "sersyncctl: {}; failures are shown without their paths",
                        self.fail("WatchFailures", err).message
                    );
                }
                false
            }
        };
        if !self.cli.json {
            println!(
                "{}: monitoring {} on {} (Ctrl-C to stop)",
                self.instance,
                self.bus_name,
                self.cli.bus.describe()
            );
        }
        let _ = std::io::stdout().flush();
        loop {
            match watch.next(Duration::from_secs(3600)) {
                Some(Watched::Signal(message)) => {
                    let Some(seen) = parse_signal(&message) else {
                        continue;
                    };
                    let addressed = message.header().destination().is_some();
                    if full_failures && !addressed && matches!(seen, Seen::SyncFailed { .. }) {
                        continue;
                    }
                    let now = SystemTime::now();
                    if self.cli.json {
                        print_json(&render::seen_json(now, &seen));
                    } else {
                        println!("{}", render::seen_text(now, &seen));
                    }
                    let _ = std::io::stdout().flush();
                }
                Some(Watched::Timeout) => {}
                Some(Watched::OwnerGone) | None => {
                    return Err(Fail::new(
                        exit::UNAVAILABLE,
                        format!("{}: the daemon left the bus", self.instance),
                    ));
                }
            }
        }
    }

    /// Subscribes to the daemon's signals (`member`: only that one) and to its leaving.
    fn watch_signals(&self, member: Option<&str>) -> Result<SignalWatch, Fail> {
        let owner = self.owner()?;
        let fail = |e: zbus::Error| bus_fail(self.cli, "cannot subscribe to signals", &e);
        let mut rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(owner.as_str())
            .map_err(fail)?
            .path(OBJECT_PATH)
            .map_err(fail)?;
        if let Some(member) = member {
            rule = rule
                .interface(INTERFACE)
                .map_err(fail)?
                .member(member)
                .map_err(fail)?;
        }
        let signals =
            MessageIterator::for_match_rule(rule.build(), self.connection, None).map_err(fail)?;
        let gone_rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")
            .map_err(fail)?
            .interface("org.freedesktop.DBus")
            .map_err(fail)?
            .member("NameOwnerChanged")
            .map_err(fail)?
            .arg(0, self.bus_name.as_str())
            .map_err(fail)?
            .build();
        let gone =
            MessageIterator::for_match_rule(gone_rule, self.connection, None).map_err(fail)?;
        // The daemon may have left between the owner lookup and the subscriptions.
        if self.owner()? != owner {
            return Err(Fail::new(
                exit::UNAVAILABLE,
                format!("{}: the daemon restarted; try again", self.instance),
            ));
        }
        Ok(SignalWatch::start(signals, gone, owner))
    }
}

/// Something [`SignalWatch`] saw.
enum Watched {
    Signal(Message),
    /// The daemon's name changed owner (it stopped or was replaced).
    OwnerGone,
    Timeout,
}

/// Two blocking message iterators read on their own threads and merged into one channel.
struct SignalWatch {
    rx: mpsc::Receiver<Watched>,
}

impl SignalWatch {
    fn start(signals: MessageIterator, gone: MessageIterator, owner: String) -> SignalWatch {
        let (tx, rx) = mpsc::channel();
        let signal_tx = tx.clone();
        std::thread::spawn(move || {
            for message in signals.flatten() {
                if signal_tx.send(Watched::Signal(message)).is_err() {
                    return;
                }
            }
            let _ = signal_tx.send(Watched::OwnerGone);
        });
        std::thread::spawn(move || {
            for message in gone.flatten() {
                let Ok((_, old, _)) = message.body().deserialize::<(String, String, String)>()
                else {
                    continue;
                };
                if old == owner {
                    let _ = tx.send(Watched::OwnerGone);
                    return;
                }
            }
        });
        SignalWatch { rx }
    }

    fn next(&self, timeout: Duration) -> Option<Watched> {
        match self.rx.recv_timeout(timeout) {
            Ok(watched) => Some(watched),
            Err(mpsc::RecvTimeoutError::Timeout) => Some(Watched::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    }
}

/// Reads one of the daemon's signals through the types generated with the proxy.
fn parse_signal(message: &Message) -> Option<Seen> {
    if let Some(signal) = SyncFailed::from_message(message.clone()) {
        let args = signal.args().ok()?;
        return Some(Seen::SyncFailed {
            remote: args.remote,
            path: args.path,
            rsync_exit: args.rsync_exit,
            message: args.message,
        });
    }
    if let Some(signal) = FullSyncFinished::from_message(message.clone()) {
        let args = signal.args().ok()?;
        return Some(Seen::FullSyncFinished {
            job_id: args.job_id,
            root: args.root,
            success: args.success,
        });
    }
    if let Some(signal) = FullSyncProgress::from_message(message.clone()) {
        let args = signal.args().ok()?;
        return Some(Seen::FullSyncProgress {
            remote: args.remote,
            progress: args.progress,
        });
    }
    if let Some(signal) = StateChanged::from_message(message.clone()) {
        let args = signal.args().ok()?;
        return Some(Seen::StateChanged {
            remote: args.remote,
            state: args.state,
        });
    }
    let header = message.header();
    if header.interface().map(|i| i.as_str()) == Some("org.freedesktop.DBus.Properties")
        && header.member().map(|m| m.as_str()) == Some("PropertiesChanged")
    {
        let (_, changed, _): (
            String,
            std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
            Vec<String>,
        ) = message.body().deserialize().ok()?;
        let mut changed: Vec<(String, serde_json::Value)> = changed
            .iter()
            .map(|(name, value)| (name.clone(), render::value_json(value)))
            .collect();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        return Some(Seen::PropertiesChanged(changed));
    }
    None
}

/// How `full-sync --wait` shows progress: on a terminal, one line per remote rewritten in
/// place (a bar); otherwise a plain line per remote at most every [`PLAIN_EVERY`], so a
/// timer unit's journal is not flooded.
struct ProgressShown {
    /// Only the remotes of this root (`ROOT -> remote`), if `--root` was given.
    prefix: Option<String>,
    terminal: bool,
    last: Vec<(String, Instant)>,
    /// A bar is on the line now (the next message starts a new line).
    open: bool,
}

const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl ProgressShown {
    fn new(root: Option<&Path>) -> ProgressShown {
        use std::io::IsTerminal;
        ProgressShown {
            prefix: root.map(|r| format!("{} -> ", r.display())),
            terminal: std::io::stdout().is_terminal(),
            last: Vec::new(),
            open: false,
        }
    }

    fn show(&mut self, remote: &str, progress: &crate::control::wire::ProgressInfo) {
        use std::io::Write;
        if self.prefix.as_ref().is_some_and(|p| !remote.starts_with(p)) {
            return;
        }
        if self.terminal {
            print!("\r\x1b[K{remote}: {}", render::progress_bar(progress, 24));
            let _ = std::io::stdout().flush();
            self.open = true;
            return;
        }
        let due = match self.last.iter_mut().find(|(r, _)| r == remote) {
            Some((_, at)) if at.elapsed() < PLAIN_EVERY => false,
            Some((_, at)) => {
                *at = Instant::now();
                true
            }
            None => {
                self.last.push((remote.to_owned(), Instant::now()));
                true
            }
        };
        if due {
            println!("{remote}: full sync {}", render::progress_text(progress));
        }
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.open) {
            println!();
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_command_line_is_known_to_be_meant_for_health() {
        let table: [(&[&str], bool); 8] = [
            (&["sersyncctl", "health", "--warn-lag", "x"], true),
            (&["sersyncctl", "-i", "web", "health", "--bogus"], true),
            (
                &["sersyncctl", "--bus-address", "unix:path=/b", "health"],
                true,
            ),
            (
                &["sersyncctl", "--json", "health", "--crit-failed", "-1"],
                true,
            ),
            // `health` as the value of -i is not the subcommand.
            (&["sersyncctl", "-i", "health", "status", "--bogus"], false),
            (&["sersyncctl", "status", "health"], false),
            (&["sersyncctl", "--bogus"], false),
            (&["sersyncctl"], false),
        ];
        for (args, want) in table {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            assert_eq!(meant_health(&args), want, "{args:?}");
        }
    }

    #[test]
    fn health_thresholds_come_from_the_flags() {
        let cli = Cli::try_parse_from(["sersyncctl", "health"]).unwrap();
        let CtlCommand::Health(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.thresholds(), health::DEFAULT_THRESHOLDS);
        let cli = Cli::try_parse_from([
            "sersyncctl",
            "health",
            "--warn-lag",
            "0.5",
            "--crit-lag",
            "2",
            "--warn-failed",
            "3",
            "--crit-failed",
            "10",
        ])
        .unwrap();
        let CtlCommand::Health(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args.thresholds(),
            health::Thresholds {
                warn_lag: Some(0.5),
                crit_lag: Some(2.0),
                warn_failed: Some(3),
                crit_failed: Some(10),
            }
        );
        for bad in [
            &["sersyncctl", "health", "--warn-lag", "-1"][..],
            &["sersyncctl", "health", "--crit-lag", "inf"],
            &["sersyncctl", "health", "--crit-lag", "NaN"],
            &["sersyncctl", "health", "--warn-failed", "-1"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
