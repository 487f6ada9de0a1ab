//! The sequential reference model: a plain single-threaded implementation
//! of the [specification](crate::properties), small enough to be obviously
//! right, used as the oracle of the differential tests (feature `testing`;
//! not part of the stable surface).
//!
//! Where the specification leaves a choice (which free segment `next`
//! reuses, which page `clean` suggests, when an epoch-deferred free lands),
//! the model does not choose: the test shows it the accountant's choice,
//! the model checks that the choice is allowed ([`Model::next_with`],
//! [`Model::check_clean`], [`Model::land`]) and follows it. Caller mistakes
//! return the same [`Error`] variants, with the same fields, checked in the
//! same order, and change nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::cleaning::config::{Config, Mode, Tuning};
use crate::cleaning::policy::{self, SegmentFacts};
use crate::core::segment::{SegmentState, MAX_SEGMENT_NUMBER};
use crate::error::{ConfigError, Error};
use crate::types::{BlobId, DiskPtr, Lid, Lsn, PageId};

impl ModelSegment {
    /// Bytes of the pages not yet replaced here.
    pub fn not_yet_replaced_bytes(&self) -> u64 {
        self.not_yet_replaced
            .iter()
            .map(|p| self.present.get(p).copied().unwrap_or(0))
            .sum()
    }
}

/// One segment of the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSegment {
    /// Life-cycle state (`None`: Vacant).
    pub state: Option<SegmentState>,
    /// Base lsn of the last activation.
    pub lsn: Option<Lsn>,
    /// Bumped on each activation (wraps at 2^20).
    pub generation: u32,
    /// Live pages and the bytes of their fragments here.
    pub present: BTreeMap<PageId, u64>,
    /// Pages for which `mark_replace` has not been called.
    pub not_yet_replaced: BTreeSet<PageId>,
    /// Pages removed by applied replacements.
    pub removed: u64,
    /// Bytes of the fragments in `present`, kept as a counter (raised by
    /// links, lowered by applied replacements).
    pub live_bytes: u64,
    /// `(pid, old segment, old segment's lsn)` to apply when this seals
    /// (the lsn names the incarnation: the generation wraps).
    pub deferred: Vec<(PageId, usize, Option<Lsn>)>,
    /// Blob files to delete when this seals.
    pub blobs: Vec<BlobId>,
    /// Whether a Freeing segment waits on the epoch (else on the stable
    /// lsn).
    pub epoch_waiting: bool,
    /// The write head of the last activation.
    pub stream: u8,
}

/// The reference model of an accountant.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    /// Segments below and above the tip.
    pub segments: Vec<ModelSegment>,
    /// The tip in segments.
    pub tip: usize,
    /// The highest stabilized segment lsn.
    pub stable: Lsn,
    /// Pause depth (Linear mode: permanently paused).
    pub paused: u32,
    /// Bytes truncated so far.
    pub bytes_truncated: u64,
    /// Blob files removed, in order.
    pub removed_blobs: Vec<BlobId>,
    /// One past the highest segment number `next` handed out.
    pub handed_out: u64,
    /// The tunables changed since the last stabilize that sealed: the next
    /// one asks the policy again about every Inactive segment.
    pub retuned: bool,
}

impl Model {
    /// An empty model.
    pub fn new(config: Config) -> Model {
        Model {
            paused: (config.mode == Mode::Linear) as u32,
            config,
            segments: Vec::new(),
            tip: 0,
            stable: -1,
            bytes_truncated: 0,
            removed_blobs: Vec::new(),
            handed_out: 0,
            retuned: false,
        }
    }

    /// `tune`: the tunables change, validated as the accountant validates
    /// them; the next `stabilize` that raises the stable lsn asks the
    /// policy again about every Inactive segment (before the space target
    /// and the tip-shrinking rule), as the accountant's next pass does.
    pub fn tune(&mut self, tuning: &Tuning) -> Result<(), ConfigError> {
        self.config = self.config.tuned(tuning)?;
        self.retuned = true;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn ss(&self) -> u64 {
        self.config.segment_size
    }

    fn seg(&mut self, index: usize) -> &mut ModelSegment {
        if self.segments.len() <= index {
            self.segments.resize(index + 1, ModelSegment::default());
        }
        &mut self.segments[index]
    }

    /// The segment at `index` (Vacant default beyond the vector).
    pub fn segment(&self, index: usize) -> ModelSegment {
        self.segments.get(index).cloned().unwrap_or_default()
    }

    fn state(&self, index: usize) -> Option<SegmentState> {
        self.segments.get(index).and_then(|s| s.state)
    }

    /// `NegativeLsn`, then `LsnOutOfRange` (the accountant's `segno_of`).
    fn check_lsn(&self, lsn: Lsn) -> Result<(), Error> {
        if lsn < 0 {
            return Err(Error::NegativeLsn { lsn });
        }
        if lsn as u64 / self.ss() > MAX_SEGMENT_NUMBER {
            return Err(Error::LsnOutOfRange {
                lsn,
                max: (MAX_SEGMENT_NUMBER * self.ss()) as Lsn,
            });
        }
        Ok(())
    }

    /// The accountant's fragment size bound: the segment size, and 2^32.
    fn check_size(&self, size: u64) -> Result<(), Error> {
        let max = self.ss().min(1 << 32);
        if size > max {
            return Err(Error::SizeOutOfRange { size, max });
        }
        Ok(())
    }

    fn at(&self, lid: Lid) -> Result<usize, Error> {
        let index = (lid / self.ss()) as usize;
        if index >= self.tip {
            return Err(Error::LidBeyondTip {
                lid,
                tip: self.tip as u64 * self.ss(),
            });
        }
        Ok(index)
    }

    fn target(&self, lsn: Lsn, ptr: DiskPtr) -> Result<usize, Error> {
        self.check_lsn(lsn)?;
        let index = self.at(ptr.lid())?;
        let s = self.segment(index);
        let lid = index as u64 * self.ss();
        let base = lsn - lsn % self.ss() as Lsn;
        if let Some(seg_lsn) = s.lsn {
            if seg_lsn > base {
                return Err(Error::StaleSegment {
                    lid,
                    lsn,
                    segment_lsn: seg_lsn,
                });
            }
        }
        // Sequentially, every segment a stabilize sealed lies at or below
        // the stabilized lsn (the accountant's Sealing window is a race).
        if base <= self.stable {
            return Err(Error::SegmentSealed {
                lid,
                lsn,
                segment_lsn: base,
                stable_lsn: self.stable,
            });
        }
        let state = s.state.unwrap_or(SegmentState::Vacant);
        if state != SegmentState::Active {
            return Err(Error::SegmentNotActive { lid, state });
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

    /// The caller-mistake checks of `next(lsn)`, in the accountant's order:
    /// `NegativeLsn`, `LsnOutOfRange`, `UnalignedLsn`, `LsnAlreadyStable`,
    /// `LsnInUse` (an Active segment has this lsn). Changes nothing.
    pub fn check_next(&self, lsn: Lsn) -> Result<(), Error> {
        self.check_lsn(lsn)?;
        let ss = self.ss() as Lsn;
        if lsn % ss != 0 {
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
            .any(|s| s.state == Some(SegmentState::Active) && s.lsn == Some(lsn));
        if in_use {
            return Err(Error::LsnInUse { lsn });
        }
        Ok(())
    }

    /// The tip after shrinking the file over every Free segment at its top,
    /// which `next` does before choosing unless rewriting is paused. (The
    /// accountant may also skip the shrink while an earlier truncation is
    /// still running; it never shrinks part of the way.)
    pub fn shrink_target(&self) -> usize {
        if self.paused > 0 {
            return self.tip;
        }
        let mut tip = self.tip;
        while tip > 0 && self.state(tip - 1) == Some(SegmentState::Free) {
            tip -= 1;
        }
        tip
    }

    /// What `next` may hand out once the tip is `tip_after` (the current
    /// tip, or [`shrink_target`](Self::shrink_target) if it shrank):
    /// `(segments it may reuse, index it may extend at)`. While paused:
    /// only the extension. Otherwise the Free segments below `tip_after`;
    /// if there are none, the extension, or a segment waiting on the epoch
    /// (the accountant flushes the epoch when nothing is Free, so such a
    /// segment may land during the call).
    pub fn next_choices(&self, tip_after: usize) -> (BTreeSet<usize>, Option<usize>) {
        if self.paused > 0 {
            return (BTreeSet::new(), Some(tip_after));
        }
        let free: BTreeSet<usize> = (0..tip_after)
            .filter(|&i| self.state(i) == Some(SegmentState::Free))
            .collect();
        if !free.is_empty() {
            return (free, None);
        }
        let landable = (0..tip_after)
            .filter(|&i| {
                let s = self.segment(i);
                s.state == Some(SegmentState::Freeing) && s.epoch_waiting
            })
            .collect();
        (landable, Some(tip_after))
    }

    /// `next(lsn)` where the accountant handed out `chosen` and has
    /// truncated `truncated_after` bytes in all: checks the call should
    /// have succeeded and its choices are allowed, then follows them.
    /// Allowed: shrinking the file over every Free segment at its top, or
    /// not at all (never while paused), then one of
    /// [`next_choices`](Self::next_choices). Nothing changes on error.
    pub fn next_with(&mut self, lsn: Lsn, chosen: Lid, truncated_after: u64) -> Result<(), String> {
        self.next_in_with(lsn, 0, chosen, truncated_after)
    }

    /// `next_in(lsn, stream)`'s caller-mistake checks: `UnknownStream`,
    /// then those of [`check_next`](Self::check_next).
    pub fn check_next_in(&self, lsn: Lsn, stream: u8) -> Result<(), Error> {
        let streams = self.config.stream_count();
        if stream >= streams {
            return Err(Error::UnknownStream { stream, streams });
        }
        self.check_next(lsn)
    }

    /// [`next_with`](Self::next_with) for `next_in(lsn, stream)`.
    pub fn next_in_with(
        &mut self,
        lsn: Lsn,
        stream: u8,
        chosen: Lid,
        truncated_after: u64,
    ) -> Result<(), String> {
        self.check_next_in(lsn, stream)
            .map_err(|e| format!("next_in({lsn}, {stream}) should fail: {e:?}"))?;
        let ss = self.ss();
        if chosen % ss != 0 {
            return Err(format!("next returned unaligned lid {chosen}"));
        }
        let index = (chosen / ss) as usize;
        let cut = truncated_after
            .checked_sub(self.bytes_truncated)
            .filter(|bytes| bytes % ss == 0)
            .map(|bytes| bytes / ss)
            .ok_or_else(|| {
                format!(
                    "bytes truncated went from {} to {truncated_after}",
                    self.bytes_truncated
                )
            })?;
        let target = self.shrink_target();
        let shrunk = if cut == 0 {
            self.tip
        } else if cut == (self.tip - target) as u64 {
            target
        } else {
            return Err(format!(
                "next({lsn}) truncated {cut} segments; allowed: 0 or {} (tip {}, paused {})",
                self.tip - target,
                self.tip,
                self.paused
            ));
        };
        let (reuse, extend) = self.next_choices(shrunk);
        if !reuse.contains(&index) && extend != Some(index) {
            return Err(format!(
                "next({lsn}) returned lid {chosen} ({:?}); allowed: reuse {reuse:?}, extend at {extend:?}",
                self.state(index)
            ));
        }
        while self.tip > shrunk {
            self.tip -= 1;
            let s = self.seg(self.tip);
            s.state = None;
            s.lsn = None;
            self.bytes_truncated += ss;
        }
        if index == self.tip {
            self.tip += 1;
        }
        let s = self.seg(index);
        s.state = Some(SegmentState::Active);
        s.lsn = Some(lsn);
        s.generation = (s.generation + 1) & ((1 << 20) - 1);
        s.present.clear();
        s.not_yet_replaced.clear();
        s.removed = 0;
        s.live_bytes = 0;
        s.epoch_waiting = false;
        s.stream = stream;
        self.handed_out = self.handed_out.max(lsn as u64 / ss + 1);
        Ok(())
    }

    /// `mark_link`.
    pub fn mark_link(
        &mut self,
        pid: PageId,
        lsn: Lsn,
        ptr: DiskPtr,
        size: u64,
    ) -> Result<(), Error> {
        self.check_size(size)?;
        let index = self.target(lsn, ptr)?;
        self.link(index, pid, size);
        Ok(())
    }

    fn link(&mut self, index: usize, pid: PageId, size: u64) {
        // A page replaced out of this incarnation by a write not sealed
        // yet stays replaced when it is linked here again: the link is at a
        // lower lsn than that replacement (`mark_replace` refuses an old
        // segment above the write's lsn), so the log orders it before the
        // replacement, which removes the page from here once it is sealed
        // (docs/protocols/replace.md).
        let lsn = self.segment(index).lsn;
        let replaced = self
            .segments
            .iter()
            .any(|t| t.deferred.contains(&(pid, index, lsn)));
        let s = self.seg(index);
        *s.present.entry(pid).or_insert(0) += size;
        if !replaced {
            s.not_yet_replaced.insert(pid);
        }
        s.live_bytes += size;
    }

    /// `mark_replace`.
    pub fn mark_replace(
        &mut self,
        pid: PageId,
        lsn: Lsn,
        old_ptrs: &[DiskPtr],
        new_ptr: DiskPtr,
        size: u64,
    ) -> Result<(), Error> {
        self.check_size(size)?;
        let index = self.target(lsn, new_ptr)?;
        let mut olds: Vec<(usize, Option<Lsn>)> = Vec::new();
        for old in old_ptrs {
            let o = self.at(old.lid())?;
            if o == index {
                continue;
            }
            let s = self.segment(o);
            let lid = o as u64 * self.ss();
            let state = s.state.unwrap_or(SegmentState::Vacant);
            if matches!(
                state,
                SegmentState::Free | SegmentState::Freeing | SegmentState::Vacant
            ) {
                return Err(Error::ReplacedFromFreeSegment { pid, lid, state });
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
                olds.push((o, s.lsn));
            }
        }
        let relinks_same_blob = old_ptrs.len() == 1
            && old_ptrs[0].blob().is_some()
            && old_ptrs[0].blob() == new_ptr.blob();
        for &(o, old_lsn) in &olds {
            self.seg(index).deferred.push((pid, o, old_lsn));
            self.seg(o).not_yet_replaced.remove(&pid);
        }
        if !relinks_same_blob {
            let blobs: Vec<BlobId> = old_ptrs.iter().filter_map(|p| p.blob()).collect();
            self.seg(index).blobs.extend(blobs);
        }
        self.link(index, pid, size);
        Ok(())
    }

    /// `stabilize`.
    pub fn stabilize(&mut self, stable_lsn: Lsn) -> Result<(), Error> {
        if stable_lsn < 0 {
            return Err(Error::NegativeLsn { lsn: stable_lsn });
        }
        let ss = self.ss() as Lsn;
        // As the accountant: the goal is capped one past the largest segment.
        let goal = (stable_lsn / ss).min(MAX_SEGMENT_NUMBER as Lsn + 1);
        if goal as u64 > self.handed_out {
            return Err(Error::StableBeyondLog {
                stable_lsn,
                end: self.handed_out as Lsn * ss,
            });
        }
        let target = goal * ss - ss;
        if target <= self.stable {
            return Ok(());
        }
        let mut sealing: Vec<(Lsn, usize)> = (0..self.segments.len())
            .filter(|&i| self.state(i) == Some(SegmentState::Active))
            .filter_map(|i| {
                self.segments[i]
                    .lsn
                    .filter(|&l| l < goal * ss)
                    .map(|l| (l, i))
            })
            .collect();
        sealing.sort();
        let sealed = sealing.len() as u64;
        // Idle: segments were sealed, and nothing was written into them.
        let idle = sealed > 0
            && sealing
                .iter()
                .all(|&(_, t)| self.segments[t].present.is_empty());
        for (_, t) in sealing {
            self.seg(t).state = Some(SegmentState::Inactive);
            let blobs = std::mem::take(&mut self.seg(t).blobs);
            self.removed_blobs.extend(blobs);
            let deferred = std::mem::take(&mut self.seg(t).deferred);
            let mut touched = Vec::new();
            for (pid, o, old_lsn) in deferred {
                let s = self.seg(o);
                if s.lsn != old_lsn {
                    continue;
                }
                assert_ne!(
                    s.state,
                    Some(SegmentState::Active),
                    "model: replacement into an Active segment"
                );
                let sealed = matches!(
                    s.state,
                    Some(SegmentState::Inactive | SegmentState::Draining)
                );
                let removed = if sealed { s.present.remove(&pid) } else { None };
                if let Some(bytes) = removed {
                    s.live_bytes -= bytes;
                    s.removed += 1;
                    s.not_yet_replaced.remove(&pid);
                }
                touched.push(o);
            }
            touched.push(t);
            touched.sort();
            touched.dedup();
            for i in touched {
                self.consider(i, target);
            }
        }
        self.stable = target;
        for s in &mut self.segments {
            if s.state == Some(SegmentState::Freeing)
                && !s.epoch_waiting
                && s.lsn.unwrap_or(-1) < target
            {
                s.epoch_waiting = true;
            }
        }
        if std::mem::take(&mut self.retuned) {
            for i in 0..self.segments.len() {
                if self.state(i) == Some(SegmentState::Inactive) {
                    self.consider(i, target);
                }
            }
        }
        self.enforce_space_target(target, sealed);
        let count = |states: &[SegmentState]| {
            (0..self.tip)
                .filter(|&i| self.state(i).is_some_and(|s| states.contains(&s)))
                .count() as u64
        };
        let (active, inactive, draining) = (
            count(&[SegmentState::Active]),
            count(&[SegmentState::Inactive]),
            count(&[SegmentState::Draining]),
        );
        let free = self.tip as u64 - active - inactive - draining;
        if policy::should_drain_top(&self.config, free, inactive) {
            if let Some(top) = (0..self.tip)
                .rev()
                .find(|&i| self.state(i) == Some(SegmentState::Inactive))
            {
                self.seg(top).state = Some(SegmentState::Draining);
            }
        }
        self.compact_when_idle(idle);
        Ok(())
    }

    /// Under a space target, an idle store drains its highest live
    /// segment if it is Inactive, nothing else is Draining, and the file up
    /// to it is over the target.
    fn compact_when_idle(&mut self, idle: bool) {
        let Some(target) = self.config.space_target else {
            return;
        };
        if !idle || self.config.mode != Mode::Gc || self.draining_count() > 0 {
            return;
        }
        let is_live = |state| {
            matches!(
                state,
                Some(SegmentState::Active | SegmentState::Inactive | SegmentState::Draining)
            )
        };
        let Some(top) = (0..self.tip).rev().find(|&i| is_live(self.state(i))) else {
            return;
        };
        let live = (0..self.tip).filter(|&i| is_live(self.state(i))).count() as u64;
        let extent = top as u64 + 1;
        if self.state(top) == Some(SegmentState::Inactive)
            && policy::compact_when_idle(
                idle,
                target,
                self.ss(),
                self.sealed_live(),
                extent,
                extent - live,
                self.config.stream_count(),
            )
        {
            self.seg(top).state = Some(SegmentState::Draining);
        }
    }

    /// The policy's facts about sealed segment `index`.
    fn facts(&self, index: usize) -> SegmentFacts {
        let s = &self.segments[index];
        SegmentFacts::new(
            index as u64,
            s.lsn.expect("a sealed segment has an lsn"),
            s.present.len() as u64,
            s.removed,
            s.live_bytes,
            self.ss(),
        )
    }

    /// How many segments are Draining.
    pub fn draining_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.state == Some(SegmentState::Draining))
            .count()
    }

    /// Live bytes in Inactive and Draining segments.
    pub fn sealed_live(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    Some(SegmentState::Inactive | SegmentState::Draining)
                )
            })
            .map(|s| s.live_bytes)
            .sum()
    }

    /// The policy's best victim among the Inactive segments, by a scan:
    /// the oldest segment of each live-bytes bucket is a candidate.
    pub fn best_victim(&self, now: Lsn) -> Option<usize> {
        let mut oldest: BTreeMap<usize, (Lsn, usize)> = BTreeMap::new();
        for (i, s) in self.segments.iter().enumerate() {
            if s.state == Some(SegmentState::Inactive) {
                let b = policy::bucket(s.live_bytes, self.ss());
                let lsn = s.lsn.expect("sealed");
                let e = oldest.entry(b).or_insert((lsn, i));
                if lsn < e.0 {
                    *e = (lsn, i);
                }
            }
        }
        let candidates = oldest.values().map(|&(_, i)| self.facts(i));
        policy::choose(&*self.config.policy, now, candidates).map(|f| f.index as usize)
    }

    /// Bytes the Draining segments still have to relocate: their pages not
    /// yet replaced.
    pub fn unrelocated(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.state == Some(SegmentState::Draining))
            .map(|s| s.not_yet_replaced_bytes())
            .sum()
    }

    /// The oldest Inactive segment of the lowest live-bytes bucket.
    pub fn emptiest_victim(&self) -> Option<usize> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == Some(SegmentState::Inactive))
            .min_by_key(|(_, s)| (policy::bucket(s.live_bytes, self.ss()), s.lsn))
            .map(|(i, _)| i)
    }

    fn enforce_space_target(&mut self, now: Lsn, sealed_now: u64) {
        let Some(target) = self.config.space_target else {
            return;
        };
        if self.config.mode != Mode::Gc {
            return;
        }
        loop {
            let count = |state| {
                self.segments
                    .iter()
                    .filter(|s| s.state == Some(state))
                    .count() as u64
            };
            let sealed = self.sealed_live();
            let draining = self.unrelocated();
            if !policy::over_target(
                target,
                self.ss(),
                sealed,
                count(SegmentState::Active),
                count(SegmentState::Inactive),
                draining,
            ) {
                return;
            }
            let Some(mut victim) = self.best_victim(now) else {
                return;
            };
            if !policy::worth_draining(self.segments[victim].live_bytes, self.ss()) {
                victim = self.emptiest_victim().expect("a victim exists");
            }
            let live = self.segments[victim].live_bytes;
            let to_relocate = self.segments[victim].not_yet_replaced_bytes();
            if !policy::worth_draining(live, self.ss())
                || !policy::room_to_drain(
                    draining,
                    to_relocate,
                    self.ss(),
                    sealed_now,
                    self.config.stream_count(),
                )
            {
                return;
            }
            self.seg(victim).state = Some(SegmentState::Draining);
        }
    }

    fn consider(&mut self, index: usize, stable: Lsn) {
        let tip = self.tip as u64;
        let config = self.config.clone();
        let facts =
            matches!(self.state(index), Some(SegmentState::Inactive)).then(|| self.facts(index));
        let s = self.seg(index);
        let free = match s.state {
            Some(SegmentState::Inactive) if s.present.is_empty() => true,
            Some(SegmentState::Inactive) => {
                let facts = facts.expect("computed above");
                if config.mode == Mode::Gc && config.policy.drain_unprompted(&config, &facts, tip) {
                    s.state = Some(SegmentState::Draining);
                }
                false
            }
            Some(SegmentState::Draining) => s.present.is_empty(),
            _ => false,
        };
        if free {
            s.state = Some(SegmentState::Freeing);
            s.epoch_waiting = s.lsn.unwrap_or(-1) < stable;
        }
    }

    /// The accountant reports segment `index` Free: it must be waiting on
    /// the epoch here, and lands.
    pub fn land(&mut self, index: usize) -> Result<(), String> {
        let s = self.seg(index);
        if s.state == Some(SegmentState::Freeing) && s.epoch_waiting {
            s.state = Some(SegmentState::Free);
            s.epoch_waiting = false;
            Ok(())
        } else {
            Err(format!(
                "segment {index} became Free from {:?} (epoch waiting: {})",
                s.state, s.epoch_waiting
            ))
        }
    }

    /// Checks a `clean(Skip::Page(ignore))` result: the page as
    /// [`check_clean`](Self::check_clean), the segment as a Draining one
    /// holding it not yet replaced, and the stream as
    /// [`placement::relocation_stream`](crate::placement::relocation_stream)
    /// of that segment.
    pub fn check_clean_placed(
        &self,
        ignore: PageId,
        got: Option<crate::cleaning::placement::Relocation>,
    ) -> Result<(), String> {
        self.check_clean(ignore, got.map(|r| r.pid))?;
        let Some(r) = got else {
            return Ok(());
        };
        let (user, relocation) = self.config.streams();
        let allowed: Vec<u8> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(index, s)| {
                s.state == Some(SegmentState::Draining)
                    && s.not_yet_replaced.contains(&r.pid)
                    && *index as u64 * self.config.segment_size == r.segment_lid
                    && s.lsn == Some(r.segment_lsn)
            })
            .map(|(_, s)| s)
            .map(|s| crate::cleaning::placement::relocation_stream(user, relocation, s.stream))
            .collect();
        if allowed.contains(&r.stream) {
            Ok(())
        } else {
            Err(format!(
                "clean suggested stream {} for page {} from lid {} lsn {}; allowed {allowed:?}",
                r.stream, r.pid, r.segment_lid, r.segment_lsn
            ))
        }
    }

    /// Checks a `clean(ignore)` result.
    pub fn check_clean(&self, ignore: PageId, got: Option<PageId>) -> Result<(), String> {
        let draining = || {
            self.segments
                .iter()
                .filter(|s| s.state == Some(SegmentState::Draining))
                .flat_map(|s| s.not_yet_replaced.iter().copied())
        };
        match got {
            Some(pid) if pid != ignore && draining().any(|p| p == pid) => Ok(()),
            Some(pid) => Err(format!(
                "clean returned {pid}, not relocatable (ignore {ignore})"
            )),
            // None: nothing to relocate, or the pick was `ignore`.
            None if draining().all(|p| p == ignore) || draining().any(|p| p == ignore) => Ok(()),
            None => Err("clean returned None with pages to relocate".into()),
        }
    }

    /// `pause_rewriting`.
    pub fn pause_rewriting(&mut self) {
        self.paused += 1;
    }

    /// `resume_rewriting`.
    pub fn resume_rewriting(&mut self) -> Result<(), Error> {
        let floor = (self.config.mode == Mode::Linear) as u32;
        if self.paused > floor {
            self.paused -= 1;
            Ok(())
        } else if self.config.mode == Mode::Linear {
            Ok(())
        } else {
            Err(Error::NotPaused)
        }
    }

    /// `segment_snapshot_iter_from`.
    pub fn segment_snapshot_iter_from(&self, lsn: Lsn) -> Result<Vec<(Lsn, Lid)>, Error> {
        if self.paused == 0 {
            return Err(Error::NotPaused);
        }
        let ss = self.ss() as Lsn;
        let from = lsn.max(0) - lsn.max(0) % ss;
        let mut out: Vec<(Lsn, Lid)> = (0..self.tip)
            .filter_map(|i| {
                let s = &self.segments[i];
                s.lsn
                    .filter(|&l| s.state.is_some() && l >= from)
                    .map(|l| (l, i as u64 * ss as u64))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
