//! The JSON-RPC server of the built binary through a real Unix socket: the socket, the
//! protocol, concurrent clients, start-up and shutdown.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rpc::client::{Client, ClientError};
use serde_json::{json, Value};

mod common;
use common::*;

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
    let mut t = Target::spawn(
        config_arg,
        |port| one_namespace_config(port, "M", "malloc", 64),
        &[("NOTIFY_SOCKET", &notify)],
    );
    let (socket, port) = (t.socket.clone(), t.port);
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
    assert!(t.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clients_beyond_the_limit_wait_for_a_free_place() {
    let t = Target::start();
    let idle: Vec<UnixStream> = (0..rpc::server::MAX_CLIENTS)
        .map(|_| UnixStream::connect(&t.socket).expect("connect"))
        .collect();
    // Let the server take them all.
    thread::sleep(Duration::from_millis(300));
    let socket = t.socket.clone();
    let late = thread::spawn(move || rpc::client::call(&socket, "spdk_get_version", None, TIMEOUT));
    thread::sleep(Duration::from_millis(500));
    assert!(!late.is_finished(), "the 65th client waits in the backlog");
    drop(idle);
    let answer = late.join().unwrap().expect("served once a place is free");
    assert!(answer["version"].as_str().unwrap().starts_with("nvmf-tgt"));
}

#[test]
fn a_script_waits_for_start_up_with_framework_wait_init_and_polls_nothing() {
    let mut t = Target::spawn(
        config_arg,
        |port| one_namespace_config(port, "M", "null", 64),
        &[],
    );
    let (socket, port) = (t.socket.clone(), t.port);
    // Started at once after the target, before its socket exists.
    let out = Command::new(BIN)
        .args(["rpc", "-t", "20", "-s"])
        .arg(&socket)
        .arg("framework_wait_init")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the listener serves"
    );
    // Another method does not wait: a wrong path is an error at once.
    let out = Command::new(BIN)
        .args(["rpc", "-s", "/nonexistent/rpc.sock", "spdk_get_version"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    rpc::client::call(
        &socket,
        "spdk_kill_instance",
        params_of(json!({"sig_name": "SIGTERM"})),
        TIMEOUT,
    )
    .unwrap();
    assert!(t.child.wait().unwrap().success());
}

#[test]
fn a_request_of_exactly_the_limit_is_served_and_one_byte_more_is_refused() {
    let t = Target::start();
    let limit = rpc::server::MAX_REQUEST_BYTES;
    // {"jsonrpc":"2.0","method":"nvmf_get_subsystems","id":1,"params":{"nqn":"nnn..."}}
    let request = |len: usize| {
        let frame =
            r#"{"jsonrpc":"2.0","method":"nvmf_get_subsystems","id":1,"params":{"nqn":""}}"#;
        let nqn = "n".repeat(len - frame.len());
        let r = frame.replace(r#""nqn":"""#, &format!(r#""nqn":"{nqn}""#));
        assert_eq!(r.len(), len);
        r
    };
    let (_, v) = raw(&t.socket, request(limit).as_bytes());
    assert_eq!(
        v["error"]["code"],
        json!(-19),
        "answered: no such subsystem ({v})"
    );
    let mut s = UnixStream::connect(&t.socket).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request(limit + 1).as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let v: Value = serde_json::from_slice(answer.trim_ascii()).expect("one error answer");
    assert_eq!(v["error"]["code"], json!(-32600), "{v}");
}
