//! The RDMA request state machine (one per request slot of a queue).
//!
//! ```text
//! Free ──capsule──▶ NeedBuffer ──buffer──▶ NeedReadCredit ──credit──▶ ReadingFromHost
//!                       │                        │ (no host data)          │ READ done
//!                       ▼                        ▼                         ▼
//!                  (no data) ────────────▶ ReadyToExecute ◀────────────────┘
//!                                                │ lent to the target
//!                                                ▼
//!                                            Executing ──complete()──▶ Completing ──SEND done──▶ Free
//! ```
//! Requests waiting for a buffer or a read credit wait in arrival order.
//! This file is pure bookkeeping so it can be tested without a NIC.

use std::collections::VecDeque;

use nvmf::transport::DataPlan;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Free,
    /// Capsule received; a data buffer is needed before anything else.
    NeedBuffer,
    /// Host data must be read, but the RDMA READ depth is used up.
    NeedReadCredit,
    /// RDMA READ posted.
    ReadingFromHost,
    /// Waiting to be reported to the target.
    ReadyToExecute,
    /// Lent to the target.
    Executing,
    /// Response (and any RDMA WRITE) posted; waiting for the SEND completion.
    Completing,
}

/// Per-queue request bookkeeping: slot states, free list, ordered waits.
pub struct RequestTable {
    states: Vec<RequestState>,
    free: Vec<u16>,
    need_buffer: VecDeque<u16>,
    need_read_credit: VecDeque<u16>,
    ready: VecDeque<u16>,
    /// RDMA READs the queue may have in flight (host's ORD/IRD, device limit).
    read_credits: u16,
    reads_in_flight: u16,
}

impl RequestTable {
    pub fn new(depth: u16, read_credits: u16) -> RequestTable {
        assert!(depth > 0 && read_credits > 0);
        let n = usize::from(depth);
        RequestTable {
            states: vec![RequestState::Free; n],
            free: (0..depth).rev().collect(),
            need_buffer: VecDeque::with_capacity(n),
            need_read_credit: VecDeque::with_capacity(n),
            ready: VecDeque::with_capacity(n),
            read_credits,
            reads_in_flight: 0,
        }
    }

    pub fn state(&self, slot: u16) -> RequestState {
        self.states[usize::from(slot)]
    }

    fn set(&mut self, slot: u16, from: RequestState, to: RequestState) {
        let s = &mut self.states[usize::from(slot)];
        assert_eq!(
            *s, from,
            "request {slot}: {from:?} -> {to:?} from the wrong state"
        );
        *s = to;
    }

    /// A capsule arrived: takes a free slot (None when the host overran the queue).
    pub fn receive(&mut self) -> Option<u16> {
        let slot = self.free.pop()?;
        self.set(slot, RequestState::Free, RequestState::NeedBuffer);
        self.need_buffer.push_back(slot);
        Some(slot)
    }

    /// The oldest request waiting for a buffer.
    pub fn next_needing_buffer(&self) -> Option<u16> {
        self.need_buffer.front().copied()
    }

    /// The oldest waiting request got its buffer (or needs none); `plan`
    /// says whether host data must be read first.
    pub fn buffer_ready(&mut self, plan: &DataPlan) {
        let slot = self
            .need_buffer
            .pop_front()
            .expect("a request waits for a buffer");
        let reads_host = matches!(
            plan,
            DataPlan::Keyed {
                xfer: nvmf::transport::Xfer::HostToController,
                ..
            }
        );
        if reads_host {
            self.set(slot, RequestState::NeedBuffer, RequestState::NeedReadCredit);
            self.need_read_credit.push_back(slot);
        } else {
            self.set(slot, RequestState::NeedBuffer, RequestState::ReadyToExecute);
            self.ready.push_back(slot);
        }
    }

    /// The oldest request that may post its RDMA READ now.
    pub fn take_read_credit(&mut self) -> Option<u16> {
        if self.reads_in_flight == self.read_credits {
            return None;
        }
        let slot = self.need_read_credit.pop_front()?;
        self.set(
            slot,
            RequestState::NeedReadCredit,
            RequestState::ReadingFromHost,
        );
        self.reads_in_flight += 1;
        Some(slot)
    }

    pub fn read_done(&mut self, slot: u16) {
        self.set(
            slot,
            RequestState::ReadingFromHost,
            RequestState::ReadyToExecute,
        );
        self.reads_in_flight -= 1;
        self.ready.push_back(slot);
    }

    /// The next request to report to the target.
    pub fn take_ready(&mut self) -> Option<u16> {
        let slot = self.ready.pop_front()?;
        self.set(slot, RequestState::ReadyToExecute, RequestState::Executing);
        Some(slot)
    }

    pub fn completing(&mut self, slot: u16) {
        self.set(slot, RequestState::Executing, RequestState::Completing);
    }

    /// SEND completed (or the target finished a request on a dead queue).
    pub fn free(&mut self, slot: u16) {
        let s = self.state(slot);
        assert!(
            matches!(s, RequestState::Completing | RequestState::Executing),
            "request {slot} freed in state {s:?}"
        );
        self.states[usize::from(slot)] = RequestState::Free;
        self.free.push(slot);
    }

    /// The queue died: forget everything the target does not hold. Returns
    /// the slots that were reading (their READs are flushed by the NIC).
    pub fn abandon_waiting(&mut self) -> usize {
        let mut dropped = 0;
        let waiting: Vec<u16> = self
            .need_buffer
            .drain(..)
            .chain(self.need_read_credit.drain(..))
            .chain(self.ready.drain(..))
            .collect();
        for slot in waiting {
            self.states[usize::from(slot)] = RequestState::Free;
            self.free.push(slot);
            dropped += 1;
        }
        dropped
    }

    /// A flushed READ of a dead queue.
    pub fn read_flushed(&mut self, slot: u16) {
        self.set(slot, RequestState::ReadingFromHost, RequestState::Free);
        self.reads_in_flight -= 1;
        self.free.push(slot);
    }

    pub fn held_by_target(&self) -> usize {
        self.states
            .iter()
            .filter(|s| **s == RequestState::Executing)
            .count()
    }

    pub fn all_free(&self) -> bool {
        self.free.len() == self.states.len()
    }

    /// Slots in the Free state.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvmf::transport::Xfer;

    fn keyed(xfer: Xfer) -> DataPlan {
        DataPlan::Keyed {
            addr: 0,
            len: 4096,
            key: 1,
            invalidate: false,
            xfer,
        }
    }

    #[test]
    fn write_flows_through_read_credit() {
        let mut t = RequestTable::new(4, 1);
        let a = t.receive().unwrap();
        let b = t.receive().unwrap();
        t.buffer_ready(&keyed(Xfer::HostToController));
        t.buffer_ready(&keyed(Xfer::HostToController));
        assert_eq!(t.take_read_credit(), Some(a));
        assert_eq!(t.take_read_credit(), None, "one READ at a time");
        t.read_done(a);
        assert_eq!(t.take_read_credit(), Some(b), "waiters keep arrival order");
        assert_eq!(t.take_ready(), Some(a));
        t.completing(a);
        t.free(a);
        assert_eq!(t.state(a), RequestState::Free);
    }

    #[test]
    fn reads_and_no_data_go_straight_to_ready() {
        let mut t = RequestTable::new(2, 4);
        let a = t.receive().unwrap();
        t.buffer_ready(&keyed(Xfer::ControllerToHost));
        let b = t.receive().unwrap();
        t.buffer_ready(&DataPlan::None);
        assert_eq!(t.receive(), None, "depth 2: the third capsule overruns");
        assert_eq!((t.take_ready(), t.take_ready()), (Some(a), Some(b)));
        assert_eq!(t.held_by_target(), 2);
    }

    #[test]
    fn abandon_frees_only_waiting() {
        let mut t = RequestTable::new(4, 1);
        let a = t.receive().unwrap();
        t.buffer_ready(&DataPlan::None);
        assert_eq!(t.take_ready(), Some(a));
        let _b = t.receive().unwrap();
        let c = t.receive().unwrap();
        t.buffer_ready(&keyed(Xfer::HostToController)); // b
        assert_eq!(t.abandon_waiting(), 2);
        assert_eq!(t.state(c), RequestState::Free);
        assert_eq!(t.held_by_target(), 1);
        assert_eq!(t.free_count(), 3);
        t.free(a);
        assert!(t.all_free());
        assert_eq!(t.free_count(), 4);
    }

    #[test]
    #[should_panic(expected = "wrong state")]
    fn illegal_transition_is_caught() {
        let mut t = RequestTable::new(1, 1);
        let a = t.receive().unwrap();
        t.completing(a);
    }
}
