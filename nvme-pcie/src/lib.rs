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
//! - `admin`: the admin side as a state machine pollers advance: admin commands, Abort, and
//!   controller reset (queues quiesced through lock-free gates, then created again).
//! - `controller`: one controller in use: VFIO open, bring-up, Identify, I/O queue pairs,
//!   shutdown on drop.
//! - `bdev`: each namespace as a bdev, sharing its controller's admin side (`Mutex`, taken
//!   with `try_lock` by reactors).
//! - `channel`: a reactor's queue pair to a controller: zero-copy I/O, command timeouts
//!   (Abort, then a reset request) and recovery after a reset.
//! - `vfio`: the VFIO container/group/device FFI (open, map BAR0, config space, DMA mapping).
//!   The only module that cannot be tested on a machine without VFIO.
//!
//! `unsafe` lives only in `mmio` and `vfio`; each block carries a `// SAFETY:` comment.
//! Nothing in `queue`'s submit/flush/poll allocates, locks or makes a system call.

#![warn(missing_debug_implementations)]

pub mod admin;
pub mod bdev;
pub mod channel;
pub mod controller;
pub mod error;
pub mod init;
pub mod mmio;
pub mod prp;
pub mod queue;
pub mod regs;
pub mod vfio;

#[cfg(any(test, feature = "testing"))]
pub use mmio::FakeMmio;
pub use mmio::{Bar0, Mmio};
