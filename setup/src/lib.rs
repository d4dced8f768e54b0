#![forbid(unsafe_code)]

//! `nvmf-tgt setup`: the chores SPDK's scripts/setup.sh does, in the product. Shows hugepages
//! and NVMe devices, binds NVMe devices to vfio-pci (and back to nvme), reserves hugepages.
//!
//! Everything reads through [`Sysfs`] (rooted at "/" on a real machine) and writes through a
//! [`Kernel`], so the tests run each command against a fake tree in a temp dir.

mod hugepages;
mod kernel;
mod pci;
mod status;
mod sysfs;

#[cfg(test)]
mod fake;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use dma::{DmaError, PageSize};

pub use kernel::{Kernel, LiveKernel};
pub use pci::BlockUse;
pub use sysfs::Sysfs;

/// PCI class of an NVMe controller: mass storage (01), non-volatile memory (08), NVMe (02).
pub const NVME_CLASS: &str = "0x010802";

/// How long `reset` waits for the nvme driver to create the block devices.
const BLOCK_DEVICE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum SetupCommand {
    /// Show hugepages and NVMe devices (needs no root)
    ///
    /// Hugepages: total and free pages of each size, per NUMA node and in all. NVMe devices:
    /// PCI address, NUMA node, driver, vendor:device ids, IOMMU group, block devices, and
    /// whether those are in use (mounted, swap, or held by md/device-mapper).
    Status,
    /// Give NVMe devices to vfio-pci for the target (root, IOMMU)
    ///
    /// Without BDFs, every NVMe device that is not in use. A device in use (mounted, swap,
    /// md/dm) is refused unless named with --force. Loads vfio-pci when needed.
    Bind {
        /// PCI address of a device, e.g. 0000:04:00.0 (the domain may be left out: 04:00.0)
        #[arg(value_name = "BDF", value_parser = parse_bdf)]
        bdfs: Vec<String>,
        /// Bind even a device whose block devices are mounted, swapped on or held (md, dm).
        /// Only for devices named on the command line
        #[arg(long, requires = "bdfs")]
        force: bool,
    },
    /// Give NVMe devices on vfio-pci back to the kernel's nvme driver (root)
    ///
    /// Without BDFs, every NVMe device bound to vfio-pci. Prints the block devices once the
    /// nvme driver has created them (it waits up to 5 s).
    Reset {
        /// PCI address of a device, e.g. 0000:04:00.0
        #[arg(value_name = "BDF", value_parser = parse_bdf)]
        bdfs: Vec<String>,
    },
    /// Set the hugepage pool to N pages and show what the kernel granted (root)
    ///
    /// Machine-wide, or on one NUMA node with --node. Fails (exit 1) when the kernel grants
    /// fewer than N pages.
    Hugepages {
        /// Pool size in pages (the value of nr_hugepages)
        #[arg(value_name = "N")]
        count: u64,
        /// Reserve on this NUMA node only
        #[arg(long, value_name = "NODE")]
        node: Option<u32>,
        /// Page size: 2M or 1G
        #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_page_size)]
        size: PageSize,
    },
}

/// Runs a setup subcommand on this machine; returns the exit status (0 done, 1 failed).
pub fn run(command: &SetupCommand) -> ExitCode {
    let machine = Machine {
        sysfs: Sysfs::new("/"),
        kernel: &LiveKernel,
        block_device_wait: BLOCK_DEVICE_WAIT,
    };
    let report = machine.execute(command);
    report.print()
}

/// The machine a setup command acts on: where to read, how to write, how long to wait.
pub struct Machine<'k> {
    pub sysfs: Sysfs,
    pub kernel: &'k dyn Kernel,
    /// How long `reset` polls for block devices after binding to nvme (zero: look once).
    pub block_device_wait: Duration,
}

impl Machine<'_> {
    pub fn execute(&self, command: &SetupCommand) -> Report {
        match command {
            SetupCommand::Status => match status::status_text(&self.sysfs) {
                Ok(text) => Report::text(text),
                Err(e) => Report::failed(e),
            },
            SetupCommand::Bind { bdfs, force } => self.bind(bdfs, *force),
            SetupCommand::Reset { bdfs } => self.reset(bdfs),
            SetupCommand::Hugepages { count, node, size } => {
                match hugepages::reserve(self, *count, *size, *node) {
                    Ok(line) => Report::text(line + "\n"),
                    Err(e) => Report::failed(e),
                }
            }
        }
    }

    /// Writes a sysfs control file through the kernel, turning EACCES/EPERM into "use sudo".
    fn write_control(
        &self,
        path: &Path,
        value: &str,
        command: &'static str,
    ) -> Result<(), SetupError> {
        self.kernel.write(path, value).map_err(|source| {
            if sysfs::is_permission_error(&source) {
                SetupError::NeedsRoot {
                    path: path.to_path_buf(),
                    value: value.trim().to_string(),
                    command,
                }
            } else {
                SetupError::Write {
                    path: path.to_path_buf(),
                    value: value.trim().to_string(),
                    source,
                }
            }
        })
    }
}

/// What a command printed and what went wrong; printed by [`Report::print`] and read by tests.
#[derive(Debug, Default)]
pub struct Report {
    /// Standard output, newline-terminated pieces.
    pub stdout: String,
    /// Warnings, one per entry, for standard error.
    pub warnings: Vec<String>,
    /// Failures, one per device (or one for the command); any of them makes the exit status 1.
    pub errors: Vec<SetupError>,
}

impl Report {
    fn text(stdout: String) -> Report {
        Report {
            stdout,
            ..Report::default()
        }
    }

    fn failed(error: SetupError) -> Report {
        Report {
            errors: vec![error],
            ..Report::default()
        }
    }

    fn line(&mut self, line: impl fmt::Display) {
        self.stdout.push_str(&format!("{line}\n"));
    }

    fn print(self) -> ExitCode {
        use std::io::Write;
        let mut out = io::stdout().lock();
        // A closed pipe (`| head`) only loses output; the outcome is still the errors' to decide.
        let _ = out
            .write_all(self.stdout.as_bytes())
            .and_then(|()| out.flush());
        for warning in &self.warnings {
            eprintln!("nvmf-tgt: warning: {warning}");
        }
        for error in &self.errors {
            eprintln!("nvmf-tgt: error: {error}");
        }
        if self.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot write {value:?} to {}: permission denied; `{command}` needs root: run it with sudo", path.display())]
    NeedsRoot {
        path: PathBuf,
        value: String,
        command: &'static str,
    },

    #[error("cannot write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },

    #[error("no PCI device {bdf} (no {}); `nvmf-tgt setup status` lists the NVMe devices", path.display())]
    UnknownDevice { bdf: String, path: PathBuf },

    #[error("{bdf} is not an NVMe device (PCI class {class}, NVMe is {NVME_CLASS}); `nvmf-tgt setup status` lists the NVMe devices")]
    NotNvme { bdf: String, class: String },

    #[error("no NVMe devices found (no PCI device of class {NVME_CLASS} in {})", path.display())]
    NoNvmeDevices { path: PathBuf },

    #[error("{bdf} is in use: {}; pass --force to bind anyway; its data stays on the disk but the filesystem will be gone from under its users", UseList(uses))]
    InUse { bdf: String, uses: Vec<BlockUse> },

    #[error("{bdf} cannot be bound to vfio-pci without an IOMMU ({reason}): enable VT-d (Intel) or AMD-Vi (AMD) in the firmware and boot with intel_iommu=on (or amd_iommu=on) iommu=pt")]
    NoIommu { bdf: String, reason: String },

    #[error("the {driver} driver is not loaded (no {}) and `modprobe {module}` did not load it: {detail}; run as root and check that the module is installed for the running kernel (`modinfo {module}`)", path.display())]
    DriverMissing {
        driver: &'static str,
        module: &'static str,
        path: PathBuf,
        detail: String,
    },

    #[error("{bdf} did not bind to {wanted}: its driver is {actual} after probing; `dmesg` says why. `nvmf-tgt setup reset {bdf}` gives it back to nvme")]
    NotBound {
        bdf: String,
        wanted: &'static str,
        actual: String,
    },

    #[error("{bdf} is bound to vfio-pci but its VFIO group file {} does not exist; is /dev a devtmpfs (in a container, pass /dev/vfio in)?", path.display())]
    VfioGroupFileMissing { bdf: String, path: PathBuf },

    #[error("{bdf} is bound to {driver}, not vfio-pci; `nvmf-tgt setup reset` only gives back devices bound to vfio-pci")]
    NotOnVfio { bdf: String, driver: String },

    #[error("{}", ShortfallMessage { requested: *requested, granted: *granted, size: *size, node: *node, path })]
    HugepageShortfall {
        requested: u64,
        granted: u64,
        size: PageSize,
        node: Option<u32>,
        path: PathBuf,
    },

    #[error(transparent)]
    Dma(#[from] DmaError),
}

/// Uses of a device's block devices, "; "-separated.
struct UseList<'a>(&'a [BlockUse]);

impl fmt::Display for UseList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, block_use) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{block_use}")?;
        }
        Ok(())
    }
}

struct ShortfallMessage<'a> {
    requested: u64,
    granted: u64,
    size: PageSize,
    node: Option<u32>,
    path: &'a Path,
}

impl fmt::Display for ShortfallMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on_node = match self.node {
            Some(node) => format!(" on NUMA node {node}"),
            None => String::new(),
        };
        let boot_parameters = match self.size {
            PageSize::Huge2M => format!("hugepages={}", self.requested),
            PageSize::Huge1G => format!("hugepagesz=1G hugepages={}", self.requested),
        };
        write!(
            f,
            "asked for {} {} hugepages{on_node} but the kernel granted only {} ({} now reads {}): \
             free memory is too fragmented or too small; try again early after boot, or reserve \
             them at boot with the kernel parameters `{boot_parameters}`",
            self.requested,
            self.size,
            self.granted,
            self.path.display(),
            self.granted,
        )
    }
}

/// Accepts a full PCI address (0000:04:00.0) or one without the domain (04:00.0, taken as
/// domain 0000), in any case; returns it the way sysfs names it (lower case, with domain).
pub fn parse_bdf(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let full = if lower.matches(':').count() == 1 {
        format!("0000:{lower}")
    } else {
        lower
    };
    let bad = || {
        format!("{text:?} is not a PCI address; write it as DOMAIN:BUS:DEVICE.FUNCTION, e.g. 0000:04:00.0")
    };
    let (domain_bus_device, function) = full.split_once('.').ok_or_else(bad)?;
    let parts: Vec<&str> = domain_bus_device.split(':').collect();
    let widths_ok = parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && function.len() == 1;
    let hex_ok = parts
        .iter()
        .chain(std::iter::once(&function))
        .all(|part| part.chars().all(|c| c.is_ascii_hexdigit()));
    if !widths_ok || !hex_ok {
        return Err(bad());
    }
    Ok(full)
}

/// Accepts 2M / 1G and the usual spellings of the two sizes.
pub fn parse_page_size(text: &str) -> Result<PageSize, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "2m" | "2mb" | "2mib" | "2048k" | "2048kb" => Ok(PageSize::Huge2M),
        "1g" | "1gb" | "1gib" | "1048576k" | "1048576kb" => Ok(PageSize::Huge1G),
        _ => Err(format!("{text:?} is not a hugepage size; use 2M or 1G")),
    }
}

/// The page sizes `setup` knows, smallest first.
const PAGE_SIZES: [PageSize; 2] = [PageSize::Huge2M, PageSize::Huge1G];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdfs_are_normalised_or_refused() {
        assert_eq!(parse_bdf("0000:04:00.0").unwrap(), "0000:04:00.0");
        assert_eq!(parse_bdf("04:00.0").unwrap(), "0000:04:00.0");
        assert_eq!(parse_bdf("0000:AF:00.1").unwrap(), "0000:af:00.1");
        for bad in [
            "",
            "04:00",
            "4:00.0",
            "0000:04:00.10",
            "0000:0g:00.0",
            "nvme0",
        ] {
            let e = parse_bdf(bad).unwrap_err();
            assert!(e.contains("not a PCI address"), "{bad}: {e}");
        }
    }

    #[test]
    fn page_sizes_parse() {
        assert_eq!(parse_page_size("2M").unwrap(), PageSize::Huge2M);
        assert_eq!(parse_page_size("1g").unwrap(), PageSize::Huge1G);
        assert_eq!(parse_page_size("2048kB").unwrap(), PageSize::Huge2M);
        assert!(parse_page_size("4K").unwrap_err().contains("use 2M or 1G"));
    }
}
