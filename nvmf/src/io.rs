//! NVM I/O commands: Read, Write, Compare, Flush, Write Zeroes, Dataset
//! Management. This is the hot path: no allocation, lock or syscall.

use bdev::{BdevIo, IoType};
use nvme_spec::opcode::io as op;
use nvme_spec::{Sqe, Status};

use crate::poll_group::{tag_of, PollGroup, QueueRole};
use crate::transport::RequestId;

/// Dataset Management carries at most 256 ranges of 16 bytes.
const DSM_MAX_RANGES: usize = 256;

impl PollGroup {
    /// Runs an I/O command of a ready controller of subsystem `sub_id`.
    /// `write_through`: the controller has no enabled volatile write cache,
    /// so writes to a namespace that has one must be FUA.
    pub(crate) fn io(
        &mut self,
        t: usize,
        id: RequestId,
        sub_id: usize,
        write_through: bool,
        cmd: &Sqe,
    ) {
        let (nsid, tag) = (cmd.nsid(), tag_of(t, id));
        let Some(ch) = self.ns_channel(sub_id, nsid) else {
            return self.finish(t, id, Status::INVALID_NAMESPACE_OR_FORMAT);
        };
        let info = ch.ns.bdev.info();
        let (block_size, num_blocks, supported) = (ch.block_size, ch.num_blocks, info.supported);
        let fua = cmd.fua() || (write_through && info.volatile_write_cache);
        let in_range =
            |slba: u64, nlb: u64| slba.checked_add(nlb).is_some_and(|end| end <= num_blocks);
        let io = match cmd.opcode {
            op::READ | op::WRITE | op::COMPARE => {
                let (slba, nlb) = (cmd.slba(), u64::from(cmd.nlb()));
                let io_type = match cmd.opcode {
                    op::READ => IoType::Read,
                    op::WRITE => IoType::Write,
                    _ => IoType::Compare,
                };
                if !supported.contains(io_type) {
                    return self.finish(t, id, Status::INVALID_OPCODE);
                }
                if !in_range(slba, nlb) {
                    return self.finish(t, id, Status::LBA_OUT_OF_RANGE);
                }
                let len_bytes = nlb * u64::from(block_size);
                let req = self.transports[t].request(id);
                // Exact, as nvmet's transfer length check: a longer SGL would
                // send (or take) bytes no block of this command holds.
                if u64::from(req.length) != len_bytes || req.data.is_none() {
                    return self.finish(t, id, Status::DATA_SGL_LENGTH_INVALID);
                }
                if io_type == IoType::Read {
                    req.c2h_bytes = req.length; // sent only if the read succeeds
                }
                req.ctx.pending_ops = 1;
                let io = BdevIo {
                    io_type,
                    offset_blocks: slba,
                    num_blocks: nlb,
                    buf: req.data.take(),
                    buf_offset: req.data_offset,
                    tag,
                    fua: fua && io_type == IoType::Write,
                };
                if io_type != IoType::Compare {
                    self.count_io(t, id.queue, io_type == IoType::Write, len_bytes);
                }
                io
            }
            op::FLUSH => {
                if !supported.contains(IoType::Flush) {
                    return self.finish(t, id, Status::SUCCESS); // nothing volatile to flush
                }
                self.transports[t].request(id).ctx.pending_ops = 1;
                BdevIo::without_buf(IoType::Flush, 0, num_blocks, tag)
            }
            op::WRITE_ZEROES => {
                let (slba, nlb) = (cmd.slba(), u64::from(cmd.nlb()));
                if !supported.contains(IoType::WriteZeroes) {
                    return self.finish(t, id, Status::INVALID_OPCODE);
                }
                if !in_range(slba, nlb) {
                    return self.finish(t, id, Status::LBA_OUT_OF_RANGE);
                }
                self.transports[t].request(id).ctx.pending_ops = 1;
                let mut io = BdevIo::without_buf(IoType::WriteZeroes, slba, nlb, tag);
                io.fua = fua;
                io
            }
            op::DATASET_MANAGEMENT => {
                return self.dataset_management(t, id, sub_id, nsid, num_blocks, cmd)
            }
            _ => return self.finish(t, id, Status::INVALID_OPCODE),
        };
        self.submit_bdev(sub_id, nsid, io);
    }

    /// Deallocate: one Unmap per range; other attributes are hints and succeed.
    fn dataset_management(
        &mut self,
        t: usize,
        id: RequestId,
        sub_id: usize,
        nsid: u32,
        num_blocks: u64,
        cmd: &Sqe,
    ) {
        if !cmd.dsm_deallocate() {
            return self.finish(t, id, Status::SUCCESS);
        }
        let supported = self
            .ns_channel(sub_id, nsid)
            .map(|ch| ch.ns.bdev.info().supported);
        if !supported.is_some_and(|s| s.contains(IoType::Unmap)) {
            return self.finish(t, id, Status::SUCCESS); // deallocation is advisory
        }
        let n = cmd.dsm_ranges() as usize;
        let req = self.transports[t].request(id);
        let mut bytes = [0u8; DSM_MAX_RANGES * 16];
        if !req.read_data(0, &mut bytes[..n * 16]) {
            return self.finish(t, id, Status::DATA_SGL_LENGTH_INVALID);
        }
        let mut ranges = [(0u64, 0u64); DSM_MAX_RANGES];
        let mut count = 0;
        for chunk in bytes[..n * 16].chunks_exact(16) {
            let nlb = u64::from(u32::from_le_bytes(chunk[4..8].try_into().expect("4 bytes")));
            let slba = u64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
            if slba.checked_add(nlb).is_none_or(|end| end > num_blocks) {
                return self.finish(t, id, Status::LBA_OUT_OF_RANGE);
            }
            if nlb > 0 {
                ranges[count] = (slba, nlb);
                count += 1;
            }
        }
        if count == 0 {
            return self.finish(t, id, Status::SUCCESS);
        }
        req.ctx.pending_ops = count as u16;
        let tag = tag_of(t, id);
        for &(slba, nlb) in &ranges[..count] {
            self.submit_bdev(
                sub_id,
                nsid,
                BdevIo::without_buf(IoType::Unmap, slba, nlb, tag),
            );
        }
    }

    /// SMART counters, kept per reactor in the controller's shared state.
    fn count_io(&self, t: usize, queue: u16, write: bool, bytes: u64) {
        if let Some(QueueRole::Io { ctrl, .. }) =
            self.queues[t][usize::from(queue)].as_ref().map(|q| &q.role)
        {
            ctrl.count_io(self.reactor, write, bytes);
        }
    }
}
