//! A simulated RDMA NIC, for unit tests and benchmarks of the poll group.
//!
//! It keeps what a real RC queue pair keeps: posted receives (per QP or per
//! SRQ), posted send work requests in order, one CQ per device, and the
//! host's memory (reached with `HOST_RKEY` at `HOST_BASE`). The host side is
//! driven by the test: `send_capsule` lands a command in the next posted
//! receive; `run` executes queued work requests in order (RDMA READ copies
//! host memory into the target's buffer, RDMA WRITE the other way, SEND
//! hands the host its response) and flushes QPs in the error state.
//!
//! Like a NIC, it checks every SGE against the registered memory regions
//! (lkey and bounds) and answers a violation with a protection error instead
//! of touching memory, so a test also checks the poll group's memory
//! contract. Its own queues are sized up front: nothing allocates per work
//! request once the queues exist.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use rdma_sys as sys;
use sys::ibv_wc_status as wc_status;
use sys::ibv_wr_opcode as wr_op;

use super::{
    CmToken, CompletionQueue, Connection, DeviceKey, DeviceLimits, MemoryRegion, PostError, QpSpec,
    Verbs,
};

/// The rkey of the host's memory.
pub const HOST_RKEY: u32 = 0x5eed;
/// The address at which the host's memory starts (never 0, so a zero address is caught).
pub const HOST_BASE: u64 = 0x7f00_0000_0000;
/// SGEs a send work request may carry.
const MAX_SEND_SGE: usize = 16;
/// Bytes of a response capsule (an NVMe completion).
pub const RESPONSE_BYTES: usize = 16;

/// The fake's verbs objects.
pub struct FakeVerbs;

/// The simulated NIC: one device. Cloned handles share it.
#[derive(Clone)]
pub struct FakeNic(Arc<Mutex<Nic>>);

/// A host-side view of one QP: what the host sends on it and what it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostQp(usize);

impl HostQp {
    /// Which connection of the NIC this is, from 0 in connect order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Why the host could not send a capsule.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The QP is not connected (not accepted yet, in error, or destroyed).
    NotConnected,
    /// No receive is posted (a real host would retry: receiver not ready).
    NoReceive,
}

/// Counters of what the NIC was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    /// `post_send` calls (doorbells) and the work requests they carried.
    pub send_posts: u64,
    pub send_wrs: u64,
    /// `post_recv` and SRQ post calls and their receives.
    pub recv_posts: u64,
    pub recv_wrs: u64,
    pub rdma_reads: u64,
    pub rdma_writes: u64,
    /// Responses that invalidated the host's key.
    pub invalidations: u64,
}

#[derive(Clone, Copy)]
struct PostedRecv {
    wr_id: u64,
    sges: [sys::ibv_sge; 2],
    num_sge: usize,
}

#[derive(Clone, Copy)]
struct PostedSend {
    wr_id: u64,
    opcode: u32,
    signaled: bool,
    sges: [sys::ibv_sge; MAX_SEND_SGE],
    num_sge: usize,
    remote_addr: u64,
    rkey: u32,
    /// A SEND's payload, taken at post time when inline.
    inline: Option<[u8; RESPONSE_BYTES]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QpLife {
    /// Created by `connect`, no QP yet.
    Unborn,
    /// QP created, not accepted.
    Init,
    Connected,
    /// Its work requests flush (with completions) at the next `run`.
    Error,
    Destroyed,
}

struct Qp {
    life: QpLife,
    qp_num: u32,
    cq: usize,
    srq: Option<usize>,
    max_send_wr: usize,
    max_recv_wr: usize,
    max_inline: u32,
    max_send_sge: usize,
    recvs: VecDeque<PostedRecv>,
    sends: VecDeque<PostedSend>,
    /// What the host received (response capsules), oldest first.
    responses: VecDeque<[u8; RESPONSE_BYTES]>,
    /// The next executed work request fails with this status (fault injection).
    fail_next: Option<u32>,
    /// In `Nic::to_run`.
    listed: bool,
}

struct CqState {
    live: bool,
    wcs: VecDeque<sys::ibv_wc>,
    capacity: usize,
    armed: bool,
    /// Written when an armed CQ gets a completion; `event_fd` is its peer.
    notify: UnixStream,
    event: UnixStream,
}

struct SrqState {
    live: bool,
    max_wr: usize,
    recvs: VecDeque<PostedRecv>,
}

#[derive(Clone, Copy)]
struct MrRange {
    addr: u64,
    len: u64,
    lkey: u32,
}

struct Nic {
    key: DeviceKey,
    name: String,
    limits: DeviceLimits,
    host: Vec<u8>,
    mrs: Vec<Option<MrRange>>,
    next_lkey: u32,
    cqs: Vec<CqState>,
    srqs: Vec<SrqState>,
    qps: Vec<Qp>,
    /// QPs with work requests to execute or flush: what `run` walks, so its
    /// cost does not grow with idle QPs.
    to_run: Vec<usize>,
    stats: NicStats,
}

impl FakeNic {
    /// A NIC named `fake0` with generous limits and `host_bytes` of host memory.
    pub fn new(host_bytes: usize) -> FakeNic {
        FakeNic::with_limits(
            host_bytes,
            DeviceLimits {
                vendor_id: 0x02c9,
                device_cap_flags: sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS,
                max_qp_wr: 16_384,
                max_cqe: 1 << 20,
                max_qp_rd_atom: 16,
                max_qp_init_rd_atom: 16,
                max_srq: 64,
                max_srq_wr: 16_384,
                max_srq_sge: 2,
                max_sge: 16,
            },
        )
    }

    pub fn with_limits(host_bytes: usize, limits: DeviceLimits) -> FakeNic {
        static NEXT_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FakeNic(Arc::new(Mutex::new(Nic {
            key: DeviceKey(key),
            name: "fake0".into(),
            limits,
            host: vec![0; host_bytes],
            mrs: Vec::new(),
            next_lkey: 0x100,
            cqs: Vec::new(),
            srqs: Vec::new(),
            qps: Vec::new(),
            to_run: Vec::new(),
            stats: NicStats::default(),
        })))
    }

    fn nic(&self) -> MutexGuard<'_, Nic> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection bound to this NIC (what RDMA CM would hand the
    /// acceptor), and the host's view of it.
    pub fn connect(&self) -> (FakeConn, HostQp) {
        let mut nic = self.nic();
        let index = nic.qps.len();
        nic.qps.push(Qp {
            life: QpLife::Unborn,
            qp_num: 0x100 + index as u32,
            cq: usize::MAX,
            srq: None,
            max_send_wr: 0,
            max_recv_wr: 0,
            max_inline: 0,
            max_send_sge: 0,
            recvs: VecDeque::new(),
            sends: VecDeque::new(),
            responses: VecDeque::new(),
            fail_next: None,
            listed: false,
        });
        let room = nic.qps.len().saturating_sub(nic.to_run.len());
        nic.to_run.reserve(room);
        let conn = FakeConn {
            nic: self.clone(),
            token: CmToken::next(),
            qp: index,
        };
        (conn, HostQp(index))
    }

    pub fn limits(&self) -> DeviceLimits {
        self.nic().limits
    }

    pub fn key(&self) -> DeviceKey {
        self.nic().key
    }

    pub fn qp_num(&self, qp: HostQp) -> u32 {
        self.nic().qps[qp.0].qp_num
    }

    pub fn is_connected(&self, qp: HostQp) -> bool {
        self.nic().qps[qp.0].life == QpLife::Connected
    }

    pub fn is_destroyed(&self, qp: HostQp) -> bool {
        self.nic().qps[qp.0].life == QpLife::Destroyed
    }

    /// Receives posted for `qp` (its own, or its SRQ's).
    pub fn posted_receives(&self, qp: HostQp) -> usize {
        let nic = self.nic();
        let q = &nic.qps[qp.0];
        match q.srq {
            Some(s) => nic.srqs[s].recvs.len(),
            None => q.recvs.len(),
        }
    }

    /// Send work requests posted on `qp` and not yet executed.
    pub fn queued_sends(&self, qp: HostQp) -> usize {
        self.nic().qps[qp.0].sends.len()
    }

    pub fn stats(&self) -> NicStats {
        self.nic().stats
    }

    /// The host's memory, to fill before a write or check after a read.
    pub fn with_host<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        f(&mut self.nic().host)
    }

    /// The host sends a command capsule (64-byte command, then any
    /// in-capsule data) on `qp`: it lands in the next posted receive.
    pub fn send_capsule(&self, qp: HostQp, capsule: &[u8]) -> Result<(), SendError> {
        let mut nic = self.nic();
        let nic = &mut *nic;
        let q = &mut nic.qps[qp.0];
        if q.life != QpLife::Connected {
            return Err(SendError::NotConnected);
        }
        let (qp_num, cq) = (q.qp_num, q.cq);
        let recv = match q.srq {
            Some(s) => nic.srqs[s].recvs.pop_front(),
            None => q.recvs.pop_front(),
        }
        .ok_or(SendError::NoReceive)?;
        let room: u64 = recv.sges[..recv.num_sge]
            .iter()
            .map(|s| u64::from(s.length))
            .sum();
        let status = if capsule.len() as u64 > room {
            wc_status::IBV_WC_LOC_LEN_ERR
        } else if !recv.sges[..recv.num_sge]
            .iter()
            .all(|s| mr_covers(&nic.mrs, s))
        {
            wc_status::IBV_WC_LOC_PROT_ERR
        } else {
            let mut rest = capsule;
            for s in &recv.sges[..recv.num_sge] {
                let n = rest.len().min(s.length as usize);
                // SAFETY: the SGE lies inside a registered MR (checked just
                // above), and the poster promised (`post_recv`) the memory
                // stays allocated and untouched by anyone else until this
                // receive completes, which is now.
                unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), local_mut(s.addr), n) };
                rest = &rest[n..];
            }
            wc_status::IBV_WC_SUCCESS
        };
        let ok = status == wc_status::IBV_WC_SUCCESS;
        nic.push_wc(
            cq,
            wc(
                recv.wr_id,
                status,
                sys::ibv_wc_opcode::IBV_WC_RECV,
                if ok { capsule.len() as u32 } else { 0 },
                qp_num,
            ),
        );
        if !ok {
            nic.qps[qp.0].life = QpLife::Error;
            nic.list(qp.0);
        }
        Ok(())
    }

    /// The oldest response capsule the host got on `qp`.
    pub fn take_response(&self, qp: HostQp) -> Option<[u8; RESPONSE_BYTES]> {
        self.nic().qps[qp.0].responses.pop_front()
    }

    /// The host (or the wire) breaks the connection: the QP goes to the
    /// error state and everything posted on it flushes at the next `run`.
    pub fn break_qp(&self, qp: HostQp) {
        let mut nic = self.nic();
        let q = &mut nic.qps[qp.0];
        if matches!(q.life, QpLife::Connected | QpLife::Init) {
            q.life = QpLife::Error;
        }
        nic.list(qp.0);
    }

    /// The next work request executed on `qp` fails with `status` (for
    /// example IBV_WC_RETRY_EXC_ERR); the QP then goes to the error state.
    pub fn fail_next(&self, qp: HostQp, status: u32) {
        self.nic().qps[qp.0].fail_next = Some(status);
    }

    /// Executes every queued send work request, in order per QP, and flushes
    /// QPs in the error state. Returns the work requests handled.
    pub fn run(&self) -> usize {
        let mut nic = self.nic();
        let mut listed = std::mem::take(&mut nic.to_run);
        let mut done = 0;
        for &i in &listed {
            nic.qps[i].listed = false;
            done += nic.run_qp(i);
        }
        listed.clear();
        nic.to_run = listed;
        done
    }
}

impl Nic {
    /// QP `i` has work for `run`.
    fn list(&mut self, i: usize) {
        if !self.qps[i].listed {
            self.qps[i].listed = true;
            self.to_run.push(i);
        }
    }

    fn push_wc(&mut self, cq: usize, wc: sys::ibv_wc) {
        let c = &mut self.cqs[cq];
        assert!(c.live, "completion for a destroyed CQ");
        assert!(
            c.wcs.len() < c.capacity,
            "CQ overrun: {} entries, all full (the poll group's CQ budget is wrong)",
            c.capacity
        );
        c.wcs.push_back(wc);
        if c.armed {
            c.armed = false;
            // Best effort: a full socket buffer already wakes the reader.
            let _ = c.notify.write(&[1]);
        }
    }

    fn run_qp(&mut self, i: usize) -> usize {
        let mut done = 0;
        match self.qps[i].life {
            QpLife::Connected => {
                while let Some(wr) = self.qps[i].sends.pop_front() {
                    done += 1;
                    let status = self.qps[i]
                        .fail_next
                        .take()
                        .unwrap_or_else(|| self.execute(i, &wr));
                    let (qp_num, cq) = (self.qps[i].qp_num, self.qps[i].cq);
                    if status != wc_status::IBV_WC_SUCCESS {
                        self.push_wc(cq, wc(wr.wr_id, status, wc_opcode(wr.opcode), 0, qp_num));
                        self.qps[i].life = QpLife::Error;
                        return done + self.run_qp(i);
                    }
                    if wr.signaled {
                        let len = if wr.opcode == wr_op::IBV_WR_RDMA_READ {
                            sge_bytes(&wr.sges[..wr.num_sge])
                        } else {
                            0
                        };
                        self.push_wc(cq, wc(wr.wr_id, status, wc_opcode(wr.opcode), len, qp_num));
                    }
                }
            }
            QpLife::Error => {
                // Flushed work requests complete, signaled or not.
                let (qp_num, cq) = (self.qps[i].qp_num, self.qps[i].cq);
                while let Some(wr) = self.qps[i].sends.pop_front() {
                    done += 1;
                    let flushed = wc(
                        wr.wr_id,
                        wc_status::IBV_WC_WR_FLUSH_ERR,
                        wc_opcode(wr.opcode),
                        0,
                        qp_num,
                    );
                    self.push_wc(cq, flushed);
                }
                while let Some(r) = self.qps[i].recvs.pop_front() {
                    done += 1;
                    let flushed = wc(
                        r.wr_id,
                        wc_status::IBV_WC_WR_FLUSH_ERR,
                        sys::ibv_wc_opcode::IBV_WC_RECV,
                        0,
                        qp_num,
                    );
                    self.push_wc(cq, flushed);
                }
            }
            QpLife::Unborn | QpLife::Init | QpLife::Destroyed => {}
        }
        done
    }

    /// Carries out one send work request of QP `i`; returns its status.
    fn execute(&mut self, i: usize, wr: &PostedSend) -> u32 {
        let sges = &wr.sges[..wr.num_sge];
        // Inline data was copied at post time: its SGEs need no MR.
        if wr.inline.is_none() && !sges.iter().all(|s| mr_covers(&self.mrs, s)) {
            return wc_status::IBV_WC_LOC_PROT_ERR;
        }
        match wr.opcode {
            wr_op::IBV_WR_SEND | wr_op::IBV_WR_SEND_WITH_INV => {
                let mut rsp = [0u8; RESPONSE_BYTES];
                match wr.inline {
                    Some(bytes) => rsp = bytes,
                    None => {
                        if sge_bytes(sges) as usize != RESPONSE_BYTES {
                            return wc_status::IBV_WC_LOC_LEN_ERR;
                        }
                        gather(sges, &mut rsp);
                    }
                }
                if wr.opcode == wr_op::IBV_WR_SEND_WITH_INV {
                    self.stats.invalidations += 1;
                }
                self.qps[i].responses.push_back(rsp);
                wc_status::IBV_WC_SUCCESS
            }
            wr_op::IBV_WR_RDMA_WRITE | wr_op::IBV_WR_RDMA_READ => {
                let len = sge_bytes(sges) as usize;
                let Some(start) = self.host_range(wr.remote_addr, wr.rkey, len) else {
                    return wc_status::IBV_WC_REM_ACCESS_ERR;
                };
                let host = &mut self.host[start..start + len];
                if wr.opcode == wr_op::IBV_WR_RDMA_WRITE {
                    self.stats.rdma_writes += 1;
                    gather(sges, host);
                } else {
                    self.stats.rdma_reads += 1;
                    scatter(host, sges);
                }
                wc_status::IBV_WC_SUCCESS
            }
            _ => wc_status::IBV_WC_LOC_QP_OP_ERR,
        }
    }

    /// Where `len` bytes at `addr` start in the host's memory, if `rkey`
    /// reaches all of them.
    fn host_range(&self, addr: u64, rkey: u32, len: usize) -> Option<usize> {
        if rkey != HOST_RKEY {
            return None;
        }
        let start = usize::try_from(addr.checked_sub(HOST_BASE)?).ok()?;
        (start.checked_add(len)? <= self.host.len()).then_some(start)
    }
}

/// The memory an SGE names. A NIC gets addresses as numbers; the poll group
/// made them from pointers with `as` casts, which expose their provenance.
fn local(addr: u64) -> *const u8 {
    std::ptr::with_exposed_provenance(addr as usize)
}

fn local_mut(addr: u64) -> *mut u8 {
    std::ptr::with_exposed_provenance_mut(addr as usize)
}

fn sge_bytes(sges: &[sys::ibv_sge]) -> u32 {
    sges.iter().map(|s| s.length).sum()
}

fn mr_covers(mrs: &[Option<MrRange>], s: &sys::ibv_sge) -> bool {
    mrs.iter().flatten().any(|m| {
        m.lkey == s.lkey
            && s.addr >= m.addr
            && s.addr
                .checked_add(u64::from(s.length))
                .is_some_and(|end| end <= m.addr + m.len)
    })
}

/// Copies the bytes the SGEs name, in order, into `out` (as long as they are).
fn gather(sges: &[sys::ibv_sge], out: &mut [u8]) {
    let mut at = 0;
    for s in sges {
        let n = s.length as usize;
        // SAFETY: every SGE lies inside a registered MR (checked by the
        // caller), and the poster promised (`post_send`) that the memory
        // stays allocated, and nothing writes it, until the work request
        // completes; it is executing now.
        unsafe { std::ptr::copy_nonoverlapping(local(s.addr), out[at..at + n].as_mut_ptr(), n) };
        at += n;
    }
}

/// Copies `data` into the memory the SGEs name, in order.
fn scatter(data: &[u8], sges: &[sys::ibv_sge]) {
    let mut at = 0;
    for s in sges {
        let n = s.length as usize;
        // SAFETY: every SGE lies inside a registered MR (checked by the
        // caller), and the poster promised (`post_send`) that nothing reads
        // or writes that memory until this RDMA READ completes.
        unsafe { std::ptr::copy_nonoverlapping(data[at..at + n].as_ptr(), local_mut(s.addr), n) };
        at += n;
    }
}

fn wc(wr_id: u64, status: u32, opcode: u32, byte_len: u32, qp_num: u32) -> sys::ibv_wc {
    sys::ibv_wc {
        wr_id,
        status,
        opcode,
        byte_len,
        qp_num,
        ..Default::default()
    }
}

fn wc_opcode(wr_opcode: u32) -> u32 {
    use sys::ibv_wc_opcode as o;
    match wr_opcode {
        wr_op::IBV_WR_RDMA_WRITE => o::IBV_WC_RDMA_WRITE,
        wr_op::IBV_WR_RDMA_READ => o::IBV_WC_RDMA_READ,
        _ => o::IBV_WC_SEND,
    }
}

/// A connection of the fake NIC.
pub struct FakeConn {
    nic: FakeNic,
    token: CmToken,
    qp: usize,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.destroy_qp();
        self.nic.nic().qps[self.qp].life = QpLife::Destroyed;
    }
}

pub struct FakePd(FakeNic);

pub struct FakeMr {
    nic: FakeNic,
    index: usize,
    lkey: u32,
}

impl Drop for FakeMr {
    fn drop(&mut self) {
        self.nic.nic().mrs[self.index] = None;
    }
}

impl MemoryRegion for FakeMr {
    fn lkey(&self) -> u32 {
        self.lkey
    }
}

pub struct FakeSrq {
    nic: FakeNic,
    index: usize,
}

impl Drop for FakeSrq {
    fn drop(&mut self) {
        let mut nic = self.nic.nic();
        let s = &mut nic.srqs[self.index];
        s.live = false;
        s.recvs.clear();
    }
}

pub struct FakeCq {
    nic: FakeNic,
    index: usize,
    event_fd: RawFd,
}

impl Drop for FakeCq {
    fn drop(&mut self) {
        let mut nic = self.nic.nic();
        let c = &mut nic.cqs[self.index];
        c.live = false;
        c.wcs.clear();
    }
}

impl CompletionQueue for FakeCq {
    fn event_fd(&self) -> RawFd {
        self.event_fd
    }

    fn arm(&mut self) -> io::Result<()> {
        self.nic.nic().cqs[self.index].armed = true;
        Ok(())
    }

    fn take_event(&mut self) {
        let mut nic = self.nic.nic();
        let mut byte = [0u8; 64];
        // Non-blocking: drains whatever events came.
        while matches!(nic.cqs[self.index].event.read(&mut byte), Ok(n) if n > 0) {}
    }

    fn poll(&self, wcs: &mut [sys::ibv_wc]) -> usize {
        let mut nic = self.nic.nic();
        let c = &mut nic.cqs[self.index];
        let n = wcs.len().min(c.wcs.len());
        for (slot, wc) in wcs.iter_mut().zip(c.wcs.drain(..n)) {
            *slot = wc;
        }
        n
    }
}

impl Verbs for FakeVerbs {
    type Conn = FakeConn;
    type Pd = FakePd;
    type Cq = FakeCq;
    type Srq = FakeSrq;
    type Mr = FakeMr;

    fn alloc_pd(conn: &FakeConn) -> io::Result<FakePd> {
        Ok(FakePd(conn.nic.clone()))
    }

    fn create_cq(conn: &FakeConn, entries: u32) -> io::Result<FakeCq> {
        let (notify, event) = UnixStream::pair()?;
        event.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        let event_fd = event.as_raw_fd();
        let mut nic = conn.nic.nic();
        if entries as usize > nic.limits.max_cqe as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        nic.cqs.push(CqState {
            live: true,
            wcs: VecDeque::with_capacity(entries as usize),
            capacity: entries as usize,
            armed: false,
            notify,
            event,
        });
        Ok(FakeCq {
            nic: conn.nic.clone(),
            index: nic.cqs.len() - 1,
            event_fd,
        })
    }

    fn create_srq(pd: &FakePd, max_wr: u32, _max_sge: u32) -> io::Result<FakeSrq> {
        let mut nic = pd.0.nic();
        nic.srqs.push(SrqState {
            live: true,
            max_wr: max_wr as usize,
            recvs: VecDeque::with_capacity(max_wr as usize),
        });
        Ok(FakeSrq {
            nic: pd.0.clone(),
            index: nic.srqs.len() - 1,
        })
    }

    fn register(pd: &FakePd, addr: *mut u8, len: usize) -> io::Result<FakeMr> {
        let mut nic = pd.0.nic();
        let lkey = nic.next_lkey;
        nic.next_lkey += 1;
        nic.mrs.push(Some(MrRange {
            addr: addr as u64,
            len: len as u64,
            lkey,
        }));
        Ok(FakeMr {
            nic: pd.0.clone(),
            index: nic.mrs.len() - 1,
            lkey,
        })
    }

    unsafe fn post_srq_recv(srq: &FakeSrq, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        let mut nic = srq.nic.nic();
        nic.stats.recv_posts += 1;
        let s = &mut nic.srqs[srq.index];
        assert!(s.live, "post to a destroyed SRQ");
        let (max, queue) = (s.max_wr, &mut s.recvs);
        // SAFETY: the caller keeps `post_srq_recv`'s contract.
        let taken = unsafe { take_recvs(wrs, queue, max) };
        nic.stats.recv_wrs += taken as u64;
        full_after(taken, wrs.len())
    }
}

/// Copies receive WRs into `queue` while it has room; returns how many.
///
/// # Safety
/// Every pointer in `wrs` points to a live `ibv_recv_wr` whose `sg_list`
/// holds `num_sge` live SGEs, none written during the call.
unsafe fn take_recvs(
    wrs: &[*mut sys::ibv_recv_wr],
    queue: &mut VecDeque<PostedRecv>,
    max: usize,
) -> usize {
    let mut taken = 0;
    for &p in wrs {
        if queue.len() == max {
            break;
        }
        // SAFETY: live, unshared WR per the contract.
        let wr = unsafe { *p };
        let n = usize::try_from(wr.num_sge).unwrap_or(0);
        assert!((1..=2).contains(&n), "a receive has 1 or 2 SGEs, not {n}");
        let mut sges = [sys::ibv_sge::default(); 2];
        for (k, sge) in sges.iter_mut().enumerate().take(n) {
            // SAFETY: the WR's sg_list holds num_sge live SGEs per the contract.
            *sge = unsafe { *wr.sg_list.add(k) };
        }
        queue.push_back(PostedRecv {
            wr_id: wr.wr_id,
            sges,
            num_sge: n,
        });
        taken += 1;
    }
    taken
}

fn full_after(taken: usize, wanted: usize) -> Result<(), PostError> {
    if taken == wanted {
        Ok(())
    } else {
        Err(PostError {
            posted: taken,
            error: io::Error::from_raw_os_error(libc::ENOMEM),
        })
    }
}

impl Connection for FakeConn {
    type Verbs = FakeVerbs;

    fn token(&self) -> CmToken {
        self.token
    }

    fn device_key(&self) -> Option<DeviceKey> {
        Some(self.nic.nic().key)
    }

    fn device_name(&self) -> String {
        self.nic.nic().name.clone()
    }

    fn query_device(&self) -> io::Result<DeviceLimits> {
        Ok(self.nic.nic().limits)
    }

    fn accept(&self, _private_data: &[u8], _responder: u8, _initiator: u8) -> io::Result<()> {
        let mut nic = self.nic.nic();
        let q = &mut nic.qps[self.qp];
        match q.life {
            QpLife::Init => {
                q.life = QpLife::Connected;
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn reject(&self, _private_data: &[u8]) {
        self.nic.nic().qps[self.qp].life = QpLife::Destroyed;
    }

    fn disconnect(&self) {
        let mut nic = self.nic.nic();
        let q = &mut nic.qps[self.qp];
        if matches!(q.life, QpLife::Connected | QpLife::Init) {
            q.life = QpLife::Error;
        }
        nic.list(self.qp);
    }

    fn create_qp(
        &mut self,
        _pd: &FakePd,
        cq: &FakeCq,
        srq: Option<&FakeSrq>,
        spec: &QpSpec,
    ) -> io::Result<u32> {
        let mut nic = self.nic.nic();
        let limits = nic.limits;
        if spec.send_wr > limits.max_qp_wr
            || spec.recv_wr > limits.max_qp_wr
            || spec.send_sge > limits.max_sge
            || spec.send_sge as usize > MAX_SEND_SGE
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let q = &mut nic.qps[self.qp];
        assert_eq!(q.life, QpLife::Unborn, "one QP per connection");
        q.life = QpLife::Init;
        q.cq = cq.index;
        q.srq = srq.map(|s| s.index);
        q.max_send_wr = spec.send_wr as usize;
        q.max_recv_wr = spec.recv_wr as usize;
        q.max_inline = spec.inline_bytes;
        q.max_send_sge = spec.send_sge as usize;
        q.sends = VecDeque::with_capacity(q.max_send_wr);
        q.recvs = VecDeque::with_capacity(q.max_recv_wr);
        Ok(q.max_inline)
    }

    fn qp_num(&self) -> u32 {
        self.nic.nic().qps[self.qp].qp_num
    }

    fn destroy_qp(&mut self) {
        let mut nic = self.nic.nic();
        let q = &mut nic.qps[self.qp];
        if !matches!(q.life, QpLife::Unborn | QpLife::Destroyed) {
            q.life = QpLife::Destroyed;
            q.sends.clear();
            q.recvs.clear();
        }
    }

    unsafe fn post_send(&self, wrs: &[*mut sys::ibv_send_wr]) -> Result<(), PostError> {
        let mut nic = self.nic.nic();
        nic.stats.send_posts += 1;
        let q = &mut nic.qps[self.qp];
        assert!(
            !matches!(q.life, QpLife::Unborn | QpLife::Destroyed),
            "post to a connection without a QP"
        );
        let mut taken = 0;
        for &p in wrs {
            if q.sends.len() == q.max_send_wr {
                break;
            }
            // SAFETY: a live WR nothing else touches, per the contract.
            let wr = unsafe { *p };
            let n = usize::try_from(wr.num_sge).unwrap_or(0);
            assert!(
                n <= q.max_send_sge,
                "{n} SGEs in one work request; the QP takes {}",
                q.max_send_sge
            );
            let mut sges = [sys::ibv_sge::default(); MAX_SEND_SGE];
            for (k, sge) in sges.iter_mut().enumerate().take(n) {
                // SAFETY: sg_list holds num_sge live SGEs, per the contract.
                *sge = unsafe { *wr.sg_list.add(k) };
            }
            let inline = wr.send_flags & sys::ibv_send_flags::IBV_SEND_INLINE != 0;
            let inline = if inline {
                assert!(
                    sge_bytes(&sges[..n]) <= q.max_inline,
                    "inline data beyond what the QP was granted"
                );
                let mut bytes = [0u8; RESPONSE_BYTES];
                let len = (sge_bytes(&sges[..n]) as usize).min(RESPONSE_BYTES);
                // Inline data is copied at post time; the SGE need not be registered.
                let mut at = 0;
                for s in &sges[..n] {
                    let k = (s.length as usize).min(len - at);
                    // SAFETY: the SGE names live memory, per the contract;
                    // copied now, as a NIC copies inline data when posted.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            local(s.addr),
                            bytes[at..at + k].as_mut_ptr(),
                            k,
                        )
                    };
                    at += k;
                }
                Some(bytes)
            } else {
                None
            };
            // SAFETY: reading the union member the opcode says was written
            // (any bit pattern is a valid pair of integers anyway).
            let rdma = unsafe { wr.wr.rdma };
            q.sends.push_back(PostedSend {
                wr_id: wr.wr_id,
                opcode: wr.opcode,
                signaled: wr.send_flags & sys::ibv_send_flags::IBV_SEND_SIGNALED != 0,
                sges,
                num_sge: n,
                remote_addr: rdma.remote_addr,
                rkey: rdma.rkey,
                inline,
            });
            taken += 1;
        }
        nic.stats.send_wrs += taken as u64;
        nic.list(self.qp);
        full_after(taken, wrs.len())
    }

    unsafe fn post_recv(&self, wrs: &[*mut sys::ibv_recv_wr]) -> Result<(), PostError> {
        let mut nic = self.nic.nic();
        nic.stats.recv_posts += 1;
        let q = &mut nic.qps[self.qp];
        assert!(q.srq.is_none(), "post_recv on a QP that uses an SRQ");
        assert!(
            !matches!(q.life, QpLife::Unborn | QpLife::Destroyed),
            "post to a connection without a QP"
        );
        let max = q.max_recv_wr;
        // SAFETY: the caller keeps `post_recv`'s contract.
        let taken = unsafe { take_recvs(wrs, &mut q.recvs, max) };
        nic.stats.recv_wrs += taken as u64;
        if nic.qps[self.qp].life == QpLife::Error {
            nic.list(self.qp); // flushed at the next run
        }
        full_after(taken, wrs.len())
    }
}
