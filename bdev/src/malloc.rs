//! RAM disk on DMA memory (hugepages when free). Shared by every reactor's channel; data is
//! copied in and out like a device would DMA it, so overlapping I/O from two reactors leaves
//! unspecified bytes, exactly as on a real disk.

use std::sync::Arc;

use dma::{DmaError, DmaMemory};

use crate::{
    check_geometry, check_queue_depth, validate_io, Bdev, BdevChannel, BdevCompletion, BdevError,
    BdevInfo, BdevIo, CompletionRing, IoStatus, IoType, IoTypes, RAM_MAX_QUEUE_DEPTH,
};

/// A RAM disk of `num_blocks` blocks of `block_size` (512 or 4096) bytes, zeroed, on 2 MiB
/// hugepages when enough are free (on `numa_node` when given), otherwise on ordinary memory.
/// Supports every I/O type; Unmap and WriteZeroes zero the range.
pub fn create_malloc(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    numa_node: Option<u32>,
) -> Result<Arc<dyn Bdev>, BdevError> {
    let size_bytes = check_geometry(name, num_blocks, block_size)?;
    let allocation_error = |source: DmaError| BdevError::Allocation {
        name: name.to_owned(),
        size_bytes,
        source,
    };
    let len = usize::try_from(size_bytes).map_err(|_| BdevError::SizeOverflow {
        name: name.to_owned(),
        num_blocks,
        block_size,
    })?;
    // Fresh anonymous and hugetlb pages come zeroed from the kernel: no clearing pass needed.
    let memory =
        DmaMemory::allocate_prefer_hugepages(name, len, numa_node).map_err(allocation_error)?;
    assert!(memory.len() >= len, "region smaller than the disk");
    let disk = Arc::new(MallocDisk {
        info: BdevInfo {
            name: name.to_owned(),
            product_name: "Malloc disk",
            block_size,
            num_blocks,
            supported: IoTypes::all(),
            volatile_write_cache: false,
            max_queue_depth: RAM_MAX_QUEUE_DEPTH,
        },
        memory,
    });
    Ok(Arc::new(MallocBdev { disk }))
}

#[derive(Debug)]
struct MallocDisk {
    info: BdevInfo,
    memory: DmaMemory,
}

#[derive(Debug)]
struct MallocBdev {
    disk: Arc<MallocDisk>,
}

impl Bdev for MallocBdev {
    fn info(&self) -> &BdevInfo {
        &self.disk.info
    }

    fn open_channel(&self, queue_depth: u32) -> Result<Box<dyn BdevChannel>, BdevError> {
        let depth = check_queue_depth(&self.disk.info, queue_depth)?;
        Ok(Box::new(MallocChannel {
            disk: Arc::clone(&self.disk),
            ring: CompletionRing::new(depth),
        }))
    }
}

struct MallocChannel {
    /// Keeps the storage alive even if the bdev itself is dropped first.
    disk: Arc<MallocDisk>,
    ring: CompletionRing,
}

impl MallocChannel {
    fn execute(&self, io: &mut BdevIo) -> IoStatus {
        let range = match validate_io(&self.disk.info, io) {
            Ok(range) => range,
            Err(status) => return status,
        };
        // The disk fits in the address space (it is mapped), so these cannot fail.
        let (Ok(device_offset), Ok(len)) = (
            usize::try_from(range.device_offset_bytes),
            usize::try_from(range.len_bytes),
        ) else {
            return IoStatus::OutOfRange;
        };
        let memory = &self.disk.memory;
        let at = range.buf_offset;
        if io.io_type.needs_buffer() && io.buf.is_none() {
            return IoStatus::InvalidBuffer;
        }
        // validate_io proved the data fits the buffer; a chained buffer is
        // copied unit by unit.
        let result = match (io.io_type, io.buf.as_mut()) {
            // One unit (most commands): the buffer is one slice.
            (IoType::Read, Some(buf)) if buf.units() == 1 => {
                memory.read_at(device_offset, &mut buf.as_mut_slice()[at..at + len])
            }
            (IoType::Write, Some(buf)) if buf.units() == 1 => {
                memory.write_at(device_offset, &buf.as_slice()[at..at + len])
            }
            (IoType::Read, Some(buf)) => {
                let mut device = device_offset;
                buf.pieces_mut(at, len).try_for_each(|dst| {
                    let r = memory.read_at(device, dst);
                    device += dst.len();
                    r
                })
            }
            (IoType::Write, Some(buf)) => {
                let mut device = device_offset;
                buf.pieces(at, len).try_for_each(|src| {
                    let r = memory.write_at(device, src);
                    device += src.len();
                    r
                })
            }
            (IoType::Compare, Some(buf)) => {
                let mut device = device_offset;
                let mut same = true;
                let r = buf.pieces(at, len).try_for_each(|expected| {
                    same &= memory.compare_at(device, expected)?;
                    device += expected.len();
                    Ok(())
                });
                match r {
                    Ok(()) if !same => return IoStatus::Miscompare,
                    r => r,
                }
            }
            // Deallocated blocks read back as zeroes (NVMe DLFEAT "read zeroes").
            (IoType::WriteZeroes | IoType::Unmap, _) => memory.fill_zero(device_offset, len),
            // Nothing volatile to persist.
            (IoType::Flush, _) => Ok(()),
            (IoType::Read | IoType::Write | IoType::Compare, None) => {
                unreachable!("checked above: data commands have a buffer")
            }
        };
        match result {
            Ok(()) => IoStatus::Success,
            Err(_) => IoStatus::IoError,
        }
    }
}

impl BdevChannel for MallocChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        if self.ring.is_full() {
            return Err(io);
        }
        let status = self.execute(&mut io);
        self.ring.push(BdevCompletion {
            tag: io.tag,
            status,
            buf: io.buf,
        });
        Ok(())
    }

    fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        self.ring.poll(max, on_complete)
    }

    fn outstanding(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dma::{BufPool, DmaBuf};
    use std::sync::mpsc;

    fn pool() -> Arc<BufPool> {
        BufPool::with_ordinary_memory(16384, 8).unwrap()
    }

    /// Submits one I/O and returns its completion (RAM devices finish inside submit).
    fn run(ch: &mut dyn BdevChannel, io: BdevIo) -> BdevCompletion {
        ch.submit(io).expect("queue has room");
        let mut out = None;
        assert_eq!(ch.poll(1, &mut |c| out = Some(c)), 1);
        out.unwrap()
    }

    fn filled(pool: &Arc<BufPool>, byte: u8) -> DmaBuf {
        let mut buf = pool.get().unwrap();
        buf.as_mut_slice().fill(byte);
        buf
    }

    #[test]
    fn chained_buffers_are_written_read_and_compared_unit_by_unit() {
        let bdev = create_malloc("Malloc0", 64, 512, None).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let units = BufPool::with_ordinary_memory(4096, 8).unwrap();
        let mut cache = dma::PoolCache::new(units, 8);
        // 5 units: 20 KiB; 40 blocks from buf_offset 0 cross four unit boundaries.
        let mut buf = cache.get_chain(5).unwrap();
        let data: Vec<u8> = (0..20_480u32).map(|i| (i % 241) as u8).collect();
        buf.write_at(0, &data);
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Write, 2, 40, buf, 1));
        assert_eq!(done.status, IoStatus::Success);
        cache.put(done.buf.unwrap());
        let mut read = cache.get_chain(5).unwrap();
        read.fill(0, 20_480, 0xee);
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Read, 2, 40, read, 2));
        assert_eq!(done.status, IoStatus::Success);
        let back = done.buf.unwrap();
        let mut got = vec![0u8; 20_480];
        back.read_at(0, &mut got);
        assert_eq!(got, data);
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Compare, 2, 40, back, 3));
        assert_eq!(done.status, IoStatus::Success);
        let mut other = done.buf.unwrap();
        other.fill(20_000, 1, 0);
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Compare, 2, 40, other, 4));
        assert_eq!(
            done.status,
            IoStatus::Miscompare,
            "one byte in the last unit differs"
        );
    }

    fn write_then_read_back(block_size: u32) {
        let bdev = create_malloc("Malloc0", 64, block_size, None).unwrap();
        assert_eq!(bdev.info().product_name, "Malloc disk");
        assert_eq!(bdev.info().block_size, block_size);
        assert_eq!(bdev.info().size_bytes(), 64 * block_size as u64);
        let mut ch = bdev.open_channel(4).unwrap();
        let pool = pool();
        let bs = block_size as usize;

        let mut buf = pool.get().unwrap();
        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Write, 3, 2, buf, 7));
        assert_eq!((done.tag, done.status), (7, IoStatus::Success));
        let written = done.buf.expect("buffer comes back");

        let mut read = BdevIo::with_buf(IoType::Read, 3, 2, filled(&pool, 0xee), 8);
        read.buf_offset = 512;
        let done = run(&mut *ch, read);
        assert_eq!((done.tag, done.status), (8, IoStatus::Success));
        let back = done.buf.unwrap();
        assert_eq!(
            &back.as_slice()[512..512 + 2 * bs],
            &written.as_slice()[..2 * bs]
        );
        assert!(
            back.as_slice()[..512].iter().all(|&b| b == 0xee),
            "before buf_offset"
        );
        assert!(
            back.as_slice()[512 + 2 * bs..].iter().all(|&b| b == 0xee),
            "after the data"
        );

        // Neighbouring blocks are untouched (still zero from creation).
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Read, 2, 1, back, 9));
        assert!(done.buf.unwrap().as_slice()[..bs].iter().all(|&b| b == 0));
        assert_eq!(ch.outstanding(), 0);
    }

    #[test]
    fn write_read_512() {
        write_then_read_back(512);
    }

    #[test]
    fn write_read_4096() {
        write_then_read_back(4096);
    }

    #[test]
    fn out_of_range_completes_with_status() {
        let bdev = create_malloc("Malloc1", 16, 512, None).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let pool = pool();
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Read, 15, 2, pool.get().unwrap(), 1),
        );
        assert_eq!(done.status, IoStatus::OutOfRange);
        assert!(done.buf.is_some(), "buffer returned even on error");
        let done = run(
            &mut *ch,
            BdevIo::without_buf(IoType::WriteZeroes, u64::MAX, 1, 2),
        );
        assert_eq!(done.status, IoStatus::OutOfRange);
        let done = run(&mut *ch, BdevIo::without_buf(IoType::Unmap, 16, 1, 3));
        assert_eq!(done.status, IoStatus::OutOfRange);
    }

    #[test]
    fn short_or_missing_buffer_is_invalid() {
        let bdev = create_malloc("Malloc2", 64, 4096, None).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let pool = pool();
        // 16 KiB buffer, 5 blocks of 4 KiB.
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Write, 0, 5, pool.get().unwrap(), 1),
        );
        assert_eq!(done.status, IoStatus::InvalidBuffer);
        // 4 blocks fit, but not from offset 1.
        let mut io = BdevIo::with_buf(IoType::Read, 0, 4, done.buf.unwrap(), 2);
        io.buf_offset = 1;
        assert_eq!(run(&mut *ch, io).status, IoStatus::InvalidBuffer);
        let done = run(&mut *ch, BdevIo::without_buf(IoType::Compare, 0, 1, 3));
        assert_eq!(done.status, IoStatus::InvalidBuffer);
    }

    #[test]
    fn unmap_and_write_zeroes_read_back_zeroes() {
        let bdev = create_malloc("Malloc3", 32, 512, None).unwrap();
        let mut ch = bdev.open_channel(8).unwrap();
        let pool = pool();
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Write, 0, 32, filled(&pool, 0x5a), 1),
        );
        assert_eq!(done.status, IoStatus::Success);
        let buf = done.buf.unwrap();

        assert_eq!(
            run(&mut *ch, BdevIo::without_buf(IoType::Unmap, 2, 3, 2)).status,
            IoStatus::Success
        );
        assert_eq!(
            run(&mut *ch, BdevIo::without_buf(IoType::WriteZeroes, 10, 1, 3)).status,
            IoStatus::Success
        );
        assert_eq!(
            run(&mut *ch, BdevIo::without_buf(IoType::Flush, 0, 0, 4)).status,
            IoStatus::Success
        );

        let done = run(&mut *ch, BdevIo::with_buf(IoType::Read, 0, 32, buf, 5));
        let data = done.buf.unwrap();
        for block in 0..32 {
            let bytes = &data.as_slice()[block * 512..(block + 1) * 512];
            let zeroed = (2..5).contains(&block) || block == 10;
            let expected = if zeroed { 0 } else { 0x5a };
            assert!(bytes.iter().all(|&b| b == expected), "block {block}");
        }
    }

    #[test]
    fn compare_match_and_miscompare() {
        let bdev = create_malloc("Malloc4", 8, 512, None).unwrap();
        let mut ch = bdev.open_channel(2).unwrap();
        let pool = pool();
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Write, 1, 2, filled(&pool, 0x11), 1),
        );
        let mut buf = done.buf.unwrap();

        let done = run(&mut *ch, BdevIo::with_buf(IoType::Compare, 1, 2, buf, 2));
        assert_eq!(done.status, IoStatus::Success);
        buf = done.buf.unwrap();

        buf.as_mut_slice()[1023] = 0x12;
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Compare, 1, 2, buf, 3));
        assert_eq!(done.status, IoStatus::Miscompare);
        buf = done.buf.unwrap();

        // Block 0 was never written: zeroes do not match 0x11.
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Compare, 0, 1, buf, 4));
        assert_eq!(done.status, IoStatus::Miscompare);
    }

    #[test]
    fn full_queue_hands_the_io_back() {
        let bdev = create_malloc("Malloc5", 8, 512, None).unwrap();
        let mut ch = bdev.open_channel(2).unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
            .unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 2))
            .unwrap();
        assert_eq!(ch.outstanding(), 2);
        let rejected = ch
            .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 3))
            .expect_err("queue of 2 is full");
        assert_eq!(rejected.tag, 3);

        let mut tags = Vec::new();
        assert_eq!(ch.poll(1, &mut |c| tags.push(c.tag)), 1);
        assert_eq!(ch.outstanding(), 1);
        ch.submit(rejected).unwrap();
        assert_eq!(ch.poll(8, &mut |c| tags.push(c.tag)), 2);
        assert_eq!(tags, [1, 2, 3]);
        assert_eq!(ch.outstanding(), 0);
    }

    #[test]
    fn channels_on_two_threads_see_each_others_writes() {
        let bdev = create_malloc("Malloc6", 128, 4096, None).unwrap();
        let pool = pool();
        let (written_tx, written_rx) = mpsc::sync_channel::<u64>(4);

        let writer = {
            let bdev = Arc::clone(&bdev);
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut ch = bdev.open_channel(4).unwrap();
                for (lba, byte) in [(5u64, 0xa5u8), (100, 0x3c)] {
                    let done = run(
                        &mut *ch,
                        BdevIo::with_buf(IoType::Write, lba, 1, filled(&pool, byte), lba),
                    );
                    assert_eq!(done.status, IoStatus::Success);
                    // Announce only after the completion, as a host would.
                    written_tx.send(lba).unwrap();
                }
            })
        };

        let reader = {
            let bdev = Arc::clone(&bdev);
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut ch = bdev.open_channel(4).unwrap();
                for expected in [0xa5u8, 0x3c] {
                    let lba = written_rx.recv().unwrap();
                    let done = run(
                        &mut *ch,
                        BdevIo::with_buf(IoType::Read, lba, 1, filled(&pool, 0), lba),
                    );
                    assert_eq!(done.status, IoStatus::Success);
                    let buf = done.buf.unwrap();
                    assert!(
                        buf.as_slice()[..4096].iter().all(|&b| b == expected),
                        "lba {lba}"
                    );
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(matches!(
            create_malloc("M", 8, 520, None),
            Err(BdevError::InvalidBlockSize {
                block_size: 520,
                ..
            })
        ));
        assert!(matches!(
            create_malloc("M", 0, 512, None),
            Err(BdevError::ZeroBlocks { .. })
        ));
        assert!(matches!(
            create_malloc("M", u64::MAX / 512 + 1, 512, None),
            Err(BdevError::SizeOverflow { .. })
        ));
        let err = match create_malloc("M", 8, 512, Some(999)) {
            Err(e) => e,
            Ok(_) => panic!("NUMA node 999 accepted"),
        };
        assert!(matches!(err, BdevError::Allocation { .. }), "{err}");
        assert!(err.to_string().contains("NUMA node 999"), "{err}");

        let bdev = create_malloc("M", 8, 512, None).unwrap();
        assert!(matches!(
            bdev.open_channel(0),
            Err(BdevError::InvalidQueueDepth { requested: 0, .. })
        ));
        assert!(bdev.open_channel(RAM_MAX_QUEUE_DEPTH + 1).is_err());
    }

    #[test]
    fn channel_keeps_storage_alive_after_bdev_drops() {
        let bdev = create_malloc("Malloc7", 8, 512, None).unwrap();
        let mut ch = bdev.open_channel(1).unwrap();
        drop(bdev);
        let pool = pool();
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Write, 0, 1, filled(&pool, 1), 1),
        );
        assert_eq!(done.status, IoStatus::Success);
    }
}
