//! The start-up warning for reactors that sit on another NUMA node than the devices they
//! drive: every DMA and doorbell then crosses the interconnect. It suggests a mask.

use std::fs;
use std::path::Path;

use reactor::{numa_node_of_cpu, online_cpus, ReactorMask};

const SYSFS_INFINIBAND: &str = "/sys/class/infiniband";

/// A warning when no reactor of `mask` runs on `device_node`, the node of the device named
/// `what`. Nothing when the node is unknown (-1 in sysfs, or no NUMA).
pub fn device_warning(what: &str, device_node: Option<u32>, mask: &ReactorMask) -> Option<String> {
    let online = online_cpus().unwrap_or_default();
    mismatch_warning(what, device_node?, mask, &online, numa_node_of_cpu)
}

/// Warnings for RDMA devices (physical ones: soft-RoCE has no PCI device, hence no node).
pub fn rdma_device_warnings(mask: &ReactorMask) -> Vec<String> {
    let Ok(entries) = fs::read_dir(SYSFS_INFINIBAND) else {
        return Vec::new();
    };
    let mut devices: Vec<(String, Option<u32>)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, read_node(&e.path().join("device/numa_node")))
        })
        .collect();
    devices.sort();
    devices
        .into_iter()
        .filter_map(|(name, node)| device_warning(&format!("RDMA device {name}"), node, mask))
        .collect()
}

/// The one node all of `nodes` name; None if they differ or one is unknown.
pub fn common_node(mut nodes: impl Iterator<Item = Option<u32>>) -> Option<u32> {
    let first = nodes.next()??;
    nodes.all(|n| n == Some(first)).then_some(first)
}

fn read_node(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse::<u32>().ok()
}

/// The pure part of `device_warning`: `node_of_cpu` and `online` describe the machine.
fn mismatch_warning(
    what: &str,
    device_node: u32,
    mask: &ReactorMask,
    online: &[usize],
    node_of_cpu: impl Fn(usize) -> Option<u32>,
) -> Option<String> {
    let reactor_nodes: Vec<u32> = mask
        .cores()
        .iter()
        .filter_map(|&c| node_of_cpu(c))
        .collect();
    if reactor_nodes.is_empty() || reactor_nodes.contains(&device_node) {
        return None;
    }
    let mut nodes = reactor_nodes;
    nodes.sort_unstable();
    nodes.dedup();
    let nodes: Vec<String> = nodes.iter().map(u32::to_string).collect();
    let local: Vec<usize> = online
        .iter()
        .copied()
        .filter(|&c| node_of_cpu(c) == Some(device_node))
        .take(mask.len())
        .collect();
    let suggestion = match ReactorMask::from_cores(&local) {
        Ok(m) => format!("; run the reactors there, e.g. -m {m}"),
        Err(_) => String::new(),
    };
    Some(format!(
        "{what} is on NUMA node {device_node}, but the reactors (mask {mask}) run on node(s) \
         {}: its DMA and doorbells cross nodes{suggestion}",
        nodes.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPUs 0-3 on node 0, 4-7 on node 1.
    fn node_of(cpu: usize) -> Option<u32> {
        Some((cpu / 4) as u32)
    }

    #[test]
    fn warns_with_a_mask_on_the_devices_node() {
        let online: Vec<usize> = (0..8).collect();
        let mask = ReactorMask::parse("0x3").unwrap();
        let w =
            mismatch_warning("NVMe controller 0000:04:00.0", 1, &mask, &online, node_of).unwrap();
        assert_eq!(
            w,
            "NVMe controller 0000:04:00.0 is on NUMA node 1, but the reactors (mask 0x3) run on \
             node(s) 0: its DMA and doorbells cross nodes; run the reactors there, e.g. -m 0x30"
        );
    }

    #[test]
    fn quiet_when_a_reactor_is_local_or_nodes_are_unknown() {
        let online: Vec<usize> = (0..8).collect();
        let spanning = ReactorMask::parse("0x11").unwrap();
        assert_eq!(mismatch_warning("d", 1, &spanning, &online, node_of), None);
        let mask = ReactorMask::parse("0x1").unwrap();
        assert_eq!(mismatch_warning("d", 1, &mask, &online, |_| None), None);
    }

    #[test]
    fn a_common_node_only_when_all_agree() {
        assert_eq!(common_node([Some(1), Some(1)].into_iter()), Some(1));
        assert_eq!(common_node([Some(0), Some(1)].into_iter()), None);
        assert_eq!(common_node([Some(0), None].into_iter()), None);
        assert_eq!(common_node(std::iter::empty()), None);
    }

    #[test]
    fn no_suggestion_when_the_node_has_no_online_cpu() {
        let online: Vec<usize> = (0..4).collect();
        let mask = ReactorMask::parse("0x1").unwrap();
        let w = mismatch_warning("d", 1, &mask, &online, node_of).unwrap();
        assert!(w.ends_with("cross nodes"), "{w}");
    }
}
