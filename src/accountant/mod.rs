//! The facade: [`Accountant`], the public face of the write path, with the
//! machinery only it drives: the combiner that seals and drains in lsn
//! order, the audit and statistics, introspection, the metrics it
//! publishes, and the rebuild from a recovery snapshot.
//!
//! **May use** every room below it: the core, cleaning, recovery and the
//! shared vocabulary. Nothing below imports from here.
//!
//!
//! Hot-path calls (`mark_link`, `mark_replace`, `clean`, and `next` when a
//! free segment exists) touch only the segments they name: one packed
//! atomic word each, that segment's sharded page sets and counters (a
//! replace records its deferred work in its page's shard, under the lock
//! its link takes). `stabilize`
//! hands ordered work to the combiner and never waits. Only growing the
//! file takes the sequencer's lock.

pub(crate) mod audit;
pub(crate) mod combiner;
pub mod introspect;
pub mod metrics;
mod rebuild;
#[cfg(all(test, sharing_audit))]
mod sharing_audit;

use std::sync::Arc as StdArc;

use smallvec::SmallVec;

use crate::accountant::combiner::Combiner;
use crate::cleaning::config::{Config, Mode};
use crate::cleaning::placement::{self, Relocation, Skip, StreamId};
use crate::core::freelist::{Epochs, RewriteGate};
use crate::core::pidset::{FreshHint, LsnSet, Reserved};
use crate::core::poison::Poison;
use crate::core::segment::{
    Deferred, DeferredReplacement, RawWord, Segment, SegmentState, Word, MAX_SEGMENT_NUMBER,
};
use crate::core::sequencer::Sequencer;
use crate::core::sync::epoch::Collector;
use crate::core::sync::{
    lock, Arc, AtomicI64, AtomicU64, AtomicUsize, Backoff, CachePadded, HintWord, Ordering,
};
use crate::core::table::{Bits, SegmentTable};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::types::{DiskPtr, Lid, Lsn, PageId};

#[cfg(not(loom))]
crate::core::sync::thread_local! {
    /// Where this thread's next `clean` starts looking among the segments
    /// with pages to relocate (a hint: one per thread, whatever the
    /// accountant; `clean` wraps around from any start).
    static CLEAN_CURSOR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
// Loom's macro takes no `const` block; the same cursor, per model thread.
#[cfg(loom)]
crate::core::sync::thread_local! {
    static CLEAN_CURSOR: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Segments per live state, kept as counters so the heuristics need no
/// scan. Relaxed throughout: statistics and heuristics tolerate a count
/// that lags a concurrent transition.
///
/// Written by the combiner only: `next` writes no counter. The combiner
/// counts a segment Active when it collects the activation (so between a
/// `next` and the next pass the count lags by the segments activated
/// meanwhile; every reader, the passes, the metrics they publish and the
/// audit, reads after collecting). Each on a line of its own: `draining`
/// is read by every `clean`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    active: CachePadded<AtomicUsize>,
    inactive: CachePadded<AtomicUsize>,
    draining: CachePadded<AtomicUsize>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CountSnapshot {
    pub(crate) active: usize,
    pub(crate) inactive: usize,
    pub(crate) draining: usize,
}

impl Counts {
    fn counter(&self, state: SegmentState) -> Option<&AtomicUsize> {
        match state {
            // A Sealing segment counts as Active until its seal finishes.
            SegmentState::Active | SegmentState::Sealing => Some(&*self.active),
            SegmentState::Inactive => Some(&*self.inactive),
            SegmentState::Draining => Some(&*self.draining),
            // Freeing segments are counted where they wait: the combiner's
            // stable-lsn list and the table's epoch counter.
            SegmentState::Freeing | SegmentState::Free | SegmentState::Vacant => None,
        }
    }

    pub(crate) fn moved(&self, from: SegmentState, to: SegmentState) {
        if let Some(c) = self.counter(from) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = self.counter(to) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A segment became Active (the combiner, collecting the activation).
    pub(crate) fn activated(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the counters (recovery, before the accountant is shared).
    pub(crate) fn set(&self, active: usize, inactive: usize, draining: usize) {
        self.active.store(active, Ordering::Relaxed);
        self.inactive.store(inactive, Ordering::Relaxed);
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CountSnapshot {
        CountSnapshot {
            active: self.active.load(Ordering::Relaxed),
            inactive: self.inactive.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}

/// Everything the accountant's parts share.
///
/// Cache lines: every field written after construction by more than one
/// thread, or written by one and read by every call, is `CachePadded` (or
/// pads its hot parts inside), so that it has a line of its own; the
/// fields that are only read (configuration, pointers to the parts) share
/// lines only with each other. `tests::hot_fields_have_lines_of_their_own`
/// checks it.
pub(crate) struct Shared {
    /// The configuration as built. Its fixed part (segment size, mode,
    /// streams, durability) is read everywhere; its cleaning tunables are
    /// the initial ones: cleaning decisions read [`Shared::tuned`].
    pub(crate) config: Config,
    /// log2 of the segment size, kept so the hot path shifts without
    /// recomputing it.
    pub(crate) segment_shift: u32,
    /// The configuration in force: `config` with the tunables as
    /// [`Accountant::tune`] last set them. Loaded once per combiner pass
    /// (and by `config()`); writers never read it.
    pub(crate) tuned: arc_swap::ArcSwap<Config>,
    /// Set by `tune` after it swapped `tuned`, cleared by the combiner
    /// pass that then reconsiders every Inactive segment under the new
    /// values (a std atomic: `tune` is outside the loom models).
    pub(crate) retuned: std::sync::atomic::AtomicBool,
    pub(crate) storage: StdArc<dyn Storage>,
    /// Captured by epoch-deferred landing closures (hence its own `Arc`:
    /// they must not keep the collector, which holds them, alive). Read by
    /// every call, never written.
    pub(crate) table: CachePadded<Arc<SegmentTable>>,
    pub(crate) epochs: Epochs,
    pub(crate) sequencer: Sequencer,
    pub(crate) combiner: Combiner,
    pub(crate) gate: RewriteGate,
    pub(crate) counts: Counts,
    /// The highest stabilized segment lsn (−1: none). Written only by the
    /// combiner, read by every `next`.
    pub(crate) max_stabilized: CachePadded<AtomicI64>,
    /// What a segment activated for the first time reserves for its pages
    /// and records (`PageMap::clear`). Written by the combiner at each
    /// seal, read by `next` when it activates a segment.
    pub(crate) fresh_hint: CachePadded<FreshHint>,
    /// Segment numbers of the Active segments: with the stabilized lsn
    /// below them, this makes "an lsn never given before" checkable
    /// without ordering `next` calls (several write heads may call `next`
    /// out of lsn order). `next` reserves its lsn here and places it (the
    /// registration the combiner collects; an unplaced reservation is
    /// what `pause_rewriting` waits for); the combiner removes it on
    /// deactivation.
    pub(crate) active_lsns: LsnSet,
    /// Average lifetime (lsn bytes from activation to free) of the stream-0
    /// segments freed lately; `u64::MAX` until one is. Written by the
    /// combiner only; placement advice reads it.
    pub(crate) user_lifetime: CachePadded<AtomicU64>,
    /// A lower bound of one past the highest segment number `next` has
    /// handed out (or recovery found), raised by the combiner as it
    /// collects activations: `stabilize` never seals beyond the handed
    /// out segments, and asks the in-use set only when a goal is above
    /// this. `next` does not write it.
    pub(crate) handed_out: CachePadded<AtomicU64>,
    /// Broken internal invariants met where no panic may surface.
    pub(crate) poison: Arc<Poison>,
    /// The metrics snapshot the last combiner pass published (written by
    /// every pass).
    pub(crate) metrics: CachePadded<arc_swap::ArcSwap<crate::accountant::metrics::Metrics>>,
    /// How many drain starts wait for their seal bound or a refresh
    /// (`combiner::PendingIndex::complete_or_defer`): written by the
    /// combiner when it changes, read by a `clean` that finds no page to
    /// suggest. A hint, ordering nothing: the completion itself runs under
    /// the combiner's token, and a stale 0 costs one `clean` that returns
    /// nothing, as a `clean` racing a drain start may.
    pub(crate) drains_waiting: CachePadded<HintWord>,
}

/// The largest fragment size any configuration accepts: sizes are summed
/// per page and per segment in 63-bit fields (the page map keeps a flag in
/// bit 63), so a bound far below 2^63 keeps every sum exact.
pub(crate) const MAX_FRAGMENT_BYTES: u64 = 1 << 32;

/// Tracks which segments of one log file hold which pages, hands out
/// segments for new writes, decides what to clean, and shrinks the file.
///
/// All methods take `&self`; share it between writer threads with an
/// `Arc`. See the [crate docs](crate) for the caller contract.
pub struct Accountant {
    pub(crate) shared: Shared,
}

impl std::fmt::Debug for Accountant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accountant")
            .field("config", &self.config())
            .field("tip", &self.tip())
            .field("stable_lsn", &self.stable_lsn())
            .finish_non_exhaustive()
    }
}

impl Accountant {
    /// An empty accountant over `storage`, deferring frees through
    /// crossbeam-epoch's [default collector](crate::default_collector) (the
    /// one `crossbeam_epoch::pin` uses). Readers pin
    /// [`collector`](Self::collector), as for every constructor (see
    /// [Readers and the collector](crate#readers-and-the-collector)).
    pub fn new(config: Config, storage: std::sync::Arc<dyn Storage>) -> Accountant {
        Self::with_collector(
            config,
            storage,
            crate::core::sync::epoch::default_collector().clone(),
        )
    }

    /// An empty accountant deferring frees through `collector`, which
    /// readers pin (through [`collector`](Self::collector)), so a segment
    /// is never reused while a reader that may hold a pointer into it is
    /// pinned ([property B](crate::properties#b-no-reuse-under-readers)).
    pub fn with_collector(
        config: Config,
        storage: std::sync::Arc<dyn Storage>,
        collector: Collector,
    ) -> Accountant {
        let combiner = Combiner::new(config.segment_size, config.space_target.is_some());
        Self::assemble(
            config,
            storage,
            collector,
            SegmentTable::new(),
            0,
            combiner,
            -1,
        )
    }

    /// Puts the parts together (for a fresh or a recovered accountant).
    pub(crate) fn assemble(
        config: Config,
        storage: StdArc<dyn Storage>,
        collector: Collector,
        table: SegmentTable,
        tip: usize,
        combiner: Combiner,
        max_stabilized: Lsn,
    ) -> Accountant {
        let gate = RewriteGate::new(config.mode == Mode::Linear);
        let poison = Arc::new(Poison::new());
        // Everything recovered (and everything stabilized) was handed out.
        let recovered = (0..tip)
            .filter_map(|index| table.segment(index).load().segno)
            .max()
            .map_or(0, |segno| segno + 1);
        let ss = config.segment_size as Lsn;
        let stabilized = ((max_stabilized + ss) / ss) as u64;
        Accountant {
            shared: Shared {
                storage,
                table: CachePadded::new(Arc::new(table)),
                epochs: Epochs::new(collector, poison.clone()),
                sequencer: Sequencer::new(tip),
                combiner,
                gate,
                counts: Counts::default(),
                max_stabilized: CachePadded::new(AtomicI64::new(max_stabilized)),
                fresh_hint: CachePadded::new(FreshHint::new()),
                active_lsns: LsnSet::new(),
                user_lifetime: CachePadded::new(AtomicU64::new(u64::MAX)),
                handed_out: CachePadded::new(AtomicU64::new(recovered.max(stabilized))),
                poison,
                metrics: CachePadded::new(arc_swap::ArcSwap::from_pointee(
                    crate::accountant::metrics::Metrics {
                        segment_size: config.segment_size,
                        file_bytes: tip as u64 * config.segment_size,
                        ..Default::default()
                    },
                )),
                drains_waiting: CachePadded::new(HintWord::new(0)),
                tuned: arc_swap::ArcSwap::from_pointee(config.clone()),
                retuned: std::sync::atomic::AtomicBool::new(false),
                segment_shift: config.segment_size.trailing_zeros(),
                config,
            },
        }
    }

    /// The configuration in force: as built, with the cleaning tunables as
    /// [`tune`](Self::tune) last changed them. One lock-free load.
    pub fn config(&self) -> StdArc<Config> {
        self.shared.tuned.load_full()
    }

    /// Changes the cleaning tunables of the live accountant: the space
    /// target, the cleaning policy, the cleanup threshold and the skew,
    /// all at once (so a policy that needs a space target can come with
    /// one). Validated by the rules of
    /// [`ConfigBuilder::build`](crate::ConfigBuilder::build) (see
    /// [`Config::tuned`]); returns the configuration now in force.
    ///
    /// The combiner loads the tunables once per pass, so they take effect
    /// at the next pass (the next `stabilize` that raises the stable lsn):
    /// a new space target drains victims until the file, as it will be
    /// once they are relocated, fits it, paced as always to the segments
    /// sealed; a new policy, threshold or skew is asked again about every
    /// Inactive segment in that pass, and then as usual. Segments already
    /// Draining stay Draining, and a looser target only stops new drains:
    /// the file follows it as writes go on. Writers never read the
    /// tunables: `mark_link`, `mark_replace`, `next` and `clean` pay
    /// nothing for them. Concurrent `tune` calls apply one after the
    /// other, each to the result of the last.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use segment_accountant::{policy::Greedy, Accountant, Config, MemStorage, Tuning};
    ///
    /// let acc = Accountant::new(Config::default(), Arc::new(MemStorage::new()));
    /// let now = acc.tune(Tuning::new().space_target(Some(1.25)).policy(Greedy))?;
    /// assert_eq!(now.space_target(), Some(1.25));
    /// assert_eq!(acc.config().policy().name(), "greedy");
    /// // A bad value changes nothing.
    /// assert!(acc.tune(Tuning::new().cleanup_threshold(0)).is_err());
    /// assert_eq!(acc.config().cleanup_threshold(), 40);
    /// # Ok::<(), segment_accountant::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// The [`ConfigError`](crate::ConfigError) of the first value out of
    /// range; nothing changes then.
    pub fn tune(
        &self,
        tuning: crate::cleaning::config::Tuning,
    ) -> std::result::Result<StdArc<Config>, crate::error::ConfigError> {
        let shared = &self.shared;
        let mut current = shared.tuned.load_full();
        loop {
            let next = StdArc::new(current.tuned(&tuning)?);
            // Swapped only if no other `tune` came in between; else apply
            // the changes again to the configuration it left.
            let previous = shared.tuned.compare_and_swap(&current, next.clone());
            if StdArc::ptr_eq(&previous, &current) {
                // Release: the combiner that takes the flag (Acquire) loads
                // this configuration or a later one.
                shared
                    .retuned
                    .store(true, std::sync::atomic::Ordering::Release);
                return Ok(next);
            }
            current = arc_swap::Guard::into_inner(previous);
        }
    }

    /// The collector frees are deferred through: the one readers pin (see
    /// [Readers and the collector](crate#readers-and-the-collector)).
    pub fn collector(&self) -> &Collector {
        self.shared.epochs.collector()
    }

    fn segment_size(&self) -> u64 {
        self.shared.config.segment_size
    }

    /// log2 of the segment size (a power of two): the hot path shifts
    /// instead of dividing.
    #[inline(always)]
    fn segment_shift(&self) -> u32 {
        self.shared.segment_shift
    }

    /// The largest fragment a write may record: the segment size, at most
    /// [`MAX_FRAGMENT_BYTES`].
    #[inline(always)]
    fn max_fragment_bytes(&self) -> u64 {
        self.segment_size().min(MAX_FRAGMENT_BYTES)
    }

    /// The file tip in bytes: every lid below it may be in use.
    pub fn tip(&self) -> u64 {
        self.shared.sequencer.tip() as u64 * self.segment_size()
    }

    /// The highest stabilized segment lsn (−1 before the first
    /// `stabilize`).
    pub fn stable_lsn(&self) -> Lsn {
        // Acquire: pairs with the combiner's release store.
        self.shared.max_stabilized.load(Ordering::Acquire)
    }

    #[inline]
    fn segno_of(&self, lsn: Lsn) -> Result<u64> {
        if lsn < 0 {
            return Err(Error::NegativeLsn { lsn });
        }
        let segno = lsn as u64 >> self.segment_shift();
        if segno > MAX_SEGMENT_NUMBER {
            return Err(Error::LsnOutOfRange {
                lsn,
                max: (MAX_SEGMENT_NUMBER * self.segment_size()) as Lsn,
            });
        }
        Ok(segno)
    }

    /// Checks a fragment size: at most the segment size (a fragment lies
    /// within its segment) and at most [`MAX_FRAGMENT_BYTES`].
    #[inline(always)]
    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.max_fragment_bytes() {
            return Err(self.size_error(size));
        }
        Ok(())
    }

    /// The error of an oversized fragment, built out of the hot path.
    #[cold]
    #[inline(never)]
    fn size_error(&self, size: u64) -> Error {
        let max = self.max_fragment_bytes();
        Error::SizeOutOfRange { size, max }
    }

    /// The segment of `lid`, which must be below the tip.
    #[inline]
    fn segment_at(&self, lid: Lid) -> Result<(usize, &Segment)> {
        let index = lid >> self.segment_shift();
        let tip = self.shared.sequencer.tip();
        if index >= tip as u64 {
            return Err(Error::LidBeyondTip {
                lid,
                tip: tip as u64 * self.segment_size(),
            });
        }
        let index = index as usize;
        Ok((index, self.shared.table.segment(index)))
    }

    /// Checks that `ptr` is in an Active segment whose base lsn is `lsn`
    /// rounded down; returns its index, segment and (raw) word.
    #[inline(always)]
    fn write_target(&self, lsn: Lsn, ptr: DiskPtr) -> Result<(usize, &Segment, RawWord)> {
        let segno = self.segno_of(lsn)?;
        let (index, segment) = self.segment_at(ptr.lid())?;
        let raw = segment.load_raw();
        // One masked compare on the hot path; the error is told apart (and
        // built) out of line.
        if raw.is_active_at(segno) {
            Ok((index, segment, raw))
        } else {
            Err(self.write_target_error(lsn, segno, index, raw.decode()))
        }
    }

    /// Why `word` is not the Active segment of `segno`, checked in this
    /// order: reused since, covered by a stabilize, not Active, another
    /// lsn.
    #[cold]
    #[inline(never)]
    fn write_target_error(&self, lsn: Lsn, segno: u64, index: usize, word: Word) -> Error {
        let lid = index as u64 * self.segment_size();
        let segment_lsn = word.lsn(self.segment_size());
        if let Some(segment_lsn) = segment_lsn {
            if word.segno > Some(segno) {
                return Error::StaleSegment {
                    lid,
                    lsn,
                    segment_lsn,
                };
            }
        }
        if let Some(stable_lsn) = self.covering_stabilize(segno, word) {
            return Error::SegmentSealed {
                lid,
                lsn,
                segment_lsn: (segno * self.segment_size()) as Lsn,
                stable_lsn,
            };
        }
        if word.state != SegmentState::Active {
            return Error::SegmentNotActive {
                lid,
                state: word.state,
            };
        }
        debug_assert_ne!(word.segno, Some(segno), "the write target was valid");
        Error::LsnMismatch {
            lid,
            lsn,
            segment_lsn: segment_lsn.unwrap_or(-1),
        }
    }

    /// The stabilized segment lsn that covered segment number `segno`
    /// before a write into it, if one did: the published one when it is at
    /// or above the segment, else, when `word` shows this very incarnation
    /// sealed (by a pass that has not published yet), the one the
    /// requested goal seals up to. "Sealed" includes sealed and then freed
    /// in that same pass (a segment that sealed empty, or that the pass's
    /// replacements emptied, is Freeing or Free before the pass publishes
    /// its lsn; its word keeps its segment number until it is reused).
    /// Out of line, like the error it is for.
    #[cold]
    #[inline(never)]
    fn covering_stabilize(&self, segno: u64, word: Word) -> Option<Lsn> {
        let ss = self.segment_size();
        let base = (segno * ss) as Lsn;
        let published = self.stable_lsn();
        if base <= published {
            return Some(published);
        }
        let sealed = word.segno == Some(segno)
            && matches!(
                word.state,
                SegmentState::Sealing
                    | SegmentState::Inactive
                    | SegmentState::Draining
                    | SegmentState::Freeing
                    | SegmentState::Free
            );
        if !sealed {
            return None;
        }
        // A pass seals only segments below its goal, and goals only rise.
        let goal = self.shared.combiner.requested_goal();
        let sealing_up_to = (goal * ss) as Lsn - ss as Lsn;
        debug_assert!(sealing_up_to >= base, "sealed above the requested goal");
        Some(sealing_up_to.max(base))
    }

    /// Hands out the file offset for the segment starting at log sequence
    /// number `lsn`: a multiple of the segment size, never given before
    /// (above the stabilized lsn and not the lsn of an Active segment).
    /// Calls for different lsns may come in any order, from any thread.
    ///
    /// Reuses the lowest-offset free segment that is safe to reuse (no
    /// reader pinned since it was freed, and the stable lsn past it), first
    /// shrinking the file over free segments at its top; extends the file
    /// by one segment if rewriting is paused or nothing is free. Only the
    /// extension takes the sequencer's lock.
    ///
    /// # Errors
    /// [`Error::NegativeLsn`], [`Error::UnalignedLsn`],
    /// [`Error::LsnOutOfRange`], [`Error::LsnInUse`],
    /// [`Error::LsnAlreadyStable`], and [`Error::Truncation`] (or
    /// [`Error::CallbackPanicked`] for [`Callback::Truncation`]) when an
    /// earlier asynchronous truncation failed (reported once; retry);
    /// [`Error::CallbackPanicked`] for [`Callback::EpochCollector`] if a
    /// closure deferred on the collector panicked while this call flushed
    /// it (nothing changed; retry); [`Error::Poisoned`].
    ///
    /// [`Callback::Truncation`]: crate::Callback::Truncation
    /// [`Callback::EpochCollector`]: crate::Callback::EpochCollector
    pub fn next(&self, lsn: Lsn) -> Result<Lid> {
        self.next_in(lsn, 0)
    }

    /// [`next`](Self::next) for write head `stream` (see
    /// [`placement`](crate::placement)): the segment remembers its stream,
    /// so relocation advice and lifetime statistics can follow it.
    ///
    /// # Errors
    /// Those of `next`, and first [`Error::UnknownStream`].
    pub fn next_in(&self, lsn: Lsn, stream: StreamId) -> Result<Lid> {
        self.shared.poison.check()?;
        let streams = self.shared.config.stream_count();
        if stream >= streams {
            return Err(Error::UnknownStream { stream, streams });
        }
        let segno = self.segno_of(lsn)?;
        if lsn as u64 & (self.segment_size() - 1) != 0 {
            return Err(Error::UnalignedLsn {
                lsn,
                segment_size: self.segment_size(),
            });
        }
        #[cfg(seeded_bugs)]
        let check_first = crate::seeded::active(crate::seeded::Bug::CheckBeforeReserve);
        #[cfg(not(seeded_bugs))]
        let check_first = false;
        if check_first {
            self.check_not_stable(lsn)?;
        }
        // Reserve first, then check against the stabilized lsn: the
        // combiner publishes a new stabilized lsn before the lsns it sealed
        // leave the in-use map, so a reservation that succeeds for an lsn
        // that was already handed out and sealed sees it stable (the map's
        // shard lock orders our insert after that removal). The map's
        // per-key atomicity settles competing calls for one lsn.
        let reservation = self
            .shared
            .active_lsns
            .reserve(segno)
            .ok_or(Error::LsnInUse { lsn })?;
        if !check_first {
            self.check_not_stable(lsn)?;
        }
        let index = self.place(segno, stream)?;
        // Placed (and so registered, in `activate`): a drain start now finds
        // the replacements recorded here (see
        // `combiner::PendingIndex::complete`).
        reservation.keep();
        // A stabilize that covers `lsn` may have been requested while we
        // placed: make sure a combiner pass collects our registration (so
        // the segment is sealed as if this call came first). A load, unless
        // the goal already covers `lsn` (see `Combiner::announce`).
        self.shared.combiner.announce(&self.shared, segno);
        Ok(index as u64 * self.segment_size())
    }

    /// `lsn` must be above the stabilized lsn.
    fn check_not_stable(&self, lsn: Lsn) -> Result<()> {
        let stable = self.stable_lsn();
        if lsn <= stable {
            return Err(Error::LsnAlreadyStable { lsn, stable });
        }
        Ok(())
    }

    fn place(&self, segno: u64, stream: StreamId) -> Result<usize> {
        let shared = &self.shared;
        // After the reservation (see `RewriteGate::pause`): a pauser that
        // missed our reservation made us see its pause here; one that saw
        // it waits until we placed or dropped it.
        if shared.gate.is_open() {
            if let Some(index) = self.reuse(segno, stream)? {
                return Ok(index);
            }
        }
        // Reserved before the sequencer's mutex, so that no `next` that
        // extends waits for another's allocations.
        let reserved = Reserved::fresh(&shared.fresh_hint);
        let index = shared.sequencer.extend(&shared.table, |index, word| {
            self.activate(index, word, segno, stream, Some(reserved));
        })?;
        crate::trace::event!(
            DEBUG,
            "append",
            lid = index as u64 * self.segment_size(),
            lsn = (segno * self.segment_size()) as Lsn,
            stream,
            file_bytes = (index as u64 + 1) * self.segment_size(),
            "file extended"
        );
        Ok(index)
    }

    /// Cumulative counters (user and relocated bytes, reuse, truncation,
    /// drains, passes) and the derived write and space amplification, as
    /// of the last combiner pass (see [`Metrics`](crate::Metrics)). O(1):
    /// one lock-free load of the snapshot the combiner published.
    pub fn metrics(&self) -> std::sync::Arc<crate::accountant::metrics::Metrics> {
        self.shared.metrics.load_full()
    }

    /// The reuse path, inside the rewrite gate.
    fn reuse(&self, segno: u64, stream: StreamId) -> Result<Option<usize>> {
        let shared = &self.shared;
        shared.sequencer.try_shrink(
            &shared.table,
            &shared.storage,
            self.segment_size(),
            shared.config.temporary,
        )?;
        let claim = || shared.table.claim_free(shared.sequencer.tip());
        let mut claimed = claim();
        // Acquire: pairs with the release decrement in `land`.
        if claimed.is_none() && shared.table.epoch_waiting.load(Ordering::Acquire) > 0 {
            // A panic of another deferred closure fails this call before
            // anything is claimed: the caller may retry.
            shared.epochs.flush(&shared.table).1?;
            claimed = claim();
        }
        if let Some((index, word)) = claimed {
            self.activate(index, word, segno, stream, None);
            crate::trace::event!(
                DEBUG,
                "reuse",
                lid = index as u64 * self.segment_size(),
                lsn = (segno * self.segment_size()) as Lsn,
                stream,
                "segment reused"
            );
        }
        Ok(claimed.map(|(index, _)| index))
    }

    /// Makes a claimed segment Active for `segno` and registers it with the
    /// combiner: the registration is the placement of `segno`'s entry in the
    /// in-use lsn set, which `next` reserved (`reused`: claimed below the
    /// tip, not appended). The combiner collects placements from the set
    /// and counts them, Active and reused or appended, and clears a reused
    /// segment's stale free bit, so `next` writes no counter, no queue and
    /// no bit: outside the segment, only the set's shard. An appended
    /// segment takes the tables `next` reserved before the sequencer's
    /// mutex (`reserved`); a reused one reserves its own.
    fn activate(
        &self,
        index: usize,
        word: Word,
        segno: u64,
        stream: StreamId,
        reserved: Option<Reserved>,
    ) {
        let segment = self.shared.table.segment(index);
        let reused = reserved.is_none();
        segment.reset(&self.shared.fresh_hint, reserved);
        // Relaxed: published by the activation CAS (release) below.
        segment.stream.store(stream, Ordering::Relaxed);
        segment.must_transition(word, word.activated(segno));
        debug_assert!(matches!(
            word.state,
            SegmentState::Free | SegmentState::Vacant
        ));
        self.shared.active_lsns.set_placed(segno, index, reused);
    }

    /// Records that a fragment of page `pid` of `size` bytes was placed at
    /// `ptr`, in the segment whose base lsn is `lsn` rounded down.
    ///
    /// # Errors
    /// [`Error::LidBeyondTip`], [`Error::SegmentSealed`] (a `stabilize`
    /// covered the segment before this call: the error names the segment
    /// lsn and the stabilized lsn), [`Error::SegmentNotActive`],
    /// [`Error::LsnMismatch`], [`Error::StaleSegment`],
    /// [`Error::NegativeLsn`], [`Error::SizeOutOfRange`] (`size` above the
    /// segment size or 2^32), [`Error::Poisoned`]; [`Error::SegmentSealed`]
    /// too if a concurrent `stabilize` sealed the segment during the call
    /// (a broken caller contract). Nothing
    /// changes on error: the link lands wholly before the seal or not at
    /// all.
    // Always inlined, with `link_if_active_at`: out of line, the call costs
    // more than the work (docs/performance-log.md, `mark_link` against its
    // floor). The error cases stay out of line (`#[cold]`).
    #[inline(always)]
    pub fn mark_link(&self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64) -> Result<()> {
        self.shared.poison.check()?;
        // The hot path checks the arguments with as few branches as it can
        // and leaves telling the errors apart to `mark_link_slow`, out of
        // line. In particular it does not compare the lid with the tip: a
        // segment at or above the tip is never Active (the tip is lowered
        // over Vacant segments only, and none is activated above it), so
        // the word check under the lock refuses it, and the error path
        // then reports `LidBeyondTip` first, as the checks in order would.
        let shift = self.segment_shift();
        let segno = lsn as u64 >> shift;
        if lsn >= 0 && segno <= MAX_SEGMENT_NUMBER && size <= self.max_fragment_bytes() {
            if let Some(segment) = self.shared.table.get((ptr.lid() >> shift) as usize) {
                // The seal protocol: the segment is checked to be the
                // Active one of `segno` once, under the shard lock the link
                // mutates under (see `segment`); the word seen there tells
                // the error apart.
                return match segment.link_if_active_at(pid, size, segno) {
                    Ok(()) => Ok(()),
                    Err(seen) => self.mark_link_slow(pid, lsn, ptr.lid(), size, Some(seen)),
                };
            }
        }
        self.mark_link_slow(pid, lsn, ptr.lid(), size, None)
    }

    /// A `mark_link` the hot path refused, checked again in the documented
    /// order: the error of the first check that fails, else what the word
    /// seen under the lock says. If the hot path found no segment (its
    /// table chunk was not visible yet) but the lid is below the tip now,
    /// the tip's Acquire load made the chunk visible: the link is tried
    /// again here, as the hot path would have.
    #[cold]
    #[inline(never)]
    fn mark_link_slow(
        &self,
        pid: PageId,
        lsn: Lsn,
        lid: Lid,
        size: u64,
        seen: Option<RawWord>,
    ) -> Result<()> {
        self.check_size(size)?;
        let segno = self.segno_of(lsn)?;
        let (index, segment) = self.segment_at(lid)?;
        let seen = match seen {
            Some(seen) => seen,
            None => match segment.link_if_active_at(pid, size, segno) {
                Ok(()) => return Ok(()),
                Err(seen) => seen,
            },
        };
        Err(self.write_target_error(lsn, segno, index, seen.decode()))
    }

    /// The error of a write into segment `index` that a seal refused.
    #[cold]
    #[inline(never)]
    fn raced(&self, pid: PageId, index: usize) -> Error {
        Error::LinkRacedStabilize {
            pid,
            lid: index as u64 * self.segment_size(),
        }
    }

    /// Records that page `pid` was rewritten completely at `new_ptr`
    /// (`size` bytes, at `lsn`), making every fragment at `old_ptrs`
    /// garbage once the new segment is stable. Freeing a page is the same
    /// call with `new_ptr` at the page's free record.
    ///
    /// Old blob pointers become garbage blob files, removed when the new
    /// segment becomes stable, except when the only old pointer is the
    /// same blob the new pointer re-links.
    ///
    /// # Errors
    /// Those of [`mark_link`](Self::mark_link) for `new_ptr`; for an old
    /// pointer, [`Error::LidBeyondTip`],
    /// [`Error::ReplacedFromFreeSegment`] and [`Error::StaleSegment`] (its
    /// segment was reused at an lsn above `lsn`). Nothing changes on error.
    pub fn mark_replace(
        &self,
        pid: PageId,
        lsn: Lsn,
        old_ptrs: &[DiskPtr],
        new_ptr: DiskPtr,
        size: u64,
    ) -> Result<()> {
        self.shared.poison.check()?;
        self.check_size(size)?;
        let (index, segment, word) = self.write_target(lsn, new_ptr)?;
        // Validate every old pointer before changing anything.
        let mut olds: SmallVec<[(u32, u64); 4]> = SmallVec::new();
        for old in old_ptrs {
            let (old_index, old_segment) = self.segment_at(old.lid())?;
            if old_index == index {
                continue;
            }
            let old_word = old_segment.load();
            let lid = old_index as u64 * self.segment_size();
            if matches!(
                old_word.state,
                SegmentState::Free | SegmentState::Freeing | SegmentState::Vacant
            ) {
                return Err(Error::ReplacedFromFreeSegment {
                    pid,
                    lid,
                    state: old_word.state,
                });
            }
            let old_lsn = old_word.lsn(self.segment_size()).unwrap_or(-1);
            if old_lsn > lsn {
                return Err(Error::StaleSegment {
                    lid,
                    lsn,
                    segment_lsn: old_lsn,
                });
            }
            if !olds.iter().any(|&(i, _)| i == old_index as u32) {
                // Free segments were refused above: this one has an lsn.
                olds.push((old_index as u32, old_word.segno.unwrap_or(u64::MAX)));
            }
        }
        let relinks_same_blob = old_ptrs.len() == 1
            && old_ptrs[0].blob().is_some()
            && old_ptrs[0].blob() == new_ptr.blob();
        // The seal protocol: the seal takes the records and counts the
        // page map of each shard under one hold of its lock, so checking
        // the word under the page's shard lock and doing everything below
        // before releasing it (the link, the records, which live in that
        // shard, the flags) makes the replace land wholly before the seal
        // reads the shard, or not at all.
        #[cfg(seeded_bugs)]
        let early_flags = crate::seeded::active(crate::seeded::Bug::FlagBeforeRecord);
        #[cfg(seeded_bugs)]
        let early = early_flags && self.clear_draining_flags(pid, &olds);
        let count_relocations = self.shared.config.relocation_streams == 0;
        #[cfg(seeded_bugs)]
        let checked_outside = crate::seeded::active(crate::seeded::Bug::ReplaceCheckOutsideLock);
        #[cfg(seeded_bugs)]
        if checked_outside && segment.load_raw() != word {
            return Err(self.raced(pid, index));
        }
        let open = || {
            #[cfg(seeded_bugs)]
            if checked_outside {
                return Ok(());
            }
            if segment.load_raw() == word {
                Ok(())
            } else {
                Err(())
            }
        };
        let record = |deferred: &mut Deferred| {
            for &(old_index, old_segno) in &olds {
                deferred.replacements.push(DeferredReplacement {
                    pid,
                    old_index,
                    old_segno,
                });
            }
            if !relinks_same_blob {
                deferred.remove_blobs(old_ptrs.iter().filter_map(|p| p.blob()));
            }
            // The old segments' not-yet-replaced flags: only a Draining
            // one's is cleared here, so that `clean` stops suggesting the
            // page. Any other old segment is not written at all (no line
            // another segment's writers write): the record above is the
            // replacement, and a drain that starts later finds it in this
            // segment's deferred work (`combiner::PendingIndex::complete`).
            // This load must come after the record and under this lock:
            // that is what makes the drain start miss none
            // (docs/protocols/replace.md). The old segment's shard lock is
            // taken inside this one, always from a segment seen Active
            // under its lock to one seen Draining: a segment cannot be both
            // while one of its shard locks is held (it leaves Active for
            // Draining only through a seal, which takes every shard lock).
            #[cfg(seeded_bugs)]
            let relocates = if early_flags {
                early
            } else {
                self.clear_draining_flags(pid, &olds)
            };
            #[cfg(not(seeded_bugs))]
            let relocates = self.clear_draining_flags(pid, &olds);
            if relocates && count_relocations {
                // Counted under the shard lock held here (no shared
                // write); the seal folds it into the metrics.
                deferred.relocated_bytes = deferred.relocated_bytes.saturating_add(size);
                deferred.relocated_pages += 1;
            }
        };
        segment
            .present
            .link_if_then(pid, size, open, record)
            .map_err(|()| self.raced(pid, index))?;
        Ok(())
    }

    /// Clears `pid`'s not-yet-replaced flag in each old segment of `olds`
    /// that is Draining at the recorded incarnation; whether one was
    /// cleared (the replace did a relocation's work). Called under the new
    /// segment's shard lock of the page, after the replacements are
    /// recorded there.
    #[inline]
    fn clear_draining_flags(&self, pid: PageId, olds: &[(u32, u64)]) -> bool {
        let mut relocates = false;
        for &(old_index, old_segno) in olds {
            let old = self.shared.table.segment(old_index as usize);
            if old.load_raw().is_draining_at(old_segno) && old.present.mark_replaced(pid).is_some()
            {
                relocates = true;
            }
        }
        relocates
    }

    /// Tells the accountant that the log is durable and vouched for by a
    /// durable segment header below `stable_lsn` (exclusive): every segment
    /// wholly below it becomes Inactive, in lsn order, applying the
    /// replacements recorded in it.
    ///
    /// Never waits: if another thread is already stabilizing, this hands
    /// the work over and returns (so the effects may land just after the
    /// call returns).
    ///
    /// Runs at most 1 + 4 combiner passes (see `docs/protocols/combiner.md`);
    /// may run `Storage::remove_blob`, the cleaning policy and closures
    /// deferred on the collector, containing their panics.
    ///
    /// # Errors
    /// [`Error::NegativeLsn`]; [`Error::StableBeyondLog`] if the bound would
    /// seal a segment `next` never handed out (nothing changes);
    /// [`Error::BlobRemoval`] if deleting a garbage blob failed, and
    /// [`Error::CallbackPanicked`] if a callback panicked (the bookkeeping
    /// is complete regardless; errors of work done for other callers come
    /// out of later `stabilize` calls, one per call); [`Error::Poisoned`].
    pub fn stabilize(&self, stable_lsn: Lsn) -> Result<()> {
        self.shared.poison.check()?;
        if stable_lsn < 0 {
            return Err(Error::NegativeLsn { lsn: stable_lsn });
        }
        let goal = (stable_lsn as u64 >> self.segment_shift()).min(MAX_SEGMENT_NUMBER + 1);
        // Relaxed: the bound only ever holds segments handed out; a stale
        // one sends us to the exact count below.
        if goal > self.shared.handed_out.load(Ordering::Relaxed) {
            let handed_out = self.handed_out_now();
            if goal > handed_out {
                return Err(Error::StableBeyondLog {
                    stable_lsn,
                    end: (handed_out * self.segment_size()) as Lsn,
                });
            }
        }
        self.shared.combiner.request(&self.shared, goal)
    }

    /// One past the highest segment number handed out before this call
    /// began (for `stabilize` when the combiner's bound is behind). The
    /// `next` that handed it out returned before the store could write the
    /// header that vouches for it, so its placement in the in-use set
    /// happened before this call: the set, read under its shard locks,
    /// shows it placed, or shows it removed. The pass that removed it had
    /// collected its activation and raised `handed_out` past it before the
    /// removal, which happened before our read lock: the load after the
    /// read sees that bound or a higher one. So the set first, then the
    /// bound (the seeded bug `bound-before-set` swaps them).
    #[cold]
    fn handed_out_now(&self) -> u64 {
        let shared = &self.shared;
        // Relaxed: the set's locks order what matters (see above).
        let load = || shared.handed_out.load(Ordering::Relaxed);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::BoundBeforeSet) {
            let early = load();
            return early.max(shared.active_lsns.placed_end());
        }
        let placed = shared.active_lsns.placed_end();
        load().max(placed)
    }

    /// Suggests a page to relocate so that a draining segment empties:
    /// the page, the segment it is drained from (so a store can skip a
    /// page it already moved out of it) and the stream to rewrite it in
    /// (see [`placement`](crate::placement)). `None` if there is nothing
    /// to do, or the pick is the page `skip` names.
    ///
    /// Round-robin over the to-clean set and each segment's pages not yet
    /// replaced; a returned page was, at some instant during the call, not
    /// yet replaced in the returned segment, which was Draining.
    pub fn clean(&self, skip: Skip) -> Option<Relocation> {
        let (pid, index, word) = self.pick_relocation(skip)?;
        let config = &self.shared.config;
        // Relaxed: the stream was published with the segment's activation,
        // which the pick's Acquire load of the word saw.
        let from = self
            .shared
            .table
            .segment(index)
            .stream
            .load(Ordering::Relaxed);
        let stream =
            placement::relocation_stream(config.user_streams, config.relocation_streams, from);
        let ss = self.segment_size();
        Some(Relocation {
            pid,
            stream,
            segment_lid: index as u64 * ss,
            // A Draining segment has an lsn.
            segment_lsn: word.lsn(ss).unwrap_or(-1),
        })
    }

    /// The user stream a full rewrite of a page at `lsn` should go to,
    /// given the fragments it replaces (empty for a new page): by how long
    /// the replaced version lived, against the recent lifetime of stream-0
    /// segments (see [`placement`](crate::placement)). Always 0 with one
    /// user stream. Reads only the old segments' words.
    pub fn stream_for_write(&self, lsn: Lsn, old_ptrs: &[DiskPtr]) -> StreamId {
        let user_streams = self.shared.config.user_streams;
        if user_streams == 1 {
            return 0;
        }
        let ss = self.segment_size();
        let newest = old_ptrs
            .iter()
            .filter_map(|p| {
                let segment = self.shared.table.get((p.lid() / ss) as usize)?;
                segment.load().lsn(ss)
            })
            .filter(|&old| old <= lsn)
            .max();
        // Relaxed: a heuristic input.
        let threshold = self.shared.user_lifetime.load(Ordering::Relaxed);
        placement::user_stream(
            user_streams,
            newest.map(|old| (lsn - old) as u64),
            threshold,
        )
    }

    /// The average lifetime (lsn bytes) of stream-0 segments freed lately,
    /// if any was: the threshold [`stream_for_write`](Self::stream_for_write)
    /// uses.
    pub fn user_lifetime(&self) -> Option<u64> {
        // Relaxed: a statistic.
        let l = self.shared.user_lifetime.load(Ordering::Relaxed);
        (l != u64::MAX).then_some(l)
    }

    /// Picks a page to relocate, its segment's index and word. Finding
    /// none while drain starts wait for their seal bound, completes them
    /// and looks once more (`combiner::complete_waiting_drains`).
    fn pick_relocation(&self, skip: Skip) -> Option<(PageId, usize, Word)> {
        self.pick_listed(skip).or_else(|| {
            combiner::complete_waiting_drains(&self.shared)
                .then(|| self.pick_listed(skip))
                .flatten()
        })
    }

    /// [`pick_relocation`](Self::pick_relocation) from the drain lists as
    /// they are.
    fn pick_listed(&self, skip: Skip) -> Option<(PageId, usize, Word)> {
        let shared = &self.shared;
        // No segment with pages to relocate: no scan of the table's words
        // (a Draining segment whose pages all left, waiting for the seal
        // that empties it, made every `clean` scan the whole table), and
        // no read of the state counters.
        if shared.table.relocatable() == 0 {
            return None;
        }
        let draining = shared.counts.snapshot().draining;
        if draining == 0 {
            return None;
        }
        let tip = shared.sequencer.tip();
        // This thread's round-robin cursor: a line no other thread writes
        // (one cursor shared by every cleaner was the one line each `clean`
        // wrote that others write too), and cleaners on different threads
        // start apart instead of meeting on one segment's drain list.
        let mut cursor = CLEAN_CURSOR.with(|c| c.get());
        for _ in 0..=draining.min(tip) {
            let index = shared.table.next_set(Bits::Relocate, cursor, tip)?;
            let segment = shared.table.segment(index);
            let word = segment.load();
            if word.state == SegmentState::Draining {
                let mut list = lock(&segment.drain_list);
                // Round-robin over the segment's pages: the pick goes to
                // the back, so a page the store is still relocating (or
                // holds in a buffer) comes back only after every other.
                while let Some(pid) = list.pop_front() {
                    if !segment.present.is_not_yet_replaced(pid) {
                        // Replaced since the segment started draining: it
                        // never becomes relocatable again in this
                        // generation.
                        continue;
                    }
                    list.push_back(pid);
                    // Unchanged word: the segment stayed Draining in this
                    // generation while we picked (states never go back
                    // within a generation).
                    if segment.load() == word {
                        drop(list);
                        CLEAN_CURSOR.with(|c| c.set(index + 1));
                        return (skip != Skip::Page(pid)).then_some((pid, index, word));
                    }
                    break;
                }
                if list.is_empty() {
                    // Under the list lock, which the combiner also holds
                    // when it fills the list and sets the bit.
                    shared.table.clear_bit(Bits::Relocate, index);
                }
            }
            cursor = index + 1;
        }
        None
    }

    /// Stops reusing segments and truncating the file, for a consistent
    /// iteration of the log: returns once no `next` is reusing or
    /// truncating, and until the matching
    /// [`resume_rewriting`](Self::resume_rewriting) every `next` extends
    /// the file. Pauses nest.
    pub fn pause_rewriting(&self) {
        let shared = &self.shared;
        shared.gate.pause();
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::PauseWithoutWaiting) {
            return;
        }
        // Every `next` that may be on the reuse path holds an unplaced
        // reservation we see here (`RewriteGate::pause` says why); wait
        // until each is placed or dropped. One that reserves after this
        // read sees the pause and extends the file. A reservation's guard
        // drops it on error and on unwind, so none is left to wait on.
        let backoff = Backoff::new();
        for key in shared.active_lsns.unplaced() {
            while shared.active_lsns.is_unplaced(key) {
                backoff.snooze();
            }
        }
    }

    /// Undoes one [`pause_rewriting`](Self::pause_rewriting). Never takes
    /// effect in [`Mode::Linear`].
    ///
    /// # Errors
    /// [`Error::NotPaused`] without a matching pause.
    pub fn resume_rewriting(&self) -> Result<()> {
        self.shared.poison.check()?;
        if self.shared.gate.resume() || self.shared.config.mode == Mode::Linear {
            Ok(())
        } else {
            Err(Error::NotPaused)
        }
    }

    /// While rewriting is paused, the `(segment lsn, lid)` pairs of the
    /// segments below the tip with segment lsn at or above `lsn` rounded
    /// down, in lsn order.
    ///
    /// This lists **every segment that has had an lsn, freed ones
    /// included**: a Freeing or Free segment appears with the stale lsn of
    /// its last activation (as the seed's iterator does, for updates still
    /// in buffers that point there). An engine iterating its log for the
    /// segments in use wants
    /// [`segments_in_use_from`](Self::segments_in_use_from).
    ///
    /// # Errors
    /// [`Error::NotPaused`] unless rewriting is paused.
    pub fn segment_snapshot_iter_from(&self, lsn: Lsn) -> Result<std::vec::IntoIter<(Lsn, Lid)>> {
        self.segment_pairs(lsn, |state| state != SegmentState::Vacant)
    }

    /// [`segment_snapshot_iter_from`](Self::segment_snapshot_iter_from),
    /// listing only the segments in use: Active, Sealing, Inactive and
    /// Draining ones (never a freed segment's stale lsn).
    ///
    /// # Errors
    /// [`Error::NotPaused`] unless rewriting is paused.
    pub fn segments_in_use_from(&self, lsn: Lsn) -> Result<std::vec::IntoIter<(Lsn, Lid)>> {
        self.segment_pairs(lsn, |state| {
            matches!(
                state,
                SegmentState::Active
                    | SegmentState::Sealing
                    | SegmentState::Inactive
                    | SegmentState::Draining
            )
        })
    }

    fn segment_pairs(
        &self,
        lsn: Lsn,
        listed: impl Fn(SegmentState) -> bool,
    ) -> Result<std::vec::IntoIter<(Lsn, Lid)>> {
        self.shared.poison.check()?;
        if !self.shared.gate.is_paused() {
            return Err(Error::NotPaused);
        }
        let ss = self.segment_size() as Lsn;
        let from = lsn.max(0) - lsn.max(0) % ss;
        let mut pairs: Vec<(Lsn, Lid)> = (0..self.shared.sequencer.tip())
            .filter_map(|index| {
                let word = self.shared.table.segment(index).load();
                let seg_lsn = word.lsn(ss as u64)?;
                (listed(word.state) && seg_lsn >= from)
                    .then_some((seg_lsn, index as u64 * ss as u64))
            })
            .collect();
        pairs.sort_unstable();
        Ok(pairs.into_iter())
    }

    /// Pushes epoch-deferred frees through the collector (pinning and
    /// flushing), so reuse does not wait for unrelated threads to pin.
    /// Returns how many freed segments still wait for pinned readers.
    ///
    /// A panic of a deferred closure this runs (the store's own garbage on
    /// a shared collector) is contained; the next `stabilize` reports it
    /// ([`Error::CallbackPanicked`]).
    pub fn flush(&self) -> usize {
        let (waiting, result) = self.shared.epochs.flush(&self.shared.table);
        if let Err(e) = result {
            self.shared.combiner.report(e);
        }
        waiting
    }

    /// The state of segment `index`, or `None` beyond the table.
    pub fn segment_info(&self, index: usize) -> Option<crate::SegmentInfo> {
        let segment = self.shared.table.get(index)?;
        let word = segment.load();
        Some(crate::SegmentInfo {
            index,
            lid: index as u64 * self.segment_size(),
            state: word.state,
            lsn: word.lsn(self.segment_size()),
            generation: word.generation,
            live_pages: segment.present.len(),
            not_yet_replaced: self.not_yet_replaced_of(index, word).len(),
            // Acquire: pairs with the release increment in `remove_all_replaced`.
            removed_pages: segment.removed.load(Ordering::Acquire),
            live_bytes: segment.live_bytes(word.state),
            to_clean: self.shared.table.bit(Bits::Drain, index),
            // Relaxed: a statistic.
            stream: segment.stream.load(Ordering::Relaxed),
        })
    }

    /// The pages with live fragments in segment `index`, with their bytes,
    /// sorted by page id (not an atomic snapshot under concurrency).
    pub fn segment_pages(&self, index: usize) -> Vec<(PageId, u64)> {
        let mut pages = self
            .shared
            .table
            .get(index)
            .map(|s| s.present.entries())
            .unwrap_or_default();
        pages.sort_unstable();
        pages
    }

    /// The pages of segment `index` for which no `mark_replace` has been
    /// called (the ones `clean` may suggest once it drains), sorted.
    pub fn segment_not_yet_replaced(&self, index: usize) -> Vec<PageId> {
        let Some(segment) = self.shared.table.get(index) else {
            return Vec::new();
        };
        let mut pids = self.not_yet_replaced_of(index, segment.load());
        pids.sort_unstable();
        pids
    }

    /// The spec's `not_yet_replaced` of segment `index` (whose word was
    /// `word`): its flags, less the pages whose replacement is recorded in
    /// a segment not sealed yet (`mark_replace` clears the flag of a
    /// Draining old segment only, and a drain start clears the rest when
    /// it completes, which may wait a few passes; see
    /// docs/protocols/replace.md). Not an atomic snapshot.
    fn not_yet_replaced_of(&self, index: usize, word: Word) -> Vec<PageId> {
        let segment = self.shared.table.segment(index);
        let flagged = segment.present.not_yet_replaced();
        match word.segno {
            None => flagged,
            Some(segno) => {
                let pending: std::collections::HashSet<PageId> =
                    crate::accountant::combiner::pending_replacements(&self.shared, index, segno)
                        .into_iter()
                        .collect();
                flagged
                    .into_iter()
                    .filter(|pid| !pending.contains(pid))
                    .collect()
            }
        }
    }
}

impl Drop for Accountant {
    fn drop(&mut self) {
        // Let an outstanding truncation finish so the file is not changed
        // after the accountant is gone; its error (a panic of the storage
        // included: the truncation thread contains it) has nobody to go
        // to, and never panics here, so dropping while unwinding is safe.
        let _ = self.shared.sequencer.wait_truncation();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hot field of the shared state (and of the parts inside it)
    /// sits on lines of its own: none shares a line with anything another
    /// thread writes (issue 15). Read-only fields share lines only with
    /// each other.
    #[test]
    #[cfg(not(loom))]
    fn hot_fields_have_lines_of_their_own() {
        use crate::core::layout::{check, field, nest, COLD};
        use std::mem::offset_of;
        let mut fields = vec![
            field!(Shared, config, COLD),
            field!(Shared, storage, COLD),
            field!(Shared, table, hot),
            field!(Shared, max_stabilized, hot),
            field!(Shared, active_lsns, COLD),
            field!(Shared, user_lifetime, hot),
            field!(Shared, handed_out, hot),
            field!(Shared, poison, COLD),
            field!(Shared, metrics, hot),
            field!(Shared, drains_waiting, hot),
        ];
        let counts = vec![
            field!(Counts, active, hot),
            field!(Counts, inactive, hot),
            field!(Counts, draining, hot),
        ];
        let parts = [
            (
                "epochs",
                offset_of!(Shared, epochs),
                crate::core::freelist::layout_epochs(),
            ),
            (
                "sequencer",
                offset_of!(Shared, sequencer),
                crate::core::sequencer::layout(),
            ),
            (
                "combiner",
                offset_of!(Shared, combiner),
                crate::accountant::combiner::layout(),
            ),
            (
                "gate",
                offset_of!(Shared, gate),
                crate::core::freelist::layout_gate(),
            ),
            ("counts", offset_of!(Shared, counts), counts),
        ];
        for (name, offset, inner) in parts {
            fields.extend(nest(name, offset, inner));
        }
        check::<Shared>(&fields).unwrap();
        // The listed fields do not overlap (each was listed once) and fit.
        let mut spans: Vec<(usize, usize)> = fields
            .iter()
            .map(|f| (f.offset, f.offset + f.size))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{w:?}");
        }
        assert!(spans.last().unwrap().1 <= std::mem::size_of::<Shared>());
        check::<SegmentTable>(&crate::core::table::layout()).unwrap();
    }

    #[test]
    fn accountant_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Accountant>();
        // The combiner's `unsafe impl Sync` hands errors between threads
        // through its sink.
        check::<Error>();
    }
}
