//! The recovery scanner on hand-built logs: trusted segments, the unstable
//! tail, tears, gaps, duplicates, stale segments, and a single torn write
//! at the last segment.

use std::sync::Arc;

use segment_accountant::fault::FaultStorage;
use segment_accountant::format::{invalidate_header, MessageKind, SegmentBuilder};
use segment_accountant::scan::{scan, ScanError};
use segment_accountant::{Accountant, Collector, Config, Lsn, MemStorage, PageState, Storage};

const SS: u64 = 256;
const L: Lsn = SS as Lsn;

/// Writes a segment at `lid` with lsn `lsn`, vouching `stable`, holding
/// full images of `pids`.
fn segment(storage: &dyn Storage, lid: u64, lsn: Lsn, stable: Lsn, pids: &[(u64, MessageKind)]) {
    let mut b = SegmentBuilder::new(SS, lsn, stable);
    for &(pid, kind) in pids {
        let payload = if kind == MessageKind::Free {
            vec![]
        } else {
            vec![pid as u8; 10]
        };
        b.append(kind, pid, &payload).unwrap();
    }
    storage.write_at(lid, &b.finish()).unwrap();
}

fn present(scan: &segment_accountant::scan::Scan, pid: u64) -> Option<Lsn> {
    match scan.snapshot.pages.get(&pid) {
        Some(PageState::Present(f)) => Some(f[0].lsn),
        _ => None,
    }
}

use MessageKind::{Free, Full};

#[test]
fn empty_file() {
    let s = scan(&MemStorage::new(), SS).unwrap();
    assert!(s.snapshot.pages.is_empty());
    assert_eq!(
        (s.resume_lsn, s.snapshot.last_lid, s.snapshot.last_lsn),
        (0, None, -1)
    );
}

/// Trusted segments, then a consecutive tail that ends at a gap: segments
/// past the gap are discarded and never surface.
#[test]
fn tail_stops_at_a_gap() {
    let st = MemStorage::new();
    segment(&st, 0, 0, 0, &[(1, Full)]);
    segment(&st, SS, L, L, &[(2, Full)]); // vouches for segment 0
    segment(&st, 2 * SS, 2 * L, L, &[(3, Full)]); // tail, consecutive
    segment(&st, 3 * SS, 4 * L, L, &[(4, Full)]); // after a gap at 3L
    let s = scan(&st, SS).unwrap();
    assert_eq!(s.snapshot.max_header_stable_lsn, L);
    assert!(present(&s, 1).is_some() && present(&s, 2).is_some() && present(&s, 3).is_some());
    assert_eq!(present(&s, 4), None, "past the gap");
    assert_eq!(s.discarded, vec![3 * SS]);
    assert_eq!(s.resume_lsn, 3 * L);
    assert_eq!(s.snapshot.last_lid, Some(2 * SS));
}

/// Must show: with a single torn write at the last segment, the earlier
/// segments' pages all survive; the torn segment is discarded whole.
#[test]
fn single_torn_write_at_the_last_segment() {
    for seed in 0..32 {
        let st = FaultStorage::restart(Vec::new(), seed);
        for i in 0..4u64 {
            segment(
                &st,
                i * SS,
                i as Lsn * L,
                i as Lsn * L,
                &[(10 * i + 1, Full), (10 * i + 2, Full)],
            );
        }
        st.sync().unwrap();
        st.crash_after(1);
        let mut b = SegmentBuilder::new(SS, 4 * L, 4 * L);
        b.append(Full, 41, &[7; 60]).unwrap();
        b.append(Full, 1, &[8; 50]).unwrap(); // would replace page 1
        assert!(
            st.write_at(4 * SS, &b.finish()).is_err(),
            "the write crashes"
        );
        let image = st.crash_image();
        let mem = MemStorage::new();
        mem.write_at(0, &image).unwrap();
        let s = scan(&mem, SS).unwrap();
        for i in 0..4 {
            for p in [10 * i + 1, 10 * i + 2] {
                assert!(present(&s, p).is_some(), "seed {seed}: page {p} lost");
            }
        }
        assert_eq!(present(&s, 1), Some(32), "seed {seed}: torn data surfaced");
        assert_eq!(present(&s, 41), None, "seed {seed}: torn data surfaced");
        // And the accountant accepts it.
        let config = Config::builder()
            .segment_size(SS)
            .allow_small_segments(true)
            .build()
            .unwrap();
        let acc = Accountant::from_snapshot(
            config,
            Arc::new(MemStorage::new()),
            Collector::new(),
            &s.snapshot,
            s.file_len,
        )
        .unwrap();
        acc.audit().unwrap();
    }
}

/// A segment freed and not reused still sits in the trusted region with
/// old images: replay in lsn order keeps them from resurrecting.
#[test]
fn stale_segments_do_not_resurrect_pages() {
    let st = MemStorage::new();
    segment(&st, 0, 0, 0, &[(1, Full), (2, Full)]); // stale
    segment(&st, SS, L, 0, &[(1, Full), (2, Free)]);
    segment(&st, 2 * SS, 2 * L, 2 * L, &[]);
    let s = scan(&st, SS).unwrap();
    assert_eq!(present(&s, 1), Some(L + 32));
    assert!(matches!(
        s.snapshot.pages.get(&2),
        Some(PageState::Freed(_))
    ));
}

#[test]
fn duplicate_lsns_are_an_error() {
    let st = MemStorage::new();
    segment(&st, 0, 0, 0, &[(1, Full)]);
    segment(&st, SS, 0, 0, &[(2, Full)]);
    assert!(matches!(
        scan(&st, SS),
        Err(ScanError::DuplicateLsn { lsn: 0, .. })
    ));
}

/// Invalidated headers are not segments; rescanning after invalidating the
/// discarded tail gives the same snapshot (recovery is idempotent).
#[test]
fn invalidation_makes_discarded_segments_invisible() {
    let st = MemStorage::new();
    segment(&st, 0, 0, 0, &[(1, Full)]);
    segment(&st, SS, L, 0, &[(2, Full)]);
    // A torn segment at 2L, then a valid one at 3L past it.
    let mut torn = SegmentBuilder::new(SS, 2 * L, L).finish();
    torn[100] ^= 0xff;
    st.write_at(2 * SS, &torn).unwrap();
    segment(&st, 3 * SS, 3 * L, L, &[(3, Full)]);
    let first = scan(&st, SS).unwrap();
    assert_eq!(first.discarded, vec![2 * SS, 3 * SS]);
    for &lid in &first.discarded {
        invalidate_header(&st, lid, SS, first.snapshot.max_header_stable_lsn).unwrap();
    }
    let second = scan(&st, SS).unwrap();
    assert_eq!(second.snapshot, first.snapshot);
    assert!(second.discarded.is_empty());
    assert_eq!(present(&second, 3), None);
}

/// A corrupt segment below the vouched stable lsn is reported, not guessed
/// around.
#[test]
fn corrupt_stable_segment_is_reported() {
    let st = MemStorage::new();
    segment(&st, 0, 0, 0, &[(1, Full)]);
    segment(&st, SS, L, L, &[(2, Full)]);
    st.write_at(40, &[0xee; 8]).unwrap();
    assert!(matches!(
        scan(&st, SS),
        Err(ScanError::CorruptStableSegment { lid: 0, .. })
    ));
}
