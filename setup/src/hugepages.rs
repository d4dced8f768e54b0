//! Hugepage pools: the per-node and machine-wide counters for `status`, and `setup hugepages`.

use dma::hugepages::{counts_at, nr_hugepages_path_at, HugepageCounts};
use dma::PageSize;

use super::sysfs::Sysfs;
use super::{Machine, SetupError, PAGE_SIZES};

/// The counters of one page size on one node, or machine-wide (`node` None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolCounts {
    pub(crate) size: PageSize,
    pub(crate) node: Option<u32>,
    pub(crate) counts: HugepageCounts,
}

/// For each page size the kernel offers: each node's pool, then the machine-wide one.
pub(crate) fn pools(sysfs: &Sysfs) -> Result<Vec<PoolCounts>, SetupError> {
    let sys_root = sysfs.sys_root();
    let nodes = numa_nodes(sysfs);
    let mut pools = Vec::new();
    for size in PAGE_SIZES {
        if !sysfs
            .sys("kernel/mm/hugepages")
            .join(size.sysfs_dir_name())
            .is_dir()
        {
            continue;
        }
        for &node in &nodes {
            let counts = counts_at(&sys_root, size, Some(node))?;
            pools.push(PoolCounts {
                size,
                node: Some(node),
                counts,
            });
        }
        let counts = counts_at(&sys_root, size, None)?;
        pools.push(PoolCounts {
            size,
            node: None,
            counts,
        });
    }
    Ok(pools)
}

/// Node numbers from /sys/devices/system/node/nodeN, ascending; empty without NUMA support.
fn numa_nodes(sysfs: &Sysfs) -> Vec<u32> {
    let mut nodes: Vec<u32> = sysfs
        .dir_names(&sysfs.sys("devices/system/node"))
        .iter()
        .filter_map(|name| name.strip_prefix("node")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    nodes
}

/// `setup hugepages`: sets nr_hugepages and reads back what the kernel granted.
pub(crate) fn reserve(
    machine: &Machine<'_>,
    count: u64,
    size: PageSize,
    node: Option<u32>,
) -> Result<String, SetupError> {
    let sys_root = machine.sysfs.sys_root();
    // Reading first names a missing node or page size before any write is tried.
    let before = counts_at(&sys_root, size, node)?;
    let path = nr_hugepages_path_at(&sys_root, size, node);
    machine.write_control(&path, &format!("{count}\n"), "nvmf-tgt setup hugepages")?;
    let after = counts_at(&sys_root, size, node)?;
    if after.reserved < count {
        return Err(SetupError::HugepageShortfall {
            requested: count,
            granted: after.reserved,
            size,
            node,
            path,
        });
    }
    let on_node = match node {
        Some(node) => format!(" on NUMA node {node}"),
        None => String::new(),
    };
    Ok(format!(
        "{size} hugepages{on_node}: {} reserved (was {}), {} free",
        after.reserved, before.reserved, after.free
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeKernel, FakeMachine};
    use super::super::SetupCommand;
    use super::*;

    fn hugepages(size: PageSize, node: Option<u32>, count: u64) -> SetupCommand {
        SetupCommand::Hugepages { count, node, size }
    }

    #[test]
    fn pools_list_each_node_then_the_total() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge2M, None, 768, 700);
        fake.hugepages(PageSize::Huge2M, Some(0), 512, 500);
        fake.hugepages(PageSize::Huge2M, Some(1), 256, 200);
        fake.hugepages(PageSize::Huge1G, None, 0, 0);
        fake.hugepages(PageSize::Huge1G, Some(0), 0, 0);
        fake.hugepages(PageSize::Huge1G, Some(1), 0, 0);
        let pools = pools(&fake.sysfs).unwrap();
        let summary: Vec<_> = pools
            .iter()
            .map(|p| (p.size, p.node, p.counts.reserved, p.counts.free))
            .collect();
        assert_eq!(
            summary,
            [
                (PageSize::Huge2M, Some(0), 512, 500),
                (PageSize::Huge2M, Some(1), 256, 200),
                (PageSize::Huge2M, None, 768, 700),
                (PageSize::Huge1G, Some(0), 0, 0),
                (PageSize::Huge1G, Some(1), 0, 0),
                (PageSize::Huge1G, None, 0, 0),
            ]
        );
    }

    #[test]
    fn reserve_writes_the_node_file_and_reads_it_back() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge2M, None, 0, 0);
        fake.hugepages(PageSize::Huge2M, Some(0), 0, 0);
        let kernel = FakeKernel::new(&fake);
        let report = fake
            .machine(&kernel)
            .execute(&hugepages(PageSize::Huge2M, Some(0), 512));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.stdout,
            "2 MiB hugepages on NUMA node 0: 512 reserved (was 0), 512 free\n"
        );
        let node_file = fake
            .root()
            .join("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
        assert_eq!(kernel.writes(), [(node_file, "512\n".to_string())]);
    }

    #[test]
    fn reserve_machine_wide_by_default() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge1G, None, 1, 1);
        let kernel = FakeKernel::new(&fake);
        let report = fake
            .machine(&kernel)
            .execute(&hugepages(PageSize::Huge1G, None, 4));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.stdout,
            "1 GiB hugepages: 4 reserved (was 1), 4 free\n"
        );
        assert_eq!(
            kernel.writes()[0].0,
            fake.root()
                .join("sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages")
        );
    }

    #[test]
    fn shortfall_fails_with_advice() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge1G, None, 0, 0);
        let kernel = FakeKernel::new(&fake);
        kernel.grant_at_most(3);
        let report = fake
            .machine(&kernel)
            .execute(&hugepages(PageSize::Huge1G, None, 8));
        assert!(report.stdout.is_empty(), "{}", report.stdout);
        let [error] = &report.errors[..] else {
            panic!("{:?}", report.errors)
        };
        let text = error.to_string();
        for want in [
            "asked for 8 1 GiB hugepages but the kernel granted only 3",
            "hugepages-1048576kB/nr_hugepages now reads 3",
            "early after boot",
            "`hugepagesz=1G hugepages=8`",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
    }

    #[test]
    fn unsupported_size_and_missing_node_are_named() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge2M, None, 0, 0);
        let kernel = FakeKernel::new(&fake);
        let machine = fake.machine(&kernel);

        let report = machine.execute(&hugepages(PageSize::Huge1G, None, 2));
        let text = report.errors[0].to_string();
        assert!(text.contains("no 1 GiB hugepages"), "{text}");
        assert!(text.contains("hugepages-1048576kB is missing"), "{text}");

        let report = machine.execute(&hugepages(PageSize::Huge2M, Some(3), 2));
        let text = report.errors[0].to_string();
        assert!(text.contains("NUMA node 3 does not exist"), "{text}");
        assert!(
            kernel.writes().is_empty(),
            "nothing is written on a bad request"
        );
    }

    #[test]
    fn permission_denied_says_sudo() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge2M, None, 0, 0);
        let kernel = FakeKernel::new(&fake);
        kernel.deny_writes();
        let report = fake
            .machine(&kernel)
            .execute(&hugepages(PageSize::Huge2M, None, 64));
        let text = report.errors[0].to_string();
        assert!(text.contains("hugepages-2048kB/nr_hugepages"), "{text}");
        assert!(
            text.ends_with("`nvmf-tgt setup hugepages` needs root: run it with sudo"),
            "{text}"
        );
    }
}
