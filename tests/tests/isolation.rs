//! Host isolation: no byte reaches a host that it may not see.
//!
//! Data buffers come from one pool shared by every queue of a reactor, so a
//! command that sent more than it produced would hand a host whatever an
//! earlier command (of any host) left there. Every test here fills the host's
//! memory with a canary first and checks that exactly the bytes the command
//! produced changed, and that they are the right bytes.

use nvme_spec::identify::cns;
use nvme_spec::log::lid;
use nvme_spec::opcode::{admin, io};
use nvme_spec::{Cqe, Sqe, Status, U32};
use nvmf::testing::{HostController, HostId, Queue, TestBed};
use nvmf::TargetOptions;
use nvmf_tests::{subsystem, SUBNQN};
use proptest::prelude::*;

/// Where commands find their data in host memory, and how much is watched.
const DATA_AT: u64 = 1 << 20;
const WINDOW_BYTES: usize = 160 << 10;
const MAX_IO_BYTES: u32 = 131_072;
const MALLOC_BLOCKS: u64 = 2048;
const MALLOC_BLOCK: u32 = 512;
const NULL_BLOCK: u32 = 4096;

struct Host {
    ctrl: HostController,
    io: Queue,
    canary: u8,
}

impl Host {
    /// Every queue has host memory of its own: fill both.
    fn fill_canary(&self) {
        for q in [&self.io, &self.ctrl.admin] {
            q.hq.memory()
                .write_at(DATA_AT, &vec![self.canary; WINDOW_BYTES])
                .unwrap();
        }
    }

    fn window(q: &Queue) -> Vec<u8> {
        q.read_memory(DATA_AT, WINDOW_BYTES)
    }
}

fn two_hosts(reactors: usize) -> (TestBed, [Host; 2]) {
    let mut bed = TestBed::new(reactors, TargetOptions::default(), &[subsystem(true, &[])]);
    let hosts = [(1u8, 0x11u8), (2, 0x22)].map(|(n, canary)| {
        let mut ctrl = HostController::connect(&mut bed, &HostId::new(n), SUBNQN).unwrap();
        let (io, c) = ctrl.connect_io(&mut bed, 1, 32);
        assert_eq!(c.status(), Status::SUCCESS);
        Host { ctrl, io, canary }
    });
    (bed, hosts)
}

fn rw(q: &Queue, opcode: u8, nsid: u32, slba: u64, nlb: u32, sgl_bytes: u32) -> Sqe {
    let mut sqe = q.rw_command(opcode, nsid, slba, nlb, sgl_bytes);
    sqe.dptr = q.hq.keyed_sgl(DATA_AT, sgl_bytes);
    sqe
}

/// Asserts the window holds `produced` then only the canary.
fn assert_only(window: &[u8], produced: &[u8], canary: u8, what: &str) {
    assert_eq!(&window[..produced.len()], produced, "{what}: data");
    if let Some(i) = window[produced.len()..].iter().position(|&b| b != canary) {
        panic!(
            "{what}: byte {} past the {} produced was overwritten ({:#04x})",
            produced.len() + i,
            produced.len(),
            window[produced.len() + i]
        );
    }
}

#[test]
fn a_read_with_a_longer_sgl_is_refused_and_returns_no_other_hosts_bytes() {
    // The reviewer's case: A writes 4 KiB of 0xA5 at LBA 100; B reads LBA 0,
    // one 512-byte block, into a 4 KiB SGL.
    let (mut bed, [mut a, mut b]) = two_hosts(1);
    a.io.hq.memory().write_at(DATA_AT, &[0xA5; 4096]).unwrap();
    let w = rw(&a.io, io::WRITE, 1, 100, 8, 4096);
    assert_eq!(a.io.exec(&mut bed, w).status(), Status::SUCCESS);
    let r = rw(&a.io, io::READ, 1, 100, 8, 4096);
    assert_eq!(a.io.exec(&mut bed, r).status(), Status::SUCCESS);
    b.fill_canary();
    let c = b.io.exec(&mut bed, rw(&b.io, io::READ, 1, 0, 1, 4096));
    assert_eq!(c.status(), Status::DATA_SGL_LENGTH_INVALID);
    assert!(c.status().dnr);
    assert_only(&Host::window(&b.io), &[], b.canary, "refused read");
    drop(a);
}

#[test]
fn read_write_compare_need_the_exact_transfer_length() {
    let (mut bed, [mut h, _]) = two_hosts(1);
    for opcode in [io::READ, io::WRITE, io::COMPARE] {
        for (nsid, bs) in [(1, MALLOC_BLOCK), (2, NULL_BLOCK)] {
            if opcode == io::COMPARE && nsid == 2 {
                continue; // the null bdev has no Compare (Invalid Opcode)
            }
            for nlb in [1u32, 8] {
                let exact = nlb * bs;
                for sgl in [exact - 1, exact - bs / 2, exact + 1, exact + bs, exact * 2] {
                    h.fill_canary();
                    let c = h.io.exec(&mut bed, rw(&h.io, opcode, nsid, 0, nlb, sgl));
                    assert_eq!(
                        c.status(),
                        Status::DATA_SGL_LENGTH_INVALID,
                        "opcode {opcode:#x} nsid {nsid} nlb {nlb} sgl {sgl}"
                    );
                    assert!(c.status().dnr);
                    assert_only(&Host::window(&h.io), &[], h.canary, "refused command");
                }
            }
        }
    }
    // In-capsule data (writes and compares) must match exactly too.
    for opcode in [io::WRITE, io::COMPARE] {
        for len in [511usize, 513, 1024, 4096] {
            let sqe = rw(&h.io, opcode, 1, 0, 1, 0);
            let c = h.io.exec_in_capsule(&mut bed, sqe, &vec![0x77; len]);
            assert_eq!(
                c.status(),
                Status::DATA_SGL_LENGTH_INVALID,
                "in-capsule {len}"
            );
        }
        let c =
            h.io.exec_in_capsule(&mut bed, rw(&h.io, opcode, 1, 0, 1, 0), &[0x77; 512]);
        assert!(c.status().is_success() || c.status() == Status::COMPARE_FAILURE);
    }
}

fn identify(q: &mut Queue, bed: &mut TestBed, cns: u8, nsid: u32, sgl_bytes: u32) -> Cqe {
    let mut sqe = Sqe::new(admin::IDENTIFY, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = U32::new(u32::from(cns));
    sqe.dptr = q.hq.keyed_sgl(DATA_AT, sgl_bytes);
    q.exec(bed, sqe)
}

fn get_log(q: &mut Queue, bed: &mut TestBed, id: u8, len: u32, sgl_bytes: u32) -> Cqe {
    let mut sqe = Sqe::new(admin::GET_LOG_PAGE, 0);
    sqe.nsid = u32::MAX.into();
    sqe.set_log_page(id, len, 0);
    sqe.dptr = q.hq.keyed_sgl(DATA_AT, sgl_bytes);
    q.exec(bed, sqe)
}

#[test]
fn admin_commands_send_only_the_data_they_produce() {
    let (mut bed, [mut h, _]) = two_hosts(1);
    let q = &mut h.ctrl.admin;
    // Identify: 4096 bytes whatever the SGL beyond that; a shorter SGL is refused.
    for c in [cns::CONTROLLER, cns::NAMESPACE, cns::ACTIVE_NS_LIST] {
        q.hq.memory()
            .write_at(DATA_AT, &vec![0x33; WINDOW_BYTES])
            .unwrap();
        let cqe = identify(q, &mut bed, c, 1, 8192);
        assert_eq!(cqe.status(), Status::SUCCESS);
        let w = Host::window(q);
        assert!(
            w[4096..].iter().all(|&b| b == 0x33),
            "identify {c}: beyond 4 KiB"
        );
        let cqe = identify(q, &mut bed, c, 1, 4095);
        assert_eq!(cqe.status(), Status::DATA_SGL_LENGTH_INVALID);
    }
    // Get Log Page: NUMD bytes, never the SGL's length.
    for id in [
        lid::ERROR,
        lid::SMART_HEALTH,
        lid::FIRMWARE_SLOT,
        lid::CHANGED_NS_LIST,
    ] {
        q.hq.memory()
            .write_at(DATA_AT, &vec![0x33; WINDOW_BYTES])
            .unwrap();
        let cqe = get_log(q, &mut bed, id, 64, 4096);
        assert_eq!(cqe.status(), Status::SUCCESS, "log {id:#x}");
        let w = Host::window(q);
        assert!(
            w[64..].iter().all(|&b| b == 0x33),
            "log {id:#x}: beyond NUMD"
        );
        let cqe = get_log(q, &mut bed, id, 512, 256);
        assert_eq!(cqe.status(), Status::DATA_SGL_LENGTH_INVALID, "log {id:#x}");
    }
    // Get Features Host Identifier: 16 bytes.
    q.hq.memory()
        .write_at(DATA_AT, &vec![0x33; WINDOW_BYTES])
        .unwrap();
    let mut sqe = Sqe::new(admin::GET_FEATURES, 0);
    sqe.cdw10 = U32::new(u32::from(nvme_spec::features::HOST_IDENTIFIER));
    sqe.cdw11 = U32::new(1);
    sqe.dptr = q.hq.keyed_sgl(DATA_AT, 4096);
    assert_eq!(q.exec(&mut bed, sqe).status(), Status::SUCCESS);
    let w = Host::window(q);
    assert_eq!(&w[..16], &HostId::new(1).hostid);
    assert!(
        w[16..].iter().all(|&b| b == 0x33),
        "host identifier: beyond 16 bytes"
    );
}

/// One command of the property test.
#[derive(Clone, Debug)]
enum Cmd {
    Read {
        ns: u32,
        slba: u64,
        nlb: u32,
        sgl_delta: i32,
    },
    Write {
        ns: u32,
        slba: u64,
        nlb: u32,
        sgl_delta: i32,
        in_capsule: bool,
    },
    Compare {
        ns: u32,
        slba: u64,
        nlb: u32,
        sgl_delta: i32,
    },
    Identify {
        cns: u8,
        sgl_bytes: u32,
    },
    GetLog {
        id: u8,
        len_dwords: u32,
        sgl_delta: i32,
    },
}

fn arb_cmd() -> impl Strategy<Value = Cmd> {
    let delta = prop_oneof![
        6 => Just(0i32),
        1 => Just(1),
        1 => Just(-1),
        1 => Just(512),
        1 => Just(4096),
        1 => -4096i32..8192,
    ];
    let ns = prop_oneof![3 => Just(1u32), 1 => Just(2)];
    prop_oneof![
        (ns.clone(), 0u64..64, 1u32..17, delta.clone()).prop_map(|(ns, slba, nlb, sgl_delta)| {
            Cmd::Read {
                ns,
                slba,
                nlb,
                sgl_delta,
            }
        }),
        (ns.clone(), 0u64..64, 1u32..17, delta.clone(), any::<bool>()).prop_map(
            |(ns, slba, nlb, sgl_delta, in_capsule)| Cmd::Write {
                ns,
                slba,
                nlb,
                sgl_delta,
                in_capsule
            }
        ),
        (ns, 0u64..64, 1u32..9, delta.clone()).prop_map(|(ns, slba, nlb, sgl_delta)| {
            Cmd::Compare {
                ns,
                slba,
                nlb,
                sgl_delta,
            }
        }),
        (
            prop::sample::select(vec![0u8, 1, 2, 3]),
            prop::sample::select(vec![4095u32, 4096, 4097, 8192])
        )
            .prop_map(|(cns, sgl_bytes)| Cmd::Identify { cns, sgl_bytes }),
        (
            prop::sample::select(vec![1u8, 2, 3, 4, 5]),
            1u32..2048,
            delta
        )
            .prop_map(|(id, len_dwords, sgl_delta)| Cmd::GetLog {
                id,
                len_dwords,
                sgl_delta
            }),
    ]
}

/// What the host may see after a command: the produced bytes (when known).
struct Shadow {
    malloc: Vec<u8>,
}

impl Shadow {
    fn block_bytes(ns: u32) -> u32 {
        if ns == 1 {
            MALLOC_BLOCK
        } else {
            NULL_BLOCK
        }
    }

    /// The bytes a read of these blocks must return.
    fn read(&self, ns: u32, slba: u64, nlb: u32) -> Vec<u8> {
        if ns == 2 {
            return vec![0; (nlb * NULL_BLOCK) as usize];
        }
        let start = (slba * u64::from(MALLOC_BLOCK)) as usize;
        self.malloc[start..start + (nlb * MALLOC_BLOCK) as usize].to_vec()
    }
}

fn sgl_len(exact: u32, delta: i32) -> u32 {
    (i64::from(exact) + i64::from(delta)).clamp(0, i64::from(MAX_IO_BYTES)) as u32
}

/// Data a host writes: every 8 bytes name the host, the LBA and a sequence.
fn stamped(host: u8, slba: u64, seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| match i % 8 {
            0 => 0xF0 | host,
            1 => (slba + (i / 512) as u64) as u8,
            2..=5 => seq.to_le_bytes()[i % 8 - 2],
            _ => (i / 8) as u8,
        })
        .collect()
}

fn run_one(
    bed: &mut TestBed,
    hosts: &mut [Host; 2],
    who: usize,
    seq: u32,
    cmd: &Cmd,
    shadow: &mut Shadow,
) {
    let h = &mut hosts[who];
    h.fill_canary();
    let host_no = who as u8 + 1;
    match *cmd {
        Cmd::Read {
            ns,
            slba,
            nlb,
            sgl_delta,
        } => {
            let exact = nlb * Shadow::block_bytes(ns);
            let sgl = sgl_len(exact, sgl_delta);
            let c = h.io.exec(bed, rw(&h.io, io::READ, ns, slba, nlb, sgl));
            let w = Host::window(&h.io);
            if sgl == exact {
                assert_eq!(c.status(), Status::SUCCESS, "{cmd:?}");
                assert_only(&w, &shadow.read(ns, slba, nlb), h.canary, "read");
            } else {
                assert!(!c.status().is_success(), "{cmd:?} with SGL {sgl}");
                assert_only(&w, &[], h.canary, "refused read");
            }
        }
        Cmd::Write {
            ns,
            slba,
            nlb,
            sgl_delta,
            in_capsule,
        } => {
            let exact = nlb * Shadow::block_bytes(ns);
            let sgl = sgl_len(exact, sgl_delta);
            let data = stamped(host_no, slba, seq, sgl as usize);
            let c = if in_capsule && sgl <= 4096 && sgl > 0 {
                h.io.exec_in_capsule(bed, rw(&h.io, io::WRITE, ns, slba, nlb, 0), &data)
            } else {
                h.io.hq.memory().write_at(DATA_AT, &data).unwrap();
                h.io.exec(bed, rw(&h.io, io::WRITE, ns, slba, nlb, sgl))
            };
            if sgl == exact {
                assert_eq!(c.status(), Status::SUCCESS, "{cmd:?}");
                if ns == 1 {
                    let start = (slba * u64::from(MALLOC_BLOCK)) as usize;
                    shadow.malloc[start..start + data.len()].copy_from_slice(&data);
                }
            } else {
                assert!(!c.status().is_success(), "{cmd:?} with SGL {sgl}");
            }
        }
        Cmd::Compare {
            ns,
            slba,
            nlb,
            sgl_delta,
        } => {
            let exact = nlb * Shadow::block_bytes(ns);
            let sgl = sgl_len(exact, sgl_delta);
            let mut expect = shadow.read(ns, slba, nlb);
            expect.resize(sgl as usize, 0);
            h.io.hq.memory().write_at(DATA_AT, &expect).unwrap();
            let c = h.io.exec(bed, rw(&h.io, io::COMPARE, ns, slba, nlb, sgl));
            if ns == 2 {
                assert_eq!(
                    c.status(),
                    Status::INVALID_OPCODE,
                    "the null bdev cannot compare"
                );
            } else if sgl == exact {
                assert_eq!(
                    c.status(),
                    Status::SUCCESS,
                    "{cmd:?}: the shadow is the disk"
                );
            } else {
                assert!(!c.status().is_success(), "{cmd:?} with SGL {sgl}");
            }
            let w = Host::window(&h.io);
            assert_only(&w, &expect, h.canary, "compare sends nothing back");
        }
        Cmd::Identify { cns, sgl_bytes } => {
            let q = &mut h.ctrl.admin;
            let c = identify(q, bed, cns, 1, sgl_bytes);
            let w = Host::window(q);
            let produced = if c.status().is_success() { 4096 } else { 0 };
            assert_eq!(c.status().is_success(), sgl_bytes >= 4096, "{cmd:?}");
            assert!(w[produced..].iter().all(|&b| b == h.canary), "{cmd:?}");
        }
        Cmd::GetLog {
            id,
            len_dwords,
            sgl_delta,
        } => {
            let len = len_dwords * 4;
            let sgl = sgl_len(len, sgl_delta);
            let q = &mut h.ctrl.admin;
            let c = get_log(q, bed, id, len, sgl);
            let w = Host::window(q);
            let produced = if c.status().is_success() {
                len as usize
            } else {
                0
            };
            if sgl < len {
                assert!(!c.status().is_success(), "{cmd:?}");
            }
            assert!(w[produced..].iter().all(|&b| b == h.canary), "{cmd:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Two hosts send random commands with random SGLs. Each sees exactly
    /// the disk's bytes for the blocks it read and nothing else: never a
    /// stale byte of a buffer the other host used before.
    #[test]
    fn no_host_sees_bytes_it_did_not_read(
        reactors in 1usize..3,
        cmds in prop::collection::vec((0usize..2, arb_cmd()), 1..40),
    ) {
        let (mut bed, mut hosts) = two_hosts(reactors);
        let mut shadow = Shadow { malloc: vec![0; (MALLOC_BLOCKS * u64::from(MALLOC_BLOCK)) as usize] };
        for (seq, (who, cmd)) in cmds.iter().enumerate() {
            run_one(&mut bed, &mut hosts, *who, seq as u32, cmd, &mut shadow);
        }
    }
}

#[test]
fn host_to_controller_data_shorter_than_the_command_needs_is_refused() {
    let (mut bed, [mut h, _]) = two_hosts(1);
    // Dataset Management with 2 ranges (32 bytes) in a 16-byte SGL, keyed
    // and in the capsule: the target must not read past what it was given.
    let mut dsm = Sqe::new(io::DATASET_MANAGEMENT, 0);
    dsm.nsid = 1.into();
    dsm.cdw10 = U32::new(1); // 2 ranges, 0-based
    dsm.cdw11 = U32::new(1 << 2); // deallocate
    dsm.dptr = h.io.hq.keyed_sgl(DATA_AT, 16);
    assert_eq!(
        h.io.exec(&mut bed, dsm).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    let c = h.io.exec_in_capsule(&mut bed, dsm, &[0; 16]);
    assert_eq!(c.status(), Status::DATA_SGL_LENGTH_INVALID);
    // Connect data is 1 KiB: a 512-byte SGL is refused.
    let mut q = bed.open_queue(0, 32);
    let sgl = q.hq.keyed_sgl(0, 512);
    let connect = nvme_spec::fabrics::connect_command(0, 0, 31, 0, sgl);
    assert_eq!(
        q.exec(&mut bed, connect).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
}
