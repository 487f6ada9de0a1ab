//! The seal boundary: a write racing the stabilize that seals its own
//! segment lands wholly before the seal or not at all, and no lsn is
//! handed out twice (docs/protocols/seal.md). Each test reproduces a defect
//! of the earlier "link, then check, then undo" design; the loom models in
//! `loom-tests` check the same pairs exhaustively.
//!
//! The racing tests repeat a race many times and check, every time, the
//! outcome a correct accountant must produce whichever way the race went;
//! none depends on the machine's speed.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::LatchedStorage;
use segment_accountant::{Accountant, Collector, Config, DiskPtr, Error, MemStorage};

const SS: u64 = 64;
const L: i64 = SS as i64;

fn config() -> Config {
    Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .temporary(true)
        .build()
        .unwrap()
}

fn accountant() -> Arc<Accountant> {
    Arc::new(Accountant::with_collector(
        config(),
        Arc::new(MemStorage::new()),
        Collector::new(),
    ))
}

/// Defect 1: with a stabilize stopped mid-pass (in `remove_blob`, after it
/// sealed segment 0), `next(0)` for the lsn it is sealing is refused, and
/// after the pass the lsn is stable, so it is refused for good.
#[test]
fn next_never_hands_out_an_lsn_being_sealed() {
    let storage = Arc::new(LatchedStorage::default());
    let acc = Arc::new(Accountant::with_collector(
        config(),
        storage.clone(),
        Collector::new(),
    ));
    let lid = acc.next(0).unwrap();
    acc.mark_link(1, 0, DiskPtr::Inline(lid), 8).unwrap();
    // A replace inside the segment whose old fragment was a blob: segment
    // 0's seal removes blob 7.
    acc.mark_replace(
        1,
        8,
        &[DiskPtr::Blob { lid, blob: 7 }],
        DiskPtr::Inline(lid + 8),
        8,
    )
    .unwrap();
    storage.blob_latch.close();
    let _open = storage.blob_latch.open_on_drop();
    let stabilizer = {
        let acc = acc.clone();
        thread::spawn(move || acc.stabilize(L))
    };
    storage.blob_latch.await_waiting(1, "the seal of segment 0");
    let again = acc.next(0);
    assert!(
        matches!(
            again,
            Err(Error::LsnInUse { .. } | Error::LsnAlreadyStable { .. })
        ),
        "next(0) while its segment is being sealed: {again:?}"
    );
    storage.blob_latch.open();
    stabilizer.join().unwrap().unwrap();
    assert!(matches!(acc.next(0), Err(Error::LsnAlreadyStable { .. })));
    acc.flush();
    acc.audit().unwrap();
}

/// Defect 1, raced: `next(L)` for an lsn that was handed out, against the
/// stabilize sealing it. Whichever wins, the lsn is never handed out again.
#[test]
fn next_racing_the_seal_of_its_lsn_never_doubles() {
    for round in 0..2_000 {
        let acc = accountant();
        let lid = acc.next(0).unwrap();
        acc.mark_link(1, 0, DiskPtr::Inline(lid), 8).unwrap();
        let start = Arc::new(Barrier::new(2));
        let stabilizer = {
            let (acc, start) = (acc.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                acc.stabilize(L).unwrap();
            })
        };
        start.wait();
        let again = acc.next(0);
        stabilizer.join().unwrap();
        assert!(again.is_err(), "round {round}: lsn 0 handed out twice");
        acc.audit().unwrap();
    }
}

/// Defect 2: `mark_replace` moving page 1 from O into T, racing the
/// stabilize that seals T. If it succeeds, T holds the page and the
/// replacement empties O once T is sealed; if it fails, nothing changed:
/// O still holds the page, not yet replaced, and T does not. Either way
/// the page's copy is tracked (property A).
#[test]
fn mark_replace_racing_the_seal_of_its_new_segment_lands_wholly_or_not_at_all() {
    for round in 0..2_000 {
        let acc = accountant();
        let o = acc.next(0).unwrap();
        acc.mark_link(1, 0, DiskPtr::Inline(o), 8).unwrap();
        acc.mark_link(2, 1, DiskPtr::Inline(o + 8), 8).unwrap();
        let t = acc.next(L).unwrap();
        let start = Arc::new(Barrier::new(2));
        let stabilizer = {
            let (acc, start) = (acc.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                acc.stabilize(2 * L).unwrap();
            })
        };
        start.wait();
        let replaced = acc.mark_replace(1, L, &[DiskPtr::Inline(o)], DiskPtr::Inline(t), 8);
        stabilizer.join().unwrap();
        let (o_pages, t_pages) = (acc.segment_pages(0), acc.segment_pages(1));
        match replaced {
            Ok(()) => {
                assert_eq!(o_pages, vec![(2, 8)], "round {round}: O after the replace");
                assert_eq!(t_pages, vec![(1, 8)], "round {round}: T after the replace");
            }
            Err(Error::LinkRacedStabilize { .. } | Error::SegmentSealed { .. }) => {
                assert_eq!(
                    o_pages,
                    vec![(1, 8), (2, 8)],
                    "round {round}: a refused replace changed O"
                );
                assert_eq!(
                    acc.segment_not_yet_replaced(0),
                    vec![1, 2],
                    "round {round}: a refused replace cleared O's flag"
                );
                assert!(
                    t_pages.is_empty(),
                    "round {round}: T after a refused replace"
                );
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        acc.audit().unwrap();
    }
}

/// Defect 3: links into T racing the stabilize that seals it (new pages
/// and updates of pages already there). Every link that returned `Ok` is
/// counted in T's sealed live bytes, every refused one left nothing, and
/// a page whose update was refused keeps its bytes and its flag.
#[test]
fn mark_link_racing_the_seal_keeps_live_bytes_exact() {
    for round in 0..2_000 {
        let acc = accountant();
        let t = acc.next(0).unwrap();
        acc.mark_link(1, 0, DiskPtr::Inline(t), 8).unwrap();
        let start = Arc::new(Barrier::new(2));
        let stabilizer = {
            let (acc, start) = (acc.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                thread::sleep(Duration::from_micros(round % 20));
                acc.stabilize(L).unwrap();
            })
        };
        start.wait();
        let mut expected = vec![(1u64, 8u64)];
        for i in 0u64.. {
            // Alternate an update of page 1 and a new page.
            let pid = if i % 2 == 0 { 1 } else { 2 + i };
            match acc.mark_link(pid, 1, DiskPtr::Inline(t + 1), 4) {
                Ok(()) if pid == 1 => expected[0].1 += 4,
                Ok(()) => expected.push((pid, 4)),
                Err(Error::LinkRacedStabilize { .. }) => break,
                // After the seal: the error names the stabilize that
                // covered T (possibly one still publishing its lsn).
                Err(Error::SegmentSealed {
                    segment_lsn,
                    stable_lsn,
                    ..
                }) => {
                    assert_eq!(segment_lsn, 0, "round {round}");
                    assert!(stable_lsn >= 0, "round {round}: {stable_lsn}");
                    break;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        stabilizer.join().unwrap();
        expected.sort_unstable();
        assert_eq!(acc.segment_pages(0), expected, "round {round}");
        let bytes: u64 = expected.iter().map(|&(_, b)| b).sum();
        assert_eq!(
            acc.segment_info(0).unwrap().live_bytes,
            bytes,
            "round {round}"
        );
        acc.audit().unwrap();
    }
}

/// `next` no longer writes the bound `stabilize` checks against (the
/// combiner raises it as it collects activations, and a goal above it asks
/// the in-use set): a segment handed out on one thread and vouched for on
/// another is never refused as `StableBeyondLog`, while other threads seal
/// and remove lsns from the in-use set at the same time.
#[test]
fn stabilize_of_a_segment_handed_out_on_another_thread_is_never_refused() {
    const SEGMENTS: i64 = 3000;
    let acc = accountant();
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    let writer = {
        let acc = Arc::clone(&acc);
        thread::spawn(move || {
            for n in 0..SEGMENTS {
                let lid = acc.next(n * L).unwrap();
                acc.mark_link(n as u64, n * L, DiskPtr::Inline(lid), 8)
                    .unwrap();
                // The store vouches for the segment's end: seal it.
                tx.send((n + 1) * L).unwrap();
            }
        })
    };
    // A second stabilizer races the first with lower goals, so passes
    // (and removals from the in-use set) run on both threads.
    let (tx2, rx2) = std::sync::mpsc::channel::<i64>();
    let other = {
        let acc = Arc::clone(&acc);
        thread::spawn(move || {
            for bound in rx2 {
                acc.stabilize(bound).unwrap();
            }
        })
    };
    for bound in rx {
        acc.stabilize(bound).unwrap();
        tx2.send(bound - L).unwrap();
    }
    drop(tx2);
    writer.join().unwrap();
    other.join().unwrap();
    acc.stabilize(SEGMENTS * L).unwrap();
    assert_eq!(acc.stable_lsn(), (SEGMENTS - 1) * L);
    assert!(matches!(
        acc.stabilize((SEGMENTS + 1) * L),
        Err(Error::StableBeyondLog { end, .. }) if end == SEGMENTS * L
    ));
    acc.audit().unwrap();
}
