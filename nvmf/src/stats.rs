//! What the control plane reads of the poll groups (SPDK's `nvmf_get_stats`,
//! `nvmf_subsystem_get_qpairs`, `nvmf_subsystem_get_controllers`): gathered by message from
//! every reactor, so reading them takes no lock on the I/O path.

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
