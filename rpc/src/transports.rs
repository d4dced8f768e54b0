//! Transports as the config (`[transport]`) and `nvmf_create_transport` describe them, and
//! their creation.

use std::ops::RangeInclusive;
use std::sync::Arc;

use nvmf::loopback::LoopbackTransport;
use nvmf::{TargetOptions, Transport};

pub const DEFAULT_NUM_SHARED_BUFFERS: usize = 16_384;
pub const DEFAULT_IO_UNIT_BYTES: u32 = nvmf::transport::DEFAULT_IO_UNIT_BYTES;
/// Bounds the data buffer pool (at most 1 Mi units).
pub const MAX_NUM_SHARED_BUFFERS: usize = 1 << 20;
pub const DEFAULT_SRQ_DEPTH: u32 = 4096;
/// Shared receive queue depths: each receive holds an in-capsule data buffer,
/// so the upper bound also bounds that memory (64 Ki x in_capsule_data_size).
pub const SRQ_DEPTH_RANGE: RangeInclusive<u32> = 16..=65_536;

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
    /// TCP: a successful read may end on a C2HData with SUCCESS and no response capsule,
    /// where the host disabled SQ flow control (SPDK's `c2h_success`).
    pub c2h_success: bool,
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
            c2h_success: true,
        }
    }
}

impl TransportConfig {
    /// The rules every transport's options follow; the error names the option (SPDK's name).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let o = &self.options;
        o.validate().map_err(|e| {
            let nvmf::ConfigError::Invalid { what, msg } = e;
            let key = match what.strip_prefix("transport option ").unwrap_or(&what) {
                "max_queue_depth" => "max_queue_depth",
                "max_admin_queue_depth" => "max_aq_depth",
                "max_queues_per_controller" => "max_io_qpairs_per_ctrlr",
                "in_capsule_data_size" => "in_capsule_data_size",
                "max_io_size" => "max_io_size",
                _ => "acceptor_poll_rate",
            };
            (key, msg)
        })?;
        let unit = self.io_unit_bytes;
        if unit < 4096 || unit > o.max_io_bytes || !unit.is_power_of_two() {
            return Err((
                "io_unit_size",
                format!(
                    "{unit} is invalid; use a power of two from 4096 to max_io_size ({})",
                    o.max_io_bytes
                ),
            ));
        }
        if !(1..=MAX_NUM_SHARED_BUFFERS).contains(&self.num_shared_buffers) {
            return Err((
                "num_shared_buffers",
                format!(
                    "{} is out of range; use 1 to {MAX_NUM_SHARED_BUFFERS}",
                    self.num_shared_buffers
                ),
            ));
        }
        let units_per_io = o.max_io_bytes.div_ceil(unit) as usize;
        if self.num_shared_buffers < units_per_io {
            return Err((
                "num_shared_buffers",
                format!(
                    "{} units of {unit} bytes cannot hold one transfer of max_io_size {} bytes; \
                     use at least {units_per_io}",
                    self.num_shared_buffers, o.max_io_bytes
                ),
            ));
        }
        if !SRQ_DEPTH_RANGE.contains(&self.srq_depth) {
            return Err((
                "max_srq_depth",
                format!(
                    "{} is out of range; use {} to {}",
                    self.srq_depth,
                    SRQ_DEPTH_RANGE.start(),
                    SRQ_DEPTH_RANGE.end()
                ),
            ));
        }
        Ok(())
    }
}

pub fn build_transport(
    name: &str,
    t: &TransportConfig,
    numa_node: Option<u32>,
) -> Result<Arc<dyn Transport>, String> {
    match name {
        "loopback" => LoopbackTransport::new(
            t.options.in_capsule_data_bytes,
            t.options.max_io_bytes,
            t.io_unit_bytes,
            t.num_shared_buffers,
        )
        .map(|l| l as Arc<dyn Transport>)
        .map_err(|e| e.to_string()),
        "rdma" => transport_rdma::RdmaTransport::new(transport_rdma::RdmaOptions {
            max_queue_depth: t.options.max_queue_depth,
            max_admin_queue_depth: t.options.max_admin_queue_depth,
            in_capsule_data_bytes: t.options.in_capsule_data_bytes,
            max_io_bytes: t.options.max_io_bytes,
            io_unit_bytes: t.io_unit_bytes,
            buffer_count: t.num_shared_buffers,
            srq: t.srq,
            srq_depth: t.srq_depth,
            numa_node,
        })
        .map(|r| r as Arc<dyn Transport>)
        .map_err(|e| e.to_string()),
        "tcp" => transport_tcp::TcpTransport::new(transport_tcp::TcpOptions {
            max_queue_depth: t.options.max_queue_depth,
            max_admin_queue_depth: t.options.max_admin_queue_depth,
            in_capsule_data_bytes: t.options.in_capsule_data_bytes,
            max_io_bytes: t.options.max_io_bytes,
            io_unit_bytes: t.io_unit_bytes,
            buffer_count: t.num_shared_buffers,
            max_h2c_data_bytes: transport_tcp::DEFAULT_MAX_H2C_DATA_BYTES,
            c2h_success: t.c2h_success,
            numa_node,
        })
        .map(|r| r as Arc<dyn Transport>)
        .map_err(|e| e.to_string()),
        other => Err(format!(
            "transport {other:?} is listed as built but nvmf-tgt has no code to create it"
        )),
    }
}
