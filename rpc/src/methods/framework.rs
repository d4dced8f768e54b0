//! rpc_get_methods, spdk_get_version, framework_*, spdk_kill_instance and log flags.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{decode, no_params, Params, METHODS};
use crate::control::{Control, RpcState};
use crate::protocol::RpcError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethods {
    #[serde(default)]
    current: bool,
    /// There are no deprecated aliases to include.
    #[serde(default)]
    #[allow(dead_code)]
    include_aliases: bool,
}

pub(super) fn rpc_get_methods(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    // No aliases exist here, so include_aliases changes nothing.
    let GetMethods { current, .. } = decode(p)?;
    Ok(METHODS
        .iter()
        .filter(|m| !current || m.allowed.admits(ctl.state))
        .map(|m| m.name)
        .collect())
}

pub(super) fn spdk_get_version(_: &mut Control, p: Params) -> Result<Value, RpcError> {
    no_params("spdk_get_version", p)?;
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    Ok(json!({
        "version": format!("nvmf-tgt v{version}"),
        "fields": {"major": major, "minor": minor, "patch": patch, "suffix": ""},
    }))
}

/// Ends `--wait-for-rpc`: the methods that build the target may run from now on. (The
/// reactors and poll groups already run; only configuration waited.)
pub(super) fn framework_start_init(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    no_params("framework_start_init", p)?;
    ctl.state = RpcState::Runtime;
    log::info!("framework_start_init: the target may be configured now");
    Ok(Value::Bool(true))
}

/// Answers at once in `Runtime`. In `Startup` (`--wait-for-rpc`), the state changes only by a
/// later request on the same control thread, so waiting here would wait forever: it answers
/// with the state instead.
pub(super) fn framework_wait_init(ctl: &mut Control, _: Params) -> Result<Value, RpcError> {
    match ctl.state {
        RpcState::Runtime => Ok(Value::Bool(true)),
        RpcState::Startup => Err(RpcError::new(
            crate::protocol::code::INVALID_STATE,
            "the target waits for framework_start_init (started with --wait-for-rpc)",
        )),
    }
}

/// The subsystems `save_config` walks, each after the ones it depends on.
pub(super) const SUBSYSTEMS: &[(&str, &[&str])] = &[("bdev", &[]), ("nvmf", &["bdev"])];

pub(super) fn framework_get_subsystems(_: &mut Control, p: Params) -> Result<Value, RpcError> {
    no_params("framework_get_subsystems", p)?;
    Ok(SUBSYSTEMS
        .iter()
        .map(|(name, deps)| json!({"subsystem": name, "depends_on": deps}))
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetConfig {
    name: String,
    /// Groups of calls as batch arrays: this target writes a flat list either way.
    #[serde(default)]
    #[allow(dead_code)]
    with_batches: bool,
}

pub(super) fn framework_get_config(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let GetConfig { name, .. } = decode(p)?;
    match name.as_str() {
        "bdev" => Ok(Value::Array(super::bdev::config(ctl))),
        "nvmf" => Ok(Value::Array(super::nvmf::config(ctl))),
        _ => Err(RpcError::invalid_params(format!(
            "Subsystem '{name}' not found (this target has: {})",
            SUBSYSTEMS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Reactor time is counted in nanoseconds: a tick is 1 ns.
pub(super) const TICK_RATE_HZ: u64 = 1_000_000_000;

pub(super) fn framework_get_reactors(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    no_params("framework_get_reactors", p)?;
    let h = &ctl.reactors;
    let reactors: Vec<Value> = (0..h.reactor_count())
        .map(|r| {
            let s = h.stats(r);
            let core = h.core(r).unwrap_or(0);
            json!({
                "lcore": core,
                "busy": s.busy_ns,
                "idle": s.idle_ns,
                "in_interrupt": ctl.interrupt_mode,
                "irq": 0,
                "sys": 0,
                "usr": 0,
                "lw_threads": [{
                    "name": format!("nvmf_tgt_poll_group_{r:03}"),
                    "id": r + 1,
                    "cpumask": cpumask(core),
                    "elapsed": s.busy_ns + s.idle_ns,
                }],
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE_HZ, "reactors": reactors}))
}

/// A one-core mask in SPDK's hex form.
fn cpumask(core: usize) -> String {
    let mut digits = vec![b'0'; core / 4 + 1];
    let last = digits.len() - 1;
    digits[last - core / 4] = b"1248"[core % 4];
    String::from_utf8(digits).expect("ASCII")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kill {
    sig_name: String,
}

pub(super) fn spdk_kill_instance(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let Kill { sig_name } = decode(p)?;
    match sig_name.as_str() {
        "SIGINT" | "SIGTERM" | "2" | "15" => {
            log::info!("spdk_kill_instance {sig_name}: shutting down");
            ctl.reactors.request_shutdown();
            Ok(Value::Bool(true))
        }
        "SIGKILL" | "9" => {
            log::warn!("spdk_kill_instance {sig_name}: exiting at once");
            std::process::exit(128 + 9);
        }
        other => Err(RpcError::invalid_params(format!(
            "sig_name {other:?}: this target takes SIGINT or SIGTERM (a clean shutdown) or \
             SIGKILL (exit at once)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flag {
    flag: String,
}

fn set_flag(ctl: &mut Control, p: Params, on: bool) -> Result<Value, RpcError> {
    let Flag { flag } = decode(p)?;
    if ctl.log.set(&flag, on) == 0 {
        let names: Vec<String> = ctl.log.flags().into_iter().map(|(n, _)| n).collect();
        return Err(RpcError::invalid_params(format!(
            "invalid log flag {flag:?} (flags: all, {})",
            names.join(", ")
        )));
    }
    Ok(Value::Bool(true))
}

pub(super) fn log_set_flag(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    set_flag(ctl, p, true)
}

pub(super) fn log_clear_flag(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    set_flag(ctl, p, false)
}

pub(super) fn log_get_flags(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    no_params("log_get_flags", p)?;
    Ok(Value::Object(
        ctl.log
            .flags()
            .into_iter()
            .map(|(n, on)| (n, Value::Bool(on)))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpumasks_are_hex_with_one_bit() {
        assert_eq!(super::cpumask(0), "1");
        assert_eq!(super::cpumask(3), "8");
        assert_eq!(super::cpumask(4), "10");
        assert_eq!(super::cpumask(13), "2000");
    }
}
