//! NVMe devices on the PCI bus: discovery (driver, IOMMU group, block devices, whether those
//! are in use) and moving them between the kernel's nvme driver and vfio-pci.

use std::fmt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::sysfs::Sysfs;
use super::{Machine, Report, SetupError, NVME_CLASS};

const VFIO_PCI: &str = "vfio-pci";
const NVME: &str = "nvme";

/// Drivers that leave an IOMMU group usable by VFIO: vfio-pci itself, pci-stub, and pcieport,
/// which the kernel lets bridges keep (it does no DMA of its own).
const VFIO_FRIENDLY_DRIVERS: [&str; 3] = [VFIO_PCI, "pci-stub", "pcieport"];

/// How often `reset` looks for the block devices while the nvme driver brings a controller up.
const BLOCK_DEVICE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One NVMe controller as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmeDevice {
    /// PCI address, e.g. 0000:04:00.0.
    pub bdf: String,
    /// None when the platform does not say (numa_node reads -1).
    pub numa_node: Option<u32>,
    /// The bound driver (nvme, vfio-pci, ...), None when unbound.
    pub driver: Option<String>,
    /// PCI vendor id, 4 hex digits without 0x.
    pub vendor_id: String,
    /// PCI device id, 4 hex digits without 0x.
    pub device_id: String,
    /// None without an IOMMU (or with it disabled).
    pub iommu_group: Option<String>,
    /// Namespace block devices (nvme0n1), present while the nvme driver has the controller.
    pub block_devices: Vec<String>,
    /// Why taking the device from the kernel would pull a disk from under someone.
    pub uses: Vec<BlockUse>,
}

/// A use of a block device or of one of its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockUse {
    Mounted {
        block_device: String,
        mount_point: String,
    },
    Swap {
        block_device: String,
    },
    /// Another block device is built on it: md RAID, device-mapper (LVM, dm-crypt).
    Held {
        block_device: String,
        holder: String,
    },
}

impl fmt::Display for BlockUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockUse::Mounted {
                block_device,
                mount_point,
            } => write!(f, "{block_device} mounted on {mount_point}"),
            BlockUse::Swap { block_device } => write!(f, "{block_device} used as swap"),
            BlockUse::Held {
                block_device,
                holder,
            } => write!(f, "{block_device} held by {holder}"),
        }
    }
}

/// Mounted and swapped-on block devices, by name (the part after /dev/).
#[derive(Debug, Default)]
pub(crate) struct ProcUsage {
    /// (block device, mount point)
    mounts: Vec<(String, String)>,
    swaps: Vec<String>,
}

impl ProcUsage {
    pub(crate) fn load(sysfs: &Sysfs) -> Result<ProcUsage, SetupError> {
        let mounts_text = sysfs.read_trimmed(&sysfs.proc("mounts"))?;
        let mounts = mounts_text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let source = fields.next()?;
                let mount_point = fields.next()?;
                let name = source.strip_prefix("/dev/")?;
                Some((unescape_octal(name), unescape_octal(mount_point)))
            })
            .collect();
        // A kernel built without swap has no /proc/swaps: nothing is swapped on then.
        let swaps_text = sysfs.read_trimmed(&sysfs.proc("swaps")).unwrap_or_default();
        let swaps = swaps_text
            .lines()
            .skip(1) // the "Filename Type Size Used Priority" header
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|file| file.strip_prefix("/dev/"))
            .map(unescape_octal)
            .collect();
        Ok(ProcUsage { mounts, swaps })
    }
}

/// /proc/mounts and /proc/swaps write space, tab, newline and backslash as \040-style escapes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every NVMe device, in PCI address order.
pub(crate) fn nvme_devices(sysfs: &Sysfs) -> Result<Vec<NvmeDevice>, SetupError> {
    let usage = ProcUsage::load(sysfs)?;
    let devices_dir = sysfs.sys("bus/pci/devices");
    let mut devices = Vec::new();
    for bdf in sysfs.dir_names(&devices_dir) {
        let class = sysfs.read_trimmed(&devices_dir.join(&bdf).join("class"));
        if class.is_ok_and(|class| class == NVME_CLASS) {
            devices.push(nvme_device(sysfs, &bdf, &usage)?);
        }
    }
    Ok(devices)
}

/// One NVMe device by address; an unknown address or another kind of device is an error.
pub(crate) fn nvme_device(
    sysfs: &Sysfs,
    bdf: &str,
    usage: &ProcUsage,
) -> Result<NvmeDevice, SetupError> {
    let dir = sysfs.pci_device(bdf);
    if !dir.is_dir() {
        return Err(SetupError::UnknownDevice {
            bdf: bdf.to_string(),
            path: dir,
        });
    }
    let class = sysfs.read_trimmed(&dir.join("class"))?;
    if class != NVME_CLASS {
        return Err(SetupError::NotNvme {
            bdf: bdf.to_string(),
            class,
        });
    }
    let numa_node = sysfs
        .read_trimmed(&dir.join("numa_node"))
        .ok()
        .and_then(|text| text.parse::<u32>().ok()); // -1 (unknown) fails to parse: None
    let hex_id = |file: &str| -> Result<String, SetupError> {
        let text = sysfs.read_trimmed(&dir.join(file))?;
        Ok(text.trim_start_matches("0x").to_string())
    };
    let block_devices = block_devices(sysfs, &dir);
    let uses = block_devices
        .iter()
        .flat_map(|disk| disk_uses(sysfs, disk, usage))
        .collect();
    Ok(NvmeDevice {
        bdf: bdf.to_string(),
        numa_node,
        driver: sysfs.link_name(&dir.join("driver")),
        vendor_id: hex_id("vendor")?,
        device_id: hex_id("device")?,
        iommu_group: sysfs.link_name(&dir.join("iommu_group")),
        block_devices,
        uses,
    })
}

/// The namespace block devices under DEV/nvme/nvmeX/, sorted, without duplicates.
fn block_devices(sysfs: &Sysfs, device_dir: &Path) -> Vec<String> {
    let nvme_dir = device_dir.join("nvme");
    let mut disks: Vec<String> = sysfs
        .dir_names(&nvme_dir)
        .iter()
        .flat_map(|controller| sysfs.dir_names(&nvme_dir.join(controller)))
        .filter_map(|name| namespace_disk_name(&name))
        .collect();
    disks.sort();
    disks.dedup();
    disks
}

/// The block device of a namespace entry: nvme0n1 itself, or for a multipath path device
/// nvme0c1n1 (subsystem 0, controller 1, namespace 1) the shared disk nvme0n1. Anything else
/// under the controller (attributes, hwmon, ng0n1 char devices) is None.
fn namespace_disk_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("nvme")?;
    let (subsystem, rest) = split_number(rest)?;
    let rest = match rest.strip_prefix('c') {
        Some(after_c) => split_number(after_c)?.1,
        None => rest,
    };
    let (namespace, rest) = split_number(rest.strip_prefix('n')?)?;
    rest.is_empty()
        .then(|| format!("nvme{subsystem}n{namespace}"))
}

/// Splits leading decimal digits (at least one) from the rest.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| text.split_at(digits))
}

/// Mounts, swaps and holders of a disk and of its partitions.
fn disk_uses(sysfs: &Sysfs, disk: &str, usage: &ProcUsage) -> Vec<BlockUse> {
    let disk_dir = sysfs.sys("block").join(disk);
    let partitions = sysfs
        .dir_names(&disk_dir)
        .into_iter()
        .filter(|name| name.starts_with(disk) && disk_dir.join(name).join("partition").is_file());
    let mut uses = Vec::new();
    for (name, dir) in std::iter::once((disk.to_string(), disk_dir.clone()))
        .chain(partitions.map(|part| (part.clone(), disk_dir.join(part))))
    {
        for (device, mount_point) in &usage.mounts {
            if *device == name {
                uses.push(BlockUse::Mounted {
                    block_device: name.clone(),
                    mount_point: mount_point.clone(),
                });
            }
        }
        if usage.swaps.contains(&name) {
            uses.push(BlockUse::Swap {
                block_device: name.clone(),
            });
        }
        for holder in sysfs.dir_names(&dir.join("holders")) {
            uses.push(BlockUse::Held {
                block_device: name.clone(),
                holder,
            });
        }
    }
    uses
}

impl Machine<'_> {
    /// `setup bind`: the named devices, or every NVMe device not in use.
    pub(crate) fn bind(&self, bdfs: &[String], force: bool) -> Report {
        let mut report = Report::default();
        let usage = match ProcUsage::load(&self.sysfs) {
            Ok(usage) => usage,
            Err(e) => return Report::failed(e),
        };
        let devices = match self.chosen_devices(bdfs, &usage, |_| true) {
            Ok(devices) => devices,
            Err(e) => return Report::failed(e),
        };
        if devices.is_empty() {
            return Report::failed(SetupError::NoNvmeDevices {
                path: self.sysfs.sys("bus/pci/devices"),
            });
        }
        for device in devices {
            // Unnamed devices in use (the boot disk, typically) are left alone, not failures.
            if bdfs.is_empty()
                && !device.uses.is_empty()
                && device.driver.as_deref() != Some(VFIO_PCI)
            {
                let uses = super::UseList(&device.uses);
                report.line(format!(
                    "{}: skipped: in use ({uses}); name it with --force to bind it anyway",
                    device.bdf
                ));
                continue;
            }
            if let Err(e) = self.bind_one(&device, force, &mut report) {
                report.errors.push(e);
            }
        }
        report
    }

    /// `setup reset`: the named devices, or every NVMe device bound to vfio-pci.
    pub(crate) fn reset(&self, bdfs: &[String]) -> Report {
        let mut report = Report::default();
        let usage = match ProcUsage::load(&self.sysfs) {
            Ok(usage) => usage,
            Err(e) => return Report::failed(e),
        };
        let on_vfio = |device: &NvmeDevice| device.driver.as_deref() == Some(VFIO_PCI);
        let devices = match self.chosen_devices(bdfs, &usage, on_vfio) {
            Ok(devices) => devices,
            Err(e) => return Report::failed(e),
        };
        if devices.is_empty() {
            report.line("no NVMe device is bound to vfio-pci; nothing to reset");
        }
        for device in devices {
            if let Err(e) = self.reset_one(&device, &mut report) {
                report.errors.push(e);
            }
        }
        report
    }

    /// The named devices (each must exist and be NVMe), or all NVMe devices that `wanted`.
    fn chosen_devices(
        &self,
        bdfs: &[String],
        usage: &ProcUsage,
        wanted: impl Fn(&NvmeDevice) -> bool,
    ) -> Result<Vec<NvmeDevice>, SetupError> {
        if bdfs.is_empty() {
            let all = nvme_devices(&self.sysfs)?;
            return Ok(all.into_iter().filter(|device| wanted(device)).collect());
        }
        bdfs.iter()
            .map(|bdf| nvme_device(&self.sysfs, bdf, usage))
            .collect()
    }

    fn bind_one(
        &self,
        device: &NvmeDevice,
        force: bool,
        report: &mut Report,
    ) -> Result<(), SetupError> {
        const COMMAND: &str = "nvmf-tgt setup bind";
        let bdf = device.bdf.as_str();
        if device.driver.as_deref() == Some(VFIO_PCI) {
            let group = device.iommu_group.as_deref().unwrap_or("none");
            report.line(format!(
                "{bdf}: already bound to vfio-pci (IOMMU group {group}, {})",
                self.sysfs.dev("vfio").join(group).display()
            ));
            self.warn_if_group_not_viable(device, report);
            return Ok(());
        }
        if !device.uses.is_empty() {
            if !force {
                return Err(SetupError::InUse {
                    bdf: bdf.to_string(),
                    uses: device.uses.clone(),
                });
            }
            report.warnings.push(format!(
                "{bdf}: binding with --force although in use ({}); its filesystems are gone from \
                 under their users",
                super::UseList(&device.uses)
            ));
        }
        let group = self.iommu_group(device)?;
        self.ensure_driver_loaded(VFIO_PCI, "vfio-pci", report)?;
        self.warn_if_group_not_viable(device, report);

        let device_dir = self.sysfs.pci_device(bdf);
        // driver_override makes drivers_probe pick vfio-pci whatever the device's ids are.
        self.write_control(&device_dir.join("driver_override"), VFIO_PCI, COMMAND)?;
        if let Some(driver) = &device.driver {
            let unbind = self.sysfs.pci_driver(driver).join("unbind");
            self.write_control(&unbind, bdf, COMMAND)?;
        }
        self.write_control(&self.sysfs.sys("bus/pci/drivers_probe"), bdf, COMMAND)?;

        self.check_driver(bdf, VFIO_PCI)?;
        let group_file = self.sysfs.dev("vfio").join(&group);
        if !group_file.exists() {
            return Err(SetupError::VfioGroupFileMissing {
                bdf: bdf.to_string(),
                path: group_file,
            });
        }
        report.line(format!(
            "{bdf}: bound to vfio-pci (IOMMU group {group}, {})",
            group_file.display()
        ));
        Ok(())
    }

    fn reset_one(&self, device: &NvmeDevice, report: &mut Report) -> Result<(), SetupError> {
        const COMMAND: &str = "nvmf-tgt setup reset";
        let bdf = device.bdf.as_str();
        match device.driver.as_deref() {
            Some(VFIO_PCI) => {
                let unbind = self.sysfs.pci_driver(VFIO_PCI).join("unbind");
                self.write_control(&unbind, bdf, COMMAND)?;
            }
            Some(NVME) => {
                report.line(format!(
                    "{bdf}: already bound to nvme ({})",
                    block_device_list(&device.block_devices)
                ));
                return Ok(());
            }
            Some(other) => {
                return Err(SetupError::NotOnVfio {
                    bdf: bdf.to_string(),
                    driver: other.to_string(),
                })
            }
            // Unbound, e.g. after a failed bind: nothing to unbind, probing gives it to nvme.
            None => {}
        }
        // An empty write would not reach the kernel (no bytes, no store call): write a newline,
        // which the kernel reads as "no override".
        let device_dir = self.sysfs.pci_device(bdf);
        self.write_control(&device_dir.join("driver_override"), "\n", COMMAND)?;
        self.ensure_driver_loaded(NVME, "nvme", report)?;
        self.write_control(&self.sysfs.sys("bus/pci/drivers_probe"), bdf, COMMAND)?;
        self.check_driver(bdf, NVME)?;

        let disks = self.wait_for_block_devices(&device_dir);
        if disks.is_empty() {
            report.line(format!(
                "{bdf}: bound to nvme; no block device appeared within {} s (a controller \
                 without namespaces has none; `nvmf-tgt setup status` shows them once they come)",
                self.block_device_wait.as_secs()
            ));
        } else {
            report.line(format!(
                "{bdf}: bound to nvme ({})",
                block_device_list(&disks)
            ));
        }
        Ok(())
    }

    /// The nvme driver creates block devices after probe returns (it resets the controller
    /// asynchronously): poll for them, at most `block_device_wait`.
    fn wait_for_block_devices(&self, device_dir: &Path) -> Vec<String> {
        let deadline = Instant::now() + self.block_device_wait;
        loop {
            let disks = block_devices(&self.sysfs, device_dir);
            if !disks.is_empty() || Instant::now() >= deadline {
                return disks;
            }
            thread::sleep(BLOCK_DEVICE_POLL_INTERVAL);
        }
    }

    fn iommu_group(&self, device: &NvmeDevice) -> Result<String, SetupError> {
        let groups_dir = self.sysfs.sys("kernel/iommu_groups");
        if self.sysfs.dir_names(&groups_dir).is_empty() {
            return Err(SetupError::NoIommu {
                bdf: device.bdf.clone(),
                reason: format!(
                    "{} is empty: the kernel runs without one",
                    groups_dir.display()
                ),
            });
        }
        device
            .iommu_group
            .clone()
            .ok_or_else(|| SetupError::NoIommu {
                bdf: device.bdf.clone(),
                reason: format!(
                    "no {} link: the IOMMU does not cover this device",
                    self.sysfs
                        .pci_device(&device.bdf)
                        .join("iommu_group")
                        .display()
                ),
            })
    }

    /// Loads `module` when the PCI driver `driver` is not registered yet.
    fn ensure_driver_loaded(
        &self,
        driver: &'static str,
        module: &'static str,
        report: &mut Report,
    ) -> Result<(), SetupError> {
        let driver_dir = self.sysfs.pci_driver(driver);
        if driver_dir.is_dir() {
            return Ok(());
        }
        report.line(format!("loading the {driver} driver: modprobe {module}"));
        let missing = |detail: String| SetupError::DriverMissing {
            driver,
            module,
            path: driver_dir.clone(),
            detail,
        };
        self.kernel.modprobe(module).map_err(missing)?;
        if !driver_dir.is_dir() {
            return Err(missing(
                "modprobe succeeded but registered no such PCI driver".into(),
            ));
        }
        Ok(())
    }

    /// Fails unless the device's driver link now names `wanted`.
    fn check_driver(&self, bdf: &str, wanted: &'static str) -> Result<(), SetupError> {
        let actual = self
            .sysfs
            .link_name(&self.sysfs.pci_device(bdf).join("driver"));
        if actual.as_deref() == Some(wanted) {
            return Ok(());
        }
        Err(SetupError::NotBound {
            bdf: bdf.to_string(),
            wanted,
            actual: actual.unwrap_or_else(|| "none".to_string()),
        })
    }

    /// VFIO opens a group only when every device in it is on vfio-pci or harmless: name the
    /// others, since the error the target would get later (EBUSY) does not.
    fn warn_if_group_not_viable(&self, device: &NvmeDevice, report: &mut Report) {
        let Some(group) = &device.iommu_group else {
            return;
        };
        let members_dir = self
            .sysfs
            .sys("kernel/iommu_groups")
            .join(group)
            .join("devices");
        let blockers: Vec<String> = self
            .sysfs
            .dir_names(&members_dir)
            .into_iter()
            .filter(|member| *member != device.bdf)
            .filter_map(|member| {
                let driver = self
                    .sysfs
                    .link_name(&self.sysfs.pci_device(&member).join("driver"))?;
                (!VFIO_FRIENDLY_DRIVERS.contains(&driver.as_str()))
                    .then(|| format!("{member} ({driver})"))
            })
            .collect();
        if !blockers.is_empty() {
            report.warnings.push(format!(
                "IOMMU group {group} of {} is not viable for VFIO: it also holds {}, bound to \
                 host drivers; bind them to vfio-pci too, or move the SSD to a slot with its \
                 own IOMMU group",
                device.bdf,
                blockers.join(", ")
            ));
        }
    }
}

fn block_device_list(disks: &[String]) -> String {
    if disks.is_empty() {
        "no block devices".to_string()
    } else {
        disks.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeKernel, FakeMachine};
    use super::super::SetupCommand;
    use super::*;
    use std::fs;

    const SSD: &str = "0000:04:00.0";

    fn bind(bdfs: &[&str], force: bool) -> SetupCommand {
        SetupCommand::Bind {
            bdfs: bdfs.iter().map(|bdf| bdf.to_string()).collect(),
            force,
        }
    }

    fn reset(bdfs: &[&str]) -> SetupCommand {
        SetupCommand::Reset {
            bdfs: bdfs.iter().map(|bdf| bdf.to_string()).collect(),
        }
    }

    /// An SSD on nvme in IOMMU group 5 with namespace nvme0n1, and vfio-pci loaded.
    fn machine_with_ssd() -> FakeMachine {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "nvme");
        fake.namespace(SSD, "nvme0", "nvme0n1");
        fake.driver("vfio-pci");
        fake
    }

    fn only_error(report: &Report) -> String {
        match &report.errors[..] {
            [error] => error.to_string(),
            other => panic!("expected one error, got {other:?}"),
        }
    }

    #[test]
    fn bind_moves_the_device_to_vfio_pci() {
        let fake = machine_with_ssd();
        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&bind(&[SSD], false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(
            report.stdout,
            format!(
                "{SSD}: bound to vfio-pci (IOMMU group 5, {})\n",
                fake.root().join("dev/vfio/5").display()
            )
        );
        let sys = fake.root().join("sys");
        assert_eq!(
            kernel.writes(),
            [
                (
                    sys.join("bus/pci/devices")
                        .join(SSD)
                        .join("driver_override"),
                    "vfio-pci".to_string()
                ),
                (sys.join("bus/pci/drivers/nvme/unbind"), SSD.to_string()),
                (sys.join("bus/pci/drivers_probe"), SSD.to_string()),
            ]
        );
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("vfio-pci"));
        assert!(kernel.modprobes().is_empty());
    }

    #[test]
    fn bind_refuses_a_mounted_device_unless_forced() {
        let fake = machine_with_ssd();
        fake.partition("nvme0n1", "nvme0n1p1");
        fake.mount("/dev/nvme0n1p1", "/srv/my\\040data");
        let kernel = FakeKernel::new(&fake);
        let machine = fake.machine(&kernel);

        let report = machine.execute(&bind(&[SSD], false));
        let text = only_error(&report);
        assert!(
            text.starts_with(&format!(
                "{SSD} is in use: nvme0n1p1 mounted on /srv/my data;"
            )),
            "{text}"
        );
        assert!(
            text.ends_with(
                "--force to bind anyway; its data stays on the disk but the filesystem will be \
                 gone from under its users"
            ),
            "{text}"
        );
        assert!(kernel.writes().is_empty(), "refused before any write");
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("nvme"));

        let report = machine.execute(&bind(&[SSD], true));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report.stdout.contains(&format!("{SSD}: bound to vfio-pci")),
            "{}",
            report.stdout
        );
        assert!(
            report.warnings[0]
                .contains("--force although in use (nvme0n1p1 mounted on /srv/my data)"),
            "{:?}",
            report.warnings
        );
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn bind_refuses_swap_and_holders() {
        let fake = machine_with_ssd();
        fake.partition("nvme0n1", "nvme0n1p2");
        fake.swap("/dev/nvme0n1p2");
        fake.holder("nvme0n1", "dm-0");
        let kernel = FakeKernel::new(&fake);
        let text = only_error(&fake.machine(&kernel).execute(&bind(&[SSD], false)));
        assert!(
            text.contains("in use: nvme0n1 held by dm-0; nvme0n1p2 used as swap;"),
            "{text}"
        );
    }

    #[test]
    fn bind_without_names_skips_devices_in_use() {
        let fake = machine_with_ssd();
        fake.mount("/dev/nvme0n1", "/");
        fake.nvme_device("0000:05:00.0", 0, Some(6));
        fake.bind_link("0000:05:00.0", "nvme");
        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&bind(&[], false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.stdout,
            format!(
                "{SSD}: skipped: in use (nvme0n1 mounted on /); name it with --force to bind it \
                 anyway\n0000:05:00.0: bound to vfio-pci (IOMMU group 6, {})\n",
                fake.root().join("dev/vfio/6").display()
            )
        );
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("nvme"));
    }

    #[test]
    fn bind_of_an_unknown_or_other_device_points_at_status() {
        let fake = machine_with_ssd();
        fake.pci_device("0000:00:1f.2", "0x010601", 0, Some(7));
        let kernel = FakeKernel::new(&fake);
        let machine = fake.machine(&kernel);

        let text = only_error(&machine.execute(&bind(&["0000:09:00.0"], false)));
        assert!(text.starts_with("no PCI device 0000:09:00.0"), "{text}");
        assert!(text.contains("`nvmf-tgt setup status`"), "{text}");

        let text = only_error(&machine.execute(&bind(&["0000:00:1f.2"], false)));
        assert!(
            text.starts_with("0000:00:1f.2 is not an NVMe device (PCI class 0x010601"),
            "{text}"
        );
        assert!(text.contains("`nvmf-tgt setup status`"), "{text}");
        assert!(kernel.writes().is_empty());
    }

    #[test]
    fn bind_with_no_nvme_devices_says_so() {
        let fake = FakeMachine::new();
        let kernel = FakeKernel::new(&fake);
        let text = only_error(&fake.machine(&kernel).execute(&bind(&[], false)));
        assert!(text.starts_with("no NVMe devices found"), "{text}");
    }

    #[test]
    fn bind_loads_vfio_pci_when_missing() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "nvme");
        let kernel = FakeKernel::new(&fake);
        kernel.allow_modprobe("vfio-pci");
        let report = fake.machine(&kernel).execute(&bind(&[SSD], false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(kernel.modprobes(), ["vfio-pci"]);
        assert!(
            report
                .stdout
                .starts_with("loading the vfio-pci driver: modprobe vfio-pci\n"),
            "{}",
            report.stdout
        );
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn bind_fails_clearly_when_vfio_pci_cannot_be_loaded() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "nvme");
        let kernel = FakeKernel::new(&fake);
        let text = only_error(&fake.machine(&kernel).execute(&bind(&[SSD], false)));
        assert_eq!(kernel.modprobes(), ["vfio-pci"]);
        assert!(
            text.starts_with("the vfio-pci driver is not loaded"),
            "{text}"
        );
        assert!(text.contains("bus/pci/drivers/vfio-pci"), "{text}");
        assert!(text.contains("Module vfio-pci not found"), "{text}");
        assert!(kernel.writes().is_empty());
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("nvme"));
    }

    #[test]
    fn bind_without_an_iommu_explains_the_firmware_and_boot_settings() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, None);
        fake.bind_link(SSD, "nvme");
        fake.driver("vfio-pci");
        let kernel = FakeKernel::new(&fake);
        let machine = fake.machine(&kernel);
        let text = only_error(&machine.execute(&bind(&[SSD], false)));
        for want in [
            "iommu_groups is empty",
            "enable VT-d (Intel) or AMD-Vi (AMD) in the firmware",
            "boot with intel_iommu=on (or amd_iommu=on) iommu=pt",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }

        // An IOMMU that does not cover this device.
        fake.pci_device("0000:00:02.0", "0x030000", 0, Some(1));
        let text = only_error(&machine.execute(&bind(&[SSD], false)));
        assert!(text.contains("iommu_group link"), "{text}");
        assert!(text.contains("intel_iommu=on"), "{text}");
        assert!(kernel.writes().is_empty());
    }

    #[test]
    fn bind_warns_about_a_group_shared_with_host_drivers() {
        let fake = machine_with_ssd();
        let group_dir = fake.root().join("sys/kernel/iommu_groups/5/devices");
        for (bdf, driver) in [("0000:04:00.1", "e1000e"), ("0000:00:1c.0", "pcieport")] {
            fake.pci_device(bdf, "0x020000", 0, None);
            fake.bind_link(bdf, driver);
            std::os::unix::fs::symlink(fake.sysfs.pci_device(bdf), group_dir.join(bdf)).unwrap();
        }
        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&bind(&[SSD], false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let [warning] = &report.warnings[..] else {
            panic!("{:?}", report.warnings)
        };
        assert!(
            warning.starts_with(&format!(
                "IOMMU group 5 of {SSD} is not viable for VFIO: it also holds 0000:04:00.1 \
                 (e1000e), bound to host drivers"
            )),
            "{warning}"
        );
        assert!(!warning.contains("pcieport"), "{warning}");
    }

    #[test]
    fn bind_skips_a_device_already_on_vfio_pci() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "vfio-pci");
        let kernel = FakeKernel::new(&fake);
        let report = fake.machine(&kernel).execute(&bind(&[SSD], false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report.stdout.starts_with(&format!(
                "{SSD}: already bound to vfio-pci (IOMMU group 5, "
            )),
            "{}",
            report.stdout
        );
        assert!(kernel.writes().is_empty());
    }

    #[test]
    fn bind_as_a_user_says_sudo() {
        let fake = machine_with_ssd();
        let kernel = FakeKernel::new(&fake);
        kernel.deny_writes();
        let text = only_error(&fake.machine(&kernel).execute(&bind(&[SSD], false)));
        assert!(
            text.contains("driver_override: permission denied"),
            "{text}"
        );
        assert!(
            text.ends_with("`nvmf-tgt setup bind` needs root: run it with sudo"),
            "{text}"
        );
    }

    #[test]
    fn reset_gives_the_device_back_to_nvme() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "vfio-pci");
        fs::write(
            fake.sysfs.pci_device(SSD).join("driver_override"),
            "vfio-pci\n",
        )
        .unwrap();
        fs::write(fake.root().join("dev/vfio/5"), "").unwrap();
        let kernel = FakeKernel::new(&fake);
        kernel.namespace_on_probe(SSD, "nvme0", "nvme0n1");
        let report = fake.machine(&kernel).execute(&reset(&[]));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.stdout, format!("{SSD}: bound to nvme (nvme0n1)\n"));
        let sys = fake.root().join("sys");
        assert_eq!(
            kernel.writes(),
            [
                (sys.join("bus/pci/drivers/vfio-pci/unbind"), SSD.to_string()),
                (
                    sys.join("bus/pci/devices")
                        .join(SSD)
                        .join("driver_override"),
                    "\n".to_string()
                ),
                (sys.join("bus/pci/drivers_probe"), SSD.to_string()),
            ]
        );
        assert_eq!(fake.driver_of(SSD).as_deref(), Some("nvme"));
        assert!(!fake.root().join("dev/vfio/5").exists());

        // Nothing left on vfio-pci; naming the device again only reports it.
        let machine = fake.machine(&kernel);
        assert_eq!(
            machine.execute(&reset(&[])).stdout,
            "no NVMe device is bound to vfio-pci; nothing to reset\n"
        );
        assert_eq!(
            machine.execute(&reset(&[SSD])).stdout,
            format!("{SSD}: already bound to nvme (nvme0n1)\n")
        );
    }

    #[test]
    fn reset_loads_nvme_and_waits_no_longer_than_allowed() {
        let fake = FakeMachine::new();
        fs::remove_dir_all(fake.sysfs.pci_driver("nvme")).unwrap();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "vfio-pci");
        let kernel = FakeKernel::new(&fake);
        kernel.allow_modprobe("nvme");
        // No namespace appears: the bounded wait ends and says so.
        let report = fake.machine(&kernel).execute(&reset(&[SSD]));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(kernel.modprobes(), ["nvme"]);
        assert!(
            report
                .stdout
                .ends_with(&format!("{SSD}: bound to nvme; no block device appeared within 0 s (a controller without namespaces has none; `nvmf-tgt setup status` shows them once they come)\n")),
            "{}",
            report.stdout
        );
    }

    #[test]
    fn reset_refuses_a_device_on_another_driver() {
        let fake = FakeMachine::new();
        fake.nvme_device(SSD, 0, Some(5));
        fake.bind_link(SSD, "uio_pci_generic");
        let kernel = FakeKernel::new(&fake);
        let text = only_error(&fake.machine(&kernel).execute(&reset(&[SSD])));
        assert!(
            text.starts_with(&format!("{SSD} is bound to uio_pci_generic, not vfio-pci")),
            "{text}"
        );
    }

    #[test]
    fn namespace_names() {
        assert_eq!(namespace_disk_name("nvme0n1").as_deref(), Some("nvme0n1"));
        assert_eq!(namespace_disk_name("nvme12n3").as_deref(), Some("nvme12n3"));
        assert_eq!(namespace_disk_name("nvme0c1n2").as_deref(), Some("nvme0n2"));
        for other in ["nvme0", "ng0n1", "nvme0n1p1", "nvme0n", "hwmon1", "nvmen1"] {
            assert_eq!(namespace_disk_name(other), None, "{other}");
        }
    }

    #[test]
    fn mount_escapes_are_decoded() {
        assert_eq!(unescape_octal("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_octal("/x\\134y"), "/x\\y");
        assert_eq!(unescape_octal("/plain\\9"), "/plain\\9");
    }
}
