//! Concurrent per-segment page sets.
//!
//! Normally these wrap [`dashmap`] maps with a small number of shards (a
//! segment's sets are touched by the writers of that one segment, not by
//! every thread, so a few shards suffice and keep memory low). dashmap's
//! shard locks are invisible to loom, so under `--cfg loom` the same
//! contract is met by a loom-visible stand-in with two locked shards:
//! whole-set reads (`len`, iteration) then really are non-atomic across
//! shards, as they are with dashmap.

use crate::types::PageId;

#[cfg(not(loom))]
type Hasher = rustc_hash::FxBuildHasher;

#[cfg(not(loom))]
const SHARDS: usize = 4;

/// A concurrent map from page id to the bytes of its fragments.
#[derive(Debug)]
pub(crate) struct PidMap {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<PageId, u64, Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded<u64>,
}

/// A concurrent set of page ids.
#[derive(Debug)]
pub(crate) struct PidSet {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<PageId, (), Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded<()>,
}

#[cfg(not(loom))]
impl PidMap {
    pub(crate) fn new() -> Self {
        PidMap {
            inner: dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                Hasher::default(),
                SHARDS,
            ),
        }
    }

    /// Adds `bytes` to `pid`'s entry; returns whether the entry is new.
    pub(crate) fn add(&self, pid: PageId, bytes: u64) -> bool {
        let mut new = false;
        self.inner
            .entry(pid)
            .and_modify(|b| *b += bytes)
            .or_insert_with(|| {
                new = true;
                bytes
            });
        new
    }

    /// Inserts `key` with value 0 unless present; returns whether it was
    /// inserted.
    pub(crate) fn insert_new(&self, key: u64) -> bool {
        match self.inner.entry(key) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(0);
                true
            }
        }
    }

    /// Subtracts `bytes` from an existing entry.
    pub(crate) fn sub(&self, pid: PageId, bytes: u64) {
        if let Some(mut b) = self.inner.get_mut(&pid) {
            *b -= bytes;
        }
    }

    pub(crate) fn remove(&self, pid: PageId) -> Option<u64> {
        self.inner.remove(&pid).map(|(_, b)| b)
    }

    pub(crate) fn get(&self, pid: PageId) -> Option<u64> {
        self.inner.get(&pid).map(|b| *b)
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub(crate) fn clear(&self) {
        self.inner.clear()
    }

    /// The entries, in no particular order (not an atomic snapshot).
    pub(crate) fn entries(&self) -> Vec<(PageId, u64)> {
        self.inner.iter().map(|e| (*e.key(), *e.value())).collect()
    }
}

#[cfg(not(loom))]
impl PidSet {
    pub(crate) fn new() -> Self {
        PidSet {
            inner: dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                Hasher::default(),
                SHARDS,
            ),
        }
    }

    pub(crate) fn insert(&self, pid: PageId) {
        self.inner.insert(pid, ());
    }

    pub(crate) fn remove(&self, pid: PageId) -> bool {
        self.inner.remove(&pid).is_some()
    }

    pub(crate) fn contains(&self, pid: PageId) -> bool {
        self.inner.contains_key(&pid)
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    pub(crate) fn clear(&self) {
        self.inner.clear()
    }

    /// Some member, chosen by `k` (round robin when `k` counts up), if the
    /// set is not empty.
    pub(crate) fn pick(&self, k: usize) -> Option<PageId> {
        // Start at shard `k` and take the first member of the first
        // non-empty shard: O(1) per shard instead of a walk of the set.
        let shards = self.inner.shards();
        (0..shards.len()).find_map(|i| {
            let shard = shards[(k + i) % shards.len()].read();
            // Safety: dashmap's raw shard API; the read guard keeps the
            // table alive and unmodified while we copy one key out.
            unsafe { shard.iter().next().map(|bucket| bucket.as_ref().0) }
        })
    }

    pub(crate) fn members(&self) -> Vec<PageId> {
        self.inner.iter().map(|e| *e.key()).collect()
    }
}

#[cfg(loom)]
mod stand_in {
    use crate::sync::{lock, Mutex};
    use crate::types::PageId;
    use std::collections::HashMap;

    /// Two locked shards, chosen by the pid's low bit.
    #[derive(Debug)]
    pub(crate) struct Sharded<V> {
        pub(crate) shards: [Mutex<HashMap<PageId, V>>; 2],
    }

    impl<V: Copy> Sharded<V> {
        pub(crate) fn new() -> Self {
            Sharded {
                shards: [Mutex::new(HashMap::new()), Mutex::new(HashMap::new())],
            }
        }

        pub(crate) fn shard(&self, pid: PageId) -> crate::sync::MutexGuard<'_, HashMap<PageId, V>> {
            lock(&self.shards[(pid & 1) as usize])
        }

        pub(crate) fn len(&self) -> usize {
            self.shards.iter().map(|s| lock(s).len()).sum()
        }

        pub(crate) fn entries(&self) -> Vec<(PageId, V)> {
            let mut out = Vec::new();
            for s in &self.shards {
                out.extend(lock(s).iter().map(|(k, v)| (*k, *v)));
            }
            out
        }

        pub(crate) fn clear(&self) {
            for s in &self.shards {
                lock(s).clear();
            }
        }
    }
}

#[cfg(loom)]
impl PidMap {
    pub(crate) fn new() -> Self {
        PidMap {
            inner: stand_in::Sharded::new(),
        }
    }
    pub(crate) fn add(&self, pid: PageId, bytes: u64) -> bool {
        let mut shard = self.inner.shard(pid);
        match shard.get_mut(&pid) {
            Some(b) => {
                *b += bytes;
                false
            }
            None => {
                shard.insert(pid, bytes);
                true
            }
        }
    }
    pub(crate) fn insert_new(&self, key: u64) -> bool {
        match self.inner.shard(key).entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(0);
                true
            }
        }
    }
    pub(crate) fn sub(&self, pid: PageId, bytes: u64) {
        if let Some(b) = self.inner.shard(pid).get_mut(&pid) {
            *b -= bytes;
        }
    }
    pub(crate) fn remove(&self, pid: PageId) -> Option<u64> {
        self.inner.shard(pid).remove(&pid)
    }
    pub(crate) fn get(&self, pid: PageId) -> Option<u64> {
        self.inner.shard(pid).get(&pid).copied()
    }
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
    pub(crate) fn clear(&self) {
        self.inner.clear()
    }
    pub(crate) fn entries(&self) -> Vec<(PageId, u64)> {
        self.inner.entries()
    }
}

#[cfg(loom)]
impl PidSet {
    pub(crate) fn new() -> Self {
        PidSet {
            inner: stand_in::Sharded::new(),
        }
    }
    pub(crate) fn insert(&self, pid: PageId) {
        self.inner.shard(pid).insert(pid, ());
    }
    pub(crate) fn remove(&self, pid: PageId) -> bool {
        self.inner.shard(pid).remove(&pid).is_some()
    }
    pub(crate) fn contains(&self, pid: PageId) -> bool {
        self.inner.shard(pid).contains_key(&pid)
    }
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
    pub(crate) fn clear(&self) {
        self.inner.clear()
    }
    pub(crate) fn pick(&self, k: usize) -> Option<PageId> {
        let members = self.members();
        if members.is_empty() {
            None
        } else {
            Some(members[k % members.len()])
        }
    }
    pub(crate) fn members(&self) -> Vec<PageId> {
        self.inner.entries().into_iter().map(|(k, ())| k).collect()
    }
}
