//! A document that does not parse (a TOML syntax error), and turning byte offsets into the
//! lines and columns every error names.

use super::*;

impl Doc<'_> {
    /// The parser's message, at the line and column of its span: a syntax error is about the
    /// text there, not about a key.
    pub(super) fn syntax_error(&self, e: &toml_edit::TomlError) -> ConfigError {
        let msg = e.message().trim().replace('\n', ": ");
        let Some(span) = e.span() else {
            return ConfigError::Whole {
                path: self.path.to_string(),
                msg: format!("TOML syntax error: {msg}"),
            };
        };
        let start = span.start.min(self.text.len());
        ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(start),
            key: None,
            msg: format!(
                "TOML syntax error at column {}: {msg}",
                column_of(self.text, start)
            ),
        }
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    line_of_bytes(text.as_bytes(), offset)
}

pub(super) fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// 1-based column (in characters) of a byte offset.
pub(super) fn column_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let line_start = text.as_bytes()[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    String::from_utf8_lossy(&text.as_bytes()[line_start..end])
        .chars()
        .count()
        + 1
}
