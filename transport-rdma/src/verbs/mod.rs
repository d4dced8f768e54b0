//! The verbs layer: what a poll group needs of an RDMA device, as traits
//! (`Verbs`, `Connection`, `CompletionQueue`, `MemoryRegion`), as `Mmio` is
//! for the NVMe driver.
//!
//! - `rdma_core`: the production implementation over rdma-core (the FFI
//!   module; every `unsafe` call into rdma-core is there).
//! - `fake` (tests, and the `testing` feature for benchmarks): a simulated
//!   NIC that executes posted work requests against a host memory of its
//!   own, so the whole poll group runs without a device.
//!
//! Posting work requests is `unsafe` in both: the caller vouches for the
//! memory the NIC reads and writes until the work request completes.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod rdma_core;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use rdma_sys as sys;

pub use rdma_core::{device_names, refresh_devices, CmEvent, CmId, EventChannel, RdmaCore};

/// What a queue pair needs.
#[derive(Clone, Copy, Debug)]
pub struct QpSpec {
    pub send_wr: u32,
    pub recv_wr: u32,
    /// SGEs per send work request (RDMA READ and WRITE of chained buffers).
    pub send_sge: u32,
    /// SGEs per receive work request.
    pub recv_sge: u32,
    /// Inline data wanted per send work request.
    pub inline_bytes: u32,
}

/// Names one connection for the life of the process: never reused (unlike a
/// heap address), so a late notice cannot hit a newer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmToken(u64);

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

impl CmToken {
    pub(crate) fn next() -> CmToken {
        CmToken(NEXT_TOKEN.fetch_add(1, Ordering::Relaxed))
    }
}

/// Identity of an open device context, to match a DEVICE_REMOVAL event to
/// the devices a poll group uses. Never dereferenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceKey(usize);

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
    /// SGEs a send or receive work request may carry.
    pub max_sge: u32,
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

/// The verbs objects of one kind of device. Device-level objects are made
/// through the connection bound to the device (that is how RDMA CM hands out
/// a device); each is freed when dropped.
///
/// The PD, CQ and SRQ must outlive the QPs that use them, and a PD its MRs:
/// owners keep them in that drop order.
pub trait Verbs: 'static {
    /// A connection's CM id, owning its QP once it has one.
    type Conn: Connection<Verbs = Self>;
    type Pd;
    type Cq: CompletionQueue;
    type Srq;
    type Mr: MemoryRegion;

    /// A protection domain on the device `conn` is bound to.
    fn alloc_pd(conn: &Self::Conn) -> io::Result<Self::Pd>;
    /// A CQ of `entries` on the device `conn` is bound to.
    fn create_cq(conn: &Self::Conn, entries: u32) -> io::Result<Self::Cq>;
    fn create_srq(pd: &Self::Pd, max_wr: u32, max_sge: u32) -> io::Result<Self::Srq>;
    /// Registers `len` bytes at `addr` for local access (never remote). The
    /// memory is not touched here; only work requests posted later reach it.
    fn register(pd: &Self::Pd, addr: *mut u8, len: usize) -> io::Result<Self::Mr>;

    /// Links `wrs` into one chain and posts it to `srq` with one call.
    ///
    /// # Safety
    /// As for [`Connection::post_recv`], with the SRQ's PD.
    unsafe fn post_srq_recv(
        srq: &Self::Srq,
        wrs: &[*mut sys::ibv_recv_wr],
    ) -> Result<(), PostError>;
}

/// A connection (RDMA CM id) and its QP.
pub trait Connection {
    type Verbs: Verbs;

    fn token(&self) -> CmToken;
    /// The device the connection is bound to; None when unbound.
    fn device_key(&self) -> Option<DeviceKey>;
    /// The device's name, for logs (empty when unbound).
    fn device_name(&self) -> String;
    fn query_device(&self) -> io::Result<DeviceLimits>;
    fn accept(
        &self,
        private_data: &[u8],
        responder_resources: u8,
        initiator_depth: u8,
    ) -> io::Result<()>;
    fn reject(&self, private_data: &[u8]);
    /// Moves the QP to the error state: its posted work requests flush.
    fn disconnect(&self);
    /// Creates an RC QP on `pd` with one CQ for both directions and, given
    /// one, a shared receive queue. Returns the inline bytes granted.
    fn create_qp(
        &mut self,
        pd: &<Self::Verbs as Verbs>::Pd,
        cq: &<Self::Verbs as Verbs>::Cq,
        srq: Option<&<Self::Verbs as Verbs>::Srq>,
        spec: &QpSpec,
    ) -> io::Result<u32>;
    /// The QP's number (what a work completion names). Panics without a QP.
    fn qp_num(&self) -> u32;
    /// Destroys the QP, if any: the NIC no longer touches what its work
    /// requests named.
    fn destroy_qp(&mut self);

    /// Links `wrs` into one chain (in order) and posts it with one call.
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
    unsafe fn post_send(&self, wrs: &[*mut sys::ibv_send_wr]) -> Result<(), PostError>;

    /// Links `wrs` into one chain and posts it to the QP's own receive queue.
    ///
    /// # Safety
    /// - Every pointer in `wrs` points to a live `ibv_recv_wr` that nothing
    ///   else reads or writes during the call.
    /// - Each WR's `sg_list` points to `num_sge` live SGEs naming memory inside
    ///   an MR of this QP's PD.
    /// - Until the receive completes or is flushed (or the QP is destroyed),
    ///   that memory stays allocated and nothing else reads or writes it (the
    ///   NIC writes it).
    unsafe fn post_recv(&self, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError>;
}

/// A completion queue with a wake-up fd for interrupt mode.
pub trait CompletionQueue {
    /// Readable once an armed CQ gets a completion.
    fn event_fd(&self) -> std::os::fd::RawFd;
    /// Requests one event for the next completion; idempotent until taken.
    fn arm(&mut self) -> io::Result<()>;
    /// Takes and acknowledges the event, if it came.
    fn take_event(&mut self);
    /// Polls up to `wcs.len()` completions.
    fn poll(&self, wcs: &mut [sys::ibv_wc]) -> usize;
}

pub trait MemoryRegion {
    fn lkey(&self) -> u32;
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

/// The wr_id of a send work request (to settle unposted ones).
///
/// # Safety
/// `wr` points to a live `ibv_send_wr` that nothing writes during the call.
pub unsafe fn send_wr_id(wr: *const sys::ibv_send_wr) -> u64 {
    // SAFETY: per the contract.
    unsafe { (*wr).wr_id }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

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
