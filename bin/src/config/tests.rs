//! The config format, key by key: what parses, and what each mistake says.

use super::*;
use nvmf::{ListenAddress, TargetOptions};

const PATH: &str = "/etc/nvmf.toml";

const FULL: &str = r#"
[global]
reactor_mask = "[0]"

[transport]
max_queue_depth = 64
max_admin_queue_depth = 64
max_queues_per_controller = 8
in_capsule_data_size = 8192
max_io_size = 262144
io_unit_size = 16384
acceptor_poll_period_us = 1000
num_shared_buffers = 256

[[bdev]]
name = "Malloc0"
kind = "malloc"
num_blocks = 2048
block_size = 4096
numa_node = 0

[[bdev]]
name = "Null0"
kind = "null"
num_blocks = 1000
block_size = 512

[[subsystem]]
nqn = "nqn.2016-06.io.spdk:cnode1"
serial = "SN1"
model = "Model 1"
allow_any_host = false
hosts = [
  "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
  "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
]
max_namespaces = 4
  [[subsystem.listener]]
  trtype = "loopback"
  traddr = "127.0.0.1"
  trsvcid = "4421"
  [[subsystem.listener]]
  trtype = "loopback"
  traddr = "127.0.0.2"
  [[subsystem.namespace]]
  bdev = "Null0"
  [[subsystem.namespace]]
  bdev = "Malloc0"
  nsid = 1
  nguid = "000102030405060708090a0b0c0d0e0f"
  uuid = "00010203-0405-0607-0809-0a0b0c0d0e0f"

[[subsystem]]
nqn = "nqn.2016-06.io.spdk:cnode2"
allow_any_host = true
  [[subsystem.namespace]]
  bdev = "Malloc0"
"#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, PATH)
}

/// An nvme bdev `Nvme0` and a subsystem exporting `ns_bdev`, plus `extra` bdev keys.
fn nvme_config(extra: &str, ns_bdev: &str) -> String {
    format!(
        "[[bdev]]\nname = \"Nvme0\"\nkind = \"nvme\"\n{extra}\n\
             [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\nallow_any_host = true\n\
             [[subsystem.namespace]]\nbdev = \"{ns_bdev}\"\n"
    )
}

#[test]
fn nvme_bdevs_name_their_namespaces() {
    let c = parse(&nvme_config("traddr = \"04:00.0\"", "Nvme0n2")).unwrap();
    assert_eq!(
        c.bdevs[0].device,
        BdevDevice::Nvme {
            traddr: "0000:04:00.0".into(),
            io_timeout_ms: 30_000,
        },
        "the domain is added; Linux's I/O timeout"
    );
    let c = parse(&nvme_config(
        "traddr = \"04:00.0\"\nio_timeout_ms = 0",
        "Nvme0n1",
    ))
    .unwrap();
    assert!(matches!(
        c.bdevs[0].device,
        BdevDevice::Nvme {
            io_timeout_ms: 0,
            ..
        }
    ));
    let spec = &c.bdevs[0];
    assert_eq!(spec.provides("Nvme0n2"), Some(2));
    assert_eq!(spec.size_bytes(), None);
    for not_a_namespace in [
        "Nvme0", "Nvme0n", "Nvme0n0", "Nvme0n01", "Nvme0nx", "Nvme00n1",
    ] {
        assert_eq!(spec.provides(not_a_namespace), None, "{not_a_namespace}");
    }
    assert!(c.to_string().contains("controller 0000:04:00.0"), "{c}");

    let e = error(
        &nvme_config("traddr = \"04:00.0\"", "Nvme0"),
        9,
        Some("bdev"),
    );
    assert!(
        e.contains("no bdev is named \"Nvme0\" (defined: \"Nvme0n1\"...)"),
        "{e}"
    );
}

#[test]
fn nvme_bdev_errors() {
    let e = error(&nvme_config("", "Nvme0n1"), 2, Some("traddr"));
    assert!(
        e.contains("an nvme bdev needs traddr") && e.contains("setup status"),
        "{e}"
    );
    let e = error(
        &nvme_config("traddr = \"4:0.0\"", "Nvme0n1"),
        4,
        Some("traddr"),
    );
    assert!(e.contains("4:0.0"), "{e}");
    let e = error(
        &nvme_config("traddr = \"04:00.0\"\nblock_size = 512", "Nvme0n1"),
        5,
        Some("block_size"),
    );
    assert!(e.contains("does not apply to nvme bdevs"), "{e}");
    let e = error(&with_bdev("traddr = \"04:00.0\"\n"), 6, Some("traddr"));
    assert!(e.contains("applies to nvme bdevs only"), "{e}");
    let e = error(
        &with_bdev("io_timeout_ms = 100\n"),
        6,
        Some("io_timeout_ms"),
    );
    assert!(e.contains("applies to nvme bdevs only"), "{e}");
    let e = error(
        &nvme_config("traddr = \"04:00.0\"\nio_timeout_ms = 5", "Nvme0n1"),
        5,
        Some("io_timeout_ms"),
    );
    assert!(e.contains("use 100 to 3600000 ms, or 0"), "{e}");

    // A malloc bdev named like one of the controller's namespaces, and a controller twice.
    let clash = format!(
        "{}[[bdev]]\nname = \"Nvme0n1\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n",
        nvme_config("traddr = \"04:00.0\"", "Nvme0n1")
    );
    let e = error(&clash, 11, Some("name"));
    assert!(e.contains("clashes with bdev \"Nvme0\""), "{e}");
    let twice = format!(
        "{}[[bdev]]\nname = \"Nvme1\"\nkind = \"nvme\"\ntraddr = \"0000:04:00.0\"\n",
        nvme_config("traddr = \"04:00.0\"", "Nvme0n1")
    );
    let e = error(&twice, 11, Some("traddr"));
    assert!(e.contains("already bdev \"Nvme0\""), "{e}");
}

/// The error for `text`, checked to name PATH, `line` and `key`.
pub(super) fn error(text: &str, line: usize, key: Option<&str>) -> String {
    let e = parse(text).expect_err("config should be rejected");
    let shown = e.to_string();
    assert_eq!(e.line(), Some(line), "{shown}");
    assert_eq!(e.key(), key, "{shown}");
    let expected_start = match key {
        Some(k) => format!("config {PATH} line {line}: key \"{k}\": "),
        None => format!("config {PATH} line {line}: "),
    };
    assert!(shown.starts_with(&expected_start), "{shown}");
    shown
}

/// A config with one malloc bdev and one subsystem, plus `extra` appended to the given section.
pub(super) fn with_bdev(bdev_extra: &str) -> String {
    format!(
            "[[bdev]]\nname = \"Malloc0\"\nkind = \"malloc\"\nnum_blocks = 16\nblock_size = 512\n{bdev_extra}"
        )
}

pub(super) fn with_subsystem(sub_extra: &str) -> String {
    format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:cnode1\"\n{sub_extra}",
        with_bdev("")
    )
}

#[test]
fn full_example_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.path, PATH);
    assert_eq!(c.reactor_mask.cores(), [0]);
    assert_eq!(c.mask_origin, MaskOrigin::File { line: 3 });
    let o = c.transport.options;
    assert_eq!(
        (
            o.max_queue_depth,
            o.max_admin_queue_depth,
            o.max_queues_per_controller,
            o.in_capsule_data_bytes,
            o.max_io_bytes,
            o.acceptor_poll_period_us
        ),
        (64, 64, 8, 8192, 262_144, 1000)
    );
    assert_eq!(c.transport.num_shared_buffers, 256);
    assert_eq!(
        (c.transport.srq, c.transport.srq_depth),
        (false, DEFAULT_SRQ_DEPTH)
    );
    assert_eq!(
        c.bdevs[0],
        BdevSpec {
            name: "Malloc0".into(),
            kind: BdevKind::Malloc,
            device: BdevDevice::Ram {
                num_blocks: 2048,
                block_size: 4096,
                numa_node: Some(0),
            },
            line: 16
        }
    );
    assert_eq!(c.bdevs[1].kind, BdevKind::Null);
    assert!(matches!(
        c.bdevs[1].device,
        BdevDevice::Ram {
            numa_node: None,
            ..
        }
    ));

    let s = &c.subsystems[0];
    assert_eq!((s.serial.as_str(), s.model.as_str()), ("SN1", "Model 1"));
    assert!(!s.allow_any_host);
    assert_eq!(s.hosts.len(), 2);
    assert_eq!(s.max_namespaces, 4);
    assert_eq!(
        s.listeners,
        [
            ListenAddress::new("loopback", "127.0.0.1", "4421"),
            ListenAddress::new("loopback", "127.0.0.2", DEFAULT_TRSVCID)
        ]
    );
    // Null0 has no nsid and Malloc0 takes 1 explicitly further down: Null0 gets 2.
    assert_eq!(
        s.namespaces
            .iter()
            .map(|n| (n.bdev.as_str(), n.nsid))
            .collect::<Vec<_>>(),
        [("Null0", 2), ("Malloc0", 1)]
    );
    let m = &s.namespaces[1];
    assert_eq!(m.nguid.unwrap()[15], 0x0f);
    assert_eq!(m.uuid.unwrap()[0..2], [0x00, 0x01]);
    assert_eq!(s.namespaces[0].nguid, None);

    // Defaults for the second subsystem.
    let s2 = &c.subsystems[1];
    assert_eq!(s2.serial, "SPDK00000000000002");
    assert_eq!(s2.model, DEFAULT_MODEL);
    assert_eq!(s2.max_namespaces, DEFAULT_MAX_NAMESPACES);
    assert_eq!(s2.namespaces[0].nsid, 1);
    assert!(s2.allow_any_host);
}

#[test]
fn default_config_parses_to_the_documented_values() {
    let c = Config::builtin_default().unwrap();
    assert_eq!(c.path, DEFAULT_CONFIG_NAME);
    assert_eq!(c.reactor_mask.to_string(), "0x1");
    // The explicit [transport] values are exactly the library defaults.
    let d = TargetOptions::default();
    let o = c.transport.options;
    assert_eq!(
        (
            o.max_queue_depth,
            o.max_admin_queue_depth,
            o.max_queues_per_controller,
            o.in_capsule_data_bytes,
            o.max_io_bytes,
            o.acceptor_poll_period_us
        ),
        (
            d.max_queue_depth,
            d.max_admin_queue_depth,
            d.max_queues_per_controller,
            d.in_capsule_data_bytes,
            d.max_io_bytes,
            d.acceptor_poll_period_us
        )
    );
    assert_eq!(c.transport.num_shared_buffers, DEFAULT_NUM_SHARED_BUFFERS);
    let d = TransportConfig::default();
    assert_eq!(
        (c.transport.srq, c.transport.srq_depth),
        (d.srq, d.srq_depth)
    );
    assert_eq!((d.srq, d.srq_depth), (false, DEFAULT_SRQ_DEPTH));
    let b = &c.bdevs[0];
    assert_eq!(
        (b.name.as_str(), b.kind, b.size_bytes()),
        ("Malloc0", BdevKind::Malloc, Some(64 << 20))
    );
    let s = &c.subsystems[0];
    assert_eq!(s.nqn, "nqn.2016-06.io.spdk:cnode1");
    assert_eq!(s.serial, "SPDK00000000000001");
    assert_eq!(s.model, "Rust NVMe-oF target");
    assert!(s.allow_any_host);
    assert_eq!(
        s.listeners,
        [ListenAddress::new("tcp", "127.0.0.1", "4420")]
    );
    assert_eq!(
        (s.namespaces[0].bdev.as_str(), s.namespaces[0].nsid),
        ("Malloc0", 1)
    );
    assert!(c.warnings().iter().any(|w| w.contains("ANY host")));
}

#[test]
fn mask_errors() {
    let e = error(
        "[global]\nreactor_mask = \"0xZ\"\n",
        2,
        Some("reactor_mask"),
    );
    assert!(e.contains("not a hex digit"), "{e}");
    error("[global]\nreactor_mask = \"\"\n", 2, Some("reactor_mask"));
    error(
        "[global]\nreactor_mask = \"3-1\"\n",
        2,
        Some("reactor_mask"),
    );
}

#[test]
fn idle_sleep_us_default_value_and_range() {
    assert_eq!(parse("").unwrap().idle_sleep_us, 0);
    assert_eq!(
        parse("[global]\nidle_sleep_us = 50\n")
            .unwrap()
            .idle_sleep_us,
        50
    );
    for bad in ["-1", "10001"] {
        let e = error(
            &format!("[global]\nidle_sleep_us = {bad}\n"),
            2,
            Some("idle_sleep_us"),
        );
        assert!(e.contains("use 0 (reactors spin) to 10000"), "{e}");
    }
}

#[test]
fn interrupt_mode_default_switch_and_range() {
    assert_eq!(
        parse("").unwrap().interrupt_after_idle_us,
        Some(DEFAULT_INTERRUPT_AFTER_IDLE_US)
    );
    assert_eq!(
        parse("[global]\ninterrupt_mode = false\n")
            .unwrap()
            .interrupt_after_idle_us,
        None
    );
    assert_eq!(
        parse("[global]\ninterrupt_mode = true\n")
            .unwrap()
            .interrupt_after_idle_us,
        Some(DEFAULT_INTERRUPT_AFTER_IDLE_US)
    );
    assert_eq!(
        parse("[global]\ninterrupt_mode = true\ninterrupt_after_idle_us = 0\n")
            .unwrap()
            .interrupt_after_idle_us,
        Some(0)
    );
    let e = error(
        "[global]\ninterrupt_mode = false\ninterrupt_after_idle_us = 50\n",
        3,
        Some("interrupt_after_idle_us"),
    );
    assert!(e.contains("set interrupt_mode = true"), "{e}");
    for bad in ["-1", "1000001"] {
        let e = error(
            &format!("[global]\ninterrupt_mode = true\ninterrupt_after_idle_us = {bad}\n"),
            3,
            Some("interrupt_after_idle_us"),
        );
        assert!(e.contains("use 0 to 1000000"), "{e}");
    }
}

#[test]
fn mask_override_and_usability() {
    let mut c = parse("[global]\nreactor_mask = \"0x1\"\n").unwrap();
    c.override_mask(ReactorMask::parse("[0,1]").unwrap());
    assert_eq!(c.reactor_mask.cores(), [0, 1]);
    assert_eq!(c.mask_origin, MaskOrigin::CommandLine);

    // CPU 1023 is not on any machine this runs on; the error blames its origin.
    let mut c = parse("\n[global]\nreactor_mask = \"[1023]\"\n").unwrap();
    let e = c.check_mask_usable().unwrap_err();
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(e.to_string().contains("CPU 1023"), "{e}");
    c.override_mask(ReactorMask::parse("[1023]").unwrap());
    let e = c.check_mask_usable().unwrap_err().to_string();
    assert!(e.starts_with("-m/--reactor-mask: CPU 1023"), "{e}");
}

#[test]
fn srq_keys_parse() {
    let c = parse(&format!(
        "[transport]\nsrq = true\nsrq_depth = 1024\n{}",
        with_bdev("")
    ))
    .unwrap();
    assert_eq!((c.transport.srq, c.transport.srq_depth), (true, 1024));
    assert!(c.to_string().contains("srq on (srq_depth 1024)"), "{c}");
    let c = parse("[transport]\nsrq = true\n").unwrap();
    assert_eq!(c.transport.srq_depth, DEFAULT_SRQ_DEPTH);
}

#[test]
fn c2h_success_is_on_unless_turned_off() {
    assert!(parse("").unwrap().transport.c2h_success);
    let c = parse("[transport]\nc2h_success = false\n").unwrap();
    assert!(!c.transport.c2h_success);
    assert!(c.to_string().contains("c2h_success off"), "{c}");
    error("[transport]\nc2h_success = 1\n", 2, Some("c2h_success"));
}

#[test]
fn transport_errors_name_the_key() {
    let e = error(
        "[transport]\nmax_queue_depth = 5000\n",
        2,
        Some("max_queue_depth"),
    );
    assert!(e.contains("5000 is invalid: it must be 2..=4096"), "{e}");
    // Beyond u16: clamped, still rejected with the real range.
    let e = error(
        "[transport]\nmax_queue_depth = 1000000000000\n",
        2,
        Some("max_queue_depth"),
    );
    assert!(e.contains("must be 2..=4096"), "{e}");
    let e = error(
        "[transport]\n\nmax_io_size = 5000\n",
        3,
        Some("max_io_size"),
    );
    assert!(e.contains("power of two"), "{e}");
    let e = error(
        "[transport]\nin_capsule_data_size = -16\n",
        2,
        Some("in_capsule_data_size"),
    );
    assert!(e.contains("-16 is negative"), "{e}");
    error(
        "[transport]\nacceptor_poll_period_us = 0\n",
        2,
        Some("acceptor_poll_period_us"),
    );
    error(
        "[transport]\nnum_shared_buffers = 0\n",
        2,
        Some("num_shared_buffers"),
    );
    for bad in [
        "io_unit_size = 1000",
        "io_unit_size = 2048",
        "io_unit_size = 2097152",
    ] {
        let e = error(&format!("[transport]\n{bad}\n"), 2, Some("io_unit_size"));
        assert!(e.contains("power of two from 4096 to max_io_size"), "{e}");
    }
    // One max_io_size transfer must fit the pool: 1 MiB is 128 units of 8 KiB.
    let e = error(
        "[transport]\nnum_shared_buffers = 100\n",
        2,
        Some("num_shared_buffers"),
    );
    assert!(e.contains("set num_shared_buffers to at least 128"), "{e}");
    let e = error(
        "[transport]\nsrq = true\nsrq_depth = 8\n",
        3,
        Some("srq_depth"),
    );
    assert!(e.contains("8 is out of range; use 16 to 65536"), "{e}");
    error("[transport]\nsrq_depth = 65537\n", 2, Some("srq_depth"));
    error("[transport]\nsrq = 1\n", 2, Some("srq"));
    error(
        "[transport]\nmax_queues_per_controller = 99999999999\n",
        2,
        Some("max_queues_per_controller"),
    );
    error(
        "[transport]\nmax_admin_queue_depth = 1\n",
        2,
        Some("max_admin_queue_depth"),
    );
    // in_capsule_data_size must not exceed max_io_size: the key that is set is blamed.
    let e = error(
        "[transport]\nmax_io_size = 4096\nin_capsule_data_size = 8192\n",
        3,
        Some("in_capsule_data_size"),
    );
    assert!(e.contains("must not exceed max_io_size"), "{e}");
    error(
        "[transport]\nmax_queue_depth = 1.5\n",
        2,
        Some("max_queue_depth"),
    );
}

#[test]
fn bdev_errors() {
    let e = error(&with_bdev("").replace("512", "513"), 5, Some("block_size"));
    assert!(
        e.ends_with("key \"block_size\": 513 is not 512 or 4096"),
        "{e}"
    );
    error(&with_bdev("").replace("= 16", "= 0"), 4, Some("num_blocks"));
    let e = error(
        &with_bdev("").replace("= 16", "= 9223372036854775807"),
        4,
        Some("num_blocks"),
    );
    assert!(e.contains("overflow"), "{e}");
    let e = error(
        &with_bdev("").replace("\"malloc\"", "\"ram\""),
        3,
        Some("kind"),
    );
    assert!(
        e.contains("not a bdev kind") && e.contains("\"malloc\", \"null\""),
        "{e}"
    );
    let e = error(
        &with_bdev("").replace("\"malloc\"", "\"nvme\""),
        4,
        Some("num_blocks"),
    );
    assert!(e.contains("does not apply to nvme bdevs"), "{e}");
    error(
        &with_bdev("").replace("\"Malloc0\"", "\"Malloc 0\""),
        2,
        Some("name"),
    );
    error(
        &with_bdev("").replace("\"Malloc0\"", "\"\""),
        2,
        Some("name"),
    );
    let twice = format!("{}\n{}", with_bdev(""), with_bdev(""));
    let e = error(&twice, 8, Some("name"));
    assert!(e.contains("already defined at line 2"), "{e}");
    error(&with_bdev("numa_node = 5000\n"), 6, Some("numa_node"));
    let e = error(
        &with_bdev("numa_node = 0\n").replace("\"malloc\"", "\"null\""),
        6,
        Some("numa_node"),
    );
    assert!(e.contains("malloc bdevs only"), "{e}");
}

#[test]
fn subsystem_errors() {
    // Line 8 is the nqn of with_subsystem().
    let e = error(
        &with_subsystem("").replace("nqn.2016-06.io.spdk:cnode1", "iqn.x"),
        8,
        Some("nqn"),
    );
    assert!(e.contains("must start with \"nqn.\""), "{e}");
    let discovery = with_subsystem("").replace(
        "nqn.2016-06.io.spdk:cnode1",
        "nqn.2014-08.org.nvmexpress.discovery",
    );
    error(&discovery, 8, Some("nqn"));
    let twice = format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:cnode1\"\n",
        with_subsystem("")
    );
    let e = error(&twice, 11, Some("nqn"));
    assert!(e.contains("already defined at line 8"), "{e}");
    let e = error(
        &with_subsystem("serial = \"123456789012345678901\"\n"),
        9,
        Some("serial"),
    );
    assert!(e.contains("1 to 20 printable ASCII"), "{e}");
    error(&with_subsystem("model = \"\"\n"), 9, Some("model"));
    error(&with_subsystem("model = \"caf\u{e9}\"\n"), 9, Some("model"));
    error(&with_subsystem("hosts = [\"bad\"]\n"), 9, Some("hosts"));
    let e = error(
        &with_subsystem("hosts = [\"nqn.2016-06.io.spdk:h\", \"nqn.2016-06.io.spdk:h\"]\n"),
        9,
        Some("hosts"),
    );
    assert!(e.contains("listed twice"), "{e}");
    error(
        &with_subsystem("max_namespaces = 0\n"),
        9,
        Some("max_namespaces"),
    );
    error(
        &with_subsystem("max_namespaces = 1025\n"),
        9,
        Some("max_namespaces"),
    );
}

#[test]
fn listener_errors() {
    let listener = |body: &str| with_subsystem(&format!("[[subsystem.listener]]\n{body}"));
    parse(&listener("trtype = \"tcp\"\ntraddr = \"10.0.0.1\"\n")).expect("tcp is built");
    parse(&listener("trtype = \"tcp\"\ntraddr = \"::\"\n")).expect("IPv6 wildcard");
    parse(&listener("trtype = \"rdma\"\ntraddr = \"10.0.0.1\"\n")).expect("rdma is built");
    let e = error(
        &listener("trtype = \"fc\"\ntraddr = \"x\"\n"),
        10,
        Some("trtype"),
    );
    assert!(e.contains("\"rdma\", \"tcp\", \"loopback\""), "{e}");
    error(
        &listener("trtype = \"loopback\"\ntraddr = \"\"\n"),
        11,
        Some("traddr"),
    );
    let e = error(
        &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"0\"\n"),
        12,
        Some("trsvcid"),
    );
    assert!(e.contains("not a port number"), "{e}");
    error(
        &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"http\"\n"),
        12,
        Some("trsvcid"),
    );
    error(
        &listener("trtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = 4420\n"),
        12,
        Some("trsvcid"),
    );
    let twice = listener("trtype = \"loopback\"\ntraddr = \"a\"\n[[subsystem.listener]]\ntrtype = \"loopback\"\ntraddr = \"a\"\ntrsvcid = \"4420\"\n");
    let e = error(&twice, 12, None);
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn traddr_rules() {
    assert!(check_traddr("loopback", "anything").is_ok());
    assert!(check_traddr("rdma", "192.168.1.10").is_ok());
    assert!(check_traddr("rdma", "fe80::1").is_ok());
    assert!(check_traddr("tcp", "0.0.0.0").is_ok());
    assert!(check_traddr("rdma", "host.example")
        .unwrap_err()
        .contains("not an IP"));
    assert!(check_traddr("loopback", &"a".repeat(300)).is_err());
    assert!(check_trsvcid("4420").is_ok());
    assert!(check_trsvcid("65536").is_err());
    assert!(check_trsvcid("+1").is_err());
}

#[test]
fn namespace_errors() {
    let ns = |body: &str| {
        with_subsystem(&format!(
            "max_namespaces = 2\n[[subsystem.namespace]]\n{body}"
        ))
    };
    let e = error(&ns("bdev = \"Malloc9\"\n"), 11, Some("bdev"));
    assert!(
        e.contains("no bdev is named \"Malloc9\" (defined: \"Malloc0\")"),
        "{e}"
    );
    let e = error(&ns("bdev = \"Malloc0\"\nnsid = 3\n"), 12, Some("nsid"));
    assert!(e.contains("use 1 to 2"), "{e}");
    error(&ns("bdev = \"Malloc0\"\nnsid = 0\n"), 12, Some("nsid"));
    let e = error(
        &ns("bdev = \"Malloc0\"\n[[subsystem.namespace]]\nbdev = \"Malloc0\"\n"),
        13,
        Some("bdev"),
    );
    assert!(e.contains("already namespace 1"), "{e}");
    let two = format!("{}\n{}", ns("bdev = \"Malloc0\"\nnsid = 2\n"), "[[subsystem.namespace]]\nbdev = \"Null0\"\nnsid = 2\n[[bdev]]\nname = \"Null0\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n");
    let e = error(&two, 16, Some("nsid"));
    assert!(e.contains("used twice"), "{e}");
    error(
        &ns("bdev = \"Malloc0\"\nnguid = \"xyz\"\n"),
        12,
        Some("nguid"),
    );
    error(
        &ns("bdev = \"Malloc0\"\nnguid = \"00000000000000000000000000000000\"\n"),
        12,
        Some("nguid"),
    );
    error(
        &ns("bdev = \"Malloc0\"\nuuid = \"0001020304050607-0809-0a0b0c0d0e0f\"\n"),
        12,
        Some("uuid"),
    );
    error(
        &ns("bdev = \"Malloc0\"\nuuid = \"00000000-0000-0000-0000-000000000000\"\n"),
        12,
        Some("uuid"),
    );
}

#[test]
fn no_free_nsid_and_duplicate_ids() {
    let text = format!(
        "{}\n[[bdev]]\nname = \"B\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n\
             [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\nmax_namespaces = 1\n\
             [[subsystem.namespace]]\nbdev = \"Malloc0\"\n\
             [[subsystem.namespace]]\nbdev = \"B\"\n",
        with_bdev("")
    );
    let e = error(&text, 17, None);
    assert!(e.contains("no free NSID") && e.contains("line 12"), "{e}");

    let dup = |key: &str, value: &str| {
        format!(
            "{}\n[[bdev]]\nname = \"B\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n\
                 [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n\
                 [[subsystem.namespace]]\nbdev = \"Malloc0\"\n{key} = \"{value}\"\n\
                 [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:d\"\n\
                 [[subsystem.namespace]]\nbdev = \"B\"\n{key} = \"{value}\"\n",
            with_bdev("")
        )
    };
    let e = error(
        &dup("nguid", "0f0e0d0c0b0a09080706050403020100"),
        21,
        Some("nguid"),
    );
    assert!(e.contains("already used at line 16"), "{e}");
    error(
        &dup("uuid", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
        21,
        Some("uuid"),
    );
}

#[test]
fn summary_lists_everything() {
    let c = parse(FULL).unwrap();
    let s = c.to_string();
    for want in [
            "reactor mask 0x1 (1 reactor(s) on CPU(s) 0)",
            "io_unit_size 16384",
            "num_shared_buffers 256 (4 MiB), srq off",
            "bdev Malloc0: malloc, 2048 blocks of 4096 bytes (8 MiB), NUMA node 0",
            "bdev Null0: null, 1000 blocks of 512 bytes (0.49 MiB)",
            "subsystem nqn.2016-06.io.spdk:cnode1: serial \"SN1\", model \"Model 1\", max_namespaces 4, 2 allowed host(s)",
            "  listener loopback 127.0.0.2:4420",
            "  namespace 2: bdev Null0, 0.49 MiB",
            "subsystem nqn.2016-06.io.spdk:cnode2",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
    let w = c.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("cnode2") && w.contains("ANY host")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("cnode2") && w.contains("no [[subsystem.listener]]")),
        "{w:?}"
    );
}

#[test]
fn helpers() {
    assert_eq!(format_mib(64 << 20), "64 MiB");
    assert_eq!(format_mib(1 << 19), "0.50 MiB");
    assert_eq!(
        parse_uuid("f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap()[0],
        0xf8
    );
    assert_eq!(
        parse_nguid("00010203-04050607-08090a0b-0c0d0e0f").unwrap()[3],
        3
    );
}
