//! Turning a TOML syntax or type error into one that names the line and the key.

use super::*;

impl Doc<'_> {
    /// Turns a TOML syntax or type error into one that names the line and, when it can be
    /// told, the key.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().trim().replace('\n', ": ");
        let Some(span) = e.span() else {
            return ConfigError::Whole {
                path: self.path.to_string(),
                msg,
            };
        };
        let start = span.start.min(self.text.len());
        let spanned = self.text.get(span.clone()).unwrap_or("");
        let at = |key: Option<String>, msg: String| ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(start),
            key,
            msg,
        };
        if let Some(rest) = msg.strip_prefix("missing field `") {
            // The span is the table that lacks the key.
            let key = rest.split('`').next().unwrap_or("").to_string();
            let table = first_line(spanned);
            return at(
                Some(key),
                format!("is required but missing from the table starting {table:?}; add it"),
            );
        }
        if msg.starts_with("unknown field `") {
            // The span is the unknown key itself.
            let expected = msg
                .split_once(", expected ")
                .map(|(_, e)| format!("; valid keys here: {e}"))
                .unwrap_or_default();
            return at(
                Some(spanned.trim().to_string()),
                format!("unknown key{expected}"),
            );
        }
        if is_data_error(&msg) {
            let mut msg = msg.replace("expected i64", "expected an integer");
            let key = if spanned.starts_with('[') {
                // A whole table of the wrong shape, e.g. [bdev] where [[bdev]] is needed.
                if msg.contains("expected a sequence") && !spanned.starts_with("[[") {
                    let name = table_name(spanned);
                    msg.push_str(&format!(
                        "; write [[{name}]] (a list of tables), not [{name}]"
                    ));
                }
                Some(table_name(spanned))
            } else {
                key_before(self.text, start)
            };
            return at(key, msg);
        }
        let column = column_of(self.text, start);
        at(None, format!("TOML syntax error at column {column}: {msg}"))
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

pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// "bdev" from "[[bdev]]" or "[bdev]" (the first line of a table's span).
pub(super) fn table_name(span_text: &str) -> String {
    first_line(span_text)
        .trim_matches(|c| c == '[' || c == ']')
        .trim()
        .to_string()
}

/// serde's wording for a value of the wrong type or range, as opposed to a syntax error.
pub(super) fn is_data_error(msg: &str) -> bool {
    [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "duplicate field",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// The key a value at `offset` belongs to: the text before `=` on its line or, for an element
/// of a multi-line array, on the nearest line above (stopping at a table header).
pub(super) fn key_before(text: &str, offset: usize) -> Option<String> {
    let end = offset.min(text.len());
    let before = String::from_utf8_lossy(&text.as_bytes()[..end]);
    for (i, line) in before.rsplit('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') && !trimmed.contains('=') {
            return None;
        }
        if let Some(eq) = unquoted_eq(trimmed) {
            let key = trimmed[..eq].trim().trim_matches('"').trim_matches('\'');
            let bare = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            return bare.then(|| key.to_string());
        }
    }
    None
}

/// Position of the first `=` outside a quoted string.
pub(super) fn unquoted_eq(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '=') => return Some(i),
            _ => {}
        }
    }
    None
}
