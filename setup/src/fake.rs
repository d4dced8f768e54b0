//! Test support: a fake /sys, /proc and /dev in a temp dir, and a fake kernel that reacts to
//! writes the way Linux does (drivers_probe binds, unbind unbinds, nr_hugepages may fall short)
//! by moving the fake tree's symlinks and files.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dma::PageSize;

use super::kernel::Kernel;
use super::sysfs::Sysfs;
use super::{Machine, NVME_CLASS};

/// Intel DC P3700, a common NVMe SSD.
const VENDOR_ID: &str = "0x8086";
const DEVICE_ID: &str = "0x0953";

/// A machine tree: sys/, proc/ and dev/ under a temp dir removed on drop.
pub(crate) struct FakeMachine {
    dir: tempfile::TempDir,
    pub(crate) sysfs: Sysfs,
}

impl FakeMachine {
    /// An empty PCI bus with the nvme driver registered, an IOMMU, nothing mounted.
    pub(crate) fn new() -> FakeMachine {
        let dir = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::new(dir.path());
        let fake = FakeMachine { dir, sysfs };
        for sub in [
            "sys/bus/pci/devices",
            "sys/kernel/iommu_groups",
            "sys/block",
            "proc",
            "dev/vfio",
        ] {
            fs::create_dir_all(fake.root().join(sub)).unwrap();
        }
        fs::write(fake.sysfs.sys("bus/pci/drivers_probe"), "").unwrap();
        fs::write(fake.sysfs.proc("mounts"), "proc /proc proc rw 0 0\n").unwrap();
        fs::write(
            fake.sysfs.proc("swaps"),
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        )
        .unwrap();
        fake.driver("nvme");
        fake
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A Machine on this tree that does not wait for block devices.
    pub(crate) fn machine<'k>(&self, kernel: &'k FakeKernel) -> Machine<'k> {
        Machine {
            sysfs: self.sysfs.clone(),
            kernel,
            block_device_wait: Duration::ZERO,
        }
    }

    /// Registers a PCI driver (its module is loaded).
    pub(crate) fn driver(&self, name: &str) {
        let dir = self.sysfs.pci_driver(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("bind"), "").unwrap();
        fs::write(dir.join("unbind"), "").unwrap();
    }

    /// A PCI function; `numa_node` -1 is "unknown", as the kernel writes it.
    pub(crate) fn pci_device(&self, bdf: &str, class: &str, numa_node: i32, group: Option<u32>) {
        let dir = self.sysfs.pci_device(bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        fs::write(dir.join("vendor"), format!("{VENDOR_ID}\n")).unwrap();
        fs::write(dir.join("device"), format!("{DEVICE_ID}\n")).unwrap();
        fs::write(dir.join("numa_node"), format!("{numa_node}\n")).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        if let Some(group) = group {
            let group_dir = self
                .sysfs
                .sys("kernel/iommu_groups")
                .join(group.to_string());
            fs::create_dir_all(group_dir.join("devices")).unwrap();
            symlink(&dir, group_dir.join("devices").join(bdf)).unwrap();
            symlink(&group_dir, dir.join("iommu_group")).unwrap();
        }
    }

    pub(crate) fn nvme_device(&self, bdf: &str, numa_node: i32, group: Option<u32>) {
        self.pci_device(bdf, NVME_CLASS, numa_node, group);
    }

    /// Points the device's driver link at `driver` (registering the driver if needed).
    pub(crate) fn bind_link(&self, bdf: &str, driver: &str) {
        self.driver(driver);
        let link = self.sysfs.pci_device(bdf).join("driver");
        let _ = fs::remove_file(&link);
        symlink(self.sysfs.pci_driver(driver), link).unwrap();
    }

    pub(crate) fn driver_of(&self, bdf: &str) -> Option<String> {
        self.sysfs
            .link_name(&self.sysfs.pci_device(bdf).join("driver"))
    }

    /// A namespace entry under the controller (DEV/nvme/CONTROLLER/NAME) and, for a plain
    /// nvmeXnY name, its /sys/block entry.
    pub(crate) fn namespace(&self, bdf: &str, controller: &str, name: &str) {
        let dir = self.sysfs.pci_device(bdf).join("nvme").join(controller);
        fs::create_dir_all(dir.join(name)).unwrap();
        if !name.contains('c') {
            self.block_device(name);
        }
    }

    pub(crate) fn block_device(&self, disk: &str) {
        fs::create_dir_all(self.sysfs.sys("block").join(disk).join("holders")).unwrap();
    }

    pub(crate) fn partition(&self, disk: &str, partition: &str) {
        let dir = self.sysfs.sys("block").join(disk).join(partition);
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::write(dir.join("partition"), "1\n").unwrap();
    }

    /// `relative` is a path under /sys/block: "nvme0n1" or "nvme0n1/nvme0n1p1".
    pub(crate) fn holder(&self, relative: &str, holder: &str) {
        let dir = self.sysfs.sys("block").join(relative).join("holders");
        fs::create_dir_all(dir.join(holder)).unwrap();
    }

    pub(crate) fn mount(&self, source: &str, target: &str) {
        let path = self.sysfs.proc("mounts");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!("{source} {target} ext4 rw,relatime 0 0\n"));
        fs::write(path, text).unwrap();
    }

    pub(crate) fn swap(&self, source: &str) {
        let path = self.sysfs.proc("swaps");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!("{source}\tpartition\t1048572\t0\t-2\n"));
        fs::write(path, text).unwrap();
    }

    /// Hugepage counters of one size, machine-wide (`node` None) or on one node.
    pub(crate) fn hugepages(&self, size: PageSize, node: Option<u32>, nr: u64, free: u64) {
        let dir = match node {
            Some(node) => self
                .sysfs
                .sys("devices/system/node")
                .join(format!("node{node}"))
                .join("hugepages"),
            None => self.sysfs.sys("kernel/mm/hugepages"),
        }
        .join(size.sysfs_dir_name());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("nr_hugepages"), format!("{nr}\n")).unwrap();
        fs::write(dir.join("free_hugepages"), format!("{free}\n")).unwrap();
        if node.is_none() {
            fs::write(dir.join("resv_hugepages"), "0\n").unwrap();
        }
    }
}

/// Plays the kernel on a FakeMachine and records what it was asked.
pub(crate) struct FakeKernel<'m> {
    machine: &'m FakeMachine,
    writes: RefCell<Vec<(PathBuf, String)>>,
    modprobes: RefCell<Vec<String>>,
    loadable_modules: RefCell<Vec<String>>,
    /// (bdf, controller, disk) the nvme driver creates when it takes the device.
    namespaces_on_probe: RefCell<Vec<(String, String, String)>>,
    hugepage_limit: Cell<Option<u64>>,
    writes_denied: Cell<bool>,
}

impl<'m> FakeKernel<'m> {
    pub(crate) fn new(machine: &'m FakeMachine) -> FakeKernel<'m> {
        FakeKernel {
            machine,
            writes: RefCell::default(),
            modprobes: RefCell::default(),
            loadable_modules: RefCell::default(),
            namespaces_on_probe: RefCell::default(),
            hugepage_limit: Cell::new(None),
            writes_denied: Cell::new(false),
        }
    }

    pub(crate) fn writes(&self) -> Vec<(PathBuf, String)> {
        self.writes.borrow().clone()
    }

    pub(crate) fn modprobes(&self) -> Vec<String> {
        self.modprobes.borrow().clone()
    }

    /// `modprobe module` will succeed and register the PCI driver of the same name.
    pub(crate) fn allow_modprobe(&self, module: &str) {
        self.loadable_modules.borrow_mut().push(module.to_string());
    }

    pub(crate) fn namespace_on_probe(&self, bdf: &str, controller: &str, disk: &str) {
        self.namespaces_on_probe.borrow_mut().push((
            bdf.to_string(),
            controller.to_string(),
            disk.to_string(),
        ));
    }

    /// Fragmented memory: nr_hugepages never goes above `pages`.
    pub(crate) fn grant_at_most(&self, pages: u64) {
        self.hugepage_limit.set(Some(pages));
    }

    /// Every write fails as it does for a non-root user.
    pub(crate) fn deny_writes(&self) {
        self.writes_denied.set(true);
    }

    fn sysfs(&self) -> &Sysfs {
        &self.machine.sysfs
    }

    fn probe(&self, bdf: &str) -> io::Result<()> {
        let dir = self.sysfs().pci_device(bdf);
        if dir.join("driver").exists() {
            return Ok(());
        }
        let requested = fs::read_to_string(dir.join("driver_override"))?;
        let requested = requested.trim();
        let class = fs::read_to_string(dir.join("class"))?;
        let driver = match requested {
            "" | "(null)" if class.trim() == NVME_CLASS => "nvme",
            "" | "(null)" => return Ok(()),
            driver => driver,
        };
        if !self.sysfs().pci_driver(driver).is_dir() {
            return Ok(()); // no driver of that name: the device stays unbound
        }
        self.machine.bind_link(bdf, driver);
        if driver == "vfio-pci" {
            if let Some(group) = self.sysfs().link_name(&dir.join("iommu_group")) {
                fs::write(self.sysfs().dev("vfio").join(group), "")?;
            }
        }
        if driver == "nvme" {
            for (owner, controller, disk) in self.namespaces_on_probe.borrow().iter() {
                if owner == bdf {
                    self.machine.namespace(bdf, controller, disk);
                }
            }
        }
        Ok(())
    }

    fn unbind(&self, bdf: &str, driver: &str) -> io::Result<()> {
        let dir = self.sysfs().pci_device(bdf);
        fs::remove_file(dir.join("driver"))?;
        if driver == "nvme" {
            let _ = fs::remove_dir_all(dir.join("nvme"));
        }
        if driver == "vfio-pci" {
            if let Some(group) = self.sysfs().link_name(&dir.join("iommu_group")) {
                let _ = fs::remove_file(self.sysfs().dev("vfio").join(group));
            }
        }
        Ok(())
    }

    fn set_hugepages(&self, path: &Path, value: &str) -> io::Result<()> {
        let asked: u64 = value
            .trim()
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let granted = self
            .hugepage_limit
            .get()
            .map_or(asked, |limit| asked.min(limit));
        let dir = path.parent().unwrap();
        let count = |file: &str| -> u64 {
            fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let in_use = count("nr_hugepages") - count("free_hugepages");
        fs::write(path, format!("{granted}\n"))?;
        fs::write(
            dir.join("free_hugepages"),
            format!("{}\n", granted.saturating_sub(in_use)),
        )
    }
}

impl Kernel for FakeKernel<'_> {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if self.writes_denied.get() {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.writes
            .borrow_mut()
            .push((path.to_path_buf(), value.to_string()));
        let file_name = path.file_name().unwrap().to_string_lossy();
        let drivers_dir = self.sysfs().sys("bus/pci/drivers");
        let parent = path.parent().unwrap();
        match file_name.as_ref() {
            "drivers_probe" => self.probe(value.trim()),
            "unbind" if parent.parent() == Some(drivers_dir.as_path()) => {
                let driver = parent.file_name().unwrap().to_string_lossy();
                self.unbind(value.trim(), &driver)
            }
            "nr_hugepages" => self.set_hugepages(path, value),
            _ => fs::write(path, value),
        }
    }

    fn modprobe(&self, module: &str) -> Result<(), String> {
        self.modprobes.borrow_mut().push(module.to_string());
        if self.loadable_modules.borrow().iter().any(|m| m == module) {
            self.machine.driver(module);
            Ok(())
        } else {
            Err(format!(
                "modprobe: FATAL: Module {module} not found in directory /lib/modules/6.1.0-fake"
            ))
        }
    }
}
