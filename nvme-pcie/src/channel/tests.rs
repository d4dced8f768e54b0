//! The channel against a fake register file and controller: I/O, statuses, timeouts, resets.

use super::*;
use crate::bdev::PRODUCT_NAME;
use crate::mmio::FakeMmio;
use crate::queue::QueueLayout;
use bdev::IoTypes;
use dma::{BufPool, DmaMemory};
use nvme_spec::{Cqe, FromZeros, IntoBytes};
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

/// A value behind a lock: the owner is shared across reactor threads in real life.
#[derive(Default)]
struct Cell<T>(Mutex<T>);

impl Cell<bool> {
    fn replace_false(&self) -> bool {
        std::mem::replace(&mut *self.0.lock().unwrap(), false)
    }
}

impl<T: Copy> Cell<T> {
    fn get(&self) -> T {
        *self.0.lock().unwrap()
    }
    fn set(&self, value: T) {
        *self.0.lock().unwrap() = value;
    }
}

/// The admin side as a channel sees it; records what it is asked.
#[derive(Default)]
struct FakeOwner {
    generation: Cell<u64>,
    /// What `abort` answers: Some(aborted), or None for a failed abort.
    abort_answer: Cell<Option<bool>>,
    aborts: Mutex<Vec<(u16, u16)>>,
    resets: Cell<u32>,
    recreates: Cell<u32>,
    recreate_fails: Cell<bool>,
    /// Another reset lands after the channel saw the first, before it recreates.
    reset_before_recreate: Cell<bool>,
    /// (commands in flight on the queue, pool buffers free) when deleted.
    deleted: Cell<Option<(usize, usize)>>,
    pool: Mutex<Option<Arc<BufPool>>>,
}

impl<'a> QueueOwner<&'a FakeMmio> for FakeOwner {
    fn reset_generation(&self) -> u64 {
        self.generation.get()
    }
    fn abort(&self, qid: u16, cid: u16) -> Result<bool, String> {
        self.aborts.lock().unwrap().push((qid, cid));
        self.abort_answer
            .get()
            .ok_or_else(|| "timed out".to_string())
    }
    fn reset(&self, seen_generation: u64) {
        if seen_generation == self.generation.get() {
            self.resets.set(self.resets.get() + 1);
            self.generation.set(seen_generation + 1);
        }
    }
    fn recreate(&self, queue: &mut QueuePair<&'a FakeMmio>) -> Result<u64, String> {
        assert_eq!(queue.in_flight(), 0, "the channel resets the queue first");
        self.recreates.set(self.recreates.get() + 1);
        if self.reset_before_recreate.replace_false() {
            self.generation.set(self.generation.get() + 1);
        }
        if self.recreate_fails.get() {
            return Err("Create I/O Completion Queue failed".into());
        }
        Ok(self.generation.get())
    }
    fn delete(&self, queue: QueuePair<&'a FakeMmio>) {
        let free = self
            .pool
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |p| p.available());
        self.deleted.set(Some((queue.in_flight(), free)));
    }
}

fn owned_channel<'a>(
    fake: &'a FakeMmio,
    owner: &Arc<FakeOwner>,
    io_timeout_ms: u64,
) -> NvmeNsChannel<&'a FakeMmio> {
    let owner: Arc<dyn QueueOwner<&'a FakeMmio>> = owner.clone();
    let qp = NvmeChannel::new(queue_pair(fake, 8), "Nvme0", io_timeout_ms, Some(owner));
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
        owner.deleted.get(),
        Some((1, 0)),
        "queue deleted while the buffer was still held"
    );
    assert_eq!(pool.available(), 1, "then the buffer came back");
}

#[test]
fn a_late_command_is_aborted_and_completes_for_retry() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    owner.abort_answer.set(Some(true));
    let mut ch = owned_channel(&fake, &owner, 1000);
    let mut dev = FakeController::new();
    ch.on_timer(100);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 5))
        .unwrap();
    ch.flush();
    ch.on_timer(1099);
    assert!(owner.aborts.lock().unwrap().is_empty(), "not late yet");
    ch.on_timer(1100);
    assert_eq!(*owner.aborts.lock().unwrap(), vec![(QID, 0)]);
    ch.on_timer(1200);
    assert_eq!(
        owner.aborts.lock().unwrap().len(),
        1,
        "one abort per command"
    );
    // The controller completes it as aborted; the host may send it again.
    dev.run(&ch, &fake, |_| Status::ABORT_REQUESTED.retryable());
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (5, RETRY));
    ch.on_timer(5000);
    assert_eq!(owner.resets.get(), 0);
}

#[test]
fn a_command_still_there_after_its_abort_resets_the_controller() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    owner.abort_answer.set(Some(false));
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
    assert_eq!(owner.aborts.lock().unwrap().len(), 2);
    ch.on_timer(1999);
    assert_eq!(owner.resets.get(), 0);
    ch.on_timer(2000);
    assert_eq!((owner.resets.get(), owner.recreates.get()), (1, 1));
    // Both writes come back unacknowledged, for the host to send again.
    let done = poll_all(&mut ch);
    let got: Vec<(u64, IoStatus)> = done.iter().map(|c| (c.tag, c.status)).collect();
    assert_eq!(got, vec![(1, RETRY), (2, RETRY)]);
    drop(done);
    assert_eq!(pool.available(), 2);
    // The queue starts over: command id 0 in SQ slot 0.
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 3))
        .unwrap();
    fake.clear_writes();
    ch.flush();
    assert_eq!(fake.writes(), vec![(SQ_TAIL_DOORBELL, 1)]);
}

#[test]
fn a_failed_abort_resets_at_once() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 1000);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    ch.on_timer(1000);
    assert_eq!(owner.resets.get(), 1);
    assert_eq!(poll_all(&mut ch)[0].status, RETRY);
}

#[test]
fn another_channels_reset_is_noticed_on_poll() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    owner.generation.set(7); // another reactor's channel reset the controller
    fake.clear_writes();
    ch.flush();
    assert!(
        fake.writes().is_empty(),
        "no doorbell for a queue the controller forgot"
    );
    let done = poll_all(&mut ch);
    assert_eq!((done.len(), done[0].status), (1, RETRY));
    assert_eq!(owner.recreates.get(), 1);
    assert_eq!(owner.resets.get(), 0, "nobody resets twice");
    assert_eq!(poll_all(&mut ch).len(), 0);
    assert_eq!(owner.recreates.get(), 1, "once per reset");
}

#[test]
fn an_io_after_a_reset_goes_to_the_new_queue() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    let mut dev = FakeController::new();
    owner.generation.set(1);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 4))
        .unwrap();
    assert_eq!(
        owner.recreates.get(),
        1,
        "recreated before the command went in"
    );
    ch.flush();
    dev.run(&ch, &fake, |_| Status::SUCCESS);
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (4, IoStatus::Success));
}

#[test]
fn a_second_reset_before_the_recreate_is_not_taken_for_a_third() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    let mut ch = owned_channel(&fake, &owner, 0);
    owner.generation.set(1);
    owner.reset_before_recreate.set(true);
    poll_all(&mut ch);
    assert_eq!(owner.recreates.get(), 1);
    poll_all(&mut ch);
    assert_eq!(
        owner.recreates.get(),
        1,
        "the queue was created after both resets: nothing to do"
    );
}

#[test]
fn a_queue_that_cannot_be_recreated_fails_every_io() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    owner.recreate_fails.set(true);
    let mut ch = owned_channel(&fake, &owner, 1000);
    owner.generation.set(1);
    assert_eq!(poll_all(&mut ch).len(), 0);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 9))
        .unwrap();
    let done = poll_all(&mut ch);
    assert_eq!((done[0].tag, done[0].status), (9, IoStatus::IoError));
    ch.on_timer(10_000); // nothing in flight: nothing to abort or reset
    assert_eq!(owner.resets.get(), 0);

    // A later reset that lets the queue be created mends the channel.
    owner.recreate_fails.set(false);
    owner.generation.set(2);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 10))
        .unwrap();
    assert_eq!(ch.outstanding(), 1);
    assert!(poll_all(&mut ch).is_empty(), "on the device, not refused");
}

#[test]
fn a_timer_tick_after_another_channels_reset_recovers_instead_of_aborting() {
    let fake = FakeMmio::new(0x2000);
    let owner = Arc::new(FakeOwner::default());
    owner.abort_answer.set(None); // an abort would fail and reset again
    let mut ch = owned_channel(&fake, &owner, 1000);
    ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
        .unwrap();
    owner.generation.set(1);
    ch.on_timer(5000);
    assert!(owner.aborts.lock().unwrap().is_empty());
    assert_eq!((owner.resets.get(), owner.recreates.get()), (0, 1));
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
    assert!(owner.aborts.lock().unwrap().is_empty());
}
