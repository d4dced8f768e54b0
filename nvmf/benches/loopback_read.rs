//! 4 KiB reads at queue depth 128 through `nvmf` with the loopback transport
//! and the null bdev, on one reactor stepped by this thread. The host side
//! (submitting and reaping) runs on the same thread, so its cost counts.
//!
//! Prints commands per second per run, the median, and heap allocations per
//! command (counted by a counting global allocator). Goals: 0 allocations
//! per I/O command and >= 2 M commands/s (median of 5 runs).
//!
//! Knobs (environment):
//! - `LOOPBACK_READ_RUNS` (5), `LOOPBACK_READ_SECS` (2.0),
//!   `LOOPBACK_READ_WARMUP_SECS` (0.5);
//! - `LOOPBACK_READ_CMDS`: a fixed command count per run instead of a
//!   duration (handy under valgrind);
//! - `LOOPBACK_READ_TRACE_ALLOCS=N`: print a backtrace for each of the first N
//!   allocations made during the measured runs (to find who allocates);
//! - `LOOPBACK_READ_LOG=warn|info|debug`: the target's log on stderr;
//! - `LOOPBACK_READ_MAX_IO_BYTES`: the target's MDTS in bytes, which is also
//!   the size of every loopback data buffer (default: `TargetOptions`'s).
//!
//! Each run also prints commands per CPU-second of this thread (from
//! CLOCK_THREAD_CPUTIME_ID), which tells the code's cost apart from time lost
//! to other processes on a shared machine; the goal is judged on wall time.
//!
//! Exits 0 whether or not the goals are met: it is a benchmark, not a test
//! (1 only when it cannot measure: setup failed or the target stopped answering).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nvme_spec::features::{KEEP_ALIVE_TIMER, NUMBER_OF_QUEUES};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{Sqe, Status, U32};
use nvmf::testing::{HostController, HostId, TestBed};
use nvmf::{NamespaceConfig, SubsystemConfig, TargetOptions};

// ---- counting allocator ---------------------------------------------------

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
/// Set while a measured run is in progress (backtraces are taken only then).
static MEASURING: AtomicBool = AtomicBool::new(false);
/// Backtraces still to print.
static TRACE_LEFT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

struct CountingAlloc;

impl CountingAlloc {
    #[inline]
    fn note(size: usize) {
        if MEASURING.load(Ordering::Relaxed) && TRACE_LEFT.load(Ordering::Relaxed) > 0 {
            trace(size);
        }
    }
}

#[cold]
fn trace(size: usize) {
    // Capturing and printing a backtrace allocates: do not recurse, and do
    // not count what the tracing itself allocates.
    let _ = IN_TRACE.try_with(|t| {
        if t.replace(true) {
            return;
        }
        if TRACE_LEFT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            let (a, r, b) = (
                ALLOCS.load(Ordering::Relaxed),
                REALLOCS.load(Ordering::Relaxed),
                ALLOC_BYTES.load(Ordering::Relaxed),
            );
            let bt = std::backtrace::Backtrace::force_capture();
            // Not eprintln!: it panics when stderr is gone, and an allocator must not unwind.
            let _ = writeln!(
                std::io::stderr(),
                "=== allocation of {size} bytes during a measured run ===\n{bt}"
            );
            ALLOCS.store(a, Ordering::Relaxed);
            REALLOCS.store(r, Ordering::Relaxed);
            ALLOC_BYTES.store(b, Ordering::Relaxed);
        }
        t.set(false);
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// allocator contract (valid, suitably aligned blocks; dealloc/realloc only of blocks we
// returned, with their layout) is System's. The counting uses atomics only. `note` may
// allocate while tracing; it guards against recursion with a thread-local flag and does not
// unwind (it ignores write errors rather than panic).
unsafe impl GlobalAlloc for CountingAlloc {
    /// # Safety
    /// As for [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        Self::note(layout.size());
        // SAFETY: our caller's contract for `layout` is System's.
        unsafe { System.alloc(layout) }
    }

    /// # Safety
    /// As for [`GlobalAlloc::alloc_zeroed`].
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        Self::note(layout.size());
        // SAFETY: as in alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// # Safety
    /// As for [`GlobalAlloc::realloc`]: `ptr` came from this allocator with `layout`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        Self::note(new_size);
        // SAFETY: `ptr` came from System (every block of ours does) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    /// # Safety
    /// As for [`GlobalAlloc::dealloc`]: `ptr` came from this allocator with `layout`.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in realloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// (alloc + realloc calls, bytes asked for).
fn alloc_snapshot() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed) + REALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

// ---- thread CPU time (to tell our cost from time lost to other processes) ----

#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (64-bit fields on 64-bit Linux) into `ts`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0 && cfg!(target_pointer_width = "64"))
        .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

// ---- optional logging (LOOPBACK_READ_LOG=error|warn|info|debug) --------------

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
    }
    fn flush(&self) {}
}

fn init_log() {
    static LOGGER: StderrLog = StderrLog;
    let level = match std::env::var("LOOPBACK_READ_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("info") => log::LevelFilter::Info,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => return,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

// ---- workload ---------------------------------------------------------------

const SUBNQN: &str = "nqn.2016-06.io.spdk:bench-loopback-read";
const QUEUE_DEPTH: u16 = 128;
const BLOCK_SIZE: u32 = 512;
const NUM_BLOCKS: u64 = 1 << 24;
const IO_BYTES: u32 = 4096;
const BLOCKS_PER_IO: u32 = IO_BYTES / BLOCK_SIZE;
/// 4 KiB units on the device (a power of two, so an LBA is a mask away).
const IO_UNITS: u64 = NUM_BLOCKS / BLOCKS_PER_IO as u64;
/// Where the per-command 4 KiB slots start in host memory (past the areas
/// `testing` uses for Connect and admin data).
const SLOTS_AT: u64 = 2 << 20;
const GOAL_CMDS_PER_SEC: f64 = 2_000_000.0;
/// Keep Alive Timeout the benchmark host sets; it sends a Keep Alive every KATO/2.
const KATO_MS: u32 = 60_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("loopback_read: ignoring {name}={v:?} (not a number)");
            default
        }),
        Err(_) => default,
    }
}

/// How long one run lasts.
#[derive(Clone, Copy)]
enum Length {
    Time(Duration),
    Commands(u64),
}

struct Outcome {
    /// Successful completions.
    done: u64,
    /// Completions with an error status.
    errors: u64,
    first_error: Option<Status>,
    elapsed: Duration,
    /// Reactor iterations (`TestBed::step`) taken.
    steps: u64,
    /// CPU time this thread got during the run, when known.
    cpu: Option<Duration>,
}

struct Bench {
    bed: TestBed,
    ctrl: HostController,
    io: nvmf::testing::Queue,
    /// One Read per slot, cid = slot + 1, data at its own 4 KiB of host memory.
    templates: Vec<Sqe>,
    rng: u64,
    /// When the admin queue last carried a Keep Alive.
    last_keep_alive: Instant,
    /// Keep Alives sent from inside measured loops (slow runs, e.g. valgrind).
    in_run_keep_alives: u64,
}

impl Bench {
    fn setup() -> Bench {
        let null = bdev::create_null("Null0", NUM_BLOCKS, BLOCK_SIZE).expect("null bdev");
        let mut sub = SubsystemConfig::new(SUBNQN);
        sub.allow_any_host = true;
        sub.namespaces.push(NamespaceConfig {
            nsid: 1,
            bdev: null,
            nguid: None,
            uuid: None,
        });
        let mut options = TargetOptions::default();
        options.max_io_bytes = env_or("LOOPBACK_READ_MAX_IO_BYTES", options.max_io_bytes);
        let mut bed = TestBed::new(1, options, &[sub]);

        let host = HostId::new(1);
        let mut ctrl = match HostController::connect(&mut bed, &host, SUBNQN) {
            Ok(c) => c,
            Err(cqe) => fail(&format!("admin Connect refused: {:?}", cqe.status())),
        };
        // One I/O queue (0-based count 0).
        let c = ctrl.admin.features(
            &mut bed,
            admin::SET_FEATURES,
            u32::from(NUMBER_OF_QUEUES),
            0,
        );
        if !c.status().is_success() {
            fail(&format!("Set Features Number of Queues: {:?}", c.status()));
        }
        // A long KATO, so the Keep Alives sent between runs suffice and none
        // (admin commands, whose allocations would be counted) lands inside one.
        let c = ctrl.admin.features(
            &mut bed,
            admin::SET_FEATURES,
            u32::from(KEEP_ALIVE_TIMER),
            KATO_MS,
        );
        if !c.status().is_success() {
            fail(&format!("Set Features Keep Alive Timer: {:?}", c.status()));
        }
        let (mut io, c) = ctrl.connect_io(&mut bed, 1, QUEUE_DEPTH);
        if !c.status().is_success() {
            fail(&format!("I/O queue Connect: {:?}", c.status()));
        }

        // Sanity: a read overwrites host memory with the null bdev's zeroes.
        io.hq
            .memory()
            .write_at(1 << 20, &[0xAA; IO_BYTES as usize])
            .expect("host memory");
        let (c, data) = io.read(&mut bed, 1, 8, BLOCK_SIZE, BLOCKS_PER_IO);
        if !c.status().is_success() || data.iter().any(|&b| b != 0) {
            fail(&format!("sanity read failed: {:?}", c.status()));
        }

        let templates = (0..QUEUE_DEPTH)
            .map(|slot| {
                let mut sqe = Sqe::new(io::READ, slot + 1);
                sqe.nsid = U32::new(1);
                sqe.set_nlb(BLOCKS_PER_IO);
                sqe.dptr = io
                    .hq
                    .keyed_sgl(SLOTS_AT + u64::from(slot) * u64::from(IO_BYTES), IO_BYTES);
                sqe
            })
            .collect();
        Bench {
            bed,
            ctrl,
            io,
            templates,
            rng: 0x9E37_79B9_7F4A_7C15,
            last_keep_alive: Instant::now(),
            in_run_keep_alives: 0,
        }
    }

    #[inline]
    fn next_lba(&mut self) -> u64 {
        // xorshift64: random 4 KiB-aligned LBAs, no allocation, a few cycles.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x & (IO_UNITS - 1)) * u64::from(BLOCKS_PER_IO)
    }

    #[inline]
    fn submit(&mut self, slot: usize) {
        let mut sqe = self.templates[slot];
        let lba = self.next_lba();
        sqe.set_slba(lba);
        if self.io.hq.submit(sqe).is_err() {
            fail("host submission queue full (more than 128 commands outstanding?)");
        }
    }

    /// Keeps QUEUE_DEPTH reads outstanding until `len` is reached, then lets
    /// the outstanding ones complete (inside the timed window).
    fn run(&mut self, len: Length) -> Outcome {
        let depth = usize::from(QUEUE_DEPTH);
        let mut out = Outcome {
            done: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            steps: 0,
            cpu: None,
        };
        let cpu0 = thread_cpu_time();
        let start = Instant::now();
        let deadline = match len {
            Length::Time(d) => Some(start + d),
            Length::Commands(_) => None,
        };
        let target_cmds = match len {
            Length::Time(_) => u64::MAX,
            Length::Commands(n) => n,
        };
        for slot in 0..depth {
            self.submit(slot);
        }
        let mut outstanding = depth;
        let mut submitted = depth as u64;
        let mut refill = true;
        let mut idle_steps: u32 = 0;
        while outstanding > 0 {
            self.bed.step();
            out.steps += 1;
            let mut got = 0;
            while let Some(cqe) = self.io.hq.poll_completion() {
                got += 1;
                outstanding -= 1;
                let status = cqe.status();
                if status.is_success() {
                    out.done += 1;
                } else {
                    out.errors += 1;
                    out.first_error.get_or_insert(status);
                }
                if refill {
                    let slot = usize::from(cqe.cid().wrapping_sub(1));
                    if slot >= depth {
                        fail(&format!("completion with unexpected cid {}", cqe.cid()));
                    }
                    self.submit(slot);
                    outstanding += 1;
                    submitted += 1;
                }
            }
            if refill {
                let stop = match deadline {
                    Some(d) => Instant::now() >= d,
                    None => submitted >= target_cmds,
                };
                if stop {
                    refill = false;
                }
            }
            if out.steps % 16 == 0 {
                self.keep_alive_if_due();
            }
            if got == 0 {
                idle_steps += 1;
                if idle_steps >= 1_000_000 {
                    let why = if self.io.hq.is_closed_by_target() {
                        " (queue closed by the target)"
                    } else {
                        ""
                    };
                    fail(&format!(
                        "no completion in 1,000,000 reactor steps, {outstanding} outstanding{why}"
                    ));
                }
            } else {
                idle_steps = 0;
            }
        }
        out.elapsed = start.elapsed();
        out.cpu = thread_cpu_time()
            .zip(cpu0)
            .map(|(b, a)| b.saturating_sub(a));
        out
    }

    /// What a host does every KATO/2: keeps the controller alive. Called
    /// between runs, so native runs (shorter than KATO/2) send none inside.
    fn keep_alive(&mut self) {
        let c = self
            .ctrl
            .admin
            .exec(&mut self.bed, Sqe::new(admin::KEEP_ALIVE, 0));
        if !c.status().is_success() {
            fail(&format!("Keep Alive: {:?}", c.status()));
        }
        self.last_keep_alive = Instant::now();
    }

    /// Inside a run: a non-blocking Keep Alive once KATO/2 has passed (only
    /// slow runs get here, e.g. under valgrind); reaps earlier answers.
    #[cold]
    fn keep_alive_if_due(&mut self) {
        while let Some(c) = self.ctrl.admin.hq.poll_completion() {
            if !c.status().is_success() {
                fail(&format!("Keep Alive: {:?}", c.status()));
            }
        }
        if self.last_keep_alive.elapsed() >= Duration::from_millis(u64::from(KATO_MS / 2)) {
            let cid = self.ctrl.admin.cid();
            if self
                .ctrl
                .admin
                .hq
                .submit(Sqe::new(admin::KEEP_ALIVE, cid))
                .is_ok()
            {
                self.last_keep_alive = Instant::now();
                self.in_run_keep_alives += 1;
            }
        }
    }
}

fn fail(msg: &str) -> ! {
    MEASURING.store(false, Ordering::Relaxed);
    eprintln!("loopback_read: ERROR: {msg}");
    println!("loopback_read: ERROR: {msg}");
    std::process::exit(1);
}

fn main() {
    let runs: usize = env_or("LOOPBACK_READ_RUNS", 5).max(1);
    let secs: f64 = env_or("LOOPBACK_READ_SECS", 2.0f64).max(0.01);
    let warmup_secs: f64 = env_or("LOOPBACK_READ_WARMUP_SECS", 0.5f64).max(0.0);
    let cmds: u64 = env_or("LOOPBACK_READ_CMDS", 0);
    TRACE_LEFT.store(env_or("LOOPBACK_READ_TRACE_ALLOCS", 0), Ordering::Relaxed);
    let len = if cmds > 0 {
        Length::Commands(cmds)
    } else {
        Length::Time(Duration::from_secs_f64(secs))
    };

    init_log();
    let mut bench = Bench::setup();
    // Shows the counter works: setup (config, Connect, admin commands) allocates.
    let setup_allocs = alloc_snapshot().0;
    println!(
        "loopback_read: 4 KiB random reads, queue depth {QUEUE_DEPTH}, 1 reactor, loopback transport, \
         null bdev ({NUM_BLOCKS} x {BLOCK_SIZE} B), host on the same thread"
    );
    match len {
        Length::Time(d) => println!(
            "loopback_read: {runs} runs of {:.2} s after {warmup_secs:.2} s warm-up",
            d.as_secs_f64()
        ),
        Length::Commands(n) => {
            println!("loopback_read: {runs} runs of {n} commands after {warmup_secs:.2} s warm-up")
        }
    }
    println!(
        "loopback_read: setup made {setup_allocs} heap allocations (counting allocator active)"
    );

    if warmup_secs > 0.0 {
        let w = bench.run(Length::Time(Duration::from_secs_f64(warmup_secs)));
        println!(
            "warm-up: {:.0} cmds/s ({} cmds in {:.3} s)",
            w.done as f64 / w.elapsed.as_secs_f64(),
            w.done,
            w.elapsed.as_secs_f64()
        );
        bench.keep_alive();
    }

    let mut rates = Vec::with_capacity(runs);
    let mut cpu_rates = Vec::with_capacity(runs);
    let (mut total_cmds, mut total_allocs, mut total_errors) = (0u64, 0u64, 0u64);
    for i in 1..=runs {
        let (a0, b0) = alloc_snapshot();
        MEASURING.store(true, Ordering::Relaxed);
        let o = bench.run(len);
        MEASURING.store(false, Ordering::Relaxed);
        let (a1, b1) = alloc_snapshot();
        bench.keep_alive();

        let completed = o.done + o.errors;
        let allocs = a1 - a0;
        let rate = o.done as f64 / o.elapsed.as_secs_f64();
        rates.push(rate);
        let cpu = o.cpu.filter(|c| !c.is_zero());
        if let Some(c) = cpu {
            cpu_rates.push(o.done as f64 / c.as_secs_f64());
        }
        total_cmds += completed;
        total_allocs += allocs;
        total_errors += o.errors;
        println!(
            "run {i}: {rate:.0} cmds/s, {:.3} allocs/cmd ({} cmds in {:.3} s, {:.1} cmds/step, {allocs} allocs, {} bytes, {} errors{})",
            allocs as f64 / completed.max(1) as f64,
            o.done,
            o.elapsed.as_secs_f64(),
            completed as f64 / o.steps.max(1) as f64,
            b1 - b0,
            o.errors,
            o.first_error.map(|s| format!(", first: {s:?}")).unwrap_or_default()
        );
        if let Some(c) = cpu {
            println!(
                "run {i} cpu: {:.0} cmds per CPU-second (thread ran {:.0}% of the wall time)",
                o.done as f64 / c.as_secs_f64(),
                100.0 * c.as_secs_f64() / o.elapsed.as_secs_f64()
            );
        }
    }

    fn median_of(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    let median = median_of(&mut rates);
    let allocs_per_cmd = total_allocs as f64 / total_cmds.max(1) as f64;
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!(
        "median: {median:.0} cmds/s over {runs} runs; allocs/cmd: {allocs_per_cmd:.3}; \
         goal {GOAL_CMDS_PER_SEC:.0} cmds/s: {}; goal 0 allocs/cmd: {}{}",
        met(median >= GOAL_CMDS_PER_SEC),
        met(total_allocs == 0),
        if total_errors > 0 {
            format!("; INVALID: {total_errors} commands failed")
        } else {
            String::new()
        }
    );
    if !cpu_rates.is_empty() {
        let n = cpu_rates.len();
        println!(
            "cpu-time median: {:.0} cmds per CPU-second over {n} runs (rate had the thread never been \
             preempted; the goal is judged on the wall-clock median above)",
            median_of(&mut cpu_rates)
        );
    }
    if bench.in_run_keep_alives > 0 {
        println!(
            "note: {} Keep Alive commands were sent inside measured runs (runs longer than KATO/2); \
             their allocations, if any, are in the counts above",
            bench.in_run_keep_alives
        );
    }
}
