//! Write-amplification simulator: drives the real accountant with a
//! store-like page writer (one write head per stream of the scheme; every
//! page `clean_placed` suggests after a user write is relocated to the head
//! it advises) and reports write amplification and space amplification.
//!
//! ```text
//! cargo run --release -p segment-accountant-tools --example wasim -- [--policy spec|greedy|fifo|cost-benefit|cost-benefit-sep|survival|lifetime|best]
//!     [--heads H] [--workload uniform|hotcold:R/F|zipf:THETA] [--utilization U|none]
//!     [--target R] [--segments N] [--pages-per-segment P] [--writes X] [--seed S]
//!     [--max-wa W]
//! cargo run --release -p segment-accountant-tools --example wasim -- --sweep DIR
//! ```
//!
//! A single run prints one line:
//! `policy=.. workload=.. utilization=.. wa=.. space_amp=.. cleaned_segments=.. ops_per_s=..`
//! (with several heads, also `heads=..`).
//! `--max-wa W` then exits with status 1 if the write amplification is
//! above `W`: CI runs one point with it, so a cleaning rule that feeds on
//! itself fails the build.
//!
//! Schemes with several heads, all with cost-benefit victims:
//! `cost-benefit-sep` (relocated pages on their own head: 2 heads),
//! `survival`, alias `best` (relocated pages on three heads by how many
//! cleanings they survived: 4 heads) and `lifetime` (two user heads placed
//! by `stream_for_write`, two relocation heads by `clean_placed`: 4 heads).
//! `--heads H` changes the count (a plain policy with H heads gets H − 1
//! relocation heads). Each head is a segment-sized buffer written out as
//! one segment when full, taking the log's next lsn then (one counter for
//! all heads), so a page's copies keep increasing lsns and no head holds
//! the stable lsn back.
//! The live data is `U` (0.8 with `--utilization none`) of `segments ×
//! pages-per-segment` pages; `--utilization U` also sets the accountant's
//! space target to `1/U` of the live data (`--target R` sets it to `R`
//! instead, to compare schemes at equal space amplification). Only `spec`
//! cleans without a
//! target; the other policies need one. Every page is written once, then
//! `--writes X` multiples of the live data are written as warm-up and as
//! many again measured: write amplification is (user writes + relocations)
//! / user writes, space amplification the file's size over the live data
//! averaged over the measured phase. Defaults: spec, uniform, none, 2048
//! segments of 256 pages, 4, seed 1.
//!
//! `--sweep DIR` runs the fixed matrix behind the cleaning documentation
//! (every policy × four workloads at U = 0.8; greedy and FIFO at 0.9; spec
//! without a target; and write amplification against utilization at a
//! smaller size) on all cores, printing each run's line as it finishes,
//! and writes `DIR/results.csv`, `DIR/table.md` and
//! `DIR/wa-vs-utilization.svg` (see `sweep.rs`).

mod plot;
mod sim;
mod sweep;

use segment_accountant::policy;

use crate::sim::{simulate, RunOptions, Workload};

const USAGE: &str = "usage: wasim [--policy spec|greedy|fifo|cost-benefit|cost-benefit-sep|survival|lifetime|best] [--heads H] [--workload uniform|hotcold:R/F|zipf:THETA] [--utilization U|none] [--target R] [--segments N] [--pages-per-segment P] [--writes X] [--seed S] [--max-wa W]
       wasim --sweep DIR";

fn usage(msg: &str) -> ! {
    eprintln!("wasim: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2);
}

enum Mode {
    /// One run, and the write amplification it must not exceed (CI's
    /// check that a cleaning change did not make one policy feed on
    /// itself).
    Single(RunOptions, Option<f64>),
    Sweep(String),
}

fn parse() -> Mode {
    let mut o = RunOptions::default();
    let mut sweep = None;
    let mut max_wa = None;
    let mut run_flags = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        run_flags |= flag != "--sweep";
        match flag.as_str() {
            "--sweep" => sweep = Some(value()),
            "--policy" => {
                o.policy = value();
                if sim::scheme(&o.policy, None).is_err() {
                    usage(&format!(
                        "unknown policy {}: one of {}, {}",
                        o.policy,
                        policy::NAMES.join(", "),
                        sim::SCHEMES.join(", ")
                    ));
                }
            }
            "--heads" => {
                let h: u8 = value().parse().unwrap_or_else(|_| usage("bad --heads"));
                if !(1..=16).contains(&h) {
                    usage("--heads from 1 to 16");
                }
                o.heads = Some(h);
            }
            "--utilization" => {
                let u = value();
                o.utilization = if u == "none" {
                    None
                } else {
                    let u: f64 = u.parse().unwrap_or_else(|_| usage("bad --utilization"));
                    if !(0.05..=0.98).contains(&u) {
                        usage("--utilization in [0.05, 0.98], or none");
                    }
                    Some(u)
                };
            }
            "--target" => {
                let t: f64 = value().parse().unwrap_or_else(|_| usage("bad --target"));
                if !(1.01..=20.0).contains(&t) {
                    usage("--target in [1.01, 20]");
                }
                o.target = Some(t);
            }
            "--workload" => {
                let w = value();
                o.workload = Workload::parse(&w).unwrap_or_else(|e| usage(&e));
                o.workload_name = w;
            }
            "--segments" => {
                o.segments = value().parse().unwrap_or_else(|_| usage("bad --segments"))
            }
            "--pages-per-segment" => {
                o.pages_per_segment = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --pages-per-segment"))
            }
            "--writes" => o.writes = value().parse().unwrap_or_else(|_| usage("bad --writes")),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage("bad --seed")),
            "--max-wa" => {
                let w: f64 = value().parse().unwrap_or_else(|_| usage("bad --max-wa"));
                if w < 1.0 {
                    usage("--max-wa at least 1");
                }
                max_wa = Some(w);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    if o.target.is_some() && o.utilization.is_none() {
        usage("--target needs --utilization (the live data)");
    }
    if let Some(dir) = sweep {
        if run_flags {
            usage("--sweep runs a fixed matrix and takes no other option");
        }
        return Mode::Sweep(dir);
    }
    if o.segments < 8
        || !o.pages_per_segment.is_power_of_two()
        || o.pages_per_segment < 4
        || o.writes <= 0.0
    {
        usage("need --segments ≥ 8, --pages-per-segment a power of two ≥ 4, --writes > 0");
    }
    Mode::Single(o, max_wa)
}

fn main() {
    match parse() {
        Mode::Single(o, max_wa) => {
            let figures = simulate(&o).unwrap_or_else(|e| usage(&e));
            println!("{}", figures.line(&o));
            if let Some(max) = max_wa.filter(|&max| figures.wa > max) {
                eprintln!(
                    "wasim: write amplification {:.3} above --max-wa {max}",
                    figures.wa
                );
                std::process::exit(1);
            }
        }
        Mode::Sweep(dir) => {
            if let Err(e) = sweep::run(&dir) {
                eprintln!("wasim: {e}");
                std::process::exit(1);
            }
        }
    }
}
