//! The decoded text of a config file, and the mapping from byte offsets to `line:col`.
//!
//! sersync's sample declares `encoding="ISO-8859-1"`, but people edit it in UTF-8 editors
//! and add Chinese comments, so the declaration is not trusted: bytes that are valid UTF-8
//! are UTF-8, anything else is ISO-8859-1 (every byte is one character, so decoding cannot
//! fail). Paths read from an ISO-8859-1 file are turned back into their original bytes so a
//! Latin-1 directory name in the file matches the same bytes on disk.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::diag::{Diagnostic, Severity};

/// A config file's text, decoded, with an index of where its lines start.
#[derive(Debug)]
pub(super) struct Source {
    text: String,
    /// Byte offset in `text` of the start of each line; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
    /// The bytes were not UTF-8 and were decoded as ISO-8859-1.
    latin1: bool,
}

impl Source {
    /// Decodes `bytes` (UTF-8 if valid, else ISO-8859-1) and drops a UTF-8 byte order mark.
    pub(super) fn decode(bytes: &[u8]) -> Source {
        let (text, latin1) = match std::str::from_utf8(bytes) {
            Ok(text) => (
                text.strip_prefix('\u{feff}').unwrap_or(text).to_owned(),
                false,
            ),
            Err(_) => (bytes.iter().map(|&b| char::from(b)).collect(), true),
        };
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Source {
            text,
            line_starts,
            latin1,
        }
    }

    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// True when the file was decoded as ISO-8859-1.
    pub(super) fn is_latin1(&self) -> bool {
        self.latin1
    }

    /// 1-based line and 1-based column (in characters) of byte `offset`.
    pub(super) fn location(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_index = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..)
            .unwrap_or("")
            .char_indices()
            .take_while(|&(index, _)| start + index < offset)
            .count()
            + 1;
        (line_index + 1, col)
    }

    /// The text of 1-based `line`, without `\n` or `\r\n`.
    pub(super) fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        let text = self.text.get(start..end)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        Some(text.strip_suffix('\r').unwrap_or(text))
    }

    /// A diagnostic at byte `offset`, carrying its source line.
    pub(super) fn diagnostic(
        &self,
        file: &std::path::Path,
        offset: usize,
        severity: Severity,
        message: String,
    ) -> Diagnostic {
        let (line, col) = self.location(offset);
        Diagnostic {
            file: file.to_owned(),
            line,
            col,
            severity,
            message,
            source_line: self.line_text(line).map(str::to_owned),
        }
    }

    /// A path written in the file, as the bytes the author meant.
    ///
    /// For an ISO-8859-1 file each character U+0000..U+00FF is the byte of the same value
    /// (what the author's editor saved); characters above (only reachable through `&#…;`
    /// references) are kept as UTF-8.
    pub(super) fn path(&self, text: &str) -> PathBuf {
        if !self.latin1 {
            return PathBuf::from(text);
        }
        let mut bytes = Vec::with_capacity(text.len());
        for c in text.chars() {
            match u8::try_from(u32::from(c)) {
                Ok(byte) => bytes.push(byte),
                Err(_) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        PathBuf::from(OsString::from_vec(bytes))
    }
}
