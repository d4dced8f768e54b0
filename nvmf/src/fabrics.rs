//! Fabrics commands on a queue: Connect (admin and I/O) and Property Get/Set.

use std::sync::Arc;

use nvme_spec::fabrics::{
    connect_invalid_param_dw0, connect_offset, ConnectCommand, ConnectData, CNTLID_DYNAMIC,
    IATTR_COMMAND, IATTR_DATA,
};
use nvme_spec::opcode::fctype;
use nvme_spec::{get_str_nul_padded, FromBytes, Sqe, Status};

use crate::admin::{self};
use crate::controller::{Controller, ControllerShared, ControllerState, IoQueueRef};
use crate::nqn::validate_nqn;
use crate::poll_group::{PollGroup, QueueRole, MAX_CONTROLLERS_PER_POLL_GROUP};
use crate::subsystem::Subsystem;
use crate::target::MIN_ADMIN_QUEUE_DEPTH;
use crate::transport::RequestId;

/// A Connect failure: the status and the CQE dw0 (IATTR/IPO where it applies).
type ConnectError = (Status, u32);

fn invalid_param(iattr: u8, ipo: u16) -> ConnectError {
    (
        Status::CONNECT_INVALID_PARAMETERS,
        connect_invalid_param_dw0(iattr, ipo),
    )
}

/// What a valid Connect asks for.
struct ConnectRequest {
    subsystem: Arc<Subsystem>,
    qid: u16,
    sq_size: u32,
    kato_ms: u32,
    cntlid: u16,
    hostnqn: String,
    hostid: [u8; 16],
}

impl PollGroup {
    pub(crate) fn fabrics(&mut self, t: usize, id: RequestId, cmd: &Sqe) {
        let slot = match self.queue(t, id.queue).role {
            QueueRole::Admin { ctrl_slot } => Some(ctrl_slot),
            _ => None,
        };
        match (cmd.fctype(), slot) {
            (fctype::CONNECT, _) => self.connect(t, id, cmd),
            (fctype::PROPERTY_GET, Some(slot)) => {
                let ctrl = self.controllers[slot]
                    .as_mut()
                    .expect("admin queue without controller");
                let mut value = 0;
                let status = admin::property_get(ctrl, cmd, &mut value);
                self.transports[t].request(id).rsp.set_value_u64(value);
                self.finish(t, id, status);
            }
            (fctype::PROPERTY_SET, Some(slot)) => {
                let ctrl = self.controllers[slot]
                    .as_mut()
                    .expect("admin queue without controller");
                let outcome = admin::property_set(ctrl, cmd);
                self.admin_outcome(t, id, slot, outcome);
            }
            (fctype::PROPERTY_GET | fctype::PROPERTY_SET, None) => {
                let connected = !matches!(
                    self.queue(t, id.queue).role,
                    QueueRole::Unconnected | QueueRole::Connecting
                );
                // Properties live on the admin queue; before Connect nothing does.
                let status = if connected {
                    Status::INVALID_OPCODE
                } else {
                    Status::COMMAND_SEQUENCE_ERROR
                };
                self.finish(t, id, status);
            }
            _ => self.finish(t, id, Status::INVALID_OPCODE),
        }
    }

    fn connect(&mut self, t: usize, id: RequestId, cmd: &Sqe) {
        if !matches!(self.queue(t, id.queue).role, QueueRole::Unconnected) {
            remote_log!(
                self,
                Some((t, id.queue)),
                "",
                warn,
                "second Connect on queue {} rejected",
                id.queue
            );
            return self.finish(t, id, Status::COMMAND_SEQUENCE_ERROR);
        }
        let parsed = self.parse_connect(t, id, cmd);
        let result = parsed.and_then(|c| {
            if c.qid == 0 {
                self.connect_admin(t, id, c)
            } else {
                self.connect_io(t, id, c)
            }
        });
        match result {
            Ok(None) => {} // forwarded to the controller's reactor
            Ok(Some(cntlid)) => {
                self.transports[t].request(id).rsp.dw0 = u32::from(cntlid).into();
                self.finish(t, id, Status::SUCCESS);
            }
            Err((status, dw0)) => {
                self.transports[t].request(id).rsp.dw0 = dw0.into();
                self.finish(t, id, status);
            }
        }
    }

    fn parse_connect(
        &mut self,
        t: usize,
        id: RequestId,
        cmd: &Sqe,
    ) -> Result<ConnectRequest, ConnectError> {
        if cmd.connect_recfmt() != 0 {
            return Err((
                Status::CONNECT_INCOMPATIBLE_FORMAT,
                connect_invalid_param_dw0(IATTR_COMMAND, connect_offset::RECFMT),
            ));
        }
        let qid = cmd.connect_qid();
        if qid != self.queue(t, id.queue).announced_qid {
            let announced = self.queue(t, id.queue).announced_qid;
            remote_log!(
                self,
                Some((t, id.queue)),
                "",
                warn,
                "Connect for qid {qid} on a queue the transport set up as qid {announced}"
            );
            return Err(invalid_param(IATTR_COMMAND, connect_offset::QID));
        }
        let listener = self.queues[t][usize::from(id.queue)]
            .as_ref()
            .expect("queue of a request")
            .listener
            .clone();
        let req = self.transports[t].request(id);
        let mut bytes = [0u8; std::mem::size_of::<ConnectData>()];
        if !req.read_data(0, &mut bytes) {
            return Err((Status::DATA_SGL_LENGTH_INVALID, 0));
        }
        let Ok((data, _)) = ConnectData::read_from_prefix(&bytes[..]) else {
            return Err((Status::DATA_SGL_LENGTH_INVALID, 0));
        };
        let subnqn = get_str_nul_padded(&data.subnqn, true)
            .ok_or(invalid_param(IATTR_DATA, connect_offset::DATA_SUBNQN))?;
        let hostnqn = get_str_nul_padded(&data.hostnqn, true)
            .ok_or(invalid_param(IATTR_DATA, connect_offset::DATA_HOSTNQN))?;
        // An empty host NQN (SPDK's perf and identify send one unless told
        // -H): accepted where any host is, as SPDK's target and nvmet do; it
        // can never match a hosts list.
        if hostnqn.is_empty() {
            remote_log!(
                self,
                Some((t, id.queue)),
                "",
                info,
                "Connect from a host that gave no NQN, to {subnqn}"
            );
        } else if let Err(e) = validate_nqn(hostnqn) {
            remote_log!(
                self,
                Some((t, id.queue)),
                hostnqn,
                warn,
                "Connect refused: host NQN invalid: {e}"
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_HOSTNQN));
        }
        let Some(subsystem) = self.target.find_subsystem(subnqn) else {
            remote_log!(
                self,
                Some((t, id.queue)),
                hostnqn,
                warn,
                "Connect refused: host {hostnqn} asked for unknown subsystem {subnqn:?}"
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_SUBNQN));
        };
        if !subsystem.listener_allowed(&listener) {
            remote_log!(
                self,
                Some((t, id.queue)),
                hostnqn,
                warn,
                "Connect refused: subsystem {subnqn} does not listen on {listener}"
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_SUBNQN));
        }
        if !subsystem.host_allowed(hostnqn) {
            remote_log!(self, Some((t, id.queue)), hostnqn, warn, "Connect refused: host {hostnqn} is not allowed on {subnqn} (add it to hosts or set allow_any_host)");
            return Err((
                Status::CONNECT_INVALID_HOST,
                connect_invalid_param_dw0(IATTR_DATA, connect_offset::DATA_HOSTNQN),
            ));
        }
        let opts = &self.target.transport_options(t);
        let max_depth = if qid == 0 {
            opts.max_admin_queue_depth
        } else {
            opts.max_queue_depth
        };
        let sq_size = u32::from(cmd.connect_sqsize()) + 1;
        // NVMe-oF: an admin queue holds at least 32 entries.
        let min_depth = if qid == 0 { MIN_ADMIN_QUEUE_DEPTH } else { 2 };
        if sq_size < u32::from(min_depth) || sq_size > u32::from(max_depth) {
            remote_log!(
                self,
                Some((t, id.queue)),
                hostnqn,
                warn,
                "Connect refused: queue size {sq_size} outside {min_depth}..={max_depth}"
            );
            return Err(invalid_param(IATTR_COMMAND, connect_offset::SQSIZE));
        }
        if qid > 0 && subsystem.is_discovery() {
            return Err(invalid_param(IATTR_COMMAND, connect_offset::QID));
        }
        Ok(ConnectRequest {
            qid,
            sq_size,
            kato_ms: cmd.connect_kato_ms(),
            cntlid: data.cntlid.get(),
            hostnqn: hostnqn.to_owned(),
            hostid: data.hostid,
            subsystem,
        })
    }

    /// Creates a controller for a new admin queue; returns its cntlid.
    fn connect_admin(
        &mut self,
        t: usize,
        id: RequestId,
        c: ConnectRequest,
    ) -> Result<Option<u16>, ConnectError> {
        if c.cntlid != CNTLID_DYNAMIC {
            remote_log!(
                self,
                Some((t, id.queue)),
                &c.hostnqn,
                warn,
                "Connect refused: static controller id {} requested; this target is dynamic",
                c.cntlid
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_CNTLID));
        }
        let slot = match self.controllers.iter().position(|c| c.is_none()) {
            Some(s) => s,
            None if self.controllers.len() < MAX_CONTROLLERS_PER_POLL_GROUP => {
                self.controllers.push(None);
                self.controllers.len() - 1
            }
            None => return Err((Status::CONNECT_CONTROLLER_BUSY, 0)),
        };
        let (reactor, reactors) = (self.reactor, self.reactors.reactor_count());
        let sub = c.subsystem.clone();
        let hostnqn = c.hostnqn.clone();
        let shared = c
            .subsystem
            .register_controller(|cntlid| {
                Arc::new(ControllerShared::new(
                    cntlid, sub, reactor, slot, hostnqn, c.hostid, reactors,
                ))
            })
            .ok_or((Status::CONNECT_CONTROLLER_BUSY, 0))?;
        let opts = &self.target.transport_options(t);
        let ctrl = Controller::new(
            shared.clone(),
            (t, id.queue),
            c.kato_ms,
            opts.max_queue_depth,
            opts.max_queues_per_controller,
            self.now,
        );
        remote_log!(
            self,
            Some((t, id.queue)),
            &c.hostnqn,
            info,
            "controller {} of {} created for host {} on reactor {reactor} (KATO {} ms)",
            shared.cntlid,
            c.subsystem.nqn,
            c.hostnqn,
            ctrl.kato_ms
        );
        self.controllers[slot] = Some(ctrl);
        let q = self.queue(t, id.queue);
        q.role = QueueRole::Admin { ctrl_slot: slot };
        q.sq_size = c.sq_size;
        self.admin_queues_connected += 1;
        Ok(Some(shared.cntlid))
    }

    /// Joins an I/O queue to its controller, by message when the controller
    /// lives on another reactor.
    fn connect_io(
        &mut self,
        t: usize,
        id: RequestId,
        c: ConnectRequest,
    ) -> Result<Option<u16>, ConnectError> {
        let Some(shared) = c.subsystem.find_controller(c.cntlid) else {
            remote_log!(
                self,
                Some((t, id.queue)),
                &c.hostnqn,
                warn,
                "I/O queue Connect refused: no controller {} in {}",
                c.cntlid,
                c.subsystem.nqn
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_CNTLID));
        };
        if shared.hostnqn != c.hostnqn || shared.hostid != c.hostid {
            remote_log!(
                self,
                Some((t, id.queue)),
                &c.hostnqn,
                warn,
                "I/O queue Connect refused: host {} does not own controller {}",
                c.hostnqn,
                c.cntlid
            );
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_HOSTNQN));
        }
        let q = self.queue(t, id.queue);
        q.role = QueueRole::Connecting;
        q.sq_size = c.sq_size;
        let (qid, at) = (
            c.qid,
            IoQueueRef {
                reactor: self.reactor,
                transport: t,
                queue: id.queue,
            },
        );
        if shared.owner_reactor == self.reactor {
            let result = self.attach_io_queue(&shared, qid, at);
            self.finish_io_connect(t, id, qid, shared, result);
        } else {
            self.send_to_owner(&shared, move |owner, shared| {
                let result = owner.attach_io_queue(&shared, qid, at);
                let sent = owner.reactors.send(at.reactor, move |ctx| {
                    crate::target::with_poll_group(ctx, |pg| {
                        pg.finish_io_connect(t, id, qid, shared, result)
                    });
                });
                if let Err(e) = sent {
                    log::error!(
                        "I/O queue Connect reply to reactor {} lost: {e:?}",
                        at.reactor
                    );
                }
            });
        }
        Ok(None)
    }

    /// On the owner's reactor: records the I/O queue in its controller.
    fn attach_io_queue(
        &mut self,
        shared: &Arc<ControllerShared>,
        qid: u16,
        at: IoQueueRef,
    ) -> Result<(), ConnectError> {
        let Some(ctrl) = self.owned_controller(shared) else {
            return Err(invalid_param(IATTR_DATA, connect_offset::DATA_CNTLID));
        };
        let (cntlid, granted) = (ctrl.cntlid(), ctrl.io_queues_granted());
        let refusal = if ctrl.state != ControllerState::Ready {
            Some((
                "is not enabled (CC.EN=0)",
                (Status::COMMAND_SEQUENCE_ERROR, 0),
            ))
        } else if qid > granted || usize::from(qid) >= ctrl.io_queues.len() {
            Some((
                "granted fewer I/O queues",
                invalid_param(IATTR_COMMAND, connect_offset::QID),
            ))
        } else if ctrl.io_queues[usize::from(qid)].is_some() {
            Some((
                "has that qid connected already",
                invalid_param(IATTR_COMMAND, connect_offset::QID),
            ))
        } else {
            ctrl.io_queues[usize::from(qid)] = Some(at);
            None
        };
        match refusal {
            None => Ok(()),
            Some((why, err)) => {
                remote_log!(
                    self,
                    None,
                    &shared.hostnqn,
                    warn,
                    "I/O queue Connect refused: qid {qid}: controller {cntlid} {why} \
                     ({granted} granted)"
                );
                Err(err)
            }
        }
    }

    /// On the queue's reactor: the owner answered.
    fn finish_io_connect(
        &mut self,
        t: usize,
        id: RequestId,
        qid: u16,
        shared: Arc<ControllerShared>,
        result: Result<(), ConnectError>,
    ) {
        let Some(q) = self.queues[t]
            .get_mut(usize::from(id.queue))
            .and_then(|q| q.as_mut())
        else {
            unreachable!("a queue holding a Connect request is never released");
        };
        if q.disconnected {
            if result.is_ok() {
                let at = IoQueueRef {
                    reactor: self.reactor,
                    transport: t,
                    queue: id.queue,
                };
                self.send_to_owner(&shared, move |pg, shared| {
                    pg.detach_io_queue(&shared, qid, at)
                });
            }
            return self.finish(t, id, Status::ABORTED_SQ_DELETION);
        }
        match result {
            Ok(()) => {
                q.role = QueueRole::Io {
                    ctrl: shared.clone(),
                    qid,
                };
                self.io_queues_connected += 1;
                log::debug!(
                    "qid {qid} of controller {} connected on reactor {}",
                    shared.cntlid,
                    self.reactor
                );
                self.transports[t].request(id).rsp.dw0 = u32::from(shared.cntlid).into();
                self.finish(t, id, Status::SUCCESS);
            }
            Err((status, dw0)) => {
                q.role = QueueRole::Unconnected;
                self.transports[t].request(id).rsp.dw0 = dw0.into();
                self.finish(t, id, status);
            }
        }
    }
}
