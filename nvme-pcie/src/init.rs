//! Controller bring-up and shutdown: one state machine with named states.
//!
//! ```text
//! Start ─► WaitingReadyBeforeDisable ─► Disabling ─► Configuring ─► Enabling ─► Ready
//!   └──────────────────────────────────────┘  (when CC.EN is 1 but RDY not yet 1, the spec
//!                                              forbids clearing EN until RDY is 1)
//! Ready (or any state) ─► ShuttingDown ─► Off
//! ```
//!
//! `poll(now_ms)` does at most one register check and one transition, never sleeps, and takes
//! the time from the caller, so tests step it with a fake clock and the driver can run it from
//! a reactor poller. `run_blocking` loops it with a short sleep for start-up code. Every wait
//! has a deadline (CAP.TO for enable/disable, `SHUTDOWN_TIMEOUT_MS` for shutdown).

#![forbid(unsafe_code)]

use std::fmt;
use std::time::{Duration, Instant};

use crate::mmio::Mmio;
use crate::regs::{self, offset, Cap, Cc, Csts, ShutdownNotification, ShutdownStatus};

/// How long a normal shutdown may take before we give up (CAP has no bound for it; Linux
/// uses RTD3E or a few seconds).
pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Floor for the enable/disable wait: some controllers report CAP.TO = 0.
pub const MIN_READY_TIMEOUT_MS: u64 = 500;
/// Sleep between polls in `run_blocking`.
pub const BLOCKING_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Where the admin queues live: IOVAs of page-aligned, physically contiguous queues and their
/// sizes in entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminQueues {
    pub sq_iova: u64,
    pub cq_iova: u64,
    pub sq_entries: u16,
    pub cq_entries: u16,
}

/// The states of bring-up and shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitState {
    /// Nothing read yet.
    Start,
    /// CC.EN = 1 but CSTS.RDY = 0: a previous enable is still in progress; EN may only be
    /// cleared once RDY is 1.
    WaitingReadyBeforeDisable { deadline_ms: u64 },
    /// CC.EN written 0; waiting for CSTS.RDY = 0.
    Disabling { deadline_ms: u64 },
    /// Disabled: AQA, ASQ, ACQ and CC are written on the next poll.
    Configuring,
    /// CC.EN written 1; waiting for CSTS.RDY = 1.
    Enabling { deadline_ms: u64 },
    /// Enabled; the admin queue may be used.
    Ready,
    /// CC.SHN written "normal"; waiting for CSTS.SHST = complete.
    ShuttingDown { deadline_ms: u64 },
    /// Shut down (or was never enabled). Nothing more to do.
    Off,
    /// An error was returned; the machine does nothing more.
    Failed,
}

impl fmt::Display for InitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            InitState::Start => "starting",
            InitState::WaitingReadyBeforeDisable { .. } => "waiting for ready before disabling",
            InitState::Disabling { .. } => "disabling",
            InitState::Configuring => "configuring",
            InitState::Enabling { .. } => "enabling",
            InitState::Ready => "ready",
            InitState::ShuttingDown { .. } => "shutting down",
            InitState::Off => "off",
            InitState::Failed => "failed",
        };
        f.write_str(name)
    }
}

/// Whether a `poll` reached the goal (Ready for bring-up, Off for shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitError {
    #[error(
        "controller registers read all ones (CSTS={csts:#010x}) while {state}: the device was \
         removed or does not answer; check `lspci` and the kernel log"
    )]
    DeviceGone { state: InitState, csts: u32 },
    #[error(
        "controller does not support {what} (CAP={cap:#018x}); this driver needs the NVM \
         command set and 4 KiB memory pages"
    )]
    Unsupported { what: &'static str, cap: u64 },
    #[error(
        "admin queue of {sq_entries} SQ / {cq_entries} CQ entries is invalid: each must be \
         2..={max_entries} (CAP.MQES + 1) and its IOVA 4 KiB aligned (ASQ={sq_iova:#x}, \
         ACQ={cq_iova:#x})"
    )]
    BadAdminQueues {
        sq_entries: u16,
        cq_entries: u16,
        max_entries: u32,
        sq_iova: u64,
        cq_iova: u64,
    },
    #[error(
        "controller did not become ready within {timeout_ms} ms (CSTS={csts:#010x}); is it \
         bound to vfio-pci and not in use by another process?"
    )]
    ReadyTimeout { timeout_ms: u64, csts: u32 },
    #[error(
        "controller did not disable within {timeout_ms} ms (CC={cc:#010x}, CSTS={csts:#010x}); \
         reset it (echo 1 > /sys/bus/pci/devices/<bdf>/reset) or power-cycle the host"
    )]
    DisableTimeout { timeout_ms: u64, cc: u32, csts: u32 },
    #[error(
        "controller reported a fatal error (CSTS.CFS=1, CSTS={csts:#010x}) while {state}; \
         check the kernel log for DMAR/IOMMU faults (are the admin queues mapped in the VFIO \
         container?), then reset the controller"
    )]
    Fatal { state: InitState, csts: u32 },
    #[error(
        "controller did not finish its shutdown within {timeout_ms} ms (CSTS={csts:#010x}); \
         data it had cached may not be on media: reset it before reusing it"
    )]
    ShutdownTimeout { timeout_ms: u64, csts: u32 },
}

/// Brings a controller up (Start → Ready) or down (→ Off) through `Mmio`.
#[derive(Debug)]
pub struct ControllerInit<M: Mmio> {
    mmio: M,
    cap: Cap,
    admin: AdminQueues,
    state: InitState,
    ready_timeout_ms: u64,
}

impl<M: Mmio> ControllerInit<M> {
    /// Reads CAP and checks that the controller and the admin queues suit this driver.
    pub fn new(mmio: M, admin: AdminQueues) -> Result<Self, InitError> {
        let cap = Cap(mmio.read64(offset::CAP));
        if cap.0 == u64::MAX {
            return Err(InitError::DeviceGone {
                state: InitState::Start,
                csts: mmio.read32(offset::CSTS),
            });
        }
        if !cap.supports_nvm_command_set() {
            return Err(InitError::Unsupported {
                what: "the NVM command set (CAP.CSS bit 0)",
                cap: cap.0,
            });
        }
        if !cap.supports_4k_pages() {
            return Err(InitError::Unsupported {
                what: "4 KiB memory pages (CAP.MPSMIN..MPSMAX)",
                cap: cap.0,
            });
        }
        let max_entries = cap.max_queue_entries().min(4096);
        let page = regs::MEMORY_PAGE_BYTES as u64;
        let entries_ok = |n: u16| n >= 2 && u32::from(n) <= max_entries;
        if !entries_ok(admin.sq_entries)
            || !entries_ok(admin.cq_entries)
            || admin.sq_iova % page != 0
            || admin.cq_iova % page != 0
        {
            return Err(InitError::BadAdminQueues {
                sq_entries: admin.sq_entries,
                cq_entries: admin.cq_entries,
                max_entries,
                sq_iova: admin.sq_iova,
                cq_iova: admin.cq_iova,
            });
        }
        Ok(ControllerInit {
            mmio,
            cap,
            admin,
            state: InitState::Start,
            ready_timeout_ms: cap.ready_timeout_ms().max(MIN_READY_TIMEOUT_MS),
        })
    }

    pub fn cap(&self) -> Cap {
        self.cap
    }

    pub fn state(&self) -> InitState {
        self.state
    }

    pub fn mmio(&self) -> &M {
        &self.mmio
    }

    /// Gives the register access back (e.g. to build queue pairs once Ready).
    pub fn into_mmio(self) -> M {
        self.mmio
    }

    /// The enable/disable wait: CAP.TO, at least `MIN_READY_TIMEOUT_MS`.
    pub fn ready_timeout_ms(&self) -> u64 {
        self.ready_timeout_ms
    }

    /// One step of bring-up (towards Ready) or shutdown (towards Off), at time `now_ms` of any
    /// monotonic millisecond clock.
    pub fn poll(&mut self, now_ms: u64) -> Result<Progress, InitError> {
        let result = self.step(now_ms);
        if result.is_err() {
            self.state = InitState::Failed;
        }
        result
    }

    fn step(&mut self, now_ms: u64) -> Result<Progress, InitError> {
        match self.state {
            InitState::Start => {
                let cc = Cc(self.mmio.read32(offset::CC));
                let csts = self.read_csts()?;
                match (cc.enabled(), csts.ready()) {
                    (true, true) => self.write_disable(now_ms),
                    (true, false) => {
                        self.state = InitState::WaitingReadyBeforeDisable {
                            deadline_ms: now_ms + self.ready_timeout_ms,
                        }
                    }
                    // EN=0 but RDY=1: a disable is in progress; wait for it.
                    (false, true) => {
                        self.state = InitState::Disabling {
                            deadline_ms: now_ms + self.ready_timeout_ms,
                        }
                    }
                    (false, false) => self.state = InitState::Configuring,
                }
                Ok(Progress::Pending)
            }
            InitState::WaitingReadyBeforeDisable { deadline_ms } => {
                let csts = self.read_csts()?;
                // CFS here is fine: disabling is the remedy for a fatal controller.
                if csts.ready() || csts.fatal() {
                    self.write_disable(now_ms);
                } else if now_ms >= deadline_ms {
                    // Clear EN anyway: a controller stuck half-enabled must be reset.
                    log::warn!(
                        "controller with CC.EN=1 never became ready (CSTS={:#010x}); disabling it anyway",
                        csts.0
                    );
                    self.write_disable(now_ms);
                }
                Ok(Progress::Pending)
            }
            InitState::Disabling { deadline_ms } => {
                let csts = self.read_csts()?;
                if !csts.ready() {
                    self.state = InitState::Configuring;
                } else if now_ms >= deadline_ms {
                    return Err(InitError::DisableTimeout {
                        timeout_ms: self.ready_timeout_ms,
                        cc: self.mmio.read32(offset::CC),
                        csts: csts.0,
                    });
                }
                Ok(Progress::Pending)
            }
            InitState::Configuring => {
                let aqa = regs::aqa(self.admin.sq_entries, self.admin.cq_entries);
                self.mmio.write32(offset::AQA, aqa);
                self.mmio.write64(offset::ASQ, self.admin.sq_iova);
                self.mmio.write64(offset::ACQ, self.admin.cq_iova);
                let cc = Cc::nvm_4k_disabled();
                // Configuration first, then EN alone: some controllers latch CC fields only
                // while EN is 0.
                self.mmio.write32(offset::CC, cc.0);
                self.mmio.write32(offset::CC, cc.with_enable(true).0);
                self.state = InitState::Enabling {
                    deadline_ms: now_ms + self.ready_timeout_ms,
                };
                Ok(Progress::Pending)
            }
            InitState::Enabling { deadline_ms } => {
                let csts = self.read_csts()?;
                if csts.fatal() {
                    return Err(InitError::Fatal {
                        state: self.state,
                        csts: csts.0,
                    });
                }
                if csts.ready() {
                    self.state = InitState::Ready;
                    return Ok(Progress::Done);
                }
                if now_ms >= deadline_ms {
                    return Err(InitError::ReadyTimeout {
                        timeout_ms: self.ready_timeout_ms,
                        csts: csts.0,
                    });
                }
                Ok(Progress::Pending)
            }
            InitState::Ready | InitState::Off => Ok(Progress::Done),
            InitState::ShuttingDown { deadline_ms } => {
                let csts = self.read_csts()?;
                if csts.shutdown_status() == ShutdownStatus::Complete {
                    self.state = InitState::Off;
                    return Ok(Progress::Done);
                }
                if now_ms >= deadline_ms {
                    return Err(InitError::ShutdownTimeout {
                        timeout_ms: SHUTDOWN_TIMEOUT_MS,
                        csts: csts.0,
                    });
                }
                Ok(Progress::Pending)
            }
            // The error was already returned once; keep the machine inert.
            InitState::Failed => Ok(Progress::Done),
        }
    }

    /// Asks for a normal shutdown (CC.SHN = 01b). Polling then goes to Off. A controller that
    /// is not enabled has nothing to flush and goes to Off at once.
    pub fn begin_shutdown(&mut self, now_ms: u64) {
        let cc = Cc(self.mmio.read32(offset::CC));
        if !cc.enabled() {
            self.state = InitState::Off;
            return;
        }
        self.mmio
            .write32(offset::CC, cc.with_shutdown(ShutdownNotification::Normal).0);
        self.state = InitState::ShuttingDown {
            deadline_ms: now_ms + SHUTDOWN_TIMEOUT_MS,
        };
    }

    /// Polls until Ready (or Off after `begin_shutdown`), sleeping `BLOCKING_POLL_INTERVAL`
    /// between polls. Bounded by the state machine's deadlines; for start-up code, never for a
    /// reactor.
    pub fn run_blocking(&mut self) -> Result<(), InitError> {
        let start = Instant::now();
        // The deadlines end every wait; this cap only guards against a bug in them.
        let max_polls = (self.ready_timeout_ms * 3 + SHUTDOWN_TIMEOUT_MS) * 2 + 16;
        for _ in 0..max_polls {
            let now_ms = start.elapsed().as_millis() as u64;
            if self.poll(now_ms)? == Progress::Done {
                return Ok(());
            }
            if matches!(
                self.state,
                InitState::WaitingReadyBeforeDisable { .. }
                    | InitState::Disabling { .. }
                    | InitState::Enabling { .. }
                    | InitState::ShuttingDown { .. }
            ) {
                std::thread::sleep(BLOCKING_POLL_INTERVAL);
            }
        }
        panic!(
            "controller init exceeded {max_polls} polls in state {}",
            self.state
        );
    }

    fn write_disable(&mut self, now_ms: u64) {
        let cc = Cc(self.mmio.read32(offset::CC));
        self.mmio.write32(offset::CC, cc.with_enable(false).0);
        self.state = InitState::Disabling {
            deadline_ms: now_ms + self.ready_timeout_ms,
        };
    }

    fn read_csts(&self) -> Result<Csts, InitError> {
        let csts = Csts(self.mmio.read32(offset::CSTS));
        if csts.is_device_gone() {
            return Err(InitError::DeviceGone {
                state: self.state,
                csts: csts.0,
            });
        }
        Ok(csts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::FakeMmio;
    use std::cell::Cell;

    /// CAP of QEMU's model with TO = 2 (1000 ms).
    const CAP: u64 = 0x0040_0020_0201_07FF;

    /// A controller model: RDY follows CC.EN after `ready_delay_reads` CSTS reads, SHST goes
    /// to complete after `shutdown_delay_reads`; optionally CFS on enable; `None` never.
    #[derive(Debug)]
    struct FakeController {
        regs: FakeMmio,
        ready_delay_reads: Option<u32>,
        shutdown_delay_reads: Option<u32>,
        fatal_on_enable: bool,
        reads_since_change: Cell<u32>,
        last_cc: Cell<u32>,
    }

    impl FakeController {
        fn new(ready_delay_reads: Option<u32>) -> FakeController {
            let regs = FakeMmio::new(0x2000);
            regs.set32(offset::CAP, CAP as u32);
            regs.set32(offset::CAP + 4, (CAP >> 32) as u32);
            FakeController {
                regs,
                ready_delay_reads,
                shutdown_delay_reads: Some(2),
                fatal_on_enable: false,
                reads_since_change: Cell::new(0),
                last_cc: Cell::new(0),
            }
        }
    }

    impl Mmio for FakeController {
        fn read32(&self, off: usize) -> u32 {
            if off == offset::CSTS {
                let cc = Cc(self.regs.get32(offset::CC));
                let reads = self.reads_since_change.get() + 1;
                self.reads_since_change.set(reads);
                let mut csts = self.regs.get32(offset::CSTS);
                let ready = csts & 1 != 0;
                if cc.enabled() != ready && self.ready_delay_reads.is_some_and(|d| reads > d) {
                    csts ^= 1;
                    if cc.enabled() && self.fatal_on_enable {
                        csts |= 2;
                    }
                }
                if !cc.enabled() {
                    csts &= !2; // reset clears CFS
                }
                if cc.shn() == 1 && self.shutdown_delay_reads.is_some_and(|d| reads > d) {
                    csts = (csts & !0xC) | (2 << 2);
                }
                self.regs.set32(offset::CSTS, csts);
                return csts;
            }
            self.regs.read32(off)
        }
        fn write32(&self, off: usize, value: u32) {
            if off == offset::CC && value != self.last_cc.get() {
                self.last_cc.set(value);
                self.reads_since_change.set(0);
            }
            self.regs.write32(off, value)
        }
    }

    const ADMIN: AdminQueues = AdminQueues {
        sq_iova: 0x10_0000,
        cq_iova: 0x10_1000,
        sq_entries: 32,
        cq_entries: 32,
    };

    /// Polls with a clock advancing 1 ms per poll; returns the polls taken.
    fn drive(init: &mut ControllerInit<&FakeController>) -> Result<u64, InitError> {
        for now_ms in 0..100_000 {
            if init.poll(now_ms)? == Progress::Done {
                return Ok(now_ms + 1);
            }
        }
        panic!("no progress");
    }

    #[test]
    fn brings_up_a_disabled_controller() {
        let ctrl = FakeController::new(Some(3));
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        assert_eq!(init.ready_timeout_ms(), 1000);
        drive(&mut init).unwrap();
        assert_eq!(init.state(), InitState::Ready);
        assert_eq!(ctrl.regs.get32(offset::AQA), 0x001F_001F);
        assert_eq!(ctrl.regs.read64(offset::ASQ), 0x10_0000);
        assert_eq!(ctrl.regs.read64(offset::ACQ), 0x10_1000);
        assert_eq!(
            ctrl.regs.writes_to(offset::CC),
            vec![0x0046_0000, 0x0046_0001]
        );
        // ASQ and ACQ written as two 32-bit halves, low first.
        let writes = ctrl.regs.writes();
        let asq_low = writes.iter().position(|w| w.0 == offset::ASQ).unwrap();
        assert_eq!(writes[asq_low + 1].0, offset::ASQ + 4);
    }

    #[test]
    fn disables_an_enabled_controller_first() {
        let ctrl = FakeController::new(Some(2));
        ctrl.regs.set32(offset::CC, 0x0046_0001);
        ctrl.last_cc.set(0x0046_0001);
        ctrl.regs.set32(offset::CSTS, 1);
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.poll(0).unwrap();
        assert!(matches!(init.state(), InitState::Disabling { .. }));
        drive(&mut init).unwrap();
        assert_eq!(
            ctrl.regs.writes_to(offset::CC),
            vec![0x0046_0000, 0x0046_0000, 0x0046_0001]
        );
    }

    #[test]
    fn waits_for_ready_before_clearing_enable() {
        let ctrl = FakeController::new(Some(2));
        ctrl.regs.set32(offset::CC, 0x0046_0001);
        ctrl.last_cc.set(0x0046_0001);
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.poll(0).unwrap();
        assert!(matches!(
            init.state(),
            InitState::WaitingReadyBeforeDisable { .. }
        ));
        assert!(ctrl.regs.writes_to(offset::CC).is_empty());
        drive(&mut init).unwrap();
        assert_eq!(init.state(), InitState::Ready);
    }

    #[test]
    fn times_out_when_never_ready() {
        let ctrl = FakeController::new(None);
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.poll(0).unwrap(); // Start -> Configuring
        init.poll(0).unwrap(); // Configuring -> Enabling, deadline 1000
        assert_eq!(init.poll(999), Ok(Progress::Pending));
        let err = init.poll(1000).unwrap_err();
        assert_eq!(
            err,
            InitError::ReadyTimeout {
                timeout_ms: 1000,
                csts: 0
            }
        );
        let text = err.to_string();
        assert!(text.contains("within 1000 ms"), "{text}");
        assert!(text.contains("vfio-pci"), "{text}");
        assert_eq!(init.state(), InitState::Failed);
    }

    #[test]
    fn reports_fatal_status_on_enable() {
        let mut ctrl = FakeController::new(Some(1));
        ctrl.fatal_on_enable = true;
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        let err = drive(&mut init).unwrap_err();
        assert!(matches!(err, InitError::Fatal { csts: 3, .. }), "{err:?}");
        assert!(err.to_string().contains("CSTS.CFS=1"));
    }

    #[test]
    fn disable_timeout_names_registers() {
        let ctrl = FakeController::new(None);
        ctrl.regs.set32(offset::CC, 0x0046_0001);
        ctrl.last_cc.set(0x0046_0001);
        ctrl.regs.set32(offset::CSTS, 1);
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.poll(5).unwrap();
        let err = init.poll(1005).unwrap_err();
        assert!(matches!(
            err,
            InitError::DisableTimeout {
                timeout_ms: 1000,
                cc: 0x0046_0000,
                csts: 1
            }
        ));
    }

    #[test]
    fn shuts_down_normally() {
        let ctrl = FakeController::new(Some(1));
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        drive(&mut init).unwrap();
        init.begin_shutdown(50);
        assert_eq!(ctrl.regs.get32(offset::CC), 0x0046_4001);
        assert!(matches!(
            init.state(),
            InitState::ShuttingDown {
                deadline_ms: 10_050
            }
        ));
        assert_eq!(drive(&mut init), Ok(3));
        assert_eq!(init.state(), InitState::Off);
    }

    #[test]
    fn shutdown_times_out() {
        let mut ctrl = FakeController::new(Some(1));
        ctrl.shutdown_delay_reads = None;
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        drive(&mut init).unwrap();
        init.begin_shutdown(0);
        assert_eq!(init.poll(SHUTDOWN_TIMEOUT_MS - 1), Ok(Progress::Pending));
        let err = init.poll(SHUTDOWN_TIMEOUT_MS).unwrap_err();
        assert!(matches!(err, InitError::ShutdownTimeout { .. }));
    }

    #[test]
    fn shutdown_of_disabled_controller_is_immediate() {
        let ctrl = FakeController::new(Some(1));
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.begin_shutdown(0);
        assert_eq!(init.state(), InitState::Off);
        assert!(ctrl.regs.writes().is_empty());
    }

    #[test]
    fn device_gone_is_reported() {
        let gone = FakeMmio::new(0x2000);
        gone.set32(offset::CAP, CAP as u32);
        gone.set32(offset::CAP + 4, (CAP >> 32) as u32);
        gone.set32(offset::CSTS, u32::MAX);
        let mut init = ControllerInit::new(&gone, ADMIN).unwrap();
        let err = init.poll(0).unwrap_err();
        assert!(matches!(err, InitError::DeviceGone { .. }));
        assert!(err.to_string().contains("lspci"));
        assert_eq!(init.state(), InitState::Failed);
    }

    #[test]
    fn run_blocking_reaches_ready() {
        let ctrl = FakeController::new(Some(2));
        let mut init = ControllerInit::new(&ctrl, ADMIN).unwrap();
        init.run_blocking().unwrap();
        assert_eq!(init.state(), InitState::Ready);
    }

    #[test]
    fn refuses_unsuitable_controllers_and_queues() {
        let regs = FakeMmio::new(0x2000);
        regs.set32(offset::CAP, 0x07FF);
        let err = ControllerInit::new(&regs, ADMIN).unwrap_err();
        assert!(matches!(err, InitError::Unsupported { .. }));

        let ctrl = FakeController::new(Some(1));
        let bad = AdminQueues {
            sq_iova: 0x10_0800,
            ..ADMIN
        };
        let err = ControllerInit::new(&ctrl, bad).unwrap_err();
        assert!(matches!(err, InitError::BadAdminQueues { .. }));
        let too_big = AdminQueues {
            cq_entries: 4096,
            ..ADMIN
        };
        // MQES 0x7FF allows 2048 entries.
        assert!(ControllerInit::new(&ctrl, too_big).is_err());
    }
}
