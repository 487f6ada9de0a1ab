//! Loom model of the combiner with a panicking pass (issue 14): a
//! callback run inside a pass panics, and the token is still handed on.
//! Run with `--test unwind` under the flags of `run.sh`.

#![cfg(loom)]

use loom::thread;
use loom_tests::{accountant, explore, quiet_injected_panics, SS};
use segment_accountant::{Callback, DiskPtr, Error, SegmentState::*};

const L: i64 = SS as i64;

/// Model U1, a panicking combiner pass: two threads stabilize while the
/// pass that seals segment 1 runs `Storage::remove_blob`, which panics.
/// Whichever thread combines, and whatever the interleaving: no panic
/// escapes either call; the panic is reported exactly once (by one of the
/// two calls, or by the next `stabilize`, from the sink); both goals are
/// done (the token was handed on, not left set); a later `stabilize` takes
/// the token and makes progress; the audit passes.
#[test]
fn model_u1_panicking_pass_hands_the_token_on() {
    quiet_injected_panics();
    explore("u1 panicking pass hands the token on", 3, || {
        let (acc, _collector, storage) = accountant();
        let blob = DiskPtr::Blob { lid: 0, blob: 7 };
        let s0 = acc.next(0).unwrap();
        assert_eq!(s0, 0);
        acc.mark_link(1, 0, blob, 8).unwrap();
        let s1 = acc.next(L).unwrap();
        // Sealing segment 1 removes blob 7: that call panics.
        acc.mark_replace(1, L, &[blob], DiskPtr::Inline(s1), 8)
            .unwrap();
        let s2 = acc.next(2 * L).unwrap();
        acc.mark_link(2, 2 * L, DiskPtr::Inline(s2), 8).unwrap();
        acc.next(3 * L).unwrap();
        storage
            .panicking_removals
            .store(1, std::sync::atomic::Ordering::Relaxed);

        let a = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(2 * L))
        };
        let b = {
            let acc = acc.clone();
            thread::spawn(move || acc.stabilize(3 * L))
        };
        // `join` re-raises a panic that escaped: none may.
        let results = [a.join().unwrap(), b.join().unwrap()];
        assert_eq!(
            storage
                .panicking_removals
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "the pass ran the panicking removal"
        );
        let is_ours = |r: &Result<(), Error>| {
            matches!(
                r,
                Err(Error::CallbackPanicked {
                    callback: Callback::RemoveBlob(7),
                    ..
                })
            )
        };
        for r in &results {
            assert!(r.is_ok() || is_ours(r), "unexpected {r:?}");
        }
        let mut reported = results.iter().filter(|r| is_ours(r)).count();
        // Both goals done: the token went on past the panic.
        assert_eq!(acc.stable_lsn(), 2 * L);
        for i in 0..3 {
            assert_ne!(acc.segment_info(i).unwrap().state, Active, "segment {i}");
        }
        // The next stabilize finds the token free; it reports the panic if
        // no caller has yet (the pass was done for someone else).
        let later = acc.stabilize(3 * L);
        if is_ours(&later) {
            reported += 1;
        } else {
            later.unwrap();
        }
        assert_eq!(reported, 1, "the panic is reported exactly once");
        acc.stabilize(4 * L).unwrap();
        assert_eq!(acc.stable_lsn(), 3 * L);
        acc.flush();
        acc.audit().unwrap();
    });
}
