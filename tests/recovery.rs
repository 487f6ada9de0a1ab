//! The accountant rebuilt from a snapshot: one test per rule of spec
//! section 7 and per rejection, plus the recovery defects of section 8.

use std::collections::BTreeMap;
use std::sync::Arc;

use segment_accountant::recovery::SnapshotError;
use segment_accountant::Skip;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Error, Fragment, MemStorage, PageState, SegmentState,
    Snapshot,
};

const SS: u64 = 4096;

fn config() -> Config {
    Config::builder().segment_size(SS).build().unwrap()
}

fn frag(lsn: i64, lid: u64, size: u64) -> Fragment {
    Fragment::new(lsn, DiskPtr::Inline(lid), size)
}

fn snapshot(
    pages: Vec<(u64, PageState)>,
    last_lid: Option<u64>,
    last_lsn: i64,
    stable: i64,
) -> Snapshot {
    Snapshot::new(
        pages.into_iter().collect::<BTreeMap<_, _>>(),
        last_lid,
        last_lsn,
        stable,
    )
}

fn recover(s: &Snapshot, file_len: u64) -> Result<Accountant, Error> {
    Accountant::from_snapshot(
        config(),
        Arc::new(MemStorage::new()),
        Collector::new(),
        s,
        file_len,
    )
}

fn state(acc: &Accountant, index: usize) -> SegmentState {
    acc.segment_info(index).unwrap().state
}

/// Rule 1: the tip is the file length rounded up to whole segments; a
/// partial last segment counts however few bytes it holds.
#[test]
fn rule_1_tip_from_file_length() {
    let empty = Snapshot::empty();
    assert_eq!(recover(&empty, 3 * SS).unwrap().tip(), 3 * SS);
    assert_eq!(recover(&empty, 3 * SS + 1).unwrap().tip(), 4 * SS);
    assert_eq!(recover(&empty, 3 * SS + 32).unwrap().tip(), 4 * SS);
    assert_eq!(recover(&empty, 0).unwrap().tip(), 0);
}

/// Rule 2: every segment with a live fragment gets the fragment's segment
/// lsn and the page; live bytes are summed (several fragments of one page
/// count once as a page).
#[test]
fn rule_2_segments_rebuilt_from_fragments() {
    let s = snapshot(
        vec![
            (
                1,
                PageState::Present(vec![frag(10, 10, 100), frag(50, 50, 30)]),
            ),
            (
                2,
                PageState::Present(vec![frag(SS as i64 + 5, SS + 5, 200)]),
            ),
            (3, PageState::Freed(frag(SS as i64 + 300, SS + 300, 32))),
        ],
        Some(SS),
        SS as i64 + 400,
        -1,
    );
    let acc = recover(&s, 2 * SS).unwrap();
    let s0 = acc.segment_info(0).unwrap();
    assert_eq!(
        (s0.state, s0.lsn, s0.live_pages, s0.live_bytes),
        (SegmentState::Active, Some(0), 1, 130)
    );
    let s1 = acc.segment_info(1).unwrap();
    assert_eq!(
        (s1.lsn, s1.live_pages, s1.live_bytes),
        (Some(SS as i64), 2, 232)
    );
    assert_eq!(acc.segment_pages(1), vec![(2, 200), (3, 32)]);
    assert_eq!(acc.segment_not_yet_replaced(1), vec![2, 3]);
    acc.audit().unwrap();
}

/// Rejections: a fragment beyond the file, two segments with one lsn, a
/// page in a segment whose other fragments have another base lsn, a last
/// segment beyond the file, a negative lsn. Nothing is built.
#[test]
fn contradictory_snapshots_are_rejected() {
    let beyond = snapshot(
        vec![(1, PageState::Present(vec![frag(0, 2 * SS, 10)]))],
        None,
        0,
        -1,
    );
    assert!(matches!(
        recover(&beyond, 2 * SS),
        Err(Error::InvalidSnapshot(SnapshotError::FragmentBeyondTip {
            pid: 1,
            ..
        }))
    ));

    let duplicate = snapshot(
        vec![
            (1, PageState::Present(vec![frag(5, 5, 10)])),
            (2, PageState::Present(vec![frag(6, SS + 6, 10)])),
        ],
        None,
        6,
        -1,
    );
    assert!(matches!(
        recover(&duplicate, 2 * SS),
        Err(Error::InvalidSnapshot(SnapshotError::DuplicateSegmentLsn {
            lsn: 0,
            ..
        }))
    ));

    let mixed = snapshot(
        vec![
            (1, PageState::Present(vec![frag(5, 5, 10)])),
            (2, PageState::Present(vec![frag(SS as i64 + 6, 6, 10)])),
        ],
        None,
        SS as i64 + 6,
        -1,
    );
    assert!(matches!(
        recover(&mixed, 2 * SS),
        Err(Error::InvalidSnapshot(SnapshotError::MixedSegmentLsns {
            pid: 2,
            ..
        }))
    ));

    let vouched_beyond = snapshot(vec![], None, 100, 2 * SS as i64);
    assert!(matches!(
        recover(&vouched_beyond, 3 * SS),
        Err(Error::InvalidSnapshot(
            SnapshotError::StableBeyondLog { .. }
        ))
    ));

    let last_beyond = snapshot(vec![], Some(5 * SS), 0, -1);
    assert!(matches!(
        recover(&last_beyond, 2 * SS),
        Err(Error::InvalidSnapshot(
            SnapshotError::LastSegmentBeyondTip { .. }
        ))
    ));

    let negative = snapshot(
        vec![(1, PageState::Present(vec![frag(-5, 5, 10)]))],
        None,
        0,
        -1,
    );
    assert!(matches!(
        recover(&negative, 2 * SS),
        Err(Error::InvalidSnapshot(SnapshotError::InvalidLsn {
            pid: 1,
            lsn: -5
        }))
    ));
}

/// Rule 3 and the first defect of section 8: stable segments (wholly below
/// the header-vouched stable lsn) other than the last one written start
/// Draining only when they hold at most threshold × segment size of live
/// bytes; the source design compared with segment_size × 100 / threshold
/// and drained every stable segment.
#[test]
fn rule_3_only_sparse_stable_segments_start_draining() {
    let full = SS * 9 / 10; // 90% live: kept
    let sparse = SS / 10; // 10% live: drained
    let s = snapshot(
        vec![
            (1, PageState::Present(vec![frag(0, 0, full)])),
            (2, PageState::Present(vec![frag(SS as i64, SS, sparse)])),
            (
                3,
                PageState::Present(vec![frag(2 * SS as i64, 2 * SS, sparse)]),
            ),
            (
                4,
                PageState::Present(vec![frag(3 * SS as i64, 3 * SS, sparse)]),
            ),
        ],
        Some(2 * SS),
        3 * SS as i64 + 10,
        3 * SS as i64, // vouches for segments 0, 1, 2
    );
    let acc = recover(&s, 4 * SS).unwrap();
    assert_eq!(
        state(&acc, 0),
        SegmentState::Inactive,
        "a mostly live segment is not drained"
    );
    assert_eq!(state(&acc, 1), SegmentState::Draining);
    assert_eq!(
        state(&acc, 2),
        SegmentState::Inactive,
        "the last segment written is not drained"
    );
    assert_eq!(
        state(&acc, 3),
        SegmentState::Active,
        "above the vouched lsn: not yet stable"
    );
    assert_eq!(acc.stable_lsn(), 2 * SS as i64);
    assert_eq!(acc.clean(Skip::Page(0)).map(|r| r.pid), Some(2));
    acc.audit().unwrap();
}

/// Rule 4 and the second defect of section 8: segments with no live
/// fragment are free, but reusable only once stabilize passes the last
/// lsn; an empty top segment is never handed out while Active, and empty
/// segments below the top are not stranded.
#[test]
fn rule_4_empty_segments_freed_after_the_tail_is_stable() {
    // Segments 0 and 2 empty (2 is the top), segment 1 live.
    let s = snapshot(
        vec![(1, PageState::Present(vec![frag(SS as i64 + 8, SS + 8, 50)]))],
        Some(SS),
        SS as i64 + 8,
        -1,
    );
    let acc = recover(&s, 3 * SS).unwrap();
    assert_eq!(state(&acc, 0), SegmentState::Freeing);
    assert_eq!(state(&acc, 2), SegmentState::Freeing);
    acc.audit().unwrap();
    // Not reusable yet: next extends the file.
    let lid = acc.next(2 * SS as i64).unwrap();
    assert_eq!(lid, 3 * SS);
    // The header of that segment vouches for everything below it.
    acc.stabilize(3 * SS as i64).unwrap();
    assert_eq!(acc.flush(), 0);
    assert_eq!(state(&acc, 0), SegmentState::Free);
    assert_eq!(state(&acc, 2), SegmentState::Free);
    // Reuse goes to the lowest free segment, never to an Active one.
    let lid = acc.next(3 * SS as i64).unwrap();
    assert_eq!(lid, 0);
    acc.audit().unwrap();
}

/// Rule 6: recovered segments above the vouched lsn stay Active until the
/// first stabilize deactivates them, in lsn order; recovery is repeatable
/// (the same snapshot builds the same accountant).
#[test]
fn rule_6_active_until_stabilize() {
    // Segment lsns deliberately not in file order.
    let s = snapshot(
        vec![
            (1, PageState::Present(vec![frag(2 * SS as i64, 0, 40)])),
            (2, PageState::Present(vec![frag(SS as i64, SS, 40)])),
        ],
        Some(0),
        2 * SS as i64 + 40,
        -1,
    );
    let acc = recover(&s, 2 * SS).unwrap();
    assert_eq!(acc.stable_lsn(), -1);
    assert_eq!(state(&acc, 0), SegmentState::Active);
    assert_eq!(state(&acc, 1), SegmentState::Active);
    acc.stabilize(2 * SS as i64).unwrap(); // covers lsn SS only: segment 1
    assert_eq!(state(&acc, 1), SegmentState::Draining);
    assert_eq!(state(&acc, 0), SegmentState::Active);
    acc.stabilize(3 * SS as i64).unwrap();
    assert_ne!(state(&acc, 0), SegmentState::Active);
    acc.audit().unwrap();

    let again = recover(&s, 2 * SS).unwrap();
    let first = recover(&s, 2 * SS).unwrap();
    for i in 0..2 {
        assert_eq!(first.segment_info(i), again.segment_info(i));
        assert_eq!(first.segment_pages(i), again.segment_pages(i));
    }
}

/// A recovered accountant accepts new writes and replacements of recovered
/// pages; the replacement empties the recovered segment, which is freed.
#[test]
fn recovered_pages_can_be_replaced() {
    // Segment 1 (lsn SS) holds only a header vouching for segment 0.
    let s = snapshot(
        vec![(7, PageState::Present(vec![frag(16, 16, 64)]))],
        Some(SS),
        SS as i64 + 31,
        SS as i64,
    );
    let acc = recover(&s, 2 * SS).unwrap();
    assert_eq!(state(&acc, 0), SegmentState::Draining);
    assert_eq!(state(&acc, 1), SegmentState::Freeing);
    assert_eq!(acc.clean(Skip::Page(0)).map(|r| r.pid), Some(7));
    let lid = acc.next(2 * SS as i64).unwrap();
    assert_eq!(lid, 2 * SS, "nothing reusable before the tail is stable");
    acc.mark_replace(
        7,
        2 * SS as i64,
        &[DiskPtr::Inline(16)],
        DiskPtr::Inline(lid),
        64,
    )
    .unwrap();
    acc.stabilize(3 * SS as i64).unwrap();
    assert_eq!(acc.segment_info(0).unwrap().live_pages, 0);
    assert!(matches!(
        state(&acc, 0),
        SegmentState::Freeing | SegmentState::Free
    ));
    acc.flush();
    acc.audit().unwrap();
}
