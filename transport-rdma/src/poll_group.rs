//! The per-reactor RDMA poll group: devices (PD, CQ, pool MR), queue pairs,
//! CQ polling, and work requests batched per poll.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use dma::{BufPool, DmaMemory, PoolCache};
use nvme_spec::{FromBytes, IntoBytes, Sqe, Status};
use nvmf::transport::{
    plan_data, DataPlan, PendingQueue, Request, RequestId, TransportError, TransportEvent,
    TransportPollGroup, Xfer,
};
use rdma_sys as sys;

use crate::request::{RequestState, RequestTable};
use crate::verbs::{self, CmId, Cq, DeviceLimits, Mr, Pd};
use crate::{accept_private_data, ConnRequest, Notice, RdmaOptions, RdmaTransport};

/// Completions taken per CQ poll.
const WC_BATCH: usize = 32;
/// CQ size per device per reactor; queues beyond its budget are refused.
const CQ_ENTRIES: u32 = 16_384;
const CAPSULE_HEADER: usize = 64;
const RESPONSE_BYTES: usize = 16;

const KIND_RECV: u64 = 1;
const KIND_READ: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WRITE: u64 = 4;

fn wr_id(kind: u64, gen: u16, queue: u16, slot: u16) -> u64 {
    (kind << 56) | (u64::from(gen) << 32) | (u64::from(queue) << 16) | u64::from(slot)
}

fn decode(id: u64) -> (u64, u16, u16, u16) {
    (id >> 56, (id >> 32) as u16, (id >> 16) as u16, id as u16)
}

struct Device {
    ctx: *mut sys::ibv_context,
    limits: DeviceLimits,
    cqe_used: u32,
    // Drop order: MR, CQ, then PD.
    pool_mr: Mr,
    cq: Cq,
    pd: Pd,
}

struct Slot {
    req: Request,
    plan: DataPlan,
    recv_index: Option<u16>,
    data_sge: sys::ibv_sge,
    rsp_sge: sys::ibv_sge,
    data_wr: sys::ibv_send_wr,
    send_wr: sys::ibv_send_wr,
}

struct Recv {
    sge: sys::ibv_sge,
    wr: sys::ibv_recv_wr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Live,
    /// QP in error; waiting for the target to give its requests back.
    Dead,
    /// The target closed it; destroyed once every work request has flushed.
    Closing,
}

struct Queue {
    id: CmId,
    qp: *mut sys::ibv_qp,
    device: usize,
    gen: u16,
    capsule_bytes: usize,
    send_wrs: u32,
    recv_wrs: u32,
    table: RequestTable,
    slots: Box<[Slot]>,
    recvs: Box<[Recv]>,
    send_batch: Vec<*mut sys::ibv_send_wr>,
    recv_batch: Vec<*mut sys::ibv_recv_wr>,
    recv_posted: u32,
    sends_in_flight: u32,
    life: Life,
    // Drop order: the MR before the memory it covers.
    _mr: Mr,
    region: DmaMemory,
}

impl Queue {
    fn recv_offset(&self, recv: u16) -> usize {
        usize::from(recv) * self.capsule_bytes
    }
    fn response_offset(&self, slot: u16) -> usize {
        self.recvs.len() * self.capsule_bytes + usize::from(slot) * RESPONSE_BYTES
    }
}

pub(crate) struct RdmaPollGroup {
    reactor: usize,
    options: RdmaOptions,
    pool: Arc<BufPool>,
    cache: PoolCache,
    owners: Arc<Mutex<HashMap<usize, usize>>>,
    inbox: Arc<ArrayQueue<Notice>>,
    devices: Vec<Device>,
    queues: Vec<Option<Queue>>,
    to_report: VecDeque<u16>,
    wcs: Vec<sys::ibv_wc>,
    next_gen: u16,
}

impl RdmaPollGroup {
    pub(crate) fn new(
        t: &RdmaTransport,
        reactor: usize,
        inbox: Arc<ArrayQueue<Notice>>,
        cache: usize,
    ) -> RdmaPollGroup {
        RdmaPollGroup {
            reactor,
            options: t.options,
            pool: t.pool.clone(),
            cache: PoolCache::new(t.pool.clone(), cache),
            owners: t.owners.clone(),
            inbox,
            devices: Vec::new(),
            queues: Vec::new(),
            to_report: VecDeque::new(),
            wcs: vec![sys::ibv_wc::default(); WC_BATCH],
            next_gen: 1,
        }
    }

    fn device_for(&mut self, ctx: *mut sys::ibv_context) -> Result<usize, String> {
        if let Some(i) = self.devices.iter().position(|d| d.ctx == ctx) {
            return Ok(i);
        }
        let name = verbs::device_name(ctx);
        let limits = verbs::query_device(ctx).map_err(|e| format!("{name}: query device: {e}"))?;
        let pd = Pd::new(ctx).map_err(|e| format!("{name}: allocate PD: {e}"))?;
        let cq = Cq::new(ctx, CQ_ENTRIES.min(limits.max_cqe))
            .map_err(|e| format!("{name}: create CQ: {e}"))?;
        let mem = self.pool.memory();
        // One MR over the whole pool, however many hugepages it spans.
        let pool_mr = Mr::register(&pd, mem.as_ptr(), mem.len())
            .map_err(|e| format!("{name}: register data buffers: {e}"))?;
        log::info!(
            "reactor {}: RDMA device {name} ready (max_qp_wr {}, max_cqe {})",
            self.reactor,
            limits.max_qp_wr,
            limits.max_cqe
        );
        self.devices.push(Device {
            ctx,
            limits,
            cqe_used: 0,
            pool_mr,
            cq,
            pd,
        });
        Ok(self.devices.len() - 1)
    }

    fn setup_queue(&mut self, conn: &ConnRequest, qi: u16) -> Result<Queue, String> {
        let ctx = conn.id.context();
        if ctx.is_null() {
            return Err("connection has no RDMA device".into());
        }
        let d = self.device_for(ctx)?;
        let depth = conn.depth;
        let (send_wrs, recv_wrs) = (2 * u32::from(depth) + 1, u32::from(depth));
        let dev = &mut self.devices[d];
        if send_wrs > dev.limits.max_qp_wr {
            return Err(format!(
                "queue depth {depth} needs {send_wrs} send WRs; the device allows {}",
                dev.limits.max_qp_wr
            ));
        }
        if dev.cqe_used + send_wrs + recv_wrs > CQ_ENTRIES.min(dev.limits.max_cqe) {
            return Err("completion queue budget of this reactor is used up".into());
        }
        let qp = conn
            .id
            .create_qp(dev.pd.0, dev.cq.0, send_wrs, recv_wrs)
            .map_err(|e| format!("create QP: {e}"))?;
        let capsule_bytes = CAPSULE_HEADER + self.options.in_capsule_data_bytes as usize;
        let size = usize::from(depth) * (capsule_bytes + RESPONSE_BYTES);
        let region_mr = DmaMemory::allocate_ordinary(size)
            .map_err(|e| format!("capsule buffers: {e}"))
            .and_then(|r| {
                Mr::register(&dev.pd, r.as_ptr(), r.len())
                    .map(|m| (r, m))
                    .map_err(|e| format!("register capsule buffers: {e}"))
            });
        let (region, mr) = match region_mr {
            Ok(v) => v,
            Err(e) => {
                conn.id.destroy_qp();
                return Err(e);
            }
        };
        dev.cqe_used += send_wrs + recv_wrs;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let base = region.as_ptr() as u64;
        let lkey = mr.lkey();
        let recvs: Box<[Recv]> = (0..depth)
            .map(|i| Recv {
                sge: sys::ibv_sge {
                    addr: base + (usize::from(i) * capsule_bytes) as u64,
                    length: capsule_bytes as u32,
                    lkey,
                },
                wr: sys::ibv_recv_wr {
                    wr_id: wr_id(KIND_RECV, gen, qi, i),
                    ..Default::default()
                },
            })
            .collect();
        let resp_base = base + (usize::from(depth) * capsule_bytes) as u64;
        let slots: Box<[Slot]> = (0..depth)
            .map(|i| Slot {
                req: Request::new(),
                plan: DataPlan::None,
                recv_index: None,
                data_sge: sys::ibv_sge::default(),
                rsp_sge: sys::ibv_sge {
                    addr: resp_base + (usize::from(i) * RESPONSE_BYTES) as u64,
                    length: RESPONSE_BYTES as u32,
                    lkey,
                },
                data_wr: sys::ibv_send_wr::default(),
                send_wr: sys::ibv_send_wr {
                    wr_id: wr_id(KIND_SEND, gen, qi, i),
                    num_sge: 1,
                    opcode: sys::ibv_wr_opcode::IBV_WR_SEND,
                    send_flags: sys::ibv_send_flags::IBV_SEND_SIGNALED,
                    ..Default::default()
                },
            })
            .collect();
        let mut q = Queue {
            id: conn.id,
            qp,
            device: d,
            gen,
            capsule_bytes,
            send_wrs,
            recv_wrs,
            table: RequestTable::new(depth, u16::from(conn.initiator_depth.max(1))),
            slots,
            recvs,
            send_batch: Vec::with_capacity(2 * usize::from(depth) + 1),
            recv_batch: Vec::with_capacity(usize::from(depth)),
            recv_posted: 0,
            sends_in_flight: 0,
            life: Life::Live,
            _mr: mr,
            region,
        };
        // The boxed tables never move again: point the WRs at their SGEs now.
        for s in q.slots.iter_mut() {
            s.send_wr.sg_list = &mut s.rsp_sge;
            s.data_wr.sg_list = &mut s.data_sge;
            s.data_wr.num_sge = 1;
        }
        for r in q.recvs.iter_mut() {
            r.wr.sg_list = &mut r.sge;
            r.wr.num_sge = 1;
        }
        let all: Vec<*mut sys::ibv_recv_wr> =
            q.recvs.iter_mut().map(|r| &mut r.wr as *mut _).collect();
        if let Err(e) = verbs::post_recv_chain(qp, &all) {
            self.devices[d].cqe_used -= send_wrs + recv_wrs;
            drop(q);
            conn.id.destroy_qp();
            return Err(format!("post receives: {e}"));
        }
        q.recv_posted = u32::from(depth);
        Ok(q)
    }

    /// Moves a queue to the dead state once: QP to error, waiting requests dropped.
    fn kill(&mut self, qi: u16) {
        let Some(q) = self.queues[usize::from(qi)].as_mut() else {
            return;
        };
        if q.life != Life::Live {
            return;
        }
        q.life = Life::Dead;
        q.id.disconnect();
        // Work requests never posted will never complete: settle them here.
        for &wr in &q.send_batch {
            let (kind, _, _, slot) = decode(verbs::send_wr_id(wr));
            let s = &mut q.slots[usize::from(slot)];
            match kind {
                KIND_SEND => {
                    q.sends_in_flight -= 1;
                    q.table.free(slot);
                    if let Some(b) = s.req.data.take() {
                        self.cache.put(b);
                    }
                }
                KIND_READ => {
                    q.table.read_flushed(slot);
                    if let Some(b) = s.req.data.take() {
                        self.cache.put(b);
                    }
                }
                _ => {}
            }
        }
        q.send_batch.clear();
        q.recv_batch.clear();
        for (i, s) in q.slots.iter_mut().enumerate() {
            let st = q.table.state(i as u16);
            if matches!(
                st,
                RequestState::NeedBuffer
                    | RequestState::NeedReadCredit
                    | RequestState::ReadyToExecute
            ) {
                if let Some(b) = s.req.data.take() {
                    self.cache.put(b);
                }
                s.recv_index = None;
            }
        }
        q.table.abandon_waiting();
        self.to_report.push_back(qi);
    }

    fn on_wc(&mut self, wc: &sys::ibv_wc) {
        let (kind, gen, qi, slot) = decode(wc.wr_id);
        let Some(q) = self
            .queues
            .get_mut(usize::from(qi))
            .and_then(|q| q.as_mut())
            .filter(|q| q.gen == gen)
        else {
            return; // a late completion of a queue already gone
        };
        let ok = wc.status == sys::ibv_wc_status::IBV_WC_SUCCESS;
        match kind {
            KIND_RECV => {
                q.recv_posted -= 1;
                if !ok || q.life != Life::Live {
                    if !ok && q.life == Life::Live {
                        log::warn!(
                            "RDMA receive failed (status {}); closing the queue",
                            wc.status
                        );
                        self.kill(qi);
                    }
                    return;
                }
                let Some(s) = q.table.receive() else {
                    log::warn!(
                        "host overran an RDMA queue of depth {}; closing it",
                        q.slots.len()
                    );
                    self.kill(qi);
                    return;
                };
                let mut sqe_bytes = [0u8; CAPSULE_HEADER];
                let off = q.recv_offset(slot);
                let _ = q.region.read_at(off, &mut sqe_bytes);
                let sqe = Sqe::read_from_bytes(&sqe_bytes).expect("64 bytes");
                let sl = &mut q.slots[usize::from(s)];
                sl.req.reset(sqe);
                sl.recv_index = Some(slot);
                match plan_data(
                    &sqe,
                    self.options.in_capsule_data_bytes,
                    self.options.max_io_bytes,
                ) {
                    Ok(DataPlan::InCapsule { offset, len })
                        if (CAPSULE_HEADER + offset as usize + len as usize)
                            > wc.byte_len as usize =>
                    {
                        sl.plan = DataPlan::None;
                        sl.req.transport_status = Some(Status::DATA_SGL_LENGTH_INVALID);
                    }
                    Ok(plan) => sl.plan = plan,
                    Err(status) => {
                        sl.plan = DataPlan::None;
                        sl.req.transport_status = Some(status);
                    }
                }
                if !matches!(sl.plan, DataPlan::InCapsule { .. }) {
                    sl.recv_index = None;
                    q.recv_batch.push(&mut q.recvs[usize::from(slot)].wr);
                }
            }
            KIND_READ => {
                if ok && q.life == Life::Live {
                    q.table.read_done(slot);
                    return;
                }
                if q.life == Life::Live {
                    log::warn!("RDMA READ failed (status {}); closing the queue", wc.status);
                    self.kill(qi);
                }
                let q = self.queues[usize::from(qi)]
                    .as_mut()
                    .expect("queue checked above");
                if q.table.state(slot) == RequestState::ReadingFromHost {
                    q.table.read_flushed(slot);
                    if let Some(b) = q.slots[usize::from(slot)].req.data.take() {
                        self.cache.put(b);
                    }
                }
            }
            KIND_SEND => {
                q.sends_in_flight -= 1;
                q.table.free(slot);
                if let Some(b) = q.slots[usize::from(slot)].req.data.take() {
                    self.cache.put(b);
                }
                if !ok && q.life == Life::Live {
                    log::warn!("RDMA SEND failed (status {}); closing the queue", wc.status);
                    self.kill(qi);
                }
            }
            _ => {
                if !ok && q.life == Life::Live {
                    log::warn!(
                        "RDMA WRITE failed (status {}); closing the queue",
                        wc.status
                    );
                    self.kill(qi);
                }
            }
        }
    }

    /// Buffers, RDMA READs and ready requests of one live queue.
    fn progress(&mut self, qi: u16, events: &mut Vec<TransportEvent>) {
        let Some(q) = self.queues[usize::from(qi)].as_mut() else {
            return;
        };
        if q.life != Life::Live {
            return;
        }
        let pool_lkey = self.devices[q.device].pool_mr.lkey();
        while let Some(s) = q.table.next_needing_buffer() {
            let plan = q.slots[usize::from(s)].plan;
            let (len, xfer) = match plan {
                DataPlan::None => (0, Xfer::None),
                DataPlan::InCapsule { len, .. } => (len, Xfer::HostToController),
                DataPlan::Keyed { len, xfer, .. } => (len, xfer),
            };
            if len > 0 {
                let Some(mut buf) = self.cache.get() else {
                    break;
                };
                if let DataPlan::InCapsule { offset, .. } = plan {
                    let recv = q.slots[usize::from(s)]
                        .recv_index
                        .take()
                        .expect("in-capsule data keeps its receive");
                    let at = q.recv_offset(recv) + CAPSULE_HEADER + offset as usize;
                    let _ = q
                        .region
                        .read_at(at, &mut buf.as_mut_slice()[..len as usize]);
                    q.recv_batch.push(&mut q.recvs[usize::from(recv)].wr);
                }
                q.slots[usize::from(s)].req.data = Some(buf);
            }
            let sl = &mut q.slots[usize::from(s)];
            sl.req.length = len;
            sl.req.xfer = xfer;
            q.table.buffer_ready(&plan);
        }
        while let Some(s) = q.table.take_read_credit() {
            let sl = &mut q.slots[usize::from(s)];
            let DataPlan::Keyed { addr, len, key, .. } = sl.plan else {
                unreachable!("only keyed data is read")
            };
            let buf = sl
                .req
                .data
                .as_ref()
                .expect("a reading request has its buffer");
            sl.data_sge = sys::ibv_sge {
                addr: buf.as_ptr() as u64,
                length: len,
                lkey: pool_lkey,
            };
            sl.data_wr.wr_id = wr_id(KIND_READ, q.gen, qi, s);
            sl.data_wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_READ;
            sl.data_wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED;
            sl.data_wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
                remote_addr: addr,
                rkey: key,
            };
            q.send_batch.push(&mut sl.data_wr);
        }
        while events.len() < events.capacity() {
            let Some(s) = q.table.take_ready() else { break };
            events.push(TransportEvent::Request(RequestId { queue: qi, slot: s }));
        }
    }

    /// Frees a closed queue once all its work requests have flushed.
    fn try_destroy(&mut self, qi: u16) {
        let Some(q) = self.queues[usize::from(qi)].as_ref() else {
            return;
        };
        if q.life != Life::Closing
            || q.recv_posted > 0
            || q.sends_in_flight > 0
            || !q.table.all_free()
        {
            return;
        }
        let q = self.queues[usize::from(qi)].take().expect("checked");
        self.devices[q.device].cqe_used -= q.send_wrs + q.recv_wrs;
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&q.id.addr());
        let id = q.id;
        drop(q); // MR and capsule memory
        id.destroy(true);
        log::debug!("reactor {}: RDMA queue {qi} destroyed", self.reactor);
    }
}

impl TransportPollGroup for RdmaPollGroup {
    fn adopt(&mut self, pending: PendingQueue) -> Result<u16, TransportError> {
        let mut conn = pending
            .conn
            .downcast::<ConnRequest>()
            .map_err(|_| TransportError::Other("not an RDMA connection".into()))?;
        let qi = match self.queues.iter().position(|q| q.is_none()) {
            Some(i) => i,
            None => {
                self.queues.push(None);
                self.queues.len() - 1
            }
        };
        // On any error, dropping `conn` rejects the connection and frees its id.
        let q = self
            .setup_queue(&conn, qi as u16)
            .map_err(TransportError::Full)?;
        let private = accept_private_data(conn.depth);
        if let Err(e) = conn.id.accept(
            private.as_bytes(),
            conn.responder_resources,
            conn.initiator_depth,
        ) {
            self.devices[q.device].cqe_used -= q.send_wrs + q.recv_wrs;
            drop(q);
            conn.id.destroy_qp();
            return Err(TransportError::Other(format!("RDMA accept: {e}")));
        }
        conn.accepted = true;
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.id.addr(), self.reactor);
        self.queues[qi] = Some(q);
        Ok(qi as u16)
    }

    fn poll(&mut self, events: &mut Vec<TransportEvent>) -> usize {
        let start = events.len();
        while let Some(Notice::Disconnected(id)) = self.inbox.pop() {
            if let Some(qi) = self
                .queues
                .iter()
                .position(|q| q.as_ref().is_some_and(|q| q.id == id))
            {
                self.kill(qi as u16);
            }
        }
        for d in 0..self.devices.len() {
            let mut wcs = std::mem::take(&mut self.wcs);
            let n = self.devices[d].cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                self.on_wc(wc);
            }
            self.wcs = wcs;
        }
        for qi in 0..self.queues.len() {
            self.progress(qi as u16, events);
            self.try_destroy(qi as u16);
        }
        while events.len() < events.capacity() {
            let Some(qi) = self.to_report.pop_front() else {
                break;
            };
            events.push(TransportEvent::QueueDisconnected { queue: qi });
        }
        events.len() - start
    }

    fn request(&mut self, id: RequestId) -> &mut Request {
        let q = self.queues[usize::from(id.queue)]
            .as_mut()
            .expect("request of a closed queue");
        &mut q.slots[usize::from(id.slot)].req
    }

    fn complete(&mut self, id: RequestId) {
        let q = self.queues[usize::from(id.queue)]
            .as_mut()
            .expect("completion on a closed queue");
        let s = id.slot;
        if q.life != Life::Live {
            if let Some(b) = q.slots[usize::from(s)].req.data.take() {
                self.cache.put(b);
            }
            q.table.free(s);
            return;
        }
        let off = q.response_offset(s);
        let rsp = q.slots[usize::from(s)].req.rsp;
        let _ = q.region.write_at(off, rsp.as_bytes());
        let pool_lkey = self.devices[q.device].pool_mr.lkey();
        let sl = &mut q.slots[usize::from(s)];
        if let DataPlan::Keyed {
            addr,
            key,
            xfer: Xfer::ControllerToHost,
            ..
        } = sl.plan
        {
            if rsp.status().is_success() && sl.req.length > 0 {
                let buf = sl
                    .req
                    .data
                    .as_ref()
                    .expect("controller-to-host data has a buffer");
                let start = buf.as_ptr() as u64 + u64::from(sl.req.data_offset);
                sl.data_sge = sys::ibv_sge {
                    addr: start,
                    length: sl.req.length,
                    lkey: pool_lkey,
                };
                sl.data_wr.wr_id = wr_id(KIND_WRITE, q.gen, id.queue, s);
                sl.data_wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                sl.data_wr.send_flags = 0;
                sl.data_wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
                    remote_addr: addr,
                    rkey: key,
                };
                q.send_batch.push(&mut sl.data_wr);
            }
        }
        q.send_batch.push(&mut sl.send_wr);
        q.sends_in_flight += 1;
        q.table.completing(s);
    }

    fn flush(&mut self) {
        for qi in 0..self.queues.len() {
            let Some(q) = self.queues[qi].as_mut() else {
                continue;
            };
            if q.life != Life::Live {
                continue;
            }
            let recvs = std::mem::take(&mut q.recv_batch);
            let posted_recv = verbs::post_recv_chain(q.qp, &recvs);
            q.recv_posted += recvs.len() as u32;
            q.recv_batch = recvs;
            q.recv_batch.clear();
            let sends = std::mem::take(&mut q.send_batch);
            let posted_send = verbs::post_send_chain(q.qp, &sends);
            q.send_batch = sends;
            if posted_send.is_ok() {
                q.send_batch.clear();
            }
            if let Err(e) = posted_recv.and(posted_send) {
                log::warn!("RDMA post failed ({e}); closing the queue");
                self.kill(qi as u16);
            }
        }
    }

    fn disconnect(&mut self, queue: u16) {
        self.kill(queue);
    }

    fn close_queue(&mut self, queue: u16) {
        if let Some(q) = self.queues[usize::from(queue)].as_mut() {
            assert_eq!(
                q.table.held_by_target(),
                0,
                "closing a queue whose requests the target holds"
            );
            q.life = Life::Closing;
        }
        self.try_destroy(queue);
    }

    fn queue_count(&self) -> usize {
        self.queues.iter().flatten().count()
    }
}
