//! Block devices behind the NVMe-oF namespaces. A bdev is shared by all reactors; each reactor
//! opens its own channel, which owns a bounded completion ring allocated at open time, so the
//! I/O path neither allocates nor locks.
//!
//! RAM devices (malloc, null) complete synchronously inside `submit`; callers still collect
//! completions through `poll`, exactly as for a device that completes later.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod malloc;
mod null;
mod ring;

use std::fmt;

use dma::{DmaBuf, DmaError};

pub use malloc::create_malloc;
pub use null::create_null;
pub use ring::CompletionRing;

/// Deepest completion ring a RAM device channel accepts; bounds the memory a channel takes.
pub const RAM_MAX_QUEUE_DEPTH: u32 = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoType {
    Read,
    Write,
    Flush,
    WriteZeroes,
    Unmap,
    Compare,
}

impl IoType {
    pub const ALL: [IoType; 6] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::WriteZeroes,
        IoType::Unmap,
        IoType::Compare,
    ];

    /// Whether the I/O carries data in `BdevIo::buf`.
    pub const fn needs_buffer(self) -> bool {
        matches!(self, IoType::Read | IoType::Write | IoType::Compare)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Set of supported I/O types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoTypes(u8);

impl IoTypes {
    pub const fn empty() -> IoTypes {
        IoTypes(0)
    }

    pub const fn all() -> IoTypes {
        let mut bits = 0;
        let mut i = 0;
        while i < IoType::ALL.len() {
            bits |= IoType::ALL[i].bit();
            i += 1;
        }
        IoTypes(bits)
    }

    pub const fn with(self, io_type: IoType) -> IoTypes {
        IoTypes(self.0 | io_type.bit())
    }

    pub const fn without(self, io_type: IoType) -> IoTypes {
        IoTypes(self.0 & !io_type.bit())
    }

    pub const fn contains(self, io_type: IoType) -> bool {
        self.0 & io_type.bit() != 0
    }
}

#[derive(Clone, Debug)]
pub struct BdevInfo {
    pub name: String,
    /// "Malloc disk", "Null disk".
    pub product_name: &'static str,
    pub block_size: u32,
    pub num_blocks: u64,
    pub supported: IoTypes,
    /// Largest queue depth `open_channel` accepts.
    pub max_queue_depth: u32,
    /// Completed writes may sit in a volatile cache until a Flush (or a
    /// FUA write); such a bdev must support Flush. RAM and null devices have
    /// no cache in front of their storage, so nothing to flush.
    pub volatile_write_cache: bool,
}

impl BdevInfo {
    /// Capacity in bytes; cannot overflow, the constructors check it.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * self.block_size as u64
    }
}

pub trait Bdev: Send + Sync + 'static {
    fn info(&self) -> &BdevInfo;
    /// One channel per reactor; allocates its completion ring here, never per I/O.
    fn open_channel(&self, queue_depth: u32) -> Result<Box<dyn BdevChannel>, BdevError>;
}

/// One block I/O. For Read/Write/Compare the data lives in `buf` from byte `buf_offset` on,
/// `num_blocks * block_size` bytes long; the buffer comes back in the completion.
#[derive(Debug)]
pub struct BdevIo {
    pub io_type: IoType,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub buf: Option<DmaBuf>,
    /// Data starts here inside buf.
    pub buf_offset: u32,
    /// Caller's cookie, returned in the completion.
    pub tag: u64,
    /// Force Unit Access (Write, WriteZeroes): complete only once durable.
    pub fua: bool,
}

impl BdevIo {
    /// An I/O with data at the start of `buf`.
    pub fn with_buf(
        io_type: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        buf: DmaBuf,
        tag: u64,
    ) -> BdevIo {
        BdevIo {
            io_type,
            offset_blocks,
            num_blocks,
            buf: Some(buf),
            buf_offset: 0,
            tag,
            fua: false,
        }
    }

    /// An I/O without data (Flush, WriteZeroes, Unmap).
    pub fn without_buf(io_type: IoType, offset_blocks: u64, num_blocks: u64, tag: u64) -> BdevIo {
        BdevIo {
            io_type,
            offset_blocks,
            num_blocks,
            buf: None,
            buf_offset: 0,
            tag,
            fua: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoStatus {
    Success,
    Miscompare,
    /// offset_blocks + num_blocks beyond the device (or overflowing).
    OutOfRange,
    Unsupported,
    /// Missing buffer, or the data does not fit in it from buf_offset on.
    InvalidBuffer,
    IoError,
    /// Raw NVMe status from a passthrough device; `dnr` false lets the host retry.
    Nvme {
        sct: u8,
        sc: u8,
        dnr: bool,
    },
}

impl IoStatus {
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }
}

/// A finished I/O; the buffer comes back to its owner.
#[derive(Debug)]
pub struct BdevCompletion {
    pub tag: u64,
    pub status: IoStatus,
    pub buf: Option<DmaBuf>,
}

pub trait BdevChannel {
    /// Err(io) gives the I/O back when the channel's queue is full (caller retries later).
    /// Never blocks. Invalid I/Os complete with OutOfRange/InvalidBuffer/Unsupported rather
    /// than panicking.
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo>;
    /// Ring doorbells for everything submitted since the last flush (no-op for RAM devices).
    fn flush(&mut self) {}
    /// Calls on_complete for up to `max` finished I/Os; returns how many.
    fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize;
    /// Submitted I/Os not yet handed to `poll`'s callback.
    fn outstanding(&self) -> usize;
    /// Called every ~100 ms with a monotonic clock in ms (never per I/O): devices that time
    /// commands out check them here.
    fn on_timer(&mut self, _now_ms: u64) {}
}

#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    #[error("bdev name must not be empty")]
    EmptyName,

    #[error("bdev {name}: block size {block_size} is not supported; use 512 or 4096")]
    InvalidBlockSize { name: String, block_size: u32 },

    #[error("bdev {name}: num_blocks must be at least 1")]
    ZeroBlocks { name: String },

    #[error(
        "bdev {name}: {num_blocks} blocks of {block_size} bytes overflow the addressable size"
    )]
    SizeOverflow {
        name: String,
        num_blocks: u64,
        block_size: u32,
    },

    #[error("bdev {name}: cannot allocate {} of storage: {source}", dma::ByteSize(*size_bytes))]
    Allocation {
        name: String,
        size_bytes: u64,
        #[source]
        source: DmaError,
    },

    /// The device refused or failed (e.g. no I/O queue left on an NVMe controller).
    #[error("bdev {name}: {msg}")]
    Device { name: String, msg: String },

    #[error("bdev {name}: queue depth {requested} is out of range; use 1 to {max}")]
    InvalidQueueDepth {
        name: String,
        requested: u32,
        max: u32,
    },
}

/// Where an I/O lands, once validated: bytes on the device and inside the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRange {
    pub device_offset_bytes: u64,
    pub len_bytes: u64,
    /// Start of the data inside the buffer (meaningful when the type needs one).
    pub buf_offset: usize,
}

/// Checks an I/O against the device: supported type, block range without overflow, and for
/// data-carrying types a buffer that holds all the data from buf_offset on. Shared by all
/// device types so they reject the same things with the same status.
pub fn validate_io(info: &BdevInfo, io: &BdevIo) -> Result<IoRange, IoStatus> {
    if !info.supported.contains(io.io_type) {
        return Err(IoStatus::Unsupported);
    }
    let end_blocks = io
        .offset_blocks
        .checked_add(io.num_blocks)
        .ok_or(IoStatus::OutOfRange)?;
    if end_blocks > info.num_blocks {
        return Err(IoStatus::OutOfRange);
    }
    let block_size = info.block_size as u64;
    // No overflow: end_blocks <= num_blocks and num_blocks * block_size fits (checked at
    // creation).
    let range = IoRange {
        device_offset_bytes: io.offset_blocks * block_size,
        len_bytes: io.num_blocks * block_size,
        buf_offset: io.buf_offset as usize,
    };
    if io.io_type.needs_buffer() {
        let buf = io.buf.as_ref().ok_or(IoStatus::InvalidBuffer)?;
        let data_end = (io.buf_offset as u64)
            .checked_add(range.len_bytes)
            .ok_or(IoStatus::InvalidBuffer)?;
        if data_end > buf.capacity() as u64 {
            return Err(IoStatus::InvalidBuffer);
        }
    }
    Ok(range)
}

/// Name, block size and count checks shared by the constructors; returns the size in bytes.
fn check_geometry(name: &str, num_blocks: u64, block_size: u32) -> Result<u64, BdevError> {
    if name.is_empty() {
        return Err(BdevError::EmptyName);
    }
    if block_size != 512 && block_size != 4096 {
        return Err(BdevError::InvalidBlockSize {
            name: name.to_owned(),
            block_size,
        });
    }
    if num_blocks == 0 {
        return Err(BdevError::ZeroBlocks {
            name: name.to_owned(),
        });
    }
    num_blocks
        .checked_mul(block_size as u64)
        .ok_or_else(|| BdevError::SizeOverflow {
            name: name.to_owned(),
            num_blocks,
            block_size,
        })
}

/// `queue_depth` as a count, if `open_channel` may accept it for this device.
pub fn check_queue_depth(info: &BdevInfo, queue_depth: u32) -> Result<usize, BdevError> {
    if queue_depth == 0 || queue_depth > info.max_queue_depth {
        return Err(BdevError::InvalidQueueDepth {
            name: info.name.clone(),
            requested: queue_depth,
            max: info.max_queue_depth,
        });
    }
    Ok(queue_depth as usize)
}

/// Keeps `Arc<dyn Bdev>` and channel boxes debuggable in callers' structs.
impl fmt::Debug for dyn Bdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Bdev").field(&self.info().name).finish()
    }
}

impl fmt::Debug for dyn BdevChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdevChannel")
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(num_blocks: u64, supported: IoTypes) -> BdevInfo {
        BdevInfo {
            name: "t".into(),
            product_name: "Test disk",
            block_size: 512,
            num_blocks,
            supported,
            max_queue_depth: 8,
            volatile_write_cache: false,
        }
    }

    #[test]
    fn io_types_bitset() {
        let set = IoTypes::empty().with(IoType::Read).with(IoType::Flush);
        assert!(set.contains(IoType::Read));
        assert!(set.contains(IoType::Flush));
        assert!(!set.contains(IoType::Write));
        assert_eq!(IoTypes::default(), IoTypes::empty());
        for t in IoType::ALL {
            assert!(IoTypes::all().contains(t), "{t:?}");
            assert!(!IoTypes::all().without(t).contains(t), "{t:?}");
        }
    }

    #[test]
    fn validation_rejects_range_overflow_and_short_buffers() {
        let info = info(100, IoTypes::all().without(IoType::Compare));
        let pool = dma::BufPool::with_ordinary_memory(4096, 2).unwrap();

        let io = BdevIo::without_buf(IoType::Unmap, u64::MAX, 2, 0);
        assert_eq!(validate_io(&info, &io), Err(IoStatus::OutOfRange));
        let io = BdevIo::without_buf(IoType::Unmap, 99, 2, 0);
        assert_eq!(validate_io(&info, &io), Err(IoStatus::OutOfRange));
        let io = BdevIo::without_buf(IoType::Unmap, 98, 2, 0);
        assert_eq!(
            validate_io(&info, &io),
            Ok(IoRange {
                device_offset_bytes: 98 * 512,
                len_bytes: 1024,
                buf_offset: 0
            })
        );

        let io = BdevIo::without_buf(IoType::Read, 0, 1, 0);
        assert_eq!(validate_io(&info, &io), Err(IoStatus::InvalidBuffer));
        let mut io = BdevIo::with_buf(IoType::Read, 0, 8, pool.get().unwrap(), 0);
        assert!(validate_io(&info, &io).is_ok(), "4096 bytes fit exactly");
        io.buf_offset = 1;
        assert_eq!(validate_io(&info, &io), Err(IoStatus::InvalidBuffer));
        io.num_blocks = 9;
        io.buf_offset = 0;
        assert_eq!(validate_io(&info, &io), Err(IoStatus::InvalidBuffer));

        let io = BdevIo::with_buf(IoType::Compare, 0, 1, pool.get().unwrap(), 0);
        assert_eq!(validate_io(&info, &io), Err(IoStatus::Unsupported));
    }

    #[test]
    fn geometry_errors_are_explained() {
        let err = check_geometry("Malloc0", 8, 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bdev Malloc0: block size 1024 is not supported; use 512 or 4096"
        );
        assert!(matches!(
            check_geometry("Malloc0", 0, 512),
            Err(BdevError::ZeroBlocks { .. })
        ));
        assert!(matches!(
            check_geometry("Malloc0", u64::MAX, 4096),
            Err(BdevError::SizeOverflow { .. })
        ));
        assert!(matches!(
            check_geometry("", 1, 512),
            Err(BdevError::EmptyName)
        ));
        assert_eq!(check_geometry("Malloc0", 8, 4096).unwrap(), 32768);
    }

    #[test]
    fn queue_depth_is_bounded() {
        let info = info(1, IoTypes::all());
        assert_eq!(check_queue_depth(&info, 8).unwrap(), 8);
        let err = check_queue_depth(&info, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bdev t: queue depth 9 is out of range; use 1 to 8"
        );
        assert!(check_queue_depth(&info, 0).is_err());
    }
}
