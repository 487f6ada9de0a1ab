//! Runtime tuning (issue 17): the space target, the cleaning policy, the
//! cleanup threshold and the skew change on a live accountant
//! (`Accountant::tune`), validated by the rules `ConfigBuilder::build`
//! applies, and the file follows the new values.
//!
//! The concurrent test runs a store in miniature, in rounds of a fixed
//! number of writes (never a time budget, so the run does not depend on
//! the machine's speed):
//! - one log head shared by the writer threads (as a store's io buffers
//!   are): a write reserves its bytes under the head's mutex, and a full
//!   segment rolls with `next` under it; each segment counts the writes in
//!   flight, and a write's `mark_link` / `mark_replace` happen before its
//!   reservation is released;
//! - a writer holds the page's mutex from the reservation to the end of the
//!   mark, so a page's lsns increase; every user write is a full rewrite of
//!   one page, after which the writer relocates a few of the pages `clean`
//!   suggests (as a store's write path may);
//! - a cleaner thread calls `clean` all the time and relocates what it is
//!   given, skipping a page that already moved out of the segment named;
//! - whoever rolls the head calls `stabilize` with the header-vouched
//!   bound: the base lsn of the oldest segment that is the head or still
//!   has writes in flight (the caller contract);
//! - between rounds every thread waits at a barrier; the main thread
//!   stabilizes what is complete and measures the file against the bound
//!   of `tests/space_target.rs`:
//!
//!   `tip − free ≤ ⌈target × live / segment size⌉ + active + draining + freeing + 1`
//!
//!   where `live` is the store's own count of live bytes and `free` the
//!   free segments below the tip. Those holes are left out on purpose: the
//!   target bounds the segments in use, and holes are transient (`next`
//!   reuses the lowest one before it grows the file, and truncates free
//!   segments at the top; docs/cleaning.md, "The space target", rule 4).
//!   Under several writers a drain burst leaves more of them at a time than
//!   a single head does, so the file length itself is checked to come down
//!   with the target, not against the bound.
//!
//! The space target is changed by a writer in the middle of a round, while
//! the others write and the cleaner cleans.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use segment_accountant::policy::{CostBenefit, Greedy};
use segment_accountant::{
    Accountant, Collector, Config, ConfigError, DiskPtr, Error, Lid, Lsn, MemStorage, PageId,
    SegmentState, Skip, Tuning,
};

const SS: u64 = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The log head and the segments not yet known complete.
struct Log {
    /// Base lsn and lid of the segment being filled, and bytes used in it.
    lsn: Lsn,
    lid: Lid,
    used: u64,
    /// Oldest first: segments that are the head or may have writes in
    /// flight, with their in-flight counts.
    window: VecDeque<(Lsn, Arc<AtomicU64>)>,
}

/// A reserved stretch of the log; dropping it ends the write.
struct Reservation {
    lsn: Lsn,
    ptr: DiskPtr,
    in_flight: Arc<AtomicU64>,
    /// Whether this reservation rolled the head (its writer stabilizes).
    rolled: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Release: the marks of this write happen before a stabilizer
        // that sees the count drop (Acquire in `vouched`).
        self.in_flight.fetch_sub(1, Ordering::Release);
    }
}

struct Store {
    acc: Accountant,
    log: Mutex<Log>,
    /// Per page: where its one fragment is, and how big.
    pages: Vec<Mutex<Option<(DiskPtr, u64)>>>,
    /// Bytes of the pages' fragments (exact whenever no write is in
    /// flight).
    live: AtomicU64,
    relocations: AtomicU64,
    skipped: AtomicU64,
}

impl Store {
    fn new(config: Config, pages: u64) -> Store {
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        let lid = acc.next(0).unwrap();
        Store {
            acc,
            log: Mutex::new(Log {
                lsn: 0,
                lid,
                used: 0,
                window: VecDeque::from([(0, Arc::new(AtomicU64::new(0)))]),
            }),
            pages: (0..pages).map(|_| Mutex::new(None)).collect(),
            live: AtomicU64::new(0),
            relocations: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn reserve(&self, size: u64) -> Reservation {
        let mut log = lock(&self.log);
        let mut rolled = false;
        if log.used + size > SS {
            let lsn = log.lsn + SS as Lsn;
            log.lid = self
                .acc
                .next(lsn)
                .unwrap_or_else(|e| panic!("next({lsn}): {e}"));
            log.lsn = lsn;
            log.used = 0;
            log.window.push_back((lsn, Arc::new(AtomicU64::new(0))));
            rolled = true;
        }
        let offset = log.used;
        log.used += size;
        let in_flight = log.window.back().unwrap().1.clone();
        // Relaxed: taken under the log lock, which the stabilizer's
        // reading of the count also holds; no new write can enter a
        // segment once the head has left it.
        in_flight.fetch_add(1, Ordering::Relaxed);
        Reservation {
            lsn: log.lsn + offset as Lsn,
            ptr: DiskPtr::Inline(log.lid + offset),
            in_flight,
            rolled,
        }
    }

    /// The header-vouched bound: the base lsn of the oldest segment that is
    /// the head or still has writes in flight.
    fn vouched(&self) -> Lsn {
        let mut log = lock(&self.log);
        while log.window.len() > 1 {
            // Acquire: pairs with the Release decrement of each write.
            if log.window[0].1.load(Ordering::Acquire) != 0 {
                break;
            }
            log.window.pop_front();
        }
        log.window[0].0
    }

    fn stabilize(&self) {
        self.acc.stabilize(self.vouched()).unwrap();
        self.acc.flush();
    }

    /// Writes page `pid` anew (`size` bytes), replacing its fragment.
    fn write_locked(&self, pid: PageId, page: &mut Option<(DiskPtr, u64)>, size: u64) -> bool {
        let r = self.reserve(size);
        match *page {
            Some((old, old_size)) => {
                self.acc
                    .mark_replace(pid, r.lsn, &[old], r.ptr, size)
                    .unwrap_or_else(|e| panic!("replace of page {pid}: {e}"));
                // Relaxed: read only at quiescent points, after the
                // barrier (which orders everything before it).
                self.live.fetch_sub(old_size, Ordering::Relaxed);
            }
            None => self
                .acc
                .mark_link(pid, r.lsn, r.ptr, size)
                .unwrap_or_else(|e| panic!("link of page {pid}: {e}")),
        }
        // Relaxed: as above.
        self.live.fetch_add(size, Ordering::Relaxed);
        *page = Some((r.ptr, size));
        r.rolled
    }

    fn write(&self, pid: PageId, size: u64) {
        let rolled = {
            let mut page = lock(&self.pages[pid as usize]);
            self.write_locked(pid, &mut page, size)
        };
        if rolled {
            self.stabilize();
        }
    }

    /// Relocates one page `clean` suggests, unless it already moved out of
    /// the segment named; `false` if `clean` had nothing.
    fn relocate_one(&self, skip: Skip) -> bool {
        let Some(r) = self.acc.clean(skip) else {
            return false;
        };
        let rolled = {
            let mut page = lock(&self.pages[r.pid as usize]);
            match *page {
                Some((ptr, size)) if ptr.lid() / SS * SS == r.segment_lid => {
                    // Relaxed: a count printed at the end.
                    self.relocations.fetch_add(1, Ordering::Relaxed);
                    self.write_locked(r.pid, &mut page, size)
                }
                _ => {
                    // Relaxed: a count printed at the end.
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
        };
        if rolled {
            self.stabilize();
        }
        true
    }

    /// The file at a quiescent point, against the bound for each target.
    fn measure(&self, targets: &[f64]) -> Round {
        let s = self.acc.stats();
        // Relaxed: at a quiescent point, after the barrier.
        let live = self.live.load(Ordering::Relaxed);
        let occupied = (s.tip_segments - s.free) as i64;
        let in_flight = (s.active + s.draining + s.freeing) as i64 + 1;
        Round {
            tip: s.tip_segments,
            free: s.free,
            occupied,
            excess: targets
                .iter()
                .map(|t| occupied - (t * live as f64 / SS as f64).ceil() as i64 - in_flight)
                .collect(),
            target_drains: self.acc.metrics().drains_space_target,
            truncated: s.bytes_truncated,
        }
    }
}

/// The file at the end of one round.
#[derive(Debug)]
#[allow(dead_code)] // `free` and `truncated` are printed, for the record.
struct Round {
    /// The file length in segments.
    tip: usize,
    /// Free segments below the tip (holes `next` reuses first).
    free: usize,
    /// The file less its holes.
    occupied: i64,
    /// Segments by which `occupied` exceeds the bound of each target of
    /// [`TARGETS`] (`≤ 0`: within it).
    excess: Vec<i64>,
    /// Drains for the space target so far.
    target_drains: u64,
    /// Bytes truncated so far.
    truncated: u64,
}

const PAGE: u64 = 128;
/// Live data: 64 segments' worth.
const PAGES: u64 = 2048;
const WRITERS: usize = 3;
const WRITES_PER_ROUND: u64 = 200;
/// Relocations a writer does after each of its writes, at most: enough
/// for the cleaning the targets need (about 3 per write at 1.3) without
/// the cleaner thread, whose share depends on the machine's speed.
const INLINE_RELOCATIONS: usize = 16;
/// Rounds per phase.
const ROUNDS: usize = 30;
/// Rounds within which the file must come within the new bound after the
/// target is tightened (it takes one or two; this leaves room for
/// interleavings).
const CONVERGE: usize = 10;
/// Segments by which the file may exceed the bound at a quiescent point
/// under concurrency: a pass paces its drains to the relocations the
/// segments it sealed can carry, so while relocations lag (a round may end
/// with some not done) the file may stay a little over the target. (Seen:
/// at most 2 in 800 runs, two at a time on 2 cores.)
const SLACK: i64 = 4;

/// The space target of each phase: loose, tightened, loosened again.
const TARGETS: [f64; 3] = [3.0, 1.3, 2.2];

/// The change at the start of phase 1 and 2 (applied mid-round, by writer
/// 0, while the others write and the cleaner cleans).
fn phase_tuning(phase: usize) -> Option<Tuning> {
    match phase {
        // Tighten.
        1 => Some(Tuning::new().space_target(Some(TARGETS[1]))),
        // Loosen, and switch the policy.
        2 => Some(
            Tuning::new()
                .space_target(Some(TARGETS[2]))
                .policy(CostBenefit),
        ),
        _ => None,
    }
}

/// Shows, under three writers and a cleaner: with a loose target (3.0,
/// greedy) the file grows to it; tightened to 1.3, the file (less its
/// holes, which `next` reuses before it grows the file: they are
/// transient, see docs/cleaning.md) comes within the new bound within a
/// few rounds and stays there, and the file length shrinks; loosened to
/// 2.2 with cost-benefit victims, it stays within that bound and grows
/// back towards it, cleaning less.
#[test]
fn the_file_converges_to_a_space_target_changed_under_load() {
    let config = Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .policy(Greedy)
        .space_target(Some(TARGETS[0]))
        .build()
        .unwrap();
    let store = Arc::new(Store::new(config, PAGES));
    // Every page once, so that the working set is in place.
    for pid in 0..PAGES {
        store.write(pid, PAGE);
    }
    let rounds = TARGETS.len() * ROUNDS;
    // Writers, the cleaner, and the main thread.
    let barrier = Arc::new(Barrier::new(WRITERS + 2));
    let finished = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (store, barrier, finished) = (store.clone(), barrier.clone(), finished.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1234_5678));
            for round in 0..rounds {
                for i in 0..WRITES_PER_ROUND {
                    if w == 0 && round % ROUNDS == 0 && i == WRITES_PER_ROUND / 2 {
                        if let Some(tuning) = phase_tuning(round / ROUNDS) {
                            store.acc.tune(tuning).unwrap();
                        }
                    }
                    let pid = rng.next() % PAGES;
                    store.write(pid, PAGE);
                    for _ in 0..INLINE_RELOCATIONS {
                        if !store.relocate_one(Skip::Page(pid)) {
                            break;
                        }
                    }
                }
                // SeqCst: test control flow, ordering is not the subject.
                finished.fetch_add(1, Ordering::SeqCst);
                barrier.wait(); // the round ends
                barrier.wait(); // the main thread has measured
            }
        }));
    }
    {
        let (store, barrier, finished, stop) = (
            store.clone(),
            barrier.clone(),
            finished.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut round = 0;
            loop {
                // SeqCst: test control flow (as `finished`, `stop`).
                if finished.load(Ordering::SeqCst) >= WRITERS * (round + 1) {
                    barrier.wait();
                    barrier.wait();
                    round += 1;
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                if !store.relocate_one(Skip::Nothing) {
                    // Nothing to clean: let the writers run.
                    std::thread::yield_now();
                }
            }
        }));
    }

    let mut log: Vec<Round> = Vec::new();
    for round in 0..rounds {
        barrier.wait();
        // Quiescent: everything complete below the head is stabilized.
        store.stabilize();
        log.push(store.measure(&TARGETS));
        if round + 1 == rounds {
            stop.store(true, Ordering::SeqCst);
        }
        barrier.wait();
    }
    for t in threads {
        t.join().unwrap();
    }
    let m = store.acc.metrics();
    for (i, r) in log.iter().enumerate() {
        println!("round {i}: {r:?}");
    }
    println!(
        "relocations {} (skipped {}), drains for the space target {}, tip {}, by policy {}; \
         truncated {} bytes; WA {:.2}",
        // Relaxed: the threads were joined.
        store.relocations.load(Ordering::Relaxed),
        store.skipped.load(Ordering::Relaxed),
        m.drains_space_target,
        m.drains_tip,
        m.drains_policy,
        m.bytes_truncated,
        m.write_amplification()
    );
    store.acc.audit().unwrap();
    let (phase0, rest) = log.split_at(ROUNDS);
    let (phase1, phase2) = rest.split_at(ROUNDS);

    // Phase 0: the loose target holds, and leaves the file far above the
    // tight bound (the change has work to do).
    for (i, r) in phase0.iter().enumerate() {
        assert!(
            r.excess[0] <= SLACK,
            "round {i} under {}: {r:?}",
            TARGETS[0]
        );
    }
    let loose = &phase0[ROUNDS - 1];
    assert!(
        loose.excess[1] > 10 * SLACK,
        "the file was already within {} × live: {loose:?}",
        TARGETS[1]
    );

    // Phase 1: within CONVERGE rounds of the change the file is within the
    // tight bound, and stays there; the file length itself comes down.
    let first = phase1
        .iter()
        .position(|r| r.excess[1] <= SLACK)
        .unwrap_or_else(|| panic!("never within the {} target: {phase1:?}", TARGETS[1]));
    assert!(
        first < CONVERGE,
        "took {first} rounds to come within the {} target: {phase1:?}",
        TARGETS[1]
    );
    for (i, r) in phase1.iter().enumerate().skip(first) {
        assert!(r.excess[1] <= SLACK, "round {i} after tightening: {r:?}");
    }
    let shortest = phase1.iter().skip(first).map(|r| r.tip).min().unwrap();
    assert!(
        shortest * 4 < loose.tip * 3,
        "the file length did not follow: {} segments, then at best {shortest}",
        loose.tip
    );
    assert!(
        phase1[ROUNDS - 1].truncated > loose.truncated,
        "the file was never truncated after tightening"
    );

    // Phase 2: the looser target and the new policy hold too: the file
    // stays within the loose bound, grows back above the tight one (less
    // cleaning), and the space target goes on draining, now with
    // cost-benefit victims.
    for (i, r) in phase2.iter().enumerate() {
        assert!(r.excess[2] <= SLACK, "round {i} after loosening: {r:?}");
    }
    let (tight, last) = (&phase1[ROUNDS - 1], &phase2[ROUNDS - 1]);
    assert!(
        last.excess[1] > 10 * SLACK,
        "the file did not follow the looser target: {tight:?}, then {last:?}"
    );
    assert!(
        last.target_drains > tight.target_drains,
        "the looser target never drained under cost-benefit"
    );
    let config = store.acc.config();
    assert_eq!(config.policy().name(), "cost-benefit");
    assert_eq!(config.space_target(), Some(TARGETS[2]));
}

/// Shows: a tuning takes effect at the next combiner pass, and a raised
/// cleanup threshold applies to segments sealed before it (the pass asks
/// the policy again about every Inactive segment), not only to segments
/// whose counts change later.
#[test]
fn a_raised_threshold_drains_segments_sealed_before_it() {
    const SMALL: u64 = 32;
    const PER_SEGMENT: u64 = SS / SMALL;
    const L: Lsn = SS as Lsn;
    let config = Config::builder()
        .segment_size(SS)
        .cleanup_threshold(10)
        .skew(0)
        .build()
        .unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let mut at = vec![DiskPtr::Inline(0); (4 * PER_SEGMENT) as usize];
    // Segments 0 to 3: full of distinct pages.
    for s in 0..4u64 {
        let lid = acc.next(s as Lsn * L).unwrap();
        for i in 0..PER_SEGMENT {
            let pid = s * PER_SEGMENT + i;
            let ptr = DiskPtr::Inline(lid + i * SMALL);
            acc.mark_link(pid, s as Lsn * L + (i * SMALL) as Lsn, ptr, SMALL)
                .unwrap();
            at[pid as usize] = ptr;
        }
    }
    // Segments 4 and 5: half of each earlier segment's pages rewritten.
    let mut written = 0;
    for s in 0..4u64 {
        for i in (0..PER_SEGMENT).step_by(2) {
            let pid = s * PER_SEGMENT + i;
            let (seg, off) = (4 + written / PER_SEGMENT, written % PER_SEGMENT);
            let lsn = seg as Lsn * L + (off * SMALL) as Lsn;
            if off == 0 {
                assert_eq!(acc.next(seg as Lsn * L).unwrap(), seg * SS);
            }
            let ptr = DiskPtr::Inline(seg * SS + off * SMALL);
            acc.mark_replace(pid, lsn, &[at[pid as usize]], ptr, SMALL)
                .unwrap();
            written += 1;
        }
    }
    acc.next(6 * L).unwrap();
    acc.stabilize(6 * L).unwrap();
    // Live share 50% (64 of 128 pages), above the 10% threshold, and more
    // pages than the few-pages rule drains: all six stay Inactive.
    let states = |acc: &Accountant| -> Vec<SegmentState> {
        (0..6).map(|i| acc.segment_info(i).unwrap().state).collect()
    };
    assert_eq!(states(&acc), vec![SegmentState::Inactive; 6]);
    assert_eq!(
        acc.segment_info(0).unwrap().live_pages as u64,
        PER_SEGMENT / 2
    );

    let now = acc.tune(Tuning::new().cleanup_threshold(60)).unwrap();
    assert_eq!(now.cleanup_threshold(), 60);
    assert_eq!(acc.config().cleanup_threshold(), 60);
    assert_eq!(
        states(&acc),
        vec![SegmentState::Inactive; 6],
        "nothing happens before the next pass"
    );
    let drains = acc.metrics().drains_policy;
    // The next pass (segment 6 seals, empty) applies it to every segment.
    acc.next(7 * L).unwrap();
    acc.stabilize(7 * L).unwrap();
    let mut expected = vec![SegmentState::Draining; 4];
    expected.extend([SegmentState::Inactive; 2]);
    assert_eq!(states(&acc), expected, "half-live segments drain at 60%");
    assert_eq!(acc.metrics().drains_policy, drains + 4);
    assert!(acc.clean(Skip::Nothing).is_some());
    acc.audit().unwrap();
}

/// Shows: a bad value is refused with the `ConfigError` that
/// `ConfigBuilder::build` gives for it, and nothing changes (not even the
/// valid values of the same tuning); the fixed part of the configuration
/// never changes.
#[test]
fn bad_values_are_refused_and_change_nothing() {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let before = acc.config();
    let refused = |tuning: Tuning| {
        let err = acc.tune(tuning).unwrap_err();
        assert!(
            Arc::ptr_eq(&acc.config(), &before),
            "{err} changed the config"
        );
        err
    };
    assert_eq!(
        refused(Tuning::new().cleanup_threshold(0)),
        ConfigError::CleanupThreshold(0)
    );
    assert_eq!(
        refused(Tuning::new().cleanup_threshold(100)),
        ConfigError::CleanupThreshold(100)
    );
    assert_eq!(
        refused(Tuning::new().cleanup_threshold(50).skew(101)),
        ConfigError::Skew(101)
    );
    assert_eq!(
        refused(Tuning::new().space_target(Some(1.0))),
        ConfigError::SpaceTarget(1.0)
    );
    assert!(matches!(
        refused(Tuning::new().space_target(Some(f64::NAN))),
        ConfigError::SpaceTarget(t) if t.is_nan()
    ));
    // A ranked policy acts only under a target.
    assert_eq!(
        refused(Tuning::new().policy(Greedy)),
        ConfigError::PolicyNeedsSpaceTarget("greedy".into())
    );
    // The same rules as the builder's.
    assert_eq!(
        Config::builder()
            .segment_size(SS)
            .policy(Greedy)
            .build()
            .unwrap_err(),
        ConfigError::PolicyNeedsSpaceTarget("greedy".into())
    );
    // Together with a target it is accepted; then removing the target is
    // refused.
    let now = acc
        .tune(Tuning::new().policy(Greedy).space_target(Some(1.5)))
        .unwrap();
    assert_eq!(
        (now.policy().name(), now.space_target()),
        ("greedy", Some(1.5))
    );
    let tuned = acc.config();
    assert_eq!(
        acc.tune(Tuning::new().space_target(None)).unwrap_err(),
        ConfigError::PolicyNeedsSpaceTarget("greedy".into())
    );
    assert!(Arc::ptr_eq(&acc.config(), &tuned));
    // The fixed part is untouched; as an `Error` it is `Error::Config`.
    assert_eq!(
        (tuned.segment_size(), tuned.mode(), tuned.streams()),
        (before.segment_size(), before.mode(), before.streams())
    );
    let err: Error = acc.tune(Tuning::new().skew(200)).unwrap_err().into();
    assert!(matches!(err, Error::Config(ConfigError::Skew(200))));
}

/// Shows: concurrent `tune` calls apply one after the other, each to the
/// result of the last: two threads changing different values never undo
/// each other's change.
#[test]
fn concurrent_tunings_do_not_undo_each_other() {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Arc::new(Accountant::with_collector(
        config,
        Arc::new(MemStorage::new()),
        Collector::new(),
    ));
    let start = Arc::new(Barrier::new(2));
    let spawn = |f: fn(u8) -> Tuning| {
        let (acc, start) = (acc.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            for i in 0..2_000u32 {
                acc.tune(f((i % 90 + 1) as u8)).unwrap();
            }
        })
    };
    let a = spawn(|v| Tuning::new().cleanup_threshold(v));
    let b = spawn(|v| Tuning::new().skew(v));
    a.join().unwrap();
    b.join().unwrap();
    // Both threads' last values: 1999 % 90 + 1.
    let config = acc.config();
    assert_eq!((config.cleanup_threshold(), config.skew()), (20, 20));
}
