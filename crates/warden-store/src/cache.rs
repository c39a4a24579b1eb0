//! A cache of values read from the store, safe against the race with writes: a reader that
//! missed reads the generation before going to the database and keeps what it read only if no
//! write was forgotten meanwhile, so a value from before a write is never cached after it.
//! Writers forget their keys once they have committed. Bounded by entry count: when full, it
//! starts over (the values are cheap to read again; no eviction bookkeeping on the hot path).
//! Used by [`crate::Store::get_cached`] (sealed values) and by the vault's token store
//! (decoded token records).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Values by key, with the generation guard described above.
pub struct ReadCache<V> {
    map: RwLock<HashMap<String, V>>,
    generation: AtomicU64,
    max_entries: usize,
}

impl<V: Clone> ReadCache<V> {
    /// An empty cache holding at most `max_entries` values.
    pub fn new(max_entries: usize) -> ReadCache<V> {
        ReadCache {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            max_entries,
        }
    }

    /// The value kept for `key`, if any.
    pub fn get(&self, key: &str) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Read before going to the database; passed back to [`ReadCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `value` for `key` unless a write was forgotten since `generation` was read.
    pub fn insert(&self, generation: u64, key: &str, value: V) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        if map.len() >= self.max_entries {
            map.clear();
        }
        map.insert(key.to_owned(), value);
    }

    /// Forgets `keys` (after a write to them committed, or may have).
    pub fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        for k in keys {
            map.remove(k);
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let c = ReadCache::new(10);
        let g = c.generation();
        c.forget(["k"]); // a write to k committed while the reader was at the database
        c.insert(g, "k", 1);
        assert_eq!(c.get("k"), None);
        let g = c.generation();
        c.insert(g, "k", 2);
        assert_eq!(c.get("k"), Some(2));
        c.forget(["k"]);
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let c = ReadCache::new(2);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            let g = c.generation();
            c.insert(g, k, i);
        }
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("c"), Some(2));
        c.clear();
        assert_eq!(c.get("c"), None);
    }
}
