//! Namespaces of a controller as bdevs: `Nvme0n1`, `Nvme0n2`, ... Each reactor has one I/O
//! queue pair per controller, shared by the channels of all its namespaces there
//! (`QueuePairs`), so the I/O path takes no lock and the controller's queue count caps
//! reactors, not reactors x namespaces.
//!
//! Zero copy: a data buffer comes from a buffer pool, and every pool is mapped in the
//! controller's VFIO container (see `dma::registry`), so the PRPs point straight at the
//! buffer the NIC reads from or writes into. A buffer outside any pool cannot be reached by
//! the device and is refused (QEMU would report success for a blocked DMA).

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use bdev::{check_queue_depth, Bdev, BdevChannel, BdevError, BdevInfo, IoType, IoTypes};
use nvme_spec::identify::{oncs, IdentifyController};

use crate::admin::ResetSignal;
use crate::channel::{ChannelConfig, NvmeChannel, NvmeNsChannel, Owner, QueueOwner};
use crate::controller::{identify_text, Controller, ControllerError, IoQueue, NamespaceInfo};
use crate::mmio::{Bar0, Mmio};

pub const PRODUCT_NAME: &str = "NVMe disk";
/// Deepest channel (command ids of one queue pair); deeper bursts wait in the caller's retry
/// queue. With 128 KiB transfers such a queue pair takes 336 KiB.
pub const MAX_CHANNEL_DEPTH: u32 = 1023;
/// Linux's default I/O timeout (nvme_core.io_timeout).
pub const DEFAULT_IO_TIMEOUT_MS: u64 = 30_000;

/// How a controller is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvmeOptions {
    /// I/O queue pairs to ask for: one per reactor (its namespaces share it).
    pub io_queue_pairs: u16,
    /// A command with no completion this long is aborted; one more period, and the controller
    /// is reset. 0: never.
    pub io_timeout_ms: u64,
    /// Largest transfer the channels will be asked for (the transport's max I/O size); with
    /// MDTS it bounds what they accept and sizes their PRP lists.
    pub max_io_bytes: u64,
}

/// A controller opened for serving its namespaces.
pub struct NvmeDevice {
    controller: Arc<SharedController>,
    bdf: String,
    model: String,
    serial: String,
    max_transfer_bytes: Option<u64>,
    namespaces: Vec<Arc<NvmeNamespace>>,
}

impl std::fmt::Debug for NvmeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeDevice")
            .field("bdf", &self.bdf)
            .field("namespaces", &self.namespaces.len())
            .finish()
    }
}

impl NvmeDevice {
    /// Opens the controller at `bdf` with room for `options.io_queue_pairs` channels, and
    /// makes a bdev named `{name}n{nsid}` of each active namespace.
    pub fn open(
        name: &str,
        bdf: &str,
        options: NvmeOptions,
    ) -> Result<NvmeDevice, ControllerError> {
        let controller = Controller::open(bdf, options.io_queue_pairs.max(1))?;
        let id = *controller.identify();
        let model = identify_text(&id.mn);
        let serial = identify_text(&id.sn);
        let max_transfer_bytes = controller.max_transfer_bytes();
        let max_queue_depth =
            (u32::from(controller.max_queue_entries()) - 1).min(MAX_CHANNEL_DEPTH);
        let bdf = controller.bdf().to_string();
        let namespaces_info = controller.namespaces().to_vec();
        let controller = Arc::new(SharedController {
            signal: controller.reset_signal(),
            controller: Mutex::new(controller),
        });
        let namespaces = namespaces_info
            .iter()
            .map(|ns| {
                Arc::new(NvmeNamespace {
                    info: namespace_info(name, &id, ns, max_queue_depth),
                    controller_name: name.to_string(),
                    nsid: ns.nsid,
                    max_transfer_bytes: max_transfer_bytes
                        .unwrap_or(u64::MAX)
                        .min(options.max_io_bytes),
                    io_timeout_ms: options.io_timeout_ms,
                    controller: Arc::clone(&controller),
                })
            })
            .collect();
        Ok(NvmeDevice {
            controller,
            bdf,
            model,
            serial,
            max_transfer_bytes,
            namespaces,
        })
    }

    pub fn bdf(&self) -> &str {
        &self.bdf
    }
    pub fn model(&self) -> &str {
        &self.model
    }
    pub fn serial(&self) -> &str {
        &self.serial
    }
    /// Largest transfer of one command (MDTS); None when the controller sets no limit.
    pub fn max_transfer_bytes(&self) -> Option<u64> {
        self.max_transfer_bytes
    }
    pub fn namespaces(&self) -> &[Arc<NvmeNamespace>] {
        &self.namespaces
    }
    /// I/O queue pairs the controller granted: the reactors that can serve its namespaces.
    pub fn io_queue_pairs_granted(&self) -> u16 {
        self.controller.lock().io_queue_pairs_granted()
    }
}

/// The bdev of namespace `ns` of controller `id` (bdev `{name}n{nsid}`).
fn namespace_info(
    name: &str,
    id: &IdentifyController,
    ns: &NamespaceInfo,
    max_queue_depth: u32,
) -> BdevInfo {
    BdevInfo {
        name: format!("{name}n{}", ns.nsid),
        product_name: PRODUCT_NAME,
        block_size: ns.block_size,
        num_blocks: ns.num_blocks,
        supported: supported_io_types(id.oncs.get(), ns),
        max_queue_depth,
        // VWC bit 0: completed writes may sit in a volatile cache until a
        // Flush or a FUA write. Without it, the target claims no cache.
        volatile_write_cache: id.vwc & 1 != 0,
    }
}

/// What the namespace can do, from the controller's optional command support (ONCS).
/// Deallocation is offered only where deallocated blocks read back as zeroes, since the target
/// tells hosts so (DLFEAT); elsewhere a host's deallocate is a successful no-op (it is advisory).
fn supported_io_types(oncs: u16, ns: &NamespaceInfo) -> IoTypes {
    let mut types = IoTypes::empty()
        .with(IoType::Read)
        .with(IoType::Write)
        .with(IoType::Flush);
    if oncs & oncs::COMPARE != 0 {
        types = types.with(IoType::Compare);
    }
    if oncs & oncs::WRITE_ZEROES != 0 {
        types = types.with(IoType::WriteZeroes);
    }
    if oncs & oncs::DATASET_MANAGEMENT != 0 && ns.deallocate_reads_zeroes {
        types = types.with(IoType::Unmap);
    }
    types
}

/// The controller, shared by its namespaces' channels on every reactor. Control-path code
/// (channel open and close) takes the lock; reactors only `try_lock` it, to advance admin
/// work (aborts, resets) without ever waiting.
struct SharedController {
    controller: Mutex<Controller>,
    signal: Arc<ResetSignal>,
}

impl SharedController {
    fn lock(&self) -> MutexGuard<'_, Controller> {
        // Admin commands leave the controller consistent even if one panicked midway.
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Controller>> {
        match self.controller.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl QueueOwner<Arc<Bar0>> for SharedController {
    fn signal(&self) -> &ResetSignal {
        &self.signal
    }

    fn poll_admin(&self) {
        if let Some(mut controller) = self.try_lock() {
            controller.advance_admin();
        }
    }

    fn abort(&self, qid: u16, cid: u16) -> bool {
        self.try_lock()
            .is_some_and(|mut controller| controller.abort(qid, cid))
    }

    fn delete(&self, queue: IoQueue) {
        self.lock().delete_io_queue(queue);
    }
}

/// One namespace of an [`NvmeDevice`].
pub struct NvmeNamespace {
    info: BdevInfo,
    /// The controller's bdev name prefix (`Nvme0`), for its queue pairs' logs.
    controller_name: String,
    nsid: u32,
    max_transfer_bytes: u64,
    io_timeout_ms: u64,
    controller: Arc<SharedController>,
}

impl std::fmt::Debug for NvmeNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeNamespace")
            .field("name", &self.info.name)
            .field("nsid", &self.nsid)
            .finish()
    }
}

impl NvmeNamespace {
    pub fn nsid(&self) -> u32 {
        self.nsid
    }
}

impl Bdev for NvmeNamespace {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// The calling reactor's channel to this namespace: on the reactor's queue pair to the
    /// controller, created with the first of its namespaces' channels (admin commands:
    /// start-up and namespace attach only) and deleted with the last.
    fn open_channel(&self, queue_depth: u32) -> Result<Box<dyn BdevChannel>, BdevError> {
        let depth = check_queue_depth(&self.info, queue_depth)?;
        let entries = u16::try_from(depth + 1).expect("depth bounded by MAX_CHANNEL_DEPTH");
        let config = ChannelConfig {
            nsid: self.nsid,
            info: self.info.clone(),
            max_transfer_bytes: self.max_transfer_bytes,
            io_timeout_ms: self.io_timeout_ms,
        };
        let create = || {
            let admin: Arc<dyn QueueOwner<Arc<Bar0>>> = self.controller.clone();
            let (queue, gate) = self
                .controller
                .lock()
                .create_io_queue(entries, self.max_transfer_bytes)
                .map_err(|e| BdevError::Device {
                    name: self.info.name.clone(),
                    msg: e.to_string(),
                })?;
            Ok(NvmeChannel::new(
                queue,
                &self.controller_name,
                self.io_timeout_ms,
                Some(Owner { admin, gate }),
            ))
        };
        let key = Arc::as_ptr(&self.controller) as usize;
        let queue = QUEUE_PAIRS.with(|pairs| pairs.borrow_mut().get_or_create(key, create))?;
        Ok(Box::new(NvmeNsChannel::new(queue, config)))
    }
}

thread_local! {
    /// This reactor's queue pairs, by controller.
    static QUEUE_PAIRS: RefCell<QueuePairs<Arc<Bar0>>> = RefCell::new(QueuePairs::default());
}

/// A thread's I/O queue pairs, one per controller (named by the address of its shared
/// state): the channels of a controller's namespaces on this thread share it, and it goes
/// (deleted on the controller) with the last of them.
pub(crate) struct QueuePairs<M: Mmio> {
    pairs: Vec<(usize, Weak<RefCell<NvmeChannel<M>>>)>,
}

impl<M: Mmio> Default for QueuePairs<M> {
    fn default() -> Self {
        QueuePairs { pairs: Vec::new() }
    }
}

impl<M: Mmio> QueuePairs<M> {
    /// Controller `controller`'s queue pair on this thread, made by `create` if it has none.
    pub(crate) fn get_or_create(
        &mut self,
        controller: usize,
        create: impl FnOnce() -> Result<NvmeChannel<M>, BdevError>,
    ) -> Result<Rc<RefCell<NvmeChannel<M>>>, BdevError> {
        self.pairs.retain(|(_, pair)| pair.strong_count() > 0);
        let existing = self
            .pairs
            .iter()
            .find(|(c, _)| *c == controller)
            .and_then(|(_, pair)| pair.upgrade());
        if let Some(pair) = existing {
            return Ok(pair);
        }
        let pair = Rc::new(RefCell::new(create()?));
        self.pairs.push((controller, Rc::downgrade(&pair)));
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controllers_namespaces_share_one_queue_pair_per_thread() {
        use crate::mmio::FakeMmio;
        use crate::queue::{QueueLayout, QueuePair};
        use dma::DmaMemory;
        let fake = FakeMmio::new(0x2000);
        let made = std::cell::Cell::new(0);
        let create = || {
            made.set(made.get() + 1);
            let layout = QueueLayout::new(8, 128 * 1024);
            let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
            let queue = QueuePair::new(1, layout, memory, &fake, 0).unwrap();
            Ok(NvmeChannel::new(queue, "Nvme0", 0, None))
        };
        let mut pairs = QueuePairs::default();
        let ns1 = pairs.get_or_create(1, create).unwrap();
        let ns2 = pairs.get_or_create(1, create).unwrap();
        assert!(Rc::ptr_eq(&ns1, &ns2), "namespaces 1 and 2 share the pair");
        let other = pairs.get_or_create(2, create).unwrap();
        assert!(!Rc::ptr_eq(&ns1, &other), "another controller has its own");
        assert_eq!(made.get(), 2);
        drop((ns1, ns2));
        let again = pairs.get_or_create(1, create).unwrap();
        assert_eq!(made.get(), 3, "the last channel took the pair with it");
        drop((again, other));
        assert!(pairs
            .get_or_create(3, || Err(BdevError::EmptyName))
            .is_err());
        assert!(pairs.pairs.iter().all(|(_, p)| p.strong_count() == 0));
    }

    #[test]
    fn the_bdev_has_a_volatile_cache_exactly_when_the_ssd_says_so() {
        use nvme_spec::FromZeros;
        let ns = NamespaceInfo {
            nsid: 2,
            block_size: 4096,
            num_blocks: 8,
            deallocate_reads_zeroes: true,
        };
        let mut id = IdentifyController::new_zeroed();
        let info = namespace_info("Nvme0", &id, &ns, 31);
        assert_eq!(info.name, "Nvme0n2");
        assert!(
            !info.volatile_write_cache,
            "VWC = 0: no cache to claim or flush"
        );
        id.vwc = 1 | (0b10 << 1);
        assert!(namespace_info("Nvme0", &id, &ns, 31).volatile_write_cache);
        // Flush is always there for a cache to be made durable with.
        assert!(info.supported.contains(IoType::Flush));
    }

    #[test]
    fn optional_commands_follow_oncs_and_dlfeat() {
        let ns = |zeroes| NamespaceInfo {
            nsid: 1,
            block_size: 512,
            num_blocks: 8,
            deallocate_reads_zeroes: zeroes,
        };
        let all = oncs::COMPARE | oncs::WRITE_ZEROES | oncs::DATASET_MANAGEMENT;
        assert_eq!(supported_io_types(all, &ns(true)), IoTypes::all());
        assert!(!supported_io_types(all, &ns(false)).contains(IoType::Unmap));
        let basic = supported_io_types(0, &ns(true));
        for t in [IoType::Read, IoType::Write, IoType::Flush] {
            assert!(basic.contains(t));
        }
        for t in [IoType::Compare, IoType::WriteZeroes, IoType::Unmap] {
            assert!(!basic.contains(t));
        }
    }
}
