//! NVMe/TCP protocol violations over 127.0.0.1: each gets the termination the spec names
//! (C2HTermReq with FES and FEI) and closes that connection only; a digest error in data
//! fails only its command; a second connection keeps working throughout.

use std::io::Read;
use std::time::Duration;

use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::opcode::io;
use nvme_spec::{SglDescriptor, Sqe, Status};
use nvmf::TargetOptions;
use nvmf_tests::tcp::TcpBed;
use nvmf_tests::{subsystem, SUBNQN};
use proptest::prelude::*;
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::{fes, field, pdu_type, CommonHeader, Digests, CMD_HLEN};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";

fn bed() -> TcpBed {
    TcpBed::start(1, TargetOptions::default(), &[subsystem(true, &[])])
}

/// An admin queue up, and an I/O queue on its controller.
fn io_queue(bed: &TcpBed, digests: Digests) -> (TcpHost, TcpHost) {
    let mut admin = TcpHost::connect(bed.addr, digests).expect("tcp connect");
    let c = admin
        .fabrics_connect(0, 31, CNTLID_DYNAMIC, SUBNQN, HOSTNQN, 0)
        .expect("connect");
    assert_eq!(c.status(), Status::SUCCESS);
    admin.enable().expect("enable");
    let cntlid = c.dw0() as u16;
    let mut q = TcpHost::connect(bed.addr, digests).expect("tcp connect");
    q.in_capsule_bytes = 4096;
    let c = q
        .fabrics_connect(1, 15, cntlid, SUBNQN, HOSTNQN, 0)
        .expect("io connect");
    assert_eq!(c.status(), Status::SUCCESS);
    (admin, q)
}

fn rw(op: u8, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::new(op, 0);
    sqe.nsid = 1.into();
    sqe.cdw10 = (slba as u32).into();
    sqe.cdw12 = (blocks - 1).into();
    sqe
}

/// The connection got a C2HTermReq (returned as FES, FEI), then was closed.
fn expect_term(host: &mut TcpHost) -> (u16, u32) {
    let pdu = host.read_pdu().expect("a C2HTermReq");
    let term = pdu
        .term()
        .unwrap_or_else(|| panic!("not a C2HTermReq: {pdu:?}"));
    expect_closed(host);
    term
}

fn expect_closed(host: &mut TcpHost) {
    host.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    match host.stream.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection stayed open: {other:?}"),
    }
}

/// Another connection still reads and writes.
fn still_serves(bed: &TcpBed) {
    let (_admin, mut q) = io_queue(bed, Digests::default());
    let data = vec![0x5A; 4096];
    let (c, _) = q.exec(rw(io::WRITE, 100, 8), &data, 0).expect("write");
    assert_eq!(c.status(), Status::SUCCESS);
    let (c, back) = q.exec(rw(io::READ, 100, 8), &[], 4096).expect("read");
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(back, data);
}

fn raw_capsule_header(t: u8, flags: u8, hlen: u8, pdo: u8, plen: u32) -> Vec<u8> {
    let mut b = vec![0u8; CMD_HLEN];
    CommonHeader {
        pdu_type: t,
        flags,
        hlen,
        pdo,
        plen,
    }
    .write(&mut b);
    b
}

#[test]
fn every_common_header_field_out_of_range_terminates_with_its_offset() {
    let bed = bed();
    let cases: [(Vec<u8>, u16, u32); 5] = [
        (
            raw_capsule_header(0x42, 0, 72, 0, 72),
            fes::INVALID_PDU_HEADER,
            field::TYPE,
        ),
        (
            raw_capsule_header(pdu_type::CAPSULE_CMD, 0, 80, 0, 80),
            fes::INVALID_PDU_HEADER,
            field::HLEN,
        ),
        (
            raw_capsule_header(pdu_type::CAPSULE_CMD, 0, 72, 9, 100),
            fes::INVALID_PDU_HEADER,
            field::PDO,
        ),
        (
            raw_capsule_header(pdu_type::CAPSULE_CMD, 0, 72, 0, 60),
            fes::INVALID_PDU_HEADER,
            field::PLEN,
        ),
        (
            raw_capsule_header(pdu_type::CAPSULE_CMD, 1, 72, 0, 72),
            fes::INVALID_PDU_HEADER,
            field::FLAGS,
        ),
    ];
    for (bytes, want_fes, want_fei) in cases {
        let (_admin, mut q) = io_queue(&bed, Digests::default());
        q.send_raw(&bytes).unwrap();
        assert_eq!(expect_term(&mut q), (want_fes, want_fei), "{bytes:?}");
    }
    still_serves(&bed);
}

#[test]
fn too_much_in_capsule_data_exceeds_the_limit() {
    let bed = bed();
    let (_admin, mut q) = io_queue(&bed, Digests::default());
    let bytes = q.capsule(&rw(io::WRITE, 0, 16), &[0u8; 8192]);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q).0, fes::DATA_LIMIT_EXCEEDED);
    still_serves(&bed);
}

#[test]
fn the_admin_queue_takes_8_kib_in_the_capsule_and_not_a_byte_more() {
    let bed = bed();
    // What Linux may send on an admin queue whatever IOCCSZ says (NVME_TCP_ADMIN_CCSZ):
    // read in full and answered, even though this command fails before Connect.
    let mut host = TcpHost::connect(bed.addr, Digests::default()).unwrap();
    let mut sqe = rw(io::WRITE, 0, 16);
    sqe.dptr = SglDescriptor::data_block(0, 8192);
    host.send_raw(&host.capsule(&sqe, &[0u8; 8192])).unwrap();
    let pdu = host.read_pdu().expect("a response");
    assert_eq!(pdu.ch.pdu_type, pdu_type::CAPSULE_RESP, "{pdu:?}");
    // One byte over: the connection ends.
    let mut host = TcpHost::connect(bed.addr, Digests::default()).unwrap();
    sqe.dptr = SglDescriptor::data_block(0, 8193);
    host.send_raw(&host.capsule(&sqe, &[0u8; 8193])).unwrap();
    assert_eq!(expect_term(&mut host).0, fes::DATA_LIMIT_EXCEEDED);
    still_serves(&bed);
}

#[test]
fn a_second_icreq_is_a_sequence_error() {
    let bed = bed();
    let mut host = TcpHost::connect(bed.addr, Digests::default()).unwrap();
    let icreq = transport_tcp::pdu::icreq(Digests::default());
    host.send_raw(&icreq).unwrap();
    assert_eq!(
        expect_term(&mut host),
        (fes::PDU_SEQUENCE_ERROR, field::TYPE)
    );
    still_serves(&bed);
}

#[test]
fn a_bad_icreq_is_refused_with_its_field() {
    let bed = bed();
    let mut s = std::net::TcpStream::connect(bed.addr).unwrap();
    let mut icreq = transport_tcp::pdu::icreq(Digests::default());
    icreq[8] = 1; // PFV 1
    std::io::Write::write_all(&mut s, &icreq).unwrap();
    let mut term = [0u8; 24];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut term).unwrap();
    assert_eq!(term[0], pdu_type::C2H_TERM);
    assert_eq!(
        u16::from_le_bytes([term[8], term[9]]),
        fes::UNSUPPORTED_PARAMETER
    );
    assert_eq!(
        u32::from_le_bytes(term[10..14].try_into().unwrap()),
        field::ICREQ_PFV
    );
    still_serves(&bed);
}

#[test]
fn a_bad_header_digest_terminates() {
    let bed = bed();
    let both = Digests {
        header: true,
        data: true,
    };
    let (_admin, mut q) = io_queue(&bed, both);
    let mut bytes = q.capsule(&rw(io::READ, 0, 1), &[]);
    bytes[CMD_HLEN] ^= 0xFF; // the header digest
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q).0, fes::HEADER_DIGEST_ERROR);
    still_serves(&bed);
}

#[test]
fn a_bad_data_digest_fails_only_its_command() {
    let bed = bed();
    let both = Digests {
        header: true,
        data: true,
    };
    let (_admin, mut q) = io_queue(&bed, both);
    let mut sqe = rw(io::WRITE, 0, 1);
    sqe.cid = 77.into();
    sqe.dptr = SglDescriptor::data_block(0, 512);
    let mut bytes = q.capsule(&sqe, &[0xAB; 512]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF; // the data digest
    q.send_raw(&bytes).unwrap();
    let pdu = q.read_pdu().expect("a response");
    assert_eq!(pdu.ch.pdu_type, pdu_type::CAPSULE_RESP);
    let status = u16::from_le_bytes([pdu.header[14], pdu.header[15]]) >> 1;
    assert_eq!(status & 0xFF, Status::TRANSIENT_TRANSPORT_ERROR.sc.into());
    assert_eq!(status >> 14 & 1, 0, "DNR clear: the host retries");
    // The block was not written, and the connection goes on.
    let (c, back) = q.exec(rw(io::READ, 0, 1), &[], 512).unwrap();
    assert_eq!(c.status(), Status::SUCCESS);
    assert_ne!(back, vec![0xAB; 512]);
}

#[test]
fn data_before_its_r2t_is_a_sequence_error() {
    let bed = bed();
    let (_admin, mut q) = io_queue(&bed, Digests::default());
    let bytes = q.h2c_data(5, 3, 0, &[0u8; 512], true);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q), (fes::PDU_SEQUENCE_ERROR, field::TTAG));
    still_serves(&bed);
}

/// Sends a write of `len` bytes by R2T; returns (cid, ttag) from the R2T.
fn start_r2t_write(q: &mut TcpHost, len: u32) -> (u16, u16) {
    let mut sqe = rw(io::WRITE, 0, len / 512);
    sqe.cid = 9.into();
    sqe.dptr = SglDescriptor::transport_data_block(len);
    let bytes = q.capsule(&sqe, &[]);
    q.send_raw(&bytes).unwrap();
    let r2t = q.read_pdu().expect("an R2T");
    assert_eq!(r2t.ch.pdu_type, pdu_type::R2T);
    let h = &r2t.header;
    assert_eq!(u16::from_le_bytes([h[0], h[1]]), 9);
    assert_eq!(
        u32::from_le_bytes(h[8..12].try_into().unwrap()),
        len,
        "one R2T for it all"
    );
    (9, u16::from_le_bytes([h[2], h[3]]))
}

#[test]
fn h2c_data_past_the_r2t_or_its_limit_terminates() {
    let bed = bed();
    // Past the end of the R2T.
    let (_a, mut q) = io_queue(&bed, Digests::default());
    let (cid, ttag) = start_r2t_write(&mut q, 8192);
    let bytes = q.h2c_data(cid, ttag, 0, &[0u8; 16384], true);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q), (fes::DATA_OUT_OF_RANGE, field::DATAL));
    // Not where the transfer stands.
    let (_a, mut q) = io_queue(&bed, Digests::default());
    let (cid, ttag) = start_r2t_write(&mut q, 8192);
    let bytes = q.h2c_data(cid, ttag, 512, &[0u8; 512], false);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q), (fes::DATA_OUT_OF_RANGE, field::DATAO));
    // More than MAXH2CDATA in one PDU (the bed allows 32 KiB).
    let (_a, mut q) = io_queue(&bed, Digests::default());
    let (cid, ttag) = start_r2t_write(&mut q, 65536);
    let bytes = q.h2c_data(cid, ttag, 0, &vec![0u8; 65536], true);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q).0, fes::DATA_LIMIT_EXCEEDED);
    // A wrong CCCID for the transfer tag.
    let (_a, mut q) = io_queue(&bed, Digests::default());
    let (_, ttag) = start_r2t_write(&mut q, 4096);
    let bytes = q.h2c_data(1234, ttag, 0, &[0u8; 4096], true);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q), (fes::INVALID_PDU_HEADER, field::CCCID));
    // LAST set before the end.
    let (_a, mut q) = io_queue(&bed, Digests::default());
    let (cid, ttag) = start_r2t_write(&mut q, 8192);
    let bytes = q.h2c_data(cid, ttag, 0, &[0u8; 4096], true);
    q.send_raw(&bytes).unwrap();
    assert_eq!(expect_term(&mut q), (fes::INVALID_PDU_HEADER, field::FLAGS));
    still_serves(&bed);
}

#[test]
fn a_connection_dropped_mid_transfer_releases_everything() {
    let bed = bed();
    let before = bed.transport.pool().available();
    for _ in 0..20 {
        let (_a, mut q) = io_queue(&bed, Digests::default());
        let (cid, ttag) = start_r2t_write(&mut q, 65536);
        let bytes = q.h2c_data(cid, ttag, 0, &[0u8; 16384], false);
        q.send_raw(&bytes).unwrap();
        drop(q); // mid-transfer
    }
    // A truncated PDU, then gone.
    let (_a, mut q) = io_queue(&bed, Digests::default());
    q.send_raw(&q.capsule(&rw(io::READ, 0, 1), &[])[..30])
        .unwrap();
    drop(q);
    still_serves(&bed);
    // Every unit is back in the pool or in a reactor's cache (which holds at most its
    // capacity): nothing leaked with the dropped connections.
    std::thread::sleep(Duration::from_millis(200));
    let after = bed.transport.pool().available();
    assert!(
        after + 256 >= before,
        "units leaked: {before} available before, {after} after"
    );
}

#[test]
fn more_commands_than_the_queue_holds_terminate() {
    let bed = bed();
    let (_a, mut q) = io_queue(&bed, Digests::default());
    // Depth 16 (SQSIZE 15), but the target sizes slots by its maximum (128): send more
    // than that, each waiting for data that never comes.
    for cid in 0..129u16 {
        let mut sqe = rw(io::WRITE, 0, 1);
        sqe.cid = cid.into();
        sqe.dptr = SglDescriptor::transport_data_block(512);
        let bytes = q.capsule(&sqe, &[]);
        q.send_raw(&bytes).unwrap();
    }
    loop {
        let pdu = q.read_pdu().expect("R2Ts, then a C2HTermReq");
        if let Some((f, _)) = pdu.term() {
            assert_eq!(f, fes::PDU_SEQUENCE_ERROR);
            break;
        }
        assert_eq!(pdu.ch.pdu_type, pdu_type::R2T);
    }
    still_serves(&bed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    /// Random bytes after a good ICReq (and after a good Connect) never take the target
    /// down: each connection ends or goes on, and another connection is served.
    #[test]
    fn random_byte_streams_never_hurt_other_connections(
        garbage in proptest::collection::vec(any::<u8>(), 1..600),
        after_connect in any::<bool>(),
        typed in any::<bool>(),
    ) {
        let bed = bed();
        let mut garbage = garbage;
        if typed {
            // Give it a plausible header so deeper checks are reached.
            garbage[0] = [pdu_type::CAPSULE_CMD, pdu_type::H2C_DATA, pdu_type::H2C_TERM][garbage.len() % 3];
        }
        let mut host = if after_connect {
            io_queue(&bed, Digests::default()).1
        } else {
            TcpHost::connect(bed.addr, Digests::default()).unwrap()
        };
        let _ = host.send_raw(&garbage);
        drop(host);
        still_serves(&bed);
    }
}
