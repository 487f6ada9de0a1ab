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
//! This library itself is empty.
