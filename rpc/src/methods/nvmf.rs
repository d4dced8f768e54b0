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

fn transport_json(ctl: &Control, t: &dyn nvmf::Transport) -> Value {
    let o = &ctl.target.options;
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
        .filter(|t| {
            trtype
                .as_ref()
                .is_none_or(|want| want.eq_ignore_ascii_case(t.name()))
        })
        .map(|t| transport_json(ctl, t.as_ref()))
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

/// Takes a transport that exists with the options asked for (a config saved from this target
/// loads back); refuses one that would differ, naming the option.
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
    let Some(t) = ctl
        .target
        .transports()
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(&c.trtype))
        .cloned()
    else {
        return Err(RpcError::internal(format!(
            "Transport type '{}' cannot be created while the target runs yet: start nvmf-tgt \
             with a config that has a {} listener (its [transport] section sets the options)",
            c.trtype,
            c.trtype.to_ascii_lowercase()
        )));
    };
    let have = transport_json(ctl, t.as_ref());
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
    for (name, want) in asked {
        let Some(want) = want else { continue };
        match have.get(name) {
            Some(v) if *v == want => {}
            // Options the transport does not have: only the defaults SPDK's client sends.
            None if matches!(
                (name, &want),
                ("c2h_success", Value::Bool(true)) | ("no_srq", Value::Bool(false))
            ) => {}
            current => {
                return Err(RpcError::invalid_params(format!(
                    "{name} = {want} differs from the running {} transport's ({}); its options \
                     are set at start-up ([transport] in the config)",
                    trtype_name(t.name()),
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

/// `framework_get_config("nvmf")`: transports, then per subsystem its creation, hosts,
/// namespaces (with their identifiers, so a restart keeps them) and listeners.
pub(super) fn config(ctl: &Control) -> Vec<Value> {
    let mut out = Vec::new();
    for t in ctl.target.transports() {
        out.push(
            json!({"method": "nvmf_create_transport", "params": transport_json(ctl, t.as_ref())}),
        );
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
