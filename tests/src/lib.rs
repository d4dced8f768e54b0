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
