//! HTTP URLs and URL templates, as the config reader checks them and the plugins use them.
//!
//! Why a module of its own: `config` validates the `url` of the http plugin and the
//! `<purge url>` template of refreshCDN when the file is read (so a bad URL is a
//! `file:line:col` error, not a failure at the first change), and `plugin` sends requests
//! to the same URLs. Both need one parser; this module sits below both, does no I/O, and
//! depends on nothing else in the crate, so `config` never imports `plugin`.

use std::fmt;

/// A parsed `http://` URL: where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// Whether the URL named the port (`http://h:8080/`), so a separate `port` attribute
    /// only applies when it did not.
    pub explicit_port: bool,
    /// The request target: path and query, always starting with `/`.
    pub target: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path][?query]`; `host[:port]/path` without a scheme is
    /// taken as `http://`. A fragment is dropped (it is never sent). `https://`, other
    /// schemes, user info and characters that cannot be sent in a request line are errors
    /// that say what to do instead.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let text = text.trim();
        let rest = match text.find("://") {
            Some(at) => {
                let scheme = &text[..at];
                if scheme.eq_ignore_ascii_case("http") {
                    &text[at + 3..]
                } else if scheme.eq_ignore_ascii_case("https") {
                    return Err(
                        "https is not supported (sersyncd has no TLS client): use http:// to a \
                         local TLS-terminating proxy such as stunnel or nginx"
                            .to_owned(),
                    );
                } else {
                    return Err(format!(
                        "unsupported URL scheme \"{scheme}\": only http:// is supported"
                    ));
                }
            }
            None => text,
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(
                "user info in the URL is not supported: send credentials with a <header> \
                 (e.g. name=\"Authorization\")"
                    .to_owned(),
            );
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err("the URL has no host".to_owned());
        }
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        if let Some(bad) = target.bytes().find(|&b| !(0x21..0x7f).contains(&b)) {
            return Err(format!(
                "the URL contains {} which cannot be sent as is: percent-encode it",
                match bad {
                    b' ' => "a space".to_owned(),
                    b if b >= 0x80 => "a non-ASCII character".to_owned(),
                    b => format!("the control character 0x{b:02x}"),
                }
            ));
        }
        Ok(HttpUrl {
            host,
            port: port.unwrap_or(80),
            explicit_port: port.is_some(),
            target,
        })
    }

    /// Uses `port` unless the URL named one.
    pub fn with_default_port(mut self, port: u16) -> HttpUrl {
        if !self.explicit_port {
            self.port = port;
        }
        self
    }

    /// The value of the `Host` header: the host, with the port unless it is 80.
    pub fn host_header(&self) -> String {
        let host = bracketed(&self.host);
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.target)
    }
}

/// A host as written before `:port`: IPv6 literals in brackets.
pub fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Splits `host[:port]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err("unclosed [ in the URL's host".to_owned());
        };
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected \"{after}\" after the host")),
        };
        (&inner[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => return Err(format!("invalid port \"{port}\" in the URL")),
        },
    };
    Ok((host.to_owned(), port))
}

/// The placeholders of a `<purge>` template (URL, body, header values), in the order their
/// values are given to [`expand_template`].
pub const PLACEHOLDERS: [&str; 6] = [
    "{path}", "{url}", "{path_q}", "{url_q}", "{is_dir}", "{event}",
];

/// The values a template check puts in place of [`PLACEHOLDERS`]: those of an updated file
/// `/x` below `<sendurl base="http://h">`, encoded as the refreshCDN plugin encodes them.
pub const SAMPLE_VALUES: [&str; 6] = [
    "/x",
    "http://h/x",
    "%2Fx",
    "http%3A%2F%2Fh%2Fx",
    "false",
    "updated",
];

/// Replaces each of [`PLACEHOLDERS`] in `template` by the value at its index; other braces
/// stay as they are (so a JSON body needs no escaping).
pub fn expand_template(template: &str, values: &[&str; 6]) -> String {
    let mut out = String::with_capacity(template.len() + values[1].len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        let replacement = PLACEHOLDERS
            .into_iter()
            .zip(values)
            .find(|(name, _)| rest.starts_with(name));
        match replacement {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `template` with every placeholder replaced by [`SAMPLE_VALUES`], so the config reader
/// can check that the URL parses whatever the file names are.
pub fn template_sample(template: &str) -> String {
    expand_template(template, &SAMPLE_VALUES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_reject_what_cannot_work() {
        let url = HttpUrl::parse("http://example.com/hook?x=1#frag").unwrap();
        assert_eq!(
            (
                url.host.as_str(),
                url.port,
                url.explicit_port,
                url.target.as_str()
            ),
            ("example.com", 80, false, "/hook?x=1")
        );
        assert_eq!(url.to_string(), "http://example.com/hook?x=1");
        let url = HttpUrl::parse("HTTP://127.0.0.1:8080").unwrap();
        assert_eq!((url.port, url.target.as_str()), (8080, "/"));
        assert_eq!(url.host_header(), "127.0.0.1:8080");
        let url = HttpUrl::parse("[::1]:81?q").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 81));
        assert_eq!(
            (url.target.as_str(), url.host_header()),
            ("/?q", "[::1]:81".to_owned())
        );
        let url = HttpUrl::parse("h/x").unwrap().with_default_port(8000);
        assert_eq!((url.port, url.target.as_str()), (8000, "/x"));
        let url = HttpUrl::parse("h:9/x").unwrap().with_default_port(8000);
        assert_eq!(url.port, 9);

        for (bad, message) in [
            ("https://cdn/", "https is not supported"),
            ("ftp://h/", "unsupported URL scheme \"ftp\""),
            ("http://u:p@h/", "user info"),
            ("http:///x", "no host"),
            ("http://h:0/", "invalid port \"0\""),
            ("http://h:x/", "invalid port"),
            ("http://[::1/", "unclosed ["),
            ("http://h/a b", "a space"),
            ("http://h/é", "non-ASCII"),
        ] {
            let err = HttpUrl::parse(bad).unwrap_err();
            assert!(err.contains(message), "{bad}: {err}");
        }
    }

    #[test]
    fn templates_expand_known_placeholders_and_keep_other_braces() {
        assert_eq!(
            template_sample("http://h:1{path}?u={url_q}"),
            "http://h:1/x?u=http%3A%2F%2Fh%2Fx"
        );
        assert_eq!(
            expand_template("{path}{path_q}{x}{event}{", &["a", "b", "c", "d", "e", "f"]),
            "ac{x}f{"
        );
    }
}
