//! The 64-byte submission queue entry.

use crate::opcode;
use crate::sgl::SglDescriptor;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A submission queue entry (command capsule header), 64 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Sqe {
    pub opcode: u8,
    /// FUSE (bits 1:0) and PSDT (bits 7:6).
    pub flags: u8,
    pub cid: U16,
    /// Namespace id; for Fabrics commands byte 0 is `fctype`.
    pub nsid: U32,
    pub cdw2: U32,
    pub cdw3: U32,
    pub mptr: U64,
    pub dptr: SglDescriptor,
    pub cdw10: U32,
    pub cdw11: U32,
    pub cdw12: U32,
    pub cdw13: U32,
    pub cdw14: U32,
    pub cdw15: U32,
}
const _: () = assert!(core::mem::size_of::<Sqe>() == 64);

/// CDW12 bit 30 of the NVM read/write family: Force Unit Access.
const FUA_BIT: u32 = 1 << 30;

/// PSDT values (flags bits 7:6).
pub const PSDT_PRP: u8 = 0;
pub const PSDT_SGL_MPTR_CONTIG: u8 = 1;
pub const PSDT_SGL_MPTR_SGL: u8 = 2;

impl Sqe {
    pub fn new(opcode: u8, cid: u16) -> Sqe {
        Sqe {
            opcode,
            flags: PSDT_SGL_MPTR_CONTIG << 6,
            cid: cid.into(),
            ..Default::default()
        }
    }

    pub fn cid(&self) -> u16 {
        self.cid.get()
    }
    pub fn nsid(&self) -> u32 {
        self.nsid.get()
    }
    pub fn psdt(&self) -> u8 {
        self.flags >> 6
    }
    pub fn fuse(&self) -> u8 {
        self.flags & 0x3
    }
    pub fn is_fabrics(&self) -> bool {
        self.opcode == opcode::FABRICS
    }
    /// Fabrics command type (byte 4); meaningful only when `is_fabrics`.
    pub fn fctype(&self) -> u8 {
        self.nsid.as_bytes()[0]
    }
    pub fn set_fctype(&mut self, fctype: u8) {
        self.nsid = U32::new(u32::from(fctype));
    }
    pub fn cdw(&self, n: usize) -> u32 {
        match n {
            10 => self.cdw10.get(),
            11 => self.cdw11.get(),
            12 => self.cdw12.get(),
            13 => self.cdw13.get(),
            14 => self.cdw14.get(),
            15 => self.cdw15.get(),
            _ => panic!("cdw{n} has no accessor"),
        }
    }

    // --- NVM read/write/compare/write zeroes ---
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw10.get()) | (u64::from(self.cdw11.get()) << 32)
    }
    pub fn set_slba(&mut self, slba: u64) {
        self.cdw10 = U32::new(slba as u32);
        self.cdw11 = U32::new((slba >> 32) as u32);
    }
    /// Number of logical blocks, converted from the 0-based field.
    pub fn nlb(&self) -> u32 {
        (self.cdw12.get() & 0xFFFF) + 1
    }
    /// Force Unit Access (CDW12 bit 30) of Write, Write Zeroes, Read and Compare.
    pub fn fua(&self) -> bool {
        self.cdw12.get() & FUA_BIT != 0
    }
    pub fn set_fua(&mut self, fua: bool) {
        let v = self.cdw12.get() & !FUA_BIT;
        self.cdw12 = U32::new(v | if fua { FUA_BIT } else { 0 });
    }
    /// Sets the 0-based NLB field from a 1-based count (1..=65536).
    pub fn set_nlb(&mut self, blocks: u32) {
        assert!((1..=65536).contains(&blocks));
        let v = (self.cdw12.get() & !0xFFFF) | (blocks - 1);
        self.cdw12 = U32::new(v);
    }
    /// Write Zeroes: deallocate bit (cdw12 bit 25).
    pub fn deac(&self) -> bool {
        self.cdw12.get() & (1 << 25) != 0
    }

    // --- Dataset Management ---
    /// Number of ranges, from the 0-based NR field.
    pub fn dsm_ranges(&self) -> u32 {
        (self.cdw10.get() & 0xFF) + 1
    }
    /// Attribute - deallocate (cdw11 bit 2).
    pub fn dsm_deallocate(&self) -> bool {
        self.cdw11.get() & (1 << 2) != 0
    }

    // --- Identify ---
    pub fn identify_cns(&self) -> u8 {
        self.cdw10.get() as u8
    }
    pub fn identify_cntid(&self) -> u16 {
        (self.cdw10.get() >> 16) as u16
    }

    // --- Get Log Page ---
    pub fn log_page_id(&self) -> u8 {
        self.cdw10.get() as u8
    }
    pub fn log_page_lsp(&self) -> u8 {
        ((self.cdw10.get() >> 8) & 0x7F) as u8
    }
    pub fn log_page_rae(&self) -> bool {
        self.cdw10.get() & (1 << 15) != 0
    }
    /// Bytes requested: (NUMDU:NUMDL + 1) dwords.
    pub fn log_page_len_bytes(&self) -> u64 {
        let numdl = u64::from(self.cdw10.get() >> 16);
        let numdu = u64::from(self.cdw11.get() & 0xFFFF);
        (((numdu << 16) | numdl) + 1) * 4
    }
    pub fn log_page_offset_bytes(&self) -> u64 {
        u64::from(self.cdw12.get()) | (u64::from(self.cdw13.get()) << 32)
    }
    /// Encodes a Get Log Page for `len_bytes` (a multiple of 4, >= 4) at `offset_bytes`.
    pub fn set_log_page(&mut self, lid: u8, len_bytes: u32, offset_bytes: u64) {
        assert!(len_bytes >= 4 && len_bytes % 4 == 0);
        let numd = len_bytes / 4 - 1;
        self.cdw10 = U32::new(u32::from(lid) | ((numd & 0xFFFF) << 16));
        self.cdw11 = U32::new(numd >> 16);
        self.cdw12 = U32::new(offset_bytes as u32);
        self.cdw13 = U32::new((offset_bytes >> 32) as u32);
    }

    // --- Features ---
    pub fn feature_id(&self) -> u8 {
        self.cdw10.get() as u8
    }
    /// Set Features: save bit.
    pub fn feature_save(&self) -> bool {
        self.cdw10.get() & (1 << 31) != 0
    }
    /// Get Features: select (current, default, saved, supported capabilities).
    pub fn feature_select(&self) -> u8 {
        ((self.cdw10.get() >> 8) & 0x7) as u8
    }

    // --- Abort ---
    pub fn abort_sqid(&self) -> u16 {
        self.cdw10.get() as u16
    }
    pub fn abort_cid(&self) -> u16 {
        (self.cdw10.get() >> 16) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_matches_spec() {
        assert_eq!(offset_of!(Sqe, cid), 2);
        assert_eq!(offset_of!(Sqe, nsid), 4);
        assert_eq!(offset_of!(Sqe, mptr), 16);
        assert_eq!(offset_of!(Sqe, dptr), 24);
        assert_eq!(offset_of!(Sqe, cdw10), 40);
        assert_eq!(offset_of!(Sqe, cdw15), 60);
    }

    #[test]
    fn log_page_fields_roundtrip() {
        let mut sqe = Sqe::new(opcode::admin::GET_LOG_PAGE, 7);
        sqe.set_log_page(0x70, 4096, 1024);
        assert_eq!(sqe.log_page_id(), 0x70);
        assert_eq!(sqe.log_page_len_bytes(), 4096);
        assert_eq!(sqe.log_page_offset_bytes(), 1024);
        sqe.set_log_page(0x02, 0x40000 * 4, 1 << 33);
        assert_eq!(sqe.log_page_len_bytes(), 0x40000 * 4);
        assert_eq!(sqe.log_page_offset_bytes(), 1 << 33);
    }

    #[test]
    fn rw_fields_roundtrip() {
        let mut sqe = Sqe::new(opcode::io::READ, 1);
        sqe.set_slba(0x1_2345_6789);
        sqe.set_nlb(8);
        assert_eq!(sqe.slba(), 0x1_2345_6789);
        assert_eq!(sqe.nlb(), 8);
        assert_eq!(sqe.psdt(), PSDT_SGL_MPTR_CONTIG);
        sqe.set_fctype(4);
        assert_eq!(sqe.fctype(), 4);
    }
}
