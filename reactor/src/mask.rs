//! Reactor masks: which CPUs get a reactor, in SPDK's `-m` syntax.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::topology::{affinity_cpus, format_cpu_list, online_cpus, parse_cpu_list, MAX_CPU_ID};

/// Errors from parsing or validating a reactor mask.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The mask selects no CPU at all.
    #[error("reactor mask is empty: at least one CPU is required")]
    Empty,
    /// The text is neither a hex mask nor a CPU list.
    #[error("invalid reactor mask \"{input}\": {reason} (expected hex such as 0x3, or a CPU list such as [0,2-3])")]
    Syntax {
        /// The offending input, trimmed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CPU id beyond what a `cpu_set_t` holds.
    #[error("CPU {cpu} is beyond the maximum supported CPU id {max}", max = MAX_CPU_ID)]
    CpuOutOfRange {
        /// The offending CPU id (`usize::MAX` if it did not even fit a usize).
        cpu: usize,
    },
    /// A CPU that is offline or outside this process' affinity.
    #[error("CPU {cpu} in reactor mask {mask} is not usable: valid CPUs are {valid}")]
    CpuNotUsable {
        /// The first unusable CPU.
        cpu: usize,
        /// The whole mask, in hex.
        mask: String,
        /// The usable CPUs, as a CPU list ("0-1").
        valid: String,
    },
    /// The usable CPU set could not be read from the system.
    #[error("cannot determine usable CPUs ({what}): {source}")]
    Io {
        /// Which lookup failed.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A set of CPUs that each run one reactor; reactor `i` runs on `cores()[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactorMask {
    /// Sorted, unique, non-empty, each <= MAX_CPU_ID.
    cores: Vec<usize>,
}

impl ReactorMask {
    /// Syntax only. Accepted forms (SPDK's): hex with or without `0x` (`"0x0F"`, `"F"`,
    /// `"3"` = cores 0,1), and CPU lists `"[0,2-3]"` or `"0-3,6"` (a string that starts with `[`
    /// or contains `,` or `-` is a list).
    pub fn parse(s: &str) -> Result<ReactorMask, MaskError> {
        let text = s.trim();
        if text.is_empty() {
            return Err(MaskError::Empty);
        }
        let cores = if text.starts_with('[') || text.contains(',') || text.contains('-') {
            parse_list_form(text)?
        } else {
            parse_hex_form(text)?
        };
        ReactorMask::from_cores(&cores)
    }

    /// Checks every CPU is online (`/sys/devices/system/cpu/online`) and in the process
    /// affinity (`sched_getaffinity`).
    pub fn validate(&self) -> Result<(), MaskError> {
        let affinity = affinity_cpus().map_err(|source| MaskError::Io {
            what: "sched_getaffinity",
            source,
        })?;
        // Containers sometimes hide sysfs; the affinity set alone is then the best we know.
        let valid = match online_cpus() {
            Ok(online) => affinity
                .into_iter()
                .filter(|c| online.contains(c))
                .collect(),
            Err(e) => {
                log::debug!("cannot read online CPUs ({e}); using the affinity mask only");
                affinity
            }
        };
        self.check_usable(&valid)
    }

    /// The pure part of [`validate`](Self::validate): every core must be in `valid`
    /// (sorted or not). The error names the first offending CPU and lists the valid ones.
    pub fn check_usable(&self, valid: &[usize]) -> Result<(), MaskError> {
        match self.cores.iter().find(|c| !valid.contains(c)) {
            None => Ok(()),
            Some(&cpu) => {
                let mut valid = valid.to_vec();
                valid.sort_unstable();
                valid.dedup();
                let valid = if valid.is_empty() {
                    "none".to_string()
                } else {
                    format_cpu_list(&valid)
                };
                Err(MaskError::CpuNotUsable {
                    cpu,
                    mask: self.to_string(),
                    valid,
                })
            }
        }
    }

    /// [`parse`](Self::parse) then [`validate`](Self::validate).
    pub fn parse_and_validate(s: &str) -> Result<ReactorMask, MaskError> {
        let mask = ReactorMask::parse(s)?;
        mask.validate()?;
        Ok(mask)
    }

    /// A mask of exactly these cores (any order, duplicates ignored). Empty is an error.
    pub fn from_cores(cores: &[usize]) -> Result<ReactorMask, MaskError> {
        if cores.is_empty() {
            return Err(MaskError::Empty);
        }
        if let Some(&cpu) = cores.iter().find(|&&c| c > MAX_CPU_ID) {
            return Err(MaskError::CpuOutOfRange { cpu });
        }
        let mut cores = cores.to_vec();
        cores.sort_unstable();
        cores.dedup();
        Ok(ReactorMask { cores })
    }

    /// The CPUs, ascending; reactor `i` runs on `cores()[i]`.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Number of CPUs (= reactors).
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Always false: a mask is never empty. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Whether `cpu` is in the mask.
    pub fn contains(&self, cpu: usize) -> bool {
        self.cores.binary_search(&cpu).is_ok()
    }
}

fn syntax_error(input: &str, reason: &str) -> MaskError {
    MaskError::Syntax {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_list_form(text: &str) -> Result<Vec<usize>, MaskError> {
    let inner = match (text.strip_prefix('['), text.strip_suffix(']')) {
        (Some(_), Some(_)) if text.len() >= 2 => &text[1..text.len() - 1],
        (None, None) => text,
        _ => return Err(syntax_error(text, "unbalanced brackets")),
    };
    if inner.trim().is_empty() {
        return Err(MaskError::Empty);
    }
    parse_cpu_list(inner).map_err(|e| match e {
        // Name what the user typed, not the bracket-stripped inner part.
        MaskError::Syntax { reason, .. } => MaskError::Syntax {
            input: text.to_string(),
            reason,
        },
        other => other,
    })
}

fn parse_hex_form(text: &str) -> Result<Vec<usize>, MaskError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() {
        return Err(syntax_error(text, "no hex digits"));
    }
    let mut cores = Vec::new();
    // Least significant digit last; the loop is bounded by the input length.
    for (nibble_index, ch) in digits.chars().rev().enumerate() {
        let nibble = ch
            .to_digit(16)
            .ok_or_else(|| syntax_error(text, &format!("'{ch}' is not a hex digit")))?;
        for bit in 0..4 {
            if nibble & (1 << bit) != 0 {
                let cpu = nibble_index.saturating_mul(4).saturating_add(bit);
                if cpu > MAX_CPU_ID {
                    return Err(MaskError::CpuOutOfRange { cpu });
                }
                cores.push(cpu);
            }
        }
    }
    Ok(cores)
}

impl FromStr for ReactorMask {
    type Err = MaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReactorMask::parse(s)
    }
}

impl fmt::Display for ReactorMask {
    /// Hex form, e.g. `0x3`; parsing it back gives the same mask.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let highest = *self.cores.last().expect("a ReactorMask is never empty");
        let mut nibbles = vec![0u8; highest / 4 + 1];
        for &cpu in &self.cores {
            nibbles[cpu / 4] |= 1 << (cpu % 4);
        }
        f.write_str("0x")?;
        for nibble in nibbles.iter().rev() {
            write!(f, "{nibble:x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(s: &str) -> Vec<usize> {
        ReactorMask::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .cores()
            .to_vec()
    }

    #[test]
    fn parses_hex_forms() {
        assert_eq!(cores("0x0F"), vec![0, 1, 2, 3]);
        assert_eq!(cores("F"), vec![0, 1, 2, 3]);
        assert_eq!(cores("f"), vec![0, 1, 2, 3]);
        assert_eq!(cores("3"), vec![0, 1]);
        assert_eq!(cores("0X10"), vec![4]);
        assert_eq!(cores(" 0x5 "), vec![0, 2]);
        // Decimal-looking text is still hex, as in SPDK: 0x1024 = bits 2, 5, 12.
        assert_eq!(cores("1024"), vec![2, 5, 12]);
        assert_eq!(cores("0x0001"), vec![0]);
        let top = format!("0x8{}", "0".repeat(255));
        assert_eq!(cores(&top), vec![1023]);
    }

    #[test]
    fn parses_list_forms() {
        assert_eq!(cores("[0,2-3]"), vec![0, 2, 3]);
        assert_eq!(cores("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(cores("[5]"), vec![5]);
        assert_eq!(cores("1,0,1"), vec![0, 1]);
        assert_eq!(cores("2-2"), vec![2]);
        assert_eq!(cores("[ 1 , 3 ]"), vec![1, 3]);
    }

    #[test]
    fn rejects_bad_masks() {
        for empty in ["", "  ", "0x0", "0", "[]", "[ ]", "000"] {
            assert!(
                matches!(ReactorMask::parse(empty), Err(MaskError::Empty)),
                "{empty:?}"
            );
        }
        for bad in [
            "0x", "0xG", "xyz", "[0,2", "0,2]", "]", "[", "3-1", "0,,1", "[a-b]", "0x1,2", "1 2",
        ] {
            match ReactorMask::parse(bad) {
                Err(MaskError::Syntax { input, .. }) => assert_eq!(input, bad.trim()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let too_high = format!("0x1{}", "0".repeat(256));
        assert!(matches!(
            ReactorMask::parse(&too_high),
            Err(MaskError::CpuOutOfRange { cpu: 1024 })
        ));
        assert!(matches!(
            ReactorMask::parse("[0,1024]"),
            Err(MaskError::CpuOutOfRange { cpu: 1024 })
        ));
        let msg = ReactorMask::parse("0xZ").unwrap_err().to_string();
        assert!(msg.contains("\"0xZ\"") && msg.contains("'Z'"), "{msg}");
    }

    #[test]
    fn from_str_and_from_cores() {
        let mask: ReactorMask = "[1,0]".parse().unwrap();
        assert_eq!(mask, ReactorMask::from_cores(&[1, 0, 1]).unwrap());
        assert_eq!(mask.len(), 2);
        assert!(!mask.is_empty());
        assert!(mask.contains(1) && !mask.contains(2));
        assert!(matches!(
            ReactorMask::from_cores(&[]),
            Err(MaskError::Empty)
        ));
        assert!(matches!(
            ReactorMask::from_cores(&[0, 5000]),
            Err(MaskError::CpuOutOfRange { cpu: 5000 })
        ));
    }

    #[test]
    fn displays_hex_and_round_trips() {
        let show = |c: &[usize]| ReactorMask::from_cores(c).unwrap().to_string();
        assert_eq!(show(&[0, 1]), "0x3");
        assert_eq!(show(&[0, 2, 3]), "0xd");
        assert_eq!(show(&[4]), "0x10");
        assert_eq!(show(&[5]), "0x20");
        assert_eq!(show(&[64]), format!("0x1{}", "0".repeat(16)));
        for c in [vec![0], vec![1, 7, 8, 63, 64, 1023], vec![3, 4, 5]] {
            let mask = ReactorMask::from_cores(&c).unwrap();
            assert_eq!(ReactorMask::parse(&mask.to_string()).unwrap(), mask);
        }
    }

    #[test]
    fn check_usable_names_cpu_and_valid_set() {
        let mask = ReactorMask::parse("0x20").unwrap();
        let err = mask.check_usable(&[1, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CPU 5 in reactor mask 0x20 is not usable: valid CPUs are 0-1"
        );
        let mask = ReactorMask::parse("[0,2,3]").unwrap();
        assert!(mask.check_usable(&[0, 1, 2, 3]).is_ok());
        match mask.check_usable(&[0, 3, 4]) {
            Err(MaskError::CpuNotUsable { cpu, mask, valid }) => {
                assert_eq!((cpu, mask.as_str(), valid.as_str()), (2, "0xd", "0,3-4"));
            }
            other => panic!("{other:?}"),
        }
        assert!(mask
            .check_usable(&[])
            .unwrap_err()
            .to_string()
            .ends_with("none"));
    }

    #[test]
    fn validates_against_this_machine() {
        let usable = affinity_cpus().unwrap();
        let mask = ReactorMask::from_cores(&usable).unwrap();
        mask.validate().unwrap();
        ReactorMask::parse_and_validate(&mask.to_string()).unwrap();
        if !usable.contains(&1023) {
            let err = ReactorMask::parse_and_validate("[1023]").unwrap_err();
            assert!(
                matches!(err, MaskError::CpuNotUsable { cpu: 1023, .. }),
                "{err}"
            );
        }
    }
}
