//! Feature identifiers (Set/Get Features CDW10.FID).

pub const ARBITRATION: u8 = 0x01;
pub const POWER_MANAGEMENT: u8 = 0x02;
pub const LBA_RANGE_TYPE: u8 = 0x03;
pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
pub const ERROR_RECOVERY: u8 = 0x05;
pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
pub const NUMBER_OF_QUEUES: u8 = 0x07;
pub const INTERRUPT_COALESCING: u8 = 0x08;
pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
pub const WRITE_ATOMICITY: u8 = 0x0A;
pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
pub const AUTONOMOUS_POWER_STATE: u8 = 0x0C;
pub const HOST_MEMORY_BUFFER: u8 = 0x0D;
pub const TIMESTAMP: u8 = 0x0E;
pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
pub const HOST_CONTROLLED_THERMAL: u8 = 0x10;
pub const SOFTWARE_PROGRESS_MARKER: u8 = 0x80;
pub const HOST_IDENTIFIER: u8 = 0x81;
pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
pub const RESERVATION_PERSISTENCE: u8 = 0x83;

/// Get Features SEL values.
pub mod select {
    pub const CURRENT: u8 = 0;
    pub const DEFAULT: u8 = 1;
    pub const SAVED: u8 = 2;
    pub const SUPPORTED_CAPABILITIES: u8 = 3;
}

/// Asynchronous Event Configuration bits (feature 0Bh) and matching OAES bits.
pub mod aen {
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
    pub const FIRMWARE_ACTIVATION: u32 = 1 << 9;
    pub const DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
}

/// Asynchronous event completion dw0 encoding.
pub mod async_event {
    pub const TYPE_ERROR: u8 = 0;
    pub const TYPE_SMART: u8 = 1;
    pub const TYPE_NOTICE: u8 = 2;
    pub const NOTICE_NS_ATTRIBUTE_CHANGED: u8 = 0x00;
    pub const NOTICE_DISCOVERY_LOG_CHANGED: u8 = 0xF0;

    pub fn dw0(event_type: u8, info: u8, log_page: u8) -> u32 {
        u32::from(event_type & 0x7) | (u32::from(info) << 8) | (u32::from(log_page) << 16)
    }
}
