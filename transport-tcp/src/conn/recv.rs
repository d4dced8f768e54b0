//! The receive side of a connection: PDUs parsed from the staged bytes (or read straight
//! into a request's buffer) and handed to the request state machine.

use super::*;

impl Conn {
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
            self.sqflow_disabled =
                sqe.connect_cattr() & nvme_spec::fabrics::CATTR_DISABLE_SQFLOW != 0;
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
            // Not fatal: the command fails with a status the host retries. One line per
            // connection (the count comes when it closes): a bad link must not flood the log.
            self.digest_errors += 1;
            if self.digest_errors == 1 {
                log::warn!(
                    "NVMe/TCP queue {}: data digest mismatch on command {}; failing it for \
                     the host to retry",
                    self.qid,
                    s.req.cmd.cid()
                );
            }
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
}
