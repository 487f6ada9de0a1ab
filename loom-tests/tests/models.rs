//! Loom models of the accountant's concurrent protocols. Each states the
//! property it checks; `run.sh` runs them with a preemption bound and, with
//! `--seeded-bugs`, against each seeded bug in turn.

#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use loom_tests::{accountant, explore, relocate, segment_with, SS};
use segment_accountant::{SegmentState, SegmentState::*};

const L: i64 = SS as i64;

fn state(acc: &segment_accountant::Accountant, index: usize) -> SegmentState {
    acc.segment_info(index).expect("segment").state
}

/// Model 1, free list and epochs (B): a segment freed while another thread
/// is pinned is never returned by `next` before that thread unpins; no
/// lid is returned twice.
#[test]
fn model_1_epoch_deferral() {
    explore("1 free list and epochs", 1, || {
        let (acc, collector, _storage) = accountant();
        let l0 = segment_with(&acc, 0, &[1]);
        let l1 = acc.next(L).unwrap();
        relocate(&acc, 1, L, l0, l1);
        // The reader pins before the segment is freed and may still read l0.
        let reader = collector.register();
        let guard = reader.pin();
        let done_reading = loom::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let acc = acc.clone();
            let done_reading = done_reading.clone();
            thread::spawn(move || {
                acc.stabilize(2 * L).unwrap(); // frees segment 0
                acc.flush();
                let lid = acc.next(2 * L).unwrap();
                assert_ne!(lid, l1, "an Active/Inactive segment handed out again");
                if lid == l0 {
                    assert!(
                        done_reading.load(Ordering::Acquire),
                        "segment reused while a reader pinned before its free was still pinned"
                    );
                }
            })
        };
        done_reading.store(true, Ordering::Release);
        drop(guard);
        drop(reader);
        writer.join().unwrap();
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 2, a cross-segment replace (A): `mark_replace` moves a page from
/// O into T while another thread stabilizes past O, then two threads race
/// the stabilize past T against an observer: the replacement is applied to
/// O exactly once, only after T is Inactive (and never to an Active or Free
/// O: the accountant panics on that broken invariant).
#[test]
fn model_2_cross_segment_replace() {
    explore("2 cross-segment replace", 3, || {
        let (acc, _collector, _storage) = accountant();
        let o = segment_with(&acc, 0, &[1]);
        let t = acc.next(L).unwrap();
        let replacer = {
            let acc = acc.clone();
            thread::spawn(move || relocate(&acc, 1, L, o, t))
        };
        let stabilizer = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(L).unwrap())
        };
        replacer.join().unwrap();
        stabilizer.join().unwrap();
        // O is sealed; T is not: the replacement is still deferred.
        let info = acc.segment_info(0).unwrap();
        assert_eq!(info.removed_pages, 0);
        assert_eq!(info.live_pages, 1);
        assert_eq!(state(&acc, 1), Active);

        let observer = {
            let acc = acc.clone();
            thread::spawn(move || {
                let removed = acc.segment_info(0).unwrap().removed_pages;
                let t_state = state(&acc, 1);
                if removed > 0 {
                    assert_ne!(t_state, Active, "replacement applied before T was sealed");
                }
            })
        };
        acc.stabilize(2 * L).unwrap();
        observer.join().unwrap();
        let info = acc.segment_info(0).unwrap();
        assert_eq!(info.removed_pages, 1, "replacement applied once");
        assert_eq!(info.live_pages, 0);
        assert!(matches!(info.state, Freeing | Free));
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 3, two concurrent `stabilize` calls with different lsns: segments
/// are deactivated in lsn order, each exactly once, and the stabilized
/// lsn never goes down.
#[test]
fn model_3_concurrent_stabilize() {
    explore("3 concurrent stabilize", 3, || {
        let (acc, _collector, _storage) = accountant();
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = segment_with(&acc, L, &[2]);
        relocate(&acc, 1, L, s0, s1);
        let s2 = acc.next(2 * L).unwrap();
        relocate(&acc, 2, 2 * L, s1, s2);
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(2 * L).unwrap())
        };
        let b = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(3 * L).unwrap())
        };
        let first = acc.stable_lsn();
        let sealed = |i| state(&acc, i) != Active;
        let (s2_sealed, s1_sealed, s0_sealed) = (sealed(2), sealed(1), sealed(0));
        assert!(!s2_sealed || s1_sealed, "segment 2 sealed before segment 1");
        assert!(!s1_sealed || s0_sealed, "segment 1 sealed before segment 0");
        let second = acc.stable_lsn();
        assert!(second >= first, "stable lsn went down");
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(acc.stable_lsn(), 2 * L);
        for i in 0..3 {
            assert_ne!(state(&acc, i), Active);
        }
        assert_eq!(acc.segment_info(0).unwrap().removed_pages, 1);
        assert_eq!(acc.segment_info(1).unwrap().removed_pages, 1);
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 4, two deactivations that both empty the same old segment: it
/// reaches the free list exactly once.
#[test]
fn model_4_double_emptying() {
    explore("4 double emptying", 3, || {
        let (acc, _collector, _storage) = accountant();
        let o = segment_with(&acc, 0, &[1, 2]);
        let t1 = acc.next(L).unwrap();
        relocate(&acc, 1, L, o, t1);
        let t2 = acc.next(2 * L).unwrap();
        relocate(&acc, 2, 2 * L, o, t2);
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(2 * L).unwrap())
        };
        acc.stabilize(3 * L).unwrap();
        a.join().unwrap();
        acc.flush();
        let stats = acc.stats();
        assert_eq!(
            stats.free + stats.freeing,
            1,
            "the old segment freed exactly once"
        );
        assert_eq!(acc.segment_info(0).unwrap().removed_pages, 2);
        acc.audit().unwrap();
        let x = acc.next(3 * L).unwrap();
        let y = acc.next(4 * L).unwrap();
        assert_ne!(x, y);
        acc.audit().unwrap();
    });
}

/// Model 5, `next` racing `next` and a free: distinct lids, nothing lost
/// (D: the audit passes afterwards).
#[test]
fn model_5_next_next_free() {
    explore("5 next racing next and a free", 3, || {
        let (acc, _collector, _storage) = accountant();
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = segment_with(&acc, L, &[2]);
        let s2 = acc.next(2 * L).unwrap();
        relocate(&acc, 1, 2 * L, s0, s2);
        relocate(&acc, 2, 2 * L, s1, s2);
        let s3 = acc.next(3 * L).unwrap();
        relocate(&acc, 1, 3 * L, s2, s3);
        relocate(&acc, 2, 3 * L, s2, s3);
        acc.stabilize(3 * L).unwrap(); // frees s0 and s1
        acc.flush();
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(4 * L).unwrap())
        };
        let b = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(5 * L).unwrap())
        };
        acc.stabilize(4 * L).unwrap(); // frees s2
        acc.flush();
        let (x, y) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(x, y, "one lid handed out twice");
        assert!(x != s3 && y != s3, "a live segment handed out");
        acc.audit().unwrap();
    });
}

/// Model 6, the sequencer (E): a tip bump racing a truncation and a
/// free-list `next`: a truncated segment is never handed out while cut off,
/// and the tip grows back over a truncated range only after the truncation
/// (set_len and sync) finished.
#[test]
fn model_6_sequencer() {
    explore("6 sequencer", 3, || {
        let (acc, _collector, storage) = accountant();
        // Segments 1 and 2 free at the top, segment 0 live.
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = segment_with(&acc, L, &[2]);
        let s2 = acc.next(2 * L).unwrap();
        relocate(&acc, 1, 2 * L, s0, s2);
        acc.stabilize(3 * L).unwrap(); // frees s0
        acc.flush();
        let s3 = acc.next(3 * L).unwrap(); // reuses s0's slot
        assert_eq!(s3, s0);
        relocate(&acc, 2, 3 * L, s1, s3);
        relocate(&acc, 1, 3 * L, s2, s3);
        acc.stabilize(4 * L).unwrap(); // frees s1 and s2
        acc.flush();
        assert_eq!(acc.stats().free, 2);
        let check = |lid: u64| {
            let truncating = storage.truncating.load(Ordering::Acquire);
            let cut = storage.truncated_to.load(Ordering::Acquire);
            assert!(
                !(truncating && lid >= cut),
                "lid {lid} handed out over a truncation still in progress (cut at {cut})"
            );
        };
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(4 * L).unwrap())
        };
        let y = acc.next(5 * L).unwrap();
        check(y);
        let x = a.join().unwrap();
        check(x);
        assert_ne!(x, y);
        assert!(x != s3 && y != s3);
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 7, `clean` racing a segment's Draining → Free transition and its
/// reuse: a returned page was in `not_yet_replaced` of a to-clean segment
/// of the same generation.
#[test]
fn model_7_clean_vs_reuse() {
    explore("7 clean racing free and reuse", 3, || {
        let (acc, _collector, _storage) = accountant();
        let d = segment_with(&acc, 0, &[1]);
        acc.stabilize(L).unwrap(); // one page: drained at once
        assert_eq!(state(&acc, 0), Draining);
        let t = acc.next(L).unwrap();
        let cleaner = {
            let acc = acc.clone();
            thread::spawn(move || acc.clean(u64::MAX))
        };
        relocate(&acc, 1, L, d, t);
        acc.stabilize(2 * L).unwrap(); // d empties and is freed
        acc.flush();
        let reused = segment_with(&acc, 2 * L, &[2]);
        let picked = cleaner.join().unwrap();
        assert!(
            picked.is_none() || picked == Some(1),
            "clean returned {picked:?}, not from the draining generation (reused: {})",
            reused == d
        );
        acc.audit().unwrap();
    });
}

/// Model 8, `pause_rewriting` racing an in-flight `next`: once pause
/// returns, no `next` hands out a reused segment and nothing is truncated.
#[test]
fn model_8_pause_vs_next() {
    explore("8 pause racing next", 3, || {
        let (acc, _collector, _storage) = accountant();
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = acc.next(L).unwrap();
        relocate(&acc, 1, L, s0, s1);
        acc.stabilize(2 * L).unwrap(); // frees s0
        acc.flush();
        assert_eq!(state(&acc, 0), Free);
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(2 * L).unwrap())
        };
        acc.pause_rewriting();
        let s0_after_pause = state(&acc, 0);
        let tip_after_pause = acc.tip();
        let lid = a.join().unwrap();
        if lid == s0 {
            assert_eq!(
                s0_after_pause, Active,
                "a segment was reused after pause_rewriting returned"
            );
        }
        assert!(acc.tip() >= tip_after_pause, "truncated while paused");
        let later = acc.next(3 * L).unwrap();
        assert!(later >= tip_after_pause, "reused while paused");
        acc.resume_rewriting().unwrap();
        acc.audit().unwrap();
    });
}

/// Model 9, two `next` calls with one lsn (a caller mistake made
/// concurrently): exactly one gets a segment, the other `LsnInUse`, and
/// nothing leaks.
#[test]
fn model_9_same_lsn_twice() {
    explore("9 same lsn twice", 3, || {
        let (acc, _collector, _storage) = accountant();
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = acc.next(L).unwrap();
        relocate(&acc, 1, L, s0, s1);
        acc.stabilize(2 * L).unwrap(); // frees s0
        acc.flush();
        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(2 * L))
        };
        let b = acc.next(2 * L);
        let a = a.join().unwrap();
        assert!(
            a.is_ok() != b.is_ok(),
            "exactly one next(2L) may succeed: {a:?} {b:?}"
        );
        let err = a.as_ref().err().or(b.as_ref().err()).unwrap();
        assert!(
            matches!(err, segment_accountant::Error::LsnInUse { .. }),
            "{err}"
        );
        acc.stabilize(3 * L).unwrap();
        acc.flush();
        acc.audit().unwrap();
    });
}
