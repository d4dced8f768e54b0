//! bdev_get_bdevs, bdev_malloc_*, bdev_null_*, bdev_wait_for_examine, and the bdev part of
//! the saved config.

use std::sync::Arc;

use bdev::{Bdev, IoType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{decode, unsupported, Params};
use crate::bdevs::{BdevEntry, BdevOrigin};
use crate::control::Control;
use crate::protocol::{errno, RpcError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    /// Milliseconds to wait for `name` to appear: bdevs here exist once created, so no wait.
    #[allow(dead_code)]
    timeout: Option<u64>,
}

pub(super) fn bdev_get_bdevs(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let GetBdevs { name, .. } = decode(p)?;
    let claimed_by = claims(ctl);
    let describe = |e: &BdevEntry| describe(e, claimed_by.iter().any(|(b, _)| b == e.name()));
    match name {
        Some(n) => ctl
            .bdevs
            .get(&n)
            .map(|e| Value::Array(vec![describe(e)]))
            .ok_or_else(|| no_such_bdev(&n)),
        None => Ok(ctl.bdevs.iter().map(describe).collect()),
    }
}

fn no_such_bdev(name: &str) -> RpcError {
    RpcError::errno(
        errno::ENODEV,
        format!("No such device: no bdev named {name:?}"),
    )
}

/// (bdev name, subsystem NQN) for every namespace: a bdev a namespace uses is claimed.
fn claims(ctl: &Control) -> Vec<(String, String)> {
    ctl.target
        .subsystems()
        .iter()
        .flat_map(|s| {
            s.namespaces()
                .into_iter()
                .map(|ns| (ns.bdev.info().name.clone(), s.nqn.clone()))
        })
        .collect()
}

/// SPDK's I/O type names, with the ones these bdevs can answer.
const IO_TYPES: &[(&str, Option<IoType>)] = &[
    ("read", Some(IoType::Read)),
    ("write", Some(IoType::Write)),
    ("unmap", Some(IoType::Unmap)),
    ("flush", Some(IoType::Flush)),
    ("reset", None),
    ("nvme_admin", None),
    ("nvme_io", None),
    ("write_zeroes", Some(IoType::WriteZeroes)),
    ("compare", Some(IoType::Compare)),
    ("compare_and_write", None),
    ("abort", None),
];

fn describe(e: &BdevEntry, claimed: bool) -> Value {
    let info = e.bdev.info();
    let io: serde_json::Map<String, Value> = IO_TYPES
        .iter()
        .map(|(name, t)| {
            let yes = t.is_some_and(|t| info.supported.contains(t));
            (name.to_string(), Value::Bool(yes))
        })
        .collect();
    let mut v = json!({
        "name": info.name,
        "aliases": [],
        "product_name": info.product_name,
        "block_size": info.block_size,
        "num_blocks": info.num_blocks,
        "claimed": claimed,
        "zoned": false,
        "supported_io_types": io,
        "driver_specific": {},
    });
    if claimed {
        v["claim_type"] = json!("exclusive_write");
    }
    match &e.origin {
        BdevOrigin::Malloc {
            numa_node: Some(n), ..
        } => v["numa_id"] = json!(n),
        BdevOrigin::Nvme { controller, traddr } => {
            v["driver_specific"] = json!({"nvme": [{"ctrlr": controller, "trid": {"trtype": "PCIe", "traddr": traddr}}]});
        }
        _ => {}
    }
    v
}

/// Parameters of bdev_malloc_create and bdev_null_create. The metadata and protection
/// information ones are taken only at their "none" values: these bdevs have neither.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRam {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    /// Accepted only as a check: the bdev has no UUID of its own here.
    uuid: Option<String>,
    numa_id: Option<i64>,
    physical_block_size: Option<u32>,
    optimal_io_boundary: Option<u32>,
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<i64>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<i64>,
}

impl CreateRam {
    fn check(&self) -> Result<(), RpcError> {
        let no_md = "these bdevs carry no metadata or protection information";
        unsupported("md_size", &self.md_size, 0, no_md)?;
        unsupported("md_interleave", &self.md_interleave, false, no_md)?;
        unsupported("dif_type", &self.dif_type, 0, no_md)?;
        unsupported("dif_is_head_of_md", &self.dif_is_head_of_md, false, no_md)?;
        unsupported("dif_pi_format", &self.dif_pi_format, 0, no_md)?;
        unsupported(
            "optimal_io_boundary",
            &self.optimal_io_boundary,
            0,
            "no I/O boundary is advertised",
        )?;
        if let Some(p) = self.physical_block_size {
            if p != 0 && p != self.block_size {
                return Err(RpcError::invalid_params(format!(
                    "physical_block_size {p} differs from block_size {}: not supported",
                    self.block_size
                )));
            }
        }
        if let Some(u) = &self.uuid {
            return Err(RpcError::invalid_params(format!(
                "uuid {u:?}: bdevs here have no UUID of their own; give the namespace one \
                 (nvmf_subsystem_add_ns namespace.uuid)"
            )));
        }
        Ok(())
    }

    /// The name given, or the first free `{prefix}N`.
    fn name(&self, ctl: &Control, prefix: &str) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => (0..)
                .map(|i| format!("{prefix}{i}"))
                .find(|n| ctl.bdevs.get(n).is_none())
                .expect("an unbounded range has a free name"),
        }
    }
}

fn register(
    ctl: &mut Control,
    made: Result<Arc<dyn Bdev>, bdev::BdevError>,
    origin: BdevOrigin,
) -> Result<Value, RpcError> {
    let bdev = made.map_err(|e| RpcError::errno(errno::EINVAL, e.to_string()))?;
    let name = bdev.info().name.clone();
    ctl.bdevs
        .insert(bdev, origin)
        .map_err(|e| RpcError::errno(errno::EEXIST, format!("File exists: {e}")))?;
    log::info!("bdev {name} created");
    Ok(Value::String(name))
}

pub(super) fn bdev_malloc_create(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let c: CreateRam = decode(p)?;
    c.check()?;
    let name = c.name(ctl, "Malloc");
    if ctl.bdevs.get(&name).is_some() {
        return Err(RpcError::errno(
            errno::EEXIST,
            format!("File exists: a bdev named {name:?} already exists"),
        ));
    }
    let numa_node = match c.numa_id {
        None | Some(-1) => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| {
            RpcError::invalid_params(format!("numa_id {n}: use -1 (any) or a node number"))
        })?),
    };
    let made = bdev::create_malloc(&name, c.num_blocks, c.block_size, numa_node);
    let origin = BdevOrigin::Malloc {
        num_blocks: c.num_blocks,
        block_size: c.block_size,
        numa_node,
    };
    register(ctl, made, origin)
}

pub(super) fn bdev_null_create(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let c: CreateRam = decode(p)?;
    c.check()?;
    let Some(name) = c.name.clone() else {
        return Err(RpcError::invalid_params("missing field `name`"));
    };
    if c.numa_id.is_some_and(|n| n != -1) {
        return Err(RpcError::invalid_params(
            "numa_id: a null bdev holds no memory to place",
        ));
    }
    if ctl.bdevs.get(&name).is_some() {
        return Err(RpcError::errno(
            errno::EEXIST,
            format!("File exists: a bdev named {name:?} already exists"),
        ));
    }
    let made = bdev::create_null(&name, c.num_blocks, c.block_size);
    let origin = BdevOrigin::Null {
        num_blocks: c.num_blocks,
        block_size: c.block_size,
    };
    register(ctl, made, origin)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: String,
}

/// Deletes a bdev of `module`; refused while a namespace uses it.
fn delete(ctl: &mut Control, p: Params, module: &str) -> Result<Value, RpcError> {
    let Delete { name } = decode(p)?;
    let entry = ctl.bdevs.get(&name).ok_or_else(|| no_such_bdev(&name))?;
    if entry.origin.module() != module {
        return Err(RpcError::errno(
            errno::ENODEV,
            format!(
                "No such device: bdev {name:?} is a {} bdev, not a {module} bdev",
                entry.origin.module()
            ),
        ));
    }
    let users: Vec<String> = claims(ctl)
        .into_iter()
        .filter(|(b, _)| *b == name)
        .map(|(_, nqn)| nqn)
        .collect();
    if !users.is_empty() {
        return Err(RpcError::errno(
            errno::EBUSY,
            format!(
                "Device or resource busy: bdev {name:?} is a namespace of subsystem {}; remove \
                 the namespace first (nvmf_subsystem_remove_ns)",
                users.join(", ")
            ),
        ));
    }
    ctl.bdevs.remove(&name);
    log::info!("bdev {name} deleted");
    Ok(Value::Bool(true))
}

pub(super) fn bdev_malloc_delete(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    delete(ctl, p, "malloc")
}

pub(super) fn bdev_null_delete(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    delete(ctl, p, "null")
}

pub(super) fn bdev_wait_for_examine(_: &mut Control, p: Params) -> Result<Value, RpcError> {
    super::no_params("bdev_wait_for_examine", p)?;
    // Bdevs here are ready once their create call returns: nothing to wait for.
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    names: Option<Vec<String>>,
    per_channel: Option<bool>,
    reset_mode: Option<String>,
}

/// Operations submitted to each bdev through the target's namespaces, summed over every
/// reactor (channels of removed namespaces included). Latencies are not measured.
pub(super) fn bdev_get_iostat(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let g: GetIostat = decode(p)?;
    unsupported(
        "per_channel",
        &g.per_channel,
        false,
        "counts are kept per bdev",
    )?;
    unsupported(
        "reset_mode",
        &g.reset_mode,
        "none".to_string(),
        "counters are never reset",
    )?;
    let mut wanted: Vec<String> = g.names.unwrap_or_default();
    wanted.extend(g.name);
    for n in &wanted {
        if ctl.bdevs.get(n).is_none() {
            return Err(no_such_bdev(n));
        }
    }
    let sums = ctl
        .target
        .io_stats()
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let bdevs: Vec<Value> = ctl
        .bdevs
        .iter()
        .filter(|e| wanted.is_empty() || wanted.iter().any(|w| w == e.name()))
        .map(|e| {
            let s = sums
                .iter()
                .find(|(n, _)| n == e.name())
                .map(|(_, s)| *s)
                .unwrap_or_default();
            json!({
                "name": e.name(),
                "bytes_read": s.bytes_read, "num_read_ops": s.num_read_ops,
                "bytes_written": s.bytes_written, "num_write_ops": s.num_write_ops,
                "bytes_unmapped": s.bytes_unmapped, "num_unmap_ops": s.num_unmap_ops,
                "num_write_zeroes_ops": s.num_write_zeroes_ops,
                "num_flush_ops": s.num_flush_ops, "num_compare_ops": s.num_compare_ops,
            })
        })
        .collect();
    let ticks = ctl.target.started.elapsed().as_nanos() as u64;
    Ok(json!({"tick_rate": super::framework::TICK_RATE_HZ, "ticks": ticks, "bdevs": bdevs}))
}

/// bdev_nvme_attach_controller's parameters: SPDK's. Only PCIe controllers (the userspace
/// driver's) attach here; the fabrics ones (a remote target as a bdev) are refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachNvme {
    name: String,
    trtype: String,
    traddr: String,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    priority: Option<String>,
    subnqn: Option<String>,
    hostnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
    prchk_reftag: Option<bool>,
    prchk_guard: Option<bool>,
    hdgst: Option<bool>,
    ddgst: Option<bool>,
    fabrics_connect_timeout_us: Option<u64>,
    multipath: Option<String>,
    num_io_queues: Option<u64>,
    ctrlr_loss_timeout_sec: Option<i64>,
    reconnect_delay_sec: Option<u64>,
    fast_io_fail_timeout_sec: Option<u64>,
    psk: Option<String>,
    max_bdevs: Option<u64>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
    allow_unrecognized_csi: Option<bool>,
    disable_sq_flow_control: Option<bool>,
}

impl AttachNvme {
    /// Everything but name, trtype and traddr is for fabrics or features this driver lacks.
    fn check(&self) -> Result<(), RpcError> {
        if !self.trtype.eq_ignore_ascii_case("pcie") {
            return Err(RpcError::errno(
                errno::EINVAL,
                format!(
                    "Failed to parse trtype: {} (this target attaches PCIe controllers through \
                     its userspace driver)",
                    self.trtype
                ),
            ));
        }
        let fabrics = "PCIe controllers take no fabrics parameters";
        for (name, given) in [
            ("adrfam", &self.adrfam),
            ("trsvcid", &self.trsvcid),
            ("priority", &self.priority),
            ("subnqn", &self.subnqn),
            ("hostnqn", &self.hostnqn),
            ("hostaddr", &self.hostaddr),
            ("hostsvcid", &self.hostsvcid),
            ("psk", &self.psk),
            ("dhchap_key", &self.dhchap_key),
            ("dhchap_ctrlr_key", &self.dhchap_ctrlr_key),
        ] {
            if given.is_some() {
                return Err(RpcError::invalid_params(format!("{name}: {fabrics}")));
            }
        }
        let off = "not a feature of this driver";
        for (name, given) in [
            ("prchk_reftag", self.prchk_reftag),
            ("prchk_guard", self.prchk_guard),
            ("hdgst", self.hdgst),
            ("ddgst", self.ddgst),
            ("allow_unrecognized_csi", self.allow_unrecognized_csi),
            ("disable_sq_flow_control", self.disable_sq_flow_control),
        ] {
            unsupported(name, &given, false, off)?;
        }
        unsupported(
            "multipath",
            &self.multipath,
            "multipath".to_string(),
            "one path per controller",
        )?;
        for (name, given) in [
            (
                "fabrics_connect_timeout_us",
                self.fabrics_connect_timeout_us,
            ),
            ("num_io_queues", self.num_io_queues),
            ("reconnect_delay_sec", self.reconnect_delay_sec),
            ("fast_io_fail_timeout_sec", self.fast_io_fail_timeout_sec),
        ] {
            if given.is_some() {
                return Err(RpcError::invalid_params(format!(
                    "{name}: {off} (one I/O queue pair per reactor; no reconnects on PCIe)"
                )));
            }
        }
        if self.ctrlr_loss_timeout_sec.is_some() {
            return Err(RpcError::invalid_params(format!(
                "ctrlr_loss_timeout_sec: {fabrics}"
            )));
        }
        if self.max_bdevs == Some(0) {
            return Err(RpcError::errno(errno::EINVAL, "max_bdevs cannot be zero"));
        }
        Ok(())
    }
}

/// Attaches an NVMe controller bound to vfio-pci (`nvmf-tgt setup bind`); its active
/// namespaces become bdevs `<name>n<nsid>`. Answers their names.
pub(super) fn bdev_nvme_attach_controller(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let a: AttachNvme = decode(p)?;
    a.check()?;
    let taken = ctl
        .bdevs
        .iter()
        .any(|e| matches!(&e.origin, BdevOrigin::Nvme { controller, .. } if *controller == a.name));
    if taken {
        return Err(RpcError::errno(
            errno::EALREADY,
            format!(
                "A controller named {} already exists and multipath is disabled",
                a.name
            ),
        ));
    }
    // Every transfer a transport may ask for must fit one command.
    let max_io_bytes = ctl
        .target
        .transports()
        .iter()
        .enumerate()
        .map(|(i, _)| ctl.target.transport_options(i).max_io_bytes)
        .max()
        .unwrap_or(ctl.transport_defaults.options.max_io_bytes);
    let options = nvme_pcie::bdev::NvmeOptions {
        io_queue_pairs: u16::try_from(ctl.reactors.reactor_count()).unwrap_or(u16::MAX),
        io_timeout_ms: nvme_pcie::bdev::DEFAULT_IO_TIMEOUT_MS,
        max_io_bytes: u64::from(max_io_bytes),
    };
    let device = nvme_pcie::bdev::NvmeDevice::open(&a.name, &a.traddr, options).map_err(|e| {
        RpcError::errno(
            errno::ENODEV,
            format!(
                "cannot open NVMe controller {}: {e} (is it bound to vfio-pci? nvmf-tgt setup \
                 bind {})",
                a.traddr, a.traddr
            ),
        )
    })?;
    if let Some(limit) = device
        .max_transfer_bytes()
        .filter(|&l| l < u64::from(max_io_bytes))
    {
        return Err(RpcError::errno(
            errno::EINVAL,
            format!(
                "NVMe controller {} takes at most {limit} bytes per command, less than the \
                 transports' max_io_size {max_io_bytes}: start the target with [transport] \
                 max_io_size = {limit}",
                a.traddr
            ),
        ));
    }
    let granted = usize::from(device.io_queue_pairs_granted());
    if granted < ctl.reactors.reactor_count() {
        return Err(RpcError::errno(
            errno::EINVAL,
            format!(
                "NVMe controller {} grants {granted} I/O queue pair(s); each of the {} \
                 reactor(s) needs one",
                a.traddr,
                ctl.reactors.reactor_count()
            ),
        ));
    }
    let limit = a.max_bdevs.unwrap_or(128) as usize;
    let mut names: Vec<String> = Vec::new();
    for ns in device.namespaces().iter().take(limit) {
        let origin = BdevOrigin::Nvme {
            controller: a.name.clone(),
            traddr: a.traddr.clone(),
        };
        let bdev = ns.clone() as Arc<dyn Bdev>;
        let name = bdev.info().name.clone();
        if let Err(e) = ctl.bdevs.insert(bdev, origin) {
            // Undo the ones added: the controller closes with its last namespace.
            for n in &names {
                ctl.bdevs.remove(n);
            }
            return Err(RpcError::errno(errno::EEXIST, format!("File exists: {e}")));
        }
        names.push(name);
    }
    log::info!(
        "NVMe controller {} ({}) attached as {}: {}",
        a.traddr,
        device.model(),
        a.name,
        names.join(", ")
    );
    Ok(json!(names))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetachNvme {
    name: String,
    trtype: Option<String>,
    traddr: Option<String>,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
}

/// Detaches a controller: its bdevs go, and the device is released once nothing holds them.
/// Refused while a namespace exports one of them.
pub(super) fn bdev_nvme_detach_controller(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let d: DetachNvme = decode(p)?;
    for (name, given) in [
        ("adrfam", &d.adrfam),
        ("trsvcid", &d.trsvcid),
        ("subnqn", &d.subnqn),
        ("hostaddr", &d.hostaddr),
        ("hostsvcid", &d.hostsvcid),
    ] {
        if given.is_some() {
            return Err(RpcError::invalid_params(format!(
                "{name}: PCIe controllers have one path; name the controller alone"
            )));
        }
    }
    let mine: Vec<(String, String)> = ctl
        .bdevs
        .iter()
        .filter_map(|e| match &e.origin {
            BdevOrigin::Nvme { controller, traddr } if *controller == d.name => {
                Some((e.name().to_string(), traddr.clone()))
            }
            _ => None,
        })
        .collect();
    if mine.is_empty() {
        return Err(RpcError::errno(
            errno::ENODEV,
            format!("No such device: no NVMe controller named {:?}", d.name),
        ));
    }
    if let Some(t) = &d.traddr {
        if mine.iter().all(|(_, a)| a != t) {
            return Err(RpcError::errno(
                errno::ENODEV,
                format!("No such device: controller {} is not at {t}", d.name),
            ));
        }
    }
    if let Some(t) = &d.trtype {
        if !t.eq_ignore_ascii_case("pcie") {
            return Err(RpcError::errno(
                errno::ENODEV,
                format!("No such device: {} is PCIe", d.name),
            ));
        }
    }
    let claims = claims(ctl);
    let used: Vec<String> = mine
        .iter()
        .flat_map(|(b, _)| claims.iter().filter(move |(c, _)| c == b))
        .map(|(b, nqn)| format!("{b} (subsystem {nqn})"))
        .collect();
    if !used.is_empty() {
        return Err(RpcError::errno(
            errno::EBUSY,
            format!(
                "Device or resource busy: {} is exported as {}; remove the namespace first \
                 (nvmf_subsystem_remove_ns)",
                d.name,
                used.join(", ")
            ),
        ));
    }
    for (b, _) in &mine {
        ctl.bdevs.remove(b);
    }
    log::info!("NVMe controller {} detached", d.name);
    Ok(Value::Bool(true))
}

/// `framework_get_config("bdev")`: one create call per bdev, in creation order.
pub(super) fn config(ctl: &Control) -> Vec<Value> {
    let mut out = Vec::with_capacity(ctl.bdevs.len() + 1);
    for e in ctl.bdevs.iter() {
        let call = match &e.origin {
            BdevOrigin::Malloc {
                num_blocks,
                block_size,
                numa_node,
            } => json!({"method": "bdev_malloc_create", "params": {
                "name": e.name(), "num_blocks": num_blocks, "block_size": block_size,
                "numa_id": numa_node.map_or(-1, i64::from),
            }}),
            BdevOrigin::Null {
                num_blocks,
                block_size,
            } => json!({"method": "bdev_null_create", "params": {
                "name": e.name(), "num_blocks": num_blocks, "block_size": block_size,
            }}),
            // One attach per controller, at its first namespace.
            BdevOrigin::Nvme { controller, traddr } => {
                let first = ctl
                    .bdevs
                    .iter()
                    .find(|o| matches!(&o.origin, BdevOrigin::Nvme { controller: c, .. } if c == controller))
                    .is_some_and(|o| o.name() == e.name());
                if !first {
                    continue;
                }
                json!({"method": "bdev_nvme_attach_controller", "params": {
                    "name": controller, "trtype": "PCIe", "traddr": traddr,
                }})
            }
        };
        out.push(call);
    }
    out.push(json!({"method": "bdev_wait_for_examine"}));
    out
}
