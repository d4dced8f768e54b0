//! The whole poll group against the simulated NIC: every path a request
//! takes, and a queue dying in every state of its requests.

use nvme_spec::{opcode, Cqe, FromBytes, SglDescriptor, Sqe, Status};
use nvmf::transport::{RequestId, TransportEvent, TransportPollGroup};
use rdma_sys::ibv_wc_status;

use super::RdmaPollGroup;
use crate::request::RequestState;
use crate::testing::{capsule, options, FakeRdma, HostQp, HOST_BASE, HOST_RKEY};
use crate::verbs::fake::FakeVerbs;
use crate::RdmaOptions;

const HOST_BYTES: usize = 4 << 20;

/// A poll group on the fake NIC and a target that runs what it is handed.
struct Rig {
    fake: FakeRdma,
    pg: RdmaPollGroup<FakeVerbs>,
}

impl Rig {
    fn new(options: RdmaOptions) -> Rig {
        Rig::with_cache(options, 4)
    }

    fn with_cache(options: RdmaOptions, cache: usize) -> Rig {
        let fake = FakeRdma::new(options, HOST_BYTES);
        let pg = fake.poll_group_with_cache(cache);
        Rig { fake, pg }
    }

    /// Connects and adopts an I/O queue; its queue index and host side.
    fn connect(&mut self, depth: u16, host_reads: u8) -> (u16, HostQp) {
        let (pending, qp) = self.fake.connect(1, depth, host_reads);
        let q = self.pg.adopt(pending).expect("adopted");
        assert!(self.fake.nic.is_connected(qp));
        (q, qp)
    }

    fn poll(&mut self) -> Vec<TransportEvent> {
        let mut events = Vec::with_capacity(256);
        self.pg.poll(&mut events);
        events
    }

    /// Requests the poll reports (any other event fails the test).
    fn poll_requests(&mut self) -> Vec<RequestId> {
        self.poll()
            .into_iter()
            .map(|e| match e {
                TransportEvent::Request(id) => id,
                e => panic!("unexpected {e:?}"),
            })
            .collect()
    }

    /// Posts what the poll group batched, and lets the NIC carry it out.
    fn flush_and_run(&mut self) {
        self.pg.flush();
        self.fake.nic.run();
    }

    fn send(&self, qp: HostQp, cmd: &Sqe, data: &[u8]) {
        self.fake
            .nic
            .send_capsule(qp, &capsule(cmd, data))
            .expect("capsule sent");
    }

    fn response(&self, qp: HostQp) -> Option<Cqe> {
        self.fake
            .nic
            .take_response(qp)
            .map(|b| Cqe::read_from_bytes(&b).expect("16 bytes"))
    }

    /// Completes a request as the target would: a read fills its data with
    /// `fill` and produces all of it.
    fn execute(&mut self, id: RequestId, fill: u8) {
        let req = self.pg.request(id);
        req.rsp.cid = req.cmd.cid;
        req.rsp.set_status(Status::SUCCESS);
        if req.cmd.opcode == opcode::io::READ {
            let len = req.length as usize;
            assert!(req.fill_data(0, len, fill));
            req.c2h_bytes = req.length;
        }
        self.pg.complete(id);
    }

    fn state(&self, id: RequestId) -> RequestState {
        let q = self.pg.queues[usize::from(id.queue)]
            .as_ref()
            .expect("queue");
        q.table.state(id.slot)
    }

    fn host(&self, at: usize, len: usize) -> Vec<u8> {
        self.fake.nic.with_host(|m| m[at..at + len].to_vec())
    }

    fn fill_host(&self, at: usize, bytes: &[u8]) {
        self.fake
            .nic
            .with_host(|m| m[at..at + bytes.len()].copy_from_slice(bytes));
    }

    /// Every shared data buffer is back in the pool or this reactor's cache.
    fn buffers_all_back(&self) -> bool {
        self.fake.pool.available() + self.pg.cache.len() == self.fake.options.buffer_count
    }
}

fn keyed(op: u8, cid: u16, host_offset: usize, len: u32) -> Sqe {
    let mut c = Sqe::new(op, cid);
    c.nsid = 1.into();
    c.dptr = SglDescriptor::keyed(HOST_BASE + host_offset as u64, len, HOST_RKEY, false);
    c
}

fn in_capsule_write(cid: u16, len: u32) -> Sqe {
    let mut c = Sqe::new(opcode::io::WRITE, cid);
    c.nsid = 1.into();
    c.dptr = SglDescriptor::data_block(0, len);
    c
}

fn flush(cid: u16) -> Sqe {
    let mut c = Sqe::new(opcode::io::FLUSH, cid);
    c.nsid = 1.into();
    c
}

#[test]
fn keyed_read_writes_the_data_then_the_response_in_one_post() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    r.send(qp, &keyed(opcode::io::READ, 7, 8192, 4096), &[]);
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 1);
    let posts_before = r.fake.nic.stats().send_posts;
    r.execute(ids[0], 0xA5);
    assert_eq!(r.state(ids[0]), RequestState::Responding);
    r.flush_and_run();
    let stats = r.fake.nic.stats();
    assert_eq!(
        stats.send_posts - posts_before,
        1,
        "WRITE and SEND share a doorbell"
    );
    assert_eq!(stats.rdma_writes, 1);
    assert_eq!(r.host(8192, 4096), vec![0xA5; 4096]);
    let rsp = r.response(qp).expect("a response");
    assert_eq!((rsp.cid(), rsp.status()), (7, Status::SUCCESS));
    r.poll(); // the SEND completion frees the slot and its buffer
    assert_eq!(r.state(ids[0]), RequestState::Free);
    assert!(r.buffers_all_back());
}

#[test]
fn short_read_writes_only_the_bytes_produced() {
    // The host's SGL is 4 KiB; the command produced 512 bytes. The rest of
    // the host's buffer must keep its canary: no stale pool bytes reach it.
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    r.fill_host(0, &[0xEE; 4096]);
    r.send(qp, &keyed(opcode::admin::GET_LOG_PAGE, 1, 0, 4096), &[]);
    let id = r.poll_requests()[0];
    let req = r.pg.request(id);
    assert!(req.fill_data(0, 512, 0x11));
    assert!(req.fill_data(512, 4096 - 512, 0x99)); // what must never leave the target
    req.c2h_bytes = 512;
    req.rsp.cid = 1.into();
    r.pg.complete(id);
    r.flush_and_run();
    let host = r.host(0, 4096);
    assert_eq!(&host[..512], &[0x11; 512][..]);
    assert_eq!(
        &host[512..],
        &[0xEE; 3584][..],
        "the WRITE is 512 bytes long"
    );
    assert!(r.response(qp).is_some());
}

#[test]
fn failed_read_sends_a_response_and_no_data() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    r.fill_host(0, &[0xEE; 4096]);
    r.send(qp, &keyed(opcode::io::READ, 3, 0, 4096), &[]);
    let id = r.poll_requests()[0];
    let req = r.pg.request(id);
    assert!(req.fill_data(0, 4096, 0x99));
    req.c2h_bytes = 4096;
    req.rsp.cid = 3.into();
    req.rsp.set_status(Status::LBA_OUT_OF_RANGE);
    r.pg.complete(id);
    r.flush_and_run();
    assert_eq!(r.fake.nic.stats().rdma_writes, 0);
    assert_eq!(r.host(0, 4096), vec![0xEE; 4096]);
    assert_eq!(r.response(qp).unwrap().status(), Status::LBA_OUT_OF_RANGE);
}

#[test]
fn keyed_write_reads_the_host_data_before_execution() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    r.fill_host(4096, &data);
    r.send(qp, &keyed(opcode::io::WRITE, 9, 4096, 8192), &[]);
    assert!(r.poll_requests().is_empty(), "not before its data is here");
    r.flush_and_run(); // posts and executes the RDMA READ
    assert_eq!(r.fake.nic.stats().rdma_reads, 1);
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 1);
    assert_eq!(r.pg.request(ids[0]).data_to_vec(), data);
    r.execute(ids[0], 0);
    r.flush_and_run();
    assert_eq!(r.response(qp).unwrap().cid(), 9);
    assert_eq!(r.fake.nic.stats().rdma_writes, 0);
}

#[test]
fn in_capsule_write_and_no_data_commands_run_at_once() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    r.send(qp, &in_capsule_write(1, 512), &[0x5A; 512]);
    r.send(qp, &flush(2), &[]);
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 2, "no RDMA READ, no buffer wait");
    assert_eq!(r.pg.request(ids[0]).data_to_vec(), vec![0x5A; 512]);
    assert!(r.pg.request(ids[1]).data_to_vec().is_empty());
    for id in ids {
        r.execute(id, 0);
    }
    r.flush_and_run();
    assert_eq!(r.response(qp).unwrap().cid(), 1);
    assert_eq!(r.response(qp).unwrap().cid(), 2);
    assert_eq!(r.fake.nic.stats().rdma_reads, 0);
}

#[test]
fn bad_sgl_is_completed_with_the_transport_status() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 4);
    // Longer than max_io_size.
    r.send(qp, &keyed(opcode::io::READ, 4, 0, 1 << 20), &[]);
    let id = r.poll_requests()[0];
    let req = r.pg.request(id);
    assert_eq!(req.transport_status, Some(Status::DATA_SGL_LENGTH_INVALID));
    assert!(req.data.is_none());
}

#[test]
fn buffer_starvation_waits_in_order_and_fails_nothing() {
    let mut o = options();
    o.buffer_count = 2;
    let mut r = Rig::with_cache(o, 1);
    let (_, qp) = r.connect(32, 4);
    for cid in 0..5 {
        r.send(qp, &keyed(opcode::io::READ, cid, 0, 4096), &[]);
    }
    let first = r.poll_requests();
    assert_eq!(first.len(), 2, "two buffers, two requests");
    assert_eq!(r.poll_requests().len(), 0);
    // One finishes: its SEND completion gives the buffer back.
    r.execute(first[0], 1);
    r.flush_and_run();
    let next = r.poll_requests();
    assert_eq!(next.len(), 1);
    assert_eq!(
        r.pg.request(next[0]).cmd.cid(),
        2,
        "the oldest waiter first"
    );
    r.execute(first[1], 1);
    r.execute(next[0], 1);
    r.flush_and_run();
    let rest = r.poll_requests();
    let cids: Vec<u16> = rest.iter().map(|&id| r.pg.request(id).cmd.cid()).collect();
    assert_eq!(cids, [3, 4]);
    for id in rest {
        r.execute(id, 1);
    }
    r.flush_and_run();
    r.poll();
    let mut got = Vec::new();
    while let Some(c) = r.response(qp) {
        assert_eq!(c.status(), Status::SUCCESS);
        got.push(c.cid());
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert!(r.buffers_all_back());
}

#[test]
fn read_credits_bound_the_rdma_reads_in_flight() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(32, 1); // the host answers one READ at a time
    for cid in 0..3 {
        r.send(
            qp,
            &keyed(opcode::io::WRITE, cid, cid as usize * 4096, 4096),
            &[],
        );
    }
    r.poll();
    r.pg.flush();
    assert_eq!(r.fake.nic.queued_sends(qp), 1, "one READ posted");
    r.fake.nic.run();
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 1);
    r.pg.flush();
    assert_eq!(r.fake.nic.queued_sends(qp), 1, "the next READ");
    r.fake.nic.run();
    assert_eq!(r.poll_requests().len(), 1);
    r.flush_and_run();
    assert_eq!(r.poll_requests().len(), 1);
    assert_eq!(r.fake.nic.stats().rdma_reads, 3);
}

#[test]
fn overrunning_the_queue_closes_it() {
    let mut r = Rig::new(options());
    let (q, qp) = r.connect(2, 4);
    r.send(qp, &flush(1), &[]);
    r.send(qp, &flush(2), &[]);
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 2);
    // The host sends a third command while both slots are held: its
    // receive was re-armed, but no request slot is free.
    r.flush_and_run();
    r.send(qp, &flush(3), &[]);
    let events = r.poll();
    assert!(events.contains(&TransportEvent::QueueDisconnected { queue: q }));
}

/// Brings one request of a fresh rig to `state` and returns it.
fn request_in(state: RequestState) -> (Rig, u16, HostQp, RequestId) {
    let mut o = options();
    o.buffer_count = 1;
    let mut r = Rig::with_cache(o, 1);
    let (q, qp) = r.connect(8, 1);
    let write = |cid| keyed(opcode::io::WRITE, cid, 0, 4096);
    let id = |slot| RequestId { queue: q, slot };
    match state {
        RequestState::NeedBuffer => {
            r.send(qp, &write(1), &[]); // takes the only buffer
            r.send(qp, &write(2), &[]);
            r.poll();
            assert_eq!(r.state(id(1)), state);
            (r, q, qp, id(1))
        }
        RequestState::NeedReadCredit => {
            let mut o = options();
            o.buffer_count = 4;
            let mut r = Rig::with_cache(o, 1);
            let (q, qp) = r.connect(8, 1);
            r.send(qp, &write(1), &[]);
            r.send(qp, &write(2), &[]);
            r.poll();
            let id = RequestId { queue: q, slot: 1 };
            assert_eq!(r.state(id), state);
            (r, q, qp, id)
        }
        RequestState::ReadingFromHost => {
            r.send(qp, &write(1), &[]);
            r.poll();
            r.pg.flush(); // posted, not executed
            assert_eq!(r.state(id(0)), state);
            (r, q, qp, id(0))
        }
        RequestState::ReadyToExecute => {
            // More ready requests than the poll's event room.
            let mut o = options();
            o.buffer_count = 4;
            let mut r = Rig::with_cache(o, 1);
            let (q, qp) = r.connect(8, 1);
            r.send(qp, &flush(1), &[]);
            r.send(qp, &flush(2), &[]);
            let mut events = Vec::with_capacity(1);
            r.pg.poll(&mut events);
            let id = RequestId { queue: q, slot: 1 };
            assert_eq!(r.state(id), state);
            (r, q, qp, id)
        }
        RequestState::Executing => {
            r.send(qp, &flush(1), &[]);
            let got = r.poll_requests();
            assert_eq!(r.state(got[0]), state);
            (r, q, qp, got[0])
        }
        RequestState::Responding => {
            r.send(qp, &keyed(opcode::io::READ, 1, 0, 4096), &[]);
            let got = r.poll_requests();
            r.execute(got[0], 3);
            r.pg.flush(); // posted, not executed
            assert_eq!(r.state(got[0]), state);
            (r, q, qp, got[0])
        }
        RequestState::Free
        | RequestState::Flushing
        | RequestState::Orphaned
        | RequestState::NeedSendRoom => unreachable!(),
    }
}

const LIVE_STATES: [RequestState; 6] = [
    RequestState::NeedBuffer,
    RequestState::NeedReadCredit,
    RequestState::ReadingFromHost,
    RequestState::ReadyToExecute,
    RequestState::Executing,
    RequestState::Responding,
];

/// Drives a dying queue to its end as the target does: completes what it
/// holds, closes the queue, and lets the NIC flush. Checks nothing leaks.
fn finish_dead_queue(mut r: Rig, q: u16, qp: HostQp) {
    let mut held = Vec::new();
    let mut disconnected = false;
    for _ in 0..10 {
        r.fake.nic.run();
        let mut events = Vec::with_capacity(64);
        r.pg.poll(&mut events);
        for e in events {
            match e {
                TransportEvent::Request(id) => held.push(id),
                TransportEvent::QueueDisconnected { queue } => {
                    assert_eq!(queue, q);
                    disconnected = true;
                }
            }
        }
        if disconnected {
            break;
        }
    }
    assert!(disconnected, "the target hears of the dead queue");
    for id in held.drain(..) {
        r.execute(id, 0);
    }
    // Requests the target held before the queue died complete now too.
    let q_ref = r.pg.queues[usize::from(q)].as_ref().unwrap();
    let orphaned: Vec<u16> = (0..q_ref.slots.len() as u16)
        .filter(|&s| q_ref.table.state(s) == RequestState::Orphaned)
        .collect();
    for slot in orphaned {
        r.execute(RequestId { queue: q, slot }, 0);
    }
    r.pg.close_queue(q);
    for _ in 0..10 {
        r.flush_and_run();
        r.poll();
        if r.pg.queues[usize::from(q)].is_none() {
            break;
        }
    }
    assert!(r.pg.queues[usize::from(q)].is_none(), "queue destroyed");
    assert!(r.fake.nic.is_destroyed(qp));
    assert!(!r.fake.owned(qp), "owner entry removed");
    assert!(r.buffers_all_back(), "every data buffer came back");
}

#[test]
fn a_qp_error_in_every_request_state_leaks_nothing() {
    for state in LIVE_STATES {
        let (r, q, qp, _) = request_in(state);
        r.fake.nic.break_qp(qp);
        finish_dead_queue(r, q, qp);
    }
}

#[test]
fn a_host_disconnect_in_every_request_state_leaks_nothing() {
    for state in LIVE_STATES {
        let (r, q, qp, _) = request_in(state);
        r.fake.disconnect(qp);
        finish_dead_queue(r, q, qp);
    }
}

#[test]
fn a_failed_work_request_closes_the_queue() {
    // The RDMA READ of a write fails (the host's key is gone, say).
    let (r, q, qp, _) = request_in(RequestState::ReadingFromHost);
    r.fake
        .nic
        .fail_next(qp, ibv_wc_status::IBV_WC_REM_ACCESS_ERR);
    finish_dead_queue(r, q, qp);
    // The response SEND fails.
    let (r, q, qp, _) = request_in(RequestState::Responding);
    r.fake
        .nic
        .fail_next(qp, ibv_wc_status::IBV_WC_RETRY_EXC_ERR);
    finish_dead_queue(r, q, qp);
}

#[test]
fn device_removal_closes_its_queues() {
    let (r, q, qp, _) = request_in(RequestState::Executing);
    r.fake.remove_device();
    finish_dead_queue(r, q, qp);
}

#[test]
fn srq_queues_share_the_device_receives() {
    let mut o = options();
    o.srq = true;
    o.srq_depth = 16;
    let mut r = Rig::new(o);
    let (_, a) = r.connect(8, 4);
    let (qb, b) = r.connect(8, 4);
    assert_eq!(r.fake.nic.posted_receives(a), 16);
    r.send(a, &in_capsule_write(1, 256), &[0x42; 256]);
    r.send(b, &keyed(opcode::io::READ, 2, 0, 4096), &[]);
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 2);
    assert_eq!(r.pg.request(ids[0]).data_to_vec(), vec![0x42; 256]);
    for id in ids {
        r.execute(id, 0x77);
    }
    r.flush_and_run();
    assert_eq!(r.response(a).unwrap().cid(), 1);
    assert_eq!(r.response(b).unwrap().cid(), 2);
    assert_eq!(r.host(0, 4096), vec![0x77; 4096]);
    r.poll();
    r.flush_and_run();
    assert_eq!(r.fake.nic.posted_receives(a), 16, "every receive re-posted");
    r.fake.disconnect(b);
    finish_dead_queue(r, qb, b);
}

#[test]
fn many_commands_in_one_poll_share_one_doorbell() {
    let mut r = Rig::new(options());
    let (_, qp) = r.connect(64, 4);
    for cid in 0..16 {
        r.send(qp, &flush(cid), &[]);
    }
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 16);
    for id in ids {
        r.execute(id, 0);
    }
    let before = r.fake.nic.stats();
    r.pg.flush();
    let after = r.fake.nic.stats();
    assert_eq!(after.send_posts - before.send_posts, 1);
    assert_eq!(after.send_wrs - before.send_wrs, 16);
    assert_eq!(
        after.recv_posts - before.recv_posts,
        1,
        "receives re-armed in one post"
    );
}

/// Options with 4 KiB units and a NIC taking 4 SGEs per work request: a
/// 64 KiB transfer chains 16 units in 4 work requests.
fn chained() -> Rig {
    let mut o = options();
    o.io_unit_bytes = 4096;
    o.max_io_bytes = 65536;
    o.buffer_count = 256;
    let mut limits = crate::testing::FakeNic::new(HOST_BYTES).limits();
    limits.max_sge = 4;
    let fake = FakeRdma::with_nic(o, crate::testing::FakeNic::with_limits(HOST_BYTES, limits));
    let pg = fake.poll_group_with_cache(32);
    Rig { fake, pg }
}

#[test]
fn a_chained_read_reaches_the_host_whole_and_in_order() {
    let mut r = chained();
    let (_, qp) = r.connect(8, 4);
    r.fill_host(0, &[0xEE; 65536 + 4096]);
    r.send(qp, &keyed(opcode::io::READ, 1, 0, 65536), &[]);
    let id = r.poll_requests()[0];
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let req = r.pg.request(id);
    assert_eq!(req.data.as_ref().unwrap().units(), 16);
    assert!(req.write_data(0, &data));
    req.c2h_bytes = 65536;
    req.rsp.cid = 1.into();
    r.pg.complete(id);
    r.pg.flush();
    assert_eq!(r.fake.nic.queued_sends(qp), 5, "4 WRITEs and the SEND");
    r.fake.nic.run();
    assert_eq!(r.host(0, 65536), data);
    assert_eq!(
        r.host(65536, 4096),
        vec![0xEE; 4096],
        "nothing past the SGL"
    );
    assert_eq!(r.response(qp).unwrap().cid(), 1);
    r.poll();
    assert!(r.buffers_all_back());
}

#[test]
fn a_chained_write_is_read_whole_before_execution() {
    let mut r = chained();
    let (_, qp) = r.connect(8, 4);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 253) as u8).collect();
    r.fill_host(4096, &data);
    r.send(qp, &keyed(opcode::io::WRITE, 2, 4096, 65536), &[]);
    assert!(r.poll_requests().is_empty());
    r.pg.flush();
    assert_eq!(r.fake.nic.queued_sends(qp), 4, "4 READs of 4 units");
    r.fake.nic.run();
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 1, "once all four READs are done");
    assert_eq!(r.pg.request(ids[0]).data_to_vec(), data);
    assert_eq!(r.fake.nic.stats().rdma_reads, 4);
}

#[test]
fn chained_transfers_wait_for_send_queue_room_and_all_complete() {
    // Depth 4: a send queue of 9 entries. Each 64 KiB read answers with 4
    // WRITEs and a SEND (5 entries): one at a time fits, the rest wait.
    let mut r = chained();
    let (_, qp) = r.connect(4, 4);
    for cid in 0..4 {
        r.send(
            qp,
            &keyed(opcode::io::READ, cid, cid as usize * 65536, 65536),
            &[],
        );
    }
    let ids = r.poll_requests();
    assert_eq!(ids.len(), 4);
    for &id in &ids {
        r.execute(id, id.slot as u8 + 1);
    }
    let waiting = ids
        .iter()
        .filter(|&&id| r.state(id) == RequestState::NeedSendRoom)
        .count();
    assert_eq!(waiting, 3, "9 entries hold one 5-entry response");
    let mut got = Vec::new();
    for _ in 0..20 {
        r.flush_and_run();
        r.poll();
        while let Some(c) = r.response(qp) {
            got.push(c.cid());
        }
        if got.len() == 4 {
            break;
        }
    }
    assert_eq!(got, [0, 1, 2, 3], "every response, in order");
    for (cid, id) in ids.iter().enumerate() {
        assert_eq!(r.host(cid * 65536, 65536), vec![id.slot as u8 + 1; 65536]);
    }
    assert!(r.buffers_all_back());
}

#[test]
fn a_queue_dying_with_chained_reads_out_releases_them_only_once_flushed() {
    let mut r = chained();
    let (q, qp) = r.connect(8, 4);
    r.send(qp, &keyed(opcode::io::WRITE, 1, 0, 65536), &[]);
    r.poll();
    r.pg.flush(); // 4 READs posted, not executed
    let available = r.fake.pool.available() + r.pg.cache.len();
    r.fake.nic.break_qp(qp);
    r.poll(); // nothing completed yet: the chain is still lent to the NIC
    assert_eq!(r.fake.pool.available() + r.pg.cache.len(), available);
    finish_dead_queue(r, q, qp);
}
