//! Differential test: random operation sequences that keep the caller
//! contract (plus caller mistakes) run single-threaded against the
//! accountant and the reference model (`segment_accountant::model`), as a
//! refinement check. Where the specification allows a choice (which segment
//! `next` hands out and whether it shrinks the file first, when an epoch
//! deferral lands, which page `clean` suggests), the model validates the
//! accountant's choice and follows it.
//!
//! After every step both agree on every segment (state, lsn, generation,
//! live pages and their bytes, pages not yet replaced, removed count, live
//! bytes, to-clean membership), on the tip, the stable lsn, the bytes
//! truncated and which blobs were deleted, and `audit` passes. A mistake
//! returns equal errors from both, and changes nothing in either.
//!
//! A failing case prints the operations it ran (and proptest shrinks it).
//! `PROPTEST_CASES` overrides the number of cases (2,000 by default).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use segment_accountant::model::{Model, ModelSegment};
use segment_accountant::policy;
use segment_accountant::Skip;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Error, Lid, Lsn, MemStorage, Mode, PageId,
    SegmentState, Tuning,
};

// ---- coverage: what the generated sequences reached, over all cases ------

static CASES: AtomicU64 = AtomicU64::new(0);
static REUSES: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static DRAINED: AtomicU64 = AtomicU64::new(0);
static LANDED: AtomicU64 = AtomicU64::new(0);
static RELOCATED: AtomicU64 = AtomicU64::new(0);
static BLOBS_REMOVED: AtomicU64 = AtomicU64::new(0);
static MISTAKES: AtomicU64 = AtomicU64::new(0);
static STALE: AtomicU64 = AtomicU64::new(0);
static FROM_FREE: AtomicU64 = AtomicU64::new(0);
static COVERED: AtomicU64 = AtomicU64::new(0);
static TUNED: AtomicU64 = AtomicU64::new(0);
static DRAIN_TOP: AtomicU64 = AtomicU64::new(0);
static RANKED_DRAINS: AtomicU64 = AtomicU64::new(0);
static IDLE_DRAINS: AtomicU64 = AtomicU64::new(0);
static TARGET_CASES: AtomicU64 = AtomicU64::new(0);

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A model segment's state (Vacant when it has none).
fn state(s: &ModelSegment) -> SegmentState {
    s.state.unwrap_or(SegmentState::Vacant)
}

/// What a Freeing model segment waits for.
#[derive(Debug, PartialEq, Eq)]
enum Waiting {
    StableLsn,
    Epoch,
}

fn waiting(s: &ModelSegment) -> Option<Waiting> {
    (s.state == Some(SegmentState::Freeing)).then_some(if s.epoch_waiting {
        Waiting::Epoch
    } else {
        Waiting::StableLsn
    })
}

// ---- operations -----------------------------------------------------------

/// Page ids of single-page writes (few, so pages are rewritten often).
/// Mistakes use their own ids above [`BULK_PIDS`], so a mistake the
/// accountant accepts cannot disturb the harness's view of the pages.
const PIDS: u64 = 20;
/// Bulk writes use page ids below this (so segments can hold enough pages
/// to stay Inactive, which the tip-shrinking heuristic needs).
const BULK_PIDS: u64 = 48;
/// Page ids of mistaken links (three of them).
const MISTAKE_PID: PageId = 100;
/// Page id of the stale-generation replacements.
const STALE_PID: PageId = 110;
/// Page id of the replacements from arbitrary segments.
const ARBITRARY_PID: PageId = 111;

#[derive(Clone, Debug)]
enum Op {
    /// The write buffer rolls over: `next` for the next segment lsn
    /// (`skip`: leave one lsn unused first).
    Next { skip: bool },
    /// The store writes one segment at a time: close every head, then
    /// `next` (`skip`: leave one lsn unused first).
    Roll { skip: bool },
    /// A fragment of `pid` in open head `head`.
    Link { pid: u64, head: usize, size: u64 },
    /// A full image of `pid` replacing every earlier fragment (inline, or
    /// a blob pointer; even pids re-link their single blob).
    Replace {
        pid: u64,
        head: usize,
        size: u64,
        blob: bool,
    },
    /// `count` pages from `first` on (wrapping below [`BULK_PIDS`]) in
    /// head `head`: fragments, or full images (replacing earlier ones).
    Bulk {
        first: u64,
        count: u64,
        head: usize,
        replace: bool,
    },
    /// A free record for `pid`: a replacement whose new pointer is the
    /// record.
    Free { pid: u64, head: usize },
    /// The store stops writing into open head `head`.
    Close { head: usize },
    /// A durable header vouches for everything below the lowest open head,
    /// minus `back` segments, plus `within` bytes (less than a segment).
    Stabilize { back: u64, within: u64 },
    /// `clean(ignore)`, relocating the page it returns into `head` if
    /// `relocate`.
    Clean {
        ignore: u64,
        relocate: bool,
        head: usize,
    },
    /// `flush`.
    Flush,
    /// The store goes quiet for `rounds` rounds: each relocates what
    /// `clean` suggests, rolls, vouches for everything below its head and
    /// flushes (the idle passes an idle store's compaction acts in).
    Idle { rounds: u8 },
    /// Pause, iterate from segment `from`, optionally roll over while
    /// paused, resume.
    Iterate { from: u64, roll: bool },
    /// A pause that lasts until a later `Resume`.
    Pause,
    /// Ends one `Pause` (nothing if the harness has none open).
    Resume,
    /// A caller mistake (see [`Harness::mistake`]).
    Mistake { kind: u8, a: u64 },
    /// `tune` with the tunables that are `Some` (a policy by its index in
    /// [`policy::NAMES`]); some values are out of range, so both sides
    /// must refuse them alike.
    Tune {
        threshold: Option<u8>,
        skew: Option<u8>,
        policy: Option<usize>,
        target: Option<Option<f64>>,
    },
}

fn tune_op() -> impl Strategy<Value = Op> {
    let targets = prop_oneof![
        3 => (105u32..300).prop_map(|t| Some(t as f64 / 100.0)),
        1 => Just(None),
        1 => Just(Some(1.0)),
    ];
    (
        prop::option::of(0u8..=100),
        prop::option::of(0u8..=105),
        prop::option::of(0usize..policy::NAMES.len()),
        prop::option::of(targets),
    )
        .prop_map(|(threshold, skew, policy, target)| Op::Tune {
            threshold,
            skew,
            policy,
            target,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(|skip| Op::Next { skip }),
        8 => (0..PIDS, 0usize..3, 1u64..40).prop_map(|(pid, head, size)| Op::Link { pid, head, size }),
        8 => (0..PIDS, 0usize..3, 1u64..40, any::<bool>())
            .prop_map(|(pid, head, size, blob)| Op::Replace { pid, head, size, blob }),
        2 => (0..BULK_PIDS, 1..BULK_PIDS, 0usize..3, any::<bool>())
            .prop_map(|(first, count, head, replace)| Op::Bulk { first, count, head, replace }),
        2 => (0..PIDS, 0usize..3).prop_map(|(pid, head)| Op::Free { pid, head }),
        3 => (0usize..3).prop_map(|head| Op::Close { head }),
        4 => (0u64..3, 0u64..256).prop_map(|(back, within)| Op::Stabilize { back, within }),
        4 => (0..PIDS, any::<bool>(), 0usize..3)
            .prop_map(|(ignore, relocate, head)| Op::Clean { ignore, relocate, head }),
        2 => Just(Op::Flush),
        1 => (1u8..8).prop_map(|rounds| Op::Idle { rounds }),
        1 => (0u64..8, any::<bool>()).prop_map(|(from, roll)| Op::Iterate { from, roll }),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        3 => (0u8..12, any::<u64>()).prop_map(|(kind, a)| Op::Mistake { kind, a }),
        1 => tune_op(),
    ]
}

/// A profile that fills many segments with many pages and seals them, so
/// that segments stay Inactive and the tip-shrinking heuristic has
/// something to act on.
fn fill_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::bool::weighted(0.1).prop_map(|skip| Op::Roll { skip }),
        1 => any::<bool>().prop_map(|skip| Op::Next { skip }),
        5 => (0..BULK_PIDS, 8..BULK_PIDS, 0usize..2, prop::bool::weighted(0.2))
            .prop_map(|(first, count, head, replace)| Op::Bulk { first, count, head, replace }),
        3 => (0usize..3).prop_map(|head| Op::Close { head }),
        3 => (0u64..2, 0u64..256).prop_map(|(back, within)| Op::Stabilize { back, within }),
        2 => (0..PIDS, 0usize..3, 1u64..40, any::<bool>())
            .prop_map(|(pid, head, size, blob)| Op::Replace { pid, head, size, blob }),
        2 => (0..BULK_PIDS, any::<bool>(), 0usize..3)
            .prop_map(|(ignore, relocate, head)| Op::Clean { ignore, relocate, head }),
        1 => Just(Op::Flush),
        1 => (1u8..8).prop_map(|rounds| Op::Idle { rounds }),
        1 => (0u8..12, any::<u64>()).prop_map(|(kind, a)| Op::Mistake { kind, a }),
        1 => tune_op(),
    ]
}

/// A configuration and an operation sequence: mostly the general mix;
/// sometimes the fill profile, with low thresholds (so that segments full
/// of pages stay Inactive).
fn cases_strategy() -> impl Strategy<Value = (Config, Vec<Op>)> {
    prop_oneof![
        3 => (configs(5..95, 0..40), prop::collection::vec(op(), 1..250)),
        1 => (configs(5..30, 0..10), prop::collection::vec(fill_op(), 1..150)),
    ]
}

fn configs(
    thresholds: std::ops::Range<u8>,
    skews: std::ops::Range<u8>,
) -> impl Strategy<Value = Config> {
    // Mostly the specification's rule (the only one that acts without a
    // target), then each ranked policy.
    let policies =
        prop_oneof![5 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)];
    // No target, or one of 1.05 to 3.0 (the ranked policies need one).
    let targets = prop_oneof![
        Just(None),
        (105u32..300).prop_map(|t| Some(t as f64 / 100.0))
    ];
    (
        0u32..3,
        thresholds,
        skews,
        prop::bool::weighted(0.15),
        policies,
        targets,
        (1u8..4, 0u8..3),
    )
        .prop_map(|(size, threshold, skew, linear, p, target, streams)| {
            let policy = policy::by_name(policy::NAMES[p]).unwrap();
            let target = if policy.cleans_without_target() {
                target
            } else {
                target.or(Some(1.25))
            };
            Config::builder()
                .segment_size(64 << size)
                .allow_small_segments(true)
                .cleanup_threshold(threshold)
                .skew(skew)
                .mode(if linear { Mode::Linear } else { Mode::Gc })
                .policy_arc(policy)
                .space_target(target)
                .streams(streams.0, streams.1)
                .build()
                .unwrap()
        })
}

// ---- the simulated log store ---------------------------------------------

/// A segment the store is writing into.
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
    /// The next segment lsn to ask `next` for.
    next_lsn: Lsn,
    /// Heads the store may still write into (never stabilized past).
    open: Vec<Head>,
    /// Each page's current fragment pointers.
    pages: BTreeMap<PageId, Vec<DiskPtr>>,
    /// Pointers that replacements made garbage, with the lsn their segment
    /// had then (for stale-generation mistakes).
    retired: Vec<(DiskPtr, Option<Lsn>)>,
    next_blob: u64,
    blobs: Vec<u64>,
    /// Pauses opened by `Op::Pause` and not yet resumed.
    pauses: u32,
    /// The last error both sides returned.
    last_error: String,
    log: Vec<String>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let storage = Arc::new(MemStorage::new());
        Harness {
            // A private collector: no other test thread pins it, so epoch
            // deferrals land only inside this accountant's own calls.
            acc: Accountant::with_collector(config.clone(), storage.clone(), Collector::new()),
            model: Model::new(config.clone()),
            storage,
            ss: config.segment_size(),
            next_lsn: 0,
            open: Vec::new(),
            pages: BTreeMap::new(),
            retired: Vec::new(),
            next_blob: 0,
            blobs: Vec::new(),
            pauses: 0,
            last_error: String::new(),
            log: Vec::new(),
        }
    }

    /// Reserves `size` bytes in open head `head`: `(lsn, lid)` of the
    /// fragment, or `None` if no head is open.
    fn place(&mut self, head: usize, size: u64) -> Option<(Lsn, Lid)> {
        if self.open.is_empty() {
            return None;
        }
        let n = self.open.len();
        let head = &mut self.open[head % n];
        let offset = head.used % self.ss;
        head.used += size;
        Some((head.lsn + offset as Lsn, head.lid + offset))
    }

    /// Runs one call on both sides and compares the results: equal errors
    /// (and then the model must be unchanged, and the accountant must still
    /// agree with it), or success on both.
    fn both<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        acc_call: impl FnOnce(&Accountant) -> Result<T, Error>,
        model_call: impl FnOnce(&mut Model) -> Result<T, Error>,
    ) -> Result<bool, String> {
        let before = format!("{:?}", self.model);
        let a = acc_call(&self.acc);
        let m = model_call(&mut self.model);
        match (&a, &m) {
            (Ok(_), Ok(_)) => Ok(true),
            (Err(ea), Err(em)) if format!("{ea:?}") == format!("{em:?}") => {
                bump(&MISTAKES);
                self.last_error = format!("{ea:?}");
                if format!("{:?}", self.model) != before {
                    return Err(format!("{what}: the model changed on error {em:?}"));
                }
                self.sync_landings()?;
                self.compare()
                    .map_err(|e| format!("{what} failed with {ea:?}, then: {e}"))?;
                Ok(false)
            }
            _ => Err(format!("{what}: accountant {a:?}, model {m:?}")),
        }
    }

    fn next(&mut self, lsn: Lsn) -> Result<(), String> {
        let tip = self.model.tip;
        let truncated = self.model.bytes_truncated;
        let stream = ((lsn / self.ss as Lsn) % self.acc.config().stream_count() as Lsn) as u8;
        match self.acc.next_in(lsn, stream) {
            Ok(lid) => {
                let truncated_now = self.acc.stats().bytes_truncated;
                let tip_after = if truncated_now > truncated {
                    bump(&TRUNCATIONS);
                    self.model.shrink_target()
                } else {
                    tip
                };
                // The accountant's documented choice, stricter than the
                // specification: the lowest Free segment.
                let (reuse, extend) = self.model.next_choices(tip_after);
                if extend.is_none() && reuse.first() != Some(&((lid / self.ss) as usize)) {
                    return Err(format!(
                        "next({lsn}) returned lid {lid}, not the lowest free segment of {reuse:?}"
                    ));
                }
                if lid < tip_after as u64 * self.ss {
                    bump(&REUSES);
                }
                self.model.next_in_with(lsn, stream, lid, truncated_now)?;
                self.open.push(Head { lsn, lid, used: 0 });
                Ok(())
            }
            Err(e) => {
                let before = format!("{:?}", self.model);
                match self.model.check_next_in(lsn, stream) {
                    Err(m) if format!("{m:?}") == format!("{e:?}") => {
                        bump(&MISTAKES);
                        assert_eq!(before, format!("{:?}", self.model));
                        self.sync_landings()?;
                        self.compare()
                            .map_err(|c| format!("next({lsn}) failed with {e:?}, then: {c}"))
                    }
                    other => Err(format!("next({lsn}): accountant {e:?}, model {other:?}")),
                }
            }
        }
    }

    /// Writes a full image of `pid` at `(lsn, new)`: a replacement of its
    /// earlier fragments, or a first link.
    fn rewrite(&mut self, pid: PageId, lsn: Lsn, new: DiskPtr, size: u64) -> Result<bool, String> {
        let old = self.pages.get(&pid).cloned().unwrap_or_default();
        let ok = if old.is_empty() {
            self.both(
                "first image",
                |a| a.mark_link(pid, lsn, new, size),
                |m| m.mark_link(pid, lsn, new, size),
            )?
        } else {
            self.both(
                "replace",
                |a| a.mark_replace(pid, lsn, &old, new, size),
                |m| m.mark_replace(pid, lsn, &old, new, size),
            )?
        };
        if ok {
            for ptr in old {
                let lsn = self.model.segment((ptr.lid() / self.ss) as usize).lsn;
                self.retired.push((ptr, lsn));
            }
            self.pages.insert(pid, vec![new]);
        }
        Ok(ok)
    }

    fn stabilize(&mut self, x: Lsn) -> Result<(), String> {
        let removed = self.model.removed_blobs.len();
        let draining_before = self.model.draining_count();
        let idle_before = self.acc.metrics().drains_idle;
        self.both("stabilize", |a| a.stabilize(x), |m| m.stabilize(x))?;
        if self.acc.metrics().drains_idle > idle_before {
            bump(&IDLE_DRAINS);
        }
        // Segments a ranked policy drains come from the space target (or
        // the tip-shrinking rules): the victim index at work.
        if !self.acc.config().policy().cleans_without_target()
            && self.model.draining_count() > draining_before
        {
            bump(&RANKED_DRAINS);
        }
        if self.model.removed_blobs.len() > removed {
            bump(&BLOBS_REMOVED);
        }
        // A proxy for "the tip-shrinking heuristic fired": its condition
        // holds after the call.
        let count = |s: SegmentState| {
            (0..self.model.tip)
                .filter(|&i| state(&self.model.segment(i)) == s)
                .count() as u64
        };
        let inactive = count(SegmentState::Inactive);
        let free = count(SegmentState::Free) + count(SegmentState::Freeing);
        if policy::should_drain_top(&self.acc.config(), free, inactive) {
            bump(&DRAIN_TOP);
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
            Op::Roll { skip } => {
                self.open.clear();
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
                    let ok = self.both(
                        "link",
                        |a| a.mark_link(pid, lsn, ptr, size),
                        |m| m.mark_link(pid, lsn, ptr, size),
                    )?;
                    if !ok {
                        return Err("a link into an open head failed".into());
                    }
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
                    let new = if blob {
                        let old = self.pages.get(&pid).map(Vec::as_slice).unwrap_or_default();
                        let id = match old {
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
                    self.rewrite(pid, lsn, new, size)?;
                }
            }
            Op::Bulk {
                first,
                count,
                head,
                replace,
            } => {
                for k in 0..count {
                    let pid = (first + k) % BULK_PIDS;
                    let size = 1 + pid % 3;
                    let Some((lsn, lid)) = self.place(head, size) else {
                        break;
                    };
                    let ptr = DiskPtr::Inline(lid);
                    if replace {
                        self.rewrite(pid, lsn, ptr, size)?;
                    } else {
                        let ok = self.both(
                            "bulk link",
                            |a| a.mark_link(pid, lsn, ptr, size),
                            |m| m.mark_link(pid, lsn, ptr, size),
                        )?;
                        if !ok {
                            return Err("a link into an open head failed".into());
                        }
                        self.pages.entry(pid).or_default().push(ptr);
                    }
                }
            }
            Op::Free { pid, head } => {
                if self.pages.contains_key(&pid) {
                    if let Some((lsn, lid)) = self.place(head, 8) {
                        self.rewrite(pid, lsn, DiskPtr::Inline(lid), 8)?;
                    }
                }
            }
            Op::Close { head } => {
                if !self.open.is_empty() {
                    let n = self.open.len();
                    self.open.remove(head % n);
                }
            }
            Op::Stabilize { back, within } => {
                // Everything below the lowest open head is complete.
                let bound = self
                    .open
                    .iter()
                    .map(|h| h.lsn)
                    .min()
                    .unwrap_or(self.next_lsn);
                let x = (bound - back as Lsn * ss).max(0) + (within % self.ss) as Lsn;
                self.stabilize(x)?;
            }
            Op::Clean {
                ignore,
                relocate,
                head,
            } => {
                let placed = self.acc.clean(Skip::Page(ignore));
                self.model.check_clean_placed(ignore, placed)?;
                let got = placed.map(|r| r.pid);
                if let (Some(pid), true) = (got, relocate) {
                    if let Some((lsn, lid)) = self.place(head, 16) {
                        if self.rewrite(pid, lsn, DiskPtr::Inline(lid), 16)? {
                            bump(&RELOCATED);
                        }
                    }
                }
            }
            Op::Flush => {
                self.acc.flush();
            }
            Op::Idle { rounds } => {
                for _ in 0..rounds {
                    for _ in 0..4 {
                        let ignore = PIDS;
                        self.step(&Op::Clean {
                            ignore,
                            relocate: true,
                            head: 0,
                        })?;
                    }
                    self.step(&Op::Roll { skip: false })?;
                    self.step(&Op::Stabilize { back: 0, within: 0 })?;
                    self.step(&Op::Flush)?;
                }
            }
            Op::Iterate { from, roll } => {
                self.acc.pause_rewriting();
                self.model.pause_rewriting();
                self.iterate(from as Lsn * ss)?;
                if roll {
                    // A roll while paused must extend the file.
                    let lsn = self.next_lsn;
                    self.next_lsn += ss;
                    self.next(lsn)?;
                }
                self.both("resume", |a| a.resume_rewriting(), |m| m.resume_rewriting())?;
            }
            Op::Pause => {
                self.acc.pause_rewriting();
                self.model.pause_rewriting();
                self.pauses += 1;
            }
            Op::Resume => {
                if self.pauses > 0 {
                    self.pauses -= 1;
                    let ok =
                        self.both("resume", |a| a.resume_rewriting(), |m| m.resume_rewriting())?;
                    if !ok {
                        return Err("resume after pause failed".into());
                    }
                }
            }
            Op::Mistake { kind, a } => self.mistake(kind, a)?,
            Op::Tune {
                threshold,
                skew,
                policy,
                target,
            } => {
                let mut tuning = Tuning::new();
                if let Some(t) = threshold {
                    tuning = tuning.cleanup_threshold(t);
                }
                if let Some(s) = skew {
                    tuning = tuning.skew(s);
                }
                if let Some(p) = policy {
                    tuning = tuning.policy_arc(policy::by_name(policy::NAMES[p]).unwrap());
                }
                if let Some(t) = target {
                    tuning = tuning.space_target(t);
                }
                let ok = self.both(
                    "tune",
                    |a| a.tune(tuning.clone()).map(drop).map_err(Error::from),
                    |m| m.tune(&tuning).map_err(Error::from),
                )?;
                if ok {
                    bump(&TUNED);
                }
            }
        }
        self.after_step()
    }

    fn iterate(&mut self, from: Lsn) -> Result<(), String> {
        let a = self
            .acc
            .segment_snapshot_iter_from(from)
            .map(|i| i.collect::<Vec<_>>());
        let m = self.model.segment_snapshot_iter_from(from);
        if format!("{a:?}") != format!("{m:?}") {
            return Err(format!(
                "segment_snapshot_iter_from({from}): accountant {a:?}, model {m:?}"
            ));
        }
        Ok(())
    }

    /// A caller mistake. Most kinds always fail; those that pick a segment
    /// at random may hit one where the call is legal, and then both sides
    /// must accept it.
    fn mistake(&mut self, kind: u8, a: u64) -> Result<(), String> {
        let ss = self.ss as Lsn;
        let tip = self.acc.tip();
        let tip_segments = tip / self.ss;
        match kind {
            0 => {
                // An unaligned lsn.
                let lsn = self.next_lsn + 1 + (a % (self.ss - 1)) as Lsn;
                self.next(lsn)?;
            }
            1 => {
                // An lsn at or below the stable lsn (or negative).
                let stable = self.acc.stable_lsn();
                let lsn = if stable >= 0 {
                    stable - (a % 2) as Lsn * (stable / ss % 3) * ss
                } else {
                    -ss * (1 + (a % 2) as Lsn)
                };
                self.next(lsn)?;
            }
            2 => {
                // A repeated lsn: that of an open head (in use), or one
                // given earlier (in use or already stable).
                let lsn = match self.open.first() {
                    Some(h) if a % 2 == 0 => h.lsn,
                    _ => (a % (self.next_lsn as u64 / self.ss + 1)) as Lsn * ss,
                };
                if lsn < self.next_lsn {
                    self.next(lsn)?;
                }
            }
            3 => {
                // A lid at or beyond the tip: link, and replace from it.
                if let Some(h) = self.open.first().cloned() {
                    let ptr = DiskPtr::Inline(tip + a % (4 * self.ss));
                    self.both(
                        "link beyond the tip",
                        |acc| acc.mark_link(MISTAKE_PID, h.lsn, ptr, 5),
                        |m| m.mark_link(MISTAKE_PID, h.lsn, ptr, 5),
                    )?;
                    let new = DiskPtr::Inline(h.lid + h.used % self.ss);
                    self.both(
                        "replace from beyond the tip",
                        |acc| acc.mark_replace(MISTAKE_PID, h.lsn, &[ptr], new, 5),
                        |m| m.mark_replace(MISTAKE_PID, h.lsn, &[ptr], new, 5),
                    )?;
                }
            }
            4 => {
                // A write whose lsn belongs to another segment.
                if let Some(h) = self.open.first().cloned() {
                    let lsn = h.lsn + ss * (1 + (a % 3) as Lsn) + (a % 7) as Lsn;
                    self.both(
                        "link with a wrong lsn",
                        |acc| acc.mark_link(MISTAKE_PID + 1, lsn, DiskPtr::Inline(h.lid), 5),
                        |m| m.mark_link(MISTAKE_PID + 1, lsn, DiskPtr::Inline(h.lid), 5),
                    )?;
                }
            }
            5 => {
                // A link into a segment below the tip that is not an open
                // head (sealed, draining, freeing, free, or closed), at an
                // lsn never given, at its own lsn, or at lsn 0 (stale).
                if tip_segments > 0 {
                    let index = (a % tip_segments) as usize;
                    let lid = index as u64 * self.ss;
                    if !self.open.iter().any(|h| h.lid == lid) {
                        let lsn = match a / 7 % 3 {
                            0 => self.next_lsn,
                            1 => self.model.segment(index).lsn.unwrap_or(0) + 3,
                            _ => 0,
                        };
                        let ptr = DiskPtr::Inline(lid + 3);
                        let ok = self.both(
                            "link into a segment that is not open",
                            |acc| acc.mark_link(MISTAKE_PID + 2, lsn, ptr, 5),
                            |m| m.mark_link(MISTAKE_PID + 2, lsn, ptr, 5),
                        )?;
                        if !ok && self.last_error.starts_with("SegmentSealed") {
                            bump(&COVERED);
                        }
                    }
                }
            }
            6 => {
                // A replacement naming a segment that is Free or Freeing
                // (or, if none is, an arbitrary one below the tip).
                if let Some(h) = self.open.first().cloned() {
                    if tip_segments > 0 {
                        let freed: Vec<usize> = (0..tip_segments as usize)
                            .filter(|&i| {
                                matches!(
                                    state(&self.model.segment(i)),
                                    SegmentState::Free | SegmentState::Freeing
                                )
                            })
                            .collect();
                        let index = if freed.is_empty() {
                            (a % tip_segments) as usize
                        } else {
                            freed[(a % freed.len() as u64) as usize]
                        };
                        let old = DiskPtr::Inline(index as u64 * self.ss);
                        let new = DiskPtr::Inline(h.lid + h.used % self.ss);
                        let ok = self.both(
                            "replace from a free segment",
                            |acc| acc.mark_replace(ARBITRARY_PID, h.lsn, &[old], new, 5),
                            |m| m.mark_replace(ARBITRARY_PID, h.lsn, &[old], new, 5),
                        )?;
                        if !ok && self.last_error.starts_with("ReplacedFromFreeSegment") {
                            bump(&FROM_FREE);
                        }
                    }
                }
            }
            7 => {
                // A replacement naming a pointer into an earlier generation
                // of a segment reused since, at an lsn below the reuse.
                let mut picks = Vec::new();
                for (r, &(ptr, then)) in self.retired.iter().enumerate() {
                    let index = (ptr.lid() / self.ss) as usize;
                    let now = self.model.segment(index).lsn;
                    let Some(now) = now.filter(|&now| Some(now) != then) else {
                        continue;
                    };
                    for (hi, h) in self.open.iter().enumerate() {
                        if (h.lid / self.ss) as usize != index && now > h.lsn {
                            picks.push((r, hi));
                        }
                    }
                }
                let reused = !picks.is_empty();
                let pick = if picks.is_empty() {
                    (!self.retired.is_empty() && !self.open.is_empty()).then(|| {
                        (
                            (a % self.retired.len() as u64) as usize,
                            (a % self.open.len() as u64) as usize,
                        )
                    })
                } else {
                    Some(picks[(a % picks.len() as u64) as usize])
                };
                if let Some((r, hi)) = pick {
                    let old = self.retired[r].0;
                    let h = self.open[hi].clone();
                    let new = DiskPtr::Inline(h.lid + h.used % self.ss);
                    let ok = self.both(
                        "replace from a reused segment",
                        |acc| acc.mark_replace(STALE_PID, h.lsn, &[old], new, 5),
                        |m| m.mark_replace(STALE_PID, h.lsn, &[old], new, 5),
                    )?;
                    if reused && !ok && self.last_error.starts_with("StaleSegment") {
                        bump(&STALE);
                    }
                }
            }
            8 => {
                // Resume without a pause (Linear mode: always Ok), then
                // iterate (fails unless paused).
                if self.pauses == 0 {
                    self.both(
                        "resume without a pause",
                        |acc| acc.resume_rewriting(),
                        |m| m.resume_rewriting(),
                    )?;
                    self.iterate((a % 8) as Lsn * ss)?;
                }
            }
            9 => {
                // An lsn out of the supported range.
                let lsn = i64::MAX - i64::MAX % ss;
                self.next(lsn)?;
                if let Some(h) = self.open.first().cloned() {
                    self.both(
                        "link at an lsn out of range",
                        |acc| acc.mark_link(MISTAKE_PID, lsn, DiskPtr::Inline(h.lid), 5),
                        |m| m.mark_link(MISTAKE_PID, lsn, DiskPtr::Inline(h.lid), 5),
                    )?;
                }
            }
            10 => {
                // A negative lsn for a write.
                if let Some(h) = self.open.first().cloned() {
                    let lsn = -1 - (a % 100) as Lsn;
                    self.both(
                        "link at a negative lsn",
                        |acc| acc.mark_link(MISTAKE_PID, lsn, DiskPtr::Inline(h.lid), 5),
                        |m| m.mark_link(MISTAKE_PID, lsn, DiskPtr::Inline(h.lid), 5),
                    )?;
                }
            }
            _ => {
                // A negative stabilize.
                let lsn = -1 - (a % 5) as Lsn;
                self.both(
                    "negative stabilize",
                    |acc| acc.stabilize(lsn),
                    |m| m.stabilize(lsn),
                )?;
            }
        }
        Ok(())
    }

    fn after_step(&mut self) -> Result<(), String> {
        self.sync_landings()?;
        self.compare()?;
        self.acc.audit().map_err(|e| e.to_string())
    }

    /// Lands in the model every segment the accountant reports Free that
    /// the model has waiting on the epoch (the model rejects any other).
    fn sync_landings(&mut self) -> Result<(), String> {
        for i in 0..self.model.segments.len() {
            let a_state = self.acc.segment_info(i).map(|s| s.state);
            let m = self.model.segment(i);
            if a_state == Some(SegmentState::Free) && state(&m) == SegmentState::Freeing {
                self.model.land(i)?;
                bump(&LANDED);
            }
            if state(&m) == SegmentState::Draining {
                bump(&DRAINED);
            }
        }
        Ok(())
    }

    fn compare(&self) -> Result<(), String> {
        let stats = self.acc.stats();
        let n = self
            .model
            .segments
            .len()
            .max(stats.tip_segments)
            .max(self.model.tip)
            + 3;
        for i in 0..n {
            let m = self.model.segment(i);
            let info = self.acc.segment_info(i);
            let a_state = info.as_ref().map_or(SegmentState::Vacant, |s| s.state);
            let a_lsn = info.as_ref().and_then(|s| s.lsn);
            let a_gen = info.as_ref().map_or(0, |s| s.generation);
            let live = matches!(
                state(&m),
                SegmentState::Active | SegmentState::Inactive | SegmentState::Draining
            );
            if live && info.as_ref().map(|s| s.stream) != Some(m.stream) {
                return Err(format!(
                    "segment {i}: accountant stream {:?}, model {}",
                    info.as_ref().map(|s| s.stream),
                    m.stream
                ));
            }
            if a_state != state(&m) || a_lsn != m.lsn || a_gen != m.generation {
                return Err(format!(
                    "segment {i}: accountant {a_state:?} lsn {a_lsn:?} gen {a_gen}, model {:?} lsn {:?} gen {}",
                    state(&m), m.lsn, m.generation
                ));
            }
            let pages: Vec<(PageId, u64)> = m.present.iter().map(|(&p, &b)| (p, b)).collect();
            let a_pages = self.acc.segment_pages(i);
            if a_pages != pages {
                return Err(format!("segment {i}: pages {a_pages:?}, model {pages:?}"));
            }
            let nyr: Vec<PageId> = m.not_yet_replaced.iter().copied().collect();
            let a_nyr = self.acc.segment_not_yet_replaced(i);
            if a_nyr != nyr {
                return Err(format!(
                    "segment {i}: not yet replaced {a_nyr:?}, model {nyr:?}"
                ));
            }
            let sum: u64 = m.present.values().sum();
            if sum != m.live_bytes {
                return Err(format!(
                    "model segment {i}: live bytes {} but pages sum to {sum}",
                    m.live_bytes
                ));
            }
            match info {
                Some(a) => {
                    let (a_fig, m_fig) = (
                        (
                            a.live_pages,
                            a.not_yet_replaced,
                            a.removed_pages,
                            a.live_bytes,
                            a.to_clean,
                        ),
                        (
                            m.present.len(),
                            m.not_yet_replaced.len(),
                            m.removed,
                            m.live_bytes,
                            state(&m) == SegmentState::Draining,
                        ),
                    );
                    if a_fig != m_fig {
                        return Err(format!(
                            "segment {i}: (live pages, not yet replaced, removed, live bytes, to clean) {a_fig:?}, model {m_fig:?}"
                        ));
                    }
                }
                None if state(&m) != SegmentState::Vacant || !m.present.is_empty() => {
                    return Err(format!(
                        "segment {i}: beyond the accountant's table, model {m:?}"
                    ));
                }
                None => {}
            }
        }
        let a = (
            stats.tip_segments,
            self.acc.tip(),
            self.acc.stable_lsn(),
            stats.bytes_truncated,
        );
        let m = (
            self.model.tip,
            self.model.tip as u64 * self.ss,
            self.model.stable,
            self.model.bytes_truncated,
        );
        if a != m {
            return Err(format!(
                "(tip, tip bytes, stable lsn, bytes truncated) {a:?}, model {m:?}"
            ));
        }
        let epoch_waiting = (0..self.model.segments.len())
            .filter(|&i| waiting(&self.model.segment(i)) == Some(Waiting::Epoch))
            .count();
        if stats.freeing_on_epoch != epoch_waiting {
            return Err(format!(
                "{} segments wait on the epoch, model {epoch_waiting}",
                stats.freeing_on_epoch
            ));
        }
        for &b in &self.blobs {
            let removed = self.model.removed_blobs.contains(&b);
            if self.storage.has_blob(b) == removed {
                return Err(format!(
                    "blob {b}: exists {} in storage, model removed it: {removed}",
                    self.storage.has_blob(b)
                ));
            }
        }
        Ok(())
    }

    /// The end of a case: resume, close every head, stabilize everything,
    /// push the frees through, roll over once more.
    fn finish(&mut self) -> Result<(), String> {
        self.log.push("(finish)".into());
        while self.pauses > 0 {
            self.pauses -= 1;
            self.both("resume", |a| a.resume_rewriting(), |m| m.resume_rewriting())?;
        }
        self.open.clear();
        // Everything handed out: stabilizing past it is a caller mistake.
        let end = self.model.handed_out as Lsn * self.ss as Lsn;
        self.stabilize(end)?;
        for _ in 0..3 {
            self.acc.flush();
        }
        self.after_step()?;
        let lsn = self.next_lsn + self.ss as Lsn;
        self.next_lsn = lsn + self.ss as Lsn;
        self.next(lsn)?;
        self.after_step()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn run(config: Config, ops: &[Op]) -> Result<(), String> {
    bump(&CASES);
    if config.space_target().is_some() {
        bump(&TARGET_CASES);
    }
    let mut h = Harness::new(config);
    let result = ops
        .iter()
        .try_for_each(|op| h.step(op))
        .and_then(|()| h.finish());
    result.map_err(|e| format!("{e}\nafter ops:\n{}", h.log.join("\n")))
}

/// The property: every generated sequence runs the same on the accountant
/// and the model. Then the sequences must have reached every mechanism (so
/// the test cannot silently stop exercising reuse, truncation, draining,
/// ...); that is checked only when enough cases ran.
#[test]
fn accountant_refines_the_model() {
    let proptest_config = ProptestConfig {
        cases: cases(),
        // Failing cases are saved beside this file, as `proptest!` does.
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let strategy = cases_strategy();
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config.clone());
    let result = runner.run(&strategy, |(config, ops): (Config, Vec<Op>)| {
        run(config, &ops).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let counts = [
        ("reuses", &REUSES),
        ("truncations", &TRUNCATIONS),
        ("draining segments seen", &DRAINED),
        ("epoch landings", &LANDED),
        ("relocations", &RELOCATED),
        ("blob removals", &BLOBS_REMOVED),
        ("caller mistakes", &MISTAKES),
        ("replaces from a reused segment (stale)", &STALE),
        ("replace-from-free mistakes", &FROM_FREE),
        ("links into a segment a stabilize covered", &COVERED),
        ("tunings applied", &TUNED),
        ("stabilizes meeting the drain-top condition", &DRAIN_TOP),
        ("drains by a ranked policy", &RANKED_DRAINS),
        (
            "drains by an idle store over its space target",
            &IDLE_DRAINS,
        ),
        ("cases with a space target", &TARGET_CASES),
    ]
    .map(|(what, c)| (what, c.load(Ordering::Relaxed)));
    eprintln!(
        "differential coverage over {} cases: {counts:?}",
        CASES.load(Ordering::Relaxed)
    );
    if proptest_config.cases >= 500 {
        for (what, n) in counts {
            assert!(n > 0, "no {what} in the generated sequences");
        }
    }
}

// ---- the model alone --------------------------------------------------------

fn model(ss: u64) -> Model {
    Model::new(
        Config::builder()
            .segment_size(ss)
            .allow_small_segments(true)
            .build()
            .unwrap(),
    )
}

/// The crate docs' example, on the model.
#[test]
fn model_doc_example() {
    let mut m = model(4096);
    m.next_with(0, 0, 0).unwrap();
    m.mark_link(1, 10, DiskPtr::Inline(10), 100).unwrap();
    m.mark_link(2, 200, DiskPtr::Inline(200), 100).unwrap();
    m.next_with(4096, 4096, 0).unwrap();
    m.mark_replace(1, 4096, &[DiskPtr::Inline(10)], DiskPtr::Inline(4096), 100)
        .unwrap();
    m.stabilize(8192).unwrap();
    assert_eq!(m.stable, 4096);
    let first = m.segment(0);
    assert_eq!(first.present.len(), 1);
    assert_eq!(first.removed, 1);
    assert_eq!(first.live_bytes, 100);
    assert_eq!(state(&first), SegmentState::Draining);
    assert_eq!(state(&m.segment(1)), SegmentState::Draining);
    m.check_clean(u64::MAX, Some(1)).unwrap();
    m.check_clean(u64::MAX, Some(2)).unwrap();
    m.check_clean(1, Some(2)).unwrap();
    m.check_clean(1, None).unwrap();
    assert!(m.check_clean(u64::MAX, None).is_err());
    assert!(m.check_clean(1, Some(1)).is_err());
    assert!(m.check_clean(u64::MAX, Some(3)).is_err());
}

/// Errors come in the accountant's order, with its fields, and change
/// nothing.
#[test]
fn model_mistakes_in_order_and_change_nothing() {
    let mut m = model(64);
    m.next_with(0, 0, 0).unwrap();
    m.next_with(64, 64, 0).unwrap();
    m.mark_link(1, 65, DiskPtr::Inline(65), 10).unwrap();
    let before = format!("{m:?}");
    let dbg = |r: Result<(), Error>| format!("{:?}", r.unwrap_err());
    assert_eq!(dbg(m.check_next(-64)), "NegativeLsn { lsn: -64 }");
    assert_eq!(
        dbg(m.check_next(65)),
        "UnalignedLsn { lsn: 65, segment_size: 64 }"
    );
    assert_eq!(dbg(m.check_next(64)), "LsnInUse { lsn: 64 }");
    assert!(matches!(
        m.check_next(i64::MAX - 63),
        Err(Error::LsnOutOfRange { .. })
    ));
    // Negative before beyond-tip; beyond-tip before anything about the
    // segment.
    assert_eq!(
        dbg(m.mark_link(1, -1, DiskPtr::Inline(999), 1)),
        "NegativeLsn { lsn: -1 }"
    );
    assert_eq!(
        dbg(m.mark_link(1, 0, DiskPtr::Inline(128), 1)),
        "LidBeyondTip { lid: 128, tip: 128 }"
    );
    // Stale (the segment's lsn is above the write's) before not-active.
    assert_eq!(
        dbg(m.mark_link(1, 3, DiskPtr::Inline(64), 1)),
        "StaleSegment { lid: 64, lsn: 3, segment_lsn: 64 }"
    );
    assert_eq!(
        dbg(m.mark_link(1, 130, DiskPtr::Inline(64), 1)),
        "LsnMismatch { lid: 64, lsn: 130, segment_lsn: 64 }"
    );
    // The new pointer is checked before the old ones; old ones in order.
    assert_eq!(
        dbg(m.mark_replace(
            1,
            70,
            &[DiskPtr::Inline(500), DiskPtr::Inline(65)],
            DiskPtr::Inline(0),
            1
        )),
        "LsnMismatch { lid: 0, lsn: 70, segment_lsn: 0 }"
    );
    assert_eq!(
        dbg(m.mark_replace(
            1,
            70,
            &[DiskPtr::Inline(500), DiskPtr::Inline(5)],
            DiskPtr::Inline(70),
            1
        )),
        "LidBeyondTip { lid: 500, tip: 128 }"
    );
    // An old segment with a higher lsn than the replacement's.
    assert_eq!(
        dbg(m.mark_replace(1, 10, &[DiskPtr::Inline(65)], DiskPtr::Inline(10), 1)),
        "StaleSegment { lid: 64, lsn: 10, segment_lsn: 64 }"
    );
    assert_eq!(dbg(m.stabilize(-5)), "NegativeLsn { lsn: -5 }");
    assert_eq!(dbg(m.resume_rewriting()), "NotPaused");
    assert!(matches!(
        m.segment_snapshot_iter_from(0),
        Err(Error::NotPaused)
    ));
    assert_eq!(format!("{m:?}"), before, "a mistake changed the model");

    // Seal both; segment 0 (empty) frees, then replacing from it fails.
    m.stabilize(128).unwrap();
    assert_eq!(state(&m.segment(0)), SegmentState::Freeing);
    assert_eq!(waiting(&m.segment(0)), Some(Waiting::Epoch));
    m.next_with(128, 128, 0).unwrap();
    assert_eq!(
        dbg(m.mark_replace(1, 130, &[DiskPtr::Inline(0)], DiskPtr::Inline(130), 1)),
        "ReplacedFromFreeSegment { pid: 1, lid: 0, state: Freeing }"
    );
    assert_eq!(
        dbg(m.check_next(64)),
        "LsnAlreadyStable { lsn: 64, stable: 64 }"
    );
    // A write into sealed segment 1 (lsn 64): the stabilize covered it.
    assert_eq!(
        dbg(m.mark_link(2, 70, DiskPtr::Inline(70), 1)),
        "SegmentSealed { lid: 64, lsn: 70, segment_lsn: 64, stable_lsn: 64 }"
    );
    // Into segment 0, sealed and freed since: still covered.
    assert_eq!(
        dbg(m.mark_link(2, 5, DiskPtr::Inline(5), 1)),
        "SegmentSealed { lid: 0, lsn: 5, segment_lsn: 0, stable_lsn: 64 }"
    );
}

/// A free waits for the stable lsn to pass the segment's lsn, then for the
/// epoch; only an epoch-waiting segment may land.
#[test]
fn model_frees_wait_for_the_stable_lsn_then_the_epoch() {
    let mut m = model(64);
    m.next_with(0, 0, 0).unwrap();
    m.mark_link(1, 0, DiskPtr::Inline(0), 10).unwrap();
    m.next_with(64, 64, 0).unwrap();
    m.mark_replace(1, 64, &[DiskPtr::Inline(0)], DiskPtr::Inline(64), 10)
        .unwrap();
    m.next_with(128, 128, 0).unwrap();
    // Stable lsn 0: segment 0 seals but empties only when segment 1 seals.
    m.stabilize(64).unwrap();
    assert_eq!(state(&m.segment(0)), SegmentState::Draining);
    // Stable lsn 64: segment 1 seals, applies the replacement; segment 0
    // (lsn 0 < 64) goes straight to the epoch.
    m.stabilize(128).unwrap();
    assert_eq!(waiting(&m.segment(0)), Some(Waiting::Epoch));
    assert_eq!(m.segment(0).removed, 1);
    // Segment 2 is empty and frees when it seals; its lsn 128 is not below
    // the new stable lsn 128, so it waits for the stable lsn.
    m.stabilize(192).unwrap();
    assert_eq!(state(&m.segment(2)), SegmentState::Freeing);
    assert_eq!(waiting(&m.segment(2)), Some(Waiting::StableLsn));
    assert!(m.land(2).is_err(), "landed before the stable lsn passed it");
    assert!(m.land(1).is_err(), "landed a segment that is not freeing");
    // Nothing is Free: extending is allowed, and so is reusing segment 0
    // (its deferral may land during the call); segment 2 is not.
    let choices = m.next_choices(m.tip);
    assert_eq!(choices.1, Some(3));
    assert_eq!(choices.0.iter().copied().collect::<Vec<_>>(), vec![0]);
    let mut other = m.clone();
    assert!(other.next_with(192, 128, 0).is_err());
    other.next_with(192, 0, 0).unwrap();
    assert_eq!(other.segment(0).generation, 2);
    // Landed: extending while a segment is Free is not allowed.
    m.land(0).unwrap();
    assert!(m.next_with(192, 192, 0).is_err());
    m.next_with(192, 0, 0).unwrap();
    assert_eq!(state(&m.segment(0)), SegmentState::Active);
    assert_eq!(m.segment(0).lsn, Some(192));
    // The stable lsn passes segment 2: its epoch deferral starts (and
    // segment 0, empty, now waits for the stable lsn in turn).
    m.stabilize(256).unwrap();
    assert_eq!(waiting(&m.segment(2)), Some(Waiting::Epoch));
    assert_eq!(waiting(&m.segment(0)), Some(Waiting::StableLsn));
    m.land(2).unwrap();
}

/// `next` shrinks the file over every Free segment at the top or not at
/// all, never while paused; truncated segments lose their lsn and keep
/// their generation.
#[test]
fn model_shrinks_all_or_nothing_and_never_while_paused() {
    let mut m = model(64);
    for i in 0..3 {
        m.next_with(i * 64, i as u64 * 64, 0).unwrap();
    }
    // Another head holds lsn 192 (its segment is not part of this story):
    // without it, stabilizing past lsn 192 would be a caller mistake.
    m.handed_out = 4;
    m.stabilize(256).unwrap();
    for i in 0..3 {
        assert_eq!(waiting(&m.segment(i)), Some(Waiting::Epoch), "segment {i}");
    }
    m.land(1).unwrap();
    m.land(2).unwrap();
    assert_eq!(m.shrink_target(), 1);
    let mut paused = m.clone();
    paused.pause_rewriting();
    assert_eq!(paused.shrink_target(), 3);
    assert!(
        paused.next_with(256, 64, 128).is_err(),
        "shrank while paused"
    );
    assert!(paused.next_with(256, 64, 0).is_err(), "reused while paused");
    paused.next_with(256, 192, 0).unwrap();
    assert_eq!(
        paused.segment_snapshot_iter_from(-5).unwrap(),
        vec![(0, 0), (64, 64), (128, 128), (256, 192)]
    );
    assert_eq!(
        paused.segment_snapshot_iter_from(100).unwrap(),
        vec![(64, 64), (128, 128), (256, 192)]
    );
    paused.resume_rewriting().unwrap();
    assert!(paused.resume_rewriting().is_err());
    // Shrinking by one of the two free top segments is not allowed.
    assert!(m.clone().next_with(256, 0, 64).is_err());
    // No shrink (a truncation still running): reuse a Free segment.
    m.clone().next_with(256, 64, 0).unwrap();
    // Shrink by both: segment 0 may land during the call and be reused, or
    // the file extends at the new tip.
    let mut shrunk = m.clone();
    shrunk.next_with(256, 64, 128).unwrap();
    assert_eq!(shrunk.tip, 2);
    assert_eq!(shrunk.bytes_truncated, 128);
    assert_eq!(state(&shrunk.segment(2)), SegmentState::Vacant);
    assert_eq!(shrunk.segment(2).lsn, None);
    assert_eq!(shrunk.segment(2).generation, 1);
    assert_eq!(shrunk.segment(1).generation, 2);
    m.next_with(256, 0, 128).unwrap();
    assert_eq!(m.tip, 1);
}

/// A replacement recorded against an earlier generation is void; only the
/// first of several old pointers into one segment counts; blob removals
/// follow the re-link rule.
#[test]
fn model_replacements_and_blobs() {
    let mut m = model(64);
    m.next_with(0, 0, 0).unwrap();
    m.mark_link(1, 1, DiskPtr::Blob { lid: 1, blob: 7 }, 10)
        .unwrap();
    m.mark_link(2, 2, DiskPtr::Inline(2), 10).unwrap();
    m.mark_link(2, 3, DiskPtr::Inline(3), 10).unwrap();
    m.next_with(64, 64, 0).unwrap();
    // Re-link the same single blob: not removed.
    m.mark_replace(
        1,
        64,
        &[DiskPtr::Blob { lid: 1, blob: 7 }],
        DiskPtr::Blob { lid: 64, blob: 7 },
        10,
    )
    .unwrap();
    m.mark_replace(
        2,
        65,
        &[DiskPtr::Inline(2), DiskPtr::Inline(3)],
        DiskPtr::Inline(65),
        10,
    )
    .unwrap();
    assert_eq!(m.segment(1).deferred.len(), 2);
    assert!(m.segment(1).blobs.is_empty());
    assert!(m.segment(0).not_yet_replaced.is_empty());
    assert_eq!(m.segment(0).present.len(), 2, "applied only once stable");
    // A blob moved to an inline image: removed when segment 1 seals.
    m.mark_replace(
        1,
        66,
        &[DiskPtr::Blob { lid: 64, blob: 7 }],
        DiskPtr::Inline(66),
        10,
    )
    .unwrap();
    m.stabilize(128).unwrap();
    assert_eq!(m.removed_blobs, &[7]);
    assert_eq!(m.segment(0).removed, 2);
    assert_eq!(m.segment(0).live_bytes, 0);
    assert_eq!(m.segment(1).live_bytes, 30);
    assert_eq!(m.segment(1).present.get(&1), Some(&20));
}

/// Linear mode: permanently paused, resume is always Ok, nothing is ever
/// reused or drained (empty segments still free).
#[test]
fn model_linear_mode() {
    let mut m = Model::new(
        Config::builder()
            .segment_size(64)
            .allow_small_segments(true)
            .mode(Mode::Linear)
            .build()
            .unwrap(),
    );
    assert!(m.paused > 0);
    m.resume_rewriting().unwrap();
    m.resume_rewriting().unwrap();
    assert!(m.paused > 0);
    m.next_with(0, 0, 0).unwrap();
    m.mark_link(1, 0, DiskPtr::Inline(0), 1).unwrap();
    m.next_with(64, 64, 0).unwrap();
    // As if another head held lsn 128: stabilizing past it is allowed.
    m.handed_out = 3;
    m.stabilize(192).unwrap();
    assert_eq!(state(&m.segment(0)), SegmentState::Inactive);
    assert_eq!(state(&m.segment(1)), SegmentState::Freeing);
    m.land(1).unwrap();
    assert!(m.next_with(192, 64, 0).is_err());
    m.next_with(192, 128, 0).unwrap();
    assert_eq!(
        m.segment_snapshot_iter_from(64).unwrap(),
        vec![(64, 64), (192, 128)]
    );
}

/// A case the generator found: the model once passed the bytes sealed
/// where the number of segments sealed belonged (pacing of target drains).
#[test]
fn greedy_under_a_space_target_paces_its_drains() {
    let config = Config::builder()
        .segment_size(128)
        .allow_small_segments(true)
        .cleanup_threshold(5)
        .skew(0)
        .policy(policy::Greedy)
        .space_target(Some(1.25))
        .build()
        .unwrap();
    let ops = vec![
        Op::Next { skip: false },
        Op::Next { skip: false },
        Op::Next { skip: false },
        Op::Link {
            pid: 0,
            head: 0,
            size: 32,
        },
        Op::Close { head: 0 },
        Op::Close { head: 0 },
        Op::Bulk {
            first: 1,
            count: 16,
            head: 0,
            replace: false,
        },
        Op::Bulk {
            first: 0,
            count: 33,
            head: 0,
            replace: false,
        },
        Op::Close { head: 0 },
        Op::Clean {
            ignore: 0,
            relocate: false,
            head: 0,
        },
        Op::Stabilize { back: 1, within: 0 },
        Op::Link {
            pid: 0,
            head: 0,
            size: 1,
        },
    ];
    run(config, &ops).unwrap();
}

/// `clean` goes round-robin over each Draining segment's pages, so a store
/// that holds a suggested page (buffered, or still being relocated) is
/// offered every other page before that one again. The pick used to be a
/// global counter modulo the list's length; with the cursor alternating
/// between two segments of four pages, each segment only ever saw two of
/// its positions, and a store declining buffered pages stalled.
#[test]
fn clean_offers_every_page_before_repeating_one() {
    const SS: u64 = 4096;
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
    // Two sealed segments of four 100-byte pages each: too few pages to
    // keep, so the specification's rule drains both.
    for (segment, lsn) in [(0u64, 0 as Lsn), (1, SS as Lsn)] {
        let lid = acc.next(lsn).unwrap();
        for i in 0..4u64 {
            let pid = segment * 4 + i;
            acc.mark_link(
                pid,
                lsn + (i * 100) as Lsn,
                DiskPtr::Inline(lid + i * 100),
                100,
            )
            .unwrap();
        }
    }
    acc.stabilize(2 * SS as Lsn).unwrap();
    assert_eq!(acc.stats().draining, 2);
    for round in 0..3 {
        let mut offered: Vec<u64> = (0..8)
            .filter_map(|_| acc.clean(Skip::Nothing).map(|r| r.pid))
            .collect();
        offered.sort_unstable();
        assert_eq!(offered, (0..8).collect::<Vec<_>>(), "round {round}");
    }
}
