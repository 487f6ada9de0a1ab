//! `next`, `stabilize` and `flush` in a table of 1,000,000 segments against
//! one of 1,000, measured in pairs.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example table_size -- --pairs 200 [--chunk 100] [--small 1000] [--large 1000000]
//! ```
//!
//! The workload is the criterion group `table_size`'s
//! (`segment_accountant_tools::table::Table`: every `next` on the reuse
//! path, the two free segments at the top of a table otherwise in use).
//! Criterion times each size for seconds, one after the other, and on this
//! virtual machine a core's speed changes by half within seconds, so the
//! ratio of two sizes' figures swung from 0.73 to 1.67 between runs of the
//! same binary (docs/performance-log.md). Here both tables live in one process
//! and alternate in chunks of `--chunk` cycles, which goes first changing
//! every pair; each chunk of the large table is divided by the small
//! table's chunk next to it. It prints, per operation, the median and
//! quartiles of those ratios and the median times.

use std::time::Duration;

use segment_accountant_tools::table::Table;
use segment_accountant_tools::{arg, quantile};

const OPS: [&str; 3] = ["next", "stabilize", "flush"];

/// Nanoseconds per call of each operation over `n` cycles of `table`.
fn chunk(table: &mut Table, n: u64) -> [f64; 3] {
    let mut total = [Duration::ZERO; 3];
    for _ in 0..n {
        for (t, d) in total.iter_mut().zip(table.cycle(true)) {
            *t += d;
        }
    }
    total.map(|t| t.as_nanos() as f64 / n as f64)
}

fn main() {
    let pairs = arg("--pairs", 200).max(1) as usize;
    let n = arg("--chunk", 100).max(1);
    let (small_size, large_size) = (arg("--small", 1_000), arg("--large", 1_000_000));
    let mut small = Table::build(small_size);
    let mut large = Table::build(large_size);
    chunk(&mut small, n);
    chunk(&mut large, n);
    let mut ratios: [Vec<f64>; 3] = Default::default();
    let mut times: [[Vec<f64>; 3]; 2] = Default::default();
    for pair in 0..pairs {
        let (s, l) = if pair % 2 == 0 {
            let s = chunk(&mut small, n);
            (s, chunk(&mut large, n))
        } else {
            let l = chunk(&mut large, n);
            (chunk(&mut small, n), l)
        };
        for op in 0..3 {
            ratios[op].push(l[op] / s[op]);
            times[0][op].push(s[op]);
            times[1][op].push(l[op]);
        }
    }
    for (op, name) in OPS.iter().enumerate() {
        println!(
            "{name}: pairs={pairs} chunk={n} {small_size}_ns={:.1} {large_size}_ns={:.1} ratio={:.3} (p25 {:.3}, p75 {:.3})",
            quantile(&mut times[0][op], 0.5),
            quantile(&mut times[1][op], 0.5),
            quantile(&mut ratios[op], 0.5),
            quantile(&mut ratios[op], 0.25),
            quantile(&mut ratios[op], 0.75),
        );
    }
}
