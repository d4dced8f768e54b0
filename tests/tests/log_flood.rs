//! A remote host cannot flood the target's log: lines it causes are rate
//! limited per connection, per host and per poll group.

use std::sync::atomic::{AtomicUsize, Ordering};

use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::Status;
use nvmf::testing::{HostController, HostId};
use nvmf_tests::{bed, SUBNQN};

static LINES: AtomicUsize = AtomicUsize::new(0);

struct Counter;

impl log::Log for Counter {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.level() <= log::Level::Info {
            LINES.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

#[test]
fn refused_connects_from_many_hosts_log_a_bounded_number_of_lines() {
    log::set_logger(&Counter).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let mut bed = bed(1);
    let mut healthy = HostController::connect(&mut bed, &HostId::new(1), SUBNQN).unwrap();
    let before = LINES.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    for i in 0..600u32 {
        let host = HostId {
            hostnqn: format!("nqn.2014-08.org.nvmexpress:flood{i}"),
            hostid: [3; 16],
        };
        let mut q = bed.open_queue(0, 32);
        let c = q.connect(
            &mut bed,
            &host,
            "nqn.2016-06.io.spdk:nope",
            CNTLID_DYNAMIC,
            31,
            0,
        );
        assert_eq!(c.status(), Status::CONNECT_INVALID_PARAMETERS);
        q.hq.disconnect();
    }
    // One host, one connection, many bad commands: a second Connect each.
    let mut q = bed.open_queue(0, 32);
    q.connect(&mut bed, &HostId::new(2), SUBNQN, CNTLID_DYNAMIC, 31, 0);
    for _ in 0..500 {
        let c = q.connect(&mut bed, &HostId::new(2), SUBNQN, CNTLID_DYNAMIC, 31, 0);
        assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    }
    let lines = LINES.load(Ordering::Relaxed) - before;
    // A burst of 50, then 5 a second, plus one summary per 10 s.
    let secs = start.elapsed().as_secs() as usize + 1;
    let bound = 50 + 5 * secs + secs / 10 + 1;
    assert!(
        lines <= bound,
        "{lines} lines for 1,100 refused commands in {secs} s"
    );
    let ka = healthy
        .admin
        .features(&mut bed, nvme_spec::opcode::admin::KEEP_ALIVE, 0, 0);
    assert_eq!(ka.status(), Status::SUCCESS);
}
