//! Userspace NVMe PCIe driver over VFIO.
//!
//! ## Layering (bottom up)
//! - `regs`: controller register offsets and typed CAP/CC/CSTS/AQA/doorbell values. Pure.
//! - `mmio`: the `Mmio` trait (32/64-bit register access). `Bar0` is the real one over a
//!   VFIO-mapped BAR0; `FakeMmio` is a register file for tests. Everything above uses only
//!   the trait, so it is tested here without a device.
//! - `init`: the controller bring-up/shutdown state machine, steppable with an injected clock.
//! - `prp`: PRP1/PRP2/PRP-list construction for one (iova, len) buffer.
//! - `queue`: a submission/completion queue pair on DMA memory, with batched doorbells.
//! - `controller`: one controller in use: VFIO open, bring-up, Identify, I/O queue pairs,
//!   shutdown on drop. Admin commands are synchronous (start-up only).
//! - `bdev`: each namespace as a bdev, sharing its controller's admin side (`Mutex`).
//! - `channel`: a reactor's queue pair to one namespace: zero-copy I/O, command timeouts
//!   (Abort, then controller reset) and recovery after a reset.
//! - `vfio`: the VFIO container/group/device FFI (open, map BAR0, config space, DMA mapping).
//!   The only module that cannot be tested on a machine without VFIO.
//!
//! `unsafe` lives only in `mmio` and `vfio`; each block carries a `// SAFETY:` comment.
//! Nothing in `queue`'s submit/flush/poll allocates, locks or makes a system call.

#![warn(missing_debug_implementations)]

pub mod bdev;
pub mod channel;
pub mod controller;
pub mod init;
pub mod mmio;
pub mod prp;
pub mod queue;
pub mod regs;
pub mod vfio;

#[cfg(any(test, feature = "testing"))]
pub use mmio::FakeMmio;
pub use mmio::{Bar0, Mmio};
