//! One NVMe/TCP connection (one NVMe queue): the receive side parses PDUs from the socket
//! into request slots, the send side gathers R2Ts, C2HData and response capsules and writes
//! them with one vectored write per flush.
//!
//! Receive states (`RecvState`): `Header` (common header, then the rest and its digest) ─►
//! `Data` (into the request's buffer) ─► `Digest` ─► `Header`; `CapsuleNeedsBuffer` while no
//! buffer is free for in-capsule data; `Discard` for data of a refused command. Bytes come
//! through a small staging buffer, one read per refill; the part of a payload not already
//! staged is read straight into the data buffer (`read_vectored`), never copied.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};

use dma::PoolCache;
use mio::net::TcpStream;
use nvme_spec::fabrics::ConnectCommand;
use nvme_spec::opcode::fctype;
use nvme_spec::Status;
use nvmf::transport::{Request, Xfer};

use crate::pdu::{
    self, check_common_header, fes, field, pdu_type, CommonHeader, DataDigest, Digests, Fatal,
    PduLayout, CH_BYTES, DATA_HLEN, DIGEST_BYTES, MAX_HEADER_BYTES, MAX_SEND_HEADER_BYTES,
    TERM_MAX_DATA,
};
use crate::plan::{plan, TcpPlan};
use crate::request::{Action, DataNeed, Input, RequestState, RequestTable};

/// Staging buffer for headers and small payloads.
const STAGE_BYTES: usize = 16 * 1024;
/// Slices one vectored read or write takes at most.
const MAX_IOV: usize = 64;
/// Connect's CATTR bit: the host disabled SQ flow control.
const CATTR_DISABLE_SQFLOW: u8 = 1 << 2;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    Live,
    /// A fatal error: the C2HTermReq is queued, then the socket closes.
    Terminating,
    /// Closed; its requests were released or orphaned.
    Dead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataKind {
    Capsule,
    H2c,
}

#[derive(Clone, Copy, Debug)]
enum RecvState {
    Header,
    CapsuleNeedsBuffer {
        slot: u16,
        len: u32,
    },
    Data {
        slot: u16,
        at: u32,
        left: u32,
        kind: DataKind,
        digest: DataDigest,
    },
    Digest {
        slot: u16,
        kind: DataKind,
        expected: [u8; DIGEST_BYTES],
        have: usize,
    },
    /// Dropping `left` bytes; then `slot` (if any) is reported with its transport status.
    Discard {
        slot: Option<u16>,
        left: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendItem {
    R2t(u16),
    C2hData(u16),
    Resp(u16),
    Term,
}

/// Per request: the target's view, and the PDUs this side builds for it.
struct SlotIo {
    req: Request,
    /// Bytes the command moves (its SGL length).
    len: u32,
    /// Host-to-controller bytes received so far.
    received: u32,
    r2t: [u8; MAX_SEND_HEADER_BYTES],
    r2t_len: usize,
    c2h: [u8; MAX_SEND_HEADER_BYTES],
    c2h_len: usize,
    /// Data bytes the C2HData PDU carries.
    c2h_data: u32,
    c2h_digest: [u8; DIGEST_BYTES],
    rsp: [u8; MAX_SEND_HEADER_BYTES],
    rsp_len: usize,
    /// The C2HData carries SUCCESS: no response capsule follows.
    c2h_is_last: bool,
}

/// What one receive pass ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvOutcome {
    /// The socket has no more bytes for now.
    Drained,
    /// The byte budget ran out; more may be waiting.
    Budget,
    /// Waiting for a buffer for in-capsule data.
    NeedBuffer,
    /// The host closed the connection, or the socket failed.
    Closed,
    /// A protocol violation: terminate.
    Fatal(Fatal),
}

/// Settings a connection runs with.
#[derive(Clone, Copy, Debug)]
pub struct ConnParams {
    pub digests: Digests,
    pub data_alignment_bytes: u32,
    pub in_capsule_limit_bytes: u32,
    pub max_io_bytes: u32,
    pub max_h2c_data_bytes: u32,
    pub unit_bytes: u32,
}

pub struct Conn {
    pub stream: TcpStream,
    pub qid: u16,
    pub state: ConnState,
    params: ConnParams,
    table: RequestTable,
    slots: Vec<SlotIo>,
    recv: RecvState,
    hdr: [u8; MAX_HEADER_BYTES],
    hdr_have: usize,
    /// Header bytes a termination request echoes (those of the PDU in error).
    offending_len: usize,
    layout: Option<PduLayout>,
    stage: Box<[u8]>,
    stage_pos: usize,
    stage_len: usize,
    /// The last read returned less than it asked for: the socket held no more then. Reading
    /// again would only return EAGAIN, so it waits for the next readable event, which
    /// (edge-triggered epoll) comes with every new arrival, not only on empty to non-empty.
    socket_drained: bool,
    send: VecDeque<SendItem>,
    /// Bytes of the front send item already written.
    front_sent: usize,
    term: [u8; DATA_HLEN + TERM_MAX_DATA],
    term_len: usize,
    /// Requests ready to be reported to the target, oldest first.
    pub ready: VecDeque<u16>,
    /// The host disabled SQ flow control at Connect: C2HData may carry SUCCESS.
    sqflow_disabled: bool,
}

impl Conn {
    pub fn new(stream: TcpStream, qid: u16, depth: u16, params: ConnParams) -> Conn {
        let slots = (0..depth)
            .map(|_| SlotIo {
                req: Request::new(),
                len: 0,
                received: 0,
                r2t: [0; MAX_SEND_HEADER_BYTES],
                r2t_len: 0,
                c2h: [0; MAX_SEND_HEADER_BYTES],
                c2h_len: 0,
                c2h_data: 0,
                c2h_digest: [0; DIGEST_BYTES],
                rsp: [0; MAX_SEND_HEADER_BYTES],
                rsp_len: 0,
                c2h_is_last: false,
            })
            .collect();
        Conn {
            stream,
            qid,
            state: ConnState::Live,
            params,
            table: RequestTable::new(depth),
            slots,
            recv: RecvState::Header,
            hdr: [0; MAX_HEADER_BYTES],
            hdr_have: 0,
            offending_len: CH_BYTES,
            layout: None,
            stage: vec![0; STAGE_BYTES].into_boxed_slice(),
            stage_pos: 0,
            stage_len: 0,
            socket_drained: false,
            // Per request at most an R2T, a C2HData and a response; and a TermReq.
            send: VecDeque::with_capacity(3 * usize::from(depth) + 1),
            front_sent: 0,
            term: [0; DATA_HLEN + TERM_MAX_DATA],
            term_len: 0,
            ready: VecDeque::with_capacity(usize::from(depth)),
            sqflow_disabled: false,
        }
    }

    pub fn request(&mut self, slot: u16) -> &mut Request {
        debug_assert_eq!(self.table.state(slot), RequestState::Executing);
        &mut self.slots[usize::from(slot)].req
    }

    pub fn has_buffer_waiters(&self) -> bool {
        self.table.next_waiting_for_buffer().is_some()
            || matches!(self.recv, RecvState::CapsuleNeedsBuffer { .. })
    }

    pub fn wants_flush(&self) -> bool {
        !self.send.is_empty()
    }

    /// Requests the target holds or that hold buffers.
    pub fn requests_in_use(&self) -> usize {
        self.table.in_use()
    }

    fn units(&self, len: u32) -> usize {
        (len as usize).div_ceil(self.params.unit_bytes as usize)
    }

    // ---- receive ---------------------------------------------------------------------

    /// One read into the empty staging buffer.
    fn refill(&mut self) -> Result<(), RecvOutcome> {
        debug_assert_eq!(self.stage_pos, self.stage_len);
        if self.socket_drained {
            return Err(RecvOutcome::Drained);
        }
        self.stage_pos = 0;
        self.stage_len = 0;
        match self.stream.read(&mut self.stage) {
            Ok(0) => Err(RecvOutcome::Closed),
            Ok(n) => {
                self.stage_len = n;
                self.socket_drained = n < self.stage.len();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(RecvOutcome::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(RecvOutcome::Closed),
        }
    }

    /// Reads and handles PDUs until the socket is drained or `budget_bytes` are consumed.
    pub fn receive(&mut self, cache: &mut PoolCache, budget_bytes: usize) -> RecvOutcome {
        // A readable event: the socket may hold bytes again.
        self.socket_drained = false;
        let mut consumed = 0;
        loop {
            if consumed >= budget_bytes {
                return RecvOutcome::Budget;
            }
            let step = match self.recv {
                RecvState::Header => self.recv_header(cache),
                RecvState::CapsuleNeedsBuffer { slot, len } => {
                    match cache.get_chain(self.units(len)) {
                        Some(buf) => {
                            self.start_capsule_data(slot, len, buf);
                            Ok(0)
                        }
                        None => return RecvOutcome::NeedBuffer,
                    }
                }
                RecvState::Data { .. } => self.recv_data(),
                RecvState::Digest { .. } => self.recv_digest(),
                RecvState::Discard { slot, left } => self.recv_discard(slot, left),
            };
            match step {
                Ok(n) => consumed += n,
                Err(outcome) => return outcome,
            }
        }
    }

    /// Takes up to `want` staged bytes (refilling when empty).
    fn take_staged(&mut self, want: usize) -> Result<(usize, usize), RecvOutcome> {
        if self.stage_pos == self.stage_len {
            self.refill()?;
        }
        let n = want.min(self.stage_len - self.stage_pos);
        let start = self.stage_pos;
        self.stage_pos += n;
        Ok((start, n))
    }

    fn recv_header(&mut self, cache: &mut PoolCache) -> Result<usize, RecvOutcome> {
        let want = match self.layout {
            None => CH_BYTES,
            Some(l) => l.header_bytes(),
        };
        let (start, n) = self.take_staged(want - self.hdr_have)?;
        self.hdr[self.hdr_have..self.hdr_have + n].copy_from_slice(&self.stage[start..start + n]);
        self.hdr_have += n;
        if self.hdr_have < want {
            return Ok(n);
        }
        if self.layout.is_none() {
            self.offending_len = CH_BYTES;
            let ch = CommonHeader::parse(&self.hdr);
            let max_data = match ch.pdu_type {
                pdu_type::CAPSULE_CMD => self.params.in_capsule_limit_bytes as usize,
                _ => self.params.max_h2c_data_bytes as usize,
            };
            let layout = check_common_header(&ch, self.params.digests, max_data)
                .map_err(RecvOutcome::Fatal)?;
            self.layout = Some(layout);
            if layout.header_bytes() > CH_BYTES {
                return Ok(n);
            }
        }
        let layout = self.layout.take().expect("set above");
        self.offending_len = layout.header_bytes().min(pdu::TERM_MAX_DATA);
        self.hdr_have = 0;
        self.on_header(layout, cache).map_err(RecvOutcome::Fatal)?;
        Ok(n)
    }

    fn on_header(&mut self, layout: PduLayout, cache: &mut PoolCache) -> Result<(), Fatal> {
        let hlen = layout.hlen;
        if layout.hdgst > 0 && !pdu::header_digest_ok(&self.hdr[..hlen], &self.hdr[hlen..]) {
            return Err(Fatal::new(
                fes::HEADER_DIGEST_ERROR,
                0,
                "header digest mismatch",
            ));
        }
        match self.hdr[0] {
            pdu_type::CAPSULE_CMD => self.on_capsule(layout, cache),
            pdu_type::H2C_DATA => self.on_h2c_data(layout),
            pdu_type::H2C_TERM => {
                let fes = u16::from_le_bytes([self.hdr[8], self.hdr[9]]);
                log::warn!(
                    "NVMe/TCP queue {}: the host ended the connection (H2CTermReq, FES {fes:#x})",
                    self.qid
                );
                Err(Fatal::new(0, 0, "H2CTermReq"))
            }
            _ => unreachable!("checked by check_common_header"),
        }
    }

    fn on_capsule(&mut self, layout: PduLayout, cache: &mut PoolCache) -> Result<(), Fatal> {
        let sqe = pdu::capsule_sqe(&self.hdr);
        let Some(slot) = self.table.take_free() else {
            return Err(Fatal::new(
                fes::PDU_SEQUENCE_ERROR,
                0,
                "more commands outstanding than the queue holds",
            ));
        };
        if sqe.is_fabrics() && sqe.fctype() == fctype::CONNECT {
            self.sqflow_disabled = sqe.connect_cattr() & CATTR_DISABLE_SQFLOW != 0;
        }
        let s = &mut self.slots[usize::from(slot)];
        s.req.reset(sqe);
        s.req.data_offset = 0;
        s.received = 0;
        let planned = plan(
            &sqe,
            self.params.in_capsule_limit_bytes,
            self.params.max_io_bytes,
        );
        let data_len = layout.data_len as u32;
        let (need, len, xfer, status) = match (planned, data_len) {
            (Ok(TcpPlan::InCapsule { len }), d) if d > 0 && d == len => {
                (DataNeed::InCapsule, len, Xfer::HostToController, None)
            }
            (Ok(TcpPlan::InCapsule { .. }), _) => (
                DataNeed::None,
                0,
                Xfer::None,
                Some(Status::DATA_SGL_LENGTH_INVALID),
            ),
            (Ok(_), d) if d > 0 => (
                DataNeed::None,
                0,
                Xfer::None,
                Some(Status::SGL_DESCRIPTOR_TYPE_INVALID),
            ),
            (Ok(TcpPlan::None), _) => (DataNeed::None, 0, Xfer::None, None),
            (Ok(TcpPlan::FromHost { len }), _) => {
                (DataNeed::FromHost, len, Xfer::HostToController, None)
            }
            (Ok(TcpPlan::ToHost { len }), _) => {
                (DataNeed::ToHost, len, Xfer::ControllerToHost, None)
            }
            (Err(status), _) => (DataNeed::None, 0, Xfer::None, Some(status)),
        };
        s.len = len;
        s.req.length = len;
        s.req.xfer = xfer;
        s.req.transport_status = status;
        if status.is_some() && data_len > 0 {
            // The command is refused, but its data is on the wire: read past it.
            self.table
                .advance(slot, Input::Capsule(DataNeed::InCapsule));
            self.recv = RecvState::Discard {
                slot: Some(slot),
                left: data_len + layout.ddgst as u32,
            };
            return Ok(());
        }
        if need == DataNeed::InCapsule {
            match cache.get_chain(self.units(len)) {
                Some(buf) => self.start_capsule_data(slot, len, buf),
                None => self.recv = RecvState::CapsuleNeedsBuffer { slot, len },
            }
            return Ok(());
        }
        let action = self.table.advance(slot, Input::Capsule(need));
        self.apply(slot, action, cache);
        Ok(())
    }

    fn start_capsule_data(&mut self, slot: u16, len: u32, buf: dma::DmaBuf) {
        self.slots[usize::from(slot)].req.data = Some(buf);
        let action = self
            .table
            .advance(slot, Input::Capsule(DataNeed::InCapsule));
        debug_assert_eq!(action, Action::ReadCapsuleData);
        self.recv = RecvState::Data {
            slot,
            at: 0,
            left: len,
            kind: DataKind::Capsule,
            digest: DataDigest::default(),
        };
    }

    fn on_h2c_data(&mut self, layout: PduLayout) -> Result<(), Fatal> {
        let h = pdu::parse_h2c_data(&self.hdr);
        let slot = h.ttag;
        let known = usize::from(slot) < self.slots.len()
            && self.table.state(slot) == RequestState::AwaitingH2cData;
        if !known {
            return Err(Fatal::new(
                fes::PDU_SEQUENCE_ERROR,
                field::TTAG,
                "H2CData for no R2T of this connection",
            ));
        }
        let s = &self.slots[usize::from(slot)];
        if s.req.cmd.cid() != h.cccid {
            return Err(Fatal::new(
                fes::INVALID_PDU_HEADER,
                field::CCCID,
                "H2CData CCCID does not match its transfer tag",
            ));
        }
        if h.datal as usize != layout.data_len {
            return Err(Fatal::new(
                fes::INVALID_PDU_HEADER,
                field::DATAL,
                "H2CData DATAL differs from the PDU's data length",
            ));
        }
        if h.datao != s.received {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                field::DATAO,
                "H2CData DATAO is not where the transfer stands",
            ));
        }
        let end = u64::from(h.datao) + u64::from(h.datal);
        if end > u64::from(s.len) {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                field::DATAL,
                "H2CData goes past the end of the R2T",
            ));
        }
        if h.last != (end == u64::from(s.len)) {
            return Err(Fatal::new(
                fes::INVALID_PDU_HEADER,
                field::FLAGS,
                "H2CData LAST flag does not match the end of the R2T",
            ));
        }
        self.recv = RecvState::Data {
            slot,
            at: h.datao,
            left: h.datal,
            kind: DataKind::H2c,
            digest: DataDigest::default(),
        };
        Ok(())
    }

    fn recv_data(&mut self) -> Result<usize, RecvOutcome> {
        let RecvState::Data {
            slot,
            at,
            left,
            kind,
            mut digest,
        } = self.recv
        else {
            unreachable!()
        };
        let digesting = self.params.digests.data;
        let staged = self.stage_len - self.stage_pos;
        let s = &mut self.slots[usize::from(slot)];
        let buf = s
            .req
            .data
            .as_mut()
            .expect("data goes into the request's buffer");
        let n = if staged > 0 {
            let n = staged.min(left as usize);
            let src = &self.stage[self.stage_pos..self.stage_pos + n];
            let mut k = 0;
            for piece in buf.pieces_mut(at as usize, n) {
                piece.copy_from_slice(&src[k..k + piece.len()]);
                k += piece.len();
            }
            if digesting {
                digest.update(src);
            }
            self.stage_pos += n;
            n
        } else {
            // Straight from the socket into the buffer.
            let mut iov: [IoSliceMut<'_>; MAX_IOV] =
                std::array::from_fn(|_| IoSliceMut::new(&mut []));
            let mut count = 0;
            for piece in buf.pieces_mut(at as usize, left as usize).take(MAX_IOV) {
                iov[count] = IoSliceMut::new(piece);
                count += 1;
            }
            if self.socket_drained {
                return Err(RecvOutcome::Drained);
            }
            let wanted: usize = iov[..count].iter().map(|s| s.len()).sum();
            let n = match self.stream.read_vectored(&mut iov[..count]) {
                Ok(0) => return Err(RecvOutcome::Closed),
                Ok(n) => {
                    self.socket_drained = n < wanted;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(RecvOutcome::Drained)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(_) => return Err(RecvOutcome::Closed),
            };
            if digesting {
                for piece in buf.pieces(at as usize, n) {
                    digest.update(piece);
                }
            }
            n
        };
        let (at, left) = (at + n as u32, left - n as u32);
        if left > 0 {
            self.recv = RecvState::Data {
                slot,
                at,
                left,
                kind,
                digest,
            };
            return Ok(n);
        }
        if kind == DataKind::H2c {
            s.received = at;
        }
        if digesting {
            self.recv = RecvState::Digest {
                slot,
                kind,
                expected: digest.bytes(),
                have: 0,
            };
        } else {
            self.recv = RecvState::Header;
            self.data_done(slot, kind);
        }
        Ok(n)
    }

    fn recv_digest(&mut self) -> Result<usize, RecvOutcome> {
        let RecvState::Digest {
            slot,
            kind,
            expected,
            have,
        } = self.recv
        else {
            unreachable!()
        };
        let (start, n) = self.take_staged(DIGEST_BYTES - have)?;
        let matches = self.stage[start..start + n] == expected[have..have + n];
        let s = &mut self.slots[usize::from(slot)];
        if !matches && s.req.transport_status.is_none() {
            // Not fatal: the command fails with a status the host retries.
            log::warn!(
                "NVMe/TCP queue {}: data digest mismatch on command {}",
                self.qid,
                s.req.cmd.cid()
            );
            s.req.transport_status = Some(Status::TRANSIENT_TRANSPORT_ERROR.retryable());
        }
        if have + n < DIGEST_BYTES {
            self.recv = RecvState::Digest {
                slot,
                kind,
                expected,
                have: have + n,
            };
            return Ok(n);
        }
        self.recv = RecvState::Header;
        self.data_done(slot, kind);
        Ok(n)
    }

    fn recv_discard(&mut self, slot: Option<u16>, left: u32) -> Result<usize, RecvOutcome> {
        let (_, n) = self.take_staged(left as usize)?;
        let left = left - n as u32;
        if left > 0 {
            self.recv = RecvState::Discard { slot, left };
            return Ok(n);
        }
        self.recv = RecvState::Header;
        if let Some(slot) = slot {
            let action = self.table.advance(slot, Input::DataReceived);
            debug_assert_eq!(action, Action::Report);
            self.ready.push_back(slot);
        }
        Ok(n)
    }

    /// A capsule's data, or an H2CData PDU's, is all in.
    fn data_done(&mut self, slot: u16, kind: DataKind) {
        let s = &self.slots[usize::from(slot)];
        let complete = kind == DataKind::Capsule || s.received == s.len;
        if complete {
            let action = self.table.advance(slot, Input::DataReceived);
            debug_assert_eq!(action, Action::Report);
            self.ready.push_back(slot);
        }
    }

    // ---- transitions -----------------------------------------------------------------

    /// Carries out what the state machine asked for.
    fn apply(&mut self, slot: u16, action: Action, cache: &mut PoolCache) {
        match action {
            Action::None | Action::ReadCapsuleData => {}
            Action::SendR2t => {
                let s = &mut self.slots[usize::from(slot)];
                let len = s.len;
                let cid = s.req.cmd.cid();
                s.r2t_len = pdu::r2t(cid, slot, 0, len, self.params.digests, &mut s.r2t);
                self.push_send(SendItem::R2t(slot));
            }
            Action::Report => self.ready.push_back(slot),
            Action::Send => self.queue_response(slot),
            Action::Release => {
                let s = &mut self.slots[usize::from(slot)];
                if let Some(buf) = s.req.data.take() {
                    cache.put(buf);
                }
            }
        }
    }

    fn push_send(&mut self, item: SendItem) {
        assert!(
            self.send.len() < self.send.capacity(),
            "send queue sized for every request's PDUs"
        );
        self.send.push_back(item);
    }

    /// Gives buffers to waiting requests, oldest first; false when the cache ran dry.
    pub fn grant_buffers(&mut self, cache: &mut PoolCache) -> bool {
        while let Some(slot) = self.table.next_waiting_for_buffer() {
            let len = self.slots[usize::from(slot)].len;
            let Some(buf) = cache.get_chain(self.units(len)) else {
                return false;
            };
            self.slots[usize::from(slot)].req.data = Some(buf);
            let action = self.table.advance(slot, Input::BufferGranted);
            self.apply(slot, action, cache);
        }
        true
    }

    /// The next request to report, moved to `Executing`.
    pub fn pop_ready(&mut self) -> Option<u16> {
        let slot = self.ready.pop_front()?;
        let action = self.table.advance(slot, Input::Reported);
        debug_assert_eq!(action, Action::None);
        Some(slot)
    }

    /// The target finished the request.
    pub fn complete(&mut self, slot: u16, cache: &mut PoolCache) {
        let c2h = self.slots[usize::from(slot)].req.c2h_len();
        let action = self
            .table
            .advance(slot, Input::Executed { c2h_data: c2h > 0 });
        self.apply(slot, action, cache);
    }

    /// Builds the C2HData (when the command produced data) and the response capsule.
    fn queue_response(&mut self, slot: u16) {
        let digests = self.params.digests;
        let alignment = self.params.data_alignment_bytes;
        let success_only = self.sqflow_disabled;
        let s = &mut self.slots[usize::from(slot)];
        let c2h = s.req.c2h_len();
        let succeeded = s.req.rsp.status().is_success();
        s.c2h_is_last = false;
        if c2h > 0 {
            // SUCCESS replaces the response only where the host gave up SQ flow control.
            let success = success_only && succeeded;
            s.c2h_len = pdu::c2h_data_header(
                s.req.cmd.cid(),
                c2h,
                success,
                digests,
                alignment,
                &mut s.c2h,
            );
            s.c2h_data = c2h;
            if digests.data {
                let mut d = DataDigest::default();
                for chunk in s.req.c2h_chunks() {
                    d.update(chunk);
                }
                s.c2h_digest = d.bytes();
            }
            s.c2h_is_last = success;
            self.push_send(SendItem::C2hData(slot));
            if success {
                return;
            }
        }
        let s = &mut self.slots[usize::from(slot)];
        s.rsp_len = pdu::capsule_resp(&s.req.rsp, digests, &mut s.rsp);
        self.push_send(SendItem::Resp(slot));
    }

    // ---- send ------------------------------------------------------------------------

    fn item_len(&self, item: SendItem) -> usize {
        match item {
            SendItem::R2t(s) => self.slots[usize::from(s)].r2t_len,
            SendItem::Resp(s) => self.slots[usize::from(s)].rsp_len,
            SendItem::C2hData(s) => {
                let s = &self.slots[usize::from(s)];
                s.c2h_len + s.c2h_data as usize + self.params.digests.data_bytes()
            }
            SendItem::Term => self.term_len,
        }
    }

    /// Fills `iov` with the bytes of the queued items, skipping what was written.
    fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOV]) -> usize {
        let mut count = 0;
        let mut skip = self.front_sent;
        let mut push = |bytes: &'a [u8], count: &mut usize| -> bool {
            if *count == MAX_IOV {
                return false;
            }
            if skip >= bytes.len() {
                skip -= bytes.len();
                return true;
            }
            iov[*count] = IoSlice::new(&bytes[skip..]);
            skip = 0;
            *count += 1;
            true
        };
        'items: for &item in &self.send {
            match item {
                SendItem::R2t(s) => {
                    let s = &self.slots[usize::from(s)];
                    if !push(&s.r2t[..s.r2t_len], &mut count) {
                        break;
                    }
                }
                SendItem::Resp(s) => {
                    let s = &self.slots[usize::from(s)];
                    if !push(&s.rsp[..s.rsp_len], &mut count) {
                        break;
                    }
                }
                SendItem::C2hData(s) => {
                    let s = &self.slots[usize::from(s)];
                    if !push(&s.c2h[..s.c2h_len], &mut count) {
                        break;
                    }
                    for chunk in s.req.c2h_chunks() {
                        if !push(chunk, &mut count) {
                            break 'items;
                        }
                    }
                    if self.params.digests.data && !push(&s.c2h_digest, &mut count) {
                        break;
                    }
                }
                SendItem::Term => {
                    if !push(&self.term[..self.term_len], &mut count) {
                        break;
                    }
                }
            }
        }
        count
    }

    /// Writes queued PDUs (one vectored write per batch of slices). Err: the socket failed.
    pub fn flush(&mut self, cache: &mut PoolCache) -> Result<(), ()> {
        // Bounded: each round writes something or stops.
        for _ in 0..1024 {
            if self.send.is_empty() {
                return Ok(());
            }
            let written = {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let count = self.gather(&mut iov);
                match (&self.stream).write_vectored(&iov[..count]) {
                    Ok(0) => return Err(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(_) => return Err(()),
                }
            };
            self.consume_sent(written, cache);
        }
        Ok(())
    }

    fn consume_sent(&mut self, mut n: usize, cache: &mut PoolCache) {
        while n > 0 {
            let item = *self
                .send
                .front()
                .expect("bytes written belong to queued items");
            let left = self.item_len(item) - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            self.send.pop_front();
            self.on_sent(item, cache);
        }
    }

    fn on_sent(&mut self, item: SendItem, cache: &mut PoolCache) {
        let done = match item {
            SendItem::R2t(_) | SendItem::Term => None,
            SendItem::C2hData(s) => self.slots[usize::from(s)].c2h_is_last.then_some(s),
            SendItem::Resp(s) => Some(s),
        };
        if let Some(slot) = done {
            let action = self.table.advance(slot, Input::SendDone);
            self.apply(slot, action, cache);
        }
    }

    // ---- errors and teardown ---------------------------------------------------------

    /// Queues the C2HTermReq for `fatal` in place of everything else queued.
    pub fn terminate(&mut self, fatal: &Fatal) {
        log::warn!(
            "NVMe/TCP queue {}: fatal protocol error ({}; FES {:#x}, FEI {}); closing the \
             connection",
            self.qid,
            fatal.why,
            fatal.fes,
            fatal.fei
        );
        // What was queued dies with the connection; a partly written PDU cannot be cut.
        let front = if self.front_sent > 0 {
            self.send.pop_front()
        } else {
            None
        };
        self.send.clear();
        if let Some(front) = front {
            self.send.push_back(front);
        }
        let offending = self.hdr;
        self.term_len = pdu::c2h_term_req(fatal, &offending[..self.offending_len], &mut self.term);
        self.push_send(SendItem::Term);
        self.state = ConnState::Terminating;
    }

    /// The connection is gone: every request not held by the target is released.
    pub fn kill(&mut self, cache: &mut PoolCache) {
        self.state = ConnState::Dead;
        self.send.clear();
        self.front_sent = 0;
        self.ready.clear();
        for slot in 0..self.slots.len() as u16 {
            let action = self.table.advance(slot, Input::ConnectionDead);
            self.apply(slot, action, cache);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
