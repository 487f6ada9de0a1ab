//! Stabilization: deactivating segments in lsn order without making any
//! thread wait.
//!
//! `stabilize` publishes its goal in one word (`goal << 3 | repass |
//! pending | busy`). If no thread is combining, the caller sets `busy` and becomes
//! the combiner: it deactivates every registered Active segment below the
//! goal in lsn order, applies their deferred replacements, frees and drains
//! what that empties, and loops while the goal keeps rising. If a thread is
//! combining, the caller raises the goal and returns at once: the combiner
//! will do its work. The combiner gives up `busy` with a CAS that expects
//! the goal it finished, so a raise that slips in makes that CAS fail and
//! the combiner goes round again: no request is ever stranded. All of it is
//! read-modify-writes of one word, so no SeqCst store/load pairs are
//! needed.
//!
//! Bounded work: after its own goal, a combiner runs at most
//! [`HANDOVER_PASSES`] passes for goals others raised, then releases `busy`
//! with `pending` set; the next `stabilize` (whatever its lsn) or audit
//! takes the token and goes on. A panic unwinding out of a pass (a broken
//! internal invariant: callbacks are contained where they are called)
//! releases the token the same way and poisons the accountant.
//!
//! Only the holder of a [`Token`] reaches [`CombinerState`]; a `Token` is
//! made only by setting `busy` and gives it back when dropped, so
//! deactivation, replacement application, freeing and draining decisions
//! are single-threaded, and every free is decided exactly once.
//!
//! Errors: those of the passes that did a caller's own goal are returned
//! to that caller; those of passes done for others (or for an audit), and
//! panics contained by `flush`, go to a bounded sink that every
//! `stabilize` call drains one at a time.
//!
//! A `next` whose lsn a requested goal already covers (a caller racing
//! its own stabilize) registers its segment after a pass may have
//! collected the registrations: it *announces* itself with a
//! read-modify-write of the same word, setting `repass` (or taking the
//! token) so that a pass runs after its registration and seals it. A
//! `next` whose announcement finds the goal below its lsn needs nothing:
//! every later request reads the word after its announcement (all writes
//! to the word are read-modify-writes) and so sees its registration.
//! Repasses are not counted against the hand-over bound: there is one per
//! such `next` at most.
//!
//! Sealing is two-phase (the seal protocol of [`crate::segment`]): a pass
//! first *closes* every registered Active segment below the goal (Active →
//! Sealing), collecting registrations again after each round of closes
//! until none below the goal appears, and only then *finishes* them in lsn
//! order. A replace into a closed segment that names a segment saw the
//! close's segment Active, so that segment's registration (placed in the
//! in-use set before the replace began) is seen by the collection after
//! the close (docs/protocols/seal.md, "Late registrations"): deactivation
//! stays in lsn order wherever it matters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::accountant::metrics::{DrainReason, Metrics, Totals};
use crate::accountant::Shared;
use crate::cleaning::config::{Config, Mode};
use crate::cleaning::policy::{self, SegmentFacts};
use crate::cleaning::victims::VictimIndex;
use crate::core::segment::{DeferredReplacement, SegmentState, Word};
use crate::core::sync::{
    lock, AtomicU64, AtomicUsize, Backoff, CachePadded, Ordering, Queue, UnsafeCell,
};
use crate::core::table::Bits;
use crate::error::{contain, Callback, Error, Result};
use crate::types::{Lsn, PageId};

const BUSY: u64 = 1;
/// No thread combines, but the goal is above what was done: a combiner
/// handed over (or unwound). The next request takes the token whatever its
/// goal.
const PENDING: u64 = 2;
/// A `next` registered a segment below the requested goal after a pass
/// may have collected: run a pass again before giving the token back.
const REPASS: u64 = 4;
/// The goal sits above the three flag bits.
const GOAL_SHIFT: u32 = 3;

/// Passes a combiner runs, after the ones its own goal needed, for goals
/// that other threads raised meanwhile, before it hands the rest over.
pub(crate) const HANDOVER_PASSES: u32 = 4;

/// Errors kept for later `stabilize` calls at most; more are dropped (a
/// store that never calls `stabilize` must not grow memory without bound).
const SINK_CAPACITY: usize = 64;

/// What cleaning decisions need, kept by the combiner as it seals
/// segments and applies replacements (so no decision scans the table).
#[derive(Debug)]
pub(crate) struct Cleaning {
    /// The Inactive segments, for victim picks: kept only while a space
    /// target is in force (`indexed`), the one time the combiner picks a
    /// victim. Without one, indexing a segment again each time a seal
    /// removes pages from it was a fifth of a pass's instructions
    /// (docs/performance-log.md, "The victim index only under a target").
    pub(crate) victims: VictimIndex,
    /// Whether `victims` holds every Inactive segment (else it is empty).
    pub(crate) indexed: bool,
    /// Live bytes in Inactive and Draining segments.
    pub(crate) sealed_live: u64,
    /// The Draining segments, in the order they started draining.
    pub(crate) draining: Vec<u32>,
}

impl Cleaning {
    /// Empty, indexing victims if `indexed` (a space target is set).
    pub(crate) fn new(segment_size: u64, indexed: bool) -> Cleaning {
        Cleaning {
            victims: VictimIndex::new(segment_size),
            indexed,
            sealed_live: 0,
            draining: Vec::new(),
        }
    }

    /// Bytes the Draining segments still have to relocate (pages not yet
    /// replaced): relocated pages whose new copy is not stable yet are
    /// still live in their Draining segment, but already take space at a
    /// head, and must not count twice.
    fn unrelocated(&self, shared: &Shared) -> u64 {
        self.draining
            .iter()
            .map(|&i| {
                shared
                    .table
                    .segment(i as usize)
                    .present
                    .not_yet_replaced_bytes()
            })
            .sum()
    }

    /// Checks the total and the index against the table's Inactive
    /// segments `(index, segno, live bytes)`, sealed live bytes and
    /// Draining count (audit).
    pub(crate) fn check(
        &self,
        inactive: &[(usize, u64, u64)],
        sealed_live: u64,
        draining: usize,
    ) -> Result<(), String> {
        if self.sealed_live != sealed_live {
            return Err(format!(
                "sealed live bytes {} disagree with the table's {sealed_live}",
                self.sealed_live
            ));
        }
        if self.draining.len() != draining {
            return Err(format!(
                "the combiner lists {} Draining segments, the table holds {draining}",
                self.draining.len()
            ));
        }
        if !self.indexed {
            return match self.victims.len() {
                0 => Ok(()),
                n => Err(format!(
                    "the victim index holds {n} segments without a space target"
                )),
            };
        }
        if self.victims.len() != inactive.len() {
            return Err(format!(
                "the victim index holds {} segments, the table {} Inactive ones",
                self.victims.len(),
                inactive.len()
            ));
        }
        for &(index, segno, live) in inactive {
            if !self.victims.holds(index, segno, live) {
                return Err(format!(
                    "Inactive segment {index} (segno {segno}, {live} live bytes) is not indexed as such"
                ));
            }
        }
        Ok(())
    }
}

/// The deferred work of the segment being sealed, gathered from its
/// page-map shards.
#[derive(Debug, Default)]
struct SealedWork {
    replacements: Vec<DeferredReplacement>,
    blob_removals: Vec<crate::types::BlobId>,
}

/// State owned by whichever thread holds the combiner token.
#[derive(Debug)]
pub(crate) struct CombinerState {
    /// Registered Active segments, by segment number: `(segno, index)`.
    /// Their placements in the in-use lsn set were taken off its lists of
    /// new placements (`LsnSet::collect_new`); the entries stay until their
    /// segment leaves the set.
    active: BinaryHeap<Reverse<(u64, u32)>>,
    /// Segments waiting for the stabilized segment lsn to rise above
    /// `lsn` before their epoch deferral starts: `(index, lsn)`.
    pub(crate) waiting_stable: Vec<(u32, Lsn)>,
    /// Segments stabilized (all segment numbers below this are stable).
    done: u64,
    /// A sealed segment's deferred work, moved out of its page-map shards
    /// (scratch space, keeping its capacity).
    scratch: SealedWork,
    /// The pids of a run of replacements being applied (scratch space).
    scratch_pids: Vec<PageId>,
    /// The in-use segments' recorded replacements, for drain starts.
    pending: PendingIndex,
    touched: Vec<u32>,
    /// The segments a pass closed, `(segno, index)` (scratch space).
    closing: Vec<(u64, u32)>,
    /// Errors met in the current pass.
    errors: Vec<Error>,
    pub(crate) cleaning: Cleaning,
    /// The running totals the metrics snapshot is made from.
    totals: Totals,
}

impl CombinerState {
    /// `(segno, index)` of every registered Active segment.
    pub(crate) fn registered_active(&self) -> Vec<(u64, u32)> {
        self.active.iter().map(|r| r.0).collect()
    }
}

#[derive(Debug)]
pub(crate) struct Combiner {
    /// The goal/busy word: a read-modify-write by every `stabilize`, read
    /// by every `next` (its announcement), so on a line of its own.
    word: CachePadded<AtomicU64>,
    /// Written by the token holder only; padded so that its first and last
    /// lines are not the word's or the sink's.
    state: CachePadded<UnsafeCell<CombinerState>>,
    /// Errors nobody who asked for the work could be given (see the
    /// module docs), and how many it holds.
    sink: Queue<Error>,
    sunk: AtomicUsize,
}

// Safety: the only non-Sync field is `state`, and it is reached only
// through `Token::state`. A `Token` exists only while its holder owns the
// busy bit of `word` (`Combiner::acquire` is its only constructor and sets
// the bit by CAS; `Token::release` and its `Drop` clear it), and the AcqRel
// read-modify-writes that take and give back the bit order each holder's
// accesses before the next holder's. Everything in the state is Send.
unsafe impl Sync for Combiner {}

/// Proof that the holder owns the combiner token: the only way to the
/// [`CombinerState`]. Dropped without [`Token::release`] (a panic unwinding
/// out of combiner work) it still gives the token back, with the goal left
/// pending, and poisons the accountant.
pub(crate) struct Token<'a> {
    shared: &'a Shared,
}

impl Token<'_> {
    fn combiner(&self) -> &Combiner {
        &self.shared.combiner
    }

    /// Runs `f` on the combiner state.
    pub(crate) fn state<R>(&mut self, f: impl FnOnce(&mut CombinerState) -> R) -> R {
        self.combiner().state.with_mut(|state| {
            // Safety: this token owns the busy bit (see `unsafe impl Sync
            // for Combiner`), so no other thread reaches the state until it
            // is given back, and `&mut self` keeps this holder's own
            // accesses from overlapping.
            f(unsafe { &mut *state })
        })
    }

    /// Gives the token back if the goal is still `current` (the goal this
    /// holder finished, or handed over when `pending`); on failure (a
    /// raised goal) returns the token and the word seen.
    fn release(self, current: u64, pending: bool) -> Result<(), (Self, u64)> {
        let goal = current >> GOAL_SHIFT;
        let next = goal << GOAL_SHIFT | if pending { PENDING } else { 0 };
        // AcqRel: Release publishes our work to the next holder; a failure
        // is a load of a raised goal (Acquire).
        let (rmw, load) = token_orders();
        match self
            .combiner()
            .word
            .compare_exchange(current, next, rmw, load)
        {
            Ok(_) => {
                std::mem::forget(self);
                Ok(())
            }
            Err(actual) => Err((self, actual)),
        }
    }
}

impl Drop for Token<'_> {
    /// Reached only while unwinding out of combiner work: every normal
    /// path ends in `release`. Under loom an unwind means the model
    /// already failed; loom objects must not be touched then.
    fn drop(&mut self) {
        #[cfg(not(loom))]
        {
            self.shared.poison.record(
                "a panic unwound out of the stabilize combiner; its pass may be half done".into(),
            );
            let word = &self.combiner().word;
            // Relaxed initial read: the CAS validates it.
            let mut current = word.load(Ordering::Relaxed);
            let backoff = Backoff::new();
            loop {
                let next = (current & !BUSY) | PENDING;
                // AcqRel/Acquire: as in `release`.
                let (rmw, load) = token_orders();
                match word.compare_exchange_weak(current, next, rmw, load) {
                    Ok(_) => break,
                    Err(actual) => {
                        current = actual;
                        backoff.spin();
                    }
                }
            }
        }
    }
}

impl Combiner {
    pub(crate) fn new(segment_size: u64, indexed: bool) -> Combiner {
        Self::recovered(
            0,
            Vec::new(),
            Vec::new(),
            Cleaning::new(segment_size, indexed),
        )
    }

    /// A combiner that has stabilized every segment numbered below `done`,
    /// with registered Active segments `(segno, index)`, frees waiting for
    /// the stable lsn to pass `(index, lsn)`, and the sealed segments'
    /// cleaning facts (recovery).
    pub(crate) fn recovered(
        done: u64,
        active: Vec<(u64, u32)>,
        waiting_stable: Vec<(u32, Lsn)>,
        cleaning: Cleaning,
    ) -> Combiner {
        Combiner {
            word: CachePadded::new(AtomicU64::new(done << GOAL_SHIFT)),
            state: CachePadded::new(UnsafeCell::new(CombinerState {
                active: active.into_iter().map(Reverse).collect(),
                waiting_stable,
                done,
                scratch: SealedWork::default(),
                scratch_pids: Vec::new(),
                pending: PendingIndex::default(),
                touched: Vec::new(),
                closing: Vec::new(),
                errors: Vec::new(),
                cleaning,
                totals: Totals::default(),
            })),
            sink: Queue::new(),
            sunk: AtomicUsize::new(0),
        }
    }

    /// The goal requested so far: every segment numbered below it is
    /// stabilized or being stabilized (for error reports).
    pub(crate) fn requested_goal(&self) -> u64 {
        // Relaxed: a figure for an error message, read after the caller
        // already saw the segment sealed; nothing is decided on it.
        self.word.load(Ordering::Relaxed) >> GOAL_SHIFT
    }

    /// Keeps an error for a later `stabilize` (bounded: see
    /// [`SINK_CAPACITY`]).
    pub(crate) fn report(&self, error: Error) {
        // Relaxed: the count only bounds the queue; the queue itself
        // synchronizes the error's hand-over.
        if self.sunk.fetch_add(1, Ordering::Relaxed) < SINK_CAPACITY {
            self.sink.push(error);
        } else {
            self.sunk.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The oldest error in the sink, as a result.
    fn take_reported(&self) -> Result<()> {
        // Relaxed: a stale zero only delays the report to the next call.
        if self.sunk.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        match self.sink.pop() {
            Some(error) => {
                self.sunk.fetch_sub(1, Ordering::Relaxed);
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Takes the token if nobody holds it; the goal becomes at least
    /// `raise`, and a pending goal is now this holder's to do.
    fn acquire<'a>(&self, shared: &'a Shared, raise: u64) -> Option<Token<'a>> {
        // Relaxed initial read: the CAS validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            if current & BUSY != 0 {
                return None;
            }
            let goal = (current >> GOAL_SHIFT).max(raise);
            // A repass left by an unwound holder stays asked for.
            let taken = goal << GOAL_SHIFT | (current & REPASS) | BUSY;
            // AcqRel: Acquire lets the new holder see the previous holder's
            // work (and Release hands our prior writes, the links into the
            // segments we stabilize, to the pass). Failure: a load.
            let (rmw, load) = token_orders();
            match self.word.compare_exchange_weak(current, taken, rmw, load) {
                Ok(_) => return Some(Token { shared }),
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Called by `next` right after registering the activation of
    /// `segno` (placing it in the in-use lsn set, under the shard lock
    /// every collection takes): if a goal covering it was already
    /// requested, a pass may have collected the registrations without it,
    /// so make sure one runs after it (setting `repass` for the busy
    /// combiner, or combining). Errors met while combining go to the sink.
    ///
    /// Only a load when the goal is below `segno` (the common case): a pass
    /// for a goal above `segno` loaded that goal before its collection took
    /// the shard lock of our placement. If that collection took the lock
    /// after we did, it sees the placement; if before, its release of the
    /// lock happened before our acquire, so our load of the word after the
    /// placement reads that goal or a later one, above `segno`, and we ask
    /// for the repass. A later request's pass collects after our
    /// placement for the same reason.
    pub(crate) fn announce(&self, shared: &Shared, segno: u64) {
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::SkipAnnounce) {
            return;
        }
        // Acquire: the goal a pass that missed our placement loaded is
        // visible through the set's lock (see above).
        let mut current = self.word.load(Ordering::Acquire);
        let backoff = Backoff::new();
        loop {
            if current >> GOAL_SHIFT <= segno {
                return;
            }
            let busy = current & BUSY != 0;
            // The busy combiner's release CAS fails on the changed word and
            // it goes round again, collecting us; an idle one is ours.
            let asked = current | REPASS | if busy { 0 } else { BUSY };
            let (rmw, load) = token_orders();
            match self.word.compare_exchange_weak(current, asked, rmw, load) {
                Ok(_) if busy => return,
                Ok(_) => {
                    if let Err(e) = self.combine(Token { shared }, 0) {
                        self.report(e);
                    }
                    return;
                }
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Requests that every segment with number below `goal` be stabilized.
    pub(crate) fn request(&self, shared: &Shared, goal: u64) -> Result<()> {
        // Relaxed initial read: the CAS validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            let published = current >> GOAL_SHIFT;
            let busy = current & BUSY != 0;
            if goal <= published && (busy || current & PENDING == 0) {
                // Already requested (and being done by the combiner) or done.
                return self.take_reported();
            }
            // AcqRel: Release hands our prior writes (the links into the
            // segments we stabilize) to the combiner, Acquire lets a new
            // combiner see the previous combiner's work. A failed CAS is a
            // load: Acquire there too.
            let (rmw, load) = token_orders();
            // Keep an announced repass: the combiner still owes it.
            let raised = published.max(goal) << GOAL_SHIFT | (current & REPASS) | BUSY;
            match self.word.compare_exchange_weak(current, raised, rmw, load) {
                Ok(_) if busy => return self.take_reported(),
                Ok(_) => {
                    let own = self.combine(Token { shared }, goal);
                    return own.and_then(|()| self.take_reported());
                }
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Runs `f` on the combiner state if no thread is combining (audits and
    /// statistics at quiescent points). Goals raised meanwhile (or left
    /// pending) are combined, within the hand-over bound, before the token
    /// is given back; their errors go to the sink.
    pub(crate) fn with_idle_state<R>(
        &self,
        shared: &Shared,
        f: impl FnOnce(&mut CombinerState) -> R,
    ) -> Option<R> {
        let mut token = self.acquire(shared, 0)?;
        let result = token.state(|state| {
            collect_activations(shared, state);
            f(state)
        });
        if let Err(e) = self.combine(token, 0) {
            self.report(e);
        }
        Some(result)
    }

    /// The combiner loop, run with the token: passes until the published
    /// goal is done, then gives the token back with a CAS that fails (and
    /// sends us round again) if the goal was raised meanwhile. Once `own`
    /// (the caller's goal) is done, at most [`HANDOVER_PASSES`] more passes
    /// run before the rest is handed over. Returns the first error of the
    /// passes that did `own`; every other error goes to the sink.
    fn combine(&self, mut token: Token<'_>, own: u64) -> Result<()> {
        let shared = token.shared;
        let mut first: Result<()> = Ok(());
        let mut extra = 0;
        let backoff = Backoff::new();
        loop {
            // Acquire: see the requesters' writes (release in `request`).
            let current = self.word.load(token_orders().1);
            let goal = current >> GOAL_SHIFT;
            let done = token.state(|state| state.done);
            if current & REPASS != 0 {
                // Clear the flag before the pass it asks for, so that an
                // announcement after this changes the word again.
                let (rmw, load) = token_orders();
                if self
                    .word
                    .compare_exchange(current, current & !REPASS, rmw, load)
                    .is_err()
                {
                    backoff.spin();
                    continue;
                }
                let errors = token.state(|state| {
                    pass(shared, state, goal.max(state.done));
                    std::mem::take(&mut state.errors)
                });
                for error in errors {
                    self.report(error);
                }
                continue;
            }
            if goal > done {
                let for_own = done < own;
                if !for_own {
                    if extra == HANDOVER_PASSES {
                        match token.release(current, true) {
                            Ok(()) => return first,
                            Err((back, _)) => {
                                // The word changed under the hand-over:
                                // read it again.
                                token = back;
                                backoff.spin();
                                continue;
                            }
                        }
                    }
                    extra += 1;
                }
                let errors = token.state(|state| {
                    pass(shared, state, goal);
                    std::mem::take(&mut state.errors)
                });
                for error in errors {
                    if for_own && first.is_ok() {
                        first = Err(error);
                    } else {
                        self.report(error);
                    }
                }
                continue;
            }
            match token.release(current, false) {
                Ok(()) => return first,
                Err((back, _)) => {
                    // A goal raised (or a repass asked) meanwhile: go round.
                    token = back;
                    backoff.spin();
                }
            }
        }
    }
}

/// Takes the activations `next` registered (placements in the in-use
/// lsn set not collected yet): registers each for its seal and counts
/// it (reused or appended, and Active: `next` writes no counter), clears
/// a reused segment's free bit (its claim left it set: see
/// `SegmentTable::claim_free`), and raises the handed-out bound past it.
fn collect_activations(shared: &Shared, state: &mut CombinerState) {
    let CombinerState { active, totals, .. } = state;
    shared.active_lsns.collect_new(|segno, index, reused| {
        active.push(Reverse((segno, index as u32)));
        totals.activated(reused);
        if reused {
            // Before this segment's seal, which this combiner makes
            // later: so before the landing that sets the bit again.
            let was_set = shared.table.clear_claimed(index);
            debug_assert!(was_set, "reused segment {index} had no free bit");
        }
        shared.counts.activated();
        // Relaxed: a lower bound `stabilize` reads; a stale one
        // sends it to the in-use set (`Accountant::handed_out_now`).
        shared.handed_out.fetch_max(segno + 1, Ordering::Relaxed);
    });
}

/// Orderings for read-modify-writes and loads of the token word: AcqRel
/// and Acquire, so each token holder's accesses to the combiner state
/// happen before the next holder's.
fn token_orders() -> (Ordering, Ordering) {
    #[cfg(seeded_bugs)]
    if crate::seeded::active(crate::seeded::Bug::RelaxedCombinerToken) {
        return (Ordering::Relaxed, Ordering::Relaxed);
    }
    (Ordering::AcqRel, Ordering::Acquire)
}

/// One step of the combiner: stabilize every segment numbered below
/// `goal`. The order of effects is part of the specification that the
/// reference model mirrors:
/// 1. close every registered Active segment below the goal (the seal
///    protocol's first half), collecting registrations again until a round
///    closes nothing new;
/// 2. finish them in lsn order, each applying its deferred blob removals
///    and replacements and then considering every touched segment for
///    freeing or draining;
/// 3. publish the new stabilized lsn, and only then let the sealed lsns
///    leave the in-use map;
/// 4. start the epoch deferral of frees whose lsn is now below it;
/// 5. if the tunables changed since the last pass (`Accountant::tune`),
///    ask the policy again about every Inactive segment;
/// 6. under a space target, drain the policy's best victims until the
///    projected file fits;
/// 7. apply the tip-shrinking heuristics;
/// 8. if the pass sealed only segments nothing was written into (an idle
///    store), under a space target drain the file's top toward it.
///
/// Cleaning decisions use the tunables in force, loaded once here.
fn pass(shared: &Shared, state: &mut CombinerState, goal: u64) {
    let ss = shared.config.segment_size;
    // Relaxed first look: most passes find no change. The swap's Acquire
    // pairs with `tune`'s release store after its swap, so the load below
    // sees that configuration or a later one.
    let retuned = shared.retuned.load(std::sync::atomic::Ordering::Relaxed)
        && shared
            .retuned
            .swap(false, std::sync::atomic::Ordering::Acquire);
    let config = shared.tuned.load_full();
    if config.space_target.is_some() != state.cleaning.indexed {
        reindex(shared, state, config.space_target.is_some());
    }
    let stable_lsn = goal as Lsn * ss as Lsn - ss as Lsn;
    let mut closing = std::mem::take(&mut state.closing);
    loop {
        collect_activations(shared, state);
        let before = closing.len();
        while let Some(&Reverse((segno, index))) = state.active.peek() {
            if segno >= goal {
                break;
            }
            state.active.pop();
            close(shared, index as usize, segno);
            closing.push((segno, index));
        }
        if closing.len() == before {
            break;
        }
    }
    closing.sort_unstable();
    let mut written_pages = 0u64;
    for &(segno, index) in &closing {
        written_pages += finish(shared, state, &config, index as usize, segno, stable_lsn);
    }
    let sealed = closing.len() as u64;
    // Idle: the store rolled (or vouched) without writing.
    let idle = sealed > 0 && written_pages == 0;
    state.done = state.done.max(goal);
    #[cfg(seeded_bugs)]
    if crate::seeded::active(crate::seeded::Bug::PublishAfterRemove) {
        for &(segno, _) in &closing {
            shared.active_lsns.remove(segno);
        }
    }
    // Relaxed load: only the combiner writes it. Release store: `next`'s
    // stale-lsn check (after its reservation) and statistics read it.
    if stable_lsn > shared.max_stabilized.load(Ordering::Relaxed) {
        shared.max_stabilized.store(stable_lsn, Ordering::Release);
    }
    for &(segno, _) in &closing {
        shared.active_lsns.remove(segno);
    }
    closing.clear();
    state.closing = closing;
    let mut i = 0;
    while i < state.waiting_stable.len() {
        let (index, lsn) = state.waiting_stable[i];
        if lsn < stable_lsn {
            state.waiting_stable.swap_remove(i);
            let word = shared.table.segment(index as usize).load();
            if let Err(e) = shared
                .epochs
                .defer_free(&shared.table, index as usize, word)
            {
                state.errors.push(e);
            }
        } else {
            i += 1;
        }
    }
    if retuned {
        reconsider_inactive(shared, state, &config, stable_lsn);
    }
    enforce_space_target(shared, state, &config, stable_lsn, sealed);
    drain_top_if_worthwhile(shared, state, &config);
    compact_when_idle(shared, state, &config, idle);
    state.pending.complete_or_defer(shared, state.done);
    state.pending.fresh = false;
    state.totals.passes += 1;
    publish_metrics(shared, state);
}

/// Publishes a fresh metrics snapshot (the end of every pass): the
/// combiner's totals (with the activations it collected from `next`), the
/// counters the sequencer keeps on its rare paths, and the gauges.
fn publish_metrics(shared: &Shared, state: &CombinerState) {
    let t = &state.totals;
    let counts = shared.counts.snapshot();
    let ss = shared.config.segment_size;
    let metrics = Metrics {
        user_bytes: t.user_bytes,
        user_pages: t.user_pages,
        relocated_bytes: t.relocated_bytes,
        relocated_pages: t.relocated_pages,
        segments_sealed: t.sealed,
        segments_reused: t.reused,
        segments_appended: t.appended,
        segments_freed: t.freed,
        truncations: shared.sequencer.truncations(),
        bytes_truncated: shared.sequencer.bytes_truncated(),
        drains_policy: t.drains_policy,
        drains_space_target: t.drains_space_target,
        drains_tip: t.drains_tip,
        drains_idle: t.drains_idle,
        passes: t.passes,
        file_bytes: shared.sequencer.tip() as u64 * ss,
        live_bytes: state.cleaning.sealed_live,
        active_segments: counts.active as u64,
        segment_size: ss,
    };
    if crate::trace::ENABLED {
        // The sequencer counts truncations where `next` makes them; the
        // pass after reports what they returned since the last snapshot.
        let previous = shared.metrics.load();
        if metrics.truncations > previous.truncations {
            crate::trace::event!(
                INFO,
                "truncate",
                truncations = metrics.truncations - previous.truncations,
                bytes = metrics.bytes_truncated - previous.bytes_truncated,
                file_bytes = metrics.file_bytes,
                "file truncated"
            );
        }
    }
    shared.metrics.store(std::sync::Arc::new(metrics));
}

/// Closes a registered Active segment (the first half of its seal):
/// Active → Sealing. After this no write into it can begin; a write that
/// began finishes before the combiner reads what it wrote (each of those
/// reads takes the writer's lock).
fn close(shared: &Shared, index: usize, segno: u64) {
    let segment = shared.table.segment(index);
    let word = segment.load();
    assert!(
        word.state == SegmentState::Active && word.segno == Some(segno),
        "registered segment {index} (segno {segno}) is {word:?}"
    );
    // No barrier: every later read of what writers of this segment
    // mutate takes the lock they mutate under, after this move, and each
    // writer checks the word under that lock (docs/protocols/seal.md):
    // `finish` takes each page-map shard's records and counts its pages
    // under one hold of its lock (a `mark_replace` links and records under
    // its page's shard lock); and a registration a recorded replacement
    // names is in the in-use set, read under its shard lock.
    segment.must_transition(word, word.with_state(SegmentState::Sealing));
}

/// Finishes a closed segment's seal: collects its deferred work, counts
/// its live bytes, makes it Inactive, and applies that work. Returns the
/// pages written into it.
fn finish(
    shared: &Shared,
    state: &mut CombinerState,
    config: &Config,
    index: usize,
    segno: u64,
    stable_lsn: Lsn,
) -> u64 {
    let segment = shared.table.segment(index);
    let word = segment.load();
    assert!(
        word.state == SegmentState::Sealing && word.segno == Some(segno),
        "closed segment {index} (segno {segno}) is {word:?}"
    );
    // Each shard complete once we hold its lock: a write links (and a
    // `mark_replace` records) only while it sees the segment Active under
    // its page's shard lock, and the word left Active in `close`, before
    // we took it. Records and count come from one hold of each lock, so a
    // replace is in both or in neither.
    let ((bytes, pages), mut relocated) = segment.seal(
        &mut state.scratch.replacements,
        &mut state.scratch.blob_removals,
        &shared.fresh_hint,
    );
    let (user, relocation) = shared.config.streams();
    // Relaxed: the stream was set before the activation this combiner saw.
    if relocation > 0 && segment.stream.load(Ordering::Relaxed) >= user {
        relocated = (bytes, pages);
    }
    state.totals.sealed(bytes, pages, relocated.0, relocated.1);
    // Saturating, like every live-byte sum: sizes are bounded at the API
    // edge, so only an absurd number of links could reach the bound, and
    // the combiner must not panic even then.
    state.cleaning.sealed_live = state
        .cleaning
        .sealed_live
        .saturating_add(segment.live_bytes(SegmentState::Inactive));
    segment.must_transition(word, word.with_state(SegmentState::Inactive));
    shared
        .counts
        .moved(SegmentState::Sealing, SegmentState::Inactive);
    crate::trace::event!(
        DEBUG,
        "seal",
        lid = index as u64 * shared.config.segment_size,
        lsn = (segno * shared.config.segment_size) as Lsn,
        live_bytes = segment.live_bytes(SegmentState::Inactive),
        written_bytes = bytes,
        pages,
        "segment sealed"
    );
    for blob in state.scratch.blob_removals.drain(..) {
        // A panic is contained like an I/O error: the blob file leaks (the
        // error names it), the bookkeeping goes on.
        match contain(Callback::RemoveBlob(blob), || {
            shared.storage.remove_blob(blob)
        }) {
            Ok(Ok(())) => {}
            Ok(Err(source)) => state.errors.push(Error::BlobRemoval { blob, source }),
            Err(panicked) => state.errors.push(panicked),
        }
    }
    // In runs of records against one old incarnation (writes replace the
    // pages of a few old segments at a time, so runs form; sorting them
    // longer cost more than it saved): its word read once, and the run
    // removed with at most one lock pair per shard instead of one per page.
    let mut records = std::mem::take(&mut state.scratch.replacements);
    let mut pids = std::mem::take(&mut state.scratch_pids);
    let same = |a: &DeferredReplacement, b: &DeferredReplacement| {
        (a.old_index, a.old_segno) == (b.old_index, b.old_segno)
    };
    // An old segment's shard lines are cold: the writes replaced pages
    // written long ago, or, with a head far ahead of the stabilized lsn,
    // on the other core. The lines of the run a few runs ahead start
    // loading while this one is applied, so that the misses overlap
    // instead of coming one after the other. Each stage reads what the
    // one before loaded, so they run at three distances: the old
    // segment's own line (the map's pointer) three steps ahead, its shard
    // lines (the lock, and the table's place the seal left there) two
    // steps ahead, and the buckets the removals will probe one step ahead
    // (docs/performance-log.md, "Seventeenth session: the seal's apply loads
    // ahead", "Eighteenth session: two stages of loads ahead" and
    // "Nineteenth session: the buckets too").
    let mut far = LoadAhead::new(records.chunk_by(same), 3 * PREFETCH_AHEAD, |run| {
        shared.table.segment(run[0].old_index as usize).prefetch()
    });
    let mut mid = LoadAhead::new(records.chunk_by(same), 2 * PREFETCH_AHEAD, |run| {
        prefetch_run(shared, run)
    });
    let mut near = LoadAhead::new(records.chunk_by(same), PREFETCH_AHEAD, |run| {
        prefetch_buckets(shared, run)
    });
    for run in records.chunk_by(same) {
        far.step();
        mid.step();
        near.step();
        let (old_index, old_segno) = (run[0].old_index, run[0].old_segno);
        let old = shared.table.segment(old_index as usize);
        let old_word = old.load();
        if old_word.segno != Some(old_segno) {
            // The old incarnation is gone; so are its fragments.
            continue;
        }
        match old_word.state {
            SegmentState::Inactive | SegmentState::Draining => {
                pids.clear();
                pids.extend(run.iter().map(|r| r.pid));
                let bytes = old.remove_all_replaced(&pids);
                state.cleaning.sealed_live = state.cleaning.sealed_live.saturating_sub(bytes);
            }
            SegmentState::Active | SegmentState::Sealing => panic!(
                "replacement of page {} applied to unsealed segment {} (deactivation out of lsn order)",
                run[0].pid, old_index
            ),
            _ => debug_assert!(run.iter().all(|r| old.present.remove(r.pid).is_none())),
        }
        state.touched.push(old_index);
    }
    records.clear();
    state.scratch.replacements = records;
    state.scratch_pids = pids;
    state.touched.push(index as u32);
    state.touched.sort_unstable();
    state.touched.dedup();
    let touched = std::mem::take(&mut state.touched);
    for &i in &touched {
        consider(shared, state, config, i as usize, stable_lsn);
    }
    state.touched = touched;
    state.touched.clear();
    pages
}

/// How far ahead the seal's apply (in runs of records) and the pending
/// index's refresh (in segments) start loading the shard lines they will
/// lock: 4 and 8 measured alike (docs/performance-log.md, "Seventeenth
/// session").
const PREFETCH_AHEAD: usize = 4;

/// A walk `distance` items ahead of another over the same items, calling
/// `load` (a prefetch) on each: the stages of the apply's and the
/// refresh's loads ahead.
struct LoadAhead<I, F> {
    items: I,
    load: F,
}

impl<I: Iterator, F: FnMut(I::Item)> LoadAhead<I, F> {
    /// Loads the first `distance` items.
    fn new(mut items: I, distance: usize, mut load: F) -> Self {
        items.by_ref().take(distance).for_each(&mut load);
        LoadAhead { items, load }
    }

    /// Loads the next item, as the walk behind takes one.
    #[inline(always)]
    fn step(&mut self) {
        if let Some(item) = self.items.next() {
            (self.load)(item);
        }
    }
}

/// Starts loading the shard lines a run of records will lock (a hint:
/// changes nothing the program sees). Finding them reads the old segment's
/// own line (its map's pointer), which the caller prefetched further ahead
/// ([`Segment::prefetch`](crate::core::segment::Segment::prefetch)).
fn prefetch_run(shared: &Shared, run: &[DeferredReplacement]) {
    let present = &shared.table.segment(run[0].old_index as usize).present;
    match run {
        [one] => present.prefetch_shard(one.pid),
        _ => present.prefetch_shards(),
    }
}

/// Starts loading the buckets a run of records' removals will probe first
/// (a hint: see [`PageMap::prefetch_bucket`](crate::core::pidset::PageMap::prefetch_bucket)),
/// for at most [`PREFETCH_RUN`] of its records: a long run's later
/// removals find their lines by the time they come.
fn prefetch_buckets(shared: &Shared, run: &[DeferredReplacement]) {
    let present = &shared.table.segment(run[0].old_index as usize).present;
    run.iter()
        .take(PREFETCH_RUN)
        .for_each(|r| present.prefetch_bucket(r.pid));
}

/// The most records of one run whose buckets [`prefetch_buckets`] loads.
const PREFETCH_RUN: usize = 8;

/// The policy's facts about sealed segment `index`.
fn facts_of(shared: &Shared, index: usize, word: Word) -> SegmentFacts {
    let segment = shared.table.segment(index);
    let ss = shared.config.segment_size;
    SegmentFacts::new(
        index as u64,
        word.lsn(ss).expect("a sealed segment has an lsn"),
        segment.live_pages(word.state),
        // Relaxed: only the combiner writes a sealed segment's counters.
        segment.removed.load(Ordering::Relaxed),
        segment.live_bytes(word.state),
        ss,
    )
}

/// Frees a sealed segment that emptied, or drains one the policy picks
/// unprompted; otherwise (re)indexes it as a victim candidate.
fn consider(
    shared: &Shared,
    state: &mut CombinerState,
    config: &Config,
    index: usize,
    stable_lsn: Lsn,
) {
    let segment = shared.table.segment(index);
    let word = segment.load();
    match word.state {
        // The kept count: no shard of the map is locked to ask.
        SegmentState::Inactive if segment.live_pages(word.state) == 0 => {
            state.cleaning.victims.remove(index);
            free(shared, state, index, word, stable_lsn)
        }
        SegmentState::Inactive => {
            let tip = shared.sequencer.tip() as u64;
            let facts = facts_of(shared, index, word);
            let drain = config.mode == Mode::Gc
                && contain(Callback::CleaningPolicy, || {
                    config.policy.drain_unprompted(config, &facts, tip)
                })
                .unwrap_or_else(|panicked| {
                    // Contained: the segment stays a victim candidate.
                    state.errors.push(panicked);
                    false
                });
            if drain {
                start_draining(shared, state, index, word, DrainReason::Policy);
            } else if state.cleaning.indexed {
                let segno = word.segno.expect("a sealed segment has an lsn");
                state
                    .cleaning
                    .victims
                    .upsert(index, segno, facts.live_bytes);
            }
        }
        SegmentState::Draining if segment.live_pages(word.state) == 0 => {
            let draining = &mut state.cleaning.draining;
            let at = draining
                .iter()
                .position(|&i| i as usize == index)
                .expect("a Draining segment is listed");
            draining.remove(at);
            let was_set = shared.table.clear_bit(Bits::Drain, index);
            debug_assert!(was_set);
            {
                let mut list = lock(&segment.drain_list);
                list.clear();
                shared.table.clear_bit(Bits::Relocate, index);
            }
            free(shared, state, index, word, stable_lsn)
        }
        _ => {}
    }
}

fn start_draining(
    shared: &Shared,
    state: &mut CombinerState,
    index: usize,
    word: Word,
    reason: DrainReason,
) {
    state.totals.drained(reason);
    let segment = shared.table.segment(index);
    segment.must_transition(word, word.with_state(SegmentState::Draining));
    crate::trace::event!(
        DEBUG,
        "drain",
        lid = index as u64 * shared.config.segment_size,
        lsn = word.lsn(shared.config.segment_size).unwrap_or(-1),
        reason = ?reason,
        live_bytes = segment.live_bytes(SegmentState::Draining),
        "segment draining"
    );
    state.cleaning.victims.remove(index);
    state.cleaning.draining.push(index as u32);
    shared
        .counts
        .moved(SegmentState::Inactive, SegmentState::Draining);
    let newly = shared.table.set_bit(Bits::Drain, index);
    debug_assert!(newly);
    // `mark_replace` clears a page's not-yet-replaced flag in its old
    // segment only if that segment is Draining; otherwise it only records
    // the replacement in the new segment. Now that this one is Draining
    // (the CAS above), every replacement of one of its pages is either
    // found by `PendingIndex::complete` (once the pass's drain starts are
    // all made; it then fills the drain list) or made by a call that sees
    // it Draining and clears the flag itself.
    let segno = word.segno.expect("a sealed segment has an lsn");
    state.pending.starting.push((index as u32, segno));
}

/// The bytes an Inactive segment would have to relocate if it started
/// draining now: its flagged pages less those a write not sealed yet
/// already replaced (their flags are cleared only when it starts draining).
fn inactive_not_yet_replaced_bytes(
    shared: &Shared,
    state: &mut CombinerState,
    index: usize,
) -> u64 {
    let segment = shared.table.segment(index);
    let flagged = segment.present.not_yet_replaced_bytes();
    let Some(segno) = segment.load().segno else {
        return flagged;
    };
    let mut pending = state.pending.estimate(shared, index, segno).to_vec();
    pending.sort_unstable();
    pending.dedup();
    let replaced: u64 = pending
        .into_iter()
        .map(|pid| segment.present.not_yet_replaced_bytes_of(pid))
        .sum();
    flagged.saturating_sub(replaced)
}

/// The replacements recorded in the in-use segments' deferred work, indexed
/// by old incarnation and read incrementally: each in-use segment's list
/// only grows until its seal takes it, so each record is indexed once. Kept
/// in the combiner state (token holder only).
///
/// Drain starts are completed in a batch ([`PendingIndex::complete`]): the
/// segments move to Draining one by one as the pass decides, and one
/// refresh of the index after all those moves serves them all. A refresh
/// visits every in-use segment (one lock pair each), so one per drain start
/// made the combiner the bottleneck when a write head ran far ahead of the
/// stabilized lsn and left thousands of segments unsealed.
#[derive(Debug, Default)]
pub(crate) struct PendingIndex {
    /// `(old index, old segment number)` → pids replaced out of it. An
    /// entry whose records were applied since is harmless (its pids are no
    /// longer in that incarnation); entries leave when their segment
    /// starts draining or is freed.
    by_old: HashMap<(u32, u64), Vec<PageId>, rustc_hash::FxBuildHasher>,
    /// Segments this pass moved to Draining, `(index, segno)`: their flags
    /// and drain lists wait for the end of the pass.
    starting: Vec<(u32, u64)>,
    /// Drain starts of passes that ended, waiting for their seal bound or
    /// for a refresh ([`PendingIndex::complete_or_defer`]): `(index, segno,
    /// bound)`, where every segment that could hold a replacement of one of
    /// its pages recorded before its move is numbered below `bound`.
    waiting: Vec<(u32, u64, u64)>,
    /// Whether the index was refreshed in this pass (for estimates).
    fresh: bool,
    /// Passes whose end left drain starts waiting ([`PendingIndex::complete_or_defer`]).
    deferred_passes: u32,
}

/// With more Active (unsealed) segments than this, the drain starts of a
/// pass may wait for a later pass's refresh longer than
/// [`SEAL_WAIT_PASSES`] ([`PendingIndex::complete_or_defer`]).
pub(crate) const DEFER_ACTIVE: usize = 256;
/// ... for at most this many passes, or, with more Active segments than
/// `DEFER_PASSES` × [`REFRESH_SEGMENTS_PER_PASS`], one pass per
/// `REFRESH_SEGMENTS_PER_PASS` of them.
pub(crate) const DEFER_PASSES: u32 = 8;
/// With few Active segments, how many passes a drain start may wait for
/// the seals of the segments in use at its move (which make a refresh
/// needless, see [`PendingIndex::complete_or_defer`]) before a refresh
/// completes it. A head per thread seals its segments within a few
/// passes; a store that stops stabilizing leaves its starts to `clean`,
/// which completes them when it finds nothing else
/// ([`complete_waiting_drains`]).
pub(crate) const SEAL_WAIT_PASSES: u32 = 4;
/// A refresh visits every placed segment: spread over the passes that may
/// wait for it, its cost stays near this many segments per pass however
/// far a head runs ahead of the stabilized lsn.
pub(crate) const REFRESH_SEGMENTS_PER_PASS: usize = 64;

/// How many passes a drain start may wait for its seal bound or its
/// refresh with `active` Active segments.
pub(crate) fn passes_a_start_may_wait(active: usize) -> u32 {
    if active <= DEFER_ACTIVE {
        return SEAL_WAIT_PASSES;
    }
    let spread = u32::try_from(active / REFRESH_SEGMENTS_PER_PASS).unwrap_or(u32::MAX);
    DEFER_PASSES.max(spread)
}

impl PendingIndex {
    /// Incarnation `segno` of segment `index` is gone (freed).
    fn forget(&mut self, index: usize, segno: u64) {
        self.by_old.remove(&(index as u32, segno));
    }

    /// Indexes the records every placed in-use segment gained since the
    /// last refresh.
    fn refresh(&mut self, shared: &Shared) {
        let placed_segments = shared.active_lsns.placed();
        // Cold lines when a head runs far ahead, as in the seal's apply:
        // the shards (and records) of the segment a few ahead start
        // loading while this one is read, and the line that points to
        // them (the segment's own) twice as far ahead.
        let placed_indexes = || placed_segments.iter().map(|&(_, placed)| placed);
        let mut far = LoadAhead::new(placed_indexes(), 2 * PREFETCH_AHEAD, |placed| {
            shared.table.segment(placed).prefetch()
        });
        let mut ahead = LoadAhead::new(placed_indexes(), PREFETCH_AHEAD, |placed| {
            shared
                .table
                .segment(placed)
                .present
                .prefetch_shards_and_records()
        });
        for &(_, placed) in &placed_segments {
            far.step();
            ahead.step();
            // Each shard counts what was indexed; the seal that takes the
            // records resets the count for the next incarnation.
            let by_old = &mut self.by_old;
            shared
                .table
                .segment(placed)
                .present
                .records_since_indexed(|r| {
                    by_old
                        .entry((r.old_index, r.old_segno))
                        .or_default()
                        .push(r.pid);
                });
        }
        self.fresh = true;
    }

    /// For an estimate: the pages of incarnation `segno` of segment `index`
    /// replaced by writes not sealed yet, as of this pass's refresh (made
    /// now if there was none yet).
    fn estimate(&mut self, shared: &Shared, index: usize, segno: u64) -> &[PageId] {
        if !self.fresh {
            self.refresh(shared);
        }
        self.by_old
            .get(&(index as u32, segno))
            .map_or(&[], |v| v.as_slice())
    }

    /// The end of a pass. The pass's drain starts join the waiting ones,
    /// each with its seal bound: one past the highest segment number
    /// placed in the in-use set, read now, after their moves. Then every
    /// waiting start whose bound the stabilized segments reached completes
    /// without a refresh, and the rest wait, unless [`passes_a_start_may_wait`]
    /// passes have ended with starts waiting, in which case
    /// [`PendingIndex::complete`] completes them all with one refresh.
    ///
    /// A refresh reads every record the writers made in the segments in
    /// use since the last one, and those lines are the writers': each one
    /// they wrote since, from another core. At 2 threads with a head each,
    /// a refresh at every pass's end was most of what the combiner's cost
    /// per operation gained over 1 thread (docs/performance-log.md,
    /// "Twenty-fourth session"). Waiting for the seals needs none: the
    /// seal takes the records itself, as it always did.
    ///
    /// Why a start whose bound is reached needs no refresh
    /// (docs/protocols/replace.md, "Drain starts that wait for their seal
    /// bound"): a record
    /// against segment O made by a `mark_replace` into T before O moved to
    /// Draining lies in a T placed before the bound was read (the load of
    /// the in-use set after the move sees every T placed before it: a T it
    /// missed was placed after, through a shard lock it released, so every
    /// `mark_replace` into T comes after the move and sees O Draining),
    /// and T, numbered below the bound, is sealed: its seal removed the
    /// page from O altogether, as it does for a start completed after a
    /// later refresh. A `mark_replace` after the move clears the flag
    /// itself.
    ///
    /// A waiting segment is Draining with its drain list not filled yet:
    /// `clean` suggests none of its pages (its Relocate bit is clear), every
    /// `mark_replace` naming it clears the flag itself, and introspection
    /// reports the spec's set by subtracting the replacements still
    /// recorded (`Accountant::segment_not_yet_replaced`). Anything that reads
    /// the Draining flags as exact (the space target) calls
    /// [`PendingIndex::complete`] first, and a `clean` that finds no page
    /// to suggest while starts wait completes them too.
    fn complete_or_defer(&mut self, shared: &Shared, done: u64) {
        if !self.starting.is_empty() {
            let bound = shared.active_lsns.placed_end();
            self.waiting
                .extend(self.starting.drain(..).map(|(i, segno)| (i, segno, bound)));
        }
        #[cfg(seeded_bugs)]
        let no_bound = crate::seeded::active(crate::seeded::Bug::DrainBeforeSealBound);
        #[cfg(not(seeded_bugs))]
        let no_bound = false;
        let by_old = &mut self.by_old;
        self.waiting.retain(|&(index, segno, bound)| {
            if bound > done && !no_bound {
                return true;
            }
            // Pages an earlier refresh indexed against it were removed by
            // the seals since: nothing to clear.
            by_old.remove(&(index, segno));
            fill_if_draining(shared, index, segno, &[]);
            false
        });
        if self.waiting.is_empty() {
            self.deferred_passes = 0;
        } else if self.deferred_passes < passes_a_start_may_wait(shared.counts.snapshot().active) {
            self.deferred_passes += 1;
        } else {
            // Publishes the count itself.
            self.complete(shared);
            return;
        }
        self.publish_waiting(shared);
    }

    /// Publishes how many drain starts wait, for `clean`
    /// ([`complete_waiting_drains`]); written only when it changed.
    fn publish_waiting(&self, shared: &Shared) {
        let waiting = (self.starting.len() + self.waiting.len()) as u64;
        // Relaxed: a hint (see `Shared::drains_waiting`).
        if shared.drains_waiting.load(Ordering::Relaxed) != waiting {
            shared.drains_waiting.store(waiting, Ordering::Relaxed);
        }
    }

    /// Completes every drain start, of this pass and waiting: one refresh,
    /// then for each segment still Draining at that incarnation, the flags
    /// of its pages replaced by writes not sealed yet cleared, and its
    /// drain list filled.
    ///
    /// Why the refresh misses nothing (docs/protocols/replace.md):
    /// `mark_replace` records the replacement in the new segment's
    /// page-map shard of the page, under its lock, and then, under the same
    /// lock, loads the old segment's word, clearing the flag itself if it
    /// sees Draining. Each segment here moved to Draining before this
    /// refresh. For a new segment the refresh finds in the in-use set, the
    /// shard's lock (the refresh reads each shard under it) orders the two: the record is indexed now (or was before), or the
    /// call's load comes after this lock's release, so after the move, and
    /// sees Draining. A new segment the refresh does not find was placed
    /// after the refresh passed its shard of the in-use set
    /// (`LsnSet::set_placed` takes that shard's lock), so after the move,
    /// and `next` had not returned: every `mark_replace` into it comes
    /// later and sees Draining.
    fn complete(&mut self, shared: &Shared) {
        self.deferred_passes = 0;
        if self.starting.is_empty() && self.waiting.is_empty() {
            return;
        }
        #[cfg(seeded_bugs)]
        let refresh = !crate::seeded::active(crate::seeded::Bug::SettleWithoutRefresh);
        #[cfg(not(seeded_bugs))]
        let refresh = true;
        if refresh {
            self.refresh(shared);
        }
        let waiting = std::mem::take(&mut self.waiting);
        let starts = (waiting.into_iter().map(|(index, segno, _)| (index, segno)))
            .chain(std::mem::take(&mut self.starting));
        for (index, segno) in starts {
            let replaced = self.by_old.remove(&(index, segno)).unwrap_or_default();
            fill_if_draining(shared, index, segno, &replaced);
        }
        self.publish_waiting(shared);
    }
}

/// For a `clean` that found no page to suggest: completes the drain starts
/// that wait for their seal bound (with a refresh, as the space target
/// does), so that a store that stopped stabilizing still gets its drains'
/// pages. Returns whether it completed any. Not with more than
/// [`DEFER_ACTIVE`] Active segments: there a refresh is what the wait
/// spares (a head far ahead, whose passes go on), and the starts complete
/// with a later pass's. Under the combiner's token: if another thread
/// holds it, that thread's pass ends by completing or deferring them, and
/// this `clean` finds nothing, as one racing a drain start may.
pub(crate) fn complete_waiting_drains(shared: &Shared) -> bool {
    // Relaxed: a hint (see `Shared::drains_waiting`).
    if shared.drains_waiting.load(Ordering::Relaxed) == 0
        || shared.counts.snapshot().active > DEFER_ACTIVE
    {
        return false;
    }
    shared
        .combiner
        .with_idle_state(shared, |state| {
            state.pending.complete(shared);
            // Fresh only for the pass it was made in: the next pass's
            // estimates must see the records made from now on.
            state.pending.fresh = false;
        })
        .is_some()
}

/// Fills incarnation `segno` of segment `index`'s drain list, clearing the
/// flags of `replaced` first, if it is still Draining at that incarnation
/// (it may have been emptied and freed since its move).
fn fill_if_draining(shared: &Shared, index: u32, segno: u64, replaced: &[PageId]) {
    let word = shared.table.segment(index as usize).load();
    if word.state == SegmentState::Draining && word.segno == Some(segno) {
        fill_drain_list(&shared.table, index as usize, replaced);
    }
}

/// The pages of incarnation `segno` of segment `index` that a
/// `mark_replace` replaced in a segment not sealed yet: the replacements
/// recorded in the deferred work of every placed in-use segment. A full
/// scan, for introspection (not an atomic snapshot); the combiner keeps a
/// [`PendingIndex`] instead, whose docs say why a drain start misses none.
pub(crate) fn pending_replacements(shared: &Shared, index: usize, segno: u64) -> Vec<PageId> {
    let mut pids = Vec::new();
    for (_, placed) in shared.active_lsns.placed() {
        if placed == index {
            continue;
        }
        shared.table.segment(placed).present.records(|r| {
            if r.old_index as usize == index && r.old_segno == segno {
                pids.push(r.pid);
            }
        });
    }
    pids
}

/// Lists a newly Draining segment's pages for `clean`, after clearing the
/// flags of `replaced`, its pages that writes not sealed yet replaced
/// (also used by recovery, with none).
pub(crate) fn fill_drain_list(
    table: &crate::core::table::SegmentTable,
    index: usize,
    replaced: &[PageId],
) {
    let segment = table.segment(index);
    let mut list = lock(&segment.drain_list);
    list.clear();
    segment.present.settle_and_list(replaced, &mut list);
    if !list.is_empty() {
        table.set_bit(Bits::Relocate, index);
    }
}

fn free(shared: &Shared, state: &mut CombinerState, index: usize, word: Word, stable_lsn: Lsn) {
    let segment = shared.table.segment(index);
    if let Some(segno) = word.segno {
        state.pending.forget(index, segno);
    }
    debug_assert_eq!(segment.live_bytes(word.state), 0);
    // Relaxed: the stream was set before the activation this combiner saw.
    if segment.stream.load(Ordering::Relaxed) == 0 {
        if let Some(lsn) = word.lsn(shared.config.segment_size) {
            record_user_lifetime(
                shared,
                crate::cleaning::placement::lifetime(stable_lsn, lsn),
            );
        }
    }
    let freeing = word.with_state(SegmentState::Freeing);
    segment.must_transition(word, freeing);
    // Empty now (both callers free only at a kept page count of 0): the
    // tables go back to the heap until the segment's reuse reserves them
    // again.
    segment.present.release();
    state.totals.freed += 1;
    shared.counts.moved(word.state, SegmentState::Freeing);
    let lsn = word
        .lsn(shared.config.segment_size)
        .expect("a sealed segment has an lsn");
    crate::trace::event!(
        DEBUG,
        "free",
        lid = index as u64 * shared.config.segment_size,
        lsn,
        waits_for_stable = lsn >= stable_lsn,
        "segment freed"
    );
    if lsn < stable_lsn {
        if let Err(e) = shared.epochs.defer_free(&shared.table, index, freeing) {
            state.errors.push(e);
        }
    } else {
        state.waiting_stable.push((index as u32, lsn));
    }
}

/// Folds a freed stream-0 segment's lifetime into the running average
/// (weight 1/16) that user-write placement compares lifetimes against.
fn record_user_lifetime(shared: &Shared, lifetime: u64) {
    // Relaxed: only the combiner writes it; readers take it as a hint.
    let old = shared.user_lifetime.load(Ordering::Relaxed);
    let new = if old == u64::MAX {
        lifetime
    } else {
        old - old / 16 + lifetime / 16
    };
    shared.user_lifetime.store(new, Ordering::Relaxed);
}

/// After `Accountant::tune`: asks the (new) policy again about every
/// Inactive segment, as if its counts had just changed, so a new
/// threshold, skew or policy applies to the segments sealed before it too.
/// Once per change, O(Inactive segments), in the combiner.
fn reconsider_inactive(
    shared: &Shared,
    state: &mut CombinerState,
    config: &Config,
    stable_lsn: Lsn,
) {
    let inactive = if state.cleaning.indexed {
        state.cleaning.victims.indices()
    } else {
        inactive_segments(shared)
    };
    for index in inactive {
        consider(shared, state, config, index, stable_lsn);
    }
}

/// Every Inactive segment, from the table: O(tip), for the rare passes that
/// need them all without the victim index.
fn inactive_segments(shared: &Shared) -> Vec<usize> {
    (0..shared.sequencer.tip())
        .filter(|&index| shared.table.segment(index).load().state == SegmentState::Inactive)
        .collect()
}

/// Starts or stops indexing victims when a space target comes or goes
/// (`Accountant::tune`): O(tip), once per change.
fn reindex(shared: &Shared, state: &mut CombinerState, indexed: bool) {
    let cleaning = &mut state.cleaning;
    cleaning.victims = VictimIndex::new(shared.config.segment_size);
    cleaning.indexed = indexed;
    if indexed {
        for index in inactive_segments(shared) {
            let segment = shared.table.segment(index);
            let word = segment.load();
            let segno = word.segno.expect("a sealed segment has an lsn");
            cleaning
                .victims
                .upsert(index, segno, segment.live_bytes(word.state));
        }
    }
}

/// Under a space target: while the file, as it will be once the draining
/// segments are relocated, exceeds the target, drain the policy's best
/// victim (one that frees something worth its relocations), pacing the
/// relocations in flight to the `sealed` segments this pass sealed.
fn enforce_space_target(
    shared: &Shared,
    state: &mut CombinerState,
    config: &Config,
    stable_lsn: Lsn,
    sealed: u64,
) {
    let Some(target) = config.space_target else {
        return;
    };
    if config.mode != Mode::Gc {
        return;
    }
    let ss = config.segment_size;
    // The Draining segments' flags must be exact first.
    state.pending.complete(shared);
    let mut unrelocated = state.cleaning.unrelocated(shared);
    loop {
        let counts = shared.counts.snapshot();
        let c = &state.cleaning;
        if !policy::over_target(
            target,
            ss,
            c.sealed_live,
            counts.active as u64,
            counts.inactive as u64,
            unrelocated,
        ) {
            return;
        }
        let best = contain(Callback::CleaningPolicy, || {
            c.victims.best(&*config.policy, stable_lsn, |i| {
                facts_of(shared, i, shared.table.segment(i).load())
            })
        });
        let best = match best {
            Ok(best) => best,
            Err(panicked) => {
                // Contained: no drain this pass; the next pass asks again.
                state.errors.push(panicked);
                return;
            }
        };
        let Some(mut victim) = best else {
            return;
        };
        let live_of = |index: usize| {
            shared
                .table
                .segment(index)
                .live_bytes(SegmentState::Inactive)
        };
        if !policy::worth_draining(live_of(victim), ss) {
            // The policy's pick (FIFO's oldest, say) is full: fall back to
            // the emptiest segment rather than stall.
            victim = c.victims.emptiest().expect("the index is not empty");
        }
        let live = live_of(victim);
        let to_relocate = inactive_not_yet_replaced_bytes(shared, state, victim);
        if !policy::worth_draining(live, ss)
            || !policy::room_to_drain(unrelocated, to_relocate, ss, sealed, config.stream_count())
        {
            return;
        }
        let word = shared.table.segment(victim).load();
        debug_assert_eq!(word.state, SegmentState::Inactive);
        start_draining(shared, state, victim, word, DrainReason::SpaceTarget);
        unrelocated += to_relocate;
    }
}

/// The spec's tip-shrinking heuristic (section 5): when enough of the file
/// is free, drain its highest Inactive segment so its pages move down.
///
/// Under a space target there is deliberately no second rule for free
/// holes. Holes below the tip are transient while the store writes: `next`
/// reuses the lowest one first, so the tip comes down each time its top
/// segment is cleaned, and passes (hence drains) only happen while the
/// store writes. Draining the top segment to fill a hole that the next
/// roll would fill anyway only moves a full segment: with several heads,
/// whose cleaning comes in bursts, such a rule once made up a third of all
/// relocations (`wasim --policy cost-benefit-sep`, 80/20: WA 3.25 with it,
/// 2.56 without).
fn drain_top_if_worthwhile(shared: &Shared, state: &mut CombinerState, config: &Config) {
    let tip = shared.sequencer.tip();
    let counts = shared.counts.snapshot();
    let live = counts.active + counts.inactive + counts.draining;
    let free = tip.saturating_sub(live) as u64;
    if !policy::should_drain_top(config, free, counts.inactive as u64) {
        return;
    }
    for index in (0..tip).rev() {
        let word = shared.table.segment(index).load();
        if word.state == SegmentState::Inactive {
            start_draining(shared, state, index, word, DrainReason::TipShrink);
            return;
        }
    }
}

/// Under a space target, an idle store's file comes down to its target
/// (`policy::compact_when_idle`): one drain of the highest live segment at
/// a time, if it is Inactive, while nothing else is Draining. Its pages
/// move into the lowest free segments, and once it is free `next`
/// truncates it. The rule measures the file up to its highest live
/// segment, not the tip: free segments above it are already on their way
/// out (a truncation runs on a thread of its own), and counting them would
/// make how far the file is compacted depend on when that thread runs.
/// Under load the rule never fires (see `drain_top_if_worthwhile`).
fn compact_when_idle(shared: &Shared, state: &mut CombinerState, config: &Config, idle: bool) {
    let Some(target) = config.space_target else {
        return;
    };
    if !idle || config.mode != Mode::Gc || !state.cleaning.draining.is_empty() {
        return;
    }
    let tip = shared.sequencer.tip();
    let Some((top, word)) = (0..tip).rev().find_map(|index| {
        let word = shared.table.segment(index).load();
        let free = matches!(
            word.state,
            SegmentState::Free | SegmentState::Freeing | SegmentState::Vacant
        );
        (!free).then_some((index, word))
    }) else {
        return;
    };
    let counts = shared.counts.snapshot();
    let live = counts.active + counts.inactive + counts.draining;
    let extent = top + 1;
    if word.state == SegmentState::Inactive
        && policy::compact_when_idle(
            idle,
            target,
            config.segment_size,
            state.cleaning.sealed_live,
            extent as u64,
            extent.saturating_sub(live) as u64,
            config.stream_count(),
        )
    {
        start_draining(shared, state, top, word, DrainReason::Idle);
    }
}

/// The combiner's fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        field!(Combiner, word, hot),
        field!(Combiner, state, hot),
        // crossbeam's queue pads its head and tail itself.
        field!(Combiner, sink, hot),
        // Written only when an error is sunk.
        field!(Combiner, sunk, COLD),
    ]
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;

    use crate::core::segment::Word;
    use crate::{Accountant, Collector, Config, DiskPtr, Lsn, MemStorage, SegmentState};

    const SS: u64 = 4096;
    const L: Lsn = SS as Lsn;

    /// Segment 0 with 20 pages, 18 of them replaced from segment 1 and page
    /// 18 from the first segment of a head far ahead, which has
    /// `far_segments` unsealed segments; then a `stabilize` that seals
    /// segments 0 and 1 and so starts segment 0's drain. Page 19 is the
    /// one left to relocate.
    fn drain_start_behind_a_far_head(far_segments: usize) -> Accountant {
        let config = Config::builder()
            .segment_size(SS)
            .allow_small_segments(true)
            .build()
            .unwrap();
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        let inline = DiskPtr::Inline;
        let a = acc.next(0).unwrap();
        for pid in 0..20u64 {
            acc.mark_link(pid, (pid * 150) as Lsn, inline(a + pid * 150), 150)
                .unwrap();
        }
        // Most of segment 0's pages move on: it is sparse once sealed.
        let b = acc.next(L).unwrap();
        for pid in 0..18u64 {
            acc.mark_replace(
                pid,
                L + pid as Lsn,
                &[inline(a + pid * 150)],
                inline(b + pid),
                150,
            )
            .unwrap();
        }
        // A head far ahead, with its backlog of unsealed segments; its
        // first segment replaces page 18 out of segment 0.
        let far = 10_000 * L;
        let mut far_lid = 0;
        for k in 0..far_segments as Lsn {
            let lid = acc.next(far + k * L).unwrap();
            if k == 0 {
                far_lid = lid;
            }
        }
        acc.mark_replace(18, far, &[inline(a + 18 * 150)], inline(far_lid), 150)
            .unwrap();
        acc.stabilize(2 * L).unwrap();
        acc
    }

    /// Runs passes `from..to` (each seals one segment), checking that the
    /// waiting start's segment keeps the spec's set; returns the first pass
    /// after which `clean` suggested page 19 (the drain list filled).
    fn passes_until_filled(acc: &Accountant, from: Lsn, to: Lsn) -> Option<Lsn> {
        use crate::Skip;
        let mut filled_after = None;
        for i in from..to {
            acc.next(i * L).unwrap();
            acc.stabilize((i + 1) * L).unwrap();
            acc.audit().unwrap();
            assert_eq!(acc.segment_not_yet_replaced(0), vec![19]);
            if let Some(r) = acc.clean(Skip::Nothing) {
                assert_eq!(r.pid, 19, "page 18 was replaced by the far head");
                filled_after.get_or_insert(i);
            }
        }
        filled_after
    }

    /// With more Active segments than `DEFER_ACTIVE`, a drain start waits
    /// up to `DEFER_PASSES` passes for its refresh. Meanwhile `clean`
    /// suggests none of its pages, introspection reports the spec's set
    /// (less the replacement still recorded in an unsealed segment) and
    /// the audit holds; then the list is filled without that page.
    #[test]
    fn a_drain_start_waits_for_a_refresh_behind_a_far_head() {
        use crate::Skip;
        let acc = drain_start_behind_a_far_head(super::DEFER_ACTIVE + 1);
        let info = acc.segment_info(0).unwrap();
        assert_eq!(info.state, SegmentState::Draining, "{info:?}");
        assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), None, "waiting");
        assert_eq!(acc.segment_not_yet_replaced(0), vec![19]);
        assert_eq!(info.not_yet_replaced, 1);
        acc.audit().unwrap();
        // The start completes at the last pass that may wait, or before.
        let filled_after = passes_until_filled(&acc, 2, 2 + super::DEFER_PASSES as Lsn);
        assert!(filled_after.is_some(), "the drain start completed");
        for _ in 0..5 {
            assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), Some(19));
        }
    }

    /// With few segments in use, a drain start waits for the seal of the
    /// segment holding a replacement of one of its pages (the far head's
    /// first), not for a refresh: its list stays empty after the pass. A
    /// `clean` that finds nothing listed meanwhile completes it, with no
    /// pass run, and never suggests the replaced page; so a store that
    /// stops stabilizing still gets its drains' pages.
    #[test]
    fn a_clean_completes_a_drain_start_waiting_for_its_seal_bound() {
        use crate::core::table::Bits;
        use crate::Skip;
        let acc = drain_start_behind_a_far_head(1);
        assert_eq!(acc.segment_info(0).unwrap().state, SegmentState::Draining);
        assert!(
            !acc.shared.table.bit(Bits::Relocate, 0),
            "the start waits for its seal bound"
        );
        assert_eq!(acc.segment_not_yet_replaced(0), vec![19]);
        let passes = acc.metrics().passes;
        for _ in 0..3 {
            assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), Some(19));
        }
        assert!(acc.shared.table.bit(Bits::Relocate, 0));
        assert_eq!(acc.metrics().passes, passes, "no pass ran");
        acc.audit().unwrap();
    }

    /// The same start, left alone, completes at the pass that reaches its
    /// seal bound: the one that seals the far head's first segment, whose
    /// seal removes page 18 from segment 0 itself.
    #[test]
    fn a_drain_start_completes_at_its_seal_bound() {
        use crate::core::table::Bits;
        use crate::Skip;
        let acc = drain_start_behind_a_far_head(1);
        assert!(!acc.shared.table.bit(Bits::Relocate, 0));
        // One pass seals everything up to and with the far head's first
        // segment.
        acc.stabilize(10_000 * L + L).unwrap();
        assert!(acc.shared.table.bit(Bits::Relocate, 0));
        assert_eq!(
            acc.segment_pages(0)
                .iter()
                .map(|&(p, _)| p)
                .collect::<Vec<_>>(),
            vec![19]
        );
        assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), Some(19));
        acc.audit().unwrap();
    }

    /// Behind a larger backlog the start waits longer: one pass per
    /// `REFRESH_SEGMENTS_PER_PASS` Active segments (here 16), so a refresh
    /// costs about that many segments per pass; it still completes.
    #[test]
    fn a_drain_start_waits_longer_behind_a_larger_backlog() {
        use crate::Skip;
        let far = 16 * super::REFRESH_SEGMENTS_PER_PASS;
        assert_eq!(super::passes_a_start_may_wait(far + 3), 16);
        let acc = drain_start_behind_a_far_head(far);
        assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), None, "waiting");
        // Past the 8 passes a smaller backlog would allow, still waiting.
        let early = 2 + super::DEFER_PASSES as Lsn + 2;
        assert_eq!(passes_until_filled(&acc, 2, early), None, "waited longer");
        let filled_after = passes_until_filled(&acc, early, 2 + 16);
        assert!(filled_after.is_some(), "the drain start completed");
        assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), Some(19));
        acc.audit().unwrap();
    }

    /// Issue 14, defect 6: a deferred replacement named its old segment's
    /// incarnation by the generation only (now 20 bits). With several
    /// heads, one segment can be reused 2^20 times while the segment
    /// holding the replacement stays Active; the replacement then landed on
    /// the wrong incarnation and removed the page's newest fragment. (The
    /// 2^20 - 1 reuses in between are simulated by winding the generation back on
    /// the Free segment: nothing else about those reuses matters here.)
    #[test]
    fn a_replacement_is_void_against_a_later_incarnation_of_the_same_generation() {
        let config = Config::builder().segment_size(SS).build().unwrap();
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        let inline = DiskPtr::Inline;
        let o = acc.next(0).unwrap();
        acc.mark_link(1, 0, inline(o), 10).unwrap();
        // A head far ahead: its segment stays Active throughout.
        let far = 1000 * L;
        let t = acc.next(far).unwrap();
        acc.mark_replace(1, far, &[inline(o)], inline(t), 10)
            .unwrap();
        // Another head moves page 1 on, which empties O once stable.
        let u = acc.next(L).unwrap();
        acc.mark_replace(1, L, &[inline(o)], inline(u), 10).unwrap();
        acc.next(2 * L).unwrap();
        acc.stabilize(2 * L).unwrap();
        acc.flush();
        let segment = acc.shared.table.segment(0);
        let word = segment.load();
        assert_eq!(word.state, SegmentState::Free);
        // 2^20 - 1 reuses later, the next activation has the generation
        // the replacement recorded.
        let generations = crate::core::segment::GENERATIONS;
        let wound = Word {
            generation: (word.generation + generations - 1) & (generations - 1),
            ..word
        };
        segment.transition(word, wound).unwrap();
        assert_eq!(acc.next(3 * L).unwrap(), o, "segment 0 is reused");
        assert_eq!(segment.load().generation, word.generation);
        // Page 1's newest fragment lives in this incarnation.
        acc.mark_link(1, 3 * L, inline(o), 20).unwrap();
        acc.stabilize(4 * L).unwrap();
        // Sealing the far head applies its replacement of the first
        // incarnation's fragment: void now.
        acc.stabilize(far + L).unwrap();
        let info = acc.segment_info(0).unwrap();
        assert!(
            matches!(info.state, SegmentState::Inactive | SegmentState::Draining),
            "{info:?}"
        );
        assert_eq!(
            acc.segment_pages(0),
            vec![(1, 20)],
            "the live fragment stays"
        );
        acc.audit().unwrap();
    }
}
