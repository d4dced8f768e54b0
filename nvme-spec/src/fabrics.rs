//! NVMe over Fabrics: Connect, properties, RDMA CM private data.

use crate::opcode::{fctype, FABRICS};
use crate::sgl::SglDescriptor;
use crate::sqe::Sqe;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Length of an NQN field (including the terminating NUL).
pub const NQN_FIELD_LEN: usize = 256;
/// Longest NQN the spec allows (excluding the terminating NUL).
pub const NQN_MAX_LEN: usize = 223;
/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Dynamic controller model: Connect asks the target to choose a cntlid.
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// Highest cntlid a target may assign (0xFFF0..=0xFFFF are reserved).
pub const CNTLID_MAX: u16 = 0xFFEF;

/// Fabrics Connect data, sent with Connect (1024 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ConnectData {
    pub hostid: [u8; 16],
    pub cntlid: U16,
    pub rsvd18: [u8; 238],
    pub subnqn: [u8; NQN_FIELD_LEN],
    pub hostnqn: [u8; NQN_FIELD_LEN],
    pub rsvd768: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<ConnectData>() == 1024);

/// IATTR values in a Connect Invalid Parameters response.
/// Connect's CATTR bit: the host disabled SQ flow control (no SQHD needed in responses).
pub const CATTR_DISABLE_SQFLOW: u8 = 1 << 2;

pub const IATTR_COMMAND: u8 = 0;
pub const IATTR_DATA: u8 = 1;

/// Byte offsets of Connect fields, used as IPO in error responses.
pub mod connect_offset {
    pub const RECFMT: u16 = 40;
    pub const QID: u16 = 42;
    pub const SQSIZE: u16 = 44;
    pub const KATO: u16 = 48;
    pub const DATA_CNTLID: u16 = 16;
    pub const DATA_SUBNQN: u16 = 256;
    pub const DATA_HOSTNQN: u16 = 512;
}

/// dw0 of a failed Connect's CQE: the invalid parameter's offset and place.
pub fn connect_invalid_param_dw0(iattr: u8, ipo: u16) -> u32 {
    u32::from(ipo) | (u32::from(iattr) << 16)
}

/// Typed view of a Connect command's fields.
pub trait ConnectCommand {
    fn connect_recfmt(&self) -> u16;
    fn connect_qid(&self) -> u16;
    /// 0-based submission queue size.
    fn connect_sqsize(&self) -> u16;
    fn connect_cattr(&self) -> u8;
    fn connect_kato_ms(&self) -> u32;
}

impl ConnectCommand for Sqe {
    fn connect_recfmt(&self) -> u16 {
        self.cdw10.get() as u16
    }
    fn connect_qid(&self) -> u16 {
        (self.cdw10.get() >> 16) as u16
    }
    fn connect_sqsize(&self) -> u16 {
        self.cdw11.get() as u16
    }
    fn connect_cattr(&self) -> u8 {
        (self.cdw11.get() >> 16) as u8
    }
    fn connect_kato_ms(&self) -> u32 {
        self.cdw12.get()
    }
}

/// Builds a Connect command (as a host would) whose data is described by `sgl`.
pub fn connect_command(
    cid: u16,
    qid: u16,
    sqsize_0based: u16,
    kato_ms: u32,
    sgl: SglDescriptor,
) -> Sqe {
    let mut sqe = Sqe::new(FABRICS, cid);
    sqe.set_fctype(fctype::CONNECT);
    sqe.dptr = sgl;
    sqe.cdw10 = U32::new(u32::from(qid) << 16);
    sqe.cdw11 = U32::new(u32::from(sqsize_0based));
    sqe.cdw12 = U32::new(kato_ms);
    sqe
}

/// Sets a Connect command's CATTR (connection attributes) byte.
pub fn set_connect_cattr(sqe: &mut Sqe, cattr: u8) {
    sqe.cdw11 = U32::new(sqe.cdw11.get() & 0xFF00_FFFF | u32::from(cattr) << 16);
}

/// Property Get/Set: ATTRIB size (byte 40 bits 2:0) and offset (bytes 44..47).
pub fn property_is_8_bytes(sqe: &Sqe) -> bool {
    sqe.cdw10.get() & 0x7 == 1
}
pub fn property_offset(sqe: &Sqe) -> u32 {
    sqe.cdw11.get()
}
/// Property Set's value (bytes 48..55).
pub fn property_set_value(sqe: &Sqe) -> u64 {
    u64::from(sqe.cdw12.get()) | (u64::from(sqe.cdw13.get()) << 32)
}

pub fn property_get_command(cid: u16, offset: u32, size_8: bool) -> Sqe {
    let mut sqe = Sqe::new(FABRICS, cid);
    sqe.set_fctype(fctype::PROPERTY_GET);
    sqe.cdw10 = U32::new(u32::from(size_8));
    sqe.cdw11 = U32::new(offset);
    sqe
}

pub fn property_set_command(cid: u16, offset: u32, value: u64, size_8: bool) -> Sqe {
    let mut sqe = Sqe::new(FABRICS, cid);
    sqe.set_fctype(fctype::PROPERTY_SET);
    sqe.cdw10 = U32::new(u32::from(size_8));
    sqe.cdw11 = U32::new(offset);
    sqe.cdw12 = U32::new(value as u32);
    sqe.cdw13 = U32::new((value >> 32) as u32);
    sqe
}

/// Controller property (register) offsets.
pub mod property {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const INTMS: u32 = 0x0C;
    pub const INTMC: u32 = 0x10;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const NSSR: u32 = 0x20;
    pub const AQA: u32 = 0x24;
    pub const ASQ: u32 = 0x28;
    pub const ACQ: u32 = 0x30;
}

/// Controller Capabilities.
pub mod cap {
    /// Builds CAP from its fields. `mqes` is 0-based; `timeout_500ms` in 500 ms units.
    pub fn build(mqes: u16, timeout_500ms: u8, mpsmin: u8, mpsmax: u8) -> u64 {
        u64::from(mqes)
            | (1 << 16) // CQR: queues must be physically contiguous
            | (u64::from(timeout_500ms) << 24)
            | (1 << 37) // CSS: NVM command set
            | (u64::from(mpsmin & 0xF) << 48)
            | (u64::from(mpsmax & 0xF) << 52)
    }
    pub fn mqes(cap: u64) -> u16 {
        cap as u16
    }
    pub fn timeout_500ms(cap: u64) -> u8 {
        (cap >> 24) as u8
    }
    pub fn dstrd(cap: u64) -> u8 {
        ((cap >> 32) & 0xF) as u8
    }
    pub fn mpsmin(cap: u64) -> u8 {
        ((cap >> 48) & 0xF) as u8
    }
    pub fn mpsmax(cap: u64) -> u8 {
        ((cap >> 52) & 0xF) as u8
    }
    pub fn css_nvm(cap: u64) -> bool {
        cap & (1 << 37) != 0
    }
}

/// Controller Configuration.
pub mod cc {
    pub const EN: u32 = 1;
    pub const SHN_SHIFT: u32 = 14;
    pub const SHN_MASK: u32 = 0x3 << SHN_SHIFT;
    pub const SHN_NONE: u32 = 0;
    pub const SHN_NORMAL: u32 = 1;
    pub const SHN_ABRUPT: u32 = 2;
    pub fn enabled(cc: u32) -> bool {
        cc & EN != 0
    }
    pub fn css(cc: u32) -> u8 {
        ((cc >> 4) & 0x7) as u8
    }
    pub fn mps(cc: u32) -> u8 {
        ((cc >> 7) & 0xF) as u8
    }
    pub fn ams(cc: u32) -> u8 {
        ((cc >> 11) & 0x7) as u8
    }
    pub fn shn(cc: u32) -> u32 {
        (cc & SHN_MASK) >> SHN_SHIFT
    }
    pub fn iosqes(cc: u32) -> u8 {
        ((cc >> 16) & 0xF) as u8
    }
    pub fn iocqes(cc: u32) -> u8 {
        ((cc >> 20) & 0xF) as u8
    }
    /// What Linux writes: EN, IOSQES 6, IOCQES 4, MPS 0, CSS NVM.
    pub fn build(enable: bool, iosqes: u8, iocqes: u8, shn: u32) -> u32 {
        u32::from(enable)
            | (u32::from(iosqes) << 16)
            | (u32::from(iocqes) << 20)
            | (shn << SHN_SHIFT)
    }
}

/// Controller Status.
pub mod csts {
    pub const RDY: u32 = 1;
    pub const CFS: u32 = 1 << 1;
    pub const SHST_SHIFT: u32 = 2;
    pub const SHST_MASK: u32 = 0x3 << SHST_SHIFT;
    pub const SHST_NORMAL: u32 = 0;
    pub const SHST_OCCURRING: u32 = 1;
    pub const SHST_COMPLETE: u32 = 2;
    pub fn shst(csts: u32) -> u32 {
        (csts & SHST_MASK) >> SHST_SHIFT
    }
}

/// Version property value for NVMe `major.minor.tertiary`.
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// RDMA CM private data (NVMe-oF RDMA transport binding).
pub mod rdma {
    use zerocopy::little_endian::U16;
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    /// Sent by the host with the CM connect request.
    #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(C)]
    pub struct CmRequest {
        pub recfmt: U16,
        pub qid: U16,
        /// Host receive queue size (1-based).
        pub hrqsize: U16,
        /// Host submission queue size (0-based).
        pub hsqsize: U16,
        pub cntlid: U16,
        pub rsvd: [u8; 22],
    }
    const _: () = assert!(core::mem::size_of::<CmRequest>() == 32);

    /// Sent by the target with the CM accept.
    #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(C)]
    pub struct CmAccept {
        pub recfmt: U16,
        /// Controller receive queue size (1-based).
        pub crqsize: U16,
        pub rsvd: [u8; 28],
    }
    const _: () = assert!(core::mem::size_of::<CmAccept>() == 32);

    /// Sent by the target with a CM reject.
    #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(C)]
    pub struct CmReject {
        pub recfmt: U16,
        pub status: U16,
    }
    const _: () = assert!(core::mem::size_of::<CmReject>() == 4);

    /// Reject status codes.
    pub mod reject {
        pub const INVALID_PRIVATE_DATA_LENGTH: u16 = 0x01;
        pub const INVALID_RECFMT: u16 = 0x02;
        pub const INVALID_QID: u16 = 0x03;
        pub const INVALID_HSQSIZE: u16 = 0x04;
        pub const INVALID_HRQSIZE: u16 = 0x05;
        pub const NO_RESOURCES: u16 = 0x06;
        pub const INVALID_IRD: u16 = 0x07;
        pub const INVALID_ORD: u16 = 0x08;
        pub const INVALID_CNTLID: u16 = 0x09;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn cattr_sits_beside_sqsize_without_touching_it() {
        let mut sqe = connect_command(3, 1, 127, 5000, SglDescriptor::default());
        set_connect_cattr(&mut sqe, CATTR_DISABLE_SQFLOW);
        assert_eq!(sqe.connect_cattr(), CATTR_DISABLE_SQFLOW);
        assert_eq!((sqe.connect_sqsize(), sqe.connect_qid()), (127, 1));
        set_connect_cattr(&mut sqe, 0);
        assert_eq!((sqe.connect_cattr(), sqe.connect_sqsize()), (0, 127));
    }

    #[test]
    fn connect_data_layout() {
        assert_eq!(offset_of!(ConnectData, cntlid), 16);
        assert_eq!(offset_of!(ConnectData, subnqn), 256);
        assert_eq!(offset_of!(ConnectData, hostnqn), 512);
    }

    #[test]
    fn connect_fields() {
        let sqe = connect_command(3, 2, 127, 5000, SglDescriptor::keyed(0, 1024, 9, false));
        assert_eq!(sqe.fctype(), fctype::CONNECT);
        assert_eq!(sqe.connect_qid(), 2);
        assert_eq!(sqe.connect_sqsize(), 127);
        assert_eq!(sqe.connect_kato_ms(), 5000);
        assert_eq!(sqe.connect_recfmt(), 0);
        assert_eq!(sqe.as_bytes()[42], 2);
        assert_eq!(sqe.as_bytes()[44], 127);
    }

    #[test]
    fn registers() {
        let c = cap::build(127, 30, 0, 0);
        assert_eq!(cap::mqes(c), 127);
        assert_eq!(cap::timeout_500ms(c), 30);
        assert!(cap::css_nvm(c));
        let v = cc::build(true, 6, 4, cc::SHN_NORMAL);
        assert!(cc::enabled(v));
        assert_eq!(
            (cc::iosqes(v), cc::iocqes(v), cc::shn(v)),
            (6, 4, cc::SHN_NORMAL)
        );
        assert_eq!(version(1, 3, 0), 0x0001_0300);
        let p = property_set_command(1, property::CC, 0x46_0001, false);
        assert_eq!(property_offset(&p), property::CC);
        assert_eq!(property_set_value(&p), 0x46_0001);
        assert!(!property_is_8_bytes(&p));
    }
}
