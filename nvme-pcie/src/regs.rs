//! Controller registers of BAR0: offsets, typed decoding of CAP and CSTS, encoding of CC and
//! AQA, and doorbell offsets. The bit positions come from `nvme_spec::fabrics` (the same
//! registers are the Fabrics "properties"), so target and driver share one definition.

#![forbid(unsafe_code)]

use nvme_spec::fabrics::{cap, cc, csts, property};

/// Register offsets in BAR0, in bytes.
pub mod offset {
    use super::property;
    pub const CAP: usize = property::CAP as usize;
    pub const VS: usize = property::VS as usize;
    pub const INTMS: usize = property::INTMS as usize;
    pub const INTMC: usize = property::INTMC as usize;
    pub const CC: usize = property::CC as usize;
    pub const CSTS: usize = property::CSTS as usize;
    pub const AQA: usize = property::AQA as usize;
    pub const ASQ: usize = property::ASQ as usize;
    pub const ACQ: usize = property::ACQ as usize;
    /// First doorbell (admin SQ tail).
    pub const DOORBELL_BASE: usize = 0x1000;
}

/// The host memory page size this driver uses (CC.MPS = 0).
pub const MEMORY_PAGE_BYTES: usize = 4096;
const MEMORY_PAGE_SHIFT: u32 = 12;

/// Milliseconds per CAP.TO unit.
pub const CAP_TIMEOUT_UNIT_MS: u64 = 500;

/// Controller Capabilities (CAP, 64 bits at 0x00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum entries per queue (MQES is 0-based, so this is MQES + 1; at least 2).
    pub fn max_queue_entries(self) -> u32 {
        u32::from(cap::mqes(self.0)) + 1
    }
    /// Contiguous Queues Required.
    pub fn contiguous_queues_required(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Worst-case time for CSTS.RDY to follow CC.EN, in ms (CAP.TO is in 500 ms units).
    pub fn ready_timeout_ms(self) -> u64 {
        u64::from(cap::timeout_500ms(self.0)) * CAP_TIMEOUT_UNIT_MS
    }
    /// Doorbell stride exponent: doorbells are `4 << DSTRD` bytes apart.
    pub fn dstrd(self) -> u8 {
        cap::dstrd(self.0)
    }
    pub fn doorbell_stride_bytes(self) -> usize {
        4 << self.dstrd()
    }
    /// Whether the NVM command set is supported (CSS bit 0).
    pub fn supports_nvm_command_set(self) -> bool {
        cap::css_nvm(self.0)
    }
    /// Smallest memory page size the controller supports: 2^(12 + MPSMIN) bytes.
    pub fn min_page_bytes(self) -> u64 {
        1 << (MEMORY_PAGE_SHIFT + u32::from(cap::mpsmin(self.0)))
    }
    /// Largest memory page size: 2^(12 + MPSMAX) bytes.
    pub fn max_page_bytes(self) -> u64 {
        1 << (MEMORY_PAGE_SHIFT + u32::from(cap::mpsmax(self.0)))
    }
    /// Whether the 4 KiB page this driver uses lies in [MPSMIN, MPSMAX].
    pub fn supports_4k_pages(self) -> bool {
        let page = MEMORY_PAGE_BYTES as u64;
        self.min_page_bytes() <= page && page <= self.max_page_bytes()
    }
}

/// Shutdown notification written into CC.SHN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownNotification {
    None,
    Normal,
    Abrupt,
}

/// Controller Configuration (CC, 32 bits at 0x14), as this driver writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cc(pub u32);

/// CC.CSS value selecting the NVM command set.
pub const CC_CSS_NVM: u32 = 0;
/// CC.MPS value for 4 KiB pages (2^(12 + MPS)).
pub const CC_MPS_4K: u32 = 0;
/// CC.AMS value for round robin arbitration (the only one every controller has).
pub const CC_AMS_ROUND_ROBIN: u32 = 0;

impl Cc {
    /// The configuration with EN=0: NVM command set, 4 KiB pages (MPS 0), round robin,
    /// 64-byte SQEs (IOSQES 6), 16-byte CQEs (IOCQES 4), no shutdown notification.
    pub fn nvm_4k_disabled() -> Cc {
        let base = cc::build(
            false,
            nvme_spec::SQE_SIZE_LOG2,
            nvme_spec::CQE_SIZE_LOG2,
            cc::SHN_NONE,
        );
        Cc(base | (CC_CSS_NVM << 4) | (CC_MPS_4K << 7) | (CC_AMS_ROUND_ROBIN << 11))
    }
    pub fn enabled(self) -> bool {
        cc::enabled(self.0)
    }
    pub fn with_enable(self, enable: bool) -> Cc {
        Cc((self.0 & !cc::EN) | u32::from(enable))
    }
    pub fn with_shutdown(self, shn: ShutdownNotification) -> Cc {
        let value = match shn {
            ShutdownNotification::None => cc::SHN_NONE,
            ShutdownNotification::Normal => cc::SHN_NORMAL,
            ShutdownNotification::Abrupt => cc::SHN_ABRUPT,
        };
        Cc((self.0 & !cc::SHN_MASK) | (value << cc::SHN_SHIFT))
    }
    pub fn css(self) -> u8 {
        cc::css(self.0)
    }
    pub fn mps(self) -> u8 {
        cc::mps(self.0)
    }
    pub fn ams(self) -> u8 {
        cc::ams(self.0)
    }
    pub fn shn(self) -> u32 {
        cc::shn(self.0)
    }
    pub fn iosqes(self) -> u8 {
        cc::iosqes(self.0)
    }
    pub fn iocqes(self) -> u8 {
        cc::iocqes(self.0)
    }
}

/// Shutdown status reported in CSTS.SHST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownStatus {
    /// Normal operation, no shutdown requested.
    Normal,
    Occurring,
    Complete,
    /// Value 3 is reserved.
    Reserved,
}

/// Controller Status (CSTS, 32 bits at 0x1C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Csts(pub u32);

impl Csts {
    /// A value of all ones means the device is gone (surprise removal, or the read failed).
    pub fn is_device_gone(self) -> bool {
        self.0 == u32::MAX
    }
    pub fn ready(self) -> bool {
        self.0 & csts::RDY != 0
    }
    /// Controller Fatal Status: the controller needs a reset.
    pub fn fatal(self) -> bool {
        self.0 & csts::CFS != 0
    }
    pub fn shutdown_status(self) -> ShutdownStatus {
        match csts::shst(self.0) {
            csts::SHST_NORMAL => ShutdownStatus::Normal,
            csts::SHST_OCCURRING => ShutdownStatus::Occurring,
            csts::SHST_COMPLETE => ShutdownStatus::Complete,
            _ => ShutdownStatus::Reserved,
        }
    }
}

/// Admin Queue Attributes (AQA, 32 bits at 0x24) from entry counts (1-based, 2..=4096).
pub fn aqa(admin_sq_entries: u16, admin_cq_entries: u16) -> u32 {
    assert!((2..=4096).contains(&admin_sq_entries), "admin SQ entries");
    assert!((2..=4096).contains(&admin_cq_entries), "admin CQ entries");
    u32::from(admin_sq_entries - 1) | (u32::from(admin_cq_entries - 1) << 16)
}

/// Offset in BAR0 of the submission queue `qid`'s tail doorbell.
pub fn sq_tail_doorbell(qid: u16, dstrd: u8) -> usize {
    doorbell(qid, false, dstrd)
}

/// Offset in BAR0 of the completion queue `qid`'s head doorbell.
pub fn cq_head_doorbell(qid: u16, dstrd: u8) -> usize {
    doorbell(qid, true, dstrd)
}

fn doorbell(qid: u16, is_cq: bool, dstrd: u8) -> usize {
    assert!(dstrd <= 0xF);
    offset::DOORBELL_BASE + (2 * usize::from(qid) + usize::from(is_cq)) * (4 << dstrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_spec() {
        assert_eq!(offset::CAP, 0x00);
        assert_eq!(offset::VS, 0x08);
        assert_eq!(offset::INTMS, 0x0C);
        assert_eq!(offset::INTMC, 0x10);
        assert_eq!(offset::CC, 0x14);
        assert_eq!(offset::CSTS, 0x1C);
        assert_eq!(offset::AQA, 0x24);
        assert_eq!(offset::ASQ, 0x28);
        assert_eq!(offset::ACQ, 0x30);
    }

    #[test]
    fn cap_fields_decode() {
        // QEMU's NVMe model: MQES 0x7FF, CQR, TO 0xF, DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap = Cap(0x0040_0020_0F01_07FF);
        assert_eq!(cap.max_queue_entries(), 0x800);
        assert!(cap.contiguous_queues_required());
        assert_eq!(cap.ready_timeout_ms(), 15 * 500);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(cap.doorbell_stride_bytes(), 4);
        assert!(cap.supports_nvm_command_set());
        assert_eq!(cap.min_page_bytes(), 4096);
        assert_eq!(cap.max_page_bytes(), 64 * 1024);
        assert!(cap.supports_4k_pages());

        let odd = Cap((3 << 32) | (1 << 48) | (2 << 52));
        assert_eq!(odd.max_queue_entries(), 1);
        assert!(!odd.contiguous_queues_required());
        assert_eq!(odd.ready_timeout_ms(), 0);
        assert_eq!(odd.dstrd(), 3);
        assert_eq!(odd.doorbell_stride_bytes(), 32);
        assert!(!odd.supports_nvm_command_set());
        assert_eq!(odd.min_page_bytes(), 8192);
        assert!(!odd.supports_4k_pages());
    }

    #[test]
    fn cc_encodes_what_linux_writes() {
        let cc = Cc::nvm_4k_disabled();
        assert!(!cc.enabled());
        assert_eq!(cc.css(), 0);
        assert_eq!(cc.mps(), 0);
        assert_eq!(cc.ams(), 0);
        assert_eq!(cc.shn(), 0);
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(cc.iocqes(), 4);
        assert_eq!(cc.0, 0x0046_0000);
        let on = cc.with_enable(true);
        assert!(on.enabled());
        assert_eq!(on.0, 0x0046_0001);
        let shut = on.with_shutdown(ShutdownNotification::Normal);
        assert_eq!(shut.shn(), 1);
        assert_eq!(shut.0, 0x0046_4001);
        assert_eq!(shut.with_shutdown(ShutdownNotification::Abrupt).shn(), 2);
        assert_eq!(shut.with_shutdown(ShutdownNotification::None), on);
        assert!(!shut.with_enable(false).enabled());
    }

    #[test]
    fn csts_fields_decode() {
        assert!(Csts(1).ready());
        assert!(!Csts(0).ready());
        assert!(Csts(2).fatal());
        assert!(!Csts(1).fatal());
        assert_eq!(Csts(0).shutdown_status(), ShutdownStatus::Normal);
        assert_eq!(Csts(1 << 2).shutdown_status(), ShutdownStatus::Occurring);
        assert_eq!(Csts(2 << 2 | 1).shutdown_status(), ShutdownStatus::Complete);
        assert_eq!(Csts(3 << 2).shutdown_status(), ShutdownStatus::Reserved);
        assert!(Csts(u32::MAX).is_device_gone());
        assert!(!Csts(1).is_device_gone());
    }

    #[test]
    fn aqa_is_zero_based() {
        assert_eq!(aqa(32, 32), 0x001F_001F);
        assert_eq!(aqa(2, 4096), 0x0FFF_0001);
    }

    #[test]
    fn doorbells_follow_stride() {
        assert_eq!(sq_tail_doorbell(0, 0), 0x1000);
        assert_eq!(cq_head_doorbell(0, 0), 0x1004);
        assert_eq!(sq_tail_doorbell(1, 0), 0x1008);
        assert_eq!(cq_head_doorbell(1, 0), 0x100C);
        assert_eq!(sq_tail_doorbell(1, 2), 0x1000 + 2 * 16);
        assert_eq!(cq_head_doorbell(3, 1), 0x1000 + 7 * 8);
    }
}
