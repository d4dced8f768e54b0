//! Changes a control thread makes while the target runs, each answered once every reactor
//! has applied it (SPDK pauses the subsystem for the same): transports, hosts, listeners,
//! subsystems and namespaces going, and what the poll groups hold gathered by message.

use super::*;

impl Target {
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

    pub(super) fn take_namespace(
        &self,
        nqn: &str,
        nsid: u32,
    ) -> Result<(usize, Namespace), ConfigError> {
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
}
