//! nvmf_* methods, and the nvmf part of the saved config: transports (`transport.rs`),
//! subsystems with their listeners, namespaces and hosts (`subsystem.rs`), what the poll
//! groups hold (`stats.rs`).

mod stats;
mod subsystem;
mod transport;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use nvme_spec::log::adrfam;
use nvmf::{ListenAddress, Subsystem};

use crate::control::Control;
use crate::protocol::RpcError;

pub(super) use stats::{nvmf_get_stats, nvmf_subsystem_get_controllers, nvmf_subsystem_get_qpairs};
pub(super) use subsystem::{
    nvmf_create_subsystem, nvmf_delete_subsystem, nvmf_get_subsystems, nvmf_subsystem_add_host,
    nvmf_subsystem_add_listener, nvmf_subsystem_add_ns, nvmf_subsystem_allow_any_host,
    nvmf_subsystem_get_listeners, nvmf_subsystem_remove_host, nvmf_subsystem_remove_listener,
    nvmf_subsystem_remove_ns,
};
use transport::transport_json;
pub(super) use transport::{nvmf_create_transport, nvmf_get_transports};

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

/// This target has one NVMe-oF target; SPDK's `tgt_name` names it when several exist.
fn check_tgt_name(tgt_name: &Option<String>) -> Result<(), RpcError> {
    match tgt_name {
        Some(n) if n != "nvmf_tgt" => Err(RpcError::invalid_params(format!(
            "tgt_name {n:?}: this process has one target, \"nvmf_tgt\""
        ))),
        _ => Ok(()),
    }
}

/// The subsystem named `nqn`, or SPDK's answer for a missing one.
fn subsystem(ctl: &Control, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    ctl.target
        .find_subsystem(nqn)
        .ok_or_else(|| RpcError::invalid_params(format!("no subsystem {nqn:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByNqn {
    nqn: String,
    tgt_name: Option<String>,
}

/// The subsystem a method names by its only parameters, `nqn` (and SPDK's `tgt_name`).
fn named_subsystem(ctl: &Control, p: crate::methods::Params) -> Result<Arc<Subsystem>, RpcError> {
    let ByNqn { nqn, tgt_name } = crate::methods::decode(p)?;
    check_tgt_name(&tgt_name)?;
    subsystem(ctl, &nqn)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByTarget {
    tgt_name: Option<String>,
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
