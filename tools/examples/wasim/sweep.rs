//! `--sweep DIR`: the fixed matrix of runs behind the cleaning
//! documentation, run in parallel, and the files made from it.
//!
//! The matrix:
//!
//! - (a) the table: every policy and the several-head schemes
//!   (`cost-benefit-sep`, `survival` = `best`, `lifetime`) × uniform, hot/cold 80/20 and 90/10 and
//!   zipf 0.99, at utilization 0.8;
//! - (b) uniform at utilization 0.9, greedy and FIFO;
//! - (c) spec without a space target, the four workloads;
//!
//! all at 2048 segments × 256 pages, writes 4, seed 1; and
//!
//! - (d) the plot: write amplification against utilization, every policy
//!   and scheme × uniform and hot/cold 80/20, at [`PLOT_UTILIZATIONS`], on a smaller
//!   file ([`PLOT_SEGMENTS`] segments) so the sweep stays within minutes.
//!
//! Runs go to `available_parallelism()` workers from one shared queue,
//! longest first; each run's line is printed as it finishes. Then `DIR`
//! (created if missing) gets `results.csv` (one row per run, in matrix
//! order), `wa-vs-utilization.svg` (the (d) runs) and `table.md` (the
//! (a), (b) and (c) runs against the published figures, and the (d) runs).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::plot::{self, Series};
use crate::sim::{simulate, Figures, RunOptions, Workload};

/// The rows of the table and the lines of the plot: the single-head
/// policies, then the several-head schemes.
const POLICIES: [&str; 7] = [
    "spec",
    "greedy",
    "fifo",
    "cost-benefit",
    "cost-benefit-sep",
    "survival",
    "lifetime",
];
const TABLE_WORKLOADS: [&str; 4] = ["uniform", "hotcold:80/20", "hotcold:90/10", "zipf:0.99"];
const PLOT_WORKLOADS: [&str; 2] = ["uniform", "hotcold:80/20"];
/// The file size in segments of (a), (b) and (c) (of 256 pages each).
pub const SEGMENTS: u64 = 2048;
/// The utilizations of the plot, (d).
pub const PLOT_UTILIZATIONS: [f64; 7] = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9];
/// The plot's file size in segments, (d) (of 256 pages, like the others).
pub const PLOT_SEGMENTS: u64 = 512;

/// Which part of the matrix a run belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// (a): policy × workload at U = 0.8.
    Table,
    /// (b): uniform at U = 0.9.
    High,
    /// (c): spec without a target.
    NoTarget,
    /// (d): WA against utilization, smaller file.
    Plot,
}

struct Job {
    part: Part,
    opts: RunOptions,
}

fn options(policy: &str, workload: &str, utilization: Option<f64>, segments: u64) -> RunOptions {
    RunOptions {
        policy: policy.into(),
        utilization,
        workload: Workload::parse(workload).expect("a valid workload"),
        workload_name: workload.into(),
        segments,
        pages_per_segment: 256,
        writes: 4.0,
        seed: 1,
        heads: None,
        target: None,
    }
}

fn matrix() -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut add = |part, opts| jobs.push(Job { part, opts });
    for p in POLICIES {
        for w in TABLE_WORKLOADS {
            add(Part::Table, options(p, w, Some(0.8), SEGMENTS));
        }
    }
    for p in ["greedy", "fifo"] {
        add(Part::High, options(p, "uniform", Some(0.9), SEGMENTS));
    }
    for w in TABLE_WORKLOADS {
        add(Part::NoTarget, options("spec", w, None, SEGMENTS));
    }
    for p in POLICIES {
        for w in PLOT_WORKLOADS {
            for u in PLOT_UTILIZATIONS {
                add(Part::Plot, options(p, w, Some(u), PLOT_SEGMENTS));
            }
        }
    }
    jobs
}

/// A rough relative cost, only to start the longest runs first: page
/// writes grow with the file and with 1 / (1 − U); zipf picks cost more.
/// Without a target the write amplification is low but the file large,
/// and such runs are the slowest of all (measured: about 45 s at 2048
/// segments against 35 s at U = 0.9 and 25–30 s at U = 0.8).
fn cost(o: &RunOptions) -> f64 {
    let load = o.utilization.map_or(13.0, |u| 1.0 + 1.0 / (1.0 - u));
    let skew = if matches!(o.workload, Workload::Zipf(_)) {
        1.2
    } else {
        1.0
    };
    (o.segments * o.pages_per_segment) as f64 * o.writes * load * skew
}

/// Runs every job on `threads` workers, longest first; prints each line as
/// it finishes. The figures come back in job order.
fn run_all(jobs: &[Job], threads: usize) -> Result<Vec<Figures>, String> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| cost(&jobs[b].opts).total_cmp(&cost(&jobs[a].opts)));
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut results: Vec<Option<Result<Figures, String>>> = vec![None; jobs.len()];
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let tx = tx.clone();
            let (order, next) = (&order, &next);
            s.spawn(move || {
                while let Some(&j) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if tx.send((j, simulate(&jobs[j].opts))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (j, r)) in rx.into_iter().enumerate() {
            match &r {
                Ok(f) => {
                    println!("{}", f.line(&jobs[j].opts));
                    eprintln!(
                        "wasim: {}/{} done ({:.1} s run, {:.0} s elapsed)",
                        done + 1,
                        jobs.len(),
                        f.seconds,
                        started.elapsed().as_secs_f64()
                    );
                }
                Err(e) => eprintln!("wasim: run {j} failed: {e}"),
            }
            results[j] = Some(r);
        }
    });
    results
        .into_iter()
        .enumerate()
        .map(|(j, r)| match r {
            Some(r) => r.map_err(|e| format!("{:?}: {e}", jobs[j].opts)),
            None => Err(format!("{:?}: no result (worker died)", jobs[j].opts)),
        })
        .collect()
}

/// The published write amplification at U = 0.8 for the table, (a).
fn published_table(policy: &str, workload: &str) -> &'static str {
    let row = match policy {
        "fifo" => ["2.69", "~3.0", "~3.5", "~4.1"],
        "greedy" => ["2.67", "~3.0", "~3.5", "~4.0"],
        "cost-benefit" => ["2.68", "~3.0", "~3.5", "~4.0"],
        "cost-benefit-sep" => ["2.68", "2.48", "1.92", "2.22"],
        _ => return "—",
    };
    TABLE_WORKLOADS
        .iter()
        .position(|&w| w == workload)
        .map_or("—", |i| row[i])
}

/// The published write amplification for uniform writes at U = 0.9, (b).
fn published_high(policy: &str) -> &'static str {
    match policy {
        "greedy" => "~5.1",
        "fifo" => "5.18",
        _ => "—",
    }
}

/// `seconds` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(seconds: u64) -> String {
    let (days, rem) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The CPU model and the number of logical CPUs, from /proc/cpuinfo.
fn machine() -> (String, usize) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    (model, cpus)
}

fn csv(jobs: &[Job], figures: &[Figures]) -> String {
    let mut out = String::from(
        "policy,workload,utilization,segments,pages_per_segment,writes,seed,wa,space_amp,cleaned_segments,ops_per_s\n",
    );
    for (job, f) in jobs.iter().zip(figures) {
        let o = &job.opts;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{:.4},{:.4},{},{:.0}",
            o.policy,
            o.workload_name,
            o.utilization_name(),
            o.segments,
            o.pages_per_segment,
            o.writes,
            o.seed,
            f.wa,
            f.space_amp,
            f.cleaned_segments,
            f.ops_per_s
        );
    }
    out
}

fn workload_title(w: &str) -> String {
    if let Some(rf) = w.strip_prefix("hotcold:") {
        format!("hot/cold {rf}")
    } else if let Some(t) = w.strip_prefix("zipf:") {
        format!("zipf {t}")
    } else {
        w.to_string()
    }
}

struct Context<'a> {
    dir: &'a str,
    wall: Duration,
    threads: usize,
}

fn table_md(jobs: &[Job], figures: &[Figures], cx: &Context) -> String {
    let find = |part: Part, policy: &str, workload: &str, u: Option<f64>| {
        jobs.iter()
            .zip(figures)
            .find(|(j, _)| {
                j.part == part
                    && j.opts.policy == policy
                    && j.opts.workload_name == workload
                    && j.opts.utilization == u
            })
            .map(|(_, f)| *f)
            .expect("the run is in the matrix")
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (model, cpus) = machine();
    let wall = cx.wall.as_secs();
    let mut md = String::new();
    let _ = writeln!(md, "# Cleaning: write amplification by policy\n");
    let _ = writeln!(
        md,
        "Generated by\n\n```sh\ncargo run --release -p segment-accountant-tools --example wasim -- --sweep {}\n```\n",
        cx.dir
    );
    let _ = writeln!(md, "- date: {}", utc(now));
    let _ = writeln!(
        md,
        "- machine: {model}, {cpus} logical CPUs; {} worker threads",
        cx.threads
    );
    let _ = writeln!(
        md,
        "- sweep wall time: {}m{:02}s ({} runs)\n",
        wall / 60,
        wall % 60,
        jobs.len()
    );
    let _ = writeln!(
        md,
        "Every run loads each page once, warms up with 4× the live pages in \
         user writes and measures as many again (seed 1). Write amplification \
         (WA) is (user writes + relocations) / user writes; space amplification \
         the file's size over the live data, averaged over the measured phase. \
         Published figures are in parentheses (— where there is none). All runs \
         are in `results.csv`.\n"
    );

    let _ = writeln!(
        md,
        "## WA at utilization 0.8 ({SEGMENTS} segments × 256 pages)\n"
    );
    let mut header = String::from("| policy | heads |");
    let mut rule = String::from("|---|---|");
    for w in TABLE_WORKLOADS {
        let _ = write!(header, " {} |", workload_title(w));
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header} space amplification |\n{rule}---|");
    for p in POLICIES {
        let heads = find(Part::Table, p, TABLE_WORKLOADS[0], Some(0.8)).heads;
        let mut row = format!("| {p} | {heads} |");
        let mut space = (f64::INFINITY, 0.0f64);
        for w in TABLE_WORKLOADS {
            let f = find(Part::Table, p, w, Some(0.8));
            space = (space.0.min(f.space_amp), space.1.max(f.space_amp));
            let _ = write!(row, " {:.2} ({}) |", f.wa, published_table(p, w));
        }
        let _ = writeln!(md, "{row} {:.3}–{:.3} |", space.0, space.1);
    }
    let _ = writeln!(
        md,
        "| two-class oracle (published only) | | (2.69) | (2.00) | (1.48) | — | |\n\n\
         The space target is 1/0.8 = 1.25; the file also holds the segments in \
         flight (Draining segments waiting for buffered relocations, free \
         segments not yet reused).\n"
    );

    let _ = writeln!(
        md,
        "## Uniform writes at utilization 0.9 ({SEGMENTS} segments × 256 pages)\n"
    );
    let _ = writeln!(md, "| policy | WA | space amplification |\n|---|---|---|");
    for p in ["greedy", "fifo"] {
        let f = find(Part::High, p, "uniform", Some(0.9));
        let _ = writeln!(
            md,
            "| {p} | {:.2} ({}) | {:.3} |",
            f.wa,
            published_high(p),
            f.space_amp
        );
    }

    let _ = writeln!(
        md,
        "\n## The specification's rule without a space target ({SEGMENTS} segments × 256 pages, live data 80%)\n"
    );
    let _ = writeln!(md, "| workload | WA | space amplification |\n|---|---|---|");
    for w in TABLE_WORKLOADS {
        let f = find(Part::NoTarget, "spec", w, None);
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.3} |",
            workload_title(w),
            f.wa,
            f.space_amp
        );
    }

    let _ = writeln!(
        md,
        "\n## WA against utilization ({PLOT_SEGMENTS} segments × 256 pages)\n\n\
         ![WA against utilization](wa-vs-utilization.svg)\n"
    );
    let mut header = String::from("| policy | workload |");
    let mut rule = String::from("|---|---|");
    for u in PLOT_UTILIZATIONS {
        let _ = write!(header, " {u} |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for p in POLICIES {
        for w in PLOT_WORKLOADS {
            let mut row = format!("| {p} | {} |", workload_title(w));
            for u in PLOT_UTILIZATIONS {
                let _ = write!(row, " {:.2} |", find(Part::Plot, p, w, Some(u)).wa);
            }
            let _ = writeln!(md, "{row}");
        }
    }
    md
}

fn series(jobs: &[Job], figures: &[Figures]) -> Vec<Series> {
    let mut out = Vec::new();
    for p in POLICIES {
        for w in PLOT_WORKLOADS {
            let mut points: Vec<(f64, f64)> = jobs
                .iter()
                .zip(figures)
                .filter(|(j, _)| {
                    j.part == Part::Plot && j.opts.policy == p && j.opts.workload_name == w
                })
                .map(|(j, f)| (j.opts.utilization.expect("plot runs have a target"), f.wa))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.push(Series {
                policy: p.to_string(),
                workload: workload_title(w),
                dashed: w != "uniform",
                points,
            });
        }
    }
    out
}

/// Runs the matrix and writes `dir`'s files.
pub fn run(dir: &str) -> Result<(), String> {
    let path = Path::new(dir);
    std::fs::create_dir_all(path).map_err(|e| format!("{dir}: {e}"))?;
    let jobs = matrix();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    eprintln!("wasim: sweep of {} runs on {threads} threads", jobs.len());
    let started = Instant::now();
    let figures = run_all(&jobs, threads)?;
    let wall = started.elapsed();
    eprintln!("wasim: sweep took {:.1} s", wall.as_secs_f64());
    let write = |name: &str, text: String| {
        let file = path.join(name);
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))
    };
    write("results.csv", csv(&jobs, &figures))?;
    plot::draw(
        &path.join("wa-vs-utilization.svg"),
        &series(&jobs, &figures),
        &format!("Write amplification against utilization ({PLOT_SEGMENTS} segments × 256 pages)"),
    )?;
    let cx = Context { dir, wall, threads };
    write("table.md", table_md(&jobs, &figures, &cx))?;
    eprintln!("wasim: wrote results.csv, wa-vs-utilization.svg, table.md in {dir}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }

    #[test]
    fn matrix_is_complete() {
        let jobs = matrix();
        assert_eq!(jobs.len(), 28 + 2 + 4 + 7 * 2 * PLOT_UTILIZATIONS.len());
        assert_eq!(published_table("fifo", "zipf:0.99"), "~4.1");
        assert_eq!(published_table("spec", "uniform"), "—");
    }
}
