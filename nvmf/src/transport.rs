//! The interface between the target and a transport (RDMA, TCP, loopback).
//!
//! A transport owns its queues and their request slots. Per reactor it runs a
//! [`TransportPollGroup`]: each poll reports events (new queue, a request whose
//! command and host-to-controller data have arrived, a queue gone). The target
//! executes the request in place (`request()` lends it) and calls `complete()`;
//! the transport then moves controller-to-host data and sends the response.
//! A request slot stays the target's until it calls `complete()`, so a queue
//! that disconnects is released (`close_queue`) only when the target says so.

use std::any::Any;
use std::fmt;
use std::os::fd::RawFd;

use dma::DmaBuf;
use nvme_spec::opcode::{self, DataDirection};
use nvme_spec::{Cqe, Sgl, Sqe, Status};

/// Where a listener listens (and what a discovery log entry reports).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddress {
    /// "rdma", "tcp" or "loopback".
    pub trtype: String,
    pub traddr: String,
    pub trsvcid: String,
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.trtype, self.traddr, self.trsvcid)
    }
}

impl ListenAddress {
    pub fn new(trtype: &str, traddr: &str, trsvcid: &str) -> ListenAddress {
        ListenAddress {
            trtype: trtype.into(),
            traddr: traddr.into(),
            trsvcid: trsvcid.into(),
        }
    }

    /// The NVMe-oF TRTYPE code.
    pub fn trtype_code(&self) -> u8 {
        use nvme_spec::log::trtype;
        match self.trtype.as_str() {
            "rdma" => trtype::RDMA,
            "tcp" => trtype::TCP,
            _ => trtype::LOOP,
        }
    }

    /// The NVMe-oF ADRFAM code, from the address syntax.
    pub fn adrfam_code(&self) -> u8 {
        use nvme_spec::log::adrfam;
        if self.trtype == "loopback" {
            adrfam::INTRA_HOST
        } else if self.traddr.contains(':') {
            adrfam::IPV6
        } else {
            adrfam::IPV4
        }
    }

    /// The socket address of an IP listener ("*" is every IPv4 address).
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, TransportError> {
        let ip: std::net::IpAddr = match self.traddr.as_str() {
            "*" => std::net::IpAddr::from([0, 0, 0, 0]),
            s => s.parse().map_err(|_| {
                TransportError::Listen(format!("traddr {s:?} is not an IP address"))
            })?,
        };
        let port: u16 = self.trsvcid.parse().map_err(|_| {
            TransportError::Listen(format!("trsvcid {:?} is not a port number", self.trsvcid))
        })?;
        Ok(std::net::SocketAddr::new(ip, port))
    }

    /// True when `self` (a configured listener, possibly a wildcard address)
    /// covers a connection that arrived on `actual`.
    pub fn covers(&self, actual: &ListenAddress) -> bool {
        let wildcard = matches!(self.traddr.as_str(), "0.0.0.0" | "::" | "*");
        self.trtype == actual.trtype
            && self.trsvcid == actual.trsvcid
            && (wildcard || self.traddr == actual.traddr)
    }
}

/// What a transport supports; the target advertises it in Identify Controller.
#[derive(Clone, Copy, Debug)]
pub struct TransportCaps {
    /// SGLS field of Identify Controller.
    pub sgls: u32,
    /// In-capsule data bytes per I/O command capsule.
    pub in_capsule_data_bytes: u32,
    pub msdbd: u8,
}

impl TransportCaps {
    /// One data descriptor per command, `sgls` (the descriptor kinds the transport takes)
    /// plus SGL offsets when commands may carry data in the capsule.
    pub fn new(sgls: u32, in_capsule_data_bytes: u32) -> TransportCaps {
        let offset = if in_capsule_data_bytes > 0 {
            nvme_spec::identify::sgls::OFFSET
        } else {
            0
        };
        TransportCaps {
            sgls: sgls | offset,
            in_capsule_data_bytes,
            msdbd: 1,
        }
    }
}

/// The default size of a data buffer unit: a transfer takes as many units as
/// it needs (a 4 KiB command one).
pub const DEFAULT_IO_UNIT_BYTES: u32 = 8192;

/// Names a request slot: transport queue slot and request index inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub queue: u16,
    pub slot: u16,
}

/// Data movement of a request, decided from the opcode and its SGL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xfer {
    None,
    HostToController,
    ControllerToHost,
}

/// Target-side bookkeeping carried in each request slot (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct RequestCtx {
    /// Bdev operations still running for this request (DSM issues several).
    pub pending_ops: u16,
    /// Status to report once `pending_ops` reaches zero.
    pub status: Status,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            pending_ops: 0,
            status: Status::SUCCESS,
        }
    }
}

/// One command in flight, lent by the transport to the target.
pub struct Request {
    pub cmd: Sqe,
    pub rsp: Cqe,
    pub xfer: Xfer,
    /// Data length from the SGL, in bytes.
    pub length: u32,
    /// Holds host-to-controller data on arrival; receives controller-to-host data.
    pub data: Option<DmaBuf>,
    /// Where the data starts inside `data` (in-capsule data may sit at an offset).
    pub data_offset: u32,
    /// Controller-to-host bytes the command produced, from `data_offset` on.
    /// A transport sends exactly these, and only when the command succeeded:
    /// never the rest of the SGL, whose buffer may hold an earlier user's bytes.
    pub c2h_bytes: u32,
    /// A transport-detected error (bad SGL, too long); the target completes the
    /// request with it without executing the command.
    pub transport_status: Option<Status>,
    pub ctx: RequestCtx,
}

impl Request {
    pub fn new() -> Request {
        Request {
            cmd: Sqe::default(),
            rsp: Cqe::default(),
            xfer: Xfer::None,
            length: 0,
            data: None,
            data_offset: 0,
            c2h_bytes: 0,
            transport_status: None,
            ctx: RequestCtx::default(),
        }
    }

    /// Resets the slot for a newly received command.
    pub fn reset(&mut self, cmd: Sqe) {
        debug_assert!(
            self.data.is_none(),
            "request slot reused with a buffer attached"
        );
        self.cmd = cmd;
        self.rsp = Cqe::default();
        self.xfer = Xfer::None;
        self.length = 0;
        self.data_offset = 0;
        self.c2h_bytes = 0;
        self.transport_status = None;
        self.ctx = RequestCtx::default();
    }

    /// Copies `dst.len()` bytes of the request's data, from `offset`. False
    /// (nothing copied) when there is no buffer or the range passes `length`.
    pub fn read_data(&self, offset: usize, dst: &mut [u8]) -> bool {
        match &self.data {
            Some(buf) if offset + dst.len() <= self.length as usize => {
                buf.read_at(self.data_offset as usize + offset, dst);
                true
            }
            _ => false,
        }
    }

    /// Copies `src` into the request's data at `offset`. False (nothing
    /// copied) when there is no buffer or the range passes `length`.
    pub fn write_data(&mut self, offset: usize, src: &[u8]) -> bool {
        match &mut self.data {
            Some(buf) if offset + src.len() <= self.length as usize => {
                buf.write_at(self.data_offset as usize + offset, src);
                true
            }
            _ => false,
        }
    }

    /// Sets `len` bytes of the request's data from `offset` to `byte`.
    pub fn fill_data(&mut self, offset: usize, len: usize, byte: u8) -> bool {
        match &mut self.data {
            Some(buf) if offset + len <= self.length as usize => {
                buf.fill(self.data_offset as usize + offset, len, byte);
                true
            }
            _ => false,
        }
    }

    /// The controller-to-host bytes a transport may send: none unless the
    /// command succeeded, else exactly what it produced (asserted to fit the
    /// SGL and the buffer, so a handler's slip cannot leak a pool buffer's
    /// stale bytes). They start `data_offset` bytes into `data`.
    pub fn c2h_len(&self) -> u32 {
        if self.xfer != Xfer::ControllerToHost || !self.rsp.status().is_success() {
            return 0;
        }
        assert!(
            self.c2h_bytes <= self.length,
            "command produced {} bytes for a {}-byte SGL",
            self.c2h_bytes,
            self.length
        );
        let capacity = self.data.as_ref().map_or(0, |b| b.capacity());
        assert!(
            self.data_offset as usize + self.c2h_bytes as usize <= capacity,
            "command produced {} bytes for a {capacity}-byte buffer",
            self.c2h_bytes
        );
        self.c2h_bytes
    }

    /// The bytes `c2h_len` says to send, in pieces (one per buffer unit), in order.
    pub fn c2h_chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let len = self.c2h_len() as usize;
        self.data
            .iter()
            .flat_map(move |b| b.pieces(self.data_offset as usize, len))
    }

    /// A copy of the request's data (`length` bytes), for tests and control
    /// paths: it allocates.
    pub fn data_to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.length as usize];
        if !self.read_data(0, &mut v) {
            v.clear();
        }
        v
    }
}

impl Default for Request {
    fn default() -> Self {
        Request::new()
    }
}

/// How a transport must move a command's data, decided by [`plan_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlan {
    None,
    /// Data sits in the capsule at this offset from the capsule's data area.
    InCapsule {
        offset: u32,
        len: u32,
    },
    /// Host memory reached by key: read it before execution (`HostToController`)
    /// or write it after (`ControllerToHost`).
    Keyed {
        addr: u64,
        len: u32,
        key: u32,
        invalidate: bool,
        xfer: Xfer,
    },
}

/// The SGL of a command that moves data, and which way; None when it moves none. Checks
/// what every fabrics transport checks (SGLs only, a known direction, at most
/// `max_io_bytes`); which SGL kinds it can serve is the transport's to decide.
pub fn data_sgl(cmd: &Sqe, max_io_bytes: u32) -> Result<Option<(Sgl, Xfer)>, Status> {
    let dir = if cmd.is_fabrics() {
        opcode::fabrics_data_direction(cmd.fctype())
    } else {
        opcode::data_direction(cmd.opcode)
    };
    if cmd.psdt() != nvme_spec::sqe::PSDT_SGL_MPTR_CONTIG && !cmd.is_fabrics() {
        // Fabrics transfers data only by SGL; PRPs have no meaning here.
        return Err(Status::INVALID_FIELD);
    }
    let sgl = cmd.dptr.decode()?;
    let xfer = match dir {
        DataDirection::None => return Ok(None),
        DataDirection::HostToController => Xfer::HostToController,
        DataDirection::ControllerToHost => Xfer::ControllerToHost,
        DataDirection::Bidirectional => return Err(Status::INVALID_OPCODE),
    };
    if sgl.is_empty() {
        return Ok(None);
    }
    if sgl.len() > max_io_bytes {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    Ok(Some((sgl, xfer)))
}

/// Decides the data movement for a received command, with the statuses the
/// spec and SPDK give for SGLs a fabrics target cannot take.
pub fn plan_data(
    cmd: &Sqe,
    in_capsule_limit_bytes: u32,
    max_io_bytes: u32,
) -> Result<DataPlan, Status> {
    let Some((sgl, xfer)) = data_sgl(cmd, max_io_bytes)? else {
        return Ok(DataPlan::None);
    };
    match sgl {
        Sgl::Keyed {
            addr,
            len,
            key,
            invalidate,
        } => Ok(DataPlan::Keyed {
            addr,
            len,
            key,
            invalidate,
            xfer,
        }),
        Sgl::InCapsule { offset, len } => {
            if xfer != Xfer::HostToController {
                return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            }
            let end = offset
                .checked_add(u64::from(len))
                .ok_or(Status::SGL_OFFSET_INVALID)?;
            if offset >= u64::from(in_capsule_limit_bytes) {
                return Err(Status::SGL_OFFSET_INVALID);
            }
            if end > u64::from(in_capsule_limit_bytes) {
                return Err(Status::DATA_SGL_LENGTH_INVALID);
            }
            Ok(DataPlan::InCapsule {
                offset: offset as u32,
                len,
            })
        }
        Sgl::DataBlock { .. } | Sgl::Transport { .. } => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
    }
}

/// What a transport poll group reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A request is ready: command received and host data (if any) in place.
    Request(RequestId),
    /// The host or the wire closed the queue. Requests still held by the
    /// target must be completed; then the target calls `close_queue`.
    QueueDisconnected { queue: u16 },
}

/// A connection accepted by a transport's listener, not yet placed on a reactor.
pub struct PendingQueue {
    /// Queue id the host announced at transport connect (0 = admin).
    pub qid: u16,
    /// The listener it arrived on.
    pub listener: ListenAddress,
    /// Transport-private connection state, adopted by a poll group.
    pub conn: Box<dyn Any + Send>,
}

/// Errors a transport reports to the target's control plane.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Listen(String),
    #[error("poll group cannot take another queue: {0}")]
    Full(String),
    #[error("{0}")]
    Other(String),
}

/// A transport, shared by all reactors.
/// A transport's own option, as `nvmf_get_transports` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionValue {
    Bool(bool),
    Number(u64),
}

pub trait Transport: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn caps(&self) -> TransportCaps;
    /// Options beyond the target's, by SPDK's names (`io_unit_size`, `c2h_success`, ...).
    fn options(&self) -> Vec<(&'static str, OptionValue)> {
        Vec::new()
    }
    fn listen(&self, addr: &ListenAddress) -> Result<(), TransportError>;
    /// Stops a listener `listen` started; queues it accepted stay connected.
    fn stop_listening(&self, addr: &ListenAddress) -> Result<(), TransportError>;
    /// Takes newly connected queues (called by the acceptor poller).
    fn accept(&self, on_new: &mut dyn FnMut(PendingQueue)) -> usize;
    /// The poll group of reactor `reactor` out of `reactor_count`.
    fn create_poll_group(
        &self,
        reactor: usize,
        reactor_count: usize,
    ) -> Result<Box<dyn TransportPollGroup>, TransportError>;
}

/// The per-reactor part of a transport.
pub trait TransportPollGroup {
    /// Places a newly accepted queue in this poll group; returns its queue slot.
    fn adopt(&mut self, pending: PendingQueue) -> Result<u16, TransportError>;
    /// Polls the wire; pushes at most `events.capacity() - events.len()` events.
    fn poll(&mut self, events: &mut Vec<TransportEvent>) -> usize;
    fn request(&mut self, id: RequestId) -> &mut Request;
    /// The target is done with the request: send its data and response.
    fn complete(&mut self, id: RequestId);
    /// Posts everything batched during this poll (work requests, doorbells).
    fn flush(&mut self);
    /// Tears a queue down from the target's side (keep-alive expiry, shutdown).
    fn disconnect(&mut self, queue: u16);
    /// The target holds no more requests of a disconnected queue: free it.
    fn close_queue(&mut self, queue: u16);

    /// Queues still allocated (connected or draining).
    fn queue_count(&self) -> usize;

    /// Interrupt mode: an fd that turns readable when work arrives (after
    /// `arm_wakeup`). None: this poll group can only be polled.
    fn wakeup_fd(&self) -> Option<RawFd> {
        None
    }
    /// Interrupt mode: arms `wakeup_fd`; true only if armed and idle (see
    /// `reactor::Poller::arm_wakeup`).
    fn arm_wakeup(&mut self) -> bool {
        false
    }
    /// Interrupt mode: the reactor woke; consume `wakeup_fd`'s events.
    fn woke(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::SglDescriptor;

    fn cmd(op: u8, sgl: SglDescriptor) -> Sqe {
        let mut c = Sqe::new(op, 1);
        c.dptr = sgl;
        c
    }

    #[test]
    fn plans() {
        let read = cmd(
            opcode::io::READ,
            SglDescriptor::keyed(0x1000, 4096, 7, false),
        );
        assert_eq!(
            plan_data(&read, 4096, 131072),
            Ok(DataPlan::Keyed {
                addr: 0x1000,
                len: 4096,
                key: 7,
                invalidate: false,
                xfer: Xfer::ControllerToHost
            })
        );
        let write = cmd(opcode::io::WRITE, SglDescriptor::data_block(0, 4096));
        assert_eq!(
            plan_data(&write, 4096, 131072),
            Ok(DataPlan::InCapsule {
                offset: 0,
                len: 4096
            })
        );
        let flush = cmd(opcode::io::FLUSH, SglDescriptor::keyed(0, 0, 0, false));
        assert_eq!(plan_data(&flush, 4096, 131072), Ok(DataPlan::None));
    }

    #[test]
    fn rejects() {
        let big = cmd(
            opcode::io::READ,
            SglDescriptor::keyed(0, 256 * 1024, 7, false),
        );
        assert_eq!(
            plan_data(&big, 4096, 131072),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let icd_read = cmd(opcode::io::READ, SglDescriptor::data_block(0, 512));
        assert_eq!(
            plan_data(&icd_read, 4096, 131072),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        let icd_far = cmd(opcode::io::WRITE, SglDescriptor::data_block(8192, 512));
        assert_eq!(
            plan_data(&icd_far, 4096, 131072),
            Err(Status::SGL_OFFSET_INVALID)
        );
        let icd_long = cmd(opcode::io::WRITE, SglDescriptor::data_block(0, 8192));
        assert_eq!(
            plan_data(&icd_long, 4096, 131072),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let mut prp = write_prp();
        prp.flags = 0;
        assert_eq!(plan_data(&prp, 4096, 131072), Err(Status::INVALID_FIELD));
    }

    fn write_prp() -> Sqe {
        cmd(opcode::io::WRITE, SglDescriptor::keyed(0, 512, 1, false))
    }

    #[test]
    fn listener_cover() {
        let any = ListenAddress::new("rdma", "0.0.0.0", "4420");
        let one = ListenAddress::new("rdma", "10.0.0.1", "4420");
        assert!(any.covers(&one));
        assert!(one.covers(&one));
        assert!(!one.covers(&ListenAddress::new("rdma", "10.0.0.2", "4420")));
        assert!(!one.covers(&ListenAddress::new("rdma", "10.0.0.1", "4421")));
        assert_eq!(
            ListenAddress::new("rdma", "fe80::1", "4420").adrfam_code(),
            2
        );
    }
}
