//! What the control plane reads of the poll groups (SPDK's `nvmf_get_stats`,
//! `nvmf_subsystem_get_qpairs`, `nvmf_subsystem_get_controllers`): gathered by message from
//! every reactor, so reading them takes no lock on the I/O path.

use bdev::IoType;

use crate::poll_group::{PollGroup, QueueRole};
use crate::transport::ListenAddress;

/// One poll group's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollGroupStats {
    pub reactor: usize,
    /// Admin queues that connected here since start.
    pub admin_qpairs: u64,
    /// I/O queues that connected here since start.
    pub io_qpairs: u64,
    pub current_admin_qpairs: u64,
    pub current_io_qpairs: u64,
    /// Commands waiting for room in a bdev channel.
    pub pending_bdev_io: u64,
    /// I/O commands completed since start.
    pub completed_nvme_io: u64,
    pub transports: Vec<&'static str>,
}

/// Operations submitted to a bdev (SPDK's `bdev_get_iostat` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStat {
    pub num_read_ops: u64,
    pub bytes_read: u64,
    pub num_write_ops: u64,
    pub bytes_written: u64,
    pub num_unmap_ops: u64,
    pub bytes_unmapped: u64,
    pub num_write_zeroes_ops: u64,
    pub num_flush_ops: u64,
    pub num_compare_ops: u64,
}

impl IoStat {
    /// Counts one operation of `bytes` (blocks times block size).
    pub(crate) fn count(&mut self, t: IoType, bytes: u64) {
        match t {
            IoType::Read => {
                self.num_read_ops += 1;
                self.bytes_read += bytes;
            }
            IoType::Write => {
                self.num_write_ops += 1;
                self.bytes_written += bytes;
            }
            IoType::Unmap => {
                self.num_unmap_ops += 1;
                self.bytes_unmapped += bytes;
            }
            IoType::WriteZeroes => self.num_write_zeroes_ops += 1,
            IoType::Flush => self.num_flush_ops += 1,
            IoType::Compare => self.num_compare_ops += 1,
        }
    }

    pub fn add(&mut self, o: &IoStat) {
        self.num_read_ops += o.num_read_ops;
        self.bytes_read += o.bytes_read;
        self.num_write_ops += o.num_write_ops;
        self.bytes_written += o.bytes_written;
        self.num_unmap_ops += o.num_unmap_ops;
        self.bytes_unmapped += o.bytes_unmapped;
        self.num_write_zeroes_ops += o.num_write_zeroes_ops;
        self.num_flush_ops += o.num_flush_ops;
        self.num_compare_ops += o.num_compare_ops;
    }
}

/// One connected queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QpairInfo {
    pub reactor: usize,
    pub cntlid: u16,
    pub qid: u16,
    pub hostnqn: String,
    pub listener: ListenAddress,
    /// "enabled" once connected; "deactivating" while it drains after a disconnect.
    pub state: &'static str,
}

impl PollGroup {
    pub(crate) fn stats(&self) -> PollGroupStats {
        let mut s = PollGroupStats {
            reactor: self.reactor,
            admin_qpairs: self.admin_queues_connected,
            io_qpairs: self.io_queues_connected,
            pending_bdev_io: self.retry_len() as u64,
            completed_nvme_io: self.io_commands,
            transports: self.target.transports().iter().map(|t| t.name()).collect(),
            ..PollGroupStats::default()
        };
        for q in self.queues.iter().flatten().flatten() {
            match q.role {
                QueueRole::Admin { .. } => s.current_admin_qpairs += 1,
                QueueRole::Io { .. } => s.current_io_qpairs += 1,
                _ => {}
            }
        }
        s
    }

    /// I/O counts by bdev name: open channels and closed ones.
    pub(crate) fn io_stats(&self) -> Vec<(String, IoStat)> {
        let mut out = self.retired_stats.clone();
        for sub in self.subsystems.iter().flatten() {
            for ch in sub.namespaces.iter().flatten() {
                out.push((ch.ns.bdev.info().name.clone(), ch.stats));
            }
        }
        out
    }

    /// The connected queues of subsystem `sub_id` on this reactor.
    pub(crate) fn qpairs(&self, sub_id: usize) -> Vec<QpairInfo> {
        let mut out = Vec::new();
        for q in self.queues.iter().flatten().flatten() {
            let (ctrl, qid) = match &q.role {
                QueueRole::Admin { ctrl_slot } => match &self.controllers[*ctrl_slot] {
                    Some(c) => (c.shared.clone(), 0),
                    None => continue,
                },
                QueueRole::Io { ctrl, qid } => (ctrl.clone(), *qid),
                _ => continue,
            };
            if ctrl.subsystem.id != sub_id {
                continue;
            }
            out.push(QpairInfo {
                reactor: self.reactor,
                cntlid: ctrl.cntlid,
                qid,
                hostnqn: ctrl.hostnqn.clone(),
                listener: q.listener.clone(),
                state: if q.disconnected {
                    "deactivating"
                } else {
                    "enabled"
                },
            });
        }
        out
    }
}
