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
//! Deferred closures run only as threads pin and unpin; [`flush`] pushes
//! them through explicitly so reuse never depends on that happening.
//!
//! The rewrite gate: `pause_rewriting` must return only once no `next` is
//! reusing or truncating, and after it returns none may start. Both sides
//! are read-modify-writes of one word (pause depth in the high half,
//! in-flight reusers in the low half), so they are totally ordered without
//! SeqCst fences.

use crate::segment::SegmentState;
use crate::sync::epoch::{Collector, Guard};
use crate::sync::{spin_wait, Arc, AtomicU64, Ordering};
use crate::table::{Bits, SegmentTable};

/// Lands a segment whose epoch deferral has run: Freeing → Free, then
/// publish it in the free bitmap.
pub(crate) fn land(table: &SegmentTable, index: usize) {
    let segment = table.segment(index);
    let word = segment.load();
    debug_assert_eq!(word.state, SegmentState::Freeing);
    segment.must_transition(word, word.with_state(SegmentState::Free));
    let newly = table.set_bit(Bits::Free, index);
    debug_assert!(newly, "segment {index} landed twice");
    // Release: `flush` and `audit` that see the count drop see the bit.
    table.epoch_waiting.fetch_sub(1, Ordering::Release);
}

/// The collector whose epochs protect readers of segments.
#[derive(Debug, Clone)]
pub(crate) struct Epochs {
    collector: Collector,
    /// The default collector has a cached per-thread handle behind
    /// `crossbeam_epoch::pin`; others need a registration per pin.
    is_default: bool,
}

impl Epochs {
    pub(crate) fn new(collector: Collector) -> Epochs {
        Epochs {
            is_default: &collector == crate::sync::epoch::default_collector(),
            collector,
        }
    }

    pub(crate) fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Runs `f` pinned to the collector.
    pub(crate) fn with_guard<R>(&self, f: impl FnOnce(&Guard) -> R) -> R {
        if self.is_default {
            return f(&crate::sync::epoch::pin());
        }
        let handle = self.collector.register();
        let guard = handle.pin();
        f(&guard)
    }

    /// Defers landing `index` until every currently pinned thread leaves.
    pub(crate) fn defer_free(&self, table: &Arc<SegmentTable>, index: usize) {
        // Relaxed: `flush` only uses the count to decide whether to retry;
        // the landing closure publishes with release.
        table.epoch_waiting.fetch_add(1, Ordering::Relaxed);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::SkipEpochDeferral) {
            land(table, index);
            return;
        }
        let table = table.clone();
        self.with_guard(move |guard| {
            guard.defer(move || land(&table, index));
            // Hand the deferred closure to the global queue now, so any
            // thread's next collection can run it.
            guard.flush();
        });
    }

    /// Pushes deferred frees through: pins and flushes a few times (each
    /// flush may advance the epoch once nobody else is pinned). Returns how
    /// many frees are still waiting on readers.
    pub(crate) fn flush(&self, table: &SegmentTable) -> usize {
        for _ in 0..4 {
            // Acquire: pairs with the release decrement in `land`.
            if table.epoch_waiting.load(Ordering::Acquire) == 0 {
                break;
            }
            self.with_guard(|guard| guard.flush());
        }
        table.epoch_waiting.load(Ordering::Acquire)
    }
}

const REUSER: u64 = 1;
const PAUSE: u64 = 1 << 32;

/// Pause depth and in-flight reusers in one word.
#[derive(Debug)]
pub(crate) struct RewriteGate {
    word: AtomicU64,
    /// Pauses that `resume` can never undo (1 in Linear mode).
    permanent: u64,
}

impl RewriteGate {
    pub(crate) fn new(permanently_paused: bool) -> RewriteGate {
        let permanent = permanently_paused as u64;
        RewriteGate {
            word: AtomicU64::new(permanent * PAUSE),
            permanent,
        }
    }

    /// Registers a reuser unless rewriting is paused.
    pub(crate) fn enter(&self) -> bool {
        // Relaxed initial read: the CAS below validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current >= PAUSE {
                return false;
            }
            // Acquire: a reuser sees everything before the last resume.
            match self.word.compare_exchange_weak(
                current,
                current + REUSER,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    pub(crate) fn exit(&self) {
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
        while self.word.load(Ordering::Acquire) % PAUSE != 0 {
            spin_wait();
        }
    }

    /// Undoes one pause; false if there was none to undo.
    pub(crate) fn resume(&self) -> bool {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current / PAUSE <= self.permanent {
                return false;
            }
            // Release: what happened while paused is visible to reusers.
            match self.word.compare_exchange_weak(
                current,
                current - PAUSE,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        // Acquire: a caller that sees the pause sees what preceded it.
        self.word.load(Ordering::Acquire) >= PAUSE
    }
}
