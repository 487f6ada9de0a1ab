//! Caller mistakes return a typed error and change nothing: an operation
//! naming an earlier generation of a reused segment, a lid at or beyond the
//! tip, an lsn that does not match the segment's base lsn, and the rest of
//! the mistakes the specification lists.

use std::sync::Arc;

use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Error, Lsn, MemStorage, SegmentInfo, SegmentState,
    Stats,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;

type Picture = (Stats, Vec<(Option<SegmentInfo>, Vec<(u64, u64)>, Vec<u64>)>);

/// Everything observable about the accountant.
fn picture(acc: &Accountant) -> Picture {
    let segments = (0..8)
        .map(|i| {
            (
                acc.segment_info(i),
                acc.segment_pages(i),
                acc.segment_not_yet_replaced(i),
            )
        })
        .collect();
    (acc.stats(), segments)
}

/// Segment 0 (lsn 0) had page 1, replaced into segment 1 (lsn L); segment
/// 0 was freed and reused at lsn 2L, where page 2 lives. Segment 1 holds
/// page 1 and is sealed.
fn reused() -> Accountant {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 10, DiskPtr::Inline(s0 + 10), 100).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_replace(1, L, &[DiskPtr::Inline(s0 + 10)], DiskPtr::Inline(s1), 100)
        .unwrap();
    acc.stabilize(2 * L).unwrap();
    acc.flush();
    assert_eq!(acc.segment_info(0).unwrap().state, SegmentState::Free);
    let again = acc.next(2 * L).unwrap();
    assert_eq!(again, s0, "the lowest free segment is reused");
    acc.mark_link(2, 2 * L + 5, DiskPtr::Inline(again + 5), 50)
        .unwrap();
    acc
}

fn unchanged<T: std::fmt::Debug>(
    acc: &Accountant,
    call: impl FnOnce(&Accountant) -> Result<T, Error>,
) -> Error {
    let before = picture(acc);
    let err = call(acc).expect_err("the mistake was accepted");
    assert_eq!(
        picture(acc),
        before,
        "a failed call changed the accountant ({err})"
    );
    err
}

#[test]
fn earlier_generation_of_a_reused_segment() {
    let acc = reused();
    // A link with the lsn of segment 0's first incarnation.
    let err = unchanged(&acc, |a| a.mark_link(3, 20, DiskPtr::Inline(20), 10));
    assert!(
        matches!(err, Error::StaleSegment { lid: 0, lsn: 20, segment_lsn } if segment_lsn == 2 * L),
        "{err}"
    );
    acc.audit().unwrap();
}

/// A replace into segment N (lsn 2L) naming a fragment of segment O's
/// first incarnation, after O was reused at lsn 3L: O's base lsn exceeds
/// the replace's lsn.
#[test]
fn replace_naming_a_reused_segment() {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let o = acc.next(0).unwrap();
    acc.mark_link(1, 10, DiskPtr::Inline(o + 10), 100).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_replace(1, L, &[DiskPtr::Inline(o + 10)], DiskPtr::Inline(s1), 100)
        .unwrap();
    acc.stabilize(2 * L).unwrap();
    acc.flush();
    acc.pause_rewriting();
    let n = acc.next(2 * L).unwrap(); // extends while paused
    acc.resume_rewriting().unwrap();
    let again = acc.next(3 * L).unwrap();
    assert_eq!(again, o, "segment 0 reused at 3L");
    let err = unchanged(&acc, |a| {
        a.mark_replace(
            1,
            2 * L + 1,
            &[DiskPtr::Inline(o + 10)],
            DiskPtr::Inline(n),
            10,
        )
    });
    assert!(
        matches!(err, Error::StaleSegment { lid: 0, segment_lsn, .. } if segment_lsn == 3 * L),
        "{err}"
    );
    acc.audit().unwrap();
}

#[test]
fn lid_at_or_beyond_the_tip() {
    let acc = reused();
    let tip = acc.tip();
    for lid in [tip, tip + 1, tip + 10 * SS, u64::MAX] {
        let err = unchanged(&acc, |a| a.mark_link(4, 2 * L, DiskPtr::Inline(lid), 10));
        assert!(matches!(err, Error::LidBeyondTip { .. }), "{err}");
        let err = unchanged(&acc, |a| {
            a.mark_replace(2, 2 * L, &[DiskPtr::Inline(lid)], DiskPtr::Inline(0), 10)
        });
        assert!(matches!(err, Error::LidBeyondTip { .. }), "{err}");
    }
    assert_eq!(acc.tip(), tip, "the table did not grow");
    acc.audit().unwrap();
}

#[test]
fn lsn_not_matching_the_segment() {
    let acc = reused();
    let s3 = acc.next(3 * L).unwrap();
    // Segment 0 is Active at 2L; a write at 3L belongs to another segment.
    let err = unchanged(&acc, |a| a.mark_link(5, 3 * L + 1, DiskPtr::Inline(1), 10));
    assert!(matches!(err, Error::LsnMismatch { lid: 0, .. }), "{err}");
    let err = unchanged(&acc, |a| {
        a.mark_replace(2, 2 * L, &[], DiskPtr::Inline(s3), 10)
    });
    assert!(matches!(err, Error::StaleSegment { .. }), "{err}");
    // A link into a sealed segment.
    let err = unchanged(&acc, |a| a.mark_link(6, L, DiskPtr::Inline(SS), 10));
    assert!(
        matches!(
            err,
            Error::SegmentNotActive {
                state: SegmentState::Draining | SegmentState::Inactive,
                ..
            }
        ),
        "{err}"
    );
    acc.audit().unwrap();
}

#[test]
fn every_other_mistake() {
    let acc = reused();
    let err = unchanged(&acc, |a| a.next(L + 1));
    assert!(matches!(err, Error::UnalignedLsn { .. }), "{err}");
    let err = unchanged(&acc, |a| a.next(-L));
    assert!(matches!(err, Error::NegativeLsn { .. }), "{err}");
    let err = unchanged(&acc, |a| a.next(0));
    assert!(matches!(err, Error::LsnAlreadyStable { .. }), "{err}");
    let err = unchanged(&acc, |a| a.next(2 * L));
    assert!(matches!(err, Error::LsnInUse { .. }), "{err}");
    let err = unchanged(&acc, |a| a.stabilize(-1));
    assert!(matches!(err, Error::NegativeLsn { .. }), "{err}");
    let err = unchanged(&acc, |a| a.mark_link(1, -3, DiskPtr::Inline(0), 1));
    assert!(matches!(err, Error::NegativeLsn { .. }), "{err}");
    let err = unchanged(&acc, |a| a.resume_rewriting());
    assert!(matches!(err, Error::NotPaused), "{err}");
    let err = unchanged(&acc, |a| a.segment_snapshot_iter_from(0).map(|_| ()));
    assert!(matches!(err, Error::NotPaused), "{err}");
    // Replace from a free segment: free segment 2 by sealing and emptying.
    let s3 = acc.next(3 * L).unwrap();
    acc.mark_link(7, 3 * L, DiskPtr::Inline(s3), 10).unwrap();
    let s4 = acc.next(4 * L).unwrap();
    acc.mark_replace(7, 4 * L, &[DiskPtr::Inline(s3)], DiskPtr::Inline(s4), 10)
        .unwrap();
    acc.stabilize(5 * L).unwrap();
    let freed = acc.segment_info(2).unwrap().state;
    assert!(matches!(freed, SegmentState::Freeing | SegmentState::Free));
    acc.pause_rewriting(); // extend: the new segment is not the freed one
    let s5 = acc.next(5 * L).unwrap();
    acc.resume_rewriting().unwrap();
    let err = unchanged(&acc, |a| {
        a.mark_replace(7, 5 * L, &[DiskPtr::Inline(s3)], DiskPtr::Inline(s5), 10)
    });
    assert!(
        matches!(err, Error::ReplacedFromFreeSegment { pid: 7, .. }),
        "{err}"
    );
    acc.audit().unwrap();
}

#[test]
fn configuration_mistakes() {
    use segment_accountant::ConfigError;
    let b = Config::builder;
    assert_eq!(
        b().segment_size(1000).build().unwrap_err(),
        ConfigError::SegmentSizeNotPowerOfTwo(1000)
    );
    assert!(matches!(
        b().segment_size(512).build(),
        Err(ConfigError::SegmentSizeTooSmall { .. })
    ));
    assert_eq!(
        b().cleanup_threshold(0).build().unwrap_err(),
        ConfigError::CleanupThreshold(0)
    );
    assert_eq!(b().skew(200).build().unwrap_err(), ConfigError::Skew(200));
}
