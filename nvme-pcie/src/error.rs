//! Why a controller could not be used: one error type for opening, admin commands and resets.

use crate::admin::ADMIN_TIMEOUT;
use crate::init::InitError;
use crate::vfio::VfioError;

/// Why the controller could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Vfio(#[from] VfioError),
    #[error("{bdf}: {source}")]
    Init {
        bdf: String,
        #[source]
        source: InitError,
    },
    #[error("{bdf}: cannot allocate {what}: {source}")]
    Memory {
        bdf: String,
        what: &'static str,
        #[source]
        source: dma::DmaError,
    },
    #[error(
        "{bdf}: admin command {command} got no completion within {} s; the controller is not \
         responding (reset it with `nvmf-tgt setup reset {bdf}`, then bind it again)",
        ADMIN_TIMEOUT.as_secs()
    )]
    AdminTimeout { bdf: String, command: &'static str },
    #[error("{bdf}: admin command {command} failed: {status}")]
    AdminFailed {
        bdf: String,
        command: &'static str,
        status: String,
    },
    #[error("{bdf}: {what}")]
    Unsupported { bdf: String, what: String },
}
