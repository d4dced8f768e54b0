//! The RPC server: a Unix socket served from one control thread, never from a reactor.
//!
//! Each client is a small state machine (`ClientState`): `Open` while it may send requests;
//! `Closing` once the stream cannot be trusted any more (a framing error or an oversized
//! request), when the answers already owed are flushed and the connection ends; `Ended`
//! when it can be dropped. Other clients never notice.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use crate::control::{Control, RpcState};
use crate::framing::{Framer, Scan};
use crate::methods::dispatch;
use crate::protocol::{code, decode, response, Checked, Incoming, RpcError};

/// Clients served at once; more wait in the listen backlog (as SPDK's server does).
pub const MAX_CLIENTS: usize = 64;
/// Largest request; larger ones get an error and their connection closes (SPDK: 32 KiB).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Answers held for a client that does not read them before the server stops reading it.
const SEND_HIGH_WATER_BYTES: usize = 16 << 20;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often the loop looks at its stop condition.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const LISTENER: Token = Token(usize::MAX);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "the RPC socket {0} is in use by another process (an nvmf-tgt or an SPDK application); \
         stop it, or give this one another path with -r"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it, or give another path with -r")]
    NotASocket(PathBuf),
    #[error("cannot create the RPC socket {path}: {error}{hint}")]
    Io {
        path: PathBuf,
        error: io::Error,
        hint: &'static str,
    },
}

/// A bound RPC socket; the file is removed when this is dropped.
pub struct RpcSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl RpcSocket {
    /// Binds `path`, replacing a stale socket left by a process that died, with mode 0600:
    /// only the user running the target may connect.
    pub fn bind(path: &Path) -> Result<RpcSocket, BindError> {
        let io_err = |error: io::Error| {
            let hint = match error.kind() {
                io::ErrorKind::NotFound => " (does its directory exist?)",
                io::ErrorKind::PermissionDenied => {
                    " (run as a user who may write there, or use -r)"
                }
                _ => "",
            };
            BindError::Io {
                path: path.to_path_buf(),
                error,
                hint,
            }
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(BindError::InUse(path.to_path_buf()));
                }
                log::info!("removing the stale RPC socket {}", path.display());
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        let socket = RpcSocket {
            listener,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(socket)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RpcSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove the RPC socket {}: {e}", self.path.display());
        }
    }
}

/// Serves `socket` on a thread named "rpc" until the reactors shut down.
pub fn spawn(socket: RpcSocket, mut ctl: Control) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rpc".into())
        .spawn(move || {
            let reactors = ctl.reactors.clone();
            log::info!("RPC server listening on {}", socket.path().display());
            let mut socket = socket;
            if let Err(e) = serve(&mut socket, &mut ctl, || reactors.is_shutting_down()) {
                log::error!("the RPC server stopped: {e}");
            }
        })
}

/// Where a client stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// Reading requests and answering them.
    Open,
    /// No more reading: flush what is owed, then end.
    Closing,
    /// Done: drop it.
    Ended,
}

struct Client {
    stream: UnixStream,
    state: ClientState,
    framer: Framer,
    /// Bytes of the request being received.
    held: Vec<u8>,
    out: Vec<u8>,
    out_sent: usize,
    /// The socket may hold unread bytes (reading stopped at the high-water mark).
    unread: bool,
    /// Ids of framework_wait_init calls answered once the target leaves `Startup`.
    parked: Vec<Value>,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client {
            stream,
            state: ClientState::Open,
            framer: Framer::default(),
            held: Vec::new(),
            out: Vec::new(),
            out_sent: 0,
            unread: true,
            parked: Vec::new(),
        }
    }

    fn owed_bytes(&self) -> usize {
        self.out.len() - self.out_sent
    }

    fn answer(&mut self, v: &Value) {
        serde_json::to_writer(&mut self.out, v).expect("a Value always serializes");
        self.out.push(b'\n');
    }

    /// Answers `e` under id null and stops reading: the stream cannot be resynced.
    fn fail(&mut self, e: RpcError) {
        log::warn!("RPC client: {}", e.message);
        self.answer(&response(Value::Null, Err(e)));
        self.held = Vec::new();
        self.state = ClientState::Closing;
    }

    /// Reads what the socket holds and answers every complete request.
    fn receive(&mut self, ctl: &mut Control, scratch: &mut [u8]) {
        while self.state == ClientState::Open && self.owed_bytes() < SEND_HIGH_WATER_BYTES {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    // The peer will send no more; answer what it sent, then end.
                    self.state = ClientState::Closing;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("RPC client read: {e}");
                    self.state = ClientState::Ended;
                    return;
                }
            };
            self.take(ctl, &scratch[..n]);
        }
        self.unread = self.state == ClientState::Open;
    }

    /// Frames `bytes`, running each request that completes.
    fn take(&mut self, ctl: &mut Control, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.state == ClientState::Open {
            match self.framer.scan(bytes) {
                Ok(Scan::Value { start, end }) => {
                    let value = if self.held.is_empty() {
                        &bytes[start..end]
                    } else {
                        self.held.extend_from_slice(&bytes[start..end]);
                        &self.held[..]
                    };
                    let len = value.len();
                    if len > MAX_REQUEST_BYTES {
                        return self.fail(too_large(len));
                    }
                    let answer = handle(ctl, value);
                    self.held.clear();
                    match answer {
                        Answer::Now(a) => self.answer(&a),
                        Answer::Park(id) => self.parked.push(id),
                        Answer::Nothing => {}
                    }
                    bytes = &bytes[end..];
                }
                Ok(Scan::Partial { start }) => {
                    if let Some(s) = start {
                        self.held.extend_from_slice(&bytes[s..]);
                    }
                    if self.held.len() > MAX_REQUEST_BYTES {
                        return self.fail(too_large(self.held.len()));
                    }
                    return;
                }
                Err(e) => {
                    return self.fail(RpcError::new(
                        code::PARSE_ERROR,
                        format!("Parse error: {e}"),
                    ))
                }
            }
        }
    }

    /// Writes what is owed; true when nothing is left.
    fn flush(&mut self) -> bool {
        while self.owed_bytes() > 0 {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(0) => {
                    self.state = ClientState::Ended;
                    return false;
                }
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("RPC client write: {e}");
                    self.state = ClientState::Ended;
                    return false;
                }
            }
        }
        self.out.clear();
        self.out_sent = 0;
        if self.state == ClientState::Closing {
            self.state = ClientState::Ended;
        }
        true
    }
}

fn too_large(len: usize) -> RpcError {
    RpcError::new(
        code::INVALID_REQUEST,
        format!(
            "Invalid request: {len} bytes or more, over the {} MiB limit",
            MAX_REQUEST_BYTES >> 20
        ),
    )
}

/// What one framed value gets.
enum Answer {
    Now(Value),
    /// framework_wait_init before framework_start_init: answered when that comes.
    Park(Value),
    Nothing,
}

/// Runs one framed value. Errors are answered even for notifications (with id null), as
/// SPDK does; results only for requests with an id.
fn handle(ctl: &mut Control, bytes: &[u8]) -> Answer {
    if let Incoming::Single(Ok(req)) = decode(bytes) {
        if req.method == "framework_wait_init" && ctl.state == RpcState::Startup {
            return Answer::Park(req.id.unwrap_or(Value::Null));
        }
    }
    let mut run = |checked: Checked| -> Option<Value> {
        match checked {
            Err((id, e)) => Some(response(id, Err(e))),
            Ok(req) => {
                let outcome = dispatch(ctl, &req.method, req.params);
                if let Err(e) = &outcome {
                    log::debug!("RPC {}: {}", req.method, e.message);
                }
                match (req.id, outcome) {
                    (Some(id), outcome) if !id.is_null() => Some(response(id, outcome)),
                    (_, Err(e)) => Some(response(Value::Null, Err(e))),
                    (_, Ok(_)) => None,
                }
            }
        }
    };
    let answer = match decode(bytes) {
        Incoming::Single(c) => run(c),
        Incoming::Batch(items) => {
            let answers: Vec<Value> = items.into_iter().filter_map(&mut run).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
    };
    answer.map_or(Answer::Nothing, Answer::Now)
}

/// Serves until `stop()` says so (checked every `POLL_TIMEOUT`).
pub fn serve(socket: &mut RpcSocket, ctl: &mut Control, stop: impl Fn() -> bool) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket.listener, LISTENER, Interest::READABLE)?;
    let mut clients: Vec<Option<Client>> = (0..MAX_CLIENTS).map(|_| None).collect();
    let mut events = Events::with_capacity(MAX_CLIENTS + 1);
    let mut scratch = vec![0u8; READ_CHUNK_BYTES];
    let mut accept_pending = false;
    while !stop() {
        match poll.poll(&mut events, Some(POLL_TIMEOUT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_pending = true;
                continue;
            }
            let Some(c) = clients.get_mut(ev.token().0).and_then(Option::as_mut) else {
                continue;
            };
            if ev.is_readable() || ev.is_read_closed() {
                c.unread = true;
            }
        }
        // Every client with bytes to read or answers to send, each until it would block.
        for slot in clients.iter_mut() {
            let Some(c) = slot else { continue };
            if ctl.state == RpcState::Runtime {
                for id in std::mem::take(&mut c.parked) {
                    c.answer(&response(id, Ok(Value::Bool(true))));
                }
            }
            loop {
                if c.unread && c.state == ClientState::Open {
                    c.receive(ctl, &mut scratch);
                }
                let flushed = c.flush();
                let more = flushed && c.unread && c.state == ClientState::Open;
                if !more {
                    break;
                }
            }
            if c.state == ClientState::Ended {
                let mut c = slot.take().expect("the client is here");
                let _ = poll.registry().deregister(&mut c.stream);
                accept_pending = true;
            }
        }
        if accept_pending {
            accept_pending = accept(&socket.listener, &poll, &mut clients);
        }
    }
    Ok(())
}

/// Accepts while there is room; true when connections may still be waiting.
fn accept(listener: &UnixListener, poll: &Poll, clients: &mut [Option<Client>]) -> bool {
    loop {
        let Some(free) = clients.iter().position(Option::is_none) else {
            return true;
        };
        match listener.accept() {
            Ok((mut stream, _)) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match poll.registry().register(&mut stream, Token(free), interest) {
                    Ok(()) => clients[free] = Some(Client::new(stream)),
                    // That client is dropped; the others are served on.
                    Err(e) => log::warn!("RPC server cannot watch a new connection: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of fds, say: keep serving the clients there are, try again later.
                log::warn!("RPC server cannot accept a connection: {e}");
                return true;
            }
        }
    }
}
