//! Identify promises only what every namespace does, and durability flags
//! reach the device: FUA, Flush and the volatile write cache feature.

use bdev::{IoType, IoTypes};
use nvme_spec::fabrics::{connect_offset, CNTLID_DYNAMIC, IATTR_COMMAND};
use nvme_spec::features;
use nvme_spec::identify::{cns, oncs, IdentifyController, IdentifyNamespace};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{FromBytes, Sqe, Status};
use nvmf::testing::{HostController, HostId, Queue, TestBed};
use nvmf::{NamespaceConfig, SubsystemConfig, TargetOptions};
use nvmf_tests::{subsystem, IoLog, ProbeBdev, SUBNQN};

fn bed_with(namespaces: Vec<std::sync::Arc<dyn bdev::Bdev>>) -> TestBed {
    let mut s = SubsystemConfig::new(SUBNQN);
    s.allow_any_host = true;
    for (i, bdev) in namespaces.into_iter().enumerate() {
        s.namespaces.push(NamespaceConfig {
            nsid: i as u32 + 1,
            bdev,
            nguid: None,
            uuid: None,
        });
    }
    TestBed::new(1, TargetOptions::default(), &[s])
}

fn connect(bed: &mut TestBed) -> (HostController, Queue) {
    let mut h = HostController::connect(bed, &HostId::new(1), SUBNQN).unwrap();
    let (q, c) = h.connect_io(bed, 1, 32);
    assert_eq!(c.status(), Status::SUCCESS);
    (h, q)
}

fn identify_controller(h: &mut HostController, bed: &mut TestBed) -> IdentifyController {
    let (c, data) = h.admin.identify(bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    IdentifyController::read_from_bytes(&data).unwrap()
}

fn identify_namespace(h: &mut HostController, bed: &mut TestBed, nsid: u32) -> IdentifyNamespace {
    let (c, data) = h.admin.identify(bed, cns::NAMESPACE, nsid, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    IdentifyNamespace::read_from_bytes(&data).unwrap()
}

fn no_data(opcode: u8, nsid: u32, cdw12: u32) -> Sqe {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.nsid = nsid.into();
    sqe.cdw12 = cdw12.into();
    sqe
}

const FUA: u32 = 1 << 30;

fn write(q: &mut Queue, bed: &mut TestBed, nsid: u32, fua: bool) -> Status {
    q.hq.memory().write_at(1 << 20, &[0x5A; 512]).unwrap();
    let mut sqe = q.rw_command(io::WRITE, nsid, 0, 1, 512);
    sqe.set_fua(fua);
    q.exec(bed, sqe).status()
}

fn taken(log: &IoLog) -> Vec<(IoType, bool)> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn fua_write_zeroes_and_flush_reach_a_device_with_a_volatile_cache() {
    let (cached, log) = ProbeBdev::create("Cached0", IoTypes::all(), true);
    let mut bed = bed_with(vec![cached]);
    let (mut h, mut q) = connect(&mut bed);
    let id = identify_controller(&mut h, &mut bed);
    assert_eq!(id.vwc & 1, 1, "a volatile write cache is present");
    assert_eq!(write(&mut q, &mut bed, 1, true), Status::SUCCESS);
    assert_eq!(write(&mut q, &mut bed, 1, false), Status::SUCCESS);
    let wz = no_data(io::WRITE_ZEROES, 1, FUA | 3);
    assert_eq!(q.exec(&mut bed, wz).status(), Status::SUCCESS);
    assert_eq!(
        q.exec(&mut bed, no_data(io::FLUSH, 1, 0)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        taken(&log),
        vec![
            (IoType::Write, true),
            (IoType::Write, false),
            (IoType::WriteZeroes, true),
            (IoType::Flush, false),
        ]
    );
}

#[test]
fn a_disabled_write_cache_makes_every_write_durable() {
    let (cached, log) = ProbeBdev::create("Cached0", IoTypes::all(), true);
    let mut bed = bed_with(vec![cached]);
    let (mut h, mut q) = connect(&mut bed);
    identify_controller(&mut h, &mut bed);
    let vwc = u32::from(features::VOLATILE_WRITE_CACHE);
    let c = h.admin.features(&mut bed, admin::SET_FEATURES, vwc, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let c = h.admin.features(&mut bed, admin::GET_FEATURES, vwc, 0);
    assert_eq!((c.status(), c.dw0()), (Status::SUCCESS, 0));
    assert_eq!(write(&mut q, &mut bed, 1, false), Status::SUCCESS);
    let wz = no_data(io::WRITE_ZEROES, 1, 0);
    assert_eq!(q.exec(&mut bed, wz).status(), Status::SUCCESS);
    assert_eq!(
        taken(&log),
        vec![(IoType::Write, true), (IoType::WriteZeroes, true)],
        "write-through once the host turned the cache off"
    );
    // A reconnecting host sees the cache still present and may enable it.
    let c = h.admin.features(&mut bed, admin::SET_FEATURES, vwc, 1);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(write(&mut q, &mut bed, 1, false), Status::SUCCESS);
    assert_eq!(taken(&log), vec![(IoType::Write, false)]);
}

#[test]
fn without_a_cache_none_is_claimed_nor_controlled() {
    let mut bed = TestBed::new(1, TargetOptions::default(), &[subsystem(true, &[])]);
    let (mut h, mut q) = connect(&mut bed);
    let id = identify_controller(&mut h, &mut bed);
    assert_eq!(id.vwc, 0, "RAM and null bdevs have no volatile write cache");
    let vwc = u32::from(features::VOLATILE_WRITE_CACHE);
    for op in [admin::SET_FEATURES, admin::GET_FEATURES] {
        let c = h.admin.features(&mut bed, op, vwc, 0);
        assert_eq!(c.status(), Status::INVALID_FIELD, "opcode {op:#x}");
    }
    assert_eq!(
        q.exec(&mut bed, no_data(io::FLUSH, 1, 0)).status(),
        Status::SUCCESS
    );
}

#[test]
fn a_cached_namespace_added_after_identify_is_written_through() {
    let mut bed = bed_with(vec![nvmf_tests::arc_bdev("Malloc0", 2048)]);
    let (mut h, mut q) = connect(&mut bed);
    assert_eq!(identify_controller(&mut h, &mut bed).vwc, 0);
    let (cached, log) = ProbeBdev::create("Cached1", IoTypes::all(), true);
    let ns = NamespaceConfig {
        nsid: 2,
        bdev: cached,
        nguid: None,
        uuid: None,
    };
    bed.target.add_namespace(SUBNQN, &ns).unwrap();
    for _ in 0..100 {
        bed.step();
    }
    assert_eq!(write(&mut q, &mut bed, 2, false), Status::SUCCESS);
    assert_eq!(
        taken(&log),
        vec![(IoType::Write, true)],
        "the host was told of no cache, so it will never flush: write through"
    );
}

#[test]
fn oncs_is_what_every_namespace_does() {
    let no_wz = IoTypes::all().without(IoType::WriteZeroes);
    let (lacking, _) = ProbeBdev::create("NoWz0", no_wz, false);
    let cases: Vec<(Vec<std::sync::Arc<dyn bdev::Bdev>>, u16)> = vec![
        (
            vec![nvmf_tests::arc_bdev("Malloc0", 64)],
            oncs::COMPARE | oncs::WRITE_ZEROES | oncs::DATASET_MANAGEMENT,
        ),
        (
            vec![
                nvmf_tests::arc_bdev("Malloc0", 64),
                bdev::create_null("Null0", 64, 512).unwrap(),
            ],
            oncs::WRITE_ZEROES | oncs::DATASET_MANAGEMENT,
        ),
        (
            vec![nvmf_tests::arc_bdev("Malloc0", 64), lacking],
            oncs::COMPARE | oncs::DATASET_MANAGEMENT,
        ),
        (vec![], oncs::DATASET_MANAGEMENT),
    ];
    for (namespaces, expected) in cases {
        let n = namespaces.len() as u32;
        let mut bed = bed_with(namespaces);
        let (mut h, mut q) = connect(&mut bed);
        let got = identify_controller(&mut h, &mut bed).oncs.get();
        assert_eq!(got, expected);
        // The invariant: whatever is advertised works on every namespace.
        for nsid in 1..=n {
            let mut probes = vec![(
                oncs::DATASET_MANAGEMENT,
                no_data(io::DATASET_MANAGEMENT, nsid, 0),
            )];
            probes.push((oncs::WRITE_ZEROES, no_data(io::WRITE_ZEROES, nsid, 0)));
            for (bit, sqe) in probes {
                if got & bit != 0 {
                    let s = q.exec(&mut bed, sqe).status();
                    assert_ne!(
                        s,
                        Status::INVALID_OPCODE,
                        "advertised {bit:#x} on nsid {nsid}"
                    );
                }
            }
            if got & oncs::COMPARE != 0 {
                let c = q.rw_command(io::COMPARE, nsid, 0, 1, 512);
                assert_ne!(q.exec(&mut bed, c).status(), Status::INVALID_OPCODE);
            }
        }
    }
}

#[test]
fn dlfeat_and_nsfeat_say_what_each_namespace_does() {
    let (no_unmap, _) = ProbeBdev::create("NoUnmap0", IoTypes::all().without(IoType::Unmap), false);
    let mut bed = bed_with(vec![nvmf_tests::arc_bdev("Malloc0", 64), no_unmap]);
    let (mut h, _q) = connect(&mut bed);
    let malloc = identify_namespace(&mut h, &mut bed, 1);
    assert_eq!(malloc.dlfeat, 0b1001, "deallocated blocks read zeroes");
    let plain = identify_namespace(&mut h, &mut bed, 2);
    assert_eq!(plain.dlfeat, 0, "no deallocation, no promise about it");
    assert_eq!(
        malloc.nsfeat, 0,
        "no thin provisioning; NGUIDs may be reused"
    );
}

#[test]
fn a_namespace_lacking_an_advertised_command_is_refused_while_hosts_rely_on_it() {
    let mut bed = bed_with(vec![nvmf_tests::arc_bdev("Malloc0", 64)]);
    let ns = |nsid, bdev| NamespaceConfig {
        nsid,
        bdev,
        nguid: None,
        uuid: None,
    };
    let (mut h, _q) = connect(&mut bed);
    assert_ne!(
        identify_controller(&mut h, &mut bed).oncs.get() & oncs::COMPARE,
        0
    );
    let null = bdev::create_null("Null0", 64, 512).unwrap();
    let e = bed.target.add_namespace(SUBNQN, &ns(2, null)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("Compare") && msg.contains("Null0"), "{msg}");
    // A namespace that does everything advertised is welcome.
    let more = nvmf_tests::arc_bdev("Malloc1", 64);
    bed.target.add_namespace(SUBNQN, &ns(3, more)).unwrap();
    // Once no controller relies on the promise, the add is accepted.
    h.shutdown(&mut bed);
    h.admin.hq.disconnect();
    drop(h);
    let gone = bed.step_until(|b| {
        b.target
            .find_subsystem(SUBNQN)
            .is_some_and(|s| s.controller_count() == 0)
    });
    assert!(gone, "the controller went away");
    let null = bdev::create_null("Null0", 64, 512).unwrap();
    bed.target.add_namespace(SUBNQN, &ns(2, null)).unwrap();
}

#[test]
fn fused_commands_are_refused_and_not_run() {
    let mut bed = bed_with(vec![nvmf_tests::arc_bdev("Malloc0", 64)]);
    let (mut h, mut q) = connect(&mut bed);
    assert_eq!(identify_controller(&mut h, &mut bed).fuses.get(), 0);
    for fuse in [1u8, 2, 3] {
        q.hq.memory().write_at(1 << 20, &[0xEE; 512]).unwrap();
        let mut sqe = q.rw_command(io::WRITE, 1, 7, 1, 512);
        sqe.flags |= fuse;
        let c = q.exec(&mut bed, sqe);
        assert_eq!(c.status(), Status::INVALID_FIELD, "fuse {fuse}");
        assert!(c.status().dnr);
        let mut id = Sqe::new(admin::IDENTIFY, 0);
        id.flags |= fuse;
        assert_eq!(h.admin.exec(&mut bed, id).status(), Status::INVALID_FIELD);
    }
    let (c, data) = q.read(&mut bed, 1, 7, 512, 1);
    assert_eq!(c.status(), Status::SUCCESS);
    assert!(data.iter().all(|&b| b == 0), "no fused write ran");
}

#[test]
fn an_admin_queue_below_32_entries_is_refused() {
    let mut bed = bed_with(vec![nvmf_tests::arc_bdev("Malloc0", 64)]);
    let host = HostId::new(1);
    let mut q = bed.open_queue(0, 32);
    let c = q.connect(&mut bed, &host, SUBNQN, CNTLID_DYNAMIC, 30, 5000);
    assert_eq!(c.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        c.dw0(),
        nvme_spec::fabrics::connect_invalid_param_dw0(IATTR_COMMAND, connect_offset::SQSIZE)
    );
    let c = q.connect(&mut bed, &host, SUBNQN, CNTLID_DYNAMIC, 31, 5000);
    assert_eq!(
        c.status(),
        Status::SUCCESS,
        "32 entries is the minimum, and enough"
    );
}

#[test]
fn every_controller_kind_serves_what_its_identify_claims() {
    use nvme_spec::identify::lpa;
    let mut bed = TestBed::new(1, TargetOptions::default(), &[subsystem(true, &[])]);
    let (mut h, _q) = connect(&mut bed);
    let id = identify_controller(&mut h, &mut bed);
    assert_eq!(id.lpa & lpa::COMMANDS_EFFECTS, lpa::COMMANDS_EFFECTS);
    assert_eq!(id.cmic, 0b11, "several ports and controllers");
    let (c, effects) = h.admin.get_log(
        &mut bed,
        nvme_spec::log::lid::COMMANDS_SUPPORTED_AND_EFFECTS,
        0,
        4096,
        false,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let io_supported = |op: u8| effects[1024 + 4 * usize::from(op)] & 1 != 0;
    assert!(io_supported(io::READ) && io_supported(io::WRITE) && io_supported(io::WRITE_ZEROES));
    assert!(
        !io_supported(io::COMPARE),
        "the null namespace cannot compare: not in ONCS, not here"
    );
    assert_eq!(id.oncs.get() & oncs::COMPARE, 0);

    let host = HostId::new(1);
    let mut d = bed.open_queue(0, 32);
    let c = d.connect(
        &mut bed,
        &host,
        nvme_spec::fabrics::DISCOVERY_NQN,
        CNTLID_DYNAMIC,
        31,
        0,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    d.enable(&mut bed);
    let (c, data) = d.identify(&mut bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let disc = IdentifyController::read_from_bytes(&data).unwrap();
    assert_eq!(
        disc.lpa & lpa::COMMANDS_EFFECTS,
        0,
        "not served, so not claimed"
    );
    let (c, _) = d.get_log(
        &mut bed,
        nvme_spec::log::lid::COMMANDS_SUPPORTED_AND_EFFECTS,
        0,
        4096,
        false,
    );
    assert_eq!(c.status(), Status::INVALID_LOG_PAGE);
    assert!(
        disc.sn.iter().any(|&b| b != b' ' && b != 0),
        "discovery serial filled in"
    );
    assert!(
        disc.mn.iter().any(|&b| b != b' ' && b != 0),
        "discovery model filled in"
    );
    assert_eq!(disc.cmic, 0);
}

#[test]
fn smart_counts_what_the_host_did() {
    let mut bed = TestBed::new(1, TargetOptions::default(), &[subsystem(true, &[])]);
    let (mut h, mut q) = connect(&mut bed);
    for lba in 0..3 {
        assert_eq!(
            q.write(&mut bed, 1, lba, 512, &[1; 1024]).status(),
            Status::SUCCESS
        );
    }
    for _ in 0..2 {
        assert_eq!(q.read(&mut bed, 1, 0, 512, 4).0.status(), Status::SUCCESS);
    }
    let (c, log) = h
        .admin
        .get_log(&mut bed, nvme_spec::log::lid::SMART_HEALTH, 0, 512, false);
    assert_eq!(c.status(), Status::SUCCESS);
    let smart = nvme_spec::log::SmartLog::read_from_bytes(&log).unwrap();
    let n = |f: &[u8; 16]| u128::from_le_bytes(*f);
    assert_eq!(n(&smart.host_write_commands), 3);
    assert_eq!(n(&smart.host_read_commands), 2);
    assert_eq!(
        n(&smart.data_units_written),
        1,
        "3 KiB rounds up to one unit of 512,000 bytes"
    );
    assert_eq!(n(&smart.data_units_read), 1);
    assert_eq!(n(&smart.power_cycles), 1);
    assert_eq!(n(&smart.power_on_hours), 0, "started just now");
    assert_eq!(n(&smart.controller_busy_time), 0, "under a minute");
}
