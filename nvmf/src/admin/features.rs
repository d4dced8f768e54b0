//! Set and Get Features.

use std::sync::atomic::Ordering;
use std::time::Instant;

use nvme_spec::features::{self as feat, aen};
use nvme_spec::Status;

use crate::controller::Controller;
use crate::transport::Request;

use super::*;

pub(super) fn set_features(ctrl: &mut Controller, req: &mut Request, now: Instant) -> Status {
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

pub(super) fn get_features(ctrl: &mut Controller, req: &mut Request) -> Status {
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
