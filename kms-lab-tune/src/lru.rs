//! A true LRU cache of keys, as `k8s.io/utils/lru` is for the apiserver's KMS v1 DEK cache.

use std::collections::{BTreeMap, HashMap};

/// An LRU set of `u64` keys with a fixed capacity (0 or less: disabled, every lookup misses).
#[derive(Debug, Clone, Default)]
pub struct Lru {
    capacity: usize,
    clock: u64,
    stamps: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
}

impl Lru {
    /// A cache for `capacity` entries (negative or zero: no cache).
    pub fn new(capacity: i64) -> Self {
        Self { capacity: capacity.max(0) as usize, ..Self::default() }
    }

    /// Looks `key` up; a hit makes it the most recently used.
    pub fn get(&mut self, key: u64) -> bool {
        let Some(stamp) = self.stamps.get(&key).copied() else { return false };
        self.order.remove(&stamp);
        self.touch(key);
        true
    }

    /// Inserts `key` (or refreshes it), evicting the least recently used entry when full.
    pub fn add(&mut self, key: u64) {
        if self.capacity == 0 {
            return;
        }
        if let Some(stamp) = self.stamps.get(&key).copied() {
            self.order.remove(&stamp);
        } else if self.stamps.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.stamps.remove(&oldest);
        }
        self.touch(key);
    }

    fn touch(&mut self, key: u64) {
        self.clock += 1;
        self.stamps.insert(key, self.clock);
        self.order.insert(self.clock, key);
    }

    /// Empties the cache (an apiserver restart).
    pub fn clear(&mut self) {
        self.stamps.clear();
        self.order.clear();
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}
