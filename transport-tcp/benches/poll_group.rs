//! One NVMe/TCP poll group over a real loopback socket, stepped by this thread together with
//! a minimal host: 4 KiB reads (C2HData, then the response capsule) at queue depth 32. The
//! target's side of each command is done here (the data is whatever the buffer holds), so
//! the figure is the transport's cost: PDU parsing, the request state machine, buffer
//! chains, gathered sends, plus the kernel's socket work on both ends.
//!
//! Prints commands/s per run, the median, and heap allocations per command (a counting
//! global allocator; the host side allocates nothing after set-up either). Goal: 0.
//!
//! Knobs: `TCP_PG_RUNS` (5), `TCP_PG_SECS` (2.0).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nvme_spec::opcode::io;
use nvme_spec::{IntoBytes, SglDescriptor, Sqe};
use nvmf::transport::{ListenAddress, PendingQueue, Transport, TransportEvent};
use transport_tcp::pdu::{icreq, pdu_type, CommonHeader, Digests, CH_BYTES, CMD_HLEN, IC_BYTES};
use transport_tcp::{TcpOptions, TcpTransport};

/// Counts heap allocations, to show the steady state makes none.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `layout` is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DEPTH: u16 = 32;
const IO_BYTES: u32 = 4096;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A read command capsule for command id `cid`.
fn read_capsule(cid: u16) -> [u8; CMD_HLEN] {
    let mut sqe = Sqe::new(io::READ, cid);
    sqe.nsid = 1.into();
    sqe.cdw12 = (IO_BYTES / 512 - 1).into();
    sqe.dptr = SglDescriptor::transport_data_block(IO_BYTES);
    let mut b = [0u8; CMD_HLEN];
    CommonHeader {
        pdu_type: pdu_type::CAPSULE_CMD,
        flags: 0,
        hlen: CMD_HLEN as u8,
        pdo: 0,
        plen: CMD_HLEN as u32,
    }
    .write(&mut b);
    b[CH_BYTES..].copy_from_slice(sqe.as_bytes());
    b
}

fn main() {
    let runs: usize = env("TCP_PG_RUNS", 5);
    let secs: f64 = env("TCP_PG_SECS", 2.0);
    let transport = TcpTransport::new(TcpOptions {
        max_queue_depth: 128,
        max_admin_queue_depth: 128,
        in_capsule_data_bytes: 4096,
        max_io_bytes: 128 * 1024,
        io_unit_bytes: 8192,
        buffer_count: 1024,
        max_h2c_data_bytes: 128 * 1024,
        c2h_success: true,
        numa_node: None,
    })
    .expect("transport");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = ListenAddress::new("tcp", "127.0.0.1", &port.to_string());
    transport.listen(&addr).expect("listen");
    let mut group = transport.create_poll_group(0, 1).expect("poll group");

    // The host: ICReq, then the first capsule, which places the queue.
    let mut host = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    host.set_nodelay(true).expect("nodelay");
    host.write_all(&icreq(Digests::default())).expect("ICReq");
    let mut placed: Option<PendingQueue> = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut icresp = [0u8; IC_BYTES];
    let mut got = 0;
    host.set_nonblocking(true).expect("non-blocking");
    let capsules: Vec<[u8; CMD_HLEN]> = (0..DEPTH).map(read_capsule).collect();
    let mut sent_first = false;
    while placed.is_none() {
        assert!(
            Instant::now() < deadline,
            "the acceptor never placed the queue"
        );
        transport.accept(&mut |p| placed = Some(p));
        if got < IC_BYTES {
            if let Ok(n) = host.read(&mut icresp[got..]) {
                got += n;
            }
        } else if !sent_first {
            host.write_all(&capsules[0]).expect("first capsule");
            sent_first = true;
        }
    }
    group.adopt(placed.expect("placed")).expect("adopt");

    let mut events: Vec<TransportEvent> = Vec::with_capacity(64);
    let mut recv = vec![0u8; 1 << 20];
    let mut recv_len = 0;
    let mut send: Vec<u8> = Vec::with_capacity(usize::from(DEPTH) * CMD_HLEN);
    for c in &capsules[1..] {
        send.extend_from_slice(c);
    }
    let mut done = 0u64;
    let mut results = Vec::with_capacity(runs);
    for run in 0..=runs {
        // Run 0 warms up.
        let start = Instant::now();
        let allocs_before = ALLOCS.load(Ordering::Relaxed);
        let done_before = done;
        while start.elapsed().as_secs_f64() < if run == 0 { 0.5 } else { secs } {
            // Target side.
            events.clear();
            group.poll(&mut events);
            for ev in &events {
                if let TransportEvent::Request(id) = *ev {
                    let req = group.request(id);
                    req.rsp.cid = req.cmd.cid;
                    req.c2h_bytes = req.length;
                    group.complete(id);
                }
            }
            group.flush();
            // Host side.
            if !send.is_empty() {
                match host.write(&send) {
                    Ok(n) => {
                        send.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("host write: {e}"),
                }
            }
            match host.read(&mut recv[recv_len..]) {
                Ok(0) => panic!("the target closed the connection"),
                Ok(n) => recv_len += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
            let mut at = 0;
            while recv_len - at >= CH_BYTES {
                let ch = CommonHeader::parse(&recv[at..]);
                let plen = ch.plen as usize;
                if recv_len - at < plen {
                    break;
                }
                if ch.pdu_type == pdu_type::CAPSULE_RESP {
                    let cid = u16::from_le_bytes([recv[at + 12], recv[at + 13]]);
                    send.extend_from_slice(&capsules[usize::from(cid) % capsules.len()]);
                    done += 1;
                } else {
                    assert_eq!(ch.pdu_type, pdu_type::C2H_DATA, "unexpected PDU {ch:?}");
                }
                at += plen;
            }
            recv.copy_within(at..recv_len, 0);
            recv_len -= at;
        }
        if run == 0 {
            continue;
        }
        let cmds = done - done_before;
        let rate = cmds as f64 / start.elapsed().as_secs_f64();
        let allocs = (ALLOCS.load(Ordering::Relaxed) - allocs_before) as f64 / cmds.max(1) as f64;
        println!("run {run}: {rate:.0} cmds/s, {allocs:.3} allocs/cmd");
        results.push((rate, allocs));
    }
    let mut rates: Vec<f64> = results.iter().map(|r| r.0).collect();
    rates.sort_by(f64::total_cmp);
    let worst_allocs = results.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "median: {:.0} cmds/s over {runs} runs; allocs/cmd at most {worst_allocs:.3}; goal 0 \
         allocs/cmd: {}",
        rates[rates.len() / 2],
        if worst_allocs == 0.0 { "MET" } else { "MISSED" }
    );
}
