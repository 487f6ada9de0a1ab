//! Crash simulation: a small store (`examples/store/mod.rs`) on the
//! fault-injecting storage runs a seeded random workload (puts, deletes,
//! relocations through `clean`, flushes that stabilize with the
//! header-vouched lsn), crashes at a random write or sync (torn writes,
//! unsynced writes lost or kept in any order), recovers through the
//! scanner and `Accountant::from_snapshot`, and checks:
//!
//! - every page's latest state that was stable before the crash (or a later
//!   one) is read back intact, and a deleted page stays deleted;
//! - nothing is read back torn;
//! - `audit` passes;
//! - scanning the same file twice gives the same snapshot, and no two valid
//!   segment headers carry one lsn;
//!
//! then continues on the same file, so it ages through many reuses of its
//! segments; some crashes hit recovery's own writes.
//!
//! ```text
//! cargo run --release --example crashsim -- --seed S --cycles N [--heads H]
//! ```
//!
//! With `--heads H` above 1 the store writes through H heads (H − 1 user
//! streams and one relocation stream) whose segments interleave in the
//! log.

mod store;

use std::collections::HashMap;
use std::sync::Arc;

use segment_accountant::fault::FaultStorage;
use segment_accountant::scan;
use segment_accountant::{Config, Lsn, PageId, PageState, Storage};
use store::{read_version, Store};

const SEGMENT_SIZE: u64 = 1024;
/// Pages: a small, hot set, so segments empty (and are reused) within one
/// flush interval, which is where an early stabilize would lose data.
const PAGES: u64 = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One write to a page: its lsn and the state it left (None: deleted).
type History = HashMap<PageId, Vec<(Lsn, Option<u64>)>>;

#[derive(Default)]
struct Tally {
    cycles: u64,
    lost: u64,
    torn_reads: u64,
    audit_failures: u64,
    nondeterministic_scans: u64,
    recovery_crashes: u64,
    reused_segments: u64,
    ops: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("crashsim: {msg}");
    eprintln!("usage: crashsim [--seed S] [--cycles N] [--heads H]");
    std::process::exit(2);
}

fn main() {
    let mut seed = 1u64;
    let mut cycles = 200u64;
    let mut heads = 1u8;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage("bad --seed")),
            "--cycles" => cycles = value().parse().unwrap_or_else(|_| usage("bad --cycles")),
            "--heads" => {
                heads = value().parse().unwrap_or_else(|_| usage("bad --heads"));
                if !(1..=8).contains(&heads) {
                    usage("--heads from 1 to 8");
                }
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    // One head: everything in one stream. More: one relocation stream,
    // the rest user streams (placed by the lifetime of what they replace).
    let streams = if heads == 1 { (1, 0) } else { (heads - 1, 1) };
    let config = Config::builder()
        .segment_size(SEGMENT_SIZE)
        .allow_small_segments(true)
        .streams(streams.0, streams.1)
        .build()
        .expect("config");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tally = Tally::default();
    let mut image: Vec<u8> = Vec::new();
    let mut history: History = HashMap::new();
    let mut stable_at_crash: Lsn = -1;
    let mut version = 0u64;

    while tally.cycles < cycles {
        tally.cycles += 1;
        // Recovery, possibly crashing during its own writes.
        let storage = Arc::new(FaultStorage::restart(image.clone(), rng.next()));
        if rng.below(4) == 0 {
            storage.crash_after(rng.below(3));
        }
        let dyn_storage: Arc<dyn Storage> = storage.clone();
        let first = scan::scan(&*dyn_storage, SEGMENT_SIZE);
        let second = scan::scan(&*dyn_storage, SEGMENT_SIZE);
        match (&first, &second) {
            (Ok(a), Ok(b)) if a.snapshot == b.snapshot && a.resume_lsn == b.resume_lsn => {}
            _ => {
                tally.nondeterministic_scans += 1;
                eprintln!(
                    "cycle {}: scan failed or differs: {:?}",
                    tally.cycles,
                    first.as_ref().err()
                );
            }
        }
        let (mut store, found) = match Store::recover(config.clone(), dyn_storage.clone()) {
            Ok(ok) => ok,
            Err(e) if storage.crashed() => {
                // A crash during recovery's own writes: recover again.
                tally.recovery_crashes += 1;
                let _ = e;
                image = storage.crash_image();
                continue;
            }
            Err(e) => {
                eprintln!("cycle {}: recovery failed: {e}", tally.cycles);
                tally.lost += 1;
                image = storage.crash_image();
                continue;
            }
        };
        // Idempotent: after recovery's own writes (invalidated tail), a
        // second recovery finds the same log.
        match scan::scan(&*dyn_storage, SEGMENT_SIZE) {
            Ok(again) if again.snapshot == found.snapshot && again.discarded.is_empty() => {}
            other => {
                tally.nondeterministic_scans += 1;
                eprintln!(
                    "cycle {}: rescan after recovery differs: {:?}",
                    tally.cycles,
                    other.err()
                );
            }
        }
        // Check what survived against what was stable.
        for (pid, ops) in &history {
            let stable_from = ops.iter().rposition(|&(lsn, _)| lsn < stable_at_crash);
            let recovered = match found.snapshot.pages.get(pid) {
                None => None,
                Some(PageState::Freed(_)) => Some(None),
                Some(PageState::Present(_)) => Some(Some(store.pages[pid].version)),
            };
            let allowed = match stable_from {
                Some(k) => ops[k..].iter().any(|&(_, s)| Some(s) == recovered),
                None => recovered.is_none() || ops.iter().any(|&(_, s)| Some(s) == recovered),
            };
            if !allowed {
                tally.lost += 1;
                eprintln!(
                    "cycle {}: page {pid} recovered as {recovered:?}; stable history {:?} (stable lsn {stable_at_crash})",
                    tally.cycles,
                    stable_from.map(|k| &ops[k..])
                );
            }
        }
        for (&pid, page) in &store.pages {
            if !page.deleted {
                // Every fragment (the image and its deltas) reads back.
                let fragments_ok = page.ptrs.iter().all(|&ptr| {
                    matches!(
                        read_version(&*dyn_storage, SEGMENT_SIZE, pid, ptr),
                        Ok(Some(_))
                    )
                });
                if !fragments_ok {
                    tally.torn_reads += 1;
                }
                let ok = read_version(
                    &*dyn_storage,
                    SEGMENT_SIZE,
                    pid,
                    *page.ptrs.last().expect("ptr"),
                )
                .ok()
                .flatten()
                    == Some(page.version);
                if !ok {
                    tally.torn_reads += 1;
                }
            }
        }
        if let Err(e) = store.acc.audit() {
            tally.audit_failures += 1;
            eprintln!("cycle {}: {e}", tally.cycles);
        }
        // The recovered state is the base of the next cycle's history:
        // it is on disk and must not be lost either.
        history = store
            .pages
            .iter()
            .map(|(&pid, p)| (pid, vec![(-1, (!p.deleted).then_some(p.version))]))
            .collect();

        // Run until the injected crash.
        storage.crash_after(1 + rng.below(400));
        let tip_before = store.acc.tip();
        loop {
            let pid = rng.below(PAGES);
            // Syncs are rare (one op in 200 on average), so several
            // segments are written, emptied and reused between them.
            let result = match rng.below(1000) {
                0..=449 => {
                    version += 1;
                    store.put(pid, version).map(|lsn| {
                        history.entry(pid).or_default().push((lsn, Some(version)));
                    })
                }
                450..=549 => {
                    version += 1;
                    store.delta(pid, version).map(|lsn| {
                        if let Some(lsn) = lsn {
                            history.entry(pid).or_default().push((lsn, Some(version)));
                        }
                    })
                }
                550..=649 => store.delete(pid).map(|lsn| {
                    if let Some(lsn) = lsn {
                        history.entry(pid).or_default().push((lsn, None));
                    }
                }),
                650..=994 => store.relocate(pid).map(|moved| {
                    if let Some((p, lsn)) = moved {
                        let page = &store.pages[&p];
                        let state = (!page.deleted).then_some(page.version);
                        history.entry(p).or_default().push((lsn, state));
                    }
                }),
                _ => store.flush(),
            };
            tally.ops += 1;
            if result.is_err() {
                break;
            }
        }
        let _ = tip_before;
        tally.reused_segments += store.reuses;
        // What the accountant was told is stable (its stabilized segment's
        // end): a store that stabilized too early is caught here.
        stable_at_crash = match store.acc.stable_lsn() {
            -1 => -1,
            lsn => lsn + SEGMENT_SIZE as Lsn,
        };
        image = storage.crash_image();
    }
    println!(
        "cycles={} lost={} torn_reads={} audit_failures={}",
        tally.cycles, tally.lost, tally.torn_reads, tally.audit_failures
    );
    eprintln!(
        "ops={} recovery_crashes={} nondeterministic_scans={} segment_reuses={}",
        tally.ops, tally.recovery_crashes, tally.nondeterministic_scans, tally.reused_segments
    );
    if tally.lost + tally.torn_reads + tally.audit_failures + tally.nondeterministic_scans > 0 {
        std::process::exit(1);
    }
}
