//! Runs the built nvmf-tgt binary as an operator would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nvmf_tgt::config::{Config, DEFAULT_CONFIG_TOML};

const BIN: &str = env!("CARGO_BIN_EXE_nvmf-tgt");

fn nvmf_tgt(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run nvmf-tgt")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Kills the target if a test fails before it exits, so no spinning reactor outlives the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn capabilities_prints_exact_lines() {
    let out = nvmf_tgt(&["capabilities"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "transport loopback\ntransport rdma\ntransport tcp\nbdev malloc\nbdev null\nbdev nvme\n"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn print_default_config_round_trips() {
    let out = nvmf_tgt(&["--print-default-config"]);
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert_eq!(printed, DEFAULT_CONFIG_TOML);
    let cfg = Config::parse(&printed, "printed").unwrap();
    assert_eq!(cfg.subsystems[0].nqn, "nqn.2016-06.io.spdk:cnode1");
}

#[test]
fn missing_config_file_is_named() {
    let out = nvmf_tgt(&["-c", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("config /nonexistent: cannot read it"), "{err}");
}

#[test]
fn check_config_reports_line_and_key() {
    let dir = std::env::temp_dir().join(format!("nvmf-tgt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[bdev]]\nname = \"Malloc0\"\nkind = \"malloc\"\nnum_blocks = 8\nblock_size = 513\n",
    )
    .unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, DEFAULT_CONFIG_TOML).unwrap();

    let out = nvmf_tgt(&["check-config", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let want = format!(
        "config {} line 5: key \"block_size\": 513 is not 512 or 4096",
        bad.display()
    );
    assert!(err.contains(&want), "{err}");

    let out = nvmf_tgt(&["check-config", "-c", good.to_str().unwrap(), "-m", "0x1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("is valid"), "{summary}");
    assert!(
        summary.contains("namespace 1: bdev Malloc0, 64 MiB"),
        "{summary}"
    );

    let out = nvmf_tgt(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An NVMe controller that is not there (this machine has no VFIO device at that address):
/// the target refuses to start, names the address, the config line and what to check.
#[test]
fn missing_nvme_controller_is_named_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("nvmf-tgt-cli-nvme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nvme.toml");
    std::fs::write(
        &conf,
        "[[bdev]]\nname = \"Nvme0\"\nkind = \"nvme\"\ntraddr = \"ffff:ff:1f.7\"\n\n\
         [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c1\"\nallow_any_host = true\n\
         [[subsystem.listener]]\ntrtype = \"loopback\"\ntraddr = \"127.0.0.1\"\n\
         [[subsystem.namespace]]\nbdev = \"Nvme0n1\"\n",
    )
    .unwrap();
    let out = nvmf_tgt(&["-c", conf.to_str().unwrap(), "-m", "0x1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2: cannot open NVMe controller ffff:ff:1f.7")
            && err.contains("lspci -s ffff:ff:1f.7"),
        "{err}"
    );
    // The config itself is valid: only opening the device fails.
    let out = nvmf_tgt(&["check-config", "-c", conf.to_str().unwrap(), "-m", "0x1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("controller ffff:ff:1f.7 (namespace N is bdev Nvme0nN)"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_log_component_lists_valid_ones() {
    let out = nvmf_tgt(&["-L", "nvme"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("nvmf, rdma, tcp, reactor, bdev, dma, config"),
        "{err}"
    );
}

#[test]
fn setup_help_lists_its_subcommands() {
    let out = nvmf_tgt(&["setup", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for sub in ["status", "bind", "reset", "hugepages", "docs/setup.md"] {
        assert!(help.contains(sub), "missing {sub:?} in:\n{help}");
    }
    let out = nvmf_tgt(&["setup", "bind", "not-a-bdf"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("not a PCI address"), "{out:?}");
}

/// Reads only world-readable files, so it runs as any user on any machine.
#[test]
fn setup_status_runs_here() {
    let out = nvmf_tgt(&["setup", "status"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Hugepages"), "{stdout}");
    let has_nvme = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|entry| {
                std::fs::read_to_string(entry.path().join("class"))
                    .is_ok_and(|class| class.trim() == "0x010802")
            })
        })
        .unwrap_or(false);
    if has_nvme {
        assert!(stdout.contains("\nBDF "), "{stdout}");
    } else {
        assert!(stdout.contains("no NVMe devices found"), "{stdout}");
    }
}

#[test]
fn default_config_runs_and_stops_on_sigterm() {
    let socket = std::env::temp_dir().join(format!("nvmf-cli-test-{}.sock", std::process::id()));
    let child = Command::new(BIN)
        .args(["-m", "0x1", "-r"])
        .arg(&socket)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nvmf-tgt");
    let mut running = Running(child);
    let stderr = running.0.stderr.take().expect("piped stderr");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    // Reads until the target closes stderr, i.e. exits.
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains("reactor 0 started");
                log.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    assert!(
        started,
        "no \"reactor 0 started\" within 10 s; log:\n{}",
        log.join("\n")
    );
    let log_text = log.join("\n");
    assert!(log_text.contains("built-in default"), "{log_text}");
    assert!(
        log_text.contains("namespace 1: Malloc0 (Malloc disk), 64 MiB, block size 512"),
        "{log_text}"
    );
    assert!(
        log_text.contains("listener tcp 127.0.0.1:4420"),
        "{log_text}"
    );
    assert!(log_text.contains("allows ANY host"), "{log_text}");
    assert!(log_text.contains("only from this machine"), "{log_text}");

    // What the README promises: a host on this machine connects over TCP.
    let host = transport_tcp::host::TcpHost::connect(
        "127.0.0.1:4420".parse().expect("address"),
        transport_tcp::pdu::Digests::default(),
    );
    let mut host = host.expect("TCP connection to the default listener");
    let c = host
        .fabrics_connect(
            0,
            31,
            0xFFFF,
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
            5000,
        )
        .expect("Connect over TCP");
    assert!(c.status().is_success(), "Connect: {:?}", c.status());
    host.enable().expect("controller enabled");
    drop(host);

    // Let the reactor settle into its loop before stopping it.
    thread::sleep(Duration::from_secs(1));
    let pid = libc::pid_t::try_from(running.0.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) only sends a signal; `pid` is our own child, which has not been reaped
    // (Running reaps it only after this), so the pid cannot have been reused.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("wait for nvmf-tgt") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "nvmf-tgt did not exit within 10 s of SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("stderr reader");
    let rest: Vec<String> = lines_rx.try_iter().collect();
    assert!(
        status.success(),
        "exit {status}; log:\n{}\n{}",
        log_text,
        rest.join("\n")
    );
    assert!(
        rest.iter().any(|l| l.contains("stopped cleanly")),
        "{}",
        rest.join("\n")
    );
}
