//! The bdevs the target has, in creation order, each with what created it: the part of the
//! model `save_config` writes back as `bdev_*_create` calls.

use std::sync::Arc;

use bdev::Bdev;

/// How a bdev was made, with what it takes to make it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BdevOrigin {
    Malloc {
        num_blocks: u64,
        block_size: u32,
        numa_node: Option<u32>,
    },
    Null {
        num_blocks: u64,
        block_size: u32,
    },
    /// A namespace of the NVMe controller `controller` at PCI address `traddr`.
    Nvme {
        controller: String,
        traddr: String,
    },
}

impl BdevOrigin {
    /// SPDK's module name (`bdev_get_bdevs` `driver_specific`, and errors).
    pub fn module(&self) -> &'static str {
        match self {
            BdevOrigin::Malloc { .. } => "malloc",
            BdevOrigin::Null { .. } => "null",
            BdevOrigin::Nvme { .. } => "nvme",
        }
    }
}

#[derive(Clone)]
pub struct BdevEntry {
    pub bdev: Arc<dyn Bdev>,
    pub origin: BdevOrigin,
}

impl BdevEntry {
    pub fn name(&self) -> &str {
        &self.bdev.info().name
    }
}

impl std::fmt::Debug for BdevEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevEntry")
            .field("name", &self.name())
            .field("origin", &self.origin)
            .finish()
    }
}

/// Bdevs by name, in creation order.
#[derive(Clone, Debug, Default)]
pub struct BdevRegistry {
    entries: Vec<BdevEntry>,
}

impl BdevRegistry {
    /// Adds a bdev; refuses a second bdev of the same name.
    pub fn insert(&mut self, bdev: Arc<dyn Bdev>, origin: BdevOrigin) -> Result<(), String> {
        let name = &bdev.info().name;
        if self.get(name).is_some() {
            return Err(format!("a bdev named {name:?} already exists"));
        }
        self.entries.push(BdevEntry { bdev, origin });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&BdevEntry> {
        self.entries.iter().find(|e| e.name() == name)
    }

    pub fn remove(&mut self, name: &str) -> Option<BdevEntry> {
        let i = self.entries.iter().position(|e| e.name() == name)?;
        Some(self.entries.remove(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &BdevEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_order_is_kept() {
        let mut r = BdevRegistry::default();
        let null = |name| bdev::create_null(name, 8, 512).unwrap() as Arc<dyn Bdev>;
        let origin = BdevOrigin::Null {
            num_blocks: 8,
            block_size: 512,
        };
        r.insert(null("b"), origin.clone()).unwrap();
        r.insert(null("a"), origin.clone()).unwrap();
        assert!(r.insert(null("a"), origin).unwrap_err().contains("\"a\""));
        let names: Vec<&str> = r.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(r.remove("b").is_some());
        assert!(r.remove("b").is_none());
        assert_eq!(r.len(), 1);
    }
}
