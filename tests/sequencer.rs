//! The sequencer owns only the file tip. These tests hold a truncation's
//! `sync` on a latch and show that `mark_link`, `mark_replace`,
//! `stabilize`, `flush`, `clean` and `next` from the free list all complete
//! meanwhile (each on its own thread, with a deadline), that growing the
//! tip back over the truncated range waits until the truncation has
//! finished, and that a failed truncation (`set_len` or `sync` error) is
//! reported once by the next tip change, after which a retry succeeds.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{within, LatchedStorage};
use segment_accountant::Skip;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Error, LogFile, Lsn, SegmentState, Storage,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;
/// Generous: a call that blocks never returns, one that does not returns in
/// milliseconds, so a loaded machine never comes near it.
const DEADLINE: Duration = Duration::from_secs(30);

fn ptr(lid: u64, off: u64) -> DiskPtr {
    DiskPtr::Inline(lid + off)
}

fn state(acc: &Accountant, index: usize) -> SegmentState {
    acc.segment_info(index).unwrap().state
}

/// Builds: segment 0 (lsn 5L) live with pages 1, 2 and 4; segment 1
/// Active at lsn 6L; segment 2 (lsn 2L) Draining with page 3; segments 3
/// and 4 Free at the top of a five-segment file. The next shrink cuts 3
/// and 4 off.
fn setup(storage: Arc<LatchedStorage>) -> (Arc<Accountant>, u64) {
    let config = Config::builder().segment_size(SS).build().unwrap();
    // A private collector: nobody else's pins delay our frees.
    let acc = Arc::new(Accountant::with_collector(
        config,
        storage.clone(),
        Collector::new(),
    ));
    let s: Vec<u64> = (0..4).map(|i| acc.next(i * L).unwrap()).collect();
    for (i, &lid) in s.iter().enumerate() {
        acc.mark_link(i as u64 + 1, i as Lsn * L, ptr(lid, 0), 100)
            .unwrap();
    }
    storage.inner.write_at(5 * SS - 1, &[0]).unwrap(); // the file holds 5 segments
    let s4 = acc.next(4 * L).unwrap();
    acc.mark_replace(1, 4 * L, &[ptr(s[0], 0)], ptr(s4, 0), 100)
        .unwrap();
    acc.mark_replace(2, 4 * L, &[ptr(s[1], 0)], ptr(s4, 100), 100)
        .unwrap();
    acc.stabilize(5 * L).unwrap();
    acc.flush();
    assert_eq!(state(&acc, 0), SegmentState::Free);
    assert_eq!(state(&acc, 1), SegmentState::Free);
    // Reuse segment 0 for lsn 5L: move pages 1, 2 (segment 4) and 4
    // (segment 3) there; segment 1 becomes the Active segment at 6L.
    let a0 = acc.next(5 * L).unwrap();
    assert_eq!(a0, 0);
    acc.mark_replace(1, 5 * L, &[ptr(s4, 0)], ptr(a0, 0), 100)
        .unwrap();
    acc.mark_replace(2, 5 * L, &[ptr(s4, 100)], ptr(a0, 100), 100)
        .unwrap();
    acc.mark_replace(4, 5 * L, &[ptr(s[3], 0)], ptr(a0, 200), 100)
        .unwrap();
    let active = acc.next(6 * L).unwrap();
    assert_eq!(active, SS);
    acc.stabilize(6 * L).unwrap();
    acc.flush();
    assert_eq!(state(&acc, 2), SegmentState::Draining); // page 3, few pages
    assert_eq!(state(&acc, 3), SegmentState::Free);
    assert_eq!(state(&acc, 4), SegmentState::Free);
    assert_eq!(acc.tip(), 5 * SS);
    (acc, active)
}

/// Shows: while a truncation's sync is blocked, every other operation
/// completes (links, replaces, stabilize, flush, clean, `next` from the
/// free list), and a `next` that must grow the tip back over the
/// truncated range waits until the truncation has finished.
#[test]
fn hot_path_completes_while_a_truncation_sync_is_blocked() {
    let storage = Arc::new(LatchedStorage::default());
    let (acc, active) = setup(storage.clone());
    storage.sync_latch.close();
    let _open = storage.sync_latch.open_on_drop();

    // A tip change: shrinks over segments 3 and 4 (the truncation's sync
    // blocks), finds nothing free, and must grow the tip back over the
    // truncated range, so it waits for the truncation.
    let grower = {
        let acc = acc.clone();
        std::thread::spawn(move || acc.next(7 * L))
    };
    storage.sync_latch.await_waiting(1, "the truncation's sync");
    assert_eq!(acc.tip(), 3 * SS, "the shrink lowered the tip");

    // Everything else proceeds meanwhile, each call with a deadline.
    let a = acc.clone();
    within(DEADLINE, "mark_link", move || {
        a.mark_link(10, 6 * L, ptr(active, 0), 50)
    })
    .unwrap();
    let a = acc.clone();
    within(DEADLINE, "mark_replace", move || {
        a.mark_replace(3, 6 * L, &[ptr(2 * SS, 0)], ptr(active, 50), 50)
    })
    .unwrap();
    let a = acc.clone();
    let picked = within(DEADLINE, "clean", move || {
        a.clean(Skip::Page(0)).map(|r| r.pid)
    });
    assert!(
        matches!(picked, Some(1 | 2 | 4)),
        "segment 0 (pages 1, 2, 4) is draining: {picked:?}"
    );
    let a = acc.clone();
    within(DEADLINE, "stabilize", move || a.stabilize(7 * L)).unwrap();
    // Segment 1 sealed; segment 2 emptied by the replace of page 3.
    let a = acc.clone();
    within(DEADLINE, "flush", move || a.flush());
    assert!(matches!(
        state(&acc, 1),
        SegmentState::Inactive | SegmentState::Draining
    ));
    assert_eq!(state(&acc, 2), SegmentState::Free);
    // `next` from the free list: the sequencer is busy, so no shrink is
    // attempted; the free segment 2 is reused without waiting.
    let a = acc.clone();
    let reused = within(DEADLINE, "next from the free list", move || a.next(8 * L)).unwrap();
    assert_eq!(reused, 2 * SS);
    let a = acc.clone();
    within(DEADLINE, "mark_link into the reused segment", move || {
        a.mark_link(11, 8 * L, ptr(reused, 0), 10)
    })
    .unwrap();
    assert_eq!(acc.tip(), 3 * SS, "nothing grew the tip meanwhile");

    // The grower is still waiting for the truncation.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !grower.is_finished(),
        "the tip grew back before the truncation finished"
    );
    assert_eq!(storage.sync_latch.waiting(), 1);
    storage.sync_latch.open();
    let lid = grower.join().unwrap().unwrap();
    assert_eq!(lid, 3 * SS, "the tip grows back over the truncated range");
    assert_eq!(acc.tip(), 4 * SS);
    assert_eq!(state(&acc, 3), SegmentState::Active);
    assert_eq!(acc.stats().bytes_truncated, 2 * SS);
    assert_eq!(storage.inner.len().unwrap(), 3 * SS, "the file was cut");
    assert!(storage.inner.syncs() >= 1, "and the cut was synced");
    acc.stabilize(9 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}

/// Shows: a truncation whose `set_len` fails is reported as
/// `Error::Truncation` by the next tip change, which changes nothing; the
/// error is reported once, and a retry (same lsn) succeeds.
#[test]
fn set_len_error_is_reported_by_the_next_tip_change() {
    let storage = Arc::new(LatchedStorage::default());
    let (acc, _active) = setup(storage.clone());
    storage.fail_set_len.store(1, Ordering::SeqCst);
    // Shrinks (the truncation fails in the background), then must extend:
    // the extension reports the failure.
    let err = acc.next(7 * L).unwrap_err();
    assert!(matches!(err, Error::Truncation(_)), "{err}");
    assert_eq!(acc.tip(), 3 * SS);
    assert_eq!(state(&acc, 3), SegmentState::Vacant);
    acc.audit().unwrap();
    // Reported once; the retry with the same lsn succeeds.
    let lid = acc.next(7 * L).unwrap();
    assert_eq!(lid, 3 * SS);
    acc.stabilize(8 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}

/// Shows: the same for a truncation whose `sync` fails (the length change
/// was made but not made durable).
#[test]
fn sync_error_is_reported_by_the_next_tip_change() {
    let storage = Arc::new(LatchedStorage::default());
    let (acc, _active) = setup(storage.clone());
    storage.fail_sync.store(1, Ordering::SeqCst);
    let err = acc.next(7 * L).unwrap_err();
    assert!(matches!(err, Error::Truncation(_)), "{err}");
    assert_eq!(acc.tip(), 3 * SS);
    assert_eq!(
        storage.fail_sync.load(Ordering::SeqCst),
        0,
        "sync was tried"
    );
    acc.audit().unwrap();
    let lid = acc.next(7 * L).unwrap();
    assert_eq!(lid, 3 * SS);
    // A later tip change finds nothing to report.
    let lid = acc.next(8 * L).unwrap();
    assert_eq!(lid, 4 * SS);
    acc.stabilize(9 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}
