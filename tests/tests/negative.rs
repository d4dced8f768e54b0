//! Bad input gets the spec's status; other controllers keep working.

use nvme_spec::fabrics::{
    self, cc, connect_offset, property, CNTLID_DYNAMIC, IATTR_COMMAND, IATTR_DATA,
};
use nvme_spec::features;
use nvme_spec::identify::cns;
use nvme_spec::log::lid;
use nvme_spec::opcode::{admin, io};
use nvme_spec::{Cqe, SglDescriptor, Sqe, Status, U32};
use nvmf::testing::{HostController, HostId, Queue, TestBed};
use nvmf::TargetOptions;
use nvmf_tests::{subsystem, SUBNQN};

/// A target with one healthy controller and I/O queue already running.
struct Fixture {
    bed: TestBed,
    healthy: HostController,
    healthy_io: Queue,
}

fn fixture() -> Fixture {
    fixture_with(subsystem(true, &[]))
}

fn fixture_with(sub: nvmf::SubsystemConfig) -> Fixture {
    let mut bed = TestBed::new(1, TargetOptions::default(), &[sub]);
    let host = HostId::new(9);
    bed.target.allow_host(SUBNQN, &host.hostnqn).unwrap();
    let mut healthy = HostController::connect(&mut bed, &host, SUBNQN).expect("healthy controller");
    let (healthy_io, c) = healthy.connect_io(&mut bed, 1, 32);
    assert_eq!(c.status(), Status::SUCCESS);
    Fixture {
        bed,
        healthy,
        healthy_io,
    }
}

impl Fixture {
    /// The healthy controller still does I/O and answers admin commands.
    fn still_healthy(&mut self) {
        let data = [0x5Au8; 512];
        assert_eq!(
            self.healthy_io
                .write(&mut self.bed, 1, 3, 512, &data)
                .status(),
            Status::SUCCESS
        );
        let (c, back) = self.healthy_io.read(&mut self.bed, 1, 3, 512, 1);
        assert_eq!(c.status(), Status::SUCCESS);
        assert_eq!(back, data);
        assert_eq!(
            self.healthy
                .admin
                .features(&mut self.bed, admin::KEEP_ALIVE, 0, 0)
                .status(),
            Status::SUCCESS
        );
    }

    fn new_controller(&mut self, n: u8) -> HostController {
        HostController::connect(&mut self.bed, &HostId::new(n), SUBNQN).expect("connect")
    }
}

fn assert_invalid_param(c: &Cqe, iattr: u8, ipo: u16) {
    assert_eq!(c.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        c.dw0(),
        fabrics::connect_invalid_param_dw0(iattr, ipo),
        "IATTR/IPO"
    );
}

#[test]
fn unknown_subsystem_nqn() {
    let mut f = fixture();
    let mut q = f.bed.open_queue(0, 32);
    let c = q.connect(
        &mut f.bed,
        &HostId::new(1),
        "nqn.2016-06.io.spdk:nope",
        CNTLID_DYNAMIC,
        31,
        5000,
    );
    assert_invalid_param(&c, IATTR_DATA, connect_offset::DATA_SUBNQN);
    f.still_healthy();
}

#[test]
fn host_not_allowed() {
    let allowed = HostId::new(1);
    let mut f = fixture_with(subsystem(false, &[&allowed.hostnqn]));
    let mut q = f.bed.open_queue(0, 32);
    let c = q.connect(
        &mut f.bed,
        &HostId::new(2),
        SUBNQN,
        CNTLID_DYNAMIC,
        31,
        5000,
    );
    assert_eq!(c.status(), Status::CONNECT_INVALID_HOST);
    assert_eq!(
        c.dw0(),
        fabrics::connect_invalid_param_dw0(IATTR_DATA, connect_offset::DATA_HOSTNQN)
    );
    assert!(HostController::connect(&mut f.bed, &allowed, SUBNQN).is_ok());
    // The refused host's discovery log shows nothing it may not use.
    let mut d = f.bed.open_queue(0, 32);
    let c = d.connect(
        &mut f.bed,
        &HostId::new(2),
        fabrics::DISCOVERY_NQN,
        CNTLID_DYNAMIC,
        31,
        0,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    d.enable(&mut f.bed);
    let (_, head) = d.get_log(&mut f.bed, lid::DISCOVERY, 0, 20, false);
    assert_eq!(
        u64::from_le_bytes(head[8..16].try_into().unwrap()),
        1,
        "only the discovery subsystem itself"
    );
    f.still_healthy();
}

/// SPDK's perf and identify send an empty host NQN unless given one: SPDK's
/// target and nvmet take it where any host is allowed, and so do we.
#[test]
fn an_empty_host_nqn_is_taken_only_where_any_host_is() {
    let anonymous = HostId {
        hostnqn: String::new(),
        hostid: [7; 16],
    };
    let mut f = fixture();
    let mut h = HostController::connect(&mut f.bed, &anonymous, SUBNQN).expect("allow_any_host");
    let (mut io, c) = h.connect_io(&mut f.bed, 1, 32);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(
        io.write(&mut f.bed, 1, 9, 512, &[0x42; 512]).status(),
        Status::SUCCESS
    );
    let mut d = f.bed.open_queue(0, 32);
    let c = d.connect(
        &mut f.bed,
        &anonymous,
        fabrics::DISCOVERY_NQN,
        CNTLID_DYNAMIC,
        31,
        0,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    d.enable(&mut f.bed);
    let (c, head) = d.get_log(&mut f.bed, lid::DISCOVERY, 0, 20, false);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(u64::from_le_bytes(head[8..16].try_into().unwrap()), 2);
    f.still_healthy();

    let listed = HostId::new(1);
    let mut f = fixture_with(subsystem(false, &[&listed.hostnqn]));
    let mut q = f.bed.open_queue(0, 32);
    let c = q.connect(&mut f.bed, &anonymous, SUBNQN, CNTLID_DYNAMIC, 31, 5000);
    assert_eq!(
        c.status(),
        Status::CONNECT_INVALID_HOST,
        "no NQN matches a hosts list"
    );
    f.still_healthy();
}

#[test]
fn invalid_host_nqn_and_record_format() {
    let mut f = fixture();
    let mut q = f.bed.open_queue(0, 32);
    let bad = HostId {
        hostnqn: "not-an-nqn".into(),
        hostid: [1; 16],
    };
    let c = q.connect(&mut f.bed, &bad, SUBNQN, CNTLID_DYNAMIC, 31, 5000);
    assert_invalid_param(&c, IATTR_DATA, connect_offset::DATA_HOSTNQN);
    let mut q = f.bed.open_queue(0, 32);
    let mut sqe = fabrics::connect_command(0, 0, 31, 0, q.hq.keyed_sgl(0, 1024));
    sqe.cdw10 = U32::new(sqe.cdw10.get() | 1);
    assert_eq!(
        q.exec(&mut f.bed, sqe).status(),
        Status::CONNECT_INCOMPATIBLE_FORMAT
    );
    f.still_healthy();
}

#[test]
fn bad_cntlid() {
    let mut f = fixture();
    let host = f.healthy.host.clone();
    let mut q = f.bed.open_queue(2, 32);
    let c = q.connect(&mut f.bed, &host, SUBNQN, 0x1234, 31, 0);
    assert_invalid_param(&c, IATTR_DATA, connect_offset::DATA_CNTLID);
    // A static cntlid on an admin queue is refused as well: this target is dynamic.
    let mut q = f.bed.open_queue(0, 32);
    let c = q.connect(&mut f.bed, &HostId::new(3), SUBNQN, 1, 31, 0);
    assert_invalid_param(&c, IATTR_DATA, connect_offset::DATA_CNTLID);
    // Another host may not join this host's controller.
    let mut q = f.bed.open_queue(2, 32);
    let c = q.connect(&mut f.bed, &HostId::new(4), SUBNQN, f.healthy.cntlid, 31, 0);
    assert_invalid_param(&c, IATTR_DATA, connect_offset::DATA_HOSTNQN);
    f.still_healthy();
}

#[test]
fn qid_beyond_granted_queue_count() {
    let mut f = fixture();
    let mut ctrl = f.new_controller(3);
    let c = ctrl.admin.features(
        &mut f.bed,
        admin::SET_FEATURES,
        u32::from(features::NUMBER_OF_QUEUES),
        0,
    );
    assert_eq!(
        (c.status(), c.dw0()),
        (Status::SUCCESS, 0),
        "one queue granted (0-based)"
    );
    let (_q1, c) = ctrl.connect_io(&mut f.bed, 1, 32);
    assert_eq!(c.status(), Status::SUCCESS);
    let (_q2, c) = ctrl.connect_io(&mut f.bed, 2, 32);
    assert_invalid_param(&c, IATTR_COMMAND, connect_offset::QID);
    // A duplicate qid is refused the same way.
    let (_dup, c) = ctrl.connect_io(&mut f.bed, 1, 32);
    assert_invalid_param(&c, IATTR_COMMAND, connect_offset::QID);
    // Number of Queues cannot change once I/O queues exist.
    let c = ctrl.admin.features(
        &mut f.bed,
        admin::SET_FEATURES,
        u32::from(features::NUMBER_OF_QUEUES),
        3 | 3 << 16,
    );
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    f.still_healthy();
}

#[test]
fn sqsize_beyond_maximum() {
    let mut f = fixture();
    let mut q = f.bed.open_queue(0, 64);
    let c = q.connect(
        &mut f.bed,
        &HostId::new(5),
        SUBNQN,
        CNTLID_DYNAMIC,
        63,
        5000,
    );
    assert_invalid_param(&c, IATTR_COMMAND, connect_offset::SQSIZE);
    let mut ctrl = f.new_controller(6);
    let mut q = f.bed.open_queue(1, 200);
    let c = q.connect(&mut f.bed, &ctrl.host.clone(), SUBNQN, ctrl.cntlid, 199, 0);
    assert_invalid_param(&c, IATTR_COMMAND, connect_offset::SQSIZE);
    let (_q, c) = ctrl.connect_io(&mut f.bed, 1, 128);
    assert_eq!(
        c.status(),
        Status::SUCCESS,
        "128 is the maximum and is accepted"
    );
    f.still_healthy();
}

#[test]
fn io_and_admin_before_cc_en() {
    let mut f = fixture();
    let host = HostId::new(7);
    let mut admin_q = f.bed.open_queue(0, 32);
    let c = admin_q.connect(&mut f.bed, &host, SUBNQN, CNTLID_DYNAMIC, 31, 5000);
    assert_eq!(c.status(), Status::SUCCESS);
    let cntlid = c.dw0() as u16;
    let (c, _) = admin_q.identify(&mut f.bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    let mut q = f.bed.open_queue(1, 32);
    let c = q.connect(&mut f.bed, &host, SUBNQN, cntlid, 31, 0);
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    // After enable and a later disable, I/O on a connected queue is refused
    // and the queue is torn down.
    admin_q.enable(&mut f.bed);
    let mut q = f.bed.open_queue(1, 32);
    assert_eq!(
        q.connect(&mut f.bed, &host, SUBNQN, cntlid, 31, 0).status(),
        Status::SUCCESS
    );
    assert_eq!(
        admin_q.prop_set(&mut f.bed, property::CC, 0).status(),
        Status::SUCCESS
    );
    assert!(
        f.bed.step_until(|_| q.hq.is_closed_by_target()),
        "CC.EN=0 deletes the I/O queues"
    );
    f.still_healthy();
}

#[test]
fn lba_range_past_the_end() {
    let mut f = fixture();
    let (c, _) = f.healthy_io.read(&mut f.bed, 1, 2047, 512, 2);
    assert_eq!(c.status(), Status::LBA_OUT_OF_RANGE);
    let (c, _) = f.healthy_io.read(&mut f.bed, 1, u64::MAX, 512, 1);
    assert_eq!(c.status(), Status::LBA_OUT_OF_RANGE);
    let mut wz = Sqe::new(io::WRITE_ZEROES, 0);
    wz.nsid = 1.into();
    wz.set_slba(2040);
    wz.set_nlb(9);
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, wz).status(),
        Status::LBA_OUT_OF_RANGE
    );
    let (c, _) = f.healthy_io.read(&mut f.bed, 9, 0, 512, 1);
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT);
    f.still_healthy();
}

#[test]
fn transfer_larger_than_mdts() {
    let mut f = fixture();
    // MDTS is 1 MiB: 2049 blocks of 512 bytes are one block too many.
    let sqe = f.healthy_io.rw_command(io::READ, 1, 0, 2049, 2049 * 512);
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, sqe).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // An SGL shorter than NLB says is refused too.
    let sqe = f.healthy_io.rw_command(io::READ, 1, 0, 8, 512);
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, sqe).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    let (c, _) = f.healthy_io.read(&mut f.bed, 1, 0, 512, 256);
    assert_eq!(c.status(), Status::SUCCESS, "exactly MDTS works");
    f.still_healthy();
}

#[test]
fn malformed_sgl() {
    let mut f = fixture();
    let mut sqe = f.healthy_io.rw_command(io::READ, 1, 0, 1, 512);
    sqe.dptr.id = 0x30; // last segment: a list the target does not take
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, sqe).status(),
        Status::INVALID_NUMBER_OF_SGL_DESCRIPTORS
    );
    sqe.dptr.id = 0x90;
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, sqe).status(),
        Status::SGL_DESCRIPTOR_TYPE_INVALID
    );
    sqe.dptr = SglDescriptor::data_block(0, 512); // in-capsule for a read
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, sqe).status(),
        Status::SGL_DESCRIPTOR_TYPE_INVALID
    );
    let mut w = f.healthy_io.rw_command(io::WRITE, 1, 0, 1, 512);
    w.dptr = SglDescriptor::data_block(8192, 512);
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, w).status(),
        Status::SGL_OFFSET_INVALID
    );
    w.dptr = SglDescriptor::keyed(1 << 20, 512, 0xBAD, false); // wrong key
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, w).status(),
        Status::DATA_TRANSFER_ERROR
    );
    w.dptr = f.healthy_io.hq.keyed_sgl(1 << 40, 512); // outside host memory
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, w).status(),
        Status::DATA_TRANSFER_ERROR
    );
    w.flags = 0; // PRP
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, w).status(),
        Status::INVALID_FIELD
    );
    f.still_healthy();
}

#[test]
fn second_connect_on_the_same_queue() {
    let mut f = fixture();
    let host = f.healthy.host.clone();
    let c = f
        .healthy_io
        .connect(&mut f.bed, &host, SUBNQN, f.healthy.cntlid, 31, 0);
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    let c = f
        .healthy
        .admin
        .connect(&mut f.bed, &host, SUBNQN, CNTLID_DYNAMIC, 31, 0);
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    f.still_healthy();
}

#[test]
fn commands_before_connect_and_unknown_opcodes() {
    let mut f = fixture();
    let mut q = f.bed.open_queue(0, 32);
    let (c, _) = q.identify(&mut f.bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    assert_eq!(
        q.prop_get(&mut f.bed, property::CAP, true).status(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    let a = &mut f.healthy.admin;
    for op in [
        admin::FORMAT_NVM,
        admin::NS_MANAGEMENT,
        admin::CREATE_IO_SQ,
        0xC5,
    ] {
        assert_eq!(
            a.exec(&mut f.bed, Sqe::new(op, 0)).status(),
            Status::INVALID_OPCODE,
            "admin {op:#x}"
        );
    }
    for op in [
        io::WRITE_UNCORRECTABLE,
        io::RESERVATION_REGISTER,
        0x99,
        admin::IDENTIFY,
    ] {
        let mut s = Sqe::new(op, 0);
        s.nsid = 1.into();
        assert_eq!(
            f.healthy_io.exec(&mut f.bed, s).status(),
            Status::INVALID_OPCODE,
            "io {op:#x}"
        );
    }
    let mut auth = Sqe::new(nvme_spec::opcode::FABRICS, 0);
    auth.set_fctype(nvme_spec::opcode::fctype::AUTH_SEND);
    assert_eq!(
        f.healthy.admin.exec(&mut f.bed, auth).status(),
        Status::INVALID_OPCODE
    );
    let pg = fabrics::property_get_command(0, property::CAP, true);
    assert_eq!(
        f.healthy_io.exec(&mut f.bed, pg).status(),
        Status::INVALID_OPCODE,
        "properties only on the admin queue"
    );
    f.still_healthy();
}

#[test]
fn admin_status_paths() {
    let mut f = fixture();
    let a = &mut f.healthy.admin;
    let b = &mut f.bed;
    let (c, _) = a.identify(b, 0x1F, 0, 0);
    assert_eq!(c.status(), Status::INVALID_FIELD, "unknown CNS");
    let (c, _) = a.identify(b, cns::NAMESPACE, 0, 0);
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT);
    let (c, data) = a.identify(b, cns::NAMESPACE, 7, 0);
    assert_eq!(c.status(), Status::SUCCESS, "inactive NSID in range");
    assert!(data.iter().all(|&x| x == 0));
    let (c, _) = a.identify(b, cns::NS_ID_DESCRIPTORS, 7, 0);
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT);
    let (c, _) = a.identify(b, cns::CSI_CONTROLLER, 0, 2 << 24);
    assert_eq!(c.status(), Status::INVALID_FIELD, "unknown command set");
    let (c, data) = a.identify(b, cns::INDEPENDENT_NAMESPACE, 1, 0);
    assert_eq!((c.status(), data[14]), (Status::SUCCESS, 1));
    let (c, _) = a.get_log(b, 0x42, 0, 512, false);
    assert_eq!(c.status(), Status::INVALID_LOG_PAGE);
    let (c, _) = a.get_log(b, lid::SMART_HEALTH, 4096, 512, false);
    assert_eq!(c.status(), Status::INVALID_FIELD, "offset past the end");
    let (c, _) = a.get_log(b, lid::SMART_HEALTH, 2, 512, false);
    assert_eq!(
        c.status(),
        Status::INVALID_FIELD,
        "offset not dword aligned"
    );
    let (c, fw) = a.get_log(b, lid::FIRMWARE_SLOT, 0, 512, false);
    assert_eq!((c.status(), fw[0]), (Status::SUCCESS, 1));
    let (c, part) = a.get_log(b, lid::SMART_HEALTH, 508, 8, false);
    assert_eq!(
        c.status(),
        Status::SUCCESS,
        "a read past the end is zero-filled"
    );
    assert!(part[4..].iter().all(|&x| x == 0));
    let (c, _) = a.get_log(b, lid::ERROR, 0, 64, false);
    assert_eq!(c.status(), Status::SUCCESS);
    // Features: unknown, save bit, get/set round trips.
    for fid in [
        0x7Du8,
        features::INTERRUPT_COALESCING,
        features::HOST_MEMORY_BUFFER,
    ] {
        let c = a.features(b, admin::GET_FEATURES, u32::from(fid), 0);
        assert_eq!(c.status(), Status::INVALID_FIELD, "get fid {fid:#x}");
        let c = a.features(b, admin::SET_FEATURES, u32::from(fid), 0);
        assert_eq!(c.status(), Status::INVALID_FIELD, "set fid {fid:#x}");
    }
    let c = a.features(
        b,
        admin::SET_FEATURES,
        u32::from(features::VOLATILE_WRITE_CACHE) | 1 << 31,
        0,
    );
    assert_eq!(c.status(), Status::FEATURE_NOT_SAVEABLE);
    // RAM and null namespaces have no volatile write cache to control.
    for op in [admin::SET_FEATURES, admin::GET_FEATURES] {
        let vwc = u32::from(features::VOLATILE_WRITE_CACHE);
        assert_eq!(a.features(b, op, vwc, 0).status(), Status::INVALID_FIELD);
    }
    assert_eq!(
        a.features(
            b,
            admin::SET_FEATURES,
            u32::from(features::KEEP_ALIVE_TIMER),
            10_000
        )
        .status(),
        Status::SUCCESS
    );
    assert_eq!(
        a.features(
            b,
            admin::GET_FEATURES,
            u32::from(features::KEEP_ALIVE_TIMER),
            0
        )
        .dw0(),
        10_000
    );
    assert_eq!(
        a.features(
            b,
            admin::GET_FEATURES,
            u32::from(features::NUMBER_OF_QUEUES),
            0
        )
        .dw0(),
        62 | 62 << 16
    );
    let c = a.features(
        b,
        admin::SET_FEATURES,
        u32::from(features::ASYNC_EVENT_CONFIG),
        features::aen::DISCOVERY_LOG_CHANGE,
    );
    assert_eq!(
        c.status(),
        Status::INVALID_FIELD,
        "only advertised events can be enabled"
    );
    let c = a.features(
        b,
        admin::GET_FEATURES,
        u32::from(features::ARBITRATION) | 3 << 8,
        0,
    );
    assert_eq!(
        (c.status(), c.dw0()),
        (Status::SUCCESS, 1 << 2),
        "supported capabilities: changeable"
    );
    let c = a.features(
        b,
        admin::GET_FEATURES,
        u32::from(features::HOST_IDENTIFIER),
        0,
    );
    assert_eq!(c.status(), Status::INVALID_FIELD, "EXHID must be set");
    // Properties.
    assert_eq!(a.prop_get(b, 0x40, false).status(), Status::INVALID_FIELD);
    assert_eq!(
        a.prop_get(b, property::CAP, false).status(),
        Status::INVALID_FIELD,
        "CAP is 8 bytes"
    );
    assert_eq!(
        a.prop_set(b, property::CAP, 0).status(),
        Status::INVALID_FIELD
    );
    // AER limit and Abort.
    let mut cids = Vec::new();
    for _ in 0..4 {
        let cid = a.cid();
        let mut s = Sqe::new(admin::ASYNC_EVENT_REQUEST, cid);
        s.dptr = a.hq.keyed_sgl(0, 0);
        a.hq.submit(s).unwrap();
        cids.push(cid);
    }
    assert_eq!(
        a.exec(b, Sqe::new(admin::ASYNC_EVENT_REQUEST, 0)).status(),
        Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED
    );
    let mut abort = Sqe::new(admin::ABORT, 0);
    abort.cdw10 = U32::new(u32::from(cids[0]) << 16);
    let c = a.exec(b, abort);
    assert_eq!(
        (c.status(), c.dw0()),
        (Status::SUCCESS, 0),
        "held AER aborted"
    );
    assert_eq!(a.wait(b, cids[0]).status(), Status::ABORT_REQUESTED);
    abort.cdw10 = U32::new(0x7777 << 16 | 1);
    let c = a.exec(b, abort);
    assert_eq!(
        (c.status(), c.dw0() & 1),
        (Status::SUCCESS, 1),
        "not aborted"
    );
    // Errors went to the error log, newest first.
    let (_, elog) = a.get_log(b, lid::ERROR, 0, 128, false);
    assert_ne!(u64::from_le_bytes(elog[0..8].try_into().unwrap()), 0);
    f.still_healthy();
}

#[test]
fn shutdown_and_reset_keep_others() {
    let mut f = fixture();
    let mut ctrl = f.new_controller(8);
    let (io_q, c) = ctrl.connect_io(&mut f.bed, 1, 32);
    assert_eq!(c.status(), Status::SUCCESS);
    assert!(ctrl.shutdown(&mut f.bed));
    assert!(
        f.bed.step_until(|_| io_q.hq.is_closed_by_target()),
        "shutdown deletes I/O queues"
    );
    let c = ctrl.admin.prop_set(
        &mut f.bed,
        property::CC,
        u64::from(cc::build(false, 6, 4, 0)),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(
        ctrl.admin.prop_get(&mut f.bed, property::CSTS, false).dw0(),
        0
    );
    f.still_healthy();
}
