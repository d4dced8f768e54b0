//! The channel against a fake register file and controller: I/O, statuses, timeouts, resets.

use super::*;
use crate::admin::{QueueGate, ResetSignal};
use crate::bdev::PRODUCT_NAME;
use crate::mmio::FakeMmio;
use crate::queue::QueueLayout;
use bdev::IoTypes;
use dma::{BufPool, DmaMemory};
use nvme_spec::{Cqe, FromZeros, IntoBytes};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

const QID: u16 = 1;
const SQ_TAIL_DOORBELL: usize = 0x1008;

/// The controller's side of one queue pair: consumes SQEs up to the doorbell and posts
/// completions with the status the test chooses.
struct FakeController {
    sq_head: u16,
    cq_tail: u16,
    phase: bool,
}

impl FakeController {
    fn new() -> FakeController {
        FakeController {
            sq_head: 0,
            cq_tail: 0,
            phase: true,
        }
    }

    /// Executes every command the doorbell announced, returning them.
    fn run(
        &mut self,
        ch: &NvmeNsChannel<&FakeMmio>,
        fake: &FakeMmio,
        status: impl Fn(&Sqe) -> Status,
    ) -> Vec<Sqe> {
        let qp = ch.queue.borrow();
        let q = qp.queue.as_ref().unwrap();
        let entries = q.entries();
        let tail = fake.get32(SQ_TAIL_DOORBELL) as u16;
        let mut executed = Vec::new();
        while self.sq_head != tail {
            let mut sqe = Sqe::new_zeroed();
            q.memory()
                .read_at(usize::from(self.sq_head) * 64, sqe.as_mut_bytes())
                .unwrap();
            self.sq_head = (self.sq_head + 1) % entries;
            let mut cqe = Cqe::new_zeroed();
            cqe.cid = sqe.cid;
            cqe.sqhd = self.sq_head.into();
            cqe.sqid = QID.into();
            cqe.status = ((status(&sqe).to_field()) | u16::from(self.phase)).into();
            let at = q.layout().cq_offset + usize::from(self.cq_tail) * 16;
            q.memory().write_at(at, cqe.as_bytes()).unwrap();
            self.cq_tail += 1;
            if self.cq_tail == entries {
                self.cq_tail = 0;
                self.phase = !self.phase;
            }
            executed.push(sqe);
        }
        executed
    }
}

fn info(supported: IoTypes) -> BdevInfo {
    BdevInfo {
        name: "Nvme0n1".into(),
        product_name: PRODUCT_NAME,
        block_size: 512,
        num_blocks: 1 << 40,
        supported,
        max_queue_depth: 7,
        volatile_write_cache: true,
    }
}

fn config(max_transfer_bytes: u64, io_timeout_ms: u64) -> ChannelConfig {
    ChannelConfig {
        nsid: 3,
        info: info(IoTypes::all()),
        max_transfer_bytes,
        io_timeout_ms,
    }
}

fn queue_pair(fake: &FakeMmio, entries: u16) -> QueuePair<&FakeMmio> {
    let layout = QueueLayout::new(entries, 128 * 1024);
    let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
    QueuePair::new(QID, layout, memory, fake, 0).unwrap()
}

fn channel(fake: &FakeMmio, entries: u16) -> NvmeNsChannel<&FakeMmio> {
    let qp = NvmeChannel::new(queue_pair(fake, entries), "Nvme0", 0, None);
    NvmeNsChannel::new(Rc::new(RefCell::new(qp)), config(128 * 1024, 0))
}

fn poll_all(ch: &mut NvmeNsChannel<&FakeMmio>) -> Vec<BdevCompletion> {
    let mut out = Vec::new();
    ch.poll(64, &mut |c| out.push(c));
    out
}

#[test]
fn read_goes_to_the_device_with_prps_at_the_pool_buffer() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 8);
    let mut dev = FakeController::new();
    let pool = BufPool::with_ordinary_memory(16384, 2).unwrap();
    let buf = pool.get().unwrap();
    let buf_iova = buf.iova();
    let mut io = BdevIo::with_buf(IoType::Read, 0x1_0000_0002, 16, buf, 77);
    io.buf_offset = 512;
    ch.submit(io).unwrap();
    assert!(fake.writes().is_empty(), "no doorbell before flush");
    assert_eq!(ch.outstanding(), 1);
    ch.flush();
    let sqes = dev.run(&ch, &fake, |_| Status::SUCCESS);
    assert_eq!(sqes.len(), 1);
    let sqe = &sqes[0];
    assert_eq!(sqe.opcode, io::READ);
    assert_eq!(sqe.nsid.get(), 3);
    assert_eq!((sqe.cdw10.get(), sqe.cdw11.get()), (2, 1));
    assert_eq!(sqe.cdw12.get(), 15, "NLB is 0-based");
    assert_eq!(sqe.psdt(), 0);
    assert_eq!(
        sqe.dptr.addr.get(),
        buf_iova + 512,
        "zero copy: PRP1 is the buffer"
    );
    let done = poll_all(&mut ch);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].tag, done[0].status), (77, IoStatus::Success));
    assert_eq!(done[0].buf.as_ref().unwrap().iova(), buf_iova);
    assert_eq!(ch.outstanding(), 0);
}

#[test]
fn fua_and_flush_reach_the_device() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 8);
    let mut dev = FakeController::new();
    let pool = BufPool::with_ordinary_memory(4096, 3).unwrap();
    let mut durable = BdevIo::with_buf(IoType::Write, 8, 8, pool.get().unwrap(), 1);
    durable.fua = true;
    ch.submit(durable).unwrap();
    ch.submit(BdevIo::with_buf(
        IoType::Write,
        8,
        8,
        pool.get().unwrap(),
        2,
    ))
    .unwrap();
    let mut zeroes = BdevIo::without_buf(IoType::WriteZeroes, 0, 4, 3);
    zeroes.fua = true;
    ch.submit(zeroes).unwrap();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 4))
        .unwrap();
    // FUA means nothing to a read: never set there.
    let mut read = BdevIo::with_buf(IoType::Read, 0, 1, pool.get().unwrap(), 5);
    read.fua = true;
    ch.submit(read).unwrap();
    ch.flush();
    let sqes = dev.run(&ch, &fake, |_| Status::SUCCESS);
    let got: Vec<(u8, bool, u32)> = sqes
        .iter()
        .map(|s| (s.opcode, s.fua(), s.cdw12.get() & 0xFFFF))
        .collect();
    assert_eq!(
        got,
        vec![
            (io::WRITE, true, 7),
            (io::WRITE, false, 7),
            (io::WRITE_ZEROES, true, 3),
            (io::FLUSH, false, 0),
            (io::READ, false, 0),
        ]
    );
    assert_eq!(sqes[3].nsid.get(), 3, "Flush names the namespace");
    assert_eq!(poll_all(&mut ch).len(), 5);
}

#[test]
fn device_statuses_map_to_bdev_statuses() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 8);
    let mut dev = FakeController::new();
    let pool = BufPool::with_ordinary_memory(4096, 3).unwrap();
    for (tag, t) in [(1, IoType::Compare), (2, IoType::Read), (3, IoType::Write)] {
        ch.submit(BdevIo::with_buf(t, 0, 8, pool.get().unwrap(), tag))
            .unwrap();
    }
    ch.flush();
    dev.run(&ch, &fake, |sqe| match sqe.opcode {
        io::COMPARE => Status::COMPARE_FAILURE,
        io::READ => Status::LBA_OUT_OF_RANGE,
        _ => Status::WRITE_FAULT,
    });
    let got: Vec<(u64, IoStatus)> = poll_all(&mut ch)
        .iter()
        .map(|c| (c.tag, c.status))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, IoStatus::Miscompare),
            (2, IoStatus::OutOfRange),
            (
                3,
                IoStatus::Nvme {
                    sct: sct::MEDIA,
                    sc: 0x80,
                    dnr: true
                }
            ),
        ]
    );
    assert_eq!(pool.available(), 3, "every buffer came back");
}

#[test]
fn commands_without_data_encode_their_ranges() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 8);
    let mut dev = FakeController::new();
    ch.submit(BdevIo::without_buf(IoType::WriteZeroes, 100, 65536, 1))
        .unwrap();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 2))
        .unwrap();
    // Out of range: refused, delivered by the next poll.
    ch.submit(BdevIo::without_buf(
        IoType::Unmap,
        (1 << 40) - 1,
        300_000,
        3,
    ))
    .unwrap();
    ch.submit(BdevIo::without_buf(IoType::Unmap, 5, 300_000, 4))
        .unwrap();
    ch.flush();
    let sqes = dev.run(&ch, &fake, |_| Status::SUCCESS);
    let ops: Vec<u8> = sqes.iter().map(|s| s.opcode).collect();
    assert_eq!(
        ops,
        vec![io::WRITE_ZEROES, io::FLUSH, io::DATASET_MANAGEMENT]
    );
    assert_eq!((sqes[0].cdw10.get(), sqes[0].cdw12.get()), (100, 65535));
    let dsm = &sqes[2];
    assert_eq!((dsm.cdw10.get(), dsm.cdw11.get()), (0, 1 << 2));
    let mut range = [0u8; 16];
    {
        let qp = ch.queue.borrow();
        let q = qp.queue.as_ref().unwrap();
        assert_eq!(dsm.dptr.addr.get(), q.prp_list_iova(dsm.cid()));
        let page = (q.prp_list_iova(dsm.cid()) - q.sq_iova()) as usize;
        q.memory().read_at(page, &mut range).unwrap();
    }
    assert_eq!(u32::from_le_bytes(range[4..8].try_into().unwrap()), 300_000);
    assert_eq!(u64::from_le_bytes(range[8..16].try_into().unwrap()), 5);
    let tags: Vec<u64> = poll_all(&mut ch).iter().map(|c| c.tag).collect();
    assert_eq!(
        tags,
        vec![3, 1, 2, 4],
        "the refused one first, then the device's"
    );
}

#[test]
fn bad_ios_are_refused_without_reaching_the_device() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 8);
    let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
    let standalone = DmaBuf::alloc_ordinary(4096).unwrap();
    let invalid_field = nvme_status(Status::INVALID_FIELD);
    let cases = [
        (
            BdevIo::with_buf(IoType::Read, 0, 8, standalone, 1),
            IoStatus::InvalidBuffer,
        ),
        (
            BdevIo::without_buf(IoType::Read, 0, 8, 2),
            IoStatus::InvalidBuffer,
        ),
        (
            BdevIo::with_buf(IoType::Read, 1 << 40, 1, pool.get().unwrap(), 3),
            IoStatus::OutOfRange,
        ),
        (
            BdevIo::without_buf(IoType::WriteZeroes, 0, 65537, 4),
            invalid_field,
        ),
    ];
    let expected: Vec<(u64, IoStatus)> = cases.iter().map(|(io, s)| (io.tag, *s)).collect();
    for (io, _) in cases {
        ch.submit(io).unwrap();
    }
    ch.flush();
    assert!(fake.writes().is_empty(), "nothing reached the device");
    let got: Vec<(u64, IoStatus)> = poll_all(&mut ch)
        .iter()
        .map(|c| (c.tag, c.status))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(ch.outstanding(), 0);

    // Beyond MDTS (128 KiB here).
    let big = BufPool::with_ordinary_memory(256 * 1024, 1).unwrap();
    ch.submit(BdevIo::with_buf(
        IoType::Write,
        0,
        512,
        big.get().unwrap(),
        5,
    ))
    .unwrap();
    let got: Vec<IoStatus> = poll_all(&mut ch).iter().map(|c| c.status).collect();
    assert_eq!(got, vec![invalid_field]);
}

#[test]
fn a_full_channel_gives_the_io_back() {
    let fake = FakeMmio::new(0x2000);
    let mut ch = channel(&fake, 4); // 3 command ids
    let mut dev = FakeController::new();
    for tag in 0..3 {
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, tag))
            .unwrap();
    }
    let back = ch
        .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 9))
        .unwrap_err();
    assert_eq!(back.tag, 9);
    // A refused I/O counts too: it holds a ring slot until polled.
    ch.flush();
    dev.run(&ch, &fake, |_| Status::SUCCESS);
    assert_eq!(poll_all(&mut ch).len(), 3);
    ch.submit(BdevIo::without_buf(IoType::Read, 0, 1, 10))
        .unwrap();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 11))
        .unwrap();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 12))
        .unwrap();
    assert!(ch
        .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 13))
        .is_err());
}

/// The admin side as a channel sees it: a real reset sequence and gate; the test plays the
/// admin machine (`ResetSignal::end_reset_as_if`). Records what it is asked.
#[derive(Default)]
struct FakeOwner {
    signal: ResetSignal,
    /// What `abort` answers: whether the Abort could be submitted.
    abort_refused: AtomicBool,
    aborts: Mutex<Vec<(u16, u16)>>,
    admin_polls: AtomicU32,
    /// Whether the gate was open when the admin side was polled (it must never be).
    polled_inside_gate: AtomicBool,
    gate: Mutex<Option<Arc<QueueGate>>>,
    /// (commands in flight on the queue, pool buffers free) when deleted.
    deleted: Mutex<Option<(usize, usize)>>,
    pool: Mutex<Option<Arc<BufPool>>>,
}

impl FakeOwner {
    fn gate(&self) -> Arc<QueueGate> {
        self.gate
            .lock()
            .unwrap()
            .clone()
            .expect("set by owned_channel")
    }

    fn aborts(&self) -> Vec<(u16, u16)> {
        self.aborts.lock().unwrap().clone()
    }

    /// Another reactor's channel asks for a reset.
    fn request_reset(&self) {
        assert!(self.signal.request_reset(self.signal.seq()));
    }

    /// The reset ends: the controller was stopped, the queue created again.
    fn end_reset(&self) {
        self.signal.end_reset_as_if(true, &[&self.gate()]);
    }
}

impl<'a> QueueOwner<&'a FakeMmio> for FakeOwner {
    fn signal(&self) -> &ResetSignal {
        &self.signal
    }
    fn poll_admin(&self) {
        self.admin_polls.fetch_add(1, Ordering::Relaxed);
        if !self.gate().is_clear() {
            self.polled_inside_gate.store(true, Ordering::Relaxed);
        }
    }
    fn abort(&self, qid: u16, cid: u16) -> bool {
        if self.abort_refused.load(Ordering::Relaxed) {
            return false;
        }
        self.aborts.lock().unwrap().push((qid, cid));
        true
    }
    fn delete(&self, queue: QueuePair<&'a FakeMmio>) {
        let free = self
            .pool
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |p| p.available());
        *self.deleted.lock().unwrap() = Some((queue.in_flight(), free));
    }
}

fn owned_channel<'a>(
    fake: &'a FakeMmio,
    owner: &Arc<FakeOwner>,
    io_timeout_ms: u64,
) -> NvmeNsChannel<&'a FakeMmio> {
    let gate = Arc::new(QueueGate::new(QID, owner.signal.seq()));
    *owner.gate.lock().unwrap() = Some(gate.clone());
    let admin: Arc<dyn QueueOwner<&'a FakeMmio>> = owner.clone();
    let qp = NvmeChannel::new(
        queue_pair(fake, 8),
        "Nvme0",
        io_timeout_ms,
        Some(Owner { admin, gate }),
    );
    NvmeNsChannel::new(Rc::new(RefCell::new(qp)), config(128 * 1024, io_timeout_ms))
}

const RETRY: IoStatus = IoStatus::Nvme {
    sct: 0,
    sc: 0x07,
    dnr: false,
};

#[test]
fn dropping_the_channel_deletes_the_queue_before_freeing_buffers() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
    *owner.pool.lock().unwrap() = Some(pool.clone());
    let mut ch = owned_channel(&fake, &owner, 0);
    ch.submit(BdevIo::with_buf(IoType::Read, 0, 8, pool.get().unwrap(), 1))
        .unwrap();
    drop(ch);
    assert_eq!(
        *owner.deleted.lock().unwrap(),
        Some((1, 0)),
        "queue deleted while the buffer was still held"
    );
    assert_eq!(pool.available(), 1, "then the buffer came back");
}

#[test]
fn a_late_command_is_aborted_and_completes_for_retry() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    let mut dev = FakeController::new();
    ch.on_timer(100);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 5))
        .unwrap();
    ch.flush();
    ch.on_timer(1099);
    assert!(owner.aborts().is_empty(), "not late yet");
    ch.on_timer(1100);
    assert_eq!(owner.aborts(), vec![(QID, 0)]);
    ch.on_timer(1200);
    assert_eq!(owner.aborts().len(), 1, "one abort per command");
    // The controller completes it as aborted; the host may send it again.
    dev.run(&ch, &fake, |_| Status::ABORT_REQUESTED.retryable());
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (5, RETRY));
    ch.on_timer(5000);
    assert_eq!(owner.signal.seq(), 0, "no reset");
}

#[test]
fn an_abort_that_cannot_go_now_goes_on_a_later_tick() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 5))
        .unwrap();
    owner.abort_refused.store(true, Ordering::Relaxed); // another reactor holds the admin side
    ch.on_timer(1000);
    assert!(owner.aborts().is_empty());
    owner.abort_refused.store(false, Ordering::Relaxed);
    ch.on_timer(1100);
    assert_eq!(owner.aborts(), vec![(QID, 0)]);
    ch.on_timer(2099);
    assert_eq!(owner.signal.seq(), 0, "the timeout runs from the abort");
    ch.on_timer(2100);
    assert_eq!(owner.signal.seq(), 1, "then a reset is asked for");
}

#[test]
fn a_command_still_there_after_its_abort_asks_for_a_reset_and_is_retried_after_it() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    let pool = BufPool::with_ordinary_memory(4096, 2).unwrap();
    for tag in [1, 2] {
        ch.submit(BdevIo::with_buf(
            IoType::Write,
            0,
            8,
            pool.get().unwrap(),
            tag,
        ))
        .unwrap();
    }
    ch.flush();
    ch.on_timer(1000);
    assert_eq!(owner.aborts().len(), 2);
    ch.on_timer(1999);
    assert_eq!(owner.signal.seq(), 0);
    ch.on_timer(2000);
    assert_eq!(owner.signal.seq(), 1, "a reset is asked for, not run here");
    assert!(
        owner.admin_polls.load(Ordering::Relaxed) > 0,
        "and the admin side is moved on"
    );

    // While it runs: no register write, no new command, nothing handed back yet (the
    // device may still be using the buffers).
    fake.clear_writes();
    ch.flush();
    assert!(poll_all(&mut ch).is_empty());
    let io = BdevIo::without_buf(IoType::Flush, 0, 0, 3);
    let io = ch
        .submit(io)
        .expect_err("waits in the caller's retry queue");
    assert!(
        fake.writes().is_empty(),
        "not one doorbell during the reset"
    );
    assert_eq!(pool.available(), 0);
    assert!(!owner.polled_inside_gate.load(Ordering::Relaxed));

    owner.end_reset();
    // Both writes come back unacknowledged, for the host to send again.
    let done = poll_all(&mut ch);
    let got: Vec<(u64, IoStatus)> = done.iter().map(|c| (c.tag, c.status)).collect();
    assert_eq!(got, vec![(1, RETRY), (2, RETRY)]);
    drop(done);
    assert_eq!(pool.available(), 2);
    // The queue starts over: command id 0 in SQ slot 0.
    ch.submit(io).unwrap();
    fake.clear_writes();
    ch.flush();
    assert_eq!(fake.writes(), vec![(SQ_TAIL_DOORBELL, 1)]);
}

#[test]
#[cfg_attr(miri, ignore = "leaks the buffer on purpose, which Miri reports")]
fn buffers_the_device_may_still_hold_are_never_reused() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
    ch.submit(BdevIo::with_buf(IoType::Read, 0, 8, pool.get().unwrap(), 1))
        .unwrap();
    ch.flush();
    owner.request_reset();
    // The reset failed before the controller was seen stopped.
    owner.signal.end_reset_as_if(false, &[]);
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (1, IoStatus::IoError));
    assert!(done[0].buf.is_none(), "the buffer is kept from the pool");
    drop(done);
    assert_eq!(pool.available(), 0);
}

#[test]
fn another_channels_reset_is_noticed_on_poll() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    owner.request_reset(); // another reactor's channel
    fake.clear_writes();
    ch.flush();
    assert!(
        fake.writes().is_empty(),
        "no doorbell for a queue the reset is about to delete"
    );
    assert!(poll_all(&mut ch).is_empty());
    owner.end_reset();
    fake.clear_writes();
    let done = poll_all(&mut ch);
    assert_eq!((done.len(), done[0].status), (1, RETRY));
    assert!(
        fake.writes().is_empty(),
        "no CQ doorbell for the old queue either"
    );
    assert_eq!(owner.signal.seq(), 2, "nobody asks for a second reset");
    assert_eq!(poll_all(&mut ch).len(), 0);
}

#[test]
fn an_io_after_a_reset_goes_to_the_new_queue() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    let mut dev = FakeController::new();
    owner.request_reset();
    owner.end_reset();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 4))
        .unwrap();
    ch.flush();
    dev.run(&ch, &fake, |_| Status::SUCCESS);
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (4, IoStatus::Success));
}

#[test]
fn a_queue_the_reset_did_not_create_fails_every_io_until_a_reset_does() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    owner.request_reset();
    owner.signal.end_reset_as_if(true, &[]); // Create I/O CQ failed for this queue
    assert_eq!(poll_all(&mut ch).len(), 0);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 9))
        .unwrap();
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (9, IoStatus::IoError));
    ch.on_timer(10_000); // nothing in flight: nothing to abort or reset
    assert_eq!(owner.signal.seq(), 2);

    // A later reset that creates the queue mends the channel.
    owner.request_reset();
    owner.end_reset();
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 10))
        .unwrap();
    assert_eq!(ch.outstanding(), 1);
    assert!(poll_all(&mut ch).is_empty(), "on the device, not refused");
}

#[test]
fn a_timer_tick_during_another_channels_reset_neither_aborts_nor_asks_again() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    owner.request_reset();
    ch.on_timer(5000);
    ch.on_timer(9000);
    assert!(owner.aborts().is_empty());
    assert_eq!(owner.signal.seq(), 1);
    owner.end_reset();
    ch.on_timer(9100);
    assert_eq!(poll_all(&mut ch)[0].status, RETRY);
}

#[test]
fn no_timeouts_when_disabled() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    ch.on_timer(u64::MAX / 2);
    assert!(owner.aborts().is_empty());
}

/// The gate's promise, raced: once the reset has seen a queue's gate clear after asking,
/// that queue writes no register until the reset ends.
#[test]
fn no_register_write_lands_between_quiesce_and_the_end_of_a_reset() {
    // Miri interleaves threads slowly: fewer rounds there still race the flag.
    const RESETS: u64 = if cfg!(miri) { 20 } else { 2000 };
    let signal = Arc::new(ResetSignal::default());
    let gate = Arc::new(QueueGate::new(QID, 0));
    let quiesced = Arc::new(AtomicBool::new(false));
    let bad_writes = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reactor = {
        let (signal, gate, quiesced, bad_writes, writes, stop) = (
            signal.clone(),
            gate.clone(),
            quiesced.clone(),
            bad_writes.clone(),
            writes.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut known = 0;
            while !stop.load(Ordering::Relaxed) {
                match gate.enter(&signal, known) {
                    Some(_open) => {
                        // The "register write".
                        if quiesced.load(Ordering::SeqCst) {
                            bad_writes.fetch_add(1, Ordering::Relaxed);
                        }
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        let seq = signal.seq();
                        if !ResetSignal::resetting(seq) {
                            known = seq;
                        }
                    }
                }
            }
        })
    };
    for _ in 0..RESETS {
        // Let the reactor write to the live queue first, so every reset races a writer.
        let before = writes.load(Ordering::Relaxed);
        while writes.load(Ordering::Relaxed) == before {
            std::thread::yield_now();
        }
        assert!(signal.request_reset(signal.seq()));
        while !gate.is_clear() {
            std::hint::spin_loop();
        }
        quiesced.store(true, Ordering::SeqCst);
        for _ in 0..50 {
            std::hint::spin_loop();
        }
        quiesced.store(false, Ordering::SeqCst);
        signal.end_reset_as_if(true, &[&gate]);
    }
    stop.store(true, Ordering::Relaxed);
    reactor.join().unwrap();
    assert!(writes.load(Ordering::Relaxed) >= RESETS);
    assert_eq!(bad_writes.load(Ordering::Relaxed), 0);
}
