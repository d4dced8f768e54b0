//! Memory of a simulated remote host (the loopback transport's initiator). The target only
//! copies in and out of it, as a NIC does with RDMA READ/WRITE on registered host memory.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::memory::SMALL_PAGE_BYTES;
use crate::shared;
use crate::DmaError;

pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: HostMemory owns its allocation and exposes it only through bounds-checked raw
// copies (never references), so moving it between threads is fine.
unsafe impl Send for HostMemory {}
// SAFETY: shared access from the host thread and a reactor thread goes through write_at /
// read_at, which copy with atomic loads and stores and never create references to the bytes;
// overlapping concurrent access only yields unspecified bytes, as with real RDMA into host
// memory, never a data race.
unsafe impl Sync for HostMemory {}

impl fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemory")
            .field("len", &self.len)
            .finish()
    }
}

impl HostMemory {
    /// Zeroed, page-aligned memory of `len` bytes. Allocate at set-up, not per I/O.
    pub fn new(len: usize) -> Arc<HostMemory> {
        let ptr = if len == 0 {
            NonNull::dangling()
        } else {
            let layout = Self::layout(len);
            // SAFETY: layout has a non-zero size (len > 0) and a valid power-of-two alignment.
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        };
        Arc::new(HostMemory { ptr, len })
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, SMALL_PAGE_BYTES).expect("host memory size overflows")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into host memory at `offset`.
    pub fn write_at(&self, offset: u64, src: &[u8]) -> Result<(), DmaError> {
        let start = self.check(offset, src.len())?;
        // SAFETY: check() proved start + src.len() <= len, inside our allocation. `src`
        // cannot alias it because HostMemory never hands out references to its bytes. Every
        // access to the bytes is one of these atomic copies (see the Sync impl).
        unsafe { shared::copy_in(self.ptr.as_ptr().add(start), src) };
        Ok(())
    }

    /// Copies host memory at `offset` into `dst`.
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), DmaError> {
        let start = self.check(offset, dst.len())?;
        // SAFETY: in bounds per check(); `dst` is an exclusive borrow that cannot point into
        // our allocation (no references to it exist). Atomic copy as in write_at.
        unsafe { shared::copy_out(self.ptr.as_ptr().add(start), dst) };
        Ok(())
    }

    /// Returns the start offset as usize when [offset, offset + len) fits; overflow-safe.
    fn check(&self, offset: u64, len: usize) -> Result<usize, DmaError> {
        let fits = usize::try_from(offset)
            .ok()
            .and_then(|start| start.checked_add(len).map(|end| (start, end)));
        match fits {
            Some((start, end)) if end <= self.len => Ok(start),
            _ => Err(DmaError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in new() with exactly this layout; dropped once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_zeroed_start() {
        let host = HostMemory::new(10_000);
        assert_eq!(host.len(), 10_000);
        let mut out = [1u8; 16];
        host.read_at(9_984, &mut out).unwrap();
        assert_eq!(out, [0u8; 16]);
        host.write_at(9_990, b"0123456789").unwrap();
        let mut back = [0u8; 10];
        host.read_at(9_990, &mut back).unwrap();
        assert_eq!(&back, b"0123456789");
    }

    #[test]
    fn bounds_are_checked_without_overflow() {
        let host = HostMemory::new(4096);
        assert!(matches!(
            host.write_at(4095, &[0, 0]),
            Err(DmaError::OutOfBounds {
                offset: 4095,
                len: 2,
                size: 4096
            })
        ));
        let mut buf = [0u8; 8];
        assert!(matches!(
            host.read_at(u64::MAX, &mut buf),
            Err(DmaError::OutOfBounds { .. })
        ));
        assert!(matches!(
            host.read_at(u64::MAX - 3, &mut buf),
            Err(DmaError::OutOfBounds { .. })
        ));
        host.write_at(4096, &[]).unwrap();
        assert!(host.write_at(4097, &[]).is_err());
    }

    #[test]
    fn empty_host_memory_rejects_any_byte() {
        let host = HostMemory::new(0);
        assert!(host.is_empty());
        host.read_at(0, &mut []).unwrap();
        assert!(host.write_at(0, &[1]).is_err());
    }

    #[test]
    fn shared_between_threads() {
        let host = HostMemory::new(8192);
        let writer = {
            let host = Arc::clone(&host);
            std::thread::spawn(move || host.write_at(4096, &[9u8; 4096]).unwrap())
        };
        writer.join().unwrap();
        let mut back = [0u8; 4096];
        host.read_at(4096, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 9));
    }
}
