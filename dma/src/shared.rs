//! Copies in and out of memory that another thread or a device may access at the same time:
//! RAM-disk blocks that two reactors read and write, a simulated host's memory, NVMe queues
//! and RDMA receive/response slots that a device writes or reads.
//!
//! Plain (`memcpy`) accesses to such memory would be a data race, which is undefined
//! behaviour whether or not a reference exists; volatile accesses do not help, since Rust
//! treats a race between volatile and other accesses as a data race too. Every byte is
//! therefore moved with a relaxed atomic load or store: 8-byte words where the region side
//! is aligned, single bytes at an unaligned head and tail. On x86-64 and AArch64 a relaxed
//! atomic load or store is an ordinary `mov`/`ldr`/`str`, so this costs no fence, lock or
//! syscall; it only gives up the vector registers `memcpy` would use (a 4 KiB block is 512
//! word moves). Overlapping concurrent copies leave unspecified, possibly mixed bytes, just
//! as two overlapping I/Os do on a real disk; they are never undefined behaviour.
//!
//! Ordering between the copies and whatever publishes them (a completion, a message between
//! reactors, a CQE phase tag) comes from that publication, not from these relaxed accesses.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};

const WORD: usize = size_of::<u64>();

/// Bytes from `addr` to the next 8-byte boundary (0 when aligned).
fn head_len(addr: usize) -> usize {
    addr.wrapping_neg() % WORD
}

/// Copies `src` to `dst` with relaxed atomic stores.
///
/// # Safety
/// `dst..dst + src.len()` must be valid for writes, lie in one allocation (or mapping) that
/// stays alive for the call, and every other access to those bytes that may happen at the
/// same time must be atomic too (the copies of this module, or a device). `src` must not
/// overlap it (a `&[u8]` to memory only ever reached through this module cannot exist).
pub(crate) unsafe fn copy_in(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let head = head_len(dst as usize).min(len);
    let words = (len - head) / WORD;
    for (i, &byte) in src[..head].iter().enumerate() {
        // SAFETY: dst + i is in the caller's range; u8 atomics need no alignment; the caller
        // guarantees concurrent accesses are atomic.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(byte, Ordering::Relaxed);
    }
    for w in 0..words {
        let at = head + w * WORD;
        let value = u64::from_ne_bytes(src[at..at + WORD].try_into().expect("8 bytes"));
        // SAFETY: dst + at is 8-byte aligned (head reached the boundary) and the word lies in
        // the caller's range; concurrent accesses are atomic per the contract.
        unsafe { AtomicU64::from_ptr(dst.add(at).cast::<u64>()) }.store(value, Ordering::Relaxed);
    }
    for (i, &byte) in src.iter().enumerate().skip(head + words * WORD) {
        // SAFETY: as for the head bytes.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(byte, Ordering::Relaxed);
    }
}

/// Copies from `src` into `dst` with relaxed atomic loads.
///
/// # Safety
/// `src..src + dst.len()` must be valid for reads, lie in one live allocation (or mapping),
/// and every access to those bytes that may happen at the same time must be atomic (the
/// copies of this module, or a device). `dst` must not overlap it.
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = head_len(src as usize).min(len);
    let words = (len - head) / WORD;
    for (i, byte) in dst[..head].iter_mut().enumerate() {
        // SAFETY: src + i is in the caller's range; the loads only read. The pointer is cast
        // to *mut because from_ptr wants one; nothing is written through it.
        *byte = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
    }
    for w in 0..words {
        let at = head + w * WORD;
        // SAFETY: src + at is 8-byte aligned and the word lies in the caller's range; a load
        // writes nothing.
        let value = unsafe { AtomicU64::from_ptr(src.add(at).cast_mut().cast::<u64>()) }
            .load(Ordering::Relaxed);
        dst[at..at + WORD].copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in dst.iter_mut().enumerate().skip(head + words * WORD) {
        // SAFETY: as for the head bytes.
        *byte = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
    }
}

/// Zeroes `len` bytes at `dst` with relaxed atomic stores.
///
/// # Safety
/// As for [`copy_in`] with a source of `len` zero bytes.
pub(crate) unsafe fn fill_zero(dst: *mut u8, len: usize) {
    let head = head_len(dst as usize).min(len);
    let words = (len - head) / WORD;
    for i in (0..head).chain(head + words * WORD..len) {
        // SAFETY: dst + i is in the caller's range; concurrent accesses are atomic.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(0, Ordering::Relaxed);
    }
    for w in 0..words {
        // SAFETY: aligned word inside the caller's range.
        unsafe { AtomicU64::from_ptr(dst.add(head + w * WORD).cast::<u64>()) }
            .store(0, Ordering::Relaxed);
    }
}

/// One relaxed atomic load of the little-endian u16 at `src` (e.g. an NVMe CQE's status word
/// with its phase tag), read anew on every call.
///
/// # Safety
/// `src` must be 2-byte aligned, valid for reads of 2 bytes in a live allocation, and every
/// concurrent access to them atomic (or a device's).
pub(crate) unsafe fn load_u16_le(src: *const u8) -> u16 {
    // SAFETY: alignment, validity and atomicity of concurrent accesses per the contract.
    u16::from_le(
        unsafe { AtomicU16::from_ptr(src.cast_mut().cast::<u16>()) }.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment of start and length against a word-aligned buffer.
    #[test]
    fn copies_handle_unaligned_heads_and_tails() {
        let mut backing = [0u64; 8];
        let base = backing.as_mut_ptr().cast::<u8>();
        let pattern: Vec<u8> = (1..=64u8).collect();
        for start in 0..16 {
            for len in 0..(48 - start) {
                // SAFETY: [base + start, + len) lies in `backing`, touched only by these calls.
                unsafe {
                    fill_zero(base, 64);
                    copy_in(base.add(start), &pattern[..len]);
                }
                let mut all = [0xffu8; 64];
                // SAFETY: the whole of `backing`.
                unsafe { copy_out(base, &mut all) };
                assert!(all[..start].iter().all(|&b| b == 0), "{start}/{len}");
                assert_eq!(&all[start..start + len], &pattern[..len], "{start}/{len}");
                assert!(all[start + len..].iter().all(|&b| b == 0), "{start}/{len}");
                let mut part = vec![0u8; len];
                // SAFETY: inside `backing`.
                unsafe { copy_out(base.add(start), &mut part) };
                assert_eq!(part, &pattern[..len]);
            }
        }
        // SAFETY: bytes 2..4 of `backing`, 2-byte aligned.
        let word = unsafe {
            copy_in(base.add(2), &[0x34, 0x12]);
            load_u16_le(base.add(2))
        };
        assert_eq!(word, 0x1234);
    }
}
