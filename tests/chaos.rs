//! Chaos: correct calls interleaved with caller mistakes and with callbacks
//! that panic at random points, on several threads, under a watchdog.
//!
//! Shows (issue 14, spec property F): every call returns `Ok` or a typed
//! error; no panic escapes any call (the accountant's policy is to contain
//! panics of the callbacks it runs: `Storage`, the `CleaningPolicy`, closures
//! deferred on the shared epoch collector); no call blocks (a watchdog fails
//! the test on any call that has not returned within 30 s, a bound no
//! loaded machine approaches); the accountant is never poisoned; and after
//! the run, with the callbacks calm again, everything stabilizes and the
//! audit passes.
//!
//! The harness is a small multi-head store: each thread draws segment lsns
//! from one shared counter, writes pages it owns (links, full rewrites with
//! blobs now and then), and passes `stabilize` the lowest lsn any thread
//! still writes into. Mixed in: arguments from the whole integer ranges
//! (sizes up to `u64::MAX`, lsns near `i64::MAX` and negative, unaligned,
//! duplicated, lids beyond the file), pause/resume (and resume without a
//! pause), `clean`, `flush`, snapshot iteration. The amount of work is a
//! number of calls, not a duration: the test does not depend on speed.
//! `CHAOS_CALLS` overrides the total (default 120,000).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segment_accountant::policy::{SegmentFacts, Spec};
use segment_accountant::Skip;
use segment_accountant::{
    Accountant, BlobId, CleaningPolicy, Collector, Config, DiskPtr, Error, Lid, LogFile, Lsn,
    MemStorage, PageId, Storage,
};

const THREADS: usize = 4;
const SS: u64 = 4096;
const L: Lsn = SS as Lsn;
/// Pages each thread owns.
const PAGES: u64 = 64;
/// No call may take longer.
const WATCHDOG: Duration = Duration::from_secs(30);
/// The errors the accountant keeps for later `stabilize` calls, at most.
const SINK_BOUND: usize = 64;
/// One callback call in this many panics.
const PANIC_ONE_IN: u64 = 40;

/// Whether the callbacks panic now (off for the final check).
static CHAOS: AtomicBool = AtomicBool::new(true);
static DRAWS: AtomicU64 = AtomicU64::new(0);
static INJECTED: AtomicU64 = AtomicU64::new(0);

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Panics now and then, while the chaos lasts (callbacks run on any
/// thread, so the draw is global).
fn maybe_panic(what: &str) {
    if CHAOS.load(Ordering::Relaxed)
        && mix(DRAWS.fetch_add(1, Ordering::Relaxed)) % PANIC_ONE_IN == 0
    {
        INJECTED.fetch_add(1, Ordering::Relaxed);
        panic!("injected panic in {what}");
    }
}

/// Memory storage whose methods the accountant calls panic now and then.
#[derive(Debug, Default)]
struct ChaosStorage {
    inner: MemStorage,
    len: AtomicU64,
}

impl Storage for ChaosStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        maybe_panic("set_len");
        self.len.store(len, Ordering::Relaxed);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        maybe_panic("len");
        Ok(self.len.load(Ordering::Relaxed))
    }
    fn sync(&self) -> io::Result<()> {
        maybe_panic("sync");
        Ok(())
    }
    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        maybe_panic("remove_blob");
        self.inner.remove_blob(blob)
    }
}

impl LogFile for ChaosStorage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Only the length matters here: keep no bytes.
        self.len
            .fetch_max(offset + buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
}

/// The specification's policy, panicking now and then.
#[derive(Debug)]
struct ChaosPolicy;

impl CleaningPolicy for ChaosPolicy {
    fn name(&self) -> &str {
        "chaos"
    }
    fn drain_unprompted(&self, config: &Config, facts: &SegmentFacts, tip: u64) -> bool {
        maybe_panic("drain_unprompted");
        Spec.drain_unprompted(config, facts, tip)
    }
    fn cleans_without_target(&self) -> bool {
        true
    }
    fn benefit(&self, facts: &SegmentFacts, now: Lsn) -> f64 {
        maybe_panic("benefit");
        Spec.benefit(facts, now)
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// An lsn from the whole range, edges likely.
    fn any_lsn(&mut self, near: Lsn) -> Lsn {
        match self.below(8) {
            0 => i64::MIN + self.below(4) as Lsn,
            1 => -(self.below(3 * SS) as Lsn),
            2 => i64::MAX - self.below(3 * SS) as Lsn,
            3 => near + self.below(2 * SS) as Lsn - L,
            4 => (near / L + self.below(4) as Lsn - 2) * L,
            5 => self.next() as Lsn,
            6 => near.saturating_add(self.below(1 << 40) as Lsn),
            _ => near,
        }
    }
    /// A size from the whole range, edges likely.
    fn any_size(&mut self) -> u64 {
        match self.below(6) {
            0 => u64::MAX - self.below(3),
            1 => 1 << (62 + self.below(2)),
            2 => SS + self.below(3),
            3 => self.next(),
            _ => self.below(SS + 1),
        }
    }
    /// A lid from the whole range.
    fn any_lid(&mut self, tip: u64) -> Lid {
        match self.below(4) {
            0 => u64::MAX - self.below(3),
            1 => tip + self.below(4 * SS),
            2 => self.next(),
            _ => self.below(tip.max(1)),
        }
    }
}

/// One open segment of a thread: its lsn, lid and bytes used.
struct Open {
    lsn: Lsn,
    lid: Lid,
    used: u64,
}

/// What all threads share.
struct World {
    acc: Accountant,
    storage: Arc<ChaosStorage>,
    collector: Collector,
    /// The next segment lsn to hand out.
    lsns: AtomicI64,
    /// Lsns of segments some thread still writes into (or is asking for).
    open: Mutex<BTreeSet<Lsn>>,
    /// Per thread: when its current call started (ms since `epoch`, 0 if
    /// none) and what it is.
    in_call: Vec<AtomicU64>,
    call_name: Vec<Mutex<&'static str>>,
    epoch: Instant,
    calls: AtomicUsize,
    /// Calls made, per thread.
    calls_by: Vec<AtomicUsize>,
    escaped: AtomicUsize,
    poisoned: Mutex<Vec<String>>,
    errors: Mutex<HashMap<String, usize>>,
    /// Whether mistakes may race seals (see [`World::unraced`]).
    seal_races: bool,
}

impl World {
    /// Runs one accountant call under the watchdog's eye; counts escaped
    /// panics and tallies errors by variant.
    fn call<T>(
        &self,
        me: usize,
        name: &'static str,
        f: impl FnOnce(&Accountant) -> T,
    ) -> Option<T> {
        *self.call_name[me].lock().unwrap() = name;
        let started = self.epoch.elapsed().as_millis() as u64 + 1;
        self.in_call[me].store(started, Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| f(&self.acc)));
        self.in_call[me].store(0, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.calls_by[me].fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(value) => Some(value),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                eprintln!("chaos: a panic escaped {name}: {message}");
                self.escaped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Tallies an error (by variant); remembers poisoning.
    fn saw<T>(&self, result: &Result<T, Error>) {
        if let Err(e) = result {
            if let Error::Poisoned(why) = e {
                self.poisoned.lock().unwrap().push(why.clone());
            }
            let variant = format!("{e:?}");
            let variant = variant
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_string();
            *self.errors.lock().unwrap().entry(variant).or_default() += 1;
        }
    }

    /// Keeps a mistaken `next(lsn)` (or `stabilize(lsn)`, if `stable`)
    /// from racing a seal: an lsn some running `stabilize` may be sealing
    /// becomes `fallback` (a duplicate of the caller's open segment) or,
    /// for `stabilize`, the correct bound. Races between a mistake and a
    /// seal are let through unless `CHAOS_SEAL_RACES=0` (the seal protocol
    /// makes them cost one call, see `tests/seal.rs`).
    fn unraced(&self, lsn: Lsn, stable: bool, fallback: Lsn) -> Lsn {
        let done = self.acc.stable_lsn();
        let fresh = self.lsns.load(Ordering::SeqCst);
        if stable {
            let refused = lsn < 0 || lsn / L > fresh / L + 1;
            let no_op = lsn / L <= done / L + 1;
            return if refused || no_op {
                lsn
            } else {
                self.stable_bound()
            };
        }
        let refused = lsn < 0 || lsn % L != 0 || lsn <= done;
        if refused || lsn >= fresh {
            lsn
        } else {
            fallback
        }
    }

    /// The bound a correct `stabilize` may pass: below every open segment.
    fn stable_bound(&self) -> Lsn {
        let open = self.open.lock().unwrap();
        open.first()
            .copied()
            .unwrap_or_else(|| self.lsns.load(Ordering::SeqCst))
    }
}

/// One thread of the store: owns pages `me * PAGES ..`.
fn worker(world: &World, me: usize, calls: usize) {
    let mut rng = Rng(0x5eed + me as u64 * 7919);
    let mut pages: HashMap<PageId, Vec<DiskPtr>> = HashMap::new();
    let mut head: Option<Open> = None;
    let mut blob: BlobId = (me as u64) << 48;
    let mut paused = 0u32;
    let handle = world.collector.register();
    let base = me as u64 * PAGES;
    while world.calls_by[me].load(Ordering::Relaxed) < calls {
        // Roll the head now and then (or when full).
        let full = head.as_ref().is_none_or(|h| h.used + 64 > SS);
        if full || rng.chance(40) {
            if let Some(h) = head.take() {
                world.open.lock().unwrap().remove(&h.lsn);
            }
            let lsn = world.lsns.fetch_add(L, Ordering::SeqCst);
            world.open.lock().unwrap().insert(lsn);
            match world.call(me, "next", |a| a.next(lsn)) {
                Some(Ok(lid)) => {
                    world.storage.write_at(lid + SS - 1, &[0]).unwrap();
                    head = Some(Open { lsn, lid, used: 0 });
                }
                Some(r) => {
                    world.saw(&r);
                    world.open.lock().unwrap().remove(&lsn);
                }
                None => {
                    world.open.lock().unwrap().remove(&lsn);
                }
            }
            continue;
        }
        let h = head.as_mut().expect("an open head");
        let tip = world.acc.tip();
        match rng.below(20) {
            // A correct link of one of our pages.
            0..=4 => {
                let pid = base + rng.below(PAGES);
                let size = 1 + rng.below(48);
                let (lsn, ptr) = (h.lsn + h.used as Lsn, DiskPtr::Inline(h.lid + h.used));
                h.used += size;
                let r = world.call(me, "mark_link", |a| a.mark_link(pid, lsn, ptr, size));
                if let Some(r) = r {
                    world.saw(&r);
                    if r.is_ok() {
                        pages.entry(pid).or_default().push(ptr);
                    }
                }
            }
            // A correct full rewrite (sometimes as a blob).
            5..=8 => {
                let pid = base + rng.below(PAGES);
                let size = 1 + rng.below(48);
                let lsn = h.lsn + h.used as Lsn;
                let ptr = if rng.chance(3) {
                    blob += 1;
                    world.storage.inner.add_blob(blob);
                    DiskPtr::Blob {
                        lid: h.lid + h.used,
                        blob,
                    }
                } else {
                    DiskPtr::Inline(h.lid + h.used)
                };
                h.used += size;
                let old = pages.get(&pid).cloned().unwrap_or_default();
                let r = world.call(me, "mark_replace", |a| {
                    if old.is_empty() {
                        a.mark_link(pid, lsn, ptr, size)
                    } else {
                        a.mark_replace(pid, lsn, &old, ptr, size)
                    }
                });
                if let Some(r) = r {
                    world.saw(&r);
                    if r.is_ok() {
                        pages.insert(pid, vec![ptr]);
                    }
                }
            }
            // A correct stabilize.
            9..=10 => {
                let bound = world.stable_bound();
                let r = world.call(me, "stabilize", |a| a.stabilize(bound));
                if let Some(r) = r {
                    world.saw(&r);
                }
            }
            // A relocation the accountant suggests (of our own pages).
            11 => {
                let picked = world.call(me, "clean", |a| {
                    a.clean(Skip::Page(rng.next())).map(|r| r.pid)
                });
                if let Some(Some(pid)) = picked {
                    if let Some(old) = pages.get(&pid).cloned() {
                        let lsn = h.lsn + h.used as Lsn;
                        let ptr = DiskPtr::Inline(h.lid + h.used);
                        h.used += 8;
                        let r = world.call(me, "mark_replace (relocation)", |a| {
                            a.mark_replace(pid, lsn, &old, ptr, 8)
                        });
                        if let Some(r) = r {
                            world.saw(&r);
                            if r.is_ok() {
                                pages.insert(pid, vec![ptr]);
                            }
                        }
                    }
                }
            }
            12 => {
                world.call(me, "flush", |a| a.flush());
            }
            // Pause and resume (nested now and then), iterate while paused;
            // resume without a pause.
            13 => {
                if paused > 0 && rng.chance(2) {
                    let from = rng.any_lsn(h.lsn);
                    if let Some(r) = world.call(me, "segment_snapshot_iter_from", |a| {
                        a.segment_snapshot_iter_from(from).map(|it| it.count())
                    }) {
                        world.saw(&r);
                    }
                    paused -= 1;
                    if let Some(r) = world.call(me, "resume_rewriting", |a| a.resume_rewriting()) {
                        world.saw(&r);
                    }
                } else if rng.chance(3) {
                    if let Some(r) = world.call(me, "resume_rewriting (mistake)", |a| {
                        // Not ours to resume unless we paused: other
                        // threads' pauses may make this succeed; pause
                        // again to keep the nesting balanced.
                        let r = a.resume_rewriting();
                        if r.is_ok() {
                            a.pause_rewriting();
                        }
                        r
                    }) {
                        world.saw(&r);
                    }
                } else {
                    world.call(me, "pause_rewriting", |a| a.pause_rewriting());
                    paused += 1;
                }
            }
            // Garbage of our own on the shared collector, with destructors
            // that panic now and then (run by whoever pins next: often the
            // accountant). Our own pin may run others' and panic: that is
            // this thread's business, not a call of the accountant.
            14 => {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let guard = handle.pin();
                    for _ in 0..4 {
                        guard.defer(|| maybe_panic("a deferred destructor"));
                    }
                    guard.flush();
                }));
            }
            // Mistakes, with arguments from the whole ranges.
            _ => {
                let mistake = rng.below(6);
                let mut lsn = rng.any_lsn(h.lsn);
                if !world.seal_races && matches!(mistake, 0 | 4) {
                    lsn = world.unraced(lsn, mistake == 4, h.lsn);
                }
                let r = match mistake {
                    0 => world.call(me, "next (mistake)", |a| {
                        let r = a.next(lsn).map(drop);
                        if r.is_ok() {
                            // Not detectable as a mistake: the store goes
                            // on above it (or every later lsn would be
                            // stale once a stabilize passes it).
                            world.lsns.fetch_max(lsn + L, Ordering::SeqCst);
                        }
                        r
                    }),
                    1 => {
                        let (pid, lid, size) = (rng.next(), rng.any_lid(tip), rng.any_size());
                        world.call(me, "mark_link (mistake)", |a| {
                            a.mark_link(pid, lsn, DiskPtr::Inline(lid), size)
                        })
                    }
                    2 => {
                        // Our own open segment, a wrong size.
                        let (pid, size) = (base + rng.below(PAGES), rng.any_size());
                        let ptr = DiskPtr::Inline(h.lid + h.used);
                        let lsn = h.lsn + h.used as Lsn;
                        world.call(me, "mark_link (size)", |a| a.mark_link(pid, lsn, ptr, size))
                    }
                    3 => {
                        let olds: Vec<DiskPtr> = (0..rng.below(4))
                            .map(|_| DiskPtr::Inline(rng.any_lid(tip)))
                            .collect();
                        let (pid, new, size) = (rng.next(), rng.any_lid(tip), rng.any_size());
                        world.call(me, "mark_replace (mistake)", |a| {
                            a.mark_replace(pid, lsn, &olds, DiskPtr::Inline(new), size)
                        })
                    }
                    4 => world.call(me, "stabilize (mistake)", |a| a.stabilize(lsn)),
                    _ => {
                        // Duplicated: the lsn of our own open segment.
                        let lsn = h.lsn;
                        world.call(me, "next (duplicate)", |a| a.next(lsn).map(drop))
                    }
                };
                if let Some(r) = r {
                    // A mistake that lands inside the contract may succeed;
                    // either way it must be Ok or a typed error.
                    world.saw(&r);
                }
            }
        }
    }
    while paused > 0 {
        paused -= 1;
        if let Some(r) = world.call(me, "resume_rewriting", |a| a.resume_rewriting()) {
            world.saw(&r);
        }
    }
    if let Some(h) = head.take() {
        world.open.lock().unwrap().remove(&h.lsn);
    }
}

#[test]
fn chaos_never_wedges_the_accountant() {
    common::quiet_injected_panics();
    let total: usize = std::env::var("CHAOS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let storage = Arc::new(ChaosStorage::default());
    let collector = Collector::new();
    let config = Config::builder()
        .segment_size(SS)
        .policy(ChaosPolicy)
        .build()
        .unwrap();
    let world = Arc::new(World {
        acc: Accountant::with_collector(config, storage.clone(), collector.clone()),
        storage,
        collector,
        lsns: AtomicI64::new(0),
        open: Mutex::new(BTreeSet::new()),
        in_call: (0..THREADS).map(|_| AtomicU64::new(0)).collect(),
        call_name: (0..THREADS).map(|_| Mutex::new("")).collect(),
        epoch: Instant::now(),
        calls: AtomicUsize::new(0),
        calls_by: (0..THREADS).map(|_| AtomicUsize::new(0)).collect(),
        escaped: AtomicUsize::new(0),
        poisoned: Mutex::new(Vec::new()),
        errors: Mutex::new(HashMap::new()),
        seal_races: std::env::var_os("CHAOS_SEAL_RACES").is_none_or(|v| v != "0"),
    });
    let workers: Vec<_> = (0..THREADS)
        .map(|me| {
            let world = world.clone();
            std::thread::spawn(move || worker(&world, me, total / THREADS))
        })
        .collect();
    // The watchdog: no call may stay in flight longer than the bound.
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let now = world.epoch.elapsed().as_millis() as u64;
        for me in 0..THREADS {
            let started = world.in_call[me].load(Ordering::SeqCst);
            if started != 0 && now.saturating_sub(started - 1) > WATCHDOG.as_millis() as u64 {
                panic!(
                    "watchdog: thread {me}'s call {} has not returned within {WATCHDOG:?}",
                    world.call_name[me].lock().unwrap()
                );
            }
        }
    }
    for w in workers {
        w.join()
            .expect("a worker failed outside any accountant call");
    }
    CHAOS.store(false, Ordering::SeqCst);

    let calls = world.calls.load(Ordering::Relaxed);
    let errors = world.errors.lock().unwrap().clone();
    eprintln!(
        "chaos: {calls} calls, {} callback panics injected; errors by variant: {errors:?}",
        INJECTED.load(Ordering::Relaxed)
    );
    assert!(calls >= total, "{calls} calls");
    assert_eq!(world.escaped.load(Ordering::Relaxed), 0, "panics escaped");
    assert!(
        world.poisoned.lock().unwrap().is_empty(),
        "poisoned: {:?}",
        world.poisoned.lock().unwrap()
    );
    assert!(
        errors.get("CallbackPanicked").copied().unwrap_or(0) > 0,
        "the callbacks' panics were met and reported"
    );
    assert!(
        errors.get("SizeOutOfRange").copied().unwrap_or(0) > 0
            && errors.get("StableBeyondLog").copied().unwrap_or(0) > 0,
        "the mistakes were made"
    );

    // Calm again: hand out one more segment, stabilize everything below
    // it, drain what the sink still holds, push the frees through.
    let acc = &world.acc;
    let last = world.lsns.fetch_add(L, Ordering::SeqCst);
    acc.next(last).expect("next after the chaos");
    // Errors of passes nobody waited for come out one per call first.
    let reported = (0..=SINK_BOUND)
        .take_while(|_| acc.stabilize(last).is_err())
        .count();
    assert!(reported <= SINK_BOUND, "the sink is bounded");
    for _ in 0..4 {
        acc.flush();
    }
    acc.audit().expect("the audit after the chaos");
    // No landing was lost to a panicking bag: with nobody pinned, every
    // freed segment has landed.
    assert_eq!(acc.stats().freeing_on_epoch, 0, "a landing was lost");
    assert_eq!(acc.stable_lsn(), last - L);
}
