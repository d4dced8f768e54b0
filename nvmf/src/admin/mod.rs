//! Admin commands (and the Property Get/Set fabrics commands) of a controller.
//!
//! Handlers build their answer on the stack and copy it into the request's
//! data buffer. Nothing here is on the I/O path.

mod features;
mod identify;
mod log_page;

use std::time::Instant;

use nvme_spec::fabrics::{self, property};
use nvme_spec::features as feat;
use nvme_spec::identify::cns;
use nvme_spec::log::lid;
use nvme_spec::opcode::admin;
use nvme_spec::{Sqe, Status};

use crate::controller::{Controller, ControllerState};
use crate::poll_group::PollGroup;
use crate::poll_group::{NsChannel, SubsystemChannels};
use crate::target::Target;
use crate::transport::RequestId;
use crate::transport::{ListenAddress, Request, TransportCaps};

use features::{get_features, set_features};
use identify::identify;
use log_page::get_log_page;

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
    /// The limits of the transport the admin queue came through.
    pub opts: crate::TargetOptions,
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

impl PollGroup {
    /// Runs an admin command on the controller in `slot`.
    pub(crate) fn admin(&mut self, t: usize, id: RequestId, slot: usize, cmd: &Sqe) {
        if cmd.opcode == admin::ABORT
            && cmd.abort_sqid() == 0
            && self.abort_held_aer(slot, cmd.abort_cid())
        {
            self.transports[t].request(id).rsp.dw0 = 0.into();
            return self.finish(t, id, Status::SUCCESS);
        }
        let caps = self.target.transport(t).caps();
        let opts = self.target.transport_options(t);
        let ctrl = self.controllers[slot]
            .as_mut()
            .expect("admin queue without controller");
        let env = AdminEnv {
            target: &self.target,
            channels: self
                .subsystems
                .get(ctrl.shared.subsystem.id)
                .and_then(|s| s.as_ref()),
            listener: &self.queues[t][usize::from(id.queue)]
                .as_ref()
                .expect("queue of a request")
                .listener,
            caps,
            opts,
            now: self.now,
        };
        let req = self.transports[t].request(id);
        let outcome = execute(ctrl, req, &env);
        if let AdminOutcome::Complete(s) = outcome {
            if !s.is_success() {
                ctrl.log_error(0, cmd.cid(), s, cmd.nsid(), 0);
            }
        }
        self.admin_outcome(t, id, slot, outcome);
    }

    pub(crate) fn admin_outcome(
        &mut self,
        t: usize,
        id: RequestId,
        slot: usize,
        outcome: AdminOutcome,
    ) {
        match outcome {
            AdminOutcome::Complete(status) => self.finish(t, id, status),
            AdminOutcome::HoldAer => {
                let ctrl = self.controllers[slot]
                    .as_mut()
                    .expect("admin queue without controller");
                ctrl.aers
                    .push(id)
                    .expect("AER limit checked before holding");
            }
            AdminOutcome::CompleteAndTeardown(status) => {
                let mut ctrl = self.controllers[slot]
                    .take()
                    .expect("admin queue without controller");
                self.teardown_io_queues(&mut ctrl);
                self.controllers[slot] = Some(ctrl);
                self.finish(t, id, status);
            }
        }
    }

    /// Completes a held AER with Abort Requested; false when none has `cid`.
    fn abort_held_aer(&mut self, slot: usize, cid: u16) -> bool {
        let Some(ctrl) = self.controllers[slot].as_mut() else {
            return false;
        };
        let t = ctrl.admin_queue.0;
        let mut found = None;
        for _ in 0..ctrl.aers.len() {
            let aer = ctrl.aers.pop().expect("length checked");
            if found.is_none() && self.transports[t].request(aer).cmd.cid() == cid {
                found = Some(aer);
            } else {
                ctrl.aers.push(aer).expect("room: one was just popped");
            }
        }
        match found {
            Some(aer) => {
                self.finish(t, aer, Status::ABORT_REQUESTED);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::identify::identify_controller;
    use super::*;
    use crate::controller::{ControllerShared, AER_LIMIT, KAS_100MS};
    use crate::loopback::LoopbackTransport;
    use crate::subsystem::{Subsystem, SubsystemConfig};
    use nvme_spec::fabrics::{cc, csts, property_get_command, property_set_command};
    use nvme_spec::features::aen;
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
            opts: target.transport_options(0),
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
