//! Multi-reactor queues, keep-alive expiry, asynchronous events, threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_spec::fabrics::{self, CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvme_spec::features::{self, aen};
use nvme_spec::identify::cns;
use nvme_spec::log::lid;
use nvme_spec::opcode::admin;
use nvme_spec::{Sqe, Status};
use nvmf::testing::{HostController, HostId, Queue, TestBed};
use nvmf::{NamespaceConfig, SubsystemConfig, TargetOptions};
use nvmf_tests::{arc_bdev, bed, subsystem, SUBNQN};

#[test]
fn two_io_queues_on_two_reactors_serve_one_controller() {
    let mut bed = bed(2);
    let mut ctrl = HostController::connect(&mut bed, &HostId::new(1), SUBNQN).unwrap();
    let (mut q1, c1) = ctrl.connect_io(&mut bed, 1, 64);
    let (mut q2, c2) = ctrl.connect_io(&mut bed, 2, 64);
    assert_eq!(
        (c1.status(), c2.status()),
        (Status::SUCCESS, Status::SUCCESS)
    );
    let load = bed.target.queue_load();
    assert_eq!(load, vec![1, 1], "one I/O queue per reactor: {load:?}");
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        q1.write(&mut bed, 1, 0, 512, &data).status(),
        Status::SUCCESS
    );
    let (c, back) = q2.read(&mut bed, 1, 0, 512, 8);
    assert_eq!((c.status(), back), (Status::SUCCESS, data.clone()));
    assert_eq!(
        q2.write(&mut bed, 1, 64, 512, &data).status(),
        Status::SUCCESS
    );
    let (_, back) = q1.read(&mut bed, 1, 64, 512, 8);
    assert_eq!(back, data);
    // Disabling the controller (on reactor 0) tears down queues on both reactors.
    assert!(ctrl.shutdown(&mut bed));
    assert!(bed.step_until(|_| q1.hq.is_closed_by_target() && q2.hq.is_closed_by_target()));
}

#[test]
fn keep_alive_expiry_tears_down_only_that_controller() {
    let mut bed = bed(2);
    let start = Instant::now();
    let mut quiet = bed.open_queue(0, 32);
    let host = HostId::new(1);
    let c = quiet.connect(&mut bed, &host, SUBNQN, CNTLID_DYNAMIC, 31, 300);
    assert_eq!(c.status(), Status::SUCCESS);
    let cntlid = c.dw0() as u16;
    quiet.enable(&mut bed);
    let mut io = bed.open_queue(1, 32);
    assert_eq!(
        io.connect(&mut bed, &host, SUBNQN, cntlid, 31, 0).status(),
        Status::SUCCESS
    );
    let mut chatty = HostController::connect(&mut bed, &HostId::new(2), SUBNQN).unwrap();
    let mut last_ka = Instant::now();
    let mut done = |_: &mut TestBed| {
        if last_ka.elapsed() > Duration::from_millis(100) {
            last_ka = Instant::now();
            let mut ka = Sqe::new(admin::KEEP_ALIVE, 0xABC);
            ka.dptr = chatty.admin.hq.keyed_sgl(0, 0);
            let _ = chatty.admin.hq.submit(ka);
        }
        quiet.hq.is_closed_by_target() && io.hq.is_closed_by_target()
            || start.elapsed() > Duration::from_secs(5)
    };
    // Bounded by time, not steps: a step takes as long as the poll does.
    while !bed.step_until(&mut done) {}
    let expired = start.elapsed() <= Duration::from_secs(5);
    assert!(
        expired && quiet.hq.is_closed_by_target(),
        "KATO 300 ms expired: admin queue closed"
    );
    assert!(
        io.hq.is_closed_by_target(),
        "and its I/O queue on the other reactor"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "not before KATO"
    );
    assert_eq!(
        bed.target
            .find_subsystem(SUBNQN)
            .unwrap()
            .controller_count(),
        1,
        "only the chatty one remains"
    );
    assert_eq!(
        chatty
            .admin
            .features(&mut bed, admin::KEEP_ALIVE, 0, 0)
            .status(),
        Status::SUCCESS
    );
}

fn submit_aer(q: &mut Queue) -> u16 {
    let cid = q.cid();
    let mut s = Sqe::new(admin::ASYNC_EVENT_REQUEST, cid);
    s.dptr = q.hq.keyed_sgl(0, 0);
    q.hq.submit(s).unwrap();
    cid
}

#[test]
fn namespace_changed_event() {
    let mut bed = TestBed::new(2, TargetOptions::default(), &[subsystem(true, &[])]);
    let mut ctrl = HostController::connect(&mut bed, &HostId::new(1), SUBNQN).unwrap();
    let (mut ioq, _) = ctrl.connect_io(&mut bed, 1, 32);
    let c = ctrl.admin.features(
        &mut bed,
        admin::SET_FEATURES,
        u32::from(features::ASYNC_EVENT_CONFIG),
        aen::NAMESPACE_ATTRIBUTE,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let aer = submit_aer(&mut ctrl.admin);
    let ns = NamespaceConfig {
        nsid: 5,
        bdev: arc_bdev("Malloc5", 256),
        nguid: None,
        uuid: None,
    };
    bed.target.add_namespace(SUBNQN, &ns).unwrap();
    let c = ctrl.admin.wait(&mut bed, aer);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(
        c.dw0(),
        0x04_00_02,
        "notice, namespace attribute changed, log 04h"
    );
    let (c, log) = ctrl
        .admin
        .get_log(&mut bed, lid::CHANGED_NS_LIST, 0, 4096, false);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(u32::from_le_bytes(log[0..4].try_into().unwrap()), 5);
    assert_eq!(u32::from_le_bytes(log[4..8].try_into().unwrap()), 0);
    let (_, list) = ctrl.admin.identify(&mut bed, cns::ACTIVE_NS_LIST, 0, 0);
    assert_eq!(u32::from_le_bytes(list[8..12].try_into().unwrap()), 5);
    let data = [0xA5u8; 512];
    assert_eq!(
        ioq.write(&mut bed, 5, 255, 512, &data).status(),
        Status::SUCCESS,
        "the new namespace serves I/O"
    );
    // Removal: new event after the log was read; I/O to it fails cleanly.
    let aer = submit_aer(&mut ctrl.admin);
    bed.target.remove_namespace(SUBNQN, 5).unwrap();
    assert_eq!(ctrl.admin.wait(&mut bed, aer).dw0(), 0x04_00_02);
    let (c, _) = ioq.read(&mut bed, 5, 0, 512, 1);
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT);
    // A duplicate NSID is a clear error.
    let dup = NamespaceConfig {
        nsid: 1,
        bdev: arc_bdev("Malloc6", 8),
        nguid: None,
        uuid: None,
    };
    let e = bed
        .target
        .add_namespace(SUBNQN, &dup)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already in use"), "{e}");
}

#[test]
fn discovery_changed_event() {
    let mut bed = bed(1);
    let host = HostId::new(3);
    let mut d = bed.open_queue(0, 32);
    assert_eq!(
        d.connect(&mut bed, &host, DISCOVERY_NQN, CNTLID_DYNAMIC, 31, 0)
            .status(),
        Status::SUCCESS
    );
    d.enable(&mut bed);
    let (_, head) = d.get_log(&mut bed, lid::DISCOVERY, 0, 20, false);
    let genctr = u64::from_le_bytes(head[0..8].try_into().unwrap());
    let c = d.features(
        &mut bed,
        admin::SET_FEATURES,
        u32::from(features::ASYNC_EVENT_CONFIG),
        aen::DISCOVERY_LOG_CHANGE,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let aer = submit_aer(&mut d);
    let mut s2 = SubsystemConfig::new("nqn.2016-06.io.spdk:cnode2");
    s2.allow_any_host = true;
    s2.listeners.push(nvmf::testing::listener());
    bed.target.add_subsystem(&s2).unwrap();
    let c = d.wait(&mut bed, aer);
    assert_eq!((c.status(), c.dw0()), (Status::SUCCESS, 0x70_F0_02));
    let (_, head) = d.get_log(&mut bed, lid::DISCOVERY, 0, 20, false);
    assert!(
        u64::from_le_bytes(head[0..8].try_into().unwrap()) > genctr,
        "genctr changes with the log"
    );
    assert_eq!(u64::from_le_bytes(head[8..16].try_into().unwrap()), 3);
}

/// The same target on real pinned-less reactor threads, the host on this thread.
#[test]
fn threaded_reactors_serve_io_and_shut_down() {
    let transport = nvmf::loopback::LoopbackTransport::new(4096, 131_072, 8192, 1024).unwrap();
    let options = TargetOptions {
        acceptor_poll_period_us: 100,
        ..TargetOptions::default()
    };
    let target = nvmf::Target::new(options, vec![transport.clone()]).unwrap();
    let mut sub = subsystem(true, &[]);
    sub.listeners.push(nvmf::testing::listener());
    target.add_subsystem(&sub).unwrap();
    let mask = reactor::ReactorMask::from_cores(&[0, 1]).unwrap();
    let config = reactor::ReactorConfig {
        pin_threads: false,
        idle_sleep_us: 20,
        ..Default::default()
    };
    let t2 = target.clone();
    let running =
        reactor::spawn_reactors(&mask, &config, move |ctx| t2.init_reactor(ctx).unwrap()).unwrap();
    let host = HostId::new(4);
    let wait = |q: &mut nvmf::loopback::HostQueue, cid: u16| -> nvme_spec::Cqe {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = q.poll_completion() {
                if c.cid() == cid {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "no completion for cid {cid}");
            std::thread::yield_now();
        }
    };
    let connect = |qid: u16, cntlid: u16| {
        let mut q = transport
            .connect(&nvmf::testing::listener(), qid, 32, 1 << 20)
            .unwrap();
        let mut data = fabrics::ConnectData::new_zeroed_data();
        data.hostid = host.hostid;
        data.cntlid = cntlid.into();
        nvme_spec::put_str_nul_padded(&mut data.subnqn, SUBNQN);
        nvme_spec::put_str_nul_padded(&mut data.hostnqn, &host.hostnqn);
        q.memory()
            .write_at(0, nvme_spec::IntoBytes::as_bytes(&data))
            .unwrap();
        let sqe = fabrics::connect_command(qid + 1, qid, 31, 0, q.keyed_sgl(0, 1024));
        q.submit(sqe).unwrap();
        let c = wait(&mut q, qid + 1);
        assert_eq!(c.status(), Status::SUCCESS);
        (q, c.dw0() as u16)
    };
    let (mut admin_q, cntlid) = connect(0, CNTLID_DYNAMIC);
    admin_q
        .submit(fabrics::property_set_command(
            9,
            fabrics::property::CC,
            u64::from(fabrics::cc::build(true, 6, 4, 0)),
            false,
        ))
        .unwrap();
    assert_eq!(wait(&mut admin_q, 9).status(), Status::SUCCESS);
    let (mut q1, _) = connect(1, cntlid);
    let (mut q2, _) = connect(2, cntlid);
    for (i, q) in [&mut q1, &mut q2].into_iter().enumerate() {
        let data = vec![i as u8 + 1; 4096];
        q.memory().write_at(8192, &data).unwrap();
        let mut w = Sqe::new(nvme_spec::opcode::io::WRITE, 20);
        w.nsid = 1.into();
        w.set_slba(8 * i as u64);
        w.set_nlb(8);
        w.dptr = q.keyed_sgl(8192, 4096);
        q.submit(w).unwrap();
        assert_eq!(wait(q, 20).status(), Status::SUCCESS);
    }
    let mut r = Sqe::new(nvme_spec::opcode::io::READ, 21);
    r.nsid = 1.into();
    r.set_slba(0);
    r.set_nlb(16);
    r.dptr = q2.keyed_sgl(16384, 8192);
    q2.submit(r).unwrap();
    assert_eq!(wait(&mut q2, 21).status(), Status::SUCCESS);
    let mut back = vec![0; 8192];
    q2.memory().read_at(16384, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 1) && back[4096..].iter().all(|&b| b == 2));
    // SIGTERM path: shutdown drains and closes every queue.
    running.handle().request_shutdown();
    running.join().expect("reactors exit cleanly");
    assert!(admin_q.is_closed_by_target() && q1.is_closed_by_target() && q2.is_closed_by_target());
    let _ = Arc::strong_count(&target);
}

trait NewZeroed {
    fn new_zeroed_data() -> Self;
}
impl NewZeroed for fabrics::ConnectData {
    fn new_zeroed_data() -> Self {
        <fabrics::ConnectData as nvme_spec::FromZeros>::new_zeroed()
    }
}
