//! The command line: `nvmf-tgt [-m MASK] [-c CONFIG] [-L COMPONENT]...` runs the target;
//! `capabilities`, `check-config` and `--print-default-config` inspect things without running;
//! `setup` prepares the machine (hugepages, NVMe devices on vfio-pci).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reactor::ReactorMask;

use crate::app;
use crate::capabilities::capabilities_text;
use crate::config::{Config, ConfigError, DEFAULT_CONFIG_TOML};
use crate::fabric_perf::{self, FabricPerfArgs};
use crate::logging::{self, Component};
use crate::nvme_perf::{self, PerfArgs};
use nvmf_setup::{self as setup, SetupCommand};

/// Exit status for a usage mistake, as clap uses.
const EXIT_USAGE: u8 = 2;

const EXAMPLES: &str = "\
Examples:
  nvmf-tgt                                 run the built-in default config (one 64 MiB malloc
                                           namespace on NVMe/TCP 127.0.0.1:4420, and on RDMA
                                           where a device exists; CPU 0)
  nvmf-tgt -c /etc/nvmf.toml -m 0x3        run a config on CPUs 0 and 1
  nvmf-tgt -c nvmf.toml -m '[0,2-3]' -L nvmf -L reactor
                                           ... on CPUs 0, 2 and 3, with debug logs of the
                                           target core and the reactors
  nvmf-tgt --print-default-config > nvmf.toml
                                           start your own config from the default
  nvmf-tgt check-config -c nvmf.toml       validate a config and print what it sets up
  nvmf-tgt --wait-for-rpc                  start with nothing configured; configure it over
                                           SPDK's JSON-RPC (spdk-rpc, or nvmf-tgt rpc)
  nvmf-tgt --json cfg.json                 start from a config saved with save_config
  nvmf-tgt rpc nvmf_get_subsystems         call a method of the running target
  nvmf-tgt capabilities                    list the built transports and bdev kinds
  nvmf-tgt setup status                    show hugepages and NVMe devices (setup --help: more)

Stop the target with SIGINT (Ctrl-C) or SIGTERM: it disconnects hosts, drains I/O and exits 0.
RUST_LOG (e.g. RUST_LOG=warn) sets the base log filter; -L raises one component to debug.";

/// Polled-mode NVMe over Fabrics target.
#[derive(Debug, Parser)]
#[command(
    name = "nvmf-tgt",
    version,
    about = "Polled-mode NVMe over Fabrics target",
    long_about = "Polled-mode NVMe over Fabrics target. Exports block devices (bdevs) as \
                  namespaces of NVMe subsystems, with one busy-polling reactor per CPU of the \
                  reactor mask. Configured with a TOML file (-c) whose sections mirror SPDK's \
                  nvmf.conf; without -c it runs a built-in default.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// CPUs that run a reactor, overriding [global] reactor_mask: hex (0x3, 3) or a CPU list
    /// ([0,1], 0-1)
    #[arg(short = 'm', long = "reactor-mask", value_name = "MASK", global = true)]
    pub reactor_mask: Option<ReactorMask>,

    /// Configuration file (TOML); without it the built-in default runs (see
    /// --print-default-config)
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Enable debug logging for a component (repeat for several)
    #[arg(short = 'L', long = "logflag", value_name = "COMPONENT", global = true)]
    pub log: Vec<Component>,

    /// Print the built-in default configuration (TOML) and exit
    #[arg(long)]
    pub print_default_config: bool,

    /// Start from a JSON config saved with `spdk-rpc save_config` (SPDK's format) instead of
    /// a TOML file: its calls run before the RPC socket opens
    #[arg(long = "json", value_name = "FILE", conflicts_with = "config")]
    pub json: Option<PathBuf>,

    /// Start with nothing configured and the RPC socket open: configure over RPC, then call
    /// framework_start_init (or `spdk-rpc load_config`), as SPDK's --wait-for-rpc
    #[arg(long = "wait-for-rpc", conflicts_with_all = ["config", "json"])]
    pub wait_for_rpc: bool,

    /// The JSON-RPC socket (SPDK's protocol; `spdk-rpc` and `nvmf-tgt rpc` use it)
    #[arg(short = 'r', long = "rpc-socket", value_name = "PATH", default_value = rpc::DEFAULT_SOCKET_PATH)]
    pub rpc_socket: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Print what this build supports, one "KIND NAME" line each (e.g. "transport loopback")
    Capabilities,
    /// Parse and validate the file given with -c, print a summary; exit 0 if valid, 1 if not
    CheckConfig,
    /// Prepare the machine: show hugepages and NVMe devices, bind NVMe devices to vfio-pci and
    /// back, reserve hugepages (what SPDK's scripts/setup.sh does)
    #[command(after_help = SETUP_EXAMPLES)]
    Setup {
        #[command(subcommand)]
        command: SetupCommand,
    },
    /// Random reads straight through the userspace NVMe driver (a controller bound to
    /// vfio-pci), one polled queue pair at a fixed depth; prints IOPS and latency
    NvmePerf(PerfArgs),
    /// A fabrics benchmark client: drives a remote target over NVMe/TCP at a fixed queue
    /// depth from one thread (pinned to the lowest CPU of -m); prints IOPS, MiB/s and
    /// latency (spdk_nvme_perf's options -r TRID -q -o -w -M -t -H -I; its -c is -m here)
    #[command(after_help = PERF_EXAMPLES)]
    Perf(FabricPerfArgs),
    /// Calls a JSON-RPC method of a running target and prints the result as JSON (what
    /// SPDK's `spdk-rpc` does, for machines without Python)
    #[command(after_help = RPC_EXAMPLES)]
    Rpc(RpcArgs),
}

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RpcArgs {
    /// The method, by SPDK's name (rpc_get_methods lists them)
    pub method: String,
    /// Parameters: one JSON object, or KEY=VALUE pairs (VALUE as JSON when it parses, else a
    /// string; a dotted KEY nests: namespace.bdev_name=Malloc0)
    pub params: Vec<String>,
    /// The target's RPC socket
    #[arg(short = 's', long = "socket", value_name = "PATH", default_value = rpc::DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// Seconds to wait for the answer
    #[arg(short = 't', long = "timeout", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
}

const RPC_EXAMPLES: &str = "\
Examples:
  nvmf-tgt rpc nvmf_get_subsystems
  nvmf-tgt rpc bdev_malloc_create name=Malloc1 num_blocks=131072 block_size=512
  nvmf-tgt rpc nvmf_subsystem_add_ns nqn=nqn.2016-06.io.spdk:cnode1 namespace.bdev_name=Malloc1
  nvmf-tgt rpc nvmf_create_subsystem '{\"nqn\": \"nqn.2016-06.io.spdk:cnode2\", \"allow_any_host\": true}'
  nvmf-tgt rpc -s /run/nvmf.sock framework_get_config name=nvmf
  nvmf-tgt rpc save_config > cfg.json      restart with nvmf-tgt --json cfg.json
  nvmf-tgt rpc load_config < cfg.json      into a target started with --wait-for-rpc";

const PERF_EXAMPLES: &str = "\
Examples:
  nvmf-tgt perf -r 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1' \\
      -q 32 -o 4096 -w randread -t 10 -m 0x2
                                           4 KiB random reads at queue depth 32 for 10 s, on CPU 1";

const SETUP_EXAMPLES: &str = "\
Examples:
  nvmf-tgt setup status                    hugepages per NUMA node; NVMe devices with driver,
                                           IOMMU group, block devices and what uses them
  sudo nvmf-tgt setup hugepages 1024 --node 0
                                           reserve 1024 2 MiB pages on NUMA node 0
  sudo nvmf-tgt setup bind 0000:04:00.0    give one SSD to vfio-pci (for the target)
  sudo nvmf-tgt setup bind                 ... every NVMe SSD that is not in use
  sudo nvmf-tgt setup reset                give every SSD on vfio-pci back to the nvme driver

bind needs an IOMMU (VT-d/AMD-Vi on, intel_iommu=on or amd_iommu=on, iommu=pt). See docs/setup.md.";

/// Runs the parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    if cli.print_default_config {
        if cli.command.is_some() {
            eprintln!(
                "nvmf-tgt: --print-default-config cannot be combined with a subcommand; \
                 run it on its own"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        return emit(DEFAULT_CONFIG_TOML);
    }
    match cli.command {
        Some(Command::Capabilities) => emit(&capabilities_text()),
        Some(Command::CheckConfig) => check_config(&cli),
        Some(Command::Setup { command }) => setup::run(&command),
        Some(Command::NvmePerf(args)) => match nvme_perf::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Some(Command::Perf(args)) => {
            if cli.config.is_some() {
                eprintln!(
                    "nvmf-tgt perf: -c names a target config file; pin the client with -m MASK \
                     (spdk_nvme_perf's -c), e.g. -m 0x2"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            match fabric_perf::run(&args, cli.reactor_mask.as_ref()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Some(Command::Rpc(args)) => rpc_call(&args),
        None => run_target(&cli),
    }
}

/// `nvmf-tgt rpc`: the parameters as the method takes them.
fn rpc_params(
    args: &[String],
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    use serde_json::{Map, Value};
    if let [one] = args {
        if one.trim_start().starts_with('{') {
            return match serde_json::from_str::<Value>(one) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                Ok(_) => Err("the parameters must be a JSON object".into()),
                Err(e) => Err(format!("the parameters are not valid JSON: {e}")),
            };
        }
    }
    if args.is_empty() {
        return Ok(None);
    }
    let mut out = Map::new();
    for arg in args {
        let (key, text) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg:?}: give KEY=VALUE, or one JSON object"))?;
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
        let mut parts = key.split('.').peekable();
        let mut at = &mut out;
        while let Some(part) = parts.next() {
            if part.is_empty() {
                return Err(format!("{key:?}: an empty name in a dotted key"));
            }
            if parts.peek().is_none() {
                at.insert(part.into(), value);
                break;
            }
            let next = at
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            at = next
                .as_object_mut()
                .ok_or_else(|| format!("{key:?}: {part} is already a value, not an object"))?;
        }
    }
    Ok(Some(out))
}

fn rpc_call(args: &RpcArgs) -> ExitCode {
    let params = match rpc_params(&args.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nvmf-tgt rpc: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let timeout = std::time::Duration::from_secs(args.timeout_s);
    // SPDK's client does these two on its side, from other methods; so does this one.
    let outcome = match args.method.as_str() {
        "save_config" | "load_config" if params.is_some() => {
            eprintln!(
                "nvmf-tgt rpc {}: takes no parameters (the config goes through stdout/stdin)",
                args.method
            );
            return ExitCode::from(EXIT_USAGE);
        }
        "save_config" => rpc::client::Client::connect(&args.socket, timeout)
            .and_then(|mut c| rpc::client::save_config(&mut c)),
        "load_config" => {
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut io::stdin(), &mut text) {
                return fail(&format!("cannot read the config from stdin: {e}"));
            }
            let saved: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => return fail(&format!("the config on stdin is not JSON: {e}")),
            };
            rpc::client::Client::connect(&args.socket, timeout)
                .and_then(|mut c| rpc::client::load_config(&mut c, &saved))
                .map(|n| serde_json::json!(n))
        }
        // Waits for the socket too: a script starts the target, then this, and polls nothing.
        "framework_wait_init" => rpc::client::connect_when_up(&args.socket, timeout)
            .and_then(|mut c| c.call("framework_wait_init", params)),
        method => rpc::client::call(&args.socket, method, params, timeout),
    };
    match outcome {
        Ok(result) => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&result).expect("a Value serializes")
        )),
        Err(rpc::client::ClientError::Rpc(e)) => {
            eprintln!(
                "nvmf-tgt rpc {}: error {}: {}",
                args.method, e.code, e.message
            );
            ExitCode::FAILURE
        }
        Err(e) => fail(&e),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmf-tgt: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("nvmf-tgt: error: {e}");
    ExitCode::FAILURE
}

/// The config from -c (or the default; or nothing for --json and --wait-for-rpc, which
/// configure over RPC), with -m applied.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut cfg = match (&cli.config, &cli.json) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(json)) => Config::parse("", &json.display().to_string())?,
        (None, None) if cli.wait_for_rpc => Config::parse("", "--wait-for-rpc")?,
        (None, None) => Config::builtin_default()?,
    };
    if let Some(mask) = &cli.reactor_mask {
        cfg.override_mask(mask.clone());
    }
    Ok(cfg)
}

fn check_config(cli: &Cli) -> ExitCode {
    logging::init(&cli.log);
    if cli.config.is_none() {
        eprintln!(
            "nvmf-tgt: check-config needs a file: nvmf-tgt check-config -c FILE \
             (nvmf-tgt --print-default-config prints one to start from)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let cfg = match load_config(cli).and_then(|cfg| cfg.check_mask_usable().map(|()| cfg)) {
        Ok(cfg) => cfg,
        Err(e) => return fail(&e),
    };
    let mut text = format!("config {} is valid\n{cfg}", cfg.path);
    for w in cfg.warnings() {
        text.push_str(&format!("warning: {w}\n"));
    }
    emit(&text)
}

fn run_target(cli: &Cli) -> ExitCode {
    let logging_flags = logging::init(&cli.log);
    let mut cfg = match load_config(cli) {
        Ok(cfg) => cfg,
        Err(e) => return fail(&e),
    };
    if cli.config.is_none() && cli.json.is_none() && !cli.wait_for_rpc {
        listen_on_rdma_by_default(&mut cfg);
    }
    let settings = app::RpcSettings {
        socket: cli.rpc_socket.clone(),
        log: logging_flags,
        json: cli.json.clone(),
        wait_for_rpc: cli.wait_for_rpc,
    };
    match app::run(&cfg, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The built-in default serves NVMe/TCP on 127.0.0.1:4420 (its config) and, in addition,
/// every local address that has an RDMA device (port 4420).
fn listen_on_rdma_by_default(cfg: &mut Config) {
    let addrs = transport_rdma::rdma_capable_addresses();
    if addrs.is_empty() {
        log::info!(
            "no -c given: running the built-in default (64 MiB malloc namespace) on NVMe/TCP \
             127.0.0.1:4420, this machine only (no local address has an RDMA device); connect \
             with `nvme connect -t tcp -a 127.0.0.1 -s 4420 -n nqn.2016-06.io.spdk:cnode1`, or \
             pass -c FILE (see --print-default-config)"
        );
        return;
    }
    let listeners: Vec<nvmf::ListenAddress> = addrs
        .iter()
        .map(|ip| nvmf::ListenAddress::new("rdma", &ip.to_string(), "4420"))
        .collect();
    log::info!(
        "no -c given: running the built-in default (64 MiB malloc namespace) on NVMe/TCP \
         127.0.0.1:4420 and on RDMA {}; pass -c FILE to run your own (see \
         --print-default-config)",
        listeners
            .iter()
            .map(|l| format!("{}:{}", l.traddr, l.trsvcid))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for sub in cfg.subsystems.iter_mut() {
        sub.listeners.extend(listeners.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nvmf-tgt").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_options() {
        let cli = parse(&[
            "-m",
            "0x3",
            "-c",
            "/etc/nvmf.toml",
            "-L",
            "nvmf",
            "-L",
            "reactor",
        ])
        .unwrap();
        assert_eq!(cli.reactor_mask.unwrap().cores(), [0, 1]);
        assert_eq!(cli.config.unwrap(), PathBuf::from("/etc/nvmf.toml"));
        assert_eq!(cli.log, [Component::Nvmf, Component::Reactor]);
        assert_eq!(cli.command, None);
        for (text, cores) in [
            ("3", vec![0, 1]),
            ("[0,1]", vec![0, 1]),
            ("0-1", vec![0, 1]),
            ("0x4", vec![2]),
        ] {
            let cli = parse(&["--reactor-mask", text]).unwrap();
            assert_eq!(cli.reactor_mask.unwrap().cores(), cores, "{text}");
        }
    }

    #[test]
    fn subcommands_take_the_global_options() {
        let cli = parse(&["check-config", "-c", "x.toml", "-m", "[0]"]).unwrap();
        assert_eq!(cli.command, Some(Command::CheckConfig));
        assert_eq!(cli.config.unwrap(), PathBuf::from("x.toml"));
        assert_eq!(
            parse(&["capabilities"]).unwrap().command,
            Some(Command::Capabilities)
        );
        assert!(
            parse(&["--print-default-config"])
                .unwrap()
                .print_default_config
        );
    }

    #[test]
    fn setup_subcommands_parse() {
        assert_eq!(
            parse(&["setup", "status"]).unwrap().command,
            Some(Command::Setup {
                command: SetupCommand::Status
            })
        );
        assert_eq!(
            parse(&["setup", "bind", "04:00.0", "0000:05:00.0", "--force"])
                .unwrap()
                .command,
            Some(Command::Setup {
                command: SetupCommand::Bind {
                    bdfs: vec!["0000:04:00.0".into(), "0000:05:00.0".into()],
                    force: true
                }
            })
        );
        assert_eq!(
            parse(&["setup", "hugepages", "8", "--node", "1", "--size", "1G"])
                .unwrap()
                .command,
            Some(Command::Setup {
                command: SetupCommand::Hugepages {
                    count: 8,
                    node: Some(1),
                    size: dma::PageSize::Huge1G
                }
            })
        );
        assert_eq!(
            parse(&["setup", "hugepages", "8"]).unwrap().command,
            Some(Command::Setup {
                command: SetupCommand::Hugepages {
                    count: 8,
                    node: None,
                    size: dma::PageSize::Huge2M
                }
            })
        );
        // --force only with named devices: binding "everything" by force would take the boot disk.
        assert!(parse(&["setup", "bind", "--force"]).is_err());
        assert!(parse(&["setup", "bind", "nvme0"]).is_err());
        assert!(parse(&["setup", "hugepages", "8", "--size", "4K"]).is_err());
        assert!(parse(&["setup"]).is_err());
    }

    #[test]
    fn bad_options_are_explained() {
        let e = parse(&["-L", "nvme"]).unwrap_err().to_string();
        assert!(
            e.contains("'nvme'") && e.contains("nvmf, rdma, tcp, reactor, bdev, dma, config"),
            "{e}"
        );
        let e = parse(&["-m", "0xZ"]).unwrap_err().to_string();
        assert!(e.contains("not a hex digit"), "{e}");
        assert!(parse(&["-m", ""]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn help_has_examples() {
        let help = Cli::command().render_long_help().to_string();
        for want in [
            "Examples:",
            "check-config",
            "--print-default-config",
            "-L, --logflag",
            "SIGTERM",
        ] {
            assert!(help.contains(want), "missing {want:?} in:\n{help}");
        }
    }

    #[test]
    fn override_applies_to_the_loaded_config() {
        let cli = parse(&["-m", "[0,1]"]).unwrap();
        let cfg = load_config(&cli).unwrap();
        assert_eq!(cfg.reactor_mask.cores(), [0, 1]);
        assert_eq!(cfg.mask_origin, crate::config::MaskOrigin::CommandLine);
        let cfg = load_config(&parse(&[]).unwrap()).unwrap();
        assert_eq!(cfg.reactor_mask.cores(), [0]);
    }
}
