//! End-to-end benchmark: the same concurrent store (`examples/store/`) on
//! this crate's [`Accountant`] and on the single-mutex baseline
//! (`segment_accountant::baseline::MutexAccountant`), behind the one
//! `Backend` trait the store is generic over.
//!
//! Each run: a fresh log file, a store with a background flusher (group
//! commit, `stabilize` with the vouched lsn) and a background cleaner
//! (`clean_placed`, relocation), and T writer threads putting values of
//! `--value-size` bytes under random keys for `--seconds`. Runs alternate
//! the two designs (accountant first in even runs, baseline first in odd
//! ones); each figure is the median of `--runs` runs.
//!
//! Shapes: `shared` (every writer on one write head) and `per-thread`
//! (one user head per writer, each writer on its own keys, plus one
//! relocation head).
//!
//! ```text
//! cargo run --release --example storebench -- --threads 1,2,4,8 --seconds S [--runs R]
//!     [--shape shared|per-thread|both] [--keys K] [--value-size B] [--segment-size B]
//!     [--dir DIR | --mem]
//! ```
//!
//! Prints, per shape and thread count,
//! `shape=.. threads=N store_ops_per_s=.. baseline_ops_per_s=.. ratio=..`.

mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use segment_accountant::{Accountant, Config, FileStorage, LogFile, MemStorage};
use store::{Backend, Background, Baseline, Options, Store};

struct Args {
    threads: Vec<usize>,
    seconds: f64,
    runs: usize,
    shapes: Vec<Shape>,
    keys: u64,
    value_size: usize,
    segment_size: u64,
    dir: Option<PathBuf>,
    mem: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Shared,
    PerThread,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Shared => "shared",
            Shape::PerThread => "per-thread",
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("storebench: {msg}");
    eprintln!("usage: storebench [--threads 1,2,4,8] [--seconds S] [--runs R] [--shape shared|per-thread|both] [--keys K] [--value-size B] [--segment-size B] [--dir DIR | --mem]");
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        threads: vec![1, 2, 4, 8],
        seconds: 2.0,
        runs: 5,
        shapes: vec![Shape::Shared, Shape::PerThread],
        keys: 100_000,
        value_size: 100,
        segment_size: 64 * 1024,
        dir: None,
        mem: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--threads" => {
                a.threads = value()
                    .split(',')
                    .map(|t| t.parse().unwrap_or_else(|_| usage("bad --threads")))
                    .collect();
                if a.threads.iter().any(|&t| t == 0 || t > 64) {
                    usage("--threads from 1 to 64");
                }
            }
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--runs" => a.runs = value().parse().unwrap_or_else(|_| usage("bad --runs")),
            "--shape" => {
                a.shapes = match value().as_str() {
                    "shared" => vec![Shape::Shared],
                    "per-thread" => vec![Shape::PerThread],
                    "both" => vec![Shape::Shared, Shape::PerThread],
                    _ => usage("--shape shared, per-thread or both"),
                }
            }
            "--keys" => a.keys = value().parse().unwrap_or_else(|_| usage("bad --keys")),
            "--value-size" => {
                a.value_size = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --value-size"))
            }
            "--segment-size" => {
                a.segment_size = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --segment-size"))
            }
            "--dir" => a.dir = Some(PathBuf::from(value())),
            "--mem" => a.mem = true,
            other => usage(&format!("unknown option {other}")),
        }
    }
    if a.runs == 0 || a.seconds.is_nan() || a.seconds <= 0.0 || a.keys == 0 || a.value_size < 16 {
        usage("--runs, --seconds, --keys positive; --value-size at least 16");
    }
    a
}

/// One run's result.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    ops_per_s: f64,
    rolled: u64,
    write_amp: f64,
}

fn run_one<A: Backend>(
    make: impl FnOnce(&Config, Arc<dyn LogFile>) -> A,
    args: &Args,
    shape: Shape,
    threads: usize,
) -> store::Result<Run> {
    let streams = match shape {
        Shape::Shared => (1, 0),
        Shape::PerThread => (threads as u8, 1),
    };
    let config = Config::builder()
        .segment_size(args.segment_size)
        .streams(streams.0, streams.1)
        .build()?;
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let storage: Arc<dyn LogFile> = if args.mem {
        Arc::new(MemStorage::new())
    } else {
        Arc::new(FileStorage::open(dir.path().join("bench.log"))?)
    };
    let options = Options {
        background_flusher: true,
        ..Options::default()
    };
    let store = Arc::new(Store::create(
        make(&config, storage.clone()),
        &config,
        storage,
        options,
    )?);
    let background = Background::start(&store, Duration::ZERO, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(threads + 1));
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, start) = (store.clone(), stop.clone(), start.clone());
            let (keys, value_size) = (args.keys, args.value_size);
            std::thread::spawn(move || -> store::Result<u64> {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut value = store::payload(t as u64, 1, value_size);
                let (stream, base, range) = match shape {
                    Shape::Shared => (None, 0, keys),
                    Shape::PerThread => {
                        let per = (keys / threads as u64).max(1);
                        (Some(t as u8), t as u64 * per, per)
                    }
                };
                start.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = base + x % range;
                    value[..8].copy_from_slice(&n.to_le_bytes());
                    store.put_with(key, &value, stream, || {})?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for w in writers {
        ops += w.join().map_err(|_| "a writer panicked")??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    background.stop()?;
    Ok(Run {
        ops_per_s: ops as f64 / elapsed,
        rolled: store.segments_rolled(),
        write_amp: store.bytes_written() as f64 / store.user_bytes().max(1) as f64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args = parse();
    println!(
        "storebench: {} runs of {} s per design, alternating; {} keys, {}-byte values, {} KiB segments, storage {}",
        args.runs,
        args.seconds,
        args.keys,
        args.value_size,
        args.segment_size / 1024,
        if args.mem {
            "in memory".to_string()
        } else {
            format!(
                "a file in {}",
                args.dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir)
                    .display()
            )
        }
    );
    for &shape in &args.shapes {
        for &threads in &args.threads {
            let mut ours = Vec::new();
            let mut base = Vec::new();
            for run in 0..args.runs {
                let mut one = |accountant: bool| {
                    let r = if accountant {
                        run_one(
                            |c, storage| Accountant::new(c.clone(), Arc::new(storage)),
                            &args,
                            shape,
                            threads,
                        )
                    } else {
                        run_one(|c, _| Baseline::new(c.clone()), &args, shape, threads)
                    };
                    let r = r.unwrap_or_else(|e| {
                        eprintln!("storebench: {e}");
                        std::process::exit(1);
                    });
                    eprintln!(
                        "  {} threads={threads} run={run} {}: {:.0} ops/s, write amplification {:.2}, {} segments rolled",
                        shape.name(),
                        if accountant { "accountant" } else { "baseline" },
                        r.ops_per_s,
                        r.write_amp,
                        r.rolled
                    );
                    if accountant {
                        ours.push(r.ops_per_s);
                    } else {
                        base.push(r.ops_per_s);
                    }
                };
                let first = run % 2 == 0;
                one(first);
                one(!first);
            }
            let (o, b) = (median(ours), median(base));
            println!(
                "shape={} threads={threads} store_ops_per_s={o:.0} baseline_ops_per_s={b:.0} ratio={:.2}",
                shape.name(),
                o / b
            );
        }
    }
}
