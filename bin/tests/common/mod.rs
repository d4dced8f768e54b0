//! The harness of the RPC tests: a target binary with its own config, port and socket.
#![allow(dead_code)] // each test file uses part of it

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::Sqe;
use rpc::client::{Client, ClientError};
use serde_json::{json, Map, Value};
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::Digests;

pub const BIN: &str = env!("CARGO_BIN_EXE_nvmf-tgt");
pub const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-3333-4a4f-9f0e-0a0b0c0d0e03";
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A TOML config: bdev `name` (`kind`, 512-byte blocks) exported as namespace 1 of NQN to
/// any host on TCP 127.0.0.1:`port`.
pub fn one_namespace_config(port: u16, name: &str, kind: &str, num_blocks: u64) -> String {
    format!(
        "[[bdev]]\nname = \"{name}\"\nkind = \"{kind}\"\nnum_blocks = {num_blocks}\nblock_size = 512\n\
         [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
         [[subsystem.listener]]\ntrtype = \"tcp\"\ntraddr = \"127.0.0.1\"\ntrsvcid = \"{port}\"\n\
         [[subsystem.namespace]]\nbdev = \"{name}\"\n"
    )
}

/// `Target::launch` arguments for a TOML config.
pub fn config_arg(cfg: &Path) -> Vec<String> {
    vec!["-c".into(), cfg.display().to_string()]
}

/// A running target with its own config, port and RPC socket; stopped (SIGTERM) on drop.
pub struct Target {
    pub child: Child,
    pub socket: PathBuf,
    pub port: u16,
    dir: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Target {
    /// The test config: Malloc0 exported by NQN to any host on a TCP listener.
    pub fn start() -> Target {
        Self::start_with(|port| one_namespace_config(port, "Malloc0", "malloc", 8192))
    }

    /// A target whose config (after a [global] section) `body` gives for a free port.
    pub fn start_with(body: impl Fn(u16) -> String) -> Target {
        Self::launch(
            |cfg_path| vec!["-c".into(), cfg_path.display().to_string()],
            body,
        )
    }

    /// A target started with the arguments `args` gives for its TOML config's path.
    pub fn launch(args: impl Fn(&Path) -> Vec<String>, body: impl Fn(u16) -> String) -> Target {
        let t = Self::spawn(args, body, &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&t.socket).is_err() {
            assert!(Instant::now() < deadline, "no RPC socket within 20 s");
            thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// As `launch` with `env` set, not waiting for the socket.
    pub fn spawn(
        args: impl Fn(&Path) -> Vec<String>,
        body: impl Fn(u16) -> String,
        env: &[(&str, &Path)],
    ) -> Target {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nvmf-rpc-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a test directory");
        let port = free_port();
        let config = format!("[global]\nidle_sleep_us = 100\n{}", body(port));
        let cfg_path = dir.join("nvmf.toml");
        std::fs::write(&cfg_path, config).expect("write the config");
        let socket = dir.join("rpc.sock");
        let child = Command::new(BIN)
            .args(["-m", "0x1"])
            .args(args(&cfg_path))
            .arg("-r")
            .arg(&socket)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nvmf-tgt");
        Target {
            child,
            socket,
            port,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket, TIMEOUT).expect("connect to the RPC socket")
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.client().call(method, params_of(params))
    }

    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = rpc::client::call(
                &self.socket,
                "spdk_kill_instance",
                params_of(json!({"sig_name": "SIGTERM"})),
                TIMEOUT,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn params_of(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

pub fn rpc_error(r: Result<Value, ClientError>) -> (i32, String) {
    match r {
        Err(ClientError::Rpc(e)) => (e.code, e.message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// Sends raw bytes on a fresh connection and reads one answer.
pub fn raw(socket: &Path, bytes: &[u8]) -> (Client, Value) {
    let mut c = Client::connect(socket, TIMEOUT).expect("connect");
    c.send_raw(bytes).expect("send");
    let v = c.read_value().expect("an answer");
    (c, v)
}

pub fn rw(op: u8, nsid: u32, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::new(op, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = (slba as u32).into();
    sqe.cdw11 = ((slba >> 32) as u32).into();
    sqe.cdw12 = (blocks - 1).into();
    sqe
}

/// An admin queue and one I/O queue of `hostnqn` on `nqn` at 127.0.0.1:`port`.
pub fn connect(port: u16, nqn: &str, hostnqn: &str) -> Result<(TcpHost, TcpHost), String> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut admin = TcpHost::connect(addr, Digests::default()).map_err(|e| e.to_string())?;
    let c = admin
        .fabrics_connect(0, 31, CNTLID_DYNAMIC, nqn, hostnqn, 10_000)
        .map_err(|e| e.to_string())?;
    if !c.status().is_success() {
        return Err(format!("admin Connect: {:?}", c.status()));
    }
    admin.enable().map_err(|e| e.to_string())?;
    let mut q = TcpHost::connect(addr, Digests::default()).map_err(|e| e.to_string())?;
    let c = q
        .fabrics_connect(1, 31, c.dw0() as u16, nqn, hostnqn, 0)
        .map_err(|e| e.to_string())?;
    if !c.status().is_success() {
        return Err(format!("I/O Connect: {:?}", c.status()));
    }
    Ok((admin, q))
}

/// Whether the target ended this connection: a read on it ends or fails.
pub fn ended(host: &mut TcpHost) -> bool {
    host.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    match host.stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    }
}

/// What `spdk-rpc save_config` does: subsystems in order, each with its config.
pub fn save_config(t: &Target) -> Value {
    let subs = t.ok("framework_get_subsystems", Value::Null);
    let saved: Vec<Value> = subs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["subsystem"].as_str().unwrap();
            let config = t.ok(
                "framework_get_config",
                json!({"name": name, "with_batches": false}),
            );
            json!({"subsystem": name, "config": config})
        })
        .collect();
    json!({"subsystems": saved})
}

/// What the host-visible state of a target is, for comparing two.
pub fn state(t: &Target) -> [Value; 3] {
    [
        t.ok("nvmf_get_subsystems", Value::Null),
        t.ok("bdev_get_bdevs", Value::Null),
        t.ok("nvmf_get_transports", Value::Null),
    ]
}
