//! The sersync 2.5 schema: from a positioned element tree to a validated [`Config`].
//!
//! Rules shared by every element (they follow the original's xmlParser and
//! `Initialize.cpp` / `FileSynchronize.cpp`, made safe):
//!
//! - Element and attribute names compare ignoring ASCII case, as xmlParser's `xstricmp`.
//! - A missing element or attribute takes the value of the shipped 2.5.4 `confxml.xml`
//!   (the original crashed on a NULL attribute instead).
//! - When an element occurs more than once where one is expected, the first one is used (as
//!   xmlParser's `getChildNode`) and the others draw a warning.
//! - Unknown elements and attributes draw a warning and are ignored, so configs written for
//!   other sersync builds still load.
//! - A value that is present and not empty is validated even when its feature is off
//!   (`port` of a disabled `<userDefinedPort>`): a typo should not wait until someone turns
//!   the feature on. A value that a feature needs is required only when it is on.
//! - Every problem is collected; nothing stops at the first error.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use regex::bytes::{Regex, RegexBuilder};

use super::diag::{Diagnostic, Severity};
use super::source::Source;
use super::words::split_words_located;
use super::xml::{Attr, Element};
use super::{
    Auth, CommandPlugin, Config, Crontab, DeleteGuard, EventToggles, ExcludeRegex, FailLog, Filter,
    HostSection, HttpHeader, HttpPlugin, MetricsListen, PluginKind, Plugins, PurgeRequest,
    RefreshCdnPlugin, Remote, RsyncOptions, RunAs, SocketFraming, SocketPlugin, SoftDelete,
    WatchBackend, WatchRoot,
};
use crate::http_url::{HttpUrl, template_sample};

/// Builds the [`Config`] from the root element, appending every problem to `diagnostics`.
/// Returns `None` only when the root is not `<head>`; otherwise a config is returned even
/// with errors (the caller discards it then).
pub(super) fn build(
    file: &Path,
    source: &Source,
    root: &Element,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Config> {
    let mut checker = Checker {
        source,
        file,
        diagnostics,
    };
    if !root.is("head") {
        checker.error(
            root.at,
            format!("root element is <{}>, expected <head>", root.name),
        );
        return None;
    }
    Some(checker.config(root))
}

/// The attributes and children an element may have, for the unknown-name warnings.
struct Spec {
    name: &'static str,
    attrs: &'static [&'static str],
    children: &'static [Spec],
}

const fn leaf(name: &'static str, attrs: &'static [&'static str]) -> Spec {
    Spec {
        name,
        attrs,
        children: &[],
    }
}

const HEAD: Spec = Spec {
    name: "head",
    attrs: &["version"],
    children: &[
        leaf("host", &["hostip", "port"]),
        leaf("debug", &["start"]),
        leaf("fileSystem", &["xfs"]),
        Spec {
            name: "filter",
            attrs: &["start"],
            children: &[leaf("exclude", &["expression"])],
        },
        Spec {
            name: "inotify",
            attrs: &[],
            children: &[
                leaf("delete", &["start"]),
                leaf("createFolder", &["start"]),
                leaf("createFile", &["start"]),
                leaf("closeWrite", &["start"]),
                leaf("moveFrom", &["start"]),
                leaf("moveTo", &["start"]),
                leaf("attrib", &["start"]),
                leaf("modify", &["start"]),
            ],
        },
        Spec {
            name: "sersync",
            attrs: &[],
            children: &[
                Spec {
                    name: "localpath",
                    attrs: &["watch", "user"],
                    children: &[leaf("remote", &["ip", "name"])],
                },
                Spec {
                    name: "rsync",
                    attrs: &[],
                    children: &[
                        leaf("commonParams", &["params"]),
                        leaf("auth", &["start", "users", "passwordfile"]),
                        leaf("userDefinedPort", &["start", "port"]),
                        leaf("timeout", &["start", "time"]),
                        leaf("ssh", &["start", "master"]),
                        leaf("warm", &["start", "idle"]),
                    ],
                },
                leaf("failLog", &["path", "timeToExecute"]),
                Spec {
                    name: "crontab",
                    attrs: &["start", "schedule"],
                    children: &[Spec {
                        name: "crontabfilter",
                        attrs: &["start"],
                        children: &[leaf("exclude", &["expression"])],
                    }],
                },
                leaf("plugin", &["start", "name"]),
                leaf("deleteGuard", &["share", "minimum", "maximum", "sentinel"]),
                leaf("softDelete", &["start", "dir", "keepDays"]),
                leaf("twoWay", &["start"]),
                leaf("queue", &["maxPending", "largeFiles"]),
                leaf("metrics", &["listen"]),
                leaf("watch", &["backend"]),
            ],
        },
        // The children of a top-level <plugin> depend on its name: see `plugin_section_spec`.
        leaf("plugin", &["name"]),
        leaf("ignoreTempFiles", &["start"]),
    ],
};

const COMMAND_SECTION: Spec = Spec {
    name: "plugin",
    attrs: &["name"],
    children: &[
        leaf("param", &["prefix", "suffix", "ignoreError", "timeout"]),
        Spec {
            name: "filter",
            attrs: &["start"],
            children: &[leaf("include", &["expression"])],
        },
    ],
};

const SOCKET_SECTION: Spec = Spec {
    name: "plugin",
    attrs: &["name"],
    children: &[Spec {
        name: "localpath",
        attrs: &["watch"],
        children: &[leaf("deshost", &["ip", "port", "framing"])],
    }],
};

const REFRESH_CDN_SECTION: Spec = Spec {
    name: "plugin",
    attrs: &["name"],
    children: &[Spec {
        name: "localpath",
        attrs: &["watch"],
        children: &[
            leaf("cdninfo", &["domainname", "port", "username", "passwd"]),
            leaf("sendurl", &["base"]),
            leaf("regexurl", &["regex", "match"]),
            Spec {
                name: "purge",
                attrs: &["url", "method", "body", "timeout", "retries"],
                children: &[leaf("header", &["name", "value"])],
            },
        ],
    }],
};

const HTTP_SECTION: Spec = Spec {
    name: "plugin",
    attrs: &["name"],
    children: &[Spec {
        name: "localpath",
        attrs: &["watch"],
        children: &[Spec {
            name: "deshost",
            attrs: &["url", "port", "timeout", "retries"],
            children: &[leaf("header", &["name", "value"])],
        }],
    }],
};

/// What a top-level `<plugin name>` section may contain.
fn plugin_section_spec(kind: PluginKind) -> &'static Spec {
    match kind {
        PluginKind::Command => &COMMAND_SECTION,
        PluginKind::Socket => &SOCKET_SECTION,
        PluginKind::RefreshCdn => &REFRESH_CDN_SECTION,
        PluginKind::Http => &HTTP_SECTION,
    }
}

const PLUGIN_NAMES: &str = "command, socket, refreshCDN or http";

struct Checker<'a> {
    source: &'a Source,
    file: &'a Path,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, at: usize, message: String) {
        self.report(at, Severity::Error, message);
    }

    fn warn(&mut self, at: usize, message: String) {
        self.report(at, Severity::Warning, message);
    }

    fn report(&mut self, at: usize, severity: Severity, message: String) {
        let diagnostic = self.source.diagnostic(self.file, at, severity, message);
        self.diagnostics.push(diagnostic);
    }

    fn line(&self, at: usize) -> usize {
        self.source.location(at).0
    }

    fn config(&mut self, head: &Element) -> Config {
        self.check_names(head, &HEAD);

        let host_element = self.single(head, "host");
        let host = self.host(host_element);
        let debug_element = self.single(head, "debug");
        let debug = self.flag(debug_element, "start", false);
        let file_system = self.single(head, "fileSystem");
        let xfs = self.flag(file_system, "xfs", false);
        let filter_element = self.single(head, "filter");
        let filter = self.filter(filter_element);
        let ignore_temp = self.single(head, "ignoreTempFiles");
        let ignore_temp_files = self.flag(ignore_temp, "start", true);
        let inotify = self.single(head, "inotify");
        let events = self.events(inotify);

        let sersync = self.single(head, "sersync");
        let roots = self.roots(head, sersync);
        let mut rsync = RsyncOptions::default();
        let mut fail_log = FailLog::default();
        let mut crontab = Crontab::default();
        let mut delete_guard = DeleteGuard::default();
        let mut max_pending = super::DEFAULT_MAX_PENDING;
        let mut large_files = Some(super::DEFAULT_LARGE_FILES);
        let mut metrics = None;
        let mut watch_backend = None;
        if let Some(sersync) = sersync {
            if let Some(element) = self.single(sersync, "watch") {
                watch_backend = self.watch_backend(element);
            }
            if let Some(element) = self.single(sersync, "metrics") {
                metrics = self.metrics(element);
            }
            if let Some(element) = self.single(sersync, "queue") {
                let default = u32::try_from(max_pending).unwrap_or(u32::MAX);
                max_pending = self
                    .optional_count(element, "maxPending", 16, "paths", default)
                    .map_or(max_pending, |cap| cap as usize);
                if let Some(attr) = Self::given(element, "largeFiles") {
                    match super::parse_size(&attr.value) {
                        Ok(0) => large_files = None,
                        Ok(size) => large_files = Some(size),
                        Err(problem) => self.error(
                            attr.value_at(),
                            format!("{problem} for attribute \"largeFiles\" of <queue>"),
                        ),
                    }
                }
            }
            if let Some(element) = self.single(sersync, "deleteGuard") {
                delete_guard = self.delete_guard(element);
            }
            let two_way_element = self.single(sersync, "twoWay");
            let two_way = self.flag(two_way_element, "start", false);
            if let Some(element) = self.single(sersync, "rsync") {
                rsync = self.rsync(element, two_way);
            }
            rsync.two_way = two_way;
            let soft_delete = self.single(sersync, "softDelete");
            if self.flag(soft_delete, "start", false) {
                rsync.soft_delete = soft_delete.and_then(|element| self.soft_delete(element));
            }
            if let Some(element) = two_way_element.filter(|_| two_way) {
                self.check_two_way(
                    element,
                    &rsync,
                    &filter,
                    soft_delete.is_some(),
                    watch_backend,
                );
            }
            if let Some(element) = self.single(sersync, "failLog") {
                fail_log = self.fail_log(element);
            }
            if let Some(element) = self.single(sersync, "crontab") {
                crontab = self.crontab(element);
            }
        }
        let plugins = self.plugins(head, sersync);
        // Two-way mode's sends list the peer's copies first and compare versions: one run.
        let large_files = large_files.filter(|_| !rsync.two_way);

        Config {
            file: self.file.to_owned(),
            host,
            debug,
            xfs,
            filter,
            ignore_temp_files,
            events,
            roots,
            rsync,
            fail_log,
            crontab,
            plugins,
            delete_guard,
            max_pending,
            large_files,
            metrics,
            watch_backend,
        }
    }

    fn watch_backend(&mut self, element: &Element) -> Option<WatchBackend> {
        let attr = self.required(element, "backend")?;
        match super::parse_watch_backend(&attr.value) {
            Ok(backend) => Some(backend),
            Err(message) => {
                self.error(attr.value_at(), format!("{message} in <watch backend>"));
                None
            }
        }
    }

    fn metrics(&mut self, element: &Element) -> Option<MetricsListen> {
        let attr = self.required(element, "listen")?;
        match super::parse_listen_address(&attr.value) {
            Ok(address) => Some(MetricsListen {
                address,
                line: self.line(element.at),
            }),
            Err(message) => {
                self.error(attr.value_at(), format!("{message} in <metrics listen>"));
                None
            }
        }
    }

    /// What `<twoWay start="true"/>` needs and refuses (see [`crate::sync::two_way`]): the
    /// versions a peer replaces are kept, so `<softDelete>` must be on; the real-time
    /// `<filter>` cannot be applied to what is pulled from the peer; and options that
    /// would delete blindly, skip the newest-wins comparison or end echo suppression are
    /// refused in `commonParams`.
    fn check_two_way(
        &mut self,
        element: &Element,
        rsync: &RsyncOptions,
        filter: &Filter,
        soft_delete_given: bool,
        watch_backend: Option<WatchBackend>,
    ) {
        if rsync.soft_delete.is_none() {
            let hint = if soft_delete_given {
                "it is off"
            } else {
                "add <softDelete start=\"true\"/> to <sersync>"
            };
            self.error(
                element.at,
                format!(
                    "<twoWay start=\"true\"> needs <softDelete start=\"true\"> ({hint}): in \
                     two-way mode every version the peer replaces or deletes, the loser of a \
                     conflict among them, is kept in its directory"
                ),
            );
        }
        if matches!(watch_backend, Some(WatchBackend::Fanotify)) {
            self.error(
                element.at,
                "<twoWay start=\"true\"> cannot be used with <watch backend=\"fanotify\">: \
                 two-way mode tells the peer's files by inotify's pairing of renames (it \
                 watches with inotify; \"auto\" is accepted and means inotify here)"
                    .to_owned(),
            );
        }
        if filter.enabled {
            self.error(
                element.at,
                "<twoWay start=\"true\"> cannot be used with <filter start=\"true\">: what \
                 is pulled from the peer cannot be filtered by sersyncd's regexes (use \
                 <crontabfilter> globs, or one-way mode)"
                    .to_owned(),
            );
        }
        for word in &rsync.common_params {
            if let Some(why) = crate::sync::two_way::refused_option(word) {
                self.error(
                    element.at,
                    format!(
                        "commonParams option \"{word}\" cannot be used with <twoWay \
                         start=\"true\">: {why}"
                    ),
                );
            }
        }
    }

    fn soft_delete(&mut self, element: &Element) -> Option<SoftDelete> {
        let defaults = SoftDelete::default();
        let keep_days = self
            .optional_count(element, "keepDays", 1, "days", defaults.keep_days)
            .unwrap_or(defaults.keep_days);
        let dir = match Self::given(element, "dir") {
            None => defaults.dir,
            Some(attr) => {
                let dir = attr.value.trim();
                let plain = !dir.contains('/')
                    && dir != "."
                    && dir != ".."
                    && dir
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"*?[\\".contains(&b));
                if !plain {
                    self.error(
                        attr.value_at(),
                        format!(
                            "invalid dir \"{dir}\" in <softDelete>: expected one plain name \
                             (no \"/\", no wildcard), the directory on each remote that keeps \
                             what was deleted"
                        ),
                    );
                    return None;
                }
                dir.to_owned()
            }
        };
        Some(SoftDelete { dir, keep_days })
    }

    fn delete_guard(&mut self, element: &Element) -> DeleteGuard {
        let defaults = DeleteGuard::default();
        let mut share = self
            .optional_count(element, "share", 0, "percent", defaults.share)
            .unwrap_or(defaults.share);
        if share > 100 {
            if let Some(attr) = Self::given(element, "share") {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid share \"{}\" in <deleteGuard>: expected a percentage, 0 to 100 \
                         (0: no share limit)",
                        attr.value
                    ),
                );
            }
            share = defaults.share;
        }
        let minimum = self
            .optional_count(element, "minimum", 1, "deletions", defaults.minimum)
            .unwrap_or(defaults.minimum);
        let maximum = Self::given(element, "maximum")
            .and_then(|attr| self.count(element, attr, 1, "deletions"));
        let sentinel = Self::given(element, "sentinel").and_then(|attr| {
            let name = attr.value.trim();
            if name.starts_with('/') || name.split('/').any(|part| part == "..") {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid sentinel \"{name}\" in <deleteGuard>: expected a path relative \
                         to each root, without \"..\""
                    ),
                );
                None
            } else {
                Some(name.to_owned())
            }
        });
        DeleteGuard {
            share,
            minimum,
            maximum,
            sentinel,
        }
    }

    // ---- generic helpers -------------------------------------------------------------

    /// Warns about attributes and child elements that `spec` does not list, recursively.
    fn check_names(&mut self, element: &Element, spec: &Spec) {
        for (index, attr) in element.attrs.iter().enumerate() {
            let known = spec
                .attrs
                .iter()
                .any(|name| name.eq_ignore_ascii_case(&attr.name));
            if !known {
                let hint = did_you_mean(&attr.name, spec.attrs.iter().copied())
                    .map(|name| format!(" (did you mean \"{name}\"?)"))
                    .unwrap_or_default();
                self.warn(
                    attr.name_at,
                    format!(
                        "unknown attribute \"{}\" on <{}>, ignored{hint}",
                        attr.name, element.name
                    ),
                );
            } else if let Some(first) = element.attrs[..index]
                .iter()
                .find(|earlier| earlier.name.eq_ignore_ascii_case(&attr.name))
            {
                self.warn(
                    attr.name_at,
                    format!(
                        "attribute \"{}\" is given twice on <{}>; the first one (\"{}\") is used",
                        attr.name, element.name, first.name
                    ),
                );
            }
        }
        for child in &element.children {
            let Some(child_spec) = spec.children.iter().find(|s| child.is(s.name)) else {
                let hint = did_you_mean(&child.name, spec.children.iter().map(|s| s.name))
                    .map(|name| format!(" (did you mean <{name}>?)"))
                    .unwrap_or_default();
                self.warn(
                    child.at,
                    format!(
                        "unknown element <{}> in <{}>, ignored{hint}",
                        child.name, element.name
                    ),
                );
                continue;
            };
            if spec.name == "head" && child.is("plugin") {
                // A plugin section's content depends on its name; an unnamed or unknown
                // section is reported (once) by `plugins` and its content is not checked.
                let kind = child
                    .attr("name")
                    .and_then(|name| PluginKind::from_name(&name.value));
                if let Some(kind) = kind {
                    self.check_names(child, plugin_section_spec(kind));
                }
            } else {
                self.check_names(child, child_spec);
            }
        }
    }

    /// The first child `<name>` of `parent`; later ones draw a warning.
    fn single<'e>(&mut self, parent: &'e Element, name: &str) -> Option<&'e Element> {
        let mut matching = parent.children.iter().filter(|child| child.is(name));
        let first = matching.next()?;
        let first_line = self.line(first.at);
        for duplicate in matching {
            self.warn(
                duplicate.at,
                format!(
                    "duplicate <{}> in <{}> ignored; the first one (line {first_line}) is used",
                    duplicate.name, parent.name
                ),
            );
        }
        Some(first)
    }

    /// Every child `<name>` of `parent`, in file order.
    fn all<'e>(parent: &'e Element, name: &'e str) -> impl Iterator<Item = &'e Element> + 'e {
        parent.children.iter().filter(move |child| child.is(name))
    }

    /// `attr` of `element` as a boolean; `default` when the element or attribute is absent.
    fn flag(&mut self, element: Option<&Element>, attr: &str, default: bool) -> bool {
        let Some(element) = element else {
            return default;
        };
        let Some(value) = element.attr(attr) else {
            return default;
        };
        let text = value.value.trim();
        if text.eq_ignore_ascii_case("true") {
            true
        } else if text.eq_ignore_ascii_case("false") {
            false
        } else {
            self.error(
                value.value_at(),
                format!(
                    "invalid boolean \"{}\" for attribute \"{}\" of <{}>: expected \"true\" or \"false\"",
                    value.value, value.name, element.name
                ),
            );
            default
        }
    }

    /// `attr` of `element`, which must be present and not blank.
    fn required<'e>(&mut self, element: &'e Element, attr: &str) -> Option<&'e Attr> {
        match element.attr(attr) {
            None => {
                self.error(
                    element.at,
                    format!(
                        "<{}> is missing the required attribute \"{attr}\"",
                        element.name
                    ),
                );
                None
            }
            Some(value) if value.value.trim().is_empty() => {
                self.error(
                    value.value_at(),
                    format!(
                        "attribute \"{}\" of <{}> is empty",
                        value.name, element.name
                    ),
                );
                None
            }
            Some(value) => Some(value),
        }
    }

    /// `attr` of `element` when present and not blank.
    fn given<'e>(element: &'e Element, attr: &str) -> Option<&'e Attr> {
        element
            .attr(attr)
            .filter(|value| !value.value.trim().is_empty())
    }

    /// A TCP port, 1 to 65535.
    fn port(&mut self, element: &Element, attr: &Attr) -> Option<u16> {
        match attr.value.trim().parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid port \"{}\" for attribute \"{}\" of <{}>: expected a number from 1 to 65535",
                        attr.value, attr.name, element.name
                    ),
                );
                None
            }
        }
    }

    /// A count of `unit` of at least `min`.
    fn count(&mut self, element: &Element, attr: &Attr, min: u32, unit: &str) -> Option<u32> {
        match attr.value.trim().parse::<u32>() {
            Ok(count) if count >= min => Some(count),
            _ => {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid number \"{}\" for attribute \"{}\" of <{}>: expected whole {unit} ({min} or more)",
                        attr.value, attr.name, element.name
                    ),
                );
                None
            }
        }
    }

    /// Splits `attr` into argv words (see [`super::words`]), pointing at a bad quote.
    fn words(&mut self, element: &Element, attr: &Attr) -> Vec<String> {
        self.split(element, attr).unwrap_or_default()
    }

    /// [`Checker::words`], `None` when the value cannot be split (the error is reported).
    fn split(&mut self, element: &Element, attr: &Attr) -> Option<Vec<String>> {
        match split_words_located(&attr.value) {
            Ok(words) => Some(words),
            Err(err) => {
                self.error(
                    attr.char_at(err.at),
                    format!(
                        "{} in attribute \"{}\" of <{}>",
                        err.message, attr.name, element.name
                    ),
                );
                None
            }
        }
    }

    /// Compiles a regex attribute; `whole` anchors it to match the whole path.
    fn regex(&mut self, element: &Element, attr: &Attr, whole: bool) -> Option<Regex> {
        match compile_path_regex(&attr.value, self.source.is_latin1(), whole) {
            Ok(regex) => Some(regex),
            Err(problem) => {
                let at = problem
                    .char_offset
                    .map_or(attr.value_at(), |offset| attr.char_at(offset));
                self.error(
                    at,
                    format!(
                        "bad regular expression \"{}\" in attribute \"{}\" of <{}>: {}",
                        attr.value, attr.name, element.name, problem.message
                    ),
                );
                None
            }
        }
    }

    /// The `watch` attribute of a `<localpath>`: required, absolute, without trailing `/`.
    fn watch_path(&mut self, element: &Element) -> Option<(PathBuf, String)> {
        let attr = self.required(element, "watch")?;
        if !attr.value.starts_with('/') {
            self.error(
                attr.value_at(),
                format!("watch path \"{}\" is not absolute", attr.value),
            );
            return None;
        }
        let trimmed = attr.value.trim_end_matches('/');
        let text = if trimmed.is_empty() { "/" } else { trimmed };
        Some((self.source.path(text), text.to_owned()))
    }

    // ---- sections ----------------------------------------------------------------------

    fn host(&mut self, element: Option<&Element>) -> HostSection {
        let mut host = HostSection {
            ip: "localhost".to_owned(),
            port: 8008,
        };
        if let Some(element) = element {
            if let Some(ip) = element.attr("hostip") {
                host.ip = ip.value.trim().to_owned();
            }
            if let Some(port) = Self::given(element, "port") {
                host.port = self.port(element, port).unwrap_or(host.port);
            }
        }
        host
    }

    fn filter(&mut self, element: Option<&Element>) -> Filter {
        let Some(element) = element else {
            return Filter::default();
        };
        let enabled = self.flag(Some(element), "start", false);
        let excludes = self.regex_list(element, "exclude");
        for exclude in &excludes {
            let expression = exclude.regex.expression.trim_start_matches('^');
            if expression.starts_with('/') {
                // Matched against `sub/dir/name`: sersync 2.5 put a leading slash on paths
                // below the root (but not on entries of the root), we never do.
                self.warn(
                    exclude.at,
                    format!(
                        "exclude expression \"{}\" starts with \"/\", but paths are matched without a leading slash (sub/dir/name): drop the \"/\"",
                        exclude.regex.expression
                    ),
                );
            }
        }
        Filter {
            enabled,
            excludes: excludes.into_iter().map(|found| found.regex).collect(),
        }
    }

    /// Every `<child expression>` of `parent` compiled as a whole-path regex.
    fn regex_list(&mut self, parent: &Element, child: &str) -> Vec<FoundRegex> {
        let mut found = Vec::new();
        for element in Self::all(parent, child) {
            let Some(attr) = Self::given(element, "expression") else {
                self.warn(
                    element.at,
                    format!("<{}> without an expression ignored", element.name),
                );
                continue;
            };
            if let Some(regex) = self.regex(element, attr, true) {
                found.push(FoundRegex {
                    at: attr.value_at(),
                    regex: ExcludeRegex {
                        expression: attr.value.clone(),
                        regex,
                        line: self.line(element.at),
                    },
                });
            }
        }
        found
    }

    fn events(&mut self, element: Option<&Element>) -> EventToggles {
        let defaults = EventToggles::default();
        let Some(inotify) = element else {
            return defaults;
        };
        let mut toggle = |name: &str, default: bool| {
            let child = self.single(inotify, name);
            self.flag(child, "start", default)
        };
        EventToggles {
            delete: toggle("delete", defaults.delete),
            create_folder: toggle("createFolder", defaults.create_folder),
            create_file: toggle("createFile", defaults.create_file),
            close_write: toggle("closeWrite", defaults.close_write),
            move_from: toggle("moveFrom", defaults.move_from),
            move_to: toggle("moveTo", defaults.move_to),
            attrib: toggle("attrib", defaults.attrib),
            modify: toggle("modify", defaults.modify),
        }
    }

    /// Every `<sersync><localpath>` (sersync 2.5 used only the first).
    fn roots(&mut self, head: &Element, sersync: Option<&Element>) -> Vec<WatchRoot> {
        let Some(sersync) = sersync else {
            self.error(
                head.at,
                "no <sersync> section: at least one <localpath> is required".to_owned(),
            );
            return Vec::new();
        };
        let mut roots: Vec<WatchRoot> = Vec::new();
        // The watch paths as written (trimmed), beside `roots`, for messages.
        let mut texts: Vec<String> = Vec::new();
        let mut any = false;
        for element in Self::all(sersync, "localpath") {
            any = true;
            let watch = self.watch_path(element);
            let mut remotes = Vec::new();
            let mut remote_elements = 0;
            for remote in Self::all(element, "remote") {
                remote_elements += 1;
                let ip = self.required(remote, "ip");
                let name = self.required(remote, "name");
                let ip = ip.filter(|ip| self.argv_safe(remote, ip, "ip"));
                let name = name.filter(|name| self.argv_safe(remote, name, "name"));
                if let (Some(ip), Some(name)) = (ip, name) {
                    remotes.push(Remote {
                        ip: ip.value.trim().to_owned(),
                        name: name.value.trim().to_owned(),
                    });
                }
            }
            if remote_elements == 0 {
                self.error(
                    element.at,
                    "<localpath> has no <remote>: at least one is required".to_owned(),
                );
            }
            let Some((path, text)) = watch else {
                continue;
            };
            let line = self.line(element.at);
            let value_at = element.attr("watch").map_or(element.at, Attr::value_at);
            if let Some(first) = roots.iter().find(|root| root.path == path) {
                self.error(
                    value_at,
                    format!(
                        "watch path \"{text}\" is already watched by the <localpath> on line {}",
                        first.line
                    ),
                );
                continue;
            }
            for (other, other_text) in roots.iter().zip(&texts) {
                let (outer, inner) = if path.starts_with(&other.path) {
                    (other_text, &text)
                } else if other.path.starts_with(&path) {
                    (&text, other_text)
                } else {
                    continue;
                };
                self.warn(
                    value_at,
                    format!(
                        "watch root \"{inner}\" is inside watch root \"{outer}\" (lines {} and {line}); changes below it are synced by both",
                        other.line
                    ),
                );
            }
            self.check_watch_root(value_at, &path, &text);
            let run_as = self.run_as(element);
            roots.push(WatchRoot {
                path,
                remotes,
                line,
                run_as,
            });
            texts.push(text);
        }
        if !any {
            self.error(
                sersync.at,
                "no <localpath> in <sersync>: at least one watch root is required".to_owned(),
            );
        }
        roots
    }

    /// `<localpath user>`: a user that exists (looked up now, so that a typo is a config
    /// error and not a failing run).
    fn run_as(&mut self, element: &Element) -> RunAs {
        let Some(attr) = Self::given(element, "user") else {
            return RunAs::RootOwner;
        };
        let name = attr.value.trim();
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => RunAs::User(name.to_owned()),
            Ok(None) => {
                self.error(
                    attr.value_at(),
                    format!(
                        "user=\"{name}\": no such user (rsync runs as this user for this root)"
                    ),
                );
                RunAs::RootOwner
            }
            Err(err) => {
                self.error(
                    attr.value_at(),
                    format!("user=\"{name}\": cannot look it up: {err}"),
                );
                RunAs::RootOwner
            }
        }
    }

    /// Whether a `<remote>` value can go into rsync's (and ssh's) argv as it is: a value
    /// starting with `-` would be read as an option, and a control character (a newline)
    /// has no place in a host or module name.
    fn argv_safe(&mut self, element: &Element, attr: &Attr, what: &str) -> bool {
        let value = attr.value.trim();
        let problem = if value.starts_with('-') {
            "starts with \"-\", which rsync and ssh would take as an option"
        } else if value.chars().any(char::is_control) {
            "holds a control character (a newline or tab)"
        } else if what == "ip"
            && value.contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
        {
            "is not a host name or address (it holds a space, \"/\" or \"@\")"
        } else {
            return true;
        };
        self.error(
            attr.value_at(),
            format!(
                "<{}> {what}=\"{}\" {problem}",
                element.name,
                value.escape_debug()
            ),
        );
        false
    }

    /// Warns when a watch root is missing or not a directory: the daemon waits for it, so
    /// this is not fatal, but it is most often a typo.
    fn check_watch_root(&mut self, at: usize, path: &Path, text: &str) {
        // Bounded: a root on a hung filesystem must not hang start-up or a reload.
        let probed = path.to_path_buf();
        match crate::probe::within(crate::probe::ANSWER_WITHIN, move || {
            std::fs::metadata(probed)
        }) {
            None => self.warn(
                at,
                format!(
                    "watch root \"{text}\" did not answer within {} s (a hung filesystem?); \
                     sersyncd watches it once it does",
                    crate::probe::ANSWER_WITHIN.as_secs()
                ),
            ),
            Some(Ok(metadata)) if metadata.is_dir() => {}
            Some(Ok(_)) => self.warn(
                at,
                format!("watch root \"{text}\" is not a directory (yet); sersyncd retries it"),
            ),
            Some(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => self.warn(
                at,
                format!("watch root \"{text}\" does not exist (yet); sersyncd retries it"),
            ),
            Some(Err(err)) => self.warn(at, format!("cannot inspect watch root \"{text}\": {err}")),
        }
    }

    fn rsync(&mut self, rsync: &Element, two_way: bool) -> RsyncOptions {
        let mut options = RsyncOptions::default();

        if let Some(element) = self.single(rsync, "commonParams") {
            // A missing attribute keeps the shipped `-artuz`; an empty one means no params.
            if let Some(params) = element.attr("params") {
                options.common_params = self.words(element, params);
                // Two-way mode passes `--update` itself, to the runs that must keep a newer
                // file (see `sync::two_way`): the user's goes without a word.
                if drop_update(&mut options.common_params) && !two_way {
                    self.warn(
                        params.value_at(),
                        "-u (--update) in commonParams is not used: it makes rsync keep any \
                         file that is newer on the remote, so a rollback to older files (a \
                         deploy restoring the previous release) would never reach the \
                         replica; a one-way mirror follows the source"
                            .to_owned(),
                    );
                }
            }
        }

        if let Some(element) = self.single(rsync, "auth") {
            if self.flag(Some(element), "start", false) {
                let user = self.required(element, "users");
                let password_file = self
                    .required(element, "passwordfile")
                    .and_then(|attr| self.password_file(attr));
                if let (Some(user), Some(password_file)) = (user, password_file) {
                    options.auth = Some(Auth {
                        user: user.value.trim().to_owned(),
                        password_file,
                    });
                }
            }
        }

        if let Some(element) = self.single(rsync, "userDefinedPort") {
            let enabled = self.flag(Some(element), "start", false);
            let attr = if enabled {
                self.required(element, "port")
            } else {
                Self::given(element, "port")
            };
            let port = attr.and_then(|attr| self.port(element, attr));
            if enabled {
                options.port = port;
            }
        }

        if let Some(element) = self.single(rsync, "timeout") {
            let enabled = self.flag(Some(element), "start", false);
            let attr = if enabled {
                self.required(element, "time")
            } else {
                Self::given(element, "time")
            };
            let seconds = attr.and_then(|attr| self.count(element, attr, 0, "seconds"));
            if enabled {
                options.timeout = seconds;
            }
        }

        let ssh = self.single(rsync, "ssh");
        options.ssh = self.flag(ssh, "start", false);
        // Ours: an ssh connection master per remote (`sync::master`); on unless
        // `master="false"`. Read (and checked) even without ssh, so a typo is an error
        // before the day ssh is turned on.
        options.ssh_master = self.flag(ssh, "master", true);

        // Ours: a pre-connected rsync per lane for small batches (`sync::warm`); on unless
        // `start="false"`.
        let warm = self.single(rsync, "warm");
        if self.flag(warm, "start", true) {
            let idle = match warm {
                Some(element) => self.optional_count(
                    element,
                    "idle",
                    1,
                    "seconds",
                    crate::config::Warm::DEFAULT_IDLE_SECS,
                ),
                None => Some(crate::config::Warm::DEFAULT_IDLE_SECS),
            };
            options.warm = idle.map(|idle_secs| crate::config::Warm { idle_secs });
        } else {
            options.warm = None;
        }
        options
    }

    /// Checks the rsync client password file the way rsync will: it must exist, be a
    /// regular file, and not be readable by group or others (rsync refuses such a file, and
    /// every sync would then fail at run time instead of at start-up).
    fn password_file(&mut self, attr: &Attr) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;

        let text = attr.value.trim();
        let path = self.source.path(text);
        let at = attr.value_at();
        match std::fs::metadata(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.error(at, format!("password file \"{text}\" does not exist"));
                None
            }
            Err(err) => {
                self.error(at, format!("cannot read password file \"{text}\": {err}"));
                None
            }
            Ok(metadata) if !metadata.is_file() => {
                self.error(
                    at,
                    format!("password file \"{text}\" is not a regular file"),
                );
                None
            }
            Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => {
                let mode = metadata.permissions().mode() & 0o7777;
                self.error(
                    at,
                    format!(
                        "password file \"{text}\" is accessible by group/others (mode {mode:04o}); it must be private to its owner: chmod 600 {text}"
                    ),
                );
                None
            }
            Ok(_) => Some(path),
        }
    }

    fn fail_log(&mut self, element: &Element) -> FailLog {
        let mut fail_log = FailLog::default();
        if let Some(path) = element.attr("path") {
            if path.value.trim().is_empty() {
                self.warn(
                    path.value_at(),
                    format!(
                        "attribute \"path\" of <failLog> is empty; using \"{}\"",
                        fail_log.path.display()
                    ),
                );
            } else {
                fail_log.path = self.source.path(path.value.trim());
            }
        }
        // Missing or empty keeps 60 minutes, the shipped value. (The original's code default
        // for an empty attribute was 7200 s = 120 min, but every sample config says 60 and
        // nobody relies on the empty case.)
        if let Some(time) = Self::given(element, "timeToExecute") {
            if let Some(minutes) = self.count(element, time, 1, "minutes") {
                fail_log.interval_minutes = minutes;
            }
        }
        fail_log
    }

    fn crontab(&mut self, element: &Element) -> Crontab {
        let mut crontab = Crontab {
            enabled: self.flag(Some(element), "start", false),
            ..Crontab::default()
        };
        if let Some(schedule) = element.attr("schedule") {
            match schedule.value.trim().parse::<i64>() {
                Ok(minutes) if minutes > 0 => {
                    crontab.schedule_minutes = u32::try_from(minutes).unwrap_or(u32::MAX);
                }
                // sersync 2.5 silently used 600 here; we still do, but say so.
                _ => self.warn(
                    schedule.value_at(),
                    format!(
                        "invalid crontab schedule \"{}\" for attribute \"schedule\" of <{}>: expected a positive number of minutes; using 600 as sersync 2.5 does",
                        schedule.value, element.name
                    ),
                ),
            }
        }
        if let Some(crontab_filter) = self.single(element, "crontabfilter") {
            crontab.filter_enabled = self.flag(Some(crontab_filter), "start", false);
            for exclude in Self::all(crontab_filter, "exclude") {
                match Self::given(exclude, "expression") {
                    Some(expression) => crontab.excludes.push(expression.value.trim().to_owned()),
                    None => self.warn(
                        exclude.at,
                        format!("<{}> without an expression ignored", exclude.name),
                    ),
                }
            }
        }
        // sersync 2.5 turned the crontab off when <filter> was on without <crontabfilter>,
        // because its full sync ignored the regexes. Ours honours <filter> (excluded paths
        // are neither sent nor deleted), so the crontab stays on.
        crontab
    }

    /// The top-level `<plugin name>` sections and `<sersync><plugin start name>`.
    fn plugins(&mut self, head: &Element, sersync: Option<&Element>) -> Plugins {
        let mut plugins = Plugins::default();
        let mut seen: Vec<(PluginKind, usize)> = Vec::new();
        for section in Self::all(head, "plugin") {
            let Some(name) = section.attr("name") else {
                self.warn(
                    section.at,
                    "<plugin> without a name attribute ignored".to_owned(),
                );
                continue;
            };
            let Some(kind) = PluginKind::from_name(&name.value) else {
                self.warn(
                    name.value_at(),
                    format!(
                        "unknown plugin \"{}\" in <plugin name>, section ignored (expected {PLUGIN_NAMES})",
                        name.value
                    ),
                );
                continue;
            };
            if let Some(&(_, first_line)) = seen.iter().find(|(known, _)| *known == kind) {
                self.warn(
                    section.at,
                    format!(
                        "duplicate <plugin name=\"{}\"> ignored; the first one (line {first_line}) is used",
                        kind.name()
                    ),
                );
                continue;
            }
            seen.push((kind, self.line(section.at)));
            match kind {
                PluginKind::Command => plugins.command = Some(self.command_plugin(section)),
                PluginKind::Socket => plugins.socket = self.socket_plugin(section),
                PluginKind::RefreshCdn => plugins.refresh_cdn = self.refresh_cdn_plugin(section),
                PluginKind::Http => plugins.http = self.http_plugin(section),
            }
        }

        let Some(after_sync) = sersync.and_then(|sersync| self.single(sersync, "plugin")) else {
            return plugins;
        };
        if !self.flag(Some(after_sync), "start", false) {
            return plugins;
        }
        let Some(name) = self.required(after_sync, "name") else {
            return plugins;
        };
        match PluginKind::from_name(&name.value) {
            None => self.error(
                name.value_at(),
                format!(
                    "unknown plugin \"{}\" in <sersync><plugin name>: expected {PLUGIN_NAMES}",
                    name.value
                ),
            ),
            Some(kind) => {
                if !seen.iter().any(|(known, _)| *known == kind) {
                    self.error(
                        after_sync.at,
                        format!(
                            "plugin \"{0}\" is enabled in <sersync> but there is no <plugin name=\"{0}\"> section",
                            kind.name()
                        ),
                    );
                }
                plugins.after_sync = Some(kind);
            }
        }
        plugins
    }

    fn command_plugin(&mut self, section: &Element) -> CommandPlugin {
        // Without <param>, the shipped `/bin/sh` prefix, empty suffix, errors ignored.
        let mut plugin = CommandPlugin {
            prefix: "/bin/sh".to_owned(),
            suffix: String::new(),
            prefix_words: vec!["/bin/sh".to_owned()],
            suffix_words: Vec::new(),
            ignore_error: true,
            filter_enabled: false,
            includes: Vec::new(),
            timeout_secs: 60,
        };
        if let Some(param) = self.single(section, "param") {
            if let Some(prefix) = param.attr("prefix") {
                plugin.prefix_words = match self.split(param, prefix) {
                    Some(words) if words.is_empty() => {
                        // Start-up could not build the plugin: say so here, with the line.
                        self.error(
                            prefix.value_at(),
                            "attribute \"prefix\" of <param> has no word: it must name the program to run".to_owned(),
                        );
                        words
                    }
                    Some(words) if words[0].is_empty() => {
                        // `prefix="''"`: every event would fail to run an unnamed program.
                        self.error(
                            prefix.value_at(),
                            "attribute \"prefix\" of <param> starts with an empty word: it must name the program to run".to_owned(),
                        );
                        words
                    }
                    words => words.unwrap_or_default(),
                };
                plugin.prefix = prefix.value.clone();
            }
            if let Some(suffix) = param.attr("suffix") {
                plugin.suffix_words = self.words(param, suffix);
                plugin.suffix = suffix.value.clone();
            }
            plugin.ignore_error = self.flag(Some(param), "ignoreError", true);
            if let Some(timeout) = Self::given(param, "timeout") {
                plugin.timeout_secs = self
                    .count(param, timeout, 1, "seconds")
                    .unwrap_or(plugin.timeout_secs);
            }
        }
        if let Some(filter) = self.single(section, "filter") {
            plugin.filter_enabled = self.flag(Some(filter), "start", false);
            plugin.includes = self
                .regex_list(filter, "include")
                .into_iter()
                .map(|found| found.regex)
                .collect();
        }
        plugin
    }

    /// The `<localpath watch>` of a plugin section, required, with its watch path.
    fn plugin_localpath<'e>(
        &mut self,
        section: &'e Element,
        kind: PluginKind,
    ) -> Option<(&'e Element, Option<PathBuf>)> {
        let Some(localpath) = self.single(section, "localpath") else {
            self.error(
                section.at,
                format!("<plugin name=\"{}\"> has no <localpath>", kind.name()),
            );
            return None;
        };
        let watch = self.watch_path(localpath).map(|(path, _)| path);
        Some((localpath, watch))
    }

    /// A child a plugin's `<localpath>` must have.
    fn plugin_child<'e>(
        &mut self,
        localpath: &'e Element,
        name: &str,
        kind: PluginKind,
    ) -> Option<&'e Element> {
        let child = self.single(localpath, name);
        if child.is_none() {
            self.error(
                localpath.at,
                format!(
                    "<localpath> of <plugin name=\"{}\"> has no <{name}>",
                    kind.name()
                ),
            );
        }
        child
    }

    fn socket_plugin(&mut self, section: &Element) -> Option<SocketPlugin> {
        let kind = PluginKind::Socket;
        let (localpath, watch) = self.plugin_localpath(section, kind)?;
        let deshost = self.plugin_child(localpath, "deshost", kind)?;
        let host = self.required(deshost, "ip");
        let port = self
            .required(deshost, "port")
            .and_then(|port| self.port(deshost, port));
        let framing = self.socket_framing(deshost);
        Some(SocketPlugin {
            watch: watch?,
            host: host?.value.trim().to_owned(),
            port: port?,
            framing: framing?,
        })
    }

    fn refresh_cdn_plugin(&mut self, section: &Element) -> Option<RefreshCdnPlugin> {
        let kind = PluginKind::RefreshCdn;
        let (localpath, watch) = self.plugin_localpath(section, kind)?;
        // With a generic <purge> request, the ChinaCache <cdninfo> is not needed.
        let purge_element = self.single(localpath, "purge");
        let cdninfo = match purge_element {
            Some(_) => self.single(localpath, "cdninfo"),
            None => self.plugin_child(localpath, "cdninfo", kind),
        };
        let sendurl = self.single(localpath, "sendurl");
        let regexurl = self.single(localpath, "regexurl");

        let text = |element: Option<&Element>, attr: &str| {
            element
                .and_then(|element| element.attr(attr))
                .map(|attr| attr.value.clone())
                .unwrap_or_default()
        };
        let (domain_name, port) = match cdninfo {
            Some(cdninfo) => {
                let domain = self.required(cdninfo, "domainname");
                let port = self
                    .required(cdninfo, "port")
                    .and_then(|port| self.port(cdninfo, port));
                (domain.map(|domain| domain.value.trim().to_owned()), port)
            }
            None if purge_element.is_some() => (Some(String::new()), Some(80)),
            None => (None, None),
        };
        let purge = match purge_element {
            Some(element) => Some(self.purge(element, sendurl)?),
            None => None,
        };
        let regex_enabled = self.flag(regexurl, "regex", false);
        let regex_match = text(regexurl, "match");
        let mut match_regex = None;
        if regex_enabled {
            if let Some(regexurl) = regexurl {
                if let Some(attr) = self.required(regexurl, "match") {
                    // `regex_search` in the original: not anchored.
                    match_regex = Some(self.regex(regexurl, attr, false)?);
                }
            }
        }
        Some(RefreshCdnPlugin {
            watch: watch?,
            domain_name: domain_name?,
            port: port?,
            user: text(cdninfo, "username"),
            password: text(cdninfo, "passwd"),
            send_url_base: text(sendurl, "base"),
            regex_enabled,
            regex_match,
            match_regex,
            purge,
        })
    }

    fn http_plugin(&mut self, section: &Element) -> Option<HttpPlugin> {
        let kind = PluginKind::Http;
        let (localpath, watch) = self.plugin_localpath(section, kind)?;
        let deshost = self.plugin_child(localpath, "deshost", kind)?;
        let url = self
            .required(deshost, "url")
            .and_then(|url| self.http_url(deshost, url));
        let port = match Self::given(deshost, "port") {
            Some(port) => Some(self.port(deshost, port)?),
            None => None,
        };
        // `<deshost port>` applies when the URL names no port.
        let url = url.map(|url| match port {
            Some(port) => url.with_default_port(port),
            None => url,
        });
        let timeout_secs = self.optional_count(deshost, "timeout", 1, "seconds", 5);
        let retries = self.optional_count(deshost, "retries", 0, "numbers", 3);
        let headers = self.headers(deshost);
        Some(HttpPlugin {
            watch: watch?,
            url: url?,
            timeout_secs: timeout_secs?,
            retries: retries?,
            headers: headers?,
        })
    }

    // ---- our plugin extensions ----------------------------------------------------------

    /// `<deshost framing>` of the socket plugin: `raw` (default), `newline` or `nul`.
    fn socket_framing(&mut self, deshost: &Element) -> Option<SocketFraming> {
        let Some(attr) = Self::given(deshost, "framing") else {
            return Some(SocketFraming::Raw);
        };
        match attr.value.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(SocketFraming::Raw),
            "newline" => Some(SocketFraming::Newline),
            "nul" => Some(SocketFraming::Nul),
            _ => {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid framing \"{}\" for attribute \"framing\" of <deshost>: expected \"raw\", \"newline\" or \"nul\"",
                        attr.value
                    ),
                );
                None
            }
        }
    }

    /// A count attribute that may be absent (then `default`).
    fn optional_count(
        &mut self,
        element: &Element,
        attr: &str,
        min: u32,
        unit: &str,
        default: u32,
    ) -> Option<u32> {
        match Self::given(element, attr) {
            Some(value) => self.count(element, value, min, unit),
            None => Some(default),
        }
    }

    /// An `http://` URL attribute, parsed.
    fn http_url(&mut self, element: &Element, attr: &Attr) -> Option<HttpUrl> {
        self.parse_url(element, attr, attr.value.trim())
    }

    /// An `http://` URL template attribute: placeholders are allowed in the path and query
    /// only, and the URL must parse whatever they become. Returns the trimmed text.
    fn url_template(&mut self, element: &Element, attr: &Attr) -> Option<String> {
        let text = attr.value.trim();
        let authority_start = text.find("://").map_or(0, |at| at + 3);
        let rest = &text[authority_start..];
        // `http://host:port{path}` is fine ({path} starts with `/`); any other
        // placeholder before the path would change where the request goes.
        let host_end = authority_start + rest.find(['/', '?', '{']).unwrap_or(rest.len());
        let after_host = &text[host_end..];
        if text[..host_end].contains('}')
            || (after_host.starts_with('{') && !after_host.starts_with("{path}"))
        {
            self.error(
                attr.value_at(),
                format!(
                    "placeholders in attribute \"{}\" of <{}> are only allowed in the URL's path and query, not in its host (only {{path}} may follow the host directly)",
                    attr.name, element.name
                ),
            );
            return None;
        }
        self.parse_url(element, attr, &template_sample(text))
            .map(|_| text.to_owned())
    }

    /// Parses `text` (the value of `attr`, or a sample of it) as an `http://` URL.
    fn parse_url(&mut self, element: &Element, attr: &Attr, text: &str) -> Option<HttpUrl> {
        match HttpUrl::parse(text) {
            Ok(url) => Some(url),
            Err(message) => {
                self.error(
                    attr.value_at(),
                    format!(
                        "invalid URL \"{}\" in attribute \"{}\" of <{}>: {message}",
                        attr.value, attr.name, element.name
                    ),
                );
                None
            }
        }
    }

    /// The `<header name value>` children of `parent`.
    fn headers(&mut self, parent: &Element) -> Option<Vec<HttpHeader>> {
        let mut headers = Vec::new();
        let mut ok = true;
        for header in Self::all(parent, "header") {
            let name = self.required(header, "name");
            let value = header.attr("value");
            let Some(name) = name else {
                ok = false;
                continue;
            };
            let text = name.value.trim();
            let token = text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                self.error(
                    name.value_at(),
                    format!("invalid HTTP header name \"{}\"", name.value),
                );
                ok = false;
                continue;
            }
            if ["content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|reserved| text.eq_ignore_ascii_case(reserved))
            {
                self.error(
                    name.value_at(),
                    format!("header \"{text}\" is set by sersyncd and cannot be configured"),
                );
                ok = false;
                continue;
            }
            let value = value.map(|v| v.value.clone()).unwrap_or_default();
            if value.contains(['\r', '\n', '\0']) {
                let at = header.attr("value").map_or(header.at, Attr::value_at);
                self.error(
                    at,
                    format!("the value of header \"{text}\" contains a line break"),
                );
                ok = false;
                continue;
            }
            headers.push(HttpHeader {
                name: text.to_owned(),
                value: value.trim().to_owned(),
            });
        }
        ok.then_some(headers)
    }

    /// `<purge url method body timeout retries>` of the refreshCDN plugin.
    fn purge(&mut self, element: &Element, sendurl: Option<&Element>) -> Option<PurgeRequest> {
        let url = self
            .required(element, "url")
            .and_then(|url| self.url_template(element, url));
        let method = match Self::given(element, "method") {
            None => Some("PURGE".to_owned()),
            Some(attr) => {
                let method = attr.value.trim();
                if method
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
                {
                    Some(method.to_ascii_uppercase())
                } else {
                    self.error(
                        attr.value_at(),
                        format!(
                            "invalid HTTP method \"{}\" in attribute \"method\" of <purge>",
                            attr.value
                        ),
                    );
                    None
                }
            }
        };
        let body = element.attr("body").map(|body| body.value.clone());
        let timeout_secs = self.optional_count(element, "timeout", 1, "seconds", 5);
        let retries = self.optional_count(element, "retries", 0, "numbers", 2);
        let headers = self.headers(element);
        let uses_url = std::iter::once(url.as_deref().unwrap_or_default())
            .chain(body.as_deref())
            .chain(headers.iter().flatten().map(|h| h.value.as_str()))
            .any(|text| text.contains("{url}") || text.contains("{url_q}"));
        let has_base = sendurl
            .and_then(|sendurl| sendurl.attr("base"))
            .is_some_and(|base| !base.value.trim().is_empty());
        if uses_url && !has_base {
            self.error(
                element.at,
                "<purge> uses {url} or {url_q} but there is no <sendurl base> to build the public URL from".to_owned(),
            );
            return None;
        }
        Some(PurgeRequest {
            url: url?,
            method: method?,
            headers: headers?,
            body,
            timeout_secs: timeout_secs?,
            retries: retries?,
        })
    }
}

/// The known name closest to a misspelt `name`, when it is close enough to be a typo
/// (at most two edits, ignoring ASCII case, and fewer edits than the name is long).
fn did_you_mean<'k>(name: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let name = name.to_ascii_lowercase();
    known
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|&(distance, _)| distance <= 2 && distance < name.chars().count())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance between two short strings, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A compiled regex with the offset of its attribute value, for follow-up warnings.
struct FoundRegex {
    at: usize,
    regex: ExcludeRegex,
}

/// Why an expression did not compile, and where in it (0-based character) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegexProblem {
    message: String,
    char_offset: Option<usize>,
}

/// Compiles a path regex the way sersync's boost::regex saw paths: byte by byte.
///
/// Paths are bytes and need not be UTF-8, so the expression is compiled with Unicode off:
/// `.` matches any byte (including a newline, as boost's default), `\w` `\d` `\s` are ASCII,
/// and a literal non-ASCII character matches its UTF-8 bytes — what boost did on a
/// `std::string`. An expression that needs Unicode (`[é]`, `\p{Han}`) is compiled with
/// Unicode on instead; its `.` then matches only valid UTF-8 characters. For an ISO-8859-1
/// config, characters U+0080..U+00FF are matched as the single byte the author's editor
/// wrote. `whole` anchors the expression (`^(?:…)$`, boost's `regex_match`).
fn compile_path_regex(expression: &str, latin1: bool, whole: bool) -> Result<Regex, RegexProblem> {
    let body = if latin1 {
        latin1_bytes_pattern(expression)
    } else {
        Cow::Borrowed(expression)
    };
    let build = |pattern: &str, unicode: bool| {
        RegexBuilder::new(pattern)
            .unicode(unicode)
            .dot_matches_new_line(true)
            .build()
    };
    // The expression alone first: errors then point into the author's text, and a
    // well-formed expression cannot break out of the anchoring group below.
    let unicode = match build(&body, false) {
        Ok(_) => false,
        Err(_) => match build(&body, true) {
            Ok(_) => true,
            Err(err) => return Err(describe_regex_error(&err, body == expression)),
        },
    };
    let pattern = if whole {
        Cow::Owned(format!("^(?:{body})$"))
    } else {
        body
    };
    build(&pattern, unicode).map_err(|err| describe_regex_error(&err, false))
}

/// `expression` with every unescaped character U+0080..U+00FF written as `\xHH`, which (with
/// Unicode off) matches that single byte, even inside a class.
fn latin1_bytes_pattern(expression: &str) -> Cow<'_, str> {
    if expression.is_ascii() {
        return Cow::Borrowed(expression);
    }
    let mut pattern = String::with_capacity(expression.len() + 8);
    let mut escaped = false;
    for c in expression.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(byte) if byte >= 0x80 && !escaped => pattern.push_str(&format!("\\x{byte:02X}")),
            _ => pattern.push(c),
        }
        escaped = c == '\\' && !escaped;
    }
    Cow::Owned(pattern)
}

/// The one-line reason of a regex error and, when `locate` and the error names a single
/// line of the expression, the character offset it points at.
///
/// The regex crate formats a syntax error as
/// `regex parse error:\n    EXPR\n    ^^^\nerror: REASON`.
fn describe_regex_error(err: &regex::Error, locate: bool) -> RegexProblem {
    let regex::Error::Syntax(text) = err else {
        return RegexProblem {
            message: err.to_string(),
            char_offset: None,
        };
    };
    let lines: Vec<&str> = text.lines().collect();
    let message = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or_else(|| {
            lines
                .last()
                .copied()
                .unwrap_or("invalid regular expression")
        })
        .to_owned();
    let char_offset = match lines.as_slice() {
        [_, _, carets, _] if locate => carets
            .find('^')
            .and_then(|column| carets[..column].chars().count().checked_sub(4)),
        _ => None,
    };
    RegexProblem {
        message,
        char_offset,
    }
}

/// Removes `-u`/`--update` from rsync options (also from a cluster such as `-artuz`, up to
/// the first letter that takes an argument); returns whether it was there.
pub fn drop_update(params: &mut Vec<String>) -> bool {
    /// Short options of rsync that take an argument (the rest of the cluster is it).
    const TAKES_ARGUMENT: &[char] = &['e', 'B', 'f', 'T', 'M', '@'];
    let mut found = false;
    params.retain_mut(|word| {
        if word == "--update" || word == "-u" {
            found = true;
            return false;
        }
        if word.starts_with('-') && !word.starts_with("--") && word.len() > 2 {
            let mut kept = String::from("-");
            let mut in_argument = false;
            for c in word[1..].chars() {
                if in_argument {
                    kept.push(c);
                    continue;
                }
                if c == 'u' {
                    found = true;
                    continue;
                }
                in_argument = TAKES_ARGUMENT.contains(&c);
                kept.push(c);
            }
            if kept.len() == 1 {
                return false;
            }
            *word = kept;
        }
        true
    });
    found
}
