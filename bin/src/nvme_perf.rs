//! `nvmf-tgt nvme-perf BDF`: random reads straight through the userspace NVMe driver, on
//! one polled queue pair at a fixed queue depth (what SPDK's `spdk_nvme_perf` measures).
//! It proves the driver end to end and gives the figure to set against fio on the kernel's
//! nvme driver.

use std::time::{Duration, Instant};

use clap::Args;
use dma::DmaMemory;
use nvme_pcie::controller::{identify_text, Controller, NamespaceInfo};
use nvme_spec::opcode::io;
use nvme_spec::Sqe;

/// Longest run accepted, in seconds.
const MAX_TIME_S: u64 = 3600;
/// How long in-flight reads may take to finish after the run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args, PartialEq, Eq)]
pub struct PerfArgs {
    /// PCI address of a controller bound to vfio-pci (`nvmf-tgt setup bind BDF`)
    #[arg(value_name = "BDF")]
    pub bdf: String,
    /// Reads in flight
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1023))]
    pub queue_depth: u16,
    /// Bytes per read: a multiple of the namespace's block size
    #[arg(long, default_value_t = 4096)]
    pub io_size: u32,
    /// How long to run, in seconds
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TIME_S))]
    pub time_s: u64,
    /// Namespace to read (default: the first active one)
    #[arg(long)]
    pub nsid: Option<u32>,
}

/// Latencies below this many microseconds are counted exactly.
const EXACT_BELOW_US: u64 = 1024;
/// Above that, each power of two is split into this many buckets (error below 1/64).
const BUCKETS_PER_OCTAVE: u64 = 64;
const OCTAVES: usize = 64 - EXACT_BELOW_US.trailing_zeros() as usize;
const HISTOGRAM_BUCKETS: usize = EXACT_BELOW_US as usize + OCTAVES * BUCKETS_PER_OCTAVE as usize;

/// A latency histogram of fixed size, so recording never allocates, however long the run.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn bucket(us: u64) -> usize {
        if us < EXACT_BELOW_US {
            return us as usize;
        }
        let octave = 63 - u64::from(us.leading_zeros()); // >= 10
        let step = us >> (octave - BUCKETS_PER_OCTAVE.trailing_zeros() as u64);
        let within = step - BUCKETS_PER_OCTAVE; // 0..64: the bits after the leading one
        (EXACT_BELOW_US
            + (octave - u64::from(EXACT_BELOW_US.trailing_zeros())) * BUCKETS_PER_OCTAVE
            + within) as usize
    }

    /// The largest latency that falls into `bucket`.
    fn upper_us(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < EXACT_BELOW_US {
            return b;
        }
        let octave =
            (b - EXACT_BELOW_US) / BUCKETS_PER_OCTAVE + u64::from(EXACT_BELOW_US.trailing_zeros());
        let within = (b - EXACT_BELOW_US) % BUCKETS_PER_OCTAVE;
        let shift = octave - u64::from(BUCKETS_PER_OCTAVE.trailing_zeros());
        // u128: the top bucket ends at u64::MAX, whose successor needs bit 64.
        ((u128::from(BUCKETS_PER_OCTAVE + within + 1) << shift) - 1) as u64
    }

    pub fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `pct` percentile (nearest rank), in microseconds: exact below 1 ms, otherwise
    /// the top of its bucket (at most 1/64 above the true value).
    pub fn percentile_us(&self, pct: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (((pct / 100.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper_us(bucket);
            }
        }
        unreachable!("the counts add up to the total")
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfReport {
    pub reads: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: LatencyHistogram,
}

impl PerfReport {
    pub fn iops(&self) -> f64 {
        self.reads as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn percentile_us(&self, pct: f64) -> u64 {
        self.latency.percentile_us(pct)
    }
}

/// xorshift64*: cheap, good enough to spread reads over the namespace.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn read_command(nsid: u32, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::new(io::READ, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = (slba as u32).into();
    sqe.cdw11 = ((slba >> 32) as u32).into();
    sqe.cdw12 = (blocks - 1).into();
    sqe
}

fn choose_namespace(ctrl: &Controller, nsid: Option<u32>) -> Result<NamespaceInfo, String> {
    let namespaces = ctrl.namespaces();
    match nsid {
        Some(id) => namespaces
            .iter()
            .find(|ns| ns.nsid == id)
            .copied()
            .ok_or_else(|| {
                format!(
                    "{}: namespace {id} is not active (active: {:?})",
                    ctrl.bdf(),
                    namespaces.iter().map(|ns| ns.nsid).collect::<Vec<_>>()
                )
            }),
        None => namespaces
            .first()
            .copied()
            .ok_or_else(|| format!("{}: the controller has no active namespace", ctrl.bdf())),
    }
}

/// Runs the benchmark; prints what it found and the figures.
pub fn run(args: &PerfArgs) -> Result<PerfReport, String> {
    let mut ctrl = Controller::open(&args.bdf, 1).map_err(|e| e.to_string())?;
    let id = ctrl.identify();
    println!(
        "{}: {} (serial {}, firmware {}), {} namespace(s)",
        ctrl.bdf(),
        identify_text(&id.mn),
        identify_text(&id.sn),
        identify_text(&id.fr),
        ctrl.namespaces().len()
    );
    for ns in ctrl.namespaces() {
        println!(
            "  namespace {}: {} blocks of {} B ({} MiB)",
            ns.nsid,
            ns.num_blocks,
            ns.block_size,
            (ns.num_blocks * u64::from(ns.block_size)) >> 20
        );
    }
    let ns = choose_namespace(&ctrl, args.nsid)?;
    let io_size = args.io_size;
    if io_size == 0 || io_size % ns.block_size != 0 {
        return Err(format!(
            "--io-size {io_size} is not a multiple of namespace {}'s block size {}",
            ns.nsid, ns.block_size
        ));
    }
    if let Some(max) = ctrl.max_transfer_bytes() {
        if u64::from(io_size) > max {
            return Err(format!(
                "--io-size {io_size} exceeds the controller's largest transfer (MDTS) of {max} B"
            ));
        }
    }
    let blocks_per_read = io_size / ns.block_size;
    let slots = ns.num_blocks / u64::from(blocks_per_read);
    if slots == 0 {
        return Err(format!("namespace {} is smaller than one read", ns.nsid));
    }

    let depth = usize::from(args.queue_depth);
    // One thread and no timeouts here: nothing resets the controller, so the gate is unused.
    let (mut queue, _gate) = ctrl
        .create_io_queue(args.queue_depth + 1, u64::from(io_size))
        .map_err(|e| e.to_string())?;
    let buffers = DmaMemory::allocate_ordinary(depth * io_size as usize)
        .map_err(|e| format!("cannot allocate read buffers: {e}"))?;
    ctrl.map_dma(&buffers).map_err(|e| e.to_string())?;

    // Per command id: its buffer and when it was submitted. Sized once, before the run.
    let cids = usize::from(queue.entries());
    let mut buffer_of_cid = vec![0usize; cids];
    let mut started = vec![Instant::now(); cids];
    let mut free_buffers: Vec<usize> = (0..depth).collect();
    let mut latency = LatencyHistogram::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut reads, mut errors) = (0u64, 0u64);
    let mut first_error = None;

    println!(
        "reading {io_size} B at random offsets of namespace {}, queue depth {depth}, {} s",
        ns.nsid, args.time_s
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(args.time_s);
    let drain_end = end + DRAIN_TIMEOUT;
    loop {
        // One clock read per iteration stamps both the completions and the new submissions.
        let now = Instant::now();
        queue.poll(depth, |cqe| {
            let cid = usize::from(cqe.cid());
            latency.record(now.duration_since(started[cid]).as_micros() as u64);
            free_buffers.push(buffer_of_cid[cid]);
            if cqe.status().is_success() {
                reads += 1;
            } else {
                errors += 1;
                first_error.get_or_insert_with(|| cqe.status().name());
            }
        });
        if now >= end {
            if queue.in_flight() == 0 {
                break;
            }
            if now >= drain_end {
                return Err(format!(
                    "{} reads still in flight {} s after the run",
                    queue.in_flight(),
                    DRAIN_TIMEOUT.as_secs()
                ));
            }
            continue;
        }
        while let Some(buffer) = free_buffers.pop() {
            let slba = (rng.next() % slots) * u64::from(blocks_per_read);
            let iova = buffers.iova() + (buffer * io_size as usize) as u64;
            let sqe = read_command(ns.nsid, slba, blocks_per_read);
            match queue.submit_with_prps(&sqe, iova, u64::from(io_size)) {
                Ok(cid) => {
                    buffer_of_cid[usize::from(cid)] = buffer;
                    started[usize::from(cid)] = now;
                }
                Err(e) => return Err(format!("submit: {e}")),
            }
        }
        queue.flush();
    }
    let elapsed = start.elapsed().min(Duration::from_secs(args.time_s));
    let report = PerfReport {
        reads,
        errors,
        elapsed,
        latency,
    };
    println!(
        "{:.0} IOPS, {:.1} MiB/s; latency p50 {} us, p99 {} us, p99.9 {} us; {} read(s), {} error(s)",
        report.iops(),
        report.iops() * f64::from(io_size) / f64::from(1 << 20),
        report.percentile_us(50.0),
        report.percentile_us(99.0),
        report.percentile_us(99.9),
        report.reads,
        report.errors
    );
    // Machine-readable figures for scripts.
    println!(
        "RESULT iops={:.0} clat_p50_us={} clat_p99_us={} clat_p999_us={} errors={}",
        report.iops(),
        report.percentile_us(50.0),
        report.percentile_us(99.0),
        report.percentile_us(99.9),
        report.errors
    );
    if let Some(status) = first_error {
        return Err(format!("{errors} read(s) failed; the first with {status}"));
    }
    ctrl.delete_io_queue(queue);
    drop(ctrl); // shuts the controller down
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_command_encodes_lba_and_zero_based_count() {
        let sqe = read_command(1, 0x1_0000_0002, 8);
        assert_eq!(
            (
                sqe.opcode,
                sqe.nsid.get(),
                sqe.cdw10.get(),
                sqe.cdw11.get(),
                sqe.cdw12.get()
            ),
            (0x02, 1, 2, 1, 7)
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut latency = LatencyHistogram::default();
        for us in [10, 20, 30, 40] {
            latency.record(us);
        }
        let report = PerfReport {
            reads: 4,
            errors: 0,
            elapsed: Duration::from_secs(2),
            latency,
        };
        assert_eq!(report.iops(), 2.0);
        assert_eq!(
            (
                report.percentile_us(50.0),
                report.percentile_us(99.0),
                report.percentile_us(100.0)
            ),
            (20, 40, 40)
        );
        assert_eq!(LatencyHistogram::default().percentile_us(50.0), 0);
    }

    #[test]
    fn histogram_buckets_are_exact_then_within_one_in_64() {
        for us in [0u64, 1, 1023] {
            assert_eq!(LatencyHistogram::upper_us(LatencyHistogram::bucket(us)), us);
        }
        let mut previous = 0;
        for us in (1024u64..1 << 22)
            .step_by(997)
            .chain([u64::MAX / 3, u64::MAX])
        {
            let bucket = LatencyHistogram::bucket(us);
            assert!(bucket < HISTOGRAM_BUCKETS, "{us}");
            assert!(bucket >= previous, "buckets grow with the latency");
            previous = bucket;
            let top = LatencyHistogram::upper_us(bucket);
            assert!(
                top >= us && (top - us) as f64 <= us as f64 / 64.0,
                "{us} -> {top}"
            );
        }
        let mut h = LatencyHistogram::default();
        h.record(1500);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!((1500..=1500 + 1500 / 64).contains(&h.percentile_us(50.0)));
        assert_eq!(h.percentile_us(100.0), u64::MAX);
    }

    #[test]
    fn the_generator_spreads_reads() {
        let mut rng = Rng(1);
        let mut seen = [false; 16];
        for _ in 0..256 {
            seen[(rng.next() % 16) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
