//! Nothing a caller, a callback or a panic does wedges the accountant
//! (issue 14, spec property F). One test per defect the issue lists, each
//! through the public API except the two that need a state the public API
//! cannot reach quickly (2^20 reuses of one segment; a broken internal
//! invariant), which are unit tests in `src/accountant/combiner.rs` and
//! `src/core/freelist.rs`.
//!
//! The policy under test: a panic in caller-supplied code the accountant
//! runs (`Storage`, `CleaningPolicy`, closures deferred on the shared epoch
//! collector) is caught where the accountant calls it and returned as
//! `Error::CallbackPanicked` by the call that ran it (or, when nobody asked
//! for that work, by a later `stabilize`); the accountant stays consistent
//! and every later call works.
//!
//! Calls that could hang run under `common::within`, with a bound (30 s)
//! no loaded machine comes near: the tests never depend on speed.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::quiet_injected_panics;
use common::within;
use segment_accountant::fault::FaultStorage;
use segment_accountant::policy::SegmentFacts;
use segment_accountant::{
    Accountant, Callback, CleaningPolicy, Collector, Config, DiskPtr, Error, LogFile, Lsn,
    MemStorage, SegmentState, Storage,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;
const BOUND: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::builder().segment_size(SS).build().unwrap()
}

fn ptr(lid: u64) -> DiskPtr {
    DiskPtr::Inline(lid)
}

fn is_panic_of(result: &Result<(), Error>, expected: Callback) -> bool {
    matches!(result, Err(Error::CallbackPanicked { callback, .. }) if *callback == expected)
}

/// Defect 1: a panic inside the combiner (here `Storage::remove_blob`)
/// left its busy bit set, and every later `stabilize` did nothing. Now the
/// stabilize that ran it reports it, the bookkeeping is complete, and a
/// later stabilize makes progress.
#[test]
fn a_panicking_blob_removal_costs_one_call() {
    quiet_injected_panics();
    let storage = Arc::new(FaultStorage::restart(Vec::new(), 1));
    let acc = Arc::new(Accountant::with_collector(
        config(),
        storage.clone(),
        Collector::new(),
    ));
    let s0 = acc.next(0).unwrap();
    storage.add_blob(7);
    acc.mark_link(1, 0, DiskPtr::Blob { lid: s0, blob: 7 }, 100)
        .unwrap();
    acc.mark_link(2, 1, ptr(s0 + 100), 100).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_replace(1, L, &[DiskPtr::Blob { lid: s0, blob: 7 }], ptr(s1), 100)
        .unwrap();
    let s2 = acc.next(2 * L).unwrap();
    acc.mark_link(3, 2 * L, ptr(s2), 10).unwrap();

    storage.panic_next_remove_blob();
    let a = acc.clone();
    let result = within(BOUND, "stabilize with a panicking remove_blob", move || {
        catch_unwind(AssertUnwindSafe(|| a.stabilize(2 * L)))
    })
    .expect("the storage's panic escaped stabilize");
    assert!(
        is_panic_of(&result, Callback::RemoveBlob(7)),
        "the panic is reported as contained: {result:?}"
    );
    // The pass went on: segment 1 sealed, its replacement applied.
    assert_eq!(acc.stable_lsn(), L);
    assert_eq!(acc.segment_info(0).unwrap().removed_pages, 1);
    assert!(storage.has_blob(7), "the blob leaked, as the error says");

    // The token was given back: the next stabilize makes progress.
    let next = acc.next(3 * L).unwrap();
    acc.mark_link(4, 3 * L, ptr(next), 10).unwrap();
    let a = acc.clone();
    within(BOUND, "a later stabilize", move || a.stabilize(3 * L)).unwrap();
    assert_eq!(acc.stable_lsn(), 2 * L);
    assert_ne!(acc.segment_info(2).unwrap().state, SegmentState::Active);
    acc.flush();
    acc.audit().unwrap();
}

/// A cleaning policy that panics on its first `drain_unprompted` calls.
#[derive(Debug, Default)]
struct PanickyPolicy {
    panics_left: AtomicU32,
}

impl CleaningPolicy for PanickyPolicy {
    fn name(&self) -> &str {
        "panicky"
    }

    fn drain_unprompted(&self, _config: &Config, _facts: &SegmentFacts, _tip: u64) -> bool {
        let left = self.panics_left.load(Ordering::SeqCst);
        if left > 0 {
            self.panics_left.store(left - 1, Ordering::SeqCst);
            panic!("injected panic in the cleaning policy");
        }
        false
    }

    fn cleans_without_target(&self) -> bool {
        true
    }

    fn benefit(&self, _facts: &SegmentFacts, _now: Lsn) -> f64 {
        0.0
    }
}

/// Defect 1, with the other callback the combiner runs: a user
/// `CleaningPolicy` that panics. The stabilize reports it, the segment
/// stays a plain Inactive segment, and later stabilizes work.
#[test]
fn a_panicking_cleaning_policy_costs_one_call() {
    quiet_injected_panics();
    let policy = Arc::new(PanickyPolicy {
        panics_left: AtomicU32::new(1),
    });
    let config = Config::builder()
        .segment_size(SS)
        .policy_arc(policy.clone())
        .build()
        .unwrap();
    let acc = Arc::new(Accountant::with_collector(
        config,
        Arc::new(MemStorage::new()),
        Collector::new(),
    ));
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 0, ptr(s0), 100).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_link(2, L, ptr(s1), 100).unwrap();
    let a = acc.clone();
    let result = within(BOUND, "stabilize with a panicking policy", move || {
        catch_unwind(AssertUnwindSafe(|| a.stabilize(L)))
    })
    .expect("the policy's panic escaped stabilize");
    assert!(is_panic_of(&result, Callback::CleaningPolicy), "{result:?}");
    assert_eq!(acc.stable_lsn(), 0);
    assert_eq!(acc.segment_info(0).unwrap().state, SegmentState::Inactive);

    let s2 = acc.next(2 * L).unwrap();
    acc.mark_link(3, 2 * L, ptr(s2), 100).unwrap();
    let a = acc.clone();
    within(BOUND, "a later stabilize", move || a.stabilize(2 * L)).unwrap();
    assert_eq!(acc.stable_lsn(), L);
    assert_eq!(acc.segment_info(1).unwrap().state, SegmentState::Inactive);
    acc.audit().unwrap();
}

/// Defect 2: sizes were not validated; `1 << 63` overwrote the
/// not-yet-replaced flag in the same word, and large sizes overflowed the
/// combiner's sums. Now every size above the segment size is a typed
/// error that changes nothing.
#[test]
fn sizes_beyond_a_segment_are_refused() {
    let acc = Accountant::with_collector(config(), Arc::new(MemStorage::new()), Collector::new());
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 0, ptr(s0), 10).unwrap();
    let s1 = acc.next(L).unwrap();
    for size in [SS + 1, 1 << 32, 1 << 62, 1 << 63, u64::MAX - 1, u64::MAX] {
        let err = acc.mark_link(1, 0, ptr(s0), size).unwrap_err();
        assert!(
            matches!(err, Error::SizeOutOfRange { size: s, max: SS } if s == size),
            "{err}"
        );
        let err = acc
            .mark_replace(2, L, &[ptr(s0)], ptr(s1), size)
            .unwrap_err();
        assert!(matches!(err, Error::SizeOutOfRange { .. }), "{err}");
    }
    // Nothing changed: page 1 is still not yet replaced, with its 10 bytes.
    assert_eq!(acc.segment_pages(0), vec![(1, 10)]);
    assert_eq!(acc.segment_not_yet_replaced(0), vec![1]);
    assert!(acc.segment_pages(1).is_empty());
    // A whole segment is a valid size, and so is a fragment of one.
    acc.mark_link(3, L, ptr(s1), SS).unwrap();
    acc.mark_replace(1, L, &[ptr(s0)], ptr(s1 + 8), 1).unwrap();
    let s2 = acc.next(2 * L).unwrap();
    acc.mark_link(4, 2 * L, ptr(s2), 0).unwrap();
    acc.stabilize(2 * L).unwrap();
    assert_eq!(acc.segment_info(1).unwrap().live_bytes, SS + 1);
    acc.flush();
    acc.audit().unwrap();
}

/// Defect 3: a panic inside `next`'s reuse path (the epoch flush runs the
/// store's deferred destructors) leaked the rewrite gate's reuser count
/// (`pause_rewriting` then spun forever) and the lsn that `next` reserved.
/// Now `next` returns the contained panic having changed nothing: pause
/// returns, and the same lsn can be asked for again.
#[test]
fn a_panicking_deferred_closure_in_next_costs_one_call() {
    quiet_injected_panics();
    let collector = Collector::new();
    let acc = Arc::new(Accountant::with_collector(
        config(),
        Arc::new(MemStorage::new()),
        collector.clone(),
    ));
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 0, ptr(s0), 10).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_replace(1, L, &[ptr(s0)], ptr(s1), 10).unwrap();
    let _s2 = acc.next(2 * L).unwrap();
    // A reader is pinned while segment 0 is freed: its landing waits.
    let reader = collector.register();
    let guard = reader.pin();
    acc.stabilize(2 * L).unwrap();
    assert_eq!(acc.segment_info(0).unwrap().state, SegmentState::Freeing);
    // The store's own garbage on the same collector, with a destructor
    // that panics.
    guard.defer(|| panic!("injected panic in a deferred destructor"));
    guard.flush();
    drop(guard);
    drop(reader);

    // Nothing is Free: `next` flushes the collector, which runs both.
    let a = acc.clone();
    let first = within(BOUND, "next whose flush panics", move || {
        catch_unwind(AssertUnwindSafe(|| a.next(3 * L)))
    })
    .expect("the deferred closure's panic escaped next");
    match &first {
        Ok(_) => {}
        Err(Error::CallbackPanicked {
            callback: Callback::EpochCollector,
            ..
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
    let a = acc.clone();
    within(BOUND, "pause_rewriting after the panic", move || {
        a.pause_rewriting()
    });
    acc.resume_rewriting().unwrap();
    if first.is_err() {
        // Nothing was kept: not the lsn, not a segment.
        acc.next(3 * L).expect("the lsn was released");
    }
    acc.flush();
    acc.stabilize(3 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}

/// Four segments: lsns 0, 3L (page 1), L and 2L at indexes 0..3, the file
/// four segments long. After `stabilize(4L)` and a flush, segments 0, 2
/// and 3 are Free: the next `next` shrinks the file over 2 and 3 (its
/// truncation runs on its own thread) and reuses segment 0.
fn shrinkable(storage: Arc<FaultStorage>) -> Arc<Accountant> {
    let acc = Arc::new(Accountant::with_collector(
        config(),
        storage.clone(),
        Collector::new(),
    ));
    assert_eq!(acc.next(0).unwrap(), 0);
    let s1 = acc.next(3 * L).unwrap();
    assert_eq!(acc.next(L).unwrap(), 2 * SS);
    assert_eq!(acc.next(2 * L).unwrap(), 3 * SS);
    acc.mark_link(1, 3 * L, ptr(s1), 100).unwrap();
    storage.write_at(4 * SS - 1, &[0]).unwrap();
    acc.stabilize(4 * L).unwrap();
    acc.flush();
    for index in [0, 2, 3] {
        assert_eq!(acc.segment_info(index).unwrap().state, SegmentState::Free);
    }
    acc
}

/// Defect 4: a panic on the truncation thread (`set_len`) resurfaced as a
/// panic inside whichever unrelated `next` grew the file next, after the
/// tip was already lowered. Now that `next` reports it as a typed error
/// once, changing nothing, and the retry succeeds.
#[test]
fn a_panicking_truncation_is_reported_once_by_the_next_tip_change() {
    quiet_injected_panics();
    let storage = Arc::new(FaultStorage::restart(Vec::new(), 2));
    let acc = shrinkable(storage.clone());
    storage.panic_next_set_len();
    // Shrinks (the truncation panics on its thread) and reuses segment 0.
    assert_eq!(acc.next(4 * L).unwrap(), 0);
    assert_eq!(acc.tip(), 2 * SS);
    // Nothing free: this one must grow the tip, joining the truncation.
    let a = acc.clone();
    let grown = within(BOUND, "next growing the tip", move || {
        catch_unwind(AssertUnwindSafe(|| a.next(5 * L)))
    })
    .expect("the truncation's panic resurfaced in next");
    assert!(
        matches!(
            grown,
            Err(Error::CallbackPanicked {
                callback: Callback::Truncation,
                ..
            })
        ),
        "{grown:?}"
    );
    assert_eq!(acc.tip(), 2 * SS, "the failed call changed nothing");
    acc.audit().unwrap();
    // Reported once: the retry succeeds.
    assert_eq!(acc.next(5 * L).unwrap(), 2 * SS);
    acc.stabilize(5 * L).unwrap();
    acc.audit().unwrap();
}

/// Defect 4, the drop: a truncation whose thread panicked used to be
/// re-raised by `Drop`, which aborts the process when the accountant is
/// dropped during an unwind. Now the drop is quiet.
#[test]
fn dropping_while_unwinding_after_a_panicking_truncation_does_not_abort() {
    quiet_injected_panics();
    let storage = Arc::new(FaultStorage::restart(Vec::new(), 3));
    let acc = shrinkable(storage.clone());
    storage.panic_next_sync();
    let unwound = std::thread::spawn(move || {
        let acc = Arc::into_inner(acc).expect("one owner");
        assert_eq!(acc.next(4 * L).unwrap(), 0, "shrinks, then reuses");
        // The accountant is dropped while this thread unwinds.
        panic!("injected panic of the thread that owns the accountant");
    })
    .join();
    let payload = unwound.expect_err("the thread panicked");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"injected panic of the thread that owns the accountant"),
        "the thread's own panic, not one from the drop"
    );
}

/// Defect 5: `stabilize(X)` past every lsn ever handed out returned `Ok`
/// and left `next` failing with `LsnAlreadyStable` for every lsn below X.
/// Now it is a typed error with nothing changed.
#[test]
fn stabilizing_past_everything_handed_out_is_refused() {
    let acc = Accountant::with_collector(config(), Arc::new(MemStorage::new()), Collector::new());
    // Nothing handed out yet: any bound that would seal a segment is wrong.
    assert!(matches!(
        acc.stabilize(L),
        Err(Error::StableBeyondLog { end: 0, .. })
    ));
    acc.stabilize(L - 1).unwrap();
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 0, ptr(s0), 10).unwrap();
    let _s1 = acc.next(L).unwrap();
    // Up to 3L (exclusive) seals at most segment 1; 3L would seal 2.
    for x in [3 * L, 3 * L + 1, 100 * L, i64::MAX] {
        let err = acc.stabilize(x).unwrap_err();
        assert!(
            matches!(err, Error::StableBeyondLog { stable_lsn, end } if stable_lsn == x && end == 2 * L),
            "{err}"
        );
    }
    assert_eq!(acc.stable_lsn(), -1, "nothing changed");
    assert_eq!(acc.segment_info(1).unwrap().state, SegmentState::Active);
    // Up to the end of the highest segment handed out is fine.
    acc.stabilize(2 * L).unwrap();
    assert_eq!(acc.stable_lsn(), L);
    // And the lsns after it are still new.
    assert_eq!(acc.next(2 * L).unwrap(), 2 * SS);
    acc.stabilize(3 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}

/// A storage whose `remove_blob` reports each call and then waits for a
/// permit (or passes freely once the gate is opened); blob 3's removal
/// fails.
struct Turnstile {
    inner: MemStorage,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<u64>>,
    permits: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    open: std::sync::atomic::AtomicBool,
}

impl Storage for Turnstile {
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn remove_blob(&self, blob: u64) -> std::io::Result<()> {
        if !self.open.load(Ordering::SeqCst) {
            let _ = self.entered.lock().unwrap().send(blob);
            let _ = self.permits.lock().unwrap().recv_timeout(BOUND);
        }
        if blob == 3 {
            return Err(std::io::Error::other("blob 3 cannot be removed"));
        }
        self.inner.remove_blob(blob)
    }
}

impl LogFile for Turnstile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
}

/// Bounded combiner work: a combiner runs its own pass and at most four
/// more for goals other threads raise meanwhile, then hands the rest over
/// (the next `stabilize`, whatever its lsn, takes it); an error met in a
/// pass done for another caller comes out of a later `stabilize`.
#[test]
fn a_combiner_hands_over_after_four_passes_for_others() {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (permit, permits) = std::sync::mpsc::channel();
    let storage = Arc::new(Turnstile {
        inner: MemStorage::new(),
        entered: std::sync::Mutex::new(entered_tx),
        permits: std::sync::Mutex::new(permits),
        open: std::sync::atomic::AtomicBool::new(false),
    });
    let acc = Arc::new(Accountant::with_collector(
        config(),
        storage.clone(),
        Collector::new(),
    ));
    // Segment 0 holds page i's blob i; segment i replaces it, so sealing
    // segment i removes blob i: one blocking removal per pass.
    let s0 = acc.next(0).unwrap();
    for i in 1..=7u64 {
        acc.mark_link(i, 0, DiskPtr::Blob { lid: s0, blob: i }, 10)
            .unwrap();
    }
    for i in 1..=7u64 {
        let lid = acc.next(i as Lsn * L).unwrap();
        acc.mark_replace(
            i,
            i as Lsn * L,
            &[DiskPtr::Blob { lid: s0, blob: i }],
            ptr(lid),
            10,
        )
        .unwrap();
    }
    acc.next(8 * L).unwrap();

    // The combiner: its own goal seals segments 0 and 1.
    let combiner = {
        let acc = acc.clone();
        std::thread::spawn(move || acc.stabilize(2 * L))
    };
    let mut removed = Vec::new();
    // Results of the other calls: a pass's error done for no waiting
    // caller comes out of a later stabilize, one per call.
    let mut others = Vec::new();
    for raise in 3..=7 {
        let blob = entered.recv_timeout(BOUND).expect("a pass removes a blob");
        removed.push(blob);
        // Raised while the combiner is busy: handed over, returns at once.
        let a = acc.clone();
        others.push(within(BOUND, "a handed-over stabilize", move || {
            a.stabilize(raise * L)
        }));
        permit.send(()).unwrap();
    }
    let own = within(BOUND, "the combiner", move || combiner.join().unwrap());
    assert!(own.is_ok(), "its own pass met no error: {own:?}");
    assert_eq!(removed, vec![1, 2, 3, 4, 5], "one pass each, in lsn order");
    // Own pass plus four for others: segments up to 5 sealed; the goal
    // raised to 7 was handed over, not done.
    assert_eq!(acc.stable_lsn(), 5 * L);
    assert_eq!(acc.segment_info(6).unwrap().state, SegmentState::Active);

    // Any later stabilize takes the handed-over work.
    storage.open.store(true, Ordering::SeqCst);
    others.push(acc.stabilize(0));
    assert_eq!(acc.stable_lsn(), 6 * L);
    others.push(acc.stabilize(0));
    // Blob 3's error, met in a pass done for another caller, was reported
    // exactly once, by one of the later calls.
    let errors: Vec<_> = others.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{others:?}");
    assert!(matches!(errors[0], Error::BlobRemoval { blob: 3, .. }));
    acc.flush();
    acc.audit().unwrap();
}

/// A panicking deferred closure makes crossbeam drop the rest of its bag
/// unrun, and the bag may hold the accountant's landing of a freed
/// segment (here: the store deferred garbage on the default collector from
/// the thread that then stabilizes, so both share one bag). The panic is
/// contained, the landing deferred again, and the segment lands: nothing
/// leaks.
#[test]
fn a_landing_dropped_with_a_panicking_bag_is_deferred_again() {
    quiet_injected_panics();
    let acc = Accountant::new(config(), Arc::new(MemStorage::new()));
    let s0 = acc.next(0).unwrap();
    acc.mark_link(1, 0, ptr(s0), 10).unwrap();
    let s1 = acc.next(L).unwrap();
    acc.mark_replace(1, L, &[ptr(s0)], ptr(s1), 10).unwrap();
    acc.next(2 * L).unwrap();
    // The store's garbage, in this thread's bag of the default collector.
    crossbeam_epoch::pin().defer(|| panic!("injected panic in the store's garbage"));
    // The landing of segment 0 joins the same bag.
    let stabilized = catch_unwind(AssertUnwindSafe(|| acc.stabilize(2 * L)))
        .expect("a deferred closure's panic escaped stabilize");
    assert!(
        stabilized.is_ok() || is_panic_of(&stabilized, Callback::EpochCollector),
        "{stabilized:?}"
    );
    // Flushing runs the bag: the panic is contained, the landing deferred
    // again. (The default collector is shared with other tests' threads:
    // wait for the epoch, within a generous bound, not a fixed count.)
    let deadline = std::time::Instant::now() + BOUND;
    while acc.segment_info(0).unwrap().state != SegmentState::Free {
        catch_unwind(AssertUnwindSafe(|| acc.flush())).expect("a panic escaped flush");
        assert!(
            std::time::Instant::now() < deadline,
            "segment 0 never landed: {:?}",
            acc.segment_info(0)
        );
        std::thread::yield_now();
    }
    // The contained panic is reported once, by a later stabilize.
    let mut reported = stabilized.is_err() as usize;
    for _ in 0..4 {
        if is_panic_of(&acc.stabilize(L), Callback::EpochCollector) {
            reported += 1;
        }
    }
    assert_eq!(reported, 1);
    assert_eq!(acc.next(3 * L).unwrap(), s0, "segment 0 is reused");
    acc.audit().unwrap();
}

/// Defect 2 at the other API edge: a recovery snapshot with a fragment
/// size no fragment can have is refused with a typed error (its sums
/// would overflow), never a panic.
#[test]
fn snapshot_fragment_sizes_beyond_any_fragment_are_refused() {
    use segment_accountant::recovery::SnapshotError;
    use segment_accountant::{Fragment, PageState, Snapshot};
    for size in [(1 << 32) + 1, 1 << 63, u64::MAX] {
        let mut pages = std::collections::BTreeMap::new();
        for pid in 0..2 {
            let fragment = Fragment::new(0, ptr(pid * 100), size);
            pages.insert(pid, PageState::Present(vec![fragment]));
        }
        let snapshot = Snapshot::new(pages, Some(0), 0, 0);
        let storage = Arc::new(MemStorage::new());
        let result = catch_unwind(AssertUnwindSafe(|| {
            Accountant::from_snapshot(config(), storage, Collector::new(), &snapshot, SS)
        }))
        .expect("a hostile snapshot panicked");
        assert!(
            matches!(
                result,
                Err(Error::InvalidSnapshot(SnapshotError::FragmentTooLarge { size: s, .. })) if s == size
            ),
            "{:?}",
            result.map(|_| ())
        );
    }
}
