//! `sersync-generator`: turns the `<crontab>` of every `/etc/sersync/NAME.xml` into
//! systemd units (a systemd.generator(7), installed as
//! `/usr/lib/systemd/system-generators/sersync-generator`).
//!
//! # Why a generator
//!
//! sersync 2.5 ran its periodic full sync (`<crontab start="true" schedule="MINUTES">`)
//! on a thread of its own. Under systemd, `sersync-fullsync@NAME.timer` does it, so the
//! schedule shows in `systemctl list-timers` and each run in the journal. The config file
//! stays the one place where the schedule is written: systemd runs this generator at boot
//! and at every `systemctl daemon-reload`, and it translates `<crontab>` into drop-ins.
//! A `systemctl edit` recipe would copy the schedule into a second file that silently
//! disagrees with the config after the next edit.
//!
//! # What it writes
//!
//! For a valid `NAME.xml` with `<crontab start="true" schedule="N">`, into the normal
//! output directory:
//!
//! - `sersync@NAME.service.d/50-crontab.conf`: `Wants=sersync-fullsync@NAME.timer`, so the
//!   timer runs only while the instance runs (the timer `BindsTo=` the instance, and an
//!   instance that is not enabled never fires it), and
//!   `Environment=SERSYNC_CRONTAB=systemd`, which tells `sersyncd` that the timer is in
//!   charge so it does not also run the crontab in-process.
//! - `sersync-fullsync@NAME.timer.d/50-crontab.conf`: the timer's `OnActiveSec=` and
//!   `OnUnitActiveSec=` replaced by N minutes (first run N minutes after the instance
//!   started, then N minutes after the previous run started, as sersync 2.5).
//!
//! Without `<crontab start="true">` it writes nothing: the timer is not wanted.
//!
//! # Rules it keeps
//!
//! Generators run very early at boot, before most file systems are mounted and without
//! D-Bus or logging daemons, and must never stop the boot. So: it reads only the config
//! directory and writes only into the output directory; a config that cannot be used
//! (invalid, unreadable, a name that cannot be a unit instance) is reported on stderr
//! (systemd forwards it to the kernel log / journal) and skipped, never fatal; the exit
//! status is non-zero only for a wrong command line. `sersyncd` re-reports such a config
//! with every diagnostic when the instance starts.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config;

/// Where the instance configs live (`/etc/sersync/NAME.xml` for `sersync@NAME`).
pub const CONFIG_DIR: &str = "/etc/sersync";

/// Environment variable that overrides [`CONFIG_DIR`] (for tests).
pub const CONFIG_DIR_ENV: &str = "SERSYNC_CONFIG_DIR";

/// File name of both drop-ins.
pub const DROP_IN: &str = "50-crontab.conf";

/// Environment variable set on `sersync@NAME.service` when the timer runs the crontab.
pub const CRONTAB_ENV: &str = "SERSYNC_CRONTAB";

/// Value of [`CRONTAB_ENV`] meaning "systemd runs the `<crontab>` full syncs".
pub const CRONTAB_BY_SYSTEMD: &str = "systemd";

/// The longest unit name systemd accepts (`UNIT_NAME_MAX` minus the NUL).
const UNIT_NAME_MAX: usize = 255;

/// How many diagnostics of one invalid config are repeated on stderr; `sersyncd --check`
/// prints them all.
const MAX_REPORTED_ERRORS: usize = 3;

/// The three output directories of the generator protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDirs {
    /// Below /etc and above /usr/lib in the unit search path: the drop-ins go here, so an
    /// administrator's `/etc/systemd/system/UNIT.d/50-crontab.conf` (e.g. a symlink to
    /// /dev/null) replaces the generated one.
    pub normal: PathBuf,
    /// Above /etc (unused).
    pub early: PathBuf,
    /// Below /usr/lib (unused).
    pub late: PathBuf,
}

/// A command line the generator cannot work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// Not one and not three arguments.
    ArgumentCount(usize),
    /// An output directory that is not absolute (systemd always passes absolute ones).
    RelativeDirectory(PathBuf),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::ArgumentCount(count) => write!(
                f,
                "expected 3 output directories (NORMAL EARLY LATE) or 1, got {count} arguments"
            ),
            UsageError::RelativeDirectory(dir) => {
                write!(f, "output directory {} is not absolute", dir.display())
            }
        }
    }
}

impl std::error::Error for UsageError {}

impl OutputDirs {
    /// Parses the arguments after the program name: `NORMAL EARLY LATE`, or one directory
    /// used for all three (systemd.generator(7) allows that for tests).
    pub fn from_args<I>(args: I) -> Result<OutputDirs, UsageError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let args: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
        let dirs = match args.as_slice() {
            [one] => OutputDirs {
                normal: one.clone(),
                early: one.clone(),
                late: one.clone(),
            },
            [normal, early, late] => OutputDirs {
                normal: normal.clone(),
                early: early.clone(),
                late: late.clone(),
            },
            other => return Err(UsageError::ArgumentCount(other.len())),
        };
        for dir in [&dirs.normal, &dirs.early, &dirs.late] {
            if !dir.is_absolute() {
                return Err(UsageError::RelativeDirectory(dir.clone()));
            }
        }
        Ok(dirs)
    }
}

/// The config directory: `$SERSYNC_CONFIG_DIR` when set and not empty, else
/// [`CONFIG_DIR`].
pub fn config_dir_from_env() -> PathBuf {
    std::env::var_os(CONFIG_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_DIR))
}

/// What the generator decided for one `*.xml` file of the config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `<crontab start="true">`: the full-sync timer of `instance` fires every `minutes`.
    Timer {
        instance: String,
        config: PathBuf,
        minutes: u32,
    },
    /// A valid config without `<crontab start="true">`: nothing to write.
    NoCrontab,
    /// A file that cannot be used; nothing is written for it.
    Skipped { config: PathBuf, reason: SkipReason },
}

/// Why a config file was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The file name (without `.xml`) cannot be a unit instance name.
    InstanceName,
    /// The config does not load; its errors as `LINE:COL: MESSAGE`, in file order.
    Invalid { errors: Vec<String> },
    /// The config parser panicked (a bug); the instance gets no timer.
    ParserPanic,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::InstanceName => f.write_str(
                "the file name is not a valid systemd instance name (use letters, digits \
                 and \":_.-@\", not starting with \".\")",
            ),
            SkipReason::Invalid { errors } => {
                let count = errors.len();
                write!(
                    f,
                    "invalid config ({count} error{}",
                    if count == 1 { "" } else { "s" }
                )?;
                for (i, error) in errors.iter().take(MAX_REPORTED_ERRORS).enumerate() {
                    write!(f, "{} {error}", if i == 0 { ":" } else { ";" })?;
                }
                if count > MAX_REPORTED_ERRORS {
                    write!(
                        f,
                        "; and {} more: sersyncd --check -o FILE lists them",
                        count - MAX_REPORTED_ERRORS
                    )?;
                }
                f.write_str(")")
            }
            SkipReason::ParserPanic => f.write_str("the config parser failed (a bug)"),
        }
    }
}

/// A failure to read the config directory or to write into the output directory.
#[derive(Debug)]
pub enum Error {
    /// The config directory exists but cannot be listed.
    ReadDir { dir: PathBuf, source: io::Error },
    /// A drop-in (or its directory) cannot be written.
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadDir { dir, source } => {
                write!(f, "cannot list {}: {source}", dir.display())
            }
            Error::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadDir { source, .. } | Error::Write { source, .. } => Some(source),
        }
    }
}

/// True when `name` can be the instance of `sersync@NAME.service` such that the unit's
/// `/etc/sersync/%i.xml` (the raw instance) names the same file.
///
/// Only characters systemd keeps verbatim in unit names are accepted: `\` (escapes) is
/// refused because `%i` would keep `\x2d` literally while `systemctl` users type the
/// unescaped name, and `%` because it starts a specifier in unit files. A leading `.`
/// is a hidden file (an editor's swap file, a package manager's leftover).
pub fn is_valid_instance(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-' | b'@'))
        && timer_unit(name).len() <= UNIT_NAME_MAX
}

/// `sersync@NAME.service`.
pub fn service_unit(instance: &str) -> String {
    format!("sersync@{instance}.service")
}

/// `sersync-fullsync@NAME.timer`.
pub fn timer_unit(instance: &str) -> String {
    format!("sersync-fullsync@{instance}.timer")
}

/// The instance name of a config file: its name without `.xml`, when the file name ends
/// in `.xml` and is UTF-8. Other files (`web.xml~`, `web.xml.dpkg-old`, `README`) are not
/// configs and are ignored without a message.
fn instance_of(file_name: &OsStr) -> Option<&str> {
    file_name.to_str()?.strip_suffix(".xml")
}

/// Reads every `*.xml` of `config_dir`, in name order, and decides for each. A missing
/// directory means "no instances" (sersync may be installed but not configured).
pub fn scan(config_dir: &Path) -> Result<Vec<Decision>, Error> {
    let entries = match std::fs::read_dir(config_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::ReadDir {
                dir: config_dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadDir {
            dir: config_dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let Some(instance) = instance_of(&entry.file_name()).map(str::to_owned) else {
            continue;
        };
        // Follows symlinks: /etc/sersync/web.xml -> /srv/conf/web.xml is a config.
        if !path.is_file() {
            continue;
        }
        files.push((instance, path));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|(instance, path)| decide(instance, path))
        .collect())
}

fn decide(instance: String, config: PathBuf) -> Decision {
    if !is_valid_instance(&instance) {
        return Decision::Skipped {
            config,
            reason: SkipReason::InstanceName,
        };
    }
    // A panic in the parser must not cost the other instances their timers.
    let loaded = match std::panic::catch_unwind(|| config::load(&config)) {
        Ok(loaded) => loaded,
        Err(_) => {
            return Decision::Skipped {
                config,
                reason: SkipReason::ParserPanic,
            };
        }
    };
    match loaded {
        Ok((parsed, _warnings)) if parsed.crontab.enabled => Decision::Timer {
            instance,
            config,
            minutes: parsed.crontab.schedule_minutes.max(1),
        },
        Ok(_) => Decision::NoCrontab,
        Err(diagnostics) => Decision::Skipped {
            config,
            reason: SkipReason::Invalid {
                errors: diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| {
                        // The file is named once, before the reason.
                        if d.line == 0 {
                            d.message.clone()
                        } else {
                            format!("{}:{}: {}", d.line, d.col, d.message)
                        }
                    })
                    .collect(),
            },
        },
    }
}

/// A path for a comment line of a unit file (no line breaks).
fn comment_path(path: &Path) -> String {
    path.display().to_string().replace(['\n', '\r'], "?")
}

/// The drop-in for `sersync@NAME.service`.
pub fn service_drop_in(instance: &str, config: &Path, minutes: u32) -> String {
    format!(
        "# Generated by sersync-generator from {config}\n\
         # (<crontab start=\"true\" schedule=\"{minutes}\">): systemd runs the periodic full\n\
         # sync, sersyncd does not. Edit the config, then `systemctl daemon-reload` and\n\
         # restart {service}.\n\
         [Unit]\n\
         Wants={timer}\n\
         \n\
         [Service]\n\
         Environment={CRONTAB_ENV}={CRONTAB_BY_SYSTEMD}\n",
        config = comment_path(config),
        service = service_unit(instance),
        timer = timer_unit(instance),
    )
}

/// The drop-in for `sersync-fullsync@NAME.timer`: the empty assignment drops the
/// template's default trigger times before the configured ones are set.
pub fn timer_drop_in(config: &Path, minutes: u32) -> String {
    format!(
        "# Generated by sersync-generator from {config}\n\
         # (<crontab start=\"true\" schedule=\"{minutes}\">).\n\
         [Timer]\n\
         OnActiveSec=\n\
         OnActiveSec={minutes}min\n\
         OnUnitActiveSec={minutes}min\n",
        config = comment_path(config),
    )
}

/// Writes both drop-ins of one instance into `normal`.
pub fn write_drop_ins(
    normal: &Path,
    instance: &str,
    config: &Path,
    minutes: u32,
) -> Result<(), Error> {
    write_drop_in(
        &normal.join(format!("{}.d", service_unit(instance))),
        &service_drop_in(instance, config, minutes),
    )?;
    write_drop_in(
        &normal.join(format!("{}.d", timer_unit(instance))),
        &timer_drop_in(config, minutes),
    )
}

fn write_drop_in(dir: &Path, text: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DROP_IN);
    std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
}

/// Runs the generator: scans `config_dir`, writes drop-ins into `dirs.normal`, and
/// reports every skipped file and failed write on `log` (one line each, prefixed with
/// `sersync-generator: `). Never fails: a problem with one instance does not stop the
/// others.
pub fn run(dirs: &OutputDirs, config_dir: &Path, log: &mut dyn Write) {
    let decisions = match scan(config_dir) {
        Ok(decisions) => decisions,
        Err(err) => {
            let _ = writeln!(log, "sersync-generator: {err}; no full-sync timers");
            return;
        }
    };
    for decision in decisions {
        match decision {
            Decision::Timer {
                instance,
                config,
                minutes,
            } => match write_drop_ins(&dirs.normal, &instance, &config, minutes) {
                Ok(()) => {}
                Err(err) => {
                    let _ = writeln!(
                        log,
                        "sersync-generator: {err}; {} gets no full-sync timer",
                        service_unit(&instance)
                    );
                }
            },
            Decision::NoCrontab => {}
            Decision::Skipped { config, reason } => {
                let _ = writeln!(
                    log,
                    "sersync-generator: {}: {reason}; skipped, no full-sync timer",
                    comment_path(&config)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments() {
        let three = OutputDirs::from_args(os(&["/run/n", "/run/e", "/run/l"])).unwrap();
        assert_eq!(three.normal, PathBuf::from("/run/n"));
        assert_eq!(three.early, PathBuf::from("/run/e"));
        assert_eq!(three.late, PathBuf::from("/run/l"));
        let one = OutputDirs::from_args(os(&["/tmp/x"])).unwrap();
        assert_eq!(one.normal, one.late);
        assert_eq!(
            OutputDirs::from_args(os(&[])),
            Err(UsageError::ArgumentCount(0))
        );
        assert_eq!(
            OutputDirs::from_args(os(&["/a", "/b"])),
            Err(UsageError::ArgumentCount(2))
        );
        assert_eq!(
            OutputDirs::from_args(os(&["/a", "b", "/c"])),
            Err(UsageError::RelativeDirectory(PathBuf::from("b")))
        );
    }

    #[test]
    fn instance_names() {
        for ok in ["web", "web-1", "a.b", "x_y:z", "user@host", "W3b"] {
            assert!(is_valid_instance(ok), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "my web",
            "a%i",
            "a\\x2db",
            "ünï",
            "a/b",
            &"x".repeat(250),
        ] {
            assert!(!is_valid_instance(bad), "{bad}");
        }
        assert_eq!(instance_of(OsStr::new("web.xml")), Some("web"));
        assert_eq!(instance_of(OsStr::new("web.xml~")), None);
        assert_eq!(instance_of(OsStr::new("web.xml.dpkg-old")), None);
        assert_eq!(instance_of(OsStr::new(".xml")), Some(""));
    }

    #[test]
    fn drop_in_texts() {
        let service = service_drop_in("web", Path::new("/etc/sersync/web.xml"), 5);
        assert!(service.contains("\n[Unit]\nWants=sersync-fullsync@web.timer\n"));
        assert!(service.contains("\n[Service]\nEnvironment=SERSYNC_CRONTAB=systemd\n"));
        let timer = timer_drop_in(Path::new("/etc/sersync/web.xml"), 600);
        assert!(
            timer.ends_with("[Timer]\nOnActiveSec=\nOnActiveSec=600min\nOnUnitActiveSec=600min\n")
        );
        // A line break in the directory cannot end the comment early.
        let odd = timer_drop_in(Path::new("/tmp/a\nb/web.xml"), 1);
        assert!(
            odd.lines()
                .all(|l| l.starts_with('#') || !l.contains("web.xml"))
        );
    }

    #[test]
    fn skip_reason_lists_a_few_errors() {
        let reason = SkipReason::Invalid {
            errors: (1..=5).map(|i| format!("{i}:1: e{i}")).collect(),
        };
        assert_eq!(
            reason.to_string(),
            "invalid config (5 errors: 1:1: e1; 2:1: e2; 3:1: e3; \
             and 2 more: sersyncd --check -o FILE lists them)"
        );
        let one = SkipReason::Invalid {
            errors: vec!["cannot read config file: denied".into()],
        };
        assert_eq!(
            one.to_string(),
            "invalid config (1 error: cannot read config file: denied)"
        );
    }

    #[test]
    fn missing_config_dir_is_no_instances() {
        let decisions = scan(Path::new("/nonexistent/sersync-generator-test")).unwrap();
        assert!(decisions.is_empty());
    }
}
