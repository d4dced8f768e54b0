//! The admin machine against a controller model: aborts reaped later, and resets that wait
//! for the gates, restart the controller, create the queues again, or fail cleanly.

use std::cell::{Cell, RefCell};

use dma::DmaMemory;
use nvme_spec::{FromZeros, IntoBytes, Status};

use super::*;
use crate::init::AdminQueues;
use crate::mmio::FakeMmio;
use crate::queue::QueueLayout;
use crate::regs::{offset, Cc};

/// CAP: MQES 2047, CQR, TO = 2 (1000 ms), NVM command set, 4 KiB pages.
const CAP: u64 = 0x0000_0020_0201_07FF;

/// How the model answers one admin opcode.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Success { dw0: u32 },
    Fails(Status),
    Never,
}

/// A controller: CSTS.RDY follows CC.EN (unless `stuck_disabled`), and `run` executes the
/// admin commands up to the doorbell, answering each opcode as told.
struct FakeNvme {
    regs: FakeMmio,
    stuck_disabled: Cell<bool>,
    gone: Cell<bool>,
    answers: RefCell<Vec<(u8, Answer)>>,
    /// Every admin command executed, in order.
    executed: RefCell<Vec<Sqe>>,
    sq_head: Cell<u16>,
    cq_tail: Cell<u16>,
    phase: Cell<bool>,
}

impl FakeNvme {
    fn new() -> FakeNvme {
        let regs = FakeMmio::new(0x2000);
        regs.set32(offset::CAP, CAP as u32);
        regs.set32(offset::CAP + 4, (CAP >> 32) as u32);
        FakeNvme {
            regs,
            stuck_disabled: Cell::new(false),
            gone: Cell::new(false),
            answers: RefCell::new(Vec::new()),
            executed: RefCell::new(Vec::new()),
            sq_head: Cell::new(0),
            cq_tail: Cell::new(0),
            phase: Cell::new(true),
        }
    }

    fn answer(&self, opcode: u8, answer: Answer) {
        self.answers.borrow_mut().push((opcode, answer));
    }

    /// The answer to the `n`th command of `opcode` (the last one told holds after).
    fn answer_for(&self, sqe: &Sqe) -> Answer {
        let told: Vec<Answer> = self
            .answers
            .borrow()
            .iter()
            .filter(|(op, _)| *op == sqe.opcode)
            .map(|(_, a)| *a)
            .collect();
        let seen = self
            .executed
            .borrow()
            .iter()
            .filter(|s| s.opcode == sqe.opcode)
            .count();
        match told.get(seen.saturating_sub(1)).or(told.last()) {
            Some(a) => *a,
            None if sqe.opcode == admin::SET_FEATURES => Answer::Success { dw0: 0x0007_0007 },
            None => Answer::Success { dw0: 0 },
        }
    }

    /// Executes the admin commands the doorbell announced.
    fn run(&self, machine: &AdminMachine<&FakeNvme>) {
        if !Cc(self.regs.get32(offset::CC)).enabled() {
            return;
        }
        let q = machine.queue();
        let entries = q.entries();
        let tail = self.regs.get32(offset::DOORBELL_BASE) as u16;
        while self.sq_head.get() != tail {
            let mut sqe = Sqe::new_zeroed();
            q.memory()
                .read_at(usize::from(self.sq_head.get()) * 64, sqe.as_mut_bytes())
                .unwrap();
            self.sq_head.set((self.sq_head.get() + 1) % entries);
            self.executed.borrow_mut().push(sqe);
            let (dw0, status) = match self.answer_for(&sqe) {
                Answer::Success { dw0 } => (dw0, Status::SUCCESS),
                Answer::Fails(status) => (0, status),
                Answer::Never => continue,
            };
            let mut cqe = Cqe::new_zeroed();
            cqe.dw0 = dw0.into();
            cqe.cid = sqe.cid;
            cqe.sqhd = self.sq_head.get().into();
            cqe.status = (status.to_field() | u16::from(self.phase.get())).into();
            let at = q.layout().cq_offset + usize::from(self.cq_tail.get()) * 16;
            q.memory().write_at(at, cqe.as_bytes()).unwrap();
            self.cq_tail.set(self.cq_tail.get() + 1);
            if self.cq_tail.get() == entries {
                self.cq_tail.set(0);
                self.phase.set(!self.phase.get());
            }
        }
    }

    fn executed_opcodes(&self) -> Vec<u8> {
        self.executed.borrow().iter().map(|s| s.opcode).collect()
    }

    fn cc_enable_writes(&self) -> Vec<bool> {
        self.regs
            .writes_to(offset::CC)
            .into_iter()
            .map(|v| Cc(v).enabled())
            .collect()
    }
}

impl Mmio for FakeNvme {
    fn read32(&self, off: usize) -> u32 {
        if self.gone.get() {
            return u32::MAX;
        }
        if off == offset::CSTS {
            let enabled = Cc(self.regs.get32(offset::CC)).enabled();
            let ready = enabled && !self.stuck_disabled.get();
            return u32::from(ready);
        }
        self.regs.read32(off)
    }
    fn write32(&self, off: usize, value: u32) {
        if off == offset::CC && !Cc(value).enabled() {
            // A disabled controller forgets its queues, doorbells included.
            self.regs.set32(offset::DOORBELL_BASE, 0);
            self.sq_head.set(0);
            self.cq_tail.set(0);
            self.phase.set(true);
        }
        self.regs.write32(off, value)
    }
}

/// A machine on `dev`, brought up, with the admin queue in ordinary memory.
fn machine(dev: &FakeNvme) -> AdminMachine<&FakeNvme> {
    let layout = QueueLayout::new(ADMIN_QUEUE_ENTRIES, 4096);
    let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
    let admin_queues = AdminQueues {
        sq_iova: memory.iova(),
        cq_iova: memory.iova() + layout.cq_offset as u64,
        sq_entries: ADMIN_QUEUE_ENTRIES,
        cq_entries: ADMIN_QUEUE_ENTRIES,
    };
    let mut init = ControllerInit::new(dev, admin_queues).unwrap();
    for now_ms in 0..10 {
        if init.poll(now_ms).unwrap() == Progress::Done {
            break;
        }
    }
    assert_eq!(init.state(), InitState::Ready);
    let queue = QueuePair::new(0, layout, memory, dev, 0).unwrap();
    let mut machine = AdminMachine::new("0000:00:04.0", init, admin_queues, queue);
    machine.set_io_queue_pairs(4);
    dev.regs.clear_writes();
    machine
}

/// An I/O queue `qid` of 8 entries, registered as created in `seq`.
fn io_queue<'a>(
    machine: &mut AdminMachine<&'a FakeNvme>,
    dev: &'a FakeNvme,
    qid: u16,
) -> (QueuePair<&'a FakeNvme>, Arc<QueueGate>) {
    let layout = QueueLayout::new(8, 4096);
    let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
    let queue = QueuePair::new(qid, layout, memory, dev, 0).unwrap();
    let seq = machine.signal().seq();
    let gate = machine.register_queue(&queue, seq);
    (queue, gate)
}

/// Advances (with the device answering) until the reset ends; at most `ticks` ticks, from
/// `start_ms`, `step_ms` apart.
fn run_reset(
    machine: &mut AdminMachine<&FakeNvme>,
    dev: &FakeNvme,
    start_ms: u64,
    step_ms: u64,
    ticks: u64,
) {
    for tick in 0..ticks {
        machine.advance_at(start_ms + tick * step_ms);
        dev.run(machine);
        if !ResetSignal::resetting(machine.signal().seq()) {
            return;
        }
    }
    panic!(
        "the reset did not end in {ticks} ticks: {:?}",
        machine.reset
    );
}

#[test]
fn a_reset_waits_for_every_gate_then_restarts_and_creates_the_queues_again() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (q1, gate1) = io_queue(&mut m, &dev, 1);
    let (q2, gate2) = io_queue(&mut m, &dev, 2);
    let signal = m.signal().clone();

    let open = gate2
        .enter(&signal, 0)
        .expect("queue 2's reactor is ringing");
    assert!(signal.request_reset(0));
    assert!(!signal.request_reset(0), "one reset serves every asker");
    assert!(gate1.enter(&signal, 0).is_none(), "no entry once asked");
    for now_ms in 0..5 {
        m.advance_at(now_ms);
    }
    assert_eq!(m.reset, ResetState::Quiescing);
    assert!(
        dev.cc_enable_writes().is_empty(),
        "not disabled under a ringing reactor"
    );

    drop(open);
    run_reset(&mut m, &dev, 10, 0, 50);
    let cc = dev.cc_enable_writes();
    assert_eq!(
        (cc.first(), cc.last(), cc.iter().filter(|&&en| en).count()),
        (Some(&false), Some(&true), 1),
        "disabled first, enabled once at the end: {cc:?}"
    );
    assert_eq!(
        dev.executed_opcodes(),
        vec![
            admin::SET_FEATURES,
            admin::CREATE_IO_CQ,
            admin::CREATE_IO_SQ,
            admin::CREATE_IO_CQ,
            admin::CREATE_IO_SQ
        ]
    );
    let executed = dev.executed.borrow();
    let created: Vec<(u32, u64)> = executed[1..]
        .iter()
        .map(|s| (s.cdw10.get(), s.dptr.addr.get()))
        .collect();
    assert_eq!(
        created,
        vec![
            ((7 << 16) | 1, q1.cq_iova()),
            ((7 << 16) | 1, q1.sq_iova()),
            ((7 << 16) | 2, q2.cq_iova()),
            ((7 << 16) | 2, q2.sq_iova()),
        ]
    );
    assert_eq!(
        executed[0].cdw11.get(),
        (3 << 16) | 3,
        "the same 4 pairs asked for"
    );
    assert_eq!(signal.seq(), 2);
    assert_eq!((gate1.created_seq(), gate2.created_seq()), (2, 2));
    assert!(signal.stopped_before(2));
    assert!(
        gate1.enter(&signal, 2).is_some(),
        "the queues are live again"
    );
    assert!(!signal.has_admin_work());
}

#[test]
fn aborts_are_submitted_at_once_and_their_answers_reaped_later() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    assert!(m.abort(1, 5));
    assert!(m.signal().has_admin_work(), "pollers must reap the answer");
    dev.run(&m);
    let abort = dev.executed.borrow()[0];
    assert_eq!(
        (abort.opcode, abort.cdw10.get()),
        (admin::ABORT, (5 << 16) | 1)
    );
    m.advance_at(1);
    assert!(!m.signal().has_admin_work());
    assert!(m.commands.iter().all(Option::is_none));
}

#[test]
fn an_abort_without_answer_is_given_up_after_the_admin_timeout() {
    let dev = FakeNvme::new();
    dev.answer(admin::ABORT, Answer::Never);
    let mut m = machine(&dev);
    assert!(m.abort(1, 5));
    dev.run(&m);
    let timeout_ms = ADMIN_TIMEOUT.as_millis() as u64;
    m.advance_at(timeout_ms - 1);
    assert!(matches!(
        m.commands[0].as_ref().unwrap().purpose,
        Purpose::Abort { .. }
    ));
    m.advance_at(timeout_ms + 1);
    assert_eq!(
        m.commands[0].as_ref().unwrap().purpose,
        Purpose::Abandoned,
        "its id stays taken: the controller may still answer"
    );
}

#[test]
fn no_abort_goes_out_once_a_reset_is_asked_for() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    assert!(m.signal().request_reset(0));
    assert!(!m.abort(1, 5));
    dev.run(&m);
    assert!(dev.executed.borrow().is_empty());
}

#[test]
fn a_full_admin_queue_refuses_an_abort_for_now() {
    let dev = FakeNvme::new();
    dev.answer(admin::ABORT, Answer::Never);
    let mut m = machine(&dev);
    let slots = usize::from(ADMIN_QUEUE_ENTRIES) - 1;
    for cid in 0..slots {
        assert!(m.abort(1, cid as u16));
    }
    assert!(!m.abort(1, 99));
}

#[test]
fn a_controller_that_does_not_come_back_fails_the_reset_and_no_queue_is_created() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (_q, gate) = io_queue(&mut m, &dev, 1);
    assert!(m.signal().request_reset(0));
    dev.stuck_disabled.set(true);
    run_reset(&mut m, &dev, 0, 100, 50);
    assert_eq!(m.signal().seq(), 2);
    assert_eq!(gate.created_seq(), 0, "its channel will fail I/O");
    assert!(
        m.signal().stopped_before(2),
        "it did stop: buffers may be reused"
    );
    assert!(!dev.executed_opcodes().contains(&admin::CREATE_IO_CQ));
}

#[test]
fn a_vanished_controller_fails_the_reset_without_claiming_it_stopped() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (_q, gate) = io_queue(&mut m, &dev, 1);
    assert!(m.signal().request_reset(0));
    dev.gone.set(true);
    run_reset(&mut m, &dev, 0, 0, 10);
    assert_eq!(gate.created_seq(), 0);
    assert!(!m.signal().stopped_before(2));
}

#[test]
fn a_reset_step_without_answer_fails_the_reset_after_the_admin_timeout() {
    let dev = FakeNvme::new();
    dev.answer(admin::SET_FEATURES, Answer::Never);
    let mut m = machine(&dev);
    let (_q, gate) = io_queue(&mut m, &dev, 1);
    assert!(m.signal().request_reset(0));
    for _ in 0..20 {
        m.advance_at(0);
        dev.run(&m);
    }
    assert!(ResetSignal::resetting(m.signal().seq()), "still waiting");
    run_reset(&mut m, &dev, ADMIN_TIMEOUT.as_millis() as u64 + 1, 0, 5);
    assert_eq!(gate.created_seq(), 0);
}

#[test]
fn fewer_queue_pairs_after_a_reset_fail_it() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (_q, gate) = io_queue(&mut m, &dev, 1);
    dev.answer(admin::SET_FEATURES, Answer::Success { dw0: 0x0001_0001 });
    assert!(m.signal().request_reset(0));
    run_reset(&mut m, &dev, 0, 0, 50);
    assert_eq!(gate.created_seq(), 0);
}

#[test]
fn a_queue_the_controller_refuses_is_skipped_and_the_others_are_created() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (_q1, gate1) = io_queue(&mut m, &dev, 1);
    let (_q2, gate2) = io_queue(&mut m, &dev, 2);
    dev.answer(
        admin::CREATE_IO_CQ,
        Answer::Fails(Status::INVALID_QUEUE_IDENTIFIER),
    );
    dev.answer(admin::CREATE_IO_CQ, Answer::Success { dw0: 0 });
    assert!(m.signal().request_reset(0));
    run_reset(&mut m, &dev, 0, 0, 50);
    assert_eq!((gate1.created_seq(), gate2.created_seq()), (0, 2));
}

#[test]
fn a_second_reset_runs_in_full_and_an_unregistered_queue_is_not_created() {
    let dev = FakeNvme::new();
    let mut m = machine(&dev);
    let (_q1, gate1) = io_queue(&mut m, &dev, 1);
    let (_q2, _gate2) = io_queue(&mut m, &dev, 2);
    assert!(m.signal().request_reset(0));
    run_reset(&mut m, &dev, 0, 0, 50);
    m.unregister_queue(2);
    dev.executed.borrow_mut().clear();
    assert!(m.signal().request_reset(2));
    run_reset(&mut m, &dev, 100, 0, 50);
    assert_eq!(m.signal().seq(), 4);
    assert_eq!(gate1.created_seq(), 4);
    let created: Vec<u32> = dev
        .executed
        .borrow()
        .iter()
        .filter(|s| s.opcode == admin::CREATE_IO_CQ)
        .map(|s| s.cdw10.get() & 0xFFFF)
        .collect();
    assert_eq!(created, vec![1]);
}

#[test]
fn aborts_in_flight_when_a_reset_starts_are_dropped_with_the_old_queue() {
    let dev = FakeNvme::new();
    dev.answer(admin::ABORT, Answer::Never);
    let mut m = machine(&dev);
    assert!(m.abort(1, 3));
    dev.run(&m);
    assert!(m.signal().request_reset(0));
    run_reset(&mut m, &dev, 0, 0, 50);
    assert!(m.commands.iter().all(Option::is_none));
    assert!(!m.signal().has_admin_work());
}

#[test]
fn queue_commands_encode_size_id_and_pairing() {
    let cq = create_io_cq_command(3, 64);
    assert_eq!(
        (cq.opcode, cq.cdw10.get(), cq.cdw11.get()),
        (0x05, (63 << 16) | 3, 1)
    );
    let sq = create_io_sq_command(3, 64);
    assert_eq!(
        (sq.opcode, sq.cdw10.get(), sq.cdw11.get()),
        (0x01, (63 << 16) | 3, (3 << 16) | 1)
    );
    let nq = number_of_queues_command(4);
    assert_eq!(
        (nq.opcode, nq.cdw10.get(), nq.cdw11.get()),
        (0x09, 7, (3 << 16) | 3)
    );
}

#[test]
fn a_large_queue_is_given_by_its_base_alone() {
    // 1024 CQ entries span 4 pages: no PRP list for a physically contiguous queue.
    let mut cq = create_io_cq_command(1, 1024);
    contiguous_queue_base(0x20_0000).apply(&mut cq);
    assert_eq!(cq.dptr.addr.get(), 0x20_0000);
    assert_eq!(&cq.dptr.as_bytes()[8..], &[0u8; 8]);
    assert_eq!(cq.psdt(), 0);
}

#[test]
fn granted_queue_pairs_take_the_smaller_count() {
    assert_eq!(granted_queue_pairs(0x0003_0007), 4);
    assert_eq!(granted_queue_pairs(0), 1);
    assert_eq!(granted_queue_pairs(0xFFFF_FFFF), u16::MAX);
}
