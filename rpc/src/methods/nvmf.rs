//! nvmf_* methods, and the nvmf part of the saved config.

use serde::Deserialize;
use serde_json::{json, Value};

use nvme_spec::log::adrfam;
use nvmf::transport::OptionValue;
use nvmf::{ListenAddress, NamespaceConfig, Subsystem, SubsystemConfig};

use super::{decode, unsupported, Params};
use crate::control::Control;
use crate::protocol::{errno, RpcError};

/// SPDK's spelling of a transport type ("TCP", "RDMA").
fn trtype_name(trtype: &str) -> String {
    trtype.to_ascii_uppercase()
}

fn adrfam_name(l: &ListenAddress) -> &'static str {
    match l.adrfam_code() {
        adrfam::IPV4 => "IPv4",
        adrfam::IPV6 => "IPv6",
        _ => "INTRA_HOST",
    }
}

fn listener_json(l: &ListenAddress) -> Value {
    json!({
        "trtype": trtype_name(&l.trtype),
        "adrfam": adrfam_name(l),
        "traddr": l.traddr,
        "trsvcid": l.trsvcid,
    })
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Parses `n` hex digits (dashes allowed, as in a UUID) into bytes.
fn parse_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], RpcError> {
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    let bad = || RpcError::invalid_params(format!("{what} {s:?} is not {} hex digits", N * 2));
    if digits.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn subsystem_json(s: &Subsystem) -> Value {
    let listeners: Vec<Value> = s.listeners().iter().map(listener_json).collect();
    let hosts: Vec<Value> = s.hosts().into_iter().map(|h| json!({"nqn": h})).collect();
    if s.is_discovery() {
        return json!({
            "nqn": s.nqn, "subtype": "Discovery", "listen_addresses": listeners,
            "allow_any_host": true, "hosts": hosts,
        });
    }
    let namespaces: Vec<Value> = s
        .namespaces()
        .iter()
        .map(|ns| {
            let name = &ns.bdev.info().name;
            json!({
                "nsid": ns.nsid, "bdev_name": name, "name": name,
                "nguid": hex_upper(&ns.nguid), "uuid": uuid_string(&ns.uuid),
            })
        })
        .collect();
    json!({
        "nqn": s.nqn, "subtype": "NVMe", "listen_addresses": listeners,
        "allow_any_host": s.allow_any_host(), "hosts": hosts,
        "serial_number": s.serial, "model_number": s.model,
        "max_namespaces": s.max_namespaces, "min_cntlid": 1, "max_cntlid": nvme_cntlid_max(),
        "namespaces": namespaces,
    })
}

fn nvme_cntlid_max() -> u16 {
    0xFFEF
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
    tgt_name: Option<String>,
}

/// This target has one NVMe-oF target; SPDK's `tgt_name` names it when several exist.
fn check_tgt_name(tgt_name: &Option<String>) -> Result<(), RpcError> {
    match tgt_name {
        Some(n) if n != "nvmf_tgt" => Err(RpcError::invalid_params(format!(
            "tgt_name {n:?}: this process has one target, \"nvmf_tgt\""
        ))),
        _ => Ok(()),
    }
}

pub(super) fn nvmf_get_subsystems(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let GetSubsystems { nqn, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let subs = ctl.target.subsystems();
    match nqn {
        Some(nqn) => subs
            .iter()
            .find(|s| s.nqn == nqn)
            .map(|s| Value::Array(vec![subsystem_json(s)]))
            .ok_or_else(|| {
                RpcError::errno(
                    errno::ENODEV,
                    format!("No such device: no subsystem {nqn:?}"),
                )
            }),
        None => Ok(subs.iter().map(|s| subsystem_json(s)).collect()),
    }
}

/// The subsystem named `nqn`, or SPDK's answer for a missing one.
fn subsystem(ctl: &Control, nqn: &str) -> Result<std::sync::Arc<Subsystem>, RpcError> {
    ctl.target
        .find_subsystem(nqn)
        .ok_or_else(|| RpcError::invalid_params(format!("no subsystem {nqn:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetTransports {
    trtype: Option<String>,
    tgt_name: Option<String>,
}

fn transport_json(ctl: &Control, index: usize, t: &dyn nvmf::Transport) -> Value {
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

pub(super) fn nvmf_get_transports(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
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
fn our_trtype(trtype: &str) -> Result<&'static str, RpcError> {
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
pub(super) fn nvmf_create_transport(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    tgt_name: Option<String>,
    serial_number: Option<String>,
    model_number: Option<String>,
    max_namespaces: Option<u32>,
    #[serde(default)]
    allow_any_host: bool,
    ana_reporting: Option<bool>,
    min_cntlid: Option<u16>,
    max_cntlid: Option<u16>,
    max_discard_size_kib: Option<u64>,
    max_write_zeroes_size_kib: Option<u64>,
    passthrough: Option<bool>,
    enable_nssr: Option<bool>,
}

/// SPDK's default serial number.
const DEFAULT_SERIAL: &str = "00000000000000000000";

pub(super) fn nvmf_create_subsystem(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let c: CreateSubsystem = decode(p)?;
    check_tgt_name(&c.tgt_name)?;
    unsupported("ana_reporting", &c.ana_reporting, false, "no ANA groups")?;
    unsupported(
        "passthrough",
        &c.passthrough,
        false,
        "no admin command passthrough",
    )?;
    unsupported(
        "enable_nssr",
        &c.enable_nssr,
        false,
        "no NVM subsystem reset",
    )?;
    unsupported("min_cntlid", &c.min_cntlid, 1, "controller IDs start at 1")?;
    unsupported(
        "max_cntlid",
        &c.max_cntlid,
        nvme_cntlid_max(),
        "controller IDs go to 0xFFEF",
    )?;
    unsupported(
        "max_discard_size_kib",
        &c.max_discard_size_kib,
        0,
        "no discard limit",
    )?;
    unsupported(
        "max_write_zeroes_size_kib",
        &c.max_write_zeroes_size_kib,
        0,
        "no write-zeroes limit",
    )?;
    let mut cfg = SubsystemConfig::new(&c.nqn);
    cfg.serial = c.serial_number.unwrap_or_else(|| DEFAULT_SERIAL.into());
    if let Some(m) = c.model_number {
        cfg.model = m;
    }
    if let Some(n) = c.max_namespaces.filter(|&n| n != 0) {
        cfg.max_namespaces = n;
    }
    cfg.allow_any_host = c.allow_any_host;
    ctl.target
        .add_subsystem(&cfg)
        .map_err(|e| RpcError::internal(format!("Unable to create subsystem {}: {e}", c.nqn)))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByNqn {
    nqn: String,
    tgt_name: Option<String>,
}

pub(super) fn nvmf_subsystem_get_listeners(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let ByNqn { nqn, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let sub = subsystem(ctl, &nqn)?;
    Ok(sub
        .listeners()
        .iter()
        .map(|l| json!({"address": listener_json(l)}))
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    tgt_name: Option<String>,
    namespace: NsParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParams {
    bdev_name: String,
    #[serde(default)]
    nsid: u32,
    nguid: Option<String>,
    uuid: Option<String>,
    eui64: Option<String>,
    ptpl_file: Option<String>,
    anagrpid: Option<u32>,
    no_auto_visible: Option<bool>,
    hide_metadata: Option<bool>,
}

pub(super) fn nvmf_subsystem_add_ns(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let AddNs {
        nqn,
        tgt_name,
        namespace: ns,
    } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    unsupported(
        "namespace.eui64",
        &ns.eui64,
        String::new(),
        "no EUI-64 identifiers",
    )?;
    unsupported(
        "namespace.ptpl_file",
        &ns.ptpl_file,
        String::new(),
        "no reservations",
    )?;
    unsupported("namespace.anagrpid", &ns.anagrpid, 0, "no ANA groups")?;
    unsupported(
        "namespace.no_auto_visible",
        &ns.no_auto_visible,
        false,
        "every namespace is visible to every allowed host",
    )?;
    unsupported(
        "namespace.hide_metadata",
        &ns.hide_metadata,
        false,
        "no metadata",
    )?;
    let sub = subsystem(ctl, &nqn)?;
    let bdev = ctl
        .bdevs
        .get(&ns.bdev_name)
        .ok_or_else(|| RpcError::invalid_params(format!("no bdev named {:?}", ns.bdev_name)))?
        .bdev
        .clone();
    let cfg = NamespaceConfig {
        nsid: ns.nsid,
        bdev,
        nguid: ns
            .nguid
            .as_deref()
            .map(|s| parse_hex::<16>("namespace.nguid", s))
            .transpose()?,
        uuid: ns
            .uuid
            .as_deref()
            .map(|s| parse_hex::<16>("namespace.uuid", s))
            .transpose()?,
    };
    let nsid = ctl
        .target
        .add_namespace(&sub.nqn, &cfg)
        .map_err(|e| RpcError::invalid_params(format!("cannot add the namespace: {e}")))?;
    Ok(json!(nsid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    tgt_name: Option<String>,
    nsid: u32,
}

pub(super) fn nvmf_subsystem_remove_ns(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let RemoveNs {
        nqn,
        tgt_name,
        nsid,
    } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    subsystem(ctl, &nqn)?;
    ctl.target
        .remove_namespace(&nqn, nsid)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHost {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
    psk: Option<String>,
}

pub(super) fn nvmf_subsystem_add_host(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let a: AddHost = decode(p)?;
    check_tgt_name(&a.tgt_name)?;
    let none = String::new();
    unsupported(
        "dhchap_key",
        &a.dhchap_key,
        none.clone(),
        "no in-band authentication",
    )?;
    unsupported(
        "dhchap_ctrlr_key",
        &a.dhchap_ctrlr_key,
        none.clone(),
        "no in-band authentication",
    )?;
    unsupported("psk", &a.psk, none, "no TLS")?;
    subsystem(ctl, &a.nqn)?;
    ctl.target
        .allow_host(&a.nqn, &a.host)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAnyHost {
    nqn: String,
    tgt_name: Option<String>,
    allow_any_host: bool,
}

pub(super) fn nvmf_subsystem_allow_any_host(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let a: AllowAnyHost = decode(p)?;
    check_tgt_name(&a.tgt_name)?;
    subsystem(ctl, &a.nqn)?;
    ctl.target
        .set_allow_any_host(&a.nqn, a.allow_any_host)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(Value::Bool(true))
}

/// A listen address as SPDK's methods give it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenParams {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<String>,
}

impl ListenParams {
    fn address(&self) -> Result<ListenAddress, RpcError> {
        let trtype = our_trtype(&self.trtype)?;
        let l = ListenAddress::new(
            trtype,
            &self.traddr,
            self.trsvcid.as_deref().unwrap_or("4420"),
        );
        if let Some(fam) = &self.adrfam {
            let want = match fam.to_ascii_lowercase().as_str() {
                "ipv4" => adrfam::IPV4,
                "ipv6" => adrfam::IPV6,
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "listen_address.adrfam {fam:?}: use IPv4 or IPv6"
                    )))
                }
            };
            if l.adrfam_code() != want {
                return Err(RpcError::invalid_params(format!(
                    "listen_address.adrfam {fam} does not match traddr {:?}",
                    self.traddr
                )));
            }
        }
        l.socket_addr()
            .map_err(|e| RpcError::invalid_params(format!("listen_address: {e}")))?;
        Ok(l)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddListener {
    nqn: String,
    tgt_name: Option<String>,
    listen_address: ListenParams,
    secure_channel: Option<bool>,
    ana_state: Option<String>,
    sock_impl: Option<String>,
    numa_id: Option<i64>,
}

pub(super) fn nvmf_subsystem_add_listener(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let a: AddListener = decode(p)?;
    check_tgt_name(&a.tgt_name)?;
    unsupported("secure_channel", &a.secure_channel, false, "no TLS")?;
    unsupported(
        "ana_state",
        &a.ana_state,
        "optimized".to_string(),
        "no ANA groups",
    )?;
    unsupported(
        "sock_impl",
        &a.sock_impl,
        "posix".to_string(),
        "sockets are the kernel's",
    )?;
    unsupported(
        "numa_id",
        &a.numa_id,
        -1,
        "listeners are not placed by NUMA node",
    )?;
    let addr = a.listen_address.address()?;
    subsystem(ctl, &a.nqn)?;
    ctl.target.add_listener(&a.nqn, &addr).map_err(|e| {
        let hint = if ctl.target.transport_index(&addr.trtype).is_none() {
            format!(
                " (create the transport first: nvmf_create_transport -t {})",
                addr.trtype
            )
        } else {
            String::new()
        };
        RpcError::invalid_params(format!("{e}{hint}"))
    })?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveListener {
    nqn: String,
    tgt_name: Option<String>,
    listen_address: ListenParams,
}

pub(super) fn nvmf_subsystem_remove_listener(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let r: RemoveListener = decode(p)?;
    check_tgt_name(&r.tgt_name)?;
    let addr = r.listen_address.address()?;
    subsystem(ctl, &r.nqn)?;
    ctl.target
        .remove_listener(&r.nqn, &addr)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveHost {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    /// How long to wait for the host's connections to go: they are gone when this returns.
    #[allow(dead_code)]
    timeout_ms: Option<u64>,
}

pub(super) fn nvmf_subsystem_remove_host(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let r: RemoveHost = decode(p)?;
    check_tgt_name(&r.tgt_name)?;
    subsystem(ctl, &r.nqn)?;
    ctl.target
        .remove_host(&r.nqn, &r.host)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(Value::Bool(true))
}

pub(super) fn nvmf_delete_subsystem(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let ByNqn { nqn, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    subsystem(ctl, &nqn)?;
    ctl.target
        .delete_subsystem(&nqn)
        .map_err(|e| RpcError::internal(format!("Subsystem destruction failed: {e}")))?;
    Ok(Value::Bool(true))
}

fn poll_group_name(reactor: usize) -> String {
    format!("nvmf_tgt_poll_group_{reactor:03}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByTarget {
    tgt_name: Option<String>,
}

pub(super) fn nvmf_get_stats(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let ByTarget { tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let stats = ctl
        .target
        .poll_group_stats()
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let groups: Vec<Value> = stats
        .iter()
        .map(|s| {
            let transports: Vec<Value> = s
                .transports
                .iter()
                .map(|t| json!({"trtype": trtype_name(t)}))
                .collect();
            json!({
                "name": poll_group_name(s.reactor),
                "admin_qpairs": s.admin_qpairs,
                "io_qpairs": s.io_qpairs,
                "current_admin_qpairs": s.current_admin_qpairs,
                "current_io_qpairs": s.current_io_qpairs,
                "pending_bdev_io": s.pending_bdev_io,
                "completed_nvme_io": s.completed_nvme_io,
                "transports": transports,
            })
        })
        .collect();
    Ok(json!({"tick_rate": super::framework::TICK_RATE_HZ, "poll_groups": groups}))
}

pub(super) fn nvmf_subsystem_get_qpairs(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let ByNqn { nqn, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    subsystem(ctl, &nqn)?;
    let mut qpairs = ctl
        .target
        .qpairs(&nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    qpairs.sort_by_key(|q| (q.cntlid, q.qid));
    Ok(qpairs
        .iter()
        .map(|q| {
            json!({
                "cntlid": q.cntlid,
                "qid": q.qid,
                "state": q.state,
                "thread": poll_group_name(q.reactor),
                "hostnqn": q.hostnqn,
                "listen_address": listener_json(&q.listener),
            })
        })
        .collect())
}

pub(super) fn nvmf_subsystem_get_controllers(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let ByNqn { nqn, tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let sub = subsystem(ctl, &nqn)?;
    let controllers = ctl
        .target
        .controllers(&nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let qpairs = ctl
        .target
        .qpairs(&nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(controllers
        .iter()
        .map(|(cntlid, hostnqn, hostid)| {
            let io = qpairs
                .iter()
                .filter(|q| q.cntlid == *cntlid && q.qid != 0)
                .count();
            json!({
                "cntlid": cntlid,
                "cntrltype": if sub.is_discovery() { "discovery" } else { "io" },
                "hostnqn": hostnqn,
                "hostid": uuid_string(hostid),
                "num_io_qpairs": io,
            })
        })
        .collect())
}

/// `framework_get_config("nvmf")`: transports, then per subsystem its creation, hosts,
/// namespaces (with their identifiers, so a restart keeps them) and listeners.
pub(super) fn config(ctl: &Control) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, t) in ctl.target.transports().iter().enumerate() {
        let params = transport_json(ctl, i, t.as_ref());
        out.push(json!({"method": "nvmf_create_transport", "params": params}));
    }
    for s in ctl.target.subsystems().iter().filter(|s| !s.is_discovery()) {
        out.push(json!({"method": "nvmf_create_subsystem", "params": {
            "nqn": s.nqn, "allow_any_host": s.allow_any_host(), "serial_number": s.serial,
            "model_number": s.model, "max_namespaces": s.max_namespaces,
        }}));
        for h in s.hosts() {
            out.push(
                json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": s.nqn, "host": h}}),
            );
        }
        for ns in s.namespaces() {
            out.push(
                json!({"method": "nvmf_subsystem_add_ns", "params": {"nqn": s.nqn, "namespace": {
                    "nsid": ns.nsid, "bdev_name": ns.bdev.info().name,
                    "nguid": hex_upper(&ns.nguid), "uuid": uuid_string(&ns.uuid),
                }}}),
            );
        }
        for l in s.listeners() {
            out.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": s.nqn, "listen_address": listener_json(&l), "secure_channel": false,
            }}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_print_and_parse_both_ways() {
        let b: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        let u = uuid_string(&b);
        assert_eq!(u, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(parse_hex::<16>("uuid", &u).unwrap(), b);
        assert_eq!(parse_hex::<16>("nguid", &hex_upper(&b)).unwrap(), b);
        let e = parse_hex::<16>("nguid", "abc").unwrap_err();
        assert!(e.message.contains("32 hex digits"), "{e}");
        assert!(parse_hex::<16>("nguid", &"zz".repeat(16)).is_err());
    }
}
