//! The table-size workload, shared by the criterion group `table_size`
//! and the paired tool `examples/table_size.rs`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segment_accountant::{
    Accountant, BlobId, Collector, Config, DiskPtr, Fragment, Lid, Lsn, PageId, PageState,
    Snapshot, Storage,
};

/// A storage that only keeps the file's length (the table-size group
/// never reads or writes data).
#[derive(Default)]
pub struct LengthOnly(AtomicU64);

impl Storage for LengthOnly {
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.store(len, Ordering::Relaxed);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.load(Ordering::Relaxed))
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn remove_blob(&self, _: BlobId) -> io::Result<()> {
        Ok(())
    }
}

/// The segment size of the table-size group: the smallest the
/// configuration allows without `allow_small_segments`.
pub const TABLE_SS: u64 = 4096;
/// Each page's one fragment: 3/4 of a segment, above the cleanup
/// threshold, so recovered segments start Inactive (not Draining).
pub const TABLE_FRAGMENT: u64 = TABLE_SS * 3 / 4;

/// An accountant with a table of `segments` segments in use, in a steady
/// state of reuse.
///
/// Built with `Accountant::from_snapshot` from a snapshot in which page
/// `i` lives in segment `i` (lsn `i × segment size`), except that segment
/// `N − 2` is empty. Page `N − 3` is the hot page: each cycle
/// [`cycle`](Self::cycle) claims a segment with `next`, rewrites the hot
/// page into it with `mark_replace`, seals it with `stabilize` (the old
/// segment empties and is freed through the collector) and `flush`es the
/// free through. The hot page so alternates between segments `N − 3` and
/// `N − 2`, every `next` is on the reuse path, and the two free segments
/// sit at the top of a table whose other segments are all in use (segment
/// `N − 1` too, so the file never shrinks): the worst place for a search
/// that starts at segment 0, the usual one for a store whose old data is
/// long-lived.
pub struct Table {
    acc: Accountant,
    segments: u64,
    hot: PageId,
    at: DiskPtr,
    next_lsn: Lsn,
}

impl Table {
    /// The table of `segments` segments, run into its steady state.
    pub fn build(segments: u64) -> Table {
        assert!(segments >= 4);
        let ss = TABLE_SS;
        let mut pages = BTreeMap::new();
        for i in (0..segments).filter(|&i| i != segments - 2) {
            let at = i * ss + 64;
            pages.insert(
                i,
                PageState::Present(vec![Fragment::new(
                    at as Lsn,
                    DiskPtr::Inline(at),
                    TABLE_FRAGMENT,
                )]),
            );
        }
        let end = (segments * ss) as Lsn;
        let snapshot = Snapshot::new(pages, Some((segments - 1) * ss), end - 1, end);
        let config = Config::builder().segment_size(ss).build().unwrap();
        let acc = Accountant::from_snapshot(
            config,
            Arc::new(LengthOnly::default()),
            Collector::new(),
            &snapshot,
            segments * ss,
        )
        .unwrap();
        let hot = segments - 3;
        let mut table = Table {
            acc,
            segments,
            hot,
            at: DiskPtr::Inline(hot * ss + 64),
            next_lsn: end,
        };
        // The first cycles extend the file (the empty segment becomes
        // reusable only once `stabilize` has passed the snapshot's end) and
        // shrink it back; after them every `next` reuses one of the two.
        for _ in 0..4 {
            table.cycle(false);
        }
        for _ in 0..4 {
            table.cycle(true);
        }
        table
    }

    /// One `next` / `mark_replace` / `stabilize` / `flush` cycle; the time
    /// of `next`, `stabilize` and `flush`. With `steady`, checks that
    /// `next` reused one of the two hot segments.
    pub fn cycle(&mut self, steady: bool) -> [Duration; 3] {
        let ss = TABLE_SS;
        let lsn = self.next_lsn;
        let t0 = Instant::now();
        let lid: Lid = self.acc.next(lsn).unwrap();
        let next = t0.elapsed();
        if steady {
            let index = lid / ss;
            assert!(
                index == self.segments - 3 || index == self.segments - 2,
                "next is off the reuse path: segment {index} of {} (tip {})",
                self.segments,
                self.acc.tip() / ss
            );
        }
        let ptr = DiskPtr::Inline(lid + 64);
        self.acc
            .mark_replace(self.hot, lsn + 64, &[self.at], ptr, TABLE_FRAGMENT)
            .unwrap();
        self.at = ptr;
        let t1 = Instant::now();
        self.acc.stabilize(lsn + ss as Lsn).unwrap();
        let stabilize = t1.elapsed();
        let t2 = Instant::now();
        black_box(self.acc.flush());
        let flush = t2.elapsed();
        self.next_lsn += ss as Lsn;
        [next, stabilize, flush]
    }
}
