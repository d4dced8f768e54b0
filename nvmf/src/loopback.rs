//! An in-process transport that behaves like RDMA: a host registers memory
//! under a key, commands carry keyed SGLs (or in-capsule data), and the target
//! "RDMA READs" and "RDMA WRITEs" that memory by copy. Tests and benchmarks
//! drive the target through it exactly as a Linux host drives a real one.
//!
//! Request slot states (one file, named): `Free` -> `AwaitingBuffer` ->
//! `Executing` (lent to the target) -> `Free` on `complete()`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use dma::{BufPool, HostMemory, PoolCache};
use nvme_spec::identify::sgls;
use nvme_spec::{Cqe, Sqe, Status};

use crate::transport::{
    plan_data, DataPlan, ListenAddress, PendingQueue, Request, RequestId, Transport, TransportCaps,
    TransportError, TransportEvent, TransportPollGroup, Xfer,
};

/// Connections waiting to be accepted.
const ACCEPT_BACKLOG: usize = 1024;
/// Queues one loopback poll group serves.
const MAX_QUEUES_PER_POLL_GROUP: usize = 4096;
/// Most buffers a reactor keeps in its local cache (one full queue).
const POOL_CACHE_MAX_BUFFERS: usize = 128;

/// A command as it crosses the loopback wire.
#[derive(Clone, Copy)]
struct Submission {
    sqe: Sqe,
    /// Host in-capsule data slot, when the SGL points into the capsule.
    icd_slot: u16,
}

/// What host and target share for one queue.
struct Wire {
    qid: u16,
    depth: u16,
    submissions: ArrayQueue<Submission>,
    completions: ArrayQueue<Cqe>,
    /// Host memory reachable with `rkey`.
    memory: Arc<HostMemory>,
    rkey: u32,
    /// In-capsule data slots: `depth` x `icd_bytes`.
    icd: Arc<HostMemory>,
    icd_bytes: u32,
    host_closed: AtomicBool,
    target_closed: AtomicBool,
}

pub struct LoopbackTransport {
    caps: TransportCaps,
    max_io_bytes: u32,
    listeners: Mutex<Vec<ListenAddress>>,
    backlog: ArrayQueue<(Arc<Wire>, ListenAddress)>,
    pool: Arc<BufPool>,
    next_rkey: AtomicU32,
}

impl LoopbackTransport {
    /// `unit_count` data buffers of `io_unit_bytes` each are shared by all
    /// reactors; a transfer takes as many as it needs (a chain).
    pub fn new(
        in_capsule_data_bytes: u32,
        max_io_bytes: u32,
        io_unit_bytes: u32,
        unit_count: usize,
    ) -> Result<Arc<LoopbackTransport>, TransportError> {
        if !io_unit_bytes.is_power_of_two() {
            return Err(TransportError::Other(format!(
                "loopback buffer pool: io_unit_size {io_unit_bytes} is not a power of two"
            )));
        }
        let pool = BufPool::with_ordinary_memory(io_unit_bytes as usize, unit_count)
            .map_err(|e| TransportError::Other(format!("loopback buffer pool: {e}")))?;
        let max_units = (max_io_bytes as usize).div_ceil(io_unit_bytes as usize);
        if max_units > unit_count {
            return Err(TransportError::Other(format!(
                "loopback buffer pool: {unit_count} units of {io_unit_bytes} bytes cannot hold \
                 one {max_io_bytes}-byte transfer"
            )));
        }
        Ok(Arc::new(LoopbackTransport {
            caps: TransportCaps::new(
                sgls::SUPPORTED | sgls::KEYED_DATA_BLOCK,
                in_capsule_data_bytes,
            ),
            max_io_bytes,
            listeners: Mutex::new(Vec::new()),
            backlog: ArrayQueue::new(ACCEPT_BACKLOG),
            pool,
            next_rkey: AtomicU32::new(0x1000),
        }))
    }

    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    /// The host side: opens a queue to `listener` announcing `qid`, with
    /// `memory_bytes` of host memory the target may read and write.
    pub fn connect(
        &self,
        listener: &ListenAddress,
        qid: u16,
        depth: u16,
        memory_bytes: usize,
    ) -> Result<HostQueue, String> {
        let listening = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l == listener);
        if !listening {
            return Err(format!("connection refused: nothing listens on {listener}"));
        }
        assert!(depth >= 1);
        let icd_bytes = self.caps.in_capsule_data_bytes.max(16);
        let wire = Arc::new(Wire {
            qid,
            depth,
            submissions: ArrayQueue::new(usize::from(depth)),
            completions: ArrayQueue::new(usize::from(depth)),
            memory: HostMemory::new(memory_bytes.max(1)),
            rkey: self.next_rkey.fetch_add(1, Ordering::Relaxed),
            icd: HostMemory::new(usize::from(depth) * icd_bytes as usize),
            icd_bytes,
            host_closed: AtomicBool::new(false),
            target_closed: AtomicBool::new(false),
        });
        self.backlog
            .push((wire.clone(), listener.clone()))
            .map_err(|_| "connection refused: accept backlog full".to_string())?;
        Ok(HostQueue {
            icd_owner: vec![None; usize::from(depth)],
            icd_in_use: 0,
            wire,
        })
    }
}

impl Transport for LoopbackTransport {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn caps(&self) -> TransportCaps {
        self.caps
    }

    fn listen(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let mut l = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if !l.contains(addr) {
            l.push(addr.clone());
        }
        Ok(())
    }

    fn stop_listening(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let mut l = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|a| a != addr);
        Ok(())
    }

    fn accept(&self, on_new: &mut dyn FnMut(PendingQueue)) -> usize {
        let mut n = 0;
        while let Some((wire, listener)) = self.backlog.pop() {
            on_new(PendingQueue {
                qid: wire.qid,
                listener,
                conn: Box::new(wire),
            });
            n += 1;
        }
        n
    }

    fn create_poll_group(
        &self,
        _reactor: usize,
        reactor_count: usize,
    ) -> Result<Box<dyn TransportPollGroup>, TransportError> {
        // A cache deep enough for a full queue keeps buffers hot and off the
        // shared list; all caches together hold at most half the pool, so an
        // idle reactor cannot starve a busy one.
        let cache =
            (self.pool.count() / (2 * reactor_count.max(1))).clamp(1, POOL_CACHE_MAX_BUFFERS);
        // Deep enough for the largest transfer's chain.
        let max_units = (self.max_io_bytes as usize).div_ceil(self.pool.buf_size());
        let cache = cache.max(max_units);
        Ok(Box::new(LoopbackPollGroup {
            queues: Vec::new(),
            cache: PoolCache::new(self.pool.clone(), cache),
            in_capsule_bytes: self.caps.in_capsule_data_bytes,
            max_io_bytes: self.max_io_bytes,
            unit_shift: self.pool.buf_size().trailing_zeros(),
            disconnected: VecDeque::new(),
        }))
    }
}

/// Named states of a request slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    AwaitingBuffer,
    Executing,
}

struct Slot {
    state: SlotState,
    plan: DataPlan,
    icd_slot: u16,
    req: Request,
}

struct LoopQueue {
    wire: Arc<Wire>,

    slots: Vec<Slot>,
    free: Vec<u16>,
    awaiting_buffer: VecDeque<u16>,
    disconnected: bool,
}

struct LoopbackPollGroup {
    queues: Vec<Option<LoopQueue>>,
    cache: PoolCache,
    in_capsule_bytes: u32,
    max_io_bytes: u32,
    /// log2 of the data buffer unit size.
    unit_shift: u32,
    /// Queues whose disconnect has not been reported yet.
    disconnected: VecDeque<u16>,
}

impl LoopbackPollGroup {
    /// Gives a slot its buffer and pulls host data; false when no buffer is free.
    /// `unit_shift`: log2 of the pool's unit size.
    fn start(cache: &mut PoolCache, unit_shift: u32, q: &mut LoopQueue, s: u16) -> bool {
        let slot = &mut q.slots[usize::from(s)];
        let (len, xfer) = match slot.plan {
            DataPlan::None => (0, Xfer::None),
            DataPlan::InCapsule { len, .. } => (len, Xfer::HostToController),
            DataPlan::Keyed { len, xfer, .. } => (len, xfer),
        };
        if len > 0 {
            let units = (len as usize + (1 << unit_shift) - 1) >> unit_shift;
            let Some(mut buf) = cache.get_chain(units) else {
                return false;
            };
            // Where the host's bytes come from, and whether it may be read.
            let source = match slot.plan {
                DataPlan::InCapsule { offset, .. } => Some((
                    &q.wire.icd,
                    u64::from(slot.icd_slot) * u64::from(q.wire.icd_bytes) + u64::from(offset),
                )),
                DataPlan::Keyed {
                    addr,
                    key,
                    xfer: Xfer::HostToController,
                    ..
                } => (key == q.wire.rkey).then_some((&q.wire.memory, addr)),
                _ => None,
            };
            let copied = match (slot.plan, source) {
                (_, Some((memory, mut at))) => {
                    let mut left = len as usize;
                    let mut ok = true;
                    for chunk in buf.chunks_mut() {
                        let n = chunk.len().min(left);
                        if n == 0 {
                            break;
                        }
                        ok &= memory.read_at(at, &mut chunk[..n]).is_ok();
                        at += n as u64;
                        left -= n;
                    }
                    ok
                }
                (
                    DataPlan::Keyed {
                        xfer: Xfer::HostToController,
                        ..
                    },
                    None,
                ) => false, // a key the host never gave
                _ => true,
            };
            if !copied {
                slot.req.transport_status = Some(Status::DATA_TRANSFER_ERROR);
            }
            slot.req.data = Some(buf);
        }
        slot.req.length = len;
        slot.req.xfer = xfer;
        slot.state = SlotState::Executing;
        true
    }
}

impl TransportPollGroup for LoopbackPollGroup {
    fn adopt(&mut self, pending: PendingQueue) -> Result<u16, TransportError> {
        let wire = *pending
            .conn
            .downcast::<Arc<Wire>>()
            .map_err(|_| TransportError::Other("not a loopback connection".into()))?;
        let idx = match self.queues.iter().position(|q| q.is_none()) {
            Some(i) => i,
            None if self.queues.len() < MAX_QUEUES_PER_POLL_GROUP => {
                self.queues.push(None);
                self.queues.len() - 1
            }
            None => {
                return Err(TransportError::Full(format!(
                    "{MAX_QUEUES_PER_POLL_GROUP} queues"
                )))
            }
        };
        let depth = wire.depth;
        self.queues[idx] = Some(LoopQueue {
            slots: (0..depth)
                .map(|_| Slot {
                    state: SlotState::Free,
                    plan: DataPlan::None,
                    icd_slot: 0,
                    req: Request::new(),
                })
                .collect(),
            free: (0..depth).rev().collect(),
            awaiting_buffer: VecDeque::with_capacity(usize::from(depth)),
            disconnected: false,
            wire,
        });
        Ok(idx as u16)
    }

    fn poll(&mut self, events: &mut Vec<TransportEvent>) -> usize {
        let start_len = events.len();
        while events.len() < events.capacity() {
            let Some(queue) = self.disconnected.pop_front() else {
                break;
            };
            events.push(TransportEvent::QueueDisconnected { queue });
        }
        for (qi, q) in self.queues.iter_mut().enumerate() {
            let Some(q) = q.as_mut() else { continue };
            if q.disconnected {
                continue;
            }
            if q.wire.host_closed.load(Ordering::Acquire) {
                if events.len() == events.capacity() {
                    break;
                }
                q.disconnected = true;
                Self::drop_unstarted(&mut self.cache, q);
                events.push(TransportEvent::QueueDisconnected { queue: qi as u16 });
                continue;
            }
            while let Some(&s) = q.awaiting_buffer.front() {
                if events.len() == events.capacity()
                    || !Self::start(&mut self.cache, self.unit_shift, q, s)
                {
                    break;
                }
                q.awaiting_buffer.pop_front();
                events.push(TransportEvent::Request(RequestId {
                    queue: qi as u16,
                    slot: s,
                }));
            }
            while events.len() < events.capacity() && q.awaiting_buffer.is_empty() {
                let Some(&s) = q.free.last() else { break };
                let Some(sub) = q.wire.submissions.pop() else {
                    break;
                };
                q.free.pop();
                let slot = &mut q.slots[usize::from(s)];
                debug_assert_eq!(slot.state, SlotState::Free);
                slot.req.reset(sub.sqe);
                slot.icd_slot = sub.icd_slot;
                slot.state = SlotState::AwaitingBuffer;
                match plan_data(&sub.sqe, self.in_capsule_bytes, self.max_io_bytes) {
                    Ok(plan) => slot.plan = plan,
                    Err(status) => {
                        slot.plan = DataPlan::None;
                        slot.req.transport_status = Some(status);
                    }
                }
                if !Self::start(&mut self.cache, self.unit_shift, q, s) {
                    q.awaiting_buffer.push_back(s);
                    break;
                }
                events.push(TransportEvent::Request(RequestId {
                    queue: qi as u16,
                    slot: s,
                }));
            }
        }
        events.len() - start_len
    }

    fn request(&mut self, id: RequestId) -> &mut Request {
        let q = self.queues[usize::from(id.queue)]
            .as_mut()
            .expect("request on a closed queue");
        let slot = &mut q.slots[usize::from(id.slot)];
        debug_assert_eq!(slot.state, SlotState::Executing);
        &mut slot.req
    }

    fn complete(&mut self, id: RequestId) {
        let q = self.queues[usize::from(id.queue)]
            .as_mut()
            .expect("completion on a closed queue");
        let slot = &mut q.slots[usize::from(id.slot)];
        assert_eq!(
            slot.state,
            SlotState::Executing,
            "completing a request the target does not hold"
        );
        if !q.disconnected {
            if let DataPlan::Keyed {
                addr,
                key,
                xfer: Xfer::ControllerToHost,
                ..
            } = slot.plan
            {
                let mut at = addr;
                let mut ok = true;
                for chunk in slot.req.c2h_chunks() {
                    ok &= key == q.wire.rkey && q.wire.memory.write_at(at, chunk).is_ok();
                    at += chunk.len() as u64;
                }
                if !ok {
                    slot.req.rsp.set_status(Status::DATA_TRANSFER_ERROR);
                }
            }
            if q.wire.completions.push(slot.req.rsp).is_err() {
                log::error!("loopback host is not reaping completions; response dropped");
            }
        }
        if let Some(buf) = slot.req.data.take() {
            self.cache.put(buf);
        }
        slot.state = SlotState::Free;
        q.free.push(id.slot);
    }

    fn flush(&mut self) {}

    fn disconnect(&mut self, queue: u16) {
        let Some(q) = self
            .queues
            .get_mut(usize::from(queue))
            .and_then(|q| q.as_mut())
        else {
            return;
        };
        if q.disconnected {
            return;
        }
        q.disconnected = true;
        q.wire.target_closed.store(true, Ordering::Release);
        Self::drop_unstarted(&mut self.cache, q);
        self.disconnected.push_back(queue);
    }

    fn close_queue(&mut self, queue: u16) {
        let q = self.queues[usize::from(queue)]
            .take()
            .expect("closing an unknown queue");
        assert!(q.disconnected, "closing a queue that is still connected");
        assert_eq!(
            q.free.len(),
            q.slots.len(),
            "closing a queue whose requests are still held"
        );
        q.wire.target_closed.store(true, Ordering::Release);
    }

    fn queue_count(&self) -> usize {
        self.queues.iter().flatten().count()
    }
}

impl LoopbackPollGroup {
    /// Frees slots never handed to the target (waiting for a buffer).
    fn drop_unstarted(cache: &mut PoolCache, q: &mut LoopQueue) {
        while let Some(s) = q.awaiting_buffer.pop_front() {
            let slot = &mut q.slots[usize::from(s)];
            if let Some(buf) = slot.req.data.take() {
                cache.put(buf);
            }
            slot.state = SlotState::Free;
            q.free.push(s);
        }
    }
}

/// The host end of a loopback queue.
pub struct HostQueue {
    wire: Arc<Wire>,
    /// Which command (cid) holds each in-capsule data slot.
    icd_owner: Vec<Option<u16>>,
    icd_in_use: usize,
}

impl HostQueue {
    pub fn qid(&self) -> u16 {
        self.wire.qid
    }

    pub fn depth(&self) -> u16 {
        self.wire.depth
    }

    /// Host memory the target reaches through keyed SGLs.
    pub fn memory(&self) -> &HostMemory {
        &self.wire.memory
    }

    pub fn rkey(&self) -> u32 {
        self.wire.rkey
    }

    /// A keyed SGL for `len` bytes of host memory at `offset`.
    pub fn keyed_sgl(&self, offset: u64, len: u32) -> nvme_spec::SglDescriptor {
        nvme_spec::SglDescriptor::keyed(offset, len, self.wire.rkey, false)
    }

    /// Sends a command whose SGL is already set. Err when the queue is full.
    pub fn submit(&mut self, sqe: Sqe) -> Result<(), Sqe> {
        self.wire
            .submissions
            .push(Submission { sqe, icd_slot: 0 })
            .map_err(|s| s.sqe)
    }

    /// Sends a command carrying `data` in the capsule (sets its SGL).
    pub fn submit_in_capsule(&mut self, mut sqe: Sqe, data: &[u8]) -> Result<(), Sqe> {
        let Some(slot) = self.icd_owner.iter().position(|o| o.is_none()) else {
            return Err(sqe);
        };
        if data.len() > self.wire.icd_bytes as usize {
            return Err(sqe);
        }
        let at = slot as u64 * u64::from(self.wire.icd_bytes);
        self.wire.icd.write_at(at, data).map_err(|_| sqe)?;
        sqe.dptr = nvme_spec::SglDescriptor::data_block(0, data.len() as u32);
        self.wire
            .submissions
            .push(Submission {
                sqe,
                icd_slot: slot as u16,
            })
            .map_err(|s| s.sqe)?;
        self.icd_owner[slot] = Some(sqe.cid());
        self.icd_in_use += 1;
        Ok(())
    }

    /// Takes one completion, if any.
    pub fn poll_completion(&mut self) -> Option<Cqe> {
        let cqe = self.wire.completions.pop()?;
        if self.icd_in_use > 0 {
            if let Some(o) = self.icd_owner.iter_mut().find(|o| **o == Some(cqe.cid())) {
                *o = None;
                self.icd_in_use -= 1;
            }
        }
        Some(cqe)
    }

    /// The target closed the queue (keep-alive expiry, shutdown, controller gone).
    pub fn is_closed_by_target(&self) -> bool {
        self.wire.target_closed.load(Ordering::Acquire)
    }

    /// Closes the queue from the host side (like an RDMA CM disconnect).
    pub fn disconnect(&self) {
        self.wire.host_closed.store(true, Ordering::Release);
    }
}

impl Drop for HostQueue {
    fn drop(&mut self) {
        self.disconnect();
    }
}
