//! The index of Inactive segments the cleaning policy picks victims from.
//!
//! Owned by the combiner (single-threaded). Segments are bucketed by live
//! bytes ([`policy::bucket`]), each bucket ordered by segment number, with a
//! bitmap of non-empty buckets: a pick looks at the oldest segment of each
//! non-empty bucket (at most [`policy::BUCKETS`] candidates) and lets
//! [`policy::choose`] rank them, whatever the number of segments. Moving a
//! segment between buckets as its live bytes fall is O(log n).

use std::collections::BTreeSet;

use crate::cleaning::policy::{self, CleaningPolicy, SegmentFacts, BUCKETS};
use crate::types::Lsn;

#[derive(Debug)]
pub(crate) struct VictimIndex {
    segment_size: u64,
    /// Per bucket: `(segno, index)` of its segments, oldest first.
    buckets: Vec<BTreeSet<(u64, u32)>>,
    /// Bit `b` set iff bucket `b` is non-empty.
    nonempty: [u64; BUCKETS / 64],
    /// Per segment index: `(bucket, segno)` while indexed.
    slots: Vec<Option<(u16, u64)>>,
}

impl VictimIndex {
    pub(crate) fn new(segment_size: u64) -> VictimIndex {
        VictimIndex {
            segment_size,
            buckets: vec![BTreeSet::new(); BUCKETS],
            nonempty: [0; BUCKETS / 64],
            slots: Vec::new(),
        }
    }

    /// Indexes segment `index` (numbered `segno`, `live_bytes` live), or
    /// moves it to the bucket its live bytes now fall in.
    pub(crate) fn upsert(&mut self, index: usize, segno: u64, live_bytes: u64) {
        let bucket = policy::bucket(live_bytes, self.segment_size) as u16;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        if self.slots[index] == Some((bucket, segno)) {
            return;
        }
        self.remove(index);
        self.slots[index] = Some((bucket, segno));
        self.buckets[bucket as usize].insert((segno, index as u32));
        self.nonempty[bucket as usize / 64] |= 1 << (bucket % 64);
    }

    /// Drops segment `index` from the index (no-op if absent).
    pub(crate) fn remove(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if let Some((bucket, segno)) = slot.take() {
            let set = &mut self.buckets[bucket as usize];
            let was_there = set.remove(&(segno, index as u32));
            debug_assert!(was_there, "victim index lost segment {index}");
            if set.is_empty() {
                self.nonempty[bucket as usize / 64] &= !(1 << (bucket % 64));
            }
        }
    }

    /// Whether segment `index` is indexed.
    #[cfg(test)]
    fn contains(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(Option::is_some)
    }

    /// Whether segment `index` is indexed as `segno` in the bucket of
    /// `live_bytes` (audit).
    pub(crate) fn holds(&self, index: usize, segno: u64, live_bytes: u64) -> bool {
        let bucket = policy::bucket(live_bytes, self.segment_size);
        self.slots.get(index) == Some(&Some((bucket as u16, segno)))
            && self.buckets[bucket].contains(&(segno, index as u32))
    }

    /// The indexed segments' indices, oldest first within each bucket.
    pub(crate) fn indices(&self) -> Vec<usize> {
        self.nonempty_buckets()
            .flat_map(|b| self.buckets[b].iter().map(|&(_, index)| index as usize))
            .collect()
    }

    /// How many segments are indexed.
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().map(BTreeSet::len).sum()
    }

    /// The policy's best victim at stable lsn `now`, with `facts` giving the
    /// current facts of a segment index.
    pub(crate) fn best(
        &self,
        policy: &dyn CleaningPolicy,
        now: Lsn,
        facts: impl Fn(usize) -> SegmentFacts,
    ) -> Option<usize> {
        let candidates = self.nonempty_buckets().map(|b| {
            let &(_, index) = self.buckets[b].first().expect("non-empty bucket");
            facts(index as usize)
        });
        policy::choose(policy, now, candidates).map(|f| f.index as usize)
    }

    /// The oldest segment of the lowest non-empty bucket: the fallback
    /// when the policy's victim would free too little.
    pub(crate) fn emptiest(&self) -> Option<usize> {
        let b = self.nonempty_buckets().next()?;
        self.buckets[b].first().map(|&(_, index)| index as usize)
    }

    fn nonempty_buckets(&self) -> impl Iterator<Item = usize> + '_ {
        self.nonempty.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleaning::policy::{CostBenefit, Fifo, Greedy};

    const SS: u64 = 1 << 20;

    fn facts(index: usize, segno: u64, live: u64) -> SegmentFacts {
        SegmentFacts::new(index as u64, (segno * SS) as Lsn, 1, 0, live, SS)
    }

    /// The index agrees with a plain scan over every segment.
    #[test]
    fn picks_like_a_scan() {
        let mut idx = VictimIndex::new(SS);
        // (index, segno, live) with a deterministic spread.
        let mut segs: Vec<(usize, u64, u64)> = (0..500)
            .map(|i| {
                let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                (i, 1000 - i as u64, x % SS)
            })
            .collect();
        for &(i, s, l) in &segs {
            idx.upsert(i, s, l);
        }
        // Lower some, drop some.
        for k in (0..500).step_by(7) {
            segs[k].2 /= 3;
            idx.upsert(segs[k].0, segs[k].1, segs[k].2);
        }
        for k in (0..500).step_by(11) {
            idx.remove(segs[k].0);
        }
        segs.retain(|&(i, _, _)| i % 11 != 0);
        assert_eq!(idx.len(), segs.len());
        let now = 2000 * SS as Lsn;
        let by_index = |i: usize| {
            let &(_, s, l) = segs.iter().find(|x| x.0 == i).unwrap();
            facts(i, s, l)
        };
        let policies: [&dyn CleaningPolicy; 3] = [&Greedy, &Fifo, &CostBenefit];
        for p in policies {
            // The scan: the best benefit over all segments, where segments
            // in one bucket count as their oldest.
            let best = segs
                .iter()
                .map(|&(i, s, l)| {
                    let b = policy::bucket(l, SS);
                    let oldest = segs
                        .iter()
                        .filter(|x| policy::bucket(x.2, SS) == b)
                        .min_by_key(|x| x.1)
                        .unwrap();
                    let _ = (i, s);
                    p.benefit(&facts(oldest.0, oldest.1, oldest.2), now)
                })
                .fold(f64::MIN, f64::max);
            let got = idx.best(p, now, by_index).unwrap();
            assert_eq!(p.benefit(&by_index(got), now), best, "{p:?}");
        }
        // FIFO picks the oldest segment overall.
        let oldest = segs.iter().min_by_key(|x| x.1).unwrap().0;
        assert_eq!(idx.best(&Fifo, now, by_index), Some(oldest));
    }

    #[test]
    fn empty_index_has_no_victim() {
        let mut idx = VictimIndex::new(SS);
        assert_eq!(idx.best(&Greedy, 0, |i| facts(i, 0, 0)), None);
        idx.upsert(3, 9, 100);
        assert!(idx.contains(3));
        idx.remove(3);
        idx.remove(3);
        assert!(!idx.contains(3));
        assert_eq!(idx.best(&Greedy, 0, |i| facts(i, 0, 0)), None);
    }
}
