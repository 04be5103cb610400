//! What a failed rsync run means, and what we do about it.
//!
//! # Why this module exists
//!
//! sersync 2.5 treated every non-zero `system()` status except 23 as failure, retried the
//! whole command string once, 7 ms later, and then appended it to `rsync_fail_log.sh`,
//! which it `chmod 777`ed and had root run with `/bin/sh` every `timeToExecute` minutes,
//! dropping whatever failed again (reference §1.7). Any local user could append commands to
//! that file, and a file name with a backtick or a quote in it ended up executed or
//! garbled. lsyncd went the other way: any exit code it did not know (13, 28, 123…)
//! terminated the whole daemon, and 23 and 24 were counted as success, so partially
//! transferred files were silently never retried (reference §2.8).
//!
//! sersyncd instead:
//! - classifies every way an rsync run can end ([`policy::classify`]) into
//!   success, benign (24, vanished source files), retryable, or fatal (a configuration
//!   error: still retried, slowly, and reported loudly — the daemon never dies of it);
//! - for exit 23, reads rsync's stderr to find exactly which paths failed
//!   ([`stderr::parse`], [`stderr::retry_set`]) and retries only those when that is
//!   provably safe, the whole batch otherwise;
//! - backs off per remote ([`backoff::Backoff`]) so a dead remote never stalls a live one
//!   and is not hammered;
//! - keeps `rsync_fail_log.sh` only as a human-readable record ([`script`]): mode 0600,
//!   written atomically, every word quoted by [`crate::shell::quote`]. sersyncd never
//!   executes it; it replays failures itself from its own journal.
//!
//! Architecture invariant: everything here is pure (time is passed in); files are written by
//! the daemon through [`crate::atomic_file`]; no process is spawned from this module.

pub mod backoff;
pub mod journal;
pub mod policy;
pub mod script;
pub mod stderr;

pub use backoff::Backoff;
pub use journal::{Journal, LaneKey, Replay};
pub use policy::{ExitClass, ExitStatusLike, Verdict, classify, describe};
pub use script::{ScriptEntry, render};
pub use stderr::{FailedPath, FailureKind, Side, StderrReport, failed_paths, retry_set};
