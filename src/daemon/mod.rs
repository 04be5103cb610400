//! daemon (in progress).
