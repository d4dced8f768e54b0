//! Receives: each receive work request has two SGEs, the 64-byte command
//! slot and an in-capsule data (ICD) buffer from a small pool. A capsule that
//! carries data lends its ICD buffer to the request (zero copy) and the
//! receive is re-armed at once with a fresh buffer; the lent buffer goes back
//! to its pool when the request is done.

use std::collections::VecDeque;
use std::sync::Arc;

use dma::{BufPool, DmaBuf, DmaMemory, SMALL_PAGE_BYTES};
use nvme_spec::{FromBytes, Sqe};
use rdma_sys as sys;

use super::CAPSULE_HEADER;
use crate::verbs::{self, MemoryRegion, Verbs};

/// One receive work request: SGE 0 is its command slot, SGE 1 (when in-capsule
/// data is on) the ICD buffer it holds.
pub(super) struct Recv {
    pub(super) sges: [sys::ibv_sge; 2],
    pub(super) wr: sys::ibv_recv_wr,
    pub(super) icd: Option<DmaBuf>,
}

/// The ICD buffers of a receive ring and how the NIC reaches them.
pub(crate) struct IcdBuffers {
    pub pool: Arc<BufPool>,
    pub lkey: u32,
    /// Bytes the NIC may write into each buffer (the ICD size).
    pub len_bytes: u32,
}

/// A set of receive work requests with their command slots and ICD buffers
/// (pure bookkeeping: posting is the caller's). A receive is armed (in
/// `batch`, then posted) while it holds an ICD buffer. Lending its buffer to a
/// request re-arms it with a fresh one; if the pool is empty it starves until
/// a buffer comes back and `refill` runs.
pub(crate) struct RecvRing {
    pub(super) recvs: Box<[Recv]>,
    pub(super) icd: Option<IcdBuffers>,
    /// Receives waiting for an ICD buffer, oldest first (capacity: all receives).
    pub(super) starved: VecDeque<u32>,
    /// Armed receives not yet posted (capacity: all receives).
    pub(super) batch: Vec<*mut sys::ibv_recv_wr>,
    /// Posted receives not yet completed.
    pub(super) posted: u32,
    /// `recvs.len()` command slots of `CAPSULE_HEADER` bytes.
    pub(super) sqe_region: DmaMemory,
}

impl RecvRing {
    /// `count` receives, all armed (in the batch); `wr_id(i)` names receive `i`.
    pub(crate) fn new(
        count: u32,
        sqe_region: DmaMemory,
        sqe_lkey: u32,
        icd: Option<IcdBuffers>,
        wr_id: impl Fn(u32) -> u64,
    ) -> Result<RecvRing, String> {
        let n = count as usize;
        assert!(n > 0);
        assert!(sqe_region.len() >= n * CAPSULE_HEADER, "command slots fit");
        let base = sqe_region.as_ptr() as u64;
        let mut recvs = Vec::with_capacity(n);
        for i in 0..count {
            let mut sges = [sys::ibv_sge::default(); 2];
            sges[0] = sys::ibv_sge {
                addr: base + u64::from(i) * CAPSULE_HEADER as u64,
                length: CAPSULE_HEADER as u32,
                lkey: sqe_lkey,
            };
            let buf = match &icd {
                Some(b) => {
                    let buf = b
                        .pool
                        .get()
                        .ok_or("in-capsule data pool smaller than its receives")?;
                    sges[1] = sys::ibv_sge {
                        addr: buf.as_ptr() as u64,
                        length: b.len_bytes,
                        lkey: b.lkey,
                    };
                    Some(buf)
                }
                None => None,
            };
            recvs.push(Recv {
                sges,
                wr: sys::ibv_recv_wr {
                    wr_id: wr_id(i),
                    num_sge: if icd.is_some() { 2 } else { 1 },
                    ..Default::default()
                },
                icd: buf,
            });
        }
        let mut recvs = recvs.into_boxed_slice();
        // The boxed table never moves again: point the WRs at their SGEs now.
        for r in recvs.iter_mut() {
            r.wr.sg_list = r.sges.as_mut_ptr();
        }
        let batch = recvs.iter_mut().map(|r| &mut r.wr as *mut _).collect();
        Ok(RecvRing {
            recvs,
            icd,
            starved: VecDeque::with_capacity(n),
            batch,
            posted: 0,
            sqe_region,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.recvs.len()
    }

    /// The command a completed receive carries.
    pub(crate) fn sqe(&self, index: u32) -> Sqe {
        let mut bytes = [0u8; CAPSULE_HEADER];
        self.sqe_region
            .read_at(index as usize * CAPSULE_HEADER, &mut bytes)
            .expect("command slot inside the region");
        Sqe::read_from_bytes(&bytes).expect("64 bytes")
    }

    /// Re-arms a completed receive with the buffer it still holds.
    pub(crate) fn rearm(&mut self, index: u32) {
        let r = &mut self.recvs[index as usize];
        debug_assert!(self.icd.is_none() || r.icd.is_some());
        self.batch.push(&mut r.wr);
    }

    /// Takes a completed receive's ICD buffer (now holding the capsule's data)
    /// and re-arms the receive with a fresh one, or starves it.
    pub(crate) fn lend_icd(&mut self, index: u32) -> DmaBuf {
        let buf = self.recvs[index as usize]
            .icd
            .take()
            .expect("a completed receive holds its ICD buffer");
        self.starved.push_back(index);
        self.refill();
        buf
    }

    /// Re-arms starved receives while the ICD pool has buffers.
    pub(crate) fn refill(&mut self) {
        let Some(icd) = &self.icd else { return };
        while let Some(&index) = self.starved.front() {
            let Some(buf) = icd.pool.get() else { break };
            self.starved.pop_front();
            let r = &mut self.recvs[index as usize];
            r.sges[1].addr = buf.as_ptr() as u64;
            // The SGEs were just written: point the WR at them afresh.
            r.wr.sg_list = r.sges.as_mut_ptr();
            r.icd = Some(buf);
            self.batch.push(&mut r.wr);
        }
    }

    /// Receives waiting for an ICD buffer.
    #[cfg(test)]
    pub(crate) fn starved(&self) -> usize {
        self.starved.len()
    }

    /// Posts the armed receives with `post`. Those the device took count as
    /// posted; the rest stay in the batch.
    ///
    /// What `post` gets (what its SAFETY notes rely on): WRs of the boxed
    /// table, in place while the ring lives and not posted yet; each names
    /// its command slot in `sqe_region` and the ICD buffer it holds, both
    /// kept, and neither read, until the receive completes (the slot is read
    /// by `sqe`, the buffer lent by `lend_icd`, only after that).
    pub(crate) fn post(
        &mut self,
        post: impl FnOnce(&[*mut sys::ibv_recv_wr]) -> Result<(), verbs::PostError>,
    ) -> Result<(), verbs::PostError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let taken = match post(&self.batch) {
            Ok(()) => Ok(self.batch.len()),
            Err(e) => Err(e),
        };
        let n = match &taken {
            Ok(n) => *n,
            Err(e) => e.posted.min(self.batch.len()),
        };
        self.posted += n as u32;
        self.batch.drain(..n);
        taken.map(|_| ())
    }

    /// Forgets armed receives that will never be posted (the queue died).
    pub(crate) fn discard_batch(&mut self) {
        self.batch.clear();
    }

    /// A posted receive completed (successfully or flushed).
    pub(crate) fn completed(&mut self) {
        self.posted = self.posted.checked_sub(1).expect("a posted receive");
    }

    pub(crate) fn posted(&self) -> u32 {
        self.posted
    }
}

/// A receive ring with its memory registrations.
pub(super) struct RegisteredRing<V: Verbs> {
    // Drop order: the MRs before the memory they cover (the ring's region;
    // the ICD pool lives until its last buffer is dropped).
    pub(super) _sqe_mr: V::Mr,
    pub(super) _icd_mr: Option<V::Mr>,
    pub(super) ring: RecvRing,
}

impl<V: Verbs> RegisteredRing<V> {
    /// `count` receives with ICD buffers of `icd_bytes` (none if 0) from a
    /// pool of `icd_count` buffers.
    pub(super) fn new(
        pd: &V::Pd,
        count: u32,
        icd_bytes: u32,
        icd_count: usize,
        wr_id: impl Fn(u32) -> u64,
    ) -> Result<RegisteredRing<V>, String> {
        let region = DmaMemory::allocate_ordinary(count as usize * CAPSULE_HEADER)
            .map_err(|e| format!("command slots: {e}"))?;
        let sqe_mr = V::register(pd, region.as_ptr(), region.len())
            .map_err(|e| format!("register command slots: {e}"))?;
        let (icd, icd_mr) = if icd_bytes == 0 {
            (None, None)
        } else {
            let buf_bytes = (icd_bytes as usize).div_ceil(SMALL_PAGE_BYTES) * SMALL_PAGE_BYTES;
            let pool = BufPool::with_ordinary_memory(buf_bytes, icd_count)
                .map_err(|e| format!("in-capsule data buffers: {e}"))?;
            let mem = pool.memory();
            let mr = V::register(pd, mem.as_ptr(), mem.len())
                .map_err(|e| format!("register in-capsule data buffers: {e}"))?;
            let icd = IcdBuffers {
                pool,
                lkey: mr.lkey(),
                len_bytes: icd_bytes,
            };
            (Some(icd), Some(mr))
        };
        let ring = RecvRing::new(count, region, sqe_mr.lkey(), icd, wr_id)?;
        Ok(RegisteredRing {
            _sqe_mr: sqe_mr,
            _icd_mr: icd_mr,
            ring,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::ICD_BUFFERS_PER_RECV;
    use super::*;
    use nvme_spec::IntoBytes;

    const SQE_LKEY: u32 = 7;
    const ICD_LKEY: u32 = 9;

    fn ring(count: u32, icd_bytes: u32, icd_count: usize) -> (RecvRing, Option<Arc<BufPool>>) {
        let region = DmaMemory::allocate_ordinary(count as usize * CAPSULE_HEADER).unwrap();
        let pool = (icd_bytes > 0).then(|| BufPool::with_ordinary_memory(4096, icd_count).unwrap());
        let icd = pool.clone().map(|pool| IcdBuffers {
            pool,
            lkey: ICD_LKEY,
            len_bytes: icd_bytes,
        });
        let r = RecvRing::new(count, region, SQE_LKEY, icd, |i| 100 + u64::from(i)).unwrap();
        (r, pool)
    }

    /// Posts the batch, returning the wr_ids and SGE lists posted (read from
    /// the ring's own table, after checking the posted pointers name it).
    fn post_all(r: &mut RecvRing) -> Vec<(u64, Vec<sys::ibv_sge>)> {
        let mut ptrs = Vec::new();
        r.post(|wrs| {
            ptrs.extend_from_slice(wrs);
            Ok(())
        })
        .unwrap();
        ptrs.iter()
            .map(|&p| {
                let recv = r
                    .recvs
                    .iter()
                    .find(|x| std::ptr::eq(&x.wr, p))
                    .expect("a WR of this ring");
                assert!(std::ptr::eq(recv.wr.sg_list, recv.sges.as_ptr()));
                let n = recv.wr.num_sge as usize;
                (recv.wr.wr_id, recv.sges[..n].to_vec())
            })
            .collect()
    }

    #[test]
    fn without_icd_a_receive_has_one_sge_and_keeps_it() {
        let (mut r, _) = ring(3, 0, 0);
        let posted = post_all(&mut r);
        assert_eq!(r.posted(), 3);
        let base = posted[0].1[0].addr;
        for (i, (id, sges)) in posted.iter().enumerate() {
            assert_eq!(*id, 100 + i as u64);
            assert_eq!(sges.len(), 1);
            assert_eq!(sges[0].addr, base + (i * CAPSULE_HEADER) as u64);
            assert_eq!(
                (sges[0].length, sges[0].lkey),
                (CAPSULE_HEADER as u32, SQE_LKEY)
            );
        }
        r.completed();
        r.rearm(1);
        assert_eq!(post_all(&mut r)[0].0, 101);
        assert_eq!(r.posted(), 3);
    }

    #[test]
    fn lent_icd_buffer_is_replaced_at_once_while_the_pool_lasts() {
        let (mut r, pool) = ring(2, 4096, 4);
        let pool = pool.unwrap();
        let first = post_all(&mut r);
        assert_eq!(first[0].1.len(), 2);
        assert_eq!((first[0].1[1].length, first[0].1[1].lkey), (4096, ICD_LKEY));
        assert_eq!(pool.available(), 2, "two receives armed, two spare");

        // Receive 0 completes with data: its buffer is lent, a fresh one armed.
        r.completed();
        let lent = r.lend_icd(0);
        assert_eq!(lent.as_ptr() as u64, first[0].1[1].addr);
        let again = post_all(&mut r);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].1[1].addr, lent.as_ptr() as u64);
        assert_eq!(r.starved(), 0);

        // Both lent: the pool is empty, so the next receive with data starves...
        r.completed();
        let lent2 = r.lend_icd(1);
        post_all(&mut r);
        r.completed();
        let lent3 = r.lend_icd(0);
        assert_eq!(r.starved(), 1);
        assert!(
            post_all(&mut r).is_empty(),
            "a starved receive is not posted"
        );
        assert_eq!(r.posted(), 1);

        // ...until a lent buffer comes back (dropped into its pool) and refill runs.
        drop(lent);
        r.refill();
        assert_eq!(r.starved(), 0);
        let refilled = post_all(&mut r);
        assert_eq!(refilled[0].0, 100);
        assert_eq!(r.posted(), 2);
        drop((lent2, lent3));
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn per_queue_pool_never_starves_at_full_depth() {
        // Depth receives armed plus depth requests holding data: 2 * depth buffers.
        let depth = 8;
        let (mut r, _) = ring(depth, 4096, ICD_BUFFERS_PER_RECV * depth as usize);
        post_all(&mut r);
        let mut held = Vec::new();
        for i in 0..depth {
            r.completed();
            held.push(r.lend_icd(i));
        }
        assert_eq!(r.starved(), 0);
        assert_eq!(post_all(&mut r).len(), depth as usize);
        // Requests finish, the next round of commands arrives.
        held.clear();
        for i in 0..depth {
            r.completed();
            held.push(r.lend_icd(i));
        }
        assert_eq!(r.starved(), 0);
    }

    #[test]
    fn command_is_read_from_its_slot() {
        let (r, _) = ring(4, 0, 0);
        let mut cmd = Sqe::new(nvme_spec::opcode::io::WRITE, 1);
        cmd.dptr = nvme_spec::SglDescriptor::data_block(0, 512);
        r.sqe_region
            .write_at(2 * CAPSULE_HEADER, cmd.as_bytes())
            .unwrap();
        assert_eq!(r.sqe(2).as_bytes(), cmd.as_bytes());
        assert_eq!(r.sqe(1).as_bytes(), Sqe::default().as_bytes());
    }

    #[test]
    fn a_partial_post_keeps_the_rest_armed() {
        let (mut r, _) = ring(4, 0, 0);
        let e = r
            .post(|wrs| {
                Err(verbs::PostError {
                    posted: 3,
                    error: std::io::Error::from_raw_os_error(libc::ENOMEM),
                })
                .map(|()| assert_eq!(wrs.len(), 4))
            })
            .unwrap_err();
        assert_eq!(e.posted, 3);
        assert_eq!(r.posted(), 3, "the first three were taken");
        let rest = post_all(&mut r);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, 103, "only the one not taken is posted again");
        assert_eq!(r.posted(), 4);
    }

    #[test]
    fn srq_ring_holds_a_receive_until_its_data_comes_back() {
        // An SRQ ring has one ICD buffer per receive: a lent buffer starves
        // its receive until the request is done with the data.
        let (mut r, _) = ring(2, 4096, 2);
        post_all(&mut r);
        r.completed();
        let data = r.lend_icd(1);
        assert_eq!(r.starved(), 1);
        assert!(post_all(&mut r).is_empty());
        drop(data); // the request finished: release_buffer drops it into its pool
        r.refill();
        assert_eq!(post_all(&mut r)[0].0, 101);
    }
}
