//! SGL descriptors (NVMe base 4.4 / NVMe-oF).

use crate::status::Status;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Descriptor types (high nibble of byte 15).
pub mod sgl_type {
    pub const DATA_BLOCK: u8 = 0x0;
    pub const BIT_BUCKET: u8 = 0x1;
    pub const SEGMENT: u8 = 0x2;
    pub const LAST_SEGMENT: u8 = 0x3;
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// Descriptor subtypes (low nibble of byte 15).
pub mod sgl_subtype {
    pub const ADDRESS: u8 = 0x0;
    pub const OFFSET: u8 = 0x1;
    pub const TRANSPORT_SPECIFIC: u8 = 0xA;
    pub const INVALIDATE_KEY: u8 = 0xF;
}

/// A 16-byte SGL descriptor as found in the SQE's DPTR.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SglDescriptor {
    pub addr: U64,
    /// Bytes 8..15: length (3 or 4 bytes) and, for keyed descriptors, the key.
    pub body: [u8; 7],
    /// Type (bits 7:4) and subtype (bits 3:0).
    pub id: u8,
}
const _: () = assert!(core::mem::size_of::<SglDescriptor>() == 16);

/// A decoded SGL descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sgl {
    /// Data block with a host address (not used by RDMA hosts for data).
    DataBlock { addr: u64, len: u32 },
    /// In-capsule data at `offset` from the start of the capsule's data area.
    InCapsule { offset: u64, len: u32 },
    /// Remote memory the target reaches with RDMA READ/WRITE.
    Keyed {
        addr: u64,
        len: u32,
        key: u32,
        invalidate: bool,
    },
    /// Transport data block (TCP's data PDUs).
    Transport { len: u32 },
}

impl SglDescriptor {
    pub fn kind(&self) -> u8 {
        self.id >> 4
    }
    pub fn subtype(&self) -> u8 {
        self.id & 0xF
    }

    pub fn data_block(offset_in_capsule: u64, len: u32) -> SglDescriptor {
        let mut d = SglDescriptor {
            addr: U64::new(offset_in_capsule),
            ..Default::default()
        };
        d.body[..4].copy_from_slice(&len.to_le_bytes());
        d.id = (sgl_type::DATA_BLOCK << 4) | sgl_subtype::OFFSET;
        d
    }

    /// A transport data block (NVMe/TCP: data moves in data PDUs, not by address).
    pub fn transport_data_block(len: u32) -> SglDescriptor {
        let mut d = SglDescriptor::default();
        d.body[..4].copy_from_slice(&len.to_le_bytes());
        d.id = (sgl_type::TRANSPORT_DATA_BLOCK << 4) | sgl_subtype::TRANSPORT_SPECIFIC;
        d
    }

    /// A keyed descriptor; `len` must fit in 24 bits.
    pub fn keyed(addr: u64, len: u32, key: u32, invalidate: bool) -> SglDescriptor {
        assert!(len < (1 << 24), "keyed SGL length is 24 bits");
        let mut d = SglDescriptor {
            addr: U64::new(addr),
            ..Default::default()
        };
        d.body[..3].copy_from_slice(&len.to_le_bytes()[..3]);
        d.body[3..7].copy_from_slice(&key.to_le_bytes());
        let subtype = if invalidate {
            sgl_subtype::INVALIDATE_KEY
        } else {
            sgl_subtype::ADDRESS
        };
        d.id = (sgl_type::KEYED_DATA_BLOCK << 4) | subtype;
        d
    }

    fn len32(&self) -> u32 {
        u32::from_le_bytes([self.body[0], self.body[1], self.body[2], self.body[3]])
    }

    /// Decodes the descriptor, or names the status the spec gives for it.
    pub fn decode(&self) -> Result<Sgl, Status> {
        let addr = self.addr.get();
        match (self.kind(), self.subtype()) {
            (sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS) => Ok(Sgl::DataBlock {
                addr,
                len: self.len32(),
            }),
            (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => Ok(Sgl::InCapsule {
                offset: addr,
                len: self.len32(),
            }),
            (
                sgl_type::KEYED_DATA_BLOCK,
                st @ (sgl_subtype::ADDRESS | sgl_subtype::INVALIDATE_KEY),
            ) => {
                let len = u32::from_le_bytes([self.body[0], self.body[1], self.body[2], 0]);
                let key =
                    u32::from_le_bytes([self.body[3], self.body[4], self.body[5], self.body[6]]);
                Ok(Sgl::Keyed {
                    addr,
                    len,
                    key,
                    invalidate: st == sgl_subtype::INVALIDATE_KEY,
                })
            }
            (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT_SPECIFIC) => {
                Ok(Sgl::Transport { len: self.len32() })
            }
            (sgl_type::SEGMENT | sgl_type::LAST_SEGMENT, _) => {
                Err(Status::INVALID_NUMBER_OF_SGL_DESCRIPTORS)
            }
            _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
        }
    }
}

impl Sgl {
    pub fn len(&self) -> u32 {
        match *self {
            Sgl::DataBlock { len, .. }
            | Sgl::InCapsule { len, .. }
            | Sgl::Keyed { len, .. }
            | Sgl::Transport { len } => len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_roundtrip() {
        let d = SglDescriptor::keyed(0xdead_beef_0000, 0x12_3456, 0xabcd_ef01, true);
        assert_eq!(d.id, 0x4F);
        assert_eq!(
            d.decode(),
            Ok(Sgl::Keyed {
                addr: 0xdead_beef_0000,
                len: 0x12_3456,
                key: 0xabcd_ef01,
                invalidate: true
            })
        );
        let d = SglDescriptor::keyed(1, 0, 0, false);
        assert_eq!(d.id, 0x40);
        assert!(d.decode().unwrap().is_empty());
    }

    #[test]
    fn in_capsule_and_errors() {
        let d = SglDescriptor::data_block(0, 4096);
        assert_eq!(d.id, 0x01);
        assert_eq!(
            d.decode(),
            Ok(Sgl::InCapsule {
                offset: 0,
                len: 4096
            })
        );
        let mut bad = d;
        bad.id = 0x30;
        assert_eq!(bad.decode(), Err(Status::INVALID_NUMBER_OF_SGL_DESCRIPTORS));
        bad.id = 0x41;
        assert_eq!(bad.decode(), Err(Status::SGL_DESCRIPTOR_TYPE_INVALID));
        bad.id = 0x90;
        assert_eq!(bad.decode(), Err(Status::SGL_DESCRIPTOR_TYPE_INVALID));
    }
}
