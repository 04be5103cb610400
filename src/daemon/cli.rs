//! The `sersyncd` command line: sersync2's flags (`-o -r -n -d -m -h`) plus long forms.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Parser, ValueEnum};

pub use crate::control::BusKind;

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogTarget {
    /// journald when started by systemd with the journal on stderr, otherwise stderr.
    Auto,
    /// The systemd journal, with structured fields.
    Journald,
    /// Plain text on stderr.
    Stderr,
}

/// Real-time replication of directory trees to rsync daemons (sersync 2.5 compatible).
#[derive(Debug, Clone, Parser)]
#[command(name = "sersyncd", version, about, long_about = None)]
pub struct Cli {
    /// Config file (sersync 2.5 confxml.xml schema).
    #[arg(
        short = 'o',
        long = "config",
        value_name = "FILE",
        default_value = "./confxml.xml"
    )]
    pub config: PathBuf,

    /// Push every watched tree to every remote once the watches are in place.
    #[arg(short = 'r', long = "full-sync-first")]
    pub full_sync_first: bool,

    /// Maximum number of rsync processes running at once (0 means the default).
    #[arg(
        short = 'n',
        long = "workers",
        value_name = "NUM",
        default_value_t = 10
    )]
    pub workers: usize,

    /// Detach from the terminal like a classic daemon (not needed under systemd).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Run only this plugin on the watched trees' events, without rsync.
    #[arg(short = 'm', long = "module", value_name = "NAME")]
    pub module: Option<String>,

    /// Validate the config (and with -m, the plugin named) and exit: 0 when valid, 78 with
    /// diagnostics otherwise, 64 when -m names no configured plugin.
    #[arg(long = "check")]
    pub check: bool,

    /// Directory for the failure journal, pending changes and the failure script
    /// [default: $STATE_DIRECTORY, else /var/lib/sersync/INSTANCE].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Instance name used in logs, status and D-Bus [default: the config file's stem].
    #[arg(long = "instance", value_name = "NAME")]
    pub instance: Option<String>,

    /// Log each event and each rsync command line (like `<debug start="true">`).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Where to log.
    #[arg(long = "log", value_enum, default_value_t = LogTarget::Auto)]
    pub log: LogTarget,

    /// Which D-Bus bus to offer the control interface on.
    #[arg(long = "bus", value_enum, default_value_t = BusKind::System)]
    pub bus: BusKind,

    /// Connect to this D-Bus address instead (e.g. a private bus in tests).
    #[arg(long = "bus-address", value_name = "ADDRESS")]
    pub bus_address: Option<String>,

    /// Do not offer the D-Bus control interface at all.
    #[arg(long = "no-dbus")]
    pub no_dbus: bool,

    /// Answer Prometheus scrapes (GET /metrics) on this IP:PORT, e.g. 127.0.0.1:9150
    /// (instead of the config's <metrics listen>).
    #[arg(
        long = "metrics-listen",
        value_name = "IP:PORT",
        value_parser = crate::config::parse_listen_address
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// How to watch the roots: inotify (one watch per directory), fanotify (one mark per
    /// filesystem; needs CAP_SYS_ADMIN, exits 78 where refused) or auto (fanotify where
    /// it works, else inotify) [default: the config's <watch backend>, else inotify].
    #[arg(
        long = "watch-backend",
        value_name = "BACKEND",
        value_parser = clap::builder::PossibleValuesParser::new(crate::config::WatchBackend::NAMES)
            .map(|name| crate::config::parse_watch_backend(&name).unwrap_or_default())
    )]
    pub watch_backend: Option<crate::config::WatchBackend>,
}

impl Cli {
    /// The instance name: `--instance`, else the config file's stem.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            self.config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "sersync".to_owned())
        })
    }

    /// The state directory: `--state-dir`, `$STATE_DIRECTORY` (first entry), or
    /// `/var/lib/sersync/<instance>`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
            let dirs = dirs.to_string_lossy().into_owned();
            if let Some(first) = dirs.split(':').find(|d| !d.is_empty()) {
                return PathBuf::from(first);
            }
        }
        PathBuf::from("/var/lib/sersync").join(self.instance_name())
    }

    /// `-n 0` means the default, as in sersync2.
    pub fn worker_limit(&self) -> usize {
        if self.workers == 0 { 10 } else { self.workers }
    }
}
