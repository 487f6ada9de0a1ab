//! Throughput of the write-path mix (see `examples/workload/mod.rs`) on the
//! lock-free accountant and on the single-mutex baseline, alternating the
//! two designs `--runs` times per thread count and printing medians.
//!
//! ```text
//! cargo run --release --example throughput -- --threads 1,2,8 --seconds 2 [--runs 5] [--work-bytes 256] [--background-stabilizer]
//!                                              [--only accountant|mutex]   (for profiling one design)
//! ```

mod workload;

use std::sync::Arc;
use std::time::Duration;

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

fn usage(msg: &str) -> ! {
    eprintln!("throughput: {msg}");
    eprintln!("usage: throughput [--threads 1,2,8] [--seconds S] [--runs R] [--work-bytes B] [--background-stabilizer]");
    std::process::exit(2);
}

fn main() {
    let mut threads = vec![1usize, 2, 8];
    let mut seconds = 2.0f64;
    let mut runs = 5usize;
    let mut work_bytes = 256usize;
    let mut background = false;
    let mut only: Option<String> = None;
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
            "--seconds" => seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage("bad --runs")),
            "--work-bytes" => {
                work_bytes = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --work-bytes"))
            }
            "--background-stabilizer" => background = true,
            // For profiling one design alone.
            "--only" => only = Some(value()),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if runs == 0 || seconds <= 0.0 {
        usage("--runs and --seconds must be positive");
    }
    let duration = Duration::from_secs_f64(seconds);
    for &t in &threads {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..runs {
            if only.as_deref() != Some("mutex") {
                ours.push(workload::run(
                    Arc::new(workload::accountant()),
                    t,
                    duration,
                    work_bytes,
                    background,
                ));
            }
            if only.as_deref() != Some("accountant") {
                theirs.push(workload::run(
                    Arc::new(workload::mutex_accountant()),
                    t,
                    duration,
                    work_bytes,
                    background,
                ));
            }
        }
        let (a, m) = (median(ours), median(theirs));
        println!(
            "threads={t} accountant_ops_per_s={a:.0} mutex_ops_per_s={m:.0} ratio={:.2}",
            a / m
        );
    }
}
