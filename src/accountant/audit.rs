//! Introspection: statistics, per-segment facts, and the audit of safety
//! property D and the per-segment invariants.

use std::collections::HashMap;

use crate::accountant::Accountant;
use crate::core::segment::SegmentState;
use crate::core::sync::Ordering;
use crate::core::table::Bits;
use crate::error::Result;
use crate::types::{Lid, Lsn};

/// One segment's facts at one instant (fields are read one by one, so
/// under concurrency they may come from slightly different instants).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Index in the file (`lid / segment_size`).
    pub index: usize,
    /// Base offset in the file.
    pub lid: Lid,
    /// Life-cycle state.
    pub state: SegmentState,
    /// Base lsn of the last activation (kept while Free; none if never
    /// used or truncated).
    pub lsn: Option<Lsn>,
    /// Reuse counter (wraps at 2^20).
    pub generation: u32,
    /// Pages with a fragment here that is not replaced by a stable write.
    pub live_pages: usize,
    /// Pages here for which no `mark_replace` has been called yet.
    pub not_yet_replaced: usize,
    /// Pages whose fragments here were replaced by stable writes.
    pub removed_pages: u64,
    /// Bytes of the live fragments.
    pub live_bytes: u64,
    /// Whether the segment is in the to-clean set.
    pub to_clean: bool,
    /// The write head (stream) of its current incarnation.
    pub stream: crate::cleaning::placement::StreamId,
}

/// A snapshot of the accountant's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// File tip in segments.
    pub tip_segments: usize,
    /// File tip in bytes.
    pub tip_bytes: u64,
    /// Segments reusable now (the free list's length).
    pub free: usize,
    /// Emptied segments waiting for readers or the stable lsn.
    pub freeing: usize,
    /// Of those, how many wait on the epoch collector.
    pub freeing_on_epoch: usize,
    /// Segments being written.
    pub active: usize,
    /// Sealed segments.
    pub inactive: usize,
    /// Segments in the to-clean set.
    pub draining: usize,
    /// Sum over segments of live pages.
    pub pages_present: u64,
    /// Sum over segments of pages removed by stable replacements.
    pub pages_removed: u64,
    /// Sum over segments of live bytes.
    pub live_bytes: u64,
    /// Bytes cut off the file by truncations so far.
    pub bytes_truncated: u64,
    /// The highest stabilized segment lsn.
    pub stable_lsn: Lsn,
}

/// What [`Accountant::audit`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit failed: {0}")]
#[non_exhaustive]
pub struct AuditError(pub String);

impl Accountant {
    /// The accountant's figures (a scan of the segment table; not atomic
    /// under concurrency).
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let tip = shared.sequencer.tip();
        let mut stats = Stats {
            tip_segments: tip,
            tip_bytes: self.tip(),
            bytes_truncated: shared.sequencer.bytes_truncated(),
            stable_lsn: self.stable_lsn(),
            // Acquire: pairs with the release decrement in `land`.
            freeing_on_epoch: shared.table.epoch_waiting.load(Ordering::Acquire),
            ..Stats::default()
        };
        for index in 0..tip {
            let Some(info) = self.segment_info(index) else {
                break;
            };
            match info.state {
                SegmentState::Free => stats.free += 1,
                SegmentState::Freeing => stats.freeing += 1,
                // Counted with Active until its seal finishes.
                SegmentState::Active | SegmentState::Sealing => stats.active += 1,
                SegmentState::Inactive => stats.inactive += 1,
                SegmentState::Draining => stats.draining += 1,
                SegmentState::Vacant => {}
            }
            stats.pages_present += info.live_pages as u64;
            stats.pages_removed += info.removed_pages;
            stats.live_bytes += info.live_bytes;
        }
        stats
    }

    /// Checks [safety property D](crate::properties#d-nothing-leaks-nothing-doubles)
    /// and every per-segment invariant. Call it at
    /// a quiescent point (no concurrent calls); returns a description of
    /// the first violation found.
    ///
    /// Checked: every segment below the tip is in exactly one of Free (and
    /// then in the free bitmap), Active, Inactive, Draining (and then in the
    /// to-clean set) or Freeing (and then waiting on the stable lsn or on
    /// an epoch); nothing at or above the tip is referenced; pages not yet
    /// replaced are a subset of the live pages; live bytes are the sum of
    /// the live fragments; free segments hold nothing; sealed segments hold
    /// no deferred work and lie below the stabilized lsn; live segment lsns
    /// are distinct; every Active segment is registered for deactivation;
    /// the state counters and the count of segments with pages to relocate
    /// match; the cleaning index holds exactly the Inactive
    /// segments, in the buckets of their live bytes, and the live-byte totals
    /// the space target uses match the table.
    pub fn audit(&self) -> Result<(), AuditError> {
        let shared = &self.shared;
        let fail = |msg: String| Err(AuditError(msg));
        if let Err(poisoned) = shared.poison.check() {
            return fail(poisoned.to_string());
        }
        if let Err(broken) = shared.table.check_free_summary() {
            return fail(broken);
        }
        let tip = shared.sequencer.tip();
        let stable = self.stable_lsn();
        let ss = shared.config.segment_size;
        let mut lsns: HashMap<Lsn, usize> = HashMap::new();
        let mut counted = [0usize; 7];
        let mut relocate_bits = 0usize;
        let mut active = Vec::new();
        let mut inactive = Vec::new();
        let mut sealed_live = 0u64;
        for index in 0..shared.table.capacity() {
            let segment = shared.table.segment(index);
            let word = segment.load();
            let free_bit = shared.table.is_free(index);
            let drain_bit = shared.table.bit(Bits::Drain, index);
            let present = segment.present.entries();
            let live_bytes = segment.live_bytes(word.state);
            let deferred = segment.present.deferred_len();
            let here = format!("segment {index} ({word:?})");
            if index >= tip {
                if word.state != SegmentState::Vacant
                    || free_bit
                    || drain_bit
                    || !present.is_empty()
                {
                    return fail(format!("{here} at or above the tip {tip} is referenced"));
                }
                continue;
            }
            counted[word.state as usize] += 1;
            if word.state == SegmentState::Vacant {
                return fail(format!("{here} below the tip {tip} is vacant (leaked)"));
            }
            // A reused segment keeps its free bit, stale, from its claim
            // until the combiner collects its activation: Active only.
            let stale_bit = free_bit && word.state == SegmentState::Active;
            if free_bit != (word.state == SegmentState::Free) && !stale_bit {
                return fail(format!(
                    "{here}: free bit {free_bit} disagrees with the state"
                ));
            }
            if word.state == SegmentState::Free && !word.is_claimable() {
                return fail(format!("{here} is claimed but was never activated"));
            }
            let relocate_bit = shared.table.bit(Bits::Relocate, index);
            relocate_bits += usize::from(relocate_bit);
            if relocate_bit && word.state != SegmentState::Draining {
                return fail(format!("{here} has pages to relocate but is not draining"));
            }
            if drain_bit != (word.state == SegmentState::Draining) {
                return fail(format!(
                    "{here}: to-clean bit {drain_bit} disagrees with the state"
                ));
            }
            // Only a segment recovered empty (free, never activated since)
            // has no lsn.
            let lsn = match word.lsn(ss) {
                Some(lsn) => lsn,
                None if matches!(word.state, SegmentState::Free | SegmentState::Freeing) => -1,
                None => return fail(format!("{here} below the tip has no lsn")),
            };
            if lsn >= 0 {
                if let Some(other) = lsns.insert(lsn, index) {
                    return fail(format!("{here} shares lsn {lsn} with segment {other}"));
                }
            }
            let sum: u64 = present.iter().map(|&(_, b)| b).sum();
            if sum != live_bytes {
                return fail(format!(
                    "{here}: live bytes {live_bytes} but fragments sum to {sum}"
                ));
            }
            let live_pages = segment.live_pages(word.state);
            if live_pages != present.len() as u64 {
                return fail(format!(
                    "{here}: kept page count {live_pages} but {} pages are here",
                    present.len()
                ));
            }
            match word.state {
                SegmentState::Free | SegmentState::Freeing => {
                    if !present.is_empty() || live_bytes != 0 || deferred != 0 {
                        return fail(format!("{here} is free but holds pages or deferred work"));
                    }
                }
                SegmentState::Inactive | SegmentState::Draining => {
                    sealed_live += live_bytes;
                    if word.state == SegmentState::Inactive {
                        inactive.push((index, word.segno.unwrap_or(0), live_bytes));
                    }
                    if deferred != 0 {
                        return fail(format!("{here} is sealed with deferred work left"));
                    }
                    if lsn > stable {
                        return fail(format!("{here} is sealed above the stable lsn {stable}"));
                    }
                }
                SegmentState::Active => active.push((word.segno.unwrap_or(0), index as u32)),
                SegmentState::Sealing => {
                    return fail(format!("{here} was left half sealed"));
                }
                SegmentState::Vacant => unreachable!(),
            }
        }
        let mut in_use: Vec<u64> = shared.active_lsns.keys();
        in_use.sort_unstable();
        let mut active_segnos: Vec<u64> = active.iter().map(|&(segno, _)| segno).collect();
        active_segnos.sort_unstable();
        if in_use != active_segnos {
            return fail(format!(
                "lsns in use {in_use:?} disagree with the Active segments' {active_segnos:?}"
            ));
        }
        let relocatable = shared.table.relocatable();
        if relocatable != relocate_bits {
            return fail(format!(
                "the Relocate count says {relocatable}, the table holds {relocate_bits} bits"
            ));
        }
        let freeing = counted[SegmentState::Freeing as usize];
        let epoch_waiting = shared.table.epoch_waiting.load(Ordering::Acquire);
        let checked = shared.combiner.with_idle_state(shared, |state| {
            // The counters after the activations are collected: the
            // combiner counts a segment Active when it collects it.
            let counts = shared.counts.snapshot();
            for (state, count) in [
                (SegmentState::Active, counts.active),
                (SegmentState::Inactive, counts.inactive),
                (SegmentState::Draining, counts.draining),
            ] {
                if counted[state as usize] != count {
                    return Err(format!(
                        "{state:?} counter says {count}, the table holds {}",
                        counted[state as usize]
                    ));
                }
            }
            let waiting = state.waiting_stable.len();
            if waiting + epoch_waiting != freeing {
                return Err(format!(
                    "{freeing} segments are Freeing but {waiting} wait on the stable lsn and {epoch_waiting} on an epoch"
                ));
            }
            let mut registered = state.registered_active();
            registered.sort_unstable();
            active.sort_unstable();
            if registered != active {
                return Err(format!(
                    "Active segments {active:?} but registered for deactivation {registered:?}"
                ));
            }
            state.cleaning.check(
                &inactive,
                sealed_live,
                counted[SegmentState::Draining as usize],
            )
        });
        match checked {
            None => fail("a stabilize is in progress: not quiescent".into()),
            Some(Err(msg)) => fail(msg),
            Some(Ok(())) => Ok(()),
        }
    }
}
