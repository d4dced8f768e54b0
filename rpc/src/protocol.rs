//! JSON-RPC 2.0 as SPDK speaks it: one request object (or a batch array) per framed value,
//! one response object per request that has an `id`.

use serde_json::{json, Map, Value};

/// Error codes: JSON-RPC 2.0's, plus SPDK's `-1` for a method called in the wrong state.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// SPDK_JSONRPC_ERROR_INVALID_STATE.
    pub const INVALID_STATE: i32 = -1;
}

/// An error answer: `{"code": .., "message": ..}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (JSON-RPC error {code})")]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// `-32602`, with what is wrong.
    pub fn invalid_params(what: impl std::fmt::Display) -> RpcError {
        RpcError::new(code::INVALID_PARAMS, format!("Invalid parameters: {what}"))
    }

    /// A failed operation, as SPDK answers it: the negative errno and what happened.
    pub fn errno(errno: i32, message: impl Into<String>) -> RpcError {
        RpcError::new(-errno.abs(), message)
    }

    pub fn internal(what: impl std::fmt::Display) -> RpcError {
        RpcError::new(code::INTERNAL_ERROR, format!("Internal error: {what}"))
    }
}

/// errno values the methods answer with (as SPDK does, negated).
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EPERM: i32 = 1;
    pub const EALREADY: i32 = 114;
    pub const ENOTSUP: i32 = 95;
}

/// One request, checked against JSON-RPC 2.0.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// None: a notification, which gets no response.
    pub id: Option<Value>,
    pub method: String,
    /// An object (SPDK's methods take named parameters only) or absent.
    pub params: Option<Map<String, Value>>,
}

/// A request, or the error to answer a malformed one with (and the id to answer it under).
pub type Checked = Result<Request, (Value, RpcError)>;

/// What one framed value held.
#[derive(Debug)]
pub enum Incoming {
    Single(Checked),
    /// A batch array: its requests in order (JSON-RPC 2.0 answers them in one array).
    Batch(Vec<Checked>),
}

/// Most requests in one batch; a longer batch is refused whole.
pub const MAX_BATCH: usize = 1024;

/// Decodes one framed value (see `framing`).
pub fn decode(bytes: &[u8]) -> Incoming {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Incoming::Single(Err((
                Value::Null,
                RpcError::new(code::PARSE_ERROR, format!("Parse error: {e}")),
            )))
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Incoming::Single(Err((
            Value::Null,
            RpcError::new(code::INVALID_REQUEST, "Invalid request: empty batch"),
        ))),
        Value::Array(items) if items.len() > MAX_BATCH => Incoming::Single(Err((
            Value::Null,
            RpcError::new(
                code::INVALID_REQUEST,
                format!(
                    "Invalid request: a batch of {} requests (at most {MAX_BATCH})",
                    items.len()
                ),
            ),
        ))),
        Value::Array(items) => Incoming::Batch(items.into_iter().map(check).collect()),
        other => Incoming::Single(check(other)),
    }
}

fn check(value: Value) -> Checked {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::new(code::INVALID_REQUEST, "Invalid request: not an object"),
        ));
    };
    let id = obj.remove("id");
    let id_ok = matches!(
        &id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    // An id of the wrong type cannot be echoed: that error goes out under null.
    let answer_id = id.clone().filter(|_| id_ok).unwrap_or(Value::Null);
    let invalid = |msg: &str| {
        Err((
            answer_id.clone(),
            RpcError::new(code::INVALID_REQUEST, format!("Invalid request: {msg}")),
        ))
    };
    if !id_ok {
        return invalid("\"id\" must be a number, a string or null");
    }
    // Optional, as SPDK's server has it; when present it must say 2.0.
    if obj
        .get("jsonrpc")
        .is_some_and(|v| v.as_str() != Some("2.0"))
    {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return invalid("\"method\" must be a string"),
        None => return invalid("no \"method\""),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => {
            return Err((
                answer_id,
                RpcError::invalid_params("\"params\" must be an object of named parameters"),
            ))
        }
    };
    obj.remove("jsonrpc");
    if let Some(key) = obj.keys().next() {
        return invalid(&format!("unknown member {key:?}"));
    }
    Ok(Request { id, method, params })
}

/// The response object for `id`.
pub fn response(id: Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message},
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Checked {
        match decode(text.as_bytes()) {
            Incoming::Single(c) => c,
            Incoming::Batch(_) => panic!("a batch"),
        }
    }

    fn error_code(text: &str) -> (Value, i32) {
        let (id, e) = single(text).expect_err("refused");
        (id, e.code)
    }

    #[test]
    fn a_request_decodes_with_its_id_and_params() {
        let r = single(r#"{"jsonrpc":"2.0","method":"m","id":7,"params":{"a":1}}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "m");
        assert_eq!(r.params.unwrap()["a"], json!(1));
        let r = single(r#"{"jsonrpc":"2.0","method":"m"}"#).unwrap();
        assert_eq!((r.id, r.params), (None, None), "a notification");
        let r = single(r#"{"jsonrpc":"2.0","method":"m","id":"x","params":null}"#).unwrap();
        assert_eq!(r.id, Some(json!("x")));
    }

    #[test]
    fn malformed_requests_get_the_codes_the_spec_names() {
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","method":}"#).1,
            code::PARSE_ERROR
        );
        assert_eq!(error_code("[]").1, code::INVALID_REQUEST);
        assert!(
            single(r#"{"method":"m","id":1}"#).is_ok(),
            "jsonrpc is optional, as in SPDK's server"
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"1.0","method":"m","id":1}"#).1,
            code::INVALID_REQUEST
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","method":5,"id":1}"#).1,
            code::INVALID_REQUEST
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","id":1}"#).1,
            code::INVALID_REQUEST
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","method":"m","id":{"a":1}}"#),
            (Value::Null, code::INVALID_REQUEST)
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","method":"m","id":1,"params":[1,2]}"#),
            (json!(1), code::INVALID_PARAMS)
        );
        assert_eq!(
            error_code(r#"{"jsonrpc":"2.0","method":"m","id":1,"extra":true}"#).1,
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn a_batch_decodes_each_member() {
        let Incoming::Batch(items) = decode(
            br#"[{"jsonrpc":"2.0","method":"a","id":1}, 5, {"jsonrpc":"2.0","method":"b"}]"#,
        ) else {
            panic!("not a batch")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().method, "a");
        assert_eq!(items[1].as_ref().unwrap_err().1.code, code::INVALID_REQUEST);
        assert_eq!(items[2].as_ref().unwrap().id, None);
        let many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        assert!(matches!(decode(many.as_bytes()), Incoming::Single(Err(_))));
    }

    #[test]
    fn responses_carry_result_or_error() {
        assert_eq!(
            response(json!(3), Ok(json!(true))),
            json!({"jsonrpc":"2.0","id":3,"result":true})
        );
        assert_eq!(
            response(
                Value::Null,
                Err(RpcError::invalid_params("missing field `nqn`"))
            ),
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"Invalid parameters: missing field `nqn`"}})
        );
    }
}
