//! One NVMe controller behind VFIO: open the device, bring it up, identify it and its
//! namespaces, create I/O queue pairs, and shut it down on drop so the kernel's nvme driver
//! can take it back.
//!
//! Admin commands go through `admin::AdminMachine`: the calls here wait for them (start-up,
//! queue creation and deletion); timeouts, aborts and resets are advanced by the reactors.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::admin::{ADMIN_QUEUE_ENTRIES, ADMIN_TIMEOUT};
pub use crate::error::ControllerError;

use dma::{DmaMapper, DmaMemory, MapperRegistration};
use nvme_spec::identify::{IdentifyController, IdentifyNamespace, IDENTIFY_DATA_LEN};
use nvme_spec::opcode::admin;
use nvme_spec::{Cqe, FromBytes, FromZeros, Sqe};

use crate::admin::{
    contiguous_queue_base, create_io_cq_command, create_io_sq_command, granted_queue_pairs,
    number_of_queues_command, AdminMachine, QueueGate, ResetSignal,
};
use crate::init::{AdminQueues, ControllerInit, InitState, Progress};
use crate::mmio::Bar0;
use crate::queue::{QueueLayout, QueuePair};
use crate::regs::Cap;
use crate::vfio::{self, Container, Device, Group};

/// Namespaces identified at most (one Identify active namespace list page).
pub const MAX_NAMESPACES: usize = 1024;

/// An I/O queue pair of this controller, shared BAR0 included; owned by one reactor.
pub type IoQueue = QueuePair<Arc<Bar0>>;

/// What Identify Namespace told us about one active namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub nsid: u32,
    pub block_size: u32,
    pub num_blocks: u64,
    /// DLFEAT: deallocated blocks read back as zeroes.
    pub deallocate_reads_zeroes: bool,
}

impl NamespaceInfo {
    /// Reads the size and the formatted LBA size out of Identify Namespace data.
    pub fn from_identify(nsid: u32, id: &IdentifyNamespace) -> Result<NamespaceInfo, String> {
        let format = usize::from(id.flbas & 0x0F);
        if format > usize::from(id.nlbaf) {
            return Err(format!(
                "namespace {nsid}: formatted LBA size index {format} beyond its {} formats",
                usize::from(id.nlbaf) + 1
            ));
        }
        let lbads = (id.lbaf[format].get() >> 16) & 0xFF;
        if !(9..=16).contains(&lbads) {
            return Err(format!(
                "namespace {nsid}: block size 2^{lbads} is not supported (512 B to 64 KiB)"
            ));
        }
        Ok(NamespaceInfo {
            nsid,
            block_size: 1 << lbads,
            num_blocks: id.nsze.get(),
            deallocate_reads_zeroes: id.dlfeat & 0x7 == 1,
        })
    }
}

/// Text fields of Identify data: ASCII, space padded.
pub fn identify_text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).trim_end().to_string()
}

/// Identify command encoding (CNS in CDW10).
fn identify_command(cns: u8, nsid: u32) -> Sqe {
    let mut sqe = Sqe::new(admin::IDENTIFY, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = u32::from(cns).into();
    sqe
}

/// The container as the DMA registry sees it: every buffer pool is mapped into it.
struct ContainerMapper {
    bdf: String,
    container: Arc<Container>,
}

impl DmaMapper for ContainerMapper {
    fn describe(&self) -> String {
        format!("NVMe controller {}", self.bdf)
    }
    fn map(&self, iova: u64, len_bytes: u64) -> Result<(), String> {
        self.container
            .map_dma(iova, len_bytes)
            .map_err(|e| e.to_string())
    }
    fn unmap(&self, iova: u64, len_bytes: u64) {
        if let Err(e) = self.container.unmap_dma(iova, len_bytes) {
            log::warn!("{}: {e}", self.bdf);
        }
    }
}

/// Delete I/O Submission Queue or Delete I/O Completion Queue `qid`.
fn delete_io_queue_command(opcode: u8, qid: u16) -> Sqe {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.cdw10 = u32::from(qid).into();
    sqe
}

/// An NVMe controller in use by this process.
pub struct Controller {
    bdf: String,
    // Drop order matters: shut the controller down (Drop), then the queues' memory, then BAR0
    // and the VFIO device, group and container (which unmaps every DMA mapping).
    admin: AdminMachine<Arc<Bar0>>,
    /// One page for Identify data.
    scratch: DmaMemory,
    cap: Cap,
    identify: IdentifyController,
    namespaces: Vec<NamespaceInfo>,
    io_queue_pairs_granted: u16,
    /// Where queue memory is placed; None when the platform does not say.
    numa_node: Option<u32>,
    /// I/O queue ids not in use, lowest last (popped first).
    free_io_qids: Vec<u16>,
    bar: Arc<Bar0>,
    /// Buffer pools stop being mapped here before the container closes.
    _pools_mapped: MapperRegistration,
    device: Device,
    _group: Group,
    container: Arc<Container>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("bdf", &self.bdf)
            .field("namespaces", &self.namespaces)
            .field("io_queue_pairs_granted", &self.io_queue_pairs_granted)
            .finish()
    }
}

impl Controller {
    /// Opens `bdf` (bound to vfio-pci), resets and enables it, identifies it and its active
    /// namespaces, and asks for `io_queue_pairs` I/O queue pairs.
    pub fn open(bdf: &str, io_queue_pairs: u16) -> Result<Controller, ControllerError> {
        assert!(io_queue_pairs >= 1, "at least one I/O queue pair");
        let bdf = vfio::normalize_bdf(bdf)?;
        let group_number = vfio::iommu_group_of(&bdf)?;
        let mut container = Container::open()?;
        let group = container.attach_group(&bdf, group_number)?;
        let device = group.open_device(&bdf)?;
        let container = Arc::new(container);
        let pools_mapped = dma::registry::global()
            .add_mapper(Arc::new(ContainerMapper {
                bdf: bdf.clone(),
                container: container.clone(),
            }))
            .map_err(|source| ControllerError::Memory {
                bdf: bdf.clone(),
                what: "the mappings of the buffer pools",
                source,
            })?;
        device.enable_bus_master()?;
        let bar = Arc::new(device.map_bar0()?);

        let memory = |what, len| {
            DmaMemory::allocate_ordinary(len).map_err(|source| ControllerError::Memory {
                bdf: bdf.clone(),
                what,
                source,
            })
        };
        // Admin commands move one page at most (Identify).
        let layout = QueueLayout::new(ADMIN_QUEUE_ENTRIES, IDENTIFY_DATA_LEN as u64);
        let admin_memory = memory("the admin queues", layout.total_bytes)?;
        container.map_dma_memory(&admin_memory)?;
        let scratch = memory("the Identify buffer", IDENTIFY_DATA_LEN)?;
        container.map_dma_memory(&scratch)?;

        let admin_queues = AdminQueues {
            sq_iova: admin_memory.iova(),
            cq_iova: admin_memory.iova() + layout.cq_offset as u64,
            sq_entries: ADMIN_QUEUE_ENTRIES,
            cq_entries: ADMIN_QUEUE_ENTRIES,
        };
        let init_error = |source| ControllerError::Init {
            bdf: bdf.clone(),
            source,
        };
        let mut init = ControllerInit::new(bar.clone(), admin_queues).map_err(init_error)?;
        init.run_blocking().map_err(init_error)?;
        let cap = init.cap();
        let admin =
            QueuePair::new(0, layout, admin_memory, bar.clone(), cap.dstrd()).map_err(|e| {
                ControllerError::Unsupported {
                    bdf: bdf.clone(),
                    what: e.to_string(),
                }
            })?;

        let numa_node = vfio::numa_node_of(&bdf);
        let admin = AdminMachine::new(&bdf, init, admin_queues, admin);
        let mut ctrl = Controller {
            bdf,
            admin,
            scratch,
            cap,
            identify: IdentifyController::new_zeroed(),
            namespaces: Vec::new(),
            io_queue_pairs_granted: 0,
            numa_node,
            free_io_qids: Vec::new(),
            bar,
            _pools_mapped: pools_mapped,
            device,
            _group: group,
            container,
        };
        ctrl.identify_all()?;
        ctrl.io_queue_pairs_granted = ctrl.request_queue_pairs(io_queue_pairs)?;
        ctrl.free_io_qids = (1..=ctrl.io_queue_pairs_granted).rev().collect();
        Ok(ctrl)
    }

    /// Set Features Number of Queues; returns the pairs granted, at most `wanted`.
    fn request_queue_pairs(&mut self, wanted: u16) -> Result<u16, ControllerError> {
        let dw0 = self
            .admin_command(
                "Set Features (Number of Queues)",
                number_of_queues_command(wanted),
                None,
            )?
            .dw0();
        let granted = granted_queue_pairs(dw0).min(wanted);
        self.admin.set_io_queue_pairs(granted);
        Ok(granted)
    }

    /// The reset sequence the channels of this controller watch.
    pub fn reset_signal(&self) -> Arc<ResetSignal> {
        self.admin.signal().clone()
    }

    /// Reaps admin completions and moves a reset on by one step; never waits.
    pub fn advance_admin(&mut self) {
        self.admin.advance();
    }

    /// Submits an Abort of command `cid` on queue `qid` (answer logged later); false when
    /// it cannot go now.
    pub fn abort(&mut self, qid: u16, cid: u16) -> bool {
        self.admin.abort(qid, cid)
    }

    fn identify_all(&mut self) -> Result<(), ControllerError> {
        self.identify_into_scratch("Identify Controller", identify_command(1, 0))?;
        self.identify = IdentifyController::read_from_bytes(&self.scratch_page())
            .expect("identify data is one page");
        self.identify_into_scratch("Identify Active Namespace List", identify_command(2, 0))?;
        let page = self.scratch_page();
        let nsids: Vec<u32> = page
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .take_while(|&nsid| nsid != 0)
            .take(MAX_NAMESPACES)
            .collect();
        for nsid in nsids {
            self.identify_into_scratch("Identify Namespace", identify_command(0, nsid))?;
            let id = IdentifyNamespace::read_from_bytes(&self.scratch_page())
                .expect("identify data is one page");
            if id.nsze.get() == 0 {
                continue; // allocated but inactive
            }
            let info = NamespaceInfo::from_identify(nsid, &id).map_err(|what| {
                ControllerError::Unsupported {
                    bdf: self.bdf.clone(),
                    what,
                }
            })?;
            self.namespaces.push(info);
        }
        Ok(())
    }

    fn identify_into_scratch(
        &mut self,
        name: &'static str,
        sqe: Sqe,
    ) -> Result<(), ControllerError> {
        let iova = self.scratch.iova();
        self.admin_command(name, sqe, Some((iova, IDENTIFY_DATA_LEN as u64)))
            .map(|_| ())
    }

    fn scratch_page(&self) -> Vec<u8> {
        let mut page = vec![0u8; IDENTIFY_DATA_LEN];
        self.scratch
            .read_at(0, &mut page)
            .expect("the scratch buffer is one page");
        page
    }

    /// Runs one admin command to completion (control path: start-up, queue creation).
    fn admin_command(
        &mut self,
        name: &'static str,
        sqe: Sqe,
        data: Option<(u64, u64)>,
    ) -> Result<Cqe, ControllerError> {
        self.admin.run_command(name, sqe, data)
    }

    /// Creates the next I/O queue pair (completion queue, then submission queue) with
    /// `entries` slots, on memory mapped for the device, for transfers of up to
    /// `max_transfer_bytes` (which sizes the PRP lists). Its register writes go through the
    /// gate returned, which resets watch (see `admin`).
    pub fn create_io_queue(
        &mut self,
        entries: u16,
        max_transfer_bytes: u64,
    ) -> Result<(IoQueue, Arc<QueueGate>), ControllerError> {
        // A reset under way would delete the queue under us: wait for its end.
        let seq = self.admin.settle()?;
        let Some(&qid) = self.free_io_qids.last() else {
            return Err(ControllerError::Unsupported {
                bdf: self.bdf.clone(),
                what: format!(
                    "all {} I/O queue pair(s) the controller granted are in use; each reactor \
                     needs one (use fewer reactors)",
                    self.io_queue_pairs_granted
                ),
            });
        };
        let max_entries = self.max_queue_entries();
        let entries = entries.clamp(2, max_entries);
        let layout = QueueLayout::new(entries, max_transfer_bytes);
        // Near the device: the controller reads SQEs and writes CQEs there all the time.
        let what = format!("{} I/O queue {qid}", self.bdf);
        let memory =
            DmaMemory::allocate_prefer_hugepages(&what, layout.total_bytes, self.numa_node)
                .map_err(|source| ControllerError::Memory {
                    bdf: self.bdf.clone(),
                    what: "an I/O queue pair",
                    source,
                })?;
        self.container.map_dma_memory(&memory)?;
        let queue = QueuePair::new(qid, layout, memory, self.bar.clone(), self.cap.dstrd())
            .expect("memory sized and aligned by QueueLayout");
        match self.create_queue_on_controller(&queue) {
            Ok(_) => {
                self.free_io_qids.pop();
                let gate = self.admin.register_queue(&queue, seq);
                Ok((queue, gate))
            }
            Err(e @ ControllerError::AdminTimeout { .. }) => {
                // The controller may yet act on the command: never free memory under it.
                std::mem::forget(queue);
                Err(e)
            }
            Err(e) => {
                self.unmap_queue_memory(&queue);
                Err(e)
            }
        }
    }

    /// Create I/O Completion Queue, then Create I/O Submission Queue, for `queue`.
    fn create_queue_on_controller(&mut self, queue: &IoQueue) -> Result<(), ControllerError> {
        let (qid, entries) = (queue.qid(), queue.entries());
        // Physically contiguous queues (PC = 1): PRP1 alone gives the base, whatever the size.
        let mut cq = create_io_cq_command(qid, entries);
        contiguous_queue_base(queue.cq_iova()).apply(&mut cq);
        let mut sq = create_io_sq_command(qid, entries);
        contiguous_queue_base(queue.sq_iova()).apply(&mut sq);
        self.admin_command("Create I/O Completion Queue", cq, None)?;
        self.admin_command("Create I/O Submission Queue", sq, None)
            .inspect_err(|_| {
                self.delete_queue_half(admin::DELETE_IO_CQ, qid);
            })?;
        Ok(())
    }

    fn unmap_queue_memory(&self, queue: &IoQueue) {
        let (iova, len) = (queue.sq_iova(), queue.memory().len() as u64);
        if let Err(e) = self.container.unmap_dma(iova, len) {
            log::warn!("{}: {e}", self.bdf);
        }
    }

    /// Deletes an I/O queue pair (SQ first: the controller aborts what it still holds), then
    /// unmaps and frees its memory and makes its id reusable. Completions still in the CQ are
    /// dropped with it; their buffers belong to the caller.
    pub fn delete_io_queue(&mut self, queue: IoQueue) {
        let qid = queue.qid();
        assert!(
            qid >= 1 && qid <= self.io_queue_pairs_granted && !self.free_io_qids.contains(&qid),
            "queue {qid} is not an I/O queue of this controller in use"
        );
        if let Err(e) = self.admin.settle() {
            log::error!("{e}");
        }
        self.admin.unregister_queue(qid);
        let sq_deleted = self.delete_queue_half(admin::DELETE_IO_SQ, qid);
        let cq_deleted = sq_deleted && self.delete_queue_half(admin::DELETE_IO_CQ, qid);
        if !cq_deleted {
            // The controller may still write into the queue's memory: keep it pinned and
            // mapped for the life of the process rather than free it under the device.
            log::error!(
                "{}: I/O queue {qid} could not be deleted; its memory stays allocated",
                self.bdf
            );
            std::mem::forget(queue);
            return;
        }
        self.unmap_queue_memory(&queue);
        drop(queue);
        self.free_io_qids.push(qid);
        // Lowest id first next time.
        self.free_io_qids.sort_unstable_by(|a, b| b.cmp(a));
    }

    fn delete_queue_half(&mut self, opcode: u8, qid: u16) -> bool {
        let name = if opcode == admin::DELETE_IO_SQ {
            "Delete I/O Submission Queue"
        } else {
            "Delete I/O Completion Queue"
        };
        match self.admin_command(name, delete_io_queue_command(opcode, qid), None) {
            Ok(_) => true,
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    /// Entries of the largest I/O queue this driver creates on this controller.
    pub fn max_queue_entries(&self) -> u16 {
        self.cap
            .max_queue_entries()
            .min(u32::from(crate::queue::MAX_QUEUE_ENTRIES)) as u16
    }

    /// Maps more memory (data buffers) for the controller's DMA, IOVA = virtual address.
    pub fn map_dma(&self, memory: &DmaMemory) -> Result<(), ControllerError> {
        Ok(self.container.map_dma_memory(memory)?)
    }

    pub fn bdf(&self) -> &str {
        &self.bdf
    }
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }
    pub fn namespaces(&self) -> &[NamespaceInfo] {
        &self.namespaces
    }
    pub fn io_queue_pairs_granted(&self) -> u16 {
        self.io_queue_pairs_granted
    }
    /// Largest transfer in bytes (MDTS), None when unlimited.
    pub fn max_transfer_bytes(&self) -> Option<u64> {
        match self.identify.mdts {
            0 => None,
            mdts => Some(self.cap.min_page_bytes() << mdts),
        }
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl Drop for Controller {
    /// Normal shutdown (CC.SHN), so the data is safe and the kernel's driver finds the
    /// controller in a clean state. Bounded by the state machine's shutdown timeout.
    fn drop(&mut self) {
        let init = self.admin.init();
        if init.state() != InitState::Ready {
            return;
        }
        let start = Instant::now();
        init.begin_shutdown(0);
        loop {
            match init.poll(start.elapsed().as_millis() as u64) {
                Ok(Progress::Done) => {
                    log::info!("{}: controller shut down", self.bdf);
                    return;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    log::warn!("{}: shutdown: {e}", self.bdf);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::IntoBytes;

    #[test]
    fn identify_commands_carry_cns_and_nsid() {
        let id = identify_command(2, 0);
        assert_eq!((id.opcode, id.cdw10.get(), id.nsid.get()), (0x06, 2, 0));
    }

    #[test]
    fn namespace_geometry_comes_from_the_formatted_lba_size() {
        let mut id = IdentifyNamespace::new_zeroed();
        id.nsze = 2048.into();
        id.nlbaf = 1;
        id.flbas = 1;
        id.lbaf[0] = (9 << 16).into();
        id.lbaf[1] = (12 << 16).into();
        assert_eq!(
            NamespaceInfo::from_identify(1, &id).unwrap(),
            NamespaceInfo {
                nsid: 1,
                block_size: 4096,
                num_blocks: 2048,
                deallocate_reads_zeroes: false,
            }
        );
        id.dlfeat = 0x9;
        assert!(
            NamespaceInfo::from_identify(1, &id)
                .unwrap()
                .deallocate_reads_zeroes
        );
        id.flbas = 2;
        assert!(NamespaceInfo::from_identify(1, &id)
            .unwrap_err()
            .contains("beyond its 2 formats"));
        id.flbas = 0;
        id.lbaf[0] = (8 << 16).into();
        assert!(NamespaceInfo::from_identify(1, &id)
            .unwrap_err()
            .contains("not supported"));
        assert_eq!(id.as_bytes().len(), IDENTIFY_DATA_LEN);
    }

    #[test]
    fn identify_text_drops_padding() {
        assert_eq!(identify_text(b"QEMU NVMe Ctrl   "), "QEMU NVMe Ctrl");
    }
}
