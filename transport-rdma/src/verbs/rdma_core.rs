//! Wrappers over rdma-core: the FFI module of the RDMA transport. Every
//! `unsafe` block of the transport that calls rdma-core is here, each with a
//! SAFETY note.
//!
//! Handles are owners, freed on Drop: `EventChannel`, `CmId` (with its QP),
//! `Pd`, `Cq`, `Srq`, `Mr`. None is `Copy` and none exposes its raw pointer,
//! so a handle cannot be destroyed twice nor used after it was. A device
//! context is reached only through the `CmId` bound to it (`CmId::device`),
//! whose life keeps it open. Posting work requests stays `unsafe`: the caller
//! vouches for the memory the NIC will read and write.

use std::ffi::{c_void, CStr};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_sys as sys;

use super::{
    chain_result, CmToken, CompletionQueue, Connection, DeviceKey, DeviceLimits, MemoryRegion,
    PostError, QpSpec, Verbs,
};

fn token_as_context(token: CmToken) -> *mut c_void {
    // Only a number stored in a pointer-sized field, never dereferenced.
    token.0 as usize as *mut c_void
}

fn token_from_context(context: *mut c_void) -> CmToken {
    CmToken(context as usize as u64)
}

/// The raw channel; destroyed when the last `EventChannel` or `CmId` using it
/// goes, so it always outlives its ids.
struct ChannelRaw(NonNull<sys::rdma_event_channel>);

// SAFETY: librdmacm lets any thread create ids on a channel or read its
// events; the pointer is only read, and freed once (Drop).
unsafe impl Send for ChannelRaw {}
// SAFETY: as for Send; every use through &ChannelRaw is a thread-safe
// librdmacm call.
unsafe impl Sync for ChannelRaw {}

impl Drop for ChannelRaw {
    fn drop(&mut self) {
        // SAFETY: the last reference to the channel: every CmId holds an Arc
        // of it, so all its ids were destroyed already.
        unsafe { sys::rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// An RDMA CM id, owned: destroyed (with its QP, if any) on Drop. Not
/// `Clone`: whoever holds it (a listener, a connect request in transit, a
/// poll group's queue) is its only owner.
///
/// Dropping it blocks until every event of the id was acknowledged (dropped
/// `CmEvent`), as `rdma_destroy_id` does: drop events first.
#[derive(Debug)]
pub struct CmId {
    raw: NonNull<sys::rdma_cm_id>,
    token: CmToken,
    has_qp: bool,
    _channel: Arc<ChannelRaw>,
}

// SAFETY: rdma_cm ids may be used from any thread; a CmId has one owner at a
// time (it is not Clone), which moves it from the acceptor to a poll group.
unsafe impl Send for CmId {}

impl std::fmt::Debug for ChannelRaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelRaw({:p})", self.0)
    }
}

impl CmId {
    /// Takes ownership of a freshly created id and stamps its token into its
    /// `context`.
    ///
    /// # Safety
    /// `raw` is a live id of `channel` that nothing else owns, and no event
    /// of it is being read on another thread (its context is written).
    unsafe fn own(raw: NonNull<sys::rdma_cm_id>, channel: Arc<ChannelRaw>) -> CmId {
        let token = CmToken::next();
        // SAFETY: live id, exclusively ours per the contract.
        unsafe { (*raw.as_ptr()).context = token_as_context(token) };
        CmId {
            raw,
            token,
            has_qp: false,
            _channel: channel,
        }
    }

    pub fn token(&self) -> CmToken {
        self.token
    }

    /// The device the id is bound to, while the id lives; None when unbound.
    pub fn device(&self) -> Option<Device<'_>> {
        // SAFETY: the id is live while self is; reading a field librdmacm set
        // when it bound the id.
        let ctx = unsafe { (*self.raw.as_ptr()).verbs };
        NonNull::new(ctx).map(|ctx| Device {
            ctx,
            _id: PhantomData,
        })
    }

    pub fn accept(
        &self,
        private_data: &[u8],
        responder_resources: u8,
        initiator_depth: u8,
    ) -> io::Result<()> {
        let mut param = sys::rdma_conn_param {
            private_data: private_data.as_ptr().cast(),
            private_data_len: private_data.len() as u8,
            responder_resources,
            initiator_depth,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            ..Default::default()
        };
        // SAFETY: live id; `param` and the private data outlive the call.
        check(unsafe { sys::rdma_accept(self.raw.as_ptr(), &mut param) })
    }

    pub fn reject(&self, private_data: &[u8]) {
        // SAFETY: live id; the private data outlives the call.
        unsafe {
            sys::rdma_reject(
                self.raw.as_ptr(),
                private_data.as_ptr().cast(),
                private_data.len() as u8,
            )
        };
    }

    pub fn disconnect(&self) {
        // SAFETY: live id. Moves its QP to the error state; an error return
        // (already disconnected) is harmless.
        unsafe { sys::rdma_disconnect(self.raw.as_ptr()) };
    }

    /// Creates an RC queue pair on the id using `pd`, one CQ for both
    /// directions and, given one, a shared receive queue. Inline data is asked
    /// for as `spec.inline_bytes`; a device that refuses a QP with inline data
    /// gets a second request without. Returns the inline bytes granted.
    ///
    /// The PD, CQ and SRQ must outlive the QP; the kernel refuses (EBUSY) to
    /// free one still in use, so dropping them first leaks rather than frees.
    pub fn create_qp(
        &mut self,
        pd: &Pd,
        cq: &Cq,
        srq: Option<&Srq>,
        spec: &QpSpec,
    ) -> io::Result<u32> {
        assert!(!self.has_qp, "one QP per CM id");
        match self.create_qp_once(pd, cq, srq, spec, spec.inline_bytes) {
            Err(e) if spec.inline_bytes > 0 => {
                log::debug!(
                    "QP with {} bytes of inline data refused ({e}); asking for none",
                    spec.inline_bytes
                );
                self.create_qp_once(pd, cq, srq, spec, 0)
            }
            r => r,
        }
    }

    fn create_qp_once(
        &mut self,
        pd: &Pd,
        cq: &Cq,
        srq: Option<&Srq>,
        spec: &QpSpec,
        inline_bytes: u32,
    ) -> io::Result<u32> {
        let own_rq = srq.is_none();
        let mut attr = sys::ibv_qp_init_attr {
            send_cq: cq.cq.as_ptr(),
            recv_cq: cq.cq.as_ptr(),
            srq: srq.map_or(ptr::null_mut(), |s| s.0.as_ptr()),
            cap: sys::ibv_qp_cap {
                max_send_wr: spec.send_wr,
                max_recv_wr: if own_rq { spec.recv_wr } else { 0 },
                max_send_sge: spec.send_sge,
                max_recv_sge: if own_rq { spec.recv_sge } else { 0 },
                max_inline_data: inline_bytes,
            },
            qp_type: sys::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
            ..Default::default()
        };
        // SAFETY: live id, live PD, CQ and SRQ (borrowed for the call); attr
        // outlives the call. On success librdmacm copies the granted
        // capabilities back into it. A PD or CQ of another device makes the
        // call fail, not misbehave.
        check(unsafe { sys::rdma_create_qp(self.raw.as_ptr(), pd.0.as_ptr(), &mut attr) })?;
        self.has_qp = true;
        Ok(attr.cap.max_inline_data)
    }

    /// The id's QP; panics when it has none.
    fn qp(&self) -> *mut sys::ibv_qp {
        assert!(self.has_qp, "the CM id has no QP");
        // SAFETY: live id; rdma_create_qp succeeded, so id->qp is set and
        // stays until destroy_qp.
        unsafe { (*self.raw.as_ptr()).qp }
    }

    /// The number the device gives the id's QP (what a work completion's
    /// qp_num names). Panics when the id has no QP.
    pub fn qp_num(&self) -> u32 {
        // SAFETY: a live QP (see qp); reading a field set at creation.
        unsafe { (*self.qp()).qp_num }
    }

    /// Destroys the id's QP, if it has one. Its posted work requests are
    /// gone: the NIC no longer touches the memory they named.
    pub fn destroy_qp(&mut self) {
        if self.has_qp {
            // SAFETY: live id with a live QP, destroyed once (has_qp).
            unsafe { sys::rdma_destroy_qp(self.raw.as_ptr()) };
            self.has_qp = false;
        }
    }

    /// Links `wrs` into one chain (in order) and posts it to the id's QP with
    /// one call. Panics when the id has no QP.
    ///
    /// # Safety
    /// - Every pointer in `wrs` points to a live `ibv_send_wr` that nothing
    ///   else reads or writes during the call (its `next` is overwritten).
    /// - Each WR's `sg_list` points to `num_sge` live SGEs, each naming memory
    ///   inside an MR of this QP's PD with that MR's lkey.
    /// - Until the WR completes or is flushed (or the QP is destroyed), that
    ///   memory stays allocated, nothing writes it (the NIC reads it for a
    ///   SEND or RDMA WRITE), and for an RDMA READ nothing reads or writes it
    ///   (the NIC writes it).
    pub unsafe fn post_send_chain(&self, wrs: &[*mut sys::ibv_send_wr]) -> Result<(), PostError> {
        let Some(&first) = wrs.first() else {
            return Ok(());
        };
        for pair in wrs.windows(2) {
            // SAFETY: live WRs nothing else touches, per the contract.
            unsafe { (*pair[0]).next = pair[1] };
        }
        // SAFETY: as above; the last one ends the chain.
        unsafe { (**wrs.last().expect("non-empty")).next = ptr::null_mut() };
        let qp = self.qp();
        let mut bad = ptr::null_mut();
        // SAFETY: live QP; the chain, its SGEs and the memory they name are
        // valid as the caller promised. The provider copies the WRs into the
        // send queue before returning.
        let rc = unsafe { sys::nvmf_ibv_post_send(qp, first, &mut bad) };
        chain_result(rc, wrs, bad)
    }

    /// Links `wrs` into one chain and posts it to the QP's own receive queue
    /// with one call. Panics when the id has no QP.
    ///
    /// # Safety
    /// - Every pointer in `wrs` points to a live `ibv_recv_wr` that nothing
    ///   else reads or writes during the call.
    /// - Each WR's `sg_list` points to `num_sge` live SGEs naming memory inside
    ///   an MR of this QP's PD.
    /// - Until the receive completes or is flushed (or the QP is destroyed),
    ///   that memory stays allocated and nothing else reads or writes it (the
    ///   NIC writes it).
    pub unsafe fn post_recv_chain(&self, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        let Some(&first) = wrs.first() else {
            return Ok(());
        };
        // SAFETY: live WRs nothing else touches, per the contract.
        unsafe { link_recv_chain(wrs) };
        let qp = self.qp();
        let mut bad = ptr::null_mut();
        // SAFETY: live QP; the chain and its memory are valid per the contract.
        let rc = unsafe { sys::nvmf_ibv_post_recv(qp, first, &mut bad) };
        chain_result(rc, wrs, bad)
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        self.destroy_qp();
        // SAFETY: we own the live id and destroy it once; its channel is
        // still open (we hold an Arc of it). librdmacm waits here for
        // unacknowledged events of the id rather than freeing under them.
        unsafe { sys::rdma_destroy_id(self.raw.as_ptr()) };
    }
}

/// A device context borrowed from the CM id bound to it: open while the id
/// lives (librdmacm counts the ids bound to each device).
#[derive(Debug)]
pub struct Device<'a> {
    ctx: NonNull<sys::ibv_context>,
    _id: PhantomData<&'a CmId>,
}

impl Device<'_> {
    pub fn key(&self) -> DeviceKey {
        DeviceKey(self.ctx.as_ptr() as usize)
    }

    /// The name of the device, for logs.
    pub fn name(&self) -> String {
        // SAFETY: live context (see Device); its device name is a
        // NUL-terminated buffer of the device, copied out at once.
        unsafe { CStr::from_ptr(sys::ibv_get_device_name((*self.ctx.as_ptr()).device)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn query(&self) -> io::Result<DeviceLimits> {
        let mut attr = sys::ibv_device_attr::default();
        // SAFETY: live context; attr is writable.
        check(unsafe { sys::ibv_query_device(self.ctx.as_ptr(), &mut attr) })?;
        Ok(DeviceLimits {
            vendor_id: attr.vendor_id,
            device_cap_flags: attr.device_cap_flags,
            max_qp_wr: attr.max_qp_wr.max(0) as u32,
            max_cqe: attr.max_cqe.max(0) as u32,
            max_qp_rd_atom: attr.max_qp_rd_atom.clamp(0, 255) as u8,
            max_qp_init_rd_atom: attr.max_qp_init_rd_atom.clamp(0, 255) as u8,
            max_srq: attr.max_srq.max(0) as u32,
            max_srq_wr: attr.max_srq_wr.max(0) as u32,
            max_srq_sge: attr.max_srq_sge.max(0) as u32,
            max_sge: attr.max_sge.max(0) as u32,
        })
    }
}

fn check(rc: i32) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking RDMA CM event channel.
pub struct EventChannel(Arc<ChannelRaw>);

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: plain constructor call.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let Some(ch) = NonNull::new(ch) else {
            return Err(io::Error::other(format!(
                "cannot open the RDMA CM event channel ({}): is rdma_cm loaded and /dev/infiniband/rdma_cm present?",
                io::Error::last_os_error()
            )));
        };
        let channel = ChannelRaw(ch);
        // SAFETY: `ch` is a valid channel; its fd is an open file descriptor
        // of the channel, made non-blocking.
        unsafe {
            let fd = (*ch.as_ptr()).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(EventChannel(Arc::new(channel)))
    }

    /// Listens on `addr`; returns the listening id.
    pub fn listen(&self, addr: SocketAddr, backlog: i32) -> io::Result<CmId> {
        let mut raw = ptr::null_mut();
        let token = CmToken::next();
        // SAFETY: valid channel; `raw` receives a new id whose context is the
        // token (a number, never dereferenced).
        check(unsafe {
            sys::rdma_create_id(
                self.0 .0.as_ptr(),
                &mut raw,
                token_as_context(token),
                sys::rdma_port_space::RDMA_PS_TCP,
            )
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| io::Error::other("rdma_create_id gave NULL"))?;
        // Owned from here on: an error below destroys it on drop.
        let id = CmId {
            raw,
            token,
            has_qp: false,
            _channel: Arc::clone(&self.0),
        };
        let mut storage = zeroed_storage();
        fill_sockaddr(&mut storage, addr);
        // SAFETY: live id; `storage` holds a sockaddr_in or sockaddr_in6 that
        // outlives the call.
        check(unsafe {
            sys::rdma_bind_addr(
                id.raw.as_ptr(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
            )
        })?;
        // SAFETY: live, bound id.
        check(unsafe { sys::rdma_listen(id.raw.as_ptr(), backlog) })?;
        Ok(id)
    }

    /// The next event, if one is waiting (never blocks).
    pub fn next_event(&self) -> Option<CmEvent> {
        let mut ev = ptr::null_mut();
        // SAFETY: valid channel; the fd is non-blocking, so this returns at once.
        let rc = unsafe { sys::rdma_get_cm_event(self.0 .0.as_ptr(), &mut ev) };
        if rc != 0 {
            return None;
        }
        NonNull::new(ev).map(|raw| CmEvent {
            raw,
            _channel: Arc::clone(&self.0),
        })
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn fill_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
}

/// What a connect request asked for.
#[derive(Debug)]
pub struct ConnParams {
    pub private_data: Vec<u8>,
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

/// One CM event; acked when dropped.
pub struct CmEvent {
    raw: NonNull<sys::rdma_cm_event>,
    _channel: Arc<ChannelRaw>,
}

impl CmEvent {
    fn raw(&self) -> &sys::rdma_cm_event {
        // SAFETY: the event stays valid and unchanged until acked in Drop.
        unsafe { self.raw.as_ref() }
    }
    pub fn kind(&self) -> u32 {
        self.raw().event
    }
    pub fn name(&self) -> String {
        // SAFETY: rdma_event_str returns a static string for any value.
        unsafe { CStr::from_ptr(sys::rdma_event_str(self.kind())) }
            .to_string_lossy()
            .into_owned()
    }
    /// The token of the id the event is about (for a connect request: of its
    /// listener, until `into_conn_request` gives the new id its own).
    pub fn token(&self) -> CmToken {
        // SAFETY: every event names a live id; it cannot be destroyed before
        // this event is acked (rdma_destroy_id waits for that).
        token_from_context(unsafe { (*self.raw().id).context })
    }
    /// The token of the listener a connect request came to (None otherwise).
    pub fn listen_token(&self) -> Option<CmToken> {
        let listen_id = self.raw().listen_id;
        // SAFETY: non-null, a live listening id: it cannot be destroyed before
        // this event is acked.
        (!listen_id.is_null()).then(|| token_from_context(unsafe { (*listen_id).context }))
    }
    /// The device of the event's id (for DEVICE_REMOVAL: the one going away).
    pub fn device_key(&self) -> Option<DeviceKey> {
        // SAFETY: live id, as in `token`.
        let ctx = unsafe { (*self.raw().id).verbs };
        (!ctx.is_null()).then_some(DeviceKey(ctx as usize))
    }
    pub fn status(&self) -> i32 {
        self.raw().status
    }
    /// A connect request's new id, now owned by the caller, with what the host
    /// asked for; acks the event. Panics for other events.
    pub fn into_conn_request(self) -> (CmId, ConnParams) {
        assert_eq!(
            self.kind(),
            sys::rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST
        );
        // SAFETY: for connection events the `conn` member of the union is the valid one.
        let conn = unsafe { self.raw().param.conn };
        let private_data = if conn.private_data.is_null() {
            Vec::new()
        } else {
            // SAFETY: librdmacm gives private_data_len readable bytes, valid until ack.
            unsafe {
                std::slice::from_raw_parts(
                    conn.private_data.cast::<u8>(),
                    usize::from(conn.private_data_len),
                )
            }
            .to_vec()
        };
        let raw = NonNull::new(self.raw().id).expect("a connect request names its new id");
        // SAFETY: a connect request's id is new and ours to destroy; nobody
        // else knows it yet, and its events are read on this channel by the
        // caller's thread only, after this one.
        let id = unsafe { CmId::own(raw, Arc::clone(&self._channel)) };
        let params = ConnParams {
            private_data,
            responder_resources: conn.responder_resources,
            initiator_depth: conn.initiator_depth,
        };
        drop(self); // ack before the caller may destroy the id
        (id, params)
    }
}

impl Drop for CmEvent {
    fn drop(&mut self) {
        // SAFETY: acking the event we got from rdma_get_cm_event, once.
        unsafe { sys::rdma_ack_cm_event(self.raw.as_ptr()) };
    }
}

/// Makes librdmacm re-read the device list. It keeps each device's context
/// open and closes the one of a removed device only when it notices the device
/// is gone, here; until then the kernel cannot finish the removal.
pub fn refresh_devices() {
    let mut n = 0;
    // SAFETY: plain library call; the returned list is handed straight back.
    unsafe {
        let list = sys::rdma_get_devices(&mut n);
        if !list.is_null() {
            sys::rdma_free_devices(list);
        }
    }
}

/// Names of the RDMA devices present (for error messages).
pub fn device_names() -> Vec<String> {
    let mut n = 0;
    // SAFETY: ibv_get_device_list returns an array of n devices or NULL.
    let list = unsafe { sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Vec::new();
    }
    let names = (0..n.max(0) as usize)
        .map(|i| {
            // SAFETY: indexes within the returned array of n live devices;
            // names are NUL-terminated and copied out before the list is freed.
            unsafe { CStr::from_ptr(sys::ibv_get_device_name(*list.add(i))) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: freeing the list we got.
    unsafe { sys::ibv_free_device_list(list) };
    names
}

/// A protection domain of one device.
pub struct Pd(NonNull<sys::ibv_pd>);

// SAFETY: verbs objects may be used from any thread (libibverbs locks where
// it must); the poll group that owns the PD may move between threads before
// it starts.
unsafe impl Send for Pd {}

impl Pd {
    pub fn new(device: &Device<'_>) -> io::Result<Pd> {
        // SAFETY: live context (borrowed from its id).
        let pd = unsafe { sys::ibv_alloc_pd(device.ctx.as_ptr()) };
        NonNull::new(pd)
            .map(Pd)
            .ok_or_else(io::Error::last_os_error)
    }
}
impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: our PD, freed once. Its context must still be open: see
        // "Known limit" in the poll group's `Device` for removed devices. An
        // MR or QP still using it makes this fail (EBUSY) and leak, not free.
        unsafe { sys::ibv_dealloc_pd(self.0.as_ptr()) };
    }
}

/// A CQ with its own completion channel. It is polled; the channel's fd
/// only wakes a sleeping reactor in interrupt mode, after `arm`.
pub struct Cq {
    cq: NonNull<sys::ibv_cq>,
    channel: NonNull<sys::ibv_comp_channel>,
    /// A notification was requested and its event not yet taken.
    armed: bool,
}
// SAFETY: as for Pd: verbs calls are thread-safe and the owner moves it
// between threads only as a whole.
unsafe impl Send for Cq {}

impl Cq {
    pub fn new(device: &Device<'_>, entries: u32) -> io::Result<Cq> {
        let ctx = device.ctx.as_ptr();
        // SAFETY: live context (borrowed from its id).
        let channel = unsafe { sys::ibv_create_comp_channel(ctx) };
        let Some(channel) = NonNull::new(channel) else {
            return Err(io::Error::last_os_error());
        };
        // SAFETY: `channel` is live; its fd is the channel's own.
        let fd = unsafe { (*channel.as_ptr()).fd };
        // Non-blocking, so taking an event that has not come returns at once.
        // SAFETY: fcntl on a valid fd.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        };
        // SAFETY: live context and channel.
        let cq = unsafe {
            sys::ibv_create_cq(ctx, entries as i32, ptr::null_mut(), channel.as_ptr(), 0)
        };
        match NonNull::new(cq) {
            Some(cq) if rc >= 0 => Ok(Cq {
                cq,
                channel,
                armed: false,
            }),
            cq => {
                let e = io::Error::last_os_error();
                if let Some(cq) = cq {
                    // SAFETY: created above, used by nothing yet.
                    unsafe { sys::ibv_destroy_cq(cq.as_ptr()) };
                }
                // SAFETY: created above; no CQ uses it any more.
                unsafe { sys::ibv_destroy_comp_channel(channel.as_ptr()) };
                Err(e)
            }
        }
    }

    /// The completion channel's fd: readable once an armed CQ gets a completion.
    pub fn event_fd(&self) -> std::os::fd::RawFd {
        // SAFETY: the channel lives as long as self.
        unsafe { (*self.channel.as_ptr()).fd }
    }

    /// Requests one event on the channel for the next completion (a syscall
    /// on most providers: only on the way to sleep). Idempotent until the
    /// event is taken.
    pub fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        // SAFETY: live CQ.
        let rc = unsafe { sys::nvmf_ibv_req_notify_cq(self.cq.as_ptr(), 0) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        self.armed = true;
        Ok(())
    }

    /// Takes and acknowledges the channel's event, if it came; the CQ must
    /// then be armed again. Every event taken is acknowledged at once, so
    /// destroying the CQ never waits.
    pub fn take_event(&mut self) {
        if !self.armed {
            return;
        }
        let mut cq = ptr::null_mut();
        let mut cq_context = ptr::null_mut();
        // SAFETY: live channel (non-blocking); out-pointers are live locals.
        let rc = unsafe { sys::ibv_get_cq_event(self.channel.as_ptr(), &mut cq, &mut cq_context) };
        if rc == 0 {
            debug_assert_eq!(cq, self.cq.as_ptr(), "one CQ per channel");
            // SAFETY: `cq` is ours and the event was just taken.
            unsafe { sys::ibv_ack_cq_events(cq, 1) };
            self.armed = false;
        }
    }

    /// Polls up to `wcs.len()` completions.
    pub fn poll(&self, wcs: &mut [sys::ibv_wc]) -> usize {
        let max = wcs.len().min(i32::MAX as usize) as i32;
        // SAFETY: live CQ; `wcs` is writable for `max` entries.
        let n = unsafe { sys::nvmf_ibv_poll_cq(self.cq.as_ptr(), max, wcs.as_mut_ptr()) };
        n.max(0) as usize
    }
}
impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: every QP and SRQ using the CQ was destroyed first, and
        // every event taken was acknowledged; the channel outlives the CQ.
        unsafe {
            sys::ibv_destroy_cq(self.cq.as_ptr());
            sys::ibv_destroy_comp_channel(self.channel.as_ptr());
        }
    }
}

/// A shared receive queue of a PD.
pub struct Srq(NonNull<sys::ibv_srq>);

// SAFETY: as for Pd.
unsafe impl Send for Srq {}

impl Srq {
    pub fn new(pd: &Pd, max_wr: u32, max_sge: u32) -> io::Result<Srq> {
        let mut attr = sys::ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: sys::ibv_srq_attr {
                max_wr,
                max_sge,
                srq_limit: 0,
            },
        };
        // SAFETY: live PD; attr outlives the call.
        let srq = unsafe { sys::ibv_create_srq(pd.0.as_ptr(), &mut attr) };
        NonNull::new(srq)
            .map(Srq)
            .ok_or_else(io::Error::last_os_error)
    }

    /// Links `wrs` into one chain and posts it to the SRQ with one call.
    ///
    /// # Safety
    /// As for [`CmId::post_recv_chain`], with this SRQ's PD.
    pub unsafe fn post_recv_chain(&self, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        let Some(&first) = wrs.first() else {
            return Ok(());
        };
        // SAFETY: live WRs nothing else touches, per the contract.
        unsafe { link_recv_chain(wrs) };
        let srq = self.0.as_ptr();
        let mut bad = ptr::null_mut();
        // SAFETY: live SRQ, so its context is live. ibv_post_srq_recv is a
        // static inline in verbs.h that does exactly this call through the
        // context's ops table (the C shim has no wrapper for it). The chain
        // and its memory are valid per the contract.
        let rc = unsafe {
            match (*(*srq).context).ops.post_srq_recv {
                Some(post) => post(srq, first, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        };
        chain_result(rc, wrs, bad)
    }
}
impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: our SRQ, freed once. A QP still using it makes this fail
        // (EBUSY) and leak; receives still posted on it are discarded.
        unsafe { sys::ibv_destroy_srq(self.0.as_ptr()) };
    }
}

/// A memory region registered for local access only (no remote key is ever
/// handed out, so only our own posted work requests reach it).
pub struct Mr(NonNull<sys::ibv_mr>);

// SAFETY: as for Pd.
unsafe impl Send for Mr {}

impl Mr {
    /// Registers `len` bytes at `addr` for local writes (RDMA READ lands there)
    /// and local reads (RDMA WRITE and SEND come from there). Registering only
    /// pins the pages and gives a key; the NIC touches them only through work
    /// requests, whose posting is `unsafe`. A range that is not mapped makes
    /// the kernel refuse the registration.
    pub fn register(pd: &Pd, addr: *mut u8, len: usize) -> io::Result<Mr> {
        let access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE as i32;
        // SAFETY: live PD; the kernel checks and pins the range itself.
        let mr = unsafe { sys::nvmf_ibv_reg_mr(pd.0.as_ptr(), addr.cast(), len, access) };
        NonNull::new(mr)
            .map(Mr)
            .ok_or_else(io::Error::last_os_error)
    }
    pub fn lkey(&self) -> u32 {
        // SAFETY: live MR; reading a field set at registration.
        unsafe { (*self.0.as_ptr()).lkey }
    }
}
impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: our MR, deregistered once. Work requests still naming it
        // fail with a protection error rather than touch the memory.
        unsafe { sys::ibv_dereg_mr(self.0.as_ptr()) };
    }
}

/// Points each receive work request of `wrs` (non-empty) at the next one.
///
/// # Safety
/// Every pointer in `wrs` points to a live `ibv_recv_wr` nothing else
/// accesses during the call.
unsafe fn link_recv_chain(wrs: &[*mut sys::ibv_recv_wr]) {
    for pair in wrs.windows(2) {
        // SAFETY: live, unshared WRs per the contract.
        unsafe { (*pair[0]).next = pair[1] };
    }
    // SAFETY: as above.
    unsafe { (**wrs.last().expect("non-empty")).next = ptr::null_mut() };
}

/// rdma-core's verbs, for the production poll group.
pub struct RdmaCore;

impl Verbs for RdmaCore {
    type Conn = CmId;
    type Pd = Pd;
    type Cq = Cq;
    type Srq = Srq;
    type Mr = Mr;

    fn alloc_pd(conn: &CmId) -> io::Result<Pd> {
        Pd::new(&conn.device().ok_or_else(unbound)?)
    }

    fn create_cq(conn: &CmId, entries: u32) -> io::Result<Cq> {
        Cq::new(&conn.device().ok_or_else(unbound)?, entries)
    }

    fn create_srq(pd: &Pd, max_wr: u32, max_sge: u32) -> io::Result<Srq> {
        Srq::new(pd, max_wr, max_sge)
    }

    fn register(pd: &Pd, addr: *mut u8, len: usize) -> io::Result<Mr> {
        Mr::register(pd, addr, len)
    }

    unsafe fn post_srq_recv(srq: &Srq, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        // SAFETY: the caller keeps the contract of `Srq::post_recv_chain`.
        unsafe { srq.post_recv_chain(wrs) }
    }
}

fn unbound() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the CM id has no RDMA device")
}

impl Connection for CmId {
    type Verbs = RdmaCore;

    fn token(&self) -> CmToken {
        self.token
    }

    fn device_key(&self) -> Option<DeviceKey> {
        self.device().map(|d| d.key())
    }

    fn device_name(&self) -> String {
        self.device().map(|d| d.name()).unwrap_or_default()
    }

    fn query_device(&self) -> io::Result<DeviceLimits> {
        self.device().ok_or_else(unbound)?.query()
    }

    fn accept(
        &self,
        private_data: &[u8],
        responder_resources: u8,
        initiator_depth: u8,
    ) -> io::Result<()> {
        CmId::accept(self, private_data, responder_resources, initiator_depth)
    }

    fn reject(&self, private_data: &[u8]) {
        CmId::reject(self, private_data)
    }

    fn disconnect(&self) {
        CmId::disconnect(self)
    }

    fn create_qp(&mut self, pd: &Pd, cq: &Cq, srq: Option<&Srq>, spec: &QpSpec) -> io::Result<u32> {
        CmId::create_qp(self, pd, cq, srq, spec)
    }

    fn qp_num(&self) -> u32 {
        CmId::qp_num(self)
    }

    fn destroy_qp(&mut self) {
        CmId::destroy_qp(self)
    }

    unsafe fn post_send(&self, wrs: &[*mut sys::ibv_send_wr]) -> Result<(), PostError> {
        // SAFETY: the trait's contract is `post_send_chain`'s.
        unsafe { self.post_send_chain(wrs) }
    }

    unsafe fn post_recv(&self, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        // SAFETY: the trait's contract is `post_recv_chain`'s.
        unsafe { self.post_recv_chain(wrs) }
    }
}

impl CompletionQueue for Cq {
    fn event_fd(&self) -> std::os::fd::RawFd {
        Cq::event_fd(self)
    }

    fn arm(&mut self) -> io::Result<()> {
        Cq::arm(self)
    }

    fn take_event(&mut self) {
        Cq::take_event(self)
    }

    fn poll(&self, wcs: &mut [sys::ibv_wc]) -> usize {
        Cq::poll(self, wcs)
    }
}

impl MemoryRegion for Mr {
    fn lkey(&self) -> u32 {
        Mr::lkey(self)
    }
}
