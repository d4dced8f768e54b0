//! Live changes over JSON-RPC while hosts are connected, and a configuration saved and
//! restored.

use std::thread;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use nvme_spec::fabrics::CNTLID_DYNAMIC;
use nvme_spec::opcode::io;
use nvme_spec::Status;
use serde_json::{json, Value};
use transport_tcp::host::TcpHost;
use transport_tcp::pdu::Digests;

mod common;
use common::*;

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
    let io = t.ok(
        "bdev_get_iostat",
        json!({"per_channel": false, "names": ["Malloc0"]}),
    );
    let m = &io["bdevs"][0];
    assert_eq!(
        (
            m["name"].clone(),
            m["num_read_ops"].clone(),
            m["bytes_read"].clone()
        ),
        (json!("Malloc0"), json!(5), json!(5 * 4096))
    );
    assert_eq!(m["num_write_ops"], json!(0));
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
    // The counts outlive the namespace's channels.
    t.ok("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 1}));
    let io = t.ok("bdev_get_iostat", json!({"name": "Malloc0"}));
    assert_eq!(io["bdevs"][0]["num_read_ops"], json!(5));
    let (code, _) = rpc_error(t.call("bdev_get_iostat", json!({"name": "Nope"})));
    assert_eq!(code, -19);
    let (code, msg) = rpc_error(t.call("bdev_get_iostat", json!({"per_channel": true})));
    assert_eq!(code, -32602);
    assert!(msg.contains("per_channel"), "{msg}");
}
