//! Crash simulation: the concurrent store (`examples/store/`) on the
//! fault-injecting storage runs a seeded random workload (puts, deltas,
//! deletes, relocations through `clean_placed`, group commits that
//! stabilize with the lsn a durable header or checkpoint vouches for),
//! crashes at a random write or sync (torn writes, unsynced writes lost
//! or kept in any order), recovers through the scanner and
//! `Accountant::recover`, and checks:
//!
//! - every page's latest state acknowledged before the crash (its write's
//!   lsn below what the store had passed to `stabilize`), or a later one,
//!   is read back intact, and a deleted page stays deleted;
//! - nothing is read back torn: every fragment of every page reads back
//!   alone by its pointer, as that page's message at that lsn;
//! - `audit` passes;
//! - scanning the same file twice gives the same snapshot, and a scan
//!   after recovery's own writes finds the same log with nothing left to
//!   discard;
//!
//! then continues on the same file, so it ages through many reuses of its
//! segments; some crashes hit recovery's own writes.
//!
//! ```text
//! cargo run --release --example crashsim -- --seed S --cycles N [--heads H] [--threads T]
//!                                            [--unsafe-raw-stable]
//! ```
//!
//! Without `--threads` one thread runs the workload and calls the flusher
//! itself (deterministic for a seed). With `--threads T`, T writer threads,
//! a background flusher and a background cleaner run at once until the
//! storage crashes under them. With `--heads H` above 1 the store writes
//! through H heads (H − 1 user streams and one relocation stream) whose
//! segments interleave in the log. `--unsafe-raw-stable` makes the store
//! stabilize with the raw end of what it synced instead of a vouched lsn:
//! it loses acknowledged writes, which shows the checks have teeth.

mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segment_accountant::fault::FaultStorage;
use segment_accountant::scan;
use segment_accountant::{Config, LogFile, Lsn, PageId};
use store::{check_payload, payload, Background, Options, Relocated, Store};

const SEGMENT_SIZE: u64 = 1024;
/// Pages: a small, hot set, so segments empty (and are reused) within one
/// flush interval, which is where an early stabilize would lose data.
const PAGES: u64 = 40;
/// Calls one writer makes in one threaded cycle at most: the crash usually
/// comes long before; if it does not, the cycle ends here rather than after
/// a fixed time, so the log a cycle adds does not depend on how fast the
/// machine is (a fast machine writing for seconds grew the image to
/// hundreds of megabytes and slowed every later scan).
const WRITES_PER_CYCLE: u64 = 4_000;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
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
    segments_rolled: u64,
    checkpoints: u64,
    ops: u64,
    forced_crashes: u64,
}

struct Args {
    seed: u64,
    cycles: u64,
    heads: u8,
    threads: usize,
    unsafe_raw_stable: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("crashsim: {msg}");
    eprintln!(
        "usage: crashsim [--seed S] [--cycles N] [--heads H] [--threads T] [--unsafe-raw-stable]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        seed: 1,
        cycles: 200,
        heads: 1,
        threads: 0,
        unsafe_raw_stable: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seed" => a.seed = value().parse().unwrap_or_else(|_| usage("bad --seed")),
            "--cycles" => a.cycles = value().parse().unwrap_or_else(|_| usage("bad --cycles")),
            "--heads" => {
                a.heads = value().parse().unwrap_or_else(|_| usage("bad --heads"));
                if !(1..=8).contains(&a.heads) {
                    usage("--heads from 1 to 8");
                }
            }
            "--threads" => {
                a.threads = value().parse().unwrap_or_else(|_| usage("bad --threads"));
                if !(1..=64).contains(&a.threads) {
                    usage("--threads from 1 to 64");
                }
            }
            "--unsafe-raw-stable" => a.unsafe_raw_stable = true,
            other => usage(&format!("unknown option {other}")),
        }
    }
    a
}

/// The state recovery left for `pid`: None (never written), Some(None)
/// (deleted), Some(Some(version)); and whether every fragment read back
/// whole.
fn recovered_state(store: &Store, pid: PageId) -> (Option<Option<u64>>, bool) {
    let Some(page) = store.page(pid) else {
        return (None, true);
    };
    if page.deleted {
        return (Some(None), true);
    }
    let mut intact = true;
    let mut version = None;
    for (i, &frag) in page.frags.iter().enumerate() {
        match store
            .read_frag(pid, frag)
            .ok()
            .and_then(|d| check_payload(pid, &d))
        {
            Some(v) if i + 1 == page.frags.len() => version = Some(v),
            Some(_) => {}
            None => intact = false,
        }
    }
    (version.map(Some), intact && version.is_some())
}

fn main() {
    let args = parse();
    // One head: everything in one stream. More: one relocation stream,
    // the rest user streams (placed by the lifetime of what they replace).
    let streams = if args.heads == 1 {
        (1, 0)
    } else {
        (args.heads - 1, 1)
    };
    let config = Config::builder()
        .segment_size(SEGMENT_SIZE)
        .allow_small_segments(true)
        .streams(streams.0, streams.1)
        .build()
        .expect("config");
    let options = Options {
        unsafe_raw_stable: args.unsafe_raw_stable,
        background_flusher: args.threads > 0,
        ..Options::default()
    };
    let mut rng = Rng::new(args.seed);
    let mut tally = Tally::default();
    let mut image: Vec<u8> = Vec::new();
    let mut history: History = HashMap::new();
    let mut stable_at_crash: Lsn = -1;
    let version = Arc::new(AtomicU64::new(0));

    while tally.cycles < args.cycles {
        tally.cycles += 1;
        // Recovery, possibly crashing during its own writes.
        let storage = Arc::new(FaultStorage::restart(image.clone(), rng.next()));
        if rng.below(4) == 0 {
            storage.crash_after(rng.below(3));
        }
        let dyn_storage: Arc<dyn LogFile> = storage.clone();
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
        let (store, found) = match Store::recover(&config, dyn_storage.clone(), options.clone()) {
            Ok(ok) => ok,
            Err(_) if storage.crashed() => {
                // A crash during recovery's own writes: recover again.
                tally.recovery_crashes += 1;
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
        // Idempotent: after recovery's own writes (invalidated tail, padded
        // last segment), a second recovery finds the same log.
        match scan::scan(&*dyn_storage, SEGMENT_SIZE) {
            Ok(again)
                if again.snapshot == found.snapshot
                    && again.discarded.is_empty()
                    && again.open_tail.is_none() => {}
            other => {
                tally.nondeterministic_scans += 1;
                eprintln!(
                    "cycle {}: rescan after recovery differs: {:?}",
                    tally.cycles,
                    other.err()
                );
            }
        }
        // Check what survived against what was acknowledged.
        let mut states = HashMap::new();
        for (pid, _) in store.pages() {
            let (state, intact) = recovered_state(&store, pid);
            if !intact {
                tally.torn_reads += 1;
                eprintln!(
                    "cycle {}: page {pid} does not read back whole",
                    tally.cycles
                );
            }
            states.insert(pid, state);
        }
        for (pid, ops) in &history {
            let stable_from = ops.iter().rposition(|&(lsn, _)| lsn < stable_at_crash);
            let recovered = states.get(pid).copied().flatten();
            let allowed = match stable_from {
                Some(k) => ops[k..].iter().any(|&(_, s)| Some(s) == recovered),
                None => recovered.is_none() || ops.iter().any(|&(_, s)| Some(s) == recovered),
            };
            if !allowed {
                tally.lost += 1;
                eprintln!(
                    "cycle {}: page {pid} recovered as {recovered:?}; acknowledged history {:?} (vouched {stable_at_crash})",
                    tally.cycles,
                    stable_from.map(|k| &ops[k..])
                );
            }
        }
        if let Err(e) = store.acc.audit() {
            tally.audit_failures += 1;
            eprintln!("cycle {}: {e}", tally.cycles);
        }
        // The recovered state is the base of the next cycle's history: it
        // is on disk and must not be lost either.
        history = states
            .iter()
            .filter_map(|(&pid, &s)| Some((pid, vec![(-1, s?)])))
            .collect();

        // Run until the injected crash.
        let store = Arc::new(store);
        if args.threads == 0 {
            storage.crash_after(1 + rng.below(400));
            run_single(&store, &mut rng, &version, &mut history, &mut tally);
        } else {
            let crash_in = 1 + rng.below(60);
            let forced = run_threads(
                &store,
                &storage,
                crash_in,
                &args,
                &mut rng,
                &version,
                &mut history,
                &mut tally,
            );
            if forced {
                tally.forced_crashes += 1;
            }
        }
        for ops in history.values_mut() {
            ops.sort_by_key(|&(lsn, _)| lsn);
        }
        tally.segments_rolled += store.segments_rolled();
        tally.checkpoints += store.checkpoints();
        // What the store passed to `stabilize`: every write below it is
        // acknowledged. A store that stabilized too early is caught here.
        stable_at_crash = store.vouched();
        image = storage.crash_image();
    }
    println!(
        "cycles={} lost={} torn_reads={} audit_failures={}",
        tally.cycles, tally.lost, tally.torn_reads, tally.audit_failures
    );
    eprintln!(
        "ops={} recovery_crashes={} nondeterministic_scans={} segments_rolled={} checkpoints={} forced_crashes={}",
        tally.ops,
        tally.recovery_crashes,
        tally.nondeterministic_scans,
        tally.segments_rolled,
        tally.checkpoints,
        tally.forced_crashes
    );
    if tally.lost + tally.torn_reads + tally.audit_failures + tally.nondeterministic_scans > 0 {
        std::process::exit(1);
    }
}

/// One thread: the workload and the flusher interleaved, until an error.
fn run_single(
    store: &Store,
    rng: &mut Rng,
    version: &AtomicU64,
    history: &mut History,
    tally: &mut Tally,
) {
    loop {
        let pid = rng.below(PAGES);
        // Flushes are rare (one op in 200 on average), so several segments
        // are written, emptied and reused between them.
        let result = match rng.below(1000) {
            0..=449 => {
                let v = version.fetch_add(1, Ordering::Relaxed) + 1;
                store.put(pid, &payload(pid, v, 0)).map(|lsn| {
                    history.entry(pid).or_default().push((lsn, Some(v)));
                })
            }
            450..=549 => {
                let v = version.fetch_add(1, Ordering::Relaxed) + 1;
                store.delta(pid, &payload(pid, v, 24)).map(|lsn| {
                    if let Some(lsn) = lsn {
                        history.entry(pid).or_default().push((lsn, Some(v)));
                    }
                })
            }
            550..=649 => store.delete(pid).map(|lsn| {
                if let Some(lsn) = lsn {
                    history.entry(pid).or_default().push((lsn, None));
                }
            }),
            650..=994 => store
                .relocate(pid)
                .map(|moved| record_relocation(history, moved)),
            _ => store.flush().map(|_| ()),
        };
        tally.ops += 1;
        if result.is_err() {
            store.set_failed();
            return;
        }
    }
}

fn record_relocation(history: &mut History, moved: Relocated) {
    if let Relocated::Moved { pid, lsn, value } = moved {
        let state = value.map(|v| check_payload(pid, &v).expect("a relocated value"));
        history.entry(pid).or_default().push((lsn, state));
    }
}

/// T writers, a flusher and a cleaner at once, until the storage crashes
/// under them, `crash_in` writes or syncs after they all got going (or, as
/// a fallback, 2 s pass: then the crash is forced). Returns whether it was
/// forced.
#[allow(clippy::too_many_arguments)]
fn run_threads(
    store: &Arc<Store>,
    storage: &FaultStorage,
    crash_in: u64,
    args: &Args,
    rng: &mut Rng,
    version: &Arc<AtomicU64>,
    history: &mut History,
    tally: &mut Tally,
) -> bool {
    let background = Background::start(store, Duration::from_micros(100), 0);
    let writers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (store, version) = (store.clone(), version.clone());
            let mut rng = Rng::new(rng.next());
            std::thread::spawn(move || {
                let mut ops = Vec::new();
                let mut n = 0u64;
                loop {
                    let pid = rng.below(PAGES);
                    let result = match rng.below(100) {
                        0..=69 => {
                            let v = version.fetch_add(1, Ordering::Relaxed) + 1;
                            store
                                .put(pid, &payload(pid, v, 0))
                                .map(|lsn| ops.push((pid, lsn, Some(v))))
                        }
                        70..=84 => {
                            let v = version.fetch_add(1, Ordering::Relaxed) + 1;
                            store.delta(pid, &payload(pid, v, 24)).map(|lsn| {
                                if let Some(lsn) = lsn {
                                    ops.push((pid, lsn, Some(v)));
                                }
                            })
                        }
                        _ => store.delete(pid).map(|lsn| {
                            if let Some(lsn) = lsn {
                                ops.push((pid, lsn, None));
                            }
                        }),
                    };
                    n += 1;
                    if result.is_err() || n >= WRITES_PER_CYCLE {
                        return (ops, n);
                    }
                    if n % 64 == 0 {
                        // Let the flusher and cleaner in on a 2-core box.
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    // The cleaner: a thread of our own (not `Background`'s), so the lsns of
    // its relocations enter the history.
    let relocations = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut moved = Vec::new();
            loop {
                match store.relocate(u64::MAX) {
                    Ok(m @ Relocated::Moved { .. }) => moved.push(m),
                    Ok(_) => std::thread::sleep(Duration::from_micros(50)),
                    Err(_) => return moved,
                }
            }
        })
    };
    // Arm the crash once the writers are under way, so a cycle's log grows
    // past its first new segment (recovery's empty segments are reused only
    // once a new segment is stable: spec section 7, rule 4).
    std::thread::sleep(Duration::from_millis(2));
    storage.crash_after(crash_in);
    let started = Instant::now();
    let mut forced = false;
    while !store.failed() {
        // The writers' budget spent (or, as a last resort on a stalled
        // machine, a long wait): crash the cycle by hand.
        if writers.iter().all(|w| w.is_finished()) || started.elapsed() > Duration::from_secs(30) {
            store.set_failed();
            forced = true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for w in writers {
        let (ops, n) = w.join().expect("a writer panicked");
        tally.ops += n;
        for (pid, lsn, state) in ops {
            history.entry(pid).or_default().push((lsn, state));
        }
    }
    for m in relocations.join().expect("the relocator panicked") {
        tally.ops += 1;
        record_relocation(history, m);
    }
    let _ = background.stop();
    forced
}
