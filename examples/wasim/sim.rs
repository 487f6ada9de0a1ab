//! One simulation run: a page writer with one write head over the real
//! accountant, relocating every page `clean` suggests.

use std::sync::Arc;
use std::time::Instant;

use segment_accountant::{policy, Accountant, Collector, Config, DiskPtr, Lid, Lsn, MemStorage};

/// Which page each user write rewrites.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Every page equally likely.
    Uniform,
    /// A share `writes` of the writes goes to a share `pages` of the pages.
    HotCold { writes: f64, pages: f64 },
    /// Zipf-distributed ranks with exponent theta, scattered over page ids.
    Zipf(f64),
}

impl Workload {
    /// Parses `uniform`, `hotcold:R/F` (percentages) or `zipf:THETA`.
    pub fn parse(w: &str) -> Result<Workload, String> {
        if w == "uniform" {
            Ok(Workload::Uniform)
        } else if let Some(rf) = w.strip_prefix("hotcold:") {
            let (r, f) = rf.split_once('/').ok_or("hotcold:R/F")?;
            let r: f64 = r.parse().map_err(|_| "hotcold:R/F")?;
            let f: f64 = f.parse().map_err(|_| "hotcold:R/F")?;
            if !(0.0 < r && r < 100.0 && 0.0 < f && f < 100.0) {
                return Err("hotcold: R and F are percentages in (0, 100)".into());
            }
            Ok(Workload::HotCold {
                writes: r / 100.0,
                pages: f / 100.0,
            })
        } else if let Some(t) = w.strip_prefix("zipf:") {
            let t: f64 = t.parse().map_err(|_| "zipf:THETA")?;
            if !(0.0..=2.0).contains(&t) {
                return Err("zipf: THETA in [0, 2]".into());
            }
            Ok(Workload::Zipf(t))
        } else {
            Err(format!("unknown workload {w}"))
        }
    }
}

/// Everything one run depends on.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// A name from `policy::NAMES`.
    pub policy: String,
    /// The space target's utilization (live data over file size), or none.
    pub utilization: Option<f64>,
    pub workload: Workload,
    /// The workload as given on the command line, for output.
    pub workload_name: String,
    pub segments: u64,
    pub pages_per_segment: u64,
    /// User writes per phase, in multiples of the live pages.
    pub writes: f64,
    pub seed: u64,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            policy: "spec".into(),
            utilization: None,
            workload: Workload::Uniform,
            workload_name: "uniform".into(),
            segments: 2048,
            pages_per_segment: 256,
            writes: 4.0,
            seed: 1,
        }
    }
}

impl RunOptions {
    /// The utilization as printed: `none` or the number.
    pub fn utilization_name(&self) -> String {
        self.utilization.map_or("none".into(), |u| format!("{u}"))
    }
}

/// What one run measured (over the measured phase only).
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// (user writes + relocations) / user writes.
    pub wa: f64,
    /// File size (tip bytes) over live bytes, averaged over samples.
    pub space_amp: f64,
    /// Segments handed out again by `next` below the tip.
    pub cleaned_segments: u64,
    /// Page writes (user and relocation) per second.
    pub ops_per_s: f64,
    /// The whole run's wall time, load and warm-up included, in seconds.
    pub seconds: f64,
}

impl Figures {
    /// The single-run output line.
    pub fn line(&self, o: &RunOptions) -> String {
        format!(
            "policy={} workload={} utilization={} wa={:.3} space_amp={:.3} cleaned_segments={} ops_per_s={:.0}",
            o.policy,
            o.workload_name,
            o.utilization_name(),
            self.wa,
            self.space_amp,
            self.cleaned_segments,
            self.ops_per_s
        )
    }
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

/// A write head: the segment it fills and how much of it is written.
#[derive(Clone, Copy, Debug)]
struct Head {
    /// The lsn of the segment's first byte.
    lsn: Lsn,
    /// The segment's place in the file (`next`'s answer).
    lid: Lid,
    /// Bytes written into the segment so far.
    used: u64,
}

impl Head {
    /// A head at the start of the segment `lid`, whose first byte is `lsn`.
    fn new(lsn: Lsn, lid: Lid) -> Head {
        Head { lsn, lid, used: 0 }
    }

    /// Whether `bytes` more fit in a segment of `ss` bytes.
    fn fits(&self, bytes: u64, ss: u64) -> bool {
        self.used + bytes <= ss
    }

    /// Takes `bytes` at the head: their lsn and where they are.
    fn place(&mut self, bytes: u64) -> (Lsn, DiskPtr) {
        let lsn = self.lsn + self.used as Lsn;
        let ptr = DiskPtr::Inline(self.lid + self.used);
        self.used += bytes;
        (lsn, ptr)
    }
}

struct Sim {
    acc: Accountant,
    ss: u64,
    page_size: u64,
    head: Head,
    location: Vec<Option<DiskPtr>>,
    writes: u64,
    relocations: u64,
    reuses: u64,
}

impl Sim {
    /// Seals the head's segment and starts the next one after it.
    fn roll(&mut self) {
        let next = self.head.lsn + self.ss as Lsn;
        let tip = self.acc.tip();
        let lid = self.acc.next(next).expect("next");
        if lid < tip {
            self.reuses += 1;
        }
        self.head = Head::new(next, lid);
        // Everything before the head is written and durable.
        self.acc.stabilize(next).expect("stabilize");
        self.acc.flush();
    }

    fn write(&mut self, pid: u64) {
        if !self.head.fits(self.page_size, self.ss) {
            self.roll();
        }
        let (lsn, ptr) = self.head.place(self.page_size);
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

/// Runs one simulation: load every page once, warm up with `writes ×
/// pages` user writes, then measure as many. The live data is
/// `utilization` (0.8 without a target) of `segments × pages_per_segment`
/// pages. Fails only if the accountant's configuration is refused.
pub fn simulate(o: &RunOptions) -> Result<Figures, String> {
    let run_started = Instant::now();
    let ss = 1u64 << 20;
    let page_size = ss / o.pages_per_segment;
    let u = o.utilization.unwrap_or(0.8);
    let pages = ((o.segments * o.pages_per_segment) as f64 * u) as u64;
    let config = Config::builder()
        .segment_size(ss)
        .policy_arc(
            policy::by_name(&o.policy).ok_or_else(|| format!("unknown policy {}", o.policy))?,
        )
        .space_target(o.utilization.map(|u| 1.0 / u))
        .build()
        .map_err(|e| e.to_string())?;
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let first = acc.next(0).expect("next");
    let mut sim = Sim {
        acc,
        ss,
        page_size,
        head: Head::new(0, first),
        location: vec![None; pages as usize],
        writes: 0,
        relocations: 0,
        reuses: 0,
    };
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
    sim.acc.audit().expect("audit");
    Ok(Figures {
        wa: (writes + relocations) as f64 / writes as f64,
        space_amp: amp_sum / amp_samples.max(1) as f64,
        cleaned_segments: sim.reuses - reuse0,
        ops_per_s: (writes + relocations) as f64 / elapsed,
        seconds: run_started.elapsed().as_secs_f64(),
    })
}
