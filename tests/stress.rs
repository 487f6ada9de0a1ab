//! Multi-threaded stress: four threads act as a log store's writers for a
//! bounded time (`STRESS_SECONDS`, default 3). Each is a write head with
//! its own pages: it rolls segments with `next` (segment lsns interleaved
//! across heads from one logical counter), links deltas, replaces pages
//! with all their old pointers, frees pages with a free record, and
//! relocates the pages `clean` suggests; thread 0 also stabilizes below
//! the slowest head (the harness's contract: a head publishes its progress
//! only after every mark into its finished segment) and flushes.
//!
//! Checks: no lid is handed out by `next` while the harness still holds a
//! page fragment in it or while it is another head's open segment (so
//! never twice without a free in between); after joining, stabilizing
//! everything and flushing, `audit` passes and the accountant's live pages
//! and bytes equal the harness's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use segment_accountant::{Accountant, Collector, Config, DiskPtr, Lid, Lsn, MemStorage};

const THREADS: u64 = 4;
const SS: u64 = 512;
const PAGES: u64 = 300;

/// A fragment the harness placed: pointer, bytes, lsn.
type Fragment = (DiskPtr, u64, Lsn);

#[derive(Default)]
struct Counts {
    links: AtomicU64,
    replaces: AtomicU64,
    frees: AtomicU64,
    cleans: AtomicU64,
    relocations: AtomicU64,
    nexts: AtomicU64,
    reuses: AtomicU64,
    stabilizes: AtomicU64,
}

struct Shared {
    acc: Accountant,
    /// Each head's current segment number.
    progress: Vec<AtomicU64>,
    /// Each head's open segment lid (u64::MAX: none).
    open: Vec<AtomicU64>,
    /// Each head's pages: fragments (pointer, bytes).
    pages: Vec<Mutex<Vec<Vec<Fragment>>>>,
    /// Serializes the lid check against other heads' rolls.
    roll: Mutex<u64>,
    counts: Counts,
    stop: AtomicBool,
}

impl Shared {
    fn stable_bound(&self) -> Lsn {
        let min = self
            .progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap();
        (min * SS) as Lsn
    }

    /// `next` for head `t`, checking the lid is not in use.
    fn roll(&self, t: usize, segno: u64) -> Lid {
        let mut max_tip = self.roll.lock().unwrap();
        let lid = self.acc.next((segno * SS) as Lsn).expect("next");
        self.counts.nexts.fetch_add(1, Ordering::Relaxed);
        if lid < *max_tip {
            self.counts.reuses.fetch_add(1, Ordering::Relaxed);
        }
        *max_tip = (*max_tip).max(lid + SS);
        for (h, open) in self.open.iter().enumerate() {
            assert!(
                h == t || open.load(Ordering::Acquire) != lid,
                "lid {lid} handed out while it is head {h}'s open segment"
            );
        }
        for (h, pages) in self.pages.iter().enumerate() {
            let pages = pages.lock().unwrap();
            for (pid, frags) in pages.iter().enumerate() {
                for (ptr, _, _) in frags {
                    assert!(
                        ptr.lid() / SS != lid / SS,
                        "lid {lid} handed out while head {h}'s page {pid} has a fragment at {}",
                        ptr.lid()
                    );
                }
            }
        }
        self.open[t].store(lid, Ordering::Release);
        lid
    }
}

/// A page's fragments after a full rewrite at `ptr`: the new one, plus the
/// old ones in the same segment (the spec keeps counting those: that
/// buffer is not yet flushed, so they are not removed).
fn rewritten(
    old: &[(DiskPtr, u64, Lsn)],
    ptr: DiskPtr,
    size: u64,
    lsn: Lsn,
) -> Vec<(DiskPtr, u64, Lsn)> {
    let mut frags: Vec<_> = old
        .iter()
        .copied()
        .filter(|(p, _, _)| p.lid() / SS == ptr.lid() / SS)
        .collect();
    frags.push((ptr, size, lsn));
    frags
}

fn writer(shared: Arc<Shared>, t: usize, barrier: Arc<Barrier>) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((t as u64 + 1) * 0x2545_f491_4f6c_dd1d);
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut segno = t as u64;
    let mut lid = shared.roll(t, segno);
    let mut used = 0u64;
    barrier.wait();
    let c = &shared.counts;
    while !shared.stop.load(Ordering::Relaxed) {
        let r = rand();
        let size = 8 + r % 40;
        if used + size > SS {
            // Finished: every mark into this segment is done.
            segno += THREADS;
            shared.progress[t].store(segno, Ordering::Release);
            shared.open[t].store(u64::MAX, Ordering::Release);
            lid = shared.roll(t, segno);
            used = 0;
        }
        let lsn = (segno * SS + used) as Lsn;
        let ptr = DiskPtr::Inline(lid + used);
        used += size;
        let local = ((r >> 16) % PAGES) as usize;
        let pid = t as u64 * PAGES + local as u64;
        let mut pages = shared.pages[t].lock().unwrap();
        match r % 20 {
            0..=7 if !pages[local].is_empty() && pages[local].len() < 4 => {
                shared.acc.mark_link(pid, lsn, ptr, size).expect("link");
                pages[local].push((ptr, size, lsn));
                c.links.fetch_add(1, Ordering::Relaxed);
            }
            0..=14 | 18 | 19 => {
                let old: Vec<DiskPtr> = pages[local].iter().map(|&(p, _, _)| p).collect();
                if old.is_empty() {
                    shared.acc.mark_link(pid, lsn, ptr, size).expect("link");
                    c.links.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared
                        .acc
                        .mark_replace(pid, lsn, &old, ptr, size)
                        .expect("replace");
                    c.replaces.fetch_add(1, Ordering::Relaxed);
                }
                pages[local] = rewritten(&pages[local], ptr, size, lsn);
            }
            15 => {
                // Free the page: a free record replaces every fragment.
                let old: Vec<DiskPtr> = pages[local].iter().map(|&(p, _, _)| p).collect();
                if !old.is_empty() {
                    shared
                        .acc
                        .mark_replace(pid, lsn, &old, ptr, size)
                        .expect("free");
                    pages[local] = rewritten(&pages[local], ptr, size, lsn);
                    c.frees.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                drop(pages);
                c.cleans.fetch_add(1, Ordering::Relaxed);
                if let Some(victim) = shared.acc.clean(pid) {
                    if victim / PAGES == t as u64 {
                        let v = (victim % PAGES) as usize;
                        let mut pages = shared.pages[t].lock().unwrap();
                        let old: Vec<DiskPtr> = pages[v].iter().map(|&(p, _, _)| p).collect();
                        if !old.is_empty() {
                            shared
                                .acc
                                .mark_replace(victim, lsn, &old, ptr, size)
                                .expect("relocate");
                            pages[v] = rewritten(&pages[v], ptr, size, lsn);
                            c.relocations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        if t == 0 && r % 8 == 0 {
            shared
                .acc
                .stabilize(shared.stable_bound())
                .expect("stabilize");
            c.stabilizes.fetch_add(1, Ordering::Relaxed);
            if r % 64 == 0 {
                shared.acc.flush();
            }
        }
    }
    // Finish: the open segment is complete.
    shared.progress[t].store(segno + THREADS, Ordering::Release);
    shared.open[t].store(u64::MAX, Ordering::Release);
}

#[test]
fn four_writers_and_a_stabilizer() {
    let seconds: f64 = std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let config = Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .build()
        .unwrap();
    let shared = Arc::new(Shared {
        acc: Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new()),
        progress: (0..THREADS).map(AtomicU64::new).collect(),
        open: (0..THREADS).map(|_| AtomicU64::new(u64::MAX)).collect(),
        pages: (0..THREADS)
            .map(|_| Mutex::new(vec![Vec::new(); PAGES as usize]))
            .collect(),
        roll: Mutex::new(0),
        counts: Counts::default(),
        stop: AtomicBool::new(false),
    });
    let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
    let handles: Vec<_> = (0..THREADS as usize)
        .map(|t| {
            let (shared, barrier) = (shared.clone(), barrier.clone());
            std::thread::spawn(move || writer(shared, t, barrier))
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a writer panicked");
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Everything is complete: stabilize past every head's last segment and
    // push frees through.
    let end = shared
        .progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .max()
        .unwrap() as Lsn
        * SS as Lsn;
    shared.acc.stabilize(end).unwrap();
    shared.acc.flush();
    shared.acc.audit().expect("audit after the stress run");

    // The accountant's live pages and bytes are the harness's.
    let mut expected: BTreeMap<usize, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut lsns: BTreeMap<usize, std::collections::BTreeSet<Lsn>> = BTreeMap::new();
    for (t, pages) in shared.pages.iter().enumerate() {
        for (local, frags) in pages.lock().unwrap().iter().enumerate() {
            for &(ptr, size, lsn) in frags {
                let pid = t as u64 * PAGES + local as u64;
                *expected
                    .entry((ptr.lid() / SS) as usize)
                    .or_default()
                    .entry(pid)
                    .or_default() += size;
                lsns.entry((ptr.lid() / SS) as usize)
                    .or_default()
                    .insert(lsn - lsn % SS as Lsn);
            }
        }
    }
    let stats = shared.acc.stats();
    for index in 0..stats.tip_segments {
        let want: Vec<(u64, u64)> = expected
            .get(&index)
            .map(|m| m.iter().map(|(&p, &b)| (p, b)).collect())
            .unwrap_or_default();
        assert_eq!(
            shared.acc.segment_pages(index),
            want,
            "segment {index}: {:?}, harness fragment segment lsns {:?}",
            shared.acc.segment_info(index),
            lsns.get(&index)
        );
    }
    let c = &shared.counts;
    let total: u64 = [&c.links, &c.replaces, &c.frees, &c.cleans]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    println!(
        "stress: {:.1}s, {} ops ({:.0}/s): links {} replaces {} frees {} cleans {} relocations {} nexts {} reuses {} stabilizes {}; tip {} segments, truncated {} bytes",
        elapsed,
        total,
        total as f64 / elapsed,
        c.links.load(Ordering::Relaxed),
        c.replaces.load(Ordering::Relaxed),
        c.frees.load(Ordering::Relaxed),
        c.cleans.load(Ordering::Relaxed),
        c.relocations.load(Ordering::Relaxed),
        c.nexts.load(Ordering::Relaxed),
        c.reuses.load(Ordering::Relaxed),
        c.stabilizes.load(Ordering::Relaxed),
        stats.tip_segments,
        stats.bytes_truncated
    );
    assert!(
        c.reuses.load(Ordering::Relaxed) > 0,
        "no segment was reused: the run exercised nothing"
    );
}
