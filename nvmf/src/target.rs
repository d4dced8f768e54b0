//! The target: options, subsystems, listeners, and its wiring onto reactors.

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

/// Transport-independent limits, as in SPDK's `nvmf_create_transport` options.
#[derive(Clone, Copy, Debug)]
pub struct TargetOptions {
    /// Deepest I/O queue a host may create (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// Deepest admin queue.
    pub max_admin_queue_depth: u16,
    /// Queues per controller, admin queue included.
    pub max_queues_per_controller: u16,
    /// In-capsule data per I/O command capsule (IOCCSZ - 64 bytes).
    pub in_capsule_data_bytes: u32,
    /// Largest transfer of one command (MDTS).
    pub max_io_bytes: u32,
    /// How often the acceptor polls for new connections.
    pub acceptor_poll_period_us: u64,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            max_queue_depth: 128,
            max_admin_queue_depth: 32,
            max_queues_per_controller: 64,
            in_capsule_data_bytes: 4096,
            max_io_bytes: 1 << 20,
            acceptor_poll_period_us: 10_000,
        }
    }
}

impl TargetOptions {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| {
            Err(ConfigError::Invalid {
                what: format!("transport option {key}"),
                msg: msg.into(),
            })
        };
        if !(2..=4096).contains(&self.max_queue_depth) {
            return bad("max_queue_depth", "must be 2..=4096");
        }
        if !(MIN_ADMIN_QUEUE_DEPTH..=4096).contains(&self.max_admin_queue_depth) {
            return bad(
                "max_admin_queue_depth",
                "must be 32..=4096 (NVMe-oF admin queues hold at least 32 entries)",
            );
        }
        if !(2..=1024).contains(&self.max_queues_per_controller) {
            return bad(
                "max_queues_per_controller",
                "must be 2..=1024 (admin queue included)",
            );
        }
        if self.in_capsule_data_bytes % 16 != 0 || self.in_capsule_data_bytes > 65_536 {
            return bad(
                "in_capsule_data_size",
                "must be a multiple of 16, at most 65536",
            );
        }
        if !self.max_io_bytes.is_power_of_two() || !(4096..=(1 << 20)).contains(&self.max_io_bytes)
        {
            return bad("max_io_size", "must be a power of two from 4096 to 1048576");
        }
        if self.in_capsule_data_bytes > self.max_io_bytes {
            return bad("in_capsule_data_size", "must not exceed max_io_size");
        }
        if self.acceptor_poll_period_us == 0 || self.acceptor_poll_period_us > 1_000_000 {
            return bad("acceptor_poll_period_us", "must be 1..=1000000");
        }
        Ok(())
    }

    /// MDTS in units of the 4 KiB minimum page size, as a power of two.
    pub fn mdts(&self) -> u8 {
        (self.max_io_bytes / 4096).trailing_zeros() as u8
    }
}

/// The NVMe-oF spec's smallest admin submission queue.
pub const MIN_ADMIN_QUEUE_DEPTH: u16 = 32;

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

    /// Adds a transport while the target runs (SPDK's nvmf_create_transport): every poll group
    /// creates its part before this returns, so its listeners can start right after. All or
    /// nothing: a poll group that fails undoes it everywhere.
    pub fn add_transport(
        &self,
        transport: Arc<dyn Transport>,
        options: TargetOptions,
    ) -> Result<usize, ConfigError> {
        options.validate()?;
        let name = transport.name();
        // No lock is held while the reactors work: reactor 0's acceptor reads the list.
        // Changes come from one control thread, so the index stays free meanwhile.
        let t = {
            let all = self.transports_read();
            if all.iter().any(|e| e.transport.name() == name) {
                return Err(ConfigError::Invalid {
                    what: format!("transport {name}"),
                    msg: "it already exists".into(),
                });
            }
            all.len()
        };
        if self.reactors.get().is_some() {
            let tr = transport.clone();
            let added = self.on_every_reactor(move |ctx| {
                let tr = tr.clone();
                let fd = with_poll_group(ctx, move |pg| pg.add_transport(t, &tr))
                    .unwrap_or_else(|| Err("no poll group".into()))?;
                match fd.map(|fd| ctx.watch_fd(fd)) {
                    Some(Err(e)) => {
                        with_poll_group(ctx, |pg| pg.remove_last_transport(t));
                        Err(format!("cannot watch its wake-up fd: {e}"))
                    }
                    _ => Ok(()),
                }
            });
            let failed: Vec<String> = added
                .iter()
                .enumerate()
                .filter_map(|(r, a)| a.as_ref().err().map(|e| format!("reactor {r}: {e}")))
                .collect();
            if !failed.is_empty() {
                let done: Vec<usize> = (0..added.len()).filter(|&r| added[r].is_ok()).collect();
                self.on_reactors(&done, move |ctx| {
                    with_poll_group(ctx, |pg| pg.remove_last_transport(t));
                    Ok(())
                });
                return Err(ConfigError::Invalid {
                    what: format!("transport {name}"),
                    msg: format!(
                        "its poll groups could not be created: {}",
                        failed.join("; ")
                    ),
                });
            }
        }
        let mut all = self.transports.write().unwrap_or_else(|p| p.into_inner());
        assert_eq!(all.len(), t, "transports are added by one thread at a time");
        all.push(TransportEntry { transport, options });
        log::info!("transport {name} created");
        Ok(t)
    }

    /// Runs `f` on every reactor and waits (up to `RECONFIGURE_TIMEOUT`) for each answer.
    fn on_every_reactor(
        &self,
        f: impl Fn(&mut ReactorContext) -> Result<(), String> + Send + Sync + 'static,
    ) -> Vec<Result<(), String>> {
        let n = self.reactors.get().map_or(0, |h| h.reactor_count());
        self.on_reactors(&(0..n).collect::<Vec<_>>(), f)
    }

    /// Runs `f` on the reactors `which` and waits for their answers; a reactor that does not
    /// answer in time (or cannot be reached) answers an error.
    fn on_reactors(
        &self,
        which: &[usize],
        f: impl Fn(&mut ReactorContext) -> Result<(), String> + Send + Sync + 'static,
    ) -> Vec<Result<(), String>> {
        let Some(handle) = self.reactors.get() else {
            return Vec::new();
        };
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        let mut out: Vec<Result<(), String>> = which
            .iter()
            .map(|_| Err("no answer within the timeout".to_string()))
            .collect();
        let mut waiting = 0;
        for (i, &r) in which.iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            match handle.send(r, move |ctx| {
                let _ = tx.send((i, f(ctx)));
            }) {
                Ok(()) => waiting += 1,
                Err(e) => out[i] = Err(format!("cannot reach it: {e:?}")),
            }
        }
        let deadline = Instant::now() + RECONFIGURE_TIMEOUT;
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, r)) => {
                    out[i] = r;
                    waiting -= 1;
                }
                Err(_) => break,
            }
        }
        out
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

    /// Stops allowing `hostnqn` on subsystem `nqn` and disconnects its controllers there
    /// (on every reactor) before returning.
    pub fn remove_host(&self, nqn: &str, hostnqn: &str) -> Result<(), ConfigError> {
        let (sub_id, ()) = self.change_subsystem(nqn, |st| {
            let Some(i) = st.hosts.iter().position(|h| h == hostnqn) else {
                return Err(ConfigError::Invalid {
                    what: format!("subsystem {nqn:?}"),
                    msg: format!("host {hostnqn:?} is not on its list"),
                });
            };
            st.hosts.remove(i);
            Ok((true, ()))
        })?;
        let host = hostnqn.to_string();
        self.wait_on_every_reactor("disconnect the host's controllers", move |pg| {
            pg.disconnect_controllers(sub_id, Some(&host), "its host was removed")
        })
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

    /// Removes a subsystem's listener: the queues of its controllers that came through it are
    /// disconnected, and the transport stops listening there once no subsystem uses it.
    pub fn remove_listener(&self, nqn: &str, addr: &ListenAddress) -> Result<(), ConfigError> {
        let (sub_id, ()) = self.change_subsystem(nqn, |st| {
            let Some(i) = st.listeners.iter().position(|l| l == addr) else {
                return Err(ConfigError::Invalid {
                    what: format!("subsystem {nqn:?}"),
                    msg: format!("it has no listener {addr}"),
                });
            };
            st.listeners.remove(i);
            Ok((true, ()))
        })?;
        // Read after the change: another subsystem on the same address keeps it listening.
        let still_used = self
            .subsystems()
            .iter()
            .any(|s| s.lock().listeners.contains(addr));
        let via = addr.clone();
        self.wait_on_every_reactor("disconnect the listener's queues", move |pg| {
            pg.disconnect_listener(sub_id, &via)
        })?;
        if !still_used {
            self.stop_listening(addr);
        }
        Ok(())
    }

    /// Deletes a subsystem: no new Connect finds it, its controllers are disconnected and its
    /// namespace channels closed on every reactor (I/O in flight drains) before this returns,
    /// and listeners only it used stop.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), ConfigError> {
        let (sub, lonely) = {
            let mut subs = self.subsystems_locked();
            let i = subs
                .iter()
                .position(|s| {
                    s.as_ref()
                        .is_some_and(|s| s.nqn == nqn && !s.is_discovery())
                })
                .ok_or_else(|| no_subsystem(nqn))?;
            let sub = subs[i].take().expect("found above");
            let listeners = sub.listeners();
            let lonely: Vec<ListenAddress> = listeners
                .into_iter()
                .filter(|l| {
                    !subs
                        .iter()
                        .flatten()
                        .any(|s| s.lock().listeners.contains(l))
                })
                .collect();
            self.bump_genctr(&subs);
            (sub, lonely)
        };
        let sub_id = sub.id;
        self.wait_on_every_reactor("tear the subsystem down", move |pg| {
            pg.disconnect_controllers(sub_id, None, "its subsystem was deleted");
            pg.detach_subsystem(sub_id);
        })?;
        for l in &lonely {
            self.stop_listening(l);
        }
        self.broadcast(|pg| pg.discovery_changed());
        log::info!("subsystem {nqn} deleted");
        Ok(())
    }

    /// Every poll group's counters, in reactor order (SPDK's nvmf_get_stats).
    pub fn poll_group_stats(&self) -> Result<Vec<crate::stats::PollGroupStats>, ConfigError> {
        self.gather("read the poll groups' counters", |pg| pg.stats())
    }

    /// The connected queues of subsystem `nqn` on every reactor.
    pub fn qpairs(&self, nqn: &str) -> Result<Vec<crate::stats::QpairInfo>, ConfigError> {
        let sub = self.find_subsystem(nqn).ok_or_else(|| no_subsystem(nqn))?;
        let id = sub.id;
        Ok(self
            .gather("list the queues", move |pg| pg.qpairs(id))?
            .into_iter()
            .flatten()
            .collect())
    }

    /// I/O counts per bdev name, summed over every reactor (SPDK's bdev_get_iostat).
    pub fn io_stats(&self) -> Result<Vec<(String, crate::stats::IoStat)>, ConfigError> {
        let mut sums: Vec<(String, crate::stats::IoStat)> = Vec::new();
        for (name, s) in self
            .gather("read the I/O counters", |pg| pg.io_stats())?
            .into_iter()
            .flatten()
        {
            match sums.iter_mut().find(|(n, _)| *n == name) {
                Some((_, sum)) => sum.add(&s),
                None => sums.push((name, s)),
            }
        }
        Ok(sums)
    }

    /// The controllers of subsystem `nqn`: (cntlid, host NQN, host id).
    pub fn controllers(&self, nqn: &str) -> Result<Vec<(u16, String, [u8; 16])>, ConfigError> {
        let sub = self.find_subsystem(nqn).ok_or_else(|| no_subsystem(nqn))?;
        let st = sub.lock();
        Ok(st
            .controllers
            .values()
            .map(|c| (c.shared.cntlid, c.shared.hostnqn.clone(), c.shared.hostid))
            .collect())
    }

    /// Runs `f` on every poll group and returns its answers in reactor order.
    fn gather<T: Send + 'static>(
        &self,
        what: &str,
        f: impl Fn(&mut PollGroup) -> T + Send + Sync + 'static,
    ) -> Result<Vec<T>, ConfigError> {
        let results = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = results.clone();
        self.wait_on_every_reactor(what, move |pg| {
            let r = (pg.reactor, f(pg));
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(r);
        })?;
        let mut all = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
        all.sort_by_key(|(r, _)| *r);
        Ok(all.into_iter().map(|(_, t)| t).collect())
    }

    /// Runs `f` on every poll group and waits for all; the error says which did not answer.
    fn wait_on_every_reactor(
        &self,
        what: &str,
        f: impl Fn(&mut PollGroup) + Send + Sync + 'static,
    ) -> Result<(), ConfigError> {
        let answers = self.on_every_reactor(move |ctx| {
            with_poll_group(ctx, |pg| f(pg)).ok_or_else(|| "no poll group".to_string())
        });
        let failed: Vec<String> = answers
            .iter()
            .enumerate()
            .filter_map(|(r, a)| a.as_ref().err().map(|e| format!("reactor {r}: {e}")))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                what: what.to_string(),
                msg: failed.join("; "),
            })
        }
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

    fn take_namespace(&self, nqn: &str, nsid: u32) -> Result<(usize, Namespace), ConfigError> {
        let sub = self.find_subsystem(nqn).ok_or_else(|| no_subsystem(nqn))?;
        let ns = sub
            .remove_namespace(nsid)
            .ok_or_else(|| ConfigError::Invalid {
                what: format!("subsystem {nqn:?} namespace {nsid}"),
                msg: "no such namespace".into(),
            })?;
        Ok((sub.id, ns))
    }

    /// As `remove_namespace`, from a control thread: returns once every reactor has closed
    /// its channel and the I/O that was in flight on them has completed (up to
    /// `RECONFIGURE_TIMEOUT`), as SPDK answers after pausing the subsystem; then the
    /// controllers get the Namespace Attribute Changed event.
    pub fn remove_namespace_drained(&self, nqn: &str, nsid: u32) -> Result<(), ConfigError> {
        let (sub_id, ns) = self.take_namespace(nqn, nsid)?;
        if self.reactors.get().is_none() {
            return Ok(());
        }
        self.wait_on_every_reactor("close the namespace's channels", move |pg| {
            pg.detach_namespace(sub_id, nsid)
        })?;
        let deadline = Instant::now() + RECONFIGURE_TIMEOUT;
        loop {
            let bdev = ns.bdev.clone();
            let in_flight: usize = self
                .gather("count the namespace's I/O in flight", move |pg| {
                    pg.draining_io(&bdev)
                })?
                .into_iter()
                .sum();
            if in_flight == 0 {
                break;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "namespace {nsid} of {nqn}: {in_flight} I/O still in flight {} s after its \
                     removal; they complete to their hosts when the device answers",
                    RECONFIGURE_TIMEOUT.as_secs()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.broadcast(move |pg| pg.namespace_changed(sub_id, nsid));
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
