//! Black-box tests of the `sersyncd` command line: help, version, and `--check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{SersyncdBuilder, temp_dir};

const SERSYNCD: &str = env!("CARGO_BIN_EXE_sersyncd");

fn sersyncd(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(SERSYNCD)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run sersyncd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_exits_zero_and_documents_the_config_flag() {
    let out = sersyncd(&["--help".as_ref()]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--help failed:\n{stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("-o"),
        "--help does not mention -o:\n{stdout}"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = sersyncd(&["--version".as_ref()]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--version failed:\n{stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version does not print {}:\n{stdout}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = sersyncd(&["--no-such-flag".as_ref()]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "stderr:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn check_accepts_the_stock_config() {
    let stock = concat!(env!("CARGO_MANIFEST_DIR"), "/confxml.xml");
    let out = sersyncd(&["--check".as_ref(), "-o".as_ref(), stock.as_ref()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--check rejected the stock confxml.xml:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn check_accepts_the_config_the_harness_writes() {
    let dir = temp_dir("cli");
    let conf = dir.path().join("confxml.xml");
    let xml = SersyncdBuilder::new()
        .root(
            dir.path(),
            &[crate::harness::Remote {
                ip: "127.0.0.1".into(),
                name: "web".into(),
            }],
        )
        .attrib(true)
        .modify(false)
        .create_file(false)
        .exclude(r"(.*)\.tmp")
        .ignore_temp_files(false)
        .common_params("-artuz")
        .raw_head_xml("")
        .raw_sersync_xml("")
        .xml();
    std::fs::write(&conf, &xml).unwrap();
    let out = sersyncd(&["--check".as_ref(), "-o".as_ref(), conf.as_ref()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--check rejected the harness config:\n{xml}\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn check_of_a_missing_file_is_a_config_error() {
    let dir = temp_dir("cli");
    let missing = dir.path().join("nope.xml");
    let out = sersyncd(&["--check".as_ref(), "-o".as_ref(), missing.as_ref()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{stderr}");
    assert!(
        stderr.contains("error:"),
        "no `error:` in stderr:\n{stderr}"
    );
}

/// Every `tests/fixtures/config/NAME.xml` with a sibling `NAME.stderr`: `--check` exits 78
/// when the expected output has an `error:` (0 otherwise, for warning-only fixtures), and
/// every non-empty line of the `.stderr` file, with `{FILE}` replaced by the fixture path,
/// appears in the actual stderr, in order (each within one line).
#[test]
fn check_diagnostics_match_the_fixtures() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/config"
    ));
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .filter(|path| path.with_extension("stderr").is_file())
        .collect();
    fixtures.sort();
    assert!(
        !fixtures.is_empty(),
        "no fixture with a .stderr sibling in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        if let Err(why) = check_fixture(fixture) {
            failures.push(format!("{}: {why}", fixture.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n\n")
    );
}

fn check_fixture(fixture: &Path) -> Result<(), String> {
    let file = fixture.to_str().expect("fixture paths are UTF-8");
    let expected = std::fs::read_to_string(fixture.with_extension("stderr"))
        .map_err(|e| format!("cannot read the .stderr file: {e}"))?
        .replace("{FILE}", file);
    let out = sersyncd(&["--check".as_ref(), "-o".as_ref(), fixture.as_ref()]);
    let stderr = text(&out.stderr);
    let want_code = if expected.contains("error:") { 78 } else { 0 };
    if out.status.code() != Some(want_code) {
        return Err(format!(
            "exit status {:?}, expected {want_code}; stderr:\n{stderr}",
            out.status.code()
        ));
    }
    let actual: Vec<&str> = stderr.lines().collect();
    let mut cursor = 0;
    for want in expected.lines().filter(|l| !l.trim().is_empty()) {
        let want = want.trim_end();
        match actual[cursor..].iter().position(|line| line.contains(want)) {
            Some(offset) => cursor += offset + 1,
            None => {
                return Err(format!(
                    "expected line not found (in order):\n  {want}\nactual stderr:\n{stderr}"
                ));
            }
        }
    }
    Ok(())
}
