//! One segment's metadata and its state machine.
//!
//! ```text
//! Vacant --extend--> Active --close--> Sealing --finish--> Inactive --drainable--> Draining
//!                      ^                                        |                       |
//!                      |                                        +-- present empty --+   |
//!                      |                                                            v   v
//!                    Free <-------------epoch + stable lsn passed------------ Freeing <-+
//! Free --truncate--> Vacant
//! ```
//!
//! ## The seal protocol
//!
//! A write into an Active segment (`mark_link`, `mark_replace`) either
//! lands wholly before the stabilize that seals the segment, or fails with
//! a typed error having changed nothing. Writers check the segment word
//! *under the lock they then mutate under*: their page's page-map shard
//! lock, which `mark_replace` holds across its whole effect (the link, the
//! deferred records, which live in that shard, the not-yet-replaced flags
//! of old segments that are Draining). The combiner seals in two steps:
//! *close* moves the word Active → Sealing by CAS; *finish* takes each
//! shard's lock in turn and, under it, takes the shard's deferred records
//! and counts its pages, and then moves Sealing → Inactive. Every read the
//! seal makes of what writers mutate takes the lock they mutate under. A writer whose critical section came first in that lock's order
//! has finished before the seal reads, and the seal reads its effect; one
//! that takes its lock after the seal did sees the word moved (the CAS
//! happened before that lock's release, which happened before the
//! writer's acquire) and refuses. No
//! write is ever undone, so nothing half-lands. The hot path pays nothing
//! new: the check is one load inside a lock it takes anyway.
//!
//! The state, the base lsn of the current incarnation and a generation
//! (bumped on every reuse) are packed into one `AtomicU64` and changed only
//! by compare-and-swap, so no reader sees an old state with a new lsn, and a
//! CAS that expects one incarnation fails against any other (no ABA: the
//! lsn alone is unique per incarnation). Deferred work names an
//! incarnation by its segment number (`lsn / segment_size`), never by the
//! 20-bit generation, which wraps: with several write heads one segment can
//! be reused 2^20 times while a replacement recorded against it waits in a
//! segment that stays Active. The generation field's top bit marks a Free
//! word *claimed* by one `next`, which owns the segment from then on (see
//! [`Word::claimed`]).
//!
//! Invariants kept here:
//! - `not_yet_replaced ⊆ present` (by construction: a flag on entries);
//! - the spec's `not_yet_replaced` is the flagged pages, less, while the
//!   segment is not Draining, those whose replacement is recorded in a
//!   segment not sealed yet (`mark_replace` writes an old segment's flag
//!   only if it is Draining; the drain start clears the rest, see
//!   docs/protocols/replace.md);
//! - once sealed, `live_bytes` is the sum of the byte counts in `present`;
//! - a segment that is Freeing, Free or Vacant has empty sets, zero live
//!   bytes and no deferred work.

use std::collections::VecDeque;

use crate::core::blocks::Blocks;
use crate::core::pidset::{FreshHint, PageMap, Reserved};
use crate::core::sync::{AtomicU64, AtomicU8, CachePadded, Mutex, Ordering};
/// The state the segment word encodes (defined with the other shared
/// types, so that errors can name it without depending on the core).
pub use crate::types::SegmentState;
use crate::types::{BlobId, Lsn, PageId};

impl SegmentState {
    fn from_bits(bits: u64) -> SegmentState {
        match bits {
            0 => SegmentState::Vacant,
            1 => SegmentState::Free,
            2 => SegmentState::Freeing,
            3 => SegmentState::Active,
            4 => SegmentState::Inactive,
            5 => SegmentState::Draining,
            6 => SegmentState::Sealing,
            _ => unreachable!("segment word with invalid state bits {bits}"),
        }
    }

    fn bits(self) -> u64 {
        match self {
            SegmentState::Vacant => 0,
            SegmentState::Free => 1,
            SegmentState::Freeing => 2,
            SegmentState::Active => 3,
            SegmentState::Inactive => 4,
            SegmentState::Draining => 5,
            SegmentState::Sealing => 6,
        }
    }
}

const STATE_BITS: u32 = 3;
const GEN_BITS: u32 = 21;
/// The generation field's top bit: set only on a Free word that a `next`
/// claimed (see [`Word::claimed`]). The generation proper is the 20 bits
/// below it.
const CLAIMED: u32 = 1 << (GEN_BITS - 1);
/// Generations wrap at this (tests wind them).
#[cfg(test)]
pub(crate) const GENERATIONS: u32 = CLAIMED;
const LSN_SHIFT: u32 = STATE_BITS + GEN_BITS;
/// Segment numbers (lsn / segment size) must stay below this.
pub(crate) const MAX_SEGMENT_NUMBER: u64 = (1 << (64 - LSN_SHIFT)) - 2;

/// A decoded segment word: state, generation and base lsn as one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) state: SegmentState,
    /// Wraps at 2^20; together with the (unique) lsn it names one
    /// incarnation. Bit 20 is the claim mark of a Free word.
    pub(crate) generation: u32,
    /// Segment number (`lsn / segment_size`) of the last activation.
    pub(crate) segno: Option<u64>,
}

impl Word {
    pub(crate) const VACANT: Word = Word {
        state: SegmentState::Vacant,
        generation: 0,
        segno: None,
    };

    fn pack(self) -> u64 {
        let segno = self.segno.map_or(0, |s| {
            debug_assert!(s <= MAX_SEGMENT_NUMBER);
            s + 1
        });
        (segno << LSN_SHIFT) | ((self.generation as u64) << STATE_BITS) | self.state.bits()
    }

    fn unpack(raw: u64) -> Word {
        let segno = raw >> LSN_SHIFT;
        Word {
            state: SegmentState::from_bits(raw & ((1 << STATE_BITS) - 1)),
            generation: ((raw >> STATE_BITS) & ((1 << GEN_BITS) - 1)) as u32,
            segno: segno.checked_sub(1),
        }
    }

    /// The same incarnation in another state.
    pub(crate) fn with_state(self, state: SegmentState) -> Word {
        Word { state, ..self }
    }

    /// The next incarnation, Active at `segno` (from a claimed Free word,
    /// or a Vacant one).
    pub(crate) fn activated(self, segno: u64) -> Word {
        Word {
            state: SegmentState::Active,
            generation: ((self.generation & !CLAIMED) + 1) & (CLAIMED - 1),
            segno: Some(segno),
        }
    }

    /// Whether a `next` (or the shrink) may claim this word: Free and not
    /// claimed already.
    pub(crate) fn is_claimable(self) -> bool {
        self.state == SegmentState::Free && self.generation & CLAIMED == 0
    }

    /// This Free word, claimed: the CAS to it is the claim token. Its
    /// winner owns the segment's reset and activation; other claimers (and
    /// the shrink) see it is not [claimable](Self::is_claimable) and pass
    /// on. The state stays Free until the activation, so nothing else
    /// about the segment changes meaning (it accepts no write), and the
    /// winner resets the segment's counters and sets its stream before
    /// anyone can see it Active.
    pub(crate) fn claimed(self) -> Word {
        debug_assert!(self.is_claimable());
        Word {
            generation: self.generation | CLAIMED,
            ..self
        }
    }

    pub(crate) fn lsn(self, segment_size: u64) -> Option<Lsn> {
        self.segno.map(|s| (s * segment_size) as Lsn)
    }
}

/// A segment word as loaded, not decoded. Two raw words are equal exactly
/// when state, generation and lsn all are, so comparing them is how a
/// writer detects that its segment changed under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawWord(u64);

/// The generation bits of a packed word.
const GEN_MASK: u64 = ((1 << GEN_BITS) - 1) << STATE_BITS;

impl RawWord {
    pub(crate) fn decode(self) -> Word {
        Word::unpack(self.0)
    }

    /// Whether this is an Active incarnation (of any generation) whose
    /// segment number is `segno`: the one test on the write path. `segno`
    /// must be at most [`MAX_SEGMENT_NUMBER`].
    #[inline]
    pub(crate) fn is_active_at(self, segno: u64) -> bool {
        debug_assert!(segno <= MAX_SEGMENT_NUMBER);
        self.0 & !GEN_MASK == ((segno + 1) << LSN_SHIFT) | SegmentState::Active.bits()
    }
}

impl RawWord {
    /// Whether this is a Draining incarnation whose segment number is
    /// `segno` (at most [`MAX_SEGMENT_NUMBER`]).
    #[inline]
    pub(crate) fn is_draining_at(self, segno: u64) -> bool {
        debug_assert!(segno <= MAX_SEGMENT_NUMBER);
        self.0 & !GEN_MASK == ((segno + 1) << LSN_SHIFT) | SegmentState::Draining.bits()
    }
}

/// A replacement recorded in the segment that received the new fragment,
/// applied to the old segment when the new one becomes stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeferredReplacement {
    pub(crate) pid: PageId,
    pub(crate) old_index: u32,
    /// The segment number of the old segment's incarnation when the
    /// replacement was recorded (unique: `next` never gives an lsn twice);
    /// the replacement is void against any other incarnation.
    pub(crate) old_segno: u64,
}

// The largest block of records stays below glibc's threshold for mapping
// an allocation on its own (see `crate::core::blocks`).
const _: () =
    assert!(crate::core::blocks::MAX * std::mem::size_of::<DeferredReplacement>() < 128 << 10);

impl Deferred {
    /// Records that `blobs` become garbage when the segment is Inactive.
    #[inline]
    pub(crate) fn remove_blobs(&mut self, blobs: impl IntoIterator<Item = BlobId>) {
        let mut blobs = blobs.into_iter().peekable();
        if blobs.peek().is_some() {
            self.blob_removals
                .get_or_insert_with(Default::default)
                .extend(blobs);
        }
    }

    /// Moves the recorded blob removals to the end of `out`, freeing
    /// their list.
    pub(crate) fn move_blob_removals_to(&mut self, out: &mut Vec<BlobId>) {
        if let Some(mut blobs) = self.blob_removals.take() {
            blobs.move_to(out);
        }
    }

    /// How many blob removals are recorded.
    pub(crate) fn blob_removals_len(&self) -> usize {
        self.blob_removals.as_ref().map_or(0, |b| b.len())
    }
}

/// Work deferred until the segment becomes Inactive: one per page-map
/// shard, recorded under the shard's lock (see
/// [`PageMap::link_if_then`](crate::core::pidset::PageMap::link_if_then)).
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pub(crate) replacements: Blocks<DeferredReplacement>,
    /// Boxed, made by the first removal: most segments never record one
    /// (a blob is a large value's file), and a shard's line holds the
    /// lock, the pages' table, their kept byte sum and one list inline.
    /// Freed by the seal, like the records' blocks.
    blob_removals: Option<Box<Blocks<BlobId>>>,
    /// With no relocation streams: bytes and pages of the `mark_replace`
    /// calls into this segment that replaced a not-yet-replaced page of a
    /// Draining segment (relocations, for [`crate::Metrics`]); taken by the
    /// seal. Kept under the shard lock `mark_replace` already holds, so
    /// counting costs no shared write.
    pub(crate) relocated_bytes: u64,
    pub(crate) relocated_pages: u64,
}

/// One segment's metadata, on two cache lines of its own.
///
/// The first line holds what every write into the segment reads and only
/// state changes write: the word, the page map's handle (its shards, which
/// writers lock and which hold the work `mark_replace` defers, are padded
/// allocations of their own), the counters the combiner keeps once the
/// segment is sealed, the stream and the epoch ticket. The second holds
/// the drain list, taken by every `clean` that picks the segment while it
/// is Draining. `repr(C)` keeps the order; the zero-sized `_line` starts the second
/// line and aligns the segment to a line, and the size is a whole number of
/// lines, so neighbours in the table share none (checked by
/// `tests::the_word_has_a_line_no_writer_of_another_segment_writes`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Segment {
    word: AtomicU64,
    /// Pids with a fragment here that has not been replaced by a stable
    /// write, with the bytes of their fragments, each flagged while no
    /// `mark_replace` has been called for it, or (while the segment is not
    /// Draining) none whose record still waits in a segment not sealed yet
    /// (the spec's `present` and `not_yet_replaced` sets in one map).
    pub(crate) present: PageMap,
    /// How many pids left `present` through applied replacements.
    pub(crate) removed: AtomicU64,
    /// Bytes of the fragments in `present`, once sealed: the combiner sets
    /// it when it seals the segment and lowers it as replacements apply.
    /// While Active it is 0 and the bytes live only in `present`, so
    /// `mark_link` is one map update.
    pub(crate) live_bytes: AtomicU64,
    /// Pages in `present`, once sealed: set with `live_bytes` and lowered
    /// with it, so that the combiner asks a sealed segment's size without
    /// read-locking every shard of its map.
    live_pages: AtomicU64,
    /// While a Freeing incarnation waits on the epoch collector: its packed
    /// Freeing word (unique per incarnation, never 0); 0 otherwise. The
    /// landing closure that clears it (by CAS) is the one that lands the
    /// segment, so a deferral repeated after a panic on the collector lost
    /// the first one lands it exactly once (see [`crate::freelist`]).
    epoch_ticket: AtomicU64,
    /// The write head (stream) of the current incarnation, set before the
    /// activation CAS publishes it.
    pub(crate) stream: AtomicU8,
    /// Zero bytes, aligned to a line: what follows starts a new one.
    _line: CachePadded<()>,
    /// While Draining: the pages `clean` may still suggest (taken from the
    /// not-yet-replaced flags when the segment started draining; a sealed
    /// segment gains no new ones), in the order `clean` suggests them: a
    /// suggested page moves to the back. Stale entries are dropped as
    /// `clean` meets them, so each costs O(1) amortized.
    pub(crate) drain_list: Mutex<VecDeque<PageId>>,
}

impl Segment {
    pub(crate) fn new() -> Segment {
        Segment {
            word: AtomicU64::new(Word::VACANT.pack()),
            present: PageMap::new(),
            removed: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            live_pages: AtomicU64::new(0),
            epoch_ticket: AtomicU64::new(0),
            stream: AtomicU8::new(0),
            _line: CachePadded::new(()),
            drain_list: Mutex::new(VecDeque::new()),
        }
    }

    /// Marks Freeing incarnation `word` as waiting on the epoch collector;
    /// returns its ticket.
    pub(crate) fn wait_on_epoch(&self, word: Word) -> u64 {
        debug_assert_eq!(word.state, SegmentState::Freeing);
        let ticket = word.pack();
        // Release: published with the deferred closure (the collector's
        // queue synchronizes); the landing CAS reads it with Acquire.
        self.epoch_ticket.store(ticket, Ordering::Release);
        ticket
    }

    /// The ticket of the incarnation waiting on the epoch, if any.
    pub(crate) fn epoch_ticket(&self) -> Option<u64> {
        // Acquire: a re-deferral reads the ticket the deferral published.
        let ticket = self.epoch_ticket.load(Ordering::Acquire);
        (ticket != 0).then_some(ticket)
    }

    /// Claims the landing of the incarnation `ticket` names: true for
    /// exactly one caller per ticket.
    pub(crate) fn take_epoch_ticket(&self, ticket: u64) -> bool {
        // AcqRel: the winner sees the deferral's writes and publishes its
        // claim; a failed CAS (another landing won, or a later
        // incarnation) needs no ordering.
        self.epoch_ticket
            .compare_exchange(ticket, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The word a ticket was taken from.
    pub(crate) fn ticket_word(ticket: u64) -> Word {
        Word::unpack(ticket)
    }

    /// Starts loading the segment's first line, its word and its page map's
    /// pointer (`repr(C)` keeps them together): a hint, which changes
    /// nothing the program reads or writes. A walk over cold segments calls
    /// it a step before [`PageMap::prefetch_shard`], which reads that
    /// pointer to find the shard lines.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        crate::core::pidset::prefetch(self);
    }

    /// The current word. Acquire: a reader that sees a state also sees the
    /// writes made before the CAS that set it (for instance the reset of
    /// the counters before an activation).
    pub(crate) fn load(&self) -> Word {
        Word::unpack(self.word.load(Ordering::Acquire))
    }

    /// The current word, undecoded; Acquire as in [`Segment::load`].
    #[inline]
    pub(crate) fn load_raw(&self) -> RawWord {
        RawWord(self.word.load(Ordering::Acquire))
    }

    /// Moves from exactly `from` to `to`. AcqRel: the transition publishes
    /// what was done before it and sees what the previous transition
    /// published; a failed CAS is a load and needs Acquire as well.
    pub(crate) fn transition(&self, from: Word, to: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(from.pack(), to.pack(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word::unpack)
    }

    /// Stores `to` without comparing (seeded bugs only: a claim by load
    /// and store, which two claimers can both win).
    #[cfg(seeded_bugs)]
    pub(crate) fn store_unchecked(&self, to: Word) {
        // Release: the broken claim still publishes like a transition.
        self.word.store(to.pack(), Ordering::Release);
    }

    /// Transition that must succeed: failure means a broken internal
    /// invariant (only the thread that owns this transition may make it).
    pub(crate) fn must_transition(&self, from: Word, to: Word) {
        if let Err(actual) = self.transition(from, to) {
            panic!("segment state invariant broken: expected {from:?} to move to {to:?}, found {actual:?}");
        }
    }

    /// Links `bytes` of page `pid` here if the segment is the Active one
    /// of segment number `segno`, checked under the page's shard lock (the
    /// lock the link mutates under, which the seal's count takes):
    /// otherwise changes nothing and returns the word it saw there, for the
    /// error.
    #[inline(always)]
    pub(crate) fn link_if_active_at(
        &self,
        pid: PageId,
        bytes: u64,
        segno: u64,
    ) -> Result<(), RawWord> {
        #[cfg(seeded_bugs)]
        if crate::seeded::active(crate::seeded::Bug::CheckOutsideLock) {
            let seen = self.load_raw();
            let open = seen.is_active_at(segno);
            return self
                .present
                .link_if(pid, bytes, || if open { Ok(()) } else { Err(seen) })
                .map(drop);
        }
        // Acquire (in `load_raw`), though the shard lock already orders
        // this load after the count of any seal that locked this shard
        // first. The refusal carries the word seen, to tell the error
        // apart.
        self.present
            .link_if(pid, bytes, || {
                let seen = self.load_raw();
                if seen.is_active_at(segno) {
                    Ok(())
                } else {
                    Err(seen)
                }
            })
            .map(drop)
    }

    /// Links `bytes` of page `pid` here unconditionally: for recovery,
    /// before the accountant is shared.
    #[inline(always)]
    pub(crate) fn link_held(&self, pid: PageId, bytes: u64) {
        let linked = self
            .present
            .link_if(pid, bytes, || Ok::<_, std::convert::Infallible>(()));
        debug_assert!(linked.is_ok());
    }

    /// Seals the live-byte counter: from now on replacements lower it.
    /// Returns the bytes and the pages linked into this incarnation (no
    /// fragment leaves the map before the seal, so the sum is every byte
    /// written here; a page linked twice here counts once).
    pub(crate) fn seal_bytes(&self) -> (u64, u64) {
        // Saturating: sizes are validated at the API edge (at most 2^32 per
        // fragment), so only billions of links of one segment could reach
        // the bound; the combiner must not overflow even then.
        let (bytes, pages) = self.present.bytes_and_pages();
        self.set_sealed(bytes, pages);
        (bytes, pages)
    }

    /// The seal of an Active incarnation: [`Segment::seal_bytes`], and
    /// under each shard's lock, with its count, the deferred work of the
    /// `mark_replace` calls into the segment moved to the ends of
    /// `replacements` and `blobs` (see [`PageMap::seal`]). Returns the bytes
    /// and pages linked here and the relocated bytes and pages.
    pub(crate) fn seal(
        &self,
        replacements: &mut Vec<DeferredReplacement>,
        blobs: &mut Vec<BlobId>,
        fresh: &FreshHint,
    ) -> ((u64, u64), (u64, u64)) {
        let (counted, relocated) = self.present.seal(replacements, blobs, fresh);
        self.set_sealed(counted.0, counted.1);
        (counted, relocated)
    }

    fn set_sealed(&self, bytes: u64, pages: u64) {
        // Relaxed: written by the combiner only, read for statistics.
        self.live_bytes.store(bytes, Ordering::Relaxed);
        // Relaxed: written and read by the combiner only (and audits).
        self.live_pages.store(pages, Ordering::Relaxed);
    }

    /// The live bytes: the counter once sealed, the map's sum while Active.
    pub(crate) fn live_bytes(&self, state: SegmentState) -> u64 {
        match state {
            SegmentState::Active => self.present.bytes(),
            // Relaxed: a statistic.
            _ => self.live_bytes.load(Ordering::Relaxed),
        }
    }

    /// Applies stable replacements of pages here (see
    /// [`PageMap::remove_all`]): their fragments here are garbage. Returns
    /// the bytes removed.
    pub(crate) fn remove_all_replaced(&self, pids: &[PageId]) -> u64 {
        let (bytes, pages) = self.present.remove_all(pids);
        if pages > 0 {
            // Plain stores: the combiner is the only writer of a sealed
            // segment's counters. Release on `removed`: an observer that
            // sees the replacement applied (acquire load) also sees the new
            // segment sealed before it.
            let live = self.live_bytes.load(Ordering::Relaxed);
            self.live_bytes
                .store(live.saturating_sub(bytes), Ordering::Relaxed);
            let removed = self.removed.load(Ordering::Relaxed);
            self.removed.store(removed + pages, Ordering::Release);
            let live = self.live_pages.load(Ordering::Relaxed);
            self.live_pages
                .store(live.saturating_sub(pages), Ordering::Relaxed);
        }
        bytes
    }

    /// The pages here: the kept count once sealed (no lock), the map's
    /// size (every shard read-locked) while Active or Sealing.
    pub(crate) fn live_pages(&self, state: SegmentState) -> u64 {
        match state {
            SegmentState::Active | SegmentState::Sealing => self.present.len() as u64,
            // Relaxed: the combiner's own counter (see `seal_bytes`).
            _ => self.live_pages.load(Ordering::Relaxed),
        }
    }

    /// Clears what the previous incarnation left (nothing, if the
    /// invariants hold) before the segment is activated again. With
    /// `reserved` (the file's tip, see [`PageMap::install`]) its page map
    /// takes the tables reserved before; otherwise (a reuse) it reserves
    /// now, what its last seal counted, or what `fresh` says if it never
    /// held pages.
    pub(crate) fn reset(&self, fresh: &FreshHint, reserved: Option<Reserved>) {
        debug_assert!(self.present.is_empty(), "reused segment still has pages");
        match reserved {
            Some(reserved) => self.present.install(reserved),
            None => self.present.clear(fresh),
        }
        // Relaxed: published by the activation CAS (release) that follows.
        self.removed.store(0, Ordering::Relaxed);
        self.live_bytes.store(0, Ordering::Relaxed);
        self.live_pages.store(0, Ordering::Relaxed);
    }
}

/// The segment's fields by line (see [`crate::core::layout`]).
#[cfg(all(test, not(loom)))]
pub(crate) fn layout() -> Vec<crate::core::layout::Field> {
    use crate::core::layout::field;
    const WORD_LINE: &str = "word line";
    const LOCKS: &str = "locks";
    vec![
        field!(Segment, word, WORD_LINE),
        field!(Segment, present, WORD_LINE),
        field!(Segment, removed, WORD_LINE),
        field!(Segment, live_bytes, WORD_LINE),
        field!(Segment, live_pages, WORD_LINE),
        field!(Segment, epoch_ticket, WORD_LINE),
        field!(Segment, stream, WORD_LINE),
        field!(Segment, drain_list, LOCKS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word and what writers only read share no line with the locks
    /// writers take, and a segment's lines are its own: the table is a
    /// slice of segments, each a whole number of lines and aligned to one,
    /// so no line holds two segments.
    #[test]
    #[cfg(not(loom))]
    fn the_word_has_a_line_no_writer_of_another_segment_writes() {
        use crate::core::sync::LINE;
        crate::core::layout::check::<Segment>(&layout()).unwrap();
        assert_eq!(std::mem::size_of::<Segment>() % LINE, 0);
        assert!(std::mem::align_of::<Segment>() >= LINE);
        let word = std::mem::offset_of!(Segment, word) / LINE;
        assert_ne!(word, std::mem::offset_of!(Segment, drain_list) / LINE);
        // `Segment::prefetch` loads one 64-byte line from the segment's
        // start for the word and the page map's pointer together.
        assert!(std::mem::offset_of!(Segment, present) + std::mem::size_of::<PageMap>() <= 64);
        // Two lines: the padding costs 104 bytes a segment over the 152
        // packed (the page map's four shards are padded allocations of
        // their own either way).
        #[cfg(target_arch = "x86_64")]
        assert_eq!(std::mem::size_of::<Segment>(), 2 * LINE);
        let table: Vec<Segment> = (0..3).map(|_| Segment::new()).collect();
        for pair in table.windows(2) {
            let a = &pair[0] as *const Segment as usize;
            let b = &pair[1] as *const Segment as usize;
            assert_eq!(a % LINE, 0);
            assert!((a + std::mem::size_of::<Segment>() - 1) / LINE < b / LINE);
        }
    }

    /// Every state with a few generations and segment numbers, edges
    /// included.
    fn sample_words() -> impl Iterator<Item = Word> {
        let states = [
            SegmentState::Vacant,
            SegmentState::Free,
            SegmentState::Freeing,
            SegmentState::Active,
            SegmentState::Inactive,
            SegmentState::Draining,
        ];
        states.into_iter().flat_map(|state| {
            [0, 1, CLAIMED - 1, (1 << GEN_BITS) - 1]
                .into_iter()
                .flat_map(move |generation| {
                    [None, Some(0), Some(7), Some(MAX_SEGMENT_NUMBER)]
                        .into_iter()
                        .map(move |segno| Word {
                            state,
                            generation,
                            segno,
                        })
                })
        })
    }

    #[test]
    fn word_round_trips() {
        for w in sample_words() {
            assert_eq!(Word::unpack(w.pack()), w);
        }
    }

    /// The write path's one masked compare agrees with the decoded word.
    #[test]
    fn is_active_at_matches_the_decoded_word() {
        for w in sample_words() {
            let raw = RawWord(w.pack());
            for target in [0, 6, 7, 8, MAX_SEGMENT_NUMBER] {
                assert_eq!(
                    raw.is_active_at(target),
                    w.state == SegmentState::Active && w.segno == Some(target),
                    "{w:?} target {target}"
                );
            }
        }
    }

    #[test]
    fn generation_wraps() {
        let w = Word {
            state: SegmentState::Free,
            generation: GENERATIONS - 1,
            segno: Some(3),
        };
        assert!(w.is_claimable());
        let claimed = w.claimed();
        assert!(!claimed.is_claimable());
        assert_eq!(claimed.state, SegmentState::Free);
        for from in [w, claimed] {
            let a = from.activated(9);
            assert_eq!(a.generation, 0);
            assert_eq!(a.segno, Some(9));
            assert_eq!(a.state, SegmentState::Active);
        }
    }

    /// Only an unclaimed Free word is claimable, and claiming changes the
    /// packed word (so a CAS from the unclaimed one fails after it).
    #[test]
    fn only_an_unclaimed_free_word_is_claimable() {
        for w in sample_words() {
            let claimable = w.state == SegmentState::Free && w.generation & CLAIMED == 0;
            assert_eq!(w.is_claimable(), claimable, "{w:?}");
            if claimable {
                assert_ne!(w.claimed().pack(), w.pack());
                assert_eq!(Word::unpack(w.claimed().pack()), w.claimed());
            }
        }
    }
}
