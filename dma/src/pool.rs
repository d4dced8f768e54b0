//! Fixed pools of equal-size DMA buffers (units), carved from one region at start-up. The
//! global free list is a lock-free bounded queue of indexes; each reactor keeps a `PoolCache`
//! so most get/put pairs touch no shared cache line at all.
//!
//! A transfer larger than one unit takes a chain of units (`PoolCache::get_chain`): one
//! `DmaBuf` whose units are linked through the pool's link table, so a chain of any length is
//! a fixed-size value and taking one allocates nothing. Its bytes are reached unit by unit
//! (`chunks`, `iova_chunks`, `read_at`, `write_at`).

use std::fmt;
use std::ptr::NonNull;
use std::slice;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::memory::{DmaMemory, SMALL_PAGE_BYTES};
use crate::registry::{self, RegionRegistration};
use crate::DmaError;

/// Every pool's region is in the DMA registry (mapped for every VFIO device) for as long as
/// the pool lives, so any pool buffer may be handed to a device as it is.
pub struct BufPool {
    /// Declared before `memory`: the devices forget the region before it is unmapped.
    _registration: RegionRegistration,
    memory: DmaMemory,
    buf_size_bytes: usize,
    count: usize,
    /// Indexes of buffers not owned by any DmaBuf. Capacity == count, and each index is
    /// either here or in exactly one DmaBuf, so pushes never fail.
    free: ArrayQueue<u32>,
    /// For each unit of a chain, the next unit (`END` for the last). Written only by the
    /// chain's owner; ownership passes through the free list or a move of the DmaBuf, which
    /// order the accesses, so relaxed atomics suffice.
    links: Box<[AtomicU32]>,
}

/// The end of a chain in `BufPool::links`.
const END: u32 = u32::MAX;

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("buf_size_bytes", &self.buf_size_bytes)
            .field("count", &self.count)
            .field("available", &self.available())
            .field("memory", &self.memory)
            .finish()
    }
}

impl BufPool {
    /// Carves `count` buffers of `buf_size_bytes` (a multiple of 4096) from the start of
    /// `memory`, and registers the region for device DMA. The region's copy methods are
    /// disabled from then on, since DmaBufs hand out references into it.
    pub fn new(
        mut memory: DmaMemory,
        buf_size_bytes: usize,
        count: usize,
    ) -> Result<Arc<BufPool>, DmaError> {
        let total_bytes = Self::check_geometry(buf_size_bytes, count)?;
        if total_bytes > memory.len() {
            return Err(DmaError::PoolTooLarge {
                buf_size_bytes,
                count,
                memory_bytes: memory.len(),
            });
        }
        let registration = registry::global().register_region(memory.iova(), total_bytes as u64)?;
        memory.hand_to_buffers();
        let free = ArrayQueue::new(count);
        for index in 0..count {
            free.push(index as u32)
                .expect("free list sized to hold every buffer");
        }
        Ok(Arc::new(BufPool {
            _registration: registration,
            memory,
            buf_size_bytes,
            count,
            free,
            links: (0..count).map(|_| AtomicU32::new(END)).collect(),
        }))
    }

    /// A pool on ordinary memory sized exactly for the buffers; handy for tests.
    pub fn with_ordinary_memory(
        buf_size_bytes: usize,
        count: usize,
    ) -> Result<Arc<BufPool>, DmaError> {
        let total_bytes = Self::check_geometry(buf_size_bytes, count)?;
        let memory = DmaMemory::allocate_ordinary(total_bytes)?;
        Self::new(memory, buf_size_bytes, count)
    }

    /// Returns count * buf_size_bytes after checking both fit the DmaBuf fields.
    fn check_geometry(buf_size_bytes: usize, count: usize) -> Result<usize, DmaError> {
        if buf_size_bytes == 0
            || buf_size_bytes % SMALL_PAGE_BYTES != 0
            || buf_size_bytes > u32::MAX as usize
        {
            return Err(DmaError::InvalidBufSize { buf_size_bytes });
        }
        if count == 0 || count >= END as usize {
            return Err(DmaError::InvalidBufCount { count });
        }
        buf_size_bytes
            .checked_mul(count)
            .ok_or(DmaError::PoolSizeOverflow {
                buf_size_bytes,
                count,
            })
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size_bytes
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Buffers in the global free list (not counting those held in PoolCaches).
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// The whole region, e.g. to register one memory region with a NIC. Its copy methods
    /// return RegionOwnedByBuffers; only iova/len/as_ptr are meaningful.
    pub fn memory(&self) -> &DmaMemory {
        &self.memory
    }

    /// Takes a buffer from the global free list; None when it is empty.
    pub fn get(self: &Arc<Self>) -> Option<DmaBuf> {
        let index = self.free.pop()?;
        Some(self.chain_of(index, 1))
    }

    /// The DmaBuf owning the `units` units linked from `first` (already taken off the free
    /// list by the caller).
    fn chain_of(self: &Arc<Self>, first: u32, units: u32) -> DmaBuf {
        assert!((first as usize) < self.count, "corrupt free list: {first}");
        assert!(units >= 1);
        DmaBuf {
            ptr: self.unit_ptr(first),
            unit_bytes: self.buf_size_bytes as u32,
            units,
            index: first,
            iova: self.unit_iova(first),
            owner: Owner::Pool(Arc::clone(self)),
        }
    }

    fn unit_ptr(&self, index: u32) -> NonNull<u8> {
        let offset = index as usize * self.buf_size_bytes;
        // The whole pool lies inside the mapping (checked in new), so this cannot leave it.
        NonNull::new(self.memory.as_ptr().wrapping_add(offset))
            .expect("pool buffer address is never null")
    }

    fn unit_iova(&self, index: u32) -> u64 {
        self.memory.iova() + index as u64 * self.buf_size_bytes as u64
    }

    fn next_unit(&self, index: u32) -> u32 {
        self.links[index as usize].load(Ordering::Relaxed)
    }

    fn link(&self, index: u32, next: u32) {
        self.links[index as usize].store(next, Ordering::Relaxed);
    }

    /// Returns a buffer to the global free list. Panics if it came from another pool: that
    /// is a bug which would otherwise corrupt both pools. (Dropping a DmaBuf also returns it.)
    pub fn put(&self, buf: DmaBuf) {
        assert!(
            self.owns(&buf),
            "DmaBuf {} (iova {:#x}) returned to a pool it does not belong to",
            buf.index,
            buf.iova
        );
        drop(buf);
    }

    /// Whether `buf` came from this pool.
    pub fn owns(&self, buf: &DmaBuf) -> bool {
        match &buf.owner {
            Owner::Pool(pool) => std::ptr::eq(Arc::as_ptr(pool), self),
            Owner::Standalone { .. } => false,
        }
    }

    fn release(&self, index: u32) {
        assert!((index as usize) < self.count, "bad buffer index {index}");
        if self.free.push(index).is_err() {
            panic!("buffer {index} freed twice: the free list is already full");
        }
    }

    /// Releases every unit of the chain of `units` units from `first`.
    fn release_chain(&self, first: u32, units: u32) {
        let mut index = first;
        for _ in 0..units {
            let next = self.next_unit(index);
            self.release(index);
            index = next;
        }
    }
}

enum Owner {
    /// Keeps the pool, hence the mapping, alive while the buffer exists.
    Pool(Arc<BufPool>),
    /// A region of its own; held only so it is unmapped when the DmaBuf drops.
    /// Boxed: a DmaBuf stays small (it moves with every I/O), and standalone
    /// buffers are made only at start-up.
    Standalone { _region: Box<DmaMemory> },
}

/// Exclusive owner of one pool buffer, of a chain of them, or of a standalone DMA region. Not
/// Clone: moving it moves the ownership, which is what makes `as_mut_slice` and `chunks_mut`
/// sound. Dropping it returns its units to their pool's global free list.
pub struct DmaBuf {
    /// The first unit.
    ptr: NonNull<u8>,
    unit_bytes: u32,
    /// Units in the chain (1 for a single buffer or a standalone region).
    units: u32,
    /// The first unit's index (0 for a standalone region).
    index: u32,
    /// The first unit's device address.
    iova: u64,
    owner: Owner,
}

// SAFETY: a DmaBuf is the sole owner of [ptr, ptr + capacity) (pool indexes are handed out
// once; a standalone region belongs to it alone) and keeps the mapping alive through `owner`.
// Nothing about it is tied to a thread; BufPool and DmaMemory are Send + Sync.
unsafe impl Send for DmaBuf {}
// SAFETY: &DmaBuf only gives out &[u8] (shared reads); mutation needs &mut DmaBuf.
unsafe impl Sync for DmaBuf {}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("index", &self.index)
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("unit_bytes", &self.unit_bytes)
            .field("units", &self.units)
            .finish()
    }
}

impl DmaBuf {
    /// Turns a whole region into one buffer (index 0), e.g. for an admin command's data.
    pub fn from_memory(mut memory: DmaMemory) -> Result<DmaBuf, DmaError> {
        let size_bytes = memory.len();
        let unit_bytes =
            u32::try_from(size_bytes).map_err(|_| DmaError::RegionTooLargeForBuf { size_bytes })?;
        memory.hand_to_buffers();
        let ptr = NonNull::new(memory.as_ptr()).expect("mapping is never null");
        Ok(DmaBuf {
            ptr,
            unit_bytes,
            units: 1,
            index: 0,
            iova: memory.iova(),
            owner: Owner::Standalone {
                _region: Box::new(memory),
            },
        })
    }

    /// A standalone buffer on ordinary memory (capacity rounded up to 4 KiB). Start-up only:
    /// it mmaps.
    pub fn alloc_ordinary(capacity_bytes: usize) -> Result<DmaBuf, DmaError> {
        Self::from_memory(DmaMemory::allocate_ordinary(capacity_bytes)?)
    }

    /// Bytes in all its units.
    pub fn capacity(&self) -> usize {
        self.unit_bytes as usize * self.units as usize
    }

    /// Bytes in each unit.
    pub fn unit_bytes(&self) -> usize {
        self.unit_bytes as usize
    }

    /// Units in the chain (1 unless it is a chain).
    pub fn units(&self) -> u32 {
        self.units
    }

    /// The device address of the first unit (of all of it, when it has one unit).
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Index within its pool (0 for a standalone buffer).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A standalone buffer is not in the DMA registry: no device can reach it.
    pub fn is_standalone(&self) -> bool {
        matches!(self.owner, Owner::Standalone { .. })
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The whole buffer as one slice. Panics for a chain: its units are not contiguous
    /// (use `chunks`).
    pub fn as_slice(&self) -> &[u8] {
        assert_eq!(self.units, 1, "a chain of units has no single slice");
        self.unit_slice(self.ptr)
    }

    /// The whole buffer, mutably. Panics for a chain (use `chunks_mut`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert_eq!(self.units, 1, "a chain of units has no single slice");
        // SAFETY: as in `unit_slice`; &mut self makes this the only reference for its life.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.unit_bytes as usize) }
    }

    /// One unit of this buffer as a slice.
    fn unit_slice(&self, unit: NonNull<u8>) -> &[u8] {
        // SAFETY: `unit` is one of this DmaBuf's units (its first, or one reached through
        // its pool's links, which only this DmaBuf writes while it owns the chain):
        // [unit, unit + unit_bytes) lies in a live mapping (kept alive by `owner`),
        // initialized (anonymous memory starts zeroed), and owned by this DmaBuf alone; the
        // region's copy methods are disabled. The borrow of self prevents &mut for its life.
        unsafe { slice::from_raw_parts(unit.as_ptr(), self.unit_bytes as usize) }
    }

    /// The units' first bytes, in chain order.
    fn unit_ptrs(&self) -> impl Iterator<Item = (NonNull<u8>, u64)> + '_ {
        let pool = match &self.owner {
            Owner::Pool(pool) => Some(pool),
            Owner::Standalone { .. } => None,
        };
        let mut index = self.index;
        (0..self.units).map(move |k| {
            if k == 0 {
                return (self.ptr, self.iova);
            }
            let pool = pool.expect("only pool buffers chain");
            index = pool.next_unit(index);
            (pool.unit_ptr(index), pool.unit_iova(index))
        })
    }

    /// Each unit's bytes, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.unit_ptrs().map(|(p, _)| self.unit_slice(p))
    }

    /// Each unit's bytes, mutably, in order.
    pub fn chunks_mut(&mut self) -> impl Iterator<Item = &mut [u8]> + '_ {
        let unit_bytes = self.unit_bytes as usize;
        let ptrs = self.unit_ptrs().map(|(p, _)| p);
        // SAFETY: as in `unit_slice`; the units are disjoint, so the slices handed out do
        // not overlap, and &mut self keeps any other reference away while they live.
        ptrs.map(move |p| unsafe { slice::from_raw_parts_mut(p.as_ptr(), unit_bytes) })
    }

    /// Each unit's device address and length, in order (what PRPs and SGEs name).
    pub fn iova_chunks(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        let unit_bytes = self.unit_bytes as usize;
        self.unit_ptrs().map(move |(_, iova)| (iova, unit_bytes))
    }

    /// Each unit's address in this process and length, in order (what an RDMA SGE names).
    pub fn addr_chunks(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        let unit_bytes = self.unit_bytes as usize;
        self.unit_ptrs()
            .map(move |(p, _)| (p.as_ptr() as u64, unit_bytes))
    }

    /// The `len` bytes from `offset`, unit by unit (a chain's units are not contiguous).
    /// Panics past the end.
    pub fn pieces(&self, offset: usize, len: usize) -> impl Iterator<Item = &[u8]> + '_ {
        assert!(offset + len <= self.capacity(), "past the buffer's end");
        window(self.chunks(), offset, len, |c, r| &c[r])
    }

    /// As `pieces`, mutably.
    pub fn pieces_mut(
        &mut self,
        offset: usize,
        len: usize,
    ) -> impl Iterator<Item = &mut [u8]> + '_ {
        assert!(offset + len <= self.capacity(), "past the buffer's end");
        window(self.chunks_mut(), offset, len, |c, r| &mut c[r])
    }

    /// Copies `dst.len()` bytes from `offset` (across units). Panics past the end.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        let mut at = 0;
        for piece in self.pieces(offset, dst.len()) {
            dst[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }

    /// Copies `src` to `offset` (across units). Panics past the end.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let mut at = 0;
        for piece in self.pieces_mut(offset, src.len()) {
            let n = piece.len();
            piece.copy_from_slice(&src[at..at + n]);
            at += n;
        }
    }

    /// Sets `len` bytes from `offset` (across units) to `byte`.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) {
        for piece in self.pieces_mut(offset, len) {
            piece.fill(byte);
        }
    }

    /// Gives up ownership of the units without releasing them; returns (first, units).
    fn into_chain(self) -> (u32, u32) {
        let this = std::mem::ManuallyDrop::new(self);
        let (first, units) = (this.index, this.units);
        // SAFETY: `this` is never used or dropped again; reading its owner out moves the
        // Arc (or region) exactly once, so it is dropped once, here.
        drop(unsafe { std::ptr::read(&this.owner) });
        (first, units)
    }
}

/// The part of `chunks` (concatenated) from `offset`, `len` long, cut by `cut`.
fn window<C: AsRef<[u8]>>(
    chunks: impl Iterator<Item = C>,
    offset: usize,
    len: usize,
    cut: impl Fn(C, std::ops::Range<usize>) -> C,
) -> impl Iterator<Item = C> {
    let mut skip = offset;
    let mut left = len;
    chunks.filter_map(move |c| {
        let n = c.as_ref().len();
        if left == 0 || skip >= n {
            skip = skip.saturating_sub(n);
            return None;
        }
        let take = (n - skip).min(left);
        let piece = cut(c, skip..skip + take);
        skip = 0;
        left -= take;
        Some(piece)
    })
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        if let Owner::Pool(pool) = &self.owner {
            pool.release_chain(self.index, self.units);
        }
        // A standalone region is unmapped when `owner` drops right after this.
    }
}

/// Per-reactor stash of units in front of a pool. Fixed capacity chosen at creation; get and
/// put move a batch to or from the global list only when the stash runs empty or full. It holds
/// single-unit DmaBufs, so taking or giving back one unit (the common case) touches neither the
/// pool's links nor its reference count.
pub struct PoolCache {
    pool: Arc<BufPool>,
    bufs: Vec<DmaBuf>,
    capacity: usize,
    batch: usize,
}

impl fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCache")
            .field("len", &self.bufs.len())
            .field("capacity", &self.capacity)
            .field("batch", &self.batch)
            .finish()
    }
}

impl PoolCache {
    /// Panics if capacity is 0. Half the capacity moves per refill or spill, so a reactor
    /// alternating get and put at the boundary does not bounce buffers every call.
    pub fn new(pool: Arc<BufPool>, capacity: usize) -> PoolCache {
        assert!(capacity > 0, "PoolCache capacity must be at least 1");
        PoolCache {
            pool,
            bufs: Vec::with_capacity(capacity),
            capacity,
            batch: capacity.div_ceil(2),
        }
    }

    /// A buffer from the local stash, refilled with a batch from the pool when empty. None
    /// only when both are empty.
    pub fn get(&mut self) -> Option<DmaBuf> {
        if self.bufs.is_empty() {
            for _ in 0..self.batch {
                match self.pool.get() {
                    Some(buf) => self.bufs.push(buf),
                    None => break,
                }
            }
        }
        self.bufs.pop()
    }

    /// `units` units linked into one buffer, or None (taking nothing) when the stash and
    /// the pool together have fewer. At most the cache's capacity.
    pub fn get_chain(&mut self, units: usize) -> Option<DmaBuf> {
        if units == 1 {
            return self.get();
        }
        assert!(
            (1..=self.capacity).contains(&units),
            "a chain of {units} units from a cache of {}",
            self.capacity
        );
        if self.bufs.len() < units {
            // Refill to a batch (or to what the chain needs, if more).
            let target = self.batch.max(units).min(self.capacity);
            while self.bufs.len() < target {
                match self.pool.get() {
                    Some(buf) => self.bufs.push(buf),
                    None => break,
                }
            }
            if self.bufs.len() < units {
                return None;
            }
        }
        let mut head = self.bufs.pop().expect("checked above");
        if units > 1 {
            // Link the rest behind the head; their DmaBufs dissolve into it.
            let mut last = head.index;
            for _ in 1..units {
                let (index, _) = self.bufs.pop().expect("checked above").into_chain();
                self.pool.link(last, index);
                last = index;
            }
            self.pool.link(last, END);
            head.units = units as u32;
        }
        Some(head)
    }

    /// Stashes a buffer's units locally, spilling a batch to the pool whenever the stash is
    /// full. Panics if the buffer belongs to another pool.
    pub fn put(&mut self, buf: DmaBuf) {
        assert!(
            self.pool.owns(&buf),
            "DmaBuf {} (iova {:#x}) put into the cache of a pool it does not belong to",
            buf.index,
            buf.iova
        );
        if buf.units == 1 {
            self.stash(buf);
            return;
        }
        let (first, units) = buf.into_chain();
        let mut index = first;
        for _ in 0..units {
            let next = self.pool.next_unit(index);
            self.stash(self.pool.chain_of(index, 1));
            index = next;
        }
    }

    fn stash(&mut self, buf: DmaBuf) {
        if self.bufs.len() == self.capacity {
            // Dropping returns each buffer to the global list.
            self.bufs.truncate(self.capacity - self.batch);
        }
        self.bufs.push(buf);
        // The Vec never grows past what new() reserved: no allocation on the I/O path.
        assert!(self.bufs.len() <= self.capacity);
    }

    /// Units held locally.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }
}

// Drop: `bufs` drops its DmaBufs, each returning itself to the pool.

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn get_put_and_exhaustion() {
        let pool = BufPool::with_ordinary_memory(8192, 4).unwrap();
        assert_eq!(
            (pool.buf_size(), pool.count(), pool.available()),
            (8192, 4, 4)
        );
        let base = pool.memory().iova();

        let mut bufs: Vec<DmaBuf> = (0..4).map(|_| pool.get().unwrap()).collect();
        assert!(pool.get().is_none(), "a fifth buffer from a pool of four");
        assert_eq!(pool.available(), 0);

        let indexes: HashSet<u32> = bufs.iter().map(|b| b.index()).collect();
        assert_eq!(indexes.len(), 4, "each buffer handed out once");
        for buf in &bufs {
            assert_eq!(buf.capacity(), 8192);
            assert_eq!(buf.iova(), base + buf.index() as u64 * 8192);
            assert_eq!(buf.iova() % 4096, 0);
            assert_eq!(buf.as_ptr() as u64, buf.iova());
        }

        // Buffers are disjoint: writing one leaves the others alone.
        bufs[0].as_mut_slice().fill(0xaa);
        bufs[1].as_mut_slice().fill(0x55);
        assert!(bufs[0].as_slice().iter().all(|&b| b == 0xaa));
        assert!(bufs[1].as_slice().iter().all(|&b| b == 0x55));

        pool.put(bufs.pop().unwrap());
        assert_eq!(pool.available(), 1);
        drop(bufs.pop());
        assert_eq!(pool.available(), 2, "dropping a buffer returns it");
        drop(bufs);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn pool_outlives_pool_handle_while_buffers_exist() {
        let pool = BufPool::with_ordinary_memory(4096, 2).unwrap();
        let mut buf = pool.get().unwrap();
        drop(pool);
        buf.as_mut_slice()[4095] = 7;
        assert_eq!(buf.as_slice()[4095], 7);
    }

    #[test]
    #[should_panic(expected = "does not belong")]
    fn put_into_wrong_pool_panics() {
        let a = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let b = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let buf = a.get().unwrap();
        b.put(buf);
    }

    #[test]
    #[should_panic(expected = "does not belong")]
    fn cache_put_of_foreign_buffer_panics() {
        let a = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let b = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let mut cache = PoolCache::new(b, 2);
        cache.put(a.get().unwrap());
    }

    #[test]
    fn standalone_buffer_is_not_owned_by_a_pool() {
        let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let mut buf = DmaBuf::alloc_ordinary(100).unwrap();
        assert!(buf.is_standalone());
        assert_eq!(buf.capacity(), 4096);
        assert_eq!(buf.index(), 0);
        assert!(!pool.owns(&buf));
        buf.as_mut_slice()[..3].copy_from_slice(b"abc");
        assert_eq!(&buf.as_slice()[..3], b"abc");
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(matches!(
            BufPool::with_ordinary_memory(1000, 4),
            Err(DmaError::InvalidBufSize {
                buf_size_bytes: 1000
            })
        ));
        assert!(matches!(
            BufPool::with_ordinary_memory(0, 4),
            Err(DmaError::InvalidBufSize { .. })
        ));
        assert!(matches!(
            BufPool::with_ordinary_memory(4096, 0),
            Err(DmaError::InvalidBufCount { count: 0 })
        ));
        let memory = DmaMemory::allocate_ordinary(3 * 4096).unwrap();
        let err = BufPool::new(memory, 4096, 4).unwrap_err();
        assert!(matches!(
            err,
            DmaError::PoolTooLarge {
                memory_bytes: 12288,
                ..
            }
        ));
    }

    #[test]
    fn pool_region_refuses_copy_access() {
        let pool = BufPool::with_ordinary_memory(4096, 2).unwrap();
        assert!(matches!(
            pool.memory().write_at(0, b"x"),
            Err(DmaError::RegionOwnedByBuffers)
        ));
        let mut out = [0u8; 1];
        assert!(matches!(
            pool.memory().read_at(0, &mut out),
            Err(DmaError::RegionOwnedByBuffers)
        ));
    }

    #[test]
    fn cache_refills_in_batches_and_spills_when_full() {
        let pool = BufPool::with_ordinary_memory(4096, 16).unwrap();
        let mut cache = PoolCache::new(Arc::clone(&pool), 4);

        let first = cache.get().unwrap();
        // One refill of batch 2: one handed out, one left locally.
        assert_eq!(cache.len(), 1);
        assert_eq!(pool.available(), 14);

        let mut held = vec![first];
        for _ in 0..9 {
            held.push(cache.get().unwrap());
        }
        assert_eq!(pool.available() + cache.len() + held.len(), 16);

        for buf in held.drain(..) {
            cache.put(buf);
            assert!(cache.len() <= 4);
        }
        // Ten puts into a 4-slot cache spilled the rest to the global list.
        assert_eq!(cache.len(), 4);
        assert_eq!(pool.available(), 12);

        drop(cache);
        assert_eq!(
            pool.available(),
            16,
            "dropping the cache returns its buffers"
        );
    }

    #[test]
    fn cache_returns_none_only_when_pool_is_dry() {
        let pool = BufPool::with_ordinary_memory(4096, 3).unwrap();
        let mut cache = PoolCache::new(Arc::clone(&pool), 8);
        let a = cache.get().unwrap();
        let b = cache.get().unwrap();
        let c = cache.get().unwrap();
        assert!(cache.get().is_none());
        cache.put(a);
        let again = cache.get().expect("the buffer just put back");
        assert!(cache.get().is_none());
        drop((b, c));
        assert_eq!(pool.available(), 2);
        drop(again);
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn a_chain_links_units_and_gives_them_all_back() {
        let pool = BufPool::with_ordinary_memory(4096, 8).unwrap();
        let mut cache = PoolCache::new(Arc::clone(&pool), 8);
        let mut chain = cache.get_chain(3).unwrap();
        assert_eq!(
            (chain.units(), chain.capacity(), chain.unit_bytes()),
            (3, 12288, 4096)
        );
        let units: Vec<(u64, usize)> = chain.iova_chunks().collect();
        assert_eq!(units.len(), 3);
        let distinct: HashSet<u64> = units.iter().map(|u| u.0).collect();
        assert_eq!(distinct.len(), 3, "three different units");
        assert!(units
            .iter()
            .all(|&(iova, len)| len == 4096 && iova % 4096 == 0));
        // Bytes written across unit boundaries read back in order.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        chain.write_at(1000, &data);
        let mut back = vec![0u8; 10_000];
        chain.read_at(1000, &mut back);
        assert_eq!(back, data);
        let joined: Vec<u8> = chain.chunks().flatten().copied().collect();
        assert_eq!(&joined[1000..11_000], &data[..]);
        chain.fill(4090, 10, 0xee);
        assert_eq!(&chain.chunks().next().unwrap()[4090..], &[0xee; 6]);
        assert_eq!(&chain.chunks().nth(1).unwrap()[..4], &[0xee; 4]);
        cache.put(chain);
        assert_eq!(cache.len() + pool.available(), 8, "every unit came back");
        let chain = cache.get_chain(8).unwrap();
        assert_eq!(chain.units(), 8);
        drop(chain);
        assert_eq!(
            cache.len() + pool.available(),
            8,
            "dropping returns every unit"
        );
    }

    #[test]
    fn a_chain_is_all_or_nothing() {
        let pool = BufPool::with_ordinary_memory(4096, 4).unwrap();
        let mut cache = PoolCache::new(Arc::clone(&pool), 8);
        let one = cache.get().unwrap();
        assert!(cache.get_chain(4).is_none(), "three units left");
        assert_eq!(cache.len() + pool.available(), 3, "nothing taken");
        let three = cache.get_chain(3).unwrap();
        assert!(cache.get().is_none());
        drop((one, three));
        assert_eq!(pool.available(), 4);
    }

    #[test]
    #[should_panic(expected = "no single slice")]
    fn a_chain_has_no_single_slice() {
        let pool = BufPool::with_ordinary_memory(4096, 2).unwrap();
        let mut cache = PoolCache::new(pool, 2);
        cache.get_chain(2).unwrap().as_slice();
    }

    #[test]
    fn caches_on_two_threads_share_one_pool() {
        let pool = BufPool::with_ordinary_memory(4096, 64).unwrap();
        std::thread::scope(|s| {
            for t in 0..2u8 {
                let pool = Arc::clone(&pool);
                s.spawn(move || {
                    let mut cache = PoolCache::new(pool, 8);
                    for round in 0..1000u32 {
                        let mut held: Vec<DmaBuf> = Vec::with_capacity(5);
                        for _ in 0..5 {
                            let mut buf = cache.get().expect("64 buffers cover 2 x (8 + 5)");
                            buf.as_mut_slice()[0] = t;
                            held.push(buf);
                        }
                        for buf in held {
                            assert_eq!(buf.as_slice()[0], t, "round {round}: buffer shared");
                            cache.put(buf);
                        }
                    }
                });
            }
        });
        assert_eq!(pool.available(), 64);
    }
}
