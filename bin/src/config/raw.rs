//! What the file says, table by table, before it is checked: each value with the span it was
//! written at. Integers stay i64 (TOML's integer type) so range errors can be worded where the
//! value is checked. `read.rs` fills these; `validate.rs` checks them.

use std::ops::Range;

/// A value and the bytes of the file it was written at.
#[derive(Clone, Debug)]
pub(super) struct Spanned<T> {
    value: T,
    span: Range<usize>,
}

impl<T> Spanned<T> {
    pub(super) fn new(span: Range<usize>, value: T) -> Self {
        Spanned { value, span }
    }

    pub(super) fn get_ref(&self) -> &T {
        &self.value
    }

    pub(super) fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

// The keys each table may have; any other is refused. The struct below each list has a field
// per key (a sub-table's field holds its entries).

pub(super) const FILE_KEYS: &[&str] = &["global", "transport", "bdev", "subsystem"];

pub(super) struct RawFile {
    pub(super) global: Option<RawGlobal>,
    pub(super) transport: Option<RawTransport>,
    pub(super) bdev: Vec<Spanned<RawBdev>>,
    pub(super) subsystem: Vec<Spanned<RawSubsystem>>,
}

pub(super) const GLOBAL_KEYS: &[&str] = &[
    "reactor_mask",
    "idle_sleep_us",
    "interrupt_mode",
    "interrupt_after_idle_us",
];

pub(super) struct RawGlobal {
    pub(super) reactor_mask: Option<Spanned<String>>,
    pub(super) idle_sleep_us: Option<Spanned<i64>>,
    pub(super) interrupt_mode: Option<Spanned<bool>>,
    pub(super) interrupt_after_idle_us: Option<Spanned<i64>>,
}

pub(super) const TRANSPORT_KEYS: &[&str] = &[
    "max_queue_depth",
    "max_admin_queue_depth",
    "max_queues_per_controller",
    "in_capsule_data_size",
    "max_io_size",
    "io_unit_size",
    "acceptor_poll_period_us",
    "num_shared_buffers",
    "srq",
    "srq_depth",
    "c2h_success",
];

#[derive(Default)]
pub(super) struct RawTransport {
    pub(super) max_queue_depth: Option<Spanned<i64>>,
    pub(super) max_admin_queue_depth: Option<Spanned<i64>>,
    pub(super) max_queues_per_controller: Option<Spanned<i64>>,
    pub(super) in_capsule_data_size: Option<Spanned<i64>>,
    pub(super) max_io_size: Option<Spanned<i64>>,
    pub(super) io_unit_size: Option<Spanned<i64>>,
    pub(super) acceptor_poll_period_us: Option<Spanned<i64>>,
    pub(super) num_shared_buffers: Option<Spanned<i64>>,
    pub(super) srq: Option<Spanned<bool>>,
    pub(super) srq_depth: Option<Spanned<i64>>,
    pub(super) c2h_success: Option<Spanned<bool>>,
}

impl RawTransport {
    /// The span of a key by name (the names `TargetOptions::validate` reports).
    pub(super) fn span_of(&self, key: &str) -> Option<Range<usize>> {
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

pub(super) const BDEV_KEYS: &[&str] = &[
    "name",
    "kind",
    "num_blocks",
    "block_size",
    "numa_node",
    "traddr",
    "io_timeout_ms",
];

pub(super) struct RawBdev {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) num_blocks: Option<Spanned<i64>>,
    pub(super) block_size: Option<Spanned<i64>>,
    pub(super) numa_node: Option<Spanned<i64>>,
    pub(super) traddr: Option<Spanned<String>>,
    pub(super) io_timeout_ms: Option<Spanned<i64>>,
}

pub(super) const SUBSYSTEM_KEYS: &[&str] = &[
    "nqn",
    "serial",
    "model",
    "allow_any_host",
    "hosts",
    "max_namespaces",
    "listener",
    "namespace",
];

pub(super) struct RawSubsystem {
    pub(super) nqn: Spanned<String>,
    pub(super) serial: Option<Spanned<String>>,
    pub(super) model: Option<Spanned<String>>,
    pub(super) allow_any_host: bool,
    pub(super) hosts: Vec<Spanned<String>>,
    pub(super) max_namespaces: Option<Spanned<i64>>,
    pub(super) listener: Vec<Spanned<RawListener>>,
    pub(super) namespace: Vec<Spanned<RawNamespace>>,
}

pub(super) const LISTENER_KEYS: &[&str] = &["trtype", "traddr", "trsvcid"];

pub(super) struct RawListener {
    pub(super) trtype: Spanned<String>,
    pub(super) traddr: Spanned<String>,
    pub(super) trsvcid: Option<Spanned<String>>,
}

pub(super) const NAMESPACE_KEYS: &[&str] = &["bdev", "nsid", "nguid", "uuid"];

pub(super) struct RawNamespace {
    pub(super) bdev: Spanned<String>,
    pub(super) nsid: Option<Spanned<i64>>,
    pub(super) nguid: Option<Spanned<String>>,
    pub(super) uuid: Option<Spanned<String>>,
}
