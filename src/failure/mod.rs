//! failure (in progress).
