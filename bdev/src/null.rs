//! A device with no storage, for measuring the rest of the stack: writes vanish, reads return
//! zeroes. Reads zero-fill the buffer anyway, since handing back stale bytes of another I/O
//! would be a lie about the data (and a leak between hosts).

use std::sync::Arc;

use crate::{
    check_geometry, check_queue_depth, validate_io, Bdev, BdevChannel, BdevCompletion, BdevError,
    BdevInfo, BdevIo, CompletionRing, IoStatus, IoType, IoTypes, RAM_MAX_QUEUE_DEPTH,
};

/// A null device of `num_blocks` blocks of `block_size` (512 or 4096) bytes. Compare is not
/// supported: there is no data to compare against.
pub fn create_null(
    name: &str,
    num_blocks: u64,
    block_size: u32,
) -> Result<Arc<dyn Bdev>, BdevError> {
    check_geometry(name, num_blocks, block_size)?;
    let info = Arc::new(BdevInfo {
        name: name.to_owned(),
        product_name: "Null disk",
        block_size,
        num_blocks,
        supported: IoTypes::all().without(IoType::Compare),
        volatile_write_cache: false,
        max_queue_depth: RAM_MAX_QUEUE_DEPTH,
    });
    log::info!(
        "{name}: null disk of {} blocks of {block_size} bytes",
        num_blocks
    );
    Ok(Arc::new(NullBdev { info }))
}

#[derive(Debug)]
struct NullBdev {
    info: Arc<BdevInfo>,
}

impl Bdev for NullBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self, queue_depth: u32) -> Result<Box<dyn BdevChannel>, BdevError> {
        let depth = check_queue_depth(&self.info, queue_depth)?;
        Ok(Box::new(NullChannel {
            info: Arc::clone(&self.info),
            ring: CompletionRing::new(depth),
        }))
    }
}

struct NullChannel {
    info: Arc<BdevInfo>,
    ring: CompletionRing,
}

impl NullChannel {
    fn execute(&self, io: &mut BdevIo) -> IoStatus {
        let range = match validate_io(&self.info, io) {
            Ok(range) => range,
            Err(status) => return status,
        };
        if io.io_type == IoType::Read {
            // validate_io proved the data fits in the buffer, so len fits in usize.
            let Ok(len) = usize::try_from(range.len_bytes) else {
                return IoStatus::InvalidBuffer;
            };
            let Some(buf) = io.buf.as_mut() else {
                return IoStatus::InvalidBuffer;
            };
            if buf.units() == 1 {
                // validate_io proved the range lies in the buffer.
                buf.as_mut_slice()[range.buf_offset..range.buf_offset + len].fill(0);
            } else {
                for dst in buf.pieces_mut(range.buf_offset, len) {
                    dst.fill(0);
                }
            }
        }
        IoStatus::Success
    }
}

impl BdevChannel for NullChannel {
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
    use dma::BufPool;

    fn run(ch: &mut dyn BdevChannel, io: BdevIo) -> BdevCompletion {
        ch.submit(io).expect("queue has room");
        let mut out = None;
        assert_eq!(ch.poll(1, &mut |c| out = Some(c)), 1);
        out.unwrap()
    }

    #[test]
    fn reads_zero_fill_only_the_data_range() {
        let bdev = create_null("Null0", 1 << 40, 4096).unwrap();
        assert_eq!(bdev.info().product_name, "Null disk");
        assert_eq!(bdev.info().num_blocks, 1 << 40, "no storage needed");
        let mut ch = bdev.open_channel(4).unwrap();
        let pool = BufPool::with_ordinary_memory(16384, 2).unwrap();

        let mut buf = pool.get().unwrap();
        buf.as_mut_slice().fill(0xff);
        let done = run(&mut *ch, BdevIo::with_buf(IoType::Write, 7, 2, buf, 1));
        assert_eq!(done.status, IoStatus::Success);

        let mut io = BdevIo::with_buf(IoType::Read, 7, 2, done.buf.unwrap(), 2);
        io.buf_offset = 4096;
        let done = run(&mut *ch, io);
        assert_eq!(done.status, IoStatus::Success);
        let buf = done.buf.unwrap();
        assert!(buf.as_slice()[..4096].iter().all(|&b| b == 0xff));
        assert!(buf.as_slice()[4096..12288].iter().all(|&b| b == 0));
        assert!(buf.as_slice()[12288..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn compare_is_unsupported_and_range_is_checked() {
        let bdev = create_null("Null1", 16, 512).unwrap();
        assert!(!bdev.info().supported.contains(IoType::Compare));
        let mut ch = bdev.open_channel(2).unwrap();
        let pool = BufPool::with_ordinary_memory(4096, 1).unwrap();
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Compare, 0, 1, pool.get().unwrap(), 1),
        );
        assert_eq!(done.status, IoStatus::Unsupported);
        let done = run(
            &mut *ch,
            BdevIo::with_buf(IoType::Read, 0, 9, done.buf.unwrap(), 2),
        );
        assert_eq!(done.status, IoStatus::InvalidBuffer, "9 blocks > 4 KiB");
        let done = run(&mut *ch, BdevIo::without_buf(IoType::Unmap, 10, 7, 3));
        assert_eq!(done.status, IoStatus::OutOfRange);
        let done = run(&mut *ch, BdevIo::without_buf(IoType::WriteZeroes, 0, 16, 4));
        assert_eq!(done.status, IoStatus::Success);
    }

    #[test]
    fn full_queue_hands_the_io_back() {
        let bdev = create_null("Null2", 16, 512).unwrap();
        let mut ch = bdev.open_channel(1).unwrap();
        ch.submit(BdevIo::without_buf(IoType::Flush, 0, 0, 1))
            .unwrap();
        let back = ch
            .submit(BdevIo::without_buf(IoType::Flush, 0, 0, 2))
            .unwrap_err();
        assert_eq!(back.tag, 2);
        assert_eq!(ch.outstanding(), 1);
        assert_eq!(ch.poll(4, &mut |c| assert_eq!(c.tag, 1)), 1);
        assert_eq!(ch.outstanding(), 0);
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(matches!(
            create_null("Null3", 1, 4095),
            Err(BdevError::InvalidBlockSize { .. })
        ));
        assert!(matches!(
            create_null("Null3", 0, 4096),
            Err(BdevError::ZeroBlocks { .. })
        ));
    }
}
