//! Namespaces of a controller as bdevs: `Nvme0n1`, `Nvme0n2`, ... Each reactor's channel owns
//! an I/O queue pair of its own, so the I/O path takes no lock.
//!
//! Zero copy: a data buffer comes from a buffer pool, and every pool is mapped in the
//! controller's VFIO container (see `dma::registry`), so the PRPs point straight at the
//! buffer the NIC reads from or writes into. A buffer outside any pool cannot be reached by
//! the device and is refused (QEMU would report success for a blocked DMA).

use std::sync::{Arc, Mutex, MutexGuard};

use bdev::{
    check_queue_depth, validate_io, Bdev, BdevChannel, BdevCompletion, BdevError, BdevInfo, BdevIo,
    CompletionRing, IoStatus, IoType, IoTypes,
};
use dma::DmaBuf;
use nvme_spec::identify::oncs;
use nvme_spec::opcode::io;
use nvme_spec::status::sct;
use nvme_spec::{Sqe, Status};

use crate::controller::{identify_text, Controller, ControllerError, NamespaceInfo};
use crate::mmio::{Bar0, Mmio};
use crate::queue::{QueuePair, SubmitError};

pub const PRODUCT_NAME: &str = "NVMe disk";
/// Deepest channel (command ids of one queue pair). With one PRP list page per command id a
/// queue pair then takes about 4 MiB; deeper bursts wait in the caller's retry queue.
pub const MAX_CHANNEL_DEPTH: u32 = 1023;
/// Most blocks one Read, Write, Compare or Write Zeroes command carries (NLB is 16 bits).
const MAX_BLOCKS_PER_COMMAND: u64 = 1 << 16;

/// A controller opened for serving its namespaces.
pub struct NvmeDevice {
    controller: Arc<Mutex<Controller>>,
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
    /// Opens the controller at `bdf` with room for `io_queue_pairs` channels, and makes a
    /// bdev named `{name}n{nsid}` of each active namespace.
    pub fn open(name: &str, bdf: &str, io_queue_pairs: u16) -> Result<NvmeDevice, ControllerError> {
        let controller = Controller::open(bdf, io_queue_pairs.max(1))?;
        let id = controller.identify();
        let oncs = id.oncs.get();
        let model = identify_text(&id.mn);
        let serial = identify_text(&id.sn);
        let max_transfer_bytes = controller.max_transfer_bytes();
        let max_queue_depth =
            (u32::from(controller.max_queue_entries()) - 1).min(MAX_CHANNEL_DEPTH);
        let bdf = controller.bdf().to_string();
        let namespaces_info = controller.namespaces().to_vec();
        let controller = Arc::new(Mutex::new(controller));
        let namespaces = namespaces_info
            .iter()
            .map(|ns| {
                Arc::new(NvmeNamespace {
                    info: BdevInfo {
                        name: format!("{name}n{}", ns.nsid),
                        product_name: PRODUCT_NAME,
                        block_size: ns.block_size,
                        num_blocks: ns.num_blocks,
                        supported: supported_io_types(oncs, ns),
                        max_queue_depth,
                    },
                    nsid: ns.nsid,
                    max_transfer_bytes: max_transfer_bytes.unwrap_or(u64::MAX),
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
    /// I/O queue pairs the controller granted: the channels that can be open at once.
    pub fn io_queue_pairs_granted(&self) -> u16 {
        lock(&self.controller).io_queue_pairs_granted()
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

fn lock(controller: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    // Admin commands leave the controller consistent even if one panicked midway.
    controller.lock().unwrap_or_else(|p| p.into_inner())
}

/// One namespace of an [`NvmeDevice`].
pub struct NvmeNamespace {
    info: BdevInfo,
    nsid: u32,
    max_transfer_bytes: u64,
    controller: Arc<Mutex<Controller>>,
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

    /// Creates an I/O queue pair on the controller (admin commands: start-up and namespace
    /// attach only). The queue is deleted when the channel is dropped.
    fn open_channel(&self, queue_depth: u32) -> Result<Box<dyn BdevChannel>, BdevError> {
        let depth = check_queue_depth(&self.info, queue_depth)?;
        let entries = u16::try_from(depth + 1).expect("depth bounded by MAX_CHANNEL_DEPTH");
        let queue = lock(&self.controller)
            .create_io_queue(entries)
            .map_err(|e| BdevError::Device {
                name: self.info.name.clone(),
                msg: e.to_string(),
            })?;
        let controller = Arc::clone(&self.controller);
        let give_back: GiveBack<Arc<Bar0>> =
            Box::new(move |queue| lock(&controller).delete_io_queue(queue));
        Ok(Box::new(NvmeChannel::new(
            queue,
            self.nsid,
            self.info.clone(),
            self.max_transfer_bytes,
            Some(give_back),
        )))
    }
}

/// What a channel does with its queue pair when dropped (delete it on the controller).
pub type GiveBack<M> = Box<dyn FnOnce(QueuePair<M>)>;

/// A command on the device: whose it is and the buffer it reads or writes.
struct InFlight {
    tag: u64,
    buf: Option<DmaBuf>,
}

/// One reactor's queue pair to one namespace.
pub struct NvmeChannel<M: Mmio> {
    /// Some until dropped.
    queue: Option<QueuePair<M>>,
    nsid: u32,
    info: BdevInfo,
    max_transfer_bytes: u64,
    /// Indexed by command id; sized at creation.
    in_flight: Vec<Option<InFlight>>,
    /// I/Os refused before reaching the device, delivered by the next poll.
    refused: CompletionRing,
    /// Deletes the queue on the controller when the channel goes (None in tests).
    give_back: Option<GiveBack<M>>,
}

impl<M: Mmio> std::fmt::Debug for NvmeChannel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeChannel")
            .field("bdev", &self.info.name)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl<M: Mmio> NvmeChannel<M> {
    pub fn new(
        queue: QueuePair<M>,
        nsid: u32,
        info: BdevInfo,
        max_transfer_bytes: u64,
        give_back: Option<GiveBack<M>>,
    ) -> NvmeChannel<M> {
        let cids = usize::from(queue.entries() - 1);
        NvmeChannel {
            queue: Some(queue),
            nsid,
            info,
            max_transfer_bytes,
            in_flight: (0..cids).map(|_| None).collect(),
            refused: CompletionRing::new(cids),
            give_back,
        }
    }

    fn queue(&mut self) -> &mut QueuePair<M> {
        self.queue.as_mut().expect("queue present until drop")
    }

    /// Puts the command for `io` on the submission queue; Err(status) when it cannot go.
    fn submit_to_device(&mut self, io: &BdevIo) -> Result<u16, IoStatus> {
        let range = validate_io(&self.info, io)?;
        let mut sqe = Sqe::new(opcode(io.io_type), 0);
        sqe.nsid = self.nsid.into();
        let queue = self.queue.as_mut().expect("queue present until drop");
        match io.io_type {
            IoType::Read | IoType::Write | IoType::Compare => {
                if range.len_bytes > self.max_transfer_bytes
                    || io.num_blocks > MAX_BLOCKS_PER_COMMAND
                {
                    return Err(nvme_status(Status::INVALID_FIELD));
                }
                let buf = io.buf.as_ref().ok_or(IoStatus::InvalidBuffer)?;
                if buf.is_standalone() {
                    return Err(IoStatus::InvalidBuffer);
                }
                set_lba_range(&mut sqe, io.offset_blocks, io.num_blocks);
                let iova = buf.iova() + range.buf_offset as u64;
                queue
                    .submit_with_prps(&sqe, iova, range.len_bytes)
                    .map_err(|e| match e {
                        SubmitError::Full(_) => unreachable!("room checked by the caller"),
                        SubmitError::Prp(_) => IoStatus::InvalidBuffer,
                    })
            }
            IoType::WriteZeroes => {
                if io.num_blocks > MAX_BLOCKS_PER_COMMAND {
                    return Err(nvme_status(Status::INVALID_FIELD));
                }
                set_lba_range(&mut sqe, io.offset_blocks, io.num_blocks);
                Ok(queue.submit(&sqe).expect("room checked by the caller"))
            }
            IoType::Flush => Ok(queue.submit(&sqe).expect("room checked by the caller")),
            IoType::Unmap => {
                let Ok(blocks) = u32::try_from(io.num_blocks) else {
                    return Err(nvme_status(Status::INVALID_FIELD));
                };
                // One range: context attributes 0, length in blocks, starting LBA.
                let mut range = [0u8; 16];
                range[4..8].copy_from_slice(&blocks.to_le_bytes());
                range[8..16].copy_from_slice(&io.offset_blocks.to_le_bytes());
                sqe.cdw10 = 0.into(); // one range (0-based)
                sqe.cdw11 = (1 << 2).into(); // AD: deallocate
                Ok(queue
                    .submit_with_page_data(&sqe, &range)
                    .expect("room checked by the caller"))
            }
        }
    }
}

fn opcode(io_type: IoType) -> u8 {
    match io_type {
        IoType::Read => io::READ,
        IoType::Write => io::WRITE,
        IoType::Compare => io::COMPARE,
        IoType::Flush => io::FLUSH,
        IoType::WriteZeroes => io::WRITE_ZEROES,
        IoType::Unmap => io::DATASET_MANAGEMENT,
    }
}

/// SLBA in CDW10-11, NLB (0-based) in CDW12; `num_blocks` is 1..=65536.
fn set_lba_range(sqe: &mut Sqe, offset_blocks: u64, num_blocks: u64) {
    debug_assert!((1..=MAX_BLOCKS_PER_COMMAND).contains(&num_blocks));
    sqe.cdw10 = (offset_blocks as u32).into();
    sqe.cdw11 = ((offset_blocks >> 32) as u32).into();
    sqe.cdw12 = ((num_blocks - 1) as u32).into();
}

fn nvme_status(status: Status) -> IoStatus {
    IoStatus::Nvme {
        sct: status.sct,
        sc: status.sc,
    }
}

/// The bdev status of a device completion; what the bdev layer has no name for passes through.
fn io_status(status: Status) -> IoStatus {
    if status.is_success() {
        IoStatus::Success
    } else if status == Status::COMPARE_FAILURE {
        IoStatus::Miscompare
    } else if (status.sct, status.sc) == (sct::GENERIC, Status::LBA_OUT_OF_RANGE.sc) {
        IoStatus::OutOfRange
    } else {
        nvme_status(status)
    }
}

impl<M: Mmio> BdevChannel for NvmeChannel<M> {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        // A refused I/O needs a ring slot; one sent to the device needs a command id.
        if self.outstanding() >= self.in_flight.len() {
            return Err(io);
        }
        match self.submit_to_device(&io) {
            Ok(cid) => {
                let slot = &mut self.in_flight[usize::from(cid)];
                debug_assert!(slot.is_none(), "command id {cid} handed out twice");
                *slot = Some(InFlight {
                    tag: io.tag,
                    buf: io.buf,
                });
            }
            Err(status) => {
                if io.buf.as_ref().is_some_and(DmaBuf::is_standalone) {
                    log::error!(
                        "bdev {}: refused an I/O whose buffer is not from a DMA pool; \
                         the device cannot reach it",
                        self.info.name
                    );
                }
                self.refused.push(BdevCompletion {
                    tag: io.tag,
                    status,
                    buf: io.buf,
                })
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.queue().flush();
    }

    fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        let mut done = self.refused.poll(max, on_complete);
        let in_flight = &mut self.in_flight;
        let queue = self.queue.as_mut().expect("queue present until drop");
        done += queue.poll(max - done, |cqe| {
            let command = in_flight[usize::from(cqe.cid())]
                .take()
                .expect("the queue delivers only command ids in flight");
            on_complete(BdevCompletion {
                tag: command.tag,
                status: io_status(cqe.status()),
                buf: command.buf,
            });
        });
        done
    }

    fn outstanding(&self) -> usize {
        let queue = self.queue.as_ref().expect("queue present until drop");
        queue.in_flight() + self.refused.len()
    }
}

impl<M: Mmio> Drop for NvmeChannel<M> {
    fn drop(&mut self) {
        let queue = self.queue.take().expect("dropped once");
        if let Some(give_back) = self.give_back.take() {
            // Deleting the queue first: the controller no longer touches the buffers of
            // commands still in flight, which are freed with `in_flight` after this.
            give_back(queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::FakeMmio;
    use crate::queue::QueueLayout;
    use dma::{BufPool, DmaMemory};
    use nvme_spec::{Cqe, FromZeros, IntoBytes};

    const QID: u16 = 1;
    const SQ_TAIL_DOORBELL: usize = 0x1008;

    /// The controller's side of one queue pair: consumes SQEs up to the doorbell and posts
    /// completions with the status the test chooses.
    struct FakeController {
        sq_head: u16,
        cq_tail: u16,
        phase: bool,
    }

    impl FakeController {
        fn new() -> FakeController {
            FakeController {
                sq_head: 0,
                cq_tail: 0,
                phase: true,
            }
        }

        /// Executes every command the doorbell announced, returning them.
        fn run(
            &mut self,
            ch: &NvmeChannel<&FakeMmio>,
            fake: &FakeMmio,
            status: impl Fn(&Sqe) -> Status,
        ) -> Vec<Sqe> {
            let q = ch.queue.as_ref().unwrap();
            let entries = q.entries();
            let tail = fake.get32(SQ_TAIL_DOORBELL) as u16;
            let mut executed = Vec::new();
            while self.sq_head != tail {
                let mut sqe = Sqe::new_zeroed();
                q.memory()
                    .read_at(usize::from(self.sq_head) * 64, sqe.as_mut_bytes())
                    .unwrap();
                self.sq_head = (self.sq_head + 1) % entries;
                let mut cqe = Cqe::new_zeroed();
                cqe.cid = sqe.cid;
                cqe.sqhd = self.sq_head.into();
                cqe.sqid = QID.into();
                cqe.status = ((status(&sqe).to_field()) | u16::from(self.phase)).into();
                let at = q.layout().cq_offset + usize::from(self.cq_tail) * 16;
                q.memory().write_at(at, cqe.as_bytes()).unwrap();
                self.cq_tail += 1;
                if self.cq_tail == entries {
                    self.cq_tail = 0;
                    self.phase = !self.phase;
                }
                executed.push(sqe);
            }
            executed
        }
    }

    fn info(supported: IoTypes) -> BdevInfo {
        BdevInfo {
            name: "Nvme0n1".into(),
            product_name: PRODUCT_NAME,
            block_size: 512,
            num_blocks: 1 << 40,
            supported,
            max_queue_depth: 7,
        }
    }

    fn channel(fake: &FakeMmio, entries: u16) -> NvmeChannel<&FakeMmio> {
        let layout = QueueLayout::new(entries);
        let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
        let queue = QueuePair::new(QID, entries, memory, fake, 0).unwrap();
        NvmeChannel::new(queue, 3, info(IoTypes::all()), 128 * 1024, None)
    }

    fn poll_all(ch: &mut NvmeChannel<&FakeMmio>) -> Vec<BdevCompletion> {
        let mut out = Vec::new();
        ch.poll(64, &mut |c| out.push(c));
        out
    }

    #[test]
    fn read_goes_to_the_device_with_prps_at_the_pool_buffer() {
        let fake = FakeMmio::new(0x2000);
        let mut ch = channel(&fake, 8);
        let mut dev = FakeController::new();
        let pool = BufPool::with_ordinary_memory(16384, 2).unwrap();
        let buf = pool.get().unwrap();
        let buf_iova = buf.iova();
        let mut io = BdevIo::with_buf(IoType::Read, 0x1_0000_0002, 16, buf, 77);
        io.buf_offset = 512;
        ch.submit(io).unwrap();
        assert!(fake.writes().is_empty(), "no doorbell before flush");
        assert_eq!(ch.outstanding(), 1);
        ch.flush();
        let sqes = dev.run(&ch, &fake, |_| Status::SUCCESS);
        assert_eq!(sqes.len(), 1);
        let sqe = &sqes[0];
        assert_eq!(sqe.opcode, io::READ);
        assert_eq!(sqe.nsid.get(), 3);
        assert_eq!((sqe.cdw10.get(), sqe.cdw11.get()), (2, 1));
        assert_eq!(sqe.cdw12.get(), 15, "NLB is 0-based");
        assert_eq!(sqe.psdt(), 0);
        assert_eq!(
            sqe.dptr.addr.get(),
            buf_iova + 512,
            "zero copy: PRP1 is the buffer"
        );
        let done = poll_all(&mut ch);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].tag, done[0].status), (77, IoStatus::Success));
        assert_eq!(done[0].buf.as_ref().unwrap().iova(), buf_iova);
        assert_eq!(ch.outstanding(), 0);
    }

    #[test]
    fn device_statuses_map_to_bdev_statuses() {
        let fake = FakeMmio::new(0x2000);
        let mut ch = channel(&fake, 8);
        let mut dev = FakeController::new();
        let pool = BufPool::with_ordinary_memory(4096, 3).unwrap();
        for (tag, t) in [(1, IoType::Compare), (2, IoType::Read), (3, IoType::Write)] {
            ch.submit(BdevIo::with_buf(t, 0, 8, pool.get().unwrap(), tag))
                .unwrap();
        }
        ch.flush();
        dev.run(&ch, &fake, |sqe| match sqe.opcode {
            io::COMPARE => Status::COMPARE_FAILURE,
            io::READ => Status::LBA_OUT_OF_RANGE,
            _ => Status::WRITE_FAULT,
        });
        let got: Vec<(u64, IoStatus)> = poll_all(&mut ch)
            .iter()
            .map(|c| (c.tag, c.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, IoStatus::Miscompare),
                (2, IoStatus::OutOfRange),
                (
                    3,
                    IoStatus::Nvme {
                        sct: sct::MEDIA,
                        sc: 0x80
                    }
                ),
            ]
        );
        assert_eq!(pool.available(), 3, "every buffer came back");
    }

    #[test]
    fn commands_without_data_encode_their_ranges() {
        let fake = FakeMmio::new(0x2000);
        let mut ch = channel(&fake, 8);
        let mut dev = FakeController::new();
        ch.submit(BdevIo::without_buf(IoType::WriteZeroes, 100, 65536, 1))
            .unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 2))
            .unwrap();
        // Out of range: refused, delivered by the next poll.
        ch.submit(BdevIo::without_buf(
            IoType::Unmap,
            (1 << 40) - 1,
            300_000,
            3,
        ))
        .unwrap();
        ch.submit(BdevIo::without_buf(IoType::Unmap, 5, 300_000, 4))
            .unwrap();
        ch.flush();
        let sqes = dev.run(&ch, &fake, |_| Status::SUCCESS);
        let ops: Vec<u8> = sqes.iter().map(|s| s.opcode).collect();
        assert_eq!(
            ops,
            vec![io::WRITE_ZEROES, io::FLUSH, io::DATASET_MANAGEMENT]
        );
        assert_eq!((sqes[0].cdw10.get(), sqes[0].cdw12.get()), (100, 65535));
        let dsm = &sqes[2];
        assert_eq!((dsm.cdw10.get(), dsm.cdw11.get()), (0, 1 << 2));
        let q = ch.queue.as_ref().unwrap();
        assert_eq!(dsm.dptr.addr.get(), q.prp_list_iova(dsm.cid()));
        let mut range = [0u8; 16];
        let page = q.layout().prp_lists_offset + usize::from(dsm.cid()) * 4096;
        q.memory().read_at(page, &mut range).unwrap();
        assert_eq!(u32::from_le_bytes(range[4..8].try_into().unwrap()), 300_000);
        assert_eq!(u64::from_le_bytes(range[8..16].try_into().unwrap()), 5);
        let tags: Vec<u64> = poll_all(&mut ch).iter().map(|c| c.tag).collect();
        assert_eq!(
            tags,
            vec![3, 1, 2, 4],
            "the refused one first, then the device's"
        );
    }

    #[test]
    fn bad_ios_are_refused_without_reaching_the_device() {
        let fake = FakeMmio::new(0x2000);
        let mut ch = channel(&fake, 8);
        let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let standalone = DmaBuf::alloc_ordinary(4096).unwrap();
        let invalid_field = nvme_status(Status::INVALID_FIELD);
        let cases = [
            (
                BdevIo::with_buf(IoType::Read, 0, 8, standalone, 1),
                IoStatus::InvalidBuffer,
            ),
            (
                BdevIo::without_buf(IoType::Read, 0, 8, 2),
                IoStatus::InvalidBuffer,
            ),
            (
                BdevIo::with_buf(IoType::Read, 1 << 40, 1, pool.get().unwrap(), 3),
                IoStatus::OutOfRange,
            ),
            (
                BdevIo::without_buf(IoType::WriteZeroes, 0, 65537, 4),
                invalid_field,
            ),
        ];
        let expected: Vec<(u64, IoStatus)> = cases.iter().map(|(io, s)| (io.tag, *s)).collect();
        for (io, _) in cases {
            ch.submit(io).unwrap();
        }
        ch.flush();
        assert!(fake.writes().is_empty(), "nothing reached the device");
        let got: Vec<(u64, IoStatus)> = poll_all(&mut ch)
            .iter()
            .map(|c| (c.tag, c.status))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(ch.outstanding(), 0);

        // Beyond MDTS (128 KiB here).
        let big = BufPool::with_ordinary_memory(256 * 1024, 1).unwrap();
        ch.submit(BdevIo::with_buf(
            IoType::Write,
            0,
            512,
            big.get().unwrap(),
            5,
        ))
        .unwrap();
        let got: Vec<IoStatus> = poll_all(&mut ch).iter().map(|c| c.status).collect();
        assert_eq!(got, vec![invalid_field]);
    }

    #[test]
    fn a_full_channel_gives_the_io_back() {
        let fake = FakeMmio::new(0x2000);
        let mut ch = channel(&fake, 4); // 3 command ids
        let mut dev = FakeController::new();
        for tag in 0..3 {
            ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, tag))
                .unwrap();
        }
        let back = ch
            .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 9))
            .unwrap_err();
        assert_eq!(back.tag, 9);
        // A refused I/O counts too: it holds a ring slot until polled.
        ch.flush();
        dev.run(&ch, &fake, |_| Status::SUCCESS);
        assert_eq!(poll_all(&mut ch).len(), 3);
        ch.submit(BdevIo::without_buf(IoType::Read, 0, 1, 10))
            .unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 11))
            .unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 12))
            .unwrap();
        assert!(ch
            .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 13))
            .is_err());
    }

    #[test]
    fn dropping_the_channel_gives_the_queue_back_before_freeing_buffers() {
        let fake = FakeMmio::new(0x2000);
        let layout = QueueLayout::new(4);
        let memory = DmaMemory::allocate_ordinary(layout.total_bytes).unwrap();
        let queue = QueuePair::new(QID, 4, memory, &fake, 0).unwrap();
        let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let seen = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen_in = seen.clone();
        let pool_in = pool.clone();
        let give_back: GiveBack<&FakeMmio> = Box::new(move |q| {
            seen_in.set(Some((q.in_flight(), pool_in.available())));
        });
        let mut ch = NvmeChannel::new(queue, 1, info(IoTypes::all()), 4096, Some(give_back));
        ch.submit(BdevIo::with_buf(IoType::Read, 0, 8, pool.get().unwrap(), 1))
            .unwrap();
        drop(ch);
        assert_eq!(
            seen.get(),
            Some((1, 0)),
            "queue deleted while the buffer was still held"
        );
        assert_eq!(pool.available(), 1, "then the buffer came back");
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
