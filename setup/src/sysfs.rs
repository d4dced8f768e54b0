//! Read access to the kernel's view of the machine (/sys, /proc, /dev), rooted at a path so
//! tests can build a fake tree in a temp dir. Writes go through [`super::kernel::Kernel`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::SetupError;

/// The filesystem root under which `sys/`, `proc/` and `dev/` are looked up: "/" on a real
/// machine.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// Where sysfs is mounted ("/sys" on a real machine).
    pub fn sys_root(&self) -> PathBuf {
        self.root.join("sys")
    }

    /// A path under /sys, e.g. `sys("bus/pci/devices")`.
    pub fn sys(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.sys_root().join(relative)
    }

    /// A path under /proc.
    pub fn proc(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join("proc").join(relative)
    }

    /// A path under /dev.
    pub fn dev(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join("dev").join(relative)
    }

    /// The directory of one PCI device.
    pub fn pci_device(&self, bdf: &str) -> PathBuf {
        self.sys("bus/pci/devices").join(bdf)
    }

    /// The directory of one PCI driver (present once its module is loaded).
    pub fn pci_driver(&self, driver: &str) -> PathBuf {
        self.sys("bus/pci/drivers").join(driver)
    }

    /// A sysfs attribute without its trailing newline.
    pub fn read_trimmed(&self, path: &Path) -> Result<String, SetupError> {
        read_trimmed(path)
    }

    /// The last component of a symlink's target (`driver` -> "nvme", `iommu_group` -> "5"),
    /// or None when there is no such link.
    pub fn link_name(&self, path: &Path) -> Option<String> {
        let target = fs::read_link(path).ok()?;
        target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }

    /// The names in a directory, sorted; empty when it does not exist.
    pub fn dir_names(&self, path: &Path) -> Vec<String> {
        let Ok(entries) = fs::read_dir(path) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

pub(crate) fn read_trimmed(path: &Path) -> Result<String, SetupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim_end().to_string()),
        Err(source) => Err(SetupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// True for the errors a non-root user gets when writing a root-only sysfs file: std maps
/// both EACCES and EPERM to PermissionDenied.
pub(crate) fn is_permission_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}
