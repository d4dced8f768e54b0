//! Shared fixtures for the end-to-end tests.

use std::sync::Arc;

use nvmf::testing::TestBed;
use nvmf::{NamespaceConfig, SubsystemConfig, TargetOptions};

pub const SUBNQN: &str = "nqn.2016-06.io.spdk:cnode1";
pub const SERIAL: &str = "SPDK00000000000001";
pub const MODEL: &str = "Rust NVMe-oF target";

/// A subsystem with a RAM namespace (nsid 1) and a null namespace (nsid 2).
pub fn subsystem(allow_any_host: bool, hosts: &[&str]) -> SubsystemConfig {
    let mut s = SubsystemConfig::new(SUBNQN);
    s.serial = SERIAL.into();
    s.model = MODEL.into();
    s.allow_any_host = allow_any_host;
    s.hosts = hosts.iter().map(|h| h.to_string()).collect();
    let malloc = bdev::create_malloc("Malloc0", 2048, 512, None).expect("malloc");
    let null = bdev::create_null("Null0", 1 << 20, 4096).expect("null");
    s.namespaces.push(NamespaceConfig {
        nsid: 1,
        bdev: malloc,
        nguid: None,
        uuid: None,
    });
    s.namespaces.push(NamespaceConfig {
        nsid: 2,
        bdev: null,
        nguid: None,
        uuid: None,
    });
    s
}

pub fn bed(reactors: usize) -> TestBed {
    TestBed::new(reactors, TargetOptions::default(), &[subsystem(true, &[])])
}

pub fn arc_bdev(name: &str, blocks: u64) -> Arc<dyn bdev::Bdev> {
    bdev::create_malloc(name, blocks, 512, None).expect("malloc")
}

/// What a `ProbeBdev` was asked to do: (type, FUA) per I/O, in order.
pub type IoLog = Arc<std::sync::Mutex<Vec<(bdev::IoType, bool)>>>;

/// A RAM bdev that claims chosen capabilities (a volatile write cache, fewer
/// commands) and records every I/O it gets, so tests can see what reached
/// the device.
pub struct ProbeBdev {
    inner: Arc<dyn bdev::Bdev>,
    info: bdev::BdevInfo,
    log: IoLog,
}

impl ProbeBdev {
    /// The bdev, and the log of what it was asked.
    pub fn create(
        name: &str,
        supported: bdev::IoTypes,
        volatile_write_cache: bool,
    ) -> (Arc<dyn bdev::Bdev>, IoLog) {
        let inner = arc_bdev(name, 2048);
        let mut info = inner.info().clone();
        info.supported = supported;
        info.volatile_write_cache = volatile_write_cache;
        let log = IoLog::default();
        let probe = ProbeBdev {
            inner,
            info,
            log: log.clone(),
        };
        (Arc::new(probe), log)
    }
}

impl bdev::Bdev for ProbeBdev {
    fn info(&self) -> &bdev::BdevInfo {
        &self.info
    }

    fn open_channel(&self, depth: u32) -> Result<Box<dyn bdev::BdevChannel>, bdev::BdevError> {
        Ok(Box::new(ProbeChannel {
            inner: self.inner.open_channel(depth)?,
            log: self.log.clone(),
        }))
    }
}

struct ProbeChannel {
    inner: Box<dyn bdev::BdevChannel>,
    log: IoLog,
}

impl bdev::BdevChannel for ProbeChannel {
    fn submit(&mut self, io: bdev::BdevIo) -> Result<(), bdev::BdevIo> {
        self.log.lock().unwrap().push((io.io_type, io.fua));
        self.inner.submit(io)
    }

    fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(bdev::BdevCompletion)) -> usize {
        self.inner.poll(max, on_complete)
    }

    fn outstanding(&self) -> usize {
        self.inner.outstanding()
    }
}

/// A target serving NVMe/TCP on 127.0.0.1, its reactors stepped by a thread of their own,
/// so a blocking test host can talk to it.
pub mod tcp {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread::JoinHandle;

    use nvmf::{ListenAddress, SubsystemConfig, Target, TargetOptions};
    use reactor::{create_reactors, ReactorConfig, ReactorMask};
    use transport_tcp::{TcpOptions, TcpTransport};

    pub struct TcpBed {
        pub addr: SocketAddr,
        pub target: Arc<Target>,
        pub transport: Arc<TcpTransport>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    /// A port free right now on `ip`; None when `ip` cannot be bound here (no IPv6).
    pub fn free_port_on(ip: IpAddr) -> Option<u16> {
        TcpListener::bind(SocketAddr::new(ip, 0))
            .and_then(|l| l.local_addr())
            .ok()
            .map(|a| a.port())
    }

    impl TcpBed {
        pub fn start(
            reactor_count: usize,
            options: TargetOptions,
            subsystems: &[SubsystemConfig],
        ) -> TcpBed {
            Self::start_on(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                reactor_count,
                options,
                subsystems,
            )
        }

        /// As `start`, listening on `ip` (which must be bindable: see `free_port_on`).
        pub fn start_on(
            ip: IpAddr,
            reactor_count: usize,
            options: TargetOptions,
            subsystems: &[SubsystemConfig],
        ) -> TcpBed {
            Self::start_tuned(ip, reactor_count, options, subsystems, |_| {})
        }

        /// As `start_on`, with `tune` changing the TCP transport's options last.
        pub fn start_tuned(
            ip: IpAddr,
            reactor_count: usize,
            mut options: TargetOptions,
            subsystems: &[SubsystemConfig],
            tune: impl FnOnce(&mut TcpOptions),
        ) -> TcpBed {
            options.acceptor_poll_period_us = 100;
            let mut tcp = TcpOptions {
                max_queue_depth: options.max_queue_depth,
                max_admin_queue_depth: options.max_admin_queue_depth,
                in_capsule_data_bytes: options.in_capsule_data_bytes,
                max_io_bytes: options.max_io_bytes,
                io_unit_bytes: nvmf::transport::DEFAULT_IO_UNIT_BYTES,
                buffer_count: 2048,
                max_h2c_data_bytes: 32 * 1024,
                c2h_success: true,
                numa_node: None,
            };
            tune(&mut tcp);
            let transport = TcpTransport::new(tcp).expect("tcp transport");
            let target = Target::new(options, vec![transport.clone()]).expect("target");
            let port = free_port_on(ip).expect("a free port");
            let listener = ListenAddress::new("tcp", &ip.to_string(), &port.to_string());
            target.listen(&listener).expect("listen");
            for s in subsystems {
                let mut s = s.clone();
                s.listeners = vec![listener.clone()];
                target.add_subsystem(&s).expect("subsystem");
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (ready_tx, ready_rx) = mpsc::channel();
            let thread = {
                let (target, stop) = (target.clone(), stop.clone());
                std::thread::spawn(move || {
                    let cores: Vec<usize> = (0..reactor_count).collect();
                    let mask = ReactorMask::from_cores(&cores).expect("mask");
                    let config = ReactorConfig {
                        pin_threads: false,
                        ..ReactorConfig::default()
                    };
                    let (mut reactors, _handle) = create_reactors(&mask, &config);
                    for r in reactors.iter_mut() {
                        target.init_reactor(r.context()).expect("poll group");
                    }
                    ready_tx.send(()).expect("test waits");
                    while !stop.load(Ordering::Relaxed) {
                        for r in reactors.iter_mut() {
                            r.run_once();
                        }
                    }
                })
            };
            ready_rx.recv().expect("reactors started");
            TcpBed {
                addr: SocketAddr::new(ip, port),
                target,
                transport,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for TcpBed {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
