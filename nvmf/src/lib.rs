//! The NVMe-oF target core: subsystems, namespaces, hosts and listeners,
//! discovery, controllers, admin/fabrics/I/O command handling, keep-alive,
//! and the interface transports implement.
//!
//! ## Design
//! - Control plane (`Target`, `Subsystem`): configuration and the controller
//!   registry behind mutexes, used at Connect and by admin commands only.
//! - Data plane (`PollGroup`, one per reactor): transport queues, the
//!   controllers whose admin queue it owns, and its own bdev channel per
//!   namespace. The I/O path touches only poll-group state and atomics.
//! - A controller lives on its admin queue's reactor. An I/O queue Connect
//!   that lands elsewhere is forwarded there by message, and the answer comes
//!   back by message.
//! - Transports implement `Transport` + `TransportPollGroup`; `loopback` is an
//!   in-process one with RDMA semantics for tests and benchmarks.

// No FFI, MMIO or DMA here: host memory and buffers are reached through `dma`'s safe API.
#![forbid(unsafe_code)]

/// Logs a line a remote host caused, within its connection's, its host's and
/// the poll group's budgets (`remote_log`): `remote_log!(pg, queue, host,
/// warn, "...")` where `queue` is `Some((transport, queue slot))` on the
/// queue's own reactor.
macro_rules! remote_log {
    ($pg:expr, $queue:expr, $host:expr, $lvl:ident, $($arg:tt)+) => {{
        let key = $crate::remote_log::host_key($host);
        let conn = $queue.and_then(|(t, q): (usize, u16)| {
            $pg.queues[t].get_mut(usize::from(q)).and_then(|q| q.as_mut())
        });
        let lines = conn.map(|q| &mut q.log_lines);
        if $pg.remote_log.allow($pg.now, key, lines) {
            log::$lvl!($($arg)+);
        }
    }};
}

pub mod admin;
pub mod controller;
mod fabrics;
mod io;
pub mod loopback;
pub mod nqn;
pub mod poll_group;
pub mod remote_log;
pub mod stats;
pub mod subsystem;
pub mod target;
/// A target stepped by the test's thread and a host driving it like Linux
/// does (feature `testing`: for tests and benchmarks).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use controller::{ControllerShared, ControllerState};
pub use poll_group::PollGroup;
pub use subsystem::{Namespace, NamespaceConfig, Subsystem, SubsystemConfig, SubsystemKind};
pub use target::{Target, TargetOptions};
pub use transport::{ListenAddress, Transport, TransportCaps, TransportPollGroup};

/// A configuration error: which thing, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}
