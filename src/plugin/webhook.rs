//! The `http` plugin: POST a JSON description of each change to a URL.
//!
//! sersync 2.5 had the configuration for it (`<plugin name="http"><localpath
//! watch><deshost url port>`) but compiled it out when it dropped libcurl. Ours sends,
//! for each change at or below the plugin's `<localpath watch>`:
//!
//! ```text
//! POST <url> HTTP/1.1
//! Content-Type: application/json
//!
//! {"root":"/srv/www","path":"img/a.jpg","is_dir":false,"event":"updated",
//!  "remotes":["10.0.0.2::www"],"encoding":"utf-8"}
//! ```
//!
//! - `root`: the watch root; `path`: relative to it, no leading slash.
//! - `event`: `updated` (created, written, moved in, attributes) or `deleted` (deleted or
//!   moved away).
//! - `remotes`: the remotes the change was delivered to (empty with `sersyncd -m http`).
//! - `encoding`: `utf-8` when `root` and `path` are the names as they are; `percent` when
//!   one of them is not valid UTF-8, in which case both are percent-encoded (bytes other
//!   than letters, digits, `-._~` and `/`) and must be decoded to get the raw bytes.
//!
//! Success is any 2xx answer. A transport error (connection refused, timeout), 5xx, 408
//! or 429 is retried `<deshost retries>` times (default 3) with pauses of 0.5 s, 1 s, 2 s,
//! …; other answers fail at once. Each attempt has `<deshost timeout>` seconds (default
//! 5). Extra headers (an `Authorization` token) come from `<header name value>` children
//! of `<deshost>`. HTTP only: for an https endpoint, run a local TLS-terminating proxy.

use std::path::PathBuf;
use std::time::Duration;

use std::os::unix::ffi::OsStrExt;

use super::encode::json_strings;
use super::http::Request;
use super::{Control, Job, Outcome, Plugin, PluginEvent, send_with_retries, within};
use crate::config::HttpPlugin;
use crate::http_url::HttpUrl;

#[derive(Debug)]
pub(super) struct Webhook {
    watch: PathBuf,
    url: HttpUrl,
    headers: Vec<(String, String)>,
    timeout: Duration,
    retries: u32,
}

impl Webhook {
    pub(super) fn new(config: &HttpPlugin) -> Webhook {
        Webhook {
            watch: config.watch.clone(),
            url: config.url.clone(),
            headers: config
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            timeout: Duration::from_secs(u64::from(config.timeout_secs.max(1))),
            retries: config.retries,
        }
    }

    /// The request for one change.
    pub(super) fn request(&self, event: &PluginEvent) -> Request {
        let mut request = Request::new("POST", &self.url);
        request.set_header("Content-Type", "application/json");
        for (name, value) in &self.headers {
            request.set_header(name, value);
        }
        request.body = body(event).into_bytes();
        request
    }
}

/// The JSON body for `event`.
pub(super) fn body(event: &PluginEvent) -> String {
    let (texts, encoding) = json_strings(&[event.root.as_os_str().as_bytes(), &event.path]);
    serde_json::json!({
        "root": texts[0],
        "path": texts[1],
        "is_dir": event.is_dir,
        "event": event.kind.as_str(),
        "remotes": event.remotes,
        "encoding": encoding.as_str(),
    })
    .to_string()
}

impl Plugin for Webhook {
    fn accept(&self, _event: &PluginEvent, abs: &[u8]) -> Result<(), String> {
        within(abs, &self.watch).map(|_| ())
    }

    fn deliver(&self, job: &Job, control: &Control) -> Outcome {
        let request = self.request(&job.event);
        match send_with_retries(&request, self.timeout, self.retries, control, |r| {
            r.is_success()
        }) {
            Ok(_) => Outcome::Delivered,
            Err(err) => Outcome::Failed(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ChangeKind;
    use super::*;

    fn event(path: &[u8], is_dir: bool, kind: ChangeKind, remotes: &[&str]) -> PluginEvent {
        PluginEvent {
            root: PathBuf::from("/srv/www"),
            path: path.to_vec(),
            is_dir,
            kind,
            remotes: remotes.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn json_bodies() {
        let cases = [
            (
                event(b"img/a.jpg", false, ChangeKind::Updated, &["10.0.0.2::www"]),
                serde_json::json!({"root":"/srv/www","path":"img/a.jpg","is_dir":false,
                    "event":"updated","remotes":["10.0.0.2::www"],"encoding":"utf-8"}),
            ),
            (
                event("d/é \"q\"\n".as_bytes(), true, ChangeKind::Deleted, &[]),
                serde_json::json!({"root":"/srv/www","path":"d/é \"q\"\n","is_dir":true,
                    "event":"deleted","remotes":[],"encoding":"utf-8"}),
            ),
            (
                event(
                    b"bad\xff name",
                    false,
                    ChangeKind::Updated,
                    &["a::m", "b::m"],
                ),
                serde_json::json!({"root":"/srv/www","path":"bad%FF%20name","is_dir":false,
                    "event":"updated","remotes":["a::m","b::m"],"encoding":"percent"}),
            ),
        ];
        for (event, expected) in cases {
            let got: serde_json::Value = serde_json::from_str(&body(&event)).unwrap();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn requests_carry_the_configured_headers_and_port() {
        let webhook = Webhook::new(&HttpPlugin {
            watch: PathBuf::from("/srv/www"),
            url: HttpUrl::parse("http://hooks.local/sersync?k=1")
                .unwrap()
                .with_default_port(8080),
            timeout_secs: 5,
            retries: 3,
            headers: vec![crate::config::HttpHeader {
                name: "Authorization".into(),
                value: "Bearer t".into(),
            }],
        });
        let request = webhook.request(&event(b"a", false, ChangeKind::Updated, &[]));
        let head = String::from_utf8(request.head()).unwrap();
        assert!(
            head.starts_with("POST /sersync?k=1 HTTP/1.1\r\nHost: hooks.local:8080\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nContent-Type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nAuthorization: Bearer t\r\n"), "{head}");
        assert_eq!(request.port, 8080);
    }
}
