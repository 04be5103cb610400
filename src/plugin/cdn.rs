//! The `refreshCDN` plugin: ask a CDN to purge the URL of each changed file.
//!
//! # ChinaCache mode (sersync 2.5, the default)
//!
//! With `<cdninfo domainname port username passwd>`, `<sendurl base>` and `<regexurl
//! regex match>`, every change becomes the request sersync 2.5 sent, byte for byte for
//! ordinary names:
//!
//! ```text
//! HEAD /index.jsp?user=U&pswd=P&ok=ok&urls=URL HTTP/1.0\r\nHost: DOMAINNAME\r\n\r\n
//! HEAD /index.jsp?user=U&pswd=P&ok=ok&dirs=URL/ HTTP/1.0\r\nHost: DOMAINNAME\r\n\r\n   (directories)
//! ```
//!
//! sent to `DOMAINNAME:port`, where `URL` is `base` followed by the absolute path with the
//! plugin's `<localpath watch>` cut off (so it starts with `/`), or with `regex="true"`:
//! `base` + capture group 1 + the rest of the path after the match, of the first match of
//! `match` anywhere in the absolute path (a path without a match is skipped).
//!
//! Differences, all for names 2.5 broke: file-name bytes that cannot stand in a query
//! value (space, `&`, `=`, `+`, `#`, `%`, `?`, quotes, controls, non-ASCII such as UTF-8
//! Chinese names) are percent-encoded, where 2.5 sent them raw and produced an invalid or
//! truncated request; `base`, `username` and `passwd` are sent as written except for bytes
//! that are not allowed in a request line. The timeout is 5 s for the whole exchange
//! (2.5: 300 ms). The answer is logged (status and ChinaCache's `whatsup` line) instead of
//! appended to `./errorlog.txt`; an answer that is not 2xx counts as a failure.
//!
//! # Generic purge mode (ours)
//!
//! With a `<purge>` element in the `<localpath>`, each change sends the request it
//! describes instead (and `<cdninfo>` may be left out):
//!
//! ```xml
//! <purge url="http://127.0.0.1:6081{path}" method="PURGE" timeout="5" retries="2"
//!        body='{"files":["{url}"]}'>
//!     <header name="Authorization" value="Bearer TOKEN"/>
//! </purge>
//! ```
//!
//! In `url`, `body` and header values these placeholders are replaced:
//!
//! | placeholder | value |
//! |---|---|
//! | `{path}` | `/` + the path below `<localpath watch>`, URL-path encoded; directories end in `/` |
//! | `{url}` | `<sendurl base>` + the same (or the `<regexurl>` result), as a browser would request it |
//! | `{path_q}`, `{url_q}` | the same, fully percent-encoded, to put inside a query string or form value |
//! | `{is_dir}` | `true` or `false` |
//! | `{event}` | `updated` or `deleted` |
//!
//! Success is any 2xx, and also 404 (ngx_cache_purge's answer when nothing was cached).
//! A transport error, 5xx, 408 or 429 is retried `retries` times with 0.5 s doubling
//! pauses. HTTP only: for an https API, run a local TLS-terminating proxy and point `url`
//! at it.

use std::path::PathBuf;
use std::time::Duration;

use regex::bytes::Regex;

use super::encode::{Context, percent_encode};
use super::http::{self, Request, Response, Version};
use super::{ChangeKind, Control, Job, Outcome, Plugin, PluginEvent, send_with_retries, within};
use crate::config::{PurgeRequest, RefreshCdnPlugin};
use crate::http_url::{HttpUrl, expand_template};

/// The whole exchange with the CDN API, per attempt.
const CHINACACHE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct RefreshCdn {
    watch: PathBuf,
    base: Vec<u8>,
    /// `<regexurl regex="true" match>`.
    regex: Option<Regex>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    ChinaCache {
        domain: String,
        port: u16,
        user: String,
        password: String,
    },
    Purge(PurgeRequest),
}

/// The per-change values behind the placeholders, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `/` + the path below the watch (`/` appended for a directory).
    pub path: Vec<u8>,
    /// What follows `base` in the public URL: the same as `path`, or in regex mode
    /// capture 1 + the rest after the match (`/` appended for a directory).
    pub url_tail: Vec<u8>,
}

impl RefreshCdn {
    pub(super) fn new(config: &RefreshCdnPlugin) -> Result<RefreshCdn, String> {
        let regex = if config.regex_enabled {
            Some(config.match_regex.clone().ok_or_else(|| {
                "<regexurl regex=\"true\"> needs a valid match expression".to_owned()
            })?)
        } else {
            None
        };
        let mode = match &config.purge {
            Some(purge) => Mode::Purge(purge.clone()),
            None => {
                if config.domain_name.is_empty() {
                    return Err("<cdninfo domainname> is empty".to_owned());
                }
                Mode::ChinaCache {
                    domain: config.domain_name.clone(),
                    port: config.port,
                    user: config.user.clone(),
                    password: config.password.clone(),
                }
            }
        };
        Ok(RefreshCdn {
            watch: config.watch.clone(),
            base: config.send_url_base.trim().as_bytes().to_vec(),
            regex,
            mode,
        })
    }

    /// The path and URL tail for the change at `abs`, or why the change is skipped.
    pub(super) fn target(&self, abs: &[u8], is_dir: bool) -> Result<Target, String> {
        let relative = within(abs, &self.watch)?;
        let mut path = relative.to_vec();
        if path.is_empty() {
            path.push(b'/');
        }
        let mut url_tail = match &self.regex {
            None => path.clone(),
            Some(regex) => {
                let Some(captures) = regex.captures(abs) else {
                    return Err("no match for <regexurl match>".to_owned());
                };
                let whole = captures.get(0).map_or(abs.len(), |m| m.end());
                let mut tail = captures
                    .get(1)
                    .map(|m| m.as_bytes().to_vec())
                    .unwrap_or_default();
                tail.extend_from_slice(&abs[whole..]);
                tail
            }
        };
        if is_dir {
            for bytes in [&mut path, &mut url_tail] {
                if bytes.last() != Some(&b'/') {
                    bytes.push(b'/');
                }
            }
        }
        Ok(Target { path, url_tail })
    }

    /// sersync 2.5's ChinaCache request for `target`.
    pub(super) fn chinacache_request(&self, target: &Target, is_dir: bool) -> Option<Request> {
        let Mode::ChinaCache {
            domain,
            port,
            user,
            password,
        } = &self.mode
        else {
            return None;
        };
        let wire = |text: &[u8]| percent_encode(text, Context::Wire);
        let query = format!(
            "/index.jsp?user={}&pswd={}&ok=ok&{}={}{}",
            wire(user.as_bytes()),
            wire(password.as_bytes()),
            if is_dir { "dirs" } else { "urls" },
            wire(&self.base),
            percent_encode(&target.url_tail, Context::QueryValue),
        );
        Some(Request {
            method: "HEAD".to_owned(),
            host: domain.clone(),
            port: *port,
            target: query,
            version: Version::Http10,
            headers: vec![("Host".to_owned(), domain.clone())],
            body: Vec::new(),
        })
    }

    /// The ChinaCache request for logs and status: the password is replaced by `***`.
    fn shown(&self, request: &Request) -> String {
        let text = request.describe();
        match &self.mode {
            Mode::ChinaCache { password, .. } if !password.is_empty() => text.replacen(
                &format!(
                    "&pswd={}&",
                    percent_encode(password.as_bytes(), Context::Wire)
                ),
                "&pswd=***&",
                1,
            ),
            _ => text,
        }
    }

    /// The `<purge>` request for `target`.
    pub(super) fn purge_request(
        &self,
        target: &Target,
        is_dir: bool,
        kind: ChangeKind,
    ) -> Option<Result<Request, String>> {
        let Mode::Purge(purge) = &self.mode else {
            return None;
        };
        let values = Values::new(&self.base, target, is_dir, kind);
        let url = match HttpUrl::parse(&values.expand(&purge.url)) {
            Ok(url) => url,
            Err(err) => return Some(Err(format!("purge URL: {err}"))),
        };
        let mut request = Request::new(&purge.method, &url);
        for header in &purge.headers {
            request.set_header(&header.name, &values.expand(&header.value));
        }
        if let Some(body) = &purge.body {
            request.body = values.expand(body).into_bytes();
        }
        Some(Ok(request))
    }
}

/// The encoded text of each placeholder for one change.
#[derive(Debug)]
struct Values {
    path: String,
    url: String,
    path_q: String,
    url_q: String,
    is_dir: &'static str,
    event: &'static str,
}

impl Values {
    fn new(base: &[u8], target: &Target, is_dir: bool, kind: ChangeKind) -> Values {
        let mut raw_url = base.to_vec();
        raw_url.extend_from_slice(&target.url_tail);
        Values {
            path: percent_encode(&target.path, Context::Path),
            url: format!(
                "{}{}",
                percent_encode(base, Context::Wire),
                percent_encode(&target.url_tail, Context::Path)
            ),
            path_q: percent_encode(&target.path, Context::Component),
            url_q: percent_encode(&raw_url, Context::Component),
            is_dir: if is_dir { "true" } else { "false" },
            event: kind.as_str(),
        }
    }

    /// Replaces the known placeholders in `template`; other braces stay as they are (so a
    /// JSON body needs no escaping).
    fn expand(&self, template: &str) -> String {
        let values = [
            self.path.as_str(),
            &self.url,
            &self.path_q,
            &self.url_q,
            self.is_dir,
            self.event,
        ];
        expand_template(template, &values)
    }
}

impl Plugin for RefreshCdn {
    fn accept(&self, event: &PluginEvent, abs: &[u8]) -> Result<(), String> {
        self.target(abs, event.is_dir).map(|_| ())
    }

    fn deliver(&self, job: &Job, control: &Control) -> Outcome {
        let event = &job.event;
        let target = match self.target(&job.abs, event.is_dir) {
            Ok(target) => target,
            Err(reason) => return Outcome::Failed(reason),
        };
        if let Some(request) = self.chinacache_request(&target, event.is_dir) {
            let shown = self.shown(&request);
            return match http::send(&request, CHINACACHE_TIMEOUT) {
                Ok(response) => {
                    let whatsup = response.line_containing("whatsup");
                    tracing::info!(
                        plugin = "refreshCDN",
                        request = %shown,
                        status = response.status,
                        whatsup = whatsup.as_deref().unwrap_or(""),
                        "CDN answered"
                    );
                    if response.is_success() {
                        Outcome::Delivered
                    } else {
                        Outcome::Failed(describe_as(&shown, &response))
                    }
                }
                Err(err) => Outcome::Failed(format!("{shown}: {err}")),
            };
        }
        let Mode::Purge(purge) = &self.mode else {
            return Outcome::Failed("refreshCDN has no mode (a bug)".to_owned());
        };
        let request = match self.purge_request(&target, event.is_dir, event.kind) {
            Some(Ok(request)) => request,
            Some(Err(err)) => return Outcome::Failed(err),
            None => return Outcome::Failed("refreshCDN has no mode (a bug)".to_owned()),
        };
        let timeout = Duration::from_secs(u64::from(purge.timeout_secs.max(1)));
        let accept = |r: &Response| r.is_success() || r.status == 404;
        match send_with_retries(&request, timeout, purge.retries, control, accept) {
            Ok(response) => {
                tracing::info!(
                    plugin = "refreshCDN",
                    request = %request.describe(),
                    status = response.status,
                    "purge answered"
                );
                Outcome::Delivered
            }
            Err(err) => Outcome::Failed(err),
        }
    }
}

/// `HEAD http://… → 403 Forbidden: body…`, for failure messages.
pub(super) fn describe(request: &Request, response: &Response) -> String {
    describe_as(&request.describe(), response)
}

/// [`describe`] with the request shown as `shown`.
fn describe_as(shown: &str, response: &Response) -> String {
    let body = response.body_excerpt(200);
    format!(
        "{shown} answered {} {}{}",
        response.status,
        response.reason,
        if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpHeader;

    fn config(regex: Option<&str>) -> RefreshCdnPlugin {
        RefreshCdnPlugin {
            watch: PathBuf::from("/data0/htdocs/cms.xoyo.com/site"),
            domain_name: "ccms.chinacache.com".into(),
            port: 80,
            user: "xxxx".into(),
            password: "xxxx".into(),
            send_url_base: "http://pic.xoyo.com/cms".into(),
            regex_enabled: regex.is_some(),
            regex_match: regex.unwrap_or_default().into(),
            match_regex: regex.map(|r| Regex::new(r).unwrap()),
            purge: None,
        }
    }

    fn head(cdn: &RefreshCdn, abs: &[u8], is_dir: bool) -> Result<String, String> {
        let target = cdn.target(abs, is_dir)?;
        let request = cdn.chinacache_request(&target, is_dir).unwrap();
        Ok(String::from_utf8(request.head()).unwrap())
    }

    /// The request line sersync 2.5 sent, for each kind of path (the stock sample config).
    #[test]
    fn chinacache_requests_are_built_as_sersync_did() {
        let plain = RefreshCdn::new(&config(None)).unwrap();
        let regex = RefreshCdn::new(&config(Some(
            "cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images",
        )))
        .unwrap();
        let line = |query: &str| {
            format!(
                "HEAD /index.jsp?user=xxxx&pswd=xxxx&ok=ok{query} HTTP/1.0\r\nHost: ccms.chinacache.com\r\n\r\n"
            )
        };
        let site = "/data0/htdocs/cms.xoyo.com/site";
        let cases: Vec<(&RefreshCdn, String, bool, Result<String, &str>)> = vec![
            (
                &plain,
                format!("{site}/images/a.jpg"),
                false,
                Ok(line("&urls=http://pic.xoyo.com/cms/images/a.jpg")),
            ),
            (
                &plain,
                format!("{site}/images/2011"),
                true,
                Ok(line("&dirs=http://pic.xoyo.com/cms/images/2011/")),
            ),
            (
                &plain,
                format!("{site}/x/a b&c=d+e#f%g.jpg"),
                false,
                Ok(line(
                    "&urls=http://pic.xoyo.com/cms/x/a%20b%26c%3Dd%2Be%23f%25g.jpg",
                )),
            ),
            (
                &plain,
                format!("{site}/图.jpg"),
                false,
                Ok(line("&urls=http://pic.xoyo.com/cms/%E5%9B%BE.jpg")),
            ),
            (
                &plain,
                "/data0/htdocs/other/a.jpg".into(),
                false,
                Err("outside"),
            ),
            (&plain, format!("{site}2/a.jpg"), false, Err("outside")),
            // regex="true": base + capture 1 + what follows the match.
            (
                &regex,
                format!("{site}/pic.xoyo.com/images/a/b.jpg"),
                false,
                Ok(line("&urls=http://pic.xoyo.com/cms/pic/a/b.jpg")),
            ),
            (
                &regex,
                format!("{site}/pic.xoyo.com/images/a"),
                true,
                Ok(line("&dirs=http://pic.xoyo.com/cms/pic/a/")),
            ),
            (
                &regex,
                format!("{site}/other/a.jpg"),
                false,
                Err("no match"),
            ),
        ];
        for (cdn, abs, is_dir, expected) in cases {
            let got = head(cdn, abs.as_bytes(), is_dir);
            match (&got, &expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{abs}"),
                (Err(err), Err(want)) => assert!(err.contains(want), "{abs}: {err}"),
                _ => panic!("{abs}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn config_text_is_sent_as_written_except_what_the_wire_forbids() {
        let mut cfg = config(None);
        cfg.user = "u%41&x".into();
        cfg.password = "p w\"".into();
        let cdn = RefreshCdn::new(&cfg).unwrap();
        let target = cdn
            .target(b"/data0/htdocs/cms.xoyo.com/site/a", false)
            .unwrap();
        let request = cdn.chinacache_request(&target, false).unwrap();
        assert_eq!(
            request.target,
            "/index.jsp?user=u%41&x&pswd=p%20w%22&ok=ok&urls=http://pic.xoyo.com/cms/a"
        );
        // Logs and status never show the password.
        assert_eq!(
            cdn.shown(&request),
            "HEAD http://ccms.chinacache.com:80/index.jsp?user=u%41&x&pswd=***&ok=ok&urls=http://pic.xoyo.com/cms/a"
        );
    }

    fn purge(url: &str, body: Option<&str>) -> RefreshCdn {
        let mut cfg = config(None);
        cfg.send_url_base = "https://www.example.com".into();
        cfg.purge = Some(PurgeRequest {
            url: url.into(),
            method: "POST".into(),
            headers: vec![HttpHeader {
                name: "X-Path".into(),
                value: "{path_q}".into(),
            }],
            body: body.map(str::to_owned),
            timeout_secs: 5,
            retries: 2,
        });
        RefreshCdn::new(&cfg).unwrap()
    }

    #[test]
    fn purge_templates_expand_each_placeholder_in_its_encoding() {
        let cdn = purge(
            "http://127.0.0.1:6081{path}?u={url_q}&d={is_dir}&e={event}&x={nope}",
            Some(r#"{"files":["{url}"],"path":"{path}"}"#),
        );
        let abs = "/data0/htdocs/cms.xoyo.com/site/a b/é&.jpg";
        let target = cdn.target(abs.as_bytes(), false).unwrap();
        let request = cdn
            .purge_request(&target, false, ChangeKind::Deleted)
            .unwrap()
            .unwrap();
        assert_eq!((request.host.as_str(), request.port), ("127.0.0.1", 6081));
        assert_eq!(
            request.target,
            "/a%20b/%C3%A9&.jpg?u=https%3A%2F%2Fwww.example.com%2Fa%20b%2F%C3%A9%26.jpg&d=false&e=deleted&x={nope}"
        );
        assert_eq!(
            String::from_utf8(request.body.clone()).unwrap(),
            r#"{"files":["https://www.example.com/a%20b/%C3%A9&.jpg"],"path":"/a%20b/%C3%A9&.jpg"}"#
        );
        let head = String::from_utf8(request.head()).unwrap();
        assert!(head.starts_with("POST /a%20b/"), "{head}");
        assert!(
            head.contains("\r\nX-Path: %2Fa%20b%2F%C3%A9%26.jpg\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nContent-Length: "), "{head}");

        // Directories end with a slash in {path} and {url}.
        let target = cdn
            .target(b"/data0/htdocs/cms.xoyo.com/site/d", true)
            .unwrap();
        let request = cdn
            .purge_request(&target, true, ChangeKind::Updated)
            .unwrap()
            .unwrap();
        assert!(
            request
                .target
                .starts_with("/d/?u=https%3A%2F%2Fwww.example.com%2Fd%2F&d=true&e=updated")
        );
        assert!(cdn.chinacache_request(&target, true).is_none());
    }

    #[test]
    fn the_config_readers_template_sample_is_what_this_plugin_makes_of_a_file() {
        // `crate::http_url::SAMPLE_VALUES` stands for an updated file `/x` below
        // `http://h`, so the config checks URLs as they will be sent.
        let target = Target {
            path: b"/x".to_vec(),
            url_tail: b"/x".to_vec(),
        };
        let values = Values::new(b"http://h", &target, false, ChangeKind::Updated);
        let template = crate::http_url::PLACEHOLDERS.join(" ");
        assert_eq!(
            values.expand(&template),
            crate::http_url::template_sample(&template)
        );
    }
}
