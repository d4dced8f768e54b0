//! Hugepage counters in sysfs. Read before mmap so a shortage is reported as a clear
//! "reserve N pages with this command" instead of an mmap ENOMEM or a SIGBUS at fault time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::memory::PageSize;
use crate::DmaError;

/// Where sysfs is mounted; tests point this at a fake tree.
pub(crate) const SYSFS_ROOT: &str = "/sys";

/// Counters of one hugepage size, machine-wide or on one NUMA node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugepageCounts {
    /// Pages in the pool (nr_hugepages).
    pub reserved: u64,
    /// Pages that a new mapping can still get: free minus those promised to existing mappings.
    pub free: u64,
}

/// The nr_hugepages file that sets the pool size, per node when `node` is given.
pub fn nr_hugepages_path(page: PageSize, node: Option<u32>) -> PathBuf {
    nr_hugepages_path_at(Path::new(SYSFS_ROOT), page, node)
}

/// [`nr_hugepages_path`] under a sysfs mounted at `sysfs_root` (a fake tree in tests).
pub fn nr_hugepages_path_at(sysfs_root: &Path, page: PageSize, node: Option<u32>) -> PathBuf {
    counter_dir(sysfs_root, page, node).join("nr_hugepages")
}

/// Reads the counters for `page` (on `node` when given) from the live sysfs.
pub fn counts(page: PageSize, node: Option<u32>) -> Result<HugepageCounts, DmaError> {
    counts_at(Path::new(SYSFS_ROOT), page, node)
}

/// Sets the pool size for `page` (on `node`) and returns what the kernel actually reserved,
/// which can be less than asked when memory is fragmented. Needs root.
pub fn set_nr_hugepages(page: PageSize, node: Option<u32>, count: u64) -> Result<u64, DmaError> {
    set_nr_hugepages_at(Path::new(SYSFS_ROOT), page, node, count)
}

fn set_nr_hugepages_at(
    root: &Path,
    page: PageSize,
    node: Option<u32>,
    count: u64,
) -> Result<u64, DmaError> {
    check_exists(root, page, node)?;
    let path = counter_dir(root, page, node).join("nr_hugepages");
    fs::write(&path, format!("{count}\n")).map_err(|source| DmaError::Sysfs {
        action: "write",
        path: path.clone(),
        source,
    })?;
    read_counter(&path)
}

fn counter_dir(root: &Path, page: PageSize, node: Option<u32>) -> PathBuf {
    match node {
        Some(node) => root
            .join("devices/system/node")
            .join(format!("node{node}"))
            .join("hugepages")
            .join(page.sysfs_dir_name()),
        None => root.join("kernel/mm/hugepages").join(page.sysfs_dir_name()),
    }
}

fn check_exists(root: &Path, page: PageSize, node: Option<u32>) -> Result<(), DmaError> {
    if let Some(node) = node {
        let node_dir = root.join("devices/system/node").join(format!("node{node}"));
        if !node_dir.is_dir() {
            return Err(DmaError::NumaNodeNotFound {
                node,
                path: node_dir,
            });
        }
    }
    let global_dir = counter_dir(root, page, None);
    if !global_dir.is_dir() {
        return Err(DmaError::HugepageSizeUnsupported {
            size: page,
            path: global_dir,
        });
    }
    Ok(())
}

/// [`counts`] under a sysfs mounted at `root` (a fake tree in tests). Fails with
/// NumaNodeNotFound or HugepageSizeUnsupported when the node or the page size is missing.
pub fn counts_at(
    root: &Path,
    page: PageSize,
    node: Option<u32>,
) -> Result<HugepageCounts, DmaError> {
    check_exists(root, page, node)?;
    let dir = counter_dir(root, page, node);
    let reserved = read_counter(&dir.join("nr_hugepages"))?;
    let free = read_counter(&dir.join("free_hugepages"))?;
    // Per-node directories have no resv_hugepages; the global one does, and reserved-but-
    // unfaulted pages are counted as free although a new mapping cannot have them.
    let promised = match node {
        Some(_) => 0,
        None => read_counter(&dir.join("resv_hugepages")).unwrap_or(0),
    };
    Ok(HugepageCounts {
        reserved,
        free: free.saturating_sub(promised),
    })
}

/// Fails with NotEnoughHugepages (or a missing node/size) unless `needed` pages are free.
pub(crate) fn check_free_at(
    root: &Path,
    needed: u64,
    page: PageSize,
    node: Option<u32>,
) -> Result<(), DmaError> {
    let counts = counts_at(root, page, node)?;
    if counts.free < needed {
        return Err(DmaError::NotEnoughHugepages {
            needed,
            free: counts.free,
            reserved: counts.reserved,
            size: page,
            node,
        });
    }
    Ok(())
}

pub(crate) fn numa_node_exists_at(root: &Path, node: u32) -> Result<(), DmaError> {
    let node_dir = root.join("devices/system/node").join(format!("node{node}"));
    if node_dir.is_dir() {
        Ok(())
    } else {
        Err(DmaError::NumaNodeNotFound {
            node,
            path: node_dir,
        })
    }
}

fn read_counter(path: &Path) -> Result<u64, DmaError> {
    let text = fs::read_to_string(path).map_err(|source| DmaError::Sysfs {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse::<u64>().map_err(|e| DmaError::Sysfs {
        action: "read",
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{:?} is not a count: {e}", text.trim()),
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A throwaway sysfs-like tree under the temp dir, removed on drop.
    pub(crate) struct FakeSysfs {
        pub(crate) root: PathBuf,
    }

    impl FakeSysfs {
        pub(crate) fn new() -> FakeSysfs {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "dma-fake-sysfs-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&root).unwrap();
            FakeSysfs { root }
        }

        pub(crate) fn set(&self, page: PageSize, node: Option<u32>, nr: u64, free: u64) {
            let dir = counter_dir(&self.root, page, node);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("nr_hugepages"), format!("{nr}\n")).unwrap();
            fs::write(dir.join("free_hugepages"), format!("{free}\n")).unwrap();
            if node.is_none() {
                fs::write(dir.join("resv_hugepages"), "0\n").unwrap();
            }
        }

        pub(crate) fn set_resv(&self, page: PageSize, resv: u64) {
            let dir = counter_dir(&self.root, page, None);
            fs::write(dir.join("resv_hugepages"), format!("{resv}\n")).unwrap();
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn shortage_on_node_reports_counts_and_command() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 4, 4);
        sys.set(PageSize::Huge2M, Some(0), 4, 3);
        let err = check_free_at(&sys.root, 32, PageSize::Huge2M, Some(0)).unwrap_err();
        match err {
            DmaError::NotEnoughHugepages {
                needed,
                free,
                reserved,
                size,
                node,
            } => {
                assert_eq!((needed, free, reserved), (32, 3, 4));
                assert_eq!(size, PageSize::Huge2M);
                assert_eq!(node, Some(0));
            }
            other => panic!("wrong error: {other}"),
        }
        check_free_at(&sys.root, 3, PageSize::Huge2M, Some(0)).unwrap();
    }

    #[test]
    fn global_free_excludes_promised_pages() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 8, 8);
        sys.set_resv(PageSize::Huge2M, 6);
        let counts = counts_at(&sys.root, PageSize::Huge2M, None).unwrap();
        assert_eq!(
            counts,
            HugepageCounts {
                reserved: 8,
                free: 2
            }
        );
        assert!(matches!(
            check_free_at(&sys.root, 3, PageSize::Huge2M, None),
            Err(DmaError::NotEnoughHugepages { free: 2, .. })
        ));
    }

    #[test]
    fn missing_node_and_missing_page_size_are_named() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 0, 0);
        let err = check_free_at(&sys.root, 1, PageSize::Huge2M, Some(7)).unwrap_err();
        assert!(
            matches!(err, DmaError::NumaNodeNotFound { node: 7, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("node7"), "{err}");

        let err = check_free_at(&sys.root, 1, PageSize::Huge1G, None).unwrap_err();
        assert!(
            matches!(err, DmaError::HugepageSizeUnsupported { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("hugepages-1048576kB"), "{err}");
    }

    #[test]
    fn garbage_counter_is_a_clear_error() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 0, 0);
        let dir = counter_dir(&sys.root, PageSize::Huge2M, None);
        fs::write(dir.join("free_hugepages"), "lots\n").unwrap();
        let err = counts_at(&sys.root, PageSize::Huge2M, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("free_hugepages"), "{text}");
        assert!(text.contains("not a count"), "{text}");
    }

    #[test]
    fn set_writes_the_node_counter_and_reads_it_back() {
        let sys = FakeSysfs::new();
        sys.set(PageSize::Huge2M, None, 0, 0);
        sys.set(PageSize::Huge2M, Some(0), 0, 0);
        assert_eq!(
            set_nr_hugepages_at(&sys.root, PageSize::Huge2M, Some(0), 64).unwrap(),
            64
        );
        let counts = counts_at(&sys.root, PageSize::Huge2M, Some(0)).unwrap();
        assert_eq!(counts.reserved, 64);
        assert!(matches!(
            set_nr_hugepages_at(&sys.root, PageSize::Huge2M, Some(3), 1),
            Err(DmaError::NumaNodeNotFound { node: 3, .. })
        ));
    }

    #[test]
    fn live_counts_are_readable() {
        // The 2 MiB size exists on every x86-64/arm64 kernel with hugetlbfs, as on this machine.
        let counts = counts(PageSize::Huge2M, None).unwrap();
        assert!(counts.free <= counts.reserved, "{counts:?}");
    }
}
