//! Criterion benchmarks: the lock-free accountant against the single-mutex
//! baseline (`segment_accountant::baseline`), in the same run.
//!
//! ```text
//! cargo bench -p segment-accountant-tools              # every group
//! cargo bench -p segment-accountant-tools -- mix       # one group
//! cargo bench -p segment-accountant-tools --bench accountant -- table_size --warm-up-time 1 --measurement-time 2
//! ```

#[path = "../../examples/workload/mod.rs"]
mod workload;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use segment_accountant::{
    Accountant, Collector, DiskPtr, Fragment, Lsn, MemStorage, PageState, Snapshot,
};
use segment_accountant_tools::table::Table;
use workload::{WritePath, SEGMENT_SIZE};

const SS: Lsn = SEGMENT_SIZE as Lsn;

/// A design's name and constructor.
type Design = (&'static str, fn() -> Arc<dyn WritePath>);

fn designs() -> Vec<Design> {
    vec![
        ("accountant", || Arc::new(workload::accountant())),
        ("mutex", || Arc::new(workload::mutex_accountant())),
    ]
}

/// Single-threaded cost of each call.
fn per_operation(c: &mut Criterion) {
    // Each sample runs on a fresh accountant: see `keep_freed_memory`.
    segment_accountant_tools::keep_freed_memory();
    let mut group = c.benchmark_group("per_op");
    for (name, make) in designs() {
        group.bench_function(BenchmarkId::new("mark_link", name), |b| {
            b.iter_custom(|iters| {
                let acc = make();
                let lid = acc.next(0);
                let start = Instant::now();
                for i in 0..iters {
                    acc.link(
                        i % 4096,
                        (i % 4096) as Lsn,
                        DiskPtr::Inline(lid + i % 4096),
                        64,
                    );
                }
                start.elapsed()
            })
        });
        for olds in [1u64, 4] {
            group.bench_function(
                BenchmarkId::new(format!("mark_replace_{olds}_old"), name),
                |b| {
                    b.iter_custom(|iters| {
                        let acc = make();
                        let mut old_ptrs = Vec::new();
                        for s in 0..olds {
                            let lid = acc.next(s as Lsn * SS);
                            for pid in 0..4096 {
                                acc.link(pid, s as Lsn * SS, DiskPtr::Inline(lid), 8);
                            }
                            old_ptrs.push(DiskPtr::Inline(lid));
                        }
                        let lid = acc.next(olds as Lsn * SS);
                        let start = Instant::now();
                        for i in 0..iters {
                            acc.replace(
                                i % 4096,
                                olds as Lsn * SS,
                                &old_ptrs,
                                DiskPtr::Inline(lid),
                                64,
                            );
                        }
                        start.elapsed()
                    })
                },
            );
        }
        group.bench_function(BenchmarkId::new("next_link256_stabilize", name), |b| {
            b.iter_custom(|iters| {
                let acc = make();
                let start = Instant::now();
                let mut prev: Option<u64> = None;
                for i in 0..iters as Lsn {
                    let lid = acc.next(i * SS);
                    for pid in 0..256u64 {
                        let ptr = DiskPtr::Inline(lid + pid);
                        match prev {
                            Some(old) => {
                                acc.replace(pid, i * SS, &[DiskPtr::Inline(old + pid)], ptr, 64)
                            }
                            None => acc.link(pid, i * SS, ptr, 64),
                        }
                    }
                    prev = Some(lid);
                    acc.stabilize(i * SS + SS);
                }
                start.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("clean", name), |b| {
            let acc = make();
            // 8 sealed segments of 64 pages each, drained (few live pages).
            for s in 0..8 {
                let lid = acc.next(s * SS);
                for pid in 0..64 {
                    acc.link(s as u64 * 64 + pid, s * SS, DiskPtr::Inline(lid + pid), 64);
                }
            }
            acc.next(8 * SS);
            acc.stabilize(8 * SS);
            b.iter(|| black_box(acc.clean(u64::MAX)))
        });
    }
    group.finish();
}

fn mix_group(c: &mut Criterion, group_name: &str, background: bool) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for threads in [1usize, 2, 4, 8] {
        for (name, make) in designs() {
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    let per_thread = (iters / threads as u64).max(1);
                    workload::run_ops(make(), threads, per_thread, 256, background)
                })
            });
        }
    }
    group.finish();
}

/// The write-path mix (link 60%, replace 30%, clean 10%, rolls and
/// stabilizes) at 1, 2, 4, 8 threads, 256 bytes of work per call.
fn mix(c: &mut Criterion) {
    mix_group(c, "mix", false);
}

/// The same mix while one background thread stabilizes continuously.
fn mix_background_stabilize(c: &mut Criterion) {
    mix_group(c, "mix_bg_stabilize", true);
}

/// The set type the accountant keeps a segment's pages in: a `DashMap`
/// with 4 shards and the Fx hasher.
fn page_set() -> dashmap::DashMap<u64, u64, rustc_hash::FxBuildHasher> {
    dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(0, Default::default(), 4)
}

/// Times `iters` links of pages `i % 4096` into a fresh segment, calling
/// `before` ahead of each. Inlined so the loop is compiled in place, as
/// each benchmark's own loop was.
#[inline(always)]
fn time_mark_link(iters: u64, before: impl Fn()) -> Duration {
    let acc = workload::accountant();
    let lid = Accountant::next(&acc, 0).unwrap();
    let start = Instant::now();
    for i in 0..iters {
        before();
        acc.mark_link(
            i % 4096,
            (i % 4096) as Lsn,
            DiskPtr::Inline(lid + i % 4096),
            64,
        )
        .unwrap();
    }
    start.elapsed()
}

/// Times `iters` entry-API updates of keys `i % 4096` in a fresh
/// [`page_set`], calling `before` ahead of each.
#[inline(always)]
fn time_entry_update(iters: u64, before: impl Fn()) -> Duration {
    let map = page_set();
    let start = Instant::now();
    for i in 0..iters {
        before();
        *map.entry(i % 4096).or_insert(0) += 64;
    }
    start.elapsed()
}

/// `mark_link` against its floor: one insert into the concurrent set type
/// the accountant uses (through the entry API and through the raw shard API
/// `mark_link` itself uses), and one atomic fetch-add. Both map sides link
/// the same 4,096 keys in the same order into a fresh map per sample, as the
/// accountant side does into a fresh segment.
fn mark_link_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("mark_link_floor");
    group.bench_function("accountant_mark_link", |b| {
        b.iter_custom(|iters| time_mark_link(iters, || {}))
    });
    group.bench_function("dashmap_insert", |b| {
        b.iter_custom(|iters| time_entry_update(iters, || {}))
    });
    // The same update through dashmap's raw shard API, as `mark_link` does
    // it (`PageMap::link`). All of it is `#[inline]`, so it does not depend,
    // as `entry` does, on whether the compiler inlines dashmap's `_entry`
    // into this loop (which changes with unrelated code in this crate).
    group.bench_function("dashmap_raw_insert", |b| {
        b.iter_custom(|iters| {
            let map = page_set();
            let start = Instant::now();
            for i in 0..iters {
                let pid = i % 4096;
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
            start.elapsed()
        })
    });
    group.bench_function("atomic_fetch_add", |b| {
        let counter = AtomicU64::new(0);
        b.iter(|| counter.fetch_add(black_box(64), Ordering::Relaxed))
    });
    group.finish();
}

/// The accountant and entry-API sides of `mark_link_floor` one call at a
/// time: an `lfence` before each call keeps the CPU from starting a call
/// before the previous one has finished, so these are latencies. In
/// `mark_link_floor` consecutive calls overlap, and how much they overlap
/// depends on how long each call's instruction stream is.
#[cfg(target_arch = "x86_64")]
fn mark_link_latency(c: &mut Criterion) {
    // Safety: `lfence` has no preconditions (SSE2 is part of the x86_64
    // baseline). The `unsafe` is needed before Rust 1.87 only.
    #[allow(unused_unsafe)]
    fn fence() {
        unsafe { std::arch::x86_64::_mm_lfence() }
    }
    let mut group = c.benchmark_group("mark_link_latency");
    group.bench_function("accountant_mark_link", |b| {
        b.iter_custom(|iters| time_mark_link(iters, fence))
    });
    group.bench_function("dashmap_insert", |b| {
        b.iter_custom(|iters| time_entry_update(iters, fence))
    });
    group.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn mark_link_latency(_: &mut Criterion) {}

/// Building the accountant from a snapshot of 1 million pages over 4,096
/// segments, against the baseline rebuilt by linking every fragment.
fn recovery(c: &mut Criterion) {
    const PAGES: u64 = 1_000_000;
    const SEGMENTS: u64 = 4096;
    let ss = SEGMENT_SIZE;
    let per_segment = PAGES / SEGMENTS + 1;
    let mut pages = BTreeMap::new();
    for pid in 0..PAGES {
        let seg = pid / per_segment;
        let off = (pid % per_segment) * 64;
        pages.insert(
            pid,
            PageState::Present(vec![Fragment::new(
                (seg * ss + off) as Lsn,
                DiskPtr::Inline(seg * ss + off),
                64,
            )]),
        );
    }
    let snapshot = Snapshot::new(
        pages,
        Some((SEGMENTS - 1) * ss),
        (SEGMENTS * ss - 1) as Lsn,
        ((SEGMENTS - 1) * ss) as Lsn,
    );
    let mut group = c.benchmark_group("recovery_1m_pages");
    group.sample_size(10);
    group.bench_function("accountant_from_snapshot", |b| {
        b.iter(|| {
            Accountant::from_snapshot(
                workload::config(),
                Arc::new(MemStorage::new()),
                Collector::new(),
                &snapshot,
                SEGMENTS * ss,
            )
            .unwrap()
        })
    });
    group.bench_function("mutex_link_every_fragment", |b| {
        b.iter(|| {
            let acc = workload::mutex_accountant();
            for seg in 0..SEGMENTS {
                acc.next((seg * ss) as Lsn).unwrap();
            }
            for (pid, state) in &snapshot.pages {
                for f in state.fragments() {
                    acc.mark_link(*pid, f.lsn, f.ptr, f.size).unwrap();
                }
            }
            acc
        })
    });
    group.finish();
}

/// A storage that keeps only the file's length: `MemStorage` holds the
/// whole file in memory (4 GiB at 1,000,000 segments of 4 KiB), and the
/// accountant only sets lengths and syncs.
/// `next` (reuse path), `stabilize` (sealing one segment, applying one
/// replacement, freeing one segment) and `flush` (pushing that free
/// through the collector) with 1,000 to 1,000,000 segments in the table.
/// Each iteration is one whole cycle ([`Table`]); only the named call is
/// timed (one `Instant` pair around it, the same at every size).
fn table_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_size");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for segments in [1_000u64, 10_000, 100_000, 1_000_000] {
        // Built by the first of the three that runs (none, when a filter
        // leaves this size out).
        let mut table: Option<Table> = None;
        for (i, op) in ["next", "stabilize", "flush"].into_iter().enumerate() {
            group.bench_function(BenchmarkId::new(op, segments), |b| {
                let table = table.get_or_insert_with(|| Table::build(segments));
                b.iter_custom(|iters| (0..iters).map(|_| table.cycle(true)[i]).sum())
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    per_operation,
    mix,
    mix_background_stabilize,
    mark_link_floor,
    mark_link_latency,
    recovery,
    table_size
);
criterion_main!(benches);
