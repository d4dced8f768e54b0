//! Thin safe-ish wrappers over rdma-core. Every `unsafe` block of the RDMA
//! transport lives in this file (the FFI module), each with a SAFETY note.
//! Handles are raw pointers owned by their wrapper and freed on Drop.

use std::ffi::CStr;
use std::io;
use std::net::SocketAddr;
use std::ptr;

use rdma_sys as sys;

/// What a queue pair needs.
#[derive(Clone, Copy, Debug)]
pub struct QpSpec {
    pub send_wr: u32,
    pub recv_wr: u32,
    /// SGEs per receive work request.
    pub recv_sge: u32,
    /// Inline data wanted per send work request.
    pub inline_bytes: u32,
    /// The shared receive queue the QP takes its receives from, or null for
    /// a receive queue of its own (`recv_wr`, `recv_sge`).
    pub srq: *mut sys::ibv_srq,
}

/// A created queue pair and what the device granted.
#[derive(Clone, Copy, Debug)]
pub struct Qp {
    pub qp: *mut sys::ibv_qp,
    /// Bytes a send work request may carry inline (may exceed what was asked).
    pub max_inline_bytes: u32,
}

/// A CM id pointer that may move between threads (rdma_cm ids are
/// thread-safe objects; ownership is tracked by whoever holds this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmId(pub *mut sys::rdma_cm_id);
// SAFETY: rdma_cm ids may be used from any thread; the transport hands each
// id to exactly one owner (acceptor, then one poll group) at a time.
unsafe impl Send for CmId {}

impl CmId {
    pub fn addr(self) -> usize {
        self.0 as usize
    }

    /// The verbs context of the device the id is bound to.
    pub fn context(self) -> *mut sys::ibv_context {
        // SAFETY: the id is live (owned by the caller); reading a field.
        unsafe { (*self.0).verbs }
    }

    pub fn accept(
        self,
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
        check(unsafe { sys::rdma_accept(self.0, &mut param) })
    }

    pub fn reject(self, private_data: &[u8]) {
        // SAFETY: live id; the private data outlives the call.
        unsafe {
            sys::rdma_reject(
                self.0,
                private_data.as_ptr().cast(),
                private_data.len() as u8,
            )
        };
    }

    pub fn disconnect(self) {
        // SAFETY: live id. Moves its QP to the error state; an error return
        // (already disconnected) is harmless.
        unsafe { sys::rdma_disconnect(self.0) };
    }

    /// Creates an RC queue pair on the id using `pd` and one CQ for both
    /// directions. Inline data is asked for as `spec.inline_bytes`; a device
    /// that refuses a QP with inline data gets a second request without.
    pub fn create_qp(
        self,
        pd: *mut sys::ibv_pd,
        cq: *mut sys::ibv_cq,
        spec: &QpSpec,
    ) -> io::Result<Qp> {
        match self.create_qp_once(pd, cq, spec, spec.inline_bytes) {
            Err(e) if spec.inline_bytes > 0 => {
                log::debug!(
                    "QP with {} bytes of inline data refused ({e}); asking for none",
                    spec.inline_bytes
                );
                self.create_qp_once(pd, cq, spec, 0)
            }
            r => r,
        }
    }

    fn create_qp_once(
        self,
        pd: *mut sys::ibv_pd,
        cq: *mut sys::ibv_cq,
        spec: &QpSpec,
        inline_bytes: u32,
    ) -> io::Result<Qp> {
        let own_rq = spec.srq.is_null();
        let mut attr = sys::ibv_qp_init_attr {
            send_cq: cq,
            recv_cq: cq,
            srq: spec.srq,
            cap: sys::ibv_qp_cap {
                max_send_wr: spec.send_wr,
                max_recv_wr: if own_rq { spec.recv_wr } else { 0 },
                max_send_sge: 1,
                max_recv_sge: if own_rq { spec.recv_sge } else { 0 },
                max_inline_data: inline_bytes,
            },
            qp_type: sys::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
            ..Default::default()
        };
        // SAFETY: live id, live PD and CQ of the id's device; attr outlives the
        // call. On success librdmacm copies the granted capabilities back into it.
        check(unsafe { sys::rdma_create_qp(self.0, pd, &mut attr) })?;
        Ok(Qp {
            // SAFETY: rdma_create_qp succeeded, so id->qp is set.
            qp: unsafe { (*self.0).qp },
            max_inline_bytes: attr.cap.max_inline_data,
        })
    }

    /// Destroys the id's QP (nothing posted to it may still be in flight).
    pub fn destroy_qp(self) {
        // SAFETY: live id with a QP whose work requests are all gone or flushed.
        unsafe { sys::rdma_destroy_qp(self.0) };
    }

    /// Destroys the QP (if any) and the id itself.
    pub fn destroy(self, with_qp: bool) {
        // SAFETY: the caller owns the id and every event of it was acked; the
        // QP has no posted work left (flushed), so destroying it is safe.
        unsafe {
            if with_qp {
                sys::rdma_destroy_qp(self.0);
            }
            sys::rdma_destroy_id(self.0);
        }
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
pub struct EventChannel(*mut sys::rdma_event_channel);
// SAFETY: the channel is only read by the acceptor (one reactor at a time);
// creating ids on it from another thread is allowed by librdmacm.
unsafe impl Send for EventChannel {}
unsafe impl Sync for EventChannel {}

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: plain constructor call.
        let ch = unsafe { sys::rdma_create_event_channel() };
        if ch.is_null() {
            return Err(io::Error::other(format!(
                "cannot open the RDMA CM event channel ({}): is rdma_cm loaded and /dev/infiniband/rdma_cm present?",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: `ch` is a valid channel; its fd is an open file descriptor.
        unsafe {
            let fd = (*ch).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(EventChannel(ch))
    }

    /// Listens on `addr`; returns the listening id.
    pub fn listen(&self, addr: SocketAddr, backlog: i32) -> io::Result<CmId> {
        let mut id = ptr::null_mut();
        // SAFETY: valid channel; `id` receives a new id.
        check(unsafe {
            sys::rdma_create_id(
                self.0,
                &mut id,
                ptr::null_mut(),
                sys::rdma_port_space::RDMA_PS_TCP,
            )
        })?;
        let mut storage: libc::sockaddr_storage = unsafe_zeroed_storage();
        fill_sockaddr(&mut storage, addr);
        // SAFETY: `storage` holds a sockaddr_in or sockaddr_in6 that outlives the call.
        let bound = check(unsafe {
            sys::rdma_bind_addr(id, (&mut storage as *mut libc::sockaddr_storage).cast())
        })
        .and_then(|_| check(unsafe { sys::rdma_listen(id, backlog) }));
        if let Err(e) = bound {
            // SAFETY: the id was created above and has no QP or events.
            unsafe { sys::rdma_destroy_id(id) };
            return Err(e);
        }
        Ok(CmId(id))
    }

    /// The next event, if one is waiting (never blocks).
    pub fn next_event(&self) -> Option<CmEvent> {
        let mut ev = ptr::null_mut();
        // SAFETY: valid channel; the fd is non-blocking, so this returns at once.
        let rc = unsafe { sys::rdma_get_cm_event(self.0, &mut ev) };
        if rc != 0 || ev.is_null() {
            return None;
        }
        Some(CmEvent(ev))
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: all ids of the channel were destroyed by their owners.
        unsafe { sys::rdma_destroy_event_channel(self.0) };
    }
}

fn unsafe_zeroed_storage() -> libc::sockaddr_storage {
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

/// One CM event; acked when dropped.
pub struct CmEvent(*mut sys::rdma_cm_event);

impl CmEvent {
    fn raw(&self) -> &sys::rdma_cm_event {
        // SAFETY: the event stays valid until acked in Drop.
        unsafe { &*self.0 }
    }
    pub fn kind(&self) -> u32 {
        self.raw().event
    }
    pub fn name(&self) -> String {
        // SAFETY: rdma_event_str returns a static string.
        unsafe { CStr::from_ptr(sys::rdma_event_str(self.kind())) }
            .to_string_lossy()
            .into_owned()
    }
    pub fn id(&self) -> CmId {
        CmId(self.raw().id)
    }
    pub fn listen_id(&self) -> CmId {
        CmId(self.raw().listen_id)
    }
    pub fn status(&self) -> i32 {
        self.raw().status
    }
    /// Connection parameters of a connect request.
    pub fn conn(&self) -> (Vec<u8>, u8, u8) {
        // SAFETY: for connection events the `conn` member of the union is the valid one.
        let conn = unsafe { self.raw().param.conn };
        let data = if conn.private_data.is_null() {
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
        (data, conn.responder_resources, conn.initiator_depth)
    }
}

impl Drop for CmEvent {
    fn drop(&mut self) {
        // SAFETY: acking the event we got from rdma_get_cm_event, once.
        unsafe { sys::rdma_ack_cm_event(self.0) };
    }
}

/// Device limits the transport needs.
#[derive(Clone, Copy, Debug)]
pub struct DeviceLimits {
    pub vendor_id: u32,
    /// IBV_DEVICE_* capability flags.
    pub device_cap_flags: u32,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    /// Shared receive queues the device supports (0: none).
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_srq_sge: u32,
}

pub fn query_device(ctx: *mut sys::ibv_context) -> io::Result<DeviceLimits> {
    let mut attr = sys::ibv_device_attr::default();
    // SAFETY: `ctx` is a live device context (from a CM id); attr is writable.
    check(unsafe { sys::ibv_query_device(ctx, &mut attr) })?;
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
    })
}

/// The name of the device behind a context, for logs.
pub fn device_name(ctx: *mut sys::ibv_context) -> String {
    // SAFETY: live context; its device name is a NUL-terminated static buffer.
    unsafe { CStr::from_ptr(sys::ibv_get_device_name((*ctx).device)) }
        .to_string_lossy()
        .into_owned()
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
        // SAFETY: indexes within the returned array; names are NUL-terminated.
        .map(|i| {
            unsafe { CStr::from_ptr(sys::ibv_get_device_name(*list.add(i))) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: freeing the list we got.
    unsafe { sys::ibv_free_device_list(list) };
    names
}

/// A protection domain, a CQ and memory regions of one device.
pub struct Pd(pub *mut sys::ibv_pd);
impl Pd {
    pub fn new(ctx: *mut sys::ibv_context) -> io::Result<Pd> {
        // SAFETY: live context.
        let pd = unsafe { sys::ibv_alloc_pd(ctx) };
        if pd.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Pd(pd))
    }
}
impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: every MR and QP of the PD is gone (they drop first).
        unsafe { sys::ibv_dealloc_pd(self.0) };
    }
}

/// A CQ with its own completion channel. It is polled; the channel's fd
/// only wakes a sleeping reactor in interrupt mode, after `arm`.
pub struct Cq {
    cq: *mut sys::ibv_cq,
    channel: *mut sys::ibv_comp_channel,
    /// A notification was requested and its event not yet taken.
    armed: bool,
}
impl Cq {
    pub fn new(ctx: *mut sys::ibv_context, entries: u32) -> io::Result<Cq> {
        // SAFETY: live context.
        let channel = unsafe { sys::ibv_create_comp_channel(ctx) };
        if channel.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `channel` is live; its fd is the channel's own.
        let fd = unsafe { (*channel).fd };
        // Non-blocking, so taking an event that has not come returns at once.
        // SAFETY: fcntl on a valid fd.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        };
        // SAFETY: live context and channel.
        let cq = unsafe { sys::ibv_create_cq(ctx, entries as i32, ptr::null_mut(), channel, 0) };
        if rc < 0 || cq.is_null() {
            let e = io::Error::last_os_error();
            if !cq.is_null() {
                // SAFETY: created above, used by nothing yet.
                unsafe { sys::ibv_destroy_cq(cq) };
            }
            // SAFETY: created above; no CQ uses it any more.
            unsafe { sys::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        Ok(Cq {
            cq,
            channel,
            armed: false,
        })
    }

    pub fn as_ptr(&self) -> *mut sys::ibv_cq {
        self.cq
    }

    /// The completion channel's fd: readable once an armed CQ gets a completion.
    pub fn event_fd(&self) -> std::os::fd::RawFd {
        // SAFETY: the channel lives as long as self.
        unsafe { (*self.channel).fd }
    }

    /// Requests one event on the channel for the next completion (a syscall
    /// on most providers: only on the way to sleep). Idempotent until the
    /// event is taken.
    pub fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        // SAFETY: live CQ.
        let rc = unsafe { sys::nvmf_ibv_req_notify_cq(self.cq, 0) };
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
        let rc = unsafe { sys::ibv_get_cq_event(self.channel, &mut cq, &mut cq_context) };
        if rc == 0 {
            debug_assert_eq!(cq, self.cq, "one CQ per channel");
            // SAFETY: `cq` is ours and the event was just taken.
            unsafe { sys::ibv_ack_cq_events(cq, 1) };
            self.armed = false;
        }
    }

    /// Polls up to `wcs.len()` completions.
    pub fn poll(&self, wcs: &mut [sys::ibv_wc]) -> usize {
        // SAFETY: live CQ; `wcs` is writable for its length.
        let n = unsafe { sys::nvmf_ibv_poll_cq(self.cq, wcs.len() as i32, wcs.as_mut_ptr()) };
        n.max(0) as usize
    }
}
impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: every QP and SRQ using the CQ was destroyed first, and
        // every event taken was acknowledged; the channel outlives the CQ.
        unsafe {
            sys::ibv_destroy_cq(self.cq);
            sys::ibv_destroy_comp_channel(self.channel);
        }
    }
}

/// A shared receive queue of a PD.
pub struct Srq(pub *mut sys::ibv_srq);
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
        let srq = unsafe { sys::ibv_create_srq(pd.0, &mut attr) };
        if srq.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Srq(srq))
    }
}
impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: every QP using the SRQ was destroyed first (queues go before
        // their device); receives still posted on it are simply discarded.
        unsafe { sys::ibv_destroy_srq(self.0) };
    }
}

/// The number the device gives a QP (what a work completion's qp_num names).
pub fn qp_num(qp: *mut sys::ibv_qp) -> u32 {
    // SAFETY: a live QP; reading a field set at creation.
    unsafe { (*qp).qp_num }
}

pub struct Mr(*mut sys::ibv_mr);
impl Mr {
    /// Registers `len` bytes at `addr` for local writes (RDMA READ lands there)
    /// and local reads (RDMA WRITE and SEND come from there).
    pub fn register(pd: &Pd, addr: *mut u8, len: usize) -> io::Result<Mr> {
        let access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE as i32;
        // SAFETY: live PD; the memory stays mapped while the MR lives (the
        // owner keeps the region alive longer than the MR).
        let mr = unsafe { sys::nvmf_ibv_reg_mr(pd.0, addr.cast(), len, access) };
        if mr.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Mr(mr))
    }
    pub fn lkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.0).lkey }
    }
}
impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: no posted work request uses the MR any more.
        unsafe { sys::ibv_dereg_mr(self.0) };
    }
}

/// A chain post that stopped at `wrs[posted]`: the ones before it were
/// posted (and will complete), the rest were not.
#[derive(Debug)]
pub struct PostError {
    pub posted: usize,
    pub error: io::Error,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (after {} work requests)", self.error, self.posted)
    }
}

/// The outcome of a post of `wrs` that returned `rc` and named `bad`.
fn chain_result<T>(rc: i32, wrs: &[*mut T], bad: *mut T) -> Result<(), PostError> {
    if rc == 0 {
        return Ok(());
    }
    Err(PostError {
        // Providers name the first WR they did not take; none named: none taken.
        posted: wrs.iter().position(|&w| w == bad).unwrap_or(0),
        error: io::Error::from_raw_os_error(rc.abs()),
    })
}

/// Links `wrs` into one chain (in order) and posts it to a QP with one call.
pub fn post_send_chain(
    qp: *mut sys::ibv_qp,
    wrs: &[*mut sys::ibv_send_wr],
) -> Result<(), PostError> {
    let Some(&first) = wrs.first() else {
        return Ok(());
    };
    for pair in wrs.windows(2) {
        // SAFETY: each pointer is a work request in a live request slot of
        // this queue; the slots do not move while the queue exists.
        unsafe { (*pair[0]).next = pair[1] };
    }
    // SAFETY: as above; the last one ends the chain.
    unsafe { (**wrs.last().expect("non-empty")).next = ptr::null_mut() };
    let mut bad = ptr::null_mut();
    // SAFETY: live QP; the chain and its SGEs live in the queue's request slots,
    // which stay in place until the work completes.
    let rc = unsafe { sys::nvmf_ibv_post_send(qp, first, &mut bad) };
    chain_result(rc, wrs, bad)
}

/// Links `wrs` into one chain and posts it to a QP's receive queue with one call.
pub fn post_recv_chain(
    qp: *mut sys::ibv_qp,
    wrs: &[*mut sys::ibv_recv_wr],
) -> Result<(), PostError> {
    let Some(&first) = wrs.first() else {
        return Ok(());
    };
    link_recv_chain(wrs);
    let mut bad = ptr::null_mut();
    // SAFETY: live QP; the chain lives in the queue's receive table.
    let rc = unsafe { sys::nvmf_ibv_post_recv(qp, first, &mut bad) };
    chain_result(rc, wrs, bad)
}

/// Links `wrs` into one chain and posts it to a shared receive queue with one call.
pub fn post_srq_recv_chain(
    srq: *mut sys::ibv_srq,
    wrs: &[*mut sys::ibv_recv_wr],
) -> Result<(), PostError> {
    let Some(&first) = wrs.first() else {
        return Ok(());
    };
    link_recv_chain(wrs);
    let mut bad = ptr::null_mut();
    // SAFETY: live SRQ, so its context is live. ibv_post_srq_recv is a static
    // inline in verbs.h that does exactly this call through the context's ops
    // table (the C shim has no wrapper for it). The chain lives in the
    // device's receive table, which stays in place while the SRQ exists.
    let rc = unsafe {
        match (*(*srq).context).ops.post_srq_recv {
            Some(post) => post(srq, first, &mut bad),
            None => libc::EOPNOTSUPP,
        }
    };
    chain_result(rc, wrs, bad)
}

/// Points each receive work request of `wrs` (non-empty) at the next one.
fn link_recv_chain(wrs: &[*mut sys::ibv_recv_wr]) {
    for pair in wrs.windows(2) {
        // SAFETY: receive work requests of a live receive table (a queue's or
        // a device's), which does not move while it exists.
        unsafe { (*pair[0]).next = pair[1] };
    }
    // SAFETY: as above.
    unsafe { (**wrs.last().expect("non-empty")).next = ptr::null_mut() };
}

/// The wr_id of a send work request (to identify unposted ones).
pub fn send_wr_id(wr: *mut sys::ibv_send_wr) -> u64 {
    // SAFETY: a work request in a live request slot.
    unsafe { (*wr).wr_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_post_counts_what_went_before_the_bad_wr() {
        let mut wrs = [sys::ibv_recv_wr::default(), sys::ibv_recv_wr::default()];
        let ptrs: Vec<*mut sys::ibv_recv_wr> = wrs.iter_mut().map(|w| w as *mut _).collect();
        assert!(chain_result(0, &ptrs, ptr::null_mut()).is_ok());
        let e = chain_result(libc::ENOMEM, &ptrs, ptrs[1]).unwrap_err();
        assert_eq!(e.posted, 1);
        assert_eq!(e.error.raw_os_error(), Some(libc::ENOMEM));
        let e = chain_result(-libc::EINVAL, &ptrs, ptr::null_mut()).unwrap_err();
        assert_eq!((e.posted, e.error.raw_os_error()), (0, Some(libc::EINVAL)));
        assert!(e.to_string().contains("after 0 work requests"), "{e}");
    }
}
