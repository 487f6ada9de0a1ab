//! Concurrent per-segment page sets.
//!
//! Normally these wrap [`dashmap`] maps with a small number of shards (a
//! segment's sets are touched by the writers of that one segment, not by
//! every thread, so a few shards suffice and keep memory low).
//! [`PageMap::link`], the hot path of `mark_link`, uses dashmap's raw shard
//! API (its `raw-api` feature) with dashmap's own hash and shard choice. dashmap's
//! shard locks are invisible to loom, so under `--cfg loom` the same
//! contract is met by a loom-visible stand-in with two locked shards:
//! whole-set reads (`len`, iteration) then really are non-atomic across
//! shards, as they are with dashmap.

use crate::types::PageId;

#[cfg(not(loom))]
type Hasher = rustc_hash::FxBuildHasher;

#[cfg(not(loom))]
const SHARDS: usize = 4;

/// A small concurrent set of segment numbers (the lsns in use), stored as
/// a map to 0.
#[derive(Debug)]
pub(crate) struct LsnSet {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<PageId, u64, Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded<u64>,
}

/// A segment's pages: page id → bytes of its fragments here, with a flag
/// for "not yet replaced" (no `mark_replace` called for it yet). One map
/// for both spec sets keeps `mark_link` to a single insert and makes
/// `not_yet_replaced ⊆ present` hold by construction.
#[derive(Debug)]
pub(crate) struct PageMap {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<PageId, u64, Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded<u64>,
}

/// The "not yet replaced" flag in a [`PageMap`] value; the low bits are
/// bytes.
const NYR: u64 = 1 << 63;

/// Runs `f` out of line: keeps the insert path of [`PageMap::link`] (a
/// second probe for a free slot, sometimes a resize) and its register
/// pressure out of the hit path that `mark_link` inlines.
#[cfg(not(loom))]
#[inline(never)]
fn outlined<R>(f: impl FnOnce() -> R) -> R {
    f()
}

impl PageMap {
    pub(crate) fn new() -> Self {
        PageMap {
            #[cfg(not(loom))]
            inner: dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                Hasher::default(),
                SHARDS,
            ),
            #[cfg(loom)]
            inner: stand_in::Sharded::new(),
        }
    }

    /// Adds `bytes` to `pid` and flags it not yet replaced; returns whether
    /// the page is new here.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn link(&self, pid: PageId, bytes: u64) -> bool {
        use std::hash::BuildHasher;
        // The hot path of `mark_link`, through dashmap's raw shard API:
        // unlike `entry` (an out-of-line call returning the entry through
        // memory) all of it inlines. The key is hashed and its shard chosen
        // exactly as dashmap's own methods do (`hash_one` is dashmap's hash,
        // `determine_shard` its shard choice), so every other method finds
        // what this one inserts; the shard's write lock is held for the
        // whole update, as with `entry`.
        let hash = self.inner.hasher().hash_one(pid);
        let shard = &self.inner.shards()[self.inner.determine_shard(hash as usize)];
        let mut table = shard.write();
        if let Some((_, v)) = table.get_mut(hash, |&(k, _)| k == pid) {
            let v = v.get_mut();
            *v = (*v + bytes) | NYR;
            return false;
        }
        let hasher = self.inner.hasher();
        outlined(|| {
            table.insert(
                hash,
                (pid, dashmap::SharedValue::new(bytes | NYR)),
                |&(k, _)| hasher.hash_one(k),
            )
        });
        true
    }

    /// Adds `bytes` to `pid` and flags it not yet replaced; returns whether
    /// the page is new here.
    #[cfg(loom)]
    pub(crate) fn link(&self, pid: PageId, bytes: u64) -> bool {
        let mut new = false;
        self.update(pid, |v| match v {
            Some(v) => (v + bytes) | NYR,
            None => {
                new = true;
                bytes | NYR
            }
        });
        new
    }

    /// Undoes a link of `bytes` (a page that was new here is removed).
    pub(crate) fn unlink(&self, pid: PageId, bytes: u64, was_new: bool) {
        if was_new {
            self.remove(pid);
        } else {
            self.update(pid, |v| v.map_or(0, |v| v - bytes));
        }
    }

    /// `mark_replace` was called for `pid`: `clean` no longer suggests it.
    pub(crate) fn mark_replaced(&self, pid: PageId) {
        #[cfg(not(loom))]
        if let Some(mut v) = self.inner.get_mut(&pid) {
            *v &= !NYR;
        }
        #[cfg(loom)]
        if let Some(v) = self.inner.shard(pid).get_mut(&pid) {
            *v &= !NYR;
        }
    }

    /// Removes `pid`; returns its bytes.
    pub(crate) fn remove(&self, pid: PageId) -> Option<u64> {
        #[cfg(not(loom))]
        let v = self.inner.remove(&pid).map(|(_, v)| v);
        #[cfg(loom)]
        let v = self.inner.shard(pid).remove(&pid);
        v.map(|v| v & !NYR)
    }

    #[cfg(not(loom))]
    fn update(&self, pid: PageId, f: impl FnOnce(Option<u64>) -> u64) {
        match self.inner.entry(pid) {
            dashmap::Entry::Occupied(mut e) => {
                let v = f(Some(*e.get()));
                *e.get_mut() = v;
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(f(None));
            }
        }
    }

    #[cfg(loom)]
    fn update(&self, pid: PageId, f: impl FnOnce(Option<u64>) -> u64) {
        let mut shard = self.inner.shard(pid);
        let v = f(shard.get(&pid).copied());
        shard.insert(pid, v);
    }

    /// Whether `pid` is here and not yet replaced.
    pub(crate) fn is_not_yet_replaced(&self, pid: PageId) -> bool {
        #[cfg(not(loom))]
        let v = self.inner.get(&pid).map(|v| *v);
        #[cfg(loom)]
        let v = self.inner.shard(pid).get(&pid).copied();
        v.is_some_and(|v| v & NYR != 0)
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn clear(&self) {
        self.inner.clear()
    }

    fn raw_entries(&self) -> Vec<(PageId, u64)> {
        #[cfg(not(loom))]
        {
            self.inner.iter().map(|e| (*e.key(), *e.value())).collect()
        }
        #[cfg(loom)]
        {
            self.inner.entries()
        }
    }

    /// `(pid, bytes)` of every page here (not an atomic snapshot).
    pub(crate) fn entries(&self) -> Vec<(PageId, u64)> {
        self.raw_entries()
            .into_iter()
            .map(|(p, v)| (p, v & !NYR))
            .collect()
    }

    /// The pages not yet replaced (not an atomic snapshot).
    pub(crate) fn not_yet_replaced(&self) -> Vec<PageId> {
        self.raw_entries()
            .into_iter()
            .filter(|&(_, v)| v & NYR != 0)
            .map(|(p, _)| p)
            .collect()
    }

    /// The bytes of the pages not yet replaced here (not an atomic
    /// snapshot): what draining this segment still has to relocate.
    pub(crate) fn not_yet_replaced_bytes(&self) -> u64 {
        self.raw_entries()
            .iter()
            .filter(|&&(_, v)| v & NYR != 0)
            .map(|&(_, v)| v & !NYR)
            .sum()
    }

    /// The bytes of every page here (not an atomic snapshot).
    pub(crate) fn bytes(&self) -> u64 {
        self.raw_entries().iter().map(|&(_, v)| v & !NYR).sum()
    }
}

#[cfg(not(loom))]
impl LsnSet {
    pub(crate) fn new() -> Self {
        LsnSet {
            inner: dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                Hasher::default(),
                SHARDS,
            ),
        }
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

    pub(crate) fn remove(&self, key: u64) -> Option<u64> {
        self.inner.remove(&key).map(|(_, b)| b)
    }

    /// The entries, in no particular order (not an atomic snapshot).
    pub(crate) fn entries(&self) -> Vec<(u64, u64)> {
        self.inner.iter().map(|e| (*e.key(), *e.value())).collect()
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
impl LsnSet {
    pub(crate) fn new() -> Self {
        LsnSet {
            inner: stand_in::Sharded::new(),
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
    pub(crate) fn remove(&self, key: u64) -> Option<u64> {
        self.inner.shard(key).remove(&key)
    }
    pub(crate) fn entries(&self) -> Vec<(u64, u64)> {
        self.inner.entries()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `link` writes the shards directly; every dashmap method must find
    /// what it wrote, across resizes (the insert path) and updates.
    #[test]
    fn link_is_seen_by_the_map_methods() {
        let map = PageMap::new();
        for pid in 0..3000 {
            assert!(map.link(pid, 10));
        }
        for pid in (0..3000).step_by(3) {
            assert!(!map.link(pid, 5));
        }
        assert_eq!(map.len(), 3000);
        assert_eq!(map.bytes(), 3000 * 10 + 1000 * 5);
        assert!(map.is_not_yet_replaced(2999));
        map.mark_replaced(2999);
        assert!(!map.is_not_yet_replaced(2999));
        assert_eq!(map.not_yet_replaced().len(), 2999);
        assert_eq!(map.remove(3), Some(15));
        assert_eq!(map.remove(4), Some(10));
        assert_eq!(map.remove(4), None);
        // A removed page is new again; an undone link restores the bytes.
        assert!(map.link(4, 7));
        assert!(!map.link(6, 7));
        map.unlink(6, 7, false);
        assert_eq!(map.remove(6), Some(15));
        map.unlink(4, 7, true);
        assert_eq!(map.remove(4), None);
        assert_eq!(map.len(), 2997);
    }
}
