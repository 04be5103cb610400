//! The sersync 2.5 `confxml.xml` schema as typed, validated, immutable data.
//!
//! Everything the daemon does is decided by a [`Config`]; nothing downstream re-reads the
//! XML. Loading never stops at the first problem: [`load`] returns every error of a file at
//! once, each as a [`Diagnostic`] naming `file:line:col`, so an operator fixes a config in
//! one round trip. Warnings (unknown elements, a watch root that does not exist yet) are
//! returned beside a successful config.

pub mod check;
mod diag;
mod schema;
mod source;
#[cfg(test)]
mod tests;
mod words;
mod xml;

pub use diag::{Diagnostic, Severity};
pub use words::split_words;

use regex::bytes::Regex;

use crate::http_url::HttpUrl;
use std::path::{Path, PathBuf};

/// Index of a `<localpath>` in [`Config::roots`].
pub type RootId = usize;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (as given, for messages).
    pub file: PathBuf,
    /// `<host hostip port>`: parsed and kept for compatibility, unused (as in the original).
    pub host: HostSection,
    /// `<debug start>`: log every event and every rsync argv.
    pub debug: bool,
    /// `<fileSystem xfs>`: always `stat()` to tell directories (DT_UNKNOWN filesystems).
    pub xfs: bool,
    /// `<filter start>` with its `<exclude expression>` regexes.
    pub filter: Filter,
    /// `<ignoreTempFiles start>` (ours): drop the original's built-in temp-file names
    /// (non-directories starting with `.` or ending with `~`, and `4913`). Default true.
    pub ignore_temp_files: bool,
    /// `<inotify>` toggles.
    pub events: EventToggles,
    /// Every `<sersync><localpath>`, in file order (the original used only the first).
    pub roots: Vec<WatchRoot>,
    /// `<sersync><rsync>`.
    pub rsync: RsyncOptions,
    /// `<sersync><failLog>`.
    pub fail_log: FailLog,
    /// `<sersync><crontab>`.
    pub crontab: Crontab,
    /// `<sersync><plugin start name>` and the top-level `<plugin name=...>` sections.
    pub plugins: Plugins,
    /// `<sersync><deleteGuard share minimum sentinel>` (ours): see [`crate::guard`].
    pub delete_guard: DeleteGuard,
    /// `<sersync><queue maxPending>` (ours): the cap of pending paths per remote of a
    /// root, above which they are folded into dirty directories (see
    /// [`crate::queue::Queue::set_max_pending`]).
    pub max_pending: usize,
    /// `<sersync><queue largeFiles>` (ours): files of at least this many bytes go out in a
    /// run of their own per remote, next to the batches of small files (see
    /// [`crate::queue::Queue::hand_large`]); `None`: never (`largeFiles="0"`, or two-way mode).
    pub large_files: Option<u64>,
    /// `<sersync><metrics listen>` (ours): where `sersyncd` answers Prometheus scrapes
    /// (`GET /metrics`); `None`: nowhere. `sersyncd --metrics-listen` wins over it.
    pub metrics: Option<MetricsListen>,
    /// `<sersync><watch backend>` (ours): how the roots are watched; `None` when absent
    /// (inotify). `sersyncd --watch-backend` wins over it.
    pub watch_backend: Option<WatchBackend>,
}

/// How the roots are watched: `<watch backend>` and `sersyncd --watch-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchBackend {
    /// fanotify where the kernel, the privileges and the filesystem allow it, else inotify
    /// (one log line says why); never fails where inotify works.
    Auto,
    /// One inotify watch per directory (the default).
    #[default]
    Inotify,
    /// One fanotify filesystem mark per filesystem (needs `CAP_SYS_ADMIN` and Linux 5.17);
    /// a refusal is a configuration error (exit 78).
    Fanotify,
}

impl WatchBackend {
    pub const NAMES: [&'static str; 3] = ["auto", "inotify", "fanotify"];

    pub fn name(self) -> &'static str {
        match self {
            WatchBackend::Auto => "auto",
            WatchBackend::Inotify => "inotify",
            WatchBackend::Fanotify => "fanotify",
        }
    }
}

/// Reads a watch backend name (for `<watch backend>` and `sersyncd --watch-backend`
/// alike); the error says what is expected.
pub fn parse_watch_backend(text: &str) -> Result<WatchBackend, String> {
    match text.trim() {
        "auto" => Ok(WatchBackend::Auto),
        "inotify" => Ok(WatchBackend::Inotify),
        "fanotify" => Ok(WatchBackend::Fanotify),
        _ => Err(format!(
            "invalid watch backend \"{text}\": expected auto, inotify or fanotify"
        )),
    }
}

/// `<metrics listen="IP:PORT"/>`: the address of the metrics listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen {
    pub address: std::net::SocketAddr,
    /// 1-based line of the `<metrics>` element.
    pub line: usize,
}

/// Reads a listen address: an IP address and a port from 1 to 65535 (`127.0.0.1:9150`,
/// `[::1]:9150`, `0.0.0.0:9150`). Host names are refused: resolving one would make the
/// config's meaning depend on the resolver at the time it is read. The error says what
/// is expected (for `<metrics listen>` and `sersyncd --metrics-listen` alike).
pub fn parse_listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    match text.trim().parse::<std::net::SocketAddr>() {
        Ok(address) if address.port() != 0 => Ok(address),
        _ => Err(format!(
            "invalid listen address \"{text}\": expected IP:PORT with a port from 1 to 65535 \
             (e.g. 127.0.0.1:9150, or [::1]:9150 for IPv6; no host names)"
        )),
    }
}

/// The default of `<queue maxPending>`: the cap of pending paths per lane (see
/// [`crate::queue::Queue::set_max_pending`]).
pub const DEFAULT_MAX_PENDING: usize = 100_000;

/// The default of `<queue largeFiles>`: 64 MiB.
pub const DEFAULT_LARGE_FILES: u64 = 64 << 20;

/// A size as `<queue largeFiles>` takes it: bytes, or a whole number with a binary suffix
/// `K`, `M`, `G` or `T` (`64M` is 64 MiB; a trailing `B` or `iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let unit = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match unit.chars().last() {
        Some('K') => (&unit[..unit.len() - 1], 10),
        Some('M') => (&unit[..unit.len() - 1], 20),
        Some('G') => (&unit[..unit.len() - 1], 30),
        Some('T') => (&unit[..unit.len() - 1], 40),
        _ => (unit, 0),
    };
    let number: u64 = digits.trim().parse().map_err(|_| {
        format!(
            "invalid size \"{text}\": expected bytes or a whole number with K, M, G or T (e.g. 64M)"
        )
    })?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

/// `<deleteGuard>`: when deletions are held instead of run (see [`crate::guard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGuard {
    /// Live deletions in one minute that would remove more than this percentage of a
    /// root's entries are held (0: never by share).
    pub share: u32,
    /// Fewer deletions than this in a minute are never held by share.
    pub minimum: u32,
    /// More deletions than this (in a minute, or in one full sync) are held whatever
    /// share of the tree they are (`None`: no such limit).
    pub maximum: Option<u32>,
    /// A file that must exist in every root for a run that deletes (relative to the root).
    pub sentinel: Option<String>,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            share: 50,
            minimum: 100,
            maximum: None,
            sentinel: None,
        }
    }
}

/// `<host hostip port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSection {
    pub ip: String,
    pub port: u16,
}

/// One compiled exclude regex with where it came from.
#[derive(Debug, Clone)]
pub struct ExcludeRegex {
    /// The expression as written in the file.
    pub expression: String,
    /// Compiled as a whole-string match (`^(?:expr)$`), like boost's `regex_match`, and
    /// byte-wise like boost on a `std::string`: `.` matches any byte (newline included), so
    /// paths that are not UTF-8 still match `(.*)\.svn`; `\w` `\d` `\s` are ASCII. Only an
    /// expression that needs Unicode (`[é]`, `\p{Han}`) is compiled in Unicode mode.
    pub regex: Regex,
    /// 1-based line of the `<exclude>` element.
    pub line: usize,
}

/// `<filter start>`: exclude regexes matched against the path relative to the watch root,
/// without a leading slash (`sub/dir/name`), at any depth; directories are tested both as
/// `dir` and `dir/`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub enabled: bool,
    pub excludes: Vec<ExcludeRegex>,
}

impl Filter {
    /// True when `relative` (no leading slash) must not be synced.
    pub fn excludes(&self, relative: &[u8], is_dir: bool) -> bool {
        if !self.enabled {
            return false;
        }
        self.excludes.iter().any(|ex| {
            ex.regex.is_match(relative)
                || (is_dir && {
                    let mut with_slash = relative.to_vec();
                    with_slash.push(b'/');
                    ex.regex.is_match(&with_slash)
                })
        })
    }
}

/// `<inotify>`: which kernel events turn into syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventToggles {
    pub delete: bool,
    pub create_folder: bool,
    pub create_file: bool,
    pub close_write: bool,
    pub move_from: bool,
    pub move_to: bool,
    pub attrib: bool,
    pub modify: bool,
}

impl Default for EventToggles {
    /// The values of the shipped sersync 2.5.4 `confxml.xml`.
    fn default() -> Self {
        EventToggles {
            delete: true,
            create_folder: true,
            create_file: false,
            close_write: true,
            move_from: true,
            move_to: true,
            attrib: false,
            modify: false,
        }
    }
}

/// One `<localpath watch>` and its remotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRoot {
    /// Absolute, without a trailing slash (except `/` itself).
    pub path: PathBuf,
    pub remotes: Vec<Remote>,
    /// 1-based line of the `<localpath>` element.
    pub line: usize,
    /// Whose privileges rsync runs with for this root (`<localpath user>`).
    pub run_as: RunAs,
}

/// The user rsync runs as for a root: least privilege, so that a run cannot read what the
/// tree's owner could not (a directory swapped for a symlink to a private one between an
/// event and the run is then refused by the kernel, not published).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunAs {
    /// No `user` attribute: the owner of the watch root (root for a root-owned tree).
    #[default]
    RootOwner,
    /// `user="NAME"`, which exists in the user database (`root` keeps full privileges).
    User(String),
}

/// `<remote ip name>`: an rsync daemon module, or with `<ssh>` a host and remote path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Host name or address as written (an IPv6 literal is allowed without brackets).
    pub ip: String,
    /// rsync daemon module, or the remote directory with ssh.
    pub name: String,
}

impl Remote {
    /// Short human name used in logs and status: `ip::name` (daemon) or `ip:name` (ssh).
    pub fn label(&self, ssh: bool) -> String {
        if ssh {
            format!("{}:{}", self.ip, self.name)
        } else {
            format!("{}::{}", self.ip, self.name)
        }
    }
}

/// `<sersync><rsync>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncOptions {
    /// `<commonParams params>` split into words like a POSIX shell would (quotes honoured,
    /// no expansion). Default `-artuz`.
    pub common_params: Vec<String>,
    /// `<auth start users passwordfile>` when start is true.
    pub auth: Option<Auth>,
    /// `<userDefinedPort start port>` when start is true.
    pub port: Option<u16>,
    /// `<timeout start time>` when start is true (seconds).
    pub timeout: Option<u32>,
    /// `<ssh start>`.
    pub ssh: bool,
    /// `<ssh master>` (ours, on by default): over ssh, one connection master per remote
    /// (OpenSSH `ControlMaster`), started and owned by sersyncd, that every rsync opens its
    /// session over (see `crate::sync::master`).
    pub ssh_master: bool,
    /// `<sersync><softDelete start dir keepDays>` (ours) when start is true.
    pub soft_delete: Option<SoftDelete>,
    /// `<sersync><twoWay start>` (ours): this host and its remote replicate to each other
    /// (see [`crate::sync::two_way`]).
    pub two_way: bool,
    /// `<rsync><warm start idle>` (ours, on by default): small batches go to an rsync
    /// started beforehand and already connected (see `crate::sync::warm`); `None` when
    /// `start="false"`.
    pub warm: Option<Warm>,
}

/// `<rsync><warm>`: one pre-connected rsync per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warm {
    /// A warm rsync idle this long is ended and replaced (before a remote's own idle
    /// timeout ends it): `idle` seconds, default [`Warm::DEFAULT_IDLE_SECS`].
    pub idle_secs: u32,
}

impl Warm {
    /// Below the 60 s that rsync daemons and sshd setups commonly use as an idle timeout.
    pub const DEFAULT_IDLE_SECS: u32 = 30;
}

/// `<softDelete>`: what a run deletes or overwrites on a remote is moved into a dated
/// directory there instead (rsync `--backup --backup-dir`), kept for `keep_days`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftDelete {
    /// Relative to the module (or ssh target directory), one path component.
    pub dir: String,
    /// Dated directories older than this are pruned by the daemon.
    pub keep_days: u32,
}

impl Default for SoftDelete {
    fn default() -> Self {
        SoftDelete {
            dir: ".sersync-trash".to_owned(),
            keep_days: 30,
        }
    }
}

impl Default for RsyncOptions {
    fn default() -> Self {
        RsyncOptions {
            // sersync 2.5 ships `-artuz`; `-u` is dropped (see `schema::drop_update`).
            common_params: vec!["-artz".to_owned()],
            auth: None,
            port: None,
            timeout: None,
            ssh: false,
            ssh_master: true,
            soft_delete: None,
            two_way: false,
            warm: Some(Warm {
                idle_secs: Warm::DEFAULT_IDLE_SECS,
            }),
        }
    }
}

/// `<auth>`: rsync daemon user and the client password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: String,
    pub password_file: PathBuf,
}

/// `<failLog path timeToExecute>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailLog {
    /// As written; a relative path resolves against the state directory.
    pub path: PathBuf,
    /// Minutes between replays of the failure journal (default 60).
    pub interval_minutes: u32,
}

impl FailLog {
    /// Time between replays of the failure journal (at least a minute).
    pub fn interval(&self) -> std::time::Duration {
        minutes(self.interval_minutes)
    }
}

fn minutes(count: u32) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(count.max(1)) * 60)
}

impl Default for FailLog {
    fn default() -> Self {
        FailLog {
            path: PathBuf::from("rsync_fail_log.sh"),
            interval_minutes: 60,
        }
    }
}

/// `<crontab start schedule>` and `<crontabfilter>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crontab {
    pub enabled: bool,
    /// Minutes between periodic full syncs (≤0 or non-numeric means 600, as the original).
    pub schedule_minutes: u32,
    /// `<crontabfilter start>`.
    pub filter_enabled: bool,
    /// rsync glob patterns passed as `--exclude=PAT` to the periodic full sync.
    pub excludes: Vec<String>,
}

impl Crontab {
    /// Time between periodic full syncs (at least a minute).
    pub fn interval(&self) -> std::time::Duration {
        minutes(self.schedule_minutes)
    }
}

impl Default for Crontab {
    fn default() -> Self {
        Crontab {
            enabled: false,
            schedule_minutes: 600,
            filter_enabled: false,
            excludes: Vec::new(),
        }
    }
}

/// Plugin configuration: which plugin runs after syncs, and every plugin's section.
#[derive(Debug, Clone, Default)]
pub struct Plugins {
    /// `<sersync><plugin start="true" name>`: the plugin run after each delivered change.
    pub after_sync: Option<PluginKind>,
    pub command: Option<CommandPlugin>,
    pub socket: Option<SocketPlugin>,
    pub refresh_cdn: Option<RefreshCdnPlugin>,
    pub http: Option<HttpPlugin>,
}

/// The plugins sersync knows, by their `<plugin name>`: what was configured here, and
/// what the plugin host is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Command,
    Socket,
    RefreshCdn,
    Http,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Command,
        PluginKind::Socket,
        PluginKind::RefreshCdn,
        PluginKind::Http,
    ];

    /// The name as sersync spells it (`command`, `socket`, `refreshCDN`, `http`).
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Command => "command",
            PluginKind::Socket => "socket",
            PluginKind::RefreshCdn => "refreshCDN",
            PluginKind::Http => "http",
        }
    }

    /// Looks a name up ignoring ASCII case (and surrounding blanks).
    pub fn from_name(name: &str) -> Option<PluginKind> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

/// The section of the plugin to run, as [`Config::plugin_to_run`] chose it.
#[derive(Debug, Clone, Copy)]
pub enum PluginSection<'a> {
    Command(&'a CommandPlugin),
    Socket(&'a SocketPlugin),
    RefreshCdn(&'a RefreshCdnPlugin),
    Http(&'a HttpPlugin),
}

impl PluginSection<'_> {
    pub fn kind(self) -> PluginKind {
        match self {
            PluginSection::Command(_) => PluginKind::Command,
            PluginSection::Socket(_) => PluginKind::Socket,
            PluginSection::RefreshCdn(_) => PluginKind::RefreshCdn,
            PluginSection::Http(_) => PluginKind::Http,
        }
    }
}

impl Config {
    /// The plugin to run and its section: with `only = Some(NAME)` the one of `sersyncd -m
    /// NAME`, else the one `<sersync><plugin start="true" name>` enables; `Ok(None)` when
    /// there is none. `Err` (for the operator) when `NAME` is not a plugin or its section is
    /// missing or unusable; without `only`, a config that loaded never fails here (the
    /// schema checked the name and the section).
    pub fn plugin_to_run(&self, only: Option<&str>) -> Result<Option<PluginSection<'_>>, String> {
        let kind = match (only, self.plugins.after_sync) {
            (Some(name), _) => PluginKind::from_name(name).ok_or_else(|| {
                format!("unknown plugin \"{name}\": expected command, socket, refreshCDN or http")
            })?,
            (None, Some(kind)) => kind,
            (None, None) => return Ok(None),
        };
        let plugins = &self.plugins;
        let section = match kind {
            PluginKind::Command => plugins.command.as_ref().map(PluginSection::Command),
            PluginKind::Socket => plugins.socket.as_ref().map(PluginSection::Socket),
            PluginKind::RefreshCdn => plugins.refresh_cdn.as_ref().map(PluginSection::RefreshCdn),
            PluginKind::Http => plugins.http.as_ref().map(PluginSection::Http),
        };
        match section {
            Some(section) => Ok(Some(section)),
            None => Err(format!(
                "plugin \"{0}\" is enabled but {1} has no usable <plugin name=\"{0}\"> section",
                kind.name(),
                self.file.display()
            )),
        }
    }
}

/// `<plugin name="command">`.
#[derive(Debug, Clone)]
pub struct CommandPlugin {
    /// `prefix` as written (for messages).
    pub prefix: String,
    /// `suffix` as written (for messages).
    pub suffix: String,
    /// `prefix` split into argv words with [`split_words`]: the command and its leading
    /// arguments, before the changed path.
    pub prefix_words: Vec<String>,
    /// `suffix` split into argv words with [`split_words`]: arguments after the path.
    pub suffix_words: Vec<String>,
    pub ignore_error: bool,
    pub filter_enabled: bool,
    /// Whole-string regexes on the absolute path.
    pub includes: Vec<ExcludeRegex>,
    /// `<param timeout>` (ours): seconds a command may run before it is killed. Default 60.
    pub timeout_secs: u32,
}

/// `<plugin name="socket">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPlugin {
    pub watch: PathBuf,
    pub host: String,
    pub port: u16,
    /// `<deshost framing>` (ours); default [`SocketFraming::Raw`], as sersync 2.5.
    pub framing: SocketFraming,
}

/// How the socket plugin delimits paths on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketFraming {
    /// sersync 2.5: a new TCP connection per path; the raw path bytes; close. The receiver
    /// reads until EOF.
    #[default]
    Raw,
    /// One persistent connection (reconnected with backoff); each path followed by `\n`.
    /// A path containing a newline cannot be sent this way and counts as failed.
    Newline,
    /// One persistent connection (reconnected with backoff); each path followed by a NUL
    /// byte, which no path can contain.
    Nul,
}

/// `<header name value>` (ours): an extra request header of the http plugin or of a
/// `<purge>` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `<purge url method body timeout retries>` with `<header>` children (ours): the generic
/// CDN purge request of the refreshCDN plugin, used instead of the ChinaCache API when
/// present. `url`, `body` and header values are templates: `{path}`, `{url}`, `{path_q}`,
/// `{url_q}`, `{is_dir}` and `{event}` are replaced per change (see `crate::http_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRequest {
    /// An `http://` URL template (placeholders only in the path and query).
    pub url: String,
    /// Default `PURGE` (Varnish, nginx, Squid).
    pub method: String,
    pub headers: Vec<HttpHeader>,
    /// Request body template; `None` sends no body.
    pub body: Option<String>,
    /// Seconds per attempt (default 5).
    pub timeout_secs: u32,
    /// Extra attempts after a transport error, 5xx, 408 or 429 (default 2).
    pub retries: u32,
}

/// `<plugin name="refreshCDN">`.
#[derive(Debug, Clone)]
pub struct RefreshCdnPlugin {
    pub watch: PathBuf,
    pub domain_name: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub send_url_base: String,
    pub regex_enabled: bool,
    pub regex_match: String,
    /// `regex_match` compiled (unanchored, like the original's `regex_search`) when
    /// `regex_enabled`; same byte-wise flags as the filter regexes.
    pub match_regex: Option<Regex>,
    /// `<purge>` (ours): a generic purge request instead of the ChinaCache API. With it,
    /// `<cdninfo>` is optional (`domain_name` is then empty and `port` 80).
    pub purge: Option<PurgeRequest>,
}

/// `<plugin name="http">` (dropped by the original; implemented by us): POST a JSON
/// description of each change to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPlugin {
    pub watch: PathBuf,
    /// `<deshost url>`, parsed when read (https needs a local TLS proxy), with
    /// `<deshost port>` as its port when it names none.
    pub url: HttpUrl,
    /// `<deshost timeout>` (ours): seconds per attempt, default 5.
    pub timeout_secs: u32,
    /// `<deshost retries>` (ours): extra attempts after a transport error, 5xx, 408 or
    /// 429, default 3.
    pub retries: u32,
    /// `<deshost><header name value>` (ours).
    pub headers: Vec<HttpHeader>,
}

/// The outcome of reading a config file: the config plus warnings, or every error found.
///
/// Both sides are sorted by position (whole-file problems first). The error side also
/// carries the warnings, since one often explains an error (a misspelt `<remote>` is an
/// unknown element *and* leaves its `<localpath>` without remotes).
pub type LoadResult = Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>>;

/// Reads, decodes (UTF-8, or ISO-8859-1 when the bytes are not UTF-8), parses and validates
/// a config file.
pub fn load(path: &Path) -> LoadResult {
    match read_config_file(path) {
        Ok(bytes) => parse(path, &bytes),
        Err(message) => Err(vec![Diagnostic::file_error(path, message)]),
    }
}

/// The largest config file accepted; sersync 2.5's own is 2 KiB.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a config file that must be a regular file of at most [`MAX_CONFIG_BYTES`]. It is
/// opened without blocking, so a FIFO (or a device) is refused instead of hanging, and
/// `/dev/zero` cannot fill memory.
fn read_config_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| format!("cannot read config file: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read config file: {err}"))?;
    if !meta.is_file() {
        let kind = file_kind(&meta);
        return Err(format!(
            "cannot read config file: it is {kind}, not a regular file"
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read config file: {} bytes, more than the {} a config may have",
            meta.len(),
            MAX_CONFIG_BYTES
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read config file: {err}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read config file: more than the {MAX_CONFIG_BYTES} bytes a config may have"
        ));
    }
    Ok(bytes)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Loads `path` and prints its diagnostics to stderr the one way both binaries do (each
/// diagnostic, then for errors a `FILE: N errors in config, nothing started` line).
/// `None` means the config was rejected (exit 78).
pub fn load_and_report(path: &Path) -> Option<Config> {
    match load(path) {
        Ok((config, warnings)) => {
            for warning in warnings {
                eprintln!("{warning}");
            }
            Some(config)
        }
        Err(diagnostics) => {
            print_rejection(path, &diagnostics);
            None
        }
    }
}

/// Prints the diagnostics of a rejected config, then `FILE: N errors in config, nothing
/// started`.
fn print_rejection(path: &Path, diagnostics: &[Diagnostic]) {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
    eprintln!(
        "{}: {errors} error{} in config, nothing started",
        path.display(),
        if errors == 1 { "" } else { "s" }
    );
}

/// Like [`load`], from bytes already in memory; `path` is used for messages and for nothing
/// else.
pub fn parse(path: &Path, bytes: &[u8]) -> LoadResult {
    xml::parse(path, bytes)
}
