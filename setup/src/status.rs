//! `setup status`: hugepage pools and NVMe devices as aligned tables.

use super::hugepages::pools;
use super::pci::nvme_devices;
use super::sysfs::Sysfs;
use super::{SetupError, UseList};

/// The whole status report. Reads only world-readable files, so it needs no root.
pub(crate) fn status_text(sysfs: &Sysfs) -> Result<String, SetupError> {
    let mut text = String::from("Hugepages (FREE: pages a new mapping can still get)\n");
    let pools = pools(sysfs)?;
    if pools.is_empty() {
        text.push_str(&format!(
            "no hugepage sizes offered by this kernel ({} is missing or empty)\n",
            sysfs.sys("kernel/mm/hugepages").display()
        ));
    } else {
        let rows: Vec<Vec<String>> = pools
            .iter()
            .map(|pool| {
                vec![
                    pool.size.to_string(),
                    pool.node.map_or("all".to_string(), |node| node.to_string()),
                    pool.counts.reserved.to_string(),
                    pool.counts.free.to_string(),
                ]
            })
            .collect();
        text.push_str(&table(&["SIZE", "NODE", "TOTAL", "FREE"], &rows));
    }

    text.push_str("\nNVMe devices\n");
    let devices = nvme_devices(sysfs)?;
    if devices.is_empty() {
        text.push_str(&format!(
            "no NVMe devices found (no PCI device of class {} in {})\n",
            super::NVME_CLASS,
            sysfs.sys("bus/pci/devices").display()
        ));
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|device| {
            vec![
                device.bdf.clone(),
                device
                    .numa_node
                    .map_or("unknown".to_string(), |node| node.to_string()),
                device.driver.clone().unwrap_or_else(|| "none".to_string()),
                format!("{}:{}", device.vendor_id, device.device_id),
                device
                    .iommu_group
                    .clone()
                    .unwrap_or_else(|| "none".to_string()),
                if device.block_devices.is_empty() {
                    "-".to_string()
                } else {
                    device.block_devices.join(",")
                },
                if device.uses.is_empty() {
                    "no".to_string()
                } else {
                    UseList(&device.uses).to_string()
                },
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "BDF",
            "NUMA",
            "DRIVER",
            "VENDOR:DEVICE",
            "IOMMU GROUP",
            "BLOCK DEVICES",
            "IN USE",
        ],
        &rows,
    ));
    Ok(text)
}

/// Left-aligned columns two spaces apart, no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeKernel, FakeMachine};
    use super::super::SetupCommand;
    use super::*;
    use dma::PageSize;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_string(), "long cell".to_string(), "x".to_string()],
            vec!["longer".to_string(), "b".to_string(), String::new()],
        ];
        assert_eq!(
            table(&["H1", "H2", "H3"], &rows),
            "H1      H2         H3\n\
             a       long cell  x\n\
             longer  b\n"
        );
    }

    #[test]
    fn status_shows_hugepages_per_node_and_devices() {
        let fake = FakeMachine::new();
        fake.hugepages(PageSize::Huge2M, None, 1024, 1000);
        fake.hugepages(PageSize::Huge2M, Some(0), 512, 500);
        fake.hugepages(PageSize::Huge2M, Some(1), 512, 500);
        // The boot disk: nvme, a partition mounted on /boot, another used as swap.
        fake.nvme_device("0000:04:00.0", 0, Some(5));
        fake.bind_link("0000:04:00.0", "nvme");
        fake.namespace("0000:04:00.0", "nvme0", "nvme0n1");
        fake.partition("nvme0n1", "nvme0n1p1");
        fake.partition("nvme0n1", "nvme0n1p2");
        fake.mount("/dev/nvme0n1p1", "/boot");
        fake.swap("/dev/nvme0n1p2");
        // A spare SSD already given to the target, NUMA node unknown.
        fake.nvme_device("0000:05:00.0", -1, Some(6));
        fake.bind_link("0000:05:00.0", "vfio-pci");
        // Not NVMe: left out.
        fake.pci_device("0000:00:1f.2", "0x010601", 0, None);

        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&SetupCommand::Status);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.stdout,
            "Hugepages (FREE: pages a new mapping can still get)\n\
             SIZE   NODE  TOTAL  FREE\n\
             2 MiB  0     512    500\n\
             2 MiB  1     512    500\n\
             2 MiB  all   1024   1000\n\
             \n\
             NVMe devices\n\
             BDF           NUMA     DRIVER    VENDOR:DEVICE  IOMMU GROUP  BLOCK DEVICES  IN USE\n\
             0000:04:00.0  0        nvme      8086:0953      5            nvme0n1        \
             nvme0n1p1 mounted on /boot; nvme0n1p2 used as swap\n\
             0000:05:00.0  unknown  vfio-pci  8086:0953      6            -              no\n"
        );
    }

    #[test]
    fn status_without_devices_or_hugepages_says_so() {
        let fake = FakeMachine::new();
        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&SetupCommand::Status);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report
                .stdout
                .contains("no hugepage sizes offered by this kernel"),
            "{}",
            report.stdout
        );
        assert!(
            report.stdout.contains("no NVMe devices found"),
            "{}",
            report.stdout
        );
    }

    #[test]
    fn holders_and_multipath_names_are_seen() {
        let fake = FakeMachine::new();
        fake.nvme_device("0000:04:00.0", 0, Some(5));
        fake.bind_link("0000:04:00.0", "nvme");
        // Native multipath: the controller lists the path device nvme0c0n1; the disk is nvme0n1.
        fake.namespace("0000:04:00.0", "nvme0", "nvme0c0n1");
        fake.block_device("nvme0n1");
        fake.holder("nvme0n1", "md0");
        let devices = nvme_devices(&fake.sysfs).unwrap();
        assert_eq!(devices[0].block_devices, ["nvme0n1"]);
        assert_eq!(UseList(&devices[0].uses).to_string(), "nvme0n1 held by md0");
    }
}
