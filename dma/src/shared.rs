//! Copies in and out of memory that another thread or a device may access at the same time:
//! RAM-disk blocks that two reactors read and write, a simulated host's memory, NVMe queues
//! and RDMA receive/response slots that a device writes or reads.
//!
//! Plain (`memcpy`) accesses to such memory would be a data race, which is undefined
//! behaviour whether or not a reference exists; volatile accesses do not help, since Rust
//! treats a race between volatile and other accesses as a data race too. Every byte is
//! therefore moved with relaxed atomic loads and stores of whole, aligned 8-byte words, and
//! only of those: Rust also forbids racing atomic accesses of different sizes to the same
//! bytes, so a partial word (an unaligned head or tail) is read as its whole word and written
//! by a compare-and-swap of its whole word that changes only our bytes. On x86-64 and AArch64
//! a relaxed word load or store is an ordinary `mov`/`ldr`/`str`: no fence, lock or syscall;
//! this only gives up the vector registers `memcpy` would use (a 4 KiB block is 512 word
//! moves). Block-aligned I/O never takes the compare-and-swap path. Overlapping concurrent
//! copies leave unspecified, possibly mixed bytes, just as two overlapping I/Os do on a real
//! disk; they are never undefined behaviour.
//!
//! Ordering between the copies and whatever publishes them (a completion, a message between
//! reactors, a CQE phase tag) comes from that publication, not from these relaxed accesses.

use std::sync::atomic::{AtomicU64, Ordering};

const WORD: usize = size_of::<u64>();

/// The aligned word holding the byte at `p`, and the byte's index in it.
fn word_of(p: *mut u8) -> (*mut u64, usize) {
    let first = p as usize % WORD;
    (p.wrapping_sub(first).cast::<u64>(), first)
}

/// # Safety
/// `word` is 8-byte aligned, inside a live allocation, and only ever accessed atomically by
/// whole words (the contract of this module's public functions).
unsafe fn atomic<'a>(word: *mut u64) -> &'a AtomicU64 {
    // SAFETY: per the contract.
    unsafe { AtomicU64::from_ptr(word) }
}

/// Stores `bytes` at byte `first` of `word`, leaving its other bytes as they are.
///
/// # Safety
/// As for [`atomic`]; `first + bytes.len() <= 8`.
unsafe fn store_part(word: *mut u64, first: usize, bytes: &[u8]) {
    let (mut value, mut mask) = ([0u8; WORD], [0u8; WORD]);
    value[first..first + bytes.len()].copy_from_slice(bytes);
    mask[first..first + bytes.len()].fill(0xff);
    let (value, mask) = (u64::from_ne_bytes(value), u64::from_ne_bytes(mask));
    // SAFETY: per the contract.
    let cell = unsafe { atomic(word) };
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(old & !mask | value)
    });
}

/// Splits `len` bytes at address `at` into a head (bytes before the first word
/// boundary), whole words, and a tail.
fn split(at: usize, len: usize) -> (usize, usize, usize) {
    let head = (at.wrapping_neg() % WORD).min(len);
    let words = (len - head) / WORD;
    (head, words, len - head - words * WORD)
}

/// Copies `src` to `dst` with relaxed atomic word stores.
///
/// # Safety
/// Every 8-byte-aligned word that overlaps `dst..dst + src.len()` must lie in one allocation
/// (or mapping) that stays alive for the call, and every access to those words that may
/// happen at the same time must be a whole-word atomic one (this module's functions) or a
/// device's. `src` must not overlap them (a `&[u8]` to memory reached only through this
/// module cannot exist).
pub(crate) unsafe fn copy_in(dst: *mut u8, src: &[u8]) {
    let (head, words, tail) = split(dst as usize, src.len());
    if head > 0 {
        let (word, first) = word_of(dst);
        // SAFETY: the word holding the range's first bytes; first + head <= 8.
        unsafe { store_part(word, first, &src[..head]) };
    }
    // The body: whole aligned words, one relaxed store (a plain `mov`) each. This loop is
    // the RAM disk's and the loopback wire's copy, so it is kept free of per-word checks.
    let body = dst.wrapping_add(head).cast::<u64>();
    for (i, chunk) in src[head..head + words * WORD]
        .chunks_exact(WORD)
        .enumerate()
    {
        let value = u64::from_ne_bytes(chunk.try_into().expect("one word"));
        // SAFETY: an aligned word inside the caller's range, accessed atomically only.
        unsafe { atomic(body.wrapping_add(i)) }.store(value, Ordering::Relaxed);
    }
    if tail > 0 {
        let at = head + words * WORD;
        // SAFETY: the word holding the range's last bytes, which starts there (offset 0).
        unsafe { store_part(dst.wrapping_add(at).cast::<u64>(), 0, &src[at..]) };
    }
}

/// Copies from `src` into `dst` with relaxed atomic word loads.
///
/// # Safety
/// As for [`copy_in`], with the range `src..src + dst.len()`; `dst` must not overlap it.
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    // Loads only: the *mut is what from_ptr takes; nothing is written through it.
    let src = src.cast_mut();
    let (head, words, tail) = split(src as usize, dst.len());
    if head > 0 {
        let (word, first) = word_of(src);
        // SAFETY: the word holding the range's first bytes.
        let value = unsafe { atomic(word) }
            .load(Ordering::Relaxed)
            .to_ne_bytes();
        dst[..head].copy_from_slice(&value[first..first + head]);
    }
    let body = src.wrapping_add(head).cast::<u64>();
    for (i, chunk) in dst[head..head + words * WORD]
        .chunks_exact_mut(WORD)
        .enumerate()
    {
        // SAFETY: an aligned word inside the caller's range, accessed atomically only.
        let value = unsafe { atomic(body.wrapping_add(i)) }.load(Ordering::Relaxed);
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    if tail > 0 {
        let at = head + words * WORD;
        // SAFETY: the word holding the range's last bytes, which starts there.
        let value = unsafe { atomic(src.wrapping_add(at).cast::<u64>()) }
            .load(Ordering::Relaxed)
            .to_ne_bytes();
        dst[at..].copy_from_slice(&value[..tail]);
    }
}

/// Zeroes `len` bytes at `dst` with relaxed atomic word stores.
///
/// # Safety
/// As for [`copy_in`] with a source of `len` zero bytes.
pub(crate) unsafe fn fill_zero(dst: *mut u8, len: usize) {
    let (head, words, tail) = split(dst as usize, len);
    if head > 0 {
        let (word, first) = word_of(dst);
        // SAFETY: the range's first word; first + head <= 8.
        unsafe { store_part(word, first, &[0; WORD][..head]) };
    }
    let body = dst.wrapping_add(head).cast::<u64>();
    for i in 0..words {
        // SAFETY: an aligned word inside the caller's range, accessed atomically only.
        unsafe { atomic(body.wrapping_add(i)) }.store(0, Ordering::Relaxed);
    }
    if tail > 0 {
        let at = dst.wrapping_add(head + words * WORD).cast::<u64>();
        // SAFETY: the range's last word, from its start.
        unsafe { store_part(at, 0, &[0; WORD][..tail]) };
    }
}

/// One relaxed atomic load of the little-endian u16 at `src` (e.g. an NVMe CQE's status word
/// with its phase tag), read anew on every call: the load of its whole word.
///
/// # Safety
/// `src` is 2-byte aligned; otherwise as for [`copy_out`] with 2 bytes.
pub(crate) unsafe fn load_u16_le(src: *const u8) -> u16 {
    debug_assert_eq!(src as usize % 2, 0);
    let mut bytes = [0u8; 2];
    // SAFETY: per the contract; 2-byte alignment keeps both bytes in one word.
    unsafe { copy_out(src, &mut bytes) };
    u16::from_le_bytes(bytes)
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

    /// Two threads writing unaligned, overlapping ranges of the same words: no race (Miri
    /// checks), and bytes outside both ranges are kept.
    #[test]
    fn concurrent_unaligned_writers_keep_other_bytes() {
        #[derive(Clone, Copy)]
        struct Shared(*mut u8);
        // SAFETY: the pointee is only reached through this module's atomic copies.
        unsafe impl Send for Shared {}
        // SAFETY: as for Send.
        unsafe impl Sync for Shared {}

        let mut backing = [0u64; 4];
        let base = Shared(backing.as_mut_ptr().cast::<u8>());
        std::thread::scope(|s| {
            for (start, byte) in [(3usize, 0xaau8), (9, 0xbb)] {
                s.spawn(move || {
                    let base = base;
                    // SAFETY: inside `backing`, which outlives the scope; only these
                    // atomic copies touch it meanwhile.
                    unsafe { copy_in(base.0.add(start), &[byte; 13]) };
                });
            }
        });
        let mut all = [0u8; 32];
        // SAFETY: the whole of `backing`; the writers are done.
        unsafe { copy_out(base.0, &mut all) };
        assert!(all[..3].iter().all(|&b| b == 0));
        assert!(all[3..22].iter().all(|&b| b == 0xaa || b == 0xbb));
        assert!(all[22..].iter().all(|&b| b == 0));
    }
}
