//! Subsystems, their namespaces, allowed hosts, listeners and controllers.
//!
//! This is control-plane state behind a mutex: it is read at Connect, for
//! admin commands that list things, and changed by configuration. The I/O path
//! never touches it; each poll group keeps its own namespace channels.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bdev::{Bdev, IoType, IoTypes};
use nvme_spec::fabrics::{CNTLID_MAX, DISCOVERY_NQN};
use nvme_spec::identify::oncs;

use crate::controller::ControllerShared;
use crate::nqn::validate_nqn;
use crate::transport::ListenAddress;
use crate::ConfigError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsystemKind {
    Discovery,
    Nvme,
}

/// How a subsystem is configured.
#[derive(Clone)]
pub struct SubsystemConfig {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    pub listeners: Vec<ListenAddress>,
    pub namespaces: Vec<NamespaceConfig>,
    /// Highest NSID (Identify Controller NN).
    pub max_namespaces: u32,
}

impl SubsystemConfig {
    pub fn new(nqn: &str) -> SubsystemConfig {
        SubsystemConfig {
            nqn: nqn.into(),
            serial: "NVMF00000000000000001".chars().take(20).collect(),
            model: DEFAULT_MODEL.into(),
            allow_any_host: false,
            hosts: Vec::new(),
            listeners: Vec::new(),
            namespaces: Vec::new(),
            max_namespaces: 32,
        }
    }
}

#[derive(Clone)]
pub struct NamespaceConfig {
    pub nsid: u32,
    pub bdev: Arc<dyn Bdev>,
    /// Defaults to a value derived from the subsystem NQN, NSID and bdev name:
    /// unique per namespace and stable across restarts.
    pub nguid: Option<[u8; 16]>,
    pub uuid: Option<[u8; 16]>,
}

/// An exported namespace.
#[derive(Clone)]
pub struct Namespace {
    pub nsid: u32,
    pub bdev: Arc<dyn Bdev>,
    pub nguid: [u8; 16],
    pub uuid: [u8; 16],
}

/// A live controller, as registered with its subsystem.
pub struct ControllerEntry {
    pub shared: Arc<ControllerShared>,
}

pub(crate) struct SubsystemState {
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    pub listeners: Vec<ListenAddress>,
    pub namespaces: BTreeMap<u32, Namespace>,
    pub controllers: BTreeMap<u16, ControllerEntry>,
    next_cntlid: u16,
}

pub struct Subsystem {
    /// Index in the target's subsystem table (stable for the target's life).
    pub id: usize,
    pub nqn: String,
    pub kind: SubsystemKind,
    pub serial: String,
    pub model: String,
    pub max_namespaces: u32,
    pub(crate) state: Mutex<SubsystemState>,
}

/// What Identify Controller promises about the namespaces behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Advertised {
    pub oncs: u16,
    pub vwc: bool,
}

/// ONCS bits that depend on what a namespace's bdev can do.
const OPTIONAL_COMMANDS: [(u16, IoType); 2] = [
    (oncs::COMPARE, IoType::Compare),
    (oncs::WRITE_ZEROES, IoType::WriteZeroes),
];

/// The first command of `advertised` (ONCS bits) that `supported` lacks.
fn missing_optional_command(advertised: u16, supported: IoTypes) -> Option<&'static str> {
    OPTIONAL_COMMANDS
        .iter()
        .find(|(bit, t)| advertised & bit != 0 && !supported.contains(*t))
        .map(|(_, t)| match t {
            IoType::Compare => "Compare",
            _ => "Write Zeroes",
        })
}

/// Upper bound on controllers per subsystem; bounds per-subsystem tables.
pub const MAX_CONTROLLERS_PER_SUBSYSTEM: usize = 1024;
/// Upper bound on NN so per-poll-group namespace tables stay small.
pub const MAX_NAMESPACES_LIMIT: u32 = 1024;

impl std::fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsystem")
            .field("id", &self.id)
            .field("nqn", &self.nqn)
            .finish_non_exhaustive()
    }
}

impl Subsystem {
    pub(crate) fn discovery(id: usize) -> Subsystem {
        Subsystem {
            id,
            nqn: DISCOVERY_NQN.into(),
            kind: SubsystemKind::Discovery,
            // As nvmet's: a serial of this target instance, the model of
            // every subsystem by default.
            serial: discovery_serial(),
            model: DEFAULT_MODEL.into(),
            max_namespaces: 0,
            state: Mutex::new(SubsystemState {
                allow_any_host: true,
                hosts: Vec::new(),
                listeners: Vec::new(),
                namespaces: BTreeMap::new(),
                controllers: BTreeMap::new(),
                next_cntlid: 1,
            }),
        }
    }

    pub(crate) fn from_config(id: usize, cfg: &SubsystemConfig) -> Result<Subsystem, ConfigError> {
        let err = |key: &str, msg: String| ConfigError::Invalid {
            what: format!("subsystem {:?} {key}", cfg.nqn),
            msg,
        };
        validate_nqn(&cfg.nqn).map_err(|m| err("nqn", m))?;
        if cfg.nqn == DISCOVERY_NQN {
            return Err(err(
                "nqn",
                "is the discovery NQN; the target provides that subsystem itself".into(),
            ));
        }
        if cfg.serial.is_empty()
            || cfg.serial.len() > 20
            || !cfg.serial.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(err(
                "serial",
                format!("{:?} must be 1-20 printable ASCII characters", cfg.serial),
            ));
        }
        if cfg.model.is_empty()
            || cfg.model.len() > 40
            || !cfg.model.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(err(
                "model",
                format!("{:?} must be 1-40 printable ASCII characters", cfg.model),
            ));
        }
        if cfg.max_namespaces == 0 || cfg.max_namespaces > MAX_NAMESPACES_LIMIT {
            return Err(err(
                "max_namespaces",
                format!("{} must be 1..={MAX_NAMESPACES_LIMIT}", cfg.max_namespaces),
            ));
        }
        for h in &cfg.hosts {
            validate_nqn(h).map_err(|m| err("hosts", m))?;
        }
        let sub = Subsystem {
            id,
            nqn: cfg.nqn.clone(),
            kind: SubsystemKind::Nvme,
            serial: cfg.serial.clone(),
            model: cfg.model.clone(),
            max_namespaces: cfg.max_namespaces,
            state: Mutex::new(SubsystemState {
                allow_any_host: cfg.allow_any_host,
                hosts: cfg.hosts.clone(),
                listeners: cfg.listeners.clone(),
                namespaces: BTreeMap::new(),
                controllers: BTreeMap::new(),
                next_cntlid: 1,
            }),
        };
        for ns in &cfg.namespaces {
            sub.insert_namespace(ns)?;
        }
        Ok(sub)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SubsystemState> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_discovery(&self) -> bool {
        self.kind == SubsystemKind::Discovery
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let st = self.lock();
        st.allow_any_host || st.hosts.iter().any(|h| h == hostnqn)
    }

    /// True when a connection that arrived on `listener` may reach this subsystem.
    pub fn listener_allowed(&self, listener: &ListenAddress) -> bool {
        self.is_discovery() || self.lock().listeners.iter().any(|l| l.covers(listener))
    }

    pub fn listeners(&self) -> Vec<ListenAddress> {
        self.lock().listeners.clone()
    }

    pub fn allow_any_host(&self) -> bool {
        self.lock().allow_any_host
    }

    /// The hosts allowed by name (whatever `allow_any_host` says).
    pub fn hosts(&self) -> Vec<String> {
        self.lock().hosts.clone()
    }

    pub fn namespaces(&self) -> Vec<Namespace> {
        self.lock().namespaces.values().cloned().collect()
    }

    /// Adds a namespace; NSID 0 takes the lowest free one.
    pub(crate) fn insert_namespace(&self, cfg: &NamespaceConfig) -> Result<Namespace, ConfigError> {
        let mut st = self.lock();
        let nsid = match cfg.nsid {
            0 => (1..=self.max_namespaces)
                .find(|n| !st.namespaces.contains_key(n))
                .ok_or_else(|| ConfigError::Invalid {
                    what: format!("subsystem {:?}", self.nqn),
                    msg: format!(
                        "all {} namespaces (max_namespaces) are in use",
                        self.max_namespaces
                    ),
                })?,
            n => n,
        };
        let err = |msg: String| ConfigError::Invalid {
            what: format!("subsystem {:?} namespace {nsid}", self.nqn),
            msg,
        };
        if nsid > self.max_namespaces {
            return Err(err(format!(
                "nsid must be 1..={} (max_namespaces)",
                self.max_namespaces
            )));
        }
        if st.namespaces.contains_key(&nsid) {
            return Err(err("nsid is already in use".into()));
        }
        let name = &cfg.bdev.info().name;
        if let Some(other) = st.namespaces.values().find(|n| n.bdev.info().name == *name) {
            return Err(err(format!(
                "bdev {name:?} is already exported as nsid {}",
                other.nsid
            )));
        }
        let info = cfg.bdev.info();
        if info.volatile_write_cache && !info.supported.contains(IoType::Flush) {
            return Err(err(format!(
                "bdev {name:?} has a volatile write cache but no Flush: its writes could never \
                 be made durable"
            )));
        }
        let advertised = st.controllers.values().fold(0, |acc, c| {
            acc | c.shared.advertised_oncs.load(Ordering::Relaxed)
        });
        if let Some(cmd) = missing_optional_command(advertised, cfg.bdev.info().supported) {
            return Err(err(format!(
                "bdev {name:?} cannot do {cmd}, which this subsystem's connected controllers \
                 were told it supports (Identify ONCS); export a bdev that supports {cmd}, \
                 or add the namespace while no host is connected"
            )));
        }
        let ns = Namespace {
            nsid,
            bdev: cfg.bdev.clone(),
            nguid: cfg
                .nguid
                .unwrap_or_else(|| stable_id(&[&self.nqn, &nsid.to_string(), name, "nguid"])),
            uuid: cfg.uuid.unwrap_or_else(|| {
                uuid_from(stable_id(&[&self.nqn, &nsid.to_string(), name, "uuid"]))
            }),
        };
        st.namespaces.insert(nsid, ns.clone());
        Ok(ns)
    }

    /// The optional NVM commands (ONCS) a controller may advertise: Dataset
    /// Management always (deallocation is advisory where a bdev cannot
    /// deallocate, and DLFEAT says so per namespace); Compare and Write Zeroes
    /// only when every namespace does them. No namespace, no promise. The
    /// answer is recorded for `ctrl` under the lock that namespace inserts
    /// take, so an insert either sees it or is seen by it.
    ///
    /// Also whether a volatile write cache is present (VWC): when any
    /// namespace has one, so that hosts send Flush and FUA.
    pub(crate) fn advertise(&self, ctrl: &ControllerShared) -> Advertised {
        let st = self.lock();
        let mut o = oncs::DATASET_MANAGEMENT;
        if !st.namespaces.is_empty() {
            for (bit, io_type) in OPTIONAL_COMMANDS {
                if st
                    .namespaces
                    .values()
                    .all(|n| n.bdev.info().supported.contains(io_type))
                {
                    o |= bit;
                }
            }
        }
        let vwc = st
            .namespaces
            .values()
            .any(|n| n.bdev.info().volatile_write_cache);
        ctrl.advertised_oncs.store(o, Ordering::Relaxed);
        ctrl.advertised_vwc.store(vwc, Ordering::Relaxed);
        Advertised { oncs: o, vwc }
    }

    pub(crate) fn remove_namespace(&self, nsid: u32) -> Option<Namespace> {
        self.lock().namespaces.remove(&nsid)
    }

    /// Reserves a cntlid and registers the controller built by `make`.
    pub(crate) fn register_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<ControllerShared>,
    ) -> Option<Arc<ControllerShared>> {
        let mut st = self.lock();
        if st.controllers.len() >= MAX_CONTROLLERS_PER_SUBSYSTEM {
            return None;
        }
        // Rotate through 1..=CNTLID_MAX so a reconnecting host gets a fresh id.
        let mut id = st.next_cntlid;
        for _ in 0..=CNTLID_MAX {
            if id == 0 || id > CNTLID_MAX {
                id = 1;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = st.controllers.entry(id) {
                let shared = make(id);
                slot.insert(ControllerEntry {
                    shared: shared.clone(),
                });
                st.next_cntlid = id + 1;
                return Some(shared);
            }
            id += 1;
        }
        None
    }

    pub(crate) fn unregister_controller(&self, cntlid: u16) {
        self.lock().controllers.remove(&cntlid);
    }

    pub(crate) fn find_controller(&self, cntlid: u16) -> Option<Arc<ControllerShared>> {
        self.lock()
            .controllers
            .get(&cntlid)
            .map(|e| e.shared.clone())
    }

    pub fn controller_count(&self) -> usize {
        self.lock().controllers.len()
    }
}

/// 128 bits from two FNV-1a passes with different offsets: deterministic
/// across builds and Rust versions (unlike `DefaultHasher`).
/// The model number subsystems report unless configured otherwise.
pub const DEFAULT_MODEL: &str = "Rust NVMe-oF target";

/// 16 hex digits, new each time the target starts (pid and clock).
fn discovery_serial() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    let id = stable_id(&[&std::process::id().to_string(), &now, "discovery"]);
    id[..8].iter().map(|b| format!("{b:02X}")).collect()
}

pub(crate) fn stable_id(parts: &[&str]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, offset) in [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142]
        .into_iter()
        .enumerate()
    {
        let mut h = offset;
        for part in parts {
            for &b in part.as_bytes().iter().chain(std::iter::once(&0xFF)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        out[half * 8..half * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    out
}

/// Marks 128 bits as an RFC 4122 name-based UUID (version 5 bits, variant 10).
fn uuid_from(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[6] = (bytes[6] & 0x0F) | 0x50;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_differ_and_repeat() {
        let a = stable_id(&["nqn.2016-06.io.spdk:cnode1", "1", "Malloc0"]);
        let b = stable_id(&["nqn.2016-06.io.spdk:cnode1", "2", "Malloc1"]);
        assert_ne!(a, b);
        assert_eq!(
            a,
            stable_id(&["nqn.2016-06.io.spdk:cnode1", "1", "Malloc0"])
        );
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
        let u = uuid_from(a);
        assert_eq!(u[6] >> 4, 5);
        assert_eq!(u[8] >> 6, 2);
    }
}
