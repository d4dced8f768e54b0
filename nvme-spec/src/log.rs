//! Log pages (Get Log Page).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Log page identifiers.
pub mod lid {
    pub const SUPPORTED_LOG_PAGES: u8 = 0x00;
    pub const ERROR: u8 = 0x01;
    pub const SMART_HEALTH: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NS_LIST: u8 = 0x04;
    pub const COMMANDS_SUPPORTED_AND_EFFECTS: u8 = 0x05;
    pub const ANA: u8 = 0x0C;
    pub const DISCOVERY: u8 = 0x70;
}

/// Error information log entry (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ErrorLogEntry {
    pub error_count: U64,
    pub sqid: U16,
    pub cid: U16,
    pub status: U16,
    pub param_error_location: U16,
    pub lba: U64,
    pub nsid: U32,
    pub vs: u8,
    pub trtype: u8,
    pub rsvd30: [u8; 2],
    pub cs: U64,
    pub trtype_specific: U16,
    pub rsvd42: [u8; 22],
}
const _: () = assert!(core::mem::size_of::<ErrorLogEntry>() == 64);

/// SMART / Health Information log (512 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmartLog {
    pub critical_warning: u8,
    /// Composite temperature in kelvin.
    pub temperature: U16,
    pub available_spare: u8,
    pub available_spare_threshold: u8,
    pub percentage_used: u8,
    pub endurance_group_warning: u8,
    pub rsvd7: [u8; 25],
    /// In units of 1000 512-byte blocks.
    pub data_units_read: [u8; 16],
    pub data_units_written: [u8; 16],
    pub host_read_commands: [u8; 16],
    pub host_write_commands: [u8; 16],
    pub controller_busy_time: [u8; 16],
    pub power_cycles: [u8; 16],
    pub power_on_hours: [u8; 16],
    pub unsafe_shutdowns: [u8; 16],
    pub media_errors: [u8; 16],
    pub error_log_entries: [u8; 16],
    pub warning_temp_time: U32,
    pub critical_temp_time: U32,
    pub temp_sensor: [U16; 8],
    pub thermal_transition_count: [U32; 2],
    pub thermal_total_time: [U32; 2],
    pub rsvd232: [u8; 280],
}
const _: () = assert!(core::mem::size_of::<SmartLog>() == 512);

/// Firmware slot information log (512 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active firmware info: bits 2:0 the active slot.
    pub afi: u8,
    pub rsvd1: [u8; 7],
    pub frs: [[u8; 8]; 7],
    pub rsvd64: [u8; 448],
}
const _: () = assert!(core::mem::size_of::<FirmwareSlotLog>() == 512);

/// Changed namespace list log (4096 bytes). 0xFFFFFFFF in entry 0: more than 1024 changed.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChangedNsList {
    pub nsid: [U32; 1024],
}
const _: () = assert!(core::mem::size_of::<ChangedNsList>() == 4096);

/// Commands supported and effects log (4096 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CommandEffectsLog {
    pub admin: [U32; 256],
    pub io: [U32; 256],
    pub rsvd: [u8; 2048],
}
const _: () = assert!(core::mem::size_of::<CommandEffectsLog>() == 4096);

/// Command effects bits.
pub mod effects {
    pub const CSUPP: u32 = 1 << 0;
    pub const LBCC: u32 = 1 << 1;
    pub const NCC: u32 = 1 << 2;
    pub const NIC: u32 = 1 << 3;
    pub const CCC: u32 = 1 << 4;
}

/// Discovery log page header (1024 bytes); entries follow at offset 1024.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    pub genctr: U64,
    pub numrec: U64,
    pub recfmt: U16,
    pub rsvd: [u8; 1006],
}
const _: () = assert!(core::mem::size_of::<DiscoveryLogHeader>() == 1024);

/// One discovery log page entry (1024 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    pub portid: U16,
    pub cntlid: U16,
    pub asqsz: U16,
    pub eflags: U16,
    pub rsvd12: [u8; 20],
    pub trsvcid: [u8; 32],
    pub rsvd64: [u8; 192],
    pub subnqn: [u8; 256],
    pub traddr: [u8; 256],
    /// Transport specific address subtype (RDMA: qptype, prtype, cms, pkey).
    pub tsas: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<DiscoveryLogEntry>() == 1024);

/// Transport types.
pub mod trtype {
    pub const RDMA: u8 = 1;
    pub const FC: u8 = 2;
    pub const TCP: u8 = 3;
    pub const LOOP: u8 = 0xFE;
}

/// Address families.
pub mod adrfam {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
    pub const IB: u8 = 3;
    pub const FC: u8 = 4;
    pub const INTRA_HOST: u8 = 0xFE;
}

/// Discovery entry subsystem types.
pub mod subtype {
    /// A referral to another discovery service.
    pub const DISCOVERY_REFERRAL: u8 = 1;
    pub const NVME: u8 = 2;
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// Transport requirements (treq).
pub mod treq {
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0;
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    /// SQ flow control disable supported.
    pub const DISABLE_SQFLOW: u8 = 1 << 2;
}

/// RDMA TSAS values.
pub mod rdma_tsas {
    pub const QPTYPE_CONNECTED: u8 = 1;
    pub const PRTYPE_NOT_SPECIFIED: u8 = 1;
    /// RDMA_IP_CM: sockets-based endpoint addressing (RDMA CM).
    pub const CMS_RDMA_CM: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn offsets() {
        assert_eq!(offset_of!(SmartLog, data_units_read), 32);
        assert_eq!(offset_of!(SmartLog, warning_temp_time), 192);
        assert_eq!(offset_of!(DiscoveryLogEntry, trsvcid), 32);
        // NVMe-oF 1.1 figure 40; nvme-cli reads these offsets.
        assert_eq!(offset_of!(DiscoveryLogEntry, subnqn), 256);
        assert_eq!(offset_of!(DiscoveryLogEntry, traddr), 512);
        assert_eq!(offset_of!(DiscoveryLogEntry, tsas), 768);
        assert_eq!(offset_of!(ErrorLogEntry, nsid), 24);
        assert_eq!(offset_of!(ErrorLogEntry, trtype_specific), 40);
    }
}
