//! Checking what was read, section by section, into a [`Config`](super::Config): `[global]`,
//! `[transport]` and `[[bdev]]` here, `[[subsystem]]` in `validate_subsystem.rs`.

use std::ops::Range;

use crate::capabilities::{self, CapabilityKind, KNOWN_BDEV_KINDS};
use nvmf::TargetOptions;
use reactor::ReactorMask;

use super::*;

/// The text being parsed and its name, to turn byte spans into "file line N" errors.
pub(super) struct Doc<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
}

impl Doc<'_> {
    /// 1-based line of a byte offset (offsets past the end count as the last line).
    pub(super) fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    pub(super) fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            key: Some(key.to_string()),
            msg: msg.into(),
        }
    }

    /// Error about a whole table (no single key is at fault).
    pub(super) fn table_err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            key: None,
            msg: msg.into(),
        }
    }

    pub(super) fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let (reactor_mask, mask_origin) = self.mask(raw.global.as_ref())?;
        let idle_sleep_us = self.idle_sleep_us(raw.global.as_ref())?;
        let interrupt_after_idle_us = self.interrupt_after_idle_us(raw.global.as_ref())?;
        let transport = self.transport(raw.transport.as_ref())?;
        let bdevs = self.bdevs(&raw.bdev)?;
        let subsystems = self.subsystems(&raw.subsystem, &bdevs)?;
        Ok(Config {
            path: self.path.to_string(),
            reactor_mask,
            mask_origin,
            idle_sleep_us,
            interrupt_after_idle_us,
            transport,
            bdevs,
            subsystems,
        })
    }

    pub(super) fn idle_sleep_us(&self, global: Option<&RawGlobal>) -> Result<u64, ConfigError> {
        let Some(v) = global.and_then(|g| g.idle_sleep_us.as_ref()) else {
            return Ok(0);
        };
        match u64::try_from(*v.get_ref()) {
            Ok(us) if us <= MAX_IDLE_SLEEP_US => Ok(us),
            _ => Err(self.err(
                v.span(),
                "idle_sleep_us",
                format!(
                    "{} is out of range: use 0 (reactors spin) to {MAX_IDLE_SLEEP_US} microseconds",
                    v.get_ref()
                ),
            )),
        }
    }

    pub(super) fn interrupt_after_idle_us(
        &self,
        global: Option<&RawGlobal>,
    ) -> Result<Option<u64>, ConfigError> {
        let mode = global.and_then(|g| g.interrupt_mode.as_ref());
        let after = global.and_then(|g| g.interrupt_after_idle_us.as_ref());
        let on = mode.is_none_or(|m| *m.get_ref());
        let Some(after) = after else {
            return Ok(on.then_some(DEFAULT_INTERRUPT_AFTER_IDLE_US));
        };
        if !on {
            return Err(self.err(
                after.span(),
                "interrupt_after_idle_us",
                "has no effect while interrupt_mode is off: set interrupt_mode = true, or remove it"
                    .to_string(),
            ));
        }
        match u64::try_from(*after.get_ref()) {
            Ok(us) if us <= MAX_INTERRUPT_AFTER_IDLE_US => Ok(Some(us)),
            _ => Err(self.err(
                after.span(),
                "interrupt_after_idle_us",
                format!(
                    "{} is out of range: use 0 to {MAX_INTERRUPT_AFTER_IDLE_US} microseconds",
                    after.get_ref()
                ),
            )),
        }
    }

    pub(super) fn mask(
        &self,
        global: Option<&RawGlobal>,
    ) -> Result<(ReactorMask, MaskOrigin), ConfigError> {
        match global.and_then(|g| g.reactor_mask.as_ref()) {
            Some(text) => {
                let mask = ReactorMask::parse(text.get_ref())
                    .map_err(|e| self.err(text.span(), "reactor_mask", e.to_string()))?;
                let line = self.line_of(text.span().start);
                Ok((mask, MaskOrigin::File { line }))
            }
            None => {
                let mask =
                    ReactorMask::parse(DEFAULT_REACTOR_MASK).map_err(|e| ConfigError::Whole {
                        path: self.path.to_string(),
                        msg: format!("built-in default mask: {e}"),
                    })?;
                Ok((mask, MaskOrigin::Default))
            }
        }
    }

    pub(super) fn transport(
        &self,
        section: Option<&RawTransport>,
    ) -> Result<TransportConfig, ConfigError> {
        let empty = RawTransport::default();
        let raw = section.unwrap_or(&empty);
        let mut out = TransportConfig::default();
        let o = &mut out.options;
        // Values beyond the type are clamped to its maximum: every option's valid range ends
        // far below that, so validate() below still rejects them, with the real range.
        if let Some(v) = &raw.max_queue_depth {
            o.max_queue_depth = self.clamped(v, "max_queue_depth")?;
        }
        if let Some(v) = &raw.max_admin_queue_depth {
            o.max_admin_queue_depth = self.clamped(v, "max_admin_queue_depth")?;
        }
        if let Some(v) = &raw.max_queues_per_controller {
            o.max_queues_per_controller = self.clamped(v, "max_queues_per_controller")?;
        }
        if let Some(v) = &raw.in_capsule_data_size {
            o.in_capsule_data_bytes = self.clamped(v, "in_capsule_data_size")?;
        }
        if let Some(v) = &raw.max_io_size {
            o.max_io_bytes = self.clamped(v, "max_io_size")?;
            out.max_io_size_set = true;
        }
        if let Some(v) = &raw.io_unit_size {
            let n = *v.get_ref();
            let max = i64::from(o.max_io_bytes);
            if n < 4096 || n > max || !(n as u64).is_power_of_two() {
                return Err(self.err(
                    v.span(),
                    "io_unit_size",
                    format!("{n} is invalid; use a power of two from 4096 to max_io_size ({max})"),
                ));
            }
            out.io_unit_bytes = n as u32;
        }
        if let Some(v) = &raw.acceptor_poll_period_us {
            o.acceptor_poll_period_us = self.clamped(v, "acceptor_poll_period_us")?;
        }
        if let Some(v) = &raw.num_shared_buffers {
            let n = *v.get_ref();
            if !(1..=MAX_NUM_SHARED_BUFFERS as i64).contains(&n) {
                return Err(self.err(
                    v.span(),
                    "num_shared_buffers",
                    format!("{n} is out of range; use 1 to {MAX_NUM_SHARED_BUFFERS}"),
                ));
            }
            out.num_shared_buffers = n as usize;
        }
        // One transfer of max_io_size must fit the pool, or it would wait forever.
        let units_per_io = o.max_io_bytes.div_ceil(out.io_unit_bytes) as usize;
        if out.num_shared_buffers < units_per_io {
            let span = raw
                .num_shared_buffers
                .as_ref()
                .map(|v| v.span())
                .or_else(|| raw.max_io_size.as_ref().map(|v| v.span()))
                .or_else(|| raw.io_unit_size.as_ref().map(|v| v.span()));
            let key = if raw.num_shared_buffers.is_some() {
                "num_shared_buffers"
            } else {
                "max_io_size"
            };
            let msg = format!(
                "{} units of {} bytes cannot hold one transfer of max_io_size {} bytes; \
                 set num_shared_buffers to at least {units_per_io}",
                out.num_shared_buffers, out.io_unit_bytes, o.max_io_bytes
            );
            return Err(match span {
                Some(span) => self.err(span, key, msg),
                None => self.err(0..0, key, msg),
            });
        }
        if let Some(v) = &raw.srq {
            out.srq = *v.get_ref();
        }
        if let Some(v) = &raw.c2h_success {
            out.c2h_success = *v.get_ref();
        }
        if let Some(v) = &raw.srq_depth {
            let n = *v.get_ref();
            let (lo, hi) = (*SRQ_DEPTH_RANGE.start(), *SRQ_DEPTH_RANGE.end());
            if !(i64::from(lo)..=i64::from(hi)).contains(&n) {
                return Err(self.err(
                    v.span(),
                    "srq_depth",
                    format!(
                        "{n} is out of range; use {lo} to {hi} (receives of each shared \
                         receive queue; the device's max_srq_wr caps it at run time)"
                    ),
                ));
            }
            out.srq_depth = n as u32;
        }
        out.options.validate().map_err(|e| {
            let nvmf::ConfigError::Invalid { what, msg } = e;
            let key = what.strip_prefix("transport option ").unwrap_or(&what);
            let value = transport_value(&out.options, key);
            match raw.span_of(key) {
                Some(span) => self.err(span, key, format!("{value} is invalid: it {msg}")),
                // A default that clashes with a key that is set (no default does today).
                None => ConfigError::Whole {
                    path: self.path.to_string(),
                    msg: format!(
                        "[transport] {key}: the default {value} is invalid: it {msg}; set {key}"
                    ),
                },
            }
        })?;
        Ok(out)
    }

    /// A non-negative integer as `T`, saturating at `T::MAX`.
    pub(super) fn clamped<T: TryFrom<i64> + Bounded>(
        &self,
        v: &Spanned<i64>,
        key: &str,
    ) -> Result<T, ConfigError> {
        let n = *v.get_ref();
        if n < 0 {
            return Err(self.err(v.span(), key, format!("{n} is negative")));
        }
        Ok(T::try_from(n).unwrap_or(T::MAX))
    }

    pub(super) fn bdevs(&self, raw: &[Spanned<RawBdev>]) -> Result<Vec<BdevSpec>, ConfigError> {
        let mut out: Vec<BdevSpec> = Vec::with_capacity(raw.len());
        for entry in raw {
            let b = entry.get_ref();
            let name = b.name.get_ref();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!("{name:?} is not a valid bdev name; use letters, digits and punctuation without spaces, e.g. \"Malloc0\""),
                ));
            }
            if let Some(first) = out.iter().find(|o| o.name == *name) {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!(
                        "bdev {name:?} is already defined at line {}; bdev names must be unique",
                        first.line
                    ),
                ));
            }
            let kind = self.bdev_kind(&b.kind)?;
            let device = match kind {
                BdevKind::Malloc | BdevKind::Null => self.ram_device(b, kind)?,
                BdevKind::Nvme => self.nvme_device(b)?,
            };
            let spec = BdevSpec {
                name: name.clone(),
                kind,
                device,
                line: self.line_of(b.name.span().start),
            };
            // An NVMe controller's namespace bdevs must not shadow another bdev, or be shadowed.
            if let Some(other) = out
                .iter()
                .find(|o| o.provides(name).is_some() || spec.provides(&o.name).is_some())
            {
                return Err(self.err(
                    b.name.span(),
                    "name",
                    format!(
                        "bdev {name:?} clashes with bdev {:?} (line {}): the namespaces of \
                         an nvme bdev named N are named NnX; rename one of them",
                        other.name, other.line
                    ),
                ));
            }
            if let Some((traddr, other)) = spec.nvme_traddr().and_then(|traddr| {
                let other = out.iter().find(|o| o.nvme_traddr() == Some(traddr))?;
                Some((traddr, other))
            }) {
                return Err(self.err(
                    b.name.span(),
                    "traddr",
                    format!(
                        "controller {traddr} is already bdev {:?} (line {}); a controller can \
                         be opened once",
                        other.name, other.line
                    ),
                ));
            }
            out.push(spec);
        }
        Ok(out)
    }

    /// Size and placement of a malloc or null bdev; `traddr` belongs to nvme bdevs only.
    pub(super) fn ram_device(
        &self,
        b: &RawBdev,
        kind: BdevKind,
    ) -> Result<BdevDevice, ConfigError> {
        let nvme_only = [
            ("traddr", b.traddr.as_ref().map(|v| v.span())),
            ("io_timeout_ms", b.io_timeout_ms.as_ref().map(|v| v.span())),
        ];
        if let Some((key, Some(span))) = nvme_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(self.err(
                span,
                key,
                format!(
                    "applies to nvme bdevs only, and this one is {:?}; remove it",
                    kind.as_str()
                ),
            ));
        }
        let required = |key: &str, v: &Option<Spanned<i64>>| {
            v.clone().ok_or_else(|| {
                self.err(
                    b.name.span(),
                    key,
                    format!(
                        "a {} bdev needs {key} (e.g. num_blocks = 131072 and block_size = 512 \
                         for 64 MiB)",
                        kind.as_str()
                    ),
                )
            })
        };
        let block_size_v = required("block_size", &b.block_size)?;
        let num_blocks_v = required("num_blocks", &b.num_blocks)?;
        let block_size = *block_size_v.get_ref();
        if block_size != 512 && block_size != 4096 {
            return Err(self.err(
                block_size_v.span(),
                "block_size",
                format!("{block_size} is not 512 or 4096"),
            ));
        }
        let num_blocks = *num_blocks_v.get_ref();
        if num_blocks < 1 {
            return Err(self.err(
                num_blocks_v.span(),
                "num_blocks",
                format!("{num_blocks} is invalid; a bdev needs at least 1 block"),
            ));
        }
        if (num_blocks as u64).checked_mul(block_size as u64).is_none() {
            return Err(self.err(
                num_blocks_v.span(),
                "num_blocks",
                format!("{num_blocks} blocks of {block_size} bytes overflow a 64-bit size"),
            ));
        }
        let numa_node = match &b.numa_node {
            None => None,
            Some(v) if kind != BdevKind::Malloc => {
                return Err(self.err(
                    v.span(),
                    "numa_node",
                    format!(
                        "applies to malloc bdevs only, and this one is {:?}; remove it",
                        kind.as_str()
                    ),
                ))
            }
            Some(v) => {
                let node = *v.get_ref();
                if !(0..=i64::from(MAX_NUMA_NODE)).contains(&node) {
                    return Err(self.err(
                        v.span(),
                        "numa_node",
                        format!("{node} is out of range; use 0 to {MAX_NUMA_NODE}"),
                    ));
                }
                Some(node as u32)
            }
        };
        Ok(BdevDevice::Ram {
            num_blocks: num_blocks as u64,
            block_size: block_size as u32,
            numa_node,
        })
    }

    /// The PCI address of an nvme bdev; its size and block size come from the device.
    pub(super) fn nvme_device(&self, b: &RawBdev) -> Result<BdevDevice, ConfigError> {
        for (key, v) in [
            ("num_blocks", &b.num_blocks),
            ("block_size", &b.block_size),
            ("numa_node", &b.numa_node),
        ] {
            if let Some(v) = v {
                return Err(self.err(
                    v.span(),
                    key,
                    "does not apply to nvme bdevs: the device sets it (memory goes on the \
                     device's NUMA node); remove it",
                ));
            }
        }
        let Some(v) = &b.traddr else {
            return Err(self.err(
                b.name.span(),
                "traddr",
                "an nvme bdev needs traddr, the controller's PCI address (e.g. traddr = \
                 \"0000:04:00.0\"); `nvmf-tgt setup status` lists them",
            ));
        };
        let traddr = nvme_pcie::vfio::normalize_bdf(v.get_ref())
            .map_err(|e| self.err(v.span(), "traddr", e.to_string()))?;
        let io_timeout_ms = match &b.io_timeout_ms {
            None => nvme_pcie::bdev::DEFAULT_IO_TIMEOUT_MS,
            Some(v) => {
                let ms = *v.get_ref();
                if ms != 0 && !IO_TIMEOUT_MS_RANGE.contains(&ms) {
                    return Err(self.err(
                        v.span(),
                        "io_timeout_ms",
                        format!(
                            "{ms} is out of range; use {} to {} ms, or 0 for no timeout \
                             (timeouts are checked every 100 ms)",
                            IO_TIMEOUT_MS_RANGE.start(),
                            IO_TIMEOUT_MS_RANGE.end()
                        ),
                    ));
                }
                ms as u64
            }
        };
        Ok(BdevDevice::Nvme {
            traddr,
            io_timeout_ms,
        })
    }

    pub(super) fn bdev_kind(&self, kind: &Spanned<String>) -> Result<BdevKind, ConfigError> {
        let name = kind.get_ref().as_str();
        let built = capabilities::built_names(CapabilityKind::Bdev);
        if let Some(k) = BdevKind::from_name(name) {
            if capabilities::is_built(CapabilityKind::Bdev, name) {
                return Ok(k);
            }
        }
        let msg = if KNOWN_BDEV_KINDS.contains(&name) {
            format!(
                "bdev kind {name:?} is not built into this nvmf-tgt yet (built: {}); \
                 see `nvmf-tgt capabilities`",
                quoted_list(&built)
            )
        } else {
            format!(
                "{name:?} is not a bdev kind; use one of {}",
                quoted_list(&built)
            )
        };
        Err(self.err(kind.span(), "kind", msg))
    }
}

/// Integer types the transport options use, with their maximum.
pub(super) trait Bounded {
    const MAX: Self;
}

impl Bounded for u16 {
    const MAX: u16 = u16::MAX;
}

impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

/// The current value of a transport option, by the key name validate() reports.
pub(super) fn transport_value(o: &TargetOptions, key: &str) -> String {
    match key {
        "max_queue_depth" => o.max_queue_depth.to_string(),
        "max_admin_queue_depth" => o.max_admin_queue_depth.to_string(),
        "max_queues_per_controller" => o.max_queues_per_controller.to_string(),
        "in_capsule_data_size" => o.in_capsule_data_bytes.to_string(),
        "max_io_size" => o.max_io_bytes.to_string(),
        "acceptor_poll_period_us" => o.acceptor_poll_period_us.to_string(),
        _ => "value".to_string(),
    }
}

pub(super) fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
