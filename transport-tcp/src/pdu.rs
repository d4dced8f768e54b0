//! NVMe/TCP PDUs (NVMe TCP Transport Specification 1.0): the common header, the PDU-specific
//! headers this target receives and sends, the checks on what a host sends, and CRC32C digests.
//!
//! Every PDU starts with an 8-byte common header (type, flags, HLEN, PDO, PLEN); a header
//! digest follows the header, data starts at PDO, and a data digest follows the data.

use nvme_spec::{Cqe, FromBytes, IntoBytes, Sqe};

/// Common header bytes.
pub const CH_BYTES: usize = 8;
/// Header and data digests: CRC32C, 4 bytes.
pub const DIGEST_BYTES: usize = 4;
/// ICReq and ICResp: the whole PDU.
pub const IC_BYTES: usize = 128;
/// Command capsule header: common header + SQE.
pub const CMD_HLEN: usize = CH_BYTES + 64;
/// Response capsule: common header + CQE.
pub const RSP_HLEN: usize = CH_BYTES + 16;
/// H2CData, C2HData, R2T and the termination requests.
pub const DATA_HLEN: usize = 24;
/// Most bytes of the offending PDU header a termination request carries.
pub const TERM_MAX_DATA: usize = 128;
/// Longest header (with digest) this target reads: a command capsule's.
pub const MAX_HEADER_BYTES: usize = CMD_HLEN + DIGEST_BYTES;

/// PDU types.
pub mod pdu_type {
    pub const ICREQ: u8 = 0x00;
    pub const ICRESP: u8 = 0x01;
    pub const H2C_TERM: u8 = 0x02;
    pub const C2H_TERM: u8 = 0x03;
    pub const CAPSULE_CMD: u8 = 0x04;
    pub const CAPSULE_RESP: u8 = 0x05;
    pub const H2C_DATA: u8 = 0x06;
    pub const C2H_DATA: u8 = 0x07;
    pub const R2T: u8 = 0x09;
}

/// Common header flags.
pub mod flags {
    pub const HDGST: u8 = 1 << 0;
    pub const DDGST: u8 = 1 << 1;
    /// H2CData/C2HData: the last PDU of the transfer (of an R2T's, for H2C).
    pub const DATA_LAST: u8 = 1 << 2;
    /// C2HData: the command succeeded; no response capsule follows.
    pub const DATA_SUCCESS: u8 = 1 << 3;
}

/// ICReq/ICResp DGST field.
pub mod digest_bits {
    pub const HEADER: u8 = 1 << 0;
    pub const DATA: u8 = 1 << 1;
}

/// Fatal Error Status of a termination request.
pub mod fes {
    pub const INVALID_PDU_HEADER: u16 = 0x01;
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// Byte offsets of fields a termination request may name (FEI).
pub mod field {
    pub const TYPE: u32 = 0;
    pub const FLAGS: u32 = 1;
    pub const HLEN: u32 = 2;
    pub const PDO: u32 = 3;
    pub const PLEN: u32 = 4;
    pub const ICREQ_PFV: u32 = 8;
    pub const ICREQ_HPDA: u32 = 10;
    pub const ICREQ_DGST: u32 = 11;
    pub const CCCID: u32 = 8;
    pub const TTAG: u32 = 10;
    pub const DATAO: u32 = 12;
    pub const DATAL: u32 = 16;
}

/// The common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    pub fn parse(b: &[u8]) -> CommonHeader {
        CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.pdu_type;
        b[1] = self.flags;
        b[2] = self.hlen;
        b[3] = self.pdo;
        b[4..8].copy_from_slice(&self.plen.to_le_bytes());
    }
}

/// A fatal protocol error: the connection ends with a C2HTermReq carrying these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fatal {
    pub fes: u16,
    /// Fatal Error Information: for an invalid header field, its byte offset.
    pub fei: u32,
    /// What was wrong, for the log.
    pub why: &'static str,
}

impl Fatal {
    pub fn new(fes: u16, fei: u32, why: &'static str) -> Fatal {
        Fatal { fes, fei, why }
    }
    fn header(fei: u32, why: &'static str) -> Fatal {
        Fatal::new(fes::INVALID_PDU_HEADER, fei, why)
    }
}

/// What an ICReq asked for, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// Host PDU data alignment, in bytes (HPDA + 1 dwords).
    pub data_alignment_bytes: u32,
    pub header_digest: bool,
    pub data_digest: bool,
    /// R2Ts the host takes outstanding per command (MAXR2T + 1).
    pub max_r2t_per_command: u32,
}

/// Checks an ICReq (all 128 bytes).
pub fn parse_icreq(b: &[u8; IC_BYTES]) -> Result<IcReq, Fatal> {
    let ch = CommonHeader::parse(b);
    if ch.pdu_type != pdu_type::ICREQ {
        return Err(Fatal::new(
            fes::PDU_SEQUENCE_ERROR,
            field::TYPE,
            "the first PDU of a connection must be an ICReq",
        ));
    }
    if usize::from(ch.hlen) != IC_BYTES {
        return Err(Fatal::header(field::HLEN, "ICReq HLEN is not 128"));
    }
    if ch.plen as usize != IC_BYTES {
        return Err(Fatal::header(field::PLEN, "ICReq PLEN is not 128"));
    }
    if ch.pdo != 0 {
        return Err(Fatal::header(field::PDO, "ICReq PDO is not 0"));
    }
    let pfv = u16::from_le_bytes([b[8], b[9]]);
    if pfv != 0 {
        return Err(Fatal::new(
            fes::UNSUPPORTED_PARAMETER,
            field::ICREQ_PFV,
            "ICReq PFV is not 0 (the only version defined)",
        ));
    }
    let hpda = b[10];
    if hpda > 31 {
        return Err(Fatal::header(field::ICREQ_HPDA, "ICReq HPDA exceeds 31"));
    }
    let dgst = b[11];
    if dgst & !(digest_bits::HEADER | digest_bits::DATA) != 0 {
        return Err(Fatal::header(
            field::ICREQ_DGST,
            "ICReq DGST has reserved bits set",
        ));
    }
    let maxr2t = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    Ok(IcReq {
        data_alignment_bytes: (u32::from(hpda) + 1) * 4,
        header_digest: dgst & digest_bits::HEADER != 0,
        data_digest: dgst & digest_bits::DATA != 0,
        max_r2t_per_command: maxr2t.saturating_add(1),
    })
}

/// An ICReq as a host sends it: PFV 0, HPDA 0, MAXR2T 0, the digests it asks for.
pub fn icreq(digests: Digests) -> [u8; IC_BYTES] {
    let mut b = [0u8; IC_BYTES];
    CommonHeader {
        pdu_type: pdu_type::ICREQ,
        flags: 0,
        hlen: IC_BYTES as u8,
        pdo: 0,
        plen: IC_BYTES as u32,
    }
    .write(&mut b);
    b[11] = digests.dgst_field();
    b
}

/// The ICResp: PFV 0, CPDA 0 (no alignment asked of the host), the digests granted, and
/// the most data one H2CData PDU may carry.
pub fn icresp(req: &IcReq, max_h2c_data_bytes: u32) -> [u8; IC_BYTES] {
    let mut b = [0u8; IC_BYTES];
    CommonHeader {
        pdu_type: pdu_type::ICRESP,
        flags: 0,
        hlen: IC_BYTES as u8,
        pdo: 0,
        plen: IC_BYTES as u32,
    }
    .write(&mut b);
    b[11] = Digests {
        header: req.header_digest,
        data: req.data_digest,
    }
    .dgst_field();
    b[12..16].copy_from_slice(&max_h2c_data_bytes.to_le_bytes());
    b
}

/// A C2HTermReq: FES, FEI, and (up to 128 bytes of) the offending PDU header.
pub fn c2h_term_req(
    fatal: &Fatal,
    offending: &[u8],
    out: &mut [u8; DATA_HLEN + TERM_MAX_DATA],
) -> usize {
    let data = &offending[..offending.len().min(TERM_MAX_DATA)];
    let plen = DATA_HLEN + data.len();
    out.fill(0);
    CommonHeader {
        pdu_type: pdu_type::C2H_TERM,
        flags: 0,
        hlen: DATA_HLEN as u8,
        pdo: if data.is_empty() { 0 } else { DATA_HLEN as u8 },
        plen: plen as u32,
    }
    .write(out);
    out[8..10].copy_from_slice(&fatal.fes.to_le_bytes());
    out[10..14].copy_from_slice(&fatal.fei.to_le_bytes());
    out[DATA_HLEN..plen].copy_from_slice(data);
    plen
}

/// Negotiated per connection: which digests each PDU carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

impl Digests {
    /// The DGST field of an ICReq or ICResp.
    pub fn dgst_field(&self) -> u8 {
        let mut d = 0;
        if self.header {
            d |= digest_bits::HEADER;
        }
        if self.data {
            d |= digest_bits::DATA;
        }
        d
    }

    pub fn header_bytes(&self) -> usize {
        if self.header {
            DIGEST_BYTES
        } else {
            0
        }
    }
    pub fn data_bytes(&self) -> usize {
        if self.data {
            DIGEST_BYTES
        } else {
            0
        }
    }
}

/// The header length of each PDU type a host may send after the ICReq; None for the rest.
pub fn host_pdu_hlen(pdu_type: u8) -> Option<usize> {
    match pdu_type {
        pdu_type::CAPSULE_CMD => Some(CMD_HLEN),
        pdu_type::H2C_DATA => Some(DATA_HLEN),
        pdu_type::H2C_TERM => Some(DATA_HLEN),
        _ => None,
    }
}

/// Where a received PDU's data is, once its common header passed `check_common_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduLayout {
    pub hlen: usize,
    /// Header digest bytes after the header (0 or 4).
    pub hdgst: usize,
    /// Data bytes (0: none).
    pub data_len: usize,
    /// Padding between the header (and its digest) and the data.
    pub pad: usize,
    /// Data digest bytes after the data (0 or 4).
    pub ddgst: usize,
}

impl PduLayout {
    /// Bytes from the start of the PDU to the end of the header digest.
    pub fn header_bytes(&self) -> usize {
        self.hlen + self.hdgst
    }
}

/// Checks a host PDU's common header against the connection's digests and `max_data_bytes`
/// (for its type); returns where its parts are.
pub fn check_common_header(
    ch: &CommonHeader,
    digests: Digests,
    max_data_bytes: usize,
) -> Result<PduLayout, Fatal> {
    if ch.pdu_type == pdu_type::ICREQ {
        return Err(Fatal::new(
            fes::PDU_SEQUENCE_ERROR,
            field::TYPE,
            "a second ICReq on a connection",
        ));
    }
    let Some(hlen) = host_pdu_hlen(ch.pdu_type) else {
        return Err(Fatal::header(field::TYPE, "a PDU type a host may not send"));
    };
    if usize::from(ch.hlen) != hlen {
        return Err(Fatal::header(field::HLEN, "HLEN is wrong for the PDU type"));
    }
    if ch.pdu_type == pdu_type::H2C_TERM {
        // The host ends the connection: no digests, and its data is only read for the log.
        let plen = ch.plen as usize;
        if !(hlen..=hlen + TERM_MAX_DATA).contains(&plen) {
            return Err(Fatal::header(field::PLEN, "H2CTermReq PLEN out of range"));
        }
        return Ok(PduLayout {
            hlen,
            hdgst: 0,
            data_len: plen - hlen,
            pad: 0,
            ddgst: 0,
        });
    }
    let hdgst = digests.header_bytes();
    if (ch.flags & flags::HDGST != 0) != digests.header {
        return Err(Fatal::header(
            field::FLAGS,
            "HDGST flag differs from what the ICReq negotiated",
        ));
    }
    let plen = ch.plen as usize;
    if plen < hlen + hdgst {
        return Err(Fatal::header(
            field::PLEN,
            "PLEN is shorter than the header",
        ));
    }
    if plen == hlen + hdgst {
        if ch.pdo != 0 || ch.flags & flags::DDGST != 0 {
            return Err(Fatal::header(
                field::PDO,
                "PDO or DDGST set on a PDU without data",
            ));
        }
        if ch.pdu_type == pdu_type::H2C_DATA {
            return Err(Fatal::header(field::PLEN, "H2CData PDU without data"));
        }
        return Ok(PduLayout {
            hlen,
            hdgst,
            data_len: 0,
            pad: 0,
            ddgst: 0,
        });
    }
    let ddgst = digests.data_bytes();
    if (ch.flags & flags::DDGST != 0) != digests.data {
        return Err(Fatal::header(
            field::FLAGS,
            "DDGST flag differs from what the ICReq negotiated",
        ));
    }
    let pdo = usize::from(ch.pdo);
    // This target asks for no alignment (CPDA 0): data follows the header (digest) at once.
    if pdo != hlen + hdgst {
        return Err(Fatal::header(
            field::PDO,
            "PDO is not where the data must start",
        ));
    }
    if plen < pdo + ddgst + 1 {
        return Err(Fatal::header(
            field::PLEN,
            "PLEN leaves no room for the data",
        ));
    }
    let data_len = plen - pdo - ddgst;
    if data_len > max_data_bytes {
        return Err(Fatal::new(
            fes::DATA_LIMIT_EXCEEDED,
            0,
            "the PDU carries more data than this target allows",
        ));
    }
    Ok(PduLayout {
        hlen,
        hdgst,
        data_len,
        pad: 0,
        ddgst,
    })
}

/// Checks a header digest: CRC32C of the header, stored little-endian after it.
pub fn header_digest_ok(header: &[u8], digest: &[u8]) -> bool {
    crc32c::crc32c(header).to_le_bytes() == digest[..DIGEST_BYTES]
}

/// A running data digest over pieces of data.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataDigest(u32);

impl DataDigest {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }
    pub fn bytes(&self) -> [u8; DIGEST_BYTES] {
        self.0.to_le_bytes()
    }
}

/// H2CData header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2cData {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    pub datal: u32,
    pub last: bool,
}

pub fn parse_h2c_data(h: &[u8]) -> H2cData {
    H2cData {
        cccid: u16::from_le_bytes([h[8], h[9]]),
        ttag: u16::from_le_bytes([h[10], h[11]]),
        datao: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
        datal: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
        last: h[1] & flags::DATA_LAST != 0,
    }
}

/// The SQE of a command capsule header.
pub fn capsule_sqe(h: &[u8]) -> Sqe {
    Sqe::read_from_bytes(&h[CH_BYTES..CMD_HLEN]).expect("64 bytes")
}

/// Writes a header digest after `hlen` bytes of `pdu` when `digests.header`.
fn seal_header(pdu: &mut [u8], hlen: usize, digests: Digests) {
    if digests.header {
        let crc = crc32c::crc32c(&pdu[..hlen]);
        pdu[hlen..hlen + DIGEST_BYTES].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Longest PDU header this target sends (C2HData with digest and the largest alignment pad).
pub const MAX_SEND_HEADER_BYTES: usize = DATA_HLEN + DIGEST_BYTES + 128;

/// A response capsule for `cqe`; returns its length.
pub fn capsule_resp(cqe: &Cqe, digests: Digests, out: &mut [u8; MAX_SEND_HEADER_BYTES]) -> usize {
    let len = RSP_HLEN + digests.header_bytes();
    CommonHeader {
        pdu_type: pdu_type::CAPSULE_RESP,
        flags: if digests.header { flags::HDGST } else { 0 },
        hlen: RSP_HLEN as u8,
        pdo: 0,
        plen: len as u32,
    }
    .write(out);
    out[CH_BYTES..RSP_HLEN].copy_from_slice(cqe.as_bytes());
    seal_header(out, RSP_HLEN, digests);
    len
}

/// An R2T for `len` bytes from `offset` of command `cccid`; returns its length.
pub fn r2t(
    cccid: u16,
    ttag: u16,
    offset: u32,
    len: u32,
    digests: Digests,
    out: &mut [u8; MAX_SEND_HEADER_BYTES],
) -> usize {
    let total = DATA_HLEN + digests.header_bytes();
    out[..DATA_HLEN].fill(0);
    CommonHeader {
        pdu_type: pdu_type::R2T,
        flags: if digests.header { flags::HDGST } else { 0 },
        hlen: DATA_HLEN as u8,
        pdo: 0,
        plen: total as u32,
    }
    .write(out);
    out[8..10].copy_from_slice(&cccid.to_le_bytes());
    out[10..12].copy_from_slice(&ttag.to_le_bytes());
    out[12..16].copy_from_slice(&offset.to_le_bytes());
    out[16..20].copy_from_slice(&len.to_le_bytes());
    seal_header(out, DATA_HLEN, digests);
    total
}

/// The header of a C2HData PDU carrying all `len` bytes of command `cccid` (one PDU per
/// command), padded so the data starts on the host's alignment; `success`: no response
/// capsule follows. Returns the header length (the data's offset in the PDU).
pub fn c2h_data_header(
    cccid: u16,
    len: u32,
    success: bool,
    digests: Digests,
    data_alignment_bytes: u32,
    out: &mut [u8; MAX_SEND_HEADER_BYTES],
) -> usize {
    let unpadded = DATA_HLEN + digests.header_bytes();
    let align = data_alignment_bytes.max(1) as usize;
    let pdo = unpadded.div_ceil(align) * align;
    assert!(pdo <= MAX_SEND_HEADER_BYTES && pdo <= usize::from(u8::MAX));
    out[..pdo].fill(0);
    let mut f = flags::DATA_LAST;
    if success {
        f |= flags::DATA_SUCCESS;
    }
    if digests.header {
        f |= flags::HDGST;
    }
    if digests.data {
        f |= flags::DDGST;
    }
    CommonHeader {
        pdu_type: pdu_type::C2H_DATA,
        flags: f,
        hlen: DATA_HLEN as u8,
        pdo: pdo as u8,
        plen: (pdo + len as usize + digests.data_bytes()) as u32,
    }
    .write(out);
    out[8..10].copy_from_slice(&cccid.to_le_bytes());
    out[12..16].copy_from_slice(&0u32.to_le_bytes()); // DATAO: the whole transfer
    out[16..20].copy_from_slice(&len.to_le_bytes());
    seal_header(out, DATA_HLEN, digests);
    pdo
}

#[cfg(test)]
mod tests;
