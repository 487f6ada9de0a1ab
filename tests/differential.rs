//! Differential test: random operation sequences that keep the caller
//! contract (plus caller mistakes) run single-threaded against the
//! accountant and the reference model (`segment_accountant::model`), as a
//! refinement check. Where the specification allows a choice, the model
//! validates the accountant's and follows it. After every step both agree
//! on every segment (state, lsn, generation, live pages and bytes, pages not
//! yet replaced, removed count, to-clean membership), the tip, the stable
//! lsn, the bytes truncated and which blobs were deleted; mistakes return
//! equal errors from both and change nothing; `audit` passes at the end of
//! every case.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the generated sequences reached, over all cases (checked at the
/// end so the test cannot silently stop exercising reuse and truncation).
static REUSES: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static DRAINED: AtomicU64 = AtomicU64::new(0);
static LANDED: AtomicU64 = AtomicU64::new(0);
static MISTAKES: AtomicU64 = AtomicU64::new(0);

use proptest::prelude::*;
use segment_accountant::model::Model;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Lid, Lsn, MemStorage, Mode, PageId, SegmentState,
};

#[derive(Clone, Debug)]
enum Op {
    Next {
        skip: bool,
    },
    Link {
        pid: u64,
        head: usize,
        size: u64,
    },
    Replace {
        pid: u64,
        head: usize,
        size: u64,
        blob: bool,
    },
    Free {
        pid: u64,
        head: usize,
    },
    Close {
        head: usize,
    },
    Stabilize {
        back: u64,
    },
    Clean {
        ignore: u64,
        relocate: bool,
    },
    Flush,
    Iterate {
        from: u64,
    },
    Mistake {
        kind: u8,
        a: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|skip| Op::Next { skip }),
        6 => (0u64..24, 0usize..3, 1u64..40).prop_map(|(pid, head, size)| Op::Link { pid, head, size }),
        6 => (0u64..24, 0usize..3, 1u64..40, any::<bool>())
            .prop_map(|(pid, head, size, blob)| Op::Replace { pid, head, size, blob }),
        1 => (0u64..24, 0usize..3).prop_map(|(pid, head)| Op::Free { pid, head }),
        3 => (0usize..3).prop_map(|head| Op::Close { head }),
        3 => (0u64..3).prop_map(|back| Op::Stabilize { back }),
        3 => (0u64..24, any::<bool>()).prop_map(|(ignore, relocate)| Op::Clean { ignore, relocate }),
        2 => Just(Op::Flush),
        1 => (0u64..8).prop_map(|from| Op::Iterate { from }),
        2 => (0u8..9, any::<u64>()).prop_map(|(kind, a)| Op::Mistake { kind, a }),
    ]
}

#[derive(Clone, Debug)]
struct Head {
    lsn: Lsn,
    lid: Lid,
    used: u64,
}

struct Harness {
    acc: Accountant,
    model: Model,
    storage: Arc<MemStorage>,
    ss: u64,
    next_lsn: Lsn,
    open: Vec<Head>,
    pages: BTreeMap<PageId, Vec<DiskPtr>>,
    next_blob: u64,
    blobs: Vec<u64>,
    log: Vec<String>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let storage = Arc::new(MemStorage::new());
        Harness {
            acc: Accountant::with_collector(config.clone(), storage.clone(), Collector::new()),
            model: Model::new(config.clone()),
            storage,
            ss: config.segment_size(),
            next_lsn: 0,
            open: Vec::new(),
            pages: BTreeMap::new(),
            next_blob: 1,
            blobs: Vec::new(),
            log: Vec::new(),
        }
    }

    /// A place in an open head for a fragment; None if no head is open.
    fn place(&mut self, head: usize, size: u64) -> Option<(Lsn, u64)> {
        if self.open.is_empty() {
            return None;
        }
        let h = head % self.open.len();
        let head = &mut self.open[h];
        let offset = head.used % self.ss;
        head.used += size;
        Some((head.lsn + offset as Lsn, head.lid + offset))
    }

    fn same<T: std::fmt::Debug, E: std::fmt::Debug>(
        &self,
        what: &str,
        a: &Result<T, segment_accountant::Error>,
        m: &Result<T, E>,
    ) -> Result<(), String> {
        let a = a.as_ref().map_err(|e| format!("{e:?}"));
        let m = m.as_ref().map_err(|e| format!("{e:?}"));
        match (a, m) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(a), Err(m)) if a == m => {
                MISTAKES.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (a, m) => Err(format!("{what}: accountant {a:?}, model {m:?}")),
        }
    }

    fn next(&mut self, lsn: Lsn) -> Result<(), String> {
        match self.acc.next(lsn) {
            Ok(lid) => {
                let truncated = self.acc.stats().bytes_truncated;
                if lid < self.model.tip as u64 * self.ss {
                    REUSES.fetch_add(1, Ordering::Relaxed);
                }
                if truncated > self.model.bytes_truncated {
                    TRUNCATIONS.fetch_add(1, Ordering::Relaxed);
                }
                self.model.next_with(lsn, lid, truncated)?;
                self.open.push(Head { lsn, lid, used: 0 });
                Ok(())
            }
            Err(e) => match self.model.check_next(lsn) {
                Err(m) if format!("{m:?}") == format!("{e:?}") => {
                    MISTAKES.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                other => Err(format!("next({lsn}): accountant {e:?}, model {other:?}")),
            },
        }
    }

    fn replace(&mut self, pid: PageId, lsn: Lsn, new: DiskPtr, size: u64) -> Result<(), String> {
        let old = self.pages.get(&pid).cloned().unwrap_or_default();
        let a = if old.is_empty() {
            self.acc.mark_link(pid, lsn, new, size)
        } else {
            self.acc.mark_replace(pid, lsn, &old, new, size)
        };
        let m = if old.is_empty() {
            self.model.mark_link(pid, lsn, new, size)
        } else {
            self.model.mark_replace(pid, lsn, &old, new, size)
        };
        self.same("replace", &a, &m)?;
        if a.is_ok() {
            self.pages.insert(pid, vec![new]);
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        self.log.push(format!("{op:?}"));
        let ss = self.ss as Lsn;
        match *op {
            Op::Next { skip } => {
                if skip {
                    self.next_lsn += ss;
                }
                let lsn = self.next_lsn;
                self.next_lsn += ss;
                self.next(lsn)?;
            }
            Op::Link { pid, head, size } => {
                if let Some((lsn, lid)) = self.place(head, size) {
                    let ptr = DiskPtr::Inline(lid);
                    let a = self.acc.mark_link(pid, lsn, ptr, size);
                    let m = self.model.mark_link(pid, lsn, ptr, size);
                    self.same("link", &a, &m)?;
                    self.pages.entry(pid).or_default().push(ptr);
                }
            }
            Op::Replace {
                pid,
                head,
                size,
                blob,
            } => {
                if let Some((lsn, lid)) = self.place(head, size) {
                    let old = self.pages.get(&pid).cloned().unwrap_or_default();
                    let new = if blob {
                        // Re-link the same blob when the page is one blob.
                        let id = match old.as_slice() {
                            [DiskPtr::Blob { blob, .. }] if pid % 2 == 0 => *blob,
                            _ => {
                                self.next_blob += 1;
                                self.storage.add_blob(self.next_blob);
                                self.blobs.push(self.next_blob);
                                self.next_blob
                            }
                        };
                        DiskPtr::Blob { lid, blob: id }
                    } else {
                        DiskPtr::Inline(lid)
                    };
                    self.replace(pid, lsn, new, size)?;
                }
            }
            Op::Free { pid, head } => {
                if self.pages.contains_key(&pid) {
                    if let Some((lsn, lid)) = self.place(head, 8) {
                        self.replace(pid, lsn, DiskPtr::Inline(lid), 8)?;
                    }
                }
            }
            Op::Close { head } => {
                if !self.open.is_empty() {
                    let h = head % self.open.len();
                    self.open.remove(h);
                }
            }
            Op::Stabilize { back } => {
                // Everything below the lowest open head is complete.
                let bound = self
                    .open
                    .iter()
                    .map(|h| h.lsn)
                    .min()
                    .unwrap_or(self.next_lsn);
                let x = (bound - back as Lsn * ss).max(0);
                let a = self.acc.stabilize(x);
                let m = self.model.stabilize(x);
                self.same("stabilize", &a, &m)?;
            }
            Op::Clean { ignore, relocate } => {
                let got = self.acc.clean(ignore);
                self.model.check_clean(ignore, got)?;
                if let (Some(pid), true) = (got, relocate) {
                    if let Some((lsn, lid)) = self.place(0, 16) {
                        self.replace(pid, lsn, DiskPtr::Inline(lid), 16)?;
                    }
                }
            }
            Op::Flush => {
                self.acc.flush();
            }
            Op::Iterate { from } => {
                self.acc.pause_rewriting();
                self.model.pause_rewriting();
                let a = self
                    .acc
                    .segment_snapshot_iter_from(from as Lsn * ss)
                    .map(|i| i.collect::<Vec<_>>());
                let m = self.model.segment_snapshot_iter_from(from as Lsn * ss);
                if format!("{a:?}") != format!("{m:?}") {
                    return Err(format!("iteration: accountant {a:?}, model {m:?}"));
                }
                // A roll while paused must extend the file.
                if from % 3 == 0 {
                    let lsn = self.next_lsn;
                    self.next_lsn += ss;
                    self.next(lsn)?;
                }
                let a = self.acc.resume_rewriting();
                let m = self.model.resume_rewriting();
                self.same("resume", &a, &m)?;
            }
            Op::Mistake { kind, a } => self.mistake(kind, a)?,
        }
        self.sync_landings()?;
        self.compare()
    }

    fn mistake(&mut self, kind: u8, a: u64) -> Result<(), String> {
        let ss = self.ss as Lsn;
        let tip = self.acc.tip();
        match kind {
            0 => {
                // Unaligned lsn.
                let lsn = self.next_lsn + 1 + (a % (ss as u64 - 1)) as Lsn;
                self.next(lsn)?;
            }
            1 => {
                // An lsn already stable (or negative).
                let lsn = if self.acc.stable_lsn() >= 0 {
                    self.acc.stable_lsn()
                } else {
                    -ss
                };
                self.next(lsn)?;
            }
            2 => {
                // The lsn of an open head.
                if let Some(h) = self.open.first().cloned() {
                    self.next(h.lsn)?;
                }
            }
            3 => {
                // A lid at or beyond the tip.
                if let Some(h) = self.open.first().cloned() {
                    let ptr = DiskPtr::Inline(tip + a % (4 * self.ss));
                    let r = self.acc.mark_link(1, h.lsn, ptr, 5);
                    let m = self.model.mark_link(1, h.lsn, ptr, 5);
                    self.same("link beyond tip", &r, &m)?;
                    let r = self
                        .acc
                        .mark_replace(1, h.lsn, &[ptr], DiskPtr::Inline(h.lid), 5);
                    let m = self
                        .model
                        .mark_replace(1, h.lsn, &[ptr], DiskPtr::Inline(h.lid), 5);
                    self.same("replace from beyond tip", &r, &m)?;
                }
            }
            4 => {
                // A write whose lsn belongs to another segment.
                if let Some(h) = self.open.first().cloned() {
                    let lsn = h.lsn + ss * (1 + (a % 3) as Lsn);
                    let r = self.acc.mark_link(2, lsn, DiskPtr::Inline(h.lid), 5);
                    let m = self.model.mark_link(2, lsn, DiskPtr::Inline(h.lid), 5);
                    self.same("link with a wrong lsn", &r, &m)?;
                }
            }
            5 => {
                // A link into some segment below the tip that is not open
                // (sealed, draining, free: any state but Active-and-open).
                if tip > 0 {
                    let lid = (a % (tip / self.ss)) * self.ss;
                    if !self.open.iter().any(|h| h.lid == lid) {
                        let lsn = self.next_lsn.max(0);
                        let r = self.acc.mark_link(3, lsn, DiskPtr::Inline(lid), 5);
                        let m = self.model.mark_link(3, lsn, DiskPtr::Inline(lid), 5);
                        self.same("link into a closed segment", &r, &m)?;
                    }
                }
            }
            6 => {
                // Replace naming a segment that is free (or any segment
                // below the tip, whatever the model says it is).
                if let Some(h) = self.open.first().cloned() {
                    if tip > 0 {
                        let old = DiskPtr::Inline((a % (tip / self.ss)) * self.ss);
                        let r = self
                            .acc
                            .mark_replace(4, h.lsn, &[old], DiskPtr::Inline(h.lid), 5);
                        let m =
                            self.model
                                .mark_replace(4, h.lsn, &[old], DiskPtr::Inline(h.lid), 5);
                        self.same("replace from an arbitrary segment", &r, &m)?;
                        if r.is_ok() {
                            self.pages.insert(4, vec![DiskPtr::Inline(h.lid)]);
                        }
                    }
                }
            }
            7 => {
                // Resume without pause; iterate while not paused.
                let r = self.acc.resume_rewriting();
                let m = self.model.resume_rewriting();
                self.same("resume without pause", &r, &m)?;
                let r = self
                    .acc
                    .segment_snapshot_iter_from(0)
                    .map(|i| i.collect::<Vec<_>>());
                let m = self.model.segment_snapshot_iter_from(0);
                if format!("{:?}", r.as_ref().err()) != format!("{:?}", m.as_ref().err()) {
                    return Err(format!("iterate unpaused: accountant {r:?}, model {m:?}"));
                }
            }
            _ => {
                // A negative stabilize.
                let r = self.acc.stabilize(-1 - (a % 5) as Lsn);
                let m = self.model.stabilize(-1 - (a % 5) as Lsn);
                self.same("negative stabilize", &r, &m)?;
            }
        }
        Ok(())
    }

    fn sync_landings(&mut self) -> Result<(), String> {
        for i in 0..self.model.segments.len() {
            let info = self.acc.segment_info(i);
            let m = self.model.segment(i);
            if info.map(|s| s.state) == Some(SegmentState::Free)
                && m.state == Some(SegmentState::Freeing)
            {
                self.model.land(i)?;
                LANDED.fetch_add(1, Ordering::Relaxed);
            }
            if m.state == Some(SegmentState::Draining) {
                DRAINED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn compare(&self) -> Result<(), String> {
        let n = self.model.segments.len().max(self.acc.stats().tip_segments) + 2;
        for i in 0..n {
            let m = self.model.segment(i);
            let a = self.acc.segment_info(i);
            let state = a.as_ref().map_or(SegmentState::Vacant, |s| s.state);
            let m_state = m.state.unwrap_or(SegmentState::Vacant);
            let a_lsn = a.as_ref().and_then(|s| s.lsn);
            let a_gen = a.as_ref().map_or(0, |s| s.generation);
            if state != m_state || a_lsn != m.lsn || a_gen != m.generation {
                return Err(format!(
                    "segment {i}: accountant {state:?} lsn {a_lsn:?} gen {a_gen}, model {m_state:?} lsn {:?} gen {}",
                    m.lsn, m.generation
                ));
            }
            let pages: Vec<(PageId, u64)> = m.present.iter().map(|(&p, &b)| (p, b)).collect();
            if self.acc.segment_pages(i) != pages {
                return Err(format!(
                    "segment {i}: pages {:?} vs model {pages:?}",
                    self.acc.segment_pages(i)
                ));
            }
            let nyr: Vec<PageId> = m.not_yet_replaced.iter().copied().collect();
            if self.acc.segment_not_yet_replaced(i) != nyr {
                return Err(format!(
                    "segment {i}: not yet replaced {:?} vs model {nyr:?}",
                    self.acc.segment_not_yet_replaced(i)
                ));
            }
            if let Some(a) = a {
                let bytes: u64 = m.present.values().sum();
                if a.live_bytes != bytes || a.removed_pages != m.removed {
                    return Err(format!(
                        "segment {i}: bytes {} removed {} vs model {bytes} {}",
                        a.live_bytes, a.removed_pages, m.removed
                    ));
                }
                if a.to_clean != (m_state == SegmentState::Draining) {
                    return Err(format!(
                        "segment {i}: to-clean {} in state {m_state:?}",
                        a.to_clean
                    ));
                }
            }
        }
        let stats = self.acc.stats();
        if stats.tip_segments != self.model.tip
            || self.acc.stable_lsn() != self.model.stable
            || stats.bytes_truncated != self.model.bytes_truncated
        {
            return Err(format!(
                "tip {} stable {} truncated {} vs model {} {} {}",
                stats.tip_segments,
                self.acc.stable_lsn(),
                stats.bytes_truncated,
                self.model.tip,
                self.model.stable,
                self.model.bytes_truncated
            ));
        }
        for &b in &self.blobs {
            if self.storage.has_blob(b) == self.model.removed_blobs.contains(&b) {
                return Err(format!(
                    "blob {b}: exists {} in storage",
                    self.storage.has_blob(b)
                ));
            }
        }
        Ok(())
    }
}

fn config() -> impl Strategy<Value = Config> {
    (0u32..3, 10u8..90, 0u8..30, prop::bool::weighted(0.15)).prop_map(
        |(size, threshold, skew, linear)| {
            Config::builder()
                .segment_size(64 << size)
                .allow_small_segments(true)
                .cleanup_threshold(threshold)
                .skew(skew)
                .mode(if linear { Mode::Linear } else { Mode::Gc })
                .build()
                .unwrap()
        },
    )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn accountant_refines_the_model(config in config(), ops in prop::collection::vec(op(), 1..200)) {
        let mut h = Harness::new(config);
        for op in &ops {
            if let Err(e) = h.step(op) {
                prop_assert!(false, "{e}\nafter ops:\n{}", h.log.join("\n"));
            }
        }
        // Close everything, stabilize it all, push frees through.
        h.open.clear();
        let end = h.next_lsn + h.ss as Lsn;
        h.acc.stabilize(end).unwrap();
        h.model.stabilize(end).unwrap();
        h.acc.flush();
        if let Err(e) = h.sync_landings().and_then(|_| h.compare()) {
            prop_assert!(false, "{e}\nafter ops:\n{}", h.log.join("\n"));
        }
        prop_assert!(h.acc.audit().is_ok(), "{:?}", h.acc.audit());
    }
}

/// Runs after the property (tests in one binary run in name order when
/// single-threaded; with several threads it may run first, so it runs the
/// property's own sample size itself when nothing was recorded yet).
#[test]
fn zz_sequences_reach_every_mechanism() {
    if REUSES.load(Ordering::Relaxed) == 0 {
        accountant_refines_the_model();
    }
    let counts = [
        ("reuses", REUSES.load(Ordering::Relaxed)),
        ("truncations", TRUNCATIONS.load(Ordering::Relaxed)),
        ("draining segments seen", DRAINED.load(Ordering::Relaxed)),
        ("epoch landings", LANDED.load(Ordering::Relaxed)),
        ("caller mistakes", MISTAKES.load(Ordering::Relaxed)),
    ];
    eprintln!("differential coverage: {counts:?}");
    for (what, n) in counts {
        assert!(n > 0, "no {what} in the generated sequences");
    }
}
