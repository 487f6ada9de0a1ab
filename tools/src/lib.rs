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
//! (`examples/floor.rs`, `examples/cycle.rs`) share.

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
