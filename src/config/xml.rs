//! Reading `confxml.xml`: bytes → decoded text → a positioned element tree → [`Config`](super::Config).
//!
//! quick-xml's event reader is used rather than serde because every diagnostic needs the
//! `line:col` of the element or, better, of the attribute value at fault. The tree keeps
//! byte offsets into the decoded text; [`Source`] turns them into positions.
//!
//! XML syntax errors stop the reading (the structure after them cannot be trusted), and a
//! file with syntax errors is not checked against the schema: reporting "no `<localpath>`"
//! because a tag was not closed would only mislead. Everything after that — the schema
//! checks in [`super::schema`] — collects every problem it finds.

use std::borrow::Cow;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};

use super::diag::{Diagnostic, Severity};
use super::source::Source;
use super::{LoadResult, schema};

/// Parses and validates a config file's bytes. `path` only names the file in diagnostics.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> LoadResult {
    let source = Source::decode(bytes);
    let mut diagnostics = Vec::new();
    let root = read_tree(path, &source, &mut diagnostics);
    let config = match root {
        Some(root) if !diagnostics.iter().any(Diagnostic::is_error) => {
            schema::build(path, &source, &root, &mut diagnostics)
        }
        _ => None,
    };
    // Top to bottom, whole-file problems first; the sort is stable so problems at the same
    // place keep the order they were found in.
    diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.col));
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok((config, diagnostics)),
        _ => Err(diagnostics),
    }
}

/// An XML element with the positions the schema checks report against.
#[derive(Debug, Clone)]
pub(super) struct Element {
    /// The name as written (compare with `eq_ignore_ascii_case`).
    pub name: String,
    /// Byte offset of the `<` that opens the element.
    pub at: usize,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
}

impl Element {
    /// True when this element is `<name>`, ignoring ASCII case like sersync's xmlParser.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The first attribute called `name`, ignoring ASCII case like sersync's xmlParser.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs
            .iter()
            .find(|attr| attr.name.eq_ignore_ascii_case(name))
    }
}

/// An attribute, its entity-decoded value, and where each character of the value came from.
#[derive(Debug, Clone)]
pub(super) struct Attr {
    pub name: String,
    /// Byte offset of the attribute name.
    pub name_at: usize,
    /// The value with entity and character references replaced.
    pub value: String,
    /// Byte offset in the source of each character of `value`, then of the closing quote;
    /// so never empty, and a reference like `&amp;` maps to its `&`.
    char_at: Vec<usize>,
}

impl Attr {
    /// Byte offset of the value's first character (of the closing quote when empty).
    pub fn value_at(&self) -> usize {
        self.char_at.first().copied().unwrap_or(self.name_at)
    }

    /// Byte offset of character `index` (0-based) of the value, clamped to the closing quote.
    pub fn char_at(&self, index: usize) -> usize {
        self.char_at
            .get(index)
            .or(self.char_at.last())
            .copied()
            .unwrap_or(self.name_at)
    }
}

/// Collects diagnostics for one file during reading.
struct TreeReader<'a> {
    file: &'a Path,
    source: &'a Source,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl TreeReader<'_> {
    fn report(&mut self, offset: usize, severity: Severity, message: String) {
        let diagnostic = self.source.diagnostic(self.file, offset, severity, message);
        self.diagnostics.push(diagnostic);
    }

    /// Builds an [`Element`] (without children) from a start or empty-element tag.
    fn element(&mut self, input: &[u8], tag: &BytesStart<'_>) -> Element {
        let tag_bytes: &[u8] = tag;
        // Content of a tag starts right after its `<`.
        let tag_at = offset_in(input, tag_bytes).unwrap_or(0);
        let name = tag.name();
        let mut element = Element {
            name: String::from_utf8_lossy(name.as_ref()).into_owned(),
            at: tag_at.saturating_sub(1),
            attrs: Vec::new(),
            children: Vec::new(),
        };
        for attribute in tag.attributes() {
            let attribute = match attribute {
                Ok(attribute) => attribute,
                Err(err) => {
                    let (at, message) = describe_attr_error(&err);
                    self.report(
                        tag_at + at,
                        Severity::Error,
                        format!("malformed XML: {message}"),
                    );
                    continue;
                }
            };
            let key = attribute.key.as_ref();
            let name_at = offset_in(input, key).unwrap_or(element.at);
            let raw_value: &[u8] = &attribute.value;
            let value_at = match &attribute.value {
                Cow::Borrowed(value) => offset_in(input, value),
                Cow::Owned(_) => None,
            }
            // Fallback, never expected with a slice reader: the name, `=` and the quote.
            .unwrap_or(name_at + key.len() + 2);
            let raw_value = String::from_utf8_lossy(raw_value);
            let (value, char_at) = self.unescape(&raw_value, value_at);
            element.attrs.push(Attr {
                name: String::from_utf8_lossy(key).into_owned(),
                name_at,
                value,
                char_at,
            });
        }
        element
    }

    /// Replaces the five predefined entities and `&#N;` / `&#xH;` character references.
    ///
    /// Other `&` sequences are kept literally with a warning: sersync's xmlParser was lenient
    /// here and URLs with a bare `&` occur in real configs.
    fn unescape(&mut self, raw: &str, raw_at: usize) -> (String, Vec<usize>) {
        let mut value = String::with_capacity(raw.len());
        let mut char_at = Vec::with_capacity(raw.len() + 1);
        let mut rest = raw.char_indices().peekable();
        while let Some((index, c)) = rest.next() {
            let at = raw_at + index;
            if c != '&' {
                value.push(c);
                char_at.push(at);
                continue;
            }
            let tail = &raw[index + 1..];
            let reference = tail
                .find(';')
                .map(|end| &tail[..end])
                .filter(|name| !name.is_empty() && !name.contains(['&', ' ', '\t', '\n']));
            let decoded = reference.and_then(decode_reference);
            match (reference, decoded) {
                (Some(reference), Some(decoded)) => {
                    value.push(decoded);
                    char_at.push(at);
                    // Skip the reference and its `;`.
                    for _ in 0..reference.chars().count() + 1 {
                        rest.next();
                    }
                }
                (reference, _) => {
                    let message = match reference {
                        Some(reference) if reference.starts_with('#') => {
                            format!("invalid character reference \"&{reference};\" taken literally")
                        }
                        Some(reference) => format!(
                            "unknown entity \"&{reference};\" taken literally (write a literal & as &amp;)"
                        ),
                        None => {
                            "bare \"&\" in an attribute value taken literally (write it as &amp;)"
                                .to_owned()
                        }
                    };
                    self.report(at, Severity::Warning, message);
                    value.push('&');
                    char_at.push(at);
                }
            }
        }
        char_at.push(raw_at + raw.len());
        (value, char_at)
    }
}

/// The character an entity or character reference (without `&` and `;`) stands for.
fn decode_reference(reference: &str) -> Option<char> {
    match reference {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let number = reference.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code).filter(|&c| c != '\0')
        }
    }
}

/// Position (relative to the tag content) and wording of an attribute syntax error.
fn describe_attr_error(err: &AttrError) -> (usize, String) {
    match *err {
        AttrError::ExpectedEq(at) => (at, "attribute name must be followed by \"=\"".to_owned()),
        AttrError::ExpectedValue(at) => (at, "\"=\" must be followed by a quoted value".to_owned()),
        AttrError::UnquotedValue(at) => (at, "attribute value must be in quotes".to_owned()),
        AttrError::ExpectedQuote(at, quote) => (
            at,
            format!("attribute value has no closing {}", char::from(quote)),
        ),
        AttrError::Duplicated(at, _) => (at, "attribute is given twice".to_owned()),
    }
}

/// Byte offset of `part` inside `whole` when `part` is a sub-slice of it.
///
/// quick-xml's slice reader hands out sub-slices of the input, which is how the positions
/// of names and attribute values are found without re-scanning the tag.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let whole_range = whole.as_ptr_range();
    let part_range = part.as_ptr_range();
    (whole_range.start <= part_range.start && part_range.end <= whole_range.end)
        .then(|| part_range.start as usize - whole_range.start as usize)
}

/// Reads the element tree, reporting XML syntax errors. `None` when there is no usable tree.
fn read_tree(file: &Path, source: &Source, diagnostics: &mut Vec<Diagnostic>) -> Option<Element> {
    let text = source.text();
    let input = text.as_bytes();
    let mut reader = Reader::from_str(text);
    // Checked below instead, to name the element that is not closed and where it opened.
    reader.config_mut().check_end_names = false;
    let mut tree = TreeReader {
        file,
        source,
        diagnostics,
    };
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;

    loop {
        match reader.read_event() {
            Ok(Event::Start(tag)) => {
                let element = tree.element(input, &tag);
                if open.is_empty() && root.is_some() {
                    second_root(&mut tree, &element);
                    return None;
                }
                open.push(element);
            }
            Ok(Event::Empty(tag)) => {
                let element = tree.element(input, &tag);
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => {
                        second_root(&mut tree, &element);
                        return None;
                    }
                }
            }
            Ok(Event::End(end)) => {
                let name = end.name();
                let end_at = offset_in(input, name.as_ref()).map_or(0, |at| at.saturating_sub(2));
                let name = String::from_utf8_lossy(name.as_ref()).into_owned();
                match open.pop() {
                    Some(element) if element.name == name => match open.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    },
                    Some(element) => {
                        let (line, _) = source.location(end_at);
                        tree.report(
                            element.at,
                            Severity::Error,
                            format!(
                                "malformed XML: <{}> is not closed (found </{name}> on line {line})",
                                element.name
                            ),
                        );
                        return None;
                    }
                    None => {
                        tree.report(
                            end_at,
                            Severity::Error,
                            format!("malformed XML: </{name}> closes nothing"),
                        );
                        return None;
                    }
                }
            }
            Ok(Event::Eof) => break,
            // Declarations, comments, text, CDATA, processing instructions, DOCTYPE and
            // entity references in text carry nothing sersync reads.
            Ok(_) => {}
            Err(err) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(text.len());
                tree.report(at, Severity::Error, format!("malformed XML: {err}"));
                return None;
            }
        }
    }

    if let Some(element) = open.last() {
        let message = format!(
            "malformed XML: <{}> is not closed (end of file reached)",
            element.name
        );
        tree.report(element.at, Severity::Error, message);
        return None;
    }
    if root.is_none() {
        tree.diagnostics.push(Diagnostic::file_error(
            file,
            "no XML root element: expected <head>",
        ));
    }
    root
}

fn second_root(tree: &mut TreeReader<'_>, element: &Element) {
    tree.report(
        element.at,
        Severity::Error,
        format!(
            "malformed XML: <{}> after the end of the root element (only one root is allowed)",
            element.name
        ),
    );
}
