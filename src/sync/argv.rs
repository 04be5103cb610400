//! rsync argument vectors: pure functions of the config, tested by tables.
//!
//! Every rsync run is an argv (never a shell string). Incremental batches send an exact,
//! NUL-separated list of paths on stdin (what exists is sent; what no longer exists is
//! deleted by a separate deletion run, see [`deletion`]), and nothing that is not
//! listed is touched (`--no-recursive` after the user's params, because our `<filter>` is
//! applied by sersyncd and rsync must not recurse into excluded entries).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::config::{Remote, RsyncOptions};

/// Where rsync pushes to, and with which transport options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub options: RsyncOptions,
    pub remote: Remote,
    /// sersyncd hands rsync the daemon password through a pipe instead of the configured
    /// `--password-file` (rsync runs as a user who may not read the file; see
    /// [`super::identity`]), and adds the option for it itself.
    pub password_piped: bool,
    /// The day (UTC, `YYYY-MM-DD`) the run's `<softDelete>` directory is named after: set
    /// when a job starts ([`utc_date`]), so that building an argv reads no clock.
    pub today: String,
    /// Over ssh: the control socket of the remote's connection master (`super::master`),
    /// set when a job starts; its rsyncs then open their session over that connection
    /// ([`rsh_over_master`]). `None`: they connect on their own (and the failure script's
    /// lines never name it: the socket lives only as long as the daemon).
    pub control_path: Option<std::path::PathBuf>,
}

impl Transport {
    /// `rsync://[user@]host[:port]/module/` for the daemon, `[user@]host:dir/` for ssh.
    pub fn destination(&self) -> OsString {
        let user = self
            .options
            .auth
            .as_ref()
            .map(|auth| format!("{}@", auth.user))
            .unwrap_or_default();
        let ip = &self.remote.ip;
        let mut name = self.remote.name.clone();
        if !name.ends_with('/') {
            name.push('/');
        }
        if self.options.ssh {
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.clone()
            };
            OsString::from(format!("{user}{host}:{name}"))
        } else {
            let host = if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]")
            } else {
                ip.clone()
            };
            let port = self
                .options
                .port
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            let name = name.trim_start_matches('/');
            OsString::from(format!("rsync://{user}{host}{port}/{name}"))
        }
    }

    /// Options every run carries: the user's `commonParams`, then what the config's
    /// transport elements add.
    fn common(&self) -> Vec<OsString> {
        // The soft-delete rules first: rsync applies the first rule that matches, and a
        // user's `--include=*/` must not expose the soft-delete directory.
        let mut argv = self.own_directories_filters();
        argv.extend(self.user_params());
        argv.extend(self.transport_only());
        if self.options.two_way {
            // What rsync receives is written there first: the watcher on the receiving
            // side tells the peer's files by it (see `super::two_way`).
            argv.push(OsString::from(format!(
                "--temp-dir={}",
                super::two_way::INCOMING
            )));
        }
        argv
    }

    /// sersync's own directories at the top of a tree, never replicated: `<softDelete>`'s,
    /// and in two-way mode the incoming directory.
    pub fn own_directories(&self) -> Vec<&str> {
        let soft = self
            .options
            .soft_delete
            .as_ref()
            .map(|soft| soft.dir.as_str());
        let incoming = self.options.two_way.then_some(super::two_way::INCOMING);
        soft.into_iter().chain(incoming).collect()
    }

    /// The `P`/`-` rules for sersync's own directories in a tree: `<softDelete>`'s, and in
    /// two-way mode the incoming directory (none without either).
    fn own_directories_filters(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> =
            self.options
                .soft_delete
                .as_ref()
                .map_or_else(Vec::new, |soft| {
                    soft_delete_options(soft, "")
                        .into_iter()
                        .filter(|arg| arg.as_encoded_bytes().starts_with(b"--filter="))
                        .collect()
                });
        if self.options.two_way {
            let dir = super::two_way::INCOMING;
            argv.push(OsString::from(format!("--filter=P /{dir}/")));
            argv.push(OsString::from(format!("--filter=- /{dir}/")));
        }
        argv
    }

    fn user_params(&self) -> Vec<OsString> {
        self.options
            .common_params
            .iter()
            .map(OsString::from)
            .collect()
    }

    /// Transport options without the user's params (for runs whose semantics we fix),
    /// with `<softDelete>`'s for runs into the module's top (its directory is relative to
    /// the destination, and a daemon strips `../` from it).
    fn transport_only(&self) -> Vec<OsString> {
        let mut argv = self.connection();
        if let Some(soft) = &self.options.soft_delete {
            // Undated, the directory would never be pruned: every run sets the day.
            debug_assert!(!self.today.is_empty(), "a run with <softDelete> and no day");
            argv.extend(soft_delete_options(soft, &self.today));
        }
        argv
    }

    /// How to reach the remote, and nothing that changes what a run does there.
    fn connection(&self) -> Vec<OsString> {
        let mut argv = Vec::new();
        let user_sets = |prefix: &str| {
            self.options
                .common_params
                .iter()
                .any(|p| p.starts_with(prefix))
        };
        if self.options.ssh {
            // Every run gets the ssh command, the runs without the user's params too
            // (deletions, listings): the last `-e` wins, so after the user's it is the same.
            let rsh = rsh(self);
            argv.push(OsString::from("-e"));
            argv.push(OsString::from(match &self.control_path {
                Some(path) => rsh_over_master(&rsh, path),
                None => rsh,
            }));
        } else {
            // The daemon handshake stalls ~40 ms per round trip on Nagle + delayed ACK:
            // 140 ms → 15-30 ms per small push on loopback. Users can override it.
            if !user_sets("--sockopts") {
                argv.push(OsString::from("--sockopts=TCP_NODELAY"));
            }
            if let Some(auth) = self.options.auth.as_ref().filter(|_| !self.password_piped) {
                let mut arg = OsString::from("--password-file=");
                arg.push(&auth.password_file);
                argv.push(arg);
            }
        }
        // Every run gets a deadline for silence: without `<timeout>` a remote that
        // accepts the connection and then stops reading would hold its lane for ever.
        let (io, connect) = match self.options.timeout {
            Some(seconds) => (seconds, seconds),
            None => (DEFAULT_IO_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
        };
        argv.push(OsString::from(format!("--timeout={io}")));
        if !self.options.ssh {
            argv.push(OsString::from(format!("--contimeout={connect}")));
        }
        argv
    }
}

/// The ssh command rsync runs over `<ssh>` (its `-e`): the user's `-e`/`--rsh` in
/// `commonParams` (the last one, as rsync reads them), else `ssh`.
pub fn rsh(transport: &Transport) -> String {
    user_rsh(&transport.options.common_params).unwrap_or_else(|| "ssh".to_owned())
}

/// The value of the last `-e`/`--rsh` in `params`: `-e CMD`, `-eCMD`, `--rsh=CMD`,
/// `--rsh CMD`, and `-e` at the end of a cluster of short options (`-avze CMD`). A cluster
/// ends at the first short option that takes a value (rsync's `-e`, `-B`, `-f`, `-M`,
/// `-T`, `-@`), whose value is the rest of the word or the next word.
fn user_rsh(params: &[String]) -> Option<String> {
    let mut found = None;
    let mut words = params.iter();
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix("--rsh=") {
            found = Some(value.to_owned());
        } else if word == "--rsh" {
            found = words.next().cloned();
        } else if word == "--" {
            break;
        } else if let Some(cluster) = word.strip_prefix('-').filter(|c| !c.starts_with('-')) {
            for (at, letter) in cluster.char_indices() {
                if matches!(letter, 'e' | 'B' | 'f' | 'M' | 'T' | '@') {
                    let rest = &cluster[at + 1..];
                    let value = if rest.is_empty() {
                        words.next().cloned()
                    } else {
                        Some(rest.to_owned())
                    };
                    if letter == 'e' {
                        found = value;
                    }
                    break;
                }
            }
        }
    }
    found
}

/// The words rsync makes of an `-e` command (its own split, `do_cmd` in rsync's main.c):
/// separated by spaces; `'…'` and `"…"` quote, a doubled quote inside is one literal
/// quote; no backslash escapes, no expansion. `None` for an unterminated quote (rsync
/// refuses it).
pub fn split_rsh(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = command.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        loop {
            match (chars.next(), quote) {
                (None, None) => break,
                (None, Some(_)) => return None,
                (Some(' '), None) => break,
                (Some(c @ ('\'' | '"')), None) => quote = Some(c),
                (Some(c), Some(q)) if c == q => {
                    if chars.peek() == Some(&q) {
                        chars.next();
                        word.push(q);
                    } else {
                        quote = None;
                    }
                }
                (Some(c), _) => word.push(c),
            }
        }
        words.push(word);
    }
}

/// An ssh connection master's target: the ssh command's words (the user's `-e`, split as
/// rsync splits it), the login (`<auth users>`, as rsync passes it: `-l USER`) and the
/// host. Two lanes with the same target (and the same local user) share a master.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    pub words: Vec<String>,
    pub login: Option<String>,
    pub host: String,
}

impl SshTarget {
    /// The master for `transport` (`<ssh start="true" master="true">`), or `None`: not
    /// over ssh, masters off, a `-e` command that is not `ssh` itself (a wrapper could do
    /// anything with our options), or one that sets up connection sharing of its own
    /// (`ControlMaster`, `ControlPath`, `ControlPersist`, `-M`, `-S`).
    pub fn of(transport: &Transport) -> Option<SshTarget> {
        let options = &transport.options;
        if !options.ssh || !options.ssh_master {
            return None;
        }
        let words = split_rsh(&rsh(transport))?;
        let program = words.first()?;
        if program.rsplit('/').next() != Some("ssh") {
            return None;
        }
        let own_sharing = words.iter().skip(1).any(|word| {
            let lower = word.to_ascii_lowercase();
            lower.contains("controlmaster")
                || lower.contains("controlpath")
                || lower.contains("controlpersist")
                || word == "-M"
                || word.starts_with("-S")
        });
        if own_sharing {
            return None;
        }
        Some(SshTarget {
            words,
            login: options.auth.as_ref().map(|auth| auth.user.clone()),
            host: transport.remote.ip.clone(),
        })
    }

    /// The master's argv (program first): the ssh command with the control socket `path`,
    /// no command (`-N`), no prompt, keep-alives (a dead connection ends it within 45 s,
    /// and it is started again), then the login and host.
    pub fn master_argv(&self, path: &std::path::Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.words.iter().map(OsString::from).collect();
        let mut socket = OsString::from("ControlPath=");
        socket.push(path);
        for option in [
            OsString::from("ControlMaster=yes"),
            socket,
            OsString::from("ControlPersist=no"),
            OsString::from("BatchMode=yes"),
            OsString::from("ServerAliveInterval=15"),
            OsString::from("ServerAliveCountMax=3"),
        ] {
            argv.push(OsString::from("-o"));
            argv.push(option);
        }
        argv.push(OsString::from("-N"));
        if let Some(login) = &self.login {
            argv.push(OsString::from("-l"));
            argv.push(OsString::from(login));
        }
        argv.push(OsString::from(&self.host));
        argv
    }

    /// How logs name it: `[user@]host`.
    pub fn label(&self) -> String {
        match &self.login {
            Some(login) => format!("{login}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

/// rsync's `-e` for a run over the master at `path`: the ssh command with the socket and
/// `ControlMaster=no` (never become a master itself). ssh with a socket that is missing
/// connects on its own, silently; with a stale one (a master that died) it says so on
/// stderr and connects on its own; a session the master cannot open (the server's
/// `MaxSessions`) is also opened on a connection of its own. `path` is ours: no
/// whitespace, quote or `%` (checked where it is made), so rsync's split keeps it one word.
pub fn rsh_over_master(rsh: &str, path: &std::path::Path) -> String {
    format!(
        "{rsh} -o ControlPath={} -o ControlMaster=no",
        path.display()
    )
}

/// rsync's `--timeout` when `<timeout>` is off: a run that moves no data for this long
/// ends (exit 30) and is retried. rsync ≥ 3.1 sends keep-alives at half this interval,
/// so a healthy run that is busy (a receiver checksumming a big file) never trips it.
pub const DEFAULT_IO_TIMEOUT: u32 = 120;
/// `--contimeout` for rsync daemons when `<timeout>` is off.
pub const DEFAULT_CONNECT_TIMEOUT: u32 = 30;

/// The argv (after `rsync`) of an incremental batch's send run; the paths that exist go
/// NUL-separated on stdin, relative to the root, which is the working directory. A path
/// that vanishes between the check and the transfer is skipped (`--ignore-missing-args`):
/// its own deletion event follows. Deletions go by [`deletion`].
///
/// This is the failure script's shape: a person runs it, and like sersync 2.5's it prints
/// nothing when all goes well (no [`REPORT_SENT`], which only the daemon reads).
pub fn batch(transport: &Transport) -> Vec<OsString> {
    let mut argv = batch_options(transport, false);
    argv.extend(["--files-from=-", "--from0", "./"].map(OsString::from));
    argv.push(transport.destination());
    argv
}

/// The argv (after `rsync`) of a lane's warm rsync (`super::warm`): the send run of
/// [`batch_listed`] with its paths to come NUL-separated on stdin, started before they
/// are known, and without `--timeout`. With it rsync 3.5.0's handshake (before the file
/// list) stalls ~40 ms on Nagle + delayed ACK in a receiving daemon without `socket
/// options = TCP_NODELAY`: a warm process hides that only when it was started more than
/// ~50 ms before its batch (`bench/rsync-floor.py warm`: handed 20 ms after its start,
/// p50 43.7 ms with `--timeout`, 2.0 ms without; started long before, 2.4 and 2.5 ms), and
/// the next batch often follows sooner. The daemon gives a warm run a deadline of its own
/// instead (no I/O for the same number of seconds: [`io_timeout`]). `--contimeout` stays:
/// it bounds the connect.
pub fn warm(transport: &Transport) -> Vec<OsString> {
    let mut argv = batch_options(transport, true);
    argv.retain(|arg| !arg.as_encoded_bytes().starts_with(b"--timeout="));
    argv.extend(["--files-from=-", "--from0", "./"].map(OsString::from));
    argv.push(transport.destination());
    argv
}

/// The seconds of silence after which a run ends: `<timeout>`, else [`DEFAULT_IO_TIMEOUT`].
pub fn io_timeout(transport: &Transport) -> u32 {
    transport.options.timeout.unwrap_or(DEFAULT_IO_TIMEOUT)
}

/// Two-way mode: the argv and stdin of a batch run that sends `paths` whatever the
/// remote has, newer or not: each is known to hold a version this host had (see
/// `super::two_way::stale`).
pub fn batch_replacing(
    transport: &Transport,
    paths: &[&[u8]],
    budget: usize,
) -> (Vec<OsString>, Vec<u8>) {
    let (mut argv, stdin) = batch_listed(transport, paths, budget);
    argv.retain(|arg| arg != "--update");
    (argv, stdin)
}

/// Two-way mode: the rules (for [`deletion_listing`]'s argv) that list exactly `paths` on
/// the remote, with their ancestors: `+ /a/`, `+ /a/f`, `- *`.
pub fn exact_listing_rules<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let paths: Vec<&[u8]> = paths.into_iter().filter(|p| !p.is_empty()).collect();
    let mut ancestors: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for path in &paths {
        for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            ancestors.insert(&path[..i]);
        }
    }
    let mut rules = Vec::new();
    for dir in ancestors {
        rules.extend_from_slice(b"+ ");
        rules.extend(anchored_pattern(dir));
        rules.extend_from_slice(b"/\0");
    }
    for path in paths {
        rules.extend_from_slice(b"+ ");
        rules.extend(anchored_pattern(path));
        rules.push(0);
    }
    rules.extend_from_slice(b"- *\0");
    rules
}

/// The argv and stdin of a batch run that sends `paths` (see [`push_listed`]), reporting
/// what it sent ([`REPORT_SENT`]).
pub fn batch_listed(
    transport: &Transport,
    paths: &[&[u8]],
    budget: usize,
) -> (Vec<OsString>, Vec<u8>) {
    let mut argv = batch_options(transport, true);
    let stdin = push_listed(&mut argv, paths, budget);
    argv.push(transport.destination());
    (argv, stdin)
}

fn batch_options(transport: &Transport, report: bool) -> Vec<OsString> {
    let mut argv = transport.common();
    if report {
        push_report(&mut argv);
    }
    push_exact_times(&mut argv, transport);
    if transport.options.two_way {
        // Compared by contents, never forced: the copy of a file the peer just received
        // from here is skipped (no data, no write, no event there): see `super::two_way`.
        argv.extend(TWO_WAY.map(OsString::from));
    } else {
        // Every path here changed (an event said so): sent even when its size and mtime
        // match the remote's, which rsync's quick check would skip (a rewrite that keeps
        // a fixed mtime: `cp -p`, `tar x`, SOURCE_DATE_EPOCH builds). The delta algorithm
        // still sends only what differs.
        argv.push(OsString::from("--ignore-times"));
    }
    argv.extend(
        [
            "--no-recursive",
            "--dirs",
            "--relative",
            "--force",
            "--ignore-missing-args",
        ]
        .map(OsString::from),
    );
    argv
}

/// What two-way mode adds to its batch sends: newest wins, and an unchanged file (an echo)
/// is recognised by its contents and skipped.
const TWO_WAY: [&str; 2] = ["--update", "--checksum"];

/// What makes a run end with rsync's own count of the bytes it sent, in plain digits:
/// `sent N bytes  received M bytes  R bytes/sec` on stdout (read back by [`sent_bytes`]).
/// These change what rsync prints, never what it does.
///
/// They come after the user's params, which they override: a `-h` there would print
/// `1.05M` (`--no-human-readable` makes it digits, without the `1,234` separators too),
/// an `--info=stats0` or a `-v`/`--stats` of their own is replaced by this one level
/// (`--info` given on the command line wins over the levels `-v` and `--stats` imply).
/// `--info=stats1` rather than `--stats`: two lines, and the receiver is asked for no
/// counts. Both options exist since rsync 3.1.0; `--info=stats1` is passed on to the
/// remote rsync, which 3.1.x accepts. A `-q` in the user's params silences the summary
/// (rsync has no option that undoes it): such runs count no bytes.
pub const REPORT_SENT: [&str; 2] = ["--info=stats1", "--no-human-readable"];

/// What makes a full sync's runs say how far they are, as they go (read by
/// `sync::progress`): one line rewritten with the bytes done, the percentage, the rate
/// and the time left. It changes what rsync prints, never what it does.
pub const REPORT_PROGRESS: &str = "--info=progress2";

fn push_report(argv: &mut Vec<OsString>) {
    argv.extend(REPORT_SENT.map(OsString::from));
}

/// The bytes an rsync run reported sending, from what it printed (stdout, or stderr
/// with the user's `--stderr=all`): the last `sent N bytes  received M bytes ...` line
/// (`--info=stats1`, `-v`), or `Total bytes sent: N` (`--stats`). `N` may hold thousands
/// separators (`1,234,567`, or `1.234.567` where the locale's decimal point is a comma);
/// a figure in units (`1.05M`, from `-h` without [`REPORT_SENT`]) is not exact and counts
/// as none. `None` when the run printed no figure (it failed before its summary, or `-q`).
///
/// The last line of that shape is the one read: the summary is the last thing rsync
/// prints, and a file name that looks like one (printed earlier by `-v`) cannot stand in
/// for it, not even when the summary itself is unreadable; rsync escapes line breaks in
/// names, so a name cannot start a line of its own.
pub fn sent_bytes(output: &[u8]) -> Option<u64> {
    output
        .split(|&b| b == b'\n' || b == b'\r')
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix(b"sent ") {
                let (number, rest) = split_word(rest);
                rest.starts_with(b" bytes  received ").then_some(number)
            } else {
                let (number, rest) = split_word(line.strip_prefix(b"Total bytes sent: ")?);
                rest.is_empty().then_some(number)
            }
        })
        .next_back()
        .and_then(plain_number)
}

/// `text` up to its first space, and the rest from that space on.
fn split_word(text: &[u8]) -> (&[u8], &[u8]) {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    text.split_at(end)
}

/// A number as rsync prints one: digits, in groups of three after the first when it
/// separates them (with `,` or `.`, the same throughout). Nothing else: no units.
fn plain_number(word: &[u8]) -> Option<u64> {
    let separator = word.iter().copied().find(|b| matches!(b, b',' | b'.'));
    let mut groups = word.split(|&b| Some(b) == separator);
    let first = groups.next()?;
    let rest: Vec<&[u8]> = groups.collect();
    let digits = |group: &[u8]| !group.is_empty() && group.iter().all(u8::is_ascii_digit);
    if !digits(first)
        || (!rest.is_empty() && first.len() > 3)
        || !rest.iter().all(|group| group.len() == 3 && digits(group))
    {
        return None;
    }
    let mut number: u64 = 0;
    for &digit in first
        .iter()
        .chain(rest.iter().flat_map(|group| group.iter()))
    {
        number = number
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some(number)
}

/// Compare mtimes to the nanosecond (unless the user set `--modify-window`): otherwise
/// rsync's quick check skips a same-size rewrite within the same second (and a rename seed
/// copies the old version from the remote's old directory). A receiver whose filesystem
/// keeps no nanoseconds re-sends such files on every full sync; `--modify-window=1` in
/// `commonParams` is the way out there.
fn push_exact_times(argv: &mut Vec<OsString>, transport: &Transport) {
    // Two-way mode compares contents (`--checksum`), and `--update` needs the default
    // window: rsync skips a file that is newer on the receiver only by whole seconds
    // more than the window (`-1` would let a version up to 2 s newer be replaced).
    if !transport.options.two_way
        && !transport
            .options
            .common_params
            .iter()
            .any(|p| p.starts_with("--modify-window") || p.starts_with("-@"))
    {
        argv.push(OsString::from("--modify-window=-1"));
    }
}

/// How many bytes of the command line the listed paths of one run may take: a quarter
/// of `ARG_MAX` (which Linux derives from the stack limit and shares with the
/// environment), between 32 KiB and 1 MiB.
pub fn path_args_budget() -> usize {
    let arg_max = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(128 * 1024);
    (arg_max / 4).clamp(32 * 1024, 1024 * 1024)
}

/// Appends the paths of a run to `argv` as `./path` arguments when they fit in `budget`
/// bytes, and returns an empty stdin; otherwise appends `--files-from=- --from0 ./` and
/// returns the NUL-separated list for stdin.
///
/// Why arguments first: rsync reads a `--files-from` list with one read(2) and one
/// poll(2) per byte; for 20,000 paths that is 0.45 s of system time (measured with
/// strace -c: 222,434 reads), several times the cost of the transfer's own file list.
/// Both routes run through the same loop of rsync's sender, so `.`, `--relative`,
/// `--dirs` and `--ignore-missing-args` behave alike; rsync does not expand wildcards in
/// local arguments, and the `./` prefix keeps a leading `-` from reading as an option.
pub fn push_listed(argv: &mut Vec<OsString>, paths: &[&[u8]], budget: usize) -> Vec<u8> {
    // Each argument also costs its NUL and a pointer in the argv array.
    let size: usize = paths
        .iter()
        .map(|p| p.len() + 3 + std::mem::size_of::<usize>())
        .sum();
    if size > budget {
        argv.extend(["--files-from=-", "--from0", "./"].map(OsString::from));
        return nul_list(paths.iter().copied());
    }
    argv.extend(paths.iter().map(|path| OsString::from_vec(dot_path(path))));
    Vec::new()
}

/// How a listed path reaches rsync: `./path`, and the root itself as `.`. The `./` keeps
/// a leading `-` from reading as an option, and a leading `#` or `;` from reading as a
/// comment in a `--files-from` list (even with `--from0`).
pub fn dot_path(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let mut out = Vec::with_capacity(path.len() + 2);
    out.extend_from_slice(b"./");
    out.extend_from_slice(path);
    out
}

/// The argv that rebuilds a renamed directory `to` on the remote from its old copy at
/// `from`: run in `ROOT/to` with the subtree's paths (relative to `to`) listed (see
/// [`push_listed`]); files whose size and mtime match the old copy are copied on the
/// receiver instead of being sent, anything else is transferred normally (so a differing
/// old copy stays correct). Returns the argv and the stdin.
pub fn rename_seed(
    transport: &Transport,
    from: &[u8],
    to: &[u8],
    paths: &[&[u8]],
    budget: usize,
) -> (Vec<OsString>, Vec<u8>) {
    // No soft delete here: the destination is a directory below the module, where the
    // soft-delete directory cannot be named (a daemon strips `../`), and a seed only fills
    // a directory that the rename just created (rename(2) replaces only an empty one).
    let mut argv = transport.user_params();
    argv.extend(transport.connection());
    push_report(&mut argv);
    push_exact_times(&mut argv, transport);
    let depth = to.split(|&b| b == b'/').count();
    let mut basis = b"--copy-dest=".to_vec();
    for _ in 0..depth {
        basis.extend_from_slice(b"../");
    }
    basis.extend_from_slice(from);
    argv.push(OsString::from_vec(basis));
    argv.extend(["--no-recursive", "--dirs", "--relative"].map(OsString::from));
    let stdin = push_listed(&mut argv, paths, budget);
    let mut destination = transport.destination().into_vec();
    destination.extend_from_slice(to);
    destination.push(b'/');
    argv.push(OsString::from_vec(destination));
    (argv, stdin)
}

/// How the failure script hands a replay its paths on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayInput {
    /// `./path` records for `--files-from=-` (what exists is sent; nothing is deleted).
    Paths,
    /// [`deletion_rules`] for `--filter='. -'`: each path is sent if it exists when the
    /// script runs and deleted on the remote if it does not.
    Rules,
}

impl ReplayInput {
    /// The NUL-terminated records a replay of `paths` reads on stdin.
    pub fn stdin(self, paths: &[&[u8]]) -> Vec<Vec<u8>> {
        match self {
            ReplayInput::Paths => paths.iter().map(|path| dot_path(path)).collect(),
            ReplayInput::Rules => {
                let (rules, _) = deletion_rules(paths.iter().copied());
                rules
                    .split(|&b| b == 0)
                    .filter(|rule| !rule.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect()
            }
        }
    }
}

/// The argv written into the failure script for re-sending paths by hand, and what its
/// stdin holds. With deletions on, one run per entry does what the daemon's deletion and
/// send runs do together, on every receiver: `--recursive --delete` over the root, limited
/// by rules that include exactly the paths (and their ancestors) — no
/// `--delete-missing-args`, which receivers of rsync 3.2.x-3.4.x reject for nested paths
/// (see [`deletion`]). The user's `--delete*` options are left out: `--delete-excluded`
/// would delete everything the rules exclude.
pub fn replay(transport: &Transport, propagate_deletes: bool) -> (Vec<OsString>, ReplayInput) {
    if !propagate_deletes {
        return (batch(transport), ReplayInput::Paths);
    }
    // Our rules before the user's params: rsync applies the first rule that matches, and
    // an `--include`, `--filter` or `-F` there must not let the run touch other paths.
    let mut argv = transport.own_directories_filters();
    argv.extend(["--from0", "--filter=. -"].map(OsString::from));
    argv.extend(
        transport
            .user_params()
            .into_iter()
            .filter(|arg| !arg.as_encoded_bytes().starts_with(b"--del")),
    );
    argv.extend(transport.transport_only());
    push_exact_times(&mut argv, transport);
    argv.extend(["--recursive", "--delete", "--force", "./"].map(OsString::from));
    argv.push(transport.destination());
    (argv, ReplayInput::Rules)
}

/// The argv of a deletion run: from a skeleton directory that holds only the ancestors of
/// the deleted paths, `--recursive --delete` with rules on stdin that include those
/// ancestors and the deleted paths (`/a/`, `/a/b/`, `/a/b/gone`, `/a/b/gone/***`) and
/// exclude everything else. On the receiver, exactly the included paths that the skeleton
/// lacks are deleted; excluded entries are protected from `--delete`.
///
/// This is the route sersync 2.5 and lsyncd take, batched. `--delete-missing-args` would be
/// simpler, but receivers of rsync 3.2.x-3.4.x (Debian 12's own 3.2.7 among them) reject a
/// missing argument below the top level ("invalid file mode 00", rsync issue #910).
/// Only transport options are passed: the user's params (which might hold
/// `--delete-excluded`) must not change what a deletion run deletes.
pub fn deletion(transport: &Transport) -> Vec<OsString> {
    let mut options = transport.transport_only();
    push_report(&mut options);
    deletion_from(transport, options)
}

/// `options`, then what makes a run from a skeleton a deletion run (see [`deletion`]).
fn deletion_from(transport: &Transport, mut argv: Vec<OsString>) -> Vec<OsString> {
    argv.extend(
        [
            "--recursive",
            "--delete",
            "--force",
            // A deletion run deletes and nothing else: an ancestor that the remote lacks
            // (it was moved or deleted there by an earlier batch) is not created from the
            // skeleton.
            "--existing",
            "--from0",
            "--filter=. -",
            "./",
        ]
        .map(OsString::from),
    );
    argv.push(transport.destination());
    argv
}

/// `<softDelete>`: what a run deletes or overwrites goes to `DIR/YYYY-MM-DD` on the remote,
/// and `DIR` itself is neither sent nor deleted (`P` protects it even from a user's
/// `--delete-excluded`). These come before any rules on stdin, so they win.
pub fn soft_delete_options(soft: &crate::config::SoftDelete, date: &str) -> Vec<OsString> {
    vec![
        OsString::from("--backup"),
        OsString::from(format!("--backup-dir={}/{date}", soft.dir)),
        OsString::from(format!("--filter=P /{}/", soft.dir)),
        OsString::from(format!("--filter=- /{}/", soft.dir)),
    ]
}

/// `YYYY-MM-DD` (UTC) of `time`.
pub fn utc_date(time: std::time::SystemTime) -> String {
    crate::timestamp::rfc3339_utc(time)[..10].to_owned()
}

/// The dated directories of a `--list-only` listing of the soft-delete directory that
/// are older than `keep_days` on `today` (both `YYYY-MM-DD`, compared as dates).
pub fn expired_trash(listing: &[u8], today: &str, keep_days: u32) -> Vec<String> {
    let Some(today) = days_from_date(today) else {
        return Vec::new();
    };
    listing
        .split(|&b| b == b'\n')
        .filter(|line| line.first() == Some(&b'd'))
        .filter_map(|line| line.rsplit(|&b| b == b' ').next())
        .filter_map(|name| std::str::from_utf8(name).ok())
        .filter(|name| days_from_date(name).is_some_and(|day| today - day > i64::from(keep_days)))
        .map(str::to_owned)
        .collect()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
pub(super) fn days_from_date(date: &str) -> Option<i64> {
    let bytes = date.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: i64 = date[5..7].parse().ok()?;
    let d: i64 = date[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The argv that lists the remote's soft-delete directory (for pruning).
pub fn list_trash(transport: &Transport, soft: &crate::config::SoftDelete) -> Vec<OsString> {
    let mut argv = transport.connection();
    argv.push(OsString::from("--list-only"));
    let mut destination = transport.destination().into_vec();
    destination.extend_from_slice(soft.dir.as_bytes());
    destination.push(b'/');
    argv.push(OsString::from_vec(destination));
    argv
}

/// The argv of a run that deletes the dated directories `expired` from the remote's
/// soft-delete directory: like [`deletion`], from an empty skeleton, but without the
/// soft-delete options (which would protect them, and back up what is pruned). Its rules
/// (on stdin) come from [`deletion_rules`] over `DIR/DATE` paths.
pub fn prune_trash(transport: &Transport) -> Vec<OsString> {
    deletion_from(transport, transport.connection())
}

/// The argv (after `rsync`) that lists the top level of the remote (for the emptiness
/// guard, [`crate::guard`]): one line per entry, `.` included.
pub fn list_top(transport: &Transport) -> Vec<OsString> {
    let mut argv = transport.transport_only();
    argv.push(OsString::from("--list-only"));
    argv.push(transport.destination());
    argv
}

/// Two-way mode: the argv that lists, on the peer, what a deletion run with the same rules
/// on stdin ([`deletion_groups`]) would delete, with modification times (printed in UTC:
/// rsync runs with `TZ=UTC`), read by `super::two_way::parse_listing`.
pub fn deletion_listing(transport: &Transport) -> Vec<OsString> {
    let mut argv = transport.connection();
    argv.extend(["--list-only", "--recursive", "--from0", "--filter=. -"].map(OsString::from));
    argv.push(transport.destination());
    argv
}

/// Two-way mode: the argv of a run that leaves the notice `name` (a file in the run's
/// working directory) in the peer's incoming directory, where its watcher reads it
/// (`super::two_way::Announced`). The connection's options only: nothing of the user's
/// may change where it lands or what it holds.
pub fn notice(transport: &Transport, name: &str) -> Vec<OsString> {
    let mut argv = transport.connection();
    argv.push(OsString::from(name));
    let mut destination = transport.destination();
    destination.push(super::two_way::INCOMING);
    destination.push("/");
    argv.push(destination);
    argv
}

/// Two-way mode: the options of a run that pulls from the peer into the root (the working
/// directory): the user's, newest wins, and what it replaces here kept in the local
/// `<softDelete>` directory (relative to the destination, which is here).
fn pull_options(transport: &Transport, recursion: &[&str]) -> Vec<OsString> {
    let mut argv = transport.common();
    push_report(&mut argv);
    push_exact_times(&mut argv, transport);
    argv.extend(recursion.iter().map(OsString::from));
    argv.push(OsString::from("--update"));
    argv
}

/// Two-way mode: the argv of a pull of the peer's whole tree (the second half of a full
/// sync, which reconciles: see `super::two_way`), without deletions.
pub fn pull(transport: &Transport, rules: &FullSyncRules) -> Vec<OsString> {
    let mut argv = pull_options(transport, &["--recursive"]);
    for pattern in &rules.glob_excludes {
        argv.push(OsString::from(format!("--exclude={pattern}")));
    }
    if rules.rules_on_stdin {
        argv.extend(["--from0", "--filter=. -"].map(OsString::from));
    }
    argv.push(transport.destination());
    argv.push(OsString::from("./"));
    argv
}

/// Two-way mode: `argv` (a pull's) as a dry run that prints, per entry it would make or
/// change, its itemized change, permission bits and name (`%i %B %n%L`), for
/// [`super::two_way::parse_made`].
pub fn dry_run_itemized(argv: &[OsString]) -> Vec<OsString> {
    let mut dry = vec![OsString::from("--dry-run")];
    dry.extend(itemized(argv));
    dry
}

/// Two-way mode: `argv` (a send's) printing, per file it sends or whose attributes it
/// sets, its itemized change, length, modification time and name (`%i %l %M %n`), for
/// [`super::two_way::parse_sent`]: the versions the send delivered, which may not be the
/// ones the plan looked at (a file renamed over the path in between).
pub fn reporting_sent(argv: &[OsString]) -> Vec<OsString> {
    // Before the paths: rsync reads its options first.
    let mut reporting = vec![OsString::from("--out-format=%i %l %M %n")];
    reporting.extend(argv.iter().cloned());
    reporting
}

/// `argv` printing, per entry it makes or changes, what [`dry_run_itemized`] prints.
pub fn itemized(argv: &[OsString]) -> Vec<OsString> {
    // Before the paths: rsync reads its options first.
    let mut itemized = vec![OsString::from("--out-format=%i %B %n%L")];
    itemized.extend(argv.iter().cloned());
    itemized
}

/// Two-way mode: the argv and stdin of a pull of `paths` from the peer, recursively when
/// `recursive` (dirty directories) or exactly (versions a deletion run left there). A path
/// the peer lacks is skipped.
pub fn pull_listed(
    transport: &Transport,
    paths: &[&[u8]],
    recursive: bool,
) -> (Vec<OsString>, Vec<u8>) {
    let recursion: &[&str] = if recursive {
        &["--recursive", "--relative", "--ignore-missing-args"]
    } else {
        &["--relative", "--ignore-missing-args"]
    };
    let mut argv = pull_options(transport, recursion);
    argv.extend(["--files-from=-", "--from0"].map(OsString::from));
    argv.push(transport.destination());
    argv.push(OsString::from("./"));
    (argv, nul_list(paths.iter().copied()))
}

/// Whether a [`list_top`] listing shows any entry besides the module's top directory.
pub fn listing_has_entries(stdout: &[u8]) -> bool {
    stdout.split(|&b| b == b'\n').any(|line| {
        let name = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        !line.is_empty() && name != b"."
    })
}

/// The stdin rules of a [`deletion`] run for `paths` (relative, raw bytes), and the
/// ancestor directories the skeleton must contain.
///
/// Every path gets its `/***` rule, even one the events say was a file: the remote may
/// hold a directory there (a replacement of a directory by a file that did not reach it,
/// because the file was gone again when its batch ran), and without the rule that
/// directory's contents would be protected and the directory silently kept ("cannot delete
/// non-empty directory", exit 0).
pub fn deletion_rules<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<Vec<u8>>) {
    deletion_groups(paths, 1)
        .pop()
        .unwrap_or_else(|| (b"- *\0".to_vec(), Vec::new()))
}

/// Below this many deleted paths per run, another concurrent run costs more than it saves.
pub const DELETION_GROUP_MIN: usize = 500;

/// Like [`deletion_rules`], split into at most `max_groups` runs over disjoint, contiguous
/// (in sorted order) sets of paths, each with its own rules and ancestors.
///
/// Why: the receiver tests each entry of every directory it visits against the rules in
/// order, so one run costs about entries × rules; k runs over disjoint subtrees cost 1/k
/// of that and run concurrently (5,000 deletions in 50 directories: one run 0.27–0.37 s,
/// five concurrent runs 0.13 s, against 0.10 s for a plain `--delete` without rules).
pub fn deletion_groups<'a>(
    paths: impl IntoIterator<Item = &'a [u8]>,
    max_groups: usize,
) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut chosen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    let mut targets: Vec<&[u8]> = Vec::new();
    // Never the root itself.
    let mut sorted: Vec<&[u8]> = paths.into_iter().filter(|p| !p.is_empty()).collect();
    sorted.sort();
    for path in sorted {
        // Below a path that is deleted already (its deletion covers it); keeping it would
        // put that path into the skeleton and leave it on the remote.
        let covered = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .any(|(i, _)| chosen.contains(&path[..i]));
        if covered {
            continue;
        }
        chosen.insert(path);
        targets.push(path);
    }
    if targets.is_empty() {
        return Vec::new();
    }
    let groups = (targets.len() / DELETION_GROUP_MIN).clamp(1, max_groups.max(1));
    let per_group = targets.len().div_ceil(groups);
    targets.chunks(per_group).map(group_rules).collect()
}

fn group_rules(targets: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut ancestors: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    for path in targets {
        for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            ancestors.insert(path[..i].to_vec());
        }
    }
    let mut rules = Vec::new();
    let mut push = |rule: Vec<u8>| {
        rules.extend(rule);
        rules.push(0);
    };
    for dir in &ancestors {
        let mut rule = b"+ ".to_vec();
        rule.extend(anchored_pattern(dir));
        rule.push(b'/');
        push(rule);
    }
    for path in targets {
        let mut exact = b"+ ".to_vec();
        exact.extend(anchored_pattern(path));
        push(exact);
        // The pattern holds wildcards, so every wildcard and backslash in the name is
        // escaped.
        let mut below = b"+ /".to_vec();
        push_escaped(&mut below, path);
        below.extend_from_slice(b"/***");
        push(below);
    }
    push(b"- *".to_vec());
    (rules, ancestors.into_iter().collect())
}

/// What a full sync excludes and protects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullSyncRules {
    /// rsync glob patterns from `<crontabfilter>` (passed as `--exclude=PAT`).
    pub glob_excludes: Vec<String>,
    /// Whether anchored rules (`- /path`, `P /path`) follow on stdin (`--filter=. -`).
    pub rules_on_stdin: bool,
}

/// The argv of a full push of the root (`-r`, rescans, crontab).
pub fn full_sync(
    transport: &Transport,
    propagate_deletes: bool,
    rules: &FullSyncRules,
    dry_run: bool,
) -> Vec<OsString> {
    // A dry run's `--stats` must stay (the replica guard reads its counts): `--info=stats1`
    // would win over it. Its `sent` line is there all the same, in digits below.
    let mut argv = full_sync_options(
        transport,
        &["--recursive"],
        propagate_deletes,
        rules,
        !dry_run,
    );
    if !dry_run {
        argv.push(OsString::from(REPORT_PROGRESS));
    }
    if rules.rules_on_stdin {
        // --from0 must come first: rsync reads the merged rules when it parses --filter.
        argv.push(OsString::from("--from0"));
        argv.push(OsString::from("--filter=. -"));
    }
    if dry_run {
        argv.push(OsString::from("--dry-run"));
        argv.push(OsString::from("--itemize-changes"));
        // The counts the replica guard compares (see `guard::FullSyncPreview`).
        argv.push(OsString::from("--stats"));
        argv.push(OsString::from("--no-human-readable"));
    }
    argv.push(OsString::from("./"));
    argv.push(transport.destination());
    argv
}

/// The options every full-sync run shares: the user's, [`REPORT_SENT`] when it is
/// `reported`, how it recurses, deletion and the `<crontabfilter>` globs.
fn full_sync_options(
    transport: &Transport,
    recursion: &[&str],
    propagate_deletes: bool,
    rules: &FullSyncRules,
    reported: bool,
) -> Vec<OsString> {
    let mut argv = transport.common();
    if reported {
        push_report(&mut argv);
    }
    // Full syncs compare to the nanosecond too: a file rewritten with the same size
    // within the same second (while the daemon was down, say) differs only there, and a
    // symlink or directory created within the second of its source keeps the receiver's
    // time otherwise.
    push_exact_times(&mut argv, transport);
    argv.extend(recursion.iter().map(OsString::from));
    if transport.options.two_way {
        // Reconciling, never mirroring: see `super::two_way`.
        argv.push(OsString::from("--update"));
    } else if propagate_deletes {
        argv.push(OsString::from("--delete"));
        argv.push(OsString::from("--force"));
    }
    for pattern in &rules.glob_excludes {
        argv.push(OsString::from(format!("--exclude={pattern}")));
    }
    argv
}

/// A full sync as concurrent runs, or `None` when one run is as good: `top_dirs` (the
/// root's subdirectories) dealt round-robin into `ways` recursive runs (`./dir`
/// arguments, `--ignore-missing-args` for one removed meanwhile), plus one run for the
/// root itself (`--no-recursive --dirs ./`: its files and entries, and with deletes on,
/// remote-only top-level entries). The runs touch disjoint paths.
///
/// Why: rsync is one sender and one receiver pipeline, and on a tree of small files both
/// ends are CPU-bound in different processes; two pipelines use a second core (measured on
/// 2 cores, 200,000 files in 52,550 dirs: 13.3 s → 11.3 s). Only without rules on stdin:
/// filtered full syncs keep their single run and its dry-run protection.
pub fn full_sync_split(
    transport: &Transport,
    propagate_deletes: bool,
    rules: &FullSyncRules,
    top_dirs: &[Vec<u8>],
    ways: usize,
    args_budget: usize,
) -> Option<Vec<Vec<OsString>>> {
    let ways = ways.min(top_dirs.len());
    if ways < 2 || rules.rules_on_stdin {
        return None;
    }
    let options = |recursion: &[&str]| {
        let mut argv = full_sync_options(transport, recursion, propagate_deletes, rules, true);
        argv.push(OsString::from(REPORT_PROGRESS));
        argv
    };
    let mut runs = Vec::with_capacity(ways + 1);
    let mut root = options(&["--no-recursive", "--dirs"]);
    root.push(OsString::from("./"));
    root.push(transport.destination());
    runs.push(root);
    for way in 0..ways {
        let dirs: Vec<&[u8]> = top_dirs
            .iter()
            .skip(way)
            .step_by(ways)
            .map(|d| d.as_slice())
            .collect();
        let mut argv = options(&["--recursive", "--ignore-missing-args"]);
        if !push_listed(&mut argv, &dirs, args_budget).is_empty() {
            return None; // too many to pass as arguments: one run does it
        }
        argv.push(transport.destination());
        runs.push(argv);
    }
    Some(runs)
}

/// The argv and stdin of a run that makes the remote copies of the directories `dirs`
/// equal to the local ones, recursively (with deletions inside them when deletions are
/// propagated): `--files-from` with `--recursive` recurses into each listed directory and
/// deletes only there; the directories' ancestors are implied, not touched.
pub fn trees(
    transport: &Transport,
    propagate_deletes: bool,
    dirs: &[&[u8]],
) -> (Vec<OsString>, Vec<u8>) {
    let rules = FullSyncRules {
        glob_excludes: Vec::new(),
        rules_on_stdin: false,
    };
    let mut argv = full_sync_options(
        transport,
        &["--recursive", "--relative", "--ignore-missing-args"],
        propagate_deletes,
        &rules,
        true,
    );
    argv.extend(["--files-from=-", "--from0", "./"].map(OsString::from));
    argv.push(transport.destination());
    (argv, nul_list(dirs.iter().copied()))
}

/// An rsync filter pattern that matches exactly `relative` (anchored at the transfer
/// root). rsync only treats `\` as an escape when the pattern holds a wildcard, so names
/// with `*?[` are escaped and others are left literal.
pub fn anchored_pattern(relative: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(relative.len() + 8);
    pattern.push(b'/');
    if relative.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
        push_escaped(&mut pattern, relative);
    } else {
        pattern.extend_from_slice(relative);
    }
    pattern
}

/// Appends `literal` to a wildcard pattern, each `*?[\` escaped with a backslash.
fn push_escaped(pattern: &mut Vec<u8>, literal: &[u8]) {
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
}

/// A risk rule (`R /path`) for stdin rule lists: `path` may be deleted even where a
/// later protect rule covers it.
pub fn risk_rule(relative: &[u8]) -> Vec<u8> {
    let mut rule = b"R ".to_vec();
    rule.extend(anchored_pattern(relative));
    rule
}

/// A protect rule for everything below `relative` and itself (`P /path/***`).
pub fn protect_subtree_rule(relative: &[u8]) -> Vec<u8> {
    let mut rule = b"P /".to_vec();
    push_escaped(&mut rule, relative);
    rule.extend_from_slice(b"/***");
    rule
}

/// A protect rule (`P /path`) for stdin rule lists.
pub fn protect_rule(relative: &[u8]) -> Vec<u8> {
    let mut rule = b"P ".to_vec();
    rule.extend(anchored_pattern(relative));
    rule
}

/// An exclude rule (`- /path`) for stdin rule lists.
pub fn exclude_rule(relative: &[u8]) -> Vec<u8> {
    let mut rule = b"- ".to_vec();
    rule.extend(anchored_pattern(relative));
    rule
}

/// Paths that a `--dry-run --itemize-changes --delete` run would delete, as raw relative
/// paths without a trailing slash, each with whether it is a directory. rsync escapes
/// unprintable bytes as `\#ooo`.
pub fn parse_deletions(stdout: &[u8]) -> Vec<(Vec<u8>, bool)> {
    stdout
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"*deleting   "))
        .map(|name| {
            let mut path = unescape(name);
            let is_dir = path.last() == Some(&b'/');
            while path.len() > 1 && path.last() == Some(&b'/') {
                path.pop();
            }
            (path, is_dir)
        })
        .filter(|(p, _)| !p.is_empty())
        .collect()
}

/// rsync escapes unprintable bytes in its output the same way on stdout and stderr.
pub use crate::failure::stderr::unescape;

/// NUL-terminated list for `--files-from=- --from0`; the root itself is `.`. Every path
/// is written as `./path`: rsync skips list entries starting with `#` or `;` as comments,
/// even with `--from0`.
pub fn nul_list<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(dot_path(path));
        out.push(0);
    }
    out
}

/// Renders an argv for debug logs (lossy; never executed).
pub fn display(program: &OsStr, argv: &[OsString]) -> String {
    let mut text = program.to_string_lossy().into_owned();
    for arg in argv {
        text.push(' ');
        text.push_str(&String::from_utf8_lossy(arg.as_bytes()));
    }
    text
}

/// Converts raw bytes to an OsString (paths are bytes on Unix).
pub fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    /// Exact rules stay literal unless the name holds a wildcard; subtree rules always
    /// hold one, so every wildcard and backslash of the name is escaped.
    #[test]
    fn risk_and_protect_subtree_rules_table() {
        let rows: &[(&[u8], &str, &str)] = &[
            (b"d/f", "R /d/f", "P /d/f/***"),
            (b"a*b", "R /a\\*b", "P /a\\*b/***"),
            (b"back\\slash", "R /back\\slash", "P /back\\\\slash/***"),
            (b"-dash q'uote", "R /-dash q'uote", "P /-dash q'uote/***"),
        ];
        for (name, risk, subtree) in rows {
            assert_eq!(String::from_utf8_lossy(&risk_rule(name)), *risk);
            assert_eq!(
                String::from_utf8_lossy(&protect_subtree_rule(name)),
                *subtree
            );
        }
    }

    use super::*;
    use crate::config::Auth;
    use std::path::PathBuf;

    fn transport(ssh: bool, auth: bool, port: Option<u16>, timeout: Option<u32>) -> Transport {
        let mut transport = crate::sync::fixtures::transport();
        transport.options = RsyncOptions {
            common_params: vec!["-artuz".into()],
            auth: auth.then(|| Auth {
                user: "backup".into(),
                password_file: PathBuf::from("/etc/rsync.pas"),
            }),
            port,
            timeout,
            ssh,
            ssh_master: true,
            soft_delete: None,
            two_way: false,
            warm: None,
        };
        transport
    }

    #[test]
    fn a_warm_run_is_the_send_run_listed_on_stdin_without_timeout() {
        // (ssh, auth, <timeout>, argv)
        let rows = [
            (
                false,
                true,
                None,
                "-artuz --sockopts=TCP_NODELAY --password-file=/etc/rsync.pas --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ rsync://backup@127.0.0.1/web/",
            ),
            (
                true,
                false,
                Some(30),
                "-artuz -e ssh --info=stats1 --no-human-readable --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ 127.0.0.1:web/",
            ),
        ];
        for (ssh, auth, timeout, expected) in rows {
            let transport = transport(ssh, auth, None, timeout);
            assert_eq!(joined(&warm(&transport)), expected);
            // Everything else is the cold send run's.
            let (mut cold, _) = batch_listed(&transport, &[b"a"], 1 << 20);
            cold.retain(|arg| !arg.as_encoded_bytes().starts_with(b"--timeout="));
            cold.pop();
            cold.pop();
            let mut warm = warm(&transport);
            warm.pop();
            assert_eq!(&warm[..warm.len() - 3], &cold[..]);
            assert_eq!(
                io_timeout(&transport),
                timeout.unwrap_or(DEFAULT_IO_TIMEOUT)
            );
        }
    }

    fn joined(argv: &[OsString]) -> String {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn batch_argv_table() {
        let rows: &[(Transport, bool, &str)] = &[
            (
                transport(false, false, None, None),
                true,
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ rsync://127.0.0.1/web/",
            ),
            (
                transport(false, true, Some(874), Some(100)),
                true,
                "-artuz --sockopts=TCP_NODELAY --password-file=/etc/rsync.pas --timeout=100 --contimeout=100 --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ rsync://backup@127.0.0.1:874/web/",
            ),
            (
                transport(false, false, None, None),
                false,
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ rsync://127.0.0.1/web/",
            ),
            (
                transport(true, true, None, Some(30)),
                true,
                "-artuz -e ssh --timeout=30 --modify-window=-1 --ignore-times --no-recursive --dirs --relative --force --ignore-missing-args --files-from=- --from0 ./ backup@127.0.0.1:web/",
            ),
        ];
        for (transport, deletes, expected) in rows {
            let _ = deletes;
            assert_eq!(joined(&batch(transport)), *expected);
        }
    }

    #[test]
    fn dirty_directory_argv_table() {
        // (deletions propagated, argv)
        let rows = [
            (
                true,
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --recursive --relative --ignore-missing-args --delete --force --files-from=- --from0 ./ rsync://127.0.0.1/web/",
            ),
            (
                false,
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --recursive --relative --ignore-missing-args --files-from=- --from0 ./ rsync://127.0.0.1/web/",
            ),
        ];
        for (propagate_deletes, expected) in rows {
            let (argv, stdin) = trees(
                &transport(false, false, None, None),
                propagate_deletes,
                &[&b"a/b"[..], b"-x", b""],
            );
            assert_eq!(joined(&argv), expected);
            assert_eq!(stdin, b"./a/b\0./-x\0.\0");
        }
    }

    #[test]
    fn deletion_rules_table() {
        let (rules, skeleton) = deletion_rules([
            &b"a/b/gone"[..],
            b"top",
            b"a/x*y",
            b"",
            b"top/below",
            b"file",
        ]);
        let rules: Vec<String> = rules
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        assert_eq!(
            rules,
            vec![
                "+ /a/",
                "+ /a/b/",
                "+ /a/b/gone",
                "+ /a/b/gone/***",
                "+ /a/x\\*y",
                "+ /a/x\\*y/***",
                "+ /file",
                "+ /file/***",
                "+ /top",
                "+ /top/***",
                "- *",
            ]
        );
        assert_eq!(skeleton, vec![b"a".to_vec(), b"a/b".to_vec()]);
        let t = transport(false, true, None, None);
        assert_eq!(
            joined(&deletion(&t)),
            "--sockopts=TCP_NODELAY --password-file=/etc/rsync.pas --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --recursive --delete --force --existing --from0 --filter=. - ./ rsync://backup@127.0.0.1/web/"
        );
    }

    #[test]
    fn deletion_groups_split_disjoint_sorted_runs() {
        let names: Vec<Vec<u8>> = (0..50)
            .flat_map(|d| (0..100).map(move |f| format!("del/d{d:02}/f{f:02}").into_bytes()))
            .chain([b"del/d00".to_vec()]) // covers d00's files: they need no rule
            .collect();
        let paths = || names.iter().map(|n| n.as_slice());
        // Below the minimum per run, or with one run allowed: a single group.
        assert_eq!(deletion_groups(paths().take(999), 4).len(), 1);
        assert_eq!(deletion_groups(paths(), 1).len(), 1);
        assert_eq!(deletion_groups(paths(), 1)[0], deletion_rules(paths()));
        assert!(deletion_groups(std::iter::empty(), 4).is_empty());
        let groups = deletion_groups(paths(), 4);
        assert_eq!(groups.len(), 4);
        let mut seen: Vec<String> = Vec::new();
        for (rules, ancestors) in &groups {
            let rules: Vec<String> = rules
                .split(|&b| b == 0)
                .filter(|r| !r.is_empty())
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            assert_eq!(rules.last().map(String::as_str), Some("- *"));
            for dir in ancestors {
                let rule = format!("+ /{}/", String::from_utf8_lossy(dir));
                assert!(rules.contains(&rule), "{rule} missing");
            }
            seen.extend(
                rules
                    .into_iter()
                    .filter(|r| !r.ends_with('/') && r != "- *"),
            );
        }
        // Every target exactly once across the runs, none below a deleted directory.
        let mut expected: Vec<String> = vec!["+ /del/d00".into(), "+ /del/d00/***".into()];
        expected.extend((1..50).flat_map(|d| {
            (0..100).flat_map(move |f| {
                [
                    format!("+ /del/d{d:02}/f{f:02}"),
                    format!("+ /del/d{d:02}/f{f:02}/***"),
                ]
            })
        }));
        seen.sort();
        expected.sort();
        assert!(
            seen == expected,
            "{} rules, expected {}",
            seen.len(),
            expected.len()
        );
    }

    #[test]
    fn rename_seed_argv() {
        let t = transport(false, false, None, None);
        let paths: [&[u8]; 2] = [b"", b"x/-y"];
        let (argv, stdin) = rename_seed(&t, b"a/old", b"b/c/new", &paths, 1024);
        assert_eq!(
            joined(&argv),
            "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --copy-dest=../../../a/old --no-recursive --dirs --relative . ./x/-y rsync://127.0.0.1/web/b/c/new/"
        );
        assert!(stdin.is_empty());
        let (argv, stdin) = rename_seed(&t, b"a/old", b"b/c/new", &paths, 10);
        assert_eq!(
            joined(&argv),
            "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --copy-dest=../../../a/old --no-recursive --dirs --relative --files-from=- --from0 ./ rsync://127.0.0.1/web/b/c/new/"
        );
        assert_eq!(stdin, b".\0./x/-y\0");
    }

    #[test]
    fn listed_paths_go_on_the_command_line_while_they_fit() {
        let t = transport(false, false, None, None);
        let hostile: [&[u8]; 5] = [b"-rf", b"a b/#c", b"new\nline", b"*?[x]", b"\xff\xfe"];
        let (argv, stdin) = batch_listed(&t, &hostile, 1024);
        assert!(stdin.is_empty());
        let tail: Vec<&[u8]> = argv[argv.len() - 6..]
            .iter()
            .map(|a| a.as_bytes())
            .collect();
        assert_eq!(
            tail,
            vec![
                &b"./-rf"[..],
                b"./a b/#c",
                b"./new\nline",
                b"./*?[x]",
                b"./\xff\xfe",
                b"rsync://127.0.0.1/web/",
            ]
        );
        // One byte over the budget: the whole list goes to stdin, as the failure script
        // does it.
        let size: usize = hostile.iter().map(|p| p.len() + 3 + 8).sum();
        let (argv, stdin) = batch_listed(&t, &hostile, size - 1);
        assert_eq!(
            joined(&argv),
            joined(&batch(&t)).replace(
                "--modify-window",
                "--info=stats1 --no-human-readable --modify-window"
            )
        );
        assert_eq!(stdin, nul_list(hostile));
        let budget = path_args_budget();
        assert!((32 * 1024..=1024 * 1024).contains(&budget), "{budget}");
    }

    #[test]
    fn replays_put_their_rules_first_and_drop_the_users_deletions() {
        let mut t = transport(false, false, None, None);
        t.options.common_params = ["-artz", "--include=*.html", "--delete-excluded", "-F"]
            .map(String::from)
            .to_vec();
        let (argv, input) = replay(&t, true);
        assert_eq!(input, ReplayInput::Rules);
        let at = |word: &str| argv.iter().position(|a| a == word);
        assert_eq!(at("--filter=. -"), Some(1), "{argv:?}");
        assert!(at("--filter=. -") < at("--include=*.html"));
        assert!(at("--filter=. -") < at("-F"));
        assert_eq!(at("--delete-excluded"), None);
        assert!(at("--delete").is_some());
        t.options.soft_delete = Some(crate::config::SoftDelete::default());
        let (argv, _) = replay(&t, true);
        assert_eq!(argv[0], "--filter=P /.sersync-trash/", "{argv:?}");
        assert_eq!(argv[1], "--filter=- /.sersync-trash/");
        let (paths, input) = replay(&t, false);
        assert_eq!(input, ReplayInput::Paths);
        assert!(paths.iter().any(|a| a == "--files-from=-"));
    }

    #[test]
    fn what_a_replay_reads_on_stdin() {
        let paths: [&[u8]; 2] = [b"f0", b"d/e/gone"];
        assert_eq!(
            ReplayInput::Paths.stdin(&paths),
            vec![b"./f0".to_vec(), b"./d/e/gone".to_vec()]
        );
        // With deletions: the rules that send or delete each path, and nothing else.
        let rules: Vec<String> = ReplayInput::Rules
            .stdin(&paths)
            .iter()
            .map(|rule| String::from_utf8_lossy(rule).into_owned())
            .collect();
        for wanted in [
            "+ /d/",
            "+ /d/e/",
            "+ /d/e/gone",
            "+ /d/e/gone/***",
            "+ /f0",
        ] {
            assert!(
                rules.iter().any(|r| r == wanted),
                "{wanted} not in {rules:?}"
            );
        }
        assert_eq!(rules.last().map(String::as_str), Some("- *"));
    }

    #[test]
    fn soft_delete_dates() {
        let soft = crate::config::SoftDelete::default();
        assert_eq!(
            soft_delete_options(&soft, "2026-12-06"),
            [
                "--backup",
                "--backup-dir=.sersync-trash/2026-12-06",
                "--filter=P /.sersync-trash/",
                "--filter=- /.sersync-trash/"
            ]
            .map(OsString::from)
        );
        assert_eq!(days_from_date("1970-01-01"), Some(0));
        assert_eq!(days_from_date("2000-03-01"), Some(11_017));
        assert_eq!(days_from_date("2026-12-06"), Some(20_793));
        for bad in ["", "2026-13-01", "2026-1-01", "20261206", "yyyy-mm-dd"] {
            assert_eq!(days_from_date(bad), None, "{bad}");
        }
        let listing = b"drwx------          4,096 2026/12/06 15:00:00 .\n\
            drwx------          4,096 2026/10/01 15:00:00 2026-10-01\n\
            drwx------          4,096 2026/11/06 15:00:00 2026-11-06\n\
            drwx------          4,096 2026/11/05 15:00:00 2026-11-05\n\
            -rw-------              4 2020/01/01 15:00:00 2020-01-01\n\
            drwx------          4,096 2026/11/05 15:00:00 not-a-date\n";
        // 30 days kept: 2026-11-06 is 30 days before 2026-12-06 and stays; a file with a
        // date's name is not a dated directory.
        assert_eq!(
            expired_trash(listing, "2026-12-06", 30),
            ["2026-10-01", "2026-11-05"]
        );
        assert!(expired_trash(listing, "bad", 30).is_empty());
    }

    #[test]
    fn remote_listings() {
        let table: &[(&[u8], bool)] = &[
            (b"", false),
            (b"drwxr-xr-x          4,096 2026/12/06 15:00:00 .\n", false),
            (
                b"drwxr-xr-x          4,096 2026/12/06 15:00:00 .\n\
                  -rw-r--r--              6 2026/12/06 15:00:00 a file\n",
                true,
            ),
        ];
        for (stdout, has) in table {
            assert_eq!(
                listing_has_entries(stdout),
                *has,
                "{}",
                String::from_utf8_lossy(stdout)
            );
        }
    }

    #[test]
    fn destinations() {
        let mut t = transport(false, true, Some(8730), None);
        t.remote.ip = "::1".into();
        assert_eq!(t.destination(), "rsync://backup@[::1]:8730/web/");
        t.options.ssh = true;
        t.remote.name = "/srv/backup/".into();
        assert_eq!(t.destination(), "backup@[::1]:/srv/backup/");
    }

    #[test]
    fn the_users_ssh_command() {
        // (commonParams, the -e every run gets)
        let rows: [(&[&str], &str); 8] = [
            (&["-artz"], "ssh"),
            (&["-artz", "-e", "ssh -p 2222"], "ssh -p 2222"),
            (&["-artz", "-essh -p 2"], "ssh -p 2"),
            (&["-avze", "ssh -p 3"], "ssh -p 3"),
            (&["--rsh=ssh -p 4", "-a"], "ssh -p 4"),
            (&["--rsh", "ssh -p 5", "-e", "ssh -p 6"], "ssh -p 6"),
            // `-f`'s value is not a cluster of options, even when it holds an `e`.
            (&["-avf", "- exclude-e"], "ssh"),
            (&["-aT/tmp/e", "-z"], "ssh"),
        ];
        for (params, expected) in rows {
            let mut t = transport(true, false, None, None);
            t.options.common_params = params.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(rsh(&t), expected, "{params:?}");
            // Deletions (no user params) reach the same host the same way.
            let argv = deletion(&t);
            let at = argv.iter().rposition(|a| a == "-e").expect("-e");
            assert_eq!(argv[at + 1], expected, "{params:?}");
        }
    }

    #[test]
    fn rsync_splits_an_ssh_command() {
        // (command, words)
        let rows: [(&str, Option<&[&str]>); 7] = [
            ("ssh", Some(&["ssh"])),
            ("  ssh  -p 22 ", Some(&["ssh", "-p", "22"])),
            (
                "ssh -i '/k ey' -o \"A=b c\"",
                Some(&["ssh", "-i", "/k ey", "-o", "A=b c"]),
            ),
            ("ssh -o 'it''s'", Some(&["ssh", "-o", "it's"])),
            ("ssh a'b'c", Some(&["ssh", "abc"])),
            ("ssh \\x", Some(&["ssh", "\\x"])),
            ("ssh 'open", None),
        ];
        for (command, words) in rows {
            let expected = words.map(|w| w.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>());
            assert_eq!(split_rsh(command), expected, "{command}");
        }
    }

    #[test]
    fn which_remotes_get_a_connection_master() {
        // (ssh, master, commonParams, the master's argv with socket /run/s/1)
        let rows: [(bool, bool, &[&str], Option<&str>); 7] = [
            (
                true,
                true,
                &["-a"],
                Some(
                    "ssh -o ControlMaster=yes -o ControlPath=/run/s/1 -o ControlPersist=no -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=3 -N -l backup 127.0.0.1",
                ),
            ),
            (
                true,
                true,
                &["-a", "-e", "/usr/bin/ssh -p 2222 -i '/k ey'"],
                Some(
                    "/usr/bin/ssh -p 2222 -i /k ey -o ControlMaster=yes -o ControlPath=/run/s/1 -o ControlPersist=no -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=3 -N -l backup 127.0.0.1",
                ),
            ),
            (false, true, &["-a"], None),
            (true, false, &["-a"], None),
            (true, true, &["-e", "sshpass -p x ssh"], None),
            (true, true, &["-e", "ssh -o ControlPath=~/.ssh/%r@%h"], None),
            (true, true, &["-e", "ssh -S /tmp/s"], None),
        ];
        for (ssh, master, params, expected) in rows {
            let mut t = transport(ssh, true, None, None);
            t.options.ssh_master = master;
            t.options.common_params = params.iter().map(|p| (*p).to_owned()).collect();
            let argv = SshTarget::of(&t)
                .map(|target| joined(&target.master_argv(std::path::Path::new("/run/s/1"))));
            assert_eq!(argv.as_deref(), expected, "{ssh} {master} {params:?}");
        }
    }

    #[test]
    fn runs_over_a_master_name_its_socket() {
        let mut t = transport(true, false, None, None);
        t.options.common_params = vec!["-a".into(), "-e".into(), "ssh -p 2222".into()];
        t.control_path = Some(PathBuf::from("/run/sersync/ssh.1/0"));
        let over = "ssh -p 2222 -o ControlPath=/run/sersync/ssh.1/0 -o ControlMaster=no";
        for argv in [
            batch(&t),
            warm(&t),
            deletion(&t),
            full_sync(&t, true, &FullSyncRules::default(), false),
        ] {
            let at = argv.iter().rposition(|a| a == "-e").expect("-e");
            assert_eq!(argv[at + 1], over, "{}", joined(&argv));
        }
        // The failure script's lines (a transport without a socket) never name it.
        t.control_path = None;
        let (replayed, _) = replay(&t, true);
        assert!(!joined(&replayed).contains("ControlPath"));
    }

    #[test]
    fn user_sockopts_win() {
        let mut t = transport(false, false, None, None);
        t.options.common_params = vec!["-az".into(), "--sockopts=SO_SNDBUF=65536".into()];
        let argv = joined(&batch(&t));
        assert!(!argv.contains("TCP_NODELAY"), "{argv}");
    }

    #[test]
    fn full_sync_argv() {
        let t = transport(false, false, None, None);
        let rules = FullSyncRules {
            glob_excludes: vec!["*.php".into(), "info/*".into()],
            rules_on_stdin: true,
        };
        assert_eq!(
            joined(&full_sync(&t, true, &rules, false)),
            "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --recursive --delete --force --exclude=*.php --exclude=info/* --info=progress2 --from0 --filter=. - ./ rsync://127.0.0.1/web/"
        );
    }

    #[test]
    fn full_sync_split_table() {
        let t = transport(false, false, None, None);
        let plain = FullSyncRules::default();
        let dirs: Vec<Vec<u8>> = ["a", "b", "-c", "d"]
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect();
        let runs = full_sync_split(&t, true, &plain, &dirs, 2, 1024).expect("split");
        let runs: Vec<String> = runs.iter().map(|r| joined(r)).collect();
        assert_eq!(
            runs,
            vec![
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --no-recursive --dirs --delete --force --info=progress2 ./ rsync://127.0.0.1/web/",
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --recursive --ignore-missing-args --delete --force --info=progress2 ./a ./-c rsync://127.0.0.1/web/",
                "-artuz --sockopts=TCP_NODELAY --timeout=120 --contimeout=30 --info=stats1 --no-human-readable --modify-window=-1 --recursive --ignore-missing-args --delete --force --info=progress2 ./b ./d rsync://127.0.0.1/web/",
            ]
        );
        let globs = FullSyncRules {
            glob_excludes: vec!["*.tmp".into()],
            rules_on_stdin: false,
        };
        let runs = full_sync_split(&t, false, &globs, &dirs, 4, 1024).expect("split");
        assert_eq!(runs.len(), 5);
        assert!(
            runs.iter()
                .all(|r| r.contains(&OsString::from("--exclude=*.tmp")))
        );
        assert!(!runs.iter().any(|r| r.contains(&OsString::from("--delete"))));
        // One run is as good: one way, one directory, rules on stdin, or too long a list.
        assert!(full_sync_split(&t, true, &plain, &dirs, 1, 1024).is_none());
        assert!(full_sync_split(&t, true, &plain, &dirs[..1], 4, 1024).is_none());
        let stdin_rules = FullSyncRules {
            glob_excludes: Vec::new(),
            rules_on_stdin: true,
        };
        assert!(full_sync_split(&t, true, &stdin_rules, &dirs, 2, 1024).is_none());
        assert!(full_sync_split(&t, true, &plain, &dirs, 2, 8).is_none());
    }

    #[test]
    fn patterns() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"a/b", b"/a/b"),
            (b"*", b"/\\*"),
            (b"[ab]", b"/\\[ab]"),
            (b"x\\y?", b"/x\\\\y\\?"),
            (b"back\\slash", b"/back\\slash"),
        ];
        for (input, expected) in rows {
            assert_eq!(anchored_pattern(input), *expected);
        }
    }

    #[test]
    fn deletions_and_unescape() {
        let out = b"*deleting   only/a\\#012b\n*deleting   only/\n<f+++++++++ kept\n*deleting   x\\#377y\n";
        assert_eq!(
            parse_deletions(out),
            vec![
                (b"only/a\nb".to_vec(), false),
                (b"only".to_vec(), true),
                (b"x\xffy".to_vec(), false)
            ]
        );
        assert_eq!(unescape(b"a\\#0"), b"a\\#0");
    }

    #[test]
    fn the_runs_that_move_data_report_what_they_sent() {
        let mut t = transport(false, false, None, None);
        // The user's own output options come first and lose.
        t.options.common_params = ["-avzh", "--stats", "--info=stats0"]
            .map(String::from)
            .to_vec();
        t.options.soft_delete = Some(crate::config::SoftDelete::default());
        let soft = crate::config::SoftDelete::default();
        let dirs = [b"a".to_vec(), b"b".to_vec()];
        let rules = FullSyncRules::default();
        let paths: [&[u8]; 1] = [b"f"];
        let split = full_sync_split(&t, true, &rules, &dirs, 2, 1024).expect("split");
        // (run, its argv, reports: --info=stats1 and --no-human-readable, or only the
        // latter, or neither)
        let rows: Vec<(&str, Vec<OsString>, (bool, bool))> = vec![
            ("send", batch_listed(&t, &paths, 1024).0, (true, true)),
            (
                "send, listed on stdin",
                batch_listed(&t, &paths, 1).0,
                (true, true),
            ),
            (
                "rename seed",
                rename_seed(&t, b"o", b"n", &paths, 1024).0,
                (true, true),
            ),
            ("deletion", deletion(&t), (true, true)),
            ("dirty directories", trees(&t, true, &paths).0, (true, true)),
            (
                "full sync",
                full_sync(&t, true, &rules, false),
                (true, true),
            ),
            ("split full sync, root", split[0].clone(), (true, true)),
            ("split full sync, part", split[1].clone(), (true, true)),
            // Its --stats counts are read: stats1 would cut them.
            (
                "full sync dry run",
                full_sync(&t, true, &rules, true),
                (false, true),
            ),
            // Read by a person (the failure script), or parsed as listings.
            ("replay", replay(&t, true).0, (false, false)),
            (
                "replay without deletions",
                replay(&t, false).0,
                (false, false),
            ),
            ("listing of the top", list_top(&t), (false, false)),
            (
                "listing of the trash",
                list_trash(&t, &soft),
                (false, false),
            ),
            ("pruning of the trash", prune_trash(&t), (false, false)),
        ];
        for (run, argv, (stats1, digits)) in rows {
            let at = |word: &str| argv.iter().position(|a| a == word);
            assert_eq!(
                (
                    at("--info=stats1").is_some(),
                    at("--no-human-readable").is_some()
                ),
                (stats1, digits),
                "{run}: {}",
                joined(&argv)
            );
            for ours in ["--info=stats1", "--no-human-readable"] {
                if let (Some(ours), Some(users)) = (at(ours), at("--info=stats0")) {
                    assert!(ours > users, "{run}: {}", joined(&argv));
                }
            }
        }
    }

    #[test]
    fn sent_bytes_table() {
        let rows: &[(&str, &[u8], Option<u64>)] = &[
            (
                "--info=stats1 --no-human-readable",
                b"\nsent 100118 bytes  received 117 bytes  200470.00 bytes/sec\n\
                  total size is 100000  speedup is 1.00\n",
                Some(100_118),
            ),
            (
                "separators",
                b"\nsent 3,000,824 bytes  received 35 bytes  6,001,718.00 bytes/sec\n\
                  total size is 3,000,000  speedup is 1.00\n",
                Some(3_000_824),
            ),
            (
                "separators where the decimal point is a comma",
                b"sent 3.000.824 bytes  received 35 bytes  6.001.718,00 bytes/sec\n",
                Some(3_000_824),
            ),
            (
                "-v: names before it, one of them a look-alike",
                b"sending incremental file list\n\
                  sent 5 bytes  received 1 bytes  0.00 bytes/sec\n\
                  dir/\n\
                  dir/f\n\
                  \n\
                  sent 1,234 bytes  received 56 bytes  2,580.00 bytes/sec\n\
                  total size is 1,000  speedup is 0.78\n",
                Some(1_234),
            ),
            (
                "--progress: carriage returns before the summary",
                b"big\n      32,768   1%    0.00kB/s    0:00:00\r   3,000,000 100%  \
                  1.38GB/s    0:00:00 (xfr#1, to-chk=0/1)\n\nsent 3000824 bytes  received \
                  35 bytes  6001718.00 bytes/sec\n",
                Some(3_000_824),
            ),
            (
                "--stats",
                b"Number of files: 1 (reg: 1)\nTotal bytes sent: 101,954\n\
                  Total bytes received: 3,288\n",
                Some(101_954),
            ),
            (
                "--stats and the summary: the summary, last",
                b"Total bytes sent: 101954\nTotal bytes received: 3288\n\n\
                  sent 101954 bytes  received 3288 bytes  210484.00 bytes/sec\n",
                Some(101_954),
            ),
            (
                "no trailing newline",
                b"sent 0 bytes  received 0 bytes",
                Some(0),
            ),
            (
                "-h: units are not exact",
                b"sent 100.12K bytes  received 117 bytes  200.47K bytes/sec\n",
                None,
            ),
            (
                "-h below a thousand is exact",
                b"sent 117 bytes  received 100.12K bytes  200.47K bytes/sec\n",
                Some(117),
            ),
            ("nothing printed (-q, a failure)", b"", None),
            (
                "an error, no summary",
                b"rsync: [sender] link_stat \"/x\" failed: No such file or directory (2)\n",
                None,
            ),
            (
                "not at the start of a line",
                b" sent 5 bytes  received 1 bytes\n",
                None,
            ),
            ("received missing", b"sent 5 bytes\n", None),
            ("bad grouping", b"sent 1,23 bytes  received 1 bytes\n", None),
            (
                "mixed separators",
                b"sent 1,234.567 bytes  received 1 bytes\n",
                None,
            ),
            (
                "leading group too long",
                b"sent 1234,567 bytes  received 1 bytes\n",
                None,
            ),
            ("a sign", b"sent -5 bytes  received 1 bytes\n", None),
            (
                "beyond u64",
                b"sent 99999999999999999999 bytes  received 1 bytes\n",
                None,
            ),
            (
                "u64::MAX",
                b"sent 18446744073709551615 bytes  received 1 bytes\n",
                Some(u64::MAX),
            ),
            (
                "an unreadable summary does not fall back on an earlier look-alike",
                b"sent 12 bytes  received 1 bytes  26.00 bytes/sec\n\
                  sent 1.2K bytes  received 1 bytes  2.6K bytes/sec\n",
                None,
            ),
        ];
        for (name, output, expected) in rows {
            assert_eq!(sent_bytes(output), *expected, "{name}");
        }
    }

    #[test]
    fn nul_lists() {
        assert_eq!(nul_list([&b""[..], b"a\nb", b"#c"]), b".\0./a\nb\0./#c\0");
    }
}
