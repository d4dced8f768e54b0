//! The send side of a connection: R2Ts, C2HData and response capsules queued per request
//! and written with one vectored write per batch of slices.

use super::*;

impl Conn {
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
}
