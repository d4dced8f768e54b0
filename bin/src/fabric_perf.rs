//! `nvmf-tgt perf -r TRID`: a fabrics benchmark client in the shape of SPDK's
//! `spdk_nvme_perf`. It connects to a remote target over NVMe/TCP (admin queue, then one I/O
//! queue), keeps `-q` commands in flight from one pinned thread that polls a non-blocking
//! socket, and prints IOPS, MiB/s and latency percentiles.
//!
//! Each loop turn asks epoll whether the socket is readable, reads what it holds (every
//! whole PDU in it is handled), and writes every PDU the turn produced: new commands,
//! H2CData. Readiness comes from epoll, not from reading an empty socket: a `recv` takes
//! the socket's lock, and spinning on it slows the target's sends into the same socket on
//! loopback (it halved both targets' IOPS in the first measurements).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::identify::{cns, IdentifyController, IdentifyNamespace};
use nvme_spec::opcode::{admin, io as nvm};
use nvme_spec::{Cqe, FromBytes, IntoBytes, SglDescriptor, Sqe};
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::{
    self, flags, pdu_type, CommonHeader, DataDigest, Digests, CH_BYTES, CMD_HLEN, DATA_HLEN,
    DIGEST_BYTES,
};

use crate::nvme_perf::{LatencyHistogram, Rng};

const MAX_TIME_S: u64 = 3600;
/// How long in-flight commands may take to finish after the run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The host NQN sent when the transport ID names none.
const DEFAULT_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:6c1e2b0e-0000-4000-8000-00000000f00d";
/// Latencies are counted in units of this many nanoseconds.
const LATENCY_UNIT_NS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Read,
    Write,
    Randread,
    Randwrite,
    Rw,
    Randrw,
}

#[derive(Debug, Args, PartialEq, Eq)]
pub struct FabricPerfArgs {
    /// Transport ID, as spdk_nvme_perf takes it: 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1
    /// trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1 [hostnqn:...]'
    #[arg(short = 'r', long = "transport-id", value_name = "TRID")]
    pub trid: String,
    /// Commands in flight
    #[arg(short = 'q', long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub queue_depth: u16,
    /// Bytes per command: a multiple of the namespace's block size
    #[arg(short = 'o', long, default_value_t = 4096)]
    pub io_size: u32,
    /// Access pattern
    #[arg(short = 'w', long, value_enum, default_value_t = Workload::Randread)]
    pub workload: Workload,
    /// Percentage of reads in rw and randrw
    #[arg(short = 'M', long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,
    /// How long to run, in seconds
    #[arg(short = 't', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TIME_S))]
    pub time_s: u64,
    /// Namespace to use
    #[arg(short = 'n', long, default_value_t = 1)]
    pub nsid: u32,
    /// NVMe/TCP header digests
    #[arg(short = 'H', long)]
    pub header_digest: bool,
    /// NVMe/TCP data digests
    #[arg(short = 'I', long)]
    pub data_digest: bool,
}

/// Where to connect, from the transport ID string.
#[derive(Debug, PartialEq, Eq)]
pub struct TransportId {
    pub addr: SocketAddr,
    pub subnqn: String,
    pub hostnqn: String,
}

/// Parses spdk_nvme_perf's transport ID syntax (keys case-insensitive, in any order).
pub fn parse_trid(text: &str) -> Result<TransportId, String> {
    let (mut trtype, mut adrfam, mut traddr, mut trsvcid, mut subnqn, mut hostnqn) =
        (None, None, None, None, None, None);
    for pair in text.split_whitespace() {
        let (key, value) = pair
            .split_once(':')
            .ok_or_else(|| format!("transport ID: {pair:?} is not key:value (e.g. trtype:TCP)"))?;
        let slot = match key.to_ascii_lowercase().as_str() {
            "trtype" => &mut trtype,
            "adrfam" => &mut adrfam,
            "traddr" => &mut traddr,
            "trsvcid" => &mut trsvcid,
            "subnqn" => &mut subnqn,
            "hostnqn" => &mut hostnqn,
            other => {
                return Err(format!(
                    "transport ID: unknown key {other:?} (known: trtype, adrfam, traddr, \
                     trsvcid, subnqn, hostnqn)"
                ))
            }
        };
        *slot = Some(value.to_string());
    }
    match trtype.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => {}
        Some("rdma") => {
            return Err(
                "transport ID: trtype:RDMA is not supported by this client yet; use \
                        spdk_nvme_perf for RDMA"
                    .into(),
            )
        }
        Some(other) => return Err(format!("transport ID: trtype {other:?} is not TCP")),
        None => return Err("transport ID: trtype is missing (trtype:TCP)".into()),
    }
    let traddr = traddr.ok_or("transport ID: traddr is missing (traddr:127.0.0.1)")?;
    let ip: IpAddr = traddr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("transport ID: traddr {traddr:?} is not an IP address"))?;
    if let Some(fam) = adrfam {
        let want = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        if fam.to_ascii_lowercase() != want {
            return Err(format!(
                "transport ID: adrfam {fam} does not match traddr {ip}"
            ));
        }
    }
    let port: u16 = trsvcid
        .as_deref()
        .unwrap_or("4420")
        .parse()
        .map_err(|_| "transport ID: trsvcid is not a port number".to_string())?;
    Ok(TransportId {
        addr: SocketAddr::new(ip, port),
        subnqn: subnqn
            .ok_or("transport ID: subnqn is missing (subnqn:nqn.2016-06.io.spdk:cnode1)")?,
        hostnqn: hostnqn.unwrap_or_else(|| DEFAULT_HOSTNQN.to_string()),
    })
}

/// What one run measured.
#[derive(Debug)]
pub struct FabricReport {
    pub commands: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_sum_ns: u128,
    pub latency: LatencyHistogram,
}

impl FabricReport {
    pub fn iops(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
    fn percentile_us(&self, pct: f64) -> f64 {
        (self.latency.percentile_us(pct) * LATENCY_UNIT_NS) as f64 / 1000.0
    }
    fn average_us(&self) -> f64 {
        let n = (self.commands + self.errors).max(1);
        self.latency_sum_ns as f64 / n as f64 / 1000.0
    }
}

fn identify(host: &mut TcpHost, cns: u8, nsid: u32) -> Result<Vec<u8>, String> {
    let mut sqe = Sqe::new(admin::IDENTIFY, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = u32::from(cns).into();
    let (c, data) = host
        .exec(sqe, &[], 4096)
        .map_err(|e| format!("Identify: {e}"))?;
    if !c.status().is_success() {
        return Err(format!(
            "Identify (CNS {cns}, NSID {nsid}): {}",
            c.status().name()
        ));
    }
    Ok(data)
}

/// The I/O queue's pipelined loop.
struct Queue {
    stream: mio::net::TcpStream,
    poll: mio::Poll,
    events: mio::Events,
    /// Edge-triggered: set by a readable event, cleared when a read would block.
    readable: bool,
    digests: Digests,
    in_capsule_bytes: u32,
    max_h2c_data: u32,
    send: Vec<u8>,
    sent: usize,
    recv: Vec<u8>,
    recv_len: usize,
    zeros: Vec<u8>,
}

impl Queue {
    /// Appends a PDU (header bytes from `CH_BYTES` on in `header`) with this queue's digests.
    fn push_pdu(&mut self, t: u8, hlen: usize, header: &[u8], data: &[u8], extra_flags: u8) {
        let hd = self.digests.header_bytes();
        let dd = if data.is_empty() {
            0
        } else {
            self.digests.data_bytes()
        };
        let pdo = if data.is_empty() { 0 } else { hlen + hd };
        let mut f = extra_flags;
        if self.digests.header {
            f |= flags::HDGST;
        }
        if dd > 0 {
            f |= flags::DDGST;
        }
        let start = self.send.len();
        self.send.extend_from_slice(&[0u8; CH_BYTES]);
        CommonHeader {
            pdu_type: t,
            flags: f,
            hlen: hlen as u8,
            pdo: pdo as u8,
            plen: (hlen + hd + data.len() + dd) as u32,
        }
        .write(&mut self.send[start..]);
        self.send.extend_from_slice(&header[CH_BYTES..hlen]);
        if hd > 0 {
            let crc = crc32c::crc32c(&self.send[start..start + hlen]);
            self.send.extend_from_slice(&crc.to_le_bytes());
        }
        self.send.extend_from_slice(data);
        if dd > 0 {
            let mut d = DataDigest::default();
            d.update(data);
            self.send.extend_from_slice(&d.bytes());
        }
    }

    fn submit(&mut self, sqe: &mut Sqe, write: bool, len: u32) {
        let mut h = [0u8; CMD_HLEN];
        if write && len <= self.in_capsule_bytes {
            sqe.dptr = SglDescriptor::data_block(0, len);
            h[CH_BYTES..].copy_from_slice(sqe.as_bytes());
            let zeros = std::mem::take(&mut self.zeros);
            self.push_pdu(
                pdu_type::CAPSULE_CMD,
                CMD_HLEN,
                &h,
                &zeros[..len as usize],
                0,
            );
            self.zeros = zeros;
        } else {
            sqe.dptr = SglDescriptor::transport_data_block(len);
            h[CH_BYTES..].copy_from_slice(sqe.as_bytes());
            self.push_pdu(pdu_type::CAPSULE_CMD, CMD_HLEN, &h, &[], 0);
        }
    }

    /// H2CData for an R2T of `len` bytes from `offset`.
    fn answer_r2t(&mut self, cccid: u16, ttag: u16, offset: u32, len: u32) {
        let zeros = std::mem::take(&mut self.zeros);
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(self.max_h2c_data);
            let mut h = [0u8; DATA_HLEN];
            h[8..10].copy_from_slice(&cccid.to_le_bytes());
            h[10..12].copy_from_slice(&ttag.to_le_bytes());
            h[12..16].copy_from_slice(&at.to_le_bytes());
            h[16..20].copy_from_slice(&n.to_le_bytes());
            let last = if at + n == end { flags::DATA_LAST } else { 0 };
            self.push_pdu(
                pdu_type::H2C_DATA,
                DATA_HLEN,
                &h,
                &zeros[..n as usize],
                last,
            );
            at += n;
        }
        self.zeros = zeros;
    }

    /// Writes what is queued; stops when the socket is full.
    fn write_out(&mut self) -> io::Result<()> {
        while self.sent < self.send.len() {
            match self.stream.write(&self.send[self.sent..]) {
                Ok(0) => return Err(io::Error::other("the target closed the connection")),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.send.clear();
        self.sent = 0;
        Ok(())
    }

    /// One read of what the socket holds, when epoll says it holds something.
    fn read_in(&mut self) -> io::Result<()> {
        if !self.readable {
            self.poll.poll(&mut self.events, Some(Duration::ZERO))?;
            self.readable = self
                .events
                .iter()
                .any(|e| e.is_readable() || e.is_read_closed());
            if !self.readable {
                return Ok(());
            }
        }
        if self.recv_len == self.recv.len() {
            return Ok(()); // full of partial PDUs: handled before the next read
        }
        match self.stream.read(&mut self.recv[self.recv_len..]) {
            Ok(0) => Err(io::Error::other("the target closed the connection")),
            Ok(n) => {
                self.recv_len += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Runs the benchmark on the lowest CPU of `mask` (the global `-m`); prints what it found
/// and the figures.
pub fn run(
    args: &FabricPerfArgs,
    mask: Option<&reactor::ReactorMask>,
) -> Result<FabricReport, String> {
    let trid = parse_trid(&args.trid)?;
    if let Some(&core) = mask.and_then(|m| m.cores().first()) {
        reactor::pin_current_thread(core).map_err(|e| format!("cannot run on CPU {core}: {e}"))?;
    }
    let digests = Digests {
        header: args.header_digest,
        data: args.data_digest,
    };
    let fail = |what: &str, e: io::Error| format!("{what} {}: {e}", trid.addr);
    let mut admin_q =
        TcpHost::connect(trid.addr, digests).map_err(|e| fail("cannot connect to", e))?;
    let c = admin_q
        .fabrics_connect(0, 31, CNTLID_DYNAMIC, &trid.subnqn, &trid.hostnqn, 0)
        .map_err(|e| fail("Connect (admin) to", e))?;
    if !c.status().is_success() {
        return Err(format!(
            "{} refused the Connect to {}: {} (is the host NQN allowed?)",
            trid.addr,
            trid.subnqn,
            c.status().name()
        ));
    }
    let cntlid = c.dw0() as u16;
    admin_q
        .enable()
        .map_err(|e| fail("enabling the controller at", e))?;
    let ctrl = IdentifyController::read_from_bytes(&identify(&mut admin_q, cns::CONTROLLER, 0)?)
        .map_err(|_| "Identify Controller: short data".to_string())?;
    let ns =
        IdentifyNamespace::read_from_bytes(&identify(&mut admin_q, cns::NAMESPACE, args.nsid)?)
            .map_err(|_| "Identify Namespace: short data".to_string())?;
    let num_blocks = ns.nsze.get();
    if num_blocks == 0 {
        return Err(format!("namespace {} is not active", args.nsid));
    }
    let lbaf = ns.lbaf[usize::from(ns.flbas & 0xF)].get();
    let block_size = 1u32 << ((lbaf >> 16) & 0xFF);
    let io_size = args.io_size;
    if io_size == 0 || io_size % block_size != 0 {
        return Err(format!(
            "-o {io_size} is not a multiple of namespace {}'s block size {block_size}",
            args.nsid
        ));
    }
    let blocks = io_size / block_size;
    let slots = num_blocks / u64::from(blocks);
    if slots == 0 {
        return Err(format!(
            "namespace {} is smaller than one command",
            args.nsid
        ));
    }
    let mut io_host =
        TcpHost::connect(trid.addr, digests).map_err(|e| fail("cannot connect to", e))?;
    // The client never reads SQHD (it keeps at most -q commands in flight), so it disables SQ
    // flow control, as `nvme connect --disable-sqflow` does: a successful read then ends with its
    // C2HData PDU (SUCCESS flag) and no response capsule, on targets that honour the attribute.
    io_host.connect_cattr = nvme_spec::fabrics::CATTR_DISABLE_SQFLOW;
    let c = io_host
        .fabrics_connect(1, args.queue_depth, cntlid, &trid.subnqn, &trid.hostnqn, 0)
        .map_err(|e| fail("Connect (I/O queue) to", e))?;
    if !c.status().is_success() {
        return Err(format!("I/O queue Connect refused: {}", c.status().name()));
    }
    println!(
        "{} {}: namespace {} ({} blocks of {block_size} B), {:?} of {io_size} B, queue depth {}, \
         {} s{}",
        trid.addr,
        trid.subnqn,
        args.nsid,
        num_blocks,
        args.workload,
        args.queue_depth,
        args.time_s,
        if args.header_digest || args.data_digest {
            ", digests"
        } else {
            ""
        }
    );
    io_host
        .stream
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the socket non-blocking: {e}"))?;
    let max_pdu = io_size as usize + 256;
    let mut stream =
        mio::net::TcpStream::from_std(io_host.stream.try_clone().map_err(|e| e.to_string())?);
    let poll = mio::Poll::new().map_err(|e| format!("cannot create an epoll instance: {e}"))?;
    poll.registry()
        .register(&mut stream, mio::Token(0), mio::Interest::READABLE)
        .map_err(|e| format!("cannot watch the socket: {e}"))?;
    let mut q = Queue {
        stream,
        poll,
        events: mio::Events::with_capacity(4),
        readable: true,
        digests,
        in_capsule_bytes: (ctrl.ioccsz.get() * 16).saturating_sub(64),
        max_h2c_data: io_host.max_h2c_data.max(4096),
        send: Vec::with_capacity(usize::from(args.queue_depth) * (max_pdu + 128)),
        sent: 0,
        recv: vec![0; (4 * max_pdu).max(1 << 20)],
        recv_len: 0,
        zeros: vec![0; io_size as usize],
    };
    let report = drive(&mut q, args, slots, blocks, block_size)?;
    print_report(&report, io_size);
    Ok(report)
}

/// Keeps `queue_depth` commands in flight until the time is up, then drains.
fn drive(
    q: &mut Queue,
    args: &FabricPerfArgs,
    slots: u64,
    blocks: u32,
    block_size: u32,
) -> Result<FabricReport, String> {
    let depth = usize::from(args.queue_depth);
    let io_size = blocks * block_size;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next_lba = 0u64;
    // When each command id went out; None while it is free.
    let mut in_flight: Vec<Option<Instant>> = vec![None; depth + 1];
    let mut report = FabricReport {
        commands: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_sum_ns: 0,
        latency: LatencyHistogram::default(),
    };
    let mut first_error = None;
    let random = matches!(
        args.workload,
        Workload::Randread | Workload::Randwrite | Workload::Randrw
    );
    let mut new_command =
        |cid: u16, q: &mut Queue, now: Instant, in_flight: &mut [Option<Instant>]| {
            let write = match args.workload {
                Workload::Read | Workload::Randread => false,
                Workload::Write | Workload::Randwrite => true,
                Workload::Rw | Workload::Randrw => rng.next() % 100 >= u64::from(args.rwmixread),
            };
            let slot = if random {
                rng.next() % slots
            } else {
                next_lba = (next_lba + 1) % slots;
                next_lba
            };
            let slba = slot * u64::from(blocks);
            let mut sqe = Sqe::new(if write { nvm::WRITE } else { nvm::READ }, cid);
            sqe.nsid = args.nsid.into();
            sqe.cdw10 = (slba as u32).into();
            sqe.cdw11 = ((slba >> 32) as u32).into();
            sqe.cdw12 = (blocks - 1).into();
            q.submit(&mut sqe, write, io_size);
            in_flight[usize::from(cid)] = Some(now);
        };
    let start = Instant::now();
    for cid in 1..=depth as u16 {
        new_command(cid, q, start, &mut in_flight);
    }
    let end = start + Duration::from_secs(args.time_s);
    let mut outstanding = depth;
    loop {
        q.write_out().map_err(|e| e.to_string())?;
        q.read_in().map_err(|e| e.to_string())?;
        let now = Instant::now();
        // Every whole PDU received.
        let mut at = 0;
        while q.recv_len - at >= CH_BYTES {
            let ch = CommonHeader::parse(&q.recv[at..]);
            let plen = ch.plen as usize;
            if plen < CH_BYTES || plen > q.recv.len() {
                return Err(format!("the target sent a PDU of {plen} bytes: {ch:?}"));
            }
            if q.recv_len - at < plen {
                break;
            }
            let pdu = &q.recv[at..at + plen];
            let hlen = usize::from(ch.hlen);
            let hd = if ch.flags & flags::HDGST != 0 {
                DIGEST_BYTES
            } else {
                0
            };
            if hd > 0 && !pdu::header_digest_ok(&pdu[..hlen], &pdu[hlen..hlen + hd]) {
                return Err("bad header digest from the target".into());
            }
            let done_cid = match ch.pdu_type {
                pdu_type::CAPSULE_RESP => {
                    let cqe =
                        Cqe::read_from_bytes(&pdu[CH_BYTES..CH_BYTES + 16]).expect("16 bytes");
                    if !cqe.status().is_success() {
                        report.errors += 1;
                        first_error.get_or_insert_with(|| cqe.status().name());
                    } else {
                        report.commands += 1;
                    }
                    Some(cqe.cid())
                }
                pdu_type::C2H_DATA => {
                    if ch.flags & flags::DDGST != 0 {
                        let data = &pdu[usize::from(ch.pdo)..plen - DIGEST_BYTES];
                        let mut d = DataDigest::default();
                        d.update(data);
                        if d.bytes()[..] != pdu[plen - DIGEST_BYTES..] {
                            return Err("bad data digest from the target".into());
                        }
                    }
                    if ch.flags & flags::DATA_SUCCESS != 0 {
                        report.commands += 1;
                        Some(u16::from_le_bytes([pdu[8], pdu[9]]))
                    } else {
                        None
                    }
                }
                pdu_type::R2T => {
                    let cccid = u16::from_le_bytes([pdu[8], pdu[9]]);
                    let ttag = u16::from_le_bytes([pdu[10], pdu[11]]);
                    let offset = u32::from_le_bytes(pdu[12..16].try_into().expect("4"));
                    let len = u32::from_le_bytes(pdu[16..20].try_into().expect("4"));
                    q.answer_r2t(cccid, ttag, offset, len);
                    None
                }
                pdu_type::C2H_TERM => {
                    let fes = u16::from_le_bytes([pdu[8], pdu[9]]);
                    return Err(format!(
                        "the target ended the connection (C2HTermReq FES {fes:#x})"
                    ));
                }
                other => return Err(format!("unexpected PDU type {other:#x} from the target")),
            };
            at += plen;
            let Some(cid) = done_cid else { continue };
            let Some(at) = in_flight.get_mut(usize::from(cid)).and_then(Option::take) else {
                return Err(format!(
                    "a completion for command {cid}, which is not in flight"
                ));
            };
            let ns = now.duration_since(at).as_nanos();
            report.latency_sum_ns += ns;
            report
                .latency
                .record((ns / u128::from(LATENCY_UNIT_NS)) as u64);
            if now < end {
                new_command(cid, q, now, &mut in_flight);
            } else {
                outstanding -= 1;
            }
        }
        q.recv.copy_within(at..q.recv_len, 0);
        q.recv_len -= at;
        if now >= end {
            if outstanding == 0 {
                break;
            }
            if now >= end + DRAIN_TIMEOUT {
                return Err(format!(
                    "{outstanding} command(s) still in flight {} s after the run",
                    DRAIN_TIMEOUT.as_secs()
                ));
            }
        }
    }
    report.elapsed = start.elapsed().min(Duration::from_secs(args.time_s));
    if let Some(status) = first_error {
        print_report(&report, io_size);
        return Err(format!(
            "{} command(s) failed; the first with {status}",
            report.errors
        ));
    }
    Ok(report)
}

fn print_report(r: &FabricReport, io_size: u32) {
    println!(
        "{:.0} IOPS, {:.1} MiB/s; latency average {:.1} us, p50 {:.1} us, p99 {:.1} us, p99.9 \
         {:.1} us; {} command(s), {} error(s)",
        r.iops(),
        r.iops() * f64::from(io_size) / f64::from(1 << 20),
        r.average_us(),
        r.percentile_us(50.0),
        r.percentile_us(99.0),
        r.percentile_us(99.9),
        r.commands,
        r.errors
    );
    println!(
        "RESULT iops={:.0} lat_avg_us={:.1} clat_p50_us={:.1} clat_p99_us={:.1} \
         clat_p999_us={:.1} errors={}",
        r.iops(),
        r.average_us(),
        r.percentile_us(50.0),
        r.percentile_us(99.0),
        r.percentile_us(99.9),
        r.errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_ids_parse_as_spdk_nvme_perf_takes_them() {
        let t = parse_trid(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.2016-06.io.spdk:cnode1",
        )
        .unwrap();
        assert_eq!(t.addr, "127.0.0.1:4421".parse().unwrap());
        assert_eq!(t.subnqn, "nqn.2016-06.io.spdk:cnode1");
        assert_eq!(t.hostnqn, DEFAULT_HOSTNQN);
        let t = parse_trid("TRTYPE:tcp traddr:::1 subnqn:x hostnqn:nqn.h").unwrap();
        assert_eq!(t.addr, "[::1]:4420".parse().unwrap());
        assert_eq!(t.hostnqn, "nqn.h");
        for (bad, says) in [
            ("traddr:1.2.3.4 subnqn:x", "trtype is missing"),
            (
                "trtype:RDMA traddr:1.2.3.4 subnqn:x",
                "not supported by this client",
            ),
            ("trtype:TCP subnqn:x", "traddr is missing"),
            ("trtype:TCP traddr:host subnqn:x", "not an IP address"),
            (
                "trtype:TCP adrfam:IPv6 traddr:1.2.3.4 subnqn:x",
                "does not match",
            ),
            ("trtype:TCP traddr:1.2.3.4", "subnqn is missing"),
            (
                "trtype:TCP traddr:1.2.3.4 subnqn:x color:red",
                "unknown key",
            ),
            (
                "trtype:TCP traddr:1.2.3.4 trsvcid:http subnqn:x",
                "not a port",
            ),
            ("trtype", "not key:value"),
        ] {
            let e = parse_trid(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
