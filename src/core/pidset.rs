//! Concurrent per-segment page sets.
//!
//! Normally these wrap [`dashmap`] maps with a small number of shards (a
//! segment's sets are touched by the writers of that one segment, not by
//! every thread, so a few shards suffice and keep memory low). dashmap's
//! shard locks are invisible to loom, so under `--cfg loom` a loom-visible
//! stand-in takes their place: two shards, each a loom `RwLock` over a
//! `HashMap`, taking read locks where dashmap takes read locks and write
//! locks where it takes write locks. Whole-set reads (`len`, iteration)
//! are then really non-atomic across shards, as they are with dashmap.
//!
//! The write path is written once, generic over the shard's lock and
//! table ([`Shard`]): dashmap's shards (through its raw shard API, with
//! dashmap's own hash and shard choice, so every other dashmap method
//! finds what the write path inserts) and the loom stand-in's run the same
//! [`PageMap::link_if`], so the models check the code that ships.
//!
//! The seal protocol (see the [`crate::segment`] docs): a writer checks
//! the segment word *under the shard lock it then mutates under*
//! ([`PageMap::link_if`]); the sealing combiner, after moving the word to
//! Sealing, takes and releases every shard lock once
//! ([`PageMap::barrier`]). A link either finishes before the barrier
//! reaches its shard, and the seal counts it, or takes the lock after the
//! barrier did, and then sees the word moved and changes nothing.

use crate::types::PageId;

/// The "not yet replaced" flag in a [`PageMap`] value; the low bits are
/// bytes.
const NYR: u64 = 1 << 63;

/// One shard: a lock over a table of packed values. The write path is
/// generic over it.
trait Shard {
    /// The write-locked table.
    type Locked<'a>: ShardTable
    where
        Self: 'a;
    /// Takes the shard's write lock for updating `pid` (whose hash is
    /// `hash`).
    fn write(&self, hash: u64) -> Self::Locked<'_>;
}

/// A write-locked shard's table, as the write path sees it.
trait ShardTable {
    /// The packed value of the key the lock was taken for, if present.
    fn value_mut(&mut self, pid: PageId) -> Option<&mut u64>;
    /// Inserts that key, known to be absent.
    fn insert_absent(&mut self, pid: PageId, value: u64);
}

/// Takes `shard`'s write lock, checks `open` under it, and only then adds
/// `bytes` to `pid` (flagging it not yet replaced). `open`'s refusal if it
/// refused; otherwise whether the page is new here. The one write path of
/// both builds.
///
/// The probe for `pid` runs before `open`: both only read, under the lock,
/// so the order changes nothing a writer or the seal can see, and this way
/// the probe's loads and `open`'s load of the segment word issue together
/// right after the lock is taken instead of one after the other
/// (docs/performance.md, `mark_link` against its floor).
#[inline(always)]
fn link_in<S: Shard, E>(
    shard: &S,
    hash: u64,
    pid: PageId,
    bytes: u64,
    open: impl FnOnce() -> Result<(), E>,
) -> Result<bool, E> {
    let mut table = shard.write(hash);
    let slot = table.value_mut(pid);
    open()?;
    match slot {
        Some(v) => {
            *v = (*v + bytes) | NYR;
            Ok(false)
        }
        None => {
            table.insert_absent(pid, bytes | NYR);
            Ok(true)
        }
    }
}

/// A small concurrent set of segment numbers (the lsns in use).
#[derive(Debug)]
pub(crate) struct LsnSet {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<u64, u64, dash::Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded,
}

/// A segment's pages: page id → bytes of its fragments here, with a flag
/// for "not yet replaced" (no `mark_replace` called for it yet). One map
/// for both spec sets keeps `mark_link` to a single insert and makes
/// `not_yet_replaced ⊆ present` hold by construction.
#[derive(Debug)]
pub(crate) struct PageMap {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<PageId, u64, dash::Hasher>,
    #[cfg(loom)]
    inner: stand_in::Sharded,
}

#[cfg(not(loom))]
mod dash {
    use super::{Shard, ShardTable};
    use crate::types::PageId;
    use dashmap::SharedValue;

    pub(super) type Hasher = rustc_hash::FxBuildHasher;

    /// Shards per map.
    pub(super) const SHARDS: usize = 4;

    type Table = hashbrown::raw::RawTable<(u64, SharedValue<u64>)>;
    type Lock = dashmap::RwLock<Table>;

    /// Folds `f` over every `(key, value)` of `map`, one shard read-locked
    /// at a time (not an atomic snapshot). Over the raw shards, not
    /// `DashMap::iter`: that clones an `Arc` of the shard's guard for every
    /// entry, which made the seal's sum of a segment's bytes (once per
    /// segment) a quarter of the write cycle's time (docs/performance.md,
    /// "The seal's sum").
    pub(super) fn fold<B>(
        map: &dashmap::DashMap<u64, u64, Hasher>,
        init: B,
        mut f: impl FnMut(B, u64, u64) -> B,
    ) -> B {
        map.shards().iter().fold(init, |acc, shard| {
            let table = shard.read();
            // Safety: the buckets are the table's, read-locked by `table`
            // for as long as they are read here.
            unsafe { table.iter() }.fold(acc, |acc, bucket| {
                // Safety: as above; a raw iterator yields full buckets only.
                let (key, v) = unsafe { bucket.as_ref() };
                f(acc, *key, *v.get())
            })
        })
    }

    /// A dashmap shard, with the map's hasher (for rehashing on insert).
    pub(super) struct DashShard<'a> {
        pub(super) lock: &'a Lock,
        pub(super) hasher: &'a Hasher,
    }

    pub(super) struct Locked<'a> {
        table: dashmap::RwLockWriteGuard<'a, Table>,
        hash: u64,
        hasher: &'a Hasher,
    }

    impl<'s> Shard for DashShard<'s> {
        type Locked<'a>
            = Locked<'a>
        where
            Self: 'a;

        #[inline(always)]
        fn write(&self, hash: u64) -> Locked<'_> {
            Locked {
                table: self.lock.write(),
                hash,
                hasher: self.hasher,
            }
        }
    }

    impl ShardTable for Locked<'_> {
        #[inline(always)]
        fn value_mut(&mut self, pid: PageId) -> Option<&mut u64> {
            self.table
                .get_mut(self.hash, |&(k, _)| k == pid)
                .map(|(_, v)| v.get_mut())
        }

        fn insert_absent(&mut self, pid: PageId, value: u64) {
            use std::hash::BuildHasher;
            let hasher = self.hasher;
            let hash = self.hash;
            let table = &mut self.table;
            super::outlined(|| {
                table.insert(hash, (pid, SharedValue::new(value)), |&(k, _)| {
                    hasher.hash_one(k)
                })
            });
        }
    }

    /// The sharing audit: notes the lock taken on `key`'s shard (`Some`),
    /// or on every shard; a read lock writes its lock word too.
    #[cfg(sharing_audit)]
    pub(super) fn audit<V>(map: &dashmap::DashMap<u64, V, Hasher>, key: Option<u64>) {
        use std::hash::BuildHasher;
        let shards = map.shards();
        match key {
            Some(k) => {
                let hash = map.hasher().hash_one(k);
                crate::core::sharing::wrote(&shards[map.determine_shard(hash as usize)]);
            }
            None => shards.iter().for_each(|s| crate::core::sharing::wrote(s)),
        }
    }

    /// The sharing audit: the address range of the shards (their locks).
    #[cfg(sharing_audit)]
    pub(super) fn audit_range<V>(map: &dashmap::DashMap<u64, V, Hasher>) -> (usize, usize) {
        let shards = map.shards();
        (shards.as_ptr() as usize, std::mem::size_of_val(shards))
    }

    pub(super) fn new<V>() -> dashmap::DashMap<u64, V, Hasher> {
        dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(0, Hasher::default(), SHARDS)
    }
}

/// Runs `f` out of line: keeps the insert path of [`PageMap::link_if`] (a
/// second probe for a free slot, sometimes a resize) and its register
/// pressure out of the hit path that `mark_link` inlines.
#[cfg(not(loom))]
#[inline(never)]
fn outlined<R>(f: impl FnOnce() -> R) -> R {
    f()
}

impl PageMap {
    /// The sharing audit: the address range of the shards (their locks).
    #[cfg(all(sharing_audit, not(loom)))]
    // Used by the audit's test only.
    #[allow(dead_code)]
    pub(crate) fn audit_range(&self) -> (usize, usize) {
        dash::audit_range(&self.inner)
    }
}

impl PageMap {
    /// The sharing audit: notes the lock taken on `key`'s shard (`Some`),
    /// or on every shard; a read lock writes its lock word too.
    #[inline(always)]
    fn audit(&self, key: Option<u64>) {
        #[cfg(all(sharing_audit, not(loom)))]
        dash::audit(&self.inner, key);
        let _ = key;
    }

    pub(crate) fn new() -> Self {
        PageMap {
            #[cfg(not(loom))]
            inner: dash::new(),
            #[cfg(loom)]
            inner: stand_in::Sharded::new(),
        }
    }

    /// Under the write lock of `pid`'s shard: if `open()` is `Ok`, adds
    /// `bytes` to `pid` and flags it not yet replaced, returning whether
    /// the page is new here; otherwise changes nothing and returns
    /// `open`'s error.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn link_if<E>(
        &self,
        pid: PageId,
        bytes: u64,
        open: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        use std::hash::BuildHasher;
        self.audit(Some(pid));
        // The key is hashed and its shard chosen exactly as dashmap's own
        // methods do (`hash_one` is dashmap's hash, `determine_shard` its
        // shard choice), so every other method finds what this inserts.
        let hash = self.inner.hasher().hash_one(pid);
        let shard = dash::DashShard {
            lock: &self.inner.shards()[self.inner.determine_shard(hash as usize)],
            hasher: self.inner.hasher(),
        };
        link_in(&shard, hash, pid, bytes, open)
    }

    /// Under the write lock of `pid`'s shard: if `open()` is `Ok`, adds
    /// `bytes` to `pid` and flags it not yet replaced, returning whether
    /// the page is new here; otherwise changes nothing and returns
    /// `open`'s error.
    #[cfg(loom)]
    pub(crate) fn link_if<E>(
        &self,
        pid: PageId,
        bytes: u64,
        open: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        link_in(self.inner.shard_of(pid), 0, pid, bytes, open)
    }

    /// Takes and releases every shard's write lock, one at a time: every
    /// update that held one of them before has finished, and every later
    /// one happens after (the seal's barrier).
    pub(crate) fn barrier(&self) {
        self.audit(None);
        #[cfg(not(loom))]
        for shard in self.inner.shards() {
            drop(shard.write());
        }
        #[cfg(loom)]
        self.inner.barrier();
    }

    /// `mark_replace` was called for `pid`: `clean` no longer suggests it.
    /// Returns whether this call cleared the flag (the page was present
    /// and not yet replaced), with its bytes here.
    pub(crate) fn mark_replaced(&self, pid: PageId) -> Option<u64> {
        self.audit(Some(pid));
        #[cfg(not(loom))]
        if let Some(mut v) = self.inner.get_mut(&pid) {
            let was = *v;
            *v &= !NYR;
            return (was & NYR != 0).then_some(was & !NYR);
        }
        #[cfg(loom)]
        if let Some(v) = self.inner.write(pid).get_mut(&pid) {
            let was = *v;
            *v &= !NYR;
            return (was & NYR != 0).then_some(was & !NYR);
        }
        None
    }

    /// Removes `pid`; returns its bytes.
    pub(crate) fn remove(&self, pid: PageId) -> Option<u64> {
        self.audit(Some(pid));
        #[cfg(not(loom))]
        let v = self.inner.remove(&pid).map(|(_, v)| v);
        #[cfg(loom)]
        let v = self.inner.write(pid).remove(&pid);
        v.map(|v| v & !NYR)
    }

    /// Removes every page of `pids`, each shard write-locked when a page
    /// of it first comes up and held to the end: at most one lock pair
    /// per shard instead of one per page. Returns the bytes removed and
    /// how many pages were here. For the combiner's applying of a run of
    /// replacements out of this segment: no other thread holds two shard
    /// locks of one map at once, so the order the locks are taken in
    /// cannot deadlock.
    pub(crate) fn remove_all(&self, pids: &[PageId]) -> (u64, u64) {
        self.audit(None);
        #[cfg(not(loom))]
        {
            use std::hash::BuildHasher;
            let shards = self.inner.shards();
            let mut locked: [Option<_>; dash::SHARDS] = Default::default();
            pids.iter().fold((0u64, 0u64), |(bytes, n), &pid| {
                let hash = self.inner.hasher().hash_one(pid);
                let shard = self.inner.determine_shard(hash as usize);
                let table = locked[shard].get_or_insert_with(|| shards[shard].write());
                match table.remove_entry(hash, |&(k, _)| k == pid) {
                    Some((_, v)) => (bytes.saturating_add(v.into_inner() & !NYR), n + 1),
                    None => (bytes, n),
                }
            })
        }
        #[cfg(loom)]
        {
            self.inner.remove_all(pids, NYR)
        }
    }

    /// `pid`'s packed value, read under its shard's read lock.
    fn value(&self, pid: PageId) -> Option<u64> {
        self.audit(Some(pid));
        #[cfg(not(loom))]
        let v = self.inner.get(&pid).map(|v| *v);
        #[cfg(loom)]
        let v = self.inner.read(pid).get(&pid).copied();
        v
    }

    /// Whether `pid` is here and not yet replaced.
    pub(crate) fn is_not_yet_replaced(&self, pid: PageId) -> bool {
        self.value(pid).is_some_and(|v| v & NYR != 0)
    }

    /// The bytes of `pid` here if it is here and not yet replaced, else 0.
    pub(crate) fn not_yet_replaced_bytes_of(&self, pid: PageId) -> u64 {
        self.value(pid)
            .filter(|v| v & NYR != 0)
            .map_or(0, |v| v & !NYR)
    }

    pub(crate) fn len(&self) -> usize {
        self.audit(None);
        self.inner.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn clear(&self) {
        self.audit(None);
        self.inner.clear()
    }

    fn raw_entries(&self) -> Vec<(PageId, u64)> {
        self.audit(None);
        #[cfg(not(loom))]
        {
            dash::fold(&self.inner, Vec::new(), |mut out, k, v| {
                out.push((k, v));
                out
            })
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

    /// Folds `f` over every `(pid, packed value)` without collecting them
    /// (one shard read-locked at a time; not an atomic snapshot).
    fn fold_raw<B>(&self, init: B, f: impl FnMut(B, PageId, u64) -> B) -> B {
        self.audit(None);
        #[cfg(not(loom))]
        {
            dash::fold(&self.inner, init, f)
        }
        #[cfg(loom)]
        {
            let mut f = f;
            self.inner
                .entries()
                .into_iter()
                .fold(init, |acc, (p, v)| f(acc, p, v))
        }
    }

    /// The bytes of the pages not yet replaced here (not an atomic
    /// snapshot): what draining this segment still has to relocate.
    pub(crate) fn not_yet_replaced_bytes(&self) -> u64 {
        self.fold_raw(0u64, |sum, _, v| {
            if v & NYR != 0 {
                sum.saturating_add(v & !NYR)
            } else {
                sum
            }
        })
    }

    /// The bytes of every page here and how many pages (not an atomic
    /// snapshot). Saturating: the combiner must not overflow even on
    /// billions of links.
    pub(crate) fn bytes_and_pages(&self) -> (u64, u64) {
        self.fold_raw((0u64, 0u64), |(sum, n), _, v| {
            (sum.saturating_add(v & !NYR), n + 1)
        })
    }

    /// The bytes of every page here (not an atomic snapshot).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes_and_pages().0
    }
}

impl LsnSet {
    /// The sharing audit: the address range of the shards (their locks).
    // Used by the audit's test only.
    #[allow(dead_code)]
    #[cfg(all(sharing_audit, not(loom)))]
    pub(crate) fn audit_range(&self) -> (usize, usize) {
        dash::audit_range(&self.inner)
    }
}

impl LsnSet {
    /// The sharing audit: notes the lock taken on `key`'s shard (`Some`),
    /// or on every shard; a read lock writes its lock word too.
    #[inline(always)]
    fn audit(&self, key: Option<u64>) {
        #[cfg(all(sharing_audit, not(loom)))]
        dash::audit(&self.inner, key);
        let _ = key;
    }

    pub(crate) fn new() -> Self {
        LsnSet {
            #[cfg(not(loom))]
            inner: dash::new(),
            #[cfg(loom)]
            inner: stand_in::Sharded::new(),
        }
    }

    /// Inserts `key` unless present; returns whether it was inserted. The
    /// shard's lock makes competing inserts of one key pick one winner.
    pub(crate) fn insert_new(&self, key: u64) -> bool {
        self.audit(Some(key));
        #[cfg(not(loom))]
        {
            match self.inner.entry(key) {
                dashmap::Entry::Occupied(_) => false,
                dashmap::Entry::Vacant(v) => {
                    v.insert(0);
                    true
                }
            }
        }
        #[cfg(loom)]
        {
            use std::collections::hash_map::Entry;
            match self.inner.write(key).entry(key) {
                Entry::Occupied(_) => false,
                Entry::Vacant(v) => {
                    v.insert(0);
                    true
                }
            }
        }
    }

    /// Reserves `key`: `None` if it is already in the set. The reservation
    /// removes it again when dropped (an error or an unwind on the way),
    /// unless [`Reservation::keep`] is called.
    pub(crate) fn reserve(&self, key: u64) -> Option<Reservation<'_>> {
        // Lazily: a `Reservation` built and dropped would remove the key.
        self.insert_new(key).then(|| Reservation { set: self, key })
    }

    pub(crate) fn remove(&self, key: u64) -> bool {
        self.audit(Some(key));
        #[cfg(not(loom))]
        let removed = self.inner.remove(&key).is_some();
        #[cfg(loom)]
        let removed = self.inner.write(key).remove(&key).is_some();
        removed
    }

    /// Records that `key` was placed in table slot `index` (the value of
    /// a key is 0 until then, `index + 1` after). Under the key's shard
    /// lock, which [`LsnSet::placed`] takes too: a reader that does not see
    /// the placement passed that lock before this call took it.
    pub(crate) fn set_placed(&self, key: u64, index: usize) {
        self.audit(Some(key));
        #[cfg(not(loom))]
        {
            if let Some(mut v) = self.inner.get_mut(&key) {
                *v = index as u64 + 1;
            }
        }
        #[cfg(loom)]
        if let Some(v) = self.inner.write(key).get_mut(&key) {
            *v = index as u64 + 1;
        }
    }

    /// `(key, slot)` of every placed key, in no particular order (not an
    /// atomic snapshot: one shard read-locked at a time).
    pub(crate) fn placed(&self) -> Vec<(u64, usize)> {
        self.audit(None);
        let placed = |(k, v): (u64, u64)| (v != 0).then(|| (k, v as usize - 1));
        #[cfg(not(loom))]
        let found = dash::fold(&self.inner, Vec::new(), |mut out, k, v| {
            out.extend(placed((k, v)));
            out
        });
        #[cfg(loom)]
        let found = self
            .inner
            .entries()
            .into_iter()
            .filter_map(placed)
            .collect();
        found
    }

    /// The keys, in no particular order (not an atomic snapshot).
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.audit(None);
        #[cfg(not(loom))]
        let keys = dash::fold(&self.inner, Vec::new(), |mut out, k, _| {
            out.push(k);
            out
        });
        #[cfg(loom)]
        let keys = self.inner.entries().into_iter().map(|(k, _)| k).collect();
        keys
    }
}

/// A key reserved in an [`LsnSet`] by [`LsnSet::reserve`].
#[must_use]
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    set: &'a LsnSet,
    key: u64,
}

impl Reservation<'_> {
    /// Keeps the key in the set for good, placed in table slot `index`
    /// (see [`LsnSet::set_placed`]).
    pub(crate) fn keep_at(self, index: usize) {
        self.set.set_placed(self.key, index);
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.remove(self.key);
    }
}

#[cfg(loom)]
mod stand_in {
    use super::{Shard, ShardTable};
    use crate::types::PageId;
    use loom::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
    use std::collections::HashMap;

    type Table = HashMap<PageId, u64>;

    /// Two read/write-locked shards, chosen by the key's low bit.
    #[derive(Debug)]
    pub(crate) struct Sharded {
        shards: [LoomShard; 2],
    }

    #[derive(Debug)]
    pub(crate) struct LoomShard(RwLock<Table>);

    pub(crate) struct Locked<'a>(RwLockWriteGuard<'a, Table>);

    impl Shard for LoomShard {
        type Locked<'a> = Locked<'a>;

        fn write(&self, _hash: u64) -> Locked<'_> {
            Locked(self.0.write().unwrap())
        }
    }

    impl ShardTable for Locked<'_> {
        fn value_mut(&mut self, pid: PageId) -> Option<&mut u64> {
            self.0.get_mut(&pid)
        }

        fn insert_absent(&mut self, pid: PageId, value: u64) {
            let old = self.0.insert(pid, value);
            debug_assert!(old.is_none());
        }
    }

    impl Sharded {
        pub(crate) fn new() -> Self {
            Sharded {
                shards: [
                    LoomShard(RwLock::new(HashMap::new())),
                    LoomShard(RwLock::new(HashMap::new())),
                ],
            }
        }

        pub(crate) fn shard_of(&self, key: u64) -> &LoomShard {
            &self.shards[(key & 1) as usize]
        }

        pub(crate) fn write(&self, key: u64) -> RwLockWriteGuard<'_, Table> {
            self.shard_of(key).0.write().unwrap()
        }

        pub(crate) fn read(&self, key: u64) -> RwLockReadGuard<'_, Table> {
            self.shard_of(key).0.read().unwrap()
        }

        pub(crate) fn barrier(&self) {
            for s in &self.shards {
                drop(s.0.write().unwrap());
            }
        }

        pub(crate) fn len(&self) -> usize {
            self.shards.iter().map(|s| s.0.read().unwrap().len()).sum()
        }

        /// Every key removed, each shard write-locked when a key of it
        /// first comes up and held to the end (as the shipped map does).
        pub(crate) fn remove_all(&self, pids: &[PageId], flag: u64) -> (u64, u64) {
            let mut locked: [Option<_>; 2] = Default::default();
            pids.iter().fold((0u64, 0u64), |(bytes, n), &pid| {
                let shard = (pid & 1) as usize;
                let table =
                    locked[shard].get_or_insert_with(|| self.shards[shard].0.write().unwrap());
                match table.remove(&pid) {
                    Some(v) => (bytes.saturating_add(v & !flag), n + 1),
                    None => (bytes, n),
                }
            })
        }

        pub(crate) fn entries(&self) -> Vec<(PageId, u64)> {
            let mut out = Vec::new();
            for s in &self.shards {
                out.extend(s.0.read().unwrap().iter().map(|(k, v)| (*k, *v)));
            }
            out
        }

        pub(crate) fn clear(&self) {
            for s in &self.shards {
                s.0.write().unwrap().clear();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn link(map: &PageMap, pid: PageId, bytes: u64) -> bool {
        map.link_if(pid, bytes, || Ok::<_, ()>(())).expect("open")
    }

    /// `link_if` writes the shards directly; every dashmap method must find
    /// what it wrote, across resizes (the insert path) and updates.
    #[test]
    fn link_is_seen_by_the_map_methods() {
        let map = PageMap::new();
        for pid in 0..3000 {
            assert!(link(&map, pid, 10));
        }
        for pid in (0..3000).step_by(3) {
            assert!(!link(&map, pid, 5));
        }
        assert_eq!(map.len(), 3000);
        assert_eq!(map.bytes(), 3000 * 10 + 1000 * 5);
        assert!(map.is_not_yet_replaced(2999));
        assert_eq!(map.mark_replaced(2999), Some(10), "cleared once");
        assert_eq!(map.mark_replaced(2999), None, "already cleared");
        assert!(!map.is_not_yet_replaced(2999));
        assert_eq!(map.not_yet_replaced().len(), 2999);
        assert_eq!(map.remove(3), Some(15));
        assert_eq!(map.remove(4), Some(10));
        assert_eq!(map.remove(4), None);
        // A removed page is new again.
        assert!(link(&map, 4, 7));
        assert_eq!(map.len(), 2999);
        // The batch removal finds what the single one would, skips what
        // is absent, and counts once per page.
        assert_eq!(map.remove_all(&[4, 3, 5, 6, 2999]), (7 + 10 + 15 + 10, 4));
        assert_eq!(map.len(), 2995);
        assert_eq!(map.remove_all(&[4, 5]), (0, 0));
        map.barrier();
    }

    /// A refused link changes nothing, whether the page is new or not.
    #[test]
    fn a_refused_link_changes_nothing() {
        let map = PageMap::new();
        assert_eq!(map.link_if(1, 10, || Err(())), Err(()));
        assert!(map.is_empty());
        assert!(link(&map, 1, 10));
        map.mark_replaced(1);
        assert_eq!(map.link_if(1, 5, || Err(())), Err(()));
        assert_eq!(map.entries(), vec![(1, 10)]);
        assert!(!map.is_not_yet_replaced(1));
    }

    #[test]
    fn lsn_set_picks_one_winner() {
        let set = LsnSet::new();
        assert!(set.insert_new(3));
        assert!(!set.insert_new(3));
        assert_eq!(set.keys(), vec![3]);
        assert!(set.remove(3));
        assert!(!set.remove(3));
        assert!(set.insert_new(3));
        assert_eq!(set.placed(), vec![]);
        set.set_placed(3, 7);
        assert_eq!(set.placed(), vec![(3, 7)]);
        set.reserve(5).expect("new").keep_at(0);
        let mut placed = set.placed();
        placed.sort_unstable();
        assert_eq!(placed, vec![(3, 7), (5, 0)]);
    }
}
