//! The metrics snapshot against runs whose figures the test knows: every
//! counter is what the test computes from the writes it made.

use std::sync::Arc;

use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Lsn, MemStorage, Metrics, PageId, Skip,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;
const PAGE: u64 = 128;
/// Pages per segment.
const PER: u64 = SS / PAGE;

/// A single-head writer that records where each page is.
struct Writer {
    acc: Accountant,
    lsn: Lsn,
    lid: u64,
    used: u64,
    pages: Vec<Option<DiskPtr>>,
}

impl Writer {
    fn new(config: Config) -> Writer {
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        let lid = acc.next(0).unwrap();
        Writer {
            acc,
            lsn: 0,
            lid,
            used: 0,
            pages: vec![None; 1024],
        }
    }

    /// Moves the head to a new segment, stabilizing everything before it.
    fn roll(&mut self) {
        self.lsn += L;
        self.acc.stabilize(self.lsn).unwrap();
        self.acc.flush();
        self.lid = self.acc.next(self.lsn).unwrap();
        self.used = 0;
    }

    /// Writes page `pid` in full (a new page or a rewrite).
    fn write(&mut self, pid: PageId) {
        if self.used + PAGE > SS {
            self.roll();
        }
        let ptr = DiskPtr::Inline(self.lid + self.used);
        let lsn = self.lsn + self.used as Lsn;
        self.used += PAGE;
        match self.pages[pid as usize] {
            None => self.acc.mark_link(pid, lsn, ptr, PAGE).unwrap(),
            Some(old) => self.acc.mark_replace(pid, lsn, &[old], ptr, PAGE).unwrap(),
        }
        self.pages[pid as usize] = Some(ptr);
    }

    /// Stabilizes everything written so far (the head included).
    fn stabilize_all(&mut self) -> Arc<Metrics> {
        self.roll();
        self.acc.metrics()
    }
}

fn config() -> segment_accountant::ConfigBuilder {
    Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
}

/// Two full segments, one of them rewritten whole (it empties and is
/// freed), then a third segment's worth of new pages, which reuses it: no
/// relocation, so WA is exactly 1, and every live byte sits in a full
/// segment, so space amplification is exactly 1.
#[test]
fn counters_match_a_run_without_cleaning() {
    let mut w = Writer::new(config().build().unwrap());
    let fresh = w.acc.metrics();
    assert_eq!((fresh.passes, fresh.user_bytes), (0, 0));
    assert_eq!(fresh.write_amplification(), 1.0);
    for pid in 0..2 * PER {
        w.write(pid);
    }
    // Segment 0's pages, rewritten: segment 0 empties.
    for pid in 0..PER {
        w.write(pid);
    }
    w.roll();
    // New pages: the head reuses segment 0.
    for pid in 2 * PER..3 * PER {
        w.write(pid);
    }
    let m = w.stabilize_all();
    assert_eq!(m.user_bytes, 4 * PER * PAGE);
    assert_eq!(m.user_pages, 4 * PER);
    assert_eq!(m.relocated_bytes, 0);
    assert_eq!(m.relocated_pages, 0);
    assert_eq!(m.bytes_written(), 4 * SS);
    assert_eq!(m.write_amplification(), 1.0);
    // Segments 0, 1, 2 appended, segment 0 reused for the fourth; the
    // head the last roll opens comes after the snapshot's pass.
    assert_eq!(m.segments_freed, 1);
    assert_eq!(m.segments_reused, 1);
    assert_eq!(m.segments_appended, 3, "{m:?}");
    assert_eq!(m.segments_sealed, 4, "{m:?}");
    assert_eq!(m.drains(), 0);
    assert_eq!(m.truncations, 0);
    assert_eq!(m.live_bytes, 3 * SS);
    assert_eq!(m.active_segments, 0);
    assert_eq!(m.file_bytes, 3 * SS);
    assert_eq!(m.space_amplification(), 1.0);
    assert!(m.passes > 0);
    // The snapshot is a snapshot: a later pass publishes a new one.
    let before = m.passes;
    w.roll();
    assert_eq!(w.acc.metrics().passes, before + 1);
    w.acc.audit().unwrap();
}

/// Rewriting most of a segment makes the policy drain it; every page
/// `clean` suggests is relocated. Relocated pages and bytes are exactly
/// the relocations made, user bytes exactly the user writes, and WA their
/// ratio.
#[test]
fn relocations_are_counted_and_make_the_write_amplification() {
    let mut w = Writer::new(config().cleanup_threshold(40).build().unwrap());
    for pid in 0..2 * PER {
        w.write(pid);
    }
    // Rewrite three quarters of segment 0: a quarter stays live there.
    for pid in 0..PER * 3 / 4 {
        w.write(pid);
    }
    let user_pages = 2 * PER + PER * 3 / 4;
    let mut relocations = 0u64;
    for _ in 0..100 {
        w.roll();
        while let Some(r) = w.acc.clean(Skip::Nothing) {
            w.write(r.pid);
            relocations += 1;
        }
        if relocations > 0 && w.acc.metrics().segments_freed > 0 {
            break;
        }
    }
    let m = w.stabilize_all();
    assert!(relocations > 0, "the policy drained nothing: {m:?}");
    assert_eq!(m.relocated_pages, relocations, "{m:?}");
    assert_eq!(m.relocated_bytes, relocations * PAGE);
    assert_eq!(m.user_pages, user_pages);
    assert_eq!(m.user_bytes, user_pages * PAGE);
    assert!(m.drains_policy + m.drains_tip >= 1, "{m:?}");
    let wa = (user_pages + relocations) as f64 / user_pages as f64;
    assert!((m.write_amplification() - wa).abs() < 1e-12, "{m:?}");
    w.acc.audit().unwrap();
}

/// With a relocation stream, relocations are what is written into its
/// segments.
#[test]
fn with_a_relocation_stream_relocations_are_its_writes() {
    let config = config().streams(1, 1).build().unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let user = acc.next_in(0, 0).unwrap();
    let moved = acc.next_in(L, 1).unwrap();
    for pid in 0..4 {
        acc.mark_link(pid, 0, DiskPtr::Inline(user + pid * PAGE), PAGE)
            .unwrap();
    }
    acc.mark_link(9, L, DiskPtr::Inline(moved), 3 * PAGE)
        .unwrap();
    acc.stabilize(2 * L).unwrap();
    let m = acc.metrics();
    assert_eq!((m.user_pages, m.user_bytes), (4, 4 * PAGE));
    assert_eq!((m.relocated_pages, m.relocated_bytes), (1, 3 * PAGE));
    assert!((m.write_amplification() - 7.0 / 4.0).abs() < 1e-12);
    assert_eq!(m.segments_appended, 2);
}
