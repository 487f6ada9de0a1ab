//! The segment table: per-segment metadata in chunks that never move.
//!
//! Chunk `k` holds `FIRST_CHUNK << k` segments, so the table grows by
//! doubling without ever copying: a thread holding `&Segment` keeps writing
//! into the one and only copy. Only the sequencer adds chunks (under its
//! lock); everyone else reads chunk pointers with one acquire load.
//!
//! Each chunk also carries two atomic bitmaps over its segments:
//! - `free`: the segment is Free and reusable (safe under properties B and
//!   C). `next` claims the lowest set bit by clearing it, so low offsets
//!   are reused first and the top of the file can empty out and shrink;
//! - `drain`: the segment is in the to-clean set (Draining);
//! - `relocate`: a Draining segment that may still have pages for `clean`
//!   to suggest (set and cleared under the segment's drain-list lock).
//!
//! A bit is the claim token: whoever clears a set `free` bit owns the
//! segment's Free → Active (or → Vacant) transition.

use crate::core::segment::Segment;
use crate::core::sync::{AtomicPtr, AtomicU64, AtomicUsize, CachePadded, Ordering};

/// Segments in the first chunk. Tiny under loom so that the models reach
/// chunk growth, reuse and truncation within a few operations.
#[cfg(not(loom))]
pub(crate) const FIRST_CHUNK: usize = 64;
#[cfg(loom)]
pub(crate) const FIRST_CHUNK: usize = 4;

const MAX_CHUNKS: usize = 40;

struct Chunk {
    segments: Box<[Segment]>,
    free: Box<[AtomicU64]>,
    drain: Box<[AtomicU64]>,
    relocate: Box<[AtomicU64]>,
}

/// Which bitmap an operation addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bits {
    /// Reusable segments.
    Free,
    /// The to-clean set.
    Drain,
    /// To-clean segments with pages left to relocate.
    Relocate,
}

pub(crate) struct SegmentTable {
    chunks: [AtomicPtr<Chunk>; MAX_CHUNKS],
    /// The first segment of each chunk (`chunks[k].segments`), so that the
    /// hot path reaches a segment in one load instead of two.
    segments: [AtomicPtr<Segment>; MAX_CHUNKS],
    /// Number of chunks allocated; only the sequencer raises it.
    allocated: AtomicUsize,
    /// Segments whose landing closure is deferred on the epoch collector:
    /// written by every free and every landing, so on a line of its own,
    /// apart from the chunk pointers every call reads.
    pub(crate) epoch_waiting: CachePadded<AtomicUsize>,
}

impl std::fmt::Debug for SegmentTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentTable")
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[inline]
fn locate(index: usize) -> (usize, usize) {
    let v = index / FIRST_CHUNK + 1;
    let k = (usize::BITS - 1 - v.leading_zeros()) as usize;
    (k, index - FIRST_CHUNK * ((1 << k) - 1))
}

fn chunk_base(k: usize) -> usize {
    FIRST_CHUNK * ((1 << k) - 1)
}

impl SegmentTable {
    pub(crate) fn new() -> SegmentTable {
        let table = SegmentTable {
            chunks: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            allocated: AtomicUsize::new(0),
            epoch_waiting: CachePadded::new(AtomicUsize::new(0)),
        };
        table.grow_to(1);
        table
    }

    /// Number of segments the allocated chunks hold.
    pub(crate) fn capacity(&self) -> usize {
        chunk_base(self.allocated.load(Ordering::Acquire))
    }

    /// Makes room for segment `index`. Only the sequencer calls this (with
    /// its lock held), so chunk allocation never races itself.
    pub(crate) fn grow_to(&self, segments: usize) {
        // Relaxed: the sequencer lock orders this with earlier growth.
        let mut k = self.allocated.load(Ordering::Relaxed);
        while chunk_base(k) < segments {
            assert!(k < MAX_CHUNKS, "segment table exhausted");
            let len = FIRST_CHUNK << k;
            let words = len.div_ceil(64);
            let chunk = Box::new(Chunk {
                segments: (0..len).map(|_| Segment::new()).collect(),
                free: (0..words).map(|_| AtomicU64::new(0)).collect(),
                drain: (0..words).map(|_| AtomicU64::new(0)).collect(),
                relocate: (0..words).map(|_| AtomicU64::new(0)).collect(),
            });
            // The slice's elements are reached through shared references
            // only (their state is atomic), so a `*mut` is never written
            // through.
            let first = chunk.segments.as_ptr().cast_mut();
            // Release (both): publishes the fully initialised chunk to every
            // acquire load of either pointer.
            self.chunks[k].store(Box::into_raw(chunk), Ordering::Release);
            self.segments[k].store(first, Ordering::Release);
            k += 1;
            // Release: a reader that sees the count sees the pointer.
            self.allocated.store(k, Ordering::Release);
        }
    }

    fn chunk(&self, k: usize) -> Option<&Chunk> {
        if k >= MAX_CHUNKS {
            return None;
        }
        // Acquire: pairs with the release store in `grow_to`.
        let ptr = self.chunks[k].load(Ordering::Acquire);
        // Safety: a non-null pointer was produced by `Box::into_raw` in
        // `grow_to` and is freed only in `Drop`, which needs `&mut self`;
        // chunks are never moved or replaced, so the reference lives as long
        // as `&self`.
        unsafe { ptr.as_ref() }
    }

    /// The segment at `index`, if its chunk exists.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&Segment> {
        let (k, off) = locate(index);
        if k >= MAX_CHUNKS {
            return None;
        }
        // Acquire: pairs with the release store in `grow_to`.
        let first = self.segments[k].load(Ordering::Acquire);
        if first.is_null() {
            return None;
        }
        // Safety: a non-null `segments[k]` points at the first element of
        // chunk `k`'s boxed slice of `FIRST_CHUNK << k` segments, and
        // `locate` returns `off < FIRST_CHUNK << k`, so the offset stays in
        // that allocation. The slice is freed only in `Drop` (`&mut self`)
        // and never moved, so the reference lives as long as `&self`; it is
        // shared, as every reference to a segment is.
        Some(unsafe { &*first.add(off) })
    }

    /// The segment at `index`; it must exist (an internal invariant: only
    /// indices below the tip, which the sequencer grew the table for, are
    /// used).
    #[inline]
    pub(crate) fn segment(&self, index: usize) -> &Segment {
        self.get(index)
            .unwrap_or_else(|| panic!("segment {index} beyond the table"))
    }

    fn word(&self, bits: Bits, index: usize) -> Option<(&AtomicU64, u64)> {
        let (k, off) = locate(index);
        self.chunk(k).map(|c| {
            let words = match bits {
                Bits::Free => &c.free,
                Bits::Drain => &c.drain,
                Bits::Relocate => &c.relocate,
            };
            (&words[off / 64], 1u64 << (off % 64))
        })
    }

    /// Sets a bit; returns whether it was clear.
    pub(crate) fn set_bit(&self, bits: Bits, index: usize) -> bool {
        let (word, mask) = self.word(bits, index).expect("bit beyond the table");
        // Release: publishes the segment's state change to whoever claims
        // the bit (with an acquire RMW).
        word.fetch_or(mask, Ordering::Release) & mask == 0
    }

    /// Clears a bit; returns whether it was set (i.e. whether the caller
    /// won the claim).
    pub(crate) fn clear_bit(&self, bits: Bits, index: usize) -> bool {
        match self.word(bits, index) {
            // AcqRel: the winner must see what the setter published; the
            // read-modify-write totally orders competing claimers.
            Some((word, mask)) => word.fetch_and(!mask, Ordering::AcqRel) & mask != 0,
            None => false,
        }
    }

    pub(crate) fn bit(&self, bits: Bits, index: usize) -> bool {
        // Acquire: a set bit is followed by reads of the segment it names.
        self.word(bits, index)
            .is_some_and(|(w, m)| w.load(Ordering::Acquire) & m != 0)
    }

    /// Claims the lowest set bit below `limit`, clearing it.
    pub(crate) fn claim_lowest(&self, bits: Bits, limit: usize) -> Option<usize> {
        let mut k = 0;
        while let Some(chunk) = self.chunk(k) {
            let base = chunk_base(k);
            if base >= limit {
                break;
            }
            let words = match bits {
                Bits::Free => &chunk.free,
                Bits::Drain => &chunk.drain,
                Bits::Relocate => &chunk.relocate,
            };
            for (w, word) in words.iter().enumerate() {
                // Relaxed: only a hint; the claim below is the acquire RMW.
                let mut seen = word.load(Ordering::Relaxed);
                while seen != 0 {
                    let bit = seen.trailing_zeros() as usize;
                    let index = base + w * 64 + bit;
                    if index >= limit {
                        return None;
                    }
                    let mask = 1u64 << bit;
                    #[cfg(seeded_bugs)]
                    if crate::seeded::active(crate::seeded::Bug::ClaimWithStore) {
                        let before = word.load(Ordering::Acquire);
                        if before & mask != 0 {
                            word.store(before & !mask, Ordering::Release);
                            return Some(index);
                        }
                        seen = before & !mask;
                        continue;
                    }
                    // AcqRel: see clear_bit.
                    let before = word.fetch_and(!mask, Ordering::AcqRel);
                    if before & mask != 0 {
                        return Some(index);
                    }
                    seen = before & !mask;
                }
            }
            k += 1;
        }
        None
    }

    /// The first set bit at or after `start` (wrapping at `limit`), without
    /// claiming it.
    pub(crate) fn next_set(&self, bits: Bits, start: usize, limit: usize) -> Option<usize> {
        let start = if start >= limit { 0 } else { start };
        self.first_set_in(bits, start, limit)
            .or_else(|| self.first_set_in(bits, 0, start))
    }

    fn first_set_in(&self, bits: Bits, from: usize, to: usize) -> Option<usize> {
        let mut index = from;
        while index < to {
            let (word, _) = self.word(bits, index)?;
            let offset = locate(index).1 % 64;
            // Acquire: see `bit`.
            let seen = word.load(Ordering::Acquire) >> offset;
            if seen != 0 {
                let found = index + seen.trailing_zeros() as usize;
                return (found < to).then_some(found);
            }
            index += 64 - offset;
        }
        None
    }
}

impl Drop for SegmentTable {
    fn drop(&mut self) {
        for slot in &mut self.chunks {
            #[cfg(not(loom))]
            let ptr = *slot.get_mut();
            #[cfg(loom)]
            let ptr = slot.with_mut(|p| *p);
            if !ptr.is_null() {
                // Safety: the pointer came from `Box::into_raw` in `grow_to`;
                // `&mut self` proves no other reference to the chunk exists.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}

/// The table's fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::{field, COLD};
    vec![
        // Written only when the table grows.
        field!(SegmentTable, chunks, COLD),
        field!(SegmentTable, segments, COLD),
        field!(SegmentTable, allocated, COLD),
        field!(SegmentTable, epoch_waiting, hot),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_every_index_once() {
        let mut expected = (0, 0);
        for i in 0..FIRST_CHUNK * 15 {
            assert_eq!(locate(i), expected, "index {i}");
            expected.1 += 1;
            if expected.1 == FIRST_CHUNK << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    #[test]
    fn bitmap_claims_lowest_first_across_chunks() {
        let t = SegmentTable::new();
        t.grow_to(FIRST_CHUNK * 4);
        let limit = t.capacity();
        for i in [3, FIRST_CHUNK + 5, 1, FIRST_CHUNK * 3 + 1] {
            assert!(t.set_bit(Bits::Free, i));
        }
        assert!(!t.set_bit(Bits::Free, 1));
        assert_eq!(t.next_set(Bits::Free, 4, limit), Some(FIRST_CHUNK + 5));
        assert_eq!(t.next_set(Bits::Free, FIRST_CHUNK * 3 + 2, limit), Some(1));
        assert_eq!(t.claim_lowest(Bits::Free, limit), Some(1));
        assert_eq!(t.claim_lowest(Bits::Free, limit), Some(3));
        assert_eq!(t.claim_lowest(Bits::Free, FIRST_CHUNK), None);
        assert_eq!(t.claim_lowest(Bits::Free, limit), Some(FIRST_CHUNK + 5));
        assert!(t.clear_bit(Bits::Free, FIRST_CHUNK * 3 + 1));
        assert_eq!(t.claim_lowest(Bits::Free, limit), None);
    }
}
