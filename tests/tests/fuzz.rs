//! Property test: arbitrary capsules on unconnected, admin and I/O queues.
//! Every command gets exactly one completion (or the queue is closed by the
//! target), nothing panics, and a healthy controller keeps serving I/O.

use nvme_spec::opcode::admin;
use nvme_spec::{FromBytes, Sqe, Status};
use nvmf::testing::{HostController, HostId};
use nvmf_tests::{bed, SUBNQN};
use proptest::prelude::*;

fn arb_sqe() -> impl Strategy<Value = Sqe> {
    (
        prop::collection::vec(any::<u8>(), 64),
        0u8..8,
        any::<u16>(),
        any::<u32>(),
        0u8..3,
    )
        .prop_map(|(bytes, op_hint, len, key_hint, sgl_kind)| {
            let mut sqe = Sqe::read_from_bytes(&bytes).unwrap();
            // Steer half the cases to real opcodes so dispatch paths are reached.
            if op_hint < 4 {
                sqe.opcode = [0x00, 0x01, 0x02, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x18, 0x7F]
                    [usize::from(op_hint) * 2 % 10];
            }
            match sgl_kind {
                0 => {
                    sqe.dptr = nvme_spec::SglDescriptor::keyed(
                        u64::from(key_hint % 8192),
                        u32::from(len),
                        0x1000,
                        false,
                    )
                }
                1 => {
                    sqe.dptr = nvme_spec::SglDescriptor::data_block(
                        u64::from(key_hint % 8),
                        u32::from(len) % 8192,
                    )
                }
                _ => {}
            }
            if sgl_kind < 2 {
                sqe.flags = (sqe.flags & 0x3F) | 0x40;
            }
            sqe
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_capsules_never_break_the_target(cmds in prop::collection::vec((arb_sqe(), 0u8..3, any::<bool>()), 1..24)) {
        let mut bed = bed(2);
        let mut healthy = HostController::connect(&mut bed, &HostId::new(1), SUBNQN).unwrap();
        let (mut healthy_io, _) = healthy.connect_io(&mut bed, 1, 32);
        let mut victim = HostController::connect(&mut bed, &HostId::new(2), SUBNQN).unwrap();
        let (mut victim_io, _) = victim.connect_io(&mut bed, 1, 32);
        let mut raw = bed.open_queue(0, 32);
        for (mut sqe, target_queue, in_capsule) in cmds {
            let q = match target_queue { 0 => &mut raw, 1 => &mut victim.admin, _ => &mut victim_io };
            if q.hq.is_closed_by_target() {
                continue;
            }
            let cid = q.cid();
            sqe.cid = cid.into();
            let held_aer = sqe.opcode == admin::ASYNC_EVENT_REQUEST && target_queue == 1;
            let sent = if in_capsule { q.hq.submit_in_capsule(sqe, &[0xAB; 512]) } else { q.hq.submit(sqe) };
            if sent.is_err() || held_aer {
                continue;
            }
            let mut got = None;
            let ok = bed.step_until(|_| {
                while let Some(c) = q.hq.poll_completion() {
                    if c.cid() == cid { got = Some(c); }
                }
                got.is_some() || q.hq.is_closed_by_target()
            });
            prop_assert!(ok, "no completion for {:?}", sqe);
        }
        let data = [0x11u8; 512];
        prop_assert_eq!(healthy_io.write(&mut bed, 1, 1, 512, &data).status(), Status::SUCCESS);
        let (c, back) = healthy_io.read(&mut bed, 1, 1, 512, 1);
        prop_assert_eq!(c.status(), Status::SUCCESS);
        prop_assert_eq!(back, data.to_vec());
        prop_assert_eq!(healthy.admin.features(&mut bed, admin::KEEP_ALIVE, 0, 0).status(), Status::SUCCESS);
    }
}
