//! The recovery scanner on hand-built logs: trusted segments, the unstable
//! tail, tears, gaps, duplicates, stale segments, and a single torn write
//! at the last segment.

use std::sync::Arc;

use segment_accountant::fault::FaultStorage;
use segment_accountant::format::{
    invalidate_header, read_message_at, seal_segment, walk_segment, MessageKind, SegmentBuilder,
};
use segment_accountant::scan::{scan, ScanError};
use segment_accountant::{
    Accountant, Collector, Config, LogFile, Lsn, MemStorage, PageState, Storage,
};

const SS: u64 = 256;
const L: Lsn = SS as Lsn;

/// Writes a segment at `lid` with lsn `lsn`, vouching `stable`, holding
/// full images of `pids`.
fn segment(storage: &dyn LogFile, lid: u64, lsn: Lsn, stable: Lsn, pids: &[(u64, MessageKind)]) {
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
/// segments' pages all survive; of the torn segment only messages that
/// reached the disk whole surface, and each reads back intact.
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
        // Page 41 and page 1's replacement surface only as whole messages,
        // in order: 1's replacement never without 41 before it.
        let p41 = present(&s, 41);
        let p1 = present(&s, 1);
        assert!(p41.is_none() || p41 == Some(4 * L + 32), "seed {seed}");
        assert!(
            p1 == Some(32) || (p1 == Some(4 * L + 32 + 92) && p41.is_some()),
            "seed {seed}: page 1 at {p1:?}"
        );
        for (pid, state) in &s.snapshot.pages {
            for f in state.fragments() {
                let (h, _) = read_message_at(&mem, f.ptr.lid(), f.size)
                    .unwrap_or_else(|e| panic!("seed {seed}: page {pid} torn: {e}"));
                assert_eq!((h.pid, h.lsn), (*pid, f.lsn), "seed {seed}");
            }
        }
        if p41.is_some() {
            assert!(
                s.open_tail.is_some(),
                "seed {seed}: the torn segment is open"
            );
        }
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
    // The torn segment's header is intact: it is the log's last segment,
    // open (nothing valid after its header); the one past it is discarded.
    assert_eq!(first.discarded, vec![3 * SS]);
    let tail = first.open_tail.expect("an open tail");
    assert_eq!((tail.lid, tail.lsn, tail.end), (2 * SS, 2 * L, 32));
    for &lid in &first.discarded {
        invalidate_header(&st, lid, SS, first.snapshot.max_header_stable_lsn).unwrap();
    }
    seal_segment(&st, tail.lid, SS, tail.lsn, tail.salt, tail.end).unwrap();
    let second = scan(&st, SS).unwrap();
    assert_eq!(second.snapshot, first.snapshot);
    assert!(second.discarded.is_empty());
    assert_eq!(second.open_tail, None);
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

/// Must show: a segment made durable half full (header, messages, a sync),
/// then appended to in a second write, recovers with both parts; a crash
/// between the two recovers the first part alone, and recovery completes
/// that segment so that nothing written after it in the old incarnation
/// can surface later.
#[test]
fn a_segment_made_durable_half_full_then_appended_to() {
    const SS2: u64 = 512;
    let config = Config::builder()
        .segment_size(SS2)
        .allow_small_segments(true)
        .build()
        .unwrap();
    let mut b = SegmentBuilder::new(SS2, 0, -1);
    b.append(Full, 1, &[1; 30]).unwrap();
    b.append(Full, 2, &[2; 30]).unwrap();
    let first_part = b.written().len();
    let st = FaultStorage::restart(Vec::new(), 5);
    st.write_at(0, b.written()).unwrap();
    st.sync().unwrap();
    // Durable half full: both pages recover, the segment is the open tail.
    let mem = MemStorage::new();
    mem.write_at(0, &st.crash_image()).unwrap();
    let s = scan(&mem, SS2).unwrap();
    assert_eq!((present(&s, 1), present(&s, 2)), (Some(32), Some(94)));
    assert_eq!(s.open_tail.map(|t| t.end), Some(first_part as u64));
    // Appended to: a checkpoint vouching for the first part, a third page,
    // a replacement of page 1; written after the first part.
    b.checkpoint(first_part as Lsn).unwrap();
    b.append(Full, 3, &[3; 30]).unwrap();
    b.append(Full, 1, &[4; 30]).unwrap();
    let st = FaultStorage::restart(st.crash_image(), 6);
    st.write_at(first_part as u64, &b.written()[first_part..])
        .unwrap();
    st.sync().unwrap();
    let mem = MemStorage::new();
    mem.write_at(0, &st.crash_image()).unwrap();
    let s = scan(&mem, SS2).unwrap();
    assert_eq!(
        s.snapshot.max_header_stable_lsn, first_part as Lsn,
        "the checkpoint counts"
    );
    assert_eq!(present(&s, 2), Some(94));
    assert!(present(&s, 3).is_some());
    assert_eq!(
        present(&s, 1),
        Some(b.written().len() as Lsn - 62),
        "the replacement"
    );
    // Recovery completes the segment; the file then scans the same, and
    // the segment is complete.
    let storage: Arc<dyn LogFile> = Arc::new(mem);
    let (acc, found) = Accountant::recover(config, storage.clone(), Collector::new()).unwrap();
    assert_eq!(found.snapshot, s.snapshot);
    acc.audit().unwrap();
    let again = scan(&*storage, SS2).unwrap();
    assert_eq!((again.snapshot, again.open_tail), (s.snapshot, None));
    let mut bytes = vec![0; SS2 as usize];
    storage.read_at(0, &mut bytes).unwrap();
    assert!(walk_segment(&bytes, SS2).unwrap().complete);
}

/// A segment whose second part was lost but a later part reached the disk
/// (writes persist out of order): the later part never surfaces, and after
/// recovery's pad it never can.
#[test]
fn a_lost_middle_part_hides_what_follows_it() {
    let mut b = SegmentBuilder::new(SS, 0, -1);
    b.append(Full, 1, &[1; 30]).unwrap();
    let a = b.written().len();
    b.append(Full, 2, &[2; 30]).unwrap();
    let m = b.written().len();
    b.append(Full, 3, &[3; 30]).unwrap();
    let st = MemStorage::new();
    st.write_at(0, &b.written()[..a]).unwrap();
    st.write_at(m as u64, &b.written()[m..]).unwrap(); // the middle is lost
    let s = scan(&st, SS).unwrap();
    assert!(present(&s, 1).is_some());
    assert_eq!((present(&s, 2), present(&s, 3)), (None, None));
    let tail = s.open_tail.unwrap();
    assert_eq!(tail.end, a as u64);
    seal_segment(&st, tail.lid, SS, tail.lsn, tail.salt, tail.end).unwrap();
    // Even if the middle arrives now, the pad hides it and what follows.
    let again = scan(&st, SS).unwrap();
    assert_eq!(again.snapshot, s.snapshot);
    assert_eq!(again.open_tail, None);
}

/// A checkpoint in the log vouches like a header: segments wholly below it
/// are trusted (a gap among them is a reused segment), and the tail walk
/// starts at the checkpoint's segment.
#[test]
fn checkpoints_vouch_like_headers() {
    let st = MemStorage::new();
    segment(&st, 0, 0, -1, &[(1, Full)]);
    // lsn L is missing (reused): only a checkpoint past it makes that a
    // trusted gap rather than the end of the log.
    let mut b = SegmentBuilder::new(SS, 2 * L, -1);
    b.append(Full, 2, &[2; 10]).unwrap();
    b.checkpoint(2 * L).unwrap();
    st.write_at(2 * SS, &b.finish()).unwrap();
    let s = scan(&st, SS).unwrap();
    assert_eq!(s.snapshot.max_header_stable_lsn, 2 * L);
    assert!(present(&s, 1).is_some() && present(&s, 2).is_some());
    assert!(s.discarded.is_empty());
    // Without the checkpoint, the segment past the gap is discarded.
    let st = MemStorage::new();
    segment(&st, 0, 0, -1, &[(1, Full)]);
    segment(&st, 2 * SS, 2 * L, -1, &[(2, Full)]);
    let s = scan(&st, SS).unwrap();
    assert_eq!(s.discarded, vec![2 * SS]);
}

/// Why a store writes a segment's later pieces only once the piece with
/// its header is durable: a later piece of a new incarnation that reached
/// the disk while its header piece did not lies inside the previous
/// incarnation, under that one's header; below the vouched lsn that reads
/// as a damaged stable segment. With the header piece durable first, the
/// new header is what the scanner sees.
#[test]
fn a_later_piece_without_its_header_piece_damages_the_old_incarnation() {
    let st = MemStorage::new();
    // Incarnation 1 of lid 0 (lsn 0), complete; segment L vouches for it.
    let mut old = SegmentBuilder::new(SS, 0, -1);
    old.append(Full, 1, &[1; 60]).unwrap();
    old.append(Full, 2, &[2; 60]).unwrap();
    st.write_at(0, &old.finish()).unwrap();
    segment(&st, SS, L, L, &[(3, Full)]);
    // Incarnation 2 of lid 0 (lsn 2L, after lid 0 was freed): only its
    // second piece reached the disk.
    let mut new = SegmentBuilder::new(SS, 2 * L, L);
    new.append(Full, 4, &[4; 40]).unwrap();
    let cut = new.written().len();
    new.append(Full, 5, &[5; 40]).unwrap();
    let second_piece = new.written()[cut..].to_vec();
    let damaged = MemStorage::new();
    damaged.write_at(0, &st.contents()).unwrap();
    damaged.write_at(cut as u64, &second_piece).unwrap();
    assert!(matches!(
        scan(&damaged, SS),
        Err(ScanError::CorruptStableSegment { lid: 0, .. })
    ));
    // The header piece first (durable), then the second: the new
    // incarnation is what the scanner finds.
    st.write_at(0, &new.written()[..cut]).unwrap();
    st.write_at(cut as u64, &second_piece).unwrap();
    let s = scan(&st, SS).unwrap();
    assert!(present(&s, 4).is_some() && present(&s, 5).is_some());
    assert_eq!(present(&s, 1), None);
}

/// A log of `segments` segments of `ss` bytes in `storage`, each vouching
/// for the one before, segment `i` holding a full image of page `i` and
/// one of page `1_000_000 + i`.
fn long_log(storage: &dyn LogFile, ss: u64, segments: u64) {
    for i in 0..segments {
        let lsn = (i * ss) as Lsn;
        let mut b = SegmentBuilder::new(ss, lsn, lsn);
        b.append(Full, i, &[i as u8; 100]).unwrap();
        b.append(Full, 1_000_000 + i, &[7; 100]).unwrap();
        storage.write_at(i * ss, &b.finish()).unwrap();
    }
}

/// A log of several reads' worth (`scan::read_size`), so that segments are
/// walked out of more than one buffer: it scans to exactly the pages
/// written, each at its segment's lsn.
#[test]
fn a_log_of_several_reads_scans_whole() {
    let ss = 64 << 10;
    let segments = 3 * segment_accountant::scan::read_size(ss) / ss + 7;
    let st = MemStorage::new();
    long_log(&st, ss, segments);
    let s = scan(&st, ss).unwrap();
    assert_eq!(s.snapshot.pages.len() as u64, 2 * segments);
    for i in 0..segments {
        assert_eq!(present(&s, i), Some((i * ss) as Lsn + 32), "page {i}");
        assert!(present(&s, 1_000_000 + i).is_some());
    }
    assert_eq!(s.snapshot.last_lid, Some((segments - 1) * ss));
    assert_eq!(s.resume_lsn, (segments * ss) as Lsn);
}

/// A read that fails in a later read of the file ends the scan with that
/// error; once the fault is used up, the same log scans whole.
#[test]
fn a_failed_read_past_the_first_is_the_scans_error() {
    let ss = 64 << 10;
    let reads = segment_accountant::scan::read_size(ss);
    let st = FaultStorage::restart(Vec::new(), 1);
    long_log(&st, ss, 3 * reads / ss);
    st.fail_read_at(reads + 5);
    match scan(&st, ss) {
        Err(ScanError::Io(e)) => assert!(e.to_string().contains("injected read error"), "{e}"),
        other => panic!(
            "expected the read error, got {:?}",
            other.map(|s| s.resume_lsn)
        ),
    }
    // The fault was used up: the same log now scans whole.
    assert_eq!(
        scan(&st, ss).unwrap().snapshot.pages.len() as u64,
        2 * (3 * reads / ss)
    );
}

/// A storage whose `read_at` panics in a later read: the panic comes out
/// of `scan` with its own payload (the scanner runs no callback of the
/// accountant's, so it contains nothing: the caller of `scan` owns the
/// storage), and nothing hangs.
#[test]
fn a_panicking_read_comes_out_of_scan_with_its_payload() {
    let ss = 64 << 10;
    let reads = segment_accountant::scan::read_size(ss);
    let st = FaultStorage::restart(Vec::new(), 1);
    long_log(&st, ss, 3 * reads / ss);
    st.panic_read_at(2 * reads + 1);
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&st, ss)))
        .map(|s| s.map(|s| s.resume_lsn))
        .expect_err("the panic comes out of scan");
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("injected panic in read_at")
    );
}
