//! Errors of the DMA memory module. Messages say what went wrong and what to do about it,
//! because they end up in front of an operator starting the target.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::memory::{Backing, PageSize};
use crate::ByteSize;

#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("cannot allocate a zero-byte DMA region")]
    ZeroSize,

    #[error("{device} cannot map {size} of DMA memory at {iova:#x}: {reason}")]
    DeviceMapping {
        device: String,
        iova: u64,
        size: ByteSize,
        reason: String,
    },

    #[error("DMA region of {size_bytes} bytes is too large: rounding it up to {page_bytes}-byte pages overflows")]
    SizeOverflow {
        size_bytes: usize,
        page_bytes: usize,
    },

    /// Too few hugepages are free. `reserved` is the pool size now (nr_hugepages), used to
    /// compute the value that makes `needed` pages free in addition to those already in use.
    #[error("{}", NotEnoughMessage { needed: *needed, free: *free, reserved: *reserved, size: *size, node: *node })]
    NotEnoughHugepages {
        needed: u64,
        free: u64,
        reserved: u64,
        size: PageSize,
        node: Option<u32>,
    },

    #[error("this kernel offers no {size} hugepages ({} is missing); use 2 MiB pages, or boot with `hugepagesz=1G hugepages=N` for 1 GiB pages", path.display())]
    HugepageSizeUnsupported { size: PageSize, path: PathBuf },

    #[error("NUMA node {node} does not exist (no {}); list the online nodes with `cat /sys/devices/system/node/online`", path.display())]
    NumaNodeNotFound { node: u32, path: PathBuf },

    #[error("cannot {action} hugepage counter {}: {source}", path.display())]
    Sysfs {
        /// "read" or "write".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("mmap of {} on {backing} failed: {source}; {}", ByteSize(*size_bytes as u64), mmap_hint(*backing))]
    Mmap {
        size_bytes: usize,
        backing: Backing,
        #[source]
        source: io::Error,
    },

    #[error("cannot bind {} to NUMA node {node} (mbind MPOL_BIND): {source}; is the kernel built with NUMA support and is the node online?", ByteSize(*size_bytes as u64))]
    Mbind {
        size_bytes: usize,
        node: u32,
        #[source]
        source: io::Error,
    },

    #[error("pre-faulting {} of {backing}{} failed: {source}; the kernel could not supply the pages (another process may have taken them, or a cgroup limit applies)", ByteSize(*size_bytes as u64), NodeSuffix(*node))]
    Populate {
        size_bytes: usize,
        backing: Backing,
        node: Option<u32>,
        #[source]
        source: io::Error,
    },

    #[error("access of {len} bytes at offset {offset} is out of bounds of the {size}-byte region")]
    OutOfBounds {
        offset: u64,
        len: usize,
        size: usize,
    },

    #[error("access at offset {offset} is not {align}-byte aligned")]
    Misaligned { offset: usize, align: usize },

    #[error("this DMA region is owned by a buffer pool or DmaBuf; access its bytes through DmaBuf, not the region's copy methods")]
    RegionOwnedByBuffers,

    #[error("pool buffer size {buf_size_bytes} must be a non-zero multiple of 4096 bytes and below 4 GiB")]
    InvalidBufSize { buf_size_bytes: usize },

    #[error("pool buffer count {count} must be between 1 and {}", u32::MAX)]
    InvalidBufCount { count: usize },

    #[error("a pool of {count} buffers of {buf_size_bytes} bytes does not fit in the {memory_bytes}-byte region")]
    PoolTooLarge {
        buf_size_bytes: usize,
        count: usize,
        memory_bytes: usize,
    },

    #[error("a pool of {count} buffers of {buf_size_bytes} bytes overflows the address space")]
    PoolSizeOverflow { buf_size_bytes: usize, count: usize },

    #[error(
        "a standalone DmaBuf holds at most {} bytes, the region has {size_bytes}",
        u32::MAX
    )]
    RegionTooLargeForBuf { size_bytes: usize },
}

fn mmap_hint(backing: Backing) -> &'static str {
    match backing {
        Backing::Hugepages(_) => {
            "the free hugepages may have been taken by another process, or a hugetlb cgroup limit applies"
        }
        Backing::Ordinary => {
            "the machine may be out of memory, or an address-space/overcommit limit applies"
        }
    }
}

struct NodeSuffix(Option<u32>);

impl fmt::Display for NodeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(node) => write!(f, " on NUMA node {node}"),
            None => Ok(()),
        }
    }
}

struct NotEnoughMessage {
    needed: u64,
    free: u64,
    reserved: u64,
    size: PageSize,
    node: Option<u32>,
}

impl fmt::Display for NotEnoughMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Pages in use stay in use, so the pool must grow by the shortfall, not be set to `needed`.
        let in_use = self.reserved.saturating_sub(self.free);
        let target = in_use.saturating_add(self.needed);
        write!(
            f,
            "need {} free {} hugepages{} but only {} are free; reserve them with: \
             nvmf-tgt setup hugepages {}{}{} (or: echo {} > {})",
            self.needed,
            self.size,
            NodeSuffix(self.node),
            self.free,
            target,
            NodeOption(self.node),
            SizeOption(self.size),
            target,
            crate::hugepages::nr_hugepages_path(self.size, self.node).display(),
        )
    }
}

/// The `--node N` option of `nvmf-tgt setup hugepages`, when a node applies.
struct NodeOption(Option<u32>);

impl fmt::Display for NodeOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(node) => write!(f, " --node {node}"),
            None => Ok(()),
        }
    }
}

/// The `--size` option of `nvmf-tgt setup hugepages`; 2 MiB is its default, so it is left out.
struct SizeOption(PageSize);

impl fmt::Display for SizeOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PageSize::Huge2M => Ok(()),
            PageSize::Huge1G => f.write_str(" --size 1G"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_enough_message_matches_documented_text() {
        let err = DmaError::NotEnoughHugepages {
            needed: 64,
            free: 0,
            reserved: 0,
            size: PageSize::Huge2M,
            node: Some(0),
        };
        assert_eq!(
            err.to_string(),
            "need 64 free 2 MiB hugepages on NUMA node 0 but only 0 are free; reserve them with: \
             nvmf-tgt setup hugepages 64 --node 0 \
             (or: echo 64 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages)"
        );
    }

    #[test]
    fn not_enough_message_keeps_pages_in_use() {
        // 10 reserved, 2 free: 8 are in use elsewhere, so 8 + 64 must be reserved.
        let err = DmaError::NotEnoughHugepages {
            needed: 64,
            free: 2,
            reserved: 10,
            size: PageSize::Huge2M,
            node: None,
        };
        assert_eq!(
            err.to_string(),
            "need 64 free 2 MiB hugepages but only 2 are free; reserve them with: \
             nvmf-tgt setup hugepages 72 \
             (or: echo 72 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)"
        );
    }

    #[test]
    fn not_enough_message_for_1g_pages() {
        let err = DmaError::NotEnoughHugepages {
            needed: 2,
            free: 0,
            reserved: 0,
            size: PageSize::Huge1G,
            node: Some(1),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("need 2 free 1 GiB hugepages on NUMA node 1"),
            "{text}"
        );
        assert!(
            text.contains("nvmf-tgt setup hugepages 2 --node 1 --size 1G"),
            "{text}"
        );
        assert!(
            text.contains(
                "echo 2 > /sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages"
            ),
            "{text}"
        );
    }

    #[test]
    fn out_of_bounds_message_names_numbers() {
        let err = DmaError::OutOfBounds {
            offset: 4090,
            len: 10,
            size: 4096,
        };
        assert_eq!(
            err.to_string(),
            "access of 10 bytes at offset 4090 is out of bounds of the 4096-byte region"
        );
    }
}
