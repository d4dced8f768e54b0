//! The JSON-RPC control plane of the built binary, through a real Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::opcode::io;
use nvme_spec::{Sqe, Status};
use rpc::client::{Client, ClientError};
use serde_json::{json, Map, Value};
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::Digests;

const BIN: &str = env!("CARGO_BIN_EXE_nvmf-tgt");
const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-3333-4a4f-9f0e-0a0b0c0d0e03";
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running target with its own config, port and RPC socket; stopped (SIGTERM) on drop.
struct Target {
    child: Child,
    socket: PathBuf,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Target {
    /// The test config: Malloc0 exported by NQN to any host on a TCP listener.
    fn start() -> Target {
        Self::start_with(|port| {
            format!(
                "[[bdev]]\nname = \"Malloc0\"\nkind = \"malloc\"\nnum_blocks = 8192\nblock_size = 512\n\
                 [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
                 [[subsystem.listener]]\ntrtype = \"tcp\"\ntraddr = \"127.0.0.1\"\ntrsvcid = \"{port}\"\n\
                 [[subsystem.namespace]]\nbdev = \"Malloc0\"\n"
            )
        })
    }

    /// A target whose config (after a [global] section) `body` gives for a free port.
    fn start_with(body: impl Fn(u16) -> String) -> Target {
        Self::launch(
            |cfg_path| vec!["-c".into(), cfg_path.display().to_string()],
            body,
        )
    }

    /// A target started with the arguments `args` gives for its TOML config's path.
    fn launch(args: impl Fn(&Path) -> Vec<String>, body: impl Fn(u16) -> String) -> Target {
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
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nvmf-tgt");
        let t = Target {
            child,
            socket,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&t.socket).is_err() {
            assert!(Instant::now() < deadline, "no RPC socket within 20 s");
            thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket, TIMEOUT).expect("connect to the RPC socket")
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.client().call(method, params_of(params))
    }

    fn ok(&self, method: &str, params: Value) -> Value {
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

fn params_of(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn rpc_error(r: Result<Value, ClientError>) -> (i32, String) {
    match r {
        Err(ClientError::Rpc(e)) => (e.code, e.message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// Sends raw bytes on a fresh connection and reads one answer.
fn raw(socket: &Path, bytes: &[u8]) -> (Client, Value) {
    let mut c = Client::connect(socket, TIMEOUT).expect("connect");
    c.send_raw(bytes).expect("send");
    let v = c.read_value().expect("an answer");
    (c, v)
}

#[test]
fn the_socket_is_private_and_gone_after_shutdown() {
    use std::os::unix::fs::PermissionsExt;
    let t = Target::start();
    let mode = std::fs::metadata(&t.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may connect");
    let socket = t.socket.clone();
    // A second target on the same socket is refused, and says why.
    let out = Command::new(BIN)
        .args(["-m", "0x1", "-r"])
        .arg(&socket)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another process") && err.contains("-r"),
        "{err}"
    );
    drop(t);
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[test]
fn malformed_and_oversized_requests_get_errors_and_other_clients_carry_on() {
    let t = Target::start();
    let mut bystander = t.client();
    assert!(bystander.call("spdk_get_version", None).is_ok());

    // Bad JSON inside a well-framed value: -32700, and the connection still serves.
    let (mut c, v) = raw(&t.socket, br#"{"jsonrpc":"2.0","method":,"id":1}"#);
    assert_eq!(v["error"]["code"], json!(-32700), "{v}");
    assert_eq!(v["id"], Value::Null);
    assert!(
        c.call("spdk_get_version", None).is_ok(),
        "the same connection goes on"
    );

    for (bytes, code) in [
        (
            &br#"{"jsonrpc":"2.0","method":"no_such","id":2}"#[..],
            -32601,
        ),
        (
            br#"{"jsonrpc":"2.0","method":"rpc_get_methods","id":3,"params":{"current":"x"}}"#,
            -32602,
        ),
        (
            br#"{"jsonrpc":"2.0","method":"nvmf_subsystem_add_ns","id":4,"params":{"nqn":"x"}}"#,
            -32602,
        ),
        (br#"{"jsonrpc":"2.0","id":5}"#, -32600),
        (br#"[]"#, -32600),
    ] {
        let (_, v) = raw(&t.socket, bytes);
        assert_eq!(
            v["error"]["code"],
            json!(code),
            "{} -> {v}",
            String::from_utf8_lossy(bytes)
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }

    // A 1 MiB request is served.
    let long = "n".repeat(1 << 20);
    let (_, v) = raw(
        &t.socket,
        json!({"jsonrpc": "2.0", "method": "nvmf_get_subsystems", "id": 6, "params": {"nqn": long}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["error"]["code"], json!(-19), "an unknown NQN, answered");

    // Over the limit: an error, then that connection ends.
    let mut big = UnixStream::connect(&t.socket).unwrap();
    big.set_read_timeout(Some(TIMEOUT)).unwrap();
    let head = br#"{"jsonrpc":"2.0","method":"x","id":7,"params":{"p":""#;
    big.write_all(head).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..5 {
        if big.write_all(&chunk).is_err() {
            break; // the server already closed it
        }
    }
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    let v: Value = serde_json::from_slice(answer.trim_ascii()).expect("one error answer");
    assert_eq!(v["error"]["code"], json!(-32600), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("MiB"),
        "{v}"
    );

    // Garbage between requests cannot be resynced: an error, then the end.
    let mut g = UnixStream::connect(&t.socket).unwrap();
    g.set_read_timeout(Some(TIMEOUT)).unwrap();
    g.write_all(b"hello").unwrap();
    let mut answer = Vec::new();
    let _ = g.read_to_end(&mut answer);
    let v: Value = serde_json::from_slice(answer.trim_ascii()).expect("one error answer");
    assert_eq!(v["error"]["code"], json!(-32700), "{v}");

    // A batch gets one array of answers; a notification's success gets none.
    let (_, v) = raw(
        &t.socket,
        br#"[{"jsonrpc":"2.0","method":"spdk_get_version","id":1},
            {"jsonrpc":"2.0","method":"spdk_get_version"},
            {"jsonrpc":"2.0","method":"no_such","id":3}]"#,
    );
    let answers = v.as_array().expect("an array");
    assert_eq!(answers.len(), 2, "{v}");
    assert_eq!(answers[1]["error"]["code"], json!(-32601));

    assert!(
        bystander.call("spdk_get_version", None).is_ok(),
        "untouched throughout"
    );
}

#[test]
fn concurrent_clients_each_get_their_own_answers() {
    let t = Target::start();
    let socket = t.socket.clone();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&socket, TIMEOUT).unwrap();
                for i in 0..25 {
                    let name = format!("N{w}_{i}");
                    let made = c
                        .call(
                            "bdev_null_create",
                            params_of(json!({"name": name, "num_blocks": 64, "block_size": 512})),
                        )
                        .unwrap();
                    assert_eq!(made, json!(name));
                    let got = c
                        .call("bdev_get_bdevs", params_of(json!({"name": name})))
                        .unwrap();
                    assert_eq!(got[0]["name"], json!(name));
                    c.call("bdev_null_delete", params_of(json!({"name": name})))
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread");
    }
    let left = t.ok("bdev_get_bdevs", Value::Null);
    assert_eq!(left.as_array().unwrap().len(), 1, "only Malloc0: {left}");
}

fn rw(op: u8, nsid: u32, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::new(op, 0);
    sqe.nsid = nsid.into();
    sqe.cdw10 = (slba as u32).into();
    sqe.cdw11 = ((slba >> 32) as u32).into();
    sqe.cdw12 = (blocks - 1).into();
    sqe
}

#[test]
fn namespaces_and_hosts_change_while_tcp_io_runs_and_no_write_is_lost() {
    let t = Target::start();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", t.port).parse().unwrap();
    let mut admin = TcpHost::connect(addr, Digests::default()).unwrap();
    let c = admin
        .fabrics_connect(0, 31, CNTLID_DYNAMIC, NQN, HOSTNQN, 10_000)
        .unwrap();
    assert!(c.status().is_success());
    admin.enable().unwrap();
    let cntlid = c.dw0() as u16;
    let mut q = TcpHost::connect(addr, Digests::default()).unwrap();
    let c = q.fabrics_connect(1, 31, cntlid, NQN, HOSTNQN, 0).unwrap();
    assert!(c.status().is_success());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) || rounds < 50 {
                let lba = u64::from(rounds % 1000) * 8;
                let fill = (rounds % 251) as u8 + 1;
                let data = vec![fill; 4096];
                let (c, _) = q.exec(rw(io::WRITE, 1, lba, 8), &data, 0).expect("write");
                assert_eq!(c.status(), Status::SUCCESS, "write {rounds}");
                let (c, back) = q.exec(rw(io::READ, 1, lba, 8), &[], 4096).expect("read");
                assert_eq!(c.status(), Status::SUCCESS, "read {rounds}");
                assert!(back == data, "round {rounds}: read back other bytes");
                rounds += 1;
            }
            rounds
        })
    };
    for i in 0..20 {
        let name = format!("Live{i}");
        t.ok(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": 256, "block_size": 512}),
        );
        let nsid = t.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": name}}),
        );
        assert_eq!(nsid, json!(2), "NSID 2 is free again each round");
        t.ok(
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": format!("nqn.2016-06.io.spdk:h{i}")}),
        );
        t.ok("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 2}));
        // Its I/O channels close on every reactor; deleting waits for nothing else.
        t.ok("bdev_malloc_delete", json!({"name": name}));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = io.join().expect("the I/O thread saw no error");
    assert!(rounds >= 50, "{rounds} rounds");
    let sub = t.ok("nvmf_get_subsystems", json!({"nqn": NQN}));
    assert_eq!(sub[0]["hosts"].as_array().unwrap().len(), 20);
    assert_eq!(sub[0]["namespaces"].as_array().unwrap().len(), 1);
}

#[test]
fn spdk_kill_instance_stops_the_target_cleanly() {
    let mut t = Target::start();
    assert_eq!(
        t.ok("spdk_kill_instance", json!({"sig_name": "SIGTERM"})),
        json!(true)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = t.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after spdk_kill_instance"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!t.socket.exists(), "the socket is removed");
    assert!(matches!(
        rpc::client::call(&t.socket, "spdk_get_version", None, TIMEOUT),
        Err(ClientError::Connect { .. })
    ));
}

#[test]
fn errors_name_what_is_wrong() {
    let t = Target::start();
    let (code, msg) = rpc_error(t.call("bdev_malloc_delete", json!({"name": "Malloc0"})));
    assert_eq!(code, -16);
    assert!(msg.contains(NQN), "names the subsystem: {msg}");
    let (code, msg) = rpc_error(t.call(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "ana_reporting": true}),
    ));
    assert_eq!(code, -32602);
    assert!(msg.contains("ana_reporting"), "{msg}");
    let (code, msg) = rpc_error(t.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev": "Malloc0"}}),
    ));
    assert_eq!(code, -32602);
    assert!(msg.contains("bdev"), "{msg}");
}

/// An admin queue and one I/O queue of `hostnqn` on `nqn` at 127.0.0.1:`port`.
fn connect(port: u16, nqn: &str, hostnqn: &str) -> Result<(TcpHost, TcpHost), String> {
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
fn ended(host: &mut TcpHost) -> bool {
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

#[test]
fn removing_a_host_disconnects_its_controllers_and_keeps_it_out() {
    let t = Target::start();
    let other = "nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-4444-4a4f-9f0e-0a0b0c0d0e04";
    t.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": false}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": other}),
    );
    let (mut admin, mut q) = connect(t.port, NQN, HOSTNQN).expect("an allowed host connects");
    let (_admin2, mut q2) = connect(t.port, NQN, other).expect("the other host too");
    t.ok(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    );
    assert!(ended(&mut admin), "its admin queue is disconnected");
    assert!(ended(&mut q), "and its I/O queue");
    let (c, _) = q2
        .exec(rw(io::READ, 1, 0, 8), &[], 4096)
        .expect("the other host still reads");
    assert_eq!(c.status(), Status::SUCCESS);
    assert!(
        connect(t.port, NQN, HOSTNQN).is_err(),
        "the removed host cannot come back"
    );
    let (code, msg) = rpc_error(t.call(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    ));
    assert_eq!(code, -32603);
    assert!(msg.contains("not on its list"), "{msg}");
}

#[test]
fn removing_a_listener_disconnects_the_queues_that_came_through_it() {
    let t = Target::start();
    let (mut admin, mut q) = connect(t.port, NQN, HOSTNQN).unwrap();
    let second = free_port();
    let l2 = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": second.to_string()});
    t.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": l2, "secure_channel": false}),
    );
    let (code, _) = rpc_error(t.call(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": l2}),
    ));
    assert_eq!(code, -32602, "a listener twice");
    let (_a2, mut q2) = connect(second, NQN, HOSTNQN).expect("the new listener serves");
    let l1 = json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": t.port.to_string()});
    t.ok(
        "nvmf_subsystem_remove_listener",
        json!({"nqn": NQN, "listen_address": l1}),
    );
    assert!(
        ended(&mut admin) && ended(&mut q),
        "queues through the removed listener end"
    );
    let (c, _) = q2.exec(rw(io::READ, 1, 0, 8), &[], 4096).unwrap();
    assert_eq!(
        c.status(),
        Status::SUCCESS,
        "queues through the other one stay"
    );
    assert!(
        connect(t.port, NQN, HOSTNQN).is_err(),
        "nothing listens there any more"
    );
    let listeners = t.ok("nvmf_subsystem_get_listeners", json!({"nqn": NQN}));
    assert_eq!(
        listeners,
        json!([{"address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": second.to_string()}}])
    );
    let (code, _) = rpc_error(t.call("nvmf_subsystem_add_listener", json!({"nqn": NQN,
        "listen_address": {"trtype": "tcp", "adrfam": "IPv6", "traddr": "127.0.0.1", "trsvcid": "1"}})));
    assert_eq!(code, -32602, "adrfam must match traddr");
}

#[test]
fn deleting_a_subsystem_under_io_disconnects_its_hosts_and_the_target_goes_on() {
    let t = Target::start();
    let (_admin, mut q) = connect(t.port, NQN, HOSTNQN).unwrap();
    let io = thread::spawn(move || {
        let mut done = 0u32;
        loop {
            let data = vec![7u8; 4096];
            match q.exec(rw(io::WRITE, 1, u64::from(done % 512) * 8, 8), &data, 0) {
                Ok((c, _)) if c.status() == Status::SUCCESS => done += 1,
                Ok((c, _)) => panic!(
                    "a write failed with {:?} instead of the queue ending",
                    c.status()
                ),
                Err(_) => return done,
            }
        }
    });
    thread::sleep(Duration::from_millis(200));
    t.ok("nvmf_delete_subsystem", json!({"nqn": NQN}));
    let writes = io.join().expect("the I/O thread");
    assert!(writes > 0, "I/O ran before the deletion");
    let subs = t.ok("nvmf_get_subsystems", Value::Null);
    assert_eq!(
        subs.as_array().unwrap().len(),
        1,
        "only discovery is left: {subs}"
    );
    t.ok("bdev_malloc_delete", json!({"name": "Malloc0"}));
    assert!(
        connect(t.port, NQN, HOSTNQN).is_err(),
        "its listener is gone"
    );
    // The target serves on: a new subsystem with the same name works.
    t.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 64, "block_size": 512}),
    );
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    t.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN,
        "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": t.port.to_string()}}),
    );
    let (_a, mut q) = connect(t.port, NQN, HOSTNQN).expect("the new subsystem serves");
    let (c, back) = q.exec(rw(io::READ, 1, 0, 8), &[], 4096).unwrap();
    assert_eq!(c.status(), Status::SUCCESS);
    assert!(
        back.iter().all(|&b| b == 0),
        "a new malloc bdev reads zeroes"
    );
}

#[test]
fn an_spdk_style_session_builds_a_target_from_nothing() {
    let t = Target::start_with(|_| String::new());
    assert_eq!(t.ok("nvmf_get_transports", Value::Null), json!([]));
    let port = free_port();
    // The calls of SPDK's usual session, as its client sends them.
    t.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_queue_depth": 64, "in_capsule_data_size": 8192,
        "no_srq": false, "c2h_success": true, "zcopy": false}),
    );
    assert_eq!(
        t.ok(
            "bdev_malloc_create",
            json!({"num_blocks": 131072, "block_size": 512, "name": "Malloc0",
        "md_interleave": false, "dif_is_head_of_md": false})
        ),
        json!("Malloc0")
    );
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "serial_number": "SPDK00000000000001",
        "model_number": "SPDK_Controller1", "allow_any_host": true, "ana_reporting": false,
        "passthrough": false, "enable_nssr": false}),
    );
    assert_eq!(
        t.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "no_auto_visible": false}})
        ),
        json!(1)
    );
    t.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "secure_channel": false,
        "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
    let (_admin, mut q) = connect(port, NQN, HOSTNQN).expect("a host connects");
    let data = vec![0x5au8; 4096];
    let (c, _) = q.exec(rw(io::WRITE, 1, 8, 8), &data, 0).unwrap();
    assert_eq!(c.status(), Status::SUCCESS);
    let (c, back) = q.exec(rw(io::READ, 1, 8, 8), &[], 4096).unwrap();
    assert_eq!((c.status(), back == data), (Status::SUCCESS, true));
    let tr = t.ok("nvmf_get_transports", Value::Null);
    assert_eq!(
        (
            tr[0]["max_queue_depth"].clone(),
            tr[0]["in_capsule_data_size"].clone()
        ),
        (json!(64), json!(8192))
    );
}

/// What `spdk-rpc save_config` does: subsystems in order, each with its config.
fn save_config(t: &Target) -> Value {
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
fn state(t: &Target) -> [Value; 3] {
    [
        t.ok("nvmf_get_subsystems", Value::Null),
        t.ok("bdev_get_bdevs", Value::Null),
        t.ok("nvmf_get_transports", Value::Null),
    ]
}

fn configured_by_rpc(t: &Target) {
    t.ok(
        "bdev_null_create",
        json!({"name": "Null7", "num_blocks": 2048, "block_size": 4096}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Null7", "nsid": 7,
        "uuid": "0d8f4f36-6a5c-4b9e-9d2a-1f2e3d4c5b6a"}}),
    );
    t.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": false}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    );
    let nqn2 = "nqn.2016-06.io.spdk:cnode2";
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn2, "serial_number": "SN2", "model_number": "Model 2",
        "max_namespaces": 8, "allow_any_host": true}),
    );
    t.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc2", "num_blocks": 64, "block_size": 512}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn2, "namespace": {"bdev_name": "Malloc2"}}),
    );
}

#[test]
fn a_saved_config_restarts_into_the_same_target_with_json() {
    let t = Target::start();
    configured_by_rpc(&t);
    let before = state(&t);
    let saved = save_config(&t);
    let file = std::env::temp_dir().join(format!("nvmf-saved-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    drop(t); // stopped: its port and names are free again
    let f = file.clone();
    let t2 = Target::launch(
        move |_| vec!["--json".into(), f.display().to_string()],
        |_| String::new(),
    );
    assert_eq!(state(&t2), before, "the same subsystems, serials, NSIDs, NGUIDs, UUIDs, hosts, listeners, bdevs and transports");
    assert_eq!(
        save_config(&t2),
        saved,
        "and it saves the same config again"
    );
    let port = before[0][1]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_a, mut q) = connect(port, NQN, HOSTNQN).expect("the allowed host reconnects");
    let (c, _) = q.exec(rw(io::READ, 7, 0, 1), &[], 4096).unwrap();
    assert_eq!(c.status(), Status::SUCCESS, "namespace 7 is there");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn load_config_into_a_target_waiting_for_rpc() {
    let t = Target::start();
    configured_by_rpc(&t);
    let before = state(&t);
    let saved = save_config(&t);
    drop(t);
    let t2 = Target::launch(|_| vec!["--wait-for-rpc".into()], |_| String::new());
    let (code, _) = rpc_error(t2.call("nvmf_get_subsystems", Value::Null));
    assert_eq!(code, -1, "not before framework_start_init");
    // What spdk-rpc load_config does: the methods callable now, framework_start_init, the rest.
    let now = t2.ok(
        "rpc_get_methods",
        json!({"current": true, "include_aliases": false}),
    );
    assert!(now
        .as_array()
        .unwrap()
        .contains(&json!("framework_start_init")));
    // A framework_wait_init sent now is answered once the start-up ends.
    let socket = t2.socket.clone();
    let waiter =
        thread::spawn(move || rpc::client::call(&socket, "framework_wait_init", None, TIMEOUT));
    thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "framework_wait_init waits");
    t2.ok("framework_start_init", Value::Null);
    assert_eq!(waiter.join().unwrap().unwrap(), json!(true));
    for call in rpc::saved::parse(&saved).unwrap() {
        t2.client()
            .call(&call.method, call.params)
            .unwrap_or_else(|e| panic!("{}: {e}", call.method));
    }
    assert_eq!(state(&t2), before);
    let (code, _) = rpc_error(t2.call("framework_start_init", Value::Null));
    assert_eq!(code, -1, "only once");
}

#[test]
fn a_bad_json_config_stops_start_up_and_names_the_call() {
    let file = std::env::temp_dir().join(format!("nvmf-bad-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8,"block_size":512}},
            {"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8,"block_size":512}}]}]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["-m", "0x1", "--json"])
        .arg(&file)
        .arg("-r")
        .arg(std::env::temp_dir().join(format!("nvmf-bad-{}.sock", std::process::id())))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("subsystem bdev, entry 1 (bdev_malloc_create)")
            && err.contains("already exists"),
        "{err}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn ready_is_sent_once_the_listeners_and_the_rpc_socket_serve() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("nvmf-notify-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let port = free_port();
    let cfg = dir.join("nvmf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[bdev]]\nname = \"M\"\nkind = \"malloc\"\nnum_blocks = 64\nblock_size = 512\n\
             [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
             [[subsystem.listener]]\ntrtype = \"tcp\"\ntraddr = \"127.0.0.1\"\ntrsvcid = \"{port}\"\n\
             [[subsystem.namespace]]\nbdev = \"M\"\n"
        ),
    )
    .unwrap();
    let socket = dir.join("rpc.sock");
    let mut child = Command::new(BIN)
        .args(["-m", "0x1", "-c"])
        .arg(&cfg)
        .arg("-r")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify)
        .env_remove("RUST_LOG")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf).expect("READY=1 within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1"), "{msg}");
    // No polling: both answer at once.
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "the RPC socket serves at READY"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the listener serves at READY"
    );
    rpc::client::call(
        &socket,
        "spdk_kill_instance",
        params_of(json!({"sig_name": "SIGINT"})),
        TIMEOUT,
    )
    .unwrap();
    let n = rx.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_qpairs_and_controllers_show_a_connected_host() {
    let t = Target::start();
    let (admin, mut q) = connect(t.port, NQN, HOSTNQN).unwrap();
    for _ in 0..5 {
        let (c, _) = q.exec(rw(io::READ, 1, 0, 8), &[], 4096).unwrap();
        assert_eq!(c.status(), Status::SUCCESS);
    }
    let qp = t.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    let qp = qp.as_array().unwrap();
    assert_eq!(qp.len(), 2, "{qp:?}");
    assert_eq!(
        (qp[0]["qid"].clone(), qp[1]["qid"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(qp[1]["hostnqn"], json!(HOSTNQN));
    assert_eq!(qp[1]["state"], json!("enabled"));
    assert_eq!(qp[1]["thread"], json!("nvmf_tgt_poll_group_000"));
    assert_eq!(
        qp[1]["listen_address"]["trsvcid"],
        json!(t.port.to_string())
    );
    let ctrls = t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(ctrls.as_array().unwrap().len(), 1);
    assert_eq!(ctrls[0]["num_io_qpairs"], json!(1));
    assert_eq!(ctrls[0]["hostnqn"], json!(HOSTNQN));
    assert_eq!(ctrls[0]["cntrltype"], json!("io"));
    assert_eq!(ctrls[0]["hostid"].as_str().unwrap().len(), 36, "a UUID");
    let s = t.ok("nvmf_get_stats", Value::Null);
    let pg = &s["poll_groups"][0];
    assert_eq!(pg["name"], json!("nvmf_tgt_poll_group_000"));
    assert_eq!(
        (pg["admin_qpairs"].clone(), pg["io_qpairs"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (
            pg["current_admin_qpairs"].clone(),
            pg["current_io_qpairs"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(pg["completed_nvme_io"], json!(5));
    assert_eq!(pg["transports"], json!([{"trtype": "TCP"}]));
    drop(q);
    drop(admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pg = t.ok("nvmf_get_stats", Value::Null)["poll_groups"][0].clone();
        if pg["current_admin_qpairs"] == json!(0) && pg["current_io_qpairs"] == json!(0) {
            assert_eq!(pg["admin_qpairs"], json!(1), "totals stay");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queues still there 10 s after the host left: {pg}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN})),
        json!([])
    );
}
