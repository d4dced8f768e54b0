//! NVMe/TCP over 127.0.0.1: what Linux `nvme discover`/`nvme connect` send, then I/O, with
//! and without digests.

use nvme_spec::fabrics::{CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvme_spec::identify::{cns, IdentifyController};
use nvme_spec::log::{adrfam, lid, trtype, DiscoveryLogEntry};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{get_str_nul_padded, FromBytes, Sqe, Status};
use nvmf::TargetOptions;
use nvmf_tests::tcp::TcpBed;
use nvmf_tests::{subsystem, SUBNQN};
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::Digests;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";

fn bed() -> TcpBed {
    TcpBed::start(2, TargetOptions::default(), &[subsystem(true, &[])])
}

fn identify(host: &mut TcpHost, cns: u8, nsid: u32) -> (Status, Vec<u8>) {
    let mut sqe = Sqe::new(admin::IDENTIFY, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = u32::from(cns).into();
    let (c, data) = host.exec(sqe, &[], 4096).expect("identify");
    (c.status(), data)
}

fn get_log(host: &mut TcpHost, lid: u8, offset: u64, len: u32) -> (Status, Vec<u8>) {
    let mut sqe = Sqe::new(admin::GET_LOG_PAGE, 0);
    let numd = len / 4 - 1;
    sqe.cdw10 = (u32::from(lid) | ((numd & 0xFFFF) << 16)).into();
    sqe.cdw11 = (numd >> 16).into();
    sqe.cdw12 = (offset as u32).into();
    sqe.cdw13 = ((offset >> 32) as u32).into();
    let (c, data) = host.exec(sqe, &[], len).expect("get log page");
    (c.status(), data)
}

/// Admin queue up: ICReq, Connect (data in the capsule), enable.
fn admin_queue(bed: &TcpBed, digests: Digests, subnqn: &str) -> (TcpHost, u16) {
    let mut host = TcpHost::connect(bed.addr, digests).expect("tcp connect");
    let c = host
        .fabrics_connect(0, 31, CNTLID_DYNAMIC, subnqn, HOSTNQN, 5000)
        .expect("connect");
    assert_eq!(c.status(), Status::SUCCESS, "admin Connect");
    host.enable().expect("enable");
    (host, c.dw0() as u16)
}

fn rw(op: u8, nsid: u32, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::new(op, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = (slba as u32).into();
    sqe.cdw11 = ((slba >> 32) as u32).into();
    sqe.cdw12 = (blocks - 1).into();
    sqe
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn discovery_over_tcp_names_the_tcp_listener() {
    let bed = bed();
    let (mut host, _) = admin_queue(&bed, Digests::default(), DISCOVERY_NQN);
    let (s, head) = get_log(&mut host, lid::DISCOVERY, 0, 20);
    assert_eq!(s, Status::SUCCESS);
    let numrec = u64::from_le_bytes(head[8..16].try_into().unwrap());
    assert_eq!(numrec, 2);
    let (s, recs) = get_log(&mut host, lid::DISCOVERY, 1024, 2048);
    assert_eq!(s, Status::SUCCESS);
    let e = DiscoveryLogEntry::read_from_bytes(&recs[1024..2048]).unwrap();
    assert_eq!(get_str_nul_padded(&e.subnqn, true), Some(SUBNQN));
    assert_eq!(e.trtype, trtype::TCP);
    assert_eq!(e.adrfam, adrfam::IPV4);
    assert_eq!(get_str_nul_padded(&e.traddr, true), Some("127.0.0.1"));
    assert_eq!(
        get_str_nul_padded(&e.trsvcid, true),
        Some(bed.addr.port().to_string().as_str())
    );
    assert_eq!(e.tsas, [0; 256], "TSAS: no secure channel (sectype none)");
    assert_eq!(
        e.treq,
        nvme_spec::log::treq::SECURE_CHANNEL_NOT_REQUIRED | nvme_spec::log::treq::DISABLE_SQFLOW
    );
}

fn connect_and_io(digests: Digests) {
    let bed = bed();
    let (mut admin, cntlid) = admin_queue(&bed, digests, SUBNQN);
    let (s, data) = identify(&mut admin, cns::CONTROLLER, 0);
    assert_eq!(s, Status::SUCCESS);
    let id = IdentifyController::read_from_bytes(&data).unwrap();
    assert_eq!(id.cntlid.get(), cntlid);
    let ioccsz = id.ioccsz.get();
    assert!(ioccsz >= 4, "IOCCSZ {ioccsz}");
    // One I/O queue.
    let mut q = TcpHost::connect(bed.addr, digests).expect("io tcp connect");
    q.in_capsule_bytes = ioccsz * 16 - 64;
    let c = q
        .fabrics_connect(1, 127, cntlid, SUBNQN, HOSTNQN, 0)
        .expect("io connect");
    assert_eq!(c.status(), Status::SUCCESS, "I/O Connect");
    for (len, slba, seed) in [
        (512usize, 0u64, 1u8),
        (4096, 8, 2),
        (128 * 1024, 64, 3),
        (1 << 20, 0, 4),
    ] {
        if len == 1 << 20 {
            // Beyond the 2048-block RAM namespace: the null one takes it.
            let data = pattern(len, seed);
            let (c, _) = q
                .exec(rw(io::WRITE, 2, 0, (len / 4096) as u32), &data, 0)
                .unwrap();
            assert_eq!(c.status(), Status::SUCCESS, "1 MiB write");
            let (c, back) = q
                .exec(rw(io::READ, 2, 0, (len / 4096) as u32), &[], len as u32)
                .unwrap();
            assert_eq!(c.status(), Status::SUCCESS, "1 MiB read");
            assert_eq!(back.len(), len);
            continue;
        }
        let data = pattern(len, seed);
        let blocks = (len / 512) as u32;
        let (c, _) = q.exec(rw(io::WRITE, 1, slba, blocks), &data, 0).unwrap();
        assert_eq!(c.status(), Status::SUCCESS, "write of {len}");
        let (c, back) = q
            .exec(rw(io::READ, 1, slba, blocks), &[], len as u32)
            .unwrap();
        assert_eq!(c.status(), Status::SUCCESS, "read of {len}");
        assert!(back == data, "read back what was written ({len} bytes)");
    }
}

/// An I/O queue on `bed`; `cattr` is the Connect's CATTR byte.
fn io_queue_with(bed: &TcpBed, cattr: u8) -> (TcpHost, TcpHost) {
    let (admin, cntlid) = admin_queue(bed, Digests::default(), SUBNQN);
    let mut q = TcpHost::connect(bed.addr, Digests::default()).unwrap();
    q.connect_cattr = cattr;
    let c = q
        .fabrics_connect(1, 31, cntlid, SUBNQN, HOSTNQN, 0)
        .unwrap();
    assert_eq!(
        c.status(),
        Status::SUCCESS,
        "I/O Connect: dw0 {:#x}",
        c.dw0()
    );
    (admin, q)
}

/// Reads 4 KiB, then fails a read; returns how many of the two ended on a SUCCESS flag.
fn success_flags_of_two_reads(q: &mut TcpHost) -> u64 {
    let before = q.success_flag_completions;
    let (c, back) = q.exec(rw(io::READ, 1, 0, 8), &[], 4096).unwrap();
    assert_eq!((c.status(), back.len()), (Status::SUCCESS, 4096));
    // A failed read always gets its response, and no data.
    let (c, back) = q.exec(rw(io::READ, 1, 1 << 40, 8), &[], 4096).unwrap();
    assert_eq!(c.status(), Status::LBA_OUT_OF_RANGE);
    assert!(back.is_empty(), "no data for a failed command");
    q.success_flag_completions - before
}

#[test]
fn a_read_ends_on_a_success_flag_only_where_the_host_disabled_sq_flow_control() {
    let bed = bed();
    let (_a, mut plain) = io_queue_with(&bed, 0);
    assert_eq!(
        success_flags_of_two_reads(&mut plain),
        0,
        "SQ flow control on"
    );
    let (_a, mut off) = io_queue_with(&bed, nvme_spec::fabrics::CATTR_DISABLE_SQFLOW);
    assert_eq!(
        success_flags_of_two_reads(&mut off),
        1,
        "SQ flow control off"
    );
}

#[test]
fn with_c2h_success_off_every_read_gets_a_response_capsule() {
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let bed = TcpBed::start_tuned(
        localhost,
        1,
        TargetOptions::default(),
        &[subsystem(true, &[])],
        |tcp| tcp.c2h_success = false,
    );
    let (_a, mut off) = io_queue_with(&bed, nvme_spec::fabrics::CATTR_DISABLE_SQFLOW);
    assert_eq!(success_flags_of_two_reads(&mut off), 0);
}

#[test]
fn an_ipv6_listener_serves_hosts_and_says_so_in_discovery() {
    let ip: std::net::IpAddr = "::1".parse().unwrap();
    if nvmf_tests::tcp::free_port_on(ip).is_none() {
        eprintln!("skipped: this machine cannot bind ::1");
        return;
    }
    let bed = TcpBed::start_on(ip, 1, TargetOptions::default(), &[subsystem(true, &[])]);
    let (mut host, _) = admin_queue(&bed, Digests::default(), DISCOVERY_NQN);
    let (s, recs) = get_log(&mut host, lid::DISCOVERY, 1024, 2048);
    assert_eq!(s, Status::SUCCESS);
    let e = DiscoveryLogEntry::read_from_bytes(&recs[1024..2048]).unwrap();
    assert_eq!(e.adrfam, adrfam::IPV6);
    assert_eq!(get_str_nul_padded(&e.traddr, true), Some("::1"));
    let (mut admin, cntlid) = admin_queue(&bed, Digests::default(), SUBNQN);
    let (s, _) = identify(&mut admin, cns::CONTROLLER, 0);
    assert_eq!(s, Status::SUCCESS);
    let mut q = TcpHost::connect(bed.addr, Digests::default()).unwrap();
    let c = q
        .fabrics_connect(1, 31, cntlid, SUBNQN, HOSTNQN, 0)
        .unwrap();
    assert_eq!(c.status(), Status::SUCCESS);
    let data = pattern(4096, 9);
    let (c, _) = q.exec(rw(io::WRITE, 1, 16, 8), &data, 0).unwrap();
    assert_eq!(c.status(), Status::SUCCESS);
    let (_, back) = q.exec(rw(io::READ, 1, 16, 8), &[], 4096).unwrap();
    assert!(back == data);
}

#[test]
fn connect_identify_write_and_read_back() {
    connect_and_io(Digests::default());
}

#[test]
fn connect_identify_write_and_read_back_with_digests() {
    connect_and_io(Digests {
        header: true,
        data: true,
    });
}
