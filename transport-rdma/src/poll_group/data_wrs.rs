//! The RDMA READ and WRITE work requests of one request slot. A transfer of a
//! chained buffer names one SGE per unit; a work request carries at most
//! `sge_per_wr` of them (the device's limit), so a long chain takes several
//! work requests, each at the right offset of the host's memory.
//!
//! Pure bookkeeping: the arrays are sized when the queue is set up and never
//! move (boxed). Each fill points the work requests at their SGEs afresh,
//! after writing the SGEs, so the pointer the NIC reads through is the newest
//! one derived from the array (what Miri's borrow models require).

use rdma_sys as sys;

/// Units of data buffer and SGEs per work request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub unit_bytes: u32,
    pub sge_per_wr: u16,
}

impl Geometry {
    /// Units a transfer of `len` bytes takes (units are a power of two).
    pub fn units(&self, len: u32) -> usize {
        debug_assert!(self.unit_bytes.is_power_of_two());
        let shift = self.unit_bytes.trailing_zeros();
        ((len as usize) + (self.unit_bytes as usize - 1)) >> shift
    }

    /// Work requests that carry `pieces` SGEs.
    pub fn wrs(&self, pieces: usize) -> u16 {
        let per_wr = usize::from(self.sge_per_wr);
        if pieces <= per_wr {
            return u16::from(pieces > 0);
        }
        pieces.div_ceil(per_wr) as u16
    }
}

/// What every work request of one transfer shares.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub opcode: u32,
    pub wr_id: u64,
    pub send_flags: u32,
    /// The host's memory: where the transfer starts, and its key.
    pub remote_addr: u64,
    pub rkey: u32,
}

pub(super) struct DataWrs {
    wrs: Box<[sys::ibv_send_wr]>,
    sges: Box<[sys::ibv_sge]>,
    sge_per_wr: usize,
}

impl DataWrs {
    /// Room for a transfer of `max_units` units.
    pub fn new(max_units: usize, geometry: Geometry) -> DataWrs {
        let sge_per_wr = usize::from(geometry.sge_per_wr);
        assert!(sge_per_wr > 0 && max_units > 0);
        let n_wrs = max_units.div_ceil(sge_per_wr);
        DataWrs {
            wrs: vec![sys::ibv_send_wr::default(); n_wrs].into_boxed_slice(),
            sges: vec![sys::ibv_sge::default(); n_wrs * sge_per_wr].into_boxed_slice(),
            sge_per_wr,
        }
    }

    /// Fills the work requests of `t` moving the local `pieces` (address,
    /// length, in order, registered under `lkey`); each work request starts
    /// where the previous one ended in the host's memory. Returns how many it
    /// filled (0 for no pieces).
    pub fn fill(
        &mut self,
        t: Transfer,
        pieces: impl Iterator<Item = (u64, usize)>,
        lkey: u32,
    ) -> usize {
        let mut n = 0;
        for (i, (addr, len)) in pieces.enumerate() {
            assert!(i < self.sges.len(), "more pieces than the slot's SGEs");
            self.sges[i] = sys::ibv_sge {
                addr,
                length: u32::try_from(len).expect("a unit fits an SGE"),
                lkey,
            };
            n = i + 1;
        }
        let n_wrs = n.div_ceil(self.sge_per_wr);
        let mut offset = 0u64;
        let sges = self.sges.as_mut_ptr();
        for k in 0..n_wrs {
            let first = k * self.sge_per_wr;
            let count = (n - first).min(self.sge_per_wr);
            let bytes: u64 = self.sges[first..first + count]
                .iter()
                .map(|s| u64::from(s.length))
                .sum();
            let wr = &mut self.wrs[k];
            wr.wr_id = t.wr_id;
            wr.opcode = t.opcode;
            wr.send_flags = t.send_flags;
            wr.num_sge = count as i32;
            wr.sg_list = sges.wrapping_add(first);
            wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
                remote_addr: t.remote_addr + offset,
                rkey: t.rkey,
            };
            offset += bytes;
        }
        n_wrs
    }

    /// `fill` for one contiguous piece (a one-unit buffer: most commands).
    pub fn fill_one(&mut self, t: Transfer, addr: u64, len: u32, lkey: u32) -> usize {
        self.sges[0] = sys::ibv_sge {
            addr,
            length: len,
            lkey,
        };
        let sges = self.sges.as_mut_ptr();
        let wr = &mut self.wrs[0];
        wr.wr_id = t.wr_id;
        wr.opcode = t.opcode;
        wr.send_flags = t.send_flags;
        wr.num_sge = 1;
        wr.sg_list = sges;
        wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
            remote_addr: t.remote_addr,
            rkey: t.rkey,
        };
        1
    }

    /// Work request `k`, to put in the send batch (it stays in place while
    /// the slot lives).
    pub fn wr(&mut self, k: usize) -> *mut sys::ibv_send_wr {
        &mut self.wrs[k]
    }

    #[cfg(test)]
    pub fn get(&self, k: usize) -> (&sys::ibv_send_wr, &[sys::ibv_sge]) {
        let wr = &self.wrs[k];
        let first = k * self.sge_per_wr;
        (wr, &self.sges[first..first + wr.num_sge as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::ibv_wr_opcode::IBV_WR_RDMA_READ;

    #[test]
    fn a_long_chain_is_split_at_the_sge_limit_with_advancing_remote_addresses() {
        let g = Geometry {
            unit_bytes: 4096,
            sge_per_wr: 4,
        };
        assert_eq!(g.units(65536), 16);
        assert_eq!(g.units(4097), 2);
        assert_eq!(g.wrs(16), 4);
        assert_eq!(g.wrs(5), 2);
        let mut d = DataWrs::new(16, g);
        let pieces = (0..10u64).map(|i| (0x10_0000 + i * 0x2000, 4096));
        let read = Transfer {
            opcode: IBV_WR_RDMA_READ,
            wr_id: 0x77,
            send_flags: 2,
            remote_addr: 0xA000_0000,
            rkey: 99,
        };
        let n = d.fill(read, pieces, 7);
        assert_eq!(n, 3, "10 SGEs, 4 per work request");
        let counts: Vec<i32> = (0..3).map(|k| d.get(k).0.num_sge).collect();
        assert_eq!(counts, [4, 4, 2]);
        for k in 0..3 {
            let (wr, sges) = d.get(k);
            // SAFETY: reading the union member `fill` wrote.
            let rdma = unsafe { wr.wr.rdma };
            assert_eq!(rdma.remote_addr, 0xA000_0000 + k as u64 * 4 * 4096);
            assert_eq!(rdma.rkey, 99);
            assert_eq!((wr.wr_id, wr.send_flags), (0x77, 2));
            assert!(std::ptr::eq(wr.sg_list, sges.as_ptr()));
            assert_eq!(sges[0].addr, 0x10_0000 + (k as u64 * 4) * 0x2000);
            assert!(sges.iter().all(|s| s.lkey == 7 && s.length == 4096));
        }
        // A short last piece keeps its length.
        let n = d.fill(read, [(0x5000u64, 4096usize), (0x9000, 100)].into_iter(), 7);
        assert_eq!(n, 1);
        assert_eq!(d.get(0).1[1].length, 100);
    }
}
