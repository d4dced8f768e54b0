//! The NVMe-oF controller state machine.
//!
//! A controller lives on the reactor that owns its admin queue. I/O queues on
//! other reactors see it only through [`ControllerShared`] (atomics) and reach
//! it by message.
//!
//! States (CC/CSTS as the host sees them):
//! - `Disabled`: CC.EN = 0, CSTS.RDY = 0. Initial state and after a reset.
//! - `Ready`: CC.EN = 1, CSTS.RDY = 1. I/O queues may connect and run.
//! - `ShutdownComplete`: CC.SHN written; CSTS.SHST = complete.
//! - `Failed`: keep-alive expired or a fatal error; CSTS.CFS = 1, torn down.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use nvme_spec::fabrics::{cap, cc, csts, version};
use nvme_spec::features::{self, aen};
use nvme_spec::log::ErrorLogEntry;
use nvme_spec::{Status, U16, U32, U64};

use crate::subsystem::Subsystem;
use crate::transport::RequestId;

/// Named controller states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerState {
    Disabled,
    Ready,
    ShutdownComplete,
    Failed,
}

const STATE_DISABLED: u8 = 0;
const STATE_READY: u8 = 1;
const STATE_SHUTDOWN: u8 = 2;
const STATE_FAILED: u8 = 3;

/// Per-reactor I/O counters for SMART; each reactor writes only its own slot.
/// Aligned to 128 bytes (two cache lines: x86's adjacent-line prefetcher
/// pairs them) so that reactors counting at once never share a line.
#[derive(Default)]
#[repr(align(128))]
pub struct IoCounters {
    pub read_commands: AtomicU64,
    pub write_commands: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// This reactor's I/O queues of the controller with a command outstanding.
    busy_queues: AtomicU32,
    /// When the first of them became busy (µs since the controller's birth).
    busy_since_us: AtomicU64,
    /// Time with at least one of them busy, ended spells only.
    pub busy_us: AtomicU64,
}

/// What I/O queues on any reactor may see of a controller.
pub struct ControllerShared {
    pub cntlid: u16,
    pub subsystem: Arc<Subsystem>,
    pub owner_reactor: usize,
    /// Slot in the owner poll group's controller table.
    pub owner_slot: usize,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    state: AtomicU8,
    pub counters: Box<[IoCounters]>,
    /// Set when the controller is gone; late messages check it.
    pub destroyed: AtomicBool,
    /// When the controller was created (origin of the busy-time clock).
    born: Instant,
    /// The ONCS this controller last reported in Identify Controller; hosts
    /// cache it, so a namespace added later must honour it. Written under
    /// the subsystem's lock (`Subsystem::advertise_oncs`).
    pub advertised_oncs: AtomicU16,
    /// Identify told the host of a volatile write cache (VWC bit 0).
    pub advertised_vwc: AtomicBool,
    /// Writes may stay in a namespace's volatile cache: the controller
    /// advertised one and the host left it enabled (Set Features VWC). When
    /// false, writes to a namespace with a cache go out with FUA, so what the
    /// host was told holds. Read once per I/O command.
    pub write_cache_enabled: AtomicBool,
}

impl ControllerShared {
    pub fn new(
        cntlid: u16,
        subsystem: Arc<Subsystem>,
        owner_reactor: usize,
        owner_slot: usize,
        hostnqn: String,
        hostid: [u8; 16],
        reactor_count: usize,
    ) -> ControllerShared {
        ControllerShared {
            cntlid,
            subsystem,
            owner_reactor,
            owner_slot,
            hostnqn,
            hostid,
            state: AtomicU8::new(STATE_DISABLED),
            counters: (0..reactor_count.max(1))
                .map(|_| IoCounters::default())
                .collect(),
            destroyed: AtomicBool::new(false),
            born: Instant::now(),
            advertised_oncs: AtomicU16::new(0),
            advertised_vwc: AtomicBool::new(false),
            write_cache_enabled: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> ControllerState {
        match self.state.load(Ordering::Acquire) {
            STATE_DISABLED => ControllerState::Disabled,
            STATE_READY => ControllerState::Ready,
            STATE_SHUTDOWN => ControllerState::ShutdownComplete,
            _ => ControllerState::Failed,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_READY
    }

    fn set_state(&self, s: ControllerState) {
        let v = match s {
            ControllerState::Disabled => STATE_DISABLED,
            ControllerState::Ready => STATE_READY,
            ControllerState::ShutdownComplete => STATE_SHUTDOWN,
            ControllerState::Failed => STATE_FAILED,
        };
        self.state.store(v, Ordering::Release);
    }

    /// Only `reactor` writes its slot, so a plain load and store suffice
    /// (no locked read-modify-write on the I/O path).
    pub fn count_io(&self, reactor: usize, write: bool, bytes: u64) {
        let c = &self.counters[reactor.min(self.counters.len() - 1)];
        let (cmds, total) = if write {
            (&c.write_commands, &c.write_bytes)
        } else {
            (&c.read_commands, &c.read_bytes)
        };
        cmds.store(cmds.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        total.store(total.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
    }

    fn micros_since_birth(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.born).as_micros() as u64
    }

    /// An I/O queue on `reactor` got its first outstanding command. With
    /// `queue_idle`, keeps SMART's controller busy time: per reactor, the
    /// time any of its queues of this controller had a command outstanding
    /// (reactors overlapping in time each count theirs).
    pub fn queue_busy(&self, reactor: usize, now: Instant) {
        let c = &self.counters[reactor.min(self.counters.len() - 1)];
        let n = c.busy_queues.load(Ordering::Relaxed);
        if n == 0 {
            c.busy_since_us
                .store(self.micros_since_birth(now), Ordering::Relaxed);
        }
        c.busy_queues.store(n + 1, Ordering::Relaxed);
    }

    /// An I/O queue on `reactor` has no command outstanding any more.
    pub fn queue_idle(&self, reactor: usize, now: Instant) {
        let c = &self.counters[reactor.min(self.counters.len() - 1)];
        let n = c.busy_queues.load(Ordering::Relaxed);
        debug_assert!(n > 0, "queue_idle without queue_busy");
        c.busy_queues.store(n.saturating_sub(1), Ordering::Relaxed);
        if n == 1 {
            let spell = self
                .micros_since_birth(now)
                .saturating_sub(c.busy_since_us.load(Ordering::Relaxed));
            c.busy_us
                .store(c.busy_us.load(Ordering::Relaxed) + spell, Ordering::Relaxed);
        }
    }

    /// Busy time over all reactors, in µs (ended spells).
    pub fn busy_us(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.busy_us.load(Ordering::Relaxed))
            .sum()
    }

    /// (read commands, write commands, read bytes, write bytes) over all reactors.
    pub fn io_totals(&self) -> (u64, u64, u64, u64) {
        self.counters.iter().fold((0, 0, 0, 0), |acc, c| {
            (
                acc.0 + c.read_commands.load(Ordering::Relaxed),
                acc.1 + c.write_commands.load(Ordering::Relaxed),
                acc.2 + c.read_bytes.load(Ordering::Relaxed),
                acc.3 + c.write_bytes.load(Ordering::Relaxed),
            )
        })
    }
}

/// Where an I/O queue of this controller lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQueueRef {
    pub reactor: usize,
    pub transport: usize,
    pub queue: u16,
}

/// Outstanding Asynchronous Event Requests a controller keeps (AERL + 1).
pub const AER_LIMIT: usize = 4;
/// Abort commands processed at once (ACL + 1).
pub const ABORT_LIMIT: usize = 4;
/// Error log entries kept (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 16;
/// Events waiting for an AER.
const PENDING_EVENTS: usize = 16;
/// Changed namespace list bound (the log page's size).
const CHANGED_NS_MAX: usize = 1024;
/// KATO for a discovery controller whose host sent 0: reclaim it eventually.
pub const DISCOVERY_DEFAULT_KATO_MS: u32 = 120_000;
/// Keep Alive granularity (Identify KAS, 100 ms units).
pub const KAS_100MS: u16 = 10;

/// Feature values a controller keeps.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub arbitration: u32,
    pub power_management: u32,
    pub temperature_threshold: u32,
    pub error_recovery: u32,
    pub volatile_write_cache: bool,
    pub async_event_config: u32,
    /// Granted I/O queues, 0-based (NSQA = NCQA).
    pub io_queues_granted_0based: u16,
    pub number_of_queues_set: bool,
}

/// The controller itself, owned by one poll group.
pub struct Controller {
    pub shared: Arc<ControllerShared>,
    pub state: ControllerState,
    pub cc: u32,
    pub cap: u64,
    pub vs: u32,
    pub kato_ms: u32,
    pub last_keep_alive: Instant,
    pub features: Features,
    /// Admin queue (transport index, queue slot).
    pub admin_queue: (usize, u16),
    /// Indexed by qid; slot 0 unused (admin).
    pub io_queues: Vec<Option<IoQueueRef>>,
    pub aers: ArrayQueue<RequestId>,
    pub pending_events: ArrayQueue<u32>,
    /// Changed namespace list since the host last read log 04h.
    pub changed_ns: Vec<u32>,
    pub changed_ns_overflow: bool,
    /// Event types masked until the host reads the matching log page.
    pub ns_change_masked: bool,
    pub discovery_change_masked: bool,
    pub error_log: [ErrorLogEntry; ERROR_LOG_ENTRIES],
    pub error_count: u64,
}

impl Controller {
    /// A controller for a new admin queue. `max_queue_depth` sets CAP.MQES.
    pub fn new(
        shared: Arc<ControllerShared>,
        admin_queue: (usize, u16),
        kato_ms: u32,
        max_queue_depth: u16,
        max_queues: u16,
        now: Instant,
    ) -> Controller {
        assert!(
            max_queues >= 2,
            "a controller needs the admin queue and one I/O queue"
        );
        let discovery = shared.subsystem.is_discovery();
        let kato_ms = if discovery && kato_ms == 0 {
            DISCOVERY_DEFAULT_KATO_MS
        } else {
            kato_ms
        };
        Controller {
            state: ControllerState::Disabled,
            cc: 0,
            cap: cap::build(max_queue_depth - 1, 30, 0, 0),
            vs: version(1, 3, 0),
            kato_ms,
            last_keep_alive: now,
            features: Features {
                arbitration: 0,
                power_management: 0,
                temperature_threshold: 343, // 70 C in kelvin
                error_recovery: 0,
                volatile_write_cache: true,
                async_event_config: 0,
                io_queues_granted_0based: max_queues - 2,
                number_of_queues_set: false,
            },
            admin_queue,
            io_queues: vec![None; usize::from(max_queues)],
            aers: ArrayQueue::new(AER_LIMIT),
            pending_events: ArrayQueue::new(PENDING_EVENTS),
            changed_ns: Vec::with_capacity(CHANGED_NS_MAX),
            changed_ns_overflow: false,
            ns_change_masked: false,
            discovery_change_masked: false,
            error_log: [ErrorLogEntry::default(); ERROR_LOG_ENTRIES],
            error_count: 0,
            shared,
        }
    }

    pub fn cntlid(&self) -> u16 {
        self.shared.cntlid
    }

    pub fn is_discovery(&self) -> bool {
        self.shared.subsystem.is_discovery()
    }

    /// OAES: only the events this controller delivers.
    pub fn oaes(&self) -> u32 {
        if self.is_discovery() {
            aen::DISCOVERY_LOG_CHANGE
        } else {
            aen::NAMESPACE_ATTRIBUTE
        }
    }

    pub fn csts(&self) -> u32 {
        let rdy = if cc::enabled(self.cc) { csts::RDY } else { 0 };
        match self.state {
            ControllerState::Disabled => 0,
            ControllerState::Ready => csts::RDY,
            ControllerState::ShutdownComplete => rdy | (csts::SHST_COMPLETE << csts::SHST_SHIFT),
            ControllerState::Failed => csts::CFS | rdy,
        }
    }

    fn enter(&mut self, state: ControllerState) {
        log::debug!(
            "controller {} ({}): {:?} -> {:?}",
            self.cntlid(),
            self.shared.subsystem.nqn,
            self.state,
            state
        );
        self.state = state;
        self.shared.set_state(state);
    }

    /// Applies a CC write. Returns true when the I/O queues must be torn down
    /// (disable or shutdown).
    pub fn write_cc(&mut self, new_cc: u32) -> Result<bool, Status> {
        if self.state == ControllerState::Failed {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        }
        let was_enabled = cc::enabled(self.cc);
        let enable = cc::enabled(new_cc);
        if enable
            && !was_enabled
            && (cc::css(new_cc) != 0 || cc::mps(new_cc) != 0 || cc::ams(new_cc) != 0)
        {
            // Only the NVM command set, 4 KiB pages and round-robin arbitration exist here.
            return Err(Status::INVALID_FIELD);
        }
        let old_shn = cc::shn(self.cc);
        self.cc = new_cc;
        let mut teardown = false;
        let shutting_down = cc::shn(new_cc) != cc::SHN_NONE;
        if shutting_down && old_shn == cc::SHN_NONE {
            // Nothing is cached volatile beyond the bdev; completion is immediate.
            self.enter(ControllerState::ShutdownComplete);
            teardown = true;
        } else if !enable && was_enabled {
            self.reset_state();
            self.enter(ControllerState::Disabled);
            teardown = true;
        } else if enable
            && !shutting_down
            && (!was_enabled || self.state == ControllerState::ShutdownComplete)
        {
            self.enter(ControllerState::Ready);
        }
        Ok(teardown)
    }

    /// A controller reset (CC.EN 1 -> 0) clears what the spec says it clears.
    fn reset_state(&mut self) {
        self.features.async_event_config = 0;
        self.features.number_of_queues_set = false;
        self.changed_ns.clear();
        self.changed_ns_overflow = false;
        self.ns_change_masked = false;
        self.discovery_change_masked = false;
        while self.pending_events.pop().is_some() {}
    }

    pub fn fail(&mut self) {
        self.enter(ControllerState::Failed);
    }

    /// Keep-alive deadline passed?
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        self.kato_ms != 0
            && self.state != ControllerState::Failed
            && now.saturating_duration_since(self.last_keep_alive)
                > Duration::from_millis(u64::from(self.kato_ms))
    }

    pub fn io_queues_granted(&self) -> u16 {
        self.features.io_queues_granted_0based + 1
    }

    pub fn connected_io_queues(&self) -> usize {
        self.io_queues.iter().filter(|q| q.is_some()).count()
    }

    /// Records a namespace change; returns the AER dw0 to deliver, if unmasked
    /// and enabled.
    pub fn note_namespace_changed(&mut self, nsid: u32) -> Option<u32> {
        if !self.changed_ns.contains(&nsid) {
            if self.changed_ns.len() < CHANGED_NS_MAX {
                self.changed_ns.push(nsid);
            } else {
                self.changed_ns_overflow = true;
            }
        }
        if self.ns_change_masked || self.features.async_event_config & aen::NAMESPACE_ATTRIBUTE == 0
        {
            return None;
        }
        self.ns_change_masked = true;
        Some(features::async_event::dw0(
            features::async_event::TYPE_NOTICE,
            features::async_event::NOTICE_NS_ATTRIBUTE_CHANGED,
            nvme_spec::log::lid::CHANGED_NS_LIST,
        ))
    }

    pub fn note_discovery_changed(&mut self) -> Option<u32> {
        if self.discovery_change_masked
            || self.features.async_event_config & aen::DISCOVERY_LOG_CHANGE == 0
        {
            return None;
        }
        self.discovery_change_masked = true;
        Some(features::async_event::dw0(
            features::async_event::TYPE_NOTICE,
            features::async_event::NOTICE_DISCOVERY_LOG_CHANGED,
            nvme_spec::log::lid::DISCOVERY,
        ))
    }

    /// Records a failed command in the error log ring.
    pub fn log_error(&mut self, sqid: u16, cid: u16, status: Status, nsid: u32, lba: u64) {
        self.error_count += 1;
        let slot = ((self.error_count - 1) % ERROR_LOG_ENTRIES as u64) as usize;
        self.error_log[slot] = ErrorLogEntry {
            error_count: U64::new(self.error_count),
            sqid: U16::new(sqid),
            cid: U16::new(cid),
            status: U16::new(status.to_field()),
            param_error_location: U16::new(0xFFFF),
            lba: U64::new(lba),
            nsid: U32::new(nsid),
            ..Default::default()
        };
    }

    /// Error log entries, newest first (the spec's order).
    pub fn error_log_newest_first(&self) -> impl Iterator<Item = &ErrorLogEntry> {
        let n = self.error_count.min(ERROR_LOG_ENTRIES as u64) as usize;
        let newest =
            ((self.error_count + ERROR_LOG_ENTRIES as u64 - 1) % ERROR_LOG_ENTRIES as u64) as usize;
        (0..n).map(move |i| &self.error_log[(newest + ERROR_LOG_ENTRIES - i) % ERROR_LOG_ENTRIES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::{Subsystem, SubsystemConfig};

    fn ctrl() -> Controller {
        let sub = Arc::new(
            Subsystem::from_config(1, &SubsystemConfig::new("nqn.2016-06.io.spdk:c1")).unwrap(),
        );
        let shared = Arc::new(ControllerShared::new(
            1,
            sub,
            0,
            0,
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into(),
            [0; 16],
            1,
        ));
        Controller::new(shared, (0, 0), 5000, 128, 8, Instant::now())
    }

    #[test]
    fn each_reactors_counters_have_lines_of_their_own() {
        let sub = Arc::new(
            Subsystem::from_config(1, &SubsystemConfig::new("nqn.2016-06.io.spdk:c1")).unwrap(),
        );
        let shared = ControllerShared::new(1, sub, 0, 0, "h".into(), [0; 16], 4);
        let lines: Vec<usize> = shared
            .counters
            .iter()
            .map(|c| c as *const IoCounters as usize)
            .collect();
        for pair in lines.windows(2) {
            assert_eq!(pair[0] % 128, 0, "slot starts a line pair");
            assert!(
                pair[1] - pair[0] >= 128,
                "slots {pair:x?} share a line pair"
            );
        }
    }

    #[test]
    fn busy_time_counts_spells_with_a_command_outstanding() {
        let c = ctrl();
        let t0 = c.shared.born;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Two queues on reactor 0 overlap: 10..40 counts once (30 ms).
        c.shared.queue_busy(0, at(10));
        c.shared.queue_busy(0, at(20));
        c.shared.queue_idle(0, at(30));
        assert_eq!(c.shared.busy_us(), 0, "a queue is still busy");
        c.shared.queue_idle(0, at(40));
        assert_eq!(c.shared.busy_us(), 30_000);
        // Idle time does not count; the next spell adds.
        c.shared.queue_busy(0, at(100));
        c.shared.queue_idle(0, at(105));
        assert_eq!(c.shared.busy_us(), 35_000);
    }

    #[test]
    fn enable_shutdown_disable() {
        let mut c = ctrl();
        assert_eq!(c.csts(), 0);
        assert_eq!(c.write_cc(cc::build(true, 6, 4, 0)), Ok(false));
        assert_eq!(c.csts() & csts::RDY, 1);
        assert!(c.shared.is_ready());
        assert_eq!(c.write_cc(cc::build(true, 6, 4, cc::SHN_NORMAL)), Ok(true));
        assert_eq!(csts::shst(c.csts()), csts::SHST_COMPLETE);
        assert!(!c.shared.is_ready());
        assert_eq!(c.write_cc(0), Ok(true));
        assert_eq!(c.csts(), 0);
        assert_eq!(
            c.write_cc(cc::build(true, 6, 4, 0) | (1 << 7)),
            Err(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn keep_alive_and_failure() {
        let mut c = ctrl();
        let t0 = c.last_keep_alive;
        assert!(!c.keep_alive_expired(t0 + Duration::from_millis(5000)));
        assert!(c.keep_alive_expired(t0 + Duration::from_millis(5001)));
        c.fail();
        assert_eq!(c.csts() & csts::CFS, csts::CFS);
        assert!(!c.keep_alive_expired(t0 + Duration::from_secs(60)));
        assert_eq!(c.write_cc(0), Err(Status::COMMAND_SEQUENCE_ERROR));
    }

    #[test]
    fn namespace_events_masked_until_read() {
        let mut c = ctrl();
        assert_eq!(c.note_namespace_changed(3), None, "disabled by default");
        c.features.async_event_config = aen::NAMESPACE_ATTRIBUTE;
        assert_eq!(c.note_namespace_changed(4), Some(0x04_00_02));
        assert_eq!(
            c.note_namespace_changed(5),
            None,
            "masked until log 04h is read"
        );
        assert_eq!(c.changed_ns, vec![3, 4, 5]);
    }

    #[test]
    fn error_log_ring_newest_first() {
        let mut c = ctrl();
        for i in 0..20u16 {
            c.log_error(1, i, Status::INVALID_FIELD, 1, 0);
        }
        let cids: Vec<u16> = c.error_log_newest_first().map(|e| e.cid.get()).collect();
        assert_eq!(cids.len(), ERROR_LOG_ENTRIES);
        assert_eq!(cids[0], 19);
        assert_eq!(cids[15], 4);
    }
}
