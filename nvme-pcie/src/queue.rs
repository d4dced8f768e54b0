//! One submission/completion queue pair on DMA memory, with batched doorbells.
//!
//! Memory layout of the pair's one `DmaMemory` region (see `QueueLayout`):
//! `[SQ: depth × 64 B][CQ: depth × 16 B][PRP list slot per command id]`, the SQ and CQ each
//! starting on a 4 KiB boundary; a slot holds the PRP entries of the largest transfer
//! (256 B for 128 KiB, a page at most). The pair owns the region; its IOVAs go into AQA/ASQ/ACQ
//! (admin) or Create I/O SQ/CQ (I/O queues).
//!
//! The I/O path (`submit`, `submit_with_prps`, `flush`, `poll`) does not allocate, lock or
//! make system calls: command ids come from a free list sized at creation, and the doorbells
//! are written once per `flush`/`poll`, not per command.

#![forbid(unsafe_code)]

use std::sync::atomic::{fence, Ordering};

use dma::DmaMemory;
use nvme_spec::{Cqe, FromZeros, IntoBytes, Sqe};

use crate::mmio::Mmio;
use crate::prp::{self, PrpError, PrpList, PRP_ENTRIES_PER_LIST_PAGE};
use crate::regs::{self, MEMORY_PAGE_BYTES};

const SQE_BYTES: usize = 64;
const CQE_BYTES: usize = 16;
/// Offset of the status field (phase in bit 0) inside a CQE.
const CQE_STATUS_OFFSET: usize = 14;
/// Largest queue this driver creates (the spec allows 65536; MQES usually says less).
pub const MAX_QUEUE_ENTRIES: u16 = 4096;

/// Where the SQ, the CQ and the PRP list slots sit in a queue pair's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    pub entries: u16,
    pub cq_offset: usize,
    pub prp_lists_offset: usize,
    /// Bytes of each command id's PRP list slot: a power of two from 64 to 4096, so a slot
    /// never crosses a page (a PRP list must not, unchained).
    pub prp_list_bytes: usize,
    pub total_bytes: usize,
}

/// Smallest PRP list slot: also holds a few Dataset Management ranges.
const MIN_PRP_LIST_BYTES: usize = 64;

impl QueueLayout {
    /// Layout for `entries` SQ and CQ entries (2..=MAX_QUEUE_ENTRIES), with a PRP list slot per
    /// command id (entries - 1 of them: one SQ slot stays empty to tell full from empty), each
    /// large enough for a transfer of `max_transfer_bytes` (capped at one page of entries).
    pub fn new(entries: u16, max_transfer_bytes: u64) -> QueueLayout {
        assert!(
            (2..=MAX_QUEUE_ENTRIES).contains(&entries),
            "queue of {entries} entries"
        );
        let page = MEMORY_PAGE_BYTES;
        let n = usize::from(entries);
        let cq_offset = (n * SQE_BYTES).next_multiple_of(page);
        let prp_lists_offset = cq_offset + (n * CQE_BYTES).next_multiple_of(page);
        // A transfer starting mid-page spans one page more than its length: the list holds
        // all pages but the first.
        let list_entries = usize::try_from(max_transfer_bytes.div_ceil(page as u64))
            .unwrap_or(PRP_ENTRIES_PER_LIST_PAGE);
        let prp_list_bytes = (list_entries * 8)
            .next_power_of_two()
            .clamp(MIN_PRP_LIST_BYTES, page);
        let total_bytes = (prp_lists_offset + (n - 1) * prp_list_bytes).next_multiple_of(page);
        QueueLayout {
            entries,
            cq_offset,
            prp_lists_offset,
            prp_list_bytes,
            total_bytes,
        }
    }

    /// Offset of command id `cid`'s PRP list slot in the region.
    fn prp_list_offset(&self, cid: u16) -> usize {
        self.prp_lists_offset + usize::from(cid) * self.prp_list_bytes
    }
}

/// `submit` found no free command id or SQ slot; poll completions and retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("queue {qid} is full ({entries} entries); poll completions before submitting more")]
pub struct QueueFull {
    pub qid: u16,
    pub entries: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Full(#[from] QueueFull),
    #[error(transparent)]
    Prp(#[from] PrpError),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "queue {qid} of {entries} entries needs {needed_bytes} bytes of DMA memory at a 4 KiB \
     aligned IOVA, got {got_bytes} bytes at {iova:#x}; size it with QueueLayout::new"
)]
pub struct QueueMemoryError {
    pub qid: u16,
    pub entries: u16,
    pub needed_bytes: usize,
    pub got_bytes: usize,
    pub iova: u64,
}

/// A submission queue and its completion queue (same id, same depth).
#[derive(Debug)]
pub struct QueuePair<M: Mmio> {
    qid: u16,
    layout: QueueLayout,
    memory: DmaMemory,
    mmio: M,
    sq_doorbell: usize,
    cq_doorbell: usize,
    sq_tail: u16,
    /// Last SQ head the controller reported (CQE.sqhd): slots before it are free again.
    sq_head: u16,
    /// SQ tail last written to the doorbell.
    sq_tail_rung: u16,
    cq_head: u16,
    /// Phase tag that marks a new CQE; flips at each CQ wrap.
    cq_phase: bool,
    /// Free command ids (a stack); capacity fixed at creation, never grows.
    free_cids: Vec<u16>,
    in_flight: Vec<bool>,
    /// Completions whose cid was not in flight (a controller or driver bug).
    unexpected_completions: u64,
}

impl<M: Mmio> QueuePair<M> {
    /// A queue pair `qid` laid out as `layout` over `memory` (at least `layout.total_bytes`,
    /// 4 KiB aligned). Zeroes the CQ so no stale entry carries the phase tag. `dstrd` is
    /// CAP.DSTRD.
    pub fn new(
        qid: u16,
        layout: QueueLayout,
        memory: DmaMemory,
        mmio: M,
        dstrd: u8,
    ) -> Result<Self, QueueMemoryError> {
        let entries = layout.entries;
        if memory.len() < layout.total_bytes || memory.iova() % MEMORY_PAGE_BYTES as u64 != 0 {
            return Err(QueueMemoryError {
                qid,
                entries,
                needed_bytes: layout.total_bytes,
                got_bytes: memory.len(),
                iova: memory.iova(),
            });
        }
        memory
            .fill_zero(layout.cq_offset, usize::from(entries) * CQE_BYTES)
            .expect("CQ lies inside the checked region");
        let cid_count = entries - 1;
        // Pop order 0, 1, 2...: lowest ids first, which reads well in traces.
        let mut free_cids = Vec::with_capacity(usize::from(cid_count));
        free_cids.extend((0..cid_count).rev());
        Ok(QueuePair {
            qid,
            layout,
            memory,
            mmio,
            sq_doorbell: regs::sq_tail_doorbell(qid, dstrd),
            cq_doorbell: regs::cq_head_doorbell(qid, dstrd),
            sq_tail: 0,
            sq_head: 0,
            sq_tail_rung: 0,
            cq_head: 0,
            cq_phase: true,
            free_cids,
            in_flight: vec![false; usize::from(cid_count)],
            unexpected_completions: 0,
        })
    }

    pub fn qid(&self) -> u16 {
        self.qid
    }
    pub fn entries(&self) -> u16 {
        self.layout.entries
    }
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }
    pub fn sq_iova(&self) -> u64 {
        self.memory.iova()
    }
    pub fn cq_iova(&self) -> u64 {
        self.memory.iova() + self.layout.cq_offset as u64
    }
    /// The queue's region (for tests and debugging dumps).
    pub fn memory(&self) -> &DmaMemory {
        &self.memory
    }
    pub fn mmio(&self) -> &M {
        &self.mmio
    }
    /// Commands submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() - self.free_cids.len()
    }
    pub fn unexpected_completions(&self) -> u64 {
        self.unexpected_completions
    }

    /// Back to the state of a queue just created: empty, every command id free, CQ zeroed
    /// (no stale phase tag). For after a controller reset, which forgets every queue; call it
    /// before the queue is created on the controller again. Returns the commands dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.in_flight();
        self.memory
            .fill_zero(
                self.layout.cq_offset,
                usize::from(self.layout.entries) * CQE_BYTES,
            )
            .expect("CQ lies inside the checked region");
        self.sq_tail = 0;
        self.sq_head = 0;
        self.sq_tail_rung = 0;
        self.cq_head = 0;
        self.cq_phase = true;
        self.in_flight.fill(false);
        self.free_cids.clear();
        self.free_cids
            .extend((0..self.in_flight.len() as u16).rev());
        dropped
    }

    /// IOVA of command `cid`'s PRP list slot.
    pub fn prp_list_iova(&self, cid: u16) -> u64 {
        assert!(usize::from(cid) < self.in_flight.len());
        self.memory.iova() + self.layout.prp_list_offset(cid) as u64
    }

    /// Places `sqe` in the next SQ slot with a fresh command id, which it returns. Does not
    /// ring the doorbell: call `flush` once per batch.
    pub fn submit(&mut self, sqe: &Sqe) -> Result<u16, QueueFull> {
        let cid = self.take_slot()?;
        self.write_sqe(sqe, cid);
        Ok(cid)
    }

    /// Like `submit`, with the data buffer (iova, len_bytes) described by PRPs, using the
    /// command id's own PRP list slot when the buffer spans more than two pages.
    pub fn submit_with_prps(
        &mut self,
        sqe: &Sqe,
        iova: u64,
        len_bytes: u64,
    ) -> Result<u16, SubmitError> {
        let unit = (iova, usize::try_from(len_bytes).unwrap_or(usize::MAX));
        self.submit_with_prp_chain(sqe, [unit].into_iter(), 0, len_bytes)
    }

    /// Like `submit_with_prps`, for `len_bytes` from `offset` of a chain of
    /// buffer units (iova, length), in order (see `prp::build_chain`).
    pub fn submit_with_prp_chain(
        &mut self,
        sqe: &Sqe,
        units: impl Iterator<Item = (u64, usize)>,
        offset: u64,
        len_bytes: u64,
    ) -> Result<u16, SubmitError> {
        let cid = self.take_slot()?;
        let mut command = *sqe;
        // Built on the stack (4 KiB, never the heap), then only the entries used are
        // copied into the command id's list page.
        let mut entries = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
        let list_iova = self.prp_list_iova(cid);
        let list = PrpList {
            entries: &mut entries[..self.layout.prp_list_bytes / 8],
            iova: list_iova,
        };
        let result = prp::build_chain(units, offset, len_bytes, Some(list)).inspect(|prps| {
            if prps.prp2 == list_iova {
                let page = MEMORY_PAGE_BYTES as u64;
                let pages = ((prps.prp1 % page) + len_bytes).div_ceil(page);
                let used = (pages - 1) as usize;
                let offset = self.layout.prp_list_offset(cid);
                self.memory
                    .write_at(offset, entries[..used].as_bytes())
                    .expect("PRP list page lies inside the checked region");
            }
        });
        let prps = match result {
            Ok(prps) => prps,
            Err(e) => {
                self.release_cid(cid);
                return Err(e.into());
            }
        };
        prps.apply(&mut command);
        self.write_sqe(&command, cid);
        Ok(cid)
    }

    /// Like `submit`, with `data` (at most `layout.prp_list_bytes`, e.g. Dataset Management
    /// ranges) copied into the command id's own PRP list slot, which PRP1 then points at.
    /// Such a command needs no PRP list, so the slot is free for it.
    pub fn submit_with_slot_data(&mut self, sqe: &Sqe, data: &[u8]) -> Result<u16, QueueFull> {
        assert!(
            data.len() <= self.layout.prp_list_bytes,
            "data larger than a PRP list slot"
        );
        let cid = self.take_slot()?;
        let offset = self.layout.prp_list_offset(cid);
        self.memory
            .write_at(offset, data)
            .expect("PRP list page lies inside the checked region");
        let mut command = *sqe;
        prp::Prps {
            prp1: self.prp_list_iova(cid),
            prp2: 0,
        }
        .apply(&mut command);
        self.write_sqe(&command, cid);
        Ok(cid)
    }

    /// Rings the SQ tail doorbell if anything was submitted since the last flush.
    pub fn flush(&mut self) {
        if self.sq_tail == self.sq_tail_rung {
            return;
        }
        // The SQEs must be visible in memory before the controller sees the new tail.
        fence(Ordering::SeqCst);
        self.mmio.write32(self.sq_doorbell, u32::from(self.sq_tail));
        self.sq_tail_rung = self.sq_tail;
    }

    /// Consumes up to `max` completions, calling `on_cqe` for each, and rings the CQ head
    /// doorbell once if any were consumed. Returns how many were consumed.
    pub fn poll(&mut self, max: usize, mut on_cqe: impl FnMut(&Cqe)) -> usize {
        let entries = self.layout.entries;
        let mut consumed = 0;
        while consumed < max {
            let slot_offset = self.layout.cq_offset + usize::from(self.cq_head) * CQE_BYTES;
            // One fresh atomic load of the word the controller writes last (status and
            // phase tag); never a plain read the compiler could keep from a previous poll.
            let status = self
                .memory
                .load_u16_le(slot_offset + CQE_STATUS_OFFSET)
                .expect("CQ slot lies inside the checked region");
            if (status & 1 == 1) != self.cq_phase {
                break;
            }
            // Read the rest of the entry only after its phase tag said it is complete.
            fence(Ordering::Acquire);
            let mut cqe = Cqe::new_zeroed();
            self.memory
                .read_at(slot_offset, cqe.as_mut_bytes())
                .expect("CQ slot lies inside the checked region");

            self.cq_head += 1;
            if self.cq_head == entries {
                self.cq_head = 0;
                self.cq_phase = !self.cq_phase;
            }
            consumed += 1;

            if cqe.sqhd() < entries {
                self.sq_head = cqe.sqhd();
            } else {
                log::error!(
                    "queue {}: completion reports SQ head {} beyond {entries} entries",
                    self.qid,
                    cqe.sqhd()
                );
            }
            let cid = cqe.cid();
            if usize::from(cid) < self.in_flight.len() && self.in_flight[usize::from(cid)] {
                self.release_cid(cid);
                on_cqe(&cqe);
            } else {
                self.unexpected_completions += 1;
                log::error!(
                    "queue {}: completion for command id {cid}, which is not in flight; ignored",
                    self.qid
                );
            }
        }
        if consumed > 0 {
            self.mmio.write32(self.cq_doorbell, u32::from(self.cq_head));
        }
        consumed
    }

    fn take_slot(&mut self) -> Result<u16, QueueFull> {
        let full = QueueFull {
            qid: self.qid,
            entries: self.layout.entries,
        };
        if self.next_sq_index(self.sq_tail) == self.sq_head {
            return Err(full);
        }
        let cid = self.free_cids.pop().ok_or(full)?;
        debug_assert!(!self.in_flight[usize::from(cid)]);
        self.in_flight[usize::from(cid)] = true;
        Ok(cid)
    }

    fn release_cid(&mut self, cid: u16) {
        self.in_flight[usize::from(cid)] = false;
        // Capacity was reserved for every id, so this never reallocates.
        assert!(
            self.free_cids.len() < self.in_flight.len(),
            "cid {cid} freed twice"
        );
        self.free_cids.push(cid);
    }

    fn write_sqe(&mut self, sqe: &Sqe, cid: u16) {
        let mut command = *sqe;
        command.cid = cid.into();
        // PSDT = PRP: this driver never uses SGLs, and a PCIe controller must refuse SGLs in
        // admin commands (QEMU's does, with Invalid Field), even those that carry no data.
        command.flags &= !(0x3 << 6);
        let offset = usize::from(self.sq_tail) * SQE_BYTES;
        self.memory
            .write_at(offset, command.as_bytes())
            .expect("SQ slot lies inside the checked region");
        self.sq_tail = self.next_sq_index(self.sq_tail);
    }

    fn next_sq_index(&self, index: u16) -> u16 {
        if index + 1 == self.layout.entries {
            0
        } else {
            index + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::FakeMmio;
    use nvme_spec::{opcode, FromBytes};

    /// Transfers up to 64 KiB: 16 list entries, 128-byte slots.
    const MAX_TRANSFER: u64 = 64 * 1024;

    fn queue(qid: u16, entries: u16, fake: &FakeMmio) -> QueuePair<&FakeMmio> {
        let layout = QueueLayout::new(entries, MAX_TRANSFER);
        let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
        QueuePair::new(qid, layout, memory, fake, 0).unwrap()
    }

    /// The controller side: reads SQE `index`, posts its completion at CQ slot `slot`.
    fn complete(q: &QueuePair<&FakeMmio>, sq_index: u16, cq_slot: u16, phase: bool) -> Sqe {
        let mut sqe = Sqe::new_zeroed();
        q.memory()
            .read_at(usize::from(sq_index) * 64, sqe.as_mut_bytes())
            .unwrap();
        let mut cqe = Cqe::new_zeroed();
        cqe.cid = sqe.cid;
        cqe.sqhd = ((sq_index + 1) % q.entries()).into();
        cqe.sqid = q.qid().into();
        cqe.status = u16::from(phase).into();
        q.memory()
            .write_at(
                q.layout().cq_offset + usize::from(cq_slot) * 16,
                cqe.as_bytes(),
            )
            .unwrap();
        sqe
    }

    #[test]
    fn layout_is_page_aligned_and_sizes_prp_slots_from_the_transfer() {
        let l = QueueLayout::new(32, 2 << 20);
        assert_eq!(l.cq_offset, 4096);
        assert_eq!(l.prp_lists_offset, 8192);
        assert_eq!(l.prp_list_bytes, 4096, "2 MiB: a whole page of entries");
        assert_eq!(l.total_bytes, 8192 + 31 * 4096);
        let big = QueueLayout::new(1024, 128 * 1024);
        assert_eq!(big.cq_offset, 64 * 1024);
        assert_eq!(big.prp_lists_offset, 64 * 1024 + 16 * 1024);
        assert_eq!(big.prp_list_bytes, 256, "128 KiB: 32 entries");
        assert_eq!(
            big.total_bytes,
            80 * 1024 + 1023 * 256 + 256,
            "rounded to a page"
        );
        assert_eq!(
            QueueLayout::new(2, 4096).prp_list_bytes,
            64,
            "the smallest slot"
        );
        assert_eq!(
            QueueLayout::new(2, u64::MAX).prp_list_bytes,
            4096,
            "capped at a page"
        );
    }

    #[test]
    fn a_transfer_beyond_the_slot_is_refused() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        let sqe = Sqe::new(opcode::io::READ, 0);
        // 64 KiB starting mid-page spans 17 pages: 16 list entries, exactly the slot.
        assert!(q
            .submit_with_prps(&sqe, 0x40_0000_0200, MAX_TRANSFER)
            .is_ok());
        // 72 KiB spans 18 pages: one entry too many.
        assert_eq!(
            q.submit_with_prps(&sqe, 0x40_0000_0000, MAX_TRANSFER + 8192),
            Err(SubmitError::Prp(PrpError::ListTooSmall {
                needed: 17,
                capacity: 16
            }))
        );
        assert_eq!(q.in_flight(), 1, "the refused command's id is free again");
    }

    #[test]
    fn submit_batches_the_doorbell() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 8, &fake);
        assert_eq!(q.cq_iova(), q.sq_iova() + 4096);
        let sqe = Sqe::new(opcode::io::READ, 0xFFFF);
        assert_eq!(q.submit(&sqe), Ok(0));
        assert_eq!(q.submit(&sqe), Ok(1));
        assert!(fake.writes().is_empty(), "submit must not ring");
        q.flush();
        q.flush(); // nothing new: no second write
        assert_eq!(fake.writes(), vec![(0x1008, 2)]);
        let mut written = Sqe::new_zeroed();
        q.memory().read_at(64, written.as_mut_bytes()).unwrap();
        assert_eq!(written.cid(), 1);
        assert_eq!(written.opcode, opcode::io::READ);
        // Sqe::new selects SGLs (the Fabrics default); a PCIe queue always says PRP.
        assert_eq!(sqe.flags >> 6, 1);
        assert_eq!(written.flags >> 6, 0, "PSDT must be PRP on PCIe");
    }

    #[test]
    fn poll_consumes_by_phase_and_rings_once() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 8, &fake);
        let sqe = Sqe::new(opcode::io::WRITE, 0);
        for _ in 0..3 {
            q.submit(&sqe).unwrap();
        }
        q.flush();
        fake.clear_writes();
        assert_eq!(q.poll(16, |_| panic!("nothing completed yet")), 0);
        assert!(fake.writes().is_empty(), "no completion, no doorbell");
        complete(&q, 0, 0, true);
        complete(&q, 1, 1, true);
        let mut cids = Vec::new();
        assert_eq!(q.poll(16, |cqe| cids.push(cqe.cid())), 2);
        assert_eq!(cids, vec![0, 1]);
        assert_eq!(fake.writes(), vec![(0x100C, 2)]);
        assert_eq!(q.in_flight(), 1);
        // max bounds the batch.
        complete(&q, 2, 2, true);
        fake.clear_writes();
        assert_eq!(q.poll(0, |_| {}), 0);
        assert_eq!(q.poll(1, |_| {}), 1);
        assert_eq!(fake.writes(), vec![(0x100C, 3)]);
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn full_queue_refuses_until_completions() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(2, 4, &fake);
        let sqe = Sqe::new(opcode::io::READ, 0);
        for expected in 0..3 {
            assert_eq!(q.submit(&sqe), Ok(expected));
        }
        assert_eq!(q.submit(&sqe), Err(QueueFull { qid: 2, entries: 4 }));
        q.flush();
        complete(&q, 0, 0, true);
        assert_eq!(q.poll(8, |_| {}), 1);
        assert_eq!(q.submit(&sqe), Ok(0));
    }

    #[test]
    fn wraps_around_and_flips_phase() {
        let fake = FakeMmio::new(0x2000);
        let entries = 4u16;
        let mut q = queue(1, entries, &fake);
        let sqe = Sqe::new(opcode::io::READ, 0);
        let mut phase = true;
        let mut cq_slot = 0u16;
        let mut sq_index = 0u16;
        let mut completed = 0;
        // Three laps of the CQ, one command at a time, then two at a time.
        for round in 0..12 {
            let batch = if round < 6 { 1 } else { 2 };
            for _ in 0..batch {
                q.submit(&sqe).unwrap();
            }
            q.flush();
            for _ in 0..batch {
                complete(&q, sq_index, cq_slot, phase);
                sq_index = (sq_index + 1) % entries;
                cq_slot += 1;
                if cq_slot == entries {
                    cq_slot = 0;
                    phase = !phase;
                }
            }
            assert_eq!(q.poll(8, |cqe| assert!(cqe.status().is_success())), batch);
            completed += batch;
            assert_eq!(fake.get32(0x100C), u32::from(cq_slot));
            assert_eq!(fake.get32(0x1008), u32::from(sq_index));
        }
        assert_eq!(completed, 18);
        assert_eq!(q.in_flight(), 0);
        // A stale entry from the previous lap (old phase) is not consumed.
        assert_eq!(q.poll(8, |_| panic!("stale entry consumed")), 0);
    }

    #[test]
    fn ignores_completions_for_unknown_cids() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        let mut cqe = Cqe::new_zeroed();
        cqe.cid = 2.into();
        cqe.status = 1.into();
        let off = q.layout().cq_offset;
        q.memory().write_at(off, cqe.as_bytes()).unwrap();
        assert_eq!(q.poll(8, |_| panic!("unknown cid delivered")), 1);
        assert_eq!(q.unexpected_completions(), 1);
    }

    #[test]
    fn submit_with_prps_fills_the_slot_list() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        let sqe = Sqe::new(opcode::io::READ, 0);
        let buf = 0x40_0000_0000u64;
        let cid = q.submit_with_prps(&sqe, buf, 4 * 4096).unwrap();
        let mut written = Sqe::new_zeroed();
        q.memory().read_at(0, written.as_mut_bytes()).unwrap();
        assert_eq!(written.psdt(), 0);
        assert_eq!(written.dptr.addr.get(), buf);
        let prp2 = u64::from_le_bytes(written.dptr.as_bytes()[8..].try_into().unwrap());
        assert_eq!(prp2, q.prp_list_iova(cid));
        let mut list = [0u8; 24];
        let off = q.layout().prp_list_offset(cid);
        q.memory().read_at(off, &mut list).unwrap();
        let entries = <[u64; 3]>::read_from_bytes(&list).unwrap();
        assert_eq!(
            entries.map(u64::from_le),
            [buf + 4096, buf + 8192, buf + 12288]
        );

        // Two pages need no list; a bad buffer gives its cid back.
        let cid2 = q.submit_with_prps(&sqe, buf, 8192).unwrap();
        assert_eq!(cid2, 1);
        assert_eq!(
            q.submit_with_prps(&sqe, buf + 1, 512),
            Err(SubmitError::Prp(PrpError::UnalignedStart { iova: buf + 1 }))
        );
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn a_chained_buffer_lists_each_units_pages() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        let sqe = Sqe::new(opcode::io::WRITE, 0);
        // Three 8 KiB units, out of order in memory; 20 KiB from 2 KiB in.
        let units = [
            (0x40_0001_0000u64, 8192usize),
            (0x40_0000_0000, 8192),
            (0x40_0005_0000, 8192),
        ];
        let cid = q
            .submit_with_prp_chain(&sqe, units.iter().copied(), 2048, 20_480)
            .unwrap();
        let mut written = Sqe::new_zeroed();
        q.memory().read_at(0, written.as_mut_bytes()).unwrap();
        assert_eq!(written.dptr.addr.get(), 0x40_0001_0800);
        let prp2 = u64::from_le_bytes(written.dptr.as_bytes()[8..].try_into().unwrap());
        assert_eq!(prp2, q.prp_list_iova(cid));
        let mut list = [0u8; 40];
        q.memory()
            .read_at(q.layout().prp_list_offset(cid), &mut list)
            .unwrap();
        let entries = <[u64; 5]>::read_from_bytes(&list).unwrap();
        assert_eq!(
            entries.map(u64::from_le),
            [
                0x40_0001_1000,
                0x40_0000_0000,
                0x40_0000_1000,
                0x40_0005_0000,
                0x40_0005_1000
            ]
        );
    }

    #[test]
    fn slot_data_goes_into_the_command_ids_prp_list_slot() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        q.submit(&Sqe::new(opcode::io::READ, 0)).unwrap();
        let range = [7u8; 16];
        let cid = q
            .submit_with_slot_data(&Sqe::new(opcode::io::DATASET_MANAGEMENT, 0), &range)
            .unwrap();
        assert_eq!(cid, 1);
        let mut written = Sqe::new_zeroed();
        q.memory().read_at(64, written.as_mut_bytes()).unwrap();
        assert_eq!(written.dptr.addr.get(), q.prp_list_iova(1));
        assert_eq!(written.psdt(), 0);
        let mut back = [0u8; 16];
        let off = q.layout().prp_list_offset(1);
        q.memory().read_at(off, &mut back).unwrap();
        assert_eq!(back, range);
    }

    #[test]
    fn reset_starts_the_queue_over() {
        let fake = FakeMmio::new(0x2000);
        let mut q = queue(1, 4, &fake);
        let sqe = Sqe::new(opcode::io::READ, 0);
        for _ in 0..3 {
            q.submit(&sqe).unwrap();
        }
        q.flush();
        complete(&q, 0, 0, true);
        assert_eq!(q.poll(8, |_| {}), 1);
        complete(&q, 1, 1, true); // left in the CQ: must not survive the reset
        assert_eq!(q.reset(), 2);
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.poll(8, |_| panic!("a stale entry survived the reset")), 0);
        assert_eq!(q.submit(&sqe), Ok(0), "lowest id first, as when new");
        fake.clear_writes();
        q.flush();
        assert_eq!(fake.writes(), vec![(0x1008, 1)], "SQ slot 0 again");
    }

    #[test]
    fn refuses_small_memory() {
        let fake = FakeMmio::new(0x2000);
        let memory = DmaMemory::allocate_ordinary(4096).unwrap();
        let layout = QueueLayout::new(32, MAX_TRANSFER);
        let err = QueuePair::new(1, layout, memory, &fake, 0).unwrap_err();
        assert_eq!(err.needed_bytes, layout.total_bytes);
        assert!(err.to_string().contains("QueueLayout::new"));
    }
}
