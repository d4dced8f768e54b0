//! What this build of nvmf-tgt supports. `nvmf-tgt capabilities` prints one line per entry
//! ("transport loopback", "bdev malloc"); scripts grep these lines, so the format is stable.
//! The config validator uses the same table, so adding a transport or bdev kind is one line here
//! (plus the code that builds it).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilityKind {
    Transport,
    Bdev,
}

impl CapabilityKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            CapabilityKind::Transport => "transport",
            CapabilityKind::Bdev => "bdev",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub kind: CapabilityKind,
    pub name: &'static str,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

const fn cap(kind: CapabilityKind, name: &'static str) -> Capability {
    Capability { kind, name }
}

/// Everything built into this binary, in the order `capabilities` prints it.
pub const CAPABILITIES: &[Capability] = &[
    cap(CapabilityKind::Transport, "loopback"),
    cap(CapabilityKind::Transport, "rdma"),
    cap(CapabilityKind::Transport, "tcp"),
    cap(CapabilityKind::Bdev, "malloc"),
    cap(CapabilityKind::Bdev, "null"),
    cap(CapabilityKind::Bdev, "nvme"),
];

/// Transport types a listener may name in a config, built or not; the rest are typos.
pub const KNOWN_TRANSPORTS: &[&str] = &["rdma", "tcp", "loopback"];

/// Bdev kinds a config may name, built or not; the rest are typos.
pub const KNOWN_BDEV_KINDS: &[&str] = &["malloc", "null", "nvme"];

/// The `capabilities` output: one line per capability, each ending in a newline.
pub fn capabilities_text() -> String {
    CAPABILITIES.iter().map(|c| format!("{c}\n")).collect()
}

pub fn is_built(kind: CapabilityKind, name: &str) -> bool {
    CAPABILITIES
        .iter()
        .any(|c| c.kind == kind && c.name == name)
}

/// Names of the built capabilities of one kind, for error messages ("loopback").
pub fn built_names(kind: CapabilityKind) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_one_line_per_capability() {
        let text = capabilities_text();
        let lines: Vec<&str> = text.lines().collect();
        // The VM scripts match these exact lines (grep -x).
        assert_eq!(
            lines[..5],
            [
                "transport loopback",
                "transport rdma",
                "transport tcp",
                "bdev malloc",
                "bdev null"
            ]
        );
        assert_eq!(lines.len(), CAPABILITIES.len());
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn built_entries_are_known_names() {
        for c in CAPABILITIES {
            let known = match c.kind {
                CapabilityKind::Transport => KNOWN_TRANSPORTS,
                CapabilityKind::Bdev => KNOWN_BDEV_KINDS,
            };
            assert!(
                known.contains(&c.name),
                "{c} is missing from the known list"
            );
        }
        assert!(is_built(CapabilityKind::Transport, "loopback"));
        assert!(!is_built(CapabilityKind::Transport, "malloc"));
        assert_eq!(
            built_names(CapabilityKind::Bdev),
            ["malloc", "null", "nvme"]
        );
    }
}
