//! A queue pair of the poll group: its request slots with their work
//! requests, how a capsule starts a request, and how a closed queue is torn down.

use std::time::Instant;

use dma::{DmaBuf, DmaMemory, PoolCache};
use nvme_spec::{IntoBytes, Sqe, Status};
use nvmf::transport::{plan_data, DataPlan, Request, Xfer};
use rdma_sys as sys;

use super::data_wrs::{DataWrs, Geometry, Transfer};
use super::recv_ring::{RecvRing, RegisteredRing};
use super::{RdmaPollGroup, CAPSULE_HEADER, FLUSH_TIMEOUT, ICD_BUFFERS_PER_RECV, RESPONSE_BYTES};
use crate::request::DataNeed;

use crate::request::RequestTable;
use crate::verbs::{Connection, MemoryRegion, QpSpec, Verbs};
use crate::{ConnRequest, RdmaOptions};

pub(super) const KIND_RECV: u64 = 1;
pub(super) const KIND_READ: u64 = 2;
pub(super) const KIND_SEND: u64 = 3;
pub(super) const KIND_WRITE: u64 = 4;
/// A receive of a device's SRQ: named by device and receive index, not by queue.
pub(super) const KIND_SRQ_RECV: u64 = 5;

pub(super) fn wr_id(kind: u64, gen: u16, queue: u16, slot: u16) -> u64 {
    (kind << 56) | (u64::from(gen) << 32) | (u64::from(queue) << 16) | u64::from(slot)
}

pub(super) fn decode(id: u64) -> (u64, u16, u16, u16) {
    (id >> 56, (id >> 32) as u16, (id >> 16) as u16, id as u16)
}

pub(super) fn srq_wr_id(device: u16, index: u32) -> u64 {
    (KIND_SRQ_RECV << 56) | (u64::from(device) << 32) | u64::from(index)
}

/// Device and receive index of an SRQ receive's wr_id.
pub(super) fn decode_srq(id: u64) -> (usize, u32) {
    debug_assert_eq!(id >> 56, KIND_SRQ_RECV);
    (usize::from((id >> 32) as u16), id as u32)
}

pub(super) struct Slot {
    pub(super) req: Request,
    pub(super) plan: DataPlan,
    /// The RDMA READs or WRITEs of its data.
    pub(super) data: DataWrs,
    /// Its RDMA READs posted and not yet completed (each is signaled, so
    /// its buffer is released only once the NIC is done with every one).
    pub(super) reads_pending: u16,
    pub(super) rsp_sge: sys::ibv_sge,
    pub(super) send_wr: sys::ibv_send_wr,
}

/// Send flags of a response: signaled (its completion frees the request),
/// and inline when the QP takes `RESPONSE_BYTES` of inline data, which spares
/// the NIC a DMA read of the 16-byte CQE.
pub(super) fn response_send_flags(max_inline_bytes: u32) -> u32 {
    let mut flags = sys::ibv_send_flags::IBV_SEND_SIGNALED;
    if max_inline_bytes >= RESPONSE_BYTES as u32 {
        flags |= sys::ibv_send_flags::IBV_SEND_INLINE;
    }
    flags
}

/// The opcode and key to invalidate of a response: SEND_WITH_INV when the
/// command's keyed SGL asked for invalidation and the device may do it.
pub(super) fn response_opcode(plan: &DataPlan, send_with_invalidate: bool) -> (u32, u32) {
    match *plan {
        DataPlan::Keyed {
            invalidate: true,
            key,
            ..
        } if send_with_invalidate => (sys::ibv_wr_opcode::IBV_WR_SEND_WITH_INV, key),
        _ => (sys::ibv_wr_opcode::IBV_WR_SEND, 0),
    }
}

/// Gives a request's data buffer back to where it came from: the shared
/// pool (through this reactor's cache) or, by dropping it, the ICD pool of the
/// receive it was lent by.
pub(super) fn release_buffer(cache: &mut PoolCache, buf: DmaBuf) {
    if cache.pool().owns(&buf) {
        cache.put(buf);
    } else {
        drop(buf);
    }
}

/// The data plan of a capsule that arrived with `received_bytes` bytes.
pub(super) fn plan_capsule(
    sqe: &Sqe,
    received_bytes: u32,
    in_capsule_limit_bytes: u32,
    max_io_bytes: u32,
) -> Result<DataPlan, Status> {
    match plan_data(sqe, in_capsule_limit_bytes, max_io_bytes)? {
        DataPlan::InCapsule { offset, len }
            if CAPSULE_HEADER as u64 + u64::from(offset) + u64::from(len)
                > u64::from(received_bytes) =>
        {
            Err(Status::DATA_SGL_LENGTH_INVALID)
        }
        plan => Ok(plan),
    }
}

/// Fills the slot's RDMA WRITEs of controller-to-host data: exactly the
/// bytes the command produced (`Request::c2h_chunks`), never the whole SGL,
/// and nothing for a failed command. Returns how many (0: nothing to write).
pub(super) fn prepare_c2h_writes(sl: &mut Slot, pool_lkey: u32, wr_id: u64) -> usize {
    let DataPlan::Keyed {
        addr,
        key,
        len,
        xfer: Xfer::ControllerToHost,
        ..
    } = sl.plan
    else {
        return 0;
    };
    let c2h_len = sl.req.c2h_len();
    assert!(c2h_len <= len, "write beyond the host's SGL");
    if c2h_len == 0 {
        return 0;
    }
    let write = Transfer {
        opcode: sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
        wr_id,
        // Unsignaled: the response's SEND, posted after, completes them.
        send_flags: 0,
        remote_addr: addr,
        rkey: key,
    };
    match &sl.req.data {
        // One unit (most commands): no chunk walk.
        Some(buf) if buf.units() == 1 => {
            let start = buf.as_ptr() as u64 + u64::from(sl.req.data_offset);
            sl.data.fill_one(write, start, c2h_len, pool_lkey)
        }
        _ => {
            let pieces = sl
                .req
                .c2h_chunks()
                .map(|chunk| (chunk.as_ptr() as u64, chunk.len()));
            sl.data.fill(write, pieces, pool_lkey)
        }
    }
}

/// Prepares a request slot for a newly received command. `icd` is the
/// receive's ICD buffer when the plan is in-capsule data. Returns what the
/// request's data needs.
pub(super) fn start_request(
    sl: &mut Slot,
    sqe: Sqe,
    plan: Result<DataPlan, Status>,
    icd: Option<DmaBuf>,
    geometry: Geometry,
) -> DataNeed {
    sl.req.reset(sqe);
    let plan = match plan {
        Ok(plan) => plan,
        Err(status) => {
            sl.req.transport_status = Some(status);
            DataPlan::None
        }
    };
    sl.plan = plan;
    match plan {
        DataPlan::None => DataNeed::Ready,
        DataPlan::InCapsule { offset, len } => {
            sl.req.data = Some(icd.expect("in-capsule data has its buffer"));
            sl.req.data_offset = offset;
            sl.req.length = len;
            sl.req.xfer = Xfer::HostToController;
            DataNeed::Ready
        }
        DataPlan::Keyed { len, xfer, .. } => {
            sl.req.length = len;
            sl.req.xfer = xfer;
            if xfer == Xfer::HostToController {
                DataNeed::BufferAndRead {
                    wrs: geometry.wrs(geometry.units(len)),
                }
            } else {
                DataNeed::BufferForHost
            }
        }
    }
}

/// Starts the request in `slot` from the capsule receive `index` of `ring`
/// holds: the receive lends its ICD buffer when the command carries data in
/// the capsule, and is re-armed at once otherwise. Returns what the
/// request's data needs.
pub(super) fn start_capsule(
    ring: &mut RecvRing,
    index: u32,
    received_bytes: u32,
    options: &RdmaOptions,
    geometry: Geometry,
    slot: &mut Slot,
) -> DataNeed {
    let sqe = ring.sqe(index);
    let plan = plan_capsule(
        &sqe,
        received_bytes,
        options.in_capsule_data_bytes,
        options.max_io_bytes,
    );
    let icd = if let Ok(DataPlan::InCapsule { .. }) = plan {
        Some(ring.lend_icd(index))
    } else {
        ring.rearm(index);
        None
    };
    start_request(slot, sqe, plan, icd, geometry)
}

/// What to do with a queue the target has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Teardown {
    /// Work requests are still out and the flush deadline has not passed.
    Wait,
    /// Everything came back.
    Destroy,
    /// The flush deadline passed with work requests still out.
    DestroyOverdue,
}

/// The teardown decision for a closed queue whose QP went to the error state
/// (flushing began) at `flush_started`; `now` is passed in, not read here.
pub(super) fn teardown(drained: bool, flush_started: Instant, now: Instant) -> Teardown {
    if drained {
        Teardown::Destroy
    } else if now.saturating_duration_since(flush_started) >= FLUSH_TIMEOUT {
        Teardown::DestroyOverdue
    } else {
        Teardown::Wait
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Live,
    /// QP in error; waiting for the target to give its requests back.
    Dead,
    /// The target closed it; destroyed once every work request has flushed.
    Closing,
}

pub(super) struct Queue<V: Verbs> {
    /// Owns the QP; destroyed (QP first) when the queue drops, before its
    /// memory (fields drop in order).
    pub(super) id: V::Conn,
    pub(super) qp_num: u32,
    pub(super) device: usize,
    pub(super) gen: u16,
    pub(super) send_wrs: u32,
    pub(super) recv_wrs: u32,
    pub(super) table: RequestTable,
    /// Data buffer units and SGEs per work request.
    pub(super) geometry: Geometry,
    pub(super) slots: Box<[Slot]>,
    /// Receives of its own; None when it takes them from its device's SRQ.
    pub(super) recvs: Option<RegisteredRing<V>>,
    pub(super) send_batch: Vec<*mut sys::ibv_send_wr>,
    pub(super) sends_in_flight: u32,
    pub(super) life: Life,
    /// When the QP was moved to the error state (its work requests started
    /// to flush); None while it is live.
    pub(super) flush_started: Option<Instant>,
    /// In the poll group's list of queues to progress / to flush.
    pub(super) progress_listed: bool,
    pub(super) flush_listed: bool,
    /// The device's `send_with_invalidate`.
    pub(super) send_with_invalidate: bool,
    // Drop order: the MR before the memory it covers.
    pub(super) _rsp_mr: V::Mr,
    /// One `RESPONSE_BYTES` response per request slot.
    pub(super) rsp_region: DmaMemory,
}

impl<V: Verbs> Queue<V> {
    /// The id, once the rest of the queue (memory, MRs) is dropped.
    pub(super) fn into_id(self) -> V::Conn {
        self.id
    }

    /// Batches the RDMA READs of request `slot`'s host data into its buffer
    /// (one per `sge_per_wr` units, each signaled).
    pub(super) fn batch_read(&mut self, qi: u16, slot: u16, pool_lkey: u32) {
        let sl = &mut self.slots[usize::from(slot)];
        let DataPlan::Keyed { addr, len, key, .. } = sl.plan else {
            unreachable!("only keyed data is read")
        };
        let buf = sl
            .req
            .data
            .as_ref()
            .expect("a reading request has its buffer");
        let read = Transfer {
            opcode: sys::ibv_wr_opcode::IBV_WR_RDMA_READ,
            wr_id: wr_id(KIND_READ, self.gen, qi, slot),
            send_flags: sys::ibv_send_flags::IBV_SEND_SIGNALED,
            remote_addr: addr,
            rkey: key,
        };
        let n = if buf.units() == 1 {
            sl.data.fill_one(read, buf.as_ptr() as u64, len, pool_lkey)
        } else {
            let mut left = len as usize;
            let pieces = buf.addr_chunks().map_while(|(a, unit)| {
                let n = unit.min(left);
                left -= n;
                (n > 0).then_some((a, n))
            });
            sl.data.fill(read, pieces, pool_lkey)
        };
        sl.reads_pending = n as u16;
        for k in 0..n {
            self.send_batch.push(sl.data.wr(k));
        }
    }

    /// Batches request `slot`'s response, after the RDMA WRITE of the data
    /// it produced, if any.
    pub(super) fn batch_response(&mut self, qi: u16, slot: u16, pool_lkey: u32) {
        let s = usize::from(slot);
        let rsp = self.slots[s].req.rsp;
        self.rsp_region
            .write_at(response_offset(slot), rsp.as_bytes())
            .expect("response slot inside the region");
        let sl = &mut self.slots[s];
        let writes = prepare_c2h_writes(sl, pool_lkey, wr_id(KIND_WRITE, self.gen, qi, slot));
        for k in 0..writes {
            self.send_batch.push(sl.data.wr(k));
        }
        let (opcode, rkey) = response_opcode(&sl.plan, self.send_with_invalidate);
        sl.send_wr.opcode = opcode;
        sl.send_wr.__bindgen_anon_1 = sys::ibv_send_wr__bindgen_ty_1 {
            invalidate_rkey: rkey,
        };
        self.send_batch.push(&mut sl.send_wr);
        self.sends_in_flight += 1;
    }
}

/// Where slot `slot`'s response sits in its queue's response region.
pub(super) fn response_offset(slot: u16) -> usize {
    usize::from(slot) * RESPONSE_BYTES
}

impl<V: Verbs> RdmaPollGroup<V> {
    pub(super) fn setup_queue(
        &mut self,
        conn: &mut ConnRequest<V>,
        qi: u16,
    ) -> Result<Queue<V>, String> {
        let d = self.device_for(conn.id())?;
        let depth = conn.depth;
        let icd_bytes = self.options.in_capsule_data_bytes;
        let dev = &mut self.devices[d];
        let srq = dev.srq.as_ref().map(|s| &s.srq);
        // On an SRQ the receives (and their CQ entries) belong to the device.
        let recv_wrs = if srq.is_some() { 0 } else { u32::from(depth) };
        let send_wrs = 2 * u32::from(depth) + 1;
        if send_wrs > dev.limits.max_qp_wr {
            return Err(format!(
                "queue depth {depth} needs {send_wrs} send WRs; the device allows {}",
                dev.limits.max_qp_wr
            ));
        }
        if dev.cqe_used + send_wrs + recv_wrs > dev.cq_entries {
            return Err("completion queue budget of this reactor is used up".into());
        }
        let gen = self.next_gen;
        // Everything that needs no QP first: a failure then leaves nothing to undo.
        let recvs = match srq {
            Some(_) => None,
            None => Some(RegisteredRing::new(
                &dev.pd,
                u32::from(depth),
                icd_bytes,
                ICD_BUFFERS_PER_RECV * usize::from(depth),
                |i| wr_id(KIND_RECV, gen, qi, i as u16),
            )?),
        };
        let rsp_region = DmaMemory::allocate_ordinary(usize::from(depth) * RESPONSE_BYTES)
            .map_err(|e| format!("response buffers: {e}"))?;
        let rsp_mr = V::register(&dev.pd, rsp_region.as_ptr(), rsp_region.len())
            .map_err(|e| format!("register response buffers: {e}"))?;
        let geometry = Geometry {
            unit_bytes: self.pool.buf_size() as u32,
            sge_per_wr: dev.sge_per_wr,
        };
        let max_units = geometry.units(self.options.max_io_bytes);
        let spec = QpSpec {
            send_wr: send_wrs,
            send_sge: u32::from(geometry.sge_per_wr),
            recv_wr: recv_wrs,
            recv_sge: if icd_bytes > 0 { 2 } else { 1 },
            inline_bytes: RESPONSE_BYTES as u32,
        };
        let max_inline_bytes = conn
            .id_mut()
            .create_qp(&dev.pd, &dev.cq, srq, &spec)
            .map_err(|e| format!("create QP: {e}"))?;
        let send_flags = response_send_flags(max_inline_bytes);
        let inline = send_flags & sys::ibv_send_flags::IBV_SEND_INLINE != 0;
        if dev.responses_inline != Some(inline) {
            // Said once per device (and again only if a QP is granted otherwise).
            dev.responses_inline = Some(inline);
            log::info!(
                "reactor {}: RDMA device {}: responses sent {} ({} bytes of inline data granted)",
                self.reactor,
                dev.name,
                if inline {
                    "inline"
                } else {
                    "from registered memory"
                },
                max_inline_bytes
            );
        }
        dev.cqe_used += send_wrs + recv_wrs;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let rsp_base = rsp_region.as_ptr() as u64;
        let rsp_lkey = rsp_mr.lkey();
        let slots: Box<[Slot]> = (0..depth)
            .map(|i| Slot {
                req: Request::new(),
                plan: DataPlan::None,
                data: DataWrs::new(max_units, geometry),
                reads_pending: 0,
                rsp_sge: sys::ibv_sge {
                    addr: rsp_base + response_offset(i) as u64,
                    length: RESPONSE_BYTES as u32,
                    lkey: rsp_lkey,
                },
                send_wr: sys::ibv_send_wr {
                    wr_id: wr_id(KIND_SEND, gen, qi, i),
                    num_sge: 1,
                    opcode: sys::ibv_wr_opcode::IBV_WR_SEND,
                    send_flags,
                    ..Default::default()
                },
            })
            .collect();
        let id = conn
            .id
            .take()
            .expect("the connect request still holds its id");
        let mut q: Queue<V> = Queue {
            qp_num: id.qp_num(),
            id,
            device: d,
            gen,
            send_wrs,
            recv_wrs,
            table: RequestTable::new(depth, u16::from(conn.initiator_depth.max(1)), send_wrs),
            geometry,
            slots,
            recvs,
            send_batch: Vec::with_capacity(2 * usize::from(depth) + 1),
            sends_in_flight: 0,
            life: Life::Live,
            flush_started: None,
            progress_listed: false,
            flush_listed: false,
            send_with_invalidate: dev.send_with_invalidate,
            _rsp_mr: rsp_mr,
            rsp_region,
        };
        // The boxed table never moves again: point the WRs at their SGEs now.
        for s in q.slots.iter_mut() {
            s.send_wr.sg_list = &mut s.rsp_sge;
        }
        let id: &V::Conn = &q.id;
        let posted = match q.recvs.as_mut() {
            // SAFETY: see `RecvRing::post`: the WRs live in the ring's boxed
            // table, naming memory registered on the QP's PD by the ring,
            // which the queue drops only after destroying the QP.
            Some(r) => r.ring.post(|wrs| unsafe { id.post_recv(wrs) }),
            None => Ok(()),
        };
        if let Err(e) = posted {
            self.devices[d].cqe_used -= send_wrs + recv_wrs;
            // The QP before the memory its receives point at; the id goes
            // back to the request, which rejects the connection.
            q.id.destroy_qp();
            conn.id = Some(q.into_id());
            return Err(format!("post receives: {e}"));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dma::BufPool;
    use nvme_spec::opcode;
    use nvme_spec::SglDescriptor;
    use std::sync::Arc;
    use std::time::Duration;

    fn write_cmd(len: u32) -> Sqe {
        let mut c = Sqe::new(opcode::io::WRITE, 1);
        c.dptr = SglDescriptor::data_block(0, len);
        c
    }

    #[test]
    fn in_capsule_data_must_have_arrived() {
        let cmd = write_cmd(4096);
        assert_eq!(
            plan_capsule(&cmd, 64 + 4096, 8192, 131072),
            Ok(DataPlan::InCapsule {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(
            plan_capsule(&cmd, 64 + 4095, 8192, 131072),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        assert_eq!(
            plan_capsule(&cmd, 64, 0, 131072),
            Err(Status::SGL_OFFSET_INVALID),
            "no in-capsule data configured"
        );
    }

    #[test]
    fn responses_go_inline_only_when_granted() {
        use sys::ibv_send_flags::{IBV_SEND_INLINE, IBV_SEND_SIGNALED};
        assert_eq!(response_send_flags(0), IBV_SEND_SIGNALED);
        assert_eq!(response_send_flags(15), IBV_SEND_SIGNALED);
        assert_eq!(response_send_flags(16), IBV_SEND_SIGNALED | IBV_SEND_INLINE);
        assert_eq!(
            response_send_flags(256),
            IBV_SEND_SIGNALED | IBV_SEND_INLINE
        );
    }

    #[test]
    fn response_invalidates_only_when_asked_and_allowed() {
        use sys::ibv_wr_opcode::{IBV_WR_SEND, IBV_WR_SEND_WITH_INV};
        let keyed = |invalidate| DataPlan::Keyed {
            addr: 0x1000,
            len: 4096,
            key: 0xabcd,
            invalidate,
            xfer: Xfer::ControllerToHost,
        };
        assert_eq!(
            response_opcode(&keyed(true), true),
            (IBV_WR_SEND_WITH_INV, 0xabcd)
        );
        assert_eq!(response_opcode(&keyed(true), false), (IBV_WR_SEND, 0));
        assert_eq!(response_opcode(&keyed(false), true), (IBV_WR_SEND, 0));
        let icd = DataPlan::InCapsule {
            offset: 0,
            len: 512,
        };
        assert_eq!(response_opcode(&icd, true), (IBV_WR_SEND, 0));
        assert_eq!(response_opcode(&DataPlan::None, true), (IBV_WR_SEND, 0));
    }

    #[test]
    fn srq_wr_ids_name_device_and_receive() {
        let id = srq_wr_id(3, 70_000);
        assert_eq!(id >> 56, KIND_SRQ_RECV);
        assert_eq!(decode_srq(id), (3, 70_000));
        assert_ne!(id >> 56, decode(wr_id(KIND_RECV, 3, 1, 2)).0);
    }

    #[test]
    fn closed_queue_waits_for_its_flush_until_the_deadline() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(teardown(true, t0, t0), Teardown::Destroy);
        assert_eq!(teardown(true, t0, later(60)), Teardown::Destroy);
        assert_eq!(teardown(false, t0, t0), Teardown::Wait);
        assert_eq!(teardown(false, t0, later(9)), Teardown::Wait);
        assert_eq!(
            teardown(false, t0, t0 + FLUSH_TIMEOUT),
            Teardown::DestroyOverdue
        );
        assert_eq!(teardown(false, t0, later(3600)), Teardown::DestroyOverdue);
        // A clock read before the flush started (cannot go backwards) still waits.
        assert_eq!(teardown(false, later(5), t0), Teardown::Wait);
    }

    #[test]
    fn buffers_go_back_where_they_came_from() {
        let shared = BufPool::with_ordinary_memory(8192, 4).unwrap();
        let icd = BufPool::with_ordinary_memory(4096, 2).unwrap();
        let mut cache = PoolCache::new(shared.clone(), 4);
        let b = cache.get().unwrap();
        release_buffer(&mut cache, b);
        assert_eq!(cache.len(), 2, "a shared buffer goes to the cache");
        let b = icd.get().unwrap();
        assert_eq!(icd.available(), 1);
        release_buffer(&mut cache, b);
        assert_eq!(
            (icd.available(), cache.len()),
            (2, 2),
            "an ICD buffer to its pool"
        );
    }

    const GEOMETRY: Geometry = Geometry {
        unit_bytes: 4096,
        sge_per_wr: 4,
    };

    fn slot() -> Slot {
        Slot {
            req: Request::new(),
            plan: DataPlan::None,
            data: DataWrs::new(16, GEOMETRY),
            reads_pending: 0,
            rsp_sge: sys::ibv_sge::default(),
            send_wr: sys::ibv_send_wr::default(),
        }
    }

    #[test]
    fn request_borrows_the_icd_buffer_at_the_sgl_offset() {
        let icd = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let mut sl = slot();
        let plan = Ok(DataPlan::InCapsule {
            offset: 16,
            len: 512,
        });
        let need = start_request(&mut sl, write_cmd(512), plan, icd.get(), GEOMETRY);
        assert_eq!(need, DataNeed::Ready);
        assert_eq!(sl.req.data_offset, 16);
        assert!(sl.req.data.is_some());
        sl.req.data = None;
        let need = start_request(
            &mut sl,
            write_cmd(512),
            Err(Status::INVALID_FIELD),
            None,
            GEOMETRY,
        );
        assert_eq!(need, DataNeed::Ready);
        assert_eq!(sl.plan, DataPlan::None);
        assert_eq!(sl.req.transport_status, Some(Status::INVALID_FIELD));
    }

    #[test]
    fn a_keyed_write_needs_a_read_per_four_units() {
        let mut sl = slot();
        let mut cmd = Sqe::new(opcode::io::WRITE, 1);
        cmd.dptr = SglDescriptor::keyed(0x1000, 65536, 9, false);
        let plan = plan_capsule(&cmd, 64, 4096, 1 << 20);
        assert_eq!(
            start_request(&mut sl, cmd, plan, None, GEOMETRY),
            DataNeed::BufferAndRead { wrs: 4 },
            "16 units of 4 KiB, 4 SGEs per READ"
        );
        assert_eq!(sl.req.length, 65536);
    }

    /// A keyed read's slot whose `units`-unit chain holds `sgl_bytes`.
    fn keyed_read_slot(sgl_bytes: u32, units: usize, pool: &Arc<BufPool>) -> Slot {
        let mut sl = slot();
        sl.req.cmd = Sqe::new(opcode::io::READ, 1);
        sl.req.xfer = Xfer::ControllerToHost;
        sl.req.length = sgl_bytes;
        sl.req.data = PoolCache::new(pool.clone(), 16).get_chain(units);
        sl.plan = DataPlan::Keyed {
            addr: 0x10_0000,
            len: sgl_bytes,
            key: 42,
            invalidate: false,
            xfer: Xfer::ControllerToHost,
        };
        sl
    }

    #[test]
    fn rdma_write_carries_only_the_bytes_the_command_produced() {
        let pool = BufPool::with_ordinary_memory(4096, 16).unwrap();
        // A 4 KiB SGL, of which the command produced 512 bytes (a short log page).
        let mut sl = keyed_read_slot(4096, 1, &pool);
        sl.req.c2h_bytes = 512;
        assert_eq!(prepare_c2h_writes(&mut sl, 5, 77), 1);
        let buf_start = sl.req.data.as_ref().unwrap().as_ptr() as u64;
        let (wr, sges) = sl.data.get(0);
        assert_eq!(sges.len(), 1);
        assert_eq!(
            (sges[0].addr, sges[0].length, sges[0].lkey),
            (buf_start, 512, 5)
        );
        assert_eq!(wr.opcode, sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE);
        // SAFETY: reading the union member this function just wrote.
        let rdma = unsafe { wr.wr.rdma };
        assert_eq!((rdma.remote_addr, rdma.rkey), (0x10_0000, 42));
        assert_eq!(wr.wr_id, 77);
        sl.req.data = None;
    }

    #[test]
    fn a_chained_read_is_written_unit_by_unit_in_order() {
        let pool = BufPool::with_ordinary_memory(4096, 16).unwrap();
        // 10 units hold 40,000 bytes; 4 SGEs per WRITE: 3 WRITEs.
        let mut sl = keyed_read_slot(40_000, 10, &pool);
        sl.req.c2h_bytes = 40_000;
        assert_eq!(prepare_c2h_writes(&mut sl, 5, 77), 3);
        let units: Vec<u64> = sl
            .req
            .data
            .as_ref()
            .unwrap()
            .addr_chunks()
            .map(|(a, _)| a)
            .collect();
        let mut sent = Vec::new();
        for k in 0..3 {
            let (wr, sges) = sl.data.get(k);
            // SAFETY: reading the union member this function just wrote.
            let rdma = unsafe { wr.wr.rdma };
            assert_eq!(rdma.remote_addr, 0x10_0000 + k as u64 * 4 * 4096);
            sent.extend(sges.iter().map(|s| (s.addr, s.length)));
        }
        let want: Vec<(u64, u32)> = units
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, if i == 9 { 40_000 - 9 * 4096 } else { 4096 }))
            .collect();
        assert_eq!(
            sent, want,
            "every unit once, in chain order, the last one short"
        );
        sl.req.data = None;
    }

    #[test]
    fn failed_or_empty_commands_write_nothing() {
        let pool = BufPool::with_ordinary_memory(4096, 16).unwrap();
        let mut sl = keyed_read_slot(4096, 1, &pool);
        sl.req.c2h_bytes = 4096;
        sl.req.rsp.set_status(Status::LBA_OUT_OF_RANGE);
        assert_eq!(
            prepare_c2h_writes(&mut sl, 5, 1),
            0,
            "a failed read sends no data"
        );
        sl.req.rsp.set_status(Status::SUCCESS);
        sl.req.c2h_bytes = 0;
        assert_eq!(
            prepare_c2h_writes(&mut sl, 5, 1),
            0,
            "nothing produced, nothing sent"
        );
        sl.req.data = None;
    }

    #[test]
    #[should_panic(expected = "produced 8192 bytes for a 4096-byte SGL")]
    fn producing_more_than_the_sgl_is_caught() {
        let pool = BufPool::with_ordinary_memory(4096, 16).unwrap();
        let mut sl = keyed_read_slot(4096, 2, &pool);
        sl.req.c2h_bytes = 8192;
        prepare_c2h_writes(&mut sl, 5, 1);
    }
}
