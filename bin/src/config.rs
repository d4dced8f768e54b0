//! The configuration file: TOML whose sections mirror SPDK's nvmf.conf (`[global]`,
//! `[transport]`, `[[bdev]]`, `[[subsystem]]` with `[[subsystem.listener]]` and
//! `[[subsystem.namespace]]`).
//!
//! Parsing has two steps. serde reads the text into `Raw*` structs whose fields that need
//! checking are `toml::Spanned`, so they remember where they were written. [`Config::parse`]
//! then checks them and produces plain values ([`Config`]). Every error, from either step,
//! names the file, the line and the key ([`ConfigError`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use nvme_spec::fabrics::DISCOVERY_NQN;
use nvmf::{ListenAddress, TargetOptions};
use reactor::{MaskError, ReactorMask};
use serde::Deserialize;
use toml::Spanned;

use crate::capabilities::{self, CapabilityKind, KNOWN_BDEV_KINDS, KNOWN_TRANSPORTS};

/// The configuration run when no `-c` is given; `--print-default-config` prints it.
pub const DEFAULT_CONFIG_TOML: &str = r#"# nvmf-tgt configuration (TOML). This is the built-in default, run when no -c is given.
# Start your own from it:  nvmf-tgt --print-default-config > nvmf.toml
# then check and run it:   nvmf-tgt check-config -c nvmf.toml && nvmf-tgt -c nvmf.toml

[global]
# CPUs that run a reactor: hex mask ("0x3", "3") or CPU list ("[0,1]", "0-1").
# -m/--reactor-mask on the command line overrides it.
reactor_mask = "0x1"
# true: a reactor spins while it has work; once idle for interrupt_after_idle_us
# it sleeps until a completion, a new connection or a timer wakes it, so an
# idle target uses no CPU. false: reactors always spin, as SPDK's do (each
# keeps its core 100% busy; for cores given to the target alone).
interrupt_mode = true
interrupt_after_idle_us = 100
# With interrupt_mode = false: 0 spins; N sleeps N microseconds after each
# idle poll instead (coarser than interrupt mode, and slower).
idle_sleep_us = 0

[transport]
max_queue_depth = 128             # deepest I/O queue a host may create
max_admin_queue_depth = 32        # deepest admin queue
max_queues_per_controller = 64    # admin queue included
in_capsule_data_size = 4096       # bytes of data a command capsule may carry
max_io_size = 1048576             # largest transfer of one command, in bytes
io_unit_size = 8192               # data buffer unit: a transfer takes as many as it needs
acceptor_poll_period_us = 10000   # how often new connections are picked up
num_shared_buffers = 16384        # data buffer units, shared by all reactors (128 MiB)
srq = false                       # RDMA: one shared receive queue per device and reactor
srq_depth = 4096                  # RDMA: receives posted on it (capped by the device)

[[bdev]]
name = "Malloc0"
kind = "malloc"                   # "malloc" (RAM disk) or "null" (discards writes)
num_blocks = 131072               # 64 MiB of 512-byte blocks
block_size = 512                  # 512 or 4096
# numa_node = 0                   # malloc only: allocate on this NUMA node

[[subsystem]]
nqn = "nqn.2016-06.io.spdk:cnode1"
serial = "SPDK00000000000001"
model = "Rust NVMe-oF target"
# Any host may connect. To restrict access set allow_any_host = false and list the hosts:
# hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000"]
allow_any_host = true
max_namespaces = 32

  [[subsystem.listener]]
  trtype = "loopback"             # in-process transport, for tests and benchmarks
  traddr = "127.0.0.1"
  trsvcid = "4420"

  [[subsystem.namespace]]
  bdev = "Malloc0"
  nsid = 1                        # optional: the lowest free NSID
  # nguid = "000102030405060708090a0b0c0d0e0f"      # optional, 32 hex digits
  # uuid = "00010203-0405-0607-0809-0a0b0c0d0e0f"   # optional
"#;

/// How the built-in default is named in messages, in place of a file path.
pub const DEFAULT_CONFIG_NAME: &str = "<built-in default>";

pub const DEFAULT_REACTOR_MASK: &str = "0x1";
pub const DEFAULT_NUM_SHARED_BUFFERS: usize = 16_384;
pub const DEFAULT_IO_UNIT_BYTES: u32 = nvmf::transport::DEFAULT_IO_UNIT_BYTES;
/// An idle reactor sleeps at most this long (10 ms) per idle iteration.
pub const MAX_IDLE_SLEEP_US: u64 = 10_000;
/// Interrupt mode: how long a reactor stays idle, spinning, before it sleeps.
pub const DEFAULT_INTERRUPT_AFTER_IDLE_US: u64 = 100;
pub const MAX_INTERRUPT_AFTER_IDLE_US: u64 = 1_000_000;
/// Bounds the data buffer pool (at most 1 Mi units).
pub const MAX_NUM_SHARED_BUFFERS: usize = 1 << 20;
pub const DEFAULT_SRQ_DEPTH: u32 = 4096;
/// Shared receive queue depths: each receive holds an in-capsule data buffer,
/// so the upper bound also bounds that memory (64 Ki x in_capsule_data_size).
pub const SRQ_DEPTH_RANGE: std::ops::RangeInclusive<u32> = 16..=65_536;
pub const DEFAULT_TRSVCID: &str = "4420";
pub const DEFAULT_MODEL: &str = "Rust NVMe-oF target";
pub const DEFAULT_MAX_NAMESPACES: u32 = 32;
/// NVMe command timeouts (`io_timeout_ms`, 0 aside): from the timer period to an hour.
pub const IO_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// NUMA node ids beyond this are certainly typos.
pub const MAX_NUMA_NODE: u32 = 1023;
/// Identify Controller SN and MN field widths.
const SERIAL_MAX_LEN: usize = 20;
const MODEL_MAX_LEN: usize = 40;
/// Discovery log entry TRADDR field width.
const TRADDR_MAX_LEN: usize = 256;

/// A configuration problem: which file, where in it, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config {path}: cannot read it: {error}; check the path given with -c \
         (or omit -c to run the built-in default)"
    )]
    Read { path: String, error: std::io::Error },

    #[error("config {path} line {line}: {}{msg}", key_prefix(.key.as_deref()))]
    At {
        path: String,
        line: usize,
        key: Option<String>,
        msg: String,
    },

    #[error("config {path}: {msg}")]
    Whole { path: String, msg: String },

    /// A command-line option that overrides the file is wrong.
    #[error("{option}: {msg}")]
    CommandLine { option: &'static str, msg: String },
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key \"{k}\": ")).unwrap_or_default()
}

impl ConfigError {
    /// The line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::At { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What serde reads. Integers stay i64 (TOML's integer type) so range errors can be worded here.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    // Sections are not Spanned: toml cannot span a table written with dotted keys
    // (`transport.max_io_size = 4096`), and their keys carry the spans that errors need.
    global: Option<RawGlobal>,
    #[serde(default)]
    transport: Option<RawTransport>,
    #[serde(default)]
    bdev: Vec<Spanned<RawBdev>>,
    #[serde(default)]
    subsystem: Vec<Spanned<RawSubsystem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    reactor_mask: Option<Spanned<String>>,
    idle_sleep_us: Option<Spanned<i64>>,
    interrupt_mode: Option<Spanned<bool>>,
    interrupt_after_idle_us: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTransport {
    max_queue_depth: Option<Spanned<i64>>,
    max_admin_queue_depth: Option<Spanned<i64>>,
    max_queues_per_controller: Option<Spanned<i64>>,
    in_capsule_data_size: Option<Spanned<i64>>,
    max_io_size: Option<Spanned<i64>>,
    io_unit_size: Option<Spanned<i64>>,
    acceptor_poll_period_us: Option<Spanned<i64>>,
    num_shared_buffers: Option<Spanned<i64>>,
    srq: Option<Spanned<bool>>,
    srq_depth: Option<Spanned<i64>>,
}

impl RawTransport {
    /// The span of a key by name (the names `TargetOptions::validate` reports).
    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let field = match key {
            "max_queue_depth" => &self.max_queue_depth,
            "max_admin_queue_depth" => &self.max_admin_queue_depth,
            "max_queues_per_controller" => &self.max_queues_per_controller,
            "in_capsule_data_size" => &self.in_capsule_data_size,
            "max_io_size" => &self.max_io_size,
            "io_unit_size" => &self.io_unit_size,
            "acceptor_poll_period_us" => &self.acceptor_poll_period_us,
            "num_shared_buffers" => &self.num_shared_buffers,
            _ => return None,
        };
        field.as_ref().map(|v| v.span())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBdev {
    name: Spanned<String>,
    kind: Spanned<String>,
    num_blocks: Option<Spanned<i64>>,
    block_size: Option<Spanned<i64>>,
    numa_node: Option<Spanned<i64>>,
    traddr: Option<Spanned<String>>,
    io_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubsystem {
    nqn: Spanned<String>,
    serial: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    max_namespaces: Option<Spanned<i64>>,
    #[serde(default)]
    listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    namespace: Vec<Spanned<RawNamespace>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    trtype: Spanned<String>,
    traddr: Spanned<String>,
    trsvcid: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    bdev: Spanned<String>,
    nsid: Option<Spanned<i64>>,
    nguid: Option<Spanned<String>>,
    uuid: Option<Spanned<String>>,
}

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

#[derive(Clone, Copy, Debug)]
pub struct TransportConfig {
    pub options: TargetOptions,
    /// Data buffer units of `io_unit_bytes` each, shared by all reactors.
    pub num_shared_buffers: usize,
    /// Bytes of each data buffer unit; a transfer chains as many as it needs.
    pub io_unit_bytes: u32,
    /// `max_io_size` was set in the file (not the default): a device that
    /// takes less is an error then, and a reason to lower it otherwise.
    pub max_io_size_set: bool,
    /// RDMA: one shared receive queue per device and reactor instead of
    /// receives posted per queue pair.
    pub srq: bool,
    /// RDMA: receives of each shared receive queue (the device may cap it).
    pub srq_depth: u32,
}

impl TransportConfig {
    pub fn shared_buffer_bytes(&self) -> u64 {
        self.num_shared_buffers as u64 * u64::from(self.io_unit_bytes)
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            options: TargetOptions::default(),
            num_shared_buffers: DEFAULT_NUM_SHARED_BUFFERS,
            io_unit_bytes: DEFAULT_IO_UNIT_BYTES,
            max_io_size_set: false,
            srq: false,
            srq_depth: DEFAULT_SRQ_DEPTH,
        }
    }
}

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

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
            path: shown.clone(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bad = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line_start = bytes[..bad]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            ConfigError::At {
                path: shown.clone(),
                line: line_of_bytes(bytes, bad),
                key: None,
                msg: format!(
                    "byte {} of the line is not UTF-8; a config is a UTF-8 TOML text file \
                     (is this the right file?)",
                    bad - line_start + 1
                ),
            }
        })?;
        Config::parse(&text, &shown)
    }

    /// The built-in default, through the same parser as a file.
    pub fn builtin_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG_TOML, DEFAULT_CONFIG_NAME)
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let doc = Doc { text, path };
        let raw: RawFile = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        let config = doc.validate(raw)?;
        log::debug!(
            "config {path}: {} bdev(s), {} subsystem(s), reactor mask {}",
            config.bdevs.len(),
            config.subsystems.len(),
            config.reactor_mask
        );
        Ok(config)
    }

    /// `-m/--reactor-mask`: replaces the file's mask.
    pub fn override_mask(&mut self, mask: ReactorMask) {
        self.reactor_mask = mask;
        self.mask_origin = MaskOrigin::CommandLine;
    }

    /// Checks the mask against this machine's online CPUs and this process' affinity; the
    /// error blames wherever the mask came from.
    pub fn check_mask_usable(&self) -> Result<(), ConfigError> {
        self.reactor_mask
            .validate()
            .map_err(|e| self.mask_error(&e))
    }

    fn mask_error(&self, e: &MaskError) -> ConfigError {
        let fix = "pick CPUs from the valid ones";
        match self.mask_origin {
            MaskOrigin::File { line } => ConfigError::At {
                path: self.path.clone(),
                line,
                key: Some("reactor_mask".into()),
                msg: format!("{e}; {fix}, or override with -m"),
            },
            MaskOrigin::CommandLine => ConfigError::CommandLine {
                option: "-m/--reactor-mask",
                msg: format!("{e}; {fix}"),
            },
            MaskOrigin::Default => ConfigError::Whole {
                path: self.path.clone(),
                msg: format!(
                    "the default reactor mask {DEFAULT_REACTOR_MASK} cannot run here: {e}; \
                     set [global] reactor_mask or pass -m"
                ),
            },
        }
    }

    /// An error found after validation (creating a bdev or a subsystem), at `line`.
    pub fn error_at(&self, line: usize, msg: String) -> ConfigError {
        ConfigError::At {
            path: self.path.clone(),
            line,
            key: None,
            msg,
        }
    }

    /// The spec a namespace's bdev name comes from (see [`BdevSpec::provides`]).
    pub fn find_bdev(&self, name: &str) -> Option<&BdevSpec> {
        self.bdevs.iter().find(|b| b.provides(name).is_some())
    }

    /// Advice an operator should read before running this config (`check-config` prints it).
    pub fn warnings(&self) -> Vec<String> {
        self.collect_warnings(true)
    }

    /// [`warnings`](Self::warnings) less the one the nvmf target logs itself when a subsystem
    /// is added (a subsystem that allows no host), so start-up does not say it twice.
    pub fn startup_warnings(&self) -> Vec<String> {
        self.collect_warnings(false)
    }

    fn collect_warnings(&self, include_no_host: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.subsystems.is_empty() {
            out.push(
                "no [[subsystem]] is configured: hosts will find only the discovery subsystem"
                    .to_string(),
            );
        }
        for s in &self.subsystems {
            if s.allow_any_host {
                out.push(format!(
                    "subsystem {} ({} line {}) allows ANY host to connect; to restrict it set \
                     allow_any_host = false and list the allowed host NQNs in hosts = [...]",
                    s.nqn, self.path, s.line
                ));
                if !s.hosts.is_empty() {
                    out.push(format!(
                        "subsystem {} ({} line {}): hosts has no effect while allow_any_host = true",
                        s.nqn, self.path, s.line
                    ));
                }
            } else if s.hosts.is_empty() && include_no_host {
                out.push(format!(
                    "subsystem {} ({} line {}) allows no host: list host NQNs in hosts = [...] \
                     or set allow_any_host = true",
                    s.nqn, self.path, s.line
                ));
            }
            if s.listeners.is_empty() {
                out.push(format!(
                    "subsystem {} ({} line {}) has no [[subsystem.listener]]: no host can reach it",
                    s.nqn, self.path, s.line
                ));
            }
        }
        out
    }
}

/// A human-readable summary (what `check-config` prints).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.transport.options;
        writeln!(
            f,
            "reactor mask {} ({} reactor(s) on CPU(s) {}), {}",
            self.reactor_mask,
            self.reactor_mask.len(),
            reactor::format_cpu_list(self.reactor_mask.cores()),
            match (self.interrupt_after_idle_us, self.idle_sleep_us) {
                (Some(after), _) => format!("interrupt mode: reactors sleep after {after} us idle"),
                (None, 0) => "idle reactors spin".to_string(),
                (None, us) => format!("idle reactors sleep {us} us"),
            }
        )?;
        writeln!(
            f,
            "transport: max_queue_depth {}, max_admin_queue_depth {}, max_queues_per_controller {}, \
             in_capsule_data_size {}, max_io_size {}, io_unit_size {}, acceptor_poll_period_us {}, \
             num_shared_buffers {} ({}), {}",
            o.max_queue_depth,
            o.max_admin_queue_depth,
            o.max_queues_per_controller,
            o.in_capsule_data_bytes,
            o.max_io_bytes,
            self.transport.io_unit_bytes,
            o.acceptor_poll_period_us,
            self.transport.num_shared_buffers,
            format_mib(self.transport.shared_buffer_bytes()),
            if self.transport.srq {
                format!("srq on (srq_depth {})", self.transport.srq_depth)
            } else {
                "srq off".to_string()
            },
        )?;
        for b in &self.bdevs {
            write!(f, "bdev {}: {}", b.name, b.kind.as_str())?;
            match &b.device {
                BdevDevice::Ram {
                    num_blocks,
                    block_size,
                    numa_node,
                } => {
                    let size = num_blocks * u64::from(*block_size);
                    write!(
                        f,
                        ", {num_blocks} blocks of {block_size} bytes ({})",
                        format_mib(size)
                    )?;
                    match numa_node {
                        Some(node) => writeln!(f, ", NUMA node {node}")?,
                        None => writeln!(f)?,
                    }
                }
                BdevDevice::Nvme {
                    traddr,
                    io_timeout_ms,
                } => writeln!(
                    f,
                    ", controller {traddr} (namespace N is bdev {}nN), io_timeout_ms {io_timeout_ms}",
                    b.name
                )?,
            }
        }
        for s in &self.subsystems {
            let access = if s.allow_any_host {
                "any host".to_string()
            } else {
                format!("{} allowed host(s)", s.hosts.len())
            };
            writeln!(
                f,
                "subsystem {}: serial {:?}, model {:?}, max_namespaces {}, {access}",
                s.nqn, s.serial, s.model, s.max_namespaces
            )?;
            for h in s.hosts.iter().filter(|_| !s.allow_any_host) {
                writeln!(f, "  host {h}")?;
            }
            for l in &s.listeners {
                writeln!(f, "  listener {l}")?;
            }
            for ns in &s.namespaces {
                let size = self
                    .find_bdev(&ns.bdev)
                    .and_then(BdevSpec::size_bytes)
                    .map(|bytes| format!(", {}", format_mib(bytes)))
                    .unwrap_or_default();
                writeln!(f, "  namespace {}: bdev {}{size}", ns.nsid, ns.bdev)?;
            }
        }
        Ok(())
    }
}

/// "64 MiB", "0.5 MiB": sizes as operators think of them.
pub fn format_mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// The text being parsed and its name, to turn byte spans into "file line N" errors.
struct Doc<'a> {
    text: &'a str,
    path: &'a str,
}

impl Doc<'_> {
    /// 1-based line of a byte offset (offsets past the end count as the last line).
    fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            key: Some(key.to_string()),
            msg: msg.into(),
        }
    }

    /// Error about a whole table (no single key is at fault).
    fn table_err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            key: None,
            msg: msg.into(),
        }
    }

    /// Turns a TOML syntax or type error into one that names the line and, when it can be
    /// told, the key.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().trim().replace('\n', ": ");
        let Some(span) = e.span() else {
            return ConfigError::Whole {
                path: self.path.to_string(),
                msg,
            };
        };
        let start = span.start.min(self.text.len());
        let spanned = self.text.get(span.clone()).unwrap_or("");
        let at = |key: Option<String>, msg: String| ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(start),
            key,
            msg,
        };
        if let Some(rest) = msg.strip_prefix("missing field `") {
            // The span is the table that lacks the key.
            let key = rest.split('`').next().unwrap_or("").to_string();
            let table = first_line(spanned);
            return at(
                Some(key),
                format!("is required but missing from the table starting {table:?}; add it"),
            );
        }
        if msg.starts_with("unknown field `") {
            // The span is the unknown key itself.
            let expected = msg
                .split_once(", expected ")
                .map(|(_, e)| format!("; valid keys here: {e}"))
                .unwrap_or_default();
            return at(
                Some(spanned.trim().to_string()),
                format!("unknown key{expected}"),
            );
        }
        if is_data_error(&msg) {
            let mut msg = msg.replace("expected i64", "expected an integer");
            let key = if spanned.starts_with('[') {
                // A whole table of the wrong shape, e.g. [bdev] where [[bdev]] is needed.
                if msg.contains("expected a sequence") && !spanned.starts_with("[[") {
                    let name = table_name(spanned);
                    msg.push_str(&format!(
                        "; write [[{name}]] (a list of tables), not [{name}]"
                    ));
                }
                Some(table_name(spanned))
            } else {
                key_before(self.text, start)
            };
            return at(key, msg);
        }
        let column = column_of(self.text, start);
        at(None, format!("TOML syntax error at column {column}: {msg}"))
    }

    fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let (reactor_mask, mask_origin) = self.mask(raw.global.as_ref())?;
        let idle_sleep_us = self.idle_sleep_us(raw.global.as_ref())?;
        let interrupt_after_idle_us = self.interrupt_after_idle_us(raw.global.as_ref())?;
        let transport = self.transport(raw.transport.as_ref())?;
        let bdevs = self.bdevs(&raw.bdev)?;
        let subsystems = self.subsystems(&raw.subsystem, &bdevs)?;
        Ok(Config {
            path: self.path.to_string(),
            reactor_mask,
            mask_origin,
            idle_sleep_us,
            interrupt_after_idle_us,
            transport,
            bdevs,
            subsystems,
        })
    }

    fn idle_sleep_us(&self, global: Option<&RawGlobal>) -> Result<u64, ConfigError> {
        let Some(v) = global.and_then(|g| g.idle_sleep_us.as_ref()) else {
            return Ok(0);
        };
        match u64::try_from(*v.get_ref()) {
            Ok(us) if us <= MAX_IDLE_SLEEP_US => Ok(us),
            _ => Err(self.err(
                v.span(),
                "idle_sleep_us",
                format!(
                    "{} is out of range: use 0 (reactors spin) to {MAX_IDLE_SLEEP_US} microseconds",
                    v.get_ref()
                ),
            )),
        }
    }

    fn interrupt_after_idle_us(
        &self,
        global: Option<&RawGlobal>,
    ) -> Result<Option<u64>, ConfigError> {
        let mode = global.and_then(|g| g.interrupt_mode.as_ref());
        let after = global.and_then(|g| g.interrupt_after_idle_us.as_ref());
        let on = mode.is_none_or(|m| *m.get_ref());
        let Some(after) = after else {
            return Ok(on.then_some(DEFAULT_INTERRUPT_AFTER_IDLE_US));
        };
        if !on {
            return Err(self.err(
                after.span(),
                "interrupt_after_idle_us",
                "has no effect while interrupt_mode is off: set interrupt_mode = true, or remove it"
                    .to_string(),
            ));
        }
        match u64::try_from(*after.get_ref()) {
            Ok(us) if us <= MAX_INTERRUPT_AFTER_IDLE_US => Ok(Some(us)),
            _ => Err(self.err(
                after.span(),
                "interrupt_after_idle_us",
                format!(
                    "{} is out of range: use 0 to {MAX_INTERRUPT_AFTER_IDLE_US} microseconds",
                    after.get_ref()
                ),
            )),
        }
    }

    fn mask(&self, global: Option<&RawGlobal>) -> Result<(ReactorMask, MaskOrigin), ConfigError> {
        match global.and_then(|g| g.reactor_mask.as_ref()) {
            Some(text) => {
                let mask = ReactorMask::parse(text.get_ref())
                    .map_err(|e| self.err(text.span(), "reactor_mask", e.to_string()))?;
                let line = self.line_of(text.span().start);
                Ok((mask, MaskOrigin::File { line }))
            }
            None => {
                let mask =
                    ReactorMask::parse(DEFAULT_REACTOR_MASK).map_err(|e| ConfigError::Whole {
                        path: self.path.to_string(),
                        msg: format!("built-in default mask: {e}"),
                    })?;
                Ok((mask, MaskOrigin::Default))
            }
        }
    }

    fn transport(&self, section: Option<&RawTransport>) -> Result<TransportConfig, ConfigError> {
        let empty = RawTransport::default();
        let raw = section.unwrap_or(&empty);
        let mut out = TransportConfig::default();
        let o = &mut out.options;
        // Values beyond the type are clamped to its maximum: every option's valid range ends
        // far below that, so validate() below still rejects them, with the real range.
        if let Some(v) = &raw.max_queue_depth {
            o.max_queue_depth = self.clamped(v, "max_queue_depth")?;
        }
        if let Some(v) = &raw.max_admin_queue_depth {
            o.max_admin_queue_depth = self.clamped(v, "max_admin_queue_depth")?;
        }
        if let Some(v) = &raw.max_queues_per_controller {
            o.max_queues_per_controller = self.clamped(v, "max_queues_per_controller")?;
        }
        if let Some(v) = &raw.in_capsule_data_size {
            o.in_capsule_data_bytes = self.clamped(v, "in_capsule_data_size")?;
        }
        if let Some(v) = &raw.max_io_size {
            o.max_io_bytes = self.clamped(v, "max_io_size")?;
            out.max_io_size_set = true;
        }
        if let Some(v) = &raw.io_unit_size {
            let n = *v.get_ref();
            let max = i64::from(o.max_io_bytes);
            if n < 4096 || n > max || !(n as u64).is_power_of_two() {
                return Err(self.err(
                    v.span(),
                    "io_unit_size",
                    format!("{n} is invalid; use a power of two from 4096 to max_io_size ({max})"),
                ));
            }
            out.io_unit_bytes = n as u32;
        }
        if let Some(v) = &raw.acceptor_poll_period_us {
            o.acceptor_poll_period_us = self.clamped(v, "acceptor_poll_period_us")?;
        }
        if let Some(v) = &raw.num_shared_buffers {
            let n = *v.get_ref();
            if !(1..=MAX_NUM_SHARED_BUFFERS as i64).contains(&n) {
                return Err(self.err(
                    v.span(),
                    "num_shared_buffers",
                    format!("{n} is out of range; use 1 to {MAX_NUM_SHARED_BUFFERS}"),
                ));
            }
            out.num_shared_buffers = n as usize;
        }
        // One transfer of max_io_size must fit the pool, or it would wait forever.
        let units_per_io = o.max_io_bytes.div_ceil(out.io_unit_bytes) as usize;
        if out.num_shared_buffers < units_per_io {
            let span = raw
                .num_shared_buffers
                .as_ref()
                .map(|v| v.span())
                .or_else(|| raw.max_io_size.as_ref().map(|v| v.span()))
                .or_else(|| raw.io_unit_size.as_ref().map(|v| v.span()));
            let key = if raw.num_shared_buffers.is_some() {
                "num_shared_buffers"
            } else {
                "max_io_size"
            };
            let msg = format!(
                "{} units of {} bytes cannot hold one transfer of max_io_size {} bytes; \
                 set num_shared_buffers to at least {units_per_io}",
                out.num_shared_buffers, out.io_unit_bytes, o.max_io_bytes
            );
            return Err(match span {
                Some(span) => self.err(span, key, msg),
                None => self.err(0..0, key, msg),
            });
        }
        if let Some(v) = &raw.srq {
            out.srq = *v.get_ref();
        }
        if let Some(v) = &raw.srq_depth {
            let n = *v.get_ref();
            let (lo, hi) = (*SRQ_DEPTH_RANGE.start(), *SRQ_DEPTH_RANGE.end());
            if !(i64::from(lo)..=i64::from(hi)).contains(&n) {
                return Err(self.err(
                    v.span(),
                    "srq_depth",
                    format!(
                        "{n} is out of range; use {lo} to {hi} (receives of each shared \
                         receive queue; the device's max_srq_wr caps it at run time)"
                    ),
                ));
            }
            out.srq_depth = n as u32;
        }
        out.options.validate().map_err(|e| {
            let nvmf::ConfigError::Invalid { what, msg } = e;
            let key = what.strip_prefix("transport option ").unwrap_or(&what);
            let value = transport_value(&out.options, key);
            match raw.span_of(key) {
                Some(span) => self.err(span, key, format!("{value} is invalid: it {msg}")),
                // A default that clashes with a key that is set (no default does today).
                None => ConfigError::Whole {
                    path: self.path.to_string(),
                    msg: format!(
                        "[transport] {key}: the default {value} is invalid: it {msg}; set {key}"
                    ),
                },
            }
        })?;
        Ok(out)
    }

    /// A non-negative integer as `T`, saturating at `T::MAX`.
    fn clamped<T: TryFrom<i64> + Bounded>(
        &self,
        v: &Spanned<i64>,
        key: &str,
    ) -> Result<T, ConfigError> {
        let n = *v.get_ref();
        if n < 0 {
            return Err(self.err(v.span(), key, format!("{n} is negative")));
        }
        Ok(T::try_from(n).unwrap_or(T::MAX))
    }

    fn bdevs(&self, raw: &[Spanned<RawBdev>]) -> Result<Vec<BdevSpec>, ConfigError> {
        let mut out: Vec<BdevSpec> = Vec::with_capacity(raw.len());
        for entry in raw {
            let b = entry.get_ref();
            let name = b.name.get_ref();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!("{name:?} is not a valid bdev name; use letters, digits and punctuation without spaces, e.g. \"Malloc0\""),
                ));
            }
            if let Some(first) = out.iter().find(|o| o.name == *name) {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!(
                        "bdev {name:?} is already defined at line {}; bdev names must be unique",
                        first.line
                    ),
                ));
            }
            let kind = self.bdev_kind(&b.kind)?;
            let device = match kind {
                BdevKind::Malloc | BdevKind::Null => self.ram_device(b, kind)?,
                BdevKind::Nvme => self.nvme_device(b)?,
            };
            let spec = BdevSpec {
                name: name.clone(),
                kind,
                device,
                line: self.line_of(b.name.span().start),
            };
            // An NVMe controller's namespace bdevs must not shadow another bdev, or be shadowed.
            if let Some(other) = out
                .iter()
                .find(|o| o.provides(name).is_some() || spec.provides(&o.name).is_some())
            {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!(
                        "bdev {name:?} clashes with bdev {:?} (line {}): the namespaces of \
                         an nvme bdev named N are named NnX; rename one of them",
                        other.name, other.line
                    ),
                ));
            }
            if let Some((traddr, other)) = spec.nvme_traddr().and_then(|traddr| {
                let other = out.iter().find(|o| o.nvme_traddr() == Some(traddr))?;
                Some((traddr, other))
            }) {
                return Err(self.err(
                    b.name.span(),
                    "traddr",
                    format!(
                        "controller {traddr} is already bdev {:?} (line {}); a controller can \
                         be opened once",
                        other.name, other.line
                    ),
                ));
            }
            out.push(spec);
        }
        Ok(out)
    }

    /// Size and placement of a malloc or null bdev; `traddr` belongs to nvme bdevs only.
    fn ram_device(&self, b: &RawBdev, kind: BdevKind) -> Result<BdevDevice, ConfigError> {
        let nvme_only = [
            ("traddr", b.traddr.as_ref().map(|v| v.span())),
            ("io_timeout_ms", b.io_timeout_ms.as_ref().map(|v| v.span())),
        ];
        if let Some((key, Some(span))) = nvme_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(self.err(
                span,
                key,
                format!(
                    "applies to nvme bdevs only, and this one is {:?}; remove it",
                    kind.as_str()
                ),
            ));
        }
        let required = |key: &str, v: &Option<Spanned<i64>>| {
            v.clone().ok_or_else(|| {
                self.err(
                    b.name.span(),
                    key,
                    format!(
                        "a {} bdev needs {key} (e.g. num_blocks = 131072 and block_size = 512 \
                         for 64 MiB)",
                        kind.as_str()
                    ),
                )
            })
        };
        let block_size_v = required("block_size", &b.block_size)?;
        let num_blocks_v = required("num_blocks", &b.num_blocks)?;
        let block_size = *block_size_v.get_ref();
        if block_size != 512 && block_size != 4096 {
            return Err(self.err(
                block_size_v.span(),
                "block_size",
                format!("{block_size} is not 512 or 4096"),
            ));
        }
        let num_blocks = *num_blocks_v.get_ref();
        if num_blocks < 1 {
            return Err(self.err(
                num_blocks_v.span(),
                "num_blocks",
                format!("{num_blocks} is invalid; a bdev needs at least 1 block"),
            ));
        }
        if (num_blocks as u64).checked_mul(block_size as u64).is_none() {
            return Err(self.err(
                num_blocks_v.span(),
                "num_blocks",
                format!("{num_blocks} blocks of {block_size} bytes overflow a 64-bit size"),
            ));
        }
        let numa_node = match &b.numa_node {
            None => None,
            Some(v) if kind != BdevKind::Malloc => {
                return Err(self.err(
                    v.span(),
                    "numa_node",
                    format!(
                        "applies to malloc bdevs only, and this one is {:?}; remove it",
                        kind.as_str()
                    ),
                ))
            }
            Some(v) => {
                let node = *v.get_ref();
                if !(0..=i64::from(MAX_NUMA_NODE)).contains(&node) {
                    return Err(self.err(
                        v.span(),
                        "numa_node",
                        format!("{node} is out of range; use 0 to {MAX_NUMA_NODE}"),
                    ));
                }
                Some(node as u32)
            }
        };
        Ok(BdevDevice::Ram {
            num_blocks: num_blocks as u64,
            block_size: block_size as u32,
            numa_node,
        })
    }

    /// The PCI address of an nvme bdev; its size and block size come from the device.
    fn nvme_device(&self, b: &RawBdev) -> Result<BdevDevice, ConfigError> {
        for (key, v) in [
            ("num_blocks", &b.num_blocks),
            ("block_size", &b.block_size),
            ("numa_node", &b.numa_node),
        ] {
            if let Some(v) = v {
                return Err(self.err(
                    v.span(),
                    key,
                    "does not apply to nvme bdevs: the device sets it (memory goes on the \
                     device's NUMA node); remove it",
                ));
            }
        }
        let Some(v) = &b.traddr else {
            return Err(self.err(
                b.name.span(),
                "traddr",
                "an nvme bdev needs traddr, the controller's PCI address (e.g. traddr = \
                 \"0000:04:00.0\"); `nvmf-tgt setup status` lists them",
            ));
        };
        let traddr = nvme_pcie::vfio::normalize_bdf(v.get_ref())
            .map_err(|e| self.err(v.span(), "traddr", e.to_string()))?;
        let io_timeout_ms = match &b.io_timeout_ms {
            None => nvme_pcie::bdev::DEFAULT_IO_TIMEOUT_MS,
            Some(v) => {
                let ms = *v.get_ref();
                if ms != 0 && !IO_TIMEOUT_MS_RANGE.contains(&ms) {
                    return Err(self.err(
                        v.span(),
                        "io_timeout_ms",
                        format!(
                            "{ms} is out of range; use {} to {} ms, or 0 for no timeout \
                             (timeouts are checked every 100 ms)",
                            IO_TIMEOUT_MS_RANGE.start(),
                            IO_TIMEOUT_MS_RANGE.end()
                        ),
                    ));
                }
                ms as u64
            }
        };
        Ok(BdevDevice::Nvme {
            traddr,
            io_timeout_ms,
        })
    }

    fn bdev_kind(&self, kind: &Spanned<String>) -> Result<BdevKind, ConfigError> {
        let name = kind.get_ref().as_str();
        let built = capabilities::built_names(CapabilityKind::Bdev);
        if let Some(k) = BdevKind::from_name(name) {
            if capabilities::is_built(CapabilityKind::Bdev, name) {
                return Ok(k);
            }
        }
        let msg = if KNOWN_BDEV_KINDS.contains(&name) {
            format!(
                "bdev kind {name:?} is not built into this nvmf-tgt yet (built: {}); \
                 see `nvmf-tgt capabilities`",
                quoted_list(&built)
            )
        } else {
            format!(
                "{name:?} is not a bdev kind; use one of {}",
                quoted_list(&built)
            )
        };
        Err(self.err(kind.span(), "kind", msg))
    }

    fn subsystems(
        &self,
        raw: &[Spanned<RawSubsystem>],
        bdevs: &[BdevSpec],
    ) -> Result<Vec<SubsystemSpec>, ConfigError> {
        let mut out: Vec<SubsystemSpec> = Vec::with_capacity(raw.len());
        // NGUIDs and UUIDs identify namespaces to hosts: unique across the target.
        let mut nguids: HashMap<[u8; 16], usize> = HashMap::new();
        let mut uuids: HashMap<[u8; 16], usize> = HashMap::new();
        for (index, entry) in raw.iter().enumerate() {
            let s = entry.get_ref();
            let nqn = s.nqn.get_ref();
            nvmf::nqn::validate_nqn(nqn).map_err(|m| {
                self.err(
                    s.nqn.span(),
                    "nqn",
                    format!("{m}; use e.g. \"nqn.2016-06.io.spdk:cnode1\""),
                )
            })?;
            if nqn == DISCOVERY_NQN {
                return Err(self.err(
                    s.nqn.span(),
                    "nqn",
                    "is the discovery NQN, which the target provides itself; pick another NQN",
                ));
            }
            if let Some(first) = out.iter().find(|o| o.nqn == *nqn) {
                return Err(self.err(
                    s.nqn.span(),
                    "nqn",
                    format!(
                        "subsystem {nqn} is already defined at line {}; NQNs must be unique",
                        first.line
                    ),
                ));
            }
            let serial = match &s.serial {
                Some(v) => {
                    self.check_id_string(v, "serial", SERIAL_MAX_LEN)?;
                    v.get_ref().clone()
                }
                // Unique per subsystem, like SPDK's example serials.
                None => format!("SPDK{:014}", index + 1),
            };
            let model = match &s.model {
                Some(v) => {
                    self.check_id_string(v, "model", MODEL_MAX_LEN)?;
                    v.get_ref().clone()
                }
                None => DEFAULT_MODEL.to_string(),
            };
            let mut hosts: Vec<String> = Vec::with_capacity(s.hosts.len());
            for h in &s.hosts {
                nvmf::nqn::validate_nqn(h.get_ref()).map_err(|m| {
                    self.err(
                        h.span(),
                        "hosts",
                        format!(
                            "{m}; host NQNs look like \"nqn.2014-08.org.nvmexpress:uuid:<uuid>\" \
                             (see /etc/nvme/hostnqn on the host)"
                        ),
                    )
                })?;
                if hosts.contains(h.get_ref()) {
                    return Err(self.err(
                        h.span(),
                        "hosts",
                        format!("{} is listed twice; remove one", h.get_ref()),
                    ));
                }
                hosts.push(h.get_ref().clone());
            }
            let max_namespaces = match &s.max_namespaces {
                None => DEFAULT_MAX_NAMESPACES,
                Some(v) => {
                    let n = *v.get_ref();
                    let limit = nvmf::subsystem::MAX_NAMESPACES_LIMIT;
                    if !(1..=i64::from(limit)).contains(&n) {
                        return Err(self.err(
                            v.span(),
                            "max_namespaces",
                            format!("{n} is out of range; use 1 to {limit}"),
                        ));
                    }
                    n as u32
                }
            };
            let listeners = self.listeners(&s.listener)?;
            let namespaces = self.namespaces(
                &s.namespace,
                entry.span(),
                max_namespaces,
                bdevs,
                &mut nguids,
                &mut uuids,
            )?;
            out.push(SubsystemSpec {
                nqn: nqn.clone(),
                serial,
                model,
                allow_any_host: s.allow_any_host,
                hosts,
                max_namespaces,
                listeners,
                namespaces,
                line: self.line_of(s.nqn.span().start),
            });
        }
        Ok(out)
    }

    /// Serial and model: printable ASCII that fits the Identify Controller field.
    fn check_id_string(
        &self,
        v: &Spanned<String>,
        key: &str,
        max_len: usize,
    ) -> Result<(), ConfigError> {
        let s = v.get_ref();
        let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if s.is_empty() || s.len() > max_len || !printable {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{s:?} is invalid: it must be 1 to {max_len} printable ASCII characters \
                     (it has {} characters{})",
                    s.chars().count(),
                    if printable {
                        ""
                    } else {
                        ", some not printable ASCII"
                    }
                ),
            ));
        }
        Ok(())
    }

    fn listeners(&self, raw: &[Spanned<RawListener>]) -> Result<Vec<ListenAddress>, ConfigError> {
        let mut out: Vec<ListenAddress> = Vec::with_capacity(raw.len());
        for entry in raw {
            let l = entry.get_ref();
            let trtype = l.trtype.get_ref().as_str();
            if !capabilities::is_built(CapabilityKind::Transport, trtype) {
                let built = capabilities::built_names(CapabilityKind::Transport);
                let msg = if KNOWN_TRANSPORTS.contains(&trtype) {
                    format!(
                        "transport {trtype:?} is not built into this nvmf-tgt yet (built: {}); \
                         use trtype = \"loopback\" for in-process tests, and see \
                         `nvmf-tgt capabilities`",
                        quoted_list(&built)
                    )
                } else {
                    format!(
                        "{trtype:?} is not a transport type; use one of {}",
                        quoted_list(KNOWN_TRANSPORTS)
                    )
                };
                return Err(self.err(l.trtype.span(), "trtype", msg));
            }
            let traddr = l.traddr.get_ref();
            check_traddr(trtype, traddr).map_err(|m| self.err(l.traddr.span(), "traddr", m))?;
            let trsvcid = match &l.trsvcid {
                Some(v) => {
                    check_trsvcid(v.get_ref()).map_err(|m| self.err(v.span(), "trsvcid", m))?;
                    v.get_ref().clone()
                }
                None => DEFAULT_TRSVCID.to_string(),
            };
            let addr = ListenAddress::new(trtype, traddr, &trsvcid);
            if out.contains(&addr) {
                return Err(self.table_err(
                    entry.span(),
                    format!("listener {addr} is listed twice in this subsystem; remove one"),
                ));
            }
            out.push(addr);
        }
        Ok(out)
    }

    fn namespaces(
        &self,
        raw: &[Spanned<RawNamespace>],
        subsystem_span: Range<usize>,
        max_namespaces: u32,
        bdevs: &[BdevSpec],
        nguids: &mut HashMap<[u8; 16], usize>,
        uuids: &mut HashMap<[u8; 16], usize>,
    ) -> Result<Vec<NamespaceSpec>, ConfigError> {
        let mut out: Vec<NamespaceSpec> = Vec::with_capacity(raw.len());
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        // Explicit NSIDs first, so an automatic one never takes an NSID named further down.
        for entry in raw {
            if let Some(v) = &entry.get_ref().nsid {
                let n = *v.get_ref();
                if !(1..=i64::from(max_namespaces)).contains(&n) {
                    return Err(self.err(
                        v.span(),
                        "nsid",
                        format!(
                            "{n} is out of range; use 1 to {max_namespaces} (this subsystem's \
                             max_namespaces), or omit nsid to take the lowest free one"
                        ),
                    ));
                }
                if !taken.insert(n as u32) {
                    return Err(self.err(
                        v.span(),
                        "nsid",
                        format!(
                            "NSID {n} is used twice in this subsystem; give each namespace its own"
                        ),
                    ));
                }
            }
        }
        for entry in raw {
            let ns = entry.get_ref();
            let bdev = ns.bdev.get_ref();
            let line = self.line_of(ns.bdev.span().start);
            if !bdevs.iter().any(|b| b.provides(bdev).is_some()) {
                let defined: Vec<String> = bdevs
                    .iter()
                    .map(|b| match b.device {
                        BdevDevice::Ram { .. } => format!("{:?}", b.name),
                        BdevDevice::Nvme { .. } => format!("\"{}n1\"...", b.name),
                    })
                    .collect();
                let defined = if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                };
                return Err(self.err(
                    ns.bdev.span(),
                    "bdev",
                    format!(
                        "no bdev is named {bdev:?} (defined: {defined}); add a [[bdev]] with \
                         name = {bdev:?} or fix the name (namespace N of an nvme bdev named \
                         Nvme0 is \"Nvme0nN\")"
                    ),
                ));
            }
            if let Some(other) = out.iter().find(|o| o.bdev == *bdev) {
                return Err(self.err(
                    ns.bdev.span(),
                    "bdev",
                    format!(
                        "bdev {bdev:?} is already namespace {} of this subsystem (line {}); \
                         a bdev can back only one namespace per subsystem",
                        other.nsid, other.line
                    ),
                ));
            }
            let nsid = match &ns.nsid {
                Some(v) => *v.get_ref() as u32,
                None => {
                    let free = (1..=max_namespaces).find(|n| !taken.contains(n));
                    let Some(n) = free else {
                        return Err(self.table_err(
                            entry.span(),
                            format!(
                                "no free NSID for bdev {bdev:?}: all {max_namespaces} are taken; \
                                 raise max_namespaces of the subsystem at line {}",
                                self.line_of(subsystem_span.start)
                            ),
                        ));
                    };
                    taken.insert(n);
                    n
                }
            };
            let nguid = match &ns.nguid {
                None => None,
                Some(v) => {
                    let id =
                        parse_nguid(v.get_ref()).map_err(|m| self.err(v.span(), "nguid", m))?;
                    self.unique_id(nguids, id, v, "nguid")?;
                    Some(id)
                }
            };
            let uuid = match &ns.uuid {
                None => None,
                Some(v) => {
                    let id = parse_uuid(v.get_ref()).map_err(|m| self.err(v.span(), "uuid", m))?;
                    self.unique_id(uuids, id, v, "uuid")?;
                    Some(id)
                }
            };
            out.push(NamespaceSpec {
                bdev: bdev.clone(),
                nsid,
                nguid,
                uuid,
                line,
            });
        }
        Ok(out)
    }

    fn unique_id(
        &self,
        seen: &mut HashMap<[u8; 16], usize>,
        id: [u8; 16],
        v: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        let line = self.line_of(v.span().start);
        if let Some(first) = seen.insert(id, line) {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{} is already used at line {first}; every namespace needs its own {key}",
                    v.get_ref()
                ),
            ));
        }
        Ok(())
    }
}

/// Integer types the transport options use, with their maximum.
trait Bounded {
    const MAX: Self;
}

impl Bounded for u16 {
    const MAX: u16 = u16::MAX;
}

impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

/// The current value of a transport option, by the key name validate() reports.
fn transport_value(o: &TargetOptions, key: &str) -> String {
    match key {
        "max_queue_depth" => o.max_queue_depth.to_string(),
        "max_admin_queue_depth" => o.max_admin_queue_depth.to_string(),
        "max_queues_per_controller" => o.max_queues_per_controller.to_string(),
        "in_capsule_data_size" => o.in_capsule_data_bytes.to_string(),
        "max_io_size" => o.max_io_bytes.to_string(),
        "acceptor_poll_period_us" => o.acceptor_poll_period_us.to_string(),
        _ => "value".to_string(),
    }
}

/// IP transports need an IP address (or a wildcard); loopback takes any label.
pub fn check_traddr(trtype: &str, traddr: &str) -> Result<(), String> {
    if traddr.is_empty() {
        return Err("is empty; give an address, e.g. \"127.0.0.1\"".to_string());
    }
    if traddr.len() >= TRADDR_MAX_LEN || traddr.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{traddr:?} is invalid: at most {} printable characters",
            TRADDR_MAX_LEN - 1
        ));
    }
    if matches!(trtype, "rdma" | "tcp") && traddr != "*" && traddr.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{traddr:?} is not an IP address; use e.g. \"192.168.1.10\", \"fe80::1\" or \
             \"0.0.0.0\" for every address"
        ));
    }
    Ok(())
}

/// A TCP/RDMA-CM port number, written as a string as in SPDK ("4420").
pub fn check_trsvcid(trsvcid: &str) -> Result<(), String> {
    match trsvcid.parse::<u16>() {
        Ok(port) if port > 0 && !trsvcid.starts_with('+') => Ok(()),
        _ => Err(format!(
            "{trsvcid:?} is not a port number; use 1 to 65535, e.g. \"4420\""
        )),
    }
}

/// 32 hex digits (dashes allowed between them), not all zero.
pub fn parse_nguid(text: &str) -> Result<[u8; 16], String> {
    let digits: String = text.chars().filter(|&c| c != '-').collect();
    let bytes = hex16(&digits).ok_or_else(|| {
        format!("{text:?} is not an NGUID; use 32 hex digits, e.g. \"000102030405060708090a0b0c0d0e0f\"")
    })?;
    if bytes == [0; 16] {
        return Err("is all zeros, which means \"no NGUID\"; omit the key instead".to_string());
    }
    Ok(bytes)
}

/// 8-4-4-4-12 hex digits, not all zero.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n);
    let bytes = shape_ok
        .then(|| hex16(&groups.concat()))
        .flatten()
        .ok_or_else(|| {
            format!("{text:?} is not a UUID; use 8-4-4-4-12 hex digits, e.g. \"00010203-0405-0607-0809-0a0b0c0d0e0f\"")
        })?;
    if bytes == [0; 16] {
        return Err("is the nil UUID, which means \"no UUID\"; omit the key instead".to_string());
    }
    Ok(bytes)
}

fn hex16(digits: &str) -> Option<[u8; 16]> {
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    line_of_bytes(text.as_bytes(), offset)
}

fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// 1-based column (in characters) of a byte offset.
fn column_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let line_start = text.as_bytes()[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    String::from_utf8_lossy(&text.as_bytes()[line_start..end])
        .chars()
        .count()
        + 1
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// "bdev" from "[[bdev]]" or "[bdev]" (the first line of a table's span).
fn table_name(span_text: &str) -> String {
    first_line(span_text)
        .trim_matches(|c| c == '[' || c == ']')
        .trim()
        .to_string()
}

/// serde's wording for a value of the wrong type or range, as opposed to a syntax error.
fn is_data_error(msg: &str) -> bool {
    [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "duplicate field",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// The key a value at `offset` belongs to: the text before `=` on its line or, for an element
/// of a multi-line array, on the nearest line above (stopping at a table header).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let end = offset.min(text.len());
    let before = String::from_utf8_lossy(&text.as_bytes()[..end]);
    for (i, line) in before.rsplit('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') && !trimmed.contains('=') {
            return None;
        }
        if let Some(eq) = unquoted_eq(trimmed) {
            let key = trimmed[..eq].trim().trim_matches('"').trim_matches('\'');
            let bare = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            return bare.then(|| key.to_string());
        }
    }
    None
}

/// Position of the first `=` outside a quoted string.
fn unquoted_eq(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '=') => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/nvmf.toml";

    const FULL: &str = r#"
[global]
reactor_mask = "[0]"

[transport]
max_queue_depth = 64
max_admin_queue_depth = 64
max_queues_per_controller = 8
in_capsule_data_size = 8192
max_io_size = 262144
io_unit_size = 16384
acceptor_poll_period_us = 1000
num_shared_buffers = 256

[[bdev]]
name = "Malloc0"
kind = "malloc"
num_blocks = 2048
block_size = 4096
numa_node = 0

[[bdev]]
name = "Null0"
kind = "null"
num_blocks = 1000
block_size = 512

[[subsystem]]
nqn = "nqn.2016-06.io.spdk:cnode1"
serial = "SN1"
model = "Model 1"
allow_any_host = false
hosts = [
  "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
  "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
]
max_namespaces = 4
  [[subsystem.listener]]
  trtype = "loopback"
  traddr = "127.0.0.1"
  trsvcid = "4421"
  [[subsystem.listener]]
  trtype = "loopback"
  traddr = "127.0.0.2"
  [[subsystem.namespace]]
  bdev = "Null0"
  [[subsystem.namespace]]
  bdev = "Malloc0"
  nsid = 1
  nguid = "000102030405060708090a0b0c0d0e0f"
  uuid = "00010203-0405-0607-0809-0a0b0c0d0e0f"

[[subsystem]]
nqn = "nqn.2016-06.io.spdk:cnode2"
allow_any_host = true
  [[subsystem.namespace]]
  bdev = "Malloc0"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, PATH)
    }

    /// An nvme bdev `Nvme0` and a subsystem exporting `ns_bdev`, plus `extra` bdev keys.
    fn nvme_config(extra: &str, ns_bdev: &str) -> String {
        format!(
            "[[bdev]]\nname = \"Nvme0\"\nkind = \"nvme\"\n{extra}\n\
             [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\nallow_any_host = true\n\
             [[subsystem.namespace]]\nbdev = \"{ns_bdev}\"\n"
        )
    }

    #[test]
    fn nvme_bdevs_name_their_namespaces() {
        let c = parse(&nvme_config("traddr = \"04:00.0\"", "Nvme0n2")).unwrap();
        assert_eq!(
            c.bdevs[0].device,
            BdevDevice::Nvme {
                traddr: "0000:04:00.0".into(),
                io_timeout_ms: 30_000,
            },
            "the domain is added; Linux's I/O timeout"
        );
        let c = parse(&nvme_config(
            "traddr = \"04:00.0\"\nio_timeout_ms = 0",
            "Nvme0n1",
        ))
        .unwrap();
        assert!(matches!(
            c.bdevs[0].device,
            BdevDevice::Nvme {
                io_timeout_ms: 0,
                ..
            }
        ));
        let spec = &c.bdevs[0];
        assert_eq!(spec.provides("Nvme0n2"), Some(2));
        assert_eq!(spec.size_bytes(), None);
        for not_a_namespace in [
            "Nvme0", "Nvme0n", "Nvme0n0", "Nvme0n01", "Nvme0nx", "Nvme00n1",
        ] {
            assert_eq!(spec.provides(not_a_namespace), None, "{not_a_namespace}");
        }
        assert!(c.to_string().contains("controller 0000:04:00.0"), "{c}");

        let e = error(
            &nvme_config("traddr = \"04:00.0\"", "Nvme0"),
            9,
            Some("bdev"),
        );
        assert!(
            e.contains("no bdev is named \"Nvme0\" (defined: \"Nvme0n1\"...)"),
            "{e}"
        );
    }

    #[test]
    fn nvme_bdev_errors() {
        let e = error(&nvme_config("", "Nvme0n1"), 2, Some("traddr"));
        assert!(
            e.contains("an nvme bdev needs traddr") && e.contains("setup status"),
            "{e}"
        );
        let e = error(
            &nvme_config("traddr = \"4:0.0\"", "Nvme0n1"),
            4,
            Some("traddr"),
        );
        assert!(e.contains("4:0.0"), "{e}");
        let e = error(
            &nvme_config("traddr = \"04:00.0\"\nblock_size = 512", "Nvme0n1"),
            5,
            Some("block_size"),
        );
        assert!(e.contains("does not apply to nvme bdevs"), "{e}");
        let e = error(&with_bdev("traddr = \"04:00.0\"\n"), 6, Some("traddr"));
        assert!(e.contains("applies to nvme bdevs only"), "{e}");
        let e = error(
            &with_bdev("io_timeout_ms = 100\n"),
            6,
            Some("io_timeout_ms"),
        );
        assert!(e.contains("applies to nvme bdevs only"), "{e}");
        let e = error(
            &nvme_config("traddr = \"04:00.0\"\nio_timeout_ms = 5", "Nvme0n1"),
            5,
            Some("io_timeout_ms"),
        );
        assert!(e.contains("use 100 to 3600000 ms, or 0"), "{e}");

        // A malloc bdev named like one of the controller's namespaces, and a controller twice.
        let clash = format!(
            "{}[[bdev]]\nname = \"Nvme0n1\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n",
            nvme_config("traddr = \"04:00.0\"", "Nvme0n1")
        );
        let e = error(&clash, 11, Some("name"));
        assert!(e.contains("clashes with bdev \"Nvme0\""), "{e}");
        let twice = format!(
            "{}[[bdev]]\nname = \"Nvme1\"\nkind = \"nvme\"\ntraddr = \"0000:04:00.0\"\n",
            nvme_config("traddr = \"04:00.0\"", "Nvme0n1")
        );
        let e = error(&twice, 11, Some("traddr"));
        assert!(e.contains("already bdev \"Nvme0\""), "{e}");
    }

    /// The error for `text`, checked to name PATH, `line` and `key`.
    fn error(text: &str, line: usize, key: Option<&str>) -> String {
        let e = parse(text).expect_err("config should be rejected");
        let shown = e.to_string();
        assert_eq!(e.line(), Some(line), "{shown}");
        assert_eq!(e.key(), key, "{shown}");
        let expected_start = match key {
            Some(k) => format!("config {PATH} line {line}: key \"{k}\": "),
            None => format!("config {PATH} line {line}: "),
        };
        assert!(shown.starts_with(&expected_start), "{shown}");
        shown
    }

    /// A config with one malloc bdev and one subsystem, plus `extra` appended to the given section.
    fn with_bdev(bdev_extra: &str) -> String {
        format!(
            "[[bdev]]\nname = \"Malloc0\"\nkind = \"malloc\"\nnum_blocks = 16\nblock_size = 512\n{bdev_extra}"
        )
    }

    fn with_subsystem(sub_extra: &str) -> String {
        format!(
            "{}\n[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:cnode1\"\n{sub_extra}",
            with_bdev("")
        )
    }

    #[test]
    fn full_example_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.path, PATH);
        assert_eq!(c.reactor_mask.cores(), [0]);
        assert_eq!(c.mask_origin, MaskOrigin::File { line: 3 });
        let o = c.transport.options;
        assert_eq!(
            (
                o.max_queue_depth,
                o.max_admin_queue_depth,
                o.max_queues_per_controller,
                o.in_capsule_data_bytes,
                o.max_io_bytes,
                o.acceptor_poll_period_us
            ),
            (64, 64, 8, 8192, 262_144, 1000)
        );
        assert_eq!(c.transport.num_shared_buffers, 256);
        assert_eq!(
            (c.transport.srq, c.transport.srq_depth),
            (false, DEFAULT_SRQ_DEPTH)
        );
        assert_eq!(
            c.bdevs[0],
            BdevSpec {
                name: "Malloc0".into(),
                kind: BdevKind::Malloc,
                device: BdevDevice::Ram {
                    num_blocks: 2048,
                    block_size: 4096,
                    numa_node: Some(0),
                },
                line: 16
            }
        );
        assert_eq!(c.bdevs[1].kind, BdevKind::Null);
        assert!(matches!(
            c.bdevs[1].device,
            BdevDevice::Ram {
                numa_node: None,
                ..
            }
        ));

        let s = &c.subsystems[0];
        assert_eq!((s.serial.as_str(), s.model.as_str()), ("SN1", "Model 1"));
        assert!(!s.allow_any_host);
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.max_namespaces, 4);
        assert_eq!(
            s.listeners,
            [
                ListenAddress::new("loopback", "127.0.0.1", "4421"),
                ListenAddress::new("loopback", "127.0.0.2", DEFAULT_TRSVCID)
            ]
        );
        // Null0 has no nsid and Malloc0 takes 1 explicitly further down: Null0 gets 2.
        assert_eq!(
            s.namespaces
                .iter()
                .map(|n| (n.bdev.as_str(), n.nsid))
                .collect::<Vec<_>>(),
            [("Null0", 2), ("Malloc0", 1)]
        );
        let m = &s.namespaces[1];
        assert_eq!(m.nguid.unwrap()[15], 0x0f);
        assert_eq!(m.uuid.unwrap()[0..2], [0x00, 0x01]);
        assert_eq!(s.namespaces[0].nguid, None);

        // Defaults for the second subsystem.
        let s2 = &c.subsystems[1];
        assert_eq!(s2.serial, "SPDK00000000000002");
        assert_eq!(s2.model, DEFAULT_MODEL);
        assert_eq!(s2.max_namespaces, DEFAULT_MAX_NAMESPACES);
        assert_eq!(s2.namespaces[0].nsid, 1);
        assert!(s2.allow_any_host);
    }

    #[test]
    fn default_config_parses_to_the_documented_values() {
        let c = Config::builtin_default().unwrap();
        assert_eq!(c.path, DEFAULT_CONFIG_NAME);
        assert_eq!(c.reactor_mask.to_string(), "0x1");
        // The explicit [transport] values are exactly the library defaults.
        let d = TargetOptions::default();
        let o = c.transport.options;
        assert_eq!(
            (
                o.max_queue_depth,
                o.max_admin_queue_depth,
                o.max_queues_per_controller,
                o.in_capsule_data_bytes,
                o.max_io_bytes,
                o.acceptor_poll_period_us
            ),
            (
                d.max_queue_depth,
                d.max_admin_queue_depth,
                d.max_queues_per_controller,
                d.in_capsule_data_bytes,
                d.max_io_bytes,
                d.acceptor_poll_period_us
            )
        );
        assert_eq!(c.transport.num_shared_buffers, DEFAULT_NUM_SHARED_BUFFERS);
        let d = TransportConfig::default();
        assert_eq!(
            (c.transport.srq, c.transport.srq_depth),
            (d.srq, d.srq_depth)
        );
        assert_eq!((d.srq, d.srq_depth), (false, DEFAULT_SRQ_DEPTH));
        let b = &c.bdevs[0];
        assert_eq!(
            (b.name.as_str(), b.kind, b.size_bytes()),
            ("Malloc0", BdevKind::Malloc, Some(64 << 20))
        );
        let s = &c.subsystems[0];
        assert_eq!(s.nqn, "nqn.2016-06.io.spdk:cnode1");
        assert_eq!(s.serial, "SPDK00000000000001");
        assert_eq!(s.model, "Rust NVMe-oF target");
        assert!(s.allow_any_host);
        assert_eq!(
            s.listeners,
            [ListenAddress::new("loopback", "127.0.0.1", "4420")]
        );
        assert_eq!(
            (s.namespaces[0].bdev.as_str(), s.namespaces[0].nsid),
            ("Malloc0", 1)
        );
        assert!(c.warnings().iter().any(|w| w.contains("ANY host")));
    }

    #[test]
    fn empty_file_is_valid_with_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.reactor_mask.to_string(), DEFAULT_REACTOR_MASK);
        assert_eq!(c.mask_origin, MaskOrigin::Default);
        assert!(c.bdevs.is_empty() && c.subsystems.is_empty());
        assert!(c.warnings()[0].contains("no [[subsystem]]"));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = error("[global]\nreactor_mask = \"0x1\" junk\n", 2, None);
        assert!(e.contains("TOML syntax error at column 22"), "{e}");
        let e = error("[global]\n[global]\n", 2, None);
        assert!(e.contains("duplicate key"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = error(
            &with_bdev("").replace("512", "\"512\""),
            5,
            Some("block_size"),
        );
        assert!(e.contains("expected an integer"), "{e}");
        let e = error(
            &with_subsystem("hosts = [\n  \"nqn.2016-06.io.spdk:h1\",\n  7,\n]\n"),
            11,
            Some("hosts"),
        );
        assert!(e.contains("invalid type: integer"), "{e}");
        let e = error(
            &with_subsystem("allow_any_host = \"yes\"\n"),
            9,
            Some("allow_any_host"),
        );
        assert!(e.contains("expected a boolean"), "{e}");
        let e = error("[bdev]\nname = \"x\"\n", 1, Some("bdev"));
        assert!(e.contains("write [[bdev]]"), "{e}");
    }

    #[test]
    fn unknown_and_missing_keys() {
        let e = error(&with_bdev("blocksize = 512\n"), 6, Some("blocksize"));
        assert!(
            e.contains("unknown key; valid keys here:") && e.contains("`block_size`"),
            "{e}"
        );
        let e = error("[global]\nmask = \"0x1\"\n", 2, Some("mask"));
        assert!(e.contains("`reactor_mask`"), "{e}");
        let e = error(
            "\n[[bdev]]\nname = \"M\"\nkind = \"null\"\nblock_size = 512\n",
            3,
            Some("num_blocks"),
        );
        assert!(e.contains("a null bdev needs num_blocks"), "{e}");
        error(
            "[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n[[subsystem.namespace]]\nnsid = 1\n",
            3,
            Some("bdev"),
        );
    }

    #[test]
    fn mask_errors() {
        let e = error(
            "[global]\nreactor_mask = \"0xZ\"\n",
            2,
            Some("reactor_mask"),
        );
        assert!(e.contains("not a hex digit"), "{e}");
        error("[global]\nreactor_mask = \"\"\n", 2, Some("reactor_mask"));
        error(
            "[global]\nreactor_mask = \"3-1\"\n",
            2,
            Some("reactor_mask"),
        );
    }

    #[test]
    fn idle_sleep_us_default_value_and_range() {
        assert_eq!(parse("").unwrap().idle_sleep_us, 0);
        assert_eq!(
            parse("[global]\nidle_sleep_us = 50\n")
                .unwrap()
                .idle_sleep_us,
            50
        );
        for bad in ["-1", "10001"] {
            let e = error(
                &format!("[global]\nidle_sleep_us = {bad}\n"),
                2,
                Some("idle_sleep_us"),
            );
            assert!(e.contains("use 0 (reactors spin) to 10000"), "{e}");
        }
    }

    #[test]
    fn interrupt_mode_default_switch_and_range() {
        assert_eq!(
            parse("").unwrap().interrupt_after_idle_us,
            Some(DEFAULT_INTERRUPT_AFTER_IDLE_US)
        );
        assert_eq!(
            parse("[global]\ninterrupt_mode = false\n")
                .unwrap()
                .interrupt_after_idle_us,
            None
        );
        assert_eq!(
            parse("[global]\ninterrupt_mode = true\n")
                .unwrap()
                .interrupt_after_idle_us,
            Some(DEFAULT_INTERRUPT_AFTER_IDLE_US)
        );
        assert_eq!(
            parse("[global]\ninterrupt_mode = true\ninterrupt_after_idle_us = 0\n")
                .unwrap()
                .interrupt_after_idle_us,
            Some(0)
        );
        let e = error(
            "[global]\ninterrupt_mode = false\ninterrupt_after_idle_us = 50\n",
            3,
            Some("interrupt_after_idle_us"),
        );
        assert!(e.contains("set interrupt_mode = true"), "{e}");
        for bad in ["-1", "1000001"] {
            let e = error(
                &format!("[global]\ninterrupt_mode = true\ninterrupt_after_idle_us = {bad}\n"),
                3,
                Some("interrupt_after_idle_us"),
            );
            assert!(e.contains("use 0 to 1000000"), "{e}");
        }
    }

    #[test]
    fn mask_override_and_usability() {
        let mut c = parse("[global]\nreactor_mask = \"0x1\"\n").unwrap();
        c.override_mask(ReactorMask::parse("[0,1]").unwrap());
        assert_eq!(c.reactor_mask.cores(), [0, 1]);
        assert_eq!(c.mask_origin, MaskOrigin::CommandLine);

        // CPU 1023 is not on any machine this runs on; the error blames its origin.
        let mut c = parse("\n[global]\nreactor_mask = \"[1023]\"\n").unwrap();
        let e = c.check_mask_usable().unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("CPU 1023"), "{e}");
        c.override_mask(ReactorMask::parse("[1023]").unwrap());
        let e = c.check_mask_usable().unwrap_err().to_string();
        assert!(e.starts_with("-m/--reactor-mask: CPU 1023"), "{e}");
    }

    #[test]
    fn srq_keys_parse() {
        let c = parse(&format!(
            "[transport]\nsrq = true\nsrq_depth = 1024\n{}",
            with_bdev("")
        ))
        .unwrap();
        assert_eq!((c.transport.srq, c.transport.srq_depth), (true, 1024));
        assert!(c.to_string().contains("srq on (srq_depth 1024)"), "{c}");
        let c = parse("[transport]\nsrq = true\n").unwrap();
        assert_eq!(c.transport.srq_depth, DEFAULT_SRQ_DEPTH);
    }

    #[test]
    fn transport_errors_name_the_key() {
        let e = error(
            "[transport]\nmax_queue_depth = 5000\n",
            2,
            Some("max_queue_depth"),
        );
        assert!(e.contains("5000 is invalid: it must be 2..=4096"), "{e}");
        // Beyond u16: clamped, still rejected with the real range.
        let e = error(
            "[transport]\nmax_queue_depth = 1000000000000\n",
            2,
            Some("max_queue_depth"),
        );
        assert!(e.contains("must be 2..=4096"), "{e}");
        let e = error(
            "[transport]\n\nmax_io_size = 5000\n",
            3,
            Some("max_io_size"),
        );
        assert!(e.contains("power of two"), "{e}");
        let e = error(
            "[transport]\nin_capsule_data_size = -16\n",
            2,
            Some("in_capsule_data_size"),
        );
        assert!(e.contains("-16 is negative"), "{e}");
        error(
            "[transport]\nacceptor_poll_period_us = 0\n",
            2,
            Some("acceptor_poll_period_us"),
        );
        error(
            "[transport]\nnum_shared_buffers = 0\n",
            2,
            Some("num_shared_buffers"),
        );
        for bad in [
            "io_unit_size = 1000",
            "io_unit_size = 2048",
            "io_unit_size = 2097152",
        ] {
            let e = error(&format!("[transport]\n{bad}\n"), 2, Some("io_unit_size"));
            assert!(e.contains("power of two from 4096 to max_io_size"), "{e}");
        }
        // One max_io_size transfer must fit the pool: 1 MiB is 128 units of 8 KiB.
        let e = error(
            "[transport]\nnum_shared_buffers = 100\n",
            2,
            Some("num_shared_buffers"),
        );
        assert!(e.contains("set num_shared_buffers to at least 128"), "{e}");
        let e = error(
            "[transport]\nsrq = true\nsrq_depth = 8\n",
            3,
            Some("srq_depth"),
        );
        assert!(e.contains("8 is out of range; use 16 to 65536"), "{e}");
        error("[transport]\nsrq_depth = 65537\n", 2, Some("srq_depth"));
        error("[transport]\nsrq = 1\n", 2, Some("srq"));
        error(
            "[transport]\nmax_queues_per_controller = 99999999999\n",
            2,
            Some("max_queues_per_controller"),
        );
        error(
            "[transport]\nmax_admin_queue_depth = 1\n",
            2,
            Some("max_admin_queue_depth"),
        );
        // in_capsule_data_size must not exceed max_io_size: the key that is set is blamed.
        let e = error(
            "[transport]\nmax_io_size = 4096\nin_capsule_data_size = 8192\n",
            3,
            Some("in_capsule_data_size"),
        );
        assert!(e.contains("must not exceed max_io_size"), "{e}");
        error(
            "[transport]\nmax_queue_depth = 1.5\n",
            2,
            Some("max_queue_depth"),
        );
    }

    #[test]
    fn bdev_errors() {
        let e = error(&with_bdev("").replace("512", "513"), 5, Some("block_size"));
        assert!(
            e.ends_with("key \"block_size\": 513 is not 512 or 4096"),
            "{e}"
        );
        error(&with_bdev("").replace("= 16", "= 0"), 4, Some("num_blocks"));
        let e = error(
            &with_bdev("").replace("= 16", "= 9223372036854775807"),
            4,
            Some("num_blocks"),
        );
        assert!(e.contains("overflow"), "{e}");
        let e = error(
            &with_bdev("").replace("\"malloc\"", "\"ram\""),
            3,
            Some("kind"),
        );
        assert!(
            e.contains("not a bdev kind") && e.contains("\"malloc\", \"null\""),
            "{e}"
        );
        let e = error(
            &with_bdev("").replace("\"malloc\"", "\"nvme\""),
            4,
            Some("num_blocks"),
        );
        assert!(e.contains("does not apply to nvme bdevs"), "{e}");
        error(
            &with_bdev("").replace("\"Malloc0\"", "\"Malloc 0\""),
            2,
            Some("name"),
        );
        error(
            &with_bdev("").replace("\"Malloc0\"", "\"\""),
            2,
            Some("name"),
        );
        let twice = format!("{}\n{}", with_bdev(""), with_bdev(""));
        let e = error(&twice, 8, Some("name"));
        assert!(e.contains("already defined at line 2"), "{e}");
        error(&with_bdev("numa_node = 5000\n"), 6, Some("numa_node"));
        let e = error(
            &with_bdev("numa_node = 0\n").replace("\"malloc\"", "\"null\""),
            6,
            Some("numa_node"),
        );
        assert!(e.contains("malloc bdevs only"), "{e}");
    }

    #[test]
    fn subsystem_errors() {
        // Line 8 is the nqn of with_subsystem().
        let e = error(
            &with_subsystem("").replace("nqn.2016-06.io.spdk:cnode1", "iqn.x"),
            8,
            Some("nqn"),
        );
        assert!(e.contains("must start with \"nqn.\""), "{e}");
        let discovery = with_subsystem("").replace(
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress.discovery",
        );
        error(&discovery, 8, Some("nqn"));
        let twice = format!(
            "{}\n[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:cnode1\"\n",
            with_subsystem("")
        );
        let e = error(&twice, 11, Some("nqn"));
        assert!(e.contains("already defined at line 8"), "{e}");
        let e = error(
            &with_subsystem("serial = \"123456789012345678901\"\n"),
            9,
            Some("serial"),
        );
        assert!(e.contains("1 to 20 printable ASCII"), "{e}");
        error(&with_subsystem("model = \"\"\n"), 9, Some("model"));
        error(&with_subsystem("model = \"caf\u{e9}\"\n"), 9, Some("model"));
        error(&with_subsystem("hosts = [\"bad\"]\n"), 9, Some("hosts"));
        let e = error(
            &with_subsystem("hosts = [\"nqn.2016-06.io.spdk:h\", \"nqn.2016-06.io.spdk:h\"]\n"),
            9,
            Some("hosts"),
        );
        assert!(e.contains("listed twice"), "{e}");
        error(
            &with_subsystem("max_namespaces = 0\n"),
            9,
            Some("max_namespaces"),
        );
        error(
            &with_subsystem("max_namespaces = 1025\n"),
            9,
            Some("max_namespaces"),
        );
    }

    #[test]
    fn listener_errors() {
        let listener = |body: &str| with_subsystem(&format!("[[subsystem.listener]]\n{body}"));
        let e = error(
            &listener("trtype = \"tcp\"\ntraddr = \"10.0.0.1\"\n"),
            10,
            Some("trtype"),
        );
        assert!(
            e.contains("transport \"tcp\" is not built into this nvmf-tgt yet")
                && e.contains("trtype = \"loopback\""),
            "{e}"
        );
        parse(&listener("trtype = \"rdma\"\ntraddr = \"10.0.0.1\"\n")).expect("rdma is built");
        let e = error(
            &listener("trtype = \"fc\"\ntraddr = \"x\"\n"),
            10,
            Some("trtype"),
        );
        assert!(e.contains("\"rdma\", \"tcp\", \"loopback\""), "{e}");
        error(
            &listener("trtype = \"loopback\"\ntraddr = \"\"\n"),
            11,
            Some("traddr"),
        );
        let e = error(
            &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"0\"\n"),
            12,
            Some("trsvcid"),
        );
        assert!(e.contains("not a port number"), "{e}");
        error(
            &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"http\"\n"),
            12,
            Some("trsvcid"),
        );
        error(
            &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = 4420\n"),
            12,
            Some("trsvcid"),
        );
        let twice = listener("trtype = \"loopback\"\ntraddr = \"a\"\n[[subsystem.listener]]\ntrtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"4420\"\n");
        let e = error(&twice, 12, None);
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn traddr_rules() {
        assert!(check_traddr("loopback", "anything").is_ok());
        assert!(check_traddr("rdma", "192.168.1.10").is_ok());
        assert!(check_traddr("rdma", "fe80::1").is_ok());
        assert!(check_traddr("tcp", "0.0.0.0").is_ok());
        assert!(check_traddr("rdma", "host.example")
            .unwrap_err()
            .contains("not an IP"));
        assert!(check_traddr("loopback", &"a".repeat(300)).is_err());
        assert!(check_trsvcid("4420").is_ok());
        assert!(check_trsvcid("65536").is_err());
        assert!(check_trsvcid("+1").is_err());
    }

    #[test]
    fn namespace_errors() {
        let ns = |body: &str| {
            with_subsystem(&format!(
                "max_namespaces = 2\n[[subsystem.namespace]]\n{body}"
            ))
        };
        let e = error(&ns("bdev = \"Malloc9\"\n"), 11, Some("bdev"));
        assert!(
            e.contains("no bdev is named \"Malloc9\" (defined: \"Malloc0\")"),
            "{e}"
        );
        let e = error(&ns("bdev = \"Malloc0\"\nnsid = 3\n"), 12, Some("nsid"));
        assert!(e.contains("use 1 to 2"), "{e}");
        error(&ns("bdev = \"Malloc0\"\nnsid = 0\n"), 12, Some("nsid"));
        let e = error(
            &ns("bdev = \"Malloc0\"\n[[subsystem.namespace]]\nbdev = \"Malloc0\"\n"),
            13,
            Some("bdev"),
        );
        assert!(e.contains("already namespace 1"), "{e}");
        let two = format!("{}\n{}", ns("bdev = \"Malloc0\"\nnsid = 2\n"), "[[subsystem.namespace]]\nbdev = \"Null0\"\nnsid = 2\n[[bdev]]\nname = \"Null0\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n");
        let e = error(&two, 16, Some("nsid"));
        assert!(e.contains("used twice"), "{e}");
        error(
            &ns("bdev = \"Malloc0\"\nnguid = \"xyz\"\n"),
            12,
            Some("nguid"),
        );
        error(
            &ns("bdev = \"Malloc0\"\nnguid = \"00000000000000000000000000000000\"\n"),
            12,
            Some("nguid"),
        );
        error(
            &ns("bdev = \"Malloc0\"\nuuid = \"0001020304050607-0809-0a0b0c0d0e0f\"\n"),
            12,
            Some("uuid"),
        );
        error(
            &ns("bdev = \"Malloc0\"\nuuid = \"00000000-0000-0000-0000-000000000000\"\n"),
            12,
            Some("uuid"),
        );
    }

    #[test]
    fn no_free_nsid_and_duplicate_ids() {
        let text = format!(
            "{}\n[[bdev]]\nname = \"B\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n\
             [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\nmax_namespaces = 1\n\
             [[subsystem.namespace]]\nbdev = \"Malloc0\"\n\
             [[subsystem.namespace]]\nbdev = \"B\"\n",
            with_bdev("")
        );
        let e = error(&text, 17, None);
        assert!(e.contains("no free NSID") && e.contains("line 12"), "{e}");

        let dup = |key: &str, value: &str| {
            format!(
                "{}\n[[bdev]]\nname = \"B\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n\
                 [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n\
                 [[subsystem.namespace]]\nbdev = \"Malloc0\"\n{key} = \"{value}\"\n\
                 [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:d\"\n\
                 [[subsystem.namespace]]\nbdev = \"B\"\n{key} = \"{value}\"\n",
                with_bdev("")
            )
        };
        let e = error(
            &dup("nguid", "0f0e0d0c0b0a09080706050403020100"),
            21,
            Some("nguid"),
        );
        assert!(e.contains("already used at line 16"), "{e}");
        error(
            &dup("uuid", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
            21,
            Some("uuid"),
        );
    }

    #[test]
    fn dotted_keys_work_like_sections() {
        let c = parse("transport.max_queue_depth = 64\nglobal.reactor_mask = \"0x1\"\n").unwrap();
        assert_eq!(c.transport.options.max_queue_depth, 64);
        error(
            "\ntransport.max_queue_depth = 5000\n",
            2,
            Some("max_queue_depth"),
        );
    }

    #[test]
    fn non_utf8_file_names_the_line() {
        let path = std::env::temp_dir().join(format!("nvmf-tgt-utf8-{}.toml", std::process::id()));
        std::fs::write(&path, b"[global]\n# caf\xe9\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(
            e.to_string().contains("byte 6 of the line is not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = Config::load(Path::new("/nonexistent/nvmf.toml")).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("config /nonexistent/nvmf.toml: cannot read it:"),
            "{shown}"
        );
        assert!(shown.contains("-c"), "{shown}");
    }

    #[test]
    fn summary_lists_everything() {
        let c = parse(FULL).unwrap();
        let s = c.to_string();
        for want in [
            "reactor mask 0x1 (1 reactor(s) on CPU(s) 0)",
            "io_unit_size 16384",
            "num_shared_buffers 256 (4 MiB), srq off",
            "bdev Malloc0: malloc, 2048 blocks of 4096 bytes (8 MiB), NUMA node 0",
            "bdev Null0: null, 1000 blocks of 512 bytes (0.49 MiB)",
            "subsystem nqn.2016-06.io.spdk:cnode1: serial \"SN1\", model \"Model 1\", max_namespaces 4, 2 allowed host(s)",
            "  listener loopback 127.0.0.2:4420",
            "  namespace 2: bdev Null0, 0.49 MiB",
            "subsystem nqn.2016-06.io.spdk:cnode2",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        let w = c.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("cnode2") && w.contains("ANY host")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("cnode2") && w.contains("no [[subsystem.listener]]")),
            "{w:?}"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 999), 3);
        assert_eq!(column_of("ab\ncd", 4), 2);
        assert_eq!(key_before("x = 1\n  key = \"v", 15), Some("key".into()));
        assert_eq!(key_before("[t]\n  \"v\",", 6), None);
        assert_eq!(key_before("a = [\n 1,\n 2", 11), Some("a".into()));
        assert_eq!(unquoted_eq("\"a=b\" = 1"), Some(6));
        assert_eq!(format_mib(64 << 20), "64 MiB");
        assert_eq!(format_mib(1 << 19), "0.50 MiB");
        assert_eq!(
            parse_uuid("f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap()[0],
            0xf8
        );
        assert_eq!(
            parse_nguid("00010203-04050607-08090a0b-0c0d0e0f").unwrap()[3],
            3
        );
    }
}
