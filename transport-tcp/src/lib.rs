//! The NVMe-oF TCP transport (NVMe TCP Transport Specification 1.0).
//!
//! ## Design
//! - `pdu`: the PDU formats, the checks on what a host sends, CRC32C digests. Pure.
//! - `plan`: how a command's data moves (in the capsule, R2T/H2CData, C2HData).
//! - `request`: the request state machine, every transition in one function.
//! - `conn`: one connection: PDUs parsed from the socket into request slots; R2Ts, C2HData
//!   and responses gathered into vectored writes.
//! - `poll_group`: a reactor's connections behind one epoll instance (mio); a poll touches
//!   only ready sockets and connections on its work lists.
//! - The acceptor (`Transport::accept`, run by the target on reactor 0) accepts sockets,
//!   answers the ICReq, and peeks at the first capsule for the queue id (a Connect's QID),
//!   so the target places admin and I/O queues as it places RDMA ones. The poll group that
//!   adopts the socket then reads that capsule like any other.
//!
//! No `unsafe`: sockets are std/mio, and data moves through `read_vectored`/`write_vectored`
//! over safe slices of the pool buffers.

#![forbid(unsafe_code)]

mod conn;
pub mod host;
pub mod pdu;
mod plan;
mod poll_group;
pub mod request;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dma::{BufPool, DmaMemory, PoolCache};
use nvme_spec::fabrics::ConnectCommand;
use nvme_spec::identify::sgls;
use nvme_spec::opcode::fctype;
use nvmf::transport::{
    ListenAddress, OptionValue, PendingQueue, Transport, TransportCaps, TransportError,
    TransportPollGroup,
};

use crate::conn::ConnParams;
use crate::pdu::{Digests, Fatal, CMD_HLEN, IC_BYTES};
use crate::poll_group::TcpPollGroup;

/// Connections accepted per listener per acceptor run.
const ACCEPT_BATCH: usize = 64;
/// Connections between accept and placement (ICReq not answered, or no capsule yet).
const MAX_HANDSHAKES: usize = 1024;
/// A connection that sends no ICReq, or no first capsule, in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-capsule data the Linux host sends on an admin queue whatever IOCCSZ says
/// (NVME_TCP_ADMIN_CCSZ): Connect's 1 KiB data, among others.
pub const ADMIN_IN_CAPSULE_BYTES: u32 = 8192;
/// MAXH2CDATA: the most data one H2CData PDU may carry (SPDK's default too).
pub const DEFAULT_MAX_H2C_DATA_BYTES: u32 = 128 * 1024;
/// Most buffer units a reactor keeps in its local cache.
const POOL_CACHE_MAX_UNITS: usize = 256;

/// How the TCP transport is set up.
#[derive(Clone, Debug)]
pub struct TcpOptions {
    pub max_queue_depth: u16,
    pub max_admin_queue_depth: u16,
    pub in_capsule_data_bytes: u32,
    pub max_io_bytes: u32,
    pub io_unit_bytes: u32,
    pub buffer_count: usize,
    /// Most data one H2CData PDU may carry (MAXH2CDATA of the ICResp).
    pub max_h2c_data_bytes: u32,
    /// SPDK's `c2h_success`: a successful read ends with a C2HData carrying SUCCESS and no
    /// response capsule, where the host disabled SQ flow control. Off: always a response.
    pub c2h_success: bool,
    pub numa_node: Option<u32>,
}

/// A connection between accept and placement.
struct Handshake {
    stream: TcpStream,
    listener: ListenAddress,
    deadline: Instant,
    icreq: [u8; IC_BYTES],
    have: usize,
    /// Set once the ICResp went out.
    negotiated: Option<pdu::IcReq>,
}

/// What a poll group adopts: the socket and what its ICReq negotiated.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub digests: Digests,
    pub data_alignment_bytes: u32,
}

pub struct TcpTransport {
    options: TcpOptions,
    listeners: Mutex<Vec<(ListenAddress, TcpListener)>>,
    handshakes: Mutex<Vec<Handshake>>,
    pool: Arc<BufPool>,
}

impl TcpTransport {
    pub fn new(options: TcpOptions) -> Result<Arc<TcpTransport>, TransportError> {
        let unit = options.io_unit_bytes as usize;
        if !unit.is_power_of_two() {
            return Err(TransportError::Other(format!(
                "TCP data buffers: io_unit_size {unit} is not a power of two"
            )));
        }
        if options.max_h2c_data_bytes < 4096 {
            return Err(TransportError::Other(format!(
                "TCP: max H2C data {} is below the 4096 bytes a host must be allowed",
                options.max_h2c_data_bytes
            )));
        }
        let max_units = (options.max_io_bytes as usize).div_ceil(unit);
        if max_units > options.buffer_count {
            return Err(TransportError::Other(format!(
                "TCP data buffers: {} units of {unit} bytes cannot hold one {}-byte transfer; \
                 raise num_shared_buffers",
                options.buffer_count, options.max_io_bytes
            )));
        }
        let size = unit * options.buffer_count;
        let memory =
            DmaMemory::allocate_prefer_hugepages("TCP data buffers", size, options.numa_node)
                .map_err(|e| TransportError::Other(format!("TCP data buffers: {e}")))?;
        let pool = BufPool::new(memory, unit, options.buffer_count)
            .map_err(|e| TransportError::Other(format!("TCP data buffers: {e}")))?;
        Ok(Arc::new(TcpTransport {
            options,
            listeners: Mutex::new(Vec::new()),
            handshakes: Mutex::new(Vec::new()),
            pool,
        }))
    }

    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    /// The port a listener got (for listeners on port 0, in tests).
    pub fn bound_port(&self, addr: &ListenAddress) -> Option<u16> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners
            .iter()
            .find(|(a, _)| a == addr)
            .and_then(|(_, l)| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Accepts what each listener has.
    fn accept_sockets(&self) {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        for (addr, listener) in listeners.iter() {
            for _ in 0..ACCEPT_BATCH {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if handshakes.len() >= MAX_HANDSHAKES {
                            log::warn!(
                                "NVMe/TCP: {MAX_HANDSHAKES} connections are still in their \
                                 handshake; refusing {peer}"
                            );
                            continue;
                        }
                        if let Err(e) = stream
                            .set_nonblocking(true)
                            .and_then(|_| stream.set_nodelay(true))
                        {
                            log::warn!("NVMe/TCP: cannot set up the socket from {peer}: {e}");
                            continue;
                        }
                        let listener = match stream.local_addr() {
                            Ok(local) => ListenAddress::new(
                                "tcp",
                                &local.ip().to_canonical().to_string(),
                                &local.port().to_string(),
                            ),
                            Err(_) => addr.clone(),
                        };
                        handshakes.push(Handshake {
                            stream,
                            listener,
                            deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                            icreq: [0; IC_BYTES],
                            have: 0,
                            negotiated: None,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("NVMe/TCP: accept on {addr} failed: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Moves one handshake on; Some(queue id) once it can be placed, Err to drop it.
    fn step_handshake(&self, h: &mut Handshake) -> Result<Option<u16>, String> {
        if h.negotiated.is_none() {
            match h.stream.read(&mut h.icreq[h.have..]) {
                Ok(0) => return Err("closed before its ICReq".into()),
                Ok(n) => h.have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(format!("read failed: {e}")),
            }
            if h.have < IC_BYTES {
                return Ok(None);
            }
            let req = match pdu::parse_icreq(&h.icreq) {
                Ok(req) => req,
                Err(fatal) => {
                    send_term(&mut h.stream, &fatal, &h.icreq);
                    return Err(format!("bad ICReq: {}", fatal.why));
                }
            };
            let resp = pdu::icresp(&req, self.options.max_h2c_data_bytes);
            // 128 bytes into a fresh socket's empty send buffer: all or an error.
            match h.stream.write(&resp) {
                Ok(n) if n == IC_BYTES => h.negotiated = Some(req),
                Ok(_) => return Err("could not send the ICResp at once".into()),
                Err(e) => return Err(format!("ICResp not sent: {e}")),
            }
        }
        // The first capsule says which queue this is (a Connect's QID); it stays in the
        // socket for the poll group.
        let mut head = [0u8; CMD_HLEN];
        match h.stream.peek(&mut head) {
            Ok(0) => Err("closed before its first command".into()),
            Ok(n) if n < CMD_HLEN => Ok(None),
            Ok(_) => {
                let sqe = pdu::capsule_sqe(&head);
                let connect = head[0] == pdu::pdu_type::CAPSULE_CMD
                    && sqe.is_fabrics()
                    && sqe.fctype() == fctype::CONNECT;
                // Anything else is placed as an admin queue; its poll group answers it.
                Ok(Some(if connect { sqe.connect_qid() } else { 0 }))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }
}

/// A C2HTermReq on a socket not yet in a poll group (best effort).
fn send_term(stream: &mut TcpStream, fatal: &Fatal, offending: &[u8]) {
    let mut out = [0u8; pdu::DATA_HLEN + pdu::TERM_MAX_DATA];
    let len = pdu::c2h_term_req(fatal, &offending[..pdu::CH_BYTES], &mut out);
    let _ = stream.write(&out[..len]);
}

impl Transport for TcpTransport {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn options(&self) -> Vec<(&'static str, OptionValue)> {
        let o = &self.options;
        vec![
            (
                "io_unit_size",
                OptionValue::Number(u64::from(o.io_unit_bytes)),
            ),
            (
                "num_shared_buffers",
                OptionValue::Number(o.buffer_count as u64),
            ),
            ("c2h_success", OptionValue::Bool(o.c2h_success)),
        ]
    }

    fn caps(&self) -> TransportCaps {
        TransportCaps::new(
            sgls::SUPPORTED | sgls::TRANSPORT_DATA_BLOCK,
            self.options.in_capsule_data_bytes,
        )
    }

    fn listen(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if listeners.iter().any(|(a, _)| a == addr) {
            return Ok(());
        }
        let socket = addr.socket_addr()?;
        let listener = TcpListener::bind(socket).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::AddrInUse => {
                    " (another process listens there: `ss -ltnp` shows which; stop it or \
                     choose another trsvcid)"
                }
                io::ErrorKind::AddrNotAvailable => {
                    " (no interface of this machine has that address: `ip addr` lists them)"
                }
                io::ErrorKind::PermissionDenied => " (ports below 1024 need root)",
                _ => "",
            };
            TransportError::Listen(format!("cannot listen on TCP {socket}: {e}{hint}"))
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            TransportError::Listen(format!(
                "cannot make the listener on {socket} non-blocking: {e}"
            ))
        })?;
        log::info!("NVMe/TCP: listening on {socket}");
        listeners.push((addr.clone(), listener));
        Ok(())
    }

    fn stop_listening(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(a, _)| a != addr);
        Ok(())
    }

    fn accept(&self, on_new: &mut dyn FnMut(PendingQueue)) -> usize {
        self.accept_sockets();
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut placed = 0;
        let mut i = 0;
        while i < handshakes.len() {
            let step = self.step_handshake(&mut handshakes[i]);
            let h = &handshakes[i];
            let step = match step {
                Ok(None) if now >= h.deadline => Err("no ICReq or first command in time".into()),
                other => other,
            };
            match step {
                Ok(None) => i += 1,
                Ok(Some(qid)) => {
                    let h = handshakes.swap_remove(i);
                    let req = h.negotiated.expect("placed after the ICResp");
                    on_new(PendingQueue {
                        qid,
                        listener: h.listener,
                        conn: Box::new(Accepted {
                            stream: h.stream,
                            digests: Digests {
                                header: req.header_digest,
                                data: req.data_digest,
                            },
                            data_alignment_bytes: req.data_alignment_bytes,
                        }),
                    });
                    placed += 1;
                }
                Err(why) => {
                    let h = handshakes.swap_remove(i);
                    let peer = h
                        .stream
                        .peer_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    log::warn!("NVMe/TCP: dropping the connection from {peer}: {why}");
                }
            }
        }
        placed
    }

    fn create_poll_group(
        &self,
        _reactor: usize,
        reactor_count: usize,
    ) -> Result<Box<dyn TransportPollGroup>, TransportError> {
        // All caches together hold at most half the pool, so an idle reactor cannot starve
        // a busy one; each holds at least the largest transfer's chain.
        let max_units = (self.options.max_io_bytes as usize).div_ceil(self.pool.buf_size());
        let cache = (self.pool.count() / (2 * reactor_count.max(1)))
            .clamp(1, POOL_CACHE_MAX_UNITS)
            .max(max_units);
        let params = ConnParams {
            digests: Digests::default(),
            data_alignment_bytes: 4,
            in_capsule_limit_bytes: self.options.in_capsule_data_bytes,
            max_io_bytes: self.options.max_io_bytes,
            max_h2c_data_bytes: self.options.max_h2c_data_bytes,
            unit_bytes: self.options.io_unit_bytes,
            c2h_success: self.options.c2h_success,
        };
        let group = TcpPollGroup::new(
            PoolCache::new(self.pool.clone(), cache),
            params,
            self.options.max_admin_queue_depth,
            self.options.max_queue_depth,
            ADMIN_IN_CAPSULE_BYTES.max(self.options.in_capsule_data_bytes),
        )?;
        Ok(Box::new(group))
    }
}
