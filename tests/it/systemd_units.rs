//! The unit files in `systemd/` and `sersync-generator`.
//!
//! - `systemd-analyze verify` on every unit, instantiated as `NAME@web.*`, must print
//!   nothing (it exits 0 on unknown keys and bad values, so stderr is what counts). The
//!   units name `/usr/bin/sersyncd` and `/usr/bin/sersyncctl`, which verify wants to
//!   exist: the copies point at the binaries under test instead.
//! - `systemd-analyze security --offline=yes` must stay at or below a threshold.
//! - The generator: sample configs in, the exact drop-ins out; and those drop-ins verify
//!   cleanly together with the units.
//! - The sysctl.d file sets exactly the two inotify limits, to integers.
//!
//! Without `systemd-analyze` the unit tests print SKIP (they fail under `CI=true`); the
//! generator tests need nothing but the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{Remote, SersyncdBuilder, require_tool, temp_dir};

const SERSYNCD: &str = env!("CARGO_BIN_EXE_sersyncd");
const SERSYNCCTL: &str = env!("CARGO_BIN_EXE_sersyncctl");
const GENERATOR: &str = env!("CARGO_BIN_EXE_sersync-generator");

/// The unit templates shipped in `systemd/`.
const TEMPLATES: &[&str] = &[
    "sersync@.service",
    "sersync-fullsync@.service",
    "sersync-fullsync@.timer",
];

/// Highest accepted `systemd-analyze security` exposure per service (systemd 252 measures
/// 2.3 and 0.5; the margin is for newer systemd versions, which add checks). sersync@ was
/// 1.9 before it could run rsync as the tree's owner: CAP_SETUID/CAP_SETGID and the
/// @setuid system calls cost 0.4, for children that cannot read what the owner cannot.
const EXPOSURE_LIMITS: &[(&str, f64)] = &[
    ("sersync@.service", 2.8),
    ("sersync-fullsync@.service", 1.0),
];

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sersync@.service` -> `sersync@web.service`.
fn instantiate(template: &str, instance: &str) -> String {
    template.replacen("@.", &format!("@{instance}."), 1)
}

/// Copies every template into `dir` as instance `web`, with the binaries under test in
/// place of the installed ones. Returns the paths of the copies.
fn write_instances(dir: &Path) -> Vec<PathBuf> {
    TEMPLATES
        .iter()
        .map(|template| {
            let source = systemd_dir().join(template);
            let unit = std::fs::read_to_string(&source)
                .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
            let unit = unit
                .replace("/usr/bin/sersyncd", SERSYNCD)
                .replace("/usr/bin/sersyncctl", SERSYNCCTL);
            let path = dir.join(instantiate(template, "web"));
            std::fs::write(&path, unit).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
            path
        })
        .collect()
}

fn verify(units: &[PathBuf]) -> Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(units)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify")
}

fn assert_verifies(units: &[PathBuf]) {
    let out = verify(units);
    let stderr = text(&out.stderr);
    println!("systemd-analyze verify {units:?}: {}", out.status);
    assert!(
        out.status.success() && stderr.is_empty(),
        "systemd-analyze verify is not clean ({}):\n{stderr}{}",
        out.status,
        text(&out.stdout)
    );
}

#[test]
fn every_unit_verifies_with_an_empty_stderr() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units");
    let units = write_instances(dir.path());
    assert_verifies(&units);
}

#[test]
fn a_broken_unit_is_caught_by_the_verify_check() {
    // Proves the check above can fail: an unknown key only warns, on stderr.
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units-broken");
    let units = write_instances(dir.path());
    let service = &units[0];
    let text_before = std::fs::read_to_string(service).unwrap();
    std::fs::write(
        service,
        text_before.replace("[Service]\n", "[Service]\nNoSuchKey=1\n"),
    )
    .unwrap();
    let out = verify(&units);
    assert!(
        text(&out.stderr).contains("NoSuchKey"),
        "verify did not report an unknown key: {}",
        text(&out.stderr)
    );
}

/// `systemd-analyze security --offline=yes UNIT`'s overall exposure.
fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze security");
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("Overall exposure level for ")?;
            let (_, score) = rest.split_once(": ")?;
            score.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in the output of systemd-analyze security {} ({}):\n{stdout}{}",
                unit.display(),
                out.status,
                text(&out.stderr)
            )
        })
}

#[test]
fn service_exposure_stays_low() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units-security");
    write_instances(dir.path());
    let mut failures = Vec::new();
    for (template, limit) in EXPOSURE_LIMITS {
        let unit = dir.path().join(instantiate(template, "web"));
        let score = exposure(&unit);
        println!(
            "systemd-analyze security --offline=yes {template}: exposure {score:.1} (limit {limit:.1})"
        );
        if score > *limit {
            failures.push(format!("{template}: {score:.1} > {limit:.1}"));
        }
    }
    assert!(failures.is_empty(), "exposure too high: {failures:?}");
}

/// The opt-in fanotify drop-in (`systemd/sersync@.service.d/fanotify.conf.example`),
/// installed next to an instance of the unit: it verifies cleanly, it is really loaded
/// (the exposure rises: CAP_SYS_ADMIN and three @privileged calls) and stays under a
/// limit (systemd 252 measures 2.3 without it and 2.5 with it; the margin is for newer
/// systemd versions), and its ExecStart is the unit's plus the backend.
#[test]
fn the_fanotify_drop_in_verifies_and_its_exposure_stays_low() {
    const LIMIT: f64 = 3.2;
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units-fanotify");
    let units = write_instances(dir.path());
    let service = dir.path().join(instantiate("sersync@.service", "web"));
    let without = exposure(&service);
    let drop_in =
        std::fs::read_to_string(systemd_dir().join("sersync@.service.d/fanotify.conf.example"))
            .expect("read the fanotify drop-in");
    let unit = std::fs::read_to_string(systemd_dir().join("sersync@.service")).unwrap();
    let exec_start = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with("ExecStart=") && *line != "ExecStart=")
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        exec_start(&drop_in),
        exec_start(&unit)
            .iter()
            .map(|line| format!("{line} --watch-backend auto"))
            .collect::<Vec<_>>(),
        "the drop-in starts sersyncd as the unit does, with the backend"
    );
    let drop_in_dir = dir.path().join("sersync@web.service.d");
    std::fs::create_dir(&drop_in_dir).unwrap();
    std::fs::write(
        drop_in_dir.join("fanotify.conf"),
        drop_in.replace("/usr/bin/sersyncd", SERSYNCD),
    )
    .unwrap();
    assert_verifies(&units);
    let with = exposure(&service);
    println!(
        "systemd-analyze security --offline=yes sersync@.service: {without:.1}, with the fanotify drop-in {with:.1}"
    );
    assert!(
        with > without,
        "the drop-in was not loaded: {with:.1} <= {without:.1}"
    );
    assert!(
        with <= LIMIT,
        "exposure with the fanotify drop-in: {with:.1} > {LIMIT:.1}"
    );
}

// ---- sersync-generator ----

/// A valid config watching `root`, with `crontab` as the `<crontab>` element (replacing
/// the builder's default `start="false"` one) and an optional `<filter>` exclude.
fn config_xml(root: &Path, crontab: &str, exclude: Option<&str>) -> String {
    let remote = Remote {
        ip: "127.0.0.1".into(),
        name: "web".into(),
    };
    let mut builder = SersyncdBuilder::new().root(root, &[remote]);
    if let Some(expression) = exclude {
        builder = builder.exclude(expression);
    }
    let xml = builder.xml();
    let default = "<crontab start=\"false\" schedule=\"600\"></crontab>";
    assert!(
        xml.contains(default),
        "the builder's <crontab> changed:\n{xml}"
    );
    xml.replace(default, crontab)
}

struct Generated {
    status: std::process::ExitStatus,
    stderr: String,
    /// Relative path -> file contents (or `-> target` for symlinks), of NORMAL_DIR.
    normal: BTreeMap<String, String>,
    early: BTreeMap<String, String>,
    late: BTreeMap<String, String>,
}

fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(relative, format!("-> {}", target.display()));
            } else if kind.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(relative, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs the generator on `config_dir` with three fresh output directories.
fn generate(config_dir: &Path) -> Generated {
    let out_dir = temp_dir("generator-out");
    let [normal, early, late] = ["normal", "early", "late"].map(|d| out_dir.path().join(d));
    for dir in [&normal, &early, &late] {
        std::fs::create_dir(dir).unwrap();
    }
    let out = Command::new(GENERATOR)
        .args([&normal, &early, &late])
        .env("SERSYNC_CONFIG_DIR", config_dir)
        .output()
        .expect("run sersync-generator");
    Generated {
        status: out.status,
        stderr: text(&out.stderr),
        normal: listing(&normal),
        early: listing(&early),
        late: listing(&late),
    }
}

fn timer_drop_in(config: &Path, minutes: u32) -> String {
    format!(
        "# Generated by sersync-generator from {}\n\
         # (<crontab start=\"true\" schedule=\"{minutes}\">).\n\
         [Timer]\n\
         OnActiveSec=\n\
         OnActiveSec={minutes}min\n\
         OnUnitActiveSec={minutes}min\n",
        config.display()
    )
}

fn service_drop_in(instance: &str, config: &Path, minutes: u32) -> String {
    format!(
        "# Generated by sersync-generator from {}\n\
         # (<crontab start=\"true\" schedule=\"{minutes}\">): systemd runs the periodic full\n\
         # sync, sersyncd does not. Edit the config, then `systemctl daemon-reload` and\n\
         # restart sersync@{instance}.service.\n\
         [Unit]\n\
         Wants=sersync-fullsync@{instance}.timer\n\
         \n\
         [Service]\n\
         Environment=SERSYNC_CRONTAB=systemd\n",
        config.display()
    )
}

/// The two drop-ins of one instance, as [`listing`] shows them.
fn expected_for(instance: &str, config: &Path, minutes: u32) -> [(String, String); 2] {
    [
        (
            format!("sersync-fullsync@{instance}.timer.d/50-crontab.conf"),
            timer_drop_in(config, minutes),
        ),
        (
            format!("sersync@{instance}.service.d/50-crontab.conf"),
            service_drop_in(instance, config, minutes),
        ),
    ]
}

#[test]
fn generator_writes_timer_drop_ins_only_for_crontab_configs() {
    let root = temp_dir("generator-root");
    let configs = temp_dir("generator-configs");
    let dir = configs.path();
    let on = |schedule: u32| format!("<crontab start=\"true\" schedule=\"{schedule}\"></crontab>");
    // name -> (file contents, expected minutes or None for "nothing written")
    let table: &[(&str, String, Option<u32>)] = &[
        (
            "web.xml",
            config_xml(root.path(), &on(600), None),
            Some(600),
        ),
        ("fast.xml", config_xml(root.path(), &on(5), None), Some(5)),
        (
            "off.xml",
            config_xml(
                root.path(),
                "<crontab start=\"false\" schedule=\"5\"></crontab>",
                None,
            ),
            None,
        ),
        // Our crontab stays on with <filter> (sersync 2.5 turned it off).
        (
            "filtered.xml",
            config_xml(root.path(), &on(30), Some("(.*/)?cache(/.*)?")),
            Some(30),
        ),
        (
            "globbed.xml",
            config_xml(
                root.path(),
                "<crontab start=\"true\" schedule=\"60\">\
                 <crontabfilter start=\"true\"><exclude expression=\"*.log\"/></crontabfilter>\
                 </crontab>",
                None,
            ),
            Some(60),
        ),
        // Not a number: sersync 2.5 (and sersyncd, with a warning) use 600.
        (
            "nonnumeric.xml",
            config_xml(
                root.path(),
                "<crontab start=\"true\" schedule=\"soon\"></crontab>",
                None,
            ),
            Some(600),
        ),
        (
            "broken.xml",
            "<head version=\"2.5\"><sersync>".to_owned(),
            None,
        ),
        (
            "my web.xml",
            config_xml(root.path(), &on(5), None),
            None, // not a valid instance name
        ),
        // Not configs at all: ignored without a message.
        ("web.xml~", config_xml(root.path(), &on(7), None), None),
        ("README", "not a config".to_owned(), None),
    ];
    for (name, contents, _) in table {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    std::fs::create_dir(dir.join("dir.xml")).unwrap();

    let generated = generate(dir);
    println!("generator stderr:\n{}", generated.stderr);
    assert!(
        generated.status.success(),
        "exit status {}",
        generated.status
    );

    let mut expected = BTreeMap::new();
    for (name, _, minutes) in table {
        if let Some(minutes) = minutes {
            let instance = name.strip_suffix(".xml").unwrap();
            expected.extend(expected_for(instance, &dir.join(name), *minutes));
        }
    }
    assert_eq!(
        generated.normal.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "files written into NORMAL_DIR"
    );
    for (path, contents) in &expected {
        assert_eq!(&generated.normal[path], contents, "contents of {path}");
    }
    assert!(
        generated.early.is_empty(),
        "EARLY_DIR: {:?}",
        generated.early
    );
    assert!(generated.late.is_empty(), "LATE_DIR: {:?}", generated.late);

    // Exactly one line per skipped file, naming it and why.
    let lines: Vec<&str> = generated.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "stderr:\n{}", generated.stderr);
    assert!(
        lines[0].contains("broken.xml") && lines[0].contains("invalid config"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("my web.xml") && lines[1].contains("instance name"),
        "{}",
        lines[1]
    );
}

#[test]
fn generator_output_verifies_with_the_units() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let root = temp_dir("generator-verify-root");
    let configs = temp_dir("generator-verify-configs");
    std::fs::write(
        configs.path().join("web.xml"),
        config_xml(
            root.path(),
            "<crontab start=\"true\" schedule=\"15\"></crontab>",
            None,
        ),
    )
    .unwrap();
    let units = temp_dir("generator-verify-units");
    let copies = write_instances(units.path());
    let out = Command::new(GENERATOR)
        .arg(units.path())
        .env("SERSYNC_CONFIG_DIR", configs.path())
        .output()
        .expect("run sersync-generator");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        units
            .path()
            .join("sersync-fullsync@web.timer.d/50-crontab.conf")
            .is_file()
    );
    // Drop-ins next to the unit files are loaded by verify: a bad key in them would show.
    assert_verifies(&copies);
}

#[test]
fn generator_without_config_dir_writes_nothing_and_succeeds() {
    let missing = temp_dir("generator-none").path().join("no-such-dir");
    let generated = generate(&missing);
    assert!(generated.status.success(), "{}", generated.status);
    assert!(generated.normal.is_empty(), "{:?}", generated.normal);
    assert_eq!(generated.stderr, "");
}

#[test]
fn generator_rejects_a_wrong_command_line() {
    for args in [&[][..], &["/a", "/b"][..], &["relative", "/b", "/c"][..]] {
        let out = Command::new(GENERATOR)
            .args(args)
            .env("SERSYNC_CONFIG_DIR", "/nonexistent")
            .output()
            .expect("run sersync-generator");
        assert_eq!(out.status.code(), Some(64), "args {args:?}");
        assert!(
            text(&out.stderr).contains("usage: sersync-generator"),
            "args {args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn sysctl_file_raises_the_inotify_limits() {
    let path = systemd_dir().join("sysctl.d/60-sersync.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    let mut settings = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
        let value: u64 = value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        settings.insert(key.trim().to_owned(), value);
    }
    assert_eq!(
        settings.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "fs.inotify.max_queued_events",
            "fs.inotify.max_user_watches"
        ]
    );
    // At least the kernel's own ceiling for watches and sersync 2.5's queue size.
    assert!(settings["fs.inotify.max_user_watches"] >= 1_048_576);
    assert!(settings["fs.inotify.max_queued_events"] >= 327_679);
    for key in settings.keys() {
        let proc = Path::new("/proc/sys").join(key.replace('.', "/"));
        if Path::new("/proc/sys/fs/inotify").is_dir() {
            assert!(proc.is_file(), "{key}: no {}", proc.display());
        }
    }
}
