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
//! The rewrite gate: `pause_rewriting` must return only once no `next` is
//! reusing or truncating, and after it returns none may start. Both sides
//! are read-modify-writes of one word (pause depth in the high half,
//! in-flight reusers in the low half), so they are totally ordered without
//! SeqCst fences. A reuser holds a [`Reuser`] guard, so even a panic
//! unwinding out of the reuse path leaves the gate.

use crate::core::poison::Poison;
use crate::core::segment::{Segment, Word};
use crate::core::sync::epoch::{Collector, Guard};
use crate::core::sync::{Arc, AtomicBool, AtomicU64, Backoff, CachePadded, Ordering};
use crate::core::table::SegmentTable;
use crate::error::{contain, Callback, Result};

/// Lands the incarnation `ticket` names unless another deferral of it
/// already has: Freeing → Free, then publish it in the free bitmap. Never
/// panics: a broken invariant is recorded in `poison`.
pub(crate) fn land(table: &SegmentTable, poison: &Poison, index: usize, ticket: u64) {
    let segment = table.segment(index);
    if !segment.take_epoch_ticket(ticket) {
        // An earlier deferral of the same incarnation landed it.
        return;
    }
    let word = Segment::ticket_word(ticket);
    match segment.transition(word, word.with_state(crate::SegmentState::Free)) {
        Ok(()) => {
            if !table.set_free(index) {
                poison.record(format!("segment {index} landed twice"));
            }
        }
        Err(actual) => poison.record(format!(
            "segment {index} waited on the epoch as {word:?} but was {actual:?} when it landed"
        )),
    }
    // Release: `flush` and `audit` that see the count drop see the bit.
    // (The wait is over either way.)
    table.epoch_waiting.fetch_sub(1, Ordering::Release);
}

/// The collector whose epochs protect readers of segments.
#[derive(Debug)]
pub(crate) struct Epochs {
    collector: Collector,
    /// The default collector has a cached per-thread handle behind
    /// `crossbeam_epoch::pin`; others need a registration per pin.
    is_default: bool,
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
            let handle = self.collector.register();
            let guard = handle.pin();
            f(&guard)
        });
        if result.is_err() {
            // Release: pairs with the swap in `redefer_lost`.
            self.lost.store(true, Ordering::Release);
        }
        result
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

const REUSER: u64 = 1;
const PAUSE: u64 = 1 << 32;

/// Pause depth and in-flight reusers in one word.
#[derive(Debug)]
pub(crate) struct RewriteGate {
    /// Two read-modify-writes per reusing `next`: on a line of its own,
    /// apart from the sequencer's tip that every write reads.
    word: CachePadded<AtomicU64>,
    /// Pauses that `resume` can never undo (1 in Linear mode).
    permanent: u64,
}

impl RewriteGate {
    pub(crate) fn new(permanently_paused: bool) -> RewriteGate {
        let permanent = permanently_paused as u64;
        RewriteGate {
            word: CachePadded::new(AtomicU64::new(permanent * PAUSE)),
            permanent,
        }
    }

    /// Registers a reuser unless rewriting is paused; the guard leaves
    /// the gate when dropped, on return or unwind alike.
    pub(crate) fn enter(&self) -> Option<Reuser<'_>> {
        self.try_enter().then(|| Reuser(self))
    }

    fn try_enter(&self) -> bool {
        // Relaxed initial read: the CAS below validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            if current >= PAUSE {
                return false;
            }
            // Acquire: a reuser sees everything before the last resume.
            // Relaxed failure: the retry's CAS validates what it read.
            match self.word.compare_exchange_weak(
                current,
                current + REUSER,
                Ordering::Acquire,
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

    fn exit(&self) {
        // Release: a pause that sees this reuser gone sees its claims and
        // truncation decisions.
        self.word.fetch_sub(REUSER, Ordering::Release);
    }

    /// Pauses and waits until every in-flight reuser has left.
    pub(crate) fn pause(&self) {
        // AcqRel: orders the pause in the word's modification order before
        // any later `enter`, which then sees the depth.
        self.word.fetch_add(PAUSE, Ordering::AcqRel);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::PauseWithoutWaiting) {
            return;
        }
        // Acquire: pairs with `exit`.
        let backoff = Backoff::new();
        while self.word.load(Ordering::Acquire) % PAUSE != 0 {
            backoff.snooze();
        }
    }

    /// Undoes one pause; false if there was none to undo.
    pub(crate) fn resume(&self) -> bool {
        // Relaxed initial read: the CAS below validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            if current / PAUSE <= self.permanent {
                return false;
            }
            // Release: what happened while paused is visible to reusers.
            // Relaxed failure: the retry's CAS validates what it read.
            match self.word.compare_exchange_weak(
                current,
                current - PAUSE,
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
        self.word.load(Ordering::Acquire) >= PAUSE
    }
}

/// A registered reuser: leaves the rewrite gate when dropped.
#[derive(Debug)]
pub(crate) struct Reuser<'a>(&'a RewriteGate);

impl Drop for Reuser<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}

/// The gate's and the epochs' fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout_gate() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        field!(RewriteGate, word, hot),
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
