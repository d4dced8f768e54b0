//! The configuration file: TOML whose sections mirror SPDK's nvmf.conf (`[global]`,
//! `[transport]`, `[[bdev]]`, `[[subsystem]]` with `[[subsystem.listener]]` and
//! `[[subsystem.namespace]]`).
//!
//! Parsing has three steps. toml_edit parses the text into a document that keeps the span of
//! every key and value (`syntax.rs` words the errors of a text that is not TOML). `read.rs`
//! takes each table's keys into `Raw*` structs, refusing unknown keys, missing ones and values
//! of the wrong type. `validate.rs` and `validate_subsystem.rs` check the values and produce
//! plain ones ([`Config`]). Every error names the file, the line and, when one is at fault,
//! the key ([`ConfigError`]).

mod default;
mod model;
mod raw;
mod read;
mod syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_read;
mod tree;
mod validate;
mod validate_subsystem;

use std::fmt;
use std::path::Path;

use reactor::{MaskError, ReactorMask};

pub use default::*;
pub use model::*;
use raw::*;
use syntax::*;
use validate::*;
pub use validate_subsystem::{check_traddr, check_trsvcid, parse_nguid, parse_uuid};

/// A configuration problem: which file, where in it, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config {path}: cannot read it: {error}; check the path given with -c \
         (or omit -c to run the built-in default)"
    )]
    Read { path: String, error: std::io::Error },

    #[error("config {path} line {line}: {}{msg}", key_prefix(.key.as_deref()))]
    At {
        path: String,
        line: usize,
        key: Option<String>,
        msg: String,
    },

    #[error("config {path}: {msg}")]
    Whole { path: String, msg: String },

    /// A command-line option that overrides the file is wrong.
    #[error("{option}: {msg}")]
    CommandLine { option: &'static str, msg: String },
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key \"{k}\": ")).unwrap_or_default()
}

impl ConfigError {
    /// The line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::At { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
            path: shown.clone(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bad = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line_start = bytes[..bad]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            ConfigError::At {
                path: shown.clone(),
                line: line_of_bytes(bytes, bad),
                key: None,
                msg: format!(
                    "byte {} of the line is not UTF-8; a config is a UTF-8 TOML text file \
                     (is this the right file?)",
                    bad - line_start + 1
                ),
            }
        })?;
        Config::parse(&text, &shown)
    }

    /// The built-in default, through the same parser as a file.
    pub fn builtin_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG_TOML, DEFAULT_CONFIG_NAME)
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let doc = Doc { text, path };
        let tree = toml_edit::ImDocument::parse(text).map_err(|e| doc.syntax_error(&e))?;
        let raw = doc.read(tree.as_table())?;
        let config = doc.validate(raw)?;
        log::debug!(
            "config {path}: {} bdev(s), {} subsystem(s), reactor mask {}",
            config.bdevs.len(),
            config.subsystems.len(),
            config.reactor_mask
        );
        Ok(config)
    }

    /// `-m/--reactor-mask`: replaces the file's mask.
    pub fn override_mask(&mut self, mask: ReactorMask) {
        self.reactor_mask = mask;
        self.mask_origin = MaskOrigin::CommandLine;
    }

    /// Checks the mask against this machine's online CPUs and this process' affinity; the
    /// error blames wherever the mask came from.
    pub fn check_mask_usable(&self) -> Result<(), ConfigError> {
        self.reactor_mask
            .validate()
            .map_err(|e| self.mask_error(&e))
    }

    fn mask_error(&self, e: &MaskError) -> ConfigError {
        let fix = "pick CPUs from the valid ones";
        match self.mask_origin {
            MaskOrigin::File { line } => ConfigError::At {
                path: self.path.clone(),
                line,
                key: Some("reactor_mask".into()),
                msg: format!("{e}; {fix}, or override with -m"),
            },
            MaskOrigin::CommandLine => ConfigError::CommandLine {
                option: "-m/--reactor-mask",
                msg: format!("{e}; {fix}"),
            },
            MaskOrigin::Default => ConfigError::Whole {
                path: self.path.clone(),
                msg: format!(
                    "the default reactor mask {DEFAULT_REACTOR_MASK} cannot run here: {e}; \
                     set [global] reactor_mask or pass -m"
                ),
            },
        }
    }

    /// An error found after validation (creating a bdev or a subsystem), at `line`.
    pub fn error_at(&self, line: usize, msg: String) -> ConfigError {
        ConfigError::At {
            path: self.path.clone(),
            line,
            key: None,
            msg,
        }
    }

    /// The spec a namespace's bdev name comes from (see [`BdevSpec::provides`]).
    pub fn find_bdev(&self, name: &str) -> Option<&BdevSpec> {
        self.bdevs.iter().find(|b| b.provides(name).is_some())
    }

    /// Advice an operator should read before running this config (`check-config` prints it).
    pub fn warnings(&self) -> Vec<String> {
        self.collect_warnings(true)
    }

    /// [`warnings`](Self::warnings) less the one the nvmf target logs itself when a subsystem
    /// is added (a subsystem that allows no host), so start-up does not say it twice.
    pub fn startup_warnings(&self) -> Vec<String> {
        self.collect_warnings(false)
    }

    fn collect_warnings(&self, include_no_host: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.subsystems.is_empty() {
            out.push(
                "no [[subsystem]] is configured: hosts will find only the discovery subsystem"
                    .to_string(),
            );
        }
        for s in &self.subsystems {
            if s.allow_any_host {
                let exposed: Vec<String> = s
                    .listeners
                    .iter()
                    .filter(|l| reachable_from_other_machines(l))
                    .map(|l| format!("{} {}:{}", l.trtype, l.traddr, l.trsvcid))
                    .collect();
                let reach = if exposed.is_empty() {
                    "only from this machine (its listeners are local)".to_string()
                } else {
                    format!("from other machines through {}", exposed.join(", "))
                };
                out.push(format!(
                    "subsystem {} ({} line {}) allows ANY host to connect, {reach}; to restrict \
                     it set allow_any_host = false and list the allowed host NQNs in hosts = [...]",
                    s.nqn, self.path, s.line
                ));
                if !s.hosts.is_empty() {
                    out.push(format!(
                        "subsystem {} ({} line {}): hosts has no effect while allow_any_host = true",
                        s.nqn, self.path, s.line
                    ));
                }
            } else if s.hosts.is_empty() && include_no_host {
                out.push(format!(
                    "subsystem {} ({} line {}) allows no host: list host NQNs in hosts = [...] \
                     or set allow_any_host = true",
                    s.nqn, self.path, s.line
                ));
            }
            if s.listeners.is_empty() {
                out.push(format!(
                    "subsystem {} ({} line {}) has no [[subsystem.listener]]: no host can reach it",
                    s.nqn, self.path, s.line
                ));
            }
        }
        out
    }
}

/// A human-readable summary (what `check-config` prints).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.transport.options;
        writeln!(
            f,
            "reactor mask {} ({} reactor(s) on CPU(s) {}), {}",
            self.reactor_mask,
            self.reactor_mask.len(),
            reactor::format_cpu_list(self.reactor_mask.cores()),
            match (self.interrupt_after_idle_us, self.idle_sleep_us) {
                (Some(after), _) => format!("interrupt mode: reactors sleep after {after} us idle"),
                (None, 0) => "idle reactors spin".to_string(),
                (None, us) => format!("idle reactors sleep {us} us"),
            }
        )?;
        writeln!(
            f,
            "transport: max_queue_depth {}, max_admin_queue_depth {}, max_queues_per_controller {}, \
             in_capsule_data_size {}, max_io_size {}, io_unit_size {}, acceptor_poll_period_us {}, \
             num_shared_buffers {} ({}), {}",
            o.max_queue_depth,
            o.max_admin_queue_depth,
            o.max_queues_per_controller,
            o.in_capsule_data_bytes,
            o.max_io_bytes,
            self.transport.io_unit_bytes,
            o.acceptor_poll_period_us,
            self.transport.num_shared_buffers,
            format_mib(self.transport.shared_buffer_bytes()),
            if self.transport.srq {
                format!("srq on (srq_depth {})", self.transport.srq_depth)
            } else {
                "srq off".to_string()
            },
        )?;
        if !self.transport.c2h_success {
            write!(f, ", c2h_success off")?;
        }
        for b in &self.bdevs {
            write!(f, "bdev {}: {}", b.name, b.kind.as_str())?;
            match &b.device {
                BdevDevice::Ram {
                    num_blocks,
                    block_size,
                    numa_node,
                } => {
                    let size = num_blocks * u64::from(*block_size);
                    write!(
                        f,
                        ", {num_blocks} blocks of {block_size} bytes ({})",
                        format_mib(size)
                    )?;
                    match numa_node {
                        Some(node) => writeln!(f, ", NUMA node {node}")?,
                        None => writeln!(f)?,
                    }
                }
                BdevDevice::Nvme {
                    traddr,
                    io_timeout_ms,
                } => writeln!(
                    f,
                    ", controller {traddr} (namespace N is bdev {}nN), io_timeout_ms {io_timeout_ms}",
                    b.name
                )?,
            }
        }
        for s in &self.subsystems {
            let access = if s.allow_any_host {
                "any host".to_string()
            } else {
                format!("{} allowed host(s)", s.hosts.len())
            };
            writeln!(
                f,
                "subsystem {}: serial {:?}, model {:?}, max_namespaces {}, {access}",
                s.nqn, s.serial, s.model, s.max_namespaces
            )?;
            for h in s.hosts.iter().filter(|_| !s.allow_any_host) {
                writeln!(f, "  host {h}")?;
            }
            for l in &s.listeners {
                writeln!(f, "  listener {l}")?;
            }
            for ns in &s.namespaces {
                let size = self
                    .find_bdev(&ns.bdev)
                    .and_then(BdevSpec::size_bytes)
                    .map(|bytes| format!(", {}", format_mib(bytes)))
                    .unwrap_or_default();
                writeln!(f, "  namespace {}: bdev {}{size}", ns.nsid, ns.bdev)?;
            }
        }
        Ok(())
    }
}

/// "64 MiB", "0.5 MiB": sizes as operators think of them.
pub fn format_mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    }
}

/// Whether hosts on other machines can reach `l`: an IP listener not on a loopback address.
fn reachable_from_other_machines(l: &nvmf::ListenAddress) -> bool {
    if l.trtype == "loopback" {
        return false;
    }
    match l.traddr.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true, // "*" and names: assume the network
    }
}
