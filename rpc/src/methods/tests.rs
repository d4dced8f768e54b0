//! Each method's parameters and errors, on a target without running reactors.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::*;
use crate::bdevs::BdevRegistry;
use crate::control::LogFlags;
use crate::protocol::code;

#[derive(Default)]
struct Flags(Mutex<Vec<(String, bool)>>);

impl LogFlags for Flags {
    fn flags(&self) -> Vec<(String, bool)> {
        self.0.lock().unwrap().clone()
    }
    fn set(&self, name: &str, on: bool) -> usize {
        let mut f = self.0.lock().unwrap();
        let mut n = 0;
        for (flag, v) in f.iter_mut() {
            if name.eq_ignore_ascii_case("all") || flag.eq_ignore_ascii_case(name) {
                *v = on;
                n += 1;
            }
        }
        n
    }
}

fn control() -> Control {
    let t = ::nvmf::loopback::LoopbackTransport::new(4096, 131_072, 8192, 64).unwrap();
    let target = ::nvmf::Target::new(::nvmf::TargetOptions::default(), vec![t]).unwrap();
    let mask = reactor::ReactorMask::from_cores(&[0]).unwrap();
    let (_reactors, handle) = reactor::create_reactors(&mask, &reactor::ReactorConfig::default());
    let flags = Flags(Mutex::new(vec![
        ("bdev".into(), false),
        ("nvmf".into(), false),
    ]));
    Control::new(target, BdevRegistry::default(), handle, Arc::new(flags))
}

fn params(v: Value) -> Params {
    match v {
        Value::Null => None,
        Value::Object(m) => Some(m),
        other => panic!("params must be an object: {other}"),
    }
}

fn call(ctl: &mut Control, method: &str, p: Value) -> Result<Value, RpcError> {
    dispatch(ctl, method, params(p))
}

fn ok(ctl: &mut Control, method: &str, p: Value) -> Value {
    call(ctl, method, p.clone()).unwrap_or_else(|e| panic!("{method} {p}: {e}"))
}

/// The error's code, after checking its message names `needle`.
fn err(ctl: &mut Control, method: &str, p: Value, needle: &str) -> i32 {
    let e = call(ctl, method, p.clone()).expect_err(&format!("{method} {p} must fail"));
    assert!(
        e.message.contains(needle),
        "{method} {p}: {e:?} should name {needle:?}"
    );
    e.code
}

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

fn with_subsystem() -> Control {
    let mut c = control();
    ok(
        &mut c,
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 128, "block_size": 512}),
    );
    ok(
        &mut c,
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true,
        "serial_number": "SPDK001", "ana_reporting": false, "passthrough": false, "enable_nssr": false}),
    );
    c
}

#[test]
fn unknown_methods_and_wrong_states_get_spdks_codes() {
    let mut c = control();
    assert_eq!(
        err(&mut c, "no_such_method", Value::Null, "no_such_method"),
        code::METHOD_NOT_FOUND
    );
    assert_eq!(
        err(
            &mut c,
            "framework_start_init",
            Value::Null,
            "before framework is initialized"
        ),
        code::INVALID_STATE
    );
    c.state = RpcState::Startup;
    assert_eq!(
        err(
            &mut c,
            "nvmf_get_subsystems",
            Value::Null,
            "after framework is initialized"
        ),
        code::INVALID_STATE
    );
    let now: Vec<Value> = ok(&mut c, "rpc_get_methods", json!({"current": true}))
        .as_array()
        .unwrap()
        .clone();
    assert!(now.contains(&json!("framework_start_init")));
    assert!(!now.contains(&json!("nvmf_create_subsystem")));
    let all = ok(
        &mut c,
        "rpc_get_methods",
        json!({"current": false, "include_aliases": false}),
    );
    assert_eq!(all.as_array().unwrap().len(), method_names().count());
}

#[test]
fn parameters_are_checked_by_name() {
    let mut c = control();
    assert_eq!(
        err(
            &mut c,
            "spdk_get_version",
            json!({"x": 1}),
            "takes no parameters"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(&mut c, "rpc_get_methods", json!({"curent": true}), "curent"),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "rpc_get_methods",
            json!({"current": "yes"}),
            "invalid type"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_subsystem",
            json!({}),
            "missing field `nqn`"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "ana_reporting": true}),
            "ana_reporting"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_malloc_create",
            json!({"num_blocks": 8, "block_size": 512, "md_size": 8}),
            "md_size"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_get_subsystems",
            json!({"tgt_name": "other"}),
            "tgt_name"
        ),
        code::INVALID_PARAMS
    );
}

#[test]
fn version_subsystems_and_reactors_answer_in_spdks_shapes() {
    let mut c = control();
    let v = ok(&mut c, "spdk_get_version", Value::Null);
    assert!(v["version"].as_str().unwrap().starts_with("nvmf-tgt v"));
    assert!(v["fields"]["major"].is_u64());
    let subs = ok(&mut c, "framework_get_subsystems", Value::Null);
    let mut seen: Vec<String> = Vec::new();
    for s in subs.as_array().unwrap() {
        for d in s["depends_on"].as_array().unwrap() {
            assert!(
                seen.iter().any(|x| x == d.as_str().unwrap()),
                "{d} before {}",
                s["subsystem"]
            );
        }
        seen.push(s["subsystem"].as_str().unwrap().into());
    }
    assert_eq!(
        err(
            &mut c,
            "framework_get_config",
            json!({"name": "iscsi"}),
            "Subsystem 'iscsi' not found"
        ),
        code::INVALID_PARAMS
    );
    let r = ok(&mut c, "framework_get_reactors", Value::Null);
    assert_eq!(r["tick_rate"], json!(1_000_000_000u64));
    assert_eq!(r["reactors"][0]["lcore"], json!(0));
    assert_eq!(r["reactors"][0]["lw_threads"][0]["cpumask"], json!("1"));
}

#[test]
fn log_flags_turn_on_and_off() {
    let mut c = control();
    ok(&mut c, "log_set_flag", json!({"flag": "nvmf"}));
    assert_eq!(
        ok(&mut c, "log_get_flags", Value::Null),
        json!({"bdev": false, "nvmf": true})
    );
    ok(&mut c, "log_set_flag", json!({"flag": "all"}));
    ok(&mut c, "log_clear_flag", json!({"flag": "NVMF"}));
    assert_eq!(
        ok(&mut c, "log_get_flags", Value::Null),
        json!({"bdev": true, "nvmf": false})
    );
    assert_eq!(
        err(
            &mut c,
            "log_set_flag",
            json!({"flag": "rdmaa"}),
            "bdev, nvmf"
        ),
        code::INVALID_PARAMS
    );
}

#[test]
fn bdevs_are_created_listed_and_deleted() {
    let mut c = control();
    assert_eq!(
        ok(
            &mut c,
            "bdev_malloc_create",
            json!({"num_blocks": 16, "block_size": 512,
        "md_interleave": false, "dif_is_head_of_md": false})
        ),
        json!("Malloc0")
    );
    assert_eq!(
        ok(
            &mut c,
            "bdev_malloc_create",
            json!({"num_blocks": 16, "block_size": 4096})
        ),
        json!("Malloc1")
    );
    assert_eq!(
        ok(
            &mut c,
            "bdev_null_create",
            json!({"name": "Null0", "num_blocks": 16, "block_size": 512,
        "dif_is_head_of_md": false})
        ),
        json!("Null0")
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_null_create",
            json!({"num_blocks": 16, "block_size": 512}),
            "name"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_null_create",
            json!({"name": "Null0", "num_blocks": 16, "block_size": 512}),
            "already exists"
        ),
        -17
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_malloc_create",
            json!({"name": "Bad", "num_blocks": 16, "block_size": 1000}),
            "Bad"
        ),
        -22
    );
    let all = ok(&mut c, "bdev_get_bdevs", Value::Null);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Malloc0", "Malloc1", "Null0"]);
    let one = ok(&mut c, "bdev_get_bdevs", json!({"name": "Malloc1"}));
    assert_eq!(
        (one[0]["block_size"].clone(), one[0]["num_blocks"].clone()),
        (json!(4096), json!(16))
    );
    assert_eq!(one[0]["supported_io_types"]["read"], json!(true));
    assert_eq!(
        err(&mut c, "bdev_get_bdevs", json!({"name": "Nope"}), "Nope"),
        -19
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_null_delete",
            json!({"name": "Malloc0"}),
            "malloc bdev"
        ),
        -19
    );
    ok(&mut c, "bdev_malloc_delete", json!({"name": "Malloc0"}));
    assert_eq!(
        err(
            &mut c,
            "bdev_malloc_delete",
            json!({"name": "Malloc0"}),
            "Malloc0"
        ),
        -19
    );
}

#[test]
fn a_bdev_a_namespace_uses_cannot_be_deleted() {
    let mut c = with_subsystem();
    ok(
        &mut c,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "no_auto_visible": false}}),
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_malloc_delete",
            json!({"name": "Malloc0"}),
            NQN
        ),
        -16
    );
    assert_eq!(
        ok(&mut c, "bdev_get_bdevs", json!({"name": "Malloc0"}))[0]["claimed"],
        json!(true)
    );
    ok(
        &mut c,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 1}),
    );
    ok(&mut c, "bdev_malloc_delete", json!({"name": "Malloc0"}));
}

#[test]
fn subsystems_namespaces_and_hosts() {
    let mut c = with_subsystem();
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_subsystem",
            json!({"nqn": NQN}),
            "already exists"
        ),
        code::INTERNAL_ERROR
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_subsystem",
            json!({"nqn": "not-an-nqn"}),
            "not-an-nqn"
        ),
        code::INTERNAL_ERROR
    );
    ok(
        &mut c,
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 8, "block_size": 512}),
    );
    let ns = |bdev: &str| json!({"nqn": NQN, "namespace": {"bdev_name": bdev}});
    assert_eq!(
        ok(&mut c, "nvmf_subsystem_add_ns", ns("Malloc0")),
        json!(1),
        "the lowest free NSID"
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_ns",
            ns("Malloc0"),
            "already exported"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(&mut c, "nvmf_subsystem_add_ns", ns("Nope"), "Nope"),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_ns",
            json!({"nqn": "nqn.2016-06.io.spdk:x", "namespace": {"bdev_name": "Null0"}}),
            "no subsystem"
        ),
        code::INVALID_PARAMS
    );
    let uuid = "0d8f4f36-6a5c-4b9e-9d2a-1f2e3d4c5b6a";
    assert_eq!(
        ok(
            &mut c,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Null0", "nsid": 7,
        "nguid": "000102030405060708090A0B0C0D0E0F", "uuid": uuid}})
        ),
        json!(7)
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Null0", "nguid": "12"}}),
            "nguid"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Null0", "eui64": "0011223344556677"}}),
            "eui64"
        ),
        code::INVALID_PARAMS
    );
    let s = ok(&mut c, "nvmf_get_subsystems", json!({"nqn": NQN}));
    let nss = s[0]["namespaces"].as_array().unwrap();
    assert_eq!(nss.len(), 2);
    assert_eq!(
        (nss[1]["nsid"].clone(), nss[1]["uuid"].clone()),
        (json!(7), json!(uuid))
    );
    assert_eq!(nss[1]["nguid"], json!("000102030405060708090A0B0C0D0E0F"));
    assert_eq!(s[0]["serial_number"], json!("SPDK001"));
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_remove_ns",
            json!({"nqn": NQN, "nsid": 3}),
            "no such namespace"
        ),
        code::INVALID_PARAMS
    );
    ok(
        &mut c,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 7}),
    );

    let host = "nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-1111-4a4f-9f0e-0a0b0c0d0e01";
    ok(
        &mut c,
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": false}),
    );
    ok(
        &mut c,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": host}),
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": host, "psk": "key0"}),
            "psk"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_allow_any_host",
            json!({"nqn": NQN}),
            "allow_any_host"
        ),
        code::INVALID_PARAMS
    );
    let s = ok(&mut c, "nvmf_get_subsystems", json!({"nqn": NQN}));
    assert_eq!(
        (s[0]["allow_any_host"].clone(), s[0]["hosts"].clone()),
        (json!(false), json!([{"nqn": host}]))
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_get_subsystems",
            json!({"nqn": "nqn.2016-06.io.spdk:none"}),
            "none"
        ),
        -19
    );
    let all = ok(&mut c, "nvmf_get_subsystems", Value::Null);
    assert_eq!(all[0]["subtype"], json!("Discovery"));
}

#[test]
fn transports_are_created_listed_and_taken_again_only_as_they_are() {
    let mut c = control();
    let t = ok(&mut c, "nvmf_get_transports", Value::Null);
    assert_eq!(t[0]["trtype"], json!("LOOPBACK"));
    assert_eq!(t[0]["max_queue_depth"], json!(128));
    // What SPDK's client sends for `nvmf_create_transport -t TCP -q 64`.
    let tcp = json!({"trtype": "TCP", "max_queue_depth": 64, "no_srq": false, "c2h_success": true,
        "zcopy": false, "dif_insert_or_strip": false, "no_wr_batching": false,
        "disable_mappable_bar0": false, "disable_adaptive_irq": false,
        "disable_shadow_doorbells": false, "disable_command_passthru": false});
    ok(&mut c, "nvmf_create_transport", tcp.clone());
    let t = ok(&mut c, "nvmf_get_transports", json!({"trtype": "tcp"}));
    assert_eq!(
        (t[0]["trtype"].clone(), t[0]["max_queue_depth"].clone()),
        (json!("TCP"), json!(64))
    );
    assert_eq!(t[0]["c2h_success"], json!(true));
    ok(&mut c, "nvmf_create_transport", tcp);
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_transport",
            json!({"trtype": "tcp", "max_queue_depth": 32}),
            "already exists"
        ),
        code::INTERNAL_ERROR
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_transport",
            json!({"trtype": "FC"}),
            "Invalid transport type"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_transport",
            json!({"trtype": "rdma", "io_unit_size": 1000}),
            "io_unit_size"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_create_transport",
            json!({"trtype": "rdma", "zcopy": true}),
            "zcopy"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_get_transports",
            json!({"trtype": "rdma"}),
            "rdma"
        ),
        -19
    );
}

/// Replays `framework_get_config` of `from` into a fresh control, in save_config's order.
fn replay(from: &mut Control) -> Control {
    let mut to = control();
    for sub in ["bdev", "nvmf"] {
        let calls = ok(
            from,
            "framework_get_config",
            json!({"name": sub, "with_batches": false}),
        );
        for call in calls.as_array().unwrap() {
            let p = call.get("params").cloned().unwrap_or(Value::Null);
            ok(&mut to, call["method"].as_str().unwrap(), p);
        }
    }
    to
}

#[test]
fn a_saved_config_loads_back_into_the_same_target() {
    let mut c = with_subsystem();
    ok(
        &mut c,
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 8, "block_size": 4096}),
    );
    ok(
        &mut c,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Null0", "nsid": 3}}),
    );
    ok(
        &mut c,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    ok(
        &mut c,
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": false}),
    );
    ok(
        &mut c,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": "nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-2222-4a4f-9f0e-0a0b0c0d0e02"}),
    );
    let mut copy = replay(&mut c);
    for (m, p) in [
        ("nvmf_get_subsystems", Value::Null),
        ("bdev_get_bdevs", Value::Null),
        ("nvmf_get_transports", Value::Null),
    ] {
        assert_eq!(ok(&mut copy, m, p.clone()), ok(&mut c, m, p), "{m}");
    }
}

#[test]
fn unsupported_helper_takes_only_the_default() {
    assert!(unsupported("x", &None::<bool>, false, "why").is_ok());
    assert!(unsupported("x", &Some(false), false, "why").is_ok());
    let e = unsupported("x", &Some(true), false, "because").unwrap_err();
    assert_eq!(e.code, code::INVALID_PARAMS);
    assert!(
        e.message.contains("x = true") && e.message.contains("because"),
        "{e}"
    );
    let _: Map<String, Value> = Map::new();
}

#[test]
fn nvme_controllers_attach_over_pcie_only_and_detach_by_name() {
    let mut c = control();
    let pcie = |extra: Value| {
        let mut p = json!({"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:99:00.0",
            "prchk_reftag": false, "prchk_guard": false, "hdgst": false, "ddgst": false,
            "allow_unrecognized_csi": false, "disable_sq_flow_control": false});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_attach_controller",
            pcie(json!({"trtype": "TCP"})),
            "PCIe"
        ),
        -22
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_attach_controller",
            pcie(json!({"subnqn": "nqn.2016-06.io.spdk:x"})),
            "subnqn"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_attach_controller",
            pcie(json!({"hdgst": true})),
            "hdgst"
        ),
        code::INVALID_PARAMS
    );
    // No such device here (and no VFIO on the build machines): the error says what to check.
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_attach_controller",
            pcie(json!({})),
            "vfio-pci"
        ),
        -19
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_detach_controller",
            json!({"name": "Nvme0"}),
            "Nvme0"
        ),
        -19
    );
    assert_eq!(
        err(
            &mut c,
            "bdev_nvme_detach_controller",
            json!({"name": "Nvme0", "subnqn": "x"}),
            "subnqn"
        ),
        code::INVALID_PARAMS
    );
}

#[test]
fn a_listener_port_may_be_given_as_a_number() {
    let mut c = with_subsystem();
    let l = |port: Value| json!({"nqn": NQN, "listen_address": {"trtype": "loopback", "traddr": "x", "trsvcid": port}});
    ok(&mut c, "nvmf_subsystem_add_listener", l(json!(4420)));
    let got = ok(&mut c, "nvmf_subsystem_get_listeners", json!({"nqn": NQN}));
    assert_eq!(got[0]["address"]["trsvcid"], json!("4420"));
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_listener",
            l(json!("4420")),
            "already listens"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_listener",
            l(json!(70000)),
            "listen_address"
        ),
        code::INVALID_PARAMS
    );
    assert_eq!(
        err(
            &mut c,
            "nvmf_subsystem_add_listener",
            l(json!(true)),
            "listen_address"
        ),
        code::INVALID_PARAMS
    );
}

/// The parameter errors of the methods that need running reactors to succeed (their
/// successes are in bin/tests/rpc*.rs): a wrong name, a wrong type, a missing one, an
/// unknown subsystem.
#[test]
fn every_method_refuses_bad_parameters_by_name() {
    let mut c = with_subsystem();
    let none = "nqn.2016-06.io.spdk:none";
    for (method, params, needle, code) in [
        (
            "spdk_kill_instance",
            json!({}),
            "sig_name",
            code::INVALID_PARAMS,
        ),
        (
            "spdk_kill_instance",
            json!({"sig_name": "SIGHUP"}),
            "SIGHUP",
            code::INVALID_PARAMS,
        ),
        (
            "framework_get_config",
            json!({}),
            "name",
            code::INVALID_PARAMS,
        ),
        (
            "framework_get_reactors",
            json!({"x": 1}),
            "x",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_delete_subsystem",
            json!({"nqn": none}),
            "no subsystem",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_delete_subsystem",
            json!({"name": NQN}),
            "name",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_remove_host",
            json!({"nqn": NQN}),
            "host",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_remove_host",
            json!({"nqn": none, "host": "h"}),
            "no subsystem",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_remove_listener",
            json!({"nqn": NQN}),
            "listen_address",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_remove_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "traddr": "nowhere"}}),
            "not an IP address",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1"}, "secure_channel": true}),
            "secure_channel",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_get_listeners",
            json!({"nqn": none}),
            "no subsystem",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_get_qpairs",
            json!({"nqn": none}),
            "no subsystem",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_subsystem_get_controllers",
            json!({}),
            "nqn",
            code::INVALID_PARAMS,
        ),
        (
            "nvmf_get_stats",
            json!({"tgt_name": "x"}),
            "tgt_name",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_get_iostat",
            json!({"reset_mode": "all"}),
            "reset_mode",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_get_iostat",
            json!({"names": "Malloc0"}),
            "invalid type",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_get_bdevs",
            json!({"nam": "x"}),
            "nam",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "X", "block_size": 512}),
            "num_blocks",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "X", "num_blocks": 8, "block_size": 512, "uuid": "u"}),
            "uuid",
            code::INVALID_PARAMS,
        ),
        (
            "bdev_wait_for_examine",
            json!({"x": 1}),
            "x",
            code::INVALID_PARAMS,
        ),
        ("log_set_flag", json!({}), "flag", code::INVALID_PARAMS),
    ] {
        assert_eq!(err(&mut c, method, params, needle), code, "{method}");
    }
}
