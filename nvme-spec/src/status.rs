//! Completion status: status code type (SCT), status code (SC), do-not-retry.

use std::fmt;

/// Status code types.
pub mod sct {
    pub const GENERIC: u8 = 0;
    pub const COMMAND_SPECIFIC: u8 = 1;
    pub const MEDIA: u8 = 2;
    pub const PATH: u8 = 3;
    pub const VENDOR: u8 = 7;
}

/// A completion status. Errors carry DNR (do not retry) unless built with
/// [`Status::retryable`]: the host must not resend a command that is wrong.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    pub dnr: bool,
}

macro_rules! statuses {
    ($($(#[$m:meta])* $name:ident = ($sct:expr, $sc:expr);)*) => {
        impl Status {
            $($(#[$m])* pub const $name: Status = Status::new($sct, $sc);)*

            /// The spec's name of the status, for logs and error messages.
            pub fn name(self) -> &'static str {
                $(if self.sct == $sct && self.sc == $sc { return stringify!($name); })*
                "UNKNOWN_STATUS"
            }
        }
    };
}

statuses! {
    SUCCESS = (sct::GENERIC, 0x00);
    INVALID_OPCODE = (sct::GENERIC, 0x01);
    INVALID_FIELD = (sct::GENERIC, 0x02);
    COMMAND_ID_CONFLICT = (sct::GENERIC, 0x03);
    DATA_TRANSFER_ERROR = (sct::GENERIC, 0x04);
    ABORTED_POWER_LOSS = (sct::GENERIC, 0x05);
    INTERNAL_ERROR = (sct::GENERIC, 0x06);
    ABORT_REQUESTED = (sct::GENERIC, 0x07);
    ABORTED_SQ_DELETION = (sct::GENERIC, 0x08);
    INVALID_NAMESPACE_OR_FORMAT = (sct::GENERIC, 0x0B);
    COMMAND_SEQUENCE_ERROR = (sct::GENERIC, 0x0C);
    INVALID_SGL_SEGMENT_DESCRIPTOR = (sct::GENERIC, 0x0D);
    INVALID_NUMBER_OF_SGL_DESCRIPTORS = (sct::GENERIC, 0x0E);
    DATA_SGL_LENGTH_INVALID = (sct::GENERIC, 0x0F);
    METADATA_SGL_LENGTH_INVALID = (sct::GENERIC, 0x10);
    SGL_DESCRIPTOR_TYPE_INVALID = (sct::GENERIC, 0x11);
    INVALID_USE_OF_CMB = (sct::GENERIC, 0x12);
    PRP_OFFSET_INVALID = (sct::GENERIC, 0x13);
    OPERATION_DENIED = (sct::GENERIC, 0x15);
    SGL_OFFSET_INVALID = (sct::GENERIC, 0x16);
    HOST_ID_INCONSISTENT_FORMAT = (sct::GENERIC, 0x18);
    KEEP_ALIVE_EXPIRED = (sct::GENERIC, 0x19);
    KEEP_ALIVE_INVALID = (sct::GENERIC, 0x1A);
    COMMAND_INTERRUPTED = (sct::GENERIC, 0x21);
    TRANSIENT_TRANSPORT_ERROR = (sct::GENERIC, 0x22);
    LBA_OUT_OF_RANGE = (sct::GENERIC, 0x80);
    CAPACITY_EXCEEDED = (sct::GENERIC, 0x81);
    NAMESPACE_NOT_READY = (sct::GENERIC, 0x82);

    COMPLETION_QUEUE_INVALID = (sct::COMMAND_SPECIFIC, 0x00);
    INVALID_QUEUE_IDENTIFIER = (sct::COMMAND_SPECIFIC, 0x01);
    INVALID_QUEUE_SIZE = (sct::COMMAND_SPECIFIC, 0x02);
    ABORT_COMMAND_LIMIT_EXCEEDED = (sct::COMMAND_SPECIFIC, 0x03);
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = (sct::COMMAND_SPECIFIC, 0x05);
    INVALID_FIRMWARE_SLOT = (sct::COMMAND_SPECIFIC, 0x06);
    INVALID_LOG_PAGE = (sct::COMMAND_SPECIFIC, 0x09);
    INVALID_FORMAT = (sct::COMMAND_SPECIFIC, 0x0A);
    FEATURE_NOT_SAVEABLE = (sct::COMMAND_SPECIFIC, 0x0D);
    FEATURE_NOT_CHANGEABLE = (sct::COMMAND_SPECIFIC, 0x0E);
    FEATURE_NOT_NAMESPACE_SPECIFIC = (sct::COMMAND_SPECIFIC, 0x0F);
    /// Fabrics Connect: record format not supported.
    CONNECT_INCOMPATIBLE_FORMAT = (sct::COMMAND_SPECIFIC, 0x80);
    /// Fabrics Connect: controller busy (e.g. queue already connected).
    CONNECT_CONTROLLER_BUSY = (sct::COMMAND_SPECIFIC, 0x81);
    /// Fabrics Connect: a parameter is invalid; dw0 carries IATTR/IPO.
    CONNECT_INVALID_PARAMETERS = (sct::COMMAND_SPECIFIC, 0x82);
    CONNECT_RESTART_DISCOVERY = (sct::COMMAND_SPECIFIC, 0x83);
    /// Fabrics Connect: host not allowed to use the subsystem.
    CONNECT_INVALID_HOST = (sct::COMMAND_SPECIFIC, 0x84);

    WRITE_FAULT = (sct::MEDIA, 0x80);
    UNRECOVERED_READ_ERROR = (sct::MEDIA, 0x81);
    COMPARE_FAILURE = (sct::MEDIA, 0x85);
    ACCESS_DENIED = (sct::MEDIA, 0x86);
}

impl Status {
    pub const fn new(sct: u8, sc: u8) -> Status {
        Status {
            sct,
            sc,
            dnr: !(sct == sct::GENERIC && sc == 0),
        }
    }
    /// The same status without DNR: the host may retry.
    pub const fn retryable(self) -> Status {
        Status { dnr: false, ..self }
    }
    pub fn is_success(self) -> bool {
        self.sct == sct::GENERIC && self.sc == 0
    }
    /// The 15-bit status field as placed in CQE bits 15:1 (phase excluded).
    pub fn to_field(self) -> u16 {
        (u16::from(self.sc) << 1) | (u16::from(self.sct & 0x7) << 9) | (u16::from(self.dnr) << 15)
    }
    pub fn from_field(field: u16) -> Status {
        Status {
            sc: (field >> 1) as u8,
            sct: ((field >> 9) & 0x7) as u8,
            dnr: field & (1 << 15) != 0,
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(sct {:#x}, sc {:#04x}{})",
            self.name(),
            self.sct,
            self.sc,
            if self.dnr { ", dnr" } else { "" }
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_roundtrip_and_names() {
        for s in [
            Status::SUCCESS,
            Status::INVALID_FIELD,
            Status::CONNECT_INVALID_HOST,
            Status::COMPARE_FAILURE,
        ] {
            assert_eq!(Status::from_field(s.to_field()), s);
        }
        assert_eq!(
            (Status::SUCCESS.dnr, Status::INVALID_OPCODE.dnr),
            (false, true)
        );
        assert_eq!(Status::INVALID_OPCODE.to_field(), 0x8002);
        assert_eq!(Status::CONNECT_INVALID_HOST.to_field() & 0x7FFF, 0x184 << 1);
        assert_eq!(Status::LBA_OUT_OF_RANGE.name(), "LBA_OUT_OF_RANGE");
        assert_eq!(Status::new(5, 5).name(), "UNKNOWN_STATUS");
    }
}
