//! The single-mutex design this crate replaces, kept as a baseline for the
//! benchmarks and the throughput comparison (feature `testing`; not part
//! of the stable surface).
//!
//! One accountant struct holding, per segment, small hash sets of page ids
//! (a fast non-cryptographic hasher), a FIFO free list, an ordered
//! to-clean set and an lsn ordering; every call takes one
//! `parking_lot::Mutex`. It follows the same
//! [specification](crate::properties) as [`Accountant`](crate::Accountant)
//! on the write path (so both do the same work), with the old design's data structures and locking. It is not an
//! oracle (that is [`model`](crate::model)); it has no epoch deferral or
//! asynchronous truncation, which only make it faster.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::cleaning::config::{Config, Mode};
use crate::cleaning::policy;
use crate::core::segment::SegmentState;
use crate::error::{Error, Result};
use crate::types::{BlobId, DiskPtr, Lid, Lsn, PageId};

#[derive(Debug, Default)]
struct Segment {
    state: Option<SegmentState>,
    lsn: Option<Lsn>,
    present: FxHashMap<PageId, u64>,
    not_yet_replaced: FxHashSet<PageId>,
    removed: FxHashSet<PageId>,
    live_bytes: u64,
    deferred_replacements: FxHashSet<(PageId, usize)>,
    deferred_blobs: FxHashSet<BlobId>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    segments: Vec<Segment>,
    free: VecDeque<usize>,
    to_clean: BTreeSet<usize>,
    ordering: BTreeMap<Lsn, usize>,
    max_stabilized: Lsn,
    clean_counter: usize,
    paused: bool,
}

/// The single-mutex accountant of the older design (a baseline).
#[derive(Debug)]
pub struct MutexAccountant {
    inner: Mutex<Inner>,
}

impl MutexAccountant {
    /// An empty accountant.
    pub fn new(config: Config) -> MutexAccountant {
        MutexAccountant {
            inner: Mutex::new(Inner {
                paused: config.mode == Mode::Linear,
                config,
                segments: Vec::new(),
                free: VecDeque::new(),
                to_clean: BTreeSet::new(),
                ordering: BTreeMap::new(),
                max_stabilized: -1,
                clean_counter: 0,
            }),
        }
    }

    /// See [`Accountant::next`](crate::Accountant::next).
    pub fn next(&self, lsn: Lsn) -> Result<Lid> {
        let mut inner = self.inner.lock();
        let ss = inner.config.segment_size;
        if lsn < 0 {
            return Err(Error::NegativeLsn { lsn });
        }
        if lsn as u64 % ss != 0 {
            return Err(Error::UnalignedLsn {
                lsn,
                segment_size: ss,
            });
        }
        if lsn <= inner.max_stabilized {
            return Err(Error::LsnAlreadyStable {
                lsn,
                stable: inner.max_stabilized,
            });
        }
        if inner.ordering.contains_key(&lsn) {
            return Err(Error::LsnInUse { lsn });
        }
        let reuse = if inner.paused {
            None
        } else {
            inner.free.pop_front()
        };
        let index = reuse.unwrap_or_else(|| {
            inner.segments.push(Segment::default());
            inner.segments.len() - 1
        });
        let segment = &mut inner.segments[index];
        let old_lsn = segment.lsn.replace(lsn);
        segment.state = Some(SegmentState::Active);
        segment.present.clear();
        segment.not_yet_replaced.clear();
        segment.removed.clear();
        segment.live_bytes = 0;
        if let Some(old) = old_lsn {
            inner.ordering.remove(&old);
        }
        inner.ordering.insert(lsn, index);
        Ok(index as u64 * ss)
    }

    fn target(inner: &Inner, lsn: Lsn, ptr: DiskPtr) -> Result<usize> {
        let ss = inner.config.segment_size;
        let index = (ptr.lid() / ss) as usize;
        let Some(segment) = inner.segments.get(index) else {
            return Err(Error::LidBeyondTip {
                lid: ptr.lid(),
                tip: inner.segments.len() as u64 * ss,
            });
        };
        let base = lsn - lsn % ss as Lsn;
        let lid = index as u64 * ss;
        // The accountant's order: reused since, covered by a stabilize,
        // not Active, another lsn.
        if let Some(segment_lsn) = segment.lsn.filter(|&l| l > base) {
            return Err(Error::StaleSegment {
                lid,
                lsn,
                segment_lsn,
            });
        }
        if base <= inner.max_stabilized {
            return Err(Error::SegmentSealed {
                lid,
                lsn,
                segment_lsn: base,
                stable_lsn: inner.max_stabilized,
            });
        }
        if segment.state != Some(SegmentState::Active) {
            return Err(Error::SegmentNotActive {
                lid,
                state: segment.state.unwrap_or(SegmentState::Free),
            });
        }
        if segment.lsn != Some(base) {
            return Err(Error::LsnMismatch {
                lid,
                lsn,
                segment_lsn: segment.lsn.unwrap_or(-1),
            });
        }
        Ok(index)
    }

    /// See [`Accountant::mark_link`](crate::Accountant::mark_link).
    pub fn mark_link(&self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let index = Self::target(&inner, lsn, ptr)?;
        let segment = &mut inner.segments[index];
        *segment.present.entry(pid).or_insert(0) += size;
        segment.not_yet_replaced.insert(pid);
        segment.live_bytes += size;
        Ok(())
    }

    /// See [`Accountant::mark_replace`](crate::Accountant::mark_replace).
    pub fn mark_replace(
        &self,
        pid: PageId,
        lsn: Lsn,
        old_ptrs: &[DiskPtr],
        new_ptr: DiskPtr,
        size: u64,
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        let index = Self::target(&inner, lsn, new_ptr)?;
        let ss = inner.config.segment_size;
        for old in old_ptrs {
            let old_index = (old.lid() / ss) as usize;
            let Some(segment) = inner.segments.get(old_index) else {
                return Err(Error::LidBeyondTip {
                    lid: old.lid(),
                    tip: inner.segments.len() as u64 * ss,
                });
            };
            if old_index != index
                && matches!(
                    segment.state,
                    None | Some(SegmentState::Free | SegmentState::Freeing)
                )
            {
                return Err(Error::ReplacedFromFreeSegment {
                    pid,
                    lid: old_index as u64 * ss,
                    state: SegmentState::Free,
                });
            }
        }
        let relinks_same_blob = old_ptrs.len() == 1
            && old_ptrs[0].blob().is_some()
            && old_ptrs[0].blob() == new_ptr.blob();
        for old in old_ptrs {
            let old_index = (old.lid() / ss) as usize;
            if !relinks_same_blob {
                if let Some(blob) = old.blob() {
                    inner.segments[index].deferred_blobs.insert(blob);
                }
            }
            if old_index != index {
                inner.segments[old_index].not_yet_replaced.remove(&pid);
                inner.segments[index]
                    .deferred_replacements
                    .insert((pid, old_index));
            }
        }
        let segment = &mut inner.segments[index];
        *segment.present.entry(pid).or_insert(0) += size;
        segment.not_yet_replaced.insert(pid);
        segment.live_bytes += size;
        Ok(())
    }

    /// See [`Accountant::stabilize`](crate::Accountant::stabilize).
    pub fn stabilize(&self, stable_lsn: Lsn) -> Result<()> {
        if stable_lsn < 0 {
            return Err(Error::NegativeLsn { lsn: stable_lsn });
        }
        let mut inner = self.inner.lock();
        let ss = inner.config.segment_size as Lsn;
        let target = (stable_lsn / ss - 1) * ss;
        if target <= inner.max_stabilized {
            return Ok(());
        }
        let range: Vec<usize> = inner
            .ordering
            .range(inner.max_stabilized + 1..=target)
            .map(|(_, &i)| i)
            .collect();
        inner.max_stabilized = target;
        for index in range {
            if inner.segments[index].state != Some(SegmentState::Active) {
                continue;
            }
            inner.segments[index].state = Some(SegmentState::Inactive);
            inner.segments[index].deferred_blobs.clear();
            let replacements: Vec<(PageId, usize)> = inner.segments[index]
                .deferred_replacements
                .drain()
                .collect();
            for &(pid, old) in &replacements {
                let segment = &mut inner.segments[old];
                if let Some(bytes) = segment.present.remove(&pid) {
                    segment.live_bytes -= bytes;
                    segment.removed.insert(pid);
                }
            }
            for &(_, old) in &replacements {
                inner.consider(old);
            }
            inner.consider(index);
        }
        Ok(())
    }

    /// See [`Accountant::clean`](crate::Accountant::clean): the page only.
    pub fn clean(&self, ignore_pid: PageId) -> Option<PageId> {
        self.clean_from(ignore_pid).map(|(pid, _, _)| pid)
    }

    /// The page [`clean`](Self::clean) picks, with the base lid and lsn of
    /// the segment it is drained from.
    pub fn clean_from(&self, ignore_pid: PageId) -> Option<(PageId, Lid, Lsn)> {
        let mut inner = self.inner.lock();
        if inner.to_clean.is_empty() {
            return None;
        }
        inner.clean_counter += 1;
        let k = inner.clean_counter;
        let n = inner.to_clean.len();
        let pick = inner
            .to_clean
            .iter()
            .cycle()
            .skip(k % n)
            .take(n)
            .find(|&&i| !inner.segments[i].not_yet_replaced.is_empty())
            .copied()?;
        let set = &inner.segments[pick].not_yet_replaced;
        let pid = *set.iter().nth(k % set.len())?;
        let lid = pick as u64 * inner.config.segment_size;
        let lsn = inner.segments[pick].lsn.unwrap_or(-1);
        (pid != ignore_pid).then_some((pid, lid, lsn))
    }
}

impl Inner {
    fn consider(&mut self, index: usize) {
        let n = self.segments.len() as u64;
        let segment = &mut self.segments[index];
        let empty = segment.present.is_empty();
        match segment.state {
            Some(SegmentState::Inactive) | Some(SegmentState::Draining) if empty => {
                segment.state = Some(SegmentState::Free);
                self.to_clean.remove(&index);
                self.free.push_back(index);
            }
            Some(SegmentState::Inactive)
                if policy::drainable(
                    &self.config,
                    index as u64,
                    n,
                    segment.present.len() as u64,
                    segment.removed.len() as u64,
                ) =>
            {
                segment.state = Some(SegmentState::Draining);
                self.to_clean.insert(index);
            }
            _ => {}
        }
    }
}
