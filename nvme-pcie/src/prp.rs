//! PRP (Physical Region Page) construction for one buffer given by (iova, len), with a 4 KiB
//! memory page size (CC.MPS = 0).
//!
//! - The buffer spans one page: PRP1 only (PRP2 = 0).
//! - Two pages: PRP2 is the second page.
//! - More: PRP2 points at a PRP list holding pages 2..n. The list page belongs to the command
//!   slot and is preallocated with the queue, so building PRPs never allocates. A list that
//!   would need chaining to a second list page is refused: MDTS bounds transfers well below
//!   the 2 MiB one list page covers.
//!
//! Only PRP1 may start mid-page (at a dword-aligned offset); every later page starts at an
//! offset of 0, which follows from the buffer being contiguous in IOVA space.

#![forbid(unsafe_code)]

use nvme_spec::{IntoBytes, Sqe};

use crate::regs::MEMORY_PAGE_BYTES;

const PAGE_BYTES: u64 = MEMORY_PAGE_BYTES as u64;
/// PRP entries in one list page (the last is not used as a chain pointer: we never chain).
pub const PRP_ENTRIES_PER_LIST_PAGE: usize = MEMORY_PAGE_BYTES / 8;
/// Largest transfer one list page covers, from a page-aligned start.
pub const MAX_TRANSFER_BYTES: u64 = (PRP_ENTRIES_PER_LIST_PAGE as u64 + 1) * PAGE_BYTES;

/// The two data-pointer fields of a command using PRPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    pub prp2: u64,
}

impl Prps {
    /// Writes PRP1/PRP2 into the command's DPTR and selects PRPs (PSDT = 0).
    pub fn apply(self, sqe: &mut Sqe) {
        sqe.flags &= !(0x3 << 6);
        let dptr = sqe.dptr.as_mut_bytes();
        dptr[..8].copy_from_slice(&self.prp1.to_le_bytes());
        dptr[8..].copy_from_slice(&self.prp2.to_le_bytes());
    }
}

/// A command slot's PRP list page: entries the CPU writes and the IOVA the controller reads.
#[derive(Debug)]
pub struct PrpList<'a> {
    /// Entries, stored little-endian as the controller reads them.
    pub entries: &'a mut [u64],
    /// IOVA of `entries[0]`.
    pub iova: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrpError {
    #[error("a transfer of 0 bytes has no PRPs")]
    Empty,
    #[error("buffer IOVA {iova:#x} is not dword aligned, which PRP1 requires")]
    UnalignedStart { iova: u64 },
    #[error("buffer at {iova:#x} of {len_bytes} bytes wraps the IOVA space")]
    Overflow { iova: u64, len_bytes: u64 },
    #[error(
        "buffer spans {pages} pages and needs a PRP list, but no list page was given for the slot"
    )]
    NoListPage { pages: u64 },
    #[error(
        "buffer needs {needed} PRP list entries but the list page holds {capacity} without \
         chaining; split the transfer (MDTS) or give a page-aligned list"
    )]
    ListTooSmall { needed: u64, capacity: usize },
    #[error("PRP list IOVA {iova:#x} is not 8-byte aligned")]
    UnalignedList { iova: u64 },
    #[error(
        "buffer unit at {iova:#x} ({len_bytes} bytes) of a chain does not start and end on \
         page boundaries, which PRPs need between units"
    )]
    UnalignedUnit { iova: u64, len_bytes: u64 },
    #[error("the buffer's units hold fewer than the {len_bytes} bytes to transfer")]
    ShortChain { len_bytes: u64 },
}

/// Builds the PRPs for `len_bytes` at `iova`. `list` is used only when the buffer spans more
/// than two pages; its entries beyond the ones needed are left as they were.
pub fn build(iova: u64, len_bytes: u64, list: Option<PrpList<'_>>) -> Result<Prps, PrpError> {
    if len_bytes == 0 {
        return Err(PrpError::Empty);
    }
    if iova % 4 != 0 {
        return Err(PrpError::UnalignedStart { iova });
    }
    let end = iova
        .checked_add(len_bytes)
        .ok_or(PrpError::Overflow { iova, len_bytes })?;
    let first_page = iova & !(PAGE_BYTES - 1);
    let pages = (end - first_page).div_ceil(PAGE_BYTES);
    match pages {
        1 => Ok(Prps {
            prp1: iova,
            prp2: 0,
        }),
        2 => Ok(Prps {
            prp1: iova,
            prp2: first_page + PAGE_BYTES,
        }),
        _ => {
            let list = list.ok_or(PrpError::NoListPage { pages })?;
            if list.iova % 8 != 0 {
                return Err(PrpError::UnalignedList { iova: list.iova });
            }
            // A list may start mid-page, but must not cross into the next page unchained.
            let room_in_page = ((PAGE_BYTES - list.iova % PAGE_BYTES) / 8) as usize;
            let capacity = list.entries.len().min(room_in_page);
            let needed = pages - 1;
            if needed > capacity as u64 {
                return Err(PrpError::ListTooSmall { needed, capacity });
            }
            for (i, entry) in list.entries[..needed as usize].iter_mut().enumerate() {
                *entry = (first_page + (i as u64 + 1) * PAGE_BYTES).to_le();
            }
            Ok(Prps {
                prp1: iova,
                prp2: list.iova,
            })
        }
    }
}

/// Builds the PRPs for `len_bytes` starting `offset` bytes into a chain of
/// buffer units, given as (iova, length) in order. Between units the data
/// must break on page boundaries (pool units are page-aligned multiples of a
/// page), so every entry after PRP1 is a page address, as PRPs require. One
/// contiguous unit gives the same PRPs as [`build`].
pub fn build_chain(
    units: impl Iterator<Item = (u64, usize)>,
    offset: u64,
    len_bytes: u64,
    list: Option<PrpList<'_>>,
) -> Result<Prps, PrpError> {
    if len_bytes == 0 {
        return Err(PrpError::Empty);
    }
    let mut list = list;
    let mut skip = offset;
    let mut left = len_bytes;
    let mut prp1 = None;
    let mut prp2 = 0;
    // Entries after PRP1: the second goes to PRP2 until a third shows a list is needed.
    let mut extra = 0usize;
    let mut previous_unit_end: Option<u64> = None;
    for (iova, unit_len) in units {
        let unit_len = unit_len as u64;
        if skip >= unit_len {
            skip -= unit_len;
            continue;
        }
        if left == 0 {
            break;
        }
        let breaks_mid_page = previous_unit_end.is_some_and(|end| end % PAGE_BYTES != 0)
            || (prp1.is_some() && iova % PAGE_BYTES != 0);
        if breaks_mid_page {
            return Err(PrpError::UnalignedUnit {
                iova,
                len_bytes: unit_len,
            });
        }
        let start = iova + skip;
        let take = (unit_len - skip).min(left);
        let end = start
            .checked_add(take)
            .ok_or(PrpError::Overflow { iova, len_bytes })?;
        let mut page = start & !(PAGE_BYTES - 1);
        while page < end {
            if prp1.is_none() {
                if start % 4 != 0 {
                    return Err(PrpError::UnalignedStart { iova: start });
                }
                prp1 = Some(start);
            } else {
                extra += 1;
                if extra == 1 {
                    prp2 = page;
                } else {
                    let l = list.as_mut().ok_or(PrpError::NoListPage {
                        pages: extra as u64 + 1,
                    })?;
                    if l.iova % 8 != 0 {
                        return Err(PrpError::UnalignedList { iova: l.iova });
                    }
                    let room_in_page = ((PAGE_BYTES - l.iova % PAGE_BYTES) / 8) as usize;
                    let capacity = l.entries.len().min(room_in_page);
                    if extra > capacity {
                        return Err(PrpError::ListTooSmall {
                            needed: extra as u64,
                            capacity,
                        });
                    }
                    if extra == 2 {
                        l.entries[0] = prp2.to_le();
                    }
                    l.entries[extra - 1] = page.to_le();
                }
            }
            page += PAGE_BYTES;
        }
        previous_unit_end = Some(start + take);
        left -= take;
        skip = 0;
    }
    if left > 0 {
        return Err(PrpError::ShortChain { len_bytes });
    }
    let prp1 = prp1.expect("len_bytes > 0 gave a first page");
    if extra >= 2 {
        prp2 = list.expect("checked when the third page came").iova;
    }
    Ok(Prps { prp1, prp2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUF: u64 = 0x7f00_0000_0000;
    const LIST_IOVA: u64 = 0x1234_5000;

    #[test]
    fn one_page_uses_prp1_only() {
        assert_eq!(build(BUF, 4096, None), Ok(Prps { prp1: BUF, prp2: 0 }));
        assert_eq!(build(BUF, 512, None).unwrap().prp2, 0);
        // Unaligned start that stays inside its page.
        assert_eq!(
            build(BUF + 0x200, 0xE00, None),
            Ok(Prps {
                prp1: BUF + 0x200,
                prp2: 0
            })
        );
    }

    #[test]
    fn two_pages_put_the_second_in_prp2() {
        assert_eq!(
            build(BUF, 8192, None),
            Ok(Prps {
                prp1: BUF,
                prp2: BUF + 4096
            })
        );
        // 4 KiB starting mid-page spans two pages; PRP2 is page aligned.
        assert_eq!(
            build(BUF + 0x800, 4096, None),
            Ok(Prps {
                prp1: BUF + 0x800,
                prp2: BUF + 4096
            })
        );
    }

    #[test]
    fn more_pages_use_the_list() {
        let mut entries = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
        let list = PrpList {
            entries: &mut entries,
            iova: LIST_IOVA,
        };
        let prps = build(BUF + 0x10, 3 * 4096, Some(list)).unwrap();
        assert_eq!(prps.prp1, BUF + 0x10);
        assert_eq!(prps.prp2, LIST_IOVA);
        // Offset 0x10 makes 3 pages of data span 4 pages: list holds pages 2, 3, 4.
        assert_eq!(
            entries[..4]
                .iter()
                .map(|e| u64::from_le(*e))
                .collect::<Vec<_>>(),
            vec![BUF + 4096, BUF + 8192, BUF + 12288, 0]
        );
    }

    #[test]
    fn full_list_page_without_chaining() {
        let mut entries = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
        let list = PrpList {
            entries: &mut entries,
            iova: LIST_IOVA,
        };
        build(BUF, MAX_TRANSFER_BYTES, Some(list)).unwrap();
        assert_eq!(
            u64::from_le(entries[PRP_ENTRIES_PER_LIST_PAGE - 1]),
            BUF + MAX_TRANSFER_BYTES - 4096
        );
        let list = PrpList {
            entries: &mut entries,
            iova: LIST_IOVA,
        };
        assert_eq!(
            build(BUF, MAX_TRANSFER_BYTES + 4096, Some(list)),
            Err(PrpError::ListTooSmall {
                needed: 513,
                capacity: 512
            })
        );
    }

    #[test]
    fn list_must_not_cross_its_page() {
        let mut entries = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
        let list = PrpList {
            entries: &mut entries,
            iova: LIST_IOVA + 4096 - 16, // room for 2 entries
        };
        assert_eq!(
            build(BUF, 4 * 4096, Some(list)),
            Err(PrpError::ListTooSmall {
                needed: 3,
                capacity: 2
            })
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(build(BUF, 0, None), Err(PrpError::Empty));
        assert_eq!(
            build(BUF + 2, 16, None),
            Err(PrpError::UnalignedStart { iova: BUF + 2 })
        );
        assert_eq!(
            build(BUF, 3 * 4096, None),
            Err(PrpError::NoListPage { pages: 3 })
        );
        assert!(matches!(
            build(u64::MAX - 3, 8, None),
            Err(PrpError::Overflow { .. })
        ));
        let mut entries = [0u64; 4];
        let list = PrpList {
            entries: &mut entries,
            iova: LIST_IOVA + 4,
        };
        assert!(matches!(
            build(BUF, 3 * 4096, Some(list)),
            Err(PrpError::UnalignedList { .. })
        ));
    }

    /// The PRP list entries `build_chain` wrote, for `needed` entries.
    fn chain_prps(units: &[(u64, usize)], offset: u64, len: u64) -> (Prps, Vec<u64>) {
        let mut entries = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
        let prps = build_chain(
            units.iter().copied(),
            offset,
            len,
            Some(PrpList {
                entries: &mut entries,
                iova: LIST_IOVA,
            }),
        )
        .unwrap();
        let pages = (offset % PAGE_BYTES + len).div_ceil(PAGE_BYTES) as usize;
        (
            prps,
            entries[..pages.saturating_sub(1)]
                .iter()
                .map(|e| u64::from_le(*e))
                .collect(),
        )
    }

    #[test]
    fn a_chain_of_units_lists_every_page_in_order() {
        // Three 8 KiB units far apart: six pages.
        let units = [(0x10_0000, 8192), (0x50_0000, 8192), (0x30_0000, 8192)];
        let (prps, list) = chain_prps(&units, 0, 24_576);
        assert_eq!(prps.prp1, 0x10_0000);
        assert_eq!(prps.prp2, LIST_IOVA);
        assert_eq!(
            list,
            [0x10_1000, 0x50_0000, 0x50_1000, 0x30_0000, 0x30_1000]
        );
        // Two pages across a unit boundary: PRP2 is the next unit's page.
        let (prps, _) = chain_prps(&units, 4096, 8192);
        assert_eq!((prps.prp1, prps.prp2), (0x10_1000, 0x50_0000));
        // A window that starts mid-page in the second unit and ends in the third.
        let (prps, list) = chain_prps(&units, 8192 + 512, 8192);
        assert_eq!(prps.prp1, 0x50_0200);
        assert_eq!(prps.prp2, LIST_IOVA);
        assert_eq!(list, [0x50_1000, 0x30_0000]);
    }

    #[test]
    fn one_unit_gives_what_build_gives() {
        for (iova, len) in [
            (BUF, 4096u64),
            (BUF + 0x200, 0xE00),
            (BUF, 8192),
            (BUF + 8, 3 * 4096),
        ] {
            let mut a = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
            let mut b = [0u64; PRP_ENTRIES_PER_LIST_PAGE];
            let want = build(
                iova,
                len,
                Some(PrpList {
                    entries: &mut a,
                    iova: LIST_IOVA,
                }),
            );
            let got = build_chain(
                [(iova, len as usize)].into_iter(),
                0,
                len,
                Some(PrpList {
                    entries: &mut b,
                    iova: LIST_IOVA,
                }),
            );
            assert_eq!(got, want, "{iova:#x} + {len}");
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_chain_must_break_on_pages_and_hold_the_data() {
        let bad = [(0x10_0000u64, 6000usize), (0x20_0000, 8192)];
        assert!(matches!(
            build_chain(bad.iter().copied(), 0, 10_000, None),
            Err(PrpError::UnalignedUnit { .. })
        ));
        let short = [(0x10_0000u64, 4096usize)];
        assert_eq!(
            build_chain(short.iter().copied(), 0, 8192, None),
            Err(PrpError::ShortChain { len_bytes: 8192 })
        );
        let units = [(0x10_0000u64, 8192usize), (0x20_0000, 8192)];
        assert_eq!(
            build_chain(units.iter().copied(), 0, 12_288, None),
            Err(PrpError::NoListPage { pages: 3 })
        );
    }

    #[test]
    fn apply_sets_dptr_and_psdt() {
        let mut sqe = Sqe::new(nvme_spec::opcode::io::READ, 1);
        assert_ne!(sqe.psdt(), 0);
        Prps {
            prp1: 0x1000,
            prp2: 0x2000,
        }
        .apply(&mut sqe);
        assert_eq!(sqe.psdt(), 0);
        assert_eq!(sqe.dptr.addr.get(), 0x1000);
        let bytes = sqe.as_bytes();
        assert_eq!(&bytes[24..32], &0x1000u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &0x2000u64.to_le_bytes());
    }
}
