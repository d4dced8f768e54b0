//! VFIO FFI: container, group and device file descriptors, BAR0 mapping, PCI config space and
//! IOMMU DMA mappings (type1 v2 IOMMU, IOVA = virtual address).
//!
//! The ioctl numbers are written out here rather than taken from a crate (see DESIGN.md:
//! `vfio-ioctls` is VMM-shaped; this needs a dozen numbers). They come from the kernel's
//! `include/uapi/linux/vfio.h`: every VFIO ioctl is `_IO(VFIO_TYPE, VFIO_BASE + n)` with
//! `VFIO_TYPE = ';'` (0x3B) and `VFIO_BASE = 100`; `_IO` has no direction or size bits, so the
//! number is `(0x3B << 8) | (100 + n)`. The argument structures are `#[repr(C)]` copies of
//! the ones in that header.
//!
//! Nothing here can be tested on a machine without VFIO; the tests only check the numbers,
//! the layouts and the argument checks.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::mmio::Bar0;

/// ioctl numbers from `include/uapi/linux/vfio.h`.
pub mod ioctl {
    const VFIO_TYPE: u64 = b';' as u64;
    const VFIO_BASE: u64 = 100;
    /// `_IO(type, nr)`: direction and size bits are 0.
    const fn io(n: u64) -> u64 {
        (VFIO_TYPE << 8) | (VFIO_BASE + n)
    }
    pub const GET_API_VERSION: u64 = io(0);
    pub const CHECK_EXTENSION: u64 = io(1);
    pub const SET_IOMMU: u64 = io(2);
    pub const GROUP_GET_STATUS: u64 = io(3);
    pub const GROUP_SET_CONTAINER: u64 = io(4);
    pub const GROUP_GET_DEVICE_FD: u64 = io(6);
    pub const DEVICE_GET_REGION_INFO: u64 = io(8);
    pub const DEVICE_RESET: u64 = io(11);
    pub const IOMMU_MAP_DMA: u64 = io(13);
    pub const IOMMU_UNMAP_DMA: u64 = io(14);

    /// `VFIO_API_VERSION`.
    pub const API_VERSION: i32 = 0;
    /// `VFIO_TYPE1v2_IOMMU`.
    pub const TYPE1V2_IOMMU: u64 = 3;
    pub const GROUP_FLAGS_VIABLE: u32 = 1 << 0;
    pub const REGION_INFO_FLAG_READ: u32 = 1 << 0;
    pub const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
    pub const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
    pub const DMA_MAP_FLAG_READ: u32 = 1 << 0;
    pub const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
    /// `VFIO_PCI_BAR0_REGION_INDEX` and `VFIO_PCI_CONFIG_REGION_INDEX`.
    pub const PCI_BAR0_REGION_INDEX: u32 = 0;
    pub const PCI_CONFIG_REGION_INDEX: u32 = 7;
}

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// `struct vfio_region_info` (without capability chains, which we do not read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionInfo {
    argsz: u32,
    pub flags: u32,
    pub index: u32,
    cap_offset: u32,
    pub size: u64,
    /// Offset of the region in the device fd, for mmap/pread/pwrite.
    pub offset: u64,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`.
#[repr(C)]
#[derive(Debug)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

const _: () = assert!(size_of::<GroupStatus>() == 8);
const _: () = assert!(size_of::<RegionInfo>() == 32);
const _: () = assert!(size_of::<DmaMap>() == 32);
const _: () = assert!(size_of::<DmaUnmap>() == 24);

/// PCI command register (config space offset 0x04) and the bits we set.
const PCI_COMMAND_OFFSET: u64 = 0x04;
const PCI_COMMAND_MEMORY_SPACE: u16 = 1 << 1;
const PCI_COMMAND_BUS_MASTER: u16 = 1 << 2;

const VFIO_CONTAINER_PATH: &str = "/dev/vfio/vfio";
const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
const SYSFS_IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("{what} failed on {path}: {source}; {fix}")]
    Os {
        what: &'static str,
        path: String,
        source: io::Error,
        fix: String,
    },
    #[error("{what} on {path}: {detail}; {fix}")]
    Unsupported {
        what: &'static str,
        path: String,
        detail: String,
        fix: String,
    },
    #[error(
        "IOMMU group {group} of {bdf} is not viable: every device in the group must be bound \
         to vfio-pci (or to no driver). Devices and drivers: {devices}. Bind them all with \
         `nvmf-tgt setup bind <bdf>`"
    )]
    GroupNotViable {
        bdf: String,
        group: u32,
        devices: String,
    },
    #[error("'{bdf}' is not a PCI address; write it as 0000:01:00.0 (domain:bus:device.function)")]
    BadAddress { bdf: String },
}

fn os_error(what: &'static str, path: impl fmt::Display, fix: impl Into<String>) -> VfioError {
    VfioError::Os {
        what,
        path: path.to_string(),
        source: io::Error::last_os_error(),
        fix: fix.into(),
    }
}

/// Normalises a PCI address to `dddd:bb:dd.f` (adding domain 0000 when missing) and refuses
/// anything else, since it becomes part of sysfs paths and an ioctl argument.
pub fn normalize_bdf(bdf: &str) -> Result<String, VfioError> {
    let full = if bdf.matches(':').count() == 1 {
        format!("0000:{bdf}")
    } else {
        bdf.to_string()
    };
    let bytes = full.as_bytes();
    let well_formed = bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && bytes.iter().enumerate().all(|(i, b)| {
            matches!(i, 4 | 7 | 10) || (b.is_ascii_hexdigit() && (i != 11 || *b <= b'7'))
        });
    if well_formed {
        Ok(full.to_ascii_lowercase())
    } else {
        Err(VfioError::BadAddress {
            bdf: bdf.to_string(),
        })
    }
}

/// The IOMMU group number of `bdf` (the target of its `iommu_group` link).
pub fn iommu_group_of(bdf: &str) -> Result<u32, VfioError> {
    let link = Path::new(SYSFS_PCI_DEVICES).join(bdf).join("iommu_group");
    let target = fs::read_link(&link).map_err(|source| VfioError::Os {
        what: "reading the IOMMU group link",
        path: link.display().to_string(),
        source,
        fix: format!(
            "check that {bdf} exists (`lspci -s {bdf}`) and that the IOMMU is on \
             (intel_iommu=on or amd_iommu=on on the kernel command line)"
        ),
    })?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| VfioError::Unsupported {
            what: "reading the IOMMU group",
            path: link.display().to_string(),
            detail: format!("link target {} is not a group number", target.display()),
            fix: "report this kernel's sysfs layout".to_string(),
        })
}

/// The NUMA node `bdf` is attached to; None when the platform does not say (-1) or sysfs
/// cannot be read.
pub fn numa_node_of(bdf: &str) -> Option<u32> {
    let path = Path::new(SYSFS_PCI_DEVICES).join(bdf).join("numa_node");
    parse_numa_node(&fs::read_to_string(path).ok()?)
}

fn parse_numa_node(text: &str) -> Option<u32> {
    text.trim().parse::<i64>().ok()?.try_into().ok()
}

/// "bdf (driver), ..." for every device in IOMMU group `group`, for error messages.
fn describe_group_devices(group: u32) -> String {
    let dir = Path::new(SYSFS_IOMMU_GROUPS)
        .join(group.to_string())
        .join("devices");
    let Ok(entries) = fs::read_dir(&dir) else {
        return format!("(cannot list {})", dir.display());
    };
    let mut devices: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let driver = fs::read_link(e.path().join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "no driver".to_string());
            format!("{name} ({driver})")
        })
        .collect();
    devices.sort();
    devices.join(", ")
}

fn open_rw(path: &Path, fix: impl Into<String>) -> Result<OwnedFd, VfioError> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).expect("path has no NUL");
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_error("open", path.display(), fix));
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// ioctl with an integer (or no) argument.
fn ioctl_value(fd: RawFd, request: u64, value: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the requests used with this helper take an integer argument (or none), so the
    // kernel reads nothing from our memory.
    let rc = unsafe { libc::ioctl(fd, request as _, value) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// ioctl with a pointer to a `#[repr(C)]` argument structure.
///
/// # Safety
/// `request` must be one whose argument is a `T` (as declared in vfio.h), with `argsz` set.
unsafe fn ioctl_struct<T>(fd: RawFd, request: u64, arg: &mut T) -> io::Result<i32> {
    // SAFETY: arg is a live, exclusive reference to a T, which per the caller's contract is
    // the structure the kernel reads and writes for `request`.
    let rc = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `/dev/vfio/vfio`: holds the IOMMU context that groups join and DMA mappings live in.
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    iommu_set: bool,
}

impl Container {
    pub fn open() -> Result<Container, VfioError> {
        let path = Path::new(VFIO_CONTAINER_PATH);
        let fd = open_rw(
            path,
            "load the vfio-pci module (`modprobe vfio-pci`) and run as root",
        )?;
        let version = ioctl_value(fd.as_raw_fd(), ioctl::GET_API_VERSION, 0).map_err(|source| {
            VfioError::Os {
                what: "VFIO_GET_API_VERSION",
                path: VFIO_CONTAINER_PATH.to_string(),
                source,
                fix: "this kernel's VFIO is unusable".to_string(),
            }
        })?;
        if version != ioctl::API_VERSION {
            return Err(VfioError::Unsupported {
                what: "VFIO_GET_API_VERSION",
                path: VFIO_CONTAINER_PATH.to_string(),
                detail: format!("API version {version}, expected {}", ioctl::API_VERSION),
                fix: "use a kernel with the standard VFIO API".to_string(),
            });
        }
        let has_type1v2 = ioctl_value(
            fd.as_raw_fd(),
            ioctl::CHECK_EXTENSION,
            ioctl::TYPE1V2_IOMMU as libc::c_ulong,
        )
        .unwrap_or(0);
        if has_type1v2 != 1 {
            return Err(VfioError::Unsupported {
                what: "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)",
                path: VFIO_CONTAINER_PATH.to_string(),
                detail: "the type1 v2 IOMMU is not available".to_string(),
                fix: "enable the IOMMU (intel_iommu=on or amd_iommu=on) and load \
                      vfio_iommu_type1"
                    .to_string(),
            });
        }
        Ok(Container {
            fd,
            iommu_set: false,
        })
    }

    /// Opens IOMMU group `group` for device `bdf`, checks it is viable and adds it to this
    /// container (choosing the type1 v2 IOMMU after the first group joins).
    pub fn attach_group(&mut self, bdf: &str, group: u32) -> Result<Group, VfioError> {
        let path = PathBuf::from(format!("/dev/vfio/{group}"));
        let fd = open_rw(
            &path,
            format!("bind {bdf} to vfio-pci (`nvmf-tgt setup bind {bdf}`)"),
        )
        .map_err(|e| match e {
            VfioError::Os {
                what, path, source, ..
            } if source.raw_os_error() == Some(libc::EBUSY) => VfioError::Os {
                what,
                path,
                source,
                fix: format!(
                    "another process (another target, QEMU) already uses IOMMU group \
                             {group} and so {bdf}; stop it first (`fuser -v /dev/vfio/{group}` \
                             names it)"
                ),
            },
            other => other,
        })?;
        let mut status = GroupStatus {
            argsz: size_of::<GroupStatus>() as u32,
            flags: 0,
        };
        // SAFETY: GROUP_GET_STATUS takes a struct vfio_group_status; argsz is set.
        unsafe { ioctl_struct(fd.as_raw_fd(), ioctl::GROUP_GET_STATUS, &mut status) }.map_err(
            |source| VfioError::Os {
                what: "VFIO_GROUP_GET_STATUS",
                path: path.display().to_string(),
                source,
                fix: "check the kernel log".to_string(),
            },
        )?;
        if status.flags & ioctl::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable {
                bdf: bdf.to_string(),
                group,
                devices: describe_group_devices(group),
            });
        }
        let mut container_fd: i32 = self.fd.as_raw_fd();
        // SAFETY: GROUP_SET_CONTAINER takes a pointer to an int holding the container fd.
        unsafe {
            ioctl_struct(
                fd.as_raw_fd(),
                ioctl::GROUP_SET_CONTAINER,
                &mut container_fd,
            )
        }
        .map_err(|source| VfioError::Os {
            what: "VFIO_GROUP_SET_CONTAINER",
            path: path.display().to_string(),
            source,
            fix: "the group may already belong to another container or process".to_string(),
        })?;
        if !self.iommu_set {
            ioctl_value(
                self.fd.as_raw_fd(),
                ioctl::SET_IOMMU,
                ioctl::TYPE1V2_IOMMU as libc::c_ulong,
            )
            .map_err(|source| VfioError::Os {
                what: "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)",
                path: VFIO_CONTAINER_PATH.to_string(),
                source,
                fix: "enable the IOMMU (intel_iommu=on) and load vfio_iommu_type1".to_string(),
            })?;
            self.iommu_set = true;
        }
        Ok(Group { fd, number: group })
    }

    /// Maps `len_bytes` at `vaddr` for device reads and writes, with IOVA = vaddr. Both must
    /// be 4 KiB aligned; the memory must stay mapped until `unmap_dma`.
    pub fn map_dma(&self, vaddr: u64, len_bytes: u64) -> Result<(), VfioError> {
        let mut map = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: ioctl::DMA_MAP_FLAG_READ | ioctl::DMA_MAP_FLAG_WRITE,
            vaddr,
            iova: vaddr,
            size: len_bytes,
        };
        // SAFETY: IOMMU_MAP_DMA takes a struct vfio_iommu_type1_dma_map; argsz is set. The
        // kernel pins the pages; it does not write through our pointer beyond the struct.
        unsafe { ioctl_struct(self.fd.as_raw_fd(), ioctl::IOMMU_MAP_DMA, &mut map) }.map_err(
            |source| {
                let fix = if source.raw_os_error() == Some(libc::EINVAL) {
                    // IOVA = virtual address: user addresses reach 47 bits, beyond a 39-bit
                    // IOMMU (QEMU's intel-iommu default).
                    "the IOMMU must take 48-bit I/O virtual addresses (the driver maps memory \
                     at its virtual address; QEMU: -device intel-iommu,aw-bits=48), and the \
                     region must be 4 KiB aligned and not already mapped"
                } else {
                    "raise the locked-memory limit (`ulimit -l unlimited`, or run as root)"
                };
                VfioError::Os {
                    what: "VFIO_IOMMU_MAP_DMA",
                    path: format!("{VFIO_CONTAINER_PATH} ({len_bytes} bytes at {vaddr:#x})"),
                    source,
                    fix: fix.to_string(),
                }
            },
        )?;
        Ok(())
    }

    /// Maps a whole DMA region (see `map_dma`).
    pub fn map_dma_memory(&self, memory: &dma::DmaMemory) -> Result<(), VfioError> {
        self.map_dma(memory.iova(), memory.len() as u64)
    }

    pub fn unmap_dma(&self, iova: u64, len_bytes: u64) -> Result<(), VfioError> {
        let mut unmap = DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            iova,
            size: len_bytes,
        };
        // SAFETY: IOMMU_UNMAP_DMA takes a struct vfio_iommu_type1_dma_unmap; argsz is set.
        unsafe { ioctl_struct(self.fd.as_raw_fd(), ioctl::IOMMU_UNMAP_DMA, &mut unmap) }.map_err(
            |source| VfioError::Os {
                what: "VFIO_IOMMU_UNMAP_DMA",
                path: format!("{VFIO_CONTAINER_PATH} ({len_bytes} bytes at {iova:#x})"),
                source,
                fix: "unmap exactly the ranges that were mapped".to_string(),
            },
        )?;
        Ok(())
    }
}

/// An IOMMU group attached to a container. Closing it detaches it.
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    number: u32,
}

impl Group {
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Opens device `bdf` of this group and reads its BAR0 and config region descriptions.
    pub fn open_device(&self, bdf: &str) -> Result<Device, VfioError> {
        let bdf = normalize_bdf(bdf)?;
        let name = CString::new(bdf.as_str()).expect("normalized BDF has no NUL");
        // SAFETY: GROUP_GET_DEVICE_FD takes a NUL-terminated device name; name outlives the
        // call and the kernel only reads it.
        let fd = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if fd < 0 {
            return Err(os_error(
                "VFIO_GROUP_GET_DEVICE_FD",
                format!("/dev/vfio/{} ({bdf})", self.number),
                format!(
                    "check that {bdf} is in IOMMU group {} and bound to vfio-pci",
                    self.number
                ),
            ));
        }
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bar0 = region_info(&fd, &bdf, ioctl::PCI_BAR0_REGION_INDEX)?;
        let config = region_info(&fd, &bdf, ioctl::PCI_CONFIG_REGION_INDEX)?;
        Ok(Device {
            fd,
            bdf,
            bar0,
            config,
        })
    }
}

fn region_info(device: &OwnedFd, bdf: &str, index: u32) -> Result<RegionInfo, VfioError> {
    let mut info = RegionInfo {
        argsz: size_of::<RegionInfo>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: DEVICE_GET_REGION_INFO takes a struct vfio_region_info; argsz and index are
    // set. With argsz = 32 the kernel writes no capability chain beyond the struct.
    unsafe { ioctl_struct(device.as_raw_fd(), ioctl::DEVICE_GET_REGION_INFO, &mut info) }.map_err(
        |source| VfioError::Os {
            what: "VFIO_DEVICE_GET_REGION_INFO",
            path: format!("{bdf} region {index}"),
            source,
            fix: "check that the device is a PCI function bound to vfio-pci".to_string(),
        },
    )?;
    Ok(info)
}

/// A VFIO device fd with its BAR0 and config-space regions.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    bdf: String,
    bar0: RegionInfo,
    config: RegionInfo,
}

impl Device {
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    pub fn bar0_info(&self) -> RegionInfo {
        self.bar0
    }

    /// Maps the whole of BAR0 (shared, read/write).
    pub fn map_bar0(&self) -> Result<Bar0, VfioError> {
        let flags = self.bar0.flags;
        let needed = ioctl::REGION_INFO_FLAG_READ
            | ioctl::REGION_INFO_FLAG_WRITE
            | ioctl::REGION_INFO_FLAG_MMAP;
        if flags & needed != needed || self.bar0.size < 0x2000 {
            return Err(VfioError::Unsupported {
                what: "mapping BAR0",
                path: self.bdf.clone(),
                detail: format!(
                    "BAR0 is {} bytes with flags {flags:#x} (needs read, write and mmap)",
                    self.bar0.size
                ),
                fix: "check that this is an NVMe controller (class 0108) and the IOMMU \
                      supports interrupt remapping (intremap=on), which the kernel needs \
                      before it lets the MSI-X table be mapped"
                    .to_string(),
            });
        }
        let len_bytes = self.bar0.size as usize;
        // SAFETY: mapping a device region the kernel described; no existing memory is
        // touched (addr NULL). The result is checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                self.bar0.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error(
                "mmap of BAR0",
                &self.bdf,
                "the MSI-X table may sit in BAR0 on a kernel or IOMMU that forbids mapping it; \
                 enable interrupt remapping",
            ));
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns NULL on success");
        // SAFETY: a fresh shared mapping of len_bytes of BAR0 that nothing else unmaps.
        Ok(unsafe { Bar0::from_mapping(base, len_bytes) })
    }

    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        self.check_config_range(offset, buf.len())?;
        // SAFETY: buf is a live exclusive buffer of buf.len() bytes for the kernel to fill.
        let n = unsafe {
            libc::pread(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                (self.config.offset + offset) as libc::off_t,
            )
        };
        if n != buf.len() as isize {
            return Err(os_error(
                "reading PCI config space",
                format!("{} at {offset:#x}", self.bdf),
                "check the kernel log; the device may have been removed",
            ));
        }
        Ok(())
    }

    pub fn write_config(&self, offset: u64, data: &[u8]) -> Result<(), VfioError> {
        self.check_config_range(offset, data.len())?;
        // SAFETY: data is a live buffer of data.len() bytes that the kernel only reads.
        let n = unsafe {
            libc::pwrite(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                (self.config.offset + offset) as libc::off_t,
            )
        };
        if n != data.len() as isize {
            return Err(os_error(
                "writing PCI config space",
                format!("{} at {offset:#x}", self.bdf),
                "check the kernel log; the device may have been removed",
            ));
        }
        Ok(())
    }

    /// Sets Memory Space Enable and Bus Master Enable in the PCI command register, so BAR0
    /// answers and the controller may DMA.
    pub fn enable_bus_master(&self) -> Result<(), VfioError> {
        let mut command = [0u8; 2];
        self.read_config(PCI_COMMAND_OFFSET, &mut command)?;
        let value = u16::from_le_bytes(command) | PCI_COMMAND_MEMORY_SPACE | PCI_COMMAND_BUS_MASTER;
        self.write_config(PCI_COMMAND_OFFSET, &value.to_le_bytes())
    }

    /// VFIO_DEVICE_RESET (function-level reset where the device supports one).
    pub fn reset(&self) -> Result<(), VfioError> {
        ioctl_value(self.fd.as_raw_fd(), ioctl::DEVICE_RESET, 0).map_err(|source| {
            VfioError::Os {
                what: "VFIO_DEVICE_RESET",
                path: self.bdf.clone(),
                source,
                fix: "the device may not support a function-level reset; disable the \
                      controller through CC.EN instead"
                    .to_string(),
            }
        })?;
        Ok(())
    }

    fn check_config_range(&self, offset: u64, len: usize) -> Result<(), VfioError> {
        if offset + len as u64 > self.config.size {
            return Err(VfioError::Unsupported {
                what: "PCI config space access",
                path: self.bdf.clone(),
                detail: format!(
                    "{len} bytes at {offset:#x} lie beyond the {} bytes of config space",
                    self.config.size
                ),
                fix: "this is a driver bug".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_node_minus_one_means_unknown() {
        assert_eq!(parse_numa_node("1\n"), Some(1));
        assert_eq!(parse_numa_node("-1\n"), None);
        assert_eq!(parse_numa_node("x"), None);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(ioctl::GET_API_VERSION, 0x3B64);
        assert_eq!(ioctl::CHECK_EXTENSION, 0x3B65);
        assert_eq!(ioctl::SET_IOMMU, 0x3B66);
        assert_eq!(ioctl::GROUP_GET_STATUS, 0x3B67);
        assert_eq!(ioctl::GROUP_SET_CONTAINER, 0x3B68);
        assert_eq!(ioctl::GROUP_GET_DEVICE_FD, 0x3B6A);
        assert_eq!(ioctl::DEVICE_GET_REGION_INFO, 0x3B6C);
        assert_eq!(ioctl::DEVICE_RESET, 0x3B6F);
        assert_eq!(ioctl::IOMMU_MAP_DMA, 0x3B71);
        assert_eq!(ioctl::IOMMU_UNMAP_DMA, 0x3B72);
    }

    #[test]
    fn addresses_are_normalized_or_refused() {
        assert_eq!(normalize_bdf("01:00.0").unwrap(), "0000:01:00.0");
        assert_eq!(normalize_bdf("0000:AF:1f.7").unwrap(), "0000:af:1f.7");
        for bad in [
            "",
            "01:00",
            "0000:01:00.8",
            "../../etc",
            "0000:01:00.0x",
            "zz:00.0",
        ] {
            assert!(
                matches!(normalize_bdf(bad), Err(VfioError::BadAddress { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_device_names_the_fix() {
        let err = iommu_group_of("0000:ff:1f.7").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lspci -s 0000:ff:1f.7"), "{text}");
    }

    #[test]
    fn group_not_viable_names_the_command() {
        let err = VfioError::GroupNotViable {
            bdf: "0000:01:00.0".into(),
            group: 7,
            devices: "0000:01:00.0 (nvme)".into(),
        };
        let text = err.to_string();
        assert!(text.contains("nvmf-tgt setup bind"), "{text}");
        assert!(text.contains("0000:01:00.0 (nvme)"), "{text}");
    }
}
