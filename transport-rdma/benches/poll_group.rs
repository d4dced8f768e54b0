//! The RDMA poll group on the simulated NIC: 4 KiB keyed reads at a fixed
//! queue depth on one busy queue, alone and beside idle connected queues on
//! the same poll group. Prints commands/s per round, medians, the ratio, and
//! heap allocations per command.
//!
//!   cargo bench -p transport-rdma --bench poll_group
//!   RDMA_BENCH_SECONDS=2 RDMA_BENCH_ROUNDS=5 RDMA_BENCH_IDLE=1000 cargo bench ...
//!
//! What it measures is the transport's own work per command (CQ polling,
//! the request state machine, work-request batching) plus the simulated
//! NIC's, which is the same in both cases: the target's execution is a
//! no-op, so the figures are an upper bound, not a device's speed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nvme_spec::{opcode, IntoBytes, SglDescriptor, Sqe, Status};
use nvmf::transport::{TransportEvent, TransportPollGroup};
use transport_rdma::testing::{options, FakeRdma, HostQp, HOST_BASE, HOST_RKEY};

/// Counts heap allocations, to show the steady state makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const QUEUE_DEPTH: u16 = 128;
/// Idle queues are shallow so that 1,000 of them fit the CQ budget of one
/// device on one reactor (16,384 entries; a queue takes 3 x depth + 1). How
/// deep a queue is does not change what a poll costs.
const IDLE_QUEUE_DEPTH: u16 = 4;
/// Commands the host keeps outstanding on the busy queue.
const IN_FLIGHT: u16 = 32;
const IO_BYTES: u32 = 4096;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    commands_per_s: f64,
    allocations_per_command: f64,
}

/// One busy queue (and `idle` connected queues with nothing to do) for
/// `seconds`, after a short warm-up.
fn run(idle: usize, seconds: f64) -> Run {
    let mut o = options();
    o.buffer_count = 1024;
    let mut fake = FakeRdma::new(o, usize::from(IN_FLIGHT) * IO_BYTES as usize);
    let mut pg = fake.poll_group();
    let (pending, busy) = fake.connect(1, QUEUE_DEPTH, 16);
    pg.adopt(pending).expect("busy queue");
    for _ in 0..idle {
        let (pending, _) = fake.connect(1, IDLE_QUEUE_DEPTH, 16);
        pg.adopt(pending).expect("idle queue");
    }
    let capsules: Vec<[u8; 64]> = (0..IN_FLIGHT)
        .map(|i| {
            let mut c = Sqe::new(opcode::io::READ, i);
            c.nsid = 1.into();
            let addr = HOST_BASE + u64::from(i) * u64::from(IO_BYTES);
            c.dptr = SglDescriptor::keyed(addr, IO_BYTES, HOST_RKEY, false);
            c.as_bytes().try_into().expect("64 bytes")
        })
        .collect();
    let mut events = Vec::with_capacity(128);
    pg.flush(); // the receives of every queue
    fake.nic.run();
    for c in &capsules {
        fake.nic.send_capsule(busy, c).expect("receive posted");
    }
    let warm_up = Duration::from_millis(200);
    let measure = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut measuring_since: Option<(Instant, u64, u64)> = None;
    let mut completed = 0u64;
    for turn in 0u64.. {
        completed += spin(&mut *pg, &fake, busy, &capsules, &mut events);
        // The clock is read every 64 turns, not per command.
        if turn % 64 == 0 {
            let now = Instant::now();
            match measuring_since {
                None if now - start >= warm_up => {
                    measuring_since = Some((now, completed, ALLOCATIONS.load(Ordering::Relaxed)))
                }
                Some((t0, c0, a0)) if now - t0 >= measure => {
                    let commands = (completed - c0) as f64;
                    let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - a0) as f64;
                    return Run {
                        commands_per_s: commands / (now - t0).as_secs_f64(),
                        allocations_per_command: allocations / commands,
                    };
                }
                _ => {}
            }
        }
    }
    unreachable!("the loop returns once measured")
}

/// One turn of the reactor and the host: returns commands completed.
fn spin(
    pg: &mut dyn TransportPollGroup,
    fake: &FakeRdma,
    busy: HostQp,
    capsules: &[[u8; 64]],
    events: &mut Vec<TransportEvent>,
) -> u64 {
    events.clear();
    pg.poll(events);
    for e in events.iter() {
        let TransportEvent::Request(id) = *e else {
            panic!("unexpected {e:?}");
        };
        let req = pg.request(id);
        req.rsp.cid = req.cmd.cid;
        req.rsp.set_status(Status::SUCCESS);
        req.c2h_bytes = req.length;
        pg.complete(id);
    }
    pg.flush();
    fake.nic.run();
    let mut done = 0;
    while let Some(rsp) = fake.nic.take_response(busy) {
        let cid = u16::from_le_bytes([rsp[12], rsp[13]]);
        fake.nic
            .send_capsule(busy, &capsules[usize::from(cid)])
            .expect("a receive is posted for every command the host may send");
        done += 1;
    }
    done
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds = if quick {
        0.05
    } else {
        env_or("RDMA_BENCH_SECONDS", 2) as f64
    };
    let rounds = if quick {
        1
    } else {
        env_or("RDMA_BENCH_ROUNDS", 5)
    };
    let idle = env_or("RDMA_BENCH_IDLE", 1000) as usize;
    println!(
        "RDMA poll group on the simulated NIC: 4 KiB keyed reads, {IN_FLIGHT} in flight on one \
         queue; {rounds} rounds of {seconds} s, alternating alone / beside {idle} idle queues \
         (depth {IDLE_QUEUE_DEPTH})"
    );
    let (mut alone, mut crowded, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = run(0, seconds);
        let c = run(idle, seconds);
        println!(
            "round {round}: alone {:>10.0} commands/s, beside {idle} idle queues {:>10.0} commands/s \
             (ratio {:.3}); allocations per command {:.4} / {:.4}",
            a.commands_per_s,
            c.commands_per_s,
            c.commands_per_s / a.commands_per_s,
            a.allocations_per_command,
            c.allocations_per_command
        );
        alone.push(a.commands_per_s);
        crowded.push(c.commands_per_s);
        allocs.push(a.allocations_per_command.max(c.allocations_per_command));
    }
    let (a, c) = (median(&mut alone), median(&mut crowded));
    println!("busy_queue_alone_commands_per_s_median={a:.0}");
    println!("busy_queue_beside_idle_commands_per_s_median={c:.0}");
    println!("idle_queues={idle}");
    println!("ratio_beside_idle_to_alone={:.3}", c / a);
    println!("loss_beside_idle_pct={:.1}", (1.0 - c / a).max(0.0) * 100.0);
    println!(
        "allocations_per_command_max={:.4}",
        allocs.iter().cloned().fold(0.0, f64::max)
    );
}
