//! CPU topology helpers: CPU-list parsing, online/affinity sets, NUMA lookup, pinning.

use std::fmt::Write as _;
use std::io;

use crate::mask::MaskError;

/// Highest CPU id a reactor mask may name (SPDK's limit, and one `cpu_set_t`).
pub const MAX_CPU_ID: usize = 1023;

const SYSFS_CPU_DIR: &str = "/sys/devices/system/cpu";

/// Words of a 1024-bit kernel cpumask; the kernel lays it out as an array of `unsigned long`.
const CPU_MASK_WORDS: usize = (MAX_CPU_ID + 1) / libc::c_ulong::BITS as usize;
type CpuMaskWords = [libc::c_ulong; CPU_MASK_WORDS];

/// Parses a Linux CPU list such as `"0-3,6"` (the sysfs `online` format) into sorted unique ids.
///
/// Surrounding whitespace (e.g. sysfs' trailing newline) is ignored; an empty list is an error.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, MaskError> {
    let list = s.trim();
    if list.is_empty() {
        return Err(MaskError::Empty);
    }
    let syntax = |reason: &str| MaskError::Syntax {
        input: s.trim().to_string(),
        reason: reason.to_string(),
    };
    let mut cpus = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(syntax("empty entry in CPU list"));
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (
                parse_cpu_id(a.trim(), &syntax)?,
                parse_cpu_id(b.trim(), &syntax)?,
            ),
            None => {
                let cpu = parse_cpu_id(item, &syntax)?;
                (cpu, cpu)
            }
        };
        if first > last {
            return Err(syntax(&format!("range {item} ends before it starts")));
        }
        // Both ends are <= MAX_CPU_ID, so this loop is bounded by 1024 per entry.
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu_id(s: &str, syntax: &dyn Fn(&str) -> MaskError) -> Result<usize, MaskError> {
    // usize::from_str would accept "+3"; a CPU id is plain decimal digits.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(&format!("\"{s}\" is not a decimal CPU id")));
    }
    let cpu: usize = s
        .parse()
        .map_err(|_| MaskError::CpuOutOfRange { cpu: usize::MAX })?;
    if cpu > MAX_CPU_ID {
        return Err(MaskError::CpuOutOfRange { cpu });
    }
    Ok(cpu)
}

/// Formats sorted unique CPU ids compactly, e.g. `[0, 1, 2, 5]` -> `"0-2,5"`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

/// CPUs the kernel reports online (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> io::Result<Vec<usize>> {
    let path = format!("{SYSFS_CPU_DIR}/online");
    let text = std::fs::read_to_string(&path)?;
    parse_cpu_list(&text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

/// CPUs in this process' (calling thread's) affinity mask, from `sched_getaffinity`.
pub fn affinity_cpus() -> io::Result<Vec<usize>> {
    let mut words: CpuMaskWords = [0; CPU_MASK_WORDS];
    // SAFETY: `words` is a live, writable buffer of exactly the size passed; the kernel writes at
    // most that many bytes, and a cpumask is an array of unsigned long, which is `words`' layout.
    let rc = unsafe {
        libc::sched_getaffinity(
            0,
            std::mem::size_of::<CpuMaskWords>(),
            words.as_mut_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpus_from_words(&words))
}

fn cpus_from_words(words: &CpuMaskWords) -> Vec<usize> {
    let bits = libc::c_ulong::BITS as usize;
    (0..=MAX_CPU_ID)
        .filter(|&cpu| words[cpu / bits] & (1 << (cpu % bits)) != 0)
        .collect()
}

/// NUMA node of `cpu`, from the `nodeM` entry in `/sys/devices/system/cpu/cpuN/`.
/// `None` when the kernel exposes no NUMA information (or the CPU does not exist).
pub fn numa_node_of_cpu(cpu: usize) -> Option<u32> {
    let dir = std::fs::read_dir(format!("{SYSFS_CPU_DIR}/cpu{cpu}")).ok()?;
    let names = dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    numa_node_from_entries(names)
}

/// Picks the node id out of a sysfs cpu directory listing (pure, for tests).
fn numa_node_from_entries(names: impl Iterator<Item = String>) -> Option<u32> {
    names
        .filter_map(|name| {
            let digits = name.strip_prefix("node")?;
            // "node" followed by anything but digits (there is none today) is not a node link.
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        })
        .min()
}

/// Pins the calling thread to `cpu` with `sched_setaffinity`. The OS error (errno) is preserved
/// in the returned `io::Error`; a CPU beyond [`MAX_CPU_ID`] gives `InvalidInput`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu > MAX_CPU_ID {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the maximum CPU id {MAX_CPU_ID}"),
        ));
    }
    let bits = libc::c_ulong::BITS as usize;
    let mut words: CpuMaskWords = [0; CPU_MASK_WORDS];
    words[cpu / bits] |= 1 << (cpu % bits);
    // SAFETY: `words` is a live buffer of exactly the size passed and in the kernel's cpumask
    // layout; sched_setaffinity only reads it. pid 0 means the calling thread.
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of::<CpuMaskWords>(),
            words.as_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0\n").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list(" 5 , 1-2 ,2").unwrap(), vec![1, 2, 5]);
        assert_eq!(parse_cpu_list("7-7").unwrap(), vec![7]);
        assert_eq!(parse_cpu_list("1023").unwrap(), vec![1023]);
    }

    #[test]
    fn rejects_bad_cpu_lists() {
        assert!(matches!(parse_cpu_list(""), Err(MaskError::Empty)));
        assert!(matches!(parse_cpu_list(" \n"), Err(MaskError::Empty)));
        for bad in ["0,,1", "3-1", "a", "1-", "-1", "+1", "1-2-3", "0x1,2", "1,"] {
            match parse_cpu_list(bad) {
                Err(MaskError::Syntax { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            parse_cpu_list("0,1024"),
            Err(MaskError::CpuOutOfRange { cpu: 1024 })
        ));
        assert!(matches!(
            parse_cpu_list("99999999999999999999999"),
            Err(MaskError::CpuOutOfRange { .. })
        ));
    }

    #[test]
    fn formats_cpu_lists() {
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[3]), "3");
        assert_eq!(format_cpu_list(&[0, 1]), "0-1");
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        let cpus = vec![0, 2, 3, 4, 9];
        assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).unwrap(), cpus);
    }

    #[test]
    fn reads_this_machine() {
        let online = online_cpus().unwrap();
        let affinity = affinity_cpus().unwrap();
        assert!(!online.is_empty() && !affinity.is_empty());
        assert!(affinity.iter().all(|cpu| online.contains(cpu)));
    }

    #[test]
    fn numa_node_from_sysfs_names() {
        let names = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            numa_node_from_entries(names(&["cache", "node1", "topology"])),
            Some(1)
        );
        assert_eq!(numa_node_from_entries(names(&["cache", "topology"])), None);
        assert_eq!(numa_node_from_entries(names(&["node", "nodex"])), None);
        assert_eq!(numa_node_of_cpu(MAX_CPU_ID + 100_000), None);
    }

    #[test]
    fn pins_a_thread() {
        let cpu = affinity_cpus().unwrap()[0];
        let seen = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            affinity_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![cpu]);
    }

    #[test]
    fn pin_errors_keep_errno() {
        let err = pin_current_thread(MAX_CPU_ID + 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let online = online_cpus().unwrap();
        if let Some(absent) = (0..=MAX_CPU_ID).rev().find(|c| !online.contains(c)) {
            // Run on a scratch thread: a wrongly successful pin must not move the test thread.
            let err = std::thread::spawn(move || pin_current_thread(absent))
                .join()
                .unwrap()
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
    }
}
