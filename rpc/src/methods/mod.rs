//! The methods, by SPDK's names, and the dispatcher that checks the state they may run in.

mod bdev;
mod framework;
mod nvmf;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::control::{Control, RpcState};
use crate::protocol::{code, RpcError};

/// Named parameters as the request gave them (None: no `params`).
pub(crate) type Params = Option<Map<String, Value>>;

type Handler = fn(&mut Control, Params) -> Result<Value, RpcError>;

/// When a method may run (SPDK's `SPDK_RPC_STARTUP` / `SPDK_RPC_RUNTIME` masks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Allowed {
    Startup,
    Runtime,
    Always,
}

impl Allowed {
    fn admits(self, state: RpcState) -> bool {
        matches!(
            (self, state),
            (Allowed::Always, _)
                | (Allowed::Startup, RpcState::Startup)
                | (Allowed::Runtime, RpcState::Runtime)
        )
    }
}

struct Method {
    name: &'static str,
    allowed: Allowed,
    run: Handler,
}

const fn m(name: &'static str, allowed: Allowed, run: Handler) -> Method {
    Method { name, allowed, run }
}

use Allowed::{Always, Runtime, Startup};

#[rustfmt::skip]
const METHODS: &[Method] = &[
    m("rpc_get_methods",                Always,  framework::rpc_get_methods),
    m("spdk_get_version",               Always,  framework::spdk_get_version),
    m("framework_start_init",           Startup, framework::framework_start_init),
    m("framework_wait_init",            Always,  framework::framework_wait_init),
    m("framework_get_subsystems",       Runtime, framework::framework_get_subsystems),
    m("framework_get_config",           Runtime, framework::framework_get_config),
    m("framework_get_reactors",         Runtime, framework::framework_get_reactors),
    m("spdk_kill_instance",             Runtime, framework::spdk_kill_instance),
    m("log_set_flag",                   Always,  framework::log_set_flag),
    m("log_clear_flag",                 Always,  framework::log_clear_flag),
    m("log_get_flags",                  Always,  framework::log_get_flags),
    m("bdev_get_bdevs",                 Runtime, bdev::bdev_get_bdevs),
    m("bdev_malloc_create",             Runtime, bdev::bdev_malloc_create),
    m("bdev_malloc_delete",             Runtime, bdev::bdev_malloc_delete),
    m("bdev_null_create",               Runtime, bdev::bdev_null_create),
    m("bdev_null_delete",               Runtime, bdev::bdev_null_delete),
    m("bdev_wait_for_examine",          Runtime, bdev::bdev_wait_for_examine),
    m("bdev_get_iostat",                Runtime, bdev::bdev_get_iostat),
    m("bdev_nvme_attach_controller",    Runtime, bdev::bdev_nvme_attach_controller),
    m("bdev_nvme_detach_controller",    Runtime, bdev::bdev_nvme_detach_controller),
    m("nvmf_create_transport",          Runtime, nvmf::nvmf_create_transport),
    m("nvmf_get_transports",            Runtime, nvmf::nvmf_get_transports),
    m("nvmf_get_subsystems",            Runtime, nvmf::nvmf_get_subsystems),
    m("nvmf_create_subsystem",          Runtime, nvmf::nvmf_create_subsystem),
    m("nvmf_delete_subsystem",          Runtime, nvmf::nvmf_delete_subsystem),
    m("nvmf_subsystem_add_listener",    Runtime, nvmf::nvmf_subsystem_add_listener),
    m("nvmf_subsystem_remove_listener", Runtime, nvmf::nvmf_subsystem_remove_listener),
    m("nvmf_subsystem_get_listeners",   Runtime, nvmf::nvmf_subsystem_get_listeners),
    m("nvmf_subsystem_add_ns",          Runtime, nvmf::nvmf_subsystem_add_ns),
    m("nvmf_subsystem_remove_ns",       Runtime, nvmf::nvmf_subsystem_remove_ns),
    m("nvmf_subsystem_add_host",        Runtime, nvmf::nvmf_subsystem_add_host),
    m("nvmf_subsystem_remove_host",     Runtime, nvmf::nvmf_subsystem_remove_host),
    m("nvmf_subsystem_allow_any_host",  Runtime, nvmf::nvmf_subsystem_allow_any_host),
    m("nvmf_subsystem_get_controllers", Runtime, nvmf::nvmf_subsystem_get_controllers),
    m("nvmf_subsystem_get_qpairs",      Runtime, nvmf::nvmf_subsystem_get_qpairs),
    m("nvmf_get_stats",                 Runtime, nvmf::nvmf_get_stats),
];

/// Every method name, in registration order.
pub fn method_names() -> impl Iterator<Item = &'static str> {
    METHODS.iter().map(|m| m.name)
}

/// Runs `method` if it exists and may run in the current state.
pub fn dispatch(ctl: &mut Control, method: &str, params: Params) -> Result<Value, RpcError> {
    let Some(m) = METHODS.iter().find(|m| m.name == method) else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("Method not found: {method:?} (rpc_get_methods lists the methods)"),
        ));
    };
    if !m.allowed.admits(ctl.state) {
        return Err(RpcError::new(
            code::INVALID_STATE,
            match ctl.state {
                RpcState::Startup => {
                    "Method may only be called after framework is initialized \
                                      using framework_start_init RPC."
                }
                RpcState::Runtime => {
                    "Method may only be called before framework is \
                                      initialized. Use --wait-for-rpc command line parameter and \
                                      then issue this RPC before the framework_start_init RPC."
                }
            },
        ));
    }
    (m.run)(ctl, params)
}

/// Decodes named parameters into `T`. Unknown names are refused by name (serde's
/// `deny_unknown_fields` on every parameter struct), as are missing ones and wrong types.
pub(crate) fn decode<T: DeserializeOwned>(params: Params) -> Result<T, RpcError> {
    let value = Value::Object(params.unwrap_or_default());
    serde_json::from_value(value).map_err(RpcError::invalid_params)
}

/// For methods that take none: SPDK refuses any.
pub(crate) fn no_params(method: &str, params: Params) -> Result<(), RpcError> {
    match params {
        Some(p) if !p.is_empty() => Err(RpcError::invalid_params(format!(
            "{method} takes no parameters (got {})",
            p.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        ))),
        _ => Ok(()),
    }
}

/// A parameter SPDK's client sends with its default value even when the user asked for
/// nothing: accepted at that value, refused by name otherwise.
pub(crate) fn unsupported<T: PartialEq + std::fmt::Debug>(
    name: &str,
    given: &Option<T>,
    default: T,
    why: &str,
) -> Result<(), RpcError> {
    match given {
        Some(v) if *v != default => Err(RpcError::invalid_params(format!(
            "{name} = {v:?} is not supported by this target ({why})"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
