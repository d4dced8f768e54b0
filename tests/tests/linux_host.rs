//! Replays, step by step, what Linux 6.x `nvme discover` and `nvme connect`
//! send, checking every field the host checks, then writes and reads data.

use nvme_spec::fabrics::{cap, csts, property, CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvme_spec::features::{self, aen};
use nvme_spec::identify::{self, cns, IdentifyController, IdentifyNamespace};
use nvme_spec::log::{lid, DiscoveryLogEntry, DiscoveryLogHeader};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{get_str_nul_padded, FromBytes, Status, U32};
use nvmf::testing::{HostController, HostId};
use nvmf_tests::{bed, MODEL, SERIAL, SUBNQN};

fn trimmed(field: &[u8]) -> String {
    String::from_utf8_lossy(field).trim_end().to_string()
}

#[test]
fn nvme_discover_sequence() {
    let mut bed = bed(1);
    let host = HostId::new(1);
    let mut admin_q = bed.open_queue(0, 32);
    // 1-2: Connect to the discovery subsystem with KATO 0 (non-persistent).
    let c = admin_q.connect(&mut bed, &host, DISCOVERY_NQN, CNTLID_DYNAMIC, 31, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let cntlid = c.dw0() as u16;
    // 3: CAP, CC.EN, CSTS.RDY, VS.
    admin_q.enable(&mut bed);
    // 4: Identify Controller; the host checks cntlid.
    let (c, data) = admin_q.identify(&mut bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let id = IdentifyController::read_from_bytes(&data).unwrap();
    assert_eq!(id.cntlid.get(), cntlid);
    assert_eq!(id.cntrltype, identify::CNTRLTYPE_DISCOVERY);
    assert_eq!(get_str_nul_padded(&id.subnqn, true), Some(DISCOVERY_NQN));
    assert_ne!(
        id.lpa & identify::lpa::EXTENDED_DATA,
        0,
        "offsets need LPA extended data"
    );
    // 5: the 20-byte header, records from offset 1024 in 4 KiB chunks, header again.
    let (c, head) = admin_q.get_log(&mut bed, lid::DISCOVERY, 0, 20, false);
    assert_eq!(c.status(), Status::SUCCESS);
    let numrec = u64::from_le_bytes(head[8..16].try_into().unwrap());
    let genctr = u64::from_le_bytes(head[0..8].try_into().unwrap());
    assert_eq!(numrec, 2, "current discovery subsystem + cnode1");
    let (c, recs) = admin_q.get_log(&mut bed, lid::DISCOVERY, 1024, 4096, false);
    assert_eq!(c.status(), Status::SUCCESS);
    let entries: Vec<DiscoveryLogEntry> = recs
        .chunks_exact(1024)
        .take(numrec as usize)
        .map(|b| DiscoveryLogEntry::read_from_bytes(b).unwrap())
        .collect();
    assert_eq!(
        entries[0].subtype,
        nvme_spec::log::subtype::CURRENT_DISCOVERY
    );
    assert_eq!(
        get_str_nul_padded(&entries[0].subnqn, true),
        Some(DISCOVERY_NQN)
    );
    let e = &entries[1];
    assert_eq!(e.subtype, nvme_spec::log::subtype::NVME);
    assert_eq!(e.trtype, nvme_spec::log::trtype::LOOP);
    assert_eq!(e.adrfam, nvme_spec::log::adrfam::INTRA_HOST);
    assert_eq!(get_str_nul_padded(&e.traddr, true), Some("127.0.0.1"));
    assert_eq!(get_str_nul_padded(&e.trsvcid, true), Some("4420"));
    assert_eq!(get_str_nul_padded(&e.subnqn, true), Some(SUBNQN));
    assert_eq!(e.cntlid.get(), CNTLID_DYNAMIC);
    assert_eq!(
        recs[2048..].iter().filter(|&&b| b != 0).count(),
        0,
        "bytes past the last record are zero"
    );
    let (_, head2) = admin_q.get_log(&mut bed, lid::DISCOVERY, 0, 20, false);
    assert_eq!(
        u64::from_le_bytes(head2[0..8].try_into().unwrap()),
        genctr,
        "genctr stable"
    );
    // The whole page in one read equals header + records.
    let (_, whole) = admin_q.get_log(&mut bed, lid::DISCOVERY, 0, 3072, false);
    let hdr = DiscoveryLogHeader::read_from_bytes(&whole[..1024]).unwrap();
    assert_eq!(hdr.numrec.get(), 2);
    assert_eq!(&whole[1024..3072], &recs[..2048]);
    // Discovery controllers accept only SPDK's set.
    let (c, _) = admin_q.identify(&mut bed, cns::NAMESPACE, 1, 0);
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let (c, _) = admin_q.get_log(&mut bed, lid::SMART_HEALTH, 0, 512, false);
    assert_eq!(c.status(), Status::INVALID_LOG_PAGE);
    let c = admin_q.features(
        &mut bed,
        admin::SET_FEATURES,
        u32::from(features::NUMBER_OF_QUEUES),
        0,
    );
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let c = admin_q.features(&mut bed, admin::KEEP_ALIVE, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    // Disconnect: CC.SHN then CSTS.SHST.
    let set = admin_q.prop_set(
        &mut bed,
        property::CC,
        u64::from(nvme_spec::fabrics::cc::build(true, 6, 4, 1)),
    );
    assert_eq!(set.status(), Status::SUCCESS);
    let c = admin_q.prop_get(&mut bed, property::CSTS, false);
    assert_eq!(csts::shst(c.dw0()), csts::SHST_COMPLETE);
}

#[test]
fn nvme_connect_sequence_then_data() {
    let mut bed = bed(1);
    let host = HostId::new(2);
    let mut ctrl = HostController::connect(&mut bed, &host, SUBNQN).expect("connect");
    let cap_v = ctrl
        .admin
        .prop_get(&mut bed, property::CAP, true)
        .value_u64();
    assert_eq!(cap::mqes(cap_v), 127);
    assert!(cap::css_nvm(cap_v));

    // Identify Controller: the three checks Linux makes, plus what it reads.
    let (c, data) = ctrl.admin.identify(&mut bed, cns::CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let id = IdentifyController::read_from_bytes(&data).unwrap();
    assert_eq!(id.cntlid.get(), ctrl.cntlid, "cntlid must match Connect's");
    assert_ne!(id.kas.get(), 0, "KAS = 0 is refused on an I/O controller");
    assert!(id.ioccsz.get() >= 4 && id.iorcsz.get() >= 1);
    assert_eq!(id.ioccsz.get(), (64 + 4096) / 16);
    assert_ne!(
        id.sgls.get() & identify::sgls::OFFSET,
        0,
        "in-capsule data needs the SGL offset bit"
    );
    assert_ne!(id.sgls.get() & identify::sgls::KEYED_DATA_BLOCK, 0);
    assert_eq!(id.cntrltype, identify::CNTRLTYPE_IO);
    assert_eq!(trimmed(&id.sn), SERIAL);
    assert_eq!(trimmed(&id.mn), MODEL);
    assert_eq!(get_str_nul_padded(&id.subnqn, true), Some(SUBNQN));
    assert_eq!(id.mdts, 8, "1 MiB / 4 KiB pages = 2^8");
    assert_eq!(id.nn.get(), 32);
    assert_eq!(id.sqes, 0x66);
    assert_eq!(id.cqes, 0x44);
    assert_eq!(
        id.cmic & (1 << 3),
        0,
        "no ANA: the host must not read log 0Ch"
    );
    assert_eq!(id.oaes.get(), aen::NAMESPACE_ATTRIBUTE);
    // LPA says 05h exists, so Linux reads it.
    assert_ne!(id.lpa & identify::lpa::COMMANDS_EFFECTS, 0);
    let (c, effects) = ctrl.admin.get_log(
        &mut bed,
        lid::COMMANDS_SUPPORTED_AND_EFFECTS,
        0,
        4096,
        false,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let io_read = u32::from_le_bytes(effects[1024 + 4 * 2..1024 + 4 * 3].try_into().unwrap());
    assert_eq!(io_read & 1, 1, "Read is supported");

    // Set Features 07h: 4 queues asked, 4 granted.
    let c = ctrl.admin.features(
        &mut bed,
        admin::SET_FEATURES,
        u32::from(features::NUMBER_OF_QUEUES),
        3 | (3 << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(c.dw0(), 3 | (3 << 16));
    // Set Features 0Bh and an AER, since OAES advertises events.
    let c = ctrl.admin.features(
        &mut bed,
        admin::SET_FEATURES,
        u32::from(features::ASYNC_EVENT_CONFIG),
        aen::NAMESPACE_ATTRIBUTE,
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let aer_cid = ctrl.admin.cid();
    let mut aer = nvme_spec::Sqe::new(admin::ASYNC_EVENT_REQUEST, aer_cid);
    aer.dptr = ctrl.admin.hq.keyed_sgl(0, 0);
    ctrl.admin.hq.submit(aer).unwrap();

    // I/O queues: one transport connect plus Fabrics Connect each.
    let mut ioqs = Vec::new();
    for qid in 1..=4 {
        let (q, c) = ctrl.connect_io(&mut bed, qid, 128);
        assert_eq!(c.status(), Status::SUCCESS, "qid {qid}");
        assert_eq!(c.dw0() as u16, ctrl.cntlid);
        ioqs.push(q);
    }

    // Namespace scan: 06h (may be answered), 02h, then 03h and 00h per NSID.
    let (c, _) = ctrl.admin.identify(&mut bed, cns::CSI_CONTROLLER, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let (c, list) = ctrl.admin.identify(&mut bed, cns::ACTIVE_NS_LIST, 0, 0);
    assert_eq!(c.status(), Status::SUCCESS);
    let nsids: Vec<u32> = list
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .take_while(|&n| n != 0)
        .collect();
    assert_eq!(nsids, vec![1, 2]);
    let mut seen_ids = Vec::new();
    for (nsid, blocks, bs) in [(1u32, 2048u64, 512u32), (2, 1 << 20, 4096)] {
        let (c, descs) = ctrl
            .admin
            .identify(&mut bed, cns::NS_ID_DESCRIPTORS, nsid, 0);
        assert_eq!(c.status(), Status::SUCCESS);
        assert_eq!((descs[0], descs[1]), (identify::nidt::NGUID, 16));
        assert_eq!((descs[20], descs[21]), (identify::nidt::UUID, 16));
        seen_ids.push(descs[4..20].to_vec());
        seen_ids.push(descs[24..40].to_vec());
        let (c, data) = ctrl.admin.identify(&mut bed, cns::NAMESPACE, nsid, 0);
        assert_eq!(c.status(), Status::SUCCESS);
        let ns = IdentifyNamespace::read_from_bytes(&data).unwrap();
        assert_eq!(ns.nsze.get(), blocks);
        assert_eq!(1u32 << ((ns.lbaf[0].get() >> 16) & 0xFF), bs);
        assert_eq!(&ns.nguid[..], &descs[4..20]);
    }
    seen_ids.sort();
    seen_ids.dedup();
    assert_eq!(seen_ids.len(), 4, "NGUIDs and UUIDs are unique");

    // Write then read back on two queues, keyed and in-capsule.
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let c = ioqs[0].write(&mut bed, 1, 16, 512, &pattern);
    assert_eq!(c.status(), Status::SUCCESS);
    let (c, back) = ioqs[1].read(&mut bed, 1, 16, 512, 16);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(back, pattern);
    let sqe = ioqs[2].rw_command(io::WRITE, 1, 100, 8, 4096);
    let c = ioqs[2].exec_in_capsule(&mut bed, sqe, &pattern[..4096]);
    assert_eq!(c.status(), Status::SUCCESS);
    let (_, back) = ioqs[3].read(&mut bed, 1, 100, 512, 8);
    assert_eq!(back, &pattern[..4096]);
    // Null namespace reads zeroes.
    let (c, zeros) = ioqs[0].read(&mut bed, 2, 7, 4096, 2);
    assert_eq!(c.status(), Status::SUCCESS);
    assert!(zeros.iter().all(|&b| b == 0));
    // SQ head advances in every CQE.
    let (c1, _) = ioqs[0].read(&mut bed, 1, 0, 512, 1);
    let (c2, _) = ioqs[0].read(&mut bed, 1, 0, 512, 1);
    assert_eq!((c1.sqhd() + 1) % 128, c2.sqhd());
    // Flush, Write Zeroes, Dataset Management (deallocate), Compare.
    let mut flush = nvme_spec::Sqe::new(io::FLUSH, 0);
    flush.nsid = 1.into();
    assert_eq!(ioqs[0].exec(&mut bed, flush).status(), Status::SUCCESS);
    let mut wz = nvme_spec::Sqe::new(io::WRITE_ZEROES, 0);
    wz.nsid = 1.into();
    wz.set_slba(16);
    wz.set_nlb(4);
    assert_eq!(ioqs[0].exec(&mut bed, wz).status(), Status::SUCCESS);
    let (_, back) = ioqs[0].read(&mut bed, 1, 16, 512, 16);
    assert!(back[..2048].iter().all(|&b| b == 0));
    assert_eq!(&back[2048..], &pattern[2048..]);
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&4u32.to_le_bytes());
    range[8..16].copy_from_slice(&24u64.to_le_bytes());
    ioqs[0].hq.memory().write_at(1 << 20, &range).unwrap();
    let mut dsm = ioqs[0].rw_command(io::DATASET_MANAGEMENT, 1, 0, 1, 16);
    dsm.cdw10 = U32::new(0);
    dsm.cdw11 = U32::new(1 << 2);
    dsm.cdw12 = U32::new(0);
    assert_eq!(ioqs[0].exec(&mut bed, dsm).status(), Status::SUCCESS);
    let (_, back) = ioqs[0].read(&mut bed, 1, 24, 512, 4);
    assert!(
        back.iter().all(|&b| b == 0),
        "deallocated blocks read as zeroes"
    );
    ioqs[1]
        .hq
        .memory()
        .write_at(1 << 20, &pattern[6144..8192])
        .unwrap();
    let cmp = ioqs[1].rw_command(io::COMPARE, 1, 28, 4, 2048);
    assert_eq!(ioqs[1].exec(&mut bed, cmp).status(), Status::SUCCESS);
    ioqs[1]
        .hq
        .memory()
        .write_at(1 << 20, &[0xEE; 2048])
        .unwrap();
    assert_eq!(
        ioqs[1].exec(&mut bed, cmp).status(),
        Status::COMPARE_FAILURE
    );

    // Keep Alive, SMART counters.
    assert_eq!(
        ctrl.admin
            .features(&mut bed, admin::KEEP_ALIVE, 0, 0)
            .status(),
        Status::SUCCESS
    );
    let (c, smart) = ctrl
        .admin
        .get_log(&mut bed, lid::SMART_HEALTH, 0, 512, false);
    assert_eq!(c.status(), Status::SUCCESS);
    let host_writes = u64::from_le_bytes(smart[80..88].try_into().unwrap());
    assert_eq!(host_writes, 2);

    // nvme disconnect: drop I/O queues, then CC.SHN and CSTS.SHST.
    drop(ioqs);
    for _ in 0..10 {
        bed.step();
    }
    assert!(ctrl.shutdown(&mut bed));
    // The held AER is still outstanding until the admin queue goes away.
    drop(ctrl);
    assert!(bed.step_until(|b| b
        .target
        .find_subsystem(SUBNQN)
        .is_some_and(|s| s.controller_count() == 0)));
    assert_eq!(bed.target.queue_load().iter().sum::<usize>(), 0);
}
