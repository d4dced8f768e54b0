//! The NVMe-oF RDMA transport (RoCEv2, iWARP, InfiniBand through RDMA CM).
//!
//! ## Design
//! - `verbs`: the FFI module, owning wrappers over rdma-core; it holds the
//!   `unsafe` blocks that call it. Posting work requests is an `unsafe fn`:
//!   `poll_group` calls it where it vouches (SAFETY notes) for the memory the
//!   NIC reads and writes.
//! - The acceptor (`Transport::accept`, run by the target on reactor 0)
//!   polls a non-blocking CM event channel. A connect request is checked
//!   against the NVMe-oF private data and handed to the target, which places
//!   it on a reactor; that reactor's poll group creates the QP and accepts.
//!   Later CM events of a connection reach its poll group through a
//!   lock-free inbox.
//! - A poll group (`poll_group`) owns, per device, one PD, one CQ shared by
//!   its QPs, one MR over the whole data-buffer pool and, with `srq`, one
//!   shared receive queue.
//! - Each request slot runs the state machine in `request`.

mod poll_group;
pub mod request;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verbs;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dma::{BufPool, DmaMemory};
use nvme_spec::fabrics::rdma::{reject, CmAccept, CmReject, CmRequest};
use nvme_spec::identify::sgls;
use nvme_spec::{FromBytes, IntoBytes};
use nvmf::transport::{
    ListenAddress, OptionValue, PendingQueue, Transport, TransportCaps, TransportError,
    TransportPollGroup,
};

use crate::verbs::{CmId, CmToken, Connection, DeviceKey, EventChannel, RdmaCore, Verbs};

/// CM events handled per acceptor run.
const CM_EVENT_BATCH: usize = 64;
/// How often a lost listener (device removed, address moved) is re-created.
const RELISTEN_PERIOD: Duration = Duration::from_secs(1);
const LISTEN_BACKLOG: i32 = 128;
/// How long after a device removal librdmacm is asked to re-read the device
/// list: the kernel's side of the removal waits for every queue of the device
/// to be torn down first, which takes at most the 10 s flush timeout.
const DEVICE_REMOVAL_REFRESH: Duration = Duration::from_secs(60);
/// Notices each poll group's inbox holds.
const INBOX_DEPTH: usize = 4096;
/// Most RDMA READs a queue keeps in flight (also bounded by host and device).
const MAX_READ_DEPTH: u8 = 16;

/// rdma_cm event codes (rdma_cm_event_type).
mod cm_event {
    use rdma_sys::rdma_cm_event_type as t;
    pub const CONNECT_REQUEST: u32 = t::RDMA_CM_EVENT_CONNECT_REQUEST;
    pub const ESTABLISHED: u32 = t::RDMA_CM_EVENT_ESTABLISHED;
    pub const DISCONNECTED: u32 = t::RDMA_CM_EVENT_DISCONNECTED;
    pub const DEVICE_REMOVAL: u32 = t::RDMA_CM_EVENT_DEVICE_REMOVAL;
    pub const ADDR_CHANGE: u32 = t::RDMA_CM_EVENT_ADDR_CHANGE;
    pub const TIMEWAIT_EXIT: u32 = t::RDMA_CM_EVENT_TIMEWAIT_EXIT;
    pub const CONNECT_ERROR: u32 = t::RDMA_CM_EVENT_CONNECT_ERROR;
    pub const UNREACHABLE: u32 = t::RDMA_CM_EVENT_UNREACHABLE;
    pub const REJECTED: u32 = t::RDMA_CM_EVENT_REJECTED;
}

#[derive(Clone, Copy, Debug)]
pub struct RdmaOptions {
    pub max_queue_depth: u16,
    pub max_admin_queue_depth: u16,
    pub in_capsule_data_bytes: u32,
    pub max_io_bytes: u32,
    /// Bytes of each data buffer unit: a transfer chains as many as it needs.
    pub io_unit_bytes: u32,
    /// Data buffer units shared by all reactors.
    pub buffer_count: usize,
    /// One shared receive queue per device and reactor instead of receives
    /// posted per queue pair (falls back when the device has no SRQ).
    pub srq: bool,
    /// Receives posted on each shared receive queue (capped by the device).
    pub srq_depth: u32,
    /// Where the data buffers go (the reactors' node); None: wherever the kernel puts them.
    pub numa_node: Option<u32>,
}

/// Device-list refreshes after a device removal (see `verbs::refresh_devices`).
struct DeviceRefresh {
    next: Instant,
    until: Instant,
    warned_no_device: bool,
}

/// One configured listen address and its CM id. The id is gone while the
/// address has no usable RDMA device (removed, or the address moved); the
/// acceptor then re-creates it every [`RELISTEN_PERIOD`].
struct Listener {
    addr: ListenAddress,
    socket: SocketAddr,
    id: Option<CmId>,
    retry_at: Option<Instant>,
}

impl Listener {
    /// Drops the id (the caller destroys it) and schedules a re-listen.
    fn lose(&mut self, now: Instant) -> Option<CmId> {
        self.retry_at = Some(now);
        self.id.take()
    }

    fn is(&self, token: CmToken) -> bool {
        self.id.as_ref().is_some_and(|id| id.token() == token)
    }

    fn relisten_due(&self, now: Instant) -> bool {
        self.id.is_none() && self.retry_at.is_some_and(|t| t <= now)
    }
}

/// What the acceptor tells a poll group about one of its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Notice {
    /// The connection of this id; its token is never reused, so a notice that
    /// arrives after the queue is gone matches nothing.
    Disconnected(CmToken),
    /// The device is being removed: every poll group must let go of its PD,
    /// CQ, SRQ and MRs there, or the kernel cannot finish the removal.
    DeviceRemoved(DeviceKey),
}

/// A connect request on its way to a poll group. Dropped while it still
/// holds its id (not taken by an accepted queue), it is rejected and the id
/// destroyed.
pub(crate) struct ConnRequest<V: Verbs> {
    pub id: Option<V::Conn>,
    pub depth: u16,
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

impl<V: Verbs> ConnRequest<V> {
    pub fn id(&self) -> &V::Conn {
        self.id
            .as_ref()
            .expect("the connect request still holds its id")
    }

    pub fn id_mut(&mut self) -> &mut V::Conn {
        self.id
            .as_mut()
            .expect("the connect request still holds its id")
    }
}

impl<V: Verbs> Drop for ConnRequest<V> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let rej = CmReject {
                recfmt: 0.into(),
                status: reject::NO_RESOURCES.into(),
            };
            id.reject(rej.as_bytes());
            // Dropping the id destroys it (and its QP, if it got one).
        }
    }
}

pub struct RdmaTransport {
    options: RdmaOptions,
    channel: EventChannel,
    listeners: Mutex<Vec<Listener>>,
    pool: Arc<BufPool>,
    inboxes: Mutex<Vec<Option<Arc<ArrayQueue<Notice>>>>>,
    /// Which reactor owns each connection id.
    owners: Arc<Mutex<HashMap<CmToken, usize>>>,
    /// After a device removal: have librdmacm re-read the device list every
    /// [`RELISTEN_PERIOD`] until then (see `verbs::refresh_devices`).
    refresh_devices: Mutex<Option<DeviceRefresh>>,
}

impl RdmaTransport {
    pub fn new(options: RdmaOptions) -> Result<Arc<RdmaTransport>, TransportError> {
        let channel = EventChannel::new().map_err(|e| TransportError::Other(e.to_string()))?;
        let unit = options.io_unit_bytes as usize;
        if !unit.is_power_of_two() {
            return Err(TransportError::Other(format!(
                "RDMA data buffers: io_unit_size {unit} is not a power of two"
            )));
        }
        if options.max_io_bytes as usize > unit * options.buffer_count {
            return Err(TransportError::Other(format!(
                "RDMA data buffers: {} units of {unit} bytes cannot hold one {}-byte transfer",
                options.buffer_count, options.max_io_bytes
            )));
        }
        let size = unit * options.buffer_count;
        let memory =
            DmaMemory::allocate_prefer_hugepages("RDMA data buffers", size, options.numa_node)
                .map_err(|e| TransportError::Other(format!("RDMA data buffers: {e}")))?;
        let pool = BufPool::new(memory, unit, options.buffer_count)
            .map_err(|e| TransportError::Other(format!("RDMA data buffers: {e}")))?;
        Ok(Arc::new(RdmaTransport {
            options,
            channel,
            listeners: Mutex::new(Vec::new()),
            pool,
            inboxes: Mutex::new(Vec::new()),
            owners: Arc::new(Mutex::new(HashMap::new())),
            refresh_devices: Mutex::new(None),
        }))
    }

    fn notify_all(&self, notice: Notice) {
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        for (r, inbox) in inboxes.iter().enumerate() {
            if let Some(inbox) = inbox {
                if inbox.push(notice).is_err() {
                    log::error!("RDMA notice for reactor {r} dropped: inbox full");
                }
            }
        }
    }

    fn notify_owner(&self, token: CmToken, notice: Notice) {
        let owner = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token)
            .copied();
        let Some(r) = owner else { return };
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(r)
            .cloned()
            .flatten();
        if let Some(inbox) = inbox {
            if inbox.push(notice).is_err() {
                log::error!("RDMA notice for reactor {r} dropped: inbox full");
            }
        }
    }

    /// A listener's device went away or its address moved: destroy its id and
    /// re-listen from the acceptor. False when `id` is not a listener.
    fn lose_listener(&self, token: CmToken, event: &str, status: i32) -> bool {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = listeners.iter_mut().find(|l| l.is(token)) else {
            return false;
        };
        log::warn!(
            "RDMA listener {} lost ({event}, status {status}); re-listening every {} s until its address has an RDMA device again",
            l.addr,
            RELISTEN_PERIOD.as_secs()
        );
        drop(l.lose(Instant::now())); // destroys the id
        true
    }

    /// After a device removal, lets librdmacm notice the device is gone (once
    /// per [`RELISTEN_PERIOD`], for [`DEVICE_REMOVAL_REFRESH`]).
    fn refresh_devices_after_removal(&self, now: Instant) {
        let mut pending = self
            .refresh_devices
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(r) = pending.as_mut().filter(|r| now >= r.next) else {
            return;
        };
        verbs::refresh_devices();
        if !r.warned_no_device && verbs::device_names().is_empty() {
            r.warned_no_device = true;
            log::warn!(
                "no RDMA device is left: librdmacm keeps its context of the removed device \
                 open until another device appears or nvmf-tgt exits, so the kernel cannot \
                 finish removing it until then (restart nvmf-tgt to complete the removal)"
            );
        }
        r.next = now + RELISTEN_PERIOD;
        if now >= r.until {
            *pending = None;
        }
    }

    /// Re-creates lost listeners whose retry time has come.
    fn relisten(&self, now: Instant) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for l in listeners.iter_mut().filter(|l| l.relisten_due(now)) {
            match self.channel.listen(l.socket, LISTEN_BACKLOG) {
                Ok(id) => {
                    log::info!("RDMA listener {} restored", l.addr);
                    l.id = Some(id);
                    l.retry_at = None;
                }
                Err(e) => {
                    log::debug!("RDMA listener {}: re-listen failed: {e}", l.addr);
                    l.retry_at = Some(now + RELISTEN_PERIOD);
                }
            }
        }
    }

    /// Checks a connect request; Ok(qid, depth) or the reject status.
    fn check_request(&self, data: &[u8]) -> Result<(u16, u16), u16> {
        let Ok((req, _)) = CmRequest::read_from_prefix(data) else {
            return Err(reject::INVALID_PRIVATE_DATA_LENGTH);
        };
        if req.recfmt.get() != 0 {
            return Err(reject::INVALID_RECFMT);
        }
        let qid = req.qid.get();
        let max = if qid == 0 {
            self.options.max_admin_queue_depth
        } else {
            self.options.max_queue_depth
        };
        let depth = u32::from(req.hsqsize.get()) + 1;
        if depth < 2 || depth > u32::from(max) {
            return Err(reject::INVALID_HSQSIZE);
        }
        if req.hrqsize.get() == 0 {
            return Err(reject::INVALID_HRQSIZE);
        }
        Ok((qid, depth as u16))
    }

    fn on_connect_request(&self, ev: verbs::CmEvent, on_new: &mut dyn FnMut(PendingQueue)) {
        let listener = ev.listen_token().and_then(|token| {
            let l = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            l.iter().find(|l| l.is(token)).map(|l| l.addr.clone())
        });
        // Acks the event before anything may destroy the id.
        let (id, params) = ev.into_conn_request();
        let (data, host_responder_resources, host_initiator_depth) = (
            params.private_data,
            params.responder_resources,
            params.initiator_depth,
        );
        let Some(listener) = listener else {
            id.reject(&[]);
            return;
        };
        let (qid, depth) = match self.check_request(&data) {
            Ok(v) => v,
            Err(status) => {
                log::warn!("RDMA connect from {listener} rejected: reject status {status:#x}");
                let rej = CmReject {
                    recfmt: 0.into(),
                    status: status.into(),
                };
                id.reject(rej.as_bytes());
                return;
            }
        };
        let limits = id.device().and_then(|d| d.query().ok());
        let dev_init = limits.map_or(1, |l| l.max_qp_init_rd_atom.max(1));
        let dev_resp = limits.map_or(1, |l| l.max_qp_rd_atom.max(1));
        let conn = ConnRequest::<RdmaCore> {
            id: Some(id),
            depth,
            // We issue RDMA READs: at most what the host will answer.
            initiator_depth: host_responder_resources
                .min(dev_init)
                .clamp(1, MAX_READ_DEPTH),
            responder_resources: host_initiator_depth.min(dev_resp),
        };
        log::debug!("RDMA connect request qid {qid} depth {depth} on {listener}");
        on_new(PendingQueue {
            qid,
            listener,
            conn: Box::new(conn),
        });
    }
}

/// The Linux host's private data on accept: record format and our RQ size.
pub(crate) fn accept_private_data(depth: u16) -> CmAccept {
    CmAccept {
        recfmt: 0.into(),
        crqsize: depth.into(),
        rsvd: [0; 28],
    }
}

impl Transport for RdmaTransport {
    fn name(&self) -> &'static str {
        "rdma"
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
            ("no_srq", OptionValue::Bool(!o.srq)),
            ("max_srq_depth", OptionValue::Number(u64::from(o.srq_depth))),
        ]
    }

    fn caps(&self) -> TransportCaps {
        TransportCaps::new(
            sgls::SUPPORTED | sgls::KEYED_DATA_BLOCK,
            self.options.in_capsule_data_bytes,
        )
    }

    fn listen(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let socket = addr.socket_addr()?;
        let (ip, port) = (socket.ip(), socket.port());
        let id = self.channel.listen(socket, LISTEN_BACKLOG).map_err(|e| {
            let devices = verbs::device_names();
            let have = if devices.is_empty() { "no RDMA devices at all".to_string() } else { format!("RDMA devices: {}", devices.join(", ")) };
            TransportError::Listen(format!(
                "cannot listen on {ip}:{port}: {e}; the address must belong to a netdev with an RDMA device ({have}). \
                 For Soft-RoCE: modprobe rdma_rxe && rdma link add rxe0 type rxe netdev <interface>"
            ))
        })?;
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Listener {
                addr: addr.clone(),
                socket,
                id: Some(id),
                retry_at: None,
            });
        Ok(())
    }

    fn stop_listening(&self, addr: &ListenAddress) -> Result<(), TransportError> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = listeners.iter().position(|l| l.addr == *addr) else {
            return Ok(());
        };
        let l = listeners.swap_remove(i);
        // Dropping the listener destroys its CM id, which waits for the id's
        // unacknowledged events: never under the lock the acceptor takes.
        drop(listeners);
        drop(l);
        Ok(())
    }

    fn accept(&self, on_new: &mut dyn FnMut(PendingQueue)) -> usize {
        let now = Instant::now();
        self.refresh_devices_after_removal(now);
        self.relisten(now);
        let mut n = 0;
        while n < CM_EVENT_BATCH {
            let Some(ev) = self.channel.next_event() else {
                break;
            };
            n += 1;
            let kind = ev.kind();
            match kind {
                cm_event::CONNECT_REQUEST => self.on_connect_request(ev, on_new),
                cm_event::ESTABLISHED => log::debug!("RDMA connection established"),
                cm_event::DISCONNECTED
                | cm_event::CONNECT_ERROR
                | cm_event::UNREACHABLE
                | cm_event::REJECTED
                | cm_event::DEVICE_REMOVAL
                | cm_event::ADDR_CHANGE => {
                    let token = ev.token();
                    let (name, status) = (ev.name(), ev.status());
                    let removed_device = (kind == cm_event::DEVICE_REMOVAL)
                        .then(|| ev.device_key())
                        .flatten();
                    drop(ev); // ack before the id may be destroyed
                    if !self.lose_listener(token, &name, status) && kind != cm_event::ADDR_CHANGE {
                        log::debug!("RDMA event {name} on a connection");
                        self.notify_owner(token, Notice::Disconnected(token));
                    }
                    if let Some(device) = removed_device {
                        self.notify_all(Notice::DeviceRemoved(device));
                        let now = Instant::now();
                        *self
                            .refresh_devices
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(DeviceRefresh {
                            next: now,
                            until: now + DEVICE_REMOVAL_REFRESH,
                            warned_no_device: false,
                        });
                    }
                }
                cm_event::TIMEWAIT_EXIT => {}
                _ => log::debug!("RDMA CM event {} ignored", ev.name()),
            }
        }
        n
    }

    fn create_poll_group(
        &self,
        reactor: usize,
        reactor_count: usize,
    ) -> Result<Box<dyn TransportPollGroup>, TransportError> {
        let inbox = Arc::new(ArrayQueue::new(INBOX_DEPTH));
        {
            let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
            if inboxes.len() < reactor_count {
                inboxes.resize(reactor_count, None);
            }
            inboxes[reactor] = Some(inbox.clone());
        }
        // Each reactor's cache: a share of the pool, but room for the chain
        // of the largest transfer.
        let max_units = (self.options.max_io_bytes as usize).div_ceil(self.pool.buf_size());
        let cache = (self.pool.count() / (2 * reactor_count.max(1)))
            .clamp(1, 256)
            .max(max_units);
        let pg = poll_group::RdmaPollGroup::<RdmaCore>::new(
            self.options,
            self.pool.clone(),
            self.owners.clone(),
            reactor,
            inbox,
            cache,
        )
        .map_err(|e| {
            TransportError::Other(format!("RDMA poll group: cannot create an epoll set: {e}"))
        })?;
        Ok(Box::new(pg))
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            drop(l.id); // destroys the listening id
        }
    }
}

/// Local addresses that have an RDMA device (a probe bind succeeds and lands
/// on a device), for the embedded default's listeners.
pub fn rdma_capable_addresses() -> Vec<IpAddr> {
    let Ok(channel) = EventChannel::new() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ip in local_addresses() {
        if let Ok(id) = channel.listen(SocketAddr::new(ip, 0), 1) {
            if id.device().is_some() {
                out.push(ip);
            }
        }
    }
    out
}

fn local_addresses() -> Vec<IpAddr> {
    // /proc/net lists are enough and need no unsafe getifaddrs walk.
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in text.lines() {
            let t = line.trim();
            if let Some(ip) = t
                .strip_prefix("|-- ")
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                last = Some(ip);
            } else if t.starts_with("/32 host LOCAL") {
                if let Some(ip) = last.take() {
                    if !ip.is_loopback() && !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_listener_is_retried_from_the_time_it_was_lost() {
        let mut l = Listener {
            addr: ListenAddress::new("rdma", "10.0.0.1", "4420"),
            socket: "10.0.0.1:4420".parse().unwrap(),
            id: None,
            retry_at: None,
        };
        let t0 = Instant::now();
        assert!(!l.relisten_due(t0), "never lost: nothing to retry");
        assert!(l.lose(t0).is_none());
        assert!(l.relisten_due(t0));
        l.retry_at = Some(t0 + RELISTEN_PERIOD);
        assert!(!l.relisten_due(t0));
        assert!(l.relisten_due(t0 + RELISTEN_PERIOD));
    }
}
