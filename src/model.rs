//! The sequential reference model: a plain single-threaded implementation
//! of the specification (`SPEC.md`, sections 4 to 6), small enough to be
//! obviously right. It is the oracle of the differential tests
//! (`tests/differential.rs`): the same operations run against it and the
//! concurrent [`Accountant`](crate::Accountant), and after every step both
//! must agree on every segment.
//!
//! It uses only std collections and the same pure rules as the accountant
//! ([`policy::drainable`], [`policy::should_drain_top`]); no atomics, no
//! epochs, no threads.
//!
//! Where the specification leaves a choice, the model does not choose: the
//! test shows it the accountant's choice, the model checks that the choice
//! is allowed and follows it. The choices are
//! - which segment `next` hands out, and whether it shrank the file first
//!   ([`Model::next_choices`], [`Model::next_with`]);
//! - when an epoch-deferred free lands ([`Model::land`]: the test calls it
//!   when the accountant reports a segment Free);
//! - which page `clean` suggests ([`Model::check_clean`]).
//!
//! Caller mistakes return the same [`Error`] variants as the accountant,
//! with the same fields, checked in the same order, and change nothing.
//!
//! ```
//! use segment_accountant::model::Model;
//! use segment_accountant::{Config, DiskPtr, SegmentState};
//!
//! let config = Config::builder().segment_size(4096).build()?;
//! let mut m = Model::new(config);
//! // The accountant extended the file for lsn 0: that is allowed.
//! m.next_with(0, 0, 0)?;
//! m.mark_link(1, 10, DiskPtr::Inline(10), 100)?;
//! m.next_with(4096, 4096, 0)?;
//! m.mark_replace(1, 4096, &[DiskPtr::Inline(10)], DiskPtr::Inline(4096), 100)?;
//! m.stabilize(8192)?;
//! assert_eq!(m.segment(0).state, SegmentState::Freeing);
//! assert_eq!(m.segment(1).state, SegmentState::Draining);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::policy;
use crate::segment::{SegmentState, MAX_SEGMENT_NUMBER};
use crate::types::{BlobId, DiskPtr, Lid, Lsn, PageId};

/// Generations wrap at 2^21 (the width of the accountant's packed field).
const GENERATION_MASK: u32 = (1 << 21) - 1;

/// What a Freeing segment waits for before it becomes Free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The stabilized segment lsn must rise above the segment's lsn
    /// (property C) before the epoch deferral starts.
    StableLsn,
    /// The epoch deferral has started (property B); the accountant decides
    /// when it lands.
    Epoch,
}

/// A deferred replacement: recorded on the segment that received the new
/// fragment, applied to the old segment when the new one seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The replaced page.
    pub pid: PageId,
    /// Index of the segment holding the old fragments.
    pub old_index: usize,
    /// That segment's generation when the replacement was recorded; the
    /// replacement is void against any other.
    pub old_generation: u32,
}

/// One segment of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSegment {
    /// Life-cycle state.
    pub state: SegmentState,
    /// Base lsn of the last activation (kept while Free or Freeing; none
    /// if never used or truncated).
    pub lsn: Option<Lsn>,
    /// Bumped on each activation (wraps at 2^21).
    pub generation: u32,
    /// Pages with a fragment here that no applied replacement removed,
    /// with the bytes of their fragments.
    pub present: BTreeMap<PageId, u64>,
    /// Pages here for which `mark_replace` has not been called.
    pub not_yet_replaced: BTreeSet<PageId>,
    /// Pages that left `present` through applied replacements.
    pub removed: u64,
    /// Bytes of the fragments in `present`, as a counter.
    pub live_bytes: u64,
    /// Replacements to apply when this segment seals, in recorded order.
    pub deferred_replacements: Vec<Replacement>,
    /// Blob files to delete when this segment seals.
    pub deferred_blobs: Vec<BlobId>,
    /// What a Freeing segment waits for (`None` in every other state).
    pub waiting: Option<Waiting>,
}

/// The Vacant segment every index starts as.
static VACANT: ModelSegment = ModelSegment {
    state: SegmentState::Vacant,
    lsn: None,
    generation: 0,
    present: BTreeMap::new(),
    not_yet_replaced: BTreeSet::new(),
    removed: 0,
    live_bytes: 0,
    deferred_replacements: Vec::new(),
    deferred_blobs: Vec::new(),
    waiting: None,
};

impl Default for ModelSegment {
    fn default() -> Self {
        VACANT.clone()
    }
}

/// What `next` may hand out, once the file has (or has not) been shrunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextChoices {
    /// Segments it may reuse. Free ones if there are any; otherwise those
    /// whose epoch deferral may land during the call (the accountant
    /// flushes the epoch when nothing is Free).
    pub reuse: BTreeSet<usize>,
    /// The index it may extend the file at (the tip), if it may.
    pub extend: Option<usize>,
}

/// The reference model of an accountant.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    /// Every segment ever touched; beyond the vector, segments are Vacant.
    segments: Vec<ModelSegment>,
    /// The file tip in segments.
    tip: usize,
    /// The highest stabilized segment lsn (−1: none).
    stable: Lsn,
    /// Pause depth; Linear mode holds one pause that never ends.
    paused: u32,
    /// Bytes cut off the file so far.
    bytes_truncated: u64,
    /// Blob files deleted so far, in order.
    removed_blobs: Vec<BlobId>,
}

impl Model {
    /// An empty model (nothing written, tip 0, nothing stable).
    pub fn new(config: Config) -> Model {
        Model {
            paused: (config.mode == Mode::Linear) as u32,
            config,
            segments: Vec::new(),
            tip: 0,
            stable: -1,
            bytes_truncated: 0,
            removed_blobs: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Segment `index` (Vacant if never touched).
    pub fn segment(&self, index: usize) -> &ModelSegment {
        self.segments.get(index).unwrap_or(&VACANT)
    }

    /// How many segment indices have ever been touched (all above are
    /// Vacant).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether no segment was ever touched.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The file tip in segments.
    pub fn tip(&self) -> usize {
        self.tip
    }

    /// The file tip in bytes.
    pub fn tip_bytes(&self) -> u64 {
        self.tip as u64 * self.ss()
    }

    /// The highest stabilized segment lsn (−1 before the first
    /// `stabilize`).
    pub fn stable_lsn(&self) -> Lsn {
        self.stable
    }

    /// Bytes cut off the file by truncations so far.
    pub fn bytes_truncated(&self) -> u64 {
        self.bytes_truncated
    }

    /// Blob files deleted so far, in deletion order.
    pub fn removed_blobs(&self) -> &[BlobId] {
        &self.removed_blobs
    }

    /// Whether rewriting is paused (always in Linear mode).
    pub fn is_paused(&self) -> bool {
        self.paused > 0
    }

    /// The pages `clean` may suggest: not yet replaced in a Draining
    /// segment.
    pub fn relocatable(&self) -> BTreeSet<PageId> {
        self.segments
            .iter()
            .filter(|s| s.state == SegmentState::Draining)
            .flat_map(|s| s.not_yet_replaced.iter().copied())
            .collect()
    }

    fn ss(&self) -> u64 {
        self.config.segment_size
    }

    fn seg_mut(&mut self, index: usize) -> &mut ModelSegment {
        if self.segments.len() <= index {
            self.segments.resize(index + 1, ModelSegment::default());
        }
        &mut self.segments[index]
    }

    fn count(&self, state: SegmentState) -> usize {
        (0..self.tip)
            .filter(|&i| self.segment(i).state == state)
            .count()
    }

    /// The segment number of `lsn` (`NegativeLsn`, `LsnOutOfRange`).
    fn segno(&self, lsn: Lsn) -> Result<u64, Error> {
        if lsn < 0 {
            return Err(Error::NegativeLsn { lsn });
        }
        let segno = lsn as u64 / self.ss();
        if segno > MAX_SEGMENT_NUMBER {
            return Err(Error::LsnOutOfRange {
                lsn,
                max: (MAX_SEGMENT_NUMBER * self.ss()) as Lsn,
            });
        }
        Ok(segno)
    }

    /// The index of the segment holding `lid`, which must be below the tip.
    fn index_of(&self, lid: Lid) -> Result<usize, Error> {
        let index = lid / self.ss();
        if index >= self.tip as u64 {
            return Err(Error::LidBeyondTip {
                lid,
                tip: self.tip_bytes(),
            });
        }
        Ok(index as usize)
    }

    /// Checks a write at `(lsn, ptr)`: its segment must be Active with base
    /// lsn `lsn` rounded down. Returns the segment's index.
    fn write_target(&self, lsn: Lsn, ptr: DiskPtr) -> Result<usize, Error> {
        let segno = self.segno(lsn)?;
        let base = (segno * self.ss()) as Lsn;
        let index = self.index_of(ptr.lid())?;
        let s = self.segment(index);
        let lid = index as u64 * self.ss();
        if let Some(segment_lsn) = s.lsn {
            if segment_lsn > base {
                return Err(Error::StaleSegment {
                    lid,
                    lsn,
                    segment_lsn,
                });
            }
        }
        if s.state != SegmentState::Active {
            return Err(Error::SegmentNotActive {
                lid,
                state: s.state,
            });
        }
        if s.lsn != Some(base) {
            return Err(Error::LsnMismatch {
                lid,
                lsn,
                segment_lsn: s.lsn.unwrap_or(-1),
            });
        }
        Ok(index)
    }

    // ---- next ------------------------------------------------------------

    /// The caller-mistake checks of `next(lsn)`, in the accountant's order.
    /// Changes nothing.
    ///
    /// # Errors
    /// `NegativeLsn`, `LsnOutOfRange`, `UnalignedLsn`, `LsnAlreadyStable`
    /// and `LsnInUse` (an Active segment has this lsn).
    pub fn check_next(&self, lsn: Lsn) -> Result<(), Error> {
        self.segno(lsn)?;
        if lsn as u64 % self.ss() != 0 {
            return Err(Error::UnalignedLsn {
                lsn,
                segment_size: self.ss(),
            });
        }
        if lsn <= self.stable {
            return Err(Error::LsnAlreadyStable {
                lsn,
                stable: self.stable,
            });
        }
        let in_use = self
            .segments
            .iter()
            .any(|s| s.state == SegmentState::Active && s.lsn == Some(lsn));
        if in_use {
            return Err(Error::LsnInUse { lsn });
        }
        Ok(())
    }

    /// The tip after shrinking the file over every Free segment at its top,
    /// which `next` does first unless rewriting is paused (the accountant
    /// may also skip it while an earlier truncation is still running).
    pub fn shrink_target(&self) -> usize {
        if self.is_paused() {
            return self.tip;
        }
        let mut tip = self.tip;
        while tip > 0 && self.segment(tip - 1).state == SegmentState::Free {
            tip -= 1;
        }
        tip
    }

    /// What `next` may hand out once the tip is `tip_after` (the current
    /// tip, or [`shrink_target`](Self::shrink_target) if it shrank).
    /// While paused: only an extension. Otherwise: the Free segments below
    /// `tip_after`; if there are none, an extension or any segment whose
    /// epoch deferral may land during the call.
    pub fn next_choices(&self, tip_after: usize) -> NextChoices {
        if self.is_paused() {
            return NextChoices {
                reuse: BTreeSet::new(),
                extend: Some(tip_after),
            };
        }
        let free: BTreeSet<usize> = (0..tip_after)
            .filter(|&i| self.segment(i).state == SegmentState::Free)
            .collect();
        if !free.is_empty() {
            return NextChoices {
                reuse: free,
                extend: None,
            };
        }
        NextChoices {
            reuse: (0..tip_after)
                .filter(|&i| self.segment(i).waiting == Some(Waiting::Epoch))
                .collect(),
            extend: Some(tip_after),
        }
    }

    /// `next(lsn)` where the accountant handed out `chosen` and its
    /// bytes-truncated figure is now `truncated_total`: checks that the
    /// call should have succeeded, that the shrink (none, or over every
    /// Free segment at the top) and the choice are allowed, and follows
    /// them. Nothing changes on error.
    ///
    /// # Errors
    /// A description of what the accountant did wrong.
    pub fn next_with(&mut self, lsn: Lsn, chosen: Lid, truncated_total: u64) -> Result<(), String> {
        self.check_next(lsn)
            .map_err(|e| format!("next({lsn}) succeeded, the model says {e:?}"))?;
        let ss = self.ss();
        if chosen % ss != 0 {
            return Err(format!("next({lsn}) returned unaligned lid {chosen}"));
        }
        let cut = truncated_total
            .checked_sub(self.bytes_truncated)
            .filter(|bytes| bytes % ss == 0)
            .ok_or_else(|| {
                format!(
                    "bytes truncated went from {} to {truncated_total}",
                    self.bytes_truncated
                )
            })?
            / ss;
        let shrink_target = self.shrink_target();
        let tip_after = if cut == 0 {
            self.tip
        } else if cut == (self.tip - shrink_target) as u64 {
            shrink_target
        } else {
            return Err(format!(
                "next({lsn}) truncated {cut} segments; the model allows 0 or {} (tip {}, paused {})",
                self.tip - shrink_target,
                self.tip,
                self.paused
            ));
        };
        let index = (chosen / ss) as usize;
        let choices = self.next_choices(tip_after);
        if !(choices.reuse.contains(&index) || choices.extend == Some(index)) {
            return Err(format!(
                "next({lsn}) returned lid {chosen} (segment {index}, {:?}); the model allows {choices:?}",
                self.segment(index).state
            ));
        }
        // Allowed: shrink, then activate.
        while self.tip > tip_after {
            self.tip -= 1;
            let tip = self.tip;
            let s = self.seg_mut(tip);
            s.state = SegmentState::Vacant;
            s.lsn = None;
            self.bytes_truncated += ss;
        }
        if index == self.tip {
            self.tip += 1;
        }
        let s = self.seg_mut(index);
        assert!(
            s.present.is_empty()
                && s.deferred_replacements.is_empty()
                && s.deferred_blobs.is_empty(),
            "model: segment {index} reused with pages or deferred work"
        );
        s.state = SegmentState::Active;
        s.lsn = Some(lsn);
        s.generation = (s.generation + 1) & GENERATION_MASK;
        s.present.clear();
        s.not_yet_replaced.clear();
        s.removed = 0;
        s.live_bytes = 0;
        s.waiting = None;
        Ok(())
    }

    // ---- links and replacements ----------------------------------------

    /// `mark_link(pid, lsn, ptr, size)`.
    ///
    /// # Errors
    /// In order: `NegativeLsn`, `LsnOutOfRange`, `LidBeyondTip`,
    /// `StaleSegment`, `SegmentNotActive`, `LsnMismatch`.
    pub fn mark_link(
        &mut self,
        pid: PageId,
        lsn: Lsn,
        ptr: DiskPtr,
        size: u64,
    ) -> Result<(), Error> {
        let index = self.write_target(lsn, ptr)?;
        self.link(index, pid, size);
        Ok(())
    }

    fn link(&mut self, index: usize, pid: PageId, size: u64) {
        let s = self.seg_mut(index);
        *s.present.entry(pid).or_insert(0) += size;
        s.not_yet_replaced.insert(pid);
        s.live_bytes += size;
    }

    /// `mark_replace(pid, lsn, old_ptrs, new_ptr, size)`.
    ///
    /// # Errors
    /// Those of [`mark_link`](Self::mark_link) for `new_ptr`; then for each
    /// old pointer in order: `LidBeyondTip`, `ReplacedFromFreeSegment`,
    /// `StaleSegment` (its segment's lsn is above `lsn`).
    pub fn mark_replace(
        &mut self,
        pid: PageId,
        lsn: Lsn,
        old_ptrs: &[DiskPtr],
        new_ptr: DiskPtr,
        size: u64,
    ) -> Result<(), Error> {
        let index = self.write_target(lsn, new_ptr)?;
        let mut olds: Vec<(usize, u32)> = Vec::new();
        for old in old_ptrs {
            let o = self.index_of(old.lid())?;
            if o == index {
                continue;
            }
            let s = self.segment(o);
            let lid = o as u64 * self.ss();
            if matches!(
                s.state,
                SegmentState::Free | SegmentState::Freeing | SegmentState::Vacant
            ) {
                return Err(Error::ReplacedFromFreeSegment {
                    pid,
                    lid,
                    state: s.state,
                });
            }
            let old_lsn = s.lsn.unwrap_or(-1);
            if old_lsn > lsn {
                return Err(Error::StaleSegment {
                    lid,
                    lsn,
                    segment_lsn: old_lsn,
                });
            }
            if !olds.iter().any(|&(i, _)| i == o) {
                olds.push((o, s.generation));
            }
        }
        for &(old_index, old_generation) in &olds {
            self.seg_mut(index).deferred_replacements.push(Replacement {
                pid,
                old_index,
                old_generation,
            });
            self.seg_mut(old_index).not_yet_replaced.remove(&pid);
        }
        let relinks_same_blob = old_ptrs.len() == 1
            && old_ptrs[0].blob().is_some()
            && old_ptrs[0].blob() == new_ptr.blob();
        if !relinks_same_blob {
            let blobs = old_ptrs.iter().filter_map(|p| p.blob());
            self.seg_mut(index).deferred_blobs.extend(blobs);
        }
        self.link(index, pid, size);
        Ok(())
    }

    // ---- stabilize -------------------------------------------------------

    /// `stabilize(stable_lsn)`: seals every Active segment below
    /// `stable_lsn` rounded down to a segment, in lsn order; publishes the
    /// new stabilized segment lsn; starts the epoch deferral of frees it
    /// passed; applies the tip-shrinking heuristic.
    ///
    /// # Errors
    /// `NegativeLsn`.
    pub fn stabilize(&mut self, stable_lsn: Lsn) -> Result<(), Error> {
        if stable_lsn < 0 {
            return Err(Error::NegativeLsn { lsn: stable_lsn });
        }
        let ss = self.ss() as Lsn;
        let goal = (stable_lsn / ss).min(MAX_SEGMENT_NUMBER as Lsn + 1);
        let target = goal * ss - ss;
        if target <= self.stable {
            return Ok(());
        }
        // 1. Seal in lsn order.
        let mut sealing: Vec<(Lsn, usize)> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SegmentState::Active)
            .filter_map(|(i, s)| s.lsn.filter(|&l| l <= target).map(|l| (l, i)))
            .collect();
        sealing.sort_unstable();
        for (_, index) in sealing {
            self.deactivate(index, target);
        }
        // 2. Publish.
        self.stable = target;
        // 3. Frees the new stable lsn passed start waiting on the epoch.
        for s in &mut self.segments {
            if s.waiting == Some(Waiting::StableLsn) && s.lsn.unwrap_or(-1) < target {
                s.waiting = Some(Waiting::Epoch);
            }
        }
        // 4. The tip-shrinking heuristic.
        let inactive = self.count(SegmentState::Inactive);
        let live = self.count(SegmentState::Active) + inactive + self.count(SegmentState::Draining);
        let free = (self.tip - live) as u64;
        if policy::should_drain_top(&self.config, free, inactive as u64) {
            let top = (0..self.tip)
                .rev()
                .find(|&i| self.segment(i).state == SegmentState::Inactive);
            if let Some(top) = top {
                self.seg_mut(top).state = SegmentState::Draining;
            }
        }
        Ok(())
    }

    /// Active → Inactive: delete its blobs, apply its replacements, then
    /// consider every touched segment (ascending index) for freeing or
    /// draining.
    fn deactivate(&mut self, index: usize, stable: Lsn) {
        let s = self.seg_mut(index);
        s.state = SegmentState::Inactive;
        let blobs = std::mem::take(&mut s.deferred_blobs);
        let replacements = std::mem::take(&mut s.deferred_replacements);
        self.removed_blobs.extend(blobs);
        let mut touched = vec![index];
        for r in replacements {
            let old = self.seg_mut(r.old_index);
            if old.generation != r.old_generation {
                continue;
            }
            match old.state {
                SegmentState::Inactive | SegmentState::Draining => {
                    if let Some(bytes) = old.present.remove(&r.pid) {
                        old.live_bytes -= bytes;
                        old.removed += 1;
                        old.not_yet_replaced.remove(&r.pid);
                    }
                }
                SegmentState::Active => panic!(
                    "model: replacement of page {} applied to Active segment {}",
                    r.pid, r.old_index
                ),
                SegmentState::Free | SegmentState::Freeing | SegmentState::Vacant => {}
            }
            touched.push(r.old_index);
        }
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            self.consider(i, stable);
        }
    }

    /// Frees a sealed segment that emptied, or drains one the policy picks.
    fn consider(&mut self, index: usize, stable: Lsn) {
        let tip = self.tip as u64;
        let config = self.config.clone();
        let s = self.seg_mut(index);
        let free = match s.state {
            SegmentState::Inactive | SegmentState::Draining if s.present.is_empty() => true,
            SegmentState::Inactive => {
                let (present, removed) = (s.present.len() as u64, s.removed);
                if policy::drainable(&config, index as u64, tip, present, removed) {
                    s.state = SegmentState::Draining;
                }
                false
            }
            _ => false,
        };
        if free {
            let lsn = s.lsn.expect("model: a sealed segment has an lsn");
            s.state = SegmentState::Freeing;
            s.waiting = Some(if lsn < stable {
                Waiting::Epoch
            } else {
                Waiting::StableLsn
            });
        }
    }

    /// The accountant reports segment `index` Free: its epoch deferral
    /// landed. Allowed only for a segment waiting on the epoch.
    ///
    /// # Errors
    /// A description, if the segment is not waiting on the epoch.
    pub fn land(&mut self, index: usize) -> Result<(), String> {
        let s = self.segment(index);
        if s.state != SegmentState::Freeing || s.waiting != Some(Waiting::Epoch) {
            return Err(format!(
                "segment {index} became Free from {:?} (waiting {:?})",
                s.state, s.waiting
            ));
        }
        let s = self.seg_mut(index);
        s.state = SegmentState::Free;
        s.waiting = None;
        Ok(())
    }

    // ---- clean, pause, iterate --------------------------------------------

    /// Checks the result of `clean(ignore)`: a page is allowed if it is not
    /// yet replaced in some Draining segment and is not `ignore`; `None` if
    /// there is no such page at all, or if `ignore` is one (the pick may
    /// have been `ignore`). `clean` changes nothing.
    ///
    /// # Errors
    /// A description of the disallowed result.
    pub fn check_clean(&self, ignore: PageId, got: Option<PageId>) -> Result<(), String> {
        let relocatable = self.relocatable();
        let ok = match got {
            Some(pid) => pid != ignore && relocatable.contains(&pid),
            None => relocatable.is_empty() || relocatable.contains(&ignore),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "clean({ignore}) returned {got:?}; relocatable pages are {relocatable:?}"
            ))
        }
    }

    /// `pause_rewriting` (pauses nest).
    pub fn pause_rewriting(&mut self) {
        self.paused += 1;
    }

    /// `resume_rewriting`: undoes one pause; never takes effect in Linear
    /// mode.
    ///
    /// # Errors
    /// `NotPaused` without a matching pause (never in Linear mode).
    pub fn resume_rewriting(&mut self) -> Result<(), Error> {
        let permanent = (self.config.mode == Mode::Linear) as u32;
        if self.paused > permanent {
            self.paused -= 1;
            Ok(())
        } else if self.config.mode == Mode::Linear {
            Ok(())
        } else {
            Err(Error::NotPaused)
        }
    }

    /// `segment_snapshot_iter_from(lsn)`: the `(segment lsn, lid)` pairs of
    /// the non-Vacant segments below the tip with an lsn at or above `lsn`
    /// rounded down, in lsn order.
    ///
    /// # Errors
    /// `NotPaused` unless rewriting is paused.
    pub fn segment_snapshot_iter_from(&self, lsn: Lsn) -> Result<Vec<(Lsn, Lid)>, Error> {
        if !self.is_paused() {
            return Err(Error::NotPaused);
        }
        let ss = self.ss() as Lsn;
        let from = lsn.max(0) - lsn.max(0) % ss;
        let mut pairs: Vec<(Lsn, Lid)> = (0..self.tip)
            .filter_map(|i| {
                let s = self.segment(i);
                let l = s.lsn?;
                (s.state != SegmentState::Vacant && l >= from).then_some((l, i as u64 * self.ss()))
            })
            .collect();
        pairs.sort_unstable();
        Ok(pairs)
    }
}
