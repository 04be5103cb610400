//! Which paths failed: reading rsync's per-file error messages (exit 23).
//!
//! Exit 23 means "some files/attrs were not transferred": the rest of the batch is on the
//! remote, and retrying only what failed is cheaper and, above all, lets a permanently
//! failing file stop holding back its neighbours. rsync names each failure on stderr; the
//! forms below were checked against rsync 3.5.0 (local copies run as `nobody`, and pushes
//! to a local `rsync --daemon` with an unprivileged module uid; see the fixtures in the
//! tests):
//!
//! ```text
//! rsync: [sender] send_files failed to open "/srv/www/a.txt": Permission denied (13)
//! rsync: [sender] link_stat "/srv/www/gone" failed: No such file or directory (2)
//! rsync: [generator] recv_generator: mkdir "locked/inner" (in web) failed: Permission denied (13)
//! rsync: [receiver] mkstemp "locked/.newfile.wMn8lK" (in web) failed: Permission denied (13)
//! rsync: [receiver] rename "sticky/.owned.1NSHPa" (in web) -> "sticky/owned": Operation not permitted (1)
//! rsync: [generator] delete_file: unlink(locked/victim) failed: Permission denied (13)
//! rsync: [generator] failed to set times on "locked" (in web): Operation not permitted (1)
//! could not make way for new regular file: isdir
//! ```
//!
//! # Path encoding
//!
//! rsync escapes every byte it considers unprintable in its messages as `\#ooo` (three
//! octal digits): control characters such as newline (`\#012`), and in a non-UTF-8 locale
//! (systemd services run in `C`) every byte ≥ 0x80. A literal backslash that would read
//! as an escape is itself escaped (`\#134`), so [`unescape`] is exact and paths come back
//! as raw bytes (`Vec<u8>`), which is what file names are. Tabs and `"` are not escaped,
//! so quoted paths are delimited by their *last* `"` before the known message tail.
//!
//! Sender paths are absolute: rsync's working directory (from `getcwd`, so symlinks are
//! resolved) joined with the relative path. Receiver paths in daemon mode are relative
//! to the module (`"dir/f" (in web)`), with a leading `/` when the destination is a
//! sub-directory of the module. Paths without quotes (`delete_file`, `could not make way`)
//! are relative to the receiver's destination directory.
//!
//! # Why the result may be incomplete
//!
//! rsync's processes share one stderr and write a message in pieces around each escape,
//! so two messages can interleave mid-line (observed: a generator line spliced into a
//! sender line after `\#377`). stderr may also have been truncated to its tail by the
//! caller. [`parse`] therefore recognises every line it can and counts the rest; a report
//! with any unrecognised line is not [`complete`](StderrReport::complete), and
//! [`retry_set`] then answers "retry the whole batch". Narrowing a retry is only done when
//! it is provably safe.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

/// Which rsync process reported the failure (the `[sender]` tag of rsync ≥ 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Sender,
    Receiver,
    Generator,
    /// No tag (older rsync, or a message rsync prints without one).
    Unknown,
}

/// What went wrong with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The source could not be read (`send_files failed to open`, `opendir`,
    /// `read errors mapping`).
    Read,
    /// The source could not be stat'ed (`link_stat`, `readlink_stat`, `change_dir`), or the
    /// receiver could not stat the destination (`recv_generator: failed to stat`).
    Stat,
    /// A destination directory could not be created.
    Mkdir,
    /// The receiver's temporary file could not be created (`mkstemp`); the path is the
    /// final name recovered from the temporary one.
    TempFile,
    /// The finished temporary file could not be renamed (or copied) into place.
    Rename,
    /// A destination entry could not be deleted (`delete_file: unlink(…)`/`rmdir(…)`).
    Delete,
    /// Times, permissions or ownership could not be set.
    Attributes,
    /// A destination entry of another type could not be removed to make way.
    MakeWay,
    /// A destination special file, symlink or hard link could not be created.
    Create,
    /// Writing the destination file failed.
    Write,
    /// The daemon's module filter (`exclude`, `filter`, a per-directory merge file)
    /// refused the entry; a refused directory is skipped with everything below it.
    Refused,
}

/// One path named in a per-file error message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailedPath {
    /// Raw bytes, unescaped; see the module documentation for what it is relative to.
    pub path: Vec<u8>,
    pub kind: FailureKind,
    pub side: Side,
    /// The daemon module for receiver-side paths (`(in web)`), unescaped.
    pub module: Option<Vec<u8>>,
}

/// Everything [`parse`] found in one stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrReport {
    /// Per-path failures, in stderr order (duplicates kept).
    pub failures: Vec<FailedPath>,
    /// Paths reported as vanished (exit 24); nothing to retry.
    pub vanished: Vec<Vec<u8>>,
    /// Lines that are neither a known per-path message nor known noise (lossy UTF-8, for
    /// logs). Any of them makes the report incomplete.
    pub unrecognised: Vec<String>,
}

impl StderrReport {
    /// Whether every line of stderr was understood, so that `failures` is the full list.
    pub fn complete(&self) -> bool {
        self.unrecognised.is_empty()
    }
}

/// `"path"` optionally followed by ` (in module)`, as rsync's `full_fname()` writes it.
const QUOTED: &str = r#""(?P<p>.*)"(?: \(in (?P<m>[^)]*)\))?"#;
/// `: strerror (errno)` as `rsyserr()` appends it; strerror texts contain no `"`.
const ERRNO: &str = r#": [^"]* \(\d+\)"#;

struct Form {
    kind: FailureKind,
    regex: Regex,
}

fn form(kind: FailureKind, pattern: &str) -> Form {
    let pattern = pattern.replace("{Q}", QUOTED).replace("{E}", ERRNO);
    Form {
        kind,
        regex: constant_regex(&format!("^{pattern}$")),
    }
}

/// Compiles one of this module's constant patterns (all exercised by the tests).
#[allow(clippy::expect_used)]
fn constant_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex is valid")
}

/// `rsync: [role] message`, the prefix of every `rsyserr()` / `rprintf(FERROR…)` line.
static PREFIX: LazyLock<Regex> =
    LazyLock::new(|| constant_regex(r"^rsync: (?:\[(?P<role>[A-Za-z]+)\] )?(?P<msg>.*)$"));

/// Messages that follow the `rsync: [role] ` prefix.
static FORMS: LazyLock<Vec<Form>> = LazyLock::new(|| {
    use FailureKind::*;
    vec![
        form(Read, "send_files failed to open {Q}{E}"),
        form(Read, "opendir {Q} failed{E}"),
        form(Read, "read errors mapping {Q}{E}"),
        form(Stat, "link_stat {Q} failed{E}"),
        form(Stat, r"readlink_stat\({Q}\) failed{E}"),
        form(Stat, "recv_generator: failed to stat {Q}{E}"),
        form(Stat, r"change_dir(?:#\d)? {Q} failed{E}"),
        form(Mkdir, "recv_generator: mkdir {Q} failed{E}"),
        form(Mkdir, "mkdir {Q} failed{E}"),
        form(TempFile, "mkstemp {Q} failed{E}"),
        form(Rename, r#"(?:rename|copy) {Q} -> "(?P<d>.*)"{E}"#),
        form(
            Delete,
            r"delete_file: (?:unlink|rmdir)\((?P<p>.*)\) failed{E}",
        ),
        form(
            Attributes,
            "failed to (?:set times on|set permissions on|modify permissions on) {Q}{E}",
        ),
        form(Attributes, "(?:lchown|chown|chmod) {Q} failed{E}"),
        form(Create, "mknod {Q} failed{E}"),
        form(Create, r#"symlink {Q} -> ".*" failed{E}"#),
        form(Write, "write failed on {Q}{E}"),
    ]
});

/// `could not make way for new regular file: name` (an `rprintf`, no `rsync:` prefix).
static MAKE_WAY: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(
        r"^could not make way for (?:new|backup) (?:regular file|directory|symlink|device file|special file): (?P<p>.+)$",
    )
});

/// `ERROR: daemon refused to receive file "dir/name"` (or `directory`): a receiver-side
/// `rprintf` the daemon forwards to the client, relative to the destination directory.
static REFUSED: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(
        r#"^(?:rsync: (?:\[[A-Za-z]+\] )?)?ERROR: daemon refused to receive (?:file|directory) "(?P<p>.*)"$"#,
    )
});

/// `file has vanished: "/srv/www/a"` (exit 24).
static VANISHED: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(&format!(
        r"^(?:rsync: (?:\[[A-Za-z]+\] )?)?\w+ has vanished: {QUOTED}$"
    ))
});

/// Lines that carry no path and do not hide one. Not among them: `IO error encountered
/// -- skipping file deletion` (every deletion of the run was skipped, named or not) and
/// `cannot delete non-empty directory: …` (a deletion that did not happen): they leave a
/// report incomplete, so the whole batch is retried.
static NOISE: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(concat!(
        r"^(?:rsync error: .*|rsync warning: .*",
        r"|\*\*\* Skipping any contents from this failed directory \*\*\*",
        r"|sent \d[\d,]* bytes .*|total size is .*)$"
    ))
});

/// Undoes rsync's `\#ooo` escaping of unprintable bytes in messages.
pub fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if let [
            b'\\',
            b'#',
            a @ b'0'..=b'3',
            b @ b'0'..=b'7',
            c @ b'0'..=b'7',
            ..,
        ] = text[i..]
        {
            out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
            i += 5;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn side(role: Option<&[u8]>) -> Side {
    match role {
        Some(b"sender") => Side::Sender,
        Some(b"receiver" | b"Receiver") => Side::Receiver,
        Some(b"generator") => Side::Generator,
        _ => Side::Unknown,
    }
}

/// The final name from a temporary one: `dir/.name.XXXXXX` → `dir/name`. `None` when the
/// shape does not match or rsync may have truncated the name (it keeps at most
/// `NAME_MAX - 9` bytes of it, trimming a split multi-byte character).
fn name_from_temp(temp: &[u8]) -> Option<Vec<u8>> {
    let slash = temp.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let (dir, base) = temp.split_at(slash);
    let inner = base.strip_prefix(b".")?;
    let (name, suffix) = inner.split_at(inner.len().checked_sub(7)?);
    let random_ok = suffix[0] == b'.' && suffix[1..].iter().all(u8::is_ascii_alphanumeric);
    if !random_ok || name.is_empty() || name.len() >= 240 {
        return None;
    }
    let mut path = dir.to_vec();
    path.extend_from_slice(name);
    Some(path)
}

/// Recognises one line; `Err(())` if it is not understood.
fn parse_line(line: &[u8], report: &mut StderrReport) -> Result<(), ()> {
    if line.iter().all(u8::is_ascii_whitespace) || NOISE.is_match(line) {
        return Ok(());
    }
    if let Some(caps) = VANISHED.captures(line) {
        report.vanished.push(unescape(&caps["p"]));
        return Ok(());
    }
    if let Some(caps) = REFUSED.captures(line) {
        report.failures.push(FailedPath {
            path: unescape(&caps["p"]),
            kind: FailureKind::Refused,
            side: Side::Generator,
            module: None,
        });
        return Ok(());
    }
    if let Some(caps) = MAKE_WAY.captures(line) {
        report.failures.push(FailedPath {
            path: unescape(&caps["p"]),
            kind: FailureKind::MakeWay,
            side: Side::Unknown,
            module: None,
        });
        return Ok(());
    }
    let caps = PREFIX.captures(line).ok_or(())?;
    let role = caps.name("role").map(|m| m.as_bytes());
    let message = caps.name("msg").ok_or(())?.as_bytes();
    for form in FORMS.iter() {
        if let Some(found) = form.regex.captures(message) {
            report
                .failures
                .push(failed_path(form.kind, side(role), &found)?);
            return Ok(());
        }
    }
    Err(())
}

fn failed_path(kind: FailureKind, side: Side, caps: &Captures<'_>) -> Result<FailedPath, ()> {
    let module = caps.name("m").map(|m| unescape(m.as_bytes()));
    let path = match kind {
        // The destination of the rename, not the temporary file.
        FailureKind::Rename => unescape(caps.name("d").ok_or(())?.as_bytes()),
        FailureKind::TempFile => {
            name_from_temp(&unescape(caps.name("p").ok_or(())?.as_bytes())).ok_or(())?
        }
        _ => unescape(caps.name("p").ok_or(())?.as_bytes()),
    };
    // The rename destination and delete paths are printed without full_fname(): relative
    // to the destination directory, with no module suffix.
    let module = if matches!(kind, FailureKind::Rename | FailureKind::Delete) {
        None
    } else {
        module
    };
    Ok(FailedPath {
        path,
        kind,
        side,
        module,
    })
}

/// Reads rsync's stderr (bytes, as captured) and lists the per-path failures in it.
pub fn parse(stderr: impl AsRef<[u8]>) -> StderrReport {
    let mut report = StderrReport::default();
    for line in stderr.as_ref().split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if parse_line(line, &mut report).is_err() {
            report
                .unrecognised
                .push(String::from_utf8_lossy(line).into_owned());
        }
    }
    report
}

/// The distinct failed paths in stderr, in order of appearance (raw bytes). A convenience
/// for logs and the failure record; to decide what to retry use [`retry_set`].
pub fn failed_paths(stderr: impl AsRef<[u8]>) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    parse(stderr)
        .failures
        .into_iter()
        .map(|failure| failure.path)
        .filter(|path| seen.insert(path.clone()))
        .collect()
}

/// `a/./b//c/` → `a/b/c`; `None` if the path climbs with `..`.
fn normalise(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            part => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Some(out)
}

/// `failure`'s path relative to the watch root, if it can be known.
fn relative(failure: &FailedPath, roots: &[&[u8]]) -> Option<Vec<u8>> {
    let path = failure.path.as_slice();
    if failure.module.is_some() {
        // Module-relative. A leading `/` means the destination is a sub-directory of the
        // module, which we cannot strip without knowing it: no mapping.
        return if path.starts_with(b"/") {
            None
        } else {
            normalise(path)
        };
    }
    if !path.starts_with(b"/") {
        // Relative to the destination directory: with `--relative`, the same as relative
        // to the watch root.
        return normalise(path);
    }
    roots.iter().find_map(|root| {
        let root = normalise(root)?;
        let rest = path.strip_prefix(b"/")?.strip_prefix(root.as_slice())?;
        if rest.is_empty() || rest.starts_with(b"/") {
            normalise(rest)
        } else {
            None
        }
    })
}

fn is_ancestor(ancestor: &[u8], path: &[u8]) -> bool {
    path != ancestor && crate::relpath::is_at_or_below(path, ancestor)
}

/// The paths to retry after exit 23, or `None` for "retry the whole batch".
///
/// `batch` is what the run was given (root-relative, as on rsync's stdin; the root itself
/// is the empty path). `roots` is the watch root as rsync saw it: pass both the configured
/// path and its `fs::canonicalize`d form, since rsync resolves symlinks in its working
/// directory.
///
/// Narrowing happens only when the report is complete and every failure maps into the
/// batch (receiver paths map only when the destination is the module's root or, over ssh,
/// the destination directory itself): a failed path in the batch is retried; a failed implied parent directory retries
/// the batch entries beneath it; a failure beneath a batch entry (a directory the batch
/// deleted or replaced recursively) retries the deepest such entry. The answer only ever
/// holds batch entries: a path the batch does not hold would be retried without the action
/// that failed on it. Anything else (unrecognised lines, no failure named, a path outside
/// the root, a receiver path that cannot be mapped) returns `None`.
pub fn retry_set(
    batch: &[Vec<u8>],
    report: &StderrReport,
    roots: &[&[u8]],
) -> Option<Vec<Vec<u8>>> {
    if !report.complete() || report.failures.is_empty() {
        return None;
    }
    let entries: Vec<Vec<u8>> = batch.iter().map(|p| normalise(p)).collect::<Option<_>>()?;
    let mut wanted = HashSet::new();
    for failure in &report.failures {
        let path = relative(failure, roots)?;
        if failure.kind == FailureKind::Refused {
            // A refused directory takes everything below it along, unnamed.
            wanted.extend(
                entries
                    .iter()
                    .filter(|entry| is_ancestor(&path, entry))
                    .cloned(),
            );
        }
        if entries.contains(&path) {
            wanted.insert(path);
        } else if entries.iter().any(|entry| is_ancestor(&path, entry)) {
            wanted.extend(
                entries
                    .iter()
                    .filter(|entry| is_ancestor(&path, entry))
                    .cloned(),
            );
        } else if let Some(enclosing) = entries
            .iter()
            .filter(|entry| is_ancestor(entry, &path))
            .max_by_key(|entry| entry.len())
        {
            wanted.insert(enclosing.clone());
        } else {
            return None;
        }
    }
    let mut seen = HashSet::new();
    let retry: Vec<Vec<u8>> = batch
        .iter()
        .zip(&entries)
        .filter(|(_, normal)| wanted.contains(*normal) && seen.insert(normal.to_vec()))
        .map(|(original, _)| original.clone())
        .collect();
    Some(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use FailureKind::*;

    fn fp(path: &[u8], kind: FailureKind, side: Side, module: Option<&[u8]>) -> FailedPath {
        FailedPath {
            path: path.to_vec(),
            kind,
            side,
            module: module.map(<[u8]>::to_vec),
        }
    }

    /// rsync 3.5.0, `--files-from=- --from0` local copy run as `nobody`: unreadable
    /// sources (one with a newline in its name) and a missing one.
    const FILES_FROM: &str = r#"rsync: [sender] link_stat "/tmp/fx/s2/gone" failed: No such file or directory (2)
rsync: [sender] send_files failed to open "/tmp/fx/s2/dir/nl\#012x": Permission denied (13)
rsync: [sender] send_files failed to open "/tmp/fx/s2/dir/sp ace": Permission denied (13)
rsync: [sender] send_files failed to open "/tmp/fx/s2/dir/unreadable": Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"#;

    /// rsync 3.5.0 pushing to `rsync --daemon` module `rw` (uid nobody) whose `locked`
    /// directory is root-owned 0555.
    const DAEMON: &str = r#"rsync: [sender] link_stat "/tmp/fx/p/missing.txt" failed: No such file or directory (2)
rsync: [generator] failed to set times on "locked" (in rw): Operation not permitted (1)
rsync: [generator] recv_generator: mkdir "locked/inner" (in rw) failed: Permission denied (13)
*** Skipping any contents from this failed directory ***
rsync: [receiver] mkstemp "locked/.n\#012l\#001.qV4Ne3" (in rw) failed: Permission denied (13)
rsync: [receiver] mkstemp "locked/.newfile.wMn8lK" (in rw) failed: Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"#;

    /// The same daemon, `--delete-missing-args` for a file in the read-only directory.
    const DELETE: &str = r#"rsync: [generator] failed to set times on "locked" (in rw): Operation not permitted (1)
rsync: [generator] delete_file: unlink(locked/victim) failed: Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"#;

    /// The same daemon; a root-owned file in a sticky directory cannot be replaced.
    const RENAME: &str = r#"rsync: [generator] failed to set times on "sticky" (in rw): Operation not permitted (1)
rsync: [generator] failed to modify permissions on "sticky" (in rw): Operation not permitted (1)
rsync: [receiver] rename "sticky/.owned.1NSHPa" (in rw) -> "sticky/owned": Operation not permitted (1)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"#;

    /// A file sent where the receiver has a populated directory of that name.
    const MAKE_WAY_FIXTURE: &str = "could not make way for new regular file: isdir\nrsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]\n";

    /// A local copy as `nobody`: names with a tab, a `"`, an escaped backslash and a
    /// non-UTF-8 byte, and the receiver unable to write.
    const LOCAL: &[u8] = b"rsync: [sender] send_files failed to open \"/tmp/fx/src/back\\#134#012slash\": Permission denied (13)
rsync: [generator] recv_generator: mkdir \"/tmp/fx/dst/sub\" failed: Permission denied (13)
*** Skipping any contents from this failed directory ***
rsync: [sender] send_files failed to open \"/tmp/fx/src/hi\\#377gh\": Permission denied (13)
rsync: [sender] send_files failed to open \"/tmp/fx/src/new\\#012line.txt\": Permission denied (13)
rsync: [sender] send_files failed to open \"/tmp/fx/src/q\"uote.txt\": Permission denied (13)
rsync: [sender] send_files failed to open \"/tmp/fx/src/tab\tx\": Permission denied (13)
rsync: [receiver] mkstemp \"/tmp/fx/dst/.ok.txt.DR3gZK\" failed: Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
";

    /// The same run, captured once with the generator's message spliced into the middle
    /// of the sender's (rsync writes a message in pieces around each escape).
    const INTERLEAVED: &[u8] = b"rsync: [sender] send_files failed to open \"/tmp/fx/src/back\\#134#012slash\": Permission denied (13)
rsync: [sender] send_files failed to open \"/tmp/fx/src/hi\\#377rsync: [generator] recv_generator: mkdir \"/tmp/fx/dst/sub\" failed: Permission denied (13)
gh\": Permission denied (13)
*** Skipping any contents from this failed directory ***
rsync: [sender] send_files failed to open \"/tmp/fx/src/secret.txt\": Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
";

    #[test]
    fn forms_compile() {
        assert!(FORMS.len() > 10);
        for regex in [&*PREFIX, &*MAKE_WAY, &*VANISHED, &*NOISE] {
            assert!(!regex.as_str().is_empty());
        }
    }

    #[test]
    fn unescape_table() {
        for (input, output) in [
            (&br"plain"[..], &b"plain"[..]),
            (br"a\#012b", b"a\nb"),
            (br"\#000\#001\#377", b"\0\x01\xff"),
            (br"back\#134#012slash", br"back\#012slash"),
            (br"\#0", br"\#0"),
            (br"\#08x", br"\#08x"),
            (br"\#400", br"\#400"),
            (br"\\#012", b"\\\n"),
            (br"tail\", br"tail\"),
            (br"tail\#", br"tail\#"),
        ] {
            assert_eq!(
                unescape(input),
                output,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn files_from_fixture() {
        let report = parse(FILES_FROM);
        assert!(report.complete(), "{:?}", report.unrecognised);
        assert_eq!(
            report.failures,
            vec![
                fp(b"/tmp/fx/s2/gone", Stat, Side::Sender, None),
                fp(b"/tmp/fx/s2/dir/nl\nx", Read, Side::Sender, None),
                fp(b"/tmp/fx/s2/dir/sp ace", Read, Side::Sender, None),
                fp(b"/tmp/fx/s2/dir/unreadable", Read, Side::Sender, None),
            ]
        );
        let batch: Vec<Vec<u8>> = [
            &b"dir/unreadable"[..],
            b"dir/ok",
            b"dir/nl\nx",
            b"./dir/sp ace",
            b"gone",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        // The configured root is a symlink to what rsync reports: either root works.
        assert_eq!(
            retry_set(&batch, &report, &[b"/tmp/fx/s2link", b"/tmp/fx/s2/"]),
            Some(vec![
                b"dir/unreadable".to_vec(),
                b"dir/nl\nx".to_vec(),
                b"./dir/sp ace".to_vec(),
                b"gone".to_vec(),
            ])
        );
        // Under another root nothing maps: retry everything.
        assert_eq!(retry_set(&batch, &report, &[b"/tmp/fx/s2link"]), None);
        assert_eq!(retry_set(&batch, &report, &[b"/tmp/fx/s"]), None);
    }

    #[test]
    fn daemon_fixture() {
        let report = parse(DAEMON);
        assert!(report.complete(), "{:?}", report.unrecognised);
        let rw = Some(&b"rw"[..]);
        assert_eq!(
            report.failures,
            vec![
                fp(b"/tmp/fx/p/missing.txt", Stat, Side::Sender, None),
                fp(b"locked", Attributes, Side::Generator, rw),
                fp(b"locked/inner", Mkdir, Side::Generator, rw),
                fp(b"locked/n\nl\x01", TempFile, Side::Receiver, rw),
                fp(b"locked/newfile", TempFile, Side::Receiver, rw),
            ]
        );
        let batch: Vec<Vec<u8>> = [
            &b"locked/newfile"[..],
            b"locked/inner",
            b"locked/n\nl\x01",
            b"missing.txt",
            b"elsewhere/fine",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        // "locked" is an implied parent: its entries are retried; "elsewhere" is not.
        assert_eq!(
            retry_set(&batch, &report, &[b"/tmp/fx/p"]),
            Some(batch[..4].to_vec())
        );
        assert_eq!(
            failed_paths(DAEMON),
            vec![
                b"/tmp/fx/p/missing.txt".to_vec(),
                b"locked".to_vec(),
                b"locked/inner".to_vec(),
                b"locked/n\nl\x01".to_vec(),
                b"locked/newfile".to_vec(),
            ]
        );
    }

    #[test]
    fn delete_rename_and_make_way_fixtures() {
        let report = parse(DELETE);
        assert!(report.complete(), "{:?}", report.unrecognised);
        assert_eq!(
            report.failures[1],
            fp(b"locked/victim", Delete, Side::Generator, None)
        );
        let batch = vec![b"locked/victim".to_vec(), b"other".to_vec()];
        assert_eq!(
            retry_set(&batch, &report, &[b"/srv"]),
            Some(vec![b"locked/victim".to_vec()])
        );

        let report = parse(RENAME);
        assert!(report.complete(), "{:?}", report.unrecognised);
        assert_eq!(
            report.failures,
            vec![
                fp(b"sticky", Attributes, Side::Generator, Some(b"rw")),
                fp(b"sticky", Attributes, Side::Generator, Some(b"rw")),
                fp(b"sticky/owned", Rename, Side::Receiver, None),
            ]
        );
        assert_eq!(
            failed_paths(RENAME),
            vec![b"sticky".to_vec(), b"sticky/owned".to_vec()]
        );

        let report = parse(MAKE_WAY_FIXTURE);
        assert!(report.complete());
        assert_eq!(
            report.failures,
            vec![fp(b"isdir", MakeWay, Side::Unknown, None)]
        );
    }

    #[test]
    fn local_fixture_with_awkward_names() {
        let report = parse(LOCAL);
        assert!(report.complete(), "{:?}", report.unrecognised);
        let paths: Vec<&[u8]> = report.failures.iter().map(|f| f.path.as_slice()).collect();
        assert_eq!(
            paths,
            vec![
                &b"/tmp/fx/src/back\\#012slash"[..],
                b"/tmp/fx/dst/sub",
                b"/tmp/fx/src/hi\xffgh",
                b"/tmp/fx/src/new\nline.txt",
                b"/tmp/fx/src/q\"uote.txt",
                b"/tmp/fx/src/tab\tx",
                b"/tmp/fx/dst/ok.txt",
            ]
        );
        // The receiver's paths are under the destination, not the root: no narrowing.
        let batch = vec![b"secret.txt".to_vec(), b"ok.txt".to_vec()];
        assert_eq!(retry_set(&batch, &report, &[b"/tmp/fx/src"]), None);
    }

    #[test]
    fn interleaved_output_is_incomplete() {
        let report = parse(INTERLEAVED);
        assert!(!report.complete());
        assert_eq!(report.unrecognised.len(), 2, "{:?}", report.unrecognised);
        // What was recognised is still right...
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.path == b"/tmp/fx/src/secret.txt")
        );
        // ...but narrowing is refused.
        let batch = vec![b"secret.txt".to_vec(), b"hi\xffgh".to_vec()];
        assert_eq!(retry_set(&batch, &report, &[b"/tmp/fx/src"]), None);
    }

    #[test]
    fn noise_vanished_and_unknown_lines() {
        let stderr = concat!(
            "file has vanished: \"/srv/www/tmp\\#012file\"\n",
            "rsync warning: some files vanished before they could be transferred (code 24) at main.c(1394) [sender=3.5.0]\n",
            "IO error encountered -- skipping file deletion\n",
            "\n",
            "rsync: [sender] read error: Connection reset by peer (104)\r\n",
        );
        let report = parse(stderr);
        assert_eq!(report.vanished, vec![b"/srv/www/tmp\nfile".to_vec()]);
        assert!(report.failures.is_empty());
        // Skipped deletions are named nowhere: never narrowed.
        assert_eq!(
            report.unrecognised,
            vec![
                "IO error encountered -- skipping file deletion".to_owned(),
                "rsync: [sender] read error: Connection reset by peer (104)".to_owned()
            ]
        );
        assert!(!parse("cannot delete non-empty directory: a/b\n").complete());
        assert_eq!(parse("").failures, Vec::new());
        assert!(parse("").complete());
        // A truncated first line (the caller kept only the tail) is not understood.
        assert!(!parse("iled to open \"/a\": Permission denied (13)\n").complete());
    }

    #[test]
    fn other_forms_and_old_untagged_messages() {
        let stderr = concat!(
            "rsync: send_files failed to open \"/srv/a\": Permission denied (13)\n",
            "rsync: [sender] readlink_stat(\"/srv/l\") failed: Permission denied (13)\n",
            "rsync: [sender] opendir \"/srv/d\" failed: Permission denied (13)\n",
            "rsync: [generator] recv_generator: failed to stat \"d/x\" (in web): Permission denied (13)\n",
            "rsync: [receiver] write failed on \"big\" (in web): No space left on device (28)\n",
            "rsync: [generator] delete_file: rmdir(d/empty) failed: Permission denied (13)\n",
            "rsync: [generator] failed to set permissions on \"/dest/x\" (in web): Operation not permitted (1)\n",
            "rsync: [receiver] mknod \"dev\" (in web) failed: Operation not permitted (1)\n",
            "rsync: [generator] symlink \"ln\" (in web) -> \"target with \\\" quote\" failed: Permission denied (13)\n",
            "rsync: [receiver] copy \"/t/.f.AbC123\" -> \"f\": Invalid cross-device link (18)\n",
            "rsync: [receiver] mkstemp \"d/.x.TOO\" (in web) failed: Permission denied (13)\n",
        );
        let report = parse(stderr);
        let kinds: Vec<(FailureKind, &[u8])> = report
            .failures
            .iter()
            .map(|f| (f.kind, f.path.as_slice()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Read, &b"/srv/a"[..]),
                (Stat, b"/srv/l"),
                (Read, b"/srv/d"),
                (Stat, b"d/x"),
                (Write, b"big"),
                (Delete, b"d/empty"),
                (Attributes, b"/dest/x"),
                (Create, b"dev"),
                (Create, b"ln"),
                (Rename, b"f"),
            ]
        );
        assert_eq!(report.failures[0].side, Side::Unknown);
        // A temporary name that does not have mkstemp's shape cannot be mapped back.
        assert_eq!(report.unrecognised.len(), 1, "{:?}", report.unrecognised);
        // Module-relative with a leading slash: the destination is a sub-directory of the
        // module, unknown here, so the path cannot be mapped.
        assert_eq!(relative(&report.failures[6], &[b"/srv"]), None);
        assert_eq!(
            relative(&report.failures[3], &[b"/srv"]),
            Some(b"d/x".to_vec())
        );
    }

    #[test]
    fn temp_names() {
        assert_eq!(name_from_temp(b"a/.b.c.XyZ123"), Some(b"a/b.c".to_vec()));
        assert_eq!(name_from_temp(b".f.aaaaaa"), Some(b"f".to_vec()));
        assert_eq!(name_from_temp(b"a/b.XyZ123"), None);
        assert_eq!(name_from_temp(b"a/..XyZ123"), None);
        assert_eq!(name_from_temp(b"a/.f.Xy-123"), None);
        assert_eq!(name_from_temp(b".x"), None);
        let mut long = b".".to_vec();
        long.extend(std::iter::repeat_n(b'n', 246));
        long.extend_from_slice(b".abcdef");
        assert_eq!(name_from_temp(&long), None, "possibly truncated by rsync");
    }

    #[test]
    fn retry_set_rules() {
        let failure = |path: &[u8], module: Option<&[u8]>| StderrReport {
            failures: vec![fp(path, Read, Side::Sender, module)],
            ..StderrReport::default()
        };
        let batch = vec![
            b"d".to_vec(),
            b"d/a".to_vec(),
            b"e/f".to_vec(),
            b"".to_vec(),
        ];
        let root: &[&[u8]] = &[b"/r"];
        // In the batch.
        assert_eq!(
            retry_set(&batch, &failure(b"/r/d/a", None), root),
            Some(vec![b"d/a".to_vec()])
        );
        // An implied parent: the entries beneath it ("e/f").
        assert_eq!(
            retry_set(&batch, &failure(b"e", Some(b"m")), root),
            Some(vec![b"e/f".to_vec()])
        );
        // Beneath a batch entry ("d" deleted or replaced as a sub-tree): that entry, the
        // deepest one that encloses it (not the root's).
        assert_eq!(
            retry_set(&batch, &failure(b"/r/d/x/y", None), root),
            Some(vec![b"d".to_vec()])
        );
        // The root itself.
        assert_eq!(
            retry_set(&batch, &failure(b"/r", None), root),
            Some(vec![b"".to_vec()])
        );
        // Outside the root, or climbing out of it.
        assert_eq!(retry_set(&batch, &failure(b"/rr/d", None), root), None);
        assert_eq!(retry_set(&batch[..3], &failure(b"zzz", None), root), None);
        assert_eq!(retry_set(&batch, &failure(b"/r/../etc", None), root), None);
        assert_eq!(retry_set(&batch, &failure(b"../x", Some(b"m")), root), None);
        // Nothing named: retry everything.
        assert_eq!(retry_set(&batch, &StderrReport::default(), root), None);
        // Duplicates in the batch are retried once.
        let doubled = vec![b"x".to_vec(), b"./x".to_vec()];
        assert_eq!(
            retry_set(&doubled, &failure(b"/r/x", None), root),
            Some(vec![b"x".to_vec()])
        );
    }

    /// A module that refuses names (`exclude = …` in rsyncd.conf): rsync 3.5.0 skips the
    /// refused entry (a directory with everything below it), sends the rest, exits 23.
    #[test]
    fn daemon_refusals_name_their_entry_and_a_directory_takes_its_contents() {
        let stderr = "ERROR: daemon refused to receive file \"bulk/refused-1.txt\"\n\
             ERROR: daemon refused to receive directory \"secret \\#012dir\"\n\
             rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [sender=3.5.0]\n";
        let report = parse(stderr);
        assert!(report.complete(), "{report:?}");
        assert_eq!(
            report.failures,
            vec![
                fp(b"bulk/refused-1.txt", Refused, Side::Generator, None),
                fp(b"secret \ndir", Refused, Side::Generator, None),
            ]
        );
        let batch = vec![
            b"bulk/ok.txt".to_vec(),
            b"bulk/refused-1.txt".to_vec(),
            b"secret \ndir".to_vec(),
            b"secret \ndir/inner.txt".to_vec(),
        ];
        assert_eq!(
            retry_set(&batch, &report, &[b"/r"]),
            Some(batch[1..].to_vec())
        );
    }

    /// The message forms above, checked against the rsync installed here: unreadable
    /// sources, a missing one and an unwritable destination directory.
    #[test]
    fn live_rsync_messages_parse() {
        let Ok(version) = Command::new("rsync").arg("--version").output() else {
            eprintln!("rsync not installed: skipped");
            return;
        };
        if !version.status.success() {
            return;
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root_user = unsafe { libc::geteuid() } == 0;
        if root_user && !Path::new("/usr/sbin/runuser").exists() {
            eprintln!("root without runuser: skipped");
            return;
        }
        let base = std::env::temp_dir().join(format!("sersync-stderr-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (src, dst) = (base.join("src"), base.join("dst"));
        let run = |cmd: &mut Command| assert!(cmd.status().expect("runs").success());
        std::fs::create_dir_all(src.join("locked")).unwrap();
        std::fs::create_dir_all(dst.join("locked")).unwrap();
        for name in ["ok", "secret", "sp ace", "locked/new"] {
            std::fs::write(src.join(name), b"data").unwrap();
        }
        let mode = |path: &Path, mode: &str| run(Command::new("chmod").arg(mode).arg(path));
        mode(&base, "755");
        mode(&src, "755");
        mode(&dst, "755");
        mode(&src.join("secret"), "000");
        mode(&src.join("sp ace"), "000");
        mode(&dst.join("locked"), "555");
        if root_user {
            // Run as nobody: the destination must be nobody's, "locked" stays root's.
            run(Command::new("chown").arg("nobody").arg(&dst));
        }
        let mut rsync = if root_user {
            let mut cmd = Command::new("/usr/sbin/runuser");
            cmd.args(["-u", "nobody", "--", "rsync"]);
            cmd
        } else {
            Command::new("rsync")
        };
        let mut child = rsync
            .args([
                "-a",
                "--no-recursive",
                "--dirs",
                "--relative",
                "--files-from=-",
                "--from0",
                "./",
            ])
            .arg(&dst)
            .current_dir(&src)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsync");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(b"ok\0secret\0sp ace\0gone\0locked/new\0")
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let _ = Command::new("chmod")
            .arg("755")
            .arg(dst.join("locked"))
            .status();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(
            output.status.code(),
            Some(23),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );

        let report = parse(&output.stderr);
        assert!(report.complete(), "{:?}", report.unrecognised);
        let src_bytes = src.as_os_str().as_encoded_bytes();
        let batch: Vec<Vec<u8>> = ["ok", "secret", "sp ace", "gone", "locked/new"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let mut kinds: Vec<(FailureKind, Vec<u8>)> = report
            .failures
            .iter()
            .filter(|f| f.kind != Attributes)
            .map(|f| (f.kind, f.path.clone()))
            .collect();
        kinds.sort();
        let mut expected = vec![
            (Stat, [src_bytes, b"/gone"].concat()),
            (Read, [src_bytes, b"/secret"].concat()),
            (Read, [src_bytes, b"/sp ace"].concat()),
            (
                TempFile,
                [dst.as_os_str().as_encoded_bytes(), b"/locked/new"].concat(),
            ),
        ];
        expected.sort();
        assert_eq!(
            kinds,
            expected,
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The receiver's path is under the destination: narrowing is refused.
        assert_eq!(retry_set(&batch, &report, &[src_bytes]), None);
    }
}
