//! Caller mistakes return a typed error and change nothing: an operation
//! naming an earlier generation of a reused segment, a lid at or beyond the
//! tip, an lsn that does not match the segment's base lsn, and the rest of
//! the mistakes the specification lists (spec section 2, "Contract").
//!
//! Each test builds a state, takes a full picture of everything observable
//! (`stats()` plus `segment_info`, `segment_pages` and
//! `segment_not_yet_replaced` of every segment in the table, so a grown
//! table shows too), makes the bad call, checks the exact error variant and
//! that the picture is unchanged, and finally that `audit` passes.
//!
//! (`next` takes lsns in any order as long as each is new: the mistakes
//! "not increasing" are `LsnInUse` and `LsnAlreadyStable` here.)

use std::sync::Arc;

use segment_accountant::{
    Accountant, Collector, Config, ConfigError, DiskPtr, Error, Lsn, MemStorage, SegmentInfo,
    SegmentState, Stats,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;

type Picture = (
    Stats,
    Lsn,
    Vec<(Option<SegmentInfo>, Vec<(u64, u64)>, Vec<u64>)>,
);

/// Everything observable about the accountant.
fn picture(acc: &Accountant) -> Picture {
    let mut segments = Vec::new();
    for index in 0.. {
        let Some(info) = acc.segment_info(index) else {
            break;
        };
        segments.push((
            Some(info),
            acc.segment_pages(index),
            acc.segment_not_yet_replaced(index),
        ));
    }
    (acc.stats(), acc.stable_lsn(), segments)
}

/// Runs a call that must fail; checks nothing observable changed.
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

fn fresh() -> Accountant {
    let config = Config::builder().segment_size(SS).build().unwrap();
    Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new())
}

/// Segment 0 (lsn 0) had page 1, replaced into segment 1 (lsn L); segment
/// 0 was freed and reused at lsn 2L, where page 2 lives (Active). Segment
/// 1 holds page 1 and is sealed.
fn reused() -> Accountant {
    let acc = fresh();
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
    assert_eq!(acc.segment_info(0).unwrap().generation, 2);
    acc.mark_link(2, 2 * L + 5, DiskPtr::Inline(again + 5), 50)
        .unwrap();
    acc
}

/// Shows: a link or a replace whose new pointer names the earlier
/// generation of reused segment 0 (its lsn is that of the first
/// incarnation) is `StaleSegment`, and changes nothing.
#[test]
fn earlier_generation_of_a_reused_segment() {
    let acc = reused();
    let err = unchanged(&acc, |a| a.mark_link(3, 20, DiskPtr::Inline(20), 10));
    assert!(
        matches!(err, Error::StaleSegment { lid: 0, lsn: 20, segment_lsn } if segment_lsn == 2 * L),
        "{err}"
    );
    let err = unchanged(&acc, |a| {
        a.mark_replace(1, 30, &[DiskPtr::Inline(SS)], DiskPtr::Inline(30), 10)
    });
    assert!(
        matches!(
            err,
            Error::StaleSegment {
                lid: 0,
                lsn: 30,
                ..
            }
        ),
        "{err}"
    );
    acc.audit().unwrap();
}

/// Shows: a replace into segment N (lsn 2L) naming a fragment of segment
/// O's first incarnation, after O was reused at lsn 3L (O's base lsn now
/// exceeds the replace's lsn), is `StaleSegment` and changes nothing, even
/// when the other old pointers are valid.
#[test]
fn replace_naming_a_reused_segment() {
    let acc = fresh();
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
            &[DiskPtr::Inline(s1), DiskPtr::Inline(o + 10)],
            DiskPtr::Inline(n),
            10,
        )
    });
    assert!(
        matches!(err, Error::StaleSegment { lid: 0, segment_lsn, .. } if segment_lsn == 3 * L),
        "{err}"
    );
    // Page 1 is still not replaced in segment 1: the valid old pointer in
    // the rejected call was not acted on.
    assert_eq!(acc.segment_not_yet_replaced(1), vec![1]);
    acc.audit().unwrap();
}

/// Shows: a lid at or beyond the tip, as the new pointer of a link or a
/// replace or as an old pointer, is `LidBeyondTip` and changes nothing:
/// in particular the tip and the segment table do not grow.
#[test]
fn lid_at_or_beyond_the_tip() {
    let acc = reused();
    let tip = acc.tip();
    let table = picture(&acc).2.len();
    for lid in [tip, tip + 1, tip + 10 * SS, tip + 1000 * SS, u64::MAX] {
        let err = unchanged(&acc, |a| a.mark_link(4, 2 * L, DiskPtr::Inline(lid), 10));
        assert!(
            matches!(err, Error::LidBeyondTip { lid: l, tip: t } if l == lid && t == tip),
            "{err}"
        );
        let err = unchanged(&acc, |a| {
            a.mark_replace(2, 2 * L, &[], DiskPtr::Blob { lid, blob: 9 }, 10)
        });
        assert!(matches!(err, Error::LidBeyondTip { .. }), "{err}");
        // An old pointer beyond the tip, after a valid one.
        let err = unchanged(&acc, |a| {
            a.mark_replace(
                2,
                2 * L,
                &[DiskPtr::Inline(SS), DiskPtr::Inline(lid)],
                DiskPtr::Inline(0),
                10,
            )
        });
        assert!(matches!(err, Error::LidBeyondTip { .. }), "{err}");
    }
    assert_eq!(acc.tip(), tip, "the tip did not grow");
    assert_eq!(picture(&acc).2.len(), table, "the table did not grow");
    acc.audit().unwrap();
}

/// Shows: a write whose lsn does not match the base lsn of the (Active)
/// segment its pointer is in is `LsnMismatch`, and changes nothing.
#[test]
fn lsn_not_matching_the_segment() {
    let acc = reused();
    let s3 = acc.next(3 * L).unwrap();
    // Segment 0 is Active at 2L; a write at 3L belongs to segment s3.
    let err = unchanged(&acc, |a| a.mark_link(5, 3 * L + 1, DiskPtr::Inline(1), 10));
    assert!(
        matches!(err, Error::LsnMismatch { lid: 0, lsn, segment_lsn } if lsn == 3 * L + 1 && segment_lsn == 2 * L),
        "{err}"
    );
    // An lsn of a future segment, never given to `next`.
    let err = unchanged(&acc, |a| {
        a.mark_replace(2, 9 * L, &[DiskPtr::Inline(5)], DiskPtr::Inline(s3 + 1), 10)
    });
    assert!(
        matches!(err, Error::LsnMismatch { segment_lsn, .. } if segment_lsn == 3 * L),
        "{err}"
    );
    // An earlier lsn than the segment's: named as a stale segment.
    let err = unchanged(&acc, |a| {
        a.mark_replace(2, 2 * L, &[], DiskPtr::Inline(s3), 10)
    });
    assert!(matches!(err, Error::StaleSegment { .. }), "{err}");
    acc.audit().unwrap();
}

/// Shows: a link into a segment a `stabilize` already covered is
/// `SegmentSealed`, naming the segment lsn and the stabilized lsn that
/// covered it (whether the segment is still Inactive or Draining, or was
/// freed since), and changes nothing.
#[test]
fn link_into_a_segment_a_stabilize_covered() {
    let acc = reused();
    // Segment 1 (lsn L) is sealed: `stabilize(2L)` covered it.
    assert!(matches!(
        acc.segment_info(1).unwrap().state,
        SegmentState::Draining | SegmentState::Inactive
    ));
    let err = unchanged(&acc, |a| a.mark_link(6, L + 7, DiskPtr::Inline(SS + 7), 10));
    assert!(
        matches!(
            err,
            Error::SegmentSealed { lid: SS, lsn, segment_lsn: L, stable_lsn: L } if lsn == L + 7
        ),
        "{err:?}"
    );
    // The new pointer of a replace is checked the same way.
    let err = unchanged(&acc, |a| {
        a.mark_replace(2, L + 9, &[], DiskPtr::Inline(SS + 9), 10)
    });
    assert!(
        matches!(err, Error::SegmentSealed { segment_lsn: L, .. }),
        "{err:?}"
    );
    // A segment that was sealed and then freed: its lsn is still covered.
    let s3 = acc.next(3 * L).unwrap();
    acc.next(4 * L).unwrap(); // the segment whose header vouches for 5L
    acc.stabilize(5 * L).unwrap(); // s3 held nothing: freed once below the stable lsn
    acc.flush();
    assert_eq!(
        acc.segment_info((s3 / SS) as usize).unwrap().state,
        SegmentState::Free
    );
    let err = unchanged(&acc, |a| a.mark_link(6, 3 * L, DiskPtr::Inline(s3), 10));
    assert!(
        matches!(
            err,
            Error::SegmentSealed { segment_lsn, stable_lsn, .. }
                if segment_lsn == 3 * L && stable_lsn == 4 * L
        ),
        "{err:?}"
    );
    acc.audit().unwrap();
}

/// Shows: the message of a write after the `stabilize` that covered its
/// segment says so, naming the segment lsn and the stabilized lsn (not
/// only the segment's state).
#[test]
fn the_message_names_the_covering_stabilize() {
    let acc = fresh();
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 10, DiskPtr::Inline(s0 + 10), 100).unwrap();
    acc.next(L).unwrap();
    // The store's header at L vouches for everything below 2L.
    acc.stabilize(2 * L).unwrap();
    // A write into segment 0 (lsn 0) that the store held back too long.
    let err = unchanged(&acc, |a| a.mark_link(2, 200, DiskPtr::Inline(s0 + 200), 8));
    assert_eq!(
        err.to_string(),
        "a stabilize covered segment lsn 0 before this write at lsn 200 into the segment \
         at lid 0 (stabilized up to segment lsn 4096)"
    );
    assert!(matches!(
        err,
        Error::SegmentSealed {
            lid: 0,
            lsn: 200,
            segment_lsn: 0,
            stable_lsn: L
        }
    ));
    acc.audit().unwrap();
}

/// Shows: a link into a segment that is not Active, for an lsn no
/// `stabilize` covered (a free segment, named with a new lsn), is
/// `SegmentNotActive`, and changes nothing.
#[test]
fn link_into_a_segment_that_is_not_active() {
    let acc = reused();
    let s3 = acc.next(3 * L).unwrap();
    acc.next(4 * L).unwrap();
    acc.stabilize(5 * L).unwrap();
    acc.flush();
    assert_eq!(
        acc.segment_info((s3 / SS) as usize).unwrap().state,
        SegmentState::Free
    );
    // 6L was never handed out, and lies above the stabilized lsn 4L.
    let err = unchanged(&acc, |a| a.mark_link(6, 6 * L, DiskPtr::Inline(s3), 10));
    assert!(
        matches!(
            err,
            Error::SegmentNotActive {
                state: SegmentState::Free,
                ..
            }
        ),
        "{err:?}"
    );
    acc.audit().unwrap();
}

/// Shows: a replace naming an old fragment in a segment that is Freeing
/// or Free is `ReplacedFromFreeSegment`, and changes nothing.
#[test]
fn replace_from_a_free_segment() {
    let acc = reused();
    // Page 7 at segment s3 (lsn 3L), replaced into s4 (lsn 4L); stabilizing
    // below 5L frees s3.
    let s3 = acc.next(3 * L).unwrap();
    acc.mark_link(7, 3 * L, DiskPtr::Inline(s3), 10).unwrap();
    let s4 = acc.next(4 * L).unwrap();
    acc.mark_replace(7, 4 * L, &[DiskPtr::Inline(s3)], DiskPtr::Inline(s4), 10)
        .unwrap();
    acc.stabilize(5 * L).unwrap();
    let freed = acc.segment_info((s3 / SS) as usize).unwrap().state;
    assert!(
        matches!(freed, SegmentState::Freeing | SegmentState::Free),
        "{freed:?}"
    );
    acc.pause_rewriting(); // extend: the new segment is not the freed one
    let s5 = acc.next(5 * L).unwrap();
    acc.resume_rewriting().unwrap();
    let err = unchanged(&acc, |a| {
        a.mark_replace(
            7,
            5 * L,
            &[DiskPtr::Inline(s4), DiskPtr::Inline(s3)],
            DiskPtr::Inline(s5),
            10,
        )
    });
    assert!(
        matches!(err, Error::ReplacedFromFreeSegment { pid: 7, lid, .. } if lid == s3),
        "{err}"
    );
    acc.flush();
    assert_eq!(
        acc.segment_info((s3 / SS) as usize).unwrap().state,
        SegmentState::Free
    );
    let err = unchanged(&acc, |a| {
        a.mark_replace(7, 5 * L, &[DiskPtr::Inline(s3)], DiskPtr::Inline(s5), 10)
    });
    assert!(
        matches!(
            err,
            Error::ReplacedFromFreeSegment {
                state: SegmentState::Free,
                ..
            }
        ),
        "{err}"
    );
    acc.audit().unwrap();
}

/// Shows: bad lsns given to `next`, the marks and `stabilize`, and
/// unmatched resume / iteration, are each their typed error and change
/// nothing.
#[test]
fn every_other_mistake() {
    let acc = reused();
    let err = unchanged(&acc, |a| a.next(L + 1));
    assert!(
        matches!(err, Error::UnalignedLsn { lsn, segment_size: SS } if lsn == L + 1),
        "{err}"
    );
    let err = unchanged(&acc, |a| a.next(-L));
    assert!(
        matches!(err, Error::NegativeLsn { lsn } if lsn == -L),
        "{err}"
    );
    // Already stabilized past (the store's lsn counter went backwards).
    let err = unchanged(&acc, |a| a.next(0));
    assert!(
        matches!(err, Error::LsnAlreadyStable { lsn: 0, stable } if stable == L),
        "{err}"
    );
    // The lsn of the Active segment, given again.
    let err = unchanged(&acc, |a| a.next(2 * L));
    assert!(
        matches!(err, Error::LsnInUse { lsn } if lsn == 2 * L),
        "{err}"
    );
    // Beyond the packed word's range.
    let huge = (1i64 << 40) * L;
    let err = unchanged(&acc, |a| a.next(huge));
    assert!(matches!(err, Error::LsnOutOfRange { .. }), "{err}");
    let err = unchanged(&acc, |a| a.mark_link(1, huge, DiskPtr::Inline(0), 1));
    assert!(matches!(err, Error::LsnOutOfRange { .. }), "{err}");
    let err = unchanged(&acc, |a| a.stabilize(-1));
    assert!(matches!(err, Error::NegativeLsn { lsn: -1 }), "{err}");
    let err = unchanged(&acc, |a| a.mark_link(1, -3, DiskPtr::Inline(0), 1));
    assert!(matches!(err, Error::NegativeLsn { lsn: -3 }), "{err}");
    let err = unchanged(&acc, |a| {
        a.mark_replace(2, -3, &[DiskPtr::Inline(SS)], DiskPtr::Inline(0), 1)
    });
    assert!(matches!(err, Error::NegativeLsn { lsn: -3 }), "{err}");
    let err = unchanged(&acc, |a| a.resume_rewriting());
    assert!(matches!(err, Error::NotPaused), "{err}");
    let err = unchanged(&acc, |a| a.segment_snapshot_iter_from(0).map(|_| ()));
    assert!(matches!(err, Error::NotPaused), "{err}");
    // Pauses nest: one resume too many is an error.
    acc.pause_rewriting();
    acc.resume_rewriting().unwrap();
    let err = unchanged(&acc, |a| a.resume_rewriting());
    assert!(matches!(err, Error::NotPaused), "{err}");
    // The accountant still works.
    let lid = acc.next(3 * L).unwrap();
    acc.mark_link(8, 3 * L, DiskPtr::Inline(lid), 1).unwrap();
    acc.audit().unwrap();
}

/// Shows: invalid configuration values are rejected by
/// `Config::builder().build()` with their typed error.
#[test]
fn configuration_mistakes() {
    let b = Config::builder;
    assert_eq!(
        b().segment_size(1000).build().unwrap_err(),
        ConfigError::SegmentSizeNotPowerOfTwo(1000)
    );
    assert_eq!(
        b().segment_size(0).build().unwrap_err(),
        ConfigError::SegmentSizeNotPowerOfTwo(0)
    );
    assert_eq!(
        b().segment_size(512).build().unwrap_err(),
        ConfigError::SegmentSizeTooSmall {
            size: 512,
            min: 4096
        }
    );
    assert_eq!(
        b().segment_size(32)
            .allow_small_segments(true)
            .build()
            .unwrap_err(),
        ConfigError::SegmentSizeTooSmall { size: 32, min: 64 }
    );
    assert!(b()
        .segment_size(64)
        .allow_small_segments(true)
        .build()
        .is_ok());
    assert_eq!(
        b().cleanup_threshold(0).build().unwrap_err(),
        ConfigError::CleanupThreshold(0)
    );
    assert_eq!(
        b().cleanup_threshold(100).build().unwrap_err(),
        ConfigError::CleanupThreshold(100)
    );
    assert_eq!(b().skew(101).build().unwrap_err(), ConfigError::Skew(101));
    assert!(b().skew(100).cleanup_threshold(99).build().is_ok());
}

/// `next_in` with a stream the configuration does not have is refused
/// before anything else; streams it has work, and each segment remembers
/// its stream.
#[test]
fn unknown_stream() {
    let config = Config::builder()
        .segment_size(SS)
        .streams(2, 1)
        .build()
        .unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let err = unchanged(&acc, |a| a.next_in(0, 3));
    assert!(
        matches!(
            err,
            Error::UnknownStream {
                stream: 3,
                streams: 3
            }
        ),
        "{err}"
    );
    // Checked first: an unaligned lsn on an unknown stream reports the
    // stream.
    let err = unchanged(&acc, |a| a.next_in(1, 7));
    assert!(
        matches!(err, Error::UnknownStream { stream: 7, .. }),
        "{err}"
    );
    for stream in 0..3 {
        let lid = acc.next_in(stream as Lsn * L, stream).unwrap();
        assert_eq!(
            acc.segment_info((lid / SS) as usize).map(|i| i.stream),
            Some(stream)
        );
    }
    // The default configuration has one stream.
    let err = unchanged(&fresh(), |a| a.next_in(0, 1));
    assert!(
        matches!(
            err,
            Error::UnknownStream {
                stream: 1,
                streams: 1
            }
        ),
        "{err}"
    );
    acc.audit().unwrap();
}

/// Placement advice: a relocation from a user segment goes to the first
/// relocation stream and from there to the next; a rewrite of a page whose
/// old version is young goes to user stream 0 once a lifetime is known.
#[test]
fn placement_advice() {
    let config = Config::builder()
        .segment_size(SS)
        .streams(2, 2)
        .build()
        .unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    // No lifetime known yet: every rewrite is "shorter" than it.
    assert_eq!(acc.user_lifetime(), None);
    let a = acc.next_in(0, 0).unwrap();
    acc.mark_link(1, 0, DiskPtr::Inline(a), 100).unwrap();
    assert_eq!(acc.stream_for_write(L, &[DiskPtr::Inline(a)]), 0);
    // A new page goes to the last user stream.
    assert_eq!(acc.stream_for_write(L, &[]), 1);
    // Page 1 is rewritten at lsn L: segment 0 empties at the next
    // stabilize, and its lifetime (L) becomes the threshold.
    let b = acc.next_in(L, 0).unwrap();
    acc.mark_replace(1, L, &[DiskPtr::Inline(a)], DiskPtr::Inline(b), 100)
        .unwrap();
    acc.stabilize(2 * L).unwrap();
    assert_eq!(acc.user_lifetime(), Some(SS));
    // A version that lived 4 segments is long-lived: stream 1; one that
    // lived less than one, stream 0.
    assert_eq!(acc.stream_for_write(5 * L, &[DiskPtr::Inline(b)]), 1);
    assert_eq!(acc.stream_for_write(L + 10, &[DiskPtr::Inline(b)]), 0);
    // Relocations: from a user stream to the first relocation stream.
    let d = acc.next_in(2 * L, 2).unwrap();
    assert_eq!(
        acc.segment_info((d / SS) as usize).map(|i| i.stream),
        Some(2)
    );
    acc.audit().unwrap();
}
