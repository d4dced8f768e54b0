//! A blocking JSON-RPC client for the Unix socket (`nvmf-tgt rpc`, and the tests).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::framing::{Framer, Scan};
use crate::protocol::RpcError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {error} (is nvmf-tgt running, and is this its -r path?)")]
    Connect { path: String, error: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server answered something that is not JSON-RPC: {0}")]
    Protocol(String),
    #[error("{}", .0.message)]
    Rpc(RpcError),
}

pub struct Client {
    stream: UnixStream,
    next_id: u64,
    framer: Framer,
    held: Vec<u8>,
    /// Bytes read past the end of the last answer.
    extra: Vec<u8>,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|error| ClientError::Connect {
            path: path.display().to_string(),
            error,
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            next_id: 1,
            framer: Framer::default(),
            held: Vec::new(),
            extra: Vec::new(),
        })
    }

    /// Calls `method`; the result, or the server's error.
    pub fn call(
        &mut self,
        method: &str,
        params: Option<Map<String, Value>>,
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(p) = params {
            req["params"] = Value::Object(p);
        }
        self.send_raw(&serde_json::to_vec(&req).expect("a Value serializes"))?;
        let answer = self.read_value()?;
        if answer.get("id") != Some(&json!(id)) {
            return Err(ClientError::Protocol(format!(
                "an answer to another request: {answer}"
            )));
        }
        if let Some(e) = answer.get("error") {
            let code = e.get("code").and_then(Value::as_i64).unwrap_or(0) as i32;
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(ClientError::Rpc(RpcError { code, message }));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("no result: {answer}")))
    }

    /// Sends bytes as they are (tests use it for malformed requests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next complete JSON value the server sends.
    pub fn read_value(&mut self) -> Result<Value, ClientError> {
        let mut buf = [0u8; 64 * 1024];
        let mut pending = std::mem::take(&mut self.extra);
        loop {
            if pending.is_empty() {
                let n = self.stream.read(&mut buf)?;
                if n == 0 {
                    return Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                pending.extend_from_slice(&buf[..n]);
            }
            match self.framer.scan(&pending) {
                Ok(Scan::Value { start, end }) => {
                    self.held.extend_from_slice(&pending[start..end]);
                    self.extra = pending[end..].to_vec();
                    let bytes = std::mem::take(&mut self.held);
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Ok(Scan::Partial { start }) => {
                    if let Some(s) = start {
                        self.held.extend_from_slice(&pending[s..]);
                    }
                    pending.clear();
                }
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
    }
}

/// SPDK's client-side `save_config`: every subsystem's calls, in dependency order.
pub fn save_config(c: &mut Client) -> Result<Value, ClientError> {
    let subsystems = c.call("framework_get_subsystems", None)?;
    let list = subsystems
        .as_array()
        .ok_or_else(|| ClientError::Protocol(format!("framework_get_subsystems: {subsystems}")))?;
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let name = s["subsystem"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol(format!("a subsystem without a name: {s}")))?;
        let mut p = Map::new();
        p.insert("name".into(), Value::from(name));
        let config = c.call("framework_get_config", Some(p))?;
        out.push(json!({"subsystem": name, "config": config}));
    }
    Ok(json!({"subsystems": out}))
}

/// SPDK's client-side `load_config`: `framework_start_init` if the target waits for it
/// (`--wait-for-rpc`), then every call of `saved` in order. The error names the failing call.
pub fn load_config(c: &mut Client, saved: &Value) -> Result<usize, ClientError> {
    let calls = crate::saved::parse(saved).map_err(ClientError::Protocol)?;
    let mut p = Map::new();
    p.insert("current".into(), Value::Bool(true));
    let now = c.call("rpc_get_methods", Some(p))?;
    if now
        .as_array()
        .is_some_and(|m| m.contains(&Value::from("framework_start_init")))
    {
        c.call("framework_start_init", None)?;
    }
    let n = calls.len();
    for call in calls {
        c.call(&call.method, call.params).map_err(|e| match e {
            ClientError::Rpc(r) => ClientError::Rpc(RpcError {
                code: r.code,
                message: format!(
                    "subsystem {}, entry {} ({}): {}",
                    call.subsystem, call.index, call.method, r.message
                ),
            }),
            other => other,
        })?;
    }
    Ok(n)
}

/// Connects once the socket takes connections, trying until `timeout`: what a script that
/// just started the target uses instead of polling (`nvmf-tgt rpc framework_wait_init`).
pub fn connect_when_up(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match Client::connect(path, timeout) {
            Err(ClientError::Connect { error, .. })
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// One call on a fresh connection.
pub fn call(
    path: &Path,
    method: &str,
    params: Option<Map<String, Value>>,
    timeout: Duration,
) -> Result<Value, ClientError> {
    Client::connect(path, timeout)?.call(method, params)
}
