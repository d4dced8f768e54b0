//! nvmf_create_transport and nvmf_get_transports.

use serde::Deserialize;
use serde_json::{json, Value};

use nvmf::transport::OptionValue;

use super::{check_tgt_name, trtype_name};
use crate::control::Control;
use crate::methods::{decode, unsupported, Params};
use crate::protocol::{errno, RpcError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetTransports {
    trtype: Option<String>,
    tgt_name: Option<String>,
}

pub(super) fn transport_json(ctl: &Control, index: usize, t: &dyn nvmf::Transport) -> Value {
    let o = &ctl.target.transport_options(index);
    let mut v = json!({
        "trtype": trtype_name(t.name()),
        "max_queue_depth": o.max_queue_depth,
        "max_io_qpairs_per_ctrlr": o.max_queues_per_controller - 1,
        "in_capsule_data_size": o.in_capsule_data_bytes,
        "max_io_size": o.max_io_bytes,
        "max_aq_depth": o.max_admin_queue_depth,
        "acceptor_poll_rate": o.acceptor_poll_period_us,
    });
    for (k, val) in t.options() {
        v[k] = match val {
            OptionValue::Bool(b) => json!(b),
            OptionValue::Number(n) => json!(n),
        };
    }
    v
}

pub(in crate::methods) fn nvmf_get_transports(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let GetTransports { trtype, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let all: Vec<Value> = ctl
        .target
        .transports()
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            trtype
                .as_ref()
                .is_none_or(|want| want.eq_ignore_ascii_case(t.name()))
        })
        .map(|(i, t)| transport_json(ctl, i, t.as_ref()))
        .collect();
    if let Some(want) = trtype {
        if all.is_empty() {
            return Err(RpcError::errno(
                errno::ENODEV,
                format!("No such device: no {want} transport"),
            ));
        }
    }
    Ok(Value::Array(all))
}

/// nvmf_create_transport's parameters: SPDK's, all of which its client may send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransport {
    trtype: String,
    tgt_name: Option<String>,
    max_queue_depth: Option<u64>,
    max_io_qpairs_per_ctrlr: Option<u64>,
    in_capsule_data_size: Option<u64>,
    max_io_size: Option<u64>,
    io_unit_size: Option<u64>,
    max_aq_depth: Option<u64>,
    num_shared_buffers: Option<u64>,
    buf_cache_size: Option<u64>,
    acceptor_poll_rate: Option<u64>,
    c2h_success: Option<bool>,
    no_srq: Option<bool>,
    max_srq_depth: Option<u64>,
    zcopy: Option<bool>,
    dif_insert_or_strip: Option<bool>,
    no_wr_batching: Option<bool>,
    disable_mappable_bar0: Option<bool>,
    disable_adaptive_irq: Option<bool>,
    disable_shadow_doorbells: Option<bool>,
    disable_command_passthru: Option<bool>,
    abort_timeout_sec: Option<u64>,
    sock_priority: Option<u64>,
}

/// The transport names this target knows, by SPDK's spelling.
pub(super) fn our_trtype(trtype: &str) -> Result<&'static str, RpcError> {
    match trtype.to_ascii_lowercase().as_str() {
        "tcp" => Ok("tcp"),
        "rdma" => Ok("rdma"),
        // In-process hosts (tests and benchmarks).
        "loopback" => Ok("loopback"),
        _ => Err(RpcError::invalid_params(format!(
            "Invalid transport type '{trtype}' (this target has TCP and RDMA)"
        ))),
    }
}

/// Creates a transport with the options asked for (the rest from the config's
/// `[transport]`); one that exists is taken again only with the options it has, so a config
/// saved from this target loads back.
pub(in crate::methods) fn nvmf_create_transport(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let c: CreateTransport = decode(p)?;
    check_tgt_name(&c.tgt_name)?;
    unsupported("zcopy", &c.zcopy, false, "no zero-copy bdev API")?;
    unsupported(
        "dif_insert_or_strip",
        &c.dif_insert_or_strip,
        false,
        "no protection information",
    )?;
    for (name, v) in [
        ("no_wr_batching", c.no_wr_batching),
        ("disable_mappable_bar0", c.disable_mappable_bar0),
        ("disable_adaptive_irq", c.disable_adaptive_irq),
        ("disable_shadow_doorbells", c.disable_shadow_doorbells),
        ("disable_command_passthru", c.disable_command_passthru),
    ] {
        unsupported(name, &v, false, "not an option of this target's transports")?;
    }
    unsupported("sock_priority", &c.sock_priority, 0, "no socket priority")?;
    let asked: [(&str, Option<Value>); 14] = [
        ("max_queue_depth", c.max_queue_depth.map(Value::from)),
        (
            "max_io_qpairs_per_ctrlr",
            c.max_io_qpairs_per_ctrlr.map(Value::from),
        ),
        (
            "in_capsule_data_size",
            c.in_capsule_data_size.map(Value::from),
        ),
        ("max_io_size", c.max_io_size.map(Value::from)),
        ("io_unit_size", c.io_unit_size.map(Value::from)),
        ("max_aq_depth", c.max_aq_depth.map(Value::from)),
        ("num_shared_buffers", c.num_shared_buffers.map(Value::from)),
        ("buf_cache_size", c.buf_cache_size.map(Value::from)),
        ("acceptor_poll_rate", c.acceptor_poll_rate.map(Value::from)),
        ("c2h_success", c.c2h_success.map(Value::from)),
        ("no_srq", c.no_srq.map(Value::from)),
        ("max_srq_depth", c.max_srq_depth.map(Value::from)),
        ("abort_timeout_sec", c.abort_timeout_sec.map(Value::from)),
        ("sock_priority", c.sock_priority.map(Value::from)),
    ];
    let name = our_trtype(&c.trtype)?;
    if let Some(t) = ctl.target.transport_index(name) {
        return take_existing(ctl, t, &asked);
    }
    let mut cfg = ctl.transport_defaults;
    let o = &mut cfg.options;
    let narrow = |key: &str, v: u64, max: u64| -> Result<u64, RpcError> {
        if v > max {
            return Err(RpcError::invalid_params(format!(
                "{key} {v} is out of range (at most {max})"
            )));
        }
        Ok(v)
    };
    if let Some(v) = c.max_queue_depth {
        o.max_queue_depth = narrow("max_queue_depth", v, u16::MAX.into())? as u16;
    }
    if let Some(v) = c.max_io_qpairs_per_ctrlr {
        o.max_queues_per_controller = narrow("max_io_qpairs_per_ctrlr", v, 1023)? as u16 + 1;
    }
    if let Some(v) = c.in_capsule_data_size {
        o.in_capsule_data_bytes = narrow("in_capsule_data_size", v, u32::MAX.into())? as u32;
    }
    if let Some(v) = c.max_io_size {
        o.max_io_bytes = narrow("max_io_size", v, u32::MAX.into())? as u32;
    }
    if let Some(v) = c.max_aq_depth {
        o.max_admin_queue_depth = narrow("max_aq_depth", v, u16::MAX.into())? as u16;
    }
    if let Some(v) = c.acceptor_poll_rate {
        // SPDK's acceptor_poll_rate is a period in microseconds too.
        o.acceptor_poll_period_us = narrow("acceptor_poll_rate", v, 1_000_000)?;
    }
    if let Some(v) = c.io_unit_size {
        cfg.io_unit_bytes = narrow("io_unit_size", v, u32::MAX.into())? as u32;
    }
    if let Some(v) = c.num_shared_buffers {
        cfg.num_shared_buffers = narrow("num_shared_buffers", v, u32::MAX.into())? as usize;
    }
    if let Some(v) = c.c2h_success {
        cfg.c2h_success = v;
    }
    if let Some(v) = c.no_srq {
        cfg.srq = !v;
    }
    if let Some(v) = c.max_srq_depth {
        cfg.srq_depth = narrow("max_srq_depth", v, u32::MAX.into())? as u32;
    }
    unsupported(
        "buf_cache_size",
        &c.buf_cache_size,
        u64::from(u32::MAX),
        "per-reactor caches are sized from num_shared_buffers",
    )?;
    unsupported(
        "abort_timeout_sec",
        &c.abort_timeout_sec,
        1,
        "no abort timeout",
    )?;
    if c.acceptor_poll_rate.is_some()
        && o.acceptor_poll_period_us != ctl.target.options.acceptor_poll_period_us
    {
        return Err(RpcError::invalid_params(
            "acceptor_poll_rate: one acceptor serves every transport here; set it with \
             [transport] acceptor_poll_period_us in the config",
        ));
    }
    cfg.check()
        .map_err(|(key, msg)| RpcError::invalid_params(format!("{key}: {msg}")))?;
    let transport = crate::transports::build_transport(name, &cfg, ctl.numa_node).map_err(|e| {
        RpcError::internal(format!("Transport type '{}' create failed: {e}", c.trtype))
    })?;
    ctl.target
        .add_transport(transport, cfg.options)
        .map_err(|e| RpcError::internal(format!("Failed to add transport to tgt: {e}")))?;
    Ok(Value::Bool(true))
}

/// nvmf_create_transport for a transport that exists: only with the options it has.
fn take_existing(
    ctl: &Control,
    t: usize,
    asked: &[(&str, Option<Value>)],
) -> Result<Value, RpcError> {
    let transport = ctl.target.transport(t);
    let have = transport_json(ctl, t, transport.as_ref());
    for (name, want) in asked {
        let Some(want) = want else { continue };
        match have.get(*name) {
            Some(v) if v == want => {}
            // Options the transport does not have: only the defaults SPDK's client sends.
            None if matches!(
                (*name, want),
                ("c2h_success", Value::Bool(true)) | ("no_srq", Value::Bool(false))
            ) => {}
            current => {
                return Err(RpcError::internal(format!(
                    "Transport type '{}' already exists, with {name} = {}, not {want}",
                    trtype_name(transport.name()),
                    current.map_or("none".to_string(), Value::to_string)
                )))
            }
        }
    }
    Ok(Value::Bool(true))
}
