//! Stabilization: deactivating segments in lsn order without making any
//! thread wait.
//!
//! `stabilize` publishes its goal in one word (`goal << 2 | repass | busy`). If no
//! thread is combining, the caller sets `busy` and becomes the combiner: it
//! deactivates every registered Active segment below the goal in lsn order,
//! applies their deferred replacements, frees and drains what that empties,
//! and loops while the goal keeps rising. If a thread is combining, the
//! caller raises the goal and returns at once: the combiner will do its
//! work. The combiner gives up `busy` with a CAS that expects the goal it
//! finished, so a raise that slips in makes that CAS fail and the combiner
//! goes round again: no request is ever stranded. All of it is
//! read-modify-writes of one word, so no SeqCst store/load pairs are
//! needed.
//!
//! Only the combiner touches [`CombinerState`] (the `busy` bit is the
//! token), so deactivation, replacement application, freeing and draining
//! decisions are single-threaded, and every free is decided exactly once.
//!
//! A `next` whose lsn a requested goal already covers (a caller racing
//! its own stabilize) registers its segment after a pass may have
//! collected the registrations: it *announces* itself with a
//! read-modify-write of the same word, setting `repass` (or taking the
//! token) so that a pass runs after its registration and seals it. A
//! `next` whose announcement finds the goal below its lsn needs nothing:
//! every later request reads the word after its announcement (all writes
//! to the word are read-modify-writes) and so sees its registration.
//!
//! Sealing is two-phase (the seal protocol of [`crate::segment`]): a pass
//! first *closes* every registered Active segment below the goal (Active →
//! Sealing, then the barrier through its writers' locks), collecting
//! registrations again after each round of barriers until none below the
//! goal appears, and only then *finishes* them in lsn order. A segment
//! whose registration a pass could miss was registered after every
//! barrier of that pass, so no segment this pass seals holds a write that
//! names it: deactivation stays in lsn order wherever it matters.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::accountant::Shared;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::policy::{self, SegmentFacts};
use crate::segment::{Deferred, SegmentState, Word};
use crate::sync::{lock, AtomicBool, AtomicU64, Ordering, Queue, UnsafeCell};
use crate::table::Bits;
use crate::types::Lsn;
use crate::victims::VictimIndex;

const BUSY: u64 = 1;
/// A `next` registered a segment below the requested goal after a pass
/// may have collected: run a pass again before releasing the token.
const REPASS: u64 = 2;
/// The goal sits above the two flag bits.
const GOAL_SHIFT: u32 = 2;

/// What cleaning decisions need, kept by the combiner as it seals
/// segments and applies replacements (so no decision scans the table).
#[derive(Debug)]
pub(crate) struct Cleaning {
    /// The Inactive segments, for victim picks.
    pub(crate) victims: VictimIndex,
    /// Live bytes in Inactive and Draining segments.
    pub(crate) sealed_live: u64,
    /// The Draining segments, in the order they started draining.
    pub(crate) draining: Vec<u32>,
}

impl Cleaning {
    pub(crate) fn new(segment_size: u64) -> Cleaning {
        Cleaning {
            victims: VictimIndex::new(segment_size),
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

/// State owned by whichever thread holds the combiner token.
#[derive(Debug)]
pub(crate) struct CombinerState {
    /// Registered Active segments, by segment number: `(segno, index)`.
    active: BinaryHeap<Reverse<(u64, u32)>>,
    /// Segments waiting for the stabilized segment lsn to rise above
    /// `lsn` before their epoch deferral starts: `(index, lsn)`.
    pub(crate) waiting_stable: Vec<(u32, Lsn)>,
    /// Segments stabilized (all segment numbers below this are stable).
    done: u64,
    scratch: Deferred,
    touched: Vec<u32>,
    /// The segments a pass closed, `(segno, index)` (scratch space).
    closing: Vec<(u64, u32)>,
    /// Errors met while combining on behalf of others, reported by the
    /// next `stabilize` that combines.
    unreported: Vec<Error>,
    pub(crate) cleaning: Cleaning,
}

impl CombinerState {
    /// `(segno, index)` of every registered Active segment.
    pub(crate) fn registered_active(&self) -> Vec<(u64, u32)> {
        self.active.iter().map(|r| r.0).collect()
    }
}

#[derive(Debug)]
pub(crate) struct Combiner {
    word: AtomicU64,
    state: UnsafeCell<CombinerState>,
    /// Activations published by `next` for the combiner to pick up.
    activations: Queue<(u64, u32)>,
    /// Whether `unreported` may be non-empty.
    has_errors: AtomicBool,
}

// Safety: the only non-Sync field is `state`, and it is accessed only by
// the thread holding the busy bit of `word` (see `with_state`), which the
// AcqRel CASes that take and release the bit hand from one thread to the
// next; everything in it is Send.
unsafe impl Sync for Combiner {}

impl Combiner {
    pub(crate) fn new(segment_size: u64) -> Combiner {
        Self::recovered(0, Vec::new(), Vec::new(), Cleaning::new(segment_size))
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
            word: AtomicU64::new(done << GOAL_SHIFT),
            state: UnsafeCell::new(CombinerState {
                active: active.into_iter().map(Reverse).collect(),
                waiting_stable,
                done,
                scratch: Deferred::default(),
                touched: Vec::new(),
                closing: Vec::new(),
                unreported: Vec::new(),
                cleaning,
            }),
            activations: Queue::new(),
            has_errors: AtomicBool::new(false),
        }
    }

    /// Registers an activated segment; must happen before the activating
    /// `next` returns, so any stabilize that covers it sees it.
    pub(crate) fn register(&self, segno: u64, index: usize) {
        self.activations.push((segno, index as u32));
    }

    /// Called by `next` right after registering the activation of
    /// `segno`: if a goal covering it was already requested, a pass may
    /// have collected the registrations without it, so make sure one runs
    /// after it (setting `repass` for the busy combiner, or combining).
    /// Errors met while combining wait for the next `stabilize`.
    pub(crate) fn announce(&self, shared: &Shared, segno: u64) {
        // AcqRel read-modify-write (writing the word unchanged): every later
        // request's read-modify-write of the word reads after it, so the
        // pass it starts sees our registration; Acquire shows us the goal.
        let mut current = self.word.fetch_or(0, Ordering::AcqRel);
        loop {
            if current >> GOAL_SHIFT <= segno {
                return;
            }
            let (rmw, load) = token_orders();
            if current & BUSY != 0 {
                // The busy combiner's release CAS fails on the changed word
                // and it goes round again, collecting us.
                match self
                    .word
                    .compare_exchange_weak(current, current | REPASS, rmw, load)
                {
                    Ok(_) => return,
                    Err(actual) => current = actual,
                }
            } else {
                match self
                    .word
                    .compare_exchange_weak(current, current | BUSY | REPASS, rmw, load)
                {
                    Ok(_) => {
                        self.combine(shared);
                        return;
                    }
                    Err(actual) => current = actual,
                }
            }
        }
    }

    /// Requests that every segment with number below `goal` be stabilized.
    pub(crate) fn request(&self, shared: &Shared, goal: u64) -> Result<()> {
        // Relaxed initial read: the CAS validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if goal <= current >> GOAL_SHIFT {
                // Already requested (and being done by the combiner) or done.
                return Ok(());
            }
            let busy = current & BUSY != 0;
            // AcqRel: Release hands our prior writes (the links into the
            // segments we stabilize) to the combiner, Acquire lets a new
            // combiner see the previous combiner's work. A failed CAS is a
            // load: Acquire there too.
            let (rmw, load) = token_orders();
            match self
                .word
                .compare_exchange_weak(current, goal << GOAL_SHIFT | BUSY, rmw, load)
            {
                Ok(_) if busy => return Ok(()),
                Ok(_) => {
                    self.combine(shared);
                    return self.take_errors(shared);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Runs `f` on the combiner state if no thread is combining (audits and
    /// statistics at quiescent points). Goals raised meanwhile are combined
    /// before the token is released; their errors wait for the next
    /// `stabilize`.
    pub(crate) fn with_idle_state<R>(
        &self,
        shared: &Shared,
        f: impl FnOnce(&mut CombinerState) -> R,
    ) -> Option<R> {
        // Acquire: the previous combiner's work is visible to us.
        let current = self.word.load(Ordering::Acquire);
        if current & BUSY != 0 {
            return None;
        }
        // AcqRel/Acquire: see `request`.
        let (rmw, load) = token_orders();
        self.word
            .compare_exchange(current, current | BUSY, rmw, load)
            .ok()?;
        let result = self.with_state(|state| {
            self.collect_activations(state);
            f(state)
        });
        self.combine(shared);
        Some(result)
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut CombinerState) -> R) -> R {
        self.state.with_mut(|state| {
            // Safety: only the holder of the busy bit calls this (every
            // caller is inside `combine` or `with_idle_state` after setting
            // it), and the access ends before the bit is released.
            f(unsafe { &mut *state })
        })
    }

    fn collect_activations(&self, state: &mut CombinerState) {
        while let Some((segno, index)) = self.activations.pop() {
            state.active.push(Reverse((segno, index)));
        }
    }

    /// The combiner loop: the caller holds the busy bit. Works until the
    /// published goal is done, then releases the bit with a CAS that fails
    /// (and sends us round again) if the goal was raised meanwhile.
    fn combine(&self, shared: &Shared) {
        loop {
            // Acquire: see the requesters' writes (release in `request`).
            let current = self.word.load(token_orders().1);
            let goal = current >> GOAL_SHIFT;
            if current & REPASS != 0 {
                // Clear the flag before the pass it asks for: an
                // announcement after this changes the word again.
                let (rmw, load) = token_orders();
                if self
                    .word
                    .compare_exchange(current, current & !REPASS, rmw, load)
                    .is_err()
                {
                    continue;
                }
            }
            let pending = self.with_state(|state| {
                if goal > state.done || current & REPASS != 0 {
                    self.collect_activations(state);
                    pass(shared, state, goal.max(state.done));
                    if !state.unreported.is_empty() {
                        // Release: pairs with `take_errors`.
                        self.has_errors.store(true, Ordering::Release);
                    }
                    true
                } else {
                    false
                }
            });
            if pending {
                continue;
            }
            // AcqRel: Release publishes our work to the next combiner and
            // to `with_idle_state`; a failure is a load of a raised goal.
            if self
                .word
                .compare_exchange(
                    current,
                    goal << GOAL_SHIFT,
                    token_orders().0,
                    token_orders().1,
                )
                .is_ok()
            {
                return;
            }
        }
    }

    /// Reports (the first of) the errors met while combining, if the token
    /// is free to look; otherwise a later `stabilize` reports them.
    fn take_errors(&self, shared: &Shared) -> Result<()> {
        // Acquire: pairs with the release store under the token.
        if !self.has_errors.load(Ordering::Acquire) {
            return Ok(());
        }
        let first = self
            .with_idle_state(shared, |state| {
                let first = (!state.unreported.is_empty()).then(|| state.unreported.remove(0));
                // Relaxed: we hold the token; its release publishes this.
                self.has_errors
                    .store(!state.unreported.is_empty(), Ordering::Relaxed);
                first
            })
            .flatten();
        first.map_or(Ok(()), Err)
    }
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
/// 1. deactivate registered Active segments below the goal in lsn order,
///    each applying its deferred blob removals and replacements and then
///    considering every touched segment for freeing or draining;
/// 2. publish the new stabilized lsn;
/// 3. start the epoch deferral of frees whose lsn is now below it;
/// 4. under a space target, drain the policy's best victims until the
///    projected file fits;
/// 5. apply the tip-shrinking heuristics.
fn pass(shared: &Shared, state: &mut CombinerState, goal: u64) {
    let ss = shared.config.segment_size;
    let stable_lsn = goal as Lsn * ss as Lsn - ss as Lsn;
    // 1. Close every registered Active segment below the goal. A barrier
    //    may reveal writes into segments registered after the last
    //    collection: collect again until a round closes nothing new.
    let mut closing = std::mem::take(&mut state.closing);
    loop {
        collect(shared, state);
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
    // 2. Finish them in lsn order.
    closing.sort_unstable();
    for &(segno, index) in &closing {
        finish(shared, state, index as usize, segno, stable_lsn);
    }
    let sealed = closing.len() as u64;
    state.done = state.done.max(goal);
    // 3. Publish the stabilized lsn, and only then let the sealed lsns
    //    leave the in-use map (`next` reserves, then checks the lsn).
    #[cfg(seeded_bugs)]
    if crate::seeded::active(crate::seeded::Bug::PublishAfterRemove) {
        for &(segno, _) in &closing {
            shared.active_lsns.remove(segno);
        }
    }
    // Relaxed load: only the combiner writes it. Release store: `next`'s
    // stale-lsn check and statistics read it.
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
            shared.epochs.defer_free(&shared.table, index as usize);
        } else {
            i += 1;
        }
    }
    enforce_space_target(shared, state, stable_lsn, sealed);
    drain_top_if_worthwhile(shared, state);
}

/// Moves newly registered activations into the combiner's heap.
fn collect(shared: &Shared, state: &mut CombinerState) {
    shared.combiner.collect_activations(state);
}

/// Closes a registered Active segment (the first half of its seal):
/// Active → Sealing, then the barrier through its writers' locks. After
/// this no write into it can begin, and every write that began has
/// finished.
fn close(shared: &Shared, index: usize, segno: u64) {
    let segment = shared.table.segment(index);
    let word = segment.load();
    assert!(
        word.state == SegmentState::Active && word.segno == Some(segno),
        "registered segment {index} (segno {segno}) is {word:?}"
    );
    segment.must_transition(word, word.with_state(SegmentState::Sealing));
    segment.seal_barrier();
}

/// Finishes a closed segment's seal: counts its live bytes, collects its
/// deferred work, makes it Inactive, and applies that work.
fn finish(shared: &Shared, state: &mut CombinerState, index: usize, segno: u64, stable_lsn: Lsn) {
    let segment = shared.table.segment(index);
    let word = segment.load();
    assert!(
        word.state == SegmentState::Sealing && word.segno == Some(segno),
        "closed segment {index} (segno {segno}) is {word:?}"
    );
    {
        // Complete since the barrier: a `mark_replace` records only while
        // it sees the segment Active under this lock.
        let mut deferred = lock(&segment.deferred);
        std::mem::swap(&mut deferred.replacements, &mut state.scratch.replacements);
        std::mem::swap(
            &mut deferred.blob_removals,
            &mut state.scratch.blob_removals,
        );
    }
    segment.seal_bytes();
    state.cleaning.sealed_live += segment.live_bytes(SegmentState::Inactive);
    segment.must_transition(word, word.with_state(SegmentState::Inactive));
    shared
        .counts
        .moved(SegmentState::Sealing, SegmentState::Inactive);
    for blob in state.scratch.blob_removals.drain(..) {
        if let Err(source) = shared.storage.remove_blob(blob) {
            state.unreported.push(Error::BlobRemoval { blob, source });
        }
    }
    for r in state.scratch.replacements.drain(..) {
        let old = shared.table.segment(r.old_index as usize);
        let old_word = old.load();
        if old_word.generation != r.old_generation {
            // The old incarnation is gone; so are its fragments.
            continue;
        }
        match old_word.state {
            SegmentState::Inactive | SegmentState::Draining => {
                if let Some(bytes) = old.remove_replaced(r.pid) {
                    state.cleaning.sealed_live -= bytes;
                }
            }
            SegmentState::Active | SegmentState::Sealing => panic!(
                "replacement of page {} applied to unsealed segment {} (deactivation out of lsn order)",
                r.pid, r.old_index
            ),
            _ => debug_assert!(old.present.remove(r.pid).is_none()),
        }
        state.touched.push(r.old_index);
    }
    state.touched.push(index as u32);
    state.touched.sort_unstable();
    state.touched.dedup();
    let touched = std::mem::take(&mut state.touched);
    for &i in &touched {
        consider(shared, state, i as usize, stable_lsn);
    }
    state.touched = touched;
    state.touched.clear();
}

/// The policy's facts about sealed segment `index`.
fn facts_of(shared: &Shared, index: usize, word: Word) -> SegmentFacts {
    let segment = shared.table.segment(index);
    let ss = shared.config.segment_size;
    SegmentFacts::new(
        index as u64,
        word.lsn(ss).expect("a sealed segment has an lsn"),
        segment.present.len() as u64,
        // Relaxed: only the combiner writes a sealed segment's counters.
        segment.removed.load(Ordering::Relaxed),
        segment.live_bytes(word.state),
        ss,
    )
}

/// Frees a sealed segment that emptied, or drains one the policy picks
/// unprompted; otherwise (re)indexes it as a victim candidate.
fn consider(shared: &Shared, state: &mut CombinerState, index: usize, stable_lsn: Lsn) {
    let segment = shared.table.segment(index);
    let word = segment.load();
    match word.state {
        SegmentState::Inactive if segment.present.is_empty() => {
            state.cleaning.victims.remove(index);
            free(shared, state, index, word, stable_lsn)
        }
        SegmentState::Inactive => {
            let config = &shared.config;
            let tip = shared.sequencer.tip() as u64;
            let facts = facts_of(shared, index, word);
            if config.mode == Mode::Gc && config.policy.drain_unprompted(config, &facts, tip) {
                start_draining(shared, state, index, word);
            } else {
                let segno = word.segno.expect("a sealed segment has an lsn");
                state
                    .cleaning
                    .victims
                    .upsert(index, segno, facts.live_bytes);
            }
        }
        SegmentState::Draining if segment.present.is_empty() => {
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

fn start_draining(shared: &Shared, state: &mut CombinerState, index: usize, word: Word) {
    let segment = shared.table.segment(index);
    segment.must_transition(word, word.with_state(SegmentState::Draining));
    state.cleaning.victims.remove(index);
    state.cleaning.draining.push(index as u32);
    shared
        .counts
        .moved(SegmentState::Inactive, SegmentState::Draining);
    let newly = shared.table.set_bit(Bits::Drain, index);
    debug_assert!(newly);
    fill_drain_list(&shared.table, index);
}

/// Lists a newly Draining segment's pages for `clean` (also used by
/// recovery).
pub(crate) fn fill_drain_list(table: &crate::table::SegmentTable, index: usize) {
    let segment = table.segment(index);
    let mut list = lock(&segment.drain_list);
    list.clear();
    list.extend(segment.present.not_yet_replaced());
    if !list.is_empty() {
        table.set_bit(Bits::Relocate, index);
    }
}

fn free(shared: &Shared, state: &mut CombinerState, index: usize, word: Word, stable_lsn: Lsn) {
    let segment = shared.table.segment(index);
    debug_assert_eq!(segment.live_bytes(word.state), 0);
    // Relaxed: the stream was set before the activation this combiner saw.
    if segment.stream.load(Ordering::Relaxed) == 0 {
        if let Some(lsn) = word.lsn(shared.config.segment_size) {
            record_user_lifetime(shared, crate::placement::lifetime(stable_lsn, lsn));
        }
    }
    segment.must_transition(word, word.with_state(SegmentState::Freeing));
    shared.counts.moved(word.state, SegmentState::Freeing);
    let lsn = word
        .lsn(shared.config.segment_size)
        .expect("a sealed segment has an lsn");
    if lsn < stable_lsn {
        shared.epochs.defer_free(&shared.table, index);
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

/// Under a space target: while the file, as it will be once the draining
/// segments are relocated, exceeds the target, drain the policy's best
/// victim (one that frees something worth its relocations), pacing the
/// relocations in flight to the `sealed` segments this pass sealed.
fn enforce_space_target(shared: &Shared, state: &mut CombinerState, stable_lsn: Lsn, sealed: u64) {
    let config = &shared.config;
    let Some(target) = config.space_target else {
        return;
    };
    if config.mode != Mode::Gc {
        return;
    }
    let ss = config.segment_size;
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
        let best = c.victims.best(&*config.policy, stable_lsn, |i| {
            facts_of(shared, i, shared.table.segment(i).load())
        });
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
        let to_relocate = shared
            .table
            .segment(victim)
            .present
            .not_yet_replaced_bytes();
        if !policy::worth_draining(live, ss)
            || !policy::room_to_drain(unrelocated, to_relocate, ss, sealed, config.stream_count())
        {
            return;
        }
        let word = shared.table.segment(victim).load();
        debug_assert_eq!(word.state, SegmentState::Inactive);
        start_draining(shared, state, victim, word);
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
fn drain_top_if_worthwhile(shared: &Shared, state: &mut CombinerState) {
    let config = &shared.config;
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
            start_draining(shared, state, index, word);
            return;
        }
    }
}
