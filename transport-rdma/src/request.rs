//! The RDMA request state machine: every state a request slot of a queue
//! can be in, and every transition, in one function (`RequestTable::advance`).
//!
//! ```text
//!          capsule (keyed data)             buffer        credit + SQ room
//! Free ──────────────────────▶ NeedBuffer ───────▶ NeedReadCredit ─────▶ ReadingFromHost
//!  │  capsule (no data,            │ buffer (data to the host)              │ READ done
//!  │  or data in the capsule)      ▼                                        │
//!  └──────────────────────▶ ReadyToExecute ◀────────────────────────────────┘
//!                                  │ reported to the target
//!                                  ▼
//!                              Executing ──executed──▶ Responding ──SEND done──▶ Free
//!                                  │ executed,          ▲ (data WRITEs, if any, and response)
//!                                  │ no SQ room         │ SQ room
//!                                  └──▶ NeedSendRoom ───┘
//!
//! The queue dies (QP error, disconnect, device removal):
//!   NeedBuffer, NeedReadCredit, ReadyToExecute ──▶ Free (buffer released)
//!   ReadingFromHost, Responding ──▶ Flushing ──READ or SEND flushed──▶ Free
//!   Executing ──▶ Orphaned ──executed (the target gives it back)──▶ Free
//! ```
//!
//! `advance` takes what happened (`Input`) and returns what the poll group
//! must do (`Action`): post a work request, report the request to the target,
//! or release its buffer. It makes no verbs call, so every transition is
//! tested here without a NIC. Requests waiting for a buffer, a READ credit,
//! room in the send queue or room to be reported wait in arrival order
//! (`next_waiter`).
//!
//! Send queue room: the QP's send queue has `2 x depth + 1` entries, enough
//! for every request to hold one data work request and its response. A
//! transfer longer than one work request's SGEs takes several; the table
//! counts the entries each request holds (READs until they complete, WRITEs
//! and the response until the SEND completes), so a queue of large
//! transfers waits for room instead of overrunning the send queue (and its
//! CQ budget, since flushed work requests all complete).

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Free,
    /// Capsule received; its keyed data needs a buffer from the shared pool.
    NeedBuffer,
    /// Host data must be read, but the queue's RDMA READ depth is used up.
    NeedReadCredit,
    /// RDMA READ of the host's data posted.
    ReadingFromHost,
    /// Command and data in place; waiting to be reported to the target.
    ReadyToExecute,
    /// Lent to the target.
    Executing,
    /// Executed; its data WRITEs and response wait for room in the send queue.
    NeedSendRoom,
    /// The data WRITE (if the command produced data) and the response SEND
    /// posted; waiting for the SEND to complete.
    Responding,
    /// The queue died with a READ or SEND of this request at the NIC:
    /// waiting for it to flush before the buffer may be reused.
    Flushing,
    /// The queue died while the target held the request: waiting for the
    /// target to give it back.
    Orphaned,
}

/// What the command's data needs, decided when its capsule arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataNeed {
    /// No data, or data already in the capsule (its buffer lent by the receive).
    Ready,
    /// Keyed data the target will send to the host: a buffer, then execution.
    BufferForHost,
    /// Keyed data to read from the host: a buffer, a READ credit, and room
    /// for `wrs` RDMA READ work requests.
    BufferAndRead { wrs: u16 },
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A capsule arrived in this free slot.
    Capsule(DataNeed),
    /// What the request waits for is there (a buffer attached by the poll
    /// group, a READ credit, room to report it): for the oldest waiter only.
    Granted,
    /// Its RDMA READ completed (or flushed).
    ReadDone,
    /// The target completed it; its response takes `data_wrs` RDMA WRITE
    /// work requests (0: no data to send) before the SEND.
    Executed { data_wrs: u16 },
    /// Its response SEND completed (or flushed).
    SendDone,
    /// The queue died.
    QueueDead,
}

/// What the poll group must do after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Post the RDMA READ of the host's data into the request's buffer.
    PostRead,
    /// Report the request to the target.
    Report,
    /// Post the data WRITE (if the command produced data) and the response.
    PostResponse,
    /// The request is done: give its data buffer back; the slot is free.
    Release,
}

/// What a waiting request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Buffer,
    ReadCredit,
    SendRoom,
    Report,
}

/// The request slots of one queue: their states, and who waits for what.
pub struct RequestTable {
    states: Vec<RequestState>,
    needs: Vec<DataNeed>,
    /// Send queue entries each request holds or waits for.
    sq_entries: Vec<u16>,
    free: Vec<u16>,
    need_buffer: VecDeque<u16>,
    need_read_credit: VecDeque<u16>,
    need_send_room: VecDeque<u16>,
    ready: VecDeque<u16>,
    /// Send queue entries not held by any request.
    sq_free: u32,
    /// RDMA READs the queue may have in flight (host's ORD/IRD, device limit).
    read_credits: u16,
    reads_in_flight: u16,
    /// Requests the target holds (Executing or Orphaned).
    held_by_target: usize,
}

impl RequestTable {
    /// A table of `depth` requests on a send queue of `sq_entries` entries
    /// (at least 2 x depth, so that small transfers never wait for room).
    pub fn new(depth: u16, read_credits: u16, sq_entries: u32) -> RequestTable {
        assert!(depth > 0 && read_credits > 0);
        assert!(
            sq_entries >= 2 * u32::from(depth),
            "a data WR and a response each"
        );
        let n = usize::from(depth);
        RequestTable {
            states: vec![RequestState::Free; n],
            needs: vec![DataNeed::Ready; n],
            sq_entries: vec![0; n],
            free: (0..depth).rev().collect(),
            need_buffer: VecDeque::with_capacity(n),
            need_read_credit: VecDeque::with_capacity(n),
            need_send_room: VecDeque::with_capacity(n),
            ready: VecDeque::with_capacity(n),
            sq_free: sq_entries,
            read_credits,
            reads_in_flight: 0,
            held_by_target: 0,
        }
    }

    pub fn state(&self, slot: u16) -> RequestState {
        self.states[usize::from(slot)]
    }

    /// A free slot for a capsule that arrived (None when the host overran
    /// the queue). The slot stays Free until `advance(.., Input::Capsule)`.
    pub fn take_free(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// The oldest request waiting for `wait`, if it may have it now (a READ
    /// waiter only while the queue has a credit and send queue room for its
    /// READs; a response only with room for its WRITEs and SEND).
    pub fn next_waiter(&self, wait: Wait) -> Option<u16> {
        match wait {
            Wait::Buffer => self.need_buffer.front().copied(),
            Wait::ReadCredit => self
                .need_read_credit
                .front()
                .copied()
                .filter(|&s| self.reads_in_flight < self.read_credits && self.sq_room_for(s)),
            Wait::SendRoom => self
                .need_send_room
                .front()
                .copied()
                .filter(|&s| self.sq_room_for(s)),
            Wait::Report => self.ready.front().copied(),
        }
    }

    fn sq_room_for(&self, slot: u16) -> bool {
        u32::from(self.sq_entries[usize::from(slot)]) <= self.sq_free
    }

    /// Request `slot` takes its send queue entries.
    fn take_sq(&mut self, slot: u16) {
        let n = u32::from(self.sq_entries[usize::from(slot)]);
        assert!(
            n <= self.sq_free,
            "request {slot}: {n} send queue entries, {} free",
            self.sq_free
        );
        self.sq_free -= n;
    }

    /// Request `slot` gives its send queue entries back.
    fn give_sq(&mut self, slot: u16) {
        let s = usize::from(slot);
        self.sq_free += u32::from(self.sq_entries[s]);
        self.sq_entries[s] = 0;
    }

    /// Send queue entries no request holds.
    pub fn sq_free(&self) -> u32 {
        self.sq_free
    }

    /// Whether any request waits for a buffer.
    pub fn waits_for_buffer(&self) -> bool {
        !self.need_buffer.is_empty()
    }

    /// Whether a poll has anything to do for this queue's waiting requests.
    pub fn has_waiters(&self) -> bool {
        !self.need_buffer.is_empty()
            || self.next_waiter(Wait::ReadCredit).is_some()
            || self.next_waiter(Wait::SendRoom).is_some()
            || !self.ready.is_empty()
    }

    /// Moves request `slot` on after `input`; returns what the poll group
    /// must do. A pair of state and input that cannot happen panics.
    pub fn advance(&mut self, slot: u16, input: Input) -> Action {
        use Action as A;
        use Input as I;
        use RequestState as S;
        let from = self.state(slot);
        let (to, action) = match (from, input) {
            (S::Free, I::Capsule(need)) => {
                debug_assert!(!self.free.contains(&slot), "take_free gives the slot first");
                self.needs[usize::from(slot)] = need;
                match need {
                    DataNeed::Ready => (S::ReadyToExecute, A::None),
                    DataNeed::BufferForHost | DataNeed::BufferAndRead { .. } => {
                        (S::NeedBuffer, A::None)
                    }
                }
            }
            (S::NeedBuffer, I::Granted) => {
                self.pop_waiter(Wait::Buffer, slot);
                match self.needs[usize::from(slot)] {
                    DataNeed::BufferAndRead { wrs } => {
                        self.sq_entries[usize::from(slot)] = wrs;
                        (S::NeedReadCredit, A::None)
                    }
                    _ => (S::ReadyToExecute, A::None),
                }
            }
            (S::NeedReadCredit, I::Granted) => {
                assert!(self.reads_in_flight < self.read_credits, "no READ credit");
                self.pop_waiter(Wait::ReadCredit, slot);
                self.take_sq(slot);
                self.reads_in_flight += 1;
                (S::ReadingFromHost, A::PostRead)
            }
            (S::ReadingFromHost, I::ReadDone) => {
                self.reads_in_flight -= 1;
                self.give_sq(slot);
                (S::ReadyToExecute, A::None)
            }
            (S::ReadyToExecute, I::Granted) => {
                self.pop_waiter(Wait::Report, slot);
                self.held_by_target += 1;
                (S::Executing, A::Report)
            }
            (S::Executing, I::Executed { data_wrs }) => {
                self.held_by_target -= 1;
                self.sq_entries[usize::from(slot)] = data_wrs + 1;
                // Earlier responses waiting for room go first.
                if self.need_send_room.is_empty() && self.sq_room_for(slot) {
                    self.take_sq(slot);
                    (S::Responding, A::PostResponse)
                } else {
                    (S::NeedSendRoom, A::None)
                }
            }
            (S::NeedSendRoom, I::Granted) => {
                self.pop_waiter(Wait::SendRoom, slot);
                self.take_sq(slot);
                (S::Responding, A::PostResponse)
            }
            (S::Responding, I::SendDone) => {
                self.give_sq(slot);
                (S::Free, A::Release)
            }

            // The queue died.
            (
                S::NeedBuffer | S::NeedReadCredit | S::NeedSendRoom | S::ReadyToExecute,
                I::QueueDead,
            ) => {
                self.forget_waiter(from, slot);
                self.sq_entries[usize::from(slot)] = 0;
                (S::Free, A::Release)
            }
            (S::ReadingFromHost, I::QueueDead) => {
                self.reads_in_flight -= 1;
                (S::Flushing, A::None)
            }
            (S::Responding, I::QueueDead) => (S::Flushing, A::None),
            (S::Flushing, I::ReadDone | I::SendDone) => {
                self.give_sq(slot);
                (S::Free, A::Release)
            }
            (S::Executing, I::QueueDead) => (S::Orphaned, A::None),
            (S::Orphaned, I::Executed { .. }) => {
                self.held_by_target -= 1;
                (S::Free, A::Release)
            }
            (S::Free | S::Flushing | S::Orphaned, I::QueueDead) => (from, A::None),

            (from, input) => panic!("request {slot}: {input:?} cannot happen in state {from:?}"),
        };
        self.states[usize::from(slot)] = to;
        match to {
            S::NeedBuffer if from != to => self.need_buffer.push_back(slot),
            S::NeedReadCredit if from != to => self.need_read_credit.push_back(slot),
            S::NeedSendRoom if from != to => self.need_send_room.push_back(slot),
            S::ReadyToExecute if from != to => self.ready.push_back(slot),
            S::Free if from != to => self.free.push(slot),
            _ => {}
        }
        action
    }

    /// Takes `slot` off the front of its wait list: only the oldest waiter
    /// is granted anything.
    fn pop_waiter(&mut self, wait: Wait, slot: u16) {
        let list = match wait {
            Wait::Buffer => &mut self.need_buffer,
            Wait::ReadCredit => &mut self.need_read_credit,
            Wait::SendRoom => &mut self.need_send_room,
            Wait::Report => &mut self.ready,
        };
        assert_eq!(
            list.pop_front(),
            Some(slot),
            "{wait:?} granted to a request that is not the oldest waiter"
        );
    }

    /// Takes a waiting request of a dead queue off its list (once per death).
    fn forget_waiter(&mut self, state: RequestState, slot: u16) {
        let list = match state {
            RequestState::NeedBuffer => &mut self.need_buffer,
            RequestState::NeedReadCredit => &mut self.need_read_credit,
            RequestState::NeedSendRoom => &mut self.need_send_room,
            _ => &mut self.ready,
        };
        list.retain(|&s| s != slot);
    }

    pub fn held_by_target(&self) -> usize {
        self.held_by_target
    }

    /// Slots in the Free state.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn depth(&self) -> usize {
        self.states.len()
    }

    pub fn all_free(&self) -> bool {
        self.free.len() == self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Input as I;
    use RequestState as S;

    const READ1: DataNeed = DataNeed::BufferAndRead { wrs: 1 };
    const NO_DATA: I = I::Executed { data_wrs: 0 };
    /// More WRITEs than the test tables' send queue holds.
    const HUGE: I = I::Executed { data_wrs: 100 };

    /// A slot of a fresh table (depth 4, one READ credit, 8 send queue
    /// entries) brought into `state`, and the table.
    fn in_state(state: S) -> (RequestTable, u16) {
        let mut t = RequestTable::new(4, 1, 8);
        let s = t.take_free().unwrap();
        let need = match state {
            S::NeedReadCredit | S::ReadingFromHost => READ1,
            S::NeedBuffer | S::Flushing => DataNeed::BufferForHost,
            _ => DataNeed::Ready,
        };
        if state == S::Free {
            t.advance(s, I::Capsule(DataNeed::Ready));
            t.advance(s, I::Granted);
            t.advance(s, NO_DATA);
            t.advance(s, I::SendDone);
            return (t, s);
        }
        t.advance(s, I::Capsule(need));
        let path: &[I] = match state {
            S::NeedBuffer | S::ReadyToExecute => &[],
            S::NeedReadCredit => &[I::Granted],
            S::ReadingFromHost => &[I::Granted, I::Granted],
            S::Executing => &[I::Granted],
            S::NeedSendRoom => &[I::Granted, HUGE],
            S::Responding => &[I::Granted, NO_DATA],
            S::Flushing => &[I::Granted, I::Granted, NO_DATA, I::QueueDead],
            S::Orphaned => &[I::Granted, I::QueueDead],
            S::Free => unreachable!(),
        };
        for &i in path {
            t.advance(s, i);
        }
        assert_eq!(t.state(s), state);
        (t, s)
    }

    const ALL: [S; 10] = [
        S::Free,
        S::NeedBuffer,
        S::NeedReadCredit,
        S::ReadingFromHost,
        S::ReadyToExecute,
        S::Executing,
        S::NeedSendRoom,
        S::Responding,
        S::Flushing,
        S::Orphaned,
    ];

    /// Every legal transition: (from, input, to, action).
    const LEGAL: [(S, I, S, A); 24] = [
        (
            S::Free,
            I::Capsule(DataNeed::Ready),
            S::ReadyToExecute,
            A::None,
        ),
        (
            S::Free,
            I::Capsule(DataNeed::BufferForHost),
            S::NeedBuffer,
            A::None,
        ),
        (S::Free, I::Capsule(READ1), S::NeedBuffer, A::None),
        (S::NeedBuffer, I::Granted, S::ReadyToExecute, A::None),
        (
            S::NeedReadCredit,
            I::Granted,
            S::ReadingFromHost,
            A::PostRead,
        ),
        (S::ReadingFromHost, I::ReadDone, S::ReadyToExecute, A::None),
        (S::ReadyToExecute, I::Granted, S::Executing, A::Report),
        (S::Executing, NO_DATA, S::Responding, A::PostResponse),
        (S::Executing, HUGE, S::NeedSendRoom, A::None),
        (S::Responding, I::SendDone, S::Free, A::Release),
        (S::NeedBuffer, I::QueueDead, S::Free, A::Release),
        (S::NeedReadCredit, I::QueueDead, S::Free, A::Release),
        (S::ReadyToExecute, I::QueueDead, S::Free, A::Release),
        (S::NeedSendRoom, I::QueueDead, S::Free, A::Release),
        (S::ReadingFromHost, I::QueueDead, S::Flushing, A::None),
        (S::Responding, I::QueueDead, S::Flushing, A::None),
        (S::Flushing, I::SendDone, S::Free, A::Release),
        (S::Flushing, I::ReadDone, S::Free, A::Release),
        (S::Executing, I::QueueDead, S::Orphaned, A::None),
        (S::Orphaned, NO_DATA, S::Free, A::Release),
        (S::Orphaned, HUGE, S::Free, A::Release),
        (S::Free, I::QueueDead, S::Free, A::None),
        (S::Flushing, I::QueueDead, S::Flushing, A::None),
        (S::Orphaned, I::QueueDead, S::Orphaned, A::None),
    ];

    #[test]
    fn every_legal_transition_does_what_the_table_says() {
        for (from, input, to, action) in LEGAL {
            let (mut t, s) = in_state(from);
            if from == S::Free && matches!(input, I::Capsule(_)) {
                // A capsule lands in a slot take_free gave out.
                assert_eq!(t.take_free(), Some(s));
            }
            assert_eq!(t.advance(s, input), action, "{from:?} + {input:?}");
            assert_eq!(t.state(s), to, "{from:?} + {input:?}");
        }
    }

    #[test]
    fn every_other_pair_is_refused() {
        let inputs = [
            I::Capsule(DataNeed::Ready),
            I::Granted,
            I::ReadDone,
            NO_DATA,
            I::SendDone,
            I::QueueDead,
        ];
        let legal = |f: S, i: I| {
            LEGAL.iter().any(|&(lf, li, _, _)| lf == f && li == i)
                // NeedSendRoom is granted only with room: not in a fresh tiny table.
                || (f == S::NeedSendRoom && i == I::Granted)
        };
        for from in ALL {
            for input in inputs {
                if legal(from, input) {
                    continue;
                }
                let refused = std::panic::catch_unwind(|| {
                    let (mut t, s) = in_state(from);
                    t.advance(s, input);
                })
                .is_err();
                assert!(refused, "{input:?} in {from:?} was accepted");
            }
        }
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let mut t = RequestTable::new(8, 1, 16);
        let slots: Vec<u16> = (0..3).map(|_| t.take_free().unwrap()).collect();
        for &s in &slots {
            t.advance(s, I::Capsule(READ1));
        }
        for &s in &slots {
            assert_eq!(t.next_waiter(Wait::Buffer), Some(s));
            t.advance(s, I::Granted);
        }
        assert_eq!(t.next_waiter(Wait::ReadCredit), Some(slots[0]));
        assert_eq!(t.advance(slots[0], I::Granted), A::PostRead);
        assert_eq!(t.next_waiter(Wait::ReadCredit), None, "one credit");
        t.advance(slots[0], I::ReadDone);
        assert_eq!(t.next_waiter(Wait::ReadCredit), Some(slots[1]));
        assert_eq!(t.next_waiter(Wait::Report), Some(slots[0]));
    }

    #[test]
    #[should_panic(expected = "not the oldest waiter")]
    fn granting_out_of_order_is_caught() {
        let mut t = RequestTable::new(4, 1, 8);
        let a = t.take_free().unwrap();
        let b = t.take_free().unwrap();
        t.advance(a, I::Capsule(DataNeed::BufferForHost));
        t.advance(b, I::Capsule(DataNeed::BufferForHost));
        t.advance(b, I::Granted);
    }

    #[test]
    fn large_transfers_wait_for_send_queue_room_in_order() {
        // Depth 4, 8 entries: two 3-WRITE responses fit (4 entries each), a third waits.
        let mut t = RequestTable::new(4, 1, 8);
        let mut executing = Vec::new();
        for _ in 0..4 {
            let s = t.take_free().unwrap();
            t.advance(s, I::Capsule(DataNeed::Ready));
            t.advance(s, I::Granted);
            executing.push(s);
        }
        let big = I::Executed { data_wrs: 3 };
        assert_eq!(t.advance(executing[0], big), A::PostResponse);
        assert_eq!(t.advance(executing[1], big), A::PostResponse);
        assert_eq!(t.sq_free(), 0);
        assert_eq!(t.advance(executing[2], big), A::None);
        // A small response behind it waits too: responses keep their order.
        assert_eq!(t.advance(executing[3], NO_DATA), A::None);
        assert_eq!(t.next_waiter(Wait::SendRoom), None, "no room yet");
        assert_eq!(t.advance(executing[0], I::SendDone), A::Release);
        assert_eq!(t.next_waiter(Wait::SendRoom), Some(executing[2]));
        assert_eq!(t.advance(executing[2], I::Granted), A::PostResponse);
        assert_eq!(t.next_waiter(Wait::SendRoom), None, "4 taken again");
        t.advance(executing[1], I::SendDone);
        assert_eq!(t.next_waiter(Wait::SendRoom), Some(executing[3]));
        t.advance(executing[3], I::Granted);
        t.advance(executing[2], I::SendDone);
        t.advance(executing[3], I::SendDone);
        assert_eq!(t.sq_free(), 8, "every entry came back");
        assert!(t.all_free());
    }

    #[test]
    fn reads_take_send_queue_room_until_they_complete() {
        let mut t = RequestTable::new(2, 4, 4);
        let a = t.take_free().unwrap();
        let b = t.take_free().unwrap();
        for s in [a, b] {
            t.advance(s, I::Capsule(DataNeed::BufferAndRead { wrs: 3 }));
            t.advance(s, I::Granted);
        }
        assert_eq!(t.next_waiter(Wait::ReadCredit), Some(a));
        assert_eq!(t.advance(a, I::Granted), A::PostRead);
        assert_eq!(t.sq_free(), 1);
        assert_eq!(
            t.next_waiter(Wait::ReadCredit),
            None,
            "credits left, no room"
        );
        t.advance(a, I::ReadDone);
        assert_eq!(t.sq_free(), 4);
        assert_eq!(t.next_waiter(Wait::ReadCredit), Some(b));
    }

    #[test]
    fn a_dead_queue_frees_its_waiters_and_keeps_what_others_hold() {
        let mut t = RequestTable::new(8, 1, 16);
        let mut take = |need| {
            let s = t.take_free().unwrap();
            t.advance(s, I::Capsule(need));
            s
        };
        let executing = take(DataNeed::Ready);
        let reading = take(READ1);
        let waiting_credit = take(READ1);
        let waiting_buffer = take(DataNeed::BufferForHost);
        t.advance(executing, I::Granted);
        t.advance(reading, I::Granted);
        t.advance(reading, I::Granted);
        t.advance(waiting_credit, I::Granted);
        assert_eq!(t.held_by_target(), 1);
        let actions: Vec<A> = (0..8).map(|s| t.advance(s, I::QueueDead)).collect();
        assert_eq!(actions[usize::from(waiting_credit)], A::Release);
        assert_eq!(actions[usize::from(waiting_buffer)], A::Release);
        assert_eq!(t.state(reading), S::Flushing);
        assert_eq!(t.state(executing), S::Orphaned);
        assert!(!t.has_waiters());
        assert_eq!(t.held_by_target(), 1);
        assert_eq!(t.advance(reading, I::ReadDone), A::Release);
        assert_eq!(t.advance(executing, NO_DATA), A::Release);
        assert!(t.all_free());
        assert_eq!(t.held_by_target(), 0);
        assert_eq!(t.free_count(), 8);
        assert_eq!(t.sq_free(), 16);
    }

    #[test]
    fn credits_come_back_when_a_reading_queue_dies() {
        let (mut t, s) = in_state(S::ReadingFromHost);
        assert_eq!(t.reads_in_flight, 1);
        t.advance(s, I::QueueDead);
        assert_eq!(t.reads_in_flight, 0);
        t.advance(s, I::ReadDone);
        assert_eq!(
            t.reads_in_flight, 0,
            "the flushed READ is not counted twice"
        );
        assert_eq!(t.sq_free(), 8);
    }
}
