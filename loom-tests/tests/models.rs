//! Loom models of the accountant's concurrent protocols. Each states the
//! property it checks; `run.sh` runs them with a preemption bound and, with
//! `--seeded-bugs`, against each seeded bug in turn.

#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::thread;
use loom_tests::{
    accountant, accountant_with, config, config_with, explore, relocate, segment_with, LoomStorage,
    SS,
};
use segment_accountant::Skip;
use segment_accountant::{
    Accountant, Collector, DiskPtr, Error, Fragment, PageState, SegmentState, SegmentState::*,
    Snapshot,
};

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
///
/// Capped at one preemption (`run.sh --deep` lifts the cap): since each
/// thread keeps its epoch handle (issue 15), the collector's participants
/// live as long as the model's threads, and at two preemptions the model
/// explores 980,421 interleavings (631 s on 2 busy cores) instead of
/// 38,077; at one it explores 31,767 in 15 s and still catches
/// `relaxed-combiner-token`.
#[test]
fn model_3_concurrent_stabilize() {
    explore("3 concurrent stabilize", 1, || {
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
            thread::spawn(move || acc.clean(Skip::Nothing).map(|r| r.pid))
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

/// After every thread of a model returned: no segment at or below the
/// stabilized lsn is still being written (a `next` that raced the
/// stabilize covering its lsn was sealed by it, or refused).
fn nothing_unsealed_below_stable(acc: &Accountant) {
    let stable = acc.stable_lsn();
    for index in 0..(acc.tip() / SS) as usize {
        let info = acc.segment_info(index).unwrap();
        if let Some(lsn) = info.lsn {
            assert!(
                !(matches!(info.state, Active | Sealing) && lsn <= stable),
                "segment {index} at lsn {lsn} is {:?} below the stable lsn {stable}",
                info.state
            );
        }
    }
}

/// Model 10, the seal boundary for `mark_link` (defect 3 of the old
/// design): an update of a page already in T and a link of a new page race
/// the stabilize that seals T. Each link lands wholly before the seal (and
/// is counted in T's sealed live bytes) or is refused having changed
/// nothing; once one is refused, later ones are too.
#[test]
fn model_10_link_vs_seal() {
    explore("10 mark_link vs the seal of its segment", 3, || {
        let (acc, _collector, _storage) = accountant();
        let t = segment_with(&acc, 0, &[1]);
        let writer = {
            let acc = acc.clone();
            thread::spawn(move || {
                let a = acc.mark_link(1, 1, DiskPtr::Inline(t + 1), 4);
                let b = acc.mark_link(2, 2, DiskPtr::Inline(t + 2), 4);
                (a, b)
            })
        };
        acc.stabilize(L).unwrap();
        let (a, b) = writer.join().unwrap();
        assert!(a.is_ok() || b.is_err(), "a link landed after a refused one");
        let mut expected = vec![(1, if a.is_ok() { 12 } else { 8 })];
        if b.is_ok() {
            expected.push((2, 4));
        }
        assert_eq!(acc.segment_pages(0), expected);
        let sum: u64 = expected.iter().map(|&(_, b)| b).sum();
        assert_eq!(acc.segment_info(0).unwrap().live_bytes, sum);
        acc.audit().unwrap();
    });
}

/// Model 11, the seal boundary for `mark_replace` (defect 2 of the old
/// design): moving page 1 from O into T races the stabilize sealing both.
/// It lands wholly (T holds the page, the replacement empties O of it once
/// T is sealed) or not at all (O still holds it, not yet replaced; T does
/// not): the page's copy is always tracked (property A).
#[test]
fn model_11_replace_vs_seal_of_new() {
    explore("11 mark_replace vs the seal of its new segment", 3, || {
        let (acc, _collector, _storage) = accountant();
        let o = segment_with(&acc, 0, &[1, 2]);
        let t = acc.next(L).unwrap();
        let replacer = {
            let acc = acc.clone();
            thread::spawn(move || {
                acc.mark_replace(1, L, &[DiskPtr::Inline(o)], DiskPtr::Inline(t), 8)
            })
        };
        acc.stabilize(2 * L).unwrap();
        let replaced = replacer.join().unwrap();
        let (o_pages, t_pages) = (acc.segment_pages(0), acc.segment_pages(1));
        if replaced.is_ok() {
            assert_eq!(o_pages, vec![(2, 8)]);
            assert_eq!(t_pages, vec![(1, 8)]);
        } else {
            assert_eq!(o_pages, vec![(1, 8), (2, 8)], "a refused replace changed O");
            assert_eq!(acc.segment_not_yet_replaced(0), vec![1, 2]);
            assert!(t_pages.is_empty(), "a refused replace linked into T");
        }
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 12, `mark_replace` vs the stabilize sealing its *old* segment
/// (which, holding one page, also starts draining it): the replace always
/// succeeds (T stays Active), the page stays live in O until T is sealed,
/// and `clean` never suggests it again once the replace returned: the
/// replace clears O's flag only if it sees O Draining after recording, and
/// the drain start clears the flags of the replacements it finds recorded
/// (docs/protocols/replace.md; seeded bug `flag-before-record`).
#[test]
fn model_12_replace_vs_seal_of_old() {
    explore("12 mark_replace vs the seal of its old segment", 3, || {
        let (acc, _collector, _storage) = accountant();
        let o = segment_with(&acc, 0, &[1]);
        let t = acc.next(L).unwrap();
        let replacer = {
            let acc = acc.clone();
            thread::spawn(move || relocate(&acc, 1, L, o, t))
        };
        acc.stabilize(L).unwrap();
        replacer.join().unwrap();
        assert_ne!(state(&acc, 0), Active);
        assert_eq!(
            acc.segment_pages(0),
            vec![(1, 8)],
            "replaced before T is stable"
        );
        assert_eq!(
            acc.clean(Skip::Nothing).map(|r| r.pid),
            None,
            "clean suggested a replaced page"
        );
        acc.stabilize(2 * L).unwrap();
        assert!(acc.segment_pages(0).is_empty());
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 13, `next(L)` for an lsn already handed out, racing the stabilize
/// that seals it (defect 1 of the old design): it is refused, whatever the
/// interleaving, and afterwards the lsn stays refused.
#[test]
fn model_13_next_vs_seal_of_its_lsn() {
    explore("13 next(L) vs the seal of L", 3, || {
        let (acc, _collector, _storage) = accountant();
        segment_with(&acc, 0, &[1]);
        let stabilizer = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(L).unwrap())
        };
        let again = acc.next(0);
        stabilizer.join().unwrap();
        assert!(
            matches!(
                again,
                Err(Error::LsnInUse { .. } | Error::LsnAlreadyStable { .. })
            ),
            "lsn 0 handed out twice: {again:?}"
        );
        assert!(acc.next(0).is_err());
        acc.audit().unwrap();
    });
}

/// Model 14, `next(L)` for a fresh lsn racing a stabilize that covers it (a
/// caller mistake, here by a second write head whose lsn is below one
/// already handed out), followed by writes into that segment and a replace
/// out of it into the higher one. Either `next` is refused, or its segment
/// is sealed by that stabilize as if `next` had come first: a registration
/// a pass missed is announced to the combiner, and one a replace names is
/// collected before the replace's segment is finished (the seal's barrier
/// orders it), so replacements are never applied to an unsealed segment.
/// Nothing is left Active below the stabilized lsn.
#[test]
fn model_14_fresh_next_vs_covering_stabilize() {
    explore("14 fresh next(L) vs a stabilize covering L", 3, || {
        let (acc, _collector, _storage) = accountant_with(config_with(|b| b.streams(2, 0)));
        segment_with(&acc, 0, &[1]);
        let t = acc.next_in(2 * L, 1).unwrap();
        let stabilizer = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(3 * L))
        };
        let fresh = acc.next(L);
        if let Ok(lid) = fresh {
            // Either may be refused: the stabilize seals both segments.
            let _ = acc.mark_link(2, L, DiskPtr::Inline(lid), 8);
            let _ = acc.mark_replace(2, 2 * L, &[DiskPtr::Inline(lid)], DiskPtr::Inline(t + 8), 8);
        }
        let stabilized = stabilizer.join().unwrap();
        if stabilized.is_ok() {
            nothing_unsealed_below_stable(&acc);
        }
        if let Err(e) = &fresh {
            assert!(matches!(e, Error::LsnAlreadyStable { .. }), "{e}");
        }
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 15, `clean` vs `mark_replace` of the page it suggests: `clean`
/// returns only a page that was not yet replaced at some instant of the
/// call, so never one whose replace returned before `clean` began.
#[test]
fn model_15_clean_vs_replace_of_pick() {
    explore("15 clean vs mark_replace of the suggested page", 3, || {
        let (acc, _collector, _storage) = accountant();
        let d = segment_with(&acc, 0, &[1]);
        acc.stabilize(L).unwrap(); // one page: Draining at once
        assert_eq!(state(&acc, 0), Draining);
        let t = acc.next(L).unwrap();
        let replaced = loom::sync::Arc::new(AtomicBool::new(false));
        let cleaner = {
            let (acc, replaced) = (acc.clone(), replaced.clone());
            thread::spawn(move || {
                // Acquire: pairs with the Release store after the replace.
                let before = replaced.load(Ordering::Acquire);
                (before, acc.clean(Skip::Nothing).map(|r| r.pid))
            })
        };
        relocate(&acc, 1, L, d, t);
        replaced.store(true, Ordering::Release);
        let (replaced_before, picked) = cleaner.join().unwrap();
        assert!(picked.is_none() || picked == Some(1));
        if replaced_before {
            assert_eq!(
                picked, None,
                "clean suggested a page replaced before it began"
            );
        }
        assert_eq!(acc.clean(Skip::Nothing).map(|r| r.pid), None);
        acc.stabilize(2 * L).unwrap();
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 16, a segment starting to drain (in a stabilize) vs `clean`:
/// `clean` suggests a page of it only once it is Draining, and after the
/// stabilize returns its pages are all suggestable.
#[test]
fn model_16_drain_start_vs_clean() {
    explore("16 draining start vs clean", 3, || {
        let (acc, _collector, _storage) = accountant();
        segment_with(&acc, 0, &[1]);
        let cleaner = {
            let acc = acc.clone();
            thread::spawn(move || {
                let picked = acc.clean(Skip::Nothing).map(|r| r.pid);
                if picked.is_some() {
                    assert_eq!(state(&acc, 0), Draining, "suggested before draining");
                }
                picked
            })
        };
        acc.stabilize(L).unwrap();
        let picked = cleaner.join().unwrap();
        assert!(picked.is_none() || picked == Some(1));
        assert_eq!(state(&acc, 0), Draining);
        assert_eq!(
            acc.clean(Skip::Nothing).map(|r| r.pid),
            Some(1),
            "the drain list is complete"
        );
        acc.audit().unwrap();
    });
}

/// Model 17, `audit` vs `stabilize`: an audit may take the combiner token
/// (to read its state) while a stabilize hands its work over; the work is
/// still done by the time both return, and the audit reports either a
/// consistent accountant or that it was not quiescent, never a stall.
#[test]
fn model_17_audit_vs_stabilize() {
    explore("17 audit vs stabilize", 3, || {
        let (acc, _collector, _storage) = accountant();
        let s0 = segment_with(&acc, 0, &[1]);
        let s1 = acc.next(L).unwrap();
        relocate(&acc, 1, L, s0, s1);
        let auditor = {
            let acc = acc.clone();
            thread::spawn(move || {
                let _ = acc.audit();
            })
        };
        acc.stabilize(2 * L).unwrap();
        auditor.join().unwrap();
        assert_eq!(acc.stable_lsn(), L);
        assert_ne!(state(&acc, 1), Active);
        assert!(acc.segment_pages(0).is_empty());
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 18, two write heads calling `next_in` out of lsn order while a
/// stabilize covers the lower lsn: distinct lids, each lsn once, and the
/// segments sealed in lsn order (the lower one first).
#[test]
fn model_18_heads_out_of_order() {
    explore("18 two heads call next_in out of lsn order", 1, || {
        let (acc, _collector, _storage) = accountant_with(config_with(|b| b.streams(2, 0)));
        segment_with(&acc, 0, &[1]);
        let high = {
            let acc = acc.clone();
            thread::spawn(move || acc.next_in(2 * L, 1).unwrap())
        };
        let low = {
            let acc = acc.clone();
            thread::spawn(move || acc.next_in(L, 0).unwrap())
        };
        acc.stabilize(L).unwrap();
        let (h, l) = (high.join().unwrap(), low.join().unwrap());
        assert_ne!(h, l);
        assert!(acc.next_in(L, 1).is_err() && acc.next_in(2 * L, 0).is_err());
        acc.stabilize(3 * L).unwrap();
        for lid in [h, l] {
            assert_ne!(state(&acc, (lid / SS) as usize), Active);
        }
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 19, the segment table growing (a chunk appended by `next`
/// extending the file past the first chunk) vs a writer looking up a
/// segment in the old chunk and, once `next` returned, one in the new
/// chunk: every lookup finds the one copy of its segment.
#[test]
fn model_19_table_growth_vs_lookup() {
    explore("19 table growth vs a writer's lookup", 3, || {
        let (acc, _collector, _storage) = accountant();
        // The first chunk holds 4 segments under loom.
        for i in 0..4 {
            segment_with(&acc, i * L, &[]);
        }
        let published = loom::sync::Arc::new(AtomicU64::new(u64::MAX));
        let grower = {
            let (acc, published) = (acc.clone(), published.clone());
            thread::spawn(move || {
                let lid = acc.next(4 * L).unwrap();
                // Release: hands the lid to the writer like a store's
                // buffer would.
                published.store(lid, Ordering::Release);
            })
        };
        acc.mark_link(1, 3 * L, DiskPtr::Inline(3 * SS), 8).unwrap();
        let lid = loop {
            // Acquire: pairs with the Release store above.
            let lid = published.load(Ordering::Acquire);
            if lid != u64::MAX {
                break lid;
            }
            thread::yield_now();
        };
        acc.mark_link(2, 4 * L, DiskPtr::Inline(lid), 8).unwrap();
        grower.join().unwrap();
        assert_eq!(acc.segment_pages(4), vec![(2, 8)]);
        assert_eq!(acc.segment_pages(3), vec![(1, 8)]);
        acc.audit().unwrap();
    });
}

/// Frees segments 1 and 2 at the top of a 4-segment file (segment 0 and 3
/// live), leaving the top two free: the next reuse shrinks the file.
fn top_two_free(acc: &Accountant) {
    let s0 = segment_with(acc, 0, &[1]);
    let s1 = segment_with(acc, L, &[2]);
    let s2 = acc.next(2 * L).unwrap();
    relocate(acc, 1, 2 * L, s0, s2);
    acc.stabilize(3 * L).unwrap(); // frees s0
    acc.flush();
    let s3 = acc.next(3 * L).unwrap(); // reuses s0's slot
    relocate(acc, 2, 3 * L, s1, s3);
    relocate(acc, 1, 3 * L, s2, s3);
    acc.stabilize(4 * L).unwrap(); // frees s1 and s2
    acc.flush();
    assert_eq!(acc.stats().free, 2);
}

/// Model 20, the shrink vs `pause_rewriting`: a `next` that would shrink
/// the file races a pause. Once the pause returns the file is never cut
/// (the tip does not go down and no truncation starts) until resumed.
#[test]
fn model_20_shrink_vs_pause() {
    explore("20 shrink vs pause_rewriting", 2, || {
        let (acc, _collector, _storage) = accountant();
        top_two_free(&acc);
        let writer = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(4 * L).unwrap())
        };
        acc.pause_rewriting();
        let tip = acc.tip();
        let lid = writer.join().unwrap();
        let later = acc.next(5 * L).unwrap();
        assert!(later >= tip, "reused while paused");
        // Every cut lowers the tip first (a cut decided before the pause
        // may reach the storage after it, over segments already cut off).
        assert!(acc.tip() >= tip, "the tip went down while paused");
        assert_ne!(lid, later);
        acc.resume_rewriting().unwrap();
        acc.audit().unwrap();
    });
}

/// Model 21, a truncation that fails (its `set_len` returns an error) and
/// is retried, racing another `next`: the error is reported once, by a
/// `next` that then handed out nothing; a retry succeeds; no lid is handed
/// out twice and nothing leaks.
#[test]
fn model_21_failed_truncation_retried() {
    explore("21 a failed truncation, retried", 2, || {
        let (acc, _collector, storage) = accountant();
        top_two_free(&acc);
        storage.fail_set_len.store(1, Ordering::Release);
        let other = {
            let acc = acc.clone();
            thread::spawn(move || acc.next(5 * L))
        };
        let mine = acc.next(4 * L);
        let other = other.join().unwrap();
        let failed = [&mine, &other]
            .iter()
            .filter(|r| matches!(r, Err(Error::Truncation(_))))
            .count();
        assert!(failed <= 1, "the truncation error was reported twice");
        let mine = mine.or_else(|_| acc.next(4 * L)).unwrap();
        let other = other.or_else(|_| acc.next(5 * L)).unwrap();
        assert_ne!(mine, other);
        acc.audit().unwrap();
    });
}

/// Model 22, a recovered accountant whose empty segments wait for the
/// stable lsn to pass the recovered log (recovery rule 4) under a
/// concurrent stabilize and `next`: `next` reuses such a segment only once
/// the stable lsn passed the recovered log's last lsn.
#[test]
fn model_22_recovered_frees_vs_stabilize_and_next() {
    explore("22 from_snapshot frees vs stabilize and next", 1, || {
        let storage = std::sync::Arc::new(LoomStorage::new(3 * SS));
        let collector = Collector::new();
        // Segment 0 holds page 1 (lsn 0), segment 1 is empty, segment 2
        // holds page 2 (lsn 2L) and was being written at the crash.
        let mut snapshot = Snapshot::empty();
        let fragment = |lsn: i64, lid: u64| Fragment::new(lsn, DiskPtr::Inline(lid), 8);
        snapshot
            .pages
            .insert(1, PageState::Present(vec![fragment(0, 0)]));
        snapshot
            .pages
            .insert(2, PageState::Present(vec![fragment(2 * L, 2 * SS)]));
        snapshot.last_lid = Some(2 * SS);
        snapshot.last_lsn = 2 * L + 8;
        snapshot.max_header_stable_lsn = L;
        let acc = loom::sync::Arc::new(
            Accountant::from_snapshot(config(), storage, collector, &snapshot, 3 * SS).unwrap(),
        );
        segment_with(&acc, 3 * L, &[3]);
        let stabilizer = {
            let acc = acc.clone();
            thread::spawn(move || {
                acc.stabilize(4 * L).unwrap();
                acc.flush();
            })
        };
        let stable_before = acc.stable_lsn();
        let lid = acc.next(4 * L).unwrap();
        stabilizer.join().unwrap();
        if lid == SS {
            assert!(
                acc.stable_lsn() > snapshot.last_lsn,
                "a recovered empty segment reused before the stable lsn passed the log (stable was {stable_before})"
            );
        }
        acc.flush();
        acc.audit().unwrap();
    });
}

/// Model 23, the loom stand-in of crossbeam's queue promises no more than
/// crossbeam does: a push happens-before only the pop that takes its
/// element. One pusher writes a value and pushes 1, another pushes 2,
/// another thread pops, and we pop. When our pop takes 2 from the second
/// position (so 1 was queued first), it synchronized with the push of 2
/// only and may miss the first pusher's write. The model checks that this
/// weak outcome is *reachable*: a stand-in that orders more (a locked
/// deque: every push before every later pop) hides it, and would let the
/// models pass on code that the real queue breaks.
#[test]
fn model_23_queue_stand_in_is_not_stronger() {
    use std::sync::atomic::{AtomicBool as StdBool, Ordering as StdOrdering};
    static WEAK_SEEN: StdBool = StdBool::new(false);
    WEAK_SEEN.store(false, StdOrdering::Relaxed);
    explore(
        "23 the queue stand-in is not stronger than crossbeam",
        2,
        || {
            let queue = loom::sync::Arc::new(segment_accountant::loom_queue::Queue::new());
            let data = loom::sync::Arc::new(AtomicU64::new(0));
            let first = {
                let (queue, data) = (queue.clone(), data.clone());
                thread::spawn(move || {
                    data.store(1, Ordering::Relaxed);
                    queue.push(1u8);
                })
            };
            let second = {
                let queue = queue.clone();
                thread::spawn(move || queue.push(2u8))
            };
            let other = {
                let queue = queue.clone();
                thread::spawn(move || queue.pop())
            };
            if queue.pop_indexed() == Some((1, 2)) && data.load(Ordering::Relaxed) == 0 {
                WEAK_SEEN.store(true, StdOrdering::Relaxed);
            }
            other.join().unwrap();
            first.join().unwrap();
            second.join().unwrap();
        },
    );
    assert!(
        WEAK_SEEN.load(StdOrdering::Relaxed),
        "the queue stand-in orders more than crossbeam's queue promises"
    );
}

/// Model 24, the free tree: a claim racing the collection of a stale bit
/// and a free. Segment 4 (chunk 1 under loom: four leaf words of two bits,
/// two level-1 words, a root) was freed and claimed, so its own bit is
/// stale-set (a claim writes only the segment's word) and so are the bits
/// above its leaf word. The other thread collects 4 (clears its bit, as
/// the combiner does) and then frees its neighbour 5 (same leaf word);
/// the claim may pass over 4's stale bit, or find the word empty and
/// retire the bits above it. Whatever the interleaving, segment 5 is
/// either claimed by the racing claim or found by the next one (a
/// retirement never leaves a free segment under a clear summary bit, and
/// a stale bit never hides one), and the summary invariant holds.
#[test]
fn model_24_free_tree_claim_vs_free() {
    use segment_accountant::loom_free_tree::FreeTree;
    explore(
        "24 free tree: claim racing a collection and a free",
        2,
        || {
            let tree = loom::sync::Arc::new(FreeTree::new(12));
            assert!(tree.free(4));
            assert_eq!(tree.claim(12), Some(4));
            let combiner = {
                let tree = tree.clone();
                thread::spawn(move || {
                    assert!(tree.collect(4), "a claim cleared its own bit");
                    assert!(tree.free(5));
                })
            };
            let claimed = tree.claim(12);
            combiner.join().unwrap();
            assert!(claimed.is_none() || claimed == Some(5), "{claimed:?}");
            tree.check().unwrap();
            let next = tree.claim(12);
            match claimed {
                Some(_) => assert_eq!(next, None),
                None => assert_eq!(next, Some(5), "a free segment is invisible to claims"),
            }
            assert!(tree.is_active(4) && tree.is_active(5));
            tree.check().unwrap();
        },
    );
}

/// Model 25, the free tree: two claims racing each other, over a stale
/// bit (segment 4, claimed and not collected) and two free segments in
/// different chunks (1 in chunk 0, 6 in chunk 1). Each claim gets one of
/// them, never the same one (the claim is the segment word's
/// compare-and-swap), and neither comes back empty-handed; nothing is
/// left free, though all three bits stay set until collected.
#[test]
fn model_25_free_tree_claim_vs_claim() {
    use segment_accountant::loom_free_tree::FreeTree;
    explore("25 free tree: claim racing claim", 2, || {
        let tree = loom::sync::Arc::new(FreeTree::new(12));
        assert!(tree.free(4));
        assert_eq!(tree.claim(12), Some(4));
        assert!(tree.free(1));
        assert!(tree.free(6));
        let other = {
            let tree = tree.clone();
            thread::spawn(move || tree.claim(12))
        };
        let mine = tree.claim(12);
        let theirs = other.join().unwrap();
        let mut got = [
            mine.expect("a claim missed"),
            theirs.expect("a claim missed"),
        ];
        got.sort_unstable();
        assert_eq!(got, [1, 6], "one segment claimed twice");
        assert_eq!(tree.claim(12), None);
        tree.check().unwrap();
        for index in [1, 4, 6] {
            assert!(tree.is_active(index));
            assert!(tree.collect(index), "segment {index}'s bit was not stale");
        }
    });
}

/// Model 27, the landing's order: a segment lands (its free bit, then its
/// word Freeing → Free) while another thread looks at it as a claimer
/// would: its word, then its bit (the looker is the spawned thread: with
/// the roles the other way round, loom found one interleaving only). Whenever the word is claimable, its bit
/// is already set, so the claimer's claim (and the combiner's clear after
/// it) meets a set bit; a landing that made the word Free first would let
/// a claimer delayed since an older bit claim a segment with no bit, and
/// the bit set after it would stay set on an Active segment.
#[test]
fn model_27_landing_sets_the_bit_before_the_word() {
    use segment_accountant::loom_free_tree::FreeTree;
    explore("27 a landing's bit before its word", 2, || {
        let tree = loom::sync::Arc::new(FreeTree::new(4));
        let looker = {
            let tree = tree.clone();
            thread::spawn(move || tree.claimable_with_bit(1))
        };
        assert!(tree.free(1));
        let seen = looker.join().unwrap();
        assert_ne!(seen, Some(false), "a claimable word without its free bit");
        assert_eq!(tree.claimable_with_bit(1), Some(true));
        assert_eq!(tree.claim(4), Some(1));
        assert!(tree.collect(1));
        tree.check().unwrap();
    });
}

/// Model 26, `stabilize`'s check against the segments handed out: `next`
/// writes no bound for it (the combiner raises one as it collects
/// activations; a goal above it reads the in-use set, then the bound
/// again). Segment 0 was handed out before the threads start; a second
/// thread hands out segment 1 and says so (Release), a third seals segment
/// 0 (its pass collects, seals and removes it from the set). Neither of
/// this thread's bounds, each for segments handed out before the call,
/// is ever refused.
#[test]
fn model_26_stabilize_bound_vs_next_and_seal() {
    explore("26 stabilize's bound vs next and a seal", 2, || {
        let (acc, _collector, _storage) = accountant();
        segment_with(&acc, 0, &[1]);
        let handed = loom::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (acc, handed) = (acc.clone(), handed.clone());
            thread::spawn(move || {
                acc.next(L).unwrap();
                // Release: the caller's word that segment 1 was handed out.
                handed.store(true, Ordering::Release);
            })
        };
        let sealer = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(L).unwrap())
        };
        acc.stabilize(L).expect("segment 0 was handed out");
        if handed.load(Ordering::Acquire) {
            acc.stabilize(2 * L).expect("segment 1 was handed out");
        }
        writer.join().unwrap();
        sealer.join().unwrap();
        acc.stabilize(2 * L).unwrap();
        assert!(matches!(
            acc.stabilize(3 * L),
            Err(Error::StableBeyondLog { end, .. }) if end == 2 * L
        ));
        acc.audit().unwrap();
    });
}

/// Model 28, a drain start that waits for its seal bound, completed either
/// by the `clean` that finds no page to suggest (with a refresh) or by the
/// pass that seals the segment in use at its move (without one). Page 1 of
/// O was replaced into T before O was sealed and started draining, so O's
/// drain start waits for T's seal; a `clean` races the `stabilize` that
/// seals T (which, holding one page, starts draining too). Neither path
/// lets `clean` suggest page 1 from O (from T it may), and once both
/// returned, page 2 of O is suggestable (docs/protocols/replace.md, "Drain
/// starts that wait for their seal bound"; seeded bugs
/// `drain-before-seal-bound` and `settle-without-refresh`).
#[test]
fn model_28_waiting_drain_start_vs_seal_bound() {
    explore("28 waiting drain start: clean vs the seal bound", 3, || {
        let (acc, _collector, _storage) = accountant();
        let o = segment_with(&acc, 0, &[1, 2]);
        let t = acc.next(L).unwrap();
        relocate(&acc, 1, L, o, t);
        acc.stabilize(L).unwrap();
        assert_eq!(state(&acc, 0), Draining);
        let pick = |acc: &Accountant| acc.clean(Skip::Nothing).map(|r| (r.pid, r.segment_lid));
        // Two picks: a list of O holding both pages hands out page 2 first.
        let cleaner = {
            let acc = acc.clone();
            thread::spawn(move || [(); 2].map(|()| pick(&acc)))
        };
        acc.stabilize(2 * L).unwrap();
        let mut picks = cleaner.join().unwrap().to_vec();
        // Round robin over T's list and O's: both come up in three picks.
        picks.extend([(); 3].map(|()| pick(&acc)));
        assert!(
            !picks.contains(&Some((1, o))),
            "clean suggested page 1 from O after its replace: {picks:?}"
        );
        assert!(
            picks[2..].contains(&Some((2, o))),
            "O's drain list is complete: {picks:?}"
        );
        acc.flush();
        acc.audit().unwrap();
    });
}
