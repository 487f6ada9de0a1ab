//! The throughput mix (`examples/workload`) that the performance figures
//! are measured with runs in a steady state: with its default head options
//! no head runs more than its lead ahead of the slowest, so the Active
//! (unsealed) segments stay a few per head however the threads' speeds
//! differ. (The fixed interleave with no bound let the head in front run
//! ahead for the whole run: tens of thousands of unsealed segments after
//! a few seconds, docs/performance-log.md, "Twenty-third session".)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[path = "../examples/workload/mod.rs"]
mod workload;

use workload::{WritePath, MAX_LEAD};

/// Runs `threads` heads of the mix for `ops` operations each and returns
/// the most Active segments any combiner pass saw meanwhile (read from the
/// metrics snapshot by a thread of its own) and the passes.
fn most_active_during(threads: usize, ops: u64) -> (u64, u64) {
    let acc = Arc::new(workload::accountant());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                let (active, _) = acc.active_and_passes().expect("reported");
                most = most.max(active);
                std::thread::yield_now();
            }
            most
        });
        workload::run_ops(acc.clone(), threads, ops, 256, false);
        done.store(true, Ordering::Relaxed);
        let most = monitor.join().unwrap();
        let (active, passes) = acc.active_and_passes().expect("reported");
        (most.max(active), passes)
    })
}

#[test]
fn the_mix_keeps_its_backlog_within_the_heads_lead() {
    for (threads, ops) in [(2usize, 300_000u64), (8, 60_000)] {
        let (most, passes) = most_active_during(threads, ops);
        // Each head rolls about every 230 operations: the run hands out
        // hundreds of segments per head, far more than the bound.
        assert!(passes > 0, "{threads} heads: the heads stabilized");
        // A head starts a segment at most `MAX_LEAD · T` numbers above
        // every other head's; what a pass leaves Active is at most that
        // span and each head's current segment, with a segment or two the
        // pass had not collected yet.
        let bound = (MAX_LEAD + 2) * threads as u64 + 2;
        assert!(
            most <= bound,
            "{threads} heads: {most} Active segments after a pass, more than {bound}"
        );
    }
}
