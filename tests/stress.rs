//! Multi-threaded stress through the public API.
//!
//! Shows: under four concurrent writers and a concurrent stabilizer, with
//! segments reused, drained, freed and truncated many times over, the
//! accountant never hands out a segment that is still in use (no lid twice
//! without a free in between, property D; never a segment holding the
//! latest stable copy of a page, property A; never one the stable lsn has
//! not passed, property C), `audit` passes at the end, and its live pages
//! and bytes per segment equal the harness's own bookkeeping.
//!
//! The harness is a log store in miniature:
//! - one log head shared by all writers (as a store's io buffers are): a
//!   write reserves its bytes under the head's mutex; when a segment is
//!   full the reservation rolls it with `next`, lsns drawn from one
//!   increasing counter, so the rolls themselves are serialized;
//! - each segment counts its reservations in flight; a write's
//!   `mark_link` / `mark_replace` (and the harness's own bookkeeping)
//!   happen before its reservation is released;
//! - a writer holds the page's mutex from the reservation to the end of
//!   the mark, so each page's fragment list is updated consistently and
//!   its lsns increase;
//! - the stabilizer thread (and, now and then, the writers) passes
//!   `stabilize` the header-vouched bound: the base lsn of the first
//!   segment that is not sealed or still has writes in flight. That is the
//!   caller contract: every mark into a segment happens before `stabilize`
//!   covers it;
//! - writers link deltas, rewrite pages completely (a replace naming every
//!   old pointer), free pages (a replace whose new pointer is the page's
//!   free record), relocate the pages `clean` suggests, and now and then
//!   seal the head's buffer early (leaving some segments empty); the working
//!   set alternates between a large and a small phase (freeing the large
//!   phase's extra pages) so that the file grows and shrinks.
//!
//! The same run repeats with each cleaning policy under a space target,
//! and with four interleaving write heads (`next_in`, `clean_placed`,
//! `stream_for_write`; the stable bound is held back by the slowest head).
//! `STRESS_SECONDS` overrides the run time (default 4 s for each test).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use segment_accountant::Skip;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Lid, Lsn, MemStorage, PageId, SegmentState,
};

const WRITERS: usize = 4;
const SS: u64 = 256;
/// Pages written in the small phase.
const SMALL: u64 = 300;
/// Pages written in the large phase.
const LARGE: u64 = 2000;
const PHASE: Duration = Duration::from_millis(400);
/// The quiet phase's bound: far more rounds than a file needs to come
/// down (a few hundred at most in every run seen, loaded or not).
const QUIET_ROUNDS: u32 = 20_000;
/// Bytes of a free record (a header-sized fragment).
const FREE_RECORD: u64 = 8;

/// The lsn of a page's newest fragment (−1 for none).
fn newest(page: &Page) -> Lsn {
    page.fragments.iter().map(|f| f.lsn).max().unwrap_or(-1)
}

fn index_of(lid: Lid) -> usize {
    (lid / SS) as usize
}

fn base_of(lsn: Lsn) -> Lsn {
    lsn - lsn % SS as Lsn
}

/// The highest stabilized segment lsn that `stabilize(stable_lsn)` asks for.
fn stable_segment_lsn(stable_lsn: Lsn) -> Lsn {
    (stable_lsn / SS as Lsn - 1) * SS as Lsn
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One fragment the harness placed: where, how many bytes, at which lsn.
#[derive(Clone, Copy, Debug)]
struct Fragment {
    ptr: DiskPtr,
    size: u64,
    lsn: Lsn,
}

#[derive(Default)]
struct Page {
    fragments: Vec<Fragment>,
    freed: bool,
}

/// One write head: the segment it fills.
#[derive(Clone, Copy)]
struct HeadSegment {
    /// Segment number (lsn / SS).
    segno: u64,
    lid: Lid,
    used: u64,
}

/// The log: one head per stream of the configuration; segment numbers come
/// from one counter, so the heads' segments interleave.
struct Log {
    heads: Vec<HeadSegment>,
    /// The segment number the next roll gets.
    next_segno: u64,
    /// Segments not yet known complete, oldest first, with their writes in
    /// flight.
    window: VecDeque<(u64, Arc<AtomicU64>)>,
    /// The lsn each lid was last handed out for.
    incarnations: HashMap<Lid, Lsn>,
}

/// What the harness knows about one incarnation of a segment.
#[derive(Debug)]
struct Incarnation {
    /// Fragments the harness still has there (not yet replaced).
    fragments: u64,
    /// The highest base lsn of a segment whose write replaced a fragment
    /// here: the incarnation may be reused only once that one is stable.
    max_replacer: Lsn,
}

#[derive(Default)]
struct Counts {
    links: AtomicU64,
    replaces: AtomicU64,
    frees: AtomicU64,
    cleans: AtomicU64,
    relocations: AtomicU64,
    nexts: AtomicU64,
    reuses: AtomicU64,
    stabilizes: AtomicU64,
    flushes: AtomicU64,
    early_seals: AtomicU64,
    max_tip: AtomicU64,
}

/// A reserved stretch of the log; dropping it ends the write.
struct Reservation {
    ptr: DiskPtr,
    lsn: Lsn,
    in_flight: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Release: the marks and bookkeeping of this write happen before a
        // stabilizer that sees the count drop.
        self.in_flight.fetch_sub(1, Ordering::Release);
    }
}

const SHARDS: usize = 64;

struct Harness {
    acc: Accountant,
    log: Mutex<Log>,
    pages: Vec<Mutex<Page>>,
    /// (segment index, incarnation lsn) → what the harness holds there,
    /// sharded by index.
    live: Vec<Mutex<HashMap<(usize, Lsn), Incarnation>>>,
    /// The highest lsn passed to `stabilize` (recorded before the call).
    requested: AtomicI64,
    large_phase: AtomicBool,
    stop: AtomicBool,
    counts: Counts,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        let harness = Harness {
            acc,
            log: Mutex::new(Log {
                heads: Vec::new(),
                next_segno: 0,
                window: VecDeque::new(),
                incarnations: HashMap::new(),
            }),
            pages: (0..LARGE).map(|_| Mutex::default()).collect(),
            live: (0..SHARDS).map(|_| Mutex::default()).collect(),
            requested: AtomicI64::new(-1),
            large_phase: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            counts: Counts::default(),
        };
        {
            let mut log = lock(&harness.log);
            for stream in 0..harness.acc.config().stream_count() {
                harness.roll(&mut log, stream);
            }
        }
        harness
    }

    fn live_shard(&self, index: usize) -> MutexGuard<'_, HashMap<(usize, Lsn), Incarnation>> {
        lock(&self.live[index % SHARDS])
    }

    /// Rolls head `stream` to the log's next segment and checks the lid
    /// is not in use.
    fn roll(&self, log: &mut Log, stream: u8) {
        let segno = log.next_segno;
        log.next_segno += 1;
        let lsn = (segno * SS) as Lsn;
        let lid = self
            .acc
            .next_in(lsn, stream)
            .unwrap_or_else(|e| panic!("next({lsn}): {e}"));
        self.counts.nexts.fetch_add(1, Ordering::Relaxed);
        assert_eq!(lid % SS, 0, "next({lsn}) returned unaligned lid {lid}");
        // Rolls are serialized (we hold the log), and only `next` moves the
        // tip: the segment must be below it, Active with our lsn.
        let tip = self.acc.tip();
        assert!(
            lid < tip,
            "next({lsn}) returned lid {lid} at/above tip {tip}"
        );
        let info = self.acc.segment_info(index_of(lid)).unwrap();
        assert!(
            info.state == SegmentState::Active && info.lsn == Some(lsn),
            "next({lsn}) returned lid {lid}, which is {info:?}"
        );
        // Whatever was requested before `next` returned is all the
        // accountant may have acted on.
        let stable = stable_segment_lsn(self.requested.load(Ordering::SeqCst));
        if let Some(previous) = log.incarnations.insert(lid, lsn) {
            // Property C (and D: the previous incarnation is not open).
            assert!(
                previous < stable,
                "lid {lid} handed out for lsn {lsn}, but its previous incarnation at lsn \
                 {previous} is not below the stabilized segment lsn {stable}"
            );
            if let Some(old) = self
                .live_shard(index_of(lid))
                .remove(&(index_of(lid), previous))
            {
                // Property D: no page still has a fragment there.
                assert_eq!(
                    old.fragments, 0,
                    "lid {lid} handed out for lsn {lsn} while the harness still has \
                     fragments in its incarnation at lsn {previous}"
                );
                // Property A: every replacement of its fragments is stable.
                assert!(
                    old.max_replacer <= stable,
                    "lid {lid} handed out for lsn {lsn} while the segment at lsn {} that \
                     replaced its fragments is not stable (stabilized segment lsn {stable})",
                    old.max_replacer
                );
            }
            self.counts.reuses.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.max_tip.fetch_max(tip, Ordering::Relaxed);
        let head = HeadSegment {
            segno,
            lid,
            used: 0,
        };
        match log.heads.get_mut(stream as usize) {
            Some(h) => *h = head,
            None => log.heads.push(head),
        }
        log.window.push_back((segno, Arc::new(AtomicU64::new(0))));
    }

    /// Reserves `size` bytes at head `stream`, rolling it to a new segment
    /// if they do not fit or if its segment is older than `after` (the
    /// page's newest fragment: a page's writes keep increasing lsns).
    fn reserve(&self, size: u64, stream: u8, after: Lsn) -> Reservation {
        let mut log = lock(&self.log);
        let s = stream as usize;
        if log.heads[s].used + size > SS || ((log.heads[s].segno * SS) as Lsn) < after {
            self.roll(&mut log, stream);
        }
        let head = log.heads[s];
        let in_flight = log
            .window
            .iter()
            .find(|(segno, _)| *segno == head.segno)
            .expect("an open segment is in the window")
            .1
            .clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        let reservation = Reservation {
            ptr: DiskPtr::Inline(head.lid + head.used),
            lsn: (head.segno * SS + head.used) as Lsn,
            in_flight,
        };
        log.heads[s].used += size;
        reservation
    }

    /// Rolls every head to a new segment (its buffer written as it is).
    fn roll_all(&self) {
        let mut log = lock(&self.log);
        for stream in 0..log.heads.len() as u8 {
            self.roll(&mut log, stream);
        }
    }

    /// The lsn the log has reached (all segments below it are handed out).
    fn frontier(&self) -> Lsn {
        (lock(&self.log).next_segno * SS) as Lsn
    }

    /// Rolls the head to a new segment now, as a store flushing a
    /// partly filled buffer does; with `twice`, rolls again at once, so a
    /// segment holds no fragment.
    fn seal_early(&self, twice: bool) {
        let mut log = lock(&self.log);
        let streams = log.heads.len() as u64;
        let stream = (log.next_segno % streams) as u8;
        for _ in 0..1 + twice as u64 {
            self.roll(&mut log, stream);
        }
        self.counts.early_seals.fetch_add(1, Ordering::Relaxed);
    }

    /// The header-vouched stable lsn: every segment below it is sealed and
    /// has no write in flight.
    fn stable_bound(&self) -> Lsn {
        let mut log = lock(&self.log);
        while let Some((segno, in_flight)) = log.window.front() {
            // Acquire: pairs with the release in `Reservation::drop`.
            let open = log.heads.iter().any(|h| h.segno == *segno);
            if !open && in_flight.load(Ordering::Acquire) == 0 {
                log.window.pop_front();
            } else {
                break;
            }
        }
        (log.window.front().unwrap().0 * SS) as Lsn
    }

    fn stabilize(&self) {
        let bound = self.stable_bound();
        self.requested.fetch_max(bound, Ordering::SeqCst);
        self.acc
            .stabilize(bound)
            .unwrap_or_else(|e| panic!("stabilize({bound}): {e}"));
        self.counts.stabilizes.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&self) {
        self.acc.flush();
        self.counts.flushes.fetch_add(1, Ordering::Relaxed);
    }

    fn add_fragment(&self, page: &mut Page, fragment: Fragment) {
        let index = index_of(fragment.ptr.lid());
        self.live_shard(index)
            .entry((index, base_of(fragment.lsn)))
            .or_insert(Incarnation {
                fragments: 0,
                max_replacer: -1,
            })
            .fragments += 1;
        page.fragments.push(fragment);
    }

    /// Links a fragment of `pid` at head 0.
    fn link(&self, pid: PageId, page: &mut Page, size: u64) {
        let r = self.reserve(size, 0, newest(page));
        self.acc
            .mark_link(pid, r.lsn, r.ptr, size)
            .unwrap_or_else(|e| panic!("mark_link({pid}, {}, {:?}): {e}", r.lsn, r.ptr));
        self.add_fragment(
            page,
            Fragment {
                ptr: r.ptr,
                size,
                lsn: r.lsn,
            },
        );
        self.counts.links.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes `pid` completely at the head, replacing every old fragment
    /// (a full image, a free record, or a relocation).
    fn rewrite(&self, pid: PageId, page: &mut Page, size: u64) {
        let old: Vec<DiskPtr> = page.fragments.iter().map(|f| f.ptr).collect();
        let stream = self.acc.stream_for_write(self.frontier(), &old);
        self.rewrite_in(pid, page, size, stream);
    }

    /// [`rewrite`](Self::rewrite) at head `stream`.
    fn rewrite_in(&self, pid: PageId, page: &mut Page, size: u64, stream: u8) {
        let r = self.reserve(size, stream, newest(page));
        let old: Vec<DiskPtr> = page.fragments.iter().map(|f| f.ptr).collect();
        if old.is_empty() {
            self.acc.mark_link(pid, r.lsn, r.ptr, size)
        } else {
            self.acc.mark_replace(pid, r.lsn, &old, r.ptr, size)
        }
        .unwrap_or_else(|e| panic!("rewrite of {pid} at {} {:?}: {e}", r.lsn, r.ptr));
        let new_index = index_of(r.ptr.lid());
        let mut kept = Vec::new();
        for f in page.fragments.drain(..) {
            let index = index_of(f.ptr.lid());
            if index == new_index {
                // Same segment as the new write: not removed (that buffer
                // is not yet flushed).
                kept.push(f);
                continue;
            }
            let mut shard = self.live_shard(index);
            let inc = shard
                .get_mut(&(index, base_of(f.lsn)))
                .expect("a fragment's incarnation is tracked");
            inc.fragments -= 1;
            inc.max_replacer = inc.max_replacer.max(base_of(r.lsn));
        }
        page.fragments = kept;
        self.add_fragment(
            page,
            Fragment {
                ptr: r.ptr,
                size,
                lsn: r.lsn,
            },
        );
    }
}

fn writer(h: Arc<Harness>, t: usize, barrier: Arc<Barrier>) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((t as u64 + 1) * 0x2545_f491_4f6c_dd1d);
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let c = &h.counts;
    barrier.wait();
    while !h.stop.load(Ordering::Relaxed) {
        let r = rand();
        let range = if h.large_phase.load(Ordering::Relaxed) {
            LARGE
        } else {
            SMALL
        };
        let pid = (r >> 20) % range;
        match r % 100 {
            // A delta, or the first image of a page.
            0..=34 => {
                let mut page = lock(&h.pages[pid as usize]);
                if page.fragments.is_empty() || page.freed || page.fragments.len() >= 4 {
                    h.rewrite(pid, &mut page, 16 + (r >> 8) % 48);
                    page.freed = false;
                    c.replaces.fetch_add(1, Ordering::Relaxed);
                } else {
                    h.link(pid, &mut page, 8 + (r >> 8) % 16);
                }
            }
            // A full rewrite (or the re-allocation of a freed page).
            35..=69 => {
                let mut page = lock(&h.pages[pid as usize]);
                h.rewrite(pid, &mut page, 16 + (r >> 8) % 48);
                page.freed = false;
                c.replaces.fetch_add(1, Ordering::Relaxed);
            }
            // Free a page: its free record replaces every fragment. In the
            // small phase, free the large phase's extra pages.
            70..=79 => {
                let pid = if range == SMALL {
                    SMALL + (r >> 20) % (LARGE - SMALL)
                } else {
                    pid
                };
                let mut page = lock(&h.pages[pid as usize]);
                if !page.fragments.is_empty() && !page.freed {
                    h.rewrite(pid, &mut page, FREE_RECORD);
                    page.freed = true;
                    c.frees.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Relocate what the cleaner suggests.
            80..=97 => {
                c.cleans.fetch_add(1, Ordering::Relaxed);
                let ignore = if r & 1 == 0 { pid } else { u64::MAX };
                if let Some(placed) = h.acc.clean(Skip::Page(ignore)) {
                    let victim = placed.pid;
                    assert_ne!(victim, ignore, "clean returned the ignored page");
                    assert!(victim < LARGE, "clean returned unknown page {victim}");
                    let mut page = lock(&h.pages[victim as usize]);
                    if !page.fragments.is_empty() {
                        let size = if page.freed {
                            FREE_RECORD
                        } else {
                            16 + (r >> 8) % 48
                        };
                        h.rewrite_in(victim, &mut page, size, placed.stream);
                        c.relocations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Now and then a writer stabilizes too (the combiner takes
            // concurrent calls), pushes deferred frees through, or seals
            // the head's buffer early (sometimes leaving a segment with
            // no fragment at all).
            98 => h.stabilize(),
            _ if r & 0x300 == 0 => h.seal_early(r & 0x400 == 0),
            _ => h.flush(),
        }
    }
}

fn stabilizer(h: Arc<Harness>, barrier: Arc<Barrier>) {
    barrier.wait();
    let mut round = 0u64;
    while !h.stop.load(Ordering::Relaxed) {
        h.stabilize();
        round += 1;
        if round % 8 == 0 {
            h.flush();
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Four writers, a stabilizer and a phase switcher for `STRESS_SECONDS`;
/// then every invariant and the harness's exact view are checked.
fn seconds() -> f64 {
    std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0)
}

fn config() -> segment_accountant::ConfigBuilder {
    Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
}

/// The specification's cleaning rule, no space target.
#[test]
fn four_writers_and_a_stabilizer() {
    stress(config().build().unwrap(), seconds());
}

/// Every cleaning policy under a space target, a quarter of the time each.
#[test]
fn four_writers_and_a_stabilizer_with_each_policy_and_a_space_target() {
    for name in segment_accountant::policy::NAMES {
        let policy = segment_accountant::policy::by_name(name).unwrap();
        println!("policy {name}, space target 1.5:");
        stress(
            config()
                .policy_arc(policy)
                .space_target(Some(1.5))
                .build()
                .unwrap(),
            seconds() / 4.0,
        );
    }
}

/// Four interleaving write heads (two user streams placed by lifetime, two
/// relocation streams), with the spec rule, then cost-benefit under a
/// space target, half the time each.
#[test]
fn four_writers_and_a_stabilizer_with_several_heads() {
    println!("4 heads, spec rule:");
    stress(config().streams(2, 2).build().unwrap(), seconds() / 2.0);
    println!("4 heads, cost-benefit, space target 1.5:");
    stress(
        config()
            .streams(2, 2)
            .policy(segment_accountant::policy::CostBenefit)
            .space_target(Some(1.5))
            .build()
            .unwrap(),
        seconds() / 2.0,
    );
}

fn stress(config: Config, seconds: f64) {
    let h = Arc::new(Harness::new(config));
    let barrier = Arc::new(Barrier::new(WRITERS + 2));
    let mut handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || writer(h, t, barrier))
        })
        .collect();
    handles.push({
        let (h, barrier) = (h.clone(), barrier.clone());
        std::thread::spawn(move || stabilizer(h, barrier))
    });
    barrier.wait();
    let start = Instant::now();
    let run = Duration::from_secs_f64(seconds);
    let mut phases = 0;
    // The run time is a minimum, not the measure of work: on a loaded
    // machine the run goes on until it has done what it must show (a
    // large and a small phase, a reuse, a relocation), so the test does
    // not depend on speed. Only a run that makes no such progress for
    // minutes (a blocked harness) fails.
    let did_enough = |phases: u32| {
        phases >= 2
            && h.counts.reuses.load(Ordering::Relaxed) > 0
            && h.counts.relocations.load(Ordering::Relaxed) > 0
    };
    while start.elapsed() < run || !did_enough(phases) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no reuse or relocation in 600 s: the harness is blocked"
        );
        std::thread::sleep(
            PHASE
                .min(run.saturating_sub(start.elapsed()))
                .max(PHASE / 4),
        );
        h.large_phase.fetch_xor(true, Ordering::Relaxed);
        phases += 1;
    }
    h.stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().expect("a harness thread panicked");
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Every write is complete: the last segment is sealed too.
    let end = h.frontier();
    h.requested.fetch_max(end, Ordering::SeqCst);
    h.acc.stabilize(end).unwrap();
    let mut waiting = h.acc.flush();
    for _ in 0..100 {
        if waiting == 0 {
            break;
        }
        waiting = h.acc.flush();
    }
    assert_eq!(waiting, 0, "frees still wait on the epoch after flushing");
    h.acc.audit().expect("audit after the stress run");

    // The harness's view: per segment, the pages (and their bytes) it
    // still has fragments in.
    let log = lock(&h.log);
    let mut expected: BTreeMap<usize, BTreeMap<PageId, u64>> = BTreeMap::new();
    let mut bytes = 0;
    for (pid, page) in h.pages.iter().enumerate() {
        for f in &lock(page).fragments {
            let lid = f.ptr.lid() - f.ptr.lid() % SS;
            assert_eq!(
                log.incarnations.get(&lid),
                Some(&base_of(f.lsn)),
                "page {pid}'s fragment {f:?} is in an earlier incarnation of its segment"
            );
            *expected
                .entry(index_of(lid))
                .or_default()
                .entry(pid as PageId)
                .or_default() += f.size;
            bytes += f.size;
        }
    }
    let stats = h.acc.stats();
    let stable = h.acc.stable_lsn();
    assert_eq!(stable, stable_segment_lsn(end));
    for index in 0..stats.tip_segments {
        let want: Vec<(PageId, u64)> = expected
            .get(&index)
            .map(|m| m.iter().map(|(&p, &b)| (p, b)).collect())
            .unwrap_or_default();
        let info = h.acc.segment_info(index).unwrap();
        assert_eq!(
            h.acc.segment_pages(index),
            want,
            "segment {index} ({info:?}): pages differ from the harness's"
        );
        if want.is_empty() {
            // Emptied segments are free; the last one waits for the
            // stable lsn to pass it.
            assert!(
                info.state == SegmentState::Free
                    || (info.state == SegmentState::Freeing && info.lsn == Some(stable)),
                "empty segment {index} is {info:?}"
            );
        } else {
            assert!(
                matches!(info.state, SegmentState::Inactive | SegmentState::Draining),
                "segment {index} with live pages is {info:?}"
            );
            assert_eq!(info.lsn, log.incarnations.get(&info.lid).copied());
        }
    }
    assert!(expected.keys().all(|&i| i < stats.tip_segments));
    let pages_present: usize = expected.values().map(BTreeMap::len).sum();
    assert_eq!(stats.active, 0);
    assert_eq!(stats.pages_present, pages_present as u64);
    assert_eq!(stats.live_bytes, bytes);
    assert_eq!(
        stats.free + stats.freeing + stats.inactive + stats.draining,
        stats.tip_segments
    );

    let c = &h.counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let ops = get(&c.links) + get(&c.replaces) + get(&c.frees) + get(&c.relocations);
    println!(
        "stress: {elapsed:.1}s, {phases} phases, {ops} writes ({:.0}/s): links {} replaces {} \
         frees {} cleans {} relocations {} nexts {} reuses {} stabilizes {} flushes {} early seals {}; \
         tip {} segments (max {}), truncated {} bytes ({} segments); final: free {} \
         freeing {} inactive {} draining {}, {} pages, {} live bytes",
        ops as f64 / elapsed,
        get(&c.links),
        get(&c.replaces),
        get(&c.frees),
        get(&c.cleans),
        get(&c.relocations),
        get(&c.nexts),
        get(&c.reuses),
        get(&c.stabilizes),
        get(&c.flushes),
        get(&c.early_seals),
        stats.tip_segments,
        get(&c.max_tip) / SS,
        stats.bytes_truncated,
        stats.bytes_truncated / SS,
        stats.free,
        stats.freeing,
        stats.inactive,
        stats.draining,
        stats.pages_present,
        stats.live_bytes,
    );
    assert!(get(&c.reuses) > 0, "no segment was reused");
    assert!(get(&c.relocations) > 0, "nothing was relocated");
    drop(log);

    // Then a quiet store: one writer relocates everything `clean` suggests
    // and rolls on. (Under the load above, tiny segments roll faster than
    // frees can land, and the file grows; whether it also shrank during
    // the run depends on timing.) Now the file must come down: drained
    // segments empty, the tip-shrinking rules move the highest pages down
    // (under a space target, the idle store's compaction does:
    // `policy::compact_when_idle`; before it, a quiet phase could stop
    // with free holes under the cleanup threshold below a sparse top and
    // never shrink), and `next` truncates the free segments at the top.
    //
    // At least 64 rounds, and then until the file is below where the load
    // left it. How many rounds that takes is not a property of the
    // accountant alone: the first rounds may grow the file (relocating
    // what the load left in Draining segments needs new segments before
    // the drained ones are free), and each truncation runs on a thread of
    // its own, while it runs `next` does not shrink the file further. On a
    // loaded machine that thread can wait for a core for many rounds, so
    // the rounds yield and the bound is generous: a file that never comes
    // down fails, a slow machine does not.
    let truncated = stats.bytes_truncated;
    let shrank = |quiet: &segment_accountant::Stats| {
        quiet.bytes_truncated > truncated && quiet.tip_segments < stats.tip_segments
    };
    let mut rounds = 0u32;
    let quiet = loop {
        // The heads were sealed by the last `stabilize`: roll them.
        h.roll_all();
        while let Some(placed) = h.acc.clean(Skip::Nothing) {
            let mut page = lock(&h.pages[placed.pid as usize]);
            let size = if page.freed { FREE_RECORD } else { 32 };
            h.rewrite_in(placed.pid, &mut page, size, placed.stream);
        }
        h.roll_all();
        h.stabilize();
        h.flush();
        rounds += 1;
        let quiet = h.acc.stats();
        if rounds >= 64 && shrank(&quiet) {
            break quiet;
        }
        assert!(
            rounds < QUIET_ROUNDS,
            "the file did not shrink once the load stopped: tip {} -> {} segments after \
             {rounds} rounds, truncated {} more bytes",
            stats.tip_segments,
            quiet.tip_segments,
            quiet.bytes_truncated - truncated
        );
        std::thread::yield_now();
    };
    h.acc.audit().expect("audit after the quiet phase");
    println!(
        "quiet phase: tip {} -> {} segments in {rounds} rounds, truncated {} more bytes",
        stats.tip_segments,
        quiet.tip_segments,
        quiet.bytes_truncated - truncated
    );
}
