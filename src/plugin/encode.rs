//! Turning raw path bytes into text for URLs, HTTP request lines and JSON.
//!
//! Unix file names are bytes: anything but `/` and NUL, not necessarily UTF-8. Plugins that
//! speak text protocols must therefore encode them, and the encoding must be reversible
//! and must never let a file name change the structure of what is sent (a space or `&` in
//! a name must not end a query parameter, a CR/LF must not start a new header line).
//!
//! Everything here is percent-encoding (RFC 3986 §2.1) of raw bytes with an allow-list that
//! depends on where the text goes. Names made of letters, digits, `.`, `-`, `_`, `~` and
//! `/` come out unchanged in every context, so the common case looks exactly as sersync 2.5
//! sent it.

use std::fmt::Write as _;

/// Bytes that never need encoding (RFC 3986 "unreserved").
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Where encoded text is placed; each context keeps a different set of bytes as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A URL path (RFC 3986 `path-abempty`): unreserved, sub-delims, `:`, `@` and `/` stay;
    /// this is how browsers request such a file, so it is what a CDN caches it under.
    Path,
    /// A query parameter value: like [`Context::Path`] but `&`, `=`, `+`, `?` are encoded
    /// so the value cannot end its parameter or be read as a space.
    QueryValue,
    /// A complete URI component (`?url=<this>`, form bodies): only unreserved bytes stay.
    Component,
    /// Text from the config that goes into a request line verbatim (a CDN base URL, a user
    /// name): only what is not allowed on the wire is encoded (controls, space, non-ASCII
    /// and `"<>\^`{|}`); `%` stays, so an already encoded value is kept as written.
    Wire,
}

impl Context {
    fn keeps(self, b: u8) -> bool {
        match self {
            Context::Path => {
                unreserved(b)
                    || matches!(
                        b,
                        b'/' | b':'
                            | b'@'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            }
            Context::QueryValue => {
                unreserved(b)
                    || matches!(
                        b,
                        b'/' | b':' | b'@' | b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b';'
                    )
            }
            Context::Component => unreserved(b),
            Context::Wire => {
                (0x21..0x7f).contains(&b)
                    && !matches!(
                        b,
                        b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
                    )
            }
        }
    }
}

/// Percent-encodes `bytes` for `context` (upper-case hex digits, as RFC 3986 recommends).
pub fn percent_encode(bytes: &[u8], context: Context) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if context.keeps(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Text for a JSON string: the bytes themselves when they are UTF-8, else `None` (the
/// caller then percent-encodes, see [`json_strings`]).
fn utf8(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// How [`json_strings`] represented the paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonEncoding {
    /// Every string is the UTF-8 text of the bytes.
    Utf8,
    /// At least one value was not UTF-8, so *all* of them are percent-encoded
    /// ([`Context::Component`] plus `/` kept): decode them to get the raw bytes.
    Percent,
}

impl JsonEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            JsonEncoding::Utf8 => "utf-8",
            JsonEncoding::Percent => "percent",
        }
    }
}

/// Represents byte strings as JSON strings, all in one encoding so a receiver needs to
/// look at one flag: verbatim when every value is UTF-8, otherwise all percent-encoded.
/// Mixing both would make `a%41` ambiguous.
pub fn json_strings(values: &[&[u8]]) -> (Vec<String>, JsonEncoding) {
    if let Some(texts) = values
        .iter()
        .map(|v| utf8(v).map(str::to_owned))
        .collect::<Option<Vec<_>>>()
    {
        return (texts, JsonEncoding::Utf8);
    }
    let encoded = values
        .iter()
        .map(|v| {
            // Slashes stay readable; everything else outside "unreserved" is encoded.
            v.split(|&b| b == b'/')
                .map(|segment| percent_encode(segment, Context::Component))
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    (encoded, JsonEncoding::Percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_unchanged_in_every_context() {
        for context in [
            Context::Path,
            Context::QueryValue,
            Context::Wire,
            Context::Component,
        ] {
            assert_eq!(percent_encode(b"a-b_c.d~9", context), "a-b_c.d~9");
        }
        assert_eq!(percent_encode(b"/img/a.jpg", Context::Path), "/img/a.jpg");
        assert_eq!(
            percent_encode(b"/img/a.jpg", Context::QueryValue),
            "/img/a.jpg"
        );
    }

    #[test]
    fn each_context_encodes_what_would_break_it() {
        let name = b"a b&c=d+e?f#g%h\"i\n\xff\xc3\xa9";
        assert_eq!(
            percent_encode(name, Context::Path),
            "a%20b&c=d+e%3Ff%23g%25h%22i%0A%FF%C3%A9"
        );
        assert_eq!(
            percent_encode(name, Context::QueryValue),
            "a%20b%26c%3Dd%2Be%3Ff%23g%25h%22i%0A%FF%C3%A9"
        );
        assert_eq!(
            percent_encode(b"http://h/a b", Context::Component),
            "http%3A%2F%2Fh%2Fa%20b"
        );
        // Config text keeps `%`, `&`, `:` and `/`, and loses only what cannot be sent.
        assert_eq!(
            percent_encode(b"http://cdn/x?a=1&b=%41 \x7f\xe4", Context::Wire),
            "http://cdn/x?a=1&b=%41%20%7F%E4"
        );
    }

    #[test]
    fn json_strings_are_verbatim_or_all_percent_encoded() {
        let (texts, encoding) = json_strings(&[b"/srv/w", "d/é \"q\"".as_bytes()]);
        assert_eq!(encoding, JsonEncoding::Utf8);
        assert_eq!(texts, ["/srv/w", "d/é \"q\""]);

        let (texts, encoding) = json_strings(&[b"/srv/w", b"d/a\xffb c%"]);
        assert_eq!(encoding, JsonEncoding::Percent);
        assert_eq!(texts, ["/srv/w", "d/a%FFb%20c%25"]);
    }
}
