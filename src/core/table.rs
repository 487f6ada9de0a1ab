//! The segment table: per-segment metadata in chunks that never move.
//!
//! Chunk `k` holds `FIRST_CHUNK << k` segments, so the table grows by
//! doubling without ever copying: a thread holding `&Segment` keeps writing
//! into the one and only copy. Only the sequencer adds chunks (under its
//! lock); everyone else reads chunk pointers with one acquire load.
//!
//! Each chunk also carries atomic bitmaps over its segments:
//! - `free`: the segment is Free and reusable (safe under properties B and
//!   C), or was until a `next` claimed it and the combiner has not yet
//!   collected that activation. `next` claims the lowest set bit whose
//!   segment is still claimable, so low offsets are reused first and the
//!   top of the file can empty out and shrink;
//! - `drain`: the segment is in the to-clean set (Draining);
//! - `relocate`: a Draining segment that may still have pages for `clean`
//!   to suggest (set and cleared under the segment's drain-list lock).
//!
//! The claim token is the segment's own word, not its bit: whoever moves
//! it from Free to [claimed](crate::core::segment::Word::claimed) by CAS
//! owns the segment's activation (the shrink's CAS from Free to Vacant
//! competes for the same token). So a `next` that reuses writes no line
//! another segment's claimer or freer writes: its free bit stays set,
//! *stale*, until the combiner collects the activation and clears it (the
//! shrink clears its own). A stale bit costs a later claimer one load of a
//! word that is not claimable; the combiner clears it before the segment
//! can be sealed, so before the landing that sets it again.
//!
//! ## The free bitmap is a tree
//!
//! So that claiming the lowest free segment costs the same in a file of a
//! thousand segments as in one of a million (no scan from word 0), the free
//! bits are the leaves of a [`FAN`]-ary tree: within a chunk, bit `b` of
//! word `w` on a summary level stands for word `w * FAN + b` of the level
//! below, and the table's `free_chunks` word has a bit per chunk for the
//! chunk's root word. A claim descends from `free_chunks`, taking the
//! lowest set bit on every level, and claims the segment of the leaf bit
//! it lands on (passing over stale ones).
//!
//! The invariant (`docs/protocols/free-list.md`): a summary bit may be
//! *stale-set* (its word below is empty), but once the marks and claims in
//! flight have returned it is never *clear* while its word below has a bit
//! set. Marking a leaf sets bits upward only while the word it set a bit in
//! was empty before; a collection clears only the leaf bit (cheap), and a later
//! descent that finds a word empty *retires* the summary bit above it:
//! clears it, then reads the word again and marks the bit anew if the word
//! filled meanwhile. Marks and retirements of one summary bit are
//! read-modify-writes of one word, so they are ordered, and whichever comes
//! second sees the other: a mark (Release) after a retirement sets the bit
//! again; a retirement (Acquire) after a mark sees the filled word on its
//! re-read. Each stale bit is retired once, so a claim is O(1) amortized
//! (O(depth) ≤ 8 words read, depth = log_FAN of the chunk).

use crate::core::segment::{Segment, Word};
use crate::core::sync::{AtomicPtr, AtomicU64, AtomicUsize, Backoff, CachePadded, Ordering};

/// Segments in the first chunk. Tiny under loom so that the models reach
/// chunk growth, reuse and truncation within a few operations.
#[cfg(not(loom))]
pub(crate) const FIRST_CHUNK: usize = 64;
#[cfg(loom)]
pub(crate) const FIRST_CHUNK: usize = 4;

const MAX_CHUNKS: usize = 40;

/// Bits used per word of the free tree, on every level. 64 normally; 2
/// under loom, so that a model with a few segments has chunks with a
/// summary level between the leaves and `free_chunks` (chunk 1, 8 segments
/// under loom, is four leaf words, two level-1 words and a root).
#[cfg(not(loom))]
pub(crate) const FAN: usize = 64;
#[cfg(loom)]
pub(crate) const FAN: usize = 2;

/// Words per cache line of a bitmap (2 under loom: fewer loom objects).
#[cfg(not(loom))]
const LINE_WORDS: usize = crate::core::sync::LINE / 8;
#[cfg(loom)]
const LINE_WORDS: usize = 2;

/// A bitmap's words, a line at a time: the allocation is aligned to a line
/// and a whole number of lines long, so no bitmap shares a line with
/// another (or with a heap neighbour).
struct Bitmap {
    lines: Box<[CachePadded<[AtomicU64; LINE_WORDS]>]>,
}

impl Bitmap {
    fn new(words: usize) -> Bitmap {
        Bitmap {
            lines: (0..words.div_ceil(LINE_WORDS))
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline]
    fn word(&self, w: usize) -> &AtomicU64 {
        &self.lines[w / LINE_WORDS][w % LINE_WORDS]
    }

    fn words(&self) -> impl Iterator<Item = &AtomicU64> {
        self.lines.iter().flat_map(|line| line.iter())
    }
}

/// A chunk's free tree: `levels[0]` the leaves (a bit per segment), each
/// next level a bit per word of the one below, the last one word (the
/// chunk's root, whose bit is in `free_chunks`).
struct FreeTree {
    levels: Box<[Bitmap]>,
}

impl FreeTree {
    fn new(segments: usize) -> FreeTree {
        let mut levels = Vec::new();
        let mut words = segments.div_ceil(FAN);
        loop {
            levels.push(Bitmap::new(words));
            if words == 1 {
                break;
            }
            words = words.div_ceil(FAN);
        }
        FreeTree {
            levels: levels.into(),
        }
    }

    fn root(&self) -> &AtomicU64 {
        self.levels[self.levels.len() - 1].word(0)
    }
}

struct Chunk {
    segments: Box<[Segment]>,
    free: FreeTree,
    drain: Bitmap,
    relocate: Bitmap,
}

/// Which flat bitmap an operation addresses (the free bits have methods of
/// their own: see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bits {
    /// The to-clean set.
    Drain,
    /// To-clean segments with pages left to relocate.
    Relocate,
}

/// What a descent into a subtree of the free tree found.
enum Descent {
    /// Claimed this segment (offset in the chunk); its claimed word.
    Claimed(usize, Word),
    /// Free bits were set below the limit, but no segment under them was
    /// claimable (claimed already, or still landing).
    Taken,
    /// Every free bit it saw lies at or above the limit.
    AtLimit,
    /// The subtree's word read empty (its bit above may be retired).
    Empty,
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
    /// The free tree's top: bit `k` stands for chunk `k`'s root word.
    /// Written when a chunk's free bits go from none to some (a mark) and
    /// when a descent retires it.
    free_chunks: CachePadded<AtomicU64>,
    /// How many [`Bits::Relocate`] bits are set: `clean` returns at once
    /// when it reads 0 instead of scanning the table's words for one. Every
    /// flip of a Relocate bit happens under its segment's drain-list lock
    /// and adjusts the count in the same hold (from the flip's
    /// read-modify-write result), so the count never goes below zero and
    /// is exact whenever no flip is in flight. Written by drain starts and
    /// by the `clean` that finds a list empty; read by every `clean`.
    relocatable: CachePadded<AtomicUsize>,
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
    /// The sharing audit: `(start, len, what)` of every allocation the
    /// table owns: each segment, its page map's shards, and the bitmaps.
    #[cfg(sharing_audit)]
    // Used by the audit's test only.
    #[allow(dead_code)]
    pub(crate) fn audit_ranges(&self) -> Vec<(usize, usize, String)> {
        let mut out = vec![(
            self as *const Self as usize,
            std::mem::size_of::<Self>(),
            "segment table".to_string(),
        )];
        for k in 0..self.allocated.load(Ordering::Acquire) {
            // Safety: chunks below `allocated` are published and never freed
            // while the table lives.
            let chunk = unsafe { &*self.chunks[k].load(Ordering::Acquire) };
            for (i, segment) in chunk.segments.iter().enumerate() {
                let index = chunk_base(k) + i;
                out.push((
                    segment as *const Segment as usize,
                    std::mem::size_of::<Segment>(),
                    format!("segment {index}"),
                ));
                let (start, len) = segment.present.audit_range();
                out.push((start, len, format!("segment {index} page map")));
            }
            let bitmaps = chunk
                .free
                .levels
                .iter()
                .enumerate()
                .map(|(level, bits)| (format!("free tree level {level}"), bits))
                .chain([
                    ("drain bitmap".to_string(), &chunk.drain),
                    ("relocate bitmap".to_string(), &chunk.relocate),
                ]);
            for (name, bits) in bitmaps {
                out.push((
                    bits.lines.as_ptr() as usize,
                    std::mem::size_of_val(&*bits.lines),
                    name,
                ));
            }
        }
        out
    }
}

impl SegmentTable {
    pub(crate) fn new() -> SegmentTable {
        let table = SegmentTable {
            chunks: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            allocated: AtomicUsize::new(0),
            epoch_waiting: CachePadded::new(AtomicUsize::new(0)),
            free_chunks: CachePadded::new(AtomicU64::new(0)),
            relocatable: CachePadded::new(AtomicUsize::new(0)),
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
                free: FreeTree::new(len),
                drain: Bitmap::new(words),
                relocate: Bitmap::new(words),
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
                Bits::Drain => &c.drain,
                Bits::Relocate => &c.relocate,
            };
            (words.word(off / 64), 1u64 << (off % 64))
        })
    }

    /// Sets a bit; returns whether it was clear. A Relocate bit is set
    /// under its segment's drain-list lock (see `relocatable`).
    pub(crate) fn set_bit(&self, bits: Bits, index: usize) -> bool {
        let (word, mask) = self.word(bits, index).expect("bit beyond the table");
        // Release: publishes the segment's state change to whoever reads
        // the bit with acquire.
        let flipped = word.fetch_or(mask, Ordering::Release) & mask == 0;
        if flipped && bits == Bits::Relocate {
            // Release: a `clean` that reads the raised count (acquire) and
            // then scans sees this bit or a later flip of it.
            self.relocatable.fetch_add(1, Ordering::Release);
        }
        flipped
    }

    /// Clears a bit; returns whether it was set. A Relocate bit is cleared
    /// under its segment's drain-list lock (see `relocatable`).
    pub(crate) fn clear_bit(&self, bits: Bits, index: usize) -> bool {
        let flipped = match self.word(bits, index) {
            // AcqRel: whoever clears a set bit sees what the setter
            // published; the read-modify-write orders competing clearers.
            Some((word, mask)) => word.fetch_and(!mask, Ordering::AcqRel) & mask != 0,
            None => false,
        };
        if flipped && bits == Bits::Relocate {
            // Relaxed: a lower count only lets `clean` return sooner; the
            // bit's own clear is what orders its readers.
            let before = self.relocatable.fetch_sub(1, Ordering::Relaxed);
            debug_assert!(before > 0, "the Relocate count went below zero");
        }
        flipped
    }

    /// How many segments have pages to relocate (their Relocate bit set),
    /// exact when no flip is in flight (see `relocatable`).
    pub(crate) fn relocatable(&self) -> usize {
        // Acquire: pairs with the release increment in `set_bit`.
        self.relocatable.load(Ordering::Acquire)
    }

    pub(crate) fn bit(&self, bits: Bits, index: usize) -> bool {
        // Acquire: a set bit is followed by reads of the segment it names.
        self.word(bits, index)
            .is_some_and(|(w, m)| w.load(Ordering::Acquire) & m != 0)
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

    // The free tree (see the module docs and docs/protocols/free-list.md).

    /// The leaf word and mask of segment `index`'s free bit.
    fn free_leaf(&self, index: usize) -> Option<(&AtomicU64, u64)> {
        let (k, off) = locate(index);
        self.chunk(k)
            .map(|c| (c.free.levels[0].word(off / FAN), 1u64 << (off % FAN)))
    }

    /// Marks segment `index` free (its landing, just before it moves the
    /// segment Freeing → Free); returns whether its bit was clear. Sets the
    /// summary bits above it while the word it set a bit in was empty
    /// before.
    pub(crate) fn set_free(&self, index: usize) -> bool {
        let (k, off) = locate(index);
        let chunk = self.chunk(k).expect("free bit beyond the table");
        let leaf = chunk.free.levels[0].word(off / FAN);
        let mask = 1u64 << (off % FAN);
        // Release: a retirement of the bit above that reads this word
        // again after this mark sees it (as in `mark_above`). The Free
        // state is published by the segment word's transition, which
        // the claimer's compare-and-swap reads.
        let before = leaf.fetch_or(mask, Ordering::Release);
        if before == 0 {
            self.mark_above(k, chunk, 1, off / FAN);
        }
        before & mask == 0
    }

    /// A landing's publication of segment `index`, Freeing as `word`:
    /// sets its free bit, then moves it Freeing → Free. `Err` names the
    /// broken invariant (the bit already set, or the word moved).
    ///
    /// The bit goes first so that a claimable word always has its bit set
    /// by its own landing (the bit's write happens before the transition
    /// that a claimer's compare-and-swap reads): a claimer that read an
    /// older bit and then finds the word Free claims a segment whose bit
    /// is set, and the combiner's clear at collection clears it
    /// (docs/protocols/free-list.md, "Why the landing sets the bit before
    /// the word"). Until the transition, claimers that see the bit pass
    /// over the Freeing word.
    pub(crate) fn publish_free(&self, index: usize, word: Word) -> Result<(), String> {
        let segment = self.segment(index);
        let free = word.with_state(crate::SegmentState::Free);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::FreeWordBeforeBit) {
            segment
                .transition(word, free)
                .map_err(|actual| format!("segment {index} moved to {actual:?} while it landed"))?;
            return match self.set_free(index) {
                true => Ok(()),
                false => Err(format!("segment {index} landed twice")),
            };
        }
        if !self.set_free(index) {
            return Err(format!("segment {index} landed twice"));
        }
        segment.transition(word, free).map_err(|actual| {
            format!("segment {index} moved from {word:?} to {actual:?} while it landed")
        })
    }

    /// Sets bit `entry` of summary level `level` of chunk `k` (the bit for
    /// word `entry` of the level below, which has a bit set), and the bits
    /// above it while the word it set was empty before; past the chunk's
    /// root, the chunk's bit in `free_chunks`.
    fn mark_above(&self, k: usize, chunk: &Chunk, mut level: usize, mut entry: usize) {
        let levels = &chunk.free.levels;
        while level < levels.len() {
            // Release: a retirement of this bit ordered after this mark (an
            // acquire read-modify-write of the same word) sees the word
            // below filled when it reads it again.
            let before = levels[level]
                .word(entry / FAN)
                .fetch_or(1 << (entry % FAN), Ordering::Release);
            if before != 0 {
                // The word was not empty: whoever filled it marked it above,
                // or a retirement of its bit above will see it filled.
                return;
            }
            entry /= FAN;
            level += 1;
        }
        // Release: as above.
        self.free_chunks.fetch_or(1 << k, Ordering::Release);
    }

    /// Clears summary bit `bit` of `word` (on level `level` of chunk `k`,
    /// word index `w`; `level == levels.len()` means `free_chunks`), whose
    /// word below read empty; then reads that word again and, if it
    /// filled meanwhile, marks the bit anew. Returns whether it did.
    fn retire(&self, k: usize, chunk: &Chunk, level: usize, w: usize, bit: usize) -> bool {
        let levels = &chunk.free.levels;
        let (word, below) = if level == levels.len() {
            (&*self.free_chunks, chunk.free.root())
        } else {
            (levels[level].word(w), levels[level - 1].word(w * FAN + bit))
        };
        // Acquire: a mark of this bit ordered before this clear (its
        // release read-modify-write of the same word) happens-before the
        // read below, which therefore sees the word below filled.
        word.fetch_and(!(1 << bit), Ordering::Acquire);
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::RetireWithoutRecheck) {
            return false;
        }
        // Relaxed: the acquire above ordered every mark that matters before
        // this read (coherence does the rest).
        if below.load(Ordering::Relaxed) == 0 {
            return false;
        }
        if level == levels.len() {
            // Release: as in `mark_above`.
            self.free_chunks.fetch_or(1 << k, Ordering::Release);
        } else {
            self.mark_above(k, chunk, level, w * FAN + bit);
        }
        true
    }

    /// Claims the lowest free segment below `limit`: moves its word from
    /// Free to [claimed](Word::claimed) and returns its index and the
    /// claimed word (the caller owns the segment's activation). `None` if
    /// no claimable segment below `limit` was seen.
    ///
    /// The claim writes only the segment's own word: its free bit stays
    /// set (*stale*) until the combiner collects the activation and clears
    /// it ([`SegmentTable::clear_claimed`]). A claimer that meets a stale
    /// bit reads a word that is not claimable and passes on to the next
    /// bit.
    pub(crate) fn claim_free(&self, limit: usize) -> Option<(usize, Word)> {
        // Relaxed (every read of the tree): the reads only steer the
        // descent; the claim is the segment word's compare-and-swap. A mark
        // that happened before this call is seen by coherence.
        let mut chunks = self.free_chunks.load(Ordering::Relaxed);
        // Chunks whose free bits were all stale.
        let mut stale = 0u64;
        while chunks != 0 {
            let k = chunks.trailing_zeros() as usize;
            let base = chunk_base(k);
            if base >= limit {
                return None;
            }
            let chunk = self.chunk(k).expect("a chunk marked free exists");
            let root = chunk.free.levels.len() - 1;
            match self.descend(k, chunk, root, 0, limit - base) {
                Descent::Claimed(off, word) => return Some((base + off, word)),
                Descent::AtLimit => return None,
                Descent::Taken => stale |= 1 << k,
                Descent::Empty => {
                    let levels = chunk.free.levels.len();
                    self.retire(k, chunk, levels, 0, k);
                }
            }
            // Read again: a chunk retired and marked anew (it filled while
            // we retired it) is descended again, lowest first; one whose
            // bits were all stale is not.
            chunks = self.free_chunks.load(Ordering::Relaxed) & !stale;
        }
        None
    }

    /// Claims segment `index` if its word is claimable: the claim token
    /// that `next` and the shrink compete for (see [`Word::claimed`]).
    /// Backs off only when it lost the compare-and-swap to another claimer
    /// (contention); a word that is simply not claimable (a stale bit) is
    /// passed over at once.
    fn try_claim(&self, index: usize, backoff: &Backoff) -> Option<Word> {
        let segment = self.segment(index);
        // Acquire (in `load`): a Free word read here shows what its landing
        // did before the transition, its free bit included.
        let word = segment.load();
        if !word.is_claimable() {
            return None;
        }
        let claimed = word.claimed();
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::ClaimWithStore) {
            segment.store_unchecked(claimed);
            return Some(claimed);
        }
        // AcqRel (in `transition`): the winner sees what the landing
        // published with the Free state; the CAS totally orders competing
        // claimers and the shrink's claim.
        match segment.transition(word, claimed) {
            Ok(()) => Some(claimed),
            Err(_) => {
                backoff.spin();
                None
            }
        }
    }

    /// Descends from word `w` of level `level` of chunk `k`, lowest bit
    /// first, claiming the first claimable segment below `limit` (an
    /// offset in the chunk). Retires the summary bits whose word below
    /// reads empty.
    fn descend(&self, k: usize, chunk: &Chunk, level: usize, w: usize, limit: usize) -> Descent {
        let word = chunk.free.levels[level].word(w);
        // The segments a bit on this level spans.
        let span = FAN.pow(level as u32);
        let backoff = Backoff::new();
        // Relaxed: see `claim_free`; on the leaves too, since the claim
        // reads the segment's word with Acquire.
        // Bits found stale (below them nothing is claimable): not
        // descended again when the word is read again.
        let mut stale = 0u64;
        let mut seen = word.load(Ordering::Relaxed);
        while seen != 0 {
            let bit = seen.trailing_zeros() as usize;
            let entry = w * FAN + bit;
            if entry * span >= limit {
                return Descent::AtLimit;
            }
            if level == 0 {
                if let Some(claimed) = self.try_claim(chunk_base(k) + entry, &backoff) {
                    return Descent::Claimed(entry, claimed);
                }
                // Not claimable (claimed already, or still landing): try
                // the next bit.
                stale |= 1 << bit;
                seen &= !(1 << bit);
                continue;
            }
            match self.descend(k, chunk, level - 1, entry, limit) {
                Descent::Empty => {
                    self.retire(k, chunk, level, w, bit);
                    // Read again: a word retired and marked anew is
                    // descended again (lowest first).
                    seen = word.load(Ordering::Relaxed) & !stale;
                }
                Descent::Taken => {
                    stale |= 1 << bit;
                    seen &= !(1 << bit);
                }
                found => return found,
            }
        }
        if stale != 0 {
            Descent::Taken
        } else {
            Descent::Empty
        }
    }

    /// Clears the free bit of segment `index`, which a claim took (a
    /// `next`'s, whose activation the combiner collected, or the
    /// shrink's): true if it was set. The summary bits above stay set
    /// until a descent retires them.
    pub(crate) fn clear_claimed(&self, index: usize) -> bool {
        match self.free_leaf(index) {
            // Relaxed: the segment's word, not this bit, is the claim; the
            // clear only spares later claimers a read of a claimed word.
            // The bit's next mark (the segment's next landing) happens
            // after this clear through the segment's later transitions, so
            // coherence orders the two.
            Some((word, mask)) => word.fetch_and(!mask, Ordering::Relaxed) & mask != 0,
            None => false,
        }
    }

    /// The shrink's claim of segment `index`: moves its word from Free to
    /// Vacant if it is claimable (the token `next` competes for too, see
    /// [`Word::claimed`]), then clears its free bit. Whether it did.
    pub(crate) fn vacate_free(&self, index: usize) -> bool {
        let Some(segment) = self.get(index) else {
            return false;
        };
        let word = segment.load();
        if !word.is_claimable() {
            return false;
        }
        let vacant = Word {
            state: crate::SegmentState::Vacant,
            generation: word.generation,
            segno: None,
        };
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::ShrinkWithoutClaim) {
            segment.store_unchecked(vacant);
            self.clear_claimed(index);
            return true;
        }
        // AcqRel (in `transition`): as the claim in `try_claim`.
        if segment.transition(word, vacant).is_err() {
            return false;
        }
        let was_set = self.clear_claimed(index);
        debug_assert!(was_set, "a claimable segment {index} had no free bit");
        true
    }

    /// Whether segment `index`'s free bit is set.
    pub(crate) fn is_free(&self, index: usize) -> bool {
        // Acquire: a set bit is followed by reads of the segment it names.
        self.free_leaf(index)
            .is_some_and(|(w, m)| w.load(Ordering::Acquire) & m != 0)
    }

    /// The summary invariant, at a quiescent point: every non-empty word of
    /// the free tree has its bit set on the level above (audit).
    pub(crate) fn check_free_summary(&self) -> Result<(), String> {
        // Relaxed (all): the audit runs at a quiescent point.
        let top = self.free_chunks.load(Ordering::Relaxed);
        let mut k = 0;
        while let Some(chunk) = self.chunk(k) {
            let levels = &chunk.free.levels;
            for (level, bitmap) in levels.iter().enumerate() {
                for (w, word) in bitmap.words().enumerate() {
                    if word.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    let marked = if level + 1 == levels.len() {
                        top & (1 << k) != 0
                    } else {
                        levels[level + 1].word(w / FAN).load(Ordering::Relaxed) & (1 << (w % FAN))
                            != 0
                    };
                    if !marked {
                        return Err(format!(
                            "free tree: chunk {k} level {level} word {w} has bits set but its bit above is clear"
                        ));
                    }
                }
            }
            k += 1;
        }
        Ok(())
    }
}

/// The free tree of a segment table, alone, for its loom models (public
/// under loom only): the code that ships, driven directly.
#[cfg(loom)]
pub mod loom_free_tree {
    use crate::SegmentState;

    /// A segment table used only for its free bits and the segment words
    /// they name.
    #[derive(Debug)]
    pub struct FreeTree(super::SegmentTable);

    impl FreeTree {
        /// A table of at least `segments` segments, none free.
        pub fn new(segments: usize) -> FreeTree {
            let table = super::SegmentTable::new();
            table.grow_to(segments);
            FreeTree(table)
        }

        /// Frees a segment as a landing does (its bit, then its word to
        /// Free); whether its bit was clear.
        pub fn free(&self, index: usize) -> bool {
            super::tests_support::land(&self.0, index)
        }

        /// Claims the lowest free segment below `limit` and activates it
        /// (as `next` does); its bit stays set until [`FreeTree::collect`].
        pub fn claim(&self, limit: usize) -> Option<usize> {
            self.0.claim_free(limit).map(|(index, word)| {
                self.0
                    .segment(index)
                    .must_transition(word, word.activated(index as u64));
                index
            })
        }

        /// Clears a claimed segment's stale bit (as the combiner does when
        /// it collects the activation); whether it was set.
        pub fn collect(&self, index: usize) -> bool {
            self.0.clear_claimed(index)
        }

        /// The shrink's claim of one segment (Free -> Vacant, bit cleared).
        pub fn vacate(&self, index: usize) -> bool {
            self.0.vacate_free(index)
        }

        /// What a claimer would find for one segment: `None` if its word
        /// is not claimable, else whether its free bit is set (read after
        /// the word, as a claim's clear comes after its claim).
        pub fn claimable_with_bit(&self, index: usize) -> Option<bool> {
            if !self.0.segment(index).load().is_claimable() {
                return None;
            }
            Some(self.0.is_free(index))
        }

        /// Whether a segment is Active (claimed and activated).
        pub fn is_active(&self, index: usize) -> bool {
            self.0.segment(index).load().state == SegmentState::Active
        }

        /// The summary invariant, at a quiescent point.
        pub fn check(&self) -> Result<(), String> {
            self.0.check_free_summary()
        }
    }
}

/// What the free tree's tests (unit and loom) do to a segment's word
/// around its bits.
#[cfg(any(test, loom))]
mod tests_support {
    use crate::core::segment::Word;
    use crate::SegmentState;

    /// Frees segment `index` as a landing does, through
    /// [`SegmentTable::publish_free`] (the code that ships), from whatever
    /// state it is in (moved to Freeing first). A segment already Free and
    /// unclaimed is left alone. Returns whether it was not free.
    pub(super) fn land(table: &super::SegmentTable, index: usize) -> bool {
        let segment = table.segment(index);
        let word = segment.load();
        if word.is_claimable() {
            return false;
        }
        let freeing = Word {
            state: SegmentState::Freeing,
            generation: word.activated(0).generation,
            segno: word.segno,
        };
        segment.must_transition(word, freeing);
        table.publish_free(index, freeing).unwrap();
        true
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
        field!(SegmentTable, free_chunks, hot),
        field!(SegmentTable, relocatable, hot),
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

    /// Frees segment `i` as a landing does; whether its bit was clear.
    fn free(t: &SegmentTable, i: usize) -> bool {
        tests_support::land(t, i)
    }

    /// Claims below `limit` and activates the segment, as `next` does;
    /// `collect` clears its bit at once, as the combiner would later.
    fn claim(t: &SegmentTable, limit: usize, collect: bool) -> Option<usize> {
        t.claim_free(limit).map(|(i, word)| {
            t.segment(i).must_transition(word, word.activated(i as u64));
            if collect {
                assert!(t.clear_claimed(i), "claimed segment {i} had no bit");
            }
            i
        })
    }

    #[test]
    fn bitmap_claims_lowest_first_across_chunks() {
        let t = SegmentTable::new();
        t.grow_to(FIRST_CHUNK * 4);
        let limit = t.capacity();
        for i in [3, FIRST_CHUNK + 5, 1, FIRST_CHUNK * 3 + 1] {
            assert!(free(&t, i));
            assert!(t.set_bit(Bits::Drain, i));
        }
        assert!(!free(&t, 1));
        assert_eq!(t.next_set(Bits::Drain, 4, limit), Some(FIRST_CHUNK + 5));
        assert_eq!(t.next_set(Bits::Drain, FIRST_CHUNK * 3 + 2, limit), Some(1));
        // The first claim's bit stays set (stale) until collected: the
        // second claim passes over it.
        assert_eq!(claim(&t, limit, false), Some(1));
        assert!(t.is_free(1));
        assert_eq!(claim(&t, limit, true), Some(3));
        assert!(t.clear_claimed(1));
        assert_eq!(claim(&t, FIRST_CHUNK, true), None);
        assert_eq!(claim(&t, limit, true), Some(FIRST_CHUNK + 5));
        assert!(t.vacate_free(FIRST_CHUNK * 3 + 1));
        assert!(!t.is_free(FIRST_CHUNK * 3 + 1));
        assert!(!t.vacate_free(FIRST_CHUNK * 3 + 1));
        assert_eq!(claim(&t, limit, true), None);
        t.check_free_summary().unwrap();
    }

    /// Against a plain set of free segments: any sequence of frees,
    /// lowest-first claims (with limits, their bits cleared at once or
    /// left stale for a while, as the combiner collects them), and shrink
    /// claims, over a table of several chunks (so several summary levels),
    /// claims exactly the lowest free segment below the limit every time,
    /// and the summary invariant holds after every step.
    #[test]
    fn the_free_tree_claims_exactly_the_lowest_free_segment() {
        let t = SegmentTable::new();
        // Chunks 0..=7: chunk 7 has 8192 segments, 128 leaf words, two
        // summary levels.
        t.grow_to(FIRST_CHUNK * 255);
        let capacity = t.capacity();
        let mut model = std::collections::BTreeSet::new();
        // Claimed, with their bits still set.
        let mut stale = std::collections::BTreeSet::new();
        // A small xorshift: the test needs no crate for randomness.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for step in 0..200_000 {
            match rand(11) {
                0..=4 => {
                    // Frees cluster low and high, as in a store. A claimed
                    // segment is collected before it can be freed again.
                    let i = if rand(2) == 0 {
                        rand(256)
                    } else {
                        rand(capacity)
                    };
                    if !stale.contains(&i) {
                        assert_eq!(free(&t, i), model.insert(i), "step {step}: free {i}");
                    }
                }
                5..=7 => {
                    let limit = if rand(4) == 0 {
                        rand(capacity)
                    } else {
                        capacity
                    };
                    let expected = model.range(..limit).next().copied();
                    let collect = rand(2) == 0;
                    if let Some(i) = expected {
                        model.remove(&i);
                        if !collect {
                            stale.insert(i);
                        }
                    }
                    assert_eq!(
                        claim(&t, limit, collect),
                        expected,
                        "step {step}: claim below {limit}"
                    );
                }
                8 => {
                    let i = rand(capacity);
                    assert_eq!(
                        t.vacate_free(i),
                        model.remove(&i),
                        "step {step}: shrink {i}"
                    );
                }
                9 => {
                    // The combiner collects the claims left stale.
                    for i in std::mem::take(&mut stale) {
                        assert!(t.clear_claimed(i), "step {step}: collect {i}");
                    }
                }
                _ => {
                    let i = rand(capacity);
                    assert_eq!(
                        t.is_free(i),
                        model.contains(&i) || stale.contains(&i),
                        "step {step}: is_free {i}"
                    );
                }
            }
            if step % 1000 == 0 {
                t.check_free_summary().unwrap();
            }
        }
        t.check_free_summary().unwrap();
        while let Some(i) = claim(&t, capacity, true) {
            assert_eq!(Some(i), model.pop_first());
        }
        assert!(model.is_empty());
    }

    /// A free segment alternating between the top of the table and its
    /// bottom: every claim retires the summary bits the last one left
    /// stale, and marks them anew.
    #[test]
    fn stale_summary_bits_are_retired_and_marked_anew() {
        let t = SegmentTable::new();
        t.grow_to(FIRST_CHUNK * 255);
        let top = t.capacity() - 1;
        for _ in 0..1000 {
            assert!(free(&t, top));
            assert_eq!(claim(&t, t.capacity(), true), Some(top));
            assert!(free(&t, 0));
            assert_eq!(claim(&t, t.capacity(), true), Some(0));
        }
        t.check_free_summary().unwrap();
    }
}
