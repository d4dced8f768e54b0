//! A poll group's devices: per device one PD, one CQ shared by its queues,
//! one MR over the data-buffer pool and, with `srq`, one shared receive queue.

use std::ops::{Index, IndexMut};
use std::sync::Mutex;

use rdma_sys as sys;

use super::queue::srq_wr_id;
use super::recv_ring::RegisteredRing;
use super::{RdmaPollGroup, CQ_ENTRIES};
use crate::verbs::{CompletionQueue, Connection, DeviceKey, DeviceLimits, Verbs};

pub(super) struct Device<V: Verbs> {
    /// Which open device context this is (see `Notice::DeviceRemoved`).
    ///
    /// Known limit: librdmacm closes a removed device's context once no CM id
    /// is bound to it, on the acceptor's next device-list refresh, which may
    /// come before this poll group has dropped the PD, CQ, SRQ and MRs below;
    /// those destructors would then use a closed context.
    pub(super) ctx: DeviceKey,
    pub(super) name: String,
    pub(super) limits: DeviceLimits,
    /// Being removed: no new queues; released once its last queue is gone.
    pub(super) removed: bool,
    /// Entries of `cq`: the budget its queues (and its SRQ) share.
    pub(super) cq_entries: u32,
    pub(super) cqe_used: u32,
    /// Whether the last QP created took its responses inline (for the log).
    pub(super) responses_inline: Option<bool>,
    /// Responses may invalidate the host's key (see `send_with_invalidate`).
    pub(super) send_with_invalidate: bool,
    /// SGEs per RDMA READ or WRITE (see `sge_per_wr`).
    pub(super) sge_per_wr: u16,
    // Drop order: SRQ, MR, CQ, then PD.
    pub(super) srq: Option<DeviceSrq<V>>,
    pub(super) pool_mr: V::Mr,
    pub(super) cq: V::Cq,
    pub(super) pd: V::Pd,
}

/// Devices by index. A released device leaves its slot empty, so the device
/// indices held by queues and encoded in SRQ wr_ids never change meaning.
pub(super) struct Devices<V: Verbs>(pub(super) Vec<Option<Device<V>>>);

impl<V: Verbs> Devices<V> {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn get_mut(&mut self, d: usize) -> Option<&mut Device<V>> {
        self.0.get_mut(d).and_then(Option::as_mut)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Device<V>)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(d, dev)| dev.as_ref().map(|dev| (d, dev)))
    }

    /// Adds a device; returns its index.
    pub(super) fn push(&mut self, dev: Device<V>) -> usize {
        self.0.push(Some(dev));
        self.0.len() - 1
    }

    pub(super) fn release(&mut self, d: usize) -> Option<Device<V>> {
        self.0.get_mut(d).and_then(Option::take)
    }
}

impl<V: Verbs> Index<usize> for Devices<V> {
    type Output = Device<V>;
    fn index(&self, d: usize) -> &Device<V> {
        self.0[d]
            .as_ref()
            .expect("a queue's device is never released")
    }
}

impl<V: Verbs> IndexMut<usize> for Devices<V> {
    fn index_mut(&mut self, d: usize) -> &mut Device<V> {
        self.0[d]
            .as_mut()
            .expect("a queue's device is never released")
    }
}

/// A device's shared receive queue and the receives posted on it.
pub(super) struct DeviceSrq<V: Verbs> {
    // Drop order: the SRQ before the memory of its receives.
    pub(super) srq: V::Srq,
    pub(super) recvs: RegisteredRing<V>,
    /// A failed post was logged (said once until posting works again).
    pub(super) post_failed: bool,
}

/// Queue index by qp_num: a sorted Vec searched by bisection, so a lookup
/// (one per SRQ receive) neither allocates nor hashes. Changed only when a
/// queue is adopted or destroyed.
pub(super) struct QpNumMap(Vec<(u32, u16)>);

impl QpNumMap {
    pub(super) fn with_capacity(n: usize) -> QpNumMap {
        QpNumMap(Vec::with_capacity(n))
    }

    /// Maps `qp_num` to `queue`. A live QP's number is unique, so an entry
    /// already there can only be a stale one of a queue that is gone.
    pub(super) fn insert(&mut self, qp_num: u32, queue: u16) {
        match self.0.binary_search_by_key(&qp_num, |e| e.0) {
            Ok(i) => self.0[i].1 = queue,
            Err(at) => self.0.insert(at, (qp_num, queue)),
        }
    }

    pub(super) fn remove(&mut self, qp_num: u32) {
        if let Ok(i) = self.0.binary_search_by_key(&qp_num, |e| e.0) {
            self.0.remove(i);
        }
    }

    pub(super) fn get(&self, qp_num: u32) -> Option<u16> {
        self.0
            .binary_search_by_key(&qp_num, |e| e.0)
            .ok()
            .map(|i| self.0[i].1)
    }
}

/// The depth of a device's SRQ, with a note when it was capped; or why the
/// device cannot have one (its queues then post their own receives).
/// `recv_sge`: SGEs a receive needs. Half the CQ is left for send completions.
pub(super) fn srq_depth_for(
    wanted_depth: u32,
    recv_sge: u32,
    limits: &DeviceLimits,
) -> Result<(u32, Option<String>), String> {
    if limits.max_srq == 0 || limits.max_srq_wr == 0 {
        return Err("the device has no shared receive queues".into());
    }
    if limits.max_srq_sge < recv_sge {
        return Err(format!(
            "its shared receive queues take {} SGE(s) per receive; in-capsule data needs {recv_sge}",
            limits.max_srq_sge
        ));
    }
    let cap = limits.max_srq_wr.min(limits.max_cqe / 2);
    if cap == 0 {
        return Err(format!(
            "its completion queues are too small ({} entries)",
            limits.max_cqe
        ));
    }
    if wanted_depth <= cap {
        return Ok((wanted_depth, None));
    }
    Ok((
        cap,
        Some(format!(
            "srq_depth {wanted_depth} capped to {cap} (max_srq_wr {}, half of max_cqe {})",
            limits.max_srq_wr, limits.max_cqe
        )),
    ))
}

/// rxe's vendor ids: 0xFFFFFF today, 0 in older kernels (SPDK checks both).
pub(super) const RXE_VENDOR_IDS: [u32; 2] = [0xFF_FFFF, 0];

/// Soft-RoCE (rxe), known by its device name or its vendor id.
fn is_soft_roce(device_name: &str, vendor_id: u32) -> bool {
    device_name.starts_with("rxe") || RXE_VENDOR_IDS.contains(&vendor_id)
}

/// SGEs one RDMA READ or WRITE of a chained buffer carries at most.
const MAX_SGE_PER_WR: u32 = 16;

/// SGEs per RDMA READ or WRITE on a device: up to 16 (16 units of 8 KiB cover
/// 128 KiB in one work request), within the device's limit. On Soft-RoCE, 1:
/// its send queue elements grow with the QP's SGE limit and are handled in
/// software per post (16 cost 13% of 4 KiB IOPS in the test bed), while more
/// work requests per large transfer cost it next to nothing, as it cuts every
/// transfer into MTU-sized packets anyway.
pub(super) fn sge_per_wr(device_name: &str, vendor_id: u32, max_sge: u32) -> u16 {
    if is_soft_roce(device_name, vendor_id) {
        return 1;
    }
    max_sge.clamp(1, MAX_SGE_PER_WR) as u16
}

/// Whether a device may send responses with IBV_WR_SEND_WITH_INV, or why not.
/// Soft-RoCE (rxe) advertises the memory management extensions but
/// misreports send-with-invalidate, so it is never used there (as in SPDK).
pub(super) fn send_with_invalidate(
    device_name: &str,
    vendor_id: u32,
    device_cap_flags: u32,
) -> Result<(), &'static str> {
    if is_soft_roce(device_name, vendor_id) {
        return Err("Soft-RoCE (rxe) misreports support for it");
    }
    if device_cap_flags & sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS == 0 {
        return Err("the device has no memory management extensions");
    }
    Ok(())
}

/// Runs `log` the first time it is called for `device_name` in this process
/// (every reactor sets each device up; one line says it).
pub(super) fn log_once_per_device(device_name: &str, log: impl FnOnce()) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.iter().any(|n| n == device_name) {
        said.push(device_name.to_string());
        log();
    }
}

impl<V: Verbs> RdmaPollGroup<V> {
    /// A device is going away: close its queues; it is released (see
    /// `release_removed_devices`) once they are gone.
    pub(super) fn device_removed(&mut self, ctx: DeviceKey) {
        let Some(d) = self
            .devices
            .iter()
            .find(|(_, dev)| dev.ctx == ctx && !dev.removed)
            .map(|(d, _)| d)
        else {
            return;
        };
        log::warn!(
            "reactor {}: RDMA device {} is being removed; closing its queues",
            self.reactor,
            self.devices[d].name
        );
        self.devices[d].removed = true;
        for qi in 0..self.queues.len() {
            if self.queues[qi].as_ref().is_some_and(|q| q.device == d) {
                self.kill(qi as u16);
            }
        }
    }

    /// Drops removed devices with no queue left (SRQ, MRs, CQ, PD), so the
    /// kernel can finish removing them.
    pub(super) fn release_removed_devices(&mut self) {
        for d in 0..self.devices.len() {
            let removed = self.devices.get_mut(d).is_some_and(|dev| dev.removed);
            if !removed || self.queues.iter().flatten().any(|q| q.device == d) {
                continue;
            }
            if let Some(dev) = self.devices.release(d) {
                self.wakeups.remove(dev.cq.event_fd());
                log::info!(
                    "reactor {}: RDMA device {} released",
                    self.reactor,
                    dev.name
                );
            }
        }
    }

    pub(super) fn device_for(&mut self, conn: &V::Conn) -> Result<usize, String> {
        let Some(ctx) = conn.device_key() else {
            return Err("connection has no RDMA device".into());
        };
        if let Some((i, _)) = self.devices.iter().find(|(_, dev)| dev.ctx == ctx) {
            if self.devices[i].removed {
                return Err(format!(
                    "{}: the device is being removed",
                    self.devices[i].name
                ));
            }
            return Ok(i);
        }
        let d = self.devices.len();
        let name = conn.device_name();
        let limits = conn
            .query_device()
            .map_err(|e| format!("{name}: query device: {e}"))?;
        let icd_bytes = self.options.in_capsule_data_bytes;
        let recv_sge = if icd_bytes > 0 { 2 } else { 1 };
        let srq_depth = if self.options.srq {
            match srq_depth_for(self.options.srq_depth, recv_sge, &limits) {
                Ok((depth, note)) => {
                    if let Some(note) = note {
                        log::info!("reactor {}: RDMA device {name}: {note}", self.reactor);
                    }
                    Some(depth)
                }
                Err(why) => {
                    log::warn!(
                        "reactor {}: RDMA device {name}: srq = true but {why}; \
                         its queues post their own receives",
                        self.reactor
                    );
                    None
                }
            }
        } else {
            None
        };
        let pd = V::alloc_pd(conn).map_err(|e| format!("{name}: allocate PD: {e}"))?;
        // SRQ receive completions land in the CQ too: room for all of them.
        let cq_entries = (CQ_ENTRIES + srq_depth.unwrap_or(0)).min(limits.max_cqe);
        let cq = V::create_cq(conn, cq_entries).map_err(|e| format!("{name}: create CQ: {e}"))?;
        self.wakeups
            .add(cq.event_fd(), d as u64)
            .map_err(|e| format!("{name}: watch the CQ's completion channel: {e}"))?;
        let mem = self.pool.memory();
        // One MR over the whole pool, however many hugepages it spans.
        let pool_mr = V::register(&pd, mem.as_ptr(), mem.len())
            .map_err(|e| format!("{name}: register data buffers: {e}"))?;
        let srq = match srq_depth {
            Some(depth) => match self.create_srq(&pd, d, depth, recv_sge) {
                Ok(srq) => Some(srq),
                Err(e) => {
                    log::warn!(
                        "reactor {}: RDMA device {name}: cannot set up its shared receive \
                         queue ({e}); its queues post their own receives",
                        self.reactor
                    );
                    None
                }
            },
            None => None,
        };
        log::info!(
            "reactor {}: RDMA device {name} ready (max_qp_wr {}, max_cqe {}, {})",
            self.reactor,
            limits.max_qp_wr,
            limits.max_cqe,
            match &srq {
                Some(s) => format!("shared receive queue of {} receives", s.recvs.ring.len()),
                None => "receives per queue".to_string(),
            }
        );
        let send_with_invalidate =
            send_with_invalidate(&name, limits.vendor_id, limits.device_cap_flags);
        if let Err(why) = send_with_invalidate {
            log_once_per_device(&name, || {
                log::info!(
                    "RDMA device {name}: send-with-invalidate disabled: {why}; \
                     hosts invalidate their keys themselves"
                )
            });
        }
        let sge_per_wr = sge_per_wr(&name, limits.vendor_id, limits.max_sge);
        let at = self.devices.push(Device {
            ctx,
            name,
            limits,
            cq_entries,
            // The SRQ's receives may all complete at once.
            cqe_used: srq.as_ref().map_or(0, |s| s.recvs.ring.len() as u32),
            removed: false,
            responses_inline: None,
            send_with_invalidate: send_with_invalidate.is_ok(),
            sge_per_wr,
            srq,
            pool_mr,
            cq,
            pd,
        });
        assert_eq!(at, d, "SRQ wr_ids were built with this device index");
        Ok(d)
    }

    /// The SRQ of device `d` with `depth` receives, all posted.
    pub(super) fn create_srq(
        &self,
        pd: &V::Pd,
        d: usize,
        depth: u32,
        recv_sge: u32,
    ) -> Result<DeviceSrq<V>, String> {
        let device = u16::try_from(d).map_err(|_| "too many RDMA devices".to_string())?;
        let srq = V::create_srq(pd, depth, recv_sge).map_err(|e| format!("create SRQ: {e}"))?;
        let mut recvs = RegisteredRing::new(
            pd,
            depth,
            self.options.in_capsule_data_bytes,
            // Exactly one per receive: a receive whose buffer is lent waits
            // for it to come back, so requests cannot drain the memory.
            depth as usize,
            |i| srq_wr_id(device, i),
        )?;
        recvs
            .ring
            // SAFETY: see `RecvRing::post`: the WRs live in the ring's boxed
            // table, naming its command slots and ICD buffers, registered on
            // `pd` (the SRQ's) by `recvs`, which outlives the SRQ in DeviceSrq.
            .post(|wrs| unsafe { V::post_srq_recv(&srq, wrs) })
            .map_err(|e| format!("post receives: {e}"))?;
        Ok(DeviceSrq {
            srq,
            recvs,
            post_failed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_roce_takes_one_sge_per_work_request_others_up_to_16() {
        assert_eq!(sge_per_wr("mlx5_0", 0x02c9, 30), 16);
        assert_eq!(sge_per_wr("mlx4_0", 0x02c9, 4), 4, "the device's limit");
        assert_eq!(sge_per_wr("odd0", 0x1234, 0), 1);
        assert_eq!(sge_per_wr("rxe0", 0xFF_FFFF, 32), 1);
        assert_eq!(sge_per_wr("roce0", 0, 32), 1, "a renamed rxe, by vendor id");
    }

    #[test]
    fn send_with_invalidate_is_off_on_rxe_and_without_extensions() {
        use sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS as MGT;
        assert_eq!(send_with_invalidate("mlx5_0", 0x02c9, MGT), Ok(()));
        assert!(send_with_invalidate("rxe0", 0xFF_FFFF, MGT).is_err());
        assert!(
            send_with_invalidate("rxe_eth1", 0x02c9, MGT).is_err(),
            "by name"
        );
        assert!(
            send_with_invalidate("roce0", 0xFF_FFFF, MGT).is_err(),
            "a renamed rxe, by vendor id"
        );
        assert!(
            send_with_invalidate("old", 0, MGT).is_err(),
            "old rxe vendor id"
        );
        assert_eq!(
            send_with_invalidate("mlx4_0", 0x02c9, 0),
            Err("the device has no memory management extensions")
        );
    }

    fn limits(max_srq: u32, max_srq_wr: u32, max_srq_sge: u32, max_cqe: u32) -> DeviceLimits {
        DeviceLimits {
            vendor_id: 0x02c9,
            device_cap_flags: 0,
            max_qp_wr: 16384,
            max_cqe,
            max_qp_rd_atom: 16,
            max_qp_init_rd_atom: 16,
            max_srq,
            max_srq_wr,
            max_srq_sge,
            max_sge: 16,
        }
    }

    #[test]
    fn srq_depth_is_capped_by_the_device_or_refused() {
        assert_eq!(
            srq_depth_for(4096, 2, &limits(1024, 1 << 20, 32, 32767)),
            Ok((4096, None))
        );
        let (depth, note) = srq_depth_for(4096, 2, &limits(1024, 1024, 32, 32767)).unwrap();
        assert_eq!(depth, 1024);
        assert!(note.unwrap().contains("capped to 1024 (max_srq_wr 1024"));
        // Half the CQ stays for send completions.
        assert_eq!(
            srq_depth_for(4096, 2, &limits(1024, 1 << 20, 32, 4096))
                .unwrap()
                .0,
            2048
        );
        assert_eq!(
            srq_depth_for(4096, 2, &limits(0, 0, 0, 32767)),
            Err("the device has no shared receive queues".into())
        );
        let e = srq_depth_for(4096, 2, &limits(64, 4096, 1, 32767)).unwrap_err();
        assert!(e.contains("in-capsule data needs 2"), "{e}");
        assert!(srq_depth_for(4096, 1, &limits(64, 4096, 1, 32767)).is_ok());
    }

    #[test]
    fn qp_num_map_finds_queues_and_forgets_them() {
        let mut m = QpNumMap::with_capacity(4);
        for (qp, q) in [(900, 0), (17, 1), (4000, 2)] {
            m.insert(qp, q);
        }
        assert_eq!(
            (m.get(17), m.get(900), m.get(4000)),
            (Some(1), Some(0), Some(2))
        );
        assert_eq!(m.get(18), None);
        m.remove(900);
        assert_eq!(m.get(900), None);
        m.insert(17, 5); // a stale entry is replaced
        assert_eq!(m.get(17), Some(5));
        assert_eq!(m.0.len(), 2);
    }
}
