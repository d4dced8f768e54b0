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
