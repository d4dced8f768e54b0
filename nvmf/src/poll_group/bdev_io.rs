//! This reactor's channels to the namespaces it serves: opening and closing them, submitting
//! bdev I/O (with a retry queue when a channel is full), reaping completions and ringing
//! doorbells, on busy channels only.

use super::*;

/// This reactor's channel to one namespace.
pub(crate) struct NsChannel {
    pub ns: Namespace,
    pub channel: Box<dyn BdevChannel>,
    pub block_size: u32,
    pub num_blocks: u64,
    /// In `PollGroup::busy_channels`.
    busy_listed: bool,
    /// Operations submitted through this channel (plain counts: only this reactor writes).
    pub stats: crate::stats::IoStat,
}

impl NsChannel {
    fn open(ns: &Namespace) -> Result<NsChannel, ConfigError> {
        let info = ns.bdev.info();
        // A device with shallower queues (NVMe) gets its deepest; the retry queue takes the rest.
        let channel = ns
            .bdev
            .open_channel(BDEV_CHANNEL_DEPTH.min(info.max_queue_depth))
            .map_err(|e| ConfigError::Invalid {
                what: format!("namespace {} (bdev {})", ns.nsid, info.name),
                msg: e.to_string(),
            })?;
        Ok(NsChannel {
            ns: ns.clone(),
            channel,
            block_size: info.block_size,
            num_blocks: info.num_blocks,
            busy_listed: false,
            stats: crate::stats::IoStat::default(),
        })
    }
}

impl NsChannel {
    /// Hands `io` to the device; gives it back when the channel is full. Counted once taken,
    /// so a retried operation counts once.
    fn submit(&mut self, io: BdevIo) -> Option<BdevIo> {
        let (t, bytes) = (io.io_type, io.num_blocks * u64::from(self.block_size));
        let rejected = self.channel.submit(io).err();
        if rejected.is_none() {
            self.stats.count(t, bytes);
        }
        rejected
    }
}

pub(crate) struct SubsystemChannels {
    /// Indexed by NSID - 1.
    pub namespaces: Vec<Option<NsChannel>>,
}

/// A bdev operation waiting for room in its channel.
pub(super) struct RetryIo {
    subsystem: usize,
    nsid: u32,
    io: BdevIo,
}

impl PollGroup {
    // ---- namespaces -----------------------------------------------------

    pub(crate) fn attach_subsystem(&mut self, sub: &Arc<Subsystem>) {
        if self.subsystems.len() <= sub.id {
            self.subsystems.resize_with(sub.id + 1, || None);
        }
        let mut channels = SubsystemChannels {
            namespaces: (0..sub.max_namespaces).map(|_| None).collect(),
        };
        for ns in sub.namespaces() {
            match NsChannel::open(&ns) {
                Ok(ch) => channels.namespaces[ns.nsid as usize - 1] = Some(ch),
                Err(e) => log::error!("reactor {}: {e}", self.reactor),
            }
        }
        self.subsystems[sub.id] = Some(channels);
        // Room for every channel in the busy list: listing never allocates.
        let channels: usize = self
            .subsystems
            .iter()
            .flatten()
            .map(|s| s.namespaces.len())
            .sum();
        self.busy_channels
            .reserve(channels.saturating_sub(self.busy_channels.len()));
    }

    /// Closes every namespace channel of a deleted subsystem (I/O in flight drains).
    pub(crate) fn detach_subsystem(&mut self, sub_id: usize) {
        let nsids: Vec<u32> = match self.subsystems.get(sub_id) {
            Some(Some(sub)) => (1..=sub.namespaces.len() as u32).collect(),
            _ => return,
        };
        for nsid in nsids {
            self.detach_namespace(sub_id, nsid);
        }
        self.subsystems[sub_id] = None;
    }

    /// I/O still in flight on closed channels of `bdev`.
    pub(crate) fn draining_io(&self, bdev: &Arc<dyn bdev::Bdev>) -> usize {
        self.draining
            .iter()
            .filter(|ch| Arc::ptr_eq(&ch.ns.bdev, bdev))
            .map(|ch| ch.channel.outstanding())
            .sum()
    }

    pub(crate) fn attach_namespace(&mut self, sub_id: usize, ns: &Namespace) {
        let Some(Some(sub)) = self.subsystems.get_mut(sub_id) else {
            return;
        };
        match NsChannel::open(ns) {
            Ok(ch) => sub.namespaces[ns.nsid as usize - 1] = Some(ch),
            Err(e) => log::error!("reactor {}: {e}", self.reactor),
        }
    }

    pub(crate) fn detach_namespace(&mut self, sub_id: usize, nsid: u32) {
        let Some(Some(sub)) = self.subsystems.get_mut(sub_id) else {
            return;
        };
        let taken = sub
            .namespaces
            .get_mut(nsid as usize - 1)
            .and_then(|c| c.take());
        self.busy_channels
            .retain(|&(s, n)| (s, n) != (sub_id, nsid));
        if let Some(ch) = &taken {
            self.retired_stats
                .push((ch.ns.bdev.info().name.clone(), ch.stats));
        }
        if let Some(ch) = taken {
            if ch.channel.outstanding() > 0 {
                self.draining.push(ch);
            }
        }
    }

    pub(crate) fn ns_channel(&mut self, sub_id: usize, nsid: u32) -> Option<&mut NsChannel> {
        let idx = (nsid as usize).checked_sub(1)?;
        self.subsystems
            .get_mut(sub_id)?
            .as_mut()?
            .namespaces
            .get_mut(idx)?
            .as_mut()
    }

    // ---- bdev I/O ---------------------------------------------------------

    /// Submits to a namespace's channel, or queues for retry when it is full.
    pub(crate) fn submit_bdev(&mut self, sub_id: usize, nsid: u32, io: BdevIo) {
        if !self.retry.is_empty() {
            // Keep order: nothing overtakes what already waits.
            self.retry.push_back(RetryIo {
                subsystem: sub_id,
                nsid,
                io,
            });
            return;
        }
        let rejected = match self.ns_channel(sub_id, nsid) {
            Some(ch) => ch.submit(io),
            None => {
                let (t, id) = untag(io.tag);
                self.bdev_done(t, id, io.buf, Status::INVALID_NAMESPACE_OR_FORMAT);
                return;
            }
        };
        self.list_busy_channel(sub_id, nsid);
        if let Some(io) = rejected {
            self.retry.push_back(RetryIo {
                subsystem: sub_id,
                nsid,
                io,
            });
        }
    }

    pub(super) fn resubmit(&mut self) -> usize {
        let mut n = 0;
        while let Some(r) = self.retry.pop_front() {
            let rejected = match self.ns_channel(r.subsystem, r.nsid) {
                Some(ch) => ch.submit(r.io),
                None => {
                    let (t, id) = untag(r.io.tag);
                    self.bdev_done(t, id, r.io.buf, Status::INVALID_NAMESPACE_OR_FORMAT);
                    n += 1;
                    continue;
                }
            };
            self.list_busy_channel(r.subsystem, r.nsid);
            if let Some(io) = rejected {
                self.retry.push_front(RetryIo { io, ..r });
                break;
            }
            n += 1;
        }
        n
    }

    pub(super) fn reap_bdev_completions(&mut self) -> usize {
        self.completions.clear();
        let busy = self.busy_channels.len();
        if busy > 0 {
            self.reap_start = (self.reap_start + 1) % busy;
        }
        for k in 0..busy {
            let room = COMPLETION_BATCH - self.completions.len();
            if room == 0 {
                break;
            }
            let (sub, nsid) = self.busy_channels[(self.reap_start + k) % busy];
            let completions = &mut self.completions;
            let Some(ch) = self
                .subsystems
                .get_mut(sub)
                .and_then(|s| s.as_mut())
                .and_then(|s| s.namespaces.get_mut(nsid as usize - 1))
                .and_then(|c| c.as_mut())
            else {
                continue;
            };
            ch.channel.poll(room, &mut |c| completions.push(c));
        }
        let completions = &mut self.completions;
        for ns in self.draining.iter_mut() {
            let room = COMPLETION_BATCH - completions.len();
            ns.channel.poll(room, &mut |c| completions.push(c));
        }
        self.draining.retain(|ns| ns.channel.outstanding() > 0);
        let n = self.completions.len();
        for i in 0..n {
            let c = std::mem::replace(
                &mut self.completions[i],
                BdevCompletion {
                    tag: 0,
                    status: bdev::IoStatus::Success,
                    buf: None,
                },
            );
            let (t, id) = untag(c.tag);
            let status = self.map_io_status(t, id, c.status);
            self.bdev_done(t, id, c.buf, status);
        }
        n
    }

    fn map_io_status(&mut self, t: usize, id: RequestId, s: bdev::IoStatus) -> Status {
        use bdev::IoStatus;
        match s {
            IoStatus::Success => Status::SUCCESS,
            IoStatus::Miscompare => Status::COMPARE_FAILURE,
            IoStatus::OutOfRange => Status::LBA_OUT_OF_RANGE,
            IoStatus::Unsupported => Status::INVALID_OPCODE,
            IoStatus::InvalidBuffer => Status::DATA_SGL_LENGTH_INVALID,
            IoStatus::Nvme { sct, sc, dnr } => Status { sct, sc, dnr },
            IoStatus::IoError => {
                if self.transports[t].request(id).cmd.opcode == nvme_spec::opcode::io::READ {
                    Status::UNRECOVERED_READ_ERROR
                } else {
                    Status::WRITE_FAULT
                }
            }
        }
    }

    /// One bdev operation of a request finished.
    pub(crate) fn bdev_done(
        &mut self,
        t: usize,
        id: RequestId,
        buf: Option<dma::DmaBuf>,
        status: Status,
    ) {
        let req = self.transports[t].request(id);
        if buf.is_some() {
            debug_assert!(req.data.is_none());
            req.data = buf;
        }
        if !status.is_success() && req.ctx.status.is_success() {
            req.ctx.status = status;
        }
        debug_assert!(req.ctx.pending_ops > 0);
        req.ctx.pending_ops -= 1;
        if req.ctx.pending_ops == 0 {
            let status = req.ctx.status;
            self.finish(t, id, status);
        }
    }

    /// Lets devices check command timeouts (NVMe: Abort, then reset), on the keep-alive
    /// period; never per I/O.
    pub(super) fn tick_bdev_channels(&mut self) {
        let now_ms = self
            .now
            .saturating_duration_since(self.clock_origin)
            .as_millis() as u64;
        for sub in self.subsystems.iter_mut().flatten() {
            for ns in sub.namespaces.iter_mut().flatten() {
                ns.channel.on_timer(now_ms);
            }
        }
        for ns in self.draining.iter_mut() {
            ns.channel.on_timer(now_ms);
        }
    }

    /// Bdev I/Os submitted and not yet reaped, on every channel (removed
    /// namespaces' included).
    pub(super) fn bdev_io_outstanding(&self) -> usize {
        self.busy_channels
            .iter()
            .filter_map(|&(sub, nsid)| self.channel_at(sub, nsid))
            .chain(self.draining.iter())
            .map(|ns| ns.channel.outstanding())
            .sum()
    }

    fn channel_at(&self, sub_id: usize, nsid: u32) -> Option<&NsChannel> {
        let idx = (nsid as usize).checked_sub(1)?;
        self.subsystems
            .get(sub_id)?
            .as_ref()?
            .namespaces
            .get(idx)?
            .as_ref()
    }

    /// Channel (`sub_id`, `nsid`) has I/O: polls reap and flush it.
    fn list_busy_channel(&mut self, sub_id: usize, nsid: u32) {
        if let Some(ch) = self.ns_channel(sub_id, nsid) {
            if !ch.busy_listed {
                ch.busy_listed = true;
                self.busy_channels.push((sub_id, nsid));
            }
        }
    }

    /// Rings the doorbells of busy channels; forgets those with nothing left
    /// in flight (a channel detached meanwhile is forgotten too).
    pub(super) fn flush_bdev_channels(&mut self) {
        let mut i = 0;
        while i < self.busy_channels.len() {
            let (sub, nsid) = self.busy_channels[i];
            let still_busy = match self.ns_channel(sub, nsid) {
                Some(ch) => {
                    ch.channel.flush();
                    let busy = ch.channel.outstanding() > 0;
                    ch.busy_listed = busy;
                    busy
                }
                None => false,
            };
            if still_busy {
                i += 1;
            } else {
                self.busy_channels.swap_remove(i);
            }
        }
    }
}
