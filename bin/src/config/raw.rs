//! What serde reads. Integers stay i64 (TOML's integer type) so range errors can be worded
//! where the value is checked.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    // Sections are not Spanned: toml cannot span a table written with dotted keys
    // (`transport.max_io_size = 4096`), and their keys carry the spans that errors need.
    pub(super) global: Option<RawGlobal>,
    #[serde(default)]
    pub(super) transport: Option<RawTransport>,
    #[serde(default)]
    pub(super) bdev: Vec<Spanned<RawBdev>>,
    #[serde(default)]
    pub(super) subsystem: Vec<Spanned<RawSubsystem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub(super) reactor_mask: Option<Spanned<String>>,
    pub(super) idle_sleep_us: Option<Spanned<i64>>,
    pub(super) interrupt_mode: Option<Spanned<bool>>,
    pub(super) interrupt_after_idle_us: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBdev {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) num_blocks: Option<Spanned<i64>>,
    pub(super) block_size: Option<Spanned<i64>>,
    pub(super) numa_node: Option<Spanned<i64>>,
    pub(super) traddr: Option<Spanned<String>>,
    pub(super) io_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubsystem {
    pub(super) nqn: Spanned<String>,
    pub(super) serial: Option<Spanned<String>>,
    pub(super) model: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_any_host: bool,
    #[serde(default)]
    pub(super) hosts: Vec<Spanned<String>>,
    pub(super) max_namespaces: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub(super) namespace: Vec<Spanned<RawNamespace>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) trtype: Spanned<String>,
    pub(super) traddr: Spanned<String>,
    pub(super) trsvcid: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNamespace {
    pub(super) bdev: Spanned<String>,
    pub(super) nsid: Option<Spanned<i64>>,
    pub(super) nguid: Option<Spanned<String>>,
    pub(super) uuid: Option<Spanned<String>>,
}
