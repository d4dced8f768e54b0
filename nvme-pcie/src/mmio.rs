//! Register access: the `Mmio` trait, its real implementation over a mapped BAR0, and a fake
//! register file for tests.
//!
//! Everything above this module (init, queues) talks to registers only through `Mmio`, so it
//! is tested against fakes; only `Bar0` touches device memory.

#[cfg(any(test, feature = "testing"))]
use std::cell::RefCell;
use std::fmt;
use std::ptr::NonNull;

/// 32- and 64-bit register access at a byte offset in BAR0.
///
/// Methods take `&self`: registers are device state, not Rust memory, and a queue pair needs
/// its doorbells while the controller keeps its own handle.
pub trait Mmio {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);

    /// Two 32-bit reads, low half first. Only CAP is read this way, and it does not change.
    fn read64(&self, offset: usize) -> u64 {
        let low = self.read32(offset);
        let high = self.read32(offset + 4);
        u64::from(low) | (u64::from(high) << 32)
    }

    /// Two 32-bit writes, low half then high: many controllers do not accept a 64-bit write
    /// to ASQ/ACQ, and the spec allows splitting it.
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

impl<M: Mmio + ?Sized> Mmio for &M {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

impl<M: Mmio + ?Sized> Mmio for std::sync::Arc<M> {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

/// BAR0 of a controller, mapped into this process (by `vfio`). Owns the mapping and unmaps it
/// on drop.
pub struct Bar0 {
    base: NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: Bar0 is a pointer to device registers, not to Rust-owned memory. Every access is a
// single aligned volatile 32-bit load or store, which the device serialises itself; there is
// no Rust data behind it that two threads could race on. Which thread rings which doorbell
// is the queue owners' business (one queue pair per reactor).
unsafe impl Send for Bar0 {}
// SAFETY: see Send; `&Bar0` only permits those same volatile accesses.
unsafe impl Sync for Bar0 {}

impl Bar0 {
    /// Takes ownership of a BAR0 mapping.
    ///
    /// # Safety
    /// `base` must be the start of a live `mmap` of `len_bytes` bytes of the device's BAR0
    /// (a multiple of 4 bytes, shared, readable and writable), not unmapped by anyone else:
    /// `Bar0` unmaps it on drop.
    pub unsafe fn from_mapping(base: NonNull<u8>, len_bytes: usize) -> Bar0 {
        assert!(
            len_bytes >= 0x1008,
            "BAR0 of {len_bytes} bytes is too small for NVMe"
        );
        assert_eq!(
            base.as_ptr() as usize % 4,
            0,
            "BAR0 mapping is not 4-byte aligned"
        );
        Bar0 { base, len_bytes }
    }

    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Panics on an out-of-bounds or unaligned offset: both are driver bugs, and the check is
    /// what makes the volatile access below sound.
    fn register_ptr(&self, offset: usize) -> *mut u32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len_bytes,
            "register offset {offset:#x} outside BAR0 of {} bytes or unaligned",
            self.len_bytes
        );
        // SAFETY: offset + 4 <= len_bytes (checked above), so the result stays inside the
        // mapping that `from_mapping`'s contract says is live.
        unsafe { self.base.as_ptr().add(offset).cast::<u32>() }
    }
}

impl Mmio for Bar0 {
    fn read32(&self, offset: usize) -> u32 {
        let register = self.register_ptr(offset);
        // SAFETY: `register` is in bounds and 4-byte aligned (register_ptr), inside a live
        // mapping of device memory. Volatile, so the compiler neither elides nor merges it.
        unsafe { register.read_volatile() }
    }

    fn write32(&self, offset: usize, value: u32) {
        let register = self.register_ptr(offset);
        // SAFETY: as in read32.
        unsafe { register.write_volatile(value) }
    }
}

impl Drop for Bar0 {
    fn drop(&mut self) {
        // SAFETY: we own the mapping (from_mapping's contract) and nothing can use it after
        // drop: Bar0 hands out no pointers.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
        if rc != 0 {
            log::warn!(
                "munmap of BAR0 ({} bytes) failed: {}",
                self.len_bytes,
                std::io::Error::last_os_error()
            );
        }
    }
}

impl fmt::Debug for Bar0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bar0")
            .field("base", &self.base)
            .field("len_bytes", &self.len_bytes)
            .finish()
    }
}

/// A register file in ordinary memory that records every write, for tests of code above
/// `Mmio`. It has no controller behaviour: tests that need one wrap it (feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub struct FakeMmio {
    registers: RefCell<Vec<u32>>,
    writes: RefCell<Vec<(usize, u32)>>,
}

#[cfg(any(test, feature = "testing"))]
impl FakeMmio {
    /// A zeroed register file of `len_bytes` bytes (doorbells included: use at least
    /// 0x1000 + 8 * (queues) bytes).
    pub fn new(len_bytes: usize) -> FakeMmio {
        FakeMmio {
            registers: RefCell::new(vec![0; len_bytes.div_ceil(4)]),
            writes: RefCell::new(Vec::new()),
        }
    }

    /// Sets a register without recording a write (the "device" side).
    pub fn set32(&self, offset: usize, value: u32) {
        self.registers.borrow_mut()[Self::index(offset)] = value;
    }

    pub fn get32(&self, offset: usize) -> u32 {
        self.registers.borrow()[Self::index(offset)]
    }

    /// Every write so far, as (offset, value), oldest first.
    pub fn writes(&self) -> Vec<(usize, u32)> {
        self.writes.borrow().clone()
    }

    /// Writes so far to one offset.
    pub fn writes_to(&self, offset: usize) -> Vec<u32> {
        self.writes
            .borrow()
            .iter()
            .filter(|(o, _)| *o == offset)
            .map(|(_, v)| *v)
            .collect()
    }

    pub fn clear_writes(&self) {
        self.writes.borrow_mut().clear();
    }

    fn index(offset: usize) -> usize {
        assert_eq!(offset % 4, 0, "unaligned register offset {offset:#x}");
        offset / 4
    }
}

#[cfg(any(test, feature = "testing"))]
impl Mmio for FakeMmio {
    fn read32(&self, offset: usize) -> u32 {
        self.get32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.set32(offset, value);
        self.writes.borrow_mut().push((offset, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write64_is_low_then_high() {
        let fake = FakeMmio::new(0x2000);
        fake.write64(0x28, 0x1122_3344_5566_7788);
        assert_eq!(
            fake.writes(),
            vec![(0x28, 0x5566_7788), (0x2C, 0x1122_3344)]
        );
        assert_eq!(fake.read64(0x28), 0x1122_3344_5566_7788);
        assert_eq!(fake.writes_to(0x2C), vec![0x1122_3344]);
        fake.clear_writes();
        assert!(fake.writes().is_empty());
    }

    #[test]
    fn set32_is_not_a_driver_write() {
        let fake = FakeMmio::new(0x2000);
        fake.set32(0x1C, 1);
        assert_eq!(fake.read32(0x1C), 1);
        assert!(fake.writes().is_empty());
    }

    /// A Bar0 over ordinary anonymous memory.
    fn anonymous_bar(len_bytes: usize) -> Bar0 {
        // SAFETY: anonymous private mapping; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let base = NonNull::new(ptr.cast::<u8>()).unwrap();
        // SAFETY: a fresh mapping of len_bytes that only this Bar0 unmaps.
        unsafe { Bar0::from_mapping(base, len_bytes) }
    }

    #[test]
    fn bar0_reads_and_writes_a_mapping() {
        let bar = anonymous_bar(0x2000);
        bar.write64(0x28, 0xAABB_CCDD_0000_1000);
        assert_eq!(bar.read32(0x28), 0x1000);
        assert_eq!(bar.read32(0x2C), 0xAABB_CCDD);
        assert_eq!(bar.read64(0x28), 0xAABB_CCDD_0000_1000);
        bar.write32(0x1FFC, 7);
        assert_eq!(bar.read32(0x1FFC), 7);
    }

    #[test]
    #[should_panic(expected = "outside BAR0")]
    fn bar0_refuses_out_of_bounds() {
        let bar = anonymous_bar(0x2000);
        bar.read32(0x2000);
    }
}
