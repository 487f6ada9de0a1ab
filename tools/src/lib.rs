//! The heavy measurement tools of segment-accountant, kept out of the
//! library's package so their dependencies (criterion, plotters) never
//! compile for a user of the library or for its demo:
//!
//! - `examples/wasim`: the write-amplification simulator that drives the
//!   real accountant (`cargo run --release -p segment-accountant-tools
//!   --example wasim -- --sweep docs/cleaning` regenerates every figure of
//!   `docs/cleaning.md`);
//! - `benches/accountant.rs`: the criterion benchmarks against the
//!   single-mutex baseline (`cargo bench -p segment-accountant-tools`).
//!
//! This library holds only what the paired timing tools
//! (`examples/floor.rs`, `examples/cycle.rs`, `examples/table_size.rs`) and
//! the benchmarks share.

pub mod table;

/// Keeps glibc's heap from handing freed memory back to the kernel (and
/// from mapping large allocations on their own), for tools that time each
/// chunk on a fresh accountant and drop it after.
///
/// Without it, what a chunk's accountant freed is trimmed off the heap and
/// the next chunk faults fresh pages in while it is timed: a kernel cost
/// the operation never pays in a store, whose one accountant reuses its
/// memory (a seal keeps the blocks its records were in). Whether glibc
/// trims depended on the largest allocation seen so far (its mmap
/// threshold adapts to it, and the trim threshold with it), so the figure
/// moved with the shape of the accountant's allocations, not with the cost
/// of its code: a design that grew one vector of records went unpenalized,
/// one that keeps records in blocks per page-map shard paid about 15 ns per
/// record (docs/performance-log.md, "Deferred records in the page's shard").
/// Both designs run under the same setting.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: `mallopt` only sets allocator parameters; called before the
    // tool starts its threads.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The number after the command-line flag `name`, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
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
