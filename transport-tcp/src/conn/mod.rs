//! One NVMe/TCP connection (one NVMe queue): the receive side parses PDUs from the socket
//! into request slots, the send side gathers R2Ts, C2HData and response capsules and writes
//! them with one vectored write per flush.
//!
//! Receive states (`RecvState`): `Header` (common header, then the rest and its digest) ─►
//! `Data` (into the request's buffer) ─► `Digest` ─► `Header`; `CapsuleNeedsBuffer` while no
//! buffer is free for in-capsule data; `Discard` for data of a refused command. Bytes come
//! through a 16 KiB staging buffer, one read per refill: the part of a payload that arrived
//! with its header is copied once from there, the rest is read straight into the data
//! buffer (`read_vectored`).

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

mod recv;
mod send;

/// Staging buffer for headers and small payloads.
const STAGE_BYTES: usize = 16 * 1024;
/// Slices one vectored read or write takes at most.
const MAX_IOV: usize = 64;

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
    /// SUCCESS on the last C2HData may replace the response (`TcpOptions::c2h_success`).
    pub c2h_success: bool,
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
    /// Commands failed for a data digest mismatch.
    digest_errors: u64,
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
            digest_errors: 0,
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
        let success_only = self.sqflow_disabled && self.params.c2h_success;
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
        if self.digest_errors > 1 {
            log::warn!(
                "NVMe/TCP queue {}: {} commands failed for data digest mismatches",
                self.qid,
                self.digest_errors
            );
        }
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
