//! Placeholder: replaced by the config implementation.
use super::{Diagnostic, LoadResult};
use std::path::Path;

pub(super) fn parse(path: &Path, _bytes: &[u8]) -> LoadResult {
    Err(vec![Diagnostic::file_error(path, "config reader not built yet".into())])
}
