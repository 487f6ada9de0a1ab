//! One simulation run: a page writer over the real accountant with one
//! write head per stream of the scheme, relocating every page `clean`
//! suggests where `clean_placed` advises.

/// A scheme: the accountant's victim policy and its streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// A name from `policy::NAMES`.
    pub policy: &'static str,
    /// User streams (placed by `stream_for_write`).
    pub user_streams: u8,
    /// Relocation streams (placed by `clean_placed`).
    pub relocation_streams: u8,
}

/// The schemes beyond the accountant's policies, all with cost-benefit
/// victims:
///
/// - `cost-benefit-sep`: relocated pages on their own head (2 heads);
/// - `survival`, alias `best`: relocated pages on three heads by how many
///   cleanings they survived (1, 2, 3 or more; 4 heads);
/// - `lifetime`: user writes on two heads by the lifetime of the version
///   they replace, relocated pages on two heads by survivals (4 heads).
pub const SCHEMES: [&str; 4] = ["cost-benefit-sep", "survival", "lifetime", "best"];

/// The scheme called `name` with `heads` heads (`None`: its default).
pub fn scheme(name: &str, heads: Option<u8>) -> Result<Scheme, String> {
    let split = |default: (u8, u8)| -> Result<(u8, u8), String> {
        match heads {
            None => Ok(default),
            Some(h) if h >= 2 => Ok((default.0.min(h - 1), h - default.0.min(h - 1))),
            Some(h) => Err(format!("{name} needs at least 2 heads, not {h}")),
        }
    };
    let (policy, (user, relocation)) = match name {
        "cost-benefit-sep" => ("cost-benefit", split((1, 1))?),
        "survival" | "best" => ("cost-benefit", split((1, 3))?),
        "lifetime" => ("cost-benefit", split((2, 2))?),
        _ => {
            let p = policy::NAMES
                .iter()
                .find(|&&p| p == name)
                .ok_or_else(|| format!("unknown policy {name}"))?;
            // A plain policy with several heads: one user stream, the rest
            // relocation streams.
            (*p, heads.map_or((1, 0), |h| (1, h.max(1) - 1)))
        }
    };
    Ok(Scheme {
        policy,
        user_streams: user,
        relocation_streams: relocation,
    })
}

use std::sync::Arc;
use std::time::Instant;

use segment_accountant::{policy, Accountant, Collector, Config, DiskPtr, Lsn, MemStorage, Skip};

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
    /// Write heads (`None`: the scheme's default).
    pub heads: Option<u8>,
    /// The space target, if not `1 / utilization` (to compare schemes at
    /// equal space amplification).
    pub target: Option<f64>,
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
            heads: None,
            target: None,
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
    /// Write heads used.
    pub heads: u8,
}

impl Figures {
    /// The single-run output line.
    pub fn line(&self, o: &RunOptions) -> String {
        format!(
            "policy={} workload={} utilization={}{} wa={:.3} space_amp={:.3} cleaned_segments={} ops_per_s={:.0}{}",
            o.policy,
            o.workload_name,
            o.utilization_name(),
            o.target.map_or(String::new(), |t| format!(" target={t}")),
            self.wa,
            self.space_amp,
            self.cleaned_segments,
            self.ops_per_s,
            if self.heads > 1 {
                format!(" heads={}", self.heads)
            } else {
                String::new()
            }
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

/// A write head: a segment-sized buffer of page writes, written out as one
/// segment when full. The segment takes its lsn (the log's next) only
/// then, so a page's copies keep increasing lsns whichever heads they go
/// through, and an open buffer never holds the stable lsn back: every
/// segment below the newest written one is durable.
#[derive(Clone, Debug, Default)]
struct Head {
    /// The pages written, in order; `None` is a slot voided by a later
    /// write of its page (written out all the same, as garbage).
    slots: Vec<Option<u64>>,
}

struct Sim {
    acc: Accountant,
    ss: u64,
    page_size: u64,
    pages_per_segment: usize,
    heads: Vec<Head>,
    /// The lsn the next written segment gets (one counter for all heads).
    next_lsn: Lsn,
    /// Each page's copy on disk.
    location: Vec<Option<DiskPtr>>,
    /// Each page's newest write still in a buffer: (head, slot).
    pending: Vec<Option<(u8, u32)>>,
    writes: u64,
    relocations: u64,
    reuses: u64,
}

impl Sim {
    /// Buffers a write of `pid` at head `stream` (voiding the page's
    /// earlier buffered write, if any), and writes the head out when full.
    fn write(&mut self, stream: usize, pid: u64) {
        if let Some((head, slot)) = self.pending[pid as usize] {
            self.heads[head as usize].slots[slot as usize] = None;
        }
        let head = &mut self.heads[stream];
        self.pending[pid as usize] = Some((stream as u8, head.slots.len() as u32));
        head.slots.push(Some(pid));
        if head.slots.len() == self.pages_per_segment {
            self.write_out(stream);
        }
    }

    /// Writes head `stream`'s buffer as the segment at the log's next lsn,
    /// tells the accountant where each page went, and stabilizes past it
    /// (every segment written so far is durable).
    fn write_out(&mut self, stream: usize) {
        let lsn = self.next_lsn;
        self.next_lsn += self.ss as Lsn;
        let tip = self.acc.tip();
        let lid = self.acc.next_in(lsn, stream as u8).expect("next");
        if lid < tip {
            self.reuses += 1;
        }
        // Taken out (and put back empty, keeping its capacity) so the
        // loop can update the rest of `self`.
        let mut slots = std::mem::take(&mut self.heads[stream].slots);
        for (i, pid) in slots.drain(..).enumerate() {
            let Some(pid) = pid else { continue };
            let offset = i as u64 * self.page_size;
            let (lsn, ptr) = (lsn + offset as Lsn, DiskPtr::Inline(lid + offset));
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
            self.pending[pid as usize] = None;
        }
        self.heads[stream].slots = slots;
        self.acc.stabilize(self.next_lsn).expect("stabilize");
        self.acc.flush();
    }

    /// A user write, then relocation of what `clean` suggests (so cleaning
    /// keeps up whatever the write amplification). A suggested page whose
    /// newest write is still buffered is not copied (its old copy is
    /// replaced when the buffer is written out); after a few such
    /// suggestions in a row the rest waits for the next user write.
    fn user_write(&mut self, pid: u64) {
        let old = self.location[pid as usize];
        let stream = self.acc.stream_for_write(self.next_lsn, old.as_slice());
        self.write(stream as usize, pid);
        self.writes += 1;
        let mut buffered = 0;
        while let Some(r) = self.acc.clean(Skip::Page(pid)) {
            if self.pending[r.pid as usize].is_some() {
                buffered += 1;
                if buffered == 64 {
                    break;
                }
                continue;
            }
            self.write(r.stream as usize, r.pid);
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
    let s = scheme(&o.policy, o.heads)?;
    let config = Config::builder()
        .segment_size(ss)
        .policy_arc(policy::by_name(s.policy).expect("a known policy"))
        .space_target(o.target.or(o.utilization.map(|u| 1.0 / u)))
        .streams(s.user_streams, s.relocation_streams)
        .build()
        .map_err(|e| e.to_string())?;
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    let streams = s.user_streams + s.relocation_streams;
    let mut sim = Sim {
        acc,
        ss,
        page_size,
        pages_per_segment: o.pages_per_segment as usize,
        heads: vec![Head::default(); streams as usize],
        next_lsn: 0,
        location: vec![None; pages as usize],
        pending: vec![None; pages as usize],
        writes: 0,
        relocations: 0,
        reuses: 0,
    };
    let picker = Picker::new(o.workload.clone(), pages);
    let mut rng = Rng(o.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    // Load every page once, then warm up for `writes × pages` writes.
    for pid in 0..pages {
        sim.write(0, pid);
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
        heads: streams,
    })
}
