//! Placeholder: replaced by the config implementation.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn file_error(path: &Path, message: String) -> Self {
        Diagnostic { file: path.to_owned(), line: 0, col: 0, severity: Severity::Error, message }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity { Severity::Error => "error", Severity::Warning => "warning" };
        write!(f, "{}:{}:{}: {level}: {}", self.file.display(), self.line, self.col, self.message)
    }
}
