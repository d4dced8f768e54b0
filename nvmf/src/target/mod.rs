//! The target: subsystems, listeners, transports, the discovery log, and its wiring onto
//! reactors. `options.rs` holds its limits; `live.rs` the changes a control thread makes
//! while it runs and waits for every reactor to apply.

mod live;
mod options;

pub use options::{TargetOptions, MIN_ADMIN_QUEUE_DEPTH};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nvme_spec::fabrics::{CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvme_spec::log::{rdma_tsas, subtype, treq, DiscoveryLogEntry, DiscoveryLogHeader};
use nvme_spec::{put_str_nul_padded, FromZeros, IntoBytes, U16, U64};
use reactor::{PollStatus, ReactorContext, ReactorHandle};

use crate::poll_group::{PollGroup, PollGroupHandle};
use crate::subsystem::{Namespace, NamespaceConfig, Subsystem, SubsystemConfig, SubsystemState};
use crate::transport::{ListenAddress, PendingQueue, Transport};
use crate::ConfigError;

/// A transport with the limits its queues and controllers get.
struct TransportEntry {
    transport: Arc<dyn Transport>,
    options: TargetOptions,
}

/// How long a control-plane change waits for every reactor to apply it.
pub const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// The NVMe-oF target.
pub struct Target {
    /// Target-wide: the acceptor's period, and the limits of transports created without
    /// options of their own.
    pub options: TargetOptions,
    /// Append-only (indices are the poll groups' transport indices); read on control paths
    /// (Connect, admin commands, the acceptor), never per I/O.
    transports: RwLock<Vec<TransportEntry>>,
    /// Index 0 is the discovery subsystem; ids are stable positions, never reused (None: a
    /// deleted subsystem, whose id poll groups may still hold in messages).
    subsystems: Mutex<Vec<Option<Arc<Subsystem>>>>,
    /// Every address listened on; a listener's portid is its index.
    listeners: Mutex<Vec<ListenAddress>>,
    genctr: AtomicU64,
    reactors: OnceLock<ReactorHandle>,
    queue_load: OnceLock<Box<[AtomicUsize]>>,
    next_admin_reactor: AtomicUsize,
    /// When the target started: SMART's power-on time.
    pub started: Instant,
}

/// Bound on discovery log records, so a log page stays a few MiB at most.
pub const MAX_DISCOVERY_RECORDS: usize = 1024;
impl Target {
    pub fn new(
        options: TargetOptions,
        transports: Vec<Arc<dyn Transport>>,
    ) -> Result<Arc<Target>, ConfigError> {
        options.validate()?;
        let transports = transports
            .into_iter()
            .map(|transport| TransportEntry { transport, options })
            .collect();
        Ok(Arc::new(Target {
            options,
            transports: RwLock::new(transports),
            subsystems: Mutex::new(vec![Some(Arc::new(Subsystem::discovery(0)))]),
            listeners: Mutex::new(Vec::new()),
            genctr: AtomicU64::new(1),
            reactors: OnceLock::new(),
            queue_load: OnceLock::new(),
            next_admin_reactor: AtomicUsize::new(0),
            started: Instant::now(),
        }))
    }

    fn subsystems_locked(&self) -> MutexGuard<'_, Vec<Option<Arc<Subsystem>>>> {
        self.subsystems.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transports_read(&self) -> RwLockReadGuard<'_, Vec<TransportEntry>> {
        self.transports.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every transport, in creation order (index = transport index).
    pub fn transports(&self) -> Vec<Arc<dyn Transport>> {
        self.transports_read()
            .iter()
            .map(|e| e.transport.clone())
            .collect()
    }

    /// Transport `t` (an index a poll group or queue holds).
    pub fn transport(&self, t: usize) -> Arc<dyn Transport> {
        self.transports_read()[t].transport.clone()
    }

    /// The limits of transport `t`'s queues and controllers.
    pub fn transport_options(&self, t: usize) -> TargetOptions {
        self.transports_read()[t].options
    }

    pub fn transport_index(&self, trtype: &str) -> Option<usize> {
        self.transports_read()
            .iter()
            .position(|e| e.transport.name() == trtype)
    }

    /// Discovery log generation counter.
    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems_locked().iter().flatten().cloned().collect()
    }

    pub fn find_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems_locked()
            .iter()
            .flatten()
            .find(|s| s.nqn == nqn)
            .cloned()
    }

    pub fn subsystem_by_id(&self, id: usize) -> Option<Arc<Subsystem>> {
        self.subsystems_locked().get(id).cloned().flatten()
    }

    /// Starts listening on `addr` if no listener covers it yet.
    pub fn listen(&self, addr: &ListenAddress) -> Result<(), ConfigError> {
        self.listen_new(addr).map(|_| ())
    }

    /// As `listen`; true when this call started the listener.
    fn listen_new(&self, addr: &ListenAddress) -> Result<bool, ConfigError> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if listeners.contains(addr) {
            return Ok(false);
        }
        let t = self
            .transport_index(&addr.trtype)
            .ok_or_else(|| ConfigError::Invalid {
                what: format!("listener {addr}"),
                msg: format!(
                    "no transport {:?} in this target (available: {})",
                    addr.trtype,
                    self.transports()
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        self.transport(t)
            .listen(addr)
            .map_err(|e| ConfigError::Invalid {
                what: format!("listener {addr}"),
                msg: e.to_string(),
            })?;
        log::info!("listening on {addr}");
        listeners.push(addr.clone());
        Ok(true)
    }

    /// Stops a listener this target started (rolling back a failed change).
    fn stop_listening(&self, addr: &ListenAddress) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = listeners.iter().position(|l| l == addr) else {
            return;
        };
        let t = self
            .transport_index(&addr.trtype)
            .expect("a listener's transport exists");
        if let Err(e) = self.transport(t).stop_listening(addr) {
            log::error!("cannot stop listening on {addr}: {e}");
            return;
        }
        listeners.remove(i);
        log::info!("stopped listening on {addr}");
    }

    pub fn listeners(&self) -> Vec<ListenAddress> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn portid(&self, addr: &ListenAddress) -> u16 {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.iter().position(|l| l.covers(addr)).unwrap_or(0) as u16
    }

    /// Adds a subsystem, starts its listeners and tells running reactors.
    /// All or nothing: on any error no subsystem is added, no listener it
    /// started stays, and the discovery log does not change.
    pub fn add_subsystem(&self, cfg: &SubsystemConfig) -> Result<Arc<Subsystem>, ConfigError> {
        let sub = {
            let mut subs = self.subsystems_locked();
            if subs.iter().flatten().any(|s| s.nqn == cfg.nqn) {
                return Err(ConfigError::Invalid {
                    what: format!("subsystem {:?}", cfg.nqn),
                    msg: "a subsystem with this NQN already exists".into(),
                });
            }
            let sub = Arc::new(Subsystem::from_config(subs.len(), cfg)?);
            let mut started = Vec::new();
            for l in &cfg.listeners {
                match self.listen_new(l) {
                    Ok(new) => started.extend(new.then_some(l)),
                    Err(e) => {
                        for l in started {
                            self.stop_listening(l);
                        }
                        return Err(e);
                    }
                }
            }
            subs.push(Some(sub.clone()));
            self.bump_genctr(&subs);
            sub
        };
        if !cfg.allow_any_host && cfg.hosts.is_empty() {
            log::warn!(
                "subsystem {} allows no host: set allow_any_host or list hosts",
                cfg.nqn
            );
        }
        self.broadcast({
            let sub = sub.clone();
            move |pg| pg.attach_subsystem(&sub)
        });
        self.broadcast(|pg| pg.discovery_changed());
        Ok(sub)
    }

    /// Changes subsystem `nqn` (an NVM one) under the subsystem list's lock: `change` says
    /// whether it changed something discovery shows, and if so genctr moves under the same
    /// lock and discovery controllers hear of it. Returns the subsystem's id and `change`'s
    /// answer.
    fn change_subsystem<R>(
        &self,
        nqn: &str,
        change: impl FnOnce(&mut SubsystemState) -> Result<(bool, R), ConfigError>,
    ) -> Result<(usize, R), ConfigError> {
        let (id, changed, r) = {
            let subs = self.subsystems_locked();
            let sub = subs
                .iter()
                .flatten()
                .find(|s| s.nqn == nqn && !s.is_discovery())
                .ok_or_else(|| no_subsystem(nqn))?;
            let (changed, r) = change(&mut sub.lock())?;
            if changed {
                self.bump_genctr(&subs);
            }
            (sub.id, changed, r)
        };
        if changed {
            self.broadcast(|pg| pg.discovery_changed());
        }
        Ok((id, r))
    }

    /// Allows one more host on a subsystem.
    pub fn allow_host(&self, nqn: &str, hostnqn: &str) -> Result<(), ConfigError> {
        crate::nqn::validate_nqn(hostnqn).map_err(|msg| ConfigError::Invalid {
            what: "host".into(),
            msg,
        })?;
        self.change_subsystem(nqn, |st| {
            let new = !st.hosts.iter().any(|h| h == hostnqn);
            if new {
                st.hosts.push(hostnqn.into());
            }
            Ok((new, ()))
        })?;
        Ok(())
    }

    /// Adds a listener to a subsystem, starting the transport's listener if none covers it.
    pub fn add_listener(&self, nqn: &str, addr: &ListenAddress) -> Result<(), ConfigError> {
        self.change_subsystem(nqn, |st| {
            if st.listeners.contains(addr) {
                return Err(ConfigError::Invalid {
                    what: format!("subsystem {nqn:?}"),
                    msg: format!("it already listens on {addr}"),
                });
            }
            self.listen_new(addr)?;
            st.listeners.push(addr.clone());
            Ok((true, ()))
        })?;
        Ok(())
    }

    /// Adds a namespace at run time (NSID 0: the lowest free one) and returns its NSID: every
    /// poll group opens its channel first, then the subsystem's controllers get a Namespace
    /// Attribute Changed event.
    pub fn add_namespace(&self, nqn: &str, cfg: &NamespaceConfig) -> Result<u32, ConfigError> {
        let sub = self.find_subsystem(nqn).ok_or_else(|| no_subsystem(nqn))?;
        let ns = sub.insert_namespace(cfg)?;
        let (sub_id, nsid) = (sub.id, ns.nsid);
        self.broadcast_then(
            move |pg| pg.attach_namespace(sub_id, &ns),
            move |pg| pg.namespace_changed(sub_id, nsid),
        );
        Ok(nsid)
    }

    /// Lets any host connect (`true`) or only the listed ones. Hosts already connected stay.
    pub fn set_allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), ConfigError> {
        self.change_subsystem(nqn, |st| {
            let changed = st.allow_any_host != allow;
            st.allow_any_host = allow;
            Ok((changed, ()))
        })?;
        Ok(())
    }

    /// Removes a namespace: new I/O to it fails at once, I/O in flight drains.
    /// The poll groups apply it by message, without the caller waiting (reactors a test steps
    /// on the calling thread included); see `remove_namespace_drained`.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), ConfigError> {
        let (sub_id, _) = self.take_namespace(nqn, nsid)?;
        self.broadcast_then(
            move |pg| pg.detach_namespace(sub_id, nsid),
            move |pg| pg.namespace_changed(sub_id, nsid),
        );
        Ok(())
    }

    /// Moves the discovery generation counter. Takes the subsystem list's
    /// guard as proof: a change the discovery log shows and its genctr move
    /// together, so a log built under the same lock is never a new log with
    /// an old genctr (which a host would take as unchanged).
    fn bump_genctr(&self, _proof: &MutexGuard<'_, Vec<Option<Arc<Subsystem>>>>) {
        self.genctr.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs `f` on every reactor's poll group (no-op before reactors start).
    fn broadcast(&self, f: impl Fn(&mut PollGroup) + Send + Sync + Clone + 'static) {
        let Some(handle) = self.reactors.get() else {
            return;
        };
        for r in 0..handle.reactor_count() {
            let f = f.clone();
            if let Err(e) = handle.send(r, move |ctx| {
                with_poll_group(ctx, |pg| f(pg));
            }) {
                log::error!("cannot reach reactor {r}: {e:?}");
            }
        }
    }

    /// Runs `first` on every poll group; once all have, runs `then` on every one.
    fn broadcast_then(
        &self,
        first: impl Fn(&mut PollGroup) + Send + Sync + 'static,
        then: impl Fn(&mut PollGroup) + Send + Sync + 'static,
    ) {
        let Some(handle) = self.reactors.get() else {
            return;
        };
        let n = handle.reactor_count();
        let remaining = Arc::new(AtomicUsize::new(n));
        let first = Arc::new(first);
        let then = Arc::new(then);
        for r in 0..n {
            let (first, then, remaining, h) = (
                first.clone(),
                then.clone(),
                remaining.clone(),
                handle.clone(),
            );
            let sent = handle.send(r, move |ctx| {
                with_poll_group(ctx, |pg| first(pg));
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    for r2 in 0..h.reactor_count() {
                        let then = then.clone();
                        if let Err(e) = h.send(r2, move |ctx| {
                            with_poll_group(ctx, |pg| then(pg));
                        }) {
                            log::error!("cannot reach reactor {r2}: {e:?}");
                        }
                    }
                }
            });
            if let Err(e) = sent {
                log::error!("cannot reach reactor {r}: {e:?}");
            }
        }
    }

    /// The discovery log page for `hostnqn` on the listener it connected through:
    /// the current discovery subsystem, then every subsystem it may use there.
    pub fn discovery_log(&self, hostnqn: &str, via: &ListenAddress) -> Vec<u8> {
        // Held throughout: genctr and the records describe the same state.
        let subs = self.subsystems_locked();
        let mut entries: Vec<DiscoveryLogEntry> = Vec::new();
        let portid = self.portid(via);
        let entry = |subnqn: &str, kind: u8| {
            let mut e = DiscoveryLogEntry::new_zeroed();
            e.trtype = via.trtype_code();
            e.adrfam = via.adrfam_code();
            e.subtype = kind;
            e.treq = treq::SECURE_CHANNEL_NOT_REQUIRED;
            e.portid = U16::new(portid);
            e.cntlid = U16::new(CNTLID_DYNAMIC);
            e.asqsz = U16::new(
                self.transport_index(&via.trtype)
                    .map_or(self.options, |t| self.transport_options(t))
                    .max_admin_queue_depth,
            );
            put_str_nul_padded(&mut e.trsvcid, &via.trsvcid);
            put_str_nul_padded(&mut e.traddr, &via.traddr);
            put_str_nul_padded(&mut e.subnqn, subnqn);
            if via.trtype == "tcp" {
                // The TCP transport serves hosts that turn SQ flow control off (its C2HData
                // then carries SUCCESS); TSAS stays zero: no secure channel (SECTYPE none).
                e.treq |= treq::DISABLE_SQFLOW;
            }
            if via.trtype == "rdma" {
                e.tsas[0] = rdma_tsas::QPTYPE_CONNECTED;
                e.tsas[1] = rdma_tsas::PRTYPE_NOT_SPECIFIED;
                e.tsas[2] = rdma_tsas::CMS_RDMA_CM;
            }
            e
        };
        entries.push(entry(DISCOVERY_NQN, subtype::CURRENT_DISCOVERY));
        for sub in subs.iter().flatten().filter(|s| !s.is_discovery()) {
            if entries.len() >= MAX_DISCOVERY_RECORDS {
                log::warn!("discovery log truncated at {MAX_DISCOVERY_RECORDS} records");
                break;
            }
            if sub.host_allowed(hostnqn) && sub.listener_allowed(via) {
                entries.push(entry(&sub.nqn, subtype::NVME));
            }
        }
        let mut header = DiscoveryLogHeader::new_zeroed();
        header.genctr = U64::new(self.genctr());
        header.numrec = U64::new(entries.len() as u64);
        let mut out = Vec::with_capacity(1024 * (entries.len() + 1));
        out.extend_from_slice(header.as_bytes());
        for e in &entries {
            out.extend_from_slice(e.as_bytes());
        }
        out
    }

    /// Sets up this reactor: its poll group and, on reactor 0, the acceptor.
    /// Call once on every reactor (the `init` of `spawn_reactors`).
    pub fn init_reactor(self: &Arc<Self>, ctx: &mut ReactorContext) -> Result<(), ConfigError> {
        let handle = ctx.handle().clone();
        let _ = self.reactors.set(handle.clone());
        let _ = self.queue_load.set(
            (0..handle.reactor_count())
                .map(|_| AtomicUsize::new(0))
                .collect(),
        );
        let pg = PollGroup::new(self.clone(), ctx.id(), handle)?;
        for fd in pg.transports.iter().filter_map(|t| t.wakeup_fd()) {
            ctx.watch_fd(fd).map_err(|e| ConfigError::Invalid {
                what: format!("interrupt mode on reactor {}", ctx.id()),
                msg: format!("cannot watch a transport's completion fd: {e}"),
            })?;
        }
        let pg: PollGroupHandle = PollGroupHandle(Rc::new(RefCell::new(pg)));
        ctx.insert_local(pg.clone());
        ctx.register_poller("nvmf_poll_group", pg);
        if ctx.id() == 0 {
            let target = self.clone();
            let period = Duration::from_micros(self.options.acceptor_poll_period_us);
            ctx.register_timed_poller("nvmf_acceptor", period, move |ctx: &mut ReactorContext| {
                target.accept(ctx)
            });
        }
        Ok(())
    }

    fn accept(&self, ctx: &mut ReactorContext) -> PollStatus {
        let mut accepted = 0;
        for (t, e) in self.transports_read().iter().enumerate() {
            accepted += e.transport.accept(&mut |pending: PendingQueue| {
                let r = self.place(pending.qid, ctx.reactor_count());
                let sent = ctx.send(r, move |ctx| {
                    with_poll_group(ctx, move |pg| pg.adopt(t, pending));
                });
                if let Err(e) = sent {
                    log::error!("new queue dropped: reactor {r} is not taking messages ({e:?})");
                }
            });
        }
        if accepted > 0 {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Admin queues go round-robin; I/O queues to the reactor with the fewest
    /// I/O queues (admin queues carry too little traffic to count), lowest
    /// reactor first on a tie, so one controller's queues spread over all.
    fn place(&self, qid: u16, reactors: usize) -> usize {
        if qid == 0 {
            return self.next_admin_reactor.fetch_add(1, Ordering::Relaxed) % reactors;
        }
        let load = self
            .queue_load
            .get()
            .expect("queue load table exists once reactors run");
        (0..reactors)
            .min_by_key(|&r| load[r].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub(crate) fn io_queue_opened(&self, reactor: usize) {
        if let Some(load) = self.queue_load.get() {
            load[reactor].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn io_queue_closed(&self, reactor: usize) {
        if let Some(load) = self.queue_load.get() {
            load[reactor].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// I/O queues open on each reactor (for placement and tests).
    pub fn queue_load(&self) -> Vec<usize> {
        self.queue_load
            .get()
            .map(|l| l.iter().map(|a| a.load(Ordering::Relaxed)).collect())
            .unwrap_or_default()
    }
}

fn no_subsystem(nqn: &str) -> ConfigError {
    ConfigError::Invalid {
        what: format!("subsystem {nqn:?}"),
        msg: "no such subsystem".into(),
    }
}

/// Runs `f` on this reactor's poll group, if it has one.
pub(crate) fn with_poll_group<R>(
    ctx: &mut ReactorContext,
    f: impl FnOnce(&mut PollGroup) -> R,
) -> Option<R> {
    let Some(pg) = ctx.local::<PollGroupHandle>().cloned() else {
        log::error!(
            "reactor {} has no nvmf poll group; message dropped",
            ctx.id()
        );
        return None;
    };
    let mut pg = pg.0.borrow_mut();
    pg.set_now(ctx.now());
    Some(f(&mut pg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::LoopbackTransport;
    use crate::subsystem::SubsystemConfig;
    use nvme_spec::FromBytes;

    fn target() -> Arc<Target> {
        let t = LoopbackTransport::new(4096, 131_072, 8192, 64).unwrap();
        Target::new(TargetOptions::default(), vec![t]).unwrap()
    }

    #[test]
    fn options_are_checked() {
        assert!(TargetOptions::default().validate().is_ok());
        assert_eq!(TargetOptions::default().mdts(), 8, "1 MiB of 4 KiB pages");
        for bad in [
            TargetOptions {
                max_queue_depth: 1,
                ..Default::default()
            },
            TargetOptions {
                max_io_bytes: 100_000,
                ..Default::default()
            },
            TargetOptions {
                in_capsule_data_bytes: 4097,
                ..Default::default()
            },
            TargetOptions {
                max_queues_per_controller: 1,
                ..Default::default()
            },
            TargetOptions {
                acceptor_poll_period_us: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn discovery_log_filters_by_host_and_listener() {
        let t = target();
        let l1 = ListenAddress::new("loopback", "a", "4420");
        let l2 = ListenAddress::new("loopback", "b", "4420");
        let mut open = SubsystemConfig::new("nqn.2016-06.io.spdk:open");
        open.allow_any_host = true;
        open.listeners = vec![l1.clone()];
        let mut closed = SubsystemConfig::new("nqn.2016-06.io.spdk:closed");
        closed.hosts = vec!["nqn.2016-06.io.spdk:h1".into()];
        closed.listeners = vec![l1.clone(), l2.clone()];
        t.add_subsystem(&open).unwrap();
        t.add_subsystem(&closed).unwrap();
        let count = |host: &str, via: &ListenAddress| {
            let log = t.discovery_log(host, via);
            let h = DiscoveryLogHeader::read_from_bytes(&log[..1024]).unwrap();
            assert_eq!(log.len(), 1024 * (h.numrec.get() as usize + 1));
            h.numrec.get()
        };
        assert_eq!(count("nqn.2016-06.io.spdk:h1", &l1), 3);
        assert_eq!(count("nqn.2016-06.io.spdk:h2", &l1), 2);
        assert_eq!(count("nqn.2016-06.io.spdk:h1", &l2), 2);
        assert_eq!(count("nqn.2016-06.io.spdk:h2", &l2), 1);
        let g = t.genctr();
        t.allow_host("nqn.2016-06.io.spdk:closed", "nqn.2016-06.io.spdk:h2")
            .unwrap();
        assert!(t.genctr() > g);
        assert_eq!(count("nqn.2016-06.io.spdk:h2", &l2), 2);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let t = target();
        let mut s = SubsystemConfig::new("nqn.2016-06.io.spdk:x");
        s.listeners = vec![ListenAddress::new("rdma", "10.0.0.1", "4420")];
        let e = t.add_subsystem(&s).unwrap_err().to_string();
        assert!(
            e.contains("no transport \"rdma\"") && e.contains("loopback"),
            "{e}"
        );
        let e = t
            .add_subsystem(&SubsystemConfig::new("bad"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with"), "{e}");
        let e = t
            .add_subsystem(&SubsystemConfig::new(DISCOVERY_NQN))
            .unwrap_err()
            .to_string();
        assert!(e.contains("discovery"), "{e}");
        let mut ok = SubsystemConfig::new("nqn.2016-06.io.spdk:y");
        ok.allow_any_host = true;
        t.add_subsystem(&ok).unwrap();
        assert!(t
            .add_subsystem(&ok)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
    }

    #[test]
    fn a_discovery_log_and_its_genctr_always_describe_the_same_state() {
        let t = target();
        let l = ListenAddress::new("loopback", "a", "4420");
        let writer = {
            let (t, l) = (t.clone(), l.clone());
            std::thread::spawn(move || {
                for i in 0..300 {
                    let mut s = SubsystemConfig::new(&format!("nqn.2016-06.io.spdk:race{i}"));
                    s.allow_any_host = true;
                    s.listeners = vec![l.clone()];
                    t.add_subsystem(&s).unwrap();
                    std::thread::yield_now();
                }
            })
        };
        // Every add shows in the log: one genctr, one record count. A log
        // with new records under an old genctr would leave a host's stale
        // view in place (it rereads only when genctr moves).
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let log = t.discovery_log("nqn.2016-06.io.spdk:h", &l);
            let h = DiscoveryLogHeader::read_from_bytes(&log[..1024]).unwrap();
            let numrec = h.numrec.get();
            let first = *seen.entry(h.genctr.get()).or_insert(numrec);
            assert_eq!(first, numrec, "genctr {} named two logs", h.genctr.get());
        }
        writer.join().unwrap();
        assert!(seen.len() > 1, "the reader saw the log change");
    }

    #[test]
    fn a_failed_add_subsystem_leaves_nothing_behind() {
        let t = target();
        let fresh = ListenAddress::new("loopback", "fresh", "4420");
        let mut s = SubsystemConfig::new("nqn.2016-06.io.spdk:half");
        s.allow_any_host = true;
        s.listeners = vec![
            fresh.clone(),
            ListenAddress::new("rdma", "10.0.0.1", "4420"),
        ];
        let g = t.genctr();
        let before = t.listeners();
        assert!(t.add_subsystem(&s).is_err());
        assert_eq!(
            t.listeners(),
            before,
            "the listener it started is stopped again"
        );
        assert!(t.find_subsystem(&s.nqn).is_none());
        assert_eq!(t.genctr(), g, "nothing a host could discover changed");
        let log = t.discovery_log("nqn.2016-06.io.spdk:h", &fresh);
        assert_eq!(
            DiscoveryLogHeader::read_from_bytes(&log[..1024])
                .unwrap()
                .numrec
                .get(),
            1
        );
        s.listeners.pop();
        t.add_subsystem(&s).expect("the corrected config is taken");
        assert!(t.listeners().contains(&fresh));
    }
}
