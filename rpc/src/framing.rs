//! Finds where each JSON value ends in an unframed byte stream.
//!
//! SPDK's JSON-RPC clients write requests back to back with no length prefix or delimiter,
//! so the server has to know where a value ends before it parses it. This scanner does that in
//! one pass over each byte, keeping its state across reads, so a request that arrives in many
//! pieces costs O(its length) in total, not a re-parse per piece.
//!
//! Top-level values must be objects or arrays (a JSON-RPC request or batch). Anything else
//! between values, other than whitespace, is a framing error: the stream cannot be resynced.

/// Where the scanner stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between values: only whitespace may come before the next `{` or `[`.
    Between,
    /// Inside a value, outside any string; `depth` open brackets and braces.
    InValue { depth: u32 },
    /// Inside a string inside a value.
    InString { depth: u32 },
    /// Just after a backslash inside a string.
    InEscape { depth: u32 },
}

/// Deepest nesting accepted; serde_json refuses deeper values too (its recursion limit).
pub const MAX_DEPTH: u32 = 128;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("byte {byte:#04x} at stream offset {offset} cannot start a JSON-RPC request (expected {{ or [)")]
    NotAValue { byte: u8, offset: u64 },
    #[error("a closing bracket at stream offset {offset} has no opening one")]
    Unbalanced { offset: u64 },
    #[error("the request nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Scans a stream for the ends of top-level JSON values.
#[derive(Debug)]
pub struct Framer {
    state: State,
    /// Bytes of the stream scanned so far (for error messages).
    offset: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            state: State::Between,
            offset: 0,
        }
    }
}

/// What `Framer::scan` found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A value starts at `start` and ends just before `end` (indices into the slice).
    Value { start: usize, end: usize },
    /// The slice ends inside a value that started at `start` (None: only whitespace).
    Partial { start: Option<usize> },
}

impl Framer {
    /// Scans `bytes` (new bytes, following all bytes given before) up to the end of the first
    /// value that ends in them. Call again with the rest after a `Value`. A value that began in
    /// an earlier call (`Partial { start: Some(_) }`, whose bytes the caller kept) continues at
    /// index 0.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Scan, FramingError> {
        let mut start = None;
        for (i, &b) in bytes.iter().enumerate() {
            let offset = self.offset;
            self.offset += 1;
            self.state = match self.state {
                State::Between => match b {
                    b' ' | b'\t' | b'\r' | b'\n' => State::Between,
                    b'{' | b'[' => {
                        start = Some(i);
                        State::InValue { depth: 1 }
                    }
                    _ => return Err(FramingError::NotAValue { byte: b, offset }),
                },
                State::InValue { depth } => match b {
                    b'"' => State::InString { depth },
                    b'{' | b'[' => {
                        if depth >= MAX_DEPTH {
                            return Err(FramingError::TooDeep);
                        }
                        State::InValue { depth: depth + 1 }
                    }
                    b'}' | b']' => {
                        // depth >= 1 here: InValue is entered with depth 1 and left at 0.
                        if depth == 1 {
                            self.state = State::Between;
                            return Ok(Scan::Value {
                                start: start.unwrap_or(0),
                                end: i + 1,
                            });
                        }
                        State::InValue { depth: depth - 1 }
                    }
                    _ => State::InValue { depth },
                },
                State::InString { depth } => match b {
                    b'\\' => State::InEscape { depth },
                    b'"' => State::InValue { depth },
                    _ => State::InString { depth },
                },
                State::InEscape { depth } => State::InString { depth },
            };
        }
        Ok(Scan::Partial {
            start: match self.state {
                State::Between => None,
                _ => Some(start.unwrap_or(0)),
            },
        })
    }

    /// Whether the scanner is inside a value (bytes are being held for it).
    pub fn in_value(&self) -> bool {
        self.state != State::Between
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `stream` in pieces of `piece` bytes the way the server does (keeping the bytes of
    /// an unfinished value) and returns every value found.
    fn values(stream: &[u8], piece: usize) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut f = Framer::default();
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            let mut rest = chunk;
            loop {
                match f.scan(rest)? {
                    Scan::Value { start, end } => {
                        let mut v = std::mem::take(&mut held);
                        v.extend_from_slice(&rest[start..end]);
                        out.push(v);
                        rest = &rest[end..];
                    }
                    Scan::Partial { start } => {
                        if let Some(s) = start {
                            held.extend_from_slice(&rest[s..]);
                        }
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn back_to_back_requests_are_split_where_they_end() {
        let s = br#"{"a":1}{"b":"}{"} [1,[2]]
 {"c":"\"}"}"#;
        let expect: Vec<&[u8]> = vec![
            br#"{"a":1}"#,
            br#"{"b":"}{"}"#,
            b"[1,[2]]",
            br#"{"c":"\"}"}"#,
        ];
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(values(s, piece).unwrap(), expect, "pieces of {piece}");
        }
    }

    #[test]
    fn garbage_between_values_is_an_error() {
        assert_eq!(
            values(b"{} x", 100),
            Err(FramingError::NotAValue {
                byte: b'x',
                offset: 3
            })
        );
        assert!(matches!(
            values(b"123", 1),
            Err(FramingError::NotAValue { .. })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH as usize + 1);
        assert_eq!(values(deep.as_bytes(), 10), Err(FramingError::TooDeep));
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_DEPTH as usize),
            "]".repeat(MAX_DEPTH as usize)
        );
        assert_eq!(values(ok.as_bytes(), 10).unwrap().len(), 1);
    }

    proptest! {
        /// Any sequence of JSON values, serialized and concatenated with optional whitespace,
        /// splits back into exactly those values whatever the read sizes.
        #[test]
        fn every_value_is_found_whatever_the_read_sizes(
            values_in in proptest::collection::vec(any_json(), 1..6),
            piece in 1usize..64,
            pad in "[ \n\t]{0,3}",
        ) {
            let mut stream = Vec::new();
            let mut expect = Vec::new();
            for v in &values_in {
                let text = serde_json::to_vec(v).unwrap();
                stream.extend_from_slice(&text);
                stream.extend_from_slice(pad.as_bytes());
                expect.push(text);
            }
            prop_assert_eq!(values(&stream, piece).unwrap(), expect);
        }
    }

    /// Objects and arrays of strings (with quotes, backslashes and brackets), numbers and bools.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            r#"[a-z{}\[\]"\\ ]{0,8}"#.prop_map(serde_json::Value::from),
        ];
        let tree = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"{]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            proptest::collection::vec(tree.clone(), 0..3).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,4}", tree, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    }
}
