//! Raw FFI to rdma-core: libibverbs and librdmacm share one set of types,
//! so the QP that `rdma_create_qp` makes on a CM id is posted to with verbs.
//!
//! Everything here is `unsafe` and unchecked; `transport-rdma` wraps it.
//! The static inline verbs (`ibv_post_send`, `ibv_poll_cq`, ...) have no
//! symbol, so `shim.c` provides out-of-line `nvmf_ibv_*` versions.

#[rustfmt::skip]
mod bindings;
pub use bindings::*;
