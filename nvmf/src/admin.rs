//! Admin commands (and the Property Get/Set fabrics commands) of a controller.
//!
//! Handlers build their answer on the stack and copy it into the request's
//! data buffer. Nothing here is on the I/O path.

use std::sync::atomic::Ordering;
use std::time::Instant;

use nvme_spec::fabrics::{self, property};
use nvme_spec::features::{self as feat, aen};
use nvme_spec::identify::{
    self, cns, nidt, oncs, IdentifyController, IdentifyNamespace, NsIdDescriptorHeader,
};
use nvme_spec::log::{effects, lid, ChangedNsList, CommandEffectsLog, FirmwareSlotLog, SmartLog};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{
    put_ascii_padded, put_str_nul_padded, put_u128, FromZeros, IntoBytes, Sqe, Status, NSID_ALL,
    U16, U32, U64,
};

use crate::controller::{
    Controller, ControllerState, ABORT_LIMIT, AER_LIMIT, ERROR_LOG_ENTRIES, KAS_100MS,
};
use crate::poll_group::{NsChannel, SubsystemChannels};
use crate::target::Target;
use crate::transport::{ListenAddress, Request, TransportCaps};

/// Firmware revision reported in Identify and the firmware slot log.
pub const FIRMWARE_REVISION: &str = env!("CARGO_PKG_VERSION");

/// What an admin command asks of the poll group after it ran.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AdminOutcome {
    Complete(Status),
    /// An AER is now held by the controller; complete it on an event.
    HoldAer,
    /// Complete, then tear the controller's I/O queues down (CC.EN=0 / CC.SHN).
    CompleteAndTeardown(Status),
}

/// Context an admin command may read.
pub(crate) struct AdminEnv<'a> {
    pub target: &'a Target,
    pub channels: Option<&'a SubsystemChannels>,
    pub listener: &'a ListenAddress,
    pub caps: TransportCaps,
    pub now: Instant,
}

/// Copies `src`, the whole of a command's data, into the request's buffer
/// and marks it as all there is to send. An SGL shorter than `src` is refused
/// (the spec's Data SGL Length Invalid); a longer one gets `src` alone, as
/// SGLS does not claim bit 16 and the rest of the buffer is not ours to send.
fn copy_out(req: &mut Request, src: &[u8]) -> Status {
    if !req.write_data(0, src) {
        return Status::DATA_SGL_LENGTH_INVALID;
    }
    req.c2h_bytes = src.len() as u32;
    Status::SUCCESS
}

pub(crate) fn property_get(ctrl: &Controller, cmd: &Sqe, rsp_value: &mut u64) -> Status {
    let eight = fabrics::property_is_8_bytes(cmd);
    let (value, is_8) = match fabrics::property_offset(cmd) {
        property::CAP => (ctrl.cap, true),
        property::VS => (u64::from(ctrl.vs), false),
        property::CC => (u64::from(ctrl.cc), false),
        property::CSTS => (u64::from(ctrl.csts()), false),
        _ => return Status::INVALID_FIELD,
    };
    if eight != is_8 {
        return Status::INVALID_FIELD;
    }
    *rsp_value = value;
    Status::SUCCESS
}

/// Property Set: only CC is writable.
pub(crate) fn property_set(ctrl: &mut Controller, cmd: &Sqe) -> AdminOutcome {
    if fabrics::property_offset(cmd) != property::CC || fabrics::property_is_8_bytes(cmd) {
        return AdminOutcome::Complete(Status::INVALID_FIELD);
    }
    let value = fabrics::property_set_value(cmd) as u32;
    match ctrl.write_cc(value) {
        Ok(true) => AdminOutcome::CompleteAndTeardown(Status::SUCCESS),
        Ok(false) => AdminOutcome::Complete(Status::SUCCESS),
        Err(s) => AdminOutcome::Complete(s),
    }
}

/// Executes one admin command on `ctrl`.
pub(crate) fn execute(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> AdminOutcome {
    let cmd = req.cmd;
    if ctrl.state != ControllerState::Ready {
        // Linux enables the controller before its first admin command.
        return AdminOutcome::Complete(Status::COMMAND_SEQUENCE_ERROR);
    }
    // Any admin command shows the host is alive.
    ctrl.last_keep_alive = env.now;
    if ctrl.is_discovery() {
        return execute_discovery(ctrl, req, env);
    }
    let status = match cmd.opcode {
        admin::IDENTIFY => identify(ctrl, req, env),
        admin::GET_LOG_PAGE => get_log_page(ctrl, req, env),
        admin::SET_FEATURES => set_features(ctrl, req, env.now),
        admin::GET_FEATURES => get_features(ctrl, req),
        admin::ASYNC_EVENT_REQUEST => return async_event_request(ctrl, req),
        admin::KEEP_ALIVE => Status::SUCCESS,
        admin::ABORT => abort(req),
        _ => Status::INVALID_OPCODE,
    };
    AdminOutcome::Complete(status)
}

/// The discovery controller answers only what SPDK's does.
fn execute_discovery(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> AdminOutcome {
    let cmd = req.cmd;
    let status = match cmd.opcode {
        admin::IDENTIFY if cmd.identify_cns() == cns::CONTROLLER => identify(ctrl, req, env),
        admin::IDENTIFY => Status::INVALID_FIELD,
        admin::GET_LOG_PAGE if cmd.log_page_id() == lid::DISCOVERY => get_log_page(ctrl, req, env),
        admin::GET_LOG_PAGE => Status::INVALID_LOG_PAGE,
        admin::SET_FEATURES => match cmd.feature_id() {
            feat::KEEP_ALIVE_TIMER | feat::ASYNC_EVENT_CONFIG => set_features(ctrl, req, env.now),
            _ => Status::INVALID_FIELD,
        },
        admin::GET_FEATURES => match cmd.feature_id() {
            feat::KEEP_ALIVE_TIMER | feat::ASYNC_EVENT_CONFIG => get_features(ctrl, req),
            _ => Status::INVALID_FIELD,
        },
        admin::ASYNC_EVENT_REQUEST => return async_event_request(ctrl, req),
        admin::KEEP_ALIVE => Status::SUCCESS,
        _ => Status::INVALID_OPCODE,
    };
    AdminOutcome::Complete(status)
}

fn async_event_request(ctrl: &mut Controller, req: &mut Request) -> AdminOutcome {
    if let Some(dw0) = ctrl.pending_events.pop() {
        req.rsp.dw0 = dw0.into();
        return AdminOutcome::Complete(Status::SUCCESS);
    }
    if ctrl.aers.is_full() {
        return AdminOutcome::Complete(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED);
    }
    AdminOutcome::HoldAer
}

/// Abort: commands reach the bdev at once and cannot be recalled, so the
/// answer is "not aborted" (dw0 bit 0), which the spec allows. Held AERs are
/// aborted by the poll group before this runs.
fn abort(req: &mut Request) -> Status {
    req.rsp.dw0 = 1.into();
    Status::SUCCESS
}

/// This reactor's channel to active namespace `nsid`, if there is one.
fn active_namespace<'a>(env: &AdminEnv<'a>, nsid: u32) -> Option<&'a NsChannel> {
    let idx = (nsid as usize).checked_sub(1)?;
    env.channels?.namespaces.get(idx)?.as_ref()
}

// ---- Identify ---------------------------------------------------------------

fn identify(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> Status {
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
fn dlfeat(supported: bdev::IoTypes) -> u8 {
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
    let opts = &env.target.options;
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

fn get_log_page(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> Status {
    let cmd = req.cmd;
    let offset = cmd.log_page_offset_bytes();
    let len = cmd.log_page_len_bytes();
    if offset % 4 != 0 {
        return Status::INVALID_FIELD;
    }
    if u64::from(req.length) < len || req.data.is_none() {
        return Status::DATA_SGL_LENGTH_INVALID;
    }
    let page: Vec<u8> = match cmd.log_page_id() {
        lid::ERROR => ctrl
            .error_log_newest_first()
            .flat_map(|e| e.as_bytes().to_vec())
            .collect(),
        lid::SMART_HEALTH => smart_log(ctrl, env).as_bytes().to_vec(),
        lid::FIRMWARE_SLOT => {
            let mut fw = FirmwareSlotLog::new_zeroed();
            fw.afi = 1;
            put_ascii_padded(&mut fw.frs[0], FIRMWARE_REVISION);
            fw.as_bytes().to_vec()
        }
        lid::CHANGED_NS_LIST => {
            let mut list = ChangedNsList::new_zeroed();
            if ctrl.changed_ns_overflow {
                list.nsid[0] = U32::new(0xFFFF_FFFF);
            } else {
                for (i, nsid) in ctrl.changed_ns.iter().enumerate() {
                    list.nsid[i] = U32::new(*nsid);
                }
            }
            if !cmd.log_page_rae() {
                ctrl.changed_ns.clear();
                ctrl.changed_ns_overflow = false;
                ctrl.ns_change_masked = false;
            }
            list.as_bytes().to_vec()
        }
        lid::COMMANDS_SUPPORTED_AND_EFFECTS => {
            let oncs = ctrl.shared.advertised_oncs.load(Ordering::Relaxed);
            command_effects(oncs).as_bytes().to_vec()
        }
        lid::DISCOVERY => {
            if !cmd.log_page_rae() {
                ctrl.discovery_change_masked = false;
            }
            env.target.discovery_log(&ctrl.shared.hostnqn, env.listener)
        }
        _ => return Status::INVALID_LOG_PAGE,
    };
    // An offset past the end is an error; a read past the end gets zeroes.
    if offset > page.len() as u64 {
        return Status::INVALID_FIELD;
    }
    let start = offset as usize;
    let end = (start as u64 + len).min(page.len() as u64) as usize;
    let n = end - start;
    let written = req.write_data(0, &page[start..end]) && req.fill_data(n, len as usize - n, 0);
    assert!(
        written,
        "the SGL and buffer were checked to hold NUMD bytes"
    );
    req.c2h_bytes = len as u32;
    Status::SUCCESS
}

fn smart_log(ctrl: &Controller, env: &AdminEnv) -> SmartLog {
    let (reads, writes, read_bytes, write_bytes) = ctrl.shared.io_totals();
    let mut s = SmartLog::new_zeroed();
    s.temperature = U16::new(298); // 25 C: RAM does not heat up
    s.available_spare = 100;
    s.available_spare_threshold = 10;
    // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u64| u128::from(bytes.div_ceil(512 * 1000));
    put_u128(&mut s.data_units_read, units(read_bytes));
    put_u128(&mut s.data_units_written, units(write_bytes));
    put_u128(&mut s.host_read_commands, u128::from(reads));
    put_u128(&mut s.host_write_commands, u128::from(writes));
    put_u128(&mut s.power_cycles, 1);
    // Powered on when the target started; busy while an I/O command was
    // outstanding (minutes, as the spec counts).
    let on_s = env
        .now
        .saturating_duration_since(env.target.started)
        .as_secs();
    put_u128(&mut s.power_on_hours, u128::from(on_s / 3600));
    let busy_minutes = ctrl.shared.busy_us() / 60_000_000;
    put_u128(&mut s.controller_busy_time, u128::from(busy_minutes));
    put_u128(&mut s.error_log_entries, u128::from(ctrl.error_count));
    s
}

/// The commands this controller runs: the I/O ones per the ONCS it advertised.
fn command_effects(advertised_oncs: u16) -> CommandEffectsLog {
    let mut log = CommandEffectsLog::new_zeroed();
    for op in [
        admin::GET_LOG_PAGE,
        admin::IDENTIFY,
        admin::ABORT,
        admin::SET_FEATURES,
        admin::GET_FEATURES,
        admin::ASYNC_EVENT_REQUEST,
        admin::KEEP_ALIVE,
    ] {
        log.admin[usize::from(op)] = U32::new(effects::CSUPP);
    }
    let optional = |bit: u16, op: u8| (advertised_oncs & bit != 0).then_some(op);
    let reads = [
        Some(io::FLUSH),
        Some(io::READ),
        optional(oncs::COMPARE, io::COMPARE),
    ];
    for op in reads.into_iter().flatten() {
        log.io[usize::from(op)] = U32::new(effects::CSUPP);
    }
    let writes = [
        Some(io::WRITE),
        optional(oncs::WRITE_ZEROES, io::WRITE_ZEROES),
        optional(oncs::DATASET_MANAGEMENT, io::DATASET_MANAGEMENT),
    ];
    for op in writes.into_iter().flatten() {
        log.io[usize::from(op)] = U32::new(effects::CSUPP | effects::LBCC);
    }
    log
}

// ---- Features -------------------------------------------------------------------

fn set_features(ctrl: &mut Controller, req: &mut Request, now: Instant) -> Status {
    let cmd = req.cmd;
    if cmd.feature_save() {
        return Status::FEATURE_NOT_SAVEABLE;
    }
    let value = cmd.cdw11.get();
    match cmd.feature_id() {
        feat::ARBITRATION => ctrl.features.arbitration = value,
        feat::POWER_MANAGEMENT => {
            if value & 0x1F != 0 {
                return Status::INVALID_FIELD; // only power state 0 exists
            }
            ctrl.features.power_management = value;
        }
        feat::TEMPERATURE_THRESHOLD => ctrl.features.temperature_threshold = value,
        feat::ERROR_RECOVERY => ctrl.features.error_recovery = value,
        feat::VOLATILE_WRITE_CACHE => {
            // Without a cache there is nothing to control: the spec's
            // Invalid Field, as nvmet answers.
            if !ctrl.shared.advertised_vwc.load(Ordering::Relaxed) {
                return Status::INVALID_FIELD;
            }
            let enabled = value & 1 != 0;
            ctrl.features.volatile_write_cache = enabled;
            ctrl.shared
                .write_cache_enabled
                .store(enabled, Ordering::Relaxed);
        }
        feat::NUMBER_OF_QUEUES => {
            if ctrl.connected_io_queues() > 0 {
                return Status::COMMAND_SEQUENCE_ERROR;
            }
            let (nsqr, ncqr) = ((value & 0xFFFF) as u16, (value >> 16) as u16);
            if nsqr == 0xFFFF || ncqr == 0xFFFF {
                return Status::INVALID_FIELD;
            }
            let max_0based = (ctrl.io_queues.len() - 2) as u16;
            ctrl.features.io_queues_granted_0based = nsqr.min(ncqr).min(max_0based);
            ctrl.features.number_of_queues_set = true;
            let granted = u32::from(ctrl.features.io_queues_granted_0based);
            req.rsp.dw0 = (granted | (granted << 16)).into();
        }
        feat::ASYNC_EVENT_CONFIG => {
            let supported = ctrl.oaes();
            if value
                & !supported
                & (aen::NAMESPACE_ATTRIBUTE | aen::DISCOVERY_LOG_CHANGE | aen::FIRMWARE_ACTIVATION)
                != 0
            {
                return Status::INVALID_FIELD;
            }
            ctrl.features.async_event_config = value & supported;
        }
        feat::KEEP_ALIVE_TIMER => {
            ctrl.kato_ms = value;
            ctrl.last_keep_alive = now;
        }
        feat::HOST_IDENTIFIER => return Status::COMMAND_SEQUENCE_ERROR, // set at Connect
        _ => return Status::INVALID_FIELD,
    }
    Status::SUCCESS
}

fn get_features(ctrl: &mut Controller, req: &mut Request) -> Status {
    let cmd = req.cmd;
    let fid = cmd.feature_id();
    let select = cmd.feature_select();
    let changeable = matches!(
        fid,
        feat::ARBITRATION
            | feat::POWER_MANAGEMENT
            | feat::TEMPERATURE_THRESHOLD
            | feat::ERROR_RECOVERY
            | feat::VOLATILE_WRITE_CACHE
            | feat::NUMBER_OF_QUEUES
            | feat::ASYNC_EVENT_CONFIG
            | feat::KEEP_ALIVE_TIMER
    );
    if select == feat::select::SUPPORTED_CAPABILITIES {
        if !changeable && fid != feat::HOST_IDENTIFIER {
            return Status::INVALID_FIELD;
        }
        req.rsp.dw0 = u32::from(changeable).wrapping_shl(2).into();
        return Status::SUCCESS;
    }
    if select > feat::select::SUPPORTED_CAPABILITIES {
        return Status::INVALID_FIELD;
    }
    let defaults = select != feat::select::CURRENT;
    let f = &ctrl.features;
    let value = match fid {
        feat::ARBITRATION => f.arbitration * u32::from(!defaults),
        feat::POWER_MANAGEMENT => f.power_management * u32::from(!defaults),
        feat::TEMPERATURE_THRESHOLD => {
            if defaults {
                343
            } else {
                f.temperature_threshold
            }
        }
        feat::ERROR_RECOVERY => f.error_recovery * u32::from(!defaults),
        feat::VOLATILE_WRITE_CACHE => {
            if !ctrl.shared.advertised_vwc.load(Ordering::Relaxed) {
                return Status::INVALID_FIELD;
            }
            u32::from(defaults || f.volatile_write_cache)
        }
        feat::NUMBER_OF_QUEUES => {
            let n = u32::from(f.io_queues_granted_0based);
            n | (n << 16)
        }
        feat::ASYNC_EVENT_CONFIG => f.async_event_config * u32::from(!defaults),
        feat::KEEP_ALIVE_TIMER => ctrl.kato_ms,
        feat::HOST_IDENTIFIER => {
            if cmd.cdw11.get() & 1 == 0 {
                return Status::INVALID_FIELD; // only the 128-bit host id exists
            }
            let hostid = ctrl.shared.hostid;
            return copy_out(req, &hostid);
        }
        _ => return Status::INVALID_FIELD,
    };
    req.rsp.dw0 = value.into();
    Status::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ControllerShared;
    use crate::loopback::LoopbackTransport;
    use crate::subsystem::{Subsystem, SubsystemConfig};
    use nvme_spec::fabrics::{cc, csts, property_get_command, property_set_command};
    use std::sync::Arc;

    fn controller() -> Controller {
        let mut cfg = SubsystemConfig::new("nqn.2016-06.io.spdk:u1");
        cfg.serial = "SN42".into();
        let sub = Arc::new(Subsystem::from_config(1, &cfg).unwrap());
        let shared = Arc::new(ControllerShared::new(
            7,
            sub,
            0,
            0,
            "nqn.2016-06.io.spdk:h".into(),
            [3; 16],
            1,
        ));
        Controller::new(shared, (0, 0), 5000, 128, 16, Instant::now())
    }

    #[test]
    fn properties() {
        let mut c = controller();
        let mut v = 0;
        assert_eq!(
            property_get(&c, &property_get_command(1, property::CAP, true), &mut v),
            Status::SUCCESS
        );
        assert_eq!(v & 0xFFFF, 127);
        assert_eq!(
            property_get(&c, &property_get_command(1, property::VS, false), &mut v),
            Status::SUCCESS
        );
        assert_eq!(v, 0x10300);
        assert_eq!(
            property_get(&c, &property_get_command(1, property::VS, true), &mut v),
            Status::INVALID_FIELD
        );
        let en = property_set_command(1, property::CC, u64::from(cc::build(true, 6, 4, 0)), false);
        assert_eq!(
            property_set(&mut c, &en),
            AdminOutcome::Complete(Status::SUCCESS)
        );
        property_get(&c, &property_get_command(1, property::CSTS, false), &mut v);
        assert_eq!(v as u32 & csts::RDY, csts::RDY);
        let off = property_set_command(1, property::CC, 0, false);
        assert_eq!(
            property_set(&mut c, &off),
            AdminOutcome::CompleteAndTeardown(Status::SUCCESS)
        );
        let eight = property_set_command(1, property::CC, 0, true);
        assert_eq!(
            property_set(&mut c, &eight),
            AdminOutcome::Complete(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn identify_controller_fields() {
        let c = controller();
        let t = LoopbackTransport::new(8192, 262_144, 8192, 64).unwrap();
        let opts = crate::TargetOptions {
            max_io_bytes: 262_144,
            in_capsule_data_bytes: 8192,
            ..Default::default()
        };
        let target = Target::new(opts, vec![t.clone()]).unwrap();
        let listener = ListenAddress::new("loopback", "x", "1");
        let env = AdminEnv {
            target: &target,
            channels: None,
            listener: &listener,
            caps: crate::Transport::caps(&*t),
            now: Instant::now(),
        };
        let id = identify_controller(&c, &env);
        assert_eq!(id.cntlid.get(), 7);
        assert_eq!(&id.sn[..6], b"SN42  ");
        assert_eq!(id.mdts, 6);
        assert_eq!(id.ioccsz.get(), (64 + 8192) / 16);
        assert_eq!(id.kas.get(), KAS_100MS);
        assert_eq!(id.nn.get(), 32);
        assert_eq!(id.aerl as usize, AER_LIMIT - 1);
        assert_eq!(id.oaes.get(), aen::NAMESPACE_ATTRIBUTE);
    }
}
