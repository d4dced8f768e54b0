//! A host-side driver over the loopback transport, for tests and benchmarks:
//! it builds a target on hand-stepped reactors and sends the commands a
//! Linux host sends, with data in keyed host memory or in the capsule.

use std::sync::Arc;

use nvme_spec::fabrics::{self, cc, csts, property, ConnectData, CNTLID_DYNAMIC};
use nvme_spec::opcode::{admin, io};
use nvme_spec::{put_str_nul_padded, Cqe, FromZeros, IntoBytes, Sqe, Status, U32};
use reactor::{create_reactors, Reactor, ReactorConfig, ReactorMask};

use crate::loopback::{HostQueue, LoopbackTransport};
use crate::subsystem::SubsystemConfig;
use crate::target::{Target, TargetOptions};
use crate::transport::ListenAddress;

/// Host memory per queue, and where each kind of buffer sits in it.
pub const HOST_MEMORY_BYTES: usize = 8 << 20;
const CONNECT_DATA_AT: u64 = 0;
const ADMIN_DATA_AT: u64 = 64 << 10;
const IO_DATA_AT: u64 = 1 << 20;
/// Reactor iterations to wait for an answer before declaring the target stuck.
const MAX_STEPS: usize = 200_000;

pub fn listener() -> ListenAddress {
    ListenAddress::new("loopback", "127.0.0.1", "4420")
}

/// A target on `reactor_count` reactors stepped by the calling thread.
pub struct TestBed {
    pub reactors: Vec<Reactor>,
    pub target: Arc<Target>,
    pub transport: Arc<LoopbackTransport>,
}

impl TestBed {
    pub fn new(
        reactor_count: usize,
        mut options: TargetOptions,
        subsystems: &[SubsystemConfig],
    ) -> TestBed {
        options.acceptor_poll_period_us = 1;
        let transport = LoopbackTransport::new(
            options.in_capsule_data_bytes,
            options.max_io_bytes,
            crate::transport::DEFAULT_IO_UNIT_BYTES,
            4096,
        )
        .expect("loopback transport");
        let target = Target::new(options, vec![transport.clone()]).expect("target");
        target.listen(&listener()).expect("listen");
        for s in subsystems {
            let mut s = s.clone();
            if s.listeners.is_empty() {
                s.listeners.push(listener());
            }
            target.add_subsystem(&s).expect("subsystem");
        }
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
        TestBed {
            reactors,
            target,
            transport,
        }
    }

    /// One iteration of every reactor.
    pub fn step(&mut self) {
        for r in self.reactors.iter_mut() {
            r.run_once();
        }
    }

    pub fn open_queue(&mut self, qid: u16, depth: u16) -> Queue {
        let hq = self
            .transport
            .connect(&listener(), qid, depth, HOST_MEMORY_BYTES)
            .expect("loopback connect");
        Queue {
            hq,
            next_cid: 1,
            unclaimed: Vec::new(),
        }
    }

    /// Steps until `done` holds (bounded).
    pub fn step_until(&mut self, mut done: impl FnMut(&mut TestBed) -> bool) -> bool {
        for _ in 0..MAX_STEPS {
            if done(self) {
                return true;
            }
            self.step();
        }
        false
    }
}

/// Who the host is.
#[derive(Clone)]
pub struct HostId {
    pub hostnqn: String,
    pub hostid: [u8; 16],
}

impl HostId {
    pub fn new(n: u8) -> HostId {
        HostId {
            hostnqn: format!(
                "nqn.2014-08.org.nvmexpress:uuid:0000000{n}-1111-2222-3333-444444444444"
            ),
            hostid: [n; 16],
        }
    }
}

/// One host queue plus a CID counter.
pub struct Queue {
    pub hq: HostQueue,
    next_cid: u16,
    /// Completions that arrived while waiting for another command.
    unclaimed: Vec<Cqe>,
}

impl Queue {
    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.next_cid
    }

    /// Waits for the completion of `cid`.
    pub fn wait(&mut self, bed: &mut TestBed, cid: u16) -> Cqe {
        if let Some(i) = self.unclaimed.iter().position(|c| c.cid() == cid) {
            return self.unclaimed.swap_remove(i);
        }
        let mut got = None;
        let ok = bed.step_until(|_| {
            while let Some(c) = self.hq.poll_completion() {
                if c.cid() == cid {
                    got = Some(c);
                } else {
                    self.unclaimed.push(c);
                }
            }
            got.is_some()
        });
        assert!(ok, "target did not complete cid {cid}");
        got.expect("completion")
    }

    /// Sends `sqe` (its cid replaced) and waits for its completion.
    pub fn exec(&mut self, bed: &mut TestBed, mut sqe: Sqe) -> Cqe {
        let cid = self.cid();
        sqe.cid = cid.into();
        self.hq
            .submit(sqe)
            .unwrap_or_else(|_| panic!("host queue full"));
        self.wait(bed, cid)
    }

    pub fn exec_in_capsule(&mut self, bed: &mut TestBed, mut sqe: Sqe, data: &[u8]) -> Cqe {
        let cid = self.cid();
        sqe.cid = cid.into();
        self.hq
            .submit_in_capsule(sqe, data)
            .unwrap_or_else(|_| panic!("in-capsule submit refused"));
        self.wait(bed, cid)
    }

    /// Fabrics Connect with the Connect data in keyed host memory.
    pub fn connect(
        &mut self,
        bed: &mut TestBed,
        host: &HostId,
        subnqn: &str,
        cntlid: u16,
        sqsize_0based: u16,
        kato_ms: u32,
    ) -> Cqe {
        let mut data = ConnectData::new_zeroed();
        data.hostid = host.hostid;
        data.cntlid = cntlid.into();
        put_str_nul_padded(&mut data.subnqn, subnqn);
        put_str_nul_padded(&mut data.hostnqn, &host.hostnqn);
        self.hq
            .memory()
            .write_at(CONNECT_DATA_AT, data.as_bytes())
            .expect("host memory");
        let sgl = self.hq.keyed_sgl(CONNECT_DATA_AT, 1024);
        let qid = self.hq.qid();
        self.exec(
            bed,
            fabrics::connect_command(0, qid, sqsize_0based, kato_ms, sgl),
        )
    }

    pub fn prop_get(&mut self, bed: &mut TestBed, offset: u32, eight: bool) -> Cqe {
        self.exec(bed, fabrics::property_get_command(0, offset, eight))
    }

    pub fn prop_set(&mut self, bed: &mut TestBed, offset: u32, value: u64) -> Cqe {
        self.exec(bed, fabrics::property_set_command(0, offset, value, false))
    }

    /// What Linux does after Connect: CAP, CC.EN, CSTS until RDY, VS.
    pub fn enable(&mut self, bed: &mut TestBed) {
        let cap = self.prop_get(bed, property::CAP, true);
        assert!(
            cap.status().is_success(),
            "Property Get CAP: {:?}",
            cap.status()
        );
        let set = self.prop_set(bed, property::CC, u64::from(cc::build(true, 6, 4, 0)));
        assert!(
            set.status().is_success(),
            "Property Set CC: {:?}",
            set.status()
        );
        let mut ready = false;
        for _ in 0..100 {
            let c = self.prop_get(bed, property::CSTS, false);
            if c.dw0() & csts::RDY != 0 {
                ready = true;
                break;
            }
        }
        assert!(ready, "CSTS.RDY never set");
        let vs = self.prop_get(bed, property::VS, false);
        assert!(vs.status().is_success());
    }

    pub fn identify(
        &mut self,
        bed: &mut TestBed,
        cns: u8,
        nsid: u32,
        cdw11: u32,
    ) -> (Cqe, Vec<u8>) {
        let mut sqe = Sqe::new(admin::IDENTIFY, 0);
        sqe.nsid = nsid.into();
        sqe.cdw10 = U32::new(u32::from(cns));
        sqe.cdw11 = U32::new(cdw11);
        sqe.dptr = self.hq.keyed_sgl(ADMIN_DATA_AT, 4096);
        let cqe = self.exec(bed, sqe);
        (cqe, self.read_memory(ADMIN_DATA_AT, 4096))
    }

    pub fn get_log(
        &mut self,
        bed: &mut TestBed,
        lid: u8,
        offset: u64,
        len: u32,
        rae: bool,
    ) -> (Cqe, Vec<u8>) {
        let mut sqe = Sqe::new(admin::GET_LOG_PAGE, 0);
        sqe.set_log_page(lid, len, offset);
        if rae {
            sqe.cdw10 = U32::new(sqe.cdw10.get() | (1 << 15));
        }
        sqe.dptr = self.hq.keyed_sgl(ADMIN_DATA_AT, len);
        let cqe = self.exec(bed, sqe);
        (cqe, self.read_memory(ADMIN_DATA_AT, len as usize))
    }

    pub fn features(&mut self, bed: &mut TestBed, opcode: u8, cdw10: u32, cdw11: u32) -> Cqe {
        let mut sqe = Sqe::new(opcode, 0);
        sqe.cdw10 = U32::new(cdw10);
        sqe.cdw11 = U32::new(cdw11);
        sqe.dptr = self.hq.keyed_sgl(ADMIN_DATA_AT, 0);
        self.exec(bed, sqe)
    }

    pub fn rw_command(&self, opcode: u8, nsid: u32, slba: u64, blocks: u32, len: u32) -> Sqe {
        let mut sqe = Sqe::new(opcode, 0);
        sqe.nsid = nsid.into();
        sqe.set_slba(slba);
        sqe.set_nlb(blocks);
        sqe.dptr = self.hq.keyed_sgl(IO_DATA_AT, len);
        sqe
    }

    pub fn write(
        &mut self,
        bed: &mut TestBed,
        nsid: u32,
        slba: u64,
        block_size: u32,
        data: &[u8],
    ) -> Cqe {
        self.hq
            .memory()
            .write_at(IO_DATA_AT, data)
            .expect("host memory");
        let sqe = self.rw_command(
            io::WRITE,
            nsid,
            slba,
            data.len() as u32 / block_size,
            data.len() as u32,
        );
        self.exec(bed, sqe)
    }

    pub fn read(
        &mut self,
        bed: &mut TestBed,
        nsid: u32,
        slba: u64,
        block_size: u32,
        blocks: u32,
    ) -> (Cqe, Vec<u8>) {
        let len = blocks * block_size;
        let sqe = self.rw_command(io::READ, nsid, slba, blocks, len);
        let cqe = self.exec(bed, sqe);
        (cqe, self.read_memory(IO_DATA_AT, len as usize))
    }

    pub fn read_memory(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.hq
            .memory()
            .read_at(offset, &mut out)
            .expect("host memory");
        out
    }
}

/// An admin queue connected, enabled and identified the way Linux does it.
pub struct HostController {
    pub admin: Queue,
    pub cntlid: u16,
    pub host: HostId,
    pub subnqn: String,
}

impl HostController {
    /// Connect (dynamic cntlid), enable, Identify Controller: returns the
    /// failed Connect's completion instead when the target refuses.
    pub fn connect(bed: &mut TestBed, host: &HostId, subnqn: &str) -> Result<HostController, Cqe> {
        let mut admin = bed.open_queue(0, 32);
        let cqe = admin.connect(bed, host, subnqn, CNTLID_DYNAMIC, 31, 5000);
        if !cqe.status().is_success() {
            return Err(cqe);
        }
        let cntlid = cqe.dw0() as u16;
        admin.enable(bed);
        Ok(HostController {
            admin,
            cntlid,
            host: host.clone(),
            subnqn: subnqn.into(),
        })
    }

    /// Opens and connects I/O queue `qid`.
    pub fn connect_io(&mut self, bed: &mut TestBed, qid: u16, depth: u16) -> (Queue, Cqe) {
        let mut q = bed.open_queue(qid, depth);
        let cqe = q.connect(bed, &self.host, &self.subnqn, self.cntlid, depth - 1, 0);
        (q, cqe)
    }

    /// `nvme disconnect`: I/O queues are dropped by the caller first, then CC.SHN.
    pub fn shutdown(&mut self, bed: &mut TestBed) -> bool {
        let set = self.admin.prop_set(
            bed,
            property::CC,
            u64::from(cc::build(true, 6, 4, cc::SHN_NORMAL)),
        );
        assert_eq!(set.status(), Status::SUCCESS);
        let c = self.admin.prop_get(bed, property::CSTS, false);
        csts::shst(c.dw0()) == csts::SHST_COMPLETE
    }
}
