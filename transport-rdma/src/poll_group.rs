//! The per-reactor RDMA poll group: devices (PD, CQ, pool MR), queue pairs,
//! CQ polling, and work requests batched per poll.
//!
//! Receives (`RecvRing`): each receive work request has two SGEs, the 64-byte
//! command slot and an in-capsule data (ICD) buffer from a small pool of the
//! queue. A capsule that carries data lends its ICD buffer to the request
//! (zero copy) and the receive is re-armed at once with a fresh buffer; the
//! lent buffer goes back to its pool when the request is done.
//!
//! With `srq` on, each device gets one shared receive queue (SRQ) per poll
//! group instead: its receives belong to the device, a completion names its
//! queue by `qp_num`, and a receive whose ICD buffer is lent stays unposted
//! until the request is done with the data (its buffer comes back), then it
//! is re-posted to the SRQ.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::{Index, IndexMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dma::{BufPool, DmaBuf, DmaMemory, PoolCache, SMALL_PAGE_BYTES};
use nvme_spec::{FromBytes, IntoBytes, Sqe, Status};
use nvmf::transport::{
    plan_data, DataPlan, PendingQueue, Request, RequestId, TransportError, TransportEvent,
    TransportPollGroup, Xfer,
};
use rdma_sys as sys;
use reactor::Epoll;

use crate::request::{RequestState, RequestTable};
use crate::verbs::{self, CmId, CmToken, Cq, DeviceKey, DeviceLimits, Mr, Pd, QpSpec, Srq};
use crate::{accept_private_data, ConnRequest, Notice, RdmaOptions, RdmaTransport};

/// Completions taken per CQ poll.
const WC_BATCH: usize = 32;
/// CQ size per device per reactor; queues beyond its budget are refused.
const CQ_ENTRIES: u32 = 16_384;
const CAPSULE_HEADER: usize = 64;
const RESPONSE_BYTES: usize = 16;

/// How long a closed queue waits for its posted work requests to come back
/// (flushed) before it is destroyed anyway. A NIC flushes a QP in error in
/// well under a second; 10 s leaves room for Soft-RoCE on a loaded or
/// emulated CPU, yet bounds what a device that never flushes (broken,
/// removed, or a driver bug) can leak: the QP, its MRs, command slots and
/// buffers. It also matches the Linux host's reconnect delay, so leaked
/// queues cannot pile up across its reconnect attempts. Destroying the QP
/// makes the NIC drop what is left; late completions are ignored by the
/// wr_id generation check (and SRQ ones by the CQ drain at destroy).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Queues on SRQs a poll group has room for before its qp_num map grows
/// (it grows only when a queue is adopted, never per I/O).
const SRQ_QUEUES_RESERVED: usize = 256;

/// ICD buffers of a queue per receive: one posted, one lent to a request.
const ICD_BUFFERS_PER_RECV: usize = 2;

const KIND_RECV: u64 = 1;
const KIND_READ: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WRITE: u64 = 4;
/// A receive of a device's SRQ: named by device and receive index, not by queue.
const KIND_SRQ_RECV: u64 = 5;

fn wr_id(kind: u64, gen: u16, queue: u16, slot: u16) -> u64 {
    (kind << 56) | (u64::from(gen) << 32) | (u64::from(queue) << 16) | u64::from(slot)
}

fn decode(id: u64) -> (u64, u16, u16, u16) {
    (id >> 56, (id >> 32) as u16, (id >> 16) as u16, id as u16)
}

fn srq_wr_id(device: u16, index: u32) -> u64 {
    (KIND_SRQ_RECV << 56) | (u64::from(device) << 32) | u64::from(index)
}

/// Device and receive index of an SRQ receive's wr_id.
fn decode_srq(id: u64) -> (usize, u32) {
    debug_assert_eq!(id >> 56, KIND_SRQ_RECV);
    (usize::from((id >> 32) as u16), id as u32)
}

struct Device {
    /// Which open device context this is (see `Notice::DeviceRemoved`).
    ///
    /// Known limit: librdmacm closes a removed device's context once no CM id
    /// is bound to it, on the acceptor's next device-list refresh, which may
    /// come before this poll group has dropped the PD, CQ, SRQ and MRs below;
    /// those destructors would then use a closed context.
    ctx: DeviceKey,
    name: String,
    limits: DeviceLimits,
    /// Being removed: no new queues; released once its last queue is gone.
    removed: bool,
    /// Entries of `cq`: the budget its queues (and its SRQ) share.
    cq_entries: u32,
    cqe_used: u32,
    /// Whether the last QP created took its responses inline (for the log).
    responses_inline: Option<bool>,
    /// Responses may invalidate the host's key (see `send_with_invalidate`).
    send_with_invalidate: bool,
    // Drop order: SRQ, MR, CQ, then PD.
    srq: Option<DeviceSrq>,
    pool_mr: Mr,
    cq: Cq,
    pd: Pd,
}

/// Devices by index. A released device leaves its slot empty, so the device
/// indices held by queues and encoded in SRQ wr_ids never change meaning.
struct Devices(Vec<Option<Device>>);

impl Devices {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get_mut(&mut self, d: usize) -> Option<&mut Device> {
        self.0.get_mut(d).and_then(Option::as_mut)
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Device)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(d, dev)| dev.as_ref().map(|dev| (d, dev)))
    }

    /// Adds a device; returns its index.
    fn push(&mut self, dev: Device) -> usize {
        self.0.push(Some(dev));
        self.0.len() - 1
    }

    fn release(&mut self, d: usize) -> Option<Device> {
        self.0.get_mut(d).and_then(Option::take)
    }
}

impl Index<usize> for Devices {
    type Output = Device;
    fn index(&self, d: usize) -> &Device {
        self.0[d]
            .as_ref()
            .expect("a queue's device is never released")
    }
}

impl IndexMut<usize> for Devices {
    fn index_mut(&mut self, d: usize) -> &mut Device {
        self.0[d]
            .as_mut()
            .expect("a queue's device is never released")
    }
}

struct Slot {
    req: Request,
    plan: DataPlan,
    data_sge: sys::ibv_sge,
    rsp_sge: sys::ibv_sge,
    data_wr: sys::ibv_send_wr,
    send_wr: sys::ibv_send_wr,
}

/// One receive work request: SGE 0 is its command slot, SGE 1 (when in-capsule
/// data is on) the ICD buffer it holds.
struct Recv {
    sges: [sys::ibv_sge; 2],
    wr: sys::ibv_recv_wr,
    icd: Option<DmaBuf>,
}

/// The ICD buffers of a receive ring and how the NIC reaches them.
pub(crate) struct IcdBuffers {
    pub pool: Arc<BufPool>,
    pub lkey: u32,
    /// Bytes the NIC may write into each buffer (the ICD size).
    pub len_bytes: u32,
}

/// A set of receive work requests with their command slots and ICD buffers
/// (pure bookkeeping: posting is the caller's). A receive is armed (in
/// `batch`, then posted) while it holds an ICD buffer. Lending its buffer to a
/// request re-arms it with a fresh one; if the pool is empty it starves until
/// a buffer comes back and `refill` runs.
pub(crate) struct RecvRing {
    recvs: Box<[Recv]>,
    icd: Option<IcdBuffers>,
    /// Receives waiting for an ICD buffer, oldest first (capacity: all receives).
    starved: VecDeque<u32>,
    /// Armed receives not yet posted (capacity: all receives).
    batch: Vec<*mut sys::ibv_recv_wr>,
    /// Posted receives not yet completed.
    posted: u32,
    /// `recvs.len()` command slots of `CAPSULE_HEADER` bytes.
    sqe_region: DmaMemory,
}

impl RecvRing {
    /// `count` receives, all armed (in the batch); `wr_id(i)` names receive `i`.
    pub(crate) fn new(
        count: u32,
        sqe_region: DmaMemory,
        sqe_lkey: u32,
        icd: Option<IcdBuffers>,
        wr_id: impl Fn(u32) -> u64,
    ) -> Result<RecvRing, String> {
        let n = count as usize;
        assert!(n > 0);
        assert!(sqe_region.len() >= n * CAPSULE_HEADER, "command slots fit");
        let base = sqe_region.as_ptr() as u64;
        let mut recvs = Vec::with_capacity(n);
        for i in 0..count {
            let mut sges = [sys::ibv_sge::default(); 2];
            sges[0] = sys::ibv_sge {
                addr: base + u64::from(i) * CAPSULE_HEADER as u64,
                length: CAPSULE_HEADER as u32,
                lkey: sqe_lkey,
            };
            let buf = match &icd {
                Some(b) => {
                    let buf = b
                        .pool
                        .get()
                        .ok_or("in-capsule data pool smaller than its receives")?;
                    sges[1] = sys::ibv_sge {
                        addr: buf.as_ptr() as u64,
                        length: b.len_bytes,
                        lkey: b.lkey,
                    };
                    Some(buf)
                }
                None => None,
            };
            recvs.push(Recv {
                sges,
                wr: sys::ibv_recv_wr {
                    wr_id: wr_id(i),
                    num_sge: if icd.is_some() { 2 } else { 1 },
                    ..Default::default()
                },
                icd: buf,
            });
        }
        let mut recvs = recvs.into_boxed_slice();
        // The boxed table never moves again: point the WRs at their SGEs now.
        for r in recvs.iter_mut() {
            r.wr.sg_list = r.sges.as_mut_ptr();
        }
        let batch = recvs.iter_mut().map(|r| &mut r.wr as *mut _).collect();
        Ok(RecvRing {
            recvs,
            icd,
            starved: VecDeque::with_capacity(n),
            batch,
            posted: 0,
            sqe_region,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.recvs.len()
    }

    /// The command a completed receive carries.
    pub(crate) fn sqe(&self, index: u32) -> Sqe {
        let mut bytes = [0u8; CAPSULE_HEADER];
        self.sqe_region
            .read_at(index as usize * CAPSULE_HEADER, &mut bytes)
            .expect("command slot inside the region");
        Sqe::read_from_bytes(&bytes).expect("64 bytes")
    }

    /// Re-arms a completed receive with the buffer it still holds.
    pub(crate) fn rearm(&mut self, index: u32) {
        let r = &mut self.recvs[index as usize];
        debug_assert!(self.icd.is_none() || r.icd.is_some());
        self.batch.push(&mut r.wr);
    }

    /// Takes a completed receive's ICD buffer (now holding the capsule's data)
    /// and re-arms the receive with a fresh one, or starves it.
    pub(crate) fn lend_icd(&mut self, index: u32) -> DmaBuf {
        let buf = self.recvs[index as usize]
            .icd
            .take()
            .expect("a completed receive holds its ICD buffer");
        self.starved.push_back(index);
        self.refill();
        buf
    }

    /// Re-arms starved receives while the ICD pool has buffers.
    pub(crate) fn refill(&mut self) {
        let Some(icd) = &self.icd else { return };
        while let Some(&index) = self.starved.front() {
            let Some(buf) = icd.pool.get() else { break };
            self.starved.pop_front();
            let r = &mut self.recvs[index as usize];
            r.sges[1].addr = buf.as_ptr() as u64;
            r.icd = Some(buf);
            self.batch.push(&mut r.wr);
        }
    }

    /// Receives waiting for an ICD buffer.
    #[cfg(test)]
    pub(crate) fn starved(&self) -> usize {
        self.starved.len()
    }

    /// Posts the armed receives with `post`. Those the device took count as
    /// posted; the rest stay in the batch.
    ///
    /// What `post` gets (what its SAFETY notes rely on): WRs of the boxed
    /// table, in place while the ring lives and not posted yet; each names
    /// its command slot in `sqe_region` and the ICD buffer it holds, both
    /// kept, and neither read, until the receive completes (the slot is read
    /// by `sqe`, the buffer lent by `lend_icd`, only after that).
    pub(crate) fn post(
        &mut self,
        post: impl FnOnce(&[*mut sys::ibv_recv_wr]) -> Result<(), verbs::PostError>,
    ) -> Result<(), verbs::PostError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let taken = match post(&self.batch) {
            Ok(()) => Ok(self.batch.len()),
            Err(e) => Err(e),
        };
        let n = match &taken {
            Ok(n) => *n,
            Err(e) => e.posted.min(self.batch.len()),
        };
        self.posted += n as u32;
        self.batch.drain(..n);
        taken.map(|_| ())
    }

    /// Forgets armed receives that will never be posted (the queue died).
    pub(crate) fn discard_batch(&mut self) {
        self.batch.clear();
    }

    /// A posted receive completed (successfully or flushed).
    pub(crate) fn completed(&mut self) {
        self.posted = self.posted.checked_sub(1).expect("a posted receive");
    }

    pub(crate) fn posted(&self) -> u32 {
        self.posted
    }
}

/// A receive ring with its memory registrations.
struct RegisteredRing {
    // Drop order: the MRs before the memory they cover (the ring's region;
    // the ICD pool lives until its last buffer is dropped).
    _sqe_mr: Mr,
    _icd_mr: Option<Mr>,
    ring: RecvRing,
}

impl RegisteredRing {
    /// `count` receives with ICD buffers of `icd_bytes` (none if 0) from a
    /// pool of `icd_count` buffers.
    fn new(
        pd: &Pd,
        count: u32,
        icd_bytes: u32,
        icd_count: usize,
        wr_id: impl Fn(u32) -> u64,
    ) -> Result<RegisteredRing, String> {
        let region = DmaMemory::allocate_ordinary(count as usize * CAPSULE_HEADER)
            .map_err(|e| format!("command slots: {e}"))?;
        let sqe_mr = Mr::register(pd, region.as_ptr(), region.len())
            .map_err(|e| format!("register command slots: {e}"))?;
        let (icd, icd_mr) = if icd_bytes == 0 {
            (None, None)
        } else {
            let buf_bytes = (icd_bytes as usize).div_ceil(SMALL_PAGE_BYTES) * SMALL_PAGE_BYTES;
            let pool = BufPool::with_ordinary_memory(buf_bytes, icd_count)
                .map_err(|e| format!("in-capsule data buffers: {e}"))?;
            let mem = pool.memory();
            let mr = Mr::register(pd, mem.as_ptr(), mem.len())
                .map_err(|e| format!("register in-capsule data buffers: {e}"))?;
            let icd = IcdBuffers {
                pool,
                lkey: mr.lkey(),
                len_bytes: icd_bytes,
            };
            (Some(icd), Some(mr))
        };
        let ring = RecvRing::new(count, region, sqe_mr.lkey(), icd, wr_id)?;
        Ok(RegisteredRing {
            _sqe_mr: sqe_mr,
            _icd_mr: icd_mr,
            ring,
        })
    }
}

/// A device's shared receive queue and the receives posted on it.
struct DeviceSrq {
    // Drop order: the SRQ before the memory of its receives.
    srq: Srq,
    recvs: RegisteredRing,
    /// A failed post was logged (said once until posting works again).
    post_failed: bool,
}

/// Queue index by qp_num: a sorted Vec searched by bisection, so a lookup
/// (one per SRQ receive) neither allocates nor hashes. Changed only when a
/// queue is adopted or destroyed.
struct QpNumMap(Vec<(u32, u16)>);

impl QpNumMap {
    fn with_capacity(n: usize) -> QpNumMap {
        QpNumMap(Vec::with_capacity(n))
    }

    /// Maps `qp_num` to `queue`. A live QP's number is unique, so an entry
    /// already there can only be a stale one of a queue that is gone.
    fn insert(&mut self, qp_num: u32, queue: u16) {
        match self.0.binary_search_by_key(&qp_num, |e| e.0) {
            Ok(i) => self.0[i].1 = queue,
            Err(at) => self.0.insert(at, (qp_num, queue)),
        }
    }

    fn remove(&mut self, qp_num: u32) {
        if let Ok(i) = self.0.binary_search_by_key(&qp_num, |e| e.0) {
            self.0.remove(i);
        }
    }

    fn get(&self, qp_num: u32) -> Option<u16> {
        self.0
            .binary_search_by_key(&qp_num, |e| e.0)
            .ok()
            .map(|i| self.0[i].1)
    }
}

/// The depth of a device's SRQ, with a note when it was capped; or why the
/// device cannot have one (its queues then post their own receives).
/// `recv_sge`: SGEs a receive needs. Half the CQ is left for send completions.
fn srq_depth_for(
    wanted_depth: u32,
    recv_sge: u32,
    limits: &DeviceLimits,
) -> Result<(u32, Option<String>), String> {
    if limits.max_srq == 0 || limits.max_srq_wr == 0 {
        return Err("the device has no shared receive queues".into());
    }
    if limits.max_srq_sge < recv_sge {
        return Err(format!(
            "its shared receive queues take {} SGE(s) per receive; in-capsule data needs {recv_sge}",
            limits.max_srq_sge
        ));
    }
    let cap = limits.max_srq_wr.min(limits.max_cqe / 2);
    if cap == 0 {
        return Err(format!(
            "its completion queues are too small ({} entries)",
            limits.max_cqe
        ));
    }
    if wanted_depth <= cap {
        return Ok((wanted_depth, None));
    }
    Ok((
        cap,
        Some(format!(
            "srq_depth {wanted_depth} capped to {cap} (max_srq_wr {}, half of max_cqe {})",
            limits.max_srq_wr, limits.max_cqe
        )),
    ))
}

/// Send flags of a response: signaled (its completion frees the request),
/// and inline when the QP takes `RESPONSE_BYTES` of inline data, which spares
/// the NIC a DMA read of the 16-byte CQE.
fn response_send_flags(max_inline_bytes: u32) -> u32 {
    let mut flags = sys::ibv_send_flags::IBV_SEND_SIGNALED;
    if max_inline_bytes >= RESPONSE_BYTES as u32 {
        flags |= sys::ibv_send_flags::IBV_SEND_INLINE;
    }
    flags
}

/// rxe's vendor ids: 0xFFFFFF today, 0 in older kernels (SPDK checks both).
const RXE_VENDOR_IDS: [u32; 2] = [0xFF_FFFF, 0];

/// Whether a device may send responses with IBV_WR_SEND_WITH_INV, or why not.
/// Soft-RoCE (rxe) advertises the memory management extensions but
/// misreports send-with-invalidate, so it is never used there (as in SPDK);
/// rxe is known by its device name or its vendor id.
fn send_with_invalidate(
    device_name: &str,
    vendor_id: u32,
    device_cap_flags: u32,
) -> Result<(), &'static str> {
    if device_name.starts_with("rxe") || RXE_VENDOR_IDS.contains(&vendor_id) {
        return Err("Soft-RoCE (rxe) misreports support for it");
    }
    if device_cap_flags & sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS == 0 {
        return Err("the device has no memory management extensions");
    }
    Ok(())
}

/// The opcode and key to invalidate of a response: SEND_WITH_INV when the
/// command's keyed SGL asked for invalidation and the device may do it.
fn response_opcode(plan: &DataPlan, send_with_invalidate: bool) -> (u32, u32) {
    match *plan {
        DataPlan::Keyed {
            invalidate: true,
            key,
            ..
        } if send_with_invalidate => (sys::ibv_wr_opcode::IBV_WR_SEND_WITH_INV, key),
        _ => (sys::ibv_wr_opcode::IBV_WR_SEND, 0),
    }
}

/// Runs `log` the first time it is called for `device_name` in this process
/// (every reactor sets each device up; one line says it).
fn log_once_per_device(device_name: &str, log: impl FnOnce()) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.iter().any(|n| n == device_name) {
        said.push(device_name.to_string());
        log();
    }
}

/// Gives a request's data buffer back to where it came from: the shared
/// pool (through this reactor's cache) or, by dropping it, the ICD pool of the
/// receive it was lent by.
fn release_buffer(cache: &mut PoolCache, buf: DmaBuf) {
    if cache.pool().owns(&buf) {
        cache.put(buf);
    } else {
        drop(buf);
    }
}

/// The data plan of a capsule that arrived with `received_bytes` bytes.
fn plan_capsule(
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

/// Prepares a request slot for a newly received command. `icd` is the
/// receive's ICD buffer when the plan is in-capsule data.
/// Fills the slot's RDMA WRITE of controller-to-host data: exactly the bytes
/// the command produced (`Request::c2h_data`), never the whole SGL, and
/// nothing for a failed command. False when there is nothing to write.
fn prepare_c2h_write(sl: &mut Slot, pool_lkey: u32, wr_id: u64) -> bool {
    let DataPlan::Keyed {
        addr,
        key,
        len,
        xfer: Xfer::ControllerToHost,
        ..
    } = sl.plan
    else {
        return false;
    };
    let data = sl.req.c2h_data();
    if data.is_empty() {
        return false;
    }
    assert!(
        data.len() as u64 <= u64::from(len),
        "write beyond the host's SGL"
    );
    sl.data_sge = sys::ibv_sge {
        addr: data.as_ptr() as u64,
        length: data.len() as u32,
        lkey: pool_lkey,
    };
    sl.data_wr.wr_id = wr_id;
    sl.data_wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
    sl.data_wr.send_flags = 0;
    sl.data_wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
        remote_addr: addr,
        rkey: key,
    };
    true
}

fn start_request(sl: &mut Slot, sqe: Sqe, plan: Result<DataPlan, Status>, icd: Option<DmaBuf>) {
    sl.req.reset(sqe);
    match plan {
        Ok(plan) => {
            sl.plan = plan;
            if let DataPlan::InCapsule { offset, .. } = plan {
                sl.req.data = Some(icd.expect("in-capsule data has its buffer"));
                sl.req.data_offset = offset;
            }
        }
        Err(status) => {
            sl.plan = DataPlan::None;
            sl.req.transport_status = Some(status);
        }
    }
}

/// Starts the request in `slot` from the capsule receive `index` of `ring`
/// holds: the receive lends its ICD buffer when the command carries data in
/// the capsule, and is re-armed at once otherwise.
fn start_capsule(
    ring: &mut RecvRing,
    index: u32,
    received_bytes: u32,
    options: &RdmaOptions,
    slot: &mut Slot,
) {
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
    start_request(slot, sqe, plan, icd);
}

/// What to do with a queue the target has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Teardown {
    /// Work requests are still out and the flush deadline has not passed.
    Wait,
    /// Everything came back.
    Destroy,
    /// The flush deadline passed with work requests still out.
    DestroyOverdue,
}

/// The teardown decision for a closed queue whose QP went to the error state
/// (flushing began) at `flush_started`; `now` is passed in, not read here.
fn teardown(drained: bool, flush_started: Instant, now: Instant) -> Teardown {
    if drained {
        Teardown::Destroy
    } else if now.saturating_duration_since(flush_started) >= FLUSH_TIMEOUT {
        Teardown::DestroyOverdue
    } else {
        Teardown::Wait
    }
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
    /// Owns the QP; destroyed (QP first) when the queue drops, before its
    /// memory (fields drop in order).
    id: CmId,
    qp_num: u32,
    device: usize,
    gen: u16,
    send_wrs: u32,
    recv_wrs: u32,
    table: RequestTable,
    slots: Box<[Slot]>,
    /// Receives of its own; None when it takes them from its device's SRQ.
    recvs: Option<RegisteredRing>,
    send_batch: Vec<*mut sys::ibv_send_wr>,
    sends_in_flight: u32,
    life: Life,
    /// When the QP was moved to the error state (its work requests started
    /// to flush); None while it is live.
    flush_started: Option<Instant>,
    /// The device's `send_with_invalidate`.
    send_with_invalidate: bool,
    // Drop order: the MR before the memory it covers.
    _rsp_mr: Mr,
    /// One `RESPONSE_BYTES` response per request slot.
    rsp_region: DmaMemory,
}

impl Queue {
    /// The id, once the rest of the queue (memory, MRs) is dropped.
    fn into_id(self) -> CmId {
        self.id
    }

    fn response_offset(slot: u16) -> usize {
        usize::from(slot) * RESPONSE_BYTES
    }
}

pub(crate) struct RdmaPollGroup {
    reactor: usize,
    options: RdmaOptions,
    pool: Arc<BufPool>,
    cache: PoolCache,
    owners: Arc<Mutex<HashMap<CmToken, usize>>>,
    inbox: Arc<ArrayQueue<Notice>>,
    // Drop order: queues before the devices they use.
    queues: Vec<Option<Queue>>,
    devices: Devices,
    /// The queues on an SRQ by qp_num: an SRQ receive completion names its
    /// queue only so.
    srq_queues: QpNumMap,
    to_report: VecDeque<u16>,
    wcs: Vec<sys::ibv_wc>,
    next_gen: u16,
    /// The completion channels of the devices' CQs, as one fd the reactor
    /// watches in interrupt mode.
    wakeups: Epoll,
}

impl RdmaPollGroup {
    pub(crate) fn new(
        t: &RdmaTransport,
        reactor: usize,
        inbox: Arc<ArrayQueue<Notice>>,
        cache: usize,
    ) -> io::Result<RdmaPollGroup> {
        Ok(RdmaPollGroup {
            reactor,
            options: t.options,
            pool: t.pool.clone(),
            cache: PoolCache::new(t.pool.clone(), cache),
            owners: t.owners.clone(),
            inbox,
            queues: Vec::new(),
            devices: Devices(Vec::new()),
            srq_queues: QpNumMap::with_capacity(SRQ_QUEUES_RESERVED),
            to_report: VecDeque::new(),
            wcs: vec![sys::ibv_wc::default(); WC_BATCH],
            next_gen: 1,
            wakeups: Epoll::new()?,
        })
    }

    /// A device is going away: close its queues; it is released (see
    /// `release_removed_devices`) once they are gone.
    fn device_removed(&mut self, ctx: DeviceKey) {
        let Some(d) = self
            .devices
            .iter()
            .find(|(_, dev)| dev.ctx == ctx && !dev.removed)
            .map(|(d, _)| d)
        else {
            return;
        };
        log::warn!(
            "reactor {}: RDMA device {} is being removed; closing its queues",
            self.reactor,
            self.devices[d].name
        );
        self.devices[d].removed = true;
        for qi in 0..self.queues.len() {
            if self.queues[qi].as_ref().is_some_and(|q| q.device == d) {
                self.kill(qi as u16);
            }
        }
    }

    /// Drops removed devices with no queue left (SRQ, MRs, CQ, PD), so the
    /// kernel can finish removing them.
    fn release_removed_devices(&mut self) {
        for d in 0..self.devices.len() {
            let removed = self.devices.get_mut(d).is_some_and(|dev| dev.removed);
            if !removed || self.queues.iter().flatten().any(|q| q.device == d) {
                continue;
            }
            if let Some(dev) = self.devices.release(d) {
                self.wakeups.remove(dev.cq.event_fd());
                log::info!(
                    "reactor {}: RDMA device {} released",
                    self.reactor,
                    dev.name
                );
            }
        }
    }

    fn device_for(&mut self, device: &verbs::Device<'_>) -> Result<usize, String> {
        let ctx = device.key();
        if let Some((i, _)) = self.devices.iter().find(|(_, dev)| dev.ctx == ctx) {
            if self.devices[i].removed {
                return Err(format!(
                    "{}: the device is being removed",
                    self.devices[i].name
                ));
            }
            return Ok(i);
        }
        let d = self.devices.len();
        let name = device.name();
        let limits = device
            .query()
            .map_err(|e| format!("{name}: query device: {e}"))?;
        let icd_bytes = self.options.in_capsule_data_bytes;
        let recv_sge = if icd_bytes > 0 { 2 } else { 1 };
        let srq_depth = if self.options.srq {
            match srq_depth_for(self.options.srq_depth, recv_sge, &limits) {
                Ok((depth, note)) => {
                    if let Some(note) = note {
                        log::info!("reactor {}: RDMA device {name}: {note}", self.reactor);
                    }
                    Some(depth)
                }
                Err(why) => {
                    log::warn!(
                        "reactor {}: RDMA device {name}: srq = true but {why}; \
                         its queues post their own receives",
                        self.reactor
                    );
                    None
                }
            }
        } else {
            None
        };
        let pd = Pd::new(device).map_err(|e| format!("{name}: allocate PD: {e}"))?;
        // SRQ receive completions land in the CQ too: room for all of them.
        let cq_entries = (CQ_ENTRIES + srq_depth.unwrap_or(0)).min(limits.max_cqe);
        let cq = Cq::new(device, cq_entries).map_err(|e| format!("{name}: create CQ: {e}"))?;
        self.wakeups
            .add(cq.event_fd(), d as u64)
            .map_err(|e| format!("{name}: watch the CQ's completion channel: {e}"))?;
        let mem = self.pool.memory();
        // One MR over the whole pool, however many hugepages it spans.
        let pool_mr = Mr::register(&pd, mem.as_ptr(), mem.len())
            .map_err(|e| format!("{name}: register data buffers: {e}"))?;
        let srq = match srq_depth {
            Some(depth) => match self.create_srq(&pd, d, depth, recv_sge) {
                Ok(srq) => Some(srq),
                Err(e) => {
                    log::warn!(
                        "reactor {}: RDMA device {name}: cannot set up its shared receive \
                         queue ({e}); its queues post their own receives",
                        self.reactor
                    );
                    None
                }
            },
            None => None,
        };
        log::info!(
            "reactor {}: RDMA device {name} ready (max_qp_wr {}, max_cqe {}, {})",
            self.reactor,
            limits.max_qp_wr,
            limits.max_cqe,
            match &srq {
                Some(s) => format!("shared receive queue of {} receives", s.recvs.ring.len()),
                None => "receives per queue".to_string(),
            }
        );
        let send_with_invalidate =
            send_with_invalidate(&name, limits.vendor_id, limits.device_cap_flags);
        if let Err(why) = send_with_invalidate {
            log_once_per_device(&name, || {
                log::info!(
                    "RDMA device {name}: send-with-invalidate disabled: {why}; \
                     hosts invalidate their keys themselves"
                )
            });
        }
        let at = self.devices.push(Device {
            ctx,
            name,
            limits,
            cq_entries,
            // The SRQ's receives may all complete at once.
            cqe_used: srq.as_ref().map_or(0, |s| s.recvs.ring.len() as u32),
            removed: false,
            responses_inline: None,
            send_with_invalidate: send_with_invalidate.is_ok(),
            srq,
            pool_mr,
            cq,
            pd,
        });
        assert_eq!(at, d, "SRQ wr_ids were built with this device index");
        Ok(d)
    }

    /// The SRQ of device `d` with `depth` receives, all posted.
    fn create_srq(
        &self,
        pd: &Pd,
        d: usize,
        depth: u32,
        recv_sge: u32,
    ) -> Result<DeviceSrq, String> {
        let device = u16::try_from(d).map_err(|_| "too many RDMA devices".to_string())?;
        let srq = Srq::new(pd, depth, recv_sge).map_err(|e| format!("create SRQ: {e}"))?;
        let mut recvs = RegisteredRing::new(
            pd,
            depth,
            self.options.in_capsule_data_bytes,
            // Exactly one per receive: a receive whose buffer is lent waits
            // for it to come back, so requests cannot drain the memory.
            depth as usize,
            |i| srq_wr_id(device, i),
        )?;
        recvs
            .ring
            // SAFETY: see `RecvRing::post`: the WRs live in the ring's boxed
            // table, naming its command slots and ICD buffers, registered on
            // `pd` (the SRQ's) by `recvs`, which outlives the SRQ in DeviceSrq.
            .post(|wrs| unsafe { srq.post_recv_chain(wrs) })
            .map_err(|e| format!("post receives: {e}"))?;
        Ok(DeviceSrq {
            srq,
            recvs,
            post_failed: false,
        })
    }

    fn setup_queue(&mut self, conn: &mut ConnRequest, qi: u16) -> Result<Queue, String> {
        let Some(device) = conn.id().device() else {
            return Err("connection has no RDMA device".into());
        };
        let d = self.device_for(&device)?;
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
        let rsp_mr = Mr::register(&dev.pd, rsp_region.as_ptr(), rsp_region.len())
            .map_err(|e| format!("register response buffers: {e}"))?;
        let spec = QpSpec {
            send_wr: send_wrs,
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
                data_sge: sys::ibv_sge::default(),
                rsp_sge: sys::ibv_sge {
                    addr: rsp_base + Queue::response_offset(i) as u64,
                    length: RESPONSE_BYTES as u32,
                    lkey: rsp_lkey,
                },
                data_wr: sys::ibv_send_wr::default(),
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
        let mut q = Queue {
            qp_num: id.qp_num(),
            id,
            device: d,
            gen,
            send_wrs,
            recv_wrs,
            table: RequestTable::new(depth, u16::from(conn.initiator_depth.max(1))),
            slots,
            recvs,
            send_batch: Vec::with_capacity(2 * usize::from(depth) + 1),
            sends_in_flight: 0,
            life: Life::Live,
            flush_started: None,
            send_with_invalidate: dev.send_with_invalidate,
            _rsp_mr: rsp_mr,
            rsp_region,
        };
        // The boxed table never moves again: point the WRs at their SGEs now.
        for s in q.slots.iter_mut() {
            s.send_wr.sg_list = &mut s.rsp_sge;
            s.data_wr.sg_list = &mut s.data_sge;
            s.data_wr.num_sge = 1;
        }
        let id = &q.id;
        let posted = match q.recvs.as_mut() {
            // SAFETY: see `RecvRing::post`: the WRs live in the ring's boxed
            // table, naming memory registered on the QP's PD by the ring,
            // which the queue drops only after destroying the QP.
            Some(r) => r.ring.post(|wrs| unsafe { id.post_recv_chain(wrs) }),
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
        q.flush_started = Some(Instant::now());
        // Work requests never posted will never complete: settle them here.
        for &wr in &q.send_batch {
            // SAFETY: the batch holds WRs of `q.slots` (boxed, in place while
            // the queue lives), not posted, so only we touch them.
            let (kind, _, _, slot) = decode(unsafe { verbs::send_wr_id(wr) });
            let s = &mut q.slots[usize::from(slot)];
            match kind {
                KIND_SEND => {
                    q.sends_in_flight -= 1;
                    q.table.free(slot);
                    if let Some(b) = s.req.data.take() {
                        release_buffer(&mut self.cache, b);
                    }
                }
                KIND_READ => {
                    q.table.read_flushed(slot);
                    if let Some(b) = s.req.data.take() {
                        release_buffer(&mut self.cache, b);
                    }
                }
                _ => {}
            }
        }
        q.send_batch.clear();
        if let Some(r) = q.recvs.as_mut() {
            r.ring.discard_batch();
        }
        for (i, s) in q.slots.iter_mut().enumerate() {
            let st = q.table.state(i as u16);
            if matches!(
                st,
                RequestState::NeedBuffer
                    | RequestState::NeedReadCredit
                    | RequestState::ReadyToExecute
            ) {
                if let Some(b) = s.req.data.take() {
                    release_buffer(&mut self.cache, b);
                }
            }
        }
        q.table.abandon_waiting();
        self.to_report.push_back(qi);
    }

    fn on_wc(&mut self, wc: &sys::ibv_wc) {
        if wc.wr_id >> 56 == KIND_SRQ_RECV {
            self.on_srq_recv(wc);
            return;
        }
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
                let Some(recvs) = q.recvs.as_mut() else {
                    return; // cannot happen: its receives are on the SRQ
                };
                recvs.ring.completed();
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
                start_capsule(
                    &mut recvs.ring,
                    u32::from(slot),
                    wc.byte_len,
                    &self.options,
                    &mut q.slots[usize::from(s)],
                );
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
                        release_buffer(&mut self.cache, b);
                    }
                }
            }
            KIND_SEND => {
                q.sends_in_flight -= 1;
                q.table.free(slot);
                if let Some(b) = q.slots[usize::from(slot)].req.data.take() {
                    release_buffer(&mut self.cache, b);
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

    /// A receive of a device's SRQ completed: it names its queue by qp_num.
    /// The receive goes back to the SRQ at once, unless its ICD buffer is
    /// lent to the request (then when the buffer comes back).
    fn on_srq_recv(&mut self, wc: &sys::ibv_wc) {
        let (d, index) = decode_srq(wc.wr_id);
        let Some(srq) = self.devices.get_mut(d).and_then(|d| d.srq.as_mut()) else {
            return; // cannot happen: SRQ wr_ids name a device with an SRQ
        };
        let ring = &mut srq.recvs.ring;
        ring.completed();
        let qi = self.srq_queues.get(wc.qp_num);
        let q = qi
            .and_then(|qi| self.queues[usize::from(qi)].as_mut())
            .filter(|q| q.life == Life::Live);
        if wc.status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            // A flushed SRQ receive means the SRQ itself is going away.
            if wc.status != sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                ring.rearm(index);
            }
            if let (Some(qi), Some(_)) = (qi, q) {
                log::warn!(
                    "RDMA receive failed (status {}); closing the queue",
                    wc.status
                );
                self.kill(qi);
            }
            return;
        }
        let (Some(qi), Some(q)) = (qi, q) else {
            ring.rearm(index); // a queue already closing or gone
            return;
        };
        let Some(s) = q.table.receive() else {
            ring.rearm(index);
            log::warn!(
                "host overran an RDMA queue of depth {}; closing it",
                q.slots.len()
            );
            self.kill(qi);
            return;
        };
        start_capsule(
            ring,
            index,
            wc.byte_len,
            &self.options,
            &mut q.slots[usize::from(s)],
        );
    }

    /// Handles up to `WC_BATCH` completions of device `d`'s CQ; returns how
    /// many. A released device has none.
    fn poll_cq(&mut self, d: usize) -> usize {
        let Some(dev) = self.devices.get_mut(d) else {
            return 0;
        };
        let mut wcs = std::mem::take(&mut self.wcs);
        let n = dev.cq.poll(&mut wcs);
        for wc in &wcs[..n] {
            self.on_wc(wc);
        }
        self.wcs = wcs;
        n
    }

    /// Handles every completion waiting in device `d`'s CQ (bounded by its size).
    fn drain_cq(&mut self, d: usize) {
        let rounds = self.devices[d].cq_entries as usize / WC_BATCH + 1;
        for _ in 0..rounds {
            if self.poll_cq(d) < WC_BATCH {
                break;
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
                // The data already sits in the ICD buffer lent by its receive.
                DataPlan::InCapsule { len, .. } => (len, Xfer::HostToController),
                DataPlan::Keyed { len, xfer, .. } => (len, xfer),
            };
            if len > 0 && matches!(plan, DataPlan::Keyed { .. }) {
                let Some(buf) = self.cache.get() else {
                    break;
                };
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

    /// Frees a closed queue once all its work requests have flushed, or once
    /// `FLUSH_TIMEOUT` has passed since they started to.
    fn try_destroy(&mut self, qi: u16) {
        let Some(q) = self.queues[usize::from(qi)].as_ref() else {
            return;
        };
        if q.life != Life::Closing {
            return;
        }
        let recvs_out = q.recvs.as_ref().map_or(0, |r| r.ring.posted());
        let requests_out = q.slots.len() - q.table.free_count();
        let drained = recvs_out == 0 && q.sends_in_flight == 0 && requests_out == 0;
        // The clock is read only while a closed queue waits, never per I/O.
        let flush_started = q.flush_started.expect("a closing queue's QP is in error");
        let now = if drained {
            flush_started
        } else {
            Instant::now()
        };
        match teardown(drained, flush_started, now) {
            Teardown::Wait => return,
            Teardown::Destroy => {}
            Teardown::DestroyOverdue => log::warn!(
                "reactor {}: RDMA queue {qi} (qp_num {}) still has {recvs_out} receive(s), \
                 {} send(s) and {requests_out} request(s) out {} s after it was closed; \
                 destroying it anyway",
                self.reactor,
                q.qp_num,
                q.sends_in_flight,
                FLUSH_TIMEOUT.as_secs()
            ),
        }
        let mut q = self.queues[usize::from(qi)].take().expect("checked");
        self.devices[q.device].cqe_used -= q.send_wrs + q.recv_wrs;
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&q.id.token());
        let on_srq = q.recvs.is_none();
        let (device, qp_num) = (q.device, q.qp_num);
        // The QP first: the NIC must be done with the memory before it is freed.
        q.id.destroy_qp();
        drop(q); // the id, MRs, command slots, ICD and response buffers
        if on_srq {
            // Receive completions of the QP may still sit in the CQ. Take them
            // now, while its qp_num still names this (gone) queue: a new QP
            // may get the same number.
            self.drain_cq(device);
            self.srq_queues.remove(qp_num);
        }
        log::debug!("reactor {}: RDMA queue {qi} destroyed", self.reactor);
    }
}

impl Drop for RdmaPollGroup {
    fn drop(&mut self) {
        // Queues still here: shutdown stopped waiting for their flush. Their
        // QPs go first, before the memory they use and before the SRQ, CQ and
        // PD of their device (dropped after this).
        for (qi, slot) in self.queues.iter_mut().enumerate() {
            let Some(q) = slot.take() else { continue };
            log::warn!(
                "reactor {}: RDMA queue {qi} (qp_num {}) still open at shutdown; destroying it",
                self.reactor,
                q.qp_num
            );
            self.owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&q.id.token());
            drop(q); // the id (QP first), then the memory
        }
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
        let mut q = self
            .setup_queue(&mut conn, qi as u16)
            .map_err(TransportError::Full)?;
        let private = accept_private_data(conn.depth);
        if let Err(e) = q.id.accept(
            private.as_bytes(),
            conn.responder_resources,
            conn.initiator_depth,
        ) {
            self.devices[q.device].cqe_used -= q.send_wrs + q.recv_wrs;
            // The QP before the memory its receives point at; the id goes
            // back to the request, which rejects the connection.
            q.id.destroy_qp();
            conn.id = Some(q.into_id());
            return Err(TransportError::Other(format!("RDMA accept: {e}")));
        }
        if q.recvs.is_none() {
            self.srq_queues.insert(q.qp_num, qi as u16);
        }
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(q.id.token(), self.reactor);
        self.queues[qi] = Some(q);
        Ok(qi as u16)
    }

    fn poll(&mut self, events: &mut Vec<TransportEvent>) -> usize {
        let start = events.len();
        while let Some(notice) = self.inbox.pop() {
            match notice {
                Notice::Disconnected(token) => {
                    if let Some(qi) = self
                        .queues
                        .iter()
                        .position(|q| q.as_ref().is_some_and(|q| q.id.token() == token))
                    {
                        self.kill(qi as u16);
                    }
                }
                Notice::DeviceRemoved(ctx) => self.device_removed(ctx),
            }
        }
        for d in 0..self.devices.len() {
            self.poll_cq(d);
        }
        for qi in 0..self.queues.len() {
            self.progress(qi as u16, events);
            self.try_destroy(qi as u16);
        }
        self.release_removed_devices();
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
                release_buffer(&mut self.cache, b);
            }
            q.table.free(s);
            return;
        }
        let rsp = q.slots[usize::from(s)].req.rsp;
        q.rsp_region
            .write_at(Queue::response_offset(s), rsp.as_bytes())
            .expect("response slot inside the region");
        let pool_lkey = self.devices[q.device].pool_mr.lkey();
        let sl = &mut q.slots[usize::from(s)];
        if prepare_c2h_write(sl, pool_lkey, wr_id(KIND_WRITE, q.gen, id.queue, s)) {
            q.send_batch.push(&mut sl.data_wr);
        }
        let (opcode, rkey) = response_opcode(&sl.plan, q.send_with_invalidate);
        sl.send_wr.opcode = opcode;
        sl.send_wr.__bindgen_anon_1 = sys::ibv_send_wr__bindgen_ty_1 {
            invalidate_rkey: rkey,
        };
        q.send_batch.push(&mut sl.send_wr);
        q.sends_in_flight += 1;
        q.table.completing(s);
    }

    fn flush(&mut self) {
        // SRQ receives first: a host answered below may send its next command at once.
        for dev in self.devices.0.iter_mut().flatten() {
            let Some(srq) = dev.srq.as_mut() else {
                continue;
            };
            srq.recvs.ring.refill();
            let shared = &srq.srq;
            // SAFETY: see `RecvRing::post`: the ring's WRs name memory
            // registered on the SRQ's PD, kept until the receive completes.
            let post = |wrs: &[*mut sys::ibv_recv_wr]| unsafe { shared.post_recv_chain(wrs) };
            match srq.recvs.ring.post(post) {
                Ok(()) => srq.post_failed = false,
                Err(e) => {
                    // The receives stay armed and are posted again next time.
                    if !srq.post_failed {
                        log::error!(
                            "reactor {}: RDMA device {}: posting to its shared receive queue \
                             failed ({e}); retrying every poll",
                            self.reactor,
                            dev.name
                        );
                    }
                    srq.post_failed = true;
                }
            }
        }
        for qi in 0..self.queues.len() {
            let Some(q) = self.queues[qi].as_mut() else {
                continue;
            };
            if q.life != Life::Live {
                continue;
            }
            let id = &q.id;
            let posted_recv = match q.recvs.as_mut() {
                Some(r) => {
                    r.ring.refill();
                    // SAFETY: see `RecvRing::post`.
                    r.ring.post(|wrs| unsafe { id.post_recv_chain(wrs) })
                }
                None => Ok(()),
            };
            // SAFETY: the batch holds data and send WRs of `q.slots` (boxed,
            // in place while the queue lives, unposted so far). Their SGEs
            // name the slot's response (in `rsp_region`, registered by
            // `_rsp_mr`) and the request's pool buffer (pool MR), which the
            // request holds until its SEND completes or flushes (KIND_SEND in
            // on_wc, or kill); a READ's buffer is not read before `read_done`.
            let posted_send = unsafe { q.id.post_send_chain(&q.send_batch) };
            // What the device took completes later; kill settles the rest.
            let taken = match &posted_send {
                Ok(()) => q.send_batch.len(),
                Err(e) => e.posted.min(q.send_batch.len()),
            };
            q.send_batch.drain(..taken);
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
            if q.life == Life::Live {
                // Not killed first (the target always does): start the flush.
                q.id.disconnect();
                q.flush_started = Some(Instant::now());
            }
            q.life = Life::Closing;
        }
        self.try_destroy(queue);
    }

    fn wakeup_fd(&self) -> Option<RawFd> {
        Some(self.wakeups.as_raw_fd())
    }

    fn arm_wakeup(&mut self) -> bool {
        if !self.inbox.is_empty() || !self.to_report.is_empty() {
            return false;
        }
        // A request waiting for a data buffer is woken by a buffer coming
        // back, which may come from another reactor and signals no fd.
        let waiting_for_buffer = self
            .queues
            .iter()
            .flatten()
            .any(|q| q.life == Life::Live && q.table.next_needing_buffer().is_some());
        if waiting_for_buffer {
            return false;
        }
        for d in 0..self.devices.len() {
            let Some(dev) = self.devices.get_mut(d) else {
                continue;
            };
            if let Err(e) = dev.cq.arm() {
                log::debug!(
                    "reactor {}: {}: cannot arm the CQ: {e}",
                    self.reactor,
                    dev.name
                );
                return false;
            }
            // A completion that came before the arm raises no event.
            if self.poll_cq(d) > 0 {
                return false;
            }
        }
        true
    }

    fn woke(&mut self) {
        for d in 0..self.devices.len() {
            if let Some(dev) = self.devices.get_mut(d) {
                dev.cq.take_event();
            }
        }
    }

    fn queue_count(&self) -> usize {
        self.queues.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::opcode;
    use nvme_spec::SglDescriptor;

    const SQE_LKEY: u32 = 7;
    const ICD_LKEY: u32 = 9;

    fn ring(count: u32, icd_bytes: u32, icd_count: usize) -> (RecvRing, Option<Arc<BufPool>>) {
        let region = DmaMemory::allocate_ordinary(count as usize * CAPSULE_HEADER).unwrap();
        let pool = (icd_bytes > 0).then(|| BufPool::with_ordinary_memory(4096, icd_count).unwrap());
        let icd = pool.clone().map(|pool| IcdBuffers {
            pool,
            lkey: ICD_LKEY,
            len_bytes: icd_bytes,
        });
        let r = RecvRing::new(count, region, SQE_LKEY, icd, |i| 100 + u64::from(i)).unwrap();
        (r, pool)
    }

    /// Posts the batch, returning the wr_ids and SGE lists posted (read from
    /// the ring's own table, after checking the posted pointers name it).
    fn post_all(r: &mut RecvRing) -> Vec<(u64, Vec<sys::ibv_sge>)> {
        let mut ptrs = Vec::new();
        r.post(|wrs| {
            ptrs.extend_from_slice(wrs);
            Ok(())
        })
        .unwrap();
        ptrs.iter()
            .map(|&p| {
                let recv = r
                    .recvs
                    .iter()
                    .find(|x| std::ptr::eq(&x.wr, p))
                    .expect("a WR of this ring");
                assert!(std::ptr::eq(recv.wr.sg_list, recv.sges.as_ptr()));
                let n = recv.wr.num_sge as usize;
                (recv.wr.wr_id, recv.sges[..n].to_vec())
            })
            .collect()
    }

    fn write_cmd(len: u32) -> Sqe {
        let mut c = Sqe::new(opcode::io::WRITE, 1);
        c.dptr = SglDescriptor::data_block(0, len);
        c
    }

    #[test]
    fn without_icd_a_receive_has_one_sge_and_keeps_it() {
        let (mut r, _) = ring(3, 0, 0);
        let posted = post_all(&mut r);
        assert_eq!(r.posted(), 3);
        let base = posted[0].1[0].addr;
        for (i, (id, sges)) in posted.iter().enumerate() {
            assert_eq!(*id, 100 + i as u64);
            assert_eq!(sges.len(), 1);
            assert_eq!(sges[0].addr, base + (i * CAPSULE_HEADER) as u64);
            assert_eq!(
                (sges[0].length, sges[0].lkey),
                (CAPSULE_HEADER as u32, SQE_LKEY)
            );
        }
        r.completed();
        r.rearm(1);
        assert_eq!(post_all(&mut r)[0].0, 101);
        assert_eq!(r.posted(), 3);
    }

    #[test]
    fn lent_icd_buffer_is_replaced_at_once_while_the_pool_lasts() {
        let (mut r, pool) = ring(2, 4096, 4);
        let pool = pool.unwrap();
        let first = post_all(&mut r);
        assert_eq!(first[0].1.len(), 2);
        assert_eq!((first[0].1[1].length, first[0].1[1].lkey), (4096, ICD_LKEY));
        assert_eq!(pool.available(), 2, "two receives armed, two spare");

        // Receive 0 completes with data: its buffer is lent, a fresh one armed.
        r.completed();
        let lent = r.lend_icd(0);
        assert_eq!(lent.as_ptr() as u64, first[0].1[1].addr);
        let again = post_all(&mut r);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].1[1].addr, lent.as_ptr() as u64);
        assert_eq!(r.starved(), 0);

        // Both lent: the pool is empty, so the next receive with data starves...
        r.completed();
        let lent2 = r.lend_icd(1);
        post_all(&mut r);
        r.completed();
        let lent3 = r.lend_icd(0);
        assert_eq!(r.starved(), 1);
        assert!(
            post_all(&mut r).is_empty(),
            "a starved receive is not posted"
        );
        assert_eq!(r.posted(), 1);

        // ...until a lent buffer comes back (dropped into its pool) and refill runs.
        drop(lent);
        r.refill();
        assert_eq!(r.starved(), 0);
        let refilled = post_all(&mut r);
        assert_eq!(refilled[0].0, 100);
        assert_eq!(r.posted(), 2);
        drop((lent2, lent3));
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn per_queue_pool_never_starves_at_full_depth() {
        // Depth receives armed plus depth requests holding data: 2 * depth buffers.
        let depth = 8;
        let (mut r, _) = ring(depth, 4096, ICD_BUFFERS_PER_RECV * depth as usize);
        post_all(&mut r);
        let mut held = Vec::new();
        for i in 0..depth {
            r.completed();
            held.push(r.lend_icd(i));
        }
        assert_eq!(r.starved(), 0);
        assert_eq!(post_all(&mut r).len(), depth as usize);
        // Requests finish, the next round of commands arrives.
        held.clear();
        for i in 0..depth {
            r.completed();
            held.push(r.lend_icd(i));
        }
        assert_eq!(r.starved(), 0);
    }

    #[test]
    fn command_is_read_from_its_slot() {
        let (r, _) = ring(4, 0, 0);
        let cmd = write_cmd(512);
        r.sqe_region
            .write_at(2 * CAPSULE_HEADER, cmd.as_bytes())
            .unwrap();
        assert_eq!(r.sqe(2).as_bytes(), cmd.as_bytes());
        assert_eq!(r.sqe(1).as_bytes(), Sqe::default().as_bytes());
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
    fn send_with_invalidate_is_off_on_rxe_and_without_extensions() {
        use sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS as MGT;
        assert_eq!(send_with_invalidate("mlx5_0", 0x02c9, MGT), Ok(()));
        assert!(send_with_invalidate("rxe0", 0xFF_FFFF, MGT).is_err());
        assert!(
            send_with_invalidate("rxe_eth1", 0x02c9, MGT).is_err(),
            "by name"
        );
        assert!(
            send_with_invalidate("roce0", 0xFF_FFFF, MGT).is_err(),
            "a renamed rxe, by vendor id"
        );
        assert!(
            send_with_invalidate("old", 0, MGT).is_err(),
            "old rxe vendor id"
        );
        assert_eq!(
            send_with_invalidate("mlx4_0", 0x02c9, 0),
            Err("the device has no memory management extensions")
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

    fn limits(max_srq: u32, max_srq_wr: u32, max_srq_sge: u32, max_cqe: u32) -> DeviceLimits {
        DeviceLimits {
            vendor_id: 0x02c9,
            device_cap_flags: 0,
            max_qp_wr: 16384,
            max_cqe,
            max_qp_rd_atom: 16,
            max_qp_init_rd_atom: 16,
            max_srq,
            max_srq_wr,
            max_srq_sge,
        }
    }

    #[test]
    fn srq_depth_is_capped_by_the_device_or_refused() {
        assert_eq!(
            srq_depth_for(4096, 2, &limits(1024, 1 << 20, 32, 32767)),
            Ok((4096, None))
        );
        let (depth, note) = srq_depth_for(4096, 2, &limits(1024, 1024, 32, 32767)).unwrap();
        assert_eq!(depth, 1024);
        assert!(note.unwrap().contains("capped to 1024 (max_srq_wr 1024"));
        // Half the CQ stays for send completions.
        assert_eq!(
            srq_depth_for(4096, 2, &limits(1024, 1 << 20, 32, 4096))
                .unwrap()
                .0,
            2048
        );
        assert_eq!(
            srq_depth_for(4096, 2, &limits(0, 0, 0, 32767)),
            Err("the device has no shared receive queues".into())
        );
        let e = srq_depth_for(4096, 2, &limits(64, 4096, 1, 32767)).unwrap_err();
        assert!(e.contains("in-capsule data needs 2"), "{e}");
        assert!(srq_depth_for(4096, 1, &limits(64, 4096, 1, 32767)).is_ok());
    }

    #[test]
    fn srq_wr_ids_name_device_and_receive() {
        let id = srq_wr_id(3, 70_000);
        assert_eq!(id >> 56, KIND_SRQ_RECV);
        assert_eq!(decode_srq(id), (3, 70_000));
        assert_ne!(id >> 56, decode(wr_id(KIND_RECV, 3, 1, 2)).0);
    }

    #[test]
    fn qp_num_map_finds_queues_and_forgets_them() {
        let mut m = QpNumMap::with_capacity(4);
        for (qp, q) in [(900, 0), (17, 1), (4000, 2)] {
            m.insert(qp, q);
        }
        assert_eq!(
            (m.get(17), m.get(900), m.get(4000)),
            (Some(1), Some(0), Some(2))
        );
        assert_eq!(m.get(18), None);
        m.remove(900);
        assert_eq!(m.get(900), None);
        m.insert(17, 5); // a stale entry is replaced
        assert_eq!(m.get(17), Some(5));
        assert_eq!(m.0.len(), 2);
    }

    #[test]
    fn a_partial_post_keeps_the_rest_armed() {
        let (mut r, _) = ring(4, 0, 0);
        let e = r
            .post(|wrs| {
                Err(verbs::PostError {
                    posted: 3,
                    error: std::io::Error::from_raw_os_error(libc::ENOMEM),
                })
                .map(|()| assert_eq!(wrs.len(), 4))
            })
            .unwrap_err();
        assert_eq!(e.posted, 3);
        assert_eq!(r.posted(), 3, "the first three were taken");
        let rest = post_all(&mut r);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, 103, "only the one not taken is posted again");
        assert_eq!(r.posted(), 4);
    }

    #[test]
    fn srq_ring_holds_a_receive_until_its_data_comes_back() {
        // An SRQ ring has one ICD buffer per receive: a lent buffer starves
        // its receive until the request is done with the data.
        let (mut r, _) = ring(2, 4096, 2);
        post_all(&mut r);
        r.completed();
        let data = r.lend_icd(1);
        assert_eq!(r.starved(), 1);
        assert!(post_all(&mut r).is_empty());
        drop(data); // the request finished: release_buffer drops it into its pool
        r.refill();
        assert_eq!(post_all(&mut r)[0].0, 101);
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

    #[test]
    fn request_borrows_the_icd_buffer_at_the_sgl_offset() {
        let icd = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let mut sl = Slot {
            req: Request::new(),
            plan: DataPlan::None,
            data_sge: sys::ibv_sge::default(),
            rsp_sge: sys::ibv_sge::default(),
            data_wr: sys::ibv_send_wr::default(),
            send_wr: sys::ibv_send_wr::default(),
        };
        let plan = Ok(DataPlan::InCapsule {
            offset: 16,
            len: 512,
        });
        start_request(&mut sl, write_cmd(512), plan, icd.get());
        assert_eq!(sl.req.data_offset, 16);
        assert!(sl.req.data.is_some());
        sl.req.data = None;
        start_request(&mut sl, write_cmd(512), Err(Status::INVALID_FIELD), None);
        assert_eq!(sl.plan, DataPlan::None);
        assert_eq!(sl.req.transport_status, Some(Status::INVALID_FIELD));
    }

    fn keyed_read_slot(sgl_bytes: u32, pool: &Arc<BufPool>) -> Slot {
        let mut req = Request::new();
        req.cmd = Sqe::new(opcode::io::READ, 1);
        req.xfer = Xfer::ControllerToHost;
        req.length = sgl_bytes;
        req.data = pool.get();
        Slot {
            req,
            plan: DataPlan::Keyed {
                addr: 0x10_0000,
                len: sgl_bytes,
                key: 42,
                invalidate: false,
                xfer: Xfer::ControllerToHost,
            },
            data_sge: sys::ibv_sge::default(),
            rsp_sge: sys::ibv_sge::default(),
            data_wr: sys::ibv_send_wr::default(),
            send_wr: sys::ibv_send_wr::default(),
        }
    }

    #[test]
    fn rdma_write_carries_only_the_bytes_the_command_produced() {
        let pool = BufPool::with_ordinary_memory(8192, 1).unwrap();
        // A 4 KiB SGL, of which the command produced 512 bytes (a short log page).
        let mut sl = keyed_read_slot(4096, &pool);
        sl.req.c2h_bytes = 512;
        assert!(prepare_c2h_write(&mut sl, 5, 77));
        let buf_start = sl.req.data.as_ref().unwrap().as_ptr() as u64;
        assert_eq!(sl.data_sge.length, 512);
        assert_eq!(sl.data_sge.addr, buf_start);
        assert_eq!(sl.data_sge.lkey, 5);
        assert_eq!(sl.data_wr.opcode, sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE);
        // SAFETY: reading the union member this function just wrote.
        let rdma = unsafe { sl.data_wr.wr.rdma };
        assert_eq!((rdma.remote_addr, rdma.rkey), (0x10_0000, 42));
        assert_eq!(sl.data_wr.wr_id, 77);
        sl.req.data = None;
    }

    #[test]
    fn failed_or_empty_commands_write_nothing() {
        let pool = BufPool::with_ordinary_memory(8192, 1).unwrap();
        let mut sl = keyed_read_slot(4096, &pool);
        sl.req.c2h_bytes = 4096;
        sl.req.rsp.set_status(Status::LBA_OUT_OF_RANGE);
        assert!(
            !prepare_c2h_write(&mut sl, 5, 1),
            "a failed read sends no data"
        );
        sl.req.rsp.set_status(Status::SUCCESS);
        sl.req.c2h_bytes = 0;
        assert!(
            !prepare_c2h_write(&mut sl, 5, 1),
            "nothing produced, nothing sent"
        );
        sl.req.data = None;
    }

    #[test]
    #[should_panic(expected = "produced 8192 bytes for a 4096-byte SGL")]
    fn producing_more_than_the_sgl_is_caught() {
        let pool = BufPool::with_ordinary_memory(8192, 1).unwrap();
        let mut sl = keyed_read_slot(4096, &pool);
        sl.req.c2h_bytes = 8192;
        prepare_c2h_write(&mut sl, 5, 1);
    }
}
