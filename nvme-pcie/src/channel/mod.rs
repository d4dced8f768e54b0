//! One reactor's channel to one controller: an I/O queue pair of its own (no lock on the I/O
//! path), shared by the namespaces of that controller, and the timeout handling of the
//! commands on it.
//!
//! A command is `Submitted` until it completes. One still there `io_timeout_ms` after it was
//! submitted gets an Abort (`AbortRequested`). One still there `io_timeout_ms` after that
//! makes the channel ask for a controller reset (`admin`), which pollers then carry out.
//!
//! Where the queue stands (`QueueState`), from the controller's reset sequence (an atomic
//! load per submit, flush and poll): `Live`; `Resetting` (no register write, no new command:
//! I/O waits in the caller's retry queue); after the reset, the commands in flight are handed
//! back with a status the host retries, and the queue is `Live` again, or `Broken` when the
//! reset could not create it (every I/O fails until a later reset does).
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

use crate::admin::{QueueGate, ResetSignal};
use crate::mmio::Mmio;
use crate::queue::{QueuePair, SubmitError};

/// Most blocks one Read, Write, Compare or Write Zeroes command carries (NLB is 16 bits).
const MAX_BLOCKS_PER_COMMAND: u64 = 1 << 16;
/// Aborts one timer tick sends at most: the admin queue is small and shared.
const MAX_ABORTS_PER_TICK: usize = 4;

/// What a channel needs of its controller's admin side. A trait so the timeout handling is
/// tested without a device. Nothing here may wait: it is called from the reactor's poll.
pub trait QueueOwner<M: Mmio> {
    /// The controller's reset sequence.
    fn signal(&self) -> &ResetSignal;
    /// Reaps admin completions and moves a reset on, unless another thread is doing so.
    fn poll_admin(&self);
    /// Submits an Abort of command `cid` on queue `qid`; false when it cannot go now (the
    /// admin side is busy or resetting): try again on a later tick.
    fn abort(&self, qid: u16, cid: u16) -> bool;
    /// Deletes the queue on the controller; the channel is going away (control path).
    fn delete(&self, queue: QueuePair<M>);
}

/// The channel's link to its controller: the admin side, and the gate its queue's register
/// writes go through.
pub struct Owner<M: Mmio> {
    pub admin: Arc<dyn QueueOwner<M>>,
    pub gate: Arc<QueueGate>,
}

impl<M: Mmio> std::fmt::Debug for Owner<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("gate", &self.gate).finish()
    }
}

/// Where the channel's queue stands on the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueState {
    Live,
    /// A reset is asked for or under way: no register writes, no new commands.
    Resetting,
    /// The last reset could not create the queue again: I/O fails.
    Broken,
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
    owner: Option<Owner<M>>,
    /// The reset sequence the queue was last created in (see `admin`).
    created_seq: u64,
    /// Last time given to `on_timer`.
    now_ms: u64,
    /// A buffer outside every pool was refused and logged (once: it is a bug upstream, and
    /// the log must not grow per I/O).
    unreachable_buffer_logged: bool,
    /// The last reset could not create the queue again.
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
        owner: Option<Owner<M>>,
    ) -> NvmeChannel<M> {
        let cids = usize::from(queue.entries() - 1);
        let created_seq = owner.as_ref().map_or(0, |o| o.gate.created_seq());
        NvmeChannel {
            queue: Some(queue),
            name: name.to_string(),
            io_timeout_ms,
            in_flight: (0..cids).map(|_| None).collect(),
            finished: CompletionRing::new(cids),
            owner,
            created_seq,
            now_ms: 0,
            unreachable_buffer_logged: false,
            broken: false,
        }
    }

    fn queue(&mut self) -> &mut QueuePair<M> {
        self.queue.as_mut().expect("queue present until drop")
    }

    /// Where the queue stands; recovers from a reset that ended since the last look. Moves
    /// the admin side on when it has work (aborts to reap, a reset to carry out).
    fn state(&mut self) -> QueueState {
        let Some(owner) = self.owner.as_ref() else {
            return QueueState::Live;
        };
        let signal = owner.admin.signal();
        if signal.has_admin_work() {
            owner.admin.poll_admin();
        }
        let seq = signal.seq();
        if seq != self.created_seq {
            if ResetSignal::resetting(seq) {
                return QueueState::Resetting;
            }
            self.recover_from_reset(seq);
        }
        if self.broken {
            QueueState::Broken
        } else {
            QueueState::Live
        }
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

    /// After the reset that ended at `seq`: the commands in flight are gone with the old
    /// queue, so they finish now with a status the host retries, and the queue's software
    /// state starts over to match the queue the reset created (or failed to create).
    fn recover_from_reset(&mut self, seq: u64) {
        let owner = self.owner.as_ref().expect("only owned channels see resets");
        // Buffers go back to the pool only if the device let go of them (it was stopped).
        let device_stopped = owner.admin.signal().stopped_before(seq);
        let mut failed = 0;
        for slot in self.in_flight.iter_mut() {
            if let Some(mut command) = slot.take() {
                let status = if device_stopped {
                    aborted_retryable()
                } else {
                    std::mem::forget(command.buf.take());
                    IoStatus::IoError
                };
                self.finished.push(BdevCompletion {
                    tag: command.tag,
                    status,
                    buf: command.buf,
                });
                failed += 1;
            }
        }
        let queue = self.queue.as_mut().expect("queue present until drop");
        queue.reset();
        self.created_seq = seq;
        self.broken = owner.gate.created_seq() != seq;
        if self.broken {
            log::error!(
                "bdev {}: queue {} was not created again by the controller reset; {failed} \
                 command(s) failed, and every I/O on this reactor fails until a later reset \
                 succeeds",
                self.name,
                queue.qid()
            );
        } else {
            log::warn!(
                "bdev {}: queue {} created again after a controller reset; {failed} \
                 command(s) handed back for retry",
                self.name,
                queue.qid()
            );
        }
        if !device_stopped && failed > 0 {
            log::error!(
                "bdev {}: the reset never saw the controller stop, so the buffers of {failed} \
                 command(s) are kept from reuse for the life of the process",
                self.name
            );
        }
    }

    /// Aborts commands past the timeout; asks for a controller reset when an aborted one is
    /// still there a timeout later.
    fn check_timeouts(&mut self) {
        let timeout_ms = self.io_timeout_ms;
        if self.owner.is_none() || timeout_ms == 0 || self.state() != QueueState::Live {
            return;
        }
        let owner = self.owner.as_ref().expect("checked above");
        let qid = self.queue.as_ref().expect("queue present until drop").qid();
        let mut aborts_sent = 0;
        let mut reset = false;
        for (cid, slot) in self.in_flight.iter_mut().enumerate() {
            let Some(command) = slot.as_mut() else {
                continue;
            };
            match command.state {
                CommandState::Submitted { at_ms } if self.now_ms - at_ms >= timeout_ms => {
                    if aborts_sent == MAX_ABORTS_PER_TICK || !owner.admin.abort(qid, cid as u16) {
                        continue; // next tick
                    }
                    aborts_sent += 1;
                    command.state = CommandState::AbortRequested { at_ms: self.now_ms };
                }
                CommandState::AbortRequested { at_ms } if self.now_ms - at_ms >= timeout_ms => {
                    log::error!(
                        "bdev {}: command {cid} on queue {qid} still has no completion \
                         {timeout_ms} ms after its abort; resetting the controller",
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
                 {timeout_ms} ms; aborting them",
                self.name
            );
        }
        if reset {
            // False when another channel asked first: that reset serves this queue too.
            owner.admin.signal().request_reset(self.created_seq);
            owner.admin.poll_admin();
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
        // During a reset the I/O waits in the caller's retry queue, and goes to the queue the
        // reset creates.
        if self.state() == QueueState::Resetting {
            return Err(io);
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
        let queue = self.queue.as_mut().expect("queue present until drop");
        let Some(owner) = self.owner.as_ref() else {
            queue.flush();
            return;
        };
        // Only inside the gate: a reset deletes the queue after it has seen the gate clear.
        if let Some(_open) = owner.gate.enter(owner.admin.signal(), self.created_seq) {
            queue.flush();
        }
    }

    pub fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        let state = self.state();
        let mut done = self.finished.poll(max, on_complete);
        if state == QueueState::Resetting {
            return done;
        }
        let in_flight = &mut self.in_flight;
        let queue = self.queue.as_mut().expect("queue present until drop");
        // The CQ head doorbell is a register write: inside the gate, like `flush`.
        let _open = match self.owner.as_ref() {
            Some(owner) => match owner.gate.enter(owner.admin.signal(), self.created_seq) {
                Some(open) => Some(open),
                None => return done,
            },
            None => None,
        };
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
        // Idle channels too: a reset goes on, and is noticed, without I/O.
        self.state();
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
            owner.admin.delete(queue);
        }
    }
}

#[cfg(test)]
mod tests;
