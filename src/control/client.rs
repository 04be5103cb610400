//! The client side: finding running instances and talking to one, and sorting D-Bus
//! errors into what a caller does about them (the exit codes of `sersyncctl`).

use zbus::blocking::Connection;
use zbus::blocking::fdo::DBusProxy;
use zbus::proxy::CacheProperties;

use super::{Error, Sersync1Proxy, names};

/// The instances with a daemon on this connection's bus, sorted.
pub fn list_instances(connection: &Connection) -> zbus::Result<Vec<String>> {
    let bus = DBusProxy::new(connection)?;
    let mut instances: Vec<String> = bus
        .list_names()?
        .iter()
        .filter_map(|name| names::instance_of(name.as_str()))
        .collect();
    instances.sort();
    instances.dedup();
    Ok(instances)
}

/// A proxy for the object of the daemon owning `bus_name` (see [`names::bus_name`]).
/// Property caching is off: `sersyncctl` makes one or two calls and exits, so fetching
/// every property up front would only cost a round trip.
pub fn proxy<'c>(connection: &'c Connection, bus_name: &str) -> zbus::Result<Sersync1Proxy<'c>> {
    Sersync1Proxy::builder(connection)
        .destination(bus_name.to_owned())?
        .cache_properties(CacheProperties::No)
        .build()
}

/// What went wrong, as far as the caller's next step is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The daemon is not running, or the bus is unreachable.
    Unreachable,
    /// The bus policy or the daemon refused the caller.
    AccessDenied,
    /// The daemon answered with an error.
    Daemon,
}

/// D-Bus error names that mean "nobody is there to answer".
const UNREACHABLE: &[&str] = &[
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
];

/// D-Bus error names that mean "you may not".
const DENIED: &[&str] = &[
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.AuthFailed",
    "org.sersync.Sersync1.Error.AccessDenied",
];

/// Sorts a zbus error.
pub fn classify(err: &zbus::Error) -> Failure {
    let name = error_name(err);
    if DENIED.contains(&name.as_str()) {
        Failure::AccessDenied
    } else if UNREACHABLE.contains(&name.as_str())
        || matches!(
            err,
            zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) | zbus::Error::Address(_)
        )
    {
        Failure::Unreachable
    } else {
        Failure::Daemon
    }
}

/// Sorts an error of the interface.
pub fn classify_error(err: &Error) -> Failure {
    match err {
        Error::ZBus(inner) => classify(inner),
        Error::AccessDenied(_) => Failure::AccessDenied,
        Error::Unavailable(_) => Failure::Unreachable,
        Error::UnknownRoot(_)
        | Error::UnknownCheckpoint(_)
        | Error::Timeout(_)
        | Error::Rejected(_) => Failure::Daemon,
    }
}

/// The D-Bus name of an error, or an empty string for errors that have none.
pub fn error_name(err: &zbus::Error) -> String {
    use zbus::DBusError;
    match err {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(fdo) => fdo.name().to_string(),
        _ => String::new(),
    }
}

/// The human part of an error: the description the peer sent, else the error itself.
pub fn error_message(err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(name, Some(description), _) => format!("{description} ({name})"),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::fdo;

    #[test]
    fn errors_sort_into_exit_classes() {
        assert_eq!(
            classify(&zbus::Error::FDO(Box::new(fdo::Error::ServiceUnknown(
                "x".into()
            )))),
            Failure::Unreachable
        );
        assert_eq!(
            classify(&zbus::Error::FDO(Box::new(fdo::Error::AccessDenied(
                "x".into()
            )))),
            Failure::AccessDenied
        );
        assert_eq!(
            classify(&zbus::Error::FDO(Box::new(fdo::Error::Failed("x".into())))),
            Failure::Daemon
        );
        assert_eq!(
            classify_error(&Error::AccessDenied("no".into())),
            Failure::AccessDenied
        );
        assert_eq!(
            classify_error(&Error::Rejected("bad".into())),
            Failure::Daemon
        );
        assert_eq!(
            classify_error(&Error::Unavailable("bye".into())),
            Failure::Unreachable
        );
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            classify(&zbus::Error::InputOutput(std::sync::Arc::new(io))),
            Failure::Unreachable
        );
    }
}
