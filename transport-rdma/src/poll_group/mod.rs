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

mod data_wrs;
mod device;
mod queue;
mod recv_ring;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dma::{BufPool, PoolCache};
use nvme_spec::IntoBytes;
use nvmf::transport::{
    DataPlan, PendingQueue, Request, RequestId, TransportError, TransportEvent, TransportPollGroup,
    Xfer,
};
use rdma_sys as sys;
use reactor::Epoll;

use crate::request::{Action, Input, Wait};
use crate::verbs::{self, CmToken, CompletionQueue, Connection, MemoryRegion, Verbs};
use crate::{accept_private_data, ConnRequest, Notice, RdmaOptions};

use device::{Devices, QpNumMap};
use queue::{
    decode, decode_srq, release_buffer, start_capsule, teardown, Life, Queue, Teardown, KIND_READ,
    KIND_RECV, KIND_SEND, KIND_SRQ_RECV,
};

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

pub(crate) struct RdmaPollGroup<V: Verbs> {
    reactor: usize,
    options: RdmaOptions,
    pool: Arc<BufPool>,
    cache: PoolCache,
    owners: Arc<Mutex<HashMap<CmToken, usize>>>,
    inbox: Arc<ArrayQueue<Notice>>,
    // Drop order: queues before the devices they use.
    queues: Vec<Option<Queue<V>>>,
    devices: Devices<V>,
    /// The queues on an SRQ by qp_num: an SRQ receive completion names its
    /// queue only so.
    srq_queues: QpNumMap,
    to_report: VecDeque<u16>,
    /// Queues with waiting requests, or closing, oldest first: what a poll
    /// walks (never every queue). A queue still waiting goes to the back.
    to_progress: VecDeque<u16>,
    /// Queues with work requests or receives to post: what a flush walks.
    to_flush: Vec<u16>,
    wcs: Vec<sys::ibv_wc>,
    next_gen: u16,
    /// The completion channels of the devices' CQs, as one fd the reactor
    /// watches in interrupt mode.
    wakeups: Epoll,
}

impl<V: Verbs> RdmaPollGroup<V> {
    /// The poll group of `reactor`: data buffers from `pool` through a cache
    /// of `cache` buffers; `owners` says which reactor owns each connection;
    /// the acceptor's notices arrive in `inbox`.
    pub(crate) fn new(
        options: RdmaOptions,
        pool: Arc<BufPool>,
        owners: Arc<Mutex<HashMap<CmToken, usize>>>,
        reactor: usize,
        inbox: Arc<ArrayQueue<Notice>>,
        cache: usize,
    ) -> io::Result<RdmaPollGroup<V>> {
        Ok(RdmaPollGroup {
            reactor,
            options,
            cache: PoolCache::new(pool.clone(), cache),
            pool,
            owners,
            inbox,
            queues: Vec::new(),
            devices: Devices(Vec::new()),
            srq_queues: QpNumMap::with_capacity(SRQ_QUEUES_RESERVED),
            to_report: VecDeque::new(),
            to_progress: VecDeque::new(),
            to_flush: Vec::new(),
            wcs: vec![sys::ibv_wc::default(); WC_BATCH],
            next_gen: 1,
            wakeups: Epoll::new()?,
        })
    }
    /// Queue `qi` has requests waiting (or is closing): the next poll
    /// progresses it. Polls touch only listed queues.
    fn want_progress(&mut self, qi: u16) {
        if let Some(q) = self.queues[usize::from(qi)].as_mut() {
            if !q.progress_listed {
                q.progress_listed = true;
                self.to_progress.push_back(qi);
            }
        }
    }

    /// Queue `qi` has work requests to post (or receives to re-arm): the
    /// next flush posts them. Flushes touch only listed queues.
    fn want_flush(&mut self, qi: u16) {
        if let Some(q) = self.queues[usize::from(qi)].as_mut() {
            if !q.flush_listed {
                q.flush_listed = true;
                self.to_flush.push(qi);
            }
        }
    }

    /// Feeds `input` to request `slot` of queue `qi` and does what the state
    /// machine answers (but `Report`, which only `progress` asks for).
    fn advance(&mut self, qi: u16, slot: u16, input: Input) {
        let q = self.queues[usize::from(qi)]
            .as_mut()
            .expect("a request of a live queue");
        let action = q.table.advance(slot, input);
        let pool_lkey = self.devices[q.device].pool_mr.lkey();
        match action {
            Action::None => return,
            Action::PostRead => q.batch_read(qi, slot, pool_lkey),
            Action::PostResponse => q.batch_response(qi, slot, pool_lkey),
            Action::Release => {
                if let Some(b) = q.slots[usize::from(slot)].req.data.take() {
                    release_buffer(&mut self.cache, b);
                }
            }
            Action::Report => unreachable!("only progress reports requests"),
        }
        // Work requests to post, or an ICD buffer back for a starved receive.
        self.want_flush(qi);
    }

    /// Moves a queue to the dead state once: QP to error, waiting requests
    /// dropped, work requests never posted settled as flushed.
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
        if let Some(r) = q.recvs.as_mut() {
            r.ring.discard_batch();
        }
        let mut unposted = std::mem::take(&mut q.send_batch);
        let depth = q.table.depth() as u16;
        for slot in 0..depth {
            self.advance(qi, slot, Input::QueueDead);
        }
        // Work requests never posted will never complete: settle them here.
        for &wr in &unposted {
            // SAFETY: the batch held WRs of the queue's slots (boxed, in
            // place while the queue lives), not posted, so only we touch them.
            let (kind, _, _, slot) = decode(unsafe { verbs::send_wr_id(wr) });
            match kind {
                KIND_READ => self.read_completed(qi, slot),
                KIND_SEND => {
                    let q = self.queues[usize::from(qi)].as_mut().expect("killed above");
                    q.sends_in_flight -= 1;
                    self.advance(qi, slot, Input::SendDone);
                }
                _ => {}
            }
        }
        // Give the batch's storage back, emptied, so it never reallocates.
        unposted.clear();
        if let Some(q) = self.queues[usize::from(qi)].as_mut() {
            q.send_batch = unposted;
        }
        self.to_report.push_back(qi);
    }

    /// One RDMA READ of request `slot` completed (or flushed, or was never
    /// posted): the request moves on once all of its READs have.
    fn read_completed(&mut self, qi: u16, slot: u16) {
        let q = self.queues[usize::from(qi)].as_mut().expect("a live queue");
        let sl = &mut q.slots[usize::from(slot)];
        sl.reads_pending = sl
            .reads_pending
            .checked_sub(1)
            .expect("a READ completion for a request with READs out");
        if sl.reads_pending == 0 {
            self.advance(qi, slot, Input::ReadDone);
        }
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
        let live = q.life == Life::Live;
        let what = match kind {
            KIND_RECV => "receive",
            KIND_READ => "READ",
            KIND_SEND => "SEND",
            _ => "WRITE",
        };
        if !ok && live {
            log::warn!(
                "RDMA {what} failed (status {}); closing the queue",
                wc.status
            );
            self.kill(qi);
        }
        let q = self.queues[usize::from(qi)]
            .as_mut()
            .expect("checked above");
        match kind {
            KIND_RECV => {
                let Some(recvs) = q.recvs.as_mut() else {
                    return; // cannot happen: its receives are on the SRQ
                };
                recvs.ring.completed();
                if ok && live {
                    self.on_capsule(qi, None, slot.into(), wc.byte_len);
                }
            }
            KIND_READ => {
                self.read_completed(qi, slot);
                self.want_progress(qi);
            }
            KIND_SEND => {
                q.sends_in_flight -= 1;
                self.advance(qi, slot, Input::SendDone);
                // Its send queue entries came back: responses or READs waiting for room.
                if self.queues[usize::from(qi)]
                    .as_ref()
                    .is_some_and(|q| q.table.has_waiters())
                {
                    self.want_progress(qi);
                }
            }
            _ => {} // an unsignaled WRITE flushed
        }
    }

    /// A capsule arrived in receive `index` of queue `qi`'s ring, or of
    /// device `srq_device`'s SRQ: starts a request for it.
    fn on_capsule(&mut self, qi: u16, srq_device: Option<usize>, index: u32, byte_len: u32) {
        let q = self.queues[usize::from(qi)].as_mut().expect("a live queue");
        let ring = match srq_device {
            Some(d) => {
                &mut self.devices[d]
                    .srq
                    .as_mut()
                    .expect("an SRQ receive names a device with an SRQ")
                    .recvs
                    .ring
            }
            None => &mut q.recvs.as_mut().expect("a receive of its own").ring,
        };
        let Some(slot) = q.table.take_free() else {
            ring.rearm(index);
            log::warn!(
                "host overran an RDMA queue of depth {}; closing it",
                q.slots.len()
            );
            self.kill(qi);
            return;
        };
        let need = start_capsule(
            ring,
            index,
            byte_len,
            &self.options,
            q.geometry,
            &mut q.slots[usize::from(slot)],
        );
        let action = q.table.advance(slot, Input::Capsule(need));
        debug_assert_eq!(action, Action::None);
        self.want_progress(qi);
        if srq_device.is_none() {
            self.want_flush(qi); // the receive was re-armed
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
        let qi = self.srq_queues.get(wc.qp_num).filter(|&qi| {
            self.queues[usize::from(qi)]
                .as_ref()
                .is_some_and(|q| q.life == Life::Live)
        });
        if wc.status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            // A flushed SRQ receive means the SRQ itself is going away.
            if wc.status != sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                ring.rearm(index);
            }
            if let Some(qi) = qi {
                log::warn!(
                    "RDMA receive failed (status {}); closing the queue",
                    wc.status
                );
                self.kill(qi);
            }
            return;
        }
        match qi {
            Some(qi) => self.on_capsule(qi, Some(d), index, wc.byte_len),
            None => ring.rearm(index), // a queue already closing or gone
        }
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

    /// Serves the waiting requests of one live queue, oldest first: data
    /// buffers, RDMA READ credits, then room in `events` to report them.
    fn progress(&mut self, qi: u16, events: &mut Vec<TransportEvent>) {
        let Some(q) = self.queues[usize::from(qi)].as_mut() else {
            return;
        };
        if q.life != Life::Live {
            return;
        }
        while let Some(s) = q.table.next_waiter(Wait::Buffer) {
            let units = q.geometry.units(q.slots[usize::from(s)].req.length);
            let Some(buf) = self.cache.get_chain(units) else {
                break;
            };
            q.slots[usize::from(s)].req.data = Some(buf);
            let action = q.table.advance(s, Input::Granted);
            debug_assert_eq!(action, Action::None);
        }
        for wait in [Wait::ReadCredit, Wait::SendRoom] {
            loop {
                let q = self.queues[usize::from(qi)].as_ref().expect("live");
                let Some(s) = q.table.next_waiter(wait) else {
                    break;
                };
                self.advance(qi, s, Input::Granted);
            }
        }
        let q = self.queues[usize::from(qi)].as_mut().expect("live");
        while events.len() < events.capacity() {
            let Some(s) = q.table.next_waiter(Wait::Report) else {
                break;
            };
            let action = q.table.advance(s, Input::Granted);
            debug_assert_eq!(action, Action::Report);
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

impl<V: Verbs> Drop for RdmaPollGroup<V> {
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

impl<V: Verbs> TransportPollGroup for RdmaPollGroup<V> {
    fn adopt(&mut self, pending: PendingQueue) -> Result<u16, TransportError> {
        let mut conn = pending
            .conn
            .downcast::<ConnRequest<V>>()
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
        // The work lists hold each queue at most once: room for all, now,
        // so that listing a queue never allocates.
        self.to_progress
            .reserve(self.queues.len().saturating_sub(self.to_progress.len()));
        self.to_flush
            .reserve(self.queues.len().saturating_sub(self.to_flush.len()));
        self.want_flush(qi as u16); // its first receives
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
        // Only queues with something to do; those still waiting (for a
        // buffer, a READ credit, room to report, or their flush) go to the
        // back, so the next poll starts with another queue.
        for _ in 0..self.to_progress.len() {
            let Some(qi) = self.to_progress.pop_front() else {
                break;
            };
            let Some(q) = self.queues[usize::from(qi)].as_mut() else {
                continue;
            };
            q.progress_listed = false;
            self.progress(qi, events);
            self.try_destroy(qi);
            if let Some(q) = self.queues[usize::from(qi)].as_ref() {
                let live_waiting = q.life == Life::Live && q.table.has_waiters();
                if live_waiting || q.life == Life::Closing {
                    self.want_progress(qi);
                }
            }
        }
        if self.devices.iter().any(|(_, dev)| dev.removed) {
            self.release_removed_devices();
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
        assert!(
            self.queues[usize::from(id.queue)].is_some(),
            "completion on a closed queue"
        );
        let q = self.queues[usize::from(id.queue)]
            .as_ref()
            .expect("checked");
        let sl = &q.slots[usize::from(id.slot)];
        let data_wrs = match sl.plan {
            DataPlan::Keyed {
                xfer: Xfer::ControllerToHost,
                ..
            } => {
                // Keyed data starts at the buffer's first byte: the units
                // holding the produced bytes are the first ones.
                debug_assert_eq!(sl.req.data_offset, 0);
                q.geometry.wrs(q.geometry.units(sl.req.c2h_len()))
            }
            _ => 0,
        };
        // Live: its response is batched (or waits for send queue room); on a
        // dead queue: released.
        self.advance(id.queue, id.slot, Input::Executed { data_wrs });
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
            let post = |wrs: &[*mut sys::ibv_recv_wr]| unsafe { V::post_srq_recv(shared, wrs) };
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
        let mut listed = std::mem::take(&mut self.to_flush);
        for &qi in &listed {
            let Some(q) = self.queues[usize::from(qi)].as_mut() else {
                continue;
            };
            q.flush_listed = false;
            if q.life != Life::Live {
                continue;
            }
            let id = &q.id;
            let posted_recv = match q.recvs.as_mut() {
                Some(r) => {
                    r.ring.refill();
                    // SAFETY: see `RecvRing::post`.
                    r.ring.post(|wrs| unsafe { id.post_recv(wrs) })
                }
                None => Ok(()),
            };
            // SAFETY: the batch holds data and send WRs of `q.slots` (boxed,
            // in place while the queue lives, unposted so far). Their SGEs
            // name the slot's response (in `rsp_region`, registered by
            // `_rsp_mr`) and the request's pool buffer (pool MR), which the
            // request holds until its SEND completes or flushes (KIND_SEND in
            // on_wc, or kill); a READ's buffer is not read before `read_done`.
            let posted_send = unsafe { q.id.post_send(&q.send_batch) };
            // What the device took completes later; kill settles the rest.
            let taken = match &posted_send {
                Ok(()) => q.send_batch.len(),
                Err(e) => e.posted.min(q.send_batch.len()),
            };
            q.send_batch.drain(..taken);
            if let Err(e) = posted_recv.and(posted_send) {
                log::warn!("RDMA post failed ({e}); closing the queue");
                self.kill(qi);
            }
        }
        // Keep the list's storage: listing never allocates.
        listed.clear();
        if self.to_flush.is_empty() {
            self.to_flush = listed;
        } else {
            // kill listed queues while we flushed: keep both.
            self.to_flush.append(&mut listed);
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
        self.want_progress(queue); // polls try again until it is gone
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
        let waiting_for_buffer = self.to_progress.iter().any(|&qi| {
            self.queues[usize::from(qi)]
                .as_ref()
                .is_some_and(|q| q.life == Life::Live && q.table.waits_for_buffer())
        });
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
