//! Wire formats of the NVMe base specification and NVMe over Fabrics.
//!
//! Every structure is `#[repr(C)]`, built only from byte-aligned little-endian
//! fields (`zerocopy::little_endian`), so its layout is exactly the wire layout
//! with no padding; each size is asserted at compile time and key offsets are
//! asserted in tests. Nothing here performs I/O.
//!
//! ## Design
//! - `sqe`/`cqe`: the 64-byte command and 16-byte completion, with typed
//!   accessors for the command dwords each command uses.
//! - `status`: status codes as a small `Copy` value carrying SCT, SC and DNR.
//! - `sgl`: the SGL descriptor and its decoded forms.
//! - `fabrics`: Fabrics command types, Connect data, properties (CAP, CC, CSTS),
//!   RDMA CM private data.
//! - `identify`, `log`, `features`: admin data structures.

#![forbid(unsafe_code)]

pub mod cqe;
pub mod fabrics;
pub mod features;
pub mod identify;
pub mod log;
pub mod opcode;
pub mod sgl;
pub mod sqe;
pub mod status;

pub use cqe::Cqe;
pub use sgl::{Sgl, SglDescriptor};
pub use sqe::Sqe;
pub use status::Status;

pub use zerocopy::little_endian::{U16, U32, U64};
pub use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Size of an NVMe queue entry as IOSQES/IOCQES exponents.
pub const SQE_SIZE_LOG2: u8 = 6;
pub const CQE_SIZE_LOG2: u8 = 4;

/// Broadcast namespace id.
pub const NSID_ALL: u32 = 0xFFFF_FFFF;

/// Copies `s` into a fixed, space-padded ASCII field (serial, model, firmware).
pub fn put_ascii_padded(field: &mut [u8], s: &str) {
    field.fill(b' ');
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Copies `s` into a fixed, NUL-padded string field (NQNs, addresses).
pub fn put_str_nul_padded(field: &mut [u8], s: &str) {
    field.fill(0);
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated (or full-length) string field. `None` when it is
/// not valid UTF-8 or has no terminator and `require_nul` is set.
pub fn get_str_nul_padded(field: &[u8], require_nul: bool) -> Option<&str> {
    let end = match field.iter().position(|&b| b == 0) {
        Some(end) => end,
        None if require_nul => return None,
        None => field.len(),
    };
    std::str::from_utf8(&field[..end]).ok()
}

/// Stores a 128-bit little-endian counter (SMART log fields).
pub fn put_u128(field: &mut [u8; 16], value: u128) {
    *field = value.to_le_bytes();
}
