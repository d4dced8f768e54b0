//! The controller's admin side as one state machine that pollers advance: admin commands are
//! submitted and reaped later, Abort is one of them, and a controller reset is a sequence of
//! steps. Nothing here sleeps. Code on a control path (start-up, channel open and close)
//! waits with `settle` and `run_command`; reactors only call `advance`, through `try_lock`.
//!
//! A reset, as states:
//! ```text
//! Idle ─(a channel asks: ResetSignal.seq goes odd)─► Quiescing
//! Quiescing ─(no I/O queue is inside its gate)─► Restarting
//! Restarting ─(init.rs: disable, configure, enable; one register check per tick)─►
//!   RequestingQueues ─(Set Features Number of Queues)─►
//!   CreatingQueue (Create I/O CQ, then SQ, for each registered queue in turn) ─► Idle
//! any step failing ─► Idle, with the queues not created again (their channels fail I/O)
//! ```
//! `ResetSignal.seq` is even while no reset runs and odd while one does; each reset adds 2.
//!
//! No lock on the I/O path keeps a reactor from ringing a doorbell the reset has deleted:
//! every doorbell write of an I/O queue happens inside its `QueueGate` (a flag stored, then
//! `seq` read, both SeqCst). The reset makes `seq` odd first and goes on only when it has
//! seen every gate clear: a queue seen clear after that rings nothing until the reset ends,
//! since its next entry reads the odd `seq` and backs off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_spec::opcode::admin;
use nvme_spec::{features, Cqe, Sqe};

use crate::error::ControllerError;
use crate::init::{AdminQueues, ControllerInit, InitState, Progress};
use crate::mmio::Mmio;
use crate::prp;
use crate::queue::{QueuePair, SubmitError};
use crate::regs::MEMORY_PAGE_BYTES;

/// Admin queue depth (entries): start-up, queue creation and aborts need only a few slots.
pub const ADMIN_QUEUE_ENTRIES: u16 = 32;
/// How long one admin command may take before the controller is declared unresponsive.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between checks while a control-path caller waits (never a reactor's poll).
const CONTROL_PATH_POLL_INTERVAL: Duration = Duration::from_micros(50);

/// The controller's reset sequence, read lock-free by every channel.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ResetSignal {
    /// Even: no reset runs. Odd: a reset was asked for or runs. +2 per reset.
    seq: AtomicU64,
    /// The odd `seq` of the last reset that saw the controller stopped (CSTS.RDY = 0): the
    /// device no longer touches the memory of commands it held.
    stopped_seq: AtomicU64,
    /// Admin commands are in flight (aborts): pollers should reap them.
    admin_work: AtomicBool,
}

impl ResetSignal {
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether `seq` is that of a reset under way.
    pub fn resetting(seq: u64) -> bool {
        seq % 2 == 1
    }

    /// Asks for a reset of the controller as it was at `seen_seq` (even). False when a
    /// reset was asked for or done since: that one serves the caller too.
    pub fn request_reset(&self, seen_seq: u64) -> bool {
        debug_assert!(!Self::resetting(seen_seq));
        self.seq
            .compare_exchange(seen_seq, seen_seq + 1, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the reset that ended at `seq` (even) stopped the controller first, so that
    /// buffers of commands it held may be reused.
    pub fn stopped_before(&self, seq: u64) -> bool {
        self.stopped_seq.load(Ordering::Acquire) == seq.wrapping_sub(1)
    }

    /// What `AdminMachine` does at the end of a reset, for tests of the channels: the
    /// reset stopped the controller or not, and created `gates` again.
    #[cfg(test)]
    pub(crate) fn end_reset_as_if(&self, stopped: bool, gates: &[&QueueGate]) {
        let seq = self.seq();
        assert!(Self::resetting(seq));
        if stopped {
            self.stopped_seq.store(seq, Ordering::Release);
        }
        for gate in gates {
            gate.created_seq.store(seq + 1, Ordering::Release);
        }
        self.seq.store(seq + 1, Ordering::Release);
    }

    /// Whether the admin side has something for a poller to do.
    pub fn has_admin_work(&self) -> bool {
        Self::resetting(self.seq()) || self.admin_work.load(Ordering::Relaxed)
    }
}

/// The gate an I/O queue's doorbell writes go through (see the module comment).
#[derive(Debug)]
#[repr(align(128))]
pub struct QueueGate {
    qid: u16,
    in_mmio: AtomicBool,
    /// The `seq` in which the queue was last created on the controller.
    created_seq: AtomicU64,
}

impl QueueGate {
    pub(crate) fn new(qid: u16, created_seq: u64) -> QueueGate {
        QueueGate {
            qid,
            in_mmio: AtomicBool::new(false),
            created_seq: AtomicU64::new(created_seq),
        }
    }

    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// The `seq` in which the controller last created this queue.
    pub fn created_seq(&self) -> u64 {
        self.created_seq.load(Ordering::Acquire)
    }

    /// Opens the gate for register writes of a queue that exists as of `known_seq`; None
    /// (and nothing may be written) when `seq` has moved since.
    pub fn enter<'a>(&'a self, signal: &ResetSignal, known_seq: u64) -> Option<GateOpen<'a>> {
        self.in_mmio.store(true, Ordering::SeqCst);
        if signal.seq.load(Ordering::SeqCst) == known_seq {
            Some(GateOpen(self))
        } else {
            self.in_mmio.store(false, Ordering::Release);
            None
        }
    }

    pub(crate) fn is_clear(&self) -> bool {
        !self.in_mmio.load(Ordering::SeqCst)
    }
}

/// Register writes are allowed while this lives.
#[derive(Debug)]
pub struct GateOpen<'a>(&'a QueueGate);

impl Drop for GateOpen<'_> {
    fn drop(&mut self) {
        self.0.in_mmio.store(false, Ordering::Release);
    }
}

/// Who waits for an admin command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A control-path caller in `run_command`.
    Caller,
    /// Its caller gave up; a late completion is dropped.
    Abandoned,
    /// An Abort of (queue, command); its answer is logged.
    Abort { qid: u16, cid: u16 },
    /// A step of the reset.
    Reset,
}

#[derive(Debug)]
struct AdminCommand {
    name: &'static str,
    purpose: Purpose,
    deadline_ms: u64,
    done: Option<Cqe>,
}

/// An I/O queue the controller must create again after a reset.
#[derive(Debug)]
struct QueueRecord {
    qid: u16,
    entries: u16,
    sq_iova: u64,
    cq_iova: u64,
    gate: Arc<QueueGate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueHalf {
    Completion,
    Submission,
}

/// Where a reset stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResetState {
    Idle,
    /// Waiting until no I/O queue is inside its gate.
    Quiescing,
    /// The bring-up machine disables and enables the controller.
    Restarting,
    /// Set Features Number of Queues is out.
    RequestingQueues {
        cid: u16,
    },
    /// Creating registered queue `index` again: its CQ, then its SQ.
    CreatingQueue {
        index: usize,
        half: QueueHalf,
        cid: u16,
    },
}

/// The admin queue, the commands on it, the registered I/O queues and the reset machine.
#[derive(Debug)]
pub struct AdminMachine<M: Mmio + Clone> {
    bdf: String,
    signal: Arc<ResetSignal>,
    init: ControllerInit<M>,
    admin_queues: AdminQueues,
    queue: QueuePair<M>,
    /// By command id.
    commands: Vec<Option<AdminCommand>>,
    io_queues: Vec<QueueRecord>,
    reset: ResetState,
    /// I/O queue pairs to ask for again after a reset.
    io_queue_pairs: u16,
    clock_origin: Instant,
}

impl<M: Mmio + Clone> AdminMachine<M> {
    /// The admin side of a controller that `init` brought up, with its admin `queue`.
    pub fn new(
        bdf: &str,
        init: ControllerInit<M>,
        admin_queues: AdminQueues,
        queue: QueuePair<M>,
    ) -> AdminMachine<M> {
        assert_eq!(init.state(), InitState::Ready, "the controller is up");
        let cids = usize::from(queue.entries() - 1);
        AdminMachine {
            bdf: bdf.to_string(),
            signal: Arc::new(ResetSignal::default()),
            init,
            admin_queues,
            queue,
            commands: (0..cids).map(|_| None).collect(),
            io_queues: Vec::new(),
            reset: ResetState::Idle,
            io_queue_pairs: 0,
            clock_origin: Instant::now(),
        }
    }

    pub fn signal(&self) -> &Arc<ResetSignal> {
        &self.signal
    }

    pub fn init(&mut self) -> &mut ControllerInit<M> {
        &mut self.init
    }

    /// The admin queue (tests read the commands in its memory).
    pub fn queue(&self) -> &QueuePair<M> {
        &self.queue
    }

    /// After a reset, ask for this many I/O queue pairs again.
    pub fn set_io_queue_pairs(&mut self, pairs: u16) {
        self.io_queue_pairs = pairs;
    }

    fn now_ms(&self) -> u64 {
        self.clock_origin.elapsed().as_millis() as u64
    }

    fn submit(
        &mut self,
        name: &'static str,
        sqe: &Sqe,
        data: Option<(u64, u64)>,
        purpose: Purpose,
        now_ms: u64,
    ) -> Result<u16, SubmitError> {
        let cid = match data {
            Some((iova, len)) => self.queue.submit_with_prps(sqe, iova, len)?,
            None => self.queue.submit(sqe)?,
        };
        self.queue.flush();
        let slot = &mut self.commands[usize::from(cid)];
        debug_assert!(slot.is_none(), "admin command id {cid} handed out twice");
        *slot = Some(AdminCommand {
            name,
            purpose,
            deadline_ms: now_ms + ADMIN_TIMEOUT.as_millis() as u64,
            done: None,
        });
        Ok(cid)
    }

    /// Waits (control path only) until no reset is asked for or under way; returns the
    /// (even) `seq` then. Every wait in the reset has its own deadline, so this ends.
    pub fn settle(&mut self) -> Result<u64, ControllerError> {
        // The reset's deadlines end it; this cap only guards against a bug in them.
        let max_checks = 4
            * (self.init.ready_timeout_ms() + ADMIN_TIMEOUT.as_millis() as u64)
            * (2 + 2 * self.io_queues.len() as u64)
            * 20;
        for _ in 0..max_checks {
            let seq = self.signal.seq();
            if self.reset == ResetState::Idle && !ResetSignal::resetting(seq) {
                return Ok(seq);
            }
            self.advance();
            std::thread::sleep(CONTROL_PATH_POLL_INTERVAL);
        }
        Err(ControllerError::Unsupported {
            bdf: self.bdf.clone(),
            what: format!("a controller reset did not end (state {:?})", self.reset),
        })
    }

    /// Runs one admin command to completion (control path only). A reset asked for
    /// meanwhile waits until it is done; callers `settle` first so none is under way.
    pub fn run_command(
        &mut self,
        name: &'static str,
        sqe: Sqe,
        data: Option<(u64, u64)>,
    ) -> Result<Cqe, ControllerError> {
        assert_eq!(self.reset, ResetState::Idle, "settle before admin commands");
        let start_ms = self.now_ms();
        let cid = self
            .submit(name, &sqe, data, Purpose::Caller, start_ms)
            .map_err(|e| ControllerError::Unsupported {
                bdf: self.bdf.clone(),
                what: format!("admin command {name}: {e}"),
            })?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            // Reap only: a reset asked for now must not start under this caller's command.
            self.reap();
            let slot = &mut self.commands[usize::from(cid)];
            if slot.as_ref().is_some_and(|c| c.done.is_some()) {
                let cqe = slot.take().and_then(|c| c.done).expect("checked above");
                self.note_admin_work();
                return self.check_status(name, cqe);
            }
            if Instant::now() >= deadline {
                // The controller may answer later: the id stays taken until it does.
                slot.as_mut().expect("still in flight").purpose = Purpose::Abandoned;
                return Err(ControllerError::AdminTimeout {
                    bdf: self.bdf.clone(),
                    command: name,
                });
            }
            std::thread::sleep(CONTROL_PATH_POLL_INTERVAL);
        }
    }

    fn check_status(&self, name: &'static str, cqe: Cqe) -> Result<Cqe, ControllerError> {
        let status = cqe.status();
        if status.is_success() {
            return Ok(cqe);
        }
        Err(ControllerError::AdminFailed {
            bdf: self.bdf.clone(),
            command: name,
            status: format!(
                "{} (status field {:#06x})",
                status.name(),
                status.to_field()
            ),
        })
    }

    /// Submits an Abort for command `cid` of I/O queue `qid`; its answer is reaped (and
    /// logged) by a later `advance`. False when it cannot go now: a reset is asked for or
    /// under way (and will drop the command anyway), or the admin queue is full.
    pub fn abort(&mut self, qid: u16, cid: u16) -> bool {
        if self.reset != ResetState::Idle || ResetSignal::resetting(self.signal.seq()) {
            return false;
        }
        let mut sqe = Sqe::new(admin::ABORT, 0);
        sqe.cdw10 = ((u32::from(cid) << 16) | u32::from(qid)).into();
        let now_ms = self.now_ms();
        let submitted = self.submit("Abort", &sqe, None, Purpose::Abort { qid, cid }, now_ms);
        self.note_admin_work();
        submitted.is_ok()
    }

    /// Registers I/O queue `queue`, just created on the controller in `seq`, so that resets
    /// create it again; its channel's register writes go through the gate returned.
    pub fn register_queue(&mut self, queue: &QueuePair<M>, seq: u64) -> Arc<QueueGate> {
        assert!(!ResetSignal::resetting(seq));
        assert!(
            self.io_queues.iter().all(|q| q.qid != queue.qid()),
            "queue {} registered twice",
            queue.qid()
        );
        let gate = Arc::new(QueueGate::new(queue.qid(), seq));
        self.io_queues.push(QueueRecord {
            qid: queue.qid(),
            entries: queue.entries(),
            sq_iova: queue.sq_iova(),
            cq_iova: queue.cq_iova(),
            gate: gate.clone(),
        });
        gate
    }

    /// Forgets I/O queue `qid` (being deleted). Settle first: no reset may be creating it.
    pub fn unregister_queue(&mut self, qid: u16) {
        assert_eq!(
            self.reset,
            ResetState::Idle,
            "settle before deleting queues"
        );
        self.io_queues.retain(|q| q.qid != qid);
    }

    /// Reaps admin completions and moves a reset on by at most one step. Never waits.
    pub fn advance(&mut self) {
        let now_ms = self.now_ms();
        self.advance_at(now_ms);
    }

    /// `advance` at time `now_ms` of the machine's clock (tests step it by hand).
    pub(crate) fn advance_at(&mut self, now_ms: u64) {
        if self.reset != ResetState::Restarting {
            self.reap();
        }
        self.expire(now_ms);
        self.step_reset(now_ms);
        self.note_admin_work();
    }

    /// Takes every completion on the admin CQ to whoever waits for it.
    fn reap(&mut self) {
        let bdf = &self.bdf;
        let commands = &mut self.commands;
        self.queue.poll(usize::from(ADMIN_QUEUE_ENTRIES), |cqe| {
            let slot = &mut commands[usize::from(cqe.cid())];
            let Some(command) = slot.as_mut() else {
                return; // the queue hands over only ids in flight
            };
            match command.purpose {
                Purpose::Caller | Purpose::Reset => command.done = Some(*cqe),
                Purpose::Abandoned => *slot = None,
                Purpose::Abort { qid, cid } => {
                    // dw0 bit 0 clear: the command was aborted (it completes as such). The
                    // channel logs each tick's aborts; only a failed Abort adds a line.
                    let status = cqe.status();
                    if !status.is_success() {
                        log::warn!(
                            "{bdf}: abort of command {cid} on queue {qid} failed: {}",
                            status.name()
                        );
                    } else {
                        log::debug!(
                            "{bdf}: abort of command {cid} on queue {qid}: {}",
                            if cqe.dw0() & 1 == 0 {
                                "aborted"
                            } else {
                                "not aborted"
                            }
                        );
                    }
                    *slot = None;
                }
            }
        });
    }

    /// Aborts that got no answer in time are given up (a stuck command then leads to a
    /// reset); a reset step that got none fails the reset.
    fn expire(&mut self, now_ms: u64) {
        let mut reset_step_timed_out = None;
        for command in self.commands.iter_mut().flatten() {
            if command.done.is_some() || now_ms < command.deadline_ms {
                continue;
            }
            match command.purpose {
                Purpose::Abort { qid, cid } => {
                    log::error!(
                        "{}: abort of command {cid} on queue {qid} got no answer in {} s",
                        self.bdf,
                        ADMIN_TIMEOUT.as_secs()
                    );
                    command.purpose = Purpose::Abandoned;
                }
                Purpose::Reset => reset_step_timed_out = Some(command.name),
                Purpose::Caller | Purpose::Abandoned => {}
            }
        }
        if let Some(command) = reset_step_timed_out {
            let e = ControllerError::AdminTimeout {
                bdf: self.bdf.clone(),
                command,
            };
            self.fail_reset(&e.to_string());
        }
    }

    fn note_admin_work(&self) {
        let busy = self.reset != ResetState::Idle || self.commands.iter().any(Option::is_some);
        self.signal.admin_work.store(busy, Ordering::Relaxed);
    }

    /// The completion of reset step `cid`, once it came.
    fn take_reset_step(&mut self, cid: u16) -> Option<Cqe> {
        let slot = &mut self.commands[usize::from(cid)];
        slot.as_ref()?.done?;
        slot.take().and_then(|c| c.done)
    }

    fn submit_reset_step(&mut self, name: &'static str, sqe: &Sqe, now_ms: u64) -> u16 {
        self.submit(name, sqe, None, Purpose::Reset, now_ms)
            .expect("the admin queue is empty after a reset, and takes one command at a time")
    }

    fn step_reset(&mut self, now_ms: u64) {
        match self.reset {
            ResetState::Idle => {
                if ResetSignal::resetting(self.signal.seq()) {
                    log::warn!("{}: resetting the controller", self.bdf);
                    self.reset = ResetState::Quiescing;
                    self.step_reset(now_ms);
                }
            }
            ResetState::Quiescing => {
                if !self.io_queues.iter().all(|q| q.gate.is_clear()) {
                    return; // a reactor is writing a doorbell right now: next tick
                }
                // The disable drops every command; nobody waits for these any more.
                self.commands.iter_mut().for_each(|c| *c = None);
                match ControllerInit::new(self.init.mmio().clone(), self.admin_queues) {
                    Ok(init) => {
                        self.init = init;
                        self.reset = ResetState::Restarting;
                    }
                    Err(e) => self.fail_reset(&e.to_string()),
                }
            }
            ResetState::Restarting => {
                let progress = self.init.poll(now_ms);
                if matches!(
                    self.init.state(),
                    InitState::Configuring | InitState::Enabling { .. } | InitState::Ready
                ) {
                    // The controller was seen disabled: it has let go of every command.
                    let seq = self.signal.seq();
                    self.signal.stopped_seq.store(seq, Ordering::Release);
                }
                match progress {
                    Ok(Progress::Pending) => {}
                    Ok(Progress::Done) => {
                        // The controller writes no completion before it gets a command.
                        self.queue.reset();
                        let sqe = number_of_queues_command(self.io_queue_pairs.max(1));
                        let cid =
                            self.submit_reset_step("Set Features (Number of Queues)", &sqe, now_ms);
                        self.reset = ResetState::RequestingQueues { cid };
                    }
                    Err(e) => self.fail_reset(&e.to_string()),
                }
            }
            ResetState::RequestingQueues { cid } => {
                let Some(cqe) = self.take_reset_step(cid) else {
                    return;
                };
                let granted = granted_queue_pairs(cqe.dw0());
                if let Err(e) = self.check_status("Set Features (Number of Queues)", cqe) {
                    self.fail_reset(&e.to_string());
                } else if granted < self.io_queue_pairs {
                    self.fail_reset(&format!(
                        "the controller now grants {granted} I/O queue pair(s), down from {}",
                        self.io_queue_pairs
                    ));
                } else {
                    self.create_queue_again(0, now_ms);
                }
            }
            ResetState::CreatingQueue { index, half, cid } => {
                let Some(cqe) = self.take_reset_step(cid) else {
                    return;
                };
                let (qid, entries, sq_iova) = {
                    let record = &self.io_queues[index];
                    (record.qid, record.entries, record.sq_iova)
                };
                let name = match half {
                    QueueHalf::Completion => "Create I/O Completion Queue",
                    QueueHalf::Submission => "Create I/O Submission Queue",
                };
                if let Err(e) = self.check_status(name, cqe) {
                    // Its channel sees the queue missing and fails its I/O.
                    log::error!(
                        "{e}; queue {} is not created again: its reactor's I/O to this \
                         controller fails until a later reset",
                        qid
                    );
                    self.create_queue_again(index + 1, now_ms);
                    return;
                }
                match half {
                    QueueHalf::Completion => {
                        let mut sqe = create_io_sq_command(qid, entries);
                        contiguous_queue_base(sq_iova).apply(&mut sqe);
                        let cid = self.submit_reset_step(name, &sqe, now_ms);
                        self.reset = ResetState::CreatingQueue {
                            index,
                            half: QueueHalf::Submission,
                            cid,
                        };
                    }
                    QueueHalf::Submission => {
                        let done_seq = self.signal.seq() + 1;
                        self.io_queues[index]
                            .gate
                            .created_seq
                            .store(done_seq, Ordering::Release);
                        self.create_queue_again(index + 1, now_ms);
                    }
                }
            }
        }
    }

    /// Creates registered queue `index` again (its CQ first), or ends the reset when none
    /// is left.
    fn create_queue_again(&mut self, index: usize, now_ms: u64) {
        let Some(record) = self.io_queues.get(index) else {
            self.end_reset();
            log::warn!(
                "{}: controller reset done; {} I/O queue(s) created again",
                self.bdf,
                self.io_queues.len()
            );
            return;
        };
        let mut sqe = create_io_cq_command(record.qid, record.entries);
        contiguous_queue_base(record.cq_iova).apply(&mut sqe);
        let cid = self.submit_reset_step("Create I/O Completion Queue", &sqe, now_ms);
        self.reset = ResetState::CreatingQueue {
            index,
            half: QueueHalf::Completion,
            cid,
        };
    }

    fn fail_reset(&mut self, why: &str) {
        log::error!(
            "{}: controller reset failed: {why}; I/O to this controller fails until a later \
             reset succeeds (check the device, then restart the target)",
            self.bdf
        );
        self.end_reset();
    }

    fn end_reset(&mut self) {
        let seq = self.signal.seq();
        debug_assert!(ResetSignal::resetting(seq));
        self.reset = ResetState::Idle;
        self.signal.seq.store(seq + 1, Ordering::Release);
    }
}

/// Create I/O Completion Queue: physically contiguous, interrupts off (polled).
pub(crate) fn create_io_cq_command(qid: u16, entries: u16) -> Sqe {
    let mut sqe = Sqe::new(admin::CREATE_IO_CQ, 0);
    sqe.cdw10 = ((u32::from(entries - 1) << 16) | u32::from(qid)).into();
    sqe.cdw11 = 1.into(); // PC = 1, IEN = 0
    sqe
}

/// Create I/O Submission Queue bound to the completion queue of the same id.
pub(crate) fn create_io_sq_command(qid: u16, entries: u16) -> Sqe {
    let mut sqe = Sqe::new(admin::CREATE_IO_SQ, 0);
    sqe.cdw10 = ((u32::from(entries - 1) << 16) | u32::from(qid)).into();
    sqe.cdw11 = ((u32::from(qid) << 16) | 1).into(); // CQID, PC = 1
    sqe
}

/// The data pointer of a Create I/O SQ/CQ command for a contiguous queue at `iova`.
pub(crate) fn contiguous_queue_base(iova: u64) -> prp::Prps {
    assert_eq!(iova % MEMORY_PAGE_BYTES as u64, 0, "queues start on a page");
    prp::Prps {
        prp1: iova,
        prp2: 0,
    }
}

/// Set Features Number of Queues: `count` submission and completion queues (1-based).
pub(crate) fn number_of_queues_command(count: u16) -> Sqe {
    let mut sqe = Sqe::new(admin::SET_FEATURES, 0);
    sqe.cdw10 = u32::from(features::NUMBER_OF_QUEUES).into();
    let zero_based = u32::from(count - 1);
    sqe.cdw11 = ((zero_based << 16) | zero_based).into();
    sqe
}

/// The I/O queue pairs granted (1-based), from Set Features Number of Queues' dword 0.
pub(crate) fn granted_queue_pairs(dw0: u32) -> u16 {
    let sq = (dw0 & 0xFFFF) as u16;
    let cq = (dw0 >> 16) as u16;
    sq.min(cq).saturating_add(1)
}

#[cfg(test)]
mod tests;
