//! Diagnostics: one problem found in a config file, with where it is and how to show it.
//!
//! A [`Diagnostic`] carries its own copy of the offending source line, so printing it needs
//! no file access (the file may have changed, or the config may have come from memory).
//! [`Display`](fmt::Display) renders it in the rustc / sudo-rs style that editors and
//! terminals recognise (`FILE:LINE:COL: error: …`, then the line and a caret).

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The config is refused.
    Error,
    /// The config loads; something is probably not what the author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file, as it was given (for messages).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (unreadable, empty, …).
    pub line: usize,
    /// 1-based column in characters (not bytes); 0 together with `line == 0`.
    pub col: usize,
    pub severity: Severity,
    /// One line, no trailing period, lower-case start (rustc convention).
    pub message: String,
    /// The text of line `line` (without its line terminator), when known.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// An error about the whole file (no position), e.g. "cannot read config file".
    pub fn file_error(path: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: path.to_owned(),
            line: 0,
            col: 0,
            severity: Severity::Error,
            message: message.into(),
            source_line: None,
        }
    }

    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The first line of the [`Display`](fmt::Display) form (`FILE:LINE:COL: error: MESSAGE`),
    /// for one-line sinks such as the journal.
    pub fn headline(&self) -> String {
        if self.line == 0 {
            format!(
                "{}: {}: {}",
                self.file.display(),
                self.severity,
                self.message
            )
        } else {
            format!(
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.severity,
                self.message
            )
        }
    }
}

/// Width of the line-number gutter, so that line numbers up to 99 999 line up.
const GUTTER: usize = 5;

impl fmt::Display for Diagnostic {
    /// ```text
    /// /etc/sersync/web.xml:12:27: error: watch path "opt/x" is not absolute
    ///    12 |         <localpath watch="opt/x">
    ///       |                           ^
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        let Some(text) = self.source_line.as_deref().filter(|_| self.line > 0) else {
            return Ok(());
        };
        write!(f, "\n{:>GUTTER$} | {}", self.line, text)?;
        write!(f, "\n{:>GUTTER$} | {}^", "", caret_padding(text, self.col))
    }
}

/// The blank space that puts a caret under character `col` (1-based) of `text`.
///
/// Tabs are copied so the caret lines up whatever the terminal's tab width; East Asian wide
/// characters (common in the Chinese comments of sersync configs) count as two columns.
fn caret_padding(text: &str, col: usize) -> String {
    text.chars()
        .take(col.saturating_sub(1))
        .map(|c| match c {
            '\t' => "\t",
            c if is_wide(c) => "  ",
            _ => " ",
        })
        .collect()
}

/// True for characters a terminal draws two columns wide (CJK, Hangul, full-width forms,
/// most emoji). An approximation of Unicode's East Asian Width property, good enough to place
/// a caret.
fn is_wide(c: char) -> bool {
    matches!(
        u32::from(c),
        0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD
    )
}
