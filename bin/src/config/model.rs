//! The validated configuration: plain values, checked.

use nvmf::ListenAddress;
use reactor::ReactorMask;

// ---------------------------------------------------------------------------------------------
// What the rest of the program uses: checked, plain values.

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file path, or [`DEFAULT_CONFIG_NAME`].
    pub path: String,
    pub reactor_mask: ReactorMask,
    pub mask_origin: MaskOrigin,
    /// 0: reactors spin (lowest latency). Otherwise an idle reactor sleeps
    /// this long, giving its core to other work.
    pub idle_sleep_us: u64,
    /// Interrupt mode (the default): `Some(us)` = a reactor idle that long
    /// sleeps until woken by work; `None` = reactors spin.
    pub interrupt_after_idle_us: Option<u64>,
    pub transport: TransportConfig,
    pub bdevs: Vec<BdevSpec>,
    pub subsystems: Vec<SubsystemSpec>,
}

/// Where the reactor mask came from, so a mask this machine cannot run is blamed correctly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskOrigin {
    /// No `reactor_mask` key: [`DEFAULT_REACTOR_MASK`].
    Default,
    File {
        line: usize,
    },
    CommandLine,
}

pub use rpc::transports::TransportConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BdevKind {
    Malloc,
    Null,
    Nvme,
}

impl BdevKind {
    /// The config spelling; also the capability name.
    pub fn as_str(self) -> &'static str {
        match self {
            BdevKind::Malloc => "malloc",
            BdevKind::Null => "null",
            BdevKind::Nvme => "nvme",
        }
    }

    /// For built kinds only; `None` for unknown or not-yet-built ones.
    pub fn from_name(name: &str) -> Option<BdevKind> {
        match name {
            "malloc" => Some(BdevKind::Malloc),
            "null" => Some(BdevKind::Null),
            "nvme" => Some(BdevKind::Nvme),
            _ => None,
        }
    }
}

/// Where a bdev's blocks live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BdevDevice {
    /// malloc and null: the size comes from the config.
    Ram {
        num_blocks: u64,
        block_size: u32,
        numa_node: Option<u32>,
    },
    /// An NVMe controller (bound to vfio-pci); each active namespace N becomes bdev
    /// `{name}n{N}`, sized by the device.
    Nvme {
        traddr: String,
        /// A command with no completion this long is aborted, and after as long again the
        /// controller is reset; 0: never.
        io_timeout_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BdevSpec {
    pub name: String,
    pub kind: BdevKind,
    pub device: BdevDevice,
    /// Line of its `name` key, for errors found when the bdev is created.
    pub line: usize,
}

impl BdevSpec {
    /// Size in bytes of a RAM bdev; None for NVMe (the device says, once opened).
    pub fn size_bytes(&self) -> Option<u64> {
        match self.device {
            // Cannot overflow: checked when parsed.
            BdevDevice::Ram {
                num_blocks,
                block_size,
                ..
            } => Some(num_blocks * u64::from(block_size)),
            BdevDevice::Nvme { .. } => None,
        }
    }

    /// The PCI address of an nvme bdev.
    pub fn nvme_traddr(&self) -> Option<&str> {
        match &self.device {
            BdevDevice::Nvme { traddr, .. } => Some(traddr),
            BdevDevice::Ram { .. } => None,
        }
    }

    /// Whether namespace bdev `name` comes from this spec: the name itself for RAM bdevs, or
    /// `{name}n{nsid}` for an NVMe controller; Some(nsid) (0 for RAM bdevs) if so.
    pub fn provides(&self, name: &str) -> Option<u32> {
        match self.device {
            BdevDevice::Ram { .. } => (name == self.name).then_some(0),
            BdevDevice::Nvme { .. } => {
                let digits = name.strip_prefix(self.name.as_str())?.strip_prefix('n')?;
                if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse::<u32>().ok().filter(|&nsid| nsid >= 1)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubsystemSpec {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    pub max_namespaces: u32,
    pub listeners: Vec<ListenAddress>,
    pub namespaces: Vec<NamespaceSpec>,
    /// Line of its `nqn` key.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub bdev: String,
    pub nsid: u32,
    pub nguid: Option<[u8; 16]>,
    pub uuid: Option<[u8; 16]>,
    /// Line of its `bdev` key.
    pub line: usize,
}
