//! Write-amplification simulator: drives the real accountant with a
//! store-like page writer (one write head; pages `clean` suggests are
//! relocated to the head) and reports write amplification and space
//! amplification.
//!
//! ```text
//! cargo run --release --example wasim -- [--policy spec] [--workload uniform|hotcold:R/F|zipf:THETA]
//!     [--utilization none] [--segments N] [--pages-per-segment P] [--writes X] [--seed S]
//! ```
//!
//! Only the specification's cleaning rule (`spec`, threshold and skew,
//! without a space target: `--utilization none`) exists so far; the live
//! data is 80% of `segments × pages-per-segment` pages. `--writes X` is in
//! multiples of the live data, measured after an equal warm-up.

use std::sync::Arc;
use std::time::Instant;

use segment_accountant::{policy, Accountant, Collector, Config, DiskPtr, Lsn, MemStorage};

#[derive(Clone, Debug)]
enum Workload {
    Uniform,
    HotCold { writes: f64, pages: f64 },
    Zipf(f64),
}

struct Options {
    policy: String,
    utilization: Option<f64>,
    workload: Workload,
    workload_name: String,
    segments: u64,
    pages_per_segment: u64,
    writes: f64,
    seed: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("wasim: {msg}");
    eprintln!("usage: wasim [--policy spec] [--workload uniform|hotcold:R/F|zipf:THETA] [--utilization none] [--segments N] [--pages-per-segment P] [--writes X] [--seed S]");
    std::process::exit(2);
}

fn parse() -> Options {
    let mut o = Options {
        policy: "spec".into(),
        utilization: None,
        workload: Workload::Uniform,
        workload_name: "uniform".into(),
        segments: 2048,
        pages_per_segment: 256,
        writes: 4.0,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--policy" => {
                o.policy = value();
                if policy::by_name(&o.policy).is_none() {
                    usage(&format!(
                        "unknown policy {}: one of {}",
                        o.policy,
                        policy::NAMES.join(", ")
                    ));
                }
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
            "--workload" => {
                let w = value();
                o.workload = if w == "uniform" {
                    Workload::Uniform
                } else if let Some(rf) = w.strip_prefix("hotcold:") {
                    let (r, f) = rf.split_once('/').unwrap_or_else(|| usage("hotcold:R/F"));
                    let r: f64 = r.parse().unwrap_or_else(|_| usage("hotcold:R/F"));
                    let f: f64 = f.parse().unwrap_or_else(|_| usage("hotcold:R/F"));
                    if !(0.0 < r && r < 100.0 && 0.0 < f && f < 100.0) {
                        usage("hotcold: R and F are percentages in (0, 100)");
                    }
                    Workload::HotCold {
                        writes: r / 100.0,
                        pages: f / 100.0,
                    }
                } else if let Some(t) = w.strip_prefix("zipf:") {
                    let t: f64 = t.parse().unwrap_or_else(|_| usage("zipf:THETA"));
                    if !(0.0..=2.0).contains(&t) {
                        usage("zipf: THETA in [0, 2]");
                    }
                    Workload::Zipf(t)
                } else {
                    usage(&format!("unknown workload {w}"))
                };
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
            other => usage(&format!("unknown option {other}")),
        }
    }
    if o.segments < 8
        || !o.pages_per_segment.is_power_of_two()
        || o.pages_per_segment < 4
        || o.writes <= 0.0
    {
        usage("need --segments ≥ 8, --pages-per-segment a power of two ≥ 4, --writes > 0");
    }
    o
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks the page of each user write.
struct Picker {
    workload: Workload,
    pages: u64,
    zipf_cdf: Vec<f64>,
}

impl Picker {
    fn new(workload: Workload, pages: u64) -> Picker {
        let zipf_cdf = match workload {
            Workload::Zipf(theta) => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (1..=pages)
                    .map(|k| {
                        acc += 1.0 / (k as f64).powf(theta);
                        acc
                    })
                    .collect();
                let total = acc;
                cdf.iter_mut().for_each(|c| *c /= total);
                cdf
            }
            _ => Vec::new(),
        };
        Picker {
            workload,
            pages,
            zipf_cdf,
        }
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        match self.workload {
            Workload::Uniform => rng.next() % self.pages,
            Workload::HotCold { writes, pages } => {
                let hot = ((self.pages as f64 * pages) as u64).max(1);
                if rng.unit() < writes {
                    rng.next() % hot
                } else {
                    hot + rng.next() % (self.pages - hot).max(1)
                }
            }
            Workload::Zipf(_) => {
                let u = rng.unit();
                // Scatter ranks over page ids so hot pages are not adjacent.
                let rank = self.zipf_cdf.partition_point(|&c| c < u) as u64;
                (rank.min(self.pages - 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) % self.pages
            }
        }
    }
}

struct Sim {
    acc: Accountant,
    ss: u64,
    page_size: u64,
    head_lsn: Lsn,
    head_lid: u64,
    used: u64,
    location: Vec<Option<DiskPtr>>,
    writes: u64,
    relocations: u64,
    reuses: u64,
}

impl Sim {
    fn write(&mut self, pid: u64) {
        if self.used + self.page_size > self.ss {
            let next = self.head_lsn + self.ss as Lsn;
            let tip = self.acc.tip();
            self.head_lid = self.acc.next(next).expect("next");
            if self.head_lid < tip {
                self.reuses += 1;
            }
            self.head_lsn = next;
            self.used = 0;
            // Everything before the head is written and durable.
            self.acc.stabilize(self.head_lsn).expect("stabilize");
            self.acc.flush();
        }
        let lsn = self.head_lsn + self.used as Lsn;
        let ptr = DiskPtr::Inline(self.head_lid + self.used);
        self.used += self.page_size;
        match self.location[pid as usize] {
            Some(old) => self
                .acc
                .mark_replace(pid, lsn, &[old], ptr, self.page_size)
                .expect("replace"),
            None => self
                .acc
                .mark_link(pid, lsn, ptr, self.page_size)
                .expect("link"),
        }
        self.location[pid as usize] = Some(ptr);
    }

    /// A user write, then relocation of everything `clean` suggests (so
    /// cleaning keeps up whatever the write amplification).
    fn user_write(&mut self, pid: u64) {
        self.write(pid);
        self.writes += 1;
        while let Some(victim) = self.acc.clean(pid) {
            self.write(victim);
            self.relocations += 1;
        }
    }
}

fn main() {
    let o = parse();
    let ss = 1u64 << 20;
    let page_size = ss / o.pages_per_segment;
    let u = o.utilization.unwrap_or(0.8);
    let pages = ((o.segments * o.pages_per_segment) as f64 * u) as u64;
    let config = Config::builder()
        .segment_size(ss)
        .policy_arc(policy::by_name(&o.policy).expect("checked"))
        .space_target(o.utilization.map(|u| 1.0 / u))
        .build()
        .unwrap_or_else(|e| usage(&e.to_string()));
    let mut sim = Sim {
        acc: Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new()),
        ss,
        page_size,
        head_lsn: 0,
        head_lid: 0,
        used: 0,
        location: vec![None; pages as usize],
        writes: 0,
        relocations: 0,
        reuses: 0,
    };
    sim.head_lid = sim.acc.next(0).expect("next");
    let picker = Picker::new(o.workload.clone(), pages);
    let mut rng = Rng(o.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    // Load every page once, then warm up for `writes × pages` writes.
    for pid in 0..pages {
        sim.write(pid);
    }
    let per_phase = (o.writes * pages as f64) as u64;
    for _ in 0..per_phase {
        let pid = picker.pick(&mut rng);
        sim.user_write(pid);
    }
    let (w0, r0, reuse0) = (sim.writes, sim.relocations, sim.reuses);
    let started = Instant::now();
    let mut amp_sum = 0.0;
    let mut amp_samples = 0u64;
    for i in 0..per_phase {
        let pid = picker.pick(&mut rng);
        sim.user_write(pid);
        if i % 1024 == 0 {
            let st = sim.acc.stats();
            amp_sum += st.tip_bytes as f64 / (pages * page_size) as f64;
            amp_samples += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = sim.writes - w0;
    let relocations = sim.relocations - r0;
    println!(
        "policy={} workload={} utilization={} wa={:.3} space_amp={:.3} cleaned_segments={} ops_per_s={:.0}",
        o.policy,
        o.workload_name,
        o.utilization.map_or("none".into(), |u| format!("{u}")),
        (writes + relocations) as f64 / writes as f64,
        amp_sum / amp_samples.max(1) as f64,
        sim.reuses - reuse0,
        (writes + relocations) as f64 / elapsed
    );
    sim.acc.audit().expect("audit");
}
