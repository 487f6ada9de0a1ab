//! The free list: how an emptied segment becomes reusable, and how `next`
//! claims one.
//!
//! A segment that empties moves to Freeing (in the combiner). Once the
//! stable lsn has passed it (property C), its release is *deferred through
//! the epoch collector the store's readers pin*: the closure that lands it
//! runs only after every thread pinned at deferral time has unpinned
//! (property B). Landing moves it Freeing → Free and sets its bit in the
//! table's free bitmap, from which `next` claims the lowest set bit (low
//! offsets first, so the top of the file empties and can be truncated).
//!
//! Deferred closures run only as threads pin and unpin; [`Epochs::flush`]
//! pushes them through explicitly so reuse never depends on that happening.
//!
//! Deferred closures run on whatever thread pins or flushes next, often a
//! store's reader, so the landing closure never panics: a broken invariant
//! it meets poisons the accountant instead (reported by every later call
//! and by `audit`). And the accountant's own pins and flushes run other
//! code's deferred closures (the store's garbage on a shared collector). A
//! panic in one is contained ([`Callback::EpochCollector`]), but crossbeam
//! drops the rest of that closure's bag unrun, and the bag may hold one of
//! our landings. So every deferral carries a ticket kept in its segment,
//! and after such a panic every segment still holding a ticket is deferred
//! again: whichever closure claims the ticket first lands it (a later
//! deferral only waits longer, so property B holds for each), the others do
//! nothing.
//!
//! Pinning a collector of the store's own (not crossbeam's default) needs
//! a registration, a `LocalHandle`: an allocation and an insert into the
//! collector's list of participants. Each thread keeps its handles in a
//! small cache ([`HANDLES`]), so frees and flushes register once per
//! thread and accountant, not once per call; see [`HandleCache`] for what
//! it keeps alive and for how long.
//!
//! The rewrite gate: `pause_rewriting` must return only once no `next` is
//! reusing or truncating, and after it returns none may start. The gate is
//! a pause depth that `next` only reads; the in-flight reusers are the
//! unplaced reservations of the in-use lsn set, which `next` writes
//! anyway, and the set's shard locks order a reservation against a
//! pauser's scan without SeqCst fences (see [`RewriteGate::pause`]). A
//! reservation is a guard, so even a panic unwinding out of the reuse path
//! leaves no reuser for a pause to wait on.

use crate::core::poison::Poison;
use crate::core::segment::{Segment, Word};
use std::cell::RefCell;
use std::sync::{Arc as StdArc, Weak as StdWeak};

use crate::core::sync::epoch::{Collector, Guard, LocalHandle};
use crate::core::sync::{thread_local, Arc, AtomicBool, AtomicU64, Backoff, CachePadded, Ordering};
use crate::core::table::SegmentTable;
use crate::error::{contain, Callback, Result};

/// Lands the incarnation `ticket` names unless another deferral of it
/// already has: sets its free bit, then moves it Freeing → Free
/// ([`SegmentTable::publish_free`] says why in that order). Never panics:
/// a broken invariant is recorded in `poison`.
pub(crate) fn land(table: &SegmentTable, poison: &Poison, index: usize, ticket: u64) {
    let segment = table.segment(index);
    if !segment.take_epoch_ticket(ticket) {
        // An earlier deferral of the same incarnation landed it.
        return;
    }
    let word = Segment::ticket_word(ticket);
    let actual = segment.load();
    if actual != word {
        poison.record(format!(
            "segment {index} waited on the epoch as {word:?} but was {actual:?} when it landed"
        ));
    } else if let Err(broken) = table.publish_free(index, word) {
        poison.record(broken);
    }
    // Release: `flush` and `audit` that see the count drop see the bit.
    // (The wait is over either way.)
    table.epoch_waiting.fetch_sub(1, Ordering::Release);
}

/// Handles a thread keeps for pinning collectors of the store's own (the
/// default collector has crossbeam's cached handle behind
/// `crossbeam_epoch::pin`).
///
/// A `LocalHandle` is `!Send`, so it lives in the thread that registered
/// it; a handle keeps its collector alive (and with it the garbage deferred
/// on it, which includes our landing closures and the segment table they
/// hold). So the cache is bounded and keyed weakly: each entry holds a
/// `Weak` of its accountant's [`Epochs::key`], at most
/// [`HANDLES_PER_THREAD`] entries are kept (least recently used dropped
/// first), every miss drops the entries of accountants that are gone, and
/// an accountant dropped on a thread drops that thread's entry at once.
/// What is left behind is bounded: a thread that stops using accountants
/// keeps at most [`HANDLES_PER_THREAD`] collectors alive until it exits.
#[derive(Default)]
struct HandleCache {
    /// Most recently used first.
    entries: Vec<(StdWeak<()>, LocalHandle)>,
}

/// The most handles one thread keeps (see [`HandleCache`]).
const HANDLES_PER_THREAD: usize = 4;

thread_local! {
    /// This thread's handles (see [`HandleCache`]).
    static HANDLES: RefCell<HandleCache> = RefCell::new(HandleCache::default());
}

impl HandleCache {
    /// Pins `collector` through this thread's handle for the accountant
    /// whose key is `key`, registering one on a miss.
    fn pin(&mut self, key: &StdArc<()>, collector: &Collector) -> Guard {
        let ours = |(owner, _): &(StdWeak<()>, LocalHandle)| {
            std::ptr::eq(owner.as_ptr(), StdArc::as_ptr(key))
        };
        match self.entries.iter().position(ours) {
            Some(at) => self.entries[..=at].rotate_right(1),
            None => {
                // A `Weak` keeps its allocation, so no live key can have
                // the address of a dead one: the entries dropped here are
                // exactly those of accountants that are gone.
                self.entries.retain(|(owner, _)| owner.strong_count() > 0);
                self.entries.truncate(HANDLES_PER_THREAD - 1);
                self.entries
                    .insert(0, (StdArc::downgrade(key), collector.register()));
            }
        }
        self.entries[0].1.pin()
    }

    /// Drops the handle of the accountant whose key is `key`, if any.
    fn forget(&mut self, key: &StdArc<()>) {
        self.entries
            .retain(|(owner, _)| !std::ptr::eq(owner.as_ptr(), StdArc::as_ptr(key)));
    }
}

/// How many handles this thread's cache holds (tests).
#[cfg(all(test, not(loom)))]
pub(crate) fn cached_handles() -> usize {
    HANDLES.with(|cache| cache.borrow().entries.len())
}

/// The collector whose epochs protect readers of segments.
#[derive(Debug)]
pub(crate) struct Epochs {
    collector: Collector,
    /// The default collector has a cached per-thread handle behind
    /// `crossbeam_epoch::pin`; others are pinned through [`HANDLES`].
    is_default: bool,
    /// This accountant's identity in the threads' handle caches (only its
    /// address and liveness matter).
    key: StdArc<()>,
    /// A deferred closure panicked on one of our pins: landings may have
    /// been dropped unrun, so ticketed segments must be deferred again.
    lost: AtomicBool,
    /// Where landings record broken invariants.
    poison: Arc<Poison>,
}

impl Epochs {
    pub(crate) fn new(collector: Collector, poison: Arc<Poison>) -> Epochs {
        Epochs {
            is_default: &collector == crate::core::sync::epoch::default_collector(),
            collector,
            key: StdArc::new(()),
            lost: AtomicBool::new(false),
            poison,
        }
    }

    pub(crate) fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Runs `f` pinned to the collector. Pinning (now and then) and `f`'s
    /// flushes run deferred closures of other code: a panic in one is
    /// contained here, and the landings it may have dropped are deferred
    /// again by the next [`Epochs::flush`] or deferral.
    pub(crate) fn with_guard<R>(&self, f: impl FnOnce(&Guard) -> R) -> Result<R> {
        let result = contain(Callback::EpochCollector, || {
            if self.is_default {
                return f(&crate::core::sync::epoch::pin());
            }
            f(&self.pin())
        });
        if result.is_err() {
            // Release: pairs with the swap in `redefer_lost`.
            self.lost.store(true, Ordering::Release);
        }
        result
    }

    /// Pins our own collector through this thread's cached handle. A guard
    /// outlives nothing it needs: crossbeam keeps a participant alive while
    /// a guard of it is, even if its handle is dropped meanwhile (by a
    /// re-entrant call's eviction). Re-entrant calls (a deferred closure
    /// that calls back into an accountant while the cache is borrowed) and
    /// calls during thread exit register a handle for this pin alone.
    fn pin(&self) -> Guard {
        HANDLES
            .try_with(|cache| {
                let mut cache = cache.try_borrow_mut().ok()?;
                Some(cache.pin(&self.key, &self.collector))
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| self.collector.register().pin())
    }

    /// Defers landing segment `index`, Freeing as `word`, until every
    /// currently pinned thread leaves.
    pub(crate) fn defer_free(
        &self,
        table: &Arc<SegmentTable>,
        index: usize,
        word: Word,
    ) -> Result<()> {
        // Relaxed: `flush` only uses the count to decide whether to retry;
        // the landing closure publishes with release.
        table.epoch_waiting.fetch_add(1, Ordering::Relaxed);
        let ticket = table.segment(index).wait_on_epoch(word);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::SkipEpochDeferral) {
            land(table, &self.poison, index, ticket);
            return Ok(());
        }
        let first = self.defer_landing(table, index, ticket);
        let again = self.redefer_lost(table);
        first.and(again)
    }

    /// One deferral of the landing of `ticket`.
    fn defer_landing(&self, table: &Arc<SegmentTable>, index: usize, ticket: u64) -> Result<()> {
        let table = table.clone();
        let poison = self.poison.clone();
        self.with_guard(move |guard| {
            guard.defer(move || land(&table, &poison, index, ticket));
            // Hand the deferred closure to the global queue now, so any
            // thread's next collection can run it.
            guard.flush();
        })
    }

    /// After a contained panic on the collector: defers again every
    /// segment still waiting on the epoch (a few rounds, in case the
    /// collector panics again; a round cut short leaves `lost` set for the
    /// next call). Reports the first contained panic.
    fn redefer_lost(&self, table: &Arc<SegmentTable>) -> Result<()> {
        let mut first = Ok(());
        for _ in 0..3 {
            // Acquire (both): pairs with the release store in `with_guard`.
            // The load first, so that the usual case (nothing lost) writes
            // nothing: a store racing it is seen by the next call.
            if !self.lost.load(Ordering::Acquire) || !self.lost.swap(false, Ordering::Acquire) {
                break;
            }
            for index in 0..table.capacity() {
                if let Some(ticket) = table.segment(index).epoch_ticket() {
                    if let Err(e) = self.defer_landing(table, index, ticket) {
                        first = first.and(Err(e));
                        break;
                    }
                }
            }
        }
        first
    }

    /// Pushes deferred frees through: pins and flushes a few times (each
    /// flush may advance the epoch once nobody else is pinned). Returns how
    /// many frees are still waiting on readers, and the first panic of a
    /// deferred closure it contained (the flush went on regardless).
    pub(crate) fn flush(&self, table: &Arc<SegmentTable>) -> (usize, Result<()>) {
        let mut result = self.redefer_lost(table);
        for _ in 0..4 {
            // Acquire: pairs with the release decrement in `land`.
            if table.epoch_waiting.load(Ordering::Acquire) == 0 {
                break;
            }
            if let Err(e) = self.with_guard(|guard| guard.flush()) {
                result = result.and(Err(e));
                let again = self.redefer_lost(table);
                result = result.and(again);
            }
        }
        (table.epoch_waiting.load(Ordering::Acquire), result)
    }
}

impl Drop for Epochs {
    /// Drops this thread's handle for us at once (other threads' go at
    /// their next miss, or when they exit: see [`HandleCache`]).
    fn drop(&mut self) {
        if !self.is_default {
            let _ = HANDLES.try_with(|cache| {
                if let Ok(mut cache) = cache.try_borrow_mut() {
                    cache.forget(&self.key);
                }
            });
        }
    }
}

/// The pause depth: `pause_rewriting` raises it, `resume_rewriting`
/// lowers it; `next` reuses segments only while it is zero.
#[derive(Debug)]
pub(crate) struct RewriteGate {
    /// Read by every `next`, written only by pauses and resumes: on a line
    /// of its own, apart from the sequencer's tip that every write reads.
    depth: CachePadded<AtomicU64>,
    /// Pauses that `resume` can never undo (1 in Linear mode).
    permanent: u64,
}

impl RewriteGate {
    pub(crate) fn new(permanently_paused: bool) -> RewriteGate {
        let permanent = permanently_paused as u64;
        RewriteGate {
            depth: CachePadded::new(AtomicU64::new(permanent)),
            permanent,
        }
    }

    /// Whether a `next` may take the reuse path: no pause is in force. The
    /// caller must have reserved its lsn in the in-use set *before* this
    /// load (see [`RewriteGate::pause`]).
    pub(crate) fn is_open(&self) -> bool {
        // Acquire: a reuser sees everything before the last resume, and
        // the pause's increment if the pauser's scan of the in-use set
        // came before the reservation (see `pause`).
        self.depth.load(Ordering::Acquire) == 0
    }

    /// Raises the pause depth. The caller then waits for the reservations
    /// the in-use set holds unplaced (`Accountant::pause_rewriting`): a
    /// `next` reserves its lsn under a shard lock *before* it loads the
    /// depth, and the pauser reads the set under the same locks *after*
    /// this increment. If the pauser's read of the shard came first, its
    /// release happened before the reservation's acquire, so the `next`
    /// loads the raised depth and does not reuse; otherwise the pauser
    /// sees the reservation and waits until it is placed or gone, which is
    /// after everything the `next` did on the reuse path.
    pub(crate) fn pause(&self) {
        // AcqRel: Release makes the increment visible through the set's
        // locks to any `next` that reserves after our scan; Acquire orders
        // the scan after it.
        self.depth.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes one pause; false if there was none to undo.
    pub(crate) fn resume(&self) -> bool {
        // Relaxed initial read: the CAS below validates it.
        let mut current = self.depth.load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            if current <= self.permanent {
                return false;
            }
            // Release: what happened while paused is visible to reusers.
            // Relaxed failure: the retry's CAS validates what it read.
            match self.depth.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        // Acquire: a caller that sees the pause sees what preceded it.
        self.depth.load(Ordering::Acquire) > 0
    }
}

/// The gate's and the epochs' fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout_gate() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        field!(RewriteGate, depth, hot),
        field!(RewriteGate, permanent, COLD),
    ]
}

/// See [`layout_gate`].
#[cfg(all(test, not(loom)))]
pub(crate) fn layout_epochs() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        field!(Epochs, collector, COLD),
        field!(Epochs, is_default, COLD),
        field!(Epochs, key, COLD),
        // Written only after a deferred closure panicked.
        field!(Epochs, lost, COLD),
        field!(Epochs, poison, COLD),
    ]
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;

    use crate::core::sync::Ordering;
    use crate::{Accountant, Collector, Config, DiskPtr, Error, Lsn, MemStorage, SegmentState};

    const SS: u64 = 4096;
    const L: Lsn = SS as Lsn;

    fn own_accountant() -> Accountant {
        let config = Config::builder().segment_size(SS).build().unwrap();
        Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new())
    }

    /// Frees one segment (round `i`): its landing is deferred, which pins.
    fn free_one(acc: &Accountant, i: i64) {
        let base = 3 * L * i;
        let inline = DiskPtr::Inline;
        let a = acc.next(base).unwrap();
        acc.mark_link(1, base, inline(a), 10).unwrap();
        let b = acc.next(base + L).unwrap();
        acc.mark_replace(1, base + L, &[inline(a)], inline(b), 10)
            .unwrap();
        acc.next(base + 2 * L).unwrap();
        acc.stabilize(base + 2 * L).unwrap();
    }

    /// Issue 15: with a collector of the store's own, every free and flush
    /// registered a new participant. Now a thread registers once per
    /// accountant, and the handle goes when the accountant does.
    #[test]
    fn a_thread_registers_once_per_accountant() {
        std::thread::spawn(|| {
            let acc = own_accountant();
            assert_eq!(super::cached_handles(), 0);
            for i in 0..50 {
                free_one(&acc, i);
                acc.flush();
            }
            assert!(acc.metrics().segments_freed >= 50);
            assert_eq!(super::cached_handles(), 1);
            acc.audit().unwrap();
            drop(acc);
            assert_eq!(super::cached_handles(), 0, "dropped with its accountant");
        })
        .join()
        .unwrap();
    }

    /// The cache is bounded, and a thread drops the handles of accountants
    /// dropped elsewhere at its next miss: it keeps no collector alive for
    /// an accountant that is gone, beyond its next registration.
    #[test]
    fn the_handle_cache_is_bounded_and_forgets_dropped_accountants() {
        let mut accountants: Vec<Option<Arc<Accountant>>> =
            (0..6).map(|_| Some(Arc::new(own_accountant()))).collect();
        let (go, wait) = std::sync::mpsc::channel::<(Arc<Accountant>, i64)>();
        let (done, finished) = std::sync::mpsc::channel::<usize>();
        let user = std::thread::spawn(move || {
            for (acc, round) in wait {
                free_one(&acc, round);
                drop(acc);
                done.send(super::cached_handles()).unwrap();
            }
        });
        let mut round = 0;
        let mut use_on_thread = |acc: &Arc<Accountant>| {
            round += 1;
            go.send((acc.clone(), round)).unwrap();
            finished.recv().unwrap()
        };
        for (which, acc) in accountants.iter().enumerate() {
            let cached = use_on_thread(acc.as_ref().unwrap());
            assert_eq!(cached, (which + 1).min(super::HANDLES_PER_THREAD));
        }
        // The thread caches 5, 4, 3 and 2. Accountants 4 and 5 go (the
        // thread holds no clone of them now).
        accountants[4] = None;
        accountants[5] = None;
        // A miss on the thread (accountant 0 was evicted) drops their
        // handles: 0, 3 and 2 remain, not four.
        let cached = use_on_thread(accountants[0].as_ref().unwrap());
        assert_eq!(cached, 3);
        drop(go);
        user.join().unwrap();
        for acc in accountants.into_iter().flatten() {
            acc.audit().unwrap();
        }
    }

    /// Issue 14, defect 7: the landing closure checked internal invariants
    /// by panicking, on whatever thread pinned next: a store's reader. Now
    /// it records the broken invariant; every later call reports it and
    /// `audit` fails. (The invariant is broken by hand: no sequence of
    /// calls breaks it.)
    #[test]
    fn a_broken_invariant_in_a_landing_poisons_instead_of_panicking_on_a_reader() {
        let config = Config::builder().segment_size(SS).build().unwrap();
        let collector = Collector::new();
        let acc =
            Accountant::with_collector(config, Arc::new(MemStorage::new()), collector.clone());
        let inline = DiskPtr::Inline;
        let s0 = acc.next(0).unwrap();
        acc.mark_link(1, 0, inline(s0), 10).unwrap();
        let s1 = acc.next(L).unwrap();
        acc.mark_replace(1, L, &[inline(s0)], inline(s1), 10)
            .unwrap();
        acc.next(2 * L).unwrap();
        let pinned = collector.register();
        let guard = pinned.pin();
        acc.stabilize(2 * L).unwrap();
        let segment = acc.shared.table.segment(0);
        let word = segment.load();
        assert_eq!(word.state, SegmentState::Freeing);
        // The broken invariant: the segment is not the Freeing incarnation
        // whose landing waits on the epoch.
        segment
            .transition(word, word.with_state(SegmentState::Inactive))
            .unwrap();
        drop(guard);
        drop(pinned);
        // A reader pins and unpins: the landing runs on its thread.
        let reader = {
            let collector = collector.clone();
            std::thread::spawn(move || {
                let handle = collector.register();
                for _ in 0..8 {
                    handle.pin().flush();
                }
            })
        };
        reader
            .join()
            .expect("the landing panicked on a reader's thread");
        assert_eq!(
            acc.shared.table.epoch_waiting.load(Ordering::Acquire),
            0,
            "it ran"
        );
        for result in [
            acc.next(3 * L).map(drop),
            acc.stabilize(2 * L),
            acc.mark_link(2, L, inline(s1), 1),
        ] {
            assert!(
                matches!(result, Err(Error::Poisoned(ref why)) if why.contains("segment 0")),
                "{result:?}"
            );
        }
        let audit = acc.audit().unwrap_err();
        assert!(audit.0.contains("poisoned"), "{audit}");
    }
}
