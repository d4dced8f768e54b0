//! Logging set-up: `info` by default, `debug` for the components named with `-L`, and
//! RUST_LOG (when set) as the base that `-L` refines.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

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

/// The base filter spec: RUST_LOG if set (and not blank), else "info".
fn base_filter(rust_log: Option<&str>) -> &str {
    match rust_log {
        Some(spec) if !spec.trim().is_empty() => spec,
        _ => "info",
    }
}

/// Which components log at debug level; changed at run time by `log_set_flag`.
pub struct Flags {
    /// Bit i: `Component::value_variants()[i]` is on.
    debug: AtomicU32,
    /// The most verbose level the base filter lets through.
    base_max: LevelFilter,
}

impl Flags {
    fn components() -> &'static [Component] {
        Component::value_variants()
    }

    fn name(c: Component) -> String {
        c.to_possible_value()
            .expect("every component has a name")
            .get_name()
            .to_string()
    }

    /// The component a log target (a module path) belongs to, if it is on.
    fn debug_for(&self, target: &str) -> bool {
        let bits = self.debug.load(Ordering::Relaxed);
        Self::components().iter().enumerate().any(|(i, c)| {
            let m = c.module();
            bits & (1 << i) != 0
                && target.starts_with(m)
                && (target.len() == m.len() || target[m.len()..].starts_with("::"))
        })
    }

    /// The global max level: the base's, or debug while any component is on.
    fn update_max_level(&self) {
        let any = self.debug.load(Ordering::Relaxed) != 0;
        log::set_max_level(if any {
            self.base_max.max(LevelFilter::Debug)
        } else {
            self.base_max
        });
    }
}

impl rpc::LogFlags for Flags {
    fn flags(&self) -> Vec<(String, bool)> {
        let bits = self.debug.load(Ordering::Relaxed);
        let mut out: Vec<(String, bool)> = Self::components()
            .iter()
            .enumerate()
            .map(|(i, &c)| (Self::name(c), bits & (1 << i) != 0))
            .collect();
        out.sort();
        out
    }

    fn set(&self, name: &str, on: bool) -> usize {
        let matched = self.set_bits(name, on);
        self.update_max_level();
        matched
    }
}

impl Flags {
    fn set_bits(&self, name: &str, on: bool) -> usize {
        // SPDK's names for the same components.
        let name = match name.to_ascii_lowercase().as_str() {
            "nvmf_tcp" => "tcp".to_string(),
            "nvmf_rdma" | "rdma_utils" => "rdma".to_string(),
            "thread" => "reactor".to_string(),
            other => other.to_string(),
        };
        let mut matched = 0;
        for (i, &c) in Self::components().iter().enumerate() {
            if name == "all" || Self::name(c) == name {
                if on {
                    self.debug.fetch_or(1 << i, Ordering::Relaxed);
                } else {
                    self.debug.fetch_and(!(1 << i), Ordering::Relaxed);
                }
                matched += 1;
            }
        }
        matched
    }
}

/// The logger: the base filter, plus debug records of the components whose flag is on.
struct FlagLogger {
    base: env_filter::Filter,
    /// Writes whatever it is given (its own filter lets everything through).
    out: env_logger::Logger,
    flags: Arc<Flags>,
}

impl log::Log for FlagLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.base.enabled(m) || (m.level() <= log::Level::Debug && self.flags.debug_for(m.target()))
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.out.log(r);
        }
    }

    fn flush(&self) {
        self.out.flush();
    }
}

fn logger(rust_log: Option<&str>, components: &[Component]) -> FlagLogger {
    let base = env_filter::Builder::new()
        .parse(base_filter(rust_log))
        .build();
    let flags = Arc::new(Flags {
        debug: AtomicU32::new(0),
        base_max: base.filter(),
    });
    for &c in components {
        flags.set_bits(&Flags::name(c), true);
    }
    let out = env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        .build();
    FlagLogger { base, out, flags }
}

/// Installs the logger (to stderr) with `-L`'s components on; returns the flags that
/// `log_set_flag` changes. Calling it twice keeps the first logger (and gives flags that
/// change nothing).
pub fn init(components: &[Component]) -> Arc<Flags> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let l = logger(rust_log.as_deref(), components);
    let flags = l.flags.clone();
    if log::set_boxed_logger(Box::new(l)).is_err() {
        log::debug!("a logger is already installed; keeping it");
    }
    flags.update_max_level();
    flags
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

    fn enabled(l: &FlagLogger, target: &str, level: log::Level) -> bool {
        log::Log::enabled(
            l,
            &log::Metadata::builder().target(target).level(level).build(),
        )
    }

    #[test]
    fn levels() {
        let l = logger(None, &[Component::Bdev]);
        assert!(enabled(&l, "nvmf::target", log::Level::Info));
        assert!(!enabled(&l, "nvmf::target", log::Level::Debug));
        assert!(enabled(&l, "bdev::malloc", log::Level::Debug));
        assert!(!enabled(&l, "bdev::malloc", log::Level::Trace));

        let l = logger(Some("warn,reactor=trace"), &[Component::Nvmf]);
        assert!(
            !enabled(&l, "bdev", log::Level::Info),
            "RUST_LOG sets the base level"
        );
        assert!(enabled(&l, "reactor", log::Level::Trace));
        assert!(
            enabled(&l, "nvmf", log::Level::Debug),
            "-L adds to RUST_LOG"
        );
        assert!(
            !enabled(&l, "nvmf_tgt::app", log::Level::Debug),
            "nvmf_tgt is the config component, not nvmf"
        );
        assert_eq!(base_filter(Some("  ")), "info");
    }

    #[test]
    fn flags_change_at_run_time_by_our_names_and_spdks() {
        use rpc::LogFlags;
        let l = logger(None, &[]);
        assert!(!enabled(&l, "transport_tcp::conn", log::Level::Debug));
        assert_eq!(l.flags.set_bits("nvmf_tcp", true), 1);
        assert!(enabled(&l, "transport_tcp::conn", log::Level::Debug));
        assert_eq!(
            l.flags.set_bits("ALL", false),
            Component::value_variants().len()
        );
        assert!(!enabled(&l, "transport_tcp::conn", log::Level::Debug));
        assert_eq!(l.flags.set_bits("nope", true), 0);
        let names: Vec<String> = l.flags.flags().into_iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"tcp".to_string()));
    }
}
