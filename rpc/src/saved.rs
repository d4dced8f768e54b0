//! SPDK's saved configuration (`save_config` output, `--json FILE`): subsystems in
//! dependency order, each a list of method calls, replayed through the same methods as RPC.

use std::path::Path;

use serde_json::{Map, Value};

use crate::control::{Control, RpcState};
use crate::methods::dispatch;

/// One call of a saved configuration, with where it came from for errors.
#[derive(Debug, PartialEq)]
pub struct SavedCall {
    pub subsystem: String,
    /// Position in the subsystem's `config` list (from 0; batch members share theirs).
    pub index: usize,
    pub method: String,
    pub params: Option<Map<String, Value>>,
}

/// Reads a saved configuration file; the error names the file and what is wrong in it.
pub fn read(path: &Path) -> Result<Vec<SavedCall>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    parse(&value).map_err(|e| format!("{}: {e}", path.display()))
}

/// The calls of a saved configuration, in order.
pub fn parse(value: &Value) -> Result<Vec<SavedCall>, String> {
    let subsystems = value
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or("no \"subsystems\" array (expected save_config's output)")?;
    let mut calls = Vec::new();
    for (i, s) in subsystems.iter().enumerate() {
        let name = s
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("subsystems[{i}] has no \"subsystem\" name"))?;
        let entries = match s.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("subsystem {name}: \"config\" is not a list")),
        };
        for (index, entry) in entries.iter().enumerate() {
            // A nested list is a batch (save_config --with-batches): its calls in order.
            let members: Vec<&Value> = match entry {
                Value::Array(batch) => batch.iter().collect(),
                one => vec![one],
            };
            for m in members {
                let method = m
                    .get("method")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("subsystem {name}, entry {index}: no \"method\""))?;
                let params = match m.get("params") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(p)) => Some(p.clone()),
                    Some(_) => {
                        return Err(format!(
                        "subsystem {name}, entry {index} ({method}): \"params\" is not an object"
                    ))
                    }
                };
                calls.push(SavedCall {
                    subsystem: name.to_string(),
                    index,
                    method: method.to_string(),
                    params,
                });
            }
        }
    }
    Ok(calls)
}

/// Runs every call, as SPDK's app does with `--json`; stops at the first that fails, naming
/// it. The target is then serving (`Runtime`).
pub fn replay(ctl: &mut Control, calls: Vec<SavedCall>) -> Result<usize, String> {
    ctl.state = RpcState::Runtime;
    let n = calls.len();
    for c in calls {
        dispatch(ctl, &c.method, c.params).map_err(|e| {
            format!(
                "subsystem {}, entry {} ({}): {} (error {})",
                c.subsystem, c.index, c.method, e.message, e.code
            )
        })?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_come_out_in_order_with_batches_flattened() {
        let v = json!({"subsystems": [
            {"subsystem": "keyring", "config": null},
            {"subsystem": "bdev", "config": [
                {"method": "bdev_malloc_create", "params": {"name": "M", "num_blocks": 8, "block_size": 512}},
                [{"method": "a"}, {"method": "b", "params": null}],
                {"method": "bdev_wait_for_examine"}]},
            {"subsystem": "nvmf", "config": []}]});
        let calls = parse(&v).unwrap();
        let names: Vec<(&str, usize)> =
            calls.iter().map(|c| (c.method.as_str(), c.index)).collect();
        assert_eq!(
            names,
            [
                ("bdev_malloc_create", 0),
                ("a", 1),
                ("b", 1),
                ("bdev_wait_for_examine", 2)
            ]
        );
        assert!(calls[0].params.is_some() && calls[2].params.is_none());
    }

    #[test]
    fn malformed_files_are_named() {
        for (v, needle) in [
            (json!({}), "no \"subsystems\""),
            (
                json!({"subsystems": [{"config": []}]}),
                "no \"subsystem\" name",
            ),
            (
                json!({"subsystems": [{"subsystem": "bdev", "config": {}}]}),
                "not a list",
            ),
            (
                json!({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]}),
                "entry 0: no \"method\"",
            ),
            (
                json!({"subsystems": [{"subsystem": "bdev", "config": [{"method": "m", "params": 3}]}]}),
                "not an object",
            ),
        ] {
            let e = parse(&v).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
