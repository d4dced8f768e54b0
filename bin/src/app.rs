//! Turns a validated [`Config`] into a running target: bdevs, transports, the nvmf target and
//! its subsystems, then one reactor per CPU of the mask until SIGINT or SIGTERM.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::Bdev;
use nvme_pcie::bdev::{NvmeDevice, NvmeOptions};
use nvmf::{NamespaceConfig, SubsystemConfig, Target, Transport};
use reactor::ReactorConfig;
use rpc::{BdevOrigin, BdevRegistry};

use crate::capabilities::{self, CapabilityKind};
use crate::config::{format_mib, BdevDevice, BdevKind, BdevSpec, Config, ConfigError};
use crate::numa;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(io::Error),

    #[error(
        "cannot start the reactors on mask {mask}: {error}; check that those CPUs are online and \
         allowed for this process (taskset, cgroup cpusets), or pass another -m"
    )]
    Spawn { mask: String, error: io::Error },

    #[error("a reactor could not set up the NVMe-oF target (see the errors logged above); the target was shut down")]
    ReactorInit,

    #[error("a reactor thread panicked (see the log above); the target was shut down")]
    ReactorPanic,

    #[error("{0}; the target was shut down")]
    Rpc(#[from] rpc::server::BindError),

    #[error("cannot start the RPC server thread: {0}")]
    RpcThread(io::Error),

    #[error("--json {0}; the target was shut down")]
    JsonConfig(String),
}

/// Where the control plane listens, the log flags its methods change, and how the target is
/// configured over it at start.
pub struct RpcSettings {
    pub socket: PathBuf,
    pub log: Arc<dyn rpc::LogFlags>,
    /// `--json FILE`: calls replayed before the socket opens.
    pub json: Option<PathBuf>,
    /// `--wait-for-rpc`: start in SPDK's startup state.
    pub wait_for_rpc: bool,
}

/// How long start-up may take to set up every reactor's poll group.
const REACTOR_INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates every `[[bdev]]`, in file order (an nvme bdev gives one bdev per namespace), each
/// with its origin. Errors point at the bdev's line.
pub fn build_bdevs(cfg: &Config) -> Result<BdevRegistry, ConfigError> {
    build_bdevs_and_limit(cfg).map(|(bdevs, _)| bdevs)
}

/// Bdevs, and the largest transfer every NVMe controller among them takes in
/// one command (None without NVMe bdevs, or when none sets a limit).
type BdevsAndLimit = (BdevRegistry, Option<u64>);

fn build_bdevs_and_limit(cfg: &Config) -> Result<BdevsAndLimit, ConfigError> {
    let mut out = BdevRegistry::default();
    let mut limit: Option<u64> = None;
    for b in &cfg.bdevs {
        let at_bdev = |msg| cfg.error_at(b.line, msg);
        log::debug!(
            "creating {} bdev {} (line {})",
            b.kind.as_str(),
            b.name,
            b.line
        );
        match (&b.device, b.kind) {
            (
                &BdevDevice::Ram {
                    num_blocks,
                    block_size,
                    numa_node,
                },
                kind,
            ) => {
                let (made, origin) = if kind == BdevKind::Malloc {
                    (
                        bdev::create_malloc(&b.name, num_blocks, block_size, numa_node),
                        BdevOrigin::Malloc {
                            num_blocks,
                            block_size,
                            numa_node,
                        },
                    )
                } else {
                    (
                        bdev::create_null(&b.name, num_blocks, block_size),
                        BdevOrigin::Null {
                            num_blocks,
                            block_size,
                        },
                    )
                };
                let made = made.map_err(|e| at_bdev(format!("cannot create the bdev: {e}")))?;
                out.insert(made, origin).map_err(at_bdev)?;
            }
            (
                BdevDevice::Nvme {
                    traddr,
                    io_timeout_ms,
                },
                _,
            ) => {
                let device = open_nvme(cfg, b, traddr, *io_timeout_ms).map_err(at_bdev)?;
                if let Some(l) = device.max_transfer_bytes() {
                    limit = Some(limit.map_or(l, |m| m.min(l)));
                }
                for ns in device.namespaces() {
                    let origin = BdevOrigin::Nvme {
                        controller: b.name.clone(),
                        traddr: traddr.clone(),
                    };
                    out.insert(ns.clone() as Arc<dyn Bdev>, origin)
                        .map_err(at_bdev)?;
                }
            }
        }
    }
    Ok((out, limit))
}

/// Opens an NVMe controller with an I/O queue pair for every reactor (its namespaces share it),
/// and checks it can serve what the config asks of it.
fn open_nvme(
    cfg: &Config,
    spec: &BdevSpec,
    traddr: &str,
    io_timeout_ms: u64,
) -> Result<NvmeDevice, String> {
    let exported: Vec<(u32, &str)> = cfg
        .subsystems
        .iter()
        .flat_map(|s| &s.namespaces)
        .filter_map(|ns| Some((spec.provides(&ns.bdev)?, ns.bdev.as_str())))
        .collect();
    // One queue pair per reactor, shared by every namespace of the controller there.
    let reactors = cfg.reactor_mask.len();
    let pairs_needed = reactors;
    let options = NvmeOptions {
        io_queue_pairs: u16::try_from(pairs_needed).unwrap_or(u16::MAX),
        io_timeout_ms,
        max_io_bytes: u64::from(cfg.transport.options.max_io_bytes),
    };
    let device = NvmeDevice::open(&spec.name, traddr, options)
        .map_err(|e| format!("cannot open NVMe controller {traddr}: {e}"))?;
    let nsids: Vec<String> = device
        .namespaces()
        .iter()
        .map(|ns| ns.nsid().to_string())
        .collect();
    let active = if nsids.is_empty() {
        "none".to_string()
    } else {
        nsids.join(", ")
    };
    log::info!(
        "NVMe controller {traddr}: {} (serial {}), namespace(s) {active}, {} I/O queue pair(s)",
        device.model(),
        device.serial(),
        device.io_queue_pairs_granted()
    );
    for (nsid, name) in &exported {
        if !device.namespaces().iter().any(|ns| ns.nsid() == *nsid) {
            return Err(format!(
                "bdev {name:?} names namespace {nsid} of {traddr}, which has no such active \
                 namespace (active: {active}); export one of those"
            ));
        }
    }
    let max_io_bytes = u64::from(cfg.transport.options.max_io_bytes);
    let too_small = device.max_transfer_bytes().filter(|&l| l < max_io_bytes);
    if let Some(limit) = too_small.filter(|_| cfg.transport.max_io_size_set) {
        return Err(format!(
            "[transport] max_io_size {max_io_bytes} is larger than NVMe controller {traddr} \
             takes in one command ({limit} bytes); set max_io_size = {limit}"
        ));
    }
    let granted = usize::from(device.io_queue_pairs_granted());
    if granted < pairs_needed {
        return Err(format!(
            "NVMe controller {traddr} grants {granted} I/O queue pair(s), and each of the \
             {reactors} reactor(s) needs one; use at most {granted} reactor(s) (-m)"
        ));
    }
    if let Some(w) = numa::device_warning(
        &format!("NVMe controller {traddr}"),
        nvme_pcie::vfio::numa_node_of(traddr),
        &cfg.reactor_mask,
    ) {
        log::warn!("{w}");
    }
    Ok(device)
}

/// One transport by its capability name; every built transport needs an arm here.
/// `numa_node`: where the shared data buffers go (see [`reactors_numa_node`]).
pub use rpc::transports::build_transport;

/// The NUMA node of every reactor, when they share one: the NIC and the SSDs DMA into the
/// shared data buffers there, and the reactors touch them. None when the mask spans nodes
/// (or the machine does not say).
pub fn reactors_numa_node(mask: &reactor::ReactorMask) -> Option<u32> {
    numa::common_node(
        mask.cores()
            .iter()
            .map(|&cpu| reactor::numa_node_of_cpu(cpu)),
    )
}

/// The transports some listener uses, in capability-table order (one of each).
fn build_transports(cfg: &Config) -> Result<Vec<Arc<dyn Transport>>, ConfigError> {
    let used = |name: &str| {
        cfg.subsystems
            .iter()
            .flat_map(|s| &s.listeners)
            .any(|l| l.trtype == name)
    };
    capabilities::built_names(CapabilityKind::Transport)
        .into_iter()
        .filter(|name| used(name))
        .map(|name| {
            log::debug!(
                "creating the {name} transport ({} shared buffer units of {} bytes)",
                cfg.transport.num_shared_buffers,
                cfg.transport.io_unit_bytes
            );
            build_transport(name, &cfg.transport, reactors_numa_node(&cfg.reactor_mask)).map_err(
                |e| ConfigError::Whole {
                    path: cfg.path.clone(),
                    msg: format!(
                        "cannot create the {name} transport: {e}; lower [transport] \
                     num_shared_buffers or max_io_size if memory is short"
                    ),
                },
            )
        })
        .collect()
}

/// The config with `max_io_size` lowered to what every NVMe controller takes
/// in one command, when the file did not set it and the default is larger
/// (None when nothing changes). Hosts then split larger transfers.
fn fit_max_io_size(cfg: &Config, device_limit: Option<u64>) -> Option<Config> {
    let max = u64::from(cfg.transport.options.max_io_bytes);
    let limit = device_limit.filter(|&l| l < max && !cfg.transport.max_io_size_set)?;
    // MDTS is a power of two of pages: the largest one within the limit.
    let fitted = 1u64 << (63 - limit.max(4096).leading_zeros());
    let mut c = cfg.clone();
    c.transport.options.max_io_bytes = fitted as u32;
    c.transport.io_unit_bytes = c.transport.io_unit_bytes.min(fitted as u32);
    log::info!(
        "[transport] max_io_size lowered from the default {max} to {fitted} bytes: the NVMe \
         controller takes at most {limit} bytes in one command"
    );
    Some(c)
}

/// Builds the target with all subsystems, listeners and namespaces, without starting reactors;
/// returns it with its bdevs.
pub fn build_target(cfg: &Config) -> Result<(Arc<Target>, BdevRegistry), ConfigError> {
    let (bdevs, limit) = build_bdevs_and_limit(cfg)?;
    let lowered;
    let cfg = match fit_max_io_size(cfg, limit) {
        Some(c) => {
            lowered = c;
            &lowered
        }
        None => cfg,
    };
    let transports = build_transports(cfg)?;
    let target =
        Target::new(cfg.transport.options, transports).map_err(|e| ConfigError::Whole {
            path: cfg.path.clone(),
            msg: format!("[transport]: {e}"),
        })?;
    for s in &cfg.subsystems {
        let at_subsystem = |msg| cfg.error_at(s.line, msg);
        let mut namespaces = Vec::with_capacity(s.namespaces.len());
        for ns in &s.namespaces {
            // Validation guarantees the name exists; stay an error rather than a panic anyway.
            let bdev =
                bdevs
                    .get(&ns.bdev)
                    .map(|e| e.bdev.clone())
                    .ok_or_else(|| ConfigError::At {
                        path: cfg.path.clone(),
                        line: ns.line,
                        key: Some("bdev".into()),
                        msg: format!("no bdev named {:?} was created", ns.bdev),
                    })?;
            namespaces.push(NamespaceConfig {
                nsid: ns.nsid,
                bdev,
                nguid: ns.nguid,
                uuid: ns.uuid,
            });
        }
        let sub = SubsystemConfig {
            nqn: s.nqn.clone(),
            serial: s.serial.clone(),
            model: s.model.clone(),
            allow_any_host: s.allow_any_host,
            hosts: s.hosts.clone(),
            listeners: s.listeners.clone(),
            namespaces,
            max_namespaces: s.max_namespaces,
        };
        log::debug!("adding subsystem {} (line {})", s.nqn, s.line);
        target
            .add_subsystem(&sub)
            .map_err(|e| at_subsystem(format!("cannot add the subsystem: {e}")))?;
    }
    Ok((target, bdevs))
}

/// The start-up summary: what hosts will find, read back from the target itself.
pub fn log_summary(cfg: &Config, target: &Target) {
    log::info!(
        "config {}: {} bdev(s), {} subsystem(s), reactor mask {} ({} reactor(s))",
        cfg.path,
        cfg.bdevs.len(),
        cfg.subsystems.len(),
        cfg.reactor_mask,
        cfg.reactor_mask.len()
    );
    for spec in &cfg.subsystems {
        let Some(sub) = target.find_subsystem(&spec.nqn) else {
            continue;
        };
        let access = if spec.allow_any_host {
            "any host".to_string()
        } else {
            format!("hosts: {}", spec.hosts.join(", "))
        };
        log::info!(
            "subsystem {} (serial {}, model {:?}), {access}",
            sub.nqn,
            sub.serial,
            sub.model
        );
        for ns in sub.namespaces() {
            let info = ns.bdev.info();
            log::info!(
                "  namespace {}: {} ({}), {}, block size {}",
                ns.nsid,
                info.name,
                info.product_name,
                format_mib(info.size_bytes()),
                info.block_size
            );
        }
        for l in sub.listeners() {
            log::info!("  listener {l}");
        }
    }
    for w in cfg.startup_warnings() {
        log::warn!("{w}");
    }
    let rdma_listener = cfg
        .subsystems
        .iter()
        .flat_map(|s| &s.listeners)
        .any(|l| l.trtype == "rdma");
    if rdma_listener {
        for w in numa::rdma_device_warnings(&cfg.reactor_mask) {
            log::warn!("{w}");
        }
    }
}

/// Runs the target until SIGINT/SIGTERM (or a fatal reactor error) and it has drained.
pub fn run(cfg: &Config, rpc_settings: RpcSettings) -> Result<(), AppError> {
    cfg.check_mask_usable()?;
    // Before the (possibly slow) bdev allocation, so a signal during start-up still ends in a
    // clean shutdown instead of killing the process.
    reactor::install_shutdown_signal_handlers().map_err(AppError::Signals)?;
    let (target, bdevs) = build_target(cfg)?;
    log_summary(cfg, &target);

    let init_failed = Arc::new(AtomicBool::new(false));
    let initialized = Arc::new(AtomicUsize::new(0));
    let reactor_config = ReactorConfig {
        idle_sleep_us: cfg.idle_sleep_us,
        interrupt_after_idle_us: cfg.interrupt_after_idle_us,
        ..ReactorConfig::default()
    };
    let running = {
        let target = target.clone();
        let init_failed = init_failed.clone();
        let initialized = initialized.clone();
        reactor::spawn_reactors(&cfg.reactor_mask, &reactor_config, move |ctx| {
            if let Err(e) = target.init_reactor(ctx) {
                log::error!(
                    "reactor {}: cannot set up the NVMe-oF poll group: {e}; shutting down",
                    ctx.id()
                );
                init_failed.store(true, Ordering::SeqCst);
                ctx.handle().request_shutdown();
            }
            initialized.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|error| AppError::Spawn {
            mask: cfg.reactor_mask.to_string(),
            error,
        })?
    };
    reactor::forward_signals_to(running.handle().clone());
    let handle = running.handle().clone();
    // The RPC socket opens only once every poll group serves: a client that connects may
    // rely on the configuration being live.
    let deadline = Instant::now() + REACTOR_INIT_TIMEOUT;
    while initialized.load(Ordering::SeqCst) < cfg.reactor_mask.len()
        && !handle.is_shutting_down()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let server = if handle.is_shutting_down() {
        None
    } else {
        match start_rpc(cfg, &target, bdevs, &handle, rpc_settings) {
            Ok(server) => Some(server),
            Err(e) => {
                handle.request_shutdown();
                let _ = running.join();
                return Err(e);
            }
        }
    };
    log::info!(
        "nvmf-tgt is running on {} reactor(s); stop it with SIGINT (Ctrl-C) or SIGTERM",
        cfg.reactor_mask.len()
    );
    if server.is_some() {
        // Serving, and the RPC socket takes connections: what Type=notify waits for.
        crate::service::notify(&format!(
            "READY=1\nSTATUS=serving on {} reactor(s)",
            cfg.reactor_mask.len()
        ));
    }

    let joined = running.join();
    crate::service::notify("STOPPING=1");
    if let Some(server) = server {
        // It stops within its poll period once the reactors shut down.
        if server.join().is_err() {
            log::error!("the RPC server thread panicked");
        }
    }
    if joined.is_err() {
        return Err(AppError::ReactorPanic);
    }
    if init_failed.load(Ordering::SeqCst) {
        return Err(AppError::ReactorInit);
    }
    log::info!("nvmf-tgt stopped cleanly");
    Ok(())
}

fn start_rpc(
    cfg: &Config,
    target: &Arc<Target>,
    bdevs: BdevRegistry,
    handle: &reactor::ReactorHandle,
    settings: RpcSettings,
) -> Result<std::thread::JoinHandle<()>, AppError> {
    let mut control = rpc::Control::new(target.clone(), bdevs, handle.clone(), settings.log);
    control.interrupt_mode = cfg.interrupt_after_idle_us.is_some();
    control.transport_defaults = cfg.transport;
    control.numa_node = reactors_numa_node(&cfg.reactor_mask);
    if let Some(path) = &settings.json {
        let calls = rpc::saved::read(path).map_err(AppError::JsonConfig)?;
        let n = rpc::saved::replay(&mut control, calls)
            .map_err(|e| AppError::JsonConfig(format!("{}: {e}", path.display())))?;
        log::info!("config {}: {n} call(s) applied", path.display());
    }
    if settings.wait_for_rpc {
        control.state = rpc::RpcState::Startup;
        log::info!("--wait-for-rpc: configure the target over RPC, then call framework_start_init");
    }
    let socket = rpc::server::RpcSocket::bind(&settings.socket)?;
    rpc::server::spawn(socket, control).map_err(AppError::RpcThread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TransportConfig, DEFAULT_CONFIG_NAME};

    #[test]
    fn an_unset_max_io_size_is_lowered_to_fit_the_nvme_controllers() {
        let mut cfg = Config::builtin_default().unwrap();
        cfg.transport.max_io_size_set = false;
        assert_eq!(cfg.transport.options.max_io_bytes, 1 << 20);
        let fitted = |cfg: &Config, limit| {
            fit_max_io_size(cfg, limit)
                .map(|c| (c.transport.options.max_io_bytes, c.transport.io_unit_bytes))
        };
        assert_eq!(fitted(&cfg, Some(512 << 10)), Some((512 << 10, 8192)));
        assert_eq!(
            fitted(&cfg, Some(600_000)),
            Some((512 << 10, 8192)),
            "a power of two"
        );
        assert_eq!(
            fitted(&cfg, Some(4096)),
            Some((4096, 4096)),
            "units no larger"
        );
        assert_eq!(fitted(&cfg, Some(2 << 20)), None, "the device takes more");
        assert_eq!(fitted(&cfg, None), None, "no NVMe bdev");
        cfg.transport.max_io_size_set = true;
        assert_eq!(
            fitted(&cfg, Some(512 << 10)),
            None,
            "set in the file: open_nvme refuses it"
        );
    }

    #[test]
    fn default_config_builds_a_target() {
        let cfg = Config::builtin_default().unwrap();
        let (target, bdevs) = build_target(&cfg).unwrap();
        assert_eq!(bdevs.get("Malloc0").unwrap().origin.module(), "malloc");
        assert_eq!(target.transports().len(), 1);
        assert_eq!(target.transports()[0].name(), "tcp");
        let sub = target.find_subsystem("nqn.2016-06.io.spdk:cnode1").unwrap();
        assert_eq!(sub.serial, "SPDK00000000000001");
        assert_eq!(sub.model, "Rust NVMe-oF target");
        let ns = sub.namespaces();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].nsid, 1);
        assert_eq!(ns[0].bdev.info().name, "Malloc0");
        assert_eq!(ns[0].bdev.info().size_bytes(), 64 << 20);
        assert!(sub
            .host_allowed("nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"));
        assert_eq!(
            target.listeners(),
            [nvmf::ListenAddress::new("tcp", "127.0.0.1", "4420")]
        );
        // Logging the summary must not fail on a real target.
        log_summary(&cfg, &target);
    }

    #[test]
    fn every_built_transport_can_be_created() {
        for name in capabilities::built_names(CapabilityKind::Transport) {
            match build_transport(name, &TransportConfig::default(), None) {
                Ok(t) => assert_eq!(t.name(), name),
                // Machines without RDMA (this CI) cannot open rdma_cm; the
                // error must say so. The VM test bed runs the real thing.
                Err(e) if name == "rdma" => assert!(e.contains("rdma_cm"), "{e}"),
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert!(build_transport("carrier-pigeon", &TransportConfig::default(), None).is_err());
    }

    #[test]
    fn every_built_bdev_kind_is_known_to_the_config() {
        for name in capabilities::built_names(CapabilityKind::Bdev) {
            let kind =
                BdevKind::from_name(name).unwrap_or_else(|| panic!("{name} has no BdevKind"));
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn config_without_listeners_builds_no_transport() {
        let text = "[[bdev]]\nname = \"N\"\nkind = \"null\"\nnum_blocks = 8\nblock_size = 4096\n\
                    [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:x\"\nhosts = [\"nqn.2016-06.io.spdk:h\"]\n\
                    [[subsystem.namespace]]\nbdev = \"N\"\nnsid = 7\n";
        let cfg = Config::parse(text, "t.toml").unwrap();
        let (target, _) = build_target(&cfg).unwrap();
        assert!(target.transports().is_empty());
        let sub = target.find_subsystem("nqn.2016-06.io.spdk:x").unwrap();
        assert_eq!(sub.namespaces()[0].nsid, 7);
        assert!(sub.host_allowed("nqn.2016-06.io.spdk:h"));
        assert!(!sub.host_allowed("nqn.2016-06.io.spdk:other"));
    }

    #[test]
    fn bdev_creation_errors_point_at_the_bdev() {
        // 2^62 bytes passes validation (no u64 overflow) but cannot be allocated.
        let text = "\n[[bdev]]\nname = \"Huge\"\nkind = \"malloc\"\nnum_blocks = 1125899906842624\nblock_size = 4096\n";
        let cfg = Config::parse(text, "big.toml").unwrap();
        let e = build_bdevs(&cfg).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(
            e.to_string()
                .starts_with("config big.toml line 3: cannot create the bdev: bdev Huge"),
            "{e}"
        );
        assert_ne!(cfg.path, DEFAULT_CONFIG_NAME);
    }
}
