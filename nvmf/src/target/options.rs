//! The target's limits, as SPDK's `nvmf_create_transport` options give them.

use crate::ConfigError;

/// Transport-independent limits, as in SPDK's `nvmf_create_transport` options.
#[derive(Clone, Copy, Debug)]
pub struct TargetOptions {
    /// Deepest I/O queue a host may create (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// Deepest admin queue.
    pub max_admin_queue_depth: u16,
    /// Queues per controller, admin queue included.
    pub max_queues_per_controller: u16,
    /// In-capsule data per I/O command capsule (IOCCSZ - 64 bytes).
    pub in_capsule_data_bytes: u32,
    /// Largest transfer of one command (MDTS).
    pub max_io_bytes: u32,
    /// How often the acceptor polls for new connections.
    pub acceptor_poll_period_us: u64,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            max_queue_depth: 128,
            max_admin_queue_depth: 32,
            max_queues_per_controller: 64,
            in_capsule_data_bytes: 4096,
            max_io_bytes: 1 << 20,
            acceptor_poll_period_us: 10_000,
        }
    }
}

impl TargetOptions {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| {
            Err(ConfigError::Invalid {
                what: format!("transport option {key}"),
                msg: msg.into(),
            })
        };
        if !(2..=4096).contains(&self.max_queue_depth) {
            return bad("max_queue_depth", "must be 2..=4096");
        }
        if !(MIN_ADMIN_QUEUE_DEPTH..=4096).contains(&self.max_admin_queue_depth) {
            return bad(
                "max_admin_queue_depth",
                "must be 32..=4096 (NVMe-oF admin queues hold at least 32 entries)",
            );
        }
        if !(2..=1024).contains(&self.max_queues_per_controller) {
            return bad(
                "max_queues_per_controller",
                "must be 2..=1024 (admin queue included)",
            );
        }
        if self.in_capsule_data_bytes % 16 != 0 || self.in_capsule_data_bytes > 65_536 {
            return bad(
                "in_capsule_data_size",
                "must be a multiple of 16, at most 65536",
            );
        }
        if !self.max_io_bytes.is_power_of_two() || !(4096..=(1 << 20)).contains(&self.max_io_bytes)
        {
            return bad("max_io_size", "must be a power of two from 4096 to 1048576");
        }
        if self.in_capsule_data_bytes > self.max_io_bytes {
            return bad("in_capsule_data_size", "must not exceed max_io_size");
        }
        if self.acceptor_poll_period_us == 0 || self.acceptor_poll_period_us > 1_000_000 {
            return bad("acceptor_poll_period_us", "must be 1..=1000000");
        }
        Ok(())
    }

    /// MDTS in units of the 4 KiB minimum page size, as a power of two.
    pub fn mdts(&self) -> u8 {
        (self.max_io_bytes / 4096).trailing_zeros() as u8
    }
}

/// The NVMe-oF spec's smallest admin submission queue.
pub const MIN_ADMIN_QUEUE_DEPTH: u16 = 32;
