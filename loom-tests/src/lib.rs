//! Helpers shared by the loom models in `tests/` (which compile only under
//! `--cfg loom --cfg crossbeam_loom`; see `run.sh`).
//!
//! The models drive the real crate through its public API; the crate
//! itself reaches every atomic, lock, cell, thread and the epoch collector
//! through its `sync` shim, so under loom the shipped code is what is
//! checked.

#![cfg(loom)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::sync::Arc as StdArc;

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use segment_accountant::{
    Accountant, BlobId, Collector, Config, DiskPtr, Lid, Lsn, PageId, Storage,
};

/// Segment size of every model: tiny, so lsns stay small.
pub const SS: u64 = 64;

/// Runs `f` under loom with the environment's settings
/// (`LOOM_MAX_PREEMPTIONS` and friends, the preemption bound capped at
/// `max_preemptions` for models whose state space explodes beyond it,
/// unless `LOOM_DEEP` is set: `run.sh --deep`) and prints how many
/// interleavings were explored.
pub fn explore(name: &str, max_preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let count = StdArc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let mut builder = loom::model::Builder::new();
    // The single-threaded setup of a model (segments, links, an epoch
    // flush) alone takes a few thousand loom operations.
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 100_000;
    }
    let deep = std::env::var_os("LOOM_DEEP").is_some();
    let bound = match builder.preemption_bound {
        Some(env) if deep => env,
        env => env.unwrap_or(max_preemptions).min(max_preemptions),
    };
    builder.preemption_bound = Some(bound);
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    println!(
        "model {name}: {} interleavings explored (preemption bound {bound})",
        count.load(StdOrdering::Relaxed)
    );
}

/// A storage whose state is loom-visible, recording truncations.
#[derive(Debug)]
pub struct LoomStorage {
    len: AtomicU64,
    /// A `set_len` has shortened the file and its `sync` has not finished.
    pub truncating: AtomicBool,
    /// The shortest length any truncation set (u64::MAX: none).
    pub truncated_to: AtomicU64,
    /// How many of the next `set_len` calls fail.
    pub fail_set_len: AtomicU64,
    /// How many more `remove_blob` calls panic (a store's buggy blob
    /// deleter). Not loom state: only the thread that calls it reads it.
    pub panicking_removals: AtomicUsize,
}

impl LoomStorage {
    /// A storage that pretends `len` bytes were written.
    pub fn new(len: u64) -> Self {
        LoomStorage {
            len: AtomicU64::new(len),
            truncating: AtomicBool::new(false),
            truncated_to: AtomicU64::new(u64::MAX),
            fail_set_len: AtomicU64::new(0),
            panicking_removals: AtomicUsize::new(0),
        }
    }
}

impl Storage for LoomStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        // AcqRel: a test's setting of the count happens before the call.
        let failing = self
            .fail_set_len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(io::Error::other("injected set_len failure"));
        }
        self.truncating.store(true, Ordering::Release);
        self.truncated_to.fetch_min(len, Ordering::AcqRel);
        self.len.store(len, Ordering::Release);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.len.load(Ordering::Acquire))
    }
    fn sync(&self) -> io::Result<()> {
        self.truncating.store(false, Ordering::Release);
        Ok(())
    }
    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        let due = self
            .panicking_removals
            .fetch_update(StdOrdering::Relaxed, StdOrdering::Relaxed, |n| {
                n.checked_sub(1)
            })
            .is_ok();
        if due {
            panic!("injected panic in remove_blob({blob})");
        }
        Ok(())
    }
}

/// Silences the default message of panics the models inject (theirs start
/// with "injected"); every other panic, loom's reports included, prints.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let injected = payload
                .downcast_ref::<&str>()
                .map(|s| s.starts_with("injected"))
                .or_else(|| {
                    payload
                        .downcast_ref::<String>()
                        .map(|s| s.starts_with("injected"))
                })
                .unwrap_or(false);
            if !injected {
                default(info);
            }
        }));
    });
}

/// The models' configuration: tiny segments, one write head.
pub fn config() -> Config {
    config_with(|b| b)
}

/// The models' configuration, adjusted by `f`.
pub fn config_with(
    f: impl FnOnce(segment_accountant::ConfigBuilder) -> segment_accountant::ConfigBuilder,
) -> Config {
    f(Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .temporary(false))
    .build()
    .expect("config")
}

/// A fresh accountant with a private collector over a [`LoomStorage`].
pub fn accountant() -> (loom::sync::Arc<Accountant>, Collector, StdArc<LoomStorage>) {
    accountant_with(config())
}

/// [`accountant`] with the configuration `config`.
pub fn accountant_with(
    config: Config,
) -> (loom::sync::Arc<Accountant>, Collector, StdArc<LoomStorage>) {
    let storage = StdArc::new(LoomStorage::new(16 * SS));
    let collector = Collector::new();
    let acc = Accountant::with_collector(config, storage.clone(), collector.clone());
    (loom::sync::Arc::new(acc), collector, storage)
}

/// `next(lsn)` and link page `pid` into it; returns the lid.
pub fn segment_with(acc: &Accountant, lsn: Lsn, pids: &[PageId]) -> Lid {
    let lid = acc.next(lsn).expect("next");
    for (i, &pid) in pids.iter().enumerate() {
        acc.mark_link(pid, lsn + i as Lsn, DiskPtr::Inline(lid + i as u64), 8)
            .expect("link");
    }
    lid
}

/// Replace page `pid`'s fragment at `old` with one at the start of the
/// segment `new` (base lsn `lsn`).
pub fn relocate(acc: &Accountant, pid: PageId, lsn: Lsn, old: Lid, new: Lid) {
    acc.mark_replace(
        pid,
        lsn,
        &[DiskPtr::Inline(old)],
        DiskPtr::Inline(new + pid),
        8,
    )
    .expect("replace");
}
