//! Concurrent per-segment page sets, and the set of lsns in use.
//!
//! A segment's [`PageMap`] is a few shards, each a read/write lock (from
//! the [`crate::core::sync`] shim, so loom sees it) over a hash map of the
//! shard's pages, each shard on its own cache line. A segment's maps are
//! touched by the writers of that one segment, not by every thread, so a
//! few shards suffice and keep memory low. Under loom the very same code
//! runs, with two shards chosen by the page id's low bit.
//!
//! The seal protocol (see the [`crate::segment`] docs): a writer checks
//! the segment word *under the shard lock it then mutates under*
//! ([`PageMap::link_if`]); the sealing combiner, after moving the word to
//! Sealing, counts the map under each shard's lock
//! ([`PageMap::bytes_and_pages`]). A link either finishes before the count
//! reaches its shard, and the seal counts it, or takes the lock after the
//! count did, and then sees the word moved and changes nothing.
//!
//! The in-use lsn set ([`LsnSet`]) is built the same way: a few shim
//! `RwLock` shards, each over a `HashMap` of lsns and the list of those
//! placed since the combiner's last collection, so under loom the same
//! code runs too (two shards, by the lsn's low bit).

use crate::core::blocks::Blocks;
use crate::core::segment::{Deferred, DeferredReplacement};
use crate::core::sync::{
    read, write, CachePadded, HintWord, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use crate::types::{BlobId, PageId};

/// The "not yet replaced" flag in a [`PageMap`] value; the low bits are
/// bytes.
const NYR: u64 = 1 << 63;

/// The flag in an [`LsnSet`] value for a slot reused below the tip (not
/// appended); the low bits are the slot + 1.
const REUSED: u64 = 1 << 63;

/// A placed value's `(slot, reused)`; `None` for a reservation not placed
/// yet (value 0).
fn placement(v: u64) -> Option<(usize, bool)> {
    (v != 0).then(|| (((v & !REUSED) - 1) as usize, v & REUSED != 0))
}

/// A small concurrent set of segment numbers (the lsns in use): a few
/// read/write-locked shards (the [`crate::core::sync`] shim's lock, so loom
/// sees the very code that ships), each on its own cache line, chosen by
/// the key's hash as a [`PageMap`]'s are.
#[derive(Debug)]
pub(crate) struct LsnSet {
    shards: Box<[CachePadded<RwLock<LsnShard>>]>,
}

/// Shards per lsn set: 4, or 2 under loom (the key's low bit picks one).
const LSN_SHARDS: usize = PAGE_SHARDS;

/// One shard of an [`LsnSet`].
#[derive(Debug, Default)]
struct LsnShard {
    /// key → 0 while reserved, then its placement (slot + 1, with
    /// [`REUSED`] for a reused slot).
    keys: std::collections::HashMap<u64, u64, rustc_hash::FxBuildHasher>,
    /// The keys placed since the combiner's last collection
    /// ([`LsnSet::collect_new`]), in placement order.
    fresh: Vec<u64>,
}

/// Shards per page map: 4, or 2 under loom (the page id's low bit picks
/// one there, so a model can put two pages in one shard or apart).
pub(crate) const PAGE_SHARDS: usize = if cfg!(loom) { 2 } else { 4 };

/// One shard of a [`PageMap`]: its pages, and the work the `mark_replace`
/// calls that linked a page of this shard deferred to the seal (recorded
/// under the same lock as the link, so a replace takes one lock of its
/// segment, and the writers of one head spread their records over the
/// shards instead of meeting on one lock per segment).
///
/// `repr(C)`, in this order: a link reads and writes the table and the kept
/// sum, and with the lock before them (see [`ShardCell`]) those share the
/// shard's first line; the records `mark_replace` adds and the seal takes
/// come after, on the second.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct PageShard {
    pages: Pages,
    /// The bytes linked into this shard since the segment's activation
    /// (saturating): kept by every link, so the seal reads a count instead
    /// of walking the pages. No page leaves the map before the seal (the
    /// seal's check in debug builds), and nothing reads this after it:
    /// removals from a sealed map leave it as it was.
    linked: u64,
    /// The pages the last seal found (the most the incarnation held: none
    /// are linked after the seal): the next activation reserves as many,
    /// after [`PageMap::release`] freed the table (one allocation, instead
    /// of the writers' links growing the table step by step).
    pages_hint: u32,
    /// The records the last seal took: the next activation reserves room
    /// for as many, so recording allocates nothing in steady state.
    records_hint: u32,
    deferred: Deferred,
    /// How many of `deferred`'s records the combiner's pending index has
    /// read ([`PageMap::records_since_indexed`]); reset with the records
    /// by the seal. Only the combiner (the token holder) reads or writes
    /// it, under the shard's read lock, which is why it is an atomic. It
    /// lies with the records, on the line the refresh reads anyway,
    /// instead of in a map in the combiner keyed by segment: that map was
    /// one cold lookup per placed segment per refresh.
    indexed: HintWord,
}

/// A page map's table: page id → packed value, in hashbrown's table (the
/// one `std`'s `HashMap` is built on) with the Fx hash, for what
/// `HashMap` does not say: where a bucket lies (see [`Pages::place`]).
#[derive(Debug, Default)]
struct Pages(hashbrown::HashTable<(PageId, u64)>);

/// The Fx hash of a page id: the table's, and [`shard_of`]'s from bits the
/// table does not use.
#[inline(always)]
fn hash(pid: PageId) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(pid)
}

/// The size of a table's entry (page id and packed value).
const ENTRY: usize = std::mem::size_of::<(PageId, u64)>();

/// Where the bucket count's log2 sits in a table's place word
/// ([`Pages::place`]), above the control bytes' address.
const PLACE_SHIFT: u32 = 56;

/// A table's place word ([`Pages::place`]) as the address of its control
/// bytes and its bucket count; `None` for 0 (no pages).
fn unpack_place(place: u64) -> Option<(usize, usize)> {
    (place != 0).then(|| {
        (
            (place & ((1 << PLACE_SHIFT) - 1)) as usize,
            1usize << (place >> PLACE_SHIFT),
        )
    })
}

/// The hash of an entry, for the table's growth.
fn entry_hash(entry: &(PageId, u64)) -> u64 {
    hash(entry.0)
}

impl Pages {
    #[inline(always)]
    fn get_mut(&mut self, pid: PageId) -> Option<&mut u64> {
        self.0.find_mut(hash(pid), |e| e.0 == pid).map(|e| &mut e.1)
    }

    #[inline(always)]
    fn get(&self, pid: PageId) -> Option<u64> {
        self.0.find(hash(pid), |e| e.0 == pid).map(|e| e.1)
    }

    /// Adds `pid`, which is not here.
    fn insert_new(&mut self, pid: PageId, value: u64) {
        self.0.insert_unique(hash(pid), (pid, value), entry_hash);
    }

    #[inline(always)]
    fn remove(&mut self, pid: PageId) -> Option<u64> {
        match self.0.find_entry(hash(pid), |e| e.0 == pid) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Empties the table, keeping its allocation, and makes room for
    /// `additional` pages.
    fn clear_and_reserve(&mut self, additional: usize) {
        self.0.clear();
        self.0.reserve(additional, entry_hash);
    }

    fn iter(&self) -> impl Iterator<Item = (PageId, u64)> + '_ {
        self.0.iter().map(|&(p, v)| (p, v))
    }

    /// Where the table lies, as one word: the address of its control bytes
    /// (below 2^56 in every x86-64 address space), and in the top 8 bits
    /// log2 of its bucket count; 0 for a table with no pages. hashbrown
    /// keeps bucket `i`'s entry `i + 1` entries below the control bytes,
    /// so any full bucket gives their address (checked by
    /// `layout_tests::the_table_hint_points_at_the_probe`).
    fn place(&self) -> u64 {
        let buckets = self.0.num_buckets();
        let Some(entry) = self.0.iter().next() else {
            return 0;
        };
        let Some(index) = self.0.find_bucket_index(hash(entry.0), |e| e.0 == entry.0) else {
            return 0;
        };
        let ctrl =
            (std::ptr::from_ref(entry) as usize as u64).wrapping_add(((index + 1) * ENTRY) as u64);
        if ctrl >> PLACE_SHIFT != 0 || !buckets.is_power_of_two() {
            return 0;
        }
        ctrl | u64::from(buckets.trailing_zeros()) << PLACE_SHIFT
    }
}

/// What a page map that never held pages reserves at its activation: the
/// pages and records per shard of the last segment sealed. A segment
/// reused reserves what its own last seal counted (`pages_hint`,
/// `records_hint`); one activated for the first time (the file growing, or
/// a write head running far ahead of the stabilized lsn, whose backlog
/// keeps claiming new segments) has no count of its own, and without this
/// its tables would grow from nothing, step by step, each step a rehash.
/// Written by the combiner at each seal, read by `next` at an activation;
/// a hint, ordering nothing.
#[derive(Debug)]
pub(crate) struct FreshHint(HintWord);

impl FreshHint {
    pub(crate) fn new() -> Self {
        FreshHint(HintWord::new(0))
    }

    /// The most pages and records one shard of a sealed segment held.
    fn set(&self, pages: u32, records: u32) {
        // Relaxed: a hint (see the type).
        self.0.store(
            u64::from(pages) << 32 | u64::from(records),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> (u32, u32) {
        // Relaxed: a hint (see the type).
        let v = self.0.load(Ordering::Relaxed);
        ((v >> 32) as u32, v as u32)
    }
}

/// Tables and record lists for a page map's shards, reserved before the
/// map is activated and outside any lock ([`PageMap::install`]).
#[derive(Debug)]
pub(crate) struct Reserved {
    shards: [(Pages, Blocks<DeferredReplacement>); PAGE_SHARDS],
}

impl Reserved {
    /// Room in each shard for as many pages and records as one shard of
    /// the last sealed segment held ([`FreshHint`]).
    pub(crate) fn fresh(fresh: &FreshHint) -> Reserved {
        let (pages, records) = fresh.get();
        Reserved {
            shards: std::array::from_fn(|_| {
                let mut table = Pages::default();
                table.clear_and_reserve(pages as usize);
                let mut list = Blocks::default();
                list.reserve(records as usize);
                (table, list)
            }),
        }
    }
}

/// A page map's shard on its line: the lock with what it guards, and,
/// before it, where the shard's table lay when the segment was sealed.
///
/// `table` is a hint for the seal's apply, which removes replaced pages
/// from sealed segments' tables, cold ones mostly: a few records ahead it
/// starts loading the bucket it will probe, which it can only find from
/// the table's address, and that must not be read without the lock. So
/// the seal, which holds every shard's write lock, writes the table's
/// place here ([`Pages::place`]), and a release (the segment freed) clears
/// it. A sealed segment's table does not move until then (no page is
/// linked into it, and a removal never shrinks a hashbrown table), and
/// only the combiner seals, releases and applies, so the hint is read and
/// written by one thread at a time and orders nothing: a stale one only
/// makes a useless prefetch.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ShardCell {
    table: HintWord,
    lock: RwLock<PageShard>,
}

/// A segment's pages: page id → bytes of its fragments here, with a flag
/// for "not yet replaced" (no `mark_replace` called for it yet). One map
/// for both spec sets keeps `mark_link` to a single insert and makes
/// `not_yet_replaced ⊆ present` hold by construction. Each shard on its
/// own cache line.
#[derive(Debug)]
pub(crate) struct PageMap {
    shards: Box<[CachePadded<ShardCell>]>,
}

/// The shard of page `pid`: bits of its Fx hash that the shard's own table
/// does not use to place it (hashbrown takes the low bits for the bucket and
/// the top 7 for the tag), or under loom its low bit.
#[inline(always)]
fn shard_of(pid: PageId) -> usize {
    #[cfg(not(loom))]
    {
        (hash(pid) >> 32) as usize & (PAGE_SHARDS - 1)
    }
    #[cfg(loom)]
    {
        (pid & 1) as usize
    }
}

/// `n` shards made by `shard`, each on a line of its own (a page map's,
/// an lsn set's).
fn padded_shards<T>(n: usize, shard: impl Fn() -> T) -> Box<[CachePadded<T>]> {
    (0..n).map(|_| CachePadded::new(shard())).collect()
}

/// The sharing audit: the address range of `shards` (their locks).
#[cfg(all(sharing_audit, not(loom)))]
fn shards_range<T>(shards: &[CachePadded<T>]) -> (usize, usize) {
    (shards.as_ptr() as usize, std::mem::size_of_val(shards))
}

/// Hints the CPU to start loading the cache line at `p`. A prefetch reads
/// nothing the program sees (it cannot fault or race, and the lock on the
/// line is taken later as always), so any address will do. Elsewhere than
/// on x86-64, and under loom, it does nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // Safety: the SSE it needs is in every x86-64 CPU (the target's
    // baseline), and a prefetch is only a hint: it cannot fault or race,
    // whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// Runs `f` out of line: keeps the insert path of [`PageMap::link_if`] (a
/// second probe for a free slot, sometimes a resize) and its register
/// pressure out of the hit path that `mark_link` inlines.
#[inline(never)]
fn outlined<R>(f: impl FnOnce() -> R) -> R {
    f()
}

impl PageMap {
    pub(crate) fn new() -> Self {
        PageMap {
            shards: padded_shards(PAGE_SHARDS, || ShardCell {
                table: HintWord::new(0),
                lock: RwLock::new(PageShard::default()),
            }),
        }
    }

    /// The sharing audit: the address range of the shards (their locks).
    #[cfg(all(sharing_audit, not(loom)))]
    // Used by the audit's test only.
    #[allow(dead_code)]
    pub(crate) fn audit_range(&self) -> (usize, usize) {
        shards_range(&self.shards)
    }

    /// `pid`'s shard, write-locked.
    #[inline(always)]
    fn shard(&self, pid: PageId) -> RwLockWriteGuard<'_, PageShard> {
        write(&self.shards[shard_of(pid)].lock)
    }

    /// Every shard in turn, write-locked.
    fn each_shard(&self) -> impl Iterator<Item = RwLockWriteGuard<'_, PageShard>> {
        self.shards.iter().map(|s| write(&s.lock))
    }

    /// Every shard in turn, read-locked.
    fn each_shard_read(&self) -> impl Iterator<Item = RwLockReadGuard<'_, PageShard>> {
        self.shards.iter().map(|s| read(&s.lock))
    }

    /// Under the write lock of `pid`'s shard: if `open()` is `Ok`, adds
    /// `bytes` to `pid` and flags it not yet replaced, returning whether
    /// the page is new here; otherwise changes nothing and returns
    /// `open`'s error. The one write path.
    ///
    /// The probe for `pid` runs before `open`: both only read, under the
    /// lock, so the order changes nothing a writer or the seal can see, and
    /// this way the probe's loads and `open`'s load of the segment word
    /// issue together right after the lock is taken instead of one after
    /// the other (docs/performance-log.md, `mark_link` against its floor).
    #[inline(always)]
    pub(crate) fn link_if<E>(
        &self,
        pid: PageId,
        bytes: u64,
        open: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        self.link_if_then(pid, bytes, open, |_| ())
    }

    /// [`PageMap::link_if`], and then, still under the shard's lock and
    /// only if `open()` was `Ok`, `then` with the shard's deferred work
    /// (`mark_replace` records its replacements there). The seal takes the
    /// records and counts the pages of a shard under one hold of its lock
    /// ([`PageMap::seal`]), so it sees the link and the records of a
    /// replace together or neither.
    #[inline(always)]
    pub(crate) fn link_if_then<E>(
        &self,
        pid: PageId,
        bytes: u64,
        open: impl FnOnce() -> Result<(), E>,
        then: impl FnOnce(&mut Deferred),
    ) -> Result<bool, E> {
        let mut guard = self.shard(pid);
        let shard = &mut *guard;
        let slot = shard.pages.get_mut(pid);
        open()?;
        let new = match slot {
            Some(v) => {
                *v = (*v + bytes) | NYR;
                false
            }
            None => {
                let pages = &mut shard.pages;
                outlined(|| pages.insert_new(pid, bytes | NYR));
                true
            }
        };
        // Saturating, like the sum the seal used to fold from the pages.
        shard.linked = shard.linked.saturating_add(bytes);
        then(&mut shard.deferred);
        Ok(new)
    }

    /// The seal's read of the map: for each shard, under one hold of its
    /// write lock, moves its recorded replacements and blob removals to the
    /// ends of `replacements` and `blobs` (freeing their blocks: a sealed
    /// segment records nothing until its reuse, whose activation reserves
    /// as many records again, see [`PageMap::clear`]), takes its
    /// relocation counts, and reads its pages and bytes (the table's length
    /// and the kept sum: no walk over the pages). Returns the bytes and
    /// pages, and the relocated bytes and pages. Saturating, like every
    /// live-byte sum.
    pub(crate) fn seal(
        &self,
        replacements: &mut Vec<DeferredReplacement>,
        blobs: &mut Vec<BlobId>,
        fresh: &FreshHint,
    ) -> ((u64, u64), (u64, u64)) {
        let mut counted = (0u64, 0u64);
        let mut relocated = (0u64, 0u64);
        let mut most = (0u32, 0u32);
        for cell in self.shards.iter() {
            let mut shard = write(&cell.lock);
            let shard = &mut *shard;
            // Relaxed: a hint the combiner alone writes and reads (see
            // `ShardCell`); the table stays where it is until the release.
            cell.table.store(shard.pages.place(), Ordering::Relaxed);
            shard.records_hint =
                u32::try_from(shard.deferred.replacements.len()).unwrap_or(u32::MAX);
            shard.pages_hint = u32::try_from(shard.pages.len()).unwrap_or(u32::MAX);
            most = (most.0.max(shard.pages_hint), most.1.max(shard.records_hint));
            shard.deferred.replacements.move_to(replacements);
            // Relaxed: the combiner's own count (see `PageShard::indexed`),
            // reset with the records it counts, under the write lock.
            shard.indexed.store(0, Ordering::Relaxed);
            shard.deferred.move_blob_removals_to(blobs);
            relocated.0 = relocated
                .0
                .saturating_add(std::mem::take(&mut shard.deferred.relocated_bytes));
            relocated.1 += std::mem::take(&mut shard.deferred.relocated_pages);
            // The kept sum and the table's own length: the seal reads two
            // words of the shard's line, not every page the writers put
            // in the table (from their cores' caches, on many cores).
            debug_assert_eq!(
                shard.linked,
                shard
                    .pages
                    .iter()
                    .fold(0u64, |sum, (_, v)| sum.saturating_add(v & !NYR)),
                "a page left an Active segment's map before its seal"
            );
            counted = (
                counted.0.saturating_add(shard.linked),
                counted.1 + shard.pages.len() as u64,
            );
        }
        if most != (0, 0) {
            fresh.set(most.0, most.1);
        }
        (counted, relocated)
    }

    /// Calls `f` with each replacement recorded here since the last call
    /// (or since the seal that took the records before), shard by shard,
    /// each read-locked in turn. For the combiner's pending index alone:
    /// each shard counts what the last call read (`PageShard::indexed`).
    pub(crate) fn records_since_indexed(&self, mut f: impl FnMut(&DeferredReplacement)) {
        for shard in self.each_shard_read() {
            let records = &shard.deferred.replacements;
            // Relaxed: only the combiner reads and writes the count.
            let indexed = shard.indexed.load(Ordering::Relaxed) as usize;
            // The seal resets the count as it takes the records.
            debug_assert!(records.len() >= indexed);
            if records.len() > indexed {
                records.iter_from(indexed).for_each(&mut f);
                // Relaxed: as above.
                shard.indexed.store(records.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Calls `f` with every replacement recorded here, shard by shard
    /// (each read-locked in turn; not an atomic snapshot).
    pub(crate) fn records(&self, mut f: impl FnMut(&DeferredReplacement)) {
        for shard in self.each_shard_read() {
            shard.deferred.replacements.iter_from(0).for_each(&mut f);
        }
    }

    /// How many replacements and blob removals wait here for the seal.
    pub(crate) fn deferred_len(&self) -> usize {
        self.each_shard_read()
            .map(|s| s.deferred.replacements.len() + s.deferred.blob_removals_len())
            .sum()
    }

    /// `mark_replace` was called for `pid`: `clean` no longer suggests it.
    /// Returns whether this call cleared the flag (the page was present
    /// and not yet replaced), with its bytes here.
    pub(crate) fn mark_replaced(&self, pid: PageId) -> Option<u64> {
        let mut shard = self.shard(pid);
        let v = shard.pages.get_mut(pid)?;
        let was = *v;
        *v &= !NYR;
        (was & NYR != 0).then_some(was & !NYR)
    }

    /// A drain's start: clears the not-yet-replaced flag of each page of
    /// `replaced` that is here (replaced by writes not sealed yet), then
    /// appends the pages still not yet replaced to `list`; each shard under
    /// one hold of its write lock, instead of a lock pair per replaced page
    /// and a second pass to list them. Shards one at a time: not an atomic
    /// snapshot of the whole map (nor was the two-pass form).
    pub(crate) fn settle_and_list(
        &self,
        replaced: &[PageId],
        list: &mut std::collections::VecDeque<PageId>,
    ) {
        for (i, cell) in self.shards.iter().enumerate() {
            let mut shard = write(&cell.lock);
            for &pid in replaced.iter().filter(|&&pid| shard_of(pid) == i) {
                if let Some(v) = shard.pages.get_mut(pid) {
                    *v &= !NYR;
                }
            }
            list.extend(
                shard
                    .pages
                    .iter()
                    .filter(|&(_, v)| v & NYR != 0)
                    .map(|(pid, _)| pid),
            );
        }
    }

    /// Removes `pid`; returns its bytes.
    pub(crate) fn remove(&self, pid: PageId) -> Option<u64> {
        self.shard(pid).pages.remove(pid).map(|v| v & !NYR)
    }

    /// Removes every page of `pids`, each shard locked when a page of it
    /// first comes up and held to the end: at most one lock pair per shard
    /// instead of one per page. Returns the bytes removed and how many
    /// pages were here. For the combiner's applying of a run of
    /// replacements out of this segment: no other thread holds two shard
    /// locks of one map at once, so the order the locks are taken in
    /// cannot deadlock.
    pub(crate) fn remove_all(&self, pids: &[PageId]) -> (u64, u64) {
        let mut locked: [Option<RwLockWriteGuard<'_, PageShard>>; PAGE_SHARDS] = Default::default();
        pids.iter().fold((0u64, 0u64), |(bytes, n), &pid| {
            let i = shard_of(pid);
            let shard = locked[i].get_or_insert_with(|| write(&self.shards[i].lock));
            match shard.pages.remove(pid) {
                Some(v) => (bytes.saturating_add(v & !NYR), n + 1),
                None => (bytes, n),
            }
        })
    }

    /// Starts loading the line of `pid`'s shard (its lock and its table's
    /// header) into the cache, for a caller that will lock it soon: a hint,
    /// which changes nothing the program reads or writes.
    #[inline(always)]
    pub(crate) fn prefetch_shard(&self, pid: PageId) {
        prefetch(&self.shards[shard_of(pid)]);
    }

    /// [`PageMap::prefetch_shard`] for every shard.
    #[inline(always)]
    pub(crate) fn prefetch_shards(&self) {
        self.shards.iter().for_each(|s| prefetch(s));
    }

    /// [`PageMap::prefetch_shards`], and each shard's second line, which
    /// holds its deferred records: for the pending index's refresh, which
    /// reads them.
    #[inline(always)]
    pub(crate) fn prefetch_shards_and_records(&self) {
        self.shards.iter().for_each(|s| {
            prefetch(s);
            prefetch(std::ptr::from_ref(s).cast::<u8>().wrapping_add(64));
        });
    }

    /// Starts loading the lines a removal of `pid` will probe first, in a
    /// sealed segment's table: its control group and the bucket where its
    /// probe starts (where most pages are found). A hint, which changes
    /// nothing the program reads or writes: it reads the table's place
    /// from the seal's hint (see [`ShardCell`]), on the shard's first
    /// line, which the caller prefetched a step earlier, and a stale or
    /// absent hint costs one useless prefetch or none.
    #[inline(always)]
    pub(crate) fn prefetch_bucket(&self, pid: PageId) {
        // Relaxed: the combiner's own hint (see `ShardCell`).
        let place = self.shards[shard_of(pid)].table.load(Ordering::Relaxed);
        let Some((ctrl, buckets)) = unpack_place(place) else {
            return;
        };
        // hashbrown's probe starts at the hash's low bits; bucket `i`'s
        // entry lies `i + 1` entries below the control bytes.
        let start = hash(pid) as usize & (buckets - 1);
        prefetch(ctrl.wrapping_add(start) as *const u8);
        prefetch(ctrl.wrapping_sub((start + 1) * ENTRY) as *const u8);
    }

    /// `pid`'s packed value, read under its shard's read lock.
    fn value(&self, pid: PageId) -> Option<u64> {
        read(&self.shards[shard_of(pid)].lock).pages.get(pid)
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

    /// How many pages (not an atomic snapshot: one shard at a time).
    pub(crate) fn len(&self) -> usize {
        self.each_shard_read().map(|s| s.pages.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`PageMap::clear`] for a map that holds no heap (a segment at the
    /// file's tip: never used, or released and truncated), taking tables
    /// and record lists reserved beforehand ([`Reserved::fresh`]): the
    /// extension of the file activates the tip's segment under the
    /// sequencer's mutex, and allocating there made every `next` that
    /// extends wait for another's allocations (and for the allocator's own
    /// locks, which a segment's tables, freed by whichever thread runs the
    /// pass, often meet).
    pub(crate) fn install(&self, reserved: Reserved) {
        for (cell, (pages, records)) in self.shards.iter().zip(reserved.shards) {
            let mut shard = write(&cell.lock);
            debug_assert!(
                shard.pages.capacity() == 0 && shard.deferred.replacements.len() == 0,
                "installed over a map that holds pages or records"
            );
            // The empty ones this replaces hold no heap: dropping them (under
            // the lock) frees nothing.
            shard.pages = pages;
            shard.deferred.replacements = records;
            shard.linked = 0;
        }
    }

    /// Clears the pages for a segment's reuse, and reserves room for as
    /// many pages and records as the last incarnation had (see
    /// [`PageMap::release`]), or, for a shard whose last seal counted
    /// nothing (a map that never held pages), as one shard of the last
    /// segment sealed had (`fresh`): the writers of this one link and
    /// record without allocating, unless it grows past that.
    pub(crate) fn clear(&self, fresh: &FreshHint) {
        for mut shard in self.each_shard() {
            let shard = &mut *shard;
            let (pages, records) = match (shard.pages_hint, shard.records_hint) {
                (0, 0) => fresh.get(),
                counts => counts,
            };
            shard.pages.clear_and_reserve(pages as usize);
            shard.deferred.replacements.reserve(records as usize);
            shard.linked = 0;
        }
    }

    /// Frees the pages' tables of a segment that has no pages left (the
    /// combiner, as it frees the segment): a free segment holds no heap.
    /// The next activation reserves what the last seal counted, so a
    /// segment that once held many pages does not keep reserving for them.
    /// Each shard under its write lock, as every other change of the map.
    pub(crate) fn release(&self) {
        for cell in self.shards.iter() {
            let mut shard = write(&cell.lock);
            debug_assert!(shard.pages.is_empty(), "a freed segment has pages");
            shard.pages = Default::default();
            // Relaxed: the combiner's own hint (see `ShardCell`).
            cell.table.store(0, Ordering::Relaxed);
        }
    }

    /// Folds `f` over every `(pid, packed value)` without collecting them
    /// (one shard read-locked at a time; not an atomic snapshot).
    fn fold_raw<B>(&self, init: B, mut f: impl FnMut(B, PageId, u64) -> B) -> B {
        self.each_shard_read().fold(init, |acc, shard| {
            shard.pages.iter().fold(acc, |acc, (p, v)| f(acc, p, v))
        })
    }

    fn raw_entries(&self) -> Vec<(PageId, u64)> {
        self.fold_raw(Vec::new(), |mut out, p, v| {
            out.push((p, v));
            out
        })
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
        shards_range(&self.shards)
    }

    pub(crate) fn new() -> Self {
        LsnSet {
            shards: padded_shards(LSN_SHARDS, || RwLock::new(LsnShard::default())),
        }
    }

    /// `key`'s shard, write-locked.
    #[inline(always)]
    fn shard(&self, key: u64) -> RwLockWriteGuard<'_, LsnShard> {
        write(&self.shards[shard_of(key)])
    }

    /// Inserts `key` unless present; returns whether it was inserted. The
    /// shard's lock makes competing inserts of one key pick one winner.
    pub(crate) fn insert_new(&self, key: u64) -> bool {
        use std::collections::hash_map::Entry;
        match self.shard(key).keys.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(0);
                true
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

    /// Removes `key` (the combiner, after the seal of a segment it
    /// collected: a key waiting to be collected is never removed).
    pub(crate) fn remove(&self, key: u64) -> bool {
        let mut shard = self.shard(key);
        debug_assert!(!shard.fresh.contains(&key), "{key} removed uncollected");
        shard.keys.remove(&key).is_some()
    }

    /// Records that `key` was placed in table slot `index` (the value of
    /// a key is 0 until then, `index + 1` after, with [`REUSED`] if the slot
    /// was reused rather than appended), and lists it for the combiner's
    /// next collection. Under the key's shard lock, which every reader of
    /// placements takes too: a reader that does not see the placement
    /// passed that lock before this call took it. A placement is the
    /// segment's registration with the combiner (see
    /// [`LsnSet::collect_new`]).
    pub(crate) fn set_placed(&self, key: u64, index: usize, reused: bool) {
        let value = (index as u64 + 1) | if reused { REUSED } else { 0 };
        let mut shard = self.shard(key);
        let shard = &mut *shard;
        if let Some(v) = shard.keys.get_mut(&key) {
            debug_assert_eq!(*v, 0, "{key} placed twice");
            *v = value;
            // The list's buffer is kept from one collection to the next:
            // no allocation in steady state.
            shard.fresh.push(key);
        }
    }

    /// Recovery: inserts `key` placed in slot `index` (appended) and
    /// already registered with the combiner (`Combiner::recovered`), so no
    /// collection lists it.
    pub(crate) fn insert_registered(&self, key: u64, index: usize) {
        self.shard(key).keys.insert(key, index as u64 + 1);
    }

    /// Removes `key` if it is reserved but not placed (a `next` that failed
    /// or unwound before it placed the segment). A placed key stays: the
    /// combiner will find and seal its segment.
    fn remove_unplaced(&self, key: u64) {
        let mut shard = self.shard(key);
        if shard.keys.get(&key) == Some(&0) {
            shard.keys.remove(&key);
        }
    }

    /// Folds `f` over every `(key, value)`, one shard read-locked at a
    /// time (not an atomic snapshot; an entry written before this call
    /// took its shard's lock is seen). The one walk over the set, for the
    /// rare readers (introspection, the audit, `stabilize` past the
    /// combiner's bound); the combiner's collection does not walk.
    fn fold<B>(&self, init: B, mut f: impl FnMut(B, u64, u64) -> B) -> B {
        self.shards.iter().fold(init, |acc, shard| {
            read(shard)
                .keys
                .iter()
                .fold(acc, |acc, (&k, &v)| f(acc, k, v))
        })
    }

    /// The combiner's collection: runs `f(key, slot, reused)` for every
    /// key placed since the last collection, in placement order within a
    /// shard, and forgets them, one shard write-locked at a time (the lock
    /// every placement takes: a placement made before the call took its
    /// shard's lock is collected). It visits the new placements only, not
    /// the set: with a head far ahead of the stabilized lsn the set holds
    /// thousands of unsealed segments, and a walk over them every pass was
    /// a cost per write that grew with that backlog (docs/performance-log.md).
    pub(crate) fn collect_new(&self, mut f: impl FnMut(u64, usize, bool)) {
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let LsnShard { keys, fresh } = &mut *shard;
            for key in fresh.drain(..) {
                // A listed key is placed, and stays until its seal, which
                // comes after this collection.
                match keys.get(&key).and_then(|&v| placement(v)) {
                    Some((slot, reused)) => f(key, slot, reused),
                    None => debug_assert!(false, "listed key {key} is not placed"),
                }
            }
        }
    }

    /// `f(key, value)` of every entry where it is `Some`, in no particular
    /// order (see [`LsnSet::fold`]).
    fn collect<T>(&self, f: impl Fn(u64, u64) -> Option<T>) -> Vec<T> {
        self.fold(Vec::new(), |mut out, k, v| {
            out.extend(f(k, v));
            out
        })
    }

    /// `(key, slot)` of every placed key, in no particular order.
    pub(crate) fn placed(&self) -> Vec<(u64, usize)> {
        self.collect(|k, v| placement(v).map(|(slot, _)| (k, slot)))
    }

    /// The keys reserved and not placed yet: the `next` calls in flight
    /// (one shard read-locked at a time).
    pub(crate) fn unplaced(&self) -> Vec<u64> {
        self.collect(|k, v| (v == 0).then_some(k))
    }

    /// Whether `key` is reserved and not placed yet (under its shard's
    /// read lock).
    pub(crate) fn is_unplaced(&self, key: u64) -> bool {
        read(&self.shards[shard_of(key)]).keys.get(&key) == Some(&0)
    }

    /// One past the highest placed key, or 0 (one shard read-locked at a
    /// time: a key placed before the call began is seen, or its removal).
    pub(crate) fn placed_end(&self) -> u64 {
        self.fold(0, |end, k, v| {
            if placement(v).is_some() {
                end.max(k + 1)
            } else {
                end
            }
        })
    }

    /// The keys, in no particular order (not an atomic snapshot).
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.collect(|k, _| Some(k))
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
    /// Keeps the key in the set: the call it reserved for placed it (see
    /// [`LsnSet::set_placed`]) and returns.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.remove_unplaced(self.key);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn link(map: &PageMap, pid: PageId, bytes: u64) -> bool {
        map.link_if(pid, bytes, || Ok::<_, ()>(())).expect("open")
    }

    /// A replace of `pid` into `map`: the link and one record.
    fn replace(map: &PageMap, pid: PageId, bytes: u64) -> bool {
        map.link_if_then(
            pid,
            bytes,
            || Ok::<_, ()>(()),
            |d| {
                d.replacements.push(DeferredReplacement {
                    pid,
                    old_index: 1,
                    old_segno: 1,
                })
            },
        )
        .expect("open")
    }

    /// The table slots and record slots a map's shards hold.
    fn held(map: &PageMap) -> (usize, usize) {
        map.each_shard_read().fold((0, 0), |(pages, records), s| {
            (
                pages + s.pages.capacity(),
                records + s.deferred.replacements.capacity(),
            )
        })
    }

    /// A sealed segment holds no record blocks and a freed one no tables;
    /// the reuse reserves what the last incarnation used, so its writers
    /// link and record without growing anything.
    #[test]
    fn sealed_and_freed_maps_hold_no_heap_and_reuse_reserves_it() {
        let map = PageMap::new();
        let replace = |pid: PageId| replace(&map, pid, 10);
        (0..1000).for_each(|pid| assert!(replace(pid)));
        let (pages, records) = held(&map);
        assert!(pages >= 1000 && records >= 1000);
        let (mut replacements, mut blobs) = (Vec::new(), Vec::new());
        let fresh = FreshHint::new();
        assert_eq!(
            map.seal(&mut replacements, &mut blobs, &fresh).0,
            (10_000, 1000)
        );
        assert_eq!(replacements.len(), 1000);
        assert_eq!(held(&map), (pages, 0), "the seal freed the record blocks");
        let all: Vec<PageId> = (0..1000).collect();
        assert_eq!(map.remove_all(&all), (10_000, 1000));
        map.release();
        assert_eq!(held(&map), (0, 0), "a freed segment's map holds no heap");
        map.clear(&fresh);
        let reserved = held(&map);
        assert!(reserved.0 >= 1000 && reserved.1 >= 1000, "{reserved:?}");
        (0..1000).for_each(|pid| assert!(replace(pid)));
        assert_eq!(held(&map), reserved, "nothing grew past the reservation");
        assert_eq!((map.len(), map.bytes()), (1000, 10_000));
        // An incarnation of 10 pages: the one after it reserves for about
        // that many, not for the 1000 of the one before.
        map.seal(&mut replacements, &mut blobs, &fresh);
        assert_eq!(map.remove_all(&all), (10_000, 1000));
        map.release();
        map.clear(&fresh);
        (0..10).for_each(|pid| assert!(replace(pid)));
        map.seal(&mut replacements, &mut blobs, &fresh);
        assert_eq!(map.remove_all(&all[..10]), (100, 10));
        map.release();
        map.clear(&fresh);
        let small = held(&map);
        assert!(small.0 < 100 && small.1 < 100, "{small:?}");
    }

    /// A map at the tip takes the tables reserved before its activation:
    /// as many pages and records per shard as the hint says fit without
    /// growing anything, as with [`PageMap::clear`].
    #[test]
    fn an_installed_map_holds_what_was_reserved() {
        let fresh = FreshHint::new();
        fresh.set(300, 200);
        let map = PageMap::new();
        assert_eq!(held(&map), (0, 0));
        map.install(Reserved::fresh(&fresh));
        let reserved = held(&map);
        assert!(
            reserved.0 >= 4 * 300 && reserved.1 >= 4 * 200,
            "{reserved:?}"
        );
        let cleared = PageMap::new();
        cleared.clear(&fresh);
        assert_eq!(held(&cleared), reserved, "the same as a fresh map's clear");
        // Fewer pages than a shard's reservation in every shard.
        (0..400).for_each(|pid| assert!(replace(&map, pid, 10)));
        assert_eq!(held(&map), reserved, "nothing grew past the reservation");
        assert_eq!((map.len(), map.bytes()), (400, 4_000));
    }

    /// The pending index reads each record once: a second read finds only
    /// what was recorded since, and the seal that takes the records starts
    /// the next incarnation's count at 0.
    #[test]
    fn each_record_is_indexed_once_per_incarnation() {
        let map = PageMap::new();
        let fresh = FreshHint::new();
        let indexed = |map: &PageMap| {
            let mut pids = Vec::new();
            map.records_since_indexed(|r| pids.push(r.pid));
            pids.sort_unstable();
            pids
        };
        (0..100).for_each(|pid| assert!(replace(&map, pid, 10)));
        assert_eq!(indexed(&map), (0..100).collect::<Vec<_>>());
        assert_eq!(indexed(&map), Vec::<PageId>::new(), "nothing new");
        (100..150).for_each(|pid| assert!(replace(&map, pid, 10)));
        assert_eq!(indexed(&map), (100..150).collect::<Vec<_>>());
        let mut all = Vec::new();
        map.records(|r| all.push(r.pid));
        assert_eq!(all.len(), 150, "the full read sees every record");
        let (mut replacements, mut blobs) = (Vec::new(), Vec::new());
        map.seal(&mut replacements, &mut blobs, &fresh);
        assert_eq!(replacements.len(), 150);
        let pids: Vec<PageId> = (0..150).collect();
        map.remove_all(&pids);
        map.release();
        map.clear(&fresh);
        (0..20).for_each(|pid| assert!(replace(&map, pid, 10)));
        assert_eq!(
            indexed(&map),
            (0..20).collect::<Vec<_>>(),
            "a new incarnation's records are read from its first"
        );
    }

    /// A drain start's settle: the replaced pages lose their flag (a page
    /// not here is ignored), and the list holds exactly the pages still
    /// flagged.
    #[test]
    fn a_drain_start_lists_what_was_not_replaced() {
        let map = PageMap::new();
        (0..200).for_each(|pid| assert!(replace(&map, pid, 10)));
        assert_eq!(
            map.mark_replaced(7),
            Some(10),
            "replaced by a call that saw it Draining"
        );
        let replaced: Vec<PageId> = (0..200).filter(|p| p % 3 == 0).chain([1_000]).collect();
        let mut list = std::collections::VecDeque::from([5_000]);
        map.settle_and_list(&replaced, &mut list);
        assert_eq!(
            list.pop_front(),
            Some(5_000),
            "appended after what was there"
        );
        let mut listed: Vec<PageId> = list.into_iter().collect();
        listed.sort_unstable();
        let expected: Vec<PageId> = (0..200).filter(|p| p % 3 != 0 && *p != 7).collect();
        assert_eq!(listed, expected);
        assert_eq!(map.not_yet_replaced().len(), expected.len());
        assert!(!map.is_not_yet_replaced(3) && map.is_not_yet_replaced(4));
        assert_eq!(map.len(), 200, "a settle removes no page");
    }

    /// A map that never held pages reserves, at its first activation, what
    /// the last segment sealed held per shard; one that did, its own.
    #[test]
    fn a_fresh_map_reserves_what_the_last_seal_held() {
        let fresh = FreshHint::new();
        let (mut replacements, mut blobs) = (Vec::new(), Vec::new());
        let never = PageMap::new();
        never.clear(&fresh);
        assert_eq!(held(&never), (0, 0), "no seal yet: nothing to go by");
        let sealed = PageMap::new();
        (0..1000).for_each(|pid| assert!(replace(&sealed, pid, 1)));
        sealed.seal(&mut replacements, &mut blobs, &fresh);
        let fresh_map = PageMap::new();
        fresh_map.clear(&fresh);
        let reserved = held(&fresh_map);
        assert!(reserved.0 >= 1000 && reserved.1 >= 1000, "{reserved:?}");
        // A map with counts of its own keeps to them.
        (0..10).for_each(|pid| assert!(link(&never, pid, 1)));
        never.seal(&mut replacements, &mut blobs, &FreshHint::new());
        never.remove_all(&(0..10).collect::<Vec<_>>());
        never.release();
        never.clear(&fresh);
        let own = held(&never);
        assert!(own.0 < 100, "{own:?}");
    }

    /// What `link_if` writes every other method finds, across resizes (the
    /// insert path) and updates.
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
        set.set_placed(3, 7, true);
        assert_eq!(set.placed(), vec![(3, 7)]);
        let five = set.reserve(5).expect("new");
        set.set_placed(5, 0, false);
        five.keep();
        let mut placed = set.placed();
        placed.sort_unstable();
        assert_eq!(placed, vec![(3, 7), (5, 0)]);
        let mut flagged = Vec::new();
        set.collect_new(|k, slot, reused| flagged.push((k, slot, reused)));
        flagged.sort_unstable();
        assert_eq!(flagged, vec![(3, 7, true), (5, 0, false)]);
        // Collected once: a second collection finds only what is new, and
        // the mark changes nothing the other readers see.
        assert!(set.insert_new(9));
        set.set_placed(9, 2, false);
        let mut again = Vec::new();
        set.collect_new(|k, slot, reused| again.push((k, slot, reused)));
        assert_eq!(again, vec![(9, 2, false)]);
        set.collect_new(|k, _, _| panic!("{k} collected twice"));
        let mut placed = set.placed();
        placed.sort_unstable();
        assert_eq!(placed, vec![(3, 7), (5, 0), (9, 2)]);
        assert!(!set.is_unplaced(9));
        assert!(set.remove(9));
        // Recovery inserts a placement registered already: no collection
        // lists it.
        set.insert_registered(11, 4);
        set.collect_new(|k, _, _| panic!("{k} was recovered as collected"));
        assert!(set.placed().contains(&(11, 4)));
        assert_eq!(set.placed_end(), 12);
    }

    /// A reservation dropped before its key was placed (an error or an
    /// unwind in `next` before the segment was activated) removes it; one
    /// dropped after (an unwind after the activation) leaves the placement,
    /// which is the segment's registration, for the combiner to seal.
    #[test]
    fn a_dropped_reservation_removes_only_an_unplaced_key() {
        let set = LsnSet::new();
        drop(set.reserve(1).expect("new"));
        assert_eq!(set.keys(), vec![]);
        let two = set.reserve(2).expect("new");
        set.set_placed(2, 4, false);
        drop(two);
        assert_eq!(set.placed(), vec![(2, 4)]);
    }

    /// Writers reserve and place (some drop their reservation first, as a
    /// `next` that fails before its placement does) while one thread
    /// collects and removes what it collected, as the combiner does after
    /// a seal: every placement is collected exactly once, with its slot and
    /// flag, and no dropped reservation ever is.
    #[test]
    fn concurrent_placements_are_each_collected_once() {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        const WRITERS: u64 = 4;
        const PER_WRITER: u64 = 5_000;
        let set = LsnSet::new();
        let finished = AtomicUsize::new(0);
        let mut collected: HashMap<u64, (usize, bool)> = HashMap::new();
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (set, finished) = (&set, &finished);
                s.spawn(move || {
                    for i in 0..PER_WRITER {
                        let key = i * WRITERS + w;
                        let reservation = set.reserve(key).expect("each key is reserved once");
                        if key % 7 == 0 {
                            drop(reservation);
                            continue;
                        }
                        set.set_placed(key, key as usize, key % 2 == 0);
                        reservation.keep();
                    }
                    finished.fetch_add(1, SeqCst);
                });
            }
            let collect = |collected: &mut HashMap<u64, (usize, bool)>| {
                let mut now = Vec::new();
                set.collect_new(|k, slot, reused| now.push((k, slot, reused)));
                for (k, slot, reused) in now {
                    assert!(
                        collected.insert(k, (slot, reused)).is_none(),
                        "{k} collected twice"
                    );
                    if k % 3 == 0 {
                        assert!(set.remove(k));
                    }
                }
            };
            while finished.load(SeqCst) < WRITERS as usize {
                collect(&mut collected);
            }
            // Every writer's placements happened before its count.
            collect(&mut collected);
        });
        let placed = (0..WRITERS * PER_WRITER).filter(|k| k % 7 != 0);
        let expected: HashMap<u64, (usize, bool)> = placed
            .clone()
            .map(|k| (k, (k as usize, k % 2 == 0)))
            .collect();
        assert_eq!(collected, expected);
        let mut kept = set.keys();
        kept.sort_unstable();
        assert_eq!(kept, placed.filter(|k| k % 3 != 0).collect::<Vec<_>>());
    }
}

#[cfg(all(test, not(loom)))]
mod layout_tests {
    use super::*;

    /// A shard (its lock, its pages' table and its deferred records) fills
    /// one cache line exactly: the records moved in from the segment did
    /// not make every shard of every segment two lines.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_shard_is_one_line() {
        use crate::core::sync::LINE;
        assert_eq!(std::mem::size_of::<CachePadded<ShardCell>>(), LINE);
    }

    /// What a link touches (the lock, the table and the kept sum) and
    /// what the seal's apply reads before it locks (the table's place) lie
    /// in the shard's first 64 bytes, which one prefetch loads; the
    /// records come after.
    #[test]
    fn a_link_and_the_table_hint_share_the_first_line() {
        use std::mem::{offset_of, size_of};
        let lock = offset_of!(ShardCell, lock);
        // The guarded value follows the lock's state word (dashmap's lock
        // is its state then the value).
        let data = lock + size_of::<RwLock<PageShard>>() - size_of::<PageShard>();
        let end = |offset: usize, size: usize| offset + size;
        assert!(end(offset_of!(ShardCell, table), size_of::<HintWord>()) <= 64);
        assert!(end(data + offset_of!(PageShard, pages), size_of::<Pages>()) <= 64);
        assert!(end(data + offset_of!(PageShard, linked), size_of::<u64>()) <= 64);
        assert!(data + offset_of!(PageShard, deferred) >= 56);
        // The pending index's count lies with the records it counts.
        let indexed = data + offset_of!(PageShard, indexed);
        assert!(indexed >= 64 && end(indexed, size_of::<HintWord>()) <= 128);
    }

    /// The hint says where hashbrown's probe for a page starts: for each
    /// page, its entry lies `i + 1` entries below the control bytes, at a
    /// bucket `i` in the group the probe loads first (for nearly every page
    /// at this load: the rest a group or more further on).
    #[test]
    fn the_table_hint_points_at_the_probe() {
        let mut pages = Pages::default();
        assert_eq!(pages.place(), 0, "no pages, no hint");
        let pids = (0..1_000u64).map(|p| p * 7919);
        pids.clone().for_each(|pid| pages.insert_new(pid, pid));
        let (ctrl, buckets) = unpack_place(pages.place()).expect("pages, a place");
        assert_eq!(buckets, pages.0.num_buckets());
        let mut in_first_group = 0;
        for pid in pids {
            let index = pages.0.find_bucket_index(hash(pid), |e| e.0 == pid);
            let index = index.expect("inserted");
            let at = std::ptr::from_ref(pages.0.get_bucket(index).expect("full")) as usize;
            assert_eq!(at + (index + 1) * ENTRY, ctrl, "bucket {index} of {pid}");
            let start = hash(pid) as usize & (buckets - 1);
            if (index + buckets - start) % buckets < 16 {
                in_first_group += 1;
            }
        }
        assert!(
            in_first_group > 900,
            "{in_first_group} of 1,000 in the first group"
        );
    }
}
