//! Identify: what the controller and its namespaces say of themselves.

use std::sync::atomic::Ordering;

use nvme_spec::identify::{
    self, cns, nidt, IdentifyController, IdentifyNamespace, NsIdDescriptorHeader,
};
use nvme_spec::{
    put_ascii_padded, put_str_nul_padded, put_u128, FromZeros, IntoBytes, Status, NSID_ALL, U16,
    U32, U64,
};

use crate::controller::{Controller, ABORT_LIMIT, AER_LIMIT, ERROR_LOG_ENTRIES, KAS_100MS};
use crate::poll_group::NsChannel;
use crate::transport::Request;

use super::*;

pub(super) fn identify(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> Status {
    let cmd = req.cmd;
    let nn = ctrl.shared.subsystem.max_namespaces;
    match cmd.identify_cns() {
        cns::CONTROLLER => {
            let id = identify_controller(ctrl, env);
            copy_out(req, id.as_bytes())
        }
        cns::NAMESPACE => {
            let nsid = cmd.nsid();
            if nsid == 0 || (nsid > nn && nsid != NSID_ALL) {
                return Status::INVALID_NAMESPACE_OR_FORMAT;
            }
            let mut id = IdentifyNamespace::new_zeroed();
            if let Some(ch) = active_namespace(env, nsid) {
                fill_identify_namespace(&mut id, ch);
            } else if nsid == NSID_ALL {
                return Status::INVALID_NAMESPACE_OR_FORMAT;
            }
            // Inactive NSIDs in range get zeroes, as the spec says.
            copy_out(req, id.as_bytes())
        }
        cns::ACTIVE_NS_LIST => {
            let start = cmd.nsid();
            if start >= 0xFFFF_FFFE {
                return Status::INVALID_NAMESPACE_OR_FORMAT;
            }
            let mut list = identify::ActiveNsList::new_zeroed();
            let mut n = 0;
            if let Some(c) = env.channels {
                for ch in c.namespaces.iter().flatten() {
                    if ch.ns.nsid > start && n < list.nsid.len() {
                        list.nsid[n] = U32::new(ch.ns.nsid);
                        n += 1;
                    }
                }
            }
            copy_out(req, list.as_bytes())
        }
        cns::NS_ID_DESCRIPTORS => {
            let nsid = cmd.nsid();
            let Some(ch) = active_namespace(env, nsid) else {
                return Status::INVALID_NAMESPACE_OR_FORMAT;
            };
            let mut out = [0u8; identify::IDENTIFY_DATA_LEN];
            let mut at = 0;
            for (kind, id) in [
                (nidt::NGUID, &ch.ns.nguid[..]),
                (nidt::UUID, &ch.ns.uuid[..]),
                (nidt::CSI, &[0u8][..]),
            ] {
                let hdr = NsIdDescriptorHeader {
                    nidt: kind,
                    nidl: id.len() as u8,
                    rsvd: U16::new(0),
                };
                out[at..at + 4].copy_from_slice(hdr.as_bytes());
                out[at + 4..at + 4 + id.len()].copy_from_slice(id);
                at += 4 + id.len();
            }
            copy_out(req, &out)
        }
        cns::CSI_CONTROLLER => {
            // NVM command set specific controller data: no extra limits.
            if cmd.cdw11.get() >> 24 != 0 {
                return Status::INVALID_FIELD;
            }
            copy_out(req, &[0u8; identify::IDENTIFY_DATA_LEN])
        }
        cns::INDEPENDENT_NAMESPACE => {
            let nsid = cmd.nsid();
            if active_namespace(env, nsid).is_none() {
                return Status::INVALID_NAMESPACE_OR_FORMAT;
            }
            let mut out = [0u8; identify::IDENTIFY_DATA_LEN];
            out[0] = 0; // NSFEAT: as in Identify Namespace
            out[1] = 1; // NMIC: may be shared by controllers
            out[14] = 1; // NSTAT: namespace ready
            copy_out(req, &out)
        }
        _ => Status::INVALID_FIELD,
    }
}

/// Identify Namespace from what this namespace's bdev really does.
pub(crate) fn fill_identify_namespace(id: &mut IdentifyNamespace, ch: &NsChannel) {
    let (num_blocks, block_size) = (ch.num_blocks, ch.block_size);
    let supported = ch.ns.bdev.info().supported;
    id.nsze = U64::new(num_blocks);
    id.ncap = U64::new(num_blocks);
    id.nuse = U64::new(num_blocks);
    // NSFEAT: no thin provisioning (NUSE is always NSZE), and NGUIDs may be
    // reused (they derive from the NQN, NSID and bdev name).
    id.nsfeat = 0;
    id.nlbaf = 0;
    id.flbas = 0;
    id.nmic = 1;
    id.dlfeat = dlfeat(supported);
    id.lbaf[0] = identify::lba_format(0, block_size.trailing_zeros() as u8, 0);
    id.nguid = ch.ns.nguid;
    let bytes = u128::from(num_blocks) * u128::from(block_size);
    put_u128(&mut id.nvmcap, bytes);
}

/// DLFEAT: deallocated blocks read as zeroes only where the bdev deallocates
/// (every Unmap bdev here reads zeroes after it, the NVMe one by its own
/// DLFEAT); elsewhere deallocation is an advisory no-op and says nothing.
pub(super) fn dlfeat(supported: bdev::IoTypes) -> u8 {
    let mut d = 0;
    if supported.contains(bdev::IoType::Unmap) {
        d |= 0b001; // deallocated blocks read as zeroes
        if supported.contains(bdev::IoType::WriteZeroes) {
            d |= 1 << 3; // Write Zeroes' Deallocate bit is honoured (zeroes either way)
        }
    }
    d
}

pub(crate) fn identify_controller(ctrl: &Controller, env: &AdminEnv) -> IdentifyController {
    let sub = &ctrl.shared.subsystem;
    let opts = &env.opts;
    let mut id = IdentifyController::new_zeroed();
    put_ascii_padded(&mut id.sn, &sub.serial);
    put_ascii_padded(&mut id.mn, &sub.model);
    put_ascii_padded(&mut id.fr, FIRMWARE_REVISION);
    id.rab = 6;
    if !ctrl.is_discovery() {
        // Several ports (listeners) and controllers (one per host), as
        // nvmet and SPDK say; namespaces are shared (NMIC).
        id.cmic = 1 | (1 << 1);
    }
    id.mdts = opts.mdts();
    id.cntlid = U16::new(ctrl.cntlid());
    id.ver = U32::new(ctrl.vs);
    id.oaes = U32::new(ctrl.oaes());
    id.ctratt = U32::new(1); // 128-bit host identifier
    id.cntrltype = if ctrl.is_discovery() {
        identify::CNTRLTYPE_DISCOVERY
    } else {
        identify::CNTRLTYPE_IO
    };
    id.acl = (ABORT_LIMIT - 1) as u8;
    id.aerl = (AER_LIMIT - 1) as u8;
    id.frmw = 1 | (1 << 1); // slot 1 read-only, one slot
                            // The discovery controller serves only the discovery log (with offsets).
    id.lpa = if ctrl.is_discovery() {
        identify::lpa::EXTENDED_DATA
    } else {
        identify::lpa::COMMANDS_EFFECTS | identify::lpa::EXTENDED_DATA
    };
    id.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
    id.wctemp = U16::new(343);
    id.cctemp = U16::new(373);
    id.kas = U16::new(KAS_100MS);
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd = U16::new(opts.max_queue_depth);
    id.sgls = U32::new(env.caps.sgls);
    put_str_nul_padded(&mut id.subnqn, &sub.nqn);
    id.ioccsz = U32::new((64 + env.caps.in_capsule_data_bytes) / 16);
    id.iorcsz = U32::new(1);
    id.icdoff = U16::new(0);
    id.msdbd = env.caps.msdbd;
    if !ctrl.is_discovery() {
        id.nn = U32::new(sub.max_namespaces);
        id.mnan = U32::new(sub.max_namespaces);
        let adv = sub.advertise(&ctrl.shared);
        id.oncs = U16::new(adv.oncs);
        if adv.vwc {
            // Present; flush with the broadcast NSID is not supported.
            id.vwc = 1 | (0b10 << 1);
        }
        ctrl.shared.write_cache_enabled.store(
            adv.vwc && ctrl.features.volatile_write_cache,
            Ordering::Relaxed,
        );
        id.awun = U16::new(0);
        id.awupf = U16::new(0);
    }
    id
}

// ---- Get Log Page -------------------------------------------------------------
