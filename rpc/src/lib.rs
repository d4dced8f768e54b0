//! The control plane: SPDK's JSON-RPC protocol on a Unix socket, its methods, and the model
//! `save_config` writes and `load_config` (or `--json`) replays.
//!
//! - [`framing`] finds where each request ends in the unframed stream SPDK clients write.
//! - [`protocol`] checks JSON-RPC 2.0 requests and builds responses, with SPDK's error codes.
//! - [`server`] serves any number of clients (up to [`server::MAX_CLIENTS`]) from one control
//!   thread. Methods run there, one at a time, never on a reactor: a change reaches the
//!   reactors as messages (see `nvmf::Target`).
//! - [`client`] is the native client behind `nvmf-tgt rpc`.
//! - [`Control`] is what the methods act on: the target, the bdevs and their origins, the
//!   reactors, the framework state.

pub mod bdevs;
pub mod client;
mod control;
pub mod framing;
mod methods;
pub mod protocol;
pub mod saved;
pub mod server;
pub mod transports;

pub use bdevs::{BdevEntry, BdevOrigin, BdevRegistry};
pub use control::{Control, LogFlags, RpcState};
pub use methods::{dispatch, method_names};
pub use protocol::RpcError;

/// The socket SPDK's clients use when given none.
pub const DEFAULT_SOCKET_PATH: &str = "/var/tmp/spdk.sock";
