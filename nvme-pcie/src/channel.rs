//! One reactor's channel to one namespace: an I/O queue pair of its own (no lock on the I/O
//! path), and the timeout handling of the commands on it.
//!
//! A command is `Submitted` until it completes. One still there `io_timeout_ms` after it was
//! submitted gets an Abort (`AbortRequested`). One still there `io_timeout_ms` after that
//! makes the channel reset the controller. A reset drops every queue of the controller, so
//! every channel, seeing the controller's reset generation move (an atomic load per submit,
//! flush and poll), fails the commands it had in flight with a status the host retries, and
//! creates its queue again.
//!
//! Time comes from `on_timer` (about every 100 ms), never from a clock read per command.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bdev::{
    validate_io, BdevChannel, BdevCompletion, BdevInfo, BdevIo, CompletionRing, IoStatus, IoType,
};
use dma::DmaBuf;
use nvme_spec::opcode::io;
use nvme_spec::status::sct;
use nvme_spec::{Sqe, Status};

use crate::mmio::Mmio;
use crate::queue::{QueuePair, SubmitError};

/// Most blocks one Read, Write, Compare or Write Zeroes command carries (NLB is 16 bits).
const MAX_BLOCKS_PER_COMMAND: u64 = 1 << 16;
/// Aborts one timer tick sends at most: each is an admin command the reactor waits for.
const MAX_ABORTS_PER_TICK: usize = 4;

/// What a channel needs of its controller's admin side. A trait so the timeout handling is
/// tested without a device.
pub trait QueueOwner<M: Mmio>: Send + Sync {
    /// Moves on at every controller reset.
    fn reset_generation(&self) -> u64;
    /// Abort command `cid` of queue `qid`; Ok(true) if the controller says it aborted it.
    fn abort(&self, qid: u16, cid: u16) -> Result<bool, String>;
    /// Resets the controller, unless a reset happened since `seen_generation`.
    fn reset(&self, seen_generation: u64);
    /// Creates the queue on the controller again after a reset (same id and memory);
    /// returns the reset generation it was created in (read under the same lock as resets
    /// take, so a reset cannot slip in between).
    fn recreate(&self, queue: &mut QueuePair<M>) -> Result<u64, String>;
    /// Deletes the queue on the controller; the channel is going away.
    fn delete(&self, queue: QueuePair<M>);
}

/// Where a command on the device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommandState {
    Submitted { at_ms: u64 },
    AbortRequested { at_ms: u64 },
}

/// A command on the device: whose it is, the buffer it reads or writes, and its state.
struct InFlight {
    tag: u64,
    buf: Option<DmaBuf>,
    state: CommandState,
}

/// Channel settings from the device: what a namespace's channel needs.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    pub nsid: u32,
    pub info: BdevInfo,
    /// MDTS in bytes (u64::MAX when the controller sets no limit).
    pub max_transfer_bytes: u64,
    /// 0: commands never time out.
    pub io_timeout_ms: u64,
}

/// One reactor's I/O queue pair to a controller, shared by the channels of
/// every namespace of that controller on the reactor (`NvmeNsChannel`): the
/// controller's queue count then caps reactors, not reactors x namespaces.
pub struct NvmeChannel<M: Mmio> {
    /// Some until dropped.
    queue: Option<QueuePair<M>>,
    /// For logs: the controller's bdev name prefix.
    name: String,
    /// 0: commands never time out.
    io_timeout_ms: u64,
    /// Indexed by command id; sized at creation.
    in_flight: Vec<Option<InFlight>>,
    /// I/Os finished without the device (refused, or dropped by a reset), delivered by the
    /// next poll. Room for every command id, so it never overflows (see `submit`).
    finished: CompletionRing,
    /// None in tests without a controller.
    owner: Option<Arc<dyn QueueOwner<M>>>,
    /// The owner's reset generation the queue was created in.
    generation: u64,
    /// Last time given to `on_timer`.
    now_ms: u64,
    /// A buffer outside every pool was refused and logged (once: it is a bug upstream, and
    /// the log must not grow per I/O).
    unreachable_buffer_logged: bool,
    /// The queue could not be created again after a reset: every I/O fails (until a later
    /// reset lets it be created).
    broken: bool,
}

impl<M: Mmio> std::fmt::Debug for NvmeChannel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeChannel")
            .field("controller", &self.name)
            .field("outstanding", &self.outstanding())
            .field("broken", &self.broken)
            .finish()
    }
}

impl<M: Mmio> NvmeChannel<M> {
    /// The channel of `queue` (of controller `name`) for every namespace.
    pub fn new(
        queue: QueuePair<M>,
        name: &str,
        io_timeout_ms: u64,
        owner: Option<Arc<dyn QueueOwner<M>>>,
    ) -> NvmeChannel<M> {
        let cids = usize::from(queue.entries() - 1);
        let generation = owner.as_ref().map_or(0, |o| o.reset_generation());
        NvmeChannel {
            queue: Some(queue),
            name: name.to_string(),
            io_timeout_ms,
            in_flight: (0..cids).map(|_| None).collect(),
            finished: CompletionRing::new(cids),
            owner,
            generation,
            now_ms: 0,
            unreachable_buffer_logged: false,
            broken: false,
        }
    }

    fn queue(&mut self) -> &mut QueuePair<M> {
        self.queue.as_mut().expect("queue present until drop")
    }

    /// Whether the controller was reset since the queue was created.
    fn queue_is_stale(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.reset_generation() != self.generation)
    }

    /// Puts the command for `io` on the submission queue; Err(status) when it cannot go.
    fn submit_to_device(&mut self, ns: &ChannelConfig, io: &BdevIo) -> Result<u16, IoStatus> {
        if self.broken {
            return Err(IoStatus::IoError);
        }
        let range = validate_io(&ns.info, io)?;
        let mut sqe = Sqe::new(opcode(io.io_type), 0);
        sqe.nsid = ns.nsid.into();
        let max_transfer_bytes = ns.max_transfer_bytes;
        let queue = self.queue();
        match io.io_type {
            IoType::Read | IoType::Write | IoType::Compare => {
                if range.len_bytes > max_transfer_bytes || io.num_blocks > MAX_BLOCKS_PER_COMMAND {
                    return Err(nvme_status(Status::INVALID_FIELD));
                }
                let buf = io.buf.as_ref().ok_or(IoStatus::InvalidBuffer)?;
                if buf.is_standalone() {
                    return Err(IoStatus::InvalidBuffer);
                }
                set_lba_range(&mut sqe, io.offset_blocks, io.num_blocks);
                sqe.set_fua(io.fua && io.io_type == IoType::Write);
                queue
                    .submit_with_prp_chain(
                        &sqe,
                        buf.iova_chunks(),
                        range.buf_offset as u64,
                        range.len_bytes,
                    )
                    .map_err(|e| match e {
                        SubmitError::Full(_) => unreachable!("room checked by the caller"),
                        SubmitError::Prp(_) => IoStatus::InvalidBuffer,
                    })
            }
            IoType::WriteZeroes => {
                if io.num_blocks > MAX_BLOCKS_PER_COMMAND {
                    return Err(nvme_status(Status::INVALID_FIELD));
                }
                set_lba_range(&mut sqe, io.offset_blocks, io.num_blocks);
                sqe.set_fua(io.fua);
                Ok(queue.submit(&sqe).expect("room checked by the caller"))
            }
            IoType::Flush => Ok(queue.submit(&sqe).expect("room checked by the caller")),
            IoType::Unmap => {
                let Ok(blocks) = u32::try_from(io.num_blocks) else {
                    return Err(nvme_status(Status::INVALID_FIELD));
                };
                // One range: context attributes 0, length in blocks, starting LBA.
                let mut range = [0u8; 16];
                range[4..8].copy_from_slice(&blocks.to_le_bytes());
                range[8..16].copy_from_slice(&io.offset_blocks.to_le_bytes());
                sqe.cdw10 = 0.into(); // one range (0-based)
                sqe.cdw11 = (1 << 2).into(); // AD: deallocate
                Ok(queue
                    .submit_with_slot_data(&sqe, &range)
                    .expect("room checked by the caller"))
            }
        }
    }

    /// After a controller reset: the commands in flight are gone with the old queue, so they
    /// finish now with a status the host retries; then the queue is created again.
    fn recover_from_reset(&mut self) {
        let Some(owner) = self.owner.clone() else {
            return;
        };
        let mut failed = 0;
        for slot in self.in_flight.iter_mut() {
            if let Some(command) = slot.take() {
                self.finished.push(BdevCompletion {
                    tag: command.tag,
                    status: aborted_retryable(),
                    buf: command.buf,
                });
                failed += 1;
            }
        }
        let queue = self.queue.as_mut().expect("queue present until drop");
        queue.reset();
        let recreated = owner.recreate(queue);
        // Either way, this reset is handled; a later one is noticed by the next poll.
        self.generation = match &recreated {
            Ok(generation) => *generation,
            Err(_) => owner.reset_generation(),
        };
        match recreated {
            Ok(_) => {
                self.broken = false;
                log::warn!(
                    "bdev {}: queue {} created again after a controller reset; {failed} \
                     command(s) handed back for retry",
                    self.name,
                    queue.qid()
                )
            }
            Err(e) => {
                log::error!(
                    "bdev {}: cannot create queue {} again after a controller reset ({e}); \
                     every I/O on this reactor fails until a later reset succeeds",
                    self.name,
                    queue.qid()
                );
                self.broken = true;
            }
        }
    }

    /// Aborts commands past the timeout; resets the controller when an aborted one is still
    /// there a timeout later (or an abort fails).
    fn check_timeouts(&mut self) {
        let timeout_ms = self.io_timeout_ms;
        let (Some(owner), false, true) = (self.owner.clone(), self.broken, timeout_ms > 0) else {
            return;
        };
        if self.queue_is_stale() {
            // Another channel reset the controller: these commands are gone, not late.
            self.recover_from_reset();
            return;
        }
        let qid = self.queue.as_ref().expect("queue present until drop").qid();
        let mut aborts_sent = 0;
        let mut aborted = 0;
        let mut reset = false;
        for (cid, slot) in self.in_flight.iter_mut().enumerate() {
            let Some(command) = slot.as_mut() else {
                continue;
            };
            match command.state {
                CommandState::Submitted { at_ms } if self.now_ms - at_ms >= timeout_ms => {
                    if aborts_sent == MAX_ABORTS_PER_TICK {
                        continue; // next tick
                    }
                    aborts_sent += 1;
                    command.state = CommandState::AbortRequested { at_ms: self.now_ms };
                    match owner.abort(qid, cid as u16) {
                        Ok(true) => aborted += 1,
                        Ok(false) => {}
                        Err(e) => {
                            log::error!("bdev {}: abort failed: {e}", self.name);
                            reset = true;
                            break;
                        }
                    }
                }
                CommandState::AbortRequested { at_ms } if self.now_ms - at_ms >= timeout_ms => {
                    log::error!(
                        "bdev {}: command {cid} on queue {qid} still has no completion {timeout_ms} \
                         ms after its abort",
                        self.name
                    );
                    reset = true;
                    break;
                }
                _ => {}
            }
        }
        if aborts_sent > 0 {
            // One line per tick, however many commands: a stuck device must not flood the log.
            log::warn!(
                "bdev {}: {aborts_sent} command(s) on queue {qid} got no completion in \
                 {timeout_ms} ms; aborting them (the controller aborted {aborted})",
                self.name
            );
        }
        if reset {
            owner.reset(self.generation);
            self.recover_from_reset();
        }
    }
}

fn opcode(io_type: IoType) -> u8 {
    match io_type {
        IoType::Read => io::READ,
        IoType::Write => io::WRITE,
        IoType::Compare => io::COMPARE,
        IoType::Flush => io::FLUSH,
        IoType::WriteZeroes => io::WRITE_ZEROES,
        IoType::Unmap => io::DATASET_MANAGEMENT,
    }
}

/// SLBA in CDW10-11, NLB (0-based) in CDW12; `num_blocks` is 1..=65536.
fn set_lba_range(sqe: &mut Sqe, offset_blocks: u64, num_blocks: u64) {
    debug_assert!((1..=MAX_BLOCKS_PER_COMMAND).contains(&num_blocks));
    sqe.cdw10 = (offset_blocks as u32).into();
    sqe.cdw11 = ((offset_blocks >> 32) as u32).into();
    sqe.cdw12 = ((num_blocks - 1) as u32).into();
}

fn nvme_status(status: Status) -> IoStatus {
    IoStatus::Nvme {
        sct: status.sct,
        sc: status.sc,
        dnr: status.dnr,
    }
}

/// Command Abort Requested without Do Not Retry: the host sends the command again.
fn aborted_retryable() -> IoStatus {
    nvme_status(Status::ABORT_REQUESTED.retryable())
}

/// The bdev status of a device completion; what the bdev layer has no name for passes through,
/// Do Not Retry included.
fn io_status(status: Status) -> IoStatus {
    if status.is_success() {
        IoStatus::Success
    } else if (status.sct, status.sc) == (sct::MEDIA, Status::COMPARE_FAILURE.sc) {
        IoStatus::Miscompare
    } else if (status.sct, status.sc) == (sct::GENERIC, Status::LBA_OUT_OF_RANGE.sc) {
        IoStatus::OutOfRange
    } else {
        nvme_status(status)
    }
}

impl<M: Mmio> NvmeChannel<M> {
    /// Submits `io` for namespace `ns`; Err gives it back when the queue is full.
    pub fn submit(&mut self, ns: &ChannelConfig, io: BdevIo) -> Result<(), BdevIo> {
        // A new I/O goes to the queue the controller knows, not to one a reset dropped.
        if self.queue_is_stale() {
            self.recover_from_reset();
        }
        // A refused I/O needs a ring slot; one sent to the device needs a command id.
        if self.outstanding() >= self.in_flight.len() {
            return Err(io);
        }
        match self.submit_to_device(ns, &io) {
            Ok(cid) => {
                let slot = &mut self.in_flight[usize::from(cid)];
                debug_assert!(slot.is_none(), "command id {cid} handed out twice");
                *slot = Some(InFlight {
                    tag: io.tag,
                    buf: io.buf,
                    state: CommandState::Submitted { at_ms: self.now_ms },
                });
            }
            Err(status) => {
                if !self.unreachable_buffer_logged
                    && io.buf.as_ref().is_some_and(DmaBuf::is_standalone)
                {
                    self.unreachable_buffer_logged = true;
                    log::error!(
                        "bdev {}: refused an I/O whose buffer is not from a DMA pool; \
                         the device cannot reach it",
                        self.name
                    );
                }
                self.finished.push(BdevCompletion {
                    tag: io.tag,
                    status,
                    buf: io.buf,
                })
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) {
        // After a reset the queue no longer exists on the controller until `poll` creates it
        // again: no doorbell for it before then.
        if !self.queue_is_stale() {
            self.queue().flush();
        }
    }

    pub fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        if self.queue_is_stale() {
            self.recover_from_reset();
        }
        let mut done = self.finished.poll(max, on_complete);
        let in_flight = &mut self.in_flight;
        let queue = self.queue.as_mut().expect("queue present until drop");
        done += queue.poll(max - done, |cqe| {
            let command = in_flight[usize::from(cqe.cid())]
                .take()
                .expect("the queue delivers only command ids in flight");
            on_complete(BdevCompletion {
                tag: command.tag,
                status: io_status(cqe.status()),
                buf: command.buf,
            });
        });
        done
    }

    /// Commands of every namespace on the queue, and those finished but not polled.
    pub fn outstanding(&self) -> usize {
        let queue = self.queue.as_ref().expect("queue present until drop");
        queue.in_flight() + self.finished.len()
    }

    pub fn on_timer(&mut self, now_ms: u64) {
        // Every namespace's channel forwards the tick: check once per tick.
        if now_ms == self.now_ms && now_ms != 0 {
            return;
        }
        self.now_ms = now_ms;
        self.check_timeouts();
    }
}

/// One namespace's channel on one reactor: its own settings, and the
/// reactor's queue pair to the controller, shared with the other namespaces.
/// Its `poll` hands over completions of any namespace on the queue (each
/// completion carries its caller's tag).
pub struct NvmeNsChannel<M: Mmio> {
    queue: Rc<RefCell<NvmeChannel<M>>>,
    ns: ChannelConfig,
}

impl<M: Mmio> NvmeNsChannel<M> {
    pub fn new(queue: Rc<RefCell<NvmeChannel<M>>>, ns: ChannelConfig) -> NvmeNsChannel<M> {
        NvmeNsChannel { queue, ns }
    }
}

impl<M: Mmio> std::fmt::Debug for NvmeNsChannel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeNsChannel")
            .field("bdev", &self.ns.info.name)
            .field("queue", &self.queue.borrow())
            .finish()
    }
}

impl<M: Mmio> BdevChannel for NvmeNsChannel<M> {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        self.queue.borrow_mut().submit(&self.ns, io)
    }

    fn flush(&mut self) {
        self.queue.borrow_mut().flush();
    }

    fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        self.queue.borrow_mut().poll(max, on_complete)
    }

    fn outstanding(&self) -> usize {
        self.queue.borrow().outstanding()
    }

    fn on_timer(&mut self, now_ms: u64) {
        self.queue.borrow_mut().on_timer(now_ms);
    }
}

impl<M: Mmio> Drop for NvmeChannel<M> {
    fn drop(&mut self) {
        let queue = self.queue.take().expect("dropped once");
        if let Some(owner) = self.owner.take() {
            // Deleting the queue first: the controller no longer touches the buffers of
            // commands still in flight, which are freed with `in_flight` after this.
            owner.delete(queue);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
