//! Subsystems: creation and deletion, listing, listeners, namespaces and hosts.

use serde::Deserialize;
use serde_json::{json, Value};

use nvme_spec::log::adrfam;
use nvmf::{ListenAddress, NamespaceConfig, SubsystemConfig};

use super::transport::our_trtype;
use super::{
    check_tgt_name, listener_json, named_subsystem, nvme_cntlid_max, parse_hex, subsystem,
    subsystem_json,
};
use crate::control::Control;
use crate::methods::{decode, unsupported, Params};
use crate::protocol::{errno, RpcError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
    tgt_name: Option<String>,
}

pub(in crate::methods) fn nvmf_get_subsystems(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
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

pub(in crate::methods) fn nvmf_create_subsystem(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
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

pub(in crate::methods) fn nvmf_subsystem_get_listeners(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let sub = named_subsystem(ctl, p)?;
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

pub(in crate::methods) fn nvmf_subsystem_add_ns(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
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

pub(in crate::methods) fn nvmf_subsystem_remove_ns(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let RemoveNs {
        nqn,
        tgt_name,
        nsid,
    } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    subsystem(ctl, &nqn)?;
    ctl.target
        .remove_namespace_drained(&nqn, nsid)
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

pub(in crate::methods) fn nvmf_subsystem_add_host(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
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

pub(in crate::methods) fn nvmf_subsystem_allow_any_host(
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
    /// A string in SPDK's schema; a port number is taken too (`trsvcid=4420` on a command line).
    #[serde(default, deserialize_with = "port_text")]
    trsvcid: Option<String>,
}

fn port_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::String(t)) => Ok(Some(t)),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p <= 65_535) => {
            Ok(Some(n.to_string()))
        }
        Some(other) => Err(D::Error::custom(format!(
            "listen_address.trsvcid {other}: give a port, 0 to 65535 (as a string or a number)"
        ))),
    }
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
        if trtype != "loopback" {
            l.socket_addr()
                .map_err(|e| RpcError::invalid_params(format!("listen_address: {e}")))?;
        }
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

pub(in crate::methods) fn nvmf_subsystem_add_listener(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
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

pub(in crate::methods) fn nvmf_subsystem_remove_listener(
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

pub(in crate::methods) fn nvmf_subsystem_remove_host(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let r: RemoveHost = decode(p)?;
    check_tgt_name(&r.tgt_name)?;
    subsystem(ctl, &r.nqn)?;
    ctl.target
        .remove_host(&r.nqn, &r.host)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(Value::Bool(true))
}

pub(in crate::methods) fn nvmf_delete_subsystem(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let nqn = named_subsystem(ctl, p)?.nqn.clone();
    ctl.target
        .delete_subsystem(&nqn)
        .map_err(|e| RpcError::internal(format!("Subsystem destruction failed: {e}")))?;
    Ok(Value::Bool(true))
}
