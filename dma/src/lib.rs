//! DMA-capable memory for the target: hugepage or ordinary regions (IOVA == virtual address),
//! fixed buffer pools carved from them at start-up, and the simulated host memory of the
//! loopback transport.
//!
//! This is the only crate of the target allowed `unsafe`. The rules it keeps:
//! - Regions are only reached through atomic copies (`DmaMemory::write_at` & co., see
//!   `shared`), since reactors and devices may touch the same bytes at once, or through
//!   `DmaBuf`s that each own a disjoint part exclusively; never both at once.
//! - Every `DmaBuf` keeps its mapping alive (its pool's `Arc`, or the region itself).
//! - Nothing allocates, locks or makes a syscall on the I/O path: pools and caches are sized
//!   at creation and the free list is a lock-free bounded queue.

#![warn(missing_debug_implementations)]

mod error;
mod host;
pub mod hugepages;
mod memory;
mod pool;
pub mod registry;
mod shared;

use std::fmt;

pub use error::DmaError;
pub use host::HostMemory;
pub use memory::{Backing, DmaMemory, PageSize, Placement, SMALL_PAGE_BYTES};
pub use pool::{BufPool, DmaBuf, PoolCache};
pub use registry::{DmaMapper, DmaRegistry, MapperRegistration, RegionRegistration};

/// Formats a byte count the way operators read it: "64 MiB", "1 GiB", "12 KiB", "100 bytes".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        let bytes = self.0;
        for (unit_bytes, name) in UNITS {
            if bytes >= unit_bytes {
                return if bytes % unit_bytes == 0 {
                    write!(f, "{} {name}", bytes / unit_bytes)
                } else {
                    // One decimal is enough to recognise a size; exact counts are in bytes.
                    write!(f, "{:.1} {name}", bytes as f64 / unit_bytes as f64)
                };
            }
        }
        write!(f, "{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_naturally() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1 GiB");
        assert_eq!(ByteSize(12 << 10).to_string(), "12 KiB");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1.5 MiB");
        assert_eq!(ByteSize(100).to_string(), "100 bytes");
        assert_eq!(ByteSize(0).to_string(), "0 bytes");
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<DmaMemory>();
        send_sync::<BufPool>();
        send_sync::<HostMemory>();
        send_sync::<DmaBuf>();
        send::<PoolCache>();
    }
}
