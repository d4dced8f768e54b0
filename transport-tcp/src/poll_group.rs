//! One reactor's NVMe/TCP connections. A poll asks the kernel which sockets are ready (one
//! `epoll_wait` with no timeout, through mio) and touches only those, plus the connections on
//! its work lists: bytes left to read, requests waiting for buffers, requests to report.
//! `flush` writes each connection with something queued, one vectored write per batch.
//!
//! mio registers sockets edge-triggered: a socket that was not read to `WouldBlock` stays on
//! the `readable` list, or it would never be read again.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

use dma::PoolCache;
use mio::{Events, Interest, Poll, Token};
use nvmf::transport::{
    PendingQueue, Request, RequestId, TransportError, TransportEvent, TransportPollGroup,
};

use crate::conn::{Conn, ConnParams, ConnState, RecvOutcome};
use crate::Accepted;

/// Connections one poll group serves.
pub const MAX_CONNS_PER_POLL_GROUP: usize = 4096;
/// Readiness events taken per poll.
const EVENTS_PER_POLL: usize = 256;
/// Bytes one connection may consume per poll before the others get their turn.
const RECV_BUDGET_BYTES: usize = 256 * 1024;

/// A connection and the work lists it is on.
struct Entry {
    conn: Conn,
    on_readable: bool,
    on_flush: bool,
    on_report: bool,
    on_buffer: bool,
    disconnect_reported: bool,
}

pub struct TcpPollGroup {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Entry>>,
    cache: PoolCache,
    params: ConnParams,
    admin_depth: u16,
    io_depth: u16,
    admin_in_capsule_bytes: u32,
    readable: Vec<u16>,
    to_flush: Vec<u16>,
    to_report: VecDeque<u16>,
    need_buffer: VecDeque<u16>,
    disconnected: VecDeque<u16>,
}

impl TcpPollGroup {
    pub(crate) fn new(
        cache: PoolCache,
        params: ConnParams,
        admin_depth: u16,
        io_depth: u16,
        admin_in_capsule_bytes: u32,
    ) -> Result<TcpPollGroup, TransportError> {
        let poll = Poll::new()
            .map_err(|e| TransportError::Other(format!("cannot create an epoll instance: {e}")))?;
        Ok(TcpPollGroup {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            conns: Vec::new(),
            cache,
            params,
            admin_depth,
            io_depth,
            admin_in_capsule_bytes,
            readable: Vec::with_capacity(64),
            to_flush: Vec::with_capacity(64),
            to_report: VecDeque::with_capacity(64),
            need_buffer: VecDeque::with_capacity(64),
            disconnected: VecDeque::with_capacity(64),
        })
    }

    fn entry(&mut self, q: u16) -> Option<&mut Entry> {
        self.conns.get_mut(usize::from(q)).and_then(|e| e.as_mut())
    }

    /// Puts `q` on the lists its state asks for.
    fn list(&mut self, q: u16) {
        let Some(e) = self.conns[usize::from(q)].as_mut() else {
            return;
        };
        if e.conn.state == ConnState::Dead {
            return;
        }
        if !e.conn.ready.is_empty() && !e.on_report {
            e.on_report = true;
            self.to_report.push_back(q);
        }
        if e.conn.wants_flush() && !e.on_flush {
            e.on_flush = true;
            self.to_flush.push(q);
        }
        if e.conn.has_buffer_waiters() && !e.on_buffer {
            e.on_buffer = true;
            self.need_buffer.push_back(q);
        }
    }

    fn mark_readable(&mut self, q: u16) {
        if let Some(e) = self.entry(q) {
            if !e.on_readable && e.conn.state == ConnState::Live {
                e.on_readable = true;
                self.readable.push(q);
            }
        }
    }

    /// The connection is gone: release what it holds, report it once.
    fn kill(&mut self, q: u16) {
        let Some(e) = self.conns[usize::from(q)].as_mut() else {
            return;
        };
        if e.conn.state != ConnState::Dead {
            let _ = self.poll.registry().deregister(&mut e.conn.stream);
            e.conn.kill(&mut self.cache);
        }
        if !e.disconnect_reported {
            e.disconnect_reported = true;
            self.disconnected.push_back(q);
        }
    }

    fn receive(&mut self) {
        let mut i = 0;
        while i < self.readable.len() {
            let q = self.readable[i];
            let Some(e) = self.conns[usize::from(q)].as_mut() else {
                self.readable.swap_remove(i);
                continue;
            };
            let outcome = if e.conn.state == ConnState::Live {
                e.conn.receive(&mut self.cache, RECV_BUDGET_BYTES)
            } else {
                RecvOutcome::Drained
            };
            let keep = match outcome {
                RecvOutcome::Budget => true,
                RecvOutcome::Drained | RecvOutcome::NeedBuffer => false,
                RecvOutcome::Closed => {
                    self.kill(q);
                    false
                }
                RecvOutcome::Fatal(fatal) => {
                    let e = self.conns[usize::from(q)].as_mut().expect("present");
                    if fatal.fes != 0 {
                        e.conn.terminate(&fatal);
                        // One try to tell the host why; the socket closes either way.
                        let _ = e.conn.flush(&mut self.cache);
                    }
                    self.kill(q);
                    false
                }
            };
            if keep {
                i += 1;
            } else {
                if let Some(e) = self.conns[usize::from(q)].as_mut() {
                    e.on_readable = false;
                }
                self.readable.swap_remove(i);
            }
            self.list(q);
        }
    }

    fn grant_buffers(&mut self) {
        while let Some(&q) = self.need_buffer.front() {
            let Some(e) = self.conns[usize::from(q)].as_mut() else {
                self.need_buffer.pop_front();
                continue;
            };
            if e.conn.state == ConnState::Live && !e.conn.grant_buffers(&mut self.cache) {
                return; // the pool is dry: this connection keeps its turn
            }
            // In-capsule data waits in the receive path: reading resumes now.
            let waits_in_receive = e.conn.has_buffer_waiters();
            e.on_buffer = false;
            self.need_buffer.pop_front();
            if waits_in_receive {
                self.mark_readable(q);
            }
            self.list(q);
        }
    }

    fn report(&mut self, events: &mut Vec<TransportEvent>) {
        // Each connection reports what it has, in turn, until the event list is full.
        while events.len() < events.capacity() {
            let Some(q) = self.to_report.pop_front() else {
                return;
            };
            let Some(e) = self.conns[usize::from(q)].as_mut() else {
                continue;
            };
            while events.len() < events.capacity() {
                let Some(slot) = e.conn.pop_ready() else {
                    break;
                };
                events.push(TransportEvent::Request(RequestId { queue: q, slot }));
            }
            if e.conn.ready.is_empty() {
                e.on_report = false;
            } else {
                self.to_report.push_back(q);
            }
        }
    }
}

impl TransportPollGroup for TcpPollGroup {
    fn adopt(&mut self, pending: PendingQueue) -> Result<u16, TransportError> {
        let accepted = *pending
            .conn
            .downcast::<Accepted>()
            .map_err(|_| TransportError::Other("not an NVMe/TCP connection".into()))?;
        let idx = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.conns.len() < MAX_CONNS_PER_POLL_GROUP => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => {
                return Err(TransportError::Full(format!(
                    "{MAX_CONNS_PER_POLL_GROUP} connections"
                )))
            }
        };
        let mut stream = mio::net::TcpStream::from_std(accepted.stream);
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| TransportError::Other(format!("cannot watch the socket: {e}")))?;
        let mut params = self.params;
        params.digests = accepted.digests;
        params.data_alignment_bytes = accepted.data_alignment_bytes;
        let depth = if pending.qid == 0 {
            params.in_capsule_limit_bytes = self.admin_in_capsule_bytes;
            self.admin_depth
        } else {
            self.io_depth
        };
        self.conns[idx] = Some(Entry {
            conn: Conn::new(stream, pending.qid, depth, params),
            on_readable: false,
            on_flush: false,
            on_report: false,
            on_buffer: false,
            disconnect_reported: false,
        });
        // Bytes may have arrived before the socket was watched (the Connect capsule).
        self.mark_readable(idx as u16);
        Ok(idx as u16)
    }

    fn poll(&mut self, events: &mut Vec<TransportEvent>) -> usize {
        let start = events.len();
        while events.len() < events.capacity() {
            let Some(queue) = self.disconnected.pop_front() else {
                break;
            };
            events.push(TransportEvent::QueueDisconnected { queue });
        }
        if let Err(e) = self
            .poll
            .poll(&mut self.events, Some(std::time::Duration::ZERO))
        {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("NVMe/TCP poll group: epoll_wait failed: {e}");
            }
        }
        let mut ready = [(0u16, false, false); EVENTS_PER_POLL];
        let mut n = 0;
        for ev in self.events.iter() {
            ready[n] = (
                ev.token().0 as u16,
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable(),
            );
            n += 1;
        }
        for &(q, readable, writable) in &ready[..n] {
            if readable {
                self.mark_readable(q);
            }
            if writable {
                self.list(q);
            }
        }
        self.receive();
        self.grant_buffers();
        self.report(events);
        events.len() - start
    }

    fn request(&mut self, id: RequestId) -> &mut Request {
        self.conns[usize::from(id.queue)]
            .as_mut()
            .expect("request of a closed queue")
            .conn
            .request(id.slot)
    }

    fn complete(&mut self, id: RequestId) {
        let e = self.conns[usize::from(id.queue)]
            .as_mut()
            .expect("completion on a closed queue");
        e.conn.complete(id.slot, &mut self.cache);
        self.list(id.queue);
    }

    fn flush(&mut self) {
        while let Some(q) = self.to_flush.pop() {
            let Some(e) = self.conns[usize::from(q)].as_mut() else {
                continue;
            };
            // Still queued after this: the socket is full, and its writable event lists it
            // again.
            e.on_flush = false;
            let failed = e.conn.state != ConnState::Dead && e.conn.flush(&mut self.cache).is_err();
            let terminated = e.conn.state == ConnState::Terminating && !e.conn.wants_flush();
            if failed || terminated {
                self.kill(q);
            }
        }
    }

    fn disconnect(&mut self, queue: u16) {
        if self.entry(queue).is_some() {
            self.kill(queue);
        }
    }

    fn close_queue(&mut self, queue: u16) {
        let e = self.conns[usize::from(queue)]
            .take()
            .expect("closing an unknown queue");
        assert_eq!(e.conn.state, ConnState::Dead, "closing a live queue");
        assert_eq!(
            e.conn.requests_in_use(),
            0,
            "closing a queue whose requests are still held"
        );
        self.readable.retain(|&q| q != queue);
        self.to_flush.retain(|&q| q != queue);
        self.to_report.retain(|&q| q != queue);
        self.need_buffer.retain(|&q| q != queue);
    }

    fn queue_count(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn wakeup_fd(&self) -> Option<RawFd> {
        Some(self.poll.as_raw_fd())
    }

    fn arm_wakeup(&mut self) -> bool {
        // Edge-triggered sockets are always armed; idle only with every list empty.
        self.readable.is_empty()
            && self.to_flush.is_empty()
            && self.to_report.is_empty()
            && self.need_buffer.is_empty()
            && self.disconnected.is_empty()
    }
}
