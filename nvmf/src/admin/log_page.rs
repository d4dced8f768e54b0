//! Get Log Page: error, SMART, firmware, changed namespaces, effects and discovery logs.

use std::sync::atomic::Ordering;

use nvme_spec::identify::oncs;
use nvme_spec::log::{effects, lid, ChangedNsList, CommandEffectsLog, FirmwareSlotLog, SmartLog};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{put_ascii_padded, put_u128, FromZeros, IntoBytes, Status, U16, U32};

use crate::controller::Controller;
use crate::transport::Request;

use super::*;

pub(super) fn get_log_page(ctrl: &mut Controller, req: &mut Request, env: &AdminEnv) -> Status {
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

pub(super) fn smart_log(ctrl: &Controller, env: &AdminEnv) -> SmartLog {
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
pub(super) fn command_effects(advertised_oncs: u16) -> CommandEffectsLog {
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
