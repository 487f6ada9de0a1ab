//! Throughput of the write-path mix (see `examples/workload/mod.rs`) on the
//! lock-free accountant and on the single-mutex baseline, alternating the
//! designs `--runs` times per thread count and printing medians.
//!
//! ```text
//! cargo run --release --example throughput -- --threads 1,2,8 --seconds 2 [--runs 5] [--work-bytes 256] [--background-stabilizer]
//!                                              [--shared-head | --shape head-per-thread|shared-head|both]
//!                                              [--threads-up-to N|cores]   (1, 2, 4, … up to N, and N)
//!                                              [--only accountant|mutex]   (for profiling one design)
//!                                              [--paired]   (own scaling from back-to-back pairs)
//!                                              [--same-data] (with --paired: also against 1 thread owning every thread's pages)
//!                                              [--unshared] (with --paired: also N accountants sharing nothing)
//!                                              [--probe] (with --paired: a cache line's round trip between 2 threads before each run)
//!                                              [--numbering counter|interleaved] (how heads number segments; default counter)
//!                                              [--max-lead N] (a head's segments ahead of the slowest, default 8; 0: unbounded)
//!                                              [--workers]  (each thread's operations and CPU time)
//! ```
//!
//! Two shapes of store:
//!
//! - `head-per-thread` (the default): every thread is a write head of its
//!   own, writing its own segments (the mix of `examples/workload`).
//! - `shared-head` (`--shared-head`): every thread writes into ONE head,
//!   the common store shape: one log tail, the threads place their
//!   fragments into the current segment side by side, and when it fills
//!   one of them calls `next` for the next segment while the others wait
//!   for it and then continue in the new one. Each thread still owns its
//!   pages (a store's page latches would serialize writers of one page),
//!   and the per-call mix is the same: 60% link a delta, 30% rewrite a page
//!   with all its old pointers, 10% `clean`.
//!
//! With a head per thread, a head takes the number of each segment it
//! rolls to from one counter the heads share (`--numbering counter`, the
//! default), as a store's log hands out segment lsns: no head runs ahead
//! of the others' numbers, and each `stabilize` seals the few segments the
//! heads finished since the last one. With `--numbering interleaved`,
//! thread `t`'s k-th segment is number `k·T + t`, so a head that runs
//! ahead writes far above the stable bound the slowest head holds.
//!
//! Either way a head waits before starting a segment more than
//! `--max-lead` (8) of its own segments above the slowest head's current
//! one, as a store's writers wait when its log buffers are full. With
//! `--numbering interleaved --max-lead 0` a head in front runs ahead for
//! the whole run and its backlog of unsealed segments grows without end
//! (docs/performance-log.md, "Twenty-third session"): what the head-per-thread
//! figures before the twenty-third session measured.
//!
//! The thread counts always include 1: every ratio is against the same
//! run's 1-thread figure of the same shape and design.
//!
//! With `--paired`, the own-scaling ratios are measured in pairs instead:
//! each run times the 1-thread and the N-thread figure of one design (and
//! of the parallel loop, and of the head alone) back to back, alternating
//! which goes first, and the ratio is taken within the pair; the median of
//! the runs' ratios is printed. On a VM whose core speed drifts over
//! seconds, a 1-thread median taken minutes before the N-thread one moves
//! the ratio more than anything measured (docs/performance-log.md). Each run also
//! times two limits, with no accountant:
//!
//! - a trivially parallel loop of the same per-write work (copy and hash
//!   `--work-bytes`): its N-thread / 1-thread ratio is what the machine
//!   allows, the limit for the accountant's own scaling;
//! - with the shared head, the head's coordination alone: the same
//!   writers, work and reservations over a write path whose calls do
//!   nothing (`NullPath`). The accountant's shared-head figure over it
//!   says how much of the head's capacity the accountant leaves.
//!
//! With `--same-data`, each design's N-thread figure is also paired with
//! 1 thread that owns all N threads' pages (N × 20,000): the same live
//! data on one core. N heads keep N times the pages, segments and page
//! maps that 1 head keeps, and this mix's cost per operation grows with
//! its data (docs/performance-log.md, "How much of the 2-thread shortfall is
//! the data"); this row says how much of the own-scaling shortfall is
//! that, and how much is the threads meeting.
//!
//! With `--unshared`, the accountant's head-per-thread N-thread figure is
//! also paired with N threads that each run the same head on an accountant
//! of their own (nothing shared between the threads, each stabilizing
//! below its own segment) against 1 such thread. That ratio is the limit
//! for any design doing the same work per operation on the same data on
//! this machine: what it loses against the parallel loop is the cores'
//! shared caches and memory; what the accountant loses against it is what
//! its threads share.

mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use segment_accountant::{DiskPtr, Lid, Lsn, PageId};
use workload::{
    cpu_since, store_work, thread_cpu_ns, Figure, HeadOptions, Mix, Numbering, Placement,
    WritePath, MAX_LEAD, PAGES_PER_THREAD, SEGMENT_SIZE,
};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A ratio for printing (`-` when a side was not measured).
fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".to_string()
    }
}

/// An ops/s figure for printing, with thousands separators.
fn ops(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_string();
    }
    let digits = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn usage(msg: &str) -> ! {
    eprintln!("throughput: {msg}");
    eprintln!(
        "usage: throughput [--threads 1,2,8 | --threads-up-to N|cores] [--seconds S] [--runs R] [--work-bytes B]\n\
         \x20                 [--shared-head | --shape head-per-thread|shared-head|both] [--background-stabilizer]\n\
         \x20                 [--only accountant|mutex] [--paired [--same-data] [--unshared] [--probe]]\n\
         \x20                 [--numbering counter|interleaved] [--max-lead N] [--workers]"
    );
    std::process::exit(2);
}

/// 1, 2, 4, … below `n`, then `n`.
fn sweep(n: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |&t| t.checked_mul(2))
        .take_while(|&t| t < n)
        .collect();
    counts.push(n);
    counts
}

/// An atomic alone on its cache line (128 bytes: adjacent-line prefetch
/// pairs 64-byte lines on x86).
#[repr(align(128))]
struct Padded(AtomicU64);

/// Bits of the head word below the segment number: the offset of the next
/// free byte in the current segment.
const OFFSET_BITS: u32 = 32;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// How many recent segments' lids the head remembers.
const LID_RING: u64 = 1024;

/// One write head shared by every thread.
///
/// The coordination, and what it costs per write:
///
/// - A reservation is one `fetch_add(size)` on the head word (`segno << 32
///   | offset`): the offset it returns is the writer's place if the
///   fragment ends within the segment. That is one RMW of one shared cache
///   line per write, the line moving between the cores that write (tens of
///   ns per transfer; it caps the head at some tens of millions of writes
///   per second, well above what the accountant's calls allow, so the
///   accountant stays the bottleneck).
/// - The one reservation that crosses the segment's end makes its thread
///   the roller: it calls `next` for the following segment, publishes its
///   lid in `lids` and then a fresh word (Release). Reservations beyond the
///   end wait (spin, then yield) for the new word and retry. So every
///   `next` stalls every writer of the head for the duration of the call,
///   as in a store with one log tail.
/// - Each writer publishes, on its own cache line (`floors`), the latest
///   segment number a reservation of its returned, when it changes: once
///   per segment per writer, not per write. A writer only ever writes
///   into that segment or later ones, so every segment below the lowest
///   floor is complete, and the roller stabilizes below it (as the
///   head-per-thread mix stabilizes below its slowest head).
/// - A new segment's lid is read from `lids` once per segment per writer
///   (the Acquire of the word that names the segment makes it visible).
///   The roller of segment `n` reuses the slot of segment `n - LID_RING`
///   only once every floor is past that segment.
///
/// All of it is the same code and the same atomics for both designs: only
/// the `WritePath` behind it differs.
struct SharedHead {
    word: Padded,
    lids: Box<[AtomicU64]>,
    floors: Box<[Padded]>,
    background_stabilizer: bool,
}

impl SharedHead {
    /// The head at segment 0, for `threads` writers.
    fn new(threads: usize, acc: &dyn WritePath, background_stabilizer: bool) -> SharedHead {
        let lids: Box<[AtomicU64]> = (0..LID_RING).map(|_| AtomicU64::new(0)).collect();
        lids[0].store(acc.next(0), Ordering::Relaxed);
        SharedHead {
            word: Padded(AtomicU64::new(0)),
            lids,
            floors: (0..threads).map(|_| Padded(AtomicU64::new(0))).collect(),
            background_stabilizer,
        }
    }

    /// The lowest segment number a writer may still write into.
    fn min_floor(&self) -> u64 {
        self.floors
            .iter()
            .map(|f| f.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Everything below the lowest floor is complete.
    fn stable_bound(&self) -> Option<Lsn> {
        let floor = self.min_floor();
        (floor != u64::MAX).then(|| (floor * SEGMENT_SIZE) as Lsn)
    }

    /// Reserves `size` bytes for writer `me`: `(segment number, offset)`.
    /// `floor` is the writer's last published floor.
    fn reserve(&self, me: usize, floor: &mut u64, size: u64, acc: &dyn WritePath) -> (u64, u64) {
        loop {
            // Acquire: pairs with the roller's Release store of the word,
            // so the new segment's lid is visible.
            let old = self.word.0.fetch_add(size, Ordering::Acquire);
            let (segno, at) = (old >> OFFSET_BITS, old & OFFSET_MASK);
            if segno != *floor {
                // Release: this writer's calls into earlier segments happen
                // before a stabilizer that reads the new floor.
                self.floors[me].0.store(segno, Ordering::Release);
                *floor = segno;
            }
            if at + size <= SEGMENT_SIZE {
                return (segno, at);
            }
            if at <= SEGMENT_SIZE {
                self.roll(segno, acc);
            } else {
                self.wait_past(segno);
            }
        }
    }

    /// Installs segment `segno + 1` (only the one writer whose reservation
    /// crossed the end of `segno` calls this).
    fn roll(&self, segno: u64, acc: &dyn WritePath) {
        let next = segno + 1;
        if next >= LID_RING {
            let mut spins = 0u32;
            while self.min_floor() <= next - LID_RING {
                backoff(&mut spins);
            }
        }
        let lid = acc.next((next * SEGMENT_SIZE) as Lsn);
        self.lids[(next % LID_RING) as usize].store(lid, Ordering::Relaxed);
        self.word.0.store(next << OFFSET_BITS, Ordering::Release);
        if !self.background_stabilizer {
            if let Some(bound) = self.stable_bound() {
                acc.stabilize(bound);
            }
        }
    }

    /// Waits until the head has moved past segment `segno`.
    fn wait_past(&self, segno: u64) {
        let mut spins = 0u32;
        while self.word.0.load(Ordering::Relaxed) >> OFFSET_BITS == segno {
            backoff(&mut spins);
        }
    }

    fn lid(&self, segno: u64) -> Lid {
        self.lids[(segno % LID_RING) as usize].load(Ordering::Relaxed)
    }
}

/// Spins a little, then yields (more writers than cores must let the one
/// that rolls run).
fn backoff(spins: &mut u32) {
    if *spins < 6 {
        for _ in 0..1 << *spins {
            std::hint::spin_loop();
        }
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

/// A write path whose calls do nothing (`next` hands out the lsn as the
/// lid, `clean` never suggests a page): what the shared head's
/// coordination and the store's work cost without an accountant.
struct NullPath;

impl WritePath for NullPath {
    fn name(&self) -> &'static str {
        "none"
    }
    fn next(&self, lsn: Lsn) -> Lid {
        lsn as Lid
    }
    fn link(&self, _: PageId, _: Lsn, _: DiskPtr, _: u64) {}
    fn replace(&self, _: PageId, _: Lsn, _: &[DiskPtr], _: DiskPtr, _: u64) {}
    fn stabilize(&self, _: Lsn) {}
    fn clean(&self, _: PageId) -> Option<PageId> {
        None
    }
}

/// The shared head's coordination alone: `threads` writers over
/// [`NullPath`].
fn head_alone(threads: usize, duration: Duration, work_bytes: usize, background: bool) -> Figure {
    run_shared_head(
        &NullPath,
        threads,
        duration,
        work_bytes,
        PAGES_PER_THREAD,
        background,
    )
}

/// One writer's place in the shared head: the latest segment it reserved
/// in (its floor) and that segment's lid.
struct SharedPlace<'a> {
    head: &'a SharedHead,
    me: usize,
    floor: u64,
    segment: (u64, Lid),
}

impl Placement for SharedPlace<'_> {
    fn place(&mut self, size: u64, acc: &dyn WritePath) -> (Lsn, Lid) {
        let (segno, at) = self.head.reserve(self.me, &mut self.floor, size, acc);
        if self.segment.0 != segno {
            self.segment = (segno, self.head.lid(segno));
        }
        ((segno * SEGMENT_SIZE + at) as Lsn, self.segment.1 + at)
    }
}

/// Runs `threads` writers of one shared head, `per_thread` pages each, on
/// `acc` for `duration` after a barrier; returns operations per second (of
/// wall-clock and of CPU time).
fn run_shared_head(
    acc: &dyn WritePath,
    threads: usize,
    duration: Duration,
    work_bytes: usize,
    per_thread: u64,
    background_stabilizer: bool,
) -> Figure {
    let head = SharedHead::new(threads, acc, background_stabilizer);
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (head, barrier, stop) = (&head, &barrier, &stop);
                s.spawn(move || {
                    // The head-per-thread mix's writes, placed in the
                    // shared head.
                    let mut mix = Mix::with_pages(t, work_bytes, per_thread);
                    let mut place = SharedPlace {
                        head,
                        me: t,
                        floor: 0,
                        segment: (0, head.lid(0)),
                    };
                    barrier.wait();
                    let cpu = thread_cpu_ns();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            mix.step(acc, &mut place);
                        }
                    }
                    // Done: no longer holds the stable bound back.
                    head.floors[t].0.store(u64::MAX, Ordering::Release);
                    (mix.ops, cpu_since(cpu))
                })
            })
            .collect();
        let stabilizer = background_stabilizer.then(|| {
            let (head, stop) = (&head, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(bound) = head.stable_bound() {
                        acc.stabilize(bound);
                    }
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
        if let Some(h) = stabilizer {
            h.join().unwrap();
        }
        Figure::new(workers, elapsed)
    })
}

/// The trivially parallel loop: `threads` threads doing only the per-write
/// work, sharing nothing; returns operations per second (of wall-clock
/// and of CPU time).
fn run_parallel_loop(threads: usize, duration: Duration, work_bytes: usize) -> Figure {
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    let mut src: Vec<u8> = (0..work_bytes).map(|i| i as u8).collect();
                    let mut dst = vec![0u8; work_bytes];
                    let mut n = 0u64;
                    barrier.wait();
                    let cpu = thread_cpu_ns();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            store_work(&mut src, &mut dst, t as u64 ^ n);
                            n += 1;
                        }
                    }
                    (n, cpu_since(cpu))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let workers = handles.into_iter().map(|h| h.join().unwrap()).collect();
        Figure::new(workers, start.elapsed().as_secs_f64())
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    HeadPerThread,
    SharedHead,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::HeadPerThread => "head-per-thread",
            Shape::SharedHead => "shared-head",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Design {
    Accountant,
    Mutex,
}

/// One measurement of `shape` on a fresh accountant of `design`, each
/// thread owning `per_thread` pages.
fn measure(shape: Shape, design: Design, threads: usize, per_thread: u64, setup: &Setup) -> Figure {
    let Setup {
        duration,
        work_bytes,
        heads,
        ..
    } = *setup;
    let background = heads.background_stabilizer;
    let acc: Arc<dyn WritePath> = match design {
        Design::Accountant => Arc::new(workload::accountant()),
        Design::Mutex => Arc::new(workload::mutex_accountant()),
    };
    let mut figure = match shape {
        Shape::HeadPerThread => workload::run(
            acc.clone(),
            threads,
            duration,
            work_bytes,
            per_thread,
            heads,
        ),
        Shape::SharedHead => {
            run_shared_head(&*acc, threads, duration, work_bytes, per_thread, background)
        }
    };
    figure.active_and_passes = acc.active_and_passes();
    figure
}

/// Medians of one shape at one thread count.
struct Row {
    shape: Shape,
    threads: usize,
    accountant: f64,
    mutex: f64,
    /// Per-run accountant / mutex ratios (same run, adjacent measurements).
    run_ratios: Vec<f64>,
    /// The shared head's coordination alone (`NullPath`); NaN for the
    /// head-per-thread shape.
    head_alone: f64,
}

fn main() {
    let mut threads = vec![1usize, 2, 8];
    let mut seconds = 2.0f64;
    let mut runs = 5usize;
    let mut work_bytes = 256usize;
    let mut background = false;
    let mut only: Option<String> = None;
    let mut paired = false;
    let mut same_data = false;
    let mut unshared = false;
    let mut probe = false;
    let mut numbering = Numbering::Counter;
    let mut max_lead = Some(MAX_LEAD);
    let mut workers = false;
    let mut shapes = vec![Shape::HeadPerThread];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--threads" => {
                threads = value()
                    .split(',')
                    .map(|t| t.parse().unwrap_or_else(|_| usage("bad --threads")))
                    .collect();
                if threads.contains(&0) {
                    usage("thread counts must be positive");
                }
            }
            "--threads-up-to" => {
                let v = value();
                let n = if v == "cores" {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    v.parse()
                        .unwrap_or_else(|_| usage("bad --threads-up-to (a number or `cores`)"))
                };
                if n == 0 {
                    usage("thread counts must be positive");
                }
                threads = sweep(n);
            }
            "--seconds" => seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage("bad --runs")),
            "--work-bytes" => {
                work_bytes = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --work-bytes"))
            }
            "--background-stabilizer" => background = true,
            "--paired" => paired = true,
            "--same-data" => same_data = true,
            "--unshared" => unshared = true,
            "--probe" => probe = true,
            // The default since the twenty-third session, kept for the
            // commands in docs/performance-log.md before it.
            "--roll-counter" => numbering = Numbering::Counter,
            "--numbering" => {
                numbering = match value().as_str() {
                    "counter" => Numbering::Counter,
                    "interleaved" => Numbering::Interleaved,
                    _ => usage("bad --numbering (counter or interleaved)"),
                }
            }
            "--max-lead" => {
                let lead: u64 = value().parse().unwrap_or_else(|_| usage("bad --max-lead"));
                max_lead = (lead > 0).then_some(lead);
            }
            "--workers" => workers = true,
            "--shared-head" => shapes = vec![Shape::SharedHead],
            "--shape" => {
                shapes = match value().as_str() {
                    "head-per-thread" => vec![Shape::HeadPerThread],
                    "shared-head" => vec![Shape::SharedHead],
                    "both" => vec![Shape::HeadPerThread, Shape::SharedHead],
                    _ => usage("bad --shape (head-per-thread, shared-head or both)"),
                }
            }
            // For profiling one design alone.
            "--only" => {
                let v = value();
                if v != "accountant" && v != "mutex" {
                    usage("bad --only (accountant or mutex)");
                }
                only = Some(v);
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    if runs == 0 || seconds <= 0.0 {
        usage("--runs and --seconds must be positive");
    }
    if (same_data || unshared || probe) && !paired {
        usage("--same-data, --unshared and --probe are rows of --paired");
    }
    if work_bytes as u64 + 32 > SEGMENT_SIZE {
        usage("--work-bytes must leave a fragment smaller than a segment");
    }
    // Every ratio is against the same run's 1-thread figure.
    threads.push(1);
    threads.sort_unstable();
    threads.dedup();

    let mut designs = Vec::new();
    if only.as_deref() != Some("mutex") {
        designs.push(Design::Accountant);
    }
    if only.as_deref() != Some("accountant") {
        designs.push(Design::Mutex);
    }
    let duration = Duration::from_secs_f64(seconds);
    println!(
        "# {} cores seen, {runs} runs of {seconds} s per figure, {work_bytes} bytes of work per call{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if background {
            ", background stabilizer"
        } else {
            ""
        }
    );
    let setup = Setup {
        duration,
        work_bytes,
        same_data,
        unshared,
        probe,
        heads: HeadOptions {
            background_stabilizer: background,
            numbering,
            max_lead,
        },
    };
    if paired {
        paired_scaling(&threads, &shapes, &designs, runs, &setup);
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut loops: Vec<(usize, f64)> = Vec::new();
    for &t in &threads {
        let mut figures: Vec<[Vec<f64>; 2]> = shapes.iter().map(|_| [vec![], vec![]]).collect();
        let mut run_ratios: Vec<Vec<f64>> = shapes.iter().map(|_| vec![]).collect();
        let mut loop_figures = Vec::new();
        let mut alone_figures = Vec::new();
        for run in 0..runs {
            // Alternate which design goes first, so neither always runs on
            // a machine the other just warmed (or heated).
            let mut order = designs.clone();
            if run % 2 == 1 {
                order.reverse();
            }
            for (i, &shape) in shapes.iter().enumerate() {
                let mut this_run = [f64::NAN; 2];
                for &design in &order {
                    let d = design as usize;
                    let figure = measure(shape, design, t, PAGES_PER_THREAD, &setup);
                    if workers {
                        print_workers(shape, design, t, &figure);
                    }
                    this_run[d] = figure.per_s;
                    figures[i][d].push(this_run[d]);
                }
                run_ratios[i].push(this_run[0] / this_run[1]);
            }
            loop_figures.push(run_parallel_loop(t, duration, work_bytes).per_s);
            if shapes.contains(&Shape::SharedHead) {
                alone_figures.push(head_alone(t, duration, work_bytes, background).per_s);
            }
        }
        let head_alone = median(alone_figures);
        loops.push((t, median(loop_figures)));
        for (i, &shape) in shapes.iter().enumerate() {
            let [a, m] = std::mem::take(&mut figures[i]);
            rows.push(Row {
                shape,
                threads: t,
                accountant: median(a),
                mutex: median(m),
                run_ratios: std::mem::take(&mut run_ratios[i]),
                head_alone: if shape == Shape::SharedHead {
                    head_alone
                } else {
                    f64::NAN
                },
            });
        }
        // One line per shape as soon as this thread count is done.
        let loop_1 = loops[0].1;
        let loop_t = loops.last().unwrap().1;
        for row in rows.iter().filter(|r| r.threads == t) {
            let one = rows
                .iter()
                .find(|r| r.shape == row.shape && r.threads == 1)
                .unwrap();
            let alone = if row.head_alone.is_finite() {
                format!(
                    " head_alone_ops_per_s={:.0} head_alone_vs_1_thread={} accountant_vs_head_alone={}",
                    row.head_alone,
                    ratio(row.head_alone / one.head_alone),
                    ratio(row.accountant / row.head_alone),
                )
            } else {
                String::new()
            };
            println!(
                "threads={t} shape={} accountant_ops_per_s={:.0} mutex_ops_per_s={:.0} ratio={} \
                 accountant_vs_1_thread={} mutex_vs_1_thread={} parallel_loop_vs_1_thread={}{alone}",
                row.shape.name(),
                row.accountant,
                row.mutex,
                ratio(row.accountant / row.mutex),
                ratio(row.accountant / one.accountant),
                ratio(row.mutex / one.mutex),
                ratio(loop_t / loop_1),
            );
        }
    }

    // The summary table, one row per shape and thread count.
    println!();
    println!(
        "| shape | threads | accountant ops/s | mutex ops/s | accountant / mutex (per-run range) | \
         accountant / own 1-thread | mutex / own 1-thread | parallel loop / 1-thread | \
         head alone ops/s | head alone / 1-thread |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let loop_1 = loops[0].1;
    for &shape in &shapes {
        let one = rows
            .iter()
            .find(|r| r.shape == shape && r.threads == 1)
            .unwrap();
        for row in rows.iter().filter(|r| r.shape == shape) {
            let lo = row.run_ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = row
                .run_ratios
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let range = if lo.is_finite() && hi.is_finite() {
                format!(" ({lo:.2}–{hi:.2})")
            } else {
                String::new()
            };
            let loop_t = loops.iter().find(|l| l.0 == row.threads).unwrap().1;
            println!(
                "| {} | {} | {} | {} | {}{range} | {} | {} | {} | {} | {} |",
                shape.name(),
                row.threads,
                ops(row.accountant),
                ops(row.mutex),
                ratio(row.accountant / row.mutex),
                ratio(row.accountant / one.accountant),
                ratio(row.mutex / one.mutex),
                ratio(loop_t / loop_1),
                ops(row.head_alone),
                ratio(row.head_alone / one.head_alone),
            );
        }
    }
}

/// What every timed figure of one invocation shares.
struct Setup {
    duration: Duration,
    work_bytes: usize,
    /// `--same-data`: also pair each N-thread figure with 1 thread that
    /// owns all N threads' pages.
    same_data: bool,
    /// `--unshared`: also pair N accountants sharing nothing, one per
    /// thread, against 1.
    unshared: bool,
    /// `--probe`: before each run of pairs, a cache line's round trip
    /// between two threads (`workload::line_round_trip_ns`, 100 ms), so
    /// each run's ratios can be told near from far placement.
    probe: bool,
    /// How the heads stabilize (`--background-stabilizer`, which the
    /// shared head and the head alone follow too), number their segments
    /// (`--numbering`) and how far one may run ahead (`--max-lead`).
    heads: HeadOptions,
}

/// `--workers`: each worker thread's operations and CPU time in one
/// measurement (how evenly the threads progressed, and which of them paid
/// for the shared work: with a head per thread, the combiner's passes run
/// on the thread whose `stabilize` raises the bound, the one behind).
fn print_workers(shape: Shape, design: Design, t: usize, figure: &Figure) {
    let name = match design {
        Design::Accountant => "accountant",
        Design::Mutex => "mutex",
    };
    for (w, &(ops, cpu)) in figure.workers.iter().enumerate() {
        let cpu = cpu.map_or("-".to_string(), |ns| {
            format!(
                "cpu_ms={} cpu_ns_per_op={:.0}",
                ns / 1_000_000,
                ns as f64 / ops.max(1) as f64
            )
        });
        println!(
            "worker shape={} design={name} threads={t} worker={w} ops={ops} {cpu}",
            shape.name()
        );
    }
    if let Some((active, passes)) = figure.active_and_passes {
        println!(
            "at the end: shape={} design={name} threads={t} active_segments={active} passes={passes}",
            shape.name()
        );
    }
}

/// `x` and `y` timed back to back, `x` first on even runs: the ratios
/// x / y of operations per second and of operations per CPU second.
fn back_to_back(run: usize, x: impl FnOnce() -> Figure, y: impl FnOnce() -> Figure) -> (f64, f64) {
    let (x, y) = if run % 2 == 0 {
        let x = x();
        (x, y())
    } else {
        let y = y();
        (x(), y)
    };
    (x.per_s / y.per_s, x.per_cpu_s / y.per_cpu_s)
}

/// Two rows of `--paired` output for one figure: its pairs' ratios of
/// operations per second, then of operations per CPU second (for N-thread
/// / 1-thread, below 1 by what running N threads adds to each operation's
/// CPU time: sharing, waiting that spins, the machine's own limits; the
/// host taking a core away does not show in it).
fn print_pairs(shape: &str, t: usize, what: &str, pairs: &[(f64, f64)]) {
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wall: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let cpu: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    println!(
        "| {shape} | {t} | {what} | {} | {} |",
        show(&wall),
        ratio(median(wall.clone()))
    );
    println!(
        "| {shape} | {t} | {what}, per CPU second | {} | {} |",
        show(&cpu),
        ratio(median(cpu.clone()))
    );
}

/// `--paired`: for each thread count above 1, `runs` pairs per shape and
/// design (and for the parallel loop and the head alone), each the
/// 1-thread and the N-thread figure back to back, alternating which goes
/// first; prints each pair's N-thread / 1-thread ratio and their median.
fn paired_scaling(
    threads: &[usize],
    shapes: &[Shape],
    designs: &[Design],
    runs: usize,
    setup: &Setup,
) {
    let Setup {
        duration,
        work_bytes,
        same_data,
        unshared,
        probe,
        heads,
        ..
    } = *setup;
    let background = heads.background_stabilizer;
    // One back-to-back pair: N-thread / 1-thread of `time`, the 1-thread
    // figure first on even runs.
    let pair = |run: usize, t: usize, time: &dyn Fn(usize) -> Figure| {
        let (wall, cpu) = back_to_back(run, || time(1), || time(t));
        (1.0 / wall, 1.0 / cpu)
    };
    println!("| shape | threads | what | each run's ratio (paired) | median |");
    println!("|---|---|---|---|---|");
    if designs.len() == 2 {
        // 1 thread: accountant / mutex, back to back.
        for &shape in shapes {
            let time = |d| measure(shape, d, 1, PAGES_PER_THREAD, setup);
            let ratios: Vec<(f64, f64)> = (0..runs)
                .map(|run| back_to_back(run, || time(Design::Accountant), || time(Design::Mutex)))
                .collect();
            print_pairs(shape.name(), 1, "accountant / mutex", &ratios);
        }
    }
    for &t in threads.iter().filter(|&&t| t > 1) {
        let mut loop_ratios = Vec::new();
        let mut probes = Vec::new();
        for &shape in shapes {
            let mut ratios: Vec<Vec<(f64, f64)>> = designs.iter().map(|_| Vec::new()).collect();
            let mut same: Vec<Vec<(f64, f64)>> = designs.iter().map(|_| Vec::new()).collect();
            let mut alone = Vec::new();
            let mut apart = Vec::new();
            for run in 0..runs {
                if probe {
                    probes.push(workload::line_round_trip_ns(Duration::from_millis(100)));
                }
                for (i, &design) in designs.iter().enumerate() {
                    let time = |n: usize, pages: u64| measure(shape, design, n, pages, setup);
                    ratios[i].push(pair(run, t, &|n| time(n, PAGES_PER_THREAD)));
                    if same_data {
                        // N threads of P pages each against 1 thread of
                        // N·P pages: the same live data, one core or N.
                        let (wall, cpu) = back_to_back(
                            run,
                            || time(1, PAGES_PER_THREAD * t as u64),
                            || time(t, PAGES_PER_THREAD),
                        );
                        same[i].push((1.0 / wall, 1.0 / cpu));
                    }
                }
                if unshared && shape == Shape::HeadPerThread {
                    apart.push(pair(run, t, &|n| {
                        workload::run_unshared(
                            || Arc::new(workload::accountant()),
                            n,
                            duration,
                            work_bytes,
                            PAGES_PER_THREAD,
                        )
                    }));
                }
                if shape == Shape::SharedHead {
                    alone.push(pair(run, t, &|n| {
                        head_alone(n, duration, work_bytes, background)
                    }));
                }
                if shape == shapes[0] {
                    loop_ratios.push(pair(run, t, &|n| {
                        run_parallel_loop(n, duration, work_bytes)
                    }));
                }
            }
            for (i, &design) in designs.iter().enumerate() {
                let name = match design {
                    Design::Accountant => "accountant",
                    Design::Mutex => "mutex",
                };
                let what = format!("{name}: N-thread / 1-thread");
                print_pairs(shape.name(), t, &what, &ratios[i]);
                if same_data {
                    let what = format!("{name}: N-thread / 1-thread with N threads' pages");
                    print_pairs(shape.name(), t, &what, &same[i]);
                }
            }
            if !apart.is_empty() {
                let what = "accountant, one per thread (nothing shared): N-thread / 1-thread";
                print_pairs(shape.name(), t, what, &apart);
            }
            if !alone.is_empty() {
                print_pairs(shape.name(), t, "head alone: N-thread / 1-thread", &alone);
            }
        }
        print_pairs("-", t, "parallel loop: N-thread / 1-thread", &loop_ratios);
        if probe {
            let shown: Vec<String> = probes.iter().map(|ns| format!("{ns:.0}")).collect();
            println!(
                "| - | {t} | probe before each run, ns per line round trip (shapes in order) | {} | {:.0} |",
                shown.join(", "),
                median(probes)
            );
        }
    }
}
