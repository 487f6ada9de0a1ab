//! Memory of both designs, measured with a counting global allocator:
//! bytes of accountant metadata per tracked fragment at 1 million
//! fragments, and heap allocations per `mark_link` and per `mark_replace`
//! in steady state (segments reused, tables warmed up).
//!
//! ```text
//! cargo run --release --example memory
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use segment_accountant::baseline::MutexAccountant;
use segment_accountant::{Accountant, Collector, Config, DiskPtr, Lsn, MemStorage};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// Safety: delegates to the system allocator; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // Safety: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // Safety: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // Safety: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SS: u64 = 1 << 20;
const FRAGMENTS: u64 = 1_000_000;
const PER_SEGMENT: u64 = 4096;

trait Design {
    fn next(&self, lsn: Lsn) -> u64;
    fn link(&self, pid: u64, lsn: Lsn, lid: u64);
    fn replace(&self, pid: u64, lsn: Lsn, old: u64, new: u64);
    fn stabilize(&self, lsn: Lsn);
    fn flush(&self) {}
}

impl Design for Accountant {
    fn next(&self, lsn: Lsn) -> u64 {
        Accountant::next(self, lsn).unwrap()
    }
    fn link(&self, pid: u64, lsn: Lsn, lid: u64) {
        self.mark_link(pid, lsn, DiskPtr::Inline(lid), 64).unwrap()
    }
    fn replace(&self, pid: u64, lsn: Lsn, old: u64, new: u64) {
        self.mark_replace(pid, lsn, &[DiskPtr::Inline(old)], DiskPtr::Inline(new), 64)
            .unwrap()
    }
    fn stabilize(&self, lsn: Lsn) {
        Accountant::stabilize(self, lsn).unwrap()
    }
    fn flush(&self) {
        Accountant::flush(self);
    }
}

impl Design for MutexAccountant {
    fn next(&self, lsn: Lsn) -> u64 {
        MutexAccountant::next(self, lsn).unwrap()
    }
    fn link(&self, pid: u64, lsn: Lsn, lid: u64) {
        self.mark_link(pid, lsn, DiskPtr::Inline(lid), 64).unwrap()
    }
    fn replace(&self, pid: u64, lsn: Lsn, old: u64, new: u64) {
        self.mark_replace(pid, lsn, &[DiskPtr::Inline(old)], DiskPtr::Inline(new), 64)
            .unwrap()
    }
    fn stabilize(&self, lsn: Lsn) {
        MutexAccountant::stabilize(self, lsn).unwrap()
    }
}

/// Bytes of metadata per fragment with 1M fragments tracked.
fn bytes_per_fragment(make: &dyn Fn() -> Box<dyn Design>) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let acc = make();
    let mut segno = 0;
    let mut lid = 0;
    for pid in 0..FRAGMENTS {
        if pid % PER_SEGMENT == 0 {
            lid = acc.next((segno * SS) as Lsn);
            segno += 1;
        }
        acc.link(pid, ((segno - 1) * SS) as Lsn, lid + pid % PER_SEGMENT);
    }
    let after = LIVE.load(Ordering::Relaxed);
    drop(acc);
    (after - before) as f64 / FRAGMENTS as f64
}

/// Steady state: pages 0..N rewritten round after round into reused
/// segments. Returns allocations per call of links and of replaces,
/// counted only around the calls themselves.
fn allocations_per_call(acc: &dyn Design) -> (f64, f64) {
    const PAGES: u64 = 2048;
    let mut current: Vec<u64> = Vec::new();
    let (mut link_allocs, mut links, mut replace_allocs, mut replaces) = (0u64, 0u64, 0u64, 0u64);
    for round in 0..200u64 {
        let lsn = (round * SS) as Lsn;
        let lid = acc.next(lsn);
        let measure = round >= 100;
        for pid in 0..PAGES {
            let new = lid + pid;
            let before = ALLOCS.load(Ordering::Relaxed);
            if current.len() < PAGES as usize {
                acc.link(pid, lsn, new);
                if measure {
                    link_allocs += ALLOCS.load(Ordering::Relaxed) - before;
                    links += 1;
                }
                current.push(new);
            } else {
                // A delta, then a full rewrite of the page.
                acc.link(pid, lsn, new);
                let mid = ALLOCS.load(Ordering::Relaxed);
                acc.replace(pid, lsn, current[pid as usize], new);
                if measure {
                    link_allocs += mid - before;
                    links += 1;
                    replace_allocs += ALLOCS.load(Ordering::Relaxed) - mid;
                    replaces += 1;
                }
                current[pid as usize] = new;
            }
        }
        acc.stabilize(lsn + SS as Lsn);
        acc.flush();
    }
    (
        link_allocs as f64 / links.max(1) as f64,
        replace_allocs as f64 / replaces.max(1) as f64,
    )
}

fn main() {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let c = config.clone();
    let ours = bytes_per_fragment(&move || {
        Box::new(Accountant::with_collector(
            c.clone(),
            Arc::new(MemStorage::new()),
            Collector::new(),
        ))
    });
    let c = config.clone();
    let theirs = bytes_per_fragment(&move || Box::new(MutexAccountant::new(c.clone())));
    println!(
        "bytes_per_fragment accountant={ours:.1} mutex={theirs:.1} ratio={:.2}",
        ours / theirs
    );
    let acc = Accountant::with_collector(
        config.clone(),
        Arc::new(MemStorage::new()),
        Collector::new(),
    );
    let (l, r) = allocations_per_call(&acc);
    let base = MutexAccountant::new(config);
    let (bl, br) = allocations_per_call(&base);
    println!("allocations_per_mark_link accountant={l:.4} mutex={bl:.4}");
    println!("allocations_per_mark_replace accountant={r:.4} mutex={br:.4}");
}
