//! sersync: real-time replication of directory trees to rsync daemons (or over ssh),
//! a systemd-native reimplementation of sersync 2.5.
//!
//! The library holds everything; `sersyncd` and `sersyncctl` are thin binaries over it.
//! See ARCHITECTURE.md for the map of modules and the invariants between them.

pub mod atomic_file;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod exit;
pub mod failure;
pub mod generator;
pub mod guard;
pub mod http_url;
pub mod metrics;
pub mod panics;
pub mod plugin;
pub mod probe;
pub mod queue;
pub mod relpath;
pub mod shell;
pub mod sync;
pub mod timestamp;
pub mod trusted;
pub mod watch;
