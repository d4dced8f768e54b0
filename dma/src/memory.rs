//! One mmap'd region usable for DMA. IOVA == virtual address (no IOMMU remapping here).

use std::fmt;
use std::io;
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::hugepages;
use crate::shared;
use crate::{ByteSize, DmaError};

/// Base page size; every region and pool buffer is aligned to it.
pub const SMALL_PAGE_BYTES: usize = 4096;

/// Highest NUMA node the mbind mask covers (the kernel's default MAX_NUMNODES is far lower).
const MAX_NUMA_NODES: usize = 1024;
const MASK_WORD_BITS: usize = libc::c_ulong::BITS as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Huge2M,
    Huge1G,
}

impl PageSize {
    pub const fn bytes(self) -> usize {
        match self {
            PageSize::Huge2M => 2 << 20,
            PageSize::Huge1G => 1 << 30,
        }
    }

    /// Directory name under /sys/kernel/mm/hugepages.
    pub const fn sysfs_dir_name(self) -> &'static str {
        match self {
            PageSize::Huge2M => "hugepages-2048kB",
            PageSize::Huge1G => "hugepages-1048576kB",
        }
    }

    const fn mmap_flag(self) -> libc::c_int {
        match self {
            PageSize::Huge2M => libc::MAP_HUGE_2MB,
            PageSize::Huge1G => libc::MAP_HUGE_1GB,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageSize::Huge2M => f.write_str("2 MiB"),
            PageSize::Huge1G => f.write_str("1 GiB"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    Hugepages(PageSize),
    Ordinary,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Hugepages(page) => write!(f, "{page} hugepages"),
            Backing::Ordinary => f.write_str("ordinary memory"),
        }
    }
}

/// One anonymous mmap'd region. Never hands out Rust references to its bytes: callers copy in
/// and out (like a device doing DMA), or carve it into a `BufPool` whose `DmaBuf`s each own
/// a disjoint part.
pub struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    numa_node: Option<u32>,
    locked: bool,
    /// Set once a BufPool or DmaBuf owns the region: DmaBuf slices may then alias its bytes,
    /// so the copy methods refuse to run.
    owned_by_buffers: bool,
}

// SAFETY: DmaMemory owns its mapping exclusively (munmapped only in Drop) and holds no
// thread-affine state; the pointer is just an address. Moving it to another thread is fine.
unsafe impl Send for DmaMemory {}
// SAFETY: the only &self accessors that touch the bytes are the copy methods, which use
// atomic copies and never create references to the region (see `write_at`), and refuse to
// run once DmaBufs (which do hand out references) own the region. `as_ptr` hands out only
// an address; using it is the caller's (unsafe) business.
unsafe impl Sync for DmaMemory {}

impl fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMemory")
            .field("iova", &format_args!("{:#x}", self.iova()))
            .field("len", &self.len)
            .field("backing", &self.backing)
            .field("numa_node", &self.numa_node)
            .field("locked", &self.locked)
            .finish()
    }
}

impl DmaMemory {
    /// Hugepage-backed region (MAP_HUGETLB), bound to `numa_node` when given (mbind MPOL_BIND
    /// before any page is faulted in), pre-faulted and mlocked. The size is rounded up to the
    /// page size. Free pages are counted first so a shortage yields NotEnoughHugepages with the
    /// command that fixes it.
    pub fn allocate_hugepages(
        size_bytes: usize,
        page: PageSize,
        numa_node: Option<u32>,
    ) -> Result<DmaMemory, DmaError> {
        Self::allocate_hugepages_at(
            Path::new(hugepages::SYSFS_ROOT),
            size_bytes,
            page,
            numa_node,
        )
    }

    fn allocate_hugepages_at(
        sysfs_root: &Path,
        size_bytes: usize,
        page: PageSize,
        numa_node: Option<u32>,
    ) -> Result<DmaMemory, DmaError> {
        let len = round_up(size_bytes, page.bytes())?;
        let needed = (len / page.bytes()) as u64;
        hugepages::check_free_at(sysfs_root, needed, page, numa_node)?;
        let backing = Backing::Hugepages(page);
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | page.mmap_flag();
        let mut memory = Self::map(len, backing, flags)?;
        if let Some(node) = numa_node {
            memory.bind(node)?;
        }
        memory.populate()?;
        // Hugetlb pages are never swapped out, so a failed mlock (RLIMIT_MEMLOCK) does not
        // make them unsafe for DMA; warn rather than fail the start-up.
        if let Err(e) = memory.lock() {
            log::warn!(
                "mlock of {} on {backing} failed ({e}); hugetlb pages stay resident anyway",
                ByteSize(len as u64)
            );
        }
        Ok(memory)
    }

    /// Ordinary anonymous memory, 4 KiB aligned, pre-faulted (MAP_POPULATE) and mlocked when
    /// RLIMIT_MEMLOCK allows (see `is_locked`). The size is rounded up to 4 KiB.
    pub fn allocate_ordinary(size_bytes: usize) -> Result<DmaMemory, DmaError> {
        Self::allocate_ordinary_on(size_bytes, None)
    }

    /// Ordinary memory placed on `numa_node` when given (mbind before faulting pages in).
    pub fn allocate_ordinary_on(
        size_bytes: usize,
        numa_node: Option<u32>,
    ) -> Result<DmaMemory, DmaError> {
        let len = round_up(size_bytes, SMALL_PAGE_BYTES)?;
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mut memory = match numa_node {
            // Fault in only after binding, or the pages land wherever the CPU happens to be.
            Some(node) => {
                hugepages::numa_node_exists_at(Path::new(hugepages::SYSFS_ROOT), node)?;
                let mut memory = Self::map(len, Backing::Ordinary, flags)?;
                memory.bind(node)?;
                memory.populate()?;
                memory
            }
            None => {
                // Miri's mmap takes MAP_PRIVATE | MAP_ANONYMOUS only (and zero-fills anyway).
                if !cfg!(miri) {
                    flags |= libc::MAP_POPULATE;
                }
                Self::map(len, Backing::Ordinary, flags)?
            }
        };
        if let Err(e) = memory.lock() {
            log::debug!(
                "mlock of {} ordinary memory failed ({e}); pages may be swapped out",
                ByteSize(len as u64)
            );
        }
        Ok(memory)
    }

    /// 2 MiB hugepages if enough are free, otherwise ordinary memory (on the same NUMA node).
    /// Logs at info which one `what` got and why. A NUMA node that does not exist is an error,
    /// not a reason to fall back: it is a configuration mistake.
    pub fn allocate_prefer_hugepages(
        what: &str,
        size_bytes: usize,
        numa_node: Option<u32>,
    ) -> Result<DmaMemory, DmaError> {
        if let Some(node) = numa_node {
            hugepages::numa_node_exists_at(Path::new(hugepages::SYSFS_ROOT), node)?;
        }
        match Self::allocate_hugepages(size_bytes, PageSize::Huge2M, numa_node) {
            Ok(memory) => {
                log::info!("{}", Placement::new(what, size_bytes, &memory, None));
                Ok(memory)
            }
            Err(reason) => {
                let memory = Self::allocate_ordinary_on(size_bytes, numa_node)?;
                log::info!(
                    "{}",
                    Placement::new(what, size_bytes, &memory, Some(&reason))
                );
                Ok(memory)
            }
        }
    }

    /// Mapped length in bytes (the requested size rounded up to the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-byte regions cannot be created.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn numa_node(&self) -> Option<u32> {
        self.numa_node
    }

    /// Whether mlock succeeded.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// IOVA of byte 0; equal to the virtual address.
    pub fn iova(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Start of the region, for registering it with a device. Writing through it while a
    /// DmaBuf or a copy method accesses the same bytes is the caller's responsibility.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Copies `src` into the region at `offset`, with atomic stores (see `shared`): another
    /// thread or a device may access the same bytes at the same time.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), DmaError> {
        self.check_access(offset, src.len())?;
        // SAFETY: check_access proved offset + len <= self.len, so the destination lies in
        // our live mapping. `src` cannot overlap it: no reference into a region reached only
        // by copy exists (check_access rejects regions owned by DmaBufs, the only thing that
        // hands out such references). Every CPU access to the region's bytes goes through
        // the atomic copies of `shared`, so concurrent callers on other threads touching
        // overlapping ranges do not race; like two devices DMAing into the same buffer, they
        // leave unspecified (possibly mixed) bytes behind, which the block layer above
        // treats exactly as a real disk's overlapping I/O.
        unsafe { shared::copy_in(self.ptr.as_ptr().add(offset), src) };
        Ok(())
    }

    /// Copies bytes at `offset` out of the region into `dst`, with atomic loads.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError> {
        self.check_access(offset, dst.len())?;
        // SAFETY: in bounds per check_access; `dst` is an exclusive borrow that cannot point
        // into the region (see write_at); all other accesses are atomic (see write_at).
        unsafe { shared::copy_out(self.ptr.as_ptr().add(offset), dst) };
        Ok(())
    }

    /// Reads the little-endian u16 at `offset` (2-byte aligned) with one atomic load, anew
    /// on every call: for a word a device writes, such as an NVMe CQE's status and phase
    /// tag. Follow it with an acquire fence before reading what the word publishes.
    pub fn load_u16_le(&self, offset: usize) -> Result<u16, DmaError> {
        self.check_access(offset, 2)?;
        if offset % 2 != 0 {
            return Err(DmaError::Misaligned { offset, align: 2 });
        }
        // SAFETY: in bounds per check_access; the region is page aligned, so offset % 2 == 0
        // makes the address 2-byte aligned; other accesses are atomic (see write_at).
        Ok(unsafe { shared::load_u16_le(self.ptr.as_ptr().add(offset)) })
    }

    /// Zeroes `len` bytes at `offset`, with atomic stores.
    pub fn fill_zero(&self, offset: usize, len: usize) -> Result<(), DmaError> {
        self.check_access(offset, len)?;
        // SAFETY: in bounds per check_access; all accesses are atomic (see write_at).
        unsafe { shared::fill_zero(self.ptr.as_ptr().add(offset), len) };
        Ok(())
    }

    /// Whether the bytes at `offset` equal `data`.
    pub fn compare_at(&self, offset: usize, data: &[u8]) -> Result<bool, DmaError> {
        self.check_access(offset, data.len())?;
        // Copy through a stack chunk: comparing in place would need a &[u8] over bytes that
        // another thread may be writing.
        const CHUNK_BYTES: usize = 512;
        let mut chunk = [0u8; CHUNK_BYTES];
        let mut done = 0;
        while done < data.len() {
            let n = CHUNK_BYTES.min(data.len() - done);
            self.read_at(offset + done, &mut chunk[..n])?;
            if chunk[..n] != data[done..done + n] {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    /// Marks the region as carved into DmaBufs; see `owned_by_buffers`.
    pub(crate) fn hand_to_buffers(&mut self) {
        self.owned_by_buffers = true;
    }

    fn check_access(&self, offset: usize, len: usize) -> Result<(), DmaError> {
        if self.owned_by_buffers {
            return Err(DmaError::RegionOwnedByBuffers);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(DmaError::OutOfBounds {
                offset: offset as u64,
                len,
                size: self.len,
            }),
        }
    }

    fn map(len: usize, backing: Backing, flags: libc::c_int) -> Result<DmaMemory, DmaError> {
        assert!(
            len > 0 && len % SMALL_PAGE_BYTES == 0,
            "bad mapping length {len}"
        );
        // SAFETY: anonymous mapping at a kernel-chosen address: no existing memory is
        // affected. The result is checked for MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(DmaError::Mmap {
                size_bytes: len,
                backing,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(addr.cast::<u8>()).expect("mmap returned NULL without MAP_FIXED");
        assert_eq!(
            ptr.as_ptr() as usize % SMALL_PAGE_BYTES,
            0,
            "mmap result unaligned"
        );
        Ok(DmaMemory {
            ptr,
            len,
            backing,
            numa_node: None,
            locked: false,
            owned_by_buffers: false,
        })
    }

    fn bind(&mut self, node: u32) -> Result<(), DmaError> {
        let bit = node as usize;
        if bit >= MAX_NUMA_NODES {
            return Err(DmaError::Mbind {
                size_bytes: self.len,
                node,
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let mut mask = [0 as libc::c_ulong; MAX_NUMA_NODES / MASK_WORD_BITS];
        mask[bit / MASK_WORD_BITS] |= 1 << (bit % MASK_WORD_BITS);
        // The kernel reads maxnode - 1 bits (a historical off-by-one), hence the + 1.
        let max_node = (MAX_NUMA_NODES + 1) as libc::c_ulong;
        // SAFETY: mbind only changes the policy of our own mapping [ptr, ptr + len); `mask`
        // is a live local array of MAX_NUMA_NODES bits, matching `max_node`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                self.ptr.as_ptr(),
                self.len as libc::c_ulong,
                libc::MPOL_BIND as libc::c_ulong,
                mask.as_ptr(),
                max_node,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(DmaError::Mbind {
                size_bytes: self.len,
                node,
                source: io::Error::last_os_error(),
            });
        }
        self.numa_node = Some(node);
        Ok(())
    }

    /// Faults every page in now so the first I/O does not pay for it, and so a shortage shows
    /// up here as an error instead of SIGBUS later.
    fn populate(&mut self) -> Result<(), DmaError> {
        // SAFETY: advice on our own mapping; MADV_POPULATE_WRITE only faults pages in
        // (returning an error where a touch would raise SIGBUS) and keeps their zero contents.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(DmaError::Populate {
                size_bytes: self.len,
                backing: self.backing,
                node: self.numa_node,
                source: err,
            });
        }
        // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch one byte per page instead.
        let step = match self.backing {
            Backing::Hugepages(page) => page.bytes(),
            Backing::Ordinary => SMALL_PAGE_BYTES,
        };
        for offset in (0..self.len).step_by(step) {
            // SAFETY: offset < len, inside our mapping; no reference exists yet (we hold
            // &mut self during construction), and writing 0 keeps the zero contents.
            unsafe { ptr::write_volatile(self.ptr.as_ptr().add(offset), 0) };
        }
        Ok(())
    }

    fn lock(&mut self) -> io::Result<()> {
        if cfg!(miri) {
            // Miri has no mlock; the region just stays unlocked, as without RLIMIT_MEMLOCK.
            return Err(io::ErrorKind::Unsupported.into());
        }
        // SAFETY: mlock pins our own mapping's pages; it does not touch their contents.
        let rc = unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.locked = true;
        Ok(())
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: [ptr, ptr + len) is the mapping created in `map` with exactly this length
        // (a multiple of the page size), owned by us alone. Every DmaBuf pointing into it
        // keeps its owner (BufPool or the DmaBuf itself) alive, so no pointer outlives it.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap failed: {}", io::Error::last_os_error());
    }
}

fn round_up(size_bytes: usize, page_bytes: usize) -> Result<usize, DmaError> {
    if size_bytes == 0 {
        return Err(DmaError::ZeroSize);
    }
    debug_assert!(page_bytes.is_power_of_two());
    size_bytes
        .checked_add(page_bytes - 1)
        .map(|s| s & !(page_bytes - 1))
        .ok_or(DmaError::SizeOverflow {
            size_bytes,
            page_bytes,
        })
}

/// The start-up log line saying where a region landed and, after a fallback, why.
#[derive(Debug)]
pub struct Placement<'a> {
    what: &'a str,
    size_bytes: usize,
    backing: Backing,
    numa_node: Option<u32>,
    fallback_reason: Option<&'a DmaError>,
}

impl<'a> Placement<'a> {
    pub fn new(
        what: &'a str,
        size_bytes: usize,
        memory: &DmaMemory,
        fallback_reason: Option<&'a DmaError>,
    ) -> Placement<'a> {
        Placement {
            what,
            size_bytes,
            backing: memory.backing(),
            numa_node: memory.numa_node(),
            fallback_reason,
        }
    }
}

impl fmt::Display for Placement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} on {}",
            self.what,
            ByteSize(self.size_bytes as u64),
            self.backing
        )?;
        if let Some(node) = self.numa_node {
            write!(f, " (NUMA node {node})")?;
        }
        if let Some(reason) = self.fallback_reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hugepages::tests::FakeSysfs;

    #[test]
    fn ordinary_memory_is_aligned_zeroed_and_round_trips() {
        let mem = DmaMemory::allocate_ordinary(10_000).unwrap();
        assert_eq!(mem.len(), 12_288);
        assert_eq!(mem.backing(), Backing::Ordinary);
        assert_eq!(mem.iova() % SMALL_PAGE_BYTES as u64, 0);
        assert_eq!(mem.iova(), mem.as_ptr() as u64);
        assert!(!mem.is_empty());

        let mut out = [0xffu8; 100];
        mem.read_at(12_288 - 100, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 0));

        mem.write_at(4095, b"hello").unwrap();
        let mut back = [0u8; 5];
        mem.read_at(4095, &mut back).unwrap();
        assert_eq!(&back, b"hello");
        assert!(mem.compare_at(4095, b"hello").unwrap());
        assert!(!mem.compare_at(4095, b"hellO").unwrap());

        mem.fill_zero(4096, 2).unwrap();
        mem.read_at(4095, &mut back).unwrap();
        assert_eq!(&back, b"h\0\0lo");
    }

    #[test]
    fn compare_spans_several_chunks() {
        let mem = DmaMemory::allocate_ordinary(8192).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        mem.write_at(100, &data).unwrap();
        assert!(mem.compare_at(100, &data).unwrap());
        let mut other = data.clone();
        other[4999] ^= 1;
        assert!(!mem.compare_at(100, &other).unwrap());
        assert!(mem.compare_at(0, &[]).unwrap());
    }

    #[test]
    fn out_of_bounds_and_overflow_are_errors() {
        let mem = DmaMemory::allocate_ordinary(4096).unwrap();
        let err = mem.write_at(4090, &[0; 7]).unwrap_err();
        assert!(matches!(
            err,
            DmaError::OutOfBounds {
                offset: 4090,
                len: 7,
                size: 4096
            }
        ));
        let mut buf = [0u8; 2];
        assert!(matches!(
            mem.read_at(usize::MAX, &mut buf),
            Err(DmaError::OutOfBounds { .. })
        ));
        assert!(matches!(
            mem.fill_zero(1, usize::MAX),
            Err(DmaError::OutOfBounds { .. })
        ));
        assert!(matches!(
            mem.compare_at(4096, &[1]),
            Err(DmaError::OutOfBounds { .. })
        ));
        // An access ending exactly at the end is fine.
        mem.write_at(4094, &[1, 2]).unwrap();
        mem.read_at(4096, &mut []).unwrap();
    }

    #[test]
    fn zero_and_huge_sizes_are_rejected() {
        assert!(matches!(
            DmaMemory::allocate_ordinary(0),
            Err(DmaError::ZeroSize)
        ));
        assert!(matches!(
            DmaMemory::allocate_ordinary(usize::MAX),
            Err(DmaError::SizeOverflow { .. })
        ));
        assert!(matches!(
            DmaMemory::allocate_hugepages(0, PageSize::Huge2M, None),
            Err(DmaError::ZeroSize)
        ));
    }

    #[test]
    fn regions_are_usable_from_several_threads() {
        let mem = DmaMemory::allocate_ordinary(2 * 4096).unwrap();
        std::thread::scope(|s| {
            for t in 0..2u8 {
                let mem = &mem;
                s.spawn(move || {
                    let block = [t + 1; 4096];
                    mem.write_at(t as usize * 4096, &block).unwrap();
                });
            }
        });
        assert!(mem.compare_at(0, &[1; 4096]).unwrap());
        assert!(mem.compare_at(4096, &[2; 4096]).unwrap());
    }

    #[test]
    fn hugepage_shortage_is_reported_before_mmap() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 0, 0);
        sys.set(PageSize::Huge2M, Some(0), 0, 0);
        let err = DmaMemory::allocate_hugepages_at(&sys.root, 64 << 20, PageSize::Huge2M, Some(0))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "need 32 free 2 MiB hugepages on NUMA node 0 but only 0 are free; reserve them with: \
             nvmf-tgt setup hugepages 32 --node 0 \
             (or: echo 32 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages)"
        );
        // Rounds up: 1 byte needs a whole page.
        let err =
            DmaMemory::allocate_hugepages_at(&sys.root, 1, PageSize::Huge2M, None).unwrap_err();
        assert!(matches!(
            err,
            DmaError::NotEnoughHugepages { needed: 1, .. }
        ));
    }

    /// Uses the real hugepage pool: allocates when pages happen to be free, otherwise checks
    /// the shortage error and the fallback. One test so the two paths do not race each other.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "MAP_HUGETLB, mbind and madvise: syscalls Miri does not emulate"
    )]
    fn live_hugepages_or_clear_shortage_and_fallback() {
        let size_bytes = 4 << 20;
        let needed = 2;
        let free = hugepages::counts(PageSize::Huge2M, Some(0)).unwrap().free;
        match DmaMemory::allocate_hugepages(size_bytes, PageSize::Huge2M, Some(0)) {
            Ok(mem) => {
                assert!(free >= needed, "got pages although only {free} were free");
                assert_eq!(mem.backing(), Backing::Hugepages(PageSize::Huge2M));
                assert_eq!(mem.len(), size_bytes);
                assert_eq!(mem.numa_node(), Some(0));
                assert_eq!(mem.iova() % PageSize::Huge2M.bytes() as u64, 0);
                mem.write_at(size_bytes - 3, b"end").unwrap();
                assert!(mem.compare_at(size_bytes - 3, b"end").unwrap());
            }
            Err(DmaError::NotEnoughHugepages {
                needed: n,
                free: f,
                node,
                ..
            }) => {
                assert_eq!(n, needed);
                assert!(f < needed);
                assert_eq!(node, Some(0));
                let mem =
                    DmaMemory::allocate_prefer_hugepages("test", size_bytes, Some(0)).unwrap();
                assert_eq!(mem.backing(), Backing::Ordinary);
                assert_eq!(mem.numa_node(), Some(0));
                assert_eq!(mem.len(), size_bytes);
                mem.write_at(0, b"start").unwrap();
                assert!(mem.compare_at(0, b"start").unwrap());
            }
            // Pages were counted free but another process took them before mmap/fault.
            Err(e @ (DmaError::Mmap { .. } | DmaError::Populate { .. })) => {
                assert!(e.to_string().contains("2 MiB hugepages"), "{e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn missing_numa_node_is_an_error_not_a_fallback() {
        let err = DmaMemory::allocate_prefer_hugepages("test", 4096, Some(999)).unwrap_err();
        assert!(
            matches!(err, DmaError::NumaNodeNotFound { node: 999, .. }),
            "{err}"
        );
        assert!(matches!(
            DmaMemory::allocate_ordinary_on(4096, Some(999)),
            Err(DmaError::NumaNodeNotFound { .. })
        ));
    }

    #[test]
    fn placement_line_names_user_size_and_reason() {
        let mem = DmaMemory::allocate_ordinary(64 << 20).unwrap();
        let reason = DmaError::NotEnoughHugepages {
            needed: 32,
            free: 0,
            reserved: 0,
            size: PageSize::Huge2M,
            node: None,
        };
        let line = Placement::new("Malloc0", 64 << 20, &mem, Some(&reason)).to_string();
        assert!(
            line.starts_with("Malloc0: 64 MiB on ordinary memory: need 32 free 2 MiB hugepages"),
            "{line}"
        );
        let line = Placement::new("Malloc0", 64 << 20, &mem, None).to_string();
        assert_eq!(line, "Malloc0: 64 MiB on ordinary memory");
    }
}
