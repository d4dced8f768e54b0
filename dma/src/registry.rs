//! Which memory devices may DMA into, and which devices need to know.
//!
//! Every buffer pool registers its region here when it is created; every device that
//! translates addresses through an IOMMU (a VFIO container) registers a mapper. Each side is
//! told about the other once: a new mapper maps every registered region, a new region is mapped
//! into every mapper, and a region is unmapped from all of them when its pool goes away. So a
//! pool buffer (a `DmaBuf` that is not standalone) is always visible to every device, and the
//! I/O path needs no lookup: that is how the RDMA data buffer can be the NVMe DMA buffer.
//!
//! The lock is taken at start-up, when a queue's buffers are created or freed, and when a
//! device is opened or closed; never per I/O.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::{ByteSize, DmaError};

/// A device's view of memory (e.g. a VFIO container): maps regions at IOVA = virtual address.
pub trait DmaMapper: Send + Sync {
    /// Names the device in errors ("NVMe 0000:04:00.0").
    fn describe(&self) -> String;
    /// Makes [iova, iova + len_bytes) reachable by the device.
    fn map(&self, iova: u64, len_bytes: u64) -> Result<(), String>;
    /// Undoes `map`; failures are only logged (the region is going away anyway).
    fn unmap(&self, iova: u64, len_bytes: u64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    id: u64,
    iova: u64,
    len_bytes: u64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    regions: Vec<Region>,
    mappers: Vec<(u64, Arc<dyn DmaMapper>)>,
}

/// The lists of regions and mappers. The process uses one, [`global`]; tests make their own.
#[derive(Default)]
pub struct DmaRegistry {
    inner: Mutex<Inner>,
}

impl fmt::Debug for DmaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("DmaRegistry")
            .field("regions", &inner.regions.len())
            .field("mappers", &inner.mappers.len())
            .finish()
    }
}

/// The process-wide registry.
pub fn global() -> &'static Arc<DmaRegistry> {
    static GLOBAL: OnceLock<Arc<DmaRegistry>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(DmaRegistry::default()))
}

/// A registered region; dropping it unmaps the region from every mapper.
#[must_use = "dropping the registration unmaps the region"]
pub struct RegionRegistration {
    registry: Arc<DmaRegistry>,
    id: u64,
}

/// A registered mapper; dropping it stops further maps and unmaps (the device's own teardown,
/// e.g. closing the container, removes its mappings).
#[must_use = "dropping the registration removes the mapper"]
pub struct MapperRegistration {
    registry: Arc<DmaRegistry>,
    id: u64,
}

impl fmt::Debug for RegionRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RegionRegistration").field(&self.id).finish()
    }
}

impl fmt::Debug for MapperRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MapperRegistration").field(&self.id).finish()
    }
}

impl DmaRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a mapper leaves the lists consistent (they change after the calls).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a region and maps it into every mapper; on failure nothing stays mapped.
    pub fn register_region(
        self: &Arc<Self>,
        iova: u64,
        len_bytes: u64,
    ) -> Result<RegionRegistration, DmaError> {
        let mut inner = self.lock();
        for (done, (_, mapper)) in inner.mappers.iter().enumerate() {
            if let Err(reason) = mapper.map(iova, len_bytes) {
                for (_, m) in &inner.mappers[..done] {
                    m.unmap(iova, len_bytes);
                }
                return Err(DmaError::DeviceMapping {
                    device: mapper.describe(),
                    iova,
                    size: ByteSize(len_bytes),
                    reason,
                });
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.regions.push(Region {
            id,
            iova,
            len_bytes,
        });
        Ok(RegionRegistration {
            registry: Arc::clone(self),
            id,
        })
    }

    /// Adds a mapper and maps every registered region into it; on failure nothing stays
    /// mapped and the mapper is not added.
    pub fn add_mapper(
        self: &Arc<Self>,
        mapper: Arc<dyn DmaMapper>,
    ) -> Result<MapperRegistration, DmaError> {
        let mut inner = self.lock();
        for (done, r) in inner.regions.iter().enumerate() {
            if let Err(reason) = mapper.map(r.iova, r.len_bytes) {
                for r in &inner.regions[..done] {
                    mapper.unmap(r.iova, r.len_bytes);
                }
                return Err(DmaError::DeviceMapping {
                    device: mapper.describe(),
                    iova: r.iova,
                    size: ByteSize(r.len_bytes),
                    reason,
                });
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.mappers.push((id, mapper));
        Ok(MapperRegistration {
            registry: Arc::clone(self),
            id,
        })
    }

    /// Regions registered now (for tests and status output).
    pub fn region_count(&self) -> usize {
        self.lock().regions.len()
    }
}

impl Drop for RegionRegistration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let Some(at) = inner.regions.iter().position(|r| r.id == self.id) else {
            return;
        };
        let region = inner.regions.swap_remove(at);
        for (_, mapper) in &inner.mappers {
            mapper.unmap(region.iova, region.len_bytes);
        }
    }
}

impl Drop for MapperRegistration {
    fn drop(&mut self) {
        self.registry
            .lock()
            .mappers
            .retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it maps; refuses IOVAs listed in `refuse`.
    #[derive(Default)]
    struct FakeMapper {
        mapped: Mutex<Vec<(u64, u64)>>,
        refuse: Vec<u64>,
    }

    impl DmaMapper for FakeMapper {
        fn describe(&self) -> String {
            "fake device".into()
        }
        fn map(&self, iova: u64, len_bytes: u64) -> Result<(), String> {
            if self.refuse.contains(&iova) {
                return Err("refused".into());
            }
            self.mapped.lock().unwrap().push((iova, len_bytes));
            Ok(())
        }
        fn unmap(&self, iova: u64, len_bytes: u64) {
            let mut mapped = self.mapped.lock().unwrap();
            let at = mapped
                .iter()
                .position(|m| *m == (iova, len_bytes))
                .expect("unmap of a region that is not mapped");
            mapped.swap_remove(at);
        }
    }

    impl FakeMapper {
        fn mapped(&self) -> Vec<(u64, u64)> {
            let mut m = self.mapped.lock().unwrap().clone();
            m.sort();
            m
        }
    }

    #[test]
    fn regions_and_mappers_meet_whichever_comes_first() {
        let registry = Arc::new(DmaRegistry::default());
        let early = registry.register_region(0x1000, 4096).unwrap();
        let device = Arc::new(FakeMapper::default());
        let _mapper = registry.add_mapper(device.clone()).unwrap();
        assert_eq!(device.mapped(), vec![(0x1000, 4096)]);
        let late = registry.register_region(0x8000, 8192).unwrap();
        assert_eq!(device.mapped(), vec![(0x1000, 4096), (0x8000, 8192)]);
        drop(early);
        assert_eq!(device.mapped(), vec![(0x8000, 8192)]);
        drop(late);
        assert!(device.mapped().is_empty());
        assert_eq!(registry.region_count(), 0);
    }

    #[test]
    fn a_removed_mapper_hears_no_more() {
        let registry = Arc::new(DmaRegistry::default());
        let device = Arc::new(FakeMapper::default());
        let mapper = registry.add_mapper(device.clone()).unwrap();
        drop(mapper);
        let _r = registry.register_region(0x1000, 4096).unwrap();
        assert!(device.mapped().is_empty());
    }

    #[test]
    fn failures_leave_nothing_mapped_and_name_the_device() {
        let registry = Arc::new(DmaRegistry::default());
        let good = Arc::new(FakeMapper::default());
        let _g = registry.add_mapper(good.clone()).unwrap();
        let picky = Arc::new(FakeMapper {
            refuse: vec![0x5000],
            ..FakeMapper::default()
        });
        let _p = registry.add_mapper(picky.clone()).unwrap();
        let err = registry.register_region(0x5000, 4096).unwrap_err();
        assert!(good.mapped().is_empty(), "the first mapper is rolled back");
        assert_eq!(registry.region_count(), 0);
        let text = err.to_string();
        assert!(
            text.contains("fake device") && text.contains("refused"),
            "{text}"
        );

        // A new mapper that refuses one of the existing regions is rolled back too.
        let _a = registry.register_region(0x1000, 4096).unwrap();
        let _b = registry.register_region(0x5000 + 4096, 4096).unwrap();
        let refuses_b = Arc::new(FakeMapper {
            refuse: vec![0x6000],
            ..FakeMapper::default()
        });
        assert!(registry.add_mapper(refuses_b.clone()).is_err());
        assert!(refuses_b.mapped().is_empty());
    }
}
