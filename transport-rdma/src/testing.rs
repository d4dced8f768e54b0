//! A poll group over the simulated NIC (`verbs::fake`), with the host's side
//! of each connection, for unit tests and benchmarks (feature `testing`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use dma::BufPool;
use nvme_spec::{IntoBytes, Sqe};
use nvmf::transport::{ListenAddress, PendingQueue, TransportPollGroup};

use crate::verbs::fake::FakeVerbs;
pub use crate::verbs::fake::{FakeNic, HostQp, NicStats, SendError, HOST_BASE, HOST_RKEY};
use crate::verbs::{CmToken, Connection};
use crate::{poll_group::RdmaPollGroup, ConnRequest, Notice, RdmaOptions, INBOX_DEPTH};

/// Options a test starts from: small queues and buffers, in-capsule data on.
pub fn options() -> RdmaOptions {
    RdmaOptions {
        max_queue_depth: 128,
        max_admin_queue_depth: 32,
        in_capsule_data_bytes: 4096,
        max_io_bytes: 131_072,
        io_unit_bytes: 8192,
        buffer_count: 64 * 16,
        srq: false,
        srq_depth: 256,
        numa_node: None,
    }
}

/// The simulated NIC, the host's side of its connections, and what a poll
/// group needs from the transport (data buffers, connection owners, inbox).
pub struct FakeRdma {
    pub nic: FakeNic,
    pub options: RdmaOptions,
    pub pool: Arc<BufPool>,
    owners: Arc<Mutex<HashMap<CmToken, usize>>>,
    inbox: Arc<ArrayQueue<Notice>>,
    tokens: Vec<CmToken>,
}

impl FakeRdma {
    /// A NIC with `host_bytes` of host memory, and a data-buffer pool per `options`.
    pub fn new(options: RdmaOptions, host_bytes: usize) -> FakeRdma {
        FakeRdma::with_nic(options, FakeNic::new(host_bytes))
    }

    pub fn with_nic(options: RdmaOptions, nic: FakeNic) -> FakeRdma {
        let pool =
            BufPool::with_ordinary_memory(options.io_unit_bytes as usize, options.buffer_count)
                .expect("data buffers");
        FakeRdma {
            nic,
            options,
            pool,
            owners: Arc::new(Mutex::new(HashMap::new())),
            inbox: Arc::new(ArrayQueue::new(INBOX_DEPTH)),
            tokens: Vec::new(),
        }
    }

    pub(crate) fn poll_group_with_cache(&self, cache: usize) -> RdmaPollGroup<FakeVerbs> {
        RdmaPollGroup::new(
            self.options,
            self.pool.clone(),
            self.owners.clone(),
            0,
            self.inbox.clone(),
            cache,
        )
        .expect("epoll set")
    }

    /// The poll group of reactor 0 (its buffer cache holds 4 buffers).
    pub fn poll_group(&self) -> Box<dyn TransportPollGroup> {
        Box::new(self.poll_group_with_cache(4))
    }

    /// A host connects queue `qid` of `depth` entries, answering at most
    /// `host_reads` RDMA READs at once: the connection to hand to `adopt`,
    /// and the host's side of it.
    pub fn connect(&mut self, qid: u16, depth: u16, host_reads: u8) -> (PendingQueue, HostQp) {
        let (conn, qp) = self.nic.connect();
        let token = conn.token();
        if self.tokens.len() <= qp_index(qp) {
            self.tokens.resize(qp_index(qp) + 1, token);
        }
        self.tokens[qp_index(qp)] = token;
        let pending = PendingQueue {
            qid,
            listener: ListenAddress::new("rdma", "192.0.2.1", "4420"),
            conn: Box::new(ConnRequest::<FakeVerbs> {
                id: Some(conn),
                depth,
                responder_resources: host_reads,
                initiator_depth: host_reads,
            }),
        };
        (pending, qp)
    }

    /// The host disconnects: its QP goes to the error state and the
    /// acceptor tells the poll group, as RDMA CM's DISCONNECTED event does.
    pub fn disconnect(&self, qp: HostQp) {
        self.nic.break_qp(qp);
        let token = self.tokens[qp_index(qp)];
        self.inbox
            .push(Notice::Disconnected(token))
            .expect("inbox has room");
    }

    /// The device is being removed (RDMA CM's DEVICE_REMOVAL).
    pub fn remove_device(&self) {
        self.inbox
            .push(Notice::DeviceRemoved(self.nic.key()))
            .expect("inbox has room");
    }

    /// Whether the poll group still records an owner for `qp`'s connection.
    pub fn owned(&self, qp: HostQp) -> bool {
        let token = self.tokens[qp_index(qp)];
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&token)
    }
}

fn qp_index(qp: HostQp) -> usize {
    qp.index()
}

/// A command capsule: the command, then `data` in the capsule.
pub fn capsule(cmd: &Sqe, data: &[u8]) -> Vec<u8> {
    let mut c = cmd.as_bytes().to_vec();
    c.extend_from_slice(data);
    c
}
