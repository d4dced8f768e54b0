//! Polled-mode reactors for the NVMe-oF target, in the style of SPDK's event framework.
//!
//! A [`ReactorMask`] (SPDK `-m` syntax: `0x3`, `[0,2-3]`) names the CPUs; [`spawn_reactors`]
//! starts one pinned thread per CPU, each running a [`Reactor`]: a busy loop that runs
//! registered [`Poller`]s and closures ([`Message`]s) sent to it by other reactors or threads.
//!
//! # DESIGN
//! - **Share nothing, message everything.** Per-core state lives in the reactor (pollers,
//!   `insert_local` storage) and is touched only by its thread, so pollers need no locks and
//!   may use `Rc`/`RefCell`. Cross-core work is a closure pushed into the target's bounded,
//!   lock-free `crossbeam_queue::ArrayQueue`; a full ring is reported (`SendError::Full`),
//!   never waited on.
//! - **A cheap loop.** Each iteration reads the clock once (`ctx.now()`), runs at most
//!   [`MSG_BATCH`] messages, every poller, and due timed pollers. (Un)registrations made during
//!   an iteration are deferred to its end, so lists are never mutated while iterated. The loop
//!   takes no lock and allocates nothing itself; only sending a message boxes it (on the
//!   sender) and running it frees that box. Stats are per-reactor cache-padded atomics written
//!   with relaxed stores once per iteration.
//! - **Cooperative shutdown.** `request_shutdown()` sets a flag; every reactor then also calls
//!   [`Poller::drain`] each iteration and drops pollers that report drained. A reactor stops
//!   once no poller is left on *any* reactor and no message is queued or running anywhere (a
//!   global count of live pollers plus in-flight messages), so a draining reactor can still
//!   message a peer; `drain_timeout_ms` bounds the wait.
//! - **Signals** only set an atomic flag; [`forward_signals_to`] turns it into a shutdown
//!   request from a small helper thread.
//!
//! - **Interrupt mode** (`interrupt_after_idle_us`): after that long idle, a reactor blocks in
//!   epoll on its pollers' fds and a wake eventfd (see [`interrupt`]), for shared cores.
//!
//! Only the libc calls (`sched_{get,set}affinity`, `sigaction`, epoll, eventfd) use `unsafe`.

#![warn(missing_docs)]

pub mod interrupt;
pub mod mask;
pub mod poller;
pub mod reactor;
pub mod signal;
pub mod topology;

pub use interrupt::Epoll;
pub use mask::{MaskError, ReactorMask};
pub use poller::{PollStatus, Poller, PollerId};
pub use reactor::{
    create_reactors, spawn_reactors, Message, Reactor, ReactorConfig, ReactorContext,
    ReactorHandle, ReactorStats, RunningReactors, SendError, INTERRUPT_MAX_SLEEP, MAX_LOCALS,
    MAX_POLLERS, MSG_BATCH,
};
pub use signal::{
    forward_signals_to, install_shutdown_signal_handlers, shutdown_signal_received,
    SIGNAL_CHECK_INTERVAL_MS,
};
pub use topology::{
    affinity_cpus, format_cpu_list, numa_node_of_cpu, online_cpus, parse_cpu_list,
    pin_current_thread, MAX_CPU_ID,
};
