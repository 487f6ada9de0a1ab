//! An append-only list that never copies what it stores: the deferred
//! records of a page-map shard.
//!
//! Each of a segment's page-map shards records the work its `mark_replace`
//! calls defer to the seal. Four vectors per segment growing by doubling
//! copy their contents on every growth; worse, interleaved on the heap,
//! none can grow in place, so a segment that gathers many records before
//! its seal paid for the copies and the page faults of fresh memory each
//! time (docs/performance-log.md, "Deferred records in the page's shard"). Here
//! the entries live in blocks that never move, doubling up to a cap: a push
//! that fills a block starts the next one, and only the list of block
//! handles (three words per block) ever grows by copy.
//!
//! Moving the entries out frees the blocks: a sealed segment records
//! nothing until it is reused, so it holds no blocks while it is sealed or
//! free (when every segment kept them, they were more than a third of the
//! accountant's heap in the throughput mix). The next incarnation reserves
//! at its activation as many entries as the last one recorded
//! ([`Blocks::reserve`]), so the writers' calls record without allocating
//! in steady state, into memory the allocator just had back, not into
//! blocks last touched an incarnation ago.

/// Entries in the first block; block `k` holds `FIRST << k` up to
/// `FIRST << LAST_DOUBLING` (2,048 entries, 48 KiB of replacement
/// records), and every later block as many. Doubling keeps a short list
/// small; the cap keeps every block below glibc's threshold for mapping an
/// allocation on its own (128 KiB), so a freed list's blocks go back to the
/// heap for the next one instead of being unmapped and faulted in anew.
pub(crate) const FIRST: usize = 16;
const LAST_DOUBLING: usize = 7;
/// Entries in the doubling blocks together.
const DOUBLING: usize = FIRST * ((1 << (LAST_DOUBLING + 1)) - 1);
/// Entries in every block after the doubling ones.
pub(crate) const MAX: usize = FIRST << LAST_DOUBLING;

/// The block of entry `index` and its place in the block: doubling block
/// `k` starts at `FIRST * (2^k - 1)`, the capped ones every `MAX` after
/// `DOUBLING`.
#[inline(always)]
fn locate(index: usize) -> (usize, usize) {
    if index < DOUBLING {
        let q = index / FIRST + 1;
        let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
        (k, index - FIRST * ((1 << k) - 1))
    } else {
        let rest = index - DOUBLING;
        (LAST_DOUBLING + 1 + rest / MAX, rest % MAX)
    }
}

/// The capacity of block `k`.
fn capacity(k: usize) -> usize {
    FIRST << k.min(LAST_DOUBLING)
}

/// An append-only list in blocks of growing size that never move.
#[derive(Debug)]
pub(crate) struct Blocks<T> {
    /// The blocks: those before the one holding entry `len` full, that one
    /// partly filled, any after it empty (reserved ahead). Block
    /// `k` has capacity [`capacity`]`(k)` and never holds more, so it never
    /// reallocates.
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Blocks {
            blocks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Blocks<T> {
    /// Appends `value`.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        let (k, _) = locate(self.len);
        if k == self.blocks.len() {
            self.grow();
        }
        self.blocks[k].push(value);
        self.len += 1;
    }

    /// A new empty block at the end (out of line: once per block, and
    /// never for entries [`reserve`](Self::reserve) made room for).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let k = self.blocks.len();
        self.blocks.push(Vec::with_capacity(capacity(k)));
    }

    /// Makes room for `n` entries in all, allocating the blocks they need
    /// that the list does not have yet.
    pub(crate) fn reserve(&mut self, n: usize) {
        if n > 0 {
            let (last, _) = locate(n - 1);
            while self.blocks.len() <= last {
                self.grow();
            }
        }
    }

    /// Appends every value of `values`.
    pub(crate) fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        values.into_iter().for_each(|v| self.push(v));
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entries the list's blocks have room for.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn capacity(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum()
    }

    /// The entries from index `start` on, in order. Visits only the blocks
    /// that hold them, not the empty ones reserved ahead (each
    /// a cache line of handle to read, for every shard the combiner's
    /// refresh looks at).
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        debug_assert!(start <= self.len);
        let (first, skip) = locate(start);
        let end = if start == self.len {
            first
        } else {
            locate(self.len - 1).0 + 1
        };
        self.blocks
            .get(first..end)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(i, block)| {
                block
                    .get(if i == 0 { skip } else { 0 }..)
                    .unwrap_or_default()
            })
    }

    /// Moves every entry, in order, to the end of `out`, leaving this list
    /// empty with its blocks freed.
    pub(crate) fn move_to(&mut self, out: &mut Vec<T>) {
        out.reserve(self.len);
        for mut block in std::mem::take(&mut self.blocks) {
            if block.is_empty() {
                break;
            }
            out.append(&mut block);
        }
        self.len = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn blocks_double_then_stay_and_cover_every_index_once() {
        let mut start = 0;
        for k in 0..40 {
            let cap = capacity(k);
            assert_eq!(cap, FIRST << k.min(LAST_DOUBLING));
            for offset in [0, 1, cap / 2, cap - 2, cap - 1] {
                assert_eq!(locate(start + offset), (k, offset), "block {k}");
            }
            start += cap;
        }
    }

    #[test]
    fn entries_keep_their_order_and_never_move() {
        let n = DOUBLING + 3 * MAX + 5;
        let mut list = Blocks::default();
        list.push(0usize);
        let first = list.iter_from(0).next().unwrap() as *const usize;
        list.extend(1..n);
        assert_eq!(list.len(), n);
        assert_eq!(list.iter_from(0).next().unwrap() as *const usize, first);
        for start in 0..=n {
            assert!(list.iter_from(start).copied().eq(start..n), "from {start}");
        }
    }

    #[test]
    fn moving_out_empties_the_list_and_frees_its_blocks() {
        let n = 7 * FIRST;
        let mut list = Blocks::default();
        list.extend(0..n);
        let mut out = vec![7];
        list.move_to(&mut out);
        assert_eq!(out.len(), n + 1);
        assert!(out[1..].iter().copied().eq(0..n));
        assert_eq!(list.len(), 0);
        assert!(list.blocks.is_empty(), "the blocks are freed");
        assert_eq!(list.iter_from(0).count(), 0);
        list.extend(100..100 + FIRST + 1);
        assert!(list.iter_from(0).copied().eq(100..100 + FIRST + 1));
        assert!(list.iter_from(FIRST + 1).next().is_none());
        let mut out = Vec::new();
        list.move_to(&mut out);
        assert!(out.into_iter().eq(100..100 + FIRST + 1));
    }

    #[test]
    fn reserved_entries_are_pushed_without_a_new_block() {
        for n in [0, 1, FIRST, FIRST + 1, DOUBLING, DOUBLING + MAX + 1] {
            let mut list = Blocks::default();
            list.reserve(n);
            let blocks: Vec<*const usize> = list.blocks.iter().map(|b| b.as_ptr()).collect();
            let expected = if n == 0 { 0 } else { locate(n - 1).0 + 1 };
            assert_eq!(blocks.len(), expected, "{n} entries");
            list.extend(0..n);
            let after: Vec<*const usize> = list.blocks.iter().map(|b| b.as_ptr()).collect();
            assert_eq!(after, blocks, "no block added or moved for {n} entries");
            assert!(list.iter_from(0).copied().eq(0..n));
            // Reserving what is there already allocates nothing more.
            list.reserve(n);
            assert_eq!(list.blocks.len(), expected);
        }
    }
}
