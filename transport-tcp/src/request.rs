//! The NVMe/TCP request state machine: every state a request slot of a queue can be in, and
//! every transition, in one function (`RequestTable::advance`).
//!
//! ```text
//!          capsule, data in it                 data read (digest checked)
//! Free ─────────────────────▶ ReceivingCapsuleData ──────────────┐
//!  │ capsule, data to or from the host                          ▼
//!  ├──────────────────────▶ NeedBuffer ──buffer, data to host──▶ ReadyToExecute
//!  │                           │ buffer, data from host           ▲      │ reported
//!  │                           ▼                                  │      ▼
//!  │                      AwaitingH2cData ──last H2CData read─────┘  Executing
//!  │ capsule, no data          (an R2T was queued)                       │ executed
//!  └──────────────────────────────────────────────▶ ReadyToExecute       ▼
//!                                                                     Sending ──written──▶ Free
//!                                                     (C2HData and/or the response capsule)
//! The connection dies:
//!   Executing ──▶ Orphaned ──executed (the target gives it back)──▶ Free
//!   every other state ──▶ Free (its buffer released)
//! ```
//!
//! `advance` takes what happened (`Input`) and returns what the poll group must do
//! (`Action`): read data, queue an R2T, report the request, queue its data and response, or
//! release its buffer. It touches no socket, so every transition is tested here. Requests
//! waiting for a buffer are served in arrival order (`next_waiting_for_buffer`).

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Free,
    /// The capsule carries data: the receive path reads it into the request's buffer.
    ReceivingCapsuleData,
    /// Data moves by R2T/H2CData or C2HData: waiting for a buffer from the shared pool.
    NeedBuffer,
    /// An R2T went out: H2CData PDUs fill the buffer.
    AwaitingH2cData,
    /// Command and data in place; waiting to be reported to the target.
    ReadyToExecute,
    /// Lent to the target.
    Executing,
    /// Its C2HData (if any) and response are queued on the socket.
    Sending,
    /// The connection died while the target held the request.
    Orphaned,
}

/// How the command's data moves, decided when its capsule arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataNeed {
    None,
    /// In the capsule, after the SQE.
    InCapsule,
    /// From the host, by R2T and H2CData.
    FromHost,
    /// To the host, by C2HData.
    ToHost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A capsule arrived in this free slot (a buffer is attached first for `InCapsule`).
    Capsule(DataNeed),
    /// A buffer was attached to this request (the oldest waiter).
    BufferGranted,
    /// All its data from the host is in the buffer.
    DataReceived,
    /// It was reported to the target.
    Reported,
    /// The target completed it; `c2h_data`: a C2HData PDU goes before (or instead of) the
    /// response.
    Executed { c2h_data: bool },
    /// Everything queued for it was written to the socket.
    SendDone,
    /// The connection died.
    ConnectionDead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Read the capsule's data into the request's buffer.
    ReadCapsuleData,
    /// Queue an R2T for the whole transfer.
    SendR2t,
    /// Report the request to the target (the poll group queues it for the next poll).
    Report,
    /// Queue the C2HData (if any) and the response capsule.
    Send,
    /// The request is done: release its buffer; the slot is free.
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    state: RequestState,
    need: DataNeed,
}

/// The request slots of one connection.
#[derive(Debug)]
pub struct RequestTable {
    slots: Vec<Slot>,
    free: Vec<u16>,
    waiting_for_buffer: VecDeque<u16>,
}

impl RequestTable {
    pub fn new(depth: u16) -> RequestTable {
        assert!(depth >= 1);
        RequestTable {
            slots: vec![
                Slot {
                    state: RequestState::Free,
                    need: DataNeed::None,
                };
                usize::from(depth)
            ],
            free: (0..depth).rev().collect(),
            waiting_for_buffer: VecDeque::with_capacity(usize::from(depth)),
        }
    }

    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    pub fn state(&self, slot: u16) -> RequestState {
        self.slots[usize::from(slot)].state
    }

    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// A free slot for a new capsule; None when the host sent more commands than its queue
    /// holds.
    pub fn take_free(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// The oldest request waiting for a buffer.
    pub fn next_waiting_for_buffer(&self) -> Option<u16> {
        self.waiting_for_buffer.front().copied()
    }

    /// Moves `slot` on by `input`; returns what the poll group must do. Panics on an input
    /// its state cannot take (a poll group bug).
    pub fn advance(&mut self, slot: u16, input: Input) -> Action {
        use DataNeed as N;
        use Input as I;
        use RequestState as S;
        let s = &mut self.slots[usize::from(slot)];
        let (next, action) = match (s.state, input) {
            (S::Free, I::Capsule(need)) => {
                s.need = need;
                match need {
                    N::None => (S::ReadyToExecute, Action::Report),
                    N::InCapsule => (S::ReceivingCapsuleData, Action::ReadCapsuleData),
                    N::FromHost | N::ToHost => {
                        self.waiting_for_buffer.push_back(slot);
                        (S::NeedBuffer, Action::None)
                    }
                }
            }
            (S::ReceivingCapsuleData, I::DataReceived) => (S::ReadyToExecute, Action::Report),
            (S::NeedBuffer, I::BufferGranted) => {
                let front = self.waiting_for_buffer.pop_front();
                assert_eq!(front, Some(slot), "buffers go to the oldest waiter");
                match s.need {
                    N::FromHost => (S::AwaitingH2cData, Action::SendR2t),
                    N::ToHost => (S::ReadyToExecute, Action::Report),
                    other => unreachable!("{other:?} needs no granted buffer"),
                }
            }
            (S::AwaitingH2cData, I::DataReceived) => (S::ReadyToExecute, Action::Report),
            (S::ReadyToExecute, I::Reported) => (S::Executing, Action::None),
            (S::Executing, I::Executed { .. }) => (S::Sending, Action::Send),
            (S::Sending, I::SendDone) => (S::Free, Action::Release),
            (S::Executing, I::ConnectionDead) => (S::Orphaned, Action::None),
            (S::Orphaned, I::Executed { .. }) => (S::Free, Action::Release),
            (S::Free | S::Orphaned, I::ConnectionDead) => return Action::None,
            (_, I::ConnectionDead) => {
                if s.state == S::NeedBuffer {
                    self.waiting_for_buffer.retain(|&w| w != slot);
                }
                (S::Free, Action::Release)
            }
            (state, input) => panic!("request {slot}: {input:?} in state {state:?}"),
        };
        let s = &mut self.slots[usize::from(slot)];
        s.state = next;
        if next == S::Free {
            s.need = DataNeed::None;
            self.free.push(slot);
            debug_assert!(self.free.len() <= self.slots.len());
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use DataNeed as N;
    use Input as I;
    use RequestState as S;

    #[test]
    fn a_read_takes_a_buffer_then_sends_its_data() {
        let mut t = RequestTable::new(4);
        let r = t.take_free().unwrap();
        assert_eq!(t.advance(r, I::Capsule(N::ToHost)), A::None);
        assert_eq!(t.state(r), S::NeedBuffer);
        assert_eq!(t.next_waiting_for_buffer(), Some(r));
        assert_eq!(t.advance(r, I::BufferGranted), A::Report);
        assert_eq!(t.advance(r, I::Reported), A::None);
        assert_eq!(t.advance(r, I::Executed { c2h_data: true }), A::Send);
        assert_eq!(t.advance(r, I::SendDone), A::Release);
        assert_eq!((t.state(r), t.in_use()), (S::Free, 0));
    }

    #[test]
    fn a_keyless_write_asks_for_its_data_by_r2t() {
        let mut t = RequestTable::new(4);
        let r = t.take_free().unwrap();
        t.advance(r, I::Capsule(N::FromHost));
        assert_eq!(t.advance(r, I::BufferGranted), A::SendR2t);
        assert_eq!(t.state(r), S::AwaitingH2cData);
        assert_eq!(t.advance(r, I::DataReceived), A::Report);
        t.advance(r, I::Reported);
        assert_eq!(t.advance(r, I::Executed { c2h_data: false }), A::Send);
        assert_eq!(t.advance(r, I::SendDone), A::Release);
    }

    #[test]
    fn in_capsule_data_is_read_then_reported() {
        let mut t = RequestTable::new(4);
        let r = t.take_free().unwrap();
        assert_eq!(t.advance(r, I::Capsule(N::InCapsule)), A::ReadCapsuleData);
        assert_eq!(t.advance(r, I::DataReceived), A::Report);
    }

    #[test]
    fn a_command_without_data_is_reported_at_once() {
        let mut t = RequestTable::new(1);
        let r = t.take_free().unwrap();
        assert_eq!(t.advance(r, I::Capsule(N::None)), A::Report);
        assert!(t.take_free().is_none(), "a queue of one holds one command");
    }

    #[test]
    fn buffers_go_to_waiters_in_arrival_order() {
        let mut t = RequestTable::new(4);
        let a = t.take_free().unwrap();
        let b = t.take_free().unwrap();
        t.advance(a, I::Capsule(N::ToHost));
        t.advance(b, I::Capsule(N::FromHost));
        assert_eq!(t.next_waiting_for_buffer(), Some(a));
        t.advance(a, I::BufferGranted);
        assert_eq!(t.next_waiting_for_buffer(), Some(b));
    }

    #[test]
    #[should_panic(expected = "oldest waiter")]
    fn a_buffer_never_skips_the_queue() {
        let mut t = RequestTable::new(4);
        let a = t.take_free().unwrap();
        let b = t.take_free().unwrap();
        t.advance(a, I::Capsule(N::ToHost));
        t.advance(b, I::Capsule(N::ToHost));
        t.advance(b, I::BufferGranted);
    }

    #[test]
    fn a_dead_connection_frees_every_state_but_the_targets() {
        for (need, steps) in [
            (N::ToHost, 0),
            (N::FromHost, 1),
            (N::InCapsule, 0),
            (N::None, 0),
            (N::ToHost, 1),
        ] {
            let mut t = RequestTable::new(2);
            let r = t.take_free().unwrap();
            t.advance(r, I::Capsule(need));
            if steps == 1 {
                t.advance(r, I::BufferGranted);
            }
            assert_eq!(t.advance(r, I::ConnectionDead), A::Release, "{need:?}");
            assert_eq!(t.state(r), S::Free);
            assert_eq!(t.next_waiting_for_buffer(), None);
            assert_eq!(t.in_use(), 0);
        }
        // Executing: the target still holds it.
        let mut t = RequestTable::new(2);
        let r = t.take_free().unwrap();
        t.advance(r, I::Capsule(N::None));
        t.advance(r, I::Reported);
        assert_eq!(t.advance(r, I::ConnectionDead), A::None);
        assert_eq!(t.state(r), S::Orphaned);
        assert_eq!(t.advance(r, I::ConnectionDead), A::None);
        assert_eq!(t.advance(r, I::Executed { c2h_data: true }), A::Release);
        assert_eq!(t.in_use(), 0);
        // Sending: the socket is gone, so is what was queued.
        let r = t.take_free().unwrap();
        t.advance(r, I::Capsule(N::None));
        t.advance(r, I::Reported);
        t.advance(r, I::Executed { c2h_data: false });
        assert_eq!(t.advance(r, I::ConnectionDead), A::Release);
    }

    #[test]
    #[should_panic(expected = "in state Free")]
    fn data_for_a_free_slot_is_a_bug() {
        let mut t = RequestTable::new(2);
        t.advance(0, I::DataReceived);
    }
}
