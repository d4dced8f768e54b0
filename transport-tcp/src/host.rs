//! A blocking NVMe/TCP host for tests and for the benchmark client's set-up: it sends what
//! the Linux host sends (ICReq, Connect
//! with in-capsule data, properties, Identify, reads by C2HData, writes in the capsule or
//! by R2T and H2CData), with or without digests, and checks every PDU it gets back. It also
//! sends raw bytes, for the negative tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nvme_spec::fabrics::{self, cc, csts, property, ConnectData};
use nvme_spec::{put_str_nul_padded, Cqe, FromBytes, FromZeros, IntoBytes, SglDescriptor, Sqe};

use crate::pdu::{
    self, flags, pdu_type, CommonHeader, DataDigest, Digests, CH_BYTES, CMD_HLEN, DATA_HLEN,
    DIGEST_BYTES, IC_BYTES, RSP_HLEN,
};

/// A PDU the host received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    pub ch: CommonHeader,
    /// The PDU-specific header after the common header (digest removed).
    pub header: Vec<u8>,
    pub data: Vec<u8>,
}

impl Pdu {
    /// FES and FEI of a termination request.
    pub fn term(&self) -> Option<(u16, u32)> {
        (self.ch.pdu_type == pdu_type::C2H_TERM).then(|| {
            let h = &self.header;
            (
                u16::from_le_bytes([h[0], h[1]]),
                u32::from_le_bytes([h[2], h[3], h[4], h[5]]),
            )
        })
    }
}

/// One NVMe/TCP connection from the host side.
pub struct TcpHost {
    pub stream: TcpStream,
    pub digests: Digests,
    /// MAXH2CDATA from the ICResp.
    pub max_h2c_data: u32,
    /// Largest in-capsule data this host sends (the queue's).
    pub in_capsule_bytes: u32,
    /// The CATTR byte `fabrics_connect` sends (e.g. `fabrics::CATTR_DISABLE_SQFLOW`).
    pub connect_cattr: u8,
    /// Commands that ended with a C2HData carrying SUCCESS (no response capsule).
    pub success_flag_completions: u64,
    next_cid: u16,
}

impl TcpHost {
    /// Connects and exchanges ICReq/ICResp, asking for the digests in `digests`.
    pub fn connect(addr: SocketAddr, digests: Digests) -> io::Result<TcpHost> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut host = TcpHost {
            stream,
            digests,
            max_h2c_data: 0,
            in_capsule_bytes: crate::ADMIN_IN_CAPSULE_BYTES,
            connect_cattr: 0,
            success_flag_completions: 0,
            next_cid: 1,
        };
        host.stream.write_all(&pdu::icreq(digests))?;
        let mut resp = [0u8; IC_BYTES];
        host.stream.read_exact(&mut resp)?;
        let ch = CommonHeader::parse(&resp);
        if ch.pdu_type != pdu_type::ICRESP || ch.plen as usize != IC_BYTES {
            return Err(io::Error::other(format!("not an ICResp: {ch:?}")));
        }
        if resp[11] != digests.dgst_field() {
            return Err(io::Error::other("the target granted other digests"));
        }
        host.max_h2c_data = u32::from_le_bytes(resp[12..16].try_into().expect("4 bytes"));
        Ok(host)
    }

    pub fn cid(&mut self) -> u16 {
        let c = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        c
    }

    /// Sends raw bytes (negative tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A PDU with this host's digests: header (common header included), then data.
    pub fn build_pdu(
        &self,
        pdu_type: u8,
        hlen: usize,
        header: &[u8],
        data: &[u8],
        extra_flags: u8,
    ) -> Vec<u8> {
        let hd = self.digests.header_bytes();
        let dd = if data.is_empty() {
            0
        } else {
            self.digests.data_bytes()
        };
        let pdo = if data.is_empty() { 0 } else { hlen + hd };
        let plen = hlen + hd + data.len() + dd;
        let mut f = extra_flags;
        if self.digests.header {
            f |= flags::HDGST;
        }
        if dd > 0 {
            f |= flags::DDGST;
        }
        let mut out = vec![0u8; hlen];
        out[CH_BYTES..hlen].copy_from_slice(&header[CH_BYTES..hlen]);
        CommonHeader {
            pdu_type,
            flags: f,
            hlen: hlen as u8,
            pdo: pdo as u8,
            plen: plen as u32,
        }
        .write(&mut out);
        if hd > 0 {
            let crc = crc32c::crc32c(&out[..hlen]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out.extend_from_slice(data);
        if dd > 0 {
            let mut d = DataDigest::default();
            d.update(data);
            out.extend_from_slice(&d.bytes());
        }
        out
    }

    /// A command capsule PDU for `sqe`, with `data` in the capsule.
    pub fn capsule(&self, sqe: &Sqe, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; CMD_HLEN];
        h[CH_BYTES..].copy_from_slice(sqe.as_bytes());
        self.build_pdu(pdu_type::CAPSULE_CMD, CMD_HLEN, &h, data, 0)
    }

    /// An H2CData PDU.
    pub fn h2c_data(&self, cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
        let mut h = vec![0u8; DATA_HLEN];
        h[8..10].copy_from_slice(&cccid.to_le_bytes());
        h[10..12].copy_from_slice(&ttag.to_le_bytes());
        h[12..16].copy_from_slice(&datao.to_le_bytes());
        h[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let f = if last { flags::DATA_LAST } else { 0 };
        self.build_pdu(pdu_type::H2C_DATA, DATA_HLEN, &h, data, f)
    }

    /// Reads one PDU, checking its digests.
    pub fn read_pdu(&mut self) -> io::Result<Pdu> {
        let mut chb = [0u8; CH_BYTES];
        self.stream.read_exact(&mut chb)?;
        let ch = CommonHeader::parse(&chb);
        let mut rest = vec![0u8; (ch.plen as usize).saturating_sub(CH_BYTES)];
        self.stream.read_exact(&mut rest)?;
        let hlen = usize::from(ch.hlen);
        let mut whole = chb.to_vec();
        whole.extend_from_slice(&rest);
        let term = ch.pdu_type == pdu_type::C2H_TERM;
        let hd = if ch.flags & flags::HDGST != 0 {
            DIGEST_BYTES
        } else {
            0
        };
        if !term && (hd > 0) != self.digests.header {
            return Err(io::Error::other(format!("HDGST flag wrong on {ch:?}")));
        }
        if hd > 0 && !pdu::header_digest_ok(&whole[..hlen], &whole[hlen..hlen + hd]) {
            return Err(io::Error::other("bad header digest from the target"));
        }
        let header = whole[CH_BYTES..hlen].to_vec();
        let data = if ch.pdo > 0 || (term && whole.len() > hlen) {
            let start = if term { hlen } else { usize::from(ch.pdo) };
            let dd = if ch.flags & flags::DDGST != 0 {
                DIGEST_BYTES
            } else {
                0
            };
            let end = whole.len() - dd;
            if dd > 0 {
                let mut d = DataDigest::default();
                d.update(&whole[start..end]);
                if d.bytes()[..] != whole[end..] {
                    return Err(io::Error::other("bad data digest from the target"));
                }
            }
            whole[start..end].to_vec()
        } else {
            Vec::new()
        };
        Ok(Pdu { ch, header, data })
    }

    /// Runs one command: `write` goes in the capsule when it fits, else by R2T; `read_len`
    /// bytes come back by C2HData. Returns the completion and the data read.
    pub fn exec(
        &mut self,
        mut sqe: Sqe,
        write: &[u8],
        read_len: u32,
    ) -> io::Result<(Cqe, Vec<u8>)> {
        let cid = self.cid();
        sqe.cid = cid.into();
        let in_capsule = !write.is_empty() && write.len() as u32 <= self.in_capsule_bytes;
        if in_capsule {
            sqe.dptr = SglDescriptor::data_block(0, write.len() as u32);
            let bytes = self.capsule(&sqe, write);
            self.stream.write_all(&bytes)?;
        } else {
            let len = if write.is_empty() {
                read_len
            } else {
                write.len() as u32
            };
            if len > 0 {
                sqe.dptr = SglDescriptor::transport_data_block(len);
            }
            let bytes = self.capsule(&sqe, &[]);
            self.stream.write_all(&bytes)?;
        }
        let mut read = Vec::new();
        loop {
            let p = self.read_pdu()?;
            match p.ch.pdu_type {
                pdu_type::R2T => {
                    let h = &p.header;
                    let cccid = u16::from_le_bytes([h[0], h[1]]);
                    let ttag = u16::from_le_bytes([h[2], h[3]]);
                    let off = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
                    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
                    if cccid != cid || off + len > write.len() {
                        return Err(io::Error::other(format!("unexpected R2T {p:?}")));
                    }
                    let chunk = self.max_h2c_data.max(1) as usize;
                    let mut at = off;
                    while at < off + len {
                        let n = chunk.min(off + len - at);
                        let last = at + n == off + len;
                        let pdu = self.h2c_data(cid, ttag, at as u32, &write[at..at + n], last);
                        self.stream.write_all(&pdu)?;
                        at += n;
                    }
                }
                pdu_type::C2H_DATA => {
                    let h = &p.header;
                    let cccid = u16::from_le_bytes([h[0], h[1]]);
                    let datao = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
                    if cccid != cid || datao != read.len() {
                        return Err(io::Error::other(format!("unexpected C2HData {p:?}")));
                    }
                    read.extend_from_slice(&p.data);
                    if p.ch.flags & flags::DATA_SUCCESS != 0 {
                        self.success_flag_completions += 1;
                        let mut cqe = Cqe::new_zeroed();
                        cqe.cid = cid.into();
                        return Ok((cqe, read));
                    }
                }
                pdu_type::CAPSULE_RESP => {
                    let cqe =
                        Cqe::read_from_bytes(&p.header[..RSP_HLEN - CH_BYTES]).expect("16 bytes");
                    if cqe.cid() != cid {
                        return Err(io::Error::other(format!("response for cid {}", cqe.cid())));
                    }
                    return Ok((cqe, read));
                }
                other => {
                    return Err(io::Error::other(format!(
                        "unexpected PDU type {other:#x}: {p:?}"
                    )))
                }
            }
        }
    }

    /// Fabrics Connect (data in the capsule, as Linux sends it on the admin queue).
    pub fn fabrics_connect(
        &mut self,
        qid: u16,
        sqsize_0based: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        kato_ms: u32,
    ) -> io::Result<Cqe> {
        let mut data = ConnectData::new_zeroed();
        data.hostid = [7; 16];
        data.cntlid = cntlid.into();
        put_str_nul_padded(&mut data.subnqn, subnqn);
        put_str_nul_padded(&mut data.hostnqn, hostnqn);
        let mut sqe =
            fabrics::connect_command(0, qid, sqsize_0based, kato_ms, SglDescriptor::default());
        fabrics::set_connect_cattr(&mut sqe, self.connect_cattr);
        Ok(self.exec(sqe, data.as_bytes(), 0)?.0)
    }

    pub fn prop_get(&mut self, offset: u32, eight: bool) -> io::Result<Cqe> {
        Ok(self
            .exec(fabrics::property_get_command(0, offset, eight), &[], 0)?
            .0)
    }

    pub fn prop_set(&mut self, offset: u32, value: u64) -> io::Result<Cqe> {
        Ok(self
            .exec(
                fabrics::property_set_command(0, offset, value, false),
                &[],
                0,
            )?
            .0)
    }

    /// What Linux does after Connect: CAP, CC.EN, CSTS until RDY, VS.
    pub fn enable(&mut self) -> io::Result<()> {
        let cap = self.prop_get(property::CAP, true)?;
        if !cap.status().is_success() {
            return Err(io::Error::other(format!(
                "Property Get CAP: {:?}",
                cap.status()
            )));
        }
        self.prop_set(property::CC, u64::from(cc::build(true, 6, 4, 0)))?;
        for _ in 0..100 {
            if self.prop_get(property::CSTS, false)?.dw0() & csts::RDY != 0 {
                return Ok(());
            }
        }
        Err(io::Error::other("CSTS.RDY never set"))
    }
}
