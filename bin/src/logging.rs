//! Logging set-up: `info` by default, `debug` for the components named with `-L`, and
//! RUST_LOG (when set) as the base that `-L` refines.

use clap::ValueEnum;
use log::LevelFilter;

/// A component whose debug logging `-L` turns on (SPDK's log flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// NVMe-oF target core: connects, controllers, admin and I/O commands
    Nvmf,
    /// RDMA transport
    Rdma,
    /// NVMe/TCP transport
    Tcp,
    /// Reactors, pollers and messages
    Reactor,
    /// Block devices
    Bdev,
    /// DMA memory and buffer pools
    Dma,
    /// Config parsing and start-up of nvmf-tgt itself
    Config,
}

impl Component {
    /// The env_logger module filter: the crate that logs for this component.
    pub fn module(self) -> &'static str {
        match self {
            Component::Nvmf => "nvmf",
            Component::Rdma => "transport_rdma",
            Component::Tcp => "transport_tcp",
            Component::Reactor => "reactor",
            Component::Bdev => "bdev",
            Component::Dma => "dma",
            Component::Config => "nvmf_tgt",
        }
    }
}

/// The filter spec env_logger is given: RUST_LOG if set (and not blank), else "info".
fn base_filter(rust_log: Option<&str>) -> &str {
    match rust_log {
        Some(spec) if !spec.trim().is_empty() => spec,
        _ => "info",
    }
}

fn builder(rust_log: Option<&str>, components: &[Component]) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(base_filter(rust_log));
    // Added after RUST_LOG, so an explicit -L wins over it for that module.
    for c in components {
        builder.filter_module(c.module(), LevelFilter::Debug);
    }
    builder
}

/// Installs the logger (to stderr). Calling it twice keeps the first logger.
pub fn init(components: &[Component]) {
    let rust_log = std::env::var("RUST_LOG").ok();
    if builder(rust_log.as_deref(), components).try_init().is_err() {
        log::debug!("a logger is already installed; keeping it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_map_to_modules() {
        let names: Vec<(String, &str)> = Component::value_variants()
            .iter()
            .map(|c| {
                (
                    c.to_possible_value().unwrap().get_name().to_string(),
                    c.module(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("nvmf".to_string(), "nvmf"),
                ("rdma".to_string(), "transport_rdma"),
                ("tcp".to_string(), "transport_tcp"),
                ("reactor".to_string(), "reactor"),
                ("bdev".to_string(), "bdev"),
                ("dma".to_string(), "dma"),
                ("config".to_string(), "nvmf_tgt"),
            ]
        );
    }

    #[test]
    fn levels() {
        let logger = builder(None, &[Component::Bdev]).build();
        let enabled = |target: &str, level: log::Level| {
            log::Log::enabled(
                &logger,
                &log::Metadata::builder().target(target).level(level).build(),
            )
        };
        assert!(enabled("nvmf::target", log::Level::Info));
        assert!(!enabled("nvmf::target", log::Level::Debug));
        assert!(enabled("bdev::malloc", log::Level::Debug));

        let logger = builder(Some("warn,reactor=trace"), &[Component::Nvmf]).build();
        let enabled = |target: &str, level: log::Level| {
            log::Log::enabled(
                &logger,
                &log::Metadata::builder().target(target).level(level).build(),
            )
        };
        assert!(
            !enabled("bdev", log::Level::Info),
            "RUST_LOG sets the base level"
        );
        assert!(enabled("reactor", log::Level::Trace));
        assert!(enabled("nvmf", log::Level::Debug), "-L adds to RUST_LOG");
        assert_eq!(base_filter(Some("  ")), "info");
    }
}
