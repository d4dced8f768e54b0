//! Checking the `[[subsystem]]` tables: NQNs, serials and models, hosts, listeners and
//! namespaces (NSIDs, NGUIDs and UUIDs unique where they must be).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Range;

use crate::capabilities::{self, CapabilityKind, KNOWN_TRANSPORTS};
use nvme_spec::fabrics::DISCOVERY_NQN;
use nvmf::ListenAddress;

use super::*;

impl Doc<'_> {
    pub(super) fn subsystems(
        &self,
        raw: &[Spanned<RawSubsystem>],
        bdevs: &[BdevSpec],
    ) -> Result<Vec<SubsystemSpec>, ConfigError> {
        let mut out: Vec<SubsystemSpec> = Vec::with_capacity(raw.len());
        // NGUIDs and UUIDs identify namespaces to hosts: unique across the target.
        let mut nguids: HashMap<[u8; 16], usize> = HashMap::new();
        let mut uuids: HashMap<[u8; 16], usize> = HashMap::new();
        for (index, entry) in raw.iter().enumerate() {
            let s = entry.get_ref();
            let nqn = s.nqn.get_ref();
            nvmf::nqn::validate_nqn(nqn).map_err(|m| {
                self.err(
                    s.nqn.span(),
                    "nqn",
                    format!("{m}; use e.g. \"nqn.2016-06.io.spdk:cnode1\""),
                )
            })?;
            if nqn == DISCOVERY_NQN {
                return Err(self.err(
                    s.nqn.span(),
                    "nqn",
                    "is the discovery NQN, which the target provides itself; pick another NQN",
                ));
            }
            if let Some(first) = out.iter().find(|o| o.nqn == *nqn) {
                return Err(self.err(
                    s.nqn.span(),
                    "nqn",
                    format!(
                        "subsystem {nqn} is already defined at line {}; NQNs must be unique",
                        first.line
                    ),
                ));
            }
            let serial = match &s.serial {
                Some(v) => {
                    self.check_id_string(v, "serial", SERIAL_MAX_LEN)?;
                    v.get_ref().clone()
                }
                // Unique per subsystem, like SPDK's example serials.
                None => format!("SPDK{:014}", index + 1),
            };
            let model = match &s.model {
                Some(v) => {
                    self.check_id_string(v, "model", MODEL_MAX_LEN)?;
                    v.get_ref().clone()
                }
                None => DEFAULT_MODEL.to_string(),
            };
            let mut hosts: Vec<String> = Vec::with_capacity(s.hosts.len());
            for h in &s.hosts {
                nvmf::nqn::validate_nqn(h.get_ref()).map_err(|m| {
                    self.err(
                        h.span(),
                        "hosts",
                        format!(
                            "{m}; host NQNs look like \"nqn.2014-08.org.nvmexpress:uuid:<uuid>\" \
                             (see /etc/nvme/hostnqn on the host)"
                        ),
                    )
                })?;
                if hosts.contains(h.get_ref()) {
                    return Err(self.err(
                        h.span(),
                        "hosts",
                        format!("{} is listed twice; remove one", h.get_ref()),
                    ));
                }
                hosts.push(h.get_ref().clone());
            }
            let max_namespaces = match &s.max_namespaces {
                None => DEFAULT_MAX_NAMESPACES,
                Some(v) => {
                    let n = *v.get_ref();
                    let limit = nvmf::subsystem::MAX_NAMESPACES_LIMIT;
                    if !(1..=i64::from(limit)).contains(&n) {
                        return Err(self.err(
                            v.span(),
                            "max_namespaces",
                            format!("{n} is out of range; use 1 to {limit}"),
                        ));
                    }
                    n as u32
                }
            };
            let listeners = self.listeners(&s.listener)?;
            let namespaces = self.namespaces(
                &s.namespace,
                entry.span(),
                max_namespaces,
                bdevs,
                &mut nguids,
                &mut uuids,
            )?;
            out.push(SubsystemSpec {
                nqn: nqn.clone(),
                serial,
                model,
                allow_any_host: s.allow_any_host,
                hosts,
                max_namespaces,
                listeners,
                namespaces,
                line: self.line_of(s.nqn.span().start),
            });
        }
        Ok(out)
    }

    /// Serial and model: printable ASCII that fits the Identify Controller field.
    pub(super) fn check_id_string(
        &self,
        v: &Spanned<String>,
        key: &str,
        max_len: usize,
    ) -> Result<(), ConfigError> {
        let s = v.get_ref();
        let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if s.is_empty() || s.len() > max_len || !printable {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{s:?} is invalid: it must be 1 to {max_len} printable ASCII characters \
                     (it has {} characters{})",
                    s.chars().count(),
                    if printable {
                        ""
                    } else {
                        ", some not printable ASCII"
                    }
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn listeners(
        &self,
        raw: &[Spanned<RawListener>],
    ) -> Result<Vec<ListenAddress>, ConfigError> {
        let mut out: Vec<ListenAddress> = Vec::with_capacity(raw.len());
        for entry in raw {
            let l = entry.get_ref();
            let trtype = l.trtype.get_ref().as_str();
            if !capabilities::is_built(CapabilityKind::Transport, trtype) {
                let built = capabilities::built_names(CapabilityKind::Transport);
                let msg = if KNOWN_TRANSPORTS.contains(&trtype) {
                    format!(
                        "transport {trtype:?} is not built into this nvmf-tgt yet (built: {}); \
                         use trtype = \"loopback\" for in-process tests, and see \
                         `nvmf-tgt capabilities`",
                        quoted_list(&built)
                    )
                } else {
                    format!(
                        "{trtype:?} is not a transport type; use one of {}",
                        quoted_list(KNOWN_TRANSPORTS)
                    )
                };
                return Err(self.err(l.trtype.span(), "trtype", msg));
            }
            let traddr = l.traddr.get_ref();
            check_traddr(trtype, traddr).map_err(|m| self.err(l.traddr.span(), "traddr", m))?;
            let trsvcid = match &l.trsvcid {
                Some(v) => {
                    check_trsvcid(v.get_ref()).map_err(|m| self.err(v.span(), "trsvcid", m))?;
                    v.get_ref().clone()
                }
                None => DEFAULT_TRSVCID.to_string(),
            };
            let addr = ListenAddress::new(trtype, traddr, &trsvcid);
            if out.contains(&addr) {
                return Err(self.table_err(
                    entry.span(),
                    format!("listener {addr} is listed twice in this subsystem; remove one"),
                ));
            }
            out.push(addr);
        }
        Ok(out)
    }

    pub(super) fn namespaces(
        &self,
        raw: &[Spanned<RawNamespace>],
        subsystem_span: Range<usize>,
        max_namespaces: u32,
        bdevs: &[BdevSpec],
        nguids: &mut HashMap<[u8; 16], usize>,
        uuids: &mut HashMap<[u8; 16], usize>,
    ) -> Result<Vec<NamespaceSpec>, ConfigError> {
        let mut out: Vec<NamespaceSpec> = Vec::with_capacity(raw.len());
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        // Explicit NSIDs first, so an automatic one never takes an NSID named further down.
        for entry in raw {
            if let Some(v) = &entry.get_ref().nsid {
                let n = *v.get_ref();
                if !(1..=i64::from(max_namespaces)).contains(&n) {
                    return Err(self.err(
                        v.span(),
                        "nsid",
                        format!(
                            "{n} is out of range; use 1 to {max_namespaces} (this subsystem's \
                             max_namespaces), or omit nsid to take the lowest free one"
                        ),
                    ));
                }
                if !taken.insert(n as u32) {
                    return Err(self.err(
                        v.span(),
                        "nsid",
                        format!(
                            "NSID {n} is used twice in this subsystem; give each namespace its own"
                        ),
                    ));
                }
            }
        }
        for entry in raw {
            let ns = entry.get_ref();
            let bdev = ns.bdev.get_ref();
            let line = self.line_of(ns.bdev.span().start);
            if !bdevs.iter().any(|b| b.provides(bdev).is_some()) {
                let defined: Vec<String> = bdevs
                    .iter()
                    .map(|b| match b.device {
                        BdevDevice::Ram { .. } => format!("{:?}", b.name),
                        BdevDevice::Nvme { .. } => format!("\"{}n1\"...", b.name),
                    })
                    .collect();
                let defined = if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                };
                return Err(self.err(
                    ns.bdev.span(),
                    "bdev",
                    format!(
                        "no bdev is named {bdev:?} (defined: {defined}); add a [[bdev]] with \
                         name = {bdev:?} or fix the name (namespace N of an nvme bdev named \
                         Nvme0 is \"Nvme0nN\")"
                    ),
                ));
            }
            if let Some(other) = out.iter().find(|o| o.bdev == *bdev) {
                return Err(self.err(
                    ns.bdev.span(),
                    "bdev",
                    format!(
                        "bdev {bdev:?} is already namespace {} of this subsystem (line {}); \
                         a bdev can back only one namespace per subsystem",
                        other.nsid, other.line
                    ),
                ));
            }
            let nsid = match &ns.nsid {
                Some(v) => *v.get_ref() as u32,
                None => {
                    let free = (1..=max_namespaces).find(|n| !taken.contains(n));
                    let Some(n) = free else {
                        return Err(self.table_err(
                            entry.span(),
                            format!(
                                "no free NSID for bdev {bdev:?}: all {max_namespaces} are taken; \
                                 raise max_namespaces of the subsystem at line {}",
                                self.line_of(subsystem_span.start)
                            ),
                        ));
                    };
                    taken.insert(n);
                    n
                }
            };
            let nguid = match &ns.nguid {
                None => None,
                Some(v) => {
                    let id =
                        parse_nguid(v.get_ref()).map_err(|m| self.err(v.span(), "nguid", m))?;
                    self.unique_id(nguids, id, v, "nguid")?;
                    Some(id)
                }
            };
            let uuid = match &ns.uuid {
                None => None,
                Some(v) => {
                    let id = parse_uuid(v.get_ref()).map_err(|m| self.err(v.span(), "uuid", m))?;
                    self.unique_id(uuids, id, v, "uuid")?;
                    Some(id)
                }
            };
            out.push(NamespaceSpec {
                bdev: bdev.clone(),
                nsid,
                nguid,
                uuid,
                line,
            });
        }
        Ok(out)
    }

    pub(super) fn unique_id(
        &self,
        seen: &mut HashMap<[u8; 16], usize>,
        id: [u8; 16],
        v: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        let line = self.line_of(v.span().start);
        if let Some(first) = seen.insert(id, line) {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{} is already used at line {first}; every namespace needs its own {key}",
                    v.get_ref()
                ),
            ));
        }
        Ok(())
    }
}

/// IP transports need an IP address (or a wildcard); loopback takes any label.
pub fn check_traddr(trtype: &str, traddr: &str) -> Result<(), String> {
    if traddr.is_empty() {
        return Err("is empty; give an address, e.g. \"127.0.0.1\"".to_string());
    }
    if traddr.len() >= TRADDR_MAX_LEN || traddr.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{traddr:?} is invalid: at most {} printable characters",
            TRADDR_MAX_LEN - 1
        ));
    }
    if matches!(trtype, "rdma" | "tcp") && traddr != "*" && traddr.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{traddr:?} is not an IP address; use e.g. \"192.168.1.10\", \"fe80::1\" or \
             \"0.0.0.0\" for every address"
        ));
    }
    Ok(())
}

/// A TCP/RDMA-CM port number, written as a string as in SPDK ("4420").
pub fn check_trsvcid(trsvcid: &str) -> Result<(), String> {
    match trsvcid.parse::<u16>() {
        Ok(port) if port > 0 && !trsvcid.starts_with('+') => Ok(()),
        _ => Err(format!(
            "{trsvcid:?} is not a port number; use 1 to 65535, e.g. \"4420\""
        )),
    }
}

/// 32 hex digits (dashes allowed between them), not all zero.
pub fn parse_nguid(text: &str) -> Result<[u8; 16], String> {
    let digits: String = text.chars().filter(|&c| c != '-').collect();
    let bytes = hex16(&digits).ok_or_else(|| {
        format!("{text:?} is not an NGUID; use 32 hex digits, e.g. \"000102030405060708090a0b0c0d0e0f\"")
    })?;
    if bytes == [0; 16] {
        return Err("is all zeros, which means \"no NGUID\"; omit the key instead".to_string());
    }
    Ok(bytes)
}

/// 8-4-4-4-12 hex digits, not all zero.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n);
    let bytes = shape_ok
        .then(|| hex16(&groups.concat()))
        .flatten()
        .ok_or_else(|| {
            format!("{text:?} is not a UUID; use 8-4-4-4-12 hex digits, e.g. \"00010203-0405-0607-0809-0a0b0c0d0e0f\"")
        })?;
    if bytes == [0; 16] {
        return Err("is the nil UUID, which means \"no UUID\"; omit the key instead".to_string());
    }
    Ok(bytes)
}

pub(super) fn hex16(digits: &str) -> Option<[u8; 16]> {
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
