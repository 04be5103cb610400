//! Bus names, object path and interface name, and the reversible escaping of instance names.
//!
//! Every running daemon owns one well-known name, `org.sersync.Sersync1.i_<escaped
//! instance>`, and exports one object, [`OBJECT_PATH`], with the interface [`INTERFACE`].
//! One name per instance (rather than one object per instance under a shared name) lets
//! `sersync@web` and `sersync@img` be separate processes that start, stop and crash
//! independently, and lets the bus itself tell which instances run (`ListNames`).
//!
//! # Escaping
//!
//! A bus-name element may hold only `[A-Za-z0-9_-]` and must not start with a digit, and a
//! whole name is at most 255 bytes. Instance names come from systemd (`sersync@web-1.example`)
//! or from a config file's name, so they contain `-`, `.`, digits first, even non-ASCII.
//! The escaping is the one systemd uses for bus labels, made total by a fixed prefix:
//!
//! - ASCII letters and digits stay as they are;
//! - every other byte of the UTF-8 encoding, `_` included, becomes `_` and two lower-case
//!   hex digits (`-` → `_2d`, `.` → `_2e`, `_` → `_5f`, `é` → `_c3_a9`);
//! - the element is prefixed with `i_`, so it never starts with a digit and never collides
//!   with a name that is not an instance.
//!
//! Because `_` is always escaped, every `_` in the escaped text starts an escape, so
//! [`unescape_instance`] is the exact inverse and rejects anything [`escape_instance`]
//! cannot produce (upper-case hex, a lone `_`, bytes that are not UTF-8).

use std::fmt;

/// The D-Bus interface (and the root of the error names). The `1` is the interface version:
/// an incompatible change gets `Sersync2`, served beside `Sersync1` for a while.
pub const INTERFACE: &str = "org.sersync.Sersync1";

/// The one object every daemon exports.
pub const OBJECT_PATH: &str = "/org/sersync/Sersync1";

/// What every instance's well-known name starts with.
pub const NAME_PREFIX: &str = "org.sersync.Sersync1.i_";

/// The D-Bus limit on the length of a bus name, in bytes.
const MAX_NAME_LEN: usize = 255;

/// An instance name that cannot become a bus name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The instance name is empty.
    Empty,
    /// The escaped name would exceed the 255-byte limit of D-Bus.
    TooLong { instance: String, len: usize },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("the instance name is empty"),
            NameError::TooLong { instance, len } => write!(
                f,
                "instance name {instance:?} is too long for D-Bus: its bus name would be {len} \
                 bytes, the limit is {MAX_NAME_LEN} (every character other than A-Z, a-z, 0-9 \
                 takes 3 bytes per UTF-8 byte)"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// The escaped form of `instance` (without the `i_` prefix).
pub fn escape_instance(instance: &str) -> String {
    let mut out = String::with_capacity(instance.len());
    for byte in instance.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            out.push('_');
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0xf));
        }
    }
    out
}

/// The inverse of [`escape_instance`]; `None` for text it cannot have produced.
pub fn unescape_instance(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_alphanumeric() {
            out.push(byte);
            i += 1;
        } else if byte == b'_' && i + 2 < bytes.len() {
            let value = hex_value(bytes[i + 1])? << 4 | hex_value(bytes[i + 2])?;
            // An escaped alphanumeric would have been written as itself.
            if value.is_ascii_alphanumeric() {
                return None;
            }
            out.push(value);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The well-known bus name of `instance`.
pub fn bus_name(instance: &str) -> Result<String, NameError> {
    if instance.is_empty() {
        return Err(NameError::Empty);
    }
    let name = format!("{NAME_PREFIX}{}", escape_instance(instance));
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            instance: instance.to_owned(),
            len: name.len(),
        });
    }
    Ok(name)
}

/// The instance whose well-known name is `name`; `None` for any other name.
pub fn instance_of(name: &str) -> Option<String> {
    let instance = unescape_instance(name.strip_prefix(NAME_PREFIX)?)?;
    (!instance.is_empty()).then_some(instance)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble)])
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (instance, escaped element after `i_`).
    const TABLE: &[(&str, &str)] = &[
        ("web", "web"),
        ("Web2", "Web2"),
        ("2web", "2web"),
        ("web-1", "web_2d1"),
        ("www.example.com", "www_2eexample_2ecom"),
        ("a_b", "a_5fb"),
        ("_", "_5f"),
        ("a b", "a_20b"),
        ("été", "_c3_a9t_c3_a9"),
        ("/srv/www", "_2fsrv_2fwww"),
        ("日本", "_e6_97_a5_e6_9c_ac"),
        ("x\u{0}y", "x_00y"),
    ];

    #[test]
    fn escape_table() {
        for (instance, escaped) in TABLE {
            assert_eq!(escape_instance(instance), *escaped, "escape {instance:?}");
            assert_eq!(
                unescape_instance(escaped).as_deref(),
                Some(*instance),
                "unescape {escaped:?}"
            );
        }
    }

    #[test]
    fn bus_names_are_valid_dbus_names() {
        for (instance, _) in TABLE {
            let name = bus_name(instance).unwrap();
            zbus::names::WellKnownName::try_from(name.as_str())
                .unwrap_or_else(|e| panic!("{name:?} for {instance:?} is not valid: {e}"));
            assert_eq!(instance_of(&name).as_deref(), Some(*instance));
        }
    }

    #[test]
    fn round_trip_of_every_byte_class() {
        let mut all = String::new();
        for c in (1u32..0x250)
            .chain([0x3000, 0x1f600])
            .filter_map(char::from_u32)
        {
            all.push(c);
        }
        for chunk in all.chars().collect::<Vec<_>>().chunks(20) {
            let instance: String = chunk.iter().collect();
            let escaped = escape_instance(&instance);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{escaped:?}"
            );
            assert_eq!(
                unescape_instance(&escaped).as_deref(),
                Some(instance.as_str())
            );
        }
    }

    #[test]
    fn unescape_rejects_what_escape_cannot_produce() {
        for bad in [
            "_", "_2", "_2D", "_zz", "_61", "a-b", "a.b", "_ff", "_c3", "a__2d", "é",
        ] {
            assert_eq!(unescape_instance(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn other_names_are_not_instances() {
        for name in [
            "org.sersync.Sersync1",
            "org.sersync.Sersync1.i_",
            "org.sersync.Sersync1.web",
            "org.sersync.Sersync2.i_web",
            "org.freedesktop.DBus",
            ":1.42",
        ] {
            assert_eq!(instance_of(name), None, "{name:?}");
        }
    }

    #[test]
    fn empty_and_overlong_instances_are_refused() {
        assert_eq!(bus_name(""), Err(NameError::Empty));
        let longest = "a".repeat(MAX_NAME_LEN - NAME_PREFIX.len());
        assert!(bus_name(&longest).is_ok());
        let err = bus_name(&format!("{longest}a")).unwrap_err();
        assert!(
            matches!(err, NameError::TooLong { len: 256, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("too long for D-Bus"));
        // Escapes count three bytes each.
        assert!(bus_name(&"-".repeat(78)).is_err());
        assert!(bus_name(&"-".repeat(77)).is_ok());
    }
}
