//! What the methods act on, owned by the control thread.

use std::sync::Arc;

use nvmf::Target;
use reactor::ReactorHandle;

use crate::bdevs::BdevRegistry;
use crate::transports::TransportConfig;

/// SPDK's RPC states: some methods only before `framework_start_init`, most only after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcState {
    /// Started with `--wait-for-rpc`: configuring, not serving yet.
    Startup,
    /// Serving its configuration.
    Runtime,
}

/// The program's log flags (`-L`), which `log_set_flag` and `log_clear_flag` change at run
/// time. Implemented by the program, which owns the logger.
pub trait LogFlags: Send + Sync {
    /// Every flag with whether its debug logging is on, sorted by name.
    fn flags(&self) -> Vec<(String, bool)>;
    /// Turns every flag whose name matches `name` (case-insensitive; `all` matches all) on or
    /// off. Returns how many matched.
    fn set(&self, name: &str, on: bool) -> usize;
}

/// The state every method sees.
pub struct Control {
    pub target: Arc<Target>,
    pub bdevs: BdevRegistry,
    pub reactors: ReactorHandle,
    pub state: RpcState,
    pub log: Arc<dyn LogFlags>,
    /// Reactors block when idle (`interrupt_mode`); `framework_get_reactors` reports it.
    pub interrupt_mode: bool,
    /// What `nvmf_create_transport` starts from: the config's `[transport]`.
    pub transport_defaults: TransportConfig,
    /// Where transports put their data buffers (the reactors' NUMA node).
    pub numa_node: Option<u32>,
}

impl Control {
    pub fn new(
        target: Arc<Target>,
        bdevs: BdevRegistry,
        reactors: ReactorHandle,
        log: Arc<dyn LogFlags>,
    ) -> Control {
        Control {
            target,
            bdevs,
            reactors,
            state: RpcState::Runtime,
            log,
            interrupt_mode: false,
            transport_defaults: TransportConfig::default(),
            numa_node: None,
        }
    }
}
