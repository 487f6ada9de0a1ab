//! Single-threaded costs against the single-mutex baseline, measured in
//! pairs: `mark_replace` with 1 and 4 old pointers, and the next / 256
//! writes / stabilize cycle.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example cycle -- --pairs 100 [--heap-as-is]
//! ```
//!
//! The loops are the criterion group `per_op`'s (`mark_replace_1_old`,
//! `mark_replace_4_old`, `next_link256_stabilize`). Criterion times each
//! design for seconds, one after the other; on this virtual machine a
//! core's speed changes by half within seconds, so the ratio of two such
//! figures swings from 0.5 to 1.8 between runs of the same binary. Here, as
//! in `floor.rs`, the two designs alternate in short chunks, and each chunk
//! of the accountant is divided by the mutex design's chunk right after it:
//! both ran at the same speed, so the ratio is the code's. It prints, per
//! operation, the median and quartiles of those ratios and the medians of
//! the times.

#[path = "../../examples/workload/mod.rs"]
mod workload;

use std::time::Instant;

use segment_accountant_tools::{arg, quantile};

use segment_accountant::{DiskPtr, Lsn};
use workload::{WritePath, SEGMENT_SIZE};

const SS: Lsn = SEGMENT_SIZE as Lsn;

/// One design's cycle state: the next segment number and the last lid.
struct Cycler {
    acc: Box<dyn WritePath>,
    segno: Lsn,
    prev: Option<u64>,
}

impl Cycler {
    fn new(acc: Box<dyn WritePath>) -> Cycler {
        Cycler {
            acc,
            segno: 0,
            prev: None,
        }
    }

    /// Nanoseconds per cycle over `n` cycles.
    #[inline(never)]
    fn run(&mut self, n: u64) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            let i = self.segno;
            let lid = self.acc.next(i * SS);
            for pid in 0..256u64 {
                let ptr = DiskPtr::Inline(lid + pid);
                match self.prev {
                    Some(old) => {
                        self.acc
                            .replace(pid, i * SS, &[DiskPtr::Inline(old + pid)], ptr, 64)
                    }
                    None => self.acc.link(pid, i * SS, ptr, 64),
                }
            }
            self.prev = Some(lid);
            self.acc.stabilize(i * SS + SS);
            self.segno += 1;
        }
        start.elapsed().as_nanos() as f64 / n as f64
    }
}

/// `mark_replace` of 4,096 pages, each with `olds` old pointers, into one
/// Active segment (the criterion loop).
struct Replacer {
    acc: Box<dyn WritePath>,
    old_ptrs: Vec<DiskPtr>,
    lid: u64,
    olds: u64,
    i: u64,
}

impl Replacer {
    fn new(acc: Box<dyn WritePath>, olds: u64) -> Replacer {
        let mut old_ptrs = Vec::new();
        for s in 0..olds {
            let lid = acc.next(s as Lsn * SS);
            for pid in 0..4096 {
                acc.link(pid, s as Lsn * SS, DiskPtr::Inline(lid), 8);
            }
            old_ptrs.push(DiskPtr::Inline(lid));
        }
        let lid = acc.next(olds as Lsn * SS);
        Replacer {
            acc,
            old_ptrs,
            lid,
            olds,
            i: 0,
        }
    }

    /// Nanoseconds per call over `n` calls.
    #[inline(never)]
    fn run(&mut self, n: u64) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            self.acc.replace(
                self.i % 4096,
                self.olds as Lsn * SS,
                &self.old_ptrs,
                DiskPtr::Inline(self.lid),
                64,
            );
            self.i += 1;
        }
        start.elapsed().as_nanos() as f64 / n as f64
    }
}

/// Alternates `ours` and `theirs` (each timing `chunk` operations) for
/// `pairs` pairs after one warm-up round, and prints the summary line.
fn pairs(
    name: &str,
    pairs: usize,
    chunk: u64,
    mut ours: impl FnMut(u64) -> f64,
    mut theirs: impl FnMut(u64) -> f64,
) {
    ours(chunk);
    theirs(chunk);
    let (mut a, mut m, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..pairs {
        let x = ours(chunk);
        let y = theirs(chunk);
        a.push(x);
        m.push(y);
        ratio.push(x / y);
    }
    println!(
        "{name}: pairs={pairs} chunk={chunk} accountant_ns={:.1} mutex_ns={:.1} ratio={:.3} (p25 {:.3}, p75 {:.3})",
        quantile(&mut a, 0.5),
        quantile(&mut m, 0.5),
        quantile(&mut ratio, 0.5),
        quantile(&mut ratio, 0.25),
        quantile(&mut ratio, 0.75),
    );
}

fn main() {
    let n = arg("--pairs", 100).max(1) as usize;
    // Each `mark_replace` chunk runs on a fresh pair of accountants (made
    // outside the timing), as each criterion sample does: the segment
    // written into is never sealed here, so its deferred records would
    // otherwise grow without bound, which no store lets happen. Even so the
    // figure includes that growth (one record per old pointer per call, in
    // blocks that a seal would empty and keep). What a dropped accountant
    // freed stays in the heap for the next (`keep_freed_memory`), so that
    // the figure is the code's and not the kernel's page faults
    // (docs/performance-log.md). The cycle below seals every segment and has no
    // such growth. `--heap-as-is` leaves glibc's defaults, to see that
    // cost.
    if !std::env::args().any(|a| a == "--heap-as-is") {
        segment_accountant_tools::keep_freed_memory();
    }
    for olds in [1u64, 4] {
        let fresh = |make: fn() -> Box<dyn WritePath>| move |k| Replacer::new(make(), olds).run(k);
        pairs(
            &format!("mark_replace_{olds}_old"),
            n,
            arg("--replace-chunk", 50_000).max(1),
            fresh(|| Box::new(workload::accountant())),
            fresh(|| Box::new(workload::mutex_accountant())),
        );
    }
    let mut acc = Cycler::new(Box::new(workload::accountant()));
    let mut mutex = Cycler::new(Box::new(workload::mutex_accountant()));
    pairs(
        "next_link256_stabilize",
        n,
        arg("--chunk", 200).max(1),
        |k| acc.run(k),
        |k| mutex.run(k),
    );
}
