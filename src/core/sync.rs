//! The one place the crate reaches atomics, locks, cells, threads and the
//! epoch collector.
//!
//! In a normal build these are the `std` types (the read/write lock is
//! dashmap's, which does not poison). Under `--cfg loom` they are
//! loom's, so the loom models in `loom-tests/` check the very code that
//! ships. The one type loom cannot see through, crossbeam's lock-free
//! queue, is wrapped by a small internal type ([`Queue`] here) whose loom
//! version is built from the primitives below.

#[cfg(not(any(loom, sharing_audit)))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(any(loom, sharing_audit)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
// The read/write lock (of the page maps' and the in-use lsn set's
// shards): dashmap's, the lock of the set type `mark_link`'s floor
// measures. It does not poison, so a lock and an unlock are one atomic
// read-modify-write each, without `std`'s two reads of the panic count
// and one of the poison flag (the crate ignored poisoning anyway: see
// `lock`). Its guard still
// releases it on unwind. Unlike `std`'s, it lets a reader in while a
// writer waits: a writer could in principle wait out a stream of
// overlapping readers. The page maps' readers (`clean`'s check, the seal's
// sums, the statistics) each hold a shard for one short read, and so do
// the in-use set's (`pause_rewriting`'s wait, the rare walks).
#[cfg(not(any(loom, sharing_audit)))]
pub(crate) use dashmap::{RwLock, RwLockReadGuard, RwLockWriteGuard};
// The sharing audit's build: the same types, reporting their writes.
#[cfg(all(sharing_audit, not(loom)))]
pub(crate) use crate::core::sharing::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Mutex, MutexGuard, RwLock,
    RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(not(loom))]
pub(crate) use std::thread::JoinHandle;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(loom)]
pub(crate) use loom::thread::{spawn, JoinHandle};

pub(crate) use std::sync::atomic::Ordering;

/// A statistics counter on a slow path that the loom models need not
/// explore: always the `std` atomic, except in the sharing audit's build,
/// which sees its writes like any other.
#[cfg(not(sharing_audit))]
pub(crate) type StatCounter = std::sync::atomic::AtomicU64;
#[cfg(sharing_audit)]
pub(crate) type StatCounter = crate::core::sharing::AtomicU64;

/// A word that is only a hint: where a page map's table lies (see
/// `PageMap::prefetch_bucket`), or how much a fresh one reserves
/// (`FreshHint`). It orders nothing and guards nothing, so the loom models
/// need not explore it, and a stale value costs only a useless prefetch or
/// a reservation of another size. Always the `std` atomic, except in the
/// sharing audit's build, which sees its writes like any other.
#[cfg(not(sharing_audit))]
pub(crate) type HintWord = std::sync::atomic::AtomicU64;
#[cfg(sharing_audit)]
pub(crate) type HintWord = crate::core::sharing::AtomicU64;

/// Starts a thread, reporting the operating system's refusal as an error
/// instead of panicking (as `spawn` does).
pub(crate) fn try_spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    #[cfg(not(loom))]
    {
        std::thread::Builder::new()
            .name("segment-accountant-truncation".into())
            .spawn(f)
    }
    #[cfg(loom)]
    {
        Ok(spawn(f))
    }
}

/// Pads and aligns a value to a cache line, so that a hot atomic or lock
/// shares its line with nothing another thread writes (crossbeam's: 128
/// bytes on x86_64 and aarch64, whose prefetchers pull lines in pairs).
/// The same plain wrapper under loom: layout is invisible to it.
pub(crate) use crossbeam_utils::CachePadded;

/// The length [`CachePadded`] pads to: the unit the layout tests reason
/// in.
#[cfg(not(loom))]
pub(crate) const LINE: usize = std::mem::align_of::<CachePadded<u8>>();

/// Exponential backoff for spin and CAS retry loops: crossbeam's
/// (`spin` after a lost CAS, `snooze` while waiting for another thread)
/// normally; under loom a stand-in whose `snooze` is a loom scheduling
/// point (a loom model whose wait loop never yields never terminates).
#[cfg(not(loom))]
pub(crate) use crossbeam_utils::Backoff;

/// The loom stand-in for crossbeam's `Backoff`. It promises what
/// crossbeam's does: nothing about ordering, and no bound on how long a
/// step takes.
///
/// `snooze` (a wait for another thread) yields to loom's scheduler, so
/// every wait loop lets the thread it waits for run. `spin` (a retry after
/// a lost CAS) is only a CPU hint in crossbeam's, with no effect on which
/// thread runs, and needs no scheduling point here: a lost CAS means
/// another thread went ahead, so a retry loop terminates without one.
/// (A `yield_now` there made loom explore schedules that differ only in
/// where a retry yields: model 3 went from 38,077 interleavings to
/// 644,343 at the same bound, and caught nothing more.)
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff(());

#[cfg(loom)]
impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(())
    }

    /// After a lost compare-and-swap: nothing to do under loom.
    pub(crate) fn spin(&self) {}

    /// While waiting for another thread to make progress.
    pub(crate) fn snooze(&self) {
        loom::thread::yield_now();
    }
}

/// Locks a mutex, treating poisoning as recoverable: every critical section
/// in this crate leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
}

/// Read-locks a read/write lock. dashmap's never poisons; loom's is
/// unwrapped (a poisoned lock there means a model already panicked).
#[inline(always)]
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    #[cfg(not(loom))]
    {
        l.read()
    }
    #[cfg(loom)]
    {
        l.read().unwrap()
    }
}

/// Write-locks a read/write lock, as [`read`] does.
#[inline(always)]
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    #[cfg(not(loom))]
    {
        l.write()
    }
    #[cfg(loom)]
    {
        l.write().unwrap()
    }
}

/// Tries to lock a mutex without blocking.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        #[cfg(not(loom))]
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(_) => None,
    }
}

/// An `UnsafeCell` with loom's closure-based access API, so that loom can
/// check that accesses we claim are exclusive really are.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        {
            Self(std::cell::UnsafeCell::new(value))
        }
        #[cfg(loom)]
        {
            Self(loom::cell::UnsafeCell::new(value))
        }
    }

    /// Runs `f` with a mutable pointer to the contents.
    ///
    /// The caller must hold whatever token grants exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with_mut(f)
        }
    }
}

/// A multi-producer queue: crossbeam's lock-free `SegQueue` normally; under
/// loom a stand-in that promises no more than crossbeam does (see
/// [`loom_queue`]): a push happens-before only the pop that takes its
/// element, and a pop may wait for a slot that a push reserved but has not
/// written yet.
pub(crate) struct Queue<T> {
    #[cfg(not(loom))]
    inner: crossbeam_queue::SegQueue<T>,
    #[cfg(loom)]
    inner: loom_queue::Queue<T>,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            inner: crossbeam_queue::SegQueue::new(),
            #[cfg(loom)]
            inner: loom_queue::Queue::new(),
        }
    }

    pub(crate) fn push(&self, value: T) {
        // The audit sees a push as one write to the queue's tail.
        #[cfg(sharing_audit)]
        crate::core::sharing::wrote(self);
        self.inner.push(value);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(sharing_audit)]
        crate::core::sharing::wrote(self);
        self.inner.pop()
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

/// The loom stand-in for crossbeam's `SegQueue`, as weak as its contract:
/// slots reserved by a Relaxed `fetch_add` of the tail, each published by
/// a Release store of its own `written` flag and taken by a Relaxed CAS of
/// the head followed by an Acquire wait on that flag. So a pop
/// synchronizes with the one push whose element it takes and with no
/// other, and a pop that claims a reserved slot waits for its write. (The
/// real queue's SeqCst index updates order more; the crate must not rely
/// on that.) A fixed number of slots suffices for a model.
#[cfg(loom)]
pub mod loom_queue {
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Slots per stand-in queue: more than any model pushes.
    const SLOTS: usize = 32;

    /// The stand-in queue (public under loom only, for its litmus model).
    pub struct Queue<T> {
        head: AtomicUsize,
        tail: AtomicUsize,
        slots: Box<[Slot<T>]>,
        /// The seeded bug `queue-orders-too-much`: a locked deque instead.
        #[cfg(seeded_bugs)]
        locked: Option<super::Mutex<std::collections::VecDeque<T>>>,
    }

    struct Slot<T> {
        written: AtomicBool,
        value: super::UnsafeCell<Option<T>>,
    }

    // Safety: a slot's value is written only by the push that reserved the
    // slot (the tail `fetch_add` gives each slot to one push) before its
    // Release store of `written`, and taken only by the pop whose head CAS
    // claimed the slot, after its Acquire load of `written` saw the flag:
    // the two accesses are exclusive and ordered. `T: Send` moves values
    // across threads.
    unsafe impl<T: Send> Sync for Queue<T> {}

    impl<T> Default for Queue<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T> Queue<T> {
        /// An empty queue.
        pub fn new() -> Self {
            Queue {
                head: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
                slots: (0..SLOTS)
                    .map(|_| Slot {
                        written: AtomicBool::new(false),
                        value: super::UnsafeCell::new(None),
                    })
                    .collect(),
                #[cfg(seeded_bugs)]
                locked: crate::seeded::active(crate::seeded::Bug::QueueOrdersTooMuch)
                    .then(|| super::Mutex::new(std::collections::VecDeque::new())),
            }
        }

        /// Appends `value`.
        pub fn push(&self, value: T) {
            #[cfg(seeded_bugs)]
            if let Some(locked) = &self.locked {
                super::lock(locked).push_back(value);
                return;
            }
            // Relaxed: reserving a slot publishes nothing; the slot's own
            // flag does.
            let index = self.tail.fetch_add(1, Ordering::Relaxed);
            let slot = self.slots.get(index).expect("loom queue stand-in is full");
            // Safety: see the `Sync` impl: this push owns the slot until it
            // sets `written`.
            slot.value.with_mut(|v| unsafe { *v = Some(value) });
            // Release: the pop that sees the flag sees the value and what
            // this thread did before the push.
            slot.written.store(true, Ordering::Release);
        }

        /// Takes the oldest element, if any slot has been reserved and not
        /// yet taken (waiting for its write if needed).
        pub fn pop(&self) -> Option<T> {
            self.pop_indexed().map(|(_, v)| v)
        }

        /// [`pop`](Self::pop), with the element's position in the queue's
        /// order (0 for the first element ever pushed): what the litmus
        /// model needs to know which push came first without synchronizing.
        pub fn pop_indexed(&self) -> Option<(usize, T)> {
            #[cfg(seeded_bugs)]
            if let Some(locked) = &self.locked {
                let mut deque = super::lock(locked);
                let taken = self.head.load(Ordering::Relaxed);
                let value = deque.pop_front()?;
                self.head.store(taken + 1, Ordering::Relaxed);
                return Some((taken, value));
            }
            // Relaxed: the indices only hand out slots; the slot flag
            // carries the ordering.
            let mut head = self.head.load(Ordering::Relaxed);
            let backoff = super::Backoff::new();
            loop {
                if head >= self.tail.load(Ordering::Relaxed) {
                    return None;
                }
                match self.head.compare_exchange(
                    head,
                    head + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => {
                        head = actual;
                        backoff.spin();
                    }
                }
            }
            let slot = &self.slots[head];
            // Acquire: pairs with the push's Release store.
            let backoff = super::Backoff::new();
            while !slot.written.load(Ordering::Acquire) {
                backoff.snooze();
            }
            // Safety: see the `Sync` impl: our head CAS made this pop the
            // slot's only taker, and the flag shows the write is done.
            let value = slot.value.with_mut(|v| unsafe { (*v).take() });
            value.map(|v| (head, v))
        }
    }
}

/// Epoch-based reclamation: crossbeam-epoch, which switches to loom itself
/// when built with `--cfg crossbeam_loom` and its `loom` feature.
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{default_collector, pin, Collector, Guard, LocalHandle};
}

/// Thread-local storage: std's normally; loom's under loom, whose values
/// live per model thread and per execution (a value kept in std's across
/// executions would hold loom objects of an execution that is over).
#[cfg(loom)]
pub(crate) use loom::thread_local;
#[cfg(not(loom))]
pub(crate) use std::thread_local;
