//! The write-path mix shared by `examples/throughput.rs` and the criterion
//! benchmarks: each thread acts as one write head of a log store.
//!
//! Thread `t` of `T` owns pages `[t·P, (t+1)·P)` and takes the number of
//! each segment it rolls to from one counter the heads share, as a store's
//! log hands out segment lsns ([`Numbering::Counter`], the default), or
//! writes its k-th segment at number `k·T + t` ([`Numbering::Interleaved`]).
//! Per operation it first does the store's own work (encoding and copying
//! a fragment of `work_bytes`), then: 60% link a delta of a random page,
//! 30% replace a page completely (with all its old pointers), 10% `clean`
//! (relocating the page if it is its own).
//! When its segment fills it rolls with `next` and stabilizes below the
//! slowest head's current segment.
//!
//! A head may start a segment at most [`HeadOptions::max_lead`] of its own
//! segments above the slowest head's current one (as a store's log buffers
//! bound how far its writers run ahead of what is durable); past that it
//! waits. Without the bound, a head in front of the fixed interleave runs
//! ahead for as long as the run lasts: its segments above the slowest
//! head's wait unsealed (tens of thousands after a few seconds at 2
//! threads, with the memory growing by hundreds of MB a second), so a
//! timed run leaves most of that head's seal work undone and grows slower
//! the longer it runs: not a steady state (docs/performance-log.md,
//! "Twenty-third session"). With the counter the backlog stays a few
//! segments at 2 threads; the bound matters where a head loses its core
//! for a while (more heads than cores).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::{Backoff, CachePadded};
use segment_accountant::baseline::MutexAccountant;
use segment_accountant::{Accountant, Config, DiskPtr, Lid, Lsn, MemStorage, PageId, Skip};

/// Segment size used by the mix.
pub const SEGMENT_SIZE: u64 = 64 * 1024;
/// Pages per thread.
pub const PAGES_PER_THREAD: u64 = 20_000;

/// The write path of either design.
pub trait WritePath: Send + Sync {
    fn name(&self) -> &'static str;
    fn next(&self, lsn: Lsn) -> Lid;
    fn link(&self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64);
    fn replace(&self, pid: PageId, lsn: Lsn, old: &[DiskPtr], new: DiskPtr, size: u64);
    fn stabilize(&self, lsn: Lsn);
    fn clean(&self, ignore: PageId) -> Option<PageId>;
    /// Segments Active (handed out, not sealed) as of the last combiner
    /// pass and the passes so far, where the design reports them.
    fn active_and_passes(&self) -> Option<(u64, u64)> {
        None
    }
}

impl WritePath for Accountant {
    fn name(&self) -> &'static str {
        "accountant"
    }
    fn next(&self, lsn: Lsn) -> Lid {
        Accountant::next(self, lsn).expect("next")
    }
    fn link(&self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64) {
        self.mark_link(pid, lsn, ptr, size).expect("link")
    }
    fn replace(&self, pid: PageId, lsn: Lsn, old: &[DiskPtr], new: DiskPtr, size: u64) {
        self.mark_replace(pid, lsn, old, new, size)
            .expect("replace")
    }
    fn stabilize(&self, lsn: Lsn) {
        Accountant::stabilize(self, lsn).expect("stabilize")
    }
    fn clean(&self, ignore: PageId) -> Option<PageId> {
        Accountant::clean(self, Skip::Page(ignore)).map(|r| r.pid)
    }
    fn active_and_passes(&self) -> Option<(u64, u64)> {
        let m = self.metrics();
        Some((m.active_segments, m.passes))
    }
}

impl WritePath for MutexAccountant {
    fn name(&self) -> &'static str {
        "mutex"
    }
    fn next(&self, lsn: Lsn) -> Lid {
        MutexAccountant::next(self, lsn).expect("next")
    }
    fn link(&self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64) {
        self.mark_link(pid, lsn, ptr, size).expect("link")
    }
    fn replace(&self, pid: PageId, lsn: Lsn, old: &[DiskPtr], new: DiskPtr, size: u64) {
        self.mark_replace(pid, lsn, old, new, size)
            .expect("replace")
    }
    fn stabilize(&self, lsn: Lsn) {
        MutexAccountant::stabilize(self, lsn).expect("stabilize")
    }
    fn clean(&self, ignore: PageId) -> Option<PageId> {
        MutexAccountant::clean(self, ignore)
    }
}

pub fn config() -> Config {
    Config::builder()
        .segment_size(SEGMENT_SIZE)
        .build()
        .unwrap()
}

pub fn accountant() -> Accountant {
    Accountant::new(config(), Arc::new(MemStorage::new()))
}

pub fn mutex_accountant() -> MutexAccountant {
    MutexAccountant::new(config())
}

/// How a head numbers the segment it rolls to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Numbering {
    /// The next number of one counter the heads share, taken as the head
    /// rolls (as a store's log hands out its next segment, the caller
    /// contract of SPEC §5's `next`): a fast head takes more numbers, and
    /// no head runs ahead of the others' numbers.
    Counter,
    /// Thread `t`'s k-th segment is `k·T + t`, fixed in advance: a head
    /// that runs ahead writes segments far above the stable bound, which the
    /// slowest head holds back (so its `stabilize` seals them all), and,
    /// with the lead bounded, waits for it.
    Interleaved,
}

/// How the heads of one run stabilize, number their segments and how far
/// one may run ahead of the others.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeadOptions {
    /// A background stabilizer runs instead of the heads stabilizing.
    pub background_stabilizer: bool,
    /// How a head numbers the segment it rolls to.
    pub numbering: Numbering,
    /// A head waits before starting a segment numbered more than
    /// `max_lead · T` above another head's current segment (`T` heads):
    /// with the fixed interleave, more than `max_lead` of its own segments
    /// ahead. `None`: unbounded (not a steady state, see the module).
    pub max_lead: Option<u64>,
}

impl Default for HeadOptions {
    /// Heads that stabilize themselves, number their segments from one
    /// counter and run at most [`MAX_LEAD`] segments ahead.
    fn default() -> Self {
        HeadOptions {
            background_stabilizer: false,
            numbering: Numbering::Counter,
            max_lead: Some(MAX_LEAD),
        }
    }
}

/// The default [`HeadOptions::max_lead`]: a head's 8 segments (512 KiB of
/// log buffers at [`SEGMENT_SIZE`]) ahead of the slowest head.
pub const MAX_LEAD: u64 = 8;

/// A head that has stopped: it holds no other head back.
const STOPPED: u64 = u64::MAX;

/// Shared between the heads of one run.
pub struct Shared {
    threads: u64,
    /// Each head's current segment number ([`STOPPED`] once it stopped).
    heads: Vec<AtomicU64>,
    /// With [`Numbering::Counter`], the next segment number to take.
    counter: Option<CachePadded<AtomicU64>>,
    background_stabilizer: bool,
    /// [`HeadOptions::max_lead`] in segment numbers (`max_lead · T`).
    max_lead: Option<u64>,
    /// Heads asleep in [`Shared::wait_for_room`], and what they sleep on:
    /// a head that waits long sleeps, as a store's writer blocks on a full
    /// log buffer, instead of yielding in a loop on a core the head it
    /// waits for may need (8 heads on 2 cores read the same either way,
    /// docs/performance-log.md, "Twenty-third session").
    sleepers: CachePadded<AtomicUsize>,
    room: (Mutex<()>, Condvar),
}

impl Shared {
    /// `threads` heads with the default [`HeadOptions`] but
    /// `background_stabilizer`.
    pub fn new(threads: usize, background_stabilizer: bool) -> Arc<Shared> {
        Shared::with_options(
            threads,
            HeadOptions {
                background_stabilizer,
                ..HeadOptions::default()
            },
        )
    }

    /// `threads` heads run by `options` (head `t` starts at segment `t`
    /// with either numbering).
    pub fn with_options(threads: usize, options: HeadOptions) -> Arc<Shared> {
        Arc::new(Shared {
            threads: threads as u64,
            heads: (0..threads).map(|t| AtomicU64::new(t as u64)).collect(),
            counter: (options.numbering == Numbering::Counter)
                .then(|| CachePadded::new(AtomicU64::new(threads as u64))),
            background_stabilizer: options.background_stabilizer,
            max_lead: options.max_lead.map(|l| l.max(1) * threads as u64),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            room: (Mutex::new(()), Condvar::new()),
        })
    }

    /// Publishes head `me`'s current segment number (or [`STOPPED`]) and
    /// wakes the heads asleep for room.
    fn publish(&self, me: u64, segno: u64) {
        // SeqCst, with the sleeper count's: either a sleeper that counted
        // itself before this store sees the number when it checks again
        // under the lock, or this load sees it counted and wakes it.
        self.heads[me as usize].store(segno, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _room = self.room.0.lock().unwrap();
            self.room.1.notify_all();
        }
    }

    /// The lowest current segment number of the heads other than `except`
    /// ([`STOPPED`] if none runs).
    fn lowest(&self, except: Option<u64>) -> u64 {
        (self.heads.iter().enumerate())
            .filter(|&(t, _)| Some(t as u64) != except)
            // SeqCst: see `publish` (the stable bound needs only Acquire,
            // but one ordering for both readers keeps it simple).
            .map(|(_, h)| h.load(Ordering::SeqCst))
            .min()
            .unwrap_or(STOPPED)
    }

    /// Whether head `me` may start segment `segno`.
    fn has_room(&self, me: u64, segno: u64, lead: u64) -> bool {
        segno <= self.lowest(Some(me)).saturating_add(lead)
    }

    /// Waits (spinning, then asleep until a head publishes) until head
    /// `me`, which has published `segno` as its current segment, may start
    /// it: no other head's current segment is more than the lead below it.
    /// The head with the lowest published number never waits, so some head
    /// always makes progress (a wait before publishing could deadlock two
    /// heads far behind a counter the others drove up, each waiting for the
    /// other's old number).
    fn wait_for_room(&self, me: u64, segno: u64) {
        let Some(lead) = self.max_lead else {
            return;
        };
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if self.has_room(me, segno, lead) {
                return;
            }
            backoff.snooze();
        }
        let mut room = self.room.0.lock().unwrap();
        // SeqCst: see `publish`.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !self.has_room(me, segno, lead) {
            // The timeout only bounds a wait the protocol above already
            // ends; it is not what wakes a head.
            room = self
                .room
                .1
                .wait_timeout(room, Duration::from_millis(10))
                .unwrap()
                .0;
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Head `me` has stopped: it no longer holds the stable bound back or
    /// any other head's room.
    pub fn stop(&self, me: u64) {
        self.publish(me, STOPPED);
    }

    /// The segment number a head at `segno` rolls to.
    fn roll_from(&self, segno: u64) -> u64 {
        match &self.counter {
            // Relaxed: the number need only be unique; the head's Release
            // store of it in `heads` is what stabilizers read.
            Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
            None => segno + self.threads,
        }
    }

    /// Everything below the slowest head's current segment is complete
    /// (`None` once every head stopped).
    pub fn stable_bound(&self) -> Option<Lsn> {
        let min = self.lowest(None);
        (min != STOPPED).then(|| (min * SEGMENT_SIZE) as Lsn)
    }

    /// Stabilizes `acc` below the slowest head's current segment (nothing
    /// once every head stopped): what a head does as it rolls, and the
    /// background stabilizer in its loop.
    fn stabilize(&self, acc: &dyn WritePath) {
        if let Some(bound) = self.stable_bound() {
            acc.stabilize(bound);
        }
    }
}

/// Where a writer's fragments go: its own write head (the head-per-thread
/// shape, [`Head`]) or one head every thread shares
/// (`examples/throughput.rs --shared-head`).
pub trait Placement {
    /// Reserves `size` bytes for a fragment; returns its lsn and its lid
    /// (the mix writes inline fragments only).
    fn place(&mut self, size: u64, acc: &dyn WritePath) -> (Lsn, Lid);
}

/// The store's own work per write: encode and copy a fragment of
/// `src.len()` bytes, hash the copy. Returns the fragment's size in the
/// log.
pub fn store_work(src: &mut [u8], dst: &mut [u8], pid: PageId) -> u64 {
    let n = src.len();
    if n == 0 {
        return 32;
    }
    src[0] = pid as u8;
    dst.copy_from_slice(src);
    let mut h = 0u64;
    for chunk in dst.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
    }
    std::hint::black_box(h);
    n as u64 + 32
}

/// One thread's page-writing mix, over any [`Placement`].
pub struct Mix {
    t: u64,
    /// Pages per thread: thread `t` owns `[t·P, (t+1)·P)`.
    per_thread: u64,
    /// Each page's fragments, up to 4: their lids (the mix writes inline
    /// fragments only), and in `lens` how many: 32 bytes and one byte per
    /// page, in two arrays of the thread's own. The mix's
    /// bookkeeping is not the work it measures (`--work-bytes` is), and a
    /// `Vec` per page cost two dependent cache misses per operation
    /// (docs/performance-log.md, "Twenty-first session").
    pages: Vec<[Lid; 4]>,
    lens: Vec<u8>,
    rng: u64,
    src: Vec<u8>,
    dst: Vec<u8>,
    pub ops: u64,
}

impl Mix {
    /// Thread `t`'s mix: it owns pages `[t·P, (t+1)·P)` with `P` =
    /// [`PAGES_PER_THREAD`]; each write does `work_bytes` of the store's
    /// own work first.
    pub fn new(t: usize, work_bytes: usize) -> Mix {
        Mix::with_pages(t, work_bytes, PAGES_PER_THREAD)
    }

    /// [`Mix::new`] with `per_thread` pages per thread.
    pub fn with_pages(t: usize, work_bytes: usize, per_thread: u64) -> Mix {
        assert!(per_thread > 0);
        Mix {
            t: t as u64,
            per_thread,
            pages: vec![[0; 4]; per_thread as usize],
            lens: vec![0; per_thread as usize],
            rng: 0x9e37_79b9_7f4a_7c15 ^ (t as u64 * 0x2545_f491_4f6c_dd1d + 1),
            src: (0..work_bytes).map(|i| i as u8).collect(),
            dst: vec![0; work_bytes],
            ops: 0,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn work(&mut self, pid: PageId) -> u64 {
        store_work(&mut self.src, &mut self.dst, pid)
    }

    fn write_full(&mut self, local: usize, acc: &dyn WritePath, at: &mut impl Placement) {
        let pid = self.t * self.per_thread + local as u64;
        let size = self.work(pid);
        let (lsn, lid) = at.place(size, acc);
        let ptr = DiskPtr::Inline(lid);
        let n = self.lens[local] as usize;
        if n == 0 {
            acc.link(pid, lsn, ptr, size);
        } else {
            let old = self.pages[local].map(DiskPtr::Inline);
            acc.replace(pid, lsn, &old[..n], ptr, size);
        }
        self.pages[local][0] = lid;
        self.lens[local] = 1;
    }

    /// One operation of the mix, its fragments placed by `at`.
    pub fn step(&mut self, acc: &dyn WritePath, at: &mut impl Placement) {
        let r = self.rand();
        let local = (r >> 8) as usize % self.per_thread as usize;
        match r % 10 {
            0..=5 if (1..4).contains(&self.lens[local]) => {
                let pid = self.t * self.per_thread + local as u64;
                let size = self.work(pid);
                let (lsn, lid) = at.place(size, acc);
                acc.link(pid, lsn, DiskPtr::Inline(lid), size);
                self.pages[local][self.lens[local] as usize] = lid;
                self.lens[local] += 1;
            }
            0..=8 => self.write_full(local, acc, at),
            _ => {
                let ignore = self.t * self.per_thread + local as u64;
                if let Some(pid) = acc.clean(ignore) {
                    if pid / self.per_thread == self.t {
                        self.write_full((pid % self.per_thread) as usize, acc, at);
                    }
                }
            }
        }
        self.ops += 1;
    }
}

/// A head's own segment: thread `t` writes its k-th segment at segment
/// number `k·T + t`.
struct OwnSegment {
    t: u64,
    segno: u64,
    lid: Lid,
    used: u64,
}

/// [`OwnSegment`] as a placement, with the run's shared state.
struct Own<'a> {
    segment: &'a mut OwnSegment,
    shared: &'a Shared,
}

impl Placement for Own<'_> {
    /// Reserves `size` bytes at the head, rolling to the next segment (and
    /// stabilizing) when full.
    fn place(&mut self, size: u64, acc: &dyn WritePath) -> (Lsn, Lid) {
        let (seg, shared) = (&mut *self.segment, self.shared);
        if seg.used + size > SEGMENT_SIZE {
            // Both numberings only go up, and a head publishes its new
            // number before calling `next` for it: the bound (the lowest
            // number a head is at) covers only segments handed out that
            // every head has rolled past.
            seg.segno = shared.roll_from(seg.segno);
            shared.publish(seg.t, seg.segno);
            shared.wait_for_room(seg.t, seg.segno);
            seg.lid = acc.next((seg.segno * SEGMENT_SIZE) as Lsn);
            seg.used = 0;
            if !shared.background_stabilizer {
                shared.stabilize(acc);
            }
        }
        let at = seg.used;
        seg.used += size;
        ((seg.segno * SEGMENT_SIZE + at) as Lsn, seg.lid + at)
    }
}

/// Stops a head when dropped (see [`Head::stop_on_drop`]).
pub struct StopOnDrop<'a> {
    shared: &'a Shared,
    head: u64,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.stop(self.head);
    }
}

/// One write head of its own: the mix over the thread's own segments.
pub struct Head {
    mix: Mix,
    segment: OwnSegment,
}

impl Head {
    /// Thread `t`'s head, with its first segment.
    pub fn new(t: usize, work_bytes: usize, acc: &dyn WritePath) -> Head {
        Head::with_pages(t, work_bytes, PAGES_PER_THREAD, acc)
    }

    /// [`Head::new`] with `per_thread` pages per thread.
    pub fn with_pages(t: usize, work_bytes: usize, per_thread: u64, acc: &dyn WritePath) -> Head {
        Head::of_mix(t, t as u64, work_bytes, per_thread, acc)
    }

    /// Thread `t`'s mix (its pages, its random sequence) as the only head
    /// of its own accountant and [`Shared`]: segment numbers 0, 1, 2, …
    pub fn alone(t: usize, work_bytes: usize, per_thread: u64, acc: &dyn WritePath) -> Head {
        Head::of_mix(t, 0, work_bytes, per_thread, acc)
    }

    /// Thread `t`'s mix as head `head` of its [`Shared`], at that head's
    /// first segment (number `head`).
    fn of_mix(
        t: usize,
        head: u64,
        work_bytes: usize,
        per_thread: u64,
        acc: &dyn WritePath,
    ) -> Head {
        Head {
            mix: Mix::with_pages(t, work_bytes, per_thread),
            segment: OwnSegment {
                t: head,
                segno: head,
                lid: acc.next((head * SEGMENT_SIZE) as Lsn),
                used: 0,
            },
        }
    }

    /// Operations done so far.
    pub fn ops(&self) -> u64 {
        self.mix.ops
    }

    /// A guard that stops the head when dropped ([`Shared::stop`]): on
    /// return and on unwind alike, so a head that panics leaves no other
    /// head waiting for room behind it.
    pub fn stop_on_drop<'a>(&self, shared: &'a Shared) -> StopOnDrop<'a> {
        StopOnDrop {
            shared,
            head: self.segment.t,
        }
    }

    /// One operation of the mix.
    pub fn step(&mut self, acc: &dyn WritePath, shared: &Shared) {
        let mut at = Own {
            segment: &mut self.segment,
            shared,
        };
        self.mix.step(acc, &mut at);
    }
}

/// The time one round trip of a cache line between two threads takes
/// (two line transfers), in ns: this thread and one it starts pass a
/// counter back and forth through one atomic on a line of its own for
/// `duration`. On a 2-vCPU VM the two threads run on the two vCPUs, and
/// the figure tells how near the host placed them (about 50–70 ns near,
/// about 400 far on the machines this project is measured on;
/// docs/performance-log.md, "The shared head's two speeds").
pub fn line_round_trip_ns(duration: Duration) -> f64 {
    let line = CachePadded::new(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    /// Stops the other side however this side leaves the scope.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // The other side: turns every odd value even.
            while !stop.load(Ordering::Relaxed) {
                // Acquire/Release: the hand-over is the point, not data.
                let v = line.load(Ordering::Acquire);
                if v % 2 == 1 {
                    line.store(v + 1, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let _stop = Stop(&stop);
        let start = Instant::now();
        let mut trips = 0u64;
        while start.elapsed() < duration {
            for _ in 0..1000 {
                let v = line.load(Ordering::Acquire);
                line.store(v + 1, Ordering::Release);
                while line.load(Ordering::Acquire) == v + 1 {
                    std::hint::spin_loop();
                }
            }
            trips += 1000;
        }
        start.elapsed().as_nanos() as f64 / trips as f64
    })
}

/// The calling thread's CPU time so far in nanoseconds: the scheduler's
/// own count (`/proc/thread-self/schedstat`), or `None` where there is no
/// such file. On a VM it leaves out the time the host took the core away
/// (steal), which a wall-clock figure includes.
pub fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// A timed figure: operations per second of wall-clock time, and per
/// second of the worker threads' CPU time (NaN where it cannot be read).
#[derive(Clone, Debug)]
pub struct Figure {
    pub per_s: f64,
    pub per_cpu_s: f64,
    /// Each worker's operations and CPU time (ns).
    pub workers: Vec<(u64, Option<u64>)>,
    /// The design's Active segments and passes at the end (see
    /// [`WritePath::active_and_passes`]).
    pub active_and_passes: Option<(u64, u64)>,
}

impl Figure {
    /// The workers' `(ops, cpu_ns)` over `elapsed` seconds (CPU time
    /// `None` where it could not be read).
    pub fn new(workers: Vec<(u64, Option<u64>)>, elapsed: f64) -> Figure {
        let ops: u64 = workers.iter().map(|w| w.0).sum();
        let cpu_ns: Option<u64> = workers.iter().map(|w| w.1).sum();
        Figure {
            per_s: ops as f64 / elapsed,
            per_cpu_s: cpu_ns.map_or(f64::NAN, |ns| ops as f64 / (ns as f64 / 1e9)),
            workers,
            active_and_passes: None,
        }
    }
}

/// A worker's CPU time between `start` (read after the barrier) and now.
pub fn cpu_since(start: Option<u64>) -> Option<u64> {
    Some(thread_cpu_ns()?.saturating_sub(start?))
}

/// Runs `threads` heads of `per_thread` pages each on `acc` for `duration`
/// after a barrier, run by `options`; returns operations per second (of
/// wall-clock and of the heads' CPU time).
pub fn run(
    acc: Arc<dyn WritePath>,
    threads: usize,
    duration: Duration,
    work_bytes: usize,
    per_thread: u64,
    options: HeadOptions,
) -> Figure {
    let shared = Shared::with_options(threads, options);
    let stabilizer = options
        .background_stabilizer
        .then(|| (acc.clone(), shared.clone()));
    let setup = move |t: usize| {
        let head = Head::with_pages(t, work_bytes, per_thread, &*acc);
        (acc.clone(), shared.clone(), head)
    };
    run_heads(threads, duration, setup, stabilizer)
}

/// [`run`] with nothing shared: each of the `threads` heads on an
/// accountant of its own (`make`, called on the head's thread), stabilizing
/// below its own segment. About the N-thread figure any design of the same
/// per-operation work and data could reach on this machine: what is left
/// of the N-thread / 1-thread ratio is the cores' shared caches and memory,
/// not the accountant. (Not quite the same work: one accountant's `clean`
/// also suggests other heads' pages, which a thread of this mix drops.)
pub fn run_unshared(
    make: fn() -> Arc<dyn WritePath>,
    threads: usize,
    duration: Duration,
    work_bytes: usize,
    per_thread: u64,
) -> Figure {
    let setup = move |t: usize| {
        let acc = make();
        let head = Head::alone(t, work_bytes, per_thread, &*acc);
        (acc, Shared::new(1, false), head)
    };
    run_heads(threads, duration, setup, None)
}

/// One head's thread: the write path it calls, the shared state it
/// stabilizes by, and the head, made on that thread.
type HeadSetup = (Arc<dyn WritePath>, Arc<Shared>, Head);

/// The timed loop of [`run`] and [`run_unshared`]: `threads` threads, each
/// set up by `setup(t)` before the barrier, stepping their heads until
/// `duration` has passed; with `stabilizer`, one more thread stabilizes
/// in the background.
fn run_heads(
    threads: usize,
    duration: Duration,
    setup: impl Fn(usize) -> HeadSetup + Send + Sync + 'static,
    stabilizer: Option<(Arc<dyn WritePath>, Arc<Shared>)>,
) -> Figure {
    let setup = Arc::new(setup);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (setup, barrier, stop) = (setup.clone(), barrier.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let (acc, shared, mut head) = setup(t);
            let _stopping = head.stop_on_drop(&shared);
            barrier.wait();
            let cpu = thread_cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    head.step(&*acc, &shared);
                }
            }
            (head.ops(), cpu_since(cpu))
        }));
    }
    let stabilizer = stabilizer.map(|(acc, shared)| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                shared.stabilize(&*acc);
                std::thread::yield_now();
            }
        })
    });
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let workers = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(s) = stabilizer {
        s.join().unwrap();
    }
    Figure::new(workers, elapsed)
}

/// Runs a fixed number of operations per thread (for criterion's
/// `iter_custom`); returns the elapsed time of the slowest thread.
pub fn run_ops(
    acc: Arc<dyn WritePath>,
    threads: usize,
    ops_per_thread: u64,
    work_bytes: usize,
    background_stabilizer: bool,
) -> Duration {
    let shared = Shared::new(threads, background_stabilizer);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (acc, shared, barrier) = (acc.clone(), shared.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            let mut head = Head::new(t, work_bytes, &*acc);
            let _stopping = head.stop_on_drop(&shared);
            barrier.wait();
            for _ in 0..ops_per_thread {
                head.step(&*acc, &shared);
            }
        }));
    }
    let stabilizer = background_stabilizer.then(|| {
        let (acc, shared, done) = (acc.clone(), shared.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                shared.stabilize(&*acc);
                std::thread::yield_now();
            }
        })
    });
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(s) = stabilizer {
        s.join().unwrap();
    }
    elapsed
}
