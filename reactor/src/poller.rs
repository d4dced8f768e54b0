//! Pollers: the unit of work a reactor runs on every loop iteration (or on a period).

use crate::reactor::ReactorContext;

/// What a poll found: `Busy` if it did work, `Idle` if there was nothing to do.
/// Drives busy/idle accounting and the optional idle sleep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PollStatus {
    /// Work was done.
    Busy,
    /// Nothing to do.
    Idle,
}

impl PollStatus {
    /// `Busy` if `did_work`, else `Idle`.
    pub fn from_work(did_work: bool) -> PollStatus {
        if did_work {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// A non-blocking unit of work owned by one reactor. Pollers run on the reactor's thread only,
/// so they need not be `Send` (they may hold `Rc`s).
pub trait Poller: 'static {
    /// Does one bounded, non-blocking slice of work.
    fn poll(&mut self, ctx: &mut ReactorContext) -> PollStatus;

    /// Called each loop iteration once shutdown has been requested (after poll). Return true
    /// when drained; the reactor then unregisters and drops it. Default: true.
    fn drain(&mut self, _ctx: &mut ReactorContext) -> bool {
        true
    }

    /// Interrupt mode: the reactor has been idle and wants to block. Arm whatever makes an fd
    /// this poller watches ([`ReactorContext::watch_fd`]) readable when work arrives, then look
    /// once more for work that raced the arming. Return true only if armed and idle: every way
    /// work can reach this poller will now wake the reactor (a watched fd, a message, or the
    /// reactor's bounded sleep). Default: false, so a poller that can only be polled keeps its
    /// reactor spinning.
    fn arm_wakeup(&mut self, _ctx: &mut ReactorContext) -> bool {
        false
    }

    /// Interrupt mode: the reactor woke from a block. Consume the events of watched fds, so a
    /// level-triggered fd does not wake it again. Default: nothing.
    fn woke(&mut self, _ctx: &mut ReactorContext) {}
}

impl<F: FnMut(&mut ReactorContext) -> PollStatus + 'static> Poller for F {
    fn poll(&mut self, ctx: &mut ReactorContext) -> PollStatus {
        self(ctx)
    }
}

/// Identifies a registered poller; only meaningful to the reactor that issued it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct PollerId {
    pub(crate) reactor: usize,
    pub(crate) seq: u64,
}

impl PollerId {
    /// Id of the reactor the poller runs on.
    pub fn reactor(&self) -> usize {
        self.reactor
    }
}
