//! The sequencer: the one serialized piece, owning only the file tip.
//!
//! It grows the file by one segment, shrinks it over free segments at the
//! top, and grows the segment table. Everything else (links, replaces,
//! stabilize, clean, and `next` from the free list) proceeds while it is
//! busy, even during a slow truncation sync: truncation runs on its own
//! thread, and the lock is only *tried* by `next` on its fast path.
//!
//! Invariants:
//! - the tip (in segments) changes only with the lock held;
//! - segments at or above the tip are Vacant and have no free bit: a
//!   shrink claims each top segment (its word's Free -> Vacant CAS, the
//!   claim token `next` uses too) and clears its bit *before* lowering the
//!   tip (property E);
//! - the tip grows back over a truncated range only after that truncation
//!   has finished: growth first joins the outstanding truncation, and
//!   reports its error.
//!
//! Panics: the truncation thread runs the store's `Storage` methods; a
//! panic there is contained on that thread and reported like an I/O error
//! ([`Error::CallbackPanicked`] with [`Callback::Truncation`]), once, by the
//! next tip change: it never resurfaces as a panic in an unrelated `next`
//! or in `Drop`. The lock is a `MutexGuard` (released on unwind) whose
//! poisoning is ignored: the state it guards is only the outstanding
//! truncation, which is taken out before anything that can fail.

use std::io;

use crate::core::segment::{SegmentState, Word};
use crate::core::sync::{
    lock, try_lock, try_spawn, Arc, AtomicBool, AtomicU64, AtomicUsize, CachePadded, JoinHandle,
    Mutex, Ordering,
};
use crate::core::table::SegmentTable;
use crate::error::{contain, panic_message, Callback, Error, Result};
use crate::storage::Storage;

#[derive(Debug)]
enum Truncation {
    /// Running on its own thread; `done` is set when it has finished.
    Running {
        handle: JoinHandle<Result<()>>,
        done: Arc<AtomicBool>,
    },
    /// The thread could not be started: the file was not shortened.
    NotStarted(io::Error),
}

#[derive(Debug, Default)]
struct State {
    truncation: Option<Truncation>,
}

#[derive(Debug)]
pub(crate) struct Sequencer {
    /// File tip in segments: read by every write, written only when the
    /// file grows or shrinks, so on a line of its own, apart from the lock
    /// (written by every extension and every shrink attempt).
    tip: CachePadded<AtomicUsize>,
    state: CachePadded<Mutex<State>>,
    bytes_truncated: AtomicU64,
    /// How many times the file was shortened (a std atomic: a statistic
    /// the loom models need not explore).
    truncations: crate::core::sync::StatCounter,
}

impl Sequencer {
    pub(crate) fn new(tip: usize) -> Sequencer {
        Sequencer {
            tip: CachePadded::new(AtomicUsize::new(tip)),
            state: CachePadded::new(Mutex::new(State::default())),
            bytes_truncated: AtomicU64::new(0),
            truncations: crate::core::sync::StatCounter::new(0),
        }
    }

    /// The tip in segments. Acquire: a segment below the tip that a reader
    /// then looks at was set up before the tip was published.
    #[inline]
    pub(crate) fn tip(&self) -> usize {
        self.tip.load(Ordering::Acquire)
    }

    pub(crate) fn bytes_truncated(&self) -> u64 {
        // Relaxed: a statistic.
        self.bytes_truncated.load(Ordering::Relaxed)
    }

    /// How many times the file was shortened.
    pub(crate) fn truncations(&self) -> u64 {
        // Relaxed: a statistic.
        self.truncations.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn finish_truncation(state: &mut State) -> Result<()> {
        match state.truncation.take() {
            None => Ok(()),
            Some(Truncation::NotStarted(e)) => Err(Error::Truncation(e)),
            Some(Truncation::Running { handle, .. }) => match handle.join() {
                Ok(result) => result,
                // The thread contains the storage's panics; anything else
                // that unwound it is reported the same way, never re-raised.
                Err(payload) => Err(Error::CallbackPanicked {
                    callback: Callback::Truncation,
                    message: panic_message(&*payload),
                }),
            },
        }
    }

    /// Appends one segment at the tip and hands it to `activate` (which
    /// moves it from Vacant to Active) before publishing the new tip.
    /// `activate` runs under the mutex every extension takes, so it should
    /// not allocate: the accountant reserves the segment's tables before
    /// calling this (the table's own growth allocates here, once per
    /// chunk).
    pub(crate) fn extend(
        &self,
        table: &SegmentTable,
        activate: impl FnOnce(usize, Word),
    ) -> Result<usize> {
        let mut state = lock(&self.state);
        Self::finish_truncation(&mut state)?;
        // Relaxed: the tip is only written under the lock we hold.
        let index = self.tip.load(Ordering::Relaxed);
        table.grow_to(index + 1);
        let word = table.segment(index).load();
        assert_eq!(
            word.state,
            SegmentState::Vacant,
            "segment at the tip is not vacant"
        );
        activate(index, word);
        // Release: publishes the activated segment with the tip.
        self.tip.store(index + 1, Ordering::Release);
        Ok(index)
    }

    /// Shrinks the file over free segments at the top, if there are any
    /// and nobody else holds the sequencer. Never blocks: a busy sequencer
    /// or a truncation still in flight means "not now".
    pub(crate) fn try_shrink(
        &self,
        table: &SegmentTable,
        storage: &std::sync::Arc<dyn Storage>,
        segment_size: u64,
        temporary: bool,
    ) -> Result<()> {
        let tip = self.tip();
        // A set bit over a word that is not claimable is a reuse the
        // combiner has not collected yet: nothing to shrink, and no reason
        // to take the lock.
        if tip == 0 || !table.is_free(tip - 1) || !table.segment(tip - 1).load().is_claimable() {
            return Ok(());
        }
        let Some(mut state) = try_lock(&self.state) else {
            return Ok(());
        };
        if let Some(Truncation::Running { done, .. }) = &state.truncation {
            // Acquire: pairs with the truncation thread's release store.
            if !done.load(Ordering::Acquire) {
                return Ok(());
            }
        }
        Self::finish_truncation(&mut state)?;
        // Relaxed: written only under the lock we hold.
        let old_tip = self.tip.load(Ordering::Relaxed);
        let mut new_tip = old_tip;
        // Each top segment is claimed (Free -> Vacant, the token `next`
        // competes for) before the tip is lowered over it.
        while new_tip > 0 && table.vacate_free(new_tip - 1) {
            new_tip -= 1;
        }
        if new_tip == old_tip {
            return Ok(());
        }
        // Release: the Vacant transitions above are visible with the tip.
        self.tip.store(new_tip, Ordering::Release);
        let bytes = (old_tip - new_tip) as u64 * segment_size;
        // Relaxed: a statistic.
        self.bytes_truncated.fetch_add(bytes, Ordering::Relaxed);
        // Relaxed: a statistic, on the rare truncation path.
        self.truncations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let len = new_tip as u64 * segment_size;
        let done = Arc::new(AtomicBool::new(false));
        let storage = storage.clone();
        let finished = done.clone();
        let spawned = try_spawn(move || {
            let result = contain(Callback::Truncation, || -> io::Result<()> {
                // The store may not have written the top segments yet:
                // never lengthen the file here.
                if storage.len()? > len {
                    storage.set_len(len)?;
                }
                if !temporary {
                    storage.sync()?;
                }
                Ok(())
            })
            .and_then(|io| io.map_err(Error::Truncation));
            // Release: the joiner sees the finished truncation.
            finished.store(true, Ordering::Release);
            result
        });
        state.truncation = Some(match spawned {
            Ok(handle) => Truncation::Running { handle, done },
            Err(e) => Truncation::NotStarted(e),
        });
        Ok(())
    }

    /// Waits for an outstanding truncation (used on drop and by tests).
    pub(crate) fn wait_truncation(&self) -> Result<()> {
        Self::finish_truncation(&mut lock(&self.state))
    }
}

/// The sequencer's fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        field!(Sequencer, tip, hot),
        field!(Sequencer, state, hot),
        // Written once per truncation.
        field!(Sequencer, bytes_truncated, COLD),
        field!(Sequencer, truncations, COLD),
    ]
}
