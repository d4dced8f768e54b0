//! One table of the parsed document, read by key: a table refuses keys it does not have when
//! it is opened, and each lookup checks its value's type. The document keeps the span of
//! every key and value, so each error knows its key and line; no parser message is read.

use std::ops::Range;

use toml_edit::{Item, Key, TableLike, Value};

use super::*;

/// A table of the document: `[global]`, one `[[bdev]]`, an inline `{ ... }`, or the top level.
pub(super) struct Table<'a> {
    doc: &'a Doc<'a>,
    entries: &'a dyn TableLike,
    /// Dotted name, e.g. "subsystem.namespace"; empty for the top level.
    path: String,
    /// An entry of a list of tables (`[[path]]`).
    listed: bool,
    /// Where it starts: its header, its `{`, or its first dotted key.
    span: Range<usize>,
    /// Its keys: any other is refused when it is opened.
    known: &'static [&'static str],
}

/// A value type a key can take.
pub(super) trait Scalar: Sized {
    /// What errors say was expected.
    const WANT: &'static str;
    /// How to write one, for errors.
    const HOW: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl Scalar for String {
    const WANT: &'static str = "a string";
    const HOW: &'static str = "write it in double quotes";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl Scalar for i64 {
    const WANT: &'static str = "an integer";
    const HOW: &'static str = "write a whole number, without quotes";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_integer()
    }
}

impl Scalar for bool {
    const WANT: &'static str = "a boolean";
    const HOW: &'static str = "write true or false, without quotes";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}

impl<'a> Table<'a> {
    /// The top level of the document.
    pub(super) fn top(
        doc: &'a Doc<'a>,
        root: &'a toml_edit::Table,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        Table::open(doc, root, String::new(), false, 0..0, known)
    }

    /// Refuses a key not in `known`, at that key.
    fn open(
        doc: &'a Doc<'a>,
        entries: &'a dyn TableLike,
        path: String,
        listed: bool,
        span: Range<usize>,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let table = Table {
            doc,
            entries,
            path,
            listed,
            span,
            known,
        };
        let unknown = entries.iter().find(|(name, _)| !known.contains(name));
        if let Some((name, item)) = unknown {
            let span = entries
                .key(name)
                .and_then(Key::span)
                .or_else(|| item.span())
                .unwrap_or(table.span());
            return Err(doc.err(span, name, table.unknown_key(name)));
        }
        Ok(table)
    }

    /// Where the table starts.
    pub(super) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// How messages name the table.
    fn header(&self) -> String {
        if self.listed {
            format!("[[{}]]", self.path)
        } else {
            format!("[{}]", self.path)
        }
    }

    fn unknown_key(&self, name: &str) -> String {
        // Case, `_`/`-` and a plural `s` are the usual slips.
        let norm = |k: &str| {
            let k: String = k
                .chars()
                .filter(|c| !matches!(c, '_' | '-'))
                .flat_map(char::to_lowercase)
                .collect();
            k.trim_end_matches('s').to_string()
        };
        let hint = self
            .known
            .iter()
            .find(|k| norm(k) == norm(name))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        let valid: Vec<String> = self.known.iter().map(|k| format!("`{k}`")).collect();
        let place = if self.path.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in {}", self.header())
        };
        format!(
            "unknown key {place}{hint}; valid keys here: {}",
            valid.join(", ")
        )
    }

    /// The key and its item, and where the item is written.
    fn get(&self, key: &str) -> Option<(&'a Item, Range<usize>)> {
        debug_assert!(
            self.known.contains(&key),
            "{key} is not a key of {}",
            self.header()
        );
        let (k, item) = self.entries.get_key_value(key)?;
        // A table of dotted keys has no span of its own: its key's is where it is written.
        let span = item.span().or_else(|| k.span()).unwrap_or(self.span());
        Some((item, span))
    }

    fn type_error(
        &self,
        key: &str,
        span: Range<usize>,
        found: String,
        want: &str,
        how: &str,
    ) -> ConfigError {
        self.doc
            .err(span, key, format!("expected {want}, found {found}; {how}"))
    }

    /// An optional key of type `T`.
    pub(super) fn opt<T: Scalar>(&self, key: &str) -> Result<Option<Spanned<T>>, ConfigError> {
        let Some((item, span)) = self.get(key) else {
            return Ok(None);
        };
        match item.as_value().and_then(T::from_value) {
            Some(v) => Ok(Some(Spanned::new(span, v))),
            None => {
                let found = self.doc.found(item, &span);
                Err(self.type_error(key, span, found, T::WANT, T::HOW))
            }
        }
    }

    /// A required key of type `T`; `example` is a value to suggest when it is missing.
    pub(super) fn req<T: Scalar>(
        &self,
        key: &str,
        example: &str,
    ) -> Result<Spanned<T>, ConfigError> {
        self.opt(key)?.ok_or_else(|| {
            self.doc.err(
                self.span(),
                key,
                format!(
                    "is required in each {} and missing from this one; add it, e.g. \
                     {key} = {example}",
                    self.header()
                ),
            )
        })
    }

    /// An array of strings; empty when the key is absent.
    pub(super) fn strings(&self, key: &str) -> Result<Vec<Spanned<String>>, ConfigError> {
        let Some((item, span)) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Some(array) = item.as_array() else {
            let found = self.doc.found(item, &span);
            let how = format!("write a list in brackets, e.g. {key} = [\"...\", \"...\"]");
            return Err(self.type_error(key, span, found, "an array of strings", &how));
        };
        let mut out = Vec::with_capacity(array.len());
        for (i, v) in array.iter().enumerate() {
            let span = v.span().unwrap_or(span.clone());
            match String::from_value(v) {
                Some(s) => out.push(Spanned::new(span, s)),
                None => {
                    let found = format!("{} (element {})", self.doc.found_value(v, &span), i + 1);
                    return Err(self.type_error(key, span, found, "a string", String::HOW));
                }
            }
        }
        Ok(out)
    }

    /// A table such as `[global]` (a header, dotted keys or inline), read by `read`.
    pub(super) fn section<T>(
        &self,
        key: &str,
        known: &'static [&'static str],
        read: impl Fn(&Table<'a>) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((item, span)) = self.get(key) else {
            return Ok(None);
        };
        let path = self.child(key);
        let Some(entries) = item.as_table_like() else {
            let how = if item.is_array_of_tables() {
                format!("write [{path}], not [[{path}]]: there is one {key} table")
            } else {
                format!("write [{path}] with its keys on the lines below it")
            };
            let found = self.doc.found(item, &span);
            return Err(self.type_error(key, span, found, "a table", &how));
        };
        read(&Table::open(self.doc, entries, path, false, span, known)?).map(Some)
    }

    /// A list of tables such as `[[bdev]]` (or an array of inline tables), each read by `read`
    /// and spanned by where it starts; empty when the key is absent.
    pub(super) fn tables<T>(
        &self,
        key: &str,
        known: &'static [&'static str],
        read: impl Fn(&Table<'a>) -> Result<T, ConfigError>,
    ) -> Result<Vec<Spanned<T>>, ConfigError> {
        let Some((item, span)) = self.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.child(key);
        let mut listed: Vec<(&'a dyn TableLike, Range<usize>)> = Vec::new();
        match item {
            Item::ArrayOfTables(list) => {
                for t in list.iter() {
                    listed.push((t, t.span().unwrap_or(span.clone())));
                }
            }
            Item::Value(Value::Array(array)) => {
                for (i, v) in array.iter().enumerate() {
                    let span = v.span().unwrap_or(span.clone());
                    let Some(t) = v.as_inline_table() else {
                        let found =
                            format!("{} (element {})", self.doc.found_value(v, &span), i + 1);
                        let how = format!("write each {key} as a [[{path}]] table, or {{ ... }}");
                        return Err(self.type_error(key, span, found, "a table", &how));
                    };
                    listed.push((t, span));
                }
            }
            _ => {
                let how = if item.is_table() {
                    format!("write [[{path}]] (a list of tables), not [{path}]")
                } else {
                    format!("write each {key} as a [[{path}]] table with its keys below it")
                };
                let found = self.doc.found(item, &span);
                return Err(self.type_error(key, span, found, "a list of tables", &how));
            }
        }
        listed
            .into_iter()
            .map(|(entries, span)| {
                let table = Table::open(self.doc, entries, path.clone(), true, span, known)?;
                Ok(Spanned::new(table.span(), read(&table)?))
            })
            .collect()
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl Doc<'_> {
    /// What was written at `span`, for type errors: "the string \"512\"", "a table".
    fn found(&self, item: &Item, span: &Range<usize>) -> String {
        match item {
            Item::Value(v) => self.found_value(v, span),
            Item::Table(_) => "a table".to_string(),
            Item::ArrayOfTables(_) => "a list of tables".to_string(),
            Item::None => "nothing".to_string(),
        }
    }

    fn found_value(&self, v: &Value, span: &Range<usize>) -> String {
        match v {
            Value::Array(_) => "an array".to_string(),
            Value::InlineTable(_) => "an inline table".to_string(),
            _ => {
                let text = self.text.get(span.clone()).unwrap_or("").trim();
                let first = text.lines().next().unwrap_or("");
                let shown: String = first.chars().take(40).collect();
                let cut = if shown.len() < text.len() { "..." } else { "" };
                format!("the {} {shown}{cut}", v.type_name())
            }
        }
    }
}
