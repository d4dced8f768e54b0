//! The built-in default configuration and the limits and defaults of its keys.

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
c2h_success = true                # TCP: a read may end without a response capsule (SQ flow control off)

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

  # NVMe/TCP on this machine only: `nvme connect -t tcp -a 127.0.0.1 -s 4420 -n <nqn>`.
  # To serve other machines, listen on one of this machine's addresses (or "0.0.0.0")
  # and restrict hosts above first.
  [[subsystem.listener]]
  trtype = "tcp"                  # "tcp", "rdma", or "loopback" (in-process, for tests)
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
pub use rpc::transports::{
    DEFAULT_IO_UNIT_BYTES, DEFAULT_NUM_SHARED_BUFFERS, DEFAULT_SRQ_DEPTH, MAX_NUM_SHARED_BUFFERS,
    SRQ_DEPTH_RANGE,
};
/// An idle reactor sleeps at most this long (10 ms) per idle iteration.
pub const MAX_IDLE_SLEEP_US: u64 = 10_000;
/// Interrupt mode: how long a reactor stays idle, spinning, before it sleeps.
pub const DEFAULT_INTERRUPT_AFTER_IDLE_US: u64 = 100;
pub const MAX_INTERRUPT_AFTER_IDLE_US: u64 = 1_000_000;
pub const DEFAULT_TRSVCID: &str = "4420";
pub const DEFAULT_MODEL: &str = "Rust NVMe-oF target";
pub const DEFAULT_MAX_NAMESPACES: u32 = 32;
/// NVMe command timeouts (`io_timeout_ms`, 0 aside): from the timer period to an hour.
pub const IO_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// NUMA node ids beyond this are certainly typos.
pub const MAX_NUMA_NODE: u32 = 1023;
/// Identify Controller SN and MN field widths.
pub(super) const SERIAL_MAX_LEN: usize = 20;
pub(super) const MODEL_MAX_LEN: usize = 40;
/// Discovery log entry TRADDR field width.
pub(super) const TRADDR_MAX_LEN: usize = 256;
