//! The 16-byte completion queue entry.

use crate::status::Status;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Cqe {
    /// Command specific (e.g. Connect's cntlid, Property Get's value low half).
    pub dw0: U32,
    pub dw1: U32,
    pub sqhd: U16,
    pub sqid: U16,
    pub cid: U16,
    /// Phase tag (bit 0) and status field (bits 15:1).
    pub status: U16,
}
const _: () = assert!(core::mem::size_of::<Cqe>() == 16);

impl Cqe {
    pub fn status(&self) -> Status {
        Status::from_field(self.status.get())
    }
    pub fn set_status(&mut self, status: Status) {
        let phase = self.status.get() & 1;
        self.status = U16::new(status.to_field() | phase);
    }
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }
    pub fn sqhd(&self) -> u16 {
        self.sqhd.get()
    }
    pub fn dw0(&self) -> u32 {
        self.dw0.get()
    }
    /// dw0 and dw1 as one 64-bit value (Property Get of an 8-byte property).
    pub fn value_u64(&self) -> u64 {
        u64::from(self.dw0.get()) | (u64::from(self.dw1.get()) << 32)
    }
    pub fn set_value_u64(&mut self, v: u64) {
        self.dw0 = U32::new(v as u32);
        self.dw1 = U32::new((v >> 32) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn status_keeps_phase() {
        let mut cqe = Cqe {
            status: U16::new(1),
            ..Default::default()
        };
        cqe.set_status(Status::INVALID_OPCODE);
        assert_eq!(cqe.status(), Status::INVALID_OPCODE);
        assert_eq!(cqe.status.get() & 1, 1);
        assert_eq!(core::mem::offset_of!(Cqe, sqhd), 8);
        assert_eq!(core::mem::offset_of!(Cqe, status), 14);
    }
}
