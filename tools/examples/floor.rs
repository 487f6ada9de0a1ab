//! `mark_link` against its floor, measured in pairs.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example floor -- --chunk 200000 --pairs 300
//! ```
//!
//! The criterion group `mark_link_floor` times `mark_link` and one page-map
//! update one after the other, each for seconds. On a shared virtual
//! machine the speed of a core changes by half within seconds (this one
//! moves between about 11 and 18 ns per `mark_link`, and the page-map
//! update between 8.5 and 14 ns, with no change in the program), so the
//! ratio of two such figures says more about when each ran than about the
//! code. Here the two loops alternate in short chunks (`--chunk` calls
//! each), and every chunk of `mark_link` is divided by the page-map chunk
//! right after it: both ran at the same speed, so the ratio is the code's.
//! It prints the median and quartiles of those ratios, and the medians of
//! the times.
//!
//! The loops are the criterion group's: 4,096 pages linked in order into
//! one segment of the workload's accountant, and the same keys updated
//! through the entry API of the set type the accountant keeps a segment's
//! pages in (a `DashMap` with 4 shards and the Fx hasher), and through
//! dashmap's raw shard API as `mark_link` does it.

#[path = "../../examples/workload/mod.rs"]
mod workload;

use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Instant;

use segment_accountant_tools::{arg, quantile};

use segment_accountant::{Accountant, DiskPtr, Lid, Lsn};

type PageSet = dashmap::DashMap<u64, u64, rustc_hash::FxBuildHasher>;

/// Nanoseconds per call of `n` links into the segment at `lid`.
#[inline(never)]
fn mark_link(acc: &Accountant, lid: Lid, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        acc.mark_link(
            i % 4096,
            (i % 4096) as Lsn,
            DiskPtr::Inline(lid + i % 4096),
            64,
        )
        .unwrap();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Nanoseconds per call of `n` entry-API updates.
#[inline(never)]
fn entry_update(map: &PageSet, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        *map.entry(black_box(i % 4096)).or_insert(0) += 64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Nanoseconds per call of `n` updates through the raw shard API.
#[inline(never)]
fn raw_update(map: &PageSet, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let pid = black_box(i % 4096);
        let hash = map.hasher().hash_one(pid);
        let mut table = map.shards()[map.determine_shard(hash as usize)].write();
        match table.get_mut(hash, |&(k, _)| k == pid) {
            Some((_, v)) => *v.get_mut() += 64,
            None => {
                table.insert(hash, (pid, dashmap::SharedValue::new(64)), |&(k, _)| {
                    map.hasher().hash_one(k)
                });
            }
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let chunk = arg("--chunk", 200_000).max(1);
    let pairs = arg("--pairs", 300).max(1) as usize;
    let acc = workload::accountant();
    let lid = acc.next(0).unwrap();
    let entry_map = PageSet::with_capacity_and_hasher_and_shard_amount(0, Default::default(), 4);
    let raw_map = PageSet::with_capacity_and_hasher_and_shard_amount(0, Default::default(), 4);
    // One warm-up round fills the maps and the segment, as criterion's
    // warm-up does.
    mark_link(&acc, lid, 4096);
    entry_update(&entry_map, 4096);
    raw_update(&raw_map, 4096);
    let (mut link, mut entry, mut raw) = (vec![], vec![], vec![]);
    let (mut over_entry, mut over_raw) = (vec![], vec![]);
    for _ in 0..pairs {
        let l = mark_link(&acc, lid, chunk);
        let e = entry_update(&entry_map, chunk);
        let r = raw_update(&raw_map, chunk);
        over_entry.push(l / e);
        over_raw.push(l / r);
        link.push(l);
        entry.push(e);
        raw.push(r);
    }
    println!(
        "pairs={pairs} chunk={chunk} mark_link_ns={:.2} entry_ns={:.2} raw_ns={:.2} \
         ratio_entry={:.3} (p25 {:.3}, p75 {:.3}) ratio_raw={:.3} (p25 {:.3}, p75 {:.3})",
        quantile(&mut link, 0.5),
        quantile(&mut entry, 0.5),
        quantile(&mut raw, 0.5),
        quantile(&mut over_entry, 0.5),
        quantile(&mut over_entry, 0.25),
        quantile(&mut over_entry, 0.75),
        quantile(&mut over_raw, 0.5),
        quantile(&mut over_raw, 0.25),
        quantile(&mut over_raw, 0.75),
    );
}
