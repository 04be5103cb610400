//! Tests of the config reader: the stock file, every diagnostic with its position, encodings,
//! the word splitter, and the CLI fixtures under `tests/fixtures/config/`.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::words::split_words_located;
use super::*;

const STOCK: &[u8] = include_bytes!("../../confxml.xml");

/// A `<localpath>` that is valid everywhere (`/tmp` exists on every test machine).
const LOCALPATH: &str = r#"<localpath watch="/tmp"><remote ip="h" name="m"/></localpath>"#;

fn load_str(text: &str) -> LoadResult {
    parse(Path::new("test.xml"), text.as_bytes())
}

/// Loads `text`, which must fail; returns its error diagnostics.
fn errors_of(text: &str) -> Vec<Diagnostic> {
    match load_str(text) {
        Ok((config, warnings)) => {
            panic!("expected errors, loaded {config:?} with warnings {warnings:?}")
        }
        Err(diagnostics) => diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect(),
    }
}

/// Loads `text`, which must succeed; returns the config and its warnings.
fn loaded(text: &str) -> (Config, Vec<Diagnostic>) {
    match load_str(text) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("expected success, got:\n{}", shown.join("\n"))
        }
    }
}

/// `<head><sersync>` around `inner` (which thus starts on line 3).
fn in_sersync(inner: &str) -> String {
    format!("<head>\n<sersync>\n{inner}\n</sersync>\n</head>\n")
}

/// `<head>` around `inner` (line 2) followed by a valid `<sersync>` (line 3).
fn in_head(inner: &str) -> String {
    format!("<head>\n{inner}\n<sersync>{LOCALPATH}</sersync>\n</head>\n")
}

/// `<head><sersync>` with a valid `<localpath>` on line 3 and `inner` on line 4.
fn in_sersync_after_root(inner: &str) -> String {
    in_sersync(&format!("{LOCALPATH}\n{inner}"))
}

#[test]
fn stock_confxml_loads_with_the_values_of_the_sample() {
    let (config, warnings) = match parse(Path::new("confxml.xml"), STOCK) {
        Ok(loaded) => loaded,
        Err(diagnostics) => panic!("stock confxml.xml refused: {diagnostics:?}"),
    };
    // The acceptable warnings: /opt/tongbu does not exist on this machine, and the
    // shipped `-artuz` has a `-u` that a mirror must not use.
    for warning in &warnings {
        assert_eq!(warning.severity, Severity::Warning);
        if warning.message.starts_with("-u (--update)") {
            assert_eq!((warning.line, warning.col), (30, 28));
            continue;
        }
        assert!(
            warning.message.starts_with("watch root \"/opt/tongbu\""),
            "unexpected warning: {warning}"
        );
        assert_eq!((warning.line, warning.col), (24, 20));
    }
    assert!(
        warnings
            .iter()
            .any(|w| w.message.starts_with("-u (--update)")),
        "the -u of the stock commonParams must be reported"
    );

    assert_eq!(config.file, Path::new("confxml.xml"));
    assert_eq!(
        config.host,
        HostSection {
            ip: "localhost".into(),
            port: 8008
        }
    );
    assert!(!config.debug);
    assert!(!config.xfs);
    assert!(config.ignore_temp_files);
    assert_eq!(config.events, EventToggles::default());

    assert!(!config.filter.enabled);
    let expressions: Vec<(&str, usize)> = config
        .filter
        .excludes
        .iter()
        .map(|ex| (ex.expression.as_str(), ex.line))
        .collect();
    assert_eq!(
        expressions,
        [
            (r"(.*)\.svn", 7),
            (r"(.*)\.gz", 8),
            ("^info/*", 9),
            ("^static/*", 10)
        ]
    );

    assert_eq!(
        config.roots,
        [WatchRoot {
            path: PathBuf::from("/opt/tongbu"),
            remotes: vec![Remote {
                ip: "127.0.0.1".into(),
                name: "tongbu1".into()
            }],
            line: 24,
            run_as: RunAs::RootOwner,
        }]
    );
    assert_eq!(config.rsync, RsyncOptions::default());
    assert_eq!(config.rsync.common_params, ["-artz"]);
    assert_eq!(
        config.fail_log,
        FailLog {
            path: PathBuf::from("/tmp/rsync_fail_log.sh"),
            interval_minutes: 60
        }
    );
    assert_eq!(
        config.crontab,
        Crontab {
            enabled: false,
            schedule_minutes: 600,
            filter_enabled: false,
            excludes: vec!["*.php".into(), "info/*".into()],
        }
    );

    let plugins = &config.plugins;
    assert_eq!(plugins.after_sync, None);
    let command = plugins.command.as_ref().expect("command section");
    assert_eq!(command.prefix, "/bin/sh");
    assert_eq!(command.prefix_words, ["/bin/sh"]);
    assert_eq!(command.suffix, "");
    assert!(command.suffix_words.is_empty());
    assert!(command.ignore_error);
    assert!(!command.filter_enabled);
    let includes: Vec<&str> = command
        .includes
        .iter()
        .map(|inc| inc.expression.as_str())
        .collect();
    assert_eq!(includes, [r"(.*)\.php", r"(.*)\.sh"]);
    assert_eq!(
        plugins.socket,
        Some(SocketPlugin {
            watch: PathBuf::from("/opt/tongbu"),
            host: "192.168.138.20".into(),
            port: 8009,
            framing: SocketFraming::Raw,
        })
    );
    let cdn = plugins.refresh_cdn.as_ref().expect("refreshCDN section");
    assert_eq!(cdn.watch, Path::new("/data0/htdocs/cms.xoyo.com/site"));
    assert_eq!(cdn.domain_name, "ccms.chinacache.com");
    assert_eq!(cdn.port, 80);
    assert_eq!((cdn.user.as_str(), cdn.password.as_str()), ("xxxx", "xxxx"));
    assert_eq!(cdn.send_url_base, "http://pic.xoyo.com/cms");
    assert!(!cdn.regex_enabled);
    assert_eq!(
        cdn.regex_match,
        "cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images"
    );
    assert!(cdn.match_regex.is_none());
    assert!(plugins.http.is_none());
}

#[test]
fn stock_filter_expressions_match_whole_relative_paths() {
    let mut stock = STOCK.to_vec();
    let from = b"<filter start=\"false\">";
    let at = stock
        .windows(from.len())
        .position(|window| window == from)
        .expect("stock filter element");
    stock.splice(
        at..at + from.len(),
        b"<filter start=\"true\" >".iter().copied(),
    );
    let (config, _) = parse(Path::new("confxml.xml"), &stock).expect("loads");
    let filter = &config.filter;
    assert!(filter.enabled);
    assert!(filter.excludes(b"a/b/c.svn", false));
    assert!(filter.excludes(b"x.gz", false));
    assert!(!filter.excludes(b"x.gz.txt", false));
    assert!(filter.excludes(b"info", true));
    assert!(filter.excludes(b"info", false));
    assert!(!filter.excludes(b"sub/info", true));
    assert!(filter.excludes(b"static", true));
    // Paths need not be UTF-8, and may contain a newline.
    assert!(filter.excludes(b"caf\xE9.svn", false));
    assert!(filter.excludes(b"a\nb.gz", false));
    // With the filter on and crontab off nothing is said about the crontab.
    assert!(!config.crontab.enabled);
}

/// (document, expected message substring, line, col) of the first error.
type ErrorCase = (String, &'static str, usize, usize);

fn error_cases() -> Vec<ErrorCase> {
    let remote = r#"<remote ip="h" name="m"/>"#;
    vec![
        // Structure.
        (
            "<config/>".into(),
            "root element is <config>, expected <head>",
            1,
            1,
        ),
        (
            "<head/>".into(),
            "no <sersync> section: at least one <localpath> is required",
            1,
            1,
        ),
        (
            in_sersync(""),
            "no <localpath> in <sersync>: at least one watch root is required",
            2,
            1,
        ),
        // Watch paths.
        (
            in_sersync(&format!("<localpath watch=\"opt/x\">{remote}</localpath>")),
            "watch path \"opt/x\" is not absolute",
            3,
            19,
        ),
        (
            in_sersync(&format!("<localpath watch=\"\">{remote}</localpath>")),
            "attribute \"watch\" of <localpath> is empty",
            3,
            19,
        ),
        (
            in_sersync(&format!("<localpath>{remote}</localpath>")),
            "<localpath> is missing the required attribute \"watch\"",
            3,
            1,
        ),
        (
            in_sersync(&format!(
                "{LOCALPATH}\n<localpath watch=\"/tmp/\">{remote}</localpath>"
            )),
            "watch path \"/tmp\" is already watched by the <localpath> on line 3",
            4,
            19,
        ),
        // Remotes.
        (
            in_sersync("<localpath watch=\"/tmp\"></localpath>"),
            "<localpath> has no <remote>: at least one is required",
            3,
            1,
        ),
        (
            in_sersync("<localpath watch=\"/tmp\">\n<remote name=\"m\"/>\n</localpath>"),
            "<remote> is missing the required attribute \"ip\"",
            4,
            1,
        ),
        (
            in_sersync("<localpath watch=\"/tmp\">\n<remote ip=\"h\"/>\n</localpath>"),
            "<remote> is missing the required attribute \"name\"",
            4,
            1,
        ),
        (
            in_sersync("<localpath watch=\"/tmp\">\n<remote ip=\"h\" name=\"\"/>\n</localpath>"),
            "attribute \"name\" of <remote> is empty",
            4,
            22,
        ),
        (
            in_sersync("<localpath watch=\"/tmp\">\n<remote ip=\" \" name=\"m\"/>\n</localpath>"),
            "attribute \"ip\" of <remote> is empty",
            4,
            13,
        ),
        // Booleans.
        (
            in_head(r#"<debug start="yes"/>"#),
            "invalid boolean \"yes\" for attribute \"start\" of <debug>: expected \"true\" or \"false\"",
            2,
            15,
        ),
        (
            in_head(r#"<inotify><modify start=""/></inotify>"#),
            "invalid boolean \"\" for attribute \"start\" of <modify>",
            2,
            25,
        ),
        // Regexes: the caret points into the expression when the regex crate says where.
        (
            in_head(r#"<filter start="true"><exclude expression="(.*"/></filter>"#),
            "bad regular expression \"(.*\" in attribute \"expression\" of <exclude>: unclosed group",
            2,
            43,
        ),
        (
            in_head(r#"<filter><exclude expression="a{2,1}"/></filter>"#),
            "invalid repetition count range",
            2,
            31,
        ),
        (
            in_head(
                r#"<plugin name="command"><filter start="true"><include expression="[z-a]"/></filter></plugin>"#,
            ),
            "bad regular expression \"[z-a]\" in attribute \"expression\" of <include>: invalid character class range",
            2,
            67,
        ),
        // Numbers.
        (
            in_sersync_after_root(r#"<rsync><userDefinedPort start="true" port="87x"/></rsync>"#),
            "invalid port \"87x\" for attribute \"port\" of <userDefinedPort>: expected a number from 1 to 65535",
            4,
            44,
        ),
        (
            in_sersync_after_root(
                r#"<rsync><userDefinedPort start="false" port="70000"/></rsync>"#,
            ),
            "invalid port \"70000\"",
            4,
            45,
        ),
        (
            in_sersync_after_root(r#"<rsync><userDefinedPort start="true" port="0"/></rsync>"#),
            "invalid port \"0\"",
            4,
            44,
        ),
        (
            in_sersync_after_root(r#"<rsync><userDefinedPort start="true"/></rsync>"#),
            "<userDefinedPort> is missing the required attribute \"port\"",
            4,
            8,
        ),
        (
            in_head(r#"<host hostip="localhost" port="http"/>"#),
            "invalid port \"http\" for attribute \"port\" of <host>",
            2,
            32,
        ),
        (
            in_head(
                r#"<plugin name="socket"><localpath watch="/tmp"><deshost ip="h" port="-1"/></localpath></plugin>"#,
            ),
            "invalid port \"-1\" for attribute \"port\" of <deshost>",
            2,
            69,
        ),
        (
            in_head(
                r#"<plugin name="refreshCDN"><localpath watch="/tmp"><cdninfo domainname="d" port="x"/></localpath></plugin>"#,
            ),
            "invalid port \"x\" for attribute \"port\" of <cdninfo>",
            2,
            81,
        ),
        (
            in_sersync_after_root(r#"<rsync><timeout start="true" time="10s"/></rsync>"#),
            "invalid number \"10s\" for attribute \"time\" of <timeout>: expected whole seconds (0 or more)",
            4,
            36,
        ),
        (
            in_sersync_after_root(r#"<rsync><warm start="true" idle="0"/></rsync>"#),
            "invalid number \"0\" for attribute \"idle\" of <warm>: expected whole seconds (1 or more)",
            4,
            33,
        ),
        (
            in_sersync_after_root(r#"<rsync><ssh start="true" master="yes"/></rsync>"#),
            "invalid boolean \"yes\" for attribute \"master\" of <ssh>: expected \"true\" or \"false\"",
            4,
            34,
        ),
        (
            in_sersync_after_root(r#"<rsync><warm idle="soon"/></rsync>"#),
            "invalid number \"soon\" for attribute \"idle\" of <warm>",
            4,
            20,
        ),
        (
            in_sersync_after_root(r#"<failLog path="/tmp/f.sh" timeToExecute="abc"/>"#),
            "invalid number \"abc\" for attribute \"timeToExecute\" of <failLog>: expected whole minutes (1 or more)",
            4,
            42,
        ),
        (
            in_sersync_after_root(r#"<failLog path="/tmp/f.sh" timeToExecute="0"/>"#),
            "invalid number \"0\" for attribute \"timeToExecute\"",
            4,
            42,
        ),
        // Words.
        (
            in_sersync_after_root(r#"<rsync><commonParams params="-az -e 'ssh -p 22"/></rsync>"#),
            "unterminated single quote in attribute \"params\" of <commonParams>",
            4,
            37,
        ),
        (
            in_head(
                r#"<plugin name="command"><param prefix="/bin/sh -c &quot;x" suffix=""/></plugin>"#,
            ),
            "unterminated double quote in attribute \"prefix\" of <param>",
            2,
            50,
        ),
        // What start-up (building the plugin) rejected with exit 78 and no line, so that
        // `check` passed it.
        (
            in_head(r#"<plugin name="command"><param prefix="" suffix=""/></plugin>"#),
            "attribute \"prefix\" of <param> has no word: it must name the program to run",
            2,
            39,
        ),
        (
            in_head(r#"<plugin name="command"><param prefix="  &#9;"/></plugin>"#),
            "attribute \"prefix\" of <param> has no word: it must name the program to run",
            2,
            39,
        ),
        (
            in_head(r#"<plugin name="command"><param prefix="'' -c" suffix=""/></plugin>"#),
            "attribute \"prefix\" of <param> starts with an empty word: it must name the program to run",
            2,
            39,
        ),
        (
            format!(
                "<head>\n<plugin name=\"command\">\n<param prefix=\"\"/>\n</plugin>\n<sersync>{LOCALPATH}<plugin start=\"true\" name=\"command\"/></sersync>\n</head>\n"
            ),
            "attribute \"prefix\" of <param> has no word: it must name the program to run",
            3,
            16,
        ),
        // Auth.
        (
            in_sersync_after_root(
                r#"<rsync><auth start="true" users="" passwordfile="/nonexistent/rsync.pas"/></rsync>"#,
            ),
            "attribute \"users\" of <auth> is empty",
            4,
            34,
        ),
        (
            in_sersync_after_root(
                r#"<rsync><auth start="true" users="u" passwordfile=""/></rsync>"#,
            ),
            "attribute \"passwordfile\" of <auth> is empty",
            4,
            51,
        ),
        (
            in_sersync_after_root(
                r#"<rsync><auth start="TRUE" users="u" passwordfile="/nonexistent/rsync.pas"/></rsync>"#,
            ),
            "password file \"/nonexistent/rsync.pas\" does not exist",
            4,
            51,
        ),
        // Plugins.
        (
            in_sersync_after_root(r#"<plugin start="true" name="mail"/>"#),
            "unknown plugin \"mail\" in <sersync><plugin name>: expected command, socket, refreshCDN or http",
            4,
            28,
        ),
        (
            in_sersync_after_root(r#"<plugin start="true" name="socket"/>"#),
            "plugin \"socket\" is enabled in <sersync> but there is no <plugin name=\"socket\"> section",
            4,
            1,
        ),
        (
            in_sersync_after_root(r#"<plugin start="true"/>"#),
            "<plugin> is missing the required attribute \"name\"",
            4,
            1,
        ),
        (
            in_head(r#"<plugin name="socket"></plugin>"#),
            "<plugin name=\"socket\"> has no <localpath>",
            2,
            1,
        ),
        (
            in_head(r#"<plugin name="http"><localpath watch="/tmp"/></plugin>"#),
            "<localpath> of <plugin name=\"http\"> has no <deshost>",
            2,
            21,
        ),
        (
            in_head(
                r#"<plugin name="refreshCDN"><localpath watch="rel"><cdninfo domainname="d" port="80"/></localpath></plugin>"#,
            ),
            "watch path \"rel\" is not absolute",
            2,
            45,
        ),
        (
            in_head(
                r#"<plugin name="refreshCDN"><localpath watch="/w"><cdninfo domainname="d" port="80"/><regexurl regex="true" match="(x"/></localpath></plugin>"#,
            ),
            "bad regular expression \"(x\" in attribute \"match\" of <regexurl>: unclosed group",
            2,
            114,
        ),
        // Malformed XML.
        (
            "<head>\n<sersync>\n<localpath watch=\"/tmp\">\n</sersync>\n</head>\n".into(),
            "malformed XML: <localpath> is not closed (found </sersync> on line 4)",
            3,
            1,
        ),
        (
            "<head>\n<sersync>".into(),
            "malformed XML: <sersync> is not closed (end of file reached)",
            2,
            1,
        ),
        (
            "<head/>\n</sersync>\n".into(),
            "malformed XML: ill-formed document: close tag `</sersync>` does not match any open tag",
            2,
            1,
        ),
        (
            "<head/>\n<head/>".into(),
            "malformed XML: <head> after the end of the root element",
            2,
            1,
        ),
        (
            "<head>\n<debug start=true/>\n</head>".into(),
            "malformed XML: attribute value must be in quotes",
            2,
            14,
        ),
        (
            "<head>\n<debug start=\"true\" start=\"false\"/>\n</head>".into(),
            "malformed XML: attribute is given twice",
            2,
            21,
        ),
        (
            "<head>\n  <debug start=\"true\"".into(),
            "malformed XML: syntax error: tag not closed",
            2,
            3,
        ),
        (
            "<head>\n<!-- never closed\n</head>".into(),
            "malformed XML: syntax error: comment not closed",
            2,
            1,
        ),
    ]
}

#[test]
fn every_error_has_its_message_and_position() {
    let mut failures = Vec::new();
    for (document, expected, line, col) in error_cases() {
        let errors = match load_str(&document) {
            Ok(_) => {
                failures.push(format!("{expected:?}: loaded\n{document}"));
                continue;
            }
            Err(diagnostics) => diagnostics,
        };
        let found = errors
            .iter()
            .find(|diagnostic| diagnostic.is_error() && diagnostic.message.contains(expected));
        match found {
            Some(diagnostic) if (diagnostic.line, diagnostic.col) == (line, col) => {}
            Some(diagnostic) => failures.push(format!(
                "{expected:?}: at {}:{} instead of {line}:{col}\n{diagnostic}",
                diagnostic.line, diagnostic.col
            )),
            None => failures.push(format!(
                "{expected:?}: not reported; got {:?}",
                errors.iter().map(|d| d.headline()).collect::<Vec<_>>()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn empty_and_rootless_files_are_whole_file_errors() {
    for document in ["", "<?xml version=\"1.0\"?>\n<!-- only a comment -->\n"] {
        let errors = errors_of(document);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].line, errors[0].col), (0, 0));
        assert_eq!(errors[0].message, "no XML root element: expected <head>");
        assert_eq!(
            errors[0].to_string(),
            "test.xml: error: no XML root element: expected <head>"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let document = "<head>\n\
        <sersync>\n\
        <localpath watch=\"data/www\">\n\
        <remote name=\"www\"/>\n\
        </localpath>\n\
        <rsync><userDefinedPort start=\"true\" port=\"eighty\"/></rsync>\n\
        </sersync>\n\
        <debug start=\"maybe\"/>\n\
        </head>\n";
    let errors = errors_of(document);
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|d| (d.line, d.col, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (3, 19, "watch path \"data/www\" is not absolute"),
            (4, 1, "<remote> is missing the required attribute \"ip\""),
            (
                6,
                44,
                "invalid port \"eighty\" for attribute \"port\" of <userDefinedPort>: expected a number from 1 to 65535"
            ),
            (
                8,
                15,
                "invalid boolean \"maybe\" for attribute \"start\" of <debug>: expected \"true\" or \"false\""
            ),
        ]
    );
}

#[test]
fn warnings_keep_the_config_and_have_positions() {
    let document = "<head>\n\
        <sersync>\n\
        <localpath watch=\"/tmp\"><remote ip=\"h\" name=\"m\" user=\"x\"/></localpath>\n\
        <remotes/>\n\
        <Rsync><comonParams params=\"-a\"/></Rsync>\n\
        <crontab start=\"true\" shedule=\"60\" schedule=\"0\"/>\n\
        </sersync>\n\
        <debug start=\"true\"/>\n\
        <debug start=\"false\"/>\n\
        </head>\n";
    let (config, warnings) = loaded(document);
    assert!(config.debug, "the first <debug> wins");
    assert_eq!(config.crontab.schedule_minutes, 600);
    assert!(config.crontab.enabled);
    let found: Vec<(usize, usize, &str)> = warnings
        .iter()
        .map(|d| (d.line, d.col, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (3, 49, "unknown attribute \"user\" on <remote>, ignored"),
            (4, 1, "unknown element <remotes> in <sersync>, ignored"),
            (
                5,
                8,
                "unknown element <comonParams> in <Rsync>, ignored (did you mean <commonParams>?)"
            ),
            (
                6,
                23,
                "unknown attribute \"shedule\" on <crontab>, ignored (did you mean \"schedule\"?)"
            ),
            (
                6,
                46,
                "invalid crontab schedule \"0\" for attribute \"schedule\" of <crontab>: expected a positive number of minutes; using 600 as sersync 2.5 does"
            ),
            (
                9,
                1,
                "duplicate <debug> in <head> ignored; the first one (line 8) is used"
            ),
        ]
    );
    assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
}

#[test]
fn other_warnings() {
    let cases: [(String, &str); 7] = [
        (
            in_head(r#"<filter start="true"><exclude expression="^/sub/.*\.tmp"/></filter>"#),
            "starts with \"/\", but paths are matched without a leading slash (sub/dir/name): drop the \"/\"",
        ),
        (
            in_sersync(
                r#"<localpath watch="/tmp/sersync-test-does-not-exist"><remote ip="h" name="m"/></localpath>"#,
            ),
            "watch root \"/tmp/sersync-test-does-not-exist\" does not exist (yet); sersyncd retries it",
        ),
        (
            in_sersync(r#"<localpath watch="/dev/null"><remote ip="h" name="m"/></localpath>"#),
            "watch root \"/dev/null\" is not a directory (yet); sersyncd retries it",
        ),
        (
            in_sersync(&format!(
                "{LOCALPATH}\n<localpath watch=\"/tmp/sub\"><remote ip=\"h\" name=\"m\"/></localpath>"
            )),
            "watch root \"/tmp/sub\" is inside watch root \"/tmp\" (lines 3 and 4)",
        ),
        (
            in_head(r#"<plugin name="ftp"><x/></plugin>"#),
            "unknown plugin \"ftp\" in <plugin name>, section ignored",
        ),
        (
            in_head(
                r#"<plugin name="http"><localpath watch="/w"><deshost url="http://h/?a=1&b=2"/></localpath></plugin>"#,
            ),
            "bare \"&\" in an attribute value taken literally",
        ),
        (
            in_sersync_after_root(r#"<failLog path="" timeToExecute=""/>"#),
            "attribute \"path\" of <failLog> is empty; using \"rsync_fail_log.sh\"",
        ),
    ];
    for (document, expected) in cases {
        let (_, warnings) = loaded(&document);
        assert!(
            warnings.iter().any(|w| w.message.contains(expected)),
            "{expected:?} not in {warnings:?}"
        );
    }
}

#[test]
fn several_localpaths_are_all_kept() {
    let document = in_sersync(
        "<localpath watch=\"/tmp\">\n\
           <remote ip=\"10.0.0.1\" name=\"a\"/>\n\
           <remote ip=\"10.0.0.2\" name=\"a\"/>\n\
         </localpath>\n\
         <localpath watch=\"/var/\">\n\
           <remote ip=\"fe80::1\" name=\"b\"/>\n\
         </localpath>\n\
         <localpath watch=\"/\">\n\
           <remote ip=\"h\" name=\"root\"/>\n\
         </localpath>",
    );
    let (config, warnings) = loaded(&document);
    let roots: Vec<(&Path, usize, usize)> = config
        .roots
        .iter()
        .map(|root| (root.path.as_path(), root.remotes.len(), root.line))
        .collect();
    assert_eq!(
        roots,
        [
            (Path::new("/tmp"), 2, 3),
            (Path::new("/var"), 1, 7),
            (Path::new("/"), 1, 10)
        ]
    );
    assert_eq!(config.roots[1].remotes[0].ip, "fe80::1");
    // "/" contains the other two.
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.message.contains("is inside watch root \"/\""))
            .count(),
        2
    );
}

#[test]
fn iso_8859_1_bytes_give_the_same_bytes_in_paths_and_regexes() {
    let mut document = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<head>\n".to_vec();
    document.extend_from_slice(
        b"<filter start=\"true\"><exclude expression=\"caf[\xE9e]\"/></filter>\n",
    );
    document.extend_from_slice(b"<sersync><localpath watch=\"/tmp/caf\xE9/\">");
    document.extend_from_slice(b"<remote ip=\"h\" name=\"m\"/></localpath></sersync>\n</head>\n");
    let (config, warnings) = match parse(Path::new("latin1.xml"), &document) {
        Ok(loaded) => loaded,
        Err(diagnostics) => panic!("{diagnostics:?}"),
    };
    assert_eq!(config.roots[0].path.as_os_str().as_bytes(), b"/tmp/caf\xE9");
    assert!(config.filter.excludes(b"caf\xE9", false));
    assert!(config.filter.excludes(b"cafe", false));
    // Messages show the character; its column counts it once.
    let missing = warnings
        .iter()
        .find(|w| w.message.contains("does not exist"))
        .expect("the Latin-1 directory does not exist");
    assert_eq!(
        missing.message,
        "watch root \"/tmp/café\" does not exist (yet); sersyncd retries it"
    );
    assert_eq!((missing.line, missing.col), (4, 28));
}

#[test]
fn iso_8859_1_errors_point_at_the_right_column() {
    let document = b"<head>\n<!-- \xE9\xE9 --><debug start=\"oui\"/>\n<sersync/>\n</head>";
    let errors = match parse(Path::new("latin1.xml"), document) {
        Ok(_) => panic!("must fail"),
        Err(diagnostics) => diagnostics,
    };
    let error = errors
        .iter()
        .find(|d| d.message.starts_with("invalid boolean"))
        .expect("the boolean error");
    assert_eq!((error.line, error.col), (2, 26));
    assert_eq!(
        error.source_line.as_deref(),
        Some("<!-- éé --><debug start=\"oui\"/>")
    );
}

#[test]
fn utf8_with_chinese_comments_loads_even_when_declared_latin1() {
    let document = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n\
        <head version=\"2.5\">\n\
        <!-- 监控目录，可以有多个 -->\n\
        <sersync>\n\
        <localpath watch=\"/tmp/数据\"><!-- 远程 --><remote ip=\"h\" name=\"模块\"/></localpath>\n\
        </sersync>\n\
        </head>\n";
    let (config, _) = loaded(document);
    assert_eq!(config.roots[0].path, Path::new("/tmp/数据"));
    assert_eq!(config.roots[0].remotes[0].name, "模块");

    // Columns count characters, not bytes.
    let errors = errors_of(&format!(
        "<head><!-- 中文 --><debug start=\"是\"/><sersync>{LOCALPATH}</sersync></head>"
    ));
    assert_eq!((errors[0].line, errors[0].col), (1, 32));
    assert_eq!(
        errors[0].to_string(),
        "test.xml:1:32: error: invalid boolean \"是\" for attribute \"start\" of <debug>: expected \"true\" or \"false\"\n\
         \x20   1 | <head><!-- 中文 --><debug start=\"是\"/><sersync><localpath watch=\"/tmp\"><remote ip=\"h\" name=\"m\"/></localpath></sersync></head>\n\
         \x20     |                                  ^"
    );
}

#[test]
fn crlf_line_endings_and_a_bom_are_handled() {
    let document = "\u{feff}<head>\r\n<sersync>\r\n<localpath watch=\"x\">\r\n<remote ip=\"h\" name=\"m\"/>\r\n</localpath>\r\n</sersync>\r\n</head>\r\n";
    let errors = errors_of(document);
    assert_eq!((errors[0].line, errors[0].col), (3, 19));
    assert_eq!(
        errors[0].source_line.as_deref(),
        Some("<localpath watch=\"x\">")
    );
}

#[test]
fn entities_are_decoded_and_positions_stay_in_the_source() {
    let document = in_head(
        r#"<plugin name="command"><param prefix="/bin/echo &quot;a b&quot; &amp;&#65;&#x42;" suffix="'&lt;x&gt;'" ignoreError="false"/></plugin>"#,
    );
    let (config, _) = loaded(&document);
    let command = config.plugins.command.expect("command plugin");
    assert_eq!(command.prefix, "/bin/echo \"a b\" &AB");
    assert_eq!(command.prefix_words, ["/bin/echo", "a b", "&AB"]);
    assert_eq!(command.suffix_words, ["<x>"]);
    assert!(!command.ignore_error);

    // The unterminated quote is the `&quot;` at column 48, not where it is in the value.
    let errors = errors_of(&in_head(
        r#"<plugin name="command"><param prefix="&amp;&amp; &quot;x"/></plugin>"#,
    ));
    assert_eq!((errors[0].line, errors[0].col), (2, 50));
}

#[test]
fn names_compare_ignoring_case_and_booleans_too() {
    let document = "<head>\n\
        <Debug START=\"TRUE\"/>\n\
        <fileSystem XFS=\"True\"/>\n\
        <ignoreTempFiles start=\"false\"/>\n\
        <inotify><createFile start=\"true\"/><delete start=\"false\"/></inotify>\n\
        <sersync><LocalPath Watch=\"/tmp\"><remote IP=\"h\" Name=\"m\"/></LocalPath>\n\
        <rsync><commonParams params=\"\"/><ssh start=\"true\"/><timeout start=\"true\" time=\"0\"/></rsync>\n\
        <plugin start=\"true\" name=\"COMMAND\"/></sersync>\n\
        <plugin name=\"Command\"><param prefix=\"/usr/local/bin/hook --flag\"/></plugin>\n\
        </head>\n";
    let (config, warnings) = loaded(document);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(config.debug && config.xfs && !config.ignore_temp_files);
    assert!(config.events.create_file && !config.events.delete);
    assert_eq!(config.roots.len(), 1);
    assert!(config.rsync.common_params.is_empty());
    assert!(config.rsync.ssh);
    assert_eq!(config.rsync.timeout, Some(0));
    assert_eq!(config.plugins.after_sync, Some(PluginKind::Command));
    let command = config.plugins.command.expect("command");
    assert_eq!(command.prefix_words, ["/usr/local/bin/hook", "--flag"]);
}

#[test]
fn missing_sections_take_the_shipped_defaults() {
    let (config, warnings) = loaded(&in_sersync(LOCALPATH));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.host.port, 8008);
    assert!(!config.debug && !config.xfs && config.ignore_temp_files);
    assert!(!config.filter.enabled && config.filter.excludes.is_empty());
    assert_eq!(config.events, EventToggles::default());
    assert_eq!(config.rsync, RsyncOptions::default());
    assert_eq!(config.fail_log, FailLog::default());
    assert_eq!(config.crontab, Crontab::default());
    assert!(config.plugins.after_sync.is_none() && config.plugins.command.is_none());

    // An <inotify> with only some toggles keeps the stock value of the others.
    let (config, _) = loaded(&in_head(r#"<inotify><modify start="true"/></inotify>"#));
    assert_eq!(
        config.events,
        EventToggles {
            modify: true,
            ..EventToggles::default()
        }
    );
}

#[test]
fn enabled_options_are_kept() {
    let password = TempFile::new("ok", 0o600);
    let document = in_sersync_after_root(&format!(
        "<rsync><commonParams params=\"-artuz --exclude='*.tmp' -e 'ssh -p 2222'\"/>\
         <auth start=\"true\" users=\"backup\" passwordfile=\"{}\"/>\
         <userDefinedPort start=\"true\" port=\"874\"/><timeout start=\"true\" time=\"100\"/></rsync>\
         <failLog path=\"fail.sh\" timeToExecute=\"15\"/>\
         <crontab start=\"true\" schedule=\"30\"><crontabfilter start=\"true\"><exclude expression=\"*.php\"/></crontabfilter></crontab>",
        password.path.display()
    ));
    let (config, _) = loaded(&document);
    assert_eq!(
        config.rsync.common_params,
        ["-artz", "--exclude=*.tmp", "-e", "ssh -p 2222"]
    );
    assert_eq!(
        config.rsync.auth,
        Some(Auth {
            user: "backup".into(),
            password_file: password.path.clone()
        })
    );
    assert_eq!(config.rsync.port, Some(874));
    assert_eq!(config.rsync.timeout, Some(100));
    assert_eq!(config.fail_log.path, Path::new("fail.sh"));
    assert_eq!(config.fail_log.interval_minutes, 15);
    assert!(config.crontab.enabled && config.crontab.filter_enabled);
    assert_eq!(config.crontab.schedule_minutes, 30);
    assert_eq!(config.crontab.excludes, ["*.php"]);
}

/// A file under the temp dir with a chosen mode, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(tag: &str, mode: u32) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "sersync-config-test-{}-{tag}.pas",
            std::process::id()
        ));
        std::fs::write(&path, "secret\n").expect("write temp file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod temp file");
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn auth_document(password_file: &Path) -> String {
    in_sersync_after_root(&format!(
        r#"<rsync><auth start="true" users="u" passwordfile="{}"/></rsync>"#,
        password_file.display()
    ))
}

#[test]
fn password_file_must_be_private_and_regular() {
    let private = TempFile::new("private", 0o600);
    let (config, _) = loaded(&auth_document(&private.path));
    assert!(config.rsync.auth.is_some());

    let readable = TempFile::new("readable", 0o644);
    let errors = errors_of(&auth_document(&readable.path));
    let shown = readable.path.display();
    assert_eq!(
        errors[0].message,
        format!(
            "password file \"{shown}\" is accessible by group/others (mode 0644); it must be private to its owner: chmod 600 {shown}"
        )
    );
    assert_eq!((errors[0].line, errors[0].col), (4, 51));

    let group = TempFile::new("group", 0o640);
    assert!(
        errors_of(&auth_document(&group.path))[0]
            .message
            .contains("(mode 0640)")
    );

    let errors = errors_of(&auth_document(&std::env::temp_dir()));
    assert!(
        errors[0].message.ends_with("is not a regular file"),
        "{errors:?}"
    );

    // Disabled auth is not checked.
    let document = in_sersync_after_root(
        r#"<rsync><auth start="false" users="" passwordfile="/nonexistent"/></rsync>"#,
    );
    assert!(loaded(&document).0.rsync.auth.is_none());
}

#[test]
fn display_shows_the_line_and_a_caret() {
    let errors = errors_of(&in_sersync(
        "\t<localpath watch=\"opt/x\"><remote ip=\"h\" name=\"m\"/></localpath>",
    ));
    assert_eq!(
        errors[0].to_string(),
        "test.xml:3:20: error: watch path \"opt/x\" is not absolute\n\
         \x20   3 | \t<localpath watch=\"opt/x\"><remote ip=\"h\" name=\"m\"/></localpath>\n\
         \x20     | \t                  ^"
    );

    let warning = Diagnostic {
        file: PathBuf::from("/etc/sersync/web.xml"),
        line: 12,
        col: 27,
        severity: Severity::Warning,
        message: "something".into(),
        source_line: Some("        <localpath watch=\"opt/x\">".into()),
    };
    assert_eq!(
        warning.to_string(),
        "/etc/sersync/web.xml:12:27: warning: something\n\
         \x20  12 |         <localpath watch=\"opt/x\">\n\
         \x20     |                           ^"
    );
    assert_eq!(
        Diagnostic::file_error(Path::new("/x.xml"), "cannot read config file: gone").to_string(),
        "/x.xml: error: cannot read config file: gone"
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let errors = match load(Path::new("/nonexistent/sersync/confxml.xml")) {
        Ok(_) => panic!("must fail"),
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.starts_with("cannot read config file: "));
    assert_eq!(errors[0].line, 0);
}

#[test]
fn split_words_like_a_shell() {
    let ok: [(&str, &[&str]); 16] = [
        ("", &[]),
        ("   \t\n ", &[]),
        ("-artuz", &["-artuz"]),
        ("  -a   -z  ", &["-a", "-z"]),
        ("-e 'ssh -p 2222'", &["-e", "ssh -p 2222"]),
        ("--exclude='*.tmp'", &["--exclude=*.tmp"]),
        (r#""a b"c'd e'"#, &["a bcd e"]),
        (r#"'it'\''s'"#, &["it's"]),
        (r#""\"\\\$\`""#, &["\"\\$`"]),
        (r#""\n\a""#, &["\\n\\a"]),
        (r"a\ b \\ \'", &["a b", "\\", "'"]),
        ("'' \"\"", &["", ""]),
        (
            "$HOME `id` * ~ ; | >",
            &["$HOME", "`id`", "*", "~", ";", "|", ">"],
        ),
        ("a\\\nb", &["ab"]),
        ("\"a\\\nb\"", &["ab"]),
        ("'\\'", &["\\"]),
    ];
    for (input, expected) in ok {
        let expected: Vec<String> = expected.iter().map(|word| (*word).to_owned()).collect();
        assert_eq!(split_words(input), Ok(expected), "input {input:?}");
    }

    let errors: [(&str, &str, usize); 5] = [
        ("-e 'ssh", "unterminated single quote", 3),
        ("\"abc", "unterminated double quote", 0),
        (r#"a "b\""#, "unterminated double quote", 2),
        ("a\\", "trailing backslash escapes nothing", 1),
        ("'a' 'b", "unterminated single quote", 4),
    ];
    for (input, message, at) in errors {
        let err = split_words_located(input).expect_err(input);
        assert_eq!(
            (err.message.as_str(), err.at),
            (message, at),
            "input {input:?}"
        );
        assert_eq!(
            split_words(input),
            Err(format!("{message} (at character {})", at + 1))
        );
    }
}

/// Every `tests/fixtures/config/CASE.xml` gives exactly the diagnostic first lines of
/// `CASE.stderr` (with `{FILE}` for the config path), and a fixture without any `error:` line
/// loads.
#[test]
fn cli_fixtures_match_the_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing in {}", dir.display());
    for case in cases {
        let bytes = std::fs::read(&case).expect("fixture");
        let expected =
            std::fs::read_to_string(case.with_extension("stderr")).expect("fixture .stderr");
        let expected: Vec<&str> = expected.lines().collect();
        let (loads, diagnostics) = match parse(Path::new("{FILE}"), &bytes) {
            Ok((_, warnings)) => (true, warnings),
            Err(diagnostics) => (false, diagnostics),
        };
        let got: Vec<String> = diagnostics.iter().map(Diagnostic::headline).collect();
        assert_eq!(got, expected, "{}", case.display());
        assert_eq!(
            loads,
            !expected.iter().any(|line| line.contains(": error: ")),
            "{}",
            case.display()
        );
        for diagnostic in &diagnostics {
            let first_line = diagnostic.to_string();
            assert!(first_line.starts_with(&diagnostic.headline()));
        }
    }
}

// ---- plugin extensions (ours): socket framing, http and purge requests, command timeout --

#[test]
fn plugin_extensions_are_read_with_their_defaults() {
    let document = in_head(
        r#"<plugin name="command"><param prefix="/bin/true" timeout="5"/></plugin>
<plugin name="socket"><localpath watch="/tmp"><deshost ip="127.0.0.1" port="9" framing="NUL"/></localpath></plugin>
<plugin name="http"><localpath watch="/tmp"><deshost url="http://hooks.local:8080/x" timeout="2" retries="0"><header name="Authorization" value=" Bearer t "/></deshost></localpath></plugin>
<plugin name="refreshCDN"><localpath watch="/tmp"><sendurl base="https://www.example.com"/><purge url="http://127.0.0.1:6081{path}?u={url_q}" body='{"files":["{url}"]}'><header name="X-Key" value="k"/></purge></localpath></plugin>"#,
    );
    let (config, warnings) = loaded(&document);
    assert!(warnings.is_empty(), "{warnings:?}");
    let plugins = &config.plugins;
    assert_eq!(plugins.command.as_ref().unwrap().timeout_secs, 5);
    assert_eq!(plugins.socket.as_ref().unwrap().framing, SocketFraming::Nul);
    let http = plugins.http.as_ref().unwrap();
    assert_eq!(
        (
            http.url.to_string().as_str(),
            http.timeout_secs,
            http.retries
        ),
        ("http://hooks.local:8080/x", 2, 0)
    );
    assert_eq!(
        http.headers,
        [HttpHeader {
            name: "Authorization".into(),
            value: "Bearer t".into()
        }]
    );
    let cdn = plugins.refresh_cdn.as_ref().unwrap();
    assert_eq!((cdn.domain_name.as_str(), cdn.port), ("", 80));
    assert_eq!(
        cdn.purge,
        Some(PurgeRequest {
            url: "http://127.0.0.1:6081{path}?u={url_q}".into(),
            method: "PURGE".into(),
            headers: vec![HttpHeader {
                name: "X-Key".into(),
                value: "k".into()
            }],
            body: Some(r#"{"files":["{url}"]}"#.into()),
            timeout_secs: 5,
            retries: 2,
        })
    );

    // Without the new attributes: the values sersync 2.5 implied, and our defaults.
    let (config, _) = loaded(&in_head(
        r#"<plugin name="command"><param prefix="/bin/true"/></plugin>
<plugin name="socket"><localpath watch="/tmp"><deshost ip="h" port="9"/></localpath></plugin>
<plugin name="http"><localpath watch="/tmp"><deshost url="h/x" port="81"/></localpath></plugin>"#,
    ));
    assert_eq!(config.plugins.command.unwrap().timeout_secs, 60);
    assert_eq!(config.plugins.socket.unwrap().framing, SocketFraming::Raw);
    let http = config.plugins.http.unwrap();
    assert_eq!(
        (
            http.url.port,
            http.timeout_secs,
            http.retries,
            http.headers.len()
        ),
        (81, 5, 3, 0)
    );
    // The URL's own port wins over <deshost port>.
    let (config, _) = loaded(&in_head(
        r#"<plugin name="http"><localpath watch="/tmp"><deshost url="h:9/x" port="81"/></localpath></plugin>"#,
    ));
    assert_eq!(config.plugins.http.unwrap().url.to_string(), "http://h:9/x");
}

#[test]
fn plugin_extension_errors_point_at_the_value() {
    let cases = [
        (
            r#"<plugin name="socket"><localpath watch="/tmp"><deshost ip="h" port="9" framing="lines"/></localpath></plugin>"#,
            "invalid framing \"lines\" for attribute \"framing\" of <deshost>: expected \"raw\", \"newline\" or \"nul\"",
        ),
        (
            r#"<plugin name="http"><localpath watch="/tmp"><deshost url="https://hooks.example.com/"/></localpath></plugin>"#,
            "invalid URL \"https://hooks.example.com/\" in attribute \"url\" of <deshost>: https is not supported",
        ),
        (
            r#"<plugin name="http"><localpath watch="/tmp"><deshost url="http://h/" retries="-1"/></localpath></plugin>"#,
            "invalid number \"-1\" for attribute \"retries\" of <deshost>",
        ),
        (
            r#"<plugin name="http"><localpath watch="/tmp"><deshost url="http://h/"><header name="Bad Name" value="v"/></deshost></localpath></plugin>"#,
            "invalid HTTP header name \"Bad Name\"",
        ),
        (
            r#"<plugin name="http"><localpath watch="/tmp"><deshost url="http://h/"><header name="Content-Length" value="1"/></deshost></localpath></plugin>"#,
            "header \"Content-Length\" is set by sersyncd and cannot be configured",
        ),
        (
            r#"<plugin name="http"><localpath watch="/tmp"><deshost url="http://h/"><header name="X" value="a&#10;b"/></deshost></localpath></plugin>"#,
            "the value of header \"X\" contains a line break",
        ),
        (
            r#"<plugin name="command"><param prefix="/bin/true" timeout="0"/></plugin>"#,
            "invalid number \"0\" for attribute \"timeout\" of <param>: expected whole seconds (1 or more)",
        ),
        (
            r#"<plugin name="refreshCDN"><localpath watch="/tmp"><purge url="http://h{path_q}/x"/></localpath></plugin>"#,
            "placeholders in attribute \"url\" of <purge> are only allowed in the URL's path and query",
        ),
        (
            r#"<plugin name="refreshCDN"><localpath watch="/tmp"><purge url="http://{path}/x"/></localpath></plugin>"#,
            "invalid URL \"http://{path}/x\" in attribute \"url\" of <purge>: the URL has no host",
        ),
        (
            r#"<plugin name="refreshCDN"><localpath watch="/tmp"><purge url="http://h{path}" body="{url}"/></localpath></plugin>"#,
            "<purge> uses {url} or {url_q} but there is no <sendurl base>",
        ),
        (
            r#"<plugin name="refreshCDN"><localpath watch="/tmp"><purge url="http://h/" method="PUR GE"/></localpath></plugin>"#,
            "invalid HTTP method \"PUR GE\" in attribute \"method\" of <purge>",
        ),
        (
            r#"<plugin name="refreshCDN"><localpath watch="/tmp"><sendurl base="http://x"/></localpath></plugin>"#,
            "<localpath> of <plugin name=\"refreshCDN\"> has no <cdninfo>",
        ),
    ];
    for (inner, expected) in cases {
        let errors = errors_of(&in_head(inner));
        assert!(
            errors.iter().any(|e| e.message.contains(expected)),
            "{expected:?} not in {errors:?}"
        );
    }
}

#[test]
fn delete_guard_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.delete_guard, DeleteGuard::default());
    assert_eq!(
        (config.delete_guard.share, config.delete_guard.minimum),
        (50, 100)
    );
    let (config, _) = loaded(&in_sersync_after_root(
        r#"<deleteGuard share="0" minimum="5" maximum="20000" sentinel=".mounted"/>"#,
    ));
    assert_eq!(
        config.delete_guard,
        DeleteGuard {
            share: 0,
            minimum: 5,
            maximum: Some(20_000),
            sentinel: Some(".mounted".into())
        }
    );
    // (element, words the error must carry); each on line 4.
    let table = [
        (r#"<deleteGuard share="101"/>"#, "0 to 100"),
        (r#"<deleteGuard share="half"/>"#, "invalid number"),
        (r#"<deleteGuard minimum="0"/>"#, "1 or more"),
        (r#"<deleteGuard maximum="0"/>"#, "1 or more"),
        (r#"<deleteGuard maximum="many"/>"#, "invalid number"),
        (r#"<deleteGuard sentinel="/abs"/>"#, "relative"),
        (r#"<deleteGuard sentinel="a/../../b"/>"#, "relative"),
    ];
    for (element, words) in table {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors.iter().any(|e| e.line == 4
                && e.message.contains(words)
                && e.message.contains("deleteGuard")),
            "{element}: {errors:?}"
        );
    }
}

#[test]
fn queue_cap_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.max_pending, crate::config::DEFAULT_MAX_PENDING);
    let (config, _) = loaded(&in_sersync_after_root(r#"<queue maxPending="5000"/>"#));
    assert_eq!(config.max_pending, 5000);
    // (element, words the error must carry); each on line 4.
    let table = [
        (r#"<queue maxPending="15"/>"#, "16 or more"),
        (r#"<queue maxPending="lots"/>"#, "invalid number"),
    ];
    for (element, words) in table {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors
                .iter()
                .any(|e| e.line == 4 && e.message.contains(words) && e.message.contains("queue")),
            "{element}: {errors:?}"
        );
    }
}

#[test]
fn large_files_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.large_files, Some(64 << 20));
    // (element, the threshold in bytes); each on line 4.
    let table = [
        (r#"<queue largeFiles="1048576"/>"#, Some(1 << 20)),
        (r#"<queue largeFiles="512K"/>"#, Some(512 << 10)),
        (r#"<queue largeFiles=" 2g "/>"#, Some(2 << 30)),
        (r#"<queue largeFiles="100MiB"/>"#, Some(100 << 20)),
        (r#"<queue largeFiles="1TB"/>"#, Some(1 << 40)),
        (r#"<queue largeFiles="0"/>"#, None),
        (r#"<queue maxPending="5000"/>"#, Some(64 << 20)),
    ];
    for (element, expected) in table {
        let (config, _) = loaded(&in_sersync_after_root(element));
        assert_eq!(config.large_files, expected, "{element}");
    }
    for element in [
        r#"<queue largeFiles="big"/>"#,
        r#"<queue largeFiles="12X"/>"#,
        r#"<queue largeFiles="-1M"/>"#,
        r#"<queue largeFiles="99999999999T"/>"#,
    ] {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors.iter().any(|e| e.line == 4
                && e.message.contains("largeFiles")
                && e.message.contains("queue")
                && e.message.contains("size")),
            "{element}: {errors:?}"
        );
    }
}

#[test]
fn metrics_listen_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.metrics, None);
    // (element, the address it listens on); each on line 4.
    let table = [
        (r#"<metrics listen="127.0.0.1:9150"/>"#, "127.0.0.1:9150"),
        (r#"<metrics listen=" 0.0.0.0:9150 "/>"#, "0.0.0.0:9150"),
        (r#"<metrics listen="[::1]:9150"/>"#, "[::1]:9150"),
    ];
    for (element, address) in table {
        let (config, warnings) = loaded(&in_sersync_after_root(element));
        assert_eq!(
            config.metrics,
            Some(MetricsListen {
                address: address.parse().unwrap(),
                line: 4
            }),
            "{element}"
        );
        assert!(warnings.is_empty(), "{element}: {warnings:?}");
    }
    // (element, words the error must carry); each on line 4.
    let table = [
        (r#"<metrics listen="localhost:9150"/>"#, "no host names"),
        (r#"<metrics listen="127.0.0.1"/>"#, "IP:PORT"),
        (r#"<metrics listen="127.0.0.1:0"/>"#, "from 1 to 65535"),
        (r#"<metrics listen="127.0.0.1:65536"/>"#, "from 1 to 65535"),
        (r#"<metrics listen="::1:9150"/>"#, "[::1]:9150"),
        (r#"<metrics listen=""/>"#, "is empty"),
        (r#"<metrics/>"#, "missing the required attribute \"listen\""),
    ];
    for (element, words) in table {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors
                .iter()
                .any(|e| e.line == 4 && e.message.contains(words) && e.message.contains("metrics")),
            "{element}: {errors:?}"
        );
    }
}

#[test]
fn soft_delete_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.rsync.soft_delete, None);
    let (config, _) = loaded(&in_sersync_after_root(r#"<softDelete start="false"/>"#));
    assert_eq!(config.rsync.soft_delete, None);
    let (config, _) = loaded(&in_sersync_after_root(r#"<softDelete start="true"/>"#));
    assert_eq!(config.rsync.soft_delete, Some(SoftDelete::default()));
    let (config, _) = loaded(&in_sersync_after_root(
        r#"<softDelete start="true" dir=".trash" keepDays="7"/>"#,
    ));
    assert_eq!(
        config.rsync.soft_delete,
        Some(SoftDelete {
            dir: ".trash".into(),
            keep_days: 7
        })
    );
    for element in [
        r#"<softDelete start="true" dir="a/b"/>"#,
        r#"<softDelete start="true" dir=".."/>"#,
        r#"<softDelete start="true" dir="tr*sh"/>"#,
        r#"<softDelete start="true" keepDays="0"/>"#,
    ] {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors
                .iter()
                .any(|e| e.line == 4 && e.message.contains("softDelete")),
            "{element}: {errors:?}"
        );
    }
}

#[test]
fn remote_values_that_argv_would_misread_are_refused_with_their_line() {
    for (remote, expected) in [
        (
            r#"ip="-oProxyCommand=sh" name="m""#,
            r#"ip="-oProxyCommand=sh" starts with "-""#,
        ),
        (
            r#"ip="h" name="--delete-excluded""#,
            r#"name="--delete-excluded" starts with "-""#,
        ),
        ("ip=\"h\" name=\"m&#10;x\"", "holds a control character"),
        (r#"ip="a b" name="m""#, "is not a host name or address"),
        (r#"ip="u@h" name="m""#, "is not a host name or address"),
    ] {
        let text = in_sersync(&format!(
            "<localpath watch=\"/tmp\">\n<remote {remote}/></localpath>"
        ));
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{remote}: {errors:?}");
        let shown = errors[0].to_string();
        assert!(shown.contains(expected), "{remote}: {shown}");
        assert!(shown.contains("test.xml:4"), "{remote}: {shown}");
    }
    for ok in [
        r#"ip="::1" name="m""#,
        r#"ip="backup-1.example" name="/srv/www-1""#,
    ] {
        let text = in_sersync(&format!(
            "<localpath watch=\"/tmp\"><remote {ok}/></localpath>"
        ));
        loaded(&text);
    }
}

#[test]
fn localpath_user_names_an_existing_user() {
    let (config, _) = loaded(&in_sersync(
        r#"<localpath watch="/tmp" user="root"><remote ip="h" name="m"/></localpath>"#,
    ));
    assert_eq!(config.roots[0].run_as, RunAs::User("root".into()));
    let (config, _) = loaded(&in_sersync(LOCALPATH));
    assert_eq!(config.roots[0].run_as, RunAs::RootOwner);
    let errors = errors_of(&in_sersync(
        r#"<localpath watch="/tmp" user="no-such-user-sersync"><remote ip="h" name="m"/></localpath>"#,
    ));
    assert!(
        errors[0]
            .to_string()
            .contains(r#"user="no-such-user-sersync": no such user"#),
        "{errors:?}"
    );
}

/// `check` rejects what start-up rejects, with the exit status start-up ends with: an
/// invalid file 78, a `-m NAME` the file cannot serve 64 (both before anything starts).
#[test]
fn check_rejects_what_start_up_rejects() {
    let dir = std::env::temp_dir().join(format!("sersync-check-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let good = write("good.xml", &in_sersync(LOCALPATH));
    let checked = check::check(&good, None).unwrap();
    assert!(
        checked
            .summary(&good)
            .ends_with(": configuration OK (1 watch root, 1 remote)"),
        "{}",
        checked.summary(&good)
    );

    let empty_prefix = write(
        "prefix.xml",
        &in_head(r#"<plugin name="command"><param prefix=""/></plugin>"#),
    );
    let module_cases: [(&Path, Option<&str>, i32, &str); 4] = [
        (&good, Some("ftp"), 64, "unknown plugin \"ftp\""),
        (
            &good,
            Some("socket"),
            64,
            "no usable <plugin name=\"socket\"> section",
        ),
        (&empty_prefix, None, 78, "2:39: error: attribute \"prefix\""),
        (
            &empty_prefix,
            Some("command"),
            78,
            "2:39: error: attribute \"prefix\"",
        ),
    ];
    for (path, module, code, shown) in module_cases {
        let rejected = check::check(path, module).unwrap_err();
        assert_eq!(rejected.exit_code(), code, "{module:?}: {rejected:?}");
        let text = match &rejected {
            check::Rejected::Invalid(diagnostics) => diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            check::Rejected::Module { message, .. } => message.clone(),
        };
        assert!(text.contains(shown), "{module:?}: {text}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn two_way_values_and_what_it_refuses() {
    let (config, warnings) = loaded(&in_sersync_after_root(
        "<twoWay start=\"true\"/>\n<softDelete start=\"true\"/>\n\
         <rsync><commonParams params=\"-artuz\"/></rsync>",
    ));
    assert!(config.rsync.two_way);
    // `-u` is the mode's to pass (and not warned about).
    assert_eq!(config.rsync.common_params, vec!["-artz".to_owned()]);
    assert!(
        warnings.iter().all(|w| !w.message.contains("--update")),
        "{warnings:?}"
    );
    let (config, _) = loaded(&in_sersync_after_root(r#"<twoWay start="false"/>"#));
    assert!(!config.rsync.two_way);

    let filtered = format!(
        "<head>\n<filter start=\"true\"><exclude expression=\"x\"/></filter>\n<sersync>\n\
         {LOCALPATH}\n<twoWay start=\"true\"/>\n<softDelete start=\"true\"/>\n</sersync>\n</head>\n"
    );
    // (text, line of the error, what the message says)
    let rows: &[(&str, usize, &str)] = &[
        (
            &in_sersync_after_root(r#"<twoWay start="true"/>"#),
            4,
            "needs <softDelete start=\"true\">",
        ),
        (
            &in_sersync_after_root("<twoWay start=\"true\"/>\n<softDelete start=\"false\"/>"),
            4,
            "(it is off)",
        ),
        (&filtered, 5, "cannot be used with <filter"),
        (
            &in_sersync_after_root(
                "<twoWay start=\"true\"/>\n<softDelete start=\"true\"/>\n\
                 <watch backend=\"fanotify\"/>",
            ),
            4,
            "cannot be used with <watch backend=\"fanotify\">",
        ),
        (
            &in_sersync_after_root(
                "<twoWay start=\"true\"/>\n<softDelete start=\"true\"/>\n\
                 <rsync><commonParams params=\"-aI --delete\"/></rsync>",
            ),
            4,
            "\"-aI\" cannot be used",
        ),
        (
            &in_sersync_after_root(
                "<twoWay start=\"true\"/>\n<softDelete start=\"true\"/>\n\
                 <rsync><commonParams params=\"-a --delete-after\"/></rsync>",
            ),
            4,
            "\"--delete-after\" cannot be used",
        ),
    ];
    for (text, line, message) in rows {
        let errors = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|e| e.line == *line && e.message.contains(message)),
            "{text}: {errors:?}"
        );
    }
}

#[test]
fn watch_backend_values_and_errors() {
    let (config, _) = loaded(&in_sersync_after_root(""));
    assert_eq!(config.watch_backend, None);
    // (element, the backend it chooses); each on line 4.
    let table = [
        (r#"<watch backend="auto"/>"#, WatchBackend::Auto),
        (r#"<watch backend="inotify"/>"#, WatchBackend::Inotify),
        (r#"<watch backend=" fanotify "/>"#, WatchBackend::Fanotify),
    ];
    for (element, backend) in table {
        let (config, warnings) = loaded(&in_sersync_after_root(element));
        assert_eq!(config.watch_backend, Some(backend), "{element}");
        assert!(warnings.is_empty(), "{element}: {warnings:?}");
    }
    // (element, words the error must carry); each on line 4.
    let table = [
        (
            r#"<watch backend="fanotfy"/>"#,
            "expected auto, inotify or fanotify",
        ),
        (
            r#"<watch backend="FANOTIFY"/>"#,
            "invalid watch backend \"FANOTIFY\"",
        ),
        (r#"<watch backend=""/>"#, "is empty"),
        (r#"<watch/>"#, "missing the required attribute \"backend\""),
    ];
    for (element, words) in table {
        let errors = errors_of(&in_sersync_after_root(element));
        assert!(
            errors
                .iter()
                .any(|e| e.line == 4 && e.message.contains(words) && e.message.contains("watch")),
            "{element}: {errors:?}"
        );
    }
    // The caret points at the value.
    let errors = errors_of(&in_sersync_after_root(r#"<watch backend="fanotfy"/>"#));
    assert_eq!((errors[0].line, errors[0].col), (4, 17), "{errors:?}");
    // An attribute it does not know is a warning, like everywhere else.
    let (config, warnings) = loaded(&in_sersync_after_root(
        r#"<watch backend="auto" mode="x"/>"#,
    ));
    assert_eq!(config.watch_backend, Some(WatchBackend::Auto));
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("unknown attribute \"mode\" on <watch>")),
        "{warnings:?}"
    );
}

#[test]
fn ssh_connection_masters_are_on_unless_turned_off() {
    // (<rsync> contents, ssh, master)
    let rows = [
        ("", false, true),
        (r#"<ssh start="true"/>"#, true, true),
        (r#"<ssh start="true" master="true"/>"#, true, true),
        (r#"<ssh start="true" master="false"/>"#, true, false),
        (r#"<ssh start="false" master="false"/>"#, false, false),
    ];
    for (inner, ssh, master) in rows {
        let text = in_sersync_after_root(&format!("<rsync>{inner}</rsync>"));
        let (config, warnings) = match load_str(&text) {
            Ok(loaded) => loaded,
            Err(diagnostics) => panic!("{inner}: {diagnostics:?}"),
        };
        assert!(warnings.is_empty(), "{inner}: {warnings:?}");
        assert_eq!(
            (config.rsync.ssh, config.rsync.ssh_master),
            (ssh, master),
            "{inner}"
        );
    }
}

#[test]
fn warm_rsyncs_are_on_unless_turned_off() {
    // (<rsync> contents, warm idle seconds)
    let rows = [
        ("", Some(30)),
        (r#"<warm start="true"/>"#, Some(30)),
        (r#"<warm idle="5"/>"#, Some(5)),
        (r#"<warm start="false" idle="5"/>"#, None),
        (r#"<warm start="false"/>"#, None),
    ];
    for (inner, idle) in rows {
        let text = in_sersync_after_root(&format!("<rsync>{inner}</rsync>"));
        let (config, _) = match load_str(&text) {
            Ok(loaded) => loaded,
            Err(diagnostics) => panic!("{inner}: {diagnostics:?}"),
        };
        assert_eq!(
            config.rsync.warm.map(|warm| warm.idle_secs),
            idle,
            "{inner}"
        );
    }
}
