//! The next / 256 writes / stabilize cycle against the single-mutex
//! baseline, measured in pairs.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example cycle -- --chunk 200 --pairs 200
//! ```
//!
//! The loop is the criterion benchmark `per_op/next_link256_stabilize`:
//! each cycle takes the next segment, replaces 256 pages out of the
//! segment before it into it, and stabilizes it. As in `floor.rs`, the two
//! designs alternate in short chunks (`--chunk` cycles each) so that each
//! ratio compares two loops that ran at the same core speed; it prints the
//! median and quartiles of the ratios and the medians of the times.

#[path = "../../examples/workload/mod.rs"]
mod workload;

use std::time::Instant;

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

/// The `q` quantile of `v` (sorted in place).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let chunk = arg("--chunk", 200).max(1);
    let pairs = arg("--pairs", 200).max(1) as usize;
    let mut acc = Cycler::new(Box::new(workload::accountant()));
    let mut mutex = Cycler::new(Box::new(workload::mutex_accountant()));
    // A warm-up round, as criterion's.
    acc.run(chunk);
    mutex.run(chunk);
    let fresh = std::env::args().any(|a| a == "--fresh");
    let (mut a, mut m, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..pairs {
        if fresh {
            acc = Cycler::new(Box::new(workload::accountant()));
            mutex = Cycler::new(Box::new(workload::mutex_accountant()));
        }
        let x = acc.run(chunk);
        let y = mutex.run(chunk);
        a.push(x);
        m.push(y);
        ratio.push(x / y);
    }
    println!(
        "pairs={pairs} chunk={chunk} accountant_ns={:.0} mutex_ns={:.0} ratio={:.3} (p25 {:.3}, p75 {:.3})",
        quantile(&mut a, 0.5),
        quantile(&mut m, 0.5),
        quantile(&mut ratio, 0.5),
        quantile(&mut ratio, 0.25),
        quantile(&mut ratio, 0.75),
    );
}
