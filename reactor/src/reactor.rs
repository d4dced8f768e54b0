//! The reactor: one polling loop per core, lock-free message rings between them.

use std::any::{Any, TypeId};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::interrupt::{Epoll, WakeFd};
use crate::mask::ReactorMask;
use crate::poller::{PollStatus, Poller, PollerId};
use crate::topology::{numa_node_of_cpu, pin_current_thread};

/// A closure run once on the target reactor's thread.
pub type Message = Box<dyn FnOnce(&mut ReactorContext) + Send>;

/// Messages handled per iteration at most, so a message flood cannot starve the pollers.
pub const MSG_BATCH: usize = 64;
/// Pollers per reactor at most (registered plus pending); exceeding it is a bug and panics.
pub const MAX_POLLERS: usize = 4096;
/// Distinct types in reactor-local storage at most; exceeding it is a bug and panics.
pub const MAX_LOCALS: usize = 64;
/// Deferred (un)registrations per iteration at most; exceeding it is a bug and panics.
const MAX_PENDING_OPS: usize = 2 * MAX_POLLERS;
/// Longest block in interrupt mode. Bounds how late work that signals no fd is seen (a notice
/// from the acceptor thread) and keeps periodic checks inside pollers (keep-alive, flush
/// timeouts) running. Each wake-up costs a poll and a few syscalls, so not much shorter.
pub const INTERRUPT_MAX_SLEEP: Duration = Duration::from_millis(50);
/// The epoll token of a reactor's own wake eventfd; watched fds get 1, 2, ...
const WAKE_TOKEN: u64 = 0;

/// Why a message could not be queued. The message is dropped in either case.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SendError {
    /// The target reactor's ring holds `msg_ring_capacity` messages already.
    #[error("the target reactor's message ring is full")]
    Full,
    /// The target id is not below `reactor_count()`.
    #[error("no such reactor")]
    NoSuchReactor,
}

/// Reactor tuning knobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactorConfig {
    /// Slots in each reactor's message ring. Default 4096; must be > 0.
    pub msg_ring_capacity: usize,
    /// 0 = pure spin (default). > 0 = sleep that long after an iteration in which nothing was
    /// busy and no message arrived (tests use it so spinning reactors do not starve the machine).
    pub idle_sleep_us: u64,
    /// Interrupt mode: `Some(us)` = after that long idle, block until a poller's fd, a message
    /// or a timed poller wakes the reactor (see [`Poller::arm_wakeup`]); for cores shared with
    /// other work. `None` (default) = never block. Pollers that cannot arm keep it spinning
    /// (or sleeping `idle_sleep_us`).
    pub interrupt_after_idle_us: Option<u64>,
    /// After shutdown is requested, how long a reactor waits for pollers to drain. Default 5000.
    pub drain_timeout_ms: u64,
    /// Pin each reactor thread to its core. Default true.
    pub pin_threads: bool,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            msg_ring_capacity: 4096,
            idle_sleep_us: 0,
            interrupt_after_idle_us: None,
            drain_timeout_ms: 5000,
            pin_threads: true,
        }
    }
}

/// Snapshot of one reactor's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReactorStats {
    /// Time in iterations that did work (a busy poller or a message).
    pub busy_ns: u64,
    /// Time in idle iterations, including idle sleeps.
    pub idle_ns: u64,
    /// Loop iterations run.
    pub iterations: u64,
    /// Messages run.
    pub messages: u64,
    /// Blocks in interrupt mode.
    pub sleeps: u64,
}

/// Per-reactor counters: written only by the owning reactor, read by anyone.
#[derive(Default)]
struct AtomicStats {
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    iterations: AtomicU64,
    messages: AtomicU64,
    sleeps: AtomicU64,
}

impl AtomicStats {
    fn publish(&self, s: &ReactorStats) {
        // Single writer: plain stores suffice, and Relaxed because readers want a rough snapshot.
        self.busy_ns.store(s.busy_ns, Ordering::Relaxed);
        self.idle_ns.store(s.idle_ns, Ordering::Relaxed);
        self.iterations.store(s.iterations, Ordering::Relaxed);
        self.messages.store(s.messages, Ordering::Relaxed);
        self.sleeps.store(s.sleeps, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ReactorStats {
        ReactorStats {
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            idle_ns: self.idle_ns.load(Ordering::Relaxed),
            iterations: self.iterations.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    rings: Box<[ArrayQueue<Message>]>,
    stats: Box<[CachePadded<AtomicStats>]>,
    cores: Box<[usize]>,
    shutdown: CachePadded<AtomicBool>,
    /// Interrupt mode only: each reactor's doorbell, rung when a message is sent to it while
    /// it sleeps.
    wake: Option<Box<[WakeFd]>>,
    /// Set by a reactor just before it blocks, cleared when it wakes.
    sleeping: Box<[CachePadded<AtomicBool>]>,
    /// Live pollers on all reactors plus messages queued or running. Shutdown completes when it
    /// reaches zero, so no reactor exits while another may still send it work: a message is
    /// counted before its sender's own count (poller or message) can go away.
    outstanding: CachePadded<AtomicUsize>,
}

/// Cheap, cloneable, `Send + Sync` access to all reactors: messaging, shutdown, stats.
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

impl ReactorHandle {
    fn new(cores: &[usize], ring_capacity: usize, interrupt: bool) -> io::Result<ReactorHandle> {
        assert!(ring_capacity > 0, "msg_ring_capacity must be > 0");
        assert!(!cores.is_empty(), "at least one reactor is required");
        let wake = if interrupt {
            Some(
                cores
                    .iter()
                    .map(|_| WakeFd::new())
                    .collect::<io::Result<_>>()?,
            )
        } else {
            None
        };
        let shared = Shared {
            rings: cores
                .iter()
                .map(|_| ArrayQueue::new(ring_capacity))
                .collect(),
            stats: cores.iter().map(|_| CachePadded::default()).collect(),
            cores: cores.into(),
            shutdown: CachePadded::new(AtomicBool::new(false)),
            wake,
            sleeping: cores.iter().map(|_| CachePadded::default()).collect(),
            outstanding: CachePadded::new(AtomicUsize::new(0)),
        };
        Ok(ReactorHandle {
            shared: Arc::new(shared),
        })
    }

    /// Interrupt mode: rings reactor `to`'s doorbell if it is asleep. Pairs with the fence in
    /// `Reactor::sleep_until_woken` (store sleeping, fence, check ring): either the sleeper
    /// sees our message or we see it sleeping.
    fn wake(&self, to: usize) {
        let Some(wake) = &self.shared.wake else {
            return;
        };
        fence(Ordering::SeqCst);
        if self.shared.sleeping[to].load(Ordering::SeqCst) {
            wake[to].ring();
        }
    }

    /// Queues `msg` to run on reactor `to`. Lock-free and bounded: `Err(SendError::Full)` when
    /// the target ring is full, `Err(SendError::NoSuchReactor)` for a bad id. Boxes the closure.
    pub fn send(
        &self,
        to: usize,
        msg: impl FnOnce(&mut ReactorContext) + Send + 'static,
    ) -> Result<(), SendError> {
        let ring = self.shared.rings.get(to).ok_or(SendError::NoSuchReactor)?;
        // Count before pushing: the receiver may run and uncount it before push() returns.
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        if ring.push(Box::new(msg)).is_err() {
            self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(SendError::Full);
        }
        self.wake(to);
        Ok(())
    }

    /// Number of reactors.
    pub fn reactor_count(&self) -> usize {
        self.shared.cores.len()
    }

    /// Core of reactor `reactor`, if it exists.
    pub fn core(&self, reactor: usize) -> Option<usize> {
        self.shared.cores.get(reactor).copied()
    }

    /// Asks every reactor to drain its pollers and stop. Idempotent.
    pub fn request_shutdown(&self) {
        if !self.shared.shutdown.swap(true, Ordering::AcqRel) {
            log::info!("reactor shutdown requested");
        }
        for reactor in 0..self.reactor_count() {
            self.wake(reactor);
        }
    }

    /// Whether shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Snapshot of reactor `reactor`'s counters, as of its last completed iteration.
    ///
    /// # Panics
    /// If `reactor >= reactor_count()`.
    pub fn stats(&self, reactor: usize) -> ReactorStats {
        assert!(
            reactor < self.reactor_count(),
            "reactor {reactor} does not exist ({} reactors)",
            self.reactor_count()
        );
        self.shared.stats[reactor].snapshot()
    }

    fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("cores", &self.shared.cores)
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

/// Holds one unit of `Shared::outstanding` for as long as a poller lives.
struct WorkToken(Arc<Shared>);

impl WorkToken {
    fn new(shared: &Arc<Shared>) -> WorkToken {
        shared.outstanding.fetch_add(1, Ordering::AcqRel);
        WorkToken(Arc::clone(shared))
    }
}

impl Drop for WorkToken {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PollerEntry {
    id: PollerId,
    name: &'static str,
    poller: Box<dyn Poller>,
    /// Zero for every-iteration pollers.
    period: Duration,
    next_due: Instant,
    _work: WorkToken,
}

enum PendingOp {
    Register(PollerEntry),
    Unregister(PollerId),
}

/// What pollers and messages see of their reactor: identity, messaging, (un)registration,
/// reactor-local storage, and the cached time.
pub struct ReactorContext {
    id: usize,
    core: usize,
    numa_node: Option<u32>,
    handle: ReactorHandle,
    now: Instant,
    /// (Un)registrations made during an iteration, applied at its end so the poller lists are
    /// never changed while being iterated.
    pending: Vec<PendingOp>,
    /// Registered plus pending pollers, for the MAX_POLLERS bound.
    poller_total: usize,
    next_poller_seq: u64,
    /// A Vec beats a map for the handful of types a reactor keeps.
    locals: Vec<(TypeId, Box<dyn Any>)>,
    /// Interrupt mode only: the reactor's wake fd and every fd pollers watch.
    epoll: Option<Epoll>,
    next_fd_token: u64,
}

impl ReactorContext {
    /// Reactor index, `0..reactor_count()`, in mask order.
    pub fn id(&self) -> usize {
        self.id
    }

    /// CPU this reactor runs on.
    pub fn core(&self) -> usize {
        self.core
    }

    /// NUMA node of `core()`, if the system reports one.
    pub fn numa_node(&self) -> Option<u32> {
        self.numa_node
    }

    /// Number of reactors.
    pub fn reactor_count(&self) -> usize {
        self.handle.reactor_count()
    }

    /// Handle to all reactors (clone it to hand to other threads).
    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// See [`ReactorHandle::send`]. Sending to oneself is allowed.
    pub fn send(
        &self,
        to: usize,
        msg: impl FnOnce(&mut ReactorContext) + Send + 'static,
    ) -> Result<(), SendError> {
        self.handle.send(to, msg)
    }

    /// Registers a poller run every iteration, starting next iteration.
    pub fn register_poller(&mut self, name: &'static str, poller: impl Poller) -> PollerId {
        self.register(name, Duration::ZERO, Box::new(poller))
    }

    /// Registers a poller due every `period` on a fixed schedule starting one period from now;
    /// periods missed during a long iteration are skipped, not made up. Runs no more often than
    /// `elapsed / period` times. A zero period means every iteration.
    pub fn register_timed_poller(
        &mut self,
        name: &'static str,
        period: Duration,
        poller: impl Poller,
    ) -> PollerId {
        self.register(name, period, Box::new(poller))
    }

    fn register(
        &mut self,
        name: &'static str,
        period: Duration,
        poller: Box<dyn Poller>,
    ) -> PollerId {
        assert!(
            self.poller_total < MAX_POLLERS,
            "reactor {}: cannot register poller {name}: {MAX_POLLERS} pollers already",
            self.id
        );
        assert!(
            self.pending.len() < MAX_PENDING_OPS,
            "reactor {}: too many pending ops",
            self.id
        );
        let id = PollerId {
            reactor: self.id,
            seq: self.next_poller_seq,
        };
        self.next_poller_seq += 1;
        self.poller_total += 1;
        self.pending.push(PendingOp::Register(PollerEntry {
            id,
            name,
            poller,
            period,
            // Not the cached `now`: before the first iteration it is the creation time.
            next_due: Instant::now() + period,
            _work: WorkToken::new(&self.handle.shared),
        }));
        id
    }

    /// Unregisters and drops a poller at the end of the current iteration (so it is safe to
    /// call from inside that poller). Unknown ids are ignored; ids of other reactors are a bug.
    pub fn unregister_poller(&mut self, id: PollerId) {
        if id.reactor != self.id {
            debug_assert!(false, "poller {id:?} belongs to another reactor");
            log::warn!(
                "reactor {}: ignoring unregister of foreign poller {id:?}",
                self.id
            );
            return;
        }
        assert!(
            self.pending.len() < MAX_PENDING_OPS,
            "reactor {}: too many pending ops",
            self.id
        );
        self.pending.push(PendingOp::Unregister(id));
    }

    /// Stores `value` as this reactor's value of type `T`, dropping any previous one.
    pub fn insert_local<T: 'static>(&mut self, value: T) {
        let key = TypeId::of::<T>();
        if let Some(slot) = self.locals.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = Box::new(value);
            return;
        }
        assert!(
            self.locals.len() < MAX_LOCALS,
            "reactor {}: more than {MAX_LOCALS} local types",
            self.id
        );
        self.locals.push((key, Box::new(value)));
    }

    /// This reactor's value of type `T`.
    pub fn local<T: 'static>(&self) -> Option<&T> {
        let key = TypeId::of::<T>();
        let (_, value) = self.locals.iter().find(|(k, _)| *k == key)?;
        value.downcast_ref()
    }

    /// This reactor's value of type `T`, mutably.
    pub fn local_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let key = TypeId::of::<T>();
        let (_, value) = self.locals.iter_mut().find(|(k, _)| *k == key)?;
        value.downcast_mut()
    }

    /// Takes this reactor's value of type `T` out of local storage.
    pub fn remove_local<T: 'static>(&mut self) -> Option<T> {
        let key = TypeId::of::<T>();
        let index = self.locals.iter().position(|(k, _)| *k == key)?;
        let (_, value) = self.locals.swap_remove(index);
        value.downcast().ok().map(|b| *b)
    }

    /// Time at the start of the current iteration (read once per iteration, not per call).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        self.handle.is_shutting_down()
    }

    /// Whether this reactor blocks when idle (`interrupt_after_idle_us`).
    pub fn interrupt_mode(&self) -> bool {
        self.epoll.is_some()
    }

    /// Interrupt mode: a readable `fd` wakes the reactor. The caller keeps `fd` open until
    /// [`unwatch_fd`](Self::unwatch_fd) and consumes its events in [`Poller::woke`]. A no-op
    /// when not in interrupt mode.
    pub fn watch_fd(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(epoll) = self.epoll.as_mut() else {
            return Ok(());
        };
        self.next_fd_token += 1;
        epoll.add(fd, self.next_fd_token)
    }

    /// Stops watching `fd` (see [`watch_fd`](Self::watch_fd)).
    pub fn unwatch_fd(&mut self, fd: RawFd) {
        if let Some(epoll) = self.epoll.as_mut() {
            epoll.remove(fd);
        }
    }

    fn ring(&self) -> &ArrayQueue<Message> {
        &self.handle.shared.rings[self.id]
    }
}

/// One polling loop. Not `Send`: it lives and dies on its own thread (pollers may hold `Rc`).
/// Usable without threads: tests step it with [`run_once`](Self::run_once).
pub struct Reactor {
    ctx: ReactorContext,
    /// Every-iteration pollers, in registration order.
    pollers: Vec<PollerEntry>,
    /// Timed pollers, in registration order.
    timed: Vec<PollerEntry>,
    stats: ReactorStats,
    idle_sleep: Duration,
    /// Interrupt mode: how long idle before blocking.
    interrupt_after_idle: Option<Duration>,
    /// Start of the current run of idle iterations.
    idle_since: Option<Instant>,
    /// Whether the last iteration did work (its time is counted when the next one starts).
    last_busy: bool,
    drain_timeout: Duration,
}

impl Reactor {
    fn new(id: usize, handle: ReactorHandle, config: &ReactorConfig) -> io::Result<Reactor> {
        let core = handle.shared.cores[id];
        let epoll = match &handle.shared.wake {
            Some(wake) => {
                let mut epoll = Epoll::new()?;
                epoll.add(wake[id].raw(), WAKE_TOKEN)?;
                Some(epoll)
            }
            None => None,
        };
        Ok(Reactor {
            ctx: ReactorContext {
                id,
                core,
                numa_node: numa_node_of_cpu(core),
                handle,
                now: Instant::now(),
                pending: Vec::with_capacity(64),
                poller_total: 0,
                next_poller_seq: 0,
                locals: Vec::with_capacity(8),
                epoll,
                next_fd_token: WAKE_TOKEN,
            },
            pollers: Vec::with_capacity(64),
            timed: Vec::with_capacity(16),
            stats: ReactorStats::default(),
            idle_sleep: Duration::from_micros(config.idle_sleep_us),
            interrupt_after_idle: config.interrupt_after_idle_us.map(Duration::from_micros),
            idle_since: None,
            last_busy: false,
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        })
    }

    /// One iteration: run up to [`MSG_BATCH`] messages, every-iteration pollers, due timed
    /// pollers, and (once shutdown is requested) `drain()` on every poller, dropping the drained
    /// ones; then apply deferred (un)registrations and account busy/idle time.
    pub fn run_once(&mut self) -> PollStatus {
        // The one clock read of an iteration (a syscall where the clock source is not the
        // TSC). The time since the previous iteration began, sleeps included, is that one's.
        let start = Instant::now();
        let previous_ns = duration_ns(start.saturating_duration_since(self.ctx.now));
        if self.last_busy {
            self.stats.busy_ns += previous_ns;
        } else {
            self.stats.idle_ns += previous_ns;
        }
        self.ctx.now = start;

        let mut messages = 0;
        while messages < MSG_BATCH {
            let Some(msg) = self.ctx.ring().pop() else {
                break;
            };
            msg(&mut self.ctx);
            self.ctx
                .handle
                .shared
                .outstanding
                .fetch_sub(1, Ordering::AcqRel);
            messages += 1;
        }
        let mut busy = messages > 0;

        for entry in &mut self.pollers {
            busy |= entry.poller.poll(&mut self.ctx) == PollStatus::Busy;
        }
        for entry in &mut self.timed {
            if start < entry.next_due {
                continue;
            }
            busy |= entry.poller.poll(&mut self.ctx) == PollStatus::Busy;
            entry.next_due += entry.period;
            if entry.next_due <= start {
                // Fell behind (a long iteration): skip missed periods rather than burst.
                entry.next_due = start + entry.period;
            }
        }

        if self.ctx.is_shutting_down() {
            self.drain_pollers();
        }
        self.apply_pending();

        self.last_busy = busy;
        self.stats.iterations += 1;
        self.stats.messages += messages as u64;
        self.publish_stats();
        PollStatus::from_work(busy)
    }

    fn drain_pollers(&mut self) {
        let ctx = &mut self.ctx;
        let reactor = ctx.id;
        let mut drained = 0;
        for list in [&mut self.pollers, &mut self.timed] {
            list.retain_mut(|entry| {
                let done = entry.poller.drain(ctx);
                if done {
                    log::debug!("reactor {reactor}: poller {} drained", entry.name);
                    drained += 1;
                }
                !done
            });
        }
        self.ctx.poller_total -= drained;
    }

    fn apply_pending(&mut self) {
        // drain(..) keeps the Vec's capacity: no allocation in steady state.
        for op in self.ctx.pending.drain(..) {
            match op {
                PendingOp::Register(entry) if entry.period.is_zero() => self.pollers.push(entry),
                PendingOp::Register(entry) => self.timed.push(entry),
                PendingOp::Unregister(id) => {
                    let found = [&mut self.pollers, &mut self.timed]
                        .into_iter()
                        .find_map(|list| {
                            let index = list.iter().position(|e| e.id == id)?;
                            Some(list.remove(index))
                        });
                    match found {
                        Some(entry) => {
                            log::debug!(
                                "reactor {}: poller {} unregistered",
                                self.ctx.id,
                                entry.name
                            );
                            self.ctx.poller_total -= 1;
                        }
                        None => log::debug!("reactor {}: poller {id:?} already gone", self.ctx.id),
                    }
                }
            }
        }
    }

    fn publish_stats(&self) {
        self.ctx.handle.shared.stats[self.ctx.id].publish(&self.stats);
    }

    /// Sleeps `idle_sleep_us` (counted as idle by the next iteration).
    fn sleep_idle(&mut self) {
        thread::sleep(self.idle_sleep);
    }

    /// Loops [`run_once`](Self::run_once) until shutdown completes: shutdown was requested, no
    /// poller is left here or on any other reactor, and no message is queued or running anywhere.
    /// Gives up after `drain_timeout_ms`, logging the pollers left. Returns true if it drained.
    pub fn run(&mut self) -> bool {
        let mut drain_deadline = None;
        // Bounded by shutdown: the deadline is set on the first iteration that sees it.
        loop {
            let status = self.run_once();
            if self.ctx.is_shutting_down() {
                if self.is_drained() {
                    return true;
                }
                let deadline = *drain_deadline.get_or_insert(self.ctx.now + self.drain_timeout);
                if Instant::now() >= deadline {
                    self.give_up_draining();
                    return false;
                }
            }
            if status == PollStatus::Busy {
                self.idle_since = None;
                continue;
            }
            let idle_since = *self.idle_since.get_or_insert(self.ctx.now);
            let slept = match self.interrupt_after_idle {
                Some(after) if self.ctx.now.saturating_duration_since(idle_since) >= after => {
                    self.sleep_until_woken()
                }
                _ => false,
            };
            if !slept && !self.idle_sleep.is_zero() {
                self.sleep_idle();
            }
        }
    }

    /// Interrupt mode: blocks until a watched fd is readable, a message arrives, the next
    /// timed poller is due or [`INTERRUPT_MAX_SLEEP`] passes, if no message is queued and
    /// every poller armed its wake-up. Returns whether it blocked.
    fn sleep_until_woken(&mut self) -> bool {
        if self.ctx.is_shutting_down() {
            return false; // draining wants prompt polls, and shutdown is brief
        }
        let sleeping = &self.ctx.handle.shared.sleeping[self.ctx.id];
        sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence in `ReactorHandle::wake`.
        fence(Ordering::SeqCst);
        let ctx = &mut self.ctx;
        let armed =
            ctx.ring().is_empty() && self.pollers.iter_mut().all(|e| e.poller.arm_wakeup(ctx));
        if !armed {
            self.ctx.handle.shared.sleeping[self.ctx.id].store(false, Ordering::SeqCst);
            return false;
        }
        // The iteration's time stands in for now: no clock read on the way to sleep.
        let now = self.ctx.now;
        let timeout = self
            .timed
            .iter()
            .map(|e| e.next_due.saturating_duration_since(now))
            .fold(INTERRUPT_MAX_SLEEP, Duration::min);
        let epoll = self
            .ctx
            .epoll
            .as_mut()
            .expect("interrupt mode has an epoll set");
        let (mut woken_by_fd, mut woken_by_message) = (false, false);
        for token in epoll.wait(timeout) {
            woken_by_fd = true;
            woken_by_message |= token == WAKE_TOKEN;
        }
        self.ctx.handle.shared.sleeping[self.ctx.id].store(false, Ordering::SeqCst);
        if woken_by_message {
            let wake = self.ctx.handle.shared.wake.as_ref();
            wake.expect("interrupt mode has wake fds")[self.ctx.id].clear();
        }
        let ctx = &mut self.ctx;
        for entry in &mut self.pollers {
            entry.poller.woke(ctx);
        }
        self.stats.sleeps += 1;
        if woken_by_fd {
            // Work is likely to come in a burst: spin again before the next sleep. After a
            // timeout, sleep again as soon as a poll finds nothing.
            self.idle_since = None;
        }
        self.publish_stats();
        true
    }

    fn give_up_draining(&mut self) {
        let id = self.ctx.id;
        let timeout_ms = self.drain_timeout.as_millis();
        let names: Vec<&str> = self
            .pollers
            .iter()
            .chain(&self.timed)
            .map(|e| e.name)
            .collect();
        if names.is_empty() {
            log::warn!(
                "reactor {id}: drain timed out after {timeout_ms} ms waiting for {} pollers/messages on other reactors",
                self.ctx.handle.outstanding()
            );
        } else {
            log::warn!(
                "reactor {id}: drain timed out after {timeout_ms} ms; pollers left: {}",
                names.join(", ")
            );
        }
        // Nobody will run these any more; drop them now so their count frees other reactors.
        // Bounded by the ring capacity at the time of the call.
        let mut dropped = 0;
        for _ in 0..self.ctx.ring().capacity() {
            let Some(msg) = self.ctx.ring().pop() else {
                break;
            };
            drop(msg);
            self.ctx
                .handle
                .shared
                .outstanding
                .fetch_sub(1, Ordering::AcqRel);
            dropped += 1;
        }
        if dropped > 0 {
            log::warn!("reactor {id}: dropped {dropped} undelivered messages");
        }
    }

    /// True once shutdown was requested and all work everywhere is done (see [`run`](Self::run)).
    pub fn is_drained(&self) -> bool {
        self.ctx.is_shutting_down()
            && self.pollers.is_empty()
            && self.timed.is_empty()
            && self.ctx.pending.is_empty()
            && self.ctx.handle.outstanding() == 0
    }

    /// The context pollers and messages see (e.g. to register pollers before the first iteration).
    pub fn context(&mut self) -> &mut ReactorContext {
        &mut self.ctx
    }

    /// Registered pollers (every-iteration plus timed), not counting pending registrations.
    pub fn poller_count(&self) -> usize {
        self.pollers.len() + self.timed.len()
    }

    /// This reactor's counters (the same values `ReactorHandle::stats` reads).
    pub fn stats(&self) -> ReactorStats {
        self.stats
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Builds one reactor per core in the mask, without threads. Tests drive them with `run_once()`.
///
/// # Panics
/// If `config.msg_ring_capacity` is 0, or interrupt mode cannot get its eventfd or epoll set.
pub fn create_reactors(
    mask: &ReactorMask,
    config: &ReactorConfig,
) -> (Vec<Reactor>, ReactorHandle) {
    let interrupt = config.interrupt_after_idle_us.is_some();
    let handle = ReactorHandle::new(mask.cores(), config.msg_ring_capacity, interrupt)
        .expect("interrupt mode: cannot create an eventfd");
    let reactors = (0..mask.len())
        .map(|id| {
            Reactor::new(id, handle.clone(), config)
                .expect("interrupt mode: cannot create an epoll set")
        })
        .collect();
    (reactors, handle)
}

/// Reactor threads started by [`spawn_reactors`]. Dropping it without `join` requests shutdown
/// and joins, so threads never outlive it.
pub struct RunningReactors {
    handle: ReactorHandle,
    threads: Vec<JoinHandle<()>>,
}

impl RunningReactors {
    /// Handle to the running reactors.
    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Joins all threads; returns once shutdown has completed (it does not request it).
    /// Returns the first panic payload if a reactor thread panicked.
    pub fn join(mut self) -> thread::Result<()> {
        join_all(std::mem::take(&mut self.threads))
    }
}

impl Drop for RunningReactors {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.handle.request_shutdown();
            let _ = join_all(std::mem::take(&mut self.threads));
        }
    }
}

fn join_all(threads: Vec<JoinHandle<()>>) -> thread::Result<()> {
    let mut result = Ok(());
    for thread in threads {
        if let Err(payload) = thread.join() {
            if result.is_ok() {
                result = Err(payload);
            }
        }
    }
    result
}

/// Requests shutdown if a reactor thread unwinds, so the others do not poll forever.
struct PanicGuard<'a> {
    handle: &'a ReactorHandle,
    id: usize,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            log::error!("reactor {} panicked; shutting all reactors down", self.id);
            self.handle.request_shutdown();
        }
    }
}

/// Spawns one thread per core (named `reactor_N`), pins it (unless `config.pin_threads` is
/// false), logs at info "reactor N started on core C (NUMA node X)", runs `init(ctx)` on the
/// thread, then loops `run_once()` until shutdown (see [`Reactor::run`]).
///
/// Returns only after every thread is pinned; if any pin fails, no `init` runs, all threads are
/// joined and the (first) pin error is returned.
pub fn spawn_reactors(
    mask: &ReactorMask,
    config: &ReactorConfig,
    init: impl Fn(&mut ReactorContext) + Send + Sync + 'static,
) -> io::Result<RunningReactors> {
    if config.msg_ring_capacity == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "msg_ring_capacity must be > 0",
        ));
    }
    let interrupt = config.interrupt_after_idle_us.is_some();
    let handle = ReactorHandle::new(mask.cores(), config.msg_ring_capacity, interrupt)
        .map_err(|e| io::Error::new(e.kind(), format!("interrupt mode: eventfd: {e}")))?;
    let init = Arc::new(init);
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
    let mut go_txs = Vec::with_capacity(mask.len());
    let mut threads = Vec::with_capacity(mask.len());

    for (id, &core) in mask.cores().iter().enumerate() {
        let (go_tx, go_rx) = mpsc::sync_channel::<bool>(1);
        let ready_tx = ready_tx.clone();
        let handle = handle.clone();
        let config = config.clone();
        let init = Arc::clone(&init);
        let spawned = thread::Builder::new()
            .name(format!("reactor_{id}"))
            .spawn(move || {
                let pinned = if config.pin_threads {
                    pin_current_thread(core)
                } else {
                    Ok(())
                };
                let (report, reactor) = match pinned.and_then(|()| {
                    Reactor::new(id, handle.clone(), &config).map_err(|e| {
                        io::Error::new(e.kind(), format!("interrupt mode: epoll: {e}"))
                    })
                }) {
                    Ok(reactor) => (Ok(()), Some(reactor)),
                    Err(e) => (Err(e), None),
                };
                let reported = ready_tx.send((id, report)).is_ok();
                // Drop our sender now: if a peer dies before reporting, the spawner's recv()
                // must see a closed channel rather than wait for us.
                drop(ready_tx);
                // Proceed only when every thread is ready; a closed channel means abort.
                let Some(reactor) = reactor else { return };
                if !reported || go_rx.recv() != Ok(true) {
                    return;
                }
                reactor_thread_main(reactor, handle, &config, &*init);
            });
        match spawned {
            Ok(thread) => {
                threads.push(thread);
                go_txs.push(go_tx);
            }
            Err(e) => {
                drop(go_txs);
                let _ = join_all(threads);
                return Err(e);
            }
        }
    }
    drop(ready_tx);

    let mut first_error = None;
    for _ in 0..threads.len() {
        let error = match ready_rx.recv() {
            Ok((_, Ok(()))) => continue,
            Ok((id, Err(e))) => io::Error::new(
                e.kind(),
                format!(
                    "cannot start reactor {id} on core {}: {e}",
                    mask.cores()[id]
                ),
            ),
            Err(_) => io::Error::other("a reactor thread died during startup"),
        };
        first_error.get_or_insert(error);
    }
    let go = first_error.is_none();
    for go_tx in go_txs {
        let _ = go_tx.send(go);
    }
    if let Some(e) = first_error {
        let _ = join_all(threads);
        return Err(e);
    }
    Ok(RunningReactors { handle, threads })
}

fn reactor_thread_main(
    mut reactor: Reactor,
    handle: ReactorHandle,
    config: &ReactorConfig,
    init: &dyn Fn(&mut ReactorContext),
) {
    let id = reactor.ctx.id;
    let _guard = PanicGuard {
        handle: &handle,
        id,
    };
    let core = reactor.ctx.core;
    match reactor.ctx.numa_node {
        Some(node) => log::info!("reactor {id} started on core {core} (NUMA node {node})"),
        None => log::info!("reactor {id} started on core {core} (NUMA node unknown)"),
    }
    if !config.pin_threads {
        log::debug!("reactor {id} is not pinned (pin_threads = false)");
    }
    init(&mut reactor.ctx);
    let drained = reactor.run();
    let stats = reactor.stats();
    let busy_pct = 100 * stats.busy_ns / (stats.busy_ns + stats.idle_ns).max(1);
    log::info!(
        "reactor {id} on core {core} stopped{}: busy {busy_pct}% of {:.1} s{}",
        if drained { "" } else { " (drain timed out)" },
        (stats.busy_ns + stats.idle_ns) as f64 / 1e9,
        if reactor.ctx.interrupt_mode() {
            format!(", slept {} times", stats.sleeps)
        } else {
            String::new()
        }
    );
    // Pollers and locals drop here, on their own thread.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::sync::atomic::AtomicU32;

    fn two_reactors(capacity: usize) -> (Vec<Reactor>, ReactorHandle) {
        let config = ReactorConfig {
            msg_ring_capacity: capacity,
            ..ReactorConfig::default()
        };
        create_reactors(&ReactorMask::from_cores(&[0, 1]).unwrap(), &config)
    }

    #[test]
    fn defaults() {
        let c = ReactorConfig::default();
        assert_eq!(
            (
                c.msg_ring_capacity,
                c.idle_sleep_us,
                c.drain_timeout_ms,
                c.pin_threads
            ),
            (4096, 0, 5000, true)
        );
    }

    #[test]
    fn context_identity() {
        let (mut reactors, handle) = create_reactors(
            &ReactorMask::from_cores(&[3, 1]).unwrap(),
            &ReactorConfig::default(),
        );
        assert_eq!(handle.reactor_count(), 2);
        assert_eq!(
            (handle.core(0), handle.core(1), handle.core(2)),
            (Some(1), Some(3), None)
        );
        let ctx = reactors[1].context();
        assert_eq!((ctx.id(), ctx.core(), ctx.reactor_count()), (1, 3, 2));
        assert_eq!(ctx.numa_node(), numa_node_of_cpu(3));
        assert!(!ctx.is_shutting_down());
    }

    #[test]
    fn messages_between_two_reactors() {
        let (mut reactors, handle) = two_reactors(16);
        let log = Arc::new(AtomicU32::new(0));
        let log2 = Arc::clone(&log);
        reactors[0]
            .context()
            .send(1, move |ctx| {
                assert_eq!(ctx.id(), 1);
                log2.fetch_add(1, Ordering::SeqCst);
                ctx.send(0, move |ctx| {
                    assert_eq!(ctx.id(), 0);
                    log2.fetch_add(10, Ordering::SeqCst);
                })
                .unwrap();
            })
            .unwrap();
        assert_eq!(reactors[0].run_once(), PollStatus::Idle);
        assert_eq!(log.load(Ordering::SeqCst), 0);
        assert_eq!(reactors[1].run_once(), PollStatus::Busy);
        assert_eq!(log.load(Ordering::SeqCst), 1);
        assert_eq!(reactors[0].run_once(), PollStatus::Busy);
        assert_eq!(log.load(Ordering::SeqCst), 11);
        assert_eq!(handle.stats(0).messages, 1);
        assert_eq!(handle.stats(1).messages, 1);
        assert_eq!(handle.stats(0).iterations, 2);
        assert_eq!(handle.outstanding(), 0);
    }

    #[test]
    fn full_ring_and_bad_target() {
        let (mut reactors, handle) = two_reactors(2);
        handle.send(1, |_| {}).unwrap();
        handle.send(1, |_| {}).unwrap();
        assert_eq!(handle.send(1, |_| {}), Err(SendError::Full));
        assert_eq!(handle.send(2, |_| {}), Err(SendError::NoSuchReactor));
        assert_eq!(
            reactors[0].context().send(7, |_| {}),
            Err(SendError::NoSuchReactor)
        );
        assert_eq!(handle.outstanding(), 2);
        reactors[1].run_once();
        assert_eq!(handle.outstanding(), 0);
        handle.send(1, |_| {}).unwrap();
    }

    #[test]
    fn message_batch_is_bounded() {
        let (mut reactors, handle) = two_reactors(256);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let ran = Arc::clone(&ran);
            handle
                .send(0, move |_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
        reactors[0].run_once();
        assert_eq!(ran.load(Ordering::Relaxed), MSG_BATCH);
        reactors[0].run_once();
        assert_eq!(ran.load(Ordering::Relaxed), 100);
        assert_eq!(reactors[0].stats().messages, 100);
    }

    #[test]
    fn poller_unregisters_itself() {
        let (mut reactors, _handle) = two_reactors(4);
        let r = &mut reactors[0];
        let calls = Rc::new(Cell::new(0));
        let my_id = Rc::new(Cell::new(None));
        let (calls2, my_id2) = (Rc::clone(&calls), Rc::clone(&my_id));
        let id = r
            .context()
            .register_poller("self_remover", move |ctx: &mut ReactorContext| {
                calls2.set(calls2.get() + 1);
                if calls2.get() == 3 {
                    ctx.unregister_poller(my_id2.get().unwrap());
                }
                PollStatus::Busy
            });
        my_id.set(Some(id));
        assert_eq!(id.reactor(), 0);
        assert_eq!(r.poller_count(), 0, "registration is deferred");
        r.run_once();
        assert_eq!(r.poller_count(), 1);
        for _ in 0..5 {
            r.run_once();
        }
        assert_eq!(calls.get(), 3);
        assert_eq!(r.poller_count(), 0);
        assert_eq!(Rc::strong_count(&calls), 1, "the poller was dropped");
        assert_eq!(r.ctx.handle.outstanding(), 0);
    }

    #[test]
    fn register_from_poller_and_message() {
        let (mut reactors, handle) = two_reactors(4);
        let r = &mut reactors[0];
        let child_calls = Rc::new(Cell::new(0));
        let child_calls2 = Rc::clone(&child_calls);
        let mut spawned = false;
        r.context()
            .register_poller("parent", move |ctx: &mut ReactorContext| {
                if !spawned {
                    spawned = true;
                    let calls = Rc::clone(&child_calls2);
                    ctx.register_poller("child", move |_: &mut ReactorContext| {
                        calls.set(calls.get() + 1);
                        PollStatus::Idle
                    });
                }
                PollStatus::Idle
            });
        r.run_once(); // parent registered
        r.run_once(); // parent runs, registers child
        assert_eq!((r.poller_count(), child_calls.get()), (2, 0));
        r.run_once();
        assert_eq!(child_calls.get(), 1);
        handle
            .send(0, |ctx| {
                ctx.register_poller("from_msg", |_: &mut ReactorContext| PollStatus::Idle);
            })
            .unwrap();
        r.run_once();
        assert_eq!(r.poller_count(), 3);
    }

    #[test]
    fn busy_and_idle_accounting() {
        let (mut reactors, handle) = two_reactors(4);
        let r = &mut reactors[0];
        let busy = Rc::new(Cell::new(true));
        let busy2 = Rc::clone(&busy);
        r.context()
            .register_poller("toggle", move |_: &mut ReactorContext| {
                PollStatus::from_work(busy2.get())
            });
        r.run_once();
        assert_eq!(r.run_once(), PollStatus::Busy);
        busy.set(false);
        assert_eq!(r.run_once(), PollStatus::Idle);
        let stats = handle.stats(0);
        assert_eq!(stats, r.stats());
        assert_eq!(stats.iterations, 3);
        assert!(stats.busy_ns > 0 && stats.idle_ns > 0, "{stats:?}");
    }

    #[test]
    fn timed_poller_period_is_honoured() {
        let (mut reactors, _handle) = two_reactors(4);
        let r = &mut reactors[0];
        let period = Duration::from_millis(10);
        let seen: Rc<RefCell<Vec<Instant>>> = Rc::default();
        let seen2 = Rc::clone(&seen);
        let start = Instant::now();
        r.context()
            .register_timed_poller("tick", period, move |ctx: &mut ReactorContext| {
                seen2.borrow_mut().push(ctx.now());
                PollStatus::Busy
            });
        let mut iterations = 0;
        while start.elapsed() < Duration::from_millis(55) {
            r.run_once();
            iterations += 1;
            thread::sleep(Duration::from_micros(200));
        }
        let seen = seen.borrow();
        let elapsed = start.elapsed();
        assert!(
            iterations > seen.len() * 2,
            "ran every iteration? {iterations} vs {}",
            seen.len()
        );
        assert!(seen.len() >= 2, "too few calls: {}", seen.len());
        assert!(
            seen.len() as u128 <= elapsed.as_millis() / 10,
            "{} calls in {elapsed:?}",
            seen.len()
        );
        // Due times are a fixed schedule from registration (start + k * period), not
        // "period after the previous call", so a late call does not shift later ones.
        for (k, &at) in seen.iter().enumerate() {
            assert!(
                at - start >= period * (k as u32 + 1),
                "call {k} at {:?}",
                at - start
            );
        }
    }

    #[test]
    fn locals() {
        let (mut reactors, _handle) = two_reactors(4);
        let ctx = reactors[0].context();
        assert_eq!(ctx.local::<u32>(), None);
        ctx.insert_local(5u32);
        ctx.insert_local(String::from("pg"));
        ctx.insert_local(Rc::new(RefCell::new(vec![1])));
        assert_eq!(ctx.local::<u32>(), Some(&5));
        *ctx.local_mut::<u32>().unwrap() += 1;
        assert_eq!(ctx.local::<u32>(), Some(&6));
        ctx.insert_local(9u32);
        assert_eq!(ctx.local::<u32>(), Some(&9), "insert replaces");
        ctx.local::<Rc<RefCell<Vec<i32>>>>()
            .unwrap()
            .borrow_mut()
            .push(2);
        assert_eq!(
            *ctx.local::<Rc<RefCell<Vec<i32>>>>().unwrap().borrow(),
            vec![1, 2]
        );
        assert_eq!(ctx.remove_local::<String>().as_deref(), Some("pg"));
        assert_eq!(ctx.remove_local::<String>(), None);
        assert_eq!(ctx.local::<u32>(), Some(&9));
        assert_eq!(ctx.local::<u64>(), None);
        assert_eq!(
            reactors[1].context().local::<u32>(),
            None,
            "locals are per reactor"
        );
    }

    struct SlowDrain {
        drains_left: u32,
        dropped: Rc<Cell<bool>>,
    }

    impl Poller for SlowDrain {
        fn poll(&mut self, _ctx: &mut ReactorContext) -> PollStatus {
            PollStatus::Idle
        }
        fn drain(&mut self, _ctx: &mut ReactorContext) -> bool {
            self.drains_left = self.drains_left.saturating_sub(1);
            self.drains_left == 0
        }
    }

    impl Drop for SlowDrain {
        fn drop(&mut self) {
            self.dropped.set(true);
        }
    }

    #[test]
    fn shutdown_drains_pollers_stepped() {
        let (mut reactors, handle) = two_reactors(4);
        let dropped = Rc::new(Cell::new(false));
        let r = &mut reactors[0];
        r.context().register_poller(
            "slow",
            SlowDrain {
                drains_left: 3,
                dropped: Rc::clone(&dropped),
            },
        );
        r.context().register_timed_poller(
            "timer",
            Duration::from_secs(60),
            |_: &mut ReactorContext| PollStatus::Idle,
        );
        r.run_once();
        r.run_once();
        assert_eq!(r.poller_count(), 2, "no drain before shutdown");
        assert!(!r.is_drained());
        handle.request_shutdown();
        assert!(r.context().is_shutting_down());
        r.run_once();
        assert_eq!(r.poller_count(), 1, "default drain() finishes at once");
        r.run_once();
        assert!(!dropped.get());
        r.run_once();
        assert!(dropped.get());
        assert_eq!(r.poller_count(), 0);
        assert!(r.is_drained());
        assert!(reactors[1].is_drained());
    }

    #[test]
    fn pending_message_blocks_drained() {
        let (mut reactors, handle) = two_reactors(4);
        handle.request_shutdown();
        handle.send(1, |_| {}).unwrap();
        assert!(
            !reactors[0].is_drained(),
            "reactor 1 still has work that might message 0"
        );
        reactors[1].run_once();
        assert!(reactors[0].is_drained() && reactors[1].is_drained());
    }

    fn test_config() -> ReactorConfig {
        ReactorConfig {
            msg_ring_capacity: 64,
            idle_sleep_us: 100,
            interrupt_after_idle_us: None,
            drain_timeout_ms: 1000,
            pin_threads: true,
        }
    }

    /// Two usable CPUs to pin to, or two fake ones without pinning on a 1-CPU machine.
    fn test_mask_and_config() -> (ReactorMask, ReactorConfig) {
        let cpus = crate::topology::affinity_cpus().unwrap();
        if cpus.len() >= 2 {
            (ReactorMask::from_cores(&cpus[..2]).unwrap(), test_config())
        } else {
            let config = ReactorConfig {
                pin_threads: false,
                ..test_config()
            };
            (ReactorMask::from_cores(&[0, 1]).unwrap(), config)
        }
    }

    const PING_PONG_HOPS: u32 = 200;

    fn ping(ctx: &mut ReactorContext, hops: u32, done: Arc<AtomicU32>) {
        if hops == PING_PONG_HOPS {
            done.store(hops, Ordering::SeqCst);
            ctx.handle().request_shutdown();
            return;
        }
        let to = (ctx.id() + 1) % ctx.reactor_count();
        ctx.send(to, move |ctx| ping(ctx, hops + 1, done)).unwrap();
    }

    #[test]
    fn spawned_reactors_ping_pong_then_drain() {
        let (mask, config) = test_mask_and_config();
        let done = Arc::new(AtomicU32::new(0));
        let drained = Arc::new(AtomicU32::new(0));
        let (done2, drained2) = (Arc::clone(&done), Arc::clone(&drained));
        let pinned = config.pin_threads;
        let running = spawn_reactors(&mask, &config, move |ctx| {
            assert_eq!(
                thread::current().name(),
                Some(format!("reactor_{}", ctx.id()).as_str())
            );
            if pinned {
                assert_eq!(crate::topology::affinity_cpus().unwrap(), vec![ctx.core()]);
            }
            let drained = Arc::clone(&drained2);
            let mut drains_left = 3;
            ctx.register_poller(
                "slow_drain",
                PollerFn {
                    drain: move |_: &mut ReactorContext| {
                        drains_left -= 1;
                        if drains_left == 0 {
                            drained.fetch_add(1, Ordering::SeqCst);
                        }
                        drains_left == 0
                    },
                },
            );
            if ctx.id() == 0 {
                ping(ctx, 0, Arc::clone(&done2));
            }
        })
        .unwrap();
        let handle = running.handle().clone();
        running.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), PING_PONG_HOPS);
        assert_eq!(drained.load(Ordering::SeqCst), 2);
        let messages: u64 = (0..2).map(|r| handle.stats(r).messages).sum();
        assert_eq!(messages, u64::from(PING_PONG_HOPS));
        assert!(handle.stats(1).iterations > 0);
        assert_eq!(handle.outstanding(), 0);
    }

    /// A poller that is idle and drains via a closure.
    struct PollerFn<D> {
        drain: D,
    }

    impl<D: FnMut(&mut ReactorContext) -> bool + 'static> Poller for PollerFn<D> {
        fn poll(&mut self, _ctx: &mut ReactorContext) -> PollStatus {
            PollStatus::Idle
        }
        fn drain(&mut self, ctx: &mut ReactorContext) -> bool {
            (self.drain)(ctx)
        }
    }

    #[test]
    fn drain_timeout_drops_stuck_pollers() {
        let config = ReactorConfig {
            drain_timeout_ms: 30,
            pin_threads: false,
            ..test_config()
        };
        let dropped = Arc::new(AtomicU32::new(0));
        let dropped2 = Arc::clone(&dropped);
        let mask = ReactorMask::from_cores(&[0, 1]).unwrap();
        let running = spawn_reactors(&mask, &config, move |ctx| {
            if ctx.id() == 1 {
                struct Stuck(Arc<AtomicU32>);
                impl Poller for Stuck {
                    fn poll(&mut self, _ctx: &mut ReactorContext) -> PollStatus {
                        PollStatus::Idle
                    }
                    fn drain(&mut self, _ctx: &mut ReactorContext) -> bool {
                        false
                    }
                }
                impl Drop for Stuck {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                ctx.register_poller("stuck", Stuck(Arc::clone(&dropped2)));
            }
        })
        .unwrap();
        let start = Instant::now();
        running.handle().request_shutdown();
        running.join().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn reactor_panic_is_reported_and_stops_the_rest() {
        let config = ReactorConfig {
            pin_threads: false,
            ..test_config()
        };
        let mask = ReactorMask::from_cores(&[0, 1]).unwrap();
        let running = spawn_reactors(&mask, &config, |ctx| {
            if ctx.id() == 1 {
                ctx.register_poller("boom", |_: &mut ReactorContext| -> PollStatus {
                    panic!("poller failure (expected by the test)")
                });
            }
        })
        .unwrap();
        assert!(running.join().is_err());
    }

    #[test]
    fn spawn_errors() {
        let mask = ReactorMask::from_cores(&[0]).unwrap();
        let bad = ReactorConfig {
            msg_ring_capacity: 0,
            ..test_config()
        };
        let err = spawn_reactors(&mask, &bad, |_| {}).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let usable = crate::topology::affinity_cpus().unwrap();
        if let Some(absent) = (0..=crate::topology::MAX_CPU_ID)
            .rev()
            .find(|c| !usable.contains(c))
        {
            let init_ran = Arc::new(AtomicBool::new(false));
            let init_ran2 = Arc::clone(&init_ran);
            let mask = ReactorMask::from_cores(&[usable[0], absent]).unwrap();
            let err = spawn_reactors(&mask, &test_config(), move |_| {
                init_ran2.store(true, Ordering::SeqCst)
            })
            .err()
            .expect("pinning to an unusable CPU must fail");
            assert!(err.to_string().contains(&format!("core {absent}")), "{err}");
            assert!(
                !init_ran.load(Ordering::SeqCst),
                "no init after a failed start"
            );
        }
    }

    #[test]
    fn dropping_running_reactors_stops_them() {
        let config = ReactorConfig {
            pin_threads: false,
            ..test_config()
        };
        let running =
            spawn_reactors(&ReactorMask::from_cores(&[0]).unwrap(), &config, |_| {}).unwrap();
        let handle = running.handle().clone();
        drop(running);
        assert!(handle.is_shutting_down());
        assert!(handle.stats(0).iterations > 0);
    }

    /// A poller that can arm its wake-up (or not) and counts the calls.
    struct Armable {
        arms: bool,
        watched: Option<Rc<WakeFd>>,
        armed: Rc<Cell<u32>>,
        woke: Rc<Cell<u32>>,
    }

    impl Poller for Armable {
        fn poll(&mut self, _ctx: &mut ReactorContext) -> PollStatus {
            PollStatus::Idle
        }
        fn arm_wakeup(&mut self, _ctx: &mut ReactorContext) -> bool {
            self.armed.set(self.armed.get() + 1);
            self.arms
        }
        fn woke(&mut self, _ctx: &mut ReactorContext) {
            self.woke.set(self.woke.get() + 1);
            if let Some(fd) = &self.watched {
                fd.clear();
            }
        }
    }

    fn interrupt_reactor(arms: &[bool]) -> (Reactor, Rc<Cell<u32>>, Rc<Cell<u32>>) {
        let config = ReactorConfig {
            interrupt_after_idle_us: Some(0),
            ..ReactorConfig::default()
        };
        let (mut reactors, _) = create_reactors(&ReactorMask::from_cores(&[0]).unwrap(), &config);
        let mut reactor = reactors.pop().unwrap();
        let (armed, woke) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        for &arms in arms {
            let poller = Armable {
                arms,
                watched: None,
                armed: armed.clone(),
                woke: woke.clone(),
            };
            reactor.context().register_poller("armable", poller);
        }
        reactor.run_once(); // applies the registrations
        (reactor, armed, woke)
    }

    #[test]
    fn a_reactor_blocks_only_when_every_poller_armed_and_no_message_waits() {
        let (mut reactor, armed, woke) = interrupt_reactor(&[true, false]);
        assert!(reactor.context().interrupt_mode());
        assert!(!reactor.sleep_until_woken(), "the second poller cannot arm");
        assert_eq!((armed.get(), woke.get(), reactor.stats().sleeps), (2, 0, 0));

        let (mut reactor, armed, woke) = interrupt_reactor(&[true, true]);
        reactor.context().send(0, |_| {}).unwrap();
        assert!(!reactor.sleep_until_woken(), "a queued message is work");
        assert_eq!(
            armed.get(),
            0,
            "nobody is asked to arm while a message waits"
        );
        reactor.run_once();
        assert!(reactor.sleep_until_woken());
        assert_eq!((armed.get(), woke.get(), reactor.stats().sleeps), (2, 2, 1));
    }

    #[test]
    fn a_readable_watched_fd_ends_the_block_at_once() {
        let (mut reactor, _, woke) = interrupt_reactor(&[]);
        let fd = Rc::new(WakeFd::new().unwrap());
        reactor.context().watch_fd(fd.raw()).unwrap();
        let poller = Armable {
            arms: true,
            watched: Some(fd.clone()),
            armed: Rc::new(Cell::new(0)),
            woke: woke.clone(),
        };
        reactor.context().register_poller("watcher", poller);
        reactor.run_once();
        fd.ring();
        reactor.idle_since = Some(Instant::now());
        let start = Instant::now();
        assert!(reactor.sleep_until_woken());
        assert!(
            reactor.idle_since.is_none(),
            "woken by work: spin again first"
        );
        assert!(
            start.elapsed() < INTERRUPT_MAX_SLEEP / 2,
            "woken by the fd, not the timeout: {:?}",
            start.elapsed()
        );
        assert_eq!(woke.get(), 1);
        reactor.context().unwatch_fd(fd.raw());
    }

    #[test]
    fn a_timed_poller_bounds_the_block() {
        let (mut reactor, _, _) = interrupt_reactor(&[true]);
        reactor.context().register_timed_poller(
            "tick",
            Duration::from_millis(2),
            |_: &mut ReactorContext| PollStatus::Idle,
        );
        reactor.run_once();
        reactor.idle_since = Some(Instant::now());
        let start = Instant::now();
        assert!(reactor.sleep_until_woken());
        // Due in 2 ms, well before INTERRUPT_MAX_SLEEP; rounding adds at most 1 ms.
        assert!(
            start.elapsed() < INTERRUPT_MAX_SLEEP,
            "{:?}",
            start.elapsed()
        );
        assert!(
            reactor.idle_since.is_some(),
            "woken by the clock, not by work: sleep again without spinning first"
        );
    }

    #[test]
    fn a_message_wakes_a_sleeping_reactor_thread() {
        let (mask, config) = test_mask_and_config();
        let config = ReactorConfig {
            idle_sleep_us: 0,
            interrupt_after_idle_us: Some(0),
            ..config
        };
        let running = spawn_reactors(&mask, &config, |ctx| {
            let poller = Armable {
                arms: true,
                watched: None,
                armed: Rc::new(Cell::new(0)),
                woke: Rc::new(Cell::new(0)),
            };
            ctx.register_poller("armable", poller);
        })
        .unwrap();
        let handle = running.handle().clone();
        let mut round_trips = Vec::new();
        for _ in 0..9 {
            // Let reactor 1 fall asleep, then time a message to it and back.
            let sleeps = handle.stats(1).sleeps;
            while handle.stats(1).sleeps == sleeps {
                thread::sleep(Duration::from_micros(200));
            }
            let (tx, rx) = mpsc::channel();
            let start = Instant::now();
            handle.send(1, move |_| tx.send(()).unwrap()).unwrap();
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            round_trips.push(start.elapsed());
        }
        round_trips.sort();
        // A reactor that only woke at its timeout would take up to INTERRUPT_MAX_SLEEP.
        assert!(
            round_trips[4] < INTERRUPT_MAX_SLEEP / 4,
            "median wake-up {:?}",
            round_trips[4]
        );
        handle.request_shutdown();
        running.join().unwrap();
    }
}
